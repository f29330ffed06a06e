//! The node proxies: every node listens on each Service's port (its `nodePort` where set, else
//! its `port`) at its advertise address, and at its pod network's gateway for its own pods
//! (DNS answers them that address), TCP and UDP as declared, and forwards each connection
//! (TCP) or client flow (UDP) to a ready endpoint: a pod of the Service on this node first,
//! else another node with one, whose proxy forwards it to its own pods. So any node's address
//! and the Service's port reach the Service, which is what DNS answers LAN clients
//! (`<svc>.<ns>.svc.<domain>`: the nodes with ready endpoints).
//!
//! - [`table`]: the routing table, a pure function of the Services, pods, their specs and
//!   membership; and [`port_conflict`], the API's apply-time check that ports stay
//!   cluster-wide unique.
//! - `tcp`, `udp`: one task per listening port, splicing connections and flows to the targets
//!   of the newest table.
//! - [`health`]: which targets to try first: those on nodes unheard lately, and those that
//!   just failed (remembered a few seconds, shared by every port), go last.
//!
//! [`run`] rebuilds the table after every change of the store or of observed state (debounced)
//! and at least every second, publishes it on a `watch` channel that the port tasks read at
//! each new connection or flow, and opens and closes listeners to match. A port that cannot be
//! bound (another process holds it) is logged and retried at the next round; it never stops
//! the node.

pub mod addresses;
pub mod health;
pub mod table;
mod tcp;
mod udp;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use table::{ListenKey, Listener, Route, Table, Transport, port_conflict};

use crate::dns::feed::{heard_nodes, pod_entries, services};
use crate::observed::ObservedHandle;
use crate::pods::desired_pods;
use crate::runtime::PodNetwork;
use crate::state::{StateError, StateHandle};
use crate::wake::Wakeup;

/// What the proxies need to know about this node.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node_name: String,
    /// The advertise address: where the proxies listen, and the source of the connections
    /// they forward to other nodes.
    pub address: IpAddr,
}

/// How long a change may settle before the table is rebuilt.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// The longest the table goes without a rebuild (and unbound ports without a retry).
const EVERY: Duration = Duration::from_secs(1);
/// How often a port that stays unbindable is logged again as an error.
const BIND_ERROR_EVERY: Duration = Duration::from_secs(60);
/// How long the port tasks get to stop at shutdown.
const STOP_DEADLINE: Duration = Duration::from_secs(2);

/// The address of each Service (`namespace/name`) on this node's pod network, as the
/// proxies serve them: DNS answers them to this node's pods.
pub type ServiceAddresses = Arc<BTreeMap<String, IpAddr>>;

/// How often the Service addresses on the bridge are checked even when nothing changed (one
/// removed by hand comes back).
const ADDRESSES_EVERY: Duration = Duration::from_secs(30);

/// Runs the proxies of this node until `shutdown`. `pod_network`: this node's pod network,
/// from the agent; its gateway gets every port too. `addresses_tx`: the Services' own
/// addresses on it, once they are up and served.
pub async fn run(
    config: ProxyConfig,
    state: StateHandle,
    observed: ObservedHandle,
    pod_network: watch::Receiver<Option<PodNetwork>>,
    addresses_tx: watch::Sender<ServiceAddresses>,
    shutdown: CancellationToken,
) {
    let (table_tx, table_rx) = watch::channel(Arc::new(Table::default()));
    // The port tasks stop with this run, however it ends (a panic included): a restarted run
    // binds the same ports again.
    let ports_stop = shutdown.child_token();
    let _ports_guard = ports_stop.clone().drop_guard();
    let mut listeners = Listeners::new(config.address, table_rx, ports_stop);
    let mut wake = Wakeup::new(&state, &observed, EVERY, DEBOUNCE).with_pod_network(pod_network);
    let mut warnings: Vec<String> = Vec::new();
    let mut host = addresses::Host::default();
    let mut up: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut checked: Option<Instant> = None;
    let mut host_failed = false;
    tracing::info!(node = %config.node_name, address = %config.address, "node proxies started");
    while wake.next(&shutdown).await {
        let network = wake.pod_network();
        let services = match services(&state).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading the Services failed; retrying");
                continue;
            }
        };
        // The Services' own addresses: kept while they exist, put on the bridge when they
        // change (and every so often).
        let block = network.as_ref().and_then(addresses::block);
        let wanted = addresses::assign(block, &by_age(&services), &up);
        // Checked at the start (an earlier run may have left addresses), on a change, and
        // every so often while there are any.
        let due = checked.is_none_or(|t| {
            t.elapsed() >= ADDRESSES_EVERY && !(wanted.is_empty() && up.is_empty())
        });
        // After a failure (no `ip`, no CAP_NET_ADMIN) only the periodic check tries again.
        if let (Some(network), Some(block)) = (network, block)
            && ((wanted != up && !host_failed) || due)
        {
            checked = Some(Instant::now());
            let ips = wanted.values().copied().collect();
            match host.sync(network.gateway, block, &ips).await {
                Ok(present) => {
                    host_failed = false;
                    up = wanted
                        .into_iter()
                        .filter(|(_, ip)| present.contains(ip))
                        .collect();
                }
                Err(e) => {
                    if !host_failed {
                        tracing::warn!(error = %e, "cannot give Services their own addresses \
                            on the pod network; pods reach them at the gateway");
                    }
                    host_failed = true;
                    up.clear();
                }
            }
        } else if block.is_none() {
            up.clear();
        }
        let gateway = network.map(|n| n.gateway);
        match current_table(&config, &state, &observed, &services, gateway, &up).await {
            Ok(t) => {
                if t.warnings != warnings {
                    for w in t.warnings.iter().filter(|w| !warnings.contains(w)) {
                        tracing::warn!("{w}");
                    }
                    warnings = t.warnings.clone();
                }
                table_tx.send_if_modified(|current| {
                    if **current == t {
                        return false;
                    }
                    // When nodes were last heard changes with every heartbeat: not worth a line.
                    if current.routes != t.routes || current.service_routes != t.service_routes {
                        tracing::debug!(ports = t.routes.len(), "proxy routing table changed");
                    }
                    *current = Arc::new(t);
                    true
                });
            }
            Err(e) => tracing::warn!(error = %e, "building the proxy table failed; retrying"),
        }
        let current = table_tx.borrow().clone();
        listeners.reconcile(&current).await;
        // Only once their ports are open may DNS answer them.
        let served: BTreeMap<String, IpAddr> = up
            .iter()
            .filter(|(_, ip)| current.service_routes.keys().any(|(a, _)| a == *ip))
            .map(|(id, ip)| (id.clone(), *ip))
            .collect();
        addresses_tx.send_if_modified(|current| {
            if **current == served {
                return false;
            }
            *current = Arc::new(served);
            true
        });
    }
    addresses_tx.send_replace(Arc::new(BTreeMap::new()));
    listeners.stop().await;
    host.clear().await;
    tracing::info!("node proxies stopped");
}

/// The ids (`namespace/name`) of the Services that get an address, oldest first.
fn by_age(services: &[shoal_protocol::kinds::Service]) -> Vec<String> {
    let mut list: Vec<(String, String)> = services
        .iter()
        .filter(|s| !s.spec.is_headless())
        .map(|s| {
            (
                s.metadata.creation_timestamp.clone().unwrap_or_default(),
                table::service_id(s),
            )
        })
        .collect();
    list.sort();
    list.into_iter().map(|(_, id)| id).collect()
}

/// The table as the store and observed state say now.
async fn current_table(
    config: &ProxyConfig,
    state: &StateHandle,
    observed: &ObservedHandle,
    services: &[shoal_protocol::kinds::Service],
    gateway: Option<std::net::IpAddr>,
    service_addresses: &BTreeMap<String, IpAddr>,
) -> Result<Table, StateError> {
    let pods = pod_entries(state, observed).await?;
    // Only the specs of this node's pods matter (named target ports of local endpoints).
    let specs: BTreeMap<String, _> = desired_pods(state)
        .await?
        .into_iter()
        .filter(|p| p.slot.node == config.node_name)
        .map(|p| (p.key(), p.spec))
        .collect();
    Ok(table::build(&table::Inputs {
        services,
        pods: &pods,
        specs: &specs,
        nodes: &heard_nodes(observed),
        heard: &last_heard(observed),
        stale_after: health::stale_after(observed.timing().heartbeat),
        node_name: &config.node_name,
        address: config.address,
        gateway,
        service_addresses,
    }))
}

/// When each node membership knows was last heard, by address (the newest, should two share
/// one).
fn last_heard(observed: &ObservedHandle) -> BTreeMap<IpAddr, Instant> {
    let mut out: BTreeMap<IpAddr, Instant> = BTreeMap::new();
    for record in observed.snapshot().values() {
        let (Some(seen), Ok(ip)) = (record.seen, record.address.parse::<IpAddr>()) else {
            continue;
        };
        let at = out.entry(ip.to_canonical()).or_insert(seen);
        *at = (*at).max(seen);
    }
    out
}

/// The listening ports, one task each, kept in line with the table.
struct Listeners {
    address: IpAddr,
    table: watch::Receiver<Arc<Table>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    running: HashMap<Listener, (CancellationToken, JoinHandle<()>)>,
    /// Targets that failed lately, shared by every port.
    failures: health::SharedFailures,
    /// Sockets that could not be bound, with when that was last logged as an error.
    failing: HashMap<Listener, Instant>,
}

impl Listeners {
    fn new(
        address: IpAddr,
        table: watch::Receiver<Arc<Table>>,
        shutdown: CancellationToken,
    ) -> Listeners {
        Listeners {
            address,
            table,
            shutdown,
            tracker: TaskTracker::new(),
            running: HashMap::new(),
            failing: HashMap::new(),
            failures: health::SharedFailures::default(),
        }
    }

    /// Opens the sockets of `table` that are not open (again, for one whose task ended) and
    /// closes those it no longer has, with their connections.
    async fn reconcile(&mut self, table: &Table) {
        let wanted = table.listeners(self.address);
        self.running.retain(|l, (stop, task)| {
            let keep = wanted.contains(l) && !task.is_finished();
            if !keep {
                stop.cancel();
                tracing::info!(port = %l.key, address = %l.addr, "node proxy port closed");
            }
            keep
        });
        self.failing.retain(|l, _| wanted.contains(l));
        for l in &wanted {
            if self.running.contains_key(l) {
                continue;
            }
            let service = table
                .route(l)
                .map(|r| r.service.as_str())
                .unwrap_or_default();
            match self.open(*l).await {
                Ok(task) => {
                    self.failing.remove(l);
                    tracing::info!(port = %l.key, %service, address = %l.addr, pods = l.pods,
                        "node proxy port open");
                    self.running.insert(*l, task);
                }
                Err(e) => {
                    let now = Instant::now();
                    let due = self
                        .failing
                        .get(l)
                        .is_none_or(|t| now.duration_since(*t) >= BIND_ERROR_EVERY);
                    if due {
                        tracing::error!(port = %l.key, %service, address = %l.addr,
                            error = %e, "cannot listen on the service's port (is another \
                             process using it?); retrying");
                        self.failing.insert(*l, now);
                    } else {
                        tracing::debug!(port = %l.key, %service, address = %l.addr,
                            error = %e, "still cannot listen on the service's port");
                    }
                }
            }
        }
    }

    /// Binds `l` and starts its task. Connections to other nodes leave from the advertise
    /// address, whichever address they arrived at.
    async fn open(&self, l: Listener) -> std::io::Result<(CancellationToken, JoinHandle<()>)> {
        let addr = SocketAddr::new(l.addr, l.key.port);
        let stop = self.shutdown.child_token();
        let table = self.table.clone();
        let source = Some(self.address);
        let task = match l.key.transport {
            Transport::Tcp => {
                let listener = TcpListener::bind(addr).await?;
                self.tracker.spawn(tcp::serve(
                    listener,
                    l,
                    table,
                    source,
                    self.failures.clone(),
                    stop.clone(),
                ))
            }
            Transport::Udp => {
                let socket = UdpSocket::bind(addr).await?;
                self.tracker.spawn(udp::serve(
                    socket,
                    l,
                    table,
                    source,
                    self.failures.clone(),
                    udp::IDLE,
                    stop.clone(),
                ))
            }
        };
        Ok((stop, task))
    }

    /// Stops every port task, waiting for them a little.
    async fn stop(self) {
        for (stop, _) in self.running.values() {
            stop.cancel();
        }
        self.tracker.close();
        if tokio::time::timeout(STOP_DEADLINE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some node proxy tasks did not stop in time");
        }
    }
}
