//! Pods as users see them: each slot of the desired state joined with its owner's template
//! (a ReplicaSet's, or a bare Pod's own spec) and, when a node reports it, its observed status.
//!
//! Pure functions: the API uses them to answer `get pods`, the node agent to know what to run.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shoal_protocol::cluster::{POD_TEMPLATE_HASH_LABEL, Slot, slot_key};
use shoal_protocol::kinds::{Pod, PodSpec, ReplicaSet};
use shoal_protocol::meta::{ObjectMeta, OwnerReference};
use shoal_protocol::status::{PodCondition, PodStatus};
use shoal_protocol::{Kind, Resource};

use crate::state::{StateError, StateHandle};

/// A pod that should exist: its slot, metadata and spec.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPod {
    pub slot: Slot,
    /// Name, namespace, the template's labels (plus `pod-template-hash`) and annotations,
    /// and the owner reference.
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

impl DesiredPod {
    /// `namespace/pod`: the key of its slot and of its observed status.
    pub fn key(&self) -> String {
        self.slot.key()
    }
}

/// Joins slots with their owners. A slot whose owner is gone (being cleaned up) is left out.
pub fn join(slots: &[Slot], replicasets: &[ReplicaSet], pods: &[Pod]) -> Vec<DesiredPod> {
    let rs_by_key: BTreeMap<(&str, &str), &ReplicaSet> = replicasets
        .iter()
        .map(|rs| {
            let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
            ((ns, rs.metadata.name.as_str()), rs)
        })
        .collect();
    let pod_by_key: BTreeMap<(&str, &str), &Pod> = pods
        .iter()
        .map(|p| {
            let ns = p.metadata.namespace.as_deref().unwrap_or_default();
            ((ns, p.metadata.name.as_str()), p)
        })
        .collect();
    slots
        .iter()
        .filter_map(|slot| {
            let owner_key = (slot.namespace.as_str(), slot.owner_name.as_str());
            match slot.owner_kind.as_str() {
                "ReplicaSet" => rs_by_key
                    .get(&owner_key)
                    .map(|rs| from_replicaset(slot, rs)),
                "Pod" => pod_by_key.get(&owner_key).map(|p| from_pod(slot, p)),
                _ => None,
            }
        })
        .collect()
}

fn owner_ref(kind: Kind, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: kind.api_version().to_string(),
        kind: kind.name().to_string(),
        name: meta.name.clone(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: true,
    }
}

fn from_replicaset(slot: &Slot, rs: &ReplicaSet) -> DesiredPod {
    let template = &rs.spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_string(), slot.revision.clone());
    DesiredPod {
        slot: slot.clone(),
        metadata: ObjectMeta {
            name: slot.pod.clone(),
            namespace: Some(slot.namespace.clone()),
            labels,
            annotations: template.metadata.annotations.clone(),
            uid: None,
            generation: None,
            resource_version: None,
            creation_timestamp: rs.metadata.creation_timestamp.clone(),
            owner_references: vec![owner_ref(Kind::ReplicaSet, &rs.metadata)],
        },
        spec: template.spec.clone(),
    }
}

fn from_pod(slot: &Slot, pod: &Pod) -> DesiredPod {
    DesiredPod {
        slot: slot.clone(),
        metadata: pod.metadata.clone(),
        spec: pod.spec.clone(),
    }
}

/// Reads slots, ReplicaSets and Pods from the store and joins them.
pub async fn desired_pods(state: &StateHandle) -> Result<Vec<DesiredPod>, StateError> {
    let slots = state.slots().await?;
    let replicasets = typed::<ReplicaSet>(state, Kind::ReplicaSet, |r| match r {
        Resource::ReplicaSet(rs) => Some(rs),
        _ => None,
    })
    .await?;
    let pods = typed::<Pod>(state, Kind::Pod, |r| match r {
        Resource::Pod(p) => Some(p),
        _ => None,
    })
    .await?;
    Ok(join(&slots, &replicasets, &pods))
}

/// Every stored object of `kind`, typed. An object this version cannot read (written by a
/// newer node) is skipped with a warning.
pub async fn typed<T>(
    state: &StateHandle,
    kind: Kind,
    pick: impl Fn(Resource) -> Option<T>,
) -> Result<Vec<T>, StateError> {
    let objects = state.list(kind, None).await?;
    Ok(objects
        .into_iter()
        .filter_map(|o| match Resource::from_value(kind, o.value) {
            Ok(r) => pick(r),
            Err(e) => {
                tracing::warn!(kind = %kind, error = %e, "stored object unreadable; skipped");
                None
            }
        })
        .collect())
}

/// The Kubernetes Pod object of a desired pod, with its observed status (`observed`: the node
/// that reports it and the status), or a Pending status when no node reports it yet.
pub fn pod_object(pod: &DesiredPod, observed: Option<(&str, &PodStatus)>) -> Value {
    let mut spec = serde_json::to_value(&pod.spec).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut spec
        && !pod.slot.node.is_empty()
    {
        map.insert("nodeName".into(), Value::from(pod.slot.node.clone()));
    }
    let status = match observed {
        Some((_, s)) => serde_json::to_value(s).unwrap_or(Value::Null),
        None => serde_json::to_value(pending_status(&pod.slot)).unwrap_or(Value::Null),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod.metadata,
        "spec": spec,
        "status": status,
    })
}

/// The status of a pod no node reports yet: Pending, and `PodScheduled` False with the
/// scheduler's message while the slot has no node (as Kubernetes shows an unschedulable pod).
pub fn pending_status(slot: &Slot) -> PodStatus {
    let scheduled = if slot.node.is_empty() {
        PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            last_transition_time: None,
            reason: Some("Unschedulable".into()),
            message: Some(
                slot.unschedulable
                    .clone()
                    .unwrap_or_else(|| "no node is assigned yet".into()),
            ),
        }
    } else {
        PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: None,
            reason: None,
            message: None,
        }
    };
    PodStatus {
        phase: "Pending".into(),
        conditions: vec![scheduled],
        ..PodStatus::default()
    }
}

/// The key of the observed status of pod `name` in `namespace`.
pub fn pod_key(namespace: &str, name: &str) -> String {
    slot_key(namespace, name)
}
