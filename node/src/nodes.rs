//! The cluster's nodes: who belongs to the cluster, and how each is doing.
//!
//! Two sources, as everywhere in shoal:
//! - **registry** (desired state): every node writes a Node object about itself, its name and
//!   peer id, once when it first starts (and again if it finds it gone). It is small and
//!   changes only when a node joins or is deleted, so the document stays bounded. It is what
//!   makes a dead node still known after the whole cluster restarts, and what
//!   `shoal delete node` removes.
//! - **membership** (observed state, [`crate::observed`]): heartbeats, capacity, liveness.
//!
//! [`view`] joins both: registered nodes with their liveness (a registered node not heard
//! since this process started is `unknown`, never dead), and members not (yet) registered
//! while they are alive. A dead or departed node that was deleted from the registry is gone.
//!
//! A node's identity is its peer id, not its name: the registered Node object's peer-id
//! annotation names the owner of the name. [`keep_name`] registers this node only once it
//! holds the cluster's state, and [`claim_name`] decides: a name registered to another peer
//! id that is heard (another machine started with the same `--node-name`) is refused, and
//! `shoald` stops with a message saying so; a name whose owner stays unheard (a replaced
//! machine with a new key) is taken over; a name this node registered and then finds
//! registered to another peer is given up, never taken back, so that two live machines never
//! take turns. The agent acts on the slots of its node name only while [`acts_for_name`].
//!
//! Leader roles ([`keep_role`], deciding with the pure [`role_action`]): a node takes a role by
//! writing the role's next epoch into the desired state (a [`Lease`]), and acts only while the
//! newest epoch names it; a holder that sees a newer epoch stops at once (it is fenced). A role
//! moves only when its holder lets go of it: it is dead (not merely suspect), has left, is
//! degraded, or stays unknown to membership; then the alive, non-degraded member with the
//! lowest peer id, as each node sees it ([`controller`]), claims it. A healthy holder keeps
//! the role whoever else comes along, so differing views of membership never make it
//! ping-pong. Nothing is written while the holder stays.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_protocol::Kind;
use shoal_protocol::cluster::Lease;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::observed::{Liveness, Member, NodeRecord, ObservedHandle};
use crate::state::{StateError, StateHandle};

/// The annotation of a registered Node that holds its libp2p peer id.
pub const PEER_ID_ANNOTATION: &str = "shoal.dev/peer-id";

/// The annotation of a Node being drained: `true`, or `force`.
pub const DRAIN_ANNOTATION: &str = "shoal.dev/drain";

/// The name of the one role so far.
pub const CONTROLLER_ROLE: &str = "controller";

/// One node as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// When it registered (RFC 3339), if its registration has reached this node.
    pub created: Option<String>,
    pub peer_id: String,
    pub liveness: Liveness,
    /// When this node last heard from it (Unix seconds).
    pub last_seen: Option<i64>,
    /// Its last record, if this node has heard from it since it started.
    pub record: Option<NodeRecord>,
    pub roles: Vec<&'static str>,
    /// Cordoned: `spec.unschedulable` of its Node object.
    pub unschedulable: bool,
    /// Its pod subnet, as claimed in the desired state (`podnet`).
    pub pod_cidr: Option<String>,
    /// How the node that answers reaches that subnet (`host-gateway`, `vxlan`, `local`, or
    /// `this node`), when it knows.
    pub pod_route: Option<String>,
}

/// The Node object a node registers for itself.
pub fn registration(name: &str, peer_id: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/hostname": name },
            "annotations": { PEER_ID_ANNOTATION: peer_id },
        },
    })
}

/// The peer id a registered Node object names as the owner of its name.
pub fn registered_peer(node: &Value) -> Option<&str> {
    node.pointer("/metadata/annotations")
        .and_then(|a| a.get(PEER_ID_ANNOTATION))
        .and_then(Value::as_str)
}

/// Whether the agent of the node with peer id `me` may act on the slots of its node name,
/// given the peer id the registry names for that name (None: not registered yet). Pure: the
/// guard that keeps two machines with one name from running one node's pods even in a race.
pub fn acts_for_name(registered: Option<&str>, me: &str) -> bool {
    registered.is_none_or(|p| p.is_empty() || p == me)
}

/// How many times `dead_after` a node that holds the cluster's state waits to hear the
/// registered owner of its name before it takes the name over: the owner's heartbeats reach a
/// new node through gossip within a few beats if it is alive.
pub const TAKEOVER_WAIT: u32 = 3;

/// What [`claim_name`] decides about this node's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClaim {
    /// Not yet: this node does not hold the cluster's state, or it is still listening for the
    /// name's registered owner.
    Wait,
    /// The name is free, this node's own, or its owner is gone: (re)register it.
    Register,
    /// Another node owns the name: this one must not use it.
    Refuse { peer_id: String },
}

/// What [`claim_name`] reads.
#[derive(Debug, Clone, Copy)]
pub struct NameFacts<'a> {
    /// This node's peer id.
    pub me: &'a str,
    /// The peer id the registry names for this node's name; None: not registered.
    pub registered: Option<&'a str>,
    /// For how long this node has held the cluster's state (it founded the cluster, or its
    /// store lists at least one Node: it has synced with a peer); None: not yet.
    pub held_for: Option<Duration>,
    /// How long ago a machine with the registered peer id was last heard carrying this name;
    /// None: never.
    pub owner_quiet: Option<Duration>,
    /// Whether this process has registered the name already.
    pub claimed: bool,
    pub dead_after: Duration,
}

/// The decision about this node's name. Pure.
///
/// - Without the cluster's state nothing can be known: wait.
/// - Not registered, or registered to this peer id: register (again).
/// - Registered to another peer id after this process registered it: refuse (it lost a race
///   or was taken over while unheard; taking it back could flip between two live machines).
/// - Registered to another peer id heard within `dead_after`: refuse.
/// - Registered to another peer id not heard for `TAKEOVER_WAIT × dead_after` of holding the
///   state: take it over (a replaced machine: same name, new key).
pub fn claim_name(f: &NameFacts<'_>) -> NameClaim {
    let Some(held_for) = f.held_for else {
        return NameClaim::Wait;
    };
    let other = match f.registered {
        Some(p) if !p.is_empty() && p != f.me => p,
        _ => return NameClaim::Register,
    };
    let refuse = NameClaim::Refuse {
        peer_id: other.to_string(),
    };
    if f.claimed || f.owner_quiet.is_some_and(|q| q < f.dead_after) {
        return refuse;
    }
    if held_for >= f.dead_after * TAKEOVER_WAIT {
        NameClaim::Register
    } else {
        NameClaim::Wait
    }
}

/// Another node owns this node's name: `shoald` stops with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the node name \"{name}\" belongs to another node (peer id {peer_id}, at {address}), which \
     is running: give this machine a name of its own with --node-name (or node-name in the \
     config file), or stop the other node and wait until it is dead before reusing its name"
)]
pub struct NameTaken {
    pub name: String,
    pub peer_id: String,
    /// Where the other node was last heard from (its API and p2p addresses), or "an unknown
    /// address".
    pub address: String,
}

/// What [`keep_name`] needs.
pub struct NameKeeper {
    pub state: StateHandle,
    pub observed: ObservedHandle,
    pub name: String,
    pub peer_id: String,
    /// This node holds the cluster's state at once: it founded the cluster, or it starts
    /// without a join token (with its own state).
    pub founder: bool,
    /// True once the desired state has been synced with a peer (`replication`): then this
    /// node holds what the cluster holds, even when that lists no node yet (every node of a
    /// cluster rebuilt from a join token starts empty).
    pub synced: watch::Receiver<bool>,
    /// How often the name is checked (and the registration rewritten if it is gone).
    pub every: Duration,
    /// Set to true once the name is this node's (the heartbeat speaks only then).
    pub claimed: watch::Sender<bool>,
}

/// Claims this node's name (see [`claim_name`]) and keeps it registered: at once when it
/// holds the cluster's state, then every `every` (a node deleted while it was thought dead
/// registers again when it is back). Returns only on shutdown (None) or when the name belongs
/// to another node (Some, after logging it): the caller stops `shoald` then.
pub async fn keep_name(k: NameKeeper, shutdown: CancellationToken) -> Option<NameTaken> {
    let started = tokio::time::Instant::now();
    let mut held_since = k.founder.then_some(started);
    let mut claimed = false;
    let mut waiting_logged = false;
    let mut tick = tokio::time::interval(k.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tick.tick() => {}
        }
        let nodes = match k.state.list(Kind::Node, None).await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node registry; retrying");
                continue;
            }
        };
        if held_since.is_none() && (!nodes.is_empty() || *k.synced.borrow()) {
            held_since = Some(tokio::time::Instant::now());
        }
        let registered = nodes
            .iter()
            .find(|o| o.value.pointer("/metadata/name").and_then(Value::as_str) == Some(&k.name))
            .and_then(|o| registered_peer(&o.value));
        let owner_quiet = registered.and_then(|p| k.observed.rival_quiet(p));
        let decision = claim_name(&NameFacts {
            me: &k.peer_id,
            registered,
            held_for: held_since.map(|t| t.elapsed()),
            owner_quiet,
            claimed,
            dead_after: k.observed.timing().dead_after,
        });
        match decision {
            NameClaim::Wait => {
                if !waiting_logged {
                    tracing::info!(node = %k.name, "waiting for the cluster's state before registering this node");
                    waiting_logged = true;
                }
            }
            NameClaim::Register => {
                if registered.is_some_and(|p| p != k.peer_id) {
                    tracing::warn!(node = %k.name, previous = ?registered,
                        "taking over the node name: its registered owner has not been heard");
                }
                if let Err(e) = register(&k.state, &k.name, &k.peer_id).await {
                    tracing::warn!(error = %e, "cannot register this node; retrying");
                    continue;
                }
                claimed = true;
                k.claimed.send_if_modified(|c| !std::mem::replace(c, true));
            }
            NameClaim::Refuse { peer_id } => {
                let address = k
                    .observed
                    .rival(&peer_id)
                    .map(|r| format!("{} and p2p {}", r.address, r.p2p_address))
                    .unwrap_or_else(|| "an unknown address".to_string());
                let taken = NameTaken {
                    name: k.name.clone(),
                    peer_id,
                    address,
                };
                tracing::error!("{taken}");
                k.claimed.send_replace(false);
                return Some(taken);
            }
        }
    }
}

/// Writes this node's registration unless the same is there already (then nothing is
/// written).
pub async fn register(state: &StateHandle, name: &str, peer_id: &str) -> Result<(), StateError> {
    let mut object = registration(name, peer_id);
    if let Some(o) = state.get(Kind::Node, None, name).await? {
        let registered = o
            .value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(PEER_ID_ANNOTATION))
            .and_then(Value::as_str);
        if registered == Some(peer_id) {
            return Ok(());
        }
        // A cordon outlives a new node key.
        if let Some(spec) = o.value.get("spec").filter(|s| s.is_object()) {
            object["spec"] = spec.clone();
        }
    }
    state.apply_values(vec![(Kind::Node, object)]).await?;
    tracing::info!(node = %name, "registered this node");
    Ok(())
}

/// How many of the known nodes this node hears: the ground of the rule that at most one copy
/// of a StatefulSet pod ever runs (see `docs/architecture.md`, "StatefulSets: at most one
/// copy").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quorum {
    /// Nodes registered in the desired state, plus members heard but not registered yet (this
    /// one included). A dead or departed member whose Node object was deleted is forgotten.
    pub known: usize,
    /// Known nodes that membership sees alive (this one always is).
    pub alive: usize,
    /// Known nodes heard within the dead timeout: alive or suspect.
    pub heard: usize,
}

impl Quorum {
    /// Counts `members` against the registered node names. Pure.
    pub fn count<'a>(
        members: impl IntoIterator<Item = &'a Member>,
        registered: &[String],
    ) -> Quorum {
        let mut known: std::collections::BTreeSet<&str> =
            registered.iter().map(String::as_str).collect();
        let (mut alive, mut heard) = (0, 0);
        let mut seen: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        for m in members {
            if !seen.insert(m.record.name.as_str()) {
                continue;
            }
            if matches!(m.liveness, Liveness::Alive | Liveness::Suspect) {
                known.insert(m.record.name.as_str());
            } else if !known.contains(m.record.name.as_str()) {
                continue;
            }
            match m.liveness {
                Liveness::Alive => {
                    alive += 1;
                    heard += 1;
                }
                Liveness::Suspect => heard += 1,
                Liveness::Dead | Liveness::Left | Liveness::Unknown => {}
            }
        }
        Quorum {
            known: known.len(),
            alive,
            heard,
        }
    }

    /// Whether this node sees a majority of the known nodes alive: only then may it move a
    /// StatefulSet pod off a node it cannot hear.
    pub fn sees_majority(&self) -> bool {
        self.alive * 2 > self.known
    }

    /// Whether the nodes this node cannot hear are a majority of the known ones, so that one
    /// of them may move this node's StatefulSet pods: then this node must stop them. On an
    /// exact half neither side sees a majority, so neither moves anything and neither stops.
    pub fn must_fence(&self) -> bool {
        self.known.saturating_sub(self.heard) * 2 > self.known
    }
}

/// This node's [`Quorum`] now: membership against the registered Node objects. While this
/// process is younger than the dead timeout, a registered node it has not heard from yet
/// counts as heard: it is unknown, not lost (a restarted `shoald` must not stop its
/// StatefulSet pods before its peers could be heard).
pub async fn quorum(state: &StateHandle, observed: &ObservedHandle) -> Result<Quorum, StateError> {
    let registered: Vec<String> = state
        .list(Kind::Node, None)
        .await?
        .into_iter()
        .filter_map(|o| Some(o.value.pointer("/metadata/name")?.as_str()?.to_string()))
        .collect();
    let members = observed.members();
    let mut q = Quorum::count(members.values(), &registered);
    if observed.uptime() < observed.timing().dead_after {
        q.heard += registered
            .iter()
            .filter(|n| !members.contains_key(*n))
            .count();
    }
    Ok(q)
}

/// Membership's pick for the controller role among `members`: the alive one with the lowest
/// peer id (then name), among those not degraded (a failed vital task: see
/// [`crate::supervise`]). It is the node that claims the role when the role is free, not
/// necessarily its holder: a healthy holder keeps the role ([`role_action`]).
pub fn controller<'a>(members: impl IntoIterator<Item = &'a Member>) -> Option<String> {
    members
        .into_iter()
        .filter(|m| m.liveness == Liveness::Alive)
        .filter(|m| !m.record.conditions.contains_key(crate::supervise::DEGRADED))
        .min_by(|a, b| {
            (a.record.peer_id.as_str(), a.record.name.as_str())
                .cmp(&(b.record.peer_id.as_str(), b.record.name.as_str()))
        })
        .map(|m| m.record.name.clone())
}

/// Cordons (`true`) or uncordons a registered node: sets `spec.unschedulable` of its Node
/// object, which the scheduler reads. Returns whether the node is registered.
pub async fn set_unschedulable(
    state: &StateHandle,
    name: &str,
    unschedulable: bool,
) -> Result<bool, StateError> {
    set_schedule(state, name, unschedulable, None).await
}

/// [`set_unschedulable`], and starts a drain (`Some(force)`) or ends one (`None`: uncordon
/// ends it, a cordon keeps it).
pub async fn set_schedule(
    state: &StateHandle,
    name: &str,
    unschedulable: bool,
    drain: Option<bool>,
) -> Result<bool, StateError> {
    let Some(o) = state.get(Kind::Node, None, name).await? else {
        return Ok(false);
    };
    let mut v = o.value;
    let annotations = v["metadata"]["annotations"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut annotations = Value::Object(annotations);
    match (drain, unschedulable) {
        (Some(force), _) => {
            annotations[DRAIN_ANNOTATION] = json!(if force { "force" } else { "true" });
        }
        (None, false) => {
            if let Some(a) = annotations.as_object_mut() {
                a.remove(DRAIN_ANNOTATION);
            }
        }
        (None, true) => {}
    }
    v["metadata"]["annotations"] = annotations;
    if unschedulable {
        v["spec"]["unschedulable"] = json!(true);
    } else if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("unschedulable");
    }
    // Only what a registration holds: server-set metadata is the store's.
    let keep = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": v["metadata"]["name"],
            "labels": v["metadata"]["labels"],
            "annotations": v["metadata"]["annotations"],
        },
        "spec": v.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    state.apply_values(vec![(Kind::Node, keep)]).await?;
    Ok(true)
}

/// Keeps a leader role, as [`role_action`] decides: this node acts in the role while the
/// newest lease names it (and it is named and not degraded), and claims the role's next epoch
/// only when membership picks it ([`controller`]) and the role is free: no lease, or a holder
/// that is dead, has left, is degraded, or has stayed unknown to membership. `held` says the
/// epoch this node holds the role at, or None: the role's work runs only while it is Some.
/// Re-checked on every change of the desired state (a newer epoch merged from a peer fences
/// this node at once), of membership, and every `every`.
pub async fn keep_role(
    state: StateHandle,
    observed: ObservedHandle,
    role: &'static str,
    held: watch::Sender<Option<u64>>,
    named: watch::Receiver<bool>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let me = observed.local_name().to_string();
    let mut state_rx = state.subscribe();
    let mut observed_rx = observed.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The lease last seen, and since when (this node's clock).
    let mut seen: Option<(Lease, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = state_rx.changed() => if r.is_err() { break },
            r = observed_rx.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
        let members = observed.members();
        let at = tokio::time::Instant::now();
        let facts = |seen: &Option<(Lease, tokio::time::Instant)>| RoleFacts {
            lease: seen.as_ref().map(|(l, since)| {
                let holder = members.get(&l.holder);
                LeaseFacts {
                    epoch: l.epoch,
                    mine: l.holder == me,
                    holder: holder.map_or(Liveness::Unknown, |m| m.liveness),
                    degraded: holder.is_some_and(|m| {
                        m.record.conditions.contains_key(crate::supervise::DEGRADED)
                    }),
                    seen: *since,
                }
            }),
            picked: controller(members.values()).as_deref() == Some(me.as_str()),
            named: *named.borrow(),
            holds: held.borrow().is_some(),
            starting: observed.starting(),
            dead_after: observed.timing().dead_after,
            now: at,
        };
        let current = match state.leases().await {
            Ok(mut leases) => leases.remove(role),
            Err(e) => {
                tracing::warn!(error = %e, role, "cannot read leases");
                // Decide on the lease last seen: give the role up if that says so (a degraded
                // node's store may be what fails), else leave things as they are.
                if role_action(&facts(&seen)) == RoleAction::Off {
                    give_up(&held, role);
                }
                continue;
            }
        };
        if seen.as_ref().map(|(l, _)| l) != current.as_ref() {
            seen = current.clone().map(|l| (l, at));
        }
        let now = match role_action(&facts(&seen)) {
            RoleAction::Off => None,
            RoleAction::Hold { epoch } => Some(epoch),
            RoleAction::Claim { seen: epoch } => match state.claim_lease(role, &me, epoch).await {
                Ok(after) => {
                    let epoch = after.filter(|l| l.holder == me).map(|l| l.epoch);
                    if let Some(epoch) = epoch {
                        let previous = current.as_ref().map(|l| l.holder.as_str());
                        tracing::info!(role, epoch, previous, "took the role");
                    }
                    epoch
                }
                Err(e) => {
                    tracing::warn!(error = %e, role, "cannot claim the role");
                    None
                }
            },
        };
        if now.is_none() {
            give_up(&held, role);
        } else {
            held.send_if_modified(|h| std::mem::replace(h, now) != now);
        }
    }
    held.send_replace(None);
}

/// Sets `held` to None, saying so if this node held the role.
fn give_up(held: &watch::Sender<Option<u64>>, role: &str) {
    let mut was = None;
    held.send_if_modified(|h| {
        was = h.take();
        was.is_some()
    });
    if was.is_some() {
        tracing::info!(role, "gave up the role");
    }
}

/// The shortest tenure of a role: a lease is left alone for this long after this node first
/// saw it, even when its holder is dead, degraded or gone, while the nodes' views of
/// membership converge.
pub const CLAIM_HOLD: Duration = Duration::from_secs(1);

/// Whether a lease first seen at `since` (None: there is no lease) has stood for
/// [`CLAIM_HOLD`], so that it may be taken from a holder that lost it. Pure.
pub fn may_claim(since: Option<tokio::time::Instant>, now: tokio::time::Instant) -> bool {
    since.is_none_or(|s| now.saturating_duration_since(s) >= CLAIM_HOLD)
}

/// What [`role_action`] reads about the newest lease of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseFacts {
    pub epoch: u64,
    /// The lease names this node.
    pub mine: bool,
    /// The holder's liveness as membership sees it; `Unknown` also when membership has no
    /// record of it.
    pub holder: Liveness,
    /// The holder's record carries the [`crate::supervise::DEGRADED`] condition.
    pub degraded: bool,
    /// When this node first saw this lease (this node's clock).
    pub seen: tokio::time::Instant,
}

/// What [`role_action`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleFacts {
    /// The newest lease of the role; None: nobody has held it.
    pub lease: Option<LeaseFacts>,
    /// Membership picks this node ([`controller`]).
    pub picked: bool,
    /// This node has claimed its name ([`keep_name`]).
    pub named: bool,
    /// This process acts in the role now (it claimed or resumed the lease).
    pub holds: bool,
    /// This process started so recently that it may not have heard every alive peer yet
    /// ([`ObservedHandle::starting`]).
    pub starting: bool,
    pub dead_after: Duration,
    pub now: tokio::time::Instant,
}

/// What [`keep_role`] does about a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleAction {
    /// Act in the role: the newest lease names this node, at `epoch`.
    Hold { epoch: u64 },
    /// Write the role's next epoch for this node, if the newest is still `seen` (0: none).
    Claim { seen: u64 },
    /// Do not act in the role (give it up if this node held it).
    Off,
}

/// The decision about a leader role. Pure.
///
/// A role moves only when its holder lets go of it, so that two nodes whose views of
/// membership differ for a while never take it from each other in turn:
/// - The lease names this node: hold it while this node is named and not degraded; else give
///   it up (the others see the condition, or stop hearing a node that is not named, and one
///   of them takes the role). A lease found on starting (from before a restart) is resumed
///   only once starting is over: by then this node has had time to sync, and to see a newer
///   epoch that names another node.
/// - Otherwise only the node membership picks ([`controller`]: the alive, non-degraded
///   member with the lowest peer id), and only once named, may claim; and it claims
///   - at once when there is no lease;
///   - never while it is starting (it may not have heard the holder yet);
///   - from a holder that is dead, has left, or is degraded, once the lease has stood for
///     [`CLAIM_HOLD`] ([`may_claim`]);
///   - from a holder unknown to membership once the lease has stood for `dead_after` too (a
///     holder that is alive is heard within that);
///   - never from a holder that is alive or suspect and healthy, even when this node has a
///     lower peer id: a suspect holder may be heard again in a moment, and a dead one is
///     taken over then.
pub fn role_action(f: &RoleFacts) -> RoleAction {
    match f.lease {
        Some(l) if l.mine => {
            if f.named && !l.degraded && (f.holds || !f.starting) {
                RoleAction::Hold { epoch: l.epoch }
            } else {
                RoleAction::Off
            }
        }
        _ if !f.named || !f.picked => RoleAction::Off,
        None => RoleAction::Claim { seen: 0 },
        Some(_) if f.starting => RoleAction::Off,
        Some(l) => {
            let stood = f.now.saturating_duration_since(l.seen);
            let free = match l.holder {
                Liveness::Dead | Liveness::Left => true,
                Liveness::Alive | Liveness::Suspect => l.degraded,
                Liveness::Unknown => stood >= f.dead_after,
            };
            if free && may_claim(Some(l.seen), f.now) {
                RoleAction::Claim { seen: l.epoch }
            } else {
                RoleAction::Off
            }
        }
    }
}

/// Every node this node knows of, by name: the registry joined with membership, with the
/// holders of the leases.
pub async fn view(
    state: &StateHandle,
    observed: &ObservedHandle,
) -> Result<BTreeMap<String, NodeView>, StateError> {
    let registered = state.list(Kind::Node, None).await?;
    let leases = state.leases().await?;
    let mut out = join(
        registered.iter().map(|o| &o.value),
        observed.members(),
        observed.unheard(),
        &leases,
    );
    let subnets = state.pod_subnets().await?;
    if let Some(range) = subnets
        .range
        .as_deref()
        .and_then(|r| crate::podnet::subnet::PodRange::parse(r).ok())
    {
        // A node's lowest claim is the one it keeps (`podnet::subnet::decide`).
        for (index, node) in subnets.claims.iter().rev() {
            if let (Some(v), Some(s)) = (out.get_mut(node), range.subnet(*index)) {
                v.pod_cidr = Some(s.to_string());
            }
        }
    }
    Ok(out)
}

/// The join of [`view`]. Pure.
pub fn join<'a>(
    registered: impl IntoIterator<Item = &'a Value>,
    members: BTreeMap<String, Member>,
    unheard: Liveness,
    leases: &BTreeMap<String, Lease>,
) -> BTreeMap<String, NodeView> {
    let mut out = BTreeMap::new();
    for v in registered {
        let Some(name) = v.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let created = v
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .map(str::to_string);
        let peer_id = v
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(PEER_ID_ANNOTATION))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        out.insert(
            name.to_string(),
            NodeView {
                name: name.to_string(),
                created,
                peer_id,
                liveness: unheard,
                last_seen: None,
                record: None,
                roles: Vec::new(),
                unschedulable: v.pointer("/spec/unschedulable").and_then(Value::as_bool)
                    == Some(true),
                pod_cidr: None,
                pod_route: None,
            },
        );
    }
    for (name, m) in members {
        let registered = out.contains_key(&name);
        if !registered && !matches!(m.liveness, Liveness::Alive | Liveness::Suspect) {
            continue;
        }
        let entry = out.entry(name.clone()).or_insert_with(|| NodeView {
            name: name.clone(),
            created: None,
            peer_id: String::new(),
            liveness: m.liveness,
            last_seen: None,
            record: None,
            roles: Vec::new(),
            unschedulable: false,
            pod_cidr: None,
            pod_route: None,
        });
        entry.liveness = m.liveness;
        entry.last_seen = m.last_seen;
        if !m.record.peer_id.is_empty() {
            entry.peer_id = m.record.peer_id.clone();
        }
        entry.record = Some(m.record);
    }
    for lease in leases.values() {
        if let Some(node) = out.get_mut(&lease.holder)
            && lease.role == CONTROLLER_ROLE
        {
            node.roles.push(CONTROLLER_ROLE);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn member(name: &str, peer: &str, liveness: Liveness) -> Member {
        Member {
            record: NodeRecord {
                name: name.into(),
                peer_id: peer.into(),
                ..NodeRecord::default()
            },
            liveness,
            last_seen: Some(100),
        }
    }

    #[test]
    fn a_role_taken_just_now_is_left_alone_for_a_moment() {
        let t0 = tokio::time::Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let cases = [
            (None, ms(0), true, "no lease"),
            (Some(t0), ms(0), false, "taken this instant"),
            (
                Some(t0),
                ms(20),
                false,
                "taken 20 ms ago: views may still differ",
            ),
            (Some(t0), ms(999), false, "just under the hold"),
            (Some(t0), ms(1000), true, "stood for the hold"),
            (Some(t0), ms(60_000), true, "a holder long gone"),
        ];
        for (since, now, want, what) in cases {
            assert_eq!(may_claim(since, now), want, "{what}");
        }
    }

    /// Every case of the role decision.
    #[test]
    fn a_role_moves_only_when_its_holder_lets_go() {
        use Liveness::{Alive, Dead, Left, Suspect, Unknown};
        use RoleAction::{Claim, Hold, Off};
        let now = tokio::time::Instant::now() + Duration::from_secs(60);
        let dead_after = Duration::from_secs(3);
        let ms = Duration::from_millis;
        // The lease of another node, at epoch 4, first seen `stood` ago.
        let other = |holder, degraded, stood| LeaseFacts {
            epoch: 4,
            mine: false,
            holder,
            degraded,
            seen: now - stood,
        };
        let mine = |degraded| LeaseFacts {
            epoch: 4,
            mine: true,
            holder: Alive,
            degraded,
            seen: now - ms(60_000),
        };
        let long = ms(60_000);
        // (case, lease, picked, named, starting, decision); this process holds the role
        // whenever the lease is its own, except in the cases of `resumed` below.
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, Option<LeaseFacts>, bool, bool, bool, RoleAction)> = vec![
            (
                "no lease, picked",
                None,
                true,
                true,
                false,
                Claim { seen: 0 },
            ),
            (
                "no lease, picked, starting",
                None,
                true,
                true,
                true,
                Claim { seen: 0 },
            ),
            ("no lease, not picked", None, false, true, false, Off),
            ("no lease, picked, not named", None, true, false, false, Off),
            (
                "holder, picked",
                Some(mine(false)),
                true,
                true,
                false,
                Hold { epoch: 4 },
            ),
            (
                "holder, another node has a lower peer id now",
                Some(mine(false)),
                false,
                true,
                false,
                Hold { epoch: 4 },
            ),
            (
                "holder, starting",
                Some(mine(false)),
                false,
                true,
                true,
                Hold { epoch: 4 },
            ),
            (
                "holder, degraded",
                Some(mine(true)),
                false,
                true,
                false,
                Off,
            ),
            (
                "holder, not named",
                Some(mine(false)),
                true,
                false,
                false,
                Off,
            ),
            (
                "alive healthy holder, picked (issue 15)",
                Some(other(Alive, false, long)),
                true,
                true,
                false,
                Off,
            ),
            (
                "suspect healthy holder, picked",
                Some(other(Suspect, false, long)),
                true,
                true,
                false,
                Off,
            ),
            (
                "dead holder, picked",
                Some(other(Dead, false, long)),
                true,
                true,
                false,
                Claim { seen: 4 },
            ),
            (
                "dead holder, lease seen just now",
                Some(other(Dead, false, ms(500))),
                true,
                true,
                false,
                Off,
            ),
            (
                "dead holder, lease stood for the hold",
                Some(other(Dead, false, CLAIM_HOLD)),
                true,
                true,
                false,
                Claim { seen: 4 },
            ),
            (
                "dead holder, not picked",
                Some(other(Dead, false, long)),
                false,
                true,
                false,
                Off,
            ),
            (
                "dead holder, picked, not named",
                Some(other(Dead, false, long)),
                true,
                false,
                false,
                Off,
            ),
            (
                "dead holder, picked, starting",
                Some(other(Dead, false, long)),
                true,
                true,
                true,
                Off,
            ),
            (
                "holder left, picked",
                Some(other(Left, false, long)),
                true,
                true,
                false,
                Claim { seen: 4 },
            ),
            (
                "holder left, not picked",
                Some(other(Left, false, long)),
                false,
                true,
                false,
                Off,
            ),
            (
                "degraded alive holder, picked",
                Some(other(Alive, true, long)),
                true,
                true,
                false,
                Claim { seen: 4 },
            ),
            (
                "degraded suspect holder, picked",
                Some(other(Suspect, true, long)),
                true,
                true,
                false,
                Claim { seen: 4 },
            ),
            (
                "degraded holder, lease seen just now",
                Some(other(Alive, true, ms(20))),
                true,
                true,
                false,
                Off,
            ),
            (
                "degraded holder, not picked",
                Some(other(Alive, true, long)),
                false,
                true,
                false,
                Off,
            ),
            (
                "unknown holder, not yet unknown for dead-after",
                Some(other(Unknown, false, ms(2_999))),
                true,
                true,
                false,
                Off,
            ),
            (
                "unknown holder for dead-after",
                Some(other(Unknown, false, dead_after)),
                true,
                true,
                false,
                Claim { seen: 4 },
            ),
            (
                "unknown holder, starting",
                Some(other(Unknown, false, long)),
                true,
                true,
                true,
                Off,
            ),
        ];
        for (case, lease, picked, named, starting, want) in table {
            let got = role_action(&RoleFacts {
                lease,
                picked,
                named,
                holds: lease.is_some_and(|l| l.mine),
                starting,
                dead_after,
                now,
            });
            assert_eq!(got, want, "{case}");
        }
        // Its own lease, found by a process that does not hold the role (it restarted, or
        // gave the role up while degraded or not named).
        let resumed = [
            ("own lease from before a restart, starting", true, Off),
            (
                "own lease from before a restart, started",
                false,
                Hold { epoch: 4 },
            ),
        ];
        for (case, starting, want) in resumed {
            let got = role_action(&RoleFacts {
                lease: Some(mine(false)),
                picked: true,
                named: true,
                holds: false,
                starting,
                dead_after,
                now,
            });
            assert_eq!(got, want, "{case}");
        }
    }

    /// Every case of the name decision.
    #[test]
    fn a_node_claims_its_name_only_from_an_owner_that_is_gone() {
        let s = Duration::from_secs;
        let dead_after = s(3);
        let refuse = || NameClaim::Refuse {
            peer_id: "other".into(),
        };
        // (case, registered, held for, owner last heard, claimed already, decision)
        #[allow(clippy::type_complexity)]
        let table: Vec<(
            &str,
            Option<&str>,
            Option<Duration>,
            Option<Duration>,
            bool,
            NameClaim,
        )> = vec![
            (
                "no state yet",
                Some("other"),
                None,
                Some(s(0)),
                false,
                NameClaim::Wait,
            ),
            (
                "no state, nothing registered",
                None,
                None,
                None,
                false,
                NameClaim::Wait,
            ),
            (
                "free name",
                None,
                Some(s(0)),
                None,
                false,
                NameClaim::Register,
            ),
            (
                "own name",
                Some("me"),
                Some(s(0)),
                None,
                false,
                NameClaim::Register,
            ),
            (
                "own name, a rival heard",
                Some("me"),
                Some(s(0)),
                Some(s(0)),
                true,
                NameClaim::Register,
            ),
            (
                "deleted while this node was away",
                None,
                Some(s(100)),
                None,
                true,
                NameClaim::Register,
            ),
            (
                "owner heard now",
                Some("other"),
                Some(s(1)),
                Some(s(0)),
                false,
                refuse(),
            ),
            (
                "owner heard 2.9 s ago",
                Some("other"),
                Some(s(60)),
                Some(Duration::from_millis(2900)),
                false,
                refuse(),
            ),
            (
                "owner not heard yet, listening",
                Some("other"),
                Some(s(5)),
                None,
                false,
                NameClaim::Wait,
            ),
            (
                "owner never heard: replaced machine",
                Some("other"),
                Some(s(9)),
                None,
                false,
                NameClaim::Register,
            ),
            (
                "owner heard, then lost for dead-after",
                Some("other"),
                Some(s(9)),
                Some(s(3)),
                false,
                NameClaim::Register,
            ),
            (
                "owner lost, still listening",
                Some("other"),
                Some(s(8)),
                Some(s(4)),
                false,
                NameClaim::Wait,
            ),
            (
                "taken after this node claimed it",
                Some("other"),
                Some(s(100)),
                None,
                true,
                refuse(),
            ),
        ];
        for (case, registered, held_for, owner_quiet, claimed, want) in table {
            let got = claim_name(&NameFacts {
                me: "me",
                registered,
                held_for,
                owner_quiet,
                claimed,
                dead_after,
            });
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn the_agent_acts_only_for_its_own_registration() {
        for (registered, acts) in [
            (None, true),
            (Some(""), true),
            (Some("me"), true),
            (Some("other"), false),
        ] {
            assert_eq!(acts_for_name(registered, "me"), acts, "{registered:?}");
        }
        let node = registration("pi", "me");
        assert_eq!(registered_peer(&node), Some("me"));
        assert_eq!(registered_peer(&json!({"metadata": {"name": "pi"}})), None);
    }

    /// An unknown node (registered, never heard) is known but neither alive nor heard.
    #[test]
    fn quorum_counts_unknown_nodes_as_known_and_unheard() {
        let ms = [
            member("a", "pa", Liveness::Alive),
            member("b", "pb", Liveness::Unknown),
        ];
        let registered = ["a".to_string(), "b".to_string(), "c".to_string()];
        let q = Quorum::count(ms.iter(), &registered);
        assert_eq!(
            q,
            Quorum {
                known: 3,
                alive: 1,
                heard: 1
            }
        );
        assert!(!q.sees_majority());
        assert!(q.must_fence());
    }

    #[test]
    fn the_controller_is_the_alive_member_with_the_lowest_peer_id() {
        let ms = [
            member("a", "p3", Liveness::Alive),
            member("b", "p1", Liveness::Dead),
            member("c", "p2", Liveness::Alive),
        ];
        assert_eq!(controller(ms.iter()).as_deref(), Some("c"));
        assert_eq!(controller([].iter()), None);
    }

    #[test]
    fn the_controller_is_never_a_degraded_member() {
        let degraded = |name, peer| {
            let mut m = member(name, peer, Liveness::Alive);
            m.record.conditions.insert(
                crate::supervise::DEGRADED.into(),
                "task state failed".into(),
            );
            m
        };
        let mut engine_down = member("d", "p0", Liveness::Alive);
        engine_down
            .record
            .conditions
            .insert("EngineUnavailable".into(), "no engine".into());
        let cases = [
            (
                vec![degraded("a", "p1"), member("c", "p2", Liveness::Alive)],
                Some("c"),
            ),
            (vec![degraded("a", "p1"), degraded("c", "p2")], None),
            (
                vec![
                    degraded("a", "p1"),
                    member("b", "p3", Liveness::Alive),
                    member("c", "p2", Liveness::Suspect),
                ],
                Some("b"),
            ),
            // Another condition is no reason to pass a node over.
            (
                vec![engine_down, member("c", "p2", Liveness::Alive)],
                Some("d"),
            ),
        ];
        for (ms, want) in cases {
            assert_eq!(controller(ms.iter()).as_deref(), want, "{ms:?}");
        }
    }

    /// One node's store and membership for the tests of [`keep_role`]: fast timing, a
    /// heartbeat that gossips nowhere, and the sender through which peers' gossip arrives.
    struct RoleBench {
        _dir: tempfile::TempDir,
        stop: CancellationToken,
        state: StateHandle,
        timing: crate::observed::Timing,
        obs: ObservedHandle,
        gossip: tokio::sync::mpsc::Sender<crate::observed::Inbound>,
    }

    fn role_bench(name: &str, peer: &str) -> RoleBench {
        use crate::observed::{self, Timing};
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let state = crate::state::open_for_test(dir.path(), &stop);
        let timing = Timing {
            heartbeat: Duration::from_millis(50),
            suspect_after: Duration::from_millis(200),
            dead_after: Duration::from_millis(300),
            full_every: 5,
        };
        let me = NodeRecord {
            name: name.into(),
            peer_id: peer.into(),
            ..NodeRecord::default()
        };
        let (obs, _reporter, hb) = observed::start(me, timing, 16);
        struct Quiet;
        #[async_trait::async_trait]
        impl observed::Publish for Quiet {
            async fn publish(&self, _: Vec<u8>) {}
        }
        let (gossip, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(
            hb.with_gossip(std::sync::Arc::new(Quiet), rx)
                .run(stop.clone()),
        );
        RoleBench {
            _dir: dir,
            stop,
            state,
            timing,
            obs,
            gossip,
        }
    }

    /// Runs [`keep_role`] for the controller role on `state` and `obs`, named, every 50 ms;
    /// returns the epoch it holds the role at.
    fn start_role(
        state: &StateHandle,
        obs: &ObservedHandle,
        stop: &CancellationToken,
    ) -> watch::Receiver<Option<u64>> {
        let (held_tx, held) = watch::channel(None);
        let (_named_tx, named) = watch::channel(true);
        tokio::spawn(keep_role(
            state.clone(),
            obs.clone(),
            CONTROLLER_ROLE,
            held_tx,
            named,
            Duration::from_millis(50),
            stop.clone(),
        ));
        held
    }

    /// keep_role on one node with scripted peers: it takes the role when membership picks it,
    /// keeps it when a peer with a lower peer id comes alive, gives it up (fenced) when that
    /// peer writes a newer epoch anyway (as after a healed partition), stays off while the
    /// newer epoch names the alive peer, and takes the next epoch when the peer leaves.
    #[tokio::test]
    async fn a_node_takes_gives_up_and_retakes_its_role() {
        use crate::observed::{Inbound, Message};
        let RoleBench {
            _dir,
            stop,
            state,
            timing: _,
            obs,
            gossip,
        } = role_bench("n1", "p5");
        let mut held = start_role(&state, &obs, &stop);
        let until = |held: &mut watch::Receiver<Option<u64>>, want: Option<u64>| {
            let mut held = held.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), held.wait_for(|h| *h == want))
                    .await
                    .unwrap_or_else(|_| panic!("role never became {want:?}"))
                    .unwrap();
            }
        };
        // Alone: it takes epoch 1.
        until(&mut held, Some(1)).await;
        // A peer with a lower peer id comes alive and beats every 50 ms until it leaves.
        let (leave, mut leaving) = watch::channel(false);
        let beats = {
            let gossip = gossip.clone();
            tokio::spawn(async move {
                for version in 1.. {
                    let left = *leaving.borrow_and_update();
                    let r = NodeRecord {
                        name: "n0".into(),
                        peer_id: "p1".into(),
                        version,
                        left,
                        ..NodeRecord::default()
                    };
                    let data = Message::Record(r).encode().unwrap();
                    gossip.send(Inbound::Gossip { data }).await.unwrap();
                    if left {
                        break;
                    }
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), leaving.changed()).await;
                }
            })
        };
        let peer_is = |want: Liveness| {
            let obs = obs.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), async {
                    while obs.members().get("n0").map(|m| m.liveness) != Some(want) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("the peer never became {want:?}"));
            }
        };
        peer_is(Liveness::Alive).await;
        assert_eq!(controller(obs.members().values()).as_deref(), Some("n0"));
        // This node holds the role and is healthy: it keeps it (past the hold, too).
        tokio::time::sleep(CLAIM_HOLD + Duration::from_millis(200)).await;
        assert_eq!(*held.borrow(), Some(1), "a healthy holder keeps its role");
        // The peer claims the next epoch anyway (as after a healed partition): this node is
        // fenced, and leaves the role to the alive peer.
        let taken = state
            .claim_lease(CONTROLLER_ROLE, "n0", 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.epoch, 2);
        until(&mut held, None).await;
        tokio::time::sleep(CLAIM_HOLD + Duration::from_millis(200)).await;
        assert_eq!(obs.members()["n0"].liveness, Liveness::Alive);
        assert_eq!(*held.borrow(), None);
        // The peer leaves: this node takes the next epoch.
        leave.send_replace(true);
        beats.await.unwrap();
        peer_is(Liveness::Left).await;
        until(&mut held, Some(3)).await;
        assert_eq!(state.leases().await.unwrap()[CONTROLLER_ROLE].holder, "n1");
        stop.cancel();
    }

    /// Issue 15 ("lease ping-pong"): node B holds the role and stays alive; node A, with a
    /// lower peer id (membership's pick), starts: A must leave the role to B, however long
    /// B has held it.
    #[tokio::test]
    async fn a_node_with_a_lower_peer_id_leaves_the_role_to_its_alive_holder() {
        use crate::observed::{Inbound, Message};
        let RoleBench {
            _dir,
            stop,
            state,
            timing,
            obs,
            gossip,
        } = role_bench("a", "p1");
        // B holds the role, and beats every 50 ms.
        let taken = state.claim_lease(CONTROLLER_ROLE, "b", 0).await.unwrap();
        assert_eq!(taken.map(|l| l.epoch), Some(1));
        let beats = {
            let (gossip, stop) = (gossip.clone(), stop.clone());
            tokio::spawn(async move {
                for version in 1.. {
                    let b = NodeRecord {
                        name: "b".into(),
                        peer_id: "p5".into(),
                        version,
                        ..NodeRecord::default()
                    };
                    let data = Message::Record(b).encode().unwrap();
                    if gossip.send(Inbound::Gossip { data }).await.is_err() || stop.is_cancelled() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let alive = |o: &ObservedHandle| {
            o.members()
                .get("b")
                .is_some_and(|m| m.liveness == Liveness::Alive)
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while !alive(&obs) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("b never heard");
        let held = start_role(&state, &obs, &stop);
        // Past A's start (dead_after) and the lease's hold (CLAIM_HOLD), with margin.
        let deadline = tokio::time::Instant::now() + timing.dead_after + CLAIM_HOLD * 2;
        while tokio::time::Instant::now() < deadline {
            assert!(alive(&obs), "b stopped beating");
            assert_eq!(*held.borrow(), None, "A took the role from an alive holder");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lease = state.leases().await.unwrap()[CONTROLLER_ROLE].clone();
        assert_eq!((lease.holder.as_str(), lease.epoch), ("b", 1));
        stop.cancel();
        beats.await.unwrap();
    }

    /// A node that becomes degraded gives its role up (with its next heartbeat, which carries
    /// the condition), and takes it back once the condition is cleared.
    #[tokio::test]
    async fn a_degraded_node_gives_up_its_role() {
        use crate::observed::{self, Conditions, Timing};
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let state = crate::state::open_for_test(dir.path(), &stop);
        let timing = Timing {
            heartbeat: Duration::from_millis(50),
            suspect_after: Duration::from_millis(200),
            dead_after: Duration::from_millis(300),
            full_every: 5,
        };
        let me = NodeRecord {
            name: "n1".into(),
            peer_id: "p5".into(),
            ..NodeRecord::default()
        };
        let (obs, _reporter, hb) = observed::start(me, timing, 16);
        let (conditions, conditions_rx) = Conditions::new();
        tokio::spawn(hb.with_conditions(conditions_rx).run(stop.clone()));
        let held = start_role(&state, &obs, &stop);
        let until = |want: Option<u64>| {
            let mut held = held.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), held.wait_for(|h| *h == want))
                    .await
                    .unwrap_or_else(|_| panic!("role never became {want:?}"))
                    .unwrap();
            }
        };
        until(Some(1)).await;
        conditions.set(crate::supervise::DEGRADED, "task agent ended unexpectedly");
        until(None).await;
        // Nobody else is there: the role stays free while this node is degraded.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*held.borrow(), None);
        conditions.clear(crate::supervise::DEGRADED);
        until(Some(1)).await;
        stop.cancel();
    }

    #[test]
    fn registry_and_membership_join() {
        let mut reg_b = registration("b", "pb");
        reg_b["metadata"]["creationTimestamp"] = json!("2026-11-25T20:00:00Z");
        let registered = [registration("a", "pa"), reg_b, registration("gone", "pg")];
        let mut members = BTreeMap::new();
        for m in [
            member("a", "pa", Liveness::Alive),
            member("b", "pb", Liveness::Dead),
            // Alive but not registered yet (its registration is on its way): shown.
            member("new", "pn", Liveness::Alive),
            // Dead and deleted from the registry: forgotten.
            member("old", "po", Liveness::Dead),
        ] {
            members.insert(m.record.name.clone(), m);
        }
        let lease = Lease {
            role: CONTROLLER_ROLE.into(),
            epoch: 2,
            holder: "a".into(),
            since: 0,
        };
        let leases = BTreeMap::from([(CONTROLLER_ROLE.to_string(), lease)]);
        let view = join(registered.iter(), members, Liveness::Unknown, &leases);
        assert_eq!(
            view.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "gone", "new"]
        );
        assert_eq!(view["a"].roles, [CONTROLLER_ROLE]);
        assert_eq!(view["b"].liveness, Liveness::Dead);
        assert_eq!(view["b"].created.as_deref(), Some("2026-11-25T20:00:00Z"));
        // Registered, never heard since this node started: unknown, not dead.
        assert_eq!(view["gone"].liveness, Liveness::Unknown);
        assert_eq!(view["gone"].last_seen, None);
        assert_eq!(view["gone"].peer_id, "pg");
        assert!(view["gone"].record.is_none());
        assert_eq!(view["new"].liveness, Liveness::Alive);
    }
}
