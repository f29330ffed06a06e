//! Real machines: a testnet of hosts, each its own network namespace on a LAN bridge with its
//! own Docker engine and its own `shoald` (see docs/testnet.md, "Hosts"), and the faults only
//! separate machines show: a host powered off takes its containers with it, a host unplugged
//! falls silent, an engine stops under a running `shoald`.
//!
//! Without a Docker engine, or without what hosts need (root, ip, nsenter, dockerd, nft),
//! these tests say so and pass, except where `CI` is set: there they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_testnet::fixture::{apply, fetch_in, workload, workload_on};
use shoal_testnet::{Cluster, HostOptions, Node, PodView, listing, wait_until};

/// Whether host tests can run here; in CI they must.
fn hosts_ready() -> bool {
    if !shoal_testnet::docker_ready() {
        return false;
    }
    match shoal_testnet::hosts::available() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and test hosts cannot run: {e:#}"
            );
            eprintln!("skipping: {e:#}");
            false
        }
    }
}

/// A testnet of hosts with its directory; the cluster drops (and its LAN with it) before the
/// directory.
struct Hosts {
    cluster: Cluster,
    dir: tempfile::TempDir,
}

fn up(n: usize) -> Hosts {
    up_with(n, &HostOptions::default())
}

fn up_with(n: usize, opts: &HostOptions) -> Hosts {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::up_hosts(n, dir.path(), opts)
        .unwrap_or_else(|e| panic!("cannot start {n} hosts: {e:#}"));
    Hosts { cluster, dir }
}

/// Hosts whose engines hold no image at all.
fn up_empty(n: usize) -> Hosts {
    up_with(
        n,
        &HostOptions {
            image_on: Some(Vec::new()),
            ..HostOptions::default()
        },
    )
}

/// The node of host `name`.
fn node<'a>(c: &'a Cluster, name: &str) -> &'a Node {
    c.node(name).unwrap()
}

/// Ready pods of `app` as `watcher` lists them.
fn ready(watcher: &Node, app: &str) -> anyhow::Result<Vec<PodView>> {
    Ok(listing::pods(watcher, "default", app)?
        .into_iter()
        .filter(|p| p.ready)
        .collect())
}

/// How many ready pods of `app` each node runs.
fn per_node(pods: &[PodView]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in pods {
        *out.entry(p.node.clone()).or_default() += 1;
    }
    out
}

/// A client on host `on` ([`shoal_testnet::hosts::client`]).
fn client(
    cluster: &Cluster,
    on: &str,
    url: String,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> std::thread::JoinHandle<(usize, Vec<shoal_testnet::hosts::Failure>)> {
    shoal_testnet::hosts::client(&cluster.netns(on).unwrap(), url, stop, started)
}

#[test]
fn a_powered_off_host_takes_its_containers_and_boots_without_the_moved_pods() {
    if !hosts_ready() {
        return;
    }
    let h = up(3);
    let c = &h.cluster;
    apply(node(c, "h1"), &workload("default", "web", 4, Some(18080)));
    let before = wait_until(Duration::from_secs(120), "4 ready web replicas", || {
        let pods = ready(node(c, "h1"), "web")?;
        Ok((pods.len() == 4).then_some(pods))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    let spread = per_node(&before);
    let most = spread.values().copied().max().unwrap();
    assert!(most <= 2, "4 replicas spread over 3 hosts: {spread:?}");
    let victim = spread
        .iter()
        .find(|(_, n)| **n == most)
        .map(|(name, _)| name.clone())
        .unwrap();
    let moved: BTreeSet<String> = before
        .iter()
        .filter(|p| p.node == victim)
        .map(|p| p.name.clone())
        .collect();
    // Each host runs its replicas in its own engine.
    for host in c.names() {
        let running = h.cluster.running_pods(&host);
        let want = before.iter().filter(|p| p.node == host).count();
        assert_eq!(running.len(), want, "{host} runs {running:?}");
    }

    let mut h = h;
    let off = Instant::now();
    h.cluster.power_off(&victim).unwrap();
    let c = &h.cluster;
    let watcher_name = c.names().into_iter().find(|n| *n != victim).unwrap();
    let watcher = node(c, &watcher_name);
    wait_until(
        Duration::from_secs(15),
        "4 ready web replicas on the surviving hosts",
        || {
            let pods = ready(watcher, "web")?;
            Ok((pods.len() == 4 && pods.iter().all(|p| p.node != victim)).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(60)));
    eprintln!(
        "4 replicas serve again {:?} after the power-off",
        off.elapsed()
    );
    assert!(
        c.running_pods(&victim).is_empty(),
        "a powered-off host runs nothing"
    );

    // Boot: the host rejoins and never runs a moved pod, not even for a moment.
    h.cluster.boot(&victim).unwrap();
    let c = &h.cluster;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rejoined = false;
    while Instant::now() < deadline {
        let running = c.running_pods(&victim);
        let back: Vec<&String> = running
            .iter()
            .filter(|p| moved.contains(p.trim_start_matches("default/")))
            .collect();
        assert!(
            back.is_empty(),
            "{victim} ran moved pods again after its boot: {back:?}\n{}",
            c.log_tails(60)
        );
        rejoined = rejoined || c.wait_members_alive(Duration::from_millis(1)).is_ok();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rejoined, "{victim} rejoined\n{}", c.log_tails(40));
    let pods = ready(node(c, &watcher_name), "web").unwrap();
    assert_eq!(pods.len(), 4, "{pods:?}");
}

/// A Deployment `api` of 2 echo replicas allowed only on hosts `on` (required node affinity),
/// with a Service `api` on `port`.
fn api_on(on: &[&str], port: u16) -> String {
    let hosts = on.join(", ");
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: api}}
spec:
  selector: {{app: api}}
  ports: [{{name: http, port: {port}, targetPort: http}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {{key: kubernetes.io/hostname, operator: In, values: [{hosts}]}}
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: {image}
        ports: [{{containerPort: {echo}, name: http}}]
        readinessProbe:
          httpGet: {{path: /ready, port: http}}
          periodSeconds: 1
          failureThreshold: 1
        resources:
          requests: {{cpu: 50m, memory: 32Mi}}
"#,
        image = shoal_testnet::image::ECHO_IMAGE,
        echo = shoal_testnet::image::ECHO_PORT,
    )
}

/// Applies [`api_on`] h2 and h3 with its Service on `port`, waits until both replicas are
/// ready and h1's proxy serves it, and returns its URL on h1's address.
fn api_served_by_h1(c: &Cluster, port: u16) -> String {
    apply(node(c, "h1"), &api_on(&["h2", "h3"], port));
    wait_until(Duration::from_secs(120), "api ready on h2 and h3", || {
        let on: BTreeSet<String> = ready(node(c, "h1"), "api")?
            .into_iter()
            .map(|p| p.node)
            .collect();
        Ok((on == BTreeSet::from(["h2".to_string(), "h3".to_string()])).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    let url = format!("http://{}:{port}/", node(c, "h1").opts.ip);
    // h1's proxy serves it before anything happens.
    wait_until(Duration::from_secs(30), "h1's proxy to serve api", || {
        let curl = ["curl", "-sf", "-m", "1", &url].map(String::from);
        Ok((c.exec("h1", &curl)?.code == 0).then_some(()))
    })
    .unwrap();
    url
}

#[test]
fn requests_through_a_surviving_hosts_proxy_never_fail_while_another_host_powers_off() {
    if !hosts_ready() {
        return;
    }
    let mut h = up(3);
    let c = &h.cluster;
    let url = api_served_by_h1(c, 18090);

    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let requests = client(c, "h1", url, stop.clone(), epoch);
    std::thread::sleep(Duration::from_secs(2));
    let off = Instant::now();
    h.cluster.power_off("h2").unwrap();
    let c = &h.cluster;
    wait_until(
        Duration::from_secs(30),
        "2 ready api replicas on h3",
        || {
            let pods = ready(node(c, "h1"), "api")?;
            Ok((pods.len() == 2 && pods.iter().all(|p| p.node == "h3")).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(60)));
    eprintln!("api replaced {:?} after the power-off", off.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let (sent, failed) = requests.join().unwrap();
    eprintln!(
        "{sent} requests through h1's proxy during the power-off of h2, {} failed",
        failed.len()
    );
    assert!(sent > 50, "the client ran: {sent} requests");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed:\n{}\n{}",
        failed.len(),
        failed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        c.log_tails(40)
    );
}

#[test]
fn a_pod_reaches_a_service_on_another_host_until_that_host_is_unplugged() {
    if !hosts_ready() {
        return;
    }
    let mut h = up(2);
    let c = &h.cluster;
    apply(
        node(c, "h1"),
        &format!(
            "{}---\n{}",
            workload_on("default", "solo", 1, Some(18100), Some("h2")),
            workload_on("default", "client", 1, None, Some("h1"))
        ),
    );
    let (solo, client) = wait_until(Duration::from_secs(120), "solo on h2, client on h1", || {
        let solo = ready(node(c, "h1"), "solo")?;
        let client = ready(node(c, "h1"), "client")?;
        Ok(match (solo.as_slice(), client.as_slice()) {
            ([s], [cl]) if s.node == "h2" && cl.node == "h1" && cl.host.is_some() => {
                Some((s.clone(), cl.clone()))
            }
            _ => None,
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    let reaches = || -> anyhow::Result<bool> {
        let (status, body) = fetch_in(&client, "http://solo:18100/")?;
        Ok(status == 200 && body.contains(&solo.name))
    };
    wait_until(
        Duration::from_secs(30),
        "the client pod to reach solo by name",
        || Ok(reaches()?.then_some(())),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));

    h.cluster.unplug("h2").unwrap();
    wait_until(
        Duration::from_secs(30),
        "solo out of reach with h2 unplugged",
        || Ok((!reaches().unwrap_or(false)).then_some(())),
    )
    .unwrap();
    h.cluster.plug("h2").unwrap();
    wait_until(
        Duration::from_secs(60),
        "solo in reach again after the plug",
        || Ok(reaches()?.then_some(())),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", h.cluster.log_tails(40)));
}

/// A StatefulSet `db` of 3 echo pods.
const DB: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: shoal-test/echo:latest
        ports: [{containerPort: 8080, name: http}]
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 1
          failureThreshold: 1
        resources:
          requests: {cpu: 50m, memory: 32Mi}
";

/// The running copies of each `db-K` over every host's engine; fails when one runs twice.
fn ordinals_once(c: &Cluster) -> Result<BTreeMap<String, String>, String> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for host in c.names() {
        for pod in c.running_pods(&host) {
            let Some(name) = pod
                .strip_prefix("default/")
                .filter(|n| n.starts_with("db-"))
            else {
                continue;
            };
            if let Some(other) = seen.insert(name.to_string(), host.clone()) {
                return Err(format!("{name} runs on {other} and on {host}"));
            }
        }
    }
    Ok(seen)
}

/// Polls every engine for `for_` and fails at once when an ordinal runs twice.
fn watch_ordinals(c: &Cluster, for_: Duration) {
    let deadline = Instant::now() + for_;
    while Instant::now() < deadline {
        if let Err(e) = ordinals_once(c) {
            panic!("{e}\n{}", c.log_tails(60));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the declared pods run: db-0..2 ready (each in exactly one engine) and 4 ready
/// web replicas; never an ordinal twice meanwhile.
fn wait_declared(c: &Cluster, watcher: &str, timeout: Duration) {
    wait_until(timeout, "db-0..2 and 4 web replicas ready", || {
        let running = ordinals_once(c).map_err(|e| anyhow::anyhow!("{e}"));
        let running = match running {
            Ok(r) => r,
            Err(e) => panic!("{e:#}\n{}", c.log_tails(60)),
        };
        let db: BTreeSet<String> = ready(node(c, watcher), "db")?
            .into_iter()
            .map(|p| p.name)
            .collect();
        let web = ready(node(c, watcher), "web")?.len();
        let want: BTreeSet<String> = ["db-0", "db-1", "db-2"].map(String::from).into();
        let engines: BTreeSet<String> = running.keys().cloned().collect();
        Ok((db == want && engines == want && web == 4).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(60)));
}

#[test]
fn a_statefulset_never_runs_an_ordinal_twice_across_a_partition_and_a_power_cut() {
    if !hosts_ready() {
        return;
    }
    let mut h = up(3);
    let c = &h.cluster;
    apply(
        node(c, "h1"),
        &format!("{DB}---\n{}", workload("default", "web", 4, None)),
    );
    wait_declared(c, "h1", Duration::from_secs(180));
    let on: BTreeMap<String, String> = ready(node(c, "h1"), "db")
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.node))
        .collect();
    // The minority: a host with an ordinal.
    let minority = on["db-0"].clone();
    let majority: Vec<String> = c.names().into_iter().filter(|n| *n != minority).collect();
    h.cluster
        .partition(&[majority.clone(), vec![minority.clone()]])
        .unwrap();
    let c = &h.cluster;
    // Long enough for the majority to move db-0 (dead + grace) and the minority to fence it.
    watch_ordinals(c, Duration::from_secs(25));
    h.cluster.heal().unwrap();
    let c = &h.cluster;
    wait_declared(c, &majority[0], Duration::from_secs(90));

    // The whole cluster loses power; one host comes back alone first. It reaches no peer, so
    // after its wait it goes on alone as the docs say: its Deployment pods start, its
    // StatefulSet ordinal does not (it sees no majority).
    // After the heal the spread may still move a web pod: the engines must have settled (the
    // same pods for 3 s) before the host to boot first is picked from them.
    let engines = |c: &Cluster| -> BTreeMap<String, Vec<String>> {
        c.names()
            .into_iter()
            .map(|h| {
                let mut pods = c.running_pods(&h);
                pods.sort();
                (h, pods)
            })
            .collect()
    };
    let mut last = engines(c);
    let mut since = Instant::now();
    let settled = loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = engines(c);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= Duration::from_secs(3) {
            break now;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the engines never settled: {last:?}"
        );
    };
    let first = settled
        .iter()
        .find(|(_, pods)| {
            pods.iter().any(|p| p.starts_with("default/web-"))
                && pods.iter().any(|p| p.starts_with("default/db-"))
        })
        .map(|(h, _)| h.clone())
        .unwrap_or_else(|| panic!("no host runs both a web pod and an ordinal: {settled:?}"));
    for host in c.names() {
        h.cluster.power_off(&host).unwrap();
    }
    h.cluster.boot(&first).unwrap();
    let c = &h.cluster;
    wait_until(
        Duration::from_secs(60),
        "a web pod running on the host alone",
        || {
            Ok(c.running_pods(&first)
                .iter()
                .any(|p| p.starts_with("default/web-"))
                .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", c.log_tails(40)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let db: Vec<String> = c
            .running_pods(&first)
            .into_iter()
            .filter(|p| p.starts_with("default/db-"))
            .collect();
        assert!(
            db.is_empty(),
            "{first}, alone, runs {db:?}\n{}",
            c.log_tails(40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        node(c, &first).log().contains("going on alone"),
        "{}",
        c.log_tails(40)
    );
    h.cluster.boot_all().unwrap();
    let c = &h.cluster;
    wait_declared(c, "h1", Duration::from_secs(120));
    watch_ordinals(c, Duration::from_secs(5));
}

#[test]
fn an_engine_that_stops_under_a_running_shoald_takes_its_pods_out_and_back() {
    if !hosts_ready() {
        return;
    }
    let mut h = up(3);
    let c = &h.cluster;
    let url = api_served_by_h1(c, 18091);

    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let requests = client(c, "h1", url, stop.clone(), epoch);
    std::thread::sleep(Duration::from_secs(2));
    let stopped = Instant::now();
    h.cluster.engine_stop("h2").unwrap();
    // Requests in flight while the engine kills its containers (from a client timeout before
    // the stop began until it ended) can be cut: their container dies under them, and a
    // request already delivered is never sent twice.
    let killing = stopped
        .duration_since(epoch)
        .saturating_sub(Duration::from_secs(1))
        ..=Instant::now().duration_since(epoch);
    let c = &h.cluster;
    // Its pod turns not Ready within a few probe periods.
    wait_until(Duration::from_secs(10), "api on h2 not ready", || {
        let pods = listing::pods(node(c, "h1"), "default", "api")?;
        Ok(pods
            .iter()
            .all(|p| p.node != "h2" || !p.ready)
            .then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    eprintln!(
        "api on h2 not ready {:?} after its engine stopped",
        stopped.elapsed()
    );
    // The node says why. Its condition reaches h1 with its next whole record, which may
    // follow the pods' statuses by a beat: within a few seconds.
    wait_until(
        Duration::from_secs(10),
        "EngineUnavailable on h2 in get nodes",
        || {
            let nodes = node(c, "h1").cli(&["get", "nodes"])?.success()?;
            Ok(nodes
                .stdout
                .lines()
                .find(|l| l.starts_with("h2 "))
                .is_some_and(|l| l.contains("EngineUnavailable"))
                .then_some(()))
        },
    )
    .unwrap_or_else(|e| {
        let nodes = node(c, "h1").cli(&["get", "nodes"]).map(|o| o.stdout);
        panic!("{e:#}\nget nodes:\n{nodes:?}")
    });
    let described = node(c, "h1")
        .cli(&["describe", "node", "h2"])
        .unwrap()
        .success()
        .unwrap();
    assert!(
        described.stdout.contains("EngineUnavailable"),
        "describe node h2:\n{}",
        described.stdout
    );
    // Replaced elsewhere after the grace: only h3 may run api.
    wait_until(
        Duration::from_secs(30),
        "2 ready api replicas on h3",
        || {
            let pods = ready(node(c, "h1"), "api")?;
            Ok((pods.len() == 2 && pods.iter().all(|p| p.node == "h3")).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(60)));
    eprintln!(
        "api replaced {:?} after the engine stopped",
        stopped.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (sent, failed) = requests.join().unwrap();
    let (cut, failed): (Vec<_>, Vec<_>) = failed.into_iter().partition(|f| killing.contains(&f.at));
    eprintln!(
        "{sent} requests through h1's proxy while h2's engine stopped, {} failed, {} cut while \
         the engine killed its containers ({killing:?})",
        failed.len(),
        cut.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed:\n{}",
        failed.len(),
        failed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The engine returns: the node recovers without a restart and runs pods again.
    let pid = c.node("h2").unwrap().pid();
    h.cluster.engine_start("h2").unwrap();
    let c = &h.cluster;
    wait_until(
        Duration::from_secs(30),
        "h2 without EngineUnavailable",
        || {
            let nodes = node(c, "h1").cli(&["get", "nodes"])?.success()?;
            let line = nodes
                .stdout
                .lines()
                .find(|l| l.starts_with("h2 "))
                .unwrap_or_default()
                .to_string();
            Ok((!line.is_empty() && !line.contains("EngineUnavailable")).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    assert_eq!(
        c.node("h2").unwrap().pid(),
        pid,
        "shoald on h2 was not restarted"
    );
    node(c, "h1")
        .cli(&["scale", "deployment", "api", "--replicas", "3"])
        .unwrap()
        .success()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "a ready api replica on h2 again",
        || {
            let pods = ready(node(c, "h1"), "api")?;
            Ok((pods.len() == 3 && pods.iter().any(|p| p.node == "h2")).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(60)));
}

#[test]
fn a_second_machine_with_a_taken_name_is_refused_and_never_runs_its_pods() {
    if !hosts_ready() {
        return;
    }
    let mut h = up(2);
    let c = &h.cluster;
    apply(
        node(c, "h1"),
        &workload_on("default", "pinned", 2, None, Some("h1")),
    );
    wait_until(
        Duration::from_secs(120),
        "2 pinned pods ready on h1",
        || {
            let pods = ready(node(c, "h1"), "pinned")?;
            Ok((pods.len() == 2 && pods.iter().all(|p| p.node == "h1")).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));

    // A third machine whose node is also called h1 (as every Pi is `raspberrypi`). It may be
    // refused before its API answers, or just after.
    let added = h.cluster.add_host(Some("h1"));
    let log = h.dir.path().join("h3").join("shoald.log");
    let c = &h.cluster;
    let refused = wait_until(
        Duration::from_secs(60),
        "the second h1 to be refused",
        || {
            let running = c.nodes().iter().any(|n| {
                n.opts.name == "h3"
                    && n.pid().is_some_and(|p| {
                        std::fs::read_to_string(format!("/proc/{p}/stat"))
                            .is_ok_and(|s| !s.contains(") Z"))
                    })
            });
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok((!running && text.contains("--node-name")).then_some(text))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nadd_host: {added:?}\nits log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(refused.contains("belongs to another node"), "{refused}");
    // The cluster lists two nodes; the pinned pods run in h1's engine only, never in h3's.
    let nodes = listing::names(node(c, "h1"), "/api/v1/nodes").unwrap();
    assert_eq!(nodes, ["h1", "h2"]);
    assert!(
        c.running_pods("h3").is_empty(),
        "h3 runs {:?}",
        c.running_pods("h3")
    );
    assert_eq!(
        c.running_pods("h1")
            .iter()
            .filter(|p| p.contains("pinned"))
            .count(),
        2,
        "h1 runs {:?}",
        c.running_pods("h1")
    );
}

#[test]
fn hosts_that_join_cut_off_from_the_first_move_nothing_off_it_when_they_reach_it() {
    if !hosts_ready() {
        return;
    }
    let mut h = up(1);
    let c = &h.cluster;
    apply(node(c, "h1"), &workload("default", "web", 4, None));
    let before: BTreeSet<String> = wait_until(Duration::from_secs(120), "4 web pods on h1", || {
        let pods = ready(node(c, "h1"), "web")?;
        Ok((pods.len() == 4).then(|| pods.into_iter().map(|p| p.name).collect()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    // h2 and h3 join while the LAN drops everything between them and h1.
    h.cluster
        .partition(&[vec!["h1".into()], vec!["h2".into(), "h3".into()]])
        .unwrap();
    h.cluster.add_host(None).unwrap();
    h.cluster.add_host(None).unwrap();
    // Longer than dead-after plus the reschedule grace.
    std::thread::sleep(Duration::from_secs(12));
    h.cluster.heal().unwrap();
    let c = &h.cluster;
    c.wait_members_alive(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    // For a while after the heal, h1 keeps running at least half of its pods at every poll
    // (only the spread may move some, one at a time), and in the end no host holds all 4.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut settled = false;
    while Instant::now() < deadline {
        let on_h1: BTreeSet<String> = c
            .running_pods("h1")
            .into_iter()
            .map(|p| p.trim_start_matches("default/").to_string())
            .filter(|p| before.contains(p))
            .collect();
        assert!(
            on_h1.len() >= 2,
            "pods moved off h1 when h2 and h3 reached it: it runs {on_h1:?}\n{}",
            c.log_tails(60)
        );
        let pods = ready(node(c, "h1"), "web").unwrap_or_default();
        let spread = per_node(&pods);
        settled = pods.len() == 4 && spread.values().all(|n| *n < 4) && spread.len() >= 2;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        settled,
        "the spread after the merge: {:?}",
        per_node(&ready(node(c, "h1"), "web").unwrap())
    );
    let events = node(c, "h1")
        .cli(&["get", "events"])
        .unwrap()
        .success()
        .unwrap();
    assert!(
        !events
            .stdout
            .lines()
            .any(|l| l.contains("h1") && l.contains("dead")),
        "nothing was moved off h1 as dead:\n{}",
        events.stdout
    );
}

#[test]
fn the_role_moves_off_a_host_whose_state_store_fails() {
    if !hosts_ready() {
        return;
    }
    let mut h = up(3);
    let c = &h.cluster;
    let first = wait_until(
        Duration::from_secs(30),
        "one role holder everywhere",
        || {
            let seen: Vec<Option<String>> = c
                .nodes()
                .iter()
                .map(listing::role_holder)
                .collect::<Result<_, _>>()?;
            Ok(match &seen[0] {
                Some(h) if seen.iter().all(|s| s.as_ref() == Some(h)) => Some(h.clone()),
                _ => None,
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    // The holder's shoald starts again with the hook: its state store fails 10 s after the
    // start. (It may or may not hold the role again by then: a restarted node claims its
    // name, and so its role, only after a sync.) Once degraded, it never holds the role.
    let witness = c.names().into_iter().find(|n| *n != first).unwrap();
    h.cluster.node_mut(&first).unwrap().opts.env =
        vec![("SHOAL_TEST_FAIL_TASK".into(), "state:10".into())];
    h.cluster.restart(&first).unwrap();
    let c = &h.cluster;
    wait_until(
        Duration::from_secs(30),
        "the host to say it is degraded",
        || {
            Ok(node(c, &first)
                .log()
                .contains("this node is degraded")
                .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    let next = wait_until(Duration::from_secs(30), "the role to move", || {
        Ok(listing::role_holder(node(c, &witness))?.filter(|h| *h != first))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(40)));
    assert_ne!(next, first);
    std::thread::sleep(Duration::from_secs(3));
    let now = listing::role_holder(node(c, &witness)).unwrap();
    assert!(
        now.as_deref().is_some_and(|h| h != first),
        "the degraded host took the role back: {now:?}"
    );
}

/// `shoal image push` from the machine (the workstation) into a host whose engine has no
/// image and that may pull from no registry outside the LAN: the pods run from what was pushed.
#[test]
fn an_image_pushed_from_the_workstation_runs_on_a_host_without_a_registry() {
    if !hosts_ready() {
        return;
    }
    let hosts = up_empty(1);
    let cluster = &hosts.cluster;
    let image = shoal_testnet::image::ECHO_IMAGE;
    let engine_has = |c: &Cluster| c.docker("h1", &["image", "inspect", image]).is_ok();
    assert!(
        !engine_has(cluster),
        "the host's engine has the image already"
    );

    let h1 = node(cluster, "h1");
    let out = h1
        .cli(&["image", "push", image])
        .unwrap()
        .success()
        .unwrap();
    assert!(out.stdout.contains("pushed to node h1"), "{}", out.stdout);
    assert!(out.stdout.contains(image), "{}", out.stdout);
    assert!(
        engine_has(cluster),
        "the push left nothing in the host's engine"
    );

    apply(h1, &workload("default", "pushed", 2, None));
    wait_until(
        Duration::from_secs(60),
        "2 ready pods from the pushed image",
        || Ok((ready(h1, "pushed")?.len() == 2).then_some(())),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(40)));

    // Something that is not an image is refused, and says why.
    let out = h1
        .cli(&["image", "push", "shoal-test/no-such-image:0"])
        .unwrap();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("not in this machine's Docker engine"),
        "{}",
        out.stderr
    );
}

/// Events whose message contains `needle`, as `watcher` lists them (`get events`).
fn events_with(watcher: &Node, needle: &str) -> anyhow::Result<Vec<String>> {
    let out = watcher.cli(&["get", "events"])?.success()?;
    Ok(out
        .stdout
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect())
}

/// Waits until `app` has 3 ready pods, one on each of 3 hosts, as `watcher` lists them.
fn one_ready_per_host(cluster: &Cluster, watcher: &Node, app: &str, timeout: Duration) {
    wait_until(timeout, "3 ready pods, one per host", || {
        let pods = ready(watcher, app)?;
        Ok((pods.len() == 3 && per_node(&pods).len() == 3).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(40)));
}

/// The two `Fetched image` events a Deployment over three hosts makes when one host holds or
/// pulls the image, as `watcher` lists them (waits up to 20 s for them).
fn two_fetches(cluster: &Cluster, watcher: &Node) -> Vec<String> {
    wait_until(Duration::from_secs(20), "two fetch events", || {
        let e = events_with(watcher, "Fetched image")?;
        Ok((e.len() >= 2).then_some(e))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(40)))
}

/// A registry on the LAN (the machine's address on it, plain HTTP, as a home lab's), and hosts
/// whose engines hold no image: a Deployment spread over three hosts runs on each of them, and
/// the registry serves each blob once: one host pulls, the two others fetch from it.
#[test]
fn three_hosts_download_a_new_image_from_the_registry_once() {
    if !hosts_ready() || !shoal_testnet::registry::ready() {
        return;
    }
    let hosts = up_empty(3);
    let cluster = &hosts.cluster;
    let reg = cluster.lan_registry().unwrap();
    let image = reg
        .push(shoal_testnet::image::ECHO_IMAGE, "team/echo:v1")
        .unwrap();
    let pushed = reg.requests().unwrap().len();
    let h1 = node(cluster, "h1");
    let manifest =
        workload("default", "lan", 3, None).replace(shoal_testnet::image::ECHO_IMAGE, &image);
    apply(h1, &manifest);
    one_ready_per_host(cluster, h1, "lan", Duration::from_secs(90));
    for host in ["h1", "h2", "h3"] {
        assert!(
            cluster.docker(host, &["image", "inspect", &image]).is_ok(),
            "{host}'s engine has no {image}"
        );
    }
    // Each blob downloaded once for the three hosts.
    let requests = reg.requests().unwrap();
    let mut downloads: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests[pushed..]
        .iter()
        .filter(|r| r.is_blob_get("team/echo"))
    {
        *downloads.entry(r.path.clone()).or_default() += 1;
    }
    assert!(
        !downloads.is_empty(),
        "the registry served no blob: {requests:#?}"
    );
    assert!(
        downloads.values().all(|n| *n == 1),
        "a blob was downloaded more than once: {downloads:#?}"
    );
    // The two others fetched it from a peer (their logs say so; a pod the spread moves while
    // it waits leaves no event of its own, so events are counted in the test without a
    // registry).
    let fetchers: Vec<String> = ["h1", "h2", "h3"]
        .iter()
        .filter(|h| node(cluster, h).log().contains("fetched image from a peer"))
        .map(|h| (*h).to_string())
        .collect();
    assert_eq!(fetchers.len(), 2, "{fetchers:?}\n{}", cluster.log_tails(40));
    drop(reg);
}

/// `shoal image push --all` into a cluster of hosts with empty engines and no registry: every
/// host's engine holds the image soon after, without a pod asking for it; a Deployment then
/// runs on every host, and `shoal get images` lists the image on all three with its pods.
#[test]
fn an_image_pushed_with_all_reaches_every_host() {
    if !hosts_ready() {
        return;
    }
    let hosts = up_empty(3);
    let cluster = &hosts.cluster;
    let image = shoal_testnet::image::ECHO_IMAGE;
    let h2 = node(cluster, "h2");
    let out = h2
        .cli(&["image", "push", "--all", image])
        .unwrap()
        .success()
        .unwrap();
    assert!(out.stdout.contains("pushed to node h2"), "{}", out.stdout);
    wait_until(
        Duration::from_secs(60),
        "every engine holding the image",
        || {
            Ok(["h1", "h2", "h3"]
                .iter()
                .all(|h| cluster.docker(h, &["image", "inspect", image]).is_ok())
                .then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(40)));
    apply(h2, &workload("default", "everywhere", 3, None));
    one_ready_per_host(cluster, h2, "everywhere", Duration::from_secs(60));
    let line = wait_until(
        Duration::from_secs(30),
        "the image listed with its pods",
        || {
            let out = node(cluster, "h1").cli(&["get", "images"])?.success()?;
            Ok(out
                .stdout
                .lines()
                .find(|l| {
                    l.starts_with(image)
                        && l.contains("h1,h2,h3")
                        && l.matches("default/everywhere-").count() == 3
                })
                .map(str::to_string))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(40)));
    assert!(line.contains(image), "{line}");
}

/// The image only in one host's engine and no registry at all: a Deployment over three hosts
/// runs on all three, the two others fetch it from that host (events say so), their engines
/// then hold it, and `shoal get images` lists it on every host with the pods using it.
#[test]
fn an_image_on_one_host_is_fetched_by_the_others_without_a_registry() {
    if !hosts_ready() {
        return;
    }
    let hosts = up_with(
        3,
        &HostOptions {
            image_on: Some(vec!["h1".into()]),
            ..HostOptions::default()
        },
    );
    let cluster = &hosts.cluster;
    let image = shoal_testnet::image::ECHO_IMAGE;
    for host in ["h2", "h3"] {
        assert!(
            cluster.docker(host, &["image", "inspect", image]).is_err(),
            "{host}'s engine has the image already"
        );
    }
    let h1 = node(cluster, "h1");
    apply(h1, &workload("default", "shared", 3, None));
    one_ready_per_host(cluster, h1, "shared", Duration::from_secs(90));
    for host in ["h2", "h3"] {
        assert!(
            cluster.docker(host, &["image", "inspect", image]).is_ok(),
            "{host}'s engine does not hold {image}"
        );
    }
    // From h1, or the second from whichever host fetched first.
    let fetched = two_fetches(cluster, h1);
    assert!(
        fetched.iter().any(|e| e.contains("from node h1")),
        "{fetched:#?}"
    );
    // Every host lists it, with the three pods.
    let h3 = node(cluster, "h3");
    let line = wait_until(Duration::from_secs(30), "the image on every host", || {
        let out = h3.cli(&["get", "images"])?.success()?;
        Ok(out
            .stdout
            .lines()
            .find(|l| l.starts_with(image) && l.contains("h1,h2,h3"))
            .map(str::to_string))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(40)));
    assert_eq!(line.matches("default/shared-").count(), 3, "{line}");
}

/// The one holder of an image powers off while a host fetches the image from it (its sends
/// slowed by the test hook): the fetch goes on from the registry, and the pod runs from an
/// image loaded whole.
#[test]
fn a_fetch_whose_holder_powers_off_goes_on_from_the_registry() {
    if !hosts_ready() || !shoal_testnet::registry::ready() {
        return;
    }
    let mut hosts = up_with(
        3,
        &HostOptions {
            image_on: Some(vec!["h1".into()]),
            env: vec![(
                "SHOAL_TEST_IMAGE_SEND_BYTES_PER_SEC".into(),
                "400000".into(),
            )],
            ..HostOptions::default()
        },
    );
    let reg = hosts.cluster.lan_registry().unwrap();
    let image = reg
        .push(shoal_testnet::image::ECHO_IMAGE, "team/echo:v1")
        .unwrap();
    // h1 holds it under the registry's name too.
    hosts
        .cluster
        .docker("h1", &["tag", shoal_testnet::image::ECHO_IMAGE, &image])
        .unwrap();
    let h2_name = "h2";
    // The others know that h1 holds it under that name (its image list is read every 10 s).
    wait_until(
        Duration::from_secs(30),
        "h1 listed as holding the image",
        || {
            let out = node(&hosts.cluster, h2_name)
                .cli(&["get", "images", &image])?
                .success()?;
            Ok(out.stdout.contains("h1").then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", hosts.cluster.log_tails(40)));
    let manifest = workload_on("default", "cut", 1, None, Some("h3"))
        .replace(shoal_testnet::image::ECHO_IMAGE, &image);
    apply(node(&hosts.cluster, h2_name), &manifest);
    // The fetch has begun: h1 is sending.
    wait_until(Duration::from_secs(60), "h1 sending the image", || {
        Ok(node(&hosts.cluster, "h1")
            .log()
            .contains("sending image to a peer")
            .then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", hosts.cluster.log_tails(40)));
    std::thread::sleep(Duration::from_secs(2));
    hosts.cluster.power_off("h1").unwrap();
    let cluster = &hosts.cluster;
    let h2 = node(cluster, h2_name);
    wait_until(Duration::from_secs(120), "the pod ready on h3", || {
        let pods = ready(h2, "cut")?;
        Ok((pods.len() == 1 && pods[0].node == "h3").then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(60)));
    assert!(
        reg.blob_gets("team/echo").unwrap() > 0,
        "h3 never went to the registry: {:#?}",
        reg.requests()
    );
    let pulled = events_with(h2, "Successfully pulled image")
        .unwrap()
        .join("\n");
    assert!(pulled.contains(&image), "{pulled}");
    // It was cut in the middle: the fetch began, failed, and h1 never finished sending.
    assert!(
        node(cluster, "h3")
            .log()
            .contains("fetching image from a peer failed"),
        "{}",
        cluster.log_tails(60)
    );
    assert!(
        !node(cluster, "h1").log().contains("sent image to a peer"),
        "h1 sent the whole image before it powered off"
    );
}

/// A headless Service and a StatefulSet `db` of 3, each pod on its own host.
const DB_NET: &str = "apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: http, port: 18088, targetPort: http}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: shoal-test/echo:latest
        imagePullPolicy: IfNotPresent
        ports: [{containerPort: 8080, name: http}]
";

/// `dig +short` of `name` (type `kind`) at the DNS server on `server`, as a set of lines.
fn dig_short(server: &str, name: &str, kind: &str) -> BTreeSet<String> {
    let out = std::process::Command::new("dig")
        .args([
            &format!("@{server}"),
            name,
            kind,
            "+short",
            "+time=2",
            "+tries=2",
        ])
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Host `name`'s pod routes: its `ip route` lines of protocol 83.
fn pod_route_lines(c: &Cluster, name: &str) -> String {
    let netns = c.netns(name).unwrap();
    let out = std::process::Command::new("ip")
        .args(["-n", &netns, "route", "show", "proto", "83"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pod subnets host `name` routes (see [`pod_route_lines`]).
fn pod_routes(c: &Cluster, name: &str) -> BTreeSet<String> {
    pod_route_lines(c, name)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Every host's pod subnet, as `watcher`'s API shows the nodes (`spec.podCIDR`).
fn pod_cidrs(watcher: &Node) -> anyhow::Result<BTreeMap<String, String>> {
    let (code, list) = watcher.api()?.get("/api/v1/nodes")?;
    anyhow::ensure!(code == 200, "nodes: {code} {list}");
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n["metadata"]["name"].as_str()?.to_string(),
                n["spec"]["podCIDR"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// Applies [`DB_NET`] and checks, once its pods run one per host, that each host has its own
/// pod subnet, every pod reaches every ordinal by name and by address without NAT, and the
/// headless names answer the pods' addresses and SRV the container port. Returns the pods and
/// each host's subnet.
fn db_reaches_everywhere(c: &Cluster) -> (Vec<PodView>, BTreeMap<String, String>) {
    let watcher = node(c, "h1");
    apply(watcher, DB_NET);
    one_ready_per_host(c, watcher, "db", Duration::from_secs(120));
    let pods = ready(watcher, "db").unwrap();
    let cidrs = pod_cidrs(watcher).unwrap();
    assert_eq!(cidrs.len(), 3, "{cidrs:?}");
    assert_eq!(
        cidrs.values().collect::<BTreeSet<_>>().len(),
        3,
        "one subnet each: {cidrs:?}"
    );
    for p in &pods {
        let cidr = &cidrs[&p.node];
        let prefix = cidr.trim_end_matches("0/24");
        assert!(
            p.pod_ip.starts_with(prefix),
            "{} on {} has {}, not in {cidr}",
            p.name,
            p.node,
            p.pod_ip
        );
    }
    // Every pod reaches every ordinal by its name, on its own host and the others'.
    for client in &pods {
        for k in 0..3 {
            let url = format!("http://db-{k}.db:8080/");
            wait_until(
                Duration::from_secs(30),
                &format!("{} to reach db-{k}", client.name),
                || {
                    let (status, body) = fetch_in(client, &url)?;
                    Ok((status == 200 && body.contains(&format!("\"db-{k}\""))).then_some(()))
                },
            )
            .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(30)));
        }
    }
    // By address, and the server sees the client's own pod address.
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        let (client, server) = (&pods[a], &pods[b]);
        let (status, body) =
            fetch_in(client, &format!("http://{}:8080/client", server.pod_ip)).unwrap();
        assert_eq!(
            (status, body.trim()),
            (200, client.pod_ip.as_str()),
            "{} → {}",
            client.name,
            server.name
        );
    }
    // Headless names answer the pods' addresses, and SRV the container port.
    let ips: BTreeSet<String> = pods.iter().map(|p| p.pod_ip.clone()).collect();
    let server = &watcher.opts.ip;
    assert_eq!(
        dig_short(server, "db.default.svc.shoal.home.arpa", "A"),
        ips
    );
    let srv = dig_short(server, "_http._tcp.db.default.svc.shoal.home.arpa", "SRV");
    assert_eq!(srv.len(), 3, "{srv:?}");
    assert!(
        srv.iter().all(|r| r.starts_with("0 10 8080 db-")),
        "{srv:?}"
    );
    (pods, cidrs)
}

/// The pod network over three hosts on one LAN: every pod reaches every StatefulSet pod by
/// its name (`db-K.db`) and by its address, without NAT; headless names answer the pods'
/// addresses and SRV the container port; a pod cannot open its node's API port; and routes
/// follow a host powered off and a host added.
#[test]
fn pods_reach_each_other_by_address_and_statefulset_names_across_hosts() {
    if !hosts_ready() {
        return;
    }
    let mut h = up(3);
    let c = &h.cluster;
    let watcher = node(c, "h1");
    let (pods, cidrs) = db_reaches_everywhere(c);
    let server = &watcher.opts.ip;
    // The node's API port is refused to its pods.
    let on_h1 = pods.iter().find(|p| p.node == "h1").unwrap();
    // (`/healthz` needs no token: it would answer 200.)
    let (status, body) = fetch_in(on_h1, &format!("http://{server}:7070/healthz")).unwrap();
    assert!(
        status == 502 && body.contains("cannot connect"),
        "the API answered a pod: {status} {body}"
    );
    // describe node shows the subnet and the route mode.
    let out = watcher
        .cli(&["describe", "node", "h2"])
        .unwrap()
        .success()
        .unwrap()
        .stdout;
    assert!(
        out.contains(&format!("PodCIDR:            {}", cidrs["h2"]))
            && out.contains("Pod Route:          host-gateway from h1"),
        "{out}"
    );

    // What a LAN machine needs to reach the pods: each subnet via its host.
    let printed = watcher
        .cli(&["pod-routes"])
        .unwrap()
        .success()
        .unwrap()
        .stdout;
    for h in ["h1", "h2", "h3"] {
        let line = format!(
            "ip route add {} via {}   # {h}",
            cidrs[h],
            node(c, h).opts.ip
        );
        assert!(printed.contains(&line), "{line} in {printed}");
    }

    // Routes follow membership: h3 powered off leaves h1's routes, an added host joins them.
    assert_eq!(
        pod_routes(c, "h1"),
        BTreeSet::from([cidrs["h2"].clone(), cidrs["h3"].clone()])
    );
    h.cluster.power_off("h3").unwrap();
    let c = &h.cluster;
    wait_until(Duration::from_secs(20), "h1 to drop h3's route", || {
        Ok((!pod_routes(c, "h1").contains(&cidrs["h3"])).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(30)));
    let added = h.cluster.add_host(None).unwrap();
    let c = &h.cluster;
    let watcher = node(c, "h1");
    let new_cidr = wait_until(Duration::from_secs(60), "the new host's subnet", || {
        Ok(pod_cidrs(watcher)?.get(&added).cloned())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(30)));
    wait_until(Duration::from_secs(20), "h1 to route the new host", || {
        Ok(pod_routes(c, "h1").contains(&new_cidr).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(30)));
    // db-2 (or whichever ran on h3) comes back somewhere; a pod on the new host reaches it.
    apply(
        watcher,
        &workload_on("default", "probe", 1, None, Some(added.as_str())),
    );
    let probe = wait_until(Duration::from_secs(90), "a pod on the new host", || {
        Ok(ready(watcher, "probe")?
            .into_iter()
            .find(|p| p.host.is_some()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(30)));
    wait_until(
        Duration::from_secs(30),
        "the new host's pod to reach db-0",
        || {
            let (status, body) = fetch_in(&probe, "http://db-0.db:8080/")?;
            Ok((status == 200 && body.contains("\"db-0\"")).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(30)));
}

/// Hosts on two subnets behind a router (the machine): the VXLAN overlay carries pod traffic
/// between them, and the same checks hold.
#[test]
fn the_overlay_carries_pod_traffic_between_hosts_on_two_subnets() {
    if !hosts_ready() {
        return;
    }
    let h = up_with(
        3,
        &HostOptions {
            far_hosts: vec!["h3".into()],
            ..HostOptions::default()
        },
    );
    let c = &h.cluster;
    let (_, cidrs) = db_reaches_everywhere(c);
    let watcher = node(c, "h1");
    let describe = |n: &str| {
        watcher
            .cli(&["describe", "node", n])
            .unwrap()
            .success()
            .unwrap()
            .stdout
    };
    assert!(describe("h2").contains("Pod Route:          host-gateway from h1"));
    assert!(describe("h3").contains("Pod Route:          vxlan from h1"));
    // h1 routes h3's subnet over the overlay device, h2's directly.
    let routes = pod_route_lines(c, "h1");
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with(&cidrs["h3"]) && l.contains("dev shoal-vx")),
        "{routes}"
    );
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with(&cidrs["h2"]) && !l.contains("shoal-vx")),
        "{routes}"
    );
}

/// Two hosts join at once, their nodes named so that their searches for a free subnet start
/// at one index: whether they claim it together (then one keeps it and the other moves before
/// it starts pods) or one after the other, they end with a subnet each, and their pods'
/// addresses are in their own.
#[test]
fn two_hosts_joining_at_once_end_with_a_subnet_each() {
    if !hosts_ready() {
        return;
    }
    use shoal_node::podnet::subnet::{DEFAULT_RANGE, PodRange, start_index};
    let len = PodRange::parse(DEFAULT_RANGE).unwrap().len();
    let h1 = start_index("h1", len);
    let mut by_start: BTreeMap<u32, String> = BTreeMap::new();
    let (a, b) = (0..)
        .map(|i| format!("n{i}"))
        .filter(|n| start_index(n, len) != h1)
        .find_map(|n| {
            let start = start_index(&n, len);
            match by_start.get(&start) {
                Some(first) => Some((first.clone(), n)),
                None => {
                    by_start.insert(start, n);
                    None
                }
            }
        })
        .unwrap();
    let mut h = up(1);
    h.cluster
        .add_hosts_at_once(&[Some(a.as_str()), Some(b.as_str())])
        .unwrap();
    let c = &h.cluster;
    let watcher = node(c, "h1");
    let cidrs = wait_until(Duration::from_secs(60), "a subnet for each node", || {
        let cidrs = pod_cidrs(watcher)?;
        Ok((cidrs.len() == 3).then_some(cidrs))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(30)));
    assert_eq!(
        cidrs.values().collect::<BTreeSet<_>>().len(),
        3,
        "{a} and {b} share a subnet: {cidrs:?}"
    );
    // Each node runs pods in its own subnet (and in no other it claimed on the way).
    apply(
        watcher,
        &format!(
            "{}---\n{}",
            workload_on("default", "on-a", 1, None, Some(a.as_str())),
            workload_on("default", "on-b", 1, None, Some(b.as_str()))
        ),
    );
    for (app, on) in [("on-a", &a), ("on-b", &b)] {
        let pod = wait_until(Duration::from_secs(90), &format!("{app} ready"), || {
            Ok(ready(watcher, app)?.into_iter().next())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_tails(30)));
        let cidr = &pod_cidrs(watcher).unwrap()[on];
        assert!(
            pod.pod_ip.starts_with(cidr.trim_end_matches("0/24")),
            "{} on {on} has {}, outside {cidr}",
            pod.name,
            pod.pod_ip
        );
    }
}
