//! Workload routes beyond plain objects: the observed `status` of Deployments, ReplicaSets
//! and StatefulSets (computed by the controllers' status functions, never stored), the `scale`
//! subresource, and rollback.
//!
//! It decides nothing itself: status and rollback templates come from
//! [`crate::controllers`]; writes go through the state store's apply, so a scale or a rollback
//! bumps `generation` like any other change of the spec.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_protocol::cluster::Slot;
use shoal_protocol::kinds::{Deployment, ReplicaSet};
use shoal_protocol::{Kind, Resource};

use super::ApiState;
use super::error::ApiError;
use crate::controllers::{self, PodStatuses};
use crate::pods::typed;
use crate::state::StoredObject;

/// What the status functions read, loaded once per request.
pub struct StatusInputs {
    replicasets: Vec<ReplicaSet>,
    slots: Vec<Slot>,
    observed: PodStatuses,
    now: i64,
}

impl StatusInputs {
    /// Loads the inputs when `kind` has a computed status, else None.
    pub async fn load_for(api: &ApiState, kind: Kind) -> Result<Option<StatusInputs>, ApiError> {
        if !matches!(
            kind,
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet
        ) {
            return Ok(None);
        }
        Ok(Some(StatusInputs::load(api).await?))
    }

    pub async fn load(api: &ApiState) -> Result<StatusInputs, ApiError> {
        let replicasets = typed(&api.state, Kind::ReplicaSet, |r| match r {
            Resource::ReplicaSet(rs) => Some(rs),
            _ => None,
        })
        .await?;
        Ok(StatusInputs {
            replicasets,
            slots: api.state.slots().await?,
            observed: api.observed.pods(),
            now: crate::time::unix_now(),
        })
    }

    fn replicasets_in(&self, ns: &str) -> Vec<ReplicaSet> {
        self.replicasets
            .iter()
            .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns))
            .cloned()
            .collect()
    }

    fn slots_in(&self, ns: &str) -> Vec<Slot> {
        self.slots
            .iter()
            .filter(|s| s.namespace == ns)
            .cloned()
            .collect()
    }

    /// The computed status of a stored Deployment or ReplicaSet; None for other kinds or an
    /// object this version cannot read.
    pub fn status_of(&self, o: &StoredObject) -> Option<Value> {
        let ns = o
            .value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match Resource::from_value(o.kind, o.value.clone()) {
            Ok(Resource::Deployment(d)) => Some(controllers::deployment_status(
                &d,
                &self.replicasets_in(ns),
                &self.slots_in(ns),
                &self.observed,
                self.now,
            )),
            Ok(Resource::StatefulSet(s)) => Some(controllers::statefulset::statefulset_status(
                &s,
                &self.slots_in(ns),
                &self.observed,
                self.now,
            )),
            Ok(Resource::ReplicaSet(rs)) => Some(controllers::replicaset_status(
                &rs,
                &self.slots_in(ns),
                &self.observed,
                self.now,
            )),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(kind = %o.kind, error = %e, "stored object unreadable; no status");
                None
            }
        }
    }
}

/// The kinds with a `scale` subresource.
pub fn scalable(kind: Kind) -> bool {
    matches!(kind, Kind::Deployment | Kind::StatefulSet)
}

/// `GET .../{deployments|statefulsets}/{name}/scale`.
pub async fn get_scale(
    api: &ApiState,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let o = stored(api, kind, ns, name).await?;
    let inputs = StatusInputs::load_for(api, kind).await?;
    let status = inputs.as_ref().and_then(|i| i.status_of(&o));
    Ok(scale_of(
        &o.value,
        status.as_ref(),
        inputs.as_ref(),
        ns,
        name,
    ))
}

/// `PUT .../{name}/scale` with a Scale body: rewrites `spec.replicas` of the stored object.
pub async fn put_scale(
    api: &ApiState,
    kind: Kind,
    ns: &str,
    name: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    let scale: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a Scale object ({e}); send {{\"spec\": {{\"replicas\": N}}}}"
        ))
    })?;
    let replicas = parse_replicas(&scale)?;
    if let Some(why) = super::resources::too_many_replicas(replicas, api.max_replicas) {
        return Err(ApiError::invalid(
            format!("spec.replicas {why}; nothing was changed"),
            vec![shoal_protocol::FieldError::new("spec.replicas", why)],
        ));
    }
    if let Some(body_name) = scale.pointer("/metadata/name").and_then(Value::as_str)
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the body names \"{body_name}\" but the path names \"{name}\""
        )));
    }
    let o = stored(api, kind, ns, name).await?;
    let mut value = o.value;
    match value.pointer_mut("/spec") {
        Some(Value::Object(spec)) => {
            spec.insert("replicas".into(), Value::from(replicas));
        }
        _ => {
            return Err(ApiError::internal(
                "the stored object has no spec",
                &std::io::Error::other(format!("{kind} {ns}/{name}")),
            ));
        }
    }
    let results = api.state.apply_values(vec![(kind, value)]).await?;
    if let Some(r) = results.first() {
        tracing::info!(kind = %kind, namespace = ns, name, replicas,
            action = r.action.as_str(), "scaled");
    }
    get_scale(api, kind, ns, name).await
}

/// `spec.replicas` of a Scale body: a whole number 0..=2^31-1.
pub fn parse_replicas(scale: &Value) -> Result<i64, ApiError> {
    let field = scale.pointer("/spec/replicas").ok_or_else(|| {
        ApiError::invalid(
            "spec.replicas: required",
            vec![shoal_protocol::FieldError::new("spec.replicas", "required")],
        )
    })?;
    match field.as_i64() {
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(
            format!("spec.replicas: must be a whole number >= 0, got {field}"),
            vec![shoal_protocol::FieldError::new(
                "spec.replicas",
                format!("must be a whole number >= 0, got {field}"),
            )],
        )),
    }
}

/// Kubernetes' `autoscaling/v1` Scale of an object.
fn scale_of(
    obj: &Value,
    status: Option<&Value>,
    inputs: Option<&StatusInputs>,
    ns: &str,
    name: &str,
) -> Value {
    let spec_replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    // Replicas that exist: the Deployment's status says; for other kinds, count the slots
    // owned by an object of that name (a StatefulSet's own pods).
    let replicas = status
        .and_then(|s| s.get("replicas"))
        .and_then(Value::as_i64)
        .or_else(|| {
            inputs.map(|i| {
                i.slots
                    .iter()
                    .filter(|s| s.namespace == ns && s.owner_name == name)
                    .count() as i64
            })
        })
        .unwrap_or(0);
    let mut meta = json!({"name": name, "namespace": ns});
    for field in ["uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = obj.pointer(&format!("/metadata/{field}")) {
            meta[field] = v.clone();
        }
    }
    let mut status = json!({ "replicas": replicas });
    if let Some(sel) = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
    {
        let text: Vec<String> = sel
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        status["selector"] = Value::from(text.join(","));
    }
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": meta,
        "spec": {"replicas": spec_replicas},
        "status": status,
    })
}

async fn stored(
    api: &ApiState,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<StoredObject, ApiError> {
    api.state
        .get(kind, Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found(kind, Some(ns), name))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackBody {
    /// 0 or absent: the revision before the current one.
    #[serde(default)]
    to_revision: Option<i64>,
}

/// `POST /shoal/v1/namespaces/{ns}/deployments/{name}/rollback` with `{"toRevision": N}`:
/// writes the Deployment back with the template of that revision. Answers the Deployment.
pub async fn rollback(
    State(api): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let bytes = body.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    let req: RollbackBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be {{\"toRevision\": N}} (0 or absent: the previous revision): {e}"
            ))
        })?
    };
    let to_revision = match req.to_revision {
        None | Some(0) => None,
        Some(n) if n < 0 => {
            return Err(ApiError::bad_request(format!(
                "toRevision must be a revision number >= 0, got {n}"
            )));
        }
        Some(n) => Some(n),
    };
    let o = stored(&api, Kind::Deployment, &ns, &name).await?;
    let deployment: Deployment = match Resource::from_value(Kind::Deployment, o.value.clone()) {
        Ok(Resource::Deployment(d)) => d,
        Ok(_) | Err(_) => {
            return Err(ApiError::internal(
                "the stored deployment cannot be read",
                &std::io::Error::other(format!("{ns}/{name}")),
            ));
        }
    };
    let inputs = StatusInputs::load(&api).await?;
    let replicasets = inputs.replicasets_in(&ns);
    if let Some(n) = to_revision {
        let known = replicasets
            .iter()
            .any(|rs| controllers::owns(&deployment, rs) && controllers::revision(rs) == n);
        if !known {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!(
                    "deployment \"{name}\" has no revision {n}: see shoal rollout history \
                     deploy/{name}"
                ),
            ));
        }
    }
    let template = controllers::rollback_template(&deployment, &replicasets, to_revision).map_err(
        |message| {
            ApiError::bad_request(format!("cannot roll back deployment \"{name}\": {message}"))
        },
    )?;
    let mut value = o.value;
    let template = serde_json::to_value(&template)
        .map_err(|e| ApiError::internal("cannot encode the pod template", &e))?;
    if let Some(Value::Object(spec)) = value.pointer_mut("/spec") {
        spec.insert("template".into(), template);
    }
    let results = api
        .state
        .apply_values(vec![(Kind::Deployment, value)])
        .await?;
    let action = results.first().map_or("unchanged", |r| r.action.as_str());
    tracing::info!(namespace = %ns, name = %name, to_revision = ?to_revision, action,
        "rolled back");
    let o = stored(&api, Kind::Deployment, &ns, &name).await?;
    let inputs = StatusInputs::load(&api).await?;
    let mut v = o.value.clone();
    if let (Some(status), Value::Object(map)) = (inputs.status_of(&o), &mut v) {
        map.insert("status".into(), status);
    }
    Ok(Json(v))
}
