//! What the scheduler decides from: the nodes, what each already holds, and the pod to place,
//! with the conversions from the protocol's types.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shoal_protocol::cluster::Slot;
use shoal_protocol::kinds::{Container, NodeSelector, PodSpec, Protocol, TaintEffect, Toleration};
use shoal_protocol::quantity::Quantity;

use crate::observed::NodeRecord;

/// The key of the taint a cordoned node carries, as in Kubernetes: a pod placed on a cordoned
/// node must tolerate `node.kubernetes.io/unschedulable:NoSchedule`.
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// The CPU request (millicores) that scoring counts for a container that requests none, as
/// Kubernetes does, so that pods without requests still spread by load.
pub const DEFAULT_SCORE_CPU_MILLIS: u64 = 100;
/// The memory request (bytes) that scoring counts for a container that requests none (200Mi,
/// as in Kubernetes).
pub const DEFAULT_SCORE_MEMORY_BYTES: u64 = 200 * 1024 * 1024;

/// A node as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// Allocatable CPU, in millicores.
    pub cpu_millis: u64,
    /// Allocatable memory, in bytes.
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Cordoned: only pods that tolerate [`UNSCHEDULABLE_TAINT_KEY`]`:NoSchedule` may go there.
    pub unschedulable: bool,
}

impl NodeInfo {
    /// A node with this much allocatable CPU (millicores) and memory (bytes), no labels, no
    /// taints.
    pub fn new(name: impl Into<String>, cpu_millis: u64, memory_bytes: u64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            cpu_millis,
            memory_bytes,
            ..NodeInfo::default()
        }
    }

    /// A node from its membership record: all of its CPUs and memory are allocatable, and it
    /// carries the `kubernetes.io/hostname` label as registered nodes do.
    pub fn from_record(record: &NodeRecord) -> NodeInfo {
        NodeInfo::new(
            record.name.clone(),
            u64::from(record.cpus).saturating_mul(1000),
            record.memory_bytes,
        )
        .with_label("kubernetes.io/hostname", &record.name)
    }

    /// Adds the labels, taints and cordon of a Node object (`metadata.labels`,
    /// `spec.taints[].{key,value,effect}`, `spec.unschedulable`). Malformed entries are
    /// skipped: the object comes from the document, which any version may have written.
    pub fn with_node_object(mut self, node: &Value) -> NodeInfo {
        if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
            for (k, v) in labels {
                if let Some(v) = v.as_str() {
                    self.labels.insert(k.clone(), v.to_string());
                }
            }
        }
        if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
            self.unschedulable = true;
        }
        for t in node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
            let value = t.get("value").and_then(Value::as_str).unwrap_or_default();
            let effect = match t.get("effect").and_then(Value::as_str) {
                Some("NoSchedule") => TaintEffect::NoSchedule,
                Some("PreferNoSchedule") => TaintEffect::PreferNoSchedule,
                Some("NoExecute") => TaintEffect::NoExecute,
                _ => continue,
            };
            if key.is_empty() {
                continue;
            }
            self.taints.push(Taint::new(key, value, effect));
        }
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: &str, value: &str) -> NodeInfo {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a taint.
    pub fn with_taint(mut self, taint: Taint) -> NodeInfo {
        self.taints.push(taint);
        self
    }

    /// Cordons the node.
    pub fn cordoned(mut self) -> NodeInfo {
        self.unschedulable = true;
        self
    }
}

/// A taint of a node: `key=value:effect`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

impl Taint {
    pub fn new(key: impl Into<String>, value: impl Into<String>, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect,
        }
    }

    /// Whether one of `tolerations` tolerates this taint.
    pub fn tolerated_by(&self, tolerations: &[Toleration]) -> bool {
        tolerations
            .iter()
            .any(|t| t.tolerates(&self.key, &self.value, self.effect))
    }
}

/// A port published on a node's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: Protocol,
    pub port: u16,
    /// The address it binds; empty, `0.0.0.0` or `::` bind every address.
    pub host_ip: String,
}

impl HostPort {
    pub fn new(protocol: Protocol, port: u16, host_ip: impl Into<String>) -> HostPort {
        HostPort {
            protocol,
            port,
            host_ip: host_ip.into(),
        }
    }

    fn every_address(&self) -> bool {
        matches!(self.host_ip.as_str(), "" | "0.0.0.0" | "::")
    }

    /// Whether two pods publishing these ports cannot share a node: same protocol and port,
    /// and addresses that overlap (equal, or either binds every address).
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.every_address() || other.every_address() || self.host_ip == other.host_ip)
    }
}

/// What owns a pod (`namespace`, `kind`, `name`): the replicas of one owner are spread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl OwnerKey {
    pub fn new(
        namespace: impl Into<String>,
        kind: impl Into<String>,
        name: impl Into<String>,
    ) -> OwnerKey {
        OwnerKey {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// The owner of a slot (its ReplicaSet, or the bare Pod itself).
    pub fn of_slot(slot: &Slot) -> OwnerKey {
        OwnerKey::new(&slot.namespace, &slot.owner_kind, &slot.owner_name)
    }
}

/// One pod to place: what it needs from a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRequest {
    pub owner: OwnerKey,
    /// CPU requested, in millicores: what the node must have free.
    pub cpu_millis: u64,
    /// Memory requested, in bytes.
    pub memory_bytes: u64,
    /// The CPU request scoring counts: as `cpu_millis`, with [`DEFAULT_SCORE_CPU_MILLIS`] for
    /// each container that requests none.
    pub score_cpu_millis: u64,
    /// The memory request scoring counts, with [`DEFAULT_SCORE_MEMORY_BYTES`] for each
    /// container that requests none.
    pub score_memory_bytes: u64,
    /// Labels the node must carry, each with this value.
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: at least one term must hold.
    pub affinity: Option<NodeSelector>,
    pub tolerations: Vec<Toleration>,
    pub host_ports: Vec<HostPort>,
    /// The node-local volumes the pod mounts (`namespace/claim`): a volume that exists on a
    /// node pins the pod there, and a placed pod's volumes exist on its node from then on.
    pub volumes: Vec<String>,
    /// The node the pod's data lives on, when the caller knows it: only that node may take it.
    pub volume_node: Option<String>,
}

impl PodRequest {
    /// A pod of `owner` that asks for nothing (scoring counts one container's defaults).
    pub fn new(owner: OwnerKey) -> PodRequest {
        PodRequest {
            owner,
            score_cpu_millis: DEFAULT_SCORE_CPU_MILLIS,
            score_memory_bytes: DEFAULT_SCORE_MEMORY_BYTES,
            ..PodRequest::default()
        }
    }

    /// The request of a pod spec, as Kubernetes computes it: per resource, the larger of the
    /// sum over the containers and the largest init container; a container with a limit but
    /// no request requests its limit (whether or not the spec's defaults were filled). Host
    /// ports come from every container's ports with a `hostPort`, volumes from the
    /// persistentVolumeClaims (`<owner namespace>/<claimName>`).
    pub fn from_spec(owner: OwnerKey, spec: &PodSpec) -> PodRequest {
        let sum = |cs: &[Container], f: fn(&Container) -> Request| {
            cs.iter().map(f).fold(Request::default(), |a, b| a.plus(b))
        };
        let max = |cs: &[Container], f: fn(&Container) -> Request| {
            cs.iter().map(f).fold(Request::default(), |a, b| a.max(b))
        };
        let exact = sum(&spec.containers, container_request)
            .max(max(&spec.init_containers, container_request));
        let score = sum(&spec.containers, container_score_request)
            .max(max(&spec.init_containers, container_score_request));
        let host_ports = spec
            .containers
            .iter()
            .chain(&spec.init_containers)
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                let port = u16::try_from(p.host_port?).ok().filter(|p| *p != 0)?;
                Some(HostPort::new(
                    p.protocol,
                    port,
                    p.host_ip.clone().unwrap_or_default(),
                ))
            })
            .collect();
        let volumes = spec
            .volumes
            .iter()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| format!("{}/{}", owner.namespace, c.claim_name))
            .collect();
        PodRequest {
            cpu_millis: exact.cpu,
            memory_bytes: exact.memory,
            score_cpu_millis: score.cpu,
            score_memory_bytes: score.memory,
            node_selector: spec.node_selector.clone(),
            affinity: spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .clone()
                }),
            tolerations: spec.tolerations.clone(),
            host_ports,
            volumes,
            volume_node: None,
            owner,
        }
    }

    /// Adds a node-local volume (`namespace/claim`), such as a StatefulSet's claim.
    pub fn with_volume(mut self, key: impl Into<String>) -> PodRequest {
        self.volumes.push(key.into());
        self
    }

    /// Pins the pod to the node its data lives on.
    pub fn with_volume_node(mut self, node: impl Into<String>) -> PodRequest {
        self.volume_node = Some(node.into());
        self
    }

    /// Sets the requests (scoring counts the same).
    pub fn with_requests(mut self, cpu_millis: u64, memory_bytes: u64) -> PodRequest {
        self.cpu_millis = cpu_millis;
        self.memory_bytes = memory_bytes;
        self.score_cpu_millis = cpu_millis;
        self.score_memory_bytes = memory_bytes;
        self
    }

    /// Whether the pod carries constraints on labels or taints (a pod without any is judged
    /// the same on every node's labels and taints, whatever its owner).
    pub(super) fn has_node_constraints(&self) -> bool {
        !self.node_selector.is_empty() || self.affinity.is_some() || !self.tolerations.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Request {
    cpu: u64,
    memory: u64,
}

impl Request {
    fn plus(self, o: Request) -> Request {
        Request {
            cpu: self.cpu.saturating_add(o.cpu),
            memory: self.memory.saturating_add(o.memory),
        }
    }
    fn max(self, o: Request) -> Request {
        Request {
            cpu: self.cpu.max(o.cpu),
            memory: self.memory.max(o.memory),
        }
    }
}

/// A container's request of `resource`: its request, else its limit; `None` when neither.
fn requested<'a>(c: &'a Container, resource: &str) -> Option<&'a Quantity> {
    let r = &c.resources;
    r.requests.get(resource).or_else(|| r.limits.get(resource))
}

fn container_request(c: &Container) -> Request {
    Request {
        cpu: requested(c, "cpu").map_or(0, |q| q.millis().max(0).unsigned_abs()),
        memory: requested(c, "memory").map_or(0, |q| q.bytes().max(0).unsigned_abs()),
    }
}

fn container_score_request(c: &Container) -> Request {
    Request {
        cpu: requested(c, "cpu").map_or(DEFAULT_SCORE_CPU_MILLIS, |q| {
            q.millis().max(0).unsigned_abs()
        }),
        memory: requested(c, "memory").map_or(DEFAULT_SCORE_MEMORY_BYTES, |q| {
            q.bytes().max(0).unsigned_abs()
        }),
    }
}

/// What a node already holds: the pods assigned to it, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    /// Sum of the CPU requests, in millicores.
    pub cpu_millis: u64,
    /// Sum of the memory requests, in bytes.
    pub memory_bytes: u64,
    /// Sum of the requests scoring counts ([`PodRequest::score_cpu_millis`]).
    pub score_cpu_millis: u64,
    pub score_memory_bytes: u64,
    /// Host ports in use.
    pub host_ports: Vec<HostPort>,
    /// Node-local volumes present (`namespace/claim`).
    pub volumes: BTreeSet<String>,
    /// Pods per owner.
    pub owners: BTreeMap<OwnerKey, u32>,
}

impl Assigned {
    /// Counts one more pod on the node.
    pub fn add(&mut self, pod: &PodRequest) {
        self.cpu_millis = self.cpu_millis.saturating_add(pod.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(pod.memory_bytes);
        self.score_cpu_millis = self.score_cpu_millis.saturating_add(pod.score_cpu_millis);
        self.score_memory_bytes = self
            .score_memory_bytes
            .saturating_add(pod.score_memory_bytes);
        self.host_ports.extend(pod.host_ports.iter().cloned());
        self.volumes.extend(pod.volumes.iter().cloned());
        *self.owners.entry(pod.owner.clone()).or_default() += 1;
    }
}
