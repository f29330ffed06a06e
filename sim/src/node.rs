//! One simulated node: the real state store on its own directory, replication and membership
//! over the simulated [`Net`], and the control plane of production ([`shoal_node::plane`]) on
//! the simulated container engine ([`SimRuntime`]).
//!
//! A node can crash and restart. A crash is a power cut: the network unplugs the node at once
//! (nothing more goes out, not even a goodbye), its engine stops with its containers, and its
//! tasks stop; what the store had acknowledged is on disk (it fsyncs before it answers), and
//! the log may end in a torn record ([`SimNode::tear_log`]). A restart opens the same
//! directory, maybe with its wall clock set back (a Pi before NTP).
//!
//! Not part of a simulated node: the libp2p stack, the API server, DNS, the proxies, the pod
//! network and the image service (images are present on every engine). Cluster events stay on
//! the node that records them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_node::observed::{self, NodeRecord, ObservedHandle, Timing};
use shoal_node::replication::{ReplicationConfig, Replicator};
use shoal_node::runtime::{Engine, SimRuntime};
use shoal_node::state::{self, StateConfig, StateHandle};
use shoal_node::supervise::Supervisor;
use shoal_node::time::{Clock, SharedClock};
use shoal_node::{events, plane};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::net::Net;
use crate::rng::Rng;

/// The cluster secret every simulated node shares.
const SECRET: [u8; 32] = [7; 32];
/// The cluster's id.
pub const CLUSTER: &str = "sim";
/// The images every simulated engine holds.
pub const IMAGES: [&str; 3] = ["app:1", "app:2", "db:1"];

/// A wall clock that is the virtual clock plus a node's skew.
struct Skewed {
    base: i64,
    start: tokio::time::Instant,
    skew: i64,
}

impl Clock for Skewed {
    fn unix_micros(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX / 2);
        self.base + elapsed + self.skew
    }
}

/// What runs while the node is up.
pub struct Running {
    stop: CancellationToken,
    leave: CancellationToken,
    tracker: TaskTracker,
    heartbeat: JoinHandle<()>,
    /// Kept so that the node's events stay open; never drained (events stay local).
    _outbox: events::Outbox,
    pub state: StateHandle,
    pub observed: ObservedHandle,
    /// The epoch this node holds the controller role at, or None.
    pub held: watch::Receiver<Option<u64>>,
}

/// One node of the simulation, up or down.
pub struct SimNode {
    pub name: String,
    pub peer: String,
    pub index: usize,
    pub dir: PathBuf,
    pub runtime: SimRuntime,
    /// The node started the cluster: it claims its name without a sync.
    pub founder: bool,
    /// How far its wall clock is from the virtual one, in microseconds.
    pub skew: i64,
    pub running: Option<Running>,
    /// Restarts so far.
    pub restarts: u32,
}

/// Membership's timing in the simulation: production's defaults.
pub fn timing() -> Timing {
    Timing::default()
}

/// The controllers' grace before pods move off a lost node (production's default).
pub const RESCHEDULE_GRACE: Duration = Duration::from_secs(5);

impl SimNode {
    pub fn new(name: &str, peer: &str, index: usize, dir: PathBuf, founder: bool) -> SimNode {
        SimNode {
            name: name.to_string(),
            peer: peer.to_string(),
            index,
            dir,
            runtime: SimRuntime::new(IMAGES),
            founder,
            skew: 0,
            running: None,
            restarts: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Starts the node's tasks (on the current runtime) from its directory; `base_micros` is
    /// the true wall clock now, which the node's clock follows with its skew.
    pub fn start(&mut self, net: &Net, base_micros: i64, rng: &mut Rng) -> Result<(), String> {
        let (state, state_task) = state::open(&StateConfig {
            data_dir: self.dir.clone(),
            cluster_secret: SECRET,
            channel_size: 64,
        })
        .map_err(|e| format!("{}: the store does not open: {e}", self.name))?;
        let stop = CancellationToken::new();
        let leave = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (conditions, conditions_rx) = observed::Conditions::new();
        let supervisor = Supervisor::new(tracker.clone(), stop.clone(), conditions.clone(), None);
        let clock: SharedClock = Arc::new(Skewed {
            base: base_micros,
            start: tokio::time::Instant::now(),
            skew: self.skew,
        });
        supervisor.vital(
            "state",
            state_task
                .with_inline_writes()
                .with_clock(clock.clone())
                .run(stop.clone()),
        );

        let (replication_tx, replication_rx) = mpsc::channel(256);
        let (observed_tx, observed_rx) = mpsc::channel(256);
        let link = net.attach(&self.name, &self.peer, replication_tx, observed_tx);
        let (synced_tx, synced_rx) = watch::channel(false);
        supervisor.vital(
            "replication",
            Replicator::run_with_synced(
                state.clone(),
                Arc::new(link.clone()),
                replication_rx,
                ReplicationConfig {
                    seed: Some(rng.next_u64()),
                    ..ReplicationConfig::default()
                },
                synced_tx,
                stop.clone(),
            ),
        );
        let now = clock.unix_now();
        let octet = u8::try_from(self.index + 1).unwrap_or(250);
        let address = IpAddr::V4(Ipv4Addr::new(127, 0, 9, octet));
        let (observed, pod_reporter, heartbeat) = observed::start_with_clock(
            NodeRecord {
                name: self.name.clone(),
                address: address.to_string(),
                shoal_version: shoal_protocol::VERSION.to_string(),
                cpus: 4,
                memory_bytes: 8 << 30,
                started_at: now,
                heartbeat_at: now,
                peer_id: self.peer.clone(),
                p2p_address: format!("{address}:7946"),
                run: u32::try_from(rng.below(u64::from(u32::MAX)))
                    .unwrap_or(0)
                    .max(1),
                ..NodeRecord::default()
            },
            timing(),
            64,
            clock.clone(),
        );
        let (digest_tx, digest_rx) = watch::channel(String::new());
        tracker.spawn(observed::follow_digest(
            state.clone(),
            digest_tx,
            Duration::from_millis(200),
            stop.clone(),
        ));
        let (named_tx, named_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(
            heartbeat
                .with_gate(named_rx)
                .with_gossip(Arc::new(link), observed_rx)
                .with_digest(digest_rx)
                .with_conditions(conditions_rx)
                .run(leave.clone()),
        );
        // Events stay local: the outbox is not drained (a full outbox drops, never blocks).
        let (events, outbox) = events::Events::new(&self.name, 256);
        let plane = plane::start(
            plane::PlaneParts {
                node_name: self.name.clone(),
                cluster_id: CLUSTER.to_string(),
                peer_id: self.peer.clone(),
                data_dir: self.dir.clone(),
                advertise: address,
                channel_size: 64,
                cluster_domain: None,
                founder: self.founder,
                timing: timing(),
                reschedule_grace: RESCHEDULE_GRACE,
                unheard_grace: Duration::from_secs(60),
                state: state.clone(),
                observed: observed.clone(),
                pod_reporter,
                engine: Engine::ready(Arc::new(self.runtime.clone())),
                events,
                conditions,
                synced: synced_rx,
                named: named_tx,
                images: None,
                pod_subnet: None,
                clock,
            },
            &tracker,
            &supervisor,
            &stop,
        );
        tracker.close();
        self.running = Some(Running {
            stop,
            leave,
            tracker,
            heartbeat,
            _outbox: outbox,
            state,
            observed,
            held: plane.held,
        });
        Ok(())
    }

    /// A power cut: unplugged at once, the engine and its containers stop, the tasks stop.
    pub async fn crash(&mut self, net: &Net) {
        net.detach(&self.name);
        self.runtime.stop_engine();
        if let Some(r) = self.running.take() {
            r.leave.cancel();
            r.stop.cancel();
            r.heartbeat.abort();
            // The store must have let its files go before the next start opens them.
            let _ = tokio::time::timeout(Duration::from_secs(30), r.tracker.wait()).await;
        }
    }

    /// Power back: the engine answers again (its containers stay stopped) and the node starts.
    pub fn restart(&mut self, net: &Net, base_micros: i64, rng: &mut Rng) -> Result<(), String> {
        self.runtime.start_engine();
        self.restarts += 1;
        self.start(net, base_micros, rng)
    }

    /// Appends a torn record to the state log, as a power cut in the middle of a write leaves:
    /// a length that fits and zeros where the checksum and bytes should be.
    pub fn tear_log(&self) -> Result<(), String> {
        use std::io::Write;
        let path = self.dir.join("state.log");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut record = 16u32.to_le_bytes().to_vec();
        record.extend_from_slice(&[0u8; 20]);
        f.write_all(&record)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}
