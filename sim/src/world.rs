//! One seed's run: the nodes, the network, the plan played step by step in virtual time, and
//! the invariants checked as it goes ([`crate::check`]).
//!
//! The run has four phases: the cluster forms and the workloads are applied; faults happen as
//! the plan says; at `heal_at` every fault ends (partitions heal, links are clean, engines
//! answer, crashed nodes restart); then the liveness invariants must come to hold within
//! [`SETTLE`], and, once they hold, nothing may change in the document or the leases for
//! [`QUIET`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_protocol::Resource;
use tokio::time::Instant;

use crate::check::{self, Acks};
use crate::net::{LinkFaults, Net};
use crate::node::SimNode;
use crate::plan::{self, Event, Plan, Write};
use crate::rng::Rng;

/// The step of the simulation: faults happen and safety is checked at this grain.
pub const STEP: Duration = Duration::from_millis(100);
/// How long after the heal the liveness invariants may take to hold.
pub const SETTLE: Duration = Duration::from_secs(90);
/// How long nothing may change once the document has stopped changing.
pub const QUIET: Duration = Duration::from_secs(15);
/// How long the document must stay unchanged to count as having stopped changing.
const QUIET_PROBE: Duration = Duration::from_secs(5);

/// What a passing run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub seed: u64,
    pub nodes: usize,
    pub events: usize,
    /// Simulated time of the whole run.
    pub simulated: Duration,
    /// From the heal until the liveness invariants held.
    pub settled_after: Duration,
    pub messages: u64,
    pub lost: u64,
}

/// A failing run: what broke, and the trace up to it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub at: Duration,
    pub what: String,
    pub trace: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at {:.1}s: {}\n--- trace ---\n{}--- replay: cargo run -p shoal-sim -- --seed {} --trace",
            self.seed,
            self.at.as_secs_f64(),
            self.what,
            self.trace,
            self.seed
        )
    }
}

/// The manifest of a write, as a user would apply it.
pub fn manifest(w: &Write) -> Value {
    match w {
        Write::Web {
            replicas,
            image,
            surge,
            unavailable,
        } => json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image,
                        "ports": [{"containerPort": 8080}]}]}
                }
            }
        }),
        Write::Db { replicas } => json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "db", "image": "db:1"}]}
                }
            }
        }),
        Write::Config { value } => json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default"},
            "data": {"value": value.to_string()}
        }),
    }
}

/// The world of one run.
pub struct World {
    pub plan: Plan,
    pub nodes: Vec<SimNode>,
    pub net: Net,
    rng: Rng,
    start: Instant,
    base_micros: i64,
    trace: String,
    echo: bool,
    pub acks: Acks,
    pub checker: check::Checker,
}

impl World {
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The true wall clock now, in microseconds: the start's plus the virtual time since.
    pub fn wall_micros(&self) -> i64 {
        self.base_micros + i64::try_from(self.now().as_micros()).unwrap_or(0)
    }

    pub fn note(&mut self, line: impl AsRef<str>) {
        let line = format!("{:>8.3}s {}\n", self.now().as_secs_f64(), line.as_ref());
        if self.echo {
            eprint!("{line}");
        }
        self.trace.push_str(&line);
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            seed: self.plan.seed,
            at: self.now(),
            what,
            trace: self.trace.clone(),
        }
    }

    /// Applies `w` on node `i`, as the API does (parse, then one batch), and records the
    /// acknowledgement.
    async fn apply(&mut self, i: usize, w: &Write) {
        let name = self.nodes[i].name.clone();
        let Some(running) = &self.nodes[i].running else {
            self.note(format!("apply on {name}: {w}: node down, not applied"));
            return;
        };
        let resource = match shoal_protocol::manifest::parse_value(manifest(w)) {
            Ok(r) => r,
            Err(e) => {
                self.note(format!("apply on {name}: {w}: refused: {e}"));
                return;
            }
        };
        let kind = resource.kind();
        let state = running.state.clone();
        match state.apply(vec![resource]).await {
            Ok(_) => {
                self.acks.record(kind, w, self.now());
                self.note(format!("apply on {name}: {w}: ok"));
            }
            Err(e) => self.note(format!("apply on {name}: {w}: failed: {e}")),
        }
    }

    async fn play(&mut self, event: &Event) -> Result<(), String> {
        self.note(event.to_string());
        match event {
            Event::Partition(sides) => {
                let sides: Vec<Vec<String>> = sides
                    .iter()
                    .map(|s| s.iter().map(|i| self.nodes[*i].name.clone()).collect())
                    .collect();
                self.net.partition(&sides);
            }
            Event::Heal => self.net.heal(),
            Event::Crash { node, torn } => {
                let net = self.net.clone();
                self.nodes[*node].crash(&net).await;
                if *torn {
                    self.nodes[*node].tear_log()?;
                }
            }
            Event::Restart { node, clock_back } => {
                if *clock_back {
                    self.nodes[*node].skew -= 3_600_000_000;
                }
                let net = self.net.clone();
                let base = self.wall_micros();
                self.nodes[*node].restart(&net, base, &mut self.rng)?;
            }
            Event::EngineStop(i) => self.nodes[*i].runtime.stop_engine(),
            Event::EngineHang(i) => self.nodes[*i]
                .runtime
                .set_unreachable(Some("the engine does not answer (simulated hang)")),
            Event::EngineBack(i) => {
                self.nodes[*i].runtime.start_engine();
            }
            Event::Links(l) => self.net.set_faults(*l),
            Event::Link { a, b, faults } => {
                let (a, b) = (self.nodes[*a].name.clone(), self.nodes[*b].name.clone());
                self.net.set_link(&a, &b, *faults);
            }
            Event::Apply { node, write } => self.apply(*node, write).await,
            Event::Concurrent { a, b } => {
                // Both land before either node can hear of the other's.
                self.apply(a.0, &a.1).await;
                self.apply(b.0, &b.1).await;
            }
            Event::Settle => {}
        }
        Ok(())
    }

    /// Steps until the liveness invariants hold among the nodes that are up, or fails after
    /// [`SETTLE`]; returns when they held.
    async fn settle(&mut self, what: &str) -> Result<Duration, Failure> {
        let from = self.now();
        let mut last = String::new();
        loop {
            self.step().await?;
            if self.now().saturating_sub(from).as_millis() % 1000 < STEP.as_millis() {
                match check::settled(self).await {
                    Ok(()) => return Ok(self.now()),
                    Err(why) => last = why,
                }
            }
            if self.now() > from + SETTLE {
                return Err(self.fail(format!(
                    "not settled {}s after {what}: {last}",
                    SETTLE.as_secs()
                )));
            }
        }
    }

    /// Ends every fault: clean links, no partition, engines answer, every node up.
    async fn heal_all(&mut self) -> Result<(), String> {
        self.note("heal everything");
        self.net.set_faults(LinkFaults::default());
        self.net.heal();
        for i in 0..self.nodes.len() {
            self.nodes[i].runtime.start_engine();
            if !self.nodes[i].is_up() {
                let net = self.net.clone();
                let base = self.wall_micros();
                self.nodes[i].restart(&net, base, &mut self.rng)?;
                let name = self.nodes[i].name.clone();
                self.note(format!("restart {name}"));
            }
        }
        Ok(())
    }

    /// Advances virtual time by one step and checks safety.
    async fn step(&mut self) -> Result<(), Failure> {
        tokio::time::sleep(STEP).await;
        let now = self.now();
        let mut checker = std::mem::take(&mut self.checker);
        let result = checker.safety(self, now).await;
        self.checker = checker;
        result.map_err(|what| self.fail(what))
    }

    async fn until(&mut self, t: Duration) -> Result<(), Failure> {
        while self.now() < t {
            self.step().await?;
        }
        Ok(())
    }
}

/// Runs `seed` in `dir` (the nodes' data directories go under it). `echo` prints the trace as
/// it goes.
pub async fn run(seed: u64, dir: &Path, echo: bool) -> Result<Summary, Failure> {
    run_plan(plan::plan(seed), dir, echo).await
}

/// Runs `plan` in `dir`: a seed's, or a scripted one.
pub async fn run_plan(plan: Plan, dir: &Path, echo: bool) -> Result<Summary, Failure> {
    let seed = plan.seed;
    let mut rng = Rng::new(seed.rotate_left(17) ^ 0x9e37_79b9);
    let names: Vec<String> = (1..=plan.nodes).map(|i| format!("n{i}")).collect();
    let mut peers: Vec<String> = Vec::new();
    while peers.len() < plan.nodes {
        let p = format!("12D3KooW{:016x}", rng.next_u64());
        if !peers.contains(&p) {
            peers.push(p);
        }
    }
    let nodes: Vec<SimNode> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut node = SimNode::new(n, &peers[i], i, dir.join(n), i == 0);
            // Wall clocks disagree by up to half a minute either way.
            node.skew = i64::try_from(rng.below(60_000_000)).unwrap_or(0) - 30_000_000;
            node
        })
        .collect();
    let base_micros = 1_796_000_000_000_000;
    let mut w = World {
        net: Net::new(rng.next_u64()),
        nodes,
        rng,
        start: Instant::now(),
        base_micros,
        trace: String::new(),
        echo,
        acks: Acks::default(),
        checker: check::Checker::default(),
        plan,
    };
    let mut header = format!("seed {} with {} nodes:", seed, w.plan.nodes);
    for n in &w.nodes {
        let _ = write!(header, " {}={}", n.name, &n.peer[8..14]);
    }
    w.note(header);
    for i in 0..w.nodes.len() {
        let net = w.net.clone();
        let mut rng = w.rng.clone();
        w.nodes[i]
            .start(&net, base_micros, &mut rng)
            .map_err(|e| w.fail(e))?;
        w.rng = rng;
    }
    w.until(plan::FIRST_APPLY).await?;
    let initial = w.plan.initial.clone();
    for write in &initial {
        let node = w.rng.index(w.nodes.len());
        w.apply(node, write).await;
    }
    let events = w.plan.events.clone();
    for (t, event) in &events {
        w.until(*t).await?;
        w.play(event).await.map_err(|e| w.fail(e))?;
        if *event == Event::Settle {
            w.settle("the scripted check").await?;
            w.note("settled");
        }
    }
    let heal_at = w.plan.heal_at;
    w.until(heal_at).await?;
    w.heal_all().await.map_err(|e| w.fail(e))?;
    let healed = w.now();
    // Liveness: everything settles.
    let settled = w.settle("the heal").await?;
    w.note("settled");
    // Quiet: once settled, the document and the leases stop changing (the last moves of a
    // spread may still be made) and then stay unchanged while nothing is applied and
    // membership is stable.
    let mut before = check::fingerprint(&w).await.map_err(|e| w.fail(e))?;
    let quiet_from = loop {
        w.until(w.now() + QUIET_PROBE).await?;
        let now = check::fingerprint(&w).await.map_err(|e| w.fail(e))?;
        if check::changed(&before, &now).is_none() {
            break w.now();
        }
        if w.now() > settled + SETTLE {
            return Err(w.fail(format!(
                "the document or the leases still change {}s after settling",
                SETTLE.as_secs()
            )));
        }
        before = now;
    };
    w.until(quiet_from + QUIET).await?;
    let after = check::fingerprint(&w).await.map_err(|e| w.fail(e))?;
    if let Some(diff) = check::changed(&before, &after) {
        return Err(w.fail(format!(
            "the document or the leases changed while nothing happened: {diff}"
        )));
    }
    let (messages, lost) = w.net.counts();
    let summary = Summary {
        seed,
        nodes: w.plan.nodes,
        events: w.plan.events.len(),
        simulated: w.now(),
        settled_after: settled.saturating_sub(healed),
        messages,
        lost,
    };
    for i in 0..w.nodes.len() {
        let net = w.net.clone();
        w.nodes[i].crash(&net).await;
    }
    Ok(summary)
}

/// Runs one seed on its own current-thread runtime in paused time, with its nodes' data in a
/// temporary directory (in memory where the machine has `/dev/shm`).
pub fn run_seed(seed: u64, echo: bool) -> Result<Summary, Failure> {
    run_plan_now(plan::plan(seed), echo)
}

/// Runs `plan` as [`run_seed`] runs a seed's.
pub fn run_plan_now(plan: Plan, echo: bool) -> Result<Summary, Failure> {
    let seed = plan.seed;
    let fail = |what: String| Failure {
        seed,
        at: Duration::ZERO,
        what,
        trace: String::new(),
    };
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("shoal-sim-")
            .tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("shoal-sim-").tempdir()
    }
    .map_err(|e| fail(format!("no temporary directory: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| fail(format!("no runtime: {e}")))?;
    let result = rt.block_on(run_plan(plan, dir.path(), echo));
    // Tasks still sleeping are dropped with the runtime.
    drop(rt);
    result
}

/// The kinds of the simulation's objects, by the writes.
pub fn kind_of(w: &Write) -> shoal_protocol::Kind {
    match w {
        Write::Web { .. } => shoal_protocol::Kind::Deployment,
        Write::Db { .. } => shoal_protocol::Kind::StatefulSet,
        Write::Config { .. } => shoal_protocol::Kind::ConfigMap,
    }
}

/// Whether `r` is what a write made.
pub fn resource_name(r: &Resource) -> String {
    format!("{}/{}", r.kind(), r.name())
}

/// A running container as an observer outside the engines sees it.
#[derive(Debug, Clone)]
pub struct Copy {
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
}

/// Running containers of every node by pod name (one per container).
pub fn running_pods(w: &World) -> BTreeMap<String, Vec<Copy>> {
    let mut out: BTreeMap<String, Vec<Copy>> = BTreeMap::new();
    for n in &w.nodes {
        for c in n.runtime.running() {
            let pod = c
                .labels
                .get(shoal_node::agent::spec::labels::POD)
                .cloned()
                .unwrap_or_default();
            out.entry(pod).or_default().push(Copy {
                node: n.name.clone(),
                labels: c.labels.clone(),
                image: c.image.clone(),
            });
        }
    }
    out
}
