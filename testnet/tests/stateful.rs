//! StatefulSets with real `shoald` processes and the real Docker engine: an ordinal never runs
//! twice, not even across a partition (the node cut off from a majority stops its StatefulSet
//! pods before the majority starts them elsewhere), pods get stable names, and OrderedReady
//! starts them in order and removes them in reverse.
//!
//! All nodes of a testnet share one Docker engine, so the engine sees every copy of a pod that
//! any node runs: each container carries `shoal.slot=<namespace>/<pod>` and `shoal.node`, and
//! the tests count the running ones of each slot every 100 ms.
//!
//! Without a Docker engine (and, for the partition test, without nftables) these tests say so
//! and pass, except where `CI` is set: there they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_node::agent::spec::labels;
use shoal_testnet::fixture::apply;
use shoal_testnet::image::{ECHO_IMAGE, ECHO_PORT};
use shoal_testnet::{Node, NodeOptions, SingleNode, Testnet, listing, partition, wait_until};

/// How often the engine is asked which copies run.
const POLL: Duration = Duration::from_millis(100);
const ORDINALS: [&str; 3] = ["db-0", "db-1", "db-2"];

/// A StatefulSet `db` of the echo image with a readiness probe that passes `ready_delay_s`
/// seconds after the container starts.
fn db_manifest(replicas: u32, policy: &str, ready_delay_s: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: {replicas}
  podManagementPolicy: {policy}
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: {ECHO_IMAGE}
        ports: [{{containerPort: {ECHO_PORT}, name: http}}]
        readinessProbe:
          httpGet: {{path: /ready, port: http}}
          initialDelaySeconds: {ready_delay_s}
          periodSeconds: 1
          failureThreshold: 1
        resources:
          requests: {{cpu: 50m, memory: 32Mi}}
"#
    )
}

/// What one node's API says about a pod of `db`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodView {
    /// `spec.nodeName`, empty while unassigned.
    node: String,
    /// `status.conditions` Ready is True.
    ready: bool,
    /// The first container's id (without `docker://`), empty when none is reported.
    container: String,
    /// The host port that container port 8080 is published on.
    host_port: Option<u16>,
}

/// The pods of `app=db` as `node`'s API lists them, by name.
fn db_pods(node: &Node) -> anyhow::Result<BTreeMap<String, PodView>> {
    Ok(listing::pods(node, "default", "db")?
        .into_iter()
        .map(|p| {
            let view = PodView {
                node: p.node,
                ready: p.ready,
                container: p.container,
                host_port: p.host.map(|(_, port)| port),
            };
            (p.name, view)
        })
        .collect())
}

fn pods_summary(pods: &BTreeMap<String, PodView>) -> String {
    if pods.is_empty() {
        return "none".into();
    }
    pods.iter()
        .map(|(name, p)| {
            let node = if p.node.is_empty() { "-" } else { &p.node };
            let ready = if p.ready { "Ready" } else { "NotReady" };
            format!("{name} {ready} on {node} ({})", short(&p.container))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A running container of a pod: its id and the node (label `shoal.node`) whose agent made it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RunningContainer {
    id: String,
    node: String,
}

/// The running containers of a cluster's pods, by slot (`namespace/pod`).
type Copies = BTreeMap<String, Vec<RunningContainer>>;

fn slot(pod: &str) -> String {
    format!("default/{pod}")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Asks the engine (which every node of a testnet shares) for the running containers labelled
/// with the cluster id.
fn running(cluster_id: &str) -> anyhow::Result<Copies> {
    let out = Command::new("docker")
        .args(["ps", "--no-trunc", "--filter", "status=running", "--filter"])
        .arg(format!("label={}={cluster_id}", labels::CLUSTER))
        .arg("--format")
        .arg(format!(
            "{{{{.ID}}}}\t{{{{.Label \"{}\"}}}}\t{{{{.Label \"{}\"}}}}",
            labels::SLOT,
            labels::NODE
        ))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut copies = Copies::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split('\t');
        let (Some(id), Some(slot), Some(node)) = (f.next(), f.next(), f.next()) else {
            anyhow::bail!("unexpected docker ps line {line:?}");
        };
        copies
            .entry(slot.to_string())
            .or_default()
            .push(RunningContainer {
                id: id.to_string(),
                node: node.to_string(),
            });
    }
    for v in copies.values_mut() {
        v.sort();
    }
    Ok(copies)
}

fn copies_summary(copies: &Copies) -> String {
    if copies.is_empty() {
        return "none".into();
    }
    copies
        .iter()
        .map(|(slot, cs)| {
            let list: Vec<String> = cs
                .iter()
                .map(|c| format!("{} on {}", short(&c.id), c.node))
                .collect();
            format!("{slot}: [{}]", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn copies_of<'a>(copies: &'a Copies, pod: &str) -> &'a [RunningContainer] {
    copies
        .get(&slot(pod))
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// What a [`Watch`] saw.
#[derive(Debug, Default)]
struct WatchLog {
    polls: usize,
    failed_polls: usize,
    first_errors: Vec<String>,
    /// Every change of the running copies: when (since the watch started), and what ran.
    changes: Vec<(Duration, Copies)>,
    /// The most copies of each slot seen running at one poll.
    max: BTreeMap<String, usize>,
    /// Polls at which a slot had more than one running copy.
    doubles: Vec<(Duration, String, Vec<RunningContainer>)>,
}

impl WatchLog {
    fn record(&mut self, at: Duration, seen: anyhow::Result<Copies>) {
        self.polls += 1;
        let copies = match seen {
            Ok(c) => c,
            Err(e) => {
                self.failed_polls += 1;
                if self.first_errors.len() < 5 {
                    self.first_errors.push(format!("+{at:.3?}: {e:#}"));
                }
                return;
            }
        };
        for (slot, cs) in &copies {
            let max = self.max.entry(slot.clone()).or_default();
            *max = (*max).max(cs.len());
            if cs.len() > 1 {
                self.doubles.push((at, slot.clone(), cs.clone()));
            }
        }
        if self.changes.last().is_none_or(|(_, last)| *last != copies) {
            self.changes.push((at, copies));
        }
    }

    fn report(&self) -> String {
        let mut out = format!(
            "{} polls of the engine ({} failed), most running copies per slot: {:?}\n",
            self.polls, self.failed_polls, self.max
        );
        for e in &self.first_errors {
            out.push_str(&format!("  poll error {e}\n"));
        }
        for (at, slot, cs) in self.doubles.iter().take(20) {
            let list: Vec<String> = cs
                .iter()
                .map(|c| format!("{} on {}", short(&c.id), c.node))
                .collect();
            out.push_str(&format!(
                "  TWO COPIES at +{at:.3?}: {slot} runs {} times: {}\n",
                cs.len(),
                list.join(", ")
            ));
        }
        out.push_str("running copies over time:\n");
        for (at, copies) in &self.changes {
            out.push_str(&format!("  +{at:.3?}  {}\n", copies_summary(copies)));
        }
        out
    }
}

/// Polls the engine every [`POLL`] on a thread of its own, from `start` until dropped or
/// finished, recording every running copy of every slot of a cluster.
struct Watch {
    t0: Instant,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<WatchLog>>,
    thread: Option<JoinHandle<()>>,
    /// What the test did, and when (since `t0`), to read the copies against.
    events: Vec<(Duration, String)>,
}

impl Watch {
    fn start(cluster_id: &str) -> Watch {
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(WatchLog::default()));
        let (id, flag, shared) = (cluster_id.to_string(), stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let at = Instant::now();
                let seen = running(&id);
                // A std Mutex: the test thread only reads the log for reports, briefly.
                shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(at - t0, seen);
                std::thread::sleep((at + POLL).saturating_duration_since(Instant::now()));
            }
        });
        Watch {
            t0,
            stop,
            log,
            thread: Some(thread),
            events: Vec::new(),
        }
    }

    fn event(&mut self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("+{:.3?} {what}", self.t0.elapsed());
        self.events.push((self.t0.elapsed(), what));
    }

    /// Waits until `d` has passed since `t0` while the engine is polled.
    fn observe_until(&self, d: Duration) {
        std::thread::sleep(d.saturating_sub(self.t0.elapsed()));
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn with_log<T>(&self, f: impl FnOnce(&WatchLog) -> T) -> T {
        f(&self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The test's events and what the engine ran, for failure messages.
    fn report(&self) -> String {
        let mut out = String::from("test events:\n");
        for (at, what) in &self.events {
            out.push_str(&format!("  +{at:.3?}  {what}\n"));
        }
        out.push_str(&self.with_log(WatchLog::report));
        out
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Whether the test may make partitions here; without nftables it is skipped, except in CI.
fn partitions_available() -> bool {
    match partition::available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and nft is unusable: {why}"
            );
            eprintln!("skipping: nftables is not usable here: {why}");
            false
        }
    }
}

/// 3 nodes, StatefulSet `db` of 3; the node running `db-1` is cut off from the other two. It
/// must stop its copy (the nodes it cannot hear are a majority) before the majority starts
/// `db-1` on one of theirs: at no poll of the engine, from the partition to 10 s after the heal,
/// does any ordinal run twice. After the heal every node agrees where each ordinal runs, and
/// each runs exactly once.
#[test]
fn a_statefulset_never_runs_two_copies_of_an_ordinal_across_a_partition() {
    if !shoal_testnet::docker_ready() || !partitions_available() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // The nodes die before their containers are removed, so that no agent starts them again.
    let mut t = Testnet::up(3, dir.path()).unwrap();
    let cluster_id = t.cluster_id().to_string();
    let cluster = &mut t.cluster;
    apply(&cluster.nodes()[0], &db_manifest(3, "Parallel", 0));

    // db-0, db-1 and db-2 ready, each running once, where the API says.
    let before = wait_until(
        Duration::from_secs(90),
        "db-0, db-1, db-2 ready and running once each",
        || {
            let pods = db_pods(&cluster.nodes()[0])?;
            let copies = running(&cluster_id)?;
            let placed = pods.len() == 3
                && ORDINALS.iter().all(|name| {
                    pods.get(*name).is_some_and(|p| {
                        p.ready
                            && copies_of(&copies, name)
                                .iter()
                                .map(|c| &c.node)
                                .eq([&p.node])
                    })
                });
            if placed {
                Ok(Some(pods))
            } else {
                anyhow::bail!(
                    "pods: {}; running: {}",
                    pods_summary(&pods),
                    copies_summary(&copies)
                )
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(60)));
    eprintln!(
        "ready after {:?}: {}",
        started.elapsed(),
        pods_summary(&before)
    );

    let minority = before["db-1"].node.clone();
    let majority: Vec<String> = cluster
        .names()
        .into_iter()
        .filter(|n| *n != minority)
        .collect();
    let mut watch = Watch::start(&cluster_id);
    cluster
        .partition(&[vec![minority.clone()], majority.clone()])
        .unwrap();
    watch.event(format!("partition [{minority}] | {majority:?}"));

    // The majority moves db-1 onto one of its nodes.
    let observer = cluster.node(&majority[0]).unwrap();
    let moved = wait_until(
        Duration::from_secs(60),
        &format!(
            "db-1 ready on one of {majority:?}, as {} sees it",
            majority[0]
        ),
        || {
            let pods = db_pods(observer)?;
            match pods.get("db-1") {
                Some(p) if p.ready && majority.contains(&p.node) => Ok(Some(p.clone())),
                _ => anyhow::bail!("{} lists {}", majority[0], pods_summary(&pods)),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", watch.report(), cluster.log_tails(60)));
    watch.event(format!(
        "{} reports db-1 ready on {} ({})",
        majority[0],
        moved.node,
        short(&moved.container)
    ));
    // The cut-off node has stopped its copy: it cannot hear a majority.
    let now = running(&cluster_id).unwrap();
    let left: Vec<&RunningContainer> = copies_of(&now, "db-1")
        .iter()
        .filter(|c| c.node == minority)
        .collect();
    assert!(
        left.is_empty(),
        "{minority}, cut off from {majority:?}, still runs db-1: {left:?}\nrunning: {}\n{}\n{}",
        copies_summary(&now),
        watch.report(),
        cluster.log_tails(60)
    );

    // A few seconds more of the partition, then the heal and 10 s more of polling.
    let heal_at = watch.t0.elapsed() + Duration::from_secs(5);
    watch.observe_until(heal_at);
    cluster.heal().unwrap();
    watch.event("heal");
    let healed = watch.t0.elapsed();
    let names = cluster.names();
    let converged = wait_until(
        Duration::from_secs(60),
        "every node to agree on where db-0..2 run, each running once",
        || {
            let copies = running(&cluster_id)?;
            let mut views = Vec::new();
            for name in &names {
                views.push((name, db_pods(cluster.node(name)?)?));
            }
            let once = ORDINALS.iter().all(|p| copies_of(&copies, p).len() == 1)
                && copies.len() == ORDINALS.len();
            let agree = views.iter().all(|(_, pods)| {
                pods.len() == 3
                    && ORDINALS.iter().all(|p| {
                        let on = copies_of(&copies, p).first().map(|c| &c.node);
                        pods.get(*p).is_some_and(|v| v.ready && Some(&v.node) == on)
                    })
            });
            if once && agree {
                Ok(Some(copies))
            } else {
                let views: Vec<String> = views
                    .iter()
                    .map(|(n, pods)| format!("{n} lists {}", pods_summary(pods)))
                    .collect();
                anyhow::bail!("running: {}\n{}", copies_summary(&copies), views.join("\n"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", watch.report(), cluster.log_tails(60)));
    watch.event(format!("converged: {}", copies_summary(&converged)));
    watch.observe_until(healed + Duration::from_secs(10));
    watch.event("end of polling");
    watch.finish();

    // Never two copies of an ordinal, at any poll.
    let (polls, failed, doubles) = watch.with_log(|l| (l.polls, l.failed_polls, l.doubles.len()));
    assert_eq!(
        doubles,
        0,
        "an ordinal ran twice at once\n{}\n{}",
        watch.report(),
        cluster.log_tails(80)
    );
    assert!(
        polls >= 50 && failed * 10 <= polls,
        "too few answered polls of the engine to tell\n{}",
        watch.report()
    );

    // Settled: each ordinal runs once; db-1 stays where the majority put it; every node says so.
    let end = running(&cluster_id).unwrap();
    assert_eq!(
        end,
        converged,
        "the running copies changed after converging\n{}",
        watch.report()
    );
    let db1 = &copies_of(&end, "db-1")[0];
    assert!(
        majority.contains(&db1.node) && db1.node == moved.node,
        "db-1 runs on {}, not on {} where the majority put it\n{}",
        db1.node,
        moved.node,
        watch.report()
    );
    for name in &names {
        let pods = db_pods(cluster.node(name).unwrap()).unwrap();
        assert_eq!(
            pods.get("db-1").map(|p| p.node.as_str()),
            Some(db1.node.as_str()),
            "{name} lists {}",
            pods_summary(&pods)
        );
    }
    eprintln!("{}", watch.report());
    eprintln!("done in {:?}", started.elapsed());
}

/// One node's pods and running containers at one moment: the engine asked before and after
/// the API, so that an order between the two is known.
struct Sample {
    at: Duration,
    before: Copies,
    pods: BTreeMap<String, PodView>,
    after: Copies,
}

fn sample(node: &Node, cluster_id: &str, t0: Instant) -> Sample {
    let at = t0.elapsed();
    let before = running(cluster_id).unwrap();
    let pods = db_pods(node).unwrap_or_else(|e| panic!("{e:#}\n{}", node.log()));
    let after = running(cluster_id).unwrap();
    Sample {
        at,
        before,
        pods,
        after,
    }
}

/// Up to 15 of `lines`, and how many more there are.
fn first_of(lines: &[String]) -> String {
    let mut out = lines
        .iter()
        .take(15)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > 15 {
        out.push_str(&format!("\n... and {} more", lines.len() - 15));
    }
    out
}

/// The last 80 lines of the node's log.
fn log_tail(node: &Node) -> String {
    let log = node.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// A timeline of what changed between samples, for failure messages.
#[derive(Default)]
struct Timeline {
    lines: Vec<String>,
    last: String,
}

impl Timeline {
    fn add(&mut self, s: &Sample) {
        let now = format!(
            "pods: {} | running: {}",
            pods_summary(&s.pods),
            copies_summary(&s.after)
        );
        if now != self.last {
            self.lines.push(format!("  +{:.3?}  {now}", s.at));
            self.last = now;
        }
    }

    fn note(&mut self, at: Duration, what: &str) {
        self.lines.push(format!("  +{at:.3?}  == {what}"));
    }

    fn report(&self) -> String {
        self.lines.join("\n")
    }
}

/// A plain HTTP/1.0 GET on the node's loopback address: the status code and the body.
fn http_get(ip: &str, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect((ip, port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// One node, StatefulSet `db` of 3 with the default OrderedReady and pods that become ready
/// 2 s after they start. Polled every 100 ms: `db-(k+1)` never runs, and is never Ready,
/// before `db-k` has been seen Ready; the pods are `db-0..2` and each knows its name. Scaled to
/// 1: `db-2` is gone before `db-1` goes, and `db-0` keeps its container.
#[test]
fn statefulset_pods_get_stable_names_and_ordered_ready_starts_them_in_order() {
    if !shoal_testnet::docker_ready() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // The node dies (and removes its containers) before the cleanup runs.
    let s = SingleNode::start(NodeOptions::new("n1", &dir.path().join("n1"))).unwrap();
    let cluster_id = s.cleanup.cluster_id().to_string();
    let node = &s.node;
    let t0 = Instant::now();
    let mut timeline = Timeline::default();
    apply(node, &db_manifest(3, "OrderedReady", 2));
    timeline.note(t0.elapsed(), "applied db with 3 replicas, OrderedReady");

    // Scale-up, in order: a pod runs only once its predecessor has been seen Ready.
    let mut first_ready: BTreeMap<String, Duration> = BTreeMap::new();
    let mut violations: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let last = loop {
        let tick = Instant::now();
        let smp = sample(node, &cluster_id, t0);
        timeline.add(&smp);
        for (name, p) in &smp.pods {
            if p.ready {
                first_ready.entry(name.clone()).or_insert(smp.at);
            }
        }
        for k in 0..2 {
            let (pred, next) = (ORDINALS[k], ORDINALS[k + 1]);
            // Seen Ready at this sample's API read or before: the engine was asked earlier.
            if first_ready.contains_key(pred) {
                continue;
            }
            let runs = copies_of(&smp.before, next);
            if !runs.is_empty() {
                violations.push(format!(
                    "+{:.3?}: {next} runs ({}) while {pred} has not been Ready (the API lists: {})",
                    smp.at,
                    short(&runs[0].id),
                    pods_summary(&smp.pods)
                ));
            }
            if smp.pods.get(next).is_some_and(|p| p.ready) {
                violations.push(format!(
                    "+{:.3?}: {next} is Ready while {pred} has not been Ready (the API lists: {})",
                    smp.at,
                    pods_summary(&smp.pods)
                ));
            }
        }
        let done = smp.pods.len() == 3
            && ORDINALS.iter().all(|p| {
                smp.pods.get(*p).is_some_and(|v| v.ready) && copies_of(&smp.after, p).len() == 1
            });
        if done {
            break smp;
        }
        assert!(
            Instant::now() < deadline,
            "db-0..2 not all ready and running within 90 s\nviolations:\n{}\n{}\n{}",
            first_of(&violations),
            timeline.report(),
            log_tail(node)
        );
        std::thread::sleep((tick + POLL).saturating_duration_since(Instant::now()));
    };
    timeline.note(t0.elapsed(), "db-0..2 ready");
    assert!(
        violations.is_empty(),
        "OrderedReady broken:\n{}\ntimeline:\n{}\n{}",
        first_of(&violations),
        timeline.report(),
        log_tail(node)
    );
    let order: Vec<Duration> = ORDINALS.iter().map(|p| first_ready[*p]).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "first seen Ready: {first_ready:?}\n{}",
        timeline.report()
    );
    eprintln!(
        "scaled up in order after {:?}: {first_ready:?}",
        t0.elapsed()
    );

    // Stable names: exactly db-0..2, each container knows its pod's name.
    let listed: BTreeSet<&str> = last.pods.keys().map(String::as_str).collect();
    assert_eq!(
        listed,
        BTreeSet::from(ORDINALS),
        "{}",
        pods_summary(&last.pods)
    );
    for name in ORDINALS {
        let p = &last.pods[name];
        assert_eq!(p.node, "n1", "{name}: {}", pods_summary(&last.pods));
        assert_eq!(
            p.container,
            copies_of(&last.after, name)[0].id,
            "{name}'s reported container is the running one"
        );
        let port = p
            .host_port
            .unwrap_or_else(|| panic!("{name} reports no host port for {ECHO_PORT}: {p:?}"));
        let (code, body) = http_get(&node.opts.ip, port, "/").unwrap();
        assert_eq!(code, 200, "{name}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["pod"], name, "{name} answers {body}");
    }

    // Scale-down to 1: reverse order, db-0 untouched.
    let db0 = copies_of(&last.after, "db-0")[0].id.clone();
    node.cli(&["scale", "statefulset", "db", "--replicas", "1"])
        .unwrap()
        .success()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tail(node)));
    timeline.note(t0.elapsed(), "scaled to 1");
    let scaled = Instant::now();
    let mut gone: BTreeMap<&str, Duration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tick = Instant::now();
        let smp = sample(node, &cluster_id, t0);
        timeline.add(&smp);
        for copies in [&smp.before, &smp.after] {
            let ids: Vec<&str> = copies_of(copies, "db-0")
                .iter()
                .map(|c| c.id.as_str())
                .collect();
            if ids != [db0.as_str()] {
                violations.push(format!(
                    "+{:.3?}: db-0 runs {ids:?}, not only its container {}",
                    smp.at,
                    short(&db0)
                ));
            }
        }
        if smp.pods.get("db-0").map(|p| p.container.as_str()) != Some(db0.as_str()) {
            violations.push(format!(
                "+{:.3?}: the API lists db-0 as {:?}, not with container {}",
                smp.at,
                smp.pods.get("db-0"),
                short(&db0)
            ));
        }
        for name in ["db-1", "db-2"] {
            if copies_of(&smp.after, name).is_empty() && !smp.pods.contains_key(name) {
                gone.entry(name).or_insert(smp.at);
            }
        }
        // db-1 goes only once db-2 is completely gone: neither its container stopped (engine,
        // asked first) nor its pod removed (API) while db-2 still runs (engine, asked after).
        let db2_runs = copies_of(&smp.after, "db-2");
        if !db2_runs.is_empty() {
            if copies_of(&smp.before, "db-1").is_empty() {
                violations.push(format!(
                    "+{:.3?}: db-1's container stopped while db-2 still runs ({})",
                    smp.at,
                    short(&db2_runs[0].id)
                ));
            }
            if !smp.pods.contains_key("db-1") {
                violations.push(format!(
                    "+{:.3?}: db-1's pod is removed while db-2 still runs ({})",
                    smp.at,
                    short(&db2_runs[0].id)
                ));
            }
        }
        let done = smp.pods.keys().eq(["db-0"]) && smp.after.keys().eq([&slot("db-0")]);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "db-1 and db-2 not gone within 60 s of the scale to 1\nviolations:\n{}\n{}\n{}",
            first_of(&violations),
            timeline.report(),
            log_tail(node)
        );
        std::thread::sleep((tick + POLL).saturating_duration_since(Instant::now()));
    }
    timeline.note(t0.elapsed(), "only db-0 left");
    assert!(
        violations.is_empty(),
        "scale-down broke the order or touched db-0:\n{}\ntimeline:\n{}\n{}",
        first_of(&violations),
        timeline.report(),
        log_tail(node)
    );
    assert!(
        gone["db-2"] <= gone["db-1"],
        "gone: {gone:?}\n{}",
        timeline.report()
    );
    eprintln!(
        "scaled down in {:?} (gone: {gone:?}); test took {:?}\ntimeline:\n{}",
        scaled.elapsed(),
        started.elapsed(),
        timeline.report()
    );
}
