//! Prometheus metrics: `GET /metrics` on the API port, in the Prometheus text format (0.0.4),
//! behind the admin token like every other route but `/healthz`.
//!
//! Two kinds of metric, kept apart as the two kinds of state are:
//! - **Events** (counters and histograms) are bumped where they happen, by a one-line call to a
//!   function of this module ([`gossip_sent`], [`dns_answered`], [`container_started`], ...).
//!   They live in one process-wide [`Metrics`] ([`get`]), so that no constructor has to carry
//!   a handle: the hooks sit deep in the network task, the DNS server, the agent. The price is
//!   that tests running several nodes in one process (the unit tests) share these counters;
//!   `shoald` runs one node per process, so in production they are the node's. Tests that
//!   check them therefore only check that they move.
//! - **State** (gauges: nodes by status, pods by phase, the document's size, the roles held)
//!   is computed at scrape time from the node's [`StateHandle`] and [`ObservedHandle`], as
//!   `GET /shoal/v1/status` does, into a registry made for that scrape. Nothing keeps it up to
//!   date between scrapes, and two nodes in one process each report their own view.
//!
//! The metrics (every name starts with `shoal_`):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `shoal_nodes` | gauge | `status` (alive, suspect, dead, left) | nodes as this node sees them (registered and heard members, as `shoal get nodes`) |
//! | `shoal_pods` | gauge | `phase` (Pending, Running, Succeeded, Failed, Unknown, ...) | pods of the cluster (every slot, and bare Pods without one), by the phase this node knows |
//! | `shoal_state_document_bytes` | gauge | | size of the desired-state document on disk: snapshot plus change log |
//! | `shoal_state_objects` | gauge | | objects stored in the desired state |
//! | `shoal_role_held` | gauge | `role` | 1 while this node holds the role (the controllers' lease), else 0 |
//! | `shoal_build_info` | gauge | `version` | always 1 |
//! | `shoal_scheduling_duration_seconds` | histogram | | one controllers round on the leader: read the state, plan (placement through the scheduler included), write the slots |
//! | `shoal_gossip_bytes_total` | counter | `direction` (in, out), `topic` (state, observed) | gossipsub payload bytes published (once per message, whatever the fan-out) and accepted from peers |
//! | `shoal_sync_rounds_total` | counter | `result` (quiet, unfinished, failed) | anti-entropy rounds this node started |
//! | `shoal_dns_queries_total` | counter | `source` (zone, upstream), `rcode` | DNS queries answered, by who answered and the response code |
//! | `shoal_dns_errors_total` | counter | `kind` (request, upstream, dropped) | requests refused before answering (malformed, not a query), upstreams that gave no answer, queries dropped because too many were in flight |
//! | `shoal_api_requests_total` | counter | `method`, `route`, `code` | HTTP requests on the API port (API and web UI), by route template (`/api/v1/namespaces/:ns/:plural`, not the path) |
//! | `shoal_api_request_duration_seconds` | histogram | `method`, `route` | time to answer them |
//! | `shoal_container_starts_total` | counter | | containers this node's agent created and started |
//! | `shoal_container_restarts_total` | counter | | containers it started again after they exited (the restart policy) |
//! | `shoal_container_start_failures_total` | counter | | creates or starts that failed (they are retried) |
//!
//! Label values come from fixed sets (route templates, not paths; methods outside the
//! standard ones count as `OTHER`), so that no client can grow the series without bound.

use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hickory_proto::op::ResponseCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use shoal_protocol::status::PodStatus;

use crate::api::{ApiError, ApiState};
use crate::net::Topic;
use crate::observed::{Liveness, ObservedHandle};
use crate::state::{StateError, StateHandle};

/// The route of the metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of the answer: Prometheus' text format, version 0.0.4.
pub const CONTENT_TYPE_TEXT: &str = prometheus_text::CONTENT_TYPE;

/// The label `route` of a request that matched no route.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The phases a pod may be in: always reported, zero or not, so that a query for one does not
/// see it vanish.
const POD_PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: &'static str,
    route: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GossipLabels {
    direction: &'static str,
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    source: &'static str,
    rcode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The event metrics of this process (see the module doc), and the registry that encodes
/// them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    api_requests: Family<ApiLabels, Counter>,
    api_duration: HistogramFamily<RouteLabels>,
    gossip_bytes: Family<GossipLabels, Counter>,
    sync_rounds: Family<ResultLabel, Counter>,
    scheduling: Histogram,
    dns_queries: Family<DnsLabels, Counter>,
    dns_errors: Family<KindLabel, Counter>,
    container_starts: Counter,
    container_restarts: Counter,
    container_start_failures: Counter,
}

fn api_buckets() -> Histogram {
    // Prometheus' default buckets: 5 ms to 10 s.
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// A fresh set, every counter at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "shoal_api_requests",
            "HTTP API requests answered, by method, route template and status code",
            api_requests.clone(),
        );
        let api_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(api_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "shoal_api_request_duration",
            "Time to answer an HTTP API request, by method and route template",
            Unit::Seconds,
            api_duration.clone(),
        );
        let gossip_bytes = Family::<GossipLabels, Counter>::default();
        registry.register_with_unit(
            "shoal_gossip",
            "Gossip payload bytes published (out, once per message) and accepted from peers (in)",
            Unit::Bytes,
            gossip_bytes.clone(),
        );
        let sync_rounds = Family::<ResultLabel, Counter>::default();
        registry.register(
            "shoal_sync_rounds",
            "Anti-entropy rounds this node started, by how they ended",
            sync_rounds.clone(),
        );
        // 0.5 ms to about 8 s.
        let scheduling = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        registry.register_with_unit(
            "shoal_scheduling_duration",
            "One controllers round on the leader: read the state, plan and place, write slots",
            Unit::Seconds,
            scheduling.clone(),
        );
        let dns_queries = Family::<DnsLabels, Counter>::default();
        registry.register(
            "shoal_dns_queries",
            "DNS queries answered, by source (zone or upstream) and response code",
            dns_queries.clone(),
        );
        let dns_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "shoal_dns_errors",
            "DNS requests refused before answering (request), upstreams that gave no answer \
             (upstream), queries dropped while too many were in flight (dropped)",
            dns_errors.clone(),
        );
        let container_starts = Counter::default();
        registry.register(
            "shoal_container_starts",
            "Containers this node's agent created and started",
            container_starts.clone(),
        );
        let container_restarts = Counter::default();
        registry.register(
            "shoal_container_restarts",
            "Containers this node's agent started again after they exited",
            container_restarts.clone(),
        );
        let container_start_failures = Counter::default();
        registry.register(
            "shoal_container_start_failures",
            "Container creates or starts that failed (they are retried)",
            container_start_failures.clone(),
        );
        // The series every node has, at zero from the start, so that a rate over them works
        // from the first scrape and a query for one never finds it missing.
        for direction in ["in", "out"] {
            for topic in [Topic::State, Topic::Observed] {
                let topic = topic_label(topic);
                gossip_bytes.get_or_create_owned(&GossipLabels { direction, topic });
            }
        }
        for result in ["quiet", "unfinished", "failed"] {
            sync_rounds.get_or_create_owned(&ResultLabel { result });
        }
        for kind in [
            DnsError::Request,
            DnsError::Upstream,
            DnsError::Dropped,
            DnsError::Loop,
        ] {
            dns_errors.get_or_create_owned(&KindLabel {
                kind: dns_error_label(kind),
            });
        }
        Metrics {
            registry,
            api_requests,
            api_duration,
            gossip_bytes,
            sync_rounds,
            scheduling,
            dns_queries,
            dns_errors,
            container_starts,
            container_restarts,
            container_start_failures,
        }
    }

    /// The event metrics in the text format.
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_text::encode(out, &self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The event metrics of this process.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// The last part of the topic's name (`state`, `observed`, ...).
fn topic_label(topic: Topic) -> String {
    let name = topic.name("");
    name.rsplit('/').next().unwrap_or_default().to_string()
}

/// `bytes` of gossip published on `topic`.
pub fn gossip_sent(topic: Topic, bytes: usize) {
    gossip(GossipLabels {
        direction: "out",
        topic: topic_label(topic),
    })
    .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
}

/// `bytes` of gossip accepted on `topic`.
pub fn gossip_received(topic: Topic, bytes: usize) {
    gossip(GossipLabels {
        direction: "in",
        topic: topic_label(topic),
    })
    .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
}

fn gossip(labels: GossipLabels) -> Counter {
    get().gossip_bytes.get_or_create_owned(&labels)
}

/// An anti-entropy round this node started has ended: quiet (`Ok(Some(requests))`: neither
/// side had more to send), unfinished (`Ok(None)`: it stopped at the most exchanges) or
/// failed.
pub fn sync_round<E>(result: &Result<Option<usize>, E>) {
    let result = match result {
        Ok(Some(_)) => "quiet",
        Ok(None) => "unfinished",
        Err(_) => "failed",
    };
    get()
        .sync_rounds
        .get_or_create_owned(&ResultLabel { result })
        .inc();
}

/// Runs one controllers round, timing it into `shoal_scheduling_duration_seconds`.
pub async fn time_scheduling<T>(round: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = round.await;
    get().scheduling.observe(start.elapsed().as_secs_f64());
    out
}

/// A DNS query was answered, from the zone (`in_zone`) or by forwarding, with `rcode`.
pub fn dns_answered(in_zone: bool, rcode: ResponseCode) {
    let labels = DnsLabels {
        source: if in_zone { "zone" } else { "upstream" },
        rcode: rcode_label(rcode),
    };
    get().dns_queries.get_or_create_owned(&labels).inc();
}

/// The usual mnemonic of a response code (as `dig` shows it); rare ones share `OTHER`.
fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

/// What went wrong with a DNS query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// Refused before answering: malformed, not a query, several questions.
    Request,
    /// An upstream gave no answer in time.
    Upstream,
    /// Dropped: too many queries were in flight.
    Dropped,
    /// Refused: a forwarding loop (the query came back through this node, or went through
    /// too many forwarders).
    Loop,
}

/// A DNS error of `kind`.
pub fn dns_error(kind: DnsError) {
    let kind = dns_error_label(kind);
    get()
        .dns_errors
        .get_or_create_owned(&KindLabel { kind })
        .inc();
}

fn dns_error_label(kind: DnsError) -> &'static str {
    match kind {
        DnsError::Request => "request",
        DnsError::Upstream => "upstream",
        DnsError::Dropped => "dropped",
        DnsError::Loop => "loop",
    }
}

/// The agent created and started a container.
pub fn container_started() {
    get().container_starts.inc();
}

/// The agent started an exited container again.
pub fn container_restarted() {
    get().container_restarts.inc();
}

/// A container create or start failed.
pub fn container_start_failed() {
    get().container_start_failures.inc();
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware counting and timing every API request by its route template.
pub async fn track_api(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |m| route_label(m.as_str()));
    let start = Instant::now();
    let response = next.run(req).await;
    record_api(method, route, response.status(), start.elapsed());
    response
}

/// A route template as a label value, its parameters written `:name` (`/api/v1/:plural`)
/// rather than axum's `{name}`: braces inside a label value are valid, but simple text-format
/// parsers (and people reading the page) trip over them.
fn route_label(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

fn record_api(method: &'static str, route: String, code: StatusCode, elapsed: Duration) {
    let m = get();
    let labels = RouteLabels { method, route };
    m.api_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    m.api_requests
        .get_or_create_owned(&ApiLabels {
            method,
            route: labels.route,
            code: code.as_u16(),
        })
        .inc();
}

/// `GET /metrics`.
pub async fn scrape(State(api): State<ApiState>) -> Response {
    match render(&api.state, &api.observed, &api.node_name).await {
        Ok(body) => (StatusCode::OK, [(CONTENT_TYPE, CONTENT_TYPE_TEXT)], body).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Every metric of node `node_name` in the text format: the process's event metrics, then the
/// state gauges computed now.
pub async fn render(
    state: &StateHandle,
    observed: &ObservedHandle,
    node_name: &str,
) -> Result<String, StateError> {
    let view = crate::nodes::view(state, observed).await?;
    let pods = pod_phases(state, observed).await?;
    let stats = state.stats().await?;
    let snapshot = StateSnapshot {
        nodes: view.values().map(|n| n.liveness).collect(),
        pods,
        document_bytes: stats.doc_bytes.saturating_add(stats.log_bytes),
        objects: stats.objects,
        roles: view
            .get(node_name)
            .map(|n| n.roles.clone())
            .unwrap_or_default(),
    };
    let mut out = String::new();
    let encoded = get().encode(&mut out).and_then(|()| {
        snapshot
            .registry()
            .and_then(|r| prometheus_text::encode(&mut out, &r))
    });
    // Writing into a String fails only if a metric's own encoding does, which would be a bug
    // of this module: say so rather than serve half a page.
    encoded.map_err(|_| StateError::Internal("cannot encode the metrics".into()))?;
    Ok(out)
}

/// The phase of every pod: each slot and each bare Pod without one, by its observed status
/// (Pending while no node reports it).
async fn pod_phases(
    state: &StateHandle,
    observed: &ObservedHandle,
) -> Result<Vec<String>, StateError> {
    let slots = state.slots().await?;
    let owners = crate::pods::owners(state).await?;
    let desired = crate::pods::join_owners(&slots, &owners);
    let statuses = observed.pods();
    let phase = |s: Option<&PodStatus>| {
        s.map(|s| s.phase.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "Pending".to_string())
    };
    let mut phases: Vec<String> = desired
        .iter()
        .map(|p| phase(statuses.get(&p.key())))
        .collect();
    let slotted: std::collections::BTreeSet<String> =
        desired.iter().map(crate::pods::DesiredPod::key).collect();
    for p in &owners.pods {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let key = crate::pods::pod_key(&ns, &p.metadata.name);
        if !slotted.contains(&key) {
            phases.push(phase(statuses.get(&key)));
        }
    }
    Ok(phases)
}

/// What the state gauges are computed from. Pure, so that a test can build one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateSnapshot {
    pub nodes: Vec<Liveness>,
    pub pods: Vec<String>,
    pub document_bytes: u64,
    pub objects: usize,
    pub roles: Vec<&'static str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

impl StateSnapshot {
    /// A registry holding the state gauges.
    fn registry(&self) -> Result<Registry, std::fmt::Error> {
        let mut registry = Registry::default();
        let nodes = Family::<StatusLabel, Gauge>::default();
        for liveness in [
            Liveness::Alive,
            Liveness::Suspect,
            Liveness::Dead,
            Liveness::Left,
            Liveness::Unknown,
        ] {
            let n = self.nodes.iter().filter(|l| **l == liveness).count();
            nodes
                .get_or_create(&StatusLabel {
                    status: liveness.as_str(),
                })
                .set(count(n));
        }
        registry.register(
            "shoal_nodes",
            "Nodes as this node sees them, by status",
            nodes,
        );
        let pods = Family::<PhaseLabel, Gauge>::default();
        for phase in POD_PHASES {
            pods.get_or_create(&PhaseLabel {
                phase: phase.to_string(),
            })
            .set(0);
        }
        for phase in &self.pods {
            pods.get_or_create(&PhaseLabel {
                phase: phase.clone(),
            })
            .inc();
        }
        registry.register(
            "shoal_pods",
            "Pods of the cluster by phase, as this node knows them",
            pods,
        );
        let bytes = Gauge::<i64>::default();
        bytes.set(i64::try_from(self.document_bytes).unwrap_or(i64::MAX));
        registry.register_with_unit(
            "shoal_state_document",
            "Size of the desired-state document on disk (snapshot and change log)",
            Unit::Bytes,
            bytes,
        );
        let objects = Gauge::<i64>::default();
        objects.set(count(self.objects));
        registry.register(
            "shoal_state_objects",
            "Objects stored in the desired state",
            objects,
        );
        let roles = Family::<RoleLabel, Gauge>::default();
        roles
            .get_or_create(&RoleLabel {
                role: crate::nodes::CONTROLLER_ROLE,
            })
            .set(i64::from(
                self.roles.contains(&crate::nodes::CONTROLLER_ROLE),
            ));
        registry.register(
            "shoal_role_held",
            "1 while this node holds the role, else 0",
            roles,
        );
        let info = Family::<VersionLabel, Gauge>::default();
        info.get_or_create(&VersionLabel {
            version: shoal_protocol::VERSION,
        })
        .set(1);
        registry.register("shoal_build_info", "The version of shoald; always 1", info);
        // Encoding to a throwaway buffer first catches a bad metric here rather than halfway
        // through the answer.
        prometheus_text::encode(&mut String::new(), &registry)?;
        Ok(registry)
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The value of the sample `name{labels}` in `text`, labels as they are encoded.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            (s == series).then(|| v.parse().ok())?
        })
    }

    #[test]
    fn event_counters_move_and_encode() {
        // The counters are process-wide and other tests bump them too: compare before/after
        // with a lower bound only.
        let before = {
            let mut s = String::new();
            get().encode(&mut s).unwrap();
            s
        };
        let series = |text: &str, s: &str| sample(text, s).unwrap_or(0.0);
        gossip_sent(Topic::State, 100);
        gossip_received(Topic::Observed, 40);
        sync_round::<()>(&Ok(Some(2)));
        dns_answered(true, ResponseCode::NXDomain);
        dns_error(DnsError::Upstream);
        container_started();
        container_restarted();
        container_start_failed();
        record_api(
            "GET",
            "/api/v1/:plural".into(),
            StatusCode::OK,
            Duration::from_millis(3),
        );
        let mut after = String::new();
        get().encode(&mut after).unwrap();
        for (s, by) in [
            (
                r#"shoal_gossip_bytes_total{direction="out",topic="state"}"#,
                100.0,
            ),
            (
                r#"shoal_gossip_bytes_total{direction="in",topic="observed"}"#,
                40.0,
            ),
            (r#"shoal_sync_rounds_total{result="quiet"}"#, 1.0),
            (
                r#"shoal_dns_queries_total{source="zone",rcode="NXDOMAIN"}"#,
                1.0,
            ),
            (r#"shoal_dns_errors_total{kind="upstream"}"#, 1.0),
            ("shoal_container_starts_total", 1.0),
            ("shoal_container_restarts_total", 1.0),
            ("shoal_container_start_failures_total", 1.0),
            (
                r#"shoal_api_requests_total{method="GET",route="/api/v1/:plural",code="200"}"#,
                1.0,
            ),
            (
                r#"shoal_api_request_duration_seconds_count{method="GET",route="/api/v1/:plural"}"#,
                1.0,
            ),
        ] {
            assert!(
                series(&after, s) >= series(&before, s) + by,
                "{s} did not move by {by}:\n{after}"
            );
        }
        for family in [
            "# TYPE shoal_api_request_duration_seconds histogram",
            "# TYPE shoal_scheduling_duration_seconds histogram",
            "# TYPE shoal_gossip_bytes_total counter",
        ] {
            assert!(after.contains(family), "{family} missing:\n{after}");
        }
    }

    #[tokio::test]
    async fn scheduling_rounds_are_timed() {
        let count = || {
            let mut s = String::new();
            get().encode(&mut s).unwrap();
            sample(&s, "shoal_scheduling_duration_seconds_count").unwrap_or(0.0)
        };
        let before = count();
        let out = time_scheduling(async { 7 }).await;
        assert_eq!(out, 7);
        assert!(count() > before);
    }

    #[test]
    fn state_gauges_count_every_status_and_phase() {
        let snapshot = StateSnapshot {
            nodes: vec![Liveness::Alive, Liveness::Alive, Liveness::Dead],
            pods: vec!["Running".into(), "Running".into(), "Pending".into()],
            document_bytes: 1234,
            objects: 5,
            roles: vec![crate::nodes::CONTROLLER_ROLE],
        };
        let mut text = String::new();
        prometheus_text::encode(&mut text, &snapshot.registry().unwrap()).unwrap();
        for (s, want) in [
            (r#"shoal_nodes{status="alive"}"#, 2.0),
            (r#"shoal_nodes{status="suspect"}"#, 0.0),
            (r#"shoal_nodes{status="dead"}"#, 1.0),
            (r#"shoal_nodes{status="left"}"#, 0.0),
            (r#"shoal_pods{phase="Running"}"#, 2.0),
            (r#"shoal_pods{phase="Pending"}"#, 1.0),
            (r#"shoal_pods{phase="Failed"}"#, 0.0),
            ("shoal_state_document_bytes", 1234.0),
            ("shoal_state_objects", 5.0),
            (r#"shoal_role_held{role="controller"}"#, 1.0),
        ] {
            assert_eq!(sample(&text, s), Some(want), "{s} in:\n{text}");
        }
    }

    #[tokio::test]
    async fn api_requests_are_labelled_by_route_template() {
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/metrics-test/things/{id}",
                axum::routing::get(|| async { "ok" }),
            )
            .layer(axum::middleware::from_fn(track_api));
        let series =
            r#"shoal_api_requests_total{method="GET",route="/metrics-test/things/:id",code="200"}"#;
        let unmatched = r#"shoal_api_requests_total{method="GET",route="unmatched",code="404"}"#;
        let text = || {
            let mut s = String::new();
            get().encode(&mut s).unwrap();
            s
        };
        let before = text();
        for path in [
            "/metrics-test/things/1",
            "/metrics-test/things/2",
            "/nowhere/3",
        ] {
            let req = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let after = text();
        let value = |t: &str, s: &str| sample(t, s).unwrap_or(0.0);
        assert!(
            value(&after, series) >= value(&before, series) + 2.0,
            "{after}"
        );
        assert!(
            value(&after, unmatched) > value(&before, unmatched),
            "{after}"
        );
        assert!(
            !after.contains("/metrics-test/things/1"),
            "a raw path became a label"
        );
    }

    #[tokio::test]
    async fn render_reports_this_nodes_view() {
        let dir = tempfile::tempdir().unwrap();
        let (state, task) = crate::state::open(&crate::state::StateConfig {
            data_dir: dir.path().to_path_buf(),
            cluster_secret: [7; 32],
            channel_size: 16,
        })
        .unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(task.run(stop.clone()));
        let (observed, _reporter, _hb) = crate::observed::start(
            crate::observed::NodeRecord {
                name: "n1".into(),
                version: 1,
                ..Default::default()
            },
            crate::observed::Timing::default(),
            4,
        );
        crate::nodes::register(&state, "n1", "p1").await.unwrap();
        let text = render(&state, &observed, "n1").await.unwrap();
        stop.cancel();
        assert_eq!(
            sample(&text, r#"shoal_nodes{status="alive"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"shoal_pods{phase="Running"}"#),
            Some(0.0),
            "{text}"
        );
        assert!(
            sample(&text, "shoal_state_document_bytes").unwrap_or(0.0) > 0.0,
            "{text}"
        );
        assert!(
            sample(&text, "shoal_state_objects").unwrap_or(0.0) >= 2.0,
            "{text}"
        );
        // The event metrics come first, in the same answer.
        assert!(
            text.contains("# TYPE shoal_scheduling_duration_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn methods_outside_the_standard_ones_share_a_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "OTHER");
    }
}
