//! Which targets a new connection or flow tries first: the ordering of a route's candidates by
//! what this node knows of them right now (pure), and the short memory of targets that just
//! failed that feeds it.
//!
//! A powered-off machine is silent: connections to it neither fail nor succeed, they time out.
//! Membership calls it suspect only after 1.5 s and dead after 3 s (and only then does it leave
//! the table), so in between every new connection would pay a connect timeout to it. Two
//! things put such a target last, without ever taking it away (when it is the only one, it is
//! still tried):
//! - its node has not been heard for [`stale_after`] (about two heartbeats): [`Health::Stale`];
//! - a connection to it failed or timed out within [`FAILED_FOR`]: [`Health::Failed`].
//!
//! [`Failures`] is shared by every port task of the node (behind a std `Mutex`, held for a
//! lookup or an insert only, never across an `.await`): a dead node's proxy fails for every
//! Service at once.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::table::Target;

/// How long a target that failed is put last for new connections: long enough to bridge the
/// time until membership marks its node suspect and dead (3 s by default, after which it is
/// out of the table), short enough that a target that merely refused once (a pod restarting)
/// gets its share again soon. A success clears it at once.
pub const FAILED_FOR: Duration = Duration::from_secs(5);

/// The most failed targets remembered; beyond it the oldest is forgotten. A home-lab cluster
/// has a few nodes and tens of pods: this is far above what a real outage produces.
pub const MAX_FAILURES: usize = 256;

/// How long a node may go unheard before its proxy is tried after the others: two heartbeat
/// intervals, so one late or lost heartbeat does not count, a second one does.
pub fn stale_after(heartbeat: Duration) -> Duration {
    heartbeat.saturating_mul(2)
}

/// What this node knows of a target now; the order in which candidates are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Nothing against it.
    Good,
    /// Another node's proxy, not heard from for [`stale_after`] (or never).
    Stale,
    /// A connection to it failed or timed out lately.
    Failed,
}

/// What [`health`] judges from: taken from the table (when each other node was last heard)
/// and from [`Failures`].
#[derive(Clone, Copy)]
pub struct Knowledge<'a> {
    pub now: Instant,
    /// When each other node was last heard, by its (canonical) address.
    pub heard: &'a BTreeMap<IpAddr, Instant>,
    pub stale_after: Duration,
    /// Whether a target failed lately.
    pub failed: &'a dyn Fn(SocketAddr) -> bool,
}

/// The health of `target` (pure). A failure weighs more than silence: a stale node might
/// still answer (its heartbeats may be late while its proxy serves), a refused or timed-out
/// connection did not. This node's own pods are never stale.
pub fn health(target: &Target, k: &Knowledge<'_>) -> Health {
    if (k.failed)(target.addr) {
        return Health::Failed;
    }
    if target.remote {
        let fresh = k
            .heard
            .get(&target.addr.ip().to_canonical())
            .is_some_and(|t| k.now.saturating_duration_since(*t) <= k.stale_after);
        if !fresh {
            return Health::Stale;
        }
    }
    Health::Good
}

/// `candidates` in the order to try them (pure): good ones first, then stale, then failed;
/// within each kind the route's order (local first, round-robin) is kept. Nothing is left out.
pub fn order(mut candidates: Vec<Target>, k: &Knowledge<'_>) -> Vec<Target> {
    // A stable sort keeps the round-robin rotation within each kind.
    candidates.sort_by_cached_key(|t| health(t, k));
    candidates
}

/// Targets that failed lately, with when (see [`FAILED_FOR`]); at most [`MAX_FAILURES`].
#[derive(Debug, Clone)]
pub struct Failures {
    at: HashMap<SocketAddr, Instant>,
    ttl: Duration,
    capacity: usize,
}

impl Default for Failures {
    fn default() -> Self {
        Failures::new(FAILED_FOR, MAX_FAILURES)
    }
}

impl Failures {
    pub fn new(ttl: Duration, capacity: usize) -> Failures {
        Failures {
            at: HashMap::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Remembers that `addr` failed at `now`. When full, expired entries go first, then the
    /// oldest.
    pub fn record(&mut self, addr: SocketAddr, now: Instant) {
        if !self.at.contains_key(&addr) && self.at.len() >= self.capacity {
            let ttl = self.ttl;
            self.at
                .retain(|_, t| now.saturating_duration_since(*t) < ttl);
            if self.at.len() >= self.capacity
                && let Some(oldest) = self.at.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a)
            {
                self.at.remove(&oldest);
            }
        }
        self.at.insert(addr, now);
    }

    /// Forgets `addr`: it answered.
    pub fn clear(&mut self, addr: SocketAddr) {
        self.at.remove(&addr);
    }

    /// Whether `addr` failed less than the expiry ago.
    pub fn failed(&self, addr: SocketAddr, now: Instant) -> bool {
        self.at
            .get(&addr)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.ttl)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// [`Failures`] shared by the port tasks of this node.
#[derive(Debug, Clone, Default)]
pub struct SharedFailures(Arc<Mutex<Failures>>);

impl SharedFailures {
    // A panic while the lock is held cannot leave the map half-written in a way that matters
    // (each call is one insert or remove): a poisoned lock is used as it is.
    fn with<R>(&self, f: impl FnOnce(&mut Failures) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    pub fn record(&self, addr: SocketAddr) {
        let now = Instant::now();
        self.with(|f| f.record(addr, now));
    }

    pub fn clear(&self, addr: SocketAddr) {
        self.with(|f| f.clear(addr));
    }

    /// Whether `addr` failed lately.
    pub fn failed(&self, addr: SocketAddr) -> bool {
        let now = Instant::now();
        self.with(|f| f.failed(addr, now))
    }

    /// A copy of the targets that failed lately, as of `now`, to order many candidates with
    /// one lock.
    pub fn recent(&self, now: Instant) -> Vec<SocketAddr> {
        self.with(|f| {
            f.at.iter()
                .filter(|(_, t)| now.saturating_duration_since(**t) < f.ttl)
                .map(|(a, _)| *a)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn local(s: &str) -> Target {
        Target {
            addr: sa(s),
            remote: false,
        }
    }

    fn remote(s: &str) -> Target {
        Target {
            addr: sa(s),
            remote: true,
        }
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn health_of_targets() {
        let now = Instant::now() + Duration::from_secs(60);
        let heard: BTreeMap<IpAddr, Instant> = [
            ("10.0.0.2".parse().unwrap(), now - MS(400)),
            ("10.0.0.3".parse().unwrap(), now - MS(1200)),
            ("10.0.0.4".parse().unwrap(), now - MS(1000)),
        ]
        .into();
        let failed_addr = sa("10.0.0.2:9000");
        let failed = move |a: SocketAddr| a == failed_addr;
        let k = Knowledge {
            now,
            heard: &heard,
            stale_after: stale_after(MS(500)),
            failed: &failed,
        };
        let cases = [
            (remote("10.0.0.2:8080"), Health::Good, "heard 0.4 s ago"),
            (
                remote("10.0.0.4:8080"),
                Health::Good,
                "heard exactly 1 s ago",
            ),
            (remote("10.0.0.3:8080"), Health::Stale, "heard 1.2 s ago"),
            (remote("10.0.0.9:8080"), Health::Stale, "never heard"),
            (
                remote("[::ffff:10.0.0.3]:8080"),
                Health::Stale,
                "a mapped address is its node's",
            ),
            (remote("10.0.0.2:9000"), Health::Failed, "heard, but failed"),
            (local("172.18.0.2:80"), Health::Good, "a pod of this node"),
            (
                local("10.0.0.2:9000"),
                Health::Failed,
                "a local target fails too",
            ),
        ];
        for (target, want, why) in cases {
            assert_eq!(health(&target, &k), want, "{why}: {target:?}");
        }
    }

    #[test]
    fn order_puts_stale_then_failed_last_and_keeps_the_rest() {
        let now = Instant::now() + Duration::from_secs(60);
        let heard: BTreeMap<IpAddr, Instant> = [
            ("10.0.0.2".parse().unwrap(), now - MS(100)),
            ("10.0.0.3".parse().unwrap(), now - MS(2000)),
            ("10.0.0.4".parse().unwrap(), now - MS(100)),
            ("10.0.0.5".parse().unwrap(), now - MS(100)),
        ]
        .into();
        let none = |_: SocketAddr| false;
        let two_failed = |a: SocketAddr| a == sa("10.0.0.2:80") || a == sa("172.18.0.2:80");
        let k = |failed| Knowledge {
            now,
            heard: &heard,
            stale_after: MS(1000),
            failed,
        };
        let route = vec![
            local("172.18.0.2:80"),
            local("172.18.0.3:80"),
            remote("10.0.0.2:80"),
            remote("10.0.0.3:80"),
            remote("10.0.0.4:80"),
            remote("10.0.0.5:80"),
        ];
        type Failed<'a> = &'a dyn Fn(SocketAddr) -> bool;
        let cases: Vec<(Failed<'_>, Vec<Target>)> = vec![
            // Nothing failed: only the stale node moves, behind the good ones.
            (
                &none,
                vec![
                    local("172.18.0.2:80"),
                    local("172.18.0.3:80"),
                    remote("10.0.0.2:80"),
                    remote("10.0.0.4:80"),
                    remote("10.0.0.5:80"),
                    remote("10.0.0.3:80"),
                ],
            ),
            // Failed ones go behind the stale one, in their own order.
            (
                &two_failed,
                vec![
                    local("172.18.0.3:80"),
                    remote("10.0.0.4:80"),
                    remote("10.0.0.5:80"),
                    remote("10.0.0.3:80"),
                    local("172.18.0.2:80"),
                    remote("10.0.0.2:80"),
                ],
            ),
        ];
        for (failed, want) in cases {
            assert_eq!(order(route.clone(), &k(failed)), want);
        }
        // The only candidate stays, however bad.
        let only = vec![remote("10.0.0.3:80")];
        let all = |_: SocketAddr| true;
        assert_eq!(order(only.clone(), &k(&all)), only);
        assert!(order(Vec::new(), &k(&all)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_expire_clear_and_stay_bounded() {
        let mut f = Failures::new(Duration::from_secs(5), 3);
        let t0 = Instant::now();
        let (a, b, c, d) = (
            sa("10.0.0.1:1"),
            sa("10.0.0.2:1"),
            sa("10.0.0.3:1"),
            sa("10.0.0.4:1"),
        );
        f.record(a, t0);
        assert!(f.failed(a, t0 + MS(4999)));
        assert!(!f.failed(a, t0 + Duration::from_secs(5)), "expired");
        assert!(!f.failed(b, t0));
        f.record(b, t0 + MS(10));
        f.record(c, t0 + MS(20));
        // Full: the oldest (a) makes room.
        f.record(d, t0 + MS(30));
        assert_eq!(f.len(), 3);
        assert!(!f.failed(a, t0 + MS(30)));
        assert!(f.failed(b, t0 + MS(30)) && f.failed(c, t0 + MS(30)) && f.failed(d, t0 + MS(30)));
        // Recording one already known refreshes it without evicting another.
        f.record(b, t0 + MS(40));
        assert_eq!(f.len(), 3);
        assert!(f.failed(c, t0 + MS(40)));
        // Expired ones make room before any live one is evicted.
        let later = t0 + Duration::from_secs(5) + MS(25);
        f.record(a, later);
        assert!(f.failed(a, later) && f.failed(b, later) && f.failed(d, later));
        assert!(!f.failed(c, later));
        f.clear(a);
        assert!(!f.failed(a, later));

        let shared = SharedFailures::default();
        shared.record(a);
        assert_eq!(shared.recent(Instant::now()), vec![a]);
        tokio::time::advance(FAILED_FOR).await;
        assert!(shared.recent(Instant::now()).is_empty());
        shared.record(b);
        shared.clear(b);
        assert!(shared.recent(Instant::now()).is_empty());
    }
}
