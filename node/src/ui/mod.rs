//! The web UI: HTML pages that every node serves at `/`, behind the same admin token as the
//! API. A login form takes the token and keeps it in a cookie (`shoal_token`, HttpOnly,
//! SameSite=Strict); pages show the cluster (nodes, roles, resources, this node's state
//! digest), workloads with their rollout, pods and their logs, Services with DNS names and
//! endpoints, ConfigMaps and Secrets (keys only, never values) and events, and let the user
//! apply a manifest, scale a workload and delete an object after a confirmation page.
//!
//! It owns no state and does not call the API over HTTP: it calls the API's own handlers
//! ([`crate::api`]) with the node's [`ApiState`], so the UI shows and does exactly what the
//! API and the CLI show and do. Pages are rendered on the server with `maud` (HTML built by
//! Rust macros and escaped by default); a small hand-written script swaps a server-rendered
//! fragment every 2 s (live updates) and the stylesheet is hand-written too. Both are embedded
//! in the binary: no JavaScript build chain exists on the build machines.
//!
//! Routes live outside the API's bearer-token layer and check the cookie themselves
//! ([`auth`]); forms that change something also carry a per-cluster form token and are refused
//! when the browser says they come from another site (CSRF).

mod auth;
mod pages;
mod render;

use axum::Router;
use axum::extract::FromRef;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use auth::{Auth, COOKIE};

use crate::api::ApiState;

/// The stylesheet and the script, served with long cache lifetimes: their URLs carry the
/// version, so a new binary's assets are fetched anew.
const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("ui.js");
const STYLE_PATH: &str = concat!("/ui/static/style-", env!("CARGO_PKG_VERSION"), ".css");
const SCRIPT_PATH: &str = concat!("/ui/static/ui-", env!("CARGO_PKG_VERSION"), ".js");

impl FromRef<ApiState> for Auth {
    fn from_ref(api: &ApiState) -> Auth {
        Auth::new(api.token.clone())
    }
}

/// The UI's routes, to merge into the API router (outside its bearer-token layer).
pub fn router(api: &ApiState) -> Router<ApiState> {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/ui/workloads", get(pages::workloads))
        .route("/ui/pods", get(pages::pods))
        .route("/ui/pods/{ns}/{name}/logs", get(pages::logs))
        .route("/ui/services", get(pages::services))
        .route("/ui/config", get(pages::config))
        .route("/ui/events", get(pages::events))
        .route("/ui/fragments/{name}", get(pages::fragment))
        .route("/ui/fragments/logs/{ns}/{name}", get(pages::logs_fragment))
        .route("/ui/apply", get(pages::apply_form).post(pages::apply))
        .route("/ui/scale", post(pages::scale))
        .route("/ui/delete", get(pages::delete_confirm).post(pages::delete))
        .route("/logout", post(auth::logout));
    guarded(pages, Auth::from_ref(api))
        .merge(open_routes())
        .layer(middleware::map_response(security_headers))
}

/// Routes anyone may fetch: the login form and the static assets.
fn open_routes<S>() -> Router<S>
where
    Auth: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/login", get(auth::login_form).post(auth::login))
        .route(
            STYLE_PATH,
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            SCRIPT_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
}

/// `routes` answered only with a valid session cookie.
fn guarded<S>(routes: Router<S>, auth: Auth) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.route_layer(middleware::from_fn_with_state(auth, auth::require_session))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
}

/// Headers on every UI answer: scripts and styles only from this node (no inline script, so
/// an escaping slip cannot run one), no framing (a confirmation button cannot be clicked
/// through another site's page), no MIME sniffing, no Referer to other sites.
async fn security_headers(mut res: Response) -> Response {
    let headers = res.headers_mut();
    for (name, value) in [
        (
            CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (X_FRAME_OPTIONS, "DENY"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "same-origin"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    res
}

#[cfg(test)]
mod tests;
