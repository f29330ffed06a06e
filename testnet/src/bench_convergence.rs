//! `shoal-testnet bench convergence`: how long a write on one node takes to show on every
//! node, and what an idle node sends, next to a 3-member etcd cluster (the anchor of
//! `../shared/TARGETS.md`) measured in the same run when `etcd` is installed.
//!
//! Latency: for each write, a poller thread per other node asks its node for the object over
//! a kept-alive HTTP connection every 0.3 ms, from just before the write is sent; the
//! write's latency is the time until the last node answered 200. Idle traffic: nftables
//! counters on the `output` hook, one per node address, over a quiet period during which no
//! request is made (so only node-to-node traffic is counted).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::Cluster;

/// The pause between two polls of one node.
const POLL_PAUSE: Duration = Duration::from_micros(300);

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub what: String,
    pub nodes: usize,
    pub writes: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Bytes per second each node sent while idle (mean over nodes), if measured.
    pub idle_bytes_per_sec: Option<f64>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} nodes, {} writes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.what,
            self.nodes,
            self.writes,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )?;
        if let Some(b) = self.idle_bytes_per_sec {
            write!(f, "; idle: {b:.0} bytes/s sent per node")?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn figures(what: &str, nodes: usize, mut lat: Vec<Duration>, idle: Option<f64>) -> Figures {
    lat.sort();
    Figures {
        what: what.into(),
        nodes,
        writes: lat.len(),
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied().unwrap_or_default(),
        idle_bytes_per_sec: idle,
    }
}

/// Runs the benchmark: shoal with `nodes` nodes, then (if installed) etcd with 3 members.
pub fn convergence(nodes: usize, writes: usize, idle_secs: u64) -> anyhow::Result<Vec<Figures>> {
    let mut out = Vec::new();
    let shoal = shoal_convergence(nodes, writes, idle_secs)?;
    println!("{shoal}");
    out.push(shoal);
    match etcd_convergence(3, writes) {
        Ok(f) => {
            println!("{f}");
            out.push(f);
        }
        Err(e) => println!("anchor etcd: not measured: {e:#}"),
    }
    Ok(out)
}

/// Writes one object to `origin` while pollers wait for it on the other nodes; the time until
/// the last one sees it.
fn one_write(
    write: impl FnOnce() -> anyhow::Result<()>,
    pollers: Vec<Box<dyn FnMut() -> anyhow::Result<bool> + Send>>,
) -> anyhow::Result<Duration> {
    let barrier = Arc::new(Barrier::new(pollers.len() + 1));
    let deadline = Duration::from_secs(10);
    let mut threads = Vec::new();
    for mut poll in pollers {
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(move || -> anyhow::Result<Instant> {
            barrier.wait();
            let begun = Instant::now();
            loop {
                if poll()? {
                    return Ok(Instant::now());
                }
                if begun.elapsed() > deadline {
                    bail!("not visible within {deadline:?}");
                }
                // Leaves the 2 cores to the nodes; the resolution stays well under 1 ms.
                std::thread::sleep(POLL_PAUSE);
            }
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    write()?;
    let mut last = t0;
    for t in threads {
        let seen = t
            .join()
            .map_err(|_| anyhow::anyhow!("a poller panicked"))??;
        last = last.max(seen);
    }
    Ok(last - t0)
}

fn shoal_convergence(nodes: usize, writes: usize, idle_secs: u64) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::up(nodes, dir.path())?;
    let apis: Vec<crate::Api> = cluster
        .nodes()
        .iter()
        .map(|n| n.api())
        .collect::<anyhow::Result<_>>()?;
    // Warm up: every node has every node's registration and connections are up.
    std::thread::sleep(Duration::from_secs(2));
    let mut lat = Vec::with_capacity(writes);
    for i in 0..writes {
        let origin = i % nodes;
        let name = format!("conv-{i}");
        let path = format!("/api/v1/namespaces/default/configmaps/{name}");
        let pollers: Vec<Box<dyn FnMut() -> anyhow::Result<bool> + Send>> = (0..nodes)
            .filter(|k| *k != origin)
            .map(|k| {
                let api = cluster.nodes()[k].api()?;
                let path = path.clone();
                Ok(Box::new(move || Ok(api.get(&path)?.0 == 200))
                    as Box<dyn FnMut() -> anyhow::Result<bool> + Send>)
            })
            .collect::<anyhow::Result<_>>()?;
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata: {{k: v{i}}}\n"
        );
        let api = &apis[origin];
        let took = one_write(
            || {
                let (code, body) = api.apply(&manifest)?;
                if code != 201 && code != 200 {
                    bail!("apply: {code} {body}");
                }
                Ok(())
            },
            pollers,
        )
        .with_context(|| format!("write {i} on n{}", origin + 1))?;
        lat.push(took);
    }
    let idle = idle_bytes(&cluster, idle_secs)?;
    Ok(figures("shoal", nodes, lat, idle))
}

/// Mean bytes per second each node's address sent over `secs` of quiet, from nftables
/// counters; None when nft is not usable here.
fn idle_bytes(cluster: &Cluster, secs: u64) -> anyhow::Result<Option<f64>> {
    if crate::partition::available().is_err() {
        return Ok(None);
    }
    let ips: Vec<Ipv4Addr> = cluster
        .nodes()
        .iter()
        .map(|n| n.opts.ip.parse())
        .collect::<Result<_, _>>()?;
    let table = format!("shoal_bench_{}", &cluster.id()[..8.min(cluster.id().len())]);
    let mut script = format!(
        "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n"
    );
    for ip in &ips {
        script.push_str(&format!("    ip saddr {ip} counter\n"));
    }
    script.push_str("  }\n}\n");
    nft(&script)?;
    let result = (|| -> anyhow::Result<f64> {
        let before = counters(&table)?;
        std::thread::sleep(Duration::from_secs(secs));
        let after = counters(&table)?;
        let total: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        Ok(total as f64 / ips.len() as f64 / secs as f64)
    })();
    let _ = nft(&format!("delete table inet {table}\n"));
    result.map(Some)
}

fn nft(script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The byte counters of the table's rules, in rule order.
fn counters(table: &str) -> anyhow::Result<Vec<u64>> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", table])
        .output()
        .context("cannot run nft")?;
    if !out.status.success() {
        bail!("nft list failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut bytes = Vec::new();
    for item in v["nftables"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let Some(exprs) = item["rule"]["expr"].as_array() else {
            continue;
        };
        for e in exprs {
            if let Some(b) = e["counter"]["bytes"].as_u64() {
                bytes.push(b);
            }
        }
    }
    Ok(bytes)
}

/// A 3-member etcd cluster on loopback, written to through one member's JSON gateway and read
/// on the others with serializable (local) reads.
fn etcd_convergence(members: usize, writes: usize) -> anyhow::Result<Figures> {
    let etcd = which("etcd").context("etcd is not installed (apt-get install etcd-server)")?;
    let dir = tempfile::tempdir()?;
    let ips = crate::cluster::pick_addresses(members)?;
    let ports: Vec<(u16, u16)> = ips
        .iter()
        .map(|ip| {
            let ip = ip.to_string();
            Ok((crate::free_port(&ip)?, crate::free_port(&ip)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let initial: Vec<String> = ips
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(k, (ip, (_, peer)))| format!("e{k}=http://{ip}:{peer}"))
        .collect();
    let mut children = Children(Vec::new());
    for (k, (ip, (client, peer))) in ips.iter().zip(&ports).enumerate() {
        let log = std::fs::File::create(dir.path().join(format!("e{k}.log")))?;
        let child = Command::new(&etcd)
            .args([
                "--name",
                &format!("e{k}"),
                "--data-dir",
                &dir.path().join(format!("e{k}")).to_string_lossy(),
                "--listen-client-urls",
                &format!("http://{ip}:{client}"),
                "--advertise-client-urls",
                &format!("http://{ip}:{client}"),
                "--listen-peer-urls",
                &format!("http://{ip}:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:{peer}"),
                "--initial-cluster",
                &initial.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start etcd")?;
        children.0.push(child);
    }
    let urls: Vec<String> = ips
        .iter()
        .zip(&ports)
        .map(|(ip, (client, _))| format!("http://{ip}:{client}"))
        .collect();
    let http = reqwest::blocking::Client::new();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let put = |url: &str, key: &str, value: &str| -> anyhow::Result<()> {
        let r = http
            .post(format!("{url}/v3/kv/put"))
            .json(&json!({"key": b64(key), "value": b64(value)}))
            .send()?;
        if !r.status().is_success() {
            bail!("etcd put: {}", r.status());
        }
        Ok(())
    };
    // Ready when a write through the first member succeeds.
    let began = Instant::now();
    while put(&urls[0], "warmup", "1").is_err() {
        if began.elapsed() > Duration::from_secs(20) {
            bail!("etcd did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut lat = Vec::with_capacity(writes);
    for i in 0..writes {
        let origin = i % members;
        let key = format!("conv-{i}");
        let pollers: Vec<Box<dyn FnMut() -> anyhow::Result<bool> + Send>> = (0..members)
            .filter(|k| *k != origin)
            .map(|k| {
                let url = urls[k].clone();
                let http = reqwest::blocking::Client::new();
                let body = json!({"key": b64(&key), "serializable": true});
                Box::new(move || {
                    let v: Value = http
                        .post(format!("{url}/v3/kv/range"))
                        .json(&body)
                        .send()?
                        .json()?;
                    Ok(v["count"].as_str().is_some_and(|c| c != "0"))
                }) as Box<dyn FnMut() -> anyhow::Result<bool> + Send>
            })
            .collect();
        let took = one_write(|| put(&urls[origin], &key, "v"), pollers)
            .with_context(|| format!("etcd write {i}"))?;
        lat.push(took);
    }
    Ok(figures("etcd 3 members", members, lat, None))
}

/// Kills the anchor's processes however the run ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
