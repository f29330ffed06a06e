//! What `get` prints: kubectl-style tables (one column table per kind), ages, YAML and JSON,
//! and the masking of Secret values.
//!
//! Objects are handled as JSON values, not typed resources: the node fills `status` and may add
//! fields this client does not know, and a table must still print whatever is there.

use std::io::Write;

use base64::Engine as _;
use serde_json::{Map, Value};
use shoal_protocol::Kind;

// ---------------------------------------------------------------------------------------------
// Reading JSON objects

/// The value at a JSON pointer (`/status/readyReplicas`), if any.
pub fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|x| !x.is_null())
}

/// A scalar at a pointer as text; numbers and booleans too (quantities may be either).
pub fn text(v: &Value, pointer: &str) -> Option<String> {
    at(v, pointer).and_then(scalar)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An integer at a pointer.
pub fn int(v: &Value, pointer: &str) -> Option<i64> {
    at(v, pointer).and_then(Value::as_i64)
}

/// The array at a pointer, or an empty one.
pub fn list<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    at(v, pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object at a pointer, if any.
pub fn map<'a>(v: &'a Value, pointer: &str) -> Option<&'a Map<String, Value>> {
    at(v, pointer).and_then(Value::as_object)
}

/// `k=v,k2=v2` from a string map, or `None` when empty.
pub fn joined_map(v: &Value, pointer: &str) -> Option<String> {
    let m = map(v, pointer)?;
    if m.is_empty() {
        return None;
    }
    Some(
        m.iter()
            .map(|(k, v)| format!("{k}={}", scalar(v).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// A label selector (`matchLabels` and `matchExpressions`) as kubectl prints it.
pub fn selector_text(sel: &Value) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    if let Some(labels) = joined_map(sel, "/matchLabels") {
        parts.push(labels);
    }
    for e in list(sel, "/matchExpressions") {
        let key = text(e, "/key").unwrap_or_default();
        let values: Vec<String> = list(e, "/values").iter().filter_map(scalar).collect();
        let op = text(e, "/operator").unwrap_or_default();
        parts.push(match op.as_str() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key,
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({})", values.join(",")),
        });
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

fn or_none(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".to_string())
}

// ---------------------------------------------------------------------------------------------
// Time

pub use shoal_protocol::time::parse_rfc3339;

/// Now, in seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration as kubectl prints ages (its `HumanDuration`): `45s`, `3m20s`, `5h`, `2d3h`, `3y`.
pub fn human_duration(secs: i64) -> String {
    // Up to two seconds in the future counts as now: clocks of nodes drift a little.
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The AGE of an object: since its `metadata.creationTimestamp`.
pub fn age(obj: &Value, now: i64) -> String {
    match text(obj, "/metadata/creationTimestamp").and_then(|t| parse_rfc3339(&t)) {
        Some(created) => human_duration(now - created),
        None => "<unknown>".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Tables

/// Renders rows under upper-case headers, columns left-aligned and separated by at least three
/// spaces, as kubectl's tabwriter does. No trailing spaces.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let header_row: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    let all: Vec<&[String]> = std::iter::once(header_row.as_slice())
        .chain(rows.iter().map(Vec::as_slice))
        .collect();
    render_rows(&all)
}

/// Renders rows as aligned columns, the first row included as it is.
pub fn render_rows(rows: &[&[String]]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        if widths.len() < row.len() {
            widths.resize(row.len(), 0);
        }
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count())
                    + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One column of a kind's table.
pub struct Column {
    pub header: &'static str,
    /// Shown only with `-o wide`.
    pub wide: bool,
    pub cell: fn(&Value, i64) -> String,
}

const fn col(header: &'static str, cell: fn(&Value, i64) -> String) -> Column {
    Column {
        header,
        wide: false,
        cell,
    }
}

const fn wide(header: &'static str, cell: fn(&Value, i64) -> String) -> Column {
    Column {
        header,
        wide: true,
        cell,
    }
}

fn name(v: &Value, _: i64) -> String {
    text(v, "/metadata/name").unwrap_or_default()
}

fn count(v: &Value, pointer: &str) -> String {
    int(v, pointer).unwrap_or(0).to_string()
}

fn containers_of(v: &Value, pointer: &str, field: &str) -> String {
    or_none(Some(
        list(v, pointer)
            .iter()
            .filter_map(|c| text(c, field))
            .collect::<Vec<_>>()
            .join(","),
    ))
}

fn replicas_ready(v: &Value) -> String {
    format!(
        "{}/{}",
        int(v, "/status/readyReplicas").unwrap_or(0),
        int(v, "/spec/replicas").unwrap_or(1)
    )
}

// The wide columns every workload table (Deployment, ReplicaSet, StatefulSet) shares.
fn template_containers(v: &Value, _: i64) -> String {
    containers_of(v, "/spec/template/spec/containers", "/name")
}

fn template_images(v: &Value, _: i64) -> String {
    containers_of(v, "/spec/template/spec/containers", "/image")
}

fn workload_selector(v: &Value, _: i64) -> String {
    or_none(at(v, "/spec/selector").and_then(selector_text))
}

const DEPLOYMENT: &[Column] = &[
    col("NAME", name),
    col("READY", |v, _| replicas_ready(v)),
    col("UP-TO-DATE", |v, _| count(v, "/status/updatedReplicas")),
    col("AVAILABLE", |v, _| count(v, "/status/availableReplicas")),
    col("AGE", age),
    wide("CONTAINERS", template_containers),
    wide("IMAGES", template_images),
    wide("SELECTOR", workload_selector),
];

const REPLICASET: &[Column] = &[
    col("NAME", name),
    col("DESIRED", |v, _| count(v, "/spec/replicas")),
    col("CURRENT", |v, _| count(v, "/status/replicas")),
    col("READY", |v, _| count(v, "/status/readyReplicas")),
    col("AGE", age),
    wide("CONTAINERS", template_containers),
    wide("IMAGES", template_images),
    wide("SELECTOR", workload_selector),
];

const STATEFULSET: &[Column] = &[
    col("NAME", name),
    col("READY", |v, _| replicas_ready(v)),
    col("AGE", age),
    wide("CONTAINERS", template_containers),
    wide("IMAGES", template_images),
];

const CONTROLLERREVISION: &[Column] = &[
    col("NAME", name),
    col("CONTROLLER", |v, _| {
        list(v, "/metadata/ownerReferences")
            .first()
            .and_then(|o| {
                let kind = text(o, "/kind")?.to_lowercase();
                Some(format!("{kind}.apps/{}", text(o, "/name")?))
            })
            .unwrap_or_default()
    }),
    col("REVISION", |v, _| count(v, "/revision")),
    col("AGE", age),
];

/// READY of a pod: ready containers / containers.
fn pod_ready(v: &Value) -> String {
    let statuses = list(v, "/status/containerStatuses");
    let ready = statuses
        .iter()
        .filter(|c| at(c, "/ready").and_then(Value::as_bool) == Some(true))
        .count();
    let total = list(v, "/spec/containers").len().max(statuses.len());
    format!("{ready}/{total}")
}

/// STATUS of a pod as kubectl derives it: a container's waiting or terminated reason beats the
/// phase, since `CrashLoopBackOff` or `ErrImagePull` is what the user needs to see.
pub fn pod_status(v: &Value) -> String {
    if at(v, "/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = text(v, "/status/reason")
        .or_else(|| text(v, "/status/phase"))
        .unwrap_or_else(|| "Pending".into());
    // Backwards, as kubectl does, so that the first container's reason wins.
    let mut has_running = false;
    for c in list(v, "/status/containerStatuses").iter().rev() {
        if let Some(r) = text(c, "/state/waiting/reason").filter(|r| !r.is_empty()) {
            reason = r;
        } else if let Some(r) = text(c, "/state/terminated/reason").filter(|r| !r.is_empty()) {
            reason = r;
        } else if at(c, "/state/terminated").is_some() {
            reason = match int(c, "/state/terminated/signal").filter(|s| *s != 0) {
                Some(sig) => format!("Signal:{sig}"),
                None => format!(
                    "ExitCode:{}",
                    int(c, "/state/terminated/exitCode").unwrap_or(0)
                ),
            };
        } else if at(c, "/ready").and_then(Value::as_bool) == Some(true)
            && at(c, "/state/running").is_some()
        {
            has_running = true;
        }
    }
    // A finished sidecar does not make a serving pod look finished.
    if reason == "Completed" && has_running {
        let ready = list(v, "/status/conditions").iter().any(|c| {
            text(c, "/type").as_deref() == Some("Ready")
                && text(c, "/status").as_deref() == Some("True")
        });
        reason = if ready { "Running" } else { "NotReady" }.into();
    }
    reason
}

fn pod_restarts(v: &Value) -> String {
    list(v, "/status/containerStatuses")
        .iter()
        .map(|c| int(c, "/restartCount").unwrap_or(0))
        .sum::<i64>()
        .to_string()
}

const POD: &[Column] = &[
    col("NAME", name),
    col("READY", |v, _| pod_ready(v)),
    col("STATUS", |v, _| pod_status(v)),
    col("RESTARTS", |v, _| pod_restarts(v)),
    col("AGE", age),
    // `podIp`: what nodes whose protocol crate spells it so send.
    wide("IP", |v, _| {
        or_none(text(v, "/status/podIP").or_else(|| text(v, "/status/podIp")))
    }),
    wide("NODE", |v, _| or_none(text(v, "/spec/nodeName"))),
];

/// `80/TCP,443:30443/TCP`: the port and, where the nodes serve it on another port (a
/// nodePort, or the automatic port shoal gives a port another Service holds, from
/// `status.nodePorts`), that one.
pub fn service_ports(v: &Value) -> String {
    let ports: Vec<String> = list(v, "/spec/ports")
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let port = text(p, "/port").unwrap_or_default();
            let proto = text(p, "/protocol").unwrap_or_else(|| "TCP".into());
            let served = text(v, &format!("/status/nodePorts/{i}")).filter(|np| *np != port);
            match text(p, "/nodePort").or(served) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    or_none(Some(ports.join(",")))
}

fn service_external_ips(v: &Value) -> String {
    let mut ips: Vec<String> = list(v, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| text(i, "/ip").or_else(|| text(i, "/hostname")))
        .collect();
    ips.extend(list(v, "/spec/externalIPs").iter().filter_map(scalar));
    if ips.is_empty() && text(v, "/spec/type").as_deref() == Some("LoadBalancer") {
        return "<pending>".into();
    }
    or_none(Some(ips.join(",")))
}

const SERVICE: &[Column] = &[
    col("NAME", name),
    col("TYPE", |v, _| {
        text(v, "/spec/type").unwrap_or_else(|| "ClusterIP".into())
    }),
    col("DNS-NAME", |v, _| or_none(text(v, "/status/dnsName"))),
    col("PORT(S)", |v, _| service_ports(v)),
    col("ENDPOINTS", |v, _| {
        match (
            count_opt(v, "/status/readyEndpoints"),
            count_opt(v, "/status/endpoints"),
        ) {
            (Some(r), Some(t)) => format!("{r}/{t}"),
            _ => "<none>".into(),
        }
    }),
    col("AGE", age),
    wide("CLUSTER-IP", |v, _| or_none(text(v, "/spec/clusterIP"))),
    wide("EXTERNAL-IP", |v, _| service_external_ips(v)),
    wide("SELECTOR", |v, _| or_none(joined_map(v, "/spec/selector"))),
];

fn count_opt(v: &Value, pointer: &str) -> Option<i64> {
    at(v, pointer).and_then(Value::as_i64)
}

const ENDPOINTS: &[Column] = &[
    col("NAME", name),
    col("ENDPOINTS", |v, _| endpoints_cell(v)),
    col("AGE", age),
    wide("NOT-READY", |v, _| {
        let n: usize = list(v, "/subsets")
            .iter()
            .map(|s| list(s, "/notReadyAddresses").len())
            .sum();
        n.to_string()
    }),
];

/// `ip:port,ip:port + N more...` of the ready addresses, as kubectl shows them.
fn endpoints_cell(v: &Value) -> String {
    let mut all: Vec<String> = Vec::new();
    for s in list(v, "/subsets") {
        let ports: Vec<String> = list(s, "/ports")
            .iter()
            .filter_map(|p| text(p, "/port"))
            .collect();
        for a in list(s, "/addresses") {
            let ip = text(a, "/ip").unwrap_or_default();
            if ports.is_empty() {
                all.push(ip.clone());
            }
            for p in &ports {
                all.push(format!("{ip}:{p}"));
            }
        }
    }
    if all.is_empty() {
        return "<none>".into();
    }
    if all.len() > 3 {
        let more = all.len() - 3;
        all.truncate(3);
        return format!("{} + {more} more...", all.join(","));
    }
    all.join(",")
}

fn map_len(v: &Value, pointer: &str) -> usize {
    map(v, pointer).map_or(0, Map::len)
}

const CONFIGMAP: &[Column] = &[
    col("NAME", name),
    col("DATA", |v, _| {
        (map_len(v, "/data") + map_len(v, "/binaryData")).to_string()
    }),
    col("AGE", age),
];

const SECRET: &[Column] = &[
    col("NAME", name),
    col("TYPE", |v, _| {
        text(v, "/type").unwrap_or_else(|| "Opaque".into())
    }),
    col("DATA", |v, _| {
        (map_len(v, "/data") + map_len(v, "/stringData")).to_string()
    }),
    col("AGE", age),
];

const NAMESPACE: &[Column] = &[
    col("NAME", name),
    col("STATUS", |v, _| {
        text(v, "/status/phase").unwrap_or_else(|| "Active".into())
    }),
    col("AGE", age),
];

/// STATUS of a node: its membership state capitalised (`Alive`, `Suspect`, `Dead`, `Left`),
/// plus each condition the node reports about itself (status `True`, any type but `Ready`:
/// `Alive,EngineUnavailable`), plus `SchedulingDisabled` when cordoned. A node object without `status.membership` (from a
/// node older than membership) falls back to its Ready condition, as kubectl reads it.
pub fn node_status(v: &Value) -> String {
    let state = match text(v, "/status/membership/state").filter(|s| !s.is_empty()) {
        Some(state) => capitalise(&state),
        None => list(v, "/status/conditions")
            .iter()
            .find(|c| text(c, "/type").as_deref() == Some("Ready"))
            .map(|c| match text(c, "/status").as_deref() {
                Some("True") => "Ready",
                Some("False") => "NotReady",
                _ => "Unknown",
            })
            .unwrap_or("Unknown")
            .to_string(),
    };
    let mut parts = vec![state];
    for c in list(v, "/status/conditions") {
        if let Some(type_) = text(c, "/type").filter(|t| t != "Ready" && !t.is_empty())
            && text(c, "/status").as_deref() == Some("True")
        {
            parts.push(type_);
        }
    }
    if at(v, "/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        parts.push("SchedulingDisabled".into());
    }
    parts.join(",")
}

/// `alive` → `Alive`.
pub fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Roles as a table cell: sorted, comma-joined, `<none>` when there are none.
pub fn roles_cell(roles: &[Value]) -> String {
    let mut names: Vec<String> = roles
        .iter()
        .filter_map(scalar)
        .filter(|r| !r.is_empty())
        .collect();
    names.sort();
    names.dedup();
    or_none(Some(names.join(",")))
}

/// ROLES of a node: the roles its membership record lists; for a node object without one, its
/// `node-role.shoal.dev/<role>` labels (and Kubernetes' own, for familiarity).
pub fn node_roles(v: &Value) -> String {
    if let Some(roles) = at(v, "/status/membership/roles").and_then(Value::as_array) {
        return roles_cell(roles);
    }
    let roles: Vec<Value> = map(v, "/metadata/labels")
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(|k| {
            k.strip_prefix("node-role.shoal.dev/")
                .or_else(|| k.strip_prefix("node-role.kubernetes.io/"))
        })
        .map(|r| Value::String(r.to_string()))
        .collect();
    roles_cell(&roles)
}

pub fn node_address(v: &Value, kind: &str) -> Option<String> {
    list(v, "/status/addresses")
        .iter()
        .find(|a| text(a, "/type").as_deref() == Some(kind))
        .and_then(|a| text(a, "/address"))
}

/// The address other nodes reach a node at: its InternalIP, else the first one it lists.
fn node_reach_address(v: &Value) -> String {
    or_none(node_address(v, "InternalIP").or_else(|| {
        list(v, "/status/addresses")
            .first()
            .and_then(|a| text(a, "/address"))
    }))
}

/// A memory quantity in the largest binary unit it reaches, rounded down: `24575392Ki` →
/// `23Gi`, `1536Mi` → `1.5Gi` (one decimal below 10 units). What does not parse is shown as
/// it was written.
pub fn human_memory(quantity: &str) -> String {
    const UNITS: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    let Ok(q) = shoal_protocol::quantity::Quantity::parse(quantity) else {
        return quantity.to_string();
    };
    let Ok(bytes) = u128::try_from(q.bytes()) else {
        return quantity.to_string();
    };
    let Some((unit, shift)) = UNITS.iter().find(|(_, shift)| bytes >> shift > 0) else {
        return bytes.to_string();
    };
    let whole = bytes >> shift;
    let tenths = ((bytes * 10) >> shift) % 10;
    if whole < 10 && tenths != 0 {
        format!("{whole}.{tenths}{unit}")
    } else {
        format!("{whole}{unit}")
    }
}

fn memory_cell(v: &Value, pointer: &str) -> String {
    or_none(text(v, pointer).map(|m| human_memory(&m)))
}

/// ALLOCATABLE of a node: `cpu/memory`, a missing part as `-`.
fn node_allocatable(v: &Value) -> String {
    let cpu = text(v, "/status/allocatable/cpu");
    let memory = text(v, "/status/allocatable/memory").map(|m| human_memory(&m));
    if cpu.is_none() && memory.is_none() {
        return "<none>".into();
    }
    format!(
        "{}/{}",
        cpu.unwrap_or_else(|| "-".into()),
        memory.unwrap_or_else(|| "-".into())
    )
}

/// How long ago an RFC 3339 time was, `<unknown>` when missing or unreadable.
pub fn since(time: Option<String>, now: i64) -> String {
    match time.and_then(|t| parse_rfc3339(&t)) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

const NODE: &[Column] = &[
    col("NAME", name),
    col("STATUS", |v, _| node_status(v)),
    col("ROLES", |v, _| node_roles(v)),
    col("AGE", age),
    col("VERSION", |v, _| {
        or_none(text(v, "/status/nodeInfo/shoalVersion"))
    }),
    wide("ADDRESS", |v, _| node_reach_address(v)),
    wide("POD-CIDR", |v, _| or_none(text(v, "/spec/podCIDR"))),
    wide("CPU", |v, _| or_none(text(v, "/status/capacity/cpu"))),
    wide("MEMORY", |v, _| memory_cell(v, "/status/capacity/memory")),
    wide("ALLOCATABLE", |v, _| node_allocatable(v)),
    wide("LAST-SEEN", |v, now| {
        since(text(v, "/status/membership/lastSeen"), now)
    }),
];

/// `RWO,RWX` from access modes.
pub fn access_modes(v: &Value, pointer: &str) -> String {
    list(v, pointer)
        .iter()
        .filter_map(scalar)
        .map(|m| match m.as_str() {
            "ReadWriteOnce" => "RWO".to_string(),
            "ReadOnlyMany" => "ROX".to_string(),
            "ReadWriteMany" => "RWX".to_string(),
            "ReadWriteOncePod" => "RWOP".to_string(),
            _ => m,
        })
        .collect::<Vec<_>>()
        .join(",")
}

const PVC: &[Column] = &[
    col("NAME", name),
    col("STATUS", |v, _| {
        text(v, "/status/phase").unwrap_or_else(|| "Pending".into())
    }),
    col("VOLUME", |v, _| {
        text(v, "/spec/volumeName").unwrap_or_default()
    }),
    col("CAPACITY", |v, _| {
        text(v, "/status/capacity/storage").unwrap_or_default()
    }),
    col("ACCESS MODES", |v, _| {
        access_modes(v, "/status/accessModes")
    }),
    col("STORAGECLASS", |v, _| {
        text(v, "/spec/storageClassName").unwrap_or_default()
    }),
    col("AGE", age),
];

/// The table columns of a kind.
pub fn columns(kind: Kind) -> &'static [Column] {
    match kind {
        Kind::Deployment => DEPLOYMENT,
        Kind::ReplicaSet => REPLICASET,
        Kind::StatefulSet => STATEFULSET,
        Kind::ControllerRevision => CONTROLLERREVISION,
        Kind::Endpoints => ENDPOINTS,
        Kind::Pod => POD,
        Kind::Service => SERVICE,
        Kind::ConfigMap => CONFIGMAP,
        Kind::Secret => SECRET,
        Kind::Namespace => NAMESPACE,
        Kind::Node => NODE,
        Kind::PersistentVolumeClaim => PVC,
        Kind::Event => crate::commands::events::COLUMNS,
    }
}

/// The `get` table of objects of one kind. `with_namespace` adds the NAMESPACE column (`-A`
/// on a namespaced kind).
pub fn table(kind: Kind, objects: &[Value], wide: bool, with_namespace: bool, now: i64) -> String {
    let cols: Vec<&Column> = columns(kind).iter().filter(|c| wide || !c.wide).collect();
    let mut headers: Vec<&str> = Vec::with_capacity(cols.len() + 1);
    if with_namespace {
        headers.push("NAMESPACE");
    }
    headers.extend(cols.iter().map(|c| c.header));
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            let mut row = Vec::with_capacity(headers.len());
            if with_namespace {
                row.push(text(o, "/metadata/namespace").unwrap_or_default());
            }
            row.extend(cols.iter().map(|c| (c.cell)(o, now)));
            row
        })
        .collect();
    render_table(&headers, &rows)
}

// ---------------------------------------------------------------------------------------------
// YAML, JSON, names

/// The `-o name` line of an object: `deployment.apps/web`.
pub fn name_line(kind: Kind, obj: &Value) -> String {
    format!(
        "{}/{}",
        kind.display(),
        text(obj, "/metadata/name").unwrap_or_default()
    )
}

/// Several objects in one kubectl `List`.
pub fn as_list(items: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": { "resourceVersion": "" },
        "items": items,
    })
}

/// Pretty JSON with a final newline.
pub fn to_json(v: &Value) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

/// YAML, as kubectl prints it (one document, no `---`).
pub fn to_yaml(v: &Value) -> anyhow::Result<String> {
    let s = serde_saphyr::to_string(v).map_err(|e| anyhow::anyhow!("cannot encode YAML: {e}"))?;
    Ok(if s.ends_with('\n') { s } else { s + "\n" })
}

/// Replaces every value of a Secret's `data` and `stringData` (also inside a `List`) with
/// `<hidden: N bytes>`, N being the decoded size, so that `-o yaml` can be shown on a screen or
/// pasted into an issue without leaking anything.
pub fn mask_secrets(v: &mut Value) {
    if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            mask_secrets(item);
        }
    }
    if v.get("kind").and_then(Value::as_str) != Some("Secret") {
        return;
    }
    for (field, base64) in [("data", true), ("stringData", false)] {
        if let Some(m) = v.get_mut(field).and_then(Value::as_object_mut) {
            for value in m.values_mut() {
                let raw = value.as_str().unwrap_or_default();
                let n = if base64 { decoded_len(raw) } else { raw.len() };
                *value = Value::String(format!("<hidden: {n} bytes>"));
            }
        }
    }
}

/// The size of a base64 value once decoded (its own length if it is not valid base64).
pub fn decoded_len(b64: &str) -> usize {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_or(b64.len(), |d| d.len())
}

/// Writes to stdout; a closed pipe (`shoal get pods | head -1`) ends the output quietly.
pub fn print(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_714_557_600; // 2024-05-01T10:00:00Z

    fn deployment(name: &str, replicas: i64, ready: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default",
                         "creationTimestamp": "2024-05-01T09:55:00Z"},
            "spec": {"replicas": replicas,
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"spec": {"containers": [
                         {"name": "web", "image": "nginx:1.25"},
                         {"name": "side", "image": "busybox"}]}}},
            "status": {"replicas": replicas, "updatedReplicas": replicas,
                       "readyReplicas": ready, "availableReplicas": ready}
        })
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-05-01T10:00:00Z"), Some(NOW));
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00.123456+02:00"), Some(NOW));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T10:00:00",
            "x",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (3 * 60, "3m"),
            (45 * 60, "45m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (10 * 3600, "10h"),
            (2 * 86_400, "2d"),
            (2 * 86_400 + 3 * 3600, "2d3h"),
            (30 * 86_400, "30d"),
            (3 * 365 * 86_400, "3y"),
            (3 * 365 * 86_400 + 5 * 86_400, "3y5d"),
            (10 * 365 * 86_400, "10y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
        assert_eq!(age(&deployment("w", 1, 1), NOW), "5m");
        assert_eq!(age(&json!({"metadata": {}}), NOW), "<unknown>");
    }

    #[test]
    fn tables_pad_columns_with_three_spaces() {
        let t = render_table(&["name", "ready"], &[vec!["web".into(), "1/1".into()]]);
        assert_eq!(t, "NAME   READY\nweb    1/1\n");
    }

    #[test]
    fn deployment_table_and_wide_columns() {
        let objs = [deployment("web", 3, 2), deployment("api-server", 1, 1)];
        assert_eq!(
            table(Kind::Deployment, &objs, false, false, NOW),
            "NAME         READY   UP-TO-DATE   AVAILABLE   AGE\n\
             web          2/3     3            2           5m\n\
             api-server   1/1     1            1           5m\n"
        );
        let wide = table(Kind::Deployment, &objs[..1], true, true, NOW);
        assert_eq!(
            wide,
            "NAMESPACE   NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES               SELECTOR\n\
             default     web    2/3     3            2           5m    web,side     nginx:1.25,busybox   app=web\n"
        );
    }

    #[test]
    fn deployment_without_status_shows_zeros() {
        let v = json!({"metadata": {"name": "x"}, "spec": {"replicas": 2}});
        assert_eq!(
            table(Kind::Deployment, &[v], false, false, NOW),
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nx      0/2     0            0           <unknown>\n"
        );
    }

    #[test]
    fn pod_columns() {
        let pod = json!({
            "kind": "Pod",
            "metadata": {"name": "web-0", "creationTimestamp": "2024-05-01T09:59:15Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        assert_eq!(
            table(Kind::Pod, &[pod], true, false, NOW),
            "NAME    READY   STATUS             RESTARTS   AGE   IP         NODE\n\
             web-0   1/2     CrashLoopBackOff   3          45s   10.1.0.5   n1\n"
        );
        let pending = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pod_status(&pending), "Pending");
        let exited = json!({"status": {"phase": "Failed", "containerStatuses": [
            {"state": {"terminated": {"exitCode": 3}}}]}});
        assert_eq!(pod_status(&exited), "ExitCode:3");
    }

    #[test]
    fn pod_status_reads_like_kubectl() {
        let one = |phase: &str, state: Value| {
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": phase,
                "containerStatuses": [{"name": "a", "ready": false, "state": state}]}})
        };
        let waiting = |r: &str| json!({"waiting": {"reason": r, "message": "m"}});
        let done = |r: &str, code: i64| json!({"terminated": {"reason": r, "exitCode": code}});
        let cases = [
            (
                one("Running", json!({"running": {"startedAt": "x"}})),
                "Running",
            ),
            (
                one("Pending", waiting("ContainerCreating")),
                "ContainerCreating",
            ),
            (
                one("Running", waiting("CrashLoopBackOff")),
                "CrashLoopBackOff",
            ),
            (one("Pending", waiting("ErrImagePull")), "ErrImagePull"),
            (
                one("Pending", waiting("ImagePullBackOff")),
                "ImagePullBackOff",
            ),
            (
                one("Pending", waiting("CreateContainerConfigError")),
                "CreateContainerConfigError",
            ),
            (one("Running", done("OOMKilled", 137)), "OOMKilled"),
            (one("Succeeded", done("Completed", 0)), "Completed"),
            (one("Failed", done("Error", 1)), "Error"),
            (json!({"status": {"phase": "Pending"}}), "Pending"),
            (
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
                       "status": {"phase": "Running"}}),
                "Terminating",
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(pod_status(&pod), want, "{pod}");
        }
        let sidecar_done = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "a", "ready": true, "state": {"running": {}}},
                {"name": "b", "ready": false, "state": {"terminated": {"reason": "Completed"}}}]}});
        assert_eq!(pod_status(&sidecar_done), "Running");
        let ready = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "a", "ready": true, "restartCount": 4,
                                   "state": {"running": {}}}]}});
        let row = table(Kind::Pod, &[ready], false, false, NOW);
        let cells: Vec<&str> = row.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            cells[..3],
            ["1/1", "Running", "4"],
            "no name: the first cell is empty"
        );
    }

    #[test]
    fn endpoints_columns() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
            "notReadyAddresses": [{"ip": "10.0.0.3"}],
            "ports": [{"port": 8080}, {"port": 9090}]}]});
        let t = table(Kind::Endpoints, &[ep], true, false, NOW);
        assert!(
            t.contains("10.0.0.1:8080,10.0.0.1:9090,10.0.0.2:8080 + 1 more..."),
            "{t}"
        );
        assert!(
            t.lines().nth(1).unwrap().trim_end().ends_with('1'),
            "one not ready: {t}"
        );
        let none = table(
            Kind::Endpoints,
            &[json!({"metadata": {"name": "x"}})],
            false,
            false,
            NOW,
        );
        assert!(none.contains("<none>"));
    }

    #[test]
    fn service_columns() {
        let svc = json!({
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                     "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]},
            "status": {"dnsName": "web.default.svc.shoal.home.arpa", "endpoints": 3,
                       "readyEndpoints": 2}
        });
        assert_eq!(
            table(Kind::Service, std::slice::from_ref(&svc), false, false, NOW),
            "NAME   TYPE       DNS-NAME                          PORT(S)               ENDPOINTS   AGE\n\
             web    NodePort   web.default.svc.shoal.home.arpa   80:30080/TCP,53/UDP   2/3         <unknown>\n"
        );
        let wide = table(Kind::Service, &[svc], true, false, NOW);
        assert!(
            wide.lines()
                .next()
                .unwrap()
                .ends_with("CLUSTER-IP   EXTERNAL-IP   SELECTOR")
        );
        assert!(wide.contains("10.96.0.10") && wide.contains("app=web"));
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(service_external_ips(&lb), "<pending>");
        // A port another Service holds is served on an automatic port, which the nodes
        // report in `status.nodePorts`.
        let shared = json!({
            "spec": {"ports": [{"port": 6379}, {"port": 8080}, {"port": 9090}]},
            "status": {"nodePorts": [31234, 8080, null]}
        });
        assert_eq!(service_ports(&shared), "6379:31234/TCP,8080/TCP,9090/TCP");
    }

    #[test]
    fn configmap_secret_namespace_pvc_columns() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        assert!(
            table(Kind::ConfigMap, &[cm], false, false, NOW).contains("c      2      <unknown>")
        );
        let s = json!({"metadata": {"name": "s"}, "data": {"a": "MQ=="}});
        assert_eq!(
            table(Kind::Secret, &[s], false, false, NOW),
            "NAME   TYPE     DATA   AGE\ns      Opaque   1      <unknown>\n"
        );
        let ns = json!({"metadata": {"name": "prod"}});
        assert!(table(Kind::Namespace, &[ns], false, false, NOW).contains("prod   Active"));
        let pvc = json!({"metadata": {"name": "data"},
            "spec": {"storageClassName": "local", "volumeName": "pv-1"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                       "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            table(Kind::PersistentVolumeClaim, &[pvc], false, false, NOW),
            "NAME   STATUS   VOLUME   CAPACITY   ACCESS MODES   STORAGECLASS   AGE\n\
             data   Bound    pv-1     1Gi        RWO            local          <unknown>\n"
        );
    }

    /// A Node as `GET /api/v1/nodes/{name}` answers it.
    fn node(name: &str, state: &str, last_seen: Value, roles: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "creationTimestamp": "2024-04-29T10:00:00Z",
                         "labels": {"kubernetes.io/hostname": name,
                                    "node-role.shoal.dev/controller": ""}},
            "spec": {},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "NodeAlive"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.2"},
                              {"type": "Hostname", "address": name}],
                "capacity": {"cpu": "2", "memory": "24575392Ki"},
                "allocatable": {"cpu": "1500m", "memory": "1536Mi"},
                "nodeInfo": {"shoalVersion": "0.1.0", "peerId": "12D3KooWabc"},
                "membership": {"state": state, "lastSeen": last_seen, "roles": roles}}
        })
    }

    #[test]
    fn node_columns() {
        let nodes = [
            node(
                "n1",
                "alive",
                json!("2024-05-01T09:59:58Z"),
                json!(["controller"]),
            ),
            node("n2", "suspect", json!("2024-05-01T09:59:20Z"), json!([])),
            node(
                "n3",
                "dead",
                Value::Null,
                json!(["scheduler", "controller"]),
            ),
            node("n4", "left", json!("2024-04-30T10:00:00Z"), json!([])),
        ];
        let mut nodes = nodes;
        nodes[0]["spec"]["podCIDR"] = json!("10.42.7.0/24");
        assert_eq!(
            table(Kind::Node, &nodes, false, false, NOW),
            "NAME   STATUS    ROLES                  AGE   VERSION\n\
             n1     Alive     controller             2d    0.1.0\n\
             n2     Suspect   <none>                 2d    0.1.0\n\
             n3     Dead      controller,scheduler   2d    0.1.0\n\
             n4     Left      <none>                 2d    0.1.0\n"
        );
        assert_eq!(
            table(Kind::Node, &nodes[..3], true, false, NOW),
            "NAME   STATUS    ROLES                  AGE   VERSION   ADDRESS     POD-CIDR       CPU   MEMORY   ALLOCATABLE   LAST-SEEN\n\
             n1     Alive     controller             2d    0.1.0     127.0.0.2   10.42.7.0/24   2     23Gi     1500m/1.5Gi   2s\n\
             n2     Suspect   <none>                 2d    0.1.0     127.0.0.2   <none>         2     23Gi     1500m/1.5Gi   40s\n\
             n3     Dead      controller,scheduler   2d    0.1.0     127.0.0.2   <none>         2     23Gi     1500m/1.5Gi   <unknown>\n"
        );
    }

    #[test]
    fn a_node_status_shows_its_reported_conditions() {
        let mut n = node("n1", "alive", json!("2024-05-01T09:59:58Z"), json!([]));
        n["status"]["conditions"] = json!([
            {"type": "Ready", "status": "False", "reason": "EngineUnavailable"},
            {"type": "EngineUnavailable", "status": "True", "reason": "EngineUnavailable",
             "message": "cannot reach the Docker engine at unix:///var/run/docker.sock",
             "lastTransitionTime": "2024-05-01T09:59:50Z"},
            {"type": "Other", "status": "False"}
        ]);
        assert_eq!(node_status(&n), "Alive,EngineUnavailable");
        n["spec"]["unschedulable"] = json!(true);
        assert_eq!(
            node_status(&n),
            "Alive,EngineUnavailable,SchedulingDisabled"
        );
    }

    #[test]
    fn nodes_without_membership_fall_back_to_conditions_and_labels() {
        let old = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2024-04-29T10:00:00Z",
                         "labels": {"node-role.shoal.dev/scheduler": "", "zone": "a"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "Hostname", "address": "n1.lan"}],
                       "capacity": {"cpu": "4", "memory": "8Gi"},
                       "nodeInfo": {"shoalVersion": "0.1.0"}}
        });
        assert_eq!(
            table(Kind::Node, &[old], true, false, NOW),
            "NAME   STATUS                     ROLES       AGE   VERSION   ADDRESS   POD-CIDR   CPU   MEMORY   ALLOCATABLE   LAST-SEEN\n\
             n1     Ready,SchedulingDisabled   scheduler   2d    0.1.0     n1.lan    <none>     4     8Gi      <none>        <unknown>\n"
        );
        let bare = json!({"metadata": {"name": "n2"}});
        assert_eq!(node_status(&bare), "Unknown");
        assert_eq!(node_roles(&bare), "<none>");
        assert_eq!(
            table(Kind::Node, &[bare], true, false, NOW),
            "NAME   STATUS    ROLES    AGE         VERSION   ADDRESS   POD-CIDR   CPU      MEMORY   ALLOCATABLE   LAST-SEEN\n\
             n2     Unknown   <none>   <unknown>   <none>    <none>    <none>     <none>   <none>   <none>        <unknown>\n"
        );
    }

    #[test]
    fn memory_reads_in_binary_units() {
        let cases = [
            ("24575392Ki", "23Gi"),
            ("8Gi", "8Gi"),
            ("1536Mi", "1.5Gi"),
            ("1000Mi", "1000Mi"),
            ("1023Mi", "1023Mi"),
            ("1024Mi", "1Gi"),
            ("1G", "953Mi"),
            ("512", "512"),
            ("0", "0"),
            ("2Ti", "2Ti"),
            ("lots", "lots"),
            ("-1Gi", "-1Gi"),
        ];
        for (q, want) in cases {
            assert_eq!(human_memory(q), want, "{q}");
        }
    }

    #[test]
    fn selectors_print_like_kubectl() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "legacy", "operator": "DoesNotExist"}]});
        assert_eq!(
            selector_text(&sel).unwrap(),
            "app=web,tier in (a,b),!legacy"
        );
        assert_eq!(selector_text(&json!({})), None);
    }

    #[test]
    fn secrets_are_masked_in_objects_and_lists() {
        let secret = json!({"kind": "Secret", "metadata": {"name": "s"},
            "data": {"password": "aHVudGVyMg==", "bad": "***"},
            "stringData": {"user": "admin"}});
        let mut one = secret.clone();
        mask_secrets(&mut one);
        assert_eq!(one["data"]["password"], "<hidden: 7 bytes>");
        assert_eq!(one["data"]["bad"], "<hidden: 3 bytes>");
        assert_eq!(one["stringData"]["user"], "<hidden: 5 bytes>");
        let mut l = as_list(vec![
            secret,
            json!({"kind": "ConfigMap", "data": {"a": "b"}}),
        ]);
        mask_secrets(&mut l);
        assert_eq!(l["items"][0]["data"]["password"], "<hidden: 7 bytes>");
        assert_eq!(l["items"][1]["data"]["a"], "b");
    }

    #[test]
    fn yaml_and_json_output() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "data": {"k": "aGk="}});
        mask_secrets(&mut s);
        let y = to_yaml(&s).unwrap();
        assert!(y.starts_with("apiVersion: v1\nkind: Secret\n"), "{y}");
        // The masked value must stay a string when read back.
        let back: Value = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(back["data"]["k"], "<hidden: 2 bytes>");
        let j = to_json(&s).unwrap();
        assert!(j.ends_with("}\n"));
        assert_eq!(
            name_line(Kind::Deployment, &json!({"metadata": {"name": "w"}})),
            "deployment.apps/w"
        );
    }
}
