//! Node objects: the registry joined with membership (see [`crate::nodes`]). Users never apply
//! them; `DELETE` forgets a node that is dead or has left.
//!
//! `status.conditions` holds `Ready` (from membership: alive, suspect, dead, left; `False`
//! with reason `EngineUnavailable` while an alive node's container engine is unavailable),
//! then one entry, status `True`, per condition the node reports about itself in its record
//! (`EngineUnavailable`, ...), with the time it began when the node says
//! (`agent::engine::split_since`).

use axum::http::StatusCode;
use serde_json::{Value, json};
use shoal_protocol::Kind;

use super::{ApiError, ApiState};
use crate::nodes::{self, NodeView};
use crate::observed::Liveness;
use crate::time::rfc3339;

pub async fn list(api: &ApiState) -> Result<Vec<Value>, ApiError> {
    let view = with_routes(api, nodes::view(&api.state, &api.observed).await?);
    Ok(view.values().map(render).collect())
}

pub async fn get(api: &ApiState, name: &str) -> Result<Value, ApiError> {
    let view = with_routes(api, nodes::view(&api.state, &api.observed).await?);
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
    // Its pod subnet goes back to the range: another node may take it.
    let subnets = api.state.pod_subnets().await?;
    let held: Vec<u32> = subnets
        .claims
        .iter()
        .filter(|(_, n)| n.as_str() == name)
        .map(|(i, _)| *i)
        .collect();
    if let (Some(range), false) = (subnets.range, held.is_empty()) {
        api.state
            .claim_pod_subnet(crate::state::PodSubnetClaim {
                range,
                node: name.to_string(),
                index: None,
                release: held,
            })
            .await?;
    }
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

/// The views with the route this node uses to each one's pod subnet.
fn with_routes(
    api: &ApiState,
    mut view: std::collections::BTreeMap<String, nodes::NodeView>,
) -> std::collections::BTreeMap<String, nodes::NodeView> {
    let Some(podnet) = &api.podnet else {
        return view;
    };
    let status = podnet.borrow().clone();
    for (name, v) in view.iter_mut() {
        if v.pod_cidr.is_none() {
            continue;
        }
        v.pod_route = if name.as_str() == &*api.node_name {
            Some("this node".to_string())
        } else {
            status
                .routes
                .get(name)
                .map(|mode| format!("{mode} from {}", api.node_name))
        };
    }
    view
}

/// The `status.conditions` entries of what the node reports about itself (its record's
/// conditions), in Kubernetes' shape. Pure.
pub fn reported_conditions(conditions: &std::collections::BTreeMap<String, String>) -> Vec<Value> {
    conditions
        .iter()
        .map(|(type_, message)| {
            let (text, since) = crate::agent::engine::split_since(message);
            json!({
                "type": type_,
                "status": "True",
                "reason": type_,
                "message": text,
                "lastTransitionTime": since,
            })
        })
        .collect()
}

pub fn render(n: &NodeView) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(n.name));
    for role in &n.roles {
        labels.insert(format!("node-role.shoal.dev/{role}"), json!(""));
    }
    let (mut status, mut reason, message) = condition(n.liveness);
    let mut message = message.to_string();
    let reported = n
        .record
        .as_ref()
        .map(|r| r.conditions.clone())
        .unwrap_or_default();
    // Alive but without its engine, the node runs no pod: not Ready, as Kubernetes says of a
    // node whose container runtime is down.
    let engine_down = reported
        .get(crate::agent::engine::ENGINE_UNAVAILABLE)
        .map(|m| crate::agent::engine::split_since(m));
    if let (Liveness::Alive | Liveness::Suspect, Some((why, _))) = (n.liveness, engine_down) {
        status = "False";
        reason = crate::agent::engine::ENGINE_UNAVAILABLE;
        message = format!("the container engine is unavailable: {why}");
    }
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
    if let (Some((_, Some(since))), "False") = (engine_down, status) {
        condition["lastTransitionTime"] = json!(since);
    }
    let mut conditions = vec![condition];
    // A departed or dead node's last word is stale; what it said stays visible all the same.
    conditions.extend(reported_conditions(&reported));
    let mut status = json!({
        "conditions": conditions,
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
    let mut spec = if n.unschedulable {
        json!({
            "unschedulable": true,
            "taints": [{ "key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule" }],
        })
    } else {
        json!({})
    };
    if let Some(cidr) = &n.pod_cidr {
        spec["podCIDR"] = json!(cidr);
        spec["podCIDRs"] = json!([cidr]);
    }
    if let Some(route) = &n.pod_route {
        status["podRoute"] = json!(route);
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::observed::NodeRecord;

    fn view(liveness: Liveness, conditions: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: "n2".into(),
            created: None,
            peer_id: "p".into(),
            liveness,
            last_seen: Some(1_700_000_000),
            record: Some(NodeRecord {
                name: "n2".into(),
                conditions: conditions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            roles: Vec::new(),
            unschedulable: false,
            pod_cidr: None,
            pod_route: None,
        }
    }

    #[test]
    fn an_unavailable_engine_is_a_condition_and_makes_the_node_not_ready() {
        let message = crate::agent::engine::condition_message(
            "cannot reach the Docker engine at unix:///var/run/docker.sock (no such socket): \
             is dockerd running?",
            "2026-12-07T14:40:00Z",
        );
        let v = render(&view(
            Liveness::Alive,
            &[
                ("EngineUnavailable", &message),
                ("Degraded", "a task failed"),
            ],
        ));
        let conditions = v["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 3, "{conditions:?}");
        let ready = &conditions[0];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "EngineUnavailable");
        assert_eq!(ready["lastTransitionTime"], "2026-12-07T14:40:00Z");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("unix:///var/run/docker.sock")
        );
        let engine = conditions
            .iter()
            .find(|c| c["type"] == "EngineUnavailable")
            .unwrap();
        assert_eq!(engine["status"], "True");
        assert_eq!(engine["reason"], "EngineUnavailable");
        assert_eq!(engine["lastTransitionTime"], "2026-12-07T14:40:00Z");
        assert_eq!(
            engine["message"],
            "cannot reach the Docker engine at unix:///var/run/docker.sock (no such socket): \
             is dockerd running?"
        );
        // A condition without a start time has none.
        let degraded = conditions.iter().find(|c| c["type"] == "Degraded").unwrap();
        assert_eq!(degraded["lastTransitionTime"], Value::Null);
        assert_eq!(degraded["message"], "a task failed");

        // All well: Ready only.
        let v = render(&view(Liveness::Alive, &[]));
        let conditions = v["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0]["status"], "True");
        // A dead node is not Ready for that reason, whatever its last record said.
        let v = render(&view(Liveness::Dead, &[("EngineUnavailable", &message)]));
        assert_eq!(v["status"]["conditions"][0]["reason"], "NodeDead");
    }
}
