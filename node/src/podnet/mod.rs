//! The pod network across machines: every pod reaches every pod by its address, whatever
//! machine each runs on (Kubernetes' network model; see "Pod network" in
//! `docs/architecture.md`).
//!
//! One task per node ([`PodNet`]) owns the node's side of it:
//! - **its subnet**: a `/24` of the cluster's pod range, claimed in the desired state without
//!   a master ([`subnet`]). A claim counts once it has stood for [`SETTLE`] (time for a
//!   concurrent claim of the same index to arrive and win); one held before a restart counts
//!   at once. It publishes the network the agent makes on it, and nothing before: the agent
//!   starts no pod until then.
//! - **routes** to every other node's subnet, following membership: host-gateway routing to a
//!   peer on the same LAN, the VXLAN overlay to a peer behind a router ([`plan`]);
//! - **firewall rules**: masquerade for traffic that leaves the pod range, the engine's bridge
//!   opened to other nodes' pods, and the node's API and p2p ports refused to pods.
//!
//! What it did last is published as a [`PodNetStatus`] (for `describe node`).

pub mod host;
pub mod plan;
pub mod subnet;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use shoal_protocol::Kind;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::observed::ObservedHandle;
use crate::runtime::{NetworkSpec, Subnet};
use crate::state::{PodSubnetClaim, StateHandle};
use host::HostNet;
use plan::{Peer, Route, RouteMode};
use subnet::{Decision, PodRange, Subnet24};

/// How long a new claim must stand before the node uses it.
pub const SETTLE: Duration = Duration::from_secs(3);
/// How often the task looks at claims and membership.
const TICK: Duration = Duration::from_secs(1);
/// How often routes and rules are read back from the host even when nothing changed (someone
/// may have flushed them), and peers' route modes asked again.
const RECHECK: Duration = Duration::from_secs(30);

/// What the task needs to know about its node.
#[derive(Debug, Clone)]
pub struct PodNetConfig {
    pub node_name: String,
    /// The range this node's configuration names; the recorded one wins.
    pub range: PodRange,
    /// The agent's network name: the node's firewall rules are tagged with it.
    pub network: String,
    /// The node's LAN address (the overlay's local end).
    pub advertise: IpAddr,
    pub api_port: u16,
    pub p2p_port: u16,
    pub pods_reach_node_ports: bool,
}

/// The node's pod network as it stands, for `describe node`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetStatus {
    /// The cluster's pod range.
    pub range: Option<String>,
    /// This node's pod subnet, once its claim counts.
    pub subnet: Option<String>,
    /// How this node reaches each peer's pod subnet, by peer name.
    pub routes: BTreeMap<String, String>,
    /// What went wrong last, if the last round failed somewhere.
    pub error: Option<String>,
}

/// The task. Build with [`PodNet::new`], run with [`PodNet::run`].
pub struct PodNet {
    config: PodNetConfig,
    state: StateHandle,
    observed: ObservedHandle,
    host: Arc<dyn HostNet>,
    spec: watch::Sender<Option<NetworkSpec>>,
    status: watch::Sender<PodNetStatus>,
    /// The index this node claimed, and when (it counts after [`SETTLE`]).
    claimed: Option<(u32, Instant)>,
    /// The index in use.
    held: Option<u32>,
    /// Whether the first round has read the claims (a claim held then counts at once).
    started: bool,
    /// The pod networks' MTU, once read.
    mtu: Option<u32>,
    /// Each peer address's mode, and when it was asked.
    modes: BTreeMap<IpAddr, (RouteMode, Instant)>,
    /// The routes last made, and when they were last read back.
    applied: BTreeSet<Route>,
    checked: Option<Instant>,
    /// The rules' tag last made, and when.
    rules: Option<(String, Instant)>,
    /// The overlay device made for this index.
    vxlan: Option<u32>,
    warned_range: bool,
}

impl PodNet {
    /// The task, the network the agent makes (see `Agent::with_pod_subnet`) and its status.
    pub fn new(
        config: PodNetConfig,
        state: StateHandle,
        observed: ObservedHandle,
        host: Arc<dyn HostNet>,
    ) -> (
        PodNet,
        watch::Receiver<Option<NetworkSpec>>,
        watch::Receiver<PodNetStatus>,
    ) {
        let (spec, spec_rx) = watch::channel(None);
        let (status, status_rx) = watch::channel(PodNetStatus::default());
        let task = PodNet {
            config,
            state,
            observed,
            host,
            spec,
            status,
            claimed: None,
            held: None,
            started: false,
            mtu: None,
            modes: BTreeMap::new(),
            applied: BTreeSet::new(),
            checked: None,
            rules: None,
            vxlan: None,
            warned_range: false,
        };
        (task, spec_rx, status_rx)
    }

    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let error = self.round(Instant::now()).await.err();
            if let Some(e) = &error
                && self.status.borrow().error.as_ref() != Some(e)
            {
                tracing::warn!(error = %e, "pod network: retrying");
            }
            self.status.send_if_modified(|s| {
                let changed = s.error != error;
                s.error = error;
                changed
            });
        }
    }

    /// One round: claim, publish, rules, routes.
    async fn round(&mut self, now: Instant) -> Result<(), String> {
        let me = self.config.node_name.clone();
        // Claims wait for the cluster's state: the node registers itself once it has it.
        match self.state.get(Kind::Node, None, &me).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("cannot read this node's registration: {e}")),
        }
        let subnets = self
            .state
            .pod_subnets()
            .await
            .map_err(|e| format!("cannot read the pod subnets: {e}"))?;
        let range = self.range(subnets.range.as_deref());
        let started = std::mem::replace(&mut self.started, true);
        let index = match subnet::decide(&range, &subnets.claims, &me) {
            Decision::Keep { index, release } => {
                if !release.is_empty() {
                    self.claim(&range, None, release).await?;
                }
                let settled = match self.claimed {
                    Some((i, at)) if i == index => now.duration_since(at) >= SETTLE,
                    // Held before this process started, or claimed long ago.
                    _ => self.held == Some(index) || !started,
                };
                settled.then_some(index)
            }
            Decision::Claim(index) => {
                self.claim(&range, Some(index), Vec::new()).await?;
                tracing::info!(index, subnet = ?range.subnet(index).map(|s| s.to_string()),
                    "claimed a pod subnet");
                self.claimed = Some((index, now));
                None
            }
            Decision::Exhausted => {
                return Err(format!(
                    "every /24 of the pod range {range} is held by another node: this node \
                     runs no pods (a cluster of more nodes needs a larger range)"
                ));
            }
        };
        if self.held != index {
            if let Some(i) = index {
                tracing::info!(subnet = ?range.subnet(i).map(|s| s.to_string()),
                    "this node's pod subnet");
            } else if let Some(old) = self.held {
                tracing::warn!(
                    index = old,
                    "this node lost its pod subnet to another node's \
                    claim: its pods move to a new one"
                );
            }
            self.held = index;
        }
        let subnet = index.and_then(|i| range.subnet(i));
        if subnet.is_some() && self.mtu.is_none() {
            let lan = self.host.mtu_of(self.config.advertise).await.ok().flatten();
            self.mtu = Some(plan::pod_mtu(lan));
        }
        let spec = subnet.map(|s| network_spec(s, self.mtu));
        self.spec.send_if_modified(|current| {
            let changed = *current != spec;
            *current = spec;
            changed
        });
        let mut errors = Vec::new();
        if let (Some(i), Some(s)) = (index, subnet)
            && let Err(e) = self.ensure_rules(&range, i, s, now).await
        {
            errors.push(e);
        }
        let routes = match self
            .ensure_routes(&range, &subnets.claims, index, now)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                BTreeMap::new()
            }
        };
        self.status.send_if_modified(|st| {
            let next = PodNetStatus {
                range: Some(range.to_string()),
                subnet: subnet.map(|s| s.to_string()),
                routes,
                error: st.error.clone(),
            };
            let changed = *st != next;
            *st = next;
            changed
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The recorded range, else this node's.
    fn range(&mut self, recorded: Option<&str>) -> PodRange {
        let Some(text) = recorded else {
            return self.config.range;
        };
        match PodRange::parse(text) {
            Ok(r) => {
                if r != self.config.range && !self.warned_range {
                    self.warned_range = true;
                    tracing::warn!(recorded = %r, configured = %self.config.range,
                        "the cluster's pod range was fixed when it was made: this node uses \
                         the recorded one, not its pod-range setting");
                }
                r
            }
            Err(e) => {
                if !self.warned_range {
                    self.warned_range = true;
                    tracing::warn!(error = %e, "the recorded pod range is unreadable: this \
                        node uses its own setting");
                }
                self.config.range
            }
        }
    }

    async fn claim(
        &self,
        range: &PodRange,
        index: Option<u32>,
        release: Vec<u32>,
    ) -> Result<(), String> {
        self.state
            .claim_pod_subnet(PodSubnetClaim {
                range: range.to_string(),
                node: self.config.node_name.clone(),
                index,
                release,
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot claim a pod subnet: {e}"))
    }

    async fn ensure_rules(
        &mut self,
        range: &PodRange,
        index: u32,
        subnet: Subnet24,
        now: Instant,
    ) -> Result<(), String> {
        let prefix = format!("shoal:{}:", self.config.network);
        let tag = format!("{prefix}{index}");
        if let Some((made, at)) = &self.rules
            && *made == tag
            && now.duration_since(*at) < RECHECK
        {
            return Ok(());
        }
        let rules = plan::rules(&plan::RuleInput {
            range: *range,
            subnet,
            tag: tag.clone(),
            api_port: self.config.api_port,
            p2p_port: self.config.p2p_port,
            pods_reach_node_ports: self.config.pods_reach_node_ports,
        });
        self.host
            .ensure_rules(&rules, &prefix, &tag)
            .await
            .map_err(|e| format!("cannot set the pod network's firewall rules: {e}"))?;
        self.rules = Some((tag, now));
        Ok(())
    }

    /// Makes the routes to every peer membership hears, removes the others; returns each
    /// peer's mode.
    async fn ensure_routes(
        &mut self,
        range: &PodRange,
        claims: &BTreeMap<u32, String>,
        index: Option<u32>,
        now: Instant,
    ) -> Result<BTreeMap<String, String>, String> {
        let me = self.config.node_name.clone();
        let mut peers = BTreeMap::new();
        for (name, address) in self.observed.heard_addresses() {
            if name == me {
                continue;
            }
            let mode = self.mode(address, now).await;
            peers.insert(name, Peer { address, mode });
        }
        let modes = peers
            .iter()
            .filter(|(n, _)| claims.values().any(|c| c == *n))
            .map(|(n, p)| (n.clone(), p.mode.to_string()))
            .collect();
        let mut desired = plan::routes(range, claims, &peers);
        if index.is_none() {
            // The overlay's local end is this node's tunnel address, in its own subnet.
            desired.retain(|r| matches!(r, Route::Via { .. }));
        }
        let full = self
            .checked
            .is_none_or(|t| now.duration_since(t) >= RECHECK);
        if desired == self.applied && !full {
            return Ok(modes);
        }
        let overlay = desired.iter().any(|r| matches!(r, Route::Overlay { .. }));
        if overlay {
            let (Some(i), IpAddr::V4(local)) = (index, self.config.advertise) else {
                return Err("the overlay needs an IPv4 advertise address".to_string());
            };
            if self.vxlan != Some(i) || full {
                let subnet = range
                    .subnet(i)
                    .ok_or_else(|| format!("index {i} is outside the pod range"))?;
                self.host
                    .ensure_vxlan(i, subnet, local, self.mtu.unwrap_or(plan::pod_mtu(None)))
                    .await
                    .map_err(|e| format!("cannot make the overlay device: {e}"))?;
                self.vxlan = Some(i);
            }
        }
        let have: BTreeSet<Subnet24> = if full {
            self.host
                .routes(range)
                .await
                .map_err(|e| format!("cannot read the pod routes: {e}"))?
                .into_iter()
                .collect()
        } else {
            self.applied.iter().map(Route::subnet).collect()
        };
        let wanted: BTreeSet<Subnet24> = desired.iter().map(Route::subnet).collect();
        let mut failed = None;
        for gone in have.difference(&wanted) {
            tracing::info!(subnet = %gone, "removing the route to a pod subnet");
            if let Err(e) = self.host.remove_route(*gone).await {
                failed.get_or_insert(e.to_string());
            }
        }
        for route in &desired {
            if !full && self.applied.contains(route) {
                continue;
            }
            if !self.applied.contains(route) {
                tracing::info!(?route, "routing a pod subnet");
            }
            if let Err(e) = self.host.set_route(route).await {
                failed.get_or_insert(e.to_string());
            }
        }
        if let Some(e) = failed {
            // Everything is made again next round.
            self.applied.clear();
            self.checked = None;
            return Err(format!("cannot route the pod subnets: {e}"));
        }
        self.applied = desired;
        if full {
            self.checked = Some(now);
        }
        Ok(modes)
    }

    /// How this host reaches `address` (asked again after [`RECHECK`]).
    async fn mode(&mut self, address: IpAddr, now: Instant) -> RouteMode {
        if let Some((m, at)) = self.modes.get(&address)
            && now.duration_since(*at) < RECHECK
        {
            return *m;
        }
        let mode = if address.is_loopback() || address.is_unspecified() {
            RouteMode::Local
        } else {
            match self.host.gateway_to(address).await {
                Ok(gw) => plan::mode_for(address, gw),
                Err(e) => {
                    tracing::warn!(peer = %address, error = %e,
                        "cannot tell how to reach a peer: routing it directly");
                    RouteMode::HostGateway
                }
            }
        };
        self.modes.insert(address, (mode, now));
        mode
    }
}

/// The network the agent makes on `subnet`: gateway on its first host address, containers'
/// addresses from its lower half (the upper half holds Services' own addresses; see
/// `proxy::addresses`), no masquerade by the engine (the node's own rule masquerades only what
/// leaves the pod range).
pub fn network_spec(subnet: Subnet24, mtu: Option<u32>) -> NetworkSpec {
    let net = Subnet {
        addr: IpAddr::V4(subnet.network()),
        prefix: 24,
    };
    NetworkSpec {
        subnet: Some(net),
        gateway: Some(IpAddr::V4(subnet.gateway())),
        ip_range: crate::proxy::addresses::lower_half(&net),
        masquerade: false,
        mtu,
    }
}

#[cfg(test)]
mod tests;
