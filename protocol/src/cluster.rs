//! The cluster-state schema beyond user objects: pod slots.
//!
//! A slot is one pod that should exist: a replica of a ReplicaSet (`index` 0..replicas), or a
//! bare Pod. Slots live in the desired-state document (map `slots`, key `namespace/pod`) with
//! the node they are assigned to. Because they are keys of the CRDT, two writers that act at
//! once (during a partition) write the same keys and every node keeps the same winner; the
//! agent that lost a slot stops its container.

use serde::{Deserialize, Serialize};

/// The label every pod of a ReplicaSet carries, as in Kubernetes: the template's hash.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The annotation holding a ReplicaSet's revision number, as in Kubernetes.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The template annotation `rollout restart` sets, as kubectl does.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// A leader role's lease, in the desired state: which node holds the role since which epoch.
/// A node takes the role by writing the next epoch; a holder acts only while the newest epoch
/// names it, so an old holder is fenced off as soon as it sees a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub role: String,
    pub epoch: u64,
    /// The node name of the holder.
    pub holder: String,
    /// When it took the role (seconds since the Unix epoch, the holder's clock).
    pub since: i64,
}

/// One pod that should exist, and where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    pub namespace: String,
    /// The pod's name: `<replicaset>-<index>` for a ReplicaSet's replica, the Pod's own name
    /// for a bare Pod.
    pub pod: String,
    /// What owns the slot: `ReplicaSet` or `Pod`.
    pub owner_kind: String,
    pub owner_name: String,
    /// The replica index within the owner (0 for a bare Pod).
    pub index: u32,
    /// The template revision (pod-template-hash) the pod runs; empty for a bare Pod.
    pub revision: String,
    /// The node the pod is assigned to; empty while no node is assigned (Pending).
    pub node: String,
    /// Why no node can take the pod, in the scheduler's words (`0/3 nodes are available: 3
    /// Insufficient memory.`), while it has none; written only when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<String>,
}

impl Slot {
    /// The slot's key in the document: `namespace/pod`.
    pub fn key(&self) -> String {
        slot_key(&self.namespace, &self.pod)
    }
}

/// The key of a slot in the document.
pub fn slot_key(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}
