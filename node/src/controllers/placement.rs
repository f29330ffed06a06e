//! Placement: which node a slot goes to. A pure function behind one call ([`place`]), so
//! that the scheduler can replace it without touching the controllers.
//!
//! For now: a slot keeps its node while that node is known; otherwise it goes to an alive
//! node (heartbeat within a few seconds; this node always counts), spreading the replicas of
//! one owner: fewest slots of this owner, then fewest slots in all, then the name.

use std::collections::{BTreeMap, BTreeSet};

use shoal_protocol::cluster::Slot;

use crate::observed::Liveness;

/// The nodes placement may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes {
    /// Nodes that may take new slots: heartbeat recent enough.
    pub alive: BTreeSet<String>,
    /// Every node with a record, alive or not: a slot keeps a node that is still known, so
    /// that a late heartbeat does not move pods.
    pub known: BTreeSet<String>,
}

impl Nodes {
    /// The nodes of membership: every known one, alive as membership judges. `local` (this
    /// process) is always alive.
    pub fn from_members<'a>(
        members: impl IntoIterator<Item = (&'a str, Liveness)>,
        local: &str,
    ) -> Nodes {
        let mut nodes = Nodes::default();
        for (name, liveness) in members {
            nodes.known.insert(name.to_string());
            if liveness == Liveness::Alive {
                nodes.alive.insert(name.to_string());
            }
        }
        if !local.is_empty() {
            nodes.known.insert(local.to_string());
            nodes.alive.insert(local.to_string());
        }
        nodes
    }

    /// One alive node.
    pub fn single(name: &str) -> Nodes {
        let set: BTreeSet<String> = [name.to_string()].into_iter().collect();
        Nodes {
            alive: set.clone(),
            known: set,
        }
    }
}

/// Slots per node, in all and per owner: what spreading looks at. Built from the slots that
/// keep their node, then updated by [`Load::assign`] as a round places more.
#[derive(Debug, Clone, Default)]
pub struct Load {
    total: BTreeMap<String, usize>,
    by_owner: BTreeMap<(String, String, String), BTreeMap<String, usize>>,
}

fn owner(slot: &Slot) -> (String, String, String) {
    (
        slot.namespace.clone(),
        slot.owner_kind.clone(),
        slot.owner_name.clone(),
    )
}

impl Load {
    /// Counts `slot` on `node`.
    pub fn assign(&mut self, slot: &Slot, node: &str) {
        *self.total.entry(node.to_string()).or_default() += 1;
        *self
            .by_owner
            .entry(owner(slot))
            .or_default()
            .entry(node.to_string())
            .or_default() += 1;
    }

    fn of_owner(&self, slot: &Slot, node: &str) -> usize {
        self.by_owner
            .get(&owner(slot))
            .and_then(|m| m.get(node))
            .copied()
            .unwrap_or(0)
    }

    fn total(&self, node: &str) -> usize {
        self.total.get(node).copied().unwrap_or(0)
    }
}

/// The node for `slot`: its own while known, else the alive node with the fewest slots of the
/// same owner, then the fewest slots, then the first name. None when no node is alive.
pub fn place(slot: &Slot, nodes: &Nodes, load: &Load) -> Option<String> {
    if !slot.node.is_empty() && nodes.known.contains(&slot.node) {
        return Some(slot.node.clone());
    }
    nodes
        .alive
        .iter()
        .min_by_key(|n| (load.of_owner(slot, n), load.total(n), n.as_str()))
        .cloned()
}
