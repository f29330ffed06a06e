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

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Harness {
    router: Router,
    state: crate::state::StateHandle,
    observed: crate::observed::ObservedHandle,
    reporter: crate::observed::PodReporter,
    sim: Arc<crate::runtime::SimRuntime>,
    events: crate::events::Events,
    /// Observed-state gossip "from peers".
    gossip: tokio::sync::mpsc::Sender<observed::Inbound>,
    _stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let state = crate::state::open_for_test(dir.path(), &stop);
    let (observed, reporter, hb) = observed::start(
        NodeRecord {
            name: "n1".into(),
            version: 1,
            address: "127.0.0.1".into(),
            shoal_version: "test".into(),
            cpus: 2,
            memory_bytes: 2 << 30,
            ..NodeRecord::default()
        },
        crate::observed::Timing::default(),
        4,
    );
    struct Quiet;
    #[async_trait::async_trait]
    impl observed::Publish for Quiet {
        async fn publish(&self, _: Vec<u8>) {}
    }
    let (gossip, gossip_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(hb.with_gossip(Arc::new(Quiet), gossip_rx).run(stop.clone()));
    let sim = Arc::new(crate::runtime::SimRuntime::new(["shoal-test/echo:latest"]));
    let events = crate::events::Events::local("n1");
    let router = router(
        ApiState {
            state: state.clone(),
            observed: observed.clone(),
            token: Arc::from(TOKEN),
            cluster_id: Arc::from("c1"),
            node_name: Arc::from("n1"),
            engine: crate::runtime::Engine::ready(sim.clone()),
            cluster: Arc::new(ClusterInfo {
                peer_id: "p1".into(),
                p2p_address: "127.0.0.1:7946".into(),
                join_token: "shoal1.secret".into(),
                cluster_domain: "shoal.home.arpa".into(),
            }),
            events: events.clone(),
            images: None,
            podnet: None,
            max_replicas: 10_000,
        },
        64 * 1024,
    );
    Harness {
        router,
        state,
        observed,
        reporter,
        sim,
        events,
        gossip,
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

/// A replica count over `max-replicas` (a typo) is refused at apply and at scale, naming the
/// setting, and nothing is written.
#[tokio::test]
async fn replicas_over_the_bound_are_refused_at_apply_and_scale() {
    let h = harness();
    let deployment = |n: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  \
             replicas: {n}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    \
             metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      \
             - {{name: c, image: nginx}}\n---\napiVersion: v1\nkind: ConfigMap\n\
             metadata: {{name: cm}}\n"
        )
    };
    let (code, body) = h
        .call(Method::POST, "/shoal/v1/apply", &deployment(30_000))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.replicas");
    assert!(
        body["message"].as_str().unwrap().contains("max-replicas"),
        "{body}"
    );
    let (code, _) = h
        .call(Method::GET, "/api/v1/namespaces/default/configmaps/cm", "")
        .await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "nothing of the batch is applied"
    );

    let (code, body) = h
        .call(Method::POST, "/shoal/v1/apply", &deployment(10_000))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let scale = |n: u32| format!("{{\"spec\": {{\"replicas\": {n}}}}}");
    let path = "/apis/apps/v1/namespaces/default/deployments/web/scale";
    let (code, body) = h.call(Method::PUT, path, &scale(10_001)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, d) = h
        .call(
            Method::GET,
            "/apis/apps/v1/namespaces/default/deployments/web",
            "",
        )
        .await;
    assert_eq!(d["spec"]["replicas"], 10_000);
    let (code, body) = h.call(Method::PUT, path, &scale(3)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
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
async fn an_uploaded_image_loads_into_the_engine_past_the_body_limit_and_garbage_is_refused() {
    let h = harness();
    // The simulated engine reads a tarball as image names, one a line; this one is longer
    // than the API's body limit (64 KiB here), which an upload is not held to.
    let mut upload = String::from("reg.lan/pushed:v1\n");
    upload.push_str(&"\n".repeat(70 * 1024));
    let (code, body) = h.call(Method::POST, "/shoal/v1/images/load", &upload).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["loaded"], serde_json::json!(["reg.lan/pushed:v1"]));
    assert_eq!(body["node"], "n1");
    assert!(h.sim.has_image("reg.lan/pushed:v1"));
    let (code, body) = h
        .call(
            Method::POST,
            "/shoal/v1/images/load",
            "not a tarball at all",
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("docker save"),
        "{body}"
    );
    let (code, _) = h
        .call_with(Method::POST, "/shoal/v1/images/load", &upload, None)
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn nodes_join_registry_and_membership_and_only_departed_ones_are_deleted() {
    let h = harness();
    let (code, list) = h.call(Method::GET, "/api/v1/nodes", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["kind"], "NodeList");
    assert_eq!(list["items"][0]["metadata"]["name"], "n1");
    assert_eq!(list["items"][0]["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(list["items"][0]["status"]["membership"]["state"], "alive");
    let (code, _) = h.call(Method::GET, "/api/v1/nodes/n2", "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // A peer's record arrives, and its registration.
    let n2 = |version, left| NodeRecord {
        name: "n2".into(),
        version,
        address: "127.0.0.2".into(),
        shoal_version: "test".into(),
        cpus: 4,
        memory_bytes: 8 << 30,
        peer_id: "p2".into(),
        left,
        ..NodeRecord::default()
    };
    let send = |r: NodeRecord| {
        let data = observed::Message::Record(r).encode().unwrap();
        let gossip = h.gossip.clone();
        async move {
            gossip
                .send(observed::Inbound::Gossip { data })
                .await
                .unwrap()
        }
    };
    send(n2(10, false)).await;
    crate::nodes::register(&h.state, "n2", "p2").await.unwrap();
    let n2_state = || async {
        let (_, v) = h.call(Method::GET, "/api/v1/nodes/n2", "").await;
        v["status"]["membership"]["state"]
            .as_str()
            .map(str::to_string)
    };
    for _ in 0..100 {
        if n2_state().await.as_deref() == Some("alive") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, v) = h.call(Method::GET, "/api/v1/nodes/n2", "").await;
    assert_eq!(v["status"]["membership"]["state"], "alive", "{v}");
    assert_eq!(v["status"]["capacity"]["cpu"], "4");
    assert_eq!(v["status"]["nodeInfo"]["peerId"], "p2");
    assert!(v["metadata"]["creationTimestamp"].is_string(), "{v}");

    // Status: both members, the holder of the controller lease and its epoch, a digest.
    let (_, st) = h.call(Method::GET, "/shoal/v1/status", "").await;
    assert_eq!(st["roles"][0]["holder"], Value::Null, "no lease yet: {st}");
    h.state.claim_lease("controller", "n1", 0).await.unwrap();
    let (code, st) = h.call(Method::GET, "/shoal/v1/status", "").await;
    assert_eq!(code, StatusCode::OK, "{st}");
    assert_eq!(st["node"], "n1");
    assert_eq!(st["members"].as_array().unwrap().len(), 2, "{st}");
    assert_eq!(st["roles"][0]["role"], "controller");
    assert_eq!(st["roles"][0]["holder"], "n1");
    assert_eq!(st["roles"][0]["epoch"], 1);
    let (_, n1) = h.call(Method::GET, "/api/v1/nodes/n1", "").await;
    assert_eq!(n1["status"]["membership"]["roles"][0], "controller", "{n1}");
    assert_eq!(
        n1["metadata"]["labels"]["node-role.shoal.dev/controller"],
        ""
    );
    assert_eq!(st["digest"].as_str().unwrap().len(), 64, "{st}");
    // n2 has not said which state it holds: 1 of the 2 alive nodes agree. Once its record
    // carries this node's digest, both do.
    assert_eq!(
        st["agreement"],
        serde_json::json!({"alive": 2, "agreeing": 1, "all": false}),
        "{st}"
    );
    let mut same = n2(11, false);
    same.state_digest = st["digest"].as_str().unwrap().to_string();
    send(same).await;
    let mut agreed = Value::Null;
    for _ in 0..100 {
        let (_, st) = h.call(Method::GET, "/shoal/v1/status", "").await;
        agreed = st["agreement"].clone();
        if agreed["all"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        agreed,
        serde_json::json!({"alive": 2, "agreeing": 2, "all": true})
    );
    let (code, jt) = h.call(Method::GET, "/shoal/v1/join-token", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        jt["command"],
        "shoald --join 127.0.0.1:7946 --token shoal1.secret"
    );

    // Neither this node nor an alive one can be deleted.
    let (code, body) = h.call(Method::DELETE, "/api/v1/nodes/n1", "").await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let (code, body) = h.call(Method::DELETE, "/api/v1/nodes/n2", "").await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("n2 is alive"),
        "{body}"
    );

    // n2 leaves: now it can be forgotten, and it is gone from the list.
    send(n2(12, true)).await;
    for _ in 0..100 {
        if n2_state().await.as_deref() == Some("left") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // n2 holds pod subnet 4: its Node shows it, and deleting n2 gives it back.
    h.state
        .claim_pod_subnet(crate::state::PodSubnetClaim {
            range: "10.42.0.0/16".into(),
            node: "n2".into(),
            index: Some(4),
            release: vec![],
        })
        .await
        .unwrap();
    let (_, v) = h.call(Method::GET, "/api/v1/nodes/n2", "").await;
    assert_eq!(v["spec"]["podCIDR"], "10.42.4.0/24", "{v}");
    let (code, body) = h.call(Method::DELETE, "/api/v1/nodes/n2", "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["status"]["membership"]["state"], "left");
    assert!(h.state.pod_subnets().await.unwrap().claims.is_empty());
    let (_, list) = h.call(Method::GET, "/api/v1/nodes", "").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (code, _) = h.call(Method::DELETE, "/api/v1/nodes/n2", "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

mod workloads;

#[tokio::test]
async fn a_service_port_taken_by_another_service_is_refused_and_nothing_is_applied() {
    let h = harness();
    let web = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 8080, nodePort: 30080}]\n";
    let (code, body) = h.call(Method::POST, "/shoal/v1/apply", web).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    // Re-applying the same Service is no conflict.
    let (code, body) = h.call(Method::POST, "/shoal/v1/apply", web).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    // A ClusterIP Service may share a port, as Kubernetes manifests do.
    let shared = "apiVersion: v1\nkind: Service\nmetadata: {name: peer}\nspec:\n  selector: {app: peer}\n  ports: [{port: 30080}]\n";
    let (code, body) = h.call(Method::POST, "/shoal/v1/apply", shared).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let clash = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: side}\ndata: {k: v}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\nspec:\n  type: NodePort\n  selector: {app: api}\n  ports: [{port: 9090, nodePort: 30080}]\n";
    let (code, body) = h.call(Method::POST, "/shoal/v1/apply", clash).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("default/") && message.contains("30080"),
        "{message}"
    );
    let (code, _) = h
        .call(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/side",
            "",
        )
        .await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "nothing of the batch was applied"
    );
    // Services show their DNS name; Endpoints are computed and cannot be deleted.
    let (_, svc) = h
        .call(Method::GET, "/api/v1/namespaces/default/services/web", "")
        .await;
    assert_eq!(svc["status"]["dnsName"], "web.default.svc.shoal.home.arpa");
    assert_eq!(svc["status"]["readyEndpoints"], 0);
    let (code, ep) = h
        .call(Method::GET, "/api/v1/namespaces/default/endpoints/web", "")
        .await;
    assert_eq!(code, StatusCode::OK, "{ep}");
    assert_eq!(ep["kind"], "Endpoints");
    let (code, list) = h.call(Method::GET, "/api/v1/endpoints", "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["kind"], "EndpointsList");
    let (code, _) = h
        .call(
            Method::DELETE,
            "/api/v1/namespaces/default/endpoints/web",
            "",
        )
        .await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn events_list_filter_watch_and_refuse_writes() {
    use crate::events::ObjectRef;
    use futures_util::StreamExt as _;
    let h = harness();
    h.events.normal(
        ObjectRef::pod("default", "web-0"),
        "Scheduled",
        "Successfully assigned default/web-0 to n1",
    );
    h.events.warning(
        ObjectRef::pod("prod", "db-0"),
        "BackOff",
        "Back-off restarting failed container",
    );
    h.events
        .warning(ObjectRef::node("n2"), "NodeDead", "Node n2 is dead");
    let (code, list) = h.call(Method::GET, "/api/v1/events", "").await;
    assert_eq!(code, StatusCode::OK, "{list}");
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    // A namespace holds its objects' events; a Node's go to `default`.
    let (_, list) = h
        .call(Method::GET, "/api/v1/namespaces/default/events", "")
        .await;
    let reasons: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Scheduled", "NodeDead"]);
    let (_, list) = h
        .call(
            Method::GET,
            "/api/v1/events?fieldSelector=involvedObject.kind%3DPod,involvedObject.name%3Ddb-0",
            "",
        )
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["involvedObject"]["namespace"], "prod");
    assert_eq!(items[0]["type"], "Warning");
    let (code, e) = h
        .call(Method::GET, "/api/v1/events?fieldSelector=source%3Dn1", "")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("involvedObject.name"),
        "{e}"
    );
    // One by name; writes are refused.
    let name = items[0]["metadata"]["name"].as_str().unwrap().to_string();
    let (code, one) = h
        .call(
            Method::GET,
            &format!("/api/v1/namespaces/prod/events/{name}"),
            "",
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{one}");
    assert_eq!(one["reason"], "BackOff");
    for (method, uri) in [
        (
            Method::DELETE,
            format!("/api/v1/namespaces/prod/events/{name}"),
        ),
        (
            Method::PUT,
            format!("/api/v1/namespaces/prod/events/{name}"),
        ),
        (Method::POST, "/api/v1/namespaces/prod/events".to_string()),
    ] {
        let (code, body) = h.call(method.clone(), &uri, "{}").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(
            body["message"].as_str().unwrap().contains("read-only"),
            "{body}"
        );
    }
    let (code, _) = h
        .call(
            Method::POST,
            "/shoal/v1/apply",
            "apiVersion: v1\nkind: Event\nmetadata: {name: x}\n",
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);

    // A watch sends what matches, a bookmark, then new events and new counts.
    let req = Request::builder()
        .uri("/api/v1/namespaces/prod/events?watch=true&allowWatchBookmarks=true")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = h.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    let mut lines: Vec<Value> = Vec::new();
    let mut buf = String::new();
    let mut next_line = async || -> Value {
        loop {
            if let Some(i) = buf.find('\n') {
                let line: String = buf.drain(..=i).collect();
                return serde_json::from_str(&line).unwrap();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .expect("a watch line within 5 s")
                .expect("the stream goes on")
                .unwrap();
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    lines.push(next_line().await);
    lines.push(next_line().await);
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[0]["object"]["reason"], "BackOff");
    assert_eq!(lines[1]["type"], "BOOKMARK");
    // Another namespace's event is not sent; a repeat comes as MODIFIED with its count.
    h.events
        .normal(ObjectRef::pod("default", "web-1"), "Scheduled", "elsewhere");
    h.events.warning(
        ObjectRef::pod("prod", "db-0"),
        "BackOff",
        "Back-off restarting failed container",
    );
    let line = next_line().await;
    assert_eq!(line["type"], "MODIFIED", "{line}");
    assert_eq!(line["object"]["count"], 2);
    h.events.normal(
        ObjectRef::pod("prod", "db-1"),
        "Scheduled",
        "Successfully assigned prod/db-1 to n1",
    );
    let line = next_line().await;
    assert_eq!(line["type"], "ADDED", "{line}");
    assert_eq!(line["object"]["involvedObject"]["name"], "db-1");
}
