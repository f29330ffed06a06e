//! One node's control plane, composed from parts that its caller makes: the name keeper, the
//! StatefulSet fence, the agent, the controller role and the controllers.
//!
//! [`crate::run`] gives it the production parts (a state store on disk, membership gossiped
//! over libp2p, Docker through the engine handle, the image service, the pod network); the
//! simulator (`shoal-sim`) gives it the same store on its own directory, membership over an
//! in-memory network with faults, and the simulated runtime. Either way the code that decides
//! what runs where is this code, unchanged.
//!
//! Owns nothing: every part is a task on the caller's tracker and supervisor, stopping on its
//! cancellation token.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Events;
use crate::observed::{Conditions, ObservedHandle, PodReporter, Timing};
use crate::runtime::{Engine, NetworkSpec, PodNetwork};
use crate::state::StateHandle;
use crate::supervise::Supervisor;
use crate::time::SharedClock;
use crate::{agent, controllers, images, nodes, supervise};

/// What the control plane is made of.
pub struct PlaneParts {
    pub node_name: String,
    pub cluster_id: String,
    /// This node's network identity, as its record and registration carry it.
    pub peer_id: String,
    pub data_dir: PathBuf,
    /// Where ports are published; the pods' `hostIP`.
    pub advertise: IpAddr,
    pub channel_size: usize,
    /// The cluster domain when this node's DNS server is on (see [`agent::AgentConfig`]).
    pub cluster_domain: Option<String>,
    /// This node founded the cluster or restarts with its own state: it may claim its name
    /// without having synced (see [`nodes::NameKeeper`]).
    pub founder: bool,
    pub timing: Timing,
    pub reschedule_grace: Duration,
    pub unheard_grace: Duration,
    pub state: StateHandle,
    pub observed: ObservedHandle,
    pub pod_reporter: PodReporter,
    pub engine: Engine,
    pub events: Events,
    pub conditions: Conditions,
    /// True once the desired state has been synced with a peer (replication).
    pub synced: watch::Receiver<bool>,
    /// Set once this node has claimed its name; the heartbeat's gate reads it.
    pub named: watch::Sender<bool>,
    /// The image service, when the node has one (the agent pulls without it otherwise).
    pub images: Option<images::Images>,
    /// The node's pod subnet, when the node runs a pod network.
    pub pod_subnet: Option<watch::Receiver<Option<NetworkSpec>>>,
    /// The wall clock of the agent and the controllers.
    pub clock: SharedClock,
}

/// What the started control plane gives back.
pub struct Plane {
    /// The pod network's gateway and subnet, once the agent has made the network.
    pub pod_network: watch::Receiver<Option<PodNetwork>>,
    /// The epoch at which this node holds the controller role, or None.
    pub held: watch::Receiver<Option<u64>>,
    /// Fires when another machine holds this node's name: the node must stop.
    pub name_taken: oneshot::Receiver<nodes::NameTaken>,
}

/// Starts the control plane's tasks on `tracker` and `supervisor`, stopping on `stop`.
pub fn start(
    parts: PlaneParts,
    tracker: &TaskTracker,
    supervisor: &Supervisor,
    stop: &CancellationToken,
) -> Plane {
    let PlaneParts {
        node_name,
        cluster_id,
        peer_id,
        data_dir,
        advertise,
        channel_size,
        cluster_domain,
        founder,
        timing,
        reschedule_grace,
        unheard_grace,
        state,
        observed,
        pod_reporter,
        engine,
        events,
        conditions,
        synced,
        named,
        images,
        pod_subnet,
        clock,
    } = parts;
    let named_rx = named.subscribe();
    let (taken_tx, taken_rx) = oneshot::channel();
    let keeper = nodes::NameKeeper {
        state: state.clone(),
        observed: observed.clone(),
        name: node_name.clone(),
        peer_id: peer_id.clone(),
        founder,
        synced: synced.clone(),
        every: Duration::from_millis(500),
        claimed: named,
    };
    let name_stop = stop.clone();
    tracker.spawn(async move {
        if let Some(taken) = nodes::keep_name(keeper, name_stop).await {
            let _ = taken_tx.send(taken);
        }
    });
    // The agent fences this node's StatefulSet pods while it cannot hear a majority.
    let (fence_tx, fence_rx) = watch::channel(agent::FenceState::new());
    tracker.spawn(agent::watch_fence(
        state.clone(),
        observed.clone(),
        fence_tx,
        agent::FENCE_EVERY,
        stop.clone(),
    ));
    let mut agent = agent::Agent::new(
        agent::AgentConfig {
            node_name: node_name.clone(),
            cluster_id,
            data_dir,
            advertise,
            channel_size,
            cluster_domain,
        },
        state.clone(),
        engine,
        Some(pod_reporter),
    )
    .with_events(events.clone())
    .with_peer_id(peer_id)
    .with_fencing(agent::Fencing {
        fence: fence_rx,
        observed: observed.clone(),
        dead_after: timing.dead_after,
        reschedule_grace,
    })
    .with_conditions(conditions)
    .with_clock(clock.clone())
    .with_boot(agent::boot::Boot::new(
        synced,
        timing.dead_after + agent::boot::BOOT_MARGIN,
    ));
    if let Some(images) = images {
        agent = agent.with_images(images);
    }
    if let Some(subnet) = pod_subnet {
        agent = agent.with_pod_subnet(subnet);
    }
    let pod_network = agent.pod_network();
    supervisor.vital("agent", agent.run(stop.clone()));
    // The controllers are a leader role: they run only while this node holds its lease.
    let (held_tx, held_rx) = watch::channel(None);
    let (role_state, role_observed, role_stop) = (state.clone(), observed.clone(), stop.clone());
    supervisor.restartable("role", move || {
        let (state, observed, held, named, stop) = (
            role_state.clone(),
            role_observed.clone(),
            held_tx.clone(),
            named_rx.clone(),
            role_stop.clone(),
        );
        async move {
            // However a run ends (a panic too), the controllers must not go on believing
            // that this node holds the role.
            let reset = held.clone();
            let _reset = supervise::on_drop(move || {
                reset.send_replace(None);
            });
            let every = Duration::from_millis(500);
            nodes::keep_role(
                state,
                observed,
                nodes::CONTROLLER_ROLE,
                held,
                named,
                every,
                stop,
            )
            .await;
        }
    });
    // The role's holder tells membership changes and its taking the role as events.
    tracker.spawn(crate::events::report_membership(
        observed.clone(),
        held_rx.clone(),
        events.clone(),
        nodes::CONTROLLER_ROLE,
        // Membership turns dead on time, not on a message: look every second.
        Duration::from_secs(1),
        stop.clone(),
    ));
    let leader_rx = held_rx.clone();
    let leader: controllers::Leader = Arc::new(move || leader_rx.borrow().is_some());
    let mut controllers =
        controllers::Controllers::new(state, observed, node_name).with_leader(leader);
    controllers.reschedule_grace = reschedule_grace;
    controllers.unheard_grace = unheard_grace;
    controllers.events = Some(events);
    controllers.clock = clock;
    let controllers_stop = stop.clone();
    supervisor.restartable("controllers", move || {
        controllers::run(controllers.clone(), controllers_stop.clone())
    });
    Plane {
        pod_network,
        held: held_rx,
        name_taken: taken_rx,
    }
}
