//! `status`: the node's own view of the cluster: who it is, the digest of its copy of the
//! state (equal digests on two nodes mean they hold the same state), who holds each role, and
//! the members it knows with their gossip state.

use anyhow::Result;
use serde_json::Value;

use super::Session;
use crate::args::{RawFormat, StatusArgs};
use crate::client::STATUS_PATH;
use crate::output::{self, int, list, render_table, roles_cell, since, text};

pub fn run(s: &Session, a: &StatusArgs) -> Result<()> {
    let answer = s.client.get(STATUS_PATH, &[])?;
    let out = match a.output {
        None => render(&answer, output::now()),
        Some(RawFormat::Yaml) => output::to_yaml(&answer)?,
        Some(RawFormat::Json) => output::to_json(&answer)?,
    };
    output::print(&out)
}

/// The summary: a few `Key:  value` lines, then the members' table (sorted by name).
pub fn render(v: &Value, now: i64) -> String {
    let or_unknown = |p: &str| text(v, p).unwrap_or_else(|| "<unknown>".into());
    let node = match text(v, "/peerId") {
        Some(peer) => format!("{} (peer {peer})", or_unknown("/node")),
        None => or_unknown("/node"),
    };
    let digest = match int(v, "/objects") {
        Some(1) => format!("{} (1 object)", or_unknown("/digest")),
        Some(n) => format!("{} ({n} objects)", or_unknown("/digest")),
        None => or_unknown("/digest"),
    };
    let roles: Vec<String> = list(v, "/roles")
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                text(r, "/role").unwrap_or_default(),
                text(r, "/holder").unwrap_or_else(|| "<none>".into())
            )
        })
        .collect();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(", ")
    };
    let agreement = match (int(v, "/agreement/agreeing"), int(v, "/agreement/alive")) {
        (Some(a), Some(n)) if a == n => format!("all {n} alive nodes hold this state"),
        (Some(a), Some(n)) => format!("{a} of {n} alive nodes hold this state (converging)"),
        _ => "<unknown>".into(),
    };
    let fields = [
        ("Node", node),
        ("Cluster", or_unknown("/clusterId")),
        ("Version", or_unknown("/shoalVersion")),
        ("Digest", digest),
        ("Agreement", agreement),
        ("Roles", roles),
    ];
    let mut out: String = fields
        .iter()
        .map(|(k, val)| format!("{:<12}{val}\n", format!("{k}:")))
        .collect();

    let mut members: Vec<&Value> = list(v, "/members").iter().collect();
    members.sort_by_key(|m| text(m, "/name").unwrap_or_default());
    if !members.is_empty() {
        let or_none = |m: &Value, p: &str| {
            text(m, p)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into())
        };
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                vec![
                    or_none(m, "/name"),
                    or_none(m, "/state"),
                    or_none(m, "/address"),
                    or_none(m, "/version"),
                    since(text(m, "/lastSeen"), now),
                    roles_cell(list(m, "/roles")),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&render_table(
            &[
                "MEMBER",
                "STATE",
                "ADDRESS",
                "VERSION",
                "LAST-SEEN",
                "ROLES",
            ],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_714_557_600; // 2024-05-01T10:00:00Z

    #[test]
    fn summary_and_members() {
        let v = json!({
            "node": "n1", "clusterId": "3f2a9c", "peerId": "12D3KooWabc",
            "shoalVersion": "0.1.0", "digest": "9b1ce0", "objects": 12,
            "agreement": {"alive": 3, "agreeing": 2, "all": false},
            "members": [
                {"name": "n3", "state": "dead", "address": "127.0.0.4", "version": "0.1.0",
                 "lastSeen": null, "roles": []},
                {"name": "n1", "state": "alive", "address": "127.0.0.2", "version": "0.1.0",
                 "lastSeen": "2024-05-01T10:00:00Z", "roles": ["controller"]},
                {"name": "n2", "state": "suspect", "address": "127.0.0.3", "version": "0.1.0",
                 "lastSeen": "2024-05-01T09:59:48Z", "roles": ["scheduler", "controller"]}],
            "roles": [{"role": "controller", "holder": "n1"},
                      {"role": "scheduler", "holder": null}]
        });
        assert_eq!(
            render(&v, NOW),
            "\
Node:       n1 (peer 12D3KooWabc)
Cluster:    3f2a9c
Version:    0.1.0
Digest:     9b1ce0 (12 objects)
Agreement:  2 of 3 alive nodes hold this state (converging)
Roles:      controller=n1, scheduler=<none>

MEMBER   STATE     ADDRESS     VERSION   LAST-SEEN   ROLES
n1       alive     127.0.0.2   0.1.0     0s          controller
n2       suspect   127.0.0.3   0.1.0     12s         controller,scheduler
n3       dead      127.0.0.4   0.1.0     <unknown>   <none>
"
        );
    }

    #[test]
    fn missing_fields_do_not_break_the_summary() {
        let v = json!({"node": "n1", "objects": 1, "digest": "ab", "roles": []});
        assert_eq!(
            render(&v, NOW),
            "\
Node:       n1
Cluster:    <unknown>
Version:    <unknown>
Digest:     ab (1 object)
Agreement:  <unknown>
Roles:      <none>
"
        );
    }
}
