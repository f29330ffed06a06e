//! Resource routes: batch apply, and get, list, put, post and delete in Kubernetes' REST
//! layout. Objects leave merged with their observed status.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_protocol::api::{ApplyAction, ApplyResponse};
use shoal_protocol::selector::LabelSelector;
use shoal_protocol::{FieldError, Kind, Resource, manifest};

use super::error::ApiError;
use super::workloads::{self, StatusInputs};
use super::{ApiState, exec, nodes, pods, services};
use crate::state::StoredObject;

/// The namespace objects go to when neither the manifest nor the request names one.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyQuery {
    /// Like kubectl's `-n`: objects without a namespace go there, and an object that names
    /// another one is an error.
    namespace: Option<String>,
    /// Like a kubectl context's namespace: objects without a namespace go there; objects that
    /// name one keep it.
    default_namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    label_selector: Option<String>,
}

/// `POST /shoal/v1/apply`: a multi-document manifest, applied all-or-nothing.
pub async fn apply_batch(
    State(api): State<ApiState>,
    Query(q): Query<ApplyQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let text = body_text(body)?;
    for ns in [&q.namespace, &q.default_namespace].into_iter().flatten() {
        check_namespace_name(ns)?;
    }
    let mut batch = manifest::parse(&text)?;
    set_namespaces(
        &mut batch,
        q.namespace.as_deref(),
        q.default_namespace.as_deref(),
    )?;
    check_replicas(&api, &batch)?;
    check_service_ports(&api, &batch).await?;
    let items = api.state.apply(batch).await?;
    for r in &items {
        if r.action != ApplyAction::Unchanged {
            tracing::info!(kind = %r.kind, namespace = ?r.namespace, name = %r.name,
                action = r.action.as_str(), "applied");
        }
    }
    Ok(Json(ApplyResponse { items }))
}

/// Refuses a batch with a NodePort or LoadBalancer Service whose node-facing port another
/// Service already takes (ports are cluster-wide: every node listens on each Service's port).
/// Nothing is applied then. ClusterIP Services are not refused: Kubernetes manifests give
/// several of them one port (the guestbook's two Redis Services), which Kubernetes tells
/// apart by cluster IP; there the port's node listener goes to the first by namespace/name
/// and the other is logged.
/// Refuses a workload that asks for more replicas than the node's `max-replicas` (nothing of
/// the batch is applied).
fn check_replicas(api: &ApiState, batch: &[shoal_protocol::Resource]) -> Result<(), ApiError> {
    for r in batch {
        let replicas = match r {
            shoal_protocol::Resource::Deployment(d) => d.spec.replicas,
            shoal_protocol::Resource::StatefulSet(s) => s.spec.replicas,
            shoal_protocol::Resource::ReplicaSet(s) => s.spec.replicas,
            _ => continue,
        };
        if let Some(why) = too_many_replicas(i64::from(replicas), api.max_replicas) {
            return Err(ApiError::invalid(
                format!(
                    "{} {}: spec.replicas {why}; nothing was applied",
                    r.kind(),
                    r.name()
                ),
                vec![shoal_protocol::FieldError::new("spec.replicas", why)],
            ));
        }
    }
    Ok(())
}

/// Why `replicas` is refused under the bound `max`, if it is. Pure.
pub fn too_many_replicas(replicas: i64, max: u32) -> Option<String> {
    (replicas > i64::from(max)).then(|| {
        format!(
            "must be at most {max} (this node's max-replicas setting), got {replicas}: a \
             replica count that large is most likely a typo"
        )
    })
}

async fn check_service_ports(
    api: &ApiState,
    batch: &[shoal_protocol::Resource],
) -> Result<(), ApiError> {
    let new: Vec<&shoal_protocol::kinds::Service> = batch
        .iter()
        .filter_map(|r| match r {
            shoal_protocol::Resource::Service(s)
                if matches!(
                    s.spec.type_,
                    shoal_protocol::kinds::ServiceType::NodePort
                        | shoal_protocol::kinds::ServiceType::LoadBalancer
                ) =>
            {
                Some(s)
            }
            _ => None,
        })
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let key = |s: &shoal_protocol::kinds::Service| {
        (s.metadata.namespace.clone(), s.metadata.name.clone())
    };
    let replaced: std::collections::BTreeSet<_> = new.iter().map(|s| key(s)).collect();
    let mut others: Vec<shoal_protocol::kinds::Service> = crate::dns::feed::services(&api.state)
        .await?
        .into_iter()
        .filter(|s| !replaced.contains(&key(s)))
        .collect();
    for s in new {
        if let Some(why) = crate::proxy::port_conflict(s, &others) {
            return Err(ApiError::invalid(
                format!("{why}; nothing was applied"),
                vec![shoal_protocol::FieldError::new("spec.ports", why)],
            ));
        }
        others.push(s.clone());
    }
    Ok(())
}

fn body_text(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "RequestEntityTooLarge",
                "the request body is larger than the node accepts (api-max-body-bytes); \
                 split the manifest into several files",
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {rejection}"))
        }
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8 text"))
}

pub(crate) fn check_namespace_name(ns: &str) -> Result<(), ApiError> {
    if crate::config::is_dns_label(ns) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "namespace \"{ns}\" is not a valid name: lower-case letters, digits and '-', \
             at most 63 characters"
        )))
    }
}

/// Gives namespaced objects the request's namespace (else its default namespace, else
/// `default`) when they name none, and refuses a manifest namespace that contradicts an
/// enforced request namespace, as kubectl does for `-n`.
fn set_namespaces(
    batch: &mut [Resource],
    request_ns: Option<&str>,
    default_ns: Option<&str>,
) -> Result<(), ApiError> {
    let fill = request_ns.or(default_ns).unwrap_or(DEFAULT_NAMESPACE);
    let mut errors = Vec::new();
    for r in batch.iter_mut() {
        let kind = r.kind();
        let display = format!("{}/{}", kind.display(), r.name());
        let meta = r.meta_mut();
        if !kind.namespaced() {
            meta.namespace = None;
            continue;
        }
        match (&meta.namespace, request_ns) {
            (Some(own), Some(req)) if own != req => errors.push(FieldError::new(
                "metadata.namespace",
                format!(
                    "{display}: the manifest says namespace \"{own}\" but the request says \
                     \"{req}\"; drop one of them"
                ),
            )),
            (Some(_), _) => {}
            (None, _) => meta.namespace = Some(fill.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "namespaces disagree; nothing was applied",
            errors,
        ))
    }
}

/// What a path names.
struct Target {
    kind: Kind,
    namespace: Option<String>,
}

fn resolve(
    group: &str,
    version: &str,
    plural: &str,
    ns: Option<String>,
) -> Result<Target, ApiError> {
    let kind = Kind::from_path(group, plural)
        .filter(|_| version == "v1")
        .ok_or_else(|| {
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            ApiError::not_found_path(&format!("{prefix}/{plural}"))
        })?;
    if ns.is_some() && !kind.namespaced() {
        return Err(ApiError::not_found_path(&format!(
            "{} is not namespaced",
            kind.plural()
        )));
    }
    if let Some(ns) = &ns {
        check_namespace_name(ns)?;
    }
    Ok(Target {
        kind,
        namespace: ns,
    })
}

/// A named object of a namespaced kind needs a namespace in its path.
fn resolve_object(
    group: &str,
    version: &str,
    plural: &str,
    ns: Option<String>,
) -> Result<Target, ApiError> {
    let t = resolve(group, version, plural, ns)?;
    if t.kind.namespaced() && t.namespace.is_none() {
        return Err(ApiError::not_found_path(&format!(
            "{} is namespaced: use /namespaces/NS/{}/NAME",
            t.kind.plural(),
            t.kind.plural()
        )));
    }
    Ok(t)
}

async fn list(api: &ApiState, t: Target, q: ListQuery) -> Result<Json<Value>, ApiError> {
    let selector = match q.label_selector.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?),
        None => None,
    };
    let items = if t.kind == Kind::Node {
        nodes::list(api).await?
    } else if t.kind == Kind::Pod {
        pods::list(api, t.namespace.as_deref()).await?
    } else if t.kind == Kind::Endpoints {
        services::list_endpoints(api, t.namespace.as_deref()).await?
    } else if t.kind == Kind::Event {
        super::events::list(api, t.namespace.as_deref())
    } else if t.kind == Kind::Service {
        let inputs = services::ServiceInputs::load(api).await?;
        api.state
            .list(t.kind, t.namespace.as_deref())
            .await?
            .into_iter()
            .map(|o| service_with_status(&inputs, o))
            .collect()
    } else {
        let inputs = StatusInputs::load_for(api, t.kind).await?;
        api.state
            .list(t.kind, t.namespace.as_deref())
            .await?
            .into_iter()
            .map(|o| with_status(inputs.as_ref(), o))
            .collect()
    };
    let items: Vec<Value> = items
        .into_iter()
        .filter(|v| selector.as_ref().is_none_or(|s| s.matches(&labels_of(v))))
        .collect();
    Ok(Json(json!({
        "apiVersion": t.kind.api_version(),
        "kind": t.kind.list_kind(),
        "metadata": {},
        "items": items,
    })))
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

async fn get_one(api: &ApiState, t: Target, name: &str) -> Result<Json<Value>, ApiError> {
    if t.kind == Kind::Node {
        return nodes::get(api, name).await.map(Json);
    }
    if t.kind == Kind::Pod {
        let ns = t.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        return pods::get(api, ns, name).await.map(Json);
    }
    if t.kind == Kind::Endpoints {
        let ns = t.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        return services::get_endpoints(api, ns, name).await.map(Json);
    }
    if t.kind == Kind::Event {
        let ns = t.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        return super::events::get(api, ns, name).map(Json);
    }
    if t.kind == Kind::Service {
        let inputs = services::ServiceInputs::load(api).await?;
        return match api.state.get(t.kind, t.namespace.as_deref(), name).await? {
            Some(o) => Ok(Json(service_with_status(&inputs, o))),
            None => Err(ApiError::not_found(t.kind, t.namespace.as_deref(), name)),
        };
    }
    let inputs = StatusInputs::load_for(api, t.kind).await?;
    match api.state.get(t.kind, t.namespace.as_deref(), name).await? {
        Some(o) => Ok(Json(with_status(inputs.as_ref(), o))),
        None => Err(ApiError::not_found(t.kind, t.namespace.as_deref(), name)),
    }
}

async fn delete_one(api: &ApiState, t: Target, name: &str) -> Result<Json<Value>, ApiError> {
    if t.kind == Kind::Event {
        return Err(super::events::read_only());
    }
    if t.kind == Kind::Node {
        return nodes::delete(api, name).await.map(Json);
    }
    if t.kind == Kind::Endpoints {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "endpoints are computed from the Service's selector and the ready pods: change or \
             delete the service",
        ));
    }
    if t.kind == Kind::ReplicaSet {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "replicasets belong to their Deployment: scale, change or delete the deployment",
        ));
    }
    if t.kind == Kind::Pod {
        let ns = t.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        if let Some(deleted) = pods::delete_statefulset_pod(api, ns, name).await? {
            return Ok(Json(deleted));
        }
        pods::check_delete(api, ns, name).await?;
    }
    match api
        .state
        .delete(t.kind, t.namespace.as_deref(), name)
        .await?
    {
        Some(o) => {
            tracing::info!(kind = %t.kind, namespace = ?t.namespace, name, "deleted");
            Ok(Json(o.value))
        }
        None => Err(ApiError::not_found(t.kind, t.namespace.as_deref(), name)),
    }
}

/// `PUT` of one object at its path, or `POST` to its collection: an apply of one object that
/// must agree with the path.
async fn put_one(
    api: &ApiState,
    t: Target,
    name: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = body_text(body)?;
    let mut batch = manifest::parse(&text)?;
    if batch.len() != 1 {
        return Err(ApiError::bad_request(format!(
            "expected exactly one object in the body, got {}; use {} for several",
            batch.len(),
            shoal_protocol::api::APPLY_PATH
        )));
    }
    let r = &batch[0];
    if r.kind() != t.kind {
        return Err(ApiError::bad_request(format!(
            "the body is a {} but the path is for {}",
            r.kind(),
            t.kind.plural()
        )));
    }
    if let Some(name) = name
        && r.name() != name
    {
        return Err(ApiError::bad_request(format!(
            "the body names \"{}\" but the path names \"{name}\"",
            r.name()
        )));
    }
    set_namespaces(&mut batch, t.namespace.as_deref(), None)?;
    let (kind, ns, obj_name) = (
        batch[0].kind(),
        batch[0].namespace().map(str::to_string),
        batch[0].name().to_string(),
    );
    check_replicas(api, &batch)?;
    check_service_ports(api, &batch).await?;
    let results = api.state.apply(batch).await?;
    let created = results
        .first()
        .is_some_and(|r| r.action == ApplyAction::Created);
    let Json(obj) = get_one(
        api,
        Target {
            kind,
            namespace: ns,
        },
        &obj_name,
    )
    .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(obj)).into_response())
}

/// Merges an object of desired state with what is observed of it. `inputs` are loaded for
/// the kinds whose status the controllers compute.
/// A stored Service with its computed status.
fn service_with_status(inputs: &services::ServiceInputs, o: StoredObject) -> Value {
    let status = match shoal_protocol::Resource::from_value(o.kind, o.value.clone()) {
        Ok(shoal_protocol::Resource::Service(s)) => Some(inputs.status_of(&s)),
        _ => None,
    };
    let mut v = o.value;
    if let (Some(status), Value::Object(map)) = (status, &mut v) {
        map.insert("status".into(), status);
    }
    v
}

fn with_status(inputs: Option<&StatusInputs>, o: StoredObject) -> Value {
    let status = match o.kind {
        Kind::Namespace => Some(json!({ "phase": "Active" })),
        _ => inputs.and_then(|i| i.status_of(&o)),
    };
    let mut v = o.value;
    if let (Some(status), Value::Object(map)) = (status, &mut v) {
        map.insert("status".into(), status);
    }
    v
}

// Route adapters: axum needs one function per path shape.

pub async fn list_core(
    State(api): State<ApiState>,
    Path(plural): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list(&api, resolve("", "v1", &plural, None)?, q).await
}

pub async fn list_core_ns(
    State(api): State<ApiState>,
    Path((ns, plural)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list(&api, resolve("", "v1", &plural, Some(ns))?, q).await
}

pub async fn list_group(
    State(api): State<ApiState>,
    Path((group, version, plural)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list(&api, resolve(&group, &version, &plural, None)?, q).await
}

pub async fn list_group_ns(
    State(api): State<ApiState>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list(&api, resolve(&group, &version, &plural, Some(ns))?, q).await
}

pub async fn get_core(
    State(api): State<ApiState>,
    Path((plural, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    get_one(&api, resolve_object("", "v1", &plural, None)?, &name).await
}

pub async fn get_core_ns(
    State(api): State<ApiState>,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    get_one(&api, resolve_object("", "v1", &plural, Some(ns))?, &name).await
}

pub async fn get_group(
    State(api): State<ApiState>,
    Path((group, version, plural, name)): Path<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    get_one(
        &api,
        resolve_object(&group, &version, &plural, None)?,
        &name,
    )
    .await
}

pub async fn get_group_ns(
    State(api): State<ApiState>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let t = resolve_object(&group, &version, &plural, Some(ns))?;
    get_one(&api, t, &name).await
}

pub async fn delete_core(
    State(api): State<ApiState>,
    Path((plural, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    delete_one(&api, resolve_object("", "v1", &plural, None)?, &name).await
}

pub async fn delete_core_ns(
    State(api): State<ApiState>,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    delete_one(&api, resolve_object("", "v1", &plural, Some(ns))?, &name).await
}

pub async fn delete_group(
    State(api): State<ApiState>,
    Path((group, version, plural, name)): Path<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    delete_one(
        &api,
        resolve_object(&group, &version, &plural, None)?,
        &name,
    )
    .await
}

pub async fn delete_group_ns(
    State(api): State<ApiState>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let t = resolve_object(&group, &version, &plural, Some(ns))?;
    delete_one(&api, t, &name).await
}

pub async fn put_core(
    State(api): State<ApiState>,
    Path((plural, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    put_one(
        &api,
        resolve_object("", "v1", &plural, None)?,
        Some(&name),
        body,
    )
    .await
}

pub async fn put_core_ns(
    State(api): State<ApiState>,
    Path((ns, plural, name)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = resolve_object("", "v1", &plural, Some(ns))?;
    put_one(&api, t, Some(&name), body).await
}

pub async fn put_group(
    State(api): State<ApiState>,
    Path((group, version, plural, name)): Path<(String, String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = resolve_object(&group, &version, &plural, None)?;
    put_one(&api, t, Some(&name), body).await
}

pub async fn put_group_ns(
    State(api): State<ApiState>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = resolve_object(&group, &version, &plural, Some(ns))?;
    put_one(&api, t, Some(&name), body).await
}

pub async fn post_core_ns(
    State(api): State<ApiState>,
    Path((ns, plural)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    put_one(
        &api,
        resolve_object("", "v1", &plural, Some(ns))?,
        None,
        body,
    )
    .await
}

pub async fn post_group_ns(
    State(api): State<ApiState>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = resolve_object(&group, &version, &plural, Some(ns))?;
    put_one(&api, t, None, body).await
}

/// `/api/v1/namespaces/{ns}/{plural}/{name}/{sub}`: a pod's `log` and `exec`.
pub async fn core_sub_ns(
    State(api): State<ApiState>,
    Path((ns, plural, name, sub)): Path<(String, String, String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let t = resolve_object("", "v1", &plural, Some(ns.clone()))?;
    match (t.kind, sub.as_str(), req.method()) {
        (Kind::Pod, "log", &Method::GET) => {
            let Query(q) = Query::<pods::LogQuery>::try_from_uri(req.uri())
                .map_err(|e| ApiError::bad_request(format!("bad log parameters: {e}")))?;
            pods::logs(&api, &ns, &name, q).await
        }
        (Kind::Pod, "exec", &Method::GET | &Method::POST) => {
            exec::exec(&api, &ns, &name, req).await
        }
        (Kind::Pod, "log" | "exec", _) => Err(method_not_allowed(req.method(), &sub)),
        _ => Err(ApiError::not_found_path(req.uri().path())),
    }
}

/// `/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/{sub}`: the `scale` subresource.
pub async fn group_sub_ns(
    State(api): State<ApiState>,
    method: Method,
    Path((group, version, ns, plural, name, sub)): Path<(
        String,
        String,
        String,
        String,
        String,
        String,
    )>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let t = resolve_object(&group, &version, &plural, Some(ns.clone()))?;
    if sub != "scale" || !workloads::scalable(t.kind) {
        return Err(ApiError::not_found_path(&format!(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/{sub}"
        )));
    }
    match method {
        Method::GET => workloads::get_scale(&api, t.kind, &ns, &name)
            .await
            .map(Json),
        Method::PUT => workloads::put_scale(&api, t.kind, &ns, &name, body)
            .await
            .map(Json),
        other => Err(method_not_allowed(&other, &sub)),
    }
}

fn method_not_allowed(method: &Method, sub: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not allowed on {sub}: see docs/api.md"),
    )
}
