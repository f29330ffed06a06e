//! JSON ⇄ automerge: writes a `serde_json::Value` into an automerge object as a tree of maps,
//! lists and scalars, and reads such a tree back; and, on top of that, the stored form of an
//! object, whose parts that must stay consistent are kept as whole-value *merge units*.
//!
//! # Trees
//!
//! Values are stored as trees, not as JSON strings, so that a small edit (a scale) writes a
//! few bytes to the history instead of the whole value. The writer diffs against what is
//! already there, so that re-writing an unchanged value adds no operation at all (and so no
//! change, no history, no disk write):
//! - maps: changed keys are updated, keys absent from the new value are deleted, nested
//!   values recurse;
//! - lists: recurse element by element when the length is unchanged, else the whole list is
//!   replaced (automerge has no cheap way to know which elements moved, and for manifests a
//!   list whose length changed is usually rewritten by the user anyway);
//! - scalars are written only when they differ. Numbers keep their JSON representation (`i64`
//!   as `Int`, larger unsigned as `Uint`, others as `F64`); strings are scalar `Str`, never
//!   `Text` (Text is a sequence CRDT for collaborative editing: heavier and never needed here).
//!
//! A tree merges field by field and element by element: two nodes that edit different fields
//! both keep their edit. That is right for records whose fields are independent (slots), and
//! wrong for a manifest, whose fields are checked together (a selector against the template's
//! labels, `maxSurge` against `maxUnavailable`, a volume against the mount that names it): a
//! field-by-field merge of two valid manifests can build an object nobody wrote, and that
//! fails validation.
//!
//! # Objects: merge units (issue 15)
//!
//! [`write_object`] and [`read_object`] store an object so that a merge of concurrent writes
//! always gives an object that one of the writers could have applied:
//!
//! ```text
//! "default/web"  (Map)
//! ├─ apiVersion, kind        (Str; fixed by the key's kind)
//! ├─ metadata    (Map)
//! │   ├─ name, namespace, uid, generation, resourceVersion, creationTimestamp  (scalars)
//! │   ├─ labels  (Map: one Str per label)
//! │   └─ $annotations, $ownerReferences, ...  (Str: one unit each, see below)
//! ├─ spec        (Map, only when the object has `spec.replicas`)
//! │   └─ replicas            (its own field)
//! └─ $body       (Str: one unit, see below)
//! ```
//!
//! A unit is the canonical JSON text (keys sorted at every level) of a whole value, held in
//! one scalar: concurrent writes of it conflict on that one key, and automerge keeps one of
//! them whole, the same one on every node (the greater operation id). The units:
//! - `$body`: everything but `apiVersion`, `kind`, `metadata` and `spec.replicas`: the whole
//!   spec (selector, template, strategy, volumeClaimTemplates, a Service's ports and selector,
//!   a StatefulSet's serviceName...), a ConfigMap's `data` with its `binaryData` (their keys
//!   must not overlap and their sizes add up), a Secret's `type` with its `sealedData`
//!   (a type requires keys of the data);
//! - each metadata value that is a map or a list, but `labels`: `annotations` (their total
//!   size is bounded), `ownerReferences` (an element's uid belongs with its name).
//!
//! Independent parts stay fields of their own, because their every combination validates:
//! - `spec.replicas` (any count ≥ 0 goes with any spec): a scale on one node and a new image
//!   on another both survive;
//! - each label (labels are checked one by one; the selectors that must match labels are
//!   those of the template, inside `$body`);
//! - the scalar metadata (`generation`, `resourceVersion`: counters, one value kept).
//!
//! The writer diffs as for trees: an unchanged unit's text is equal, so it is not written.
//! Reading accepts both forms: an object without `$body` was written before units existed (a
//! plain tree, read as it is); with `$body`, the unit gives every field but `apiVersion`,
//! `kind`, `metadata` and `spec.replicas`, and tree fields that a concurrent older writer left
//! beside it are ignored. The first write of an old-form object turns it into the new form
//! (its unchanged `spec.replicas` stays where it is, so a concurrent scale still survives).
//!
//! Objects that were merged field by field before units existed keep what they merged into.
//!
//! Reading yields maps with keys sorted, so a read is deterministic on every node. Values that
//! this module never writes (Text, Counter, Timestamp, Bytes, values of future automerge
//! versions) are read leniently, so that a document merged from a newer peer still reads.
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

/// An error of the object codec.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TreeError {
    #[error(transparent)]
    Automerge(#[from] AutomergeError),
    /// A unit whose text is not the JSON of the value it stands for: a bug of a writer, since
    /// only [`write_object`] writes units.
    #[error("the merge unit {key} of a stored object is unreadable: {detail}")]
    Unit { key: String, detail: String },
    /// A unit that cannot be encoded (serde_json cannot fail on a `Value`; kept for safety).
    #[error("cannot encode a merge unit: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The key of an object's body unit (a `$` never starts a field name of a manifest).
pub(crate) const BODY: &str = "$body";
/// The prefix of a metadata unit's key, before the field's name.
const UNIT_PREFIX: &str = "$";
/// The metadata map that stays a tree, one field per key.
const LABELS: &str = "labels";
/// The object fields that stay outside the body unit.
const HEAD: [&str; 3] = ["apiVersion", "kind", "metadata"];
const SPEC: &str = "spec";
const REPLICAS: &str = "replicas";

/// Makes the map `obj` hold the stored form of the object `value` (see the module docs),
/// writing only what differs.
pub(crate) fn write_object(
    doc: &mut AutoCommit,
    obj: &ObjId,
    value: &Map<String, Value>,
) -> Result<(), TreeError> {
    write_map(doc, obj, &encode_object(value)?)?;
    Ok(())
}

/// Reads an object that [`write_object`] wrote, or one written as a plain tree before units
/// existed.
pub(crate) fn read_object(doc: &impl ReadDoc, obj: &ObjId) -> Result<Value, TreeError> {
    decode_object(read_obj(doc, obj)?)
}

/// The stored form of an object: its tree with the units folded into text.
fn encode_object(value: &Map<String, Value>) -> Result<Map<String, Value>, TreeError> {
    let mut out = Map::new();
    let mut body = Map::new();
    for (key, v) in value {
        match (key.as_str(), v) {
            ("metadata", Value::Object(meta)) => {
                let mut stored = Map::new();
                for (field, mv) in meta {
                    let unit = field != LABELS && matches!(mv, Value::Object(_) | Value::Array(_));
                    if unit {
                        stored.insert(format!("{UNIT_PREFIX}{field}"), unit_text(mv)?.into());
                    } else {
                        stored.insert(field.clone(), mv.clone());
                    }
                }
                out.insert(key.clone(), Value::Object(stored));
            }
            (k, _) if HEAD.contains(&k) => {
                out.insert(key.clone(), v.clone());
            }
            _ => {
                body.insert(key.clone(), v.clone());
            }
        }
    }
    if let Some(replicas) = body
        .get_mut(SPEC)
        .and_then(Value::as_object_mut)
        .and_then(|spec| spec.remove(REPLICAS))
    {
        let mut spec = Map::new();
        spec.insert(REPLICAS.into(), replicas);
        out.insert(SPEC.into(), Value::Object(spec));
    }
    out.insert(BODY.into(), unit_text(&Value::Object(body))?.into());
    Ok(out)
}

/// The object that a stored form stands for, keys sorted at every level.
fn decode_object(stored: Value) -> Result<Value, TreeError> {
    let Value::Object(mut stored) = stored else {
        return Ok(stored);
    };
    if let Some(Value::Object(meta)) = stored.get_mut("metadata") {
        *meta = decode_metadata(std::mem::take(meta))?;
    }
    let Some(body) = stored.remove(BODY) else {
        // Written before units existed: a plain tree.
        return Ok(sorted(Value::Object(stored)));
    };
    let Value::Object(mut body) = parse_unit(BODY, &body)? else {
        return Err(TreeError::Unit {
            key: BODY.into(),
            detail: "not a JSON object".into(),
        });
    };
    let replicas = stored
        .get(SPEC)
        .and_then(|spec| spec.get(REPLICAS))
        .cloned();
    if let (Some(replicas), Some(Value::Object(spec))) = (replicas, body.get_mut(SPEC)) {
        spec.insert(REPLICAS.into(), replicas);
    }
    // Tree fields outside the head are the leftovers of an older writer: the unit rules.
    let mut out: Map<String, Value> = stored
        .into_iter()
        .filter(|(k, _)| HEAD.contains(&k.as_str()))
        .collect();
    for (k, v) in body {
        if !HEAD.contains(&k.as_str()) {
            out.insert(k, v);
        }
    }
    Ok(sorted(Value::Object(out)))
}

/// Metadata with its units decoded; a unit wins over a tree of the same field (a leftover).
fn decode_metadata(meta: Map<String, Value>) -> Result<Map<String, Value>, TreeError> {
    let mut out = Map::new();
    let mut units = Vec::new();
    for (key, v) in meta {
        match key.strip_prefix(UNIT_PREFIX) {
            Some(field) => units.push((field.to_string(), parse_unit(&key, &v)?)),
            None => {
                out.insert(key, v);
            }
        }
    }
    out.extend(units);
    Ok(out)
}

/// The canonical text of a unit: JSON with the keys of every map sorted, so that equal values
/// give equal text on every node whatever order their keys came in.
fn unit_text(v: &Value) -> Result<String, TreeError> {
    Ok(serde_json::to_string(&sorted(v.clone()))?)
}

fn parse_unit(key: &str, v: &Value) -> Result<Value, TreeError> {
    let unreadable = |detail: String| TreeError::Unit {
        key: key.to_string(),
        detail,
    };
    let text = v
        .as_str()
        .ok_or_else(|| unreadable(format!("expected JSON text, got {v}")))?;
    serde_json::from_str(text).map_err(|e| unreadable(e.to_string()))
}

/// `v` with the keys of every map in sorted order (serde_json keeps insertion order here).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        scalar => scalar,
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

    // ------------------------------------------------------------ objects and merge units

    /// Writes the object `v` under ROOT["obj"] (creating the map on first use) and commits.
    fn put_object(doc: &mut AutoCommit, v: &Value) {
        let id = match doc.get(ROOT, "obj").unwrap() {
            Some((automerge::Value::Object(ObjType::Map), id)) => id,
            _ => doc.put_object(ROOT, "obj", ObjType::Map).unwrap(),
        };
        write_object(doc, &id, v.as_object().unwrap()).unwrap();
        doc.commit();
    }

    fn get_object(doc: &AutoCommit) -> Value {
        let (_, id) = doc.get(ROOT, "obj").unwrap().unwrap();
        read_object(doc, &id).unwrap()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "default", "generation": 1,
                "labels": {"app": "web"},
                "annotations": {"note": "x"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u"}],
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
                }
            }
        })
    }

    #[test]
    fn objects_round_trip_with_sorted_keys() {
        let cases = [
            deployment(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                   "data": {"b": "2", "a": "1"}, "binaryData": {"z": "AA=="}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                   "type": "Opaque", "sealedData": "v1:abc"}),
            json!({"kind": "Pod", "spec": {"containers": []}}),
            json!({}),
        ];
        for v in cases {
            let mut doc = AutoCommit::new();
            put_object(&mut doc, &v);
            let got = get_object(&doc);
            assert_eq!(got, v);
            assert_eq!(got, sorted(got.clone()), "keys are sorted on read");
        }
    }

    #[test]
    fn objects_are_stored_as_fields_and_units() {
        let mut doc = AutoCommit::new();
        put_object(&mut doc, &deployment());
        let raw = read_prop(&doc, &ROOT, "obj".into()).unwrap().unwrap();
        assert_eq!(raw["spec"], json!({"replicas": 3}));
        assert_eq!(raw["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(raw["metadata"]["$annotations"], json!(r#"{"note":"x"}"#));
        assert!(raw["metadata"]["$ownerReferences"].is_string());
        let body: Value = serde_json::from_str(raw[BODY].as_str().unwrap()).unwrap();
        assert!(body["spec"].get("replicas").is_none());
        assert_eq!(body["spec"]["selector"], deployment()["spec"]["selector"]);
    }

    #[test]
    fn rewriting_the_same_object_changes_nothing_whatever_its_key_order() {
        let mut doc = AutoCommit::new();
        put_object(&mut doc, &deployment());
        let heads = doc.get_heads();
        put_object(&mut doc, &deployment());
        // The same value with its keys in reverse order: the same units' text.
        let reversed = {
            fn rev(v: Value) -> Value {
                match v {
                    Value::Object(m) => {
                        let mut e: Vec<_> = m.into_iter().collect();
                        e.reverse();
                        Value::Object(e.into_iter().map(|(k, v)| (k, rev(v))).collect())
                    }
                    other => other,
                }
            }
            rev(deployment())
        };
        put_object(&mut doc, &reversed);
        assert_eq!(
            doc.get_heads(),
            heads,
            "a no-op write must not create a change"
        );
    }

    #[test]
    fn a_scale_of_an_object_is_a_small_change() {
        let mut doc = AutoCommit::new();
        put_object(&mut doc, &deployment());
        let _ = doc.save();
        let mut scaled = deployment();
        scaled["spec"]["replicas"] = json!(5);
        put_object(&mut doc, &scaled);
        let delta = doc.save_incremental();
        assert!(!delta.is_empty());
        assert!(delta.len() < 200, "a scale wrote {} bytes", delta.len());
        assert_eq!(get_object(&doc), scaled);
        // Without replicas (defaulted), and back.
        let mut v = deployment();
        v["spec"].as_object_mut().unwrap().remove("replicas");
        put_object(&mut doc, &v);
        assert_eq!(get_object(&doc), v);
        put_object(&mut doc, &scaled);
        assert_eq!(get_object(&doc), scaled);
    }

    /// Two forks of `base` (written with `write`), edited concurrently, merged both ways:
    /// returns what both read, after checking that it is the same.
    fn merge_concurrent(
        base: &Value,
        write: fn(&mut AutoCommit, &Value),
        on_a: &Value,
        on_b: &Value,
    ) -> Value {
        let mut a = AutoCommit::new();
        write(&mut a, base);
        let mut b = a.fork();
        put_object(&mut a, on_a);
        put_object(&mut b, on_b);
        let mut a2 = a.fork();
        a.merge(&mut b).unwrap();
        b.merge(&mut a2).unwrap();
        let (ga, gb) = (get_object(&a), get_object(&b));
        assert_eq!(ga, gb, "both sides read the same object");
        ga
    }

    #[test]
    fn concurrent_body_edits_keep_one_side_whole() {
        let mut on_a = deployment();
        on_a["spec"]["selector"]["matchLabels"]["app"] = json!("v2");
        on_a["spec"]["template"]["metadata"]["labels"]["app"] = json!("v2");
        let mut on_b = deployment();
        on_b["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        for base_form in [put_object as fn(&mut AutoCommit, &Value), put] {
            let merged = merge_concurrent(&deployment(), base_form, &on_a, &on_b);
            assert!(merged == on_a || merged == on_b, "{merged:#}");
        }
    }

    #[test]
    fn a_concurrent_scale_and_body_edit_both_survive() {
        let mut on_a = deployment();
        on_a["spec"]["replicas"] = json!(7);
        let mut on_b = deployment();
        on_b["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        on_b["metadata"]["labels"]["tier"] = json!("front");
        let merged = merge_concurrent(&deployment(), put_object, &on_a, &on_b);
        let mut want = on_b.clone();
        want["spec"]["replicas"] = json!(7);
        assert_eq!(merged, want);

        // From an object still in the old form, both sides convert it at once, so both write
        // the body unit and one wins (B's image may be lost, once); the untouched
        // `spec.replicas` is not rewritten by the conversion, so the scale survives.
        let merged = merge_concurrent(&deployment(), put, &on_a, &on_b);
        assert_eq!(merged["spec"]["replicas"], json!(7));
        assert_eq!(merged["metadata"]["labels"]["tier"], json!("front"));
        let body_of = |v: &Value| {
            let mut v = v.clone();
            v["spec"]["replicas"] = json!(7);
            v["metadata"]["labels"]["tier"] = json!("front");
            v
        };
        assert!(
            merged == body_of(&on_a) || merged == body_of(&on_b),
            "{merged:#}"
        );
    }

    #[test]
    fn concurrent_annotations_keep_one_side_whole_and_labels_merge_per_key() {
        let mut on_a = deployment();
        on_a["metadata"]["annotations"] = json!({"a": "1"});
        on_a["metadata"]["labels"]["from-a"] = json!("1");
        let mut on_b = deployment();
        on_b["metadata"]["annotations"] = json!({"b": "2"});
        on_b["metadata"]["labels"]["from-b"] = json!("2");
        let merged = merge_concurrent(&deployment(), put_object, &on_a, &on_b);
        let annotations = &merged["metadata"]["annotations"];
        assert!(
            *annotations == json!({"a": "1"}) || *annotations == json!({"b": "2"}),
            "{annotations}"
        );
        assert_eq!(
            merged["metadata"]["labels"],
            json!({"app": "web", "from-a": "1", "from-b": "2"})
        );
    }

    #[test]
    fn old_plain_trees_read_as_they_are_and_leftovers_beside_a_unit_are_ignored() {
        let mut doc = AutoCommit::new();
        put(&mut doc, &deployment());
        assert_eq!(get_object(&doc), deployment());
        // A field an older writer put beside the unit (concurrently with a conversion) does
        // not mix into the object.
        put_object(&mut doc, &deployment());
        let (_, id) = doc.get(ROOT, "obj").unwrap().unwrap();
        let (_, spec) = doc.get(&id, "spec").unwrap().unwrap();
        doc.put(&spec, "minReadySeconds", 9).unwrap();
        let (_, meta) = doc.get(&id, "metadata").unwrap().unwrap();
        doc.put_object(&meta, "annotations", ObjType::Map).unwrap();
        doc.put(&id, "status", "stray").unwrap();
        doc.commit();
        assert_eq!(get_object(&doc), deployment());
    }

    #[test]
    fn an_unreadable_unit_is_an_error_not_a_panic() {
        let mut doc = AutoCommit::new();
        put_object(&mut doc, &deployment());
        let (_, id) = doc.get(ROOT, "obj").unwrap().unwrap();
        for bad in [json!("{not json"), json!("[1]"), json!(5)] {
            write_prop(&mut doc, &id, Prop::Map(BODY.into()), &bad).unwrap();
            match read_object(&doc, &id) {
                Err(TreeError::Unit { key, .. }) => assert_eq!(key, BODY),
                other => panic!("expected a unit error, got {other:?}"),
            }
        }
    }
}
