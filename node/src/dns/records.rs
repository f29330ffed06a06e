//! The cluster zone, built from Services, pods and membership (pure), and the endpoints of each
//! Service (which the API shows too).
//!
//! Names (`<domain>` is the cluster domain, `shoal.home.arpa` by default):
//! - `<svc>.<ns>.svc.<domain>`: A/AAAA. A Service with a selector answers the addresses of the
//!   alive nodes that have a ready endpoint (every node forwards the Service's port to a ready
//!   endpoint, so a plain A lookup and the port reach it); a headless Service
//!   (`clusterIP: None`) answers, per ready pod, the address of the node it runs on.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV, one per Service port (`<port>` is the
//!   port's name, or its number when unnamed), with the port to use (the nodePort where set,
//!   else the port). Headless: one per ready pod, targeting the pod's own name.
//! - `<hostname>.<subdomain>.<ns>.svc.<domain>`: a ready pod whose `subdomain` names a
//!   headless Service in its namespace (every StatefulSet pod: hostname = its name, subdomain
//!   = `serviceName`): the address of its node.
//!
//! A pod counts once a node that membership hears (alive or suspect) reports it Ready; a dead
//! node's pods and unready pods leave the answers at once.
//!
//! Two views: the LAN's (above), and this node's pods' ([`LocalPods`]), which must reach what
//! the answer names from inside a container. There a Service name answers the gateway of this
//! node's pod network (the node's own address on the bridge, where its proxies listen too)
//! whenever the Service has a ready endpoint anywhere: the proxy forwards to another node when
//! none is local. Headless Services and pod names keep the LAN's answers, except that this
//! node's own address becomes the gateway. Limit: a pod reaches another node's address only
//! where the host routes it for containers (a real LAN does; a testnet's 127.x addresses are
//! unreachable from any container), so headless answers for pods on other nodes serve pods
//! only on a real network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use shoal_protocol::kinds::{Protocol, Service};

use super::zone::{RecordData, Records, Zone};
use crate::runtime::PodNetwork;

/// This node as its own pods reach it: what the pods view is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPods {
    /// This node's address as membership knows it (the LAN view's answers name it).
    pub node_address: IpAddr,
    /// Its pod network: pods query from its subnet and reach the node at its gateway.
    pub network: PodNetwork,
    /// Each Service's own address on that network (`namespace/name` → address), where the
    /// proxies serve it on its own ports (see `proxy::addresses`); a Service without one is
    /// answered with the gateway.
    pub service_addresses: BTreeMap<String, IpAddr>,
}

/// A pod as the zone sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The node the pod runs on ("" when none).
    pub node: String,
    /// Reported Ready by a node membership hears.
    pub ready: bool,
    /// The pod's own address on its node's network, when reported.
    pub pod_ip: Option<String>,
    /// Its address is in the cluster's pod range, which every node routes (`podnet`): DNS
    /// names it by that address rather than by its node's.
    pub routed: bool,
    /// Its containers' named ports (name → number), which a Service's `targetPort` may name.
    pub named_ports: BTreeMap<String, u16>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
}

impl PodEntry {
    /// The pod's own address, when the pod network routes it.
    pub fn address(&self) -> Option<IpAddr> {
        if !self.routed {
            return None;
        }
        self.pod_ip.as_deref()?.parse().ok()
    }
}

/// One endpoint of a Service: a pod its selector matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub pod: String,
    pub node: String,
    /// The address of the pod's node, when membership knows it.
    pub node_address: Option<IpAddr>,
    pub pod_ip: Option<String>,
    /// The pod's own address when the pod network routes it (see [`PodEntry::routed`]).
    pub pod_address: Option<IpAddr>,
    pub ready: bool,
}

impl Endpoint {
    /// Where DNS sends a client for this pod: its own address where routed, else its node's.
    pub fn address(&self) -> Option<IpAddr> {
        self.pod_address.or(self.node_address)
    }
}

/// The endpoints of `svc`: the pods of its namespace that its selector matches (none without
/// a selector), ready ones first, then by name. `nodes`: the address of each node membership
/// hears.
pub fn endpoints(
    svc: &Service,
    pods: &[PodEntry],
    nodes: &BTreeMap<String, IpAddr>,
) -> Vec<Endpoint> {
    let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
    if svc.spec.selector.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Endpoint> = pods
        .iter()
        .filter(|p| p.namespace == namespace)
        .filter(|p| {
            svc.spec
                .selector
                .iter()
                .all(|(k, v)| p.labels.get(k) == Some(v))
        })
        .map(|p| Endpoint {
            pod: p.name.clone(),
            node: p.node.clone(),
            node_address: nodes.get(&p.node).copied(),
            pod_ip: p.pod_ip.clone(),
            pod_address: p.address(),
            ready: p.ready && nodes.contains_key(&p.node),
        })
        .collect();
    out.sort_by(|a, b| (!a.ready, &a.pod).cmp(&(!b.ready, &b.pod)));
    out
}

fn proto_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "_tcp",
        Protocol::Udp => "_udp",
        Protocol::Sctp => "_sctp",
    }
}

/// The name of a Service: `<svc>.<ns>.svc.<domain>`.
pub fn service_name(svc: &str, namespace: &str, domain: &str) -> String {
    format!("{svc}.{namespace}.svc.{domain}").to_ascii_lowercase()
}

/// Builds the zone. `nodes`: the address of each node membership hears; `ns_addresses`: this
/// node's DNS addresses (NS glue); `local`: this node's pod network once known (until then the
/// pods view is the LAN's).
pub fn build(
    domain: &str,
    ttl: u32,
    services: &[Service],
    pods: &[PodEntry],
    nodes: &BTreeMap<String, IpAddr>,
    ns_addresses: Vec<IpAddr>,
    local: Option<&LocalPods>,
) -> Zone {
    let mut zone = Zone::empty(domain, ttl);
    zone.ns_addresses = ns_addresses;
    let domain = zone.domain.clone();
    let mut records = Records::new();
    let headless: BTreeSet<(String, String)> = services
        .iter()
        .filter(|s| s.spec.is_headless())
        .map(|s| {
            (
                s.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                s.metadata.name.clone(),
            )
        })
        .collect();

    // The names of the Services the proxies forward (not headless).
    let mut forwarded: BTreeSet<String> = BTreeSet::new();
    let node_ports = crate::proxy::table::node_ports(services);
    // For this node's pods: the Services' own addresses by name, and the SRV records that
    // name them, with the Service's own port.
    let mut own_addresses: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut own_ports: BTreeMap<String, u16> = BTreeMap::new();
    for svc in services {
        let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
        let name = service_name(&svc.metadata.name, namespace, &domain);
        let id = format!("{namespace}/{}", svc.metadata.name);
        let own_address = local.and_then(|l| l.service_addresses.get(&id).copied());
        if !svc.spec.is_headless() {
            forwarded.insert(name.clone());
            if let Some(ip) = own_address {
                own_addresses.insert(name.clone(), ip);
            }
        }
        let ready: Vec<Endpoint> = endpoints(svc, pods, nodes)
            .into_iter()
            .filter(|e| e.ready && e.node_address.is_some())
            .collect();
        // A Service with a selector answers the nodes that forward it; a headless one each
        // pod, by its own address where the pod network routes it.
        let addresses: BTreeSet<IpAddr> = if svc.spec.is_headless() {
            ready.iter().filter_map(Endpoint::address).collect()
        } else {
            ready.iter().filter_map(|e| e.node_address).collect()
        };
        records
            .entry(name.clone())
            .or_default()
            .extend(addresses.iter().copied().map(RecordData::Address));
        for (index, port) in svc.spec.ports.iter().enumerate() {
            let label = if port.name.is_empty() {
                port.port.to_string()
            } else {
                port.name.to_ascii_lowercase()
            };
            let srv_name = format!("_{label}.{}.{name}", proto_label(port.protocol));
            // The node-facing port: what every node's address serves the port on.
            let number = node_ports
                .get(&id, index)
                .unwrap_or_else(|| u16::try_from(port.node_port.unwrap_or(port.port)).unwrap_or(0));
            if own_address.is_some()
                && let Ok(own) = u16::try_from(port.port)
            {
                own_ports.insert(srv_name.clone(), own);
            }
            let entry = records.entry(srv_name).or_default();
            if svc.spec.is_headless() {
                for e in &ready {
                    // A pod reached at its own address serves the container's port.
                    let port = match e.pod_address {
                        Some(_) => target_port(port, pods, namespace, &e.pod).unwrap_or(number),
                        None => number,
                    };
                    entry.push(RecordData::Srv {
                        priority: 0,
                        weight: 10,
                        port,
                        target: format!("{}.{name}", pod_label(pods, namespace, &e.pod)),
                    });
                }
            } else if !addresses.is_empty() {
                entry.push(RecordData::Srv {
                    priority: 0,
                    weight: 10,
                    port: number,
                    target: name.clone(),
                });
            }
        }
    }

    // Pods of headless Services by their own names.
    for p in pods {
        let Some(sub) = &p.subdomain else { continue };
        if !headless.contains(&(p.namespace.clone(), sub.clone())) {
            continue;
        }
        let host = p.hostname.clone().unwrap_or_else(|| p.name.clone());
        let name = format!(
            "{}.{}",
            host.to_ascii_lowercase(),
            service_name(sub, &p.namespace, &domain)
        );
        let entry = records.entry(name).or_default();
        if p.ready
            && let Some(addr) = nodes.get(&p.node)
        {
            entry.push(RecordData::Address(p.address().unwrap_or(*addr)));
        }
    }

    for list in records.values_mut() {
        list.sort();
        list.dedup();
    }
    zone.pods = match local {
        Some(l) => {
            let subnet = l.network.subnet;
            zone.pod_networks = vec![(subnet.addr, subnet.prefix)];
            let mut view = pods_view(
                &records,
                &forwarded,
                &own_addresses,
                l.node_address,
                l.network.gateway,
            );
            for (srv_name, own) in &own_ports {
                for d in view.get_mut(srv_name).into_iter().flatten() {
                    if let RecordData::Srv { port, .. } = d {
                        *port = *own;
                    }
                }
            }
            view
        }
        None => records.clone(),
    };
    zone.lan = records;
    zone.serial = serial_of(&[&zone.lan, &zone.pods]);
    zone
}

/// The pods view from the LAN's: each name of `forwarded` (Services the proxies forward) that
/// has an address answers the Service's own address (`own`, by name) where it has one, else
/// `gateway`, alone; elsewhere `node_address` (this node's) becomes `gateway`. SRV records
/// stay: their targets are names of the same view.
pub fn pods_view(
    lan: &Records,
    forwarded: &BTreeSet<String>,
    own: &BTreeMap<String, IpAddr>,
    node_address: IpAddr,
    gateway: IpAddr,
) -> Records {
    lan.iter()
        .map(|(name, list)| {
            let is_address = |d: &RecordData| matches!(d, RecordData::Address(_));
            let mut out: Vec<RecordData> = if forwarded.contains(name) {
                let mut kept: Vec<RecordData> =
                    list.iter().filter(|d| !is_address(d)).cloned().collect();
                if list.iter().any(is_address) {
                    kept.push(RecordData::Address(
                        own.get(name).copied().unwrap_or(gateway),
                    ));
                }
                kept
            } else {
                list.iter()
                    .map(|d| match d {
                        RecordData::Address(ip) if ip.to_canonical() == node_address => {
                            RecordData::Address(gateway)
                        }
                        other => other.clone(),
                    })
                    .collect()
            };
            out.sort();
            out.dedup();
            (name.clone(), out)
        })
        .collect()
}

/// The container port a Service port reaches on `pod`: its `targetPort` as a number, or the
/// pod's port of that name (`None` when the pod has none).
fn target_port(
    port: &shoal_protocol::kinds::ServicePort,
    pods: &[PodEntry],
    namespace: &str,
    pod: &str,
) -> Option<u16> {
    if let Some(n) = port.target_port.as_int() {
        return u16::try_from(n).ok();
    }
    let name = port.target_port.as_str()?;
    pods.iter()
        .find(|p| p.namespace == namespace && p.name == pod)?
        .named_ports
        .get(name)
        .copied()
}

/// The label a headless Service's SRV targets for a pod: its hostname, else its name.
fn pod_label(pods: &[PodEntry], namespace: &str, pod: &str) -> String {
    pods.iter()
        .find(|p| p.namespace == namespace && p.name == pod)
        .and_then(|p| p.hostname.clone())
        .unwrap_or_else(|| pod.to_string())
        .to_ascii_lowercase()
}

/// A serial that changes when the records of any view do (FNV-1a over their text), never 0.
fn serial_of(views: &[&Records]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, records) in views.iter().enumerate() {
        for (name, list) in records.iter() {
            let text = format!("{i}{name}{list:?}");
            for b in text.bytes() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
        }
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;
    use shoal_protocol::{Kind, Resource};

    use super::*;

    fn service(v: serde_json::Value) -> Service {
        match Resource::from_value(Kind::Service, v).unwrap() {
            Resource::Service(s) => s,
            _ => unreachable!(),
        }
    }

    fn pod(name: &str, node: &str, ready: bool) -> PodEntry {
        PodEntry {
            namespace: "default".into(),
            name: name.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            node: node.into(),
            ready,
            pod_ip: None,
            routed: false,
            named_ports: BTreeMap::new(),
            hostname: None,
            subdomain: None,
        }
    }

    fn nodes() -> BTreeMap<String, IpAddr> {
        [
            ("n1".to_string(), "127.0.0.11".parse().unwrap()),
            ("n2".to_string(), "127.0.0.12".parse().unwrap()),
        ]
        .into()
    }

    const D: &str = "shoal.home.arpa";

    fn web() -> Service {
        service(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 8080}, {"port": 53, "protocol": "UDP"}]}}))
    }

    fn addr(s: &str) -> RecordData {
        RecordData::Address(s.parse().unwrap())
    }

    #[test]
    fn a_service_answers_the_nodes_with_ready_endpoints() {
        let pods = vec![
            pod("web-0", "n1", true),
            pod("web-1", "n1", true),
            pod("web-2", "n2", false),
            pod("web-3", "n3", true), // n3 is not heard: left out
        ];
        let z = build(D, 5, &[web()], &pods, &nodes(), vec![], None);
        assert_eq!(
            z.lan.get("web.default.svc.shoal.home.arpa"),
            Some(&vec![addr("127.0.0.11")])
        );
        assert_eq!(
            z.lan.get("_http._tcp.web.default.svc.shoal.home.arpa"),
            Some(&vec![RecordData::Srv {
                priority: 0,
                weight: 10,
                port: 8080,
                target: "web.default.svc.shoal.home.arpa".into()
            }])
        );
        assert!(
            z.lan
                .contains_key("_53._udp.web.default.svc.shoal.home.arpa")
        );
        // web-2 becomes ready: n2 joins the answer, and the serial moves.
        let mut ready = pods.clone();
        ready[2].ready = true;
        let z2 = build(D, 5, &[web()], &ready, &nodes(), vec![], None);
        assert_eq!(
            z2.lan.get("web.default.svc.shoal.home.arpa"),
            Some(&vec![addr("127.0.0.11"), addr("127.0.0.12")])
        );
        assert_ne!(z.serial, z2.serial);
    }

    #[test]
    fn a_service_without_ready_endpoints_exists_with_no_address() {
        let z = build(
            D,
            5,
            &[web()],
            &[pod("web-0", "n1", false)],
            &nodes(),
            vec![],
            None,
        );
        assert_eq!(z.lan.get("web.default.svc.shoal.home.arpa"), Some(&vec![]));
    }

    #[test]
    fn headless_services_answer_pods_and_their_names() {
        let db = service(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                     "ports": [{"name": "pg", "port": 5432}]}}));
        let mut p0 = pod("db-0", "n1", true);
        p0.hostname = Some("db-0".into());
        p0.subdomain = Some("db".into());
        let mut p1 = pod("db-1", "n2", true);
        p1.hostname = Some("db-1".into());
        p1.subdomain = Some("db".into());
        let mut p2 = pod("db-2", "n2", false);
        p2.hostname = Some("db-2".into());
        p2.subdomain = Some("db".into());
        let z = build(D, 5, &[db], &[p0, p1, p2], &nodes(), vec![], None);
        assert_eq!(
            z.lan.get("db-0.db.default.svc.shoal.home.arpa"),
            Some(&vec![addr("127.0.0.11")])
        );
        assert_eq!(
            z.lan.get("db-1.db.default.svc.shoal.home.arpa"),
            Some(&vec![addr("127.0.0.12")])
        );
        // Not ready: the name exists without an address.
        assert_eq!(
            z.lan.get("db-2.db.default.svc.shoal.home.arpa"),
            Some(&vec![])
        );
        let srv = z
            .lan
            .get("_pg._tcp.db.default.svc.shoal.home.arpa")
            .unwrap();
        assert_eq!(srv.len(), 2);
        assert!(srv.contains(&RecordData::Srv {
            priority: 0,
            weight: 10,
            port: 5432,
            target: "db-1.db.default.svc.shoal.home.arpa".into()
        }));
    }

    #[test]
    fn routed_pods_are_answered_by_their_own_addresses_and_container_ports() {
        let db = service(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                     "ports": [{"name": "pg", "port": 15432, "targetPort": "pg"},
                               {"name": "metrics", "port": 9100, "targetPort": 9187}]}}));
        let mut pods = vec![
            pod("db-0", "n1", true),
            pod("db-1", "n2", true),
            pod("db-2", "n2", true),
        ];
        for (p, ip) in pods
            .iter_mut()
            .zip(["10.42.1.2", "10.42.2.2", "172.18.0.9"])
        {
            p.hostname = Some(p.name.clone());
            p.subdomain = Some("db".into());
            p.pod_ip = Some(ip.into());
            p.named_ports = [("pg".to_string(), 5432)].into();
        }
        // db-2's address is outside the pod range (a network made before the node had a
        // subnet): it is answered by its node's address and the Service's port.
        pods[0].routed = true;
        pods[1].routed = true;
        let z = build(D, 5, &[db], &pods, &nodes(), vec![], Some(&local_n1()));
        for view in [&z.lan, &z.pods] {
            assert_eq!(
                view.get("db.default.svc.shoal.home.arpa"),
                Some(&vec![
                    addr("10.42.1.2"),
                    addr("10.42.2.2"),
                    addr("127.0.0.12")
                ])
            );
            assert_eq!(
                view.get("db-1.db.default.svc.shoal.home.arpa"),
                Some(&vec![addr("10.42.2.2")])
            );
            let srv = view.get("_pg._tcp.db.default.svc.shoal.home.arpa").unwrap();
            let port_of = |target: &str| {
                srv.iter().find_map(|d| match d {
                    RecordData::Srv {
                        port, target: t, ..
                    } if t.starts_with(target) => Some(*port),
                    _ => None,
                })
            };
            assert_eq!(
                port_of("db-0."),
                Some(5432),
                "the container's port named pg"
            );
            assert_eq!(
                port_of("db-2."),
                Some(15432),
                "the Service's port on the node"
            );
            let metrics = view
                .get("_metrics._tcp.db.default.svc.shoal.home.arpa")
                .unwrap();
            assert!(metrics.iter().any(|d| matches!(d,
                RecordData::Srv { port: 9187, target, .. } if target.starts_with("db-1."))));
        }
    }

    fn local_n1() -> LocalPods {
        LocalPods {
            node_address: "127.0.0.11".parse().unwrap(),
            network: PodNetwork {
                gateway: "172.18.0.1".parse().unwrap(),
                subnet: crate::runtime::Subnet::parse("172.18.0.0/16").unwrap(),
                ip_range: None,
            },
            service_addresses: BTreeMap::new(),
        }
    }

    fn headless_db(pods: &mut [PodEntry]) -> Service {
        for p in pods.iter_mut() {
            p.hostname = Some(p.name.clone());
            p.subdomain = Some("db".into());
        }
        service(json!({"metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                     "ports": [{"name": "pg", "port": 5432}]}}))
    }

    #[test]
    fn pods_get_the_gateway_for_services_with_a_ready_endpoint_anywhere() {
        let local = local_n1();
        let web_name = "web.default.svc.shoal.home.arpa";
        // Cases: (pods of web, the LAN's answer, the pods' answer).
        let cases: [(Vec<PodEntry>, Vec<RecordData>, Vec<RecordData>); 4] = [
            // Ready here only.
            (
                vec![pod("web-0", "n1", true)],
                vec![addr("127.0.0.11")],
                vec![addr("172.18.0.1")],
            ),
            // Ready on another node only: still this node's gateway (its proxy forwards).
            (
                vec![pod("web-0", "n2", true)],
                vec![addr("127.0.0.12")],
                vec![addr("172.18.0.1")],
            ),
            // Both: one address, the gateway.
            (
                vec![pod("web-0", "n1", true), pod("web-1", "n2", true)],
                vec![addr("127.0.0.11"), addr("127.0.0.12")],
                vec![addr("172.18.0.1")],
            ),
            // None ready: no address in either view.
            (vec![pod("web-0", "n2", false)], vec![], vec![]),
        ];
        for (pods, lan, want) in cases {
            let z = build(D, 5, &[web()], &pods, &nodes(), vec![], Some(&local));
            assert_eq!(z.lan.get(web_name), Some(&lan), "{pods:?}");
            assert_eq!(z.pods.get(web_name), Some(&want), "{pods:?}");
            // SRV records are alike: their target resolves in each view.
            let srv = "_http._tcp.web.default.svc.shoal.home.arpa";
            assert_eq!(z.pods.get(srv), z.lan.get(srv));
            assert_eq!(z.pod_networks, vec![("172.18.0.0".parse().unwrap(), 16)]);
            // Pods query from the subnet and get their view; the LAN gets its own.
            assert_eq!(z.view("172.18.0.5".parse().unwrap()), &z.pods);
            assert_eq!(z.view("127.0.0.1".parse().unwrap()), &z.lan);
        }
    }

    #[test]
    fn pods_get_a_services_own_address_and_port_where_it_has_one() {
        let mut local = local_n1();
        local
            .service_addresses
            .insert("default/web".into(), "172.18.128.7".parse().unwrap());
        // Another Service on web's port number: it gets an automatic node-facing port, which
        // the LAN's SRV record names, while pods keep the port number at its own address.
        let mut other = web();
        other.metadata.name = "other".into();
        other.metadata.creation_timestamp = Some("2026-11-26T10:00:00Z".into());
        let mut first = web();
        first.metadata.creation_timestamp = Some("2026-11-26T09:00:00Z".into());
        let services = [first, other];
        let pods = [pod("web-0", "n2", true)];
        let z = build(D, 5, &services, &pods, &nodes(), vec![], Some(&local));
        assert_eq!(
            z.pods.get("web.default.svc.shoal.home.arpa"),
            Some(&vec![addr("172.18.128.7")])
        );
        // Without an own address: the gateway.
        assert_eq!(
            z.pods.get("other.default.svc.shoal.home.arpa"),
            Some(&vec![addr("172.18.0.1")])
        );
        let srv_port = |records: &Records, name: &str| match records.get(name).map(Vec::as_slice) {
            Some([RecordData::Srv { port, .. }]) => *port,
            other => panic!("{name}: {other:?}"),
        };
        let (web_srv, other_srv) = (
            "_http._tcp.web.default.svc.shoal.home.arpa",
            "_http._tcp.other.default.svc.shoal.home.arpa",
        );
        let auto = crate::proxy::table::node_ports(&services)
            .get("default/other", 0)
            .unwrap();
        assert_ne!(auto, 8080);
        assert_eq!(srv_port(&z.lan, web_srv), 8080);
        assert_eq!(srv_port(&z.lan, other_srv), auto);
        assert_eq!(srv_port(&z.pods, web_srv), 8080);
        // The pods reach `other` at the gateway, where it is on its node-facing port.
        assert_eq!(srv_port(&z.pods, other_srv), auto);
    }

    #[test]
    fn pods_get_headless_answers_with_this_nodes_address_as_the_gateway() {
        let mut pods = vec![pod("db-0", "n1", true), pod("db-1", "n2", true)];
        let db = headless_db(&mut pods);
        let z = build(D, 5, &[db], &pods, &nodes(), vec![], Some(&local_n1()));
        assert_eq!(
            z.pods.get("db.default.svc.shoal.home.arpa"),
            Some(&vec![addr("127.0.0.12"), addr("172.18.0.1")])
        );
        assert_eq!(
            z.pods.get("db-0.db.default.svc.shoal.home.arpa"),
            Some(&vec![addr("172.18.0.1")])
        );
        assert_eq!(
            z.pods.get("db-1.db.default.svc.shoal.home.arpa"),
            Some(&vec![addr("127.0.0.12")])
        );
        // The LAN's answers are untouched.
        assert_eq!(
            z.lan.get("db-0.db.default.svc.shoal.home.arpa"),
            Some(&vec![addr("127.0.0.11")])
        );
        // Every name exists in both views.
        assert!(z.lan.keys().eq(z.pods.keys()));
    }

    #[test]
    fn without_a_pod_network_the_pods_view_is_the_lans() {
        let pods = vec![pod("web-0", "n1", true)];
        let z = build(D, 5, &[web()], &pods, &nodes(), vec![], None);
        assert_eq!(z.pods, z.lan);
        assert!(z.pod_networks.is_empty());
        // Learning the network changes the zone and its serial.
        let z2 = build(D, 5, &[web()], &pods, &nodes(), vec![], Some(&local_n1()));
        assert_ne!(z2.pods, z.pods);
        assert_ne!(z2.serial, z.serial);
        assert_eq!(z2.lan, z.lan);
    }

    #[test]
    fn endpoints_follow_the_selector_and_the_namespace() {
        let mut other = pod("web-9", "n1", true);
        other.namespace = "prod".into();
        let mut unlabelled = pod("api-0", "n1", true);
        unlabelled.labels.clear();
        let e = endpoints(
            &web(),
            &[
                pod("web-1", "n2", false),
                pod("web-0", "n1", true),
                other,
                unlabelled,
            ],
            &nodes(),
        );
        let names: Vec<(&str, bool)> = e.iter().map(|e| (e.pod.as_str(), e.ready)).collect();
        assert_eq!(names, vec![("web-0", true), ("web-1", false)]);
    }
}
