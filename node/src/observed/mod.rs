//! Observed state and membership: what nodes see right now (heartbeats, capacity, pod status)
//! and which nodes are alive.
//!
//! It changes constantly, so it never enters the automerge document, whose history would grow
//! without bound. Each node is the only writer of its own [`NodeRecord`], which carries a
//! version; a record from a peer replaces an older one of the same node. The version starts at
//! the owner's clock in microseconds when it starts and grows by one per heartbeat, so the
//! records of a restarted node usually win over those of its previous run at once. Each run
//! also carries a random run number: when the clock went back between two runs, the new run's
//! lower versions replace the old run's once that has been silent for `dead_after` (or left),
//! so a node never stays hidden behind its own past.
//!
//! The [`Heartbeat`] task owns this node's record and the map of all records (a `watch`
//! channel: one writer, any number of readers taking cheap snapshots). Every heartbeat it
//! gossips either the whole record or, when nothing but the heartbeat changed, a small beat
//! (see [`gossip`]); the whole record goes out at once when this node's pods change, when a
//! peer is admitted, and every few beats anyway, so a peer that missed one has it soon.
//!
//! Liveness is judged by each node from its own monotonic clock: when it last heard a peer
//! (never from the peer's wall clock, which may be off). Alive until `suspect_after` without a
//! word, then suspect until `dead_after`, then dead. A node that stops on SIGTERM gossips a
//! last record saying that it leaves: its peers see it `left` at once. A registered node this
//! process has not heard since it started is `unknown`, never dead: dead means heard, then
//! lost (see "Membership" in `docs/architecture.md`).
//!
//! A node name belongs to one peer id at a time. A record of a known name from another peer
//! id is ignored while the known one is heard (within `dead_after`): two machines started with
//! one name never take turns in one record. Records carrying this node's own name from
//! another peer id are kept apart as *rivals* ([`ObservedHandle::rival_quiet`]), which
//! [`crate::nodes::claim_name`] reads to refuse a name that a live node holds.

pub mod gossip;
pub mod inventory;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_protocol::status::PodStatus;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use gossip::{Inbound, Message, Publish};
pub use inventory::{ImageEntry, Inventories, Inventory, LocalImages};

/// What one node reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    /// Bumped by the owner on every change; the higher version wins a merge.
    pub version: u64,
    pub address: String,
    pub shoal_version: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// When the node process started (seconds since the Unix epoch).
    pub started_at: i64,
    /// The owner's wall clock at its last heartbeat (seconds since the Unix epoch).
    pub heartbeat_at: i64,
    /// The node's libp2p peer id.
    #[serde(default)]
    pub peer_id: String,
    /// Where other nodes dial it (`host:port`, TCP and QUIC).
    #[serde(default)]
    pub p2p_address: String,
    /// The node said that it leaves (it stopped on SIGTERM).
    #[serde(default)]
    pub left: bool,
    /// The status of every pod the node runs, by `namespace/pod`.
    #[serde(default)]
    pub pods: BTreeMap<String, PodStatus>,
    /// The digest of the desired state as the node holds it (`StateHandle::digest`): two nodes
    /// hold the same state exactly when their digests are equal ("" until known).
    #[serde(default)]
    pub state_digest: String,
    /// What is wrong with the node, by condition type (such as `EngineUnavailable` or
    /// `Degraded`), each with a message for people; empty while all is well. Set through
    /// [`Conditions`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, String>,
    /// The version of the node's image inventory (see [`inventory`]); 0 when it has none.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub images_version: u64,
    /// A random number of this run of the node's process (0 from older nodes): a record of a
    /// new run replaces the old run's once that is silent, whatever the versions (see
    /// `merge_message`).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub run: u32,
    /// When this process last heard from the node (its own clock; never on the wire).
    #[serde(skip)]
    pub seen: Option<Instant>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl NodeRecord {
    /// Merge law: the record with the higher version wins; equal versions keep `self`. This is
    /// commutative on distinct versions, associative and idempotent, and only the owner ever
    /// creates a new version.
    pub fn merge(self, other: NodeRecord) -> NodeRecord {
        if other.version > self.version {
            other
        } else {
            self
        }
    }
}

/// A node's membership state, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    Alive,
    Suspect,
    /// Heard, then lost for `dead_after`.
    Dead,
    Left,
    /// Registered, but not heard since this process started: no reason to move its pods
    /// (see `controllers::task::movable` for the bound).
    Unknown,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
            Liveness::Left => "left",
            Liveness::Unknown => "unknown",
        }
    }
}

/// A short fingerprint of a peer id (FNV-1a, 32 bits), carried by beats so that a beat is
/// credited only to the record of the peer that sent it, without the 52 characters of the
/// peer id in every beat. 0 means none (an older node's beat). Pure.
pub fn peer_fingerprint(peer_id: &str) -> u32 {
    if peer_id.is_empty() {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in peer_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// Heartbeat and failure-detection timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often this node gossips its heartbeat.
    pub heartbeat: Duration,
    /// A peer unheard for this long is suspect.
    pub suspect_after: Duration,
    /// A peer unheard for this long is dead.
    pub dead_after: Duration,
    /// The whole record goes out at least every this many heartbeats.
    pub full_every: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(500),
            suspect_after: Duration::from_millis(1500),
            dead_after: Duration::from_secs(3),
            full_every: 5,
        }
    }
}

/// Every node record this process knows, by node name.
pub type Observed = Arc<BTreeMap<String, NodeRecord>>;

/// Records that carry this node's own name but another peer id, by peer id: another machine
/// started with this node's name.
pub type Rivals = Arc<BTreeMap<String, NodeRecord>>;

/// One node as this node sees it: its last record and its liveness.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub record: NodeRecord,
    pub liveness: Liveness,
    /// When this node last heard from it (Unix seconds); None if never since it started.
    pub last_seen: Option<i64>,
}

/// A cheap handle to read observed state.
#[derive(Clone)]
pub struct ObservedHandle {
    rx: watch::Receiver<Observed>,
    inventories: watch::Receiver<Inventories>,
    rivals: watch::Receiver<Rivals>,
    local: Arc<str>,
    timing: Timing,
    started: Instant,
    clock: crate::time::SharedClock,
}

impl ObservedHandle {
    pub fn snapshot(&self) -> Observed {
        self.rx.borrow().clone()
    }

    /// This node's name.
    pub fn local_name(&self) -> &str {
        &self.local
    }

    /// The liveness of a record, now.
    pub fn liveness(&self, r: &NodeRecord) -> Liveness {
        if *r.name == *self.local {
            return Liveness::Alive;
        }
        if r.left {
            return Liveness::Left;
        }
        match r.seen {
            Some(t) if t.elapsed() < self.timing.suspect_after => Liveness::Alive,
            Some(t) if t.elapsed() < self.timing.dead_after => Liveness::Suspect,
            Some(_) => Liveness::Dead,
            None => self.unheard(),
        }
    }

    /// The liveness of a node this process has not heard from since it started: unknown, for
    /// as long as that lasts (never dead: dead means heard, then lost).
    pub fn unheard(&self) -> Liveness {
        Liveness::Unknown
    }

    /// How long ago this process last heard another machine that carries this node's name
    /// with peer id `peer_id` (a rival); None if never.
    pub fn rival_quiet(&self, peer_id: &str) -> Option<Duration> {
        self.rivals
            .borrow()
            .get(peer_id)
            .and_then(|r| r.seen)
            .map(|t| t.elapsed())
    }

    /// The last record of the rival `peer_id` (see [`ObservedHandle::rival_quiet`]).
    pub fn rival(&self, peer_id: &str) -> Option<NodeRecord> {
        self.rivals.borrow().get(peer_id).cloned()
    }

    /// The timings of membership.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// How long ago this process started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether this process started so recently that it may not have heard from every alive
    /// peer yet (less than `dead_after` ago).
    pub fn starting(&self) -> bool {
        self.started.elapsed() < self.timing.dead_after
    }

    /// Every known node with its liveness, by name.
    pub fn members(&self) -> BTreeMap<String, Member> {
        let now = self.clock.unix_now();
        self.snapshot()
            .values()
            .map(|r| {
                let last_seen = r
                    .seen
                    .map(|t| now - i64::try_from(t.elapsed().as_secs()).unwrap_or(i64::MAX / 2));
                let member = Member {
                    liveness: self.liveness(r),
                    record: r.clone(),
                    last_seen,
                };
                (r.name.clone(), member)
            })
            .collect()
    }

    /// The address of every node membership hears (alive or suspect), by name: the nodes the
    /// DNS answers, the proxies and the pod routes count on.
    pub fn heard_addresses(&self) -> BTreeMap<String, std::net::IpAddr> {
        self.members()
            .into_iter()
            .filter(|(_, m)| matches!(m.liveness, Liveness::Alive | Liveness::Suspect))
            .filter_map(|(name, m)| Some((name, m.record.address.parse().ok()?)))
            .collect()
    }

    /// The status of one pod, wherever it runs, with the node that reported it.
    pub fn pod(&self, key: &str) -> Option<(String, PodStatus)> {
        self.snapshot()
            .values()
            .find_map(|r| r.pods.get(key).map(|p| (r.name.clone(), p.clone())))
    }

    /// Every reported pod status, by `namespace/pod`. A pod two nodes report (one still
    /// stopping it) keeps the report of the node whose heartbeat is newer. Reports of dead or
    /// departed nodes are stale and left out: their pods are unknown until another node runs
    /// them.
    pub fn pods(&self) -> BTreeMap<String, PodStatus> {
        let snapshot = self.snapshot();
        let mut records: Vec<&NodeRecord> = snapshot
            .values()
            .filter(|r| matches!(self.liveness(r), Liveness::Alive | Liveness::Suspect))
            .collect();
        records.sort_by_key(|r| r.heartbeat_at);
        let mut out = BTreeMap::new();
        for r in records {
            for (k, p) in &r.pods {
                out.insert(k.clone(), p.clone());
            }
        }
        out
    }

    /// A receiver that changes whenever a record does.
    pub fn subscribe(&self) -> watch::Receiver<Observed> {
        self.rx.clone()
    }

    /// Every node's image inventory this process holds, this node's own included.
    pub fn inventories(&self) -> Inventories {
        self.inventories.borrow().clone()
    }

    /// A receiver that changes whenever an inventory does.
    pub fn subscribe_inventories(&self) -> watch::Receiver<Inventories> {
        self.inventories.clone()
    }
}

/// Where the node agent reports the pods of this node: the whole set each time, so a pod
/// that is gone simply leaves it.
#[derive(Clone)]
pub struct PodReporter {
    tx: mpsc::Sender<BTreeMap<String, PodStatus>>,
}

impl PodReporter {
    /// Replaces this node's pod statuses. Waits when the heartbeat task is busy; fails only
    /// when it has stopped (shutdown).
    pub async fn report(&self, pods: BTreeMap<String, PodStatus>) -> Result<(), Stopped> {
        self.tx.send(pods).await.map_err(|_| Stopped)
    }
}

/// The observed-state task has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the observed-state task has stopped")]
pub struct Stopped;

/// The task that keeps this node's own record fresh, gossips it and merges the records of
/// its peers.
pub struct Heartbeat {
    tx: watch::Sender<Observed>,
    rivals: watch::Sender<Rivals>,
    /// While it holds false nothing is gossiped, not even the leave: this node has not
    /// claimed its name yet ([`Heartbeat::with_gate`]).
    gate: Option<watch::Receiver<bool>>,
    /// None once every reporter is gone (the heartbeat goes on).
    pods: Option<mpsc::Receiver<BTreeMap<String, PodStatus>>>,
    record: NodeRecord,
    timing: Timing,
    gossip: Option<(Arc<dyn Publish>, mpsc::Receiver<Inbound>)>,
    /// Beats sent since the last whole record.
    beats: u32,
    /// The whole record goes out at the next heartbeat.
    full_due: bool,
    /// The digest of this node's desired state, when followed ([`Heartbeat::with_digest`]).
    digest: Option<watch::Receiver<String>>,
    /// This node's conditions, set by the parts that find them ([`Conditions`]).
    conditions: Option<watch::Receiver<BTreeMap<String, String>>>,
    /// Every node's image inventory, this node's own included.
    inventories: watch::Sender<Inventories>,
    /// What this node's image service reports of its engine ([`Heartbeat::with_images`]).
    images: Option<watch::Receiver<LocalImages>>,
    /// This node's inventory goes out at the next heartbeat (a peer was admitted or asked).
    images_due: bool,
    /// When this node last asked each peer for its inventory.
    asked: HashMap<String, Instant>,
    /// The wall clock of `heartbeat_at`.
    clock: crate::time::SharedClock,
}

/// How often a peer is asked for an inventory newer than the one held, at most.
const ASK_EVERY: Duration = Duration::from_secs(2);

/// Sets and clears this node's conditions (see [`NodeRecord::conditions`]): each part that
/// finds something wrong (the agent, the task supervisor) holds a clone. A change goes out
/// with the next heartbeat, as a whole record.
#[derive(Clone)]
pub struct Conditions {
    tx: Arc<watch::Sender<BTreeMap<String, String>>>,
}

impl Conditions {
    /// Conditions to follow with [`Heartbeat::with_conditions`]: none yet.
    pub fn new() -> (Conditions, watch::Receiver<BTreeMap<String, String>>) {
        let (tx, rx) = watch::channel(BTreeMap::new());
        (Conditions { tx: Arc::new(tx) }, rx)
    }

    /// Sets condition `kind` with `message` (replacing an earlier message).
    pub fn set(&self, kind: &str, message: impl Into<String>) {
        let message = message.into();
        self.tx.send_if_modified(|c| {
            if c.get(kind) == Some(&message) {
                return false;
            }
            c.insert(kind.to_string(), message);
            true
        });
    }

    /// Clears condition `kind`; nothing happens when it is not set.
    pub fn clear(&self, kind: &str) {
        self.tx.send_if_modified(|c| c.remove(kind).is_some());
    }

    /// The conditions set now.
    pub fn current(&self) -> BTreeMap<String, String> {
        self.tx.borrow().clone()
    }
}

/// Creates the store with this node's first record. Its version is set from the clock (see
/// the module documentation).
pub fn start(
    record: NodeRecord,
    timing: Timing,
    channel_size: usize,
) -> (ObservedHandle, PodReporter, Heartbeat) {
    start_with_clock(record, timing, channel_size, crate::time::system_clock())
}

/// [`start`] with the wall clock that seeds the record's version given: the simulator's,
/// skewed or set back, so that a node whose clock is behind its previous run is tried.
pub fn start_with_clock(
    mut record: NodeRecord,
    timing: Timing,
    channel_size: usize,
    clock: crate::time::SharedClock,
) -> (ObservedHandle, PodReporter, Heartbeat) {
    let micros = u64::try_from(clock.unix_micros()).unwrap_or(0);
    record.version = record.version.max(micros);
    if record.run == 0 {
        record.run = run_number();
    }
    record.seen = Some(Instant::now());
    let mut map = BTreeMap::new();
    map.insert(record.name.clone(), record.clone());
    let (tx, rx) = watch::channel(Arc::new(map));
    let (rivals, rivals_rx) = watch::channel(Arc::new(BTreeMap::new()));
    let (inventories, inventories_rx) = watch::channel(Arc::new(BTreeMap::new()));
    let (pods_tx, pods) = mpsc::channel(channel_size.max(1));
    (
        ObservedHandle {
            rx,
            inventories: inventories_rx,
            rivals: rivals_rx,
            local: Arc::from(record.name.as_str()),
            timing,
            started: Instant::now(),
            clock: clock.clone(),
        },
        PodReporter { tx: pods_tx },
        Heartbeat {
            tx,
            rivals,
            gate: None,
            pods: Some(pods),
            record,
            timing,
            gossip: None,
            beats: 0,
            full_due: true,
            digest: None,
            conditions: None,
            inventories,
            images: None,
            images_due: false,
            asked: HashMap::new(),
            clock,
        },
    )
}

/// A random, non-zero number for this run of the process.
fn run_number() -> u32 {
    let mut b = [0u8; 4];
    let n = match getrandom::fill(&mut b) {
        Ok(()) => u32::from_be_bytes(b),
        // The process id differs between runs too.
        Err(_) => std::process::id(),
    };
    n.max(1)
}

/// How long the last record (the leave) may take to be handed to the network.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

impl Heartbeat {
    /// Gossips this node's record through `publish` and merges the peers' records that arrive
    /// on `inbound`.
    pub fn with_gossip(
        mut self,
        publish: Arc<dyn Publish>,
        inbound: mpsc::Receiver<Inbound>,
    ) -> Self {
        self.gossip = Some((publish, inbound));
        self
    }

    /// Carries the digest of this node's desired state in its record, from `digest` (see
    /// [`follow_digest`]): a change goes out with the next heartbeat, as a whole record.
    pub fn with_digest(mut self, digest: watch::Receiver<String>) -> Self {
        self.digest = Some(digest);
        self
    }

    /// Carries this node's conditions in its record, from `conditions` (see [`Conditions`]): a
    /// change goes out with the next heartbeat, as a whole record.
    pub fn with_conditions(
        mut self,
        conditions: watch::Receiver<BTreeMap<String, String>>,
    ) -> Self {
        self.conditions = Some(conditions);
        self
    }

    /// Carries this node's image inventory, from `images` (the image service's report): a
    /// change goes out at once, on its own (see [`inventory`]).
    pub fn with_images(mut self, images: watch::Receiver<LocalImages>) -> Self {
        self.images = Some(images);
        self
    }

    /// Gossips nothing while `gate` holds false (this node's name is not claimed yet: a
    /// machine that must refuse its name never speaks for the node that holds it); the whole
    /// record goes out as soon as it opens.
    pub fn with_gate(mut self, gate: watch::Receiver<bool>) -> Self {
        self.gate = Some(gate);
        self
    }

    fn open(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| *g.borrow())
    }

    /// Runs until `shutdown`; then, with gossip, tells the peers that this node leaves.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.timing.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (publish, mut inbound) = match self.gossip.take() {
            Some((p, rx)) => (Some(p), Some(rx)),
            None => (None, None),
        };
        loop {
            let full = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                pods = recv(&mut self.pods) => match pods {
                    Some(pods) if pods != self.record.pods => {
                        self.record.pods = pods;
                        true
                    }
                    Some(_) => continue,
                    None => {
                        self.pods = None;
                        continue;
                    }
                },
                changed = async {
                    match self.digest.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    match self.digest.as_mut() {
                        Some(rx) if changed => {
                            let digest = rx.borrow_and_update().clone();
                            if digest != self.record.state_digest {
                                self.record.state_digest = digest;
                                self.full_due = true;
                            }
                        }
                        _ => self.digest = None,
                    }
                    continue;
                }
                changed = async {
                    match self.conditions.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    match self.conditions.as_mut() {
                        Some(rx) if changed => {
                            let conditions = rx.borrow_and_update().clone();
                            if conditions != self.record.conditions {
                                self.record.conditions = conditions;
                                self.full_due = true;
                            }
                        }
                        _ => self.conditions = None,
                    }
                    continue;
                }
                changed = async {
                    match self.images.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    match self.images.as_mut() {
                        Some(rx) if changed => {
                            let local = rx.borrow_and_update().clone();
                            if self.set_images(local)
                                && let Some(p) = publish.as_ref().filter(|_| self.open())
                            {
                                self.send_images(p.as_ref()).await;
                            }
                        }
                        _ => self.images = None,
                    }
                    continue;
                }
                msg = recv(&mut inbound) => {
                    match msg {
                        Some(Inbound::Gossip { data }) => {
                            let ask = self.merge(&data);
                            if let Some(p) = publish.as_ref().filter(|_| self.open()) {
                                for name in ask {
                                    send_message(p.as_ref(), &Message::WantImages { name }).await;
                                }
                            }
                        }
                        Some(Inbound::PeerJoined) => {
                            self.full_due = true;
                            self.images_due = true;
                        }
                        None => inbound = None,
                    }
                    continue;
                }
                _ = tick.tick() => {
                    self.beats += 1;
                    self.full_due || self.beats >= self.timing.full_every
                }
            };
            self.bump();
            if !self.open() {
                // Silent until the name is claimed; the first record after it is whole.
                self.full_due = true;
                continue;
            }
            if let Some(p) = &publish {
                self.send(p.as_ref(), full).await;
                if self.images_due {
                    self.send_images(p.as_ref()).await;
                }
            }
        }
        if let Some(p) = publish.as_ref().filter(|_| self.open()) {
            self.record.left = true;
            self.bump();
            let leave = self.send(p.as_ref(), true);
            if tokio::time::timeout(LEAVE_TIMEOUT, leave).await.is_err() {
                tracing::warn!("could not announce that this node leaves");
            } else {
                tracing::info!("told the peers that this node leaves");
            }
        }
    }

    /// A new version of this node's record, in the map.
    fn bump(&mut self) {
        self.record.version += 1;
        self.record.heartbeat_at = self.clock.unix_now();
        self.record.seen = Some(Instant::now());
        let record = self.record.clone();
        self.tx.send_modify(|map| {
            Arc::make_mut(map).insert(record.name.clone(), record);
        });
    }

    async fn send(&mut self, publish: &dyn Publish, full: bool) {
        let message = if full {
            self.beats = 0;
            self.full_due = false;
            Message::Record(self.record.clone())
        } else {
            Message::Beat {
                name: self.record.name.clone(),
                version: self.record.version,
                heartbeat_at: self.record.heartbeat_at,
                peer: peer_fingerprint(&self.record.peer_id),
            }
        };
        send_message(publish, &message).await;
    }

    /// Takes the image service's report as this node's inventory; true if it changed.
    fn set_images(&mut self, local: LocalImages) -> bool {
        let held = self.inventories.borrow().get(&self.record.name).cloned();
        if held.as_ref().is_some_and(|h| {
            h.images == local.images && h.pulling == local.pulling && h.spread == local.spread
        }) {
            return false;
        }
        let version = self
            .record
            .version
            .max(held.map_or(0, |h| h.version.saturating_add(1)));
        let inventory = Inventory {
            version,
            peer_id: self.record.peer_id.clone(),
            images: local.images,
            pulling: local.pulling,
            spread: local.spread,
        };
        self.record.images_version = version;
        let name = self.record.name.clone();
        self.inventories.send_modify(|map| {
            Arc::make_mut(map).insert(name, inventory);
        });
        true
    }

    /// Gossips this node's inventory, if it has one.
    async fn send_images(&mut self, publish: &dyn Publish) {
        self.images_due = false;
        let Some(inventory) = self.inventories.borrow().get(&self.record.name).cloned() else {
            return;
        };
        let message = Message::Images {
            name: self.record.name.clone(),
            inventory,
        };
        send_message(publish, &message).await;
    }

    /// Merges a peer's inventory; true if it replaced the one held.
    fn merge_images(&mut self, name: String, inventory: Inventory) -> bool {
        if name == self.record.name {
            return false;
        }
        let owner = self.tx.borrow().get(&name).map(|r| r.peer_id.clone());
        self.inventories.send_if_modified(|map| {
            if !inventory::merge(map.get(&name), &inventory, owner.as_deref()) {
                return false;
            }
            Arc::make_mut(map).insert(name, inventory);
            true
        })
    }

    /// The peers whose records name a newer inventory than the one held, not asked lately.
    fn stale_inventories(&mut self, names: &[String]) -> Vec<String> {
        let now = Instant::now();
        let map = self.tx.borrow().clone();
        let inventories = self.inventories.borrow().clone();
        let mut out = Vec::new();
        for name in names {
            let Some(r) = map.get(name) else { continue };
            let held = inventories
                .get(name)
                .filter(|i| i.peer_id == r.peer_id)
                .map_or(0, |i| i.version);
            let recently = self
                .asked
                .get(name)
                .is_some_and(|t| now.saturating_duration_since(*t) < ASK_EVERY);
            if r.images_version > held && !recently && !r.left {
                self.asked.insert(name.clone(), now);
                out.push(name.clone());
            }
        }
        out
    }

    /// Merges a peer's gossip into the map (or into the rivals, or the inventories), and
    /// returns the peers to ask for their inventories.
    fn merge(&mut self, data: &[u8]) -> Vec<String> {
        let message = match Message::decode(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring malformed observed-state gossip");
                return Vec::new();
            }
        };
        let record_of = match message {
            Message::Images { name, inventory } => {
                self.merge_images(name, inventory);
                return Vec::new();
            }
            Message::WantImages { name } => {
                if name == self.record.name {
                    self.images_due = true;
                }
                return Vec::new();
            }
            Message::Record(ref r) => Some(r.name.clone()),
            Message::Beat { .. } => None,
        };
        let own = Own {
            name: &self.record.name,
            peer_id: &self.record.peer_id,
        };
        let hold = self.timing.dead_after;
        let now = Instant::now();
        let mut rivals = (**self.rivals.borrow()).clone();
        let mut rivals_changed = false;
        self.tx.send_if_modified(|map| {
            let m = merge_message(Arc::make_mut(map), &mut rivals, &own, message, now, hold);
            rivals_changed = m.rivals;
            m.map
        });
        if rivals_changed {
            if let Some(r) = rivals.values().find(|r| r.seen == Some(now)) {
                tracing::debug!(peer = %r.peer_id, address = %r.address,
                    "another machine uses this node's name");
            }
            self.rivals.send_replace(Arc::new(rivals));
        }
        match record_of {
            Some(name) => self.stale_inventories(&[name]),
            None => Vec::new(),
        }
    }
}

/// Encodes and publishes one message, best effort.
async fn send_message(publish: &dyn Publish, message: &Message) {
    match message.encode() {
        Ok(bytes) => publish.publish(bytes).await,
        Err(e) => tracing::warn!(error = %e, "cannot encode an observed-state message"),
    }
}

/// This node, as [`merge_message`] needs it.
struct Own<'a> {
    name: &'a str,
    peer_id: &'a str,
}

/// What [`merge_message`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Merged {
    map: bool,
    rivals: bool,
}

/// Merges one message into `map`. Versions not newer than the known one are ignored; a beat
/// of an unknown node too (its whole record follows within a few beats). A name belongs to
/// one peer id while it is heard: a record of a known name from another peer id replaces the
/// known one only once that was last heard `hold` ago (or left), and a beat counts only for
/// the record of the peer that sent it. Messages carrying this node's own name go to `rivals`
/// when they come from another peer id (another machine with this name), and are dropped
/// otherwise. Pure.
fn merge_message(
    map: &mut BTreeMap<String, NodeRecord>,
    rivals: &mut BTreeMap<String, NodeRecord>,
    own: &Own<'_>,
    message: Message,
    now: Instant,
    hold: Duration,
) -> Merged {
    let mut out = Merged::default();
    match message {
        Message::Record(mut r) => {
            if r.name.is_empty() {
                return out;
            }
            if r.name == own.name {
                if r.peer_id.is_empty() || r.peer_id == own.peer_id {
                    return out;
                }
                if rivals.get(&r.peer_id).is_none_or(|k| k.version < r.version) {
                    r.seen = Some(now);
                    rivals.insert(r.peer_id.clone(), r);
                    out.rivals = true;
                }
                return out;
            }
            if let Some(k) = map.get(&r.name) {
                let other_peer =
                    !k.peer_id.is_empty() && !r.peer_id.is_empty() && k.peer_id != r.peer_id;
                let held = !k.left
                    && k.seen
                        .is_some_and(|t| now.saturating_duration_since(t) < hold);
                // The node restarted: its new run replaces the old one once that is silent
                // (or left), even with lower versions. Versions start from the owner's clock,
                // which may have gone back since the old run (a Pi before NTP): that must not
                // hide a live node for good.
                let new_run = !other_peer && k.run != 0 && r.run != 0 && k.run != r.run;
                let older = k.version >= r.version && (held || !new_run);
                if (other_peer && held) || (!other_peer && older) {
                    return out;
                }
            }
            r.seen = Some(now);
            map.insert(r.name.clone(), r);
            out.map = true;
        }
        Message::Beat {
            name,
            version,
            heartbeat_at,
            peer,
        } => {
            let same = |k: &NodeRecord| peer == 0 || peer_fingerprint(&k.peer_id) == peer;
            if name == own.name {
                if peer == 0 || peer == peer_fingerprint(own.peer_id) {
                    return out;
                }
                if let Some(k) = rivals.values_mut().find(|k| same(k) && k.version < version) {
                    k.version = version;
                    k.heartbeat_at = heartbeat_at;
                    k.seen = Some(now);
                    out.rivals = true;
                }
                return out;
            }
            if let Some(k) = map.get_mut(&name)
                && k.version < version
                && (k.peer_id.is_empty() || same(k))
            {
                k.version = version;
                k.heartbeat_at = heartbeat_at;
                k.seen = Some(now);
                out.map = true;
            }
        }
        // Inventories are merged by the heartbeat task itself.
        Message::Images { .. } | Message::WantImages { .. } => {}
    }
    out
}

async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// This machine's logical CPUs and total memory, read from the OS.
/// Keeps `tx` at the digest of the desired state after every committed write (at most every
/// `every`), for [`Heartbeat::with_digest`]; until `shutdown`.
pub async fn follow_digest(
    state: crate::state::StateHandle,
    tx: watch::Sender<String>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut changes = state.subscribe();
    loop {
        match state.digest().await {
            Ok(digest) => {
                tx.send_if_modified(|current| {
                    let changed = *current != digest;
                    if changed {
                        *current = digest;
                    }
                    changed
                });
            }
            Err(e) => tracing::debug!(error = %e, "reading the state digest failed"),
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

pub fn host_capacity() -> (u32, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo_total(&s))
        .unwrap_or(0);
    (cpus, memory)
}

fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests;
