//! The node agent: runs the pod slots assigned to this node as containers and reports their
//! status.
//!
//! Role: one task ([`Agent::run`]) reconciles, every second and whenever desired state changes,
//! the slots whose `node` is this node with the containers the engine reports under this
//! node's labels (`shoal.cluster`, `shoal.node`). The decisions are pure functions
//! ([`plan::select`], [`plan::plan`], [`status::pod_status`], [`spec::container_spec`]); the task
//! executes their actions idempotently, so a missed event or a failed call is repaired on the
//! next round. Containers are never restarted just because `shoald` restarted: every round
//! adopts what it finds by labels.
//!
//! Owns: the per-pod memory (restart counts, back-off, probe verdicts, condition times), the
//! pod directories `<data_dir>/pods/<ns>_<pod>/` (volumes, `agent.json`), the probe workers,
//! and the background stops/removals.
//!
//! Talks to: the state store (slots, templates, ConfigMaps, Secrets; its change
//! notifications), the runtime through [`Engine`], and observed state through
//! [`PodReporter`] (the whole set of this node's pods after each round).
//!
//! The pod network (`shoal-<node>-<cluster8>`) is made with the first pod; its gateway (the
//! node's own address on the bridge) and subnet are published through [`Agent::pod_network`]
//! to the DNS server and the proxies, which listen there for the pods, and, when the node's
//! DNS is on, every container is made with that gateway as its resolver, the search path
//! `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5` ([`spec::resolv_settings`]).
//! Containers made before (or with DNS off) keep the engine's resolver: the resolver is no
//! part of the template hash, so it never recreates a running container.
//!
//! StatefulSet pods are guarded so that at most one copy of each ever runs, even in a
//! partition (the rules are in `plan.rs`, "StatefulSets: at most one copy"): [`watch_fence`]
//! evaluates this node's [`nodes::Quorum`] every 250 ms into a [`FenceState`], and the agent
//! ([`Agent::with_fencing`]) stops its StatefulSet pods while the nodes it cannot hear are a
//! majority, starts none until it has heard a majority again for `dead_after`, starts none
//! another node reports, and reports those it is still stopping as `Terminating`.
//!
//! When the engine stops answering (`engine.rs`), every pod of the node is reported not Ready
//! with reason `EngineUnavailable` within a round, the node gets the `EngineUnavailable`
//! condition ([`Agent::with_conditions`]), and when the engine is back the condition is cleared
//! and the rounds go on as before: no reconnection is needed. After `shoald` starts, no
//! container is started until the boot rule allows it (`boot.rs`, [`Agent::with_boot`]): the
//! desired state must first be brought up to date with a peer, since the pods of a host that
//! was off may have moved away.

pub mod boot;
pub mod engine;
pub mod plan;
pub mod probe;
pub mod spec;
pub mod status;
pub mod volumes;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::Kind;
use shoal_protocol::Resource;
use shoal_protocol::kinds::{Probe, PullPolicy};
use shoal_protocol::status::PodStatus;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::plan::{Action, Guard, Mode, Persisted, PodInput, PodMemory, Retry, Selection};
use self::probe::{ProbeEvent, ProbeKind, ProbeTarget};
use self::spec::{ConfigSources, NodeContext, SourceKind, labels};
use crate::images::pull::Verdict;
use crate::images::reference::ImageRef;
use crate::images::{Images, Want};
use crate::nodes;
use crate::observed::{Conditions, ObservedHandle, PodReporter};
use crate::pods::{DesiredPod, desired_pods};
use crate::runtime::{ContainerState, Engine, NetworkSpec, PodNetwork, Runtime, RuntimeError};
use crate::state::StateHandle;

/// How often the agent reconciles without being woken.
pub const RESYNC: Duration = Duration::from_secs(1);
/// An unchanged status set is still sent this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// The name of the file in a pod directory that keeps what outlives `shoald`.
pub const MEMORY_FILE: &str = "agent.json";
/// How often the agent inspects its pod network again once it knows the gateway (a network
/// removed and made again behind its back gets a new one).
const NETWORK_RECHECK: Duration = Duration::from_secs(30);

/// What the agent needs to know about its node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    /// Where ports are published; the pods' `hostIP`.
    pub advertise: IpAddr,
    /// Size of the probe results channel.
    pub channel_size: usize,
    /// The cluster domain when this node's DNS server is on: containers then use it (at the
    /// pod network's gateway) with Kubernetes' search path. `None`: the engine's default DNS.
    pub cluster_domain: Option<String>,
}

/// Whether this node must fence its StatefulSet pods, as [`watch_fence`] last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceState {
    /// The node's quorum at the last evaluation.
    pub quorum: nodes::Quorum,
    /// [`nodes::Quorum::must_fence`], except while this process is starting (see
    /// [`watch_fence`]).
    pub fenced: bool,
    /// When `fenced` last changed, or when the watch started: the hold-off counts from it.
    pub since: Instant,
}

impl FenceState {
    /// Not fenced, since now: a node that has just started holds its StatefulSet pods off for
    /// `dead_after`, as after a fence.
    pub fn new() -> FenceState {
        FenceState {
            quorum: nodes::Quorum::default(),
            fenced: false,
            since: Instant::now(),
        }
    }
}

impl Default for FenceState {
    fn default() -> FenceState {
        FenceState::new()
    }
}

/// How often [`watch_fence`] evaluates the quorum.
pub const FENCE_EVERY: Duration = Duration::from_millis(250);

/// Keeps `tx` up to date with this node's [`nodes::quorum`], every `every`, until
/// `shutdown`. Readers are woken only when `fenced` changes.
///
/// While this process is starting ([`ObservedHandle::starting`]), it has not had the time to
/// hear its peers, which the quorum would count as unheard: it does not fence then (a restart
/// of `shoald` must not stop the StatefulSet pods), and the agent holds them off anyway.
pub async fn watch_fence(
    state: StateHandle,
    observed: ObservedHandle,
    tx: watch::Sender<FenceState>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let quorum = match nodes::quorum(&state, &observed).await {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(error = %e, "cannot count the quorum; keeping the last verdict");
                continue;
            }
        };
        let was = tx.borrow().fenced;
        let fenced = fence_verdict(was, &quorum, observed.starting());
        tx.send_if_modified(|s| {
            s.quorum = quorum;
            if s.fenced == fenced {
                return false;
            }
            s.fenced = fenced;
            s.since = Instant::now();
            true
        });
    }
}

/// Whether this node fences its StatefulSet pods now, having fenced them (`was`) or not. It
/// fences when the nodes it cannot hear are a majority ([`nodes::Quorum::must_fence`]), and
/// once fenced it stays so until it hears a strict majority: on an exact half it does not
/// start them again, since the other side may have been a majority a moment before (a node
/// that crossed over still counted there) and moved them. Never while this process is
/// starting. Pure.
pub fn fence_verdict(was: bool, quorum: &nodes::Quorum, starting: bool) -> bool {
    if starting {
        return false;
    }
    quorum.must_fence() || (was && quorum.heard * 2 <= quorum.known)
}

/// What the agent needs to guard StatefulSet pods (see the module documentation).
#[derive(Clone)]
pub struct Fencing {
    /// Fed by [`watch_fence`].
    pub fence: watch::Receiver<FenceState>,
    /// Which pods the other nodes report.
    pub observed: ObservedHandle,
    /// Membership's `dead_after`: the hold-off after a fence.
    pub dead_after: Duration,
    /// How long the controllers wait after `dead_after` before they move a pod off a node
    /// they cannot hear; fenced pods get half of it as their stop grace.
    pub reschedule_grace: Duration,
}

/// The node agent task. Build with [`Agent::new`], run with [`Agent::run`].
pub struct Agent {
    ctx: NodeContext,
    state: StateHandle,
    engine: Engine,
    reporter: Option<PodReporter>,
    pods: BTreeMap<String, PodMemory>,
    probes: HashMap<(String, String, ProbeKind), Worker>,
    probe_tx: mpsc::Sender<ProbeEvent>,
    probe_rx: mpsc::Receiver<ProbeEvent>,
    probe_root: CancellationToken,
    /// Stops and removals, which may take a whole grace period: never awaited in a round.
    background: JoinSet<String>,
    /// Container ids a background task works on.
    busy: HashSet<String>,
    /// The busy containers' stops in flight: id → (how many, the shortest grace).
    stopping: BTreeMap<String, (u32, Duration)>,
    network_ready: bool,
    /// The pod subnet this node claimed, as the network to make on it (`crate::podnet`);
    /// None: the engine picks the subnet (tests, tools). While it holds `None`, no pod starts.
    net_spec: Option<watch::Receiver<Option<NetworkSpec>>>,
    /// What the pod network was made with, while `network_ready`.
    made_spec: Option<NetworkSpec>,
    /// When the pod network was last inspected.
    network_checked: Option<Instant>,
    /// Publishes the pod network's gateway and subnet once known ([`Agent::pod_network`]).
    pod_network: watch::Sender<Option<PodNetwork>>,
    last_report: Option<(BTreeMap<String, PodStatus>, Instant)>,
    last_statuses: BTreeMap<String, PodStatus>,
    /// The StatefulSet pods whose containers ran when the engine last answered.
    stateful_running: std::collections::BTreeSet<String>,
    /// None: StatefulSet pods are not guarded (tests, tools).
    fencing: Option<Fencing>,
    /// The mode of the last round, to log its changes.
    last_mode: Mode,
    /// This node's StatefulSet pods, with when this agent first saw each assigned here.
    assigned: BTreeMap<String, Instant>,
    /// Those of them that some node has reported since: moving here, not new.
    ran_elsewhere: BTreeSet<String>,
    /// The wall clock.
    clock: crate::time::SharedClock,
    /// This node's peer id: when set, the agent acts only while the registry names it as the
    /// owner of the node name ([`nodes::acts_for_name`]).
    peer_id: Option<String>,
    /// StatefulSet pods reported as terminating, with when they first were.
    terminating: BTreeMap<String, String>,
    /// Where what happens to this node's pods is told (started, killed, image missing, probe
    /// failed, back-off); None: nowhere.
    events: Option<crate::events::Events>,
    /// Where the node's `EngineUnavailable` condition is set and cleared; None: nowhere.
    conditions: Option<Conditions>,
    /// Whether the engine answers, over the last rounds.
    health: engine::EngineHealth,
    /// The boot rule; None: containers start at once (tests, tools).
    boot: Option<boot::Boot>,
    /// Where missing images are pulled; None: never pulled (tests, tools).
    images: Option<Images>,
}

struct Worker {
    instance: String,
    probe: Probe,
    cancel: CancellationToken,
}

/// What woke the loop.
enum Wake {
    Stop,
    Reconcile,
    Probe(ProbeEvent),
    Done(Result<String, tokio::task::JoinError>),
}

impl Agent {
    pub fn new(
        config: AgentConfig,
        state: StateHandle,
        engine: Engine,
        reporter: Option<PodReporter>,
    ) -> Agent {
        let (probe_tx, probe_rx) = mpsc::channel(config.channel_size.max(1));
        Agent {
            ctx: NodeContext {
                network: spec::network_name(&config.cluster_id, &config.node_name),
                cluster_id: config.cluster_id,
                node_name: config.node_name,
                advertise: config.advertise,
                pods_dir: config.data_dir.join("pods"),
                cluster_domain: config.cluster_domain,
                dns_server: None,
            },
            state,
            engine,
            reporter,
            pods: BTreeMap::new(),
            probes: HashMap::new(),
            probe_tx,
            probe_rx,
            probe_root: CancellationToken::new(),
            background: JoinSet::new(),
            busy: HashSet::new(),
            stopping: BTreeMap::new(),
            network_ready: false,
            net_spec: None,
            made_spec: None,
            network_checked: None,
            pod_network: watch::channel(None).0,
            last_report: None,
            last_statuses: BTreeMap::new(),
            stateful_running: Default::default(),
            fencing: None,
            last_mode: Mode::Open,
            assigned: BTreeMap::new(),
            ran_elsewhere: BTreeSet::new(),
            clock: crate::time::system_clock(),
            peer_id: None,
            terminating: BTreeMap::new(),
            events: None,
            conditions: None,
            health: engine::EngineHealth::default(),
            boot: None,
            images: None,
        }
    }

    /// Pulls images through `images` as each container's `imagePullPolicy` says.
    pub fn with_images(mut self, images: Images) -> Agent {
        self.images = Some(images);
        self
    }

    /// Makes the pod network on the subnet `spec` names (see `crate::podnet`), and starts no
    /// pod until it names one.
    pub fn with_pod_subnet(mut self, spec: watch::Receiver<Option<NetworkSpec>>) -> Agent {
        self.net_spec = Some(spec);
        self
    }

    /// Sets and clears the node's `EngineUnavailable` condition through `conditions`.
    pub fn with_conditions(mut self, conditions: Conditions) -> Agent {
        self.conditions = Some(conditions);
        self
    }

    /// Starts no container until `boot` allows it (see `boot.rs`).
    pub fn with_boot(mut self, boot: boot::Boot) -> Agent {
        self.boot = Some(boot);
        self
    }

    /// Tells what happens to this node's pods as events.
    pub fn with_events(mut self, events: crate::events::Events) -> Agent {
        self.events = Some(events);
        self
    }

    /// Records an event about the pod `key` (`namespace/pod`).
    fn note(&self, key: &str, type_: crate::events::EventType, reason: &str, message: String) {
        if let Some(events) = &self.events {
            let (ns, name) = key.split_once('/').unwrap_or(("default", key));
            events.record(
                type_,
                crate::events::ObjectRef::pod(ns, name),
                reason,
                message,
            );
        }
    }

    /// This node's pod network (gateway and subnet) once the agent has made and inspected it;
    /// `None` before (a node that runs no pods has none). The DNS server and the proxies
    /// listen on the gateway for the pods.
    pub fn pod_network(&self) -> watch::Receiver<Option<PodNetwork>> {
        self.pod_network.subscribe()
    }

    /// Reads the wall clock (pod and container timestamps) from `clock`: the simulator's.
    pub fn with_clock(mut self, clock: crate::time::SharedClock) -> Agent {
        self.clock = clock;
        self
    }

    /// Guards this node's StatefulSet pods with `fencing` (see the module documentation).
    pub fn with_fencing(mut self, fencing: Fencing) -> Agent {
        self.fencing = Some(fencing);
        self
    }

    /// Acts only while the registry names `peer_id` as the owner of this node's name (or the
    /// name is not registered yet): another machine started with the same name never runs
    /// this node's pods, even in a race.
    pub fn with_peer_id(mut self, peer_id: String) -> Agent {
        self.peer_id = Some(peer_id);
        self
    }

    /// Reconciles until `shutdown`. Containers keep running when it stops: the next `shoald`
    /// adopts them.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut changes = self.state.subscribe();
        let mut watching = true;
        let mut fence = self.fencing.as_ref().map(|f| f.fence.clone());
        let mut pulls = self.images.as_ref().map(Images::finished);
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(node = %self.ctx.node_name, network = %self.ctx.network, "node agent started");
        loop {
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Wake::Stop,
                r = changes.changed(), if watching => {
                    if r.is_err() {
                        // The store stopped (shutdown): keep the timer only.
                        watching = false;
                    }
                    Wake::Reconcile
                }
                r = changed(&mut fence) => {
                    if r.is_err() {
                        // The quorum watch stopped (shutdown): its last verdict stays.
                        fence = None;
                    }
                    Wake::Reconcile
                }
                // A pull ended: make its containers now rather than at the next tick.
                r = changed(&mut pulls) => {
                    if r.is_err() {
                        pulls = None;
                    }
                    Wake::Reconcile
                }
                Some(ev) = self.probe_rx.recv() => Wake::Probe(ev),
                Some(done) = self.background.join_next(), if !self.background.is_empty() => Wake::Done(done),
                _ = tick.tick() => Wake::Reconcile,
            };
            match wake {
                Wake::Stop => break,
                Wake::Reconcile => {}
                Wake::Probe(ev) => {
                    if !self.on_probe(ev) {
                        continue;
                    }
                }
                Wake::Done(done) => match done {
                    Ok(id) => self.finished(&id),
                    Err(e) => tracing::warn!(error = %e, "a background container task failed"),
                },
            }
            let statuses = self.reconcile().await;
            self.report(statuses).await;
        }
        self.probe_root.cancel();
        self.background.abort_all();
        tracing::info!("node agent stopped");
    }

    async fn report(&mut self, statuses: BTreeMap<String, PodStatus>) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        let due = match &self.last_report {
            None => true,
            Some((last, at)) => *last != statuses || at.elapsed() >= REPORT_EVERY,
        };
        if due {
            if reporter.report(statuses.clone()).await.is_err() {
                tracing::debug!("observed state stopped; pod status not reported");
            }
            self.last_report = Some((statuses, Instant::now()));
        }
    }

    /// A background task on container `id` is done.
    fn finished(&mut self, id: &str) {
        match self.stopping.get_mut(id) {
            Some((n, _)) if *n > 1 => *n -= 1,
            _ => {
                self.stopping.remove(id);
                self.busy.remove(id);
            }
        }
    }

    /// A background task starts on container `id`, stopping it with `grace` if any.
    fn started(&mut self, id: &str, grace: Option<Duration>) {
        self.busy.insert(id.to_string());
        let e = self
            .stopping
            .entry(id.to_string())
            .or_insert((0, Duration::MAX));
        e.0 += 1;
        if let Some(g) = grace {
            e.1 = e.1.min(g);
        }
    }

    /// What StatefulSet pods may do this round; logs the changes of mode.
    fn guard(&mut self, now: Instant) -> Guard {
        let Some(f) = &self.fencing else {
            return Guard::default();
        };
        let fence = *f.fence.borrow();
        let mode = Mode::of(fence.fenced, fence.since, now, f.dead_after);
        let guard = Guard {
            mode,
            elsewhere: {
                let snapshot = f.observed.snapshot();
                plan::reported_elsewhere(
                    snapshot.values().map(|r| (r, f.observed.liveness(r))),
                    &self.ctx.node_name,
                    now,
                    f.dead_after + f.reschedule_grace,
                )
            },
            grace_cap: plan::fence_grace(f.reschedule_grace),
            // Filled in by the round, which knows this node's pods.
            young: BTreeSet::new(),
        };
        if mode != self.last_mode {
            let q = fence.quorum;
            match mode {
                Mode::Fenced => tracing::warn!(known = q.known, heard = q.heard,
                    grace = ?guard.grace_cap, "no majority heard: stopping StatefulSet pods"),
                Mode::Holding if self.last_mode == Mode::Fenced => tracing::info!(
                    known = q.known, heard = q.heard, hold_off = ?f.dead_after,
                    "a majority is heard again: StatefulSet pods start after the hold-off"),
                Mode::Holding => {}
                Mode::Open => tracing::info!("StatefulSet pods may start"),
            }
            self.last_mode = mode;
        }
        guard
    }

    fn filter(&self) -> [(&str, &str); 2] {
        [
            (labels::CLUSTER, self.ctx.cluster_id.as_str()),
            (labels::NODE, self.ctx.node_name.as_str()),
        ]
    }

    /// One reconcile round; returns the status of every pod of this node.
    pub async fn reconcile(&mut self) -> BTreeMap<String, PodStatus> {
        if let Some(me) = &self.peer_id {
            match self.state.get(Kind::Node, None, &self.ctx.node_name).await {
                Ok(o)
                    if !nodes::acts_for_name(
                        o.as_ref().and_then(|o| nodes::registered_peer(&o.value)),
                        me,
                    ) =>
                {
                    tracing::debug!("this node's name is registered to another peer: not acting");
                    return BTreeMap::new();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read this node's registration; retrying");
                    return self.last_statuses.clone();
                }
            }
        }
        match desired_pods(&self.state).await {
            Ok(d) => self.reconcile_pods(d).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read desired pods; retrying");
                self.last_statuses.clone()
            }
        }
    }

    /// One round against `all`, the desired pods of every node.
    async fn reconcile_pods(&mut self, all: Vec<DesiredPod>) -> BTreeMap<String, PodStatus> {
        let now = Instant::now();
        let wall = crate::time::rfc3339(self.clock.unix_now());
        let mut guard = self.guard(now);
        // Owner kinds of every slot, wherever it is: a container of a slot that moved away
        // is known to be a StatefulSet's even without its label.
        let kinds: BTreeMap<String, String> = all
            .iter()
            .map(|p| (p.key(), p.slot.owner_kind.clone()))
            .collect();
        let desired: Vec<DesiredPod> = all
            .into_iter()
            .filter(|p| p.slot.node == self.ctx.node_name)
            .collect();
        if let Some(f) = &self.fencing {
            let stateful: BTreeSet<String> = desired
                .iter()
                .filter(|p| plan::is_stateful(&p.slot.owner_kind))
                .map(DesiredPod::key)
                .collect();
            self.assigned.retain(|k, _| stateful.contains(k));
            for key in stateful {
                self.assigned.entry(key).or_insert(now);
            }
            // Pods another node has reported past Pending since they were assigned here: they
            // ran there and are moving here (this node's own reports say Pending).
            let assigned = &self.assigned;
            self.ran_elsewhere.retain(|k| assigned.contains_key(k));
            for r in f.observed.snapshot().values() {
                if r.name == self.ctx.node_name {
                    continue;
                }
                for (key, st) in &r.pods {
                    if assigned.contains_key(key) && st.phase != "Pending" {
                        self.ran_elsewhere.insert(key.clone());
                    }
                }
            }
            guard.young = plan::young(&self.assigned, &self.ran_elsewhere, now, f.dead_after);
        }
        let engine = self.engine.get();
        // The pod network is made when the first pod needs it: a node that runs no pods
        // leaves no trace in the engine. Before the specs are built: they name its gateway
        // as the pods' DNS server.
        if let Ok(rt) = &engine
            && !desired.is_empty()
            && self.health.down.is_none()
        {
            // Bounded as the listing below: a hung engine must not hold the round.
            let ensured =
                tokio::time::timeout(engine::ANSWER_WITHIN, self.ensure_pod_network(rt, now));
            if ensured.await.is_err() {
                tracing::warn!("the container engine did not answer about the pod network");
            }
        }
        let sources = self.fetch_sources(&desired).await;
        let inputs: Vec<PodInput> = desired
            .iter()
            .map(|p| PodInput::build(&self.ctx, p, &sources))
            .collect();
        self.load_memory(&inputs);
        // Fenced StatefulSet pods are not desired this round; their memory and directories
        // are kept for when the fence lifts.
        let (mut inputs, fenced) = plan::fence(inputs, guard.mode);

        let rt = match engine {
            Ok(rt) => rt,
            // Not tried yet (`shoald` is starting): not known to be away, so no condition.
            Err(e) if !self.engine.tried() => {
                let message = e.to_string();
                return inputs
                    .iter()
                    .map(|i| {
                        let last = self.last_statuses.get(&i.key);
                        let st = status::engine_unavailable(
                            i,
                            self.ctx.advertise,
                            &message,
                            last,
                            &wall,
                        );
                        (i.key.clone(), st)
                    })
                    .collect();
            }
            Err(e) => return self.engine_failed(&inputs, &e, now, &wall),
        };
        // Every round: a changed ConfigMap or Secret reaches mounted files within a second.
        for input in &mut inputs {
            sync_files(input);
        }

        // The one call of every round: whether the engine answers is judged here, with a
        // bound, so that a hung engine turns the pods not Ready as a stopped one does.
        let observed =
            match tokio::time::timeout(engine::ANSWER_WITHIN, rt.list(&self.filter())).await {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => return self.engine_failed(&inputs, &e, now, &wall),
                Err(_) => {
                    let e = RuntimeError::Unavailable {
                        message: format!(
                            "the container engine at {} did not answer within {}s",
                            self.engine.endpoint(),
                            engine::ANSWER_WITHIN.as_secs()
                        ),
                    };
                    return self.engine_failed(&inputs, &e, now, &wall);
                }
            };
        self.engine_answered();
        let may = if self.net_spec.is_some() && !self.network_ready {
            // No pod starts before the node's pod subnet is claimed and its network made.
            boot::MayStart {
                pods: false,
                stateful: false,
            }
        } else {
            self.boot_check(now)
        };
        let actions = {
            let sel = plan::select(&inputs, &observed);
            plan::observe(&mut self.pods, &inputs, &sel, now, &wall);
            let actions = plan::plan(&inputs, &sel, &self.pods, &self.busy, now);
            let stopping: BTreeMap<String, Duration> = self
                .stopping
                .iter()
                .map(|(id, (_, grace))| (id.clone(), *grace))
                .collect();
            let actions = plan::guard(actions, &inputs, &sel, &kinds, &guard, &stopping);
            plan::boot_gate(actions, &inputs, may)
        };
        let acted = !actions.is_empty();
        for action in actions {
            self.execute(&rt, &inputs, action, now).await;
        }
        let observed = if acted {
            match rt.list(&self.filter()).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list containers; retrying");
                    observed
                }
            }
        } else {
            observed
        };
        self.stateful_running = status::stateful_running(&observed);
        let sel = plan::select(&inputs, &observed);
        plan::observe(&mut self.pods, &inputs, &sel, now, &wall);
        self.sync_probes(&rt, &inputs, &sel);
        let mut statuses = BTreeMap::new();
        for input in &inputs {
            let mem = self.pods.entry(input.key.clone()).or_default();
            let mut st = status::pod_status(input, &sel, mem, self.ctx.advertise, now, &wall);
            let kind = input.pod.slot.owner_kind.as_str();
            if !st.is_ready()
                && let Some(why) = self.boot.as_ref().and_then(|b| b.held(kind))
            {
                st.message = Some(why);
            } else if st.phase == "Pending" && plan::is_stateful(kind) {
                st.message = guard.held(&input.key);
            }
            statuses.insert(input.key.clone(), st);
        }
        let terminating = plan::terminating(&inputs, &sel, &kinds);
        self.terminating.retain(|k, _| terminating.contains_key(k));
        for (key, containers) in terminating {
            let since = self
                .terminating
                .entry(key.clone())
                .or_insert_with(|| wall.clone());
            let st = status::terminating(&containers, self.ctx.advertise, since);
            statuses.insert(key, st);
        }
        self.save_memory(&inputs);
        self.cleanup(&inputs, &fenced, &sel);
        if let Some(events) = &self.events {
            events.record_all(crate::events::pod_status_notes(
                &self.last_statuses,
                &statuses,
                &self.ctx.node_name,
            ));
        }
        self.last_statuses = statuses.clone();
        statuses
    }

    /// A failed call to the engine this round: the pods' statuses, unknown once the engine
    /// counts as unavailable (see `engine.rs`), else (a passing error) as last reported.
    fn engine_failed(
        &mut self,
        inputs: &[PodInput],
        err: &RuntimeError,
        now: Instant,
        wall: &str,
    ) -> BTreeMap<String, PodStatus> {
        let endpoint = self.engine.endpoint();
        let change = self.health.failed(err, &endpoint, now, wall);
        let Some(down) = self.health.down.clone() else {
            tracing::warn!(error = %err, "cannot list containers; retrying");
            return self.last_statuses.clone();
        };
        if change == engine::Change::Down {
            tracing::warn!(engine = %endpoint, error = %err, pods = inputs.len(),
                "the container engine is unavailable: this node's pods are reported not ready");
            if let Some(c) = &self.conditions {
                c.set(
                    engine::ENGINE_UNAVAILABLE,
                    engine::condition_message(&down.message, &down.since),
                );
            }
            // Their containers are gone or unknown: the probes would only fail. The network
            // is inspected again when the engine is back (it may have been made afresh).
            for w in self.probes.values() {
                w.cancel.cancel();
            }
            self.probes.clear();
            self.network_ready = false;
            self.network_checked = None;
        }
        let mut statuses: BTreeMap<String, PodStatus> = inputs
            .iter()
            .map(|i| {
                let st = status::engine_unavailable(
                    i,
                    self.ctx.advertise,
                    &down.message,
                    self.last_statuses.get(&i.key),
                    &down.since,
                );
                (i.key.clone(), st)
            })
            .collect();
        // StatefulSet pods no longer assigned here whose containers ran when the engine last
        // answered may still run (a hung engine keeps them): they stay reported, not ready,
        // so that their ordinal does not start elsewhere while a copy may run here.
        for key in &self.stateful_running {
            if !statuses.contains_key(key) {
                let st = status::may_still_run(self.last_statuses.get(key), &down.message);
                statuses.insert(key.clone(), st);
            }
        }
        self.last_statuses = statuses.clone();
        statuses
    }

    /// The engine answered this round.
    fn engine_answered(&mut self) {
        if self.health.answered() == engine::Change::Up {
            tracing::info!(engine = %self.engine.endpoint(),
                "the container engine answers again: reconciling this node's pods");
            if let Some(c) = &self.conditions {
                c.clear(engine::ENGINE_UNAVAILABLE);
            }
        }
    }

    /// What the boot rule lets start this round (everything without one).
    fn boot_check(&mut self, now: Instant) -> boot::MayStart {
        // A quorum of no known node has not been counted yet.
        let quorum = self.fencing.as_ref().map(|f| f.fence.borrow().quorum);
        match &mut self.boot {
            Some(b) => b.check(now, quorum.filter(|q| q.known > 0)),
            None => boot::MayStart::ALL,
        }
    }

    /// Makes the pod network unless made, and learns its gateway and subnet (again every
    /// [`NETWORK_RECHECK`]): they go into the containers' DNS settings and out to the DNS
    /// server and the proxies through [`Agent::pod_network`].
    async fn ensure_pod_network(&mut self, rt: &Arc<dyn Runtime>, now: Instant) {
        let spec = match &self.net_spec {
            None => NetworkSpec::engine_default(),
            Some(rx) => match rx.borrow().clone() {
                Some(spec) => spec,
                None => {
                    self.network_ready = false;
                    return;
                }
            },
        };
        if self.network_ready && self.made_spec.as_ref() != Some(&spec) {
            self.network_ready = false;
        }
        if !self.network_ready {
            match rt.ensure_network(&self.ctx.network, &spec).await {
                Ok(()) => {
                    self.network_ready = true;
                    self.made_spec = Some(spec);
                    self.network_checked = None;
                }
                Err(RuntimeError::Conflict { message }) => {
                    tracing::warn!(network = %self.ctx.network, %message,
                        "the pod network is not on this node's pod subnet: its pods are made \
                         again on a new one");
                    self.replace_network(rt).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(network = %self.ctx.network, error = %e,
                        "cannot create the pod network; retrying");
                    return;
                }
            }
        }
        let due = self.ctx.dns_server.is_none()
            || self
                .network_checked
                .is_none_or(|t| now.duration_since(t) >= NETWORK_RECHECK);
        if !due {
            return;
        }
        self.network_checked = Some(now);
        match rt.inspect_network(&self.ctx.network).await {
            Ok(info) => match info.pod_network() {
                Some(net) => {
                    if self.ctx.dns_server != Some(net.gateway) {
                        tracing::info!(network = %self.ctx.network, gateway = %net.gateway,
                            subnet = %net.subnet, "pod network ready");
                    }
                    self.ctx.dns_server = Some(net.gateway);
                    self.pod_network.send_if_modified(|current| {
                        let changed = *current != Some(net);
                        *current = Some(net);
                        changed
                    });
                }
                None => tracing::warn!(network = %self.ctx.network, ?info.subnet,
                    ?info.gateway, "the pod network has no subnet or gateway: pods cannot reach \
                    this node's DNS server or proxies; checking again"),
            },
            // Removed behind the agent's back: made again next round.
            Err(e) if e.is_not_found() => self.network_ready = false,
            Err(e) => tracing::warn!(network = %self.ctx.network, error = %e,
                "cannot inspect the pod network; retrying"),
        }
    }

    /// Removes this node's containers and its pod network, which is on another subnet than the
    /// one it must use (made before the node had a pod subnet, or on one it lost to another
    /// node's concurrent claim); the next round makes both again.
    async fn replace_network(&mut self, rt: &Arc<dyn Runtime>) {
        match rt.list(&self.filter()).await {
            Ok(containers) => {
                for c in containers {
                    if let Err(e) = rt.remove(&c.id).await
                        && !e.is_not_found()
                    {
                        tracing::warn!(container = %c.id, error = %e,
                            "cannot remove a container off the old pod network; retrying");
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list containers; retrying");
                return;
            }
        }
        match rt.remove_network(&self.ctx.network).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(network = %self.ctx.network, error = %e,
                "cannot remove the old pod network; retrying"),
        }
        self.network_ready = false;
        self.made_spec = None;
        self.ctx.dns_server = None;
    }

    /// Every ConfigMap and Secret the pods refer to, fetched once per round.
    async fn fetch_sources(&self, pods: &[DesiredPod]) -> ConfigSources {
        let mut wanted = BTreeSet::new();
        for p in pods {
            for (kind, name) in spec::referenced_sources(p) {
                wanted.insert((kind.lower(), p.slot.namespace.clone(), name));
            }
        }
        let mut out = ConfigSources::default();
        for (kind_name, ns, name) in wanted {
            let kind = if kind_name == SourceKind::Secret.lower() {
                Kind::Secret
            } else {
                Kind::ConfigMap
            };
            let stored = match self.state.get(kind, Some(&ns), &name).await {
                Ok(Some(o)) => o,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(namespace = %ns, name = %name, error = %e,
                        "cannot read a referenced object");
                    continue;
                }
            };
            match Resource::from_value(kind, stored.value) {
                Ok(Resource::ConfigMap(cm)) => {
                    let mut data: BTreeMap<String, Vec<u8>> = cm
                        .data
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    data.extend(cm.binary_data);
                    out.config_maps.insert((ns, name), data);
                }
                Ok(Resource::Secret(s)) => {
                    out.secrets.insert(
                        (ns, name),
                        spec::SecretData {
                            type_: s.type_,
                            data: s.data,
                        },
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns, name = %name, error = %e,
                        "stored object unreadable; treated as missing");
                }
            }
        }
        out
    }

    fn load_memory(&mut self, inputs: &[PodInput]) {
        for input in inputs {
            if self.pods.contains_key(&input.key) {
                continue;
            }
            let path = input.pod_dir.join(MEMORY_FILE);
            let persisted = match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<Persisted>(&bytes) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(pod = %input.key, path = %path.display(), error = %e,
                            "unreadable agent memory; starting afresh");
                        None
                    }
                },
                Err(_) => None,
            };
            self.pods.insert(
                input.key.clone(),
                PodMemory {
                    saved: persisted.clone(),
                    persisted: persisted.unwrap_or_default(),
                    containers: BTreeMap::new(),
                },
            );
        }
    }

    fn save_memory(&mut self, inputs: &[PodInput]) {
        for input in inputs {
            let Some(mem) = self.pods.get_mut(&input.key) else {
                continue;
            };
            if mem.saved.as_ref() == Some(&mem.persisted) {
                continue;
            }
            match write_memory(&input.pod_dir, &mem.persisted) {
                Ok(()) => mem.saved = Some(mem.persisted.clone()),
                Err(e) => tracing::warn!(pod = %input.key, error = %e,
                    "cannot save agent memory; retrying"),
            }
        }
    }

    async fn execute(
        &mut self,
        rt: &Arc<dyn Runtime>,
        inputs: &[PodInput],
        action: Action,
        now: Instant,
    ) {
        match action {
            Action::Remove {
                id,
                name,
                grace,
                reason,
            } => {
                tracing::info!(container = %name, id = %short(&id), reason, ?grace,
                    "removing container");
                self.started(&id, Some(grace));
                let rt = rt.clone();
                self.background.spawn(async move {
                    if !grace.is_zero()
                        && let Err(e) = rt.stop(&id, grace).await
                        && !e.is_not_found()
                    {
                        tracing::warn!(container = %name, error = %e, "stop failed; removing anyway");
                    }
                    match rt.remove(&id).await {
                        Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                        Err(e) => {
                            tracing::warn!(container = %name, error = %e, "remove failed; retrying");
                        }
                    }
                    id
                });
            }
            Action::Kill {
                pod,
                container,
                id,
                grace,
                reason,
            } => {
                tracing::info!(pod = %pod, container = %container, reason = %reason,
                    "stopping container for a restart");
                self.note(
                    &pod,
                    crate::events::EventType::Normal,
                    "Killing",
                    format!("Stopping container {container}: {reason}, it will be restarted"),
                );
                self.started(&id, Some(grace));
                let rt = rt.clone();
                self.background.spawn(async move {
                    if let Err(e) = rt.stop(&id, grace).await {
                        tracing::warn!(pod = %pod, container = %container, error = %e,
                            "stop failed; retrying");
                    }
                    id
                });
            }
            Action::Restart {
                pod,
                container,
                id,
                exited,
            } => match rt.start(&id).await {
                Ok(()) => {
                    let mem = self.pods.entry(pod.clone()).or_default();
                    let pc = mem.persisted_container(&container);
                    pc.restart_count = pc.restart_count.saturating_add(1);
                    pc.crash_streak = pc.crash_streak.saturating_add(1);
                    pc.last_terminated = Some(exited);
                    let count = pc.restart_count;
                    let v = mem.container(&container);
                    v.exit = None;
                    v.kill = None;
                    tracing::info!(pod = %pod, container = %container, restarts = count,
                        "container restarted");
                    self.note(
                        &pod,
                        crate::events::EventType::Normal,
                        "Started",
                        format!("Started container {container}"),
                    );
                    crate::metrics::container_restarted();
                }
                Err(e) => {
                    tracing::warn!(pod = %pod, container = %container, error = %e,
                        "restart failed; retrying");
                }
            },
            Action::Create { pod, container } => {
                if let Some(input) = inputs.iter().find(|i| i.key == pod) {
                    self.create(rt, input, &container, now).await;
                }
            }
        }
    }

    async fn create(&mut self, rt: &Arc<dyn Runtime>, input: &PodInput, name: &str, now: Instant) {
        let pod = input.key.as_str();
        let Some(spec) = input
            .containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.spec.as_ref().ok())
        else {
            return;
        };
        if self.ctx.dns_pending() {
            // Made now, it would keep the engine's resolver for good; the gateway is learnt
            // within a round or two of the network.
            tracing::debug!(pod = %pod, container = %name,
                "waiting for the pod network's gateway (the pods' DNS server)");
            return;
        }
        if !self.image_ready(rt, input, name, &spec.image, now).await {
            return;
        }
        let fail_start = |mem: &mut PodMemory, message: String| {
            crate::metrics::container_start_failed();
            let v = mem.container(name);
            v.start = Some(Retry::next(v.start.as_ref(), now, message));
        };
        if let Err(e) = volumes::prepare(rt.as_ref(), &input.pod, &input.layout).await {
            tracing::warn!(pod = %pod, container = %name, error = %e, "cannot prepare volumes");
            fail_start(self.pods.entry(pod.to_string()).or_default(), e.to_string());
            return;
        }
        let id = match rt.create(spec).await {
            Ok(id) => id,
            Err(RuntimeError::ImageNotFound { .. }) if self.images.is_none() => {
                self.image_missing(pod, name, &spec.image, now, "this node pulls no images");
                return;
            }
            Err(RuntimeError::ImageNotFound { .. }) => {
                // Removed since it was checked: the next round checks (and pulls) again.
                let v = self
                    .pods
                    .entry(pod.to_string())
                    .or_default()
                    .container(name);
                v.pull.since = None;
                tracing::warn!(pod = %pod, container = %name, image = %spec.image,
                    "the image went away before the container was made; checking again");
                return;
            }
            Err(e) => {
                tracing::warn!(pod = %pod, container = %name, error = %e, "create failed");
                fail_start(self.pods.entry(pod.to_string()).or_default(), e.to_string());
                return;
            }
        };
        let mem = self.pods.entry(pod.to_string()).or_default();
        match rt.start(&id).await {
            Ok(()) => {
                let v = mem.container(name);
                v.image = None;
                v.start = None;
                v.pull = plan::PullSeen::default();
                tracing::info!(pod = %pod, container = %name, id = %short(&id), "container started");
                if let Some(events) = &self.events {
                    let (ns, pod_name) = pod.split_once('/').unwrap_or(("default", pod));
                    events.normal(
                        crate::events::ObjectRef::pod(ns, pod_name),
                        "Started",
                        format!("Started container {name}"),
                    );
                }
                crate::metrics::container_started();
            }
            Err(e) => {
                tracing::warn!(pod = %pod, container = %name, error = %e,
                    "start failed; removing the container, will retry");
                fail_start(mem, e.to_string());
                if let Err(e) = rt.remove(&id).await
                    && !e.is_not_found()
                {
                    tracing::warn!(pod = %pod, container = %name, error = %e, "remove failed");
                }
            }
        }
    }

    /// Whether the container's image is on the node and may be used now, as its pull policy
    /// says; when not, a pull is started or waited for, and the container's memory says why
    /// (for its status) and what was told as events.
    async fn image_ready(
        &mut self,
        rt: &Arc<dyn Runtime>,
        input: &PodInput,
        name: &str,
        image: &str,
        now: Instant,
    ) -> bool {
        use crate::events::EventType::{Normal, Warning};
        let pod = input.key.as_str();
        let present = match rt.image_present(image).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pod = %pod, container = %name, error = %e,
                    "cannot check the image; retrying");
                return false;
            }
        };
        let Some(images) = self.images.clone() else {
            if present {
                return true;
            }
            self.image_missing(pod, name, image, now, "this node pulls no images");
            return false;
        };
        let policy = input
            .containers
            .iter()
            .find(|c| c.name == name)
            .map_or(PullPolicy::IfNotPresent, |c| c.pull_policy);
        let since = *self
            .pods
            .entry(pod.to_string())
            .or_default()
            .container(name)
            .pull
            .since
            .get_or_insert(now);
        // The credentials are part of what the image service keys its pulls by: always
        // found, even when the registry will not be asked.
        let (auth, skipped) = match ImageRef::parse(image) {
            Ok(r) => crate::images::auth::credentials_for(&r, &input.pull_secrets),
            Err(_) => (None, Default::default()),
        };
        let needs_registry =
            !(present && policy == PullPolicy::IfNotPresent) && policy != PullPolicy::Never;
        let mut unusable: Vec<String> = input.missing_pull_secrets.clone();
        unusable.extend(skipped.secrets.iter().map(|(n, why)| format!("{n}: {why}")));
        let v = self
            .pods
            .entry(pod.to_string())
            .or_default()
            .container(name);
        if needs_registry && !unusable.is_empty() && !v.pull.secrets_noted {
            v.pull.secrets_noted = true;
            self.note(
                pod,
                Warning,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull \
                     the image may not succeed.",
                    unusable.join("; ")
                ),
            );
        }
        let want = Want {
            image: image.to_string(),
            policy,
            present,
            since,
            auth,
        };
        let verdict = match images.ensure(want).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(pod = %pod, container = %name, error = %e, "cannot ask for a pull");
                return false;
            }
        };
        let node = self.ctx.node_name.clone();
        let v = self
            .pods
            .entry(pod.to_string())
            .or_default()
            .container(name);
        match verdict {
            Verdict::Use { pulled, stale } => {
                v.image = None;
                let told = v.pull.pulling_noted;
                v.pull.pulling_noted = false;
                if let Some(why) = stale {
                    self.note(
                        pod,
                        Warning,
                        "PullSkipped",
                        format!("Using image \"{image}\" already present on node {node}: {why}"),
                    );
                } else if let (Some(p), true) = (pulled, told) {
                    let how = match &p.from {
                        Some(holder) => format!("Fetched image \"{image}\" from node {holder}"),
                        None => format!("Successfully pulled image \"{image}\""),
                    };
                    self.note(
                        pod,
                        Normal,
                        "Pulled",
                        format!(
                            "{how} in {:.1}s. Image size: {} bytes.",
                            p.took.as_secs_f64(),
                            p.size
                        ),
                    );
                } else if !told {
                    self.note(
                        pod,
                        Normal,
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                    );
                }
                true
            }
            Verdict::Wait | Verdict::Start => {
                v.image = None;
                if !v.pull.pulling_noted {
                    v.pull.pulling_noted = true;
                    self.note(pod, Normal, "Pulling", format!("Pulling image \"{image}\""));
                }
                false
            }
            Verdict::Failed(f) => {
                v.image = Some(Retry {
                    failures: f.failures,
                    retry_at: f.retry_at,
                    message: f.message.clone(),
                });
                v.pull.pulling_noted = false;
                if v.pull.failures_noted < f.failures {
                    v.pull.failures_noted = f.failures;
                    self.note(pod, Warning, "Failed", f.message.clone());
                    self.note(pod, Warning, "Failed", "Error: ErrImagePull".into());
                } else if v.pull.backoff_noted < f.failures {
                    v.pull.backoff_noted = f.failures;
                    self.note(
                        pod,
                        Normal,
                        "BackOff",
                        format!("Back-off pulling image \"{image}\""),
                    );
                }
                false
            }
            Verdict::NeverPull => {
                self.image_missing(pod, name, image, now, "its imagePullPolicy is Never");
                false
            }
        }
    }

    /// The image is not on the node and will not be pulled.
    fn image_missing(&mut self, pod: &str, name: &str, image: &str, now: Instant, why: &str) {
        let message = format!(
            "image \"{image}\" is not present on node {} and {why}",
            self.ctx.node_name
        );
        let v = self
            .pods
            .entry(pod.to_string())
            .or_default()
            .container(name);
        let retry = Retry::next(v.image.as_ref(), now, message);
        let first = retry.failures == 1;
        tracing::warn!(pod = %pod, container = %name, image = %image,
            failures = retry.failures, "image not present; will check again");
        v.image = Some(retry);
        if first {
            self.note_image_missing(pod, name, image);
        }
    }

    fn note_image_missing(&self, pod: &str, container: &str, image: &str) {
        self.note(
            pod,
            crate::events::EventType::Warning,
            "ErrImageNeverPull",
            format!(
                "Container image \"{image}\" of container {container} is not present on node {} \
                 with pull policy of Never",
                self.ctx.node_name
            ),
        );
    }

    /// Starts the probe workers running containers need and stops the others. Liveness and
    /// readiness wait for the startup probe.
    fn sync_probes(&mut self, rt: &Arc<dyn Runtime>, inputs: &[PodInput], sel: &Selection<'_>) {
        let mut want: HashMap<(String, String, ProbeKind), (String, Probe, ProbeTarget)> =
            HashMap::new();
        for input in inputs {
            for c in &input.pod.spec.containers {
                let Some(info) = sel.chosen.get(&(input.key.clone(), c.name.clone())) else {
                    continue;
                };
                if info.state != ContainerState::Running {
                    continue;
                }
                let inst = probe::instance(&info.id, info.started_at.as_deref());
                let mem = self.pods.entry(input.key.clone()).or_default();
                let v = mem.container(&c.name);
                v.probes.follow(&inst);
                let kinds: &[ProbeKind] = if v.probes.started(c) {
                    &[ProbeKind::Liveness, ProbeKind::Readiness]
                } else {
                    &[ProbeKind::Startup]
                };
                let target = ProbeTarget {
                    id: info.id.clone(),
                    ip: info.ip.clone().filter(|ip| !ip.is_empty()),
                    named_ports: c
                        .ports
                        .iter()
                        .filter_map(|p| {
                            Some((p.name.clone()?, u16::try_from(p.container_port).ok()?))
                        })
                        .collect(),
                };
                for kind in kinds {
                    if let Some(p) = kind.of(c) {
                        want.insert(
                            (input.key.clone(), c.name.clone(), *kind),
                            (inst.clone(), p.clone(), target.clone()),
                        );
                    }
                }
            }
        }
        self.probes.retain(|k, w| {
            let keep = want
                .get(k)
                .is_some_and(|(inst, p, _)| *inst == w.instance && *p == w.probe);
            if !keep {
                w.cancel.cancel();
            }
            keep
        });
        for (k, (inst, p, target)) in want {
            if self.probes.contains_key(&k) {
                continue;
            }
            let cancel = self.probe_root.child_token();
            tokio::spawn(probe::worker(
                rt.clone(),
                k.0.clone(),
                k.1.clone(),
                inst.clone(),
                k.2,
                p.clone(),
                target,
                self.probe_tx.clone(),
                cancel.clone(),
            ));
            self.probes.insert(
                k,
                Worker {
                    instance: inst,
                    probe: p,
                    cancel,
                },
            );
        }
    }

    /// Records a probe result; returns whether a verdict changed (worth a round now).
    fn on_probe(&mut self, ev: ProbeEvent) -> bool {
        let Some(worker) = self
            .probes
            .get(&(ev.pod.clone(), ev.container.clone(), ev.kind))
        else {
            return false;
        };
        if worker.instance != ev.instance {
            return false;
        }
        let probe = worker.probe.clone();
        let Some(mem) = self.pods.get_mut(&ev.pod) else {
            return false;
        };
        let v = mem.container(&ev.container);
        if v.probes.instance.as_deref() != Some(ev.instance.as_str()) {
            return false;
        }
        let machine = v.probes.machines.entry(ev.kind).or_default();
        let Some(verdict) = machine.record(&probe, ev.ok, &ev.message) else {
            return false;
        };
        tracing::info!(pod = %ev.pod, container = %ev.container, probe = ev.kind.as_str(),
            success = verdict, message = %ev.message, "probe verdict changed");
        if !verdict && let Some(events) = &self.events {
            let (ns, name) = ev
                .pod
                .split_once('/')
                .unwrap_or(("default", ev.pod.as_str()));
            let kind = ev.kind.as_str();
            let mut what = kind.to_string();
            if let Some(first) = what.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            events.warning(
                crate::events::ObjectRef::pod(ns, name),
                "Unhealthy",
                format!(
                    "{what} probe of container {} failed: {}",
                    ev.container, ev.message
                ),
            );
        }
        if !verdict && matches!(ev.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            let what = if ev.kind == ProbeKind::Liveness {
                "Liveness"
            } else {
                "Startup"
            };
            v.kill = Some((ev.id, format!("{what} probe failed: {}", ev.message)));
        }
        true
    }

    /// Forgets pods that are gone, and removes their directories once no container of theirs
    /// is left. `fenced` pods are not gone: they come back when the fence lifts.
    fn cleanup(&mut self, inputs: &[PodInput], fenced: &[PodInput], sel: &Selection<'_>) {
        let keys: HashSet<&str> = inputs
            .iter()
            .chain(fenced)
            .map(|i| i.key.as_str())
            .collect();
        self.pods.retain(|k, _| keys.contains(k.as_str()));
        let mut keep: HashSet<PathBuf> = inputs
            .iter()
            .chain(fenced)
            .map(|i| i.pod_dir.clone())
            .collect();
        for (c, _) in &sel.extra {
            let ns = c
                .labels
                .get(labels::NAMESPACE)
                .map(String::as_str)
                .unwrap_or_default();
            let pod = c
                .labels
                .get(labels::POD)
                .map(String::as_str)
                .unwrap_or_default();
            keep.insert(spec::pod_dir(&self.ctx.pods_dir, ns, pod));
        }
        let Ok(entries) = std::fs::read_dir(&self.ctx.pods_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if keep.contains(&path) || !path.is_dir() {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed the directory of a gone pod")
                }
                Err(e) => tracing::warn!(dir = %path.display(), error = %e,
                    "cannot remove the directory of a gone pod"),
            }
        }
    }
}

/// Writes the projected (configMap, secret) files of a pod; a failure becomes the pod's volume
/// error, so no container is created without its files.
fn sync_files(input: &mut PodInput) {
    let base = volumes::volumes_dir(&input.pod_dir);
    for (volume, files) in &input.projected {
        match volumes::sync_projected(&base.join(volume), files) {
            Ok(true) => tracing::debug!(pod = %input.key, volume = %volume, "volume files updated"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(pod = %input.key, volume = %volume, error = %e,
                    "cannot write volume files");
                input
                    .volume_error
                    .get_or_insert_with(|| format!("volume \"{volume}\": {e}"));
            }
        }
    }
}

fn write_memory(pod_dir: &Path, persisted: &Persisted) -> std::io::Result<()> {
    std::fs::create_dir_all(pod_dir)?;
    let bytes = serde_json::to_vec_pretty(persisted).map_err(std::io::Error::other)?;
    let tmp = pod_dir.join(format!("{MEMORY_FILE}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, pod_dir.join(MEMORY_FILE))
}

/// Waits for a change of a watch (the fence, the end of a pull), forever when there is none.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
