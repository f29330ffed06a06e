//! Controllers: Deployments into ReplicaSets (one per template revision, rolled out as
//! Kubernetes does), and ReplicaSets and bare Pods into pod slots with their assigned node.
//!
//! Owns no state of its own: everything it decides is written to the desired-state store
//! (ReplicaSet objects, slots) and everything it reads comes from the store and from observed
//! state (pod readiness drives rollouts, node heartbeats and capacity drive placement).
//!
//! Layout:
//! - [`plan()`]: the pure decision, from a snapshot of inputs to a list of [`Action`]s;
//! - `deployment`: template hashes, ownership, revisions, the rollout steps;
//! - `replicaset`: ReplicaSets and bare Pods into slots;
//! - `statefulset`: StatefulSets into ordinal slots and ControllerRevisions, with the rule that
//!   at most one copy of an ordinal runs;
//! - [`placement`]: which node each slot goes to, through the scheduler (a slot that fits
//!   nowhere carries the scheduler's message);
//! - `status`: Deployment and ReplicaSet status, availability, progress tracking, rollback;
//! - `task`: the task around `plan`: reads, plans, writes only what differs, on changes and
//!   on a tick.
//!
//! Talks to: `state` (reads objects, Node objects and slots, writes ReplicaSets and slots),
//! `observed` (reads pod statuses and node records), `scheduler` (places slots). The API
//! calls [`deployment_status`], [`replicaset_status`] and [`rollback_template`]; the node
//! agent reads the slots.

mod deployment;
pub(crate) mod engine;
pub mod placement;
mod replicaset;
pub mod statefulset;
mod status;
mod task;

#[cfg(test)]
mod statefulset_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shoal_protocol::cluster::Slot;
use shoal_protocol::kinds::{
    ControllerRevision, Deployment, Pod, PodTemplateSpec, ReplicaSet, StatefulSet,
};
use shoal_protocol::status::PodStatus;

pub use deployment::{owns, revision, template_hash};
pub use placement::Nodes;
pub use status::{PROGRESS_AT_ANNOTATION, PROGRESS_MARK_ANNOTATION, is_available};
pub use task::{Controllers, Leader, run, should_act};

/// Observed pod statuses by `namespace/pod`, from every node's record.
pub type PodStatuses = BTreeMap<String, PodStatus>;

/// The `status` of a Deployment, computed from its ReplicaSets, the slots and what nodes
/// observe (never stored: status is observed state). `now` is seconds since the Unix epoch.
/// `replicasets` may hold any ReplicaSets: only those the Deployment owns are counted.
pub fn deployment_status(
    deployment: &Deployment,
    replicasets: &[ReplicaSet],
    slots: &[Slot],
    observed: &PodStatuses,
    now: i64,
) -> Value {
    status::deployment_status(deployment, replicasets, slots, observed, now)
}

/// The `status` of a ReplicaSet.
pub fn replicaset_status(
    replicaset: &ReplicaSet,
    slots: &[Slot],
    observed: &PodStatuses,
    now: i64,
) -> Value {
    status::replicaset_status(replicaset, slots, observed, now)
}

/// The template `rollout undo` goes back to: revision `to_revision`, or the one before the
/// current one when None. The error says what is wrong (no such revision, no history).
pub fn rollback_template(
    deployment: &Deployment,
    replicasets: &[ReplicaSet],
    to_revision: Option<i64>,
) -> Result<PodTemplateSpec, String> {
    status::rollback_template(deployment, replicasets, to_revision)
}

/// One change the controllers want in the desired state. Executing an action twice is
/// harmless; the planner only emits actions that change something.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create or update a ReplicaSet (the whole object; server-set metadata is ignored).
    /// Boxed: a ReplicaSet is much larger than the other variants.
    PutReplicaSet(Box<ReplicaSet>),
    DeleteReplicaSet {
        namespace: String,
        name: String,
    },
    /// Create or update a slot.
    PutSlot(Slot),
    /// Remove the slot with this key (`namespace/pod`).
    DeleteSlot(String),
    /// Create or update a StatefulSet's ControllerRevision. Boxed as a ReplicaSet.
    PutRevision(Box<ControllerRevision>),
    DeleteRevision {
        namespace: String,
        name: String,
    },
}

/// Everything one planning round reads: a consistent snapshot of the store and of observed
/// state.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub deployments: &'a [Deployment],
    pub replicasets: &'a [ReplicaSet],
    pub pods: &'a [Pod],
    pub statefulsets: &'a [StatefulSet],
    pub revisions: &'a [ControllerRevision],
    pub slots: &'a [Slot],
    pub observed: &'a PodStatuses,
    pub nodes: &'a Nodes,
    /// How many of the known nodes this node hears (StatefulSet pods move off a lost node
    /// only with a majority).
    pub quorum: crate::nodes::Quorum,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// The controllers' decision for one round: ReplicaSet changes of every Deployment (rollout
/// steps, revision numbers, history cleanup, garbage collection of ReplicaSets whose
/// Deployment is gone), then the slots of the ReplicaSets as they will be after those changes
/// and of the bare Pods. A converged cluster gives no action.
pub fn plan(inputs: &Inputs<'_>) -> Vec<Action> {
    let ctx = status::Ctx::new(inputs.slots, inputs.observed, inputs.now);
    let mut actions = Vec::new();
    // The ReplicaSets as they will be once this round's actions are done, by (namespace, name).
    let mut after: BTreeMap<(String, String), ReplicaSet> = inputs
        .replicasets
        .iter()
        .map(|rs| (deployment::rs_key(rs), rs.clone()))
        .collect();
    let mut claimed: BTreeSet<(String, String)> = BTreeSet::new();

    let mut deployments: Vec<&Deployment> = inputs.deployments.iter().collect();
    deployments.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for d in deployments {
        let owned: Vec<ReplicaSet> = inputs
            .replicasets
            .iter()
            .filter(|rs| owns(d, rs))
            .cloned()
            .collect();
        claimed.extend(owned.iter().map(deployment::rs_key));
        let out = deployment::plan_deployment(d, &owned, &ctx);
        for rs in out.puts {
            after.insert(deployment::rs_key(&rs), rs.clone());
            actions.push(Action::PutReplicaSet(Box::new(rs)));
        }
        for name in out.deletes {
            let namespace = d.metadata.namespace.clone().unwrap_or_default();
            after.remove(&(namespace.clone(), name.clone()));
            actions.push(Action::DeleteReplicaSet { namespace, name });
        }
    }
    // Garbage collection: a ReplicaSet no Deployment owns belongs to a deleted Deployment
    // (users cannot create ReplicaSets), as Kubernetes' cascading delete.
    for rs in inputs.replicasets {
        let key = deployment::rs_key(rs);
        if !claimed.contains(&key) {
            after.remove(&key);
            actions.push(Action::DeleteReplicaSet {
                namespace: key.0,
                name: key.1,
            });
        }
    }

    let replicasets: Vec<ReplicaSet> = after.into_values().collect();
    // How many pods of each ReplicaSet a drain may take away at once: its Deployment's
    // maxUnavailable, at least one.
    let mut drain_budgets: BTreeMap<(String, String), i32> = BTreeMap::new();
    for rs in &replicasets {
        let budget = inputs
            .deployments
            .iter()
            .find(|d| deployment::owns(d, rs))
            .map_or(1, |d| deployment::max_unavailable(d).max(1));
        drain_budgets.insert(deployment::rs_key(rs), budget);
    }
    let stateful = statefulset::plan_statefulsets(
        inputs.statefulsets,
        inputs.revisions,
        inputs.slots,
        inputs.observed,
        inputs.nodes,
        inputs.quorum,
        inputs.now,
    );
    actions.extend(
        stateful
            .revision_puts
            .iter()
            .cloned()
            .map(|r| Action::PutRevision(Box::new(r))),
    );
    // ReplicaSets whose Deployment runs no other one (no rollout under way): only their pods
    // may move to even out the spread.
    let settled: BTreeSet<(String, String)> = replicasets
        .iter()
        .filter(|rs| {
            inputs
                .deployments
                .iter()
                .find(|d| deployment::owns(d, rs))
                .is_some_and(|d| {
                    replicasets
                        .iter()
                        .filter(|o| deployment::owns(d, o) && o.spec.replicas > 0)
                        .all(|o| deployment::rs_key(o) == deployment::rs_key(rs))
                })
        })
        .map(deployment::rs_key)
        .collect();
    let (puts, deletes) = replicaset::plan_slots(
        &replicasets,
        inputs.pods,
        inputs.slots,
        &ctx,
        inputs.nodes,
        &drain_budgets,
        &stateful,
        &settled,
    );
    actions.extend(puts.into_iter().map(Action::PutSlot));
    actions.extend(deletes.into_iter().map(Action::DeleteSlot));
    actions.extend(
        stateful
            .revision_deletes
            .into_iter()
            .map(|(namespace, name)| Action::DeleteRevision { namespace, name }),
    );
    actions
}
