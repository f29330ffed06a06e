//! Status of Deployments and ReplicaSets, computed on demand from slots and observed pods
//! (status is never stored), availability (`minReadySeconds`), the progress mark the
//! controller keeps on the current ReplicaSet, and `rollout undo`'s template.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shoal_protocol::cluster::{POD_TEMPLATE_HASH_LABEL, Slot, slot_key};
use shoal_protocol::kinds::{Deployment, PodTemplateSpec, ReplicaSet};
use shoal_protocol::status::PodStatus;

use super::PodStatuses;
use super::deployment::{self, max_unavailable, owns, revision};

/// When the current ReplicaSet's rollout last made progress (RFC 3339). Written only when
/// progress happens (see [`ProgressMark`]), never at a steady rate: every write stays in the
/// document's history.
pub const PROGRESS_AT_ANNOTATION: &str = "shoal.dev/progress-at";
/// What the rollout had reached at `progress-at`: `new/available/old[/complete]`.
pub const PROGRESS_MARK_ANNOTATION: &str = "shoal.dev/progress-mark";

/// Whether a pod counts as available: ready for at least `min_ready_seconds`, as Kubernetes'
/// `IsPodAvailable` (a ready pod without a readable transition time is available only when
/// `min_ready_seconds` is 0).
pub fn is_available(status: &PodStatus, min_ready_seconds: i32, now: i64) -> bool {
    if !status.is_ready() {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    status
        .ready_since()
        .and_then(parse_rfc3339)
        .is_some_and(|since| now - since >= i64::from(min_ready_seconds))
}

/// How far an RS's slots are: counted from observed pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Slots (pods that should exist).
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
}

/// Read-only context of one round: slots by owner and observed pods.
pub(crate) struct Ctx<'a> {
    pub slots_by_owner: BTreeMap<(String, String), Vec<&'a Slot>>,
    pub observed: &'a PodStatuses,
    pub now: i64,
}

impl<'a> Ctx<'a> {
    pub fn new(slots: &'a [Slot], observed: &'a PodStatuses, now: i64) -> Ctx<'a> {
        let mut slots_by_owner: BTreeMap<(String, String), Vec<&Slot>> = BTreeMap::new();
        for s in slots.iter().filter(|s| s.owner_kind == "ReplicaSet") {
            slots_by_owner
                .entry((s.namespace.clone(), s.owner_name.clone()))
                .or_default()
                .push(s);
        }
        Ctx {
            slots_by_owner,
            observed,
            now,
        }
    }

    /// The slots of a ReplicaSet.
    pub fn slots_of(&self, rs: &ReplicaSet) -> &[&'a Slot] {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        self.slots_by_owner
            .get(&(ns.to_string(), rs.metadata.name.clone()))
            .map_or(&[], Vec::as_slice)
    }

    pub fn status_of(&self, slot: &Slot) -> Option<&'a PodStatus> {
        self.observed.get(&slot.key())
    }

    pub fn counts(&self, rs: &ReplicaSet) -> Counts {
        let mut c = Counts::default();
        for slot in self.slots_of(rs) {
            c.replicas += 1;
            if let Some(st) = self.status_of(slot) {
                if st.is_ready() {
                    c.ready += 1;
                }
                if is_available(st, rs.spec.min_ready_seconds, self.now) {
                    c.available += 1;
                }
            }
        }
        c
    }

    /// Whether any pod of the ReplicaSet may still run: it has slots, or a node still reports
    /// one of its pods in a phase other than Succeeded/Failed (a pod whose slot is gone is
    /// stopping). Recreate waits for this to be false.
    pub fn pods_running(&self, rs: &ReplicaSet) -> bool {
        if !self.slots_of(rs).is_empty() {
            return true;
        }
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let prefix = slot_key(ns, &format!("{}-", rs.metadata.name));
        self.observed
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .any(|(k, st)| {
                let index = &k[prefix.len()..];
                !index.is_empty()
                    && index.bytes().all(|b| b.is_ascii_digit())
                    && st.phase != "Succeeded"
                    && st.phase != "Failed"
            })
    }
}

/// The progress a rollout had reached, kept on the current ReplicaSet. Progress means more
/// replicas of the new ReplicaSet, more of them available, or fewer old replicas than ever
/// before in this rollout (high/low-water marks, so a flapping pod writes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProgressMark {
    pub new: i32,
    pub available: i32,
    pub old: i32,
    pub complete: bool,
}

impl ProgressMark {
    pub fn parse(s: &str) -> Option<ProgressMark> {
        let mut parts = s.split('/');
        let new = parts.next()?.parse().ok()?;
        let available = parts.next()?.parse().ok()?;
        let old = parts.next()?.parse().ok()?;
        let complete = match parts.next() {
            None => false,
            Some("complete") => true,
            Some(_) => return None,
        };
        Some(ProgressMark {
            new,
            available,
            old,
            complete,
        })
    }

    pub fn render(&self) -> String {
        let base = format!("{}/{}/{}", self.new, self.available, self.old);
        if self.complete {
            format!("{base}/complete")
        } else {
            base
        }
    }

    pub fn of(rs: &ReplicaSet) -> Option<ProgressMark> {
        rs.metadata
            .annotations
            .get(PROGRESS_MARK_ANNOTATION)
            .and_then(|s| ProgressMark::parse(s))
    }

    /// The mark to store after observing `current`, or None when nothing progressed.
    pub fn advance(previous: Option<ProgressMark>, current: ProgressMark) -> Option<ProgressMark> {
        let Some(p) = previous else {
            return Some(current);
        };
        if current.complete {
            // Completion (or a scale of a complete rollout) is recorded once per distinct shape.
            return (p != current).then_some(current);
        }
        let progressed =
            current.new > p.new || current.available > p.available || current.old < p.old;
        if !progressed {
            return None;
        }
        Some(ProgressMark {
            new: current.new.max(if p.complete { 0 } else { p.new }),
            available: current
                .available
                .max(if p.complete { 0 } else { p.available }),
            old: current.old.min(if p.complete { i32::MAX } else { p.old }),
            complete: false,
        })
    }
}

fn progress_at(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .get(PROGRESS_AT_ANNOTATION)
        .and_then(|s| parse_rfc3339(s))
}

pub(crate) use shoal_protocol::time::parse_rfc3339;

/// See [`super::replicaset_status`].
pub(crate) fn replicaset_status(
    rs: &ReplicaSet,
    slots: &[Slot],
    observed: &PodStatuses,
    now: i64,
) -> Value {
    let ctx = Ctx::new(slots, observed, now);
    let c = ctx.counts(rs);
    json!({
        "replicas": c.replicas,
        "readyReplicas": c.ready,
        "availableReplicas": c.available,
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
    })
}

/// See [`super::deployment_status`].
pub(crate) fn deployment_status(
    d: &Deployment,
    replicasets: &[ReplicaSet],
    slots: &[Slot],
    observed: &PodStatuses,
    now: i64,
) -> Value {
    let ctx = Ctx::new(slots, observed, now);
    let owned: Vec<&ReplicaSet> = replicasets.iter().filter(|rs| owns(d, rs)).collect();
    let current = owned
        .iter()
        .copied()
        .find(|rs| deployment::is_current(d, rs));
    let mut total = Counts::default();
    for rs in &owned {
        let c = ctx.counts(rs);
        total.replicas += c.replicas;
        total.ready += c.ready;
        total.available += c.available;
    }
    let updated = current.map_or(0, |rs| ctx.counts(rs).replicas);
    let replicas = d.spec.replicas.max(0);
    let min_available = replicas - max_unavailable(d);
    let complete = is_complete(d, total, updated);
    let at = current
        .and_then(progress_at)
        .map(crate::time::rfc3339)
        .unwrap_or_else(|| crate::time::rfc3339(now));

    let available_condition = if total.available >= min_available {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            &at,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            &at,
        )
    };
    let mut conditions = vec![available_condition];
    if let Some(p) = progressing_condition(d, current, complete, now, &at) {
        conditions.push(p);
    }
    json!({
        "observedGeneration": d.metadata.generation.unwrap_or(0),
        "replicas": total.replicas,
        "updatedReplicas": updated,
        "readyReplicas": total.ready,
        "availableReplicas": total.available,
        "unavailableReplicas": (total.replicas - total.available).max(0),
        "conditions": conditions,
    })
}

/// Kubernetes' `DeploymentComplete`: every replica is updated and available, no old one
/// left.
pub(crate) fn is_complete(d: &Deployment, total: Counts, updated: i32) -> bool {
    let replicas = d.spec.replicas.max(0);
    updated == replicas && total.replicas == replicas && total.available == replicas
}

fn progressing_condition(
    d: &Deployment,
    current: Option<&ReplicaSet>,
    complete: bool,
    now: i64,
    at: &str,
) -> Option<Value> {
    if d.spec.paused {
        return Some(condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            at,
        ));
    }
    let rs = current?;
    let name = &rs.metadata.name;
    let marked_complete = ProgressMark::of(rs).is_some_and(|m| m.complete);
    if complete || marked_complete {
        return Some(condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{name}\" has successfully progressed."),
            at,
        ));
    }
    let deadline = i64::from(d.spec.progress_deadline_seconds);
    let timed_out = progress_at(rs).is_some_and(|t| now - t > deadline);
    Some(if timed_out {
        condition(
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{name}\" has timed out progressing."),
            at,
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{name}\" is progressing."),
            at,
        )
    })
}

/// A condition. Both times are the last recorded progress: status is computed, not stored,
/// so the exact instant of a transition is not known; the progress mark is the closest
/// recorded event.
fn condition(type_: &str, status: &str, reason: &str, message: &str, at: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "lastUpdateTime": at,
        "lastTransitionTime": at,
        "reason": reason,
        "message": message,
    })
}

/// See [`super::rollback_template`].
pub(crate) fn rollback_template(
    d: &Deployment,
    replicasets: &[ReplicaSet],
    to_revision: Option<i64>,
) -> Result<PodTemplateSpec, String> {
    let mut owned: Vec<&ReplicaSet> = replicasets.iter().filter(|rs| owns(d, rs)).collect();
    owned.sort_by_key(|rs| revision(rs));
    let name = &d.metadata.name;
    if owned.is_empty() {
        return Err(format!(
            "no rollout history found for deployment \"{name}\""
        ));
    }
    let known = || {
        owned
            .iter()
            .map(|rs| revision(rs).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let target = match to_revision.filter(|r| *r != 0) {
        Some(r) => owned
            .iter()
            .find(|rs| revision(rs) == r)
            .ok_or_else(|| format!("revision {r} not found; known revisions: {}", known()))?,
        // The previous revision: the second highest, as kubectl's `LastRevision`.
        None => {
            if owned.len() < 2 {
                return Err(format!(
                    "no previous revision found for deployment \"{name}\"; known revisions: {}",
                    known()
                ));
            }
            owned[owned.len() - 2]
        }
    };
    let mut template = target.spec.template.clone();
    template.metadata.labels.remove(POD_TEMPLATE_HASH_LABEL);
    Ok(template)
}
