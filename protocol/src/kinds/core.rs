//! Namespace, ConfigMap, Secret and PersistentVolumeClaim.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kinds::ResourceRequirements;
use crate::meta::ObjectMeta;
use crate::selector::LabelSelector;
use crate::serde_util::{base64_map, is_false};

/// The default `type` of a Secret.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";

/// A namespace (`v1`). It has no fields of its own besides metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Accepted only empty (`spec: {}`), as `kubectl create namespace -o yaml` writes it.
    #[serde(default, skip_serializing)]
    pub spec: NamespaceSpec,
}

/// The (empty) spec of a namespace: shoal supports none of its Kubernetes fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {}

impl Namespace {
    /// Fills defaults (a namespace has none).
    pub fn default_fields(&mut self) {}
}

/// A ConfigMap (`v1`): text (`data`) and binary (`binaryData`) entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Decoded bytes; written as base64 strings.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "base64_map"
    )]
    pub binary_data: BTreeMap<String, Vec<u8>>,
    /// Once true, the data can no longer change.
    #[serde(default, skip_serializing_if = "is_false")]
    pub immutable: bool,
}

impl ConfigMap {
    /// Fills defaults (a ConfigMap has none).
    pub fn default_fields(&mut self) {}
}

/// A Secret (`v1`). `stringData` of a manifest is merged into `data` when it is read (its
/// keys win, as in Kubernetes), so the typed and stored form holds only `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `Opaque` by default; `kubernetes.io/tls` and `kubernetes.io/dockerconfigjson` require
    /// their keys.
    #[serde(rename = "type", default = "default_secret_type")]
    pub type_: String,
    /// Decoded bytes; written as base64 strings, as Kubernetes does.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "base64_map"
    )]
    pub data: BTreeMap<String, Vec<u8>>,
    /// Once true, the data can no longer change.
    #[serde(default, skip_serializing_if = "is_false")]
    pub immutable: bool,
}

fn default_secret_type() -> String {
    SECRET_TYPE_OPAQUE.to_string()
}

impl Default for Secret {
    fn default() -> Self {
        Secret {
            metadata: ObjectMeta::default(),
            type_: default_secret_type(),
            data: BTreeMap::new(),
            immutable: false,
        }
    }
}

impl Secret {
    /// Fills defaults: an empty `type` becomes `Opaque`.
    pub fn default_fields(&mut self) {
        if self.type_.is_empty() {
            self.type_ = default_secret_type();
        }
    }
}

/// A PersistentVolumeClaim (`v1`); also the shape of a StatefulSet's `volumeClaimTemplates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaim {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: PersistentVolumeClaimSpec,
}

/// What a claim asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolumeClaimSpec {
    /// At least one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<AccessMode>,
    /// `requests.storage` is required; `storage` is the only resource of a claim.
    #[serde(default)]
    pub resources: ResourceRequirements,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// `Filesystem` (the default and the only mode shoal supports).
    #[serde(default)]
    pub volume_mode: VolumeMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl PersistentVolumeClaim {
    /// Fills defaults (they are all serde defaults).
    pub fn default_fields(&mut self) {}
}

/// How a volume may be mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadOnlyMany,
    ReadWriteMany,
    ReadWriteOncePod,
}

/// Whether a claim is a filesystem or a raw block device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VolumeMode {
    #[default]
    Filesystem,
    Block,
}
