//! JSON ⇄ automerge: writes a `serde_json::Value` into an automerge object as a tree of maps,
//! lists and scalars, and reads such a tree back.
//!
//! Objects are stored as trees, not as JSON strings, for two reasons: a small edit (a scale)
//! then writes a few bytes to the history instead of the whole object, and two nodes that edit
//! different fields of one object concurrently both keep their edit after a merge.
//!
//! The writer diffs against what is already there, so that re-writing an unchanged value adds
//! no operation at all (and so no change, no history, no disk write):
//! - maps: changed keys are updated, keys absent from the new value are deleted, nested
//!   values recurse;
//! - lists: recurse element by element when the length is unchanged, else the whole list is
//!   replaced (automerge has no cheap way to know which elements moved, and for manifests a
//!   list whose length changed is usually rewritten by the user anyway);
//! - scalars are written only when they differ. Numbers keep their JSON representation (`i64`
//!   as `Int`, larger unsigned as `Uint`, others as `F64`); strings are scalar `Str`, never
//!   `Text` (Text is a sequence CRDT for collaborative editing: heavier and never needed here).
//!
//! Reading yields maps with keys in automerge's order (sorted), so a read is deterministic on
//! every node. Values that this module never writes (Text, Counter, Timestamp, Bytes, values of
//! future automerge versions) are read leniently, so that a document merged from a newer peer
//! still reads.
//!
//! Used only by the state store ([`super::store`]).

use automerge::transaction::Transactable;
use automerge::{AutoCommit, AutomergeError, ObjId, ObjType, Prop, ReadDoc, ScalarValue};
use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// Makes the map `obj` hold exactly `new`, writing only what differs.
pub(crate) fn write_map(
    doc: &mut AutoCommit,
    obj: &ObjId,
    new: &Map<String, Value>,
) -> Result<(), AutomergeError> {
    let stale: Vec<String> = doc.keys(obj).filter(|k| !new.contains_key(k)).collect();
    for key in stale {
        doc.delete(obj, key.as_str())?;
    }
    for (key, value) in new {
        write_prop(doc, obj, Prop::Map(key.clone()), value)?;
    }
    Ok(())
}

/// Makes the list `obj` (of the same length as `new`) hold exactly `new`.
fn write_list(doc: &mut AutoCommit, obj: &ObjId, new: &[Value]) -> Result<(), AutomergeError> {
    for (i, value) in new.iter().enumerate() {
        write_prop(doc, obj, Prop::Seq(i), value)?;
    }
    Ok(())
}

/// Makes `obj[prop]` (an existing map key or list index, or a missing map key) hold `new`.
fn write_prop(
    doc: &mut AutoCommit,
    obj: &ObjId,
    prop: Prop,
    new: &Value,
) -> Result<(), AutomergeError> {
    let current = doc.get(obj, prop.clone())?;
    match (new, current) {
        (
            Value::Object(map),
            Some((automerge::Value::Object(ObjType::Map | ObjType::Table), id)),
        ) => write_map(doc, &id, map),
        (Value::Array(items), Some((automerge::Value::Object(ObjType::List), id)))
            if doc.length(&id) == items.len() =>
        {
            write_list(doc, &id, items)
        }
        (Value::Object(map), _) => {
            let id = doc.put_object(obj, prop, ObjType::Map)?;
            fill_map(doc, &id, map)
        }
        (Value::Array(items), _) => {
            let id = doc.put_object(obj, prop, ObjType::List)?;
            fill_list(doc, &id, items)
        }
        (scalar, Some((automerge::Value::Scalar(old), _))) if scalar_eq(&old, scalar) => Ok(()),
        (scalar, _) => doc.put(obj, prop, to_scalar(scalar)),
    }
}

/// Fills a freshly created (empty) map.
fn fill_map(
    doc: &mut AutoCommit,
    obj: &ObjId,
    map: &Map<String, Value>,
) -> Result<(), AutomergeError> {
    for (key, value) in map {
        match value {
            Value::Object(m) => {
                let id = doc.put_object(obj, key.as_str(), ObjType::Map)?;
                fill_map(doc, &id, m)?;
            }
            Value::Array(items) => {
                let id = doc.put_object(obj, key.as_str(), ObjType::List)?;
                fill_list(doc, &id, items)?;
            }
            scalar => doc.put(obj, key.as_str(), to_scalar(scalar))?,
        }
    }
    Ok(())
}

/// Fills a freshly created (empty) list.
fn fill_list(doc: &mut AutoCommit, obj: &ObjId, items: &[Value]) -> Result<(), AutomergeError> {
    for (i, value) in items.iter().enumerate() {
        match value {
            Value::Object(m) => {
                let id = doc.insert_object(obj, i, ObjType::Map)?;
                fill_map(doc, &id, m)?;
            }
            Value::Array(inner) => {
                let id = doc.insert_object(obj, i, ObjType::List)?;
                fill_list(doc, &id, inner)?;
            }
            scalar => doc.insert(obj, i, to_scalar(scalar))?,
        }
    }
    Ok(())
}

/// The automerge scalar for a JSON scalar (never called with an object or array).
fn to_scalar(value: &Value) -> ScalarValue {
    match value {
        Value::Null | Value::Object(_) | Value::Array(_) => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Number(n) => number_to_scalar(n),
    }
}

fn number_to_scalar(n: &Number) -> ScalarValue {
    if let Some(i) = n.as_i64() {
        ScalarValue::Int(i)
    } else if let Some(u) = n.as_u64() {
        ScalarValue::Uint(u)
    } else {
        // serde_json (without arbitrary_precision) holds every other number as a finite f64.
        ScalarValue::F64(n.as_f64().unwrap_or(0.0))
    }
}

/// Whether the stored scalar is exactly what writing `new` would store.
fn scalar_eq(old: &ScalarValue, new: &Value) -> bool {
    match (old, new) {
        (ScalarValue::Null, Value::Null) => true,
        (ScalarValue::Boolean(a), Value::Bool(b)) => a == b,
        (ScalarValue::Str(a), Value::String(b)) => a.as_str() == b.as_str(),
        (old, Value::Number(n)) => *old == number_to_scalar(n),
        _ => false,
    }
}

/// Reads the object `obj` (a map, list or text) back as JSON.
pub(crate) fn read_obj(doc: &impl ReadDoc, obj: &ObjId) -> Result<Value, AutomergeError> {
    match doc.object_type(obj)? {
        ObjType::Map | ObjType::Table => {
            let mut out = Map::new();
            for key in doc.keys(obj) {
                if let Some(v) = read_prop(doc, obj, Prop::Map(key.clone()))? {
                    out.insert(key, v);
                }
            }
            Ok(Value::Object(out))
        }
        ObjType::List => {
            let mut out = Vec::with_capacity(doc.length(obj));
            for i in 0..doc.length(obj) {
                out.push(read_prop(doc, obj, Prop::Seq(i))?.unwrap_or(Value::Null));
            }
            Ok(Value::Array(out))
        }
        ObjType::Text => Ok(Value::String(doc.text(obj)?)),
    }
}

/// Reads `obj[prop]`, or None when it is absent.
pub(crate) fn read_prop(
    doc: &impl ReadDoc,
    obj: &ObjId,
    prop: Prop,
) -> Result<Option<Value>, AutomergeError> {
    match doc.get(obj, prop)? {
        None => Ok(None),
        Some((automerge::Value::Object(_), id)) => read_obj(doc, &id).map(Some),
        Some((automerge::Value::Scalar(s), _)) => Ok(Some(scalar_to_json(&s))),
    }
}

fn scalar_to_json(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Null | ScalarValue::Unknown { .. } => Value::Null,
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Value::from(*i),
        ScalarValue::Uint(u) => Value::from(*u),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Counter(c) => Value::from(i64::from(c)),
        ScalarValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use automerge::ROOT;
    use serde_json::json;

    /// Writes `v` under ROOT["obj"] (creating the map on first use) and commits.
    fn put(doc: &mut AutoCommit, v: &Value) {
        let id = match doc.get(ROOT, "obj").unwrap() {
            Some((automerge::Value::Object(ObjType::Map), id)) => id,
            _ => doc.put_object(ROOT, "obj", ObjType::Map).unwrap(),
        };
        write_map(doc, &id, v.as_object().unwrap()).unwrap();
        doc.commit();
    }

    fn get(doc: &AutoCommit) -> Value {
        read_prop(doc, &ROOT, Prop::Map("obj".into()))
            .unwrap()
            .unwrap()
    }

    fn sample() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "replicas": 3,
                "big": u64::MAX,
                "ratio": 0.25,
                "negative": -7,
                "paused": false,
                "nothing": null,
                "empty": {},
                "none": [],
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                     "args": ["-g", "daemon off;"]},
                    {"name": "side", "image": "busybox", "nested": [[1, 2], [3]]}
                ]}}
            }
        })
    }

    #[test]
    fn round_trips_nested_values() {
        let cases = [
            sample(),
            json!({}),
            json!({"a": {"b": {"c": {"d": [1, "two", 3.5, true, null, {"e": []}]}}}}),
            json!({"unicode": "héllo ☃", "s": "", "zero": 0, "minus": i64::MIN}),
        ];
        for v in cases {
            let mut doc = AutoCommit::new();
            put(&mut doc, &v);
            assert_eq!(get(&doc), v);
            // Survives a save and a load too.
            let mut loaded = AutoCommit::load(&doc.save()).unwrap();
            assert_eq!(read_prop(&loaded, &ROOT, "obj".into()).unwrap().unwrap(), v);
            let _ = loaded.get_heads();
        }
    }

    #[test]
    fn rewriting_the_same_value_changes_nothing() {
        let mut doc = AutoCommit::new();
        put(&mut doc, &sample());
        let heads = doc.get_heads();
        put(&mut doc, &sample());
        assert_eq!(
            doc.get_heads(),
            heads,
            "a no-op write must not create a change"
        );
    }

    #[test]
    fn a_one_field_change_is_a_small_change() {
        let mut doc = AutoCommit::new();
        put(&mut doc, &sample());
        let _ = doc.save();
        let mut scaled = sample();
        scaled["spec"]["replicas"] = json!(5);
        put(&mut doc, &scaled);
        let delta = doc.save_incremental();
        assert!(!delta.is_empty());
        assert!(
            delta.len() < 200,
            "one scalar edit wrote {} bytes",
            delta.len()
        );
        assert_eq!(get(&doc), scaled);
    }

    #[test]
    fn removed_keys_are_deleted_and_lists_follow_their_length() {
        let mut doc = AutoCommit::new();
        put(&mut doc, &sample());
        let mut v = sample();
        let spec = v["spec"].as_object_mut().unwrap();
        spec.remove("ratio");
        spec.insert("replicas".into(), json!("three")); // a scalar changing type
        v["metadata"]["labels"] = json!("not a map any more");
        v["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .pop();
        v["spec"]["none"] = json!([{"x": 1}]);
        put(&mut doc, &v);
        assert_eq!(get(&doc), v);
        // And back again, from scalars to containers.
        put(&mut doc, &sample());
        assert_eq!(get(&doc), sample());
    }

    #[test]
    fn concurrent_edits_of_different_fields_both_survive() {
        let mut a = AutoCommit::new();
        put(&mut a, &sample());
        let mut b = a.fork();
        let mut va = sample();
        va["spec"]["replicas"] = json!(9);
        put(&mut a, &va);
        let mut vb = sample();
        vb["metadata"]["labels"]["tier"] = json!("back");
        put(&mut b, &vb);
        a.merge(&mut b).unwrap();
        let merged = get(&a);
        assert_eq!(merged["spec"]["replicas"], json!(9));
        assert_eq!(merged["metadata"]["labels"]["tier"], json!("back"));
    }
}
