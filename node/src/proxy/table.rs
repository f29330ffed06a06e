//! The routing table of the node proxies (pure): from the Services, the pods, their specs and
//! membership, which ports this node listens on and where each one forwards.
//!
//! Every port a Service publishes (its `nodePort` where set, else its `port`) is a
//! [`ListenKey`]; its [`Route`] lists the ready endpoints on this node (`podIP:targetPort`,
//! reachable from this host only) and the addresses of the other heard nodes with ready
//! endpoints, whose proxies listen on the same port. [`Route::candidates`] orders them: local
//! ones first, round-robin; the other nodes only for clients that are no cluster node, so that
//! a connection crosses at most one hop between proxies and never loops. [`Table::order`] then
//! puts last the targets that look down now (see [`super::health`]): the table keeps when each
//! node was last heard for that.
//!
//! Each port is open on the node's advertise address (for the LAN and the other nodes) and,
//! once the agent has made the pod network, on its gateway (for this node's pods, which cannot
//! reach the advertise address wherever that is loopback): [`Table::listeners`]. Connections
//! at the gateway come from pods, never from nodes, so they may go on to another node.
//!
//! Node-facing ports are cluster-wide, like Docker Swarm's published ports ([`node_ports`]):
//! [`port_conflict`] is the check the API makes at apply time for the ports a Service asks for
//! explicitly (`nodePort`); a Service whose own `port` another Service already holds gets a
//! node-facing port of [`AUTO_PORTS`] instead, while this node's pods reach it on its own
//! `port` at its own address on the pod network ([`Table::service_routes`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shoal_protocol::intstr::IntOrString;
use shoal_protocol::kinds::{PodSpec, Protocol, Service, ServicePort};

use crate::dns::records::{PodEntry, endpoints};
use crate::pods::pod_key;
use tokio::time::Instant;

use super::health::{self, Knowledge};

/// The transports the proxies forward (SCTP is not forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The transport of a Service port; `None` for SCTP.
    pub fn of(protocol: Protocol) -> Option<Transport> {
        match protocol {
            Protocol::Tcp => Some(Transport::Tcp),
            Protocol::Udp => Some(Transport::Udp),
            Protocol::Sctp => None,
        }
    }

    /// `TCP` or `UDP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        }
    }
}

/// A port every node listens on, with its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenKey {
    pub port: u16,
    pub transport: Transport,
}

impl fmt::Display for ListenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.transport.as_str())
    }
}

/// Where one listening port forwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The Service that owns the port: `namespace/name`.
    pub service: String,
    /// The Service port's node-facing port (see [`node_ports`]): other nodes' proxies listen
    /// there for it, so a connection that goes on to another node goes to that port.
    pub port: u16,
    /// The ready endpoints on this node: `podIP:targetPort`, sorted.
    pub local: Vec<SocketAddr>,
    /// The addresses of the other heard nodes with a ready endpoint, sorted: their proxies
    /// listen on the same port.
    pub remote: Vec<IpAddr>,
}

/// One place to forward to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// Another node's proxy (rather than a pod of this node).
    pub remote: bool,
}

impl Route {
    /// Where to forward a connection, in the order to try: the local endpoints, then (unless
    /// the client is a cluster node, `from_node`) the other nodes' proxies on the node-facing
    /// port, each list rotated by `turn` for round-robin. Empty: refuse the connection.
    pub fn candidates(&self, from_node: bool, turn: usize) -> Vec<Target> {
        let port = self.port;
        let mut out: Vec<Target> = rotated(&self.local, turn)
            .map(|addr| Target {
                addr,
                remote: false,
            })
            .collect();
        if !from_node {
            out.extend(rotated(&self.remote, turn).map(|ip| Target {
                addr: SocketAddr::new(ip, port),
                remote: true,
            }));
        }
        out
    }
}

/// `items` starting at `turn` (modulo its length), wrapping around.
fn rotated<T: Copy>(items: &[T], turn: usize) -> impl Iterator<Item = T> + '_ {
    let start = if items.is_empty() {
        0
    } else {
        turn % items.len()
    };
    items[start..].iter().chain(&items[..start]).copied()
}

/// One listening socket: an address of this node, a port, and whether the clients there are
/// this node's pods (at the pod network's gateway) rather than the LAN and the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    pub addr: IpAddr,
    pub key: ListenKey,
    pub pods: bool,
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.key)
    }
}

/// What every proxy of this node serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// By node-facing port: what the advertise address and the gateway serve.
    pub routes: BTreeMap<ListenKey, Route>,
    /// By Service address and the Service's own `port`: what this node's pods reach at the
    /// address DNS answers them for the Service (see [`super::addresses`]).
    pub service_routes: BTreeMap<(IpAddr, ListenKey), Route>,
    /// The gateway of this node's pod network, once known: every port is open there too.
    pub gateway: Option<IpAddr>,
    /// The addresses of the other nodes membership hears (without this node's own): their
    /// connections are forwarded to local endpoints only.
    pub nodes: BTreeSet<IpAddr>,
    /// What is not served and why (SCTP ports, ports out of range, ports two Services claim),
    /// for the log.
    pub warnings: Vec<String>,
    /// When each other heard node was last heard (this process's clock), by its canonical
    /// address: [`Table::order`] puts nodes unheard for `stale_after` last.
    pub heard: BTreeMap<IpAddr, Instant>,
    /// See [`health::stale_after`].
    pub stale_after: Duration,
}

impl Table {
    /// Whether `ip` is another cluster node's address.
    pub fn is_node(&self, ip: IpAddr) -> bool {
        self.nodes.contains(&ip.to_canonical())
    }

    /// Every socket to open: each node-facing port on `address` (the advertise address) and
    /// on the pod network's gateway when known, and each Service's own ports on its address.
    pub fn listeners(&self, address: IpAddr) -> BTreeSet<Listener> {
        let mut out = BTreeSet::new();
        for key in self.routes.keys() {
            out.insert(Listener {
                addr: address,
                key: *key,
                pods: false,
            });
            if let Some(gateway) = self.gateway.filter(|g| *g != address) {
                out.insert(Listener {
                    addr: gateway,
                    key: *key,
                    pods: true,
                });
            }
        }
        for (addr, key) in self.service_routes.keys() {
            out.insert(Listener {
                addr: *addr,
                key: *key,
                pods: true,
            });
        }
        out
    }

    /// The route of a listening socket: its Service's at a Service address, else the
    /// node-facing port's.
    pub fn route(&self, listener: &Listener) -> Option<&Route> {
        if let Some(route) = self.service_routes.get(&(listener.addr, listener.key)) {
            return Some(route);
        }
        let at_service_address = self
            .service_routes
            .range((listener.addr, ListenKey::MIN)..=(listener.addr, ListenKey::MAX))
            .next()
            .is_some();
        if at_service_address {
            None
        } else {
            self.routes.get(&listener.key)
        }
    }

    /// Whether a client at `peer` of `listener` counts as a cluster node (whose connections
    /// go to local endpoints only): never at the gateway, where only pods connect.
    pub fn from_node(&self, listener_pods: bool, peer: IpAddr) -> bool {
        !listener_pods && self.is_node(peer)
    }

    /// `candidates` (of [`Route::candidates`]) in the order to try them at `now`: targets on
    /// nodes unheard lately and those in `failed` (targets that failed lately) last, none
    /// left out. See [`health::order`].
    pub fn order(
        &self,
        candidates: Vec<Target>,
        failed: &[SocketAddr],
        now: Instant,
    ) -> Vec<Target> {
        let failed = |a: SocketAddr| failed.contains(&a);
        health::order(
            candidates,
            &Knowledge {
                now,
                heard: &self.heard,
                stale_after: self.stale_after,
                failed: &failed,
            },
        )
    }

    /// The health of one target at `now` (see [`health::health`]).
    pub fn health(&self, target: &Target, failed: &[SocketAddr], now: Instant) -> health::Health {
        let failed = |a: SocketAddr| failed.contains(&a);
        health::health(
            target,
            &Knowledge {
                now,
                heard: &self.heard,
                stale_after: self.stale_after,
                failed: &failed,
            },
        )
    }
}

impl ListenKey {
    const MIN: ListenKey = ListenKey {
        port: 0,
        transport: Transport::Tcp,
    };
    const MAX: ListenKey = ListenKey {
        port: u16::MAX,
        transport: Transport::Udp,
    };
}

/// What the table is built from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub services: &'a [Service],
    pub pods: &'a [PodEntry],
    /// The spec of each desired pod, by `namespace/pod`, to resolve named target ports.
    pub specs: &'a BTreeMap<String, PodSpec>,
    /// The address of every node membership hears, by name.
    pub nodes: &'a BTreeMap<String, IpAddr>,
    /// When each node was last heard, by address (see [`Table::heard`]).
    pub heard: &'a BTreeMap<IpAddr, Instant>,
    /// See [`health::stale_after`].
    pub stale_after: Duration,
    /// This node's name and advertise address.
    pub node_name: &'a str,
    pub address: IpAddr,
    /// This node's pod network gateway, once the agent knows it.
    pub gateway: Option<IpAddr>,
    /// The address of each Service (`namespace/name`) on this node's pod network, where one
    /// is up.
    pub service_addresses: &'a BTreeMap<String, IpAddr>,
}

/// Builds the table. Headless Services are not forwarded (DNS answers their pods directly).
pub fn build(inputs: &Inputs<'_>) -> Table {
    // This node is always alive to itself, whatever membership says yet.
    let mut nodes = inputs.nodes.clone();
    nodes
        .entry(inputs.node_name.to_string())
        .or_insert(inputs.address);
    let plan = node_ports(inputs.services);
    let mut table = Table {
        nodes: nodes
            .iter()
            .filter(|(name, ip)| *name != inputs.node_name && **ip != inputs.address)
            .map(|(_, ip)| ip.to_canonical())
            .collect(),
        gateway: inputs.gateway,
        warnings: plan.warnings.clone(),
        heard: inputs
            .heard
            .iter()
            .map(|(ip, t)| (ip.to_canonical(), *t))
            .collect(),
        stale_after: inputs.stale_after,
        ..Table::default()
    };
    for svc in inputs.services.iter().filter(|s| !s.spec.is_headless()) {
        let id = service_id(svc);
        let eps = endpoints(svc, inputs.pods, &nodes);
        let address = inputs.service_addresses.get(&id).copied();
        for (index, port) in svc.spec.ports.iter().enumerate() {
            let Some(node_port) = plan.get(&id, index) else {
                continue;
            };
            let Some(transport) = Transport::of(port.protocol) else {
                continue;
            };
            let mut route = Route {
                service: id.clone(),
                port: node_port,
                ..Route::default()
            };
            let mut remote = BTreeSet::new();
            for e in eps.iter().filter(|e| e.ready) {
                if e.node == inputs.node_name {
                    let spec = inputs.specs.get(&pod_key(&svc_namespace(svc), &e.pod));
                    let ip = e.pod_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok());
                    if let (Some(ip), Some(target)) = (ip, target_port(port, spec)) {
                        route.local.push(SocketAddr::new(ip, target));
                    }
                } else if let Some(ip) = e.node_address
                    && ip != inputs.address
                {
                    remote.insert(ip);
                }
            }
            route.local.sort();
            route.local.dedup();
            route.remote = remote.into_iter().collect();
            if let (Some(addr), Ok(own)) = (address, u16::try_from(port.port))
                && own != 0
            {
                let key = ListenKey {
                    port: own,
                    transport,
                };
                table
                    .service_routes
                    .entry((addr, key))
                    .or_insert_with(|| route.clone());
            }
            table.routes.insert(
                ListenKey {
                    port: node_port,
                    transport,
                },
                route,
            );
        }
    }
    table
}

/// The first and last node-facing port given to a Service port whose own number another
/// Service holds (Kubernetes' NodePort range).
pub const AUTO_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Which node-facing port each Service port gets: every node listens there for it. See
/// [`node_ports`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePorts {
    /// By (`namespace/name`, index of the port in `spec.ports`).
    pub ports: BTreeMap<(String, usize), u16>,
    /// What gets no port and why, for the log.
    pub warnings: Vec<String>,
}

impl NodePorts {
    /// The node-facing port of port `index` of Service `id` (`namespace/name`).
    pub fn get(&self, id: &str, index: usize) -> Option<u16> {
        self.ports.get(&(id.to_string(), index)).copied()
    }
}

/// Gives every Service port (of Services that are not headless) its node-facing port, the
/// same on every node that knows the same Services (pure):
/// 1. a `nodePort` where set (NodePort and LoadBalancer Services; the API refuses one that
///    another Service holds, so a clash only comes from applies on both sides of a partition:
///    the older Service keeps it);
/// 2. else the Service's own `port`, when free: the older Service (by `creationTimestamp`,
///    then `namespace/name`) keeps a number two Services share, as the guestbook's two Redis
///    Services share 6379 — in Kubernetes each has its own cluster IP;
/// 3. else a port of [`AUTO_PORTS`], from a hash of the Service and port, the first free one
///    from there. `shoal get svc` shows it (`6379:30412/TCP`), SRV records name it, and the
///    Service's own address on each node's pod network still serves its `port` (see
///    [`super::addresses`]), so pods never see the difference.
pub fn node_ports(services: &[Service]) -> NodePorts {
    let mut services: Vec<&Service> = services.iter().filter(|s| !s.spec.is_headless()).collect();
    services.sort_by(|a, b| {
        let created = |s: &Service| s.metadata.creation_timestamp.clone().unwrap_or_default();
        created(a)
            .cmp(&created(b))
            .then_with(|| service_id(a).cmp(&service_id(b)))
    });
    let mut plan = NodePorts::default();
    let mut taken: BTreeMap<ListenKey, String> = BTreeMap::new();
    let mut pending: Vec<(String, usize, &ServicePort, Transport)> = Vec::new();
    for explicit in [true, false] {
        for svc in &services {
            let id = service_id(svc);
            for (index, port) in svc.spec.ports.iter().enumerate() {
                if port.node_port.is_some() != explicit {
                    continue;
                }
                let Some(transport) = Transport::of(port.protocol) else {
                    plan.warnings.push(format!(
                        "service {id} port {}/SCTP is not forwarded: the node proxies forward \
                         TCP and UDP only",
                        port.port
                    ));
                    continue;
                };
                let Some(number) = node_facing_port(port) else {
                    plan.warnings.push(format!(
                        "service {id} port {} is out of range 1-65535; not forwarded",
                        port.node_port.unwrap_or(port.port)
                    ));
                    continue;
                };
                let key = ListenKey {
                    port: number,
                    transport,
                };
                match taken.get(&key) {
                    None => {
                        taken.insert(key, id.clone());
                        plan.ports.insert((id.clone(), index), number);
                    }
                    // The same Service lists the port twice: the first entry serves it.
                    Some(owner) if *owner == id => {}
                    Some(owner) if explicit => plan.warnings.push(format!(
                        "service {id} nodePort {key} is already taken by service {owner}; not \
                         forwarded"
                    )),
                    Some(_) => pending.push((id.clone(), index, port, transport)),
                }
            }
        }
    }
    let span = u32::from(AUTO_PORTS.end() - AUTO_PORTS.start()) + 1;
    for (id, index, port, transport) in pending {
        let start = fnv(&format!("{id}/{}/{}", port.port, transport.as_str())) % span;
        let free = (0..span)
            .filter_map(|i| u16::try_from((start + i) % span).ok())
            .map(|offset| ListenKey {
                port: AUTO_PORTS.start() + offset,
                transport,
            })
            .find(|key| !taken.contains_key(key));
        match free {
            Some(key) => {
                taken.insert(key, id.clone());
                plan.ports.insert((id, index), key.port);
            }
            None => plan.warnings.push(format!(
                "service {id} port {}/{}: its number is taken and no port of {}-{} is free; not \
                 forwarded",
                port.port,
                transport.as_str(),
                AUTO_PORTS.start(),
                AUTO_PORTS.end()
            )),
        }
    }
    plan
}

/// FNV-1a of `text`.
pub(crate) fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn svc_namespace(svc: &Service) -> String {
    svc.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// `namespace/name`.
pub fn service_id(svc: &Service) -> String {
    format!("{}/{}", svc_namespace(svc), svc.metadata.name)
}

/// The port every node listens on: the `nodePort` where set, else the `port`.
fn node_facing_port(port: &ServicePort) -> Option<u16> {
    u16::try_from(port.node_port.unwrap_or(port.port))
        .ok()
        .filter(|p| *p != 0)
}

/// The pod's port a Service port forwards to: a number, or the named port of one of the pod's
/// containers (with the same protocol), or the Service's `port` when unset.
fn target_port(port: &ServicePort, spec: Option<&PodSpec>) -> Option<u16> {
    let number = match &port.target_port {
        IntOrString::Int(0) => port.port,
        IntOrString::Int(n) => *n,
        IntOrString::String(s) if s.is_empty() => port.port,
        IntOrString::String(name) => {
            spec?
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .find(|p| p.name.as_deref() == Some(name.as_str()) && p.protocol == port.protocol)?
                .container_port
        }
    };
    u16::try_from(number).ok().filter(|p| *p != 0)
}

/// Refuses a Service that would publish a port another Service already publishes: ports are
/// cluster-wide (every node listens on each), so a (node-facing port, protocol) pair belongs
/// to one Service. `existing`: the stored Services; the same Service (namespace and name)
/// re-applied is not a conflict, and headless Services publish no port. `None`: no conflict.
pub fn port_conflict(new: &Service, existing: &[Service]) -> Option<String> {
    if new.spec.is_headless() {
        return None;
    }
    let id = service_id(new);
    for port in &new.spec.ports {
        let number = port.node_port.unwrap_or(port.port);
        for other in existing {
            if other.spec.is_headless() || service_id(other) == id {
                continue;
            }
            let taken =
                other.spec.ports.iter().any(|p| {
                    p.protocol == port.protocol && p.node_port.unwrap_or(p.port) == number
                });
            if taken {
                let field = if port.node_port.is_some() {
                    "nodePort"
                } else {
                    "port"
                };
                return Some(format!(
                    "service {id} {field} {number}/{} is already taken by service {}: ports are \
                     cluster-wide in shoal (as published ports in Docker Swarm); choose another \
                     port or nodePort",
                    port.protocol.as_str(),
                    service_id(other),
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;
    use shoal_protocol::{Kind, Resource};

    use super::*;

    const ME: &str = "n1";

    fn service(v: serde_json::Value) -> Service {
        match Resource::from_value(Kind::Service, v).unwrap() {
            Resource::Service(s) => s,
            _ => unreachable!(),
        }
    }

    fn web(ports: serde_json::Value) -> Service {
        service(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": ports}}))
    }

    fn pod(name: &str, node: &str, ready: bool, ip: &str) -> PodEntry {
        PodEntry {
            namespace: "default".into(),
            name: name.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            node: node.into(),
            ready,
            pod_ip: Some(ip.into()),
            routed: false,
            named_ports: Default::default(),
            hostname: None,
            subdomain: None,
        }
    }

    fn nodes() -> BTreeMap<String, IpAddr> {
        [
            ("n1".to_string(), ip("10.0.0.1")),
            ("n2".to_string(), ip("10.0.0.2")),
            ("n3".to_string(), ip("10.0.0.3")),
        ]
        .into()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn spec_with_port(name: &str, number: i32) -> PodSpec {
        serde_json::from_value(json!({"containers": [{"name": "c", "image": "x",
            "ports": [{"name": name, "containerPort": number}]}]}))
        .unwrap()
    }

    fn table_of(
        services: &[Service],
        pods: &[PodEntry],
        specs: &BTreeMap<String, PodSpec>,
        nodes: &BTreeMap<String, IpAddr>,
    ) -> Table {
        build(&Inputs {
            services,
            pods,
            specs,
            nodes,
            heard: &BTreeMap::new(),
            stale_after: Duration::ZERO,
            node_name: ME,
            address: ip("10.0.0.1"),
            gateway: None,
            service_addresses: &BTreeMap::new(),
        })
    }

    const TCP8080: ListenKey = ListenKey {
        port: 8080,
        transport: Transport::Tcp,
    };

    #[test]
    fn local_endpoints_come_first_and_rotate() {
        let svc = web(json!([{"port": 8080, "targetPort": 80}]));
        let pods = [
            pod("web-0", "n1", true, "172.18.0.2"),
            pod("web-1", "n1", true, "172.18.0.3"),
            pod("web-2", "n2", true, "172.19.0.2"),
        ];
        let t = table_of(&[svc], &pods, &BTreeMap::new(), &nodes());
        let route = &t.routes[&TCP8080];
        assert_eq!(route.service, "default/web");
        assert_eq!(route.local, vec![sa("172.18.0.2:80"), sa("172.18.0.3:80")]);
        assert_eq!(route.remote, vec![ip("10.0.0.2")]);
        let first: Vec<SocketAddr> = (0..4)
            .map(|turn| route.candidates(false, turn)[0].addr)
            .collect();
        assert_eq!(
            first,
            vec![
                sa("172.18.0.2:80"),
                sa("172.18.0.3:80"),
                sa("172.18.0.2:80"),
                sa("172.18.0.3:80")
            ]
        );
        // The other node comes after the local ones, as a fallback.
        let all = route.candidates(false, 1);
        assert_eq!(
            all,
            vec![
                Target {
                    addr: sa("172.18.0.3:80"),
                    remote: false
                },
                Target {
                    addr: sa("172.18.0.2:80"),
                    remote: false
                },
                Target {
                    addr: sa("10.0.0.2:8080"),
                    remote: true
                },
            ]
        );
    }

    #[test]
    fn without_local_endpoints_other_nodes_take_turns_on_the_node_port() {
        let svc = web(json!([{"port": 8080, "nodePort": 30080}]));
        let pods = [
            pod("web-0", "n2", true, "172.19.0.2"),
            pod("web-1", "n3", true, "172.20.0.2"),
            pod("web-2", "n3", true, "172.20.0.3"),
        ];
        let t = table_of(&[svc], &pods, &BTreeMap::new(), &nodes());
        assert!(!t.routes.contains_key(&TCP8080));
        let route = &t.routes[&ListenKey {
            port: 30080,
            transport: Transport::Tcp,
        }];
        assert!(route.local.is_empty());
        assert_eq!(route.remote, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        let picks: Vec<SocketAddr> = (0..3)
            .map(|turn| route.candidates(false, turn)[0].addr)
            .collect();
        assert_eq!(
            picks,
            vec![
                sa("10.0.0.2:30080"),
                sa("10.0.0.3:30080"),
                sa("10.0.0.2:30080")
            ]
        );
    }

    #[test]
    fn a_named_target_port_is_looked_up_in_the_pods_spec() {
        let svc = web(json!([{"port": 8080, "targetPort": "http"}]));
        let pods = [
            pod("web-0", "n1", true, "172.18.0.2"),
            pod("web-1", "n1", true, "172.18.0.3"),
            pod("web-2", "n1", true, "172.18.0.4"),
        ];
        let specs: BTreeMap<String, PodSpec> = [
            ("default/web-0".to_string(), spec_with_port("http", 8000)),
            ("default/web-1".to_string(), spec_with_port("http", 9000)),
            // No port of that name: not an endpoint for this port.
            ("default/web-2".to_string(), spec_with_port("admin", 9100)),
        ]
        .into();
        let t = table_of(&[svc], &pods, &specs, &nodes());
        assert_eq!(
            t.routes[&TCP8080].local,
            vec![sa("172.18.0.2:8000"), sa("172.18.0.3:9000")]
        );
    }

    #[test]
    fn the_target_port_defaults_to_the_port() {
        let svc = web(json!([{"port": 8080}]));
        let t = table_of(
            &[svc],
            &[pod("web-0", "n1", true, "172.18.0.2")],
            &BTreeMap::new(),
            &nodes(),
        );
        assert_eq!(t.routes[&TCP8080].local, vec![sa("172.18.0.2:8080")]);
    }

    #[test]
    fn unready_pods_are_left_out() {
        let svc = web(json!([{"port": 8080}]));
        let pods = [
            pod("web-0", "n1", false, "172.18.0.2"),
            pod("web-1", "n2", false, "172.19.0.2"),
        ];
        let t = table_of(&[svc], &pods, &BTreeMap::new(), &nodes());
        // The port is still served (and refuses connections at once).
        let route = &t.routes[&TCP8080];
        assert!(route.local.is_empty() && route.remote.is_empty());
        assert!(route.candidates(false, 0).is_empty());
    }

    #[test]
    fn a_dead_nodes_endpoints_are_left_out() {
        let svc = web(json!([{"port": 8080}]));
        let pods = [
            pod("web-0", "n2", true, "172.19.0.2"),
            pod("web-1", "n3", true, "172.20.0.2"),
        ];
        let mut heard = nodes();
        heard.remove("n3");
        let t = table_of(&[svc], &pods, &BTreeMap::new(), &heard);
        assert_eq!(t.routes[&TCP8080].remote, vec![ip("10.0.0.2")]);
        assert_eq!(t.nodes, [ip("10.0.0.2")].into());
    }

    #[test]
    fn a_node_unheard_lately_is_tried_after_the_others() {
        let svc = web(json!([{"port": 8080}]));
        let pods = [
            pod("web-1", "n2", true, "172.19.0.2"),
            pod("web-2", "n3", true, "172.20.0.2"),
        ];
        let (specs, heard_nodes, none) = (BTreeMap::new(), nodes(), BTreeMap::new());
        let now = Instant::now() + Duration::from_secs(60);
        // n2 heard just now, n3 1.5 s ago (given as a mapped address, as a record may say).
        let heard: BTreeMap<IpAddr, Instant> = [
            (ip("10.0.0.2"), now),
            (ip("::ffff:10.0.0.3"), now - Duration::from_millis(1500)),
        ]
        .into();
        let t = build(&Inputs {
            services: std::slice::from_ref(&svc),
            pods: &pods,
            specs: &specs,
            nodes: &heard_nodes,
            heard: &heard,
            stale_after: Duration::from_secs(1),
            node_name: ME,
            address: ip("10.0.0.1"),
            gateway: None,
            service_addresses: &none,
        });
        assert_eq!(
            t.heard.get(&ip("10.0.0.3")),
            Some(&(now - Duration::from_millis(1500)))
        );
        let route = &t.routes[&TCP8080];
        let n2 = Target {
            addr: sa("10.0.0.2:8080"),
            remote: true,
        };
        let n3 = Target {
            addr: sa("10.0.0.3:8080"),
            remote: true,
        };
        for turn in 0..2 {
            // n3 still gets connections: after n2, whatever the turn.
            assert_eq!(
                t.order(route.candidates(false, turn), &[], now),
                vec![n2, n3]
            );
        }
        // n2 just failed: both look down, a failure more so than silence.
        let failed = [n2.addr];
        assert_eq!(
            t.order(route.candidates(false, 0), &failed, now),
            vec![n3, n2]
        );
        // Heard again, n3 takes its turns.
        let later = now - Duration::from_millis(1500) + Duration::from_millis(900);
        assert_eq!(
            t.order(route.candidates(false, 1), &[], later),
            vec![n3, n2]
        );
    }

    #[test]
    fn a_connection_from_a_node_goes_to_local_endpoints_only() {
        let svc = web(json!([{"port": 8080}]));
        let remote_only = [pod("web-1", "n2", true, "172.19.0.2")];
        let t = table_of(
            std::slice::from_ref(&svc),
            &remote_only,
            &BTreeMap::new(),
            &nodes(),
        );
        assert!(t.is_node(ip("10.0.0.2")));
        assert!(t.is_node(ip("::ffff:10.0.0.3")));
        assert!(!t.is_node(ip("10.0.0.1")), "this node is no peer");
        assert!(!t.is_node(ip("192.168.1.50")));
        let route = &t.routes[&TCP8080];
        assert!(route.candidates(true, 0).is_empty());
        assert_eq!(route.candidates(false, 0).len(), 1);

        let both = [
            pod("web-0", "n1", true, "172.18.0.2"),
            pod("web-1", "n2", true, "172.19.0.2"),
        ];
        let t = table_of(&[svc], &both, &BTreeMap::new(), &nodes());
        assert_eq!(
            t.routes[&TCP8080].candidates(true, 0),
            vec![Target {
                addr: sa("172.18.0.2:8080"),
                remote: false
            }]
        );
    }

    #[test]
    fn ports_open_on_the_gateway_too_and_pods_there_may_go_to_other_nodes() {
        let svc = web(json!([{"port": 18080, "targetPort": 80}]));
        let pods = [pod("web-0", "n2", true, "172.19.0.2")];
        let (specs, heard, none) = (BTreeMap::new(), nodes(), BTreeMap::new());
        let never = BTreeMap::new();
        let inputs = |gateway| Inputs {
            services: std::slice::from_ref(&svc),
            pods: &pods,
            specs: &specs,
            nodes: &heard,
            heard: &never,
            stale_after: Duration::ZERO,
            node_name: ME,
            address: ip("10.0.0.1"),
            gateway,
            service_addresses: &none,
        };
        let key = ListenKey {
            port: 18080,
            transport: Transport::Tcp,
        };
        // Before the pod network exists: the advertise address only.
        let t = build(&inputs(None));
        let lan = Listener {
            addr: ip("10.0.0.1"),
            key,
            pods: false,
        };
        assert_eq!(t.listeners(ip("10.0.0.1")), [lan].into());
        // Then the gateway as well, with the same route.
        let t = build(&inputs(Some(ip("172.18.0.1"))));
        let gw = Listener {
            addr: ip("172.18.0.1"),
            key,
            pods: true,
        };
        assert_eq!(t.listeners(ip("10.0.0.1")), [lan, gw].into());
        assert_eq!(gw.to_string(), "172.18.0.1:18080/TCP");
        // The gateway is no node: it is not in the node set.
        assert!(!t.is_node(ip("172.18.0.1")));
        // A pod's connection at the gateway goes on to the node with the endpoint, from the
        // advertise address (which the other node's proxy recognises as a node's).
        let route = &t.routes[&key];
        let from_node = t.from_node(true, ip("172.18.0.5"));
        assert!(!from_node);
        assert_eq!(
            route.candidates(from_node, 0),
            vec![Target {
                addr: sa("10.0.0.2:18080"),
                remote: true
            }]
        );
        // Even a pod address that equals a node's is a pod's at the gateway; at the advertise
        // address a node's connection stays local.
        assert!(!t.from_node(true, ip("10.0.0.2")));
        assert!(t.from_node(false, ip("10.0.0.2")));
    }

    #[test]
    fn protocols_headless_and_clashes() {
        let svc = web(json!([
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "sig", "port": 3868, "protocol": "SCTP"}
        ]));
        let headless = service(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}));
        let clash = service(json!({"metadata": {"name": "other", "namespace": "prod"},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 53, "protocol": "UDP"}]}}));
        let t = table_of(
            &[clash.clone(), headless, svc.clone()],
            &[pod("web-0", "n1", true, "172.18.0.2")],
            &BTreeMap::new(),
            &nodes(),
        );
        let keys: Vec<String> = t.routes.keys().map(ToString::to_string).collect();
        // The first by namespace/name (none has a creation time here) keeps a contested port;
        // the other gets one of the automatic range.
        let auto = node_ports(&[clash.clone(), svc.clone()])
            .get("prod/other", 0)
            .unwrap();
        assert!(AUTO_PORTS.contains(&auto), "{auto}");
        assert_eq!(keys, vec!["53/TCP", "53/UDP", &format!("{auto}/UDP")]);
        let udp = &t.routes[&ListenKey {
            port: 53,
            transport: Transport::Udp,
        }];
        assert_eq!(udp.service, "default/web");
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(t.warnings.iter().any(|w| w.contains("3868/SCTP")));
    }

    fn created(mut svc: Service, at: &str) -> Service {
        svc.metadata.creation_timestamp = Some(at.into());
        svc
    }

    #[test]
    fn the_older_service_keeps_a_shared_port_and_the_other_gets_a_stable_automatic_one() {
        let redis = |name: &str, at: &str| {
            created(
                service(json!({"metadata": {"name": name, "namespace": "default"},
                    "spec": {"selector": {"app": name}, "ports": [{"port": 6379}]}})),
                at,
            )
        };
        let master = redis("redis-master", "2026-11-26T10:00:00Z");
        let replica = redis("redis-replica", "2026-11-26T09:00:00Z");
        let plan = node_ports(&[master.clone(), replica.clone()]);
        // The replica is older: it keeps 6379 although "master" sorts first by name.
        assert_eq!(plan.get("default/redis-replica", 0), Some(6379));
        let auto = plan.get("default/redis-master", 0).unwrap();
        assert!(AUTO_PORTS.contains(&auto), "{auto}");
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        // The same on every node, whatever order the Services come in.
        assert_eq!(node_ports(&[replica.clone(), master.clone()]), plan);
        // An explicit nodePort wins over an automatic port: the automatic one moves.
        let np = created(
            service(json!({"metadata": {"name": "np", "namespace": "default"},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": auto}]}})),
            "2026-11-26T11:00:00Z",
        );
        let with_np = node_ports(&[master.clone(), replica.clone(), np]);
        assert_eq!(with_np.get("default/np", 0), Some(auto));
        let moved = with_np.get("default/redis-master", 0).unwrap();
        assert!(AUTO_PORTS.contains(&moved) && moved != auto, "{moved}");
        // A Service that lists one port twice serves it once, with no automatic port.
        let twice = service(json!({"metadata": {"name": "t", "namespace": "default"},
            "spec": {"ports": [{"name": "a", "port": 81}, {"name": "b", "port": 81}]}}));
        let plan = node_ports(&[twice]);
        assert_eq!(plan.get("default/t", 0), Some(81));
        assert_eq!(plan.get("default/t", 1), None);
    }

    #[test]
    fn each_service_has_its_own_port_at_its_own_address_for_pods() {
        let master = created(
            service(
                json!({"metadata": {"name": "redis-master", "namespace": "default"},
                "spec": {"selector": {"app": "master"}, "ports": [{"port": 6379}]}}),
            ),
            "2026-11-26T09:00:00Z",
        );
        let replica = created(
            service(
                json!({"metadata": {"name": "redis-replica", "namespace": "default"},
                "spec": {"selector": {"app": "replica"}, "ports": [{"port": 6379}]}}),
            ),
            "2026-11-26T10:00:00Z",
        );
        let mut m = pod("m-0", "n1", true, "172.18.0.2");
        m.labels = [("app".to_string(), "master".to_string())].into();
        let mut r = pod("r-0", "n2", true, "172.19.0.2");
        r.labels = [("app".to_string(), "replica".to_string())].into();
        let services = [master.clone(), replica.clone()];
        let addresses: BTreeMap<String, IpAddr> = [
            ("default/redis-master".to_string(), ip("172.18.128.5")),
            ("default/redis-replica".to_string(), ip("172.18.200.9")),
        ]
        .into();
        let (specs, heard) = (BTreeMap::new(), nodes());
        let t = build(&Inputs {
            services: &services,
            pods: &[m, r],
            specs: &specs,
            nodes: &heard,
            heard: &BTreeMap::new(),
            stale_after: Duration::ZERO,
            node_name: ME,
            address: ip("10.0.0.1"),
            gateway: Some(ip("172.18.0.1")),
            service_addresses: &addresses,
        });
        let auto = node_ports(&services)
            .get("default/redis-replica", 0)
            .unwrap();
        let key = |port| ListenKey {
            port,
            transport: Transport::Tcp,
        };
        let at = |addr: &str, port, pods| Listener {
            addr: ip(addr),
            key: key(port),
            pods,
        };
        let listeners = t.listeners(ip("10.0.0.1"));
        for l in [
            at("10.0.0.1", 6379, false),
            at("10.0.0.1", auto, false),
            at("172.18.0.1", 6379, true),
            at("172.18.0.1", auto, true),
            at("172.18.128.5", 6379, true),
            at("172.18.200.9", 6379, true),
        ] {
            assert!(listeners.contains(&l), "{l} missing from {listeners:?}");
        }
        assert_eq!(listeners.len(), 6);
        // The master's address reaches the master's pod here.
        let route = t.route(&at("172.18.128.5", 6379, true)).unwrap();
        assert_eq!(route.service, "default/redis-master");
        assert_eq!(route.local, vec![sa("172.18.0.2:6379")]);
        // The replica's, on the same port number, reaches the replica on n2, through n2's
        // proxy on the replica's node-facing port.
        let route = t.route(&at("172.18.200.9", 6379, true)).unwrap();
        assert_eq!(route.service, "default/redis-replica");
        assert_eq!(
            route.candidates(false, 0),
            vec![Target {
                addr: SocketAddr::new(ip("10.0.0.2"), auto),
                remote: true
            }]
        );
        // A port a Service's address does not serve has no route there.
        assert_eq!(t.route(&at("172.18.200.9", auto, true)), None);
        // The shared addresses keep the node-facing ports.
        assert_eq!(
            t.route(&at("10.0.0.1", 6379, false)).unwrap().service,
            "default/redis-master"
        );
        assert_eq!(
            t.route(&at("10.0.0.1", auto, false)).unwrap().service,
            "default/redis-replica"
        );
    }

    #[test]
    fn ports_conflict_across_services_only() {
        let web = web(json!([{"port": 8080}]));
        let api = service(json!({"metadata": {"name": "api", "namespace": "prod"},
            "spec": {"selector": {"app": "api"}, "ports": [{"port": 8080}]}}));
        let msg = port_conflict(&web, std::slice::from_ref(&api)).unwrap();
        assert_eq!(
            msg,
            "service default/web port 8080/TCP is already taken by service prod/api: ports are \
             cluster-wide in shoal (as published ports in Docker Swarm); choose another port or \
             nodePort"
        );
        // Re-applying the same Service is no conflict.
        assert_eq!(port_conflict(&web, std::slice::from_ref(&web)), None);
        // Another protocol on the same number is free.
        let udp = service(json!({"metadata": {"name": "dns", "namespace": "default"},
            "spec": {"ports": [{"port": 8080, "protocol": "UDP"}]}}));
        assert_eq!(port_conflict(&udp, &[web.clone(), api.clone()]), None);
        // A nodePort frees the port number and takes its own.
        let np = service(json!({"metadata": {"name": "np", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"port": 8080, "nodePort": 30080}]}}));
        assert_eq!(port_conflict(&np, std::slice::from_ref(&api)), None);
        let np2 = service(json!({"metadata": {"name": "np2", "namespace": "default"},
            "spec": {"ports": [{"port": 30080}]}}));
        let msg = port_conflict(&np2, &[np]).unwrap();
        assert!(msg.contains("service default/np2 port 30080/TCP"), "{msg}");
        assert!(msg.contains("service default/np:"), "{msg}");
        // Headless Services publish nothing.
        let headless = service(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 8080}]}}));
        assert_eq!(port_conflict(&headless, std::slice::from_ref(&api)), None);
        assert_eq!(port_conflict(&api, &[headless]), None);
    }

    #[test]
    fn a_node_port_conflict_names_the_field() {
        let a = service(json!({"metadata": {"name": "a", "namespace": "default"},
            "spec": {"ports": [{"port": 30080}]}}));
        let b = service(json!({"metadata": {"name": "b", "namespace": "default"},
            "spec": {"ports": [{"port": 80, "nodePort": 30080}]}}));
        let msg = port_conflict(&b, &[a]).unwrap();
        assert!(
            msg.starts_with(
                "service default/b nodePort 30080/TCP is already taken by service default/a"
            ),
            "{msg}"
        );
    }
}
