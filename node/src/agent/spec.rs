//! Pure translation of a desired pod into runtime container specs: names, labels, the template
//! hash, env resolution (values, ConfigMap and Secret references), ports, limits and mounts.
//!
//! Nothing here does I/O: ConfigMaps and Secrets arrive already fetched in [`ConfigSources`],
//! and volumes arrive as a [`VolumeLayout`] (see `volumes.rs`), so every rule is unit-tested.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use shoal_protocol::kinds::{Container, EnvVarSource, KeySelector, PodSpec, Protocol as KProtocol};

use super::volumes::{Backing, VolumeLayout};
use crate::pods::DesiredPod;
use crate::runtime::{ContainerSpec, MountSpec, PortSpec, Protocol};

/// Label keys every container of the agent carries. Other modules (logs, exec) find a pod's
/// containers through them.
pub mod labels {
    pub const CLUSTER: &str = "shoal.cluster";
    pub const NODE: &str = "shoal.node";
    pub const NAMESPACE: &str = "shoal.namespace";
    pub const POD: &str = "shoal.pod";
    /// `namespace/pod`: the slot's key.
    pub const SLOT: &str = "shoal.slot";
    pub const REVISION: &str = "shoal.revision";
    pub const CONTAINER: &str = "shoal.container";
    /// A hash of the pod spec: a changed spec (bare Pod) recreates the containers.
    pub const TEMPLATE_HASH: &str = "shoal.template-hash";
    /// terminationGracePeriodSeconds, so that a container whose pod is gone is still stopped
    /// with the grace its spec asked for.
    pub const GRACE: &str = "shoal.grace-seconds";
    /// On named volumes of PersistentVolumeClaims: `namespace/claim`.
    pub const PVC: &str = "shoal.pvc";
    /// The kind of the slot's owner (`StatefulSet`, `ReplicaSet`, `Pod`), so that a
    /// container whose slot is gone is still known to be a StatefulSet's, which this node
    /// reports while it stops it (see `plan.rs`, "StatefulSets: at most one copy").
    /// Containers made before this label existed have none.
    pub const OWNER_KIND: &str = "shoal.owner-kind";
}

/// ConfigMaps and Secrets the pods of this round refer to, by `(namespace, name)`; an absent
/// entry is an object that does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSources {
    pub config_maps: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    pub secrets: BTreeMap<(String, String), SecretData>,
}

/// A Secret as the agent uses it: its `type` and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretData {
    pub type_: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl SecretData {
    /// An `Opaque` Secret of `data`.
    pub fn opaque(data: BTreeMap<String, Vec<u8>>) -> SecretData {
        SecretData {
            type_: "Opaque".into(),
            data,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    ConfigMap,
    Secret,
}

impl SourceKind {
    /// As Kubernetes spells it in messages (`configmap "x" not found`).
    pub fn lower(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "configmap",
            SourceKind::Secret => "secret",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            SourceKind::ConfigMap => "ConfigMap",
            SourceKind::Secret => "Secret",
        }
    }
}

impl ConfigSources {
    pub fn get(
        &self,
        kind: SourceKind,
        ns: &str,
        name: &str,
    ) -> Option<&BTreeMap<String, Vec<u8>>> {
        let key = (ns.to_string(), name.to_string());
        match kind {
            SourceKind::ConfigMap => self.config_maps.get(&key),
            SourceKind::Secret => self.secrets.get(&key).map(|s| &s.data),
        }
    }

    /// A Secret's type and data.
    pub fn secret_with_type(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<(&str, &BTreeMap<String, Vec<u8>>)> {
        let s = self.secrets.get(&(ns.to_string(), name.to_string()))?;
        Some((s.type_.as_str(), &s.data))
    }
}

/// Every ConfigMap and Secret a pod refers to (env, envFrom, volumes), to fetch before
/// building its specs.
pub fn referenced_sources(pod: &DesiredPod) -> Vec<(SourceKind, String)> {
    let mut out = Vec::new();
    for c in pod.spec.containers.iter() {
        for e in &c.env {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    out.push((SourceKind::ConfigMap, r.name.clone()));
                }
                if let Some(r) = &from.secret_key_ref {
                    out.push((SourceKind::Secret, r.name.clone()));
                }
            }
        }
        for e in &c.env_from {
            if let Some(r) = &e.config_map_ref {
                out.push((SourceKind::ConfigMap, r.name.clone()));
            }
            if let Some(r) = &e.secret_ref {
                out.push((SourceKind::Secret, r.name.clone()));
            }
        }
    }
    for r in &pod.spec.image_pull_secrets {
        out.push((SourceKind::Secret, r.name.clone()));
    }
    for v in &pod.spec.volumes {
        if let Some(s) = &v.config_map {
            out.push((SourceKind::ConfigMap, s.name.clone()));
        }
        if let Some(s) = &v.secret {
            out.push((SourceKind::Secret, s.secret_name.clone()));
        }
    }
    out.sort_by(|a, b| (a.0.lower(), &a.1).cmp(&(b.0.lower(), &b.1)));
    out.dedup();
    out
}

/// What the node contributes to every container spec.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub cluster_id: String,
    pub node_name: String,
    /// Where ports are published, and the pods' `hostIP`.
    pub advertise: IpAddr,
    /// The per-node bridge network (see [`network_name`]).
    pub network: String,
    /// `<data_dir>/pods`.
    pub pods_dir: PathBuf,
    /// The cluster domain when this node's DNS server is on: its containers then resolve
    /// names through it (see [`resolv_settings`]). `None`: the engine's default DNS.
    pub cluster_domain: Option<String>,
    /// The node's address on its pod network (the bridge's gateway), where its DNS server
    /// answers the pods; learnt once the agent has made the network.
    pub dns_server: Option<IpAddr>,
}

impl NodeContext {
    /// Whether containers must wait for [`NodeContext::dns_server`]: the node's DNS is on and
    /// the pod network's gateway is not known yet. A container made without it would keep the
    /// engine's default resolver for its whole life.
    pub fn dns_pending(&self) -> bool {
        self.cluster_domain.is_some() && self.dns_server.is_none()
    }
}

/// A container's `/etc/resolv.conf`, as Kubernetes' `ClusterFirst` DNS policy writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvSettings {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// The resolver settings of a pod in `namespace`: the node's DNS server at `server` (its
/// address on the pod network), the search path `<ns>.svc.<domain> svc.<domain> <domain>`
/// (so that `web` finds the Service `web` of the pod's namespace, and `web.prod` that of
/// `prod`), and `ndots:5`, as Kubernetes sets them: names with fewer than five dots try the
/// search path first.
pub fn resolv_settings(domain: &str, namespace: &str, server: IpAddr) -> ResolvSettings {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    ResolvSettings {
        servers: vec![server.to_string()],
        search: vec![
            format!("{}.svc.{domain}", namespace.to_ascii_lowercase()),
            format!("svc.{domain}"),
            domain,
        ],
        options: vec!["ndots:5".to_string()],
    }
}

/// The per-node bridge network's name: `shoal-<node>-<cluster id prefix>`. The cluster part
/// matters where several clusters share one engine (testnets, whose nodes are all `n1`...):
/// Docker allows two networks of one name, and then refuses to use either ("ambiguous").
pub fn network_name(cluster_id: &str, node: &str) -> String {
    let cluster: String = cluster_id.chars().take(8).collect();
    format!("shoal-{}-{}", sanitize(node), sanitize(&cluster))
}

/// `<pods_dir>/<ns>_<pod>`: a pod's own directory (volumes, agent state). `_` cannot occur in
/// namespace or pod names, so the mapping is one to one.
pub fn pod_dir(pods_dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    pods_dir.join(format!("{}_{}", sanitize(namespace), sanitize(pod)))
}

/// The engine-wide container name. It holds the cluster id's prefix and the node name because
/// several clusters and nodes may share one engine (testnets); `_` separates the parts because
/// Kubernetes names cannot contain it.
pub fn container_name(ctx: &NodeContext, namespace: &str, pod: &str, container: &str) -> String {
    let cluster: String = ctx.cluster_id.chars().take(8).collect();
    format!(
        "shoal_{}_{}_{}_{}_{}",
        sanitize(&cluster),
        sanitize(&ctx.node_name),
        sanitize(namespace),
        sanitize(pod),
        sanitize(container)
    )
}

/// Keeps the characters Docker allows in names (`[a-zA-Z0-9_.-]`), others become `-`.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A short, stable hash of the pod spec. serde_json writes struct fields in declaration order
/// and maps sorted (BTreeMap), so equal specs hash equally.
pub fn template_hash(spec: &PodSpec) -> String {
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..6])
}

/// Why a container cannot be created from its spec; shown as the container's waiting message
/// with reason `CreateContainerConfigError`.
pub type ConfigError = String;

/// The grace a pod's containers get on stop.
pub fn grace(spec: &PodSpec) -> Duration {
    Duration::from_secs(u64::try_from(spec.termination_grace_period_seconds).unwrap_or(0))
}

/// Every label a container of `pod` carries.
pub fn container_labels(
    ctx: &NodeContext,
    pod: &DesiredPod,
    container: &str,
    hash: &str,
) -> BTreeMap<String, String> {
    let slot = &pod.slot;
    [
        (labels::CLUSTER, ctx.cluster_id.clone()),
        (labels::NODE, ctx.node_name.clone()),
        (labels::NAMESPACE, slot.namespace.clone()),
        (labels::POD, slot.pod.clone()),
        (labels::SLOT, slot.key()),
        (labels::REVISION, slot.revision.clone()),
        (labels::CONTAINER, container.to_string()),
        (labels::TEMPLATE_HASH, hash.to_string()),
        (labels::OWNER_KIND, slot.owner_kind.clone()),
        (
            labels::GRACE,
            pod.spec.termination_grace_period_seconds.max(0).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The runtime spec of one container of `pod`, or why it cannot be made.
pub fn container_spec(
    ctx: &NodeContext,
    pod: &DesiredPod,
    container: &Container,
    hash: &str,
    sources: &ConfigSources,
    layout: &VolumeLayout,
) -> Result<ContainerSpec, ConfigError> {
    let ns = pod.slot.namespace.as_str();
    let env = resolve_env(ctx, pod, container, sources)?;
    let mounts = container_mounts(container, layout)?;
    let (memory_limit, nano_cpus) = limits(container);
    // The resolver is not part of the template hash: a node that turns its DNS on (or a new
    // version of shoald) does not recreate running containers; new ones get it.
    let resolv = match (&ctx.cluster_domain, ctx.dns_server) {
        (Some(domain), Some(server)) => resolv_settings(domain, ns, server),
        _ => ResolvSettings::default(),
    };
    Ok(ContainerSpec {
        name: container_name(ctx, ns, &pod.slot.pod, &container.name),
        image: container.image.clone(),
        command: (!container.command.is_empty()).then(|| container.command.clone()),
        args: (!container.args.is_empty()).then(|| container.args.clone()),
        env,
        labels: container_labels(ctx, pod, &container.name, hash),
        working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
        hostname: Some(hostname(pod)),
        ports: ports(ctx, container),
        mounts,
        memory_limit,
        nano_cpus,
        network: Some(ctx.network.clone()),
        dns_servers: resolv.servers,
        dns_search: resolv.search,
        dns_options: resolv.options,
        stop_signal: None,
        stop_grace: Some(grace(&pod.spec)),
    })
}

/// Docker limits a hostname to 63 characters, as DNS labels are.
fn hostname(pod: &DesiredPod) -> String {
    let name = pod.spec.hostname.as_deref().unwrap_or(&pod.slot.pod);
    name.chars().take(63).collect()
}

/// `limits.memory` in bytes and `limits.cpu` in nano-CPUs; zero or negative means none.
pub fn limits(container: &Container) -> (Option<u64>, Option<u64>) {
    let memory = container
        .resources
        .limits
        .get("memory")
        .and_then(|q| u64::try_from(q.bytes()).ok())
        .filter(|b| *b > 0);
    let cpus = container
        .resources
        .limits
        .get("cpu")
        .and_then(|q| u64::try_from(q.millis()).ok())
        .filter(|m| *m > 0)
        .map(|m| m.saturating_mul(1_000_000));
    (memory, cpus)
}

/// Every container port is published on the advertise address: at `hostPort` when declared,
/// else on a free port the engine picks (read back after start). SCTP cannot be published.
pub fn ports(ctx: &NodeContext, container: &Container) -> Vec<PortSpec> {
    container
        .ports
        .iter()
        .filter_map(|p| {
            let container_port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
            let protocol = match p.protocol {
                KProtocol::Tcp => Protocol::Tcp,
                KProtocol::Udp => Protocol::Udp,
                KProtocol::Sctp => return None,
            };
            let host_port = p.host_port.and_then(|h| u16::try_from(h).ok()).unwrap_or(0);
            let host_ip = p
                .host_ip
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| ctx.advertise.to_string());
            Some(PortSpec {
                container_port,
                protocol,
                host_ip: Some(host_ip),
                host_port,
            })
        })
        .collect()
}

/// The environment, in Kubernetes' precedence: the node's variables, then `envFrom` in order,
/// then `env` in order, a later one replacing an earlier one of the same name.
pub fn resolve_env(
    ctx: &NodeContext,
    pod: &DesiredPod,
    container: &Container,
    sources: &ConfigSources,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.slot.namespace.as_str();
    let mut env: Vec<(String, String)> = vec![
        ("HOSTNAME".into(), hostname(pod)),
        ("POD_NAME".into(), pod.slot.pod.clone()),
        ("POD_NAMESPACE".into(), ns.to_string()),
        ("SHOAL_NODE_NAME".into(), ctx.node_name.clone()),
    ];
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        if let Some(slot) = env.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            env.push((name, value));
        }
    };
    for from in &container.env_from {
        let prefix = from.prefix.clone().unwrap_or_default();
        let refs = [
            (SourceKind::ConfigMap, from.config_map_ref.as_ref()),
            (SourceKind::Secret, from.secret_ref.as_ref()),
        ];
        for (kind, r) in refs {
            let Some(r) = r else { continue };
            match sources.get(kind, ns, &r.name) {
                Some(data) => {
                    for (k, v) in data {
                        // Kubernetes skips keys that are no valid variable names.
                        if k.is_empty() || k.contains('=') || k.contains('\0') {
                            continue;
                        }
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                None if r.optional => {}
                None => return Err(format!("{} \"{}\" not found", kind.lower(), r.name)),
            }
        }
    }
    for e in &container.env {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => match value_from(ctx, pod, from, sources)? {
                Some(v) => v,
                None => continue,
            },
            (Some(v), None) => v.clone(),
            (None, None) => String::new(),
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// One `valueFrom`: `Ok(None)` when an optional reference is missing (the variable is left
/// out, as in Kubernetes).
fn value_from(
    ctx: &NodeContext,
    pod: &DesiredPod,
    from: &EnvVarSource,
    sources: &ConfigSources,
) -> Result<Option<String>, ConfigError> {
    let ns = pod.slot.namespace.as_str();
    let key_ref = |kind: SourceKind, sel: &KeySelector| -> Result<Option<String>, ConfigError> {
        match sources.get(kind, ns, &sel.name) {
            None if sel.optional => Ok(None),
            None => Err(format!("{} \"{}\" not found", kind.lower(), sel.name)),
            Some(data) => match data.get(&sel.key) {
                Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
                None if sel.optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in {} {ns}/{}",
                    sel.key,
                    kind.title(),
                    sel.name
                )),
            },
        }
    };
    if let Some(sel) = &from.config_map_key_ref {
        return key_ref(SourceKind::ConfigMap, sel);
    }
    if let Some(sel) = &from.secret_key_ref {
        return key_ref(SourceKind::Secret, sel);
    }
    if let Some(f) = &from.field_ref {
        return match f.field_path.as_str() {
            "metadata.name" => Ok(Some(pod.slot.pod.clone())),
            "metadata.namespace" => Ok(Some(ns.to_string())),
            "spec.nodeName" => Ok(Some(ctx.node_name.clone())),
            "status.hostIP" => Ok(Some(ctx.advertise.to_string())),
            p if p.starts_with("metadata.labels['") && p.ends_with("']") => {
                let key = &p["metadata.labels['".len()..p.len() - 2];
                Ok(Some(
                    pod.metadata.labels.get(key).cloned().unwrap_or_default(),
                ))
            }
            other => Err(format!("fieldRef {other:?} is not supported")),
        };
    }
    Ok(Some(String::new()))
}

/// The mounts of one container, from its `volumeMounts` and the pod's volume layout.
pub fn container_mounts(
    container: &Container,
    layout: &VolumeLayout,
) -> Result<Vec<MountSpec>, ConfigError> {
    let mut out = Vec::new();
    for (i, m) in container.volume_mounts.iter().enumerate() {
        let Some(v) = layout.volumes.get(&m.name) else {
            return Err(format!(
                "volumeMounts[{i}]: no volume named \"{}\" in the pod",
                m.name
            ));
        };
        let sub = m.sub_path.as_deref().filter(|s| !s.is_empty());
        if let Some(s) = sub
            && !safe_relative(s)
        {
            return Err(format!(
                "volumeMounts[{i}].subPath: {s:?} must be a relative path without \"..\""
            ));
        }
        let container_path = m.mount_path.clone();
        let mount = match &v.backing {
            Backing::Dir(dir) | Backing::HostPath(dir) => MountSpec::Bind {
                host_path: match sub {
                    Some(s) => dir.join(s),
                    None => dir.clone(),
                }
                .to_string_lossy()
                .into_owned(),
                container_path,
                read_only: v.read_only || m.read_only,
            },
            Backing::Named(spec) => {
                if sub.is_some() {
                    return Err(format!(
                        "volumeMounts[{i}].subPath: not supported for volume \"{}\"",
                        m.name
                    ));
                }
                MountSpec::Volume {
                    name: spec.name.clone(),
                    container_path,
                    read_only: v.read_only || m.read_only,
                }
            }
            Backing::Tmpfs { size_bytes } => {
                if sub.is_some() {
                    return Err(format!(
                        "volumeMounts[{i}].subPath: not supported for memory volume \"{}\"",
                        m.name
                    ));
                }
                MountSpec::Tmpfs {
                    container_path,
                    size_bytes: *size_bytes,
                }
            }
        };
        out.push(mount);
    }
    Ok(out)
}

/// A relative path that stays below its base: no root, no `..`.
pub fn safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}
