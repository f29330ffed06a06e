//! `shoal-testnet bench failover`: the time from `kill -9` of the node holding the most
//! replicas of a Deployment until every replica serves HTTP again on the surviving nodes.
//!
//! A 3-node testnet runs a Deployment of 4 replicas of the test image (with requests, one
//! published port). Each run kills the `shoald` holding the most replicas, polls the surviving
//! node's pod list every 20 ms until 4 pods are ready on survivors and every one of them
//! answers `GET /` with 200 on its published port, then restarts the killed node and waits for
//! it to be alive again before the next run. All nodes share one Docker engine here, so the
//! killed node's containers go on running (as after an agent crash); what is timed is the
//! cluster serving from the others.
//!
//! With `--hosts` ([`failover_hosts`]), the 3 nodes are test hosts with their own engines
//! ([`crate::hosts`]) and each run powers the victim off instead (link down, then SIGKILL to
//! its `shoald`, engine and containers), while a client on a surviving host sends a request
//! every 50 ms through that host's node proxy (a new connection each, 1 s timeout); the run
//! reports the requests that failed. The host is booted again before the next run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Cluster, Node, Testnet};

const WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 18080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: shoal-test/echo:latest
        ports: [{containerPort: 8080}]
        resources:
          requests: {cpu: 100m, memory: 32Mi}
";

/// Ready `web` pods with a published port as `node` sees them: name → (node, host ip, host
/// port).
fn ready(node: &Node) -> anyhow::Result<BTreeMap<String, (String, String, u16)>> {
    Ok(crate::listing::pods(node, "default", "web")?
        .into_iter()
        .filter(|p| p.ready)
        .filter_map(|p| {
            let (ip, port) = p.host?;
            Some((p.name, (p.node, ip, port)))
        })
        .collect())
}

fn serves(ip: &str, port: u16) -> bool {
    format!("{ip}:{port}")
        .parse()
        .is_ok_and(crate::bench::serves_at)
}

/// Runs the benchmark; returns the times of the runs.
pub fn failover(runs: u32) -> anyhow::Result<Vec<Duration>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(crate::image::ensure_echo_image())?;
    let dir = tempfile::tempdir()?;
    let mut t = Testnet::up(3, dir.path())?;
    let result = runs_on(&mut t.cluster, runs);
    // The nodes stop before their containers are removed.
    drop(t);
    let times = result?;
    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "kill -9 -> all 4 replicas serving on the survivors: median {:?} (runs: {times:?})",
        sorted[sorted.len() / 2]
    );
    Ok(times)
}

/// [`failover`] on 3 test hosts; returns each run's time and failed requests.
pub fn failover_hosts(runs: u32) -> anyhow::Result<Vec<(Duration, usize)>> {
    crate::hosts::available()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(crate::image::ensure_echo_image())?;
    let dir = tempfile::tempdir()?;
    let mut cluster = Cluster::up_hosts(3, dir.path(), &crate::HostOptions::default())?;
    let results = hosts_runs_on(&mut cluster, runs)?;
    let mut times: Vec<Duration> = results.iter().map(|(t, _)| *t).collect();
    times.sort();
    let failed: usize = results.iter().map(|(_, f)| f).sum();
    println!(
        "hosts: power-off -> all 4 replicas serving on the survivors: median {:?} (runs: {:?}); \
         failed requests through a survivor's proxy: {failed} in all (per run: {:?})",
        times[times.len() / 2],
        results.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        results.iter().map(|(_, f)| *f).collect::<Vec<_>>(),
    );
    Ok(results)
}

fn hosts_runs_on(cluster: &mut Cluster, runs: u32) -> anyhow::Result<Vec<(Duration, usize)>> {
    let (code, body) = cluster.nodes()[0].api()?.apply(WEB)?;
    if code != 200 && code != 201 {
        bail!("apply: {code} {body}");
    }
    let mut out = Vec::new();
    for run in 0..runs {
        let pods = wait_ready(&cluster.nodes()[0], run)?;
        let victim = most_loaded(&pods)?;
        let watcher = cluster
            .names()
            .into_iter()
            .find(|n| *n != victim)
            .context("no other host")?;
        let url = format!("http://{}:18080/", cluster.node(&watcher)?.opts.ip);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client =
            crate::hosts::client(&cluster.netns(&watcher)?, url, stop.clone(), Instant::now());
        std::thread::sleep(Duration::from_secs(1));
        let off = Instant::now();
        cluster.power_off(&victim)?;
        serving_elsewhere(cluster.node(&watcher)?, &victim, off, run)?;
        let took = off.elapsed();
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (sent, failed) = client
            .join()
            .map_err(|_| anyhow::anyhow!("the client panicked"))?;
        println!(
            "run {run}: powered {victim} off, all serving again after {took:?}; \
             {} of {sent} requests through {watcher}'s proxy failed",
            failed.len()
        );
        for f in failed.iter().take(5) {
            println!("  {f}");
        }
        out.push((took, failed.len()));
        cluster.boot(&victim)?;
        cluster.wait_members_alive(Duration::from_secs(60))?;
    }
    Ok(out)
}

/// Polls `watcher` every 20 ms until 4 replicas are ready off `victim` and each serves on its
/// published port; fails 120 s after `since`.
fn serving_elsewhere(watcher: &Node, victim: &str, since: Instant, run: u32) -> anyhow::Result<()> {
    loop {
        let pods = ready(watcher)?;
        if pods.len() == 4
            && pods
                .values()
                .all(|(on, ip, port)| on != victim && serves(ip, *port))
        {
            return Ok(());
        }
        if since.elapsed() > Duration::from_secs(120) {
            bail!("run {run}: the replicas did not serve elsewhere within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until 4 replicas are ready with a published port.
fn wait_ready(node: &Node, run: u32) -> anyhow::Result<BTreeMap<String, (String, String, u16)>> {
    let started = Instant::now();
    loop {
        let pods = ready(node)?;
        if pods.len() == 4 {
            return Ok(pods);
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("run {run}: the replicas were not ready within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The node that holds the most replicas (the last by name on a tie).
fn most_loaded(pods: &BTreeMap<String, (String, String, u16)>) -> anyhow::Result<String> {
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (on, _, _) in pods.values() {
        *per_node.entry(on.clone()).or_default() += 1;
    }
    per_node
        .iter()
        .max_by_key(|(name, n)| (**n, std::cmp::Reverse((*name).clone())))
        .map(|(name, _)| name.clone())
        .context("no node holds a replica")
}

fn runs_on(cluster: &mut Cluster, runs: u32) -> anyhow::Result<Vec<Duration>> {
    let (code, body) = cluster.nodes()[0].api()?.apply(WEB)?;
    if code != 200 && code != 201 {
        bail!("apply: {code} {body}");
    }
    let mut times = Vec::new();
    for run in 0..runs {
        let pods = wait_ready(&cluster.nodes()[0], run)?;
        let victim = most_loaded(&pods)?;
        let watcher = cluster
            .names()
            .into_iter()
            .find(|n| *n != victim)
            .context("no other node")?;
        let killed = Instant::now();
        cluster.kill(&victim)?;
        serving_elsewhere(cluster.node(&watcher)?, &victim, killed, run)?;
        let took = killed.elapsed();
        println!("run {run}: killed {victim}, all serving again after {took:?}");
        times.push(took);
        cluster.restart(&victim)?;
        cluster.wait_members_alive(Duration::from_secs(60))?;
    }
    Ok(times)
}
