//! The UDP proxy of one listening port. UDP has no connections, so each client address gets
//! an association (a flow): its own upstream socket, connected to the target picked for the
//! client's first datagram, that carries the client's datagrams there and the replies back
//! from the listening socket. A flow ends after [`IDLE`] without a datagram either way; the
//! client's next datagram picks a target afresh. Datagrams for which no target is ready, or
//! that a busy flow cannot queue, are dropped, as UDP may.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    idle: Duration,
    stop: CancellationToken,
) {
    let (key, pods) = (listener_at.key, listener_at.pods);
    let socket = Arc::new(socket);
    let flows_tasks = TaskTracker::new();
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
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
        if let Some(tx) = flows.get(&client) {
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
            flows.retain(|_, tx| !tx.is_closed());
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
        let Some(target) = route.candidates(from_node, turn).into_iter().next() else {
            tracing::debug!(port = %key, service = %route.service, %client, from_node,
                "no ready endpoint: datagram dropped");
            continue;
        };
        turn = turn.wrapping_add(1);
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let _ = tx.try_send(datagram);
        flows.insert(client, tx);
        let listener = socket.clone();
        let stop = stop.clone();
        flows_tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = flow(listener, client, target, source, rx, idle) => {}
            }
        });
    }
    flows_tasks.close();
    flows_tasks.wait().await;
}

/// One client's flow: forwards what arrives on `rx` to `target` and the replies to `client`,
/// until `idle` passes without either.
async fn flow(
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    target: Target,
    source: Option<IpAddr>,
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
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            d = rx.recv() => {
                let Some(d) = d else { return };
                if let Err(e) = upstream.send(&d).await {
                    tracing::debug!(%client, target = %target.addr, error = %e, "UDP send failed");
                }
            }
            r = upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    let reply = buf.get(..n).unwrap_or_default();
                    if let Err(e) = listener.send_to(reply, client).await {
                        tracing::debug!(%client, error = %e, "UDP reply failed");
                    }
                }
                // An ICMP error from the target (port unreachable): the flow stays, the
                // client retries or gives up as it would without a proxy.
                Err(e) => {
                    tracing::debug!(%client, target = %target.addr, error = %e, "UDP receive failed");
                }
            },
        }
        deadline.as_mut().reset(tokio::time::Instant::now() + idle);
    }
}
