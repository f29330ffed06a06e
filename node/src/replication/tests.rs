//! Replication between nodes that each run a real state store (temp dirs) and a
//! [`Replicator`], over an in-memory [`Transport`]: a hub of channels that can cut a node off
//! or lose gossip. Time is paused: anti-entropy timers run in virtual time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use serde_json::{Value, json};
use shoal_protocol::Kind;
use tokio::task::JoinHandle;

use super::*;
use crate::state::{self, StateConfig};

/// How long a test waits for convergence, in virtual time.
const DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Hub {
    // std Mutex: short critical sections that never await (senders are cloned out first).
    inner: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    links: HashMap<String, Link>,
    /// The size of every broadcast, in order.
    broadcasts: Vec<usize>,
    /// When set, gossip is lost (sync requests still pass).
    lose_gossip: bool,
    /// When set, the largest message the network carries (like libp2p's size limits): a
    /// larger broadcast is lost, a larger sync request or answer fails.
    max_message: Option<usize>,
    /// The largest sync request or answer carried so far, in bytes.
    largest_sync: usize,
}

struct Link {
    inbound: mpsc::Sender<Inbound>,
    up: bool,
}

impl Hub {
    fn others_up(&self, me: &str) -> Vec<(String, mpsc::Sender<Inbound>)> {
        let inner = self.inner.lock().unwrap();
        if !inner.links.get(me).is_some_and(|l| l.up) {
            return Vec::new();
        }
        inner
            .links
            .iter()
            .filter(|(name, link)| name.as_str() != me && link.up)
            .map(|(name, link)| (name.clone(), link.inbound.clone()))
            .collect()
    }

    /// Connects or cuts off `name`, telling it and the nodes that are up.
    async fn set_up(&self, name: &str, up: bool) {
        let (me, others) = {
            let mut inner = self.inner.lock().unwrap();
            let link = inner.links.get_mut(name).unwrap();
            link.up = up;
            let me = link.inbound.clone();
            let others: Vec<_> = inner
                .links
                .iter()
                .filter(|(n, l)| n.as_str() != name && l.up)
                .map(|(n, l)| (n.clone(), l.inbound.clone()))
                .collect();
            (me, others)
        };
        let event = |peer: &str| {
            if up {
                Inbound::PeerUp(peer.to_string())
            } else {
                Inbound::PeerDown(peer.to_string())
            }
        };
        for (other, tx) in others {
            tx.send(event(name)).await.unwrap();
            me.send(event(&other)).await.unwrap();
        }
    }

    fn broadcasts(&self) -> Vec<usize> {
        self.inner.lock().unwrap().broadcasts.clone()
    }
}

struct MemTransport {
    me: String,
    hub: Arc<Hub>,
}

#[async_trait]
impl Transport for MemTransport {
    async fn broadcast(&self, data: Vec<u8>) {
        let lose = {
            let mut inner = self.hub.inner.lock().unwrap();
            inner.broadcasts.push(data.len());
            inner.lose_gossip || inner.max_message.is_some_and(|max| data.len() > max)
        };
        if lose {
            return;
        }
        for (_, tx) in self.hub.others_up(&self.me) {
            let _ = tx
                .send(Inbound::Gossip {
                    from: self.me.clone(),
                    data: data.clone(),
                })
                .await;
        }
    }

    async fn request_sync(&self, peer: &str, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let Some((_, tx)) = self
            .hub
            .others_up(&self.me)
            .into_iter()
            .find(|(n, _)| n == peer)
        else {
            return Err(format!("{peer} is unreachable"));
        };
        let max = {
            let mut inner = self.hub.inner.lock().unwrap();
            inner.largest_sync = inner.largest_sync.max(data.len());
            inner.max_message
        };
        if let Some(max) = max.filter(|max| data.len() > *max) {
            return Err(format!("a request of {} bytes exceeds {max}", data.len()));
        }
        let (reply, answer) = oneshot::channel();
        tx.send(Inbound::SyncRequest {
            from: self.me.clone(),
            data,
            reply,
        })
        .await
        .map_err(|_| format!("{peer} has stopped"))?;
        let answer = answer.await.map_err(|_| format!("{peer} gave no answer"))?;
        {
            let mut inner = self.hub.inner.lock().unwrap();
            inner.largest_sync = inner.largest_sync.max(answer.len());
        }
        match max {
            Some(max) if answer.len() > max => {
                Err(format!("an answer of {} bytes exceeds {max}", answer.len()))
            }
            _ => Ok(answer),
        }
    }

    fn peers(&self) -> Vec<String> {
        self.hub
            .others_up(&self.me)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }
}

struct TestNode {
    name: String,
    state: StateHandle,
    tasks: Vec<JoinHandle<()>>,
    /// True once a round of this node's with a peer went quiet.
    synced: watch::Receiver<bool>,
}

struct Cluster {
    hub: Arc<Hub>,
    nodes: Vec<TestNode>,
    shutdown: CancellationToken,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |_| {}).await
    }

    /// Starts `n` nodes, their replication configured by `tune` after the defaults.
    async fn start_with(n: usize, tune: impl Fn(&mut ReplicationConfig)) -> Cluster {
        let hub = Arc::new(Hub::default());
        let shutdown = CancellationToken::new();
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let (state, task) = state::open(&StateConfig {
                data_dir: dir.path().to_path_buf(),
                cluster_secret: [9; 32],
                channel_size: 64,
            })
            .unwrap();
            let name = format!("n{i}");
            let (tx, rx) = mpsc::channel(64);
            hub.inner.lock().unwrap().links.insert(
                name.clone(),
                Link {
                    inbound: tx,
                    up: true,
                },
            );
            let transport = Arc::new(MemTransport {
                me: name.clone(),
                hub: hub.clone(),
            });
            let mut config = ReplicationConfig {
                seed: Some(i as u64),
                ..ReplicationConfig::default()
            };
            tune(&mut config);
            config.validate().unwrap();
            let (synced_tx, synced) = watch::channel(false);
            let tasks = vec![
                tokio::spawn(task.run(shutdown.clone())),
                tokio::spawn(Replicator::run_with_synced(
                    state.clone(),
                    transport,
                    rx,
                    config,
                    synced_tx,
                    shutdown.clone(),
                )),
            ];
            nodes.push(TestNode {
                name,
                state,
                tasks,
                synced,
            });
            dirs.push(dir);
        }
        Cluster {
            hub,
            nodes,
            shutdown,
            _dirs: dirs,
        }
    }

    async fn digests(&self, which: &[usize]) -> Vec<String> {
        let mut out = Vec::new();
        for &i in which {
            out.push(self.nodes[i].state.digest().await.unwrap());
        }
        out
    }

    /// Waits (in virtual time) until the nodes `which` hold the same state.
    async fn converge(&self, which: &[usize]) {
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                let digests = self.digests(which).await;
                if digests.windows(2).all(|w| w[0] == w[1]) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "nodes {which:?} did not converge");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for node in self.nodes {
            for task in node.tasks {
                task.await.unwrap();
            }
        }
    }
}

fn config_map(name: &str, value: &str) -> (Kind, Value) {
    (
        Kind::ConfigMap,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "default"},
               "data": {"v": value}}),
    )
}

async fn value_of(state: &StateHandle, name: &str) -> Option<String> {
    let object = state
        .get(Kind::ConfigMap, Some("default"), name)
        .await
        .unwrap()?;
    object.value["data"]["v"].as_str().map(str::to_string)
}

async fn write(node: &TestNode, name: &str, value: &str) {
    node.state
        .apply_values(vec![config_map(name, value)])
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn applies_on_different_nodes_converge_on_every_node() {
    let cluster = Cluster::start(3).await;
    for node in &cluster.nodes {
        write(node, &format!("from-{}", node.name), "1").await;
    }
    cluster.converge(&[0, 1, 2]).await;
    for node in &cluster.nodes {
        for from in ["n0", "n1", "n2"] {
            let name = format!("from-{from}");
            assert_eq!(value_of(&node.state, &name).await.as_deref(), Some("1"));
        }
    }
    cluster.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_that_was_down_catches_up() {
    let cluster = Cluster::start(3).await;
    cluster.converge(&[0, 1, 2]).await;
    cluster.hub.set_up("n2", false).await;

    write(&cluster.nodes[0], "while-down", "1").await;
    write(&cluster.nodes[1], "also-while-down", "2").await;
    cluster.converge(&[0, 1]).await;
    // Several anti-entropy intervals later, the cut-off node still has seen nothing.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(value_of(&cluster.nodes[2].state, "while-down").await, None);
    let [a, _, c] = &cluster.digests(&[0, 1, 2]).await[..] else {
        unreachable!()
    };
    assert_ne!(a, c);

    cluster.hub.set_up("n2", true).await;
    cluster.converge(&[0, 1, 2]).await;
    let n2 = &cluster.nodes[2].state;
    assert_eq!(value_of(n2, "while-down").await.as_deref(), Some("1"));
    assert_eq!(value_of(n2, "also-while-down").await.as_deref(), Some("2"));
    cluster.stop().await;
}

#[tokio::test(start_paused = true)]
async fn synced_tells_once_a_round_with_a_peer_went_quiet() {
    let cluster = Cluster::start(2).await;
    // n1 starts cut off, before any round: nobody to sync with.
    cluster.hub.set_up("n1", false).await;
    write(&cluster.nodes[0], "x", "1").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!*cluster.nodes[1].synced.borrow());
    assert!(!*cluster.nodes[0].synced.borrow());

    cluster.hub.set_up("n1", true).await;
    let mut synced = cluster.nodes[1].synced.clone();
    tokio::time::timeout(DEADLINE, synced.wait_for(|s| *s))
        .await
        .unwrap()
        .unwrap();
    // Synced means holding what the peer held.
    assert_eq!(
        value_of(&cluster.nodes[1].state, "x").await.as_deref(),
        Some("1")
    );
    cluster.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lost_gossip_is_repaired_by_periodic_anti_entropy() {
    let cluster = Cluster::start(3).await;
    cluster.converge(&[0, 1, 2]).await;
    cluster.hub.inner.lock().unwrap().lose_gossip = true;
    write(&cluster.nodes[0], "lost", "1").await;
    cluster.converge(&[0, 1, 2]).await;
    for node in &cluster.nodes {
        assert_eq!(value_of(&node.state, "lost").await.as_deref(), Some("1"));
    }
    cluster.stop().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_edits_of_one_field_converge_to_one_value() {
    let cluster = Cluster::start(3).await;
    write(&cluster.nodes[0], "shared", "initial").await;
    cluster.converge(&[0, 1, 2]).await;

    // Everyone cut off from everyone: three concurrent edits of the same field.
    for name in ["n0", "n1", "n2"] {
        cluster.hub.set_up(name, false).await;
    }
    for (node, value) in cluster.nodes.iter().zip(["a", "b", "c"]) {
        write(node, "shared", value).await;
    }
    for name in ["n0", "n1", "n2"] {
        cluster.hub.set_up(name, true).await;
    }
    cluster.converge(&[0, 1, 2]).await;

    let mut values = Vec::new();
    for node in &cluster.nodes {
        values.push(value_of(&node.state, "shared").await.unwrap());
    }
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{values:?}");
    assert!(["a", "b", "c"].contains(&values[0].as_str()), "{values:?}");
    cluster.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_small_write_broadcasts_less_than_2_kib() {
    let cluster = Cluster::start(2).await;
    cluster.converge(&[0, 1]).await;
    // Received changes are not broadcast again: so far nobody wrote after starting.
    assert!(cluster.hub.broadcasts().is_empty());

    write(&cluster.nodes[0], "small", "x").await;
    cluster.converge(&[0, 1]).await;
    let sizes = cluster.hub.broadcasts();
    assert_eq!(sizes.len(), 1, "one broadcast for one write: {sizes:?}");
    assert!(
        sizes[0] < 2048,
        "a small write broadcast {} bytes",
        sizes[0]
    );
    // The receiver did not broadcast it again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(cluster.hub.broadcasts().len(), 1);
    cluster.stop().await;
}

#[tokio::test(start_paused = true)]
async fn malformed_requests_are_refused_with_a_reason() {
    let cluster = Cluster::start(2).await;
    let transport = MemTransport {
        me: "n0".into(),
        hub: cluster.hub.clone(),
    };
    for bad in [vec![], vec![9, 9], Frame::Changes(vec![1]).encode()] {
        let answer = transport.request_sync("n1", bad).await.unwrap();
        assert!(
            matches!(Frame::decode(&answer), Ok(Frame::Refused(_))),
            "{answer:?}"
        );
    }
    let garbage = Frame::Sync {
        start: true,
        message: b"garbage".to_vec(),
    };
    let answer = transport
        .request_sync("n1", garbage.encode())
        .await
        .unwrap();
    assert!(matches!(Frame::decode(&answer), Ok(Frame::Refused(_))));
    // The node still replicates.
    write(&cluster.nodes[0], "after", "1").await;
    cluster.converge(&[0, 1]).await;
    cluster.stop().await;
}

/// Random text that automerge cannot compress much.
fn noise(rng: &mut rng::Rng, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize] as char)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_node_far_behind_catches_up_in_bounded_messages() {
    // The network carries at most 1 MiB per message, and n0's history is about 5 MiB: it
    // reaches n1 in chunks of at most 256 KiB of changes.
    const LIMIT: usize = 1024 * 1024;
    let cluster = Cluster::start_with(2, |config| {
        config.max_message_bytes = 256 * 1024;
        // Rounds end before catching up is done: progress must carry over.
        config.max_exchanges = 4;
    })
    .await;
    cluster.hub.inner.lock().unwrap().max_message = Some(LIMIT);
    cluster.hub.set_up("n1", false).await;
    let mut rng = rng::Rng::seeded(7);
    for batch in 0..64 {
        let objects = (0..10)
            .map(|i| config_map(&format!("big-{batch}-{i}"), &noise(&mut rng, 8 * 1024)))
            .collect();
        cluster.nodes[0].state.apply_values(objects).await.unwrap();
    }
    let history = cluster.nodes[0]
        .state
        .changes_since(Vec::new())
        .await
        .unwrap();
    assert!(
        history.0.len() > 4 * LIMIT,
        "history of {} bytes",
        history.0.len()
    );

    cluster.hub.set_up("n1", true).await;
    cluster.converge(&[0, 1]).await;
    let n1 = &cluster.nodes[1].state;
    assert_eq!(
        value_of(n1, "big-63-9").await.map(|v| v.len()),
        Some(8 * 1024)
    );
    assert_eq!(
        cluster.nodes[0].state.heads().await.unwrap(),
        n1.heads().await.unwrap()
    );
    // 256 KiB of changes, plus the session's heads and Bloom filter.
    let largest = cluster.hub.inner.lock().unwrap().largest_sync;
    assert!(
        largest <= 256 * 1024 + 16 * 1024,
        "a sync message of {largest} bytes"
    );
    cluster.stop().await;
}
