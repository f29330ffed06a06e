//! The TCP proxy of one listening port: accepts connections and splices each one to a target
//! of the port's current [`Route`](super::table::Route), trying the next candidate when a
//! connection attempt fails. A port without a ready target closes the connection at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::table::{Listener, Table, Target};

/// How long one connection attempt to a target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How many targets a connection tries before it is closed.
const MAX_ATTEMPTS: usize = 3;

/// Serves `listener` (the socket of `listener_at`) until `stop`, forwarding with the newest table of `table`.
/// `source`: this node's address, which connections to other nodes' proxies come from, so that
/// those recognise a node and do not forward them again. `pods`: the listener is on the pod
/// network's gateway, where every client is a pod of this node.
pub(crate) async fn serve(
    listener: TcpListener,
    listener_at: Listener,
    table: watch::Receiver<Arc<Table>>,
    source: Option<IpAddr>,
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
        let candidates = route.candidates(from_node, turn);
        turn = turn.wrapping_add(1);
        if candidates.is_empty() {
            tracing::debug!(port = %key, service = %route.service, client = %peer, from_node,
                "no ready endpoint: connection closed");
            continue;
        }
        let service: Arc<str> = Arc::from(route.service.as_str());
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = forward(client, peer, candidates, source, service) => {}
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
    service: Arc<str>,
) {
    let mut upstream = None;
    for target in candidates.into_iter().take(MAX_ATTEMPTS) {
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(target, source)).await {
            Ok(Ok(s)) => {
                upstream = Some(s);
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(%service, target = %target.addr, error = %e, "connect failed");
            }
            Err(_) => tracing::debug!(%service, target = %target.addr, "connect timed out"),
        }
    }
    let Some(mut upstream) = upstream else {
        tracing::debug!(%service, client = %peer, "no endpoint answered: connection closed");
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%service, client = %peer, error = %e, "connection ended");
    }
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
