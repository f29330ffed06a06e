//! Pods as the API shows them, and the routes that reach into their containers: logs and
//! exec.
//!
//! The pod list is not stored: it is every slot of desired state joined with its owner's
//! template ([`crate::pods`]) and the status a node observes. A bare Pod that has no slot yet
//! shows as Pending. Logs and exec go to the local container engine, so they work only for a
//! pod that runs on this node; the error names the node that runs it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use shoal_protocol::cluster::Slot;
use shoal_protocol::cluster::slot_key;
use shoal_protocol::kinds::{Pod, ReplicaSet};
use shoal_protocol::status::PodStatus;
use shoal_protocol::{Kind, Resource};

use super::ApiState;
use super::error::ApiError;
use crate::pods::{DesiredPod, join_owners, owners, pod_key, pod_object, typed};
use crate::runtime::{LogOptions, Runtime, RuntimeError};

/// Container labels the node agent sets on every container of a pod.
pub const NAMESPACE_LABEL: &str = "shoal.namespace";
pub const POD_LABEL: &str = "shoal.pod";
pub const CONTAINER_LABEL: &str = "shoal.container";

/// Every pod that should exist, plus bare Pods whose slot is not written yet.
async fn all_pods(api: &ApiState) -> Result<(Vec<DesiredPod>, Vec<ReplicaSet>), ApiError> {
    let slots = api.state.slots().await?;
    let owners = owners(&api.state).await?;
    let mut pods = join_owners(&slots, &owners);
    let have: std::collections::BTreeSet<String> = pods.iter().map(DesiredPod::key).collect();
    for p in &owners.pods {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        if !have.contains(&pod_key(&ns, &p.metadata.name)) {
            pods.push(unslotted(p, ns));
        }
    }
    pods.sort_by(|a, b| (&a.slot.namespace, &a.slot.pod).cmp(&(&b.slot.namespace, &b.slot.pod)));
    Ok((pods, owners.replicasets))
}

/// A bare Pod the controller has not given a slot yet: Pending, on no node.
fn unslotted(p: &Pod, namespace: String) -> DesiredPod {
    DesiredPod {
        slot: Slot {
            namespace,
            pod: p.metadata.name.clone(),
            owner_kind: "Pod".into(),
            owner_name: p.metadata.name.clone(),
            index: 0,
            revision: String::new(),
            node: String::new(),
            unschedulable: None,
        },
        metadata: p.metadata.clone(),
        spec: p.spec.clone(),
    }
}

fn object(pod: &DesiredPod, observed: &BTreeMap<String, PodStatus>) -> Value {
    let status = observed.get(&pod.key());
    pod_object(pod, status.map(|s| (pod.slot.node.as_str(), s)))
}

/// The pods of one namespace, or of all.
pub async fn list(api: &ApiState, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let (pods, _) = all_pods(api).await?;
    let observed = api.observed.pods();
    Ok(pods
        .iter()
        .filter(|p| namespace.is_none_or(|ns| p.slot.namespace == ns))
        .map(|p| object(p, &observed))
        .collect())
}

async fn find(
    api: &ApiState,
    ns: &str,
    name: &str,
) -> Result<(DesiredPod, Vec<ReplicaSet>), ApiError> {
    let (pods, replicasets) = all_pods(api).await?;
    pods.into_iter()
        .find(|p| p.slot.namespace == ns && p.slot.pod == name)
        .map(|p| (p, replicasets))
        .ok_or_else(|| ApiError::not_found(Kind::Pod, Some(ns), name))
}

pub async fn get(api: &ApiState, ns: &str, name: &str) -> Result<Value, ApiError> {
    let (pod, _) = find(api, ns, name).await?;
    Ok(object(&pod, &api.observed.pods()))
}

/// Deletes a StatefulSet's pod, as `kubectl delete pod db-1` does: its slot goes, its node
/// stops it, and the StatefulSet makes it again under the same name (on the update revision
/// under `OnDelete`). None when the pod is not a StatefulSet's.
pub async fn delete_statefulset_pod(
    api: &ApiState,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let Ok((pod, _)) = find(api, ns, name).await else {
        return Ok(None);
    };
    if pod.slot.owner_kind != "StatefulSet" {
        return Ok(None);
    }
    let shown = object(&pod, &api.observed.pods());
    api.state
        .write_slots(Vec::new(), vec![slot_key(ns, name)])
        .await?;
    tracing::info!(pod = %slot_key(ns, name), "deleted a StatefulSet pod; it is made again");
    Ok(Some(shown))
}

/// Refuses to delete a pod that a ReplicaSet owns (its controller would only make it again)
/// and says what to do instead. Bare Pods are deleted as stored objects by the caller.
pub async fn check_delete(api: &ApiState, ns: &str, name: &str) -> Result<(), ApiError> {
    let (pod, replicasets) = match find(api, ns, name).await {
        Ok(found) => found,
        // Not a desired pod: the plain delete answers (NotFound, or a stored bare Pod).
        Err(_) => return Ok(()),
    };
    if pod.slot.owner_kind != "ReplicaSet" {
        return Ok(());
    }
    let rs_name = &pod.slot.owner_name;
    let deployments = typed(&api.state, Kind::Deployment, |r| match r {
        Resource::Deployment(d) => Some(d),
        _ => None,
    })
    .await?;
    let deployment = replicasets
        .iter()
        .find(|rs| rs.metadata.namespace.as_deref() == Some(ns) && rs.metadata.name == *rs_name)
        .and_then(|rs| {
            deployments
                .iter()
                .find(|d| crate::controllers::owns(d, rs))
                .map(|d| d.metadata.name.clone())
        });
    Err(ApiError::bad_request(match deployment {
        Some(d) => format!(
            "pods of deployment \"{d}\" are replaced by their controller: use shoal rollout \
             restart deploy/{d}"
        ),
        None => format!(
            "pods of replicaset \"{rs_name}\" are replaced by their controller: change or \
             delete the workload that owns it"
        ),
    }))
}

/// Where a container of a pod runs on this node.
struct Located {
    runtime: Arc<dyn Runtime>,
    container_id: String,
}

fn other_node(name: &str, node: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!(
            "pod \"{name}\" runs on node \"{node}\"; connect to that node (proxying between \
             nodes arrives with the cluster)"
        ),
    )
}

fn engine_unavailable(e: &RuntimeError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("the container engine of this node is unavailable: {e}"),
    )
}

/// The container of `pod` named `wanted`, or its only container.
pub fn pick_container(pod: &DesiredPod, wanted: Option<&str>) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let name = &pod.slot.pod;
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) if names.contains(&w) => Ok(w.to_string()),
        Some(w) => Err(ApiError::bad_request(format!(
            "container \"{w}\" is not valid for pod \"{name}\": choose one of [{}]",
            names.join(" ")
        ))),
        None => match names.as_slice() {
            [one] => Ok((*one).to_string()),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod \"{name}\" (-c NAME), choose one \
                 of: [{}]",
                names.join(" ")
            ))),
        },
    }
}

/// Finds the container on this node: from this node's observed status, else by its labels in
/// the local engine.
async fn locate(api: &ApiState, pod: &DesiredPod, container: &str) -> Result<Located, ApiError> {
    let name = &pod.slot.pod;
    let observed = api.observed.pod(&pod.key());
    let elsewhere = match &observed {
        Some((node, _)) if node.as_str() != &*api.node_name => Some(node.clone()),
        None if !pod.slot.node.is_empty() && pod.slot.node != *api.node_name => {
            Some(pod.slot.node.clone())
        }
        _ => None,
    };
    let runtime = match api.engine.get() {
        Ok(r) => r,
        Err(e) => {
            return Err(match elsewhere {
                Some(node) => other_node(name, &node),
                None => engine_unavailable(&e),
            });
        }
    };
    let local_status = observed
        .as_ref()
        .filter(|(node, _)| node.as_str() == &*api.node_name)
        .map(|(_, s)| s);
    let from_status = local_status.and_then(|s| {
        s.container_statuses
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.container_id.as_deref())
            .map(|id| id.strip_prefix("docker://").unwrap_or(id).to_string())
            .filter(|id| !id.is_empty())
    });
    if let Some(container_id) = from_status {
        return Ok(Located {
            runtime,
            container_id,
        });
    }
    let filter = [
        (NAMESPACE_LABEL, pod.slot.namespace.as_str()),
        (POD_LABEL, name.as_str()),
        (CONTAINER_LABEL, container),
    ];
    let mut found = runtime
        .list(&filter)
        .await
        .map_err(|e| engine_unavailable(&e))?;
    // The running one first, then the most recently started.
    found.sort_by_key(|c| {
        (
            c.state != crate::runtime::ContainerState::Running,
            std::cmp::Reverse(c.started_at.clone()),
        )
    });
    if let Some(c) = found.into_iter().next() {
        return Ok(Located {
            runtime,
            container_id: c.id,
        });
    }
    if let Some(node) = elsewhere {
        return Err(other_node(name, &node));
    }
    let reason = local_status
        .and_then(|s| s.container_statuses.iter().find(|c| c.name == container))
        .and_then(|c| c.state.waiting.as_ref())
        .map_or("ContainerCreating", |w| w.reason.as_str());
    Err(ApiError::bad_request(format!(
        "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
    )))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    container: Option<String>,
    #[serde(default)]
    follow: bool,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    #[serde(default)]
    timestamps: bool,
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the container's output, streamed.
pub async fn logs(api: &ApiState, ns: &str, name: &str, q: LogQuery) -> Result<Response, ApiError> {
    let (pod, _) = find(api, ns, name).await?;
    let container = pick_container(&pod, q.container.as_deref())?;
    if q.tail_lines.is_some_and(|n| n < 0) {
        return Err(ApiError::bad_request("tailLines must be >= 0"));
    }
    if q.since_seconds.is_some_and(|n| n <= 0) {
        return Err(ApiError::bad_request("sinceSeconds must be > 0"));
    }
    let located = locate(api, &pod, &container).await?;
    let opts = LogOptions {
        tail: q.tail_lines.and_then(|n| u64::try_from(n).ok()),
        since: q.since_seconds.map(|s| crate::time::unix_now() - s),
        follow: q.follow,
        timestamps: q.timestamps,
    };
    let stream = located
        .runtime
        .logs(&located.container_id, &opts)
        .await
        .map_err(|e| runtime_error(name, &e))?;
    let body = Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// A runtime failure on a located container, as an API error.
pub(super) fn runtime_error(pod: &str, e: &RuntimeError) -> ApiError {
    match e {
        RuntimeError::Unavailable { .. } => engine_unavailable(e),
        RuntimeError::NotFound { .. } => ApiError::bad_request(format!(
            "the container of pod \"{pod}\" is gone (being replaced?); try again"
        )),
        RuntimeError::Conflict { message } => ApiError::bad_request(format!(
            "pod \"{pod}\": {message} (is the container running?)"
        )),
        other => ApiError::internal("the container engine failed", other),
    }
}

/// Parsed query of an exec: `container`, repeated `command`, `stdin`, `tty`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExecQuery {
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
    pub tty: bool,
}

impl ExecQuery {
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<ExecQuery, ApiError> {
        let mut q = ExecQuery::default();
        let flag = |k: &str, v: &str| match v {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "{k}={v}: expected true or false"
            ))),
        };
        for (k, v) in pairs {
            match k.as_str() {
                "container" => q.container = Some(v),
                "command" => q.command.push(v),
                "stdin" => q.stdin = flag(&k, &v)?,
                "tty" => q.tty = flag(&k, &v)?,
                // kubectl sends these too; output always goes back.
                "stdout" | "stderr" => {}
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown exec parameter \"{k}\": use container, command, stdin, tty"
                    )));
                }
            }
        }
        if q.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container (command=...)",
            ));
        }
        Ok(q)
    }
}

/// Where an exec runs, checked before anything is started.
pub struct ExecTarget {
    pub runtime: Arc<dyn Runtime>,
    pub container_id: String,
    pub pod: String,
}

pub async fn exec_target(
    api: &ApiState,
    ns: &str,
    name: &str,
    q: &ExecQuery,
) -> Result<ExecTarget, ApiError> {
    let (pod, _) = find(api, ns, name).await?;
    let container = pick_container(&pod, q.container.as_deref())?;
    let located = locate(api, &pod, &container).await?;
    Ok(ExecTarget {
        runtime: located.runtime,
        container_id: located.container_id,
        pod: name.to_string(),
    })
}

/// Non-interactive exec: runs the command to completion and answers its output.
pub async fn exec_output(target: &ExecTarget, q: &ExecQuery) -> Result<Value, ApiError> {
    let out = target
        .runtime
        .exec_output(&target.container_id, &q.command)
        .await
        .map_err(|e| runtime_error(&target.pod, &e))?;
    Ok(serde_json::json!({
        "exitCode": out.exit_code,
        "stdout": String::from_utf8_lossy(&out.stdout),
        "stderr": String::from_utf8_lossy(&out.stderr),
    }))
}
