//! Controllers: Deployments into ReplicaSets, ReplicaSets and bare Pods into slots. INTERFACE
//! STUB: the signatures below are final; the planning and the task arrive next.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shoal_protocol::cluster::Slot;
use shoal_protocol::kinds::{Deployment, PodTemplateSpec, ReplicaSet};
use shoal_protocol::status::PodStatus;

/// Observed pod statuses by `namespace/pod`, from every node's record.
pub type PodStatuses = BTreeMap<String, PodStatus>;

/// The `status` of a Deployment, computed from its ReplicaSets, the slots and what nodes
/// observe (never stored: status is observed state). `now` is seconds since the Unix epoch.
pub fn deployment_status(
    deployment: &Deployment,
    replicasets: &[ReplicaSet],
    slots: &[Slot],
    observed: &PodStatuses,
    now: i64,
) -> Value {
    let _ = (replicasets, slots, observed, now);
    json!({ "observedGeneration": deployment.metadata.generation })
}

/// The `status` of a ReplicaSet.
pub fn replicaset_status(
    replicaset: &ReplicaSet,
    slots: &[Slot],
    observed: &PodStatuses,
    now: i64,
) -> Value {
    let _ = (replicaset, slots, observed, now);
    json!({})
}

/// The template `rollout undo` goes back to: revision `to_revision`, or the one before the
/// current one when None. The error says what is wrong (no such revision, no history).
pub fn rollback_template(
    deployment: &Deployment,
    replicasets: &[ReplicaSet],
    to_revision: Option<i64>,
) -> Result<PodTemplateSpec, String> {
    let _ = (deployment, replicasets, to_revision);
    Err("rollback is not implemented yet".into())
}
