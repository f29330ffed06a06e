//! Pods as users see them: each slot of the desired state joined with its owner's template
//! (a ReplicaSet's, a StatefulSet's revision, or a bare Pod's own spec) and, when a node
//! reports it, its observed status.
//!
//! Pure functions: the API uses them to answer `get pods`, the node agent to know what to run.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shoal_protocol::cluster::{POD_TEMPLATE_HASH_LABEL, Slot, slot_key};
use shoal_protocol::kinds::{
    ControllerRevision, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec,
    ReplicaSet, StatefulSet, Volume,
};
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

/// Every owner of slots, as read from the store.
#[derive(Debug, Clone, Default)]
pub struct Owners {
    pub replicasets: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    pub statefulsets: Vec<StatefulSet>,
    pub revisions: Vec<ControllerRevision>,
}

/// Joins slots with their ReplicaSets and bare Pods (see [`join_owners`]).
pub fn join(slots: &[Slot], replicasets: &[ReplicaSet], pods: &[Pod]) -> Vec<DesiredPod> {
    join_owners(
        slots,
        &Owners {
            replicasets: replicasets.to_vec(),
            pods: pods.to_vec(),
            ..Owners::default()
        },
    )
}

/// Joins slots with their owners. A slot whose owner is gone (being cleaned up) is left out,
/// and so is a StatefulSet's slot whose revision is not stored (yet).
pub fn join_owners(slots: &[Slot], owners: &Owners) -> Vec<DesiredPod> {
    fn by_key<T>(items: &[T], meta: impl Fn(&T) -> &ObjectMeta) -> BTreeMap<(&str, &str), &T> {
        items
            .iter()
            .map(|i| {
                let m = meta(i);
                (
                    (m.namespace.as_deref().unwrap_or_default(), m.name.as_str()),
                    i,
                )
            })
            .collect()
    }
    let rs_by_key = by_key(&owners.replicasets, |r| &r.metadata);
    let pod_by_key = by_key(&owners.pods, |p| &p.metadata);
    let sts_by_key = by_key(&owners.statefulsets, |s| &s.metadata);
    let rev_by_key = by_key(&owners.revisions, |r| &r.metadata);
    slots
        .iter()
        .filter_map(|slot| {
            let owner_key = (slot.namespace.as_str(), slot.owner_name.as_str());
            match slot.owner_kind.as_str() {
                "ReplicaSet" => rs_by_key
                    .get(&owner_key)
                    .map(|rs| from_replicaset(slot, rs)),
                "Pod" => pod_by_key.get(&owner_key).map(|p| from_pod(slot, p)),
                "StatefulSet" => {
                    let sts = sts_by_key.get(&owner_key)?;
                    let rev_name = format!("{}-{}", slot.owner_name, slot.revision);
                    let template =
                        match rev_by_key.get(&(slot.namespace.as_str(), rev_name.as_str())) {
                            Some(r) => &r.data.spec.template,
                            None => &sts.spec.template,
                        };
                    Some(from_statefulset(slot, sts, template))
                }
                _ => None,
            }
        })
        .collect()
}

/// The claims of ordinal `ordinal` of `s`: `<template>-<statefulset>-<ordinal>`, one per
/// volumeClaimTemplate.
pub fn claim_names(s: &StatefulSet, ordinal: u32) -> Vec<String> {
    s.spec
        .volume_claim_templates
        .iter()
        .map(|t| format!("{}-{}-{ordinal}", t.metadata.name, s.metadata.name))
        .collect()
}

/// The spec of pod `pod` (ordinal `ordinal`) of `s` from `template`: the template's, with one
/// persistentVolumeClaim volume per volumeClaimTemplate (named as the template, so that
/// volumeMounts find it), the pod's name as hostname and the governing Service as subdomain.
pub fn statefulset_pod_spec_from(
    s: &StatefulSet,
    template: &PodTemplateSpec,
    pod: &str,
    ordinal: u32,
) -> PodSpec {
    let mut spec = template.spec.clone();
    for (t, claim) in s
        .spec
        .volume_claim_templates
        .iter()
        .zip(claim_names(s, ordinal))
    {
        spec.volumes.retain(|v| v.name != t.metadata.name);
        spec.volumes.push(Volume {
            name: t.metadata.name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: false,
            }),
            ..Volume::default()
        });
    }
    if spec.hostname.is_none() {
        spec.hostname = Some(pod.to_string());
    }
    if spec.subdomain.is_none() && !s.spec.service_name.is_empty() {
        spec.subdomain = Some(s.spec.service_name.clone());
    }
    spec
}

/// [`statefulset_pod_spec_from`] the StatefulSet's current template.
pub fn statefulset_pod_spec(s: &StatefulSet, pod: &str, ordinal: u32) -> PodSpec {
    statefulset_pod_spec_from(s, &s.spec.template, pod, ordinal)
}

fn from_statefulset(slot: &Slot, s: &StatefulSet, template: &PodTemplateSpec) -> DesiredPod {
    let mut labels = template.metadata.labels.clone();
    labels.insert(
        "controller-revision-hash".to_string(),
        format!("{}-{}", s.metadata.name, slot.revision),
    );
    labels.insert(
        "statefulset.kubernetes.io/pod-name".to_string(),
        slot.pod.clone(),
    );
    labels.insert(
        "apps.kubernetes.io/pod-index".to_string(),
        slot.index.to_string(),
    );
    owned_pod(
        slot,
        labels,
        template,
        Kind::StatefulSet,
        &s.metadata,
        statefulset_pod_spec_from(s, template, &slot.pod, slot.index),
    )
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

/// A pod a controller owns: named as its slot, with `labels` (the template's and the
/// controller's own), the template's annotations, and a controller reference to its owner.
fn owned_pod(
    slot: &Slot,
    labels: BTreeMap<String, String>,
    template: &PodTemplateSpec,
    owner_kind: Kind,
    owner: &ObjectMeta,
    spec: PodSpec,
) -> DesiredPod {
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
            creation_timestamp: owner.creation_timestamp.clone(),
            owner_references: vec![owner_ref(owner_kind, owner)],
        },
        spec,
    }
}

fn from_replicaset(slot: &Slot, rs: &ReplicaSet) -> DesiredPod {
    let template = &rs.spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_string(), slot.revision.clone());
    owned_pod(
        slot,
        labels,
        template,
        Kind::ReplicaSet,
        &rs.metadata,
        template.spec.clone(),
    )
}

fn from_pod(slot: &Slot, pod: &Pod) -> DesiredPod {
    DesiredPod {
        slot: slot.clone(),
        metadata: pod.metadata.clone(),
        spec: pod.spec.clone(),
    }
}

/// Every owner of slots, read from the store.
pub async fn owners(state: &StateHandle) -> Result<Owners, StateError> {
    Ok(Owners {
        replicasets: typed(state, Kind::ReplicaSet, |r| match r {
            Resource::ReplicaSet(rs) => Some(rs),
            _ => None,
        })
        .await?,
        pods: typed(state, Kind::Pod, |r| match r {
            Resource::Pod(p) => Some(p),
            _ => None,
        })
        .await?,
        statefulsets: typed(state, Kind::StatefulSet, |r| match r {
            Resource::StatefulSet(s) => Some(s),
            _ => None,
        })
        .await?,
        revisions: typed(state, Kind::ControllerRevision, |r| match r {
            Resource::ControllerRevision(c) => Some(c),
            _ => None,
        })
        .await?,
    })
}

/// Reads slots and their owners from the store and joins them.
pub async fn desired_pods(state: &StateHandle) -> Result<Vec<DesiredPod>, StateError> {
    let slots = state.slots().await?;
    Ok(join_owners(&slots, &owners(state).await?))
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
/// A slot held on a lost node (a StatefulSet pod that waits for it) shows why it waits.
pub fn pending_status(slot: &Slot) -> PodStatus {
    if !slot.node.is_empty()
        && let Some(why) = &slot.unschedulable
    {
        return PodStatus {
            phase: "Pending".into(),
            reason: Some("NodeLost".into()),
            message: Some(why.clone()),
            conditions: vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                last_transition_time: None,
                reason: None,
                message: None,
            }],
            ..PodStatus::default()
        };
    }
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
