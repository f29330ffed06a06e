//! Node objects: rendered from observed state (nodes register themselves; users never apply
//! them).

use serde_json::{Value, json};

use crate::observed::{NodeRecord, ObservedHandle};

pub fn list(observed: &ObservedHandle) -> Vec<Value> {
    observed.snapshot().values().map(render).collect()
}

pub fn get(observed: &ObservedHandle, name: &str) -> Option<Value> {
    observed.snapshot().get(name).map(render)
}

fn render(r: &NodeRecord) -> Value {
    let memory = format!("{}Ki", r.memory_bytes / 1024);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": r.name,
            "creationTimestamp": crate::time::rfc3339(r.started_at),
            "labels": {
                "kubernetes.io/hostname": r.name,
                "node-role.shoal.dev/member": "",
            },
        },
        "spec": {},
        "status": {
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "ShoalReady",
                "message": "shoald is running",
                "lastHeartbeatTime": crate::time::rfc3339(r.heartbeat_at),
            }],
            "addresses": [
                { "type": "InternalIP", "address": r.address },
                { "type": "Hostname", "address": r.name },
            ],
            "capacity": { "cpu": r.cpus.to_string(), "memory": memory },
            "allocatable": { "cpu": r.cpus.to_string(), "memory": memory },
            "nodeInfo": { "shoalVersion": r.shoal_version },
        },
    })
}
