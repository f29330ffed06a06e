//! Object metadata shared by every kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `metadata` of an object. The server sets `uid`, `generation`, `resourceVersion` and
/// `creationTimestamp`; values for them in a manifest are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// The objects this one belongs to (a ReplicaSet's Deployment). Set by shoal's
    /// controllers; ignored in manifests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

/// A link from an object to the object that owns it, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
}

/// Metadata fields that only the server sets: removed from manifests before they are read,
/// and replaced by the store on every write.
pub const SERVER_SET_METADATA: &[&str] = &[
    "uid",
    "generation",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Metadata a manifest may carry (as `kubectl get -o yaml` prints it) but that only shoal's
/// controllers set: ignored in manifests, kept when a controller writes it.
pub const CONTROLLER_SET_METADATA: &[&str] = &["ownerReferences"];
