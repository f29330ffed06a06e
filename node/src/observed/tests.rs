#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use super::*;

fn rec(version: u64, address: &str) -> NodeRecord {
    NodeRecord {
        name: "n1".into(),
        version,
        address: address.into(),
        shoal_version: "0".into(),
        cpus: 1,
        memory_bytes: 1,
        ..NodeRecord::default()
    }
}

fn named(name: &str, version: u64) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        ..rec(version, "a")
    }
}

#[test]
fn merge_laws() {
    let (a, b, c) = (rec(1, "a"), rec(2, "b"), rec(3, "c"));
    // Commutative on distinct versions.
    assert_eq!(a.clone().merge(b.clone()), b.clone().merge(a.clone()));
    // Associative.
    assert_eq!(
        a.clone().merge(b.clone()).merge(c.clone()),
        a.clone().merge(b.clone().merge(c.clone()))
    );
    // Idempotent.
    assert_eq!(b.clone().merge(b.clone()), b);
}

#[test]
fn meminfo() {
    let s = "MemTotal:       24575392 kB\nMemFree: 1 kB\n";
    assert_eq!(parse_meminfo_total(s), Some(24_575_392 * 1024));
    assert_eq!(parse_meminfo_total("garbage"), None);
}

#[test]
fn messages_round_trip_and_garbage_is_refused() {
    let mut r = named("n2", 7);
    r.pods.insert(
        "default/web-0".into(),
        PodStatus {
            phase: "Running".into(),
            ..PodStatus::default()
        },
    );
    for m in [
        Message::Record(r),
        Message::Beat {
            name: "n2".into(),
            version: 8,
            heartbeat_at: 100,
            peer: 0,
        },
        Message::Beat {
            name: "n2".into(),
            version: 8,
            heartbeat_at: 100,
            peer: peer_fingerprint("12D3KooWpeer"),
        },
    ] {
        assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
    }
    let beat = Message::Beat {
        name: "node-1".into(),
        version: 1_764_000_000_000_000,
        heartbeat_at: 1_764_000_000,
        peer: peer_fingerprint("12D3KooWHq9bn5Wk5eXfPGGRm8g3sUG2y6jCkFnc5JtL2Ry4WaNj"),
    };
    assert!(beat.encode().unwrap().len() < 80, "a beat stays small");
    assert!(Message::decode(b"\xff\x00garbage").is_err());
    assert!(Message::decode(&[]).is_err());
}

/// `merge_message` as the tests call it: this node is "me" (peer "pme"), hold 3 s; whether
/// the map changed.
fn merge(map: &mut BTreeMap<String, NodeRecord>, message: Message, now: Instant) -> bool {
    let mut rivals = BTreeMap::new();
    merge_with_rivals(map, &mut rivals, message, now).map
}

fn merge_with_rivals(
    map: &mut BTreeMap<String, NodeRecord>,
    rivals: &mut BTreeMap<String, NodeRecord>,
    message: Message,
    now: Instant,
) -> Merged {
    let own = Own {
        name: "me",
        peer_id: "pme",
    };
    merge_message(map, rivals, &own, message, now, Duration::from_secs(3))
}

fn beat(name: &str, version: u64, peer: &str) -> Message {
    Message::Beat {
        name: name.into(),
        version,
        heartbeat_at: 42,
        peer: peer_fingerprint(peer),
    }
}

#[test]
fn merging_messages() {
    let now = Instant::now();
    let mut map = BTreeMap::new();
    map.insert("me".to_string(), named("me", 5));
    // A new node's record is taken, and stamped with when it was heard.
    assert!(merge(&mut map, Message::Record(named("n2", 10)), now));
    assert_eq!(map["n2"].seen, Some(now));
    // Older or equal versions change nothing; neither does anything about this node.
    assert!(!merge(&mut map, Message::Record(named("n2", 10)), now));
    assert!(!merge(&mut map, Message::Record(named("me", 99)), now));
    assert_eq!(map["me"].version, 5);
    // A beat moves the version and the heartbeat but keeps the record.
    let later = now + Duration::from_secs(1);
    assert!(merge(&mut map, beat("n2", 11, ""), later));
    assert_eq!(
        (map["n2"].version, map["n2"].heartbeat_at, map["n2"].seen),
        (11, 42, Some(later))
    );
    assert!(!merge(&mut map, beat("n2", 11, ""), later));
    // A beat of an unknown node waits for its record.
    assert!(!merge(&mut map, beat("n3", 1, ""), later));
    assert!(!map.contains_key("n3"));
}

/// A node restarts with its clock behind its previous run's (a Pi before NTP): its new run's
/// records carry lower versions. They are not taken while the old run is still heard, and are
/// taken once it has been silent for `hold`, with the beats that follow.
#[test]
fn a_new_run_with_a_clock_that_went_back_replaces_the_old_run_once_it_is_silent() {
    let now = Instant::now();
    let mut map = BTreeMap::new();
    let old = NodeRecord {
        run: 7,
        ..owned("n2", "p2", 1_000_000)
    };
    assert!(merge(&mut map, Message::Record(old.clone()), now));
    let new = NodeRecord {
        run: 9,
        ..owned("n2", "p2", 500)
    };
    assert!(!merge(
        &mut map,
        Message::Record(new.clone()),
        now + Duration::from_secs(1)
    ));
    assert_eq!(map["n2"].run, 7);
    let later = now + Duration::from_secs(4);
    assert!(merge(&mut map, Message::Record(new), later));
    assert_eq!((map["n2"].run, map["n2"].version), (9, 500));
    assert!(merge(
        &mut map,
        beat("n2", 501, "p2"),
        later + Duration::from_millis(500)
    ));
    assert_eq!(map["n2"].version, 501);
    // A stale record of the new run stays older.
    assert!(!merge(
        &mut map,
        Message::Record(NodeRecord {
            run: 9,
            ..owned("n2", "p2", 400)
        }),
        later + Duration::from_secs(1)
    ));
}

fn owned(name: &str, peer: &str, version: u64) -> NodeRecord {
    NodeRecord {
        peer_id: peer.into(),
        ..named(name, version)
    }
}

/// One name, two machines: the peer heard first keeps the name while it is heard; the other
/// one's records and beats are ignored, even with higher versions; once the holder is quiet
/// for `hold` (or left), the other takes the record (a replaced machine).
#[test]
fn a_name_belongs_to_the_peer_that_holds_it_while_it_is_heard() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    // (what happens, message, at, map changed, peer of pi's record afterwards)
    let table: Vec<(&str, Message, Instant, bool, &str)> = vec![
        (
            "first heard",
            Message::Record(owned("pi", "pa", 10)),
            t0,
            true,
            "pa",
        ),
        (
            "a newer record of another peer",
            Message::Record(owned("pi", "pb", 99)),
            t0 + s(1),
            false,
            "pa",
        ),
        (
            "a beat of another peer",
            beat("pi", 100, "pb"),
            t0 + s(1),
            false,
            "pa",
        ),
        (
            "the holder's beat",
            beat("pi", 11, "pa"),
            t0 + s(2),
            true,
            "pa",
        ),
        (
            "the other peer, holder heard 2.9 s ago",
            Message::Record(owned("pi", "pb", 101)),
            t0 + s(2) + Duration::from_millis(2900),
            false,
            "pa",
        ),
        (
            "the other peer, holder quiet for 3 s",
            Message::Record(owned("pi", "pb", 102)),
            t0 + s(5),
            true,
            "pb",
        ),
        (
            "the old holder again, new one heard",
            Message::Record(owned("pi", "pa", 500)),
            t0 + s(6),
            false,
            "pb",
        ),
        (
            "an old node's beat (no fingerprint)",
            beat("pi", 103, ""),
            t0 + s(6),
            true,
            "pb",
        ),
    ];
    let mut map = BTreeMap::new();
    for (what, message, at, changed, holder) in table {
        assert_eq!(merge(&mut map, message, at), changed, "{what}");
        assert_eq!(map["pi"].peer_id, holder, "{what}");
    }
    // A holder that left gives the name up at once.
    let mut map = BTreeMap::new();
    let mut left = owned("pi", "pa", 10);
    left.left = true;
    assert!(merge(&mut map, Message::Record(left), t0));
    assert!(merge(&mut map, Message::Record(owned("pi", "pb", 11)), t0));
    assert_eq!(map["pi"].peer_id, "pb");
}

/// Messages with this node's own name from another peer id are rivals, refreshed by their
/// beats; this node's own messages (echoed back) are not.
#[test]
fn messages_with_this_nodes_name_from_another_peer_are_rivals() {
    let t0 = Instant::now();
    let (mut map, mut rivals) = (BTreeMap::new(), BTreeMap::new());
    let m = merge_with_rivals(
        &mut map,
        &mut rivals,
        Message::Record(owned("me", "pme", 9)),
        t0,
    );
    assert_eq!(m, Merged::default());
    let m = merge_with_rivals(&mut map, &mut rivals, beat("me", 10, "pme"), t0);
    assert_eq!(m, Merged::default());
    let m = merge_with_rivals(
        &mut map,
        &mut rivals,
        Message::Record(owned("me", "pother", 5)),
        t0,
    );
    assert_eq!(
        m,
        Merged {
            map: false,
            rivals: true
        }
    );
    assert_eq!(rivals["pother"].seen, Some(t0));
    let later = t0 + Duration::from_secs(1);
    let m = merge_with_rivals(&mut map, &mut rivals, beat("me", 6, "pother"), later);
    assert_eq!(
        m,
        Merged {
            map: false,
            rivals: true
        }
    );
    assert_eq!(rivals["pother"].seen, Some(later));
    assert!(map.is_empty());
}

/// A hub that hands every published message to the other nodes' inbound channels.
#[derive(Default)]
struct Hub {
    nodes: Mutex<Vec<(String, mpsc::Sender<Inbound>)>>,
    sent: Mutex<Vec<(String, usize)>>,
    /// Every message published, decoded, with its sender.
    messages: Mutex<Vec<(String, Message)>>,
}

struct HubPublish {
    hub: Arc<Hub>,
    from: String,
}

#[async_trait::async_trait]
impl Publish for HubPublish {
    async fn publish(&self, data: Vec<u8>) {
        self.hub
            .sent
            .lock()
            .unwrap()
            .push((self.from.clone(), data.len()));
        if let Ok(m) = Message::decode(&data) {
            self.hub
                .messages
                .lock()
                .unwrap()
                .push((self.from.clone(), m));
        }
        let peers: Vec<_> = self.hub.nodes.lock().unwrap().clone();
        for (name, tx) in peers {
            if name != self.from {
                let _ = tx.try_send(Inbound::Gossip { data: data.clone() });
            }
        }
    }
}

/// The timings these tests were written for: heartbeat 1 s, suspect after 3 s, dead after 6 s.
fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_secs(1),
        suspect_after: Duration::from_secs(3),
        dead_after: Duration::from_secs(6),
        full_every: 5,
    }
}

fn gossiping(
    hub: &Arc<Hub>,
    name: &str,
) -> (
    ObservedHandle,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (handle, _reporter, hb) = start(named(name, 0), timing(), 16);
    let (tx, rx) = mpsc::channel(64);
    hub.nodes.lock().unwrap().push((name.to_string(), tx));
    let publish = Arc::new(HubPublish {
        hub: hub.clone(),
        from: name.into(),
    });
    let stop = CancellationToken::new();
    let task = tokio::spawn(hb.with_gossip(publish, rx).run(stop.clone()));
    (handle, stop, task)
}

#[tokio::test(start_paused = true)]
async fn members_are_alive_then_suspect_then_dead_or_left() {
    let hub = Arc::new(Hub::default());
    let (a, _stop_a, _ta) = gossiping(&hub, "a");
    let (b, stop_b, tb) = gossiping(&hub, "b");
    let (c, stop_c, tc) = gossiping(&hub, "c");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for h in [&a, &b, &c] {
        let m = h.members();
        assert_eq!(m.len(), 3, "{:?}", m.keys());
        assert!(m.values().all(|m| m.liveness == Liveness::Alive), "{m:?}");
    }
    // Idle nodes send beats, not their whole records, between full ones.
    let sizes: Vec<usize> = hub.sent.lock().unwrap().iter().map(|(_, n)| *n).collect();
    assert!(sizes.iter().any(|&n| n < 80), "{sizes:?}");

    // c disappears without a word (kill -9): suspect after 3 s, dead after 6 s.
    c.snapshot();
    hub.nodes.lock().unwrap().retain(|(n, _)| n != "c");
    tc.abort();
    drop(stop_c);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(a.members()["c"].liveness, Liveness::Suspect);
    assert_eq!(a.members()["b"].liveness, Liveness::Alive);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.members()["c"].liveness, Liveness::Dead);
    assert!(a.members()["c"].last_seen.is_some());

    // b stops gracefully: a sees it leave at once.
    stop_b.cancel();
    tb.await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.members()["b"].liveness, Liveness::Left);
    // This node is always alive to itself.
    assert_eq!(a.members()["a"].liveness, Liveness::Alive);
    assert_eq!(b.members()["b"].liveness, Liveness::Alive);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_wins_over_its_previous_run() {
    let hub = Arc::new(Hub::default());
    let (a, _sa, _ta) = gossiping(&hub, "a");
    let (_b, stop_b, tb) = gossiping(&hub, "b");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_b.cancel();
    tb.await.unwrap();
    hub.nodes.lock().unwrap().retain(|(n, _)| n != "b");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.members()["b"].liveness, Liveness::Left);
    // The same node again (its version starts from the clock, past the old run's).
    std::thread::sleep(Duration::from_millis(2));
    let (_b2, _sb2, _tb2) = gossiping(&hub, "b");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.members()["b"].liveness, Liveness::Alive);
}

#[tokio::test(start_paused = true)]
async fn heartbeat_bumps_version() {
    let (h, reporter, hb) = start(rec(0, "a"), timing(), 4);
    let v0 = h.snapshot().get("n1").unwrap().version;
    let stop = CancellationToken::new();
    let task = tokio::spawn(hb.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let v = h.snapshot().get("n1").unwrap().version;
    assert!(v >= v0 + 2, "version {v}");
    let mut pods = BTreeMap::new();
    pods.insert(
        "default/web-0".to_string(),
        PodStatus {
            phase: "Running".into(),
            ..PodStatus::default()
        },
    );
    reporter.report(pods).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (node, pod) = h.pod("default/web-0").unwrap();
    assert_eq!((node.as_str(), pod.phase.as_str()), ("n1", "Running"));
    assert!(
        h.snapshot().get("n1").unwrap().version > v,
        "a report bumps the version"
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_state_digest_reaches_the_peers_with_the_next_heartbeat() {
    let hub = Arc::new(Hub::default());
    let (a, _sa, _ta) = gossiping(&hub, "a");
    let (handle, _reporter, hb) = start(named("b", 0), timing(), 16);
    let (tx, rx) = mpsc::channel(64);
    hub.nodes.lock().unwrap().push(("b".to_string(), tx));
    let publish = Arc::new(HubPublish {
        hub: hub.clone(),
        from: "b".into(),
    });
    let (digest_tx, digest_rx) = watch::channel(String::new());
    let stop = CancellationToken::new();
    let _tb = tokio::spawn(
        hb.with_gossip(publish, rx)
            .with_digest(digest_rx)
            .run(stop.clone()),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.snapshot()["b"].state_digest, "");
    digest_tx.send_replace("d1".into());
    // A whole record goes out at the next heartbeat (1 s), not after `full_every` beats.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(handle.snapshot()["b"].state_digest, "d1");
    assert_eq!(a.snapshot()["b"].state_digest, "d1");
    digest_tx.send_replace("d2".into());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(a.snapshot()["b"].state_digest, "d2");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_inventory_goes_out_when_it_changes_and_to_whoever_missed_it() {
    let hub = Arc::new(Hub::default());
    let (a, _sa, _ta) = gossiping(&hub, "a");
    let b = NodeRecord {
        peer_id: "pb".into(),
        ..named("b", 0)
    };
    let (_handle, _reporter, hb) = start(b, timing(), 16);
    let (tx, rx) = mpsc::channel(64);
    hub.nodes.lock().unwrap().push(("b".to_string(), tx));
    let publish = Arc::new(HubPublish {
        hub: hub.clone(),
        from: "b".into(),
    });
    let (images_tx, images_rx) = watch::channel(LocalImages::default());
    let stop = CancellationToken::new();
    let _tb = tokio::spawn(
        hb.with_gossip(publish, rx)
            .with_images(images_rx)
            .run(stop.clone()),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let entry = ImageEntry {
        id: "sha256:aa".into(),
        repo_tags: vec!["app:v1".into()],
        repo_digests: Vec::new(),
        size: 7,
    };
    images_tx.send_replace(LocalImages {
        images: vec![entry.clone()],
        ..LocalImages::default()
    });
    // At once, not at the next heartbeat.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.inventories()["b"].images, vec![entry.clone()]);
    let from_b = |hub: &Hub| {
        hub.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(f, m)| f == "b" && matches!(m, Message::Images { .. }))
            .count()
    };
    // Ten idle seconds (two whole records) send it no more.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(from_b(&hub), 1);

    // A node that joins later learns from b's record that it lacks b's inventory, and asks.
    let (c, _sc, _tc) = gossiping(&hub, "c");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        c.inventories().get("b").map(|i| i.images.clone()),
        Some(vec![entry])
    );
    let asked = hub
        .messages
        .lock()
        .unwrap()
        .iter()
        .any(|(f, m)| f == "c" && matches!(m, Message::WantImages { name } if name == "b"));
    assert!(asked, "c never asked b for its inventory");
    assert_eq!(from_b(&hub), 2);
    stop.cancel();
}
