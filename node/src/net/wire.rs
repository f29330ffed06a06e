//! Wire types of the sync protocol and serde helpers shared by shoal's libp2p protocols.
//!
//! Role: what goes on the wire of `/shoal/sync/1` (opaque bytes: the replication layer puts
//! automerge sync messages in them). Owns nothing; used by the network task.

use serde::{Deserialize, Serialize};

/// Protocol name of anti-entropy sync.
pub(crate) const SYNC_PROTOCOL: &str = "/shoal/sync/1";

/// Largest sync request or response accepted, in bytes.
pub(crate) const MAX_SYNC_BYTES: u64 = 32 * 1024 * 1024;

/// A sync request: opaque bytes from the replication layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SyncRequest(#[serde(with = "bytes")] pub Vec<u8>);

/// A sync response: opaque bytes from the replication layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SyncResponse(#[serde(with = "bytes")] pub Vec<u8>);

/// Encodes a `Vec<u8>` as one CBOR byte string rather than an array of integers (which would
/// take up to twice the space).
pub(crate) mod bytes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}
