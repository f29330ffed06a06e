//! `shoald`, the shoal daemon: every machine of a cluster runs the same one.
//!
//! The binary is thin: it parses flags, sets up logging and calls [`run`], which tests call
//! too.
//!
//! # Layout
//! One module per role; each role is a task that owns its state and talks to the others
//! through bounded channels or cheap handles.
//! - [`config`]: the settings tree, its defaults and validation.
//! - [`identity`]: cluster id, cluster secret, node key and admin token in the data directory.
//! - [`state`]: the desired-state store: one automerge document, persisted, secrets encrypted.
//! - [`net`]: the libp2p network: one task owns the swarm; admission by the cluster secret.
//! - [`observed`]: observed state (heartbeats, capacity): soft state, never in the document.
//! - [`replication`]: desired-state replication between nodes (gossip and anti-entropy),
//!   over a transport trait that the network layer implements.
//! - [`runtime`]: the container engine behind a trait: Docker (bollard) and a simulated one.
//! - [`pods`]: pods as users see them: slots joined with their owner's template and status.
//! - [`agent`]: the node agent: runs this node's pod slots as containers, reports their status.
//! - [`controllers`]: Deployments into ReplicaSets, ReplicaSets and Pods into slots.
//! - [`api`]: the HTTP API, in Kubernetes' REST layout, behind the admin token.
//! - [`time`]: wall-clock timestamps in RFC 3339.

pub mod agent;
pub mod api;
pub mod config;
pub mod controllers;
pub mod identity;
pub mod net;
pub mod observed;
pub mod pods;
pub mod replication;
pub mod runtime;
pub mod state;
pub mod time;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// Why the node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("identity: {0}")]
    Identity(#[from] identity::IdentityError),
    #[error("{0}")]
    State(#[from] state::StateError),
    #[error("cannot listen on {addr} (api-listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs a node until `shutdown` fires (or a part of it fails), then stops every task, waiting
/// for them up to the configured deadline.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), NodeError> {
    config.validate()?;
    let identity = identity::load_or_init(&config.data_dir, &config.node_name)?;
    let (state, state_task) = state::open(&state::StateConfig {
        data_dir: config.data_dir.clone(),
        cluster_secret: identity.cluster_secret,
        channel_size: config.channel_size,
    })?;
    let listener = TcpListener::bind(config.api_listen)
        .await
        .map_err(|source| NodeError::Listen {
            addr: config.api_listen,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(NodeError::Serve)?;
    // The container engine, connected in the background: without one the node still serves
    // its API and state, and its agent reports the engine as unreachable.
    let engine = runtime::Engine::pending();

    let (cpus, memory_bytes) = observed::host_capacity();
    let now = time::unix_now();
    let (observed, pod_reporter, heartbeat) = observed::start(
        observed::NodeRecord {
            name: identity.node_name.clone(),
            version: 0,
            address: config.advertise_addr().to_string(),
            shoal_version: shoal_protocol::VERSION.to_string(),
            cpus,
            memory_bytes,
            started_at: now,
            heartbeat_at: now,
            pods: Default::default(),
        },
        Duration::from_millis(config.heartbeat_interval_ms),
        config.channel_size,
    );

    // Tasks stop on `stop`, which follows the caller's token; a failing part cancels it too.
    let stop = shutdown.child_token();
    let tracker = TaskTracker::new();
    tracker.spawn(state_task.run(stop.clone()));
    tracker.spawn(heartbeat.run(stop.clone()));
    tracker.spawn(
        agent::Agent::new(
            agent::AgentConfig {
                node_name: identity.node_name.clone(),
                cluster_id: identity.cluster_id.clone(),
                data_dir: config.data_dir.clone(),
                advertise: config.advertise_addr(),
                channel_size: config.channel_size,
            },
            state.clone(),
            engine.clone(),
            Some(pod_reporter),
        )
        .run(stop.clone()),
    );
    tracker.spawn(controllers::run(
        controllers::Controllers::new(state.clone(), observed.clone(), identity.node_name.clone()),
        stop.clone(),
    ));
    tracker.spawn(
        engine
            .clone()
            .connect_docker(Duration::from_secs(5), stop.clone()),
    );
    let router = api::router(
        api::ApiState {
            state,
            observed,
            token: Arc::from(identity.admin_token.as_str()),
            cluster_id: Arc::from(identity.cluster_id.as_str()),
            node_name: Arc::from(identity.node_name.as_str()),
            engine: engine.clone(),
        },
        config.api_max_body_bytes,
    );
    let api_task = tracker.spawn(api::serve(listener, router, stop.clone()));
    tracker.close();
    tracing::info!(node = %identity.node_name, cluster = %identity.cluster_id,
        api = %api_addr, data_dir = %config.data_dir.display(), "shoald ready");

    let result = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        r = api_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Serve(e)),
            Err(e) => Err(NodeError::Serve(std::io::Error::other(e))),
        },
    };
    stop.cancel();
    let deadline = Duration::from_secs(config.shutdown_timeout_secs);
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(?deadline, "some tasks did not stop in time");
    }
    tracing::info!("shoald stopped");
    result
}
