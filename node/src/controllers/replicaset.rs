//! The ReplicaSet (and bare Pod) controller's decisions: the slots each one owns.
//!
//! A ReplicaSet with `replicas: N` owns N slots `<rs>-<index>` (owner_kind `ReplicaSet`,
//! revision = its pod-template-hash). Scaling up fills the lowest free indexes, so a steady
//! ReplicaSet owns `0..N`. Scaling down removes, as Kubernetes' ReplicaSet controller picks
//! pods to delete, the least useful first: unassigned, then not reported by any node, then
//! not ready, then ready but not yet available; ties go to the highest index. This keeps a
//! rollout's arithmetic honest: the rollout scales an old ReplicaSet down by its unavailable
//! pods first, and exactly those go. A bare Pod owns one slot named as the Pod.
//!
//! Slots whose ReplicaSet or Pod is gone are removed. The StatefulSets' slots arrive planned
//! (see `statefulset`) and are placed here with the others, so that all share one view of
//! the nodes.

use std::collections::{BTreeMap, BTreeSet};

use shoal_protocol::cluster::{POD_TEMPLATE_HASH_LABEL, Slot, slot_key};
use shoal_protocol::kinds::{Pod, ReplicaSet};

use crate::scheduler::{OwnerKey, PodRequest};

use super::placement::{self, Nodes};
use super::statefulset::{OWNER_STATEFULSET, StatefulPlan};
use super::status::{Ctx, is_available};

const OWNER_REPLICASET: &str = "ReplicaSet";
const OWNER_POD: &str = "Pod";

/// The slots to write and the keys of slots to remove, so that `replicasets` and `pods` own
/// exactly their slots, each on a node.
// The round's inputs, each used once; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_slots(
    replicasets: &[ReplicaSet],
    pods: &[Pod],
    slots: &[Slot],
    ctx: &Ctx<'_>,
    nodes: &Nodes,
    drain_budgets: &BTreeMap<(String, String), i32>,
    stateful: &StatefulPlan,
    settled: &BTreeSet<(String, String)>,
) -> (Vec<Slot>, Vec<String>) {
    let existing: BTreeMap<String, &Slot> = slots.iter().map(|s| (s.key(), s)).collect();
    // Every slot that should exist, by key, its node possibly still to choose.
    let mut wanted: BTreeMap<String, Slot> = BTreeMap::new();

    for rs in replicasets {
        for slot in replicaset_slots(rs, ctx) {
            wanted.insert(slot.key(), slot);
        }
    }
    for pod in pods {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = slot_key(&namespace, &pod.metadata.name);
        // A ReplicaSet's slot of the same name keeps it: a Pod cannot take over another
        // owner's pod.
        if wanted.contains_key(&key) {
            tracing::warn!(pod = %key, "a bare Pod has the name of a ReplicaSet's pod; not run");
            continue;
        }
        let node = existing
            .get(&key)
            .filter(|s| s.owner_kind == OWNER_POD)
            .map(|s| s.node.clone())
            .unwrap_or_default();
        wanted.insert(
            key,
            Slot {
                namespace,
                pod: pod.metadata.name.clone(),
                owner_kind: OWNER_POD.into(),
                owner_name: pod.metadata.name.clone(),
                index: 0,
                revision: String::new(),
                node,
                unschedulable: None,
            },
        );
    }

    for (key, slot) in &stateful.slots {
        if wanted.contains_key(key) {
            tracing::warn!(pod = %key, "a StatefulSet pod has the name of another owner's pod; not run");
            continue;
        }
        wanted.insert(key.clone(), slot.clone());
    }

    evict_for_drain(&mut wanted, nodes, ctx, drain_budgets, &stateful.pinned);
    // At most one copy of a StatefulSet pod: one that lost its node is placed again only once
    // no alive node reports it (its old copy has stopped).
    let mut held = stateful.held.clone();
    for (key, slot) in &wanted {
        if slot.owner_kind == OWNER_STATEFULSET
            && slot.node.is_empty()
            && !held.contains_key(key)
            && ctx.observed.contains_key(key)
        {
            held.insert(
                key.clone(),
                "waiting for the pod's previous copy to stop".to_string(),
            );
        }
    }
    // An unplaced slot keeps the message it carries while the reasons stay the same (see
    // `placement::place_spread`): the slots are built afresh above.
    for (key, slot) in wanted.iter_mut() {
        if let Some(e) = existing.get(key)
            && slot.unschedulable.is_none()
            && slot.node.is_empty()
            && e.node.is_empty()
        {
            slot.unschedulable = e.unschedulable.clone();
        }
    }
    // Placement: each slot's pod asks what its owner's template asks.
    let requests = owner_requests(replicasets, pods);
    let spread = spread_owners(replicasets, &wanted, ctx, nodes, settled);
    placement::place_spread(
        wanted.values_mut(),
        nodes,
        |slot| {
            let key = slot.key();
            if held.contains_key(&key) {
                return None;
            }
            stateful
                .requests
                .get(&key)
                .or_else(|| requests.get(&OwnerKey::of_slot(slot)))
                .cloned()
        },
        &spread,
    );
    for (key, why) in held {
        if let Some(slot) = wanted.get_mut(&key) {
            slot.unschedulable = Some(why);
        }
    }

    let puts: Vec<Slot> = wanted
        .values()
        .filter(|s| existing.get(&s.key()).is_none_or(|e| *e != *s))
        .cloned()
        .collect();
    let deletes: Vec<String> = existing
        .iter()
        .filter(|(k, s)| {
            (s.owner_kind == OWNER_REPLICASET
                || s.owner_kind == OWNER_POD
                || s.owner_kind == OWNER_STATEFULSET)
                && !wanted.contains_key(*k)
        })
        .map(|(k, _)| k.clone())
        .collect();
    (puts, deletes)
}

/// The ReplicaSets whose pods may move to even out their spread: those in `settled` (their
/// Deployment runs no other ReplicaSet: no rollout), with at least two replicas, each slot
/// on a node it keeps and its pod ready. Never StatefulSets (their pods move only off lost
/// nodes) nor bare Pods. Pure.
pub(crate) fn spread_owners(
    replicasets: &[ReplicaSet],
    wanted: &BTreeMap<String, Slot>,
    ctx: &Ctx<'_>,
    nodes: &Nodes,
    settled: &BTreeSet<(String, String)>,
) -> BTreeSet<OwnerKey> {
    let mut out = BTreeSet::new();
    for rs in replicasets {
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let name = &rs.metadata.name;
        if rs.spec.replicas < 2 || !settled.contains(&(namespace.clone(), name.clone())) {
            continue;
        }
        let mine: Vec<&Slot> = wanted
            .values()
            .filter(|s| {
                s.owner_kind == OWNER_REPLICASET
                    && s.namespace == namespace
                    && s.owner_name == *name
            })
            .collect();
        let all_ready = mine.len() == usize::try_from(rs.spec.replicas).unwrap_or(0)
            && mine.iter().all(|s| {
                nodes.keeps(&s.node) && ctx.observed.get(&s.key()).is_some_and(|p| p.is_ready())
            });
        if all_ready {
            out.insert(OwnerKey::new(&namespace, OWNER_REPLICASET, name));
        }
    }
    out
}

/// Takes slots off draining nodes (their node cleared, so that placement moves them), per
/// owner as many as its budget allows: the budget (the Deployment's maxUnavailable, at least
/// one; one for other owners) minus the owner's pods that are not ready now. A forced drain
/// takes every slot at once. Slots go in index order. A StatefulSet pod whose volumes pin it
/// to its node (its key is in `pinned`) stays unless the drain is forced.
fn evict_for_drain(
    wanted: &mut BTreeMap<String, Slot>,
    nodes: &Nodes,
    ctx: &Ctx<'_>,
    budgets: &BTreeMap<(String, String), i32>,
    pinned: &BTreeSet<String>,
) {
    if nodes.draining.is_empty() {
        return;
    }
    let mut owners: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for (key, s) in wanted.iter() {
        owners
            .entry((
                s.namespace.clone(),
                s.owner_kind.clone(),
                s.owner_name.clone(),
            ))
            .or_default()
            .push(key.clone());
    }
    for ((namespace, kind, name), keys) in owners {
        let mut on_drain: Vec<&String> = keys
            .iter()
            .filter(|k| {
                nodes
                    .draining
                    .get(&wanted[*k].node)
                    .is_some_and(|force| *force || !pinned.contains(*k))
            })
            .collect();
        if on_drain.is_empty() {
            continue;
        }
        on_drain.sort_by_key(|k| wanted[*k].index);
        let force = on_drain
            .iter()
            .any(|k| nodes.draining.get(&wanted[*k].node) == Some(&true));
        let allowed = if force {
            on_drain.len()
        } else {
            let budget = if kind == OWNER_REPLICASET {
                budgets.get(&(namespace, name)).copied().unwrap_or(1)
            } else {
                1
            };
            let unready = keys
                .iter()
                .filter(|k| {
                    let s = &wanted[*k];
                    s.node.is_empty() || !ctx.observed.get(*k).is_some_and(|p| p.is_ready())
                })
                .count();
            usize::try_from(budget.max(1))
                .unwrap_or(1)
                .saturating_sub(unready)
        };
        let chosen: Vec<String> = on_drain.into_iter().take(allowed).cloned().collect();
        for k in chosen {
            if let Some(s) = wanted.get_mut(&k) {
                tracing::info!(pod = %k, from = %s.node, "draining: moving the pod");
                s.node = String::new();
            }
        }
    }
}

/// What the pods of each owner ask of a node, from its template (a bare Pod's own spec).
fn owner_requests(replicasets: &[ReplicaSet], pods: &[Pod]) -> BTreeMap<OwnerKey, PodRequest> {
    let mut out = BTreeMap::new();
    for rs in replicasets {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let owner = OwnerKey::new(namespace, OWNER_REPLICASET, &rs.metadata.name);
        let request = PodRequest::from_spec(owner.clone(), &rs.spec.template.spec);
        out.insert(owner, request);
    }
    for pod in pods {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let owner = OwnerKey::new(namespace, OWNER_POD, &pod.metadata.name);
        let request = PodRequest::from_spec(owner.clone(), &pod.spec);
        out.insert(owner, request);
    }
    out
}

/// The slots one ReplicaSet should own, with the nodes they already have.
fn replicaset_slots(rs: &ReplicaSet, ctx: &Ctx<'_>) -> Vec<Slot> {
    let namespace = rs.metadata.namespace.clone().unwrap_or_default();
    let name = &rs.metadata.name;
    let revision = rs
        .spec
        .template
        .metadata
        .labels
        .get(POD_TEMPLATE_HASH_LABEL)
        .cloned()
        .unwrap_or_default();
    let want = usize::try_from(rs.spec.replicas.max(0)).unwrap_or(0);
    let mut have: Vec<&Slot> = ctx.slots_of(rs).to_vec();
    if have.len() > want {
        // Most removable first; keep the rest.
        have.sort_by_key(|s| (removal_rank(s, rs, ctx), std::cmp::Reverse(s.index)));
        have.drain(..have.len() - want);
    }
    let used: BTreeSet<u32> = have.iter().map(|s| s.index).collect();
    let mut out: Vec<Slot> = have
        .iter()
        .map(|s| Slot {
            namespace: namespace.clone(),
            pod: format!("{name}-{}", s.index),
            owner_kind: OWNER_REPLICASET.into(),
            owner_name: name.clone(),
            index: s.index,
            revision: revision.clone(),
            node: s.node.clone(),
            unschedulable: None,
        })
        .collect();
    let mut index = 0u32;
    while out.len() < want {
        if !used.contains(&index) {
            out.push(Slot {
                namespace: namespace.clone(),
                pod: format!("{name}-{index}"),
                owner_kind: OWNER_REPLICASET.into(),
                owner_name: name.clone(),
                index,
                revision: revision.clone(),
                node: String::new(),
                unschedulable: None,
            });
        }
        index += 1;
    }
    out
}

/// How useful a pod is, lowest first: unassigned, unreported, not ready, not yet available,
/// available.
fn removal_rank(slot: &Slot, rs: &ReplicaSet, ctx: &Ctx<'_>) -> u8 {
    if slot.node.is_empty() {
        return 0;
    }
    match ctx.status_of(slot) {
        None => 1,
        Some(st) if !st.is_ready() => 2,
        Some(st) if !is_available(st, rs.spec.min_ready_seconds, ctx.now) => 3,
        Some(_) => 4,
    }
}
