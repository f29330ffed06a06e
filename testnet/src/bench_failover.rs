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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Cluster, Node, Testnet};

const WEB: &str = "apiVersion: apps/v1
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

fn runs_on(cluster: &mut Cluster, runs: u32) -> anyhow::Result<Vec<Duration>> {
    let (code, body) = cluster.nodes()[0].api()?.apply(WEB)?;
    if code != 200 && code != 201 {
        bail!("apply: {code} {body}");
    }
    let mut times = Vec::new();
    for run in 0..runs {
        let started = Instant::now();
        let pods = loop {
            let pods = ready(&cluster.nodes()[0])?;
            if pods.len() == 4 {
                break pods;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("run {run}: the replicas were not ready within 120 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for (on, _, _) in pods.values() {
            *per_node.entry(on.clone()).or_default() += 1;
        }
        let victim = per_node
            .iter()
            .max_by_key(|(name, n)| (**n, std::cmp::Reverse((*name).clone())))
            .map(|(name, _)| name.clone())
            .context("no node holds a replica")?;
        let watcher = cluster
            .names()
            .into_iter()
            .find(|n| *n != victim)
            .context("no other node")?;
        let killed = Instant::now();
        cluster.kill(&victim)?;
        loop {
            let pods = ready(cluster.node(&watcher)?)?;
            if pods.len() == 4
                && pods
                    .values()
                    .all(|(on, ip, port)| *on != victim && serves(ip, *port))
            {
                break;
            }
            if killed.elapsed() > Duration::from_secs(120) {
                bail!("run {run}: the replicas did not serve elsewhere within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = killed.elapsed();
        println!("run {run}: killed {victim}, all serving again after {took:?}");
        times.push(took);
        cluster.restart(&victim)?;
        cluster.wait_members_alive(Duration::from_secs(60))?;
    }
    Ok(times)
}
