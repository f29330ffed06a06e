//! The UI's login: the admin token in a cookie, checked in constant time on every page, and
//! the checks that keep another site from submitting the UI's forms (CSRF).
//!
//! The cookie is `shoal_token=<admin token>; HttpOnly; SameSite=Strict; Path=/`: scripts
//! cannot read it and browsers do not send it with requests that other sites start. It has no
//! `Secure` attribute because nodes serve plain HTTP (a `Secure` cookie would never come back);
//! put the UI behind a TLS proxy when the network between browser and node is not trusted. It
//! lasts until the browser closes, or until the admin token changes (then it no longer
//! matches and the login page says so).

use std::sync::Arc;

use axum::Form;
use axum::extract::{Request, State};
use axum::http::header::{COOKIE as COOKIE_HEADER, HOST, LOCATION, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::render;
use crate::api::constant_time_eq;

/// The name of the session cookie.
pub const COOKIE: &str = "shoal_token";

/// What the UI checks sessions and forms against: the cluster's admin token.
#[derive(Clone)]
pub struct Auth {
    token: Arc<str>,
}

/// What a request's cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// No `shoal_token` cookie.
    Missing,
    /// A cookie that is not the admin token (another cluster's, or an old one).
    Wrong,
    Valid,
}

impl Auth {
    pub fn new(token: Arc<str>) -> Auth {
        Auth { token }
    }

    fn matches(&self, given: &str) -> bool {
        !self.token.is_empty() && constant_time_eq(given.as_bytes(), self.token.as_bytes())
    }

    /// The session a request carries.
    pub fn session(&self, headers: &HeaderMap) -> Session {
        match cookie(headers, COOKIE) {
            None => Session::Missing,
            Some(v) if self.matches(v) => Session::Valid,
            Some(_) => Session::Wrong,
        }
    }

    /// The form token every state-changing form carries: an HMAC of a fixed label under the
    /// admin token. Another site cannot compute it, and no server-side session is needed; it
    /// changes when the admin token does.
    pub fn form_token(&self) -> String {
        // HMAC takes a key of any length: new_from_slice cannot fail for it.
        match Hmac::<Sha256>::new_from_slice(self.token.as_bytes()) {
            Ok(mut mac) => {
                mac.update(b"shoal web ui form token v1");
                hex::encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    /// Refuses a form submission that another site may have started: the browser's
    /// `Sec-Fetch-Site` or `Origin` says so, or the form token is missing or wrong. The answer
    /// says what to do.
    pub fn check_form(&self, headers: &HeaderMap, form_token: &str) -> Result<(), Box<Response>> {
        check_same_origin(headers)?;
        let expected = self.form_token();
        if expected.is_empty() || !constant_time_eq(form_token.as_bytes(), expected.as_bytes()) {
            return Err(forbidden(
                "the form's token is missing or out of date (was the admin token changed?); \
                 reload the page and submit again",
            ));
        }
        Ok(())
    }
}

/// The value of cookie `name`, from every `Cookie` header.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// The browser's own word on where a request comes from. Browsers send `Sec-Fetch-Site` (and
/// `Origin` on POST); a request with neither (curl, old browsers) passes to the form-token
/// check.
fn check_same_origin(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(forbidden(&format!(
            "this form was sent from another site (Sec-Fetch-Site: {site}); open the UI on this \
             node and submit it there"
        )));
    }
    if let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !same {
            return Err(forbidden(&format!(
                "this form was sent from {origin}, not from this node ({host}); open the UI on \
                 this node and submit it there"
            )));
        }
    }
    Ok(())
}

fn forbidden(message: &str) -> Box<Response> {
    Box::new(
        (
            StatusCode::FORBIDDEN,
            render::message_page("Refused", message),
        )
            .into_response(),
    )
}

/// Whether a path is a fragment the page's script fetches (it gets a 401, not a page).
fn is_fragment(path: &str) -> bool {
    path.starts_with("/ui/fragments/")
}

/// Lets a request with a valid session through; sends one without a cookie to the login
/// page, and answers one with a wrong cookie with the login page, a 401 and the cookie
/// cleared.
pub async fn require_session(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let session = auth.session(req.headers());
    if session == Session::Valid {
        return next.run(req).await;
    }
    if is_fragment(req.uri().path()) {
        return (
            StatusCode::UNAUTHORIZED,
            "not logged in, or the admin token changed: log in again at /login",
        )
            .into_response();
    }
    match session {
        Session::Missing => redirect("/login"),
        _ => login_refused(
            "The token in this browser's cookie is not this cluster's admin token (was it \
             changed?). Log in again.",
        ),
    }
}

/// A `303 See Other` to `to` (after a POST, the browser GETs it).
fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

/// The login page with `message`, a 401 and the cookie cleared.
fn login_refused(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(SET_COOKIE, clear_cookie())],
        render::login_page(Some(message)),
    )
        .into_response()
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("shoal_token=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// `GET /login`: the form, or the overview when the cookie is already good.
pub async fn login_form(State(auth): State<Auth>, headers: HeaderMap) -> Response {
    match auth.session(&headers) {
        Session::Valid => redirect("/"),
        _ => render::login_page(None).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /login`: the right token sets the cookie and goes to the overview; a wrong one gets
/// the form again with a 401.
pub async fn login(
    State(auth): State<Auth>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(refused) = check_same_origin(&headers) {
        return *refused;
    }
    let token = form.token.trim();
    if token.is_empty() {
        return login_refused("Enter the admin token.");
    }
    if !auth.matches(token) {
        tracing::info!("web UI login refused: wrong admin token");
        return login_refused(
            "That is not this cluster's admin token. It is in the file admin.token in a \
             node's data directory (or ask whoever runs the cluster).",
        );
    }
    // The token is only stored by the browser if a cookie can carry it as it is.
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    match HeaderValue::from_str(&cookie) {
        Ok(v) if token.bytes().all(is_cookie_octet) => (
            StatusCode::SEE_OTHER,
            [(SET_COOKIE, v), (LOCATION, HeaderValue::from_static("/"))],
        )
            .into_response(),
        _ => login_refused(
            "The admin token has characters a cookie cannot carry (spaces, quotes, commas, \
             semicolons or backslashes); the web UI cannot use it. Use the CLI.",
        ),
    }
}

/// RFC 6265's `cookie-octet`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

#[derive(Debug, Default, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: clears the cookie and goes to the login page.
pub async fn logout(
    State(auth): State<Auth>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Err(refused) = auth.check_form(&headers, &form.csrf) {
        return *refused;
    }
    (
        StatusCode::SEE_OTHER,
        [
            (SET_COOKIE, clear_cookie()),
            (LOCATION, HeaderValue::from_static("/login")),
        ],
    )
        .into_response()
}
