//! Tests of export and restore on [`Store`]: what a backup holds, that a restore is all or
//! nothing, keeps uids and sealed data, and refuses Secrets sealed with another key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use shoal_protocol::Kind;
use shoal_protocol::api::ApplyAction;

use super::crypto::Sealer;
use super::store::Store;
use super::*;

const KEY: [u8; 32] = [42; 32];
const OTHER_KEY: [u8; 32] = [7; 32];

fn store(key: &[u8; 32]) -> Store {
    Store::create(Sealer::derive(key)).unwrap()
}

fn objects() -> Vec<(Kind, Value)> {
    vec![
        (
            Kind::Namespace,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        ),
        (
            Kind::ConfigMap,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "conf", "namespace": "shop"},
                   "data": {"a": "1"}}),
        ),
        (
            Kind::Secret,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "db", "namespace": "shop"},
                   "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
        ),
    ]
}

fn export(s: &Store) -> Vec<(Kind, Value)> {
    s.export().unwrap()
}

fn secret_data(s: &Store) -> Value {
    s.get(Kind::Secret, Some("shop"), "db")
        .unwrap()
        .unwrap()
        .value["data"]
        .clone()
}

#[test]
fn export_holds_sealed_secrets_and_no_nodes() {
    let mut s = store(&KEY);
    s.apply_values(objects()).unwrap();
    s.apply_values(vec![(
        Kind::Node,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )])
    .unwrap();
    let items = export(&s);
    let kinds: Vec<Kind> = items.iter().map(|(k, _)| *k).collect();
    // Namespaces first (default and shop), then the rest in restore order; no Node.
    assert_eq!(
        kinds,
        [
            Kind::Namespace,
            Kind::Namespace,
            Kind::ConfigMap,
            Kind::Secret
        ]
    );
    let secret = &items[3].1;
    assert!(secret.get("data").is_none(), "{secret}");
    let sealed = secret["sealedData"].as_str().unwrap();
    assert!(sealed.starts_with("v1:"));
    assert!(!secret.to_string().contains("aHVudGVyMg"), "{secret}");
    assert!(secret.pointer("/metadata/uid").is_some());
}

#[test]
fn restore_into_an_empty_store_brings_back_everything() {
    let mut a = store(&KEY);
    a.apply_values(objects()).unwrap();
    let items = export(&a);
    // Another store with the same cluster secret (the first node of a rebuilt cluster).
    let mut b = store(&KEY);
    let results = b.restore(items.clone()).unwrap();
    let actions: Vec<ApplyAction> = results.iter().map(|r| r.action).collect();
    // `default` exists in every store already, with its own uid: it takes the backup's.
    assert_eq!(
        actions,
        [
            ApplyAction::Configured,
            ApplyAction::Created,
            ApplyAction::Created,
            ApplyAction::Created
        ]
    );
    // Same objects, uids included, and the Secret's data opens.
    let back = export(&b);
    assert_eq!(back.len(), items.len());
    for ((_, want), (_, got)) in items.iter().zip(&back).skip(1) {
        assert_eq!(want, got);
    }
    assert_eq!(
        back[0].1["metadata"]["uid"], items[0].1["metadata"]["uid"],
        "default keeps the backup's uid"
    );
    assert_eq!(secret_data(&b), json!({"password": "aHVudGVyMg=="}));
    // Restoring again changes nothing.
    let again = b.restore(items).unwrap();
    assert!(again.iter().all(|r| r.action == ApplyAction::Unchanged));
}

#[test]
fn restore_over_changed_objects_moves_counters_forward() {
    let mut s = store(&KEY);
    s.apply_values(objects()).unwrap();
    let items = export(&s);
    let mut changed = objects();
    changed[1].1["data"]["a"] = json!("2");
    changed[2].1["data"]["password"] = json!("b3RoZXI=");
    s.apply_values(changed).unwrap();
    let rv = |s: &Store, kind, name| -> u64 {
        s.get(kind, Some("shop"), name).unwrap().unwrap().value["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = rv(&s, Kind::ConfigMap, "conf");
    let results = s.restore(items).unwrap();
    assert_eq!(results[2].action, ApplyAction::Configured);
    assert_eq!(results[3].action, ApplyAction::Configured);
    let cm = s
        .get(Kind::ConfigMap, Some("shop"), "conf")
        .unwrap()
        .unwrap();
    assert_eq!(cm.value["data"]["a"], "1");
    assert!(rv(&s, Kind::ConfigMap, "conf") > before);
    assert_eq!(secret_data(&s), json!({"password": "aHVudGVyMg=="}));
}

#[test]
fn restore_with_another_key_is_refused_and_writes_nothing() {
    let mut a = store(&KEY);
    a.apply_values(objects()).unwrap();
    let items = export(&a);
    let mut b = store(&OTHER_KEY);
    let heads = b.heads();
    let err = b.restore(items).unwrap_err();
    let StateError::Invalid(errors) = err else {
        panic!("expected Invalid, got {err}");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].document, Some(3));
    assert_eq!(errors[0].field, "sealedData");
    assert!(
        errors[0].message.contains("another cluster secret"),
        "{errors:?}"
    );
    assert_eq!(b.heads(), heads, "nothing may be written");
    assert!(b.get(Kind::Namespace, None, "shop").unwrap().is_none());
}

#[test]
fn restore_refuses_bad_items_and_writes_nothing() {
    let mut a = store(&KEY);
    a.apply_values(objects()).unwrap();
    let good = export(&a);
    let mut b = store(&KEY);
    let heads = b.heads();
    type Spoil = Box<dyn Fn(&mut Vec<(Kind, Value)>)>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "sealedData",
            Box::new(|items| {
                // A damaged ciphertext.
                let s = items[3].1["sealedData"].as_str().unwrap().to_string();
                let mut bytes = s.into_bytes();
                let at = bytes.len() - 4;
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                items[3].1["sealedData"] = json!(String::from_utf8(bytes).unwrap());
            }),
        ),
        (
            "data",
            Box::new(|items| {
                items[3].1["data"] = json!({"password": "cGxhaW4="});
            }),
        ),
        (
            "metadata.name",
            Box::new(|items| {
                let dup = items[2].clone();
                items.push(dup);
            }),
        ),
        (
            "metadata.namespace",
            Box::new(|items| {
                items.remove(1);
            }),
        ),
        (
            "kind",
            Box::new(|items| {
                items.push((
                    Kind::Node,
                    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n9"}}),
                ));
            }),
        ),
    ];
    for (field, spoil) in cases {
        let mut items = good.clone();
        spoil(&mut items);
        let err = b.restore(items).unwrap_err();
        let StateError::Invalid(errors) = err else {
            panic!("{field}: expected Invalid, got {err}");
        };
        assert!(
            errors.iter().any(|e| e.field == field),
            "{field}: {errors:?}"
        );
        assert_eq!(b.heads(), heads, "{field}: nothing may be written");
    }
}
