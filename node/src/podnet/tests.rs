//! The pod network task against a recording host, a real store and membership fed by gossip.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shoal_protocol::Kind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::host::{HostError, HostNet};
use super::plan::{Route, Rule};
use super::subnet::{PodRange, Subnet24};
use super::*;
use crate::observed::{self, Inbound, Message, NodeRecord, Timing};

#[derive(Default)]
struct FakeHost {
    routes: Mutex<BTreeMap<Subnet24, Route>>,
    vxlan: Mutex<Vec<(u32, Ipv4Addr)>>,
    rules: Mutex<Vec<String>>,
}

#[async_trait]
impl HostNet for FakeHost {
    async fn gateway_to(&self, addr: IpAddr) -> Result<Option<IpAddr>, HostError> {
        // 10.9.x.x is behind the router.
        Ok(match addr {
            IpAddr::V4(a) if a.octets()[..2] == [10, 9] => Some("192.168.1.1".parse().unwrap()),
            _ => None,
        })
    }
    async fn mtu_of(&self, _: IpAddr) -> Result<Option<u32>, HostError> {
        Ok(Some(1500))
    }
    async fn routes(&self, _: &PodRange) -> Result<Vec<Subnet24>, HostError> {
        Ok(self.routes.lock().unwrap().keys().copied().collect())
    }
    async fn set_route(&self, route: &Route) -> Result<(), HostError> {
        self.routes.lock().unwrap().insert(route.subnet(), *route);
        Ok(())
    }
    async fn remove_route(&self, subnet: Subnet24) -> Result<(), HostError> {
        self.routes.lock().unwrap().remove(&subnet);
        Ok(())
    }
    async fn ensure_vxlan(
        &self,
        index: u32,
        _: Subnet24,
        local: Ipv4Addr,
        _: u32,
    ) -> Result<(), HostError> {
        self.vxlan.lock().unwrap().push((index, local));
        Ok(())
    }
    async fn ensure_rules(
        &self,
        rules: &[Rule],
        _prefix: &str,
        tag: &str,
    ) -> Result<(), HostError> {
        let mut r = self.rules.lock().unwrap();
        r.clear();
        r.extend(rules.iter().map(|x| format!("{tag} {}", x.args.join(" "))));
        Ok(())
    }
}

struct Quiet;
#[async_trait]
impl observed::Publish for Quiet {
    async fn publish(&self, _: Vec<u8>) {}
}

async fn peer(gossip: &mpsc::Sender<Inbound>, name: &str, address: &str) {
    let record = NodeRecord {
        name: name.into(),
        peer_id: format!("p-{name}"),
        address: address.into(),
        version: 10,
        ..NodeRecord::default()
    };
    let data = Message::Record(record).encode().unwrap();
    gossip.send(Inbound::Gossip { data }).await.unwrap();
}

#[tokio::test]
async fn a_node_claims_a_subnet_waits_for_it_to_settle_and_routes_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let state = crate::state::open_for_test(dir.path(), &stop);
    let me = NodeRecord {
        name: "n1".into(),
        peer_id: "p-n1".into(),
        address: "192.168.1.11".into(),
        ..NodeRecord::default()
    };
    let (obs, _reporter, hb) = observed::start(me, Timing::default(), 16);
    let (gossip, rx) = mpsc::channel(16);
    tokio::spawn(hb.with_gossip(Arc::new(Quiet), rx).run(stop.clone()));
    let host = Arc::new(FakeHost::default());
    let range = PodRange::parse("10.42.0.0/16").unwrap();
    let (mut net, spec, status) = PodNet::new(
        PodNetConfig {
            node_name: "n1".into(),
            range,
            network: "shoal-n1-c0ffee00".into(),
            advertise: "192.168.1.11".parse().unwrap(),
            api_port: 7070,
            p2p_port: 7946,
            pods_reach_node_ports: false,
        },
        state.clone(),
        obs,
        host.clone(),
    );
    let t0 = Instant::now();
    // Not registered yet (the cluster's state has not arrived): nothing is claimed.
    net.round(t0).await.unwrap();
    assert!(state.pod_subnets().await.unwrap().claims.is_empty());
    state
        .apply_values(vec![(Kind::Node, crate::nodes::registration("n1", "p-n1"))])
        .await
        .unwrap();
    // Two peers hold subnets 5 and 6: one on the LAN, one behind a router; a third shares
    // this host.
    for (node, index) in [("n2", 5), ("n3", 6), ("n4", 7)] {
        state
            .claim_pod_subnet(PodSubnetClaim {
                range: range.to_string(),
                node: node.into(),
                index: Some(index),
                release: vec![],
            })
            .await
            .unwrap();
    }
    peer(&gossip, "n2", "192.168.1.12").await;
    peer(&gossip, "n3", "10.9.0.13").await;
    peer(&gossip, "n4", "127.0.0.4").await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    net.round(t0).await.unwrap();
    let claims = state.pod_subnets().await.unwrap();
    assert_eq!(claims.range.as_deref(), Some("10.42.0.0/16"));
    let mine: Vec<u32> = claims
        .claims
        .iter()
        .filter(|(_, n)| n.as_str() == "n1")
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(mine.len(), 1, "{claims:?}");
    let index = mine[0];
    assert!(![5, 6, 7].contains(&index));
    assert_eq!(*spec.borrow(), None, "a new claim is not used at once");
    net.round(t0 + Duration::from_secs(1)).await.unwrap();
    assert_eq!(*spec.borrow(), None);
    net.round(t0 + SETTLE).await.unwrap();
    let subnet = range.subnet(index).unwrap();
    assert_eq!(*spec.borrow(), Some(network_spec(subnet, Some(1450))));

    let routes: BTreeSet<Route> = host.routes.lock().unwrap().values().copied().collect();
    assert_eq!(
        routes,
        BTreeSet::from([
            Route::Via {
                subnet: range.subnet(5).unwrap(),
                peer: "192.168.1.12".parse().unwrap()
            },
            Route::Overlay {
                subnet: range.subnet(6).unwrap(),
                index: 6,
                peer: "10.9.0.13".parse().unwrap()
            },
        ])
    );
    assert_eq!(
        *host.vxlan.lock().unwrap(),
        vec![(index, "192.168.1.11".parse().unwrap())]
    );
    let rules = host.rules.lock().unwrap().clone();
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert!(rules[0].starts_with(&format!("shoal:shoal-n1-c0ffee00:{index} -s {subnet}")));
    let st = status.borrow().clone();
    assert_eq!(st.subnet, Some(subnet.to_string()));
    assert_eq!(
        st.routes,
        BTreeMap::from([
            ("n2".to_string(), "host-gateway".to_string()),
            ("n3".to_string(), "vxlan".to_string()),
            ("n4".to_string(), "local".to_string()),
        ])
    );

    // A peer that gives its subnet up loses its route; one held before a restart counts at
    // once.
    state
        .claim_pod_subnet(PodSubnetClaim {
            range: range.to_string(),
            node: "n2".into(),
            index: None,
            release: vec![5],
        })
        .await
        .unwrap();
    net.round(t0 + SETTLE + Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        !host
            .routes
            .lock()
            .unwrap()
            .contains_key(&range.subnet(5).unwrap())
    );
    let (mut again, spec2, _) = PodNet::new(
        net.config.clone(),
        state.clone(),
        net.observed.clone(),
        host.clone(),
    );
    again.round(Instant::now()).await.unwrap();
    assert_eq!(*spec2.borrow(), Some(network_spec(subnet, Some(1450))));
    stop.cancel();
}
