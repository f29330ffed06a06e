#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use shoal_protocol::cluster::Slot;
use shoal_protocol::kinds::StatefulSet;
use shoal_protocol::status::PodStatus;
use shoal_protocol::{Kind, Resource};

use super::Action;
use super::placement::Nodes;
use super::statefulset::{OWNER_STATEFULSET, ordinal};
use super::tests::{Sim, T0, ready_status, running_unready};
use crate::nodes::Quorum;
use crate::scheduler::NodeInfo;

fn sts_json(replicas: i32, image: &str) -> Value {
    json!({
        "metadata": {"name": "db", "namespace": "default", "uid": "uid-db"},
        "spec": {
            "serviceName": "db",
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": image,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
            }
        }
    })
}

fn sts(v: Value) -> StatefulSet {
    match Resource::from_value(Kind::StatefulSet, v).unwrap() {
        Resource::StatefulSet(s) => s,
        _ => unreachable!(),
    }
}

fn sim(s: StatefulSet) -> Sim {
    let mut sim = Sim::new(Vec::new());
    sim.statefulsets = vec![s];
    sim
}

/// The pods of the StatefulSet by ordinal: (revision, node).
fn pods(sim: &Sim) -> Vec<(u32, String, String)> {
    let mut out: Vec<(u32, String, String)> = sim
        .slots
        .iter()
        .filter(|s| s.owner_kind == OWNER_STATEFULSET)
        .map(|s| (s.index, s.revision.clone(), s.node.clone()))
        .collect();
    out.sort();
    out
}

fn ordinals(sim: &Sim) -> Vec<u32> {
    pods(sim).into_iter().map(|p| p.0).collect()
}

/// The pod of `slot` is Ready at the slot's revision.
fn ready_at_revision(slot: &Slot, now: i64) -> PodStatus {
    PodStatus {
        revision: Some(slot.revision.clone()),
        ..ready_status(now)
    }
}

/// Every StatefulSet pod is reported Ready at its slot's revision.
fn all_ready(sim: &mut Sim) {
    let now = sim.now;
    for s in sim.slots.clone() {
        let ready = sim
            .observed
            .get(&s.key())
            .is_some_and(|st| st.is_ready() && st.revision.as_deref() == Some(&s.revision));
        if !ready {
            sim.observed.insert(s.key(), ready_at_revision(&s, now));
        }
    }
}

fn three_nodes() -> Nodes {
    Nodes::alive(
        ["n1", "n2", "n3"]
            .map(|n| NodeInfo::new(n, 4000, 8 << 30).with_label("kubernetes.io/hostname", n)),
    )
}

/// `lost` is known but dead past the grace: its slots may move.
fn lose(nodes: &mut Nodes, lost: &str) {
    nodes.alive.retain(|n| n.name != lost);
    nodes.movable.insert(lost.to_string());
}

#[test]
fn ordinals_parse_strictly() {
    assert_eq!(ordinal("db", "db-0"), Some(0));
    assert_eq!(ordinal("db", "db-12"), Some(12));
    assert_eq!(ordinal("db", "db-x"), None);
    assert_eq!(ordinal("db", "db-"), None);
    assert_eq!(ordinal("db", "dbx-1"), None);
    assert_eq!(ordinal("db", "db-1-2"), None);
}

#[test]
fn ordered_ready_starts_each_ordinal_after_the_one_before_is_ready() {
    let mut sim = sim(sts(sts_json(3, "img:1")));
    let first = sim.step();
    assert!(
        first
            .iter()
            .any(|a| matches!(a, Action::PutRevision(r) if r.revision == 1)),
        "the first revision is written: {first:?}"
    );
    assert_eq!(ordinals(&sim), vec![0]);
    // Not ready yet: nothing more, however often the planner runs.
    sim.observed
        .insert("default/db-0".into(), running_unready());
    assert!(sim.step().is_empty());
    assert_eq!(ordinals(&sim), vec![0]);
    all_ready(&mut sim);
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1]);
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1], "db-2 waits for db-1");
    all_ready(&mut sim);
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1, 2]);
    all_ready(&mut sim);
    assert!(sim.step().is_empty(), "converged");
    // Pods are named by ordinal and all run one revision.
    let names: Vec<String> = sim.slots.iter().map(|s| s.pod.clone()).collect();
    for n in ["db-0", "db-1", "db-2"] {
        assert!(names.contains(&n.to_string()));
    }
    let revisions: std::collections::BTreeSet<String> =
        pods(&sim).into_iter().map(|p| p.1).collect();
    assert_eq!(revisions.len(), 1);
    assert_eq!(sim.revisions.len(), 1);
    assert_eq!(
        sim.revisions[0].metadata.name,
        format!("db-{}", revisions.iter().next().unwrap())
    );
}

#[test]
fn parallel_starts_and_removes_all_at_once() {
    let mut v = sts_json(3, "img:1");
    v["spec"]["podManagementPolicy"] = json!("Parallel");
    let mut sim = sim(sts(v));
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1, 2]);
    sim.statefulsets[0].spec.replicas = 0;
    sim.step();
    assert!(ordinals(&sim).is_empty());
}

#[test]
fn ordered_scale_down_removes_the_highest_first_one_at_a_time() {
    let mut sim = sim(sts(sts_json(3, "img:1")));
    for _ in 0..3 {
        sim.step();
        all_ready(&mut sim);
    }
    assert_eq!(ordinals(&sim), vec![0, 1, 2]);
    sim.statefulsets[0].spec.replicas = 1;
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1], "db-2 goes first");
    // db-2's container is still stopping on its node: db-1 waits.
    sim.observed
        .insert("default/db-2".into(), running_unready());
    assert!(sim.step().is_empty());
    assert_eq!(ordinals(&sim), vec![0, 1]);
    sim.observed.remove("default/db-2");
    sim.step();
    assert_eq!(ordinals(&sim), vec![0]);
    // An unready pod below blocks a further scale down, as in Kubernetes.
    sim.statefulsets[0].spec.replicas = 3;
    for _ in 0..4 {
        sim.step();
        all_ready(&mut sim);
    }
    assert_eq!(ordinals(&sim), vec![0, 1, 2]);
    sim.observed
        .insert("default/db-0".into(), running_unready());
    sim.statefulsets[0].spec.replicas = 2;
    sim.step();
    assert_eq!(
        ordinals(&sim),
        vec![0, 1, 2],
        "db-0 is not ready: db-2 stays"
    );
}

/// Three pods ready, then scaled down to two: db-2's slot is gone.
fn scaled_from_three_to_two() -> Sim {
    let mut sim = sim(sts(sts_json(3, "img:1")));
    for _ in 0..3 {
        sim.step();
        all_ready(&mut sim);
    }
    sim.statefulsets[0].spec.replicas = 2;
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1]);
    sim
}

/// A scaled-down ordinal comes back only once no node reports a copy of it: a node whose
/// engine does not answer keeps reporting the pods it may still run (found by the simulator:
/// seed 37 ran db-2 twice after a scale down and up).
#[test]
fn a_removed_ordinal_comes_back_only_once_no_node_reports_it() {
    let mut sim = scaled_from_three_to_two();
    // db-2 may still run on its node (its engine hangs): scaled up again, it waits.
    sim.observed
        .insert("default/db-2".into(), running_unready());
    sim.statefulsets[0].spec.replicas = 3;
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1]);
    sim.observed.remove("default/db-2");
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1, 2]);
}

/// A scaled-down ordinal whose node stopped being heard while it stopped (or could not stop)
/// the copy comes back only once that node is lost as a mover requires: dead past the grace,
/// with a majority, its engine answering when last heard (found by the simulator: seed 1350).
#[test]
fn a_removed_ordinal_last_reported_by_an_unheard_node_waits_for_it_to_be_lost() {
    let mut sim = scaled_from_three_to_two();
    sim.observed.remove("default/db-2");
    sim.nodes
        .unheard_reports
        .insert("default/db-2".into(), ["n3".to_string()].into());
    sim.statefulsets[0].spec.replicas = 3;
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1], "n3 is not lost yet");
    sim.nodes.movable.insert("n3".into());
    sim.nodes.unstoppable.insert("n3".into());
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1], "n3's engine did not answer");
    sim.nodes.unstoppable.remove("n3");
    sim.step();
    assert_eq!(ordinals(&sim), vec![0, 1, 2]);
}

/// Runs the StatefulSet up to all `n` pods ready.
fn running(v: Value) -> Sim {
    let mut sim = sim(sts(v));
    for _ in 0..6 {
        sim.step();
        all_ready(&mut sim);
    }
    sim
}

#[test]
fn rolling_update_goes_in_reverse_order_one_ready_pod_at_a_time() {
    let mut sim = running(sts_json(3, "img:1"));
    let old = pods(&sim)[0].1.clone();
    sim.statefulsets[0].spec.template.spec.containers[0].image = "img:2".into();
    let actions = sim.step();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::PutRevision(r) if r.revision == 2)),
        "{actions:?}"
    );
    let p = pods(&sim);
    let new = p[2].1.clone();
    assert_ne!(new, old);
    assert_eq!(
        (p[0].1.as_str(), p[1].1.as_str()),
        (old.as_str(), old.as_str())
    );
    // db-2 is not ready at the new revision yet: db-1 waits.
    sim.step();
    assert_eq!(pods(&sim)[1].1, old);
    all_ready(&mut sim);
    sim.step();
    let p = pods(&sim);
    assert_eq!(
        (p[0].1.as_str(), p[1].1.as_str()),
        (old.as_str(), new.as_str())
    );
    all_ready(&mut sim);
    sim.step();
    assert!(pods(&sim).iter().all(|p| p.1 == new));
    all_ready(&mut sim);
    assert!(sim.step().is_empty());
    // Both revisions are kept (history limit 10); the pods keep their nodes.
    assert_eq!(sim.revisions.len(), 2);
    assert!(pods(&sim).iter().all(|p| p.2 == "n1"));
}

#[test]
fn a_partition_keeps_lower_ordinals_on_the_old_revision() {
    let mut v = sts_json(3, "img:1");
    v["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
    let mut sim = running(v);
    let old = pods(&sim)[0].1.clone();
    sim.statefulsets[0].spec.template.spec.containers[0].image = "img:2".into();
    for _ in 0..4 {
        sim.step();
        all_ready(&mut sim);
    }
    let p = pods(&sim);
    assert_eq!(p[0].1, old);
    assert_eq!(p[1].1, old);
    assert_ne!(p[2].1, old);
    // A pod below the partition that is deleted comes back on its old revision.
    sim.slots.retain(|s| s.pod != "db-1");
    sim.observed.remove("default/db-1");
    sim.step();
    assert_eq!(pods(&sim)[1].1, old);
}

#[test]
fn on_delete_updates_a_pod_only_when_it_is_deleted() {
    let mut v = sts_json(2, "img:1");
    v["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    let mut sim = running(v);
    let old = pods(&sim)[0].1.clone();
    sim.statefulsets[0].spec.template.spec.containers[0].image = "img:2".into();
    for _ in 0..3 {
        sim.step();
        all_ready(&mut sim);
    }
    assert!(pods(&sim).iter().all(|p| p.1 == old));
    sim.slots.retain(|s| s.pod != "db-1");
    sim.observed.remove("default/db-1");
    sim.step();
    let p = pods(&sim);
    assert_eq!(p[0].1, old);
    assert_ne!(p[1].1, old);
}

#[test]
fn unused_revisions_beyond_the_history_limit_are_deleted() {
    let mut v = sts_json(1, "img:1");
    v["spec"]["revisionHistoryLimit"] = json!(0);
    let mut sim = running(v);
    sim.statefulsets[0].spec.template.spec.containers[0].image = "img:2".into();
    for _ in 0..4 {
        sim.step();
        all_ready(&mut sim);
    }
    assert_eq!(sim.revisions.len(), 1, "{:?}", sim.revisions);
    assert_eq!(sim.revisions[0].revision, 2);
}

#[test]
fn a_deleted_statefulset_takes_its_slots_and_revisions() {
    let mut sim = running(sts_json(2, "img:1"));
    sim.statefulsets.clear();
    sim.step();
    assert!(sim.slots.is_empty());
    assert!(sim.revisions.is_empty());
}

#[test]
fn claims_give_each_ordinal_its_own_volume() {
    let mut v = sts_json(2, "img:1");
    v["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    v["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
    let sim = running(v);
    let desired = crate::pods::join_owners(
        &sim.slots,
        &crate::pods::Owners {
            statefulsets: sim.statefulsets.clone(),
            revisions: sim.revisions.clone(),
            ..Default::default()
        },
    );
    assert_eq!(desired.len(), 2);
    for p in &desired {
        let claim = p
            .spec
            .volumes
            .iter()
            .find(|v| v.name == "data")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        assert_eq!(claim, Some(format!("data-{}", p.slot.pod)));
        assert_eq!(p.spec.hostname.as_deref(), Some(p.slot.pod.as_str()));
        assert_eq!(p.spec.subdomain.as_deref(), Some("db"));
        assert_eq!(
            p.metadata.labels.get("statefulset.kubernetes.io/pod-name"),
            Some(&p.slot.pod)
        );
    }
}

/// A StatefulSet of 3 spread over three nodes, all ready.
fn spread(v: Value) -> Sim {
    let mut sim = sim(sts(v));
    sim.nodes = three_nodes();
    sim.quorum = Quorum {
        known: 3,
        alive: 3,
        heard: 3,
    };
    for _ in 0..6 {
        sim.step();
        all_ready(&mut sim);
    }
    let nodes: std::collections::BTreeSet<String> = pods(&sim).into_iter().map(|p| p.2).collect();
    assert_eq!(nodes.len(), 3, "spread: {:?}", pods(&sim));
    sim
}

fn node_of(sim: &Sim, pod: &str) -> String {
    sim.slots
        .iter()
        .find(|s| s.pod == pod)
        .unwrap()
        .node
        .clone()
}

fn slot<'a>(sim: &'a Sim, pod: &str) -> &'a Slot {
    sim.slots.iter().find(|s| s.pod == pod).unwrap()
}

#[test]
fn a_pod_moves_off_a_lost_node_only_with_a_majority() {
    let mut sim = spread(sts_json(3, "img:1"));
    let lost = node_of(&sim, "db-1");
    lose(&mut sim.nodes, &lost);
    // The lost node's report is gone (dead nodes' reports are left out).
    sim.observed.remove("default/db-1");
    // Without a majority the pod stays, and says why.
    sim.quorum = Quorum {
        known: 3,
        alive: 1,
        heard: 1,
    };
    sim.step();
    let s = slot(&sim, "db-1");
    assert_eq!(s.node, lost);
    let why = s.unschedulable.clone().unwrap();
    assert!(why.contains(&lost) && why.contains("no majority"), "{why}");
    let shown = crate::pods::pending_status(s);
    assert_eq!(shown.phase, "Pending");
    assert_eq!(shown.message.as_deref(), Some(why.as_str()));
    // A majority seen only for a moment (a partition just healed: the lost node may be heard
    // again in a moment) moves nothing yet.
    sim.quorum = Quorum {
        known: 3,
        alive: 2,
        heard: 2,
    };
    sim.nodes.majority_settling = true;
    sim.step();
    let s = slot(&sim, "db-1");
    assert_eq!(s.node, lost);
    let why = s.unschedulable.clone().unwrap();
    assert!(why.contains("majority only for a moment"), "{why}");
    // With a settled majority it moves to a node that is alive.
    sim.nodes.majority_settling = false;
    sim.step();
    let s = slot(&sim, "db-1");
    assert!(!s.node.is_empty() && s.node != lost, "{s:?}");
    assert!(s.unschedulable.is_none());
    // The others kept their nodes.
    assert_ne!(node_of(&sim, "db-0"), lost);
    assert_ne!(node_of(&sim, "db-2"), lost);
}

#[test]
fn a_pod_with_claims_waits_for_the_node_that_holds_its_volumes() {
    let mut v = sts_json(3, "img:1");
    v["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    v["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
    let mut sim = spread(v);
    let lost = node_of(&sim, "db-1");
    lose(&mut sim.nodes, &lost);
    sim.observed.remove("default/db-1");
    sim.quorum = Quorum {
        known: 3,
        alive: 2,
        heard: 2,
    };
    sim.step();
    let s = slot(&sim, "db-1");
    assert_eq!(s.node, lost, "pinned to its volumes");
    let why = s.unschedulable.clone().unwrap();
    assert!(
        why.contains(&format!("node \"{lost}\"")) && why.contains("data-db-1"),
        "{why}"
    );
    // Back again: it runs there, and the message goes.
    sim.nodes = three_nodes();
    sim.step();
    let s = slot(&sim, "db-1");
    assert_eq!(s.node, lost);
    assert!(s.unschedulable.is_none());
}

#[test]
fn a_drained_pod_starts_elsewhere_only_once_its_old_copy_has_stopped() {
    let mut sim = spread(sts_json(3, "img:1"));
    let from = node_of(&sim, "db-1");
    sim.nodes.draining.insert(from.clone(), false);
    for n in &mut sim.nodes.alive {
        if n.name == from {
            *n = n.clone().cordoned();
        }
    }
    sim.step();
    // Evicted, but the old node still reports the pod (stopping): not placed yet.
    let s = slot(&sim, "db-1");
    assert_eq!(s.node, "");
    assert_eq!(
        s.unschedulable.as_deref(),
        Some("waiting for the pod's previous copy to stop")
    );
    sim.step();
    assert_eq!(slot(&sim, "db-1").node, "");
    // The old copy is gone: placed on another node.
    sim.observed.remove("default/db-1");
    sim.step();
    let s = slot(&sim, "db-1");
    assert!(!s.node.is_empty() && s.node != from, "{s:?}");
}

#[test]
fn quorum_counts_what_a_node_hears() {
    use crate::observed::{Liveness, Member, NodeRecord};
    let member = |name: &str, liveness| Member {
        record: NodeRecord {
            name: name.into(),
            ..NodeRecord::default()
        },
        liveness,
        last_seen: None,
    };
    let members = [
        member("n1", Liveness::Alive),
        member("n2", Liveness::Suspect),
        member("n3", Liveness::Dead),
    ];
    let registered = vec!["n1".to_string(), "n2".into(), "n3".into(), "n4".into()];
    let q = Quorum::count(members.iter(), &registered);
    assert_eq!(
        q,
        Quorum {
            known: 4,
            alive: 1,
            heard: 2
        }
    );
    // 2 of 4 heard: no majority to move anything, and the other half cannot move either.
    assert!(!q.sees_majority());
    assert!(!q.must_fence());
    // Alone of three: fence.
    let alone = Quorum {
        known: 3,
        alive: 1,
        heard: 1,
    };
    assert!(alone.must_fence() && !alone.sees_majority());
    // Two of three: move, don't fence.
    let two = Quorum {
        known: 3,
        alive: 2,
        heard: 2,
    };
    assert!(two.sees_majority() && !two.must_fence());
    // One of two: neither side moves, neither stops.
    let half = Quorum {
        known: 2,
        alive: 1,
        heard: 1,
    };
    assert!(!half.sees_majority() && !half.must_fence());
    let _ = T0;
}

#[test]
fn a_pod_on_a_node_that_left_waits_for_it() {
    let mut sim = spread(sts_json(3, "img:1"));
    let left = node_of(&sim, "db-2");
    lose(&mut sim.nodes, &left);
    sim.nodes.left.insert(left.clone());
    sim.observed.remove("default/db-2");
    sim.quorum = Quorum {
        known: 3,
        alive: 2,
        heard: 2,
    };
    sim.step();
    let s = slot(&sim, "db-2");
    assert_eq!(s.node, left);
    let why = s.unschedulable.clone().unwrap();
    assert!(why.contains("left the cluster"), "{why}");
    // Forgotten with `shoal delete node`: it moves.
    sim.nodes.known.remove(&left);
    sim.nodes.left.remove(&left);
    sim.nodes.movable.remove(&left);
    sim.step();
    let s = slot(&sim, "db-2");
    assert!(!s.node.is_empty() && s.node != left, "{s:?}");
}

/// A node whose engine did not answer when last heard may still run its containers (a hung
/// engine keeps them), alive or cut off: its StatefulSet pods stay (found by the simulator:
/// seed 19 ran db-1 twice on a hung engine, seed 51 on a hung engine then a partition).
#[test]
fn a_pod_on_a_node_whose_engine_does_not_answer_stays() {
    let mut sim = spread(sts_json(3, "img:1"));
    let hung = node_of(&sim, "db-1");
    lose(&mut sim.nodes, &hung);
    sim.nodes.engine_unavailable.insert(hung.clone());
    sim.nodes.unstoppable.insert(hung.clone());
    sim.step();
    let s = slot(&sim, "db-1");
    assert_eq!(s.node, hung);
    let why = s.unschedulable.clone().unwrap();
    assert!(why.contains("did not answer"), "{why}");
    // Cut off as well (dead past the grace): it still stays.
    sim.nodes.engine_unavailable.remove(&hung);
    sim.observed.remove("default/db-1");
    sim.step();
    assert_eq!(slot(&sim, "db-1").node, hung);
    // Once the node is known to have stopped it (its engine back) or is lost for good, it moves.
    sim.nodes.unstoppable.remove(&hung);
    sim.step();
    let s = slot(&sim, "db-1");
    assert!(!s.node.is_empty() && s.node != hung, "{s:?}");
}

/// StatefulSet pods never move to even out a spread: packed on one node, they stay.
#[test]
fn statefulset_pods_never_move_to_spread() {
    let mut sim = sim(sts(sts_json(3, "img:1")));
    sim.nodes = three_nodes();
    for _ in 0..20 {
        sim.step();
        all_ready(&mut sim);
    }
    assert_eq!(ordinals(&sim), [0, 1, 2]);
    for s in &mut sim.slots {
        s.node = "n1".into();
    }
    all_ready(&mut sim);
    for _ in 0..5 {
        sim.step();
        all_ready(&mut sim);
    }
    assert!(
        pods(&sim).iter().all(|(_, _, node)| node == "n1"),
        "{:?}",
        pods(&sim)
    );
}
