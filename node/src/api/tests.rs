#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::*;
use crate::observed::{self, NodeRecord};
use crate::state::{self, StateConfig};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Harness {
    router: Router,
    state: crate::state::StateHandle,
    observed: crate::observed::ObservedHandle,
    reporter: crate::observed::PodReporter,
    sim: Arc<crate::runtime::SimRuntime>,
    _stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (state, task) = state::open(&StateConfig {
        data_dir: dir.path().to_path_buf(),
        cluster_secret: [7; 32],
        channel_size: 16,
    })
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(task.run(stop.clone()));
    let (observed, reporter, hb) = observed::start(
        NodeRecord {
            name: "n1".into(),
            version: 1,
            address: "127.0.0.1".into(),
            shoal_version: "test".into(),
            cpus: 2,
            memory_bytes: 2 << 30,
            started_at: 0,
            heartbeat_at: 0,
            pods: Default::default(),
        },
        Duration::from_secs(1),
        4,
    );
    tokio::spawn(hb.run(stop.clone()));
    let sim = Arc::new(crate::runtime::SimRuntime::new(["shoal-test/echo:latest"]));
    let router = router(
        ApiState {
            state: state.clone(),
            observed: observed.clone(),
            token: Arc::from(TOKEN),
            cluster_id: Arc::from("c1"),
            node_name: Arc::from("n1"),
            engine: crate::runtime::Engine::ready(sim.clone()),
        },
        64 * 1024,
    );
    Harness {
        router,
        state,
        observed,
        reporter,
        sim,
        _stop: stop.drop_guard(),
        _dir: dir,
    }
}

impl Harness {
    async fn call(&self, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
        self.call_with(method, uri, body, Some(TOKEN)).await
    }

    async fn call_with(
        &self,
        method: Method,
        uri: &str,
        body: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  labels: {tier: web}\ndata: {k: v}\n";

#[tokio::test]
async fn healthz_is_open_everything_else_needs_the_token() {
    let h = harness();
    let (code, _) = h.call_with(Method::GET, "/healthz", "", None).await;
    assert_eq!(code, StatusCode::OK);
    for token in [None, Some("nope"), Some("0123456789abcdef0123456789abcdeX")] {
        let (code, body) = h.call_with(Method::GET, "/version", "", token).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["code"], 401);
        assert!(body["message"].as_str().unwrap().contains("admin.token"));
    }
    let (code, body) = h.call(Method::GET, "/version", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["nodeName"], "n1");
    assert_eq!(body["clusterId"], "c1");
}

#[tokio::test]
async fn apply_then_get_list_delete() {
    let h = harness();
    let (code, body) = h.call(Method::POST, "/shoal/v1/apply", CM).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["action"], "created");
    assert_eq!(body["items"][0]["namespace"], "default");

    let (code, obj) = h
        .call(Method::GET, "/api/v1/namespaces/default/configmaps/app", "")
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(obj["data"]["k"], "v");
    assert_eq!(obj["metadata"]["namespace"], "default");

    let (_, list) = h
        .call(
            Method::GET,
            "/api/v1/configmaps?labelSelector=tier%3Dweb",
            "",
        )
        .await;
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = h
        .call(
            Method::GET,
            "/api/v1/configmaps?labelSelector=tier%3Ddb",
            "",
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (code, _) = h
        .call(
            Method::GET,
            "/api/v1/configmaps?labelSelector=a%20in%20(",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    let (code, _) = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/app",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = h
        .call(Method::GET, "/api/v1/namespaces/default/configmaps/app", "")
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["reason"], "NotFound");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("\"app\" not found")
    );
    let (code, _) = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/configmaps/app",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn request_namespace_fills_in_and_conflicts_are_refused() {
    let h = harness();
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n";
    let (code, body) = h
        .call(
            Method::POST,
            "/shoal/v1/apply?namespace=team",
            &format!("{ns}---\n{CM}"),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["items"][1]["namespace"], "team");
    assert!(
        body["items"][0]["namespace"].is_null(),
        "namespaces are cluster-scoped"
    );

    let other = CM.replace("name: app", "name: app\n  namespace: default");
    let (code, body) = h
        .call(Method::POST, "/shoal/v1/apply?namespace=team", &other)
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.namespace");

    let (code, body) = h
        .call(Method::POST, "/shoal/v1/apply?namespace=Bad_NS", CM)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn unknown_paths_and_kinds_are_404_status() {
    let h = harness();
    for path in [
        "/api/v1/widgets",
        "/apis/apps/v2/deployments",
        "/apis/batch/v1/jobs",
        "/api/v1/namespaces/default/namespaces",
        "/nothing/here",
    ] {
        let (code, body) = h.call(Method::GET, path, "").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["kind"], "Status", "{path}");
    }
}

#[tokio::test]
async fn put_and_post_apply_one_object_matching_the_path() {
    let h = harness();
    let (code, obj) = h
        .call(Method::PUT, "/api/v1/namespaces/default/configmaps/app", CM)
        .await;
    assert_eq!(code, StatusCode::CREATED, "{obj}");
    assert_eq!(obj["metadata"]["generation"], 1);
    let (code, _) = h
        .call(Method::PUT, "/api/v1/namespaces/default/configmaps/app", CM)
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = h
        .call(
            Method::PUT,
            "/api/v1/namespaces/default/configmaps/other",
            CM,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = h
        .call(Method::POST, "/api/v1/namespaces/default/secrets", CM)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let two = format!("{CM}---\n{}", CM.replace("name: app", "name: b"));
    let (code, _) = h
        .call(Method::POST, "/api/v1/namespaces/default/configmaps", &two)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn invalid_manifest_is_422_with_causes() {
    let h = harness();
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: UPPER}\n";
    let (code, body) = h.call(Method::POST, "/shoal/v1/apply", bad).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
    let (code, body) = h
        .call(Method::POST, "/shoal/v1/apply", "\u{0}\u{1}: [")
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn body_limit_is_413() {
    let h = harness();
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata: {{k: \"{}\"}}\n",
        "x".repeat(70 * 1024)
    );
    let (code, body) = h.call(Method::POST, "/shoal/v1/apply", &big).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["reason"], "RequestEntityTooLarge");
}

#[tokio::test]
async fn nodes_come_from_observed_state() {
    let h = harness();
    let (code, list) = h.call(Method::GET, "/api/v1/nodes", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["kind"], "NodeList");
    assert_eq!(list["items"][0]["metadata"]["name"], "n1");
    assert_eq!(list["items"][0]["status"]["conditions"][0]["type"], "Ready");
    let (code, _) = h.call(Method::GET, "/api/v1/nodes/n2", "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = h.call(Method::DELETE, "/api/v1/nodes/n1", "").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}

mod workloads;
