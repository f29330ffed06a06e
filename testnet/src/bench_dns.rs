//! `shoal-testnet bench dns`: queries per second and latency of one `shoald`'s DNS server,
//! answering from memory, next to `unbound` and `dnsmasq` (the anchors of
//! `../shared/TARGETS.md`) measured the same way in the same run.
//!
//! One node starts on its loopback address (DNS on port 53 there) with one Service without a
//! selector. Each anchor runs on a loopback address of its own with the same names, nothing
//! forwarded anywhere. Every server is first checked to answer each name as shoald does, then
//! `dnsperf -s IP -d FILE -l SECONDS -Q QPS` runs against each in turn with the same settings.
//! The names: the zone apex SOA, `ns.<domain>` A (the server's own address), and the Service's
//! A, which answers NOERROR without records. Tools missing make the run fail, naming the
//! Debian package to install.
//!
//! dnsperf 2.10 prints only the average and maximum latency, so a small load generator of our
//! own follows it ([`load`]): for each server and each in-flight setting, one UDP socket keeps
//! a fixed number of queries (the same names) outstanding for the same number of seconds,
//! matches responses by id and records every round trip, giving p50, p99 and max. A query
//! unanswered within 1 s is lost. Loopback only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Cluster;

const DOMAIN: &str = "shoal.home.arpa";
/// The Service without a selector: its name answers NOERROR with no records.
const SERVICE: &str = "idle";

/// What one dnsperf run printed in its statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsperfStats {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    pub avg_latency_s: f64,
    pub min_latency_s: f64,
    pub max_latency_s: f64,
    /// Printed only when more than one query completed.
    pub stddev_latency_s: Option<f64>,
    /// As printed: `NOERROR 98531 (100.00%)`.
    pub response_codes: String,
}

/// Parses dnsperf's (2.x) statistics; fails naming the first figure that is missing.
pub fn parse_dnsperf(out: &str) -> anyhow::Result<DnsperfStats> {
    let value = |key: &str| -> Option<&str> {
        out.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim())
        })
    };
    let first_number = |key: &str| -> anyhow::Result<&str> {
        value(key)
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("dnsperf printed no {key:?}"))
    };
    let count = |key: &str| -> anyhow::Result<u64> {
        let v = first_number(key)?;
        v.parse()
            .with_context(|| format!("dnsperf's {key:?} is not a count: {v:?}"))
    };
    let real = |key: &str| -> anyhow::Result<f64> {
        let v = first_number(key)?;
        v.parse()
            .with_context(|| format!("dnsperf's {key:?} is not a number: {v:?}"))
    };
    let (sent, completed, lost) = (
        count("Queries sent")?,
        count("Queries completed")?,
        count("Queries lost")?,
    );
    let qps = real("Queries per second")?;
    let avg_latency_s = real("Average Latency (s)")?;
    // "Average Latency (s):  0.002354 (min 0.000018, max 0.024973)"
    let latency = value("Average Latency (s)").context("dnsperf printed no average latency")?;
    let bound = |name: &str| -> anyhow::Result<f64> {
        let after = latency
            .split_once(&format!("{name} "))
            .map(|(_, r)| r)
            .with_context(|| format!("no {name} latency in {latency:?}"))?;
        let num: String = after
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        num.parse()
            .with_context(|| format!("bad {name} latency in {latency:?}"))
    };
    Ok(DnsperfStats {
        sent,
        completed,
        lost,
        qps,
        avg_latency_s,
        min_latency_s: bound("min")?,
        max_latency_s: bound("max")?,
        stddev_latency_s: first_number("Latency StdDev (s)")
            .ok()
            .and_then(|v| v.parse().ok()),
        response_codes: value("Response codes").unwrap_or_default().to_string(),
    })
}

/// The dnsperf data file: one `name type` per line.
fn query_file() -> String {
    format!("{DOMAIN} SOA\nns.{DOMAIN} A\n{SERVICE}.default.svc.{DOMAIN} A\n")
}

/// A tool of the run: found on PATH (or in /usr/sbin and /sbin, where Debian puts daemons for
/// root), else an error naming the package that has it.
fn tool(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} is not installed: apt-get install -y {package} (this bench needs dnsperf, unbound and dnsmasq)")
        })
}

/// A DNS query of `name`/`qtype` (numeric) with id `id`, without recursion desired.
fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend(id.to_be_bytes());
    p.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // flags 0; one question
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend(label.as_bytes());
    }
    p.push(0);
    p.extend(qtype.to_be_bytes());
    p.extend(1u16.to_be_bytes()); // IN
    p
}

/// The response code and answer count of one query to `server`, none without an answer
/// within 300 ms.
fn ask(server: SocketAddr, name: &str, qtype: u16) -> anyhow::Result<Option<(u8, u16)>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.set_read_timeout(Some(Duration::from_millis(300)))?;
    let id = (std::process::id() as u16) ^ qtype;
    socket.send_to(&query_packet(id, name, qtype), server)?;
    let mut buf = [0u8; 1500];
    let Ok((n, _)) = socket.recv_from(&mut buf) else {
        return Ok(None);
    };
    if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
        return Ok(None);
    }
    Ok(Some((buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]]))))
}

/// Waits until `server` answers each name of the query file as shoald does (the apex SOA and
/// the name server's A with records, the Service's A with NOERROR and none), so that every
/// server is measured on the same answers; `alive` fails when the server's process is gone.
fn wait_answers(
    what: &str,
    server: SocketAddr,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    const SOA: u16 = 6;
    const A: u16 = 1;
    let expected = [
        (DOMAIN.to_string(), SOA, true),
        (format!("ns.{DOMAIN}"), A, true),
        (format!("{SERVICE}.default.svc.{DOMAIN}"), A, false),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    loop {
        alive()?;
        last.clear();
        for (name, qtype, records) in &expected {
            match ask(server, name, *qtype)? {
                Some((0, n)) if (n > 0) == *records => {}
                Some((rcode, n)) => {
                    let _ = write!(last, "{name} type {qtype}: rcode {rcode}, {n} answers; ");
                }
                None => {
                    let _ = write!(last, "{name} type {qtype}: no answer; ");
                }
            }
        }
        if last.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} on {server} does not answer as expected within 15 s: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An anchor server process, killed when dropped.
struct Anchor {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Anchor {
    fn start(name: &'static str, cmd: &mut Command, log: PathBuf) -> anyhow::Result<Anchor> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Anchor { name, child, log })
    }

    /// Fails with the process's log when it has exited.
    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited with {status}; its log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// unbound with the names as `local-data` of a static zone; every other name refused, so it
/// never resolves anything remotely. Defaults otherwise (one thread).
fn start_unbound(bin: &Path, dir: &Path, ip: Ipv4Addr) -> anyhow::Result<Anchor> {
    let conf = dir.join("unbound.conf");
    let d = DOMAIN;
    let text = format!(
        r#"server:
  interface: {ip}
  port: 53
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  local-zone: "." refuse
  local-zone: "{d}." static
  local-data: "{d}. 5 IN SOA ns.{d}. hostmaster.{d}. 1 60 10 3600 5"
  local-data: "{d}. 5 IN NS ns.{d}."
  local-data: "ns.{d}. 5 IN A {ip}"
  local-data: "{SERVICE}.default.svc.{d}. 5 IN TXT \"no address\""
remote-control:
  control-enable: no
"#,
        dir = dir.display()
    );
    std::fs::write(&conf, text)?;
    Anchor::start(
        "unbound",
        Command::new(bin).arg("-d").arg("-c").arg(&conf),
        dir.join("unbound.log"),
    )
}

/// dnsmasq authoritative for the zone (its SOA and NS), `ns` as a host record, the Service's
/// name holding only a TXT record; no upstream, no hosts file, no configuration file.
fn start_dnsmasq(bin: &Path, dir: &Path, ip: Ipv4Addr) -> anyhow::Result<Anchor> {
    let d = DOMAIN;
    Anchor::start(
        "dnsmasq",
        Command::new(bin).args([
            "--no-daemon".to_string(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--port=53".into(),
            format!("--listen-address={ip}"),
            "--bind-interfaces".into(),
            "--user=root".into(),
            "--pid-file=".into(),
            format!("--auth-server=ns.{d},{ip}"),
            format!("--auth-zone={d}"),
            format!("--host-record=ns.{d},{ip}"),
            format!("--txt-record={SERVICE}.default.svc.{d},no address"),
        ]),
        dir.join("dnsmasq.log"),
    )
}

/// One dnsperf run against `server`.
fn dnsperf(
    bin: &Path,
    server: Ipv4Addr,
    data: &Path,
    seconds: u64,
    qps: u64,
) -> anyhow::Result<DnsperfStats> {
    let out = Command::new(bin)
        .arg("-s")
        .arg(server.to_string())
        .arg("-d")
        .arg(data)
        .args(["-l", &seconds.to_string(), "-Q", &qps.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("cannot run dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dnsperf against {server} exited with {}: {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_dnsperf(&text).with_context(|| format!("reading dnsperf's output:\n{text}"))
}

/// A query unanswered for this long is lost.
const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many queries per load run, so a run's samples stay bounded in memory.
const LOAD_MAX_QUERIES: u64 = 5_000_000;

/// The id and response code of a DNS response; none for anything else (a query, a short
/// packet).
fn parse_response(p: &[u8]) -> Option<(u16, u8)> {
    if p.len() < 12 || p[2] & 0x80 == 0 {
        return None;
    }
    Some((u16::from_be_bytes([p[0], p[1]]), p[3] & 0x0f))
}

/// The value at percentile `p` (0–100] of ascending `sorted`, by nearest rank: the smallest
/// value that at least `p` % of the samples do not exceed. None without samples.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What one load run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadStats {
    pub in_flight: usize,
    pub sent: u64,
    pub completed: u64,
    /// Unanswered within [`LOAD_TIMEOUT`].
    pub lost: u64,
    /// Answers with a response code other than NOERROR (counted as completed).
    pub errors: u64,
    pub qps: f64,
    pub p50_ns: u32,
    pub p99_ns: u32,
    pub max_ns: u32,
}

/// Keeps `in_flight` queries of the query file's names outstanding against `server` for
/// `seconds` (at most [`LOAD_MAX_QUERIES`]), then waits up to [`LOAD_TIMEOUT`] for the last
/// ones. Round trips are taken from just before the send to just after the receive.
pub fn load(server: SocketAddr, in_flight: usize, seconds: u64) -> anyhow::Result<LoadStats> {
    const SOA: u16 = 6;
    const A: u16 = 1;
    let mut packets = [
        query_packet(0, DOMAIN, SOA),
        query_packet(0, &format!("ns.{DOMAIN}"), A),
        query_packet(0, &format!("{SERVICE}.default.svc.{DOMAIN}"), A),
    ];
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let in_flight = in_flight.clamp(1, 4096);
    // Outstanding queries by id; ids go round all 65,536 values, skipping one still
    // outstanding (a query lost but not yet timed out), so that no query is ever forgotten.
    let mut outstanding: HashMap<u16, Instant> = HashMap::with_capacity(in_flight * 2);
    let mut samples: Vec<u32> = Vec::with_capacity(1 << 20);
    let (mut sent, mut lost, mut errors) = (0u64, 0u64, 0u64);
    let mut next_id = 0u16;
    let mut send =
        |outstanding: &mut HashMap<u16, Instant>, sent: &mut u64| -> anyhow::Result<()> {
            while outstanding.contains_key(&next_id) {
                next_id = next_id.wrapping_add(1);
            }
            let id = next_id;
            next_id = next_id.wrapping_add(1);
            let p = &mut packets[(*sent % 3) as usize];
            p[..2].copy_from_slice(&id.to_be_bytes());
            let at = Instant::now();
            socket
                .send(p)
                .with_context(|| format!("cannot send a query to {server}"))?;
            outstanding.insert(id, at);
            *sent += 1;
            Ok(())
        };
    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds);
    let mut last_sweep = start;
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        let sending = now < stop && sent < LOAD_MAX_QUERIES;
        if sending {
            while outstanding.len() < in_flight {
                send(&mut outstanding, &mut sent)?;
            }
        } else if outstanding.is_empty() || now > stop + LOAD_TIMEOUT {
            break;
        }
        match socket.recv(&mut buf) {
            Ok(n) => {
                let got = Instant::now();
                if let Some((id, rcode)) = parse_response(&buf[..n])
                    && let Some(at) = outstanding.remove(&id)
                {
                    let rtt = got.duration_since(at).as_nanos();
                    samples.push(u32::try_from(rtt).unwrap_or(u32::MAX));
                    if rcode != 0 {
                        errors += 1;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read from {server}")),
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) >= Duration::from_millis(50) {
            last_sweep = now;
            let before = outstanding.len();
            outstanding.retain(|_, at| now.duration_since(*at) < LOAD_TIMEOUT);
            lost += (before - outstanding.len()) as u64;
        }
    }
    lost += outstanding.len() as u64;
    let elapsed = start.elapsed().as_secs_f64();
    samples.sort_unstable();
    let at = |p| percentile(&samples, p).unwrap_or(0);
    Ok(LoadStats {
        in_flight,
        sent,
        completed: samples.len() as u64,
        lost,
        errors,
        qps: samples.len() as f64 / elapsed.max(1e-9),
        p50_ns: at(50.0),
        p99_ns: at(99.0),
        max_ns: samples.last().copied().unwrap_or(0),
    })
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no VmRSS")?
        .parse()?;
    Ok(kib * 1024)
}

/// The figures of one server, as the table shows them.
pub struct Row {
    pub server: &'static str,
    pub stats: DnsperfStats,
    /// Our load generator's runs, one per in-flight setting.
    pub load: Vec<LoadStats>,
}

/// Runs the benchmark: shoald, then unbound, then dnsmasq, each for `seconds` at up to `qps`
/// queries per second with dnsperf, then the same with [`load`] once per `in_flight` setting.
/// Prints two tables and whether the target is met; returns the rows.
pub fn dns(seconds: u64, qps: u64, in_flight: &[usize]) -> anyhow::Result<Vec<Row>> {
    let dnsperf_bin = tool("dnsperf", "dnsperf")?;
    let unbound_bin = tool("unbound", "unbound")?;
    let dnsmasq_bin = tool("dnsmasq", "dnsmasq")?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("queries.txt");
    std::fs::write(&data, query_file())?;

    let cluster = Cluster::up(1, &dir.path().join("shoal"))?;
    let node = &cluster.nodes()[0];
    let node_ip: Ipv4Addr = node
        .opts
        .ip
        .parse()
        .context("the node's address is not IPv4")?;
    let port = crate::free_port(&node.opts.ip)?;
    let (code, body) = node.api()?.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {SERVICE}}}\nspec:\n  ports: [{{port: {port}}}]\n"
    ))?;
    if code != 200 && code != 201 {
        bail!("apply of the Service {SERVICE}: {code} {body}");
    }
    let pid = node.pid().context("the node has no pid")?;
    wait_answers("shoald", SocketAddr::from((node_ip, 53)), || {
        if std::fs::metadata(format!("/proc/{pid}")).is_err() {
            bail!("shoald exited; its log:\n{}", node.log());
        }
        Ok(())
    })?;

    let ips = crate::cluster::pick_addresses(2)?;
    let (unbound_ip, dnsmasq_ip) = (ips[0], ips[1]);
    let mut unbound = start_unbound(&unbound_bin, dir.path(), unbound_ip)?;
    wait_answers("unbound", SocketAddr::from((unbound_ip, 53)), || {
        unbound.alive()
    })?;
    let mut dnsmasq = start_dnsmasq(&dnsmasq_bin, dir.path(), dnsmasq_ip)?;
    wait_answers("dnsmasq", SocketAddr::from((dnsmasq_ip, 53)), || {
        dnsmasq.alive()
    })?;

    println!(
        "dnsperf -d <{} names> -l {seconds} -Q {qps}, one run per server, in turn",
        query_file().lines().count()
    );
    let mut rows = Vec::new();
    let servers = [
        ("shoald", node_ip),
        ("unbound", unbound_ip),
        ("dnsmasq", dnsmasq_ip),
    ];
    for (server, ip) in servers {
        let stats = dnsperf(&dnsperf_bin, ip, &data, seconds, qps)?;
        println!(
            "{server} ({ip}): sent {}, completed {}, lost {}, {:.0} q/s, avg {:.0} µs (min {:.0}, max {:.0}, stddev {}), {}",
            stats.sent,
            stats.completed,
            stats.lost,
            stats.qps,
            stats.avg_latency_s * 1e6,
            stats.min_latency_s * 1e6,
            stats.max_latency_s * 1e6,
            stats
                .stddev_latency_s
                .map_or("-".to_string(), |s| format!("{:.0}", s * 1e6)),
            stats.response_codes
        );
        rows.push(Row {
            server,
            stats,
            load: Vec::new(),
        });
    }
    println!(
        "load generator: UDP, in flight {in_flight:?}, {seconds} s each, lost after {} s",
        LOAD_TIMEOUT.as_secs()
    );
    for &n in in_flight {
        for (row, (server, ip)) in rows.iter_mut().zip(servers) {
            let l = load(SocketAddr::from((ip, 53)), n, seconds)?;
            println!(
                "{server} ({ip}), {} in flight: sent {}, completed {}, lost {}, not NOERROR {}, {:.0} q/s, p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
                l.in_flight,
                l.sent,
                l.completed,
                l.lost,
                l.errors,
                l.qps,
                f64::from(l.p50_ns) / 1e3,
                f64::from(l.p99_ns) / 1e3,
                f64::from(l.max_ns) / 1e3
            );
            row.load.push(l);
        }
    }
    let rss = rss_bytes(pid)?;
    unbound.alive()?;
    dnsmasq.alive()?;
    drop((unbound, dnsmasq));
    drop(cluster);

    println!();
    println!("| server | q/s | lost | avg µs | max µs |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {} | {:.0} | {:.0} |",
            r.server,
            r.stats.qps,
            r.stats.lost,
            r.stats.avg_latency_s * 1e6,
            r.stats.max_latency_s * 1e6
        );
    }
    println!();
    println!("| server | in flight | q/s | lost | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|---|---|");
    for n in 0..in_flight.len() {
        for r in &rows {
            let l = &r.load[n];
            println!(
                "| {} | {} | {:.0} | {} | {:.0} | {:.0} | {:.0} |",
                r.server,
                l.in_flight,
                l.qps,
                l.lost,
                f64::from(l.p50_ns) / 1e3,
                f64::from(l.p99_ns) / 1e3,
                f64::from(l.max_ns) / 1e3
            );
        }
    }
    let (shoal, unbound) = (&rows[0].stats, &rows[1].stats);
    let ratio = shoal.qps / unbound.qps.max(1e-9);
    println!("shoald / unbound q/s: {ratio:.2}");
    println!(
        "shoald resident after the run: {:.1} MiB",
        rss as f64 / (1024.0 * 1024.0)
    );
    let yes = |ok: bool| if ok { "yes" } else { "no" };
    // TARGETS.md sets the average against unbound's 126 µs measured on an idle machine of this
    // kind, and counts ratios taken in one run: 300 / 126 of unbound's average in this run.
    let avg_ratio = shoal.avg_latency_s / unbound.avg_latency_s.max(1e-9);
    let checks = [ratio >= 0.5, shoal.lost == 0, avg_ratio <= TARGET_AVG_RATIO];
    println!(
        "shoald / unbound average latency: {avg_ratio:.2} (absolute: {:.0} µs, under 300 µs: {})",
        shoal.avg_latency_s * 1e6,
        yes(shoal.avg_latency_s < 300e-6)
    );
    println!(
        "target: ≥ 0.5× unbound's q/s: {}; 0 lost: {}; avg ≤ {TARGET_AVG_RATIO:.2}× unbound's \
         (300 µs against its 126 µs): {}; {}",
        yes(checks[0]),
        yes(checks[1]),
        yes(checks[2]),
        if seconds != 10 || qps != 200_000 {
            "(the target is set for -l 10 -Q 200000, not these settings)"
        } else if checks.iter().all(|c| *c) {
            "met"
        } else {
            "not met"
        }
    );
    Ok(rows)
}

/// The target's average over its anchor's: 300 µs against unbound's 126 µs (TARGETS.md).
const TARGET_AVG_RATIO: f64 = 300.0 / 126.0;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// dnsperf 2.10.0 against unbound 1.17.1 on loopback, as printed.
    const SAMPLE: &str = "DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.77.7.2 -d q.txt -l 3 -Q 200000
[Status] Sending queries (to 127.77.7.2:53)
[Status] Started at: Thu Nov 26 01:33:48 2026
[Status] Stopping after 3.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         98531
  Queries completed:    98531 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 98531 (100.00%)
  Average packet size:  request 39, response 78
  Run time (s):         3.008794
  Queries per second:   32747.672323

  Average Latency (s):  0.002354 (min 0.000018, max 0.024973)
  Latency StdDev (s):   0.002457

";

    #[test]
    fn parses_dnsperf_statistics() {
        let s = parse_dnsperf(SAMPLE).unwrap();
        assert_eq!(
            s,
            DnsperfStats {
                sent: 98531,
                completed: 98531,
                lost: 0,
                qps: 32747.672323,
                avg_latency_s: 0.002354,
                min_latency_s: 0.000018,
                max_latency_s: 0.024973,
                stddev_latency_s: Some(0.002457),
                response_codes: "NOERROR 98531 (100.00%)".into(),
            }
        );
    }

    #[test]
    fn lost_queries_and_timeouts_are_read() {
        let out = SAMPLE
            .replace(
                "Queries completed:    98531 (100.00%)",
                "Queries completed:    98521 (99.99%)",
            )
            .replace(
                "Queries lost:         0 (0.00%)",
                "Queries lost:         10 (0.01%)",
            )
            .replace(
                "Statistics:",
                "[Timeout] Query timed out: msg id 17\nStatistics:",
            )
            .replace("  Latency StdDev (s):   0.002457\n", "");
        let s = parse_dnsperf(&out).unwrap();
        assert_eq!((s.completed, s.lost), (98521, 10));
        assert_eq!(s.stddev_latency_s, None);
    }

    #[test]
    fn missing_figures_are_named() {
        let err = parse_dnsperf("[Status] Sending queries\n").unwrap_err();
        assert!(err.to_string().contains("Queries sent"), "{err}");
        let err = parse_dnsperf(&SAMPLE.replace("Queries per second", "Queries/s")).unwrap_err();
        assert!(err.to_string().contains("Queries per second"), "{err}");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.0), Some(7));
        let v: Vec<u32> = (1..=100).collect();
        for (p, want) in [
            (0.0, 1),
            (1.0, 1),
            (50.0, 50),
            (99.0, 99),
            (99.5, 100),
            (100.0, 100),
        ] {
            assert_eq!(percentile(&v, p), Some(want), "p{p}");
        }
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&[10, 20, 30], 50.0), Some(20));
    }

    #[test]
    fn responses_are_parsed() {
        let mut p = query_packet(0xbeef, "shoal.home.arpa", 6);
        assert_eq!(parse_response(&p), None, "a query is not a response");
        p[2] |= 0x84; // QR, AA
        assert_eq!(parse_response(&p), Some((0xbeef, 0)));
        p[3] = 0x05; // REFUSED
        assert_eq!(parse_response(&p), Some((0xbeef, 5)));
        assert_eq!(parse_response(&p[..11]), None);
    }

    #[test]
    fn load_matches_responses_by_id() {
        // A server that answers every query but the fourth, echoing its id with QR set.
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = server.local_addr().unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let mut seen = 0u64;
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                let Ok((n, from)) = server.recv_from(&mut buf) else {
                    continue;
                };
                seen += 1;
                if seen == 4 {
                    continue;
                }
                buf[2] |= 0x80;
                server.send_to(&buf[..n], from).unwrap();
            }
        });
        let l = load(addr, 4, 1).unwrap();
        assert_eq!(l.lost, 1, "{l:?}");
        assert_eq!(l.completed + l.lost, l.sent, "{l:?}");
        assert!(
            l.completed > 0 && l.p50_ns <= l.p99_ns && l.p99_ns <= l.max_ns,
            "{l:?}"
        );
        echo.join().unwrap();
    }

    #[test]
    fn queries_are_well_formed() {
        let p = query_packet(0x1234, "ns.shoal.home.arpa", 1);
        assert_eq!(&p[..4], &[0x12, 0x34, 0, 0]);
        assert_eq!(&p[12..16], b"\x02ns\x05");
        assert_eq!(&p[p.len() - 5..], &[0, 0, 1, 0, 1]);
        assert_eq!(query_file().lines().count(), 3);
    }
}
