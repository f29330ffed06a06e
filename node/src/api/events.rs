//! Event routes: Kubernetes' `GET /api/v1/events` and `GET /api/v1/namespaces/{ns}/events`
//! (an `EventList`, oldest first by last time seen), one event by name, and `?watch=true`,
//! which streams newline-delimited watch events (`{"type":"ADDED","object":{...}}`): first
//! every event that matches, then, with `allowWatchBookmarks=true`, a `BOOKMARK` marking the
//! end of those (annotation `k8s.io/initial-events-end`), then new events (`ADDED`) and new
//! versions of events (`MODIFIED`: a repeat folded into one) as they come.
//!
//! `?fieldSelector=` takes `involvedObject.kind`, `involvedObject.name`,
//! `involvedObject.namespace`, `metadata.namespace`, `reason` and `type`, joined by commas,
//! each as `field=value` or `field==value`.
//!
//! Events are read-only: they are recorded by the nodes (see [`crate::events`]); writes are
//! refused with 405.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_protocol::Kind;
use tokio::sync::broadcast::error::RecvError;

use super::ApiState;
use super::error::ApiError;
use crate::events::{Change, Event, Filter};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsQuery {
    field_selector: Option<String>,
    label_selector: Option<String>,
    watch: Option<String>,
    allow_watch_bookmarks: Option<String>,
}

/// `GET /api/v1/events`: the events of every namespace.
pub async fn list_all(
    State(api): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    list_or_watch(&api, None, q)
}

/// `GET /api/v1/namespaces/{ns}/events`.
pub async fn list_ns(
    State(api): State<ApiState>,
    Path(ns): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    list_or_watch(&api, Some(ns), q)
}

/// `GET /api/v1/namespaces/{ns}/events/{name}`.
pub async fn get_ns(
    State(api): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    get(&api, &ns, &name).map(Json)
}

/// Writes to events: refused.
pub async fn refuse() -> ApiError {
    read_only()
}

/// The error for any write to events.
pub fn read_only() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "events are recorded by the nodes and are read-only: list them with `shoal get events`",
    )
}

/// The events of a namespace (all when `None`), as API objects; for the generic resource
/// routes and the web UI.
pub fn list(api: &ApiState, namespace: Option<&str>) -> Vec<Value> {
    let filter = Filter {
        namespace: namespace.map(str::to_string),
        ..Filter::default()
    };
    api.events
        .list(&filter)
        .iter()
        .map(Event::to_json)
        .collect()
}

/// One event by namespace and name.
pub fn get(api: &ApiState, namespace: &str, name: &str) -> Result<Value, ApiError> {
    let filter = Filter {
        namespace: Some(namespace.to_string()),
        ..Filter::default()
    };
    api.events
        .list(&filter)
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| e.to_json())
        .ok_or_else(|| ApiError::not_found(Kind::Event, Some(namespace), name))
}

fn list_or_watch(
    api: &ApiState,
    namespace: Option<String>,
    q: EventsQuery,
) -> Result<Response, ApiError> {
    let mut filter = parse_field_selector(q.field_selector.as_deref().unwrap_or(""))?;
    if let Some(ns) = namespace {
        super::resources::check_namespace_name(&ns)?;
        filter.namespace = Some(ns);
    }
    // Events carry no labels: a selector that asks for some matches none.
    let labels_wanted = q
        .label_selector
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty());
    if flag(q.watch.as_deref())? {
        return Ok(watch(
            api,
            filter,
            labels_wanted,
            flag(q.allow_watch_bookmarks.as_deref())?,
        ));
    }
    let items: Vec<Value> = if labels_wanted {
        Vec::new()
    } else {
        api.events
            .list(&filter)
            .iter()
            .map(Event::to_json)
            .collect()
    };
    Ok(Json(json!({
        "apiVersion": "v1",
        "kind": "EventList",
        "metadata": {},
        "items": items,
    }))
    .into_response())
}

fn flag(v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{other:?} is not a boolean: use true or false"
        ))),
    }
}

/// Parses a field selector for events. Pure.
pub fn parse_field_selector(s: &str) -> Result<Filter, ApiError> {
    let mut f = Filter::default();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if term.contains("!=") {
            return Err(ApiError::bad_request(format!(
                "field selector {term:?}: only = and == are supported for events"
            )));
        }
        let Some((field, value)) = term.split_once("==").or_else(|| term.split_once('=')) else {
            return Err(ApiError::bad_request(format!(
                "field selector {term:?}: write field=value"
            )));
        };
        let value = Some(value.trim().to_string());
        match field.trim() {
            "involvedObject.kind" => f.kind = value,
            "involvedObject.name" => f.name = value,
            "involvedObject.namespace" => f.object_namespace = value,
            "metadata.namespace" => f.namespace = value,
            "reason" => f.reason = value,
            "type" => f.type_ = value,
            other => {
                return Err(ApiError::bad_request(format!(
                    "field selector {other:?} is not supported for events: use \
                     involvedObject.kind, involvedObject.name, involvedObject.namespace, \
                     metadata.namespace, reason or type"
                )));
            }
        }
    }
    Ok(f)
}

/// One line of a watch stream.
fn watch_line(type_: &str, object: Value) -> bytes::Bytes {
    let mut line = json!({"type": type_, "object": object}).to_string();
    line.push('\n');
    bytes::Bytes::from(line)
}

/// The watch stream: the events that match now, a bookmark if asked, then changes until the
/// client goes away or the node stops.
fn watch(api: &ApiState, filter: Filter, none: bool, bookmarks: bool) -> Response {
    // Subscribe before listing, so that nothing falls between; what the list already sent
    // is skipped when it comes again.
    let rx = api.events.subscribe();
    let initial = if none {
        Vec::new()
    } else {
        api.events.list(&filter)
    };
    let sent: HashMap<String, (u32, i64)> = initial
        .iter()
        .map(|e| (e.name.clone(), (e.count, e.last_ms)))
        .collect();
    let mut first: Vec<bytes::Bytes> = initial
        .iter()
        .map(|e| watch_line("ADDED", e.to_json()))
        .collect();
    if bookmarks {
        first.push(watch_line(
            "BOOKMARK",
            json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"annotations": {"k8s.io/initial-events-end": "true"}},
            }),
        ));
    }
    let closed = api.events.closed();
    let live = stream::unfold(
        (rx, sent, filter, none, closed),
        |(mut rx, mut sent, filter, none, closed)| async move {
            loop {
                let change = tokio::select! {
                    _ = closed.cancelled() => return None,
                    r = rx.recv() => match r {
                        Ok(c) => c,
                        // A slow watcher loses events rather than holding back the writers.
                        Err(RecvError::Lagged(n)) => {
                            tracing::debug!(missed = n, "an events watcher fell behind");
                            continue;
                        }
                        Err(RecvError::Closed) => return None,
                    },
                };
                let e = change.event();
                if none || !filter.matches(e) {
                    continue;
                }
                if let Some(v) = sent.get(&e.name)
                    && *v >= (e.count, e.last_ms)
                {
                    continue;
                }
                sent.insert(e.name.clone(), (e.count, e.last_ms));
                // Bounded: forget the oldest half when it grows large.
                if sent.len() > 4 * crate::events::RING_CAPACITY {
                    sent.clear();
                }
                let type_ = match change {
                    Change::Added(_) => "ADDED",
                    Change::Modified(_) => "MODIFIED",
                };
                let line = watch_line(type_, change.event().to_json());
                return Some((
                    Ok::<_, std::io::Error>(line),
                    (rx, sent, filter, none, closed),
                ));
            }
        },
    );
    let body = stream::iter(first.into_iter().map(Ok)).chain(live);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| ApiError::internal("building the watch response", &e).into_response())
}

use futures_util::StreamExt as _;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn field_selectors() {
        let f = parse_field_selector("involvedObject.name=web-0, involvedObject.kind==Pod")
            .expect("valid");
        assert_eq!(f.name.as_deref(), Some("web-0"));
        assert_eq!(f.kind.as_deref(), Some("Pod"));
        assert_eq!(parse_field_selector("").expect("empty"), Filter::default());
        let f = parse_field_selector("type=Warning,reason=BackOff").expect("valid");
        assert_eq!(
            (f.type_.as_deref(), f.reason.as_deref()),
            (Some("Warning"), Some("BackOff"))
        );
        for bad in ["source=n1", "involvedObject.name!=x", "justaword"] {
            let e = parse_field_selector(bad).expect_err(bad);
            assert_eq!(e.0.code, 400, "{bad}");
        }
    }
}
