//! The Deployment controller's decisions: which ReplicaSet is the current revision, its
//! revision number, and the rollout steps (RollingUpdate, Recreate, paused scaling, history
//! cleanup), following Kubernetes' deployment controller (`pkg/controller/deployment`).
//!
//! Pure: a Deployment and the ReplicaSets it owns in, the ReplicaSets to write or delete out.
//! One step per round, as Kubernetes' `sync`: a round that scales the new ReplicaSet up stops
//! there, and the next round (woken by the write, or by pod readiness) takes the next step.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};
use shoal_protocol::Kind;
use shoal_protocol::cluster::{POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION};
use shoal_protocol::kinds::{
    Deployment, DeploymentStrategyType, PodTemplateSpec, ReplicaSet, ReplicaSetSpec,
};
use shoal_protocol::meta::{ObjectMeta, OwnerReference};

use super::status::{
    Counts, Ctx, PROGRESS_AT_ANNOTATION, PROGRESS_MARK_ANNOTATION, ProgressMark, is_complete,
};

/// The replicas the Deployment wanted when the controller last scaled a ReplicaSet, as
/// Kubernetes: it tells a scaling event of a paused Deployment from a paused rollout.
pub(crate) const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";

/// `(namespace, name)` of a ReplicaSet.
pub(crate) fn rs_key(rs: &ReplicaSet) -> (String, String) {
    (
        rs.metadata.namespace.clone().unwrap_or_default(),
        rs.metadata.name.clone(),
    )
}

/// The template's hash: SHA-256 of its canonical JSON (keys sorted at every level), first 10
/// hex digits. Deterministic across nodes and versions of serde's map ordering.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let value = serde_json::to_value(template).unwrap_or(Value::Null);
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let mut hex = hex::encode(digest);
    hex.truncate(10);
    hex
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Whether the Deployment owns the ReplicaSet: its controller owner reference names it (and
/// the uid matches, so a re-created Deployment does not inherit), or, when the reference is
/// absent (the store keeps no owner references yet), its name is `<deployment>-<its
/// pod-template-hash>`, which no other Deployment's ReplicaSet can have.
pub fn owns(d: &Deployment, rs: &ReplicaSet) -> bool {
    if rs.metadata.namespace != d.metadata.namespace {
        return false;
    }
    let owner = rs
        .metadata
        .owner_references
        .iter()
        .find(|r| r.controller && r.kind == "Deployment");
    match owner {
        Some(r) => {
            r.name == d.metadata.name
                && (r.uid.is_empty() || d.metadata.uid.as_deref().is_none_or(|u| u == r.uid))
        }
        None => rs
            .metadata
            .labels
            .get(POD_TEMPLATE_HASH_LABEL)
            .is_some_and(|h| rs.metadata.name == format!("{}-{h}", d.metadata.name)),
    }
}

/// The revision number of a ReplicaSet (0 when it has none).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .get(REVISION_ANNOTATION)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Whether the ReplicaSet runs the Deployment's template (ignoring its hash label), as
/// Kubernetes' `EqualIgnoreHash`.
pub(crate) fn is_current(d: &Deployment, rs: &ReplicaSet) -> bool {
    let mut t = rs.spec.template.clone();
    t.metadata.labels.remove(POD_TEMPLATE_HASH_LABEL);
    t == d.spec.template
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec.strategy.type_ == DeploymentStrategyType::RollingUpdate
}

/// Kubernetes' `ResolveFenceposts`: (maxSurge rounded up, maxUnavailable rounded down) of
/// `replicas`; when both come out 0, maxUnavailable is 1 so that the rollout can move.
pub(crate) fn fenceposts(d: &Deployment) -> (i32, i32) {
    let Some(ru) = d
        .spec
        .strategy
        .rolling_update
        .as_ref()
        .filter(|_| is_rolling(d))
    else {
        return (0, 0);
    };
    let replicas = d.spec.replicas.max(0);
    let surge = ru
        .max_surge
        .scaled_value(replicas, true)
        .unwrap_or(0)
        .max(0);
    let unavailable = ru
        .max_unavailable
        .scaled_value(replicas, false)
        .unwrap_or(0)
        .max(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Kubernetes' `MaxUnavailable`: 0 for Recreate, never above `replicas`.
pub(crate) fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = d.spec.replicas.max(0);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

/// Replica count and availability of one ReplicaSet, the inputs of the rollout math.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scale {
    pub replicas: i32,
    pub available: i32,
}

/// Kubernetes' `NewRSNewReplicas` for RollingUpdate: the new ReplicaSet grows to at most
/// `replicas + maxSurge` pods in all, and never above `replicas`. `all` counts the replicas of
/// every ReplicaSet, the new one included.
pub(crate) fn new_rs_replicas(replicas: i32, surge: i32, new: i32, all: i32) -> i32 {
    if new >= replicas {
        return replicas;
    }
    let max_total = replicas + surge;
    if all >= max_total {
        return new;
    }
    new + (max_total - all).min(replicas - new)
}

/// Kubernetes' `reconcileOldReplicaSets`: scales old ReplicaSets (oldest first) down while
/// at least `replicas - maxUnavailable` pods stay available; unavailable old pods go first
/// (`cleanupUnhealthyReplicas`), then available ones. Returns whether anything changed.
pub(crate) fn scale_down_old(
    replicas: i32,
    max_unavailable: i32,
    new: Scale,
    old: &mut [Scale],
) -> bool {
    let old_total: i32 = old.iter().map(|s| s.replicas).sum();
    if old_total == 0 {
        return false;
    }
    let all_total = old_total + new.replicas;
    let min_available = replicas - max_unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return false;
    }
    let mut cleaned = 0;
    for s in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = s.replicas - s.available.min(s.replicas);
        if s.replicas == 0 || unhealthy == 0 {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(unhealthy);
        s.replicas -= n;
        cleaned += n;
    }
    let available: i32 =
        new.available + old.iter().map(|s| s.available.min(s.replicas)).sum::<i32>();
    let mut scaled = 0;
    if available > min_available {
        let total = available - min_available;
        for s in old.iter_mut() {
            if scaled >= total {
                break;
            }
            if s.replicas == 0 {
                continue;
            }
            let n = s.replicas.min(total - scaled);
            s.replicas -= n;
            scaled += n;
        }
    }
    cleaned + scaled > 0
}

/// What the controller writes for one Deployment.
#[derive(Debug, Default)]
pub(crate) struct DeploymentPlan {
    /// ReplicaSets to create or update (only those that differ from the stored ones).
    pub puts: Vec<ReplicaSet>,
    /// Names of ReplicaSets to delete (history beyond `revisionHistoryLimit`).
    pub deletes: Vec<String>,
}

/// One round of the Deployment controller over the ReplicaSets `owned` by `d`.
pub(crate) fn plan_deployment(
    d: &Deployment,
    owned: &[ReplicaSet],
    ctx: &Ctx<'_>,
) -> DeploymentPlan {
    let mut rss: Vec<ReplicaSet> = owned.to_vec();
    // Oldest first, as Kubernetes' `ReplicaSetsByCreationTimestamp`; timestamps have one
    // second of resolution, so ties go by revision, then name.
    rss.sort_by(|a, b| {
        (
            &a.metadata.creation_timestamp,
            revision(a),
            &a.metadata.name,
        )
            .cmp(&(
                &b.metadata.creation_timestamp,
                revision(b),
                &b.metadata.name,
            ))
    });
    let original = rss.clone();
    let replicas = d.spec.replicas.max(0);
    let (surge, unavailable) = fenceposts(d);
    let now = ctx.now;

    let mut current = rss.iter().position(|rs| is_current(d, rs));
    let max_old_revision = rss
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != current)
        .map(|(_, rs)| revision(rs))
        .max()
        .unwrap_or(0);
    if let Some(i) = current {
        let rs = &mut rss[i];
        // An old template that becomes current again (`rollout undo`) gets the next revision
        // and a fresh rollout, as Kubernetes.
        if revision(rs) <= max_old_revision {
            rs.metadata.annotations.insert(
                REVISION_ANNOTATION.into(),
                (max_old_revision + 1).to_string(),
            );
            rs.metadata.annotations.remove(PROGRESS_MARK_ANNOTATION);
        }
        if rs.spec.min_ready_seconds != d.spec.min_ready_seconds {
            rs.spec.min_ready_seconds = d.spec.min_ready_seconds;
        }
    }

    let stepped;
    if d.spec.paused {
        stepped = scale_paused(d, &mut rss, current, surge);
    } else {
        if current.is_none() && (is_rolling(d) || !any_old_running(&rss, None, ctx)) {
            rss.push(new_replicaset(
                d,
                max_old_revision + 1,
                old_total(&rss, None),
                now,
            ));
            current = Some(rss.len() - 1);
        }
        if is_rolling(d) {
            stepped = rolling_step(d, &mut rss, current, ctx, surge, unavailable);
        } else {
            stepped = recreate_step(d, &mut rss, current, ctx);
        }
        if let Some(i) = current {
            track_progress(d, &mut rss, i, ctx);
        }
    }

    let mut plan = DeploymentPlan::default();
    if !stepped && (d.spec.paused || deployment_complete(d, &rss, current, ctx)) {
        plan.deletes = history_to_delete(d, &rss, current, ctx);
    }
    for rs in rss {
        let before = original
            .iter()
            .find(|o| o.metadata.name == rs.metadata.name);
        let changed = before.is_none_or(|b| !same_replicaset(b, &rs));
        if changed {
            let mut rs = rs;
            if before.is_none_or(|b| b.spec.replicas != rs.spec.replicas) && rs.spec.replicas > 0 {
                rs.metadata
                    .annotations
                    .insert(DESIRED_REPLICAS_ANNOTATION.into(), replicas.to_string());
            }
            plan.puts.push(rs);
        }
    }
    plan
}

/// Equal but for what the store sets itself (and the owner references it does not keep).
pub(crate) fn same_replicaset(a: &ReplicaSet, b: &ReplicaSet) -> bool {
    fn norm(rs: &ReplicaSet) -> ReplicaSet {
        let mut rs = rs.clone();
        let m = &mut rs.metadata;
        m.uid = None;
        m.generation = None;
        m.resource_version = None;
        m.creation_timestamp = None;
        m.owner_references.clear();
        rs
    }
    norm(a) == norm(b)
}

fn new_replicaset(d: &Deployment, revision: i64, old: i32, now: i64) -> ReplicaSet {
    let hash = template_hash(&d.spec.template);
    let mut template = d.spec.template.clone();
    template
        .metadata
        .labels
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let mut selector = d.spec.selector.clone();
    selector
        .match_labels
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let mark = ProgressMark {
        new: 0,
        available: 0,
        old,
        complete: false,
    };
    let annotations = [
        (REVISION_ANNOTATION.to_string(), revision.to_string()),
        (PROGRESS_MARK_ANNOTATION.to_string(), mark.render()),
        (
            PROGRESS_AT_ANNOTATION.to_string(),
            crate::time::rfc3339(now),
        ),
    ]
    .into_iter()
    .collect();
    ReplicaSet {
        metadata: ObjectMeta {
            name: format!("{}-{hash}", d.metadata.name),
            namespace: d.metadata.namespace.clone(),
            labels: template.metadata.labels.clone(),
            annotations,
            owner_references: vec![OwnerReference {
                api_version: Kind::Deployment.api_version().to_string(),
                kind: Kind::Deployment.name().to_string(),
                name: d.metadata.name.clone(),
                uid: d.metadata.uid.clone().unwrap_or_default(),
                controller: true,
            }],
            // The store assigns these; left empty, they sort a fresh RS last (newest).
            creation_timestamp: Some(crate::time::rfc3339(now)),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: 0,
            selector,
            template,
            min_ready_seconds: d.spec.min_ready_seconds,
        },
    }
}

fn old_total(rss: &[ReplicaSet], current: Option<usize>) -> i32 {
    rss.iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != current)
        .map(|(_, rs)| rs.spec.replicas.max(0))
        .sum()
}

fn any_old_running(rss: &[ReplicaSet], current: Option<usize>, ctx: &Ctx<'_>) -> bool {
    rss.iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != current)
        .any(|(_, rs)| rs.spec.replicas > 0 || ctx.pods_running(rs))
}

/// Availability of a ReplicaSet for the rollout math: what nodes observe of its slots,
/// never more than its replicas.
fn scale_of(rs: &ReplicaSet, ctx: &Ctx<'_>) -> Scale {
    let replicas = rs.spec.replicas.max(0);
    Scale {
        replicas,
        available: ctx.counts(rs).available.min(replicas),
    }
}

/// Kubernetes' `rolloutRolling`: scale the new ReplicaSet up (and stop), else scale old ones
/// down. Returns whether anything was scaled.
fn rolling_step(
    d: &Deployment,
    rss: &mut [ReplicaSet],
    current: Option<usize>,
    ctx: &Ctx<'_>,
    surge: i32,
    unavailable: i32,
) -> bool {
    let Some(ci) = current else {
        return false;
    };
    let replicas = d.spec.replicas.max(0);
    let all: i32 = rss.iter().map(|rs| rs.spec.replicas.max(0)).sum();
    let new_replicas = rss[ci].spec.replicas.max(0);
    let target = new_rs_replicas(replicas, surge, new_replicas, all);
    if target != new_replicas {
        rss[ci].spec.replicas = target;
        return true;
    }
    let new = scale_of(&rss[ci], ctx);
    let old_idx: Vec<usize> = (0..rss.len()).filter(|i| *i != ci).collect();
    let mut old: Vec<Scale> = old_idx.iter().map(|&i| scale_of(&rss[i], ctx)).collect();
    if !scale_down_old(replicas, unavailable, new, &mut old) {
        return false;
    }
    for (k, &i) in old_idx.iter().enumerate() {
        rss[i].spec.replicas = old[k].replicas;
    }
    true
}

/// Kubernetes' `rolloutRecreate`: every old ReplicaSet to 0, wait until none of their pods
/// runs, then the new one to full scale.
fn recreate_step(
    d: &Deployment,
    rss: &mut [ReplicaSet],
    current: Option<usize>,
    ctx: &Ctx<'_>,
) -> bool {
    let mut scaled = false;
    for (i, rs) in rss.iter_mut().enumerate() {
        if Some(i) != current && rs.spec.replicas != 0 {
            rs.spec.replicas = 0;
            scaled = true;
        }
    }
    if scaled || any_old_running(rss, current, ctx) {
        return scaled;
    }
    let Some(ci) = current else {
        return false;
    };
    let replicas = d.spec.replicas.max(0);
    if rss[ci].spec.replicas != replicas {
        rss[ci].spec.replicas = replicas;
        return true;
    }
    false
}

/// Kubernetes' `scale` for a paused Deployment: only a change of `replicas` moves anything.
/// With one active ReplicaSet (or none), that one (or the current, or the newest) takes the
/// new count; with several (paused mid-rollout), the change is spread in proportion to their
/// sizes, the remainder to the largest.
fn scale_paused(
    d: &Deployment,
    rss: &mut [ReplicaSet],
    current: Option<usize>,
    surge: i32,
) -> bool {
    let replicas = d.spec.replicas.max(0);
    let active: Vec<usize> = (0..rss.len())
        .filter(|&i| rss[i].spec.replicas > 0)
        .collect();
    let target = match active.as_slice() {
        [one] => Some(*one),
        [] => current.or(rss.len().checked_sub(1)),
        _ => None,
    };
    if let Some(i) = target {
        if rss[i].spec.replicas != replicas {
            rss[i].spec.replicas = replicas;
            return true;
        }
        return false;
    }
    // Several active: a scaling event only when the replicas they were scaled for differ.
    let scaling_event = active.iter().any(|&i| {
        rss[i]
            .metadata
            .annotations
            .get(DESIRED_REPLICAS_ANNOTATION)
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|v| v != replicas)
    });
    if !scaling_event {
        return false;
    }
    let allowed = replicas + surge;
    let all: i32 = active.iter().map(|&i| rss[i].spec.replicas).sum();
    let diff = allowed - all;
    if diff == 0 || all == 0 {
        return false;
    }
    let mut order = active.clone();
    order.sort_by_key(|&i| std::cmp::Reverse((rss[i].spec.replicas, i)));
    let mut added = 0;
    for &i in &order {
        let size = rss[i].spec.replicas;
        let proportion = size * allowed / all - size;
        let proportion = if diff > 0 {
            proportion.min(diff - added)
        } else {
            proportion.max(diff - added)
        };
        rss[i].spec.replicas = size + proportion;
        added += proportion;
    }
    if let Some(&first) = order.first() {
        rss[first].spec.replicas = (rss[first].spec.replicas + diff - added).max(0);
    }
    true
}

/// Records progress on the current ReplicaSet when (and only when) the rollout advanced.
fn track_progress(d: &Deployment, rss: &mut [ReplicaSet], ci: usize, ctx: &Ctx<'_>) {
    let replicas = d.spec.replicas.max(0);
    let old = old_total(rss, Some(ci));
    let counts = ctx.counts(&rss[ci]);
    let complete =
        rss[ci].spec.replicas == replicas && old == 0 && deployment_complete(d, rss, Some(ci), ctx);
    let now_mark = ProgressMark {
        new: rss[ci].spec.replicas,
        available: counts.available,
        old,
        complete,
    };
    let rs = &mut rss[ci];
    if let Some(mark) = ProgressMark::advance(ProgressMark::of(rs), now_mark) {
        rs.metadata
            .annotations
            .insert(PROGRESS_MARK_ANNOTATION.into(), mark.render());
        rs.metadata
            .annotations
            .insert(PROGRESS_AT_ANNOTATION.into(), crate::time::rfc3339(ctx.now));
    }
}

/// Kubernetes' `DeploymentComplete` over what the nodes observe now.
fn deployment_complete(
    d: &Deployment,
    rss: &[ReplicaSet],
    current: Option<usize>,
    ctx: &Ctx<'_>,
) -> bool {
    let Some(ci) = current else {
        return false;
    };
    let mut total = Counts::default();
    for rs in rss {
        let c = ctx.counts(rs);
        total.replicas += c.replicas;
        total.ready += c.ready;
        total.available += c.available;
    }
    is_complete(d, total, ctx.counts(&rss[ci]).replicas)
}

/// Kubernetes' `cleanupDeployment`: beyond `revisionHistoryLimit` old ReplicaSets, the
/// oldest revisions go, but only those scaled to 0 whose pods are all gone.
fn history_to_delete(
    d: &Deployment,
    rss: &[ReplicaSet],
    current: Option<usize>,
    ctx: &Ctx<'_>,
) -> Vec<String> {
    let mut old: Vec<&ReplicaSet> = rss
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != current)
        .map(|(_, rs)| rs)
        .collect();
    let limit = usize::try_from(d.spec.revision_history_limit.max(0)).unwrap_or(0);
    if old.len() <= limit {
        return Vec::new();
    }
    let diff = old.len() - limit;
    old.sort_by_key(|rs| (revision(rs), rs.metadata.name.clone()));
    old.into_iter()
        .take(diff)
        .filter(|rs| rs.spec.replicas == 0 && !ctx.pods_running(rs))
        .map(|rs| rs.metadata.name.clone())
        .collect()
}
