//! The framing of an interactive `exec` stream: after the HTTP upgrade (`Upgrade:
//! shoal-exec`), client and node exchange frames of one byte naming the stream, a big-endian
//! `u32` length, then the payload. Shared by the node and the CLI; reading the bytes is theirs.

/// The `Upgrade` protocol name of an interactive exec.
pub const UPGRADE_PROTOCOL: &str = "shoal-exec";

/// Client → node: bytes for the command's standard input; an empty payload closes it.
pub const STDIN: u8 = 0;
/// Node → client: the command's standard output.
pub const STDOUT: u8 = 1;
/// Node → client: the command's standard error.
pub const STDERR: u8 = 2;
/// Node → client: the exit code, a big-endian `i64`; the last frame.
pub const EXIT: u8 = 3;
/// Client → node: the terminal's width and height, two big-endian `u16`.
pub const RESIZE: u8 = 4;
/// Node → client: a message saying why the session failed.
pub const ERROR: u8 = 5;

/// The largest payload a frame may carry; a peer that announces more is broken or hostile.
pub const MAX_FRAME: usize = 1 << 20;

/// The length of a frame header.
pub const HEADER_LEN: usize = 5;

/// Encodes `payload` on `stream`; a payload larger than [`MAX_FRAME`] becomes several frames.
pub fn encode(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
    let mut push = |chunk: &[u8]| {
        out.push(stream);
        // A chunk is at most MAX_FRAME bytes, so its length fits a u32.
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    };
    if payload.is_empty() {
        push(payload);
    } else {
        for chunk in payload.chunks(MAX_FRAME) {
            push(chunk);
        }
    }
    out
}

/// The stream and payload length a header announces, or why it cannot be accepted.
pub fn parse_header(header: [u8; HEADER_LEN]) -> Result<(u8, usize), String> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(format!(
            "exec frame of {len} bytes is larger than {MAX_FRAME}"
        ));
    }
    Ok((header[0], len))
}

/// The payload of a resize frame.
pub fn resize_payload(width: u16, height: u16) -> Vec<u8> {
    let mut p = width.to_be_bytes().to_vec();
    p.extend_from_slice(&height.to_be_bytes());
    p
}

/// Width and height of a resize frame.
pub fn decode_resize(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [a, b, c, d] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

/// The payload of an exit frame.
pub fn exit_payload(code: i64) -> Vec<u8> {
    code.to_be_bytes().to_vec()
}

/// The exit code of an exit frame, as a process exit code (0-255; out of range is 1).
pub fn exit_code(payload: &[u8]) -> Option<u8> {
    let bytes: [u8; 8] = payload.try_into().ok()?;
    let code = i64::from_be_bytes(bytes);
    Some(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn frames_round_trip() {
        let bytes = encode(STDOUT, b"hello");
        let (stream, len) = parse_header(bytes[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!((stream, len), (STDOUT, 5));
        assert_eq!(&bytes[HEADER_LEN..], b"hello");
        assert_eq!(
            encode(STDIN, b"").len(),
            HEADER_LEN,
            "an empty frame closes stdin"
        );
        let big = vec![7u8; MAX_FRAME + 1];
        assert_eq!(encode(STDOUT, &big).len(), big.len() + 2 * HEADER_LEN);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut h = [STDOUT, 0, 0, 0, 0];
        h[1..].copy_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(parse_header(h).is_err());
    }

    #[test]
    fn resize_and_exit() {
        assert_eq!(decode_resize(&resize_payload(80, 24)), Some((80, 24)));
        assert_eq!(decode_resize(b"xyz"), None);
        assert_eq!(exit_code(&exit_payload(0)), Some(0));
        assert_eq!(exit_code(&exit_payload(7)), Some(7));
        assert_eq!(exit_code(&exit_payload(300)), Some(1));
        assert_eq!(exit_code(&exit_payload(-1)), Some(1));
        assert_eq!(exit_code(b"short"), None);
    }
}
