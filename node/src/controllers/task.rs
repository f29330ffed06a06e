//! The controllers' task: reads a snapshot of the store and of observed state, runs
//! [`plan`](super::plan), and executes its actions. It wakes on store commits, on observed
//! changes (pod readiness drives rollouts) and on a tick, after a short debounce so a burst of
//! changes makes one round. A failed round is logged and retried on the next wake-up; the
//! plan is recomputed from scratch each time, so a missed event never matters.
//!
//! Writes happen only for actions, and the planner emits none on a converged cluster: every
//! write stays in the automerge history forever.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::wake::Wakeup;
use shoal_protocol::kinds::Deployment;
use shoal_protocol::{Kind, Resource};
use tokio_util::sync::CancellationToken;

use super::{Action, Inputs, Nodes, plan};
use crate::observed::Liveness;
use crate::observed::ObservedHandle;
use crate::pods::typed;
use crate::state::{StateError, StateHandle};

/// Errors of one controller round.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("reading the desired state: {0}")]
    Read(#[source] StateError),
    #[error("writing ReplicaSet {namespace}/{name}: {source}")]
    WriteReplicaSet {
        namespace: String,
        name: String,
        #[source]
        source: StateError,
    },
    #[error("deleting ReplicaSet {namespace}/{name}: {source}")]
    DeleteReplicaSet {
        namespace: String,
        name: String,
        #[source]
        source: StateError,
    },
    #[error("writing ControllerRevision {namespace}/{name}: {source}")]
    WriteRevision {
        namespace: String,
        name: String,
        #[source]
        source: StateError,
    },
    #[error("writing {puts} slots and removing {deletes}: {source}")]
    WriteSlots {
        puts: usize,
        deletes: usize,
        #[source]
        source: StateError,
    },
}

/// What the controllers' task needs.
#[derive(Clone)]
pub struct Controllers {
    pub state: StateHandle,
    pub observed: ObservedHandle,
    /// This node's name (membership always sees it alive, so it is always a candidate).
    pub node_name: String,
    /// A round at least this often, even without changes (time alone moves
    /// `minReadySeconds` and progress deadlines).
    pub tick: Duration,
    /// Wait this long after a wake-up before a round, so that a burst makes one round.
    pub debounce: Duration,
    /// Whether this node holds the controller role now; `None`: always (a node alone).
    pub leader: Option<Leader>,
    /// How long after a node is declared dead (or leaves) its slots move to other nodes.
    pub reschedule_grace: Duration,
    /// How long this process must be up before the slots of a registered node it has never
    /// heard (unknown, not dead) move: the bound for a machine that never comes back after
    /// the whole cluster restarted.
    pub unheard_grace: Duration,
    /// Where the rounds' work is told as events (scheduled, rescheduled, rollout steps).
    pub events: Option<crate::events::Events>,
    /// Since when this node has seen a majority of the known nodes, without a break.
    majority_since: std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    /// Since when this node has seen each node report its engine unavailable
    /// (`controllers::engine`).
    engine_seen: std::sync::Arc<std::sync::Mutex<BTreeMap<String, tokio::time::Instant>>>,
    /// The wall clock (timestamps, minReadySeconds): the system's, or the simulator's.
    pub clock: crate::time::SharedClock,
}

/// The default [`Controllers::unheard_grace`]: long enough for every machine of a cluster
/// that lost power together to boot and be heard, short enough that the pods of one that
/// never comes back do not stay pinned for long.
pub const UNHEARD_GRACE: Duration = Duration::from_secs(300);

/// Tells whether this node holds the controller role. The controllers are a singleton role:
/// two nodes that planned from different views (each sees its own pods' status) would undo
/// each other's writes, and every write stays in the document's history.
pub type Leader = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

impl Controllers {
    /// The controllers with default timings (tick 1 s, debounce 100 ms); only nodes that membership
    /// sees alive take new slots.
    pub fn new(state: StateHandle, observed: ObservedHandle, node_name: String) -> Controllers {
        Controllers {
            state,
            observed,
            node_name,
            tick: Duration::from_secs(1),
            debounce: Duration::from_millis(100),
            leader: None,
            reschedule_grace: Duration::from_secs(5),
            unheard_grace: UNHEARD_GRACE,
            events: None,
            majority_since: Default::default(),
            engine_seen: Default::default(),
            clock: crate::time::system_clock(),
        }
    }

    /// Gates the controllers by a leader rule.
    pub fn with_leader(mut self, leader: Leader) -> Controllers {
        self.leader = Some(leader);
        self
    }
}

/// Whether this node runs the controllers now: always without a leader rule, else only while
/// it holds the role.
pub fn should_act(c: &Controllers) -> bool {
    c.leader.as_ref().is_none_or(|is_leader| is_leader())
}

/// Runs the controllers until `shutdown`.
pub async fn run(c: Controllers, shutdown: CancellationToken) {
    let mut wake = Wakeup::new(&c.state, &c.observed, c.tick, c.debounce);
    tracing::info!(node = %c.node_name, "controllers started");
    while wake.next(&shutdown).await {
        if !should_act(&c) {
            continue;
        }
        match crate::metrics::time_scheduling(round(&c)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(actions = n, "controllers round done"),
            Err(e) => tracing::warn!(error = %e, "controllers round failed; retrying"),
        }
    }
    tracing::info!("controllers stopped");
}

/// One round: read, plan, execute. Returns the number of actions executed.
pub(crate) async fn round(c: &Controllers) -> Result<usize, ControllerError> {
    let now = c.clock.unix_now();
    let deployments = typed::<Deployment>(&c.state, Kind::Deployment, |r| match r {
        Resource::Deployment(d) => Some(d),
        _ => None,
    })
    .await
    .map_err(ControllerError::Read)?;
    let crate::pods::Owners {
        replicasets,
        pods,
        statefulsets,
        revisions,
    } = crate::pods::owners(&c.state)
        .await
        .map_err(ControllerError::Read)?;
    let slots = c.state.slots().await.map_err(ControllerError::Read)?;
    let members = c.observed.members();
    let observed = as_assigned(c.observed.pods(), &slots, &members);
    let node_objects: Vec<serde_json::Value> = c
        .state
        .list(Kind::Node, None)
        .await
        .map_err(ControllerError::Read)?
        .into_iter()
        .map(|o| o.value)
        .collect();
    let mut nodes = Nodes::from_members(
        members.values().map(|m| (&m.record, m.liveness)),
        &node_objects,
    );
    let registered: Vec<String> = node_objects
        .iter()
        .filter_map(|o| Some(o.pointer("/metadata/name")?.as_str()?.to_string()))
        .collect();
    nodes.known.extend(registered.iter().cloned());
    // A dead or departed member whose Node object was deleted (`shoal delete node`) is
    // forgotten: its slots go elsewhere at once, StatefulSet pods included.
    for (name, m) in &members {
        if matches!(m.liveness, Liveness::Dead | Liveness::Left) && !registered.contains(name) {
            nodes.known.remove(name);
            nodes.left.remove(name);
        }
    }
    nodes.unheard_reports = unheard_reports(&members, &nodes.known);
    let quorum = crate::nodes::Quorum::count(members.values(), &registered);
    // A node that has just come to see a majority (a partition healed, or it started) may not
    // have heard yet from every node it will hear in a moment: until it has seen the majority
    // for as long as a node takes to become movable, StatefulSet pods stay where they are.
    nodes.majority_settling = {
        // A short critical section, never held across an await.
        let mut since = c.majority_since.lock().unwrap_or_else(|p| p.into_inner());
        if !quorum.sees_majority() {
            *since = None;
        }
        let at = *since.get_or_insert_with(tokio::time::Instant::now);
        at.elapsed() < c.observed.timing().dead_after + c.reschedule_grace
    };
    nodes.movable = movable(
        &members,
        &registered,
        Graces {
            dead_after: c.observed.timing().dead_after,
            grace: c.reschedule_grace,
            unheard: c.unheard_grace,
        },
        c.observed.uptime(),
    );
    // A node without its container engine takes no new slot, and loses its slots after the
    // grace as a dead node does.
    super::engine::apply(&c.engine_seen, &members, c.reschedule_grace, &mut nodes);

    let actions = plan(&Inputs {
        deployments: &deployments,
        replicasets: &replicasets,
        pods: &pods,
        statefulsets: &statefulsets,
        revisions: &revisions,
        slots: &slots,
        observed: &observed,
        nodes: &nodes,
        quorum,
        now,
    });
    let n = actions.len();
    if n > 0 {
        let notes = c
            .events
            .as_ref()
            .map(|_| crate::events::controller_notes(&actions, &replicasets, &slots, &nodes));
        execute(c, actions).await?;
        if let (Some(events), Some(notes)) = (&c.events, notes) {
            events.record_all(notes);
        }
    }
    Ok(n)
}

/// The pods that known members which cannot be heard now (dead or departed) reported when
/// last heard, with those members. Pure.
pub(crate) fn unheard_reports(
    members: &BTreeMap<String, crate::observed::Member>,
    known: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (name, m) in members {
        if !matches!(m.liveness, Liveness::Dead | Liveness::Left) || !known.contains(name) {
            continue;
        }
        for key in m.record.pods.keys() {
            out.entry(key.clone()).or_default().insert(name.clone());
        }
    }
    out
}

/// The timings of [`movable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Graces {
    /// Membership's `dead_after`.
    pub dead_after: Duration,
    /// [`Controllers::reschedule_grace`].
    pub grace: Duration,
    /// [`Controllers::unheard_grace`].
    pub unheard: Duration,
}

/// The nodes whose slots go elsewhere: a member this process heard and then lost for longer
/// than `dead_after + grace`, one that left more than `grace` ago, and a registered node not
/// heard from since this process started (unknown, not dead) only once this process has
/// been up for the much longer `unheard` grace. A node never heard is no evidence of a lost
/// node: this process may not reach it yet (it started, or its LAN drops packets). Pure.
pub(crate) fn movable(
    members: &BTreeMap<String, crate::observed::Member>,
    registered: &[String],
    g: Graces,
    uptime: Duration,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, m) in members {
        let quiet = m.record.seen.map(|t| t.elapsed());
        let moves = match m.liveness {
            Liveness::Alive | Liveness::Suspect => false,
            Liveness::Left => quiet.is_none_or(|q| q >= g.grace),
            // Dead means heard, then lost; a record never heard is unknown.
            Liveness::Dead => quiet.is_some_and(|q| q >= g.dead_after + g.grace),
            Liveness::Unknown => uptime >= g.unheard,
        };
        if moves {
            out.insert(name.clone());
        }
    }
    if uptime >= g.unheard {
        for name in registered {
            if !members.contains_key(name) {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// Executes actions: ReplicaSet writes first (so that slots never name a ReplicaSet that
/// does not exist yet), then slots in one change, then ReplicaSet deletions.
async fn execute(c: &Controllers, actions: Vec<Action>) -> Result<(), ControllerError> {
    let (mut rs_puts, mut rs_deletes, mut slot_puts, mut slot_deletes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rev_puts, mut rev_deletes) = (Vec::new(), Vec::new());
    for a in actions {
        match a {
            Action::PutReplicaSet(rs) => rs_puts.push(*rs),
            Action::DeleteReplicaSet { namespace, name } => rs_deletes.push((namespace, name)),
            Action::PutRevision(r) => rev_puts.push(*r),
            Action::DeleteRevision { namespace, name } => rev_deletes.push((namespace, name)),
            Action::PutSlot(s) => slot_puts.push(s),
            Action::DeleteSlot(k) => slot_deletes.push(k),
        }
    }
    for rs in rs_puts {
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone();
        tracing::info!(replicaset = %format!("{namespace}/{name}"), replicas = rs.spec.replicas,
            revision = %super::revision(&rs), "writing ReplicaSet");
        let value = Resource::ReplicaSet(rs).to_value();
        c.state
            .apply_values(vec![(Kind::ReplicaSet, value)])
            .await
            .map_err(|source| ControllerError::WriteReplicaSet {
                namespace,
                name,
                source,
            })?;
    }
    for r in rev_puts {
        let namespace = r.metadata.namespace.clone().unwrap_or_default();
        let name = r.metadata.name.clone();
        tracing::info!(revision = %format!("{namespace}/{name}"), number = r.revision,
            "writing ControllerRevision");
        let value = Resource::ControllerRevision(r).to_value();
        c.state
            .apply_values(vec![(Kind::ControllerRevision, value)])
            .await
            .map_err(|source| ControllerError::WriteRevision {
                namespace,
                name,
                source,
            })?;
    }
    if !slot_puts.is_empty() || !slot_deletes.is_empty() {
        let (puts, deletes) = (slot_puts.len(), slot_deletes.len());
        tracing::debug!(puts, deletes, "writing slots");
        c.state
            .write_slots(slot_puts, slot_deletes)
            .await
            .map_err(|source| ControllerError::WriteSlots {
                puts,
                deletes,
                source,
            })?;
    }
    // Revisions go after the slots, whose pods may still name them.
    for (namespace, name) in rev_deletes {
        tracing::info!(revision = %format!("{namespace}/{name}"), "deleting ControllerRevision");
        c.state
            .delete(Kind::ControllerRevision, Some(&namespace), &name)
            .await
            .map_err(|source| ControllerError::WriteRevision {
                namespace,
                name,
                source,
            })?;
    }
    for (namespace, name) in rs_deletes {
        tracing::info!(replicaset = %format!("{namespace}/{name}"), "deleting ReplicaSet");
        c.state
            .delete(Kind::ReplicaSet, Some(&namespace), &name)
            .await
            .map_err(|source| ControllerError::DeleteReplicaSet {
                namespace,
                name,
                source,
            })?;
    }
    Ok(())
}

/// `reported` (every pod as the nodes report it) with each slot's pod as the node the slot
/// names reports it, when that node is heard: a pod that just moved is still reported, Ready,
/// by the node that ran it until that node stops it, which says nothing of the pod where it
/// goes; until its new node reports it, it has no status. Pure.
pub(crate) fn as_assigned(
    mut reported: super::PodStatuses,
    slots: &[shoal_protocol::cluster::Slot],
    members: &BTreeMap<String, crate::observed::Member>,
) -> super::PodStatuses {
    for s in slots {
        let Some(m) = members.get(&s.node) else {
            continue;
        };
        if !matches!(m.liveness, Liveness::Alive | Liveness::Suspect) {
            continue;
        }
        let key = s.key();
        match m.record.pods.get(&key) {
            Some(p) => {
                reported.insert(key, p.clone());
            }
            None => {
                reported.remove(&key);
            }
        }
    }
    reported
}
