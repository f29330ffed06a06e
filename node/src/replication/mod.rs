//! Replication of the desired state between nodes, independent of the network that carries it.
//!
//! Role: make every node's automerge document converge. Two mechanisms, as in the
//! architecture:
//! - **gossip**: after every local commit, the changes this node wrote since its last
//!   broadcast are sent to all peers ([`Transport::broadcast`]); a receiver loads them
//!   ([`StateHandle::apply_remote`]). Best effort: a lost message, or changes that build on ones
//!   the receiver lacks, are repaired by the next anti-entropy round. Changes received from
//!   peers are not broadcast again (every node would repeat every write).
//! - **anti-entropy**: every `interval` (jittered), automerge's sync protocol runs with up to
//!   `fanout` random peers ([`Transport::request_sync`]), request after request until neither
//!   side has anything to send (at most `max_exchanges`), and at once with a peer that comes
//!   up. The answers to peers' requests come from the same protocol.
//!
//! Catching up is chunked: a sync message (request or answer) carries at most
//! `max_message_bytes` of changes, and the rest follows in the next exchanges of the round
//! (see `Store::sync_message`). What a round received stays in the document, so a round cut
//! short by `max_exchanges`, a timeout or a lost peer leaves progress for the next one: a
//! node any distance behind catches up in bounded steps, never in one message that the
//! network cannot carry or that takes longer than `request_timeout`. Gossip larger than the
//! bound is not sent: anti-entropy carries it in chunks.
//!
//! Tells, through a watch ([`Replicator::run_with_synced`]), once one of this node's rounds
//! with a peer has gone quiet: this node then holds everything that peer held, so its desired
//! state is up to date with the cluster's as that peer knew it. The node agent waits for it
//! after a start before it starts containers (`agent/boot.rs`).
//!
//! Owns: nothing durable. The document and every sync session stay in the state task; this
//! task holds only the heads of its last broadcast and the set of rounds in flight.
//!
//! Talks to: the state task through a [`StateHandle`]; the network through a [`Transport`]
//! (the libp2p layer implements it and feeds [`Inbound`] events into a bounded channel).
//! The bytes on the wire are described in [`wire`].
//!
//! Sync sessions: a node may run a round with a peer while that peer runs one with it, so the
//! state task keeps one session per peer and direction: `out/PEER` for the rounds this node
//! starts, `in/PEER` for those it answers.

pub mod rng;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::state::{StateError, StateHandle};
use rng::Rng;
use wire::{Frame, WireError};

/// The network as replication sees it. Implemented by the libp2p layer (gossipsub for
/// `broadcast`, request-response for `request_sync`) and by an in-memory hub in tests. Only
/// admitted peers of this cluster may ever appear here.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `data` to every peer, best effort (gossip). Returns once it is queued.
    async fn broadcast(&self, data: Vec<u8>);
    /// Sends a sync request to `peer` and waits for its answer (the bytes that the peer put
    /// in [`Inbound::SyncRequest`]'s `reply`). An error says why there is no answer.
    async fn request_sync(&self, peer: &str, data: Vec<u8>) -> Result<Vec<u8>, String>;
    /// The peers connected now, by their ids.
    fn peers(&self) -> Vec<String>;
}

/// What the network delivers to replication.
#[derive(Debug)]
pub enum Inbound {
    /// A broadcast from `from`.
    Gossip { from: String, data: Vec<u8> },
    /// A sync request from `from`; the answer goes into `reply` (dropping it tells the
    /// requester that there is no answer).
    SyncRequest {
        from: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// A peer connected (or reconnected).
    PeerUp(String),
    /// A peer went away.
    PeerDown(String),
}

/// The default of [`ReplicationConfig::max_message_bytes`]: far under the network's sync limit
/// (32 MiB), and under its gossip limit (1 MiB) with room for the framing.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 768 * 1024;

/// The least [`ReplicationConfig::max_message_bytes`] accepted.
const MIN_MESSAGE_BYTES: usize = 1024;

/// Settings of replication.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationConfig {
    /// The mean time between anti-entropy rounds (each is jittered to 0.5–1.5 times it).
    pub interval: Duration,
    /// The number of random peers synced with per round.
    pub fanout: usize,
    /// The most requests of one round with one peer; a round that has not gone quiet by then
    /// goes on at the next one.
    pub max_exchanges: usize,
    /// How long a sync request may wait for its answer.
    pub request_timeout: Duration,
    /// The most bytes of changes that one sync message (request or answer) or one gossip
    /// message carries; a single larger change still goes alone. Keep it well under the
    /// network's message limits (32 MiB for sync, 1 MiB for gossip) and small enough that a
    /// message crosses the slowest link within `request_timeout`.
    pub max_message_bytes: usize,
    /// The seed of peer choice and jitter: fixed in tests, None (from the OS) otherwise.
    pub seed: Option<u64>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            interval: Duration::from_secs(2),
            fanout: 2,
            max_exchanges: 16,
            request_timeout: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            seed: None,
        }
    }
}

impl ReplicationConfig {
    pub fn validate(&self) -> Result<(), ReplicationError> {
        let bad = |setting, detail: &str| {
            Err(ReplicationError::Config {
                setting,
                detail: detail.into(),
            })
        };
        if self.interval < Duration::from_millis(10) {
            return bad("interval", "must be at least 10ms");
        }
        if self.fanout == 0 {
            return bad("fanout", "must be at least 1");
        }
        if self.max_exchanges == 0 {
            return bad("max_exchanges", "must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be more than 0");
        }
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            return bad("max_message_bytes", "must be at least 1024");
        }
        Ok(())
    }
}

/// Errors of replication: a setting, or one exchange with a peer.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("replication setting {setting}: {detail}")]
    Config {
        setting: &'static str,
        detail: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    #[error("no answer: {0}")]
    Transport(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the peer refused: {0}")]
    Refused(String),
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
}

fn out_session(peer: &str) -> String {
    format!("out/{peer}")
}

fn in_session(peer: &str) -> String {
    format!("in/{peer}")
}

/// The replication task.
pub struct Replicator {
    state: StateHandle,
    transport: Arc<dyn Transport>,
    config: ReplicationConfig,
    rng: Rng,
    /// Rounds in flight, by task, with the peer each runs with.
    rounds: JoinSet<()>,
    running: HashMap<tokio::task::Id, String>,
    /// Peers that asked for a round (came up, sent changes we could not use) while one was
    /// in flight: another starts when it ends.
    again: HashSet<String>,
    /// Set to true once a round has gone quiet (see the module documentation).
    synced: Arc<watch::Sender<bool>>,
}

impl Replicator {
    /// Runs replication until `shutdown` fires, the inbound channel closes or the state store
    /// stops. Call [`ReplicationConfig::validate`] first; out-of-range values are clamped.
    pub async fn run(
        state: StateHandle,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Inbound>,
        config: ReplicationConfig,
        shutdown: CancellationToken,
    ) {
        let (synced, _) = watch::channel(false);
        Replicator::run_with_synced(state, transport, inbound, config, synced, shutdown).await;
    }

    /// [`Replicator::run`], setting `synced` to true once a round with a peer has gone quiet.
    pub async fn run_with_synced(
        state: StateHandle,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Inbound>,
        config: ReplicationConfig,
        synced: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        let mut config = config;
        config.interval = config.interval.max(Duration::from_millis(10));
        config.max_exchanges = config.max_exchanges.max(1);
        config.max_message_bytes = config.max_message_bytes.max(MIN_MESSAGE_BYTES);
        let rng = config.seed.map_or_else(Rng::from_entropy, Rng::seeded);
        let stop = shutdown.child_token();
        let max_message_bytes = config.max_message_bytes;
        let replicator = Replicator {
            state: state.clone(),
            transport: transport.clone(),
            config,
            rng,
            rounds: JoinSet::new(),
            running: HashMap::new(),
            again: HashSet::new(),
            synced: Arc::new(synced),
        };
        // Two loops in one task: the broadcaster waits on the network, the main loop never
        // does (rounds are tasks of their own), so that answering peers never waits behind
        // a slow send.
        tokio::join!(
            broadcast_loop(state, transport, max_message_bytes, stop.clone()),
            replicator.main_loop(inbound, stop),
        );
        tracing::debug!("replication stopped");
    }

    async fn main_loop(mut self, mut inbound: mpsc::Receiver<Inbound>, stop: CancellationToken) {
        let mut next_round = Instant::now() + self.jittered();
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(done) = self.rounds.join_next_with_id(), if !self.rounds.is_empty() => {
                    Event::RoundDone(done)
                }
                msg = inbound.recv() => match msg {
                    Some(msg) => Event::Inbound(msg),
                    None => break,
                },
                _ = tokio::time::sleep_until(next_round) => Event::Tick,
            };
            let handled = match event {
                Event::Tick => {
                    next_round = Instant::now() + self.jittered();
                    self.anti_entropy();
                    Ok(())
                }
                Event::RoundDone(done) => {
                    self.round_done(done);
                    Ok(())
                }
                Event::Inbound(msg) => self.inbound(msg).await,
            };
            if let Err(StateError::Stopped) = handled {
                break;
            }
        }
        // Also ends the broadcaster.
        stop.cancel();
        self.rounds.shutdown().await;
    }

    fn jittered(&mut self) -> Duration {
        self.config
            .interval
            .mul_f64(0.5 + self.rng.below(1000) as f64 / 1000.0)
    }

    /// Starts rounds with up to `fanout` random peers that have none in flight.
    fn anti_entropy(&mut self) {
        let idle: Vec<String> = self
            .transport
            .peers()
            .into_iter()
            .filter(|p| !self.running.values().any(|r| r == p))
            .collect();
        for peer in self.rng.choose(idle, self.config.fanout) {
            self.start_round(peer);
        }
    }

    /// Starts a round with `peer`, or asks for one after the round in flight.
    fn start_round(&mut self, peer: String) {
        if self.running.values().any(|r| *r == peer) {
            self.again.insert(peer);
            return;
        }
        let round = sync_round(
            self.state.clone(),
            self.transport.clone(),
            peer.clone(),
            self.config.clone(),
            self.synced.clone(),
        );
        let handle = self.rounds.spawn(round);
        self.running.insert(handle.id(), peer);
    }

    fn round_done(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                tracing::error!(error = %e, "an anti-entropy round failed");
                e.id()
            }
        };
        if let Some(peer) = self.running.remove(&id)
            && self.again.remove(&peer)
        {
            self.start_round(peer);
        }
    }

    async fn inbound(&mut self, msg: Inbound) -> Result<(), StateError> {
        match msg {
            Inbound::Gossip { from, data } => self.gossip(from, &data).await,
            Inbound::SyncRequest { from, data, reply } => {
                let answer = self.answer(&from, &data).await?;
                // The requester may have given up: nothing to do then.
                let _ = reply.send(answer.encode());
                Ok(())
            }
            Inbound::PeerUp(peer) => {
                tracing::debug!(peer = %peer, "peer up: syncing now");
                self.state.reset_sync(out_session(&peer)).await?;
                self.state.reset_sync(in_session(&peer)).await?;
                self.start_round(peer);
                Ok(())
            }
            Inbound::PeerDown(peer) => {
                tracing::debug!(peer = %peer, "peer down");
                self.again.remove(&peer);
                self.state.reset_sync(out_session(&peer)).await?;
                self.state.reset_sync(in_session(&peer)).await
            }
        }
    }

    async fn gossip(&mut self, from: String, data: &[u8]) -> Result<(), StateError> {
        let changes = match Frame::decode(data) {
            Ok(Frame::Changes(changes)) => changes,
            Ok(_) => {
                tracing::warn!(peer = %from, "gossip that is not changes ignored");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(peer = %from, error = %e, "malformed gossip ignored");
                return Ok(());
            }
        };
        let bytes = changes.len();
        match self.state.apply_remote(changes).await {
            Ok(true) => {
                tracing::debug!(peer = %from, bytes, "gossiped changes applied");
                Ok(())
            }
            Ok(false) => {
                // Changes that wait for ones this node lacks (or that it had already): a sync
                // round with their sender fills the gap now rather than at the next tick.
                tracing::debug!(peer = %from, bytes, "gossiped changes not applicable yet");
                self.start_round(from);
                Ok(())
            }
            Err(StateError::Stopped) => Err(StateError::Stopped),
            Err(e) => {
                tracing::warn!(peer = %from, error = %e, "gossiped changes refused");
                Ok(())
            }
        }
    }

    /// The answer to a peer's sync request. Errors other than a stopped store become a
    /// `Refused` answer, logged here too, so that both sides say why.
    async fn answer(&mut self, from: &str, data: &[u8]) -> Result<Frame, StateError> {
        let (start, message) = match Frame::decode(data) {
            Ok(Frame::Sync { start, message }) => (start, message),
            Ok(_) => return Ok(refuse(from, "a sync request that is not a sync message")),
            Err(e) => return Ok(refuse(from, &e.to_string())),
        };
        let session = in_session(from);
        if start {
            self.state.begin_sync(session.clone()).await?;
        }
        match self.state.receive_sync(session.clone(), message).await {
            Ok(()) => {}
            Err(StateError::Stopped) => return Err(StateError::Stopped),
            Err(e) => return Ok(refuse(from, &e.to_string())),
        }
        match self
            .state
            .sync_message_within(session, self.config.max_message_bytes)
            .await
        {
            Ok(Some(message)) => Ok(Frame::Sync {
                start: false,
                message,
            }),
            Ok(None) => Ok(Frame::Nothing),
            Err(StateError::Stopped) => Err(StateError::Stopped),
            Err(e) => Ok(refuse(from, &e.to_string())),
        }
    }
}

fn refuse(peer: &str, reason: &str) -> Frame {
    tracing::warn!(peer = %peer, reason, "sync request refused");
    Frame::Refused(reason.to_string())
}

enum Event {
    Tick,
    RoundDone(Result<(tokio::task::Id, ()), tokio::task::JoinError>),
    Inbound(Inbound),
}

/// Broadcasts this node's own changes after every commit, coalescing commits that happen
/// while a broadcast is under way.
async fn broadcast_loop(
    state: StateHandle,
    transport: Arc<dyn Transport>,
    max_message_bytes: usize,
    stop: CancellationToken,
) {
    let mut commits = state.subscribe();
    // Changes from before the start are the business of anti-entropy.
    let mut sent = match state.heads().await {
        Ok(heads) => heads,
        Err(e) => {
            tracing::error!(error = %e, "replication cannot read the state's heads");
            stop.cancel();
            return;
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            changed = commits.changed() => if changed.is_err() { break },
        }
        let (changes, heads) = match state.local_changes_since(sent.clone()).await {
            Ok(x) => x,
            Err(StateError::Stopped) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the changes to broadcast");
                continue;
            }
        };
        sent = heads;
        if changes.is_empty() {
            continue;
        }
        if changes.len() > max_message_bytes {
            // The network would drop it (or take too long); anti-entropy sends it in chunks.
            tracing::debug!(
                bytes = changes.len(),
                max_message_bytes,
                "changes too large to gossip: left to anti-entropy"
            );
            continue;
        }
        let frame = Frame::Changes(changes).encode();
        tracing::debug!(bytes = frame.len(), "broadcasting changes");
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            () = transport.broadcast(frame) => {}
        }
    }
}

/// One anti-entropy round with `peer`: sync requests until this side has nothing to send.
async fn sync_round(
    state: StateHandle,
    transport: Arc<dyn Transport>,
    peer: String,
    config: ReplicationConfig,
    synced: Arc<watch::Sender<bool>>,
) {
    let result = exchange(&state, transport.as_ref(), &peer, &config).await;
    crate::metrics::sync_round(&result);
    match result {
        Ok(Some(requests)) => {
            tracing::trace!(peer = %peer, requests, "anti-entropy round done");
            synced.send_if_modified(|s| {
                if *s {
                    return false;
                }
                tracing::info!(peer = %peer, "desired state synced with a peer");
                *s = true;
                true
            });
        }
        Ok(None) => tracing::debug!(
            peer = %peer, max_exchanges = config.max_exchanges,
            "anti-entropy round not quiet yet: it goes on at the next one"
        ),
        Err(ReplicationError::State(StateError::Stopped)) => {}
        Err(e @ ReplicationError::State(StateError::ForeignDocument(_))) => {
            tracing::error!(peer = %peer, error = %e, "anti-entropy refused");
        }
        Err(e) => tracing::warn!(peer = %peer, error = %e, "anti-entropy round failed"),
    }
}

/// The requests of a round; the number sent once quiet, or None after `max_exchanges`.
async fn exchange(
    state: &StateHandle,
    transport: &dyn Transport,
    peer: &str,
    config: &ReplicationConfig,
) -> Result<Option<usize>, ReplicationError> {
    let session = out_session(peer);
    state.begin_sync(session.clone()).await?;
    for sent in 0..config.max_exchanges {
        let Some(message) = state
            .sync_message_within(session.clone(), config.max_message_bytes)
            .await?
        else {
            return Ok(Some(sent));
        };
        let request = Frame::Sync {
            start: sent == 0,
            message,
        }
        .encode();
        let answer = tokio::time::timeout(
            config.request_timeout,
            transport.request_sync(peer, request),
        )
        .await;
        let answer = match answer {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(ReplicationError::Transport(e)),
            Err(_) => Err(ReplicationError::Timeout(config.request_timeout)),
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                // What the session believes was sent may be lost.
                state.reset_sync(session).await?;
                return Err(e);
            }
        };
        match Frame::decode(&answer)? {
            Frame::Sync { message, .. } => state.receive_sync(session.clone(), message).await?,
            Frame::Nothing => {}
            Frame::Refused(reason) => return Err(ReplicationError::Refused(reason)),
            Frame::Changes(_) => return Err(ReplicationError::Unexpected("changes as an answer")),
        }
    }
    Ok(None)
}
