//! [`Wakeup`]: when a task that derives something from both kinds of state (the controllers,
//! the DNS zone, the node proxies) runs its next round: after a change of the desired-state
//! store or of observed state, or a tick, then a short debounce so that a burst of changes
//! makes one round. Every round recomputes from scratch, so a missed event never matters.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::observed::{Observed, ObservedHandle};
use crate::proxy::ServiceAddresses;
use crate::runtime::PodNetwork;
use crate::state::StateHandle;

/// What of a node's record the tasks derive from: its liveness and contents, not its version
/// or heartbeat time, which move with every beat (several times a second in a cluster) while
/// nothing else does. A node that turns suspect or dead shows at the next beat of any other
/// node, or at the tick.
#[derive(Debug, Clone, PartialEq)]
struct Relevant {
    liveness: crate::observed::Liveness,
    address: String,
    left: bool,
    peer_id: String,
    p2p_address: String,
    pods: std::collections::BTreeMap<String, shoal_protocol::status::PodStatus>,
}

fn relevant(handle: &ObservedHandle, observed: &Observed) -> Vec<(String, Relevant)> {
    observed
        .values()
        .map(|r| {
            (
                r.name.clone(),
                Relevant {
                    liveness: handle.liveness(r),
                    address: r.address.clone(),
                    left: r.left,
                    peer_id: r.peer_id.clone(),
                    p2p_address: r.p2p_address.clone(),
                    pods: r.pods.clone(),
                },
            )
        })
        .collect()
}

/// Whether `observed` holds the same nodes as `seen`, alike but for their beats (without
/// copying it: this runs at every beat of every peer).
fn same(seen: &[(String, Relevant)], handle: &ObservedHandle, observed: &Observed) -> bool {
    seen.len() == observed.len()
        && seen.iter().zip(observed.values()).all(|((name, s), r)| {
            *name == r.name
                && s.liveness == handle.liveness(r)
                && s.address == r.address
                && s.left == r.left
                && s.peer_id == r.peer_id
                && s.p2p_address == r.p2p_address
                && s.pods == r.pods
        })
}

/// Wakes a task on store commits, observed changes and a tick.
pub struct Wakeup {
    state: watch::Receiver<u64>,
    observed: watch::Receiver<Observed>,
    /// The records as of the last round: a beat that changes nothing else wakes nobody.
    seen: Vec<(String, Relevant)>,
    /// To judge liveness (the beats of the others show a node turning suspect or dead).
    handle: ObservedHandle,
    state_open: bool,
    observed_open: bool,
    tick: Interval,
    debounce: Duration,
    /// This node's pod network, from the agent, when the task follows it too.
    pod_network: Option<watch::Receiver<Option<PodNetwork>>>,
    pod_network_open: bool,
    /// The Services' own addresses on the pod network, from the proxies, when followed.
    service_addresses: Option<watch::Receiver<ServiceAddresses>>,
    service_addresses_open: bool,
}

impl Wakeup {
    /// Wakes at least every `tick`, and `debounce` after a change.
    pub fn new(
        state: &StateHandle,
        observed: &ObservedHandle,
        tick: Duration,
        debounce: Duration,
    ) -> Wakeup {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let handle = observed.clone();
        let observed = observed.subscribe();
        let seen = relevant(&handle, &observed.borrow());
        Wakeup {
            state: state.subscribe(),
            observed,
            seen,
            handle,
            state_open: true,
            observed_open: true,
            tick: interval,
            debounce,
            pod_network: None,
            pod_network_open: false,
            service_addresses: None,
            service_addresses_open: false,
        }
    }

    /// Also wakes when this node's pod network changes.
    pub fn with_pod_network(mut self, rx: watch::Receiver<Option<PodNetwork>>) -> Wakeup {
        self.pod_network = Some(rx);
        self.pod_network_open = true;
        self
    }

    /// Also wakes when the Services' own addresses change.
    pub fn with_service_addresses(mut self, rx: watch::Receiver<ServiceAddresses>) -> Wakeup {
        self.service_addresses = Some(rx);
        self.service_addresses_open = true;
        self
    }

    /// The Services' own addresses as of the last wake-up (empty when not followed).
    pub fn service_addresses(&self) -> ServiceAddresses {
        self.service_addresses
            .as_ref()
            .map(|rx| rx.borrow().clone())
            .unwrap_or_default()
    }

    /// The pod network as of the last wake-up (None when not followed or not known yet).
    pub fn pod_network(&self) -> Option<PodNetwork> {
        self.pod_network.as_ref().and_then(|rx| *rx.borrow())
    }

    /// Waits for the next round; false once `shutdown` fires. What arrives during the
    /// debounce is seen by the round that follows. A change of observed state that is only
    /// heartbeats (versions and times, liveness unchanged) wakes nobody.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            let mut beat = false;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return false,
                r = self.state.changed(), if self.state_open => self.state_open = r.is_ok(),
                r = self.observed.changed(), if self.observed_open => {
                    self.observed_open = r.is_ok();
                    beat = r.is_ok();
                }
                r = async {
                    match self.pod_network.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                }, if self.pod_network_open => self.pod_network_open = r.is_ok(),
                r = async {
                    match self.service_addresses.as_mut() {
                        Some(rx) => rx.changed().await,
                        None => std::future::pending().await,
                    }
                }, if self.service_addresses_open => self.service_addresses_open = r.is_ok(),
                _ = self.tick.tick() => {}
            }
            if beat && same(&self.seen, &self.handle, &self.observed.borrow_and_update()) {
                continue;
            }
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(self.debounce) => {}
        }
        self.state.borrow_and_update();
        self.seen = relevant(&self.handle, &self.observed.borrow_and_update());
        if let Some(rx) = self.pod_network.as_mut() {
            rx.borrow_and_update();
        }
        if let Some(rx) = self.service_addresses.as_mut() {
            rx.borrow_and_update();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use shoal_protocol::status::PodStatus;

    use super::*;
    use crate::observed::NodeRecord;
    use crate::state::StateConfig;

    #[tokio::test]
    async fn beats_alone_wake_nobody_but_pods_and_the_store_do() {
        let dir = tempfile::tempdir().unwrap();
        let (state, task) = crate::state::open(&StateConfig {
            data_dir: dir.path().to_path_buf(),
            cluster_secret: [7; 32],
            channel_size: 16,
        })
        .unwrap();
        let stop = CancellationToken::new();
        let _guard = stop.clone().drop_guard();
        tokio::spawn(task.run(stop.clone()));
        let timing = crate::observed::Timing {
            heartbeat: Duration::from_millis(50),
            ..crate::observed::Timing::default()
        };
        let record = NodeRecord {
            name: "n1".into(),
            address: "127.0.0.1".into(),
            ..NodeRecord::default()
        };
        let (observed, reporter, hb) = crate::observed::start(record, timing, 4);
        tokio::spawn(hb.run(stop.clone()));
        let mut wake = Wakeup::new(
            &state,
            &observed,
            Duration::from_secs(3600),
            Duration::from_millis(5),
        );
        // The first tick of an interval is at once.
        assert!(wake.next(&stop).await);
        // A heartbeat every 50 ms moves the record's version: no round.
        let v0 = observed.snapshot()["n1"].version;
        let quiet = tokio::time::timeout(Duration::from_millis(600), wake.next(&stop)).await;
        assert!(quiet.is_err(), "woken by beats alone");
        assert!(observed.snapshot()["n1"].version > v0 + 3);
        // A pod's status is news.
        let pods = BTreeMap::from([(
            "default/web-0".to_string(),
            PodStatus {
                phase: "Running".into(),
                ..PodStatus::default()
            },
        )]);
        reporter.report(pods).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), wake.next(&stop))
            .await
            .expect("a pod change wakes");
        // And so is a write to the store.
        let quiet = tokio::time::timeout(Duration::from_millis(300), wake.next(&stop)).await;
        assert!(quiet.is_err(), "woken by beats alone");
        crate::nodes::register(&state, "n1", "p1").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), wake.next(&stop))
            .await
            .expect("a commit wakes");
    }
}
