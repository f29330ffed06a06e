//! Benchmarks that need real processes and the real engine. Each prints shoal's figure next
//! to its anchor measured in the same run on the same machine.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use shoal_node::runtime::{ContainerSpec, DockerRuntime, PortSpec, Protocol, Runtime};

use crate::{DockerCleanup, Node, NodeOptions};

const IMAGE: &str = "shoal-test/echo:latest";

/// Whether an HTTP GET of `/` on `ip`:`port` answers 200.
fn serves(ip: IpAddr, port: u16) -> bool {
    serves_at(std::net::SocketAddr::new(ip, port))
}

/// Whether an HTTP GET of `/` on `addr` answers 200; never tried off loopback and the test
/// hosts of a LAN this machine has now.
pub(crate) fn serves_at(addr: std::net::SocketAddr) -> bool {
    if !addr.ip().is_loopback() && !crate::hosts::is_test_host(addr.ip()) {
        return false;
    }
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read(&mut buf)
        .is_ok_and(|n| n >= 12 && &buf[9..12] == b"200")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Apply → every replica serving HTTP, through one `shoald`, against raw engine
/// `create` + `start` of the same image until each container serves, alternating runs so that
/// both see the same machine load. Prints a table row per figure.
pub fn apply_to_serving(replicas: u32, runs: u32) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(crate::image::ensure_echo_image())?;
    let docker = Arc::new(rt.block_on(DockerRuntime::connect())?);
    let dir = tempfile::tempdir()?;
    let node = Node::start(NodeOptions::new("bench", &dir.path().join("bench")))?;
    let _cleanup = DockerCleanup::new(&node.cluster_id()?);
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    compare(&rt, &node, &docker, loopback, replicas, runs)
}

/// [`apply_to_serving`] on a test host ([`crate::hosts`]): one `shoald` with its own engine,
/// and the raw containers in that engine, published on the host's LAN address.
pub fn apply_to_serving_hosts(replicas: u32, runs: u32) -> anyhow::Result<()> {
    crate::hosts::available()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(crate::image::ensure_echo_image())?;
    let dir = tempfile::tempdir()?;
    let cluster = crate::Cluster::up_hosts(1, dir.path(), &crate::HostOptions::default())?;
    let node = cluster.node("h1")?;
    let socket = cluster
        .describe()
        .nodes
        .first()
        .and_then(|n| n.engine_socket.clone())
        .context("the host has no engine socket")?;
    let docker = Arc::new(rt.block_on(DockerRuntime::connect_to(Some(&socket)))?);
    let ip: IpAddr = node.opts.ip.parse()?;
    println!("on test host h1 ({ip}), its own engine");
    compare(&rt, node, &docker, ip, replicas, runs)
}

fn compare(
    rt: &tokio::runtime::Runtime,
    node: &Node,
    docker: &DockerRuntime,
    ip: IpAddr,
    replicas: u32,
    runs: u32,
) -> anyhow::Result<()> {
    let (mut shoal, mut raw) = (Vec::new(), Vec::new());
    for run in 0..runs {
        shoal.push(shoal_run(node, replicas, run, ip)?);
        raw.push(rt.block_on(raw_run(docker, replicas, run, ip))?);
    }
    let (s, r) = (median(shoal.clone()), median(raw.clone()));
    println!("replicas: {replicas}, runs: {runs}");
    println!("shoal apply -> all serving, median: {s:?} (all: {shoal:?})");
    println!("raw create+start -> all serving, median: {r:?} (all: {raw:?})");
    println!(
        "ratio shoal / raw: {:.2}",
        s.as_secs_f64() / r.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn shoal_run(node: &Node, replicas: u32, run: u32, ip: IpAddr) -> anyhow::Result<Duration> {
    let name = format!("bench{run}");
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers: [{{name: echo, image: \"{IMAGE}\", ports: [{{containerPort: 8080}}]}}]\n"
    );
    let api = node.api()?;
    let start = Instant::now();
    let (code, body) = api.apply(&manifest)?;
    if code != 200 {
        bail!("apply failed: {body}");
    }
    // Polled every 5 ms, as the raw containers are, so that both sides are measured alike.
    loop {
        let (_, list) = api.get(&format!(
            "/api/v1/namespaces/default/pods?labelSelector=app%3D{name}"
        ))?;
        let ports: Vec<u16> = list["items"]
            .as_array()
            .map(|items| items.iter().filter_map(port_of).collect())
            .unwrap_or_default();
        if ports.len() == replicas as usize && ports.iter().all(|p| serves(ip, *p)) {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the replicas did not serve within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    api.delete(&format!(
        "/apis/apps/v1/namespaces/default/deployments/{name}"
    ))?;
    Ok(took)
}

fn port_of(pod: &Value) -> Option<u16> {
    pod["status"]["hostPorts"]
        .as_array()?
        .first()?
        .get("hostPort")?
        .as_u64()
        .map(|p| p as u16)
}

async fn raw_run(
    docker: &DockerRuntime,
    replicas: u32,
    run: u32,
    ip: IpAddr,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut ids = Vec::new();
    for i in 0..replicas {
        let spec = ContainerSpec {
            name: format!("shoal-bench-raw-{}-{run}-{i}", std::process::id()),
            image: IMAGE.into(),
            labels: BTreeMap::from([("shoal.bench".to_string(), "raw".to_string())]),
            ports: vec![PortSpec {
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_ip: Some(ip.to_string()),
                host_port: 0,
            }],
            ..ContainerSpec::default()
        };
        let id = docker.create(&spec).await.context("create")?;
        docker.start(&id).await.context("start")?;
        ids.push(id);
    }
    let mut ports = Vec::new();
    for id in &ids {
        let info = docker.inspect(id).await?;
        let port = info
            .host_port(8080, Protocol::Tcp)
            .map(|b| b.host_port)
            .context("no published port")?;
        ports.push(port);
    }
    while !ports.iter().all(|p| serves(ip, *p)) {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("raw containers did not serve within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    for id in ids {
        let _ = docker.remove(&id).await;
    }
    Ok(took)
}
