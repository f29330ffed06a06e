//! Scheduler throughput: placements per second on one core.
//!
//! One iteration builds a [`Schedule`] over 1,000 nodes and places 10,000 pods through it:
//! 100 Deployments of 100 replicas, each with CPU and memory requests. A tenth of the nodes
//! are tainted, a tenth of the Deployments tolerate that taint, and a fifth select a zone,
//! so the label and taint filters do real work. Criterion reports the pods placed per
//! second ("elements").
//!
//! Run: `cargo bench -p shoal-node --bench scheduler -- --warm-up-time 1 --measurement-time 5`

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use shoal_node::scheduler::{NodeInfo, OwnerKey, PodRequest, Schedule, Taint};
use shoal_protocol::kinds::{TaintEffect, Toleration, TolerationOperator};

const NODES: usize = 1_000;
const DEPLOYMENTS: usize = 100;
const REPLICAS: usize = 100;

/// Deterministic pseudo-random numbers (xorshift), so every run measures the same input.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn nodes(rng: &mut Rng) -> Vec<NodeInfo> {
    (0..NODES)
        .map(|i| {
            let cpus = 4 + rng.below(13); // 4 to 16
            let gib = 8 << rng.below(4); // 8 to 64 GiB
            let mut n = NodeInfo::new(format!("node-{i:04}"), cpus * 1000, gib << 30)
                .with_label("kubernetes.io/hostname", &format!("node-{i:04}"))
                .with_label("zone", &format!("zone-{}", i % 4));
            if i % 10 == 0 {
                n = n.with_taint(Taint::new("dedicated", "batch", TaintEffect::NoSchedule));
            }
            n
        })
        .collect()
}

/// The replicas of every Deployment, Deployment after Deployment, as a controller's round
/// would submit them.
fn pods(rng: &mut Rng) -> Vec<PodRequest> {
    let mut out = Vec::with_capacity(DEPLOYMENTS * REPLICAS);
    for d in 0..DEPLOYMENTS {
        let cpu = 50 + 50 * rng.below(10); // 50m to 500m
        let memory = (64 + 64 * rng.below(8)) << 20; // 64Mi to 512Mi
        let mut pod = PodRequest::new(OwnerKey::new("default", "ReplicaSet", format!("app-{d}")))
            .with_requests(cpu, memory);
        if d % 10 == 0 {
            pod.tolerations = vec![Toleration {
                key: "dedicated".into(),
                operator: TolerationOperator::Equal,
                value: "batch".into(),
                effect: Some(TaintEffect::NoSchedule),
                toleration_seconds: None,
            }];
        }
        if d % 5 == 1 {
            pod.node_selector = BTreeMap::from([("zone".to_string(), format!("zone-{}", d % 4))]);
        }
        out.extend(std::iter::repeat_n(pod, REPLICAS));
    }
    out
}

fn placements(c: &mut Criterion) {
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let nodes = nodes(&mut rng);
    let pods = pods(&mut rng);
    let assigned = BTreeMap::new();

    // Every pod must fit, or the benchmark would measure explanations instead.
    let mut check = Schedule::new(nodes.clone(), &assigned);
    let failed = check.place_all(&pods).iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "the benchmark's cluster must hold every pod");

    let mut group = c.benchmark_group("scheduler");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(pods.len() as u64));
    group.bench_function("place_10k_pods_on_1k_nodes", |b| {
        b.iter(|| {
            let mut s = Schedule::new(nodes.iter().cloned(), &assigned);
            black_box(s.place_all(black_box(&pods)))
        })
    });
    group.finish();
}

criterion_group!(benches, placements);
criterion_main!(benches);
