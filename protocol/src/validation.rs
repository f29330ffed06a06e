//! Validation: the rules of names and labels (public, for the CLI and the node to reuse), and
//! every rule of every kind's fields, reported as [`FieldError`]s that name the path, what is
//! allowed, and what was given.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::error::FieldError;
use crate::intstr::IntOrString;
use crate::kind::Kind;
use crate::kinds::{
    ConfigMap, Container, Deployment, DeploymentStrategyType, Namespace, NodeSelectorOperator,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, RestartPolicy, Secret, Service, ServiceType, StatefulSet,
    StatefulSetUpdateStrategyType, TaintEffect, TolerationOperator, Volume, VolumeMode,
    VolumeSource,
};
use crate::meta::ObjectMeta;
use crate::quantity::Quantity;
use crate::resource::Resource;
use crate::selector::{LabelSelector, SelectorOperator};

// ---------------------------------------------------------------------------------------------
// Names and labels.

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A DNS-1123 label (`my-name`): what namespaces, container, volume and Service port names
/// must be.
pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and \
             ending with a letter or digit (such as \"my-name\"), got \"{s}\"{}",
            too_long(s, 63)
        ))
    }
}

/// A DNS-1123 label that starts with a letter (`web-1`): what Service names must be, since
/// they become DNS names.
pub fn check_dns1035_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(is_lower_alnum);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS-1035 label: at most 63 lowercase letters, digits and '-', starting with \
             a letter and ending with a letter or digit (such as \"my-name\"), got \"{s}\"{}",
            too_long(s, 63)
        ))
    }
}

/// A DNS-1123 subdomain (`my-app.v2`): what most object names must be.
pub fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| is_lower_alnum(c) || c == '-')
                && part.starts_with(is_lower_alnum)
                && part.ends_with(is_lower_alnum)
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit (such as \"my-name\" or \"app.v2\"), got \
             \"{s}\"{}",
            too_long(s, 253)
        ))
    }
}

/// An IANA service name (`http`, `metrics-2`): what container port names must be.
pub fn check_iana_svc_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be an IANA service name: at most 15 lowercase letters, digits and '-', with at \
             least one letter, no '-' at either end and no \"--\" (such as \"http\"), got \"{s}\"{}",
            too_long(s, 15)
        ))
    }
}

fn too_long(s: &str, max: usize) -> String {
    if s.len() > max {
        format!(" ({} characters)", s.len())
    } else {
        String::new()
    }
}

/// The name part of a label key or a label value: `[A-Za-z0-9._-]`, at most 63, starting and
/// ending with a letter or digit.
fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`, then a name of at most
/// 63 letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn check_label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(|p| check_dns1123_subdomain(p).is_ok());
    if prefix_ok && is_qualified_name_part(name) {
        Ok(())
    } else {
        Err(format!(
            "must be a label key: an optional DNS subdomain prefix and '/' (such as \
             \"example.com/\"), then at most 63 letters, digits, '-', '_' and '.', starting and \
             ending with a letter or digit (such as \"app\" or \"example.com/tier\"), got \"{s}\""
        ))
    }
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
pub fn check_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || is_qualified_name_part(s) {
        Ok(())
    } else {
        Err(format!(
            "must be a label value: empty, or at most 63 letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit, got \"{s}\"{}",
            too_long(s, 63)
        ))
    }
}

/// An environment variable name: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn check_env_var_name(s: &str) -> Result<(), String> {
    let first_ok = |c: char| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_');
    let ok = s.starts_with(first_ok)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be an environment variable name: letters, digits, '_', '-' and '.', not \
             starting with a digit (such as \"MY_VAR\"), got \"{s}\""
        ))
    }
}

/// A key of a ConfigMap or Secret: at most 253 letters, digits, `-`, `_` and `.`, and not `.`
/// or `..` (it becomes a file name when mounted).
pub fn check_config_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
        && !s.starts_with("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a key: at most 253 letters, digits, '-', '_' and '.', and not \".\", \"..\" \
             or starting with \"..\" (such as \"config.yaml\"), got \"{s}\""
        ))
    }
}

/// The path of a map entry: `.key` when the key reads as a field name, else `[key]`, so that
/// `data[tls.crt]` and `metadata.labels[example.com/tier]` stay unambiguous.
pub(crate) fn key_path(base: &str, key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if base.is_empty() {
        if plain {
            key.to_string()
        } else {
            format!("[{key}]")
        }
    } else if plain {
        format!("{base}.{key}")
    } else {
        format!("{base}[{key}]")
    }
}

// ---------------------------------------------------------------------------------------------
// Objects.

/// The errors found so far.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    fn check(&mut self, path: impl Into<String>, r: Result<(), String>) {
        if let Err(m) = r {
            self.add(path, m);
        }
    }

    fn port(&mut self, path: &str, port: i32) {
        if !(1..=65535).contains(&port) {
            self.add(path, format!("must be 1-65535, got {port}"));
        }
    }

    fn at_least(&mut self, path: &str, v: i64, min: i64) {
        if v < min {
            self.add(path, format!("must be {min} or more, got {v}"));
        }
    }

    fn required_name(&mut self, path: &str, s: &str, what: &str) -> bool {
        if s.is_empty() {
            self.add(path, format!("required: {what}"));
            false
        } else {
            true
        }
    }
}

/// Every validation error of a resource.
pub(crate) fn validate(resource: &Resource) -> Vec<FieldError> {
    let mut e = Errors::default();
    validate_meta(&mut e, resource.meta(), resource.kind());
    match resource {
        Resource::Namespace(ns) => validate_namespace(&mut e, ns),
        Resource::ConfigMap(cm) => validate_config_map(&mut e, cm),
        Resource::Secret(s) => validate_secret(&mut e, s),
        Resource::PersistentVolumeClaim(pvc) => validate_pvc(&mut e, pvc),
        Resource::Service(s) => validate_service(&mut e, s),
        Resource::Pod(p) => validate_pod(&mut e, p),
        Resource::Deployment(d) => validate_deployment(&mut e, d),
        Resource::ReplicaSet(rs) => validate_workload(
            &mut e,
            Kind::ReplicaSet,
            rs.spec.replicas,
            &rs.spec.selector,
            &rs.spec.template,
            &[],
        ),
        Resource::StatefulSet(s) => validate_stateful_set(&mut e, s),
        Resource::ControllerRevision(r) => {
            validate_template_meta(
                &mut e,
                &r.data.spec.template.metadata,
                "data.spec.template.metadata",
            );
        }
    }
    e.0
}

fn validate_meta(e: &mut Errors, meta: &ObjectMeta, kind: Kind) {
    if e.required_name("metadata.name", &meta.name, "the name of the object") {
        let r = match kind {
            Kind::Namespace => check_dns1123_label(&meta.name),
            Kind::Service => check_dns1035_label(&meta.name),
            _ => check_dns1123_subdomain(&meta.name),
        };
        e.check("metadata.name", r);
    }
    if let Some(ns) = &meta.namespace {
        if !kind.namespaced() {
            e.add(
                "metadata.namespace",
                format!("a {kind} belongs to no namespace; remove this field, got \"{ns}\""),
            );
        } else {
            e.check("metadata.namespace", check_dns1123_label(ns));
        }
    }
    validate_labels(e, &meta.labels, "metadata.labels");
    validate_annotations(e, &meta.annotations, "metadata.annotations");
}

fn validate_labels(e: &mut Errors, labels: &BTreeMap<String, String>, path: &str) {
    for (k, v) in labels {
        let p = key_path(path, k);
        e.check(&p, check_label_key(k));
        e.check(&p, check_label_value(v));
    }
}

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn validate_annotations(e: &mut Errors, annotations: &BTreeMap<String, String>, path: &str) {
    let mut total = 0;
    for (k, v) in annotations {
        e.check(key_path(path, k), check_label_key(k));
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        e.add(
            path,
            format!("must total at most {MAX_ANNOTATIONS_BYTES} bytes, got {total}"),
        );
    }
}

fn validate_template_meta(e: &mut Errors, meta: &ObjectMeta, path: &str) {
    validate_labels(e, &meta.labels, &format!("{path}.labels"));
    validate_annotations(e, &meta.annotations, &format!("{path}.annotations"));
}

fn validate_selector(e: &mut Errors, sel: &LabelSelector, path: &str) {
    validate_labels(e, &sel.match_labels, &format!("{path}.matchLabels"));
    for (i, r) in sel.match_expressions.iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        if e.required_name(&format!("{p}.key"), &r.key, "a label key") {
            e.check(format!("{p}.key"), check_label_key(&r.key));
        }
        match r.operator {
            SelectorOperator::In | SelectorOperator::NotIn if r.values.is_empty() => e.add(
                format!("{p}.values"),
                format!("must not be empty for operator {:?}", r.operator),
            ),
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !r.values.is_empty() => e
                .add(
                    format!("{p}.values"),
                    format!(
                        "must be empty for operator {:?}, got {} value(s)",
                        r.operator,
                        r.values.len()
                    ),
                ),
            _ => {}
        }
        for (j, v) in r.values.iter().enumerate() {
            e.check(format!("{p}.values[{j}]"), check_label_value(v));
        }
    }
}

// --- Namespace, ConfigMap, Secret ------------------------------------------------------------

fn validate_namespace(_e: &mut Errors, _ns: &Namespace) {}

const MAX_DATA_BYTES: usize = 1024 * 1024;

fn validate_config_map(e: &mut Errors, cm: &ConfigMap) {
    let mut total = 0;
    for (k, v) in &cm.data {
        e.check(key_path("data", k), check_config_key(k));
        total += k.len() + v.len();
    }
    for (k, v) in &cm.binary_data {
        let p = key_path("binaryData", k);
        e.check(&p, check_config_key(k));
        if cm.data.contains_key(k) {
            e.add(
                &p,
                format!("key \"{k}\" is also in data; a key may be in only one of them"),
            );
        }
        total += k.len() + v.len();
    }
    if total > MAX_DATA_BYTES {
        e.add(
            "data",
            format!("data and binaryData must total at most {MAX_DATA_BYTES} bytes, got {total}"),
        );
    }
}

fn validate_secret(e: &mut Errors, s: &Secret) {
    let mut total = 0;
    for (k, v) in &s.data {
        e.check(key_path("data", k), check_config_key(k));
        total += k.len() + v.len();
    }
    if total > MAX_DATA_BYTES {
        e.add(
            "data",
            format!("must total at most {MAX_DATA_BYTES} bytes, got {total}"),
        );
    }
    let required: &[&str] = match s.type_.as_str() {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for k in required {
        if !s.data.contains_key(*k) {
            e.add(
                key_path("data", k),
                format!("required for a Secret of type {}", s.type_),
            );
        }
    }
}

// --- PersistentVolumeClaim -------------------------------------------------------------------

fn validate_pvc(e: &mut Errors, pvc: &PersistentVolumeClaim) {
    validate_pvc_spec(e, &pvc.spec, "spec");
}

fn validate_pvc_spec(e: &mut Errors, spec: &PersistentVolumeClaimSpec, path: &str) {
    if spec.access_modes.is_empty() {
        e.add(
            format!("{path}.accessModes"),
            "required: at least one of ReadWriteOnce, ReadOnlyMany, ReadWriteMany, \
             ReadWriteOncePod",
        );
    }
    let rpath = format!("{path}.resources");
    for (side, map) in [
        ("requests", &spec.resources.requests),
        ("limits", &spec.resources.limits),
    ] {
        for (k, q) in map {
            let p = key_path(&format!("{rpath}.{side}"), k);
            if k != "storage" {
                e.add(
                    &p,
                    format!("a claim's only resource is storage, got \"{k}\""),
                );
            } else if q.is_negative() || q.is_zero() {
                e.add(&p, format!("must be more than 0, got {q}"));
            }
        }
    }
    if !spec.resources.requests.contains_key("storage") {
        e.add(
            format!("{rpath}.requests.storage"),
            "required: the size of the volume, such as 1Gi",
        );
    }
    check_limits(e, &spec.resources, &rpath);
    if let Some(class) = &spec.storage_class_name
        && !class.is_empty()
    {
        e.check(
            format!("{path}.storageClassName"),
            check_dns1123_subdomain(class),
        );
    }
    if spec.volume_mode == VolumeMode::Block {
        e.add(
            format!("{path}.volumeMode"),
            "shoal supports only Filesystem, got Block",
        );
    }
    if let Some(sel) = &spec.selector {
        validate_selector(e, sel, &format!("{path}.selector"));
    }
}

/// Each limit must be at least its request.
fn check_limits(e: &mut Errors, r: &ResourceRequirements, path: &str) {
    for (k, req) in &r.requests {
        if let Some(lim) = r.limits.get(k)
            && req.value_cmp(lim).is_gt()
        {
            e.add(
                key_path(&format!("{path}.requests"), k),
                format!("must be at most the limit {lim}, got {req}"),
            );
        }
    }
}

// --- Service ---------------------------------------------------------------------------------

fn validate_service(e: &mut Errors, svc: &Service) {
    let spec = &svc.spec;
    let headless = spec.is_headless();
    let node_ports = matches!(
        spec.type_,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    if let Some(ip) = &spec.cluster_ip {
        if headless && spec.type_ != ServiceType::ClusterIP {
            e.add(
                "spec.clusterIP",
                format!(
                    "None (headless) is only allowed with type ClusterIP, got type {:?}",
                    spec.type_
                ),
            );
        } else if !headless && !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
            e.add(
                "spec.clusterIP",
                format!("must be \"None\" (headless), empty, or an IP address, got \"{ip}\""),
            );
        }
    }
    if spec.ports.is_empty() && !headless {
        e.add(
            "spec.ports",
            "required: at least one port, unless the Service is headless (clusterIP: None)",
        );
    }
    let several = spec.ports.len() > 1;
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ports: HashMap<(i32, &str), usize> = HashMap::new();
    let mut nodeports: HashMap<(i32, &str), usize> = HashMap::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if p.name.is_empty() {
            if several {
                e.add(
                    format!("{path}.name"),
                    "required when a Service has several ports",
                );
            }
        } else {
            e.check(format!("{path}.name"), check_dns1123_label(&p.name));
            if let Some(j) = names.insert(&p.name, i) {
                e.add(
                    format!("{path}.name"),
                    format!(
                        "duplicate name \"{}\", already used by spec.ports[{j}]",
                        p.name
                    ),
                );
            }
        }
        if p.port == 0 {
            e.add(format!("{path}.port"), "required: a port number 1-65535");
        } else {
            e.port(&format!("{path}.port"), p.port);
        }
        let proto = p.protocol.as_str();
        if p.port != 0
            && let Some(j) = ports.insert((p.port, proto), i)
        {
            e.add(
                &path,
                format!(
                    "duplicate port {}/{proto}, already used by spec.ports[{j}]",
                    p.port
                ),
            );
        }
        match &p.target_port {
            // A targetPort defaulted from an invalid port is already reported there.
            IntOrString::Int(t) if *t == p.port => {}
            IntOrString::Int(t) => e.port(&format!("{path}.targetPort"), *t),
            IntOrString::String(s) => e.check(
                format!("{path}.targetPort"),
                check_iana_svc_name(s).map_err(|m| {
                    format!("must be a port number or the name of a container port: {m}")
                }),
            ),
        }
        if let Some(np) = p.node_port {
            if !node_ports {
                e.add(
                    format!("{path}.nodePort"),
                    format!(
                        "only allowed for type NodePort or LoadBalancer, got type {:?}",
                        spec.type_
                    ),
                );
            } else {
                e.port(&format!("{path}.nodePort"), np);
                if let Some(j) = nodeports.insert((np, proto), i) {
                    e.add(
                        format!("{path}.nodePort"),
                        format!("duplicate nodePort {np}/{proto}, already used by spec.ports[{j}]"),
                    );
                }
            }
        }
    }
    validate_labels(e, &spec.selector, "spec.selector");
    if spec.external_traffic_policy.is_some() && !node_ports {
        e.add(
            "spec.externalTrafficPolicy",
            format!(
                "only allowed for type NodePort or LoadBalancer, got type {:?}",
                spec.type_
            ),
        );
    }
}

// --- Workloads -------------------------------------------------------------------------------

fn validate_pod(e: &mut Errors, pod: &Pod) {
    validate_pod_spec(e, &pod.spec, "spec", None, &[]);
}

/// Rules shared by Deployments and StatefulSets: replicas, selector and template.
fn validate_workload(
    e: &mut Errors,
    kind: Kind,
    replicas: i32,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    claim_templates: &[&str],
) {
    e.at_least("spec.replicas", i64::from(replicas), 0);
    if selector.is_empty() {
        e.add(
            "spec.selector",
            "required: matchLabels or matchExpressions that select the template's labels",
        );
    } else {
        validate_selector(e, selector, "spec.selector");
        if !selector.matches(&template.metadata.labels) {
            let labels: Vec<String> = template
                .metadata
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            e.add(
                "spec.selector",
                format!(
                    "does not match template labels (selector \"{selector}\", \
                     spec.template.metadata.labels \"{}\")",
                    labels.join(",")
                ),
            );
        }
    }
    validate_template_meta(e, &template.metadata, "spec.template.metadata");
    validate_pod_spec(
        e,
        &template.spec,
        "spec.template.spec",
        Some(kind),
        claim_templates,
    );
}

fn validate_deployment(e: &mut Errors, d: &Deployment) {
    let spec = &d.spec;
    validate_workload(
        e,
        Kind::Deployment,
        spec.replicas,
        &spec.selector,
        &spec.template,
        &[],
    );
    match (&spec.strategy.type_, &spec.strategy.rolling_update) {
        (DeploymentStrategyType::Recreate, Some(_)) => e.add(
            "spec.strategy.rollingUpdate",
            "not allowed when spec.strategy.type is Recreate",
        ),
        (DeploymentStrategyType::RollingUpdate, Some(ru)) => {
            let surge = ru.max_surge.check_int_or_percent(false);
            let unavailable = ru.max_unavailable.check_int_or_percent(true);
            let both_valid = surge.is_ok() && unavailable.is_ok();
            e.check("spec.strategy.rollingUpdate.maxSurge", surge);
            e.check("spec.strategy.rollingUpdate.maxUnavailable", unavailable);
            let is_zero = |v: &IntOrString| v.as_int() == Some(0) || v.percent() == Some(0);
            if both_valid && is_zero(&ru.max_surge) && is_zero(&ru.max_unavailable) {
                e.add(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "may not be 0 when maxSurge is 0: the update could never progress",
                );
            }
        }
        (_, None) => {}
    }
    e.at_least("spec.minReadySeconds", i64::from(spec.min_ready_seconds), 0);
    e.at_least(
        "spec.revisionHistoryLimit",
        i64::from(spec.revision_history_limit),
        0,
    );
    if spec.progress_deadline_seconds <= spec.min_ready_seconds {
        e.add(
            "spec.progressDeadlineSeconds",
            format!(
                "must be greater than spec.minReadySeconds ({}), got {}",
                spec.min_ready_seconds, spec.progress_deadline_seconds
            ),
        );
    }
}

fn validate_stateful_set(e: &mut Errors, s: &StatefulSet) {
    let spec = &s.spec;
    if !spec.service_name.is_empty() {
        e.check("spec.serviceName", check_dns1035_label(&spec.service_name));
    }
    let mut templates: HashMap<&str, usize> = HashMap::new();
    for (i, t) in spec.volume_claim_templates.iter().enumerate() {
        let path = format!("spec.volumeClaimTemplates[{i}]");
        let name = &t.metadata.name;
        if e.required_name(
            &format!("{path}.metadata.name"),
            name,
            "the name that volumeMounts use",
        ) {
            e.check(format!("{path}.metadata.name"), check_dns1123_label(name));
            if let Some(j) = templates.insert(name, i) {
                e.add(
                    format!("{path}.metadata.name"),
                    format!(
                        "duplicate name \"{name}\", already used by spec.volumeClaimTemplates[{j}]"
                    ),
                );
            }
        }
        validate_template_meta(e, &t.metadata, &format!("{path}.metadata"));
        validate_pvc_spec(e, &t.spec, &format!("{path}.spec"));
    }
    let claim_names: Vec<&str> = templates.keys().copied().collect();
    validate_workload(
        e,
        Kind::StatefulSet,
        spec.replicas,
        &spec.selector,
        &spec.template,
        &claim_names,
    );
    match (
        &spec.update_strategy.type_,
        &spec.update_strategy.rolling_update,
    ) {
        (StatefulSetUpdateStrategyType::OnDelete, Some(_)) => e.add(
            "spec.updateStrategy.rollingUpdate",
            "not allowed when spec.updateStrategy.type is OnDelete",
        ),
        (_, Some(ru)) => e.at_least(
            "spec.updateStrategy.rollingUpdate.partition",
            i64::from(ru.partition),
            0,
        ),
        _ => {}
    }
    e.at_least("spec.minReadySeconds", i64::from(spec.min_ready_seconds), 0);
    e.at_least(
        "spec.revisionHistoryLimit",
        i64::from(spec.revision_history_limit),
        0,
    );
}

// --- Pod spec --------------------------------------------------------------------------------

fn validate_pod_spec(
    e: &mut Errors,
    spec: &PodSpec,
    path: &str,
    workload: Option<Kind>,
    claim_templates: &[&str],
) {
    if spec.containers.is_empty() {
        e.add(
            format!("{path}.containers"),
            "required: at least one container",
        );
    }

    for (i, r) in spec.image_pull_secrets.iter().enumerate() {
        if r.name.is_empty() {
            e.add(
                format!("{path}.imagePullSecrets[{i}].name"),
                "required: the name of a Secret of type kubernetes.io/dockerconfigjson",
            );
        }
    }

    let mut volumes: HashMap<&str, usize> = HashMap::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        validate_volume(e, v, &p);
        if !v.name.is_empty()
            && let Some(j) = volumes.insert(&v.name, i)
        {
            e.add(
                format!("{p}.name"),
                format!(
                    "duplicate name \"{}\", already used by {path}.volumes[{j}]",
                    v.name
                ),
            );
        }
    }
    let mut mountable: Vec<&str> = volumes.keys().copied().collect();
    mountable.extend_from_slice(claim_templates);
    mountable.sort_unstable();
    mountable.dedup();

    let mut names: HashMap<&str, String> = HashMap::new();
    let mut host_ports: HashMap<(i32, &str), String> = HashMap::new();
    let all = spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{path}.initContainers[{i}]"), c, true))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{path}.containers[{i}]"), c, false)),
        );
    for (p, c, init) in all {
        validate_container(e, c, &p, &mountable, init);
        if !c.name.is_empty() {
            if let Some(other) = names.get(c.name.as_str()) {
                e.add(
                    format!("{p}.name"),
                    format!("duplicate name \"{}\", already used by {other}", c.name),
                );
            } else {
                names.insert(&c.name, p.clone());
            }
        }
        for (j, port) in c.ports.iter().enumerate() {
            if let Some(hp) = port.host_port {
                let pp = format!("{p}.ports[{j}].hostPort");
                if let Some(other) = host_ports.get(&(hp, port.protocol.as_str())) {
                    e.add(
                        &pp,
                        format!(
                            "duplicate host port {hp}/{}, already used by {other}",
                            port.protocol.as_str()
                        ),
                    );
                } else {
                    host_ports.insert((hp, port.protocol.as_str()), pp);
                }
            }
        }
    }

    if let Some(kind) = workload
        && spec.restart_policy != RestartPolicy::Always
    {
        e.add(
            format!("{path}.restartPolicy"),
            format!("must be Always in a {kind}, got {:?}", spec.restart_policy),
        );
    }
    validate_labels(e, &spec.node_selector, &format!("{path}.nodeSelector"));
    if let Some(ns) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        let tp = format!(
            "{path}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
        );
        if ns.node_selector_terms.is_empty() {
            e.add(&tp, "required: at least one term");
        }
        for (i, term) in ns.node_selector_terms.iter().enumerate() {
            let p = format!("{tp}[{i}].matchExpressions");
            if term.match_expressions.is_empty() {
                e.add(
                    &p,
                    "required: at least one expression (an empty term matches no node)",
                );
            }
            for (j, r) in term.match_expressions.iter().enumerate() {
                let rp = format!("{p}[{j}]");
                if e.required_name(&format!("{rp}.key"), &r.key, "a node label key") {
                    e.check(format!("{rp}.key"), check_label_key(&r.key));
                }
                let n = r.values.len();
                match r.operator {
                    NodeSelectorOperator::In | NodeSelectorOperator::NotIn if n == 0 => e.add(
                        format!("{rp}.values"),
                        format!("must not be empty for operator {:?}", r.operator),
                    ),
                    NodeSelectorOperator::Exists | NodeSelectorOperator::DoesNotExist if n != 0 => {
                        e.add(
                            format!("{rp}.values"),
                            format!(
                                "must be empty for operator {:?}, got {n} value(s)",
                                r.operator
                            ),
                        )
                    }
                    NodeSelectorOperator::Gt | NodeSelectorOperator::Lt => {
                        if n != 1 || r.values[0].parse::<i64>().is_err() {
                            e.add(
                                format!("{rp}.values"),
                                format!(
                                    "must be exactly one integer for operator {:?}, got {:?}",
                                    r.operator, r.values
                                ),
                            );
                        }
                    }
                    _ => {
                        for (k, v) in r.values.iter().enumerate() {
                            e.check(format!("{rp}.values[{k}]"), check_label_value(v));
                        }
                    }
                }
            }
        }
    }
    for (i, t) in spec.tolerations.iter().enumerate() {
        let p = format!("{path}.tolerations[{i}]");
        if t.key.is_empty() {
            if t.operator != TolerationOperator::Exists {
                e.add(
                    format!("{p}.key"),
                    "required unless operator is Exists (an empty key with Exists tolerates \
                     every taint)",
                );
            }
        } else {
            e.check(format!("{p}.key"), check_label_key(&t.key));
        }
        if t.operator == TolerationOperator::Exists && !t.value.is_empty() {
            e.add(
                format!("{p}.value"),
                format!("must be empty when operator is Exists, got \"{}\"", t.value),
            );
        } else {
            e.check(format!("{p}.value"), check_label_value(&t.value));
        }
        if t.toleration_seconds.is_some() && t.effect != Some(TaintEffect::NoExecute) {
            e.add(
                format!("{p}.tolerationSeconds"),
                "only allowed when effect is NoExecute",
            );
        }
    }
    e.at_least(
        &format!("{path}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
        0,
    );
    if let Some(h) = &spec.hostname {
        e.check(format!("{path}.hostname"), check_dns1123_label(h));
    }
    if let Some(s) = &spec.subdomain {
        e.check(format!("{path}.subdomain"), check_dns1123_label(s));
    }
}

fn check_mode(e: &mut Errors, path: &str, mode: i32) {
    if !(0..=0o777).contains(&mode) {
        e.add(
            path,
            format!("must be a file mode from 0 to 0777 (511 in decimal), got {mode}"),
        );
    }
}

/// A path inside a volume: relative, and never climbing out of it.
fn check_relative_path(e: &mut Errors, path: &str, value: &str) {
    if value.starts_with('/') {
        e.add(path, format!("must be a relative path, got \"{value}\""));
    } else if value.split('/').any(|c| c == "..") {
        e.add(path, format!("must not contain \"..\", got \"{value}\""));
    }
}

fn check_absolute_path(e: &mut Errors, path: &str, value: &str, what: &str) {
    if value.is_empty() {
        e.add(path, format!("required: {what}, an absolute path"));
    } else if !value.starts_with('/') {
        e.add(path, format!("must be an absolute path, got \"{value}\""));
    }
}

fn check_quantity_non_negative(e: &mut Errors, path: &str, q: &Quantity) {
    if q.is_negative() {
        e.add(path, format!("must not be negative, got {q}"));
    }
}

fn validate_volume(e: &mut Errors, v: &Volume, p: &str) {
    if e.required_name(
        &format!("{p}.name"),
        &v.name,
        "the name that volumeMounts use",
    ) {
        e.check(format!("{p}.name"), check_dns1123_label(&v.name));
    }
    let sources = v.sources();
    if sources.len() != 1 {
        let given = if sources.is_empty() {
            "none".to_string()
        } else {
            let names: Vec<&str> = sources.iter().map(|(n, _)| *n).collect();
            format!("{}: {}", names.len(), names.join(", "))
        };
        e.add(
            p,
            format!(
                "must have exactly one source (configMap, secret, emptyDir, hostPath, \
                 persistentVolumeClaim or nfs), got {given}"
            ),
        );
    }
    for (field, source) in sources {
        let sp = format!("{p}.{field}");
        match source {
            VolumeSource::ConfigMap(s) => {
                if e.required_name(&format!("{sp}.name"), &s.name, "the ConfigMap's name") {
                    e.check(format!("{sp}.name"), check_dns1123_subdomain(&s.name));
                }
                validate_items(e, &s.items, &sp);
                check_mode(e, &format!("{sp}.defaultMode"), s.default_mode);
            }
            VolumeSource::Secret(s) => {
                if e.required_name(
                    &format!("{sp}.secretName"),
                    &s.secret_name,
                    "the Secret's name",
                ) {
                    e.check(
                        format!("{sp}.secretName"),
                        check_dns1123_subdomain(&s.secret_name),
                    );
                }
                validate_items(e, &s.items, &sp);
                check_mode(e, &format!("{sp}.defaultMode"), s.default_mode);
            }
            VolumeSource::EmptyDir(s) => {
                if let Some(q) = &s.size_limit {
                    check_quantity_non_negative(e, &format!("{sp}.sizeLimit"), q);
                }
            }
            VolumeSource::HostPath(s) => {
                check_absolute_path(e, &format!("{sp}.path"), &s.path, "the node's path");
            }
            VolumeSource::PersistentVolumeClaim(s) => {
                if e.required_name(
                    &format!("{sp}.claimName"),
                    &s.claim_name,
                    "the PersistentVolumeClaim's name",
                ) {
                    e.check(
                        format!("{sp}.claimName"),
                        check_dns1123_subdomain(&s.claim_name),
                    );
                }
            }
            VolumeSource::Nfs(s) => {
                e.required_name(
                    &format!("{sp}.server"),
                    &s.server,
                    "the NFS server's address",
                );
                check_absolute_path(e, &format!("{sp}.path"), &s.path, "the exported path");
            }
        }
    }
}

fn validate_items(e: &mut Errors, items: &[crate::kinds::KeyToPath], sp: &str) {
    for (j, item) in items.iter().enumerate() {
        let ip = format!("{sp}.items[{j}]");
        if e.required_name(&format!("{ip}.key"), &item.key, "the key to mount") {
            e.check(format!("{ip}.key"), check_config_key(&item.key));
        }
        if e.required_name(
            &format!("{ip}.path"),
            &item.path,
            "the file's path in the volume",
        ) {
            check_relative_path(e, &format!("{ip}.path"), &item.path);
        }
        if let Some(m) = item.mode {
            check_mode(e, &format!("{ip}.mode"), m);
        }
    }
}

const CONTAINER_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// The pod fields an environment variable may read (`fieldRef.fieldPath`).
fn is_supported_field_path(p: &str) -> bool {
    const EXACT: &[&str] = &[
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "status.podIP",
        "status.hostIP",
    ];
    if EXACT.contains(&p) {
        return true;
    }
    ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|prefix| {
            p.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix("']"))
                .is_some_and(|k| check_label_key(k).is_ok())
        })
}

fn validate_container(e: &mut Errors, c: &Container, p: &str, mountable: &[&str], init: bool) {
    if e.required_name(&format!("{p}.name"), &c.name, "the container's name") {
        e.check(format!("{p}.name"), check_dns1123_label(&c.name));
    }
    if e.required_name(&format!("{p}.image"), &c.image, "the container's image")
        && c.image.trim() != c.image
    {
        e.add(
            format!("{p}.image"),
            format!(
                "must not have leading or trailing spaces, got \"{}\"",
                c.image
            ),
        );
    }
    if let Some(wd) = &c.working_dir {
        check_absolute_path(e, &format!("{p}.workingDir"), wd, "the working directory");
    }

    let mut port_names: HashMap<&str, usize> = HashMap::new();
    for (j, port) in c.ports.iter().enumerate() {
        let pp = format!("{p}.ports[{j}]");
        if port.container_port == 0 {
            e.add(
                format!("{pp}.containerPort"),
                "required: the port number, 1-65535",
            );
        } else {
            e.port(&format!("{pp}.containerPort"), port.container_port);
        }
        if let Some(hp) = port.host_port {
            e.port(&format!("{pp}.hostPort"), hp);
        }
        if let Some(ip) = &port.host_ip
            && ip.parse::<IpAddr>().is_err()
        {
            e.add(
                format!("{pp}.hostIP"),
                format!("must be an IP address, got \"{ip}\""),
            );
        }
        if let Some(name) = &port.name {
            e.check(format!("{pp}.name"), check_iana_svc_name(name));
            if let Some(k) = port_names.insert(name, j) {
                e.add(
                    format!("{pp}.name"),
                    format!("duplicate name \"{name}\", already used by {p}.ports[{k}]"),
                );
            }
        }
    }

    for (j, env) in c.env.iter().enumerate() {
        let ep = format!("{p}.env[{j}]");
        if e.required_name(&format!("{ep}.name"), &env.name, "the variable's name") {
            e.check(format!("{ep}.name"), check_env_var_name(&env.name));
        }
        match (&env.value, &env.value_from) {
            (Some(_), Some(_)) => e.add(&ep, "value and valueFrom are exclusive: set one of them"),
            (_, Some(from)) => {
                let fp = format!("{ep}.valueFrom");
                let mut set = Vec::new();
                if let Some(r) = &from.config_map_key_ref {
                    set.push("configMapKeyRef");
                    validate_key_ref(e, &format!("{fp}.configMapKeyRef"), &r.name, &r.key);
                }
                if let Some(r) = &from.secret_key_ref {
                    set.push("secretKeyRef");
                    validate_key_ref(e, &format!("{fp}.secretKeyRef"), &r.name, &r.key);
                }
                if let Some(f) = &from.field_ref {
                    set.push("fieldRef");
                    let pth = format!("{fp}.fieldRef.fieldPath");
                    if e.required_name(&pth, &f.field_path, "the pod field to read")
                        && !is_supported_field_path(&f.field_path)
                    {
                        e.add(
                            &pth,
                            format!(
                                "must be one of metadata.name, metadata.namespace, metadata.uid, \
                                 metadata.labels['<key>'], metadata.annotations['<key>'], \
                                 spec.nodeName, status.podIP, status.hostIP, got \"{}\"",
                                f.field_path
                            ),
                        );
                    }
                    if let Some(v) = &f.api_version
                        && v != "v1"
                    {
                        e.add(
                            format!("{fp}.fieldRef.apiVersion"),
                            format!("must be v1, got \"{v}\""),
                        );
                    }
                }
                if set.len() != 1 {
                    let given = if set.is_empty() {
                        "none".to_string()
                    } else {
                        set.join(", ")
                    };
                    e.add(
                        &fp,
                        format!(
                            "must have exactly one of configMapKeyRef, secretKeyRef or fieldRef, \
                             got {given}"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    for (j, from) in c.env_from.iter().enumerate() {
        let fp = format!("{p}.envFrom[{j}]");
        let refs: Vec<(&str, &crate::kinds::NameRef)> = [
            ("configMapRef", from.config_map_ref.as_ref()),
            ("secretRef", from.secret_ref.as_ref()),
        ]
        .into_iter()
        .filter_map(|(n, r)| r.map(|r| (n, r)))
        .collect();
        if refs.len() != 1 {
            e.add(
                &fp,
                format!(
                    "must have exactly one of configMapRef or secretRef, got {}",
                    if refs.is_empty() { "none" } else { "both" }
                ),
            );
        }
        for (n, r) in refs {
            let np = format!("{fp}.{n}.name");
            if e.required_name(&np, &r.name, "the object's name") {
                e.check(np, check_dns1123_subdomain(&r.name));
            }
        }
        if let Some(prefix) = &from.prefix
            && !prefix.is_empty()
        {
            e.check(format!("{fp}.prefix"), check_env_var_name(prefix));
        }
    }

    let rp = format!("{p}.resources");
    for (side, map) in [
        ("requests", &c.resources.requests),
        ("limits", &c.resources.limits),
    ] {
        for (k, q) in map {
            let kp = key_path(&format!("{rp}.{side}"), k);
            if !CONTAINER_RESOURCES.contains(&k.as_str()) {
                e.add(
                    &kp,
                    format!("must be cpu, memory or ephemeral-storage, got \"{k}\""),
                );
            }
            check_quantity_non_negative(e, &kp, q);
        }
    }
    check_limits(e, &c.resources, &rp);

    let mut mount_paths: HashMap<&str, usize> = HashMap::new();
    for (j, m) in c.volume_mounts.iter().enumerate() {
        let mp = format!("{p}.volumeMounts[{j}]");
        if e.required_name(
            &format!("{mp}.name"),
            &m.name,
            "the name of a volume of the pod",
        ) && !mountable.contains(&m.name.as_str())
        {
            let known = if mountable.is_empty() {
                "the pod has none".to_string()
            } else {
                mountable.join(", ")
            };
            e.add(
                format!("{mp}.name"),
                format!(
                    "must name a volume of the pod ({known}), got \"{}\"",
                    m.name
                ),
            );
        }
        check_absolute_path(
            e,
            &format!("{mp}.mountPath"),
            &m.mount_path,
            "where to mount",
        );
        if !m.mount_path.is_empty()
            && let Some(k) = mount_paths.insert(&m.mount_path, j)
        {
            e.add(
                format!("{mp}.mountPath"),
                format!(
                    "duplicate mount path \"{}\", already used by {p}.volumeMounts[{k}]",
                    m.mount_path
                ),
            );
        }
        if let Some(sub) = &m.sub_path {
            check_relative_path(e, &format!("{mp}.subPath"), sub);
        }
    }

    let names: Vec<&str> = port_names.keys().copied().collect();
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        let Some(probe) = probe else { continue };
        let pp = format!("{p}.{field}");
        if init {
            e.add(&pp, "not allowed in an init container");
            continue;
        }
        validate_probe(e, probe, &pp, &names, field != "readinessProbe");
    }
}

fn validate_key_ref(e: &mut Errors, path: &str, name: &str, key: &str) {
    if e.required_name(&format!("{path}.name"), name, "the object's name") {
        e.check(format!("{path}.name"), check_dns1123_subdomain(name));
    }
    if e.required_name(&format!("{path}.key"), key, "the key to read") {
        e.check(format!("{path}.key"), check_config_key(key));
    }
}

fn validate_probe_port(e: &mut Errors, path: &str, port: &IntOrString, names: &[&str]) {
    match port {
        IntOrString::Int(n) => e.port(path, *n),
        IntOrString::String(s) => {
            if !names.contains(&s.as_str()) {
                let known = if names.is_empty() {
                    "the container names none".to_string()
                } else {
                    let mut n = names.to_vec();
                    n.sort_unstable();
                    n.join(", ")
                };
                e.add(
                    path,
                    format!(
                        "must be a port number 1-65535 or the name of a port of this container \
                         ({known}), got \"{s}\""
                    ),
                );
            }
        }
    }
}

fn validate_probe(
    e: &mut Errors,
    p: &Probe,
    path: &str,
    port_names: &[&str],
    single_success: bool,
) {
    let mut handlers = Vec::new();
    if let Some(h) = &p.http_get {
        handlers.push("httpGet");
        validate_probe_port(e, &format!("{path}.httpGet.port"), &h.port, port_names);
        if !h.path.starts_with('/') {
            e.add(
                format!("{path}.httpGet.path"),
                format!("must start with '/', got \"{}\"", h.path),
            );
        }
        for (i, hd) in h.http_headers.iter().enumerate() {
            e.required_name(
                &format!("{path}.httpGet.httpHeaders[{i}].name"),
                &hd.name,
                "the header's name",
            );
        }
    }
    if let Some(t) = &p.tcp_socket {
        handlers.push("tcpSocket");
        validate_probe_port(e, &format!("{path}.tcpSocket.port"), &t.port, port_names);
    }
    if let Some(x) = &p.exec {
        handlers.push("exec");
        if x.command.is_empty() {
            e.add(
                format!("{path}.exec.command"),
                "required: the command to run",
            );
        }
    }
    if handlers.len() != 1 {
        let given = if handlers.is_empty() {
            "none".to_string()
        } else {
            format!("{}: {}", handlers.len(), handlers.join(", "))
        };
        e.add(
            path,
            format!("must have exactly one handler (httpGet, tcpSocket or exec), got {given}"),
        );
    }
    e.at_least(
        &format!("{path}.initialDelaySeconds"),
        i64::from(p.initial_delay_seconds),
        0,
    );
    e.at_least(
        &format!("{path}.periodSeconds"),
        i64::from(p.period_seconds),
        1,
    );
    e.at_least(
        &format!("{path}.timeoutSeconds"),
        i64::from(p.timeout_seconds),
        1,
    );
    e.at_least(
        &format!("{path}.successThreshold"),
        i64::from(p.success_threshold),
        1,
    );
    e.at_least(
        &format!("{path}.failureThreshold"),
        i64::from(p.failure_threshold),
        1,
    );
    if single_success && p.success_threshold != 1 {
        e.add(
            format!("{path}.successThreshold"),
            format!(
                "must be 1 for liveness and startup probes, got {}",
                p.success_threshold
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::manifest::parse_value;
    use serde_json::{Value, json};

    fn base(kind: &str) -> Value {
        let template = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "web",
                "image": "nginx:1.25",
                "ports": [{"containerPort": 80, "name": "http"}]
            }]}
        });
        match kind {
            "Namespace" => json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "ns"}}),
            "ConfigMap" => json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "cm"},
                                  "data": {"a": "1"}}),
            "Secret" => json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "s"},
                               "data": {"a": "MQ=="}}),
            "PersistentVolumeClaim" => json!({"apiVersion": "v1", "kind": kind,
                "metadata": {"name": "pvc"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}),
            "Service" => json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
            "Pod" => json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "p"},
                "spec": template["spec"].clone()}),
            "Deployment" => json!({"apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": "web"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}),
            "StatefulSet" => json!({"apiVersion": "apps/v1", "kind": kind,
                "metadata": {"name": "db"},
                "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "web"}},
                         "template": template,
                         "volumeClaimTemplates": [{"metadata": {"name": "data"},
                            "spec": {"accessModes": ["ReadWriteOnce"],
                                     "resources": {"requests": {"storage": "1Gi"}}}}]}}),
            _ => panic!("{kind}"),
        }
    }

    /// Sets the value at a JSON pointer, creating the objects on the way.
    fn set(v: &mut Value, pointer: &str, new: Value) {
        let mut cur = v;
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            cur = match cur {
                Value::Array(items) => {
                    let idx: usize = part.parse().unwrap();
                    if idx == items.len() {
                        items.push(json!({}));
                    }
                    &mut items[idx]
                }
                Value::Object(m) => m.entry(part.to_string()).or_insert(json!({})),
                _ => panic!("{pointer}"),
            };
            if last {
                *cur = new;
                return;
            }
        }
    }

    #[test]
    fn base_objects_are_valid() {
        for kind in Kind::ALL.iter().filter(|k| k.appliable()) {
            let r = parse_value(base(kind.name()));
            assert!(r.is_ok(), "{kind}: {r:?}");
        }
    }

    /// A kind, patches (JSON pointer, value) to its base object, the expected error's path and
    /// a part of its message.
    type Case = (&'static str, Vec<(String, Value)>, String, &'static str);
    type Check = fn(&str) -> Result<(), String>;

    const C: &str = "/spec/template/spec/containers/0";
    const CP: &str = "spec.template.spec.containers[0]";

    #[test]
    fn every_rule_reports_its_path() {
        let cases: Vec<Case> = vec![
            // Names and metadata.
            ("Deployment", vec![("/metadata/name".into(), json!("Web_1"))],
             "metadata.name".into(), "must be a DNS-1123 subdomain"),
            ("Deployment", vec![("/metadata/name".into(), json!(""))],
             "metadata.name".into(), "required"),
            ("Namespace", vec![("/metadata/name".into(), json!("a.b"))],
             "metadata.name".into(), "must be a DNS-1123 label"),
            ("Service", vec![("/metadata/name".into(), json!("1web"))],
             "metadata.name".into(), "must be a DNS-1035 label"),
            ("Namespace", vec![("/metadata/namespace".into(), json!("x"))],
             "metadata.namespace".into(), "belongs to no namespace"),
            ("Pod", vec![("/metadata/namespace".into(), json!("Prod"))],
             "metadata.namespace".into(), "DNS-1123 label"),
            ("Pod", vec![("/metadata/labels".into(), json!({"-x": "y"}))],
             "metadata.labels[-x]".into(), "must be a label key"),
            ("Pod", vec![("/metadata/labels".into(), json!({"app": "a b"}))],
             "metadata.labels.app".into(), "must be a label value"),
            ("Pod", vec![("/metadata/annotations".into(), json!({"a b": "x"}))],
             "metadata.annotations[a b]".into(), "must be a label key"),
            ("Deployment", vec![("/spec/template/metadata/labels/x y".into(), json!("1"))],
             "spec.template.metadata.labels[x y]".into(), "must be a label key"),
            // Containers.
            ("Deployment", vec![(format!("{C}/name"), json!("Web"))],
             format!("{CP}.name"), "DNS-1123 label"),
            ("Deployment", vec![(format!("{C}/name"), json!(""))],
             format!("{CP}.name"), "required"),
            ("Deployment", vec![(format!("{C}/image"), json!(""))],
             format!("{CP}.image"), "required"),
            ("Deployment", vec![(format!("{C}/image"), json!(" nginx"))],
             format!("{CP}.image"), "leading or trailing spaces"),
            ("Deployment", vec![("/spec/template/spec/containers/1".into(), json!({"name": "web", "image": "x"}))],
             "spec.template.spec.containers[1].name".into(), "duplicate name \"web\", already used by spec.template.spec.containers[0]"),
            ("Deployment", vec![("/spec/template/spec/initContainers".into(), json!([{"name": "web", "image": "x"}]))],
             format!("{CP}.name"), "already used by spec.template.spec.initContainers[0]"),
            ("Deployment", vec![("/spec/template/spec/containers".into(), json!([]))],
             "spec.template.spec.containers".into(), "at least one container"),
            ("Deployment", vec![(format!("{C}/workingDir"), json!("srv"))],
             format!("{CP}.workingDir"), "must be an absolute path, got \"srv\""),
            // Ports.
            ("Deployment", vec![(format!("{C}/ports/0/containerPort"), json!(70000))],
             format!("{CP}.ports[0].containerPort"), "must be 1-65535, got 70000"),
            ("Deployment", vec![(format!("{C}/ports/0/containerPort"), json!(0))],
             format!("{CP}.ports[0].containerPort"), "required"),
            ("Deployment", vec![(format!("{C}/ports/0/hostPort"), json!(-1))],
             format!("{CP}.ports[0].hostPort"), "must be 1-65535, got -1"),
            ("Deployment", vec![(format!("{C}/ports/0/hostIP"), json!("localhost"))],
             format!("{CP}.ports[0].hostIP"), "must be an IP address"),
            ("Deployment", vec![(format!("{C}/ports/0/name"), json!("HTTP"))],
             format!("{CP}.ports[0].name"), "IANA service name"),
            ("Deployment", vec![(format!("{C}/ports/1"), json!({"containerPort": 81, "name": "http"}))],
             format!("{CP}.ports[1].name"), "duplicate name \"http\""),
            ("Pod", vec![
                ("/spec/containers/0/ports/0/hostPort".into(), json!(8080)),
                ("/spec/containers/1".into(), json!({"name": "b", "image": "x", "ports": [{"containerPort": 81, "hostPort": 8080}]})),
             ], "spec.containers[1].ports[0].hostPort".into(), "duplicate host port 8080/TCP"),
            // Environment.
            ("Deployment", vec![(format!("{C}/env"), json!([{"name": "1X", "value": "a"}]))],
             format!("{CP}.env[0].name"), "environment variable name"),
            ("Deployment", vec![(format!("{C}/env"), json!([{"value": "a"}]))],
             format!("{CP}.env[0].name"), "required"),
            ("Deployment", vec![(format!("{C}/env"), json!([{"name": "X", "value": "a",
                "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]))],
             format!("{CP}.env[0]"), "value and valueFrom are exclusive"),
            ("Deployment", vec![(format!("{C}/env"), json!([{"name": "X", "valueFrom": {}}]))],
             format!("{CP}.env[0].valueFrom"), "exactly one of configMapKeyRef, secretKeyRef or fieldRef, got none"),
            ("Deployment", vec![(format!("{C}/env"), json!([{"name": "X", "valueFrom": {
                "secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]))],
             format!("{CP}.env[0].valueFrom"), "got configMapKeyRef, secretKeyRef"),
            ("Deployment", vec![(format!("{C}/env"), json!([{"name": "X", "valueFrom": {"secretKeyRef": {"key": "k"}}}]))],
             format!("{CP}.env[0].valueFrom.secretKeyRef.name"), "required"),
            ("Deployment", vec![(format!("{C}/env"), json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "a/b"}}}]))],
             format!("{CP}.env[0].valueFrom.configMapKeyRef.key"), "must be a key"),
            ("Deployment", vec![(format!("{C}/env"), json!([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.secret"}}}]))],
             format!("{CP}.env[0].valueFrom.fieldRef.fieldPath"), "must be one of metadata.name"),
            ("Deployment", vec![(format!("{C}/envFrom"), json!([{"prefix": "X_"}]))],
             format!("{CP}.envFrom[0]"), "exactly one of configMapRef or secretRef, got none"),
            ("Deployment", vec![(format!("{C}/envFrom"), json!([{"configMapRef": {}}]))],
             format!("{CP}.envFrom[0].configMapRef.name"), "required"),
            ("Deployment", vec![(format!("{C}/envFrom"), json!([{"secretRef": {"name": "s"}, "prefix": "1_"}]))],
             format!("{CP}.envFrom[0].prefix"), "environment variable name"),
            // Resources.
            ("Deployment", vec![(format!("{C}/resources"), json!({"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}))],
             format!("{CP}.resources.requests.cpu"), "must be at most the limit 500m, got 2"),
            ("Deployment", vec![(format!("{C}/resources"), json!({"limits": {"nvidia.com/gpu": 1}}))],
             format!("{CP}.resources.limits[nvidia.com/gpu]"), "must be cpu, memory or ephemeral-storage, got \"nvidia.com/gpu\""),
            ("Deployment", vec![(format!("{C}/resources"), json!({"requests": {"memory": "-1Mi"}}))],
             format!("{CP}.resources.requests.memory"), "must not be negative, got -1Mi"),
            // Volumes and mounts.
            ("Deployment", vec![(format!("{C}/volumeMounts"), json!([{"name": "cache", "mountPath": "/c"}]))],
             format!("{CP}.volumeMounts[0].name"), "must name a volume of the pod (the pod has none), got \"cache\""),
            ("Deployment", vec![
                ("/spec/template/spec/volumes".into(), json!([{"name": "v", "emptyDir": {}}])),
                (format!("{C}/volumeMounts"), json!([{"name": "v", "mountPath": "data"}]))],
             format!("{CP}.volumeMounts[0].mountPath"), "must be an absolute path"),
            ("Deployment", vec![
                ("/spec/template/spec/volumes".into(), json!([{"name": "v", "emptyDir": {}}])),
                (format!("{C}/volumeMounts"), json!([{"name": "v", "mountPath": "/d"}, {"name": "v", "mountPath": "/d"}]))],
             format!("{CP}.volumeMounts[1].mountPath"), "duplicate mount path \"/d\""),
            ("Deployment", vec![
                ("/spec/template/spec/volumes".into(), json!([{"name": "v", "emptyDir": {}}])),
                (format!("{C}/volumeMounts"), json!([{"name": "v", "mountPath": "/d", "subPath": "../x"}]))],
             format!("{CP}.volumeMounts[0].subPath"), "must not contain \"..\""),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v"}]))],
             "spec.volumes[0]".into(), "must have exactly one source (configMap, secret, emptyDir, hostPath, persistentVolumeClaim or nfs), got none"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]))],
             "spec.volumes[0]".into(), "got 2: secret, emptyDir"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "V", "emptyDir": {}}]))],
             "spec.volumes[0].name".into(), "DNS-1123 label"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]))],
             "spec.volumes[1].name".into(), "duplicate name \"v\", already used by spec.volumes[0]"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "configMap": {}}]))],
             "spec.volumes[0].configMap.name".into(), "required"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "secret": {}}]))],
             "spec.volumes[0].secret.secretName".into(), "required"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "persistentVolumeClaim": {}}]))],
             "spec.volumes[0].persistentVolumeClaim.claimName".into(), "required"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "hostPath": {"path": "var/log"}}]))],
             "spec.volumes[0].hostPath.path".into(), "must be an absolute path"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "nfs": {"path": "/x"}}]))],
             "spec.volumes[0].nfs.server".into(), "required"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "../etc"}]}}]))],
             "spec.volumes[0].configMap.items[0].path".into(), "must not contain \"..\""),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "secret": {"secretName": "s", "items": [{"key": "k", "path": "/etc"}]}}]))],
             "spec.volumes[0].secret.items[0].path".into(), "must be a relative path"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "secret": {"secretName": "s", "defaultMode": 1000}}]))],
             "spec.volumes[0].secret.defaultMode".into(), "must be a file mode from 0 to 0777 (511 in decimal), got 1000"),
            ("Pod", vec![("/spec/volumes".into(), json!([{"name": "v", "emptyDir": {"sizeLimit": "-1Gi"}}]))],
             "spec.volumes[0].emptyDir.sizeLimit".into(), "must not be negative"),
            // Probes.
            ("Deployment", vec![(format!("{C}/livenessProbe"), json!({}))],
             format!("{CP}.livenessProbe"), "must have exactly one handler (httpGet, tcpSocket or exec), got none"),
            ("Deployment", vec![(format!("{C}/livenessProbe"), json!({"tcpSocket": {"port": 80}, "exec": {"command": ["true"]}}))],
             format!("{CP}.livenessProbe"), "got 2: tcpSocket, exec"),
            ("Deployment", vec![(format!("{C}/readinessProbe"), json!({"httpGet": {"port": "web"}}))],
             format!("{CP}.readinessProbe.httpGet.port"), "must be a port number 1-65535 or the name of a port of this container (http), got \"web\""),
            ("Deployment", vec![(format!("{C}/readinessProbe"), json!({"tcpSocket": {"port": 0}}))],
             format!("{CP}.readinessProbe.tcpSocket.port"), "must be 1-65535, got 0"),
            ("Deployment", vec![(format!("{C}/readinessProbe"), json!({"exec": {}}))],
             format!("{CP}.readinessProbe.exec.command"), "required"),
            ("Deployment", vec![(format!("{C}/readinessProbe"), json!({"httpGet": {"port": 80, "path": "healthz"}}))],
             format!("{CP}.readinessProbe.httpGet.path"), "must start with '/'"),
            ("Deployment", vec![(format!("{C}/livenessProbe"), json!({"httpGet": {"port": 80}, "successThreshold": 2}))],
             format!("{CP}.livenessProbe.successThreshold"), "must be 1 for liveness and startup probes, got 2"),
            ("Deployment", vec![(format!("{C}/startupProbe"), json!({"httpGet": {"port": 80}, "periodSeconds": 0}))],
             format!("{CP}.startupProbe.periodSeconds"), "must be 1 or more, got 0"),
            ("Deployment", vec![("/spec/template/spec/initContainers".into(),
                json!([{"name": "init", "image": "x", "readinessProbe": {"exec": {"command": ["true"]}}}]))],
             "spec.template.spec.initContainers[0].readinessProbe".into(), "not allowed in an init container"),
            // Pod-level scheduling and lifecycle.
            ("Deployment", vec![("/spec/template/spec/restartPolicy".into(), json!("Never"))],
             "spec.template.spec.restartPolicy".into(), "must be Always in a Deployment, got Never"),
            ("StatefulSet", vec![("/spec/template/spec/restartPolicy".into(), json!("OnFailure"))],
             "spec.template.spec.restartPolicy".into(), "must be Always in a StatefulSet, got OnFailure"),
            ("Pod", vec![("/spec/nodeSelector".into(), json!({"disk": "s s d"}))],
             "spec.nodeSelector.disk".into(), "must be a label value"),
            ("Pod", vec![("/spec/affinity".into(), json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}))],
             "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms".into(), "at least one term"),
            ("Pod", vec![("/spec/affinity".into(), json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In"}]}]}}}))],
             "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values".into(),
             "must not be empty for operator In"),
            ("Pod", vec![("/spec/affinity".into(), json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["many"]}]}]}}}))],
             "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values".into(),
             "must be exactly one integer for operator Gt"),
            ("Pod", vec![("/spec/affinity".into(), json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "ssd", "operator": "Exists", "values": ["x"]}]}]}}}))],
             "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values".into(),
             "must be empty for operator Exists"),
            ("Pod", vec![("/spec/tolerations".into(), json!([{"key": "k", "operator": "Exists", "value": "v"}]))],
             "spec.tolerations[0].value".into(), "must be empty when operator is Exists"),
            ("Pod", vec![("/spec/tolerations".into(), json!([{"value": "v"}]))],
             "spec.tolerations[0].key".into(), "required unless operator is Exists"),
            ("Pod", vec![("/spec/tolerations".into(), json!([{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]))],
             "spec.tolerations[0].tolerationSeconds".into(), "only allowed when effect is NoExecute"),
            ("Pod", vec![("/spec/terminationGracePeriodSeconds".into(), json!(-1))],
             "spec.terminationGracePeriodSeconds".into(), "must be 0 or more, got -1"),
            ("Pod", vec![("/spec/hostname".into(), json!("My.Host"))],
             "spec.hostname".into(), "DNS-1123 label"),
            // Deployments.
            ("Deployment", vec![("/spec/replicas".into(), json!(-1))],
             "spec.replicas".into(), "must be 0 or more, got -1"),
            ("Deployment", vec![("/spec/selector".into(), json!({}))],
             "spec.selector".into(), "required"),
            ("Deployment", vec![("/spec/selector/matchLabels/app".into(), json!("api"))],
             "spec.selector".into(), "does not match template labels"),
            ("Deployment", vec![("/spec/selector/matchExpressions".into(), json!([{"key": "tier", "operator": "Exists"}]))],
             "spec.selector".into(), "does not match template labels"),
            ("Deployment", vec![("/spec/selector/matchExpressions".into(), json!([{"key": "tier", "operator": "In"}]))],
             "spec.selector.matchExpressions[0].values".into(), "must not be empty for operator In"),
            ("Deployment", vec![("/spec/strategy".into(), json!({"rollingUpdate": {"maxSurge": "abc"}}))],
             "spec.strategy.rollingUpdate.maxSurge".into(), "must be an integer or a percentage such as \"25%\", got \"abc\""),
            ("Deployment", vec![("/spec/strategy".into(), json!({"rollingUpdate": {"maxUnavailable": "150%"}}))],
             "spec.strategy.rollingUpdate.maxUnavailable".into(), "must be at most 100%"),
            ("Deployment", vec![("/spec/strategy".into(), json!({"rollingUpdate": {"maxUnavailable": -1}}))],
             "spec.strategy.rollingUpdate.maxUnavailable".into(), "must be 0 or more"),
            ("Deployment", vec![("/spec/strategy".into(), json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}))],
             "spec.strategy.rollingUpdate.maxUnavailable".into(), "may not be 0 when maxSurge is 0"),
            ("Deployment", vec![("/spec/strategy".into(), json!({"type": "Recreate", "rollingUpdate": {}}))],
             "spec.strategy.rollingUpdate".into(), "not allowed when spec.strategy.type is Recreate"),
            ("Deployment", vec![("/spec/minReadySeconds".into(), json!(700))],
             "spec.progressDeadlineSeconds".into(), "must be greater than spec.minReadySeconds (700), got 600"),
            ("Deployment", vec![("/spec/revisionHistoryLimit".into(), json!(-2))],
             "spec.revisionHistoryLimit".into(), "must be 0 or more"),
            // StatefulSets.
            ("StatefulSet", vec![("/spec/serviceName".into(), json!("DB"))],
             "spec.serviceName".into(), "DNS-1035 label"),
            ("StatefulSet", vec![("/spec/volumeClaimTemplates/0/metadata/name".into(), json!(""))],
             "spec.volumeClaimTemplates[0].metadata.name".into(), "required"),
            ("StatefulSet", vec![("/spec/volumeClaimTemplates/1".into(), json!({"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))],
             "spec.volumeClaimTemplates[1].metadata.name".into(), "duplicate name \"data\""),
            ("StatefulSet", vec![("/spec/volumeClaimTemplates/0/spec/accessModes".into(), json!([]))],
             "spec.volumeClaimTemplates[0].spec.accessModes".into(), "required"),
            ("StatefulSet", vec![(format!("{C}/volumeMounts"), json!([{"name": "other", "mountPath": "/d"}]))],
             format!("{CP}.volumeMounts[0].name"), "must name a volume of the pod (data), got \"other\""),
            ("StatefulSet", vec![("/spec/updateStrategy".into(), json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}}))],
             "spec.updateStrategy.rollingUpdate".into(), "not allowed when spec.updateStrategy.type is OnDelete"),
            ("StatefulSet", vec![("/spec/updateStrategy".into(), json!({"rollingUpdate": {"partition": -1}}))],
             "spec.updateStrategy.rollingUpdate.partition".into(), "must be 0 or more"),
            // Services.
            ("Service", vec![("/spec/ports".into(), json!([]))],
             "spec.ports".into(), "at least one port, unless the Service is headless"),
            ("Service", vec![("/spec/ports/0/port".into(), json!(70000))],
             "spec.ports[0].port".into(), "must be 1-65535, got 70000"),
            ("Service", vec![("/spec/ports/0/port".into(), json!(0))],
             "spec.ports[0].port".into(), "required"),
            ("Service", vec![("/spec/ports/1".into(), json!({"port": 81}))],
             "spec.ports[0].name".into(), "required when a Service has several ports"),
            ("Service", vec![("/spec/ports".into(), json!([{"name": "a", "port": 80}, {"name": "a", "port": 81}]))],
             "spec.ports[1].name".into(), "duplicate name \"a\", already used by spec.ports[0]"),
            ("Service", vec![("/spec/ports".into(), json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]))],
             "spec.ports[1]".into(), "duplicate port 80/TCP"),
            ("Service", vec![("/spec/ports/0/name".into(), json!("Web"))],
             "spec.ports[0].name".into(), "DNS-1123 label"),
            ("Service", vec![("/spec/ports/0/targetPort".into(), json!(70000))],
             "spec.ports[0].targetPort".into(), "must be 1-65535, got 70000"),
            ("Service", vec![("/spec/ports/0/targetPort".into(), json!("Web_Port"))],
             "spec.ports[0].targetPort".into(), "must be a port number or the name of a container port"),
            ("Service", vec![("/spec/ports/0/nodePort".into(), json!(30080))],
             "spec.ports[0].nodePort".into(), "only allowed for type NodePort or LoadBalancer, got type ClusterIP"),
            ("Service", vec![("/spec/type".into(), json!("NodePort")), ("/spec/ports/0/nodePort".into(), json!(70000))],
             "spec.ports[0].nodePort".into(), "must be 1-65535, got 70000"),
            ("Service", vec![("/spec/type".into(), json!("NodePort")), ("/spec/clusterIP".into(), json!("None"))],
             "spec.clusterIP".into(), "None (headless) is only allowed with type ClusterIP, got type NodePort"),
            ("Service", vec![("/spec/clusterIP".into(), json!("abc"))],
             "spec.clusterIP".into(), "must be \"None\" (headless), empty, or an IP address"),
            ("Service", vec![("/spec/externalTrafficPolicy".into(), json!("Local"))],
             "spec.externalTrafficPolicy".into(), "only allowed for type NodePort or LoadBalancer"),
            ("Service", vec![("/spec/selector".into(), json!({"app": "-x"}))],
             "spec.selector.app".into(), "must be a label value"),
            // ConfigMaps and Secrets.
            ("ConfigMap", vec![("/data".into(), json!({"": "x"}))],
             "data[]".into(), "must be a key"),
            ("ConfigMap", vec![("/data".into(), json!({"a/b": "x"}))],
             "data[a/b]".into(), "must be a key"),
            ("ConfigMap", vec![("/binaryData".into(), json!({"a": "eA=="}))],
             "binaryData.a".into(), "also in data"),
            ("ConfigMap", vec![("/data".into(), json!({"big": "x".repeat(1024 * 1024 + 1)}))],
             "data".into(), "must total at most 1048576 bytes"),
            ("Secret", vec![("/data".into(), json!({"..x": "eA=="}))],
             "data[..x]".into(), "must be a key"),
            ("Secret", vec![("/type".into(), json!("kubernetes.io/tls")), ("/data".into(), json!({"tls.crt": "eA=="}))],
             "data[tls.key]".into(), "required for a Secret of type kubernetes.io/tls"),
            // Claims.
            ("PersistentVolumeClaim", vec![("/spec/accessModes".into(), json!([]))],
             "spec.accessModes".into(), "at least one of ReadWriteOnce"),
            ("PersistentVolumeClaim", vec![("/spec/resources".into(), json!({}))],
             "spec.resources.requests.storage".into(), "required"),
            ("PersistentVolumeClaim", vec![("/spec/resources/requests/cpu".into(), json!("1"))],
             "spec.resources.requests.cpu".into(), "a claim's only resource is storage"),
            ("PersistentVolumeClaim", vec![("/spec/resources/requests/storage".into(), json!("0"))],
             "spec.resources.requests.storage".into(), "must be more than 0"),
            ("PersistentVolumeClaim", vec![("/spec/resources/limits/storage".into(), json!("1Mi"))],
             "spec.resources.requests.storage".into(), "must be at most the limit 1Mi, got 1Gi"),
            ("PersistentVolumeClaim", vec![("/spec/volumeMode".into(), json!("Block"))],
             "spec.volumeMode".into(), "shoal supports only Filesystem, got Block"),
            ("PersistentVolumeClaim", vec![("/spec/storageClassName".into(), json!("Fast SSD"))],
             "spec.storageClassName".into(), "DNS-1123 subdomain"),
        ];
        for (kind, patches, field, message) in cases {
            let mut v = base(kind);
            for (pointer, value) in patches.iter() {
                set(&mut v, pointer, value.clone());
            }
            let errors = match parse_value(v) {
                Ok(_) => panic!("{kind} {patches:?}: no error, expected {field}: {message}"),
                Err(e) => e.0,
            };
            assert!(
                errors
                    .iter()
                    .any(|e| e.field == field && e.message.contains(message)),
                "{kind} {patches:?}: expected {field}: {message}\n got {errors:#?}"
            );
        }
    }

    #[test]
    fn valid_variants_are_accepted() {
        let cases: Vec<(&str, Vec<(String, Value)>)> = vec![
            (
                "Service",
                vec![
                    ("/spec/clusterIP".into(), json!("None")),
                    ("/spec/ports".into(), json!([])),
                ],
            ),
            (
                "Service",
                vec![("/spec/ports/0/targetPort".into(), json!("http"))],
            ),
            (
                "Service",
                vec![
                    ("/spec/type".into(), json!("LoadBalancer")),
                    ("/spec/ports/0/nodePort".into(), json!(8080)),
                ],
            ),
            (
                "Service",
                vec![("/spec/clusterIP".into(), json!("10.0.0.1"))],
            ),
            (
                "Deployment",
                vec![(
                    format!("{C}/readinessProbe"),
                    json!({"httpGet": {"port": "http"}}),
                )],
            ),
            (
                "Deployment",
                vec![("/spec/strategy".into(), json!({"type": "Recreate"}))],
            ),
            ("Deployment", vec![("/spec/replicas".into(), json!(0))]),
            (
                "Deployment",
                vec![(
                    "/spec/selector/matchExpressions".into(),
                    json!([{"key": "app", "operator": "In", "values": ["web", "api"]}]),
                )],
            ),
            ("Pod", vec![("/spec/restartPolicy".into(), json!("Never"))]),
            (
                "Pod",
                vec![("/spec/tolerations".into(), json!([{"operator": "Exists"}]))],
            ),
            (
                "StatefulSet",
                vec![(
                    format!("{C}/volumeMounts"),
                    json!([{"name": "data", "mountPath": "/d"}]),
                )],
            ),
            (
                "StatefulSet",
                vec![("/spec/updateStrategy".into(), json!({"type": "OnDelete"}))],
            ),
            (
                "Secret",
                vec![("/type".into(), json!("example.com/custom"))],
            ),
        ];
        for (kind, patches) in cases {
            let mut v = base(kind);
            for (pointer, value) in patches.iter() {
                set(&mut v, pointer, value.clone());
            }
            let r = parse_value(v);
            assert!(r.is_ok(), "{kind} {patches:?}: {r:?}");
        }
    }

    #[test]
    fn name_rules() {
        let cases: &[(Check, &str, bool)] = &[
            (check_dns1123_label, "web", true),
            (check_dns1123_label, "web-1", true),
            (check_dns1123_label, "1web", true),
            (check_dns1123_label, "Web", false),
            (check_dns1123_label, "-web", false),
            (check_dns1123_label, "web-", false),
            (check_dns1123_label, "a.b", false),
            (check_dns1123_label, "", false),
            (check_dns1123_label, &"a".repeat(63), true),
            (check_dns1123_label, &"a".repeat(64), false),
            (check_dns1035_label, "web", true),
            (check_dns1035_label, "1web", false),
            (check_dns1123_subdomain, "app.v2", true),
            (check_dns1123_subdomain, "app..v2", false),
            (check_dns1123_subdomain, ".app", false),
            (check_dns1123_subdomain, "my_app", false),
            (check_dns1123_subdomain, &"a".repeat(253), true),
            (check_dns1123_subdomain, &"a".repeat(254), false),
            (check_iana_svc_name, "http", true),
            (check_iana_svc_name, "http-alt", true),
            (check_iana_svc_name, "80", false),
            (check_iana_svc_name, "a--b", false),
            (check_iana_svc_name, "averyveryverylongname", false),
            (check_iana_svc_name, "Http", false),
            (check_label_key, "app", true),
            (check_label_key, "app.kubernetes.io/name", true),
            (check_label_key, "example.com/Tier_1.x", true),
            (check_label_key, "Example.com/x", false),
            (check_label_key, "/x", false),
            (check_label_key, "x/", false),
            (check_label_key, "a/b/c", false),
            (check_label_key, "-x", false),
            (check_label_key, &"k".repeat(64), false),
            (check_label_value, "", true),
            (check_label_value, "v1.2_x-y", true),
            (check_label_value, "-v", false),
            (check_label_value, "a b", false),
            (check_label_value, &"v".repeat(64), false),
            (check_env_var_name, "MY_VAR", true),
            (check_env_var_name, "my.var-1", true),
            (check_env_var_name, "_X", true),
            (check_env_var_name, "1VAR", false),
            (check_env_var_name, "MY VAR", false),
            (check_env_var_name, "", false),
            (check_config_key, "config.yaml", true),
            (check_config_key, ".dockerconfigjson", true),
            (check_config_key, "tls.crt", true),
            (check_config_key, "..", false),
            (check_config_key, "..data", false),
            (check_config_key, "a/b", false),
            (check_config_key, "", false),
        ];
        for (check, input, ok) in cases {
            let r = check(input);
            assert_eq!(r.is_ok(), *ok, "{input}: {r:?}");
            if let Err(m) = r {
                assert!(m.contains(&format!("got \"{input}\"")), "{m}");
            }
        }
    }

    #[test]
    fn key_paths() {
        assert_eq!(key_path("data", "password"), "data.password");
        assert_eq!(key_path("data", "tls.crt"), "data[tls.crt]");
        assert_eq!(
            key_path("metadata.labels", "app.kubernetes.io/name"),
            "metadata.labels[app.kubernetes.io/name]"
        );
        assert_eq!(key_path("", "x"), "x");
    }
}
