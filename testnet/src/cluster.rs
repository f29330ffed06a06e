//! A local cluster: N `shoald` processes on this machine, each with its own data directory
//! and its own loopback address, and the faults a test injects into it (kill, restart,
//! stop and start of everything, network partitions).
//!
//! A testnet picks a random /24 inside 127.0.0.0/8 (never 127.0.x.x) and gives node `k` the
//! address `127.A.B.k`: its API and its p2p network (TCP and QUIC) listen there, and its
//! outgoing connections leave from there, which is what lets [`crate::partition`] cut it off
//! by address. Test clients talk from 127.0.0.1, which belongs to no node, so a partition never
//! cuts them off. Several testnets run at once (cargo runs tests in parallel): each has its
//! own /24 and its own nftables table.
//!
//! `DIR/cluster.json` describes a running testnet (see [`ClusterFile`]), so that separate
//! `shoal-testnet` runs can drive the nodes that `shoal-testnet up` left running.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hosts::Lan;
use crate::process::{Node, NodeOptions, OnHost, free_p2p_addr, free_port};
use crate::{partition, wait_until};

/// The file in DIR that describes the testnet.
pub const CLUSTER_FILE: &str = "cluster.json";
/// The node's status route (membership, digest of the desired state).
pub use shoal_protocol::api::STATUS_PATH;
/// The most nodes a testnet has: one /24, without .0 and .255.
pub const MAX_NODES: usize = 254;
/// How long `up` waits for every node to see every member alive.
const UP_TIMEOUT: Duration = Duration::from_secs(60);
/// A node's log file, in its data directory.
const LOG_FILE: &str = "shoald.log";

/// `DIR/cluster.json`: what another process needs to drive a testnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFile {
    /// The cluster's admin token (every route of every node's API takes it).
    pub admin_token: String,
    pub nodes: Vec<NodeEntry>,
    /// This testnet's id: its nftables table is `inet shoal_tn_<id>`.
    pub testnet_id: String,
    /// The partition in force (groups of node names), if any.
    #[serde(default)]
    pub partition: Option<Vec<Vec<String>>>,
    /// The LAN of a testnet of hosts (`up --hosts`); absent for nodes on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan: Option<LanEntry>,
}

/// The LAN of a testnet of hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LanEntry {
    /// `10.213.B.0/24`.
    pub subnet: String,
    /// The bridge on the machine, which holds `10.213.B.1`.
    pub bridge: String,
    /// B.
    pub octet: u8,
}

/// One node of [`ClusterFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    pub name: String,
    /// `http://127.A.B.k:port`
    pub api_url: String,
    /// Where the node's DNS server answers; none yet.
    pub dns_addr: Option<String>,
    /// `127.A.B.k:port`, TCP and QUIC.
    pub p2p_addr: String,
    /// The node's own loopback address, `127.A.B.k`.
    pub advertise_addr: String,
    /// The running process, none while the node is down.
    pub pid: Option<u32>,
    pub data_dir: PathBuf,
    /// The node's stdout and stderr.
    pub log_file: PathBuf,
    /// Hosts only: the node's name in the cluster when it is not the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Hosts only: the host's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Hosts only: the host's address on the LAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_addr: Option<String>,
    /// Hosts only: the socket of the host's own Docker engine (`unix://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_socket: Option<String>,
}

/// A local testnet. Started in-process ([`Cluster::up`]), it is owned: dropping it kills its
/// processes and removes its partition, so a failing test leaks neither. Started for the
/// command line ([`Cluster::up_detached`]) or read back from `cluster.json`
/// ([`Cluster::load`]), its nodes outlive the handle until [`Cluster::down`].
pub struct Cluster {
    dir: PathBuf,
    id: String,
    admin_token: String,
    nodes: Vec<Node>,
    partition: Option<Vec<Vec<String>>>,
    owned: bool,
    /// The hosts' LAN, for a testnet of hosts. Declared last: it is torn down after the
    /// nodes are killed.
    lan: Option<Lan>,
}

impl Cluster {
    /// Starts `n` nodes in `dir` (`dir/n1`, `dir/n2`, ...): n1 creates the cluster, the others
    /// join it with its token. Returns once every node sees all `n` members alive. The nodes
    /// die with the returned handle.
    pub fn up(n: usize, dir: &Path) -> anyhow::Result<Cluster> {
        Cluster::start(n, dir, false, None)
    }

    /// [`Cluster::up`] with nodes that forward names outside the cluster domain to
    /// `dns_upstream` (`ip:port` on loopback, such as a resolver the test runs).
    pub fn up_with_dns_upstream(
        n: usize,
        dir: &Path,
        dns_upstream: &str,
    ) -> anyhow::Result<Cluster> {
        Cluster::start(n, dir, false, Some(dns_upstream.to_string()))
    }

    /// [`Cluster::up`] with nodes that outlive this handle and this process, each in its own
    /// process group (`shoal-testnet up`). A failed start kills what it started.
    pub fn up_detached(n: usize, dir: &Path) -> anyhow::Result<Cluster> {
        Cluster::start(n, dir, true, None)
    }

    fn start(
        n: usize,
        dir: &Path,
        detached: bool,
        dns_upstream: Option<String>,
    ) -> anyhow::Result<Cluster> {
        if n == 0 || n > MAX_NODES {
            bail!("a testnet has 1 to {MAX_NODES} nodes, not {n}");
        }
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // Absolute: the path is in every node's command line, which `load` checks pids by.
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let file = dir.join(CLUSTER_FILE);
        if file.exists() {
            bail!(
                "{} exists: {} already holds a testnet (take it down and remove the \
                 directory, or choose another)",
                file.display(),
                dir.display()
            );
        }
        let ips = pick_addresses(n)?;
        let mut cluster = Cluster {
            dir: dir.clone(),
            id: new_id(),
            admin_token: String::new(),
            nodes: Vec::with_capacity(n),
            partition: None,
            owned: !detached,
            lan: None,
        };
        let started = cluster.start_nodes(&ips, detached, dns_upstream);
        if let Err(e) = started {
            if detached {
                cluster.kill_all();
                let _ = cluster.save();
            }
            return Err(e);
        }
        Ok(cluster)
    }

    fn start_nodes(
        &mut self,
        ips: &[Ipv4Addr],
        detached: bool,
        dns_upstream: Option<String>,
    ) -> anyhow::Result<()> {
        for (k, ip) in ips.iter().enumerate() {
            let name = format!("n{}", k + 1);
            let data_dir = self.dir.join(&name);
            let mut opts = NodeOptions::new(&name, &data_dir);
            opts.ip = ip.to_string();
            opts.dns_upstream = dns_upstream.clone();
            if let Some(first) = self.nodes.first() {
                opts = opts.joining(first)?;
            }
            let api_port = free_port(&opts.ip)?;
            let api_addr = SocketAddr::new((*ip).into(), api_port);
            let p2p_addr = free_p2p_addr(&opts.ip, api_port)?;
            let log = data_dir.join(LOG_FILE);
            let mut node = Node::start_on(opts, api_addr, p2p_addr, log, detached)
                .with_context(|| format!("cannot start {name} on {ip}"))?;
            // Join flags serve the first start only: a restart finds its known peers.
            node.opts.join = None;
            self.nodes.push(node);
        }
        self.admin_token = self.nodes[0].token()?;
        self.save()?;
        self.wait_members_alive(UP_TIMEOUT)
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.log_tails(40)))?;
        Ok(())
    }

    /// The testnet described by `dir/cluster.json`, as left by another process. Its nodes
    /// are not killed when the handle drops.
    pub fn load(dir: &Path) -> anyhow::Result<Cluster> {
        let path = dir.join(CLUSTER_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no testnet in {}: {} does not exist (start one with `shoal-testnet up --dir {}`)",
                dir.display(),
                path.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let file: ClusterFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a testnet description", path.display()))?;
        let lan = match &file.lan {
            Some(l) => {
                let hosts: Vec<String> = file.nodes.iter().map(|n| n.name.clone()).collect();
                Some(Lan::adopt(&file.testnet_id, l.octet, dir, &hosts)?)
            }
            None => None,
        };
        let mut nodes = Vec::with_capacity(file.nodes.len());
        for e in &file.nodes {
            let ip: Ipv4Addr = e.advertise_addr.parse().with_context(|| {
                format!("{}: node {}: bad advertiseAddr", path.display(), e.name)
            })?;
            let api_addr: SocketAddr = e
                .api_url
                .strip_prefix("http://")
                .unwrap_or(&e.api_url)
                .parse()
                .with_context(|| format!("{}: node {}: bad apiUrl", path.display(), e.name))?;
            let p2p_addr: SocketAddr = e
                .p2p_addr
                .parse()
                .with_context(|| format!("{}: node {}: bad p2pAddr", path.display(), e.name))?;
            let mut opts = NodeOptions::new(&e.name, &e.data_dir);
            opts.ip = ip.to_string();
            if let Some(netns) = &e.netns {
                opts.host = Some(OnHost {
                    netns: netns.clone(),
                    config_file: dir.join(&e.name).join(HOST_CONFIG),
                });
            }
            nodes.push(Node::adopt(
                opts,
                api_addr,
                p2p_addr,
                e.log_file.clone(),
                e.pid,
            ));
        }
        Ok(Cluster {
            dir: dir.to_path_buf(),
            id: file.testnet_id,
            admin_token: file.admin_token,
            nodes,
            partition: file.partition,
            owned: false,
            lan,
        })
    }

    /// Stops every node gracefully (SIGTERM), removes the partition and the containers and
    /// pod networks the nodes left in Docker. Data directories stay.
    pub fn down(&mut self) -> anyhow::Result<()> {
        if self.lan.is_some() {
            // Hosts: the nodes stop as on a shutdown, then the LAN and the engines go whole.
            let stopped = self.stop_all();
            if let Some(lan) = self.lan.as_mut() {
                lan.teardown();
            }
            self.partition = None;
            self.save()?;
            return stopped;
        }
        let healed = self.heal_if_possible();
        let stopped = self.stop_all();
        if let Some(cluster_id) = self.nodes.first().and_then(|n| n.cluster_id().ok()) {
            drop(crate::DockerCleanup::new(&cluster_id));
        }
        healed.and(stopped)
    }

    /// Kills node `name` with SIGKILL, as a crash or a power loss would.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node_mut(name)?;
        if !node.is_running() {
            bail!("{name} is not running");
        }
        node.kill()?;
        self.save()
    }

    /// Starts node `name` again (stopping it first if it runs) with the same data directory,
    /// address and ports and no join flags: its known peers bring it back. Returns once its
    /// API answers.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node_mut(name)?;
        node.opts.join = None;
        let restarted = node.restart();
        self.save()?;
        restarted.with_context(|| format!("cannot restart {name}"))
    }

    /// Stops every node gracefully (SIGTERM), all at once, and waits for them to exit.
    pub fn stop_all(&mut self) -> anyhow::Result<()> {
        let results = at_once(&mut self.nodes, |_| true, Node::shutdown);
        self.save()?;
        collect_errors(&self.names(), results, "stop")
    }

    /// Starts every node that does not run, all at once, without join flags; returns once
    /// every API answers.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        let results = at_once(
            &mut self.nodes,
            |_| true,
            |n| {
                if n.is_running() {
                    return Ok(());
                }
                n.opts.join = None;
                n.restart()
            },
        );
        self.save()?;
        collect_errors(&self.names(), results, "start")
    }

    /// Cuts the network between `groups` of nodes (by name): no packet passes from a node of
    /// one group to a node of another. Nodes in no group still reach everyone. Replaces any
    /// earlier partition.
    pub fn partition(&mut self, groups: &[Vec<String>]) -> anyhow::Result<()> {
        if let Some(lan) = &self.lan {
            lan.partition(groups)?;
            self.partition = Some(groups.to_vec());
            return self.save();
        }
        let mut ip_groups = Vec::with_capacity(groups.len());
        for g in groups {
            let mut ips = Vec::with_capacity(g.len());
            for name in g {
                ips.push(self.node_ip(name)?);
            }
            ip_groups.push(ips);
        }
        partition::apply(&self.id, &ip_groups)?;
        self.partition = Some(groups.to_vec());
        self.save()
    }

    /// Removes the partition: every node reaches every node again.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        if let Some(lan) = &self.lan {
            lan.heal()?;
            self.partition = None;
            return self.save();
        }
        partition::heal(&self.id)?;
        self.partition = None;
        self.save()
    }

    /// Heals when nftables is usable here; without nft there is nothing to heal.
    fn heal_if_possible(&mut self) -> anyhow::Result<()> {
        if partition::available().is_ok() {
            self.heal()
        } else {
            self.partition = None;
            self.save()
        }
    }

    /// The nodes, in order n1, n2, ...
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> anyhow::Result<&Node> {
        match self.nodes.iter().position(|n| n.opts.name == name) {
            Some(i) => Ok(&self.nodes[i]),
            None => bail!(self.unknown(name)),
        }
    }

    /// The node named `name`, to drive it.
    pub fn node_mut(&mut self, name: &str) -> anyhow::Result<&mut Node> {
        match self.nodes.iter().position(|n| n.opts.name == name) {
            Some(i) => Ok(&mut self.nodes[i]),
            None => bail!(self.unknown(name)),
        }
    }

    fn unknown(&self, name: &str) -> String {
        format!(
            "no node named {name:?} in {} (its nodes: {})",
            self.file_path().display(),
            self.names().join(", ")
        )
    }

    fn node_ip(&self, name: &str) -> anyhow::Result<Ipv4Addr> {
        let node = self.node(name)?;
        node.opts
            .ip
            .parse()
            .with_context(|| format!("{name} has a bad address {:?}", node.opts.ip))
    }

    /// The nodes' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.opts.name.clone()).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/cluster.json`.
    pub fn file_path(&self) -> PathBuf {
        self.dir.join(CLUSTER_FILE)
    }

    /// The testnet's id (its nftables table is `inet shoal_tn_<id>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Node `name`'s `GET /shoal/v1/status`.
    pub fn status(&self, name: &str) -> anyhow::Result<Value> {
        let node = self.node(name)?;
        let (code, v) = node.api()?.get(STATUS_PATH)?;
        if code != 200 {
            bail!("GET {STATUS_PATH} on {name}: {code} {v}");
        }
        Ok(v)
    }

    /// The name `node` has in the cluster: its own, or on a host, the one its config file
    /// gives it.
    pub fn member_name(&self, node: &Node) -> String {
        node.opts
            .host
            .as_ref()
            .and_then(|h| config_node_name(&h.config_file))
            .unwrap_or_else(|| node.opts.name.clone())
    }

    /// Waits until every node's status lists every node of the testnet as an alive member.
    pub fn wait_members_alive(&self, timeout: Duration) -> anyhow::Result<()> {
        let names: Vec<String> = self.nodes.iter().map(|n| self.member_name(n)).collect();
        for node in &self.nodes {
            let name = &node.opts.name;
            wait_until(
                timeout,
                &format!("{name} to see members {} alive", names.join(", ")),
                || {
                    let status = self.status(name)?;
                    match all_alive(&status, &names) {
                        Ok(()) => Ok(Some(())),
                        Err(why) => bail!("{why}"),
                    }
                },
            )?;
        }
        Ok(())
    }

    /// The last `lines` lines of every node's log, each under a header, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log = n.log();
            let all: Vec<&str> = log.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            out.push_str(&format!(
                "=== {} ({}) ===\n{}\n",
                n.opts.name,
                n.log_path().display(),
                tail.join("\n")
            ));
        }
        out
    }

    /// Every node's whole log, each under a header.
    pub fn logs(&self) -> String {
        self.log_tails(usize::MAX)
    }

    /// What `cluster.json` says now.
    pub fn describe(&self) -> ClusterFile {
        ClusterFile {
            admin_token: self.admin_token.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|n| {
                    let on_host = self.lan.as_ref().filter(|_| n.opts.host.is_some());
                    NodeEntry {
                        name: n.opts.name.clone(),
                        api_url: n.url(),
                        dns_addr: on_host.map(|_| format!("{}:53", n.opts.ip)),
                        p2p_addr: n.p2p_addr().to_string(),
                        advertise_addr: n.opts.ip.clone(),
                        pid: n.pid(),
                        data_dir: n.opts.data_dir.clone(),
                        log_file: n.log_path().to_path_buf(),
                        node_name: Some(self.member_name(n)).filter(|m| *m != n.opts.name),
                        netns: n.opts.host.as_ref().map(|h| h.netns.clone()),
                        lan_addr: on_host.map(|_| n.opts.ip.clone()),
                        engine_socket: on_host
                            .map(|l| format!("unix://{}", l.paths(&n.opts.name).socket.display())),
                    }
                })
                .collect(),
            testnet_id: self.id.clone(),
            partition: self.partition.clone(),
            lan: self.lan.as_ref().map(|l| LanEntry {
                subnet: l.subnet(),
                bridge: l.bridge(),
                octet: l.octet(),
            }),
        }
    }

    /// Writes `cluster.json` (atomically: readers never see half a file).
    fn save(&mut self) -> anyhow::Result<()> {
        // Refresh the pids: a node that died on its own has none.
        for n in &mut self.nodes {
            n.is_running();
        }
        let bytes = serde_json::to_vec_pretty(&self.describe())?;
        let path = self.file_path();
        let tmp = self.dir.join(format!(".{CLUSTER_FILE}.tmp"));
        fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    fn kill_all(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Disaster recovery (the backup tests): losing a node's data, and starting a node anew from a
// join token, as an operator who rebuilds a cluster does.
impl Cluster {
    /// Deletes everything in node `name`'s data directory but its log, as a lost disk or a
    /// reinstalled machine would. The node must be stopped.
    pub fn wipe_data(&mut self, name: &str) -> anyhow::Result<()> {
        let node = self.node_mut(name)?;
        if node.is_running() {
            bail!("{name} runs: stop it before wiping its data directory");
        }
        let dir = node.opts.data_dir.clone();
        let log = node.log_path().to_path_buf();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path == log {
                continue;
            }
            if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }

    /// Starts node `name` (stopped, typically with a wiped data directory) with
    /// `--join join_addr --token token`, as `shoald --token` on a new machine; later restarts
    /// go without the flags. Returns once its API answers.
    pub fn start_with_token(
        &mut self,
        name: &str,
        join_addr: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        let node = self.node_mut(name)?;
        node.opts.join = Some((join_addr.to_string(), token.to_string()));
        let started = node.restart();
        node.opts.join = None;
        if started.is_ok() {
            self.admin_token = self.nodes[0].token()?;
        }
        self.save()?;
        started.with_context(|| format!("cannot start {name} with a join token"))
    }
}

// ---------------------------------------------------------------------------------------------
// Testnets of hosts ([`crate::hosts`]): each node on a machine of its own, with its own engine,
// and the faults only machines have.

/// `shoald`'s config file in a host's directory.
pub const HOST_CONFIG: &str = "shoald.toml";

/// How to start a testnet of hosts.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// The hosts whose engine gets the test image ([`crate::image::ECHO_IMAGE`]) at `up`;
    /// None: every host.
    pub image_on: Option<Vec<String>>,
    /// Extra environment of every host's `shoald` (test hooks such as
    /// `SHOAL_TEST_IMAGE_SEND_BYTES_PER_SEC`).
    pub env: Vec<(String, String)>,
    /// Hosts on a second subnet behind the machine as a router ([`Lan::set_far`]).
    pub far_hosts: Vec<String>,
}

impl Cluster {
    /// Starts `n` hosts in `dir` (`dir/h1`, ...), each with its own network namespace on a
    /// LAN bridge, its own Docker engine and its own `shoald` with a config file; h1 creates
    /// the cluster, the others join it. Returns once every node sees all members alive. The
    /// hosts die with the returned handle.
    pub fn up_hosts(n: usize, dir: &Path, opts: &HostOptions) -> anyhow::Result<Cluster> {
        Cluster::start_hosts(n, dir, opts, false)
    }

    /// [`Cluster::up_hosts`] for the command line: the hosts outlive the handle.
    pub fn up_hosts_detached(n: usize, dir: &Path, opts: &HostOptions) -> anyhow::Result<Cluster> {
        Cluster::start_hosts(n, dir, opts, true)
    }

    fn start_hosts(
        n: usize,
        dir: &Path,
        opts: &HostOptions,
        detached: bool,
    ) -> anyhow::Result<Cluster> {
        if n == 0 || n > crate::hosts::MAX_HOSTS {
            bail!(
                "a testnet has 1 to {} hosts, not {n}",
                crate::hosts::MAX_HOSTS
            );
        }
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        if dir.join(CLUSTER_FILE).exists() {
            bail!(
                "{} exists: {} already holds a testnet (take it down and remove the \
                 directory, or choose another)",
                dir.join(CLUSTER_FILE).display(),
                dir.display()
            );
        }
        let id = new_id();
        let mut lan = Lan::create(&id, &dir, !detached)?;
        lan.set_far(&opts.far_hosts)?;
        let mut cluster = Cluster {
            dir,
            id,
            admin_token: String::new(),
            nodes: Vec::with_capacity(n),
            partition: None,
            owned: !detached,
            lan: Some(lan),
        };
        let started = (|| {
            for _ in 0..n {
                let name = cluster.add_host_engine()?;
                let wanted = opts.image_on.as_ref().is_none_or(|on| on.contains(&name));
                if wanted {
                    cluster.load_image(&name, crate::image::ECHO_IMAGE)?;
                }
                cluster.start_host_node(&name, None, &opts.env)?;
            }
            cluster.admin_token = cluster.nodes[0].token()?;
            cluster.save()?;
            cluster
                .wait_members_alive(UP_TIMEOUT)
                .map_err(|e| anyhow::anyhow!("{e:#}\n{}", cluster.log_tails(40)))
        })();
        if let Err(e) = started {
            if detached {
                cluster.kill_all();
                if let Some(lan) = cluster.lan.as_mut() {
                    lan.teardown();
                }
            }
            return Err(e);
        }
        Ok(cluster)
    }

    /// The machine's own address on the hosts' LAN (the bridge's), where a test's registry
    /// listens for the hosts.
    pub fn lan_gateway(&self) -> anyhow::Result<std::net::Ipv4Addr> {
        Ok(crate::hosts::gateway_addr(self.lan()?.octet()))
    }

    /// A registry (Debian's `docker-registry`, plain HTTP, as a home lab's) on this machine's
    /// address on the hosts' LAN, on a free port: every host may pull from it.
    pub fn lan_registry(&self) -> anyhow::Result<crate::registry::Registry> {
        let gateway = self.lan_gateway()?;
        let port = crate::free_port(&gateway.to_string())?;
        crate::registry::Registry::start(crate::registry::RegistryOptions {
            addr: Some(std::net::SocketAddr::from((gateway, port))),
            ..Default::default()
        })
    }

    fn lan(&self) -> anyhow::Result<&Lan> {
        self.lan
            .as_ref()
            .context("this testnet's nodes are on loopback, not on hosts (`up --hosts N`)")
    }

    fn lan_mut(&mut self) -> anyhow::Result<&mut Lan> {
        self.lan
            .as_mut()
            .context("this testnet's nodes are on loopback, not on hosts (`up --hosts N`)")
    }

    /// Whether the nodes are on hosts.
    pub fn on_hosts(&self) -> bool {
        self.lan.is_some()
    }

    /// Makes the next host with its engine; returns its name.
    fn add_host_engine(&mut self) -> anyhow::Result<String> {
        let name = self.lan_mut()?.add_host()?;
        Ok(name)
    }

    /// Writes host `name`'s `shoald.toml` (node name `node_name`, else the host's) and starts
    /// its `shoald`, joining a running node unless it is the first.
    fn start_host_node(
        &mut self,
        name: &str,
        node_name: Option<&str>,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        let lan = self.lan()?;
        let addr = lan.addr(name)?;
        let paths = lan.paths(name);
        let data_dir = paths.root.join("data");
        let config_file = paths.root.join(HOST_CONFIG);
        let mut config = toml::Table::new();
        let text = |v: &str| toml::Value::String(v.to_string());
        config.insert("data-dir".into(), text(&data_dir.to_string_lossy()));
        config.insert("node-name".into(), text(node_name.unwrap_or(name)));
        config.insert("api-listen".into(), text(&format!("{addr}:7070")));
        config.insert("advertise".into(), text(&addr.to_string()));
        config.insert("mdns".into(), toml::Value::Boolean(false));
        // No resolver outside the test: names outside the cluster domain get REFUSED.
        config.insert("dns-upstream".into(), toml::Value::Array(Vec::new()));
        config.insert(
            "docker-host".into(),
            text(&format!("unix://{}", paths.socket.display())),
        );
        // Images come from a test's registry on the LAN (the machine's address on it) or
        // from other hosts, never from outside.
        config.insert(
            "allowed-registries".into(),
            toml::Value::Array(vec![text(&lan.subnet())]),
        );
        fs::write(&config_file, toml::to_string(&config)?)
            .with_context(|| format!("cannot write {}", config_file.display()))?;
        let mut opts = NodeOptions::new(name, &data_dir);
        opts.ip = addr.to_string();
        opts.env.extend(env.iter().cloned());
        opts.host = Some(OnHost {
            netns: paths.netns.clone(),
            config_file,
        });
        if let Some(first) = self
            .nodes
            .iter_mut()
            .find_map(|n| n.is_running().then_some(&*n))
        {
            opts = opts.joining(first)?;
        }
        let detached = !self.owned;
        let api_addr = std::net::SocketAddr::new(addr.into(), 7070);
        let p2p_addr = std::net::SocketAddr::new(addr.into(), 7946);
        let log = paths.root.join(LOG_FILE);
        let mut node = Node::start_on(opts, api_addr, p2p_addr, log, detached)
            .with_context(|| format!("cannot start shoald on {name} ({addr})"))?;
        node.opts.join = None;
        self.nodes.push(node);
        self.save()
    }

    /// Adds a host to the running testnet: its engine (with the test image when the machine's
    /// engine has it) and its `shoald`, joining a running node. A partition in force applies
    /// to it as it joins when it names the host. `node_name`: the node's name in the cluster,
    /// which may repeat another's. Returns the host's name without waiting for membership.
    pub fn add_host(&mut self, node_name: Option<&str>) -> anyhow::Result<String> {
        let name = self.add_host_engine()?;
        if crate::image::image_present(crate::image::ECHO_IMAGE) {
            self.load_image(&name, crate::image::ECHO_IMAGE)?;
        }
        self.start_host_node(&name, node_name, &[])?;
        Ok(name)
    }

    /// Adds one host per entry of `node_names` (each a node name, else the host's), their
    /// engines first, then their `shoald`s one right after the other, so that the nodes join
    /// at once. Returns the hosts' names without waiting for membership.
    pub fn add_hosts_at_once(
        &mut self,
        node_names: &[Option<&str>],
    ) -> anyhow::Result<Vec<String>> {
        let mut hosts = Vec::new();
        for _ in node_names {
            let name = self.add_host_engine()?;
            if crate::image::image_present(crate::image::ECHO_IMAGE) {
                self.load_image(&name, crate::image::ECHO_IMAGE)?;
            }
            hosts.push(name);
        }
        for (name, node_name) in hosts.iter().zip(node_names) {
            self.start_host_node(name, *node_name, &[])?;
        }
        Ok(hosts)
    }

    /// Powers host `name` off: its link down first, then SIGKILL to its `shoald`, engine and
    /// containers, and what a reboot clears is gone.
    pub fn power_off(&mut self, name: &str) -> anyhow::Result<()> {
        self.lan()?.unplug(name)?;
        let _ = self.node_mut(name)?.kill();
        self.lan_mut()?.power_off(name)?;
        self.save()
    }

    /// Boots host `name` as its machine would: network, engine, then `shoald` with its config
    /// file (no join flags: it finds its peers as after any restart). Returns once its API
    /// answers.
    pub fn boot(&mut self, name: &str) -> anyhow::Result<()> {
        self.lan_mut()?.boot(name)?;
        let node = self.node_mut(name)?;
        node.opts.join = None;
        let started = node.restart();
        self.save()?;
        started.with_context(|| format!("cannot start shoald on {name}"))
    }

    /// Boots every host that is off, all at once (a whole cluster getting its power back).
    pub fn boot_all(&mut self) -> anyhow::Result<()> {
        let off: Vec<String> = {
            let lan = self.lan()?;
            self.names().into_iter().filter(|n| !lan.is_on(n)).collect()
        };
        // The networks and engines one after the other (quick), then every shoald at once.
        for name in &off {
            self.lan_mut()?.boot(name)?;
        }
        let results = at_once(
            &mut self.nodes,
            |n| off.contains(&n.opts.name),
            |n| {
                n.opts.join = None;
                n.restart()
            },
        );
        self.save()?;
        collect_errors(&off, results, "boot")
    }

    /// Host `name`'s link down: it runs on, cut off from the LAN.
    pub fn unplug(&mut self, name: &str) -> anyhow::Result<()> {
        self.lan()?.unplug(name)
    }

    /// Host `name`'s link up again.
    pub fn plug(&mut self, name: &str) -> anyhow::Result<()> {
        self.lan()?.plug(name)
    }

    /// Stops host `name`'s engine while its `shoald` runs.
    pub fn engine_stop(&mut self, name: &str) -> anyhow::Result<()> {
        self.lan_mut()?.engine_stop(name)
    }

    /// Starts host `name`'s engine again.
    pub fn engine_start(&mut self, name: &str) -> anyhow::Result<()> {
        self.lan_mut()?.engine_start(name)
    }

    /// Runs `cmd` in host `name` as a LAN client there, its resolver the host's DNS server.
    pub fn exec(&self, name: &str, cmd: &[String]) -> anyhow::Result<crate::CliOutput> {
        self.lan()?.exec(name, cmd)
    }

    /// Host `name`'s network namespace (`ip netns exec` it to act as a client there).
    pub fn netns(&self, name: &str) -> anyhow::Result<String> {
        let lan = self.lan()?;
        lan.addr(name)?;
        Ok(lan.paths(name).netns)
    }

    /// Copies `image` from the machine's engine into host `name`'s.
    pub fn load_image(&self, name: &str, image: &str) -> anyhow::Result<()> {
        self.lan()?.load_image(name, image)
    }

    /// `docker` against host `name`'s engine, with `args`; fails when it exits non-zero.
    pub fn docker(&self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let socket = self.lan()?.paths(name).socket;
        let out = std::process::Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(args)
            .output()
            .context("cannot run docker")?;
        if !out.status.success() {
            bail!(
                "docker {} on {name}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `shoal.pod` labels of the containers running in host `name`'s engine; none when
    /// the host is off or its engine does not answer (it runs nothing).
    pub fn running_pods(&self, name: &str) -> Vec<String> {
        if !self.lan().is_ok_and(|l| l.is_on(name)) {
            return Vec::new();
        }
        let mut pods: Vec<String> = self
            .docker(
                name,
                &[
                    "ps",
                    "--filter",
                    "status=running",
                    "--filter",
                    "label=shoal.pod",
                    "--format",
                    "{{.Label \"shoal.namespace\"}}/{{.Label \"shoal.pod\"}}",
                ],
            )
            .map(|out| out.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        pods.sort();
        pods
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Never leak rules: a partition outliving its test would cut addresses that a later
        // testnet may pick. The nodes themselves die in their own Drop.
        if self.partition.is_some() {
            let _ = partition::heal(&self.id);
        }
        self.kill_all();
    }
}

/// The `node-name` a host's `shoald.toml` sets.
fn config_node_name(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let v: toml::Value = toml::from_str(&text).ok()?;
    v.get("node-name")?.as_str().map(str::to_string)
}

/// Whether a status (`GET /shoal/v1/status`) lists every one of `names` as an alive member;
/// `Err` says which is not.
pub fn all_alive(status: &Value, names: &[String]) -> Result<(), String> {
    let Some(members) = status["members"].as_array() else {
        return Err(format!("status has no members list: {status}"));
    };
    let mut missing = Vec::new();
    for name in names {
        let state = members
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .map(|m| m["state"].as_str().unwrap_or("?"));
        match state {
            Some("alive") => {}
            Some(s) => missing.push(format!("{name} is {s}")),
            None => missing.push(format!("{name} is not a member")),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        let node = status["node"].as_str().unwrap_or("?");
        Err(format!("{node} sees: {}", missing.join(", ")))
    }
}

/// Runs `f` on every node `pick` selects, each on a thread of its own, all at once: the
/// results in the nodes' order (a panic is an error).
fn at_once(
    nodes: &mut [Node],
    pick: impl Fn(&Node) -> bool,
    f: impl Fn(&mut Node) -> anyhow::Result<()> + Sync,
) -> Vec<anyhow::Result<()>> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter_mut()
            .filter(|n| pick(n))
            .map(|n| s.spawn(move || f(n)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
            })
            .collect()
    })
}

fn collect_errors(
    names: &[String],
    results: Vec<anyhow::Result<()>>,
    what: &str,
) -> anyhow::Result<()> {
    let failed: Vec<String> = names
        .iter()
        .zip(results)
        .filter_map(|(n, r)| r.err().map(|e| format!("{n}: {e:#}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("cannot {what} every node:\n{}", failed.join("\n"))
    }
}

/// `n` addresses `127.A.B.1..=n` of a random /24 inside 127.0.0.0/8 (never 127.0.x.x, where
/// 127.0.0.1 and 127.0.1.1 live), each checked usable by binding TCP and UDP on it.
pub fn pick_addresses(n: usize) -> anyhow::Result<Vec<Ipv4Addr>> {
    if n == 0 || n > MAX_NODES {
        bail!("a testnet has 1 to {MAX_NODES} addresses, not {n}");
    }
    let mut last = String::new();
    for _ in 0..20 {
        let r = random_u64();
        let (a, b) = subnet_of(r);
        let ips: Vec<Ipv4Addr> = (1..=n).map(|k| Ipv4Addr::new(127, a, b, k as u8)).collect();
        match ips.iter().try_for_each(|ip| usable(*ip)) {
            Ok(()) => return Ok(ips),
            Err(e) => last = format!("{e:#}"),
        }
    }
    bail!("no usable loopback /24 found for the testnet: {last}")
}

/// The /24 `127.a.b.0` a random number picks: `a` in 1..=254, so never 127.0.x.x.
fn subnet_of(r: u64) -> (u8, u8) {
    let a = 1 + (r % 254) as u8;
    let b = ((r >> 8) % 256) as u8;
    (a, b)
}

fn usable(ip: Ipv4Addr) -> anyhow::Result<()> {
    TcpListener::bind((ip, 0)).with_context(|| format!("cannot bind TCP on {ip}"))?;
    UdpSocket::bind((ip, 0)).with_context(|| format!("cannot bind UDP on {ip}"))?;
    Ok(())
}

/// A new random testnet id: 8 hex digits.
pub fn new_id() -> String {
    format!("{:08x}", random_u64() as u32)
}

/// A random number from std's randomly keyed hasher (no crate needed for an address pick).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn all_alive_needs_every_name_alive() {
        let status = json!({
            "node": "n1",
            "members": [
                {"name": "n1", "state": "alive"},
                {"name": "n2", "state": "suspect"},
                {"name": "n3", "state": "alive"},
            ]
        });
        assert_eq!(all_alive(&status, &names(&["n1", "n3"])), Ok(()));
        assert_eq!(
            all_alive(&status, &names(&["n1", "n2", "n3", "n4"])),
            Err("n1 sees: n2 is suspect, n4 is not a member".to_string())
        );
        assert!(all_alive(&json!({"node": "n1"}), &names(&["n1"])).is_err());
    }

    #[test]
    fn subnets_avoid_127_0() {
        for r in [0u64, 1, 253, 254, 255, 0xffff, u64::MAX, 0x1234_5678_9abc] {
            let (a, _) = subnet_of(r);
            assert!((1..=254).contains(&a), "{r}: {a}");
        }
    }

    #[test]
    fn picked_addresses_are_one_bindable_24() {
        let ips = pick_addresses(3).unwrap();
        assert_eq!(ips.len(), 3);
        for (k, ip) in ips.iter().enumerate() {
            let o = ip.octets();
            assert_eq!(o[0], 127);
            assert_ne!(o[1], 0);
            assert_eq!(o[3] as usize, k + 1);
            assert_eq!(&o[..3], &ips[0].octets()[..3]);
        }
    }

    #[test]
    fn cluster_file_fields_are_the_documented_ones() {
        let f = ClusterFile {
            admin_token: "t".into(),
            nodes: vec![NodeEntry {
                name: "n1".into(),
                api_url: "http://127.5.6.1:4000".into(),
                dns_addr: None,
                p2p_addr: "127.5.6.1:4001".into(),
                advertise_addr: "127.5.6.1".into(),
                pid: Some(42),
                data_dir: "/tmp/x/n1".into(),
                log_file: "/tmp/x/n1/shoald.log".into(),
                node_name: None,
                netns: None,
                lan_addr: None,
                engine_socket: None,
            }],
            testnet_id: "0badcafe".into(),
            partition: Some(vec![names(&["n1"]), names(&["n2"])]),
            lan: None,
        };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(
            v,
            json!({
                "adminToken": "t",
                "nodes": [{
                    "name": "n1",
                    "apiUrl": "http://127.5.6.1:4000",
                    "dnsAddr": null,
                    "p2pAddr": "127.5.6.1:4001",
                    "advertiseAddr": "127.5.6.1",
                    "pid": 42,
                    "dataDir": "/tmp/x/n1",
                    "logFile": "/tmp/x/n1/shoald.log",
                }],
                "testnetId": "0badcafe",
                "partition": [["n1"], ["n2"]],
            })
        );
        let back: ClusterFile = serde_json::from_value(v).unwrap();
        assert_eq!(back, f);
    }
}
