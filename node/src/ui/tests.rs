#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{
    CONTENT_TYPE, COOKIE as COOKIE_HEADER, HOST, LOCATION, ORIGIN, SET_COOKIE,
};
use axum::http::{Method, Request, StatusCode};
use axum::routing::get;
use serde_json::json;
use tower::ServiceExt;

use super::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The real login, logout and cookie check around stand-in pages (the pages themselves need
/// a whole node; the testnet's UI test drives those).
fn app() -> Router {
    let auth = Auth::new(Arc::from(TOKEN));
    let pages = Router::new()
        .route("/", get(|| async { "the overview" }))
        .route("/ui/fragments/{name}", get(|| async { "a fragment" }))
        .route("/logout", post(auth::logout));
    guarded(pages, auth.clone())
        .merge(open_routes())
        .layer(middleware::map_response(security_headers))
        .with_state(auth)
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(req: Request<Body>) -> Answer {
    let res = app().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn get_with_cookie(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().uri(path).header(HOST, "node:7070");
    if let Some(c) = cookie {
        b = b.header(COOKIE_HEADER, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post_form(path: &str, body: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, "node:7070")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn set_cookie(a: &Answer) -> String {
    a.headers
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn pages_need_the_cookie() {
    // No cookie: to the login page.
    let a = send(get_with_cookie("/", None)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[LOCATION], "/login");

    // A wrong cookie: refused with the login page, and the cookie is cleared.
    let a = send(get_with_cookie(
        "/",
        Some("shoal_token=ffffffffffffffffffffffffffffffff"),
    ))
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        a.body.contains("not this cluster's admin token"),
        "{}",
        a.body
    );
    assert!(a.body.contains("action=\"/login\""), "{}", a.body);
    assert!(!a.body.contains("the overview"));
    assert!(set_cookie(&a).contains("Max-Age=0"), "{}", set_cookie(&a));

    // A prefix of the token is wrong too.
    let a = send(get_with_cookie(
        "/",
        Some(&format!("shoal_token={}", &TOKEN[..31])),
    ))
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // The right cookie, among others.
    let a = send(get_with_cookie(
        "/",
        Some(&format!("theme=dark; shoal_token={TOKEN}; x=1")),
    ))
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, "the overview");

    // Fragments answer 401 (the page script goes to /login), never a redirect.
    let a = send(get_with_cookie("/ui/fragments/pods", None)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(get_with_cookie(
        "/ui/fragments/pods",
        Some("shoal_token=nope"),
    ))
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(get_with_cookie(
        "/ui/fragments/pods",
        Some(&format!("shoal_token={TOKEN}")),
    ))
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn login_sets_an_http_only_same_site_cookie_and_refuses_a_wrong_token() {
    let a = send(get_with_cookie("/login", None)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("type=\"password\""), "{}", a.body);

    let a = send(post_form("/login", "token=wrong-token", &[])).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("id=\"login-error\""), "{}", a.body);
    assert!(!set_cookie(&a).contains("wrong-token"));
    assert!(!set_cookie(&a).contains(TOKEN));

    let a = send(post_form("/login", &format!("token={TOKEN}"), &[])).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[LOCATION], "/");
    let cookie = set_cookie(&a);
    assert!(
        cookie.starts_with(&format!("shoal_token={TOKEN};")),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.split("; ").any(|p| p == attr),
            "{attr} missing: {cookie}"
        );
    }

    // Spaces around a pasted token do not matter.
    let a = send(post_form("/login", &format!("token=+{TOKEN}+"), &[])).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);

    // Already logged in: the login page goes to the overview.
    let a = send(get_with_cookie(
        "/login",
        Some(&format!("shoal_token={TOKEN}")),
    ))
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn forms_from_other_sites_are_refused() {
    let auth = Auth::new(Arc::from(TOKEN));
    let csrf = auth.form_token();
    let cookie = format!("shoal_token={TOKEN}");
    let logged_in = [(COOKIE_HEADER.as_str(), cookie.as_str())];

    // Logout without the form token: refused.
    let a = send(post_form("/logout", "", &logged_in)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // With it, but sent from another site: refused.
    let body = format!("csrf={csrf}");
    let cross = [
        logged_in[0],
        ("sec-fetch-site", "cross-site"),
        (ORIGIN.as_str(), "http://evil.example"),
    ];
    let a = send(post_form("/logout", &body, &cross)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(post_form(
        "/logout",
        &body,
        &[logged_in[0], (ORIGIN.as_str(), "http://evil.example")],
    ))
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    // A login posted from another site is refused too.
    let a = send(post_form(
        "/login",
        &format!("token={TOKEN}"),
        &[(ORIGIN.as_str(), "http://evil.example")],
    ))
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(set_cookie(&a).is_empty());

    // From this node's own page: the cookie is cleared.
    let same = [
        logged_in[0],
        ("sec-fetch-site", "same-origin"),
        (ORIGIN.as_str(), "http://node:7070"),
    ];
    let a = send(post_form("/logout", &body, &same)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers[LOCATION], "/login");
    assert!(set_cookie(&a).contains("Max-Age=0"));

    // The form token depends on the admin token.
    assert_ne!(Auth::new(Arc::from("another-token")).form_token(), csrf);
    assert_eq!(csrf.len(), 64);
}

#[tokio::test]
async fn answers_carry_security_headers_and_assets_are_cached() {
    let a = send(get_with_cookie("/login", None)).await;
    let csp = a.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(a.headers["x-frame-options"], "DENY");
    let a = send(get_with_cookie(STYLE_PATH, None)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert!(a.body.contains("overflow-x: auto"));
    let a = send(get_with_cookie(SCRIPT_PATH, None)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("data-src") || a.body.contains("dataset.src"));
}

#[test]
fn values_from_manifests_are_escaped() {
    let evil = "<script>alert(1)</script>";
    let pod = json!({
        "metadata": {"name": evil, "namespace": "default\"><b>x</b>"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "reason": "<img src=x onerror=alert(2)>"},
    });
    let html = render::pods(&[pod], 0).into_string();
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>x"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    // The logs link encodes the name as a path segment.
    assert!(
        html.contains("/ui/pods/default%22%3E%3Cb%3Ex%3C%2Fb%3E/%3Cscript%3E"),
        "{html}"
    );

    let deployment = json!({
        "metadata": {"name": "web\" onmouseover=\"alert(3)", "namespace": "default"},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": evil}]}}},
    });
    let html = render::workloads(&[deployment], &[], "tok", 0).into_string();
    assert!(!html.contains("\" onmouseover=\""), "{html}");
    assert!(!html.contains("<script>"), "{html}");
}

#[test]
fn secret_values_never_reach_the_page() {
    let secret = json!({
        "metadata": {"name": "db", "namespace": "default"},
        "type": "Opaque",
        "data": {"password": "c3VwZXItc2VjcmV0"},
        "stringData": {"user": "admin-user-value"},
    });
    let cm = json!({"metadata": {"name": "cfg", "namespace": "default"}, "data": {"mode": "fast"}});
    let html = render::config(&[cm], &[secret], 0).into_string();
    assert!(html.contains("password") && html.contains("user") && html.contains("mode"));
    assert!(!html.contains("c3VwZXItc2VjcmV0"), "{html}");
    assert!(!html.contains("admin-user-value"), "{html}");
    assert!(
        !html.contains("fast"),
        "ConfigMap values are not shown either: {html}"
    );
}

#[test]
fn pod_status_and_ready_read_like_kubectl() {
    let running = json!({
        "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"ready": true, "state": {"running": {}}},
            {"ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
        ]},
    });
    assert_eq!(render::pod_status(&running), "CrashLoopBackOff");
    assert_eq!(render::pod_ready(&running), "1/2");
    let pending = json!({"spec": {"containers": [{"name": "a"}]}, "status": {}});
    assert_eq!(render::pod_status(&pending), "Pending");
    assert_eq!(render::pod_ready(&pending), "0/1");
    let lost = json!({"status": {"phase": "Pending", "reason": "NodeLost"}});
    assert_eq!(render::pod_status(&lost), "NodeLost");
    let deleting = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}});
    assert_eq!(render::pod_status(&deleting), "Terminating");
}

#[test]
fn ages_and_url_parts() {
    let t0 = "2024-01-01T00:00:00Z";
    let base = shoal_protocol::time::parse_rfc3339(t0).unwrap();
    for (secs, want) in [
        (-3, "0s"),
        (45, "45s"),
        (200, "3m20s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (10 * 3600, "10h"),
        (3 * 86_400 + 3600, "3d1h"),
        (30 * 86_400, "30d"),
    ] {
        assert_eq!(render::age_of(t0, base + secs), want, "{secs}");
    }
    assert_eq!(render::age_of("not a time", base), "?");
    assert_eq!(render::url_part("a-b.c_d~9"), "a-b.c_d~9");
    assert_eq!(render::url_part("a/b c?&"), "a%2Fb%20c%3F%26");
}

#[test]
fn the_nodes_table_shows_what_a_node_says_is_wrong_with_it() {
    let status = json!({
        "node": "n1", "clusterId": "c", "digest": "d", "objects": 1,
        "members": [
            {"name": "n1", "state": "alive"},
            {"name": "n2", "state": "alive"},
        ],
    });
    let nodes = vec![
        json!({"metadata": {"name": "n1"}, "status": {"conditions": [
            {"type": "Ready", "status": "True"},
        ]}}),
        json!({"metadata": {"name": "n2"}, "status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "EngineUnavailable"},
            {"type": "EngineUnavailable", "status": "True", "message": "dial unix docker.sock: <refused>"},
        ]}}),
    ];
    let html = render::overview(&status, &nodes, 0).into_string();
    let row = |name: &str| {
        let start = html.find(&format!("<td>{name}")).unwrap();
        let end = html[start..].find("</tr>").unwrap() + start;
        html[start..end].to_string()
    };
    assert!(row("n2").contains(">EngineUnavailable<"), "{}", row("n2"));
    assert!(
        row("n2").contains("&lt;refused&gt;"),
        "the message is escaped: {}",
        row("n2")
    );
    assert!(!row("n1").contains("condition"), "{}", row("n1"));
}
