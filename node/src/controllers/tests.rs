#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use shoal_protocol::cluster::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, Slot};
use shoal_protocol::kinds::{ControllerRevision, Deployment, Pod, ReplicaSet, StatefulSet};
use shoal_protocol::status::{PodCondition, PodStatus};
use shoal_protocol::{Kind, Resource};

use super::deployment::{Scale, fenceposts, new_rs_replicas, scale_down_old};
use super::placement::{Nodes, place};
use super::status::{PROGRESS_AT_ANNOTATION, ProgressMark, parse_rfc3339};
use super::*;

pub(super) const T0: i64 = 1_795_631_220;

// ------------------------------------------------------------------------------ fixtures

fn deployment_json(name: &str, replicas: i32, image: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }
        }
    })
}

fn typed_deployment(v: Value) -> Deployment {
    match Resource::from_value(Kind::Deployment, v).unwrap() {
        Resource::Deployment(d) => d,
        _ => unreachable!(),
    }
}

fn rolling(name: &str, replicas: i32, surge: Value, unavailable: Value) -> Deployment {
    let mut v = deployment_json(name, replicas, "img:1");
    v["spec"]["strategy"] = json!({"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}});
    typed_deployment(v)
}

fn recreate(name: &str, replicas: i32) -> Deployment {
    let mut v = deployment_json(name, replicas, "img:1");
    v["spec"]["strategy"] = json!({"type": "Recreate"});
    typed_deployment(v)
}

fn set_image(d: &mut Deployment, image: &str) {
    d.spec.template.spec.containers[0].image = image.into();
}

pub(super) fn ready_status(since: i64) -> PodStatus {
    PodStatus {
        phase: "Running".into(),
        conditions: vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(crate::time::rfc3339(since)),
            reason: None,
            message: None,
        }],
        ..PodStatus::default()
    }
}

pub(super) fn running_unready() -> PodStatus {
    PodStatus {
        phase: "Running".into(),
        ..PodStatus::default()
    }
}

/// An in-memory cluster: the planner's inputs, and its actions applied as the store would
/// (the store keeps no owner references and sets the creation time).
pub(super) struct Sim {
    pub(super) deployments: Vec<Deployment>,
    pub(super) replicasets: Vec<ReplicaSet>,
    pub(super) pods: Vec<Pod>,
    pub(super) statefulsets: Vec<StatefulSet>,
    pub(super) revisions: Vec<ControllerRevision>,
    pub(super) slots: Vec<Slot>,
    pub(super) observed: PodStatuses,
    pub(super) nodes: Nodes,
    pub(super) quorum: crate::nodes::Quorum,
    pub(super) now: i64,
    pub(super) writes: usize,
}

impl Sim {
    pub(super) fn new(deployments: Vec<Deployment>) -> Sim {
        Sim {
            deployments,
            replicasets: Vec::new(),
            pods: Vec::new(),
            statefulsets: Vec::new(),
            revisions: Vec::new(),
            slots: Vec::new(),
            observed: PodStatuses::new(),
            nodes: Nodes::single("n1"),
            quorum: crate::nodes::Quorum {
                known: 1,
                alive: 1,
                heard: 1,
            },
            now: T0,
            writes: 0,
        }
    }

    pub(super) fn plan(&self) -> Vec<Action> {
        plan(&Inputs {
            deployments: &self.deployments,
            replicasets: &self.replicasets,
            pods: &self.pods,
            statefulsets: &self.statefulsets,
            revisions: &self.revisions,
            slots: &self.slots,
            observed: &self.observed,
            nodes: &self.nodes,
            quorum: self.quorum,
            now: self.now,
        })
    }

    pub(super) fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            self.writes += 1;
            match a {
                Action::PutRevision(r) => {
                    self.revisions
                        .retain(|x| x.metadata.name != r.metadata.name);
                    self.revisions.push((**r).clone());
                }
                Action::DeleteRevision { name, .. } => {
                    self.revisions.retain(|x| &x.metadata.name != name)
                }
                Action::PutReplicaSet(rs) => {
                    let mut rs = (**rs).clone();
                    rs.metadata.owner_references.clear();
                    match self
                        .replicasets
                        .iter_mut()
                        .find(|r| r.metadata.name == rs.metadata.name)
                    {
                        Some(r) => {
                            rs.metadata.creation_timestamp = r.metadata.creation_timestamp.clone();
                            rs.metadata.generation = Some(r.metadata.generation.unwrap_or(1) + 1);
                            *r = rs;
                        }
                        None => {
                            rs.metadata.creation_timestamp = Some(crate::time::rfc3339(self.now));
                            rs.metadata.generation = Some(1);
                            self.replicasets.push(rs);
                        }
                    }
                }
                Action::DeleteReplicaSet { name, .. } => {
                    self.replicasets.retain(|r| &r.metadata.name != name)
                }
                Action::PutSlot(s) => {
                    self.slots.retain(|x| x.key() != s.key());
                    self.slots.push(s.clone());
                }
                Action::DeleteSlot(k) => {
                    self.slots.retain(|x| &x.key() != k);
                    // The node stops the pod at once in this model.
                    self.observed.remove(k);
                }
            }
        }
    }

    /// plan + apply; returns the actions.
    pub(super) fn step(&mut self) -> Vec<Action> {
        let actions = self.plan();
        self.apply(&actions);
        actions
    }

    /// Steps until no action (at most `n` rounds).
    pub(super) fn settle(&mut self, n: usize) {
        for _ in 0..n {
            if self.step().is_empty() {
                return;
            }
        }
        panic!("did not settle in {n} rounds");
    }

    /// Every slot's pod becomes ready now.
    pub(super) fn all_ready(&mut self) {
        for s in &self.slots {
            self.observed
                .entry(s.key())
                .or_insert_with(|| ready_status(self.now));
        }
    }

    /// At most `n` pods that are not ready yet become ready.
    fn some_ready(&mut self, n: usize) {
        let keys: Vec<String> = self
            .slots
            .iter()
            .map(Slot::key)
            .filter(|k| !self.observed.get(k).is_some_and(PodStatus::is_ready))
            .take(n)
            .collect();
        for k in keys {
            self.observed.insert(k, ready_status(self.now));
        }
    }

    fn rs(&self, d: &Deployment) -> Vec<&ReplicaSet> {
        self.replicasets.iter().filter(|rs| owns(d, rs)).collect()
    }

    fn current(&self, d: &Deployment) -> Option<&ReplicaSet> {
        self.rs(d)
            .into_iter()
            .find(|rs| deployment::is_current(d, rs))
    }

    fn available(&self, d: &Deployment) -> i32 {
        let ctx = status::Ctx::new(&self.slots, &self.observed, self.now);
        self.rs(d).iter().map(|rs| ctx.counts(rs).available).sum()
    }

    fn total_spec(&self, d: &Deployment) -> i32 {
        self.rs(d).iter().map(|rs| rs.spec.replicas).sum()
    }

    fn status(&self, d: &Deployment) -> Value {
        deployment_status(d, &self.replicasets, &self.slots, &self.observed, self.now)
    }

    /// Creates the Deployment's first revision, all pods ready.
    fn converge(&mut self) {
        for _ in 0..50 {
            let a = self.step();
            self.all_ready();
            if a.is_empty() {
                return;
            }
        }
        panic!("did not converge");
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

// ------------------------------------------------------------------------------ hashing

#[test]
fn template_hash_is_deterministic_and_short() {
    let a = rolling("web", 3, json!(1), json!(0));
    let mut b = a.clone();
    let h = template_hash(&a.spec.template);
    assert_eq!(h.len(), 10);
    assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(h, template_hash(&b.spec.template));
    // Label order in a map never matters; the content does.
    b.spec
        .template
        .metadata
        .labels
        .insert("z".into(), "1".into());
    b.spec
        .template
        .metadata
        .labels
        .insert("a".into(), "1".into());
    let mut c = a.clone();
    c.spec
        .template
        .metadata
        .labels
        .insert("a".into(), "1".into());
    c.spec
        .template
        .metadata
        .labels
        .insert("z".into(), "1".into());
    assert_eq!(
        template_hash(&b.spec.template),
        template_hash(&c.spec.template)
    );
    set_image(&mut b, "img:2");
    assert_ne!(h, template_hash(&b.spec.template));
}

#[test]
fn rfc3339_parses_what_time_formats() {
    for t in [0, T0, 951_782_400, 4_102_444_799] {
        assert_eq!(parse_rfc3339(&crate::time::rfc3339(t)), Some(t));
    }
    assert_eq!(parse_rfc3339("2026-11-25T18:27:00.123Z"), Some(T0));
    assert_eq!(parse_rfc3339("2026-11-25T19:27:00+01:00"), Some(T0));
    assert_eq!(parse_rfc3339("yesterday"), None);
    assert_eq!(parse_rfc3339("2026-13-25T18:27:00Z"), None);
}

// ------------------------------------------------------------------------------ rollout math

#[test]
fn fenceposts_round_as_kubernetes() {
    let cases: &[(i32, Value, Value, (i32, i32))] = &[
        (3, json!(1), json!(0), (1, 0)),
        (4, json!("25%"), json!("25%"), (1, 1)),
        (3, json!("25%"), json!("25%"), (1, 0)),
        (10, json!(2), json!(1), (2, 1)),
        (10, json!("25%"), json!("25%"), (3, 2)),
        // Both round to 0: maxUnavailable becomes 1 so the rollout can move.
        (1, json!("10%"), json!("10%"), (1, 0)),
        (3, json!(0), json!("10%"), (0, 1)),
    ];
    for (replicas, surge, unavailable, want) in cases {
        let d = rolling("web", *replicas, surge.clone(), unavailable.clone());
        assert_eq!(fenceposts(&d), *want, "{replicas} {surge} {unavailable}");
    }
    assert_eq!(fenceposts(&recreate("web", 3)), (0, 0));
}

#[test]
fn new_replicaset_grows_within_surge() {
    // (replicas, surge, new, all) -> new target
    let cases = [
        (3, 1, 0, 3, 1), // 3 old: one surge pod
        (3, 1, 1, 4, 1), // at the cap: wait
        (3, 1, 1, 3, 2), // an old one went: one more
        (4, 1, 0, 4, 1), // 25%/25% of 4
        (10, 2, 0, 10, 2),
        (10, 2, 2, 11, 3),
        (3, 1, 5, 5, 3), // above replicas: back to replicas
        (5, 0, 3, 3, 5), // a scale-up with no old pods
    ];
    for (replicas, surge, new, all, want) in cases {
        assert_eq!(
            new_rs_replicas(replicas, surge, new, all),
            want,
            "{replicas} {surge} {new} {all}"
        );
    }
}

#[test]
fn old_replicasets_shrink_within_unavailability() {
    let s = |replicas, available| Scale {
        replicas,
        available,
    };
    // (replicas, maxUnavailable, new, old before, old after)
    type Case = (i32, i32, Scale, Vec<Scale>, Vec<i32>);
    let cases: Vec<Case> = vec![
        // 3/1/0: the surge pod is not available yet: nothing goes.
        (3, 0, s(1, 0), vec![s(3, 3)], vec![3]),
        // It is: one old goes.
        (3, 0, s(1, 1), vec![s(3, 3)], vec![2]),
        // 25%/25% of 4: one may be unavailable at once.
        (4, 1, s(1, 0), vec![s(4, 4)], vec![3]),
        // 10 with 2/1: new 2 unavailable, 10 old available: 12 - 9 - 2 = 1 may go.
        (10, 1, s(2, 0), vec![s(10, 10)], vec![9]),
        // An unready old pod goes first, once the surge pod is available...
        (3, 0, s(1, 1), vec![s(3, 2)], vec![2]),
        // ...but not while the new pod is unavailable too (Kubernetes' maxScaledDown is 0).
        (3, 0, s(1, 0), vec![s(3, 2)], vec![3]),
        // Unready ones go even when availability alone allows nothing: 2 available < 3.
        (4, 1, s(1, 0), vec![s(4, 2)], vec![3]),
        // Oldest first across several old ReplicaSets.
        (4, 1, s(2, 2), vec![s(1, 1), s(2, 2)], vec![0, 1]),
        // No old pods: nothing to do.
        (3, 0, s(3, 3), vec![s(0, 0)], vec![0]),
    ];
    for (replicas, unavailable, new, mut old, want) in cases {
        scale_down_old(replicas, unavailable, new, &mut old);
        let got: Vec<i32> = old.iter().map(|o| o.replicas).collect();
        assert_eq!(got, want, "{replicas} {unavailable} {new:?}");
    }
}

// ------------------------------------------------------------------------------ rollouts

/// A rolling update from img:1 to img:2, pods becoming ready `per_step` at a time after each
/// round: the bounds hold at every step, and it ends with only the new ReplicaSet.
fn simulate_rollout(replicas: i32, surge: Value, unavailable: Value, per_step: usize) {
    let mut d = rolling("web", replicas, surge, unavailable);
    let (max_surge, max_unavailable) = fenceposts(&d);
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let first = sim.current(&d).unwrap().metadata.name.clone();
    assert_eq!(sim.slots.len(), replicas as usize);

    set_image(&mut d, "img:2");
    sim.deployments = vec![d.clone()];
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 200, "rollout did not finish");
        let actions = sim.step();
        let total = sim.total_spec(&d);
        let available = sim.available(&d);
        assert!(
            total <= replicas + max_surge,
            "round {rounds}: {total} pods > {replicas} + {max_surge}"
        );
        assert!(
            available >= replicas - max_unavailable,
            "round {rounds}: {available} available < {replicas} - {max_unavailable}"
        );
        sim.now += 1;
        sim.some_ready(per_step);
        if actions.is_empty() && sim.plan().is_empty() {
            break;
        }
    }
    let rss = sim.rs(&d);
    let current = sim.current(&d).unwrap();
    assert_ne!(current.metadata.name, first);
    assert_eq!(current.spec.replicas, replicas);
    for rs in rss {
        if rs.metadata.name != current.metadata.name {
            assert_eq!(rs.spec.replicas, 0, "{}", rs.metadata.name);
        }
    }
    assert_eq!(sim.slots.len(), replicas as usize);
    assert!(
        sim.slots
            .iter()
            .all(|s| s.owner_name == current.metadata.name)
    );
    assert_eq!(revision(current), 2);
    let st = sim.status(&d);
    assert_eq!(st["updatedReplicas"], replicas);
    assert_eq!(st["availableReplicas"], replicas);
    assert_eq!(
        condition(&st, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );
    assert_eq!(condition(&st, "Available")["status"], "True");
}

#[test]
fn rolling_update_keeps_its_bounds() {
    let cases: &[(i32, Value, Value)] = &[
        (3, json!(1), json!(0)),
        (4, json!("25%"), json!("25%")),
        (10, json!(2), json!(1)),
        (3, json!(0), json!(1)),
        (5, json!("100%"), json!(0)),
        (1, json!(1), json!(0)),
        (7, json!("30%"), json!("50%")),
    ];
    for (replicas, surge, unavailable) in cases {
        for per_step in [1, 3, 100] {
            simulate_rollout(*replicas, surge.clone(), unavailable.clone(), per_step);
        }
    }
}

#[test]
fn rolling_update_steps_of_3_with_surge_1() {
    // Kubernetes' documented sequence for replicas 3, maxSurge 1, maxUnavailable 0.
    let mut d = rolling("web", 3, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    set_image(&mut d, "img:2");
    sim.deployments = vec![d.clone()];
    let mut seen = Vec::new();
    for _ in 0..30 {
        let a = sim.step();
        let cur = sim.current(&d).unwrap().spec.replicas;
        seen.push((cur, sim.total_spec(&d) - cur));
        sim.all_ready();
        if a.is_empty() {
            break;
        }
    }
    seen.dedup();
    assert_eq!(seen, vec![(1, 3), (1, 2), (2, 2), (2, 1), (3, 1), (3, 0)]);
}

#[test]
fn min_ready_seconds_delays_scale_down() {
    let mut v = deployment_json("web", 1, "img:1");
    v["spec"]["minReadySeconds"] = json!(10);
    v["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let mut d = typed_deployment(v);
    let mut sim = Sim::new(vec![d.clone()]);
    sim.step();
    sim.observed.insert(
        sim.slots[0].key(),
        ready_status(T0 - 100), // long ready: available
    );
    sim.settle(5);
    set_image(&mut d, "img:2");
    sim.deployments = vec![d.clone()];
    sim.settle(5);
    let new = sim.current(&d).unwrap().metadata.name.clone();
    assert_eq!(sim.slots.len(), 2, "surge pod created, old one kept");
    let new_key = format!("default/{new}-0");
    sim.observed.insert(new_key, ready_status(sim.now));
    for t in 0..10 {
        sim.now = T0 + t;
        assert!(
            sim.step().is_empty() || sim.slots.len() == 2,
            "old pod must stay until the new one is available"
        );
        assert_eq!(sim.slots.len(), 2);
    }
    sim.now = T0 + 10;
    sim.settle(5);
    assert_eq!(sim.slots.len(), 1);
    assert_eq!(sim.slots[0].owner_name, new);
}

#[test]
fn recreate_stops_old_pods_before_starting_new_ones() {
    let mut d = recreate("db", 2);
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let old = sim.current(&d).unwrap().metadata.name.clone();
    set_image(&mut d, "img:2");
    sim.deployments = vec![d.clone()];
    // The old pods keep running a while after their slots are gone.
    let lingering: Vec<(String, PodStatus)> = sim
        .observed
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let a = sim.step();
    sim.observed.extend(lingering.clone());
    assert!(a.iter().any(|a| matches!(a,
        Action::PutReplicaSet(rs) if rs.metadata.name == old && rs.spec.replicas == 0)));
    assert!(sim.slots.is_empty());
    for _ in 0..3 {
        assert!(sim.step().is_empty(), "waits while old pods are observed");
        assert!(sim.current(&d).is_none());
    }
    sim.observed.clear();
    sim.settle(5);
    let new = sim.current(&d).unwrap();
    assert_eq!(new.spec.replicas, 2);
    assert_eq!(revision(new), 2);
    assert_eq!(sim.slots.len(), 2);
    assert!(sim.slots.iter().all(|s| s.owner_name == new.metadata.name));
}

#[test]
fn undo_reuses_the_old_replicaset_with_a_new_revision() {
    let mut d = rolling("web", 2, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let first = sim.current(&d).unwrap().metadata.name.clone();
    set_image(&mut d, "img:2");
    sim.deployments = vec![d.clone()];
    sim.converge();
    assert_eq!(sim.replicasets.len(), 2);

    let template = rollback_template(&d, &sim.replicasets, None).unwrap();
    assert!(
        !template
            .metadata
            .labels
            .contains_key(POD_TEMPLATE_HASH_LABEL)
    );
    assert_eq!(template.spec.containers[0].image, "img:1");
    assert_eq!(
        rollback_template(&d, &sim.replicasets, Some(1))
            .unwrap()
            .spec
            .containers[0]
            .image,
        "img:1"
    );
    assert_eq!(
        rollback_template(&d, &sim.replicasets, Some(7)).unwrap_err(),
        "revision 7 not found; known revisions: 1, 2"
    );

    d.spec.template = template;
    sim.deployments = vec![d.clone()];
    sim.converge();
    assert_eq!(sim.replicasets.len(), 2, "no new ReplicaSet");
    let current = sim.current(&d).unwrap();
    assert_eq!(current.metadata.name, first);
    assert_eq!(revision(current), 3);
    assert_eq!(current.spec.replicas, 2);
    assert!(sim.slots.iter().all(|s| s.owner_name == first));
}

#[test]
fn rollback_errors_name_the_problem() {
    let d = rolling("web", 1, json!(1), json!(0));
    assert_eq!(
        rollback_template(&d, &[], None).unwrap_err(),
        "no rollout history found for deployment \"web\""
    );
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let err = rollback_template(&d, &sim.replicasets, None).unwrap_err();
    assert!(err.contains("known revisions: 1"), "{err}");
}

#[test]
fn history_beyond_the_limit_is_deleted() {
    let mut v = deployment_json("web", 1, "img:0");
    v["spec"]["revisionHistoryLimit"] = json!(2);
    let mut d = typed_deployment(v);
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    for i in 1..=5 {
        set_image(&mut d, &format!("img:{i}"));
        sim.deployments = vec![d.clone()];
        sim.converge();
        let old = sim.rs(&d).len() - 1;
        assert!(old <= 2, "after revision {}: {old} old ReplicaSets", i + 1);
    }
    let mut revisions: Vec<i64> = sim.rs(&d).iter().map(|rs| revision(rs)).collect();
    revisions.sort();
    assert_eq!(revisions, vec![4, 5, 6], "the newest old ones are kept");
}

#[test]
fn paused_deployment_only_scales() {
    let mut d = rolling("web", 2, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    d.spec.paused = true;
    set_image(&mut d, "img:2");
    sim.deployments = vec![d.clone()];
    assert!(
        sim.plan().is_empty(),
        "a paused template change does nothing"
    );
    d.spec.replicas = 4;
    sim.deployments = vec![d.clone()];
    sim.converge();
    assert_eq!(sim.replicasets.len(), 1);
    assert_eq!(sim.replicasets[0].spec.replicas, 4);
    assert_eq!(
        condition(&sim.status(&d), "Progressing")["reason"],
        "DeploymentPaused"
    );
}

#[test]
fn scaling_without_template_change_scales_the_current_replicaset() {
    let mut d = rolling("web", 2, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let name = sim.replicasets[0].metadata.name.clone();
    for replicas in [5, 1, 3] {
        d.spec.replicas = replicas;
        sim.deployments = vec![d.clone()];
        sim.converge();
        assert_eq!(sim.replicasets.len(), 1);
        assert_eq!(sim.replicasets[0].metadata.name, name);
        assert_eq!(sim.slots.len(), replicas as usize);
    }
}

// ------------------------------------------------------------------------------ slots

#[test]
fn replicaset_slots_follow_replicas() {
    let d = rolling("web", 3, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let rs = sim.current(&d).unwrap().clone();
    let hash = rs.metadata.labels[POD_TEMPLATE_HASH_LABEL].clone();
    assert_eq!(rs.metadata.name, format!("web-{hash}"));
    assert_eq!(rs.spec.selector.match_labels[POD_TEMPLATE_HASH_LABEL], hash);
    assert_eq!(
        rs.spec.template.metadata.labels[POD_TEMPLATE_HASH_LABEL],
        hash
    );
    assert_eq!(rs.metadata.annotations[REVISION_ANNOTATION], "1");
    let mut pods: Vec<(String, u32)> = sim.slots.iter().map(|s| (s.pod.clone(), s.index)).collect();
    pods.sort();
    assert_eq!(
        pods,
        (0..3)
            .map(|i| (format!("web-{hash}-{i}"), i))
            .collect::<Vec<_>>()
    );
    for s in &sim.slots {
        assert_eq!(s.owner_kind, "ReplicaSet");
        assert_eq!(s.revision, hash);
        assert_eq!(s.node, "n1");
    }

    // Scaling down removes the highest index when all are alike...
    let mut d2 = d.clone();
    d2.spec.replicas = 2;
    sim.deployments = vec![d2.clone()];
    sim.converge();
    let mut idx: Vec<u32> = sim.slots.iter().map(|s| s.index).collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1]);

    // ...and an unready pod before a ready one.
    sim.observed.insert(
        sim.slots.iter().find(|s| s.index == 0).unwrap().key(),
        running_unready(),
    );
    d2.spec.replicas = 1;
    sim.deployments = vec![d2.clone()];
    sim.step();
    let idx: Vec<u32> = sim.slots.iter().map(|s| s.index).collect();
    assert_eq!(idx, vec![1]);
    // Scaling up again fills the lowest free index.
    d2.spec.replicas = 2;
    sim.deployments = vec![d2.clone()];
    sim.step();
    let mut idx: Vec<u32> = sim.slots.iter().map(|s| s.index).collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1]);
}

#[test]
fn orphans_are_removed_and_bare_pods_get_a_slot() {
    let d = rolling("web", 2, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let pod: Pod = match Resource::from_value(
        Kind::Pod,
        json!({"metadata": {"name": "solo", "namespace": "default"},
               "spec": {"containers": [{"name": "c", "image": "img:1"}]}}),
    )
    .unwrap()
    {
        Resource::Pod(p) => p,
        _ => unreachable!(),
    };
    sim.pods = vec![pod];
    // A slot of an owner kind this version does not know (a newer node's) and an orphan
    // ReplicaSet slot.
    let foreign = Slot {
        namespace: "default".into(),
        pod: "db-0".into(),
        owner_kind: "DaemonSet".into(),
        owner_name: "db".into(),
        index: 0,
        revision: "x".into(),
        node: "n1".into(),
        unschedulable: None,
    };
    let orphan = Slot {
        pod: "gone-abc-0".into(),
        owner_kind: "ReplicaSet".into(),
        owner_name: "gone-abc".into(),
        ..foreign.clone()
    };
    sim.slots.push(foreign.clone());
    sim.slots.push(orphan.clone());
    sim.settle(5);
    let solo = sim.slots.iter().find(|s| s.pod == "solo").unwrap();
    assert_eq!(
        (
            solo.owner_kind.as_str(),
            solo.index,
            solo.revision.as_str(),
            solo.node.as_str()
        ),
        ("Pod", 0, "", "n1")
    );
    assert!(sim.slots.contains(&foreign));
    assert!(!sim.slots.iter().any(|s| s.pod == orphan.pod));

    // Deleting the Deployment removes its ReplicaSets and their slots; the Pod's stays.
    sim.deployments.clear();
    sim.settle(5);
    assert!(sim.replicasets.is_empty());
    let mut left: Vec<&str> = sim.slots.iter().map(|s| s.pod.as_str()).collect();
    left.sort();
    assert_eq!(left, vec!["db-0", "solo"]);
    sim.pods.clear();
    sim.settle(5);
    assert_eq!(sim.slots, vec![foreign]);
}

#[test]
fn a_recreated_deployment_does_not_inherit_by_uid() {
    let d = rolling("web", 1, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let mut rs = sim.replicasets[0].clone();
    rs.metadata.owner_references = vec![shoal_protocol::meta::OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        uid: "uid-web".into(),
        controller: true,
    }];
    assert!(owns(&d, &rs));
    let mut d2 = d.clone();
    d2.metadata.uid = Some("another".into());
    assert!(!owns(&d2, &rs));
    let mut other = d.clone();
    other.metadata.name = "web-api".into();
    assert!(!owns(&other, &sim.replicasets[0]));
}

// ------------------------------------------------------------------------------ placement

fn slot(owner: &str, index: u32, node: &str) -> Slot {
    Slot {
        namespace: "default".into(),
        pod: format!("{owner}-{index}"),
        owner_kind: "ReplicaSet".into(),
        owner_name: owner.into(),
        index,
        revision: "h".into(),
        node: node.into(),
        unschedulable: None,
    }
}

const GIB: u64 = 1 << 30;

fn node(name: &str, cpus: u32, memory_bytes: u64) -> crate::observed::NodeRecord {
    crate::observed::NodeRecord {
        name: name.into(),
        cpus,
        memory_bytes,
        ..crate::observed::NodeRecord::default()
    }
}

/// A Deployment whose one container requests `cpu` and `memory`.
fn requesting(name: &str, replicas: i32, cpu: &str, memory: &str) -> Deployment {
    let mut v = deployment_json(name, replicas, "img:1");
    v["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": cpu, "memory": memory}});
    typed_deployment(v)
}

fn nodes_of(sim: &Sim) -> Vec<(&str, &str)> {
    let mut got: Vec<(&str, &str)> = sim
        .slots
        .iter()
        .map(|s| (s.pod.as_str(), s.node.as_str()))
        .collect();
    got.sort();
    got
}

fn per_node(sim: &Sim) -> std::collections::BTreeMap<&str, usize> {
    let mut m = std::collections::BTreeMap::new();
    for s in &sim.slots {
        *m.entry(s.node.as_str()).or_default() += 1;
    }
    m
}

#[test]
fn placement_spreads_and_sticks() {
    let members = [
        (node("a", 2, 4 * GIB), crate::observed::Liveness::Alive),
        (node("b", 2, 4 * GIB), crate::observed::Liveness::Alive),
        (node("c", 2, 4 * GIB), crate::observed::Liveness::Alive),
        (node("dead", 2, 4 * GIB), crate::observed::Liveness::Dead),
    ];
    let nodes = Nodes::from_members(members.iter().map(|(r, l)| (r, *l)), &[]);
    // Pods without requests: scoring counts Kubernetes' default requests.
    let request = |s: &Slot| {
        Some(crate::scheduler::PodRequest::new(
            crate::scheduler::OwnerKey::of_slot(s),
        ))
    };
    // Another owner already loads `a`; `web-9` keeps a known node that stopped
    // heartbeating; `web-8` was on a node that vanished and moves.
    let mut slots = vec![
        slot("other", 0, "a"),
        slot("web", 9, "dead"),
        slot("web", 8, "vanished"),
    ];
    slots.extend((0..6).map(|i| slot("web", i, "")));
    place(slots.iter_mut(), &nodes, request);
    let got: Vec<(&str, &str)> = slots
        .iter()
        .map(|s| (s.pod.as_str(), s.node.as_str()))
        .collect();
    // The slots to place go in index order, spreading over the alive nodes first, then by
    // load (`a` holds another owner's pod, so it loses ties), never to the dead node.
    assert_eq!(
        got,
        vec![
            ("other-0", "a"),
            ("web-9", "dead"),
            ("web-8", "b"),
            ("web-0", "b"),
            ("web-1", "c"),
            ("web-2", "a"),
            ("web-3", "b"),
            ("web-4", "c"),
            ("web-5", "a"),
        ]
    );
    assert!(slots.iter().all(|s| s.unschedulable.is_none()));
    // No alive node at all: nowhere, and the slot says why.
    let mut lone = [slot("x", 0, "")];
    place(lone.iter_mut(), &Nodes::default(), request);
    assert_eq!(lone[0].node, "");
    assert_eq!(
        lone[0].unschedulable.as_deref(),
        Some("no nodes available to schedule pods")
    );
}

#[test]
fn slots_spread_over_nodes_in_a_round() {
    let d = rolling("web", 4, json!(1), json!(0));
    let mut sim = Sim::new(vec![d]);
    sim.nodes = Nodes::alive([
        crate::scheduler::NodeInfo::new("a", 2000, 4 * GIB),
        crate::scheduler::NodeInfo::new("b", 2000, 4 * GIB),
    ]);
    sim.converge();
    let on_a = sim.slots.iter().filter(|s| s.node == "a").count();
    assert_eq!(on_a, 2);
}

#[test]
fn replicas_with_requests_spread_over_three_nodes() {
    let members = [
        (node("a", 4, 8 * GIB), crate::observed::Liveness::Alive),
        (node("b", 4, 8 * GIB), crate::observed::Liveness::Alive),
        (node("c", 4, 8 * GIB), crate::observed::Liveness::Alive),
        (node("d", 4, 8 * GIB), crate::observed::Liveness::Dead),
    ];
    let mut sim = Sim::new(vec![requesting("web", 4, "500m", "1Gi")]);
    sim.nodes = Nodes::from_members(members.iter().map(|(r, l)| (r, *l)), &[]);
    sim.converge();
    let counts: Vec<usize> = per_node(&sim).into_values().collect();
    let mut sorted = counts.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 1, 2], "{:?}", nodes_of(&sim));
    assert!(!sim.slots.iter().any(|s| s.node == "d" || s.node.is_empty()));
    assert!(sim.slots.iter().all(|s| s.unschedulable.is_none()));
}

#[test]
fn a_cordoned_node_gets_no_new_pods() {
    let members = [
        (node("a", 4, 8 * GIB), crate::observed::Liveness::Alive),
        (node("b", 4, 8 * GIB), crate::observed::Liveness::Alive),
        (node("c", 4, 8 * GIB), crate::observed::Liveness::Alive),
    ];
    let objects = vec![
        crate::nodes::registration("a", "peer-a"),
        {
            let mut b = crate::nodes::registration("b", "peer-b");
            b["spec"] = json!({"unschedulable": true});
            b
        },
        crate::nodes::registration("c", "peer-c"),
    ];
    let mut sim = Sim::new(vec![requesting("web", 6, "100m", "128Mi")]);
    sim.nodes = Nodes::from_members(members.iter().map(|(r, l)| (r, *l)), &objects);
    sim.converge();
    let counts = per_node(&sim);
    assert_eq!(counts.get("b"), None, "{:?}", nodes_of(&sim));
    assert_eq!((counts.get("a"), counts.get("c")), (Some(&3), Some(&3)));
    // With every node cordoned, new pods go nowhere and say why.
    let cordon = |mut o: Value| {
        o["spec"] = json!({"unschedulable": true});
        o
    };
    let all: Vec<Value> = objects.into_iter().map(cordon).collect();
    sim.nodes = Nodes::from_members(members.iter().map(|(r, l)| (r, *l)), &all);
    sim.deployments[0].spec.replicas = 7;
    sim.settle(5);
    let new = sim.slots.iter().find(|s| s.node.is_empty()).unwrap();
    assert_eq!(
        new.unschedulable.as_deref(),
        Some("0/3 nodes are available: 3 node(s) were unschedulable.")
    );
    // The pods already placed keep their nodes.
    assert_eq!(sim.slots.iter().filter(|s| !s.node.is_empty()).count(), 6);
}

#[test]
fn a_pod_that_fits_nowhere_is_pending_with_the_reason() {
    let members = [
        (node("a", 4, 2 * GIB), crate::observed::Liveness::Alive),
        (node("b", 4, 2 * GIB), crate::observed::Liveness::Alive),
        (node("c", 4, 4 * GIB), crate::observed::Liveness::Alive),
    ];
    let mut sim = Sim::new(vec![requesting("big", 2, "100m", "16Gi")]);
    sim.nodes = Nodes::from_members(members.iter().map(|(r, l)| (r, *l)), &[]);
    let why = "0/3 nodes are available: 3 Insufficient memory.";
    let writes_before = sim.writes;
    sim.settle(5);
    assert_eq!(sim.slots.len(), 2);
    for s in &sim.slots {
        assert_eq!(
            (s.node.as_str(), s.unschedulable.as_deref()),
            ("", Some(why))
        );
    }
    // Written once: later rounds that see the same cluster write nothing.
    let writes = sim.writes;
    assert!(writes > writes_before);
    for _ in 0..3 {
        sim.now += 100;
        assert_eq!(sim.plan(), vec![]);
    }

    // The pod as the API shows it: Pending, PodScheduled False, Unschedulable, the message.
    let desired = crate::pods::join(&sim.slots, &sim.replicasets, &[]);
    assert_eq!(desired.len(), 2);
    let pod = crate::pods::pod_object(&desired[0], None);
    assert_eq!(pod["status"]["phase"], "Pending");
    let scheduled = condition(&pod["status"], "PodScheduled");
    assert_eq!(scheduled["status"], "False");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert_eq!(scheduled["message"], why);
    assert!(pod["spec"].get("nodeName").is_none());

    // A small node comes and goes: the pod still fits nowhere for the same reason, and the
    // slots are not rewritten for the new count.
    let mut flap = members.to_vec();
    flap.push((node("e", 4, GIB), crate::observed::Liveness::Alive));
    sim.nodes = Nodes::from_members(flap.iter().map(|(r, l)| (r, *l)), &[]);
    assert_eq!(sim.plan(), vec![], "a flap rewrites no slot");
    sim.nodes = Nodes::from_members(members.iter().map(|(r, l)| (r, *l)), &[]);
    assert_eq!(sim.plan(), vec![]);

    // A node with room joins: the slots are placed and the message is cleared.
    let mut bigger = members.to_vec();
    bigger.push((node("d", 4, 64 * GIB), crate::observed::Liveness::Alive));
    sim.nodes = Nodes::from_members(bigger.iter().map(|(r, l)| (r, *l)), &[]);
    sim.settle(5);
    for s in &sim.slots {
        assert_eq!((s.node.as_str(), s.unschedulable.as_deref()), ("d", None));
    }
    let desired = crate::pods::join(&sim.slots, &sim.replicasets, &[]);
    let pod = crate::pods::pod_object(&desired[0], None);
    assert_eq!(condition(&pod["status"], "PodScheduled")["status"], "True");
}

#[test]
fn alive_nodes_come_from_membership() {
    use crate::observed::Liveness;
    let members = [
        (node("fresh", 2, GIB), Liveness::Alive),
        (node("slow", 2, GIB), Liveness::Suspect),
        (node("stale", 2, GIB), Liveness::Dead),
        (node("gone", 2, GIB), Liveness::Left),
    ];
    let mut fresh = crate::nodes::registration("fresh", "p");
    fresh["metadata"]["labels"]["zone"] = json!("z1");
    fresh["spec"] = json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]});
    let nodes = Nodes::from_members(members.iter().map(|(r, l)| (r, *l)), &[fresh]);
    let alive: Vec<&str> = nodes.alive.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(alive, vec!["fresh"]);
    assert_eq!(nodes.known.len(), 4);
    let info = &nodes.alive[0];
    assert_eq!((info.cpu_millis, info.memory_bytes), (2000, GIB));
    assert_eq!(info.labels.get("zone").map(String::as_str), Some("z1"));
    assert_eq!(info.taints.len(), 1);
}

// ------------------------------------------------------------------------------ status

#[test]
fn status_counts_and_conditions() {
    let mut d = rolling("web", 3, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let st = sim.status(&d);
    assert_eq!(st["replicas"], 3);
    assert_eq!(st["readyReplicas"], 3);
    assert_eq!(st["availableReplicas"], 3);
    assert_eq!(st["unavailableReplicas"], 0);
    assert_eq!(st["observedGeneration"], 1);
    let p = condition(&st, "Progressing");
    let rs_name = sim.replicasets[0].metadata.name.clone();
    assert_eq!(
        p["message"],
        format!("ReplicaSet \"{rs_name}\" has successfully progressed.")
    );
    let rs_st = replicaset_status(&sim.replicasets[0], &sim.slots, &sim.observed, sim.now);
    assert_eq!(rs_st["availableReplicas"], 3);
    assert_eq!(rs_st["replicas"], 3);

    // A rollout whose new pods never get ready.
    set_image(&mut d, "img:broken");
    d.spec.progress_deadline_seconds = 60;
    sim.deployments = vec![d.clone()];
    sim.settle(5);
    let st = sim.status(&d);
    assert_eq!(st["updatedReplicas"], 1);
    assert_eq!(st["replicas"], 4);
    assert_eq!(condition(&st, "Progressing")["reason"], "ReplicaSetUpdated");
    assert_eq!(condition(&st, "Available")["status"], "True");
    sim.now += 61;
    assert!(sim.step().is_empty(), "no progress, no write");
    let st = sim.status(&d);
    let p = condition(&st, "Progressing");
    assert_eq!(p["status"], "False");
    assert_eq!(p["reason"], "ProgressDeadlineExceeded");
    // Progress resets the clock.
    sim.all_ready();
    sim.step();
    let st = sim.status(&d);
    assert_eq!(condition(&st, "Progressing")["reason"], "ReplicaSetUpdated");
}

#[test]
fn availability_below_the_minimum_is_reported() {
    let d = rolling("web", 4, json!(1), json!(1));
    let mut sim = Sim::new(vec![d.clone()]);
    sim.converge();
    let keys: Vec<String> = sim.slots.iter().take(2).map(Slot::key).collect();
    for k in keys {
        sim.observed.insert(k, running_unready());
    }
    let st = sim.status(&d);
    assert_eq!(st["availableReplicas"], 2);
    let a = condition(&st, "Available");
    assert_eq!(a["status"], "False");
    assert_eq!(a["reason"], "MinimumReplicasUnavailable");
}

#[test]
fn progress_marks_advance_only_on_progress() {
    let m = |new, available, old, complete| ProgressMark {
        new,
        available,
        old,
        complete,
    };
    assert_eq!(
        ProgressMark::parse(&m(1, 2, 3, true).render()),
        Some(m(1, 2, 3, true))
    );
    assert_eq!(ProgressMark::parse("1/2"), None);
    // (previous, now) -> written
    let cases = [
        (m(1, 0, 3, false), m(1, 0, 3, false), None),
        (
            m(1, 0, 3, false),
            m(1, 1, 3, false),
            Some(m(1, 1, 3, false)),
        ),
        // A pod flapping back to ready does not beat the high-water mark.
        (m(2, 2, 1, false), m(2, 1, 1, false), None),
        (
            m(2, 2, 1, false),
            m(2, 2, 0, false),
            Some(m(2, 2, 0, false)),
        ),
        (m(3, 3, 0, false), m(3, 3, 0, true), Some(m(3, 3, 0, true))),
        (m(3, 3, 0, true), m(3, 3, 0, true), None),
        // A complete rollout that loses a pod stays complete (no write)...
        (m(3, 3, 0, true), m(3, 2, 0, false), None),
        // ...until a scale-up starts new progress.
        (m(3, 3, 0, true), m(5, 3, 0, false), Some(m(5, 3, 0, false))),
    ];
    for (prev, now, want) in cases {
        assert_eq!(
            ProgressMark::advance(Some(prev), now),
            want,
            "{prev:?} {now:?}"
        );
    }
}

// ------------------------------------------------------------------------------ convergence

#[test]
fn a_converged_cluster_plans_nothing() {
    let mut d = rolling("web", 3, json!(1), json!(0));
    let mut sim = Sim::new(vec![d.clone(), recreate("db", 1)]);
    sim.converge();
    set_image(&mut d, "img:2");
    sim.deployments[0] = d;
    sim.converge();
    let writes = sim.writes;
    for _ in 0..3 {
        sim.now += 1000;
        assert_eq!(sim.plan(), vec![], "converged: no action");
    }
    assert_eq!(sim.writes, writes);
    // The progress annotation was written when progress happened, not since.
    let at = sim
        .replicasets
        .iter()
        .filter_map(|rs| rs.metadata.annotations.get(PROGRESS_AT_ANNOTATION))
        .count();
    assert!(at >= 2);
}

// ------------------------------------------------------------------------------ the task

/// A store with a Deployment of 3 replicas applied, and this node's observed record.
async fn task_setup() -> (
    tempfile::TempDir,
    crate::state::StateHandle,
    crate::observed::ObservedHandle,
    tokio_util::sync::CancellationToken,
) {
    use crate::observed::{self, NodeRecord};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let state = crate::state::open_for_test(dir.path(), &stop);
    let now = crate::time::unix_now();
    let (observed, _reporter, heartbeat) = observed::start(
        NodeRecord {
            name: "n1".into(),
            version: 0,
            address: "127.0.0.1".into(),
            shoal_version: "0".into(),
            cpus: 1,
            memory_bytes: 1,
            started_at: now,
            heartbeat_at: now,
            ..NodeRecord::default()
        },
        crate::observed::Timing::default(),
        4,
    );
    drop(heartbeat);
    let mut v = deployment_json("web", 3, "img:1");
    v["metadata"].as_object_mut().unwrap().remove("uid");
    v["metadata"].as_object_mut().unwrap().remove("generation");
    v["apiVersion"] = json!("apps/v1");
    v["kind"] = json!("Deployment");
    state
        .apply_values(vec![(Kind::Deployment, v)])
        .await
        .unwrap();
    (dir, state, observed, stop)
}

#[tokio::test]
async fn the_task_creates_a_replicaset_and_slots_on_this_node() {
    let (_dir, state, observed, stop) = task_setup().await;
    let mut c = Controllers::new(state.clone(), observed, "n1".into());
    c.tick = std::time::Duration::from_millis(50);
    c.debounce = std::time::Duration::from_millis(10);
    tokio::spawn(run(c.clone(), stop.clone()));

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let slots = state.slots().await.unwrap();
        if slots.len() == 3 {
            assert!(
                slots
                    .iter()
                    .all(|s| s.node == "n1" && s.owner_kind == "ReplicaSet")
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slots: {slots:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rss = state.list(Kind::ReplicaSet, Some("default")).await.unwrap();
    assert_eq!(rss.len(), 1);
    // Converged: another round writes nothing.
    let before = state.stats().await.unwrap();
    assert_eq!(task::round(&c).await.unwrap(), 0);
    assert_eq!(
        format!("{:?}", state.stats().await.unwrap()),
        format!("{before:?}")
    );
    stop.cancel();
}

#[tokio::test]
async fn a_node_that_is_not_the_leader_writes_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (_dir, state, observed, stop) = task_setup().await;
    let leads = Arc::new(AtomicBool::new(false));
    let flag = leads.clone();
    let mut c = Controllers::new(state.clone(), observed, "n1".into())
        .with_leader(Arc::new(move || flag.load(Ordering::SeqCst)));
    c.tick = std::time::Duration::from_millis(20);
    c.debounce = std::time::Duration::from_millis(5);
    tokio::spawn(run(c, stop.clone()));

    // Many ticks pass: nothing is planned or written while another node leads.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(state.slots().await.unwrap().is_empty());
    assert!(state.list(Kind::ReplicaSet, None).await.unwrap().is_empty());

    // Taking the role, it acts.
    leads.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while state.slots().await.unwrap().len() != 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slots after taking the role"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.cancel();
}

#[test]
fn slots_move_off_a_node_only_after_it_is_dead_for_the_grace() {
    use crate::observed::{Liveness, Member};
    use std::time::Duration;
    let now = tokio::time::Instant::now();
    let member = |name: &str, liveness, quiet_secs: u64| {
        let mut record = node(name, 2, 4 * GIB);
        record.seen = Some(now - Duration::from_secs(quiet_secs));
        (
            name.to_string(),
            Member {
                record,
                liveness,
                last_seen: None,
            },
        )
    };
    let members: BTreeMap<String, Member> = [
        member("alive", Liveness::Alive, 0),
        member("suspect", Liveness::Suspect, 4),
        // Dead after 6 s; the grace adds 5 s.
        member("dead-briefly", Liveness::Dead, 8),
        member("dead-long", Liveness::Dead, 12),
        member("left-now", Liveness::Left, 1),
        member("left-long", Liveness::Left, 6),
    ]
    .into_iter()
    .collect();
    let registered = vec!["alive".to_string(), "unheard".to_string()];
    let graces = super::task::Graces {
        dead_after: Duration::from_secs(6),
        grace: Duration::from_secs(5),
        unheard: Duration::from_secs(300),
    };
    let moving = super::task::movable(&members, &registered, graces, Duration::from_secs(3));
    assert_eq!(
        moving.iter().map(String::as_str).collect::<Vec<_>>(),
        ["dead-long", "left-long"]
    );
    // A registered node never heard since this node started is unknown, not dead: up for
    // far longer than dead-after + grace, this node still leaves its pods alone...
    for uptime in [12, 40, 299] {
        let moving =
            super::task::movable(&members, &registered, graces, Duration::from_secs(uptime));
        assert!(!moving.contains("unheard"), "up {uptime} s: {moving:?}");
    }
    // ...until the unheard grace bounds it (a machine that never came back after a power cut).
    let moving = super::task::movable(&members, &registered, graces, Duration::from_secs(300));
    assert!(moving.contains("unheard"), "{moving:?}");

    // Placement: slots on a node within its grace stay; those on a movable node go to the
    // alive ones, and nothing else moves.
    let mut nodes = Nodes::from_members(members.values().map(|m| (&m.record, m.liveness)), &[]);
    nodes.movable = moving;
    let request = |s: &Slot| {
        Some(crate::scheduler::PodRequest::new(
            crate::scheduler::OwnerKey::of_slot(s),
        ))
    };
    let mut slots = [
        slot("web", 0, "alive"),
        slot("web", 1, "dead-briefly"),
        slot("web", 2, "dead-long"),
        slot("web", 3, "left-long"),
        slot("web", 4, "suspect"),
    ];
    place(slots.iter_mut(), &nodes, request);
    let got: Vec<&str> = slots.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(got, ["alive", "dead-briefly", "alive", "alive", "suspect"]);
}

#[test]
fn drain_moves_pods_within_max_unavailable_and_force_moves_them_all() {
    use crate::scheduler::NodeInfo;
    let d = rolling("web", 4, json!(1), json!(1));
    let mut sim = Sim::new(vec![d]);
    let node = |n: &str| NodeInfo::new(n, 4000, 8 * GIB);
    sim.nodes = Nodes::alive([node("a"), node("b"), node("c")]);
    sim.converge();
    let count_on = |sim: &Sim, n: &str| sim.slots.iter().filter(|s| s.node == n).count();
    // The node with two pods (4 over 3 nodes spread 2/1/1).
    let busiest = ["a", "b", "c"]
        .into_iter()
        .find(|n| count_on(&sim, n) == 2)
        .unwrap_or_else(|| panic!("{:?}", nodes_of(&sim)));
    let others: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != busiest)
        .collect();

    // Drain it: cordoned, and its pods leave one at a time (maxUnavailable 1), each only once
    // the one before is ready again elsewhere.
    sim.nodes = Nodes::alive([node(others[0]), node(busiest).cordoned(), node(others[1])]);
    sim.nodes.draining.insert(busiest.into(), false);
    let mut rounds_with_a_move = 0;
    for _ in 0..20 {
        let before: BTreeMap<String, String> = sim
            .slots
            .iter()
            .map(|s| (s.key(), s.node.clone()))
            .collect();
        sim.step();
        let moved: Vec<String> = sim
            .slots
            .iter()
            .filter(|s| before.get(&s.key()).is_some_and(|n| *n != s.node))
            .map(Slot::key)
            .collect();
        assert!(moved.len() <= 1, "one at a time: {moved:?}");
        rounds_with_a_move += usize::from(!moved.is_empty());
        for k in &moved {
            // The pod starts again on its new node: not ready yet.
            sim.observed.remove(k);
        }
        let ready = sim
            .slots
            .iter()
            .filter(|s| sim.observed.get(&s.key()).is_some_and(PodStatus::is_ready))
            .count();
        assert!(ready >= 3, "never more than maxUnavailable down: {ready}");
        assert!(sim.slots.iter().all(|s| !s.node.is_empty()));
        if count_on(&sim, busiest) == 0 {
            break;
        }
        sim.some_ready(1);
    }
    assert_eq!(count_on(&sim, busiest), 0, "{:?}", nodes_of(&sim));
    assert_eq!(rounds_with_a_move, 2, "two pods, one after the other");
    sim.converge();

    // A forced drain of another node takes all its pods at once.
    let target = others[0];
    assert!(count_on(&sim, target) >= 2, "{:?}", nodes_of(&sim));
    sim.nodes = Nodes::alive([node(target).cordoned(), node(busiest), node(others[1])]);
    sim.nodes.draining.insert(target.into(), true);
    sim.step();
    assert_eq!(count_on(&sim, target), 0, "{:?}", nodes_of(&sim));
}

// ---- The engine rule (`engine.rs`) ----

/// Members alive (`*` suffix: with the EngineUnavailable condition), suspect or dead.
fn engine_members(
    spec: &[(&str, crate::observed::Liveness, bool)],
) -> BTreeMap<String, crate::observed::Member> {
    spec.iter()
        .map(|(name, liveness, engine_down)| {
            let mut record = node(name, 4, 8 * GIB);
            if *engine_down {
                record.conditions.insert(
                    crate::agent::engine::ENGINE_UNAVAILABLE.into(),
                    "cannot reach the Docker engine at unix:///var/run/docker.sock".into(),
                );
            }
            let member = crate::observed::Member {
                record,
                liveness: *liveness,
                last_seen: None,
            };
            (name.to_string(), member)
        })
        .collect()
}

/// (seen before: node, at s; reporting now; now, s; seen after; movable).
type EngineRow<'a> = (
    Vec<(&'a str, u64)>,
    BTreeSet<String>,
    u64,
    Vec<(&'a str, u64)>,
    Vec<&'a str>,
);

#[test]
fn a_node_without_its_engine_is_movable_after_the_grace_seen_by_this_node() {
    use super::engine::{follow, movable, reporting};
    use crate::observed::Liveness::{Alive, Dead, Left, Suspect};
    use std::time::Duration;
    let members = engine_members(&[
        ("ok", Alive, false),
        ("down", Alive, true),
        ("down-suspect", Suspect, true),
        // Dead or departed: the membership rules decide, whatever its last record said.
        ("down-dead", Dead, true),
        ("down-left", Left, true),
    ]);
    let now_reporting = reporting(&members);
    assert_eq!(
        now_reporting.iter().map(String::as_str).collect::<Vec<_>>(),
        ["down", "down-suspect"]
    );

    let t0 = tokio::time::Instant::now();
    let s = Duration::from_secs;
    let grace = s(5);
    // (seen before, reporting now, now) → (seen after, movable)
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    let table: Vec<EngineRow<'_>> = vec![
        // First seen now: from now, nothing moves yet.
        (vec![], set(&["a"]), 10, vec![("a", 10)], vec![]),
        // Seen for less than the grace: stays.
        (vec![("a", 10)], set(&["a"]), 14, vec![("a", 10)], vec![]),
        // For the grace or longer: moves.
        (vec![("a", 10)], set(&["a"]), 15, vec![("a", 10)], vec!["a"]),
        // No longer reported (the engine is back): forgotten, and seen afresh if it comes again.
        (vec![("a", 10)], set(&[]), 20, vec![], vec![]),
        (
            vec![],
            set(&["a", "b"]),
            21,
            vec![("a", 21), ("b", 21)],
            vec![],
        ),
        (
            vec![("a", 0), ("b", 20)],
            set(&["a", "b"]),
            21,
            vec![("a", 0), ("b", 20)],
            vec!["a"],
        ),
    ];
    for (before, reporting_now, now, after, moving) in table {
        let seen: BTreeMap<String, tokio::time::Instant> = before
            .iter()
            .map(|(n, at)| (n.to_string(), t0 + s(*at)))
            .collect();
        let now = t0 + s(now);
        let got = follow(&seen, &reporting_now, now);
        let want: BTreeMap<String, tokio::time::Instant> = after
            .iter()
            .map(|(n, at)| (n.to_string(), t0 + s(*at)))
            .collect();
        assert_eq!(got, want, "{before:?} {reporting_now:?}");
        let got_moving = movable(&got, now, grace);
        assert_eq!(
            got_moving.iter().map(String::as_str).collect::<Vec<_>>(),
            moving,
            "{before:?} {reporting_now:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn pods_leave_a_node_without_its_engine_after_the_grace_and_none_goes_there() {
    use crate::observed::Liveness::Alive;
    use std::time::Duration;
    let grace = Duration::from_secs(5);
    let seen = std::sync::Mutex::new(BTreeMap::new());
    let healthy = engine_members(&[
        ("a", Alive, false),
        ("b", Alive, false),
        ("c", Alive, false),
    ]);
    let mut sim = Sim::new(vec![requesting("web", 3, "500m", "1Gi")]);
    sim.nodes = Nodes::from_members(healthy.values().map(|m| (&m.record, m.liveness)), &[]);
    sim.converge();
    let before = nodes_of(&sim)
        .into_iter()
        .map(|(p, n)| (p.to_string(), n.to_string()))
        .collect::<Vec<_>>();
    let on_b = before.iter().find(|(_, n)| n == "b").unwrap().0.clone();

    // b's engine goes: b takes no new pod at once, but keeps its own within the grace.
    let down = engine_members(&[("a", Alive, false), ("b", Alive, true), ("c", Alive, false)]);
    let round = |sim: &mut Sim, members: &BTreeMap<String, crate::observed::Member>| {
        let mut nodes = Nodes::from_members(members.values().map(|m| (&m.record, m.liveness)), &[]);
        super::engine::apply(&seen, members, grace, &mut nodes);
        sim.nodes = nodes;
        sim.step()
    };
    assert!(round(&mut sim, &down).is_empty());
    assert!(!sim.nodes.alive.iter().any(|n| n.name == "b"));
    tokio::time::advance(grace - Duration::from_millis(100)).await;
    assert!(round(&mut sim, &down).is_empty());
    assert_eq!(sim.slots.iter().find(|s| s.pod == on_b).unwrap().node, "b");
    // Past the grace: its pod moves to a node with an engine, and says why.
    tokio::time::advance(Duration::from_millis(100)).await;
    let slots_before = sim.slots.clone();
    let actions = round(&mut sim, &down);
    let moved = sim.slots.iter().find(|s| s.pod == on_b).unwrap();
    assert!(moved.node == "a" || moved.node == "c", "{moved:?}");
    let notes = crate::events::controller_notes(&actions, &[], &slots_before, &sim.nodes);
    assert!(
        notes.iter().any(|n| n
            .message
            .contains("the node's container engine is unavailable")),
        "{notes:?}"
    );
    // The engine is back: b is a candidate again; nothing leaves it, and at most one pod goes
    // back to it, the spread evening out (2/0/1 on a/b/c).
    let n = round(&mut sim, &healthy);
    assert!(
        n.len() <= 1
            && n.iter()
                .all(|a| matches!(a, Action::PutSlot(s) if s.node == "b")),
        "{n:?}"
    );
    assert!(sim.nodes.alive.iter().any(|n| n.name == "b"));
    assert!(seen.lock().unwrap().is_empty());
}

// ------------------------------------------------------------------------------ spread

fn counts_of(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[test]
fn the_spread_source_is_the_fullest_node_holding_two_or_more() {
    #[allow(clippy::type_complexity)]
    let table: Vec<(&[(&str, u32)], Option<&str>)> = vec![
        (&[], None),
        (&[("a", 1), ("b", 1), ("c", 0)], None),
        (&[("a", 4), ("b", 0), ("c", 0)], Some("a")),
        (&[("a", 2), ("b", 3), ("c", 0)], Some("b")),
        // A tie goes to the first name.
        (&[("a", 2), ("b", 2), ("c", 0)], Some("a")),
    ];
    for (counts, want) in table {
        assert_eq!(
            placement::spread_source(&counts_of(counts)).as_deref(),
            want,
            "{counts:?}"
        );
    }
}

/// A Deployment of 4 whose slots all merged onto one node (each side of a healed partition
/// had moved the other's pods onto its own nodes).
fn packed(on: &str, nodes: &[&str]) -> Sim {
    let d = rolling("web", 4, json!(1), json!(1));
    let mut sim = Sim::new(vec![d]);
    sim.nodes = Nodes::alive(
        nodes
            .iter()
            .map(|n| crate::scheduler::NodeInfo::new(*n, 4000, 8 * GIB)),
    );
    sim.converge();
    for s in &mut sim.slots {
        s.node = on.to_string();
    }
    sim.all_ready();
    sim
}

/// Steps, each pod that moved starting unready on its new node; `ready` makes the moved pods
/// ready after each step. Returns how many slots moved in each round.
fn spread_rounds(sim: &mut Sim, rounds: usize, ready: bool) -> Vec<usize> {
    let mut moves = Vec::new();
    for _ in 0..rounds {
        let before: BTreeMap<String, String> = sim
            .slots
            .iter()
            .map(|s| (s.key(), s.node.clone()))
            .collect();
        sim.step();
        let moved: Vec<String> = sim
            .slots
            .iter()
            .filter(|s| before.get(&s.key()).is_some_and(|n| *n != s.node))
            .map(Slot::key)
            .collect();
        for k in &moved {
            sim.observed.insert(k.clone(), running_unready());
        }
        moves.push(moved.len());
        if ready {
            sim.all_ready_again();
        }
    }
    moves
}

impl Sim {
    /// Every pod becomes ready, even one reported unready.
    fn all_ready_again(&mut self) {
        for s in &self.slots {
            self.observed.insert(s.key(), ready_status(self.now));
        }
    }
}

#[test]
fn replicas_packed_on_one_node_spread_out_one_ready_pod_at_a_time() {
    let mut sim = packed("a", &["a", "b", "c"]);
    let moves = spread_rounds(&mut sim, 6, true);
    assert!(moves.iter().all(|m| *m <= 1), "one at a time: {moves:?}");
    assert_eq!(moves.iter().sum::<usize>(), 2, "{moves:?}");
    let mut counts: Vec<usize> = per_node(&sim).into_values().collect();
    counts.sort();
    assert_eq!(counts, [1, 1, 2], "{:?}", nodes_of(&sim));
    // Spread, it stays still.
    assert!(sim.step().is_empty());
}

#[test]
fn no_spreading_while_a_replica_is_not_ready() {
    let mut sim = packed("a", &["a", "b", "c"]);
    // The first move happens; its pod never becomes ready: nothing else moves.
    let moves = spread_rounds(&mut sim, 5, false);
    assert_eq!(moves, [1, 0, 0, 0, 0]);
    assert_eq!(per_node(&sim)["a"], 3, "{:?}", nodes_of(&sim));
}

#[test]
fn no_spreading_onto_a_cordoned_node_nor_during_a_drain() {
    use crate::scheduler::NodeInfo;
    let mut sim = packed("a", &["a", "b", "c"]);
    sim.nodes = Nodes::alive([
        NodeInfo::new("a", 4000, 8 * GIB),
        NodeInfo::new("b", 4000, 8 * GIB).cordoned(),
        NodeInfo::new("c", 4000, 8 * GIB),
    ]);
    spread_rounds(&mut sim, 6, true);
    assert_eq!(per_node(&sim).get("b"), None, "{:?}", nodes_of(&sim));
    assert_eq!(per_node(&sim)["c"], 2, "{:?}", nodes_of(&sim));

    // During a drain (of another node) nothing moves to spread.
    let mut sim = packed("a", &["a", "b", "c"]);
    sim.nodes.draining.insert("z".into(), false);
    assert_eq!(spread_rounds(&mut sim, 3, true), [0, 0, 0]);
}

#[test]
fn no_spreading_during_a_rollout() {
    let mut sim = packed("a", &["a", "b", "c"]);
    set_image(&mut sim.deployments[0], "img:2");
    // The rollout starts: two ReplicaSets are active, and no old pod moves to spread.
    for _ in 0..3 {
        let before: BTreeMap<String, String> = sim
            .slots
            .iter()
            .map(|s| (s.key(), s.node.clone()))
            .collect();
        sim.step();
        let moved = sim
            .slots
            .iter()
            .filter(|s| before.get(&s.key()).is_some_and(|n| *n != s.node))
            .count();
        assert_eq!(moved, 0, "{:?}", nodes_of(&sim));
    }
}

/// A pod counts as the node its slot names reports it: the old node's report of a pod that
/// just moved does not make the moved pod Ready.
#[test]
fn a_pod_has_the_status_its_assigned_node_reports() {
    use crate::observed::{Liveness, Member};
    let member = |name: &str, liveness: Liveness, pods: &[&str]| {
        let mut record = node(name, 4, 8 * GIB);
        for p in pods {
            record.pods.insert(format!("default/{p}"), ready_status(1));
        }
        let m = Member {
            record,
            liveness,
            last_seen: None,
        };
        (name.to_string(), m)
    };
    let members: BTreeMap<String, Member> = [
        // h1 still runs web-0 and web-1; web-1 was moved to h2, which has not started it.
        member("h1", Liveness::Alive, &["web-0", "web-1"]),
        member("h2", Liveness::Alive, &[]),
        // web-2's node is dead: its report stays out, as the merged reports leave it.
        member("h3", Liveness::Dead, &["web-2"]),
    ]
    .into_iter()
    .collect();
    let slots = [
        slot("web", 0, "h1"),
        slot("web", 1, "h2"),
        slot("web", 2, "h3"),
    ];
    let reported: PodStatuses = [("default/web-0", 1), ("default/web-1", 1)]
        .into_iter()
        .map(|(k, t)| (k.to_string(), ready_status(t)))
        .collect();
    let seen = super::task::as_assigned(reported, &slots, &members);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["default/web-0"]);
}
