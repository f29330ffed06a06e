//! Issue 3's promises, tried as a user would against one real `shoald`, the `shoal` CLI and
//! the real Docker engine: Deployments run with their configuration, crashed containers come
//! back, probes act, a crashed shoald adopts its containers, rollouts keep enough pods ready,
//! deletes clean up while volumes survive, and a missing image is reported, not fatal.
//!
//! Without a Docker engine these tests say so and pass, except where `CI` is set: there a
//! missing engine fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use shoal_testnet::fixture::{Alone, pod_objects, pod_ready, wait_pods_ready};
use shoal_testnet::{Node, wait_until};

const IMAGE: &str = "shoal-test/echo:latest";

fn apply(node: &Node, manifest: &str) -> String {
    node.cli_with_input(&["apply", "-f", "-"], Some(manifest))
        .unwrap()
        .success()
        .unwrap()
        .stdout
}

fn container_id(pod: &Value) -> Option<String> {
    pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .map(|s| s.trim_start_matches("docker://").to_string())
}

fn restarts(pod: &Value) -> u64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

fn host_port(pod: &Value, container_port: u64) -> Option<u16> {
    pod["status"]["hostPorts"].as_array()?.iter().find_map(|b| {
        (b["containerPort"] == container_port)
            .then(|| b["hostPort"].as_u64())
            .flatten()
            .map(|p| p as u16)
    })
}

/// A plain HTTP/1.0 GET on 127.0.0.1: the status code and the body.
fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

fn web_manifest(replicas: u32, greeting: &str, extra_env: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: web-config}}
data:
  GREETING: "{greeting}"
  app.conf: "mode=production"
---
apiVersion: v1
kind: Secret
metadata: {{name: web-secret}}
stringData:
  PASSWORD: s3cret-value
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: {IMAGE}
        ports: [{{containerPort: 8080, name: http}}]
        env:
        - name: GREETING
          valueFrom: {{configMapKeyRef: {{name: web-config, key: GREETING}}}}
        - name: PASSWORD
          valueFrom: {{secretKeyRef: {{name: web-secret, key: PASSWORD}}}}
{extra_env}        readinessProbe:
          httpGet: {{path: /ready, port: http}}
          periodSeconds: 1
          failureThreshold: 1
        livenessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 1
          failureThreshold: 2
        volumeMounts:
        - {{name: config, mountPath: /etc/web, readOnly: true}}
      volumes:
      - name: config
        configMap:
          name: web-config
          items: [{{key: app.conf, path: app.conf}}]
"#
    )
}

#[test]
fn deployment_runs_with_its_configuration() {
    let Some(s) = Alone::start() else { return };
    let out = apply(&s.one.node, &web_manifest(3, "hello from shoal", ""));
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let ps = wait_pods_ready(&s.one.node, "app=web", 3, Duration::from_secs(90));

    let mut names = BTreeSet::new();
    for p in &ps {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        let port = host_port(p, 8080).unwrap_or_else(|| panic!("no host port: {p:#}"));
        let (code, body) = http_get(port, "/").unwrap();
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["pod"],
            name.as_str(),
            "each published port reaches its own pod"
        );
        assert_eq!(v["greeting"], "hello from shoal");
        let (_, env) = http_get(port, "/env").unwrap();
        let env: BTreeMap<String, String> = serde_json::from_str(&env).unwrap();
        assert_eq!(env["PASSWORD"], "s3cret-value");
        let (code, file) = http_get(port, "/file?path=/etc/web/app.conf").unwrap();
        assert_eq!((code, file.as_str()), (200, "mode=production"));
        names.insert(name);
    }
    assert_eq!(names.len(), 3);
    assert_eq!(
        s.one.cleanup.containers().len(),
        3,
        "exactly three containers run"
    );

    // `get pods -o wide` shows them running on this node.
    let out = s
        .one
        .node
        .cli(&["get", "pods", "-o", "wide"])
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(out.stdout.matches("Running").count(), 3, "{}", out.stdout);
    assert!(out.stdout.contains("n1"), "{}", out.stdout);

    // A changed ConfigMap reaches the mounted file within seconds.
    apply(
        &s.one.node,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config}\ndata:\n  GREETING: \"hello from shoal\"\n  app.conf: \"mode=debug\"\n",
    );
    let port = host_port(&ps[0], 8080).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the mounted file to change",
        || Ok((http_get(port, "/file?path=/etc/web/app.conf")?.1 == "mode=debug").then_some(())),
    )
    .unwrap();
}

#[test]
fn crashes_and_probes_restart_or_unready_pods() {
    let Some(s) = Alone::start() else { return };
    apply(&s.one.node, &web_manifest(2, "hi", ""));
    let ps = wait_pods_ready(&s.one.node, "app=web", 2, Duration::from_secs(90));
    let (a, b) = (&ps[0], &ps[1]);
    let a_name = a["metadata"]["name"].as_str().unwrap().to_string();
    let b_name = b["metadata"]["name"].as_str().unwrap().to_string();
    let pod = |name: &str| -> Value {
        pod_objects(&s.one.node, "app=web")
            .into_iter()
            .find(|p| p["metadata"]["name"] == name)
            .unwrap_or(Value::Null)
    };

    // docker kill → the container comes back, restartCount 1.
    let id = container_id(a).unwrap();
    assert!(
        std::process::Command::new("docker")
            .args(["kill", &id])
            .status()
            .unwrap()
            .success()
    );
    wait_until(
        Duration::from_secs(60),
        "the killed container to restart",
        || {
            let p = pod(&a_name);
            Ok((restarts(&p) == 1 && pod_ready(&p)).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:#}", pod(&a_name)));

    // Failing readiness → not ready and not available; the pod is not restarted for it.
    let port_b = host_port(b, 8080).unwrap();
    http_get(port_b, "/set?ready=fail").unwrap();
    wait_until(
        Duration::from_secs(30),
        "the unready pod to leave availableReplicas",
        || {
            let p = pod(&b_name);
            let (_, d) = s
                .one
                .node
                .api()?
                .get("/apis/apps/v1/namespaces/default/deployments/web")?;
            Ok((!pod_ready(&p) && d["status"]["availableReplicas"] == 1).then_some(()))
        },
    )
    .unwrap();
    assert_eq!(restarts(&pod(&b_name)), 0);
    http_get(port_b, "/set?ready=ok").unwrap();

    // Failing liveness → restarted.
    http_get(port_b, "/set?healthz=fail").unwrap();
    wait_until(
        Duration::from_secs(60),
        "the failing-liveness pod to restart",
        || {
            let p = pod(&b_name);
            Ok((restarts(&p) >= 1 && pod_ready(&p)).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:#}", pod(&b_name)));
}

#[test]
fn a_crashed_shoald_adopts_its_containers() {
    let Some(mut s) = Alone::start() else { return };
    apply(&s.one.node, &web_manifest(2, "hi", ""));
    let before: BTreeSet<String> =
        wait_pods_ready(&s.one.node, "app=web", 2, Duration::from_secs(90))
            .iter()
            .filter_map(container_id)
            .collect();
    assert_eq!(before.len(), 2);

    s.one.node.kill().unwrap();
    s.one.node.restart().unwrap();
    // Give the agent a few rounds, then every container id must be the same one.
    let after: BTreeSet<String> =
        wait_pods_ready(&s.one.node, "app=web", 2, Duration::from_secs(60))
            .iter()
            .filter_map(container_id)
            .collect();
    std::thread::sleep(Duration::from_secs(3));
    let again: BTreeSet<String> =
        wait_pods_ready(&s.one.node, "app=web", 2, Duration::from_secs(60))
            .iter()
            .filter_map(container_id)
            .collect();
    assert_eq!(before, after);
    assert_eq!(before, again);
    let running: BTreeSet<String> = s.one.cleanup.containers().into_iter().collect();
    assert_eq!(running, before, "no twin containers were started");
}

#[test]
fn rollouts_keep_enough_pods_ready_and_undo_goes_back() {
    let Some(s) = Alone::start() else { return };
    apply(&s.one.node, &web_manifest(3, "v1", ""));
    wait_pods_ready(&s.one.node, "app=web", 3, Duration::from_secs(90));

    // Change the env: a new revision rolls out with maxUnavailable 1.
    apply(
        &s.one.node,
        &web_manifest(3, "v1", "        - {name: VERSION, value: \"2\"}\n"),
    );
    let mut min_ready = usize::MAX;
    wait_until(Duration::from_secs(120), "the rollout to finish", || {
        let ps = pod_objects(&s.one.node, "app=web");
        let ready = ps.iter().filter(|p| pod_ready(p)).count();
        min_ready = min_ready.min(ready);
        let revisions: BTreeSet<&str> = ps
            .iter()
            .filter_map(|p| p["metadata"]["labels"]["pod-template-hash"].as_str())
            .collect();
        Ok((ps.len() == 3 && ready == 3 && revisions.len() == 1).then_some(()))
    })
    .unwrap();
    assert!(
        min_ready >= 2,
        "ready pods fell to {min_ready} during the rollout"
    );
    let out = s
        .one
        .node
        .cli(&["rollout", "status", "deploy/web", "--timeout", "60s"])
        .unwrap()
        .success()
        .unwrap();
    assert!(
        out.stdout.contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    let ps = pod_objects(&s.one.node, "app=web");
    let (_, env) = http_get(host_port(&ps[0], 8080).unwrap(), "/env").unwrap();
    assert!(env.contains("\"VERSION\":\"2\""), "{env}");

    // Undo: the previous template comes back.
    let out = s
        .one
        .node
        .cli(&["rollout", "undo", "deploy/web"])
        .unwrap()
        .success()
        .unwrap();
    assert!(out.stdout.contains("rolled back"), "{}", out.stdout);
    let ps = wait_until(Duration::from_secs(120), "the undo to finish", || {
        let ps = pod_objects(&s.one.node, "app=web");
        let old = ps.iter().all(|p| {
            p["spec"]["containers"][0]["env"]
                .as_array()
                .is_some_and(|e| e.iter().all(|v| v["name"] != "VERSION"))
        });
        Ok((ps.len() == 3 && ps.iter().all(pod_ready) && old).then_some(ps))
    })
    .unwrap();
    let (_, env) = http_get(host_port(&ps[0], 8080).unwrap(), "/env").unwrap();
    assert!(!env.contains("VERSION"), "{env}");
    let out = s
        .one
        .node
        .cli(&["rollout", "history", "deploy/web"])
        .unwrap()
        .success()
        .unwrap();
    assert!(out.stdout.contains("REVISION"), "{}", out.stdout);
}

#[test]
fn delete_removes_containers_and_volume_data_survives() {
    let Some(mut s) = Alone::start() else { return };
    let claim = format!("data-{}", std::process::id());
    s.one.cleanup.volume(&format!("shoal-pvc-default-{claim}"));
    let manifest = format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: store}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: store}}}}
  template:
    metadata: {{labels: {{app: store}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: {IMAGE}
        ports: [{{containerPort: 8080}}]
        volumeMounts: [{{name: data, mountPath: /data}}]
      volumes:
      - name: data
        persistentVolumeClaim: {{claimName: {claim}}}
"#
    );
    // The published port of the one store pod, once it runs.
    let store_port = || {
        wait_until(Duration::from_secs(90), "the store pod to run", || {
            let ps = pod_objects(&s.one.node, "app=store");
            Ok(ps
                .first()
                .filter(|p| ps.len() == 1 && p["status"]["phase"] == "Running")
                .and_then(|p| host_port(p, 8080)))
        })
        .unwrap()
    };
    apply(&s.one.node, &manifest);
    let port = store_port();
    wait_until(Duration::from_secs(20), "the write", || {
        Ok((http_get(port, "/write?path=/data/kept.txt&data=survives")?.0 == 200).then_some(()))
    })
    .unwrap();

    s.one
        .node
        .cli(&["delete", "deploy", "store"])
        .unwrap()
        .success()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the containers to be removed",
        || Ok(s.one.cleanup.containers().is_empty().then_some(())),
    )
    .unwrap();

    apply(&s.one.node, &manifest);
    let port = store_port();
    let body = wait_until(Duration::from_secs(20), "the read", || {
        let (code, body) = http_get(port, "/file?path=/data/kept.txt")?;
        Ok((code == 200).then_some(body))
    })
    .unwrap();
    assert_eq!(body, "survives");
}

#[test]
fn a_missing_image_is_reported_and_the_node_keeps_running() {
    let Some(s) = Alone::start() else { return };
    apply(
        &s.one.node,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ghost}\nspec:\n  progressDeadlineSeconds: 3\n  selector: {matchLabels: {app: ghost}}\n  template:\n    metadata: {labels: {app: ghost}}\n    spec:\n      containers: [{name: c, image: \"registry.invalid/nothing:1\"}]\n",
    );
    let p = wait_until(Duration::from_secs(60), "ErrImagePull", || {
        let ps = pod_objects(&s.one.node, "app=ghost");
        let reason = ps.first().and_then(|p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                .as_str()
                .map(str::to_string)
        });
        Ok(
            matches!(reason.as_deref(), Some("ErrImagePull" | "ImagePullBackOff"))
                .then(|| ps[0].clone()),
        )
    })
    .unwrap();
    let message = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("registry.invalid/nothing:1"), "{message}");
    let out = s.one.node.cli(&["get", "pods"]).unwrap().success().unwrap();
    assert!(
        out.stdout.contains("ErrImagePull") || out.stdout.contains("ImagePullBackOff"),
        "{}",
        out.stdout
    );
    let (code, _) = s.one.node.api().unwrap().get("/version").unwrap();
    assert_eq!(code, 200, "shoald keeps running");

    // A rollout that cannot progress fails `rollout status` once its deadline has passed.
    let out = s
        .one
        .node
        .cli(&["rollout", "status", "deploy/ghost", "--timeout", "60s"])
        .unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("exceeded its progress deadline"),
        "{}",
        out.stderr
    );
}

#[test]
fn logs_exec_scale_and_restart_through_the_cli() {
    let Some(s) = Alone::start() else { return };
    apply(&s.one.node, &web_manifest(1, "hi", ""));
    let ps = wait_pods_ready(&s.one.node, "app=web", 1, Duration::from_secs(90));
    let pod = ps[0]["metadata"]["name"].as_str().unwrap().to_string();

    // Logs: the echo server's start line, and the tail limit.
    let out = s.one.node.cli(&["logs", &pod]).unwrap().success().unwrap();
    assert!(
        out.stdout.contains("shoal-echo listening"),
        "{}",
        out.stdout
    );
    let port = host_port(&ps[0], 8080).unwrap();
    for _ in 0..3 {
        http_get(port, "/").unwrap();
    }
    let out = s
        .one
        .node
        .cli(&["logs", &pod, "--tail", "1"])
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);

    // Exec: output, and the remote exit code becomes the CLI's.
    let out = s
        .one
        .node
        .cli(&["exec", &pod, "--", "/shoal-echo", "--version"])
        .unwrap()
        .success()
        .unwrap();
    assert!(out.stdout.contains("shoal-echo"), "{}", out.stdout);
    let out = s
        .one
        .node
        .cli(&["exec", &pod, "--", "/shoal-echo", "--exit-on-start", "3"])
        .unwrap();
    assert_eq!(out.code, 3, "{out:?}");
    let out = s
        .one
        .node
        .cli_with_input(
            &["exec", "-i", &pod, "--", "/shoal-echo", "--cat"],
            Some("piped through\n"),
        )
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(out.stdout, "piped through\n");

    // Scale up and down.
    s.one
        .node
        .cli(&["scale", "deploy/web", "--replicas", "3"])
        .unwrap()
        .success()
        .unwrap();
    wait_pods_ready(&s.one.node, "app=web", 3, Duration::from_secs(90));
    s.one
        .node
        .cli(&["scale", "deploy/web", "--replicas", "2"])
        .unwrap()
        .success()
        .unwrap();
    let before: BTreeSet<String> =
        wait_pods_ready(&s.one.node, "app=web", 2, Duration::from_secs(90))
            .iter()
            .filter_map(container_id)
            .collect();

    // A restart rolls every pod over to new containers.
    s.one
        .node
        .cli(&["rollout", "restart", "deploy/web"])
        .unwrap()
        .success()
        .unwrap();
    wait_until(
        Duration::from_secs(120),
        "the restart to replace every pod",
        || {
            let ps = pod_objects(&s.one.node, "app=web");
            let ids: BTreeSet<String> = ps.iter().filter_map(container_id).collect();
            Ok(
                (ps.len() == 2 && ps.iter().all(pod_ready) && ids.is_disjoint(&before))
                    .then_some(()),
            )
        },
    )
    .unwrap();
}
