//! Observed state on the wire, and the network as the heartbeat task sees it.
//!
//! Messages go on the cluster's `observed` gossip topic as CBOR: either a node's whole
//! [`NodeRecord`] or a beat (name, version, heartbeat time, a fingerprint of the peer id), about 60 bytes, which is what an
//! idle node sends every second; and, only when they change or are asked for, image
//! inventories (see [`super::inventory`]). Pure but for [`Publish`], which the network layer implements.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::NodeRecord;
use super::inventory::Inventory;

/// The largest observed-state message accepted (the gossip layer caps messages at 1 MiB).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// One observed-state message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
// A message lives only while it is decoded and merged, one at a time: boxing the record would
// cost an allocation per message for no saving.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// A node's whole record.
    Record(NodeRecord),
    /// A node is alive; nothing but its heartbeat changed since its record.
    #[serde(rename_all = "camelCase")]
    Beat {
        name: String,
        version: u64,
        heartbeat_at: i64,
        /// [`super::peer_fingerprint`] of the sender's peer id; 0 from older nodes.
        #[serde(default, skip_serializing_if = "is_zero")]
        peer: u32,
    },
    /// A node's image inventory: sent when it changes, when a peer is admitted, and when a
    /// peer asks ([`Message::WantImages`]).
    Images { name: String, inventory: Inventory },
    /// Asks node `name` to send its image inventory again (the asker's copy is older than the
    /// version the node's record names).
    WantImages { name: String },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A message that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("observed-state message: {0}")]
pub struct WireError(String);

impl Message {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(|e| WireError(e.to_string()))?;
        Ok(out)
    }

    pub fn decode(data: &[u8]) -> Result<Message, WireError> {
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(WireError(format!("{} bytes is too large", data.len())));
        }
        ciborium::from_reader(data).map_err(|e| WireError(e.to_string()))
    }
}

/// What reaches the heartbeat task from the network.
#[derive(Debug)]
pub enum Inbound {
    /// A message on the observed topic from an admitted peer.
    Gossip { data: Vec<u8> },
    /// A peer was admitted: it should get this node's whole record soon.
    PeerJoined,
}

/// Sends bytes on the cluster's observed topic, best effort.
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    async fn publish(&self, data: Vec<u8>);
}
