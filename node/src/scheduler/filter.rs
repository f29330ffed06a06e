//! The filters, in their fixed order, and why a pod fits no node.

use std::collections::BTreeMap;
use std::fmt;

use shoal_protocol::kinds::TaintEffect;

use super::input::{NodeInfo, PodRequest, Taint, UNSCHEDULABLE_TAINT_KEY};

/// The filters, in the order they run on a node; a node that fails one is counted under it
/// alone. The order is Kubernetes' (NodeUnschedulable, TaintToleration, NodeAffinity,
/// NodePorts, NodeResourcesFit, VolumeBinding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Filter {
    /// Cordoned, and the pod does not tolerate it.
    Unschedulable,
    /// A `NoSchedule` or `NoExecute` taint the pod does not tolerate.
    Taints,
    /// `nodeSelector` or required node affinity.
    NodeAffinity,
    HostPorts,
    Cpu,
    Memory,
    /// The pod's node-local volumes live on another node.
    VolumeNode,
}

/// Why a node cannot take a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    InsufficientCpu,
    InsufficientMemory,
    NodeAffinity,
    /// The first taint of the node the pod does not tolerate.
    UntoleratedTaint {
        key: String,
        value: String,
    },
    Unschedulable,
    HostPorts,
    VolumeNodeAffinity,
}

impl fmt::Display for Reason {
    /// Kubernetes' texts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::InsufficientCpu => f.write_str("Insufficient cpu"),
            Reason::InsufficientMemory => f.write_str("Insufficient memory"),
            Reason::NodeAffinity => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::HostPorts => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::VolumeNodeAffinity => f.write_str("node(s) had volume node affinity conflict"),
        }
    }
}

/// No node can take the pod: how many nodes there were, and how many failed for each reason
/// (each node once, under the first filter it failed), sorted by the reason's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Unschedulable {
    pub nodes: usize,
    pub reasons: Vec<(Reason, usize)>,
}

impl Unschedulable {
    /// Counts each node's reason; the order of `reasons` is the message's.
    pub fn from_reasons(nodes: usize, reasons: impl IntoIterator<Item = Reason>) -> Unschedulable {
        let mut by_text: BTreeMap<String, (Reason, usize)> = BTreeMap::new();
        for r in reasons {
            by_text.entry(r.to_string()).or_insert((r, 0)).1 += 1;
        }
        Unschedulable {
            nodes,
            reasons: by_text.into_values().collect(),
        }
    }

    /// How many nodes failed for `reason`.
    pub fn count(&self, reason: &Reason) -> usize {
        self.reasons
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

impl fmt::Display for Unschedulable {
    /// `0/3 nodes are available: 2 Insufficient memory, 1 node(s) were unschedulable.`, as
    /// Kubernetes' scheduler says it; with no node at all, `no nodes available to schedule
    /// pods`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available", self.nodes)?;
        for (i, (reason, n)) in self.reasons.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            write!(f, "{n} {reason}")?;
        }
        f.write_str(".")
    }
}

/// The reasons a message of [`Unschedulable`] names, without their counts and the node total
/// (sorted); `None` for text it did not write. Pure.
fn message_reasons(message: &str) -> Option<Vec<&str>> {
    if message == "no nodes available to schedule pods" {
        return Some(Vec::new());
    }
    let rest = message.strip_prefix("0/")?;
    let (total, rest) = rest.split_once(" nodes are available")?;
    total.parse::<usize>().ok()?;
    if rest == "." {
        return Some(Vec::new());
    }
    let mut reasons: Vec<&str> = rest
        .strip_prefix(": ")?
        .strip_suffix('.')?
        .split(", ")
        .map(|item| {
            let (count, reason) = item.split_once(' ')?;
            count.parse::<usize>().ok()?;
            Some(reason)
        })
        .collect::<Option<_>>()?;
    reasons.sort_unstable();
    Some(reasons)
}

/// Whether two scheduler messages name the same reasons (whatever their counts): a slot keeps
/// the message it has then, so that the desired state is not rewritten each time a node comes
/// or goes while the pod still fits nowhere for the same reasons. Pure.
pub fn same_reasons(old: &str, new: &str) -> bool {
    match (message_reasons(old), message_reasons(new)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// How a node's labels and taints judge a pod (the filters that depend only on the node and
/// the pod's constraints, cached per owner): the first of them that fails, else how many
/// `PreferNoSchedule` taints the pod does not tolerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StaticFit {
    pub fail: Option<Filter>,
    pub prefer_avoid: u16,
}

pub(super) fn static_fit(node: &NodeInfo, pod: &PodRequest) -> StaticFit {
    let fail = if cordon_blocks(node, pod) {
        Some(Filter::Unschedulable)
    } else if untolerated_taint(node, pod).is_some() {
        Some(Filter::Taints)
    } else if !matches_node(node, pod) {
        Some(Filter::NodeAffinity)
    } else {
        None
    };
    let prefer_avoid = node
        .taints
        .iter()
        .filter(|t| t.effect == TaintEffect::PreferNoSchedule && !t.tolerated_by(&pod.tolerations))
        .count();
    StaticFit {
        fail,
        prefer_avoid: u16::try_from(prefer_avoid).unwrap_or(u16::MAX),
    }
}

fn cordon_blocks(node: &NodeInfo, pod: &PodRequest) -> bool {
    node.unschedulable
        && !pod
            .tolerations
            .iter()
            .any(|t| t.tolerates(UNSCHEDULABLE_TAINT_KEY, "", TaintEffect::NoSchedule))
}

/// The first `NoSchedule` or `NoExecute` taint of the node that the pod does not tolerate.
fn untolerated_taint<'a>(node: &'a NodeInfo, pod: &PodRequest) -> Option<&'a Taint> {
    node.taints
        .iter()
        .find(|t| t.effect != TaintEffect::PreferNoSchedule && !t.tolerated_by(&pod.tolerations))
}

fn matches_node(node: &NodeInfo, pod: &PodRequest) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod
            .affinity
            .as_ref()
            .is_none_or(|a| a.matches(&node.labels))
}

/// The reason a node failed `filter`, for the message.
pub(super) fn reason(filter: Filter, node: &NodeInfo, pod: &PodRequest) -> Reason {
    match filter {
        Filter::Unschedulable => Reason::Unschedulable,
        Filter::Taints => match untolerated_taint(node, pod) {
            // A taint with the cordon's key is a cordon, as users see it.
            Some(t) if t.key == UNSCHEDULABLE_TAINT_KEY => Reason::Unschedulable,
            Some(t) => Reason::UntoleratedTaint {
                key: t.key.clone(),
                value: t.value.clone(),
            },
            None => Reason::Unschedulable,
        },
        Filter::NodeAffinity => Reason::NodeAffinity,
        Filter::HostPorts => Reason::HostPorts,
        Filter::Cpu => Reason::InsufficientCpu,
        Filter::Memory => Reason::InsufficientMemory,
        Filter::VolumeNode => Reason::VolumeNodeAffinity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_with_the_same_reasons_are_alike_whatever_the_counts() {
        let m = "0/3 nodes are available: 2 Insufficient memory, 1 node(s) were unschedulable.";
        for (other, same) in [
            (m, true),
            (
                "0/4 nodes are available: 3 Insufficient memory, 1 node(s) were unschedulable.",
                true,
            ),
            (
                "0/2 nodes are available: 1 node(s) were unschedulable, 1 Insufficient memory.",
                true,
            ),
            ("0/3 nodes are available: 3 Insufficient memory.", false),
            ("no nodes available to schedule pods", false),
            ("something else", false),
        ] {
            assert_eq!(same_reasons(m, other), same, "{other}");
        }
        assert!(same_reasons(
            "no nodes available to schedule pods",
            "no nodes available to schedule pods"
        ));
        assert!(!same_reasons("garbage", "garbage"));
    }
}
