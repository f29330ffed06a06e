#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::json;
use shoal_protocol::kinds::{
    NodeSelector, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Protocol, TaintEffect, Toleration, TolerationOperator,
};

use super::*;

const GI: u64 = 1 << 30;

// ------------------------------------------------------------------------------ fixtures

/// A node with `cpus` whole CPUs and `gib` GiB of memory.
fn node(name: &str, cpus: u64, gib: u64) -> NodeInfo {
    NodeInfo::new(name, cpus * 1000, gib * GI)
}

fn owner(name: &str) -> OwnerKey {
    OwnerKey::new("default", "ReplicaSet", name)
}

/// A pod of `owner` requesting `cpu_millis` and `mem_mib` MiB.
fn pod(owner_name: &str, cpu_millis: u64, mem_mib: u64) -> PodRequest {
    PodRequest::new(owner(owner_name)).with_requests(cpu_millis, mem_mib << 20)
}

fn holding(pods: &[&PodRequest]) -> Assigned {
    let mut a = Assigned::default();
    for p in pods {
        a.add(p);
    }
    a
}

fn none() -> BTreeMap<String, Assigned> {
    BTreeMap::new()
}

/// The node chosen, or the error's message.
fn place(
    nodes: &[NodeInfo],
    assigned: &BTreeMap<String, Assigned>,
    pod: &PodRequest,
) -> Result<String, String> {
    schedule(nodes, assigned, pod).map_err(|e| e.to_string())
}

fn toleration(
    key: &str,
    op: TolerationOperator,
    value: &str,
    effect: Option<TaintEffect>,
) -> Toleration {
    Toleration {
        key: key.into(),
        operator: op,
        value: value.into(),
        effect,
        toleration_seconds: None,
    }
}

fn requirement(key: &str, op: NodeSelectorOperator, values: &[&str]) -> NodeSelector {
    NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: vec![NodeSelectorRequirement {
                key: key.into(),
                operator: op,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }],
    }
}

fn spec(v: serde_json::Value) -> PodSpec {
    serde_json::from_value(v).unwrap()
}

// ------------------------------------------------------------------------------ scores

#[test]
fn least_allocated_takes_the_freest_node() {
    let nodes = [node("a", 2, 4), node("b", 2, 4), node("c", 4, 8)];
    let busy = pod("other", 1500, 3072);
    let assigned = BTreeMap::from([
        ("a".to_string(), holding(&[&busy])),
        ("c".to_string(), holding(&[&busy])),
    ]);
    // b is empty; c (twice the size) holds as much as a: b is freest, then c, then a.
    assert_eq!(
        place(&nodes, &assigned, &pod("web", 100, 128)),
        Ok("b".into())
    );
    let without_b = [nodes[0].clone(), nodes[2].clone()];
    assert_eq!(
        place(&without_b, &assigned, &pod("web", 100, 128)),
        Ok("c".into())
    );
}

#[test]
fn least_allocated_averages_cpu_and_memory() {
    // a: 75% of its CPU used, memory free; b: 50% of both used. Free on average: a 62.5%,
    // b 50%.
    let nodes = [node("a", 4, 4), node("b", 4, 4)];
    let assigned = BTreeMap::from([
        ("a".to_string(), holding(&[&pod("x", 3000, 0)])),
        ("b".to_string(), holding(&[&pod("x", 2000, 2048)])),
    ]);
    assert_eq!(place(&nodes, &assigned, &pod("web", 0, 0)), Ok("a".into()));
}

#[test]
fn equal_nodes_tie_break_by_name_whatever_the_input_order() {
    let orders = [["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]];
    for order in orders {
        let nodes: Vec<NodeInfo> = order.iter().map(|n| node(n, 2, 4)).collect();
        assert_eq!(
            place(&nodes, &none(), &pod("web", 100, 128)),
            Ok("a".into()),
            "{order:?}"
        );
    }
}

#[test]
fn spreading_an_owner_comes_before_free_capacity() {
    // a is nearly empty but already runs a replica of web; b is busy but runs none.
    let nodes = [node("a", 8, 16), node("b", 2, 4)];
    let busy = pod("other", 1500, 3072);
    let web = pod("web", 100, 128);
    let assigned = BTreeMap::from([
        ("a".to_string(), holding(&[&web])),
        ("b".to_string(), holding(&[&busy])),
    ]);
    assert_eq!(place(&nodes, &assigned, &web), Ok("b".into()));
    // Another owner is not spread against web: it takes the freest node.
    assert_eq!(
        place(&nodes, &assigned, &pod("api", 100, 128)),
        Ok("a".into())
    );
}

#[test]
fn pods_without_requests_spread_by_default_requests() {
    // Distinct owners, no requests: scoring counts 100m and 200Mi each, so they do not pile
    // onto the first name.
    let mut s = Schedule::new([node("a", 2, 4), node("b", 2, 4), node("c", 2, 4)], &none());
    let placed: Vec<String> = ["p", "q", "r"]
        .iter()
        .map(|o| {
            s.place(&PodRequest::new(OwnerKey::new("default", "Pod", *o)))
                .unwrap()
        })
        .collect();
    assert_eq!(placed, ["a", "b", "c"]);
}

#[test]
fn prefer_no_schedule_is_avoided_but_not_refused() {
    let tainted =
        node("a", 8, 16).with_taint(Taint::new("slow", "", TaintEffect::PreferNoSchedule));
    let nodes = [tainted.clone(), node("b", 2, 4)];
    let web = pod("web", 100, 128);
    // b is much less free, yet untainted.
    assert_eq!(place(&nodes, &none(), &web), Ok("b".into()));
    // Tolerated, the taint counts for nothing: a is freer.
    let mut tolerant = web.clone();
    tolerant.tolerations = vec![toleration("slow", TolerationOperator::Exists, "", None)];
    assert_eq!(place(&nodes, &none(), &tolerant), Ok("a".into()));
    // When b is full, a takes the pod.
    let assigned = BTreeMap::from([("b".to_string(), holding(&[&pod("x", 2000, 0)]))]);
    assert_eq!(place(&nodes, &assigned, &web), Ok("a".into()));
    // And spreading still comes first.
    let assigned = BTreeMap::from([("b".to_string(), holding(&[&web]))]);
    assert_eq!(place(&nodes, &assigned, &web), Ok("a".into()));
}

// ------------------------------------------------------------------------------ filters

#[test]
fn insufficient_cpu_and_memory() {
    let nodes = [node("a", 1, 1), node("b", 4, 1), node("c", 1, 8)];
    let big = pod("web", 2000, 2048);
    assert_eq!(
        place(&nodes, &none(), &big),
        Err("0/3 nodes are available: 2 Insufficient cpu, 1 Insufficient memory.".into())
    );
    // Fits exactly.
    assert_eq!(
        place(&nodes, &none(), &pod("web", 4000, 1024)),
        Ok("b".into())
    );
    // Requests already assigned count.
    let assigned = BTreeMap::from([("b".to_string(), holding(&[&pod("x", 3500, 0)]))]);
    assert_eq!(
        place(&nodes[1..2], &assigned, &pod("web", 600, 0)),
        Err("0/1 nodes are available: 1 Insufficient cpu.".into())
    );
}

#[test]
fn a_pod_that_requests_nothing_fits_an_overcommitted_node() {
    let nodes = [node("a", 1, 1)];
    let assigned = BTreeMap::from([("a".to_string(), holding(&[&pod("x", 5000, 5000)]))]);
    assert_eq!(place(&nodes, &assigned, &pod("web", 0, 0)), Ok("a".into()));
    assert_eq!(
        place(&nodes, &assigned, &pod("web", 0, 1)),
        Err("0/1 nodes are available: 1 Insufficient memory.".into())
    );
}

#[test]
fn node_selector_must_match_every_label() {
    let nodes = [
        node("a", 2, 4).with_label("disk", "ssd"),
        node("b", 2, 4)
            .with_label("disk", "ssd")
            .with_label("zone", "2"),
        node("c", 2, 4).with_label("zone", "2"),
    ];
    let mut p = pod("web", 0, 0);
    p.node_selector = BTreeMap::from([
        ("disk".to_string(), "ssd".to_string()),
        ("zone".to_string(), "2".to_string()),
    ]);
    assert_eq!(place(&nodes, &none(), &p), Ok("b".into()));
    p.node_selector.insert("gpu".into(), "yes".into());
    assert_eq!(
        place(&nodes, &none(), &p),
        Err("0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.".into())
    );
}

#[test]
fn required_node_affinity_operators() {
    let nodes = [
        node("a", 2, 4)
            .with_label("zone", "east")
            .with_label("cores", "4"),
        node("b", 2, 4)
            .with_label("zone", "west")
            .with_label("cores", "16"),
        node("c", 2, 4),
    ];
    use NodeSelectorOperator::*;
    let cases: [(NodeSelector, &[&str]); 8] = [
        (requirement("zone", In, &["west", "north"]), &["b"]),
        (requirement("zone", NotIn, &["west"]), &["a", "c"]),
        (requirement("zone", Exists, &[]), &["a", "b"]),
        (requirement("zone", DoesNotExist, &[]), &["c"]),
        (requirement("cores", Gt, &["8"]), &["b"]),
        (requirement("cores", Lt, &["8"]), &["a"]),
        (requirement("cores", Gt, &["100"]), &[]),
        // An empty term matches no node.
        (
            NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm::default()],
            },
            &[],
        ),
    ];
    for (affinity, want) in cases {
        // Which nodes pass: place once per node, each alone.
        let mut p = pod("web", 0, 0);
        p.affinity = Some(affinity.clone());
        let passing: Vec<&str> = nodes
            .iter()
            .filter(|n| schedule(std::slice::from_ref(n), &none(), &p).is_ok())
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(passing, want, "{affinity:?}");
        if want.is_empty() {
            let err = schedule(&nodes, &none(), &p).unwrap_err();
            assert_eq!(err.count(&Reason::NodeAffinity), 3);
        }
    }
    // Terms are alternatives.
    let mut p = pod("web", 0, 0);
    let mut either = requirement("zone", In, &["nowhere"]);
    either
        .node_selector_terms
        .extend(requirement("zone", DoesNotExist, &[]).node_selector_terms);
    p.affinity = Some(either);
    assert_eq!(place(&nodes, &none(), &p), Ok("c".into()));
}

#[test]
fn untolerated_taints_refuse_and_name_the_taint() {
    let nodes = [
        node("a", 2, 4).with_taint(Taint::new("dedicated", "db", TaintEffect::NoSchedule)),
        node("b", 2, 4).with_taint(Taint::new("broken", "", TaintEffect::NoExecute)),
        node("c", 2, 4).with_taint(Taint::new("dedicated", "db", TaintEffect::NoSchedule)),
    ];
    let web = pod("web", 0, 0);
    assert_eq!(
        place(&nodes, &none(), &web),
        Err(
            "0/3 nodes are available: 1 node(s) had untolerated taint {broken: }, \
             2 node(s) had untolerated taint {dedicated: db}."
                .into()
        )
    );
    let mut db = web.clone();
    db.tolerations = vec![toleration(
        "dedicated",
        TolerationOperator::Equal,
        "db",
        Some(TaintEffect::NoSchedule),
    )];
    assert_eq!(place(&nodes, &none(), &db), Ok("a".into()));
    // A toleration of another value or effect does not help.
    db.tolerations[0].value = "web".into();
    assert!(place(&nodes[..1], &none(), &db).is_err());
    db.tolerations[0] = toleration(
        "dedicated",
        TolerationOperator::Exists,
        "",
        Some(TaintEffect::NoExecute),
    );
    assert!(place(&nodes[..1], &none(), &db).is_err());
    // An empty key with Exists tolerates everything.
    db.tolerations[0] = toleration("", TolerationOperator::Exists, "", None);
    assert_eq!(place(&nodes[1..2], &none(), &db), Ok("b".into()));
}

#[test]
fn the_first_untolerated_taint_is_the_reason() {
    let n = node("a", 2, 4)
        .with_taint(Taint::new("soft", "", TaintEffect::PreferNoSchedule))
        .with_taint(Taint::new("tolerated", "", TaintEffect::NoSchedule))
        .with_taint(Taint::new("first", "1", TaintEffect::NoExecute))
        .with_taint(Taint::new("second", "2", TaintEffect::NoSchedule));
    let mut p = pod("web", 0, 0);
    p.tolerations = vec![toleration(
        "tolerated",
        TolerationOperator::Exists,
        "",
        None,
    )];
    assert_eq!(
        place(&[n], &none(), &p),
        Err("0/1 nodes are available: 1 node(s) had untolerated taint {first: 1}.".into())
    );
}

#[test]
fn cordoned_nodes_are_unschedulable_unless_tolerated() {
    let nodes = [node("a", 8, 16).cordoned(), node("b", 2, 4)];
    let web = pod("web", 0, 0);
    assert_eq!(place(&nodes, &none(), &web), Ok("b".into()));
    assert_eq!(
        place(&nodes[..1], &none(), &web),
        Err("0/1 nodes are available: 1 node(s) were unschedulable.".into())
    );
    let mut tolerant = web.clone();
    tolerant.tolerations = vec![toleration(
        UNSCHEDULABLE_TAINT_KEY,
        TolerationOperator::Exists,
        "",
        Some(TaintEffect::NoSchedule),
    )];
    assert_eq!(place(&nodes, &none(), &tolerant), Ok("a".into()));
    // The cordon written as a taint reads the same.
    let tainted = node("c", 2, 4).with_taint(Taint::new(
        UNSCHEDULABLE_TAINT_KEY,
        "",
        TaintEffect::NoSchedule,
    ));
    assert_eq!(
        place(&[tainted], &none(), &web),
        Err("0/1 nodes are available: 1 node(s) were unschedulable.".into())
    );
}

#[test]
fn each_node_counts_once_under_its_first_failing_filter() {
    // Each row fails every filter from its own onwards; it must count under that one.
    let taint = Taint::new("t", "", TaintEffect::NoSchedule);
    let port = HostPort::new(Protocol::Tcp, 80, "");
    let mut p = pod("web", 1000, 1024).with_volume_node("elsewhere");
    p.node_selector = BTreeMap::from([("role".to_string(), "web".to_string())]);
    p.host_ports = vec![port.clone()];
    let small = |name: &str| node(name, 0, 0);
    let nodes = [
        small("a").cordoned().with_taint(taint.clone()),
        small("b").with_taint(taint.clone()),
        small("c"),
        small("d").with_label("role", "web"),
        node("e", 0, 1).with_label("role", "web"),
        node("f", 1, 0).with_label("role", "web"),
        node("g", 1, 1).with_label("role", "web"),
    ];
    let port_user = PodRequest::new(owner("x")).with_requests(0, 0);
    let mut port_user = port_user;
    port_user.host_ports = vec![port];
    let assigned = BTreeMap::from([("d".to_string(), holding(&[&port_user]))]);
    let err = schedule(&nodes, &assigned, &p).unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/7 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
         1 node(s) didn't have free ports for the requested pod ports, \
         1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {t: }, \
         1 node(s) had volume node affinity conflict, 1 node(s) were unschedulable."
    );
    assert_eq!(err.nodes, 7);
    assert_eq!(err.count(&Reason::InsufficientCpu), 1);
    assert_eq!(err.count(&Reason::Unschedulable), 1);
}

#[test]
fn host_ports_conflict_by_protocol_port_and_address() {
    use Protocol::{Tcp, Udp};
    let cases = [
        (HostPort::new(Tcp, 80, ""), HostPort::new(Tcp, 80, ""), true),
        (
            HostPort::new(Tcp, 80, ""),
            HostPort::new(Tcp, 81, ""),
            false,
        ),
        (
            HostPort::new(Tcp, 80, ""),
            HostPort::new(Udp, 80, ""),
            false,
        ),
        (
            HostPort::new(Tcp, 80, "10.0.0.1"),
            HostPort::new(Tcp, 80, "10.0.0.2"),
            false,
        ),
        (
            HostPort::new(Tcp, 80, "10.0.0.1"),
            HostPort::new(Tcp, 80, "10.0.0.1"),
            true,
        ),
        (
            HostPort::new(Tcp, 80, "10.0.0.1"),
            HostPort::new(Tcp, 80, "0.0.0.0"),
            true,
        ),
        (
            HostPort::new(Tcp, 80, "::"),
            HostPort::new(Tcp, 80, "10.0.0.1"),
            true,
        ),
    ];
    for (a, b, want) in cases {
        assert_eq!(a.conflicts(&b), want, "{a:?} {b:?}");
        assert_eq!(b.conflicts(&a), want, "{b:?} {a:?}");
    }
}

#[test]
fn a_used_host_port_sends_the_pod_elsewhere() {
    let nodes = [node("a", 8, 16), node("b", 2, 4)];
    let mut proxy = pod("proxy", 100, 64);
    proxy.host_ports = vec![HostPort::new(Protocol::Tcp, 443, "")];
    let assigned = BTreeMap::from([("a".to_string(), holding(&[&proxy]))]);
    let mut other = pod("other", 100, 64);
    other.host_ports = proxy.host_ports.clone();
    assert_eq!(place(&nodes, &assigned, &other), Ok("b".into()));
    let mut s = Schedule::new(nodes.clone(), &assigned);
    assert_eq!(s.place(&other), Ok("b".into()));
    assert_eq!(
        s.place(&other).unwrap_err().to_string(),
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
    );
    // The same port over UDP still fits.
    other.host_ports = vec![HostPort::new(Protocol::Udp, 443, "")];
    assert_eq!(s.place(&other), Ok("a".into()));
}

#[test]
fn a_volume_pins_the_pod_to_its_node() {
    let nodes = [node("a", 8, 16), node("b", 2, 4), node("c", 2, 4)];
    let db = pod("db", 100, 64).with_volume_node("b");
    assert_eq!(place(&nodes, &none(), &db), Ok("b".into()));
    // The pinned node full: nowhere else will do.
    let assigned = BTreeMap::from([("b".to_string(), holding(&[&pod("x", 2000, 0)]))]);
    assert_eq!(
        place(&nodes, &assigned, &db),
        Err("0/3 nodes are available: 1 Insufficient cpu, \
             2 node(s) had volume node affinity conflict."
            .into())
    );
    // Pinned to a node that is not a candidate (dead, say).
    let gone = pod("db", 100, 64).with_volume_node("z");
    assert_eq!(
        place(&nodes, &none(), &gone),
        Err("0/3 nodes are available: 3 node(s) had volume node affinity conflict.".into())
    );
}

#[test]
fn a_volume_present_on_a_node_pins_the_pods_that_mount_it() {
    let nodes = [node("a", 8, 16), node("b", 2, 4)];
    let mut holder = Assigned::default();
    holder.volumes.insert("default/data-db-0".into());
    let assigned = BTreeMap::from([("b".to_string(), holder.clone())]);
    let db = pod("db", 100, 64).with_volume("default/data-db-0");
    assert_eq!(place(&nodes, &assigned, &db), Ok("b".into()));
    // The volume on a node that is not a candidate holds the pod back.
    let assigned = BTreeMap::from([("dead".to_string(), holder.clone())]);
    assert_eq!(
        place(&nodes, &assigned, &db),
        Err("0/2 nodes are available: 2 node(s) had volume node affinity conflict.".into())
    );
    // Two volumes on two nodes: nowhere.
    let mut other = Assigned::default();
    other.volumes.insert("default/logs".into());
    let assigned = BTreeMap::from([("a".to_string(), other), ("b".to_string(), holder)]);
    let both = db.clone().with_volume("default/logs");
    assert!(place(&nodes, &assigned, &both).is_err());
    // A pin that disagrees with the volume's node: nowhere.
    let assigned = BTreeMap::from([("b".to_string(), holding(&[&db]))]);
    assert!(place(&nodes, &assigned, &db.clone().with_volume_node("a")).is_err());
}

// ------------------------------------------------------------------------------ the batch

#[test]
fn a_round_spreads_the_replicas_of_one_owner() {
    let mut s = Schedule::new(
        [node("a", 8, 16), node("b", 8, 16), node("c", 8, 16)],
        &none(),
    );
    let web = pod("web", 100, 128);
    let placed: Vec<String> = s
        .place_all(std::iter::repeat_n(&web, 10))
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(placed, ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]);
}

#[test]
fn a_round_uses_up_capacity_and_then_explains() {
    let mut s = Schedule::new([node("a", 2, 4), node("b", 1, 4)], &none());
    let web = pod("web", 1000, 512);
    let results = s.place_all(&[web.clone(), web.clone(), web.clone(), web.clone()]);
    let shown: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(n) => n.clone(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "a",
            "b",
            "a",
            "0/2 nodes are available: 2 Insufficient cpu.",
        ]
    );
}

#[test]
fn a_round_places_a_volume_with_its_first_pod() {
    let mut s = Schedule::new([node("a", 2, 4), node("b", 2, 4)], &none());
    let first = pod("db", 100, 64).with_volume("default/shared");
    let second = pod("backup", 100, 64).with_volume("default/shared");
    assert_eq!(s.place(&first), Ok("a".into()));
    // Spreading and free capacity would say b; the volume says a.
    assert_eq!(s.place(&second), Ok("a".into()));
    // A slot kept on a node outside the round keeps its volume there.
    assert!(!s.assign("dead", &pod("cache", 0, 0).with_volume("default/cache")));
    assert!(
        s.place(&pod("cache", 0, 0).with_volume("default/cache"))
            .is_err()
    );
}

#[test]
fn assigned_owners_count_for_spreading() {
    let nodes = [node("a", 8, 16), node("b", 8, 16)];
    let web = pod("web", 100, 128);
    let mut s = Schedule::new(nodes.clone(), &none());
    assert!(s.assign("a", &web));
    assert_eq!(s.place(&web), Ok("b".into()));
    // The same through `Assigned`, the stateless way.
    let assigned = BTreeMap::from([("a".to_string(), holding(&[&web]))]);
    assert_eq!(place(&nodes, &assigned, &web), Ok("b".into()));
}

#[test]
fn a_round_agrees_with_single_placements() {
    // Placing one pod at a time with the totals rebuilt from scratch gives what the round
    // gives: the round's bookkeeping is the same as `Assigned::add`.
    let nodes: Vec<NodeInfo> = (0..5)
        .map(|i| node(&format!("n{i}"), 2 + i, 4 + i))
        .collect();
    let pods: Vec<PodRequest> = (0..30)
        .map(|i| pod(&format!("o{}", i % 4), 100 + 17 * i, 64 + 11 * i))
        .collect();
    let mut s = Schedule::new(nodes.clone(), &none());
    let round = s.place_all(&pods);
    let mut assigned = BTreeMap::<String, Assigned>::new();
    for (p, r) in pods.iter().zip(&round) {
        let single = schedule(&nodes, &assigned, p);
        assert_eq!(&single, r);
        if let Ok(n) = single {
            assigned.entry(n).or_default().add(p);
        }
    }
    assert!(round.iter().all(Result::is_ok));
}

#[test]
fn an_owner_whose_constraints_change_is_judged_again() {
    let nodes = [
        node("a", 2, 4).with_label("zone", "1"),
        node("b", 2, 4).with_label("zone", "2"),
    ];
    let mut s = Schedule::new(nodes, &none());
    let mut p = pod("web", 0, 0);
    p.node_selector = BTreeMap::from([("zone".to_string(), "2".to_string())]);
    assert_eq!(s.place(&p), Ok("b".into()));
    p.node_selector.insert("zone".into(), "1".into());
    assert_eq!(s.place(&p), Ok("a".into()));
    // Without constraints it is judged on the defaults again.
    assert_eq!(s.place(&pod("web", 0, 0)), Ok("a".into()));

    // Tolerations count in the judgement too.
    let tainted = node("t", 2, 4).with_taint(Taint::new("gpu", "", TaintEffect::NoSchedule));
    let mut s = Schedule::new([tainted], &none());
    let mut p = pod("web", 0, 0);
    p.tolerations = vec![toleration("gpu", TolerationOperator::Exists, "", None)];
    assert_eq!(s.place(&p), Ok("t".into()));
    p.tolerations = vec![toleration("other", TolerationOperator::Exists, "", None)];
    assert!(s.place(&p).is_err());
}

#[test]
fn duplicate_nodes_count_once() {
    let nodes = [node("a", 1, 1), node("a", 8, 16)];
    assert_eq!(
        place(&nodes, &none(), &pod("web", 2000, 0)),
        Err("0/1 nodes are available: 1 Insufficient cpu.".into())
    );
}

// ------------------------------------------------------------------------------ the message

#[test]
fn the_message_counts_reasons_sorted_by_text() {
    let nodes = [
        node("a", 8, 1),
        node("b", 8, 1),
        node("c", 8, 16).cordoned(),
    ];
    assert_eq!(
        place(&nodes, &none(), &pod("web", 100, 2048)),
        Err("0/3 nodes are available: 2 Insufficient memory, 1 node(s) were unschedulable.".into())
    );
    assert_eq!(
        place(&[], &none(), &pod("web", 0, 0)),
        Err("no nodes available to schedule pods".into())
    );
    let e = Unschedulable::from_reasons(
        4,
        [
            Reason::Unschedulable,
            Reason::InsufficientCpu,
            Reason::HostPorts,
            Reason::InsufficientCpu,
        ],
    );
    assert_eq!(
        e.reasons,
        [
            (Reason::InsufficientCpu, 2),
            (Reason::HostPorts, 1),
            (Reason::Unschedulable, 1)
        ]
    );
}

// ------------------------------------------------------------------------------ inputs

#[test]
fn requests_from_a_pod_spec() {
    let s = spec(json!({
        "containers": [
            {"name": "a", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            // A limit without a request requests the limit.
            {"name": "b", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            // Nothing: counts 0, and Kubernetes' defaults when scoring.
            {"name": "c", "image": "i",
             "ports": [{"containerPort": 80, "hostPort": 8080},
                       {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "10.0.0.1"},
                       {"containerPort": 9000}]}
        ],
        "initContainers": [
            // Init containers run alone: the larger of their largest and the sum counts.
            {"name": "i", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "1Mi"}}}
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}},
            {"name": "tmp", "emptyDir": {}}
        ],
        "nodeSelector": {"disk": "ssd"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]}}},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}]
    }));
    let p = PodRequest::from_spec(OwnerKey::new("prod", "StatefulSet", "db"), &s);
    assert_eq!(p.cpu_millis, 2000);
    assert_eq!(p.memory_bytes, (64 << 20) + GI);
    assert_eq!(p.score_cpu_millis, 2000);
    assert_eq!(
        p.score_memory_bytes,
        (64 << 20) + GI + DEFAULT_SCORE_MEMORY_BYTES
    );
    assert_eq!(
        p.host_ports,
        [
            HostPort::new(Protocol::Tcp, 8080, ""),
            HostPort::new(Protocol::Udp, 53, "10.0.0.1")
        ]
    );
    assert_eq!(p.volumes, ["prod/data-db-0"]);
    assert_eq!(p.node_selector.get("disk").map(String::as_str), Some("ssd"));
    assert_eq!(
        p.affinity,
        Some(requirement("zone", NodeSelectorOperator::Exists, &[]))
    );
    assert_eq!(p.tolerations.len(), 1);
    assert_eq!(p.owner, OwnerKey::new("prod", "StatefulSet", "db"));

    // Without init containers and with no requests at all.
    let bare = PodRequest::from_spec(
        owner("x"),
        &spec(json!({"containers": [
        {"name": "a", "image": "i"}, {"name": "b", "image": "i"}]})),
    );
    assert_eq!((bare.cpu_millis, bare.memory_bytes), (0, 0));
    assert_eq!(bare.score_cpu_millis, 2 * DEFAULT_SCORE_CPU_MILLIS);
    assert!(!bare.has_node_constraints());
}

#[test]
fn nodes_from_records_and_node_objects() {
    let record = crate::observed::NodeRecord {
        name: "pi".into(),
        cpus: 4,
        memory_bytes: 8 * GI,
        ..Default::default()
    };
    let n = NodeInfo::from_record(&record).with_node_object(&json!({
        "metadata": {"name": "pi", "labels": {"zone": "attic", "bad": 3}},
        "spec": {
            "unschedulable": true,
            "taints": [
                {"key": "slow", "value": "yes", "effect": "PreferNoSchedule"},
                {"key": "gpu", "effect": "NoSchedule"},
                {"key": "odd", "effect": "Sometimes"},
                {"value": "no-key", "effect": "NoSchedule"},
                "not an object"
            ]
        }
    }));
    assert_eq!(n.name, "pi");
    assert_eq!((n.cpu_millis, n.memory_bytes), (4000, 8 * GI));
    assert_eq!(
        n.labels.get("kubernetes.io/hostname").map(String::as_str),
        Some("pi")
    );
    assert_eq!(n.labels.get("zone").map(String::as_str), Some("attic"));
    assert!(!n.labels.contains_key("bad"));
    assert!(n.unschedulable);
    assert_eq!(
        n.taints,
        [
            Taint::new("slow", "yes", TaintEffect::PreferNoSchedule),
            Taint::new("gpu", "", TaintEffect::NoSchedule)
        ]
    );
    // An object without a spec changes nothing.
    let plain = NodeInfo::from_record(&record).with_node_object(&json!({"metadata": {}}));
    assert!(!plain.unschedulable && plain.taints.is_empty());
}

#[test]
fn owner_of_a_slot() {
    let slot = shoal_protocol::cluster::Slot {
        namespace: "default".into(),
        pod: "web-abc-0".into(),
        owner_kind: "ReplicaSet".into(),
        owner_name: "web-abc".into(),
        index: 0,
        revision: "abc".into(),
        node: String::new(),
        unschedulable: None,
    };
    assert_eq!(
        OwnerKey::of_slot(&slot),
        OwnerKey::new("default", "ReplicaSet", "web-abc")
    );
}

/// `spread_from` moves one pod of an owner only to a node holding two fewer, and never to a
/// node that fails a filter.
#[test]
fn spreading_moves_a_pod_only_toward_an_even_spread() {
    let owner = OwnerKey::new("default", "ReplicaSet", "web");
    let pod = PodRequest::new(owner.clone());
    let nodes = || {
        vec![
            NodeInfo::new("a", 4000, 8 << 30),
            NodeInfo::new("b", 4000, 8 << 30),
            NodeInfo::new("c", 4000, 8 << 30).cordoned(),
        ]
    };
    // (pods on a, b, c; move from; where to)
    let table: Vec<([u32; 3], &str, Option<&str>)> = vec![
        ([4, 0, 0], "a", Some("b")),
        ([3, 1, 0], "a", Some("b")),
        ([2, 1, 0], "a", None),
        ([0, 3, 0], "b", Some("a")),
        // The cordoned node is no target, even empty (but its pods may leave it); a node
        // that is no candidate is no source.
        ([4, 3, 0], "a", None),
        ([1, 1, 4], "c", Some("a")),
        ([4, 0, 0], "gone", None),
    ];
    for (on, from, want) in table {
        let mut schedule = Schedule::new(nodes(), &BTreeMap::new());
        for (name, n) in ["a", "b", "c"].iter().zip(on) {
            for _ in 0..n {
                schedule.assign(name, &pod);
            }
        }
        let got = schedule.spread_from(from, &pod);
        assert_eq!(got.as_deref(), want, "{on:?} from {from}");
        if let Some(to) = got {
            let counts = schedule.owner_counts(&owner);
            assert_eq!(
                counts[to.as_str()],
                on[["a", "b", "c"].iter().position(|n| *n == to).unwrap()] + 1
            );
        }
    }
}
