//! `describe`: a readable multi-line view of one object. Every kind shares the metadata header
//! and a few section writers (pod template, containers, conditions, key/value maps); the
//! kind-specific part is a short function per kind picked from [`body`].

use base64::Engine as _;
use serde_json::Value;
use shoal_protocol::Kind;

use crate::output::{
    access_modes, at, human_duration, int, joined_map, list, map, node_roles, node_status,
    parse_rfc3339, pod_status, selector_text, text,
};

/// Lines of a description; consecutive fields at one indent are aligned together.
#[derive(Default)]
struct Doc {
    lines: Vec<Line>,
}

enum Line {
    /// `key:  value`; an empty key continues the previous field's value.
    Field {
        indent: usize,
        key: String,
        value: String,
    },
    Text {
        indent: usize,
        text: String,
    },
}

impl Doc {
    fn field(&mut self, indent: usize, key: &str, value: impl Into<String>) {
        self.lines.push(Line::Field {
            indent,
            key: key.to_string(),
            value: value.into(),
        });
    }

    /// A field with several values, one a line; `<none>` when empty.
    fn fields(&mut self, indent: usize, key: &str, values: Vec<String>) {
        if values.is_empty() {
            self.field(indent, key, "<none>");
        }
        for (i, v) in values.into_iter().enumerate() {
            self.field(indent, if i == 0 { key } else { "" }, v);
        }
    }

    fn text(&mut self, indent: usize, text: impl Into<String>) {
        self.lines.push(Line::Text {
            indent,
            text: text.into(),
        });
    }

    /// A heading whose content follows on deeper-indented lines (`Containers:`); it aligns
    /// with the fields around it.
    fn heading(&mut self, indent: usize, key: &str) {
        self.field(indent, key, "");
    }

    /// A kubectl-style inner table: headers, a row of dashes, then the rows.
    fn table(&mut self, indent: usize, headers: &[&str], rows: Vec<Vec<String>>) {
        let head: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        let dashes: Vec<String> = headers.iter().map(|h| "-".repeat(h.len())).collect();
        let all: Vec<&[String]> = [head.as_slice(), dashes.as_slice()]
            .into_iter()
            .chain(rows.iter().map(Vec::as_slice))
            .collect();
        for line in crate::output::render_rows(&all).lines() {
            self.text(indent, line);
        }
    }

    fn indent(line: &Line) -> usize {
        match line {
            Line::Field { indent, .. } | Line::Text { indent, .. } => *indent,
        }
    }

    /// The value column of the field at `i`: fields at one indent share it as long as only
    /// deeper lines come between them (the way kubectl's tabwriter lines up a section).
    fn key_width(&self, i: usize) -> usize {
        let k = Self::indent(&self.lines[i]);
        let in_group = |l: &Line| match l {
            Line::Field { indent, .. } => *indent >= k,
            Line::Text { indent, .. } => *indent > k,
        };
        let start = self.lines[..i]
            .iter()
            .rposition(|l| !in_group(l))
            .map_or(0, |p| p + 1);
        let end = self.lines[i..]
            .iter()
            .position(|l| !in_group(l))
            .map_or(self.lines.len(), |p| i + p);
        self.lines[start..end]
            .iter()
            .filter_map(|l| match l {
                Line::Field { indent, key, .. } if *indent == k && !key.is_empty() => {
                    Some(key.chars().count() + 1)
                }
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            let full = match line {
                Line::Text { indent, text } => format!("{}{text}", " ".repeat(*indent)),
                Line::Field { indent, key, value } => {
                    let label = if key.is_empty() {
                        String::new()
                    } else {
                        format!("{key}:")
                    };
                    let pad = self.key_width(i).saturating_sub(label.chars().count()) + 2;
                    format!("{}{label}{}{value}", " ".repeat(*indent), " ".repeat(pad))
                }
            };
            out.push_str(full.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Options of a description.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Show Secret values decoded instead of their sizes.
    pub show_secrets: bool,
    /// Now, in seconds since the epoch, for ages.
    pub now: i64,
}

/// The description of one object of `kind`.
pub fn describe(kind: Kind, obj: &Value, opts: Options) -> String {
    let mut d = Doc::default();
    d.field(0, "Name", text(obj, "/metadata/name").unwrap_or_default());
    if kind.namespaced() {
        d.field(
            0,
            "Namespace",
            text(obj, "/metadata/namespace").unwrap_or_default(),
        );
    }
    d.fields(0, "Labels", pairs(obj, "/metadata/labels"));
    d.fields(0, "Annotations", pairs(obj, "/metadata/annotations"));
    d.field(
        0,
        "CreationTimestamp",
        time_ago(text(obj, "/metadata/creationTimestamp"), opts.now),
    );
    body(kind)(&mut d, obj, opts);
    d.render()
}

/// `2024-05-01T09:55:00Z (5m ago)`; the text alone when it does not parse, `<unknown>` when
/// missing.
fn time_ago(time: Option<String>, now: i64) -> String {
    match time {
        Some(t) => match parse_rfc3339(&t) {
            Some(secs) => format!("{t} ({} ago)", human_duration(now - secs)),
            None => t,
        },
        None => "<unknown>".into(),
    }
}

type Body = fn(&mut Doc, &Value, Options);

/// The kind-specific part of a description.
fn body(kind: Kind) -> Body {
    match kind {
        Kind::Deployment => deployment,
        Kind::ReplicaSet => statefulset,
        Kind::StatefulSet => statefulset,
        Kind::ControllerRevision => controllerrevision,
        Kind::Endpoints => endpoints,
        Kind::Pod => pod,
        Kind::Service => service,
        Kind::ConfigMap => configmap,
        Kind::Secret => secret,
        Kind::Namespace => namespace,
        Kind::Node => node,
        Kind::PersistentVolumeClaim => pvc,
        Kind::Event => event,
    }
}

fn event(d: &mut Doc, v: &Value, opts: Options) {
    let object = format!(
        "{}/{}",
        text(v, "/involvedObject/kind").unwrap_or_default(),
        text(v, "/involvedObject/name").unwrap_or_default()
    );
    d.field(0, "Type", text(v, "/type").unwrap_or_default());
    d.field(0, "Reason", text(v, "/reason").unwrap_or_default());
    d.field(0, "Involved Object", object);
    d.field(0, "Source", text(v, "/source/host").unwrap_or_default());
    d.field(
        0,
        "First Seen",
        time_ago(text(v, "/firstTimestamp"), opts.now),
    );
    d.field(
        0,
        "Last Seen",
        time_ago(text(v, "/lastTimestamp"), opts.now),
    );
    d.field(0, "Count", n(v, "/count").to_string());
    d.field(0, "Message", text(v, "/message").unwrap_or_default());
}

/// `k=v` lines of a string map, sorted as the server sent them.
fn pairs(v: &Value, pointer: &str) -> Vec<String> {
    map(v, pointer)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect()
}

fn n(v: &Value, pointer: &str) -> i64 {
    int(v, pointer).unwrap_or(0)
}

fn or_none(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn deployment(d: &mut Doc, v: &Value, _: Options) {
    d.field(
        0,
        "Selector",
        or_none(at(v, "/spec/selector").and_then(selector_text)),
    );
    let desired = int(v, "/spec/replicas").unwrap_or(1);
    let available = n(v, "/status/availableReplicas");
    d.field(
        0,
        "Replicas",
        format!(
            "{desired} desired | {} updated | {} total | {available} available | {} unavailable",
            n(v, "/status/updatedReplicas"),
            n(v, "/status/replicas"),
            (n(v, "/status/replicas") - available).max(0),
        ),
    );
    d.field(
        0,
        "StrategyType",
        text(v, "/spec/strategy/type").unwrap_or_else(|| "RollingUpdate".into()),
    );
    if let Some(ru) = at(v, "/spec/strategy/rollingUpdate") {
        d.field(
            0,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                text(ru, "/maxUnavailable").unwrap_or_else(|| "25%".into()),
                text(ru, "/maxSurge").unwrap_or_else(|| "25%".into())
            ),
        );
    }
    pod_template(d, v);
    conditions(d, v, &["Type", "Status", "Reason", "Message"]);
}

fn statefulset(d: &mut Doc, v: &Value, _: Options) {
    d.field(
        0,
        "Selector",
        or_none(at(v, "/spec/selector").and_then(selector_text)),
    );
    d.field(0, "Service Name", or_none(text(v, "/spec/serviceName")));
    d.field(
        0,
        "Replicas",
        format!(
            "{} desired | {} total | {} ready",
            int(v, "/spec/replicas").unwrap_or(1),
            n(v, "/status/replicas"),
            n(v, "/status/readyReplicas")
        ),
    );
    pod_template(d, v);
    let claims = list(v, "/spec/volumeClaimTemplates");
    if claims.is_empty() {
        d.field(0, "Volume Claims", "<none>");
    } else {
        d.heading(0, "Volume Claims");
        for c in claims {
            d.field(2, "Name", text(c, "/metadata/name").unwrap_or_default());
            d.field(
                2,
                "StorageClass",
                or_none(text(c, "/spec/storageClassName")),
            );
            d.field(
                2,
                "Capacity",
                or_none(text(c, "/spec/resources/requests/storage")),
            );
            d.field(
                2,
                "Access Modes",
                or_none(Some(access_modes(c, "/spec/accessModes"))),
            );
        }
    }
    conditions(d, v, &["Type", "Status", "Reason", "Message"]);
}

fn pod_template(d: &mut Doc, v: &Value) {
    d.heading(0, "Pod Template");
    let t = at(v, "/spec/template").cloned().unwrap_or(Value::Null);
    d.fields(2, "Labels", pairs(&t, "/metadata/labels"));
    let spec = at(&t, "/spec").cloned().unwrap_or(Value::Null);
    containers(d, 2, &spec, None);
    volumes(d, 2, &spec);
}

/// The containers of a pod spec, with their status when `pod` is given; `base` is
/// the indent of the `Containers:` heading.
fn containers(d: &mut Doc, base: usize, spec: &Value, pod: Option<&Value>) {
    let cs = list(spec, "/containers");
    if cs.is_empty() {
        d.field(base, "Containers", "<none>");
        return;
    }
    d.heading(base, "Containers");
    let (name_at, field_at) = (base + 1, base + 2);
    for c in cs {
        let name = text(c, "/name").unwrap_or_default();
        d.heading(name_at, &name);
        d.field(field_at, "Image", or_none(text(c, "/image")));
        let ports: Vec<String> = list(c, "/ports")
            .iter()
            .map(|p| {
                let mut s = format!(
                    "{}/{}",
                    text(p, "/containerPort").unwrap_or_default(),
                    text(p, "/protocol").unwrap_or_else(|| "TCP".into())
                );
                if let Some(name) = text(p, "/name") {
                    s.push_str(&format!(" ({name})"));
                }
                s
            })
            .collect();
        d.field(field_at, "Ports", or_none(Some(ports.join(", "))));
        for (label, pointer) in [("Command", "/command"), ("Args", "/args")] {
            let words: Vec<String> = list(c, pointer)
                .iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect();
            if !words.is_empty() {
                d.fields(field_at, label, words);
            }
        }
        for (label, pointer) in [
            ("Requests", "/resources/requests"),
            ("Limits", "/resources/limits"),
        ] {
            if let Some(r) = joined_map(c, pointer) {
                d.field(field_at, label, r.replace(',', ", "));
            }
        }
        if let Some(st) = pod.and_then(|p| {
            list(p, "/status/containerStatuses")
                .iter()
                .find(|cs| text(cs, "/name").as_deref() == Some(name.as_str()))
        }) {
            state_fields(d, field_at, "State", at(st, "/state"));
            if at(st, "/lastState").is_some_and(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
                state_fields(d, field_at, "Last State", at(st, "/lastState"));
            }
            d.field(
                field_at,
                "Ready",
                at(st, "/ready")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string(),
            );
            d.field(
                field_at,
                "Restart Count",
                n(st, "/restartCount").to_string(),
            );
        }
        let env = list(c, "/env");
        if env.is_empty() {
            d.field(field_at, "Environment", "<none>");
        } else {
            d.heading(field_at, "Environment");
            for e in env {
                d.field(
                    field_at + 2,
                    &text(e, "/name").unwrap_or_default(),
                    env_value(e),
                );
            }
        }
        for from in list(c, "/envFrom") {
            if let Some(cm) = text(from, "/configMapRef/name") {
                d.field(field_at, "Environment From", format!("ConfigMap {cm}"));
            } else if let Some(s) = text(from, "/secretRef/name") {
                d.field(field_at, "Environment From", format!("Secret {s}"));
            }
        }
        let mounts: Vec<String> = list(c, "/volumeMounts")
            .iter()
            .map(|m| {
                let ro = at(m, "/readOnly").and_then(Value::as_bool) == Some(true);
                format!(
                    "{} from {} ({})",
                    text(m, "/mountPath").unwrap_or_default(),
                    text(m, "/name").unwrap_or_default(),
                    if ro { "ro" } else { "rw" }
                )
            })
            .collect();
        d.fields(field_at, "Mounts", mounts);
    }
}

fn env_value(e: &Value) -> String {
    if let Some(v) = text(e, "/value") {
        return v;
    }
    if let Some(r) = at(e, "/valueFrom/configMapKeyRef") {
        return format!(
            "<set to the key '{}' of config map '{}'>",
            text(r, "/key").unwrap_or_default(),
            text(r, "/name").unwrap_or_default()
        );
    }
    if let Some(r) = at(e, "/valueFrom/secretKeyRef") {
        return format!(
            "<set to the key '{}' in secret '{}'>",
            text(r, "/key").unwrap_or_default(),
            text(r, "/name").unwrap_or_default()
        );
    }
    if let Some(f) = text(e, "/valueFrom/fieldRef/fieldPath") {
        return format!("({f})");
    }
    String::new()
}

/// A container state as kubectl prints it: the state, then its reason, message, exit code
/// and times on their own lines.
fn state_fields(d: &mut Doc, indent: usize, label: &str, state: Option<&Value>) {
    let Some(state) = state else {
        d.field(indent, label, "Unknown");
        return;
    };
    let sub = indent + 1;
    if let Some(w) = at(state, "/waiting") {
        d.field(indent, label, "Waiting");
        d.field(sub, "Reason", text(w, "/reason").unwrap_or_default());
        if let Some(m) = text(w, "/message") {
            d.field(sub, "Message", m);
        }
    } else if let Some(r) = at(state, "/running") {
        d.field(indent, label, "Running");
        if let Some(t) = text(r, "/startedAt") {
            d.field(sub, "Started", t);
        }
    } else if let Some(t) = at(state, "/terminated") {
        d.field(indent, label, "Terminated");
        if let Some(r) = text(t, "/reason") {
            d.field(sub, "Reason", r);
        }
        if let Some(m) = text(t, "/message") {
            d.field(sub, "Message", m);
        }
        d.field(sub, "Exit Code", n(t, "/exitCode").to_string());
        for (key, pointer) in [("Started", "/startedAt"), ("Finished", "/finishedAt")] {
            if let Some(v) = text(t, pointer) {
                d.field(sub, key, v);
            }
        }
    } else {
        d.field(indent, label, "Unknown");
    }
}

fn volumes(d: &mut Doc, base: usize, spec: &Value) {
    let vols = list(spec, "/volumes");
    if vols.is_empty() {
        d.field(base, "Volumes", "<none>");
        return;
    }
    d.heading(base, "Volumes");
    for vol in vols {
        let name = text(vol, "/name").unwrap_or_default();
        // The source is the one key besides `name`: persistentVolumeClaim, configMap, ...
        let source = vol
            .as_object()
            .into_iter()
            .flatten()
            .find(|(k, _)| k.as_str() != "name");
        let summary = match source {
            Some((kind, detail)) => {
                let fields: Vec<String> = detail
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| !v.is_object() && !v.is_array())
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str().map_or_else(|| v.to_string(), str::to_string)
                        )
                    })
                    .collect();
                if fields.is_empty() {
                    kind.clone()
                } else {
                    format!("{kind} ({})", fields.join(", "))
                }
            }
            None => "<unknown>".into(),
        };
        d.field(base + 1, &name, summary);
    }
}

/// The `status.conditions` table; columns are condition fields, by their capitalized names.
fn conditions(d: &mut Doc, v: &Value, columns: &[&str]) {
    let conds = list(v, "/status/conditions");
    if conds.is_empty() {
        d.field(0, "Conditions", "<none>");
        return;
    }
    d.heading(0, "Conditions");
    let rows = conds
        .iter()
        .map(|c| {
            columns
                .iter()
                .map(|col| {
                    let mut key = col.to_string();
                    if let Some(first) = key.get_mut(0..1) {
                        first.make_ascii_lowercase();
                    }
                    text(c, &format!("/{key}")).unwrap_or_default()
                })
                .collect()
        })
        .collect();
    d.table(2, columns, rows);
}

fn pod(d: &mut Doc, v: &Value, _: Options) {
    let node = match (text(v, "/spec/nodeName"), text(v, "/status/hostIP")) {
        (Some(n), Some(ip)) => format!("{n}/{ip}"),
        (Some(n), None) => n,
        _ => "<none>".into(),
    };
    d.field(0, "Node", node);
    d.field(0, "Start Time", or_none(text(v, "/status/startTime")));
    d.field(0, "Status", pod_status(v));
    if let Some(reason) = text(v, "/status/reason") {
        d.field(0, "Reason", reason);
    }
    if let Some(message) = text(v, "/status/message") {
        d.field(0, "Message", message);
    }
    // `podIp`/`hostIp` are read too: older nodes spelled them so.
    let ip = text(v, "/status/podIP").or_else(|| text(v, "/status/podIp"));
    d.field(0, "IP", or_none(ip));
    let host_ports: Vec<String> = list(v, "/status/hostPorts")
        .iter()
        .map(|p| {
            format!(
                "{}:{}/{} -> {}:{}",
                text(p, "/hostIp").unwrap_or_default(),
                text(p, "/hostPort").unwrap_or_default(),
                text(p, "/protocol").unwrap_or_else(|| "TCP".into()),
                text(p, "/container").unwrap_or_default(),
                text(p, "/containerPort").unwrap_or_default(),
            )
        })
        .collect();
    d.fields(0, "Host Ports", host_ports);
    if let Some(owner) = list(v, "/metadata/ownerReferences").first() {
        d.field(
            0,
            "Controlled By",
            format!(
                "{}/{}",
                text(owner, "/kind").unwrap_or_default(),
                text(owner, "/name").unwrap_or_default()
            ),
        );
    }
    let spec = at(v, "/spec").cloned().unwrap_or(Value::Null);
    containers(d, 0, &spec, Some(v));
    volumes(d, 0, &spec);
    // The conditions with their transition times are the pod's recent history until events
    // exist.
    conditions(
        d,
        v,
        &["Type", "Status", "LastTransitionTime", "Reason", "Message"],
    );
}

fn service(d: &mut Doc, v: &Value, _: Options) {
    d.field(0, "DNS Name", or_none(text(v, "/status/dnsName")));
    d.field(0, "Selector", or_none(joined_map(v, "/spec/selector")));
    d.field(
        0,
        "Type",
        text(v, "/spec/type").unwrap_or_else(|| "ClusterIP".into()),
    );
    d.field(0, "IP", or_none(text(v, "/spec/clusterIP")));
    let external: Vec<String> = list(v, "/spec/externalIPs")
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    if !external.is_empty() {
        d.field(0, "External IPs", external.join(","));
    }
    for p in list(v, "/spec/ports") {
        let proto = text(p, "/protocol").unwrap_or_else(|| "TCP".into());
        let name = text(p, "/name").unwrap_or_else(|| "<unset>".into());
        let port = text(p, "/port").unwrap_or_default();
        d.field(0, "Port", format!("{name}  {port}/{proto}"));
        let target = text(p, "/targetPort").unwrap_or_else(|| port.clone());
        d.field(0, "TargetPort", format!("{target}/{proto}"));
        if let Some(np) = text(p, "/nodePort") {
            d.field(0, "NodePort", format!("{name}  {np}/{proto}"));
        }
    }
}

fn configmap(d: &mut Doc, v: &Value, _: Options) {
    d.text(0, "");
    d.text(0, "Data");
    d.text(0, "====");
    for (k, val) in map(v, "/data").into_iter().flatten() {
        d.text(0, format!("{k}:"));
        d.text(0, "----");
        d.text(0, val.as_str().unwrap_or_default());
        d.text(0, "");
    }
    d.text(0, "");
    d.text(0, "BinaryData");
    d.text(0, "====");
    for (k, val) in map(v, "/binaryData").into_iter().flatten() {
        let size = crate::output::decoded_len(val.as_str().unwrap_or_default());
        d.field(0, k, format!("{size} bytes"));
    }
}

fn secret(d: &mut Doc, v: &Value, opts: Options) {
    d.text(0, "");
    d.field(
        0,
        "Type",
        text(v, "/type").unwrap_or_else(|| "Opaque".into()),
    );
    d.text(0, "");
    d.text(0, "Data");
    d.text(0, "====");
    for (k, val) in map(v, "/data").into_iter().flatten() {
        let raw = val.as_str().unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD.decode(raw.trim());
        let shown = match (opts.show_secrets, decoded) {
            (true, Ok(bytes)) => match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => format!("{} bytes (binary)", e.as_bytes().len()),
            },
            (false, Ok(bytes)) => format!("{} bytes", bytes.len()),
            (_, Err(_)) => format!("{} bytes (not valid base64)", raw.len()),
        };
        d.field(0, k, shown);
    }
}

fn namespace(d: &mut Doc, v: &Value, _: Options) {
    d.field(
        0,
        "Status",
        text(v, "/status/phase").unwrap_or_else(|| "Active".into()),
    );
}

fn node(d: &mut Doc, v: &Value, opts: Options) {
    d.field(0, "Roles", node_roles(v));
    d.field(0, "Status", node_status(v));
    // A node object without membership (from an older node) has no last-seen time to show.
    if at(v, "/status/membership").is_some() {
        d.field(
            0,
            "Last Seen",
            time_ago(text(v, "/status/membership/lastSeen"), opts.now),
        );
    }
    d.field(
        0,
        "Unschedulable",
        (at(v, "/spec/unschedulable").and_then(Value::as_bool) == Some(true)).to_string(),
    );
    d.field(0, "PodCIDR", or_none(text(v, "/spec/podCIDR")));
    if let Some(route) = text(v, "/status/podRoute") {
        d.field(0, "Pod Route", route);
    }
    conditions(
        d,
        v,
        &[
            "Type",
            "Status",
            "LastHeartbeatTime",
            "LastTransitionTime",
            "Reason",
            "Message",
        ],
    );
    let sections: [(&str, &str); 4] = [
        ("Addresses", "/status/addresses"),
        ("Capacity", "/status/capacity"),
        ("Allocatable", "/status/allocatable"),
        ("System Info", "/status/nodeInfo"),
    ];
    for (title, pointer) in sections {
        let entries: Vec<(String, String)> = match at(v, pointer) {
            // Addresses are a list of {type, address}; the others are maps.
            Some(Value::Array(items)) => items
                .iter()
                .map(|a| {
                    (
                        text(a, "/type").unwrap_or_default(),
                        text(a, "/address").unwrap_or_default(),
                    )
                })
                .collect(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        if entries.is_empty() {
            d.field(0, title, "<none>");
        } else {
            d.heading(0, title);
            for (k, val) in entries {
                d.field(2, &k, val);
            }
        }
    }
}

fn controllerrevision(d: &mut Doc, v: &Value, _: Options) {
    d.field(
        0,
        "Revision",
        or_none(at(v, "/revision").map(|r| r.to_string())),
    );
    d.field(
        0,
        "Containers",
        list(v, "/data/spec/template/spec/containers")
            .iter()
            .filter_map(|c| Some(format!("{} ({})", text(c, "/name")?, text(c, "/image")?)))
            .collect::<Vec<_>>()
            .join(", "),
    );
}

fn endpoints(d: &mut Doc, v: &Value, _: Options) {
    for s in list(v, "/subsets") {
        let ips = |key: &str| -> String {
            let found: Vec<String> = list(s, key)
                .iter()
                .filter_map(|a| {
                    let ip = text(a, "/ip")?;
                    Some(match text(a, "/targetRef/name") {
                        Some(pod) => format!("{ip} ({pod})"),
                        None => ip,
                    })
                })
                .collect();
            or_none(Some(found.join(",")))
        };
        d.field(0, "Addresses", ips("/addresses"));
        d.field(0, "NotReadyAddresses", ips("/notReadyAddresses"));
        for p in list(s, "/ports") {
            d.field(
                0,
                "Port",
                format!(
                    "{}  {}/{}",
                    text(p, "/name").unwrap_or_else(|| "<unset>".into()),
                    text(p, "/port").unwrap_or_default(),
                    text(p, "/protocol").unwrap_or_else(|| "TCP".into())
                ),
            );
        }
    }
}

fn pvc(d: &mut Doc, v: &Value, _: Options) {
    d.field(
        0,
        "StorageClass",
        or_none(text(v, "/spec/storageClassName")),
    );
    d.field(
        0,
        "Status",
        text(v, "/status/phase").unwrap_or_else(|| "Pending".into()),
    );
    d.field(0, "Volume", or_none(text(v, "/spec/volumeName")));
    d.field(0, "Capacity", or_none(text(v, "/status/capacity/storage")));
    d.field(
        0,
        "Requested",
        or_none(text(v, "/spec/resources/requests/storage")),
    );
    d.field(
        0,
        "Access Modes",
        or_none(Some(access_modes(v, "/spec/accessModes"))),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_714_557_600; // 2024-05-01T10:00:00Z

    fn opts(show_secrets: bool) -> Options {
        Options {
            show_secrets,
            now: NOW,
        }
    }

    #[test]
    fn deployment_description() {
        let v = json!({
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default",
                         "labels": {"app": "web", "tier": "front"},
                         "creationTimestamp": "2024-05-01T09:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                       "spec": {"containers": [{"name": "web", "image": "nginx:1.25",
                         "ports": [{"containerPort": 80}],
                         "env": [{"name": "MODE", "value": "prod"},
                                 {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}}],
                         "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]}],
                       "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}},
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2,
                       "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}
        });
        let out = describe(Kind::Deployment, &v, opts(false));
        let want = "\
Name:               web
Namespace:          default
Labels:             app=web
                    tier=front
Annotations:        <none>
CreationTimestamp:  2024-05-01T09:00:00Z (60m ago)
Selector:           app=web
Replicas:           3 desired | 3 updated | 3 total | 2 available | 1 unavailable
StrategyType:       RollingUpdate
Pod Template:
  Labels:      app=web
  Containers:
   web:
    Image:        nginx:1.25
    Ports:        80/TCP
    Environment:
      MODE:  prod
      PW:    <set to the key 'pw' in secret 's'>
    Mounts:       /data from data (ro)
  Volumes:
   data:  persistentVolumeClaim (claimName=data)
Conditions:
  Type        Status   Reason                     Message
  ----        ------   ------                     -------
  Available   True     MinimumReplicasAvailable
";
        assert_eq!(out, want, "\n{out}");
    }

    #[test]
    fn secret_shows_sizes_unless_asked() {
        let v = json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                       "type": "Opaque", "data": {"password": "aHVudGVyMg=="}});
        let hidden = describe(Kind::Secret, &v, opts(false));
        assert!(hidden.contains("password:  7 bytes"), "{hidden}");
        assert!(!hidden.contains("hunter2"));
        let shown = describe(Kind::Secret, &v, opts(true));
        assert!(shown.contains("password:  hunter2"), "{shown}");
    }

    #[test]
    fn configmap_service_node_descriptions() {
        let cm = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"k": "line1\nline2"}});
        let out = describe(Kind::ConfigMap, &cm, opts(false));
        assert!(
            out.contains("Data\n====\nk:\n----\nline1\nline2\n"),
            "{out}"
        );

        let svc = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.0.0.1", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
        let out = describe(Kind::Service, &svc, opts(false));
        assert!(out.contains("Type:               ClusterIP"), "{out}");
        assert!(out.contains("Port:               http  80/TCP"), "{out}");
        assert!(out.contains("TargetPort:         8080/TCP"), "{out}");

        let node = json!({"metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
                       "capacity": {"cpu": "4"}, "nodeInfo": {"shoalVersion": "0.1.0"}}});
        let out = describe(Kind::Node, &node, opts(false));
        assert!(!out.contains("Namespace:"), "{out}");
        assert!(
            out.contains("Addresses:\n  InternalIP:  192.168.1.5\n"),
            "{out}"
        );
        assert!(
            out.contains("System Info:\n  shoalVersion:  0.1.0\n"),
            "{out}"
        );
        assert!(out.contains("Allocatable:        <none>"), "{out}");
    }

    #[test]
    fn node_description_has_membership() {
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "creationTimestamp": "2024-04-29T10:00:00Z",
                         "labels": {"kubernetes.io/hostname": "n1",
                                    "node-role.shoal.dev/controller": ""}},
            "spec": {"podCIDR": "10.42.7.0/24", "podCIDRs": ["10.42.7.0/24"]},
            "status": {
                "podRoute": "host-gateway from n2",
                "conditions": [{"type": "Ready", "status": "True", "reason": "NodeAlive",
                                "message": "gossip heard from the node 2s ago",
                                "lastHeartbeatTime": "2024-05-01T09:59:58Z"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.2"},
                              {"type": "Hostname", "address": "n1"}],
                "capacity": {"cpu": "2", "memory": "24575392Ki"},
                "allocatable": {"cpu": "2", "memory": "24575392Ki"},
                "nodeInfo": {"shoalVersion": "0.1.0", "peerId": "12D3KooWabc"},
                "membership": {"state": "alive", "lastSeen": "2024-05-01T09:59:58Z",
                               "roles": ["controller"]}}});
        let out = describe(Kind::Node, &node, opts(false));
        let want = "\
Name:               n1
Labels:             kubernetes.io/hostname=n1
                    node-role.shoal.dev/controller=
Annotations:        <none>
CreationTimestamp:  2024-04-29T10:00:00Z (2d ago)
Roles:              controller
Status:             Alive
Last Seen:          2024-05-01T09:59:58Z (2s ago)
Unschedulable:      false
PodCIDR:            10.42.7.0/24
Pod Route:          host-gateway from n2
Conditions:
  Type    Status   LastHeartbeatTime      LastTransitionTime   Reason      Message
  ----    ------   -----------------      ------------------   ------      -------
  Ready   True     2024-05-01T09:59:58Z                        NodeAlive   gossip heard from the node 2s ago
Addresses:
  InternalIP:  127.0.0.2
  Hostname:    n1
Capacity:
  cpu:     2
  memory:  24575392Ki
Allocatable:
  cpu:     2
  memory:  24575392Ki
System Info:
  shoalVersion:  0.1.0
  peerId:        12D3KooWabc
";
        assert_eq!(out, want, "\n{out}");
        // A node without its engine: the condition it reports, with when it began.
        let mut engine = node.clone();
        engine["status"]["conditions"] = json!([
            {"type": "Ready", "status": "False", "reason": "EngineUnavailable",
             "message": "the container engine is unavailable: no such socket",
             "lastHeartbeatTime": "2024-05-01T09:59:58Z",
             "lastTransitionTime": "2024-05-01T09:59:50Z"},
            {"type": "EngineUnavailable", "status": "True", "reason": "EngineUnavailable",
             "message": "cannot reach the Docker engine at unix:///var/run/docker.sock",
             "lastTransitionTime": "2024-05-01T09:59:50Z"}]);
        let out = describe(Kind::Node, &engine, opts(false));
        assert!(
            out.contains("\nStatus:             Alive,EngineUnavailable\n"),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "  EngineUnavailable   True     {:20}   2024-05-01T09:59:50Z   EngineUnavailable   \
                 cannot reach the Docker engine at unix:///var/run/docker.sock\n",
                ""
            )),
            "{out}"
        );
        let mut unseen = node.clone();
        unseen["status"]["membership"]["lastSeen"] = Value::Null;
        let out = describe(Kind::Node, &unseen, opts(false));
        assert!(out.contains("\nLast Seen:          <unknown>\n"), "{out}");
        assert!(
            !describe(
                Kind::Node,
                &json!({"metadata": {"name": "n1"}}),
                opts(false)
            )
            .contains("Last Seen"),
        );
    }

    #[test]
    fn pod_description_has_container_state() {
        let pod = json!({"metadata": {"name": "web-0", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "nginx"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.2", "hostIP": "192.168.1.5",
              "containerStatuses": [{"name": "web", "ready": true, "restartCount": 1,
                                     "state": {"running": {"startedAt": "2024-05-01T09:59:00Z"}}}]}});
        let out = describe(Kind::Pod, &pod, opts(false));
        assert!(out.contains("Node:               n1/192.168.1.5"), "{out}");
        assert!(out.contains("State:          Running\n"), "{out}");
        assert!(out.contains("Started:  2024-05-01T09:59:00Z"), "{out}");
        assert!(out.contains("Restart Count:  1"), "{out}");
    }

    #[test]
    fn pod_description_has_history() {
        let pod = json!({"metadata": {"name": "web-0", "namespace": "default",
              "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "web", "image": "echo",
              "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "startTime": "2024-05-01T09:58:00Z",
              "hostPorts": [{"container": "web", "containerPort": 8080, "protocol": "TCP",
                             "hostIp": "127.0.0.1", "hostPort": 32768}],
              "conditions": [{"type": "Ready", "status": "False",
                              "lastTransitionTime": "2024-05-01T09:59:30Z",
                              "reason": "ContainersNotReady"}],
              "containerStatuses": [{"name": "web", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off 20s restarting"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                             "finishedAt": "2024-05-01T09:59:29Z"}}}]}});
        let out = describe(Kind::Pod, &pod, opts(false));
        for want in [
            "Start Time:",
            "2024-05-01T09:58:00Z",
            "Status:",
            "CrashLoopBackOff",
            "127.0.0.1:32768/TCP -> web:8080",
            "Controlled By:",
            "ReplicaSet/web-abc",
            "State:          Waiting",
            "Reason:   CrashLoopBackOff",
            "Message:  back-off 20s restarting",
            "Last State:     Terminated",
            "Exit Code:  1",
            "Finished:   2024-05-01T09:59:29Z",
            "LastTransitionTime",
            "2024-05-01T09:59:30Z",
            "ContainersNotReady",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }
}
