//! The TCP proxy of one listening port: accepts connections and splices each one to a target
//! of the port's current [`Route`](super::table::Route). The candidates are tried in turn,
//! those that look down now last ([`Table::order`]), each attempt bounded by a short timeout,
//! until one answers or every one was tried; a target that failed is remembered
//! ([`SharedFailures`]) so that the next connections try it last. A port without a ready
//! target closes the connection at once.
//!
//! A hop to another node's proxy can connect and still fail: that node is up but its
//! endpoint is not (its engine just stopped, before the table here knows). Such a proxy, with
//! no endpoint of its own to reach for a connection that came from a node, closes it with a
//! reset, having read nothing of it. The proxy that forwarded it keeps what the client sent
//! until the first byte of the answer (at most [`REPLAY_LIMIT`]) and, on a reset before any
//! answer, sends it again to its next candidate: nothing reached an endpoint, so nothing is
//! done twice, and the client sees one slower answer instead of a failure.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::health::SharedFailures;
use super::table::{Listener, Table, Target};

/// How long one connection attempt may take while other candidates remain. A powered-off
/// machine is silent (no RST, no ICMP): only a timeout tells. On a LAN a handshake takes well
/// under 10 ms (a few tens on a busy Wi-Fi), and a lost SYN would only be sent again after
/// Linux's initial retransmission timeout of 1 s, so waiting longer than a few hundred ms buys
/// nothing but delay. 250 ms leaves room for a slow link and keeps a connection that meets one
/// silent target (before membership or [`SharedFailures`] put it last) well inside a client's
/// 1 s timeout. Pods of this node answer within a millisecond unless their backlog is full.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the last candidate gets: with nothing left to fall back on, waiting helps (a
/// backlog that drains, a SYN sent again after 1 s), as a client without a proxy would wait.
pub(crate) const LAST_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most a client may send through a hop to another node's proxy before the first byte of
/// the answer for the request to be sent again to another candidate when that hop resets.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// Serves `listener` (the socket of `listener_at`) until `stop`, forwarding with the newest table of `table`.
/// `source`: this node's address, which connections to other nodes' proxies come from, so that
/// those recognise a node and do not forward them again. `pods`: the listener is on the pod
/// network's gateway, where every client is a pod of this node.
pub(crate) async fn serve(
    listener: TcpListener,
    listener_at: Listener,
    table: watch::Receiver<Arc<Table>>,
    source: Option<IpAddr>,
    failures: SharedFailures,
    stop: CancellationToken,
) {
    let (key, pods) = (listener_at.key, listener_at.pods);
    let connections = TaskTracker::new();
    let mut turn: usize = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (client, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off a little rather than spin.
                tracing::warn!(port = %key, error = %e, "accepting a connection failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let current = table.borrow().clone();
        let Some(route) = current.route(&listener_at) else {
            continue;
        };
        let from_node = current.from_node(pods, peer.ip());
        let now = Instant::now();
        let candidates = current.order(
            route.candidates(from_node, turn),
            &failures.recent(now),
            now,
        );
        turn = turn.wrapping_add(1);
        if candidates.is_empty() {
            tracing::debug!(port = %key, service = %route.service, client = %peer, from_node,
                "no ready endpoint: connection closed");
            continue;
        }
        let service: Arc<str> = Arc::from(route.service.as_str());
        let stop = stop.clone();
        let failures = failures.clone();
        connections.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = forward(client, peer, candidates, source, failures, service, from_node) => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Connects to the first candidate that answers and copies both ways until both sides close.
/// A hop to another node's proxy that resets before its first byte back is replaced by the
/// next candidate, with what the client sent so far. `from_node`: the client is another
/// node's proxy, which tries elsewhere itself: no long last attempt here, and a reset when
/// nothing answers, so that it knows nothing was forwarded.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    candidates: Vec<Target>,
    source: Option<IpAddr>,
    failures: SharedFailures,
    service: Arc<str>,
    from_node: bool,
) {
    let last = if from_node {
        CONNECT_TIMEOUT
    } else {
        LAST_CONNECT_TIMEOUT
    };
    let mut rest: &[Target] = &candidates;
    let mut sent: Vec<u8> = Vec::new();
    let mut client_done = false;
    let _ = client.set_nodelay(true);
    loop {
        let connected = first_answer_within(rest, &failures, &service, last, |target| {
            connect(target, source)
        })
        .await;
        let Some((target, mut upstream)) = connected else {
            tracing::debug!(%service, client = %peer, tried = candidates.len(),
                "no endpoint answered: connection closed");
            if from_node {
                // A reset tells the node that sent it that nothing was forwarded.
                let _ = client.set_zero_linger();
            }
            return;
        };
        let at = rest
            .iter()
            .position(|t| *t == target)
            .map_or(rest.len(), |i| i + 1);
        rest = &rest[at..];
        let _ = upstream.set_nodelay(true);
        if !sent.is_empty() && upstream.write_all(&sent).await.is_err() {
            failures.record(target.addr);
            continue;
        }
        if client_done {
            let _ = upstream.shutdown().await;
        }
        if target.remote && !rest.is_empty() {
            match first_reply(&mut client, &mut upstream, &mut sent, &mut client_done).await {
                Reply::Answered => {}
                Reply::Reset => {
                    tracing::debug!(%service, target = %target.addr,
                        "the node's proxy reset before answering: trying the next candidate");
                    failures.record(target.addr);
                    continue;
                }
                Reply::Over => return,
            }
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(%service, client = %peer, error = %e, "connection ended");
        }
        return;
    }
}

/// How the wait for an answer's first byte ended.
enum Reply {
    /// The first bytes came and went to the client (or the client sent more than
    /// [`REPLAY_LIMIT`]): from here on, plain copying.
    Answered,
    /// The hop reset before any answer: nothing was forwarded.
    Reset,
    /// The client went away, or the hop closed without answering: done.
    Over,
}

/// Passes the client's bytes to `upstream`, keeping them in `sent`, until the first bytes of
/// the answer, which it hands to the client.
async fn first_reply(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    sent: &mut Vec<u8>,
    client_done: &mut bool,
) -> Reply {
    let mut from_up = vec![0u8; 16 * 1024];
    let mut from_client = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = upstream.read(&mut from_up) => {
                return match r {
                    Ok(0) => {
                        let _ = client.shutdown().await;
                        Reply::Over
                    }
                    Ok(n) => {
                        if client.write_all(&from_up[..n]).await.is_err() {
                            return Reply::Over;
                        }
                        Reply::Answered
                    }
                    Err(_) => Reply::Reset,
                };
            }
            r = client.read(&mut from_client), if !*client_done => match r {
                Ok(0) => {
                    *client_done = true;
                    let _ = upstream.shutdown().await;
                }
                Ok(n) => {
                    if upstream.write_all(&from_client[..n]).await.is_err() {
                        return Reply::Reset;
                    }
                    if sent.len() + n > REPLAY_LIMIT {
                        return Reply::Answered;
                    }
                    sent.extend_from_slice(&from_client[..n]);
                }
                Err(_) => return Reply::Over,
            },
        }
    }
}

/// Tries `candidates` in order with `connect`, each within [`CONNECT_TIMEOUT`] (the last
/// within [`LAST_CONNECT_TIMEOUT`]), until one answers: that one and its connection. Each
/// failure or timeout is recorded in `failures`, each success clears its target there.
#[cfg(test)]
pub(crate) async fn first_answer<S, F, Fut>(
    candidates: &[Target],
    failures: &SharedFailures,
    service: &str,
    connect: F,
) -> Option<(Target, S)>
where
    F: FnMut(Target) -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    first_answer_within(candidates, failures, service, LAST_CONNECT_TIMEOUT, connect).await
}

/// [`first_answer`] with `last_limit` for the last candidate.
async fn first_answer_within<S, F, Fut>(
    candidates: &[Target],
    failures: &SharedFailures,
    service: &str,
    last_limit: Duration,
    mut connect: F,
) -> Option<(Target, S)>
where
    F: FnMut(Target) -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    let last = candidates.len().saturating_sub(1);
    for (i, target) in candidates.iter().enumerate() {
        let limit = if i == last {
            last_limit
        } else {
            CONNECT_TIMEOUT
        };
        match tokio::time::timeout(limit, connect(*target)).await {
            Ok(Ok(s)) => {
                failures.clear(target.addr);
                return Some((*target, s));
            }
            Ok(Err(e)) => {
                tracing::debug!(%service, target = %target.addr, error = %e, "connect failed");
            }
            Err(_) => {
                tracing::debug!(%service, target = %target.addr, ?limit, "connect timed out");
            }
        }
        failures.record(target.addr);
    }
    None
}

/// Connects to `target`; to another node's proxy from `source` when it is of the same family.
async fn connect(target: Target, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if target.remote
        && let Some(ip) = source
        && ip.is_ipv4() == target.addr.is_ipv4()
    {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(target.addr).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeSet;

    use super::*;
    use crate::proxy::table::Route;

    fn remote(s: &str) -> Target {
        Target {
            addr: s.parse().unwrap(),
            remote: true,
        }
    }

    /// A connector standing for the network: `silent` targets never answer (a powered-off
    /// machine), `refusing` ones fail at once, the others answer at once with their address.
    fn network(
        silent: &'static [&'static str],
        refusing: &'static [&'static str],
    ) -> impl FnMut(Target) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<SocketAddr>>>>
    {
        let silent: BTreeSet<SocketAddr> = silent.iter().map(|s| s.parse().unwrap()).collect();
        let refusing: BTreeSet<SocketAddr> = refusing.iter().map(|s| s.parse().unwrap()).collect();
        move |t: Target| {
            if silent.contains(&t.addr) {
                Box::pin(std::future::pending())
            } else if refusing.contains(&t.addr) {
                Box::pin(std::future::ready(Err(
                    std::io::ErrorKind::ConnectionRefused.into(),
                )))
            } else {
                Box::pin(std::future::ready(Ok(t.addr)))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_target_costs_one_short_timeout_then_the_next_answers() {
        let failures = SharedFailures::default();
        let candidates = [remote("10.0.0.3:80"), remote("10.0.0.2:80")];
        let start = Instant::now();
        let got = first_answer(
            &candidates,
            &failures,
            "default/web",
            network(&["10.0.0.3:80"], &[]),
        )
        .await;
        assert_eq!(got.map(|(t, _)| t), Some(remote("10.0.0.2:80")));
        assert_eq!(start.elapsed(), CONNECT_TIMEOUT);
        assert!(
            CONNECT_TIMEOUT < Duration::from_millis(500),
            "well under 1 s"
        );
        assert!(failures.failed("10.0.0.3:80".parse().unwrap()));
        assert!(!failures.failed("10.0.0.2:80".parse().unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn every_candidate_is_tried_and_the_last_one_waits_longest() {
        let failures = SharedFailures::default();
        let candidates = [
            remote("10.0.0.2:80"),
            remote("10.0.0.3:80"),
            remote("10.0.0.4:80"),
            remote("10.0.0.5:80"),
        ];
        // Two silent, one refusing, the last answers: no attempt limit stops short of it.
        let start = Instant::now();
        let got = first_answer(
            &candidates,
            &failures,
            "default/web",
            network(&["10.0.0.2:80", "10.0.0.4:80"], &["10.0.0.3:80"]),
        )
        .await;
        assert_eq!(got.map(|(t, _)| t), Some(remote("10.0.0.5:80")));
        assert_eq!(start.elapsed(), CONNECT_TIMEOUT * 2);
        // None answers: all were tried, the last with the long timeout.
        let start = Instant::now();
        let got = first_answer(
            &candidates,
            &failures,
            "default/web",
            network(
                &["10.0.0.2:80", "10.0.0.4:80", "10.0.0.5:80"],
                &["10.0.0.3:80"],
            ),
        )
        .await;
        assert!(got.is_none());
        assert_eq!(start.elapsed(), CONNECT_TIMEOUT * 2 + LAST_CONNECT_TIMEOUT);
        for c in &candidates {
            assert!(failures.failed(c.addr), "{c:?} recorded");
        }
        assert!(
            first_answer(&[], &failures, "x", network(&[], &[]))
                .await
                .is_none()
        );
    }

    /// Clients connect one after another while one of two nodes is silent and membership
    /// still calls it alive: only the first connection that meets it pays the short timeout;
    /// the later ones try it last (and never need it) until membership drops it.
    #[tokio::test(start_paused = true)]
    async fn after_one_timeout_new_connections_do_not_wait_for_a_silent_node() {
        let failures = SharedFailures::default();
        let route = Route {
            service: "default/web".into(),
            port: 80,
            local: vec![],
            remote: vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()],
        };
        let now = Instant::now();
        let table = Table {
            heard: [
                ("10.0.0.2".parse().unwrap(), now),
                ("10.0.0.3".parse().unwrap(), now),
            ]
            .into(),
            stale_after: Duration::from_secs(1),
            ..Table::default()
        };
        let mut waits = Vec::new();
        for turn in 0..8 {
            let now = Instant::now();
            let candidates = table.order(route.candidates(false, turn), &failures.recent(now), now);
            let got = first_answer(
                &candidates,
                &failures,
                "default/web",
                network(&["10.0.0.2:80"], &[]),
            )
            .await;
            assert_eq!(got.map(|(t, _)| t), Some(remote("10.0.0.3:80")));
            waits.push(now.elapsed());
        }
        // Turn 0 names the silent node first; the memory of its failure covers the rest.
        assert_eq!(waits[0], CONNECT_TIMEOUT);
        assert!(waits[1..].iter().all(|w| w.is_zero()), "{waits:?}");
    }

    /// A node's proxy that accepts and then resets without answering (its endpoint is gone):
    /// the request goes again, whole, to the next candidate, and the client gets that answer.
    #[tokio::test]
    async fn a_hop_that_resets_before_answering_is_replaced_by_the_next_candidate() {
        let resetting = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answering = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (reset_at, answer_at) = (
            resetting.local_addr().unwrap(),
            answering.local_addr().unwrap(),
        );
        tokio::spawn(async move {
            let (s, _) = resetting.accept().await.unwrap();
            // Give the request time to arrive unread, then reset.
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.set_zero_linger().unwrap();
        });
        tokio::spawn(async move {
            let (mut s, _) = answering.accept().await.unwrap();
            let mut got = vec![0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&[b"re:".as_slice(), &got].concat())
                .await
                .unwrap();
        });
        let front_at = front.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(front_at).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            c.shutdown().await.unwrap();
            let mut answer = Vec::new();
            c.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let (accepted, peer) = front.accept().await.unwrap();
        let candidates = vec![
            Target {
                addr: reset_at,
                remote: true,
            },
            Target {
                addr: answer_at,
                remote: true,
            },
        ];
        let failures = SharedFailures::default();
        forward(
            accepted,
            peer,
            candidates,
            None,
            failures.clone(),
            Arc::from("svc"),
            false,
        )
        .await;
        assert_eq!(client.await.unwrap(), b"re:hello");
        assert!(
            failures.recent(Instant::now()).contains(&reset_at),
            "the resetting hop is remembered as failed"
        );
    }
}
