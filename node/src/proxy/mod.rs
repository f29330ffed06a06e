//! The node proxies: every node listens on each Service's port (its `nodePort` where set, else
//! its `port`) at its advertise address, TCP and UDP as declared, and forwards each connection
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
//!
//! [`run`] rebuilds the table after every change of the store or of observed state (debounced)
//! and at least every second, publishes it on a `watch` channel that the port tasks read at
//! each new connection or flow, and opens and closes listeners to match. A port that cannot be
//! bound (another process holds it) is logged and retried at the next round; it never stops
//! the node.

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

pub use table::{ListenKey, Route, Table, Transport, port_conflict};

use crate::dns::feed::{heard_nodes, pod_entries, services};
use crate::observed::ObservedHandle;
use crate::pods::desired_pods;
use crate::state::{StateError, StateHandle};

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

/// Runs the proxies of this node until `shutdown`.
pub async fn run(
    config: ProxyConfig,
    state: StateHandle,
    observed: ObservedHandle,
    shutdown: CancellationToken,
) {
    let (table_tx, table_rx) = watch::channel(Arc::new(Table::default()));
    let mut listeners = Listeners::new(config.address, table_rx, shutdown.clone());
    let mut state_rx = state.subscribe();
    let mut observed_rx = observed.subscribe();
    let (mut state_open, mut observed_open) = (true, true);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warnings: Vec<String> = Vec::new();
    tracing::info!(node = %config.node_name, address = %config.address, "node proxies started");
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = state_rx.changed(), if state_open => state_open = r.is_ok(),
            r = observed_rx.changed(), if observed_open => observed_open = r.is_ok(),
            _ = tick.tick() => {}
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(DEBOUNCE) => {}
        }
        state_rx.borrow_and_update();
        observed_rx.borrow_and_update();
        match current_table(&config, &state, &observed).await {
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
                    tracing::debug!(ports = t.routes.len(), "proxy routing table changed");
                    *current = Arc::new(t);
                    true
                });
            }
            Err(e) => tracing::warn!(error = %e, "building the proxy table failed; retrying"),
        }
        let current = table_tx.borrow().clone();
        listeners.reconcile(&current).await;
    }
    listeners.stop().await;
    tracing::info!("node proxies stopped");
}

/// The table as the store and observed state say now.
async fn current_table(
    config: &ProxyConfig,
    state: &StateHandle,
    observed: &ObservedHandle,
) -> Result<Table, StateError> {
    let services = services(state).await?;
    let pods = pod_entries(state, observed).await?;
    // Only the specs of this node's pods matter (named target ports of local endpoints).
    let specs: BTreeMap<String, _> = desired_pods(state)
        .await?
        .into_iter()
        .filter(|p| p.slot.node == config.node_name)
        .map(|p| (p.key(), p.spec))
        .collect();
    Ok(table::build(&table::Inputs {
        services: &services,
        pods: &pods,
        specs: &specs,
        nodes: &heard_nodes(observed),
        node_name: &config.node_name,
        address: config.address,
    }))
}

/// The listening ports, one task each, kept in line with the table.
struct Listeners {
    address: IpAddr,
    table: watch::Receiver<Arc<Table>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    running: HashMap<ListenKey, (CancellationToken, JoinHandle<()>)>,
    /// Ports that could not be bound, with when that was last logged as an error.
    failing: HashMap<ListenKey, Instant>,
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
        }
    }

    /// Opens the ports of `table` that are not open (again, for one whose task ended) and
    /// closes those it no longer has, with their connections.
    async fn reconcile(&mut self, table: &Table) {
        self.running.retain(|key, (stop, task)| {
            let keep = table.routes.contains_key(key) && !task.is_finished();
            if !keep {
                stop.cancel();
                tracing::info!(port = %key, "node proxy port closed");
            }
            keep
        });
        self.failing.retain(|key, _| table.routes.contains_key(key));
        for (key, route) in &table.routes {
            if self.running.contains_key(key) {
                continue;
            }
            match self.open(*key).await {
                Ok(task) => {
                    self.failing.remove(key);
                    tracing::info!(port = %key, service = %route.service,
                        address = %self.address, "node proxy port open");
                    self.running.insert(*key, task);
                }
                Err(e) => {
                    let now = Instant::now();
                    let due = self
                        .failing
                        .get(key)
                        .is_none_or(|t| now.duration_since(*t) >= BIND_ERROR_EVERY);
                    if due {
                        tracing::error!(port = %key, service = %route.service,
                            address = %self.address, error = %e,
                            "cannot listen on the service's port (is another process using \
                             it?); retrying");
                        self.failing.insert(*key, now);
                    } else {
                        tracing::debug!(port = %key, service = %route.service, error = %e,
                            "still cannot listen on the service's port");
                    }
                }
            }
        }
    }

    /// Binds `key` and starts its task.
    async fn open(&self, key: ListenKey) -> std::io::Result<(CancellationToken, JoinHandle<()>)> {
        let addr = SocketAddr::new(self.address, key.port);
        let stop = self.shutdown.child_token();
        let table = self.table.clone();
        let source = Some(self.address);
        let task = match key.transport {
            Transport::Tcp => {
                let listener = TcpListener::bind(addr).await?;
                self.tracker
                    .spawn(tcp::serve(listener, key, table, source, stop.clone()))
            }
            Transport::Udp => {
                let socket = UdpSocket::bind(addr).await?;
                self.tracker.spawn(udp::serve(
                    socket,
                    key,
                    table,
                    source,
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
