//! Joining a cluster and rejoining it: the join token, `host:port` addresses, and the known
//! peers remembered in the data directory.
//!
//! - The join token is `shoal1.<base64url(JSON)>`, the JSON holding the cluster id, the
//!   cluster secret (hex), the cluster's admin token and a few `ip:port` addresses of its
//!   nodes. It is a secret: whoever holds it can join the cluster and administer it.
//! - `DATA_DIR/join.token` (mode 0600) holds this node's join token, written at every start.
//! - `DATA_DIR/peers.json` remembers the addresses of admitted peers (best effort), so that a
//!   restarted node rejoins without `--join`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::net::NetHandle;

/// The prefix of every join token (its format version).
pub const TOKEN_PREFIX: &str = "shoal1.";
/// The file holding this node's join token.
pub const JOIN_TOKEN_FILE: &str = "join.token";
/// The file holding the addresses of known peers.
pub const PEERS_FILE: &str = "peers.json";
/// The most addresses kept per known peer.
const ADDRS_PER_PEER: usize = 4;
/// The most known peers kept.
const MAX_PEERS: usize = 64;

/// What a new node needs to join a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub cluster_id: String,
    pub cluster_secret: [u8; 32],
    pub admin_token: String,
    /// `host:port` addresses of the cluster's nodes (p2p port).
    pub addrs: Vec<String>,
}

// Never print the secret or the admin token.
impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("cluster_id", &self.cluster_id)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenJson {
    cluster_id: String,
    secret: String,
    admin_token: String,
    #[serde(default)]
    addrs: Vec<String>,
}

/// Why a join token or an address is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error(
        "a join token starts with {TOKEN_PREFIX:?}; copy the whole token that the first node printed (or its {JOIN_TOKEN_FILE} file)"
    )]
    Prefix,
    #[error("the join token is not valid base64url ({0}); it may be cut short")]
    Base64(String),
    #[error("the join token does not hold the expected JSON ({0})")]
    Json(String),
    #[error("the join token's {field} is invalid: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("{addr:?} is not host:port: {message}")]
    Address { addr: String, message: String },
}

impl JoinToken {
    /// `shoal1.<base64url(JSON)>`.
    pub fn encode(&self) -> String {
        let json = TokenJson {
            cluster_id: self.cluster_id.clone(),
            secret: hex::encode(self.cluster_secret),
            admin_token: self.admin_token.clone(),
            addrs: self.addrs.clone(),
        };
        // Serializing a struct of strings cannot fail.
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Decodes a token, checking every field.
    pub fn decode(token: &str) -> Result<JoinToken, JoinError> {
        let body = token
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(JoinError::Prefix)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body.trim_end_matches('='))
            .map_err(|e| JoinError::Base64(e.to_string()))?;
        let json: TokenJson =
            serde_json::from_slice(&bytes).map_err(|e| JoinError::Json(e.to_string()))?;
        let field = |field, message: &str| JoinError::Field {
            field,
            message: message.into(),
        };
        if json.cluster_id.is_empty()
            || json.cluster_id.len() > 64
            || !json.cluster_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(field("clusterId", "must be 1-64 letters or digits"));
        }
        let mut cluster_secret = [0u8; 32];
        hex::decode_to_slice(&json.secret, &mut cluster_secret)
            .map_err(|_| field("secret", "must be 64 hexadecimal digits"))?;
        if json.admin_token.len() < 32 {
            return Err(field("adminToken", "must be at least 32 characters"));
        }
        for a in &json.addrs {
            parse_host_port(a)?;
        }
        Ok(JoinToken {
            cluster_id: json.cluster_id,
            cluster_secret,
            admin_token: json.admin_token,
            addrs: json.addrs,
        })
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6), checking both parts.
pub fn parse_host_port(addr: &str) -> Result<(String, u16), JoinError> {
    let bad = |message: &str| JoinError::Address {
        addr: addr.to_string(),
        message: message.into(),
    };
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
    if port == 0 {
        return Err(bad("the port must not be 0"));
    }
    if host.is_empty()
        || host.contains(':')
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad("the host must be an IP address or a DNS name"));
    }
    Ok((host.to_string(), port))
}

/// The multiaddrs to dial for one socket address: TCP and QUIC.
pub fn dial_addrs(addr: SocketAddr) -> Vec<Multiaddr> {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    let tcp = Multiaddr::empty()
        .with(ip.clone())
        .with(Protocol::Tcp(addr.port()));
    let quic = Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1);
    vec![tcp, quic]
}

/// Resolves `host:port` addresses (names through the system resolver) into multiaddrs to
/// dial; an address that does not resolve is logged and skipped.
pub async fn resolve(addrs: &[String]) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    for a in addrs {
        let Ok((host, port)) = parse_host_port(a) else {
            tracing::warn!(addr = %a, "skipping a peer address that is not host:port");
            continue;
        };
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => {
                for sa in found {
                    for m in dial_addrs(sa) {
                        if !out.contains(&m) {
                            out.push(m);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(addr = %a, error = %e, "cannot resolve a peer address"),
        }
    }
    out
}

/// The `ip:port` of a TCP multiaddr (`/ip4/A/tcp/P`), if it is one worth dialling.
fn tcp_socket_addr(m: &Multiaddr) -> Option<SocketAddr> {
    let mut it = m.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(v4) => v4.into(),
        Protocol::Ip6(v6) => v6.into(),
        _ => return None,
    };
    let Protocol::Tcp(port) = it.next()? else {
        return None;
    };
    (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port))
}

/// `DATA_DIR/peers.json`: peer id to its `ip:port` addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeers {
    pub peers: BTreeMap<String, Vec<String>>,
}

impl KnownPeers {
    /// Reads the file; a missing or damaged file is an empty list (logged when damaged).
    pub fn load(data_dir: &Path) -> KnownPeers {
        let path = data_dir.join(PEERS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged peers file");
                KnownPeers::default()
            }),
            Err(_) => KnownPeers::default(),
        }
    }

    /// Every remembered address.
    pub fn addrs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.peers.values().flatten() {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    fn save(&self, data_dir: &Path) {
        let path = data_dir.join(PEERS_FILE);
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        if let Err(e) = crate::identity::write_file(&path, &bytes, 0o644) {
            tracing::warn!(error = %e, "cannot remember the known peers");
        }
    }
}

/// Keeps `peers.json` up to date with the admitted peers' listen addresses, checking every
/// `every`, until `shutdown` fires.
pub async fn remember_peers(
    net: NetHandle,
    data_dir: std::path::PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut known = KnownPeers::load(&data_dir);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(peers) = net.peers().await else {
            return;
        };
        let mut next = known.clone();
        for p in peers.iter().filter(|p| p.admitted) {
            let addrs: Vec<String> = p
                .addrs
                .iter()
                .filter_map(tcp_socket_addr)
                .map(|sa| sa.to_string())
                .take(ADDRS_PER_PEER)
                .collect();
            if addrs.is_empty() {
                continue;
            }
            let id = p.peer_id.to_string();
            if next.peers.len() >= MAX_PEERS && !next.peers.contains_key(&id) {
                continue;
            }
            next.peers.insert(id, addrs);
        }
        if next != known {
            tracing::debug!(peers = next.peers.len(), "known peers changed");
            next.save(&data_dir);
            known = next;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn token() -> JoinToken {
        JoinToken {
            cluster_id: "0123456789abcdef".into(),
            cluster_secret: [7u8; 32],
            admin_token: "a".repeat(64),
            addrs: vec!["192.168.1.10:7946".into(), "pi-1.lan:7946".into()],
        }
    }

    #[test]
    fn round_trip() {
        let t = token();
        let s = t.encode();
        assert!(s.starts_with("shoal1."), "{s}");
        assert!(!s.contains('='), "{s}");
        assert_eq!(JoinToken::decode(&s).unwrap(), t);
        assert_eq!(JoinToken::decode(&format!("  {s}\n")).unwrap(), t);
    }

    #[test]
    fn bad_tokens_say_what_is_wrong() {
        assert_eq!(JoinToken::decode("abc").unwrap_err(), JoinError::Prefix);
        assert!(matches!(
            JoinToken::decode("shoal1.!!!").unwrap_err(),
            JoinError::Base64(_)
        ));
        let s = token().encode();
        assert!(matches!(
            JoinToken::decode(&s[..s.len() - 10]).unwrap_err(),
            JoinError::Base64(_) | JoinError::Json(_)
        ));
        let mut t = token();
        t.admin_token = "short".into();
        let err = JoinToken::decode(&t.encode()).unwrap_err();
        assert!(err.to_string().contains("adminToken"), "{err}");
        let mut t = token();
        t.addrs = vec!["nope".into()];
        let err = JoinToken::decode(&t.encode()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let raw = format!(
            "shoal1.{}",
            URL_SAFE_NO_PAD.encode(br#"{"clusterId":"x","secret":"zz","adminToken":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#)
        );
        let err = JoinToken::decode(&raw).unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn host_port() {
        assert_eq!(
            parse_host_port("10.0.0.1:7946").unwrap(),
            ("10.0.0.1".into(), 7946)
        );
        assert_eq!(parse_host_port("[::1]:7946").unwrap(), ("::1".into(), 7946));
        assert_eq!(parse_host_port("pi.lan:1").unwrap(), ("pi.lan".into(), 1));
        for bad in ["", "a", "a:", ":1", "a:x", "a:0", "a b:1", "a:70000"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dial_addrs_are_tcp_and_quic() {
        let m = dial_addrs("127.0.0.2:4000".parse().unwrap());
        assert_eq!(m[0].to_string(), "/ip4/127.0.0.2/tcp/4000");
        assert_eq!(m[1].to_string(), "/ip4/127.0.0.2/udp/4000/quic-v1");
        assert_eq!(
            tcp_socket_addr(&m[0]),
            Some("127.0.0.2:4000".parse().unwrap())
        );
        assert_eq!(tcp_socket_addr(&m[1]), None);
    }

    #[test]
    fn known_peers_survive_a_restart_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(KnownPeers::load(dir.path()), KnownPeers::default());
        let mut k = KnownPeers::default();
        k.peers.insert("p1".into(), vec!["127.0.0.1:1".into()]);
        k.peers.insert(
            "p2".into(),
            vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
        );
        k.save(dir.path());
        let back = KnownPeers::load(dir.path());
        assert_eq!(back, k);
        assert_eq!(back.addrs(), vec!["127.0.0.1:1", "127.0.0.1:2"]);
        std::fs::write(dir.path().join(PEERS_FILE), "{").unwrap();
        assert_eq!(KnownPeers::load(dir.path()), KnownPeers::default());
    }
}
