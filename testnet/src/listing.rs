//! Reading lists back from a node's API the way tests look at them: the pods of an app with
//! where they run, whether they are ready and where the test image's port is published, and
//! the names of the items of any list route.

use serde_json::Value;

use crate::Node;
use crate::image::ECHO_PORT;

/// A pod as a node's API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// `spec.nodeName`, empty while unassigned.
    pub node: String,
    /// `status.conditions` has Ready True.
    pub ready: bool,
    /// `status.phase`, empty when none is reported.
    pub phase: String,
    /// The first container's id without `docker://`, empty when none is reported.
    pub container: String,
    /// Where the test image's port ([`ECHO_PORT`]) is published on the host: (IP, port).
    pub host: Option<(String, u16)>,
    /// `status.podIP`, empty when none is reported.
    pub pod_ip: String,
}

impl PodView {
    /// Reads one item of a pod list.
    pub fn from_json(p: &Value) -> PodView {
        let ready = items(&p["status"]["conditions"])
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let host = items(&p["status"]["hostPorts"])
            .iter()
            .find(|b| b["containerPort"] == u64::from(ECHO_PORT))
            .and_then(|b| {
                Some((
                    b["hostIp"].as_str()?.to_string(),
                    u16::try_from(b["hostPort"].as_u64()?).ok()?,
                ))
            });
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        PodView {
            name: text(&p["metadata"]["name"]),
            node: text(&p["spec"]["nodeName"]),
            ready,
            phase: text(&p["status"]["phase"]),
            container: text(&p["status"]["containerStatuses"][0]["containerID"])
                .trim_start_matches("docker://")
                .to_string(),
            host,
            pod_ip: text(&p["status"]["podIP"]),
        }
    }
}

/// The elements of `v` when it is an array, none otherwise.
fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The pods labelled `app=<app>` in `namespace` as `node`'s API lists them, in its order.
pub fn pods(node: &Node, namespace: &str, app: &str) -> anyhow::Result<Vec<PodView>> {
    let (code, list) = node.api()?.get(&format!(
        "/api/v1/namespaces/{namespace}/pods?labelSelector=app%3D{app}"
    ))?;
    anyhow::ensure!(code == 200, "pods on {}: {code} {list}", node.opts.name);
    Ok(items(&list["items"])
        .iter()
        .map(PodView::from_json)
        .collect())
}

/// The holder of the controller role as `node` lists the nodes (`status.membership.roles`).
pub fn role_holder(node: &Node) -> anyhow::Result<Option<String>> {
    let (code, v) = node.api()?.get("/api/v1/nodes")?;
    anyhow::ensure!(code == 200, "nodes on {}: {code} {v}", node.opts.name);
    Ok(items(&v["items"]).iter().find_map(|n| {
        let roles = n["status"]["membership"]["roles"].as_array()?;
        roles
            .iter()
            .any(|r| r == "controller")
            .then(|| n["metadata"]["name"].as_str().unwrap_or("").to_string())
    }))
}

/// The names of the items of the list route `path` on `node`, sorted.
pub fn names(node: &Node, path: &str) -> anyhow::Result<Vec<String>> {
    let (code, v) = node.api()?.get(path)?;
    anyhow::ensure!(code == 200, "GET {path} on {}: {code} {v}", node.opts.name);
    let mut out: Vec<String> = items(&v["items"])
        .iter()
        .filter_map(|i: &Value| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    out.sort();
    Ok(out)
}

/// The names of `node`'s ConfigMaps in namespace default, sorted.
pub fn configmaps(node: &Node) -> anyhow::Result<Vec<String>> {
    names(node, "/api/v1/namespaces/default/configmaps")
}
