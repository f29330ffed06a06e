//! Cluster events with real processes, the real CLI and the real Docker engine: a Deployment
//! spreads over a 3-node testnet, the `shoald` holding two of its replicas is killed with
//! SIGKILL, and `shoal get events` on a surviving node shows the node's death and the pods
//! moved off it (`Rescheduled`), besides the scheduling and starts from before. `describe`
//! of a moved pod ends with its events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_testnet::{Node, Testnet, listing, wait_until};

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

/// Pod name → node, for the `web` pods that have a node.
fn placed(node: &Node) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(listing::pods(node, "default", "web")?
        .into_iter()
        .filter(|p| !p.node.is_empty())
        .map(|p| (p.name, p.node))
        .collect())
}

#[test]
fn get_events_shows_the_rescheduling_after_a_node_is_killed() {
    // docker_ready fails under CI when the engine is missing; elsewhere it says why it skips.
    if !shoal_testnet::docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The nodes die before their containers are removed.
    let mut t = Testnet::up(3, dir.path()).unwrap();
    let cluster = &mut t.cluster;
    let (code, body) = cluster.nodes()[0].api().unwrap().apply(WEB).unwrap();
    assert!(code == 200 || code == 201, "{code} {body}");

    let before = wait_until(Duration::from_secs(90), "4 placed replicas", || {
        let pods = placed(&cluster.nodes()[0])?;
        Ok((pods.len() == 4).then_some(pods))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pod, on) in &before {
        per_node.entry(on.clone()).or_default().push(pod.clone());
    }
    assert!(per_node.len() >= 2, "pods on several nodes: {per_node:?}");
    // The victim: a node with the most pods (two, with three nodes and four pods).
    let (victim, moved) = per_node
        .iter()
        .max_by_key(|(_, pods)| pods.len())
        .map(|(n, p)| (n.clone(), p.clone()))
        .unwrap();

    // Events from before the kill: the scheduling, on every node (spread by gossip).
    for n in cluster.nodes() {
        wait_until(
            Duration::from_secs(30),
            &format!("Scheduled events on {}", n.opts.name),
            || {
                let out = n.cli(&["get", "events"])?.success()?;
                let scheduled = out
                    .stdout
                    .lines()
                    .filter(|l| l.contains("Scheduled") && l.contains("pod/web-"))
                    .count();
                Ok((scheduled >= 4).then_some(()))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    }

    cluster.kill(&victim).unwrap();
    let watcher = cluster
        .nodes()
        .iter()
        .find(|n| n.opts.name != victim)
        .unwrap();
    let table = wait_until(
        Duration::from_secs(60),
        "NodeDead and Rescheduled events in `shoal get events`",
        || {
            let out = watcher.cli(&["get", "events"])?.success()?;
            let lines: Vec<&str> = out.stdout.lines().collect();
            let dead = lines.iter().any(|l| {
                l.contains("Warning")
                    && l.contains("NodeDead")
                    && l.contains(&format!("node/{victim}"))
            });
            let rescheduled = moved.iter().all(|pod| {
                lines.iter().any(|l| {
                    l.contains("Rescheduled")
                        && l.contains(&format!("pod/{pod}"))
                        && l.contains(&format!("Moved off node {victim}"))
                })
            });
            Ok((dead && rescheduled).then_some(out.stdout))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\n{:?}\n{}",
            watcher.cli(&["get", "events"]).map(|o| o.stdout),
            cluster.log_tails(60)
        )
    });
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    eprintln!("{table}");

    // describe of a moved pod ends with its events, the move among them.
    let out = watcher
        .cli(&["describe", "pod", &moved[0]])
        .unwrap()
        .success()
        .unwrap();
    let events = out
        .stdout
        .split("\nEvents:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section:\n{}", out.stdout));
    assert!(events.contains("Rescheduled"), "{}", out.stdout);
    assert!(events.contains("Scheduled"), "{}", out.stdout);
    // A field selector narrows the list to one object.
    let (code, list) = watcher
        .api()
        .unwrap()
        .get(&format!(
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{}",
            moved[0]
        ))
        .unwrap();
    assert_eq!(code, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(
        items
            .iter()
            .all(|e| e["involvedObject"]["name"] == moved[0].as_str())
    );
}
