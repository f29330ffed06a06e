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

/// Wakes a task on store commits, observed changes and a tick.
pub struct Wakeup {
    state: watch::Receiver<u64>,
    observed: watch::Receiver<Observed>,
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
        Wakeup {
            state: state.subscribe(),
            observed: observed.subscribe(),
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
    /// debounce is seen by the round that follows.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            r = self.state.changed(), if self.state_open => self.state_open = r.is_ok(),
            r = self.observed.changed(), if self.observed_open => self.observed_open = r.is_ok(),
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
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(self.debounce) => {}
        }
        self.state.borrow_and_update();
        self.observed.borrow_and_update();
        if let Some(rx) = self.pod_network.as_mut() {
            rx.borrow_and_update();
        }
        if let Some(rx) = self.service_addresses.as_mut() {
            rx.borrow_and_update();
        }
        true
    }
}
