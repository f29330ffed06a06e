//! Starting, stopping and killing `shoald` processes, and running `shoal` against them.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The registries a loopback testnet's nodes may pull from.
pub const LOOPBACK_REGISTRIES: &str = "127.0.0.0/8";

/// The path of a binary of this workspace (`shoald`, `shoal`). `SHOAL_BIN_DIR` names the
/// directory when set; otherwise the binary sits beside the running test's target directory
/// and is built (once per process) so that it matches the sources.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SHOAL_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
        bail!("{} does not exist (SHOAL_BIN_DIR)", p.display());
    }
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    // Tests run from target/<profile>/deps/; binaries live in target/<profile>/.
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    ensure_built(name, &dir)?;
    if !path.exists() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

/// Builds the workspace's binaries once per process, in the profile of the running tests, so
/// that a test never runs a stale `shoald`. Cargo finds nothing to do when the test run (or
/// `.ci/run`'s `cargo build --workspace --bins`) has already built them. All of them at once,
/// for the whole workspace: a build of one package alone resolves other features for the
/// shared dependencies and so compiles them all again.
fn ensure_built(name: &str, profile_dir: &Path) -> anyhow::Result<()> {
    static BUILT: OnceLock<Mutex<bool>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(false));
    // A std Mutex: held across a blocking build on purpose, so that parallel tests in one
    // process build once; there is no async code here.
    let mut done = built.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    if !matches!(name, "shoald" | "shoal" | "shoal-testnet" | "shoal-echo") {
        bail!("unknown binary {name}");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--workspace", "--bins"]);
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = cmd
        .current_dir(workspace)
        .status()
        .with_context(|| format!("cannot run cargo to build {name}"))?;
    if !status.success() {
        bail!("cargo build of the workspace's binaries failed");
    }
    *done = true;
    Ok(())
}

/// A free TCP port on `ip` (bound, then released: good enough for tests on loopback).
pub fn free_port(ip: &str) -> anyhow::Result<u16> {
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("cannot bind {ip}:0"))?;
    Ok(l.local_addr()?.port())
}

/// A port on `ip` that is free for both TCP and UDP (QUIC), other than `not` (the API's).
pub(crate) fn free_p2p_addr(ip: &str, not: u16) -> anyhow::Result<SocketAddr> {
    for _ in 0..50 {
        let port = free_port(ip)?;
        if port != not && std::net::UdpSocket::bind((ip, port)).is_ok() {
            return Ok(format!("{ip}:{port}").parse()?);
        }
    }
    bail!("no port free for TCP and UDP on {ip}")
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub name: String,
    pub data_dir: PathBuf,
    /// The loopback address the node uses (127.0.0.x).
    pub ip: String,
    /// Extra flags for `shoald`.
    pub extra_args: Vec<String>,
    /// Join a cluster: the p2p address (`ip:port`) of one of its nodes, and the join token
    /// (see [`Node::join_token`]). Used on every (re)start while set.
    pub join: Option<(String, String)>,
    /// The DNS upstream (`ip:port`, loopback only); [`NO_UPSTREAM`] when None.
    pub dns_upstream: Option<String>,
    /// The node runs on a test host ([`crate::hosts`]), from its config file there.
    pub host: Option<OnHost>,
    /// The environment `shoald` gets beyond the log level (test hooks).
    pub env: Vec<(String, String)>,
}

/// Where a node on a test host runs: inside the host's network namespace, with the settings
/// of its own config file (as a machine's would give them: address, ports, engine socket).
#[derive(Debug, Clone)]
pub struct OnHost {
    pub netns: String,
    pub config_file: PathBuf,
}

impl NodeOptions {
    pub fn new(name: &str, data_dir: &Path) -> Self {
        NodeOptions {
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            ip: "127.0.0.1".into(),
            extra_args: Vec::new(),
            join: None,
            dns_upstream: None,
            host: None,
            env: Vec::new(),
        }
    }

    /// The same options, joining the cluster of `node`.
    pub fn joining(mut self, node: &Node) -> anyhow::Result<Self> {
        self.join = Some((node.p2p_addr().to_string(), node.join_token()?));
        Ok(self)
    }
}

/// Where test nodes forward names outside the cluster domain unless a test says otherwise:
/// a loopback port where nothing answers, so that no query ever leaves the machine for the
/// host's real resolvers.
pub const NO_UPSTREAM: &str = "127.0.0.1:9";

/// The pod range of a light testnet whose nodes live on `127.A.B.0/24`: the clusters that run
/// at once share the machine's engine, where two pod networks may not overlap, so each takes
/// a `/20` of 10.0.0.0/8 (16 nodes' subnets) picked by `A` and `B`, away from the host
/// testnets' LAN (10.213.0.0/16) and the default range (10.42.0.0/16).
pub fn loopback_pod_range(ip: &str) -> String {
    let o = ip
        .parse::<std::net::Ipv4Addr>()
        .map_or([127, 1, 1, 1], |a| a.octets());
    let index = (u32::from(o[1]) * 256 + u32::from(o[2])) % 4096;
    let mut second = index / 16;
    if second == 213 || second == 42 {
        second += 1;
    }
    format!("10.{second}.{}.0/20", (index % 16) * 16)
}

/// The flags every test node gets for the p2p network: its own address and port, and no
/// mDNS (tests run in parallel and must never discover each other); and for DNS: port 53 on
/// its own address, and an upstream on loopback.
fn p2p_args(
    p2p_addr: SocketAddr,
    join: Option<&(String, String)>,
    dns_upstream: Option<&str>,
) -> Vec<String> {
    let mut args = vec![
        "--p2p-listen".to_string(),
        p2p_addr.to_string(),
        "--no-mdns".to_string(),
        "--dns-listen".to_string(),
        SocketAddr::new(p2p_addr.ip(), 53).to_string(),
        "--dns-upstream".to_string(),
        dns_upstream.unwrap_or(NO_UPSTREAM).to_string(),
    ];
    if let Some((addr, token)) = join {
        args.extend([
            "--join".into(),
            addr.clone(),
            "--token".into(),
            token.clone(),
        ]);
    }
    args
}

/// A running (or stopped) `shoald` process.
pub struct Node {
    pub opts: NodeOptions,
    pub api_addr: SocketAddr,
    /// Where the node's p2p network listens (TCP and QUIC); the same across restarts.
    pub p2p_addr: SocketAddr,
    child: Option<Child>,
    log_path: PathBuf,
    /// Runs in its own process group and outlives this handle: dropping the handle neither
    /// kills the process nor removes anything (nodes of `shoal-testnet up`).
    detached: bool,
    /// The pid of a detached process this handle has no `Child` for (started by this handle
    /// and released, or by another `shoal-testnet` run).
    foreign_pid: Option<u32>,
}

impl Node {
    /// Starts a node and waits until its API answers.
    pub fn start(opts: NodeOptions) -> anyhow::Result<Node> {
        fs::create_dir_all(&opts.data_dir)?;
        let port = free_port(&opts.ip)?;
        let api_addr: SocketAddr = format!("{}:{port}", opts.ip).parse()?;
        let p2p_addr = free_p2p_addr(&opts.ip, port)?;
        let log_path = opts
            .data_dir
            .parent()
            .unwrap_or(&opts.data_dir)
            .join(format!("{}.log", opts.name));
        let mut node = Node {
            opts,
            api_addr,
            p2p_addr,
            child: None,
            log_path,
            detached: false,
            foreign_pid: None,
        };
        node.spawn()?;
        Ok(node)
    }

    /// Starts a node on the given API and p2p addresses with its log at `log_path`, and waits
    /// until its API answers. A `detached` node runs in its own process group and survives
    /// this handle and this process (see [`Node::adopt`] to drive it later).
    pub fn start_on(
        opts: NodeOptions,
        api_addr: SocketAddr,
        p2p_addr: SocketAddr,
        log_path: PathBuf,
        detached: bool,
    ) -> anyhow::Result<Node> {
        fs::create_dir_all(&opts.data_dir)?;
        let mut node = Node {
            opts,
            api_addr,
            p2p_addr,
            child: None,
            log_path,
            detached,
            foreign_pid: None,
        };
        node.spawn()?;
        Ok(node)
    }

    /// A handle on a detached node that another process started: `pid` when it runs. The
    /// handle signals the pid only while it is a `shoald` of this node's data directory, so
    /// a stale pid never hits an unrelated process.
    pub fn adopt(
        opts: NodeOptions,
        api_addr: SocketAddr,
        p2p_addr: SocketAddr,
        log_path: PathBuf,
        pid: Option<u32>,
    ) -> Node {
        Node {
            opts,
            api_addr,
            p2p_addr,
            child: None,
            log_path,
            detached: true,
            foreign_pid: pid,
        }
    }

    /// Where the node logs.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the process runs now (for a detached one: its pid is a live `shoald` of this
    /// node's data directory).
    pub fn is_running(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            return matches!(child.try_wait(), Ok(None));
        }
        self.live_foreign_pid().is_some()
    }

    fn live_foreign_pid(&self) -> Option<u32> {
        self.foreign_pid
            .filter(|pid| is_shoald_of(*pid, &self.opts.data_dir))
    }

    /// Stops the node with SIGTERM and waits for it to exit, whoever started it; a node that
    /// does not run is no error.
    pub fn shutdown(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop()?;
            return Ok(());
        }
        if let Some(pid) = self.live_foreign_pid() {
            signal(pid, "TERM")?;
            if !wait_gone(pid, &self.opts.data_dir, Duration::from_secs(30)) {
                signal(pid, "KILL")?;
                wait_gone(pid, &self.opts.data_dir, Duration::from_secs(5));
                bail!("shoald {pid} did not stop within 30 s of SIGTERM; killed it");
            }
        }
        self.foreign_pid = None;
        Ok(())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open {}", self.log_path.display()))?;
        let mut cmd = match &self.opts.host {
            // As systemd would start it on the machine: its config file, and join flags on
            // the first start only.
            Some(host) => {
                let mut cmd = Command::new(crate::hosts::nsenter());
                cmd.arg(format!("--net=/var/run/netns/{}", host.netns))
                    .arg(bin_path("shoald")?)
                    .arg("--config")
                    .arg(&host.config_file)
                    .arg("--data-dir")
                    .arg(&self.opts.data_dir);
                if let Some((addr, token)) = &self.opts.join {
                    cmd.args(["--join", addr, "--token", token]);
                }
                cmd
            }
            None => {
                let mut cmd = Command::new(bin_path("shoald")?);
                cmd.arg("--data-dir")
                    .arg(&self.opts.data_dir)
                    .args(["--node-name", &self.opts.name])
                    .args(["--api-listen", &self.api_addr.to_string()])
                    .args(["--advertise", &self.opts.ip])
                    .args(p2p_args(
                        self.p2p_addr,
                        self.opts.join.as_ref(),
                        self.opts.dns_upstream.as_deref(),
                    ))
                    // Test traffic stays on the machine: a pod's image can come from a
                    // registry on loopback only (a test's own), never from outside.
                    .env("SHOAL_ALLOWED_REGISTRIES", LOOPBACK_REGISTRIES)
                    .env("SHOAL_POD_RANGE", loopback_pod_range(&self.opts.ip));
                cmd
            }
        };
        if self.detached {
            // Its own process group: a Ctrl-C in the terminal of `shoal-testnet up` must not
            // reach the nodes it leaves running.
            use std::os::unix::process::CommandExt as _;
            cmd.process_group(0);
        }
        let child = cmd
            .args(&self.opts.extra_args)
            .env("SHOAL_LOG", "info")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start shoald")?;
        self.child = Some(child);
        self.foreign_pid = None;
        let ready = self.wait_ready(Duration::from_secs(30));
        if self.detached {
            let mut child = self.child.take();
            match &ready {
                // Dropping a `Child` leaves the process running: it outlives this handle.
                Ok(()) => self.foreign_pid = child.as_ref().map(Child::id),
                Err(_) => {
                    if let Some(c) = child.as_mut() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                }
            }
        }
        ready
    }

    /// Polls `/healthz` until it answers, the process exits, or the deadline passes.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "shoald exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.url())).send()
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "shoald was not ready within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The base URL of the node's API.
    pub fn url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The admin token the node created.
    pub fn token(&self) -> anyhow::Result<String> {
        let p = self.opts.data_dir.join("admin.token");
        Ok(fs::read_to_string(&p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .trim()
            .to_string())
    }

    /// The node's p2p address (`ip:port`), what other nodes join.
    pub fn p2p_addr(&self) -> SocketAddr {
        self.p2p_addr
    }

    /// The node's join token, from the `join.token` file that shoald writes at start.
    pub fn join_token(&self) -> anyhow::Result<String> {
        let p = self.opts.data_dir.join("join.token");
        Ok(fs::read_to_string(&p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .trim()
            .to_string())
    }

    /// The id of the node's cluster (from its data directory).
    pub fn cluster_id(&self) -> anyhow::Result<String> {
        let p = self.opts.data_dir.join("cluster.json");
        let v: Value = serde_json::from_slice(
            &fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?,
        )?;
        v["clusterId"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{} has no clusterId", p.display()))
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id).or(self.foreign_pid)
    }

    /// An HTTP client that sends the admin token.
    pub fn api(&self) -> anyhow::Result<Api> {
        Ok(Api {
            base: self.url(),
            token: Some(self.token()?),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    /// Runs the `shoal` CLI against this node (SHOAL_NODE and SHOAL_TOKEN set, no config
    /// file), with `stdin` as its standard input.
    pub fn cli_with_input(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<CliOutput> {
        let mut cmd = Command::new(bin_path("shoal")?);
        cmd.args(args)
            .env("SHOAL_NODE", self.url())
            .env("SHOAL_TOKEN", self.token()?)
            .env(
                "SHOAL_CONFIG",
                self.opts.data_dir.join("no-such-cli-config.toml"),
            )
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("cannot run shoal")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        Ok(CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    pub fn cli(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        self.cli_with_input(args, None)
    }

    /// Stops the node with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("node {} is not running", self.opts.name);
        };
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill -TERM {} failed", child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("shoald did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the node with SIGKILL, as a crash or power loss would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        if let Some(pid) = self.live_foreign_pid() {
            signal(pid, "KILL")?;
            if !wait_gone(pid, &self.opts.data_dir, Duration::from_secs(10)) {
                bail!("shoald {pid} still runs 10 s after SIGKILL");
            }
        }
        self.foreign_pid = None;
        Ok(())
    }

    /// Starts the node again on the same address and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        if self.live_foreign_pid().is_some() {
            self.shutdown()?;
        }
        self.spawn()
    }

    /// Starts the process and returns how it exited, for nodes expected to refuse to start.
    pub fn run_to_exit(opts: &NodeOptions, timeout: Duration) -> anyhow::Result<CliOutput> {
        let port = free_port(&opts.ip)?;
        let p2p_addr = free_p2p_addr(&opts.ip, port)?;
        let mut child = Command::new(bin_path("shoald")?)
            .arg("--data-dir")
            .arg(&opts.data_dir)
            .args(["--node-name", &opts.name])
            .args(["--api-listen", &format!("{}:{port}", opts.ip)])
            .args(p2p_args(
                p2p_addr,
                opts.join.as_ref(),
                opts.dns_upstream.as_deref(),
            ))
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + timeout;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("shoald kept running for {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        Ok(CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The node's containers (a test that fails between a create and its cleanup must
        // not leave them running), then its pod network: Docker's default address pool holds
        // only about 30 bridge networks, so tests must not leave theirs behind.
        if let Ok(cluster_id) = self.cluster_id() {
            let ids = crate::cleanup::containers_with_labels(&[
                &format!("shoal.cluster={cluster_id}"),
                &format!("shoal.node={}", self.opts.name),
            ]);
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            let network = shoal_node::agent::spec::network_name(&cluster_id, &self.opts.name);
            let _ = Command::new("docker")
                .args(["network", "rm", &network])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether `pid` is a live (not zombie) `shoald` whose command line names `data_dir`: the
/// check before signalling a pid read from a file, which may be stale and reused.
fn is_shoald_of(pid: u32, data_dir: &Path) -> bool {
    !proc_state(pid).is_none_or(|s| s == "Z" || s == "X")
        && cmdline_is_shoald_of(pid, data_dir) == Some(true)
}

/// The state letter of `pid` in /proc (`R`, `S`, `Z`, ...); none when there is no such pid.
fn proc_state(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name, which may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next().map(str::to_string)
}

/// Whether `pid`'s command line is `shoald --data-dir <data_dir> ...`; none when it has no
/// command line any more (an exiting process has released its memory).
fn cmdline_is_shoald_of(pid: u32, data_dir: &Path) -> Option<bool> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if cmdline.is_empty() {
        return None;
    }
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_shoald = args
        .first()
        .is_some_and(|a| Path::new(&*String::from_utf8_lossy(a)).ends_with("shoald"));
    let dir = data_dir.as_os_str().as_encoded_bytes();
    Some(
        is_shoald
            && args
                .windows(2)
                .any(|w| w[0] == b"--data-dir" && w[1] == dir),
    )
}

/// Sends `SIGsig` to `pid` with kill(1) (this crate has no unsafe code for libc's kill).
fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill")?;
    // The process may have exited in between: that is what was wanted.
    if !status.success() && fs::metadata(format!("/proc/{pid}")).is_ok() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Waits until `pid`, `data_dir`'s shoald, has exited (a zombie, gone, or the pid reused by
/// another program); false when `timeout` passes first. An exiting process is not done while
/// it still holds its files: its listening sockets would keep a restart off its ports.
fn wait_gone(pid: u32, data_dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let exited = proc_state(pid).is_none_or(|s| s == "Z" || s == "X")
            || cmdline_is_shoald_of(pid, data_dir) == Some(false);
        if exited {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a `shoal` (or `shoald`) run printed and how it exited.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Fails with both streams when the command did not exit 0.
    pub fn success(self) -> anyhow::Result<CliOutput> {
        if self.code != 0 {
            bail!(
                "exit {}\nstdout:\n{}\nstderr:\n{}",
                self.code,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// A small HTTP client for a node's API.
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::blocking::Client,
}

impl Api {
    /// The same client with another token (None: no Authorization header).
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            base: self.base.clone(),
            token: token.map(str::to_string),
            http: self.http.clone(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let b = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    /// Sends a request; returns the status code and the JSON body (Null when not JSON).
    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut b = self.req(method, path);
        if let Some(body) = body {
            b = b
                .header("content-type", "application/yaml")
                .body(body.to_string());
        }
        let r = b.send()?;
        let code = r.status().as_u16();
        let text = r.text()?;
        Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::GET, path, None)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::DELETE, path, None)
    }

    /// `POST /shoal/v1/apply` of a manifest.
    pub fn apply(&self, manifest: &str) -> anyhow::Result<(u16, Value)> {
        self.send(
            reqwest::Method::POST,
            shoal_protocol::api::APPLY_PATH,
            Some(manifest),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loopback_pod_ranges_differ_by_testnet_and_avoid_the_lans() {
        assert_eq!(loopback_pod_range("127.5.6.1"), "10.80.96.0/20");
        assert_eq!(
            loopback_pod_range("127.5.6.3"),
            loopback_pod_range("127.5.6.1")
        );
        assert_ne!(
            loopback_pod_range("127.5.7.1"),
            loopback_pod_range("127.5.6.1")
        );
        for a in 1..=254u32 {
            for b in [0u32, 77, 255] {
                let r = loopback_pod_range(&format!("127.{a}.{b}.1"));
                assert!(!r.starts_with("10.213.") && !r.starts_with("10.42."), "{r}");
            }
        }
    }
}
