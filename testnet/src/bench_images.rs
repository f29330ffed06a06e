//! `shoal-testnet bench images --hosts 3`: a large image onto every test host, each host
//! pulling it from the registry (the anchor: what Docker Swarm, Nomad and k3s do) against
//! shoal's sharing, in the same run on the same LAN.
//!
//! The image is the test image with one more layer of random bytes (`--size-mb`, 100 by
//! default; random, so that compression saves nothing), built on this machine's engine and
//! pushed to a registry on the hosts' LAN (Debian's `docker-registry`, on this machine's address
//! on the LAN). Each run starts hosts with empty engines, then:
//!
//! 1. anchor: every host's engine pulls the image at once (`docker pull`); timed until all
//!    hold it; the registry's blob downloads counted. The image is then removed again
//!    everywhere.
//! 2. shoal: a Deployment of one replica per host; timed from the apply until every engine
//!    holds the image, and until every pod is ready; blob downloads counted.
//!
//! The registry's uplink is what sharing saves: on a home lab the registry is usually on the
//! internet behind a slow line. With `--uplink-mbit N` an nftables policer holds everything
//! the registry sends to N Mbit/s, shared by every host, as a home lab's line to the internet
//! would; without it the registry is on the LAN, and times favour the anchor.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Cluster, HostOptions};

/// What one side of a run measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    /// Until every engine held the image.
    all_hold: Duration,
    /// Until every pod was ready (shoal only).
    all_ready: Option<Duration>,
    /// Blob downloads the registry served.
    blob_gets: usize,
}

/// Holds what the registry on `port` sends to `mbit` Mbit/s (an nftables policer in this
/// machine's output hook) while it lives.
struct Uplink {
    table: String,
}

impl Uplink {
    fn limit(port: u16, mbit: u64) -> anyhow::Result<Uplink> {
        let table = format!("shoal_bench_uplink_{port}");
        let kbytes = (mbit * 125_000 / 1024).max(1);
        crate::partition::run_nft(&format!(
            "table inet {table} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n    \
             tcp sport {port} limit rate over {kbytes} kbytes/second burst 256 kbytes drop\n  }}\n}}\n"
        ))?;
        Ok(Uplink { table })
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        let _ = crate::partition::run_nft(&format!("delete table inet {}\n", self.table));
    }
}

/// Runs the benchmark and prints a table.
pub fn images(hosts: usize, size_mb: u64, runs: u32, uplink_mbit: u64) -> anyhow::Result<()> {
    crate::hosts::available()?;
    if !crate::registry::ready() {
        bail!("the registry (Debian's docker-registry and apache2-utils) is not installed");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(crate::image::ensure_echo_image())?;
    let local = build_big_image(size_mb)?;
    let line = if uplink_mbit > 0 {
        format!("the registry behind a {uplink_mbit} Mbit/s uplink")
    } else {
        "the registry on the LAN".to_string()
    };
    println!(
        "image {local}: the test image and {size_mb} MB of random bytes; {hosts} hosts, {line}, {runs} run(s)"
    );
    let mut rows = Vec::new();
    for run in 1..=runs.max(1) {
        let (anchor, shoal) = one_run(hosts, &local, uplink_mbit)?;
        println!(
            "run {run}: registry pulls {:.1}s ({} blob downloads); shoal {:.1}s to every engine, \
             {:.1}s to every pod ready ({} blob downloads)",
            anchor.all_hold.as_secs_f64(),
            anchor.blob_gets,
            shoal.all_hold.as_secs_f64(),
            shoal.all_ready.unwrap_or_default().as_secs_f64(),
            shoal.blob_gets
        );
        rows.push((anchor, shoal));
    }
    let median = |f: &dyn Fn(&(Figures, Figures)) -> Duration| {
        let mut v: Vec<Duration> = rows.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    println!();
    println!(
        "| {hosts} hosts, {size_mb} MB image, {line} | every engine holds it (median) | registry blob downloads |"
    );
    println!("|---|---|---|");
    println!(
        "| each host pulls from the registry (anchor) | {:.1} s | {} |",
        median(&|r| r.0.all_hold).as_secs_f64(),
        rows[0].0.blob_gets
    );
    println!(
        "| shoal: one pull, the others fetch from it | {:.1} s (pods ready {:.1} s) | {} |",
        median(&|r| r.1.all_hold).as_secs_f64(),
        median(&|r| r.1.all_ready.unwrap_or_default()).as_secs_f64(),
        rows[0].1.blob_gets
    );
    Ok(())
}

/// The big image on this machine's engine (built once per size).
fn build_big_image(size_mb: u64) -> anyhow::Result<String> {
    let tag = format!("shoal-test/big:{size_mb}mb");
    if crate::image::image_present(&tag) {
        return Ok(tag);
    }
    let dir = tempfile::tempdir()?;
    let mut blob = std::fs::File::create(dir.path().join("blob"))?;
    // xorshift64*: bytes that no compressor shrinks, without a dependency.
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
        | 1;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..size_mb {
        for chunk in buf.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        std::io::Write::write_all(&mut blob, &buf)?;
    }
    drop(blob);
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}\nCOPY blob /blob\n", crate::image::ECHO_IMAGE),
    )?;
    let out = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir.path())
        .output()
        .context("cannot run docker build")?;
    if !out.status.success() {
        bail!(
            "docker build of {tag}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(tag)
}

fn one_run(hosts: usize, local: &str, uplink_mbit: u64) -> anyhow::Result<(Figures, Figures)> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::up_hosts(
        hosts,
        dir.path(),
        &HostOptions {
            image_on: Some(Vec::new()),
            ..HostOptions::default()
        },
    )?;
    let reg = cluster.lan_registry()?;
    let port = reg.addr().port();
    let image = reg.push(local, "bench/big:v1")?;
    // The push goes at full speed; the pulls through the uplink.
    let _uplink = (uplink_mbit > 0)
        .then(|| Uplink::limit(port, uplink_mbit))
        .transpose()?;
    let described = cluster.describe().nodes;
    let names: Vec<String> = described.iter().map(|n| n.name.clone()).collect();

    // The anchor: every engine pulls at once.
    let before = reg.blob_gets("bench/big")?;
    let started = Instant::now();
    let pulls: Vec<_> = described
        .iter()
        .map(|n| {
            let socket = n
                .engine_socket
                .clone()
                .with_context(|| format!("{} has no engine socket", n.name))?;
            let image = image.clone();
            Ok(std::thread::spawn(move || {
                std::process::Command::new("docker")
                    .args(["-H", &socket, "pull", "-q", &image])
                    .output()
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    for (h, p) in names.iter().zip(pulls) {
        let out = p
            .join()
            .map_err(|_| anyhow::anyhow!("the pull on {h} panicked"))??;
        if !out.status.success() {
            bail!(
                "docker pull on {h}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let anchor = Figures {
        all_hold: started.elapsed(),
        all_ready: None,
        blob_gets: reg.blob_gets("bench/big")? - before,
    };
    for h in &names {
        cluster.docker(h, &["rmi", &image])?;
    }
    // The nodes read their engines' image lists every 10 s: let them see the removal.
    std::thread::sleep(Duration::from_secs(12));

    // shoal: one replica per host.
    let before = reg.blob_gets("bench/big")?;
    let first = cluster.node(&names[0])?;
    let manifest = crate::fixture::workload("default", "big", hosts as u32, None)
        .replace(crate::image::ECHO_IMAGE, &image);
    let started = Instant::now();
    crate::fixture::apply(first, &manifest);
    let mut all_hold = None;
    let all_ready = loop {
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "the image did not reach every host in 10 min\n{}",
                cluster.log_tails(40)
            );
        }
        if all_hold.is_none()
            && names
                .iter()
                .all(|h| cluster.docker(h, &["image", "inspect", &image]).is_ok())
        {
            all_hold = Some(started.elapsed());
        }
        let pods = crate::listing::pods(first, "default", "big")?;
        let per_node: BTreeMap<&str, usize> =
            pods.iter()
                .filter(|p| p.ready)
                .fold(BTreeMap::new(), |mut m, p| {
                    *m.entry(p.node.as_str()).or_default() += 1;
                    m
                });
        if all_hold.is_some() && per_node.len() == hosts {
            break started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let shoal = Figures {
        all_hold: all_hold.unwrap_or(all_ready),
        all_ready: Some(all_ready),
        blob_gets: reg.blob_gets("bench/big")? - before,
    };
    Ok((anchor, shoal))
}
