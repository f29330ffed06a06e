//! `GET /shoal/v1/status`: this node's view of the cluster (members, role holders, a digest of
//! the desired state that is equal on two nodes exactly when they hold the same state), and
//! `GET /shoal/v1/join-token`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::nodes::{self, CONTROLLER_ROLE};
use crate::time::rfc3339;

pub async fn status(State(api): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let view = nodes::view(&api.state, &api.observed).await?;
    let digest = api.state.digest().await?;
    let stats = api.state.stats().await?;
    let members: Vec<Value> = view
        .values()
        .map(|n| {
            json!({
                "name": n.name,
                "state": n.liveness.as_str(),
                "address": n.record.as_ref().map(|r| r.address.clone()),
                "version": n.record.as_ref().map(|r| r.shoal_version.clone()),
                "peerId": n.peer_id,
                "lastSeen": n.last_seen.map(rfc3339),
                "roles": n.roles,
                "digest": n.record.as_ref().map(|r| r.state_digest.clone()),
            })
        })
        .collect();
    // Whether every alive node holds this node's state (its own record may lag its store by a
    // moment: the store's digest is what counts for this node).
    let alive: Vec<&nodes::NodeView> = view
        .values()
        .filter(|n| n.liveness == crate::observed::Liveness::Alive)
        .collect();
    let agreeing = alive
        .iter()
        .filter(|n| {
            *n.name == *api.node_name || n.record.as_ref().is_some_and(|r| r.state_digest == digest)
        })
        .count();
    let leases = api.state.leases().await?;
    let mut roles: Vec<Value> = leases
        .values()
        .map(|l| json!({ "role": l.role, "holder": l.holder, "epoch": l.epoch, "since": rfc3339(l.since) }))
        .collect();
    if !leases.contains_key(CONTROLLER_ROLE) {
        roles.push(json!({ "role": CONTROLLER_ROLE, "holder": null, "epoch": 0 }));
    }
    Ok(Json(json!({
        "node": &*api.node_name,
        "clusterId": &*api.cluster_id,
        "peerId": &*api.cluster.peer_id,
        "shoalVersion": shoal_protocol::VERSION,
        "digest": digest,
        "agreement": { "alive": alive.len(), "agreeing": agreeing, "all": agreeing == alive.len() },
        "objects": stats.objects,
        "members": members,
        "roles": roles,
    })))
}

pub async fn join_token(State(api): State<ApiState>) -> Json<Value> {
    Json(json!({
        "token": &*api.cluster.join_token,
        "command": format!(
            "shoald --join {} --token {}",
            api.cluster.p2p_address, api.cluster.join_token
        ),
    }))
}
