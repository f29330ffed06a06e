//! API errors: client errors (4xx) say what to fix; internal errors (5xx) are logged.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shoal_protocol::api::{Status, StatusDetails};
use shoal_protocol::{FieldError, Kind, ManifestErrors};

use crate::state::StateError;

/// An error answered as a Kubernetes `Status` body.
#[derive(Debug)]
pub struct ApiError(pub Box<Status>);

impl ApiError {
    pub fn new(code: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        ApiError(Box::new(Status::failure(code.as_u16(), reason, message)))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn unauthorized(why: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            format!(
                "{why}: send `Authorization: Bearer <token>` with the token from the node's \
                 data directory (admin.token)"
            ),
        )
    }

    pub fn not_found(kind: Kind, namespace: Option<&str>, name: &str) -> Self {
        let what = format!("{}.{}", kind.plural(), kind.group());
        let what = what.trim_end_matches('.');
        let message = match namespace {
            Some(ns) if kind.namespaced() => {
                format!("{what} \"{name}\" not found in namespace \"{ns}\"")
            }
            _ => format!("{what} \"{name}\" not found"),
        };
        let mut e = Self::new(StatusCode::NOT_FOUND, "NotFound", message);
        e.0.details = Some(StatusDetails {
            name: Some(name.to_string()),
            kind: Some(kind.plural().to_string()),
            causes: Vec::new(),
        });
        e
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn invalid(message: impl Into<String>, causes: Vec<FieldError>) -> Self {
        ApiError(Box::new(
            Status::failure(
                StatusCode::UNPROCESSABLE_ENTITY.as_u16(),
                "Invalid",
                message,
            )
            .with_causes(causes),
        ))
    }

    pub fn internal(context: &str, err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("{context}: {err}"),
        )
    }
}

impl From<ManifestErrors> for ApiError {
    fn from(errors: ManifestErrors) -> Self {
        let n = errors.0.len();
        let message = if n == 1 {
            format!("the manifest is invalid: {}", errors.0[0])
        } else {
            format!("the manifest is invalid ({n} errors); nothing was applied")
        };
        ApiError::invalid(message, errors.0)
    }
}

impl From<StateError> for ApiError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::Invalid(causes) => {
                let message = match causes.as_slice() {
                    [one] => one.to_string(),
                    _ => format!("{} errors; nothing was applied", causes.len()),
                };
                ApiError::invalid(message, causes)
            }
            StateError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the node is shutting down",
            ),
            other => ApiError::internal("the state store failed", &other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(*self.0)).into_response()
    }
}
