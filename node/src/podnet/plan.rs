//! What the host must hold for the pod network, decided from the claims and membership:
//! a route to every other node's pod subnet, and the node's firewall rules. Pure; `host.rs`
//! carries it out.
//!
//! Route modes: a peer whose LAN address this host reaches directly (`ip route get` names no
//! gateway) is routed to by that address (host-gateway routing, the home-lab case). A peer
//! behind a router is reached through the VXLAN overlay: its subnet is routed over the
//! node's VXLAN device to the peer's tunnel address (the first address of its subnet), whose
//! hardware address is derived from its subnet index, so nothing but the claims and the
//! members' addresses needs to be known. Peers on a loopback address (nodes of one machine,
//! as the light testnet runs them) share the host's bridges and need no route.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use super::subnet::{PodRange, Subnet24};

/// The routing protocol number that marks the node's routes (`ip route ... proto 83`), so
/// that it finds and removes its own and never touches anyone else's.
pub const ROUTE_PROTO: u8 = 83;
/// The VXLAN device of the overlay.
pub const VXLAN_DEVICE: &str = "shoal-vx";
/// The overlay's VXLAN network identifier and UDP port (IANA's).
pub const VXLAN_ID: u32 = 4242;
pub const VXLAN_PORT: u16 = 4789;
/// What the VXLAN encapsulation adds to each packet (outer IPv4, UDP, VXLAN, Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;

/// How this node reaches a peer's pod subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteMode {
    /// Via the peer's LAN address, which this host reaches directly.
    HostGateway,
    /// Through the VXLAN overlay: the peer is behind a router.
    Overlay,
    /// No route: the peer shares this host (a loopback address).
    Local,
}

impl RouteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteMode::HostGateway => "host-gateway",
            RouteMode::Overlay => "vxlan",
            RouteMode::Local => "local",
        }
    }
}

impl fmt::Display for RouteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mode for a peer at `addr`, given what `ip route get addr` answered: the gateway it
/// names, if any. Pure.
pub fn mode_for(addr: IpAddr, gateway: Option<IpAddr>) -> RouteMode {
    if addr.is_loopback() || addr.is_unspecified() {
        RouteMode::Local
    } else if gateway.is_some() {
        RouteMode::Overlay
    } else {
        RouteMode::HostGateway
    }
}

/// One route to a peer's pod subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `ip route replace SUBNET via PEER proto 83`.
    Via { subnet: Subnet24, peer: Ipv4Addr },
    /// Over the overlay: the peer's tunnel address and hardware address sit in the VXLAN
    /// device's neighbour table, its LAN address in its forwarding database, and the subnet
    /// is routed via the tunnel address.
    Overlay {
        subnet: Subnet24,
        index: u32,
        peer: Ipv4Addr,
    },
}

impl Route {
    pub fn subnet(&self) -> Subnet24 {
        match self {
            Route::Via { subnet, .. } | Route::Overlay { subnet, .. } => *subnet,
        }
    }
}

/// A peer as the route plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    pub mode: RouteMode,
}

/// The routes this node must hold: one per peer that membership hears and that holds a
/// subnet, in the peer's mode. `claims`: index → node; `peers`: node → address and mode
/// (this node excluded). A peer with several claims (a moment after it lost a concurrent
/// claim) gets a route for each. Pure.
pub fn routes(
    range: &PodRange,
    claims: &BTreeMap<u32, String>,
    peers: &BTreeMap<String, Peer>,
) -> BTreeSet<Route> {
    let mut out = BTreeSet::new();
    for (index, node) in claims {
        let (Some(peer), Some(subnet)) = (peers.get(node), range.subnet(*index)) else {
            continue;
        };
        let IpAddr::V4(addr) = peer.address else {
            continue;
        };
        match peer.mode {
            RouteMode::HostGateway => {
                out.insert(Route::Via { subnet, peer: addr });
            }
            RouteMode::Overlay => {
                out.insert(Route::Overlay {
                    subnet,
                    index: *index,
                    peer: addr,
                });
            }
            RouteMode::Local => {}
        }
    }
    out
}

/// The overlay's hardware address of the node holding subnet `index`: locally administered,
/// unicast, the index in the last bytes.
pub fn vxlan_mac(index: u32) -> String {
    let b = index.to_be_bytes();
    format!("02:53:48:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
}

/// The overlay's tunnel address of the node holding `subnet`: the subnet's first address,
/// which the engine never gives a container.
pub fn tunnel_address(subnet: Subnet24) -> Ipv4Addr {
    subnet.network()
}

/// One iptables rule: its table, chain, and the rest of its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    /// Put first in the chain (before the engine's own rules), else last.
    pub first: bool,
    pub args: Vec<String>,
}

/// What the node's firewall rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInput {
    pub range: PodRange,
    pub subnet: Subnet24,
    /// The tag in every rule's comment: it finds the node's rules again.
    pub tag: String,
    /// Refused to pod addresses, unless `pods_reach_node_ports`.
    pub api_port: u16,
    pub p2p_port: u16,
    pub pods_reach_node_ports: bool,
}

/// The node's firewall rules (iptables, as the engine's own): pods' traffic to anything
/// outside the pod range is masqueraded, traffic from other nodes' pods is let into this
/// node's bridge (the engine forwards only to published ports otherwise), and pods may not
/// open the node's API and p2p ports. Pure.
pub fn rules(i: &RuleInput) -> Vec<Rule> {
    let (range, subnet) = (i.range.to_string(), i.subnet.to_string());
    // The match, the node's comment, then the target.
    let rule = |table, chain, first, matches: String, target: &str| Rule {
        table,
        chain,
        first,
        args: format!("{matches} -m comment --comment {} {target}", i.tag)
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    };
    let mut out = vec![
        rule(
            "nat",
            "POSTROUTING",
            false,
            format!("-s {subnet} ! -d {range}"),
            "-j MASQUERADE",
        ),
        rule(
            "filter",
            "DOCKER-USER",
            true,
            format!("-s {range} -d {subnet}"),
            "-j ACCEPT",
        ),
    ];
    if !i.pods_reach_node_ports {
        out.push(rule(
            "filter",
            "INPUT",
            true,
            format!(
                "-s {range} -p tcp -m multiport --dports {},{}",
                i.api_port, i.p2p_port
            ),
            "-j REJECT --reject-with tcp-reset",
        ));
        out.push(rule(
            "filter",
            "INPUT",
            true,
            format!("-s {range} -p udp --dport {}", i.p2p_port),
            "-j REJECT",
        ));
    }
    out
}

/// The rules an `iptables -t TABLE -S CHAIN` listing holds that carry a comment starting
/// with `prefix` but not exactly `tag` (a node's rules of an earlier subnet), as argument
/// lists to delete them with (`-D CHAIN ...`). Pure.
pub fn stale_rules(listing: &str, prefix: &str, tag: &str) -> Vec<Vec<String>> {
    commented_rules(listing, |c| c.starts_with(prefix) && c != tag)
}

/// The rules of an `iptables -S CHAIN` listing whose comment `wanted` picks, as the
/// arguments that follow `-D CHAIN` (quotes taken off). Pure.
pub fn commented_rules(listing: &str, wanted: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() != Some(&"-A") {
                return None;
            }
            let at = words.iter().position(|w| *w == "--comment")?;
            let comment = words.get(at + 1)?.trim_matches('"');
            wanted(comment).then(|| {
                words
                    .iter()
                    .skip(2)
                    .map(|w| {
                        if w.starts_with('"') {
                            w.trim_matches('"').to_string()
                        } else {
                            (*w).to_string()
                        }
                    })
                    .collect()
            })
        })
        .collect()
}

/// The gateway in `ip -j route get ADDR`'s answer, if it names one; `None` when it cannot
/// be read. Pure.
pub fn gateway_of(route_get_json: &str) -> Option<Option<IpAddr>> {
    let v: serde_json::Value = serde_json::from_str(route_get_json).ok()?;
    let first = v.as_array()?.first()?;
    Some(
        first
            .get("gateway")
            .and_then(|g| g.as_str())
            .and_then(|g| g.parse().ok()),
    )
}

/// The destinations of `ip -j route show proto 83`'s answer that lie in `range`, with the
/// gateway and device of each. Pure.
pub fn own_routes(json: &str, range: &PodRange) -> Vec<(Subnet24, Option<Ipv4Addr>, String)> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|r| {
            let dst = r.get("dst")?.as_str()?;
            let (addr, prefix) = dst.split_once('/')?;
            if prefix != "24" {
                return None;
            }
            let addr: Ipv4Addr = addr.parse().ok()?;
            let subnet = range.subnet(range.index_of(addr)?)?;
            (subnet.network() == addr).then_some(())?;
            let gateway = r
                .get("gateway")
                .and_then(|g| g.as_str())
                .and_then(|g| g.parse().ok());
            let dev = r.get("dev").and_then(|d| d.as_str()).unwrap_or_default();
            Some((subnet, gateway, dev.to_string()))
        })
        .collect()
}

/// The MTU of pod networks on a LAN of MTU `lan`: room for the overlay's header, whether a
/// pair uses it or not (a node may gain an overlay peer at any time), and never above a
/// standard Ethernet frame (a loopback "LAN" reports 65536).
pub fn pod_mtu(lan: Option<u32>) -> u32 {
    lan.unwrap_or(1500).min(1500) - VXLAN_OVERHEAD
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn range() -> PodRange {
        PodRange::parse("10.42.0.0/16").unwrap()
    }

    #[test]
    fn modes_follow_what_the_kernel_routes() {
        let lan: IpAddr = "192.168.1.12".parse().unwrap();
        let router: IpAddr = "192.168.1.1".parse().unwrap();
        for (addr, gateway, want) in [
            (lan, None, RouteMode::HostGateway),
            (lan, Some(router), RouteMode::Overlay),
            ("127.58.0.2".parse().unwrap(), None, RouteMode::Local),
            ("0.0.0.0".parse().unwrap(), None, RouteMode::Local),
        ] {
            assert_eq!(mode_for(addr, gateway), want, "{addr} via {gateway:?}");
        }
        assert_eq!(
            gateway_of(r#"[{"dst":"10.213.0.12","dev":"eth0","prefsrc":"10.213.0.11"}]"#),
            Some(None)
        );
        assert_eq!(
            gateway_of(r#"[{"dst":"10.214.0.12","gateway":"10.213.0.1","dev":"eth0"}]"#),
            Some(Some("10.213.0.1".parse().unwrap()))
        );
        assert_eq!(gateway_of("not json"), None);
    }

    #[test]
    fn routes_go_to_heard_peers_with_a_subnet_in_their_mode() {
        let claims: BTreeMap<u32, String> = [
            (1, "a"),
            (2, "b"),
            (3, "c"),
            (4, "gone"),
            (5, "local"),
            (6, "b"),
        ]
        .into_iter()
        .map(|(i, n)| (i, n.to_string()))
        .collect();
        let peer = |a: &str, mode| Peer {
            address: a.parse().unwrap(),
            mode,
        };
        let peers: BTreeMap<String, Peer> = [
            ("b", peer("192.168.1.12", RouteMode::HostGateway)),
            ("c", peer("192.168.2.13", RouteMode::Overlay)),
            ("local", peer("127.0.0.5", RouteMode::Local)),
            ("nosubnet", peer("192.168.1.14", RouteMode::HostGateway)),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_string(), p))
        .collect();
        let r = range();
        let got: Vec<Route> = routes(&r, &claims, &peers).into_iter().collect();
        let b: Ipv4Addr = "192.168.1.12".parse().unwrap();
        assert_eq!(
            got,
            vec![
                Route::Via {
                    subnet: r.subnet(2).unwrap(),
                    peer: b
                },
                Route::Via {
                    subnet: r.subnet(6).unwrap(),
                    peer: b
                },
                Route::Overlay {
                    subnet: r.subnet(3).unwrap(),
                    index: 3,
                    peer: "192.168.2.13".parse().unwrap()
                },
            ]
        );
        assert!(routes(&r, &claims, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn overlay_addresses_derive_from_the_index() {
        assert_eq!(vxlan_mac(0), "02:53:48:00:00:00");
        assert_eq!(vxlan_mac(258), "02:53:48:00:01:02");
        assert_ne!(vxlan_mac(1), vxlan_mac(2));
        let s = range().subnet(7).unwrap();
        assert_eq!(tunnel_address(s), Ipv4Addr::new(10, 42, 7, 0));
        assert_eq!(pod_mtu(Some(1500)), 1450);
        assert_eq!(pod_mtu(Some(65536)), 1450);
        assert_eq!(pod_mtu(Some(1400)), 1350);
        assert_eq!(pod_mtu(None), 1450);
    }

    #[test]
    fn rules_masquerade_out_of_range_admit_pods_and_guard_node_ports() {
        let input = RuleInput {
            range: range(),
            subnet: range().subnet(3).unwrap(),
            tag: "shoal:n1:3".into(),
            api_port: 7070,
            p2p_port: 7946,
            pods_reach_node_ports: false,
        };
        let got: Vec<String> = rules(&input)
            .iter()
            .map(|r| format!("{} {} {}", r.table, r.chain, r.args.join(" ")))
            .collect();
        let c = "-m comment --comment shoal:n1:3";
        assert_eq!(
            got,
            vec![
                format!("nat POSTROUTING -s 10.42.3.0/24 ! -d 10.42.0.0/16 {c} -j MASQUERADE"),
                format!("filter DOCKER-USER -s 10.42.0.0/16 -d 10.42.3.0/24 {c} -j ACCEPT"),
                format!(
                    "filter INPUT -s 10.42.0.0/16 -p tcp -m multiport --dports 7070,7946 {c} \
                     -j REJECT --reject-with tcp-reset"
                ),
                format!("filter INPUT -s 10.42.0.0/16 -p udp --dport 7946 {c} -j REJECT"),
            ]
        );
        let open = RuleInput {
            pods_reach_node_ports: true,
            ..input
        };
        assert_eq!(rules(&open).len(), 2);
    }

    #[test]
    fn stale_rules_are_the_nodes_other_tags() {
        let listing = "-P INPUT ACCEPT\n\
            -A INPUT -s 10.42.0.0/16 -p udp -m udp --dport 7946 -m comment --comment shoal:n1:3 -j REJECT --reject-with icmp-port-unreachable\n\
            -A INPUT -s 10.42.0.0/16 -p udp -m udp --dport 7946 -m comment --comment \"shoal:n1:9\" -j REJECT --reject-with icmp-port-unreachable\n\
            -A INPUT -s 10.42.0.0/16 -m comment --comment shoal:n12:1 -j REJECT\n\
            -A INPUT -s 1.2.3.4/32 -j DROP\n";
        assert_eq!(
            stale_rules(listing, "shoal:n1:", "shoal:n1:3"),
            vec![
                "-s 10.42.0.0/16 -p udp -m udp --dport 7946 -m comment --comment shoal:n1:9 -j \
                 REJECT --reject-with icmp-port-unreachable"
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            ]
        );
    }

    #[test]
    fn own_routes_are_read_back_within_the_range() {
        let json = r#"[{"dst":"10.42.2.0/24","gateway":"192.168.1.12","dev":"eth0","protocol":"83","flags":[]},
            {"dst":"10.42.3.0/24","gateway":"10.42.3.0","dev":"shoal-vx","flags":["onlink"]},
            {"dst":"10.99.0.0/24","gateway":"192.168.1.12","dev":"eth0"},
            {"dst":"10.42.4.0/23","dev":"eth0"},
            {"dst":"default","gateway":"192.168.1.1","dev":"eth0"}]"#;
        let r = range();
        assert_eq!(
            own_routes(json, &r),
            vec![
                (
                    r.subnet(2).unwrap(),
                    Some("192.168.1.12".parse().unwrap()),
                    "eth0".to_string()
                ),
                (
                    r.subnet(3).unwrap(),
                    Some("10.42.3.0".parse().unwrap()),
                    "shoal-vx".to_string()
                ),
            ]
        );
        assert!(own_routes("", &r).is_empty());
    }
}
