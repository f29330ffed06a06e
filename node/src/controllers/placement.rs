//! Placement: which node each slot goes to, through the scheduler ([`crate::scheduler`]).
//!
//! One round ([`place`]) builds a [`Schedule`] from the alive nodes (capacity from membership,
//! labels, taints and cordon from the registered Node objects), counts every slot that keeps
//! its node, then places the slots that need one in a fixed order (namespace, owner, replica
//! index), each seeing those before it. A slot keeps its node while that node is known (a
//! membership record or a registration) and not [`Nodes::movable`]: a node dead (or gone)
//! for longer than the grace period loses its slots to the others, while a shorter flap moves
//! nothing. A slot that fits nowhere stays without a node and carries the
//! scheduler's message (`0/3 nodes are available: 3 Insufficient memory.`), which the pod's
//! `PodScheduled` condition shows.
//!
//! Spread ([`place_spread`]): slots merged from two controllers (each side of a healed
//! partition moved the other's pods onto its own nodes) can leave an owner's pods packed on one
//! node. For the owners the caller names (settled ReplicaSets: every replica ready, no rollout,
//! no drain), at most one slot per owner and round moves from the node holding the most of
//! its pods to the node the scheduler picks, and only when that node holds at least two fewer:
//! each move makes the spread strictly more even, so the moves end, one ready pod at a time.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use shoal_protocol::cluster::Slot;

use crate::observed::{Liveness, NodeRecord};
use crate::scheduler::{NodeInfo, OwnerKey, PodRequest, Schedule};

/// The nodes placement may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes {
    /// Nodes that may take new slots (heartbeat recent enough), as the scheduler sees them.
    pub alive: Vec<NodeInfo>,
    /// Every node with a record or a registration, alive or not: a slot keeps a node that is
    /// still known, unless it is movable.
    pub known: BTreeSet<String>,
    /// Known nodes whose slots go elsewhere: dead (or departed) for longer than the grace.
    pub movable: BTreeSet<String>,
    /// Known nodes that announced they left (a graceful stop of `shoald`: their containers
    /// may still run).
    pub left: BTreeSet<String>,
    /// Nodes being drained, and whether by force (every pod at once, not within each
    /// workload's maxUnavailable).
    pub draining: BTreeMap<String, bool>,
    /// This node has seen a majority of the known nodes only for a short while (less than a
    /// node takes to become movable): StatefulSet pods do not move off nodes it cannot hear
    /// yet, since it may hear them in a moment (a partition just healed).
    pub majority_settling: bool,
    /// Movable nodes that are alive but whose container engine has been unavailable for
    /// longer than the grace (`controllers::engine`): why their pods move, for events.
    pub engine_unavailable: BTreeSet<String>,
    /// Known nodes whose engine did not answer when last heard, alive or not: their agent
    /// cannot stop their containers, so their StatefulSet pods may run on whatever happens
    /// (`controllers::engine::unstoppable`).
    pub unstoppable: BTreeSet<String>,
    /// Pods that nodes which cannot be heard now (dead or departed, still known) reported
    /// when last heard, with those nodes: a copy may still run there.
    pub unheard_reports: BTreeMap<String, BTreeSet<String>>,
}

impl Nodes {
    /// The nodes of membership: every known one, alive as membership judges (this node always
    /// is). An alive node's capacity comes from its record, its labels, taints and cordon from
    /// its registered Node object in `node_objects` (any other object is ignored).
    pub fn from_members<'a>(
        members: impl IntoIterator<Item = (&'a NodeRecord, Liveness)>,
        node_objects: &[Value],
    ) -> Nodes {
        let objects: BTreeMap<&str, &Value> = node_objects
            .iter()
            .filter_map(|o| Some((o.pointer("/metadata/name")?.as_str()?, o)))
            .collect();
        let mut nodes = Nodes::default();
        for o in node_objects {
            let (Some(name), Some(mode)) = (
                o.pointer("/metadata/name").and_then(Value::as_str),
                o.pointer("/metadata/annotations")
                    .and_then(|a| a.get(crate::nodes::DRAIN_ANNOTATION))
                    .and_then(Value::as_str),
            ) else {
                continue;
            };
            nodes.draining.insert(name.to_string(), mode == "force");
        }
        for (record, liveness) in members {
            nodes.known.insert(record.name.clone());
            if liveness == Liveness::Left {
                nodes.left.insert(record.name.clone());
            }
            if liveness == Liveness::Alive {
                let mut info = NodeInfo::from_record(record);
                if let Some(object) = objects.get(record.name.as_str()) {
                    info = info.with_node_object(object);
                }
                nodes.alive.push(info);
            }
        }
        nodes
    }

    /// These nodes, all alive.
    pub fn alive(alive: impl IntoIterator<Item = NodeInfo>) -> Nodes {
        let alive: Vec<NodeInfo> = alive.into_iter().collect();
        Nodes {
            known: alive.iter().map(|n| n.name.clone()).collect(),
            alive,
            movable: BTreeSet::new(),
            left: BTreeSet::new(),
            draining: BTreeMap::new(),
            majority_settling: false,
            engine_unavailable: BTreeSet::new(),
            unstoppable: BTreeSet::new(),
            unheard_reports: BTreeMap::new(),
        }
    }

    /// One alive node, with room to spare (4 CPUs, 8 GiB).
    pub fn single(name: &str) -> Nodes {
        Nodes::alive(
            [NodeInfo::new(name, 4000, 8 << 30).with_label("kubernetes.io/hostname", name)],
        )
    }

    /// Whether a slot on `node` keeps it.
    pub fn keeps(&self, node: &str) -> bool {
        !node.is_empty() && self.known.contains(node) && !self.movable.contains(node)
    }
}

/// Gives every slot of `slots` a node: its own while that node is known, else the
/// scheduler's choice among the alive nodes. `request` tells what a slot's pod needs (its
/// owner's template); a slot without one is left as it is. A slot that fits nowhere gets no
/// node and the scheduler's message in `unschedulable`; every other slot's is cleared.
pub fn place<'a>(
    slots: impl IntoIterator<Item = &'a mut Slot>,
    nodes: &Nodes,
    request: impl Fn(&Slot) -> Option<PodRequest>,
) {
    place_spread(slots, nodes, request, &BTreeSet::new());
}

/// [`place`], then moves at most one slot of each owner in `spread` toward an even spread
/// (see the module documentation). No slot of an owner that had slots to place this round
/// moves, nor any while a node is being drained.
pub fn place_spread<'a>(
    slots: impl IntoIterator<Item = &'a mut Slot>,
    nodes: &Nodes,
    request: impl Fn(&Slot) -> Option<PodRequest>,
    spread: &BTreeSet<OwnerKey>,
) {
    let mut kept: Vec<(&'a mut Slot, PodRequest)> = Vec::new();
    let mut placing: BTreeSet<OwnerKey> = BTreeSet::new();
    let mut schedule = Schedule::new(nodes.alive.iter().cloned(), &BTreeMap::new());
    let mut to_place: Vec<(&'a mut Slot, PodRequest)> = Vec::new();
    for slot in slots {
        let Some(pod) = request(slot) else { continue };
        if nodes.keeps(&slot.node) {
            schedule.assign(&slot.node, &pod);
            slot.unschedulable = None;
            if spread.contains(&pod.owner) {
                kept.push((slot, pod));
            }
        } else {
            placing.insert(pod.owner.clone());
            to_place.push((slot, pod));
        }
    }
    // A fixed order, so that every node that plans from the same inputs places alike.
    to_place.sort_by(|(a, _), (b, _)| {
        (&a.namespace, &a.owner_kind, &a.owner_name, a.index, &a.pod).cmp(&(
            &b.namespace,
            &b.owner_kind,
            &b.owner_name,
            b.index,
            &b.pod,
        ))
    });
    for (slot, pod) in to_place {
        match schedule.place(&pod) {
            Ok(node) => {
                slot.node = node;
                slot.unschedulable = None;
            }
            Err(why) => {
                slot.node = String::new();
                // The same reasons with other counts (a node came or went) keep the message
                // written: the slot is not rewritten into the document's history for it.
                let why = why.to_string();
                if !slot
                    .unschedulable
                    .as_deref()
                    .is_some_and(|old| crate::scheduler::filter::same_reasons(old, &why))
                {
                    slot.unschedulable = Some(why);
                }
            }
        }
    }
    if !nodes.draining.is_empty() {
        return;
    }
    let mut by_owner: BTreeMap<OwnerKey, Vec<(&'a mut Slot, PodRequest)>> = BTreeMap::new();
    for (slot, pod) in kept {
        if !placing.contains(&pod.owner) {
            by_owner
                .entry(pod.owner.clone())
                .or_default()
                .push((slot, pod));
        }
    }
    for (owner, mut slots) in by_owner {
        let counts = schedule.owner_counts(&owner);
        let Some(from) = spread_source(&counts) else {
            continue;
        };
        // The highest index on the fullest node moves: a fixed choice, as in placement.
        slots.sort_by_key(|(s, _)| std::cmp::Reverse(s.index));
        let Some((slot, pod)) = slots.into_iter().find(|(s, _)| s.node == from) else {
            continue;
        };
        if let Some(to) = schedule.spread_from(&from, &pod) {
            tracing::info!(pod = %slot.key(), from = %from, to = %to,
                "moving a pod to spread its owner's replicas");
            slot.node = to;
        }
    }
}

/// The node holding the most pods of one owner among `counts` (the first name on a tie), if
/// it holds at least two: only then can a move make the spread more even. Pure.
pub fn spread_source(counts: &BTreeMap<String, u32>) -> Option<String> {
    let mut best: Option<(&String, u32)> = None;
    for (name, &n) in counts {
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((name, n));
        }
    }
    best.filter(|(_, n)| *n >= 2).map(|(name, _)| name.clone())
}
