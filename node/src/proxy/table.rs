//! The routing table of the node proxies (pure): from the Services, the pods, their specs and
//! membership, which ports this node listens on and where each one forwards.
//!
//! Every port a Service publishes (its `nodePort` where set, else its `port`) is a
//! [`ListenKey`]; its [`Route`] lists the ready endpoints on this node (`podIP:targetPort`,
//! reachable from this host only) and the addresses of the other heard nodes with ready
//! endpoints, whose proxies listen on the same port. [`Route::candidates`] orders them: local
//! ones first, round-robin; the other nodes only for clients that are no cluster node, so that
//! a connection crosses at most one hop between proxies and never loops.
//!
//! Each port is open on the node's advertise address (for the LAN and the other nodes) and,
//! once the agent has made the pod network, on its gateway (for this node's pods, which cannot
//! reach the advertise address wherever that is loopback): [`Table::listeners`]. Connections
//! at the gateway come from pods, never from nodes, so they may go on to another node.
//!
//! Ports are cluster-wide, like Docker Swarm's published ports: [`port_conflict`] is the check
//! the API makes at apply time; should two Services still claim a port (applied concurrently on
//! two partitioned nodes), the table serves the first by `namespace/name` and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use shoal_protocol::intstr::IntOrString;
use shoal_protocol::kinds::{PodSpec, Protocol, Service, ServicePort};

use crate::dns::records::{PodEntry, endpoints};
use crate::pods::pod_key;

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
    /// Where to forward a connection to port `port`, in the order to try: the local endpoints,
    /// then (unless the client is a cluster node, `from_node`) the other nodes' proxies, each
    /// list rotated by `turn` for round-robin. Empty: refuse the connection.
    pub fn candidates(&self, port: u16, from_node: bool, turn: usize) -> Vec<Target> {
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
    pub routes: BTreeMap<ListenKey, Route>,
    /// The gateway of this node's pod network, once known: every port is open there too.
    pub gateway: Option<IpAddr>,
    /// The addresses of the other nodes membership hears (without this node's own): their
    /// connections are forwarded to local endpoints only.
    pub nodes: BTreeSet<IpAddr>,
    /// What is not served and why (SCTP ports, ports out of range, ports two Services claim),
    /// for the log.
    pub warnings: Vec<String>,
}

impl Table {
    /// Whether `ip` is another cluster node's address.
    pub fn is_node(&self, ip: IpAddr) -> bool {
        self.nodes.contains(&ip.to_canonical())
    }

    /// Every socket to open: each port on `address` (the advertise address) and on the pod
    /// network's gateway when known.
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
        out
    }

    /// Whether a client at `peer` of `listener` counts as a cluster node (whose connections
    /// go to local endpoints only): never at the gateway, where only pods connect.
    pub fn from_node(&self, listener_pods: bool, peer: IpAddr) -> bool {
        !listener_pods && self.is_node(peer)
    }
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
    /// This node's name and advertise address.
    pub node_name: &'a str,
    pub address: IpAddr,
    /// This node's pod network gateway, once the agent knows it.
    pub gateway: Option<IpAddr>,
}

/// Builds the table. Headless Services are not forwarded (DNS answers their pods directly).
pub fn build(inputs: &Inputs<'_>) -> Table {
    // This node is always alive to itself, whatever membership says yet.
    let mut nodes = inputs.nodes.clone();
    nodes
        .entry(inputs.node_name.to_string())
        .or_insert(inputs.address);
    let mut table = Table {
        nodes: nodes
            .iter()
            .filter(|(name, ip)| *name != inputs.node_name && **ip != inputs.address)
            .map(|(_, ip)| ip.to_canonical())
            .collect(),
        gateway: inputs.gateway,
        ..Table::default()
    };
    let mut services: Vec<&Service> = inputs
        .services
        .iter()
        .filter(|s| !s.spec.is_headless())
        .collect();
    services.sort_by_key(|s| service_id(s));

    for svc in services {
        let id = service_id(svc);
        let eps = endpoints(svc, inputs.pods, &nodes);
        for port in &svc.spec.ports {
            let Some(transport) = Transport::of(port.protocol) else {
                table.warnings.push(format!(
                    "service {id} port {}/SCTP is not forwarded: the node proxies forward TCP \
                     and UDP only",
                    port.port
                ));
                continue;
            };
            let Some(number) = node_facing_port(port) else {
                table.warnings.push(format!(
                    "service {id} port {} is out of range 1-65535; not forwarded",
                    port.node_port.unwrap_or(port.port)
                ));
                continue;
            };
            let key = ListenKey {
                port: number,
                transport,
            };
            if let Some(owner) = table.routes.get(&key) {
                if owner.service != id {
                    table.warnings.push(format!(
                        "service {id} port {key} is already taken by service {}; not forwarded",
                        owner.service
                    ));
                }
                continue;
            }
            let mut route = Route {
                service: id.clone(),
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
            table.routes.insert(key, route);
        }
    }
    table
}

fn svc_namespace(svc: &Service) -> String {
    svc.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

/// `namespace/name`.
fn service_id(svc: &Service) -> String {
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
            node_name: ME,
            address: ip("10.0.0.1"),
            gateway: None,
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
            .map(|turn| route.candidates(8080, false, turn)[0].addr)
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
        let all = route.candidates(8080, false, 1);
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
            .map(|turn| route.candidates(30080, false, turn)[0].addr)
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
        assert!(route.candidates(8080, false, 0).is_empty());
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
        assert!(route.candidates(8080, true, 0).is_empty());
        assert_eq!(route.candidates(8080, false, 0).len(), 1);

        let both = [
            pod("web-0", "n1", true, "172.18.0.2"),
            pod("web-1", "n2", true, "172.19.0.2"),
        ];
        let t = table_of(&[svc], &both, &BTreeMap::new(), &nodes());
        assert_eq!(
            t.routes[&TCP8080].candidates(8080, true, 0),
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
        let (specs, heard) = (BTreeMap::new(), nodes());
        let inputs = |gateway| Inputs {
            services: std::slice::from_ref(&svc),
            pods: &pods,
            specs: &specs,
            nodes: &heard,
            node_name: ME,
            address: ip("10.0.0.1"),
            gateway,
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
            route.candidates(18080, from_node, 0),
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
            &[clash, headless, svc],
            &[pod("web-0", "n1", true, "172.18.0.2")],
            &BTreeMap::new(),
            &nodes(),
        );
        let keys: Vec<String> = t.routes.keys().map(ToString::to_string).collect();
        assert_eq!(keys, vec!["53/TCP", "53/UDP"]);
        // The first by namespace/name keeps a contested port.
        let udp = &t.routes[&ListenKey {
            port: 53,
            transport: Transport::Udp,
        }];
        assert_eq!(udp.service, "default/web");
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
        assert!(t.warnings.iter().any(|w| w.contains("3868/SCTP")));
        assert!(t.warnings.iter().any(|w| w.contains("prod/other")));
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
