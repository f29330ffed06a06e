//! Service: a stable name and port for the pods its selector picks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::intstr::IntOrString;
use crate::kinds::Protocol;
use crate::meta::ObjectMeta;
use crate::serde_util::is_default;

/// A Service (`v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ServiceSpec,
}

/// What a Service exposes and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// `ClusterIP` by default.
    #[serde(rename = "type", default)]
    pub type_: ServiceType,
    /// `None` makes the Service headless: DNS answers the pods' own addresses and no port is
    /// forwarded. Otherwise empty or an IP address, which shoal does not use.
    #[serde(rename = "clusterIP", default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// At least one, unless headless.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// The labels of the pods behind the Service; without one, it has no endpoints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// `None` by default; `ClientIP` keeps a client on one endpoint.
    #[serde(default, skip_serializing_if = "is_default")]
    pub session_affinity: ServiceAffinity,
    /// Only for `NodePort` and `LoadBalancer`; `Cluster` by default for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
}

impl ServiceSpec {
    /// Whether the Service is headless (`clusterIP: None`).
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some("None")
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Required when the Service has several ports.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// The Service's own port.
    #[serde(default)]
    pub port: i32,
    /// The pods' port, by number or by the name of a container port; `port` by default.
    #[serde(default = "IntOrString::zero")]
    pub target_port: IntOrString,
    /// The port every node listens on, for `NodePort` and `LoadBalancer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

/// How a Service is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// Whether a client sticks to one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceAffinity {
    #[default]
    None,
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// Whether external traffic may be forwarded to another node's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

impl Service {
    /// Fills defaults: `targetPort` from `port`, `externalTrafficPolicy` for node ports.
    pub fn default_fields(&mut self) {
        for p in &mut self.spec.ports {
            if p.target_port.is_unset() {
                p.target_port = IntOrString::Int(p.port);
            }
        }
        if matches!(
            self.spec.type_,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) && self.spec.external_traffic_policy.is_none()
        {
            self.spec.external_traffic_policy = Some(TrafficPolicy::Cluster);
        }
    }
}
