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
    node_with(name, seed, secret, bootstrap, stop, Duration::from_secs(5))
}

/// [`node`], with its request (and admission) timeout.
fn node_with(
    name: &str,
    seed: u8,
    secret: u8,
    bootstrap: Vec<Multiaddr>,
    stop: &CancellationToken,
    request_timeout: Duration,
) -> Result<Node> {
    let mut config = NetConfig::new(CLUSTER, [secret; 32], [seed; 32], name);
    config.listen = vec![
        "/ip4/127.0.0.1/tcp/0".parse()?,
        "/ip4/127.0.0.1/udp/0/quic-v1".parse()?,
    ];
    config.bootstrap = bootstrap;
    config.mdns = false;
    config.request_timeout = request_timeout;
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

/// A peer without the cluster secret, over QUIC (which no pre-shared key guards): it holds
/// the node's admission challenge unanswered, so that the node keeps the connection open
/// while it waits, and it opens raw streams.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct Intruder {
    hello: libp2p::request_response::cbor::Behaviour<
        super::admission::HelloRequest,
        super::admission::HelloResponse,
    >,
    streams: libp2p_stream::Behaviour,
    /// Nodes close connections that do not answer pings.
    ping: libp2p::ping::Behaviour,
}

/// Starts an intruder connected to `target` at `addr`; returns its peer id and stream control
/// once the node has challenged it (the challenge stays unanswered).
async fn intruder(
    target: PeerId,
    addr: Multiaddr,
    stop: &CancellationToken,
) -> Result<(PeerId, libp2p_stream::Control)> {
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;

    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| Intruder {
            hello: request_response::cbor::Behaviour::new(
                [(
                    libp2p::StreamProtocol::new(super::admission::HELLO_PROTOCOL),
                    ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            ),
            streams: libp2p_stream::Behaviour::new(),
            ping: libp2p::ping::Behaviour::default(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let control = swarm.behaviour().streams.new_control();
    let id = *swarm.local_peer_id();
    swarm.dial(addr)?;
    let (challenged_tx, challenged) = tokio::sync::oneshot::channel();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut challenged_tx = Some(challenged_tx);
        let mut held = Vec::new();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = futures_util::StreamExt::select_next_some(&mut swarm) => e,
            };
            if let SwarmEvent::Behaviour(IntruderEvent::Hello(request_response::Event::Message {
                peer,
                message: request_response::Message::Request { channel, .. },
                ..
            })) = event
                && peer == target
            {
                held.push(channel);
                if let Some(tx) = challenged_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    tokio::time::timeout(DEADLINE, challenged)
        .await
        .context("the node never challenged the intruder")??;
    Ok((id, control))
}

#[tokio::test]
async fn a_peer_not_admitted_cannot_make_a_node_read_a_large_sync_request() -> Result<()> {
    // Larger than what QUIC buffers on the sending side (about 10 MB), so that the write can
    // only finish if the node reads it; under the old limit of 32 MiB.
    const LARGE: usize = 24 * 1024 * 1024;
    let stop = CancellationToken::new();
    // A long admission timeout: the intruder stays connected, unadmitted, for the whole test.
    let timeout = Duration::from_secs(60);
    let a = node_with("a", 21, 3, vec![], &stop, timeout)?;
    let (a_tcp, a_quic) = addrs(&a.handle).await?;
    let b = node_with("b", 22, 3, vec![a_tcp], &stop, timeout)?;
    let a_id = a.handle.local_peer_id();

    let (intruder_id, control) = intruder(a_id, a_quic, &stop).await?;
    let protocol = libp2p::StreamProtocol::new(super::wire::SYNC_PROTOCOL);
    let mut stream = control
        .clone()
        .open_stream(a_id, protocol)
        .await
        .context("a refused even to open a sync stream")?;
    let junk = vec![0x5a; LARGE];
    let sent = tokio::time::timeout(
        DEADLINE,
        libp2p::futures::AsyncWriteExt::write_all(&mut stream, &junk),
    )
    .await
    .context("the write neither finished nor failed")?;
    assert!(
        sent.is_err(),
        "a read a {LARGE}-byte sync request from a peer that is not admitted"
    );
    assert!(!admitted(&a.handle).await?.contains(&intruder_id));

    // An admitted peer still syncs, large requests included.
    eventually("a and b admitted", || async {
        Ok(admitted(&b.handle).await?.contains(&a_id).then_some(()))
    })
    .await?;
    let big = vec![7u8; 4 * 1024 * 1024];
    let answer = b.handle.request_sync(a_id, big.clone()).await?;
    assert_eq!(answer.len(), big.len() + 3);
    assert!(answer.starts_with(b"re:") && answer.ends_with(&big[..16]));

    stop.cancel();
    Ok(())
}
