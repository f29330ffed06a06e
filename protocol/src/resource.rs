//! [`Resource`]: one object of any supported kind, typed.

use serde_json::Value;

use crate::error::{FieldError, ManifestErrors};
use crate::kind::Kind;
use crate::kinds::{
    ConfigMap, ControllerRevision, Deployment, Namespace, PersistentVolumeClaim, Pod, ReplicaSet,
    Secret, Service, StatefulSet,
};
use crate::meta::ObjectMeta;

/// One object of a kind users can apply, with its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Secret(Secret),
    PersistentVolumeClaim(PersistentVolumeClaim),
    Service(Service),
    Pod(Pod),
    Deployment(Deployment),
    ReplicaSet(ReplicaSet),
    StatefulSet(StatefulSet),
    ControllerRevision(ControllerRevision),
}

macro_rules! each_variant {
    ($self:expr, $r:ident => $body:expr) => {
        match $self {
            Resource::Namespace($r) => $body,
            Resource::ConfigMap($r) => $body,
            Resource::Secret($r) => $body,
            Resource::PersistentVolumeClaim($r) => $body,
            Resource::Service($r) => $body,
            Resource::Pod($r) => $body,
            Resource::Deployment($r) => $body,
            Resource::ReplicaSet($r) => $body,
            Resource::StatefulSet($r) => $body,
            Resource::ControllerRevision($r) => $body,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Namespace(_) => Kind::Namespace,
            Resource::ConfigMap(_) => Kind::ConfigMap,
            Resource::Secret(_) => Kind::Secret,
            Resource::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
            Resource::Service(_) => Kind::Service,
            Resource::Pod(_) => Kind::Pod,
            Resource::Deployment(_) => Kind::Deployment,
            Resource::ReplicaSet(_) => Kind::ReplicaSet,
            Resource::StatefulSet(_) => Kind::StatefulSet,
            Resource::ControllerRevision(_) => Kind::ControllerRevision,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        each_variant!(self, r => &r.metadata)
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_variant!(self, r => &mut r.metadata)
    }

    pub fn name(&self) -> &str {
        &self.meta().name
    }

    pub fn namespace(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }

    /// The `apiVersion` of the object: `v1` or `apps/v1`.
    pub fn api_version(&self) -> &'static str {
        self.kind().api_version()
    }

    /// Fills the defaults that depend on other fields (parsing does it already; call it on
    /// objects built in code).
    pub fn default_fields(&mut self) {
        each_variant!(self, r => r.default_fields())
    }

    /// The object as Kubernetes-shaped JSON (`apiVersion`, `kind`, `metadata`, then the
    /// kind's own fields), without `status`. Secret `data` and ConfigMap `binaryData` are
    /// base64 strings, as in Kubernetes.
    pub fn to_value(&self) -> Value {
        let body = each_variant!(self, r => serde_json::to_value(r)).unwrap_or(Value::Null);
        let mut out = serde_json::Map::new();
        out.insert("apiVersion".into(), Value::from(self.kind().api_version()));
        out.insert("kind".into(), Value::from(self.kind().name()));
        if let Value::Object(map) = body {
            out.extend(map);
        }
        Value::Object(out)
    }

    /// Reads an object of `kind` from JSON, as stored by the node or sent by a client. The
    /// value must already be free of `status` and of fields shoal does not support; errors
    /// name the field path. Defaults are filled in; validation is [`Resource::validate`].
    pub fn from_value(kind: Kind, value: Value) -> Result<Resource, ManifestErrors> {
        crate::manifest::typed_from_value(kind, value)
    }

    /// Every validation error of this object, with field paths.
    pub fn validate(&self) -> Vec<FieldError> {
        crate::manifest::validate(self)
    }
}
