//! The daemon's configuration: one serde tree with defaults, read from a TOML file, then
//! overridden by `SHOAL_*` environment variables and flags (the binary does that layering),
//! then checked by [`Config::validate`] with messages that name the setting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A secret setting (the join token carries the cluster secret): its `Debug` never shows
/// the value, so a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every setting of `shoald`. Field names are the TOML keys (kebab-case).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where the node keeps its identity and state.
    pub data_dir: PathBuf,
    /// The node's name in the cluster; empty means the host name.
    pub node_name: String,
    /// Where the HTTP API listens.
    pub api_listen: SocketAddr,
    /// The address other nodes and LAN clients use for this node, and where container ports
    /// are published. Unset: the address of the interface of the default route.
    pub advertise: Option<IpAddr>,
    /// The largest request body the API accepts, in bytes.
    pub api_max_body_bytes: usize,
    /// The bounded size of every internal command channel.
    pub channel_size: usize,
    /// How long shutdown may take before tasks are abandoned, in seconds.
    pub shutdown_timeout_secs: u64,
    /// How often the node refreshes its own observed record, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A peer unheard for this long is suspect, in milliseconds.
    pub suspect_after_ms: u64,
    /// A peer unheard for this long is dead, in milliseconds.
    pub dead_after_ms: u64,
    /// How long after a node is dead (or has left) its pods are placed on other nodes, in
    /// milliseconds: a shorter flap moves nothing.
    pub reschedule_grace_ms: u64,
    /// How long this process must be up before the pods of a registered node it has never
    /// heard move elsewhere, in seconds (after the whole cluster restarted, a machine that
    /// never comes back).
    pub unheard_grace_secs: u64,
    pub log_format: LogFormat,
    /// Where the peer-to-peer network listens: TCP and QUIC (UDP) on the same address and
    /// port.
    pub p2p_listen: SocketAddr,
    /// `host:port` p2p addresses of cluster nodes to dial at start (`--join`).
    pub join: Vec<String>,
    /// The join token (`--token`): on an empty data directory, the node joins its cluster.
    /// A secret: prefer the flag or `SHOAL_JOIN_TOKEN` to a config file.
    pub join_token: Option<Redacted>,
    /// Discover nodes of the same cluster on the LAN with mDNS.
    pub mdns: bool,
    /// Where the DNS server listens, UDP and TCP on the same address and port
    /// (`--dns-listen`): an `ip:port`, or `off` for no DNS server. Unset: port 53 on the
    /// advertise address. A port that cannot be bound (in use, or port 53 without the
    /// privilege) is logged as an error and the node runs on without DNS.
    pub dns_listen: Option<DnsListen>,
    /// The cluster domain the DNS server answers for (`--cluster-domain`): services are
    /// `<service>.<namespace>.svc.<domain>`.
    pub cluster_domain: String,
    /// The resolvers that names outside the cluster domain are forwarded to, each `ip` or
    /// `ip:port` (`--dns-upstream`, repeatable; IPv6 with a port as `[ip]:port`). Unset: the
    /// `nameserver`s of the host's `/etc/resolv.conf`. An empty list forwards nothing: such
    /// names get REFUSED. This node's own DNS address is never used.
    pub dns_upstream: Option<Vec<String>>,
    /// The TTL of the cluster zone's answers, in seconds: clients re-ask this often, so
    /// answers follow readiness within that time.
    pub dns_ttl_secs: u32,
    /// The container engine's socket, `unix:///path/to/docker.sock` (`--docker-host`). Unset:
    /// `DOCKER_HOST` when it names a `unix://` socket, else `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// The registries this node may pull images from (`--allowed-registries`): each a host
    /// (any port), `host:port`, `*.domain`, or an IP network (`127.0.0.0/8`). Unset: any
    /// registry. An image from another registry fails with a message naming this setting.
    pub allowed_registries: Option<Vec<String>>,
    /// Image pulls at once on this node; the others wait their turn.
    pub max_pulls: usize,
    /// Image garbage collection starts when the filesystem of the engine's images is this full
    /// (percent), as kubelet's `imageGCHighThresholdPercent`.
    pub image_gc_high_threshold_percent: u8,
    /// ... and removes unused images it pulled until use would be under this (percent).
    pub image_gc_low_threshold_percent: u8,
    /// An image unused for less than this is never collected.
    pub image_minimum_gc_age_secs: u64,
    /// The cluster's pod range (`--pod-range`): each node takes a `/24` of it for its pods.
    /// Fixed when the cluster is made: the first node records it in the desired state, and a
    /// node whose setting differs uses the recorded one (with a warning).
    pub pod_range: String,
    /// Lets pods open this node's API and p2p ports (`--pods-reach-node-ports`); by default
    /// the node refuses them to any address of the pod range (pods are not trusted peers).
    pub pods_reach_node_ports: bool,
    /// The networks whose DNS queries the node answers (`--dns-allow`): addresses or
    /// networks. Unset: the private, link-local and loopback ranges (a LAN and the pod
    /// networks), so that a node with a public address is no open resolver.
    pub dns_allow: Option<Vec<String>>,
    /// The most replicas a Deployment, ReplicaSet or StatefulSet may ask for through this
    /// node: a typo (`replicas: 30000`) would write a slot per replica into the document's
    /// history for good.
    pub max_replicas: u32,
}

/// The DNS server's listen setting: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DnsListen {
    /// No DNS server on this node.
    Off,
    /// UDP and TCP on this address (port 0: a free port, for tests).
    Addr(SocketAddr),
}

impl std::str::FromStr for DnsListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(DnsListen::Off);
        }
        s.parse::<SocketAddr>().map(DnsListen::Addr).map_err(|_| {
            format!("{s:?} is neither `off` nor an ip:port address (e.g. 192.168.1.10:53)")
        })
    }
}

impl TryFrom<String> for DnsListen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DnsListen> for String {
    fn from(l: DnsListen) -> String {
        match l {
            DnsListen::Off => "off".to_string(),
            DnsListen::Addr(a) => a.to_string(),
        }
    }
}

/// The default cluster domain: RFC 8375's home-network domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "shoal.home.arpa";

/// The standard DNS port.
pub const DNS_PORT: u16 = 53;

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            node_name: String::new(),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            advertise: None,
            api_max_body_bytes: 4 * 1024 * 1024,
            channel_size: 256,
            shutdown_timeout_secs: 10,
            heartbeat_interval_ms: 500,
            suspect_after_ms: 1500,
            dead_after_ms: 3000,
            reschedule_grace_ms: 5000,
            unheard_grace_secs: 300,
            log_format: LogFormat::Text,
            p2p_listen: SocketAddr::from(([0, 0, 0, 0], 7946)),
            join: Vec::new(),
            join_token: None,
            mdns: true,
            dns_listen: None,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
            dns_upstream: None,
            dns_ttl_secs: 5,
            docker_host: None,
            allowed_registries: None,
            max_pulls: 2,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age_secs: 120,
            pod_range: crate::podnet::subnet::DEFAULT_RANGE.to_string(),
            pods_reach_node_ports: false,
            max_replicas: 10_000,
            dns_allow: None,
        }
    }
}

/// Errors of configuration: each names the setting or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl Config {
    /// Reads a TOML file; settings it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Heartbeat and failure-detection timings.
    pub fn membership_timing(&self) -> crate::observed::Timing {
        use std::time::Duration;
        crate::observed::Timing {
            heartbeat: Duration::from_millis(self.heartbeat_interval_ms),
            suspect_after: Duration::from_millis(self.suspect_after_ms),
            dead_after: Duration::from_millis(self.dead_after_ms),
            ..crate::observed::Timing::default()
        }
    }

    /// Checks the settings together, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| {
            Err(ConfigError::Invalid {
                setting,
                message: message.to_string(),
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data-dir", "must not be empty");
        }
        if !self.node_name.is_empty() && !is_dns_label(&self.node_name) {
            return invalid(
                "node-name",
                "must be a DNS label: lower-case letters, digits and '-', 1-63 characters, \
                 starting and ending with a letter or digit",
            );
        }
        if let Some(h) = &self.docker_host
            && !(h.starts_with("unix://") && h.len() > "unix://".len())
        {
            return invalid(
                "docker-host",
                "must name the engine's socket as unix:///path/to/docker.sock",
            );
        }
        if let Err(why) = crate::images::pull::Allowed(self.allowed_registries.clone()).validate() {
            return invalid("allowed-registries", &why);
        }
        if self.max_pulls == 0 {
            return invalid("max-pulls", "must be at least 1");
        }
        for entry in self.dns_allow.iter().flatten() {
            if let Err(why) = crate::dns::guard::parse_network(entry) {
                return invalid("dns-allow", &why);
            }
        }
        if self.max_replicas == 0 {
            return invalid("max-replicas", "must be at least 1");
        }
        if let Err(e) = crate::podnet::subnet::PodRange::parse(&self.pod_range) {
            return invalid("pod-range", &e.to_string());
        }
        if self.image_gc_high_threshold_percent > 100 {
            return invalid("image-gc-high-threshold-percent", "must be 0 to 100");
        }
        if self.image_gc_low_threshold_percent >= self.image_gc_high_threshold_percent {
            return invalid(
                "image-gc-low-threshold-percent",
                "must be lower than image-gc-high-threshold-percent",
            );
        }
        if self.api_max_body_bytes < 1024 {
            return invalid("api-max-body-bytes", "must be at least 1024");
        }
        if self.channel_size == 0 {
            return invalid("channel-size", "must be at least 1");
        }
        if self.heartbeat_interval_ms < 10 {
            return invalid("heartbeat-interval-ms", "must be at least 10");
        }
        if self.suspect_after_ms < 2 * self.heartbeat_interval_ms {
            return invalid(
                "suspect-after-ms",
                "must be at least twice heartbeat-interval-ms (one lost heartbeat must not make \
                 a node suspect)",
            );
        }
        if self.dead_after_ms <= self.suspect_after_ms {
            return invalid("dead-after-ms", "must be more than suspect-after-ms");
        }
        if self.p2p_listen.port() == 0 {
            return invalid(
                "p2p-listen",
                "needs a fixed port (other nodes dial it), e.g. 0.0.0.0:7946",
            );
        }
        if self.p2p_listen.ip() == self.api_listen.ip()
            && self.p2p_listen.port() == self.api_listen.port()
        {
            return invalid("p2p-listen", "must not be the api-listen address");
        }
        for addr in &self.join {
            if let Err(e) = crate::join::parse_host_port(addr) {
                return invalid("join", &e.to_string());
            }
        }
        self.join_token()?;
        if !is_domain_name(&self.cluster_domain) {
            return invalid(
                "cluster-domain",
                "must be a domain name: DNS labels (letters, digits and '-') separated by \
                 dots, at most 253 characters, e.g. shoal.home.arpa",
            );
        }
        if self.dns_ttl_secs > 3600 {
            return invalid("dns-ttl-secs", "must be at most 3600");
        }
        if let Some(dns) = self.dns_listen_addr()
            && dns == self.api_listen
        {
            return invalid("dns-listen", "must not be the api-listen address");
        }
        for upstream in self.dns_upstream.iter().flatten() {
            if let Err(e) = parse_dns_upstream(upstream) {
                return invalid("dns-upstream", &e);
            }
        }
        Ok(())
    }

    /// Where the DNS server listens, or `None` when it is off: the setting, else port 53 on
    /// the advertise address.
    pub fn dns_listen_addr(&self) -> Option<SocketAddr> {
        match self.dns_listen {
            None => Some(SocketAddr::new(self.advertise_addr(), DNS_PORT)),
            Some(DnsListen::Off) => None,
            Some(DnsListen::Addr(a)) => Some(a),
        }
    }

    /// The cluster domain as the DNS server uses it: lower case, without a trailing dot.
    pub fn dns_domain(&self) -> String {
        self.cluster_domain
            .strip_suffix('.')
            .unwrap_or(&self.cluster_domain)
            .to_ascii_lowercase()
    }

    /// The networks the DNS server answers: the setting (entries that do not parse are
    /// skipped; [`Config::validate`] rejects them), else [`crate::dns::guard::DEFAULT_ALLOW`].
    pub fn dns_allow_networks(&self) -> Vec<crate::runtime::Subnet> {
        match &self.dns_allow {
            Some(list) => list
                .iter()
                .filter_map(|n| crate::dns::guard::parse_network(n).ok())
                .collect(),
            None => crate::dns::guard::Guard::default_allow(),
        }
    }

    /// The upstream resolvers in force: the setting (entries that do not parse are skipped;
    /// [`Config::validate`] rejects them), else the host's `/etc/resolv.conf`; without this
    /// node's own DNS address, so that the server never forwards to itself.
    pub fn dns_upstreams(&self) -> Vec<SocketAddr> {
        let configured = match &self.dns_upstream {
            Some(list) => list
                .iter()
                .filter_map(|u| parse_dns_upstream(u).ok())
                .collect(),
            None => std::fs::read_to_string("/etc/resolv.conf")
                .map(|text| parse_resolv_conf(&text))
                .unwrap_or_default(),
        };
        let own = self.dns_listen_addr();
        let advertise = self.advertise_addr();
        configured
            .into_iter()
            .filter(|u| match own {
                None => true,
                Some(own) if own.ip().is_unspecified() => {
                    !(u.port() == own.port()
                        && (u.ip().is_loopback() || u.ip().is_unspecified() || u.ip() == advertise))
                }
                Some(own) => *u != own,
            })
            .collect()
    }

    /// The decoded join token, if one is set.
    pub fn join_token(&self) -> Result<Option<crate::join::JoinToken>, ConfigError> {
        match &self.join_token {
            None => Ok(None),
            Some(t) => {
                crate::join::JoinToken::decode(&t.0)
                    .map(Some)
                    .map_err(|e| ConfigError::Invalid {
                        setting: "join-token (--token)",
                        message: e.to_string(),
                    })
            }
        }
    }

    /// The p2p listen addresses: `/ip4/A/tcp/P` and `/ip4/A/udp/P/quic-v1`.
    pub fn p2p_multiaddrs(&self) -> Vec<libp2p::Multiaddr> {
        crate::join::dial_addrs(self.p2p_listen)
    }

    /// The `ip:port` other nodes dial to reach this one: the p2p port on the advertise
    /// address (or on the listen address when it names one).
    pub fn p2p_advertise(&self) -> SocketAddr {
        let ip = if self.p2p_listen.ip().is_unspecified() {
            self.advertise_addr()
        } else {
            self.p2p_listen.ip()
        };
        SocketAddr::new(ip, self.p2p_listen.port())
    }
}

/// `/var/lib/shoal` for root, else the XDG data directory (`~/.local/share/shoal`).
pub fn default_data_dir() -> PathBuf {
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| shoal_protocol::paths::status_says_root(&s));
    let var = |name| std::env::var(name).ok();
    shoal_protocol::paths::default_data_dir(
        root,
        var("XDG_DATA_HOME").as_deref(),
        var("HOME").as_deref(),
    )
}

impl Config {
    /// The advertise address in force: the setting, else the address of the interface that
    /// the default route leaves from, else loopback (a machine with no network).
    pub fn advertise_addr(&self) -> IpAddr {
        self.advertise
            .or_else(default_route_addr)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

/// The local address the kernel picks for a route to a TEST-NET address: connecting a UDP
/// socket only looks up the route; it sends no packet.
fn default_route_addr() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// A DNS-1123 label: what node names must be, since they become DNS names later.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A domain name of DNS labels (in any case: DNS names are case-insensitive), at most 253
/// characters; one trailing dot is allowed.
pub fn is_domain_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// An upstream resolver: `ip` (port 53) or `ip:port` (`[ipv6]:port`).
pub fn parse_dns_upstream(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .map_err(|_| format!("{s:?} is not an ip or ip:port address (e.g. 192.168.1.1:53)"))
}

/// The `nameserver` addresses of a `resolv.conf` text, port 53. Scoped IPv6 addresses
/// (`fe80::1%eth0`) are skipped: a socket address cannot carry an interface name.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let ip = words.next()?.parse::<IpAddr>().ok()?;
            Some(SocketAddr::new(ip, DNS_PORT))
        })
        .collect()
}

/// The host's name turned into a DNS label, for the default node name.
pub fn host_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let first = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let cleaned: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    if cleaned.is_empty() {
        "node".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn file_overrides_only_what_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoald.toml");
        std::fs::write(
            &path,
            "api-listen = \"127.0.0.9:9000\"\nnode-name = \"pi-1\"\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.api_listen.to_string(), "127.0.0.9:9000");
        assert_eq!(c.node_name, "pi-1");
        assert_eq!(c.channel_size, Config::default().channel_size);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_setting_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoald.toml");
        std::fs::write(&path, "api-lisen = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("shoald.toml"), "{err}");
        assert!(err.contains("api-lisen"), "{err}");
    }

    #[test]
    fn validate_names_the_setting() {
        let c = Config {
            node_name: "Bad_Name".into(),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("setting node-name:"), "{err}");
        let c = Config {
            channel_size: 0,
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("channel-size")
        );
        for bad in ["/var/run/docker.sock", "unix://", "tcp://127.0.0.1:2375"] {
            let c = Config {
                docker_host: Some(bad.into()),
                ..Config::default()
            };
            let err = c.validate().unwrap_err().to_string();
            assert!(err.starts_with("setting docker-host:"), "{bad}: {err}");
        }
        let c = Config {
            docker_host: Some("unix:///run/h1/docker.sock".into()),
            ..Config::default()
        };
        assert!(c.validate().is_ok());
    }

    #[test]
    fn p2p_settings() {
        let c = Config::default();
        assert_eq!(c.p2p_listen.to_string(), "0.0.0.0:7946");
        assert!(c.mdns);
        let m: Vec<String> = c.p2p_multiaddrs().iter().map(|m| m.to_string()).collect();
        assert_eq!(
            m,
            ["/ip4/0.0.0.0/tcp/7946", "/ip4/0.0.0.0/udp/7946/quic-v1"]
        );
        let c = Config {
            join: vec!["10.0.0.1:7946".into(), "bad".into()],
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("setting join:") && err.contains("bad"),
            "{err}"
        );
        let c = Config {
            join_token: Some(Redacted("nonsense".into())),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--token") && err.contains("shoal1."), "{err}");
        let c = Config {
            p2p_listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("p2p-listen"));
        let file = "p2p-listen = \"127.0.0.5:9000\"\njoin = [\"127.0.0.1:7946\"]\nmdns = false\n\
                    unheard-grace-secs = 60\n";
        let c: Config = toml::from_str(file).unwrap();
        assert_eq!(c.p2p_advertise().to_string(), "127.0.0.5:9000");
        assert!(!c.mdns);
        assert_eq!(c.unheard_grace_secs, 60);
        assert_eq!(Config::default().unheard_grace_secs, 300);
        c.validate().unwrap();
    }

    #[test]
    fn debug_output_never_shows_the_join_token() {
        let c = Config {
            join_token: Some(Redacted("shoal1.c2VjcmV0".into())),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn dns_settings() {
        let c = Config {
            advertise: Some("10.1.2.3".parse().unwrap()),
            dns_upstream: Some(vec![]),
            ..Config::default()
        };
        assert_eq!(c.cluster_domain, "shoal.home.arpa");
        assert_eq!(c.dns_ttl_secs, 5);
        assert_eq!(c.dns_listen_addr().unwrap().to_string(), "10.1.2.3:53");
        assert!(c.dns_upstreams().is_empty());
        c.validate().unwrap();

        let file = "dns-listen = \"127.0.0.7:5353\"\ncluster-domain = \"Lab.Example.\"\n\
                    dns-upstream = [\"9.9.9.9\", \"127.0.0.7:5353\", \"[::1]:5300\"]\n\
                    dns-ttl-secs = 30\n";
        let c: Config = toml::from_str(file).unwrap();
        c.validate().unwrap();
        assert_eq!(c.dns_domain(), "lab.example");
        assert_eq!(c.dns_ttl_secs, 30);
        assert_eq!(
            c.dns_listen,
            Some(DnsListen::Addr("127.0.0.7:5353".parse().unwrap()))
        );
        // The node's own address is never an upstream.
        let ups: Vec<String> = c.dns_upstreams().iter().map(|a| a.to_string()).collect();
        assert_eq!(ups, ["9.9.9.9:53", "[::1]:5300"]);

        let c: Config = toml::from_str("dns-listen = \"off\"\n").unwrap();
        assert_eq!(c.dns_listen, Some(DnsListen::Off));
        assert_eq!(c.dns_listen_addr(), None);
        let err = toml::from_str::<Config>("dns-listen = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns-listen") && err.contains("off"), "{err}");
        assert_eq!("OFF".parse::<DnsListen>(), Ok(DnsListen::Off));

        for (setting, c) in [
            (
                "cluster-domain",
                Config {
                    cluster_domain: "bad_domain".into(),
                    ..Config::default()
                },
            ),
            (
                "cluster-domain",
                Config {
                    cluster_domain: "a..b".into(),
                    ..Config::default()
                },
            ),
            (
                "dns-ttl-secs",
                Config {
                    dns_ttl_secs: 86400,
                    ..Config::default()
                },
            ),
            (
                "dns-upstream",
                Config {
                    dns_upstream: Some(vec!["resolver.example".into()]),
                    ..Config::default()
                },
            ),
            (
                "dns-listen",
                Config {
                    dns_listen: Some(DnsListen::Addr("127.0.0.1:7070".parse().unwrap())),
                    ..Config::default()
                },
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("setting {setting}:")), "{err}");
        }
    }

    #[test]
    fn dns_upstream_skips_own_wildcard_listener() {
        let c = Config {
            advertise: Some("10.1.2.3".parse().unwrap()),
            dns_listen: Some(DnsListen::Addr("0.0.0.0:53".parse().unwrap())),
            dns_upstream: Some(vec![
                "127.0.0.1".into(),
                "10.1.2.3".into(),
                "10.1.2.3:5353".into(),
                "10.9.9.9".into(),
            ]),
            ..Config::default()
        };
        let ups: Vec<String> = c.dns_upstreams().iter().map(|a| a.to_string()).collect();
        assert_eq!(ups, ["10.1.2.3:5353", "10.9.9.9:53"]);
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch lan\nnameserver 192.168.1.1\n  nameserver ::1 # v6\n\
                    nameserver fe80::1%eth0\n;nameserver 1.1.1.1\noptions ndots:1\nnameserver\n";
        let got: Vec<String> = parse_resolv_conf(text)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["192.168.1.1:53", "[::1]:53"]);
        assert_eq!(
            parse_dns_upstream(" 1.1.1.1 ").unwrap().to_string(),
            "1.1.1.1:53"
        );
        assert_eq!(
            parse_dns_upstream("1.1.1.1:5300").unwrap().to_string(),
            "1.1.1.1:5300"
        );
        assert!(parse_dns_upstream("1.1.1.1:x").is_err());
        for ok in ["shoal.home.arpa", "Shoal.Home.Arpa.", "cluster", "a-1.b"] {
            assert!(is_domain_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a_b.c",
            &format!("{}.a", "a".repeat(64)),
        ] {
            assert!(!is_domain_name(bad), "{bad}");
        }
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "pi-1", "node0", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
