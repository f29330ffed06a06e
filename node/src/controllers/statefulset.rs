//! The StatefulSet controller's decisions: one slot per ordinal, the revisions their pods run,
//! and the order in which they change.
//!
//! A StatefulSet `db` with `replicas: N` owns the slots `db-0 .. db-(N-1)` (owner_kind
//! `StatefulSet`, index = ordinal, revision = the hash of the template the pod runs). Each
//! template is kept in a ControllerRevision `db-<hash>`, so that a pod is always (re)made from
//! its own revision's template.
//!
//! - `OrderedReady` (the default): ordinal k is created only when every lower ordinal is Ready;
//!   scaling down removes the highest ordinal first, one at a time, each only once the one
//!   before is gone and the rest are Ready. `Parallel`: all at once.
//! - `RollingUpdate`: one pod at a time, highest ordinal first, each once all the others are
//!   Ready, down to `partition`; `OnDelete`: a pod takes the new template when it is deleted.
//! - **At most one copy of an ordinal runs.** A slot whose node cannot be heard keeps it
//!   unless the node is past the grace period and this node sees a majority of the known nodes
//!   alive; with volumeClaimTemplates it keeps it anyway (its data lives there) and says so. A
//!   slot that lost its node (moved, drained) is placed again only once no alive node reports
//!   its pod: the old copy has stopped. See `docs/architecture.md`.
//!
//! Pure: the inputs are a snapshot; the caller places the slots (with the ReplicaSets', so
//! that all share one view of the nodes) and writes the result.

use std::collections::{BTreeMap, BTreeSet};

use shoal_protocol::Kind;
use shoal_protocol::cluster::{Slot, slot_key};
use shoal_protocol::kinds::{
    ControllerRevision, PodManagementPolicy, RevisionData, RevisionSpec, StatefulSet,
    StatefulSetUpdateStrategyType,
};
use shoal_protocol::meta::{ObjectMeta, OwnerReference};
use shoal_protocol::status::PodStatus;

use super::deployment::template_hash;
use super::placement::Nodes;
use super::{PodStatuses, is_available};
use crate::nodes::Quorum;
use crate::pods::{claim_names, statefulset_pod_spec_from};
use crate::scheduler::{OwnerKey, PodRequest};

/// The owner kind of a StatefulSet's slots.
pub const OWNER_STATEFULSET: &str = "StatefulSet";
/// The label a StatefulSet's pods and revisions carry: the name of their ControllerRevision.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The label a StatefulSet's pods carry with their own name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// What the StatefulSets want this round.
#[derive(Debug, Default)]
pub(crate) struct StatefulPlan {
    pub revision_puts: Vec<ControllerRevision>,
    pub revision_deletes: Vec<(String, String)>,
    /// Every slot the StatefulSets own after this round, by key; a slot without a node is to be
    /// placed unless it is in `held`.
    pub slots: BTreeMap<String, Slot>,
    /// Slots that must not be placed now, with why (shown as the pod's Pending reason).
    pub held: BTreeMap<String, String>,
    /// What each slot's pod asks of a node, by slot key.
    pub requests: BTreeMap<String, PodRequest>,
    /// Slots whose volumes pin them to their node: a drain moves them only when forced.
    pub pinned: BTreeSet<String>,
}

/// Plans every StatefulSet. `quorum`: how many known nodes this node hears.
pub(crate) fn plan_statefulsets(
    sets: &[StatefulSet],
    revisions: &[ControllerRevision],
    slots: &[Slot],
    observed: &PodStatuses,
    nodes: &Nodes,
    quorum: Quorum,
    now: i64,
) -> StatefulPlan {
    let mut out = StatefulPlan::default();
    let mut claimed: BTreeSet<(String, String)> = BTreeSet::new();
    for s in sets {
        let owned: Vec<&ControllerRevision> =
            revisions.iter().filter(|r| owns_revision(s, r)).collect();
        claimed.extend(owned.iter().map(|r| revision_key(r)));
        plan_one(s, &owned, slots, observed, nodes, quorum, now, &mut out);
        out.revision_deletes
            .extend(history_to_delete(s, &owned, &out.slots));
    }
    // Revisions of deleted StatefulSets go with them.
    for r in revisions {
        let key = revision_key(r);
        if !claimed.contains(&key) {
            out.revision_deletes.push(key);
        }
    }
    out
}

fn revision_key(r: &ControllerRevision) -> (String, String) {
    (
        r.metadata.namespace.clone().unwrap_or_default(),
        r.metadata.name.clone(),
    )
}

/// Whether `r` is one of `s`'s revisions: its controller reference names `s` (and its uid,
/// when both are known).
pub fn owns_revision(s: &StatefulSet, r: &ControllerRevision) -> bool {
    r.metadata.namespace == s.metadata.namespace
        && r.metadata.owner_references.iter().any(|o| {
            o.controller
                && o.kind == OWNER_STATEFULSET
                && o.name == s.metadata.name
                && (o.uid.is_empty() || s.metadata.uid.as_deref().is_none_or(|u| u == o.uid))
        })
}

/// The hash part of a revision's name (`db-5f7c9d` → `5f7c9d`).
fn revision_hash<'a>(s: &StatefulSet, r: &'a ControllerRevision) -> Option<&'a str> {
    r.metadata
        .name
        .strip_prefix(s.metadata.name.as_str())?
        .strip_prefix('-')
}

/// The ordinal of a pod of `name`: `db-3` → 3.
pub fn ordinal(name: &str, pod: &str) -> Option<u32> {
    let digits = pod.strip_prefix(name)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why a StatefulSet pod must stay on `node`, which this node cannot use (lost or unknown),
/// though its volumes do not hold it there: a copy may still run on it (it left, or its engine
/// did not answer when last heard), or this node cannot tell that it is gone (no majority, or
/// one seen only for a moment). None: the pod may move off it. Pure.
fn stays_on(node: &str, nodes: &Nodes, quorum: Quorum) -> Option<String> {
    if nodes.left.contains(node) {
        return Some(format!(
            "node \"{node}\" left the cluster, and the pod may still run there (a stopped \
             shoald leaves its containers running): it starts again when {node} is back, or \
             elsewhere after \"shoal drain {node}\" before a stop or \"shoal delete node \
             {node}\""
        ));
    }
    if nodes.unstoppable.contains(node) {
        return Some(format!(
            "the container engine of node \"{node}\" did not answer when the node was last \
             heard, and the pod may still run there (a hung engine keeps its containers, and \
             nothing there can stop them): it stays until {node} is heard with its engine back, \
             or moves after \"shoal delete node {node}\""
        ));
    }
    if nodes.known.contains(node) && !quorum.sees_majority() {
        return Some(format!(
            "node \"{node}\" cannot be heard and this node sees {} of {} nodes, no majority: \
             the pod may still run there, and at most one copy runs",
            quorum.alive, quorum.known
        ));
    }
    if nodes.known.contains(node) && nodes.majority_settling {
        return Some(format!(
            "node \"{node}\" cannot be heard, and this node has seen a majority only for a \
             moment: the pod stays until it is clear that {node} is gone"
        ));
    }
    None
}

/// Whether every copy of pod `key` that a node which cannot be heard reported when last heard
/// is surely gone: that node is lost as [`stays_on`] requires of a node a pod moves off (dead
/// past the grace, and nothing holds the pod there). Pure.
fn unheard_copies_gone(key: &str, nodes: &Nodes, quorum: Quorum) -> bool {
    nodes.unheard_reports.get(key).is_none_or(|holders| {
        holders
            .iter()
            .all(|n| nodes.movable.contains(n) && stays_on(n, nodes, quorum).is_none())
    })
}

/// Whether the pod of `slot` is Running and Ready at the slot's revision.
fn ready(slot: &Slot, observed: &PodStatuses, min_ready_seconds: i32, now: i64) -> bool {
    observed.get(&slot.key()).is_some_and(|st: &PodStatus| {
        st.revision.as_deref().is_none_or(|r| r == slot.revision)
            && is_available(st, min_ready_seconds, now)
    })
}

#[allow(clippy::too_many_arguments)]
fn plan_one(
    s: &StatefulSet,
    owned: &[&ControllerRevision],
    slots: &[Slot],
    observed: &PodStatuses,
    nodes: &Nodes,
    quorum: Quorum,
    now: i64,
    out: &mut StatefulPlan,
) {
    let namespace = s.metadata.namespace.clone().unwrap_or_default();
    let name = s.metadata.name.clone();
    let spec = &s.spec;
    let update = template_hash(&spec.template);

    // The update revision exists, numbered above every other.
    let top = owned.iter().map(|r| r.revision).max().unwrap_or(0);
    let existing = owned
        .iter()
        .find(|r| revision_hash(s, r) == Some(update.as_str()));
    match existing {
        Some(r) if r.revision == top => {}
        _ => out
            .revision_puts
            .push(new_revision(s, &update, top.saturating_add(1))),
    }
    let known_revisions: BTreeSet<&str> = owned
        .iter()
        .filter_map(|r| revision_hash(s, r))
        .chain([update.as_str()])
        .collect();

    let replicas = u32::try_from(spec.replicas.max(0)).unwrap_or(0);
    let mut mine: BTreeMap<u32, Slot> = slots
        .iter()
        .filter(|x| {
            x.owner_kind == OWNER_STATEFULSET && x.namespace == namespace && x.owner_name == name
        })
        .map(|x| (x.index, x.clone()))
        .collect();
    let is_ready = |x: &Slot| ready(x, observed, spec.min_ready_seconds, now);
    let ordered = spec.pod_management_policy == PodManagementPolicy::OrderedReady;

    // The revision pods below a rolling update's partition keep: the one they run now.
    let partition = match spec.update_strategy.type_ {
        StatefulSetUpdateStrategyType::RollingUpdate => spec
            .update_strategy
            .rolling_update
            .as_ref()
            .map_or(0, |r| u32::try_from(r.partition.max(0)).unwrap_or(0)),
        StatefulSetUpdateStrategyType::OnDelete => u32::MAX,
    };
    let current = mine
        .values()
        .map(|x| x.revision.as_str())
        .find(|r| *r != update && known_revisions.contains(r))
        .unwrap_or(update.as_str())
        .to_string();

    // Scale down: the highest ordinals go; under OrderedReady one at a time, each once the
    // one before has stopped (no node reports it) and the others are Ready.
    let surplus: Vec<u32> = mine.keys().copied().filter(|o| *o >= replicas).collect();
    if !surplus.is_empty() {
        let stopping = observed.keys().any(|k| {
            k.strip_prefix(&format!("{namespace}/"))
                .and_then(|pod| ordinal(&name, pod))
                .is_some_and(|o| o >= replicas && !mine.contains_key(&o))
        });
        let rest_ready = mine
            .iter()
            .filter(|(o, _)| **o < replicas)
            .all(|(_, x)| is_ready(x));
        if !ordered {
            for o in surplus {
                mine.remove(&o);
            }
        } else if !stopping
            && rest_ready
            && let Some(highest) = surplus.iter().max()
        {
            mine.remove(highest);
        }
    }

    // Scale up: missing ordinals; under OrderedReady only the lowest, once all below are Ready.
    let mut blocked = false;
    for o in 0..replicas {
        match mine.get(&o) {
            Some(x) => {
                if ordered && !is_ready(x) {
                    blocked = true;
                }
            }
            None => {
                if ordered && blocked {
                    continue;
                }
                // A node still reports this ordinal (a copy stops there, or its engine does not
                // answer and the copy may run on), or a node that cannot be heard did when last
                // heard and its copy may not have stopped: it comes back once neither holds.
                let key = format!("{namespace}/{name}-{o}");
                if observed.contains_key(&key) || !unheard_copies_gone(&key, nodes, quorum) {
                    if ordered {
                        blocked = true;
                    }
                    continue;
                }
                let revision = if o < partition && partition != u32::MAX {
                    current.clone()
                } else {
                    update.clone()
                };
                mine.insert(
                    o,
                    Slot {
                        namespace: namespace.clone(),
                        pod: format!("{name}-{o}"),
                        owner_kind: OWNER_STATEFULSET.into(),
                        owner_name: name.clone(),
                        index: o,
                        revision,
                        node: String::new(),
                        unschedulable: None,
                    },
                );
                if ordered {
                    blocked = true;
                }
            }
        }
    }

    // A slot whose revision is gone (deleted by hand) takes the update revision.
    for x in mine.values_mut() {
        if !known_revisions.contains(x.revision.as_str()) {
            x.revision = update.clone();
        }
    }

    // Rolling update: the highest ordinal not yet updated, once all others are Ready.
    if partition != u32::MAX {
        let target = mine
            .iter()
            .rev()
            .find(|(o, x)| **o < replicas && **o >= partition && x.revision != update)
            .map(|(o, _)| *o);
        if let Some(t) = target {
            let others_ready = mine
                .iter()
                .filter(|(o, _)| **o != t && **o < replicas)
                .all(|(_, x)| is_ready(x));
            let complete = (0..replicas).all(|o| mine.contains_key(&o));
            if others_ready
                && complete
                && let Some(x) = mine.get_mut(&t)
            {
                tracing::info!(pod = %x.key(), from = %x.revision, to = %update,
                    "updating a StatefulSet pod");
                x.revision = update.clone();
            }
        }
    }

    // Nodes: at most one copy of each ordinal.
    let claims = !spec.volume_claim_templates.is_empty();
    for x in mine.values_mut() {
        let key = x.key();
        x.unschedulable = None;
        if !x.node.is_empty() && !nodes.keeps(&x.node) {
            let node = x.node.clone();
            if claims && nodes.known.contains(&node) {
                let volumes = claim_names(s, x.index).join(", ");
                out.held.insert(
                    key.clone(),
                    format!(
                        "waiting for node \"{node}\", which holds the pod's volumes ({volumes}); \
                         it starts again when {node} is back (or, with new empty volumes, \
                         elsewhere after \"shoal delete node {node}\")"
                    ),
                );
                continue;
            }
            if let Some(why) = stays_on(&node, nodes, quorum) {
                out.held.insert(key.clone(), why);
                continue;
            }
            tracing::info!(pod = %key, from = %node, "moving a StatefulSet pod off a lost node");
            x.node = String::new();
        }
        let spec = statefulset_pod_spec_from(s, &s.spec.template, &x.pod, x.index);
        let mut request =
            PodRequest::from_spec(OwnerKey::new(&namespace, OWNER_STATEFULSET, &name), &spec);
        if !x.node.is_empty() && claims {
            request = request.with_volume_node(x.node.clone());
            out.pinned.insert(key.clone());
        }
        out.requests.insert(key.clone(), request);
    }
    for x in mine.into_values() {
        out.slots.insert(x.key(), x);
    }
}

/// A new ControllerRevision of `s`'s template.
fn new_revision(s: &StatefulSet, hash: &str, revision: i64) -> ControllerRevision {
    let namespace = s.metadata.namespace.clone();
    let mut labels = s.spec.template.metadata.labels.clone();
    labels.insert(
        REVISION_HASH_LABEL.to_string(),
        format!("{}-{hash}", s.metadata.name),
    );
    ControllerRevision {
        metadata: ObjectMeta {
            name: format!("{}-{hash}", s.metadata.name),
            namespace,
            labels,
            owner_references: vec![OwnerReference {
                api_version: Kind::StatefulSet.api_version().to_string(),
                kind: OWNER_STATEFULSET.into(),
                name: s.metadata.name.clone(),
                uid: s.metadata.uid.clone().unwrap_or_default(),
                controller: true,
            }],
            ..ObjectMeta::default()
        },
        data: RevisionData {
            spec: RevisionSpec {
                template: s.spec.template.clone(),
            },
        },
        revision,
    }
}

/// Revisions to delete beyond `revisionHistoryLimit`: the oldest that no slot runs and that
/// are not the update revision.
pub(crate) fn history_to_delete(
    s: &StatefulSet,
    owned: &[&ControllerRevision],
    slots: &BTreeMap<String, Slot>,
) -> Vec<(String, String)> {
    let update = template_hash(&s.spec.template);
    let used: BTreeSet<&str> = slots
        .values()
        .filter(|x| x.owner_kind == OWNER_STATEFULSET && x.owner_name == s.metadata.name)
        .map(|x| x.revision.as_str())
        .collect();
    let mut unused: Vec<&&ControllerRevision> = owned
        .iter()
        .filter(|r| revision_hash(s, r).is_some_and(|h| h != update && !used.contains(h)))
        .collect();
    let limit = usize::try_from(s.spec.revision_history_limit.max(0)).unwrap_or(0);
    if unused.len() <= limit {
        return Vec::new();
    }
    unused.sort_by_key(|r| r.revision);
    let excess = unused.len() - limit;
    unused
        .into_iter()
        .take(excess)
        .map(|r| revision_key(r))
        .collect()
}

/// The key of the slot of ordinal `o` of `s`.
pub fn ordinal_key(s: &StatefulSet, o: u32) -> String {
    slot_key(
        s.metadata.namespace.as_deref().unwrap_or_default(),
        &format!("{}-{o}", s.metadata.name),
    )
}

/// The `status` of a StatefulSet, from its slots and what nodes observe (never stored).
pub fn statefulset_status(
    s: &StatefulSet,
    slots: &[Slot],
    observed: &PodStatuses,
    now: i64,
) -> serde_json::Value {
    let namespace = s.metadata.namespace.as_deref().unwrap_or_default();
    let update = template_hash(&s.spec.template);
    let mine: Vec<&Slot> = slots
        .iter()
        .filter(|x| {
            x.owner_kind == OWNER_STATEFULSET
                && x.namespace == namespace
                && x.owner_name == s.metadata.name
        })
        .collect();
    let (mut ready_n, mut available, mut updated) = (0, 0, 0);
    for x in &mine {
        if let Some(st) = observed.get(&x.key())
            && st.revision.as_deref().is_none_or(|r| r == x.revision)
        {
            if st.is_ready() {
                ready_n += 1;
            }
            if is_available(st, s.spec.min_ready_seconds, now) {
                available += 1;
            }
        }
        if x.revision == update {
            updated += 1;
        }
    }
    // The revision the pods not yet updated run; the update revision once all are.
    let current = mine
        .iter()
        .map(|x| x.revision.as_str())
        .find(|r| *r != update)
        .unwrap_or(update.as_str());
    let current_replicas = mine.iter().filter(|x| x.revision == current).count();
    let mut status = serde_json::json!({
        "replicas": mine.len(),
        "readyReplicas": ready_n,
        "availableReplicas": available,
        "currentReplicas": current_replicas,
        "updatedReplicas": updated,
        "currentRevision": format!("{}-{current}", s.metadata.name),
        "updateRevision": format!("{}-{update}", s.metadata.name),
    });
    if let Some(g) = s.metadata.generation {
        status["observedGeneration"] = serde_json::Value::from(g);
    }
    status
}
