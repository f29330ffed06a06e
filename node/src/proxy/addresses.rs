//! Each Service's own address on this node's pod network, as Kubernetes gives each Service a
//! cluster IP: DNS answers it to this node's pods for the Service's name, and the proxies
//! listen there on the Service's own ports. So two Services that use one port number (the
//! guestbook's `redis-master` and `redis-replica`, both 6379) stay apart for pods, although
//! only one of them can have that number on the nodes' shared addresses (see
//! [`super::table::node_ports`]).
//!
//! The addresses come from the upper half of the pod network's subnet, which the agent keeps
//! out of the engine's allocation when it makes the network (`IPRange` = the lower half; see
//! [`block`]). A network made otherwise gives no block, and pods then reach every Service at
//! the gateway, as before. An address stays with its Service while this process runs
//! ([`assign`]), and sits on the network's bridge (the interface that holds the gateway) for as
//! long as the Service exists: [`Host`] adds and removes them with iproute2's `ip`. An address
//! inside the pod subnet never leaves the host: should it not be up, the bridge finds no
//! neighbour for it, and DNS does not answer it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use crate::runtime::{PodNetwork, Subnet};

/// The addresses Services may take on `network`: the upper half of its IPv4 subnet, without
/// the broadcast address, when its allocation range is exactly the lower half. `(first,
/// count)`.
pub fn block(network: &PodNetwork) -> Option<(Ipv4Addr, u32)> {
    let (IpAddr::V4(base), Some(range)) = (network.subnet.addr, network.ip_range) else {
        return None;
    };
    let prefix = u32::from(network.subnet.prefix);
    if !(8..=28).contains(&prefix) || lower_half(&network.subnet) != Some(range) {
        return None;
    }
    let size = 1u32 << (32 - prefix);
    let base = u32::from(base) & !(size - 1);
    Some((Ipv4Addr::from(base + size / 2), size / 2 - 1))
}

/// The lower half of an IPv4 `subnet`: the allocation range the agent gives the engine.
pub fn lower_half(subnet: &Subnet) -> Option<Subnet> {
    let IpAddr::V4(addr) = subnet.addr else {
        return None;
    };
    if !(8..=28).contains(&subnet.prefix) {
        return None;
    }
    let size = 1u32 << (32 - u32::from(subnet.prefix));
    Some(Subnet {
        addr: IpAddr::V4(Ipv4Addr::from(u32::from(addr) & !(size - 1))),
        prefix: subnet.prefix + 1,
    })
}

/// Gives each Service of `services` (`namespace/name`, oldest first) an address of `block`:
/// the one it had in `previous` when still in the block, else a free one from a hash of its
/// name on. Pure; an address never moves while its Service stays.
pub fn assign(
    block: Option<(Ipv4Addr, u32)>,
    services: &[String],
    previous: &BTreeMap<String, IpAddr>,
) -> BTreeMap<String, IpAddr> {
    let Some((first, count)) = block else {
        return BTreeMap::new();
    };
    let inside = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => (u32::from(*v4).wrapping_sub(u32::from(first))) < count,
        IpAddr::V6(_) => false,
    };
    let mut out: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut used: BTreeSet<IpAddr> = BTreeSet::new();
    for id in services {
        if let Some(ip) = previous.get(id).filter(|ip| inside(ip))
            && used.insert(*ip)
        {
            out.insert(id.clone(), *ip);
        }
    }
    for id in services {
        if out.contains_key(id) || used.len() as u64 >= u64::from(count) {
            continue;
        }
        let start = super::table::fnv(id) % count;
        let free = (0..count)
            .map(|i| IpAddr::V4(Ipv4Addr::from(u32::from(first) + (start + i) % count)))
            .find(|ip| !used.contains(ip));
        if let Some(ip) = free {
            used.insert(ip);
            out.insert(id.clone(), ip);
        }
    }
    out
}

/// The interface that holds `gateway` and its IPv4 addresses, from `ip -o -4 addr show`.
pub fn parse_addresses(output: &str, gateway: IpAddr) -> Option<(String, Vec<IpAddr>)> {
    let mut by_interface: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    for line in output.lines() {
        let mut words = line.split_whitespace();
        let (Some(_index), Some(name), Some("inet"), Some(cidr)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some(Ok(ip)) = cidr.split('/').next().map(str::parse::<IpAddr>) else {
            continue;
        };
        by_interface.entry(name).or_default().push(ip);
    }
    by_interface
        .into_iter()
        .find(|(_, ips)| ips.contains(&gateway))
        .map(|(name, ips)| (name.to_string(), ips))
}

/// Why the addresses could not be put on the bridge.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("running `ip {args}`: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("no interface holds the pod network's gateway {0}")]
    NoBridge(IpAddr),
}

/// Puts Service addresses on the pod network's bridge with iproute2 (`ip`), which needs the
/// rights `shoald` has anyway to run containers (root, or CAP_NET_ADMIN).
#[derive(Debug, Default)]
pub struct Host {
    /// The addresses this process put up, to take down at the end.
    up: BTreeSet<IpAddr>,
    /// The bridge they are on.
    bridge: Option<String>,
}

impl Host {
    /// Makes the addresses of `block` on the interface holding `gateway` exactly `wanted`.
    /// Returns those up afterwards (an address that failed is left out and logged).
    pub async fn sync(
        &mut self,
        gateway: IpAddr,
        block: (Ipv4Addr, u32),
        wanted: &BTreeSet<IpAddr>,
    ) -> Result<BTreeSet<IpAddr>, HostError> {
        let listing = run_ip(&["-o", "-4", "addr", "show"]).await?;
        let (bridge, present) =
            parse_addresses(&listing, gateway).ok_or(HostError::NoBridge(gateway))?;
        let (first, count) = block;
        let in_block = |ip: &IpAddr| match ip {
            IpAddr::V4(v4) => (u32::from(*v4).wrapping_sub(u32::from(first))) < count,
            IpAddr::V6(_) => false,
        };
        let present: BTreeSet<IpAddr> = present.into_iter().filter(in_block).collect();
        let mut up = BTreeSet::new();
        for ip in present.difference(wanted) {
            let cidr = format!("{ip}/32");
            if let Err(e) = run_ip(&["addr", "del", &cidr, "dev", &bridge]).await {
                tracing::warn!(error = %e, "removing a Service address failed");
                up.insert(*ip);
            }
        }
        for ip in wanted {
            if present.contains(ip) {
                up.insert(*ip);
                continue;
            }
            let cidr = format!("{ip}/32");
            match run_ip(&["addr", "add", &cidr, "dev", &bridge]).await {
                Ok(_) => {
                    up.insert(*ip);
                }
                Err(e) => tracing::warn!(error = %e, "adding a Service address failed"),
            }
        }
        self.up = up.clone();
        self.bridge = Some(bridge);
        Ok(up)
    }

    /// Takes down the addresses this process put up (at shutdown).
    pub async fn clear(&mut self) {
        let Some(bridge) = self.bridge.take() else {
            return;
        };
        for ip in std::mem::take(&mut self.up) {
            let cidr = format!("{ip}/32");
            if let Err(e) = run_ip(&["addr", "del", &cidr, "dev", &bridge]).await {
                tracing::debug!(error = %e, "removing a Service address at shutdown failed");
            }
        }
    }
}

async fn run_ip(args: &[&str]) -> Result<String, HostError> {
    let joined = args.join(" ");
    let out = tokio::process::Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| HostError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(HostError::Failed {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn network(subnet: &str, range: Option<&str>) -> PodNetwork {
        PodNetwork {
            gateway: "172.18.0.1".parse().unwrap(),
            subnet: Subnet::parse(subnet).unwrap(),
            ip_range: range.map(|r| Subnet::parse(r).unwrap()),
        }
    }

    #[test]
    fn the_block_is_the_upper_half_when_the_engine_keeps_to_the_lower() {
        let n = network("172.18.0.0/16", Some("172.18.0.0/17"));
        assert_eq!(block(&n), Some(("172.18.128.0".parse().unwrap(), 32767)));
        assert_eq!(
            lower_half(&n.subnet),
            Some(Subnet::parse("172.18.0.0/17").unwrap())
        );
        let small = network("192.168.16.0/20", Some("192.168.16.0/21"));
        assert_eq!(block(&small), Some(("192.168.24.0".parse().unwrap(), 2047)));
        // A network the engine allocates whole, or some other range: no block.
        assert_eq!(block(&network("172.18.0.0/16", None)), None);
        assert_eq!(
            block(&network("172.18.0.0/16", Some("172.18.128.0/17"))),
            None
        );
        assert_eq!(block(&network("10.0.0.0/30", Some("10.0.0.0/31"))), None);
    }

    #[test]
    fn addresses_are_stable_and_distinct() {
        let b = Some(("172.18.128.0".parse().unwrap(), 4));
        let ids: Vec<String> = ["default/a", "default/b", "default/c"]
            .map(String::from)
            .to_vec();
        let first = assign(b, &ids, &BTreeMap::new());
        assert_eq!(first.len(), 3);
        let distinct: BTreeSet<_> = first.values().collect();
        assert_eq!(distinct.len(), 3);
        for ip in first.values() {
            let IpAddr::V4(v4) = ip else { panic!() };
            assert!((u32::from(*v4) - u32::from(Ipv4Addr::new(172, 18, 128, 0))) < 4);
        }
        // A new Service, and one gone: the others keep theirs.
        let next_ids: Vec<String> = ["default/a", "default/c", "default/d"]
            .map(String::from)
            .to_vec();
        let next = assign(b, &next_ids, &first);
        assert_eq!(next["default/a"], first["default/a"]);
        assert_eq!(next["default/c"], first["default/c"]);
        assert_eq!(next.values().collect::<BTreeSet<_>>().len(), 3);
        // A full block leaves the newest without one; no block gives none.
        let five: Vec<String> = (0..5).map(|i| format!("default/s{i}")).collect();
        assert_eq!(assign(b, &five, &BTreeMap::new()).len(), 4);
        assert!(assign(None, &ids, &first).is_empty());
        // An address outside the block is not kept.
        let outside: BTreeMap<String, IpAddr> =
            [("default/a".to_string(), "10.0.0.9".parse().unwrap())].into();
        let IpAddr::V4(v4) = assign(b, &ids[..1], &outside)["default/a"] else {
            panic!()
        };
        assert_eq!(v4.octets()[..3], [172, 18, 128]);
    }

    #[test]
    fn the_bridge_is_the_interface_with_the_gateway() {
        let listing = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
            3: eth0    inet 10.1.2.3/24 brd 10.1.2.255 scope global eth0\\       valid_lft 1\n\
            7: br-0123456789ab    inet 172.18.0.1/16 brd 172.18.255.255 scope global br-0123456789ab\\ x\n\
            7: br-0123456789ab    inet 172.18.200.7/32 scope global br-0123456789ab\\ x\n\
            garbage\n";
        let (name, ips) = parse_addresses(listing, "172.18.0.1".parse().unwrap()).unwrap();
        assert_eq!(name, "br-0123456789ab");
        assert_eq!(
            ips,
            vec![
                "172.18.0.1".parse::<IpAddr>().unwrap(),
                "172.18.200.7".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_addresses(listing, "172.19.0.1".parse().unwrap()),
            None
        );
    }
}
