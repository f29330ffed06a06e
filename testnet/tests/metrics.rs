//! `GET /metrics` on real `shoald` processes, read as Prometheus reads it: the text is parsed
//! with a Prometheus text-format parser (`prometheus-parse`), the route needs the admin
//! token, the state gauges match the cluster (nodes alive, pods running, one controller, a
//! document of some size), and the counters move when things happen: API requests, DNS queries
//! (answered from the zone, NXDOMAIN, forwarded to an upstream that never answers), a
//! Deployment's containers starting on the real Docker engine and one of them restarting after
//! `docker kill`, gossip, anti-entropy rounds, scheduling rounds.
//!
//! Without a Docker engine this test says so and passes, except where `CI` is set: there a
//! missing engine fails it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use shoal_testnet::image::{ECHO_IMAGE, ECHO_PORT};
use shoal_testnet::{Cluster, Node, Testnet, listing, wait_until};

const DOMAIN: &str = "shoal.home.arpa";

/// One scrape of a node, parsed.
struct Metrics(Vec<Sample>);

impl Metrics {
    /// The value of every sample of `name` whose labels include `labels`, added up. Histogram
    /// `_count` and `_sum` lines come out of the parser as untyped samples.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    /// Whether a sample of `name` exists at all (a family the node must always report).
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.metric == name)
    }
}

/// `GET /metrics` with `token`: the status, the content type and the body.
fn get_metrics(node: &Node, token: Option<&str>) -> anyhow::Result<(u16, String, String)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut req = client.get(format!("{}/metrics", node.url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send()?;
    let code = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((code, ctype, r.text()?))
}

/// Scrapes `node` with the cluster's token and parses the answer.
fn scrape(cluster: &Cluster, node: &Node) -> anyhow::Result<Metrics> {
    let (code, _, body) = get_metrics(node, Some(cluster.admin_token()))?;
    anyhow::ensure!(
        code == 200,
        "GET /metrics on {}: {code} {body}",
        node.opts.name
    );
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string())))?;
    // Every sample line parsed: the parser skips lines it cannot read, which would make the
    // checks below vacuous. (Histogram buckets fold into one sample per series.)
    let lines = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| {
            !l.split(['{', ' '])
                .next()
                .unwrap_or("")
                .ends_with("_bucket")
        })
        .count();
    let plain = scrape
        .samples
        .iter()
        .filter(|s| !matches!(s.value, Value::Histogram(_)))
        .count();
    anyhow::ensure!(
        lines == plain,
        "{lines} sample lines but {plain} parsed from {}:\n{body}",
        node.opts.name
    );
    Ok(Metrics(scrape.samples))
}

/// Every node's scrape.
fn scrape_all(cluster: &Cluster) -> Vec<Metrics> {
    cluster
        .nodes()
        .iter()
        .map(|n| scrape(cluster, n).unwrap())
        .collect()
}

/// `name{labels}` added up over every node's scrape.
fn cluster_sum(scrapes: &[Metrics], name: &str, labels: &[(&str, &str)]) -> f64 {
    scrapes.iter().map(|m| m.sum(name, labels)).sum()
}

/// A DNS query for `name` (type A, recursion desired) sent over UDP to `server`; the answer's
/// response code, or None when nothing came back within 3 s.
fn dns_rcode(server: &str, name: &str, id: u16) -> Option<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).unwrap());
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    socket.send_to(&q, server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    (n >= 12 && buf[..2] == id.to_be_bytes()).then_some(buf[3] & 0x0f)
}

fn manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 18090, targetPort: http}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: {ECHO_IMAGE}
        ports: [{{containerPort: {ECHO_PORT}, name: http}}]
        readinessProbe:
          httpGet: {{path: /ready, port: http}}
          periodSeconds: 1
          failureThreshold: 1
        resources:
          requests: {{cpu: 50m, memory: 32Mi}}
"#
    )
}

/// The Docker ids of the `app=web` pods' containers that run, as the API lists them.
fn running_containers(node: &Node) -> anyhow::Result<Vec<String>> {
    Ok(listing::pods(node, "default", "web")?
        .into_iter()
        .filter(|p| p.phase == "Running" && !p.container.is_empty())
        .map(|p| p.container)
        .collect())
}

#[test]
fn metrics_are_prometheus_text_and_move() {
    if !shoal_testnet::docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = Testnet::up(2, dir.path()).unwrap();
    let cluster = &t.cluster;
    let n1 = cluster.node("n1").unwrap();
    let fail = |what: &str| -> String { format!("{what}\n{}", cluster.log_tails(40)) };

    // The route is the API's: the admin token or nothing.
    let (code, _, _) = get_metrics(n1, None).unwrap();
    assert_eq!(code, 401, "GET /metrics without a token");
    let (code, _, _) = get_metrics(n1, Some("wrong")).unwrap();
    assert_eq!(code, 401, "GET /metrics with a wrong token");
    let (code, ctype, body) = get_metrics(n1, Some(cluster.admin_token())).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        ctype.starts_with("text/plain") && ctype.contains("version=0.0.4"),
        "content type {ctype}"
    );

    // Both nodes report both alive, a document of some size, and gossip flowing both ways
    // (heartbeats every second).
    wait_until(
        Duration::from_secs(30),
        "every node to report 2 alive nodes and gossip both ways",
        || {
            for node in cluster.nodes() {
                let m = scrape(cluster, node)?;
                let ok = m.sum("shoal_nodes", &[("status", "alive")]) == 2.0
                    && m.sum("shoal_nodes", &[("status", "dead")]) == 0.0
                    && m.sum("shoal_state_document_bytes", &[]) > 0.0
                    && m.sum("shoal_state_objects", &[]) > 0.0
                    && m.sum("shoal_gossip_bytes_total", &[("direction", "out")]) > 0.0
                    && m.sum("shoal_gossip_bytes_total", &[("direction", "in")]) > 0.0;
                if !ok {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{}", fail(&format!("{e:#}"))));
    let before = scrape_all(cluster);
    let m1 = &before[0];
    for family in [
        "shoal_pods",
        "shoal_role_held",
        "shoal_build_info",
        "shoal_api_requests_total",
    ] {
        assert!(m1.has(family), "{family} missing from n1's metrics");
    }
    // Exactly one node holds the controllers' role.
    wait_until(Duration::from_secs(30), "one controller", || {
        let all = scrape_all(cluster);
        Ok((cluster_sum(&all, "shoal_role_held", &[("role", "controller")]) == 1.0).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{}", fail(&format!("{e:#}"))));

    // Things happen: a Deployment of 2 (with a Service for DNS), API requests.
    n1.cli_with_input(&["apply", "-f", "-"], Some(&manifest()))
        .unwrap()
        .success()
        .unwrap();
    let api = n1.api().unwrap();
    for _ in 0..3 {
        let (code, _) = api.get("/api/v1/namespaces/default/pods").unwrap();
        assert_eq!(code, 200);
    }
    let (code, _) = api.get("/api/v1/namespaces/default/nothings").unwrap();
    assert_eq!(code, 404);
    // The containers start (on either node), and one restarts after a `docker kill`.
    let running = wait_until(Duration::from_secs(120), "2 running web pods", || {
        let ids = running_containers(n1)?;
        Ok((ids.len() == 2).then_some(ids))
    })
    .unwrap_or_else(|e| panic!("{}", fail(&format!("{e:#}"))));
    // DNS, once the Service has ready endpoints.
    let dns = format!("{}:53", n1.opts.ip);
    wait_until(
        Duration::from_secs(30),
        "the Service's name to resolve",
        || Ok((dns_rcode(&dns, &format!("web.default.svc.{DOMAIN}"), 1) == Some(0)).then_some(())),
    )
    .unwrap_or_else(|e| panic!("{}", fail(&format!("{e:#}"))));
    assert_eq!(
        dns_rcode(&dns, &format!("nothing.default.svc.{DOMAIN}"), 2),
        Some(3),
        "NXDOMAIN for a name that does not exist"
    );
    // The testnet's upstream is a port where nothing answers: SERVFAIL, and an upstream error.
    assert_eq!(dns_rcode(&dns, "example.com", 3), Some(2), "SERVFAIL");

    assert!(
        std::process::Command::new("docker")
            .args(["kill", &running[0]])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    );

    let after = wait_until(
        Duration::from_secs(60),
        "the counters to move on every count",
        || {
            let after = scrape_all(cluster);
            let restarted = cluster_sum(&after, "shoal_container_restarts_total", &[])
                > cluster_sum(&before, "shoal_container_restarts_total", &[]);
            let running = after[0].sum("shoal_pods", &[("phase", "Running")]) >= 2.0;
            Ok((restarted && running).then_some(after))
        },
    )
    .unwrap_or_else(|e| panic!("{}", fail(&format!("{e:#}"))));
    let m1 = &after[0];

    // Strictly more than before, each of them.
    let moved = |what: &str, old: f64, new: f64| {
        assert!(new > old, "{what}: {old} before, {new} after");
    };
    let n1_sum = |m: &Metrics, name: &str, labels: &[(&str, &str)]| m.sum(name, labels);
    for (name, labels) in [
        ("shoal_api_requests_total", vec![]),
        (
            "shoal_api_requests_total",
            vec![
                ("method", "GET"),
                ("route", "/api/v1/namespaces/:ns/:plural"),
                ("code", "200"),
            ],
        ),
        (
            "shoal_api_requests_total",
            vec![("route", "/metrics"), ("code", "200")],
        ),
        ("shoal_api_requests_total", vec![("code", "404")]),
        (
            "shoal_api_request_duration_seconds_count",
            vec![("route", "/api/v1/namespaces/:ns/:plural")],
        ),
        (
            "shoal_dns_queries_total",
            vec![("source", "zone"), ("rcode", "NOERROR")],
        ),
        (
            "shoal_dns_queries_total",
            vec![("source", "zone"), ("rcode", "NXDOMAIN")],
        ),
        (
            "shoal_dns_queries_total",
            vec![("source", "upstream"), ("rcode", "SERVFAIL")],
        ),
        ("shoal_dns_errors_total", vec![("kind", "upstream")]),
        (
            "shoal_gossip_bytes_total",
            vec![("direction", "out"), ("topic", "state")],
        ),
        ("shoal_gossip_bytes_total", vec![("direction", "in")]),
    ] {
        let what = format!("n1 {name}{labels:?}");
        moved(
            &what,
            n1_sum(&before[0], name, &labels),
            n1_sum(m1, name, &labels),
        );
    }
    // These happen on whichever node runs the pods or holds the controllers' role.
    for name in [
        "shoal_container_starts_total",
        "shoal_container_restarts_total",
        "shoal_scheduling_duration_seconds_count",
        "shoal_sync_rounds_total",
    ] {
        moved(
            &format!("cluster {name}"),
            cluster_sum(&before, name, &[]),
            cluster_sum(&after, name, &[]),
        );
    }
    assert!(
        cluster_sum(&after, "shoal_container_starts_total", &[])
            >= cluster_sum(&before, "shoal_container_starts_total", &[]) + 2.0,
        "both replicas' containers started"
    );
    // Gauges: the pods, as every node sees them; the label values stay bounded (the route
    // template, not the path).
    for (i, m) in after.iter().enumerate() {
        assert!(
            m.sum("shoal_pods", &[("phase", "Running")])
                + m.sum("shoal_pods", &[("phase", "Pending")])
                >= 2.0,
            "node {i} counts the 2 pods"
        );
    }
    assert!(
        !m1.0.iter().any(|s| s
            .labels
            .get("route")
            .is_some_and(|r| r.contains("/default/"))),
        "a route label holds a raw path"
    );
}
