//! Services as the API shows them: their computed `status` (DNS name, endpoint counts) and
//! their Endpoints, Kubernetes' `v1/Endpoints` computed on every read from each Service's
//! selector, the pods and what nodes observe ([`crate::dns::records::endpoints`], the same
//! function the DNS answers come from). Nothing here is stored.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};
use shoal_protocol::Kind;
use shoal_protocol::kinds::Service;

use super::ApiState;
use super::error::ApiError;
use crate::dns::feed::{heard_nodes, pod_entries, services};
use crate::dns::records::{Endpoint, PodEntry, endpoints, service_name};

/// What Service status and Endpoints read, loaded once per request.
pub struct ServiceInputs {
    pub services: Vec<Service>,
    pub pods: Vec<PodEntry>,
    pub nodes: BTreeMap<String, IpAddr>,
    pub domain: String,
}

impl ServiceInputs {
    pub async fn load(api: &ApiState) -> Result<ServiceInputs, ApiError> {
        Ok(ServiceInputs {
            services: services(&api.state).await?,
            pods: pod_entries(&api.state, &api.observed).await?,
            nodes: heard_nodes(&api.observed),
            domain: api.cluster.domain().to_string(),
        })
    }

    /// The `status` of a Service: its DNS name and how many of its endpoints are ready.
    pub fn status_of(&self, svc: &Service) -> Value {
        let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
        let eps = endpoints(svc, &self.pods, &self.nodes);
        // The port every node serves each of its ports on (see `proxy::table::node_ports`):
        // the nodePort or port, or an automatic one when another Service holds the port.
        let plan = crate::proxy::table::node_ports(&self.services);
        let id = format!("{namespace}/{}", svc.metadata.name);
        let node_ports: Vec<Value> = (0..svc.spec.ports.len())
            .map(|i| plan.get(&id, i).map(Value::from).unwrap_or(Value::Null))
            .collect();
        let mut status = json!({
            "dnsName": service_name(&svc.metadata.name, namespace, &self.domain),
            "endpoints": eps.len(),
            "readyEndpoints": eps.iter().filter(|e| e.ready).count(),
        });
        if !svc.spec.is_headless() {
            status["nodePorts"] = Value::from(node_ports);
        }
        status
    }

    fn endpoints_object(&self, svc: &Service) -> Value {
        let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
        let eps = endpoints(svc, &self.pods, &self.nodes);
        let address = |e: &Endpoint| {
            let ip = e
                .pod_ip
                .clone()
                .or_else(|| e.node_address.map(|a| a.to_string()))
                .unwrap_or_default();
            json!({
                "ip": ip,
                "nodeName": e.node,
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": e.pod},
            })
        };
        let ready: Vec<Value> = eps.iter().filter(|e| e.ready).map(address).collect();
        let not_ready: Vec<Value> = eps.iter().filter(|e| !e.ready).map(address).collect();
        let ports: Vec<Value> = svc
            .spec
            .ports
            .iter()
            .map(|p| {
                let mut v = json!({
                    "port": p.port,
                    "protocol": serde_json::to_value(p.protocol).unwrap_or(Value::Null),
                });
                if !p.name.is_empty() {
                    v["name"] = Value::from(p.name.clone());
                }
                v
            })
            .collect();
        let mut subset = json!({ "ports": ports });
        if !ready.is_empty() {
            subset["addresses"] = Value::from(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = Value::from(not_ready);
        }
        let subsets = if eps.is_empty() {
            Vec::new()
        } else {
            vec![subset]
        };
        let mut metadata = json!({"name": svc.metadata.name, "namespace": namespace});
        if !svc.metadata.labels.is_empty() {
            metadata["labels"] = json!(svc.metadata.labels);
        }
        if let Some(t) = &svc.metadata.creation_timestamp {
            metadata["creationTimestamp"] = Value::from(t.clone());
        }
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": metadata,
            "subsets": subsets,
        })
    }
}

/// The Endpoints of every Service of a namespace, or of all.
pub async fn list_endpoints(
    api: &ApiState,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let inputs = ServiceInputs::load(api).await?;
    Ok(inputs
        .services
        .iter()
        .filter(|s| namespace.is_none_or(|ns| s.metadata.namespace.as_deref() == Some(ns)))
        .map(|s| inputs.endpoints_object(s))
        .collect())
}

/// The Endpoints of one Service.
pub async fn get_endpoints(api: &ApiState, namespace: &str, name: &str) -> Result<Value, ApiError> {
    let inputs = ServiceInputs::load(api).await?;
    inputs
        .services
        .iter()
        .find(|s| s.metadata.namespace.as_deref() == Some(namespace) && s.metadata.name == name)
        .map(|s| inputs.endpoints_object(s))
        .ok_or_else(|| ApiError::not_found(Kind::Endpoints, Some(namespace), name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use shoal_protocol::Resource;

    use super::*;

    fn inputs() -> ServiceInputs {
        let svc = match Resource::from_value(
            Kind::Service,
            json!({"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}}),
        )
        .unwrap()
        {
            Resource::Service(s) => s,
            _ => unreachable!(),
        };
        let pod = |name: &str, node: &str, ready: bool, ip: Option<&str>| PodEntry {
            namespace: "default".into(),
            name: name.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            node: node.into(),
            ready,
            pod_ip: ip.map(str::to_string),
            routed: false,
            named_ports: Default::default(),
            hostname: None,
            subdomain: None,
        };
        ServiceInputs {
            services: vec![svc],
            pods: vec![
                pod("web-a", "n1", true, Some("172.18.0.2")),
                pod("web-b", "n2", false, None),
                pod("web-c", "gone", true, None),
            ],
            nodes: [
                ("n1".to_string(), "127.0.0.11".parse().unwrap()),
                ("n2".to_string(), "127.0.0.12".parse().unwrap()),
            ]
            .into(),
            domain: "shoal.home.arpa".into(),
        }
    }

    #[test]
    fn service_status_names_the_service_and_counts_ready_endpoints() {
        let i = inputs();
        let st = i.status_of(&i.services[0]);
        assert_eq!(st["dnsName"], "web.default.svc.shoal.home.arpa");
        assert_eq!(st["endpoints"], 3);
        // web-b is not ready and web-c's node is not heard.
        assert_eq!(st["readyEndpoints"], 1);
    }

    #[test]
    fn endpoints_split_ready_and_not_ready_addresses() {
        let i = inputs();
        let e = i.endpoints_object(&i.services[0]);
        assert_eq!(e["kind"], "Endpoints");
        let subset = &e["subsets"][0];
        assert_eq!(subset["addresses"][0]["ip"], "172.18.0.2");
        assert_eq!(subset["addresses"][0]["targetRef"]["name"], "web-a");
        let not_ready: Vec<&str> = subset["notReadyAddresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["targetRef"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(not_ready, vec!["web-b", "web-c"]);
        assert_eq!(subset["ports"][0]["port"], 8080);
        assert_eq!(subset["ports"][0]["name"], "http");
        assert_eq!(subset["ports"][0]["protocol"], "TCP");
    }
}
