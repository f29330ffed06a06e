//! Several real `shoald` processes on loopback form one cluster and replicate desired state:
//! applies on different nodes converge everywhere, a killed node catches up after a restart
//! without join flags (known peers), and a node with a wrong secret sees nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use shoal_testnet::listing::{configmaps, names};
use shoal_testnet::{Node, NodeOptions, wait_until};

const CONVERGE: Duration = Duration::from_secs(30);

fn configmap(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  k: {name}\n"
    )
}

fn apply(node: &Node, manifest: &str) {
    let (code, v) = node.api().unwrap().apply(manifest).unwrap();
    assert!(
        code == 200 || code == 201,
        "apply on {}: {code} {v}",
        node.opts.name
    );
}

/// Waits until every node lists exactly `want` as its ConfigMaps.
fn converge(nodes: &[&Node], want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    for node in nodes {
        wait_until(
            CONVERGE,
            &format!("{} to list configmaps {want:?}", node.opts.name),
            || Ok((configmaps(node)? == want).then_some(())),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\nnow: {:?}\nlog of {}:\n{}",
                configmaps(node),
                node.opts.name,
                node.log()
            )
        });
    }
}

/// n1 creates a cluster in `dir`; n2 and n3 join it with its token.
fn three_nodes(dir: &tempfile::TempDir) -> (Node, Node, Node) {
    let n1 = Node::start(NodeOptions::new("n1", &dir.path().join("n1"))).unwrap();
    let join = |name: &str| {
        Node::start(
            NodeOptions::new(name, &dir.path().join(name))
                .joining(&n1)
                .unwrap(),
        )
        .unwrap()
    };
    let (n2, n3) = (join("n2"), join("n3"));
    (n1, n2, n3)
}

#[test]
fn three_nodes_converge_catch_up_and_refuse_a_wrong_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, mut n2, n3) = three_nodes(&dir);
    let token = n1.join_token().unwrap();
    assert!(token.starts_with("shoal1."), "{token}");
    // One cluster: the same id and the same admin token on every node.
    assert_eq!(n2.cluster_id().unwrap(), n1.cluster_id().unwrap());
    assert_eq!(n3.token().unwrap(), n1.token().unwrap());

    apply(&n1, &configmap("from-n1"));
    apply(&n3, &configmap("from-n3"));
    converge(&[&n1, &n2, &n3], &["from-n1", "from-n3"]);

    // A crash: n2 misses an apply, then comes back without join flags (known peers).
    let peers_file = dir.path().join("n2/peers.json");
    wait_until(Duration::from_secs(15), "n2 to remember its peers", || {
        Ok(peers_file.exists().then_some(()))
    })
    .unwrap();
    n2.kill().unwrap();
    apply(&n1, &configmap("while-n2-down"));
    converge(&[&n1, &n3], &["from-n1", "from-n3", "while-n2-down"]);
    n2.opts.join = None;
    n2.restart().unwrap();
    converge(&[&n2], &["from-n1", "from-n3", "while-n2-down"]);

    // Same cluster id, wrong secret: never admitted, sees nothing of the cluster.
    let mut wrong: Value = {
        use base64::Engine as _;
        let body = token.strip_prefix("shoal1.").unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .unwrap(),
        )
        .unwrap()
    };
    wrong["secret"] = Value::String("ab".repeat(32));
    let wrong_token = {
        use base64::Engine as _;
        format!(
            "shoal1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&wrong).unwrap())
        )
    };
    let mut opts = NodeOptions::new("intruder", &dir.path().join("intruder"));
    opts.join = Some((n1.p2p_addr().to_string(), wrong_token));
    let intruder = Node::start(opts).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        assert_eq!(configmaps(&intruder).unwrap(), Vec::<String>::new());
        assert_eq!(
            names(&intruder, "/api/v1/namespaces").unwrap(),
            vec!["default".to_string()]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // No secret at all (`--join` without a token): the node makes a cluster of its own, and
    // neither side admits the other.
    let mut opts = NodeOptions::new("stray", &dir.path().join("stray"));
    opts.extra_args = vec!["--join".into(), n1.p2p_addr().to_string()];
    let stray = Node::start(opts).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        assert_eq!(configmaps(&stray).unwrap(), Vec::<String>::new());
        assert_eq!(
            names(&stray, "/api/v1/nodes").unwrap(),
            vec!["stray".to_string()]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(stray.log().contains("refused"), "{}", stray.log());
    // And the cluster is unchanged by either: no member named intruder or stray.
    converge(&[&n1, &n3], &["from-n1", "from-n3", "while-n2-down"]);
    let members = names(&n1, "/api/v1/nodes").unwrap();
    assert_eq!(members, vec!["n1", "n2", "n3"], "{members:?}");
}

/// A Deployment applied to a 3-node cluster gets one ReplicaSet and its slots, the same on
/// every node, and then nothing is rewritten or moved: no node undoes another's writes
/// (every write would stay in the document's history forever). That one node at a time holds
/// the controller role is tested in the controllers' unit tests.
#[test]
fn a_converged_cluster_stays_still() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2, n3) = three_nodes(&dir);
    let _cleanup = shoal_testnet::DockerCleanup::new(&n1.cluster_id().unwrap());
    // Every node must see the others before the apply, so that they agree on the role.
    apply(&n1, &configmap("ready"));
    converge(&[&n1, &n2, &n3], &["ready"]);
    apply(
        &n2,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: \"registry.invalid/none:1\"}]\n",
    );
    let rs_path = "/apis/apps/v1/namespaces/default/replicasets";
    let versions = |n: &Node| -> anyhow::Result<Vec<(String, String)>> {
        let (_, v) = n.api()?.get(rs_path)?;
        Ok(v["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    i["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect())
    };
    let first = wait_until(CONVERGE, "one ReplicaSet on every node", || {
        let all: Vec<_> = [&n1, &n2, &n3]
            .iter()
            .map(|n| versions(n))
            .collect::<Result<_, _>>()?;
        Ok((all[0].len() == 1 && all.iter().all(|v| *v == all[0])).then(|| all[0].clone()))
    })
    .unwrap();
    let pods = |n: &Node| names(n, "/api/v1/namespaces/default/pods").unwrap_or_default();
    wait_until(CONVERGE, "two pods everywhere", || {
        Ok([&n1, &n2, &n3]
            .iter()
            .all(|n| pods(n).len() == 2)
            .then_some(()))
    })
    .unwrap();
    // Still for a while: the same ReplicaSet at the same resourceVersion on every node.
    std::thread::sleep(Duration::from_secs(4));
    for n in [&n1, &n2, &n3] {
        assert_eq!(versions(n).unwrap(), first, "on {}", n.opts.name);
        assert_eq!(pods(n).len(), 2, "on {}", n.opts.name);
    }
}

/// Each member's state in `node`'s status, by name.
fn member_states(node: &Node) -> anyhow::Result<Vec<(String, String)>> {
    let (code, v) = node.api()?.get("/shoal/v1/status")?;
    anyhow::ensure!(code == 200, "status on {}: {code} {v}", node.opts.name);
    Ok(v["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

fn wait_states(node: &Node, want: &[(&str, &str)], within: Duration) -> Duration {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let started = std::time::Instant::now();
    wait_until(
        within,
        &format!("{} to see {want:?}", node.opts.name),
        || Ok((member_states(node)? == want).then_some(())),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nnow: {:?}\nlog of {}:\n{}",
            member_states(node),
            node.opts.name,
            node.log()
        )
    });
    started.elapsed()
}

/// Membership over real processes: every node sees the others alive with the same digest; a
/// killed node turns suspect, then dead within seconds; a node stopped with SIGTERM is seen
/// leaving at once; a dead node can be deleted (an alive one, or the node asked, cannot); a
/// node that comes back is alive again. The CLI shows it.
#[test]
fn membership_sees_crashes_departures_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, mut n2, mut n3) = three_nodes(&dir);
    let all_alive = [("n1", "alive"), ("n2", "alive"), ("n3", "alive")];
    for n in [&n1, &n2, &n3] {
        wait_states(n, &all_alive, CONVERGE);
    }
    let digest = |n: &Node| -> anyhow::Result<String> {
        let (_, v) = n.api()?.get("/shoal/v1/status")?;
        Ok(v["digest"].as_str().unwrap_or_default().to_string())
    };
    wait_until(CONVERGE, "one digest on every node", || {
        let d = [digest(&n1)?, digest(&n2)?, digest(&n3)?];
        Ok((d[0] == d[1] && d[1] == d[2]).then_some(()))
    })
    .unwrap();
    let wide = n1
        .cli(&["get", "nodes", "-o", "wide"])
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(wide.stdout.matches("Alive").count(), 3, "{}", wide.stdout);

    // kill -9: suspect, then dead, within the default timings (1.5 s and 3 s).
    n3.kill().unwrap();
    wait_states(
        &n1,
        &[("n1", "alive"), ("n2", "alive"), ("n3", "suspect")],
        Duration::from_secs(10),
    );
    let dead_after = wait_states(
        &n1,
        &[("n1", "alive"), ("n2", "alive"), ("n3", "dead")],
        Duration::from_secs(15),
    );
    eprintln!("n3 dead on n1 {dead_after:?} after it was suspect");

    // SIGTERM: n2 says that it leaves; n1 sees it at once.
    let stopped = std::time::Instant::now();
    n2.stop().unwrap();
    wait_states(
        &n1,
        &[("n1", "alive"), ("n2", "left"), ("n3", "dead")],
        Duration::from_secs(3),
    );
    eprintln!("n2 left on n1 {:?} after SIGTERM", stopped.elapsed());

    // Deleting: not the node asked, and a dead node is forgotten.
    let out = n1.cli(&["delete", "node", "n1"]).unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("n1"), "{out:?}");
    n1.cli(&["delete", "node", "n3"])
        .unwrap()
        .success()
        .unwrap();
    wait_states(
        &n1,
        &[("n1", "alive"), ("n2", "left")],
        Duration::from_secs(5),
    );

    // n2 comes back (known peers, no flags) and is alive again on n1; n3 too, and it
    // registers again.
    n2.opts.join = None;
    n2.restart().unwrap();
    n3.opts.join = None;
    n3.restart().unwrap();
    for n in [&n1, &n2, &n3] {
        wait_states(n, &all_alive, CONVERGE);
    }
    let status = n2.cli(&["status"]).unwrap().success().unwrap();
    assert!(status.stdout.contains("controller="), "{}", status.stdout);
}

/// Each node's peer id as `node` lists it (`status.nodeInfo.peerId`: the peer id of the record
/// it hears for that name, else the registered one), by name.
fn peer_ids(node: &Node) -> anyhow::Result<Vec<(String, String)>> {
    let (code, v) = node.api()?.get("/api/v1/nodes")?;
    anyhow::ensure!(code == 200, "nodes on {}: {code} {v}", node.opts.name);
    let mut out: Vec<(String, String)> = v["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                n["status"]["nodeInfo"]["peerId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Two machines, one name (Raspberry Pi OS names every Pi `raspberrypi`): a node that joins
/// with the name of a live node is refused with a message naming the other node and
/// `--node-name`, exits non-zero, and the cluster goes on listing exactly its two nodes, the
/// name still held by its first machine (its records were never replaced by the twin's).
#[test]
fn a_node_joining_with_the_name_of_a_live_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = Node::start(NodeOptions::new("n1", &dir.path().join("n1"))).unwrap();
    let n2 = Node::start(
        NodeOptions::new("n2", &dir.path().join("n2"))
            .joining(&n1)
            .unwrap(),
    )
    .unwrap();
    let both = [("n1", "alive"), ("n2", "alive")];
    for n in [&n1, &n2] {
        wait_states(n, &both, CONVERGE);
    }
    let before = peer_ids(&n1).unwrap();
    let n2_peer = before
        .iter()
        .find(|(name, _)| name == "n2")
        .map(|(_, p)| p.clone())
        .unwrap();
    assert!(!n2_peer.is_empty(), "{before:?}");
    assert_eq!(peer_ids(&n2).unwrap(), before);

    // A second machine named n2 joins through n1.
    let twin = NodeOptions::new("n2", &dir.path().join("twin"))
        .joining(&n1)
        .unwrap();
    let out = Node::run_to_exit(&twin, Duration::from_secs(60)).unwrap();
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("--node-name"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&n2_peer),
        "names the other node: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&n2.api_addr.ip().to_string()),
        "gives its address: {}",
        out.stderr
    );

    // The cluster still lists exactly n1 and n2, both alive, n2 with its first peer id; and
    // stays so for longer than dead-after (the twin never spoke for n2, nor said it left).
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        for n in [&n1, &n2] {
            let states = member_states(n).unwrap();
            let want: Vec<(String, String)> = both
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(states, want, "on {}", n.opts.name);
            assert_eq!(peer_ids(n).unwrap(), before, "on {}", n.opts.name);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_, node) = n1.api().unwrap().get("/api/v1/nodes/n2").unwrap();
    assert_eq!(node["status"]["membership"]["state"], "alive", "{node}");
}
