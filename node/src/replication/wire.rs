//! The bytes that replication puts on the network: one version byte, one kind byte, then the
//! payload. Pure: no I/O.
//!
//! ```text
//! [1][1][change chunks]        Changes: gossip of local changes (automerge `save_after` bytes)
//! [1][2][sync message]         SyncStart: the first message of an anti-entropy session
//! [1][3][sync message]         Sync: any later message of the session, either way
//! [1][4]                       Nothing: an answer with nothing to send
//! [1][5][UTF-8 reason]         Refused: the peer refuses the session (another cluster...)
//! ```
//!
//! Why not CBOR: every payload is already a self-describing automerge encoding, so a frame
//! needs no more than a tag; two bytes keep a small write's gossip small. A newer version of
//! the format takes the next version byte; a node refuses versions it does not know, naming
//! them.

/// The only version of the format so far.
pub const VERSION: u8 = 1;

const CHANGES: u8 = 1;
const SYNC_START: u8 = 2;
const SYNC: u8 = 3;
const NOTHING: u8 = 4;
const REFUSED: u8 = 5;

/// One message of the replication protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Changes written on the sender, gossiped to everyone.
    Changes(Vec<u8>),
    /// A message of automerge's sync protocol; `start` marks the first of a session, on which
    /// the receiver starts its side of the session afresh.
    Sync { start: bool, message: Vec<u8> },
    /// The answer to a sync request when the answerer has nothing to send.
    Nothing,
    /// The answer to a sync request that the answerer refused, with its reason.
    Refused(String),
}

/// Why bytes are not a [`Frame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error(
        "replication format version {0}, while this shoald speaks version {VERSION}: \
         upgrade the older node"
    )]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("message kind {0} has no payload")]
    MissingPayload(u8),
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, &[u8]) = match self {
            Frame::Changes(c) => (CHANGES, c),
            Frame::Sync {
                start: true,
                message,
            } => (SYNC_START, message),
            Frame::Sync {
                start: false,
                message,
            } => (SYNC, message),
            Frame::Nothing => (NOTHING, &[]),
            Frame::Refused(reason) => (REFUSED, reason.as_bytes()),
        };
        let mut out = Vec::with_capacity(2 + payload.len());
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
        let (&version, rest) = bytes.split_first().ok_or(WireError::Empty)?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let (&kind, payload) = rest.split_first().ok_or(WireError::Empty)?;
        let needs_payload = |kind| {
            if payload.is_empty() {
                Err(WireError::MissingPayload(kind))
            } else {
                Ok(payload.to_vec())
            }
        };
        match kind {
            CHANGES => Ok(Frame::Changes(needs_payload(kind)?)),
            SYNC_START | SYNC => Ok(Frame::Sync {
                start: kind == SYNC_START,
                message: needs_payload(kind)?,
            }),
            NOTHING => Ok(Frame::Nothing),
            REFUSED => Ok(Frame::Refused(
                String::from_utf8_lossy(payload).into_owned(),
            )),
            other => Err(WireError::Kind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn frames_round_trip() {
        for frame in [
            Frame::Changes(vec![0x85, 0x6f, 1]),
            Frame::Sync {
                start: true,
                message: vec![0x43, 0],
            },
            Frame::Sync {
                start: false,
                message: vec![0x43],
            },
            Frame::Nothing,
            Frame::Refused("another cluster".into()),
            Frame::Refused(String::new()),
        ] {
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        for (bytes, error) in [
            (&[][..], WireError::Empty),
            (&[1], WireError::Empty),
            (&[2, 1, 0], WireError::Version(2)),
            (&[0], WireError::Version(0)),
            (&[1, 9, 0], WireError::Kind(9)),
            (&[1, 1], WireError::MissingPayload(1)),
            (&[1, 3], WireError::MissingPayload(3)),
        ] {
            assert_eq!(Frame::decode(bytes), Err(error), "{bytes:?}");
        }
    }

    #[test]
    fn a_frame_costs_two_bytes() {
        assert_eq!(Frame::Changes(vec![7; 10]).encode().len(), 12);
        assert_eq!(Frame::Nothing.encode(), vec![VERSION, NOTHING]);
    }
}
