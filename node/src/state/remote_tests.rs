//! Tests of the store's replication commands: two stores (two data directories, two tasks)
//! exchanging changes and sync messages as two nodes would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use serde_json::{Value, json};
use shoal_protocol::Kind;
use tokio_util::sync::CancellationToken;

use super::*;

struct Node {
    handle: StateHandle,
    shutdown: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl Node {
    fn start(dir: &Path) -> Node {
        let (handle, task) = open(&StateConfig {
            data_dir: dir.to_path_buf(),
            cluster_secret: [7; 32],
            channel_size: 16,
        })
        .unwrap();
        let shutdown = CancellationToken::new();
        let join = tokio::spawn(task.run(shutdown.clone()));
        Node {
            handle,
            shutdown,
            join,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.join.await.unwrap();
    }
}

fn config_map(name: &str, value: &str) -> (Kind, Value) {
    (
        Kind::ConfigMap,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "default"},
               "data": {"v": value}}),
    )
}

async fn has(h: &StateHandle, name: &str) -> bool {
    h.get(Kind::ConfigMap, Some("default"), name)
        .await
        .unwrap()
        .is_some()
}

/// Runs the sync protocol between two stores until neither has anything to send; returns the
/// number of messages.
async fn sync_until_quiet(a: &StateHandle, b: &StateHandle) -> usize {
    let mut messages = 0;
    for _ in 0..20 {
        let ab = a.sync_message("b".into()).await.unwrap();
        if let Some(m) = &ab {
            b.receive_sync("a".into(), m.clone()).await.unwrap();
            messages += 1;
        }
        let ba = b.sync_message("a".into()).await.unwrap();
        if let Some(m) = &ba {
            a.receive_sync("b".into(), m.clone()).await.unwrap();
            messages += 1;
        }
        if ab.is_none() && ba.is_none() {
            return messages;
        }
    }
    panic!("the sync protocol did not go quiet");
}

#[tokio::test]
async fn two_forked_stores_converge_through_the_sync_protocol() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Node::start(da.path()), Node::start(db.path()));
    a.handle
        .apply_values(vec![config_map("on-a", "1")])
        .await
        .unwrap();
    b.handle
        .apply_values(vec![config_map("on-b", "2")])
        .await
        .unwrap();
    assert_ne!(
        a.handle.digest().await.unwrap(),
        b.handle.digest().await.unwrap()
    );

    let messages = sync_until_quiet(&a.handle, &b.handle).await;
    assert!(messages >= 2, "{messages}");
    assert_eq!(
        a.handle.digest().await.unwrap(),
        b.handle.digest().await.unwrap()
    );
    for h in [&a.handle, &b.handle] {
        assert!(has(h, "on-a").await && has(h, "on-b").await);
    }
    // In sync: the next exchange is one message each way at most, then quiet.
    a.handle.begin_sync("b".into()).await.unwrap();
    assert!(sync_until_quiet(&a.handle, &b.handle).await <= 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn changes_since_and_apply_remote_round_trip_and_wake_subscribers() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Node::start(da.path()), Node::start(db.path()));
    let (all, heads) = a.handle.changes_since(Vec::new()).await.unwrap();
    assert_eq!(heads, a.handle.heads().await.unwrap());
    assert!(b.handle.apply_remote(all.clone()).await.unwrap());
    // Applying the same changes again changes nothing.
    assert!(!b.handle.apply_remote(all).await.unwrap());

    let mut commits = b.handle.subscribe();
    commits.mark_unchanged();
    a.handle
        .apply_values(vec![config_map("x", "1")])
        .await
        .unwrap();
    let (delta, new_heads) = a.handle.changes_since(heads.clone()).await.unwrap();
    assert_ne!(new_heads, heads);
    let (local, _) = a.handle.local_changes_since(heads).await.unwrap();
    assert_eq!(local, delta, "a wrote the change itself");
    let b_before = b.handle.heads().await.unwrap();
    assert!(b.handle.apply_remote(delta).await.unwrap());
    assert!(commits.has_changed().unwrap(), "subscribers wake up");
    assert!(has(&b.handle, "x").await);
    // b also holds its own `default` namespace: sending it back makes both equal.
    let (from_b, _) = b.handle.changes_since(new_heads.clone()).await.unwrap();
    assert!(a.handle.apply_remote(from_b).await.unwrap());
    assert_eq!(
        a.handle.digest().await.unwrap(),
        b.handle.digest().await.unwrap()
    );
    // What b received is not b's to broadcast.
    let (b_local, _) = b.handle.local_changes_since(b_before).await.unwrap();
    assert!(b_local.is_empty());
    let now = a.handle.heads().await.unwrap();
    let (nothing, same) = a.handle.changes_since(now.clone()).await.unwrap();
    assert!(nothing.is_empty());
    assert_eq!(same, now);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn garbage_from_a_peer_is_an_error_and_changes_nothing() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Node::start(da.path()), Node::start(db.path()));
    a.handle
        .apply_values(vec![config_map("x", "1")])
        .await
        .unwrap();
    let (changes, _) = a.handle.changes_since(Vec::new()).await.unwrap();
    let sync = a.handle.sync_message("b".into()).await.unwrap().unwrap();
    let digest = b.handle.digest().await.unwrap();

    let mut flipped = changes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    for bad in [
        b"garbage".to_vec(),
        changes[..changes.len() / 2].to_vec(),
        flipped,
        vec![
            0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ],
    ] {
        match b.handle.apply_remote(bad.clone()).await {
            Err(StateError::Remote(_)) => {}
            other => panic!("expected a Remote error, got {other:?}"),
        }
        match b.handle.receive_sync("a".into(), bad).await {
            Err(StateError::Remote(_)) => {}
            other => panic!("expected a Remote error, got {other:?}"),
        }
    }
    match b
        .handle
        .receive_sync("a".into(), sync[..sync.len() / 2].to_vec())
        .await
    {
        Err(StateError::Remote(_)) => {}
        other => panic!("expected a Remote error, got {other:?}"),
    }
    assert_eq!(b.handle.digest().await.unwrap(), digest);
    // The task is alive and well.
    b.handle
        .apply_values(vec![config_map("y", "1")])
        .await
        .unwrap();
    assert!(has(&b.handle, "y").await);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn remote_changes_are_persisted() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(da.path());
    let b = Node::start(db.path());
    a.handle
        .apply_values(vec![config_map("from-a", "1")])
        .await
        .unwrap();
    sync_until_quiet(&a.handle, &b.handle).await;
    let digest = b.handle.digest().await.unwrap();
    b.stop().await;

    let b = Node::start(db.path());
    assert!(has(&b.handle, "from-a").await);
    assert_eq!(b.handle.digest().await.unwrap(), digest);
    a.stop().await;
    b.stop().await;
}

/// An automerge document that does not start from shoal's genesis (another cluster's, had it
/// another schema; or anything else).
fn foreign_doc() -> automerge::AutoCommit {
    let mut doc = automerge::AutoCommit::new();
    doc.put(automerge::ROOT, "schema", 99).unwrap();
    doc.put_object(automerge::ROOT, "objects", automerge::ObjType::Map)
        .unwrap();
    doc.commit();
    doc
}

#[tokio::test]
async fn a_document_without_our_genesis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::start(dir.path());
    let digest = a.handle.digest().await.unwrap();

    match a.handle.apply_remote(foreign_doc().save()).await {
        Err(StateError::ForeignDocument(detail)) => {
            assert!(detail.contains("another cluster"), "{detail}");
        }
        other => panic!("expected ForeignDocument, got {other:?}"),
    }
    assert_eq!(a.handle.digest().await.unwrap(), digest);

    // The same through the sync protocol, with a peer that is a bare automerge document.
    let mut peer = foreign_doc();
    let mut peer_state = automerge::sync::State::new();
    let mut refused = None;
    for _ in 0..10 {
        if let Some(m) = a.handle.sync_message("p".into()).await.unwrap() {
            let m = automerge::sync::Message::decode(&m).unwrap();
            peer.sync()
                .receive_sync_message(&mut peer_state, m)
                .unwrap();
        }
        let Some(m) = peer.sync().generate_sync_message(&mut peer_state) else {
            continue;
        };
        if let Err(e) = a.handle.receive_sync("p".into(), m.encode()).await {
            refused = Some(e);
            break;
        }
    }
    assert!(
        matches!(refused, Some(StateError::ForeignDocument(_))),
        "{refused:?}"
    );
    assert_eq!(a.handle.digest().await.unwrap(), digest);
    a.stop().await;
}

#[tokio::test]
async fn leases_take_the_next_epoch_fence_stale_claims_and_merge_alike() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Node::start(da.path()), Node::start(db.path()));
    let (ha, hb) = (&a.handle, &b.handle);
    assert!(ha.leases().await.unwrap().is_empty());

    // n1 takes the role at epoch 1; a claim that saw no lease is stale now and writes nothing.
    let l1 = ha
        .claim_lease("controller", "n1", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((l1.epoch, l1.holder.as_str()), (1, "n1"));
    let digest = ha.digest().await.unwrap();
    let stale = ha
        .claim_lease("controller", "n2", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stale, l1);
    assert_eq!(
        ha.digest().await.unwrap(),
        digest,
        "a stale claim writes nothing"
    );
    // Epochs 2 and 3: only the two newest are kept.
    ha.claim_lease("controller", "n2", 1).await.unwrap();
    let l3 = ha
        .claim_lease("controller", "n1", 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((l3.epoch, l3.holder.as_str()), (3, "n1"));
    assert_eq!(ha.leases().await.unwrap()["controller"], l3);

    // Two nodes that both saw epoch 3 claim epoch 4 at once (a partition): after a merge
    // both hold the same newest lease.
    sync_until_quiet(ha, hb).await;
    assert_eq!(hb.leases().await.unwrap()["controller"], l3);
    let la = ha
        .claim_lease("controller", "n1", 3)
        .await
        .unwrap()
        .unwrap();
    let lb = hb
        .claim_lease("controller", "n2", 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((la.epoch, lb.epoch), (4, 4));
    sync_until_quiet(ha, hb).await;
    let (wa, wb) = (
        ha.leases().await.unwrap()["controller"].clone(),
        hb.leases().await.unwrap()["controller"].clone(),
    );
    assert_eq!(wa, wb);
    assert_eq!(wa.epoch, 4);
    // Another role is independent, and leases survive a restart.
    ha.claim_lease("scheduler", "n3", 0).await.unwrap();
    a.stop().await;
    let a = Node::start(da.path());
    let leases = a.handle.leases().await.unwrap();
    assert_eq!(leases["controller"], wa);
    assert_eq!(leases["scheduler"].holder, "n3");
    a.stop().await;
    b.stop().await;
}

/// Two nodes that claim one pod subnet at once (each deciding from what it saw): after they
/// sync, automerge keeps one claim on both, the other node decides again and takes another,
/// and the range first recorded stays.
#[tokio::test]
async fn concurrent_pod_subnet_claims_end_with_one_holder_each() {
    use crate::podnet::subnet::{Decision, PodRange, decide};
    use crate::state::PodSubnetClaim;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Node::start(da.path()), Node::start(db.path()));
    let range = PodRange::parse("10.42.0.0/23").unwrap();
    let claim = |node: &str, index, release| PodSubnetClaim {
        range: range.to_string(),
        node: node.to_string(),
        index,
        release,
    };
    // Both see no claim; with two indexes each starts at its name's index, so force the
    // conflict by claiming what n1 would.
    let seen = a.handle.pod_subnets().await.unwrap();
    assert_eq!(seen.range, None);
    let Decision::Claim(i) = decide(&range, &seen.claims, "n1") else {
        panic!("n1 claims");
    };
    a.handle
        .claim_pod_subnet(claim("n1", Some(i), vec![]))
        .await
        .unwrap();
    let other = PodSubnetClaim {
        range: "10.9.0.0/16".into(),
        ..claim("n2", Some(i), vec![])
    };
    b.handle.claim_pod_subnet(other).await.unwrap();
    sync_until_quiet(&a.handle, &b.handle).await;
    let (sa, sb) = (
        a.handle.pod_subnets().await.unwrap(),
        b.handle.pod_subnets().await.unwrap(),
    );
    assert_eq!(sa, sb, "both hold the same claims");
    assert_eq!(sa.claims.len(), 1);
    let winner = sa.claims[&i].clone();
    let loser = if winner == "n1" { "n2" } else { "n1" };
    let loser_handle = if loser == "n1" { &a.handle } else { &b.handle };
    // The loser holds nothing now, so it claims the other index.
    let Decision::Claim(j) = decide(&range, &sa.claims, loser) else {
        panic!("{loser} claims again");
    };
    assert_ne!(i, j);
    assert_eq!(
        decide(&range, &sa.claims, &winner),
        Decision::Keep {
            index: i,
            release: vec![]
        }
    );
    loser_handle
        .claim_pod_subnet(claim(loser, Some(j), vec![]))
        .await
        .unwrap();
    sync_until_quiet(&a.handle, &b.handle).await;
    let after = a.handle.pod_subnets().await.unwrap();
    assert_eq!(after, b.handle.pod_subnets().await.unwrap());
    assert_eq!(after.claims[&i], winner);
    assert_eq!(after.claims[&j], loser);
    assert!(after.range.is_some());
    // A release removes only the node's own claim, and claims survive a restart.
    a.handle
        .claim_pod_subnet(claim("n1", None, vec![i, j]))
        .await
        .unwrap();
    let left = a.handle.pod_subnets().await.unwrap();
    let n1_had = [i, j]
        .into_iter()
        .find(|x| after.claims[x] == "n1")
        .unwrap();
    assert!(!left.claims.contains_key(&n1_had));
    assert_eq!(left.claims.len(), 1);
    a.stop().await;
    let a = Node::start(da.path());
    assert_eq!(a.handle.pod_subnets().await.unwrap(), left);
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------- merge units (issue 15)

/// The Deployment `web` as a manifest, with `f` applied to its JSON before it is parsed.
fn web(f: impl FnOnce(&mut Value)) -> shoal_protocol::Resource {
    let mut v = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                         "ports": [{"containerPort": 80}]}]}
            }
        }
    });
    f(&mut v);
    shoal_protocol::manifest::parse_value(v).unwrap()
}

/// Starts two nodes that both hold `base`, applies `on_a` on one and `on_b` on the other
/// concurrently, merges both ways, and returns what each node then reads.
async fn concurrent_applies(
    base: shoal_protocol::Resource,
    on_a: shoal_protocol::Resource,
    on_b: shoal_protocol::Resource,
) -> (Value, Value) {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (Node::start(da.path()), Node::start(db.path()));
    a.handle.apply(vec![base]).await.unwrap();
    sync_until_quiet(&a.handle, &b.handle).await;
    let before = a.handle.heads().await.unwrap();
    assert_eq!(before, b.handle.heads().await.unwrap());
    a.handle.apply(vec![on_a]).await.unwrap();
    b.handle.apply(vec![on_b]).await.unwrap();
    // Merge both ways: each node receives the other's change.
    let (from_a, _) = a.handle.changes_since(before.clone()).await.unwrap();
    let (from_b, _) = b.handle.changes_since(before).await.unwrap();
    assert!(b.handle.apply_remote(from_a).await.unwrap());
    assert!(a.handle.apply_remote(from_b).await.unwrap());
    assert_eq!(
        a.handle.digest().await.unwrap(),
        b.handle.digest().await.unwrap()
    );
    let read = |h: StateHandle| async move {
        h.get(Kind::Deployment, Some("default"), "web")
            .await
            .unwrap()
            .unwrap()
            .value
    };
    let (ga, gb) = (read(a.handle.clone()).await, read(b.handle.clone()).await);
    a.stop().await;
    b.stop().await;
    (ga, gb)
}

/// The merged object as the API would check it at apply: no validation error.
/// Applies `on_a` and `on_b` to the base Deployment on two nodes at once: both read the same
/// object after the merge, it validates, and its spec is one side's, whole.
async fn merges_to_one_side(on_a: shoal_protocol::Resource, on_b: shoal_protocol::Resource) {
    let (spec_a, spec_b) = (
        on_a.to_value()["spec"].clone(),
        on_b.to_value()["spec"].clone(),
    );
    let (ga, gb) = concurrent_applies(web(|_| {}), on_a, on_b).await;
    assert_eq!(ga, gb, "both nodes read the same object");
    assert_validates(&ga);
    assert!(
        ga["spec"] == spec_a || ga["spec"] == spec_b,
        "the merged spec is neither side's:\nmerged: {:#}\nA: {spec_a:#}\nB: {spec_b:#}",
        ga["spec"]
    );
}

fn assert_validates(merged: &Value) {
    if let Err(e) = shoal_protocol::manifest::parse_value(merged.clone()) {
        panic!("the merged object does not validate: {e}\n{merged:#}");
    }
}

#[tokio::test]
async fn concurrent_applies_of_one_deployment_merge_to_one_sides_spec() {
    // A: a new selector with matching template labels. B: a new image and command.
    let on_a = web(|v| {
        v["spec"]["selector"]["matchLabels"] = json!({"app": "web", "track": "v2"});
        v["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "track": "v2"});
    });
    let on_b = web(|v| {
        let c = &mut v["spec"]["template"]["spec"]["containers"][0];
        c["image"] = json!("nginx:1.28");
        c["command"] = json!(["nginx", "-g", "daemon off;"]);
    });
    merges_to_one_side(on_a, on_b).await;
}

#[tokio::test]
async fn concurrent_strategy_edits_never_merge_into_an_invalid_deployment() {
    // Each side valid alone; field by field they merge into maxSurge 0 and maxUnavailable 0,
    // which validation refuses (the rollout could never progress).
    let on_a = web(|v| v["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!(0));
    let on_b = web(|v| v["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = json!(0));
    merges_to_one_side(on_a, on_b).await;
}

#[tokio::test]
async fn a_concurrent_scale_and_image_change_both_survive() {
    let on_a = web(|v| v["spec"]["replicas"] = json!(5));
    let on_b = web(|v| {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    });
    let (ga, gb) = concurrent_applies(web(|_| {}), on_a, on_b).await;
    assert_eq!(ga, gb, "both nodes read the same object");
    assert_validates(&ga);
    assert_eq!(ga["spec"]["replicas"], json!(5), "A's scale survives");
    assert_eq!(
        ga["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("nginx:1.28"),
        "B's image survives"
    );
}
