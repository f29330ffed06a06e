//! Pure data of shoal: resource kinds and their validation, manifest parsing (YAML and JSON,
//! multi-document), and the HTTP API's request and response types.
//!
//! No I/O and no async runtime live here: the daemon (`shoal-node`), the CLI (`shoal-cli`) and
//! the test harness (`shoal-testnet`) all depend on this crate and share its types.
//!
//! # Layout
//! - [`kind`]: the registry of resource kinds (API group, plural, aliases, scope).
//! - [`meta`]: object metadata shared by every kind.
//! - [`kinds`]: the typed resources (Namespace, ConfigMap, Secret, Service, Pod, Deployment,
//!   StatefulSet, PersistentVolumeClaim) with their defaults.
//! - [`resource`]: [`Resource`], one value of any supported kind.
//! - [`manifest`]: parsing multi-document manifests into validated resources.
//! - [`quantity`], [`selector`], [`intstr`]: Kubernetes quantities (`100m`, `128Mi`), label
//!   selectors, and int-or-string fields (`targetPort`, `maxSurge`).
//! - [`validation`]: the rules of names, labels and every kind's fields.
//! - [`error`]: field errors that name the path of what is wrong.
//! - [`status`]: observed pod status, in Kubernetes' shape.
//! - [`cluster`]: the cluster-state schema beyond user objects (pod slots).
//! - [`api`]: the JSON shapes of the HTTP API.
//! - [`exec`]: the framing of interactive exec streams.
//! - [`time`]: RFC 3339 timestamps, formatted and parsed.
//! - [`paths`]: the default data directory, which the node and the CLI must agree on.

pub mod api;
pub mod cluster;
pub mod error;
pub mod exec;
pub mod intstr;
pub mod kind;
pub mod kinds;
pub mod manifest;
pub mod meta;
pub mod paths;
pub mod quantity;
pub mod resource;
pub mod selector;
mod serde_util;
pub mod status;
pub mod time;
pub mod validation;

pub use error::{FieldError, ManifestErrors};
pub use kind::Kind;
pub use meta::ObjectMeta;
pub use resource::Resource;

/// The version of shoal, shared by every binary.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
