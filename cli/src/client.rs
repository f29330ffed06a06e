//! The HTTP client of a node's API, and the mapping of every way a request fails to a short
//! message that says what to do about it.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use shoal_protocol::Kind;
use shoal_protocol::api::{APPLY_PATH, ApplyResponse, Status, VERSION_PATH, VersionInfo};

pub use shoal_protocol::api::{JOIN_TOKEN_PATH, STATUS_PATH};

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made.
    Unreachable { url: String, cause: String },
    /// The node accepted the connection but did not answer in time.
    Timeout { url: String, secs: u64 },
    /// The connection broke in another way.
    Transport { url: String, cause: String },
    /// 401: no token, or the wrong one.
    Unauthorized {
        url: String,
        had_token: bool,
        token_hint: String,
    },
    /// The node answered with a `Status` error.
    Status(Box<Status>),
    /// The node answered an error without a `Status` body (a proxy, an older node).
    Http {
        url: String,
        code: u16,
        body: String,
    },
    /// The node answered success with a body this client does not understand.
    Decode { url: String, detail: String },
}

impl ClientError {
    /// Whether the error is a server `Status`, printed kubectl-style (`Error from server`).
    pub fn is_server_status(&self) -> bool {
        matches!(self, ClientError::Status(_))
    }

    /// Whether the node refused because of the object's state (409), e.g. deleting a node
    /// that is still alive: a per-object error, not a reason to stop a batch.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Status(s) if s.code == 409 || s.reason == "Conflict")
    }

    /// Whether the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status(s) if s.code == 404 || s.reason == "NotFound")
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable { url, cause } => write!(
                f,
                "cannot reach the shoal node at {url} ({cause}); is shoald running there? \
                 Set --node or SHOAL_NODE."
            ),
            ClientError::Timeout { url, secs } => write!(
                f,
                "the shoal node at {url} did not answer within {secs}s; try another --node, \
                 or a longer --request-timeout"
            ),
            ClientError::Transport { url, cause } => {
                write!(f, "the request to the shoal node at {url} failed: {cause}")
            }
            ClientError::Unauthorized {
                url,
                had_token,
                token_hint,
            } => {
                let what = if *had_token {
                    "refused the token"
                } else {
                    "needs a token"
                };
                write!(
                    f,
                    "the node at {url} {what} (401): set --token or SHOAL_TOKEN to the \
                     contents of {token_hint}"
                )
            }
            ClientError::Status(s) => {
                write!(f, "Error from server ({}): {}", s.reason, s.message)?;
                for cause in s.details.iter().flat_map(|d| &d.causes) {
                    write!(f, "\n  {cause}")?;
                }
                Ok(())
            }
            ClientError::Http { url, code, body } => {
                let status = StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|c| c.canonical_reason())
                    .unwrap_or("");
                write!(f, "the node at {url} answered {code} {status}")?;
                let body = body.trim();
                if !body.is_empty() {
                    let short: String = body.chars().take(200).collect();
                    write!(f, ": {short}")?;
                }
                Ok(())
            }
            ClientError::Decode { url, detail } => {
                write!(f, "unexpected answer from the node at {url}: {detail}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to one node's API.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
    token_hint: String,
    timeout_secs: u64,
}

impl Client {
    /// `token_hint` names the file whose contents the user should pass as a token, for the 401
    /// message.
    pub fn new(
        base: &str,
        token: Option<String>,
        token_hint: String,
        timeout_secs: u64,
    ) -> anyhow::Result<Client> {
        let timeout = Duration::from_secs(timeout_secs.max(1));
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            // A LAN node that does not answer SYNs should fail fast, not after the full timeout.
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(format!("shoal/{}", shoal_protocol::VERSION))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            token_hint,
            timeout_secs: timeout_secs.max(1),
        })
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// `GET path?query` as JSON.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        let req = self.http.get(self.url(path)).query(query);
        self.send(req)
    }

    /// `DELETE path`: the deleted object.
    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let req = self.http.delete(self.url(path));
        self.send(req)
    }

    /// `POST /shoal/v1/apply[?namespace=NS]` with a manifest; the batch is all-or-nothing.
    /// The node puts objects that name no namespace into `namespace` (else `default`) and
    /// refuses objects that name another one.
    pub fn apply(
        &self,
        namespace: (&str, &str),
        body: String,
        content_type: &str,
    ) -> Result<ApplyResponse, ClientError> {
        let query = [namespace];
        let req = self
            .http
            .post(self.url(APPLY_PATH))
            .query(&query)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(req)
    }

    /// `PUT path` with a JSON body.
    pub fn put_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let req = self.http.put(self.url(path)).json(body);
        self.send(req)
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let req = self.http.post(self.url(path)).json(body);
        self.send(req)
    }

    /// A client without a time limit for the whole request (streamed bodies), connecting as
    /// fast as the usual one.
    fn streaming(&self) -> Result<reqwest::blocking::Client, ClientError> {
        reqwest::blocking::Client::builder()
            .timeout(None)
            .connect_timeout(Duration::from_secs(self.timeout_secs.min(10)))
            .user_agent(format!("shoal/{}", shoal_protocol::VERSION))
            .build()
            .map_err(|e| ClientError::Transport {
                url: self.base.clone(),
                cause: e.to_string(),
            })
    }

    /// `GET path?query` whose body is a stream (logs): no time limit once the node has
    /// answered, since a followed log never ends. The response is checked for errors.
    pub fn get_stream(&self, path: &str, query: &[(&str, &str)]) -> Result<Response, ClientError> {
        let streaming = self.streaming()?;
        let req = self.authorize(streaming.get(self.url(path)).query(query));
        let resp = req.send().map_err(|e| self.transport_error(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        let bytes = resp.bytes().map_err(|e| self.transport_error(&e))?;
        Err(self.error_from(code, &bytes))
    }

    /// `POST path` whose body streams from `body` (an image upload): no time limit, since a
    /// large upload over a slow link takes what it takes. The answer is JSON.
    pub fn post_stream(
        &self,
        path: &str,
        body: reqwest::blocking::Body,
    ) -> Result<Value, ClientError> {
        let streaming = self.streaming()?;
        let req = streaming
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(body);
        self.send(req)
    }

    /// The bearer token, for requests made outside reqwest (an exec's upgraded connection).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// How long a request may take, in seconds.
    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs
    }

    /// The error of a non-success answer with status `code` and body `bytes`.
    pub fn error_from(&self, code: u16, bytes: &[u8]) -> ClientError {
        if code == StatusCode::UNAUTHORIZED.as_u16() {
            return ClientError::Unauthorized {
                url: self.base.clone(),
                had_token: self.token.is_some(),
                token_hint: self.token_hint.clone(),
            };
        }
        match serde_json::from_slice::<Status>(bytes) {
            Ok(status) => ClientError::Status(Box::new(status)),
            Err(_) => ClientError::Http {
                url: self.base.clone(),
                code,
                body: String::from_utf8_lossy(bytes).into_owned(),
            },
        }
    }

    /// A connection error of a request made outside reqwest.
    pub fn io_error(&self, e: &std::io::Error) -> ClientError {
        let url = self.base.clone();
        match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ClientError::Timeout {
                url,
                secs: self.timeout_secs,
            },
            std::io::ErrorKind::ConnectionRefused => ClientError::Unreachable {
                url,
                cause: root_cause(e),
            },
            _ => ClientError::Transport {
                url,
                cause: root_cause(e),
            },
        }
    }

    /// `GET /version`.
    pub fn version(&self) -> Result<VersionInfo, ClientError> {
        let req = self.http.get(self.url(VERSION_PATH));
        self.send(req)
    }

    fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self
            .authorize(req)
            .send()
            .map_err(|e| self.transport_error(&e))?;
        self.read(resp)
    }

    fn read<T: DeserializeOwned>(&self, resp: Response) -> Result<T, ClientError> {
        let code = resp.status();
        let bytes = resp.bytes().map_err(|e| self.transport_error(&e))?;
        if code.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
                url: self.base.clone(),
                detail: e.to_string(),
            });
        }
        Err(self.error_from(code.as_u16(), &bytes))
    }

    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        let url = self.base.clone();
        if e.is_connect() {
            ClientError::Unreachable {
                url,
                cause: root_cause(e),
            }
        } else if e.is_timeout() {
            ClientError::Timeout {
                url,
                secs: self.timeout_secs,
            }
        } else {
            ClientError::Transport {
                url,
                cause: root_cause(e),
            }
        }
    }
}

/// The innermost cause, in a few words: `connection refused` rather than reqwest's and hyper's
/// layers of context.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let short = match io.kind() {
                K::ConnectionRefused => Some("connection refused"),
                K::ConnectionReset => Some("connection reset"),
                K::TimedOut => Some("timed out"),
                K::HostUnreachable => Some("host unreachable"),
                K::NetworkUnreachable => Some("network unreachable"),
                K::AddrNotAvailable => Some("address not available"),
                _ => None,
            };
            if let Some(s) = short {
                return s.to_string();
            }
        }
        match cur.source() {
            Some(next) => cur = next,
            None => break,
        }
    }
    let text = cur.to_string();
    // "Connection refused (os error 111)" → "connection refused".
    let text = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_string(),
    }
}

/// Percent-encodes one path segment, so that a name typed by a user can never change the
/// route (`a/b`, `..`, `?`).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'~')
            || (b == b'.' && s != "." && s != "..")
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The REST path of one object, with its segments encoded.
pub fn object_path(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    let ns = namespace.map(segment);
    kind.object_path(ns.as_deref(), &segment(name))
}

/// The REST path of a collection, with the namespace encoded.
pub fn collection_path(kind: Kind, namespace: Option<&str>) -> String {
    let ns = namespace.map(segment);
    kind.collection_path(ns.as_deref())
}

/// How kubectl names a resource type in server errors: `deployments.apps`, `pods`.
pub fn resource_ref(kind: Kind) -> String {
    if kind.group().is_empty() {
        kind.plural().to_string()
    } else {
        format!("{}.{}", kind.plural(), kind.group())
    }
}

/// The error kubectl prints for a named object that does not exist.
pub fn not_found(kind: Kind, name: &str) -> ClientError {
    ClientError::Status(Box::new(Status::failure(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", resource_ref(kind)),
    )))
}

/// What to name in the 401 message: the local node's token file when the node is on this
/// machine and the file is where `shoald` puts it by default, else where to look for it.
pub fn token_hint(node: &str, local_token_file: Option<&PathBuf>) -> String {
    match local_token_file {
        Some(p) if crate::config::is_loopback_url(node) && p.is_file() => p.display().to_string(),
        _ => "admin.token in the node's data directory (--data-dir of shoald; by default \
              /var/lib/shoal as root, else ~/.local/share/shoal)"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use shoal_protocol::FieldError;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("web-1.x"), "web-1.x");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(
            object_path(Kind::Deployment, Some("default"), "a/b"),
            "/apis/apps/v1/namespaces/default/deployments/a%2Fb"
        );
    }

    #[test]
    fn not_found_reads_like_kubectl() {
        assert_eq!(
            not_found(Kind::Deployment, "x").to_string(),
            "Error from server (NotFound): deployments.apps \"x\" not found"
        );
        assert_eq!(
            not_found(Kind::Pod, "p").to_string(),
            "Error from server (NotFound): pods \"p\" not found"
        );
        assert!(not_found(Kind::Pod, "p").is_not_found());
    }

    #[test]
    fn status_errors_list_their_causes() {
        let s = Status::failure(422, "Invalid", "the manifest is invalid").with_causes(vec![
            FieldError::new("spec.replicas", "must be >= 0").in_document(1),
        ]);
        assert_eq!(
            ClientError::Status(Box::new(s)).to_string(),
            "Error from server (Invalid): the manifest is invalid\n  document 1: spec.replicas: must be >= 0"
        );
    }

    #[test]
    fn unauthorized_says_which_token_to_use() {
        let e = ClientError::Unauthorized {
            url: "http://127.0.0.1:7070".into(),
            had_token: true,
            token_hint: "/var/lib/shoal/admin.token".into(),
        };
        assert_eq!(
            e.to_string(),
            "the node at http://127.0.0.1:7070 refused the token (401): set --token or \
             SHOAL_TOKEN to the contents of /var/lib/shoal/admin.token"
        );
    }
}
