//! Runs the built `shoal` binary against a tiny fake node: a std::net listener that records
//! each request and answers with canned HTTP/1.1 responses. The real node is tested end to end
//! elsewhere; this checks what the user sees: output, error messages and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Responder = fn(&Request) -> (u16, String);

struct FakeNode {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeNode {
    fn start(respond: Responder) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        // The thread stays blocked in accept when the test ends; the process exit ends it.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve(stream, respond, &seen);
            }
        });
        FakeNode { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request, records it, then answers: recorded before the answer, so a test that
/// reads the requests after the CLI exits sees every one.
fn serve(stream: TcpStream, respond: Responder, seen: &Mutex<Vec<Request>>) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let req = Request {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (code, body) = respond(&req);
    seen.lock().unwrap().push(req);
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        _ => "Other",
    };
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = out.flush();
    Some(())
}

/// Runs `shoal` with a clean environment: no config file, no token file, no SHOAL_* values
/// from the machine running the tests.
fn shoal(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .env_remove("SHOAL_NODE")
        .env_remove("SHOAL_TOKEN")
        .env_remove("SHOAL_CONTEXT")
        .env("SHOAL_CONFIG", home.join("config.toml"))
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.25
";

#[test]
fn apply_prints_what_the_node_did() {
    let node = FakeNode::start(|_| {
        (
            200,
            r#"{"items":[{"apiVersion":"apps/v1","kind":"Deployment","namespace":"default",
                "name":"web","action":"created","generation":1}]}"#
                .into(),
        )
    });
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("web.yaml");
    std::fs::write(&file, DEPLOYMENT).unwrap();
    let out = shoal(
        home.path(),
        &[
            "--node",
            &node.url,
            "--token",
            "t0k",
            "apply",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(
        stdout(&out),
        "deployment.apps/web created\n",
        "{}",
        stderr(&out)
    );
    assert!(out.status.success());
    let reqs = node.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].target, "/shoal/v1/apply?defaultNamespace=default");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer t0k"));
    assert_eq!(reqs[0].header("content-type"), Some("application/yaml"));
    assert!(reqs[0].body.contains("name: web"), "{}", reqs[0].body);
}

#[test]
fn a_refused_token_says_which_token_to_use() {
    let node = FakeNode::start(|_| {
        (
            401,
            r#"{"apiVersion":"v1","kind":"Status","status":"Failure","message":"bad token",
                "reason":"Unauthorized","code":401}"#
                .into(),
        )
    });
    let home = tempfile::tempdir().unwrap();
    let out = shoal(
        home.path(),
        &["--node", &node.url, "--token", "wrong", "get", "deploy"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: the node at {} refused the token (401): set --token or SHOAL_TOKEN",
            node.url
        )),
        "{err}"
    );
    assert_eq!(
        node.requests()[0].header("authorization"),
        Some("Bearer wrong")
    );
}

#[test]
fn an_unreachable_node_is_named() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let home = tempfile::tempdir().unwrap();
    let out = shoal(home.path(), &["--node", &url, "get", "nodes"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot reach the shoal node at {url} (connection refused); is shoald \
             running there? Set --node or SHOAL_NODE.\n"
        )
    );
}

#[test]
fn a_local_parse_error_sends_nothing() {
    let node = FakeNode::start(|_| (200, r#"{"items":[]}"#.into()));
    let home = tempfile::tempdir().unwrap();
    let good = home.path().join("a.yaml");
    let bad = home.path().join("b.yaml");
    std::fs::write(&good, DEPLOYMENT).unwrap();
    std::fs::write(&bad, "apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n").unwrap();
    let out = shoal(
        home.path(),
        &[
            "--node",
            &node.url,
            "apply",
            "-f",
            good.to_str().unwrap(),
            "-f",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // Only the bad file is blamed, each of its errors on a line of its own.
    assert!(!err.is_empty());
    for line in err.lines() {
        assert!(
            line.starts_with(&format!("error: {}: ", bad.display())),
            "{err}"
        );
    }
    assert!(stdout(&out).is_empty());
    assert!(node.requests().is_empty(), "{:?}", node.requests());
}

#[test]
fn get_lists_a_table_and_reports_a_missing_object() {
    let node = FakeNode::start(|req| {
        if req.target.ends_with("/deployments/nope") {
            return (
                404,
                r#"{"apiVersion":"v1","kind":"Status","status":"Failure",
                    "message":"deployments.apps \"nope\" not found","reason":"NotFound","code":404}"#
                    .into(),
            );
        }
        (
            200,
            r#"{"apiVersion":"apps/v1","kind":"DeploymentList","metadata":{},"items":[
                {"apiVersion":"apps/v1","kind":"Deployment",
                 "metadata":{"name":"web","namespace":"prod"},
                 "spec":{"replicas":2},
                 "status":{"readyReplicas":1,"updatedReplicas":2,"availableReplicas":1}}]}"#
                .into(),
        )
    });
    let home = tempfile::tempdir().unwrap();
    let out = shoal(
        home.path(),
        &[
            "--node", &node.url, "--token", "t", "-n", "prod", "get", "deploy", "-l", "app=web",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    1/2     2            1           <unknown>\n"
    );
    assert_eq!(
        node.requests()[0].target,
        "/apis/apps/v1/namespaces/prod/deployments?labelSelector=app%3Dweb"
    );

    let out = shoal(
        home.path(),
        &["--node", &node.url, "get", "deployments", "nope"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
}

#[test]
fn config_contexts_are_written_private_and_used() {
    let node = FakeNode::start(|_| {
        (
            200,
            r#"{"version":"0.1.0","clusterId":"c1","nodeName":"n1"}"#.into(),
        )
    });
    let home = tempfile::tempdir().unwrap();
    let out = shoal(
        home.path(),
        &[
            "config",
            "set-context",
            "lab",
            "--node",
            &node.url,
            "--token",
            "ctx-token",
            "--use",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Context \"lab\" created.\nSwitched to context \"lab\".\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join("config.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = shoal(home.path(), &["config", "current-context"]);
    assert_eq!(stdout(&out), "lab\n");

    let out = shoal(home.path(), &["version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "Client Version: {}\nServer Version: 0.1.0 (cluster c1, node n1)\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let reqs = node.requests();
    assert_eq!(reqs[0].target, "/version");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer ctx-token"));
}

#[test]
fn server_errors_of_a_batch_name_the_file_and_document() {
    let node = FakeNode::start(|_| {
        (
            422,
            r#"{"apiVersion":"v1","kind":"Status","status":"Failure","message":"invalid",
                "reason":"Invalid","code":422,"details":{"causes":[
                {"document":2,"field":"metadata.namespace","message":"namespace \"x\" does not exist"}]}}"#
                .into(),
        )
    });
    let home = tempfile::tempdir().unwrap();
    let a = home.path().join("a.yaml");
    let b = home.path().join("b.yaml");
    // a.yaml holds two documents, so the node's document 2 is b.yaml's document 0.
    std::fs::write(
        &a,
        format!("{DEPLOYMENT}---\n{}", DEPLOYMENT.replace("web", "api")),
    )
    .unwrap();
    std::fs::write(&b, DEPLOYMENT.replace("web", "db")).unwrap();
    let out = shoal(
        home.path(),
        &[
            "--node",
            &node.url,
            "apply",
            "-f",
            a.to_str().unwrap(),
            "-f",
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}: document 0: metadata.namespace: namespace \"x\" does not exist\n",
            b.display()
        )
    );
    let reqs = node.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].body.contains("name: db") && reqs[0].body.contains("name: api"));
}

/// A Node as the node's API answers it; `last_seen` is JSON (a quoted time or null).
fn node_json(name: &str, state: &str, last_seen: &str, roles: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Node",
            "metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}"}}}},
            "spec":{{}},
            "status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.2"}}],
                "capacity":{{"cpu":"2","memory":"24575392Ki"}},
                "allocatable":{{"cpu":"2","memory":"24575392Ki"}},
                "nodeInfo":{{"shoalVersion":"0.1.0","peerId":"12D3KooWx"}},
                "membership":{{"state":"{state}","lastSeen":{last_seen},"roles":{roles}}}}}}}"#
    )
}

#[test]
fn get_nodes_wide_shows_membership() {
    let node = FakeNode::start(|req| match req.target.as_str() {
        "/api/v1/nodes" => (
            200,
            format!(
                r#"{{"apiVersion":"v1","kind":"NodeList","items":[{},{}]}}"#,
                node_json("n2", "dead", "null", "[]"),
                node_json("n1", "alive", "null", r#"["controller"]"#),
            ),
        ),
        "/api/v1/nodes/n1" => (200, node_json("n1", "alive", "null", r#"["controller"]"#)),
        _ => (404, "{}".into()),
    });
    let home = tempfile::tempdir().unwrap();
    let out = shoal(
        home.path(),
        &[
            "--node", &node.url, "--token", "t", "get", "nodes", "-o", "wide",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "NAME   STATUS   ROLES        AGE         VERSION   ADDRESS     POD-CIDR   CPU   MEMORY   ALLOCATABLE   LAST-SEEN\n\
         n1     Alive    controller   <unknown>   0.1.0     127.0.0.2   <none>     2     23Gi     2/23Gi        <unknown>\n\
         n2     Dead     <none>       <unknown>   0.1.0     127.0.0.2   <none>     2     23Gi     2/23Gi        <unknown>\n"
    );
    assert_eq!(node.requests()[0].target, "/api/v1/nodes");

    let out = shoal(home.path(), &["--node", &node.url, "get", "node", "n1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "NAME   STATUS   ROLES        AGE         VERSION\n\
         n1     Alive    controller   <unknown>   0.1.0\n"
    );
    assert_eq!(node.requests()[1].target, "/api/v1/nodes/n1");
}

#[test]
fn delete_node_deletes_a_dead_node_and_refuses_a_live_one() {
    let node = FakeNode::start(|req| {
        match (req.method.as_str(), req.target.as_str()) {
        ("DELETE", "/api/v1/nodes/n3") => (200, node_json("n3", "dead", "null", "[]")),
        ("DELETE", "/api/v1/nodes/n2") => (
            409,
            r#"{"apiVersion":"v1","kind":"Status","status":"Failure","reason":"Conflict",
                "code":409,"message":"node \"n2\" is alive: stop shoald on it first, then delete it once it is dead"}"#
                .into(),
        ),
        _ => (
            404,
            r#"{"apiVersion":"v1","kind":"Status","status":"Failure","reason":"NotFound",
                "code":404,"message":"nodes \"nope\" not found"}"#
                .into(),
        ),
    }
    });
    let home = tempfile::tempdir().unwrap();
    let out = shoal(
        home.path(),
        &["--node", &node.url, "--token", "t", "delete", "node", "n3"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "node \"n3\" deleted\n");
    let reqs = node.requests();
    assert_eq!(reqs[0].method, "DELETE");
    assert_eq!(reqs[0].target, "/api/v1/nodes/n3");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer t"));

    // A live node is refused with the node's reason; the other names are still deleted.
    let out = shoal(
        home.path(),
        &["--node", &node.url, "delete", "no", "n2", "nope", "n3"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "node \"n3\" deleted\n");
    assert_eq!(
        stderr(&out),
        "Error from server (Conflict): node \"n2\" is alive: stop shoald on it first, then \
         delete it once it is dead\n\
         Error from server (NotFound): nodes \"nope\" not found\n"
    );
}

const STATUS: &str = r#"{"node":"n1","clusterId":"3f2a9c","peerId":"12D3KooWabc",
    "shoalVersion":"0.1.0","digest":"9b1ce0","objects":12,
    "agreement":{"alive":1,"agreeing":1,"all":true},
    "members":[
        {"name":"n2","state":"dead","address":"127.0.0.3","version":"0.1.0","lastSeen":null,
         "roles":[]},
        {"name":"n1","state":"alive","address":"127.0.0.2","version":"0.1.0","lastSeen":null,
         "roles":["controller"]}],
    "roles":[{"role":"controller","holder":"n1"}]}"#;

#[test]
fn status_prints_the_nodes_view() {
    let node = FakeNode::start(|req| match req.target.as_str() {
        "/shoal/v1/status" => (200, STATUS.into()),
        _ => (404, "{}".into()),
    });
    let home = tempfile::tempdir().unwrap();
    let out = shoal(
        home.path(),
        &["--node", &node.url, "--token", "t", "status"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
Node:       n1 (peer 12D3KooWabc)
Cluster:    3f2a9c
Version:    0.1.0
Digest:     9b1ce0 (12 objects)
Agreement:  all 1 alive nodes hold this state
Roles:      controller=n1

MEMBER   STATE   ADDRESS     VERSION   LAST-SEEN   ROLES
n1       alive   127.0.0.2   0.1.0     <unknown>   controller
n2       dead    127.0.0.3   0.1.0     <unknown>   <none>
"
    );
    assert_eq!(node.requests()[0].header("authorization"), Some("Bearer t"));

    let out = shoal(home.path(), &["--node", &node.url, "status", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let sent: serde_json::Value = serde_json::from_str(STATUS).unwrap();
    assert_eq!(printed, sent);

    let out = shoal(home.path(), &["--node", &node.url, "status", "-o", "yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("clusterId: 3f2a9c\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn join_token_prints_the_command_or_the_token() {
    let node = FakeNode::start(|req| match req.target.as_str() {
        "/shoal/v1/join-token" => (
            200,
            r#"{"token":"shoal1.abc","command":"shoald --join 127.0.0.2:7946 --token shoal1.abc"}"#
                .into(),
        ),
        _ => (404, "{}".into()),
    });
    let home = tempfile::tempdir().unwrap();
    let out = shoal(
        home.path(),
        &["--node", &node.url, "--token", "t", "join-token"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "shoald --join 127.0.0.2:7946 --token shoal1.abc\n"
    );
    let out = shoal(home.path(), &["--node", &node.url, "join-token", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "shoal1.abc\n");
    let reqs = node.requests();
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].target, "/shoal/v1/join-token");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer t"));
}
