//! Names inside pods, with real `shoald` processes and the real Docker engine: a container
//! resolves through its node's DNS server (at its pod network's gateway, with the search path
//! `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5`), and `http://web:18080/` from any
//! pod reaches the Service's ready endpoint wherever it runs, through the gateway and the
//! node proxies, although the nodes' own addresses (127.x) are out of a container's reach.
//! The pods look names up with `shoal-echo`'s `/fetch` route (the system resolver of the
//! container), which the test calls through each pod's published host port.
//!
//! Without a Docker engine this test says so and passes, except where `CI` is set: there it
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use shoal_testnet::fixture::{apply, fetch_in, http_get, workload};
use shoal_testnet::listing::pods;
use shoal_testnet::{PodView, Testnet, wait_until};

const DOMAIN: &str = "shoal.home.arpa";

/// `docker inspect -f FORMAT` of the container of `pod` in the cluster `cluster_id`.
fn inspect(cluster_id: &str, pod: &str, format: &str) -> String {
    let ids = shoal_testnet::cleanup::containers_with_labels(&[
        &format!("shoal.cluster={cluster_id}"),
        &format!("shoal.pod={pod}"),
    ]);
    assert_eq!(ids.len(), 1, "one container of {pod}: {ids:?}");
    let out = Command::new("docker")
        .args(["inspect", "-f", format, &ids[0]])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The gateway of node `node`'s pod network (`shoal-<node>-<cluster8>`).
fn gateway_of(cluster_id: &str, node: &str) -> String {
    let cluster: String = cluster_id.chars().take(8).collect();
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            &format!("shoal-{node}-{cluster}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|g| !g.contains(':'))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn pods_reach_services_by_name_through_their_nodes_gateway() {
    if !shoal_testnet::docker_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The nodes stop before their containers are removed.
    let t = Testnet::up(3, dir.path()).unwrap();
    let cluster_id = t.cluster_id();
    let cluster = &t.cluster;
    let n1 = &cluster.nodes()[0];
    apply(
        n1,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n",
    );
    apply(
        n1,
        &[
            workload("default", "web", 1, Some(18080)),
            workload("default", "client", 3, None),
            workload("other", "api", 1, Some(18081)),
        ]
        .join("---\n"),
    );
    // A second Service on web's port number (as the guestbook's two Redis Services share
    // 6379), applied later: it gets its own node-facing port, and pods still reach it on
    // 18080 at its own address.
    apply(n1, &workload("default", "web2", 1, Some(18080)));
    let (web, clients, api, web2) = wait_until(Duration::from_secs(120), "every pod ready", || {
        let web = pods(n1, "default", "web")?;
        let clients = pods(n1, "default", "client")?;
        let api = pods(n1, "other", "api")?;
        let web2 = pods(n1, "default", "web2")?;
        let ready = |ps: &[PodView], n: usize| {
            ps.len() == n && ps.iter().all(|p| p.ready && p.host.is_some())
        };
        Ok(
            (ready(&web, 1) && ready(&clients, 3) && ready(&api, 1) && ready(&web2, 1))
                .then_some((web, clients, api, web2)),
        )
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    let web = &web[0];
    let api = &api[0];
    let web2 = &web2[0];
    let nodes: std::collections::BTreeSet<&str> = clients.iter().map(|c| c.node.as_str()).collect();
    assert!(
        nodes.len() >= 2,
        "the clients spread over the nodes: {clients:?}"
    );
    let remote = clients
        .iter()
        .find(|c| c.node != web.node)
        .expect("a client on a node without the web pod")
        .clone();
    eprintln!(
        "web pod {} on {}; client {} on {}",
        web.name, web.node, remote.name, remote.node
    );

    // The client's container names its node's gateway as resolver, with the search path.
    let gateway = gateway_of(cluster_id, &remote.node);
    assert!(!gateway.is_empty());
    assert_eq!(
        inspect(cluster_id, &remote.name, "{{json .HostConfig.Dns}}"),
        format!("[\"{gateway}\"]")
    );
    assert_eq!(
        inspect(cluster_id, &remote.name, "{{json .HostConfig.DnsSearch}}"),
        format!("[\"default.svc.{DOMAIN}\",\"svc.{DOMAIN}\",\"{DOMAIN}\"]")
    );
    assert_eq!(
        inspect(cluster_id, &remote.name, "{{json .HostConfig.DnsOptions}}"),
        "[\"ndots:5\"]"
    );
    let (host, port) = remote.host.clone().unwrap();
    let (status, resolv) = http_get(&host, port, "/file?path=/etc/resolv.conf").unwrap();
    assert_eq!(status, 200, "{resolv}");
    assert!(
        resolv.contains(&format!(
            "search default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}"
        )) && resolv.contains("ndots:5"),
        "resolv.conf of {}: {resolv}",
        remote.name
    );

    // By its short name, from a node without the web pod: the name answers the gateway, and
    // the node's proxy there forwards to the other node. The pods' DNS listener may open a
    // moment after the first pod started: retry for a while.
    let short = "http://web:18080/";
    wait_until(
        Duration::from_secs(30),
        &format!("{short} from {}", remote.name),
        || {
            let (status, body) = fetch_in(&remote, short)?;
            anyhow::ensure!(status == 200, "{status} {body}");
            anyhow::ensure!(body.contains(&web.name), "{body}");
            Ok(Some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));

    // From every client, by the short name and the fully qualified one.
    let fqdn = format!("http://web.default.svc.{DOMAIN}:18080/");
    for client in &clients {
        for url in [short, fqdn.as_str()] {
            let (status, body) = wait_until(
                Duration::from_secs(30),
                &format!("{url} from {} on {}", client.name, client.node),
                || fetch_in(client, url).map(|r| (r.0 == 200).then_some(r)),
            )
            .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
            assert!(
                status == 200 && body.contains(&web.name) && body.contains("\"pod\""),
                "{url} from {}: {status} {body}",
                client.name
            );
        }
    }

    // web2 shares web's port number: from every client, each name reaches its own pod,
    // including from a node without it (through that node's proxy and the other node's, on
    // web2's automatic node-facing port).
    assert!(
        clients.iter().any(|c| c.node != web2.node),
        "a client on a node without the web2 pod: {clients:?}, web2 on {}",
        web2.node
    );
    for client in &clients {
        for (url, pod) in [
            ("http://web2:18080/", &web2.name),
            ("http://web:18080/", &web.name),
        ] {
            let (status, body) = wait_until(
                Duration::from_secs(30),
                &format!("{url} from {} on {}", client.name, client.node),
                || fetch_in(client, url).map(|r| (r.0 == 200 && r.1.contains(pod)).then_some(r)),
            )
            .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
            assert!(status == 200 && body.contains(pod), "{url}: {body}");
        }
    }
    // The LAN sees web2 on its automatic port: `get svc` shows it and it serves there.
    let (code, svc) = n1
        .api()
        .unwrap()
        .get("/api/v1/namespaces/default/services/web2")
        .unwrap();
    assert_eq!(code, 200, "{svc}");
    let auto = svc["status"]["nodePorts"][0]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("web2 has no node-facing port: {svc}"));
    assert!((30000..=32767).contains(&auto), "{svc}");
    let listed = n1
        .cli(&["get", "svc", "web2"])
        .unwrap()
        .success()
        .unwrap()
        .stdout;
    assert!(listed.contains(&format!("18080:{auto}/TCP")), "{listed}");
    let n1_ip = n1.opts.ip.clone();
    let (status, body) = wait_until(
        Duration::from_secs(30),
        "web2 on its node-facing port from the host",
        || Ok(http_get(&n1_ip, auto, "/").ok().filter(|r| r.0 == 200)),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails(40)));
    assert!(status == 200 && body.contains(&web2.name), "{body}");

    // Another namespace's Service: by `<svc>.<ns>`, not by its short name alone.
    let (status, body) = fetch_in(&remote, "http://api.other:18081/").unwrap();
    assert!(
        status == 200 && body.contains(&api.name),
        "api.other from {}: {status} {body}",
        remote.name
    );
    let (status, body) = fetch_in(&remote, "http://api:18081/").unwrap();
    assert!(
        status == 502 && body.contains("cannot resolve api"),
        "a short name of another namespace resolves: {status} {body}"
    );
}
