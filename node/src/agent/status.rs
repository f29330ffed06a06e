//! The pod status the agent reports, in Kubernetes' shape, from what it planned against and
//! what the engine reports. Pure, apart from recording condition transition times in memory
//! (a condition keeps the time it last changed, not the time of the report).
//!
//! Also the report of a StatefulSet pod this node no longer keeps but still has containers of
//! ([`terminating`]): other nodes wait for it to disappear before they start that pod.

use std::net::IpAddr;

use shoal_protocol::status::{
    ContainerState as KState, ContainerStatus, HostPortBinding, PodCondition, PodStatus,
    StateRunning, StateWaiting,
};
use tokio::time::Instant;

use super::plan::{PodInput, PodMemory, Selection, should_restart, terminated};
use crate::runtime::{ContainerInfo, ContainerState};

fn waiting(reason: &str, message: Option<String>) -> KState {
    KState {
        waiting: Some(StateWaiting {
            reason: reason.into(),
            message,
        }),
        ..KState::default()
    }
}

/// Why a container without an engine container is waiting.
fn waiting_without_container(
    input: &PodInput,
    spec_err: Option<&str>,
    mem: Option<&super::plan::Volatile>,
    now: Instant,
) -> KState {
    if let Some(e) = spec_err {
        return waiting("CreateContainerConfigError", Some(e.to_string()));
    }
    if let Some(e) = &input.volume_error {
        return waiting("ContainerCreating", Some(e.clone()));
    }
    if let Some(r) = mem.and_then(|m| m.image.as_ref()) {
        // The first failure reads ErrImagePull for a whole back-off period, later ones
        // ImagePullBackOff, so that a poller cannot miss either.
        let reason = if r.failures <= 1 {
            "ErrImagePull"
        } else {
            "ImagePullBackOff"
        };
        return waiting(reason, Some(r.message.clone()));
    }
    if let Some(r) = mem.and_then(|m| m.start.as_ref())
        && r.pending(now)
    {
        return waiting("RunContainerError", Some(r.message.clone()));
    }
    waiting("ContainerCreating", None)
}

/// The status of one pod.
pub fn pod_status(
    input: &PodInput,
    sel: &Selection<'_>,
    mem: &mut PodMemory,
    advertise: IpAddr,
    now: Instant,
    wall_now: &str,
) -> PodStatus {
    let policy = input.policy();
    let mut statuses = Vec::new();
    let mut host_ports = Vec::new();
    let mut pod_ip = None;
    let mut all_have = true;
    let mut any_running = false;
    let mut all_done = true;
    let mut all_succeeded = true;
    for (i, c) in input.containers.iter().enumerate() {
        let spec = input.pod.spec.containers.get(i);
        let info: Option<&ContainerInfo> = sel
            .chosen
            .get(&(input.key.clone(), c.name.clone()))
            .copied();
        let vol = mem.containers.get(&c.name);
        let pc = mem
            .persisted
            .containers
            .get(&c.name)
            .cloned()
            .unwrap_or_default();
        let mut st = ContainerStatus {
            name: c.name.clone(),
            ready: false,
            restart_count: pc.restart_count,
            image: c.image.clone(),
            container_id: info.map(|i| format!("docker://{}", i.id)),
            started: None,
            state: KState::default(),
            last_state: pc
                .last_terminated
                .clone()
                .map(|t| KState {
                    terminated: Some(t),
                    ..KState::default()
                })
                .unwrap_or_default(),
        };
        match info {
            None => {
                all_have = false;
                all_done = false;
                st.state = waiting_without_container(
                    input,
                    c.spec.as_ref().err().map(String::as_str),
                    vol,
                    now,
                );
            }
            Some(info) => match info.state {
                ContainerState::Running | ContainerState::Paused | ContainerState::Restarting => {
                    any_running = true;
                    all_done = false;
                    let probes = vol.map(|v| v.probes.clone()).unwrap_or_default();
                    let (started, ready) = match spec {
                        Some(s) => (probes.started(s), probes.ready(s)),
                        None => (true, true),
                    };
                    st.started = Some(started);
                    st.ready = ready;
                    st.state = KState {
                        running: Some(StateRunning {
                            started_at: info.started_at.clone().unwrap_or_else(|| wall_now.into()),
                        }),
                        ..KState::default()
                    };
                    if pod_ip.is_none() {
                        pod_ip = info.ip.clone().filter(|ip| !ip.is_empty());
                    }
                    for p in &info.ports {
                        let b = HostPortBinding {
                            container: c.name.clone(),
                            container_port: p.container_port,
                            protocol: p.protocol.as_str().to_ascii_uppercase(),
                            host_ip: p.host_ip.clone(),
                            host_port: p.host_port,
                        };
                        if !host_ports.contains(&b) {
                            host_ports.push(b);
                        }
                    }
                }
                ContainerState::Exited | ContainerState::Dead => {
                    st.started = Some(false);
                    let term = terminated(info);
                    let code = term.exit_code;
                    if should_restart(policy, code, info.oom_killed) {
                        any_running = true; // Kubernetes keeps a crash-looping pod Running.
                        all_done = false;
                        let exit = vol
                            .and_then(|v| v.exit.as_ref())
                            .filter(|e| e.id == info.id);
                        st.state = match exit {
                            Some(e) if now < e.at + e.delay => waiting(
                                "CrashLoopBackOff",
                                Some(format!(
                                    "back-off {}s restarting failed container={} pod={}",
                                    e.delay.as_secs(),
                                    c.name,
                                    input.pod.slot.pod
                                )),
                            ),
                            _ => waiting("ContainerCreating", None),
                        };
                        st.last_state = KState {
                            terminated: Some(term),
                            ..KState::default()
                        };
                    } else {
                        if code != 0 || info.oom_killed {
                            all_succeeded = false;
                        }
                        st.state = KState {
                            terminated: Some(term),
                            ..KState::default()
                        };
                    }
                }
                _ => {
                    all_done = false;
                    st.state = waiting("ContainerCreating", None);
                }
            },
        }
        statuses.push(st);
    }
    let phase = if all_have && all_done && !input.containers.is_empty() {
        if all_succeeded { "Succeeded" } else { "Failed" }
    } else if all_have && any_running {
        "Running"
    } else {
        "Pending"
    };
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let ready = unready.is_empty() && phase == "Running";
    let (reason, message) = if ready {
        (None, None)
    } else if phase == "Succeeded" || phase == "Failed" {
        (Some("PodCompleted".to_string()), None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let mut conditions = Vec::new();
    for (type_, ok, reason, message) in [
        ("PodScheduled", true, None, None),
        ("Initialized", true, None, None),
        ("ContainersReady", ready, reason.clone(), message.clone()),
        ("Ready", ready, reason, message),
    ] {
        let status = if ok { "True" } else { "False" };
        let time = match mem.persisted.conditions.get(type_) {
            Some((s, t)) if s == status => t.clone(),
            _ => {
                mem.persisted.conditions.insert(
                    type_.to_string(),
                    (status.to_string(), wall_now.to_string()),
                );
                wall_now.to_string()
            }
        };
        conditions.push(PodCondition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Some(time),
            reason,
            message,
        });
    }
    host_ports.sort_by(|a, b| {
        (&a.container, a.container_port, &a.protocol).cmp(&(
            &b.container,
            b.container_port,
            &b.protocol,
        ))
    });
    PodStatus {
        phase: phase.into(),
        conditions,
        reason: None,
        message: None,
        host_ip: Some(advertise.to_string()),
        pod_ip,
        start_time: mem.persisted.start_time.clone(),
        container_statuses: statuses,
        host_ports,
        revision: Some(input.pod.slot.revision.clone()).filter(|r| !r.is_empty()),
    }
}

/// The reason (of the pod, and of its `Ready` condition) while this node's container engine
/// is unavailable.
pub const ENGINE_UNAVAILABLE: &str = "EngineUnavailable";

/// The StatefulSet pods that `listed` (the engine's last listing) shows running, as
/// `namespace/pod`: while the engine then does not answer, they may run on. Pure.
pub fn stateful_running(listed: &[ContainerInfo]) -> std::collections::BTreeSet<String> {
    use super::spec::labels;
    listed
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .filter(|c| {
            c.labels
                .get(labels::OWNER_KIND)
                .is_some_and(|k| super::plan::is_stateful(k))
        })
        .filter_map(|c| {
            let ns = c.labels.get(labels::NAMESPACE)?;
            let pod = c.labels.get(labels::POD)?;
            Some(format!("{ns}/{pod}"))
        })
        .collect()
}

/// The report of a pod no longer assigned here while the engine does not answer: its phase
/// `Unknown`, not ready, and why. Pure.
pub fn may_still_run(last: Option<&PodStatus>, message: &str) -> PodStatus {
    let mut s = last.cloned().unwrap_or_default();
    s.phase = "Unknown".into();
    s.reason = Some(ENGINE_UNAVAILABLE.into());
    s.message = Some(format!(
        "the container engine is unavailable ({message}): this pod's containers may still run \
         here"
    ));
    s.conditions.retain(|c| c.type_ == "PodScheduled");
    s
}

/// The status of a pod while the engine is unavailable (`message`: why, naming its socket;
/// `since`: when it became so, RFC 3339): nothing can be known about its containers, so it is
/// not Ready, its containers are not ready and their state is unknown. As Kubernetes shows a
/// pod on a node it cannot hear: phase `Unknown` when the pod had been running (`last`: its
/// last report), `Pending` when it never was; container ids, restart counts, addresses and
/// start time as last known.
pub fn engine_unavailable(
    input: &PodInput,
    advertise: IpAddr,
    message: &str,
    last: Option<&PodStatus>,
    since: &str,
) -> PodStatus {
    let mut s = crate::pods::pending_status(&input.pod.slot);
    if last.is_some_and(|l| l.phase != "Pending") {
        s.phase = "Unknown".into();
    }
    let why = format!("the container engine is unavailable: {message}");
    s.reason = Some(ENGINE_UNAVAILABLE.into());
    s.message = Some(why.clone());
    s.host_ip = Some(advertise.to_string());
    s.revision = Some(input.pod.slot.revision.clone()).filter(|r| !r.is_empty());
    if let Some(l) = last {
        s.pod_ip = l.pod_ip.clone();
        s.start_time = l.start_time.clone();
    }
    let scheduled = s
        .conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .cloned();
    s.conditions = scheduled.into_iter().collect();
    for type_ in ["ContainersReady", "Ready"] {
        s.conditions.push(PodCondition {
            type_: type_.into(),
            status: "False".into(),
            last_transition_time: Some(since.to_string()),
            reason: Some(ENGINE_UNAVAILABLE.into()),
            message: Some(why.clone()),
        });
    }
    s.container_statuses = input
        .containers
        .iter()
        .map(|c| {
            let before = last.and_then(|l| l.container_statuses.iter().find(|b| b.name == c.name));
            ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone(),
                ready: false,
                started: None,
                restart_count: before.map_or(0, |b| b.restart_count),
                container_id: before.and_then(|b| b.container_id.clone()),
                last_state: before.map(|b| b.last_state.clone()).unwrap_or_default(),
                state: waiting(
                    if before.is_some_and(|b| b.container_id.is_some()) {
                        "ContainerStatusUnknown"
                    } else {
                        "ContainerCreating"
                    },
                    Some(why.clone()),
                ),
            }
        })
        .collect();
    s
}

/// The reason of a StatefulSet pod this node is stopping (see `plan.rs`, "StatefulSets: at
/// most one copy").
pub const TERMINATING: &str = "Terminating";

/// The status this node reports for a StatefulSet pod it no longer keeps while its
/// `containers` still exist here: Running, not ready, reason `Terminating`. Controllers place
/// the pod elsewhere only once no node reports it. `since`: when this node first reported it
/// so (a stable transition time, so an unchanged report is not sent again).
pub fn terminating(containers: &[&ContainerInfo], advertise: IpAddr, since: &str) -> PodStatus {
    let message = "the pod is being stopped on this node".to_string();
    let mut statuses: Vec<ContainerStatus> = Vec::new();
    for info in containers {
        let name = info
            .labels
            .get(super::spec::labels::CONTAINER)
            .cloned()
            .unwrap_or_else(|| info.name.clone());
        if statuses.iter().any(|s| s.name == name) {
            continue;
        }
        let state = match info.state {
            ContainerState::Exited | ContainerState::Dead => KState {
                terminated: Some(terminated(info)),
                ..KState::default()
            },
            _ => KState {
                running: Some(StateRunning {
                    started_at: info.started_at.clone().unwrap_or_else(|| since.into()),
                }),
                ..KState::default()
            },
        };
        statuses.push(ContainerStatus {
            name,
            image: info.image.clone(),
            container_id: Some(format!("docker://{}", info.id)),
            state,
            ..ContainerStatus::default()
        });
    }
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    let condition = |type_: &str, ok: bool, reason: Option<String>| PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: Some(since.to_string()),
        reason,
        message: (!ok).then(|| message.clone()),
    };
    let revision = containers
        .iter()
        .find_map(|c| c.labels.get(super::spec::labels::REVISION))
        .filter(|r| !r.is_empty())
        .cloned();
    PodStatus {
        phase: "Running".into(),
        conditions: vec![
            condition("PodScheduled", true, None),
            condition("Initialized", true, None),
            condition("ContainersReady", false, Some(TERMINATING.into())),
            condition("Ready", false, Some(TERMINATING.into())),
        ],
        reason: Some(TERMINATING.into()),
        message: Some(message.clone()),
        host_ip: Some(advertise.to_string()),
        pod_ip: containers
            .iter()
            .find_map(|c| c.ip.clone().filter(|ip| !ip.is_empty())),
        start_time: None,
        container_statuses: statuses,
        host_ports: Vec::new(),
        revision,
    }
}
