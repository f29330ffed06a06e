//! The engine rule: a node whose container engine is unavailable (its record carries the
//! `EngineUnavailable` condition, set by its agent) runs none of its pods, though it is alive.
//! It takes no new slot at once, and once this node has seen the condition for longer than
//! the reschedule grace without a break, its slots move elsewhere as a dead node's do:
//! Deployments', ReplicaSets' and bare pods' (its agent starts none of them again when the
//! engine is back, as they are no longer its own). StatefulSet pods stay
//! (`statefulset.rs`): an engine that does not answer may still run its containers (a hung
//! `dockerd`, or one with live-restore), and at most one copy of an ordinal runs. How long is
//! judged by this node's own clock, from when it first saw the condition, never from the
//! other node's clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::placement::Nodes;
use crate::agent::engine::ENGINE_UNAVAILABLE;
use crate::observed::{Liveness, Member};

/// The nodes that report their engine unavailable now: alive or suspect members whose record
/// carries the condition. A dead or departed node is the membership rules' business.
pub(crate) fn reporting<'a>(
    members: impl IntoIterator<Item = (&'a String, &'a Member)>,
) -> BTreeSet<String> {
    members
        .into_iter()
        .filter(|(_, m)| matches!(m.liveness, Liveness::Alive | Liveness::Suspect))
        .filter(|(_, m)| m.record.conditions.contains_key(ENGINE_UNAVAILABLE))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The nodes whose last heard record says their engine does not answer, whatever their
/// liveness now: their agent could not stop a container when it was last heard, so a copy of
/// a pod may run there until the node is heard again with its engine back (a partition, or a
/// power cut, that came on top of a hung engine cannot be told apart from here). Pure.
pub(crate) fn unstoppable<'a>(
    members: impl IntoIterator<Item = (&'a String, &'a Member)>,
) -> BTreeSet<String> {
    members
        .into_iter()
        .filter(|(_, m)| m.liveness != Liveness::Left)
        .filter(|(_, m)| m.record.conditions.contains_key(ENGINE_UNAVAILABLE))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Since when each node has reported its engine unavailable, as this node saw it: `seen`
/// from the last round, updated with the nodes `reporting` now (a node that stopped reporting
/// is forgotten; one that starts is seen from `now`). Pure.
pub(crate) fn follow(
    seen: &BTreeMap<String, Instant>,
    reporting: &BTreeSet<String>,
    now: Instant,
) -> BTreeMap<String, Instant> {
    reporting
        .iter()
        .map(|n| (n.clone(), seen.get(n).copied().unwrap_or(now)))
        .collect()
}

/// The nodes whose slots move because of their engine: seen unavailable for `grace` or
/// longer. Pure.
pub(crate) fn movable(
    seen: &BTreeMap<String, Instant>,
    now: Instant,
    grace: Duration,
) -> BTreeSet<String> {
    seen.iter()
        .filter(|(_, since)| now.saturating_duration_since(**since) >= grace)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Applies the rule to `nodes` for this round: nodes without an engine take no new slot, and
/// those past the grace become movable. `seen` is kept across rounds (a short critical
/// section, never held across an await).
pub(crate) fn apply(
    seen: &std::sync::Mutex<BTreeMap<String, Instant>>,
    members: &BTreeMap<String, Member>,
    grace: Duration,
    nodes: &mut Nodes,
) {
    let now = Instant::now();
    let reporting = reporting(members);
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    *seen = follow(&seen, &reporting, now);
    nodes.alive.retain(|n| !reporting.contains(&n.name));
    let moving = movable(&seen, now, grace);
    nodes.movable.extend(moving.iter().cloned());
    nodes.engine_unavailable = moving;
    nodes.unstoppable = unstoppable(members);
}
