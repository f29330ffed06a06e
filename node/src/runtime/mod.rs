//! The container runtime: the one place where the node touches containers.
//!
//! [`Runtime`] is the boundary between the node agent (which decides what should run on this
//! node) and the engine that runs it. [`DockerRuntime`] is the product: it drives the local
//! Docker engine through bollard. [`SimRuntime`] keeps containers in memory, deterministically,
//! for unit tests and the large-N simulator. Neither decides anything: they create, start,
//! stop and report, and the agent reconciles from what `list`/`inspect` report, so a missed
//! event or a failed call is repaired by the agent's next pass.
//!
//! Images are pulled only when asked ([`Runtime::pull`]): the node's image service
//! (`crate::images`) decides when, with which credentials, and deduplicates. Creating a
//! container never pulls: a missing image is [`RuntimeError::ImageNotFound`].
//!
//! Who talks to it: the node agent (lifecycle, adoption, probes) and the API (logs, exec,
//! stats), each through an `Arc<dyn Runtime>`.

mod docker;
mod engine;
mod sim;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use docker::DockerRuntime;
pub use engine::Engine;
pub use sim::{ExecHandler, SimRuntime};

/// Why a runtime call failed. Cheap to clone so that the simulated runtime can replay an
/// injected failure and callers can keep the last error in a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not on this node (creating a container never pulls).
    #[error("image {image} is not present on this node")]
    ImageNotFound { image: String },
    /// No container (or volume, network, exec session) of that id or name exists.
    #[error("{id} does not exist")]
    NotFound { id: String },
    /// The name is taken, the object is in use, or a host port is already allocated.
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// The engine cannot be reached (not running, wrong socket, no permission) or did not
    /// answer in time. The message says where it was looked for.
    #[error("{message}")]
    Unavailable { message: String },
    /// Anything else the engine refused or failed at, with its own message.
    #[error("container engine: {message}")]
    Other { message: String },
}

impl RuntimeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound { .. })
    }
}

/// A byte stream out of a container (logs, exec output).
pub type ByteStream = BoxStream<'static, Result<Bytes, RuntimeError>>;

/// The writing half of an interactive exec session (the process's stdin).
pub type ExecInput = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Everything the node needs from a container engine. Object safe: the node holds an
/// `Arc<dyn Runtime>`.
///
/// Ids: `start`, `stop`, `inspect`... accept a container id or name, as Docker does.
/// Idempotence: `start` of a running container, `stop` or `kill` of a stopped one succeed;
/// `remove` of a missing one is `NotFound` (callers that only want it gone ignore that).
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Creates the bridge network `name` unless it exists. With a subnet in `spec`, a network
    /// of that name on another subnet is a `Conflict` (remove it to make it again).
    async fn ensure_network(&self, name: &str, spec: &NetworkSpec) -> Result<(), RuntimeError>;
    /// Removes the network `name`; `NotFound` when absent.
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError>;
    /// The network `name` as the engine reports it (its subnet and gateway); `NotFound` when
    /// absent.
    async fn inspect_network(&self, name: &str) -> Result<NetworkInfo, RuntimeError>;
    /// Whether `image` is present locally (never pulls).
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError>;
    /// The image as the engine holds it; `NotFound` when absent.
    async fn image_info(&self, image: &str) -> Result<ImageInfo, RuntimeError>;
    /// Loads images from a `docker save` tarball as it streams in (never all in memory) and
    /// returns the references loaded. The engine checks every layer against the image's
    /// config as it loads, so a truncated or altered tarball fails and loads nothing.
    async fn load_image(&self, tarball: ByteStream) -> Result<Vec<String>, RuntimeError>;
    /// Every image the engine holds (tagged or not; intermediate layers are not images).
    async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError>;
    /// The image `image` as a `docker save` tarball, as it streams out of the engine (never
    /// all in memory); `NotFound` when absent.
    async fn export_image(&self, image: &str) -> Result<ByteStream, RuntimeError>;
    /// Removes the image reference `image` (a tag, or the image when it is its last name).
    /// Never forced: an image a container uses is `Conflict`; an absent one `NotFound`.
    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError>;
    /// How full the filesystem that holds the engine's images is.
    async fn image_fs(&self) -> Result<FsUsage, RuntimeError>;
    /// Pulls `name:tag` (or `name@digest` when `tag_or_digest` is a digest) from its registry
    /// through the engine, with `auth` when given, and returns once the image is present. A
    /// registry's refusal is `Other` with the engine's words (manifest unknown, unauthorized,
    /// connection refused), which `crate::images` sorts.
    async fn pull(
        &self,
        name: &str,
        tag_or_digest: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), RuntimeError>;
    /// The digest of the manifest `name:tag` names in its registry now (what a pull of it
    /// records among the image's repo digests), asked through the engine with `auth` when
    /// given; the registry's refusal as `pull` reports it.
    async fn registry_digest(
        &self,
        name: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError>;
    /// Creates a container (not started) and returns its id. A missing image is
    /// `ImageNotFound` naming `spec.image`; a taken name is `Conflict`.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Sends the container's stop signal (SIGTERM unless the spec said otherwise), waits up
    /// to `grace`, then kills it. Returns once it has stopped.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// SIGKILL now. Killing a container that is not running succeeds.
    async fn kill(&self, id: &str) -> Result<(), RuntimeError>;
    /// Removes the container, running or not, with its anonymous volumes.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError>;
    /// Every container (in any state) carrying all of the labels `k=v`.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// The container's stdout and stderr, interleaved as written.
    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<ByteStream, RuntimeError>;
    /// Runs `cmd` in the running container to completion and collects its output (each
    /// stream capped at [`EXEC_OUTPUT_CAP`] bytes). For probes and simple execs; callers bound
    /// the time with `tokio::time::timeout`.
    async fn exec_output(&self, id: &str, cmd: &[String]) -> Result<ExecOutput, RuntimeError>;
    /// Starts an interactive exec session: output as it comes, and stdin when asked for.
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecSession, RuntimeError>;
    /// The exit code of an exec session, `None` while it runs.
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError>;
    /// Resizes the TTY of an exec session started with `tty: true`.
    async fn exec_resize(&self, exec_id: &str, width: u16, height: u16)
    -> Result<(), RuntimeError>;
    /// Cumulative CPU time and current memory use.
    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError>;
    /// Creates a named volume unless one of that name exists.
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo, RuntimeError>;
    /// Removes a named volume: `NotFound` when absent, `Conflict` while a container uses it.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;
    /// Named volumes carrying all of the labels `k=v`.
    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<VolumeInfo>, RuntimeError>;
}

/// Credentials for one registry, from a pod's `imagePullSecrets`. `Debug` never shows the
/// password or token.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The key the credentials were found under (e.g. `127.0.0.1:5000`).
    pub server: String,
    pub username: String,
    pub password: String,
    pub identity_token: Option<String>,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A filesystem's size and use, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity: u64,
    pub used: u64,
}

impl FsUsage {
    /// Percent used, rounded down; 0 for an empty filesystem.
    pub fn percent(&self) -> u64 {
        (self.used.saturating_mul(100))
            .checked_div(self.capacity)
            .unwrap_or(0)
    }
}

/// What the engine reports about one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// The content id, `sha256:...`.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Bytes, as the engine reports it.
    pub size: u64,
}

/// Most bytes of each stream that [`Runtime::exec_output`] keeps; the rest is read and dropped
/// so that a chatty probe cannot fill the node's memory.
pub const EXEC_OUTPUT_CAP: usize = 1 << 20;

/// What to run: the runtime-level view of one container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Unique on the engine; Docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint (Kubernetes `command`); the image's CMD is then dropped
    /// unless `args` is set, as in Kubernetes.
    pub command: Option<Vec<String>>,
    /// Replaces the image's CMD (Kubernetes `args`).
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub ports: Vec<PortSpec>,
    pub mounts: Vec<MountSpec>,
    /// Memory limit in bytes; swap is not allowed beyond it, so exceeding it is an OOM kill.
    pub memory_limit: Option<u64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<u64>,
    /// The network to join; the engine's default bridge when `None`.
    pub network: Option<String>,
    /// The container's `/etc/resolv.conf`: name servers, search domains and options
    /// (`ndots:5`); the engine's defaults where empty.
    pub dns_servers: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// e.g. `SIGTERM` (the image's or engine's default when `None`).
    pub stop_signal: Option<String>,
    /// Grace the engine itself allows on `docker stop` without `-t`.
    pub stop_grace: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// Parses `tcp`/`udp` (any case); `None` for anything else (e.g. sctp).
    pub fn parse(s: &str) -> Option<Protocol> {
        if s.eq_ignore_ascii_case("tcp") {
            Some(Protocol::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Some(Protocol::Udp)
        } else {
            None
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub container_port: u16,
    pub protocol: Protocol,
    /// The host address to bind; every address when `None`.
    pub host_ip: Option<String>,
    /// 0: a free port chosen by the engine (read it back from [`ContainerInfo::ports`]).
    pub host_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A host file or directory, which must exist.
    Bind {
        host_path: String,
        container_path: String,
        read_only: bool,
    },
    /// A named volume; the engine creates a plain local one if absent, so volumes with driver
    /// options (nfs) must be made first with [`Runtime::create_volume`].
    Volume {
        name: String,
        container_path: String,
        read_only: bool,
    },
    /// A memory file system, gone with the container.
    Tmpfs {
        container_path: String,
        size_bytes: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ContainerState {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    /// Being removed.
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host port the engine actually bound for a container port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortBinding {
    pub container_port: u16,
    pub protocol: Protocol,
    pub host_ip: String,
    pub host_port: u16,
}

/// What the engine reports about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image as the spec named it.
    pub image: String,
    /// The image's content id (`sha256:...`), which tells a retagged image apart.
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// Set once the container has exited (0 before it ever ran).
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Why the engine could not run it, when it says (e.g. a start that failed).
    pub error: Option<String>,
    /// RFC 3339, as the engine reports it; `None` when never started.
    pub started_at: Option<String>,
    /// RFC 3339; `None` when it has not finished.
    pub finished_at: Option<String>,
    /// The network it joined and its address there.
    pub network: Option<String>,
    pub ip: Option<String>,
    pub ports: Vec<PortBinding>,
    /// Restarts the engine itself made (shoal uses no engine restart policy, so normally 0).
    pub restart_count: u32,
}

impl ContainerInfo {
    /// The host port bound for `container_port/protocol`, preferring an IPv4 binding.
    pub fn host_port(&self, container_port: u16, protocol: Protocol) -> Option<&PortBinding> {
        let mut matching = self
            .ports
            .iter()
            .filter(|p| p.container_port == container_port && p.protocol == protocol);
        let first = matching.clone().next();
        matching.find(|p| !p.host_ip.contains(':')).or(first)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail: Option<u64>,
    /// Only lines since this Unix time (seconds).
    pub since: Option<i64>,
    /// Keep the stream open for new lines.
    pub follow: bool,
    /// Prefix each line with the engine's RFC 3339 timestamp.
    pub timestamps: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// Allocate a TTY: output is then one raw stream.
    pub tty: bool,
    /// Attach the process's stdin ([`ExecSession::input`]).
    pub stdin: bool,
}

/// A finished exec's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// One piece of an exec session's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A running exec: its output as it comes, and its stdin when asked for. The output stream
/// ends when the process does; then [`Runtime::exec_exit_code`] tells how.
pub struct ExecSession {
    pub exec_id: String,
    pub output: BoxStream<'static, Result<ExecChunk, RuntimeError>>,
    pub input: Option<ExecInput>,
}

impl fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecSession")
            .field("exec_id", &self.exec_id)
            .field("input", &self.input.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time used since start, in nanoseconds.
    pub cpu_nanos: u64,
    /// Memory in use, without the reclaimable page cache (as `docker stats` shows it).
    pub memory_bytes: u64,
}

/// An IP network: an address and a prefix length (`172.18.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `addr/prefix` (IPv4 or IPv6); `None` for anything else, or a prefix longer
    /// than the address.
    pub fn parse(s: &str) -> Option<Subnet> {
        let (addr, prefix) = s.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Subnet { addr, prefix })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How to make a pod network. The default lets the engine pick the subnet (and keeps the upper
/// half of it out of its allocation, for Services' own addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The subnet, its gateway (the host's side of the bridge) and the part of it the engine
    /// gives containers.
    pub subnet: Option<Subnet>,
    pub gateway: Option<IpAddr>,
    pub ip_range: Option<Subnet>,
    /// Whether the engine masquerades traffic that leaves the bridge (its default). Off on a
    /// routed pod network: pods keep their addresses between nodes, and the node masquerades
    /// only what leaves the cluster's pod range.
    pub masquerade: bool,
    /// The bridge's MTU, when not the engine's default.
    pub mtu: Option<u32>,
}

impl NetworkSpec {
    /// The engine's choice of subnet, masquerading as it does by default.
    pub fn engine_default() -> NetworkSpec {
        NetworkSpec {
            masquerade: true,
            ..NetworkSpec::default()
        }
    }
}

/// What the engine reports about a network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    /// The network's IPv4 subnet (else its first one), when it has one.
    pub subnet: Option<Subnet>,
    /// The host's address on that subnet (the bridge's), when the engine says.
    pub gateway: Option<IpAddr>,
    /// The part of the subnet the engine gives containers, when narrower than the subnet.
    pub ip_range: Option<Subnet>,
}

impl NetworkInfo {
    /// The network as its pods see the node: both a subnet and a gateway, or `None`.
    pub fn pod_network(&self) -> Option<PodNetwork> {
        Some(PodNetwork {
            gateway: self.gateway?,
            subnet: self.subnet?,
            ip_range: self.ip_range,
        })
    }
}

/// A node's pod network as its pods reach the node: the gateway is the node's own address on
/// the bridge (the host's side), which every container of the network reaches, and the subnet
/// is where the pods' own addresses (and so their queries and connections) come from. The
/// agent learns it when it makes the network; the DNS server and the proxies listen on the
/// gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PodNetwork {
    pub gateway: IpAddr,
    pub subnet: Subnet,
    /// The part of the subnet the engine gives containers (the lower half when the agent made
    /// the network): the rest holds the Services' own addresses (`proxy::addresses`).
    pub ip_range: Option<Subnet>,
}

/// A named volume to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    /// `local` when `None`.
    pub driver: Option<String>,
    /// e.g. for nfs with the local driver: `type=nfs`, `o=addr=10.0.0.5,rw`,
    /// `device=:/export/path`.
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// Where the engine keeps it on the host.
    pub mountpoint: String,
}

/// Whether `labels` carries every `k=v` of `filter` (the semantics of Docker's label filter).
pub fn labels_match(labels: &BTreeMap<String, String>, filter: &[(&str, &str)]) -> bool {
    filter
        .iter()
        .all(|(k, v)| labels.get(*k).is_some_and(|have| have == v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn binding(port: u16, ip: &str, host_port: u16) -> PortBinding {
        PortBinding {
            container_port: port,
            protocol: Protocol::Tcp,
            host_ip: ip.into(),
            host_port,
        }
    }

    #[test]
    fn host_port_prefers_ipv4() {
        let info = ContainerInfo {
            ports: vec![
                binding(80, "::", 2),
                binding(80, "0.0.0.0", 1),
                binding(81, "::", 3),
            ],
            ..Default::default()
        };
        assert_eq!(
            info.host_port(80, Protocol::Tcp).map(|p| p.host_port),
            Some(1)
        );
        assert_eq!(
            info.host_port(81, Protocol::Tcp).map(|p| p.host_port),
            Some(3)
        );
        assert_eq!(info.host_port(80, Protocol::Udp), None);
    }

    #[test]
    fn label_filter() {
        let labels: BTreeMap<String, String> =
            [("a".to_string(), "1".to_string()), ("b".into(), "2".into())].into();
        assert!(labels_match(&labels, &[]));
        assert!(labels_match(&labels, &[("a", "1"), ("b", "2")]));
        assert!(!labels_match(&labels, &[("a", "2")]));
        assert!(!labels_match(&labels, &[("c", "1")]));
    }

    #[test]
    fn subnets_parse() {
        let s = Subnet::parse("172.18.0.0/16").unwrap();
        assert_eq!(s.addr, "172.18.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(s.prefix, 16);
        assert_eq!(s.to_string(), "172.18.0.0/16");
        assert_eq!(Subnet::parse("fd00::/64").map(|s| s.prefix), Some(64));
        assert_eq!(Subnet::parse("10.0.0.0/33"), None);
        assert_eq!(Subnet::parse("10.0.0.0"), None);
        assert_eq!(Subnet::parse("x/8"), None);
        let info = NetworkInfo {
            subnet: Some(s),
            gateway: Some("172.18.0.1".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(
            info.pod_network().map(|p| p.gateway.to_string()),
            Some("172.18.0.1".to_string())
        );
        assert_eq!(NetworkInfo::default().pod_network(), None);
    }

    #[test]
    fn protocol_parse() {
        assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("udp"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse("sctp"), None);
    }

    #[test]
    fn runtime_is_object_safe() {
        fn takes(_: std::sync::Arc<dyn Runtime>) {}
        takes(std::sync::Arc::new(SimRuntime::new(["img"])));
    }
}
