//! Node objects: the registry joined with membership (see [`crate::nodes`]). Users never apply
//! them; `DELETE` forgets a node that is dead or has left.

use axum::http::StatusCode;
use serde_json::{Value, json};
use shoal_protocol::Kind;

use super::{ApiError, ApiState};
use crate::nodes::{self, NodeView};
use crate::observed::Liveness;
use crate::time::rfc3339;

pub async fn list(api: &ApiState) -> Result<Vec<Value>, ApiError> {
    let view = nodes::view(&api.state, &api.observed).await?;
    Ok(view.values().map(render).collect())
}

pub async fn get(api: &ApiState, name: &str) -> Result<Value, ApiError> {
    let view = nodes::view(&api.state, &api.observed).await?;
    view.get(name)
        .map(render)
        .ok_or_else(|| ApiError::not_found(Kind::Node, None, name))
}

/// Forgets a node: only one that is dead or has left, and never the node answering.
pub async fn delete(api: &ApiState, name: &str) -> Result<Value, ApiError> {
    let view = nodes::view(&api.state, &api.observed).await?;
    let Some(node) = view.get(name) else {
        return Err(ApiError::not_found(Kind::Node, None, name));
    };
    if name == &*api.node_name {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "node {name} is the node answering this request; stop its shoald and delete it \
                 from another node"
            ),
        ));
    }
    if matches!(node.liveness, Liveness::Alive | Liveness::Suspect) {
        let seen = node
            .last_seen
            .map(|t| format!(" (last seen {}s ago)", (crate::time::unix_now() - t).max(0)))
            .unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "node {name} is {}{seen}; stop its shoald, wait until it is dead or has left, \
                 then delete it",
                node.liveness.as_str()
            ),
        ));
    }
    let rendered = render(node);
    api.state.delete(Kind::Node, None, name).await?;
    tracing::info!(node = %name, "node deleted from the registry");
    Ok(rendered)
}

/// Query of a drain.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DrainQuery {
    #[serde(default)]
    pub force: bool,
}

/// `POST /shoal/v1/nodes/{name}/cordon`, `/uncordon` and `/drain[?force=true]`: marks a node
/// (un)schedulable; a drain also moves its pods elsewhere, within each workload's
/// maxUnavailable unless forced. Pods already on a cordoned node stay.
pub async fn cordon(
    axum::extract::State(api): axum::extract::State<ApiState>,
    axum::extract::Path((name, action)): axum::extract::Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<DrainQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let (unschedulable, drain) = match action.as_str() {
        "cordon" => (true, None),
        "uncordon" => (false, None),
        "drain" => (true, Some(q.force)),
        _ => {
            return Err(ApiError::not_found_path(&format!(
                "/shoal/v1/nodes/{name}/{action}"
            )));
        }
    };
    if !nodes::set_schedule(&api.state, &name, unschedulable, drain).await? {
        return Err(ApiError::not_found(Kind::Node, None, &name));
    }
    tracing::info!(node = %name, action = %action, force = q.force, "node scheduling changed");
    get(&api, &name).await.map(axum::Json)
}

fn condition(l: Liveness) -> (&'static str, &'static str, &'static str) {
    match l {
        Liveness::Alive => ("True", "NodeAlive", "shoald is running and heard from"),
        Liveness::Suspect => (
            "Unknown",
            "NodeSuspect",
            "no heartbeat for a few seconds: the node may be down or cut off",
        ),
        Liveness::Dead => (
            "Unknown",
            "NodeDead",
            "no heartbeat for too long: the node is down or cut off",
        ),
        Liveness::Left => ("False", "NodeLeft", "shoald stopped and said so"),
        Liveness::Unknown => (
            "Unknown",
            "NodeUnknown",
            "not heard since this node started: its pods stay where they are",
        ),
    }
}

pub fn render(n: &NodeView) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(n.name));
    for role in &n.roles {
        labels.insert(format!("node-role.shoal.dev/{role}"), json!(""));
    }
    let (status, reason, message) = condition(n.liveness);
    let last_seen = n.last_seen.map(rfc3339);
    let mut condition = json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
    });
    if let Some(t) = &last_seen {
        condition["lastHeartbeatTime"] = json!(t);
    }
    let mut status = json!({
        "conditions": [condition],
        "addresses": [{ "type": "Hostname", "address": n.name }],
        "nodeInfo": { "peerId": n.peer_id },
        "membership": {
            "state": n.liveness.as_str(),
            "lastSeen": last_seen,
            "roles": n.roles,
        },
    });
    if let Some(r) = &n.record {
        let memory = format!("{}Ki", r.memory_bytes / 1024);
        let resources = json!({ "cpu": r.cpus.to_string(), "memory": memory });
        status["addresses"] = json!([
            { "type": "InternalIP", "address": r.address },
            { "type": "Hostname", "address": n.name },
        ]);
        status["capacity"] = resources.clone();
        status["allocatable"] = resources;
        status["nodeInfo"]["shoalVersion"] = json!(r.shoal_version);
    }
    let spec = if n.unschedulable {
        json!({
            "unschedulable": true,
            "taints": [{ "key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule" }],
        })
    } else {
        json!({})
    };
    let created = n
        .created
        .clone()
        .or_else(|| n.record.as_ref().map(|r| rfc3339(r.started_at)));
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name,
            "creationTimestamp": created,
            "labels": labels,
        },
        "spec": spec,
        "status": status,
    })
}
