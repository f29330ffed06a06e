//! One real `shoald` process driven over HTTP and through the `shoal` binary, as a new user
//! would: apply, get, restart, re-apply, bad manifests, tokens, a corrupt state file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shoal_testnet::{Node, NodeOptions};

fn repo_file(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    p.to_string_lossy().into_owned()
}

fn shared_example(name: &str) -> String {
    repo_file(&format!("../shared/k8s-examples/{name}"))
}

fn start(dir: &tempfile::TempDir) -> Node {
    Node::start(NodeOptions::new("n1", &dir.path().join("n1"))).unwrap()
}

fn generation(node: &Node, path: &str) -> i64 {
    let (code, v) = node.api().unwrap().get(path).unwrap();
    assert_eq!(code, 200, "{v}");
    v["metadata"]["generation"].as_i64().unwrap()
}

#[test]
fn apply_get_restart_reapply() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(&dir);
    let web = repo_file("examples/web.yaml");

    let out = node.cli(&["apply", "-f", &web]).unwrap().success().unwrap();
    assert!(
        out.stdout.contains("configmap/web-config created"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("deployment.apps/web created"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("service/web created"), "{}", out.stdout);

    let out = node.cli(&["get", "deploy"]).unwrap().success().unwrap();
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("web ")),
        "{}",
        out.stdout
    );

    let deploy = "/apis/apps/v1/namespaces/default/deployments/web";
    assert_eq!(generation(&node, deploy), 1);
    let (_, before) = node.api().unwrap().get(deploy).unwrap();

    // A graceful restart keeps everything.
    let status = node.stop().unwrap();
    assert!(
        status.success(),
        "SIGTERM should stop shoald cleanly: {status}"
    );
    node.restart().unwrap();
    let out = node
        .cli(&["get", "deploy", "web", "-o", "json"])
        .unwrap()
        .success()
        .unwrap();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["spec"]["replicas"], 3);
    assert_eq!(v["metadata"]["uid"], before["metadata"]["uid"]);

    // Applying the same file again changes nothing.
    let out = node.cli(&["apply", "-f", &web]).unwrap().success().unwrap();
    assert_eq!(
        out.stdout.matches(" unchanged").count(),
        3,
        "{}",
        out.stdout
    );
    assert_eq!(generation(&node, deploy), 1);
    let (_, after) = node.api().unwrap().get(deploy).unwrap();
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );

    // A crash (kill -9) loses nothing that was acknowledged.
    let edited = std::fs::read_to_string(&web)
        .unwrap()
        .replace("replicas: 3", "replicas: 5");
    let out = node
        .cli_with_input(&["apply", "-f", "-"], Some(&edited))
        .unwrap()
        .success()
        .unwrap();
    assert!(
        out.stdout.contains("deployment.apps/web configured"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("service/web unchanged"),
        "{}",
        out.stdout
    );
    assert_eq!(generation(&node, deploy), 2);
    node.kill().unwrap();
    node.restart().unwrap();
    let (_, v) = node.api().unwrap().get(deploy).unwrap();
    assert_eq!(v["spec"]["replicas"], 5);
    assert_eq!(v["metadata"]["generation"], 2);
}

#[test]
fn kubernetes_examples_apply_without_edits() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir);
    let guestbook = shared_example("guestbook-all-in-one.yaml");
    let nginx = shared_example("nginx-deployment.yaml");
    let out = node
        .cli(&["apply", "-f", &guestbook, "-f", &nginx])
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(out.stdout.matches(" created").count(), 7, "{}", out.stdout);
    for line in [
        "service/redis-master created",
        "deployment.apps/redis-master created",
        "service/redis-replica created",
        "deployment.apps/redis-replica created",
        "service/frontend created",
        "deployment.apps/frontend created",
        "deployment.apps/nginx-deployment created",
    ] {
        assert!(
            out.stdout.contains(line),
            "missing {line:?} in\n{}",
            out.stdout
        );
    }
    let (code, list) = node
        .api()
        .unwrap()
        .get("/apis/apps/v1/namespaces/default/deployments")
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "DeploymentList");
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    let (_, svc) = node
        .api()
        .unwrap()
        .get("/api/v1/namespaces/default/services/frontend")
        .unwrap();
    assert_eq!(svc["spec"]["type"], "NodePort");
    // Label selectors filter lists.
    let (_, sel) = node
        .api()
        .unwrap()
        .get("/api/v1/namespaces/default/services?labelSelector=app%3Dredis,role!%3Dmaster")
        .unwrap();
    let names: Vec<&str> = sel["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["redis-replica"]);
}

/// Each bad manifest exits 1, names the field path, and stores nothing.
#[test]
fn bad_manifests_name_the_path_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir);
    let cases = [
        (
            "unsupported field",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok-one}\ndata: {a: b}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d1}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec:\n      containers:\n      - name: c\n        image: x\n        securityContext: {privileged: true}\n",
            "spec.template.spec.containers[0].securityContext",
        ),
        (
            "wrong type",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok-two}\ndata: {a: b}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d2}\nspec:\n  replicas: three\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec:\n      containers:\n      - {name: c, image: x}\n",
            "spec.replicas",
        ),
        (
            "invalid name",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok-three}\ndata: {a: b}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\ndata: {a: b}\n",
            "metadata.name",
        ),
    ];
    for (what, manifest, path) in cases {
        let out = node
            .cli_with_input(&["apply", "-f", "-"], Some(manifest))
            .unwrap();
        assert_eq!(out.code, 1, "{what}: {out:?}");
        assert!(
            out.stderr.contains(path),
            "{what}: {path} not in {}",
            out.stderr
        );
        assert!(out.stderr.contains("document 1"), "{what}: {}", out.stderr);
        // The server refuses it the same way, with the path in the causes.
        let (code, status) = node.api().unwrap().apply(manifest).unwrap();
        assert_eq!(code, 422, "{what}: {status}");
        let causes = status["details"]["causes"].as_array().unwrap();
        assert!(
            causes
                .iter()
                .any(|c| c["field"].as_str().unwrap_or("").contains(path) && c["document"] == 1),
            "{what}: {status}"
        );
    }
    // Nothing of any of those files was stored, not even their valid first documents.
    let (_, cms) = node
        .api()
        .unwrap()
        .get("/api/v1/namespaces/default/configmaps")
        .unwrap();
    assert_eq!(cms["items"].as_array().unwrap().len(), 0, "{cms}");
    let (_, ds) = node
        .api()
        .unwrap()
        .get("/apis/apps/v1/deployments")
        .unwrap();
    assert_eq!(ds["items"].as_array().unwrap().len(), 0, "{ds}");
}

#[test]
fn tokens_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir);
    let api = node.api().unwrap();
    let (code, _) = api.with_token(None).get("/healthz").unwrap();
    assert_eq!(code, 200, "healthz needs no token");
    for token in [None, Some("wrong"), Some("")] {
        for path in [
            "/version",
            "/api/v1/namespaces",
            "/apis/apps/v1/deployments",
            "/nope",
        ] {
            let (code, body) = api.with_token(token).get(path).unwrap();
            assert_eq!(code, 401, "{token:?} {path}: {body}");
            assert_eq!(body["reason"], "Unauthorized");
        }
        let (code, _) = api
            .with_token(token)
            .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
            .unwrap();
        assert_eq!(code, 401);
    }
    let (_, nss) = api.get("/api/v1/namespaces").unwrap();
    let names: Vec<&str> = nss["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default"], "the rejected apply stored nothing");
    // The CLI says what to do about a wrong token.
    let out = std::process::Command::new(shoal_testnet::bin_path("shoal").unwrap())
        .args(["get", "ns"])
        .env("SHOAL_NODE", node.url())
        .env("SHOAL_TOKEN", "wrong")
        .env("SHOAL_CONFIG", dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("token"),
        "{stderr}"
    );
}

#[test]
fn unreachable_node_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = shoal_testnet::free_port("127.0.0.1").unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let out = std::process::Command::new(shoal_testnet::bin_path("shoal").unwrap())
        .args(["get", "deploy"])
        .env("SHOAL_NODE", &url)
        .env("SHOAL_TOKEN", "x")
        .env("SHOAL_CONFIG", dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&url));
}

#[test]
fn corrupt_state_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let mut node = Node::start(NodeOptions::new("n1", &data)).unwrap();
    node.cli(&["apply", "-f", &repo_file("examples/web.yaml")])
        .unwrap()
        .success()
        .unwrap();
    node.stop().unwrap();
    drop(node);

    let state = data.join("state.automerge");
    let mut bytes = std::fs::read(&state).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&state, &bytes).unwrap();

    let out = Node::run_to_exit(&NodeOptions::new("n1", &data), Duration::from_secs(30)).unwrap();
    assert_ne!(out.code, 0);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&state.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("backup"),
        "says what to do: {}",
        out.stderr
    );
}

#[test]
fn secrets_are_encrypted_on_disk_and_hidden_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let mut node = Node::start(NodeOptions::new("n1", &data)).unwrap();
    let manifest = "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData:\n  password: hunter2-very-secret\n";
    node.cli_with_input(&["apply", "-f", "-"], Some(manifest))
        .unwrap()
        .success()
        .unwrap();

    let out = node
        .cli(&["get", "secret", "db", "-o", "yaml"])
        .unwrap()
        .success()
        .unwrap();
    assert!(
        !out.stdout.contains("aHVudGVyMi12ZXJ5LXNlY3JldA"),
        "{}",
        out.stdout
    );
    let out = node
        .cli(&["get", "secret", "db", "-o", "json", "--show-secrets"])
        .unwrap()
        .success()
        .unwrap();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["data"]["password"], "aHVudGVyMi12ZXJ5LXNlY3JldA==");

    // Re-applying the same secret is unchanged, even though its ciphertext is random.
    let out = node
        .cli_with_input(&["apply", "-f", "-"], Some(manifest))
        .unwrap()
        .success()
        .unwrap();
    assert!(out.stdout.contains("secret/db unchanged"), "{}", out.stdout);

    node.stop().unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            for needle in [&b"hunter2-very-secret"[..], b"aHVudGVyMi12ZXJ5LXNlY3JldA"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds the secret in clear",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn oversized_body_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir);
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  a: \"{}\"\n",
        "x".repeat(5 * 1024 * 1024)
    );
    let (code, body) = node.api().unwrap().apply(&big).unwrap();
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["reason"], "RequestEntityTooLarge");
}

fn deployment(name: &str, memory: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - name: c\n        image: registry.invalid/none:1\n        resources: {{requests: {{memory: {memory}}}}}\n"
    )
}

/// The one pod of `app=NAME`, once it exists.
fn only_pod(node: &Node, app: &str) -> Value {
    shoal_testnet::wait_until(Duration::from_secs(30), &format!("a pod of {app}"), || {
        let (_, list) = node.api()?.get(&format!(
            "/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"
        ))?;
        Ok(list["items"].as_array().and_then(|i| i.first()).cloned())
    })
    .unwrap()
}

fn scheduled_message(pod: &Value) -> String {
    pod["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .map(|c| format!("{} {}", c["status"], c["message"]))
        .unwrap_or_default()
}

#[test]
fn resources_and_cordon_decide_where_pods_go_and_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir);
    let apply = |m: &str| {
        node.cli_with_input(&["apply", "-f", "-"], Some(m))
            .unwrap()
            .success()
            .unwrap()
    };
    // More memory than any node has: Pending, and describe says why.
    apply(&deployment("big", "100Ti"));
    let pod = only_pod(&node, "big");
    let msg = "0/1 nodes are available: 1 Insufficient memory.";
    assert!(scheduled_message(&pod).contains(msg), "{pod:#}");
    assert_eq!(pod["status"]["phase"], "Pending");
    let name = pod["metadata"]["name"].as_str().unwrap();
    let out = node
        .cli(&["describe", "pod", name])
        .unwrap()
        .success()
        .unwrap();
    assert!(out.stdout.contains(msg), "{}", out.stdout);
    assert!(out.stdout.contains("Unschedulable"), "{}", out.stdout);

    // Cordoned: new pods wait, saying so; uncordoned: they are placed.
    let out = node.cli(&["cordon", "n1"]).unwrap().success().unwrap();
    assert_eq!(out.stdout, "node/n1 cordoned\n");
    let out = node.cli(&["get", "nodes"]).unwrap().success().unwrap();
    assert!(
        out.stdout.contains("Alive,SchedulingDisabled"),
        "{}",
        out.stdout
    );
    apply(&deployment("small", "16Mi"));
    let pod = only_pod(&node, "small");
    assert!(
        scheduled_message(&pod).contains("1 node(s) were unschedulable"),
        "{pod:#}"
    );
    node.cli(&["uncordon", "n1"]).unwrap().success().unwrap();
    shoal_testnet::wait_until(Duration::from_secs(30), "small placed on n1", || {
        Ok((only_pod(&node, "small")["spec"]["nodeName"] == "n1").then_some(()))
    })
    .unwrap();
    let out = node.cli(&["cordon", "nope"]).unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nope"), "{out:?}");
}
