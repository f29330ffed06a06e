//! The TCP proxy of one listening port: accepts connections and splices each one to a target
//! of the port's current [`Route`](super::table::Route). The candidates are tried in turn,
//! those that look down now last ([`Table::order`]), each attempt bounded by a short timeout,
//! until one answers or every one was tried; a target that failed is remembered
//! ([`SharedFailures`]) so that the next connections try it last. A port without a ready
//! target closes the connection at once.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
                _ = forward(client, peer, candidates, source, failures, service) => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Connects to the first candidate that answers and copies both ways until both sides close.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    candidates: Vec<Target>,
    source: Option<IpAddr>,
    failures: SharedFailures,
    service: Arc<str>,
) {
    let connected = first_answer(&candidates, &failures, &service, |target| {
        connect(target, source)
    })
    .await;
    let Some((_, mut upstream)) = connected else {
        tracing::debug!(%service, client = %peer, tried = candidates.len(),
            "no endpoint answered: connection closed");
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%service, client = %peer, error = %e, "connection ended");
    }
}

/// Tries `candidates` in order with `connect`, each within [`CONNECT_TIMEOUT`] (the last
/// within [`LAST_CONNECT_TIMEOUT`]), until one answers: that one and its connection. Each
/// failure or timeout is recorded in `failures`, each success clears its target there.
pub(crate) async fn first_answer<S, F, Fut>(
    candidates: &[Target],
    failures: &SharedFailures,
    service: &str,
    mut connect: F,
) -> Option<(Target, S)>
where
    F: FnMut(Target) -> Fut,
    Fut: Future<Output = std::io::Result<S>>,
{
    let last = candidates.len().saturating_sub(1);
    for (i, target) in candidates.iter().enumerate() {
        let limit = if i == last {
            LAST_CONNECT_TIMEOUT
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
}
