//! Cluster events: what happened to which object, in Kubernetes' `v1/Event` shape (scheduled,
//! rescheduled, started, killed, image missing, probe failed, back-off, node dead or alive,
//! leader changed, rollout steps).
//!
//! Events are bounded soft state, never in the automerge document (whose history would keep
//! them forever). Each node keeps a ring of at most [`RING_CAPACITY`] events; the oldest (by
//! last time seen) fall out. The parts of the node that see something happen record it through
//! an [`Events`] handle (cheap to clone); a repeat of the same (object, type, reason, message)
//! from the same node within [`FOLD_WINDOW`] folds into the first one with `count + 1`, as
//! Kubernetes aggregates repeated events.
//!
//! Spread: the events a node records go, in batches of at most [`MAX_BATCH`], on the cluster's
//! `events` gossip topic ([`Outbox::run`]); every node merges what it hears into its own ring
//! ([`Events::merge_remote`]), so any node lists the cluster's events. Gossip is best effort: a
//! node that starts late, or misses a message, simply misses those events (a fold republishes
//! the event, so a repeated one reaches it again).
//!
//! Readers list ([`Events::list`]) and watch ([`Events::subscribe`], a `broadcast`: a watcher
//! that falls behind loses events, never blocks a writer).
//!
//! Talks to: the network through [`Publish`] (implemented by `net::NetHandle`); the API and the
//! web UI read it; controllers, the node agent and the role keeper write to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// How many events a node keeps (its own and its peers').
pub const RING_CAPACITY: usize = 1000;
/// A repeat within this long of the last occurrence folds into the event (`count + 1`).
pub const FOLD_WINDOW: Duration = Duration::from_secs(600);
/// The most events in one gossip message.
pub const MAX_BATCH: usize = 64;
/// The largest events message accepted (64 events of at most ~2.5 KiB each fit well).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The longest message kept (longer ones are cut, with `...`).
pub const MAX_MESSAGE_CHARS: usize = 1024;
/// The longest reason, kind, namespace, name or source kept.
pub const MAX_FIELD_CHARS: usize = 253;
/// How long the outbox waits for more events before it sends a batch.
const BATCH_DELAY: Duration = Duration::from_millis(100);
/// Buffer of the watch channel (a slower watcher loses events).
const WATCH_BUFFER: usize = 256;
/// Buffer of the outbox (a full one drops events: soft state).
const OUTBOX_BUFFER: usize = 1024;

/// `Normal` or `Warning`, as Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The object an event is about. `namespace` is empty for cluster-scoped objects (Nodes,
/// leases).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn pod(namespace: &str, name: &str) -> ObjectRef {
        ObjectRef::new("Pod", namespace, name)
    }

    pub fn node(name: &str) -> ObjectRef {
        ObjectRef::new("Node", "", name)
    }

    /// The namespace the event lives in: the object's, or `default` for a cluster-scoped
    /// object (as Kubernetes does).
    pub fn event_namespace(&self) -> &str {
        if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        }
    }
}

/// One event. On the wire (CBOR) as this struct; in the API as Kubernetes' `v1/Event`
/// ([`Event::to_json`]). New fields must carry `#[serde(default)]`, so that nodes of different
/// versions read each other's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique in the cluster: `<object name>.<hex>`; the merge key.
    pub name: String,
    #[serde(rename = "type")]
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub object: ObjectRef,
    /// The node that recorded it.
    pub source: String,
    /// When it first and last happened, in milliseconds since the Unix epoch.
    pub first_ms: i64,
    pub last_ms: i64,
    pub count: u32,
}

impl Event {
    /// Merge law for two versions of one event (same name, one author): the higher
    /// `(count, last_ms)` wins; equal keeps `self`. Only the author makes new versions, and its
    /// `(count, last_ms)` only grows, so the merge is commutative, associative and idempotent.
    pub fn merge(self, other: Event) -> Event {
        if (other.count, other.last_ms) > (self.count, self.last_ms) {
            other
        } else {
            self
        }
    }

    /// The event as Kubernetes' `v1/Event`.
    pub fn to_json(&self) -> Value {
        let secs = |ms: i64| crate::time::rfc3339(ms.div_euclid(1000));
        let mut involved = json!({"kind": self.object.kind, "name": self.object.name});
        if !self.object.namespace.is_empty() {
            involved["namespace"] = json!(self.object.namespace);
        }
        if let Some(v) = api_version_of(&self.object.kind) {
            involved["apiVersion"] = json!(v);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": self.name,
                "namespace": self.object.event_namespace(),
                "creationTimestamp": secs(self.first_ms),
            },
            "type": self.type_.as_str(),
            "reason": self.reason,
            "message": self.message,
            "involvedObject": involved,
            "source": {"component": "shoald", "host": self.source},
            "reportingComponent": "shoald",
            "reportingInstance": self.source,
            "firstTimestamp": secs(self.first_ms),
            "lastTimestamp": secs(self.last_ms),
            "count": self.count,
        })
    }

    /// Cuts fields to their bounds (events from peers are not trusted to be small).
    fn bounded(mut self) -> Event {
        cut(&mut self.name, MAX_FIELD_CHARS * 2);
        cut(&mut self.reason, MAX_FIELD_CHARS);
        cut(&mut self.message, MAX_MESSAGE_CHARS);
        cut(&mut self.object.kind, MAX_FIELD_CHARS);
        cut(&mut self.object.namespace, MAX_FIELD_CHARS);
        cut(&mut self.object.name, MAX_FIELD_CHARS);
        cut(&mut self.source, MAX_FIELD_CHARS);
        self.count = self.count.max(1);
        self.last_ms = self.last_ms.max(self.first_ms);
        self
    }
}

fn api_version_of(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "ControllerRevision" => Some("apps/v1"),
        "Lease" => Some("coordination.k8s.io/v1"),
        "" => None,
        _ => Some("v1"),
    }
}

fn cut(s: &mut String, max_chars: usize) {
    if let Some((i, _)) = s.char_indices().nth(max_chars) {
        s.truncate(i);
        s.push_str("...");
    }
}

/// Which events a reader wants; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The event's namespace (the object's, `default` for cluster-scoped objects).
    pub namespace: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    /// The involved object's namespace.
    pub object_namespace: Option<String>,
    pub reason: Option<String>,
    pub type_: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.namespace, e.object.event_namespace())
            && is(&self.kind, &e.object.kind)
            && is(&self.name, &e.object.name)
            && is(&self.object_namespace, &e.object.namespace)
            && is(&self.reason, &e.reason)
            && is(&self.type_, e.type_.as_str())
    }
}

/// What a watcher hears: a new event, or a new version of one (a fold or a peer's update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(Event),
    Modified(Event),
}

impl Change {
    pub fn event(&self) -> &Event {
        match self {
            Change::Added(e) | Change::Modified(e) => e,
        }
    }
}

/// The bounded ring of events, pure. Holds at most `capacity` events by name; the one seen
/// least recently is dropped first.
#[derive(Debug)]
pub struct Ring {
    capacity: usize,
    by_name: HashMap<String, Event>,
    /// (last_ms, when put here, name): listing and eviction order (the put counter keeps
    /// events of one millisecond in the order they came).
    order: BTreeSet<(i64, u64, String)>,
    /// Each event's place in `order`.
    places: HashMap<String, (i64, u64)>,
    puts: u64,
    /// This node's events by fold key, to fold repeats.
    folds: HashMap<FoldKey, String>,
}

type FoldKey = (ObjectRef, EventType, String, String);

fn fold_key(e: &Event) -> FoldKey {
    (
        e.object.clone(),
        e.type_,
        e.reason.clone(),
        e.message.clone(),
    )
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            capacity: capacity.max(1),
            by_name: HashMap::new(),
            order: BTreeSet::new(),
            places: HashMap::new(),
            puts: 0,
            folds: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Records a local event: folds it into an earlier one with the same object, type,
    /// reason and message last seen within `window` (count + 1, its last time), else adds it.
    pub fn record(&mut self, new: Event, window: Duration) -> Change {
        let key = fold_key(&new);
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        if let Some(name) = self.folds.get(&key)
            && let Some(old) = self.by_name.get(name)
            && new.last_ms.saturating_sub(old.last_ms) <= window_ms
        {
            let mut folded = old.clone();
            folded.count = folded.count.saturating_add(1);
            folded.last_ms = folded.last_ms.max(new.last_ms);
            self.put(folded.clone());
            return Change::Modified(folded);
        }
        self.folds.insert(key, new.name.clone());
        self.put(new.clone());
        Change::Added(new)
    }

    /// Merges a peer's event by [`Event::merge`]; returns the change if it changed the ring.
    /// An event older than everything a full ring holds is not taken.
    pub fn merge(&mut self, new: Event) -> Option<Change> {
        match self.by_name.get(&new.name) {
            Some(old) => {
                let merged = old.clone().merge(new);
                if merged == *old {
                    return None;
                }
                self.put(merged.clone());
                Some(Change::Modified(merged))
            }
            None => {
                if self.by_name.len() >= self.capacity
                    && self
                        .order
                        .first()
                        .is_some_and(|(oldest, _, _)| new.last_ms < *oldest)
                {
                    return None;
                }
                self.put(new.clone());
                Some(Change::Added(new))
            }
        }
    }

    fn put(&mut self, e: Event) {
        if let Some((ms, put)) = self.places.remove(&e.name) {
            self.order.remove(&(ms, put, e.name.clone()));
        }
        self.puts += 1;
        self.order.insert((e.last_ms, self.puts, e.name.clone()));
        self.places.insert(e.name.clone(), (e.last_ms, self.puts));
        self.by_name.insert(e.name.clone(), e);
        while self.by_name.len() > self.capacity {
            let Some((_, _, name)) = self.order.pop_first() else {
                break;
            };
            self.places.remove(&name);
            if let Some(gone) = self.by_name.remove(&name) {
                let key = fold_key(&gone);
                if self.folds.get(&key) == Some(&name) {
                    self.folds.remove(&key);
                }
            }
        }
    }

    /// The events `filter` matches, oldest (by last time seen) first.
    pub fn list(&self, filter: &Filter) -> Vec<Event> {
        self.order
            .iter()
            .filter_map(|(_, _, name)| self.by_name.get(name))
            .filter(|e| filter.matches(e))
            .cloned()
            .collect()
    }
}

/// Sends bytes on the cluster's events topic, best effort.
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    async fn publish(&self, data: Vec<u8>);
}

/// An events gossip message: a batch of events, as CBOR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub events: Vec<Event>,
}

/// An events message that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("events message: {0}")]
pub struct WireError(String);

impl Message {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(|e| WireError(e.to_string()))?;
        Ok(out)
    }

    /// Decodes a message, refusing one over [`MAX_MESSAGE_BYTES`]; keeps at most
    /// [`MAX_BATCH`] events, each cut to the field bounds.
    pub fn decode(data: &[u8]) -> Result<Message, WireError> {
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(WireError(format!("{} bytes is too large", data.len())));
        }
        let mut m: Message = ciborium::from_reader(data).map_err(|e| WireError(e.to_string()))?;
        m.events.truncate(MAX_BATCH);
        m.events = m.events.into_iter().map(Event::bounded).collect();
        Ok(m)
    }
}

/// The handle every part of the node records events through. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    /// A std mutex: every critical section is a few map operations, never across an await.
    ring: Mutex<Ring>,
    watch: broadcast::Sender<Change>,
    outbox: Option<mpsc::Sender<Event>>,
    seq: AtomicU64,
    /// Mixed into event names so that two nodes never make the same one.
    node_tag: u16,
    /// Cancelled when the node stops: watches end.
    closed: CancellationToken,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// A handle whose events stay on this node (tests, tools).
    pub fn local(node: &str) -> Events {
        Events::build(node, RING_CAPACITY, None)
    }

    /// A handle whose events also go to the returned [`Outbox`], which gossips them.
    pub fn new(node: &str, capacity: usize) -> (Events, Outbox) {
        let (tx, rx) = mpsc::channel(OUTBOX_BUFFER);
        let events = Events::build(node, capacity, Some(tx));
        let closed = events.closed();
        (events, Outbox { rx, closed })
    }

    fn build(node: &str, capacity: usize, outbox: Option<mpsc::Sender<Event>>) -> Events {
        let (watch, _) = broadcast::channel(WATCH_BUFFER);
        let node_tag = node.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        Events {
            inner: Arc::new(Inner {
                node: node.to_string(),
                ring: Mutex::new(Ring::new(capacity)),
                watch,
                outbox,
                seq: AtomicU64::new(0),
                node_tag: (node_tag ^ (node_tag >> 16)) as u16,
                closed: CancellationToken::new(),
            }),
        }
    }

    /// This node's name (the events' source).
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Records a `Normal` event about `object`.
    pub fn normal(&self, object: ObjectRef, reason: &str, message: impl Into<String>) {
        self.record(EventType::Normal, object, reason, message.into());
    }

    /// Records a `Warning` event about `object`.
    pub fn warning(&self, object: ObjectRef, reason: &str, message: impl Into<String>) {
        self.record(EventType::Warning, object, reason, message.into());
    }

    /// Records an event now (folding a repeat), tells watchers and queues it for gossip.
    pub fn record(&self, type_: EventType, object: ObjectRef, reason: &str, message: String) {
        let now = now_ms();
        self.record_at(type_, object, reason, message, now);
    }

    fn record_at(
        &self,
        type_: EventType,
        object: ObjectRef,
        reason: &str,
        message: String,
        now: i64,
    ) {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let event = Event {
            name: format!(
                "{}.{:x}{:04x}{:x}",
                object.name, now, self.inner.node_tag, seq
            ),
            type_,
            reason: reason.to_string(),
            message,
            object,
            source: self.inner.node.clone(),
            first_ms: now,
            last_ms: now,
            count: 1,
        }
        .bounded();
        let change = match self.inner.ring.lock() {
            Ok(mut ring) => ring.record(event, FOLD_WINDOW),
            Err(_) => return,
        };
        tracing::debug!(reason, object = %change.event().object.name,
            message = %change.event().message, "event");
        if let Some(out) = &self.inner.outbox {
            // Soft state: a full outbox drops the event for the peers, not for this node.
            let _ = out.try_send(change.event().clone());
        }
        let _ = self.inner.watch.send(change);
    }

    /// Merges a peer's events message into the ring; malformed messages are logged and
    /// dropped.
    pub fn merge_remote(&self, data: &[u8]) {
        let message = match Message::decode(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a malformed events message");
                return;
            }
        };
        for e in message.events {
            let change = match self.inner.ring.lock() {
                Ok(mut ring) => ring.merge(e),
                Err(_) => return,
            };
            if let Some(change) = change {
                let _ = self.inner.watch.send(change);
            }
        }
    }

    /// The events `filter` matches, oldest (by last time seen) first.
    pub fn list(&self, filter: &Filter) -> Vec<Event> {
        match self.inner.ring.lock() {
            Ok(ring) => ring.list(filter),
            Err(_) => Vec::new(),
        }
    }

    /// New events and new versions of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.watch.subscribe()
    }

    /// Cancelled once the node stops (its outbox stops): watchers end their streams then.
    pub fn closed(&self) -> CancellationToken {
        self.inner.closed.clone()
    }
}

/// The events this node records, on their way to the gossip topic.
pub struct Outbox {
    rx: mpsc::Receiver<Event>,
    closed: CancellationToken,
}

impl Outbox {
    /// Gossips this node's events in batches (at most [`MAX_BATCH`], after at most
    /// [`BATCH_DELAY`]) until `shutdown`. A fold sends the event again with its new count;
    /// within a batch only its last version goes.
    pub async fn run(self, publish: Arc<dyn Publish>, shutdown: CancellationToken) {
        let closed = self.closed.clone();
        self.spread(publish, shutdown).await;
        closed.cancel();
    }

    async fn spread(mut self, publish: Arc<dyn Publish>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                e = self.rx.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
            };
            let mut batch: BTreeMap<String, Event> = BTreeMap::new();
            batch.insert(first.name.clone(), first);
            let deadline = tokio::time::sleep(BATCH_DELAY);
            tokio::pin!(deadline);
            while batch.len() < MAX_BATCH {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = &mut deadline => break,
                    e = self.rx.recv() => match e {
                        Some(e) => { batch.insert(e.name.clone(), e); }
                        None => break,
                    },
                }
            }
            let message = Message {
                events: batch.into_values().collect(),
            };
            match message.encode() {
                Ok(bytes) if bytes.len() <= MAX_MESSAGE_BYTES => publish.publish(bytes).await,
                Ok(bytes) => tracing::warn!(bytes = bytes.len(), "events batch too large; dropped"),
                Err(e) => tracing::warn!(error = %e, "cannot encode events"),
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An event to record: what the pure derivations below return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub object: ObjectRef,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn normal(object: ObjectRef, reason: &'static str, message: String) -> Note {
        Note {
            type_: EventType::Normal,
            object,
            reason,
            message,
        }
    }
}

impl Events {
    /// Records derived notes.
    pub fn record_all(&self, notes: Vec<Note>) {
        for n in notes {
            self.record(n.type_, n.object, n.reason, n.message);
        }
    }
}

/// What a controllers round did, as events: `ScalingReplicaSet` on a Deployment (a rollout
/// step), `SuccessfulCreate`/`SuccessfulDelete` on a ReplicaSet or StatefulSet for each pod
/// slot made or removed, `Scheduled` on a pod that got a node, `Rescheduled` on a pod that
/// moved off a node (dead, departed, drained or removed), and `FailedScheduling` on a pod no
/// node can take. `replicasets` and `slots` are as they were before the actions. Pure.
pub fn controller_notes(
    actions: &[crate::controllers::Action],
    replicasets: &[shoal_protocol::kinds::ReplicaSet],
    slots: &[shoal_protocol::cluster::Slot],
    nodes: &crate::controllers::Nodes,
) -> Vec<Note> {
    use crate::controllers::Action;
    let before: HashMap<String, &shoal_protocol::cluster::Slot> =
        slots.iter().map(|s| (s.key(), s)).collect();
    let mut notes = Vec::new();
    for a in actions {
        match a {
            Action::PutReplicaSet(rs) => {
                let ns = rs.metadata.namespace.clone().unwrap_or_default();
                let old = replicasets
                    .iter()
                    .find(|o| {
                        o.metadata.name == rs.metadata.name
                            && o.metadata.namespace.as_deref().unwrap_or_default() == ns
                    })
                    .map_or(0, |o| o.spec.replicas);
                let new = rs.spec.replicas;
                let Some(owner) = rs
                    .metadata
                    .owner_references
                    .iter()
                    .find(|o| o.kind == "Deployment")
                else {
                    continue;
                };
                if old != new {
                    let way = if new > old { "up" } else { "down" };
                    notes.push(Note::normal(
                        ObjectRef::new("Deployment", &ns, &owner.name),
                        "ScalingReplicaSet",
                        format!(
                            "Scaled {way} replica set {} from {old} to {new}",
                            rs.metadata.name
                        ),
                    ));
                }
            }
            Action::PutSlot(slot) => {
                let pod = ObjectRef::pod(&slot.namespace, &slot.pod);
                let old = before.get(&slot.key()).copied();
                if old.is_none() && matches!(slot.owner_kind.as_str(), "ReplicaSet" | "StatefulSet")
                {
                    let owner = ObjectRef::new(&slot.owner_kind, &slot.namespace, &slot.owner_name);
                    let message = if slot.owner_kind == "StatefulSet" {
                        format!(
                            "create Pod {} in StatefulSet {} successful",
                            slot.pod, slot.owner_name
                        )
                    } else {
                        format!("Created pod: {}", slot.pod)
                    };
                    notes.push(Note::normal(owner, "SuccessfulCreate", message));
                }
                let old_node = old.map_or("", |o| o.node.as_str());
                if !old_node.is_empty() && old_node != slot.node {
                    let why = leaving_reason(nodes, old_node);
                    let to = if slot.node.is_empty() {
                        "waiting for a node".to_string()
                    } else {
                        format!("to node {}", slot.node)
                    };
                    notes.push(Note::normal(
                        pod.clone(),
                        "Rescheduled",
                        format!("Moved off node {old_node} ({why}), {to}"),
                    ));
                } else if old_node.is_empty() && !slot.node.is_empty() {
                    notes.push(Note::normal(
                        pod.clone(),
                        "Scheduled",
                        format!(
                            "Successfully assigned {}/{} to {}",
                            slot.namespace, slot.pod, slot.node
                        ),
                    ));
                }
                if slot.node.is_empty()
                    && let Some(why) = &slot.unschedulable
                    && old.and_then(|o| o.unschedulable.as_ref()) != Some(why)
                {
                    notes.push(Note {
                        type_: EventType::Warning,
                        object: pod,
                        reason: "FailedScheduling",
                        message: why.clone(),
                    });
                }
            }
            Action::DeleteSlot(key) => {
                let Some(old) = before.get(key) else { continue };
                if !matches!(old.owner_kind.as_str(), "ReplicaSet" | "StatefulSet") {
                    continue;
                }
                let owner = ObjectRef::new(&old.owner_kind, &old.namespace, &old.owner_name);
                let message = if old.owner_kind == "StatefulSet" {
                    format!(
                        "delete Pod {} in StatefulSet {} successful",
                        old.pod, old.owner_name
                    )
                } else {
                    format!("Deleted pod: {}", old.pod)
                };
                notes.push(Note::normal(owner, "SuccessfulDelete", message));
            }
            Action::DeleteReplicaSet { .. }
            | Action::PutRevision(_)
            | Action::DeleteRevision { .. } => {}
        }
    }
    notes
}

/// Why a pod leaves `node`, in words.
fn leaving_reason(nodes: &crate::controllers::Nodes, node: &str) -> &'static str {
    if nodes.draining.contains_key(node) {
        "drained"
    } else if nodes.left.contains(node) {
        "the node left"
    } else if nodes.engine_unavailable.contains(node) {
        "the node's container engine is unavailable"
    } else if nodes.movable.contains(node) {
        "the node is dead"
    } else if !nodes.known.contains(node) {
        "the node was removed"
    } else {
        "the node can no longer run it"
    }
}

/// What changed in a node's pod statuses between two agent rounds, as events: `BackOff` (a
/// warning) when a container enters `CrashLoopBackOff`, and `Killing` when a pod leaves the
/// node (no longer assigned to it, or deleted). Keys are `namespace/pod`. Pure.
pub fn pod_status_notes(
    before: &BTreeMap<String, shoal_protocol::status::PodStatus>,
    after: &BTreeMap<String, shoal_protocol::status::PodStatus>,
    node: &str,
) -> Vec<Note> {
    let pod_ref = |key: &str| {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        ObjectRef::pod(ns, name)
    };
    let backing_off = |st: &shoal_protocol::status::PodStatus, container: &str| {
        st.container_statuses.iter().any(|c| {
            c.name == container
                && c.state
                    .waiting
                    .as_ref()
                    .is_some_and(|w| w.reason == "CrashLoopBackOff")
        })
    };
    let mut notes = Vec::new();
    for (key, st) in after {
        for c in &st.container_statuses {
            if backing_off(st, &c.name) && !before.get(key).is_some_and(|b| backing_off(b, &c.name))
            {
                let name = key.split_once('/').map_or(key.as_str(), |(_, n)| n);
                notes.push(Note {
                    type_: EventType::Warning,
                    object: pod_ref(key),
                    reason: "BackOff",
                    message: format!(
                        "Back-off restarting failed container {} in pod {name}",
                        c.name
                    ),
                });
            }
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        notes.push(Note::normal(
            pod_ref(key),
            "Killing",
            format!("Stopping the pod's containers on node {node}: it no longer runs here"),
        ));
    }
    notes
}

/// A node's membership as events tell it: up (alive or suspect), dead, or departed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Up,
    Dead,
    Left,
}

fn presence(l: crate::observed::Liveness) -> Presence {
    use crate::observed::Liveness;
    match l {
        // Unknown (never heard since this node started) is no verdict either.
        Liveness::Alive | Liveness::Suspect | Liveness::Unknown => Presence::Up,
        Liveness::Dead => Presence::Dead,
        Liveness::Left => Presence::Left,
    }
}

/// The membership changes between two views, as events: `NodeDead` (a warning), `NodeAlive`
/// (joined, or back), `NodeLeft`. A suspect node is still up: only a verdict is news. `me` is
/// left out (it is always alive to itself). Pure.
pub fn membership_notes(
    before: &BTreeMap<String, crate::observed::Liveness>,
    now: &BTreeMap<String, crate::observed::Liveness>,
    me: &str,
) -> Vec<Note> {
    let mut notes = Vec::new();
    for (name, l) in now {
        if name == me {
            continue;
        }
        let was = before.get(name).map(|l| presence(*l));
        let node = ObjectRef::node(name);
        match (was, presence(*l)) {
            (Some(a), b) if a == b => {}
            (None, Presence::Up) => notes.push(Note::normal(
                node,
                "NodeAlive",
                format!("Node {name} is alive: it joined"),
            )),
            (Some(_), Presence::Up) => notes.push(Note::normal(
                node,
                "NodeAlive",
                format!("Node {name} is alive again"),
            )),
            (Some(Presence::Up) | None, Presence::Dead) => notes.push(Note {
                type_: EventType::Warning,
                object: node,
                reason: "NodeDead",
                message: format!("Node {name} is dead: it has not been heard from"),
            }),
            (_, Presence::Left) => notes.push(Note::normal(
                node,
                "NodeLeft",
                format!("Node {name} left the cluster"),
            )),
            (Some(Presence::Left), Presence::Dead) => {}
            (Some(Presence::Dead), Presence::Dead) => {}
        }
    }
    notes
}

/// How long a membership change seen while another node holds the controller role may still
/// be told by this node, if it takes the role: the holder may have died before telling it.
const UNTOLD_WINDOW: Duration = Duration::from_secs(30);

/// Tells membership changes (node dead, alive, left) and this node taking the controller
/// role (`LeaderElection` on the role's Lease) as events. Every node follows membership, but
/// only the holder of the role (`held`, from `nodes::keep_role`) records, so that a change
/// makes one event, not one per node; a node that takes the role also tells the changes of
/// the last [`UNTOLD_WINDOW`], which its predecessor may not have told.
pub async fn report_membership(
    observed: crate::observed::ObservedHandle,
    mut held: tokio::sync::watch::Receiver<Option<u64>>,
    events: Events,
    role: &'static str,
    every: Duration,
    shutdown: CancellationToken,
) {
    let me = observed.local_name().to_string();
    let view =
        |o: &crate::observed::ObservedHandle| -> BTreeMap<String, crate::observed::Liveness> {
            o.members()
                .into_iter()
                .map(|(n, m)| (n, m.liveness))
                .collect()
        };
    let mut last = view(&observed);
    let mut untold: Vec<(tokio::time::Instant, Note)> = Vec::new();
    let mut holding: Option<u64> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watching = true;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = held.changed(), if watching => if r.is_err() { watching = false },
            _ = tick.tick() => {}
        }
        let now = view(&observed);
        let notes = membership_notes(&last, &now, &me);
        last = now;
        let held_now = *held.borrow();
        if let (None, Some(epoch)) = (holding, held_now) {
            events.normal(
                ObjectRef::new("Lease", "", role),
                "LeaderElection",
                format!("{me} became the {role} holder (epoch {epoch})"),
            );
        }
        holding = held_now;
        let at = tokio::time::Instant::now();
        untold.retain(|(t, _)| at.duration_since(*t) < UNTOLD_WINDOW);
        if holding.is_some() {
            events.record_all(untold.drain(..).map(|(_, n)| n).collect());
            events.record_all(notes);
        } else {
            untold.extend(notes.into_iter().map(|n| (at, n)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ev(name: &str, reason: &str, last_ms: i64, count: u32) -> Event {
        Event {
            name: name.into(),
            type_: EventType::Normal,
            reason: reason.into(),
            message: format!("{reason} happened"),
            object: ObjectRef::pod("default", "web-0"),
            source: "n1".into(),
            first_ms: last_ms,
            last_ms,
            count,
        }
    }

    #[test]
    fn repeats_fold_within_the_window_only() {
        let mut ring = Ring::new(10);
        let w = Duration::from_secs(600);
        assert!(matches!(
            ring.record(ev("a", "Started", 1_000, 1), w),
            Change::Added(_)
        ));
        let Change::Modified(f) = ring.record(ev("b", "Started", 5_000, 1), w) else {
            panic!("a repeat should fold");
        };
        assert_eq!(
            (f.name.as_str(), f.count, f.first_ms, f.last_ms),
            ("a", 2, 1_000, 5_000)
        );
        // Another reason is another event.
        assert!(matches!(
            ring.record(ev("c", "Killing", 6_000, 1), w),
            Change::Added(_)
        ));
        // Past the window: a new event.
        assert!(matches!(
            ring.record(ev("d", "Started", 5_000 + 600_001, 1), w),
            Change::Added(_)
        ));
        assert_eq!(ring.len(), 3);
    }

    #[test]
    fn the_ring_keeps_the_most_recent() {
        let mut ring = Ring::new(3);
        for (i, r) in ["A", "B", "C", "D", "E"].iter().enumerate() {
            ring.record(ev(r, r, i as i64 * 10, 1), FOLD_WINDOW);
        }
        let names: Vec<String> = ring
            .list(&Filter::default())
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["C", "D", "E"]);
        // A peer's event older than all a full ring holds is not taken; a newer one is.
        assert_eq!(ring.merge(ev("old", "X", 1, 1)), None);
        assert!(ring.merge(ev("new", "X", 100, 1)).is_some());
        let names: Vec<String> = ring
            .list(&Filter::default())
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["D", "E", "new"]);
        // An evicted event no longer folds.
        ring.record(ev("C2", "C", 101, 1), FOLD_WINDOW);
        assert_eq!(
            ring.list(&Filter::default()).last().map(|e| e.count),
            Some(1)
        );
    }

    #[test]
    fn merge_laws() {
        let a = ev("x", "R", 10, 1);
        let b = ev("x", "R", 20, 2);
        let c = ev("x", "R", 30, 3);
        // Commutative, associative, idempotent.
        assert_eq!(a.clone().merge(b.clone()), b.clone().merge(a.clone()));
        assert_eq!(
            a.clone().merge(b.clone()).merge(c.clone()),
            a.clone().merge(b.clone().merge(c.clone()))
        );
        assert_eq!(b.clone().merge(b.clone()), b);
        // In a ring: an older version changes nothing, the same one neither.
        let mut ring = Ring::new(10);
        assert!(matches!(ring.merge(b.clone()), Some(Change::Added(_))));
        assert_eq!(ring.merge(a), None);
        assert_eq!(ring.merge(b), None);
        assert_eq!(ring.merge(c.clone()), Some(Change::Modified(c)));
    }

    #[test]
    fn filters_match_fields() {
        let mut e = ev("x", "Scheduled", 1, 1);
        let all = Filter::default();
        assert!(all.matches(&e));
        let f = Filter {
            kind: Some("Pod".into()),
            name: Some("web-0".into()),
            namespace: Some("default".into()),
            ..Filter::default()
        };
        assert!(f.matches(&e));
        e.object.name = "web-1".into();
        assert!(!f.matches(&e));
        // Cluster-scoped objects' events live in `default`.
        let node = Event {
            object: ObjectRef::node("n2"),
            ..ev("n", "NodeDead", 1, 1)
        };
        assert!(
            Filter {
                namespace: Some("default".into()),
                ..Filter::default()
            }
            .matches(&node)
        );
        assert!(
            !Filter {
                namespace: Some("prod".into()),
                ..Filter::default()
            }
            .matches(&node)
        );
    }

    #[test]
    fn messages_round_trip_and_are_bounded() {
        let mut big = ev("x", "R", 1, 1);
        big.message = "m".repeat(5_000);
        let m = Message {
            events: vec![big; MAX_BATCH + 10],
        };
        let bytes = m.encode().expect("encode");
        // Over the size limit: refused.
        assert!(Message::decode(&bytes).is_err());
        let m = Message {
            events: vec![ev("y", "R", 1, 0); MAX_BATCH + 10],
        };
        let back = Message::decode(&m.encode().expect("encode")).expect("decode");
        assert_eq!(back.events.len(), MAX_BATCH);
        assert_eq!(back.events[0].count, 1, "a count of 0 is read as 1");
        assert!(Message::decode(b"\xff\x00garbage").is_err());
        // A message of an older version without fields it does not know still decodes.
        let mut small = ev("z", "R", 1, 1);
        small.message = "é".repeat(MAX_MESSAGE_CHARS + 5);
        let back = Message::decode(
            &Message {
                events: vec![small],
            }
            .encode()
            .expect("encode"),
        )
        .expect("decode");
        assert_eq!(
            back.events[0].message.chars().count(),
            MAX_MESSAGE_CHARS + 3
        );
    }

    #[test]
    fn a_handle_records_folds_and_spreads() {
        let (a, mut outbox) = Events::new("n1", 100);
        let b = Events::local("n2");
        let mut watch = b.subscribe();
        a.warning(ObjectRef::pod("ns", "p"), "BackOff", "back-off restarting");
        a.warning(ObjectRef::pod("ns", "p"), "BackOff", "back-off restarting");
        let listed = a.list(&Filter::default());
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].count, 2);
        assert!(listed[0].name.starts_with("p."));
        // Both versions went to the outbox; the peer merges them into one event, count 2.
        let mut sent = Vec::new();
        while let Ok(e) = outbox.rx.try_recv() {
            sent.push(e);
        }
        assert_eq!(sent.len(), 2);
        b.merge_remote(&Message { events: sent }.encode().expect("encode"));
        let there = b.list(&Filter::default());
        assert_eq!(there.len(), 1);
        assert_eq!((there[0].count, there[0].source.as_str()), (2, "n1"));
        assert!(matches!(watch.try_recv(), Ok(Change::Added(_))));
        assert!(matches!(watch.try_recv(), Ok(Change::Modified(_))));
        // The Kubernetes shape.
        let j = there[0].to_json();
        assert_eq!(j["kind"], "Event");
        assert_eq!(j["type"], "Warning");
        assert_eq!(j["involvedObject"]["name"], "p");
        assert_eq!(j["metadata"]["namespace"], "ns");
        assert_eq!(j["count"], 2);
        assert_eq!(j["source"]["host"], "n1");
    }

    #[tokio::test(start_paused = true)]
    async fn the_outbox_batches() {
        struct Sink(mpsc::UnboundedSender<Vec<u8>>);
        #[async_trait]
        impl Publish for Sink {
            async fn publish(&self, data: Vec<u8>) {
                let _ = self.0.send(data);
            }
        }
        let (events, outbox) = Events::new("n1", 100);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(outbox.run(Arc::new(Sink(tx)), stop.clone()));
        for i in 0..3 {
            events.normal(
                ObjectRef::pod("ns", &format!("p{i}")),
                "Scheduled",
                "assigned",
            );
        }
        let data = rx.recv().await.expect("a batch");
        assert_eq!(Message::decode(&data).expect("decode").events.len(), 3);
        stop.cancel();
        let _ = task.await;
    }

    fn slot(pod: &str, owner_kind: &str, node: &str) -> shoal_protocol::cluster::Slot {
        shoal_protocol::cluster::Slot {
            namespace: "default".into(),
            pod: pod.into(),
            owner_kind: owner_kind.into(),
            owner_name: "web".into(),
            index: 0,
            revision: String::new(),
            node: node.into(),
            unschedulable: None,
        }
    }

    #[test]
    fn controller_actions_become_events() {
        use crate::controllers::{Action, Nodes};
        let mut nodes = Nodes::default();
        nodes
            .known
            .extend(["n1".to_string(), "n2".to_string(), "n3".to_string()]);
        nodes.movable.insert("n2".to_string());
        let before = vec![
            slot("web-a-0", "ReplicaSet", "n2"),
            slot("web-1", "StatefulSet", "n1"),
        ];
        let mut unplaced = slot("web-a-2", "ReplicaSet", "");
        unplaced.unschedulable = Some("0/3 nodes are available".into());
        let actions = vec![
            Action::PutSlot(slot("web-a-0", "ReplicaSet", "n3")),
            Action::PutSlot(slot("web-a-1", "ReplicaSet", "n1")),
            Action::PutSlot(unplaced),
            Action::DeleteSlot("default/web-1".into()),
        ];
        let notes = controller_notes(&actions, &[], &before, &nodes);
        let got: Vec<(&str, &str, &str)> = notes
            .iter()
            .map(|n| (n.reason, n.object.kind.as_str(), n.object.name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Rescheduled", "Pod", "web-a-0"),
                ("SuccessfulCreate", "ReplicaSet", "web"),
                ("Scheduled", "Pod", "web-a-1"),
                ("SuccessfulCreate", "ReplicaSet", "web"),
                ("FailedScheduling", "Pod", "web-a-2"),
                ("SuccessfulDelete", "StatefulSet", "web"),
            ]
        );
        assert_eq!(
            notes[0].message,
            "Moved off node n2 (the node is dead), to node n3"
        );
        assert_eq!(
            notes[2].message,
            "Successfully assigned default/web-a-1 to n1"
        );
        assert_eq!(notes[4].type_, EventType::Warning);
        // A converged round says nothing.
        assert!(controller_notes(&[], &[], &before, &nodes).is_empty());
    }

    #[test]
    fn membership_changes_become_events() {
        use crate::observed::Liveness::*;
        let before: BTreeMap<String, crate::observed::Liveness> = [
            ("me", Alive),
            ("a", Alive),
            ("b", Alive),
            ("c", Dead),
            ("d", Suspect),
        ]
        .into_iter()
        .map(|(n, l)| (n.to_string(), l))
        .collect();
        let now: BTreeMap<String, crate::observed::Liveness> = [
            ("me", Alive),
            ("a", Dead),
            ("b", Left),
            ("c", Alive),
            ("d", Alive),
            ("e", Alive),
        ]
        .into_iter()
        .map(|(n, l)| (n.to_string(), l))
        .collect();
        let got: Vec<(&str, String, EventType)> = membership_notes(&before, &now, "me")
            .into_iter()
            .map(|n| (n.reason, n.object.name, n.type_))
            .collect();
        assert_eq!(
            got,
            [
                ("NodeDead", "a".to_string(), EventType::Warning),
                ("NodeLeft", "b".to_string(), EventType::Normal),
                ("NodeAlive", "c".to_string(), EventType::Normal),
                ("NodeAlive", "e".to_string(), EventType::Normal),
            ]
        );
        assert!(membership_notes(&now, &now, "me").is_empty());
    }

    #[test]
    fn pod_status_changes_become_events() {
        use shoal_protocol::status::{ContainerStatus, PodStatus, StateWaiting};
        let waiting = |reason: &str| {
            let mut c: ContainerStatus =
                serde_json::from_value(serde_json::json!({"name": "app", "ready": false,
                    "restartCount": 3, "image": "x"}))
                .expect("a container status");
            c.state.waiting = Some(StateWaiting {
                reason: reason.into(),
                message: None,
            });
            PodStatus {
                container_statuses: vec![c],
                ..PodStatus::default()
            }
        };
        let before: BTreeMap<String, PodStatus> = [
            ("ns/a".to_string(), waiting("ContainerCreating")),
            ("ns/gone".to_string(), PodStatus::default()),
        ]
        .into_iter()
        .collect();
        let after: BTreeMap<String, PodStatus> =
            [("ns/a".to_string(), waiting("CrashLoopBackOff"))]
                .into_iter()
                .collect();
        let notes = pod_status_notes(&before, &after, "n1");
        let got: Vec<(&str, &str)> = notes
            .iter()
            .map(|n| (n.reason, n.object.name.as_str()))
            .collect();
        assert_eq!(got, [("BackOff", "a"), ("Killing", "gone")]);
        assert_eq!(notes[0].object.namespace, "ns");
        // Still backing off: nothing new.
        assert!(pod_status_notes(&after, &after, "n1").is_empty());
    }
}
