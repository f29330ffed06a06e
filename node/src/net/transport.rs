//! The replication layer's view of the network: [`Transport`] on [`NetHandle`].
//!
//! Role: adapt the network layer to `replication::Transport` (peers named by their
//! [`PeerId`] in base58) and turn [`NetEvent`]s into `replication::Inbound`. Owns nothing.

use async_trait::async_trait;
use libp2p::PeerId;
use tracing::debug;

use super::{NetEvent, NetHandle, Topic};
use crate::replication::{Inbound, Transport};

#[async_trait]
impl Transport for NetHandle {
    /// Gossips on the `state` topic; failures are logged, anti-entropy repairs them.
    async fn broadcast(&self, data: Vec<u8>) {
        if let Err(e) = self.publish(Topic::State, data).await {
            debug!(error = %e, "state broadcast not sent");
        }
    }

    async fn request_sync(&self, peer: &str, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let peer: PeerId = peer
            .parse()
            .map_err(|e| format!("bad peer id {peer:?}: {e}"))?;
        NetHandle::request_sync(self, peer, data)
            .await
            .map_err(|e| e.to_string())
    }

    /// The admitted peers.
    fn peers(&self) -> Vec<String> {
        self.admitted_peers()
            .iter()
            .map(PeerId::to_string)
            .collect()
    }
}

#[async_trait]
impl crate::observed::Publish for NetHandle {
    /// Gossips on the `observed` topic; failures are logged, the next heartbeat repairs them.
    async fn publish(&self, data: Vec<u8>) {
        if let Err(e) = NetHandle::publish(self, Topic::Observed, data).await {
            debug!(error = %e, "observed-state gossip not sent");
        }
    }
}

#[async_trait]
impl crate::events::Publish for NetHandle {
    /// Gossips on the `events` topic; failures are logged (events are best effort).
    async fn publish(&self, data: Vec<u8>) {
        if let Err(e) = NetHandle::publish(self, Topic::Events, data).await {
            debug!(error = %e, "events gossip not sent");
        }
    }
}

/// What replication must hear of a network event: state gossip, sync requests and admitted
/// peers coming and going. Observed-state and events gossip is for others: `None`.
pub fn to_inbound(event: NetEvent) -> Option<Inbound> {
    match event {
        NetEvent::PeerAdmitted(p) => Some(Inbound::PeerUp(p.to_string())),
        NetEvent::PeerGone(p) => Some(Inbound::PeerDown(p.to_string())),
        NetEvent::Gossip {
            from,
            topic: Topic::State,
            data,
        } => Some(Inbound::Gossip {
            from: from.to_string(),
            data,
        }),
        NetEvent::Gossip {
            topic: Topic::Observed | Topic::Events,
            ..
        } => None,
        NetEvent::SyncRequest { from, data, reply } => Some(Inbound::SyncRequest {
            from: from.to_string(),
            data,
            reply,
        }),
    }
}
