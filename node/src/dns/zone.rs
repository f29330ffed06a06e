//! The cluster zone as the DNS server answers it: a snapshot of names and their records,
//! rebuilt from desired and observed state whenever they change (see `records.rs`) and read by
//! the server on every query through a `watch` channel, so that answering never waits on the
//! store.
//!
//! Names are lower case, fully qualified, without the trailing dot
//! (`web.default.svc.shoal.home.arpa`).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// One record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordData {
    /// An A or AAAA record, by the address's family.
    Address(IpAddr),
    /// An SRV record: the port to use on `target` (a name, lower case, without trailing dot).
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
}

/// The records of the zone, by name. A name present with an empty list exists (NODATA for
/// every type), as an empty non-terminal does.
pub type Records = BTreeMap<String, Vec<RecordData>>;

/// A snapshot of the cluster zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The cluster domain (`shoal.home.arpa`), lower case, without trailing dot.
    pub domain: String,
    /// TTL of every answer, in seconds (5 by default).
    pub ttl: u32,
    /// The SOA serial: changes whenever the records do.
    pub serial: u32,
    /// The name of this node's name server (`ns.<domain>`) and its addresses (the NS record
    /// and its glue).
    pub ns_name: String,
    pub ns_addresses: Vec<IpAddr>,
    /// What clients on the LAN (and the host) get: service names answer the addresses of alive
    /// nodes with ready endpoints.
    pub lan: Records,
    /// What this node's pods get (queries from `pod_networks`): service names answer an
    /// address of this node that the pod network reaches.
    pub pods: Records,
    /// The networks this node's pods query from: (network address, prefix length).
    pub pod_networks: Vec<(IpAddr, u8)>,
}

impl Zone {
    /// An empty zone for `domain` (only the apex: SOA and NS).
    pub fn empty(domain: &str, ttl: u32) -> Zone {
        Zone {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            ttl,
            serial: 1,
            ns_name: format!("ns.{}", domain.trim_end_matches('.').to_ascii_lowercase()),
            ns_addresses: Vec::new(),
            lan: Records::new(),
            pods: Records::new(),
            pod_networks: Vec::new(),
        }
    }

    /// Whether `name` (lower case, no trailing dot) is the domain or under it.
    pub fn contains(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// The records a client at `source` sees.
    pub fn view(&self, source: IpAddr) -> &Records {
        if self
            .pod_networks
            .iter()
            .any(|(net, prefix)| in_network(source, *net, *prefix))
        {
            &self.pods
        } else {
            &self.lan
        }
    }
}

/// Whether `addr` is in `net/prefix` (same family only).
pub fn in_network(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = u32::from(prefix.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = u32::from(prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}
