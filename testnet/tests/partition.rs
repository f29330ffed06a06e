//! Faults made for real: kernel partitions (nftables) between nodes on their own loopback
//! addresses, and the whole cluster stopped and started. Real `shoald` processes, talked to
//! over their HTTP API from 127.0.0.1 (which no partition cuts). Only loopback is used.
//!
//! The partition tests need root and nft: without them they fail under CI and are skipped,
//! saying why, elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testnet::cluster::{self, Cluster, ClusterFile};
use shoal_testnet::listing::configmaps;
use shoal_testnet::{Node, partition, wait_until};

const CONVERGE: Duration = Duration::from_secs(30);

/// Whether partitions can be made here; a reason is printed when not, and CI fails.
fn partitions_available(test: &str) -> bool {
    match partition::available() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: CI must run the partition tests, but: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Panics with every node's log when `r` failed.
fn or_logs<T>(cluster: &Cluster, r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()))
}

fn configmap(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"{name}\"\n  namespace: default\ndata:\n  k: \"{name}\"\n"
    )
}

fn apply(cluster: &Cluster, node: &str, manifest: &str) {
    let r = (|| {
        let (code, v) = cluster.node(node)?.api()?.apply(manifest)?;
        anyhow::ensure!(code == 200 || code == 201, "apply on {node}: {code} {v}");
        Ok(())
    })();
    or_logs(cluster, r)
}

/// The node's ConfigMaps in namespace default with their uid and resourceVersion, sorted.
fn configmap_versions(node: &Node) -> anyhow::Result<Vec<(String, String, String)>> {
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, v) = node.api()?.get(path)?;
    anyhow::ensure!(code == 200, "GET {path} on {}: {code} {v}", node.opts.name);
    let field = |i: &Value, f: &str| i["metadata"][f].as_str().unwrap_or_default().to_string();
    let mut out: Vec<(String, String, String)> = v["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                field(i, "name"),
                field(i, "uid"),
                field(i, "resourceVersion"),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Waits until each of `nodes` lists exactly `want` as its ConfigMaps.
fn wait_configmaps(cluster: &Cluster, nodes: &[&str], want: &[&str]) {
    let want = strings(want);
    for name in nodes {
        let r = wait_until(
            CONVERGE,
            &format!("{name} to list configmaps {want:?}"),
            || {
                let now = configmaps(cluster.node(name)?)?;
                if now == want {
                    Ok(Some(()))
                } else {
                    anyhow::bail!("{name} lists {now:?}")
                }
            },
        );
        or_logs(cluster, r);
    }
}

/// Waits until every node lists exactly `want` and every node reports the same digest.
fn wait_identical(cluster: &Cluster, want: &[&str]) -> String {
    wait_configmaps(cluster, &strings_ref(&cluster.names()), want);
    let r = wait_until(CONVERGE, "the same digest on every node", || {
        let mut digests = Vec::new();
        for name in cluster.names() {
            let status = cluster.status(&name)?;
            let d = status["digest"].as_str().unwrap_or_default().to_string();
            anyhow::ensure!(!d.is_empty(), "{name}'s status has no digest: {status}");
            digests.push((name, d));
        }
        if digests.iter().all(|(_, d)| *d == digests[0].1) {
            Ok(Some(digests[0].1.clone()))
        } else {
            anyhow::bail!("digests differ: {digests:?}")
        }
    });
    let digest = or_logs(cluster, r);
    // Still the same objects everywhere at that digest.
    for name in cluster.names() {
        let now = or_logs(cluster, configmaps(cluster.node(&name).unwrap()));
        assert_eq!(now, strings(want), "{name}");
    }
    digest
}

fn strings_ref(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn partition_2_1_apply_different_objects_on_each_side_heal_identical_state_everywhere() {
    if !partitions_available("partition_2_1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::up(3, dir.path()).unwrap();
    let groups = vec![strings(&["n1", "n2"]), strings(&["n3"])];
    let r = c.partition(&groups);
    or_logs(&c, r);
    assert!(partition::is_installed(c.id()).unwrap());

    apply(&c, "n1", &configmap("a"));
    apply(&c, "n3", &configmap("b"));
    wait_configmaps(&c, &["n1", "n2"], &["a"]);
    wait_configmaps(&c, &["n3"], &["b"]);
    // Each side loses sight of the other: the cut is real for the nodes, not a slow gossip.
    for (node, gone) in [("n1", &["n3"][..]), ("n2", &["n3"]), ("n3", &["n1", "n2"])] {
        let r = wait_until(
            CONVERGE,
            &format!("{node} to lose sight of {gone:?}"),
            || {
                let status = c.status(node)?;
                let alive = |name: &&str| {
                    status["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|m| m["name"] == **name && m["state"] == "alive")
                };
                if gone.iter().any(alive) {
                    anyhow::bail!("{node} sees {}", status["members"])
                }
                Ok(Some(()))
            },
        );
        or_logs(&c, r);
    }
    // Some seconds on: neither side has heard of the other's object.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for (node, want) in [("n1", ["a"]), ("n2", ["a"]), ("n3", ["b"])] {
            let now = or_logs(&c, configmaps(c.node(node).unwrap()));
            assert_eq!(now, strings(&want), "{node} during the partition");
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    let r = c.heal();
    or_logs(&c, r);
    assert!(!partition::is_installed(c.id()).unwrap());
    wait_identical(&c, &["a", "b"]);
    or_logs(&c, c.wait_members_alive(CONVERGE));
}

#[test]
fn stop_and_start_the_whole_cluster_the_state_is_back_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::up(3, dir.path()).unwrap();
    apply(&c, "n1", &configmap("from-n1"));
    apply(&c, "n2", &configmap("from-n2"));
    apply(&c, "n3", &configmap("from-n3"));
    wait_identical(&c, &["from-n1", "from-n2", "from-n3"]);
    let before = or_logs(&c, configmap_versions(&c.nodes()[0]));
    // Every node must remember a peer to find the cluster again without join flags.
    for n in c.nodes() {
        let peers = n.opts.data_dir.join("peers.json");
        let r = wait_until(
            CONVERGE,
            &format!("{} to remember a peer", n.opts.name),
            || {
                let v: Value = serde_json::from_slice(&std::fs::read(&peers)?)?;
                Ok((v["peers"].as_object().map_or(0, |p| p.len()) >= 1).then_some(()))
            },
        );
        or_logs(&c, r);
    }

    let r = c.stop_all();
    or_logs(&c, r);
    for n in c.describe().nodes {
        assert_eq!(n.pid, None, "{} after stop_all", n.name);
    }
    let r = c.start_all();
    or_logs(&c, r);
    wait_identical(&c, &["from-n1", "from-n2", "from-n3"]);
    // The same objects, unchanged, on every node. (The digest may move on: a node that takes
    // the controller role after the restart writes its lease.)
    for name in c.names() {
        let now = or_logs(&c, configmap_versions(c.node(&name).unwrap()));
        assert_eq!(now, before, "the objects on {name} after the restart");
    }
    // They found each other again: every member alive, and a new write reaches everyone.
    or_logs(&c, c.wait_members_alive(CONVERGE));
    apply(&c, "n3", &configmap("after"));
    wait_identical(&c, &["after", "from-n1", "from-n2", "from-n3"]);
}

/// A partition drops packets between two plain sockets bound on two addresses of a testnet,
/// both ways, for new and established TCP connections and for UDP; the test client's
/// 127.0.0.1 still gets through; heal restores everything.
#[test]
fn a_partition_drops_traffic_between_two_addresses_and_heal_restores_it() {
    if !partitions_available("kernel_partition") {
        return;
    }
    let ips = cluster::pick_addresses(2).unwrap();
    let (a, b) = (ips[0], ips[1]);
    let id = cluster::new_id();
    let _heal = Heal(id.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let la = TcpListener::bind((a, 0)).unwrap();
    let lb = TcpListener::bind((b, 0)).unwrap();
    let ua = UdpSocket::bind((a, 0)).unwrap();
    let ub = UdpSocket::bind((b, 0)).unwrap();
    for u in [&ua, &ub] {
        u.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    // Established before the partition.
    let (mut est_b, mut est_a) = {
        let s = rt
            .block_on(connect_from(b, la.local_addr().unwrap()))
            .unwrap();
        let (accepted, _) = la.accept().unwrap();
        (s, accepted)
    };
    est_a
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();

    let reach = |from: Ipv4Addr, l: &TcpListener| -> bool {
        let ok = rt
            .block_on(connect_from(from, l.local_addr().unwrap()))
            .is_ok();
        if ok {
            let _ = l.accept();
        }
        ok
    };
    let datagram = |from: &UdpSocket, to: &UdpSocket| -> bool {
        // A packet dropped on the output hook fails the send itself (EPERM).
        if from.send_to(b"ping", to.local_addr().unwrap()).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(to.recv_from(&mut buf), Ok((4, _)))
    };
    let stream_passes = |w: &mut TcpStream, r: &mut TcpStream| -> bool {
        use std::io::{Read, Write};
        w.write_all(b"data").unwrap();
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).is_ok()
    };

    assert!(reach(b, &la) && reach(a, &lb), "before the partition");
    assert!(
        datagram(&ub, &ua) && datagram(&ua, &ub),
        "before the partition"
    );
    assert!(
        stream_passes(&mut est_b, &mut est_a),
        "before the partition"
    );

    partition::apply(&id, &[vec![a], vec![b]]).unwrap();
    assert!(partition::is_installed(&id).unwrap());
    assert!(!reach(b, &la), "{b} -> {a} passed the partition");
    assert!(!reach(a, &lb), "{a} -> {b} passed the partition");
    assert!(!datagram(&ub, &ua), "UDP {b} -> {a} passed the partition");
    assert!(!datagram(&ua, &ub), "UDP {a} -> {b} passed the partition");
    assert!(
        !stream_passes(&mut est_b, &mut est_a),
        "an established connection passed the partition"
    );
    // The test client's own address is in no group.
    TcpStream::connect_timeout(&la.local_addr().unwrap(), Duration::from_secs(1))
        .expect("127.0.0.1 must reach a partitioned address");
    let _ = la.accept();

    partition::heal(&id).unwrap();
    assert!(!partition::is_installed(&id).unwrap());
    assert!(reach(b, &la) && reach(a, &lb), "after heal");
    assert!(datagram(&ub, &ua) && datagram(&ua, &ub), "after heal");
    // The held-back bytes arrive once TCP retransmits.
    est_a
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    {
        use std::io::Read;
        let mut buf = [0u8; 4];
        est_a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"data");
    }
}

/// Connects to `to` from a socket bound on `from`, giving up after a second.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.into(), 0))?;
    let stream = tokio::time::timeout(Duration::from_secs(1), s.connect(to))
        .await??
        .into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Removes a test's table even when the test fails.
struct Heal(String);

impl Drop for Heal {
    fn drop(&mut self) {
        let _ = partition::heal(&self.0);
    }
}

/// `shoal-testnet` drives a detached cluster from separate runs through `DIR/cluster.json`.
#[test]
fn the_command_line_drives_a_detached_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let _down = Down(dir.path().to_path_buf());
    let up = testnet(&["up", "--nodes", "2"], dir.path());
    assert_eq!(up.0, 0, "up: {}", up.2);
    let file = read_file(dir.path());
    let json_path = dir.path().canonicalize().unwrap().join("cluster.json");
    assert!(up.1.contains(&json_path.display().to_string()), "{}", up.1);
    for n in &file.nodes {
        assert!(up.1.contains(&n.api_url), "{}", up.1);
        assert!(n.pid.is_some() && alive(n.pid), "{} runs", n.name);
        assert!(n.api_url.contains(&n.advertise_addr));
        assert!(n.p2p_addr.starts_with(&format!("{}:", n.advertise_addr)));
        assert!(n.log_file.starts_with(&n.data_dir));
    }
    assert_eq!(file.nodes.len(), 2);
    let n2_pid = file.nodes[1].pid;

    // The nodes outlived `up`, and a separate run reaches them.
    let c = Cluster::load(dir.path()).unwrap();
    assert_eq!(c.admin_token(), file.admin_token);
    or_logs(&c, c.wait_members_alive(CONVERGE));

    let kill = testnet(&["kill", "n2"], dir.path());
    assert_eq!(kill.0, 0, "kill: {}", kill.2);
    assert!(!alive(n2_pid), "n2 survived kill");
    assert_eq!(read_file(dir.path()).nodes[1].pid, None);
    let restart = testnet(&["restart", "n2"], dir.path());
    assert_eq!(restart.0, 0, "restart: {}", restart.2);
    let new_pid = read_file(dir.path()).nodes[1].pid;
    assert!(new_pid.is_some() && new_pid != n2_pid && alive(new_pid));
    or_logs(&c, c.wait_members_alive(CONVERGE));

    let unknown = testnet(&["kill", "n9"], dir.path());
    assert_ne!(unknown.0, 0);
    assert!(unknown.2.contains("no node named \"n9\""), "{}", unknown.2);
    let nowhere = tempfile::tempdir().unwrap();
    let missing = testnet(&["heal"], nowhere.path());
    assert_ne!(missing.0, 0);
    assert!(
        missing.2.contains("cluster.json does not exist"),
        "{}",
        missing.2
    );

    if partitions_available("the_command_line_drives_a_detached_cluster (partition part)") {
        let p = testnet(&["partition", "n1", "n2"], dir.path());
        assert_eq!(p.0, 0, "partition: {}", p.2);
        assert!(partition::is_installed(&file.testnet_id).unwrap());
        assert_eq!(
            read_file(dir.path()).partition,
            Some(vec![strings(&["n1"]), strings(&["n2"])])
        );
        let h = testnet(&["heal"], dir.path());
        assert_eq!(h.0, 0, "heal: {}", h.2);
        assert!(!partition::is_installed(&file.testnet_id).unwrap());
    }

    let down = testnet(&["down"], dir.path());
    assert_eq!(down.0, 0, "down: {}", down.2);
    for n in &file.nodes {
        assert!(!alive(n.pid), "{} survived down", n.name);
    }
    assert!(new_pid.is_some() && !alive(new_pid));
    assert!(read_file(dir.path()).nodes.iter().all(|n| n.pid.is_none()));
}

fn read_file(dir: &Path) -> ClusterFile {
    serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap()
}

/// Whether `pid` is a live shoald (not a zombie).
fn alive(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next());
    stat.contains("(shoald)") && !matches!(state, Some("Z") | Some("X") | None)
}

/// Runs `shoal-testnet ARGS --dir DIR`: exit code, stdout, stderr.
fn testnet(args: &[&str], dir: &Path) -> (i32, String, String) {
    let shoald = shoal_testnet::bin_path("shoald").unwrap();
    // Cargo builds this package's binaries before its integration tests.
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-testnet"))
        .args(args)
        // The shoald this test run built, without another cargo run per command.
        .env("SHOAL_BIN_DIR", shoald.parent().unwrap())
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Takes a command-line testnet down even when the test fails, and kills what survives.
struct Down(std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if let Ok(mut c) = Cluster::load(&self.0)
            && c.down().is_err()
        {
            for name in c.names() {
                if let Ok(n) = c.node_mut(&name) {
                    let _ = n.kill();
                }
            }
        }
    }
}
