//! The JSON shapes of the HTTP API that are not resources themselves: errors, apply results,
//! lists, version and status. Objects travel as Kubernetes-shaped JSON (`apiVersion`, `kind`,
//! `metadata`, `spec`, `status`).

use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// The path of the batch apply endpoint: `POST` a multi-document YAML or JSON body.
pub const APPLY_PATH: &str = "/shoal/v1/apply";
/// The path of the version endpoint (no token needed? no: every route but `/healthz` needs it).
pub const VERSION_PATH: &str = "/version";

/// This node's view of the cluster: members, roles, digest of the desired state.
pub const STATUS_PATH: &str = "/shoal/v1/status";

/// The join token and the command that adds a node to this cluster.
pub const JOIN_TOKEN_PATH: &str = "/shoal/v1/join-token";
/// The path of the liveness endpoint, the only one that needs no token.
pub const HEALTHZ_PATH: &str = "/healthz";

/// An error, in the shape of Kubernetes' `Status` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub api_version: String,
    pub kind: String,
    /// `Failure` or `Success`.
    pub status: String,
    pub message: String,
    /// A machine-readable reason: `NotFound`, `Invalid`, `Unauthorized`, `BadRequest`,
    /// `Conflict`, `RequestEntityTooLarge`, `InternalError`.
    pub reason: String,
    /// The HTTP status code.
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// Details of a [`Status`]: the object concerned and every field error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<FieldError>,
}

impl Status {
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code,
            details: None,
        }
    }

    pub fn with_causes(mut self, causes: Vec<FieldError>) -> Self {
        self.details
            .get_or_insert_with(StatusDetails::default)
            .causes = causes;
        self
    }
}

/// What an apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// The result of applying one object of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub action: ApplyAction,
    /// The object's generation after the apply.
    pub generation: i64,
}

/// The answer to a batch apply: one result per object, in the order of the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub items: Vec<ApplyResult>,
}

/// Version information of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub version: String,
    pub cluster_id: String,
    pub node_name: String,
}

/// `GET`: the cluster's desired state as one [`Backup`] document.
pub const BACKUP_PATH: &str = "/shoal/v1/backup";
/// `POST` a [`Backup`]: its objects are restored, all or nothing; the answer is an
/// [`ApplyResponse`] (created, configured or unchanged per object).
pub const RESTORE_PATH: &str = "/shoal/v1/restore";
/// The `format` of the backups that this version writes and reads.
pub const BACKUP_FORMAT: &str = "shoal.dev/backup/v1";

/// A backup of the desired state: every stored object but Nodes (which belong to the
/// machines that run them), with server-set metadata (uid, generation, resourceVersion,
/// creationTimestamp) and owner references as stored, so that controllers recognize what they
/// own after a restore. A Secret carries `sealedData` (its `data` sealed by the cluster's key,
/// exactly as stored), never its values in clear: only a cluster with the same cluster secret
/// can restore it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// The cluster that made the backup.
    pub cluster_id: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// The node that made it.
    pub node_name: String,
    /// A fingerprint of the key that sealed the Secrets' data (derived one-way from the
    /// cluster secret; it reveals nothing of the key). A restore compares it with its own
    /// before anything is written.
    pub secrets_key_id: String,
    /// The objects, namespaces first, in the shape the API shows them (without status).
    pub items: Vec<serde_json::Value>,
}
