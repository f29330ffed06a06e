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
//! - [`join`]: the join token, and the known peers a restarted node dials again.
//! - [`state`]: the desired-state store: one automerge document, persisted, secrets encrypted.
//! - [`net`]: the libp2p network: one task owns the swarm; admission by the cluster secret.
//! - [`observed`]: observed state and membership (heartbeats, capacity, pod status, liveness),
//!   gossiped as soft state, never in the document.
//! - [`nodes`]: the node registry (in the document) joined with membership.
//! - [`replication`]: desired-state replication between nodes (gossip and anti-entropy),
//!   over a transport trait that the network layer implements.
//! - [`runtime`]: the container engine behind a trait: Docker (bollard) and a simulated one.
//! - [`pods`]: pods as users see them: slots joined with their owner's template and status.
//! - [`backoff`]: Kubernetes' back-off (10 s doubling to 5 min), for restarts and pulls.
//! - [`images`]: the image service: pulls images for the agent, per `imagePullPolicy`, with
//!   the pods' registry credentials, deduplicated and bounded.
//! - [`agent`]: the node agent: runs this node's pod slots as containers, reports their status.
//! - [`plane`]: one node's control plane (name, fence, agent, role, controllers) composed from
//!   parts its caller makes: production's here, the simulator's in `shoal-sim`.
//! - [`controllers`]: Deployments into ReplicaSets, ReplicaSets and Pods into slots.
//! - [`api`]: the HTTP API, in Kubernetes' REST layout, behind the admin token.
//! - [`dns`]: the DNS server: authoritative for the cluster domain, forwarding other names;
//!   it answers the node's pods too, at their network's gateway.
//! - [`proxy`]: the node proxies: each Service's port on the advertise address and, for the
//!   node's pods, on their network's gateway, forwarded to a ready endpoint.
//! - [`events`]: cluster events (scheduled, started, node dead, ...): a bounded ring on every
//!   node, spread by gossip as soft state, never in the document.
//! - [`metrics`]: Prometheus metrics (`GET /metrics`): event counters bumped where things
//!   happen, state gauges computed at scrape time.
//! - [`ui`]: the web UI at `/`: server-rendered pages behind the admin token (a login cookie),
//!   calling the API's handlers in process.
//! - [`time`]: wall-clock timestamps in RFC 3339.
//! - [`supervise`]: the vital tasks' supervisor: restarts what can be, else marks the node
//!   degraded (it then holds no leader role).

pub mod agent;
pub mod api;
pub mod backoff;
pub mod config;
pub mod controllers;
pub mod dns;
pub mod events;
pub mod identity;
pub mod images;
pub mod join;
pub mod metrics;
pub mod net;
pub mod nodes;
pub mod observed;
pub mod plane;
pub mod podnet;
pub mod pods;
pub mod proxy;
pub mod replication;
pub mod runtime;
pub mod scheduler;
pub mod state;
pub mod supervise;
pub mod time;
pub mod ui;
pub mod wake;

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
    #[error("network (p2p-listen {addr}): {source}")]
    Net {
        addr: std::net::SocketAddr,
        #[source]
        source: net::NetError,
    },
    #[error("the API server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("{0}")]
    NameTaken(#[from] nodes::NameTaken),
}

/// Runs a node until `shutdown` fires (or a part of it fails), then stops every task, waiting
/// for them up to the configured deadline.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), NodeError> {
    config.validate()?;
    let join_token = config.join_token()?;
    let identity =
        identity::load_or_join(&config.data_dir, &config.node_name, join_token.as_ref())?;
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

    // Tasks stop on `stop`; a failing part cancels it too. The heartbeat stops first, on
    // `leave`, so that it can tell the peers that this node leaves while the network runs.
    let stop = CancellationToken::new();
    let leave = CancellationToken::new();
    let tracker = TaskTracker::new();
    // What is wrong with this node (its engine, a failed task), for its peers to see.
    let (conditions, conditions_rx) = observed::Conditions::new();
    // Vital tasks are watched: restarted where that is safe, else the node is degraded.
    let supervisor = supervise::Supervisor::new(
        tracker.clone(),
        stop.clone(),
        conditions.clone(),
        supervise::FailHook::from_env(),
    );
    // The store owns the document: it cannot start again without it.
    supervisor.vital("state", state_task.run(stop.clone()));
    let (observed_tx, observed_rx) = tokio::sync::mpsc::channel(config.channel_size);
    // Cluster events: this node's ring, merged with what peers gossip on the events topic.
    let (events, events_outbox) = events::Events::new(&identity.node_name, events::RING_CAPACITY);
    // True once the desired state has been synced with a peer: the agent starts no container
    // before (or before it gives up waiting), since this node's pods may have moved away.
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let net_handle = start_network(
        &config,
        &identity,
        join_token.as_ref(),
        &state,
        observed_tx,
        synced_tx,
        events.clone(),
        &tracker,
        &supervisor,
        &stop,
    )
    .await?;
    tracker.spawn(events_outbox.run(Arc::new(net_handle.clone()), stop.clone()));
    let peer_id = net_handle.local_peer_id().to_string();

    let (cpus, memory_bytes) = observed::host_capacity();
    let now = time::unix_now();
    let (observed, pod_reporter, heartbeat) = observed::start(
        observed::NodeRecord {
            name: identity.node_name.clone(),
            address: config.advertise_addr().to_string(),
            shoal_version: shoal_protocol::VERSION.to_string(),
            cpus,
            memory_bytes,
            started_at: now,
            heartbeat_at: now,
            peer_id: peer_id.clone(),
            p2p_address: config.p2p_advertise().to_string(),
            ..Default::default()
        },
        config.membership_timing(),
        config.channel_size,
    );
    let publish: Arc<dyn observed::Publish> = Arc::new(net_handle.clone());
    // Each node's record carries its state digest, so any node can tell whether all agree.
    let (digest_tx, digest_rx) = tokio::sync::watch::channel(String::new());
    tracker.spawn(observed::follow_digest(
        state.clone(),
        digest_tx,
        Duration::from_millis(200),
        stop.clone(),
    ));
    // The image service: pulls, fetches from peers, and this node's image inventory.
    let (image_service, images) = images::ImageService::new(
        engine.clone(),
        images::ImagesConfig {
            max_pulls: config.max_pulls,
            allowed: images::pull::Allowed(config.allowed_registries.clone()),
            channel_size: config.channel_size,
            gc: images::gc::GcPolicy {
                high_percent: config.image_gc_high_threshold_percent,
                low_percent: config.image_gc_low_threshold_percent,
                min_age: Duration::from_secs(config.image_minimum_gc_age_secs),
            },
            record_file: Some(config.data_dir.join(images::RECORD_FILE)),
        },
    );
    let image_service = image_service.with_peers(images::Peers {
        observed: observed.clone(),
        fetch: Arc::new(images::share::NetFetch {
            net: net_handle.clone(),
        }),
    });
    let local_images = image_service.local_images();
    tracker.spawn(image_service.run(stop.clone()));
    // Peers fetch images from this node's engine over the cluster's connections.
    tracker.spawn(images::share::serve(
        net_handle.clone(),
        engine.clone(),
        images::share::ServeConfig::from_env(),
        stop.clone(),
    ));
    // This node speaks for its name (heartbeat, role, registration) only once it has claimed
    // it: another machine may hold it already.
    let (named_tx, named_rx) = tokio::sync::watch::channel(false);
    let heartbeat_task = tokio::spawn(
        heartbeat
            .with_gate(named_rx.clone())
            .with_gossip(publish, observed_rx)
            .with_digest(digest_rx)
            .with_conditions(conditions_rx)
            .with_images(local_images)
            .run(leave.clone()),
    );
    tracker.spawn(keep_connected(
        net_handle.clone(),
        state.clone(),
        observed.clone(),
        Duration::from_secs(2),
        stop.clone(),
    ));
    // The node's pod subnet, its routes to the others' and its firewall rules; the agent
    // makes the pod network on that subnet.
    let podnet_config = podnet::PodNetConfig {
        node_name: identity.node_name.clone(),
        range: podnet::subnet::PodRange::parse(&config.pod_range).map_err(|e| {
            config::ConfigError::Invalid {
                setting: "pod-range",
                message: e.to_string(),
            }
        })?,
        network: agent::spec::network_name(&identity.cluster_id, &identity.node_name),
        advertise: config.advertise_addr(),
        api_port: config.api_listen.port(),
        p2p_port: config.p2p_listen.port(),
        pods_reach_node_ports: config.pods_reach_node_ports,
    };
    let (podnet_task, pod_subnet, podnet_status) = podnet::PodNet::new(
        podnet_config,
        state.clone(),
        observed.clone(),
        Arc::new(podnet::host::Commands),
    );
    tracker.spawn(podnet_task.run(stop.clone()));
    // The control plane: the name keeper, the fence, the agent, the role, the controllers.
    // Containers use this node's DNS server when it is on (at their network's gateway).
    let plane = plane::start(
        plane::PlaneParts {
            node_name: identity.node_name.clone(),
            cluster_id: identity.cluster_id.clone(),
            peer_id: peer_id.clone(),
            data_dir: config.data_dir.clone(),
            advertise: config.advertise_addr(),
            channel_size: config.channel_size,
            cluster_domain: config.dns_listen_addr().map(|_| config.dns_domain()),
            // Without a join token this node founded the cluster, or restarts with its own
            // state; `identity.created` alone misses a founder whose identity `shoald`'s main
            // made.
            founder: identity.created || join_token.is_none(),
            timing: config.membership_timing(),
            reschedule_grace: Duration::from_millis(config.reschedule_grace_ms),
            unheard_grace: Duration::from_secs(config.unheard_grace_secs),
            state: state.clone(),
            observed: observed.clone(),
            pod_reporter,
            engine: engine.clone(),
            events: events.clone(),
            conditions: conditions.clone(),
            synced: synced_rx,
            named: named_tx,
            images: Some(images.clone()),
            pod_subnet: Some(pod_subnet),
            clock: time::system_clock(),
        },
        &tracker,
        &supervisor,
        &stop,
    );
    let taken_rx = plane.name_taken;
    // The pod network's gateway and subnet, once the agent has made the network: the DNS
    // server and the proxies listen there for the pods, and the zone gives pods its address.
    let pod_network = plane.pod_network;
    tracker.spawn(engine.clone().connect_docker(
        config.docker_host.clone(),
        Duration::from_secs(5),
        stop.clone(),
    ));
    write_join_token(&config, &identity);
    // The DNS server. A port it cannot bind (in use; 53 without the privilege) is logged as
    // an error naming the address and `--dns-listen`, and the node goes on without DNS.
    let (zone_tx, zone_rx) = tokio::sync::watch::channel(Arc::new(dns::zone::Zone::empty(
        &config.dns_domain(),
        config.dns_ttl_secs,
    )));
    // Every node forwards each Service's port to a ready endpoint, on its advertise address
    // and, for its pods, on its pod network's gateway and each Service's own address there.
    let (service_addresses_tx, service_addresses_rx) =
        tokio::sync::watch::channel(proxy::ServiceAddresses::default());
    let proxy_config = proxy::ProxyConfig {
        node_name: identity.node_name.clone(),
        address: config.advertise_addr(),
    };
    let (proxy_state, proxy_observed, proxy_network, proxy_stop) = (
        state.clone(),
        observed.clone(),
        pod_network.clone(),
        stop.clone(),
    );
    supervisor.restartable("proxies", move || {
        proxy::run(
            proxy_config.clone(),
            proxy_state.clone(),
            proxy_observed.clone(),
            proxy_network.clone(),
            service_addresses_tx.clone(),
            proxy_stop.clone(),
        )
    });
    // The zone follows Services, pods and membership.
    let zone_config = dns::feed::ZoneConfig {
        domain: config.dns_domain(),
        ttl: config.dns_ttl_secs,
        ns_addresses: config
            .dns_listen_addr()
            .map(|a| vec![a.ip()])
            .unwrap_or_default(),
        node_address: config.advertise_addr(),
    };
    let (zone_state, zone_observed, zone_network, zone_stop) = (
        state.clone(),
        observed.clone(),
        pod_network.clone(),
        stop.clone(),
    );
    supervisor.restartable("zone", move || {
        dns::feed::keep_zone(
            zone_config.clone(),
            zone_state.clone(),
            zone_observed.clone(),
            zone_network.clone(),
            service_addresses_rx.clone(),
            zone_tx.clone(),
            zone_stop.clone(),
        )
    });
    if let Some(dns_listen) = config.dns_listen_addr() {
        let mut dns_config = dns::server::DnsConfig::new(dns_listen, config.dns_upstreams());
        dns_config.allow = config.dns_allow_networks();
        // One forwarder (and cache) for the LAN's listener and the pods'.
        let forwarder = Arc::new(dns::forward::Forwarder::new(dns_config.forward.clone()));
        let (main_config, main_zone, main_forwarder) =
            (dns_config.clone(), zone_rx.clone(), forwarder.clone());
        let dns_stop = stop.clone();
        supervisor.restartable("dns", move || {
            let (config, zone, forwarder, stop) = (
                main_config.clone(),
                main_zone.clone(),
                main_forwarder.clone(),
                dns_stop.clone(),
            );
            async move {
                match dns::server::DnsServer::bind(config).await {
                    Ok(server) => server.run_with(zone, forwarder, stop).await,
                    Err(e) => {
                        // Not a failure: the node runs on without it, as documented.
                        tracing::error!("{e}; the node runs on without its DNS server");
                        stop.cancelled().await;
                    }
                }
            }
        });
        // The pods' resolver: port 53 of the pod network's gateway, once the agent knows it.
        let pods_stop = stop.clone();
        supervisor.restartable("dns-pods", move || {
            dns::server::serve_pods(
                dns_config.clone(),
                zone_rx.clone(),
                pod_network.clone(),
                forwarder.clone(),
                pods_stop.clone(),
            )
        });
    }
    let router = api::router(
        api::ApiState {
            state,
            observed,
            token: Arc::from(identity.admin_token.as_str()),
            cluster_id: Arc::from(identity.cluster_id.as_str()),
            node_name: Arc::from(identity.node_name.as_str()),
            engine: engine.clone(),
            cluster: Arc::new(api::ClusterInfo {
                peer_id,
                p2p_address: config.p2p_advertise().to_string(),
                join_token: join_token_for(&config, &identity).encode(),
                cluster_domain: config.dns_domain(),
            }),
            events: events.clone(),
            images: Some(images),
            podnet: Some(podnet_status),
            max_replicas: config.max_replicas,
        },
        config.api_max_body_bytes,
    );
    let api_task = tracker.spawn(api::serve(listener, router, stop.clone()));
    tracker.close();
    tracing::info!(node = %identity.node_name, cluster = %identity.cluster_id,
        api = %api_addr, data_dir = %config.data_dir.display(), "shoald ready");

    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = stop.cancelled() => Ok(()),
        Ok(taken) = taken_rx => Err(NodeError::NameTaken(taken)),
        r = api_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Serve(e)),
            Err(e) => Err(NodeError::Serve(std::io::Error::other(e))),
        },
    };
    // Say goodbye while the network still runs, and give gossip a moment to carry it.
    leave.cancel();
    if tokio::time::timeout(Duration::from_secs(2), heartbeat_task)
        .await
        .is_ok()
        && !net_handle.admitted_peers().is_empty()
    {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
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

/// Starts the network task, replication over it, the forwarder of network events into
/// replication, and the keeper of `peers.json`, all on `tracker`, stopping on `stop`.
// The inputs of the network's setup, each used once; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn start_network(
    config: &Config,
    identity: &identity::Identity,
    join_token: Option<&join::JoinToken>,
    state: &state::StateHandle,
    observed_tx: tokio::sync::mpsc::Sender<observed::Inbound>,
    synced_tx: tokio::sync::watch::Sender<bool>,
    cluster_events: events::Events,
    tracker: &TaskTracker,
    supervisor: &supervise::Supervisor,
    stop: &CancellationToken,
) -> Result<net::NetHandle, NodeError> {
    let mut seeds = config.join.clone();
    if let Some(t) = join_token {
        seeds.extend(t.addrs.iter().cloned());
    }
    seeds.extend(join::KnownPeers::load(&config.data_dir).addrs());
    let own = config.p2p_advertise().to_string();
    seeds.retain(|a| *a != own);
    let mut bootstrap = join::resolve(&seeds).await;
    bootstrap.dedup();
    let mut net_config = net::NetConfig::new(
        identity.cluster_id.clone(),
        identity.cluster_secret,
        identity.node_key,
        identity.node_name.clone(),
    );
    net_config.listen = config.p2p_multiaddrs();
    net_config.bootstrap = bootstrap;
    net_config.mdns = config.mdns;
    net_config.channel_size = config.channel_size;
    let net_err = |source| NodeError::Net {
        addr: config.p2p_listen,
        source,
    };
    let (net_handle, net_task, mut events) = net::start(net_config).map_err(net_err)?;
    tracing::info!(peer_id = %net_handle.local_peer_id(), listen = %config.p2p_listen,
        seeds = seeds.len(), mdns = config.mdns, "p2p network configured");
    // The task owns the swarm: it cannot start again without it.
    supervisor.vital("network", net_task.run(stop.clone()));

    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(config.channel_size);
    let forward_stop = stop.clone();
    tracker.spawn(async move {
        loop {
            let event = tokio::select! {
                _ = forward_stop.cancelled() => return,
                e = events.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
            };
            // Observed-state gossip and admitted peers for the heartbeat (it catches up with
            // whatever a full channel drops at its next full record), the rest for replication.
            let event = match event {
                net::NetEvent::Gossip {
                    topic: net::Topic::Observed,
                    data,
                    ..
                } => {
                    let _ = observed_tx.try_send(observed::Inbound::Gossip { data });
                    continue;
                }
                net::NetEvent::Gossip {
                    topic: net::Topic::Events,
                    data,
                    ..
                } => {
                    cluster_events.merge_remote(&data);
                    continue;
                }
                net::NetEvent::PeerAdmitted(p) => {
                    let _ = observed_tx.try_send(observed::Inbound::PeerJoined);
                    net::NetEvent::PeerAdmitted(p)
                }
                other => other,
            };
            if let Some(inbound) = net::to_inbound(event) {
                tokio::select! {
                    _ = forward_stop.cancelled() => return,
                    r = inbound_tx.send(inbound) => if r.is_err() { return },
                }
            }
        }
    });
    let transport: Arc<dyn replication::Transport> = Arc::new(net_handle.clone());
    supervisor.vital(
        "replication",
        replication::Replicator::run_with_synced(
            state.clone(),
            transport,
            inbound_rx,
            replication::ReplicationConfig::default(),
            synced_tx,
            stop.clone(),
        ),
    );
    tracker.spawn(join::remember_peers(
        net_handle.clone(),
        config.data_dir.clone(),
        Duration::from_secs(1),
        stop.clone(),
    ));
    Ok(net_handle)
}

/// Keeps this node connected to every member it knows (a full mesh: clusters are small), so
/// that nodes that joined through a third one reach each other directly, and nodes that lost
/// each other (a partition, a crash) reconnect as soon as they can. Members that left are not
/// dialled: they dial back when they return.
///
/// It also repairs a connection that carries no gossip: every node gossips a heartbeat each
/// second, so a peer that stays admitted while this node does not hear it (for
/// [`SILENT_RESET_AFTER`]) has a broken gossip path (gossipsub announces subscriptions only
/// on a peer's first connection, and connection churn can leave one side unaware of the
/// other's); both sides then reconnect afresh.
async fn keep_connected(
    net: net::NetHandle,
    state: state::StateHandle,
    observed: observed::ObservedHandle,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut silent: std::collections::HashMap<libp2p::PeerId, tokio::time::Instant> =
        std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(view) = nodes::view(&state, &observed).await else {
            continue;
        };
        let admitted = net.admitted_peers();
        silent.retain(|p, _| admitted.contains(p));
        for node in view.values() {
            if node.liveness == observed::Liveness::Left || node.name == observed.local_name() {
                continue;
            }
            let Ok(peer) = node.peer_id.parse::<libp2p::PeerId>() else {
                continue;
            };
            if admitted.contains(&peer) {
                if node.liveness == observed::Liveness::Alive {
                    silent.remove(&peer);
                } else {
                    let since = *silent.entry(peer).or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= SILENT_RESET_AFTER {
                        tracing::info!(node = %node.name, "connected but not heard: reconnecting");
                        silent.remove(&peer);
                        if net.reset(peer).await.is_err() {
                            return;
                        }
                    }
                }
                continue;
            }
            let Some(record) = &node.record else { continue };
            let Ok(addr) = record.p2p_address.parse::<std::net::SocketAddr>() else {
                continue;
            };
            if net.connect(peer, join::dial_addrs(addr)).await.is_err() {
                return;
            }
        }
    }
}

/// How long an admitted peer may stay unheard before its connections are reset.
const SILENT_RESET_AFTER: Duration = Duration::from_secs(5);

/// This node's join token: the cluster's id, secret and admin token, and this node's p2p
/// address.
pub fn join_token_for(config: &Config, identity: &identity::Identity) -> join::JoinToken {
    join::JoinToken {
        cluster_id: identity.cluster_id.clone(),
        cluster_secret: identity.cluster_secret,
        admin_token: identity.admin_token.clone(),
        addrs: vec![config.p2p_advertise().to_string()],
    }
}

/// Writes `DATA_DIR/join.token` (mode 0600), best effort.
fn write_join_token(config: &Config, identity: &identity::Identity) {
    let token = join_token_for(config, identity).encode();
    let path = config.data_dir.join(join::JOIN_TOKEN_FILE);
    if let Err(e) = identity::write_file(&path, token.as_bytes(), 0o600) {
        tracing::warn!(error = %e, "cannot write the join token file");
    }
}
