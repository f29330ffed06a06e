//! The HTTP API (axum): Kubernetes' REST layout for resources, a batch apply endpoint, version
//! and health. Every route but `/healthz` needs the admin bearer token.
//!
//! It owns no state: it holds a [`StateHandle`] (desired state) and an [`ObservedHandle`]
//! (observed state) and merges both into the objects it returns. Client errors are 4xx with a
//! Kubernetes `Status` body naming what to fix; internal ones are 5xx and logged.

mod backup;
mod error;
pub(crate) mod events;
mod exec;
pub mod images;
mod nodes;
pub(crate) mod pods;
pub(crate) mod resources;
mod services;
pub(crate) mod status;
mod workloads;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shoal_protocol::api::{
    APPLY_PATH, HEALTHZ_PATH, JOIN_TOKEN_PATH, STATUS_PATH, VERSION_PATH, VersionInfo,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::observed::ObservedHandle;
use crate::state::StateHandle;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub state: StateHandle,
    pub observed: ObservedHandle,
    pub token: Arc<str>,
    pub cluster_id: Arc<str>,
    pub node_name: Arc<str>,
    /// The container engine of this node, for logs and exec.
    pub engine: crate::runtime::Engine,
    /// How peers reach this node and how a new node joins.
    pub cluster: Arc<ClusterInfo>,
    /// The cluster's events as this node knows them (soft state, bounded).
    pub events: crate::events::Events,
    /// The image service, told when an upload loads images (`None` in tests without one).
    pub images: Option<crate::images::Images>,
    /// The most replicas an applied or scaled workload may ask for (`max-replicas`).
    pub max_replicas: u32,
    /// What this node's pod network task did last (`None` in tests without one).
    pub podnet: Option<tokio::sync::watch::Receiver<crate::podnet::PodNetStatus>>,
}

/// This node's place in the cluster, for the status and join-token routes.
#[derive(Debug, Default)]
pub struct ClusterInfo {
    pub peer_id: String,
    /// This node's p2p address as other nodes dial it (`host:port`).
    pub p2p_address: String,
    /// The encoded join token (a secret: it carries the cluster secret and admin token).
    pub join_token: String,
    /// The DNS domain of the cluster (`shoal.home.arpa` when empty).
    pub cluster_domain: String,
}

impl ClusterInfo {
    /// The cluster domain, defaulted.
    pub fn domain(&self) -> &str {
        if self.cluster_domain.is_empty() {
            crate::config::DEFAULT_CLUSTER_DOMAIN
        } else {
            &self.cluster_domain
        }
    }
}

/// Builds the router; tests call it directly.
pub fn router(api: ApiState, max_body_bytes: usize) -> Router {
    let protected = Router::new()
        .route(VERSION_PATH, get(version))
        .route(crate::metrics::METRICS_PATH, get(crate::metrics::scrape))
        .route(APPLY_PATH, post(resources::apply_batch))
        .route(STATUS_PATH, get(status::status))
        .route(JOIN_TOKEN_PATH, get(status::join_token))
        .route(shoal_protocol::api::BACKUP_PATH, get(backup::backup))
        .route(shoal_protocol::api::RESTORE_PATH, post(backup::restore))
        .route("/shoal/v1/nodes/{name}/{action}", post(nodes::cordon))
        // Images are large: the upload streams into the engine with no body limit.
        .route(
            images::LOAD_PATH,
            post(images::load).layer(DefaultBodyLimit::disable()),
        )
        .route(images::LIST_PATH, get(images::list))
        .route("/api/v1/events", get(events::list_all))
        .route(
            "/api/v1/namespaces/{ns}/events",
            get(events::list_ns).post(events::refuse),
        )
        .route(
            "/api/v1/namespaces/{ns}/events/{name}",
            get(events::get_ns)
                .put(events::refuse)
                .patch(events::refuse)
                .delete(events::refuse),
        )
        .route("/api/v1/{plural}", get(resources::list_core))
        .route(
            "/api/v1/{plural}/{name}",
            get(resources::get_core)
                .put(resources::put_core)
                .delete(resources::delete_core),
        )
        .route(
            "/api/v1/namespaces/{ns}/{plural}",
            get(resources::list_core_ns).post(resources::post_core_ns),
        )
        .route(
            "/api/v1/namespaces/{ns}/{plural}/{name}",
            get(resources::get_core_ns)
                .put(resources::put_core_ns)
                .delete(resources::delete_core_ns),
        )
        .route(
            "/apis/{group}/{version}/{plural}",
            get(resources::list_group),
        )
        .route(
            "/apis/{group}/{version}/{plural}/{name}",
            get(resources::get_group)
                .put(resources::put_group)
                .delete(resources::delete_group),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}",
            get(resources::list_group_ns).post(resources::post_group_ns),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
            get(resources::get_group_ns)
                .put(resources::put_group_ns)
                .delete(resources::delete_group_ns),
        )
        .route(
            "/api/v1/namespaces/{ns}/{plural}/{name}/{sub}",
            get(resources::core_sub_ns).post(resources::core_sub_ns),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/{sub}",
            get(resources::group_sub_ns).put(resources::group_sub_ns),
        )
        .route(
            "/shoal/v1/namespaces/{ns}/deployments/{name}/rollback",
            post(workloads::rollback),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .route(HEALTHZ_PATH, get(|| async { "ok" }))
        .merge(protected)
        .merge(crate::ui::router(&api))
        .layer(middleware::from_fn(crate::metrics::track_api))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api)
}

/// Serves the API until `shutdown` fires; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

async fn version(State(api): State<ApiState>) -> axum::Json<VersionInfo> {
    axum::Json(VersionInfo {
        version: shoal_protocol::VERSION.to_string(),
        cluster_id: api.cluster_id.to_string(),
        node_name: api.node_name.to_string(),
    })
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found_path(req.uri().path()).into_response()
}

async fn require_token(State(api): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), api.token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::unauthorized("the bearer token is wrong").into_response(),
        None => ApiError::unauthorized("no bearer token was sent").into_response(),
    }
}

/// Compares without leaking, through timing, how long a matching prefix is.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
