//! The agent's decisions, as pure functions: which observed container belongs to which desired
//! container ([`select`]), what the agent remembers about each ([`PodMemory`], updated by
//! [`observe`]), and what to do about the difference ([`plan`] → [`Action`]s). Back-off math
//! lives here too. The task in `mod.rs` executes the actions; nothing here does I/O.
//!
//! The rule that at most one copy of a StatefulSet pod ever runs, even in a partition, is
//! decided here too ([`Mode`], [`fence`], [`guard`], [`terminating`], [`reported_elsewhere`]):
//! see "StatefulSets: at most one copy" below.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_protocol::kinds::{PullPolicy, RestartPolicy};
use shoal_protocol::status::StateTerminated;
use tokio::time::Instant;

use super::probe::ProbeMemory;
use super::spec::{self, ConfigError, ConfigSources, NodeContext, labels};
use super::volumes::{self, Projected, VolumeLayout};
use crate::images::auth::PullSecret;
use crate::observed::{Liveness, NodeRecord};
use crate::pods::DesiredPod;
use crate::runtime::{ContainerInfo, ContainerSpec, ContainerState};

pub use crate::backoff::backoff;

/// A container that ran this long before exiting starts a fresh back-off.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// Whether a container that exited with `exit_code` is started again under `policy`.
pub fn should_restart(policy: RestartPolicy, exit_code: i64, oom_killed: bool) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0 || oom_killed,
        RestartPolicy::Never => false,
    }
}

/// What a pod needs, ready for planning: its specs built against this round's ConfigMaps and
/// Secrets.
#[derive(Debug, Clone)]
pub struct PodInput {
    /// `namespace/pod`.
    pub key: String,
    pub pod: DesiredPod,
    pub hash: String,
    pub pod_dir: PathBuf,
    pub layout: VolumeLayout,
    /// configMap and secret volume files, by volume.
    pub projected: BTreeMap<String, BTreeMap<String, Projected>>,
    /// Why the pod's volumes cannot be set up; no container is created meanwhile.
    pub volume_error: Option<String>,
    pub containers: Vec<ContainerInput>,
    /// The Secrets of `imagePullSecrets` that exist, in their order.
    pub pull_secrets: Vec<PullSecret>,
    /// Those named but missing.
    pub missing_pull_secrets: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ContainerInput {
    pub name: String,
    pub image: String,
    pub pull_policy: PullPolicy,
    pub spec: Result<ContainerSpec, ConfigError>,
}

impl PodInput {
    /// Builds everything a pod needs from its desired state. Pure.
    pub fn build(ctx: &NodeContext, pod: &DesiredPod, sources: &ConfigSources) -> PodInput {
        let ns = pod.slot.namespace.as_str();
        let pod_dir = spec::pod_dir(&ctx.pods_dir, ns, &pod.slot.pod);
        let hash = spec::template_hash(&pod.spec);
        let (layout, mut volume_error) = match volumes::layout(pod, &pod_dir, &ctx.cluster_id) {
            Ok(l) => (l, None),
            Err(e) => (VolumeLayout::default(), Some(e)),
        };
        let projected = match volumes::projected_files(pod, sources) {
            Ok(p) => p,
            Err(e) => {
                volume_error.get_or_insert(e);
                BTreeMap::new()
            }
        };
        let containers = pod
            .spec
            .containers
            .iter()
            .map(|c| ContainerInput {
                name: c.name.clone(),
                image: c.image.clone(),
                pull_policy: c.pull_policy(),
                spec: spec::container_spec(ctx, pod, c, &hash, sources, &layout),
            })
            .collect();
        let (mut pull_secrets, mut missing_pull_secrets) = (Vec::new(), Vec::new());
        for r in &pod.spec.image_pull_secrets {
            match sources.secret_with_type(ns, &r.name) {
                Some((type_, data)) => pull_secrets.push(PullSecret {
                    name: r.name.clone(),
                    type_: type_.to_string(),
                    data: data.clone(),
                }),
                None => missing_pull_secrets.push(r.name.clone()),
            }
        }
        PodInput {
            key: pod.key(),
            pod: pod.clone(),
            hash,
            pod_dir,
            layout,
            projected,
            volume_error,
            containers,
            pull_secrets,
            missing_pull_secrets,
        }
    }

    pub fn policy(&self) -> RestartPolicy {
        self.pod.spec.restart_policy
    }
}

/// What outlives a restart of `shoald`, in `<pod dir>/agent.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persisted {
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub containers: BTreeMap<String, PersistedContainer>,
    /// Condition type → (status, lastTransitionTime).
    #[serde(default)]
    pub conditions: BTreeMap<String, (String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedContainer {
    pub restart_count: u32,
    /// Restarts since the container last ran long enough to reset the back-off.
    pub crash_streak: u32,
    #[serde(default)]
    pub last_terminated: Option<StateTerminated>,
}

/// An exit the agent has seen and is waiting out before the restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitSeen {
    pub id: String,
    pub finished_at: Option<String>,
    pub at: Instant,
    pub delay: Duration,
}

/// Failed attempts at something retried with back-off (image checks, starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub failures: u32,
    pub retry_at: Instant,
    pub message: String,
}

impl Retry {
    pub fn next(prev: Option<&Retry>, now: Instant, message: String) -> Retry {
        let failures = prev.map_or(0, |r| r.failures).saturating_add(1);
        Retry {
            failures,
            retry_at: now + backoff(failures),
            message,
        }
    }

    pub fn pending(&self, now: Instant) -> bool {
        now < self.retry_at
    }
}

/// What the agent knows about one container beyond what the engine reports; lost on restart
/// of `shoald` except for [`PersistedContainer`].
/// What the agent has told about a container's image so far, so that each event is told
/// once; reset when the container starts.
#[derive(Debug, Clone, Default)]
pub struct PullSeen {
    /// When the container was first wanted: an `Always` pull must start after it.
    pub since: Option<Instant>,
    pub pulling_noted: bool,
    /// Failures told as `Failed` events, and the back-off told for that many.
    pub failures_noted: u32,
    pub backoff_noted: u32,
    pub secrets_noted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Volatile {
    pub exit: Option<ExitSeen>,
    pub image: Option<Retry>,
    pub pull: PullSeen,
    pub start: Option<Retry>,
    /// A failed liveness or startup probe asks for this container id to be stopped.
    pub kill: Option<(String, String)>,
    pub probes: ProbeMemory,
}

#[derive(Debug, Clone, Default)]
pub struct PodMemory {
    pub persisted: Persisted,
    /// What `agent.json` holds, to write it only on change.
    pub saved: Option<Persisted>,
    pub containers: BTreeMap<String, Volatile>,
}

impl PodMemory {
    pub fn container(&mut self, name: &str) -> &mut Volatile {
        self.containers.entry(name.to_string()).or_default()
    }

    pub fn persisted_container(&mut self, name: &str) -> &mut PersistedContainer {
        self.persisted
            .containers
            .entry(name.to_string())
            .or_default()
    }
}

/// Which observed container is a desired container's, and which are not anybody's.
#[derive(Debug, Default)]
pub struct Selection<'a> {
    /// `(pod key, container name)` → its container.
    pub chosen: BTreeMap<(String, String), &'a ContainerInfo>,
    /// Containers to stop and remove, with why.
    pub extra: Vec<(&'a ContainerInfo, &'static str)>,
    /// `(pod key, container name)` that still has an old container: no new one until it is
    /// gone (the name is taken).
    pub blocked: BTreeSet<(String, String)>,
}

fn label<'a>(c: &'a ContainerInfo, key: &str) -> &'a str {
    c.labels.get(key).map(String::as_str).unwrap_or_default()
}

/// Matches observed containers to desired ones. A container of a slot that is gone or moved,
/// of another template, of an unknown container name, or a twin, is extra.
pub fn select<'a>(inputs: &[PodInput], observed: &'a [ContainerInfo]) -> Selection<'a> {
    let by_key: BTreeMap<&str, &PodInput> = inputs.iter().map(|i| (i.key.as_str(), i)).collect();
    let mut candidates: BTreeMap<(String, String), Vec<&ContainerInfo>> = BTreeMap::new();
    let mut sel = Selection::default();
    for c in observed {
        let key = label(c, labels::SLOT);
        let name = label(c, labels::CONTAINER);
        let Some(input) = by_key.get(key) else {
            sel.extra.push((c, "its slot is no longer on this node"));
            continue;
        };
        if !input.containers.iter().any(|d| d.name == name) {
            sel.extra.push((c, "the pod has no such container"));
            sel.blocked.insert((key.to_string(), name.to_string()));
            continue;
        }
        if label(c, labels::TEMPLATE_HASH) != input.hash {
            sel.extra.push((c, "the pod spec changed"));
            sel.blocked.insert((key.to_string(), name.to_string()));
            continue;
        }
        candidates
            .entry((key.to_string(), name.to_string()))
            .or_default()
            .push(c);
    }
    for (k, mut cs) in candidates {
        // Running first, then the most recently started; the rest are twins.
        cs.sort_by(|a, b| {
            let rank = |c: &ContainerInfo| match c.state {
                ContainerState::Running | ContainerState::Restarting | ContainerState::Paused => 0,
                ContainerState::Exited | ContainerState::Dead => 1,
                _ => 2,
            };
            rank(a)
                .cmp(&rank(b))
                .then_with(|| b.started_at.cmp(&a.started_at))
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut it = cs.into_iter();
        if let Some(first) = it.next() {
            sel.chosen.insert(k.clone(), first);
        }
        for twin in it {
            sel.extra.push((twin, "a twin of the pod's container"));
            sel.blocked.insert(k.clone());
        }
    }
    sel
}

/// Records what is new in `observed` into memory: exits (with their back-off) and the pod's
/// start time. Pure apart from mutating `memory`.
pub fn observe(
    memory: &mut BTreeMap<String, PodMemory>,
    inputs: &[PodInput],
    sel: &Selection<'_>,
    now: Instant,
    wall_now: &str,
) {
    for input in inputs {
        let mem = memory.entry(input.key.clone()).or_default();
        for c in &input.containers {
            let Some(info) = sel.chosen.get(&(input.key.clone(), c.name.clone())) else {
                continue;
            };
            if mem.persisted.start_time.is_none() {
                mem.persisted.start_time = Some(wall_now.to_string());
            }
            if !matches!(info.state, ContainerState::Exited | ContainerState::Dead) {
                continue;
            }
            let known = mem.containers.get(&c.name).and_then(|v| v.exit.as_ref());
            if known.is_some_and(|e| e.id == info.id && e.finished_at == info.finished_at) {
                continue;
            }
            let ran = run_time(info);
            let pc = mem.persisted_container(&c.name);
            if ran.is_some_and(|r| r >= BACKOFF_RESET_AFTER) {
                pc.crash_streak = 0;
            }
            let delay = backoff(pc.crash_streak);
            mem.container(&c.name).exit = Some(ExitSeen {
                id: info.id.clone(),
                finished_at: info.finished_at.clone(),
                at: now,
                delay,
            });
        }
    }
}

/// How long the container's last run lasted, when the engine's timestamps say.
pub fn run_time(info: &ContainerInfo) -> Option<Duration> {
    let start = parse_rfc3339(info.started_at.as_deref()?)?;
    let end = parse_rfc3339(info.finished_at.as_deref()?)?;
    u64::try_from(end - start).ok().map(Duration::from_secs)
}

/// Seconds since the Unix epoch of a Docker timestamp; Docker's zero time
/// (`0001-01-01T00:00:00Z`, a container that never finished) is `None`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    shoal_protocol::time::parse_rfc3339(s).filter(|t| *t >= 0)
}

/// One thing to do to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop (with grace, then kill) and remove a container that is nobody's.
    Remove {
        id: String,
        name: String,
        grace: Duration,
        reason: &'static str,
    },
    /// Create and start the container `container` of pod `pod`.
    Create { pod: String, container: String },
    /// Start an exited container again (same id): a restart.
    Restart {
        pod: String,
        container: String,
        id: String,
        /// How its last run ended (its `lastState` once restarted).
        exited: StateTerminated,
    },
    /// Stop a running container whose liveness (or startup) probe failed; the restart policy
    /// then applies to its exit.
    Kill {
        pod: String,
        container: String,
        id: String,
        grace: Duration,
        reason: String,
    },
}

/// The grace of a container, from its label (its pod may be gone).
fn label_grace(c: &ContainerInfo) -> Duration {
    Duration::from_secs(label(c, labels::GRACE).parse().unwrap_or(30))
}

/// The difference between desired and observed, as actions. `busy`: containers a background
/// stop or removal is working on; they are left alone.
pub fn plan(
    inputs: &[PodInput],
    sel: &Selection<'_>,
    memory: &BTreeMap<String, PodMemory>,
    busy: &HashSet<String>,
    now: Instant,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (c, reason) in &sel.extra {
        if busy.contains(&c.id) {
            continue;
        }
        actions.push(Action::Remove {
            id: c.id.clone(),
            name: c.name.clone(),
            grace: label_grace(c),
            reason,
        });
    }
    for input in inputs {
        let mem = memory.get(&input.key);
        for c in &input.containers {
            let k = (input.key.clone(), c.name.clone());
            let vol = mem.and_then(|m| m.containers.get(&c.name));
            match sel.chosen.get(&k) {
                None => {
                    let waiting = sel.blocked.contains(&k)
                        || input.volume_error.is_some()
                        || c.spec.is_err()
                        || vol
                            .and_then(|v| v.image.as_ref())
                            .is_some_and(|r| r.pending(now))
                        || vol
                            .and_then(|v| v.start.as_ref())
                            .is_some_and(|r| r.pending(now));
                    if !waiting {
                        actions.push(Action::Create {
                            pod: input.key.clone(),
                            container: c.name.clone(),
                        });
                    }
                }
                Some(info) if busy.contains(&info.id) => {}
                Some(info) => match info.state {
                    // Created but never started: a leftover of a crash between create and
                    // start, or of a failed start. A fresh one is made next round.
                    ContainerState::Created => actions.push(Action::Remove {
                        id: info.id.clone(),
                        name: info.name.clone(),
                        grace: Duration::ZERO,
                        reason: "created but never started",
                    }),
                    ContainerState::Running => {
                        if let Some((id, why)) = vol.and_then(|v| v.kill.as_ref())
                            && *id == info.id
                        {
                            actions.push(Action::Kill {
                                pod: input.key.clone(),
                                container: c.name.clone(),
                                id: info.id.clone(),
                                grace: spec::grace(&input.pod.spec),
                                reason: why.clone(),
                            });
                        }
                    }
                    ContainerState::Exited | ContainerState::Dead => {
                        let code = info.exit_code.unwrap_or(0);
                        if !should_restart(input.policy(), code, info.oom_killed) {
                            continue;
                        }
                        let due = vol
                            .and_then(|v| v.exit.as_ref())
                            .filter(|e| e.id == info.id)
                            .is_some_and(|e| now >= e.at + e.delay);
                        if due {
                            actions.push(Action::Restart {
                                pod: input.key.clone(),
                                container: c.name.clone(),
                                id: info.id.clone(),
                                exited: terminated(info),
                            });
                        }
                    }
                    _ => {}
                },
            }
        }
    }
    actions
}

/// The terminated state of an exited container, as the pod status shows it.
pub fn terminated(info: &ContainerInfo) -> StateTerminated {
    let code = info.exit_code.unwrap_or(0);
    let reason = if info.oom_killed {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    StateTerminated {
        exit_code: code,
        reason: Some(reason.into()),
        message: info.error.clone().filter(|e| !e.is_empty()),
        started_at: info.started_at.clone(),
        finished_at: info.finished_at.clone(),
    }
}

// ---- StatefulSets: at most one copy ----
//
// A StatefulSet pod owns its identity and its data, so two running copies of it (say after a
// partition, each side believing it holds the pod) may corrupt that data. The controllers move
// a StatefulSet slot off a node they cannot hear only when the mover hears a majority of the
// known nodes, and only `dead_after + reschedule_grace` after it last heard that node. The
// agent does the other half, here:
// - **fence**: while the nodes this node cannot hear are a majority ([`Mode::Fenced`]), its
//   StatefulSet slots count as not desired: their containers are stopped with a grace of at
//   most `reschedule_grace / 2` ([`fence_grace`]), so they are dead before the majority may
//   start them elsewhere, and none is started;
// - **hold-off**: after the fence lifts (and when the agent starts), none is started until
//   the node has not needed the fence for `dead_after` ([`Mode::Holding`]), so that the
//   desired state the majority wrote meanwhile (the slot may have moved) arrives first;
// - **one reporter**: none is started while another node reports its pod key
//   ([`reported_elsewhere`]), and a node reports every StatefulSet pod it still has a
//   container of, with reason `Terminating` ([`terminating`]), so the new home waits for the
//   old copy to be gone.

/// The owner kind of a StatefulSet's slots.
pub const STATEFUL_SET: &str = "StatefulSet";

/// What the agent may do with the StatefulSet pods of this node this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep and start them.
    Open,
    /// Keep those that run; start none. The fence lifted, or the agent started, less than
    /// `dead_after` ago.
    Holding,
    /// Stop every one; start none. The nodes this node cannot hear are a majority.
    Fenced,
}

impl Mode {
    /// The mode from the fence (`fenced`, and `since`: when it last changed, or when the
    /// watch of the quorum started). Pure.
    pub fn of(fenced: bool, since: Instant, now: Instant, dead_after: Duration) -> Mode {
        if fenced {
            Mode::Fenced
        } else if now.saturating_duration_since(since) < dead_after {
            Mode::Holding
        } else {
            Mode::Open
        }
    }
}

/// The longest stop grace a fenced StatefulSet container gets: half the reschedule grace, so
/// that it is dead well before a majority that stopped hearing this node may start its pod
/// elsewhere.
pub fn fence_grace(reschedule_grace: Duration) -> Duration {
    reschedule_grace / 2
}

/// What this round allows StatefulSet pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub mode: Mode,
    /// Pod keys another node reports, with the (first) node that does.
    pub elsewhere: BTreeMap<String, String>,
    /// The longest grace of a stop while fenced ([`fence_grace`]).
    pub grace_cap: Duration,
    /// New StatefulSet pods assigned to this node less than `dead_after` ago that no node has
    /// reported ([`young`]): not created yet.
    pub young: BTreeSet<String>,
}

impl Default for Guard {
    /// No fencing: a node that knows of no quorum (tests, tools) runs everything.
    fn default() -> Guard {
        Guard {
            mode: Mode::Open,
            elsewhere: BTreeMap::new(),
            grace_cap: Duration::MAX,
            young: BTreeSet::new(),
        }
    }
}

impl Guard {
    /// Why the StatefulSet pod `key` may not be started now, or None when it may.
    pub fn held(&self, key: &str) -> Option<String> {
        let why = match self.mode {
            Mode::Fenced => "no majority of the nodes is heard: StatefulSet pods are stopped",
            Mode::Holding => {
                "a majority of the nodes was heard again only recently: StatefulSet pods wait \
                 for the desired state to catch up"
            }
            Mode::Open => {
                if let Some(node) = self.elsewhere.get(key) {
                    return Some(format!(
                        "node {node} still reports this pod: waiting until its copy is gone"
                    ));
                }
                if self.young.contains(key) {
                    return Some(
                        "a new StatefulSet pod: it starts once this node has heard a majority \
                         for the dead timeout since it was assigned here"
                            .into(),
                    );
                }
                return None;
            }
        };
        Some(why.to_string())
    }
}

/// The new StatefulSet pods that wait: assigned to this node (`assigned`: pod key → when this
/// agent first saw it here) less than `dead_after` before `now`, and reported by no node,
/// whatever its liveness (`reported`; a pod that some node ran is moving here, by a mover that
/// waited for that node to be lost). Two sides of a partition that has just begun both still
/// see a majority and may both make the same new ordinal (a scale-up applied on each side);
/// the side without a majority fences within `dead_after`, before its copy would start. Pure.
pub fn young(
    assigned: &BTreeMap<String, Instant>,
    reported: &BTreeSet<String>,
    now: Instant,
    dead_after: Duration,
) -> BTreeSet<String> {
    assigned
        .iter()
        .filter(|(key, since)| {
            now.saturating_duration_since(**since) < dead_after && !reported.contains(*key)
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// Whether a slot is a StatefulSet's.
pub fn is_stateful(owner_kind: &str) -> bool {
    owner_kind == STATEFUL_SET
}

/// Whether a container is a StatefulSet pod's: by the owner kind of its slot when some node
/// has that slot (`kinds`: pod key → owner kind, every desired slot of the cluster), else by
/// its label (its slot is gone). Containers made before the label existed, of a slot that is
/// gone, are not known to be.
pub fn stateful_container(c: &ContainerInfo, kinds: &BTreeMap<String, String>) -> bool {
    match kinds.get(label(c, labels::SLOT)) {
        Some(kind) => is_stateful(kind),
        None => is_stateful(label(c, labels::OWNER_KIND)),
    }
}

/// Splits this node's desired pods into those it keeps and, when fenced, its StatefulSet
/// pods, which count as not desired (their containers become extra and are stopped).
pub fn fence(inputs: Vec<PodInput>, mode: Mode) -> (Vec<PodInput>, Vec<PodInput>) {
    if mode != Mode::Fenced {
        return (inputs, Vec::new());
    }
    inputs
        .into_iter()
        .partition(|i| !is_stateful(&i.pod.slot.owner_kind))
}

/// Why a fenced StatefulSet container is removed.
pub const FENCED: &str = "no majority heard: stopping StatefulSet pods";

/// [`plan`]'s actions under the guard: no StatefulSet pod is started (created or restarted)
/// while the guard holds it, and while fenced every StatefulSet container is stopped within
/// the grace cap, including one a background stop with a longer grace is already working on
/// (`stopping`: container id → the shortest grace of its stops in flight).
pub fn guard(
    actions: Vec<Action>,
    inputs: &[PodInput],
    sel: &Selection<'_>,
    kinds: &BTreeMap<String, String>,
    guard: &Guard,
    stopping: &BTreeMap<String, Duration>,
) -> Vec<Action> {
    let held = |pod: &str| {
        inputs
            .iter()
            .find(|i| i.key == pod)
            .is_some_and(|i| is_stateful(&i.pod.slot.owner_kind))
            && guard.held(pod).is_some()
    };
    let fenced = guard.mode == Mode::Fenced;
    let stateful = |id: &str| {
        sel.extra
            .iter()
            .any(|(c, _)| c.id == id && stateful_container(c, kinds))
    };
    let mut out: Vec<Action> = actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Create { ref pod, .. } | Action::Restart { ref pod, .. } if held(pod) => None,
            Action::Remove {
                id,
                name,
                grace,
                reason: _,
            } if fenced && stateful(&id) => Some(Action::Remove {
                grace: grace.min(guard.grace_cap),
                reason: FENCED,
                id,
                name,
            }),
            a => Some(a),
        })
        .collect();
    if fenced {
        for (c, _) in &sel.extra {
            let Some(grace) = stopping.get(&c.id) else {
                continue;
            };
            if *grace > guard.grace_cap && stateful_container(c, kinds) {
                out.push(Action::Remove {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    grace: guard.grace_cap,
                    reason: FENCED,
                });
            }
        }
    }
    out
}

/// [`plan`]'s actions under the boot rule (`boot.rs`): no container of a pod that `may` does
/// not allow yet is started (created or restarted). Stops and removals go on: containers of
/// slots that are not this node's are stopped before anything starts.
pub fn boot_gate(
    actions: Vec<Action>,
    inputs: &[PodInput],
    may: super::boot::MayStart,
) -> Vec<Action> {
    if may == super::boot::MayStart::ALL {
        return actions;
    }
    let allowed = |pod: &str| {
        inputs
            .iter()
            .find(|i| i.key == pod)
            .is_some_and(|i| may.allows(&i.pod.slot.owner_kind))
    };
    actions
        .into_iter()
        .filter(|a| match a {
            Action::Create { pod, .. } | Action::Restart { pod, .. } => allowed(pod),
            _ => true,
        })
        .collect()
}

/// The StatefulSet pods this node still has containers of but does not keep (moved away,
/// deleted, fenced): pod key → those containers. The node reports them as terminating until
/// they are gone, so that no other node starts them meanwhile.
pub fn terminating<'a>(
    inputs: &[PodInput],
    sel: &Selection<'a>,
    kinds: &BTreeMap<String, String>,
) -> BTreeMap<String, Vec<&'a ContainerInfo>> {
    let kept: BTreeSet<&str> = inputs.iter().map(|i| i.key.as_str()).collect();
    let mut out: BTreeMap<String, Vec<&ContainerInfo>> = BTreeMap::new();
    for (c, _) in &sel.extra {
        let key = label(c, labels::SLOT);
        if key.is_empty() || kept.contains(key) || !stateful_container(c, kinds) {
            continue;
        }
        out.entry(key.to_string()).or_default().push(c);
    }
    out
}

/// The pod keys nodes other than `local` report, with the node. A node that is dead or left
/// counts until `window` (`dead_after + reschedule_grace`) after this node last heard it:
/// until then its StatefulSet pods may still run there (a fenced node stops them within that
/// time), after it the majority may move them anyway.
pub fn reported_elsewhere<'a>(
    records: impl IntoIterator<Item = (&'a NodeRecord, Liveness)>,
    local: &str,
    now: Instant,
    window: Duration,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (r, liveness) in records {
        if r.name == local {
            continue;
        }
        let counts = match liveness {
            Liveness::Alive | Liveness::Suspect => true,
            Liveness::Dead | Liveness::Left | Liveness::Unknown => r
                .seen
                .is_some_and(|seen| now.saturating_duration_since(seen) < window),
        };
        if !counts {
            continue;
        }
        for key in r.pods.keys() {
            out.entry(key.clone()).or_insert_with(|| r.name.clone());
        }
    }
    out
}
