//! `exec`: runs a command in a pod's container over an upgraded HTTP/1.1 connection, framed as
//! the node's API describes (docs/api.md, "Exec"): one byte of stream id, a big-endian `u32`
//! length, the payload. The output streams as it comes; the remote exit code becomes ours.
//!
//! The connection is a plain `TcpStream` with the request written by hand: the HTTP client
//! cannot hand over a switched connection. Nodes serve plain HTTP.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use super::Session;
use crate::ExitWith;
use crate::args::ExecArgs;
use crate::client::{ClientError, segment};

pub use shoal_protocol::exec::{
    ERROR, EXIT, MAX_FRAME, RESIZE, STDERR, STDIN, STDOUT, UPGRADE_PROTOCOL, encode, exit_code,
    resize_payload,
};
use shoal_protocol::exec::{HEADER_LEN, parse_header};

/// Reads one frame; `None` when the connection ends before a frame starts.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    match r.read_exact(&mut header[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut header[1..])?;
    let (stream, len) = parse_header(header)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((stream, payload)))
}

/// Percent-encodes a query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `host:port` of a node URL; only `http://` can be switched to an exec stream.
pub fn host_port(base: &str) -> Result<String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("exec needs a plain http:// node URL, got {base}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        anyhow::bail!("the node URL {base} names no host");
    }
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

/// The request line's target of an exec.
pub fn exec_target(namespace: &str, a: &ExecArgs) -> String {
    let mut q = Vec::new();
    if let Some(c) = &a.container {
        q.push(format!("container={}", query_escape(c)));
    }
    for word in &a.command {
        q.push(format!("command={}", query_escape(word)));
    }
    if a.stdin {
        q.push("stdin=true".into());
    }
    if a.tty {
        q.push("tty=true".into());
    }
    format!(
        "/api/v1/namespaces/{}/pods/{}/exec?{}",
        segment(namespace),
        segment(&a.pod),
        q.join("&")
    )
}

/// Puts the terminal in raw mode while alive (through `stty`, as the workspace allows no
/// `unsafe`), and restores it on drop.
struct RawTerminal {
    saved: Option<String>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        let saved = stty(&["-g"]).filter(|s| !s.is_empty());
        if saved.is_some() && stty(&["raw", "-echo"]).is_none() {
            return RawTerminal { saved: None };
        }
        RawTerminal { saved }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = stty(&[saved.as_str()]);
        }
    }
}

/// Runs `stty` on our terminal (stdin); its output, or None when it failed.
fn stty(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("stty")
        .args(args)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The terminal's size as `stty size` says (rows, then columns).
fn terminal_size() -> Option<(u16, u16)> {
    let text = stty(&["size"])?;
    let mut it = text.split_whitespace();
    let rows = it.next()?.parse().ok()?;
    let cols = it.next()?.parse().ok()?;
    Some((cols, rows))
}

pub fn run(s: &Session, a: &ExecArgs) -> Result<()> {
    let base = s.client.base().to_string();
    let authority = host_port(&base)?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| s.client.io_error(&e))?
        .next()
        .ok_or_else(|| anyhow!("{authority} resolves to no address"))?;
    let timeout = Duration::from_secs(s.client.timeout_secs().max(1));
    let mut stream = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(10)))
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                s.client.io_error(&e)
            } else {
                ClientError::Unreachable {
                    url: base.clone(),
                    cause: e.to_string().to_lowercase(),
                }
            }
        })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| s.client.io_error(&e))?;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: shoal/{}\r\n\
         Connection: Upgrade\r\nUpgrade: {UPGRADE_PROTOCOL}\r\nContent-Length: 0\r\n",
        exec_target(&s.namespace, a),
        shoal_protocol::VERSION
    );
    if let Some(t) = s.client.token() {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| s.client.io_error(&e))?;

    let mut reader = BufReader::new(stream.try_clone().map_err(|e| s.client.io_error(&e))?);
    let (code, headers) = read_head(&mut reader).map_err(|e| s.client.io_error(&e))?;
    if code != 101 {
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_FRAME);
        let mut body = vec![0u8; len];
        reader
            .read_exact(&mut body)
            .map_err(|e| s.client.io_error(&e))?;
        return Err(s.client.error_from(code, &body).into());
    }
    // From here the session may be idle for as long as the command runs.
    stream
        .set_read_timeout(None)
        .map_err(|e| s.client.io_error(&e))?;

    let interactive_tty = a.tty && std::io::stdin().is_terminal();
    let _raw = interactive_tty.then(RawTerminal::enter);
    if a.tty
        && let Some((w, h)) = terminal_size()
    {
        let _ = stream.write_all(&encode(RESIZE, &resize_payload(w, h)));
    }
    if a.stdin {
        let mut to_node = stream.try_clone().context("cannot share the connection")?;
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 8192];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = to_node.write_all(&encode(STDIN, &[]));
                        return;
                    }
                    Ok(n) => {
                        if to_node.write_all(&encode(STDIN, &buf[..n])).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let outcome = pump_output(&mut reader);
    drop(_raw);
    match outcome? {
        0 => Ok(()),
        code => Err(ExitWith(code).into()),
    }
}

/// Copies output frames to stdout and stderr until the exit frame; returns the exit code.
fn pump_output(reader: &mut impl Read) -> Result<u8> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        let frame = read_frame(reader).context("the exec connection broke")?;
        match frame {
            Some((STDOUT, p)) => {
                let _ = stdout.write_all(&p).and_then(|()| stdout.flush());
            }
            Some((STDERR, p)) => {
                let _ = stderr.write_all(&p).and_then(|()| stderr.flush());
            }
            Some((EXIT, p)) => {
                return exit_code(&p).ok_or_else(|| anyhow!("the node sent a bad exit code"));
            }
            Some((ERROR, p)) => anyhow::bail!("{}", String::from_utf8_lossy(&p)),
            Some(_) => {}
            None => anyhow::bail!("the node closed the exec connection before the command ended"),
        }
    }
}

/// Reads an HTTP/1.1 response head: the status code and the headers.
pub fn read_head(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    let mut total = 0;
    let mut next_line = |line: &mut String| -> std::io::Result<()> {
        line.clear();
        let n = r.read_line(line)?;
        total += n;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the node closed the connection",
            ));
        }
        if total > 64 * 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the answer's head is too long",
            ));
        }
        Ok(())
    };
    next_line(&mut line)?;
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("the node's answer is not HTTP"))?;
    let mut headers = Vec::new();
    loop {
        next_line(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            return Ok((code, headers));
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut bytes = encode(STDOUT, b"hi\n");
        bytes.extend(encode(STDIN, b""));
        bytes.extend(encode(RESIZE, &resize_payload(80, 24)));
        bytes.extend(encode(EXIT, &3i64.to_be_bytes()));
        assert_eq!(&bytes[..8], &[1, 0, 0, 0, 3, b'h', b'i', b'\n']);
        let mut r = bytes.as_slice();
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((STDOUT, b"hi\n".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some((STDIN, vec![])));
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((RESIZE, vec![0, 80, 0, 24]))
        );
        let (id, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((id, exit_code(&p)), (EXIT, Some(3)));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        assert!(read_frame(&mut &[2u8, 0, 0][..]).is_err(), "cut header");
        assert!(
            read_frame(&mut &[2u8, 0xff, 0, 0, 0][..]).is_err(),
            "too long"
        );
        assert_eq!(exit_code(&(-1i64).to_be_bytes()), Some(1));
        assert_eq!(exit_code(&[0, 1]), None);
    }

    #[test]
    fn output_frames_reach_the_exit_code() {
        let mut bytes = encode(STDOUT, b"");
        bytes.extend(encode(EXIT, &42i64.to_be_bytes()));
        assert_eq!(pump_output(&mut bytes.as_slice()).unwrap(), 42);
        let err = encode(ERROR, b"container gone");
        let msg = pump_output(&mut err.as_slice()).unwrap_err().to_string();
        assert_eq!(msg, "container gone");
        assert!(pump_output(&mut &[][..]).is_err());
    }

    #[test]
    fn request_target_and_host() {
        let a = ExecArgs {
            pod: "web-0".into(),
            container: Some("app".into()),
            stdin: true,
            tty: false,
            command: vec!["sh".into(), "-c".into(), "echo a+b &".into()],
        };
        assert_eq!(
            exec_target("default", &a),
            "/api/v1/namespaces/default/pods/web-0/exec?container=app&command=sh&command=-c&\
             command=echo%20a%2Bb%20%26&stdin=true"
        );
        assert_eq!(
            host_port("http://127.0.0.1:7070").unwrap(),
            "127.0.0.1:7070"
        );
        assert_eq!(host_port("http://node").unwrap(), "node:80");
        assert_eq!(host_port("http://[::1]:7070").unwrap(), "[::1]:7070");
        assert!(host_port("https://node:7070").is_err());
    }

    #[test]
    fn response_head() {
        let text = "HTTP/1.1 101 Switching Protocols\r\nupgrade: shoal-exec\r\n\r\nrest";
        let mut r = BufReader::new(text.as_bytes());
        let (code, headers) = read_head(&mut r).unwrap();
        assert_eq!(code, 101);
        assert_eq!(headers, vec![("upgrade".into(), "shoal-exec".into())]);
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "rest");
        assert!(read_head(&mut BufReader::new(&b"garbage\r\n\r\n"[..])).is_err());
    }
}
