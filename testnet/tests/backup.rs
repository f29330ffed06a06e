//! Backup and restore with real processes, the real CLI and real data directories.
//!
//! - The disaster-recovery flow of docs/operations.md: a 3-node cluster's objects are backed
//!   up with `shoal backup`, every node is stopped and its data directory wiped, the first
//!   node starts again from the old cluster's join token and the others join it, and
//!   `shoal restore` brings every object back on every node, uids included, with the
//!   Secret's values intact (its sealed data opens in the rebuilt cluster).
//! - Refusals: a backup restored into another cluster (whose key cannot open its Secrets),
//!   a backup with a damaged ciphertext, and one with an invalid object are refused with a
//!   message that says what is wrong, and nothing of them is applied.
//! - The systemd unit in deploy/ names flags that `shoald` has, and `systemd-analyze verify`
//!   accepts it where systemd-analyze exists.
//! - `shoald --log-format json` writes one JSON object per line, for journald and log
//!   shippers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use shoal_testnet::{DockerCleanup, Node, NodeOptions, Testnet, wait_until};

/// base64 of `hunter2-is-the-password`.
const PASSWORD_B64: &str = "aHVudGVyMi1pcy10aGUtcGFzc3dvcmQ=";

/// One of each kind a backup holds (Deployment and StatefulSet at zero replicas: their
/// controllers still write a ReplicaSet and a ControllerRevision, owned by uid, and no
/// container is needed).
const MANIFEST: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: conf, namespace: shop, labels: {tier: web}}
data: {greeting: hello, size: '3'}
---
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: shop}
type: Opaque
stringData: {password: hunter2-is-the-password}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: echo
        image: shoal-test/echo:latest
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kv, namespace: shop}
spec:
  serviceName: kv
  replicas: 0
  selector: {matchLabels: {app: kv}}
  template:
    metadata: {labels: {app: kv}}
    spec:
      containers:
      - name: echo
        image: shoal-test/echo:latest
";

/// The collections compared before and after (namespaced in `shop`, and the namespaces).
const COLLECTIONS: [&str; 7] = [
    "/api/v1/namespaces/shop/configmaps",
    "/api/v1/namespaces/shop/secrets",
    "/api/v1/namespaces/shop/services",
    "/apis/apps/v1/namespaces/shop/deployments",
    "/apis/apps/v1/namespaces/shop/replicasets",
    "/apis/apps/v1/namespaces/shop/statefulsets",
    "/apis/apps/v1/namespaces/shop/controllerrevisions",
];

/// `kind/name` → the object without what a node computes or counts (status, generation,
/// resourceVersion); uid and creation time stay, so a re-created object would differ.
fn objects(node: &Node) -> anyhow::Result<BTreeMap<String, Value>> {
    let api = node.api()?;
    let mut out = BTreeMap::new();
    let (code, ns) = api.get("/api/v1/namespaces/shop")?;
    if code != 200 {
        return Ok(out);
    }
    out.insert("Namespace/shop".into(), comparable(ns));
    for path in COLLECTIONS {
        let (code, list) = api.get(path)?;
        anyhow::ensure!(code == 200, "GET {path}: {code} {list}");
        for item in list["items"].as_array().cloned().unwrap_or_default() {
            let key = format!(
                "{}/{}",
                item["kind"].as_str().unwrap_or("?"),
                item["metadata"]["name"].as_str().unwrap_or("?")
            );
            out.insert(key, comparable(item));
        }
    }
    Ok(out)
}

fn comparable(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("generation");
        meta.remove("resourceVersion");
    }
    v
}

fn cli_ok(node: &Node, args: &[&str], stdin: Option<&str>) -> String {
    let out = node.cli_with_input(args, stdin).unwrap();
    assert_eq!(
        out.code, 0,
        "shoal {args:?}: {}\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

#[test]
fn backup_wipe_every_node_and_restore_brings_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    // Nodes make their pod networks in Docker, where there is one.
    let mut t = Testnet::up(3, dir.path()).unwrap();
    let cluster_id = t.cluster_id().to_string();
    let cluster = &mut t.cluster;
    cli_ok(&cluster.nodes()[0], &["apply", "-f", "-"], Some(MANIFEST));

    // The controllers' objects exist, and every node holds all of it.
    let before = wait_until(
        Duration::from_secs(30),
        "the ReplicaSet and ControllerRevision on every node",
        || {
            let first = objects(&cluster.nodes()[0])?;
            let complete = first.keys().any(|k| k.starts_with("ReplicaSet/"))
                && first.keys().any(|k| k.starts_with("ControllerRevision/"))
                && first.len() == 8;
            for n in cluster.nodes() {
                if objects(n)? != first {
                    return Ok(None);
                }
            }
            Ok(complete.then_some(first))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(30)));
    assert_eq!(before["Secret/db"]["data"]["password"], PASSWORD_B64);

    // The backup, through the CLI, from the second node.
    let file = dir.path().join("backup.json");
    let file_arg = file.to_str().unwrap();
    let out = cli_ok(&cluster.nodes()[1], &["backup", "-o", file_arg], None);
    assert!(out.contains(&cluster_id), "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("sealedData"), "the Secret is in it, sealed");
    for clear in ["hunter2", PASSWORD_B64] {
        assert!(!text.contains(clear), "the backup holds {clear:?} in clear");
    }
    let backup: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(backup["clusterId"], cluster_id.as_str());
    // The 8 objects of `shop` and the `default` namespace.
    assert_eq!(backup["items"].as_array().unwrap().len(), 9, "{backup:#}");
    // What the operator keeps with the backup: a join token of the cluster.
    let token = cluster.nodes()[0].join_token().unwrap();

    // Every node lost: stopped, data directories wiped.
    cluster.stop_all().unwrap();
    for name in cluster.names() {
        cluster.wipe_data(&name).unwrap();
        let left: Vec<_> = std::fs::read_dir(&cluster.node(&name).unwrap().opts.data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f != "shoald.log")
            .collect();
        assert!(left.is_empty(), "{name} still holds {left:?}");
    }

    // The rebuild of docs/operations.md: the first node from the old join token, the others
    // joining it with the same token.
    let first = cluster.nodes()[0].p2p_addr().to_string();
    for name in cluster.names() {
        cluster.start_with_token(&name, &first, &token).unwrap();
    }
    cluster
        .wait_members_alive(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(30)));
    for n in cluster.nodes() {
        assert_eq!(n.cluster_id().unwrap(), cluster_id, "same cluster id");
        assert!(
            objects(n).unwrap().is_empty(),
            "{} must start empty",
            n.opts.name
        );
    }

    // Restore through the CLI, on the third node.
    let out = cli_ok(&cluster.nodes()[2], &["restore", file_arg], None);
    assert!(out.contains("restored 9 objects"), "{out}");
    for kind in ["Namespace", "Secret", "Deployment", "ControllerRevision"] {
        assert!(out.lines().any(|l| l.starts_with(kind)), "{kind}: {out}");
    }

    // Every object is back on every node, the same (uids included), and the Secret opens.
    for n in cluster.nodes() {
        let after = wait_until(
            Duration::from_secs(30),
            &format!("the restored objects on {}", n.opts.name),
            || {
                let got = objects(n)?;
                Ok((got == before).then_some(got))
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\nbefore: {before:#?}\nnow: {:#?}",
                objects(n).unwrap_or_default()
            )
        });
        assert_eq!(after["Secret/db"]["data"]["password"], PASSWORD_B64);
    }
    let out = cli_ok(
        &cluster.nodes()[0],
        &[
            "get",
            "secret",
            "db",
            "-n",
            "shop",
            "-o",
            "json",
            "--show-secrets",
        ],
        None,
    );
    let secret: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(secret["data"]["password"], PASSWORD_B64);

    // Restoring the same backup again changes nothing.
    let out = cli_ok(&cluster.nodes()[1], &["restore", file_arg], None);
    assert!(out.contains("restored 9 objects"), "{out}");
    let changed: Vec<&str> = out
        .lines()
        .skip(2)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() == 4 && (cols[1] != "0" || cols[2] != "0")
        })
        .collect();
    // `default` may differ (each node's own creation of it); everything else is unchanged.
    assert!(changed.iter().all(|l| l.starts_with("Namespace")), "{out}");
    cluster.down().unwrap();
}

fn start_one(dir: &Path, name: &str) -> Node {
    Node::start(NodeOptions::new(name, &dir.join(name))).unwrap()
}

#[test]
fn foreign_damaged_or_invalid_backups_are_refused_and_nothing_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_one(dir.path(), "a");
    let b = start_one(dir.path(), "b");
    let _cleanup_a = DockerCleanup::new(&a.cluster_id().unwrap());
    let _cleanup_b = DockerCleanup::new(&b.cluster_id().unwrap());
    cli_ok(&a, &["apply", "-f", "-"], Some(MANIFEST));
    let file = dir.path().join("a.json");
    let file_arg = file.to_str().unwrap();
    cli_ok(&a, &["backup", "-o", file_arg], None);
    let text = std::fs::read_to_string(&file).unwrap();

    // Another cluster cannot open the Secrets: refused before anything is written, naming
    // the cluster that sealed them and what to do.
    let out = b.cli(&["restore", file_arg]).unwrap();
    assert_ne!(out.code, 0, "{}", out.stdout);
    let a_id = a.cluster_id().unwrap();
    assert!(out.stderr.contains(&a_id), "{}", out.stderr);
    assert!(out.stderr.contains("shoald --token"), "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing was restored"),
        "{}",
        out.stderr
    );
    assert!(objects(&b).unwrap().is_empty());
    let (code, _) = b.api().unwrap().get("/api/v1/namespaces/shop").unwrap();
    assert_eq!(code, 404);

    // Into its own cluster after the namespace is gone: a damaged ciphertext, and an invalid
    // object, are each refused with the item's path, and nothing comes back.
    cli_ok(&a, &["delete", "namespace", "shop"], None);
    wait_until(Duration::from_secs(10), "shop gone", || {
        Ok(objects(&a)?.is_empty().then_some(()))
    })
    .unwrap();
    let mut backup: Value = serde_json::from_str(&text).unwrap();
    let items = backup["items"].as_array_mut().unwrap();
    let secret_at = items.iter().position(|i| i["kind"] == "Secret").unwrap();
    let sealed = items[secret_at]["sealedData"].as_str().unwrap().to_string();
    let mut bytes = sealed.into_bytes();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    items[secret_at]["sealedData"] = Value::String(String::from_utf8(bytes).unwrap());
    let damaged = dir.path().join("damaged.json");
    std::fs::write(&damaged, serde_json::to_string(&backup).unwrap()).unwrap();
    let out = a.cli(&["restore", damaged.to_str().unwrap()]).unwrap();
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr
            .contains(&format!("items[{secret_at}].sealedData")),
        "{}",
        out.stderr
    );
    assert!(objects(&a).unwrap().is_empty(), "nothing applied");

    let mut backup: Value = serde_json::from_str(&text).unwrap();
    let items = backup["items"].as_array_mut().unwrap();
    let deploy_at = items
        .iter()
        .position(|i| i["kind"] == "Deployment")
        .unwrap();
    items[deploy_at]["spec"]["replicas"] = Value::from(-3);
    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, serde_json::to_string(&backup).unwrap()).unwrap();
    let out = a.cli(&["restore", invalid.to_str().unwrap()]).unwrap();
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr
            .contains(&format!("items[{deploy_at}].spec.replicas")),
        "{}",
        out.stderr
    );
    assert!(objects(&a).unwrap().is_empty(), "nothing applied");

    // Not a backup at all.
    let out = a.cli_with_input(&["restore", "-"], Some(MANIFEST)).unwrap();
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("not JSON"), "{}", out.stderr);

    // The untouched file still restores.
    let out = cli_ok(&a, &["restore", file_arg], None);
    assert!(out.contains("restored"), "{out}");
    assert_eq!(
        objects(&a).unwrap()["Secret/db"]["data"]["password"],
        PASSWORD_B64
    );
}

/// The flags of `ExecStart` in deploy/shoald.service, e.g. `--data-dir`.
fn unit_flags(unit: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| w.starts_with("--"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_systemd_unit_uses_real_flags_and_verifies() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/shoald.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/shoald "), "{unit}");
    assert!(unit.contains("StateDirectory=shoal"));
    assert!(unit.contains("--data-dir /var/lib/shoal"));
    let shoald = shoal_testnet::bin_path("shoald").unwrap();
    let help = std::process::Command::new(&shoald)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let flags = unit_flags(&unit);
    assert!(!flags.is_empty());
    for flag in flags {
        assert!(help.contains(&flag), "shoald has no {flag}:\n{help}");
    }
    // systemd's own check, with ExecStart pointing at the binary just built.
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if analyze.is_ok_and(|o| o.status.success()) {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("shoald.service");
        std::fs::write(
            &copy,
            unit.replace("/usr/local/bin/shoald", shoald.to_str().unwrap()),
        )
        .unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("systemd-analyze is not installed: only the flags were checked");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    // The first start creates the cluster and prints how to reach it (text for a human);
    // every later start of a node that runs with --log-format json writes only JSON.
    let mut node = start_one(dir.path(), "n1");
    node.stop().unwrap();
    let offset = std::fs::metadata(node.log_path()).unwrap().len() as usize;
    node.opts.extra_args = vec!["--log-format".into(), "json".into()];
    node.restart().unwrap();
    cli_ok(
        &node,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n"),
    );
    node.stop().unwrap();
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    let lines: Vec<&str> = log[offset..].lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 3, "{}", &log[offset..]);
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("shutting down")),
        "the stop is logged: {lines:?}"
    );
}
