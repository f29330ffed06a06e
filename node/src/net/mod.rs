//! The network layer: one task owns the libp2p [`Swarm`](libp2p::Swarm); the rest of the node
//! holds a cheap [`NetHandle`] and reads [`NetEvent`]s.
//!
//! Role: connect the nodes of one cluster and only them. Transports are TCP (private network
//! keyed by the cluster secret, then Noise and Yamux) and QUIC. Behaviours: gossipsub for the
//! `state` and `observed` topics, request-response for anti-entropy sync (framed by [`wire`]), the `hello`
//! admission check, identify, ping and, when enabled, mDNS.
//!
//! Owns: the swarm, the set of admitted peers, pending requests. Talks to: the replication
//! layer (through [`NetHandle`] and the [`NetEvent`] channel) and, through libp2p, to the
//! other nodes.
//!
//! # Admission
//! A peer without the cluster secret never reaches gossip or sync:
//! - on TCP, the pnet handshake (pre-shared key derived from the secret) fails, so no
//!   connection is ever established;
//! - on every connection (so QUIC too, which pnet cannot wrap), each side challenges the other
//!   with the `/shoal/hello/1` protocol (see [`admission`]). Until a peer has answered
//!   correctly its gossip is rejected, nothing is published to it (its gossipsub application
//!   score is far below the publish and graylist thresholds), and its sync requests are
//!   dropped. A wrong answer, a timeout or a closed connection refuses it and disconnects it.
//!
//! Until then, what such a peer can make this node read is bounded: every sync message
//! opens with a token derived from the cluster secret, which the codec checks before it reads
//! on (32 bytes, then the stream is dropped: see [`wire`]); hello messages are capped at
//! 1 KiB; raw streams are dropped unread by their servers unless the peer is admitted.
//! Gossipsub reads one message of at most its `max_transmit_size` (1 MiB) at a time from any
//! connection before it can tell whom to ignore: its limit is one for all peers, so that
//! bound stays at 1 MiB, and such a peer's messages are dropped once read.

mod admission;
mod behaviour;
mod bound_tcp;
mod handle;
mod task;
mod transport;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

pub use handle::NetHandle;
pub use task::NetTask;
pub use transport::to_inbound;

/// Settings of the network layer.
#[derive(Clone)]
pub struct NetConfig {
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/7946` and `/ip4/0.0.0.0/udp/7946/quic-v1`.
    pub listen: Vec<Multiaddr>,
    /// The cluster's id; names the gossip topics and is announced by identify.
    pub cluster_id: String,
    /// The cluster secret; only peers that know it are admitted.
    pub cluster_secret: [u8; 32],
    /// Ed25519 seed of this node's key; its public key is the node's [`PeerId`].
    pub node_key: [u8; 32],
    /// This node's name, told to admitted peers.
    pub node_name: String,
    /// Addresses dialled at start, and again while no peer is admitted.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the LAN with mDNS (they must still pass admission).
    pub mdns: bool,
    /// Size of every channel between the network task and the rest of the node.
    pub channel_size: usize,
    /// How long a sync request (or the admission check) may take.
    pub request_timeout: Duration,
}

impl NetConfig {
    /// A configuration with defaults for everything but the cluster and node identity:
    /// listen on all interfaces, port 7946 (TCP and QUIC), no bootstrap, mDNS on.
    pub fn new(
        cluster_id: impl Into<String>,
        cluster_secret: [u8; 32],
        node_key: [u8; 32],
        node_name: impl Into<String>,
    ) -> Self {
        let listen = ["/ip4/0.0.0.0/tcp/7946", "/ip4/0.0.0.0/udp/7946/quic-v1"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        Self {
            listen,
            cluster_id: cluster_id.into(),
            cluster_secret,
            node_key,
            node_name: node_name.into(),
            bootstrap: Vec::new(),
            mdns: true,
            channel_size: 256,
            request_timeout: Duration::from_secs(10),
        }
    }
}

// Keeps the secret and the key out of logs.
impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetConfig")
            .field("listen", &self.listen)
            .field("cluster_id", &self.cluster_id)
            .field("cluster_secret", &"<redacted>")
            .field("node_key", &"<redacted>")
            .field("node_name", &self.node_name)
            .field("bootstrap", &self.bootstrap)
            .field("mdns", &self.mdns)
            .field("channel_size", &self.channel_size)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A gossip topic of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Desired-state changes (automerge changes): `shoal/<cluster_id>/state`.
    State,
    /// Observed soft state (heartbeats, capacity, pod status): `shoal/<cluster_id>/observed`.
    Observed,
    /// Cluster events (soft state): `shoal/<cluster_id>/events`. Nodes of versions without
    /// events never subscribe, so they never receive it.
    Events,
}

impl Topic {
    /// The gossipsub topic name for a cluster.
    pub fn name(self, cluster_id: &str) -> String {
        match self {
            Topic::State => format!("shoal/{cluster_id}/state"),
            Topic::Observed => format!("shoal/{cluster_id}/observed"),
            Topic::Events => format!("shoal/{cluster_id}/events"),
        }
    }
}

/// What this node knows of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub peer_id: PeerId,
    /// Addresses the peer listens on (from identify), then those of our connections to it.
    pub addrs: Vec<Multiaddr>,
    /// It proved the cluster secret; gossip and sync flow with it.
    pub admitted: bool,
    /// At least one connection to it is open.
    pub connected: bool,
    /// Its node name, as it told us when it was admitted.
    pub node_name: Option<String>,
    /// Why it was refused, if it was (recent refusals are kept for a while).
    pub refused: Option<String>,
}

/// What the network layer tells the rest of the node.
///
/// Events are hints delivered on a bounded channel: when the channel is full they are dropped
/// (with a warning), so consumers must converge anyway: [`NetHandle::peers`] is the truth about
/// peers, and anti-entropy repairs lost gossip.
#[derive(Debug)]
pub enum NetEvent {
    /// A peer proved the cluster secret.
    PeerAdmitted(PeerId),
    /// An admitted peer's last connection closed.
    PeerGone(PeerId),
    /// A gossip message from an admitted peer. `from` is the message's (signed) author.
    Gossip {
        from: PeerId,
        topic: Topic,
        data: Vec<u8>,
    },
    /// An admitted peer asks to sync; send the answer on `reply` (dropping it answers nothing,
    /// and the peer's request fails).
    SyncRequest {
        from: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
}

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the node key is not a valid ed25519 seed: {0}")]
    NodeKey(#[source] libp2p::identity::DecodingError),
    #[error("cannot build the libp2p stack: {0}")]
    Build(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("cannot dial {addr}: {reason}")]
    Dial { addr: Multiaddr, reason: String },
    #[error("cannot publish on {topic:?}: {reason}")]
    Publish { topic: Topic, reason: String },
    #[error("peer {0} is not admitted (it has not proved the cluster secret)")]
    NotAdmitted(PeerId),
    #[error("sync with {peer} failed: {reason}")]
    Sync { peer: PeerId, reason: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the network task has stopped")]
    Stopped,
    #[error("cannot open a stream to {peer}: {reason}")]
    Stream { peer: PeerId, reason: String },
}

/// Builds the swarm and starts listening. Nothing runs until [`NetTask::run`] is polled
/// (spawn it); the handle can be used at once, its commands wait in the channel.
pub fn start(
    config: NetConfig,
) -> Result<(NetHandle, NetTask, mpsc::Receiver<NetEvent>), NetError> {
    let channel_size = config.channel_size.max(1);
    let (cmd_tx, cmd_rx) = mpsc::channel(channel_size);
    let (ev_tx, ev_rx) = mpsc::channel(channel_size);
    let (admitted_tx, admitted_rx) = watch::channel(Vec::new());
    let task = NetTask::new(config.clone(), cmd_rx, ev_tx, admitted_tx)?;
    let handle = NetHandle::new(
        cmd_tx,
        admitted_rx,
        task.local_peer_id(),
        config.request_timeout,
        task.stream_control(),
    );
    Ok((handle, task, ev_rx))
}
