//! Tests of the node agent: the pure pieces with tables, the whole round against
//! [`SimRuntime`] and a real store in a temporary directory, with tokio's paused time for
//! back-off and probes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_protocol::Kind;
use shoal_protocol::cluster::Slot;
use shoal_protocol::kinds::{PodSpec, Probe};
use shoal_protocol::status::PodStatus;
use tokio_util::sync::CancellationToken;

use super::plan::{self, backoff, parse_rfc3339};
use super::probe::{ProbeMachine, parse_status};
use super::spec::{self, ConfigSources, NodeContext, SecretData, labels};
use super::volumes::{self, Backing, Projected};
use super::*;
use crate::runtime::{ContainerInfo, ExecOutput, MountSpec, PortSpec, Protocol, SimRuntime};
use crate::state::{self, StateConfig};

const IMAGE: &str = "shoal-test/echo:latest";
const NODE: &str = "n1";
const CLUSTER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00";

fn ctx() -> NodeContext {
    NodeContext {
        cluster_id: CLUSTER.into(),
        node_name: NODE.into(),
        advertise: "127.0.0.7".parse().unwrap(),
        network: spec::network_name(CLUSTER, NODE),
        pods_dir: "/data/pods".into(),
        cluster_domain: None,
        dns_server: None,
    }
}

fn pod_spec(v: Value) -> PodSpec {
    let mut s: PodSpec = serde_json::from_value(v).unwrap();
    s.default_fields();
    s
}

fn desired(name: &str, spec: Value) -> DesiredPod {
    DesiredPod {
        slot: slot(name),
        metadata: shoal_protocol::ObjectMeta {
            name: name.into(),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: pod_spec(spec),
    }
}

fn slot(name: &str) -> Slot {
    Slot {
        namespace: "default".into(),
        pod: name.into(),
        owner_kind: "Pod".into(),
        owner_name: name.into(),
        index: 0,
        revision: String::new(),
        node: NODE.into(),
        unschedulable: None,
    }
}

fn bytes_map(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn sources() -> ConfigSources {
    let mut s = ConfigSources::default();
    s.config_maps.insert(
        ("default".into(), "cfg".into()),
        bytes_map(&[("greeting", "hello"), ("color", "blue")]),
    );
    s.secrets.insert(
        ("default".into(), "db".into()),
        SecretData::opaque(bytes_map(&[("password", "s3cret")])),
    );
    s
}

fn web(extra: Value) -> Value {
    let mut c = json!({"name": "web", "image": IMAGE});
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    json!({"containers": [c]})
}

fn build(name: &str, spec: Value) -> plan::PodInput {
    plan::PodInput::build(&ctx(), &desired(name, spec), &sources())
}

fn env_of(input: &plan::PodInput) -> BTreeMap<String, String> {
    input.containers[0]
        .spec
        .as_ref()
        .unwrap()
        .env
        .iter()
        .cloned()
        .collect()
}

// ---- spec building ----

#[test]
fn env_resolves_values_references_and_env_from_in_kubernetes_order() {
    let input = build(
        "p",
        web(json!({
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
                        {"secretRef": {"name": "db"}}],
            "env": [
                {"name": "PLAIN", "value": "v"},
                {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
                {"name": "CFG_color", "value": "red"},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
            ]
        })),
    );
    let env = env_of(&input);
    assert_eq!(env["PLAIN"], "v");
    assert_eq!(env["G"], "hello");
    assert_eq!(env["PW"], "s3cret");
    assert_eq!(env["CFG_greeting"], "hello");
    assert_eq!(env["CFG_color"], "red", "env overrides envFrom");
    assert_eq!(env["password"], "s3cret");
    assert_eq!(env["NS"], "default");
    assert!(
        !env.contains_key("OPT"),
        "a missing optional reference is left out"
    );
    assert_eq!(env["HOSTNAME"], "p");
    assert_eq!(env["POD_NAME"], "p");
    assert_eq!(env["SHOAL_NODE_NAME"], NODE);
}

#[test]
fn missing_required_references_are_config_errors_naming_them() {
    let cases = [
        (
            json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]}),
            "configmap \"gone\" not found",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "absent"}}}]}),
            "couldn't find key absent in ConfigMap default/cfg",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}),
            "secret \"nope\" not found",
        ),
        (
            json!({"envFrom": [{"secretRef": {"name": "nope"}}]}),
            "secret \"nope\" not found",
        ),
        (
            json!({"volumeMounts": [{"name": "v", "mountPath": "/v"}]}),
            "no volume named \"v\"",
        ),
    ];
    for (extra, want) in cases {
        let input = build("p", web(extra));
        let err = input.containers[0].spec.clone().unwrap_err();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    // An optional envFrom that is missing is no error.
    let input = build(
        "p",
        web(json!({"envFrom": [{"secretRef": {"name": "nope", "optional": true}}]})),
    );
    assert!(input.containers[0].spec.is_ok());
}

#[test]
fn ports_limits_labels_and_names() {
    let input = build(
        "p",
        web(json!({
            "command": ["/echo"], "args": ["--crash-after", "5"], "workingDir": "/tmp",
            "ports": [{"containerPort": 8080, "hostPort": 18080},
                      {"containerPort": 9090, "protocol": "UDP"},
                      {"containerPort": 7000, "protocol": "SCTP"}],
            "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}}
        })),
    );
    let s = input.containers[0].spec.as_ref().unwrap();
    assert_eq!(
        s.ports,
        vec![
            PortSpec {
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_ip: Some("127.0.0.7".into()),
                host_port: 18080
            },
            PortSpec {
                container_port: 9090,
                protocol: Protocol::Udp,
                host_ip: Some("127.0.0.7".into()),
                host_port: 0
            },
        ]
    );
    assert_eq!(s.memory_limit, Some(128 * 1024 * 1024));
    assert_eq!(s.nano_cpus, Some(500_000_000));
    assert_eq!(s.command, Some(vec!["/echo".to_string()]));
    assert_eq!(s.args.as_ref().unwrap()[0], "--crash-after");
    assert_eq!(s.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(s.hostname.as_deref(), Some("p"));
    assert_eq!(s.network.as_deref(), Some("shoal-n1-c0ffee00"));
    assert_eq!(s.stop_grace, Some(Duration::from_secs(30)));
    assert_eq!(s.name, "shoal_c0ffee00_n1_default_p_web");
    for (k, v) in [
        (labels::CLUSTER, CLUSTER),
        (labels::NODE, NODE),
        (labels::NAMESPACE, "default"),
        (labels::POD, "p"),
        (labels::SLOT, "default/p"),
        (labels::CONTAINER, "web"),
        (labels::GRACE, "30"),
    ] {
        assert_eq!(s.labels[k], v, "label {k}");
    }
    assert_eq!(s.labels[labels::TEMPLATE_HASH], input.hash);
    // The hash follows the spec.
    let other = build("p", web(json!({"args": ["x"]})));
    assert_ne!(other.hash, input.hash);
    assert_eq!(build("p", web(json!({"args": ["x"]}))).hash, other.hash);
}

#[test]
fn volumes_are_laid_out_by_source() {
    let input = build(
        "p",
        json!({
            "containers": [{"name": "web", "image": IMAGE, "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg"},
                {"name": "cfg", "mountPath": "/etc/one", "subPath": "greeting"},
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "mem", "mountPath": "/mem"},
                {"name": "host", "mountPath": "/host", "readOnly": true},
                {"name": "data", "mountPath": "/data"},
                {"name": "share", "mountPath": "/share"}
            ]}],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "host", "hostPath": {"path": "/srv/x", "type": "DirectoryOrCreate"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "db"}},
                {"name": "share", "nfs": {"server": "10.0.0.5", "path": "/export", "readOnly": true}}
            ]
        }),
    );
    assert_eq!(input.volume_error, None);
    let mounts = &input.containers[0].spec.as_ref().unwrap().mounts;
    let dir = "/data/pods/default_p/volumes";
    assert_eq!(
        mounts[0],
        MountSpec::Bind {
            host_path: format!("{dir}/cfg"),
            container_path: "/etc/cfg".into(),
            read_only: true
        }
    );
    assert_eq!(
        mounts[1],
        MountSpec::Bind {
            host_path: format!("{dir}/cfg/greeting"),
            container_path: "/etc/one".into(),
            read_only: true
        }
    );
    assert_eq!(
        mounts[2],
        MountSpec::Bind {
            host_path: format!("{dir}/scratch"),
            container_path: "/scratch".into(),
            read_only: false
        }
    );
    assert_eq!(
        mounts[3],
        MountSpec::Tmpfs {
            container_path: "/mem".into(),
            size_bytes: Some(64 << 20)
        }
    );
    assert_eq!(
        mounts[4],
        MountSpec::Bind {
            host_path: "/srv/x".into(),
            container_path: "/host".into(),
            read_only: true
        }
    );
    assert_eq!(
        mounts[5],
        MountSpec::Volume {
            name: "shoal-pvc-default-db".into(),
            container_path: "/data".into(),
            read_only: false
        }
    );
    let MountSpec::Volume {
        name, read_only, ..
    } = &mounts[6]
    else {
        panic!("nfs is a named volume: {:?}", mounts[6]);
    };
    assert!(name.starts_with("shoal-nfs-") && *read_only);
    let Backing::Named(nfs) = &input.layout.volumes["share"].backing else {
        panic!("nfs backing");
    };
    assert_eq!(nfs.driver_opts["type"], "nfs");
    assert_eq!(nfs.driver_opts["o"], "addr=10.0.0.5,ro");
    assert_eq!(nfs.driver_opts["device"], ":/export");
    let Backing::Named(pvc) = &input.layout.volumes["data"].backing else {
        panic!("pvc backing");
    };
    assert_eq!(pvc.labels[labels::PVC], "default/db");
}

#[test]
fn projected_files_honour_items_and_modes() {
    let input = build(
        "p",
        json!({
            "containers": [{"name": "web", "image": IMAGE}],
            "volumes": [
                {"name": "all", "configMap": {"name": "cfg"}},
                {"name": "some", "configMap": {"name": "cfg", "items": [{"key": "color", "path": "sub/c.txt", "mode": 0o600}]}},
                {"name": "sec", "secret": {"secretName": "db"}},
                {"name": "sec2", "secret": {"secretName": "db", "defaultMode": 0o440}},
                {"name": "opt", "secret": {"secretName": "absent", "optional": true}}
            ]
        }),
    );
    assert_eq!(input.volume_error, None);
    let p = &input.projected;
    assert_eq!(
        p["all"]["greeting"],
        Projected {
            data: b"hello".to_vec(),
            mode: 0o644
        }
    );
    assert_eq!(p["all"].len(), 2);
    assert_eq!(p["some"].keys().collect::<Vec<_>>(), vec!["sub/c.txt"]);
    assert_eq!(p["some"]["sub/c.txt"].mode, 0o600);
    assert_eq!(
        p["sec"]["password"].mode, 0o400,
        "secret files are 0400 by default"
    );
    assert_eq!(p["sec2"]["password"].mode, 0o440);
    assert!(p["opt"].is_empty());

    let missing = build(
        "p",
        json!({"containers": [{"name": "web", "image": IMAGE}],
               "volumes": [{"name": "v", "configMap": {"name": "gone"}}]}),
    );
    assert!(
        missing
            .volume_error
            .unwrap()
            .contains("configmap \"gone\" not found")
    );
    let bad_key = build(
        "p",
        json!({"containers": [{"name": "web", "image": IMAGE}],
               "volumes": [{"name": "v", "configMap": {"name": "cfg", "items": [{"key": "x", "path": "x"}]}}]}),
    );
    assert!(
        bad_key
            .volume_error
            .unwrap()
            .contains("couldn't find key x")
    );
}

#[test]
fn sync_projected_writes_replaces_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("v");
    let file = |data: &str, mode| Projected {
        data: data.as_bytes().to_vec(),
        mode,
    };
    let mut files = BTreeMap::from([
        ("a".to_string(), file("1", 0o644)),
        ("sub/b".to_string(), file("2", 0o400)),
    ]);
    assert!(volumes::sync_projected(&d, &files).unwrap());
    assert!(!volumes::sync_projected(&d, &files).unwrap(), "idempotent");
    assert_eq!(std::fs::read_to_string(d.join("sub/b")).unwrap(), "2");
    let mode = std::fs::metadata(d.join("sub/b"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400);
    files.insert("a".into(), file("changed", 0o644));
    files.remove("sub/b");
    assert!(volumes::sync_projected(&d, &files).unwrap());
    assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "changed");
    assert!(!d.join("sub/b").exists());
}

// ---- pure decisions ----

#[test]
fn backoff_doubles_from_ten_seconds_to_five_minutes() {
    let got: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(got, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
    assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
}

#[test]
fn restart_policies() {
    use shoal_protocol::kinds::RestartPolicy::*;
    for (policy, code, oom, want) in [
        (Always, 0, false, true),
        (Always, 1, false, true),
        (OnFailure, 0, false, false),
        (OnFailure, 2, false, true),
        (OnFailure, 0, true, true),
        (Never, 1, false, false),
        (Never, 0, false, false),
    ] {
        assert_eq!(
            plan::should_restart(policy, code, oom),
            want,
            "{policy:?} {code} {oom}"
        );
    }
}

#[test]
fn rfc3339_parses_what_time_writes_and_docker_fractions() {
    for secs in [0, 1_767_225_600, 1_795_631_220, 951_782_400] {
        assert_eq!(parse_rfc3339(&crate::time::rfc3339(secs)), Some(secs));
    }
    assert_eq!(
        parse_rfc3339("2026-01-01T00:00:10.123456789Z"),
        Some(1_767_225_610)
    );
    assert_eq!(parse_rfc3339("garbage"), None);
    assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
}

fn probe(v: Value) -> Probe {
    serde_json::from_value(v).unwrap()
}

#[test]
fn probe_machine_needs_consecutive_results() {
    let p =
        probe(json!({"exec": {"command": ["x"]}, "successThreshold": 2, "failureThreshold": 3}));
    let mut m = ProbeMachine::default();
    assert_eq!(m.record(&p, true, ""), None);
    assert_eq!(m.record(&p, true, ""), Some(true));
    assert_eq!(m.record(&p, true, ""), None, "no change, no verdict");
    assert_eq!(m.record(&p, false, "x"), None);
    assert_eq!(m.record(&p, false, "x"), None);
    assert_eq!(
        m.record(&p, true, ""),
        None,
        "a success resets the failures"
    );
    for _ in 0..2 {
        assert_eq!(m.record(&p, false, "x"), None);
    }
    assert_eq!(m.record(&p, false, "x"), Some(false));
}

#[test]
fn probe_addresses_and_status_lines() {
    use shoal_protocol::intstr::IntOrString;
    let t = super::probe::ProbeTarget {
        id: "c".into(),
        ip: Some("10.0.0.2".into()),
        named_ports: BTreeMap::from([("http".to_string(), 8080)]),
    };
    let addr = |h, p| super::probe::address(h, &p, &t);
    assert_eq!(addr(None, IntOrString::Int(80)).unwrap(), "10.0.0.2:80");
    assert_eq!(
        addr(None, IntOrString::String("http".into())).unwrap(),
        "10.0.0.2:8080"
    );
    assert_eq!(
        addr(Some("127.0.0.1"), IntOrString::Int(1)).unwrap(),
        "127.0.0.1:1"
    );
    assert!(addr(None, IntOrString::String("nope".into())).is_err());
    assert_eq!(
        parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
        Some(503)
    );
    assert_eq!(parse_status(b"junk"), None);
}

fn info(id: &str, input: &plan::PodInput, name: &str, state: ContainerState) -> ContainerInfo {
    let spec = input
        .containers
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.spec.clone().unwrap())
        .unwrap();
    ContainerInfo {
        id: id.into(),
        name: spec.name,
        labels: spec.labels,
        state,
        started_at: Some("2026-01-01T00:00:00Z".into()),
        ..Default::default()
    }
}

#[test]
fn selection_adopts_matching_containers_and_marks_the_rest() {
    let input = build("p", web(json!({})));
    let ours = info("a", &input, "web", ContainerState::Running);
    let mut twin = info("b", &input, "web", ContainerState::Exited);
    twin.started_at = Some("2025-01-01T00:00:00Z".into());
    let mut stale = info("c", &input, "web", ContainerState::Running);
    stale
        .labels
        .insert(labels::TEMPLATE_HASH.into(), "old".into());
    let mut gone = info("d", &input, "web", ContainerState::Running);
    gone.labels
        .insert(labels::SLOT.into(), "default/gone".into());
    let observed = vec![twin.clone(), ours.clone(), stale, gone];
    let inputs = vec![input];
    let sel = plan::select(&inputs, &observed);
    assert_eq!(sel.chosen[&("default/p".into(), "web".into())].id, "a");
    let extra: BTreeMap<&str, &str> = sel.extra.iter().map(|(c, r)| (c.id.as_str(), *r)).collect();
    assert_eq!(extra.len(), 3);
    assert_eq!(extra["b"], "a twin of the pod's container");
    assert_eq!(extra["c"], "the pod spec changed");
    assert_eq!(extra["d"], "its slot is no longer on this node");

    // The healthy adopted container gets no action; the others are removed.
    let memory = BTreeMap::new();
    let actions = plan::plan(
        &inputs,
        &sel,
        &memory,
        &Default::default(),
        tokio::time::Instant::now(),
    );
    assert_eq!(actions.len(), 3);
    assert!(actions.iter().all(|a| matches!(a, Action::Remove { .. })));
    // Busy containers are left to their background task.
    let busy = ["b", "c", "d"].iter().map(|s| s.to_string()).collect();
    assert!(plan::plan(&inputs, &sel, &memory, &busy, tokio::time::Instant::now()).is_empty());
}

#[test]
fn a_changed_spec_waits_for_the_old_container_before_creating() {
    let input = build("p", web(json!({})));
    let mut stale = info("c", &input, "web", ContainerState::Running);
    stale
        .labels
        .insert(labels::TEMPLATE_HASH.into(), "old".into());
    let observed = vec![stale];
    let inputs = vec![input];
    let sel = plan::select(&inputs, &observed);
    let busy = ["c".to_string()].into();
    let actions = plan::plan(
        &inputs,
        &sel,
        &BTreeMap::new(),
        &busy,
        tokio::time::Instant::now(),
    );
    assert!(actions.is_empty(), "{actions:?}");
}

// ---- the whole agent against the simulated engine ----

struct Harness {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    state: StateHandle,
    stop: CancellationToken,
    rt: SimRuntime,
    agent: Agent,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let (state, task) = state::open(&StateConfig {
            data_dir: data_dir.join("state"),
            cluster_secret: [7; 32],
            channel_size: 16,
        })
        .unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(task.run(stop.clone()));
        let rt = SimRuntime::new([IMAGE]);
        let agent = Harness::agent(&data_dir, &state, &rt);
        Harness {
            _dir: dir,
            data_dir,
            state,
            stop,
            rt,
            agent,
        }
    }

    fn agent(data_dir: &std::path::Path, state: &StateHandle, rt: &SimRuntime) -> Agent {
        Agent::new(
            AgentConfig {
                node_name: NODE.into(),
                cluster_id: CLUSTER.into(),
                data_dir: data_dir.to_path_buf(),
                advertise: "127.0.0.7".parse().unwrap(),
                channel_size: 16,
                cluster_domain: Some("shoal.home.arpa".into()),
            },
            state.clone(),
            Engine::ready(Arc::new(rt.clone())),
            None,
        )
    }

    async fn apply(&self, kind: Kind, v: Value) {
        self.state.apply_values(vec![(kind, v)]).await.unwrap();
    }

    async fn pod(&self, name: &str, spec: Value) {
        self.apply(
            Kind::Pod,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
        .await;
        self.state
            .write_slots(vec![slot(name)], vec![])
            .await
            .unwrap();
    }

    async fn config_map(&self, name: &str, data: Value) {
        self.apply(
            Kind::ConfigMap,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": name, "namespace": "default"}, "data": data}),
        )
        .await;
    }

    /// One round, after handing pending probe results to the agent.
    async fn round(&mut self) -> BTreeMap<String, PodStatus> {
        self.settle().await;
        self.agent.reconcile().await
    }

    /// Lets background stops/removals and probe workers run, and hands their results to the
    /// agent.
    async fn settle(&mut self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        while let Ok(ev) = self.agent.probe_rx.try_recv() {
            self.agent.on_probe(ev);
        }
        while let Some(done) = self.agent.background.try_join_next() {
            self.agent.finished(&done.unwrap());
        }
    }

    async fn status(&mut self, pod: &str) -> PodStatus {
        self.round().await[&format!("default/{pod}")].clone()
    }

    async fn containers(&self) -> Vec<ContainerInfo> {
        self.rt.list(&[(labels::CLUSTER, CLUSTER)]).await.unwrap()
    }

    async fn only_id(&self) -> String {
        let cs = self.containers().await;
        assert_eq!(cs.len(), 1, "{cs:?}");
        cs[0].id.clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
        self.agent.probe_root.cancel();
    }
}

fn waiting_reason(s: &PodStatus) -> Option<String> {
    s.container_statuses[0]
        .state
        .waiting
        .as_ref()
        .map(|w| w.reason.clone())
}

#[tokio::test]
async fn runs_a_pod_and_reports_it_in_kubernetes_shape() {
    let mut h = Harness::new().await;
    h.pod(
        "p",
        web(
            json!({"ports": [{"containerPort": 8080}, {"containerPort": 9000, "hostPort": 19000}]}),
        ),
    )
    .await;
    let s = h.status("p").await;
    assert!(h.rt.networks().contains("shoal-n1-c0ffee00"));
    let id = h.only_id().await;
    assert_eq!(s.phase, "Running");
    assert!(s.is_ready());
    let c = &s.container_statuses[0];
    assert_eq!(
        c.container_id.as_deref(),
        Some(format!("docker://{id}").as_str())
    );
    assert_eq!(c.restart_count, 0);
    assert!(c.ready);
    assert_eq!(c.started, Some(true));
    assert!(c.state.running.is_some());
    assert_eq!(s.host_ip.as_deref(), Some("127.0.0.7"));
    assert!(s.pod_ip.is_some());
    assert!(s.start_time.is_some());
    let ports: Vec<(u16, u16)> = s
        .host_ports
        .iter()
        .map(|p| (p.container_port, p.host_port))
        .collect();
    assert_eq!(ports.len(), 2);
    assert!(ports.contains(&(9000, 19000)));
    assert!(ports.iter().any(|(c, h)| *c == 8080 && *h != 0));
    assert!(
        s.host_ports
            .iter()
            .all(|p| p.host_ip == "127.0.0.7" && p.protocol == "TCP")
    );
    let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
    );

    // Quiet rounds change nothing: no new calls, same times.
    let creates = h.rt.calls("create");
    let again = h.status("p").await;
    assert_eq!(h.rt.calls("create"), creates);
    assert_eq!(h.rt.calls("start"), 1);
    assert_eq!(again.conditions, s.conditions);
}

#[tokio::test(start_paused = true)]
async fn exits_restart_the_same_container_with_back_off() {
    let mut h = Harness::new().await;
    h.pod("p", web(json!({}))).await;
    h.round().await;
    let id = h.only_id().await;

    // A `docker kill`: the same container comes back at once, restartCount 1.
    h.rt.exit(&id, 137).unwrap();
    let s = h.status("p").await;
    assert_eq!(h.only_id().await, id);
    let c = &s.container_statuses[0];
    assert_eq!(c.restart_count, 1);
    assert!(c.state.running.is_some());
    let last = c.last_state.terminated.as_ref().unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("Error"))
    );

    // The next crash waits 10 s in CrashLoopBackOff.
    h.rt.exit(&id, 1).unwrap();
    let s = h.status("p").await;
    assert_eq!(waiting_reason(&s).as_deref(), Some("CrashLoopBackOff"));
    assert!(
        s.container_statuses[0]
            .state
            .waiting
            .as_ref()
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("back-off 10s")
    );
    assert_eq!(s.phase, "Running");
    assert!(!s.is_ready());
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        waiting_reason(&h.status("p").await).as_deref(),
        Some("CrashLoopBackOff")
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    let s = h.status("p").await;
    assert_eq!(s.container_statuses[0].restart_count, 2);
    assert!(s.container_statuses[0].state.running.is_some());

    // Then 20 s.
    h.rt.exit(&id, 1).unwrap();
    h.round().await;
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(
        waiting_reason(&h.status("p").await).as_deref(),
        Some("CrashLoopBackOff")
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(h.status("p").await.container_statuses[0].restart_count, 3);

    // A run of 10 minutes or more resets the back-off: the restart is immediate again.
    h.rt.advance(Duration::from_secs(601));
    h.rt.exit(&id, 1).unwrap();
    let s = h.status("p").await;
    assert_eq!(s.container_statuses[0].restart_count, 4);
    assert!(s.container_statuses[0].state.running.is_some());
}

#[tokio::test(start_paused = true)]
async fn restart_counts_survive_a_new_agent_and_healthy_containers_are_adopted() {
    let mut h = Harness::new().await;
    h.pod("p", web(json!({}))).await;
    h.round().await;
    let id = h.only_id().await;
    h.rt.exit(&id, 137).unwrap();
    h.round().await;

    // shoald restarts: a fresh agent, same engine and data directory.
    let creates = h.rt.calls("create");
    let starts = h.rt.calls("start");
    h.agent = Harness::agent(&h.data_dir, &h.state, &h.rt);
    let s = h.status("p").await;
    assert_eq!(h.rt.calls("create"), creates, "nothing is created");
    assert_eq!(h.rt.calls("start"), starts, "nothing is restarted");
    assert_eq!(h.rt.calls("stop"), 0);
    assert_eq!(h.only_id().await, id);
    assert_eq!(s.container_statuses[0].restart_count, 1);
    assert_eq!(s.phase, "Running");

    // A kill while shoald was down: restarted after adoption, counted, with the back-off
    // the persisted crash streak asks for.
    h.rt.exit(&id, 137).unwrap();
    h.agent = Harness::agent(&h.data_dir, &h.state, &h.rt);
    let s = h.status("p").await;
    assert_eq!(waiting_reason(&s).as_deref(), Some("CrashLoopBackOff"));
    tokio::time::advance(Duration::from_secs(11)).await;
    let s = h.status("p").await;
    assert_eq!(h.only_id().await, id);
    assert_eq!(s.container_statuses[0].restart_count, 2);
}

#[tokio::test]
async fn restart_policy_never_and_on_failure_end_the_pod() {
    let mut h = Harness::new().await;
    h.pod(
        "never",
        json!({"restartPolicy": "Never", "containers": [{"name": "job", "image": IMAGE}]}),
    )
    .await;
    h.pod(
        "onfail",
        json!({"restartPolicy": "OnFailure", "containers": [{"name": "job", "image": IMAGE}]}),
    )
    .await;
    h.round().await;
    for c in h.containers().await {
        let code = if c.labels[labels::POD] == "never" {
            3
        } else {
            0
        };
        h.rt.exit(&c.id, code).unwrap();
    }
    let all = h.round().await;
    let never = &all["default/never"];
    assert_eq!(never.phase, "Failed");
    let t = never.container_statuses[0]
        .state
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    let onfail = &all["default/onfail"];
    assert_eq!(onfail.phase, "Succeeded");
    assert_eq!(
        onfail.container_statuses[0]
            .state
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("Completed")
    );
    assert_eq!(h.rt.calls("start"), 2, "no restarts");
    assert_eq!(
        h.containers().await.len(),
        2,
        "finished containers are kept"
    );
}

#[tokio::test]
async fn oom_kills_are_surfaced() {
    let mut h = Harness::new().await;
    h.pod(
        "p",
        web(json!({"resources": {"limits": {"memory": "16Mi"}}})),
    )
    .await;
    h.round().await;
    let id = h.only_id().await;
    assert_eq!(h.rt.spec(&id).unwrap().memory_limit, Some(16 << 20));
    h.rt.oom_kill(&id).unwrap();
    let s = h.status("p").await;
    let last = s.container_statuses[0]
        .last_state
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(last.exit_code, 137);
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_is_err_image_pull_then_image_pull_back_off() {
    let mut h = Harness::new().await;
    h.pod(
        "p",
        json!({"containers": [{"name": "web", "image": "nowhere/app:1"}]}),
    )
    .await;
    let s = h.status("p").await;
    assert_eq!(s.phase, "Pending");
    let w = s.container_statuses[0].state.waiting.clone().unwrap();
    assert_eq!(w.reason, "ErrImagePull");
    assert!(
        w.message
            .unwrap()
            .contains("image \"nowhere/app:1\" is not present")
    );
    // Retried only after the back-off.
    let checks = h.rt.calls("image_present");
    h.round().await;
    assert_eq!(h.rt.calls("image_present"), checks);
    tokio::time::advance(Duration::from_secs(11)).await;
    let s = h.status("p").await;
    assert_eq!(h.rt.calls("image_present"), checks + 1);
    assert_eq!(waiting_reason(&s).as_deref(), Some("ImagePullBackOff"));
    // Once the image is there, the next retry runs it.
    h.rt.add_image("nowhere/app:1");
    tokio::time::advance(Duration::from_secs(21)).await;
    let s = h.status("p").await;
    assert_eq!(s.phase, "Running");
}

/// The harness's agent, now pulling through an image service and telling events.
fn with_images(h: &mut Harness) -> crate::events::Events {
    let (svc, images) = crate::images::ImageService::new(
        Engine::ready(Arc::new(h.rt.clone())),
        crate::images::ImagesConfig::default(),
    );
    tokio::spawn(svc.run(h.stop.clone()));
    let events = crate::events::Events::local(NODE);
    let agent = std::mem::replace(&mut h.agent, Harness::agent(&h.data_dir, &h.state, &h.rt));
    h.agent = agent.with_images(images).with_events(events.clone());
    events
}

fn pod_events(events: &crate::events::Events, pod: &str) -> Vec<(String, String)> {
    let mut list = events.list(&crate::events::Filter {
        name: Some(pod.into()),
        ..Default::default()
    });
    list.sort_by_key(|e| e.first_ms);
    list.into_iter().map(|e| (e.reason, e.message)).collect()
}

async fn pull_secret(h: &Harness, name: &str, registry: &str, user: &str, pass: &str) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = json!({"auths": {registry: {"username": user, "password": pass,
                                              "auth": b64(&format!("{user}:{pass}"))}}});
    h.apply(
        Kind::Secret,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
               "metadata": {"name": name, "namespace": "default"},
               "data": {".dockerconfigjson": b64(&config.to_string())}}),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_is_pulled_once_for_two_pods_with_their_credentials_and_events() {
    let mut h = Harness::new().await;
    let events = with_images(&mut h);
    h.rt.publish("reg.lan/app:1", Some(("robot", "hunter2")));
    h.rt.set_pull_delay(Duration::from_secs(3));
    pull_secret(&h, "regcred", "reg.lan", "robot", "hunter2").await;
    let spec = json!({"imagePullSecrets": [{"name": "regcred"}],
                      "containers": [{"name": "web", "image": "reg.lan/app:1"}]});
    h.pod("p", spec.clone()).await;
    h.pod("q", spec).await;
    let all = h.round().await;
    for pod in ["default/p", "default/q"] {
        let w = all[pod].container_statuses[0]
            .state
            .waiting
            .clone()
            .unwrap();
        assert_eq!(w.reason, "ContainerCreating", "{pod}");
    }
    tokio::time::advance(Duration::from_secs(4)).await;
    h.settle().await;
    let all = h.round().await;
    for pod in ["default/p", "default/q"] {
        assert_eq!(all[pod].phase, "Running", "{pod}");
    }
    assert_eq!(h.rt.pulls("reg.lan/app:1"), 1, "one pull for both pods");
    let told = pod_events(&events, "p");
    let reasons: Vec<&str> = told.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["Pulling", "Pulled", "Started"], "{told:?}");
    assert_eq!(told[0].1, "Pulling image \"reg.lan/app:1\"");
    // Paused time jumps past the 3 s pull in one step of 4 s.
    assert_eq!(
        told[1].1,
        "Successfully pulled image \"reg.lan/app:1\" in 4.0s. Image size: 7340032 bytes."
    );
    for (_, m) in pod_events(&events, "p")
        .iter()
        .chain(&pod_events(&events, "q"))
    {
        assert!(!m.contains("hunter2"), "{m}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_is_err_image_pull_then_image_pull_back_off_naming_the_registry() {
    let mut h = Harness::new().await;
    let events = with_images(&mut h);
    h.pod(
        "p",
        json!({"containers": [{"name": "web", "image": "reg.lan/app:nope"}]}),
    )
    .await;
    h.round().await;
    h.settle().await;
    let s = h.status("p").await;
    let w = s.container_statuses[0].state.waiting.clone().unwrap();
    assert_eq!(w.reason, "ErrImagePull");
    let message = w.message.unwrap();
    assert!(message.contains("registry reg.lan"), "{message}");
    assert!(message.contains("manifest unknown"), "{message}");
    // The back-off: nothing pulled again within 10 s; then the next failure is a back-off.
    tokio::time::advance(Duration::from_secs(5)).await;
    h.round().await;
    assert_eq!(h.rt.calls("pull"), 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    h.round().await;
    h.settle().await;
    let s = h.status("p").await;
    assert_eq!(h.rt.calls("pull"), 2);
    assert_eq!(waiting_reason(&s).as_deref(), Some("ImagePullBackOff"));
    let told = pod_events(&events, "p");
    let reasons: Vec<&str> = told.iter().map(|(r, _)| r.as_str()).collect();
    assert!(
        reasons.starts_with(&["Pulling", "Failed", "Failed"]),
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|(r, m)| r == "Failed" && m == "Error: ErrImagePull")
    );
    // Once the registry has it, the retry after the back-off runs the pod.
    h.rt.publish("reg.lan/app:nope", None);
    tokio::time::advance(Duration::from_secs(21)).await;
    h.round().await;
    h.settle().await;
    assert_eq!(h.status("p").await.phase, "Running");
}

#[tokio::test(start_paused = true)]
async fn an_image_present_is_used_as_is_unless_the_policy_is_always() {
    let mut h = Harness::new().await;
    let events = with_images(&mut h);
    h.rt.add_image("reg.lan/app:1");
    h.pod(
        "p",
        json!({"containers": [{"name": "web", "image": "reg.lan/app:1"}]}),
    )
    .await;
    assert_eq!(h.status("p").await.phase, "Running");
    assert_eq!(h.rt.calls("pull"), 0);
    assert_eq!(
        pod_events(&events, "p")[0].1,
        "Container image \"reg.lan/app:1\" already present on machine"
    );
    // Always: the registry is asked, and an unknown tag fails the pod though the node has it.
    h.pod(
        "q",
        json!({"containers": [{"name": "web", "image": "reg.lan/app:1",
                               "imagePullPolicy": "Always"}]}),
    )
    .await;
    h.round().await;
    h.settle().await;
    assert_eq!(
        waiting_reason(&h.status("q").await).as_deref(),
        Some("ErrImagePull")
    );
    // Never, with the image absent: not pulled.
    h.pod(
        "r",
        json!({"containers": [{"name": "web", "image": "reg.lan/other:1",
                               "imagePullPolicy": "Never"}]}),
    )
    .await;
    let s = h.status("r").await;
    assert_eq!(waiting_reason(&s).as_deref(), Some("ErrImagePull"));
    assert_eq!(h.rt.calls("pull"), 1);
    assert!(
        pod_events(&events, "r")
            .iter()
            .any(|(r, _)| r == "ErrImageNeverPull")
    );
}

#[tokio::test]
async fn image_not_found_at_create_is_err_image_pull_too() {
    let mut h = Harness::new().await;
    h.pod("p", web(json!({}))).await;
    h.rt.fail_next(
        "create",
        RuntimeError::ImageNotFound {
            image: IMAGE.into(),
        },
    );
    let s = h.status("p").await;
    assert_eq!(waiting_reason(&s).as_deref(), Some("ErrImagePull"));
}

#[tokio::test]
async fn gone_slots_are_stopped_and_removed_with_their_directory() {
    let mut h = Harness::new().await;
    h.pod(
        "p",
        json!({"terminationGracePeriodSeconds": 3,
               "containers": [{"name": "web", "image": IMAGE,
                               "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]}],
               "volumes": [{"name": "scratch", "emptyDir": {}}]}),
    )
    .await;
    h.round().await;
    let dir = h.data_dir.join("pods/default_p/volumes/scratch");
    assert!(dir.is_dir());
    h.state
        .write_slots(vec![], vec!["default/p".into()])
        .await
        .unwrap();
    let all = h.round().await;
    assert!(all.is_empty());
    // The removal runs in the background; the next rounds see it done.
    h.round().await;
    h.round().await;
    assert!(h.containers().await.is_empty());
    assert_eq!(h.rt.calls("stop"), 1);
    assert_eq!(h.rt.calls("remove"), 1);
    assert!(!h.data_dir.join("pods/default_p").exists());

    // A slot moved to another node is also removed here.
    h.pod("q", web(json!({}))).await;
    h.round().await;
    let mut moved = slot("q");
    moved.node = "n2".into();
    h.state.write_slots(vec![moved], vec![]).await.unwrap();
    for _ in 0..3 {
        h.round().await;
    }
    assert!(h.containers().await.is_empty());
}

#[tokio::test]
async fn half_created_leftovers_are_replaced() {
    let mut h = Harness::new().await;
    h.pod("p", web(json!({}))).await;
    h.rt.fail_next(
        "start",
        RuntimeError::Conflict {
            message: "port is already allocated".into(),
        },
    );
    let s = h.status("p").await;
    assert_eq!(waiting_reason(&s).as_deref(), Some("RunContainerError"));
    assert!(
        h.containers().await.is_empty(),
        "the failed container is removed"
    );
    // A leftover created by a crashed shoald (never started) is removed, then recreated.
    let input = build("p", web(json!({})));
    let leftover =
        h.rt.create(input.containers[0].spec.as_ref().unwrap())
            .await
            .unwrap();
    h.round().await;
    h.round().await;
    let cs = h.containers().await;
    assert!(cs.iter().all(|c| c.id != leftover));
}

#[tokio::test]
async fn config_errors_wait_until_the_config_exists() {
    let mut h = Harness::new().await;
    h.pod(
        "p",
        web(json!({"env": [{"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}}]})),
    )
    .await;
    let s = h.status("p").await;
    let w = s.container_statuses[0].state.waiting.clone().unwrap();
    assert_eq!(w.reason, "CreateContainerConfigError");
    assert!(w.message.unwrap().contains("configmap \"cfg\" not found"));
    assert_eq!(h.rt.calls("create"), 0);
    h.config_map("cfg", json!({"greeting": "hi"})).await;
    h.round().await;
    let id = h.only_id().await;
    assert!(
        h.rt.spec(&id)
            .unwrap()
            .env
            .contains(&("G".into(), "hi".into()))
    );
}

#[tokio::test]
async fn config_map_volumes_follow_their_config_map() {
    let mut h = Harness::new().await;
    h.config_map("cfg", json!({"greeting": "hi"})).await;
    h.apply(
        Kind::Secret,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
               "data": {"password": "czNjcmV0"}}),
    )
    .await;
    h.pod(
        "p",
        json!({"containers": [{"name": "web", "image": IMAGE, "volumeMounts": [
                   {"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"}]}],
               "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}},
                           {"name": "sec", "secret": {"secretName": "db"}}]}),
    )
    .await;
    h.round().await;
    let vols = h.data_dir.join("pods/default_p/volumes");
    assert_eq!(
        std::fs::read_to_string(vols.join("cfg/greeting")).unwrap(),
        "hi"
    );
    assert_eq!(
        std::fs::read_to_string(vols.join("sec/password")).unwrap(),
        "s3cret"
    );
    let mode = std::fs::metadata(vols.join("sec/password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o400);
    let id = h.only_id().await;
    h.config_map("cfg", json!({"greeting": "changed"})).await;
    h.round().await;
    assert_eq!(
        std::fs::read_to_string(vols.join("cfg/greeting")).unwrap(),
        "changed"
    );
    assert_eq!(h.only_id().await, id, "a ConfigMap change restarts nothing");
}

#[tokio::test]
async fn claims_are_named_volumes_that_outlive_the_pod() {
    let mut h = Harness::new().await;
    h.pod(
        "p",
        json!({"containers": [{"name": "web", "image": IMAGE,
                               "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
               "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}),
    )
    .await;
    h.round().await;
    let vols =
        h.rt.list_volumes(&[(labels::PVC, "default/data")])
            .await
            .unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0].name, "shoal-pvc-default-data");
    h.state
        .write_slots(vec![], vec!["default/p".into()])
        .await
        .unwrap();
    for _ in 0..3 {
        h.round().await;
    }
    assert!(h.containers().await.is_empty());
    assert_eq!(h.rt.calls("remove_volume"), 0);
    assert_eq!(h.rt.list_volumes(&[]).await.unwrap().len(), 1);
}

#[test]
fn resolv_settings_follow_kubernetes_cluster_first() {
    let gw: std::net::IpAddr = "172.18.0.1".parse().unwrap();
    let cases = [
        (
            "shoal.home.arpa",
            "default",
            [
                "default.svc.shoal.home.arpa",
                "svc.shoal.home.arpa",
                "shoal.home.arpa",
            ],
        ),
        (
            "Cluster.Local.",
            "prod",
            [
                "prod.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ],
        ),
    ];
    for (domain, ns, search) in cases {
        let r = spec::resolv_settings(domain, ns, gw);
        assert_eq!(r.servers, vec!["172.18.0.1".to_string()], "{domain}");
        assert_eq!(r.search, search.map(String::from).to_vec(), "{domain}");
        assert_eq!(r.options, vec!["ndots:5".to_string()], "{domain}");
    }
}

#[test]
fn container_specs_name_the_nodes_dns_server_only_when_it_is_on_and_known() {
    let pod = desired("p", web(json!({})));
    let dns_of = |ctx: &NodeContext| {
        let input = plan::PodInput::build(ctx, &pod, &sources());
        let s = input.containers[0].spec.clone().unwrap();
        (input.hash, s.dns_servers, s.dns_search, s.dns_options)
    };
    // DNS off: the engine's defaults.
    let off = ctx();
    assert!(!off.dns_pending());
    let (hash_off, servers, search, options) = dns_of(&off);
    assert!(servers.is_empty() && search.is_empty() && options.is_empty());
    // On, gateway not known yet: nothing yet, and the agent waits before creating.
    let mut pending = ctx();
    pending.cluster_domain = Some("shoal.home.arpa".into());
    assert!(pending.dns_pending());
    assert!(dns_of(&pending).1.is_empty());
    // On and known.
    let mut on = pending.clone();
    on.dns_server = Some("172.18.0.1".parse().unwrap());
    assert!(!on.dns_pending());
    let (hash_on, servers, search, options) = dns_of(&on);
    assert_eq!(servers, vec!["172.18.0.1".to_string()]);
    assert_eq!(search[0], "default.svc.shoal.home.arpa");
    assert_eq!(options, vec!["ndots:5".to_string()]);
    // The resolver is not in the template hash: turning DNS on recreates nothing.
    assert_eq!(hash_on, hash_off);
}

#[tokio::test]
async fn containers_use_the_pod_networks_gateway_as_their_dns_server() {
    let mut h = Harness::new().await;
    let network = h.agent.pod_network();
    assert_eq!(*network.borrow(), None, "no pods, no network");
    h.round().await;
    assert!(h.rt.networks().is_empty());
    h.pod("p", web(json!({}))).await;
    let s = h.status("p").await;
    assert_eq!(s.phase, "Running");
    let id = h.only_id().await;
    let spec = h.rt.spec(&id).unwrap();
    assert_eq!(spec.dns_servers, vec!["172.18.0.1".to_string()]);
    assert_eq!(
        spec.dns_search,
        vec![
            "default.svc.shoal.home.arpa".to_string(),
            "svc.shoal.home.arpa".into(),
            "shoal.home.arpa".into()
        ]
    );
    assert_eq!(spec.dns_options, vec!["ndots:5".to_string()]);
    let published = (*network.borrow()).unwrap();
    assert_eq!(published.gateway.to_string(), "172.18.0.1");
    assert_eq!(published.subnet.to_string(), "172.18.0.0/16");
}

#[tokio::test]
async fn a_container_made_without_cluster_dns_is_adopted_not_recreated() {
    let mut h = Harness::new().await;
    h.agent.ctx.cluster_domain = None;
    h.pod("p", web(json!({}))).await;
    h.round().await;
    let old = h.only_id().await;
    assert!(h.rt.spec(&old).unwrap().dns_servers.is_empty());
    // A new agent with DNS on keeps it.
    h.agent = Harness::agent(&h.data_dir, &h.state, &h.rt);
    for _ in 0..3 {
        h.round().await;
    }
    assert_eq!(h.only_id().await, old);
}

#[tokio::test]
async fn a_changed_bare_pod_spec_recreates_its_container() {
    let mut h = Harness::new().await;
    h.pod("p", web(json!({"args": ["a"]}))).await;
    h.round().await;
    let old = h.only_id().await;
    h.pod("p", web(json!({"args": ["b"]}))).await;
    for _ in 0..3 {
        h.round().await;
    }
    let new = h.only_id().await;
    assert_ne!(new, old);
    assert_eq!(h.rt.spec(&new).unwrap().args, Some(vec!["b".to_string()]));
}

/// An exec handler whose exit code tests switch.
fn switchable_exec(rt: &SimRuntime) -> Arc<AtomicI64> {
    let code = Arc::new(AtomicI64::new(0));
    let c = code.clone();
    rt.set_exec_handler(Arc::new(move |_, _| ExecOutput {
        exit_code: c.load(Ordering::SeqCst),
        ..Default::default()
    }));
    code
}

/// Lets probe workers run for `secs` of paused time, a second at a time, with rounds between.
async fn run_for(h: &mut Harness, secs: u64) -> PodStatus {
    let mut last = h.status("p").await;
    for _ in 0..secs {
        tokio::time::advance(Duration::from_secs(1)).await;
        last = h.status("p").await;
    }
    last
}

#[tokio::test(start_paused = true)]
async fn readiness_probes_set_the_ready_flag() {
    let mut h = Harness::new().await;
    let code = switchable_exec(&h.rt);
    h.pod(
        "p",
        web(json!({"readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 1, "failureThreshold": 2}})),
    )
    .await;
    let s = h.status("p").await;
    assert!(!s.is_ready(), "not ready before the first success");
    let s = run_for(&mut h, 2).await;
    assert!(s.is_ready());
    assert!(s.container_statuses[0].ready);
    let since = s.ready_since().unwrap().to_string();
    code.store(1, Ordering::SeqCst);
    let s = run_for(&mut h, 3).await;
    assert!(!s.is_ready());
    assert_eq!(s.phase, "Running");
    assert_eq!(h.rt.calls("stop"), 0, "readiness never restarts");
    code.store(0, Ordering::SeqCst);
    let s = run_for(&mut h, 2).await;
    assert!(s.is_ready());
    let _ = since;
}

#[tokio::test(start_paused = true)]
async fn failing_liveness_restarts_the_container() {
    let mut h = Harness::new().await;
    let code = switchable_exec(&h.rt);
    h.pod(
        "p",
        web(json!({"livenessProbe": {"exec": {"command": ["alive"]}, "periodSeconds": 1, "failureThreshold": 3}})),
    )
    .await;
    let s = run_for(&mut h, 3).await;
    assert_eq!(s.container_statuses[0].restart_count, 0);
    let id = h.only_id().await;
    code.store(1, Ordering::SeqCst);
    let s = run_for(&mut h, 6).await;
    assert!(h.rt.calls("stop") >= 1);
    assert_eq!(h.only_id().await, id);
    assert_eq!(s.container_statuses[0].restart_count, 1);
    assert!(s.container_statuses[0].last_state.terminated.is_some());
}

#[tokio::test(start_paused = true)]
async fn startup_probes_gate_liveness_and_readiness() {
    let mut h = Harness::new().await;
    let _code = switchable_exec(&h.rt);
    h.pod(
        "p",
        web(json!({
            "startupProbe": {"exec": {"command": ["started"]}, "periodSeconds": 1, "initialDelaySeconds": 3},
            "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 1}
        })),
    )
    .await;
    let s = h.status("p").await;
    assert_eq!(s.container_statuses[0].started, Some(false));
    assert!(!s.is_ready());
    let s = run_for(&mut h, 6).await;
    assert_eq!(s.container_statuses[0].started, Some(true));
    assert!(s.is_ready());
}

#[tokio::test]
async fn an_unreachable_engine_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (state, task) = state::open(&StateConfig {
        data_dir: dir.path().join("state"),
        cluster_secret: [7; 32],
        channel_size: 16,
    })
    .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(task.run(stop.clone()));
    let mut agent = Agent::new(
        AgentConfig {
            node_name: NODE.into(),
            cluster_id: CLUSTER.into(),
            data_dir: dir.path().to_path_buf(),
            advertise: "127.0.0.7".parse().unwrap(),
            channel_size: 4,
            cluster_domain: None,
        },
        state.clone(),
        Engine::pending(),
        None,
    );
    state
        .apply_values(vec![(
            Kind::Pod,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                   "spec": web(json!({}))}),
        )])
        .await
        .unwrap();
    state.write_slots(vec![slot("p")], vec![]).await.unwrap();
    let s = agent.reconcile().await;
    let p = &s["default/p"];
    assert_eq!(p.phase, "Pending");
    assert!(
        p.container_statuses[0]
            .state
            .waiting
            .as_ref()
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("engine")
    );
    stop.cancel();
}

// ---- StatefulSets: at most one copy ----

const DEAD_AFTER: Duration = Duration::from_secs(3);
const RESCHEDULE_GRACE: Duration = Duration::from_secs(5);

/// A desired pod of a slot owned by `kind`.
fn owned(name: &str, kind: &str) -> DesiredPod {
    let mut p = desired(
        name,
        json!({"terminationGracePeriodSeconds": 30,
               "containers": [{"name": "web", "image": IMAGE}]}),
    );
    p.slot.owner_kind = kind.into();
    p.slot.owner_name = "owner".into();
    p
}

/// A StatefulSet pod, a ReplicaSet pod and a bare Pod.
fn mixed() -> Vec<DesiredPod> {
    vec![
        owned("db-0", "StatefulSet"),
        owned("web-1", "ReplicaSet"),
        owned("p", "Pod"),
    ]
}

fn kinds_of(pods: &[DesiredPod]) -> BTreeMap<String, String> {
    pods.iter()
        .map(|p| (p.key(), p.slot.owner_kind.clone()))
        .collect()
}

fn inputs_of(pods: &[DesiredPod]) -> Vec<plan::PodInput> {
    pods.iter()
        .map(|p| plan::PodInput::build(&ctx(), p, &sources()))
        .collect()
}

fn guard_of(mode: Mode, elsewhere: &[(&str, &str)]) -> Guard {
    Guard {
        mode,
        elsewhere: elsewhere
            .iter()
            .map(|(k, n)| (k.to_string(), n.to_string()))
            .collect(),
        grace_cap: plan::fence_grace(RESCHEDULE_GRACE),
        young: Default::default(),
    }
}

/// Found by the simulator (seed 1517): a node fenced by a 2 of 6 split that then heard an
/// exact half (a node crossed over to it) started its StatefulSet pods again, while the other
/// side, which still counted that node, had moved them.
#[test]
fn a_fenced_node_starts_its_statefulset_pods_again_only_on_a_strict_majority() {
    let q = |known, heard| crate::nodes::Quorum {
        known,
        alive: heard,
        heard,
    };
    let cases = [
        // (was fenced, known, heard, starting, fenced now)
        (false, 6, 2, false, true),
        (false, 6, 3, false, false),
        (true, 6, 3, false, true),
        (true, 6, 4, false, false),
        (true, 3, 1, false, true),
        (true, 3, 2, false, false),
        (false, 4, 2, false, false),
        (true, 6, 2, true, false),
    ];
    for (was, known, heard, starting, want) in cases {
        assert_eq!(
            fence_verdict(was, &q(known, heard), starting),
            want,
            "was {was}, {heard} of {known} heard, starting {starting}"
        );
    }
}

/// Found by the simulator (seed 919): a scale-up applied on both sides of a partition that had
/// just begun made the same new ordinal on each side, and both started it before the minority
/// fenced. A new StatefulSet pod that no node has run waits `dead_after`; one that moves here
/// from a node that ran it does not.
#[test]
fn new_statefulset_pods_wait_for_the_dead_timeout_and_moved_ones_do_not() {
    let t0 = tokio::time::Instant::now();
    let assigned: BTreeMap<String, tokio::time::Instant> = [
        ("default/db-1".to_string(), t0),
        ("default/db-2".to_string(), t0),
    ]
    .into();
    let reported = ["default/db-2".to_string()].into();
    let young = |after| plan::young(&assigned, &reported, t0 + after, DEAD_AFTER);
    assert_eq!(
        young(Duration::ZERO),
        ["default/db-1".to_string()].into(),
        "db-2 moves here: some node ran it"
    );
    assert_eq!(
        young(DEAD_AFTER - Duration::from_millis(1)),
        ["default/db-1".to_string()].into()
    );
    assert!(young(DEAD_AFTER).is_empty());
    let guard = plan::Guard {
        young: young(Duration::ZERO),
        ..plan::Guard::default()
    };
    assert!(
        guard
            .held("default/db-1")
            .unwrap()
            .contains("new StatefulSet pod")
    );
    assert_eq!(guard.held("default/db-2"), None);
}

#[test]
fn the_mode_fences_then_holds_off_for_dead_after() {
    let t0 = tokio::time::Instant::now();
    let cases = [
        (true, Duration::ZERO, Mode::Fenced),
        (true, Duration::from_secs(60), Mode::Fenced),
        (false, Duration::ZERO, Mode::Holding),
        (false, DEAD_AFTER - Duration::from_millis(1), Mode::Holding),
        (false, DEAD_AFTER, Mode::Open),
    ];
    for (fenced, after, want) in cases {
        assert_eq!(
            Mode::of(fenced, t0, t0 + after, DEAD_AFTER),
            want,
            "fenced {fenced}, {after:?} after"
        );
    }
    assert_eq!(
        plan::fence_grace(RESCHEDULE_GRACE),
        Duration::from_millis(2500)
    );
}

#[test]
fn fenced_statefulset_containers_are_removed_with_the_capped_grace() {
    let pods = mixed();
    let mut kinds = kinds_of(&pods);
    let inputs = inputs_of(&pods);
    let mut observed: Vec<ContainerInfo> = inputs
        .iter()
        .zip(["sts", "rs", "pod"])
        .map(|(input, id)| info(id, input, "web", ContainerState::Running))
        .collect();
    // A StatefulSet container whose slot is gone: known by its label.
    let mut gone = info("gone", &inputs[0], "web", ContainerState::Running);
    gone.labels
        .insert(labels::SLOT.into(), "default/db-1".into());
    // One of an earlier agent (no owner label) whose slot moved to another node: known by
    // the slot's owner kind.
    let mut old = info("old", &inputs[0], "web", ContainerState::Running);
    old.labels.remove(labels::OWNER_KIND);
    old.labels
        .insert(labels::SLOT.into(), "default/db-2".into());
    kinds.insert("default/db-2".into(), "StatefulSet".into());
    // One without the label whose slot is gone: not known to be a StatefulSet's.
    let mut unknown = info("unknown", &inputs[0], "web", ContainerState::Running);
    unknown.labels.remove(labels::OWNER_KIND);
    unknown
        .labels
        .insert(labels::SLOT.into(), "default/x-0".into());
    observed.extend([gone, old, unknown]);
    assert_eq!(observed[0].labels[labels::OWNER_KIND], "StatefulSet");

    let now = tokio::time::Instant::now();
    let removals = |mode: Mode, stopping: &BTreeMap<String, Duration>| {
        let (kept, fenced) = plan::fence(inputs.clone(), mode);
        let sel = plan::select(&kept, &observed);
        let busy = stopping.keys().cloned().collect();
        let actions = plan::plan(&kept, &sel, &BTreeMap::new(), &busy, now);
        let actions = plan::guard(actions, &kept, &sel, &kinds, &guard_of(mode, &[]), stopping);
        let removed: BTreeMap<String, (Duration, &str)> = actions
            .into_iter()
            .map(|a| match a {
                Action::Remove {
                    id, grace, reason, ..
                } => (id, (grace, reason)),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let fenced: Vec<String> = fenced.into_iter().map(|i| i.key).collect();
        (removed, fenced)
    };
    let cap = Duration::from_millis(2500);
    let full = Duration::from_secs(30);

    // Fenced: every StatefulSet container goes within the cap; the ReplicaSet's and the bare
    // Pod's are untouched.
    let (removed, fenced) = removals(Mode::Fenced, &BTreeMap::new());
    assert_eq!(fenced, ["default/db-0"]);
    assert_eq!(removed.len(), 4, "{removed:?}");
    for id in ["sts", "gone", "old"] {
        assert_eq!(removed[id], (cap, plan::FENCED), "{id}");
    }
    assert_eq!(removed["unknown"].0, full);
    assert!(!removed.contains_key("rs") && !removed.contains_key("pod"));

    // Not fenced (holding or open): the pod runs on, the others get their full grace.
    for mode in [Mode::Holding, Mode::Open] {
        let (removed, fenced) = removals(mode, &BTreeMap::new());
        assert!(fenced.is_empty());
        assert_eq!(
            removed.keys().map(String::as_str).collect::<Vec<_>>(),
            ["gone", "old", "unknown"]
        );
        assert!(removed.values().all(|(g, _)| *g == full), "{removed:?}");
    }

    // A stop already in flight with a longer grace is overtaken by one within the cap; one
    // within the cap is left to finish.
    let long = BTreeMap::from([("sts".to_string(), full)]);
    let (removed, _) = removals(Mode::Fenced, &long);
    assert_eq!(removed["sts"], (cap, plan::FENCED));
    let short = BTreeMap::from([("sts".to_string(), Duration::from_secs(1))]);
    let (removed, _) = removals(Mode::Fenced, &short);
    assert!(!removed.contains_key("sts"), "{removed:?}");
    let (removed, _) = removals(Mode::Open, &long);
    assert!(!removed.contains_key("sts"), "{removed:?}");
}

#[test]
fn held_statefulset_pods_are_neither_created_nor_restarted() {
    let pods = mixed();
    let kinds = kinds_of(&pods);
    let inputs = inputs_of(&pods);
    let now = tokio::time::Instant::now();
    let started = |guard: &Guard, observed: &[ContainerInfo]| {
        let sel = plan::select(&inputs, observed);
        let mut memory = BTreeMap::new();
        plan::observe(&mut memory, &inputs, &sel, now, "2026-01-01T00:00:00Z");
        let actions = plan::plan(&inputs, &sel, &memory, &Default::default(), now);
        plan::guard(actions, &inputs, &sel, &kinds, guard, &BTreeMap::new())
            .into_iter()
            .map(|a| match a {
                Action::Create { pod, .. } => format!("create {pod}"),
                Action::Restart { pod, .. } => format!("restart {pod}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    };
    let all = [
        "create default/db-0",
        "create default/p",
        "create default/web-1",
    ];
    let others = ["create default/p", "create default/web-1"];
    assert_eq!(started(&guard_of(Mode::Open, &[]), &[]), all);
    assert_eq!(started(&Guard::default(), &[]), all);
    assert_eq!(started(&guard_of(Mode::Holding, &[]), &[]), others);
    // Another node reports the StatefulSet pod: held. A ReplicaSet pod is not.
    let elsewhere = guard_of(
        Mode::Open,
        &[("default/db-0", "n2"), ("default/web-1", "n2")],
    );
    assert_eq!(started(&elsewhere, &[]), others);
    assert!(elsewhere.held("default/db-0").unwrap().contains("n2"));
    assert_eq!(elsewhere.held("default/db-1"), None);

    // An exited container is not restarted while held either.
    let mut exited = info("sts", &inputs[0], "web", ContainerState::Exited);
    exited.exit_code = Some(1);
    exited.finished_at = Some("2026-01-01T00:00:05Z".into());
    let observed = [exited];
    assert!(
        started(&guard_of(Mode::Open, &[]), &observed).contains(&"restart default/db-0".into())
    );
    for guard in [
        guard_of(Mode::Holding, &[]),
        guard_of(Mode::Open, &[("default/db-0", "n2")]),
    ] {
        assert_eq!(started(&guard, &observed), others);
    }
}

#[test]
fn pods_reported_by_alive_or_recently_heard_nodes_are_elsewhere() {
    use crate::observed::{Liveness, NodeRecord};
    let t0 = tokio::time::Instant::now();
    let now = t0 + Duration::from_secs(20);
    let window = DEAD_AFTER + RESCHEDULE_GRACE;
    let record = |name: &str, seen: Option<u64>, pod: &str| NodeRecord {
        name: name.into(),
        seen: seen.map(|s| t0 + Duration::from_secs(s)),
        pods: BTreeMap::from([(format!("default/{pod}"), PodStatus::default())]),
        ..NodeRecord::default()
    };
    let records = [
        (record(NODE, Some(20), "mine"), Liveness::Alive),
        (record("alive", Some(20), "a"), Liveness::Alive),
        (record("suspect", Some(18), "b"), Liveness::Suspect),
        (record("dead-lately", Some(15), "c"), Liveness::Dead),
        (record("dead-long", Some(12), "d"), Liveness::Dead),
        (record("left-lately", Some(19), "e"), Liveness::Left),
        (record("never-heard", None, "f"), Liveness::Dead),
    ];
    let got = plan::reported_elsewhere(records.iter().map(|(r, l)| (r, *l)), NODE, now, window);
    let want: BTreeMap<String, String> = [
        ("default/a", "alive"),
        ("default/b", "suspect"),
        ("default/c", "dead-lately"),
        ("default/e", "left-lately"),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn only_statefulset_pods_no_longer_kept_are_reported_terminating() {
    let pods = mixed();
    let kinds = kinds_of(&pods);
    let inputs = inputs_of(&pods);
    let mut ip = info("sts", &inputs[0], "web", ContainerState::Running);
    ip.ip = Some("10.0.0.9".into());
    let observed = vec![
        ip,
        info("rs", &inputs[1], "web", ContainerState::Running),
        info("pod", &inputs[2], "web", ContainerState::Running),
    ];
    // Kept: nothing is terminating.
    let sel = plan::select(&inputs, &observed);
    assert!(plan::terminating(&inputs, &sel, &kinds).is_empty());
    // None kept (moved away, deleted or fenced): only the StatefulSet pod is reported.
    let sel = plan::select(&[], &observed);
    let t = plan::terminating(&[], &sel, &kinds);
    assert_eq!(t.keys().collect::<Vec<_>>(), ["default/db-0"]);
    let s = status::terminating(&t["default/db-0"], ctx().advertise, "2026-01-01T00:00:09Z");
    assert_eq!(s.phase, "Running");
    assert_eq!(s.reason.as_deref(), Some(status::TERMINATING));
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some(status::TERMINATING));
    assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.9"));
    assert_eq!(s.host_ip.as_deref(), Some("127.0.0.7"));
    assert_eq!(s.container_statuses.len(), 1);
    assert_eq!(s.container_statuses[0].name, "web");
    assert!(!s.container_statuses[0].ready);
    assert!(s.container_statuses[0].state.running.is_some());
}

/// Drives the fence and the peers' reports of a [`Harness`] with fencing.
struct FenceCtl {
    fence: tokio::sync::watch::Sender<FenceState>,
    gossip: mpsc::Sender<crate::observed::Inbound>,
}

impl FenceCtl {
    fn set(&self, fenced: bool) {
        self.fence.send_modify(|s| {
            s.fenced = fenced;
            s.since = tokio::time::Instant::now();
        });
    }

    /// Node `name`'s record (version `version`) reports `pods`.
    async fn peer(&self, name: &str, version: u64, pods: &[&str]) {
        let r = crate::observed::NodeRecord {
            name: name.into(),
            version,
            pods: pods
                .iter()
                .map(|p| (format!("default/{p}"), PodStatus::default()))
                .collect(),
            ..Default::default()
        };
        let data = crate::observed::Message::Record(r).encode().unwrap();
        self.gossip
            .send(crate::observed::Inbound::Gossip { data })
            .await
            .unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
}

struct Quiet;

#[async_trait::async_trait]
impl crate::observed::Publish for Quiet {
    async fn publish(&self, _: Vec<u8>) {}
}

fn membership_timing() -> crate::observed::Timing {
    crate::observed::Timing {
        heartbeat: Duration::from_millis(500),
        suspect_after: Duration::from_millis(1500),
        dead_after: DEAD_AFTER,
        full_every: 5,
    }
}

/// Observed state with this node only, its heartbeat running with scripted peers.
fn observed_here(
    stop: &CancellationToken,
) -> (ObservedHandle, mpsc::Sender<crate::observed::Inbound>) {
    let me = crate::observed::NodeRecord {
        name: NODE.into(),
        ..Default::default()
    };
    let (observed, _reporter, heartbeat) = crate::observed::start(me, membership_timing(), 16);
    let (gossip, rx) = mpsc::channel(16);
    tokio::spawn(heartbeat.with_gossip(Arc::new(Quiet), rx).run(stop.clone()));
    (observed, gossip)
}

impl Harness {
    /// A harness whose agent guards StatefulSet pods; the fence starts lifted just now.
    async fn fencing() -> (Harness, FenceCtl) {
        let mut h = Harness::new().await;
        let (observed, gossip) = observed_here(&h.stop);
        let (fence, rx) = tokio::sync::watch::channel(FenceState::new());
        h.agent = Harness::agent(&h.data_dir, &h.state, &h.rt).with_fencing(Fencing {
            fence: rx,
            observed,
            dead_after: DEAD_AFTER,
            reschedule_grace: RESCHEDULE_GRACE,
        });
        (h, FenceCtl { fence, gossip })
    }

    /// One round against `all` (desired pods of every node).
    async fn round_with(&mut self, all: &[DesiredPod]) -> BTreeMap<String, PodStatus> {
        self.settle().await;
        self.agent.reconcile_pods(all.to_vec()).await
    }

    /// Pod key → container id, of every container.
    async fn by_pod(&self) -> BTreeMap<String, String> {
        self.containers()
            .await
            .into_iter()
            .map(|c| (c.labels[labels::SLOT].clone(), c.id))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_fenced_node_stops_its_statefulset_pods_and_holds_them_off_after() {
    let (mut h, ctl) = Harness::fencing().await;
    let all = mixed();
    // Just started: the StatefulSet pod waits out the hold-off; the others start at once.
    let s = h.round_with(&all).await;
    assert_eq!(s["default/db-0"].phase, "Pending");
    assert!(
        s["default/db-0"]
            .message
            .as_ref()
            .unwrap()
            .contains("recently")
    );
    assert_eq!(
        h.by_pod().await.into_keys().collect::<Vec<_>>(),
        ["default/p", "default/web-1"]
    );
    tokio::time::advance(DEAD_AFTER).await;
    h.round_with(&all).await;
    let before = h.by_pod().await;
    assert_eq!(before.len(), 3, "{before:?}");

    // No majority heard: the StatefulSet pod is stopped within half the reschedule grace,
    // and reported terminating while its container exists.
    ctl.set(true);
    let s = h.round_with(&all).await;
    let db = &s["default/db-0"];
    assert_eq!(db.phase, "Running");
    assert_eq!(db.reason.as_deref(), Some("Terminating"));
    let ready = db.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    let sts_id = &before["default/db-0"];
    assert_eq!(
        h.agent.stopping.get(sts_id).map(|(_, g)| *g),
        Some(Duration::from_millis(2500))
    );
    assert_eq!(s["default/web-1"].phase, "Running");
    h.round_with(&all).await;
    let s = h.round_with(&all).await;
    assert!(
        !s.contains_key("default/db-0"),
        "gone, so no longer reported"
    );
    let mut after = before.clone();
    after.remove("default/db-0");
    assert_eq!(h.by_pod().await, after, "the other pods are untouched");
    assert_eq!(h.rt.calls("stop"), 1);
    // Its directory stays for when the fence lifts.
    assert!(h.data_dir.join("pods/default_db-0").is_dir());

    // Still fenced: not started again, however long.
    tokio::time::advance(Duration::from_secs(60)).await;
    h.round_with(&all).await;
    assert!(!h.by_pod().await.contains_key("default/db-0"));

    // The fence lifts: the pod waits dead_after more, then starts.
    ctl.set(false);
    let s = h.round_with(&all).await;
    assert_eq!(s["default/db-0"].phase, "Pending");
    tokio::time::advance(DEAD_AFTER - Duration::from_millis(100)).await;
    h.round_with(&all).await;
    assert!(!h.by_pod().await.contains_key("default/db-0"));
    tokio::time::advance(Duration::from_millis(100)).await;
    h.round_with(&all).await;
    assert!(h.by_pod().await.contains_key("default/db-0"));
}

#[tokio::test(start_paused = true)]
async fn a_statefulset_pod_another_node_reports_is_not_started() {
    let (mut h, ctl) = Harness::fencing().await;
    tokio::time::advance(DEAD_AFTER).await;
    let all = vec![
        owned("db-0", "StatefulSet"),
        owned("db-1", "StatefulSet"),
        owned("web-1", "ReplicaSet"),
    ];
    // n2 still has both StatefulSet pods (stopping them), and the ReplicaSet's.
    ctl.peer("n2", 1, &["db-0", "db-1", "web-1"]).await;
    let s = h.round_with(&all).await;
    assert!(s["default/db-0"].message.as_ref().unwrap().contains("n2"));
    assert_eq!(
        h.by_pod().await.into_keys().collect::<Vec<_>>(),
        ["default/web-1"]
    );
    // n2 no longer reports db-0: it starts; db-1 waits.
    ctl.peer("n2", 2, &["db-1"]).await;
    h.round_with(&all).await;
    assert_eq!(
        h.by_pod().await.into_keys().collect::<Vec<_>>(),
        ["default/db-0", "default/web-1"]
    );
    // n2 falls silent while reporting db-1: its report counts until dead_after +
    // reschedule_grace after it was last heard (by then a fenced n2 has stopped it).
    tokio::time::advance(DEAD_AFTER + RESCHEDULE_GRACE - Duration::from_millis(100)).await;
    h.round_with(&all).await;
    assert!(!h.by_pod().await.contains_key("default/db-1"));
    tokio::time::advance(Duration::from_millis(100)).await;
    h.round_with(&all).await;
    assert!(h.by_pod().await.contains_key("default/db-1"));
}

#[tokio::test(start_paused = true)]
async fn a_statefulset_pod_moved_away_is_reported_terminating_until_gone() {
    let (mut h, _ctl) = Harness::fencing().await;
    tokio::time::advance(DEAD_AFTER).await;
    let mut all = mixed();
    h.round_with(&all).await;
    // A new StatefulSet pod waits the dead timeout after it is assigned.
    assert_eq!(h.by_pod().await.len(), 2);
    tokio::time::advance(DEAD_AFTER).await;
    h.round_with(&all).await;
    assert_eq!(h.by_pod().await.len(), 3);
    // Every slot moves to n2: only the StatefulSet pod is reported while it stops.
    for p in &mut all {
        p.slot.node = "n2".into();
    }
    let s = h.round_with(&all).await;
    assert_eq!(s.keys().collect::<Vec<_>>(), ["default/db-0"]);
    assert_eq!(s["default/db-0"].reason.as_deref(), Some("Terminating"));
    assert_eq!(s["default/db-0"].phase, "Running");
    // Its full grace: it is not fenced.
    let id = h
        .containers()
        .await
        .into_iter()
        .find(|c| c.labels[labels::SLOT] == "default/db-0")
        .unwrap()
        .id;
    assert_eq!(
        h.agent.stopping.get(&id).map(|(_, g)| *g),
        Some(Duration::from_secs(30))
    );
    h.round_with(&all).await;
    let s = h.round_with(&all).await;
    assert!(s.is_empty(), "{s:?}");
    assert!(h.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn watch_fence_fences_when_a_majority_is_unheard_but_not_while_starting() {
    let h = Harness::new().await;
    for (n, p) in [(NODE, "p1"), ("n2", "p2"), ("n3", "p3")] {
        crate::nodes::register(&h.state, n, p).await.unwrap();
    }
    let started = tokio::time::Instant::now();
    let (observed, gossip) = observed_here(&h.stop);
    let (tx, mut rx) = tokio::sync::watch::channel(FenceState::new());
    tokio::spawn(watch_fence(
        h.state.clone(),
        observed,
        tx,
        FENCE_EVERY,
        h.stop.clone(),
    ));
    // One of three heard: the fence comes, but only once the node is no longer starting.
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.fenced))
        .await
        .unwrap()
        .unwrap();
    let s = *rx.borrow();
    assert!(started.elapsed() >= DEAD_AFTER, "{:?}", started.elapsed());
    assert_eq!((s.quorum.known, s.quorum.heard), (3, 1));
    // A second node heard: two of three, the fence lifts.
    let peer = crate::observed::NodeRecord {
        name: "n2".into(),
        version: 1,
        ..Default::default()
    };
    let data = crate::observed::Message::Record(peer).encode().unwrap();
    gossip
        .send(crate::observed::Inbound::Gossip { data })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| !s.fenced))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rx.borrow().quorum.heard, 2);
}

// ---- The engine goes away and comes back ----

impl Harness {
    /// Rebuilds the agent with `f` applied to it (for the builder methods).
    fn rebuild(&mut self, f: impl FnOnce(Agent) -> Agent) {
        let fresh = Harness::agent(&self.data_dir, &self.state, &self.rt);
        let agent = std::mem::replace(&mut self.agent, fresh);
        self.agent = f(agent);
    }

    /// The agent sets the node's conditions; returns them as the heartbeat would see them.
    fn with_conditions(&mut self) -> tokio::sync::watch::Receiver<BTreeMap<String, String>> {
        let (conditions, rx) = crate::observed::Conditions::new();
        self.rebuild(|a| a.with_conditions(conditions));
        rx
    }
}

fn ready_condition(s: &PodStatus) -> &shoal_protocol::status::PodCondition {
    s.conditions.iter().find(|c| c.type_ == "Ready").unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stopped_engine_turns_the_pods_not_ready_at_the_next_round_and_they_recover() {
    let mut h = Harness::new().await;
    let conditions = h.with_conditions();
    h.pod("p", web(json!({}))).await;
    let s = h.status("p").await;
    assert!(s.is_ready());
    let id = h.only_id().await;

    // dockerd stops: its containers stop, its socket goes. The very next round says so.
    h.rt.stop_engine();
    let s = h.status("p").await;
    assert!(!s.is_ready());
    assert_eq!(s.phase, "Unknown");
    assert_eq!(s.reason.as_deref(), Some("EngineUnavailable"));
    let ready = ready_condition(&s);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("EngineUnavailable"))
    );
    let c = &s.container_statuses[0];
    assert!(!c.ready);
    assert_eq!(
        c.state.waiting.as_ref().map(|w| w.reason.as_str()),
        Some("ContainerStatusUnknown")
    );
    assert_eq!(
        c.container_id.as_deref(),
        Some(format!("docker://{id}").as_str()),
        "as last known"
    );
    let message = conditions.borrow()["EngineUnavailable"].clone();
    assert!(message.contains("unix:///sim/docker.sock"), "{message}");
    let (_, since) = super::engine::split_since(&message);
    assert_eq!(since, ready.last_transition_time.as_deref());

    // Still down: the same report, the same condition.
    tokio::time::advance(Duration::from_secs(5)).await;
    let again = h.status("p").await;
    assert_eq!(again, s);
    assert_eq!(conditions.borrow()["EngineUnavailable"], message);

    // Back: the condition clears, the same container is started again and becomes ready.
    h.rt.start_engine();
    h.status("p").await;
    assert!(conditions.borrow().is_empty());
    let s = run_for(&mut h, 15).await;
    assert!(s.is_ready(), "{s:?}");
    assert_eq!(h.only_id().await, id);
    assert_eq!(h.rt.calls("create"), 1);
}

#[tokio::test(start_paused = true)]
async fn passing_engine_errors_change_nothing_until_they_last() {
    let mut h = Harness::new().await;
    let conditions = h.with_conditions();
    h.pod("p", web(json!({}))).await;
    let ready = h.status("p").await;
    assert!(ready.is_ready());
    let boom = crate::runtime::RuntimeError::Other {
        message: "boom".into(),
    };
    for _ in 0..3 {
        h.rt.fail_next("list", boom.clone());
    }
    // One failure: the last report stands.
    assert_eq!(h.status("p").await, ready);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(h.status("p").await, ready);
    assert!(conditions.borrow().is_empty());
    // Failing for two seconds: the engine counts as unavailable, with its socket named.
    tokio::time::advance(Duration::from_secs(1)).await;
    let s = h.status("p").await;
    assert!(!s.is_ready());
    let message = conditions.borrow()["EngineUnavailable"].clone();
    assert!(
        message.contains("the container engine: container engine: boom"),
        "{message}"
    );
    assert!(h.status("p").await.is_ready());
    assert!(conditions.borrow().is_empty());
}

/// While the engine does not answer, the StatefulSet pods it last showed running stay
/// reported (not ready) even once their slot has moved: a hung engine may run them on.
#[test]
fn statefulset_pods_the_engine_last_ran_may_still_run() {
    let c = |pod: &str, kind: Option<&str>, state: crate::runtime::ContainerState| {
        let mut labels = BTreeMap::from([
            (labels::NAMESPACE.to_string(), "default".to_string()),
            (labels::POD.to_string(), pod.to_string()),
        ]);
        if let Some(k) = kind {
            labels.insert(labels::OWNER_KIND.to_string(), k.to_string());
        }
        ContainerInfo {
            labels,
            state,
            ..ContainerInfo::default()
        }
    };
    use crate::runtime::ContainerState::{Exited, Running};
    let listed = [
        c("db-0", Some("StatefulSet"), Running),
        c("db-1", Some("StatefulSet"), Exited),
        c("web-1", Some("ReplicaSet"), Running),
        c("old", None, Running),
    ];
    assert_eq!(
        status::stateful_running(&listed),
        ["default/db-0".to_string()].into()
    );
    let st = status::may_still_run(None, "hung");
    assert_eq!(st.phase, "Unknown");
    assert!(!st.is_ready());
    assert!(st.message.unwrap().contains("may still run"));
}

#[tokio::test(start_paused = true)]
async fn a_slot_moved_away_while_the_engine_was_down_is_not_started_again() {
    let mut h = Harness::new().await;
    let conditions = h.with_conditions();
    h.pod("p", web(json!({}))).await;
    assert!(h.status("p").await.is_ready());
    h.rt.stop_engine();
    h.round().await;
    // The controllers move it while the engine is down.
    let mut moved = slot("p");
    moved.node = "n2".into();
    h.state.write_slots(vec![moved], vec![]).await.unwrap();
    let s = h.round().await;
    assert!(s.is_empty(), "no longer reported: {s:?}");
    let starts = h.rt.calls("start");

    h.rt.start_engine();
    h.round().await;
    h.round().await;
    let s = h.round().await;
    assert!(s.is_empty(), "{s:?}");
    assert_eq!(h.rt.calls("start"), starts, "never started again");
    assert!(h.containers().await.is_empty(), "its container is removed");
    assert!(conditions.borrow().is_empty());
}

// ---- The boot rule ----

#[tokio::test(start_paused = true)]
async fn after_a_start_nothing_starts_before_a_sync_and_what_moved_away_never_does() {
    let mut h = Harness::new().await;
    h.pod("p", web(json!({}))).await;
    h.pod("gone", web(json!({}))).await;
    h.pod("moved", web(json!({}))).await;
    h.round().await;
    assert_eq!(h.containers().await.len(), 3);
    // A power cut: every container exited; `gone` was deleted meanwhile, as the persisted
    // state already knows.
    h.rt.stop_engine();
    h.rt.start_engine();
    h.state
        .write_slots(vec![], vec!["default/gone".into()])
        .await
        .unwrap();
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let wait = DEAD_AFTER + super::boot::BOOT_MARGIN;
    h.rebuild(|a| a.with_boot(super::boot::Boot::new(synced, wait)));
    let starts = h.rt.calls("start");

    // Before any sync: the container of a slot not this node's goes, nothing starts.
    let s = h.round().await;
    assert!(
        s["default/p"]
            .message
            .as_ref()
            .unwrap()
            .contains("just started")
    );
    h.round().await;
    tokio::time::advance(wait - Duration::from_millis(100)).await;
    h.round().await;
    assert_eq!(h.rt.calls("start"), starts);
    let left: Vec<String> = h.by_pod().await.into_keys().collect();
    assert_eq!(left, ["default/moved", "default/p"]);

    // The sync brings the news that `moved` moved: it is removed, never started; `p` starts.
    let mut moved = slot("moved");
    moved.node = "n2".into();
    h.state.write_slots(vec![moved], vec![]).await.unwrap();
    synced_tx.send(true).unwrap();
    h.round().await;
    h.round().await;
    let s = h.round().await;
    assert!(s["default/p"].is_ready(), "{s:?}");
    assert_eq!(h.rt.calls("start"), starts + 1);
    let left: Vec<String> = h.by_pod().await.into_keys().collect();
    assert_eq!(left, ["default/p"]);
}

#[tokio::test(start_paused = true)]
async fn alone_after_the_wait_deployments_start_and_statefulsets_only_with_a_majority() {
    let (mut h, ctl) = Harness::fencing().await;
    let (_synced_tx, synced) = tokio::sync::watch::channel(false);
    let wait = DEAD_AFTER + super::boot::BOOT_MARGIN;
    h.rebuild(|a| a.with_boot(super::boot::Boot::new(synced, wait)));
    let quorum = |alive| crate::nodes::Quorum {
        known: 3,
        alive,
        heard: alive,
    };
    ctl.fence.send_modify(|s| s.quorum = quorum(1));
    let all = mixed();
    h.round_with(&all).await;
    assert!(h.by_pod().await.is_empty());
    // No peer answered in time: the ReplicaSet's and the bare pod start, not the StatefulSet's.
    tokio::time::advance(wait).await;
    let s = h.round_with(&all).await;
    assert_eq!(
        h.by_pod().await.into_keys().collect::<Vec<_>>(),
        ["default/p", "default/web-1"]
    );
    assert!(
        s["default/db-0"]
            .message
            .as_ref()
            .unwrap()
            .contains("majority")
    );
    // A majority is heard: it starts too.
    ctl.fence.send_modify(|s| s.quorum = quorum(2));
    h.round_with(&all).await;
    assert_eq!(h.by_pod().await.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_node_alone_in_its_cluster_starts_at_once() {
    let (mut h, ctl) = Harness::fencing().await;
    let (_synced_tx, synced) = tokio::sync::watch::channel(false);
    h.rebuild(|a| a.with_boot(super::boot::Boot::new(synced, Duration::from_secs(60))));
    // Not counted yet: wait.
    let all = vec![owned("web-1", "ReplicaSet")];
    h.round_with(&all).await;
    assert!(h.by_pod().await.is_empty());
    ctl.fence.send_modify(|s| {
        s.quorum = crate::nodes::Quorum {
            known: 1,
            alive: 1,
            heard: 1,
        }
    });
    h.round_with(&all).await;
    assert_eq!(h.by_pod().await.len(), 1);
}

/// With a pod subnet to follow, no pod starts before the node has one; the network is made
/// on it; and a subnet lost to another node's claim makes the pods again on the new one.
#[tokio::test]
async fn pods_wait_for_the_pod_subnet_and_are_made_again_when_it_changes() {
    use crate::podnet::{network_spec, subnet::PodRange};
    let mut h = Harness::new().await;
    let (tx, rx) = tokio::sync::watch::channel(None);
    h.agent = Harness::agent(&h.data_dir, &h.state, &h.rt).with_pod_subnet(rx);
    h.pod("p", web(json!({}))).await;
    let s = h.status("p").await;
    assert_eq!(h.rt.calls("create"), 0, "no pod before the subnet");
    assert!(h.rt.networks().is_empty());
    assert!(!s.is_ready());

    let range = PodRange::parse("10.42.0.0/16").unwrap();
    tx.send_replace(Some(network_spec(range.subnet(3).unwrap(), Some(1450))));
    h.round().await;
    let s = h.status("p").await;
    assert!(s.is_ready(), "{s:?}");
    let net = h.rt.inspect_network("shoal-n1-c0ffee00").await.unwrap();
    assert_eq!(net.subnet.unwrap().to_string(), "10.42.3.0/24");
    assert_eq!(net.gateway.unwrap().to_string(), "10.42.3.1");
    assert_eq!(net.ip_range.unwrap().to_string(), "10.42.3.0/25");
    let first = h.only_id().await;

    // Lost to a concurrent claim: the container and the network go, and come back.
    tx.send_replace(Some(network_spec(range.subnet(9).unwrap(), Some(1450))));
    for _ in 0..4 {
        h.round().await;
    }
    let s = h.status("p").await;
    assert!(s.is_ready(), "{s:?}");
    let net = h.rt.inspect_network("shoal-n1-c0ffee00").await.unwrap();
    assert_eq!(net.subnet.unwrap().to_string(), "10.42.9.0/24");
    assert_ne!(h.only_id().await, first);
}
