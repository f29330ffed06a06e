//! The UI's pages and the fragments the page script reloads. Data comes from the API's own
//! handlers, called in process with the node's [`ApiState`]; what they refuse is shown with
//! the API's message.

use axum::Form;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Auth;
use super::render::{self, Frame};
use crate::api::{ApiError, ApiState, pods as api_pods, resources, status};

/// The most log lines a logs page shows (the newest).
const LOG_TAIL_LINES: i64 = 500;
/// The most bytes of log a logs page reads.
const LOG_MAX_BYTES: usize = 1024 * 1024;

/// A page's content, or the API's refusal.
type Content = Result<Markup, ApiError>;

fn now() -> i64 {
    crate::time::unix_now()
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

async fn list_core(api: &ApiState, plural: &str) -> Result<Vec<Value>, ApiError> {
    let axum::Json(v) = resources::list_core(
        State(api.clone()),
        Path(plural.to_string()),
        Query(resources::ListQuery::default()),
    )
    .await?;
    Ok(items(v))
}

async fn list_apps(api: &ApiState, plural: &str) -> Result<Vec<Value>, ApiError> {
    let axum::Json(v) = resources::list_group(
        State(api.clone()),
        Path(("apps".to_string(), "v1".to_string(), plural.to_string())),
        Query(resources::ListQuery::default()),
    )
    .await?;
    Ok(items(v))
}

/// The pages whose content reloads, by fragment name: path, title.
const LIVE: &[(&str, &str, &str)] = &[
    ("overview", "/", "Overview"),
    ("workloads", "/ui/workloads", "Workloads"),
    ("pods", "/ui/pods", "Pods"),
    ("services", "/ui/services", "Services"),
    ("config", "/ui/config", "ConfigMaps and Secrets"),
    ("events", "/ui/events", "Events"),
];

/// The content of a live page.
async fn content(api: &ApiState, name: &str) -> Content {
    let now = now();
    match name {
        "overview" => {
            let axum::Json(st) = status::status(State(api.clone())).await?;
            let nodes = list_core(api, "nodes").await?;
            Ok(render::overview(&st, &nodes, now))
        }
        "workloads" => {
            let deployments = list_apps(api, "deployments").await?;
            let statefulsets = list_apps(api, "statefulsets").await?;
            let token = Auth::from_ref(api).form_token();
            Ok(render::workloads(&deployments, &statefulsets, &token, now))
        }
        "pods" => Ok(render::pods(&list_core(api, "pods").await?, now)),
        "services" => {
            let services = list_core(api, "services").await?;
            let endpoints = list_core(api, "endpoints").await?;
            Ok(render::services(&services, &endpoints))
        }
        "config" => {
            let configmaps = list_core(api, "configmaps").await?;
            let secrets = list_core(api, "secrets").await?;
            Ok(render::config(&configmaps, &secrets, now))
        }
        "events" => {
            let mut events: Vec<Value> = api
                .events
                .list(&crate::events::Filter::default())
                .iter()
                .map(crate::events::Event::to_json)
                .collect();
            // The ring lists oldest first; people read newest first.
            events.reverse();
            events.truncate(200);
            Ok(render::events(&events, now))
        }
        _ => Err(ApiError::not_found_path(&format!("/ui/fragments/{name}"))),
    }
}

fn frame_parts(api: &ApiState) -> (String, String) {
    (api.node_name.to_string(), Auth::from_ref(api).form_token())
}

/// A live page: `notice` (if any) over the content, which reloads from its fragment.
async fn live_page(api: &ApiState, name: &str, notice: Option<Markup>) -> Response {
    let Some((_, path, title)) = LIVE.iter().find(|(n, _, _)| *n == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (code, body) = match content(api, name).await {
        Ok(m) => (StatusCode::OK, m),
        Err(e) => (code_of(&e), render::api_error(&e.0)),
    };
    let (node, token) = frame_parts(api);
    let frame = Frame {
        node: &node,
        form_token: &token,
    };
    let src = format!("/ui/fragments/{name}");
    let page = render::page(
        &frame,
        path,
        title,
        html! {
            @if let Some(n) = notice { (n) }
            (render::live(&src, body))
        },
    );
    (code, page).into_response()
}

fn code_of(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub async fn overview(State(api): State<ApiState>) -> Response {
    live_page(&api, "overview", None).await
}

pub async fn workloads(State(api): State<ApiState>) -> Response {
    live_page(&api, "workloads", None).await
}

pub async fn pods(State(api): State<ApiState>) -> Response {
    live_page(&api, "pods", None).await
}

pub async fn services(State(api): State<ApiState>) -> Response {
    live_page(&api, "services", None).await
}

pub async fn config(State(api): State<ApiState>) -> Response {
    live_page(&api, "config", None).await
}

pub async fn events(State(api): State<ApiState>) -> Response {
    live_page(&api, "events", None).await
}

/// `GET /ui/fragments/{name}`: a live page's content alone.
pub async fn fragment(State(api): State<ApiState>, Path(name): Path<String>) -> Response {
    match content(&api, &name).await {
        Ok(m) => m.into_response(),
        Err(e) => (code_of(&e), render::api_error(&e.0)).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    container: Option<String>,
}

/// The newest lines of a pod's container, through the same code as the API's log route:
/// it reads the local container engine, so a pod on another node is named, not shown.
async fn log_text(
    api: &ApiState,
    ns: &str,
    name: &str,
    container: Option<&str>,
) -> Result<String, String> {
    let mut q = json!({ "tailLines": LOG_TAIL_LINES });
    if let Some(c) = container.filter(|c| !c.is_empty()) {
        q["container"] = json!(c);
    }
    let q: api_pods::LogQuery = serde_json::from_value(q).map_err(|e| e.to_string())?;
    let res = api_pods::logs(api, ns, name, q)
        .await
        .map_err(|e| e.0.message.clone())?;
    let bytes = axum::body::to_bytes(res.into_body(), LOG_MAX_BYTES)
        .await
        .map_err(|e| format!("cannot read the log: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn logs_src(ns: &str, name: &str, container: Option<&str>) -> String {
    let mut src = format!(
        "/ui/fragments/logs/{}/{}",
        render::url_part(ns),
        render::url_part(name)
    );
    if let Some(c) = container.filter(|c| !c.is_empty()) {
        src.push_str(&format!("?container={}", render::url_part(c)));
    }
    src
}

/// `GET /ui/pods/{ns}/{name}/logs[?container=C]`.
pub async fn logs(
    State(api): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let text = log_text(&api, &ns, &name, q.container.as_deref()).await;
    let (node, token) = frame_parts(&api);
    let frame = Frame {
        node: &node,
        form_token: &token,
    };
    let title = format!("Logs of {ns}/{name}");
    let containers = pod_containers(&api, &ns, &name).await;
    let body = html! {
        p.hint {
            "The newest " (LOG_TAIL_LINES) " lines, reloaded every 2 s. "
            a href="/ui/pods" { "Back to the pods" }
        }
        @if containers.len() > 1 {
            p {
                "Container: "
                @for c in &containers {
                    a href={ "?container=" (render::url_part(c)) } { (c) } " "
                }
            }
        }
        (render::live(&logs_src(&ns, &name, q.container.as_deref()), render::logs(text.as_deref().map_err(String::as_str))))
    };
    render::page(&frame, "/ui/pods", &title, body).into_response()
}

/// The container names of a pod (for the container links), or none if it is not found.
async fn pod_containers(api: &ApiState, ns: &str, name: &str) -> Vec<String> {
    match api_pods::get(api, ns, name).await {
        Ok(p) => p
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// `GET /ui/fragments/logs/{ns}/{name}[?container=C]`.
pub async fn logs_fragment(
    State(api): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Markup {
    let text = log_text(&api, &ns, &name, q.container.as_deref()).await;
    render::logs(text.as_deref().map_err(String::as_str))
}

fn apply_page(api: &ApiState, manifest: &str, result: Option<Markup>) -> Markup {
    let (node, token) = frame_parts(api);
    let frame = Frame {
        node: &node,
        form_token: &token,
    };
    render::page(
        &frame,
        "/ui/apply",
        "Apply a manifest",
        html! {
            @if let Some(r) = result { (r) }
            (render::apply_form(&token, manifest))
        },
    )
}

/// `GET /ui/apply`.
pub async fn apply_form(State(api): State<ApiState>) -> Markup {
    apply_page(&api, "", None)
}

#[derive(Debug, Default, Deserialize)]
pub struct ApplyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    manifest: String,
}

/// `POST /ui/apply`: the manifest through the API's batch apply (all or nothing). The page
/// lists what changed; a refused manifest stays in the form under the API's message.
pub async fn apply(
    State(api): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<ApplyForm>,
) -> Response {
    if let Err(refused) = Auth::from_ref(&api).check_form(&headers, &form.csrf) {
        return *refused;
    }
    // Browsers send text areas with CR LF line ends.
    let manifest = form.manifest.replace("\r\n", "\n");
    let result = resources::apply_batch(
        State(api.clone()),
        Query(resources::ApplyQuery::default()),
        Ok(Bytes::from(manifest.clone())),
    )
    .await;
    match result {
        Ok(axum::Json(r)) => {
            apply_page(&api, "", Some(render::apply_result(&r.items))).into_response()
        }
        Err(e) => (
            code_of(&e),
            apply_page(&api, &manifest, Some(render::api_error(&e.0))),
        )
            .into_response(),
    }
}

/// The kinds the UI scales or deletes: form value, API group, display name, the page that
/// lists them.
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("deployments", "apps", "deployment", "workloads"),
    ("statefulsets", "apps", "statefulset", "workloads"),
    ("pods", "", "pod", "pods"),
    ("services", "", "service", "services"),
    ("configmaps", "", "configmap", "config"),
    ("secrets", "", "secret", "config"),
];

fn kind_of(plural: &str) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
    KINDS.iter().copied().find(|(p, ..)| *p == plural)
}

fn bad_form(what: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        render::message_page("Bad request", what),
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct ScaleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    replicas: String,
}

/// `POST /ui/scale`: the API's `scale` subresource; answers the workloads page with the
/// outcome.
pub async fn scale(
    State(api): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<ScaleForm>,
) -> Response {
    if let Err(refused) = Auth::from_ref(&api).check_form(&headers, &form.csrf) {
        return *refused;
    }
    if !matches!(form.kind.as_str(), "deployments" | "statefulsets") {
        return bad_form("only deployments and statefulsets can be scaled");
    }
    let Ok(replicas) = form.replicas.trim().parse::<i64>() else {
        return bad_form(&format!(
            "replicas must be a whole number >= 0, got \"{}\"",
            form.replicas
        ));
    };
    let body = json!({ "spec": { "replicas": replicas } }).to_string();
    let result = resources::group_sub_ns(
        State(api.clone()),
        Method::PUT,
        Path((
            "apps".to_string(),
            "v1".to_string(),
            form.namespace.clone(),
            form.kind.clone(),
            form.name.clone(),
            "scale".to_string(),
        )),
        Ok(Bytes::from(body)),
    )
    .await;
    let notice = match result {
        Ok(_) => render::notice(
            true,
            &format!(
                "Scaled {} {}/{} to {replicas}.",
                form.kind.trim_end_matches('s'),
                form.namespace,
                form.name
            ),
        ),
        Err(e) => render::api_error(&e.0),
    };
    live_page(&api, "workloads", Some(notice)).await
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

/// `GET /ui/delete?kind=&namespace=&name=`: asks first.
pub async fn delete_confirm(State(api): State<ApiState>, Query(q): Query<DeleteForm>) -> Response {
    let Some((plural, _, display, page)) = kind_of(&q.kind) else {
        return bad_form(&format!("cannot delete \"{}\" from the web UI", q.kind));
    };
    let back = LIVE
        .iter()
        .find(|(n, ..)| *n == page)
        .map_or("/", |(_, p, _)| *p);
    let (node, token) = frame_parts(&api);
    let frame = Frame {
        node: &node,
        form_token: &token,
    };
    let title = format!("Delete {display} {}", q.name);
    render::page(
        &frame,
        back,
        &title,
        render::delete_confirm(&token, plural, display, &q.namespace, &q.name, back),
    )
    .into_response()
}

/// `POST /ui/delete`: the API's delete; answers the page that lists the kind.
pub async fn delete(
    State(api): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<DeleteForm>,
) -> Response {
    if let Err(refused) = Auth::from_ref(&api).check_form(&headers, &form.csrf) {
        return *refused;
    }
    let Some((plural, group, display, page)) = kind_of(&form.kind) else {
        return bad_form(&format!("cannot delete \"{}\" from the web UI", form.kind));
    };
    let result = if group.is_empty() {
        resources::delete_core_ns(
            State(api.clone()),
            Path((
                form.namespace.clone(),
                plural.to_string(),
                form.name.clone(),
            )),
        )
        .await
    } else {
        resources::delete_group_ns(
            State(api.clone()),
            Path((
                group.to_string(),
                "v1".to_string(),
                form.namespace.clone(),
                plural.to_string(),
                form.name.clone(),
            )),
        )
        .await
    };
    let notice = match result {
        Ok(_) => render::notice(
            true,
            &format!("Deleted {display} {}/{}.", form.namespace, form.name),
        ),
        Err(e) => render::api_error(&e.0),
    };
    live_page(&api, page, Some(notice)).await
}
