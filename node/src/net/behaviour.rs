//! The libp2p stack of a shoal node: transports and the combined behaviour.
//!
//! Role: build the [`Swarm`] from a [`NetConfig`]. Owns nothing once built; the network task
//! owns the swarm.

use std::time::Duration;

use libp2p::core::upgrade::Version;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::pnet::{PnetConfig, PreSharedKey};

use super::bound_tcp::BoundTcp;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, Transport, identify, identity, mdns, noise, ping, tcp,
    yamux,
};

use super::admission::{ClusterKeys, HELLO_PROTOCOL, HelloRequest, HelloResponse};
use super::wire::{MAX_SYNC_BYTES, SYNC_PROTOCOL, SyncCodec};
use super::{NetConfig, NetError, Topic};

/// Largest gossip message, in bytes (an automerge change or an observed-state record).
const MAX_GOSSIP_BYTES: usize = 1024 * 1024;

/// Largest hello request or answer, in bytes: a nonce, or a node name and a MAC (the
/// request-response defaults, 1 and 10 MiB, would let a peer that is not admitted yet make
/// this node buffer that much).
const MAX_HELLO_BYTES: u64 = 1024;

/// How long a TCP connection may take to pass pnet, Noise and Yamux.
const TCP_UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Application score of a peer that has not passed admission: with gossipsub's application
/// weight of 10 it sits far below the graylist threshold, so nothing is published or gossiped
/// to it and everything it sends is ignored.
pub(crate) const UNADMITTED_SCORE: f64 = -1_000.0;

/// Everything a shoal node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub hello: request_response::cbor::Behaviour<HelloRequest, HelloResponse>,
    pub gossipsub: gossipsub::Behaviour,
    pub sync: request_response::Behaviour<SyncCodec>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Raw streams (image transfers), opened and accepted through a `libp2p_stream::Control`.
    pub streams: libp2p_stream::Behaviour,
}

/// The identify agent string: `shoal/<version>/<cluster_id>`.
/// `run` names this run of the process: a peer that sees it change knows that the node
/// restarted (and that its connections from before are stale).
pub(crate) fn agent_version(cluster_id: &str, run: &str) -> String {
    format!("shoal/{}/{cluster_id}/{run}", env!("CARGO_PKG_VERSION"))
}

/// The cluster id named by a peer's agent string, if it is a shoal agent string.
pub(crate) fn agent_cluster(agent: &str) -> Option<&str> {
    let rest = agent.strip_prefix("shoal/")?;
    let (_version, rest) = rest.split_once('/')?;
    Some(rest.split_once('/').map_or(rest, |(cluster, _)| cluster))
}

/// The run named by a peer's agent string, if it names one.
pub(crate) fn agent_run(agent: &str) -> Option<&str> {
    let rest = agent.strip_prefix("shoal/")?;
    let (_version, rest) = rest.split_once('/')?;
    rest.split_once('/').map(|(_, run)| run)
}

/// How often each connection is pinged, and how long an answer may take before the
/// connection is closed as dead (a peer cut off by the network, or a crashed process behind a
/// QUIC connection, which no kernel closes).
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(2);
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(4);

pub(crate) fn topic(cluster_id: &str, t: Topic) -> IdentTopic {
    IdentTopic::new(t.name(cluster_id))
}

/// Builds the swarm: TCP → pnet → Noise → Yamux, and QUIC, with all behaviours.
pub(crate) fn build_swarm(
    config: &NetConfig,
    keys: &ClusterKeys,
) -> Result<Swarm<Behaviour>, NetError> {
    let keypair =
        identity::Keypair::ed25519_from_bytes(config.node_key).map_err(NetError::NodeKey)?;
    let psk = PreSharedKey::new(keys.psk);
    let build = |e: &dyn std::fmt::Display| NetError::Build(e.to_string());
    let source = listen_ip(&config.listen);

    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)?;
            let tcp = BoundTcp::new(tcp::Config::default().nodelay(true), source, true)
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(TCP_UPGRADE_TIMEOUT);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(tcp)
        })
        .map_err(|e| build(&e))?
        .with_behaviour(|key| behaviour(config, keys, key).map_err(Into::into))
        .map_err(|e| build(&e))?
        // Membership decides when a peer is gone; keep quiet connections open.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// The one IP address all `listen` addresses share, if they share one.
fn listen_ip(listen: &[libp2p::Multiaddr]) -> Option<std::net::IpAddr> {
    use libp2p::multiaddr::Protocol;
    let mut ips = listen.iter().filter_map(|a| match a.iter().next()? {
        Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    });
    let first = ips.next()?;
    ips.all(|ip| ip == first).then_some(first)
}

/// A random id of this run of the process.
fn run_id() -> String {
    super::admission::nonce()
        .map(|n| hex::encode(&n[..8]))
        .unwrap_or_else(|_| format!("{:x}", std::process::id()))
}

fn behaviour(
    config: &NetConfig,
    keys: &ClusterKeys,
    key: &identity::Keypair,
) -> Result<Behaviour, String> {
    let peer_id = key.public().to_peer_id();

    let hello_codec =
        request_response::cbor::codec::Codec::<HelloRequest, HelloResponse>::default()
            .set_request_size_maximum(MAX_HELLO_BYTES)
            .set_response_size_maximum(MAX_HELLO_BYTES);
    let hello = request_response::Behaviour::with_codec(
        hello_codec,
        [(StreamProtocol::new(HELLO_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(config.request_timeout),
    );

    // Reads a sync message only after its first bytes proved the cluster secret.
    let codec = SyncCodec::new(keys.sync_token, MAX_SYNC_BYTES);
    let sync = request_response::Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(config.request_timeout),
    );

    // Sized for clusters of a few to a few dozen nodes: flood publishing reaches every
    // admitted peer directly, the mesh carries forwarding and IHAVE gossip.
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .flood_publish(true)
        .heartbeat_interval(Duration::from_millis(700))
        .mesh_n(4)
        .mesh_n_low(2)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .gossip_lazy(4)
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_config)
            .map_err(|e| format!("gossipsub: {e}"))?;
    let score_params = gossipsub::PeerScoreParams {
        // Test clusters share 127.0.0.1; admission, not addresses, decides who is in.
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    gossipsub
        .with_peer_score(score_params, gossipsub::PeerScoreThresholds::default())
        .map_err(|e| format!("gossipsub scoring: {e}"))?;
    for t in [Topic::State, Topic::Observed, Topic::Events] {
        gossipsub
            .subscribe(&topic(&config.cluster_id, t))
            .map_err(|e| format!("gossipsub subscribe: {e}"))?;
    }

    let identify = identify::Behaviour::new(
        identify::Config::new("/shoal/1".to_string(), key.public())
            .with_agent_version(agent_version(&config.cluster_id, &run_id())),
    );
    let ping = ping::Behaviour::new(
        ping::Config::new()
            .with_interval(PING_INTERVAL)
            .with_timeout(PING_TIMEOUT),
    );
    let mdns = if config.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                .map_err(|e| format!("mdns: {e}"))?,
        )
    } else {
        None
    };

    Ok(Behaviour {
        hello,
        gossipsub,
        sync,
        identify,
        ping,
        mdns: Toggle::from(mdns),
        streams: libp2p_stream::Behaviour::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_string_round_trips() {
        assert_eq!(agent_cluster(&agent_version("abc", "r1")), Some("abc"));
        assert_eq!(agent_run(&agent_version("abc", "r1")), Some("r1"));
        assert_eq!(agent_cluster("shoal/0.1.0/abc"), Some("abc"));
        assert_eq!(agent_run("shoal/0.1.0/abc"), None);
        assert_eq!(agent_cluster("rust-libp2p/0.1"), None);
        assert_eq!(agent_cluster("shoal/0.1.0"), None);
    }
}
