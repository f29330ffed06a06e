//! The embedded DNS server with real `shoald` processes, the real Docker engine and a real DNS
//! client (`dig`, from Debian's dnsutils): every node answers the cluster's names alike
//! (Service A and SRV, headless Services, StatefulSet pod names, NXDOMAIN, SOA), forwards other
//! names to an upstream the test runs on loopback, answers SERVFAIL quickly when the upstream
//! is silent, and drops an unready pod's node and a dead node from the answers within 10 s.
//!
//! Without a Docker engine or `dig` these tests say so and pass, except where `CI` is set:
//! there they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testnet::fixture::apply;
use shoal_testnet::image::{ECHO_IMAGE, ECHO_PORT};
use shoal_testnet::{
    Cluster, Node, NodeOptions, PodView, Testnet, listing, pick_addresses, wait_until,
};

const DOMAIN: &str = "shoal.home.arpa";
/// The address the test's upstream answers for every A query.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);

/// Whether `dig` is installed; without it the tests fail under CI and are skipped elsewhere.
fn dig_available() -> bool {
    let ok = Command::new("dig")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "dig is missing (Debian: apt-get install dnsutils); .ci/run installs it"
        );
        eprintln!("skipped: dig is missing (apt-get install dnsutils)");
    }
    ok
}

/// What `dig` printed: the status and the answer section's records (`type data`).
#[derive(Debug)]
struct Answer {
    status: String,
    records: Vec<(String, String)>,
    authority: Vec<(String, String)>,
    took: Duration,
}

impl Answer {
    fn of_type(&self, t: &str) -> BTreeSet<String> {
        self.records
            .iter()
            .filter(|(ty, _)| ty == t)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

/// `dig @server name type`, one try with a 3 s timeout.
fn dig(server: &str, name: &str, qtype: &str) -> Answer {
    let started = Instant::now();
    let out = Command::new("dig")
        .args([
            &format!("@{server}"),
            name,
            qtype,
            "+tries=1",
            "+time=3",
            "+nocookie",
        ])
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|| format!("no answer: {text}"));
    let section = |header: &str| -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with(header) {
                inside = true;
                continue;
            }
            if inside {
                if line.trim().is_empty() {
                    break;
                }
                // name ttl class type data...
                let parts: Vec<&str> = line.split_whitespace().collect();
                if parts.len() >= 5 {
                    out.push((parts[3].to_string(), parts[4..].join(" ")));
                }
            }
        }
        out
    };
    Answer {
        status,
        records: section(";; ANSWER SECTION:"),
        authority: section(";; AUTHORITY SECTION:"),
        took,
    }
}

/// SRV records as (port, target).
type SrvSet = BTreeSet<(u16, String)>;

/// The same names through hickory's resolver (a second, independent client): the addresses
/// of `name` and the (port, target) of the SRV records of `srv`.
fn hickory(server: &str, name: &str, srv: &str) -> anyhow::Result<(BTreeSet<String>, SrvSet)> {
    use hickory_resolver::Resolver;
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::proto::rr::{RData, RecordType};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let config =
            ResolverConfig::from_parts(None, vec![], vec![NameServerConfig::udp(server.parse()?)]);
        let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        builder.options_mut().cache_size = 0;
        let resolver = builder.build()?;
        let ips = resolver
            .lookup_ip(format!("{name}."))
            .await?
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        let srvs = resolver
            .lookup(format!("{srv}."), RecordType::SRV)
            .await?
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some((srv.port, srv.target.to_string())),
                _ => None,
            })
            .collect();
        Ok((ips, srvs))
    })
}

/// A DNS server on loopback that answers every A query with [`UPSTREAM_ANSWER`] (others with
/// no records) and counts the queries; or, `silent`, never answers.
struct Upstream {
    addr: String,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    fn start(silent: bool) -> Upstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                if silent {
                    continue;
                }
                if let Some(reply) = upstream_reply(&buf[..n]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Upstream {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to a query: the question echoed, and for an A question one answer.
fn upstream_reply(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let mut i = 12;
    while *query.get(i)? != 0 {
        i += 1 + usize::from(query[i]);
    }
    let qend = i + 5;
    let question = query.get(12..qend)?;
    let qtype = u16::from_be_bytes([query[i + 1], query[i + 2]]);
    let answers: u16 = u16::from(qtype == 1);
    let mut out = Vec::new();
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x81, 0x80, 0, 1]);
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    if qtype == 1 {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        out.extend_from_slice(&UPSTREAM_ANSWER.octets());
    }
    Some(out)
}

fn manifests() -> String {
    let container = format!(
        r#"      terminationGracePeriodSeconds: 2
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
    );
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 18080, targetPort: http}}]
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
{container}---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: http, port: 18081, targetPort: http}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 2
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
{container}"#
    )
}

/// The pods of `app` in namespace default, as `node`'s API lists them.
fn pods(node: &Node, app: &str) -> anyhow::Result<Vec<PodView>> {
    listing::pods(node, "default", app)
}

/// The node addresses of the ready pods of `app`.
fn ready_addresses(cluster: &Cluster, pods: &[PodView]) -> BTreeSet<String> {
    pods.iter()
        .filter(|p| p.ready)
        .filter_map(|p| cluster.node(&p.node).ok())
        .map(|n| n.opts.ip.clone())
        .collect()
}

/// GET `path` on `host:port`.
fn http_get(host: &str, port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect((host, port))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn names_answer(cluster: &Cluster, server: &str) -> anyhow::Result<()> {
    let web = pods(&cluster.nodes()[0], "web")?;
    let db = pods(&cluster.nodes()[0], "db")?;
    let web_name = format!("web.default.svc.{DOMAIN}");
    let a = dig(server, &web_name, "A");
    anyhow::ensure!(a.status == "NOERROR", "{web_name} on {server}: {a:?}");
    anyhow::ensure!(
        a.of_type("A") == ready_addresses(cluster, &web),
        "{web_name} on {server}: {:?}, ready web pods on {:?}",
        a.of_type("A"),
        ready_addresses(cluster, &web)
    );
    let (ips, srvs) = hickory(server, &web_name, &format!("_http._tcp.{web_name}"))?;
    anyhow::ensure!(
        ips == ready_addresses(cluster, &web)
            && srvs == BTreeSet::from([(18080, format!("{web_name}."))]),
        "hickory's resolver on {server}: {ips:?} {srvs:?}"
    );
    let srv = dig(server, &format!("_http._tcp.{web_name}"), "SRV");
    anyhow::ensure!(
        srv.of_type("SRV") == BTreeSet::from([format!("0 10 18080 {web_name}.")]),
        "SRV of {web_name} on {server}: {srv:?}"
    );
    let db_name = format!("db.default.svc.{DOMAIN}");
    // Headless: the pods' own addresses, which the pod network routes.
    let headless = dig(server, &db_name, "A");
    let db_ips: BTreeSet<String> = db
        .iter()
        .filter(|p| p.ready)
        .map(|p| p.pod_ip.clone())
        .collect();
    anyhow::ensure!(
        headless.of_type("A") == db_ips && !db_ips.contains(""),
        "headless {db_name} on {server}: {headless:?}, want {db_ips:?}"
    );
    let targets: BTreeSet<String> = dig(server, &format!("_http._tcp.{db_name}"), "SRV")
        .of_type("SRV")
        .into_iter()
        .filter_map(|d| d.split_whitespace().nth(3).map(str::to_string))
        .collect();
    anyhow::ensure!(
        targets == BTreeSet::from([format!("db-0.{db_name}."), format!("db-1.{db_name}.")]),
        "headless SRV targets on {server}: {targets:?}"
    );
    for p in &db {
        let name = format!("{}.{db_name}", p.name);
        let want = BTreeSet::from([p.pod_ip.clone()]);
        let got = dig(server, &name, "A").of_type("A");
        anyhow::ensure!(got == want, "{name} on {server}: {got:?}, want {want:?}");
    }
    let missing = dig(server, &format!("nope.default.svc.{DOMAIN}"), "A");
    anyhow::ensure!(
        missing.status == "NXDOMAIN" && missing.authority.iter().any(|(t, _)| t == "SOA"),
        "a missing name on {server}: {missing:?}"
    );
    let soa = dig(server, DOMAIN, "SOA");
    anyhow::ensure!(
        soa.status == "NOERROR" && soa.of_type("SOA").len() == 1,
        "SOA on {server}: {soa:?}"
    );
    Ok(())
}

#[test]
fn every_node_answers_the_cluster_names_and_follows_readiness() {
    if !shoal_testnet::docker_ready() || !dig_available() {
        return;
    }
    let upstream = Upstream::start(false);
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::up_with_dns_upstream(3, dir.path(), &upstream.addr).unwrap();
    // The nodes stop before their containers are removed.
    let mut t = Testnet::new(cluster).unwrap();
    let cluster = &mut t.cluster;
    apply(&cluster.nodes()[0], &manifests());
    wait_until(Duration::from_secs(90), "web and db ready", || {
        let web = pods(&cluster.nodes()[0], "web")?;
        let db = pods(&cluster.nodes()[0], "db")?;
        let ready = |ps: &[PodView]| ps.len() == 2 && ps.iter().all(|p| p.ready);
        Ok((ready(&web) && ready(&db)).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));

    // Every node gives the same answers, within seconds of the pods' readiness.
    for node in cluster.nodes() {
        let server = node.opts.ip.clone();
        wait_until(
            Duration::from_secs(10),
            &format!("the cluster's names on {server}"),
            || names_answer(cluster, &server).map(Some),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    }

    // The name's answer and the Service's port reach a pod from the host, through any node
    // (one with a local endpoint, or one that forwards to another node).
    let web_name = format!("web.default.svc.{DOMAIN}");
    for node in cluster.nodes() {
        let addresses = dig(&node.opts.ip, &web_name, "A").of_type("A");
        assert!(!addresses.is_empty());
        for addr in &addresses {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "5", &format!("http://{addr}:18080/")])
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && body.contains("\"pod\""),
                "curl http://{addr}:18080/ (answered by {}): {body} {}",
                node.opts.ip,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let via_other = cluster
        .nodes()
        .iter()
        .map(|n| n.opts.ip.clone())
        .find(|ip| !dig(ip, &web_name, "A").of_type("A").contains(ip));
    if let Some(ip) = via_other {
        let body = http_get(&ip, 18080, "/").unwrap();
        assert!(
            body.contains("\"pod\""),
            "a node without a local endpoint forwards to another node's: {body}"
        );
    }

    // Other names go to the upstream, and a repeated one is answered from the cache.
    let server = cluster.nodes()[1].opts.ip.clone();
    let forwarded = dig(&server, "photos.example.test", "A");
    assert_eq!(forwarded.status, "NOERROR", "{forwarded:?}");
    assert_eq!(
        forwarded.of_type("A"),
        BTreeSet::from([UPSTREAM_ANSWER.to_string()])
    );
    let asked = upstream.queries.load(Ordering::Relaxed);
    assert!(asked >= 1);
    let again = dig(&server, "photos.example.test", "A");
    assert_eq!(again.of_type("A"), forwarded.of_type("A"));
    assert_eq!(
        upstream.queries.load(Ordering::Relaxed),
        asked,
        "the second query was answered from the cache"
    );

    // A pod that fails its readiness leaves the answers within 10 s.
    let web = pods(&cluster.nodes()[0], "web").unwrap();
    let victim = web.iter().find(|p| p.host.is_some()).unwrap().clone();
    let (host, port) = victim.host.clone().unwrap();
    http_get(&host, port, "/set?ready=fail").unwrap();
    let failed_at = Instant::now();
    for node in cluster.nodes() {
        let server = node.opts.ip.clone();
        wait_until(
            Duration::from_secs(10).saturating_sub(failed_at.elapsed()),
            &format!("{web_name} on {server} without unready {}", victim.name),
            || {
                let web = pods(&cluster.nodes()[0], "web")?;
                let want = ready_addresses(cluster, &web);
                let got = dig(&server, &web_name, "A").of_type("A");
                let victim_gone = !web.iter().any(|p| p.name == victim.name && p.ready);
                Ok((victim_gone && got == want).then_some(()))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    }
    eprintln!(
        "unready pod left the answers after {:?}",
        failed_at.elapsed()
    );
    http_get(&host, port, "/set?ready=ok").unwrap();

    // A killed node leaves the answers within 10 s.
    let web = pods(&cluster.nodes()[0], "web").unwrap();
    let doomed = web
        .iter()
        .find(|p| p.node != "n1")
        .map(|p| p.node.clone())
        .unwrap_or_else(|| "n2".to_string());
    let doomed_ip = cluster.node(&doomed).unwrap().opts.ip.clone();
    cluster.kill(&doomed).unwrap();
    let killed_at = Instant::now();
    for node in cluster.nodes().iter().filter(|n| n.opts.name != doomed) {
        let server = node.opts.ip.clone();
        wait_until(
            Duration::from_secs(10).saturating_sub(killed_at.elapsed()),
            &format!("{web_name} on {server} without {doomed}"),
            || {
                let got = dig(&server, &web_name, "A").of_type("A");
                Ok((!got.contains(&doomed_ip)).then_some(()))
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    }
    eprintln!(
        "killed node left the answers after {:?}",
        killed_at.elapsed()
    );
    drop(upstream);
}

#[test]
fn a_silent_upstream_gives_servfail_within_two_seconds() {
    if !dig_available() {
        return;
    }
    let silent = Upstream::start(true);
    let dir = tempfile::tempdir().unwrap();
    let ip = pick_addresses(1).unwrap()[0];
    let mut opts = NodeOptions::new("n1", &dir.path().join("n1"));
    opts.ip = ip.to_string();
    opts.dns_upstream = Some(silent.addr.clone());
    let node = Node::start(opts).unwrap();
    let server = ip.to_string();
    // The server is up once it answers its own zone.
    wait_until(Duration::from_secs(10), "the DNS server answers", || {
        Ok((dig(&server, DOMAIN, "SOA").status == "NOERROR").then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", node.log()));
    let a = dig(&server, "nothing.example.test", "A");
    assert_eq!(a.status, "SERVFAIL", "{a:?}");
    assert!(
        a.took < Duration::from_secs(2),
        "SERVFAIL after {:?}",
        a.took
    );
    assert!(
        silent.queries.load(Ordering::Relaxed) >= 1,
        "the upstream was asked"
    );
    let _: Option<Value> = None;
}
