//! `exec` into a pod's container: a plain request runs the command to completion and answers
//! `{"exitCode", "stdout", "stderr"}`; a request with `Connection: Upgrade` and
//! `Upgrade: shoal-exec` switches the connection (101) to a framed stream between the client
//! and an interactive [`Runtime::exec`] session.
//!
//! The framing, in both directions: one byte of stream id, a big-endian `u32` payload length,
//! the payload.
//!
//! | id | direction | payload |
//! |---|---|---|
//! | 0 stdin | client → node | bytes for the process's stdin; an empty payload closes stdin |
//! | 1 stdout | node → client | output (all output when the session has a TTY) |
//! | 2 stderr | node → client | error output |
//! | 3 exit | node → client | the exit code, big-endian `i64`; the last frame |
//! | 4 resize | client → node | width and height of the terminal, big-endian `u16` each |
//! | 5 error | node → client | UTF-8 text: the session failed; the last frame |
//!
//! The client never half-closes its side: end of input is the empty stdin frame, and a
//! connection that closes means the client is gone, which ends the session.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, Request};
use axum::http::header::{CONNECTION, UPGRADE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ApiState;
use super::error::ApiError;
use super::pods::{self, ExecQuery};
use crate::runtime::{ExecChunk, ExecSession, ExecSpec, Runtime};

pub use shoal_protocol::exec::{
    ERROR, EXIT, RESIZE, STDERR, STDIN, STDOUT, UPGRADE_PROTOCOL, decode_resize, encode,
};
use shoal_protocol::exec::{HEADER_LEN, parse_header};

/// Reads one frame; `None` at a clean end of the connection (before a frame starts).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    match r.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut header[1..]).await?;
    let (stream, len) = parse_header(header)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((stream, payload)))
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    let has = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(CONNECTION, "upgrade") && has(UPGRADE, UPGRADE_PROTOCOL)
}

/// `POST /api/v1/namespaces/{ns}/pods/{name}/exec?container=C&command=...`.
pub async fn exec(
    api: &ApiState,
    ns: &str,
    name: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map_err(|e| ApiError::bad_request(format!("cannot read the exec parameters: {e}")))?;
    let q = ExecQuery::from_pairs(pairs)?;
    let target = pods::exec_target(api, ns, name, &q).await?;
    if !wants_upgrade(req.headers()) {
        if q.stdin || q.tty {
            return Err(ApiError::bad_request(format!(
                "stdin and tty need an interactive session: send Connection: Upgrade and \
                 Upgrade: {UPGRADE_PROTOCOL}"
            )));
        }
        return Ok(Json(pods::exec_output(&target, &q).await?).into_response());
    }
    let spec = ExecSpec {
        cmd: q.command.clone(),
        tty: q.tty,
        stdin: q.stdin,
    };
    // Started before answering 101, so that a failure is still an ordinary error answer.
    let session = target
        .runtime
        .exec(&target.container_id, &spec)
        .await
        .map_err(|e| pods::runtime_error(name, &e))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let runtime = target.runtime.clone();
    let pod = name.to_string();
    tracing::info!(namespace = ns, pod = %pod, tty = q.tty, stdin = q.stdin, "exec session");
    // A detached task: the session lives as long as the connection or the process, past the
    // request's own lifetime, which is how hyper hands over upgraded connections.
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => pump(TokioIo::new(upgraded), session, runtime).await,
            Err(e) => tracing::warn!(pod = %pod, error = %e, "exec upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    Ok(resp)
}

/// Carries one session over a switched connection until the process ends or the client goes.
pub async fn pump<S>(io: S, session: ExecSession, runtime: Arc<dyn Runtime>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let ExecSession {
        exec_id,
        mut output,
        input,
    } = session;
    let (rt, id) = (runtime.clone(), exec_id.clone());
    let mut reader = tokio::spawn(async move {
        let mut input = input;
        loop {
            match read_frame(&mut rd).await {
                Ok(Some((STDIN, payload))) if payload.is_empty() => {
                    if let Some(mut i) = input.take() {
                        let _ = i.shutdown().await;
                    }
                }
                Ok(Some((STDIN, payload))) => {
                    if let Some(i) = input.as_mut()
                        && (i.write_all(&payload).await.is_err() || i.flush().await.is_err())
                    {
                        input = None;
                    }
                }
                Ok(Some((RESIZE, payload))) => {
                    if let Some((w, h)) = decode_resize(&payload) {
                        let _ = rt.exec_resize(&id, w, h).await;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
    let mut failed = None;
    loop {
        let chunk = tokio::select! {
            chunk = output.next() => chunk,
            _ = &mut reader => {
                tracing::debug!(exec = %exec_id, "exec client went away");
                return;
            }
        };
        let frame = match chunk {
            None => break,
            Some(Ok(ExecChunk::Stdout(b))) => encode(STDOUT, &b),
            Some(Ok(ExecChunk::Stderr(b))) => encode(STDERR, &b),
            Some(Err(e)) => {
                failed = Some(e.to_string());
                break;
            }
        };
        if wr.write_all(&frame).await.is_err() {
            reader.abort();
            return;
        }
    }
    let last = match failed {
        Some(message) => encode(ERROR, message.as_bytes()),
        None => match exit_code(runtime.as_ref(), &exec_id).await {
            Some(code) => encode(EXIT, &shoal_protocol::exec::exit_payload(code)),
            None => encode(ERROR, b"the command's exit code is unknown"),
        },
    };
    let _ = wr.write_all(&last).await;
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    reader.abort();
}

/// The exit code once the engine knows it: the output can end a moment before.
async fn exit_code(runtime: &dyn Runtime, exec_id: &str) -> Option<i64> {
    for _ in 0..50 {
        match runtime.exec_exit_code(exec_id).await {
            Ok(Some(code)) => return Some(code),
            Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                tracing::warn!(exec = exec_id, error = %e, "exec exit code");
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let mut bytes = encode(STDOUT, b"hello");
        bytes.extend(encode(STDIN, b""));
        bytes.extend(encode(EXIT, &7i64.to_be_bytes()));
        assert_eq!(&bytes[..5], &[1, 0, 0, 0, 5]);
        let mut r = bytes.as_slice();
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), Some((STDIN, vec![])));
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some((EXIT, 7i64.to_be_bytes().to_vec()))
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
        let mut cut: &[u8] = &[1, 0, 0];
        assert!(read_frame(&mut cut).await.is_err());
        let mut huge: &[u8] = &[1, 0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut huge).await.is_err());
        assert_eq!(decode_resize(&[0, 80, 0, 24]), Some((80, 24)));
        assert_eq!(decode_resize(&[0, 80]), None);
    }

    #[test]
    fn upgrade_headers() {
        let mut h = HeaderMap::new();
        assert!(!wants_upgrade(&h));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("shoal-exec"));
        assert!(wants_upgrade(&h));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!wants_upgrade(&h));
    }
}
