//! The scheduler: which node a pod goes to. A pure, deterministic function of the nodes, what
//! they already hold and the pod: no I/O, no clock, no randomness, so that every node that
//! sees the same inputs writes the same slot assignments (see "Scheduling: slots, not
//! messages" in the architecture).
//!
//! Owns nothing beyond one call: the controllers build the inputs from the document (slots,
//! templates, Node objects) and observed state (node records), call [`schedule`] or a
//! [`Schedule`] batch, and write the slots.
//!
//! A pod goes through the filters in a fixed order (Kubernetes'): cordon, taints, node
//! selector and required node affinity, host ports, CPU, memory, node-local volumes. Among
//! the nodes that pass every filter it takes, in this order:
//! 1. the fewest pods of the same owner (spreading replicas);
//! 2. the fewest `PreferNoSchedule` taints it does not tolerate;
//! 3. the most free: the average of the free fractions of CPU and memory once it is placed
//!    (least allocated, counting Kubernetes' default requests for containers without any);
//! 4. the first name.
//!
//! When no node passes, the error says why in Kubernetes' words, counting each node once
//! under the first filter it failed: `0/3 nodes are available: 2 Insufficient memory, 1
//! node(s) were unschedulable.` (`docs/scheduler.md` has the whole story.)
//!
//! Layout: `input` (nodes, pods, what nodes hold, from the protocol's types), `filter` (the
//! filters and the error), this file (the batch and the scores).

pub mod filter;
mod input;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use shoal_protocol::kinds::{NodeSelector, Toleration};

pub use filter::{Filter, Reason, Unschedulable};
pub use input::{
    Assigned, DEFAULT_SCORE_CPU_MILLIS, DEFAULT_SCORE_MEMORY_BYTES, HostPort, NodeInfo, OwnerKey,
    PodRequest, Taint, UNSCHEDULABLE_TAINT_KEY,
};

use filter::{StaticFit, static_fit};

/// The node for one pod, given the candidate nodes and what each holds (keyed by node name;
/// nodes without an entry hold nothing). A node name that appears twice counts once, the first.
pub fn schedule(
    nodes: &[NodeInfo],
    assigned: &BTreeMap<String, Assigned>,
    pod: &PodRequest,
) -> Result<String, Unschedulable> {
    Schedule::new(nodes.iter().cloned(), assigned).place(pod)
}

/// A scheduling round: places pods one after the other, each seeing the ones placed before
/// it, so that a round placing ten replicas spreads them.
///
/// Built once per round (O(nodes)); each placement then costs O(nodes) without allocating,
/// except the first time an owner's constraints on labels and taints are seen (they are
/// judged once per owner and node and cached).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Sorted by name, unique.
    nodes: Vec<NodeInfo>,
    /// What each node of `nodes` holds, at the same position.
    load: Vec<Load>,
    index: HashMap<String, usize>,
    /// Pods per node of `nodes`, per owner.
    owners: HashMap<OwnerKey, Vec<u32>>,
    /// The node each known node-local volume lives on (any node, candidate or not).
    volumes: HashMap<String, String>,
    /// Labels and taints judged for pods without node constraints.
    default_fit: Vec<StaticFit>,
    /// Labels and taints judged for each owner with node constraints.
    owner_fits: HashMap<OwnerKey, CachedFit>,
}

/// What the filters and scores read of a node, kept apart from its labels so that the loop
/// over the nodes stays in cache.
#[derive(Debug, Clone, Default)]
struct Load {
    cpu_allocatable: u64,
    memory_allocatable: u64,
    cpu: u64,
    memory: u64,
    score_cpu: u64,
    score_memory: u64,
    host_ports: Vec<HostPort>,
}

#[derive(Debug, Clone)]
struct CachedFit {
    node_selector: BTreeMap<String, String>,
    affinity: Option<NodeSelector>,
    tolerations: Vec<Toleration>,
    fits: Vec<StaticFit>,
}

impl CachedFit {
    fn holds_for(&self, pod: &PodRequest) -> bool {
        self.node_selector == pod.node_selector
            && self.affinity == pod.affinity
            && self.tolerations == pod.tolerations
    }
}

/// Where the pod's volumes allow it to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pin {
    Anywhere,
    Node(usize),
    Nowhere,
}

/// How a feasible node ranks, lowest first: pods of the owner, untolerated
/// `PreferNoSchedule` taints, free capacity (highest first).
type ScoreKey = (u32, u16, Reverse<u64>);

/// Bound on the owners whose constraints are cached, so that a round of many bare pods with
/// constraints does not keep one judgement per pod.
const MAX_CACHED_OWNERS: usize = 4096;

/// Free fractions are compared in millionths.
const SCORE_SCALE: u64 = 1_000_000;

impl Schedule {
    /// A round over the candidate `nodes`, each holding what `assigned` says (keyed by node
    /// name; entries of other nodes count only for the volumes they hold).
    pub fn new(
        nodes: impl IntoIterator<Item = NodeInfo>,
        assigned: &BTreeMap<String, Assigned>,
    ) -> Schedule {
        let mut nodes: Vec<NodeInfo> = nodes.into_iter().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|later, first| later.name == first.name);
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut load: Vec<Load> = nodes
            .iter()
            .map(|n| Load {
                cpu_allocatable: n.cpu_millis,
                memory_allocatable: n.memory_bytes,
                ..Load::default()
            })
            .collect();
        let mut owners: HashMap<OwnerKey, Vec<u32>> = HashMap::new();
        let mut volumes: HashMap<String, String> = HashMap::new();
        for (name, a) in assigned {
            for v in &a.volumes {
                volumes.entry(v.clone()).or_insert_with(|| name.clone());
            }
            let Some(&i) = index.get(name) else { continue };
            let l = &mut load[i];
            l.cpu = a.cpu_millis;
            l.memory = a.memory_bytes;
            l.score_cpu = a.score_cpu_millis;
            l.score_memory = a.score_memory_bytes;
            l.host_ports = a.host_ports.clone();
            for (owner, n) in &a.owners {
                owners
                    .entry(owner.clone())
                    .or_insert_with(|| vec![0; nodes.len()])[i] = *n;
            }
        }
        let no_constraints = PodRequest::default();
        let default_fit = nodes
            .iter()
            .map(|n| static_fit(n, &no_constraints))
            .collect();
        Schedule {
            nodes,
            load,
            index,
            owners,
            volumes,
            default_fit,
            owner_fits: HashMap::new(),
        }
    }

    /// Places `pod`: its node, now counted as holding it; or why no node can take it.
    pub fn place(&mut self, pod: &PodRequest) -> Result<String, Unschedulable> {
        self.judge_constraints(pod);
        let fits = self.fits(pod);
        let pin = self.pin(pod);
        match self.choose(pod, fits, pin) {
            Some(i) => {
                self.record(i, pod);
                Ok(self.nodes[i].name.clone())
            }
            None => Err(self.explain(pod, fits, pin)),
        }
    }

    /// Places `pods` in order, each seeing those before it.
    pub fn place_all<'a>(
        &mut self,
        pods: impl IntoIterator<Item = &'a PodRequest>,
    ) -> Vec<Result<String, Unschedulable>> {
        pods.into_iter().map(|p| self.place(p)).collect()
    }

    /// Where one of `pod`'s owner's pods on `from` goes to even out the owner's spread: the
    /// node [`Schedule::place`] would choose for `pod`, provided that it holds at least two
    /// fewer pods of the owner than `from` (so that the move makes the spread strictly more
    /// even, and a round of such moves ends). The pod is then counted there and the owner's
    /// count on `from` drops by one; its resources on `from` stay counted (the pod runs there
    /// until it has moved). None when `from` is not a candidate or no node qualifies.
    pub fn spread_from(&mut self, from: &str, pod: &PodRequest) -> Option<String> {
        let &f = self.index.get(from)?;
        let on_from = self.owners.get(&pod.owner).map_or(0, |c| c[f]);
        self.judge_constraints(pod);
        let fits = self.fits(pod);
        let pin = self.pin(pod);
        let to = self.choose(pod, fits, pin)?;
        let on_to = self.owners.get(&pod.owner).map_or(0, |c| c[to]);
        if to == f || on_to.saturating_add(2) > on_from {
            return None;
        }
        self.record(to, pod);
        if let Some(c) = self.owners.get_mut(&pod.owner) {
            c[f] = c[f].saturating_sub(1);
        }
        Some(self.nodes[to].name.clone())
    }

    /// How many pods of `owner` each candidate node holds now, by node name.
    pub fn owner_counts(&self, owner: &OwnerKey) -> BTreeMap<String, u32> {
        let counts = self.owners.get(owner);
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), counts.map_or(0, |c| c[i])))
            .collect()
    }

    /// Counts `pod` on `node`, placed by other means (a slot that keeps its node). A node that
    /// is not a candidate only keeps the pod's volumes; returns whether `node` is a candidate.
    pub fn assign(&mut self, node: &str, pod: &PodRequest) -> bool {
        match self.index.get(node) {
            Some(&i) => {
                self.record(i, pod);
                true
            }
            None => {
                for v in &pod.volumes {
                    self.volumes
                        .entry(v.clone())
                        .or_insert_with(|| node.to_string());
                }
                false
            }
        }
    }

    /// Caches the judgement of the pod's owner's labels and taints constraints, unless it
    /// has none (then the default judgement serves) or it is cached already.
    fn judge_constraints(&mut self, pod: &PodRequest) {
        if !pod.has_node_constraints()
            || self
                .owner_fits
                .get(&pod.owner)
                .is_some_and(|c| c.holds_for(pod))
        {
            return;
        }
        if self.owner_fits.len() >= MAX_CACHED_OWNERS {
            self.owner_fits.clear();
        }
        let fits = self.nodes.iter().map(|n| static_fit(n, pod)).collect();
        self.owner_fits.insert(
            pod.owner.clone(),
            CachedFit {
                node_selector: pod.node_selector.clone(),
                affinity: pod.affinity.clone(),
                tolerations: pod.tolerations.clone(),
                fits,
            },
        );
    }

    /// The judgement of labels and taints for `pod`, one per node (after
    /// [`Schedule::judge_constraints`]).
    fn fits(&self, pod: &PodRequest) -> &[StaticFit] {
        if pod.has_node_constraints()
            && let Some(c) = self.owner_fits.get(&pod.owner)
        {
            return &c.fits;
        }
        &self.default_fit
    }

    fn pin(&self, pod: &PodRequest) -> Pin {
        let mut at = pod.volume_node.as_deref();
        for v in &pod.volumes {
            if let Some(node) = self.volumes.get(v) {
                match at {
                    None => at = Some(node),
                    Some(a) if a != node => return Pin::Nowhere,
                    Some(_) => {}
                }
            }
        }
        match at {
            None => Pin::Anywhere,
            Some(n) => self.index.get(n).map_or(Pin::Nowhere, |&i| Pin::Node(i)),
        }
    }

    /// The first filter node `i` fails for `pod`, if any.
    fn check(&self, i: usize, pod: &PodRequest, fit: StaticFit, pin: Pin) -> Result<(), Filter> {
        if let Some(f) = fit.fail {
            return Err(f);
        }
        let l = &self.load[i];
        if !pod.host_ports.is_empty()
            && pod
                .host_ports
                .iter()
                .any(|p| l.host_ports.iter().any(|q| p.conflicts(q)))
        {
            return Err(Filter::HostPorts);
        }
        // What is left saturates at 0, so a pod that requests none of a resource fits even
        // where it is overcommitted, as in Kubernetes.
        if pod.cpu_millis > l.cpu_allocatable.saturating_sub(l.cpu) {
            return Err(Filter::Cpu);
        }
        if pod.memory_bytes > l.memory_allocatable.saturating_sub(l.memory) {
            return Err(Filter::Memory);
        }
        match pin {
            Pin::Anywhere => Ok(()),
            Pin::Node(j) if j == i => Ok(()),
            Pin::Node(_) | Pin::Nowhere => Err(Filter::VolumeNode),
        }
    }

    /// Least allocated: the free fractions of CPU and memory once the pod is placed, in
    /// millionths, summed (twice their average).
    fn free_score(&self, i: usize, pod: &PodRequest) -> u64 {
        let l = &self.load[i];
        let free =
            |total: u64, used: u64, more: u64| total.saturating_sub(used.saturating_add(more));
        fraction(
            free(l.cpu_allocatable, l.score_cpu, pod.score_cpu_millis),
            l.cpu_allocatable,
        ) + fraction(
            free(l.memory_allocatable, l.score_memory, pod.score_memory_bytes),
            l.memory_allocatable,
        )
    }

    /// The best node that passes every filter.
    fn choose(&self, pod: &PodRequest, fits: &[StaticFit], pin: Pin) -> Option<usize> {
        let range = match pin {
            Pin::Anywhere => 0..self.nodes.len(),
            Pin::Node(i) => i..i + 1,
            Pin::Nowhere => return None,
        };
        let counts = self.owners.get(&pod.owner).map(Vec::as_slice);
        let mut best: Option<(usize, ScoreKey)> = None;
        for i in range {
            let fit = fits[i];
            if self.check(i, pod, fit, pin).is_err() {
                continue;
            }
            let count = counts.map_or(0, |c| c[i]);
            // The score is worth computing only when the first two keys do not already lose.
            if let Some((_, (c, p, _))) = best
                && (count, fit.prefer_avoid) > (c, p)
            {
                continue;
            }
            let key = (count, fit.prefer_avoid, Reverse(self.free_score(i, pod)));
            // Strictly better only: on a tie the earlier name stays.
            if best.is_none_or(|(_, b)| key < b) {
                best = Some((i, key));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Why no node takes `pod`.
    fn explain(&self, pod: &PodRequest, fits: &[StaticFit], pin: Pin) -> Unschedulable {
        let reasons = self.nodes.iter().enumerate().filter_map(|(i, node)| {
            let failed = self.check(i, pod, fits[i], pin).err()?;
            Some(filter::reason(failed, node, pod))
        });
        Unschedulable::from_reasons(self.nodes.len(), reasons)
    }

    fn record(&mut self, i: usize, pod: &PodRequest) {
        let l = &mut self.load[i];
        l.cpu = l.cpu.saturating_add(pod.cpu_millis);
        l.memory = l.memory.saturating_add(pod.memory_bytes);
        l.score_cpu = l.score_cpu.saturating_add(pod.score_cpu_millis);
        l.score_memory = l.score_memory.saturating_add(pod.score_memory_bytes);
        l.host_ports.extend(pod.host_ports.iter().cloned());
        let n = self.nodes.len();
        let counts = match self.owners.get_mut(&pod.owner) {
            Some(c) => c,
            None => self
                .owners
                .entry(pod.owner.clone())
                .or_insert_with(|| vec![0; n]),
        };
        counts[i] = counts[i].saturating_add(1);
        for v in &pod.volumes {
            if !self.volumes.contains_key(v) {
                self.volumes.insert(v.clone(), self.nodes[i].name.clone());
            }
        }
    }
}

/// `part / total` in millionths; 0 of nothing is nothing free.
fn fraction(part: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    match part.checked_mul(SCORE_SCALE) {
        Some(p) => p / total,
        None => {
            let q = u128::from(part) * u128::from(SCORE_SCALE) / u128::from(total);
            u64::try_from(q).unwrap_or(SCORE_SCALE)
        }
    }
}
