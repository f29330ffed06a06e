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
            })
        })
        .collect();
    let holder = view
        .values()
        .find(|n| n.roles.contains(&CONTROLLER_ROLE))
        .map(|n| n.name.clone());
    Ok(Json(json!({
        "node": &*api.node_name,
        "clusterId": &*api.cluster_id,
        "peerId": &*api.cluster.peer_id,
        "shoalVersion": shoal_protocol::VERSION,
        "digest": digest,
        "objects": stats.objects,
        "members": members,
        "roles": [{ "role": CONTROLLER_ROLE, "holder": holder }],
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
