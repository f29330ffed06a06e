//! [`NetHandle`]: how the rest of the node asks the network task for something.
//!
//! Role: a cheap, cloneable front of the network task. Owns a bounded command sender; every
//! request carries a `oneshot` for its answer.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use super::{NetError, PeerInfo, Topic};

/// A request to the network task.
#[derive(Debug)]
pub(crate) enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    RequestSync {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    Connect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    Reset {
        peer: PeerId,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
}

/// A handle on the network task. Clone it freely.
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    admitted: watch::Receiver<Vec<PeerId>>,
    local_peer_id: PeerId,
    request_timeout: Duration,
    streams: libp2p_stream::Control,
}

// `libp2p_stream::Control` is not `Debug`.
impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("local_peer_id", &self.local_peer_id)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl NetHandle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        admitted: watch::Receiver<Vec<PeerId>>,
        local_peer_id: PeerId,
        request_timeout: Duration,
        streams: libp2p_stream::Control,
    ) -> Self {
        Self {
            commands,
            admitted,
            local_peer_id,
            request_timeout,
            streams,
        }
    }

    /// Opens a raw stream of `protocol` to an admitted peer (over a connection to it, dialled
    /// if there is none). A peer that has not passed admission is refused here: streams carry
    /// only what the cluster's members may see.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: libp2p::StreamProtocol,
    ) -> Result<libp2p::Stream, NetError> {
        if !self.admitted.borrow().contains(&peer) {
            return Err(NetError::NotAdmitted(peer));
        }
        let mut control = self.streams.clone();
        control
            .open_stream(peer, protocol)
            .await
            .map_err(|e| NetError::Stream {
                peer,
                reason: e.to_string(),
            })
    }

    /// Accepts inbound streams of `protocol`, from any connected peer: the caller checks
    /// [`is_admitted`](Self::is_admitted) before it answers one. `None` if the protocol is
    /// accepted elsewhere already.
    pub fn accept_streams(
        &self,
        protocol: libp2p::StreamProtocol,
    ) -> Option<libp2p_stream::IncomingStreams> {
        self.streams.clone().accept(protocol).ok()
    }

    /// Whether `peer` has passed admission now.
    pub fn is_admitted(&self, peer: &PeerId) -> bool {
        self.admitted.borrow().contains(peer)
    }

    /// The admitted peers now, without asking the task (a snapshot it keeps up to date).
    pub fn admitted_peers(&self) -> Vec<PeerId> {
        self.admitted.borrow().clone()
    }

    /// This node's peer id (derived from its node key).
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Starts dialling `addr`. Returns once the dial has started; the peer shows up in
    /// [`peers`](Self::peers), and as [`NetEvent::PeerAdmitted`](super::NetEvent), if it is
    /// admitted.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|reply| Command::Dial { addr, reply }).await?
    }

    /// Publishes `data` on a cluster topic to the admitted peers. Having no peer is not an
    /// error (anti-entropy will carry the change later).
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), NetError> {
        self.ask(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Sends a sync request to an admitted peer and waits for its answer, at most the
    /// configured request timeout.
    pub async fn request_sync(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, NetError> {
        // libp2p times the request out too; this bounds the wait for the task itself.
        let limit = self.request_timeout + Duration::from_secs(1);
        match tokio::time::timeout(
            limit,
            self.ask(|reply| Command::RequestSync { peer, data, reply }),
        )
        .await
        {
            Ok(answer) => answer?,
            Err(_) => Err(NetError::Timeout(limit)),
        }
    }

    /// Dials `peer` at `addrs` unless it is connected or being dialled (admission still
    /// applies). Fire and forget.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        self.commands
            .send(Command::Connect { peer, addrs })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Closes every connection to `peer` and dials it again, so that both sides start afresh.
    /// Fire and forget.
    pub async fn reset(&self, peer: PeerId) -> Result<(), NetError> {
        self.commands
            .send(Command::Reset { peer })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Peers connected now, and peers refused recently.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// The addresses this node listens on (ports resolved).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(|reply| Command::ListenAddrs { reply }).await
    }
}
