//! Tests of the store: apply semantics and secrets on [`Store`] directly, persistence and
//! group commit through the task, as the API uses it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use serde_json::{Value, json};
use shoal_protocol::Kind;
use shoal_protocol::api::ApplyAction;
use tokio_util::sync::CancellationToken;

use super::crypto::Sealer;
use super::persist::LOG_FILE;
use super::store::{Store, genesis};
use super::*;

const KEY: [u8; 32] = [42; 32];
/// 2026-11-25T18:27:00Z
const NOW: i64 = 1_795_631_220;

fn store() -> Store {
    let mut s = Store::create(Sealer::derive(&KEY)).unwrap();
    s.clock = std::sync::Arc::new(crate::time::FixedClock(NOW));
    s
}

fn deployment(ns: &str, name: &str, replicas: i64) -> (Kind, Value) {
    (
        Kind::Deployment,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                             "ports": [{"containerPort": 80}]}]}
                }
            }
        }),
    )
}

fn namespace(name: &str) -> (Kind, Value) {
    (
        Kind::Namespace,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
}

/// A Secret whose data holds `password` (base64 of the plaintext, as Kubernetes stores it).
fn secret(name: &str, password: &str) -> (Kind, Value) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(password);
    (
        Kind::Secret,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"},
            "type": "Opaque",
            "data": {"password": b64},
        }),
    )
}

fn actions(results: &[ApplyResult]) -> Vec<(ApplyAction, i64)> {
    results.iter().map(|r| (r.action, r.generation)).collect()
}

fn field_errors(e: StateError) -> Vec<FieldError> {
    match e {
        StateError::Invalid(errors) => errors,
        other => panic!("expected Invalid, got {other}"),
    }
}

// ---------------------------------------------------------------- layout

#[test]
fn the_genesis_is_the_same_everywhere() {
    let mut a = genesis().unwrap();
    let mut b = genesis().unwrap();
    assert_eq!(a.get_heads(), b.get_heads());
    // Pinned: a change here splits clusters between versions (see `store` docs).
    assert_eq!(
        a.get_heads()[0].to_string(),
        "4442f4423ecab1ca2e8b0441e9261d828e81b82515ebfbb4d04dc5582620f9aa",
        "the genesis change changed"
    );
}

#[test]
fn every_kind_has_its_map_in_the_genesis() {
    let s = store();
    for kind in Kind::ALL {
        assert!(
            s.list(kind, None).is_ok(),
            "{kind} has no map in the genesis"
        );
    }
    let mut doc = genesis().unwrap();
    let objects = match automerge::ReadDoc::get(&doc, automerge::ROOT, "objects").unwrap() {
        Some((_, id)) => id,
        None => panic!("no objects map"),
    };
    let names: Vec<String> = automerge::ReadDoc::keys(&doc, &objects).collect();
    for kind in Kind::ALL {
        assert!(names.iter().any(|n| n == kind.name()), "{kind} missing");
    }
    let _ = doc.get_heads();
}

#[test]
fn a_fresh_store_has_the_default_namespace() {
    let s = store();
    let ns = s.get(Kind::Namespace, None, "default").unwrap().unwrap();
    assert_eq!(ns.value["metadata"]["name"], "default");
    assert_eq!(ns.value["metadata"]["generation"], 1);
}

// ---------------------------------------------------------------- apply

#[test]
fn create_sets_server_metadata() {
    let mut s = store();
    let r = s
        .apply_values(vec![deployment("default", "web", 3)])
        .unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Created, 1)]);
    assert_eq!(r[0].api_version, "apps/v1");
    assert_eq!(r[0].kind, "Deployment");
    assert_eq!(r[0].namespace.as_deref(), Some("default"));
    assert_eq!(r[0].name, "web");
    let got = s
        .get(Kind::Deployment, Some("default"), "web")
        .unwrap()
        .unwrap();
    let meta = &got.value["metadata"];
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["resourceVersion"], "1");
    assert_eq!(meta["creationTimestamp"], "2026-11-25T18:27:00Z");
    let uid = meta["uid"].as_str().unwrap();
    assert_eq!(uid.len(), 36);
    assert_eq!(&uid[14..15], "4");
    // Shown in Kubernetes' order.
    let keys: Vec<&String> = got.value.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
    let meta_keys: Vec<&String> = meta.as_object().unwrap().keys().collect();
    assert_eq!(
        meta_keys,
        [
            "name",
            "namespace",
            "labels",
            "uid",
            "generation",
            "resourceVersion",
            "creationTimestamp"
        ]
    );
}

#[test]
fn reapplying_the_same_object_writes_nothing() {
    let mut s = store();
    s.apply_values(vec![deployment("default", "web", 3)])
        .unwrap();
    let before = s.digest();
    let heads = s.heads();
    // Server-set fields and status in the input are ignored.
    let (kind, mut v) = deployment("default", "web", 3);
    v["metadata"]["uid"] = json!("someone-else");
    v["metadata"]["resourceVersion"] = json!("77");
    v["status"] = json!({"replicas": 1});
    let r = s.apply_values(vec![(kind, v)]).unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Unchanged, 1)]);
    assert_eq!(s.heads(), heads);
    assert_eq!(s.digest(), before);
}

#[test]
fn spec_changes_bump_generation_label_changes_do_not() {
    let mut s = store();
    s.apply_values(vec![deployment("default", "web", 3)])
        .unwrap();
    let uid = |s: &Store| {
        s.get(Kind::Deployment, Some("default"), "web")
            .unwrap()
            .unwrap()
            .value["metadata"]["uid"]
            .clone()
    };
    let first_uid = uid(&s);

    let r = s
        .apply_values(vec![deployment("default", "web", 5)])
        .unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Configured, 2)]);

    let (kind, mut v) = deployment("default", "web", 5);
    v["metadata"]["labels"]["tier"] = json!("front");
    let r = s.apply_values(vec![(kind, v)]).unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Configured, 2)]);

    let got = s
        .get(Kind::Deployment, Some("default"), "web")
        .unwrap()
        .unwrap();
    assert_eq!(got.value["metadata"]["resourceVersion"], "3");
    assert_eq!(got.value["metadata"]["generation"], 2);
    assert_eq!(got.value["metadata"]["labels"]["tier"], "front");
    assert_eq!(got.value["spec"]["replicas"], 5);
    assert_eq!(uid(&s), first_uid);
    assert_eq!(
        got.value["metadata"]["creationTimestamp"],
        "2026-11-25T18:27:00Z"
    );
}

/// The map of `objects/KIND/KEY` in the document.
fn object_map(s: &mut Store, kind: Kind, key: &str) -> automerge::ObjId {
    use automerge::ReadDoc;
    let doc = s.doc_mut();
    let (_, objects) = doc.get(automerge::ROOT, "objects").unwrap().unwrap();
    let (_, kind_map) = doc.get(&objects, kind.name()).unwrap().unwrap();
    let (_, id) = doc.get(&kind_map, key).unwrap().unwrap();
    id
}

#[test]
fn objects_stored_as_plain_trees_still_read_and_convert_on_their_first_change() {
    let mut s = store();
    s.apply_values(vec![deployment("default", "web", 3)])
        .unwrap();
    let want = s
        .get(Kind::Deployment, Some("default"), "web")
        .unwrap()
        .unwrap();
    // Rewrite it as a shoald before merge units wrote it: one plain tree.
    let id = object_map(&mut s, Kind::Deployment, "default/web");
    let doc = s.doc_mut();
    for key in automerge::ReadDoc::keys(doc, &id).collect::<Vec<_>>() {
        automerge::transaction::Transactable::delete(doc, &id, key.as_str()).unwrap();
    }
    super::tree::write_map(doc, &id, want.value.as_object().unwrap()).unwrap();
    doc.commit();
    let raw = super::tree::read_obj(s.doc_mut(), &id).unwrap();
    assert!(raw.get("$body").is_none() && raw["spec"]["template"].is_object());

    let got = s.get(Kind::Deployment, Some("default"), "web").unwrap();
    assert_eq!(got.as_ref(), Some(&want));
    assert_eq!(s.list(Kind::Deployment, None).unwrap(), vec![want.clone()]);
    // An unchanged apply writes nothing, and leaves it as it is.
    let heads = s.heads();
    let r = s
        .apply_values(vec![deployment("default", "web", 3)])
        .unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Unchanged, 1)]);
    assert_eq!(s.heads(), heads);
    // A change converts it.
    s.apply_values(vec![deployment("default", "web", 5)])
        .unwrap();
    let raw = super::tree::read_obj(s.doc_mut(), &id).unwrap();
    assert!(raw["$body"].is_string(), "{raw:#}");
    assert_eq!(raw["spec"], json!({"replicas": 5}));
    let got = s
        .get(Kind::Deployment, Some("default"), "web")
        .unwrap()
        .unwrap();
    assert_eq!(got.value["spec"]["replicas"], 5);
    assert_eq!(
        got.value["spec"]["template"],
        want.value["spec"]["template"]
    );
}

#[test]
fn a_missing_namespace_rejects_the_whole_batch() {
    let mut s = store();
    let heads = s.heads();
    let err = s
        .apply_values(vec![
            deployment("default", "ok", 1),
            deployment("nope", "web", 1),
        ])
        .unwrap_err();
    let errors = field_errors(err);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "metadata.namespace");
    assert_eq!(errors[0].document, Some(1));
    assert_eq!(
        errors[0].message,
        "namespace \"nope\" not found: create it first (kind: Namespace) or apply it in the same file"
    );
    assert_eq!(s.heads(), heads, "nothing of a rejected batch is written");
    assert!(
        s.get(Kind::Deployment, Some("default"), "ok")
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_namespace_may_come_in_the_same_batch() {
    let mut s = store();
    // Even after the objects that live in it.
    let r = s
        .apply_values(vec![deployment("shop", "web", 1), namespace("shop")])
        .unwrap();
    assert_eq!(
        actions(&r),
        vec![(ApplyAction::Created, 1), (ApplyAction::Created, 1)]
    );
    assert_eq!(r[1].namespace, None);
    assert!(
        s.get(Kind::Deployment, Some("shop"), "web")
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_batch_naming_an_object_twice_applies_both_in_order() {
    let mut s = store();
    let r = s
        .apply_values(vec![
            deployment("default", "web", 1),
            deployment("default", "web", 4),
            deployment("default", "web", 4),
        ])
        .unwrap();
    assert_eq!(
        actions(&r),
        vec![
            (ApplyAction::Created, 1),
            (ApplyAction::Configured, 2),
            (ApplyAction::Unchanged, 2)
        ]
    );
    let got = s
        .get(Kind::Deployment, Some("default"), "web")
        .unwrap()
        .unwrap();
    assert_eq!(got.value["spec"]["replicas"], 4);
    assert_eq!(got.value["metadata"]["resourceVersion"], "2");
}

#[test]
fn bad_keys_are_invalid() {
    let mut s = store();
    let (kind, mut v) = deployment("default", "", 1);
    v["metadata"]["name"] = json!("");
    let (_, mut no_ns) = deployment("default", "web", 1);
    no_ns["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    let errors = field_errors(
        s.apply_values(vec![
            (kind, v),
            (Kind::Deployment, no_ns),
            (Kind::ConfigMap, json!("not an object")),
            deployment("default", "a/b", 1),
        ])
        .unwrap_err(),
    );
    let fields: Vec<(Option<usize>, &str)> = errors
        .iter()
        .map(|e| (e.document, e.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (Some(0), "metadata.name"),
            (Some(1), "metadata.namespace"),
            (Some(2), ""),
            (Some(3), "metadata.name")
        ]
    );
    // A namespace on a cluster-scoped kind is dropped, as Kubernetes does.
    let (kind, mut v) = namespace("shop");
    v["metadata"]["namespace"] = json!("default");
    s.apply_values(vec![(kind, v)]).unwrap();
    let ns = s
        .get(Kind::Namespace, Some("ignored"), "shop")
        .unwrap()
        .unwrap();
    assert!(ns.value["metadata"].get("namespace").is_none());
}

#[test]
fn list_is_sorted_by_namespace_then_name() {
    let mut s = store();
    s.apply_values(vec![
        namespace("a"),
        namespace("a-b"),
        deployment("a-b", "x", 1),
        deployment("a", "y", 1),
        deployment("a", "x", 1),
        deployment("default", "z", 1),
    ])
    .unwrap();
    let names = |list: Vec<StoredObject>| -> Vec<String> {
        list.iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o.value["metadata"]["namespace"].as_str().unwrap(),
                    o.value["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(s.list(Kind::Deployment, None).unwrap()),
        ["a/x", "a/y", "a-b/x", "default/z"]
    );
    assert_eq!(
        names(s.list(Kind::Deployment, Some("a")).unwrap()),
        ["a/x", "a/y"]
    );
    assert!(s.list(Kind::Deployment, Some("zzz")).unwrap().is_empty());
    let ns: Vec<Value> = s
        .list(Kind::Namespace, None)
        .unwrap()
        .into_iter()
        .map(|o| o.value["metadata"]["name"].clone())
        .collect();
    assert_eq!(ns, ["a", "a-b", "default"]);
}

// ---------------------------------------------------------------- delete

#[test]
fn delete_returns_the_object_and_absent_is_none() {
    let mut s = store();
    s.apply_values(vec![deployment("default", "web", 2)])
        .unwrap();
    let gone = s
        .delete(Kind::Deployment, Some("default"), "web")
        .unwrap()
        .unwrap();
    assert_eq!(gone.value["spec"]["replicas"], 2);
    assert!(
        s.get(Kind::Deployment, Some("default"), "web")
            .unwrap()
            .is_none()
    );
    let heads = s.heads();
    assert!(
        s.delete(Kind::Deployment, Some("default"), "web")
            .unwrap()
            .is_none()
    );
    assert_eq!(s.heads(), heads, "deleting nothing writes nothing");
    // Re-creating it is a new object: new uid, generation 1.
    let r = s
        .apply_values(vec![deployment("default", "web", 2)])
        .unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Created, 1)]);
}

#[test]
fn deleting_a_namespace_deletes_its_objects() {
    let mut s = store();
    s.apply_values(vec![
        namespace("shop"),
        namespace("shop-2"),
        deployment("shop", "web", 1),
        secret("db", "x"),
        deployment("shop-2", "web", 1),
    ])
    .unwrap();
    let (kind, mut v) = secret("db", "x");
    v["metadata"]["namespace"] = json!("shop");
    s.apply_values(vec![(kind, v)]).unwrap();
    s.delete(Kind::Namespace, None, "shop").unwrap().unwrap();
    assert!(s.list(Kind::Deployment, Some("shop")).unwrap().is_empty());
    assert!(s.list(Kind::Secret, Some("shop")).unwrap().is_empty());
    assert_eq!(s.list(Kind::Deployment, Some("shop-2")).unwrap().len(), 1);
    assert_eq!(s.list(Kind::Secret, Some("default")).unwrap().len(), 1);
    let err = s
        .apply_values(vec![deployment("shop", "again", 1)])
        .unwrap_err();
    assert_eq!(field_errors(err)[0].field, "metadata.namespace");
}

#[test]
fn the_default_namespace_cannot_be_deleted() {
    let mut s = store();
    let errors = field_errors(s.delete(Kind::Namespace, None, "default").unwrap_err());
    assert_eq!(errors[0].field, "metadata.name");
    assert!(s.get(Kind::Namespace, None, "default").unwrap().is_some());
}

// ---------------------------------------------------------------- secrets

#[test]
fn secrets_are_sealed_in_the_document_and_open_on_read() {
    let mut s = store();
    s.apply_values(vec![secret("db", "hunter2-plaintext")])
        .unwrap();
    let got = s.get(Kind::Secret, Some("default"), "db").unwrap().unwrap();
    let (_, want) = secret("db", "hunter2-plaintext");
    assert_eq!(got.value["data"], want["data"]);
    assert_eq!(got.value["type"], "Opaque");
    assert!(got.value.get("sealedData").is_none());
    assert_eq!(
        s.list(Kind::Secret, None).unwrap()[0].value["data"],
        want["data"]
    );

    let saved = s.doc_mut().save_nocompress();
    let b64 = want["data"]["password"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec();
    for needle in [b"hunter2-plaintext".to_vec(), b64] {
        assert!(
            !saved.windows(needle.len()).any(|w| w == needle.as_slice()),
            "secret data in clear in the document"
        );
    }
}

#[test]
fn reapplying_an_identical_secret_is_unchanged() {
    let mut s = store();
    s.apply_values(vec![secret("db", "pw")]).unwrap();
    let heads = s.heads();
    let r = s.apply_values(vec![secret("db", "pw")]).unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Unchanged, 1)]);
    assert_eq!(s.heads(), heads);
    // A label-only edit keeps the ciphertext (nothing re-sealed).
    let (kind, mut v) = secret("db", "pw");
    v["metadata"]["labels"] = json!({"a": "b"});
    s.doc_mut().save();
    let r = s.apply_values(vec![(kind, v)]).unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Configured, 1)]);
    let delta = s.doc_mut().save_incremental();
    assert!(
        delta.len() < 300,
        "label edit re-wrote {} bytes",
        delta.len()
    );
    // New data: re-sealed, generation bumped.
    let r = s.apply_values(vec![secret("db", "pw2")]).unwrap();
    assert_eq!(actions(&r), vec![(ApplyAction::Configured, 2)]);
    let (_, want) = secret("db", "pw2");
    let got = s.get(Kind::Secret, Some("default"), "db").unwrap().unwrap();
    assert_eq!(got.value["data"], want["data"]);
}

#[test]
fn a_wrong_key_cannot_read_secrets() {
    let mut s = store();
    s.apply_values(vec![secret("db", "pw")]).unwrap();
    let saved = s.doc_mut().save();
    let other = Store::from_doc(
        automerge::AutoCommit::load(&saved).unwrap(),
        Sealer::derive(&[1; 32]),
    )
    .unwrap();
    match other.get(Kind::Secret, Some("default"), "db") {
        Err(StateError::SecretData { object, .. }) => assert_eq!(object, "default/db"),
        other => panic!("expected SecretData, got {other:?}"),
    }
    // Other kinds still read.
    assert!(
        other
            .get(Kind::Namespace, None, "default")
            .unwrap()
            .is_some()
    );
}

// ---------------------------------------------------------------- merge laws

/// A second replica of `a`, as a peer would hold after a full sync.
fn replica(a: &mut Store, key: [u8; 32]) -> Store {
    let mut b = Store::from_doc(a.doc_mut().fork(), Sealer::derive(&key)).unwrap();
    b.clock = std::sync::Arc::new(crate::time::FixedClock(NOW));
    b
}

#[test]
fn merging_two_replicas_keeps_both_sides_objects() {
    let mut a = store();
    let mut b = replica(&mut a, KEY);
    a.apply_values(vec![deployment("default", "from-a", 1)])
        .unwrap();
    b.apply_values(vec![deployment("default", "from-b", 2), secret("s", "pw")])
        .unwrap();
    assert_ne!(a.digest(), b.digest());
    let mut a2 = a.doc_mut().fork();
    a.merge(b.doc_mut()).unwrap();
    b.merge(&mut a2).unwrap();
    assert_eq!(a.digest(), b.digest());
    for s in [&a, &b] {
        assert!(
            s.get(Kind::Deployment, Some("default"), "from-a")
                .unwrap()
                .is_some()
        );
        assert!(
            s.get(Kind::Deployment, Some("default"), "from-b")
                .unwrap()
                .is_some()
        );
        assert!(s.get(Kind::Secret, Some("default"), "s").unwrap().is_some());
    }
    // Idempotent: merging again changes nothing.
    let d = a.digest();
    a.merge(b.doc_mut()).unwrap();
    assert_eq!(a.digest(), d);
}

#[test]
fn two_fresh_nodes_share_their_maps() {
    // Two nodes that each created their own document, then meet: thanks to the common genesis
    // neither side's objects are hidden.
    let mut a = store();
    let mut b = store();
    a.apply_values(vec![deployment("default", "from-a", 1)])
        .unwrap();
    b.apply_values(vec![deployment("default", "from-b", 1)])
        .unwrap();
    let mut b_doc = b.doc_mut().fork();
    a.merge(&mut b_doc).unwrap();
    let names: Vec<Value> = a
        .list(Kind::Deployment, None)
        .unwrap()
        .into_iter()
        .map(|o| o.value["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, ["from-a", "from-b"]);
    assert!(a.get(Kind::Namespace, None, "default").unwrap().is_some());
}

#[test]
fn concurrent_edits_of_one_field_pick_the_same_winner_everywhere() {
    let mut a = store();
    a.apply_values(vec![deployment("default", "web", 1)])
        .unwrap();
    let mut b = replica(&mut a, KEY);
    a.apply_values(vec![deployment("default", "web", 5)])
        .unwrap();
    b.apply_values(vec![deployment("default", "web", 7)])
        .unwrap();
    // And concurrent edits of different fields of the same object.
    let (kind, mut v) = deployment("default", "web", 5);
    v["metadata"]["labels"]["edited-on"] = json!("a");
    a.apply_values(vec![(kind, v)]).unwrap();
    let mut a2 = a.doc_mut().fork();
    a.merge(b.doc_mut()).unwrap();
    b.merge(&mut a2).unwrap();
    assert_eq!(a.digest(), b.digest());
    let ga = a
        .get(Kind::Deployment, Some("default"), "web")
        .unwrap()
        .unwrap();
    let gb = b
        .get(Kind::Deployment, Some("default"), "web")
        .unwrap()
        .unwrap();
    assert_eq!(ga, gb);
    let replicas = ga.value["spec"]["replicas"].as_i64().unwrap();
    assert!(replicas == 5 || replicas == 7, "{replicas}");
    assert_eq!(ga.value["metadata"]["labels"]["edited-on"], "a");
}

// ---------------------------------------------------------------- persistence (through the task)

fn config(dir: &std::path::Path) -> StateConfig {
    StateConfig {
        data_dir: dir.to_path_buf(),
        cluster_secret: KEY,
        channel_size: 16,
    }
}

/// Runs the task until the returned closure is called; the data directory's lock is released
/// once it returns.
struct Running {
    handle: StateHandle,
    shutdown: CancellationToken,
    join: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(dir: &std::path::Path) -> Running {
        let (handle, task) = open(&config(dir)).unwrap();
        let shutdown = CancellationToken::new();
        let join = tokio::spawn(task.run(shutdown.clone()));
        Running {
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

#[tokio::test]
async fn persists_and_reopens_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path());
    let h = &node.handle;
    h.apply_values(vec![namespace("shop"), deployment("shop", "web", 3)])
        .await
        .unwrap();
    h.apply_values(vec![secret("db", "pw")]).await.unwrap();
    h.apply_values(vec![deployment("shop", "web", 4)])
        .await
        .unwrap();
    h.delete(Kind::Secret, Some("default"), "db").await.unwrap();
    let digest = h.digest().await.unwrap();
    let deployments = h.list(Kind::Deployment, None).await.unwrap();
    let stats = h.stats().await.unwrap();
    assert_eq!(stats.objects, 3); // default, shop, web
    assert!(stats.log_bytes > 0 && stats.doc_bytes > 0);
    node.stop().await;

    let node = Running::start(dir.path());
    assert_eq!(node.handle.digest().await.unwrap(), digest);
    assert_eq!(
        node.handle.list(Kind::Deployment, None).await.unwrap(),
        deployments
    );
    assert_eq!(node.handle.stats().await.unwrap(), stats);
    node.stop().await;
}

#[tokio::test]
async fn a_small_write_appends_less_than_a_kilobyte() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path());
    let h = &node.handle;
    h.apply_values(vec![deployment("default", "web", 3)])
        .await
        .unwrap();
    let before = h.stats().await.unwrap().log_bytes;
    h.apply_values(vec![deployment("default", "web", 4)])
        .await
        .unwrap();
    let after = h.stats().await.unwrap().log_bytes;
    let scale = after - before;
    // An unchanged re-apply appends nothing at all.
    h.apply_values(vec![deployment("default", "web", 4)])
        .await
        .unwrap();
    assert_eq!(h.stats().await.unwrap().log_bytes, after);
    node.stop().await;
    eprintln!("bytes appended by a scale: {scale}");
    assert!(scale > 0 && scale < 1024, "a scale appended {scale} bytes");
}

#[tokio::test]
async fn saved_files_hold_no_secret_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path());
    node.handle
        .apply_values(vec![secret("db", "hunter2-plaintext")])
        .await
        .unwrap();
    node.stop().await;
    let (_, want) = secret("db", "hunter2-plaintext");
    let b64 = want["data"]["password"].as_str().unwrap().to_string();
    for file in [persist::SNAPSHOT_FILE, LOG_FILE] {
        let bytes = fs::read(dir.path().join(file)).unwrap();
        // The log holds the change uncompressed. The snapshot is deflated, which hides
        // nothing but would also hide a leak: the document itself is checked uncompressed in
        // `secrets_are_sealed_in_the_document_and_open_on_read`.
        for needle in [b"hunter2-plaintext".as_slice(), b64.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{file} holds the secret in clear"
            );
        }
    }
    let node = Running::start(dir.path());
    let got = node
        .handle
        .get(Kind::Secret, Some("default"), "db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.value["data"], want["data"]);
    node.stop().await;
}

#[tokio::test]
async fn reopening_with_another_cluster_secret_cannot_read_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path());
    node.handle
        .apply_values(vec![secret("db", "pw")])
        .await
        .unwrap();
    node.stop().await;
    let mut cfg = config(dir.path());
    cfg.cluster_secret = [9; 32];
    let (handle, task) = open(&cfg).unwrap();
    let shutdown = CancellationToken::new();
    let join = tokio::spawn(task.run(shutdown.clone()));
    assert!(matches!(
        handle.get(Kind::Secret, Some("default"), "db").await,
        Err(StateError::SecretData { .. })
    ));
    shutdown.cancel();
    join.await.unwrap();
}

/// Flips one byte of `file` at `at` (negative: from the end).
fn flip(dir: &std::path::Path, file: &str, at: isize) {
    let path = dir.join(file);
    let mut bytes = fs::read(&path).unwrap();
    let i = if at < 0 {
        bytes.len() - at.unsigned_abs()
    } else {
        at as usize
    };
    bytes[i] ^= 0x40;
    fs::write(&path, bytes).unwrap();
}

fn expect_corrupt(dir: &std::path::Path, file: &str, want: &str) {
    match open(&config(dir)) {
        Err(StateError::Corrupt { path, detail }) => {
            assert_eq!(path, dir.join(file));
            assert!(detail.contains(want), "{detail}");
            assert!(
                detail.contains("move"),
                "the detail says what to do: {detail}"
            );
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("a damaged {file} must be refused"),
    }
}

#[tokio::test]
async fn a_flipped_byte_in_the_snapshot_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    Running::start(dir.path()).stop().await;
    flip(dir.path(), persist::SNAPSHOT_FILE, -5);
    expect_corrupt(dir.path(), persist::SNAPSHOT_FILE, "checksum mismatch");
}

#[tokio::test]
async fn a_flipped_byte_in_a_log_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path());
    node.handle
        .apply_values(vec![deployment("default", "web", 1)])
        .await
        .unwrap();
    node.handle
        .apply_values(vec![deployment("default", "web", 2)])
        .await
        .unwrap();
    node.stop().await;
    flip(dir.path(), LOG_FILE, 20); // inside the first of two complete records
    expect_corrupt(dir.path(), LOG_FILE, "checksum mismatch");
}

#[tokio::test]
async fn a_torn_last_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path());
    node.handle
        .apply_values(vec![deployment("default", "web", 1)])
        .await
        .unwrap();
    let digest = node.handle.digest().await.unwrap();
    let good_len = node.handle.stats().await.unwrap().log_bytes;
    node.handle
        .apply_values(vec![deployment("default", "web", 2)])
        .await
        .unwrap();
    node.stop().await;
    let log = dir.path().join(LOG_FILE);
    let bytes = fs::read(&log).unwrap();
    // Cut the second record short, as a crash in the middle of its write would.
    fs::write(&log, &bytes[..bytes.len() - 7]).unwrap();
    let node = Running::start(dir.path());
    assert_eq!(node.handle.digest().await.unwrap(), digest);
    let got = node
        .handle
        .get(Kind::Deployment, Some("default"), "web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.value["spec"]["replicas"], 1);
    // The torn tail was cut off, so new records follow the good ones.
    assert_eq!(node.handle.stats().await.unwrap().log_bytes, good_len);
    node.handle
        .apply_values(vec![deployment("default", "web", 3)])
        .await
        .unwrap();
    let digest = node.handle.digest().await.unwrap();
    node.stop().await;
    let node = Running::start(dir.path());
    assert_eq!(node.handle.digest().await.unwrap(), digest);
    node.stop().await;
}

#[tokio::test]
async fn an_unreadable_snapshot_is_an_io_error_naming_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    Running::start(dir.path()).stop().await;
    let path = dir.path().join(persist::SNAPSHOT_FILE);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&path).is_ok() {
        // Running as root: permissions do not apply. Use a directory in the file's place,
        // which no user can read as a file.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
    }
    match open(&config(dir.path())) {
        Err(StateError::Io { path: p, .. }) => assert_eq!(p, path),
        Err(e) => panic!("expected Io, got {e}"),
        Ok(_) => panic!("an unreadable snapshot must be refused"),
    }
}

#[tokio::test]
async fn compaction_rewrites_the_snapshot_and_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path());
    let h = &node.handle;
    // Large objects, so that the log passes 1 MiB in a few dozen writes.
    let blob = "x".repeat(60_000);
    let mut compacted = false;
    let mut last = h.stats().await.unwrap();
    for i in 0..40 {
        h.apply_values(vec![(
            Kind::ConfigMap,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("big-{i}"), "namespace": "default"},
                   "data": {"blob": blob}}),
        )])
        .await
        .unwrap();
        let now = h.stats().await.unwrap();
        if now.log_bytes < last.log_bytes {
            compacted = true;
            assert!(now.doc_bytes > last.doc_bytes);
        }
        last = now;
    }
    assert!(compacted, "the log never compacted: {last:?}");
    assert!(last.log_bytes <= (1 << 20).max(4 * last.doc_bytes));
    let digest = h.digest().await.unwrap();
    let all = h.list(Kind::ConfigMap, None).await.unwrap();
    assert_eq!(all.len(), 40);
    node.stop().await;
    let node = Running::start(dir.path());
    assert_eq!(node.handle.digest().await.unwrap(), digest);
    assert_eq!(node.handle.list(Kind::ConfigMap, None).await.unwrap(), all);
    node.stop().await;
}

#[tokio::test]
async fn group_commit_answers_every_queued_command() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, task) = open(&config(dir.path())).unwrap();
    // Queue commands before the task runs, so that they form one group.
    let mut calls = Vec::new();
    for i in 0..10 {
        let h = handle.clone();
        calls.push(tokio::spawn(async move {
            h.apply_values(vec![deployment("default", &format!("d{i}"), 1)])
                .await
        }));
    }
    tokio::task::yield_now().await;
    let shutdown = CancellationToken::new();
    let join = tokio::spawn(task.run(shutdown.clone()));
    for c in calls {
        assert_eq!(
            actions(&c.await.unwrap().unwrap()),
            vec![(ApplyAction::Created, 1)]
        );
    }
    assert_eq!(handle.list(Kind::Deployment, None).await.unwrap().len(), 10);
    shutdown.cancel();
    join.await.unwrap();
    assert!(matches!(handle.digest().await, Err(StateError::Stopped)));
}

fn slot(pod: &str, index: u32, node: &str) -> shoal_protocol::cluster::Slot {
    shoal_protocol::cluster::Slot {
        namespace: "default".into(),
        pod: pod.into(),
        owner_kind: "ReplicaSet".into(),
        owner_name: "web-abc".into(),
        index,
        revision: "abc".into(),
        node: node.into(),
        unschedulable: None,
    }
}

#[tokio::test]
async fn slots_are_written_read_removed_and_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let node = Running::start(dir.path());
    let h = &node.handle;
    let mut changes = h.subscribe();
    let before = *changes.borrow_and_update();

    let a = slot("web-abc-0", 0, "n1");
    let b = slot("web-abc-1", 1, "n2");
    h.write_slots(vec![b.clone(), a.clone()], vec![])
        .await
        .unwrap();
    assert_eq!(h.slots().await.unwrap(), vec![a.clone(), b.clone()]);
    assert!(changes.has_changed().unwrap(), "a write wakes subscribers");
    assert!(*changes.borrow_and_update() > before);

    // Writing the same slots again changes nothing: no new heads, nobody woken.
    let digest = h.digest().await.unwrap();
    h.write_slots(vec![a.clone(), b.clone()], vec![])
        .await
        .unwrap();
    assert_eq!(h.digest().await.unwrap(), digest);
    assert!(!changes.has_changed().unwrap());

    // Moving a slot rewrites only its node; removing one by key.
    let moved = slot("web-abc-0", 0, "n3");
    h.write_slots(vec![moved.clone()], vec![b.key(), "default/absent".into()])
        .await
        .unwrap();
    assert_eq!(h.slots().await.unwrap(), vec![moved.clone()]);
    node.stop().await;

    let node = Running::start(dir.path());
    assert_eq!(node.handle.slots().await.unwrap(), vec![moved]);
    node.stop().await;
}
