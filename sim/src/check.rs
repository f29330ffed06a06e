//! The invariants, as issue 15 states them.
//!
//! Safety, at every step ([`Checker::safety`]):
//! - every stored object on every node that is up passes the validation of an apply;
//! - never two running copies of one StatefulSet ordinal, across every engine;
//! - among nodes that hear each other, at most one holds the controller role. Two holders
//!   that are linked (both up, on one side of any partition) may overlap only for as long as
//!   a lease written on one takes to reach the other through gossip or anti-entropy under the
//!   worst link faults of a plan: [`OVERLAP`], without a break. Longer is a failure (two
//!   nodes that take the role from each other, or a holder that never learns of the newer
//!   lease).
//!
//! Liveness, after the heal ([`settled`]): every node holds the same document digest; every
//! Deployment runs exactly its replicas, at its image; every StatefulSet runs exactly its
//! ordinals, once each; one node holds the role; no acknowledged apply is lost: every object
//! that an apply wrote is on every node, and each of its independent parts holds a value some
//! acknowledged apply wrote (the merge rule picks among concurrent writes, never invents).
//!
//! Quiet ([`fingerprint`], [`changed`]): with stable membership and nothing applied, neither
//! the document nor the leases change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use shoal_node::agent::spec::labels;
use shoal_protocol::{Kind, Resource};

use crate::plan::Write;
use crate::world::{World, running_pods};

/// How long two linked nodes may both hold the role.
pub const OVERLAP: Duration = Duration::from_secs(5);
/// How often stored objects are validated.
const VALIDATE_EVERY: Duration = Duration::from_secs(1);

/// Every acknowledged write, by object.
#[derive(Debug, Default, Clone)]
pub struct Acks {
    pub by_kind: BTreeMap<Kind, Vec<(Write, Duration)>>,
}

impl Acks {
    pub fn record(&mut self, kind: Kind, w: &Write, at: Duration) {
        self.by_kind.entry(kind).or_default().push((w.clone(), at));
    }

    /// Why `value` (the stored object of `kind`) is not made of acknowledged writes, if it is
    /// not.
    pub fn explain(&self, kind: Kind, value: &Value) -> Option<String> {
        let writes = self.by_kind.get(&kind)?;
        let num = |p: &str| value.pointer(p).and_then(Value::as_u64);
        let text = |p: &str| value.pointer(p).and_then(Value::as_str).map(str::to_string);
        match kind {
            Kind::Deployment => {
                let replicas: BTreeSet<u64> = writes
                    .iter()
                    .filter_map(|(w, _)| match w {
                        Write::Web { replicas, .. } => Some(u64::from(*replicas)),
                        _ => None,
                    })
                    .collect();
                // The body (template and strategy) is one unit: it is one apply's, whole.
                let bodies: BTreeSet<(String, u64, u64)> = writes
                    .iter()
                    .filter_map(|(w, _)| match w {
                        Write::Web {
                            image,
                            surge,
                            unavailable,
                            ..
                        } => Some((
                            (*image).to_string(),
                            u64::from(*surge),
                            u64::from(*unavailable),
                        )),
                        _ => None,
                    })
                    .collect();
                let r = num("/spec/replicas");
                let body = (
                    text("/spec/template/spec/containers/0/image").unwrap_or_default(),
                    num("/spec/strategy/rollingUpdate/maxSurge").unwrap_or(99),
                    num("/spec/strategy/rollingUpdate/maxUnavailable").unwrap_or(99),
                );
                if !r.is_some_and(|r| replicas.contains(&r)) {
                    return Some(format!("web has replicas {r:?}, never acknowledged"));
                }
                if !bodies.contains(&body) {
                    return Some(format!(
                        "web's image and strategy {body:?} are no acknowledged apply's"
                    ));
                }
                None
            }
            Kind::StatefulSet => {
                let r = num("/spec/replicas");
                let ok = writes.iter().any(
                    |(w, _)| matches!(w, Write::Db { replicas } if Some(u64::from(*replicas)) == r),
                );
                (!ok).then(|| format!("db has replicas {r:?}, never acknowledged"))
            }
            Kind::ConfigMap => {
                let v = text("/data/value");
                let ok = writes.iter().any(
                    |(w, _)| matches!(w, Write::Config { value } if Some(value.to_string()) == v),
                );
                (!ok).then(|| format!("cfg has value {v:?}, never acknowledged"))
            }
            _ => None,
        }
    }
}

/// The safety checker's memory between steps.
#[derive(Debug, Default)]
pub struct Checker {
    validated: Option<Duration>,
    /// The digest each node's objects were last validated at: unchanged, they are not again.
    digests: BTreeMap<String, String>,
    /// Since when each pair of linked nodes has both held the role, without a break.
    overlaps: BTreeMap<(String, String), Duration>,
}

impl Checker {
    /// Checks the safety invariants at `now`.
    pub async fn safety(&mut self, w: &World, now: Duration) -> Result<(), String> {
        ordinals(w)?;
        self.roles(w, now)?;
        if self.validated.is_none_or(|t| now >= t + VALIDATE_EVERY) {
            self.validated = Some(now);
            for n in &w.nodes {
                let Some(r) = &n.running else { continue };
                let Ok(digest) = r.state.digest().await else {
                    continue;
                };
                if self.digests.get(&n.name) == Some(&digest) {
                    continue;
                }
                let Ok(objects) = r.state.export().await else {
                    continue;
                };
                self.digests.insert(n.name.clone(), digest);
                for o in objects {
                    let name = o
                        .value
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string();
                    match Resource::from_value(o.kind, o.value.clone()) {
                        Ok(res) => {
                            let errors = res.validate();
                            if !errors.is_empty() {
                                return Err(format!(
                                    "{} stores {} {name}, which does not validate: {errors:?}",
                                    n.name, o.kind
                                ));
                            }
                        }
                        Err(e) => {
                            return Err(format!(
                                "{} stores {} {name}, which does not parse: {e}",
                                n.name, o.kind
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Never two running copies of one StatefulSet pod.
fn ordinals(w: &World) -> Result<(), String> {
    for (pod, copies) in running_pods(w) {
        let stateful: Vec<&String> = copies
            .iter()
            .filter(|c| c.labels.get(labels::OWNER_KIND).map(String::as_str) == Some("StatefulSet"))
            .map(|c| &c.node)
            .collect();
        if stateful.len() > 1 {
            return Err(format!(
                "StatefulSet pod {pod} runs on {stateful:?} at once"
            ));
        }
    }
    Ok(())
}

impl Checker {
    /// Among nodes that hear each other, at most one holds the role (beyond [`OVERLAP`]).
    fn roles(&mut self, w: &World, now: Duration) -> Result<(), String> {
        let holders: Vec<(&str, u64)> = w
            .nodes
            .iter()
            .filter_map(|n| {
                let r = n.running.as_ref()?;
                let epoch = (*r.held.borrow())?;
                Some((n.name.as_str(), epoch))
            })
            .collect();
        let mut overlaps = BTreeMap::new();
        for (i, (a, ea)) in holders.iter().enumerate() {
            for (b, eb) in &holders[i + 1..] {
                if !w.net.reach(a, b) {
                    continue;
                }
                let key = ((*a).to_string(), (*b).to_string());
                let since = self.overlaps.get(&key).copied().unwrap_or(now);
                if now.saturating_sub(since) >= OVERLAP {
                    return Err(format!(
                        "{a} (epoch {ea}) and {b} (epoch {eb}) both hold the controller role, \
                         linked, for {OVERLAP:?}"
                    ));
                }
                overlaps.insert(key, since);
            }
        }
        self.overlaps = overlaps;
        Ok(())
    }
}

/// Whether the liveness invariants hold now among the nodes that are up; else why not.
pub async fn settled(w: &World) -> Result<(), String> {
    let up: Vec<&crate::node::SimNode> = w.nodes.iter().filter(|n| n.is_up()).collect();
    let mut digests = BTreeMap::new();
    for n in &up {
        let r = n.running.as_ref().ok_or(format!("{} is down", n.name))?;
        let d = r.state.digest().await.map_err(|e| e.to_string())?;
        digests.insert(n.name.clone(), d);
    }
    let distinct: BTreeSet<&String> = digests.values().collect();
    if distinct.len() > 1 {
        return Err(format!("digests differ: {digests:?}"));
    }
    let first = up
        .first()
        .and_then(|n| n.running.as_ref())
        .ok_or("no node is up")?;
    let objects = first.state.export().await.map_err(|e| e.to_string())?;
    let find = |kind: Kind, name: &str| {
        objects
            .iter()
            .find(|o| {
                o.kind == kind
                    && o.value.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
            })
            .map(|o| o.value.clone())
    };
    for (kind, name) in [
        (Kind::Deployment, "web"),
        (Kind::StatefulSet, "db"),
        (Kind::ConfigMap, "cfg"),
    ] {
        if !w.acks.by_kind.contains_key(&kind) {
            continue;
        }
        let value =
            find(kind, name).ok_or(format!("{kind} {name} was acknowledged and is lost"))?;
        if let Some(why) = w.acks.explain(kind, &value) {
            return Err(why);
        }
    }
    let pods = running_pods(w);
    if let Some(web) = find(Kind::Deployment, "web") {
        let want = web
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let image = web
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            .unwrap_or("");
        let running: Vec<&String> = pods
            .iter()
            .filter(|(p, _)| p.starts_with("web-"))
            .flat_map(|(_, c)| c.iter().map(|c| &c.image))
            .collect();
        let at_image = running.iter().filter(|i| i.as_str() == image).count();
        if running.len() as u64 != want || at_image as u64 != want {
            return Err(format!(
                "web wants {want} at {image}, runs {} ({} at it)",
                running.len(),
                at_image
            ));
        }
    }
    if let Some(db) = find(Kind::StatefulSet, "db") {
        let want = db
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let expected: BTreeSet<String> = (0..want).map(|i| format!("db-{i}")).collect();
        let running: BTreeMap<&String, usize> = pods
            .iter()
            .filter(|(p, _)| p.starts_with("db-"))
            .map(|(p, c)| (p, c.len()))
            .collect();
        let names: BTreeSet<String> = running.keys().map(|s| (*s).clone()).collect();
        if names != expected || running.values().any(|n| *n != 1) {
            return Err(format!("db wants {expected:?}, runs {running:?}"));
        }
    }
    let holders: Vec<&str> = up
        .iter()
        .filter(|n| {
            n.running
                .as_ref()
                .is_some_and(|r| r.held.borrow().is_some())
        })
        .map(|n| n.name.as_str())
        .collect();
    if holders.len() != 1 {
        return Err(format!("the controller role is held by {holders:?}"));
    }
    Ok(())
}

/// Each node's digest and leases.
pub async fn fingerprint(w: &World) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for n in &w.nodes {
        let Some(r) = &n.running else { continue };
        let digest = r.state.digest().await.map_err(|e| e.to_string())?;
        let leases = r.state.leases().await.map_err(|e| e.to_string())?;
        let stats = r.state.stats().await.map_err(|e| e.to_string())?;
        out.insert(
            n.name.clone(),
            format!("digest {digest} leases {leases:?} stats {stats:?}"),
        );
    }
    Ok(out)
}

/// What differs between two fingerprints, if anything.
pub fn changed(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Option<String> {
    for (node, b) in before {
        let a = after.get(node)?;
        if a != b {
            return Some(format!("{node}: before {b}; after {a}"));
        }
    }
    None
}
