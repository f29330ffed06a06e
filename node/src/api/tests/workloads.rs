//! Pods, status merge, scale, rollback, logs and exec, against a real store, the observed
//! record of node n1 and the simulated engine. Slots and ReplicaSets are written directly, as
//! the controllers would.

use std::collections::BTreeMap;

use serde_json::json;
use shoal_protocol::Kind;
use shoal_protocol::cluster::Slot;
use shoal_protocol::status::{ContainerState, ContainerStatus, PodStatus, StateRunning};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::*;
use crate::runtime::{ContainerSpec, ExecOutput, Runtime};

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n\
spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    \
metadata: {labels: {app: web}}\n    spec:\n      containers:\n      \
- {name: app, image: shoal-test/echo:latest}\n";

const BARE: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: solo, labels: {app: solo}}\n\
spec:\n  containers:\n  - {name: a, image: shoal-test/echo:latest}\n  \
- {name: b, image: shoal-test/echo:latest}\n";

fn replicaset(name: &str, hash: &str, revision: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"app": "web", "pod-template-hash": hash},
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": "", "controller": true}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash}},
            "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": hash}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}
    })
}

fn slot(pod: &str, owner_kind: &str, owner: &str, index: u32, node: &str) -> Slot {
    Slot {
        namespace: "default".into(),
        pod: pod.into(),
        owner_kind: owner_kind.into(),
        owner_name: owner.into(),
        index,
        revision: if owner_kind == "ReplicaSet" {
            "abc".into()
        } else {
            String::new()
        },
        node: node.into(),
        unschedulable: None,
    }
}

fn running(container: &str, id: Option<&str>) -> PodStatus {
    PodStatus {
        phase: "Running".into(),
        conditions: vec![shoal_protocol::status::PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some("2020-01-01T00:00:00Z".into()),
            reason: None,
            message: None,
        }],
        pod_ip: Some("10.0.0.2".into()),
        container_statuses: vec![ContainerStatus {
            name: container.into(),
            ready: true,
            restart_count: 0,
            image: "shoal-test/echo:latest".into(),
            container_id: id.map(|i| format!("docker://{i}")),
            started: Some(true),
            state: ContainerState {
                running: Some(StateRunning {
                    started_at: "2020-01-01T00:00:00Z".into(),
                }),
                ..Default::default()
            },
            last_state: ContainerState::default(),
        }],
        ..PodStatus::default()
    }
}

impl Harness {
    /// A Deployment `web` with ReplicaSet `web-abc` (revision 1) and two slots on n1.
    async fn web(&self) {
        let (code, body) = self.call(Method::POST, "/shoal/v1/apply", DEPLOY).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        self.state
            .apply_values(vec![(
                Kind::ReplicaSet,
                replicaset("web-abc", "abc", 1, "shoal-test/echo:latest"),
            )])
            .await
            .unwrap();
        self.state
            .write_slots(
                vec![
                    slot("web-abc-0", "ReplicaSet", "web-abc", 0, "n1"),
                    slot("web-abc-1", "ReplicaSet", "web-abc", 1, "n1"),
                ],
                vec![],
            )
            .await
            .unwrap();
    }

    async fn report(&self, pods: BTreeMap<String, PodStatus>) {
        let want = pods.clone();
        self.reporter.report(pods).await.unwrap();
        for _ in 0..200 {
            if self.observed.pods() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the report never reached observed state");
    }

    /// A running simulated container of pod `pod`, container `container`.
    async fn container(&self, pod: &str, container: &str) -> String {
        let labels = [
            ("shoal.namespace", "default"),
            ("shoal.pod", pod),
            ("shoal.container", container),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let id = self
            .sim
            .create(&ContainerSpec {
                name: format!("{pod}-{container}"),
                image: "shoal-test/echo:latest".into(),
                labels,
                ..Default::default()
            })
            .await
            .unwrap();
        self.sim.start(&id).await.unwrap();
        id
    }

    async fn raw(&self, method: Method, uri: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn pods_come_from_slots_and_observed_status() {
    let h = harness();
    h.web().await;
    let (code, _) = h.call(Method::POST, "/shoal/v1/apply", BARE).await;
    assert_eq!(code, StatusCode::OK);
    h.report([("default/web-abc-0".to_string(), running("app", None))].into())
        .await;

    let (code, list) = h
        .call(Method::GET, "/api/v1/namespaces/default/pods", "")
        .await;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "PodList");
    // The bare Pod has no slot yet: it shows once, Pending.
    assert_eq!(names(&list), ["solo", "web-abc-0", "web-abc-1"]);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items[0]["status"]["phase"], "Pending");
    assert_eq!(items[1]["status"]["phase"], "Running");
    assert_eq!(items[1]["spec"]["nodeName"], "n1");
    assert_eq!(items[1]["metadata"]["labels"]["pod-template-hash"], "abc");
    assert_eq!(
        items[1]["metadata"]["ownerReferences"][0]["name"],
        "web-abc"
    );
    assert_eq!(items[2]["status"]["phase"], "Pending");

    // Once the bare Pod has its slot, it is still listed once.
    h.state
        .write_slots(vec![slot("solo", "Pod", "solo", 0, "n1")], vec![])
        .await
        .unwrap();
    let (_, all) = h.call(Method::GET, "/api/v1/pods", "").await;
    assert_eq!(names(&all), ["solo", "web-abc-0", "web-abc-1"]);

    let (_, sel) = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            "",
        )
        .await;
    assert_eq!(names(&sel), ["web-abc-0", "web-abc-1"]);
    let (_, other_ns) = h
        .call(Method::GET, "/api/v1/namespaces/kube-system/pods", "")
        .await;
    assert!(names(&other_ns).is_empty());

    let (code, pod) = h
        .call(Method::GET, "/api/v1/namespaces/default/pods/web-abc-0", "")
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(pod["status"]["phase"], "Running");
    let (code, _) = h
        .call(Method::GET, "/api/v1/namespaces/default/pods/nope", "")
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_a_replicaset_pod_says_to_restart_the_deployment() {
    let h = harness();
    h.web().await;
    h.call(Method::POST, "/shoal/v1/apply", BARE).await;
    let (code, body) = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/web-abc-1",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["message"],
        "pods of deployment \"web\" are replaced by their controller: use shoal rollout \
         restart deploy/web"
    );
    let (code, body) = h
        .call(Method::DELETE, "/api/v1/namespaces/default/pods/solo", "")
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "Pod");
    let (code, _) = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/replicasets/web-abc",
            "",
        )
        .await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "replicasets live under /apis/apps/v1"
    );
    let (code, _) = h
        .call(
            Method::DELETE,
            "/apis/apps/v1/namespaces/default/replicasets/web-abc",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn deployment_and_replicaset_status_are_merged() {
    let h = harness();
    h.web().await;
    h.report(
        [
            ("default/web-abc-0".to_string(), running("app", None)),
            ("default/web-abc-1".to_string(), running("app", None)),
        ]
        .into(),
    )
    .await;
    let (code, d) = h
        .call(
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments/web",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{d}");
    assert_eq!(d["status"]["replicas"], 2, "{d}");
    assert_eq!(d["status"]["readyReplicas"], 2, "{d}");
    assert_eq!(d["status"]["observedGeneration"], 1, "{d}");
    let (_, list) = h.call(Method::GET, "/apis/apps/v1/deployments", "").await;
    assert_eq!(list["items"][0]["status"]["replicas"], 2, "{list}");

    let (code, rs) = h
        .call(
            Method::GET,
            "/apis/apps/v1/namespaces/default/replicasets",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{rs}");
    assert_eq!(rs["kind"], "ReplicaSetList");
    assert_eq!(rs["items"][0]["status"]["replicas"], 2, "{rs}");
    assert_eq!(rs["items"][0]["status"]["readyReplicas"], 2, "{rs}");
}

#[tokio::test]
async fn scale_reads_and_writes_replicas() {
    let h = harness();
    h.web().await;
    let path = "/apis/apps/v1/namespaces/default/deployments/web/scale";
    let (code, scale) = h.call(Method::GET, path, "").await;
    assert_eq!(code, StatusCode::OK, "{scale}");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["metadata"]["name"], "web");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["replicas"], 2);

    let (code, scale) = h
        .call(
            Method::PUT,
            path,
            r#"{"kind":"Scale","spec":{"replicas":5}}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{scale}");
    assert_eq!(scale["spec"]["replicas"], 5);
    let (_, d) = h
        .call(
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments/web",
            "",
        )
        .await;
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2, "scaling changes the spec");

    // `rollout restart`: the object as read, with a template annotation, PUT back.
    let mut d = d;
    d["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"});
    let (code, put) = h
        .call(
            Method::PUT,
            "/apis/apps/v1/namespaces/default/deployments/web",
            &d.to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{put}");
    assert_eq!(put["metadata"]["generation"], 3, "{put}");

    for bad in [
        r#"{"spec":{"replicas":-1}}"#,
        r#"{"spec":{}}"#,
        r#"{"spec":{"replicas":"x"}}"#,
    ] {
        let (code, body) = h.call(Method::PUT, path, bad).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["details"]["causes"][0]["field"], "spec.replicas");
    }
    let (code, _) = h.call(Method::PUT, path, "not json").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = h
        .call(
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments/nope/scale",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = h
        .call(
            Method::GET,
            "/apis/apps/v1/namespaces/default/replicasets/web-abc/scale",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rollback_goes_back_or_says_why_not() {
    let h = harness();
    let path = "/shoal/v1/namespaces/default/deployments/web/rollback";
    let (code, body) = h.call(Method::POST, path, "{}").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");

    h.web().await;
    let (code, body) = h.call(Method::POST, path, "").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no previous revision"),
        "{body}"
    );
    let (code, body) = h.call(Method::POST, path, r#"{"toRevision": 9}"#).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no revision 9"),
        "{body}"
    );
    let (code, _) = h.call(Method::POST, path, r#"{"toRevision": -1}"#).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // Revision 2 runs another image; undo brings revision 1's template back.
    h.state
        .apply_values(vec![(
            Kind::ReplicaSet,
            replicaset("web-def", "def", 2, "other:2"),
        )])
        .await
        .unwrap();
    let updated = DEPLOY.replace("shoal-test/echo:latest", "other:2");
    h.call(Method::POST, "/shoal/v1/apply", &updated).await;
    let (code, d) = h.call(Method::POST, path, r#"{"toRevision": 0}"#).await;
    assert_eq!(code, StatusCode::OK, "{d}");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "shoal-test/echo:latest"
    );
    assert!(
        d["spec"]["template"]["metadata"]["labels"]
            .get("pod-template-hash")
            .is_none()
    );
    assert_eq!(d["metadata"]["generation"], 3);
}

#[tokio::test]
async fn logs_stream_the_local_container() {
    let h = harness();
    h.web().await;
    let id = h.container("web-abc-0", "app").await;
    h.sim.append_log(&id, b"one\ntwo\nthree\n").unwrap();
    let base = "/api/v1/namespaces/default/pods/web-abc-0/log";
    // Found by its labels before any status is reported.
    let (code, text) = h.raw(Method::GET, base).await;
    assert_eq!((code, text.as_str()), (StatusCode::OK, "one\ntwo\nthree\n"));
    h.report([("default/web-abc-0".to_string(), running("app", Some(&id)))].into())
        .await;
    let (code, text) = h
        .raw(Method::GET, &format!("{base}?tailLines=1&container=app"))
        .await;
    assert_eq!((code, text.as_str()), (StatusCode::OK, "three\n"));

    let (code, text) = h.raw(Method::GET, &format!("{base}?container=nope")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("choose one of [app]"), "{text}");
    let (code, text) = h
        .raw(Method::GET, "/api/v1/namespaces/default/pods/web-abc-1/log")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("waiting to start: ContainerCreating"),
        "{text}"
    );

    // Several containers: one must be named.
    h.call(Method::POST, "/shoal/v1/apply", BARE).await;
    let (code, text) = h
        .raw(Method::GET, "/api/v1/namespaces/default/pods/solo/log")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("choose one of: [a b]"), "{text}");
}

#[tokio::test]
async fn a_pod_on_another_node_is_503_naming_it() {
    let h = harness();
    h.web().await;
    h.state
        .write_slots(
            vec![slot("web-abc-1", "ReplicaSet", "web-abc", 1, "n2")],
            vec![],
        )
        .await
        .unwrap();
    for (method, path) in [
        (Method::GET, "/api/v1/namespaces/default/pods/web-abc-1/log"),
        (
            Method::POST,
            "/api/v1/namespaces/default/pods/web-abc-1/exec?command=ls",
        ),
    ] {
        let (code, body) = h.call(method, path, "").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            body["message"],
            "pod \"web-abc-1\" runs on node \"n2\"; connect to that node (proxying between \
             nodes arrives with the cluster)"
        );
    }
}

#[tokio::test]
async fn exec_answers_the_output() {
    let h = harness();
    h.web().await;
    h.container("web-abc-0", "app").await;
    h.sim
        .set_exec_handler(Arc::new(|_, cmd: &[String]| ExecOutput {
            exit_code: 3,
            stdout: cmd.join(" ").into_bytes(),
            stderr: b"warn".to_vec(),
        }));
    let (code, out) = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods/web-abc-0/exec?command=ls&command=-l%20x",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{out}");
    assert_eq!(
        out,
        json!({"exitCode": 3, "stdout": "ls -l x", "stderr": "warn"})
    );
    let (code, body) = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods/web-abc-0/exec",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = h
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods/web-abc-0/exec?command=sh&tty=true",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Upgrade"),
        "{body}"
    );
}

#[tokio::test]
async fn interactive_exec_over_an_upgraded_connection() {
    let h = harness();
    h.web().await;
    h.container("web-abc-0", "app").await;
    h.sim
        .set_exec_handler(Arc::new(|_, _: &[String]| ExecOutput {
            exit_code: 7,
            stdout: b"out".to_vec(),
            stderr: b"err".to_vec(),
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, h.router.clone(), stop.clone()));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /api/v1/namespaces/default/pods/web-abc-0/exec?command=sh&stdin=true&tty=true \
         HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: Upgrade\r\n\
         Upgrade: shoal-exec\r\nContent-Length: 0\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
    }
    reader
        .get_mut()
        .write_all(&super::super::exec::encode(
            super::super::exec::STDIN,
            b"input",
        ))
        .await
        .unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = super::super::exec::read_frame(&mut reader).await.unwrap() {
        frames.push(frame);
    }
    assert_eq!(
        frames,
        vec![
            (1, b"out".to_vec()),
            (2, b"err".to_vec()),
            (3, 7i64.to_be_bytes().to_vec())
        ]
    );
    stop.cancel();
}
