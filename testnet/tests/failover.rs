//! Self-healing across nodes with real processes and the real Docker engine: a Deployment with
//! requests spreads over a 3-node testnet, and when the `shoald` holding two of its replicas
//! is killed, the replicas come back on the other nodes while the pods there are untouched.
//!
//! In a testnet all nodes share one Docker engine, so a killed `shoald` leaves its containers
//! running (as a crashed agent would on a live machine); what is checked is what the cluster
//! reports and runs on the surviving nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shoal_testnet::{Node, Testnet, listing, wait_until};

const IMAGE: &str = "shoal-test/echo:latest";

/// Ready pods of `app=web` as `node` reports them: pod name → (node, container id).
fn ready_pods(node: &Node) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    Ok(listing::pods(node, "default", "web")?
        .into_iter()
        .filter(|p| p.ready)
        .map(|p| (p.name, (p.node, p.container)))
        .collect())
}

/// Every `web` pod as `node` lists it: name, node, phase and readiness.
fn pods_said(node: &Node) -> anyhow::Result<Vec<(String, String, String, bool)>> {
    Ok(listing::pods(node, "default", "web")?
        .into_iter()
        .map(|p| (p.name, p.node, p.phase, p.ready))
        .collect())
}

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
        resources:
          requests: {cpu: 100m, memory: 32Mi}
";

#[test]
fn replicas_of_a_killed_node_come_back_elsewhere_and_the_others_are_untouched() {
    if !shoal_testnet::docker_ready() {
        return;
    }
    assert!(WEB.contains(IMAGE));
    let dir = tempfile::tempdir().unwrap();
    // The nodes die before their containers are removed, so that no agent starts them again.
    let mut t = Testnet::up(3, dir.path()).unwrap();
    let cluster = &mut t.cluster;
    let (code, body) = cluster.nodes()[0].api().unwrap().apply(WEB).unwrap();
    assert!(code == 200 || code == 201, "{code} {body}");

    // Spread: 2/1/1 over the three nodes, all ready.
    let before = wait_until(Duration::from_secs(90), "4 ready replicas", || {
        let pods = ready_pods(&cluster.nodes()[0])?;
        Ok((pods.len() == 4).then_some(pods))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (on, _) in before.values() {
        *per_node.entry(on.as_str()).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_node.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [1, 1, 2], "spread over the nodes: {per_node:?}");
    let victim = per_node
        .iter()
        .find(|(_, n)| **n == 2)
        .map(|(name, _)| name.to_string())
        .unwrap();
    let survivors: BTreeSet<String> = cluster
        .names()
        .into_iter()
        .filter(|n| *n != victim)
        .collect();
    let untouched: BTreeMap<String, (String, String)> = before
        .iter()
        .filter(|(_, (on, _))| *on != victim)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    // kill -9 of the node with two replicas.
    let killed = Instant::now();
    cluster.kill(&victim).unwrap();
    let watcher = cluster
        .nodes()
        .iter()
        .find(|n| n.opts.name != victim)
        .unwrap();
    let after = wait_until(
        Duration::from_secs(15),
        "4 ready replicas on the surviving nodes",
        || {
            let pods = ready_pods(watcher)?;
            let on_survivors = pods.values().all(|(on, _)| survivors.contains(on));
            Ok((pods.len() == 4 && on_survivors).then_some(pods))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nnow: {:?}\n{}",
            ready_pods(watcher),
            cluster.log_tails(60)
        )
    });
    eprintln!(
        "4 ready replicas again {:?} after the kill",
        killed.elapsed()
    );
    // The pods that ran on the surviving nodes kept their containers.
    for (name, (on, id)) in &untouched {
        assert_eq!(
            after.get(name),
            Some(&(on.clone(), id.clone())),
            "{name} was untouched"
        );
    }
}

/// Pod names of the running `web` containers of a cluster, from the engine that every node of
/// the testnet shares.
fn running_web(cluster_id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("label=shoal.cluster={cluster_id}"),
            "--filter",
            "status=running",
            "--format",
            "{{.Label \"shoal.pod\"}}",
        ])
        .output()
        .unwrap();
    let mut pods: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|p| p.starts_with("web-"))
        .map(str::to_string)
        .collect();
    pods.sort();
    pods
}

/// A partition 3|2 while a Deployment runs on both sides: each side keeps serving (it moves
/// the other side's replicas onto its own nodes once they are dead past the grace); after the
/// heal, the merged slots leave exactly the declared replicas running.
#[test]
fn after_a_3_2_partition_heals_exactly_the_declared_replicas_run() {
    if !shoal_testnet::docker_ready() {
        return;
    }
    if shoal_testnet::partition::available().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and nft is unusable"
        );
        eprintln!("skipping: nftables is not usable here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut t = Testnet::up(5, dir.path()).unwrap();
    let cluster_id = t.cluster_id().to_string();
    let cluster = &mut t.cluster;
    let (code, body) = cluster.nodes()[0].api().unwrap().apply(WEB).unwrap();
    assert!(code == 200 || code == 201, "{code} {body}");
    wait_until(Duration::from_secs(90), "4 ready replicas", || {
        Ok((ready_pods(&cluster.nodes()[0])?.len() == 4).then_some(()))
    })
    .unwrap_or_else(|e| {
        // What each node says first: the log tails that follow are long.
        let said: Vec<String> = cluster
            .nodes()
            .iter()
            .map(|n| format!("{}: {:?}", n.opts.name, pods_said(n)))
            .collect();
        panic!("{e:#}\n{}\n{}", said.join("\n"), cluster.log_tails(40))
    });

    let (majority, minority) = (
        vec!["n1".to_string(), "n2".to_string(), "n3".to_string()],
        vec!["n4".to_string(), "n5".to_string()],
    );
    cluster
        .partition(&[majority.clone(), minority.clone()])
        .unwrap();
    // Each side runs the four replicas on its own nodes.
    for side in [&majority, &minority] {
        let watcher = cluster.node(&side[0]).unwrap();
        wait_until(
            Duration::from_secs(40),
            &format!("4 ready replicas on {side:?}"),
            || {
                let pods = ready_pods(watcher)?;
                Ok(
                    (pods.len() == 4 && pods.values().all(|(on, _)| side.contains(on)))
                        .then_some(()),
                )
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\nnow: {:?}\n{}",
                ready_pods(watcher),
                cluster.log_tails(40)
            )
        });
    }

    cluster.heal().unwrap();
    // Merged: every node agrees on the four slots, and only four containers run.
    let settled = wait_until(Duration::from_secs(60), "exactly 4 web containers", || {
        let running = running_web(&cluster_id);
        let ready: Vec<_> = cluster
            .nodes()
            .iter()
            .map(ready_pods)
            .collect::<anyhow::Result<_>>()?;
        let agree = ready.iter().all(|r| r.len() == 4 && *r == ready[0]);
        Ok((running.len() == 4 && agree).then_some(running))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nrunning: {:?}\n{}",
            running_web(&cluster_id),
            cluster.log_tails(40)
        )
    });
    // And it stays so.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running_web(&cluster_id), settled);
}

/// `shoal drain` empties a node (its pods move within the Deployment's maxUnavailable and
/// the Deployment stays ready), and `uncordon` makes it take pods again.
#[test]
fn drain_empties_a_node_and_uncordon_makes_it_usable_again() {
    if !shoal_testnet::docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Testnet::up(3, dir.path()).unwrap();
    let cluster = &t.cluster;
    let n1 = &cluster.nodes()[0];
    let (code, body) = n1.api().unwrap().apply(WEB).unwrap();
    assert!(code == 200 || code == 201, "{code} {body}");
    let pods = wait_until(Duration::from_secs(90), "4 ready replicas", || {
        let pods = ready_pods(n1)?;
        Ok((pods.len() == 4).then_some(pods))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (on, _) in pods.values() {
        *per_node.entry(on.clone()).or_default() += 1;
    }
    let busiest = per_node
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(name, _)| name.clone())
        .unwrap();

    let out = n1
        .cli(&["drain", &busiest, "--timeout", "90"])
        .unwrap()
        .success()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    assert!(
        out.stdout.contains(&format!("node/{busiest} drained")),
        "{}",
        out.stdout
    );
    let after = wait_until(
        Duration::from_secs(60),
        "4 ready replicas elsewhere",
        || {
            let pods = ready_pods(n1)?;
            Ok((pods.len() == 4 && pods.values().all(|(on, _)| *on != busiest)).then_some(()))
        },
    );
    after.unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    let nodes = n1.cli(&["get", "nodes"]).unwrap().success().unwrap();
    assert!(
        nodes.stdout.contains("SchedulingDisabled"),
        "{}",
        nodes.stdout
    );

    // Uncordoned, it takes the next pods again.
    n1.cli(&["uncordon", &busiest]).unwrap().success().unwrap();
    n1.cli(&["scale", "deploy/web", "--replicas", "6"])
        .unwrap()
        .success()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "pods on the uncordoned node",
        || {
            let pods = ready_pods(n1)?;
            Ok((pods.len() == 6 && pods.values().any(|(on, _)| *on == busiest)).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
}
