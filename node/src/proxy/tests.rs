//! The proxies on loopback: real sockets on 127.0.0.0/8, a table built by hand (or by [`run`]
//! from a real store), and tiny echo servers standing for pods.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shoal_protocol::Kind;
use shoal_protocol::cluster::Slot;
use shoal_protocol::status::{PodCondition, PodStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::table::{ListenKey, Route, Table, Transport};
use super::*;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP server on 127.0.0.1 that echoes what it reads.
async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A UDP server on 127.0.0.1 that answers each datagram with `tag` and the datagram.
async fn udp_echo(tag: &'static [u8]) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut reply = tag.to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

/// A table serving `route` on `key` (which other nodes' proxies serve too, unless the route
/// names its own port).
fn table(key: ListenKey, mut route: Route, nodes: &[&str]) -> Table {
    if route.port == 0 {
        route.port = key.port;
    }
    Table {
        routes: [(key, route)].into(),
        nodes: nodes.iter().map(|n| ip(n)).collect(),
        ..Table::default()
    }
}

fn tcp_key(port: u16) -> ListenKey {
    ListenKey {
        port,
        transport: Transport::Tcp,
    }
}

/// Starts a TCP proxy on `listener` with `table`, forwarding to other nodes from `source`.
fn start_tcp(
    listener: TcpListener,
    table: Table,
    source: &str,
    stop: &CancellationToken,
) -> watch::Sender<Arc<Table>> {
    let local = listener.local_addr().unwrap();
    let (tx, rx) = watch::channel(Arc::new(table));
    let at = Listener {
        addr: local.ip(),
        key: tcp_key(local.port()),
        pods: false,
    };
    tokio::spawn(tcp::serve(
        listener,
        at,
        rx,
        Some(ip(source)),
        health::SharedFailures::default(),
        stop.clone(),
    ));
    tx
}

/// Writes `msg` and expects it back.
async fn round_trip(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, msg);
}

/// Expects the proxy to close the connection without a byte.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("read {n} bytes from a connection that should be closed"),
        Err(_) => panic!("the connection stayed open"),
    }
}

/// Connects from `source` (a loopback address) to `to`.
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(source), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn tcp_forwards_to_a_local_endpoint() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let echo = tcp_echo().await;
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let route = Route {
        service: "default/web".into(),
        local: vec![echo],
        remote: vec![],
        port: 0,
    };
    let _tx = start_tcp(
        listener,
        table(tcp_key(addr.port()), route, &[]),
        "127.0.0.2",
        &stop,
    );
    for msg in [&b"hello"[..], b"again"] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut s, msg).await;
    }
}

#[tokio::test]
async fn tcp_without_a_ready_endpoint_closes_at_once() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let route = Route {
        service: "default/web".into(),
        ..Route::default()
    };
    let _tx = start_tcp(
        listener,
        table(tcp_key(addr.port()), route, &[]),
        "127.0.0.2",
        &stop,
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut s).await;
}

#[tokio::test]
async fn tcp_follows_the_newest_table() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let echo = tcp_echo().await;
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let key = tcp_key(addr.port());
    let empty = Route {
        service: "default/web".into(),
        ..Route::default()
    };
    let tx = start_tcp(listener, table(key, empty, &[]), "127.0.0.2", &stop);
    let mut s = TcpStream::connect(addr).await.unwrap();
    expect_closed(&mut s).await;
    // The pod becomes ready.
    let ready = Route {
        service: "default/web".into(),
        local: vec![echo],
        remote: vec![],
        port: 0,
    };
    tx.send_replace(Arc::new(table(key, ready, &[])));
    let mut s = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut s, b"ready").await;
}

/// A port on `host` where nothing listens: a connection to it is refused at once.
async fn refused_port(host: &str) -> SocketAddr {
    let l = TcpListener::bind((ip(host), 0)).await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn tcp_goes_on_to_the_next_candidate_when_one_refuses_and_remembers_it() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let dead = refused_port("127.0.0.1").await;
    let live = tcp_echo().await;
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let route = Route {
        service: "default/web".into(),
        local: vec![dead, live],
        remote: vec![],
        port: 0,
    };
    let failures = health::SharedFailures::default();
    let (_tx, rx) = watch::channel(Arc::new(table(tcp_key(addr.port()), route, &[])));
    let at = Listener {
        addr: addr.ip(),
        key: tcp_key(addr.port()),
        pods: false,
    };
    tokio::spawn(tcp::serve(
        listener,
        at,
        rx,
        None,
        failures.clone(),
        stop.clone(),
    ));
    // The first connection tries the refusing target first (round-robin starts there) and
    // lands on the live one; so does every later one, whichever the rotation names first.
    for i in 0..6u8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut s, &[b'a' + i; 4]).await;
        assert!(failures.failed(dead), "the refusing target is remembered");
        assert!(!failures.failed(live));
    }
}

#[tokio::test]
async fn tcp_tries_a_node_unheard_lately_last() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let echo = tcp_echo().await;
    // Node B (127.0.0.3) runs the pod and is heard; node C (127.0.0.4) has not been heard
    // for a while and refuses; node A (127.0.0.2) has no pod and receives the clients.
    let (on_b, on_a) = common_port("127.0.0.3", "127.0.0.2").await;
    let port = on_b.local_addr().unwrap().port();
    drop(TcpListener::bind((ip("127.0.0.4"), port)).await.unwrap());
    let b_route = Route {
        service: "default/web".into(),
        local: vec![echo],
        remote: vec![],
        port: 0,
    };
    let _b = start_tcp(
        on_b,
        table(tcp_key(port), b_route, &["127.0.0.2"]),
        "127.0.0.3",
        &stop,
    );
    let a_route = Route {
        service: "default/web".into(),
        local: vec![],
        remote: vec![ip("127.0.0.3"), ip("127.0.0.4")],
        port: 0,
    };
    let now = tokio::time::Instant::now();
    let mut a_table = table(tcp_key(port), a_route, &["127.0.0.3", "127.0.0.4"]);
    a_table.stale_after = Duration::from_secs(1);
    a_table.heard = [
        (ip("127.0.0.3"), now + Duration::from_secs(3600)),
        (ip("127.0.0.4"), now),
    ]
    .into();
    let on_a_addr = on_a.local_addr().unwrap();
    let failures = health::SharedFailures::default();
    let (tx, rx) = watch::channel(Arc::new(a_table));
    tokio::spawn(tcp::serve(
        on_a,
        Listener {
            addr: on_a_addr.ip(),
            key: tcp_key(port),
            pods: false,
        },
        rx,
        Some(ip("127.0.0.2")),
        failures.clone(),
        stop.clone(),
    ));
    // C goes stale after a second: from then on it is never tried first, so it never fails.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..6u8 {
        let mut s = TcpStream::connect(on_a_addr).await.unwrap();
        round_trip(&mut s, &[b'a' + i; 4]).await;
    }
    let c = SocketAddr::new(ip("127.0.0.4"), port);
    assert!(!failures.failed(c), "the stale node was tried");
    // Once C is heard again, the rotation sends every other connection there first: it
    // refuses, is recorded, and the connection still lands on B.
    let mut heard = (*tx.borrow()).as_ref().clone();
    heard
        .heard
        .insert(ip("127.0.0.4"), now + Duration::from_secs(3600));
    tx.send_replace(Arc::new(heard));
    for i in 0..2u8 {
        let mut s = TcpStream::connect(on_a_addr).await.unwrap();
        round_trip(&mut s, &[b'x' + i; 4]).await;
    }
    assert!(failures.failed(c), "a heard node is tried in its turn");
}

/// Finds a port free on both `a` and `b`.
async fn common_port(a: &str, b: &str) -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let first = TcpListener::bind((ip(a), 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        if let Ok(second) = TcpListener::bind((ip(b), port)).await {
            return (first, second);
        }
    }
    panic!("no port free on both {a} and {b}");
}

#[tokio::test]
async fn tcp_forwards_to_another_nodes_proxy_and_never_back() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let echo = tcp_echo().await;
    // Node B (127.0.0.3) runs the pod; node A (127.0.0.2) does not.
    let (on_b, on_a) = common_port("127.0.0.3", "127.0.0.2").await;
    let port = on_b.local_addr().unwrap().port();
    let b_route = Route {
        service: "default/web".into(),
        local: vec![echo],
        remote: vec![],
        port: 0,
    };
    let _b = start_tcp(
        on_b,
        table(tcp_key(port), b_route, &["127.0.0.2"]),
        "127.0.0.3",
        &stop,
    );
    let a_route = Route {
        service: "default/web".into(),
        local: vec![],
        remote: vec![ip("127.0.0.3")],
        port: 0,
    };
    let _a = start_tcp(
        on_a,
        table(tcp_key(port), a_route, &["127.0.0.3"]),
        "127.0.0.2",
        &stop,
    );

    let mut s = TcpStream::connect(SocketAddr::new(ip("127.0.0.2"), port))
        .await
        .unwrap();
    round_trip(&mut s, b"via b").await;

    // A connection from a node (B's address) to A is not sent on to B: A has no local
    // endpoint, so it closes it.
    let mut s = connect_from("127.0.0.3", SocketAddr::new(ip("127.0.0.2"), port)).await;
    expect_closed(&mut s).await;
}

#[tokio::test]
async fn udp_forwards_a_flow_to_a_local_endpoint() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let echo = udp_echo(b"").await;
    let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let key = ListenKey {
        port: addr.port(),
        transport: Transport::Udp,
    };
    let route = Route {
        service: "default/dns".into(),
        local: vec![echo],
        remote: vec![],
        port: 0,
    };
    let (_tx, rx) = watch::channel(Arc::new(table(key, route, &[])));
    tokio::spawn(udp::serve(
        socket,
        Listener {
            addr: addr.ip(),
            key,
            pods: false,
        },
        rx,
        Some(ip("127.0.0.2")),
        health::SharedFailures::default(),
        udp::IDLE,
        stop.clone(),
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 64];
    for msg in [&b"one"[..], b"two"] {
        client.send_to(msg, addr).await.unwrap();
        let (n, from) = tokio::time::timeout(PATIENCE, client.recv_from(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert_eq!(&buf[..n], msg);
        assert_eq!(from, addr, "replies come from the service's port");
    }
}

#[tokio::test]
async fn udp_flows_keep_their_endpoint_until_idle_and_drop_without_one() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let a = udp_echo(b"a:").await;
    let b = udp_echo(b"b:").await;
    let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let key = ListenKey {
        port: addr.port(),
        transport: Transport::Udp,
    };
    let route = |local: Vec<SocketAddr>| Route {
        service: "default/dns".into(),
        local,
        remote: vec![],
        port: 0,
    };
    let (tx, rx) = watch::channel(Arc::new(table(key, route(vec![]), &[])));
    tokio::spawn(udp::serve(
        socket,
        Listener {
            addr: addr.ip(),
            key,
            pods: false,
        },
        rx,
        None,
        health::SharedFailures::default(),
        Duration::from_millis(300),
        stop.clone(),
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(addr).await.unwrap();
    let mut buf = [0u8; 64];

    // No endpoint: dropped.
    client.send(b"0").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf))
            .await
            .is_err()
    );

    tx.send_replace(Arc::new(table(key, route(vec![a]), &[])));
    client.send(b"1").await.unwrap();
    let n = tokio::time::timeout(PATIENCE, client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"a:1");

    // The table moves to b; the live flow stays on a.
    tx.send_replace(Arc::new(table(key, route(vec![b]), &[])));
    client.send(b"2").await.unwrap();
    let n = tokio::time::timeout(PATIENCE, client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"a:2");

    // Once the flow expires (quiet for longer than its idle time), the next datagram opens
    // one to b.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "never reached b");
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.send(b"3").await.unwrap();
        let n = tokio::time::timeout(PATIENCE, client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if &buf[..n] == b"b:3" {
            break;
        }
        assert_eq!(&buf[..n], b"a:3");
    }
}

// ---- run: the table from a real store, listeners following the Services ----

struct Node {
    state: StateHandle,
    observed: ObservedHandle,
    reporter: crate::observed::PodReporter,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn node(name: &str, address: &str) -> Node {
    use crate::observed::{self, NodeRecord};
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let state = crate::state::open_for_test(dir.path(), &stop);
    let (observed, reporter, hb) = observed::start(
        NodeRecord {
            name: name.into(),
            version: 1,
            address: address.into(),
            shoal_version: "test".into(),
            cpus: 2,
            memory_bytes: 2 << 30,
            ..NodeRecord::default()
        },
        observed::Timing::default(),
        4,
    );
    struct Quiet;
    #[async_trait::async_trait]
    impl observed::Publish for Quiet {
        async fn publish(&self, _: Vec<u8>) {}
    }
    let (_gossip, gossip_rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(hb.with_gossip(Arc::new(Quiet), gossip_rx).run(stop.clone()));
    Node {
        state,
        observed,
        reporter,
        stop,
        _dir: dir,
    }
}

fn ready_status(pod_ip: &str) -> PodStatus {
    PodStatus {
        phase: "Running".into(),
        conditions: vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: None,
            reason: None,
            message: None,
        }],
        pod_ip: Some(pod_ip.into()),
        ..PodStatus::default()
    }
}

/// Polls `f` until it holds, for up to ten seconds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `addr` echoes through the proxy.
async fn echoes(addr: SocketAddr) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(PATIENCE, TcpStream::connect(addr)).await else {
        return false;
    };
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut back = [0u8; 4];
    matches!(
        tokio::time::timeout(PATIENCE, s.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && &back == b"ping"
}

#[tokio::test]
async fn run_listens_on_the_services_ports_and_follows_them() {
    const ADDR: &str = "127.0.0.5";
    let n = node("n1", ADDR).await;
    let _guard = n.stop.clone().drop_guard();
    let echo = tcp_echo().await;
    // A port another process holds, and a free one.
    let busy = TcpListener::bind((ip(ADDR), 0)).await.unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let port = {
        let probe = TcpListener::bind((ip(ADDR), 0)).await.unwrap();
        probe.local_addr().unwrap().port()
    };

    let web = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": port, "targetPort": "http"}]}});
    let taken = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "taken", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": busy_port}]}});
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "echo",
                 "ports": [{"name": "http", "containerPort": echo.port()}]}]}});
    n.state
        .apply_values(vec![
            (Kind::Service, web),
            (Kind::Service, taken),
            (Kind::Pod, pod),
        ])
        .await
        .unwrap();
    n.state
        .write_slots(
            vec![Slot {
                namespace: "default".into(),
                pod: "web-0".into(),
                owner_kind: "Pod".into(),
                owner_name: "web-0".into(),
                index: 0,
                revision: String::new(),
                node: "n1".into(),
                unschedulable: None,
            }],
            vec![],
        )
        .await
        .unwrap();
    n.reporter
        .report(BTreeMap::from([(
            "default/web-0".to_string(),
            ready_status("127.0.0.1"),
        )]))
        .await
        .unwrap();

    let (network_tx, network_rx) = watch::channel(None);
    tokio::spawn(run(
        ProxyConfig {
            node_name: "n1".into(),
            address: ip(ADDR),
        },
        n.state.clone(),
        n.observed.clone(),
        network_rx,
        watch::channel(ServiceAddresses::default()).0,
        n.stop.clone(),
    ));
    let svc_addr = SocketAddr::new(ip(ADDR), port);
    eventually("the service's port forwards to the pod", || {
        echoes(svc_addr)
    })
    .await;

    // The pod network appears (its gateway stands in on another loopback address): the port
    // opens there too, with the same route.
    const GATEWAY: &str = "127.0.0.6";
    let gw_addr = SocketAddr::new(ip(GATEWAY), port);
    assert!(TcpStream::connect(gw_addr).await.is_err());
    network_tx.send_replace(Some(crate::runtime::PodNetwork {
        gateway: ip(GATEWAY),
        subnet: crate::runtime::Subnet::parse("127.0.0.0/8").unwrap(),
        ip_range: None,
    }));
    eventually("the gateway forwards to the pod", || echoes(gw_addr)).await;

    // The pod turns unready: connections are closed at once.
    let mut unready = ready_status("127.0.0.1");
    unready.conditions[0].status = "False".into();
    n.reporter
        .report(BTreeMap::from([("default/web-0".to_string(), unready)]))
        .await
        .unwrap();
    eventually("an unready pod leaves the forwarding", || async {
        match TcpStream::connect(svc_addr).await {
            Ok(mut s) => {
                let _ = s.write_all(b"ping").await;
                let mut buf = [0u8; 4];
                matches!(
                    tokio::time::timeout(PATIENCE, s.read(&mut buf)).await,
                    Ok(Ok(0)) | Ok(Err(_))
                )
            }
            Err(_) => false,
        }
    })
    .await;

    // The Service goes: its port closes.
    n.state
        .delete(Kind::Service, Some("default"), "web")
        .await
        .unwrap();
    eventually("a deleted service's port closes", || async {
        TcpStream::connect(svc_addr).await.is_err() && TcpStream::connect(gw_addr).await.is_err()
    })
    .await;

    // The busy port stopped nothing, and is taken as soon as it is free.
    drop(busy);
    let busy_addr = SocketAddr::new(ip(ADDR), busy_port);
    eventually("a port freed by another process is bound", || async {
        TcpStream::connect(busy_addr).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn udp_leaves_a_refusing_target_for_the_next_one() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    // Nothing listens on `dead`: a datagram there comes back as ICMP port unreachable.
    let dead = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap()
    };
    let live = udp_echo(b"live:").await;
    let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let key = ListenKey {
        port: addr.port(),
        transport: Transport::Udp,
    };
    let route = Route {
        service: "default/dns".into(),
        // Round-robin names the dead one first.
        local: vec![dead, live],
        remote: vec![],
        port: 0,
    };
    let failures = health::SharedFailures::default();
    let (_tx, rx) = watch::channel(Arc::new(table(key, route, &[])));
    tokio::spawn(udp::serve(
        socket,
        Listener {
            addr: addr.ip(),
            key,
            pods: false,
        },
        rx,
        None,
        failures.clone(),
        udp::IDLE,
        stop.clone(),
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    // A client retries, as UDP clients do: the first datagram is lost to the dead target, the
    // retry (same client address, so the same flow were it kept) reaches the live one.
    let mut answer = None;
    for _ in 0..5 {
        client.send(b"q").await.unwrap();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await
        {
            answer = Some(buf[..n].to_vec());
            break;
        }
    }
    assert_eq!(answer.as_deref(), Some(&b"live:q"[..]));
    assert!(failures.failed(dead), "the refusal is remembered");
    // Later datagrams keep going to the live target.
    for _ in 0..3 {
        client.send(b"r").await.unwrap();
        let n = tokio::time::timeout(PATIENCE, client.recv(&mut buf))
            .await
            .expect("reply in time")
            .unwrap();
        assert_eq!(&buf[..n], b"live:r");
    }
}
