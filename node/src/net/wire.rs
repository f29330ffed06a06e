//! Wire types of the sync protocol and serde helpers shared by shoal's libp2p protocols.
//!
//! Role: what goes on the wire of `/shoal/sync/2` (opaque bytes: the replication layer puts
//! automerge sync messages in them) and the codec that reads and writes it. Owns nothing;
//! used by the network task.
//!
//! ```text
//! [32-byte sync token][u32 big-endian length][length bytes]     request or response
//! ```
//!
//! The token is derived from the cluster secret ([`ClusterKeys`](super::admission)), and the
//! codec reads it, and checks it, before anything else: a peer without the secret (possible
//! on QUIC, which no pre-shared key guards, until admission refuses it) makes this node read
//! [`TOKEN_LEN`] bytes and no more, where the request-response layer would otherwise buffer up
//! to [`MAX_SYNC_BYTES`] of its request before the network task sees who sent it. The token
//! is only ever sent inside an encrypted connection (Noise or QUIC's TLS) and only to
//! admitted peers, who know the secret anyway; the admission check itself, which binds both
//! peer ids, still decides whether a request is answered.

use std::io;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol name of anti-entropy sync (version 2: token-framed, see the module doc).
pub(crate) const SYNC_PROTOCOL: &str = "/shoal/sync/2";

/// Largest sync request or response accepted, in bytes.
pub(crate) const MAX_SYNC_BYTES: u64 = 32 * 1024 * 1024;

/// Length of the sync token that opens every sync message.
pub(crate) const TOKEN_LEN: usize = 32;

/// A sync request: opaque bytes from the replication layer.
#[derive(Debug, Clone)]
pub(crate) struct SyncRequest(pub Vec<u8>);

/// A sync response: opaque bytes from the replication layer.
#[derive(Debug, Clone)]
pub(crate) struct SyncResponse(pub Vec<u8>);

/// The request-response codec of `/shoal/sync/2`.
#[derive(Clone)]
pub(crate) struct SyncCodec {
    token: [u8; TOKEN_LEN],
    max: u64,
}

impl SyncCodec {
    /// A codec that sends and demands `token`, and refuses messages over `max` bytes.
    pub(crate) fn new(token: [u8; TOKEN_LEN], max: u64) -> Self {
        Self { token, max }
    }

    async fn read<T: AsyncRead + Unpin + Send>(&self, io: &mut T) -> io::Result<Vec<u8>> {
        let mut token = [0u8; TOKEN_LEN];
        io.read_exact(&mut token).await?;
        // Constant time, as for any secret.
        let differs = token
            .iter()
            .zip(&self.token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "sync message without this cluster's token: not read",
            ));
        }
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u64::from(u32::from_be_bytes(len));
        if len > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sync message of {len} bytes exceeds {} bytes", self.max),
            ));
        }
        let mut data = Vec::new();
        io.take(len).read_to_end(&mut data).await?;
        if data.len() as u64 != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(data)
    }

    async fn write<T: AsyncWrite + Unpin + Send>(&self, io: &mut T, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len())
            .ok()
            .filter(|len| u64::from(*len) <= self.max)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "sync message of {} bytes exceeds {} bytes",
                        data.len(),
                        self.max
                    ),
                )
            })?;
        io.write_all(&self.token).await?;
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(data).await?;
        io.flush().await
    }
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io).await.map(SyncRequest)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io).await.map(SyncResponse)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write(io, &req.0).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write(io, &res.0).await
    }
}

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    use super::*;

    #[test]
    fn a_message_round_trips_and_a_wrong_token_is_refused_after_the_token() {
        let codec = SyncCodec::new([1; TOKEN_LEN], 1024);
        let mut buf = Cursor::new(Vec::new());
        block_on(codec.write(&mut buf, b"hello")).unwrap();
        let bytes = buf.into_inner();
        assert_eq!(bytes.len(), TOKEN_LEN + 4 + 5);
        let mut input = Cursor::new(bytes.clone());
        assert_eq!(block_on(codec.read(&mut input)).unwrap(), b"hello");

        let stranger = SyncCodec::new([2; TOKEN_LEN], 1024);
        let mut input = Cursor::new(bytes);
        let err = block_on(stranger.read(&mut input)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(input.position(), TOKEN_LEN as u64, "read past the token");
    }

    #[test]
    fn oversized_messages_are_refused_both_ways() {
        let small = SyncCodec::new([1; TOKEN_LEN], 4);
        let mut buf = Cursor::new(Vec::new());
        assert!(block_on(small.write(&mut buf, b"hello")).is_err());

        let big = SyncCodec::new([1; TOKEN_LEN], 1024);
        let mut buf = Cursor::new(Vec::new());
        block_on(big.write(&mut buf, b"hello")).unwrap();
        let mut input = Cursor::new(buf.into_inner());
        let err = block_on(small.read(&mut input)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(input.position(), TOKEN_LEN as u64 + 4);
    }
}
