//! Keeps the DNS server's zone current: rebuilds it ([`super::records::build`]) from the store
//! (Services, pods) and observed state (readiness, membership) after every change, after a
//! short debounce, and at least every second, and publishes it only when it differs. The
//! server reads the newest zone on every query, so answers follow readiness within about a
//! second of the report reaching this node. It also follows this node's pod network (from the
//! agent): once known, the zone's pods view answers its gateway (see `records.rs`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::kinds::Service;
use shoal_protocol::{Kind, Resource};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::records::{LocalPods, PodEntry, build};
use super::zone::Zone;
use crate::observed::ObservedHandle;
use crate::pods::{desired_pods, typed};
use crate::proxy::ServiceAddresses;
use crate::runtime::PodNetwork;
use crate::state::{StateError, StateHandle};
use crate::wake::Wakeup;

/// What the zone is built for.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    pub domain: String,
    pub ttl: u32,
    /// This node's DNS addresses (the NS record's glue).
    pub ns_addresses: Vec<IpAddr>,
    /// This node's advertise address: in the pods view it becomes the pod network's gateway.
    pub node_address: IpAddr,
}

/// The address of every node membership hears (alive or suspect), by name.
pub fn heard_nodes(observed: &ObservedHandle) -> BTreeMap<String, IpAddr> {
    observed.heard_addresses()
}

/// Every desired pod as the zone and the endpoints see it.
pub async fn pod_entries(
    state: &StateHandle,
    observed: &ObservedHandle,
) -> Result<Vec<PodEntry>, StateError> {
    let statuses = observed.pods();
    let range = state
        .pod_subnets()
        .await?
        .range
        .and_then(|r| crate::podnet::subnet::PodRange::parse(&r).ok());
    let routed = |ip: Option<&str>| {
        let ip = ip.and_then(|i| i.parse::<std::net::Ipv4Addr>().ok());
        range
            .zip(ip)
            .is_some_and(|(r, ip)| r.index_of(ip).is_some())
    };
    Ok(desired_pods(state)
        .await?
        .into_iter()
        .map(|p| {
            let status = statuses.get(&p.key());
            PodEntry {
                namespace: p.slot.namespace.clone(),
                name: p.slot.pod.clone(),
                labels: p.metadata.labels.clone(),
                node: p.slot.node.clone(),
                ready: status.is_some_and(|s| s.is_ready()),
                pod_ip: status.and_then(|s| s.pod_ip.clone()),
                routed: routed(status.and_then(|s| s.pod_ip.as_deref())),
                named_ports: p
                    .spec
                    .containers
                    .iter()
                    .flat_map(|c| &c.ports)
                    .filter_map(|cp| {
                        Some((cp.name.clone()?, u16::try_from(cp.container_port).ok()?))
                    })
                    .collect(),
                hostname: p.spec.hostname.clone(),
                subdomain: p.spec.subdomain.clone(),
            }
        })
        .collect())
}

/// Every stored Service.
pub async fn services(state: &StateHandle) -> Result<Vec<Service>, StateError> {
    typed(state, Kind::Service, |r| match r {
        Resource::Service(s) => Some(s),
        _ => None,
    })
    .await
}

async fn zone(
    config: &ZoneConfig,
    state: &StateHandle,
    observed: &ObservedHandle,
    network: Option<PodNetwork>,
    service_addresses: &BTreeMap<String, IpAddr>,
) -> Result<Zone, StateError> {
    let local = network.map(|network| LocalPods {
        node_address: config.node_address,
        network,
        service_addresses: service_addresses.clone(),
    });
    Ok(build(
        &config.domain,
        config.ttl,
        &services(state).await?,
        &pod_entries(state, observed).await?,
        &heard_nodes(observed),
        config.ns_addresses.clone(),
        local.as_ref(),
    ))
}

/// Feeds `tx` until `shutdown`. `pod_network`: this node's pod network, from the agent;
/// `service_addresses`: the Services' own addresses on it, from the proxies.
pub async fn keep_zone(
    config: ZoneConfig,
    state: StateHandle,
    observed: ObservedHandle,
    pod_network: watch::Receiver<Option<PodNetwork>>,
    service_addresses: watch::Receiver<ServiceAddresses>,
    tx: watch::Sender<Arc<Zone>>,
    shutdown: CancellationToken,
) {
    let mut wake = Wakeup::new(
        &state,
        &observed,
        Duration::from_secs(1),
        Duration::from_millis(50),
    )
    .with_pod_network(pod_network)
    .with_service_addresses(service_addresses);
    while wake.next(&shutdown).await {
        let network = wake.pod_network();
        let own = wake.service_addresses();
        match zone(&config, &state, &observed, network, &own).await {
            Ok(z) => {
                tx.send_if_modified(|current| {
                    if **current == z {
                        return false;
                    }
                    tracing::debug!(serial = z.serial, names = z.lan.len(), "DNS zone changed");
                    *current = Arc::new(z);
                    true
                });
            }
            Err(e) => tracing::warn!(error = %e, "building the DNS zone failed; retrying"),
        }
    }
}
