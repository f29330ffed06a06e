//! Network tests on loopback: admission, gossip and sync between real swarms.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{NetConfig, NetEvent, NetHandle, PeerInfo, Topic, start};

const DEADLINE: Duration = Duration::from_secs(20);
const CLUSTER: &str = "test-cluster";

struct Node {
    handle: NetHandle,
    /// Gossip received: (author, topic, data).
    gossip: mpsc::UnboundedReceiver<(PeerId, Topic, Vec<u8>)>,
}

/// Starts a node on 127.0.0.1 (random TCP and QUIC ports). Its events are consumed by a task
/// that answers sync requests with `b"re:" + request` and forwards gossip to `Node::gossip`.
fn node(
    name: &str,
    seed: u8,
    secret: u8,
    bootstrap: Vec<Multiaddr>,
    stop: &CancellationToken,
) -> Result<Node> {
    let mut config = NetConfig::new(CLUSTER, [secret; 32], [seed; 32], name);
    config.listen = vec![
        "/ip4/127.0.0.1/tcp/0".parse()?,
        "/ip4/127.0.0.1/udp/0/quic-v1".parse()?,
    ];
    config.bootstrap = bootstrap;
    config.mdns = false;
    config.request_timeout = Duration::from_secs(5);
    // Shows the refusals with `RUST_LOG=shoal_node::net=info cargo test -- --nocapture`.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (handle, task, mut events) = start(config)?;
    tokio::spawn(task.run(stop.clone()));
    let (tx, gossip) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                NetEvent::Gossip { from, topic, data } => {
                    let _ = tx.send((from, topic, data));
                }
                NetEvent::SyncRequest { data, reply, .. } => {
                    let _ = reply.send([b"re:".as_slice(), &data].concat());
                }
                NetEvent::PeerAdmitted(_) | NetEvent::PeerGone(_) => {}
            }
        }
    });
    Ok(Node { handle, gossip })
}

/// Polls `check` until it returns `Some`, or fails after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node's TCP and QUIC listen addresses, once both are bound.
async fn addrs(h: &NetHandle) -> Result<(Multiaddr, Multiaddr)> {
    eventually("listen addresses", || async {
        let addrs = h.listen_addrs().await?;
        let tcp = addrs
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))));
        let quic = addrs
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)));
        Ok(tcp.cloned().zip(quic.cloned()))
    })
    .await
}

async fn peer(h: &NetHandle, id: PeerId) -> Result<Option<PeerInfo>> {
    Ok(h.peers().await?.into_iter().find(|p| p.peer_id == id))
}

async fn admitted(h: &NetHandle) -> Result<Vec<PeerId>> {
    Ok(h.peers()
        .await?
        .into_iter()
        .filter(|p| p.admitted)
        .map(|p| p.peer_id)
        .collect())
}

/// Publishes on `from` until every node of `to` has received it (gossipsub needs the peers'
/// subscriptions first, which arrive shortly after admission).
async fn gossip_reaches(from: &NetHandle, to: &mut [&mut Node], data: &[u8]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut got = vec![false; to.len()];
    while !got.iter().all(|g| *g) {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for gossip to reach every peer: {got:?}");
        }
        from.publish(Topic::State, data.to_vec()).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, n) in to.iter_mut().enumerate() {
            while let Ok((author, topic, d)) = n.gossip.try_recv() {
                if d == data && topic == Topic::State && author == from.local_peer_id() {
                    got[i] = true;
                }
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn three_nodes_admit_each_other_gossip_and_sync() -> Result<()> {
    let stop = CancellationToken::new();
    let a = node("a", 1, 9, vec![], &stop)?;
    let (a_tcp, a_quic) = addrs(&a.handle).await?;
    let mut b = node("b", 2, 9, vec![a_tcp], &stop)?;
    let (b_tcp, _) = addrs(&b.handle).await?;
    let mut c = node("c", 3, 9, vec![a_quic, b_tcp], &stop)?;
    let ids = [
        a.handle.local_peer_id(),
        b.handle.local_peer_id(),
        c.handle.local_peer_id(),
    ];

    for (i, n) in [&a.handle, &b.handle, &c.handle].into_iter().enumerate() {
        let mut others: Vec<PeerId> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| *id)
            .collect();
        others.sort();
        eventually("all three nodes admitted", || async {
            let mut got = admitted(n).await?;
            got.sort();
            Ok((got == others).then_some(()))
        })
        .await?;
    }
    let b_seen_by_a = peer(&a.handle, ids[1]).await?.context("a knows b")?;
    assert_eq!(b_seen_by_a.node_name.as_deref(), Some("b"));
    assert!(b_seen_by_a.connected && b_seen_by_a.refused.is_none());

    gossip_reaches(&a.handle, &mut [&mut b, &mut c], b"change-1").await?;

    let answer = b.handle.request_sync(ids[0], b"sync-me".to_vec()).await?;
    assert_eq!(answer, b"re:sync-me");
    // The same through replication's view of the network.
    use crate::replication::Transport;
    let mut seen = Transport::peers(&a.handle);
    seen.sort();
    let mut want = vec![ids[1].to_string(), ids[2].to_string()];
    want.sort();
    assert_eq!(seen, want);
    let answer = Transport::request_sync(&a.handle, &ids[2].to_string(), b"x".to_vec()).await;
    assert_eq!(answer.map_err(anyhow::Error::msg)?, b"re:x");
    let answer = c.handle.request_sync(ids[1], b"hi".to_vec()).await?;
    assert_eq!(answer, b"re:hi");

    stop.cancel();
    Ok(())
}

#[tokio::test]
async fn nodes_with_another_secret_are_refused_on_tcp_and_quic() -> Result<()> {
    let stop = CancellationToken::new();
    let a = node("a", 11, 5, vec![], &stop)?;
    let (a_tcp, a_quic) = addrs(&a.handle).await?;
    let mut b = node("b", 12, 5, vec![a_tcp.clone()], &stop)?;
    let mut x_tcp = node("x", 13, 6, vec![a_tcp], &stop)?;
    let mut y_quic = node("y", 14, 6, vec![a_quic], &stop)?;
    let (a_id, x_id, y_id) = (
        a.handle.local_peer_id(),
        x_tcp.handle.local_peer_id(),
        y_quic.handle.local_peer_id(),
    );

    // QUIC connects, then the hello check refuses it, on both sides.
    eventually("a to refuse y", || async {
        Ok(peer(&a.handle, y_id)
            .await?
            .filter(|p| p.refused.is_some())
            .map(|_| ()))
    })
    .await?;
    let y_at_a = peer(&a.handle, y_id).await?.context("a reports y")?;
    assert!(!y_at_a.admitted);
    eventually("y to refuse a", || async {
        Ok(peer(&y_quic.handle, a_id)
            .await?
            .filter(|p| p.refused.is_some())
            .map(|_| ()))
    })
    .await?;

    // The good pair works, and gossip flows to b only.
    eventually("a and b admitted", || async {
        Ok(admitted(&a.handle)
            .await?
            .contains(&b.handle.local_peer_id())
            .then_some(()))
    })
    .await?;
    gossip_reaches(&a.handle, &mut [&mut b], b"secret-state").await?;

    // TCP: pnet fails, so x never even gets a peer id at a.
    for (who, h) in [("a", &a.handle), ("b", &b.handle)] {
        let ps = admitted(h).await?;
        assert!(
            !ps.contains(&x_id) && !ps.contains(&y_id),
            "{who} admitted an outsider: {ps:?}"
        );
        assert!(
            peer(h, x_id)
                .await?
                .is_none_or(|p| !p.connected && !p.admitted)
        );
    }
    assert!(admitted(&x_tcp.handle).await?.is_empty());
    assert!(admitted(&y_quic.handle).await?.is_empty());
    assert!(x_tcp.gossip.try_recv().is_err(), "x got gossip");
    assert!(y_quic.gossip.try_recv().is_err(), "y got gossip");
    assert!(matches!(
        y_quic
            .handle
            .request_sync(a_id, b"let me in".to_vec())
            .await,
        Err(super::NetError::NotAdmitted(_))
    ));

    stop.cancel();
    Ok(())
}
