//! The simulated network: every node's replication and membership gossip go through one
//! [`Net`], which decides from the seed what each message meets on its way: a delay (so
//! reordering), loss, duplication, a partition, a node that is down.
//!
//! It stands where libp2p stands in production: it implements replication's [`Transport`]
//! and membership's [`observed::Publish`] for each node, and tells replication when a peer
//! connects or goes away ([`Inbound::PeerUp`], [`Inbound::PeerDown`]) as the network task
//! does. A node that restarts gets a new incarnation: whatever its earlier run still sends is
//! dropped, as a dead process's connections are.
//!
//! Requests (a sync round's exchanges) are not duplicated (they ride a connection); a lost one
//! fails after its delay, as a reset connection does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use shoal_node::observed;
use shoal_node::replication::{Inbound, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::rng::Rng;

/// How every link behaves now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFaults {
    /// The share of messages lost.
    pub loss: f64,
    /// The share of gossip messages delivered twice.
    pub duplicate: f64,
    /// Each message waits a delay drawn in this range (so messages overtake each other).
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for LinkFaults {
    fn default() -> Self {
        LinkFaults {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }
}

/// How long a sync request waits for its answer before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

struct Endpoint {
    peer: String,
    incarnation: u64,
    up: bool,
    replication: mpsc::Sender<Inbound>,
    observed: mpsc::Sender<observed::Inbound>,
}

struct Inner {
    rng: Rng,
    /// How every link behaves, but those of `links`.
    faults: LinkFaults,
    /// Links that behave otherwise, by the pair of node names in order.
    links: BTreeMap<(String, String), LinkFaults>,
    /// By node name.
    endpoints: BTreeMap<String, Endpoint>,
    /// The partition side of each node; nodes on one side reach each other. Absent: side 0.
    sides: BTreeMap<String, u32>,
    /// Since when each pair of nodes (by name, in order) reaches each other.
    since: BTreeMap<(String, String), Instant>,
    next_incarnation: u64,
    sent: u64,
    lost: u64,
}

impl Inner {
    fn reach(&self, a: &str, b: &str) -> bool {
        let up = |n: &str| self.endpoints.get(n).is_some_and(|e| e.up);
        a != b
            && up(a)
            && up(b)
            && self.sides.get(a).copied().unwrap_or(0) == self.sides.get(b).copied().unwrap_or(0)
    }

    fn current(&self, name: &str, incarnation: u64) -> bool {
        self.endpoints
            .get(name)
            .is_some_and(|e| e.up && e.incarnation == incarnation)
    }

    fn pairs(&self) -> Vec<(String, String)> {
        let names: Vec<&String> = self.endpoints.keys().collect();
        let mut out = Vec::new();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                if self.reach(a, b) {
                    out.push(((*a).clone(), (*b).clone()));
                }
            }
        }
        out
    }

    /// The delays of the copies of one message from `from` to `to`: none when it is lost or
    /// cannot get there, two when it is duplicated.
    fn copies(&mut self, from: &str, to: &str, duplicates: bool) -> Vec<Duration> {
        if !self.reach(from, to) {
            return Vec::new();
        }
        self.sent += 1;
        let faults = self.faults_of(from, to);
        if self.rng.chance(faults.loss) {
            self.lost += 1;
            return Vec::new();
        }
        let n = if duplicates && self.rng.chance(faults.duplicate) {
            2
        } else {
            1
        };
        (0..n).map(|_| self.delay(from, to)).collect()
    }

    fn faults_of(&self, a: &str, b: &str) -> LinkFaults {
        let key = if a < b { (a, b) } else { (b, a) };
        self.links
            .get(&(key.0.to_string(), key.1.to_string()))
            .copied()
            .unwrap_or(self.faults)
    }

    fn delay(&mut self, from: &str, to: &str) -> Duration {
        let faults = self.faults_of(from, to);
        let lo = u64::try_from(faults.min_delay.as_micros()).unwrap_or(0);
        let hi = u64::try_from(faults.max_delay.as_micros()).unwrap_or(lo);
        Duration::from_micros(self.rng.between(lo, hi.max(lo)))
    }
}

/// The network of one simulation. Cloning shares it.
#[derive(Clone)]
pub struct Net {
    inner: Arc<Mutex<Inner>>,
}

/// A change of who reaches whom, to tell the nodes.
enum Link {
    Up(String, String),
    Down(String, String),
}

impl Net {
    pub fn new(seed: u64) -> Net {
        Net {
            inner: Arc::new(Mutex::new(Inner {
                rng: Rng::new(seed),
                faults: LinkFaults::default(),
                links: BTreeMap::new(),
                endpoints: BTreeMap::new(),
                sides: BTreeMap::new(),
                since: BTreeMap::new(),
                next_incarnation: 1,
                sent: 0,
                lost: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Plugs in a (re)started node: returns its endpoint, whose incarnation is new.
    pub fn attach(
        &self,
        name: &str,
        peer: &str,
        replication: mpsc::Sender<Inbound>,
        observed: mpsc::Sender<observed::Inbound>,
    ) -> NodeLink {
        let incarnation = self.change(|inner| {
            let incarnation = inner.next_incarnation;
            inner.next_incarnation += 1;
            inner.endpoints.insert(
                name.to_string(),
                Endpoint {
                    peer: peer.to_string(),
                    incarnation,
                    up: true,
                    replication,
                    observed,
                },
            );
            incarnation
        });
        NodeLink {
            net: self.clone(),
            name: name.to_string(),
            incarnation,
        }
    }

    /// Unplugs a node (it crashed): nothing more reaches it or comes from it.
    pub fn detach(&self, name: &str) {
        self.change(|inner| {
            if let Some(e) = inner.endpoints.get_mut(name) {
                e.up = false;
            }
        });
    }

    /// Splits the nodes into `sides` (nodes not named are on side 0 with the first).
    pub fn partition(&self, sides: &[Vec<String>]) {
        self.change(|inner| {
            inner.sides.clear();
            for (i, side) in sides.iter().enumerate() {
                for n in side {
                    inner.sides.insert(n.clone(), u32::try_from(i).unwrap_or(0));
                }
            }
        });
    }

    /// Ends every partition.
    pub fn heal(&self) {
        self.change(|inner| inner.sides.clear());
    }

    /// Every link behaves so (links set apart before too).
    pub fn set_faults(&self, faults: LinkFaults) {
        let mut inner = self.lock();
        inner.faults = faults;
        inner.links.clear();
    }

    /// The link between `a` and `b` behaves so, both ways.
    pub fn set_link(&self, a: &str, b: &str, faults: LinkFaults) {
        let key = if a < b { (a, b) } else { (b, a) };
        self.lock()
            .links
            .insert((key.0.to_string(), key.1.to_string()), faults);
    }

    /// Whether `a` and `b` reach each other now.
    pub fn reach(&self, a: &str, b: &str) -> bool {
        self.lock().reach(a, b)
    }

    /// How long `a` and `b` have reached each other without a break, or None.
    pub fn reached_for(&self, a: &str, b: &str) -> Option<Duration> {
        let (x, y) = if a < b { (a, b) } else { (b, a) };
        let inner = self.lock();
        inner
            .since
            .get(&(x.to_string(), y.to_string()))
            .map(|s| Instant::now().saturating_duration_since(*s))
    }

    /// Messages sent and lost so far.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.sent, inner.lost)
    }

    /// Runs `f` on the network, then tells the nodes whose links it changed, as a network
    /// task tells replication and membership of connections that come and go.
    fn change<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let (out, links, senders) = {
            let mut inner = self.lock();
            let before = inner.pairs();
            let out = f(&mut inner);
            let after = inner.pairs();
            let now = Instant::now();
            let mut links = Vec::new();
            for p in &before {
                if !after.contains(p) {
                    inner.since.remove(p);
                    links.push(Link::Down(p.0.clone(), p.1.clone()));
                }
            }
            for p in &after {
                if !before.contains(p) {
                    inner.since.insert(p.clone(), now);
                    links.push(Link::Up(p.0.clone(), p.1.clone()));
                }
            }
            // A node restarts only after `detach`: its links come up afresh, so its new
            // incarnation hears of every peer.
            let senders: BTreeMap<String, (String, mpsc::Sender<Inbound>, _)> = inner
                .endpoints
                .iter()
                .map(|(n, e)| {
                    (
                        n.clone(),
                        (e.peer.clone(), e.replication.clone(), e.observed.clone()),
                    )
                })
                .collect();
            (out, links, senders)
        };
        for link in links {
            let (a, b, up) = match link {
                Link::Up(a, b) => (a, b, true),
                Link::Down(a, b) => (a, b, false),
            };
            for (me, other) in [(&a, &b), (&b, &a)] {
                let (Some((_, tx, obs)), Some((peer, _, _))) =
                    (senders.get(me), senders.get(other))
                else {
                    continue;
                };
                let (tx, obs, peer) = (tx.clone(), obs.clone(), peer.clone());
                tokio::spawn(async move {
                    let event = if up {
                        Inbound::PeerUp(peer)
                    } else {
                        Inbound::PeerDown(peer)
                    };
                    let _ = tx.send(event).await;
                    if up {
                        let _ = obs.send(observed::Inbound::PeerJoined).await;
                    }
                });
            }
        }
        out
    }
}

/// One incarnation of one node on the network: its replication transport and its
/// membership gossip.
#[derive(Clone)]
pub struct NodeLink {
    net: Net,
    name: String,
    incarnation: u64,
}

/// One copy of one message on its way: when it arrives, where, and the receiving ends.
struct Delivery {
    delay: Duration,
    to: String,
    incarnation: u64,
    replication: mpsc::Sender<Inbound>,
    observed: mpsc::Sender<observed::Inbound>,
}

impl NodeLink {
    /// The deliveries of one message from this node to every node it reaches.
    fn fan_out(&self, duplicates: bool) -> Vec<Delivery> {
        let mut inner = self.net.lock();
        if !inner.current(&self.name, self.incarnation) {
            return Vec::new();
        }
        let others: Vec<String> = inner
            .endpoints
            .keys()
            .filter(|n| **n != self.name)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for to in others {
            for delay in inner.copies(&self.name, &to, duplicates) {
                if let Some(e) = inner.endpoints.get(&to) {
                    out.push(Delivery {
                        delay,
                        to: to.clone(),
                        incarnation: e.incarnation,
                        replication: e.replication.clone(),
                        observed: e.observed.clone(),
                    });
                }
            }
        }
        out
    }

    fn peer_of(&self) -> String {
        self.net
            .lock()
            .endpoints
            .get(&self.name)
            .map(|e| e.peer.clone())
            .unwrap_or_default()
    }

    /// Whether a message from this incarnation may still reach `to` (incarnation `inc`).
    fn arrives(&self, to: &str, inc: u64) -> bool {
        let inner = self.net.lock();
        inner.current(&self.name, self.incarnation)
            && inner.current(to, inc)
            && inner.reach(&self.name, to)
    }
}

#[async_trait]
impl Transport for NodeLink {
    async fn broadcast(&self, data: Vec<u8>) {
        let from = self.peer_of();
        for d in self.fan_out(true) {
            let (link, data, from) = (self.clone(), data.clone(), from.clone());
            tokio::spawn(async move {
                tokio::time::sleep(d.delay).await;
                if link.arrives(&d.to, d.incarnation) {
                    let _ = d.replication.send(Inbound::Gossip { from, data }).await;
                }
            });
        }
    }

    async fn request_sync(&self, peer: &str, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let (to, inc, tx, there, back) = {
            let mut inner = self.net.lock();
            if !inner.current(&self.name, self.incarnation) {
                return Err("this node is down".into());
            }
            let Some((to, e)) = inner.endpoints.iter().find(|(_, e)| e.peer == peer) else {
                return Err(format!("{peer} is unknown"));
            };
            let (to, inc, tx) = (to.clone(), e.incarnation, e.replication.clone());
            let copies = inner.copies(&self.name, &to, false);
            let Some(there) = copies.first().copied() else {
                return Err(format!("{peer} is unreachable"));
            };
            let back = inner.delay(&to, &self.name);
            (to, inc, tx, there, back)
        };
        let from = self.peer_of();
        tokio::time::sleep(there).await;
        if !self.arrives(&to, inc) {
            return Err(format!("the connection to {peer} was lost"));
        }
        let (reply, answer) = oneshot::channel();
        tx.send(Inbound::SyncRequest { from, data, reply })
            .await
            .map_err(|_| format!("{peer} is stopping"))?;
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => return Err(format!("{peer} did not answer")),
            Err(_) => return Err(format!("{peer} timed out")),
        };
        tokio::time::sleep(back).await;
        if !self.arrives(&to, inc) {
            return Err(format!("the connection to {peer} was lost"));
        }
        Ok(answer)
    }

    fn peers(&self) -> Vec<String> {
        let inner = self.net.lock();
        if !inner.current(&self.name, self.incarnation) {
            return Vec::new();
        }
        inner
            .endpoints
            .iter()
            .filter(|(n, _)| inner.reach(&self.name, n))
            .map(|(_, e)| e.peer.clone())
            .collect()
    }
}

#[async_trait]
impl observed::Publish for NodeLink {
    async fn publish(&self, data: Vec<u8>) {
        for d in self.fan_out(true) {
            let (link, data) = (self.clone(), data.clone());
            tokio::spawn(async move {
                tokio::time::sleep(d.delay).await;
                if link.arrives(&d.to, d.incarnation) {
                    let _ = d.observed.send(observed::Inbound::Gossip { data }).await;
                }
            });
        }
    }
}
