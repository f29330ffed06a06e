//! The UDP proxy of one listening port. UDP has no connections, so each client address gets
//! an association (a flow): its own upstream socket, connected to the target picked for the
//! client's first datagram, that carries the client's datagrams there and the replies back
//! from the listening socket. A flow ends after [`IDLE`] without a datagram either way; the
//! client's next datagram picks a target afresh. Datagrams for which no target is ready, or
//! that a busy flow cannot queue, are dropped, as UDP may.
//!
//! A target is picked as TCP tries them ([`Table::order`]): nodes unheard lately and targets
//! that failed lately last. UDP never learns that a silent machine is gone, so a flow also
//! moves: a datagram of a flow whose target has since gone stale or failed, while a healthy
//! one exists, ends the flow and opens a new one to that. A target that refuses (ICMP port
//! unreachable) is recorded as failed and ends its flow; the client's retry opens a new one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::health::{Health, SharedFailures};
use super::table::{Listener, Table, Target};

/// How long a flow lives without traffic.
pub(crate) const IDLE: Duration = Duration::from_secs(30);
/// The most flows one port keeps; a new client beyond it is dropped until some expire.
const MAX_FLOWS: usize = 2048;
/// The datagrams a flow may have waiting for its upstream socket.
const FLOW_QUEUE: usize = 64;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Serves `socket` (the socket of `listener_at`) until `stop`, forwarding with the newest table of `table`;
/// flows expire after `idle`. `source`: this node's address, which flows to other nodes'
/// proxies come from; `pods`: the socket is on the pod network's gateway (see
/// [`super::tcp::serve`]).
pub(crate) async fn serve(
    socket: UdpSocket,
    listener_at: Listener,
    table: watch::Receiver<Arc<Table>>,
    source: Option<IpAddr>,
    failures: SharedFailures,
    idle: Duration,
    stop: CancellationToken,
) {
    let (key, pods) = (listener_at.key, listener_at.pods);
    let socket = Arc::new(socket);
    let flows_tasks = TaskTracker::new();
    let mut flows: HashMap<SocketAddr, (Target, mpsc::Sender<Bytes>)> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut turn: usize = 0;
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, client) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(port = %key, error = %e, "receiving a datagram failed");
                continue;
            }
        };
        let mut datagram = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
        if let Some((target, _)) = flows.get(&client)
            && moves(&table.borrow(), &listener_at, client, *target, &failures)
        {
            tracing::debug!(port = %key, %client, target = %target.addr,
                "the flow's target looks down: the flow moves");
            // Dropping the sender ends the old flow.
            flows.remove(&client);
        }
        if let Some((_, tx)) = flows.get(&client) {
            match tx.try_send(datagram) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => continue,
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    // The flow expired: this datagram opens a new one.
                    flows.remove(&client);
                    datagram = d;
                }
            }
        }
        if flows.len() >= MAX_FLOWS {
            flows.retain(|_, (_, tx)| !tx.is_closed());
            if flows.len() >= MAX_FLOWS {
                tracing::debug!(port = %key, %client, "too many UDP flows: datagram dropped");
                continue;
            }
        }
        let current = table.borrow().clone();
        let Some(route) = current.route(&listener_at) else {
            continue;
        };
        let from_node = current.from_node(pods, client.ip());
        let now = tokio::time::Instant::now();
        let candidates = route.candidates(from_node, turn);
        let ordered = current.order(candidates, &failures.recent(now), now);
        let Some(target) = ordered.into_iter().next() else {
            tracing::debug!(port = %key, service = %route.service, %client, from_node,
                "no ready endpoint: datagram dropped");
            continue;
        };
        turn = turn.wrapping_add(1);
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let _ = tx.try_send(datagram);
        flows.insert(client, (target, tx));
        let listener = socket.clone();
        let stop = stop.clone();
        let failures = failures.clone();
        flows_tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = flow(listener, client, target, source, failures, rx, idle) => {}
            }
        });
    }
    flows_tasks.close();
    flows_tasks.wait().await;
}

/// Whether the flow of `client` to `target` should move to another target: its target looks
/// down now (its node unheard lately, or it failed lately) and the newest table offers a
/// target that does not.
fn moves(
    table: &Table,
    listener: &Listener,
    client: SocketAddr,
    target: Target,
    failures: &SharedFailures,
) -> bool {
    let now = tokio::time::Instant::now();
    let failed: Vec<SocketAddr> = if failures.failed(target.addr) {
        vec![target.addr]
    } else {
        Vec::new()
    };
    if table.health(&target, &failed, now) == Health::Good {
        return false;
    }
    let Some(route) = table.route(listener) else {
        return false;
    };
    let from_node = table.from_node(listener.pods, client.ip());
    let recent = failures.recent(now);
    table
        .order(route.candidates(from_node, 0), &recent, now)
        .first()
        .is_some_and(|t| *t != target && table.health(t, &recent, now) == Health::Good)
}

/// Whether an error of a connected UDP socket means that the target refused (an ICMP port
/// or host unreachable came back).
fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::HostUnreachable
    )
}

/// One client's flow: forwards what arrives on `rx` to `target` and the replies to `client`,
/// until `idle` passes without either, or the target refuses (recorded in `failures`).
async fn flow(
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    target: Target,
    source: Option<IpAddr>,
    failures: SharedFailures,
    mut rx: mpsc::Receiver<Bytes>,
    idle: Duration,
) {
    let local: IpAddr = match source {
        Some(ip) if target.remote && ip.is_ipv4() == target.addr.is_ipv4() => ip,
        _ if target.addr.is_ipv4() => Ipv4Addr::UNSPECIFIED.into(),
        _ => Ipv6Addr::UNSPECIFIED.into(),
    };
    let upstream = match UdpSocket::bind(SocketAddr::new(local, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%client, target = %target.addr, error = %e,
                "cannot open a UDP socket for a flow");
            return;
        }
    };
    if let Err(e) = upstream.connect(target.addr).await {
        tracing::debug!(%client, target = %target.addr, error = %e, "UDP connect failed");
        return;
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut answered = false;
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            d = rx.recv() => {
                let Some(d) = d else { return };
                if let Err(e) = upstream.send(&d).await {
                    tracing::debug!(%client, target = %target.addr, error = %e, "UDP send failed");
                    if refused(&e) {
                        failures.record(target.addr);
                        return;
                    }
                }
            }
            r = upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    if !answered {
                        // It answers: no longer one to put last.
                        failures.clear(target.addr);
                        answered = true;
                    }
                    let reply = buf.get(..n).unwrap_or_default();
                    if let Err(e) = listener.send_to(reply, client).await {
                        tracing::debug!(%client, error = %e, "UDP reply failed");
                    }
                }
                // An ICMP error from the target (port unreachable): the datagram is lost and
                // the flow ends, so that the client's retry goes to another target.
                Err(e) => {
                    tracing::debug!(%client, target = %target.addr, error = %e, "UDP receive failed");
                    if refused(&e) {
                        failures.record(target.addr);
                        return;
                    }
                }
            },
        }
        deadline.as_mut().reset(tokio::time::Instant::now() + idle);
    }
}
