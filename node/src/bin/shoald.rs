//! `shoald`: parses flags, sets up logging, and runs the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shoal_node::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

/// shoald: the shoal daemon. Every machine of a cluster runs one.
#[derive(Parser, Debug)]
#[command(name = "shoald", version, about)]
struct Flags {
    /// A TOML config file; flags and SHOAL_* variables override it.
    #[arg(long, env = "SHOAL_CONFIG_FILE")]
    config: Option<PathBuf>,
    /// Where the node keeps its identity and state
    /// [default: /var/lib/shoal as root, else ~/.local/share/shoal].
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The node's name in the cluster [default: the host name].
    #[arg(long, env = "SHOAL_NODE_NAME")]
    node_name: Option<String>,
    /// Where the HTTP API listens [default: 127.0.0.1:7070].
    #[arg(long, env = "SHOAL_API_LISTEN")]
    api_listen: Option<SocketAddr>,
    /// The address other nodes and clients use for this node, where container ports are
    /// published [default: the address of the default route's interface].
    #[arg(long, env = "SHOAL_ADVERTISE")]
    advertise: Option<std::net::IpAddr>,
    /// Where the peer-to-peer network listens, TCP and QUIC on the same port
    /// [default: 0.0.0.0:7946].
    #[arg(long, env = "SHOAL_P2P_LISTEN")]
    p2p_listen: Option<SocketAddr>,
    /// The p2p address (host:port) of a node of the cluster to join; repeat it or separate
    /// addresses with commas.
    #[arg(long, env = "SHOAL_JOIN", value_delimiter = ',')]
    join: Vec<String>,
    /// The join token that the cluster's first node printed (also in its DATA_DIR/join.token);
    /// needed only on the first start of a new node.
    #[arg(long, env = "SHOAL_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Do not discover nodes on the LAN with mDNS.
    #[arg(long, env = "SHOAL_NO_MDNS")]
    no_mdns: bool,
    /// Where the DNS server listens, UDP and TCP: ip:port, or `off`
    /// [default: port 53 on the advertise address].
    #[arg(long, env = "SHOAL_DNS_LISTEN")]
    dns_listen: Option<shoal_node::config::DnsListen>,
    /// The cluster's DNS domain [default: shoal.home.arpa].
    #[arg(long, env = "SHOAL_CLUSTER_DOMAIN")]
    cluster_domain: Option<String>,
    /// An upstream resolver for names outside the cluster domain (ip or ip:port); repeat it
    /// or separate with commas [default: the nameservers of /etc/resolv.conf].
    #[arg(long, env = "SHOAL_DNS_UPSTREAM", value_delimiter = ',')]
    dns_upstream: Vec<String>,
    /// A network (or address) whose DNS queries this node answers; repeat it or separate with
    /// commas [default: the private, link-local and loopback ranges].
    #[arg(long, env = "SHOAL_DNS_ALLOW", value_delimiter = ',')]
    dns_allow: Vec<String>,
    /// The TTL of the cluster's answers, in seconds [default: 5].
    #[arg(long, env = "SHOAL_DNS_TTL_SECS")]
    dns_ttl_secs: Option<u32>,
    /// The container engine's socket, unix:///path/to/docker.sock [default: DOCKER_HOST when
    /// it names a unix:// socket, else /var/run/docker.sock].
    #[arg(long, env = "SHOAL_DOCKER_HOST")]
    docker_host: Option<String>,
    /// A registry this node may pull images from: host, host:port, *.domain or an IP
    /// network such as 127.0.0.0/8; repeat it or separate with commas [default: any].
    #[arg(long, env = "SHOAL_ALLOWED_REGISTRIES", value_delimiter = ',')]
    allowed_registries: Vec<String>,
    /// The cluster's pod range, split into a /24 per node; read when the cluster is made
    /// [default: 10.42.0.0/16].
    #[arg(long, env = "SHOAL_POD_RANGE")]
    pod_range: Option<String>,
    /// Let pods open this node's API and p2p ports (refused to pod addresses by default).
    #[arg(long, env = "SHOAL_PODS_REACH_NODE_PORTS")]
    pods_reach_node_ports: bool,
    /// Log format: text or json [default: text].
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
}

impl Flags {
    fn into_config(self) -> Result<Config, shoal_node::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.node_name {
            config.node_name = v;
        }
        if let Some(v) = self.api_listen {
            config.api_listen = v;
        }
        if let Some(v) = self.advertise {
            config.advertise = Some(v);
        }
        if let Some(v) = self.p2p_listen {
            config.p2p_listen = v;
        }
        if let Some(v) = entries(&self.join) {
            config.join = v;
        }
        if let Some(v) = self.token {
            config.join_token = Some(shoal_node::config::Redacted(v));
        }
        if self.no_mdns {
            config.mdns = false;
        }
        if let Some(v) = self.dns_listen {
            config.dns_listen = Some(v);
        }
        if let Some(v) = self.cluster_domain {
            config.cluster_domain = v;
        }
        if let Some(v) = entries(&self.dns_upstream) {
            config.dns_upstream = Some(v);
        }
        if let Some(v) = entries(&self.dns_allow) {
            config.dns_allow = Some(v);
        }
        if let Some(v) = self.dns_ttl_secs {
            config.dns_ttl_secs = v;
        }
        if let Some(v) = self.docker_host {
            config.docker_host = Some(v);
        }
        if let Some(v) = entries(&self.allowed_registries) {
            config.allowed_registries = Some(v);
        }
        if let Some(v) = self.pod_range {
            config.pod_range = v;
        }
        if self.pods_reach_node_ports {
            config.pods_reach_node_ports = true;
        }
        match self.log_format.as_deref() {
            Some("json") => config.log_format = LogFormat::Json,
            Some(_) => config.log_format = LogFormat::Text,
            None => {}
        }
        config.validate()?;
        Ok(config)
    }
}

/// The entries of a repeatable, comma-separated flag, trimmed, without empty ones; `None`
/// when none is left (the flag was not given).
fn entries(values: &[String]) -> Option<Vec<String>> {
    let out: Vec<String> = values
        .iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    (!out.is_empty()).then_some(out)
}

fn main() -> ExitCode {
    let config = match Flags::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoald: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoald: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("shoald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config) -> anyhow::Result<()> {
    // Create the identity here, once, so that a new cluster's first start can tell its owner
    // how to reach it; `run` loads the same files again.
    let join_token = config.join_token()?;
    let identity = shoal_node::identity::load_or_join(
        &config.data_dir,
        &config.node_name,
        join_token.as_ref(),
    )?;
    if identity.created {
        let join = shoal_node::join_token_for(&config, &identity).encode();
        let token_path = config.data_dir.join(shoal_node::identity::TOKEN_FILE);
        let node_url = format!("http://{}", config.api_listen);
        eprintln!(
            "\nCreated a new shoal cluster {id} in {dir}; this node is \"{name}\".\n\
             Point the CLI at it with:\n\n  \
             export SHOAL_NODE={node_url}\n  \
             export SHOAL_TOKEN=$(cat {token})\n\n\
             or save it as a context:\n\n  \
             shoal config set-context {name} --node {node_url} --token-file {token} --use\n\n\
             Add a node to this cluster by running, on it (the token is a secret; it is also \
             in {join_file}):\n\n  \
             shoald --join {p2p} --token {join}\n",
            p2p = config.p2p_advertise(),
            join_file = config
                .data_dir
                .join(shoal_node::join::JOIN_TOKEN_FILE)
                .display(),
            id = identity.cluster_id,
            dir = config.data_dir.display(),
            name = identity.node_name,
            token = token_path.display(),
        );
    }
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        signals.cancel();
    });
    shoal_node::run(config, shutdown).await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}; only Ctrl-C stops shoald");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
