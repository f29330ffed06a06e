//! `shoal-testnet bench idle`: what an idle `shoald` costs, resident memory and CPU, next to
//! an idle etcd member (the anchor of `../shared/TARGETS.md`) measured the same way in the
//! same run when `etcd` is installed.
//!
//! A testnet of N nodes starts and settles; then, over `secs`, each process's CPU time is
//! read from `/proc/PID/stat` (user + system ticks) and its resident set from
//! `/proc/PID/status` (`VmRSS`) at the end. No request is made meanwhile.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::Cluster;

/// Resident memory and CPU use of one process over a quiet period.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub rss_bytes: u64,
    /// Share of one core, in percent.
    pub cpu_percent: f64,
}

fn ticks_per_second() -> f64 {
    // The kernel's USER_HZ is 100 on every Linux architecture shoal runs on.
    100.0
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after it are counted from its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no VmRSS")?
        .parse()?;
    Ok(kib * 1024)
}

/// Usage of each of `pids` over `secs` seconds.
fn measure(pids: &[u32], secs: u64) -> anyhow::Result<Vec<Usage>> {
    let before: Vec<u64> = pids
        .iter()
        .map(|p| cpu_ticks(*p))
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(secs));
    let mut out = Vec::new();
    for (pid, b) in pids.iter().zip(before) {
        let used = cpu_ticks(*pid)?.saturating_sub(b) as f64 / ticks_per_second();
        out.push(Usage {
            rss_bytes: rss_bytes(*pid)?,
            cpu_percent: used / secs as f64 * 100.0,
        });
    }
    Ok(out)
}

fn print(what: &str, usage: &[Usage]) {
    for (k, u) in usage.iter().enumerate() {
        println!(
            "{what} {}: {:.1} MiB resident, {:.2} % of a core",
            k + 1,
            u.rss_bytes as f64 / (1024.0 * 1024.0),
            u.cpu_percent
        );
    }
}

/// Runs the benchmark: shoal with `nodes` nodes, then one idle etcd member if installed.
pub fn idle(nodes: usize, settle_secs: u64, secs: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::up(nodes, dir.path())?;
    std::thread::sleep(Duration::from_secs(settle_secs));
    let pids: Vec<u32> = cluster
        .nodes()
        .iter()
        .map(|n| n.pid().context("a node has no pid"))
        .collect::<Result<_, _>>()?;
    let usage = measure(&pids, secs)?;
    print("shoald", &usage);
    drop(cluster);
    match etcd_idle(settle_secs, secs) {
        Ok(u) => print("etcd member", &[u]),
        Err(e) => println!("anchor etcd: not measured: {e:#}"),
    }
    Ok(())
}

fn etcd_idle(settle_secs: u64, secs: u64) -> anyhow::Result<Usage> {
    let mut etcd = crate::etcd::EtcdMember::start()?;
    std::thread::sleep(Duration::from_secs(settle_secs));
    if etcd.exited()? {
        bail!("etcd exited");
    }
    Ok(measure(&[etcd.pid()], secs)?[0])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        cpu_ticks(me).unwrap();
    }
}
