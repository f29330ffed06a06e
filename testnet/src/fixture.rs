//! What container tests set up around their nodes: a [`Testnet`] (a [`Cluster`] whose Docker
//! leftovers go with it), a [`SingleNode`] (the same for one node), [`apply`], which applies a
//! manifest through the CLI as a user would and panics with the node's log when that fails,
//! the echo [`workload`] most tests run, and [`http_get`] and [`fetch_in`] to talk to it;
//! [`Alone`] (one node in a temporary directory) and the pods as the API gives them
//! ([`pod_objects`], [`pod_ready`], [`wait_pods_ready`]).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;

use crate::PodView;
use crate::image::{ECHO_IMAGE, ECHO_PORT};

use crate::{Cluster, DockerCleanup, Node, NodeOptions};

/// A [`Cluster`] that removes what its nodes left in the Docker engine when it is dropped.
///
/// The fields drop in the order they are declared: `cluster` first, so every `shoald` is dead
/// before `cleanup` removes the containers, pod networks and volumes of the cluster id, and no
/// agent starts a removed container again. Tests borrow `cluster` and keep the `Testnet`
/// itself alive to the end.
pub struct Testnet {
    pub cluster: Cluster,
    cleanup: DockerCleanup,
}

impl Testnet {
    /// [`Cluster::up`] of `n` nodes in `dir`, with its cleanup.
    pub fn up(n: usize, dir: &std::path::Path) -> anyhow::Result<Testnet> {
        Testnet::new(Cluster::up(n, dir)?)
    }

    /// Takes over a started `cluster`; its cleanup is for the cluster id of its first node.
    pub fn new(cluster: Cluster) -> anyhow::Result<Testnet> {
        let cluster_id = cluster
            .nodes()
            .first()
            .context("the cluster has no nodes")?
            .cluster_id()?;
        Ok(Testnet {
            cleanup: DockerCleanup::new(&cluster_id),
            cluster,
        })
    }

    /// The id of the cluster the nodes formed (the `shoal.cluster` label of its containers).
    pub fn cluster_id(&self) -> &str {
        self.cleanup.cluster_id()
    }
}

/// One [`Node`] that removes what it left in the Docker engine when it is dropped: `node`
/// drops before `cleanup`, as in [`Testnet`]. `cleanup` is public for the tests that count the
/// cluster's containers or add volumes to remove; it stays in the struct.
pub struct SingleNode {
    pub node: Node,
    pub cleanup: DockerCleanup,
}

impl SingleNode {
    /// [`Node::start`] of a node that makes its own cluster, with its cleanup.
    pub fn start(opts: NodeOptions) -> anyhow::Result<SingleNode> {
        let node = Node::start(opts)?;
        let cleanup = DockerCleanup::new(&node.cluster_id()?);
        Ok(SingleNode { node, cleanup })
    }
}

/// One node of its own cluster in a temporary directory that goes with it.
pub struct Alone {
    pub one: SingleNode,
    _dir: tempfile::TempDir,
}

impl Alone {
    /// A node `n1` when the Docker engine answers; `None` (the test passes, saying so) when it
    /// does not and `CI` is not set ([`crate::docker_ready`]).
    pub fn start() -> Option<Alone> {
        if !crate::docker_ready() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let one = SingleNode::start(NodeOptions::new("n1", &dir.path().join("n1")))
            .unwrap_or_else(|e| panic!("cannot start a node: {e:#}"));
        Some(Alone { one, _dir: dir })
    }
}

/// The pods of `default` matching the label `selector` (`app=web`), as the API gives them;
/// panics when the API does not answer 200.
pub fn pod_objects(node: &Node, selector: &str) -> Vec<serde_json::Value> {
    let path = format!(
        "/api/v1/namespaces/default/pods?labelSelector={}",
        selector.replace('=', "%3D")
    );
    let (code, list) = node
        .api()
        .and_then(|api| api.get(&path))
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    assert_eq!(code, 200, "{list}");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Whether a pod object's `Ready` condition is `True`.
pub fn pod_ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Waits up to `timeout` until exactly `n` pods match `selector` and all are ready; returns
/// them, or panics with the pods and the node's log.
pub fn wait_pods_ready(
    node: &Node,
    selector: &str,
    n: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    crate::wait_until(timeout, &format!("{n} ready pods {selector}"), || {
        let ps = pod_objects(node, selector);
        Ok((ps.len() == n && ps.iter().all(pod_ready)).then_some(ps))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\npods: {:#?}\nlog:\n{}",
            pod_objects(node, selector),
            node.log()
        )
    })
}

/// `shoal apply -f -` of `manifest` on `node`; panics with the error and the node's log when
/// the command cannot run or fails.
pub fn apply(node: &Node, manifest: &str) {
    node.cli_with_input(&["apply", "-f", "-"], Some(manifest))
        .and_then(crate::CliOutput::success)
        .unwrap_or_else(|e| panic!("apply on {}: {e:#}\n{}", node.opts.name, node.log()));
}

/// A Deployment `name` of `replicas` echo pods labelled `app: name` in `namespace`, and,
/// when `port` is set, a Service `name` on that port to their `http` port.
pub fn workload(namespace: &str, name: &str, replicas: u32, port: Option<u16>) -> String {
    workload_on(namespace, name, replicas, port, None)
}

/// [`workload`] whose pods run only on the node named `node` (`nodeSelector` on
/// `kubernetes.io/hostname`) when it is set.
pub fn workload_on(
    namespace: &str,
    name: &str,
    replicas: u32,
    port: Option<u16>,
    node: Option<&str>,
) -> String {
    let selector = node
        .map(|n| format!("      nodeSelector: {{kubernetes.io/hostname: {n}}}\n"))
        .unwrap_or_default();
    let service = port
        .map(|p| {
            format!(
                r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {p}, targetPort: http}}]
---
"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"{service}apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
{selector}      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: {ECHO_IMAGE}
        ports: [{{containerPort: {ECHO_PORT}, name: http}}]
        readinessProbe:
          httpGet: {{path: /ready, port: http}}
          periodSeconds: 1
          failureThreshold: 1
        resources:
          requests: {{cpu: 50m, memory: 32Mi}}
"#
    )
}

/// GET `path` on `host:port` (the answer may take a while: a name that does not resolve goes
/// through every search domain first): (status, body).
pub fn http_get(host: &str, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP answer: {out:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `GET /fetch?url=URL` in `pod`: the pod fetches `url` itself.
pub fn fetch_in(pod: &PodView, url: &str) -> anyhow::Result<(u16, String)> {
    let (host, port) = pod
        .host
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{} has no host port", pod.name))?;
    let (status, body) = http_get(&host, port, &format!("/fetch?url={url}"))?;
    anyhow::ensure!(
        !(status == 404 && body.contains("no such route")),
        "the test image has no /fetch route: is {ECHO_IMAGE} stale?"
    );
    Ok((status, body))
}
