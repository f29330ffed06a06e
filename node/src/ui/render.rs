//! HTML of the UI, as pure functions from the API's JSON objects to markup (`maud` escapes
//! every value it inserts, so names and labels from manifests cannot inject markup).

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use shoal_protocol::time::parse_rfc3339;

use super::{SCRIPT_PATH, STYLE_PATH};

/// What every page of a logged-in user shows besides its content.
pub struct Frame<'a> {
    /// The node that answers.
    pub node: &'a str,
    /// The form token for the logout button and the page's forms.
    pub form_token: &'a str,
}

/// The navigation: path, label.
const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/ui/workloads", "Workloads"),
    ("/ui/pods", "Pods"),
    ("/ui/services", "Services"),
    ("/ui/config", "Config"),
    ("/ui/events", "Events"),
    ("/ui/apply", "Apply"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · shoal" }
            link rel="stylesheet" href=(STYLE_PATH);
            script src=(SCRIPT_PATH) defer {}
        }
    }
}

/// A whole page: header with navigation and logout, the title, then `body`.
pub fn page(frame: &Frame, active: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    a.brand href="/" { "shoal" }
                    span.node { "node " (frame.node) }
                    nav {
                        @for (path, label) in NAV {
                            @if *path == active {
                                a.active href=(path) aria-current="page" { (label) }
                            } @else {
                                a href=(path) { (label) }
                            }
                        }
                    }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(frame.form_token);
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Content that the page's script reloads from `src` every 2 s.
pub fn live(src: &str, body: Markup) -> Markup {
    html! { div.live data-src=(src) { (body) } }
}

/// A page for a refusal or a result outside the logged-in frame.
pub fn message_page(title: &str, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.narrow {
                main {
                    h1 { (title) }
                    p.error role="alert" { (message) }
                    p { a href="/" { "Back to the overview" } }
                }
            }
        }
    }
}

/// The login form, with a message when a login was refused.
pub fn login_page(message: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in"))
            body.narrow {
                main {
                    h1 { "shoal" }
                    @if let Some(m) = message {
                        p #login-error .error role="alert" { (m) }
                    }
                    form #login method="post" action="/login" {
                        label for="token" { "Admin token" }
                        input #token type="password" name="token" autocomplete="current-password"
                            required autofocus;
                        button #login-button type="submit" { "Log in" }
                    }
                    p.hint {
                        "The token is in the file " code { "admin.token" }
                        " in a node's data directory. It is kept in a cookie that scripts cannot \
                         read, until the browser closes."
                    }
                }
            }
        }
    }
}

/// A success or error line above a page's content.
pub fn notice(ok: bool, text: &str) -> Markup {
    html! {
        @if ok { p.notice.ok role="status" { (text) } }
        @else { p.notice.error role="alert" { (text) } }
    }
}

/// An API error's message and field causes.
pub fn api_error(status: &shoal_protocol::api::Status) -> Markup {
    html! {
        div.notice.error role="alert" {
            p { (status.message) }
            @if let Some(d) = &status.details && !d.causes.is_empty() {
                ul {
                    @for c in &d.causes {
                        li {
                            @if !c.field.is_empty() { code { (c.field) } ": " }
                            (c.message)
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the API's JSON

/// The text at `ptr`: a string as it is, a number or bool printed, else empty.
pub fn text(v: &Value, ptr: &str) -> String {
    match v.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn int(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

fn list<'v>(v: &'v Value, ptr: &str) -> &'v [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The keys of the maps at `ptrs`, sorted, each once.
fn keys(v: &Value, ptrs: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = ptrs
        .iter()
        .filter_map(|p| v.pointer(p).and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Percent-encodes `s` for a URL path segment or query value.
pub fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// kubectl's ages: `45s`, `3m20s`, `5h`, `2d3h`.
pub fn age_of(created: &str, now: i64) -> String {
    let Some(t) = parse_rfc3339(created) else {
        return "?".into();
    };
    let s = now - t;
    match s {
        _ if s < 0 => "0s".into(),
        0..120 => format!("{s}s"),
        120..600 if s % 60 != 0 => format!("{}m{}s", s / 60, s % 60),
        120..10_800 => format!("{}m", s / 60),
        10_800..28_800 if s % 3600 / 60 != 0 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        10_800..172_800 => format!("{}h", s / 3600),
        172_800..691_200 if s % 86_400 / 3600 != 0 => {
            format!("{}d{}h", s / 86_400, s % 86_400 / 3600)
        }
        _ => format!("{}d", s / 86_400),
    }
}

fn age(v: &Value, now: i64) -> String {
    age_of(&text(v, "/metadata/creationTimestamp"), now)
}

fn ns_name(v: &Value) -> (String, String) {
    (text(v, "/metadata/namespace"), text(v, "/metadata/name"))
}

/// A pod's status as `kubectl get pods` shows it: a waiting or terminated container's reason,
/// else the pod's reason or phase.
pub fn pod_status(v: &Value) -> String {
    if v.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut status = Some(text(v, "/status/reason"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text(v, "/status/phase"));
    for c in list(v, "/status/containerStatuses").iter().rev() {
        let waiting = text(c, "/state/waiting/reason");
        let terminated = text(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            status = waiting;
        } else if !terminated.is_empty() {
            status = terminated;
        }
    }
    if status.is_empty() {
        "Pending".into()
    } else {
        status
    }
}

/// Ready containers of a pod over its containers: `1/1`.
pub fn pod_ready(v: &Value) -> String {
    let statuses = list(v, "/status/containerStatuses");
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let total = list(v, "/spec/containers").len().max(statuses.len());
    format!("{ready}/{total}")
}

fn pod_restarts(v: &Value) -> i64 {
    list(v, "/status/containerStatuses")
        .iter()
        .filter_map(|c| int(c, "/restartCount"))
        .sum()
}

/// A CSS class for a status word: green, amber or red.
fn tone(status: &str) -> &'static str {
    match status {
        "Running" | "Succeeded" | "Completed" | "alive" | "Alive" | "True" | "Normal" => "good",
        "Pending" | "ContainerCreating" | "PodInitializing" | "Terminating" | "suspect"
        | "Suspect" | "left" | "Unknown" => "warn",
        _ => "bad",
    }
}

fn memory_text(quantity: &str) -> String {
    match quantity
        .strip_suffix("Ki")
        .and_then(|k| k.parse::<u64>().ok())
    {
        Some(kib) => format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)),
        None => quantity.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Fragments

/// The overview: who answers, this node's state digest, role holders and every node.
/// `status` is the API's `/shoal/v1/status`, `nodes` its Node objects.
pub fn overview(status: &Value, nodes: &[Value], now: i64) -> Markup {
    let this = text(status, "/node");
    let members = list(status, "/members");
    let alive = members
        .iter()
        .filter(|m| text(m, "/state") == "alive")
        .count();
    let digest = text(status, "/digest");
    html! {
        dl.summary {
            dt { "Cluster" } dd { code { (text(status, "/clusterId")) } }
            dt { "Nodes" } dd #node-count { (members.len()) " (" (alive) " alive)" }
            dt { "State on this node" }
            dd {
                code title=(digest) { (digest.get(..16).unwrap_or(&digest)) }
                " · " (text(status, "/objects")) " objects"
            }
            dt { "Agreement" }
            dd #agreement {
                @let agreeing = text(status, "/agreement/agreeing");
                @let of = text(status, "/agreement/alive");
                @if status.pointer("/agreement/all").and_then(Value::as_bool) == Some(true) {
                    span.good { "all " (of) " alive nodes hold this state" }
                } @else {
                    span.bad { (agreeing) " of " (of) " alive nodes hold this state" }
                    " (converging: changes reach every node within seconds)"
                }
            }
            @for r in list(status, "/roles") {
                dt { "Role " (text(r, "/role")) }
                dd {
                    @match r.get("holder").and_then(Value::as_str) {
                        Some(h) => { (h) " (epoch " (text(r, "/epoch")) ")" }
                        None => { span.bad { "nobody" } }
                    }
                }
            }
        }
        p.hint {
            "Nodes hold the same state exactly when their digests are equal; each node gossips "
            "its own, shown per node below."
        }
        div.scroll {
            table #nodes {
                thead { tr {
                    th { "Name" } th { "State" } th { "Roles" } th { "Address" } th { "CPUs" }
                    th { "Memory" } th { "Schedulable" } th { "Version" } th { "Same state" }
                    th { "Last seen" }
                } }
                tbody {
                    @for m in members {
                        @let name = text(m, "/name");
                        @let node = nodes.iter().find(|n| text(n, "/metadata/name") == name);
                        @let state = text(m, "/state");
                        @let roles: Vec<String> = list(m, "/roles").iter()
                            .filter_map(|r| r.as_str().map(str::to_string)).collect();
                        tr {
                            td {
                                (name)
                                @if name == this { " " span.tag { "this node" } }
                            }
                            td {
                                span class=(tone(&state)) { (state) }
                                // What the node says is wrong with it (its engine, a failed
                                // task), as `get nodes` lists it: the type, the message on hover.
                                @for c in node.map(|n| list(n, "/status/conditions")).unwrap_or_default() {
                                    @if text(c, "/type") != "Ready" && text(c, "/status") == "True" {
                                        " " span.bad.condition title=(text(c, "/message")) { (text(c, "/type")) }
                                    }
                                }
                            }
                            td { (roles.join(", ")) }
                            td { (text(m, "/address")) }
                            td { (node.map(|n| text(n, "/status/capacity/cpu")).unwrap_or_default()) }
                            td { (node.map(|n| memory_text(&text(n, "/status/capacity/memory"))).unwrap_or_default()) }
                            td {
                                @if node.is_some_and(|n| n.pointer("/spec/unschedulable") == Some(&Value::Bool(true))) {
                                    span.warn { "cordoned" }
                                } @else { "yes" }
                            }
                            td { (text(m, "/version")) }
                            td {
                                @let theirs = text(m, "/digest");
                                @if theirs.is_empty() { "–" }
                                @else if theirs == digest || name == this { span.good title=(theirs) { "same" } }
                                @else { span.bad title=(theirs) { (theirs.get(..8).unwrap_or(&theirs)) } }
                            }
                            td { @let seen = text(m, "/lastSeen"); @if seen.is_empty() { "never" } @else { (age_of(&seen, now)) " ago" } }
                        }
                    }
                }
            }
        }
    }
}

fn images(v: &Value) -> String {
    list(v, "/spec/template/spec/containers")
        .iter()
        .map(|c| text(c, "/image"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn delete_link(plural: &str, ns: &str, name: &str) -> Markup {
    let href = format!(
        "/ui/delete?kind={}&namespace={}&name={}",
        url_part(plural),
        url_part(ns),
        url_part(name)
    );
    html! { a.danger.delete href=(href) { "Delete" } }
}

/// Deployments and StatefulSets: ready over desired, the rollout, and scale and delete.
pub fn workloads(
    deployments: &[Value],
    statefulsets: &[Value],
    form_token: &str,
    now: i64,
) -> Markup {
    let rows = deployments
        .iter()
        .map(|d| ("deployments", "Deployment", d))
        .chain(
            statefulsets
                .iter()
                .map(|s| ("statefulsets", "StatefulSet", s)),
        );
    html! {
        @if deployments.is_empty() && statefulsets.is_empty() {
            p.empty { "No Deployments or StatefulSets. " a href="/ui/apply" { "Apply a manifest." } }
        } @else {
            div.scroll {
                table #workloads {
                    thead { tr {
                        th { "Kind" } th { "Namespace" } th { "Name" } th { "Ready" }
                        th { "Rollout" } th { "Images" } th { "Age" } th { "Scale" } th {}
                    } }
                    tbody {
                        @for (plural, kind, w) in rows {
                            @let (ns, name) = ns_name(w);
                            @let desired = int(w, "/spec/replicas").unwrap_or(1);
                            @let ready = int(w, "/status/readyReplicas").unwrap_or(0);
                            @let updated = int(w, "/status/updatedReplicas").unwrap_or(0);
                            @let available = int(w, "/status/availableReplicas").unwrap_or(ready);
                            tr data-name=(name) {
                                td { (kind) }
                                td { (ns) }
                                td.name { (name) }
                                td { span.ready class=(if ready >= desired { "good" } else { "warn" }) { (ready) "/" (desired) } }
                                td.rollout {
                                    progress value=(updated.min(desired)) max=(desired.max(1)) {}
                                    " " (updated) " up to date, " (available) " available"
                                    @for c in list(w, "/status/conditions") {
                                        @if text(c, "/type") == "Progressing" && !text(c, "/message").is_empty() {
                                            br; small { (text(c, "/message")) }
                                        }
                                    }
                                }
                                td { (images(w)) }
                                td { (age(w, now)) }
                                td {
                                    form.scale method="post" action="/ui/scale" {
                                        input type="hidden" name="csrf" value=(form_token);
                                        input type="hidden" name="kind" value=(plural);
                                        input type="hidden" name="namespace" value=(ns);
                                        input type="hidden" name="name" value=(name);
                                        input type="number" name="replicas" min="0" max="1000"
                                            value=(desired) aria-label={ "replicas of " (name) };
                                        button type="submit" { "Scale" }
                                    }
                                }
                                td { (delete_link(plural, &ns, &name)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Pods: node, status, restarts, age, and a link to their logs.
pub fn pods(pods: &[Value], now: i64) -> Markup {
    html! {
        @if pods.is_empty() {
            p.empty { "No pods." }
        } @else {
            div.scroll {
                table #pods {
                    thead { tr {
                        th { "Namespace" } th { "Name" } th { "Ready" } th { "Status" }
                        th { "Restarts" } th { "Node" } th { "IP" } th { "Age" } th {}
                    } }
                    tbody {
                        @for p in pods {
                            @let (ns, name) = ns_name(p);
                            @let status = pod_status(p);
                            @let logs = format!("/ui/pods/{}/{}/logs", url_part(&ns), url_part(&name));
                            tr data-name=(name) {
                                td { (ns) }
                                td.name { (name) }
                                td.pod-ready { (pod_ready(p)) }
                                td.pod-status { span class=(tone(&status)) { (status) } }
                                td { (pod_restarts(p)) }
                                td.pod-node { (text(p, "/spec/nodeName")) }
                                td { (text(p, "/status/podIP")) }
                                td { (age(p, now)) }
                                td { a.logs href=(logs) { "Logs" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn service_ports(svc: &Value) -> String {
    list(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = text(p, "/port");
            let target = text(p, "/targetPort");
            let proto = Some(text(p, "/protocol"))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "TCP".into());
            let mut s = if target.is_empty() || target == port {
                format!("{port}/{proto}")
            } else {
                format!("{port}→{target}/{proto}")
            };
            let node_port = text(p, "/nodePort");
            if !node_port.is_empty() {
                s.push_str(&format!(" (node port {node_port})"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Services: DNS names, ports and endpoints (`endpoints` are the API's Endpoints objects).
pub fn services(services: &[Value], endpoints: &[Value]) -> Markup {
    html! {
        @if services.is_empty() {
            p.empty { "No Services." }
        } @else {
            div.scroll {
                table #services {
                    thead { tr {
                        th { "Namespace" } th { "Name" } th { "Type" } th { "DNS name" }
                        th { "Ports" } th { "Endpoints" } th {}
                    } }
                    tbody {
                        @for s in services {
                            @let (ns, name) = ns_name(s);
                            @let eps = endpoints.iter().find(|e| ns_name(e) == (ns.clone(), name.clone()));
                            tr data-name=(name) {
                                td { (ns) }
                                td.name { (name) }
                                td { (Some(text(s, "/spec/type")).filter(|t| !t.is_empty()).unwrap_or_else(|| "ClusterIP".into())) }
                                td { code { (text(s, "/status/dnsName")) } }
                                td { (service_ports(s)) }
                                td {
                                    (text(s, "/status/readyEndpoints")) "/" (text(s, "/status/endpoints")) " ready"
                                    @if let Some(e) = eps {
                                        ul.endpoints {
                                            @for subset in list(e, "/subsets") {
                                                @for a in list(subset, "/addresses") {
                                                    li { (text(a, "/targetRef/name")) " " small { (text(a, "/ip")) " on " (text(a, "/nodeName")) } }
                                                }
                                                @for a in list(subset, "/notReadyAddresses") {
                                                    li.warn { (text(a, "/targetRef/name")) " (not ready)" }
                                                }
                                            }
                                        }
                                    }
                                }
                                td { (delete_link("services", &ns, &name)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// ConfigMaps and Secrets: their keys only. A Secret's values never reach the page.
pub fn config(configmaps: &[Value], secrets: &[Value], now: i64) -> Markup {
    html! {
        h2 { "ConfigMaps" }
        @if configmaps.is_empty() { p.empty { "No ConfigMaps." } } @else {
            div.scroll {
                table #configmaps {
                    thead { tr { th { "Namespace" } th { "Name" } th { "Keys" } th { "Age" } th {} } }
                    tbody {
                        @for c in configmaps {
                            @let (ns, name) = ns_name(c);
                            @let ks = keys(c, &["/data", "/binaryData"]);
                            tr data-name=(name) {
                                td { (ns) } td.name { (name) }
                                td { @for k in &ks { code { (k) } " " } }
                                td { (age(c, now)) }
                                td { (delete_link("configmaps", &ns, &name)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Secrets" }
        @if secrets.is_empty() { p.empty { "No Secrets." } } @else {
            div.scroll {
                table #secrets {
                    thead { tr { th { "Namespace" } th { "Name" } th { "Type" } th { "Keys (values hidden)" } th { "Age" } th {} } }
                    tbody {
                        @for s in secrets {
                            @let (ns, name) = ns_name(s);
                            @let ks = keys(s, &["/data", "/stringData"]);
                            tr data-name=(name) {
                                td { (ns) } td.name { (name) }
                                td { (Some(text(s, "/type")).filter(|t| !t.is_empty()).unwrap_or_else(|| "Opaque".into())) }
                                td { @for k in &ks { code { (k) } " " span.hidden { "••••" } " " } }
                                td { (age(s, now)) }
                                td { (delete_link("secrets", &ns, &name)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Cluster events, newest first (`events` in Kubernetes' `v1/Event` shape).
pub fn events(events: &[Value], now: i64) -> Markup {
    html! {
        @if events.is_empty() {
            p.empty { "No events yet." }
        } @else {
            div.scroll {
                table #events {
                    thead { tr {
                        th { "Last seen" } th { "Type" } th { "Reason" } th { "Object" }
                        th { "Message" } th { "Count" } th { "Node" }
                    } }
                    tbody {
                        @for e in events {
                            @let type_ = text(e, "/type");
                            @let last = Some(text(e, "/lastTimestamp")).filter(|t| !t.is_empty())
                                .unwrap_or_else(|| text(e, "/metadata/creationTimestamp"));
                            @let ns = text(e, "/involvedObject/namespace");
                            tr {
                                td { (age_of(&last, now)) " ago" }
                                td { span class=(tone(&type_)) { (type_) } }
                                td { (text(e, "/reason")) }
                                td {
                                    (text(e, "/involvedObject/kind").to_lowercase()) "/"
                                    @if !ns.is_empty() { (ns) "/" }
                                    (text(e, "/involvedObject/name"))
                                }
                                td { (text(e, "/message")) }
                                td { (text(e, "/count")) }
                                td { (text(e, "/source/host")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A container's log, or why it cannot be shown.
pub fn logs(result: Result<&str, &str>) -> Markup {
    html! {
        @match result {
            Ok(text) if text.is_empty() => { p.empty #logs-empty { "The container has written nothing yet." } }
            Ok(text) => { pre #logs { (text) } }
            Err(why) => { p.notice.error #logs-error role="alert" { (why) } }
        }
    }
}

/// The apply form, with the manifest kept after a failed apply.
pub fn apply_form(form_token: &str, manifest: &str) -> Markup {
    html! {
        form #apply method="post" action="/ui/apply" {
            input type="hidden" name="csrf" value=(form_token);
            label for="manifest" { "Manifest (YAML or JSON; several documents separated by " code { "---" } ")" }
            textarea #manifest name="manifest" rows="18" spellcheck="false" required { (manifest) }
            button #apply-button type="submit" { "Apply" }
        }
        p.hint { "Objects without a namespace go to " code { "default" } ". Everything in the manifest is applied, or nothing." }
    }
}

/// What an apply did: one line per object.
pub fn apply_result(items: &[shoal_protocol::api::ApplyResult]) -> Markup {
    html! {
        div.notice.ok role="status" #apply-result {
            p { "Applied:" }
            ul {
                @for r in items {
                    li {
                        (r.kind.to_lowercase()) "/" (r.name)
                        @if let Some(ns) = &r.namespace { " in " (ns) }
                        " " strong { (r.action.as_str()) }
                    }
                }
            }
        }
    }
}

/// The confirmation step of a delete (it works without JavaScript).
pub fn delete_confirm(
    form_token: &str,
    plural: &str,
    kind: &str,
    ns: &str,
    name: &str,
    back: &str,
) -> Markup {
    html! {
        p { "Delete " (kind) " " strong { (name) } " in namespace " strong { (ns) } "? This cannot be undone." }
        form #delete method="post" action="/ui/delete" {
            input type="hidden" name="csrf" value=(form_token);
            input type="hidden" name="kind" value=(plural);
            input type="hidden" name="namespace" value=(ns);
            input type="hidden" name="name" value=(name);
            button.danger #delete-button type="submit" { "Delete" }
            " "
            a href=(back) { "Cancel" }
        }
    }
}
