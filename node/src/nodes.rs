//! The cluster's nodes: who belongs to the cluster, and how each is doing.
//!
//! Two sources, as everywhere in shoal:
//! - **registry** (desired state): every node writes a Node object about itself, its name and
//!   peer id, once when it first starts (and again if it finds it gone). It is small and
//!   changes only when a node joins or is deleted, so the document stays bounded. It is what
//!   makes a dead node still known after the whole cluster restarts, and what
//!   `shoal delete node` removes.
//! - **membership** (observed state, [`crate::observed`]): heartbeats, capacity, liveness.
//!
//! [`view`] joins both: registered nodes with their liveness (a registered node not heard
//! since this process started is suspect, then dead), and members not (yet) registered while
//! they are alive. A dead or departed node that was deleted from the registry is gone.
//!
//! Leader roles: until issue 5 brings leases, the controller role goes to the alive member
//! with the lowest peer id, as each node sees it ([`controller`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_protocol::Kind;
use tokio_util::sync::CancellationToken;

use crate::observed::{Liveness, Member, NodeRecord, ObservedHandle};
use crate::state::{StateError, StateHandle};

/// The annotation of a registered Node that holds its libp2p peer id.
pub const PEER_ID_ANNOTATION: &str = "shoal.dev/peer-id";

/// The name of the one role so far.
pub const CONTROLLER_ROLE: &str = "controller";

/// One node as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: String,
    /// When it registered (RFC 3339), if its registration has reached this node.
    pub created: Option<String>,
    pub peer_id: String,
    pub liveness: Liveness,
    /// When this node last heard from it (Unix seconds).
    pub last_seen: Option<i64>,
    /// Its last record, if this node has heard from it since it started.
    pub record: Option<NodeRecord>,
    pub roles: Vec<&'static str>,
}

/// The Node object a node registers for itself.
pub fn registration(name: &str, peer_id: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/hostname": name },
            "annotations": { PEER_ID_ANNOTATION: peer_id },
        },
    })
}

/// Writes this node's registration unless the same is there already (then nothing is
/// written).
pub async fn register(state: &StateHandle, name: &str, peer_id: &str) -> Result<(), StateError> {
    if let Some(o) = state.get(Kind::Node, None, name).await? {
        let registered = o
            .value
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(PEER_ID_ANNOTATION))
            .and_then(Value::as_str);
        if registered == Some(peer_id) {
            return Ok(());
        }
    }
    state
        .apply_values(vec![(Kind::Node, registration(name, peer_id))])
        .await?;
    tracing::info!(node = %name, "registered this node");
    Ok(())
}

/// Keeps this node registered: at once, then every `every` (a node deleted while it was
/// thought dead registers again when it is back).
pub async fn keep_registered(
    state: StateHandle,
    name: String,
    peer_id: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = register(&state, &name, &peer_id).await {
            tracing::warn!(error = %e, "cannot register this node; retrying");
        }
    }
}

/// The holder of the controller role among `members`: the alive one with the lowest peer id
/// (then name).
pub fn controller<'a>(members: impl IntoIterator<Item = &'a Member>) -> Option<String> {
    members
        .into_iter()
        .filter(|m| m.liveness == Liveness::Alive)
        .min_by(|a, b| {
            (a.record.peer_id.as_str(), a.record.name.as_str())
                .cmp(&(b.record.peer_id.as_str(), b.record.name.as_str()))
        })
        .map(|m| m.record.name.clone())
}

/// Every node this node knows of, by name: the registry joined with membership.
pub async fn view(
    state: &StateHandle,
    observed: &ObservedHandle,
) -> Result<BTreeMap<String, NodeView>, StateError> {
    let registered = state.list(Kind::Node, None).await?;
    Ok(join(
        registered.iter().map(|o| &o.value),
        observed.members(),
        observed.unheard(),
    ))
}

/// The join of [`view`]. Pure.
pub fn join<'a>(
    registered: impl IntoIterator<Item = &'a Value>,
    members: BTreeMap<String, Member>,
    unheard: Liveness,
) -> BTreeMap<String, NodeView> {
    let holder = controller(members.values());
    let mut out = BTreeMap::new();
    for v in registered {
        let Some(name) = v.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        let created = v
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .map(str::to_string);
        let peer_id = v
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(PEER_ID_ANNOTATION))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        out.insert(
            name.to_string(),
            NodeView {
                name: name.to_string(),
                created,
                peer_id,
                liveness: unheard,
                last_seen: None,
                record: None,
                roles: Vec::new(),
            },
        );
    }
    for (name, m) in members {
        let registered = out.contains_key(&name);
        if !registered && !matches!(m.liveness, Liveness::Alive | Liveness::Suspect) {
            continue;
        }
        let entry = out.entry(name.clone()).or_insert_with(|| NodeView {
            name: name.clone(),
            created: None,
            peer_id: String::new(),
            liveness: m.liveness,
            last_seen: None,
            record: None,
            roles: Vec::new(),
        });
        entry.liveness = m.liveness;
        entry.last_seen = m.last_seen;
        if !m.record.peer_id.is_empty() {
            entry.peer_id = m.record.peer_id.clone();
        }
        if holder.as_deref() == Some(name.as_str()) {
            entry.roles.push(CONTROLLER_ROLE);
        }
        entry.record = Some(m.record);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn member(name: &str, peer: &str, liveness: Liveness) -> Member {
        Member {
            record: NodeRecord {
                name: name.into(),
                peer_id: peer.into(),
                ..NodeRecord::default()
            },
            liveness,
            last_seen: Some(100),
        }
    }

    #[test]
    fn the_controller_is_the_alive_member_with_the_lowest_peer_id() {
        let ms = [
            member("a", "p3", Liveness::Alive),
            member("b", "p1", Liveness::Dead),
            member("c", "p2", Liveness::Alive),
        ];
        assert_eq!(controller(ms.iter()).as_deref(), Some("c"));
        assert_eq!(controller([].iter()), None);
    }

    #[test]
    fn registry_and_membership_join() {
        let mut reg_b = registration("b", "pb");
        reg_b["metadata"]["creationTimestamp"] = json!("2026-11-25T20:00:00Z");
        let registered = [registration("a", "pa"), reg_b, registration("gone", "pg")];
        let mut members = BTreeMap::new();
        for m in [
            member("a", "pa", Liveness::Alive),
            member("b", "pb", Liveness::Dead),
            // Alive but not registered yet (its registration is on its way): shown.
            member("new", "pn", Liveness::Alive),
            // Dead and deleted from the registry: forgotten.
            member("old", "po", Liveness::Dead),
        ] {
            members.insert(m.record.name.clone(), m);
        }
        let view = join(registered.iter(), members, Liveness::Dead);
        assert_eq!(
            view.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "gone", "new"]
        );
        assert_eq!(view["a"].roles, [CONTROLLER_ROLE]);
        assert_eq!(view["b"].liveness, Liveness::Dead);
        assert_eq!(view["b"].created.as_deref(), Some("2026-11-25T20:00:00Z"));
        // Registered, never heard since this node started.
        assert_eq!(view["gone"].liveness, Liveness::Dead);
        assert_eq!(view["gone"].last_seen, None);
        assert_eq!(view["gone"].peer_id, "pg");
        assert!(view["gone"].record.is_none());
        assert_eq!(view["new"].liveness, Liveness::Alive);
    }
}
