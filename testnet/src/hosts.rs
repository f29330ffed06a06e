//! Test hosts: machines simulated on this one, each a network namespace on a LAN bridge with
//! its own Docker engine, so that a testnet's nodes die with their containers, hold their own
//! images and talk to each other over a LAN (see `../shared/TESTBED.md` for the facts this is
//! built on, and docs/testnet.md).
//!
//! A [`Lan`] is one testnet's network: a bridge `stn<id>` on the machine with the address
//! `10.213.B.1/24` (the machine: the observer, never cut off), a blackhole route for the /24
//! that outlives the bridge (so that no packet for a powered-off host can ever leave the
//! machine), and an `iptables` rule that lets the bridge forward between its ports (the
//! machine's engine sets the `FORWARD` policy to DROP and bridged packets pass it). Host `hK`
//! is the namespace `stn-<id>-hK` with `eth0` at `10.213.B.(10+K)`, joined to the bridge by a
//! veth pair whose machine side is `v<id>hK`; hosts have no default route, so nothing they send
//! is routed off the LAN.
//!
//! Each host's engine is a `dockerd` started inside the namespace with its own config file,
//! data root and socket in the host's directory, its exec root under `/run/shoal-testnet`
//! (cleared at boot, as a machine's `/run` is), and its containers under the cgroup parent
//! `stn-<id>-hK`, which is how a power-off finds every process of the host: the namespace's
//! processes (engine, containerd, shims, `shoald`) and the cgroups' (containers, which have
//! namespaces of their own).
//!
//! Faults: [`Lan::power_off`] (link down first, so the host falls silent, then SIGKILL to every
//! process of the host, its leftover mounts unmounted and its namespace deleted, as a machine
//! that loses power keeps only its disk), [`Lan::boot`], [`Lan::unplug`] and [`Lan::plug`]
//! (the link), [`Lan::engine_stop`] and [`Lan::engine_start`], and partitions dropped at the
//! bridge ([`Lan::partition`], an nftables table of the `bridge` family).
//!
//! Every testnet leaves a marker, `/run/shoal-testnet/<id>.json`, naming what it made; a run
//! that was killed leaves it behind, and [`reap_stale`] (called by every new testnet) removes
//! the testnets whose owner process is gone. Testnets started for the command line have no
//! owner: `shoal-testnet down` or `shoal-testnet cleanup` removes them.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The first two octets of every test LAN: `10.213.B.0/24`, B in 1..=254.
pub const LAN_PREFIX: [u8; 2] = [10, 213];
/// Where markers and exec roots live (a tmpfs on Debian: gone at the machine's reboot, like
/// what it describes).
pub const RUN_DIR: &str = "/run/shoal-testnet";
/// The most hosts a LAN has: `.11` to `.254`.
pub const MAX_HOSTS: usize = 244;
/// How long an engine may take to answer after its start.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);
/// The route metric of the blackhole: higher than the bridge's connected route, which wins
/// while the bridge exists.
const BLACKHOLE_METRIC: &str = "4000";

/// The address of host `k` (1-based) on LAN `octet`.
pub fn host_addr(octet: u8, k: usize) -> Ipv4Addr {
    Ipv4Addr::new(LAN_PREFIX[0], LAN_PREFIX[1], octet, (10 + k) as u8)
}

/// The machine's own address on LAN `octet`: the bridge's.
pub fn gateway_addr(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(LAN_PREFIX[0], LAN_PREFIX[1], octet, 1)
}

/// Whether `ip` is a host's address on a test LAN that this machine has now (its /24 is
/// claimed): the only addresses besides loopback that test traffic may go to.
pub fn is_test_host(ip: std::net::IpAddr) -> bool {
    let std::net::IpAddr::V4(v4) = ip else {
        return false;
    };
    let o = v4.octets();
    o[..2] == LAN_PREFIX && o[3] > 10 && claim_path(o[2]).exists()
}

/// The index K of a host named `hK`; hosts are always named so.
pub fn host_index(name: &str) -> anyhow::Result<usize> {
    name.strip_prefix('h')
        .and_then(|k| k.parse::<usize>().ok())
        .filter(|k| (1..=MAX_HOSTS).contains(k))
        .with_context(|| format!("{name:?} is not a host name (h1, h2, ...)"))
}

/// The marker a testnet of hosts leaves in [`RUN_DIR`]: enough to remove all it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    pub id: String,
    /// B of `10.213.B.0/24`.
    pub octet: u8,
    /// The testnet's directory (hosts' files are `DIR/hK/`).
    pub dir: PathBuf,
    /// The process that owns the testnet and removes it when it ends; none for testnets of the
    /// command line, which outlive the run that made them.
    pub owner: Option<u32>,
    /// Names of the hosts made so far.
    pub hosts: Vec<String>,
}

/// One host of a [`Lan`].
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub index: usize,
    /// Its engine when this process started it (to reap it after a kill).
    engine: Option<Child>,
}

/// The network and engines of one testnet of hosts. Dropping an owned `Lan` removes all of it
/// (processes, namespaces, bridge, routes, rules, engine data).
#[derive(Debug)]
pub struct Lan {
    id: String,
    octet: u8,
    dir: PathBuf,
    owned: bool,
    hosts: Vec<Host>,
    /// Hosts on the far subnet (see [`Lan::set_far`]).
    far: BTreeSet<String>,
}

/// Paths and names of host `name` of testnet `id` in `dir`.
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub netns: String,
    /// The machine side of the host's veth.
    pub veth: String,
    /// `DIR/hK`: the host's disk.
    pub root: PathBuf,
    /// The engine's socket, `DIR/hK/docker.sock`.
    pub socket: PathBuf,
    pub data_root: PathBuf,
    /// Under [`RUN_DIR`]: the host's `/run`.
    pub exec_root: PathBuf,
    pub pidfile: PathBuf,
    pub engine_config: PathBuf,
    pub engine_log: PathBuf,
    /// The cgroup parent of its containers.
    pub cgroup: String,
}

pub fn host_paths(id: &str, dir: &Path, name: &str) -> HostPaths {
    let root = dir.join(name);
    let run = Path::new(RUN_DIR).join(id).join(name);
    HostPaths {
        netns: format!("stn-{id}-{name}"),
        veth: format!("v{id}{name}"),
        socket: root.join("docker.sock"),
        data_root: root.join("docker"),
        pidfile: run.join("docker.pid"),
        exec_root: run.join("exec"),
        engine_config: root.join("daemon.json"),
        engine_log: root.join("dockerd.log"),
        cgroup: format!("stn-{id}-{name}"),
        root,
    }
}

impl Lan {
    /// Makes the LAN of a new testnet `id` in `dir`: claims a free /24, adds its blackhole
    /// route, the bridge and the forwarding rule, and writes the marker. `owned`: this
    /// process removes it all when the `Lan` drops.
    pub fn create(id: &str, dir: &Path, owned: bool) -> anyhow::Result<Lan> {
        available()?;
        reap_stale();
        fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot create {RUN_DIR}"))?;
        let octet = claim_octet(id)?;
        let lan = Lan {
            id: id.to_string(),
            octet,
            dir: dir.to_path_buf(),
            owned,
            hosts: Vec::new(),
            far: BTreeSet::new(),
        };
        lan.save_marker()?;
        let made = lan.make_bridge();
        if let Err(e) = made {
            teardown(&lan.marker());
            return Err(e);
        }
        Ok(lan)
    }

    /// The LAN of a testnet another process made (from `cluster.json`): not owned.
    pub fn adopt(id: &str, octet: u8, dir: &Path, hosts: &[String]) -> anyhow::Result<Lan> {
        let mut out = Vec::new();
        for name in hosts {
            out.push(Host {
                name: name.clone(),
                index: host_index(name)?,
                engine: None,
            });
        }
        Ok(Lan {
            id: id.to_string(),
            octet,
            dir: dir.to_path_buf(),
            owned: false,
            hosts: out,
            far: BTreeSet::new(),
        })
    }

    fn make_bridge(&self) -> anyhow::Result<()> {
        let br = self.bridge();
        let subnet = self.subnet();
        ip(&[
            "route",
            "add",
            "blackhole",
            &subnet,
            "metric",
            BLACKHOLE_METRIC,
        ])?;
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", gateway_addr(self.octet)),
            "dev",
            &br,
        ])?;
        ip(&["link", "set", &br, "up"])?;
        run(
            "iptables",
            &["-I", "FORWARD", "1", "-i", &br, "-o", &br, "-j", "ACCEPT"],
        )?;
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// B of `10.213.B.0/24`.
    pub fn octet(&self) -> u8 {
        self.octet
    }

    /// `10.213.B.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}.{}.{}.0/24", LAN_PREFIX[0], LAN_PREFIX[1], self.octet)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("stn{}", self.id)
    }

    /// The names of the hosts made so far.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// The address of host `name`: on the far subnet, 128 above its near one.
    pub fn addr(&self, name: &str) -> anyhow::Result<Ipv4Addr> {
        let near = host_addr(self.octet, host_index(name)?);
        if !self.far.contains(name) {
            return Ok(near);
        }
        let o = near.octets();
        anyhow::ensure!(
            o[3] < 128,
            "{name} is too far down the LAN for its far subnet"
        );
        Ok(Ipv4Addr::new(o[0], o[1], o[2], o[3] + 128))
    }

    /// Splits the LAN into two subnets routed by the machine, as two buildings of a home lab
    /// behind one router: the hosts `names` (none made yet) go on the far one,
    /// `10.213.B.128/25`, and the others on `10.213.B.0/25`. The machine holds `.1` and `.129`
    /// and routes between them; hosts reach the other subnet only through it (they ignore
    /// its ICMP redirects), so nodes on different sides are on different subnets. Both share
    /// the bridge, so partitions and unplugging work as before.
    pub fn set_far(&mut self, names: &[String]) -> anyhow::Result<()> {
        anyhow::ensure!(self.hosts.is_empty(), "set the far hosts before making any");
        if names.is_empty() {
            return Ok(());
        }
        let o = gateway_addr(self.octet).octets();
        let far_gateway = Ipv4Addr::new(o[0], o[1], o[2], 129);
        ip(&[
            "addr",
            "add",
            &format!("{far_gateway}/25"),
            "dev",
            &self.bridge(),
        ])?;
        self.far = names.iter().cloned().collect();
        Ok(())
    }

    pub fn paths(&self, name: &str) -> HostPaths {
        host_paths(&self.id, &self.dir, name)
    }

    fn marker(&self) -> Marker {
        Marker {
            id: self.id.clone(),
            octet: self.octet,
            dir: self.dir.clone(),
            owner: self.owned.then(std::process::id),
            hosts: self.host_names(),
        }
    }

    fn save_marker(&self) -> anyhow::Result<()> {
        let path = marker_path(&self.id);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&self.marker())?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Makes host `hK` (the next K) and boots its network and engine; `shoald` is the
    /// caller's to start. Returns its name.
    pub fn add_host(&mut self) -> anyhow::Result<String> {
        let index = self.hosts.iter().map(|h| h.index).max().unwrap_or(0) + 1;
        if index > MAX_HOSTS {
            bail!("a LAN has at most {MAX_HOSTS} hosts");
        }
        let name = format!("h{index}");
        self.hosts.push(Host {
            name: name.clone(),
            index,
            engine: None,
        });
        self.save_marker()?;
        let p = self.paths(&name);
        fs::create_dir_all(&p.root)
            .with_context(|| format!("cannot create {}", p.root.display()))?;
        let config = serde_json::json!({
            "cgroup-parent": format!("/{}", p.cgroup),
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "bip": format!("172.29.{}.1/24", index % 256),
            "storage-driver": storage_driver(),
            "log-driver": "json-file",
            "log-opts": {"max-size": "10m", "max-file": "2"},
            // A test's registry serves plain HTTP on the LAN (the machine's address on it,
            // `registry::Registry` with a LAN address): as a home lab's would be, it is listed.
            "insecure-registries": [self.subnet()],
        });
        fs::write(&p.engine_config, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("cannot write {}", p.engine_config.display()))?;
        self.boot(&name)?;
        Ok(name)
    }

    fn host_mut(&mut self, name: &str) -> anyhow::Result<&mut Host> {
        let names = self.host_names().join(", ");
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .with_context(|| format!("no host named {name:?} (the hosts: {names})"))
    }

    /// Whether host `name`'s namespace exists (it is powered on).
    pub fn is_on(&self, name: &str) -> bool {
        Path::new("/var/run/netns")
            .join(self.paths(name).netns)
            .exists()
    }

    /// Boots host `name`: as a machine powering on, a fresh network stack (namespace, link,
    /// address), an empty `/run`, no stale mounts, then its engine. `shoald` is the caller's.
    pub fn boot(&mut self, name: &str) -> anyhow::Result<()> {
        self.host_mut(name)?;
        if self.is_on(name) {
            bail!("{name} is already on");
        }
        let p = self.paths(name);
        let addr = self.addr(name)?;
        unmount_below(&p.root);
        unmount_below(&p.exec_root);
        let _ = fs::remove_dir_all(p.exec_root.parent().unwrap_or(&p.exec_root));
        let _ = fs::remove_file(&p.socket);
        fs::create_dir_all(&p.exec_root)
            .with_context(|| format!("cannot create {}", p.exec_root.display()))?;
        // A namespace deleted a moment ago may still hold its end of the old pair.
        remove_link(&p.veth);
        ip(&["netns", "add", &p.netns])?;
        ip(&[
            "link", "add", &p.veth, "type", "veth", "peer", "name", "eth0", "netns", &p.netns,
        ])?;
        ip(&["link", "set", &p.veth, "master", &self.bridge(), "up"])?;
        let prefix = if self.far.is_empty() { 24 } else { 25 };
        ip_in(
            &p.netns,
            &["addr", "add", &format!("{addr}/{prefix}"), "dev", "eth0"],
        )?;
        ip_in(&p.netns, &["link", "set", "eth0", "up"])?;
        ip_in(&p.netns, &["link", "set", "lo", "up"])?;
        if !self.far.is_empty() {
            // The other half through the machine, and no redirect around it.
            let o = gateway_addr(self.octet).octets();
            let (other, via) = if self.far.contains(name) {
                (
                    format!("{}.{}.{}.0/25", o[0], o[1], o[2]),
                    format!("{}.{}.{}.129", o[0], o[1], o[2]),
                )
            } else {
                (
                    format!("{}.{}.{}.128/25", o[0], o[1], o[2]),
                    gateway_addr(self.octet).to_string(),
                )
            };
            ip_in(&p.netns, &["route", "add", &other, "via", &via])?;
            run(
                nsenter().to_string_lossy().as_ref(),
                &[
                    &format!("--net=/var/run/netns/{}", p.netns),
                    "sh",
                    "-c",
                    "for c in all eth0; do echo 0 > /proc/sys/net/ipv4/conf/$c/accept_redirects; done",
                ],
            )?;
        }
        // `ip netns exec` (used by `exec`) mounts this over /etc/resolv.conf: a client on the
        // host asks the host's own DNS server, as a LAN client pointed at its node would.
        let etc = Path::new("/etc/netns").join(&p.netns);
        fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
        fs::write(etc.join("resolv.conf"), format!("nameserver {addr}\n"))?;
        self.engine_start(name)
    }

    /// Starts host `name`'s engine inside its namespace and waits until it answers.
    pub fn engine_start(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.paths(name);
        if engine_pid(&p).is_some() {
            bail!("the engine of {name} runs already");
        }
        let _ = fs::remove_file(&p.socket);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.engine_log)
            .with_context(|| format!("cannot open {}", p.engine_log.display()))?;
        let mut cmd = Command::new(nsenter());
        {
            use std::os::unix::process::CommandExt as _;
            // Its own process group: a Ctrl-C in the terminal of `shoal-testnet` must not
            // reach the engines it leaves running.
            cmd.process_group(0);
        }
        let child = cmd
            .arg(format!("--net=/var/run/netns/{}", p.netns))
            .arg("dockerd")
            .arg("--config-file")
            .arg(&p.engine_config)
            .arg("--data-root")
            .arg(&p.data_root)
            .arg("--exec-root")
            .arg(&p.exec_root)
            .arg("--pidfile")
            .arg(&p.pidfile)
            .arg("-H")
            .arg(format!("unix://{}", p.socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start dockerd (is docker.io installed?)")?;
        let owned = self.owned;
        let host = self.host_mut(name)?;
        if owned {
            host.engine = Some(child);
        }
        let deadline = Instant::now() + ENGINE_TIMEOUT;
        while !engine_answers(&p.socket) {
            if Instant::now() > deadline {
                bail!(
                    "the engine of {name} did not answer within {ENGINE_TIMEOUT:?}; its log: {}",
                    p.engine_log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Stops host `name`'s engine as `systemctl stop docker` would (SIGTERM; the engine stops
    /// its containers) and waits for it to exit; `shoald` keeps running.
    pub fn engine_stop(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.paths(name);
        let Some(pid) = engine_pid(&p) else {
            bail!("the engine of {name} does not run");
        };
        signal(pid, "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while alive(pid) {
            if Instant::now() > deadline {
                bail!("the engine of {name} ({pid}) did not stop within 60 s of SIGTERM");
            }
            self.reap(name);
            std::thread::sleep(Duration::from_millis(100));
        }
        self.reap(name);
        Ok(())
    }

    fn reap(&mut self, name: &str) {
        if let Ok(h) = self.host_mut(name)
            && let Some(c) = h.engine.as_mut()
            && matches!(c.try_wait(), Ok(Some(_)))
        {
            h.engine = None;
        }
    }

    /// Pulls host `name`'s plug: its link goes down first (a dead machine is silent: no reset,
    /// no refusal), then every process of the host gets SIGKILL (its `shoald`, engine,
    /// containerd, shims and containers), then what a reboot clears goes: mounts, `/run`, the
    /// network stack. The disk (`DIR/hK`) stays.
    pub fn power_off(&mut self, name: &str) -> anyhow::Result<()> {
        self.host_mut(name)?;
        let p = self.paths(name);
        if !self.is_on(name) {
            bail!("{name} is off already");
        }
        ip(&["link", "set", &p.veth, "down"])?;
        kill_host(&p);
        if let Ok(h) = self.host_mut(name)
            && let Some(mut c) = h.engine.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        unmount_below(&p.root);
        unmount_below(&p.exec_root);
        ip(&["netns", "del", &p.netns])?;
        remove_link(&p.veth);
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&p.netns));
        Ok(())
    }

    /// Host `name`'s link down: it runs on, cut off from the LAN.
    pub fn unplug(&self, name: &str) -> anyhow::Result<()> {
        self.addr(name)?;
        ip(&["link", "set", &self.paths(name).veth, "down"])
    }

    /// Host `name`'s link up again.
    pub fn plug(&self, name: &str) -> anyhow::Result<()> {
        self.addr(name)?;
        ip(&["link", "set", &self.paths(name).veth, "up"])
    }

    /// Drops, at the bridge, every packet from a host of one group to a host of another.
    /// Groups name hosts, also hosts still to be added: a host added later is cut off as it
    /// joins. Replaces an earlier partition.
    pub fn partition(&self, groups: &[Vec<String>]) -> anyhow::Result<()> {
        let mut addrs = Vec::with_capacity(groups.len());
        for g in groups {
            let mut a = Vec::with_capacity(g.len());
            for name in g {
                a.push(self.addr(name)?);
            }
            addrs.push(a);
        }
        crate::partition::apply_bridge(&self.id, &addrs)
    }

    /// Removes the partition.
    pub fn heal(&self) -> anyhow::Result<()> {
        crate::partition::heal_bridge(&self.id)
    }

    /// Runs `cmd` inside host `name` as a LAN client there (its resolver is the host's own DNS
    /// server) and returns what it printed.
    pub fn exec(&self, name: &str, cmd: &[String]) -> anyhow::Result<crate::CliOutput> {
        let Some((program, args)) = cmd.split_first() else {
            bail!("exec needs a command");
        };
        if !self.is_on(name) {
            bail!("{name} is off");
        }
        let out = Command::new(ip_path())
            .args(["netns", "exec", &self.paths(name).netns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {program} in {name}"))?;
        Ok(crate::CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Copies `image` from the machine's engine into host `name`'s (`docker save | load`).
    pub fn load_image(&self, name: &str, image: &str) -> anyhow::Result<()> {
        let socket = self.paths(name).socket;
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run docker save")?;
        let stdout = save.stdout.take().context("docker save has no output")?;
        let load = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("load")
            .stdin(stdout)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("cannot run docker load")?;
        let saved = save.wait_with_output()?;
        if !saved.status.success() {
            bail!(
                "docker save {image}: {}",
                String::from_utf8_lossy(&saved.stderr).trim()
            );
        }
        if !load.status.success() {
            bail!(
                "docker load into {name}: {}",
                String::from_utf8_lossy(&load.stderr).trim()
            );
        }
        Ok(())
    }

    /// Removes everything of this testnet: processes, namespaces, mounts, engine data, the
    /// bridge, its rules and routes, the marker.
    pub fn teardown(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.engine.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        teardown(&self.marker());
        self.hosts.clear();
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if self.owned {
            self.teardown();
        }
    }
}

/// A request of [`client`] that failed: when it started (after the `started` given to the
/// client) and what curl said.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: Duration,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {:?}: {}", self.at, self.what)
    }
}

/// A client inside network namespace `netns` (a host's) that opens a new connection for each
/// request to `url` (curl, a 1 s timeout each), one every 50 ms, until `stop`: returns how
/// many it sent and, for each that failed, when (after `started`) and what curl said.
pub fn client(
    netns: &str,
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
) -> std::thread::JoinHandle<(usize, Vec<Failure>)> {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        let (mut sent, mut failed) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let at = Instant::now();
            let out = Command::new(ip_path())
                .args(["netns", "exec", &netns, "curl", "-sS", "-m", "1"])
                .args(["-o", "/dev/null", "-w", "%{http_code}", &url])
                .stdin(Stdio::null())
                .output();
            sent += 1;
            let what = match out {
                Ok(o) if o.status.success() && o.stdout == b"200" => None,
                Ok(o) => Some(format!(
                    "request {sent}: HTTP {} {}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Some(format!("request {sent}: cannot run curl: {e}")),
            };
            if let Some(what) = what {
                failed.push(Failure {
                    at: at - started,
                    what,
                });
            }
            std::thread::sleep(Duration::from_millis(50).saturating_sub(at.elapsed()));
        }
        (sent, failed)
    })
}

/// Whether hosts can be made here: `Err` says what is missing.
pub fn available() -> anyhow::Result<()> {
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("dockerd", "docker.io"),
        ("iptables", "iptables"),
        ("nft", "nftables"),
        ("curl", "curl"),
    ] {
        if which(tool).is_none() {
            bail!("test hosts need {tool} (Debian package {package})");
        }
    }
    if !Path::new("/var/run/netns").exists() && fs::create_dir_all("/var/run/netns").is_err() {
        bail!("test hosts need root (network namespaces)");
    }
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        bail!("test hosts need root (network namespaces, a bridge, routes, engines)");
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

fn ip_path() -> PathBuf {
    which("ip").unwrap_or_else(|| "ip".into())
}

pub(crate) fn nsenter() -> PathBuf {
    which("nsenter").unwrap_or_else(|| "nsenter".into())
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let path = which(program).unwrap_or_else(|| program.into());
    let out = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn ip_in(netns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// The storage driver of the machine's engine, which every host's engine uses too (the
/// machine's file system decides what works); `overlay2` when it does not answer.
fn storage_driver() -> String {
    Command::new("docker")
        .args(["info", "--format", "{{.Driver}}"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "overlay2".into())
}

/// Whether the engine at `socket` answers.
pub fn engine_answers(socket: &Path) -> bool {
    socket.exists()
        && Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The running engine's pid from its pidfile, when that pid is a live dockerd.
fn engine_pid(p: &HostPaths) -> Option<u32> {
    let pid: u32 = fs::read_to_string(&p.pidfile).ok()?.trim().parse().ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "dockerd" && alive(pid)).then_some(pid)
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string));
    !matches!(state.as_deref(), None | Some("Z") | Some("X"))
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill")?;
    if !status.success() && alive(pid) {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Every process of a host: those in its network namespace (shoald, the engine, containerd,
/// shims) and those in its containers' cgroups (containers have namespaces of their own).
fn host_pids(p: &HostPaths) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    if let Ok(out) = Command::new(ip_path())
        .args(["netns", "pids", &p.netns])
        .stderr(Stdio::null())
        .output()
    {
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|s| s.parse::<u32>().ok()),
        );
    }
    for dir in cgroup_dirs(&p.cgroup) {
        collect_cgroup_pids(&dir, &mut pids);
    }
    pids.remove(&std::process::id());
    pids
}

/// The directories of cgroup `name` in every hierarchy (v1: one per controller; v2: one).
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out = Vec::new();
    if root.join(name).is_dir() {
        out.push(root.join(name));
    }
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            let d = e.path().join(name);
            if d.is_dir() {
                out.push(d);
            }
        }
    }
    out
}

fn collect_cgroup_pids(dir: &Path, pids: &mut BTreeSet<u32>) {
    for file in ["cgroup.procs", "tasks"] {
        if let Ok(s) = fs::read_to_string(dir.join(file)) {
            pids.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                collect_cgroup_pids(&e.path(), pids);
            }
        }
    }
}

/// SIGKILL to every process of a host until none is left (a dying engine may still spawn).
fn kill_host(p: &HostPaths) {
    for _ in 0..20 {
        let pids: Vec<u32> = host_pids(p).into_iter().filter(|p| alive(*p)).collect();
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            let _ = signal(*pid, "KILL");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for link `name` to go (the kernel destroys a deleted namespace, and the veth ends in
/// it, in the background), deleting it after a while.
fn remove_link(name: &str) {
    let path = Path::new("/sys/class/net").join(name);
    let deadline = Instant::now() + Duration::from_secs(5);
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if path.exists() {
        let _ = ip(&["link", "del", name]);
    }
}

/// Lazily unmounts every mount at or below `dir`, deepest first (a killed engine leaves its
/// containers' file systems and network namespaces mounted).
fn unmount_below(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(unescape_mount)
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount")
            .args(["-l", &m])
            .stderr(Stdio::null())
            .status();
    }
}

/// /proc/mounts escapes spaces and a few other bytes as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn marker_path(id: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{id}.json"))
}

/// The path of the claim on /24 `octet` (created exclusively, so two testnets starting at
/// once never take the same one).
fn claim_path(octet: u8) -> PathBuf {
    Path::new(RUN_DIR).join(format!("lan-{octet}.claim"))
}

/// Claims a free `10.213.B.0/24` for testnet `id`: no other testnet's claim, no route or
/// address of the machine in it.
fn claim_octet(id: &str) -> anyhow::Result<u8> {
    let start = (crate::cluster::new_id()
        .chars()
        .fold(0u32, |a, c| a.wrapping_mul(31).wrapping_add(c as u32))
        % 254) as u8;
    let routes = Command::new(ip_path())
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let addrs = Command::new(ip_path())
        .args(["-4", "-o", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for i in 0..254u32 {
        let octet = 1 + ((u32::from(start) + i) % 254) as u8;
        let net = format!("{}.{}.{}.", LAN_PREFIX[0], LAN_PREFIX[1], octet);
        if routes.contains(&net) || addrs.contains(&net) {
            continue;
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(claim_path(octet))
        {
            Ok(mut f) => {
                let _ = f.write_all(id.as_bytes());
                return Ok(octet);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot write {}", claim_path(octet).display()));
            }
        }
    }
    bail!("no free /24 left in 10.213.0.0/16 for a test LAN")
}

/// Removes everything `marker` names, whatever state it is in; each step ignores what is not
/// there.
pub fn teardown(marker: &Marker) {
    let id = &marker.id;
    for name in &marker.hosts {
        let p = host_paths(id, &marker.dir, name);
        let veth_exists = Path::new("/sys/class/net").join(&p.veth).exists();
        if veth_exists {
            let _ = ip(&["link", "set", &p.veth, "down"]);
        }
        kill_host(&p);
        unmount_below(&p.root);
        unmount_below(&p.exec_root);
        let _ = ip(&["netns", "del", &p.netns]);
        remove_link(&p.veth);
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&p.netns));
        for dir in cgroup_dirs(&p.cgroup) {
            remove_cgroup(&dir);
        }
        // The engine's data: its images and containers are of this testnet only.
        let _ = fs::remove_dir_all(&p.data_root);
        let _ = fs::remove_file(&p.socket);
    }
    let _ = crate::partition::heal_bridge(id);
    let br = format!("stn{id}");
    let _ = run(
        "iptables",
        &["-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"],
    );
    if Path::new("/sys/class/net").join(&br).exists() {
        let _ = ip(&["link", "del", &br]);
    }
    let subnet = format!("{}.{}.{}.0/24", LAN_PREFIX[0], LAN_PREFIX[1], marker.octet);
    let _ = ip(&[
        "route",
        "del",
        "blackhole",
        &subnet,
        "metric",
        BLACKHOLE_METRIC,
    ]);
    let _ = fs::remove_dir_all(Path::new(RUN_DIR).join(id));
    // The claim last: until here the /24 may still have routes.
    if fs::read_to_string(claim_path(marker.octet)).is_ok_and(|c| c == *id) {
        let _ = fs::remove_file(claim_path(marker.octet));
    }
    let _ = fs::remove_file(marker_path(id));
}

/// Removes a cgroup directory and those below it (each must be empty of processes).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Every marker in [`RUN_DIR`].
pub fn markers() -> Vec<Marker> {
    let Ok(entries) = fs::read_dir(RUN_DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice::<Marker>(&fs::read(e.path()).ok()?).ok())
        .collect()
}

/// Removes the testnets whose owner process is gone (a test run that was killed); testnets
/// without an owner (the command line's) stay. Returns the ids removed.
pub fn reap_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for m in markers() {
        if let Some(owner) = m.owner
            && !alive(owner)
        {
            teardown(&m);
            removed.push(m.id.clone());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hosts_are_numbered_from_eleven() {
        assert_eq!(host_addr(7, 1).to_string(), "10.213.7.11");
        assert_eq!(host_addr(7, 3).to_string(), "10.213.7.13");
        assert_eq!(gateway_addr(7).to_string(), "10.213.7.1");
        assert_eq!(host_index("h12").unwrap(), 12);
        assert!(host_index("n1").is_err());
        assert!(host_index("h0").is_err());
        assert!(host_index("h").is_err());
    }

    #[test]
    fn names_fit_the_kernel() {
        // Interface names have at most 15 bytes.
        let p = host_paths("0a1b2c3d", Path::new("/tmp/x"), "h244");
        assert!(p.veth.len() <= 15, "{}", p.veth);
        assert!(format!("stn{}", "0a1b2c3d").len() <= 15);
        assert_eq!(p.socket, Path::new("/tmp/x/h244/docker.sock"));
        assert!(p.exec_root.starts_with(RUN_DIR));
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }
}
