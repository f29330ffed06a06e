//! Manifest parsing: YAML (several documents separated by `---`) or JSON (one object, a
//! stream of objects, or a `List`), into typed, defaulted and validated [`Resource`]s.
//!
//! Each document goes through the same steps: it must be a mapping; `apiVersion` and `kind`
//! name a kind users may apply; `status` and the metadata only the server sets are dropped;
//! fields set to `null` count as absent; a Secret's `stringData` is merged into `data`; the
//! rest is read into the kind's type, which refuses every field shoal does not support;
//! defaults are filled; then every rule is checked. All errors of all documents are returned
//! together, each naming its document (0-based, counting the documents of the file as they
//! appear, empty ones included) and its field path.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{FieldError, ManifestErrors};
use crate::kind::Kind;
use crate::meta::{CONTROLLER_SET_METADATA, SERVER_SET_METADATA};
use crate::resource::Resource;
use crate::serde_util::encode_base64;
use crate::validation::key_path;

/// Parses a multi-document YAML or JSON manifest into validated resources, in the order of
/// the input (the items of a `List` in place of the list). Documents that are empty or only
/// comments are skipped; an input with no object gives an empty list. Every error of every
/// document is returned together, and nothing is returned unless there is none.
pub fn parse(text: &str) -> Result<Vec<Resource>, ManifestErrors> {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in split_documents(text).into_iter().enumerate() {
        let value = match doc {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(e.in_document(index));
                continue;
            }
        };
        match parse_document(value) {
            Ok(rs) => resources.extend(rs),
            Err(es) => errors.extend(es.into_iter().map(|e| e.in_document(index))),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(ManifestErrors(errors))
    }
}

/// Parses one object already read as JSON, with the same steps as [`parse`] (for a single
/// object sent to the API). A `List` is refused here.
pub fn parse_value(value: Value) -> Result<Resource, ManifestErrors> {
    if let Value::Object(map) = &value
        && is_list(map)
    {
        return Err(ManifestErrors(vec![FieldError::new(
            "kind",
            "expected a single object, got a List; apply lists as a manifest",
        )]));
    }
    parse_object(value).map_err(ManifestErrors)
}

/// Reads a stored object (already stripped and valid): typed, with defaults, without
/// validation. `apiVersion` and `kind` may be present and must then match `kind`.
pub(crate) fn typed_from_value(kind: Kind, value: Value) -> Result<Resource, ManifestErrors> {
    let Value::Object(mut map) = value else {
        return Err(ManifestErrors(vec![FieldError::new(
            "",
            format!(
                "expected a mapping (a {kind} object), got {}",
                describe(&value)
            ),
        )]));
    };
    let mut errors = Vec::new();
    for (field, want) in [("apiVersion", kind.api_version()), ("kind", kind.name())] {
        match map.remove(field) {
            None => {}
            Some(Value::String(s)) if s == want => {}
            Some(other) => errors.push(FieldError::new(
                field,
                format!("must be {want} for a {kind}, got {}", describe(&other)),
            )),
        }
    }
    if kind == Kind::Secret {
        merge_string_data(&mut map, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ManifestErrors(errors));
    }
    typed(kind, Value::Object(map)).map_err(|e| ManifestErrors(vec![e]))
}

/// Every validation error of a resource, with field paths.
pub(crate) fn validate(resource: &Resource) -> Vec<FieldError> {
    crate::validation::validate(resource)
}

// ---------------------------------------------------------------------------------------------
// Splitting the input into documents.

/// The documents of the input, each as a JSON value or the error that stopped it. `Null`
/// stands for an empty document.
/// How many documents `text` holds, counted as [`parse`] counts them for the `document` index
/// of its errors (empty documents included), so that a client that joins several files into
/// one request can map an error back to its file.
pub fn document_count(text: &str) -> usize {
    split_documents(text).len()
}

fn split_documents(text: &str) -> Vec<Result<Value, FieldError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with(['{', '[']) {
        match json_stream(text) {
            Ok(values) => return values.into_iter().map(Ok).collect(),
            Err(json_err) => {
                // A YAML flow mapping also starts with `{`: keep YAML's reading when it
                // succeeds, and JSON's error otherwise.
                let yaml = yaml_documents(text);
                if yaml.iter().all(Result::is_ok) {
                    return yaml;
                }
                return vec![Err(json_err)];
            }
        }
    }
    yaml_documents(text)
}

fn json_stream(text: &str) -> Result<Vec<Value>, FieldError> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FieldError::new("", format!("invalid JSON: {e}")))
}

/// A document marker line: `---` or `...` at the start of a line, alone or followed by a
/// space (YAML forbids either inside a document, even in a block scalar, so a line-based
/// split is exact).
fn marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    if rest.is_empty() || rest.starts_with([' ', '\t', '\r']) {
        Some(rest)
    } else {
        None
    }
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

struct Chunk {
    first_line: usize,
    text: String,
    /// Opened by `---`: a document even when empty.
    explicit: bool,
    has_content: bool,
}

impl Chunk {
    fn new(first_line: usize, explicit: bool) -> Chunk {
        Chunk {
            first_line,
            text: String::new(),
            explicit,
            has_content: false,
        }
    }

    fn push(&mut self, line: &str) {
        self.has_content |= is_content(line);
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn is_document(&self) -> bool {
        self.explicit || self.has_content
    }
}

fn yaml_documents(text: &str) -> Vec<Result<Value, FieldError>> {
    let mut chunks = Vec::new();
    let mut current = Chunk::new(0, false);
    for (n, line) in text.lines().enumerate() {
        if let Some(rest) = marker(line, "---") {
            let done = std::mem::replace(&mut current, Chunk::new(n, true));
            if done.is_document() {
                chunks.push(done);
            }
            // Content may follow the marker on its line (`--- {a: 1}`); blanks keep columns.
            current.push(&format!("   {rest}"));
        } else if marker(line, "...").is_some() {
            let done = std::mem::replace(&mut current, Chunk::new(n + 1, false));
            if done.is_document() {
                chunks.push(done);
            }
        } else if line.starts_with('%') && !current.is_document() {
            // A directive (`%YAML 1.2`) belongs to the next document's prefix.
        } else {
            current.push(line);
        }
    }
    if current.is_document() {
        chunks.push(current);
    }
    chunks.into_iter().map(yaml_document).collect()
}

fn yaml_document(chunk: Chunk) -> Result<Value, FieldError> {
    if !chunk.has_content {
        return Ok(Value::Null);
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    // Kubernetes reads YAML 1.1, where `defaultMode: 0644` is octal; users write modes so.
    options.legacy_octal_numbers = true;
    serde_saphyr::from_str_with_options::<Option<Value>>(&chunk.text, options)
        .map(|v| v.unwrap_or(Value::Null))
        .map_err(|e| {
            let msg = shift_lines(&e.to_string(), chunk.first_line);
            FieldError::new("", format!("invalid YAML: {msg}"))
        })
}

/// Adds `offset` to every `line N` of a parser message, so that lines count from the start
/// of the file rather than of the document.
fn shift_lines(msg: &str, offset: usize) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(at) = rest.find("line ") {
        let (before, after) = rest.split_at(at + "line ".len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&n.saturating_add(offset).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// One document.

fn is_list(map: &Map<String, Value>) -> bool {
    match map.get("kind").and_then(Value::as_str) {
        Some("List") => true,
        Some(k) => k
            .strip_suffix("List")
            .is_some_and(|base| Kind::from_kind_name(base).is_some()),
        None => false,
    }
}

fn parse_document(value: Value) -> Result<Vec<Resource>, Vec<FieldError>> {
    let map = match value {
        Value::Object(map) if is_list(&map) => map,
        other => return parse_object(other).map(|r| vec![r]),
    };
    let items = match map.get("items") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(vec![FieldError::new(
                "items",
                format!("expected a list of objects, got {}", describe(other)),
            )]);
        }
    };
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        if let Value::Object(m) = &item
            && is_list(m)
        {
            errors.push(FieldError::new(
                format!("items[{i}].kind"),
                "a List may not hold another List",
            ));
            continue;
        }
        match parse_object(item) {
            Ok(r) => resources.push(r),
            Err(es) => errors.extend(es.into_iter().map(|e| prefix(e, &format!("items[{i}]")))),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

fn prefix(mut e: FieldError, p: &str) -> FieldError {
    e.field = if e.field.is_empty() {
        p.to_string()
    } else if e.field.starts_with('[') {
        format!("{p}{}", e.field)
    } else {
        format!("{p}.{}", e.field)
    };
    e
}

/// Every kind users may apply, as `v1 Namespace, apps/v1 Deployment, ...`.
fn supported_kinds() -> String {
    Kind::ALL
        .iter()
        .filter(|k| k.appliable())
        .map(|k| format!("{} {}", k.api_version(), k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_object(value: Value) -> Result<Resource, Vec<FieldError>> {
    let Value::Object(mut map) = value else {
        return Err(vec![FieldError::new(
            "",
            format!(
                "a document must be a mapping with apiVersion, kind, metadata and the kind's \
                 fields, got {}",
                describe(&value)
            ),
        )]);
    };
    let mut errors = Vec::new();
    let mut header = |field: &str, example: &str| -> Option<String> {
        match map.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            None | Some(Value::Null) => {
                errors.push(FieldError::new(
                    field,
                    format!("required, such as {example}"),
                ));
                None
            }
            Some(other) => {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "expected a string such as {example}, got {}",
                        describe(other)
                    ),
                ));
                None
            }
        }
    };
    let api_version = header("apiVersion", "v1 or apps/v1");
    let kind_name = header("kind", "Deployment");
    let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
        return Err(errors);
    };
    let kind = match Kind::from_manifest(&api_version, &kind_name) {
        Some(k) if k.appliable() => k,
        Some(k) => {
            return Err(vec![FieldError::new(
                "kind",
                format!(
                    "a {k} cannot be applied: nodes register themselves when shoald starts on \
                     them"
                ),
            )]);
        }
        None => {
            return Err(vec![FieldError::new(
                "",
                format!(
                    "apiVersion {api_version} kind {kind_name} is not supported; supported: {}",
                    supported_kinds()
                ),
            )]);
        }
    };
    for field in ["apiVersion", "kind", "status"] {
        map.remove(field);
    }
    remove_nulls(&mut map);
    strip_server_set(&mut map);
    if kind == Kind::Secret {
        merge_string_data(&mut map, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    let resource = typed(kind, Value::Object(map)).map_err(|e| vec![e])?;
    let errors = validate(&resource);
    if errors.is_empty() {
        Ok(resource)
    } else {
        Err(errors)
    }
}

/// Drops fields set to `null` (`resources:` left empty in YAML), which Kubernetes treats as
/// absent. Nulls inside lists stay, to be reported.
fn remove_nulls(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    for v in map.values_mut() {
        remove_nulls_in(v);
    }
}

fn remove_nulls_in(v: &mut Value) {
    match v {
        Value::Object(m) => remove_nulls(m),
        Value::Array(items) => items.iter_mut().for_each(remove_nulls_in),
        _ => {}
    }
}

fn strip_metadata(v: Option<&mut Value>) {
    if let Some(Value::Object(meta)) = v {
        for f in SERVER_SET_METADATA.iter().chain(CONTROLLER_SET_METADATA) {
            meta.remove(*f);
        }
    }
}

/// Removes what the server sets, at the top and in embedded templates (`kubectl get -o yaml`
/// writes `creationTimestamp: null` into pod templates, and `status` into claim templates).
fn strip_server_set(map: &mut Map<String, Value>) {
    strip_metadata(map.get_mut("metadata"));
    let Some(Value::Object(spec)) = map.get_mut("spec") else {
        return;
    };
    if let Some(Value::Object(template)) = spec.get_mut("template") {
        strip_metadata(template.get_mut("metadata"));
    }
    if let Some(Value::Array(claims)) = spec.get_mut("volumeClaimTemplates") {
        for claim in claims {
            if let Value::Object(c) = claim {
                strip_metadata(c.get_mut("metadata"));
                c.remove("status");
                if c.get("apiVersion").and_then(Value::as_str) == Some("v1") {
                    c.remove("apiVersion");
                }
                if c.get("kind").and_then(Value::as_str) == Some("PersistentVolumeClaim") {
                    c.remove("kind");
                }
            }
        }
    }
}

/// Moves a Secret's `stringData` into `data`, base64-encoded; its keys win, as in Kubernetes.
fn merge_string_data(map: &mut Map<String, Value>, errors: &mut Vec<FieldError>) {
    let string_data = match map.remove("stringData") {
        None | Some(Value::Null) => return,
        Some(Value::Object(m)) => m,
        Some(other) => {
            errors.push(FieldError::new(
                "stringData",
                format!(
                    "expected a mapping of keys to strings, got {}",
                    describe(&other)
                ),
            ));
            return;
        }
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if data.is_null() {
        *data = Value::Object(Map::new());
    }
    let Value::Object(data) = data else {
        // `data` of the wrong type is reported when the Secret is read.
        return;
    };
    for (k, v) in string_data {
        match v {
            Value::String(s) => {
                data.insert(k, Value::String(encode_base64(s.as_bytes())));
            }
            other => errors.push(FieldError::new(
                key_path("stringData", &k),
                format!("expected a string, got {}", describe(&other)),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Typed reading and serde's errors.

fn typed(kind: Kind, value: Value) -> Result<Resource, FieldError> {
    let mut r = match kind {
        Kind::Namespace => Resource::Namespace(de(value)?),
        Kind::ConfigMap => Resource::ConfigMap(de(value)?),
        Kind::Secret => Resource::Secret(de(value)?),
        Kind::PersistentVolumeClaim => Resource::PersistentVolumeClaim(de(value)?),
        Kind::Service => Resource::Service(de(value)?),
        Kind::Pod => Resource::Pod(de(value)?),
        Kind::Deployment => Resource::Deployment(de(value)?),
        Kind::ReplicaSet => Resource::ReplicaSet(de(value)?),
        Kind::StatefulSet => Resource::StatefulSet(de(value)?),
        Kind::ControllerRevision => Resource::ControllerRevision(de(value)?),
        Kind::Endpoints => {
            return Err(FieldError::new(
                "kind",
                "Endpoints are computed from each Service's selector and the ready pods: apply \
                 the Service",
            ));
        }
        Kind::Event => {
            return Err(FieldError::new(
                "kind",
                "Events are recorded by the nodes and cannot be applied: read them with \
                 `shoal get events`",
            ));
        }
        Kind::Node => {
            return Err(FieldError::new(
                "kind",
                "a Node is not a resource users write: nodes register themselves",
            ));
        }
    };
    r.default_fields();
    Ok(r)
}

fn de<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = render_path(e.path());
        rewrite_error(path, &e.inner().to_string())
    })
}

/// The path in Kubernetes' notation: `spec.containers[0].ports[1].containerPort`.
fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out = key_path(&out, key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

fn join(path: &str, field: &str) -> String {
    key_path(path, field)
}

fn ends_with_segment(path: &str, name: &str) -> bool {
    path == key_path("", name)
        || path.ends_with(&format!(".{name}"))
        || path.ends_with(&format!("[{name}]"))
}

/// The names between backticks in a serde message: `a`, `b` → [a, b].
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// serde's words for a type, in the words of someone who writes YAML.
fn plain_expected(e: &str) -> String {
    let e = e.trim();
    match e {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "isize" | "usize" => {
            "an integer".into()
        }
        "f32" | "f64" => "a number".into(),
        "a map" | "map" => "a mapping".into(),
        "a sequence" | "sequence" => "a list".into(),
        "string or map" | "variant identifier" => "a string".into(),
        _ if e.starts_with("struct ") => "a mapping".into(),
        _ => e.to_string(),
    }
}

/// serde's words for a value it got.
fn plain_unexpected(g: &str) -> String {
    let g = g.trim();
    let ticked = || {
        backticked(g)
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    if let Some(s) = g.strip_prefix("string ") {
        format!("a string ({s})")
    } else if g.starts_with("integer ") {
        format!("an integer ({})", ticked())
    } else if g.starts_with("floating point ") {
        format!("a number ({})", ticked())
    } else if g.starts_with("boolean ") {
        format!("a boolean ({})", ticked())
    } else {
        match g {
            "map" => "a mapping".into(),
            "sequence" => "a list".into(),
            "unit value" | "null" => "null".into(),
            _ => g.to_string(),
        }
    }
}

/// Turns serde's message into one that names the field and says what is allowed.
fn rewrite_error(path: String, msg: &str) -> FieldError {
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let (field, expected) = rest.split_once(", ").unwrap_or((rest, ""));
        let name = backticked(field).first().copied().unwrap_or(field);
        let supported = backticked(expected);
        let message = if supported.is_empty() {
            "field is not supported by shoal".to_string()
        } else {
            format!(
                "field is not supported by shoal; supported here: {}",
                supported.join(", ")
            )
        };
        // serde_path_to_error already ends the path with the unknown key; older versions did
        // not, so add it only when missing.
        let path = if ends_with_segment(&path, name) {
            path
        } else {
            join(&path, name)
        };
        return FieldError::new(path, message);
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        let name = backticked(rest).first().copied().unwrap_or(rest);
        return FieldError::new(join(&path, name), "required");
    }
    if let Some(rest) = msg.strip_prefix("duplicate field ") {
        let name = backticked(rest).first().copied().unwrap_or(rest);
        return FieldError::new(join(&path, name), "appears twice");
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let (given, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
        let given = backticked(given).first().copied().unwrap_or(given);
        let allowed = backticked(expected);
        return FieldError::new(
            path,
            format!("must be one of {}, got \"{given}\"", allowed.join(", ")),
        );
    }
    for (prefix, is_type) in [("invalid type: ", true), ("invalid value: ", false)] {
        if let Some(rest) = msg.strip_prefix(prefix)
            && let Some((got, expected_raw)) = rest.rsplit_once(", expected ")
        {
            let expected = plain_expected(expected_raw);
            let got_plain = plain_unexpected(got);
            let range = match expected_raw.trim() {
                "i32" => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
                "i64" => Some((i64::MIN, i64::MAX)),
                _ => None,
            };
            let message = if let (false, Some((lo, hi)), true) =
                (is_type, range, got.starts_with("integer "))
            {
                format!(
                    "expected an integer from {lo} to {hi}, got {}",
                    backticked(got).first().unwrap_or(&"")
                )
            } else {
                format!("expected {expected}, got {got_plain}")
            };
            return FieldError::new(path, message);
        }
    }
    FieldError::new(path, msg.to_string())
}

/// A value as the user sees it, for messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::intstr::IntOrString;
    use crate::kinds::*;

    fn errors(text: &str) -> Vec<FieldError> {
        match parse(text) {
            Ok(r) => panic!("expected errors, parsed {} objects", r.len()),
            Err(e) => e.0,
        }
    }

    fn one(text: &str) -> Resource {
        let mut all = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    const EVERY_KIND: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data:
  app.yaml: "port: 80"
binaryData:
  logo.png: iVBORw0K
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: shop}
data:
  user: YWRtaW4=
stringData:
  password: s3cret
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - port: 80
---
apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: shop}
spec:
  containers:
  - name: sh
    image: busybox
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports: [{containerPort: 80}]
        readinessProbe:
          httpGet: {port: 80}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: postgres:16
        volumeMounts: [{name: pgdata, mountPath: /var/lib/postgresql/data}]
  volumeClaimTemplates:
  - metadata: {name: pgdata}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 5Gi}}
"#;

    #[test]
    fn every_kind_parses_with_defaults() {
        let all = parse(EVERY_KIND).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<Kind> = all.iter().map(Resource::kind).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Namespace,
                Kind::ConfigMap,
                Kind::Secret,
                Kind::PersistentVolumeClaim,
                Kind::Service,
                Kind::Pod,
                Kind::Deployment,
                Kind::StatefulSet
            ]
        );
        let Resource::ConfigMap(cm) = &all[1] else {
            panic!()
        };
        assert_eq!(cm.data["app.yaml"], "port: 80");
        assert_eq!(
            cm.binary_data["logo.png"],
            b"\x89PNG\r\n\x1a\n".to_vec()[..6].to_vec()
        );

        let Resource::Secret(s) = &all[2] else {
            panic!()
        };
        assert_eq!(s.type_, "Opaque");
        assert_eq!(s.data["user"], b"admin");
        assert_eq!(s.data["password"], b"s3cret");

        let Resource::PersistentVolumeClaim(pvc) = &all[3] else {
            panic!()
        };
        assert_eq!(pvc.spec.volume_mode, VolumeMode::Filesystem);
        assert_eq!(pvc.spec.resources.requests["storage"].bytes(), 1 << 30);

        let Resource::Service(svc) = &all[4] else {
            panic!()
        };
        assert_eq!(svc.spec.type_, ServiceType::ClusterIP);
        assert_eq!(svc.spec.ports[0].target_port, IntOrString::Int(80));
        assert_eq!(svc.spec.ports[0].protocol, Protocol::Tcp);
        assert_eq!(svc.spec.session_affinity, ServiceAffinity::None);
        assert_eq!(svc.spec.external_traffic_policy, None);

        let Resource::Pod(pod) = &all[5] else {
            panic!()
        };
        assert_eq!(pod.spec.restart_policy, RestartPolicy::Always);
        assert_eq!(pod.spec.termination_grace_period_seconds, 30);
        assert_eq!(
            pod.spec.containers[0].image_pull_policy,
            Some(PullPolicy::Always)
        );

        let Resource::Deployment(d) = &all[6] else {
            panic!()
        };
        assert_eq!(d.spec.replicas, 1);
        assert_eq!(d.spec.revision_history_limit, 10);
        assert_eq!(d.spec.progress_deadline_seconds, 600);
        assert_eq!(d.spec.min_ready_seconds, 0);
        assert!(!d.spec.paused);
        assert_eq!(d.spec.strategy.type_, DeploymentStrategyType::RollingUpdate);
        let ru = d.spec.strategy.rolling_update.as_ref().unwrap();
        assert_eq!(ru.max_surge, IntOrString::from("25%"));
        assert_eq!(ru.max_unavailable, IntOrString::from("25%"));
        let c = &d.spec.template.spec.containers[0];
        assert_eq!(c.image_pull_policy, Some(PullPolicy::IfNotPresent));
        assert_eq!(c.ports[0].protocol, Protocol::Tcp);
        let probe = c.readiness_probe.as_ref().unwrap();
        assert_eq!(
            (
                probe.initial_delay_seconds,
                probe.period_seconds,
                probe.timeout_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (0, 10, 1, 1, 3)
        );
        let get = probe.http_get.as_ref().unwrap();
        assert_eq!((get.path.as_str(), get.scheme), ("/", Scheme::Http));

        let Resource::StatefulSet(sts) = &all[7] else {
            panic!()
        };
        assert_eq!(sts.spec.replicas, 1);
        assert_eq!(
            sts.spec.pod_management_policy,
            PodManagementPolicy::OrderedReady
        );
        assert_eq!(
            sts.spec.update_strategy.type_,
            StatefulSetUpdateStrategyType::RollingUpdate
        );
        assert_eq!(
            sts.spec.update_strategy.rolling_update,
            Some(RollingUpdateStatefulSetStrategy { partition: 0 })
        );
        assert_eq!(sts.spec.volume_claim_templates[0].metadata.name, "pgdata");
    }

    const RICH: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: prod
  labels: {app: api, app.kubernetes.io/part-of: shop}
  annotations: {example.com/owner: team-a}
spec:
  replicas: 3
  minReadySeconds: 5
  paused: true
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: api}
    matchExpressions:
    - {key: track, operator: NotIn, values: [canary]}
  template:
    metadata:
      labels: {app: api, track: stable}
      annotations: {prometheus.io/scrape: "true"}
    spec:
      restartPolicy: Always
      terminationGracePeriodSeconds: 10
      hostname: api
      subdomain: apis
      nodeSelector: {disktype: ssd}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: zone, operator: In, values: [a, b]}
              - {key: cores, operator: Gt, values: ["4"]}
      tolerations:
      - {key: dedicated, operator: Equal, value: api, effect: NoSchedule}
      - {operator: Exists, effect: NoExecute, tolerationSeconds: 60}
      initContainers:
      - name: migrate
        image: registry.local:5000/api:2.1
        command: [/bin/migrate]
        args: [--up]
      containers:
      - name: api
        image: registry.local:5000/api:latest
        imagePullPolicy: IfNotPresent
        workingDir: /srv
        stdin: true
        tty: true
        command: [/bin/api]
        args: [--port, "8080"]
        ports:
        - {containerPort: 8080, name: http}
        - {containerPort: 9090, name: metrics, protocol: TCP, hostPort: 19090, hostIP: 0.0.0.0}
        - {containerPort: 5353, protocol: UDP}
        env:
        - {name: MODE, value: prod}
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
        - name: LOG_LEVEL
          valueFrom: {configMapKeyRef: {name: cfg, key: log.level, optional: true}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        envFrom:
        - configMapRef: {name: cfg}
          prefix: CFG_
        - secretRef: {name: extra, optional: true}
        resources:
          requests: {cpu: 250m, memory: 64Mi}
          limits: {cpu: 1, memory: 128Mi, ephemeral-storage: 1Gi}
        volumeMounts:
        - {name: config, mountPath: /etc/api, readOnly: true}
        - {name: tls, mountPath: /etc/tls}
        - {name: scratch, mountPath: /tmp}
        - {name: host, mountPath: /host/logs, subPath: api}
        - {name: data, mountPath: /data}
        - {name: share, mountPath: /share}
        livenessProbe:
          httpGet:
            path: /healthz
            port: http
            scheme: HTTPS
            httpHeaders: [{name: X-Probe, value: "1"}]
          initialDelaySeconds: 3
          periodSeconds: 5
        readinessProbe:
          tcpSocket: {port: 8080}
          successThreshold: 2
        startupProbe:
          exec: {command: [cat, /tmp/ready]}
          failureThreshold: 30
      volumes:
      - name: config
        configMap:
          name: cfg
          items: [{key: api.yaml, path: api.yaml, mode: 0400}]
          defaultMode: 0440
      - name: tls
        secret: {secretName: api-tls, optional: true}
      - name: scratch
        emptyDir: {medium: Memory, sizeLimit: 64Mi}
      - name: host
        hostPath: {path: /var/log, type: Directory}
      - name: data
        persistentVolumeClaim: {claimName: api-data, readOnly: false}
      - name: share
        nfs: {server: nas.local, path: /export/share, readOnly: true}
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  type: NodePort
  selector: {app: api}
  sessionAffinity: ClientIP
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  podManagementPolicy: Parallel
  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 1}}
  revisionHistoryLimit: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: postgres:16
        volumeMounts: [{name: pgdata, mountPath: /var/lib/postgresql/data}]
  volumeClaimTemplates:
  - metadata: {name: pgdata, labels: {app: db}}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: local
      resources: {requests: {storage: 5Gi}, limits: {storage: 10Gi}}
---
apiVersion: v1
kind: Secret
metadata: {name: tls}
type: kubernetes.io/tls
immutable: true
stringData: {tls.crt: CERT, tls.key: KEY}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
immutable: true
data: {log.level: debug}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim}
spec:
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  storageClassName: ""
  volumeMode: Filesystem
  selector: {matchLabels: {tier: fast}}
  resources: {requests: {storage: 500Mi}}
"#;

    #[test]
    fn round_trip_is_identity() {
        let all = parse(RICH).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 7);
        for r in &all {
            let v = r.to_value();
            let again = Resource::from_value(r.kind(), v.clone()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&again, r, "from_value of {}", r.name());
            assert_eq!(again.to_value(), v);
            // Re-applying what the API shows gives the same object.
            let reapplied = parse_value(v.clone()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&reapplied, r);
            // And so does its YAML-free JSON text.
            let text = serde_json::to_string_pretty(&v).unwrap();
            assert_eq!(&one(&text), r);
        }
    }

    #[test]
    fn rich_manifest_keeps_every_field() {
        let all = parse(RICH).unwrap();
        let Resource::Deployment(d) = &all[0] else {
            panic!()
        };
        let spec = &d.spec.template.spec;
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy, Some(PullPolicy::IfNotPresent));
        assert_eq!(
            spec.init_containers[0].image_pull_policy,
            Some(PullPolicy::IfNotPresent)
        );
        assert_eq!(c.resources.limits["cpu"].millis(), 1000);
        // A limit without a request sets the request, as in Kubernetes.
        assert_eq!(c.resources.requests["ephemeral-storage"].as_str(), "1Gi");
        assert_eq!(c.ports[1].host_ip.as_deref(), Some("0.0.0.0"));
        assert_eq!(c.ports[2].protocol, Protocol::Udp);
        assert_eq!(spec.volumes.len(), 6);
        assert!(spec.volumes.iter().all(|v| v.source().is_some()));
        let Some(VolumeSource::ConfigMap(cm)) = spec.volumes[0].source() else {
            panic!()
        };
        assert_eq!(cm.default_mode, 0o440);
        assert_eq!(cm.items[0].mode, Some(0o400));
        let Some(VolumeSource::Secret(s)) = spec.volumes[1].source() else {
            panic!()
        };
        assert_eq!(s.default_mode, 0o644);
        let Some(VolumeSource::EmptyDir(e)) = spec.volumes[2].source() else {
            panic!()
        };
        assert_eq!(e.medium, Some(StorageMedium::Memory));
        let node = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let na = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .unwrap();
        assert!(na.matches(&node(&[("zone", "a"), ("cores", "8")])));
        assert!(!na.matches(&node(&[("zone", "a"), ("cores", "2")])));
        assert!(!na.matches(&node(&[("zone", "c"), ("cores", "8")])));
        assert!(spec.tolerations[0].tolerates("dedicated", "api", TaintEffect::NoSchedule));
        assert!(!spec.tolerations[0].tolerates("dedicated", "web", TaintEffect::NoSchedule));
        assert!(spec.tolerations[1].tolerates("any", "", TaintEffect::NoExecute));
        assert!(!spec.tolerations[1].tolerates("any", "", TaintEffect::NoSchedule));

        let Resource::Service(svc) = &all[1] else {
            panic!()
        };
        assert_eq!(svc.spec.ports[0].target_port, IntOrString::from("http"));
        assert_eq!(svc.spec.ports[1].target_port, IntOrString::Int(5353));
        let Resource::Service(headless) = &all[2] else {
            panic!()
        };
        assert!(headless.spec.is_headless());
        assert!(headless.spec.ports.is_empty());

        let Resource::Secret(tls) = &all[4] else {
            panic!()
        };
        assert_eq!(tls.data["tls.crt"], b"CERT");
        assert!(tls.immutable);
    }

    #[test]
    fn secret_string_data_is_merged_and_written_as_base64() {
        let r = one(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: YQ==, b: Yg==}\n\
             stringData: {b: clear, c: \"ünï\"}\n",
        );
        let Resource::Secret(s) = &r else { panic!() };
        assert_eq!(s.data["a"], b"a");
        assert_eq!(s.data["b"], b"clear", "stringData wins over data");
        assert_eq!(s.data["c"], "ünï".as_bytes());
        let v = r.to_value();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "type": "Opaque",
                "data": {"a": "YQ==", "b": "Y2xlYXI=", "c": "w7xuw68="}
            })
        );
        assert!(v.get("stringData").is_none());
        // Line breaks in long base64 values are tolerated, as Go's decoder does.
        let r =
            one("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: \"aGVs\\nbG8=\"}\n");
        let Resource::Secret(s) = &r else { panic!() };
        assert_eq!(s.data["k"], b"hello");
        let e = errors("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {n: 5}\n");
        assert_eq!(e[0].field, "stringData.n");
        assert_eq!(e[0].message, "expected a string, got a number (5)");
    }

    #[test]
    fn to_value_is_clean_and_ordered() {
        let r = one("kind: ConfigMap\napiVersion: v1\ndata: {}\nmetadata: {name: c, labels: {}}\n");
        let v = r.to_value();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#
        );
    }

    #[test]
    fn unknown_field_names_its_full_path() {
        let e = errors(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  selector: \
             {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      \
             containers:\n      - name: c\n        image: x\n        securityContext: \
             {runAsUser: 1}\n",
        );
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].document, Some(0));
        assert_eq!(
            e[0].field,
            "spec.template.spec.containers[0].securityContext"
        );
        assert!(
            e[0].message.starts_with("field is not supported by shoal"),
            "{}",
            e[0].message
        );
        assert!(
            e[0].message.contains("volumeMounts"),
            "lists what is supported"
        );
        // Preferred node affinity is refused too, not dropped.
        let e = errors(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  affinity:\n    \
             nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution: []\n  \
             containers: [{name: c, image: x}]\n",
        );
        assert_eq!(
            e[0].field,
            "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution"
        );
        let e = errors(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\nspec: {finalizers: []}\n",
        );
        assert_eq!(e[0].field, "spec.finalizers");
        let e = errors("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\nextra: 1\n");
        assert_eq!(e[0].field, "extra");
    }

    #[test]
    fn serde_errors_are_rewritten() {
        let pod =
            |spec: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}");
        let cases = [
            (
                pod("  containers:\n  - {name: c, image: x, ports: [{containerPort: abc}]}\n"),
                "spec.containers[0].ports[0].containerPort",
                "expected an integer, got a string (\"abc\")",
            ),
            (
                pod("  containers:\n  - {name: c, image: x, ports: [{containerPort: 8000000000}]}\n"),
                "spec.containers[0].ports[0].containerPort",
                "expected an integer from -2147483648 to 2147483647, got 8000000000",
            ),
            (
                pod("  restartPolicy: Sometimes\n  containers: [{name: c, image: x}]\n"),
                "spec.restartPolicy",
                "must be one of Always, OnFailure, Never, got \"Sometimes\"",
            ),
            (
                pod("  containers: {name: c}\n"),
                "spec.containers",
                "expected a list, got a mapping",
            ),
            (
                pod("  containers: [{name: c, image: x, stdin: 3}]\n"),
                "spec.containers[0].stdin",
                "expected a boolean, got an integer (3)",
            ),
            (
                pod("  containers: [{name: c, image: x, livenessProbe: {httpGet: {path: /}}}]\n"),
                "spec.containers[0].livenessProbe.httpGet.port",
                "required",
            ),
            (
                pod("  containers: [{name: c, image: x, resources: {limits: {cpu: 2x}}}]\n"),
                "spec.containers[0].resources.limits.cpu",
                "invalid quantity \"2x\": unknown suffix \"x\"",
            ),
            (
                pod("  terminationGracePeriodSeconds: 1.5\n  containers: [{name: c, image: x}]\n"),
                "spec.terminationGracePeriodSeconds",
                "expected an integer, got a number (1.5)",
            ),
            (
                pod("  containers: [{name: c, image: x, ports: [{containerPort: 80, protocol: tcp}]}]\n"),
                "spec.containers[0].ports[0].protocol",
                "must be one of TCP, UDP, SCTP, got \"tcp\"",
            ),
            (
                pod("  containers: [{name: c, image: [x]}]\n"),
                "spec.containers[0].image",
                "expected a string, got a list",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n".to_string(),
                "spec",
                "required",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {version: 2}}\nspec: \
                 {containers: [{name: c, image: x}]}\n"
                    .to_string(),
                "metadata.labels.version",
                "expected a string, got an integer (2)",
            ),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {tls.crt: \"not base64!\"}\n"
                    .to_string(),
                "data[tls.crt]",
                "must be base64",
            ),
        ];
        for (text, field, message) in cases {
            let e = errors(&text);
            assert_eq!(e.len(), 1, "{text}: {e:?}");
            assert_eq!(e[0].field, field, "{text}");
            assert!(e[0].message.contains(message), "{text}: {}", e[0].message);
        }
    }

    #[test]
    fn header_errors() {
        let cases = [
            ("kind: Pod\nmetadata: {name: p}\n", "apiVersion", "required"),
            ("apiVersion: v1\nmetadata: {name: p}\n", "kind", "required"),
            (
                "apiVersion: 1\nkind: Pod\n",
                "apiVersion",
                "expected a string",
            ),
            (
                "apiVersion: v1\nkind: Node\nmetadata: {name: n}\n",
                "kind",
                "cannot be applied",
            ),
            ("- a\n- b\n", "", "must be a mapping"),
            ("just text\n", "", "must be a mapping"),
        ];
        for (text, field, message) in cases {
            let e = errors(text);
            assert_eq!(e[0].field, field, "{text}");
            assert!(e[0].message.contains(message), "{text}: {}", e[0].message);
        }
        let e = errors("apiVersion: apps/v1beta2\nkind: Deployment\nmetadata: {name: d}\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].message.starts_with(
                "apiVersion apps/v1beta2 kind Deployment is not supported; supported: v1 \
                 Namespace, v1 ConfigMap, v1 Secret, v1 PersistentVolumeClaim, v1 Service, v1 \
                 Pod, apps/v1 Deployment, apps/v1 StatefulSet"
            ),
            "{}",
            e[0].message
        );
        assert!(!e[0].message.contains("Node"));
    }

    #[test]
    fn status_and_server_fields_are_ignored() {
        let r = one(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: w\n  uid: 123\n  \
             resourceVersion: \"9\"\n  generation: 4\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\n  \
             managedFields: [{manager: kubectl}]\n  selfLink: /x\nspec:\n  selector: {matchLabels: \
             {a: b}}\n  template:\n    metadata: {creationTimestamp: null, labels: {a: b}}\n    \
             spec:\n      containers: [{name: c, image: x, resources: {}}]\n  strategy: {}\n\
             status: {replicas: 3, conditions: [{type: Available}]}\n",
        );
        assert_eq!(r.meta().uid, None);
        assert_eq!(r.meta().generation, None);
        assert_eq!(r.meta().resource_version, None);
        assert_eq!(r.meta().creation_timestamp, None);
        let v = r.to_value();
        assert!(v.get("status").is_none());
    }

    #[test]
    fn nulls_count_as_absent() {
        let r = one(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\nspec:\n  containers:\n  \
             - name: c\n    image: x\n    env:\n    resources:\n    command: ~\n",
        );
        let Resource::Pod(p) = r else { panic!() };
        assert!(p.spec.containers[0].env.is_empty());
    }

    #[test]
    fn errors_of_several_documents_are_all_reported() {
        let text = "\
# leading comment, not a document
---
apiVersion: v1
kind: ConfigMap
metadata: {name: fine}
---
# only a comment: an empty document, skipped but counted
---
apiVersion: v1
kind: Service
metadata: {name: Bad_Name}
spec: {ports: [{port: 70000}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec:
      containers: [{name: c, image: x, ports: [{containerPort: 0}]}]
";
        let e = errors(text);
        let got: Vec<(Option<usize>, &str)> =
            e.iter().map(|e| (e.document, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some(2), "metadata.name"),
                (Some(2), "spec.ports[0].port"),
                (Some(3), "spec.selector"),
                (
                    Some(3),
                    "spec.template.spec.containers[0].ports[0].containerPort"
                ),
            ],
            "{e:?}"
        );
        assert_eq!(
            e[1].to_string(),
            "document 2: spec.ports[0].port: must be 1-65535, got 70000"
        );
        assert!(e[2].message.starts_with("does not match template labels"));
    }

    #[test]
    fn yaml_syntax_errors_keep_file_lines_and_other_documents() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkey: [unclosed\n\
                    ---\napiVersion: v1\nkind: Namespace\nmetadata: {name: B}\n";
        let e = errors(text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].document, Some(1));
        assert!(e[0].message.starts_with("invalid YAML"), "{}", e[0].message);
        assert!(e[0].message.contains("line 5"), "{}", e[0].message);
        assert_eq!(
            (e[1].document, e[1].field.as_str()),
            (Some(2), "metadata.name")
        );
    }

    #[test]
    fn empty_and_comment_only_inputs() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("# nothing\n---\n---\n...\n").unwrap(), vec![]);
        assert_eq!(
            parse("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n...\n")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse("%YAML 1.2\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            parse("--- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn json_inputs() {
        let obj = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}"#;
        assert_eq!(parse(obj).unwrap()[0].name(), "a");
        // Several objects one after the other, as `kubectl get -o json` piped together.
        let stream = format!("{obj}\n{}", obj.replace("\"a\"", "\"b\""));
        let names: Vec<String> = parse(&stream)
            .unwrap()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        let e = errors(r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}"#);
        assert!(e[0].message.starts_with("invalid JSON"), "{}", e[0].message);
        let e = errors(
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 70000}]}]}}"#,
        );
        assert_eq!(e[0].field, "spec.containers[0].ports[0].containerPort");
        assert_eq!(e[0].message, "must be 1-65535, got 70000");
    }

    #[test]
    fn lists_are_flattened() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n\
                    - {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n---\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n";
        let names: Vec<String> = parse(yaml)
            .unwrap()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        let json = r#"{"kind": "List", "apiVersion": "v1", "metadata": {}, "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ok"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Not_OK"}},
            {"apiVersion": "v1", "kind": "Widget"}]}"#;
        let e = errors(json);
        let got: Vec<(Option<usize>, &str)> =
            e.iter().map(|e| (e.document, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![(Some(0), "items[1].metadata.name"), (Some(0), "items[2]")]
        );
        assert!(
            parse(r#"{"kind": "DeploymentList", "apiVersion": "apps/v1", "items": []}"#)
                .unwrap()
                .is_empty()
        );
        let e = parse_value(serde_json::json!({"kind": "List", "apiVersion": "v1", "items": []}))
            .unwrap_err();
        assert!(e.0[0].message.contains("single object"));
    }

    #[test]
    fn parse_value_and_typed_from_value() {
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "uid": "u"}, "status": {"phase": "Active"}});
        let r = parse_value(v.clone()).unwrap();
        assert_eq!(r.meta().uid, None, "server-set fields are dropped on input");
        // from_value reads stored objects, which carry server-set metadata and no status.
        let stored = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "uid": "u"}});
        assert_eq!(
            Resource::from_value(Kind::Namespace, stored)
                .unwrap()
                .meta()
                .uid
                .as_deref(),
            Some("u")
        );
        let e = Resource::from_value(Kind::Namespace, v).unwrap_err();
        assert_eq!(e.0[0].field, "status");
        let e = Resource::from_value(
            Kind::ConfigMap,
            serde_json::json!({"kind": "Secret", "metadata": {"name": "x"}}),
        )
        .unwrap_err();
        assert_eq!(e.0[0].field, "kind");
        let e = Resource::from_value(Kind::Pod, serde_json::json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i", "tty": "yes"}]}})).unwrap_err();
        assert_eq!(e.0[0].field, "spec.containers[0].tty");
        assert!(Resource::from_value(Kind::Pod, serde_json::json!([])).is_err());
    }

    fn example(name: &str) -> String {
        let path = format!(
            "{}/../../shared/k8s-examples/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn guestbook_example_parses() {
        let all = parse(&example("guestbook-all-in-one.yaml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 6);
        let summary: Vec<(Kind, &str)> = all.iter().map(|r| (r.kind(), r.name())).collect();
        assert_eq!(
            summary,
            vec![
                (Kind::Service, "redis-master"),
                (Kind::Deployment, "redis-master"),
                (Kind::Service, "redis-replica"),
                (Kind::Deployment, "redis-replica"),
                (Kind::Service, "frontend"),
                (Kind::Deployment, "frontend"),
            ]
        );
        let mut replicas = Vec::new();
        for r in &all {
            match r {
                Resource::Deployment(d) => {
                    replicas.push(d.spec.replicas);
                    let c = &d.spec.template.spec.containers[0];
                    assert_eq!(c.resources.requests["cpu"].millis(), 100);
                    assert_eq!(c.resources.requests["memory"].bytes(), 100 * 1024 * 1024);
                    assert!(d.spec.selector.matches(&d.spec.template.metadata.labels));
                }
                Resource::Service(s) => {
                    let p = &s.spec.ports[0];
                    assert_eq!(p.target_port, IntOrString::Int(p.port));
                }
                _ => panic!("unexpected {}", r.kind()),
            }
        }
        assert_eq!(replicas, vec![1, 2, 3]);
        let Resource::Deployment(front) = &all[5] else {
            panic!()
        };
        let c = &front.spec.template.spec.containers[0];
        assert_eq!(c.ports[0].container_port, 80);
        assert_eq!(c.env[0].name, "GET_HOSTS_FROM");
        assert_eq!(c.env[0].value.as_deref(), Some("dns"));
        assert_eq!(c.image_pull_policy, Some(PullPolicy::IfNotPresent));
        let Resource::Service(front_svc) = &all[4] else {
            panic!()
        };
        assert_eq!(front_svc.spec.type_, ServiceType::NodePort);
        assert_eq!(
            front_svc.spec.external_traffic_policy,
            Some(TrafficPolicy::Cluster)
        );
        let Resource::Deployment(master) = &all[1] else {
            panic!()
        };
        assert_eq!(
            master.spec.template.spec.containers[0].ports[0].container_port,
            6379
        );
    }

    #[test]
    fn nginx_example_parses() {
        let all = parse(&example("nginx-deployment.yaml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 1);
        let Resource::Deployment(d) = &all[0] else {
            panic!()
        };
        assert_eq!(d.metadata.name, "nginx-deployment");
        assert_eq!(d.spec.replicas, 2);
        let c = &d.spec.template.spec.containers[0];
        assert_eq!((c.name.as_str(), c.image.as_str()), ("nginx", "nginx:1.15"));
        assert_eq!(c.ports[0].container_port, 80);
        assert_eq!(c.image_pull_policy, Some(PullPolicy::IfNotPresent));
    }

    #[test]
    fn quantities_may_be_numbers_and_modes_octal() {
        let r = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    \
             image: x\n    resources: {requests: {cpu: 0.5, memory: 1e3}, limits: {cpu: 1}}\n  \
             volumes: [{name: v, secret: {secretName: s, defaultMode: 0600}}]\n",
        );
        let Resource::Pod(p) = &r else { panic!() };
        let res = &p.spec.containers[0].resources;
        assert_eq!(res.requests["cpu"].millis(), 500);
        assert_eq!(res.limits["cpu"].as_str(), "1");
        assert_eq!(res.requests["memory"].bytes(), 1000);
        let Some(VolumeSource::Secret(s)) = p.spec.volumes[0].source() else {
            panic!()
        };
        assert_eq!(
            s.default_mode, 0o600,
            "YAML 1.1 octal, as Kubernetes reads it"
        );
        // Written back as strings, as Kubernetes does.
        let v = r.to_value();
        assert_eq!(
            v["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
    }

    #[test]
    fn pull_policy_defaults() {
        let cases = [
            ("nginx", PullPolicy::Always),
            ("nginx:latest", PullPolicy::Always),
            ("nginx:1.25", PullPolicy::IfNotPresent),
            ("registry:5000/nginx", PullPolicy::Always),
            ("registry:5000/nginx:1", PullPolicy::IfNotPresent),
            ("nginx@sha256:abcd", PullPolicy::IfNotPresent),
        ];
        for (image, want) in cases {
            assert_eq!(PullPolicy::for_image(image), want, "{image}");
        }
    }
}
