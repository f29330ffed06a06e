//! Events in the CLI: the `get events` table (kubectl's columns), `get events -w` (the table,
//! then one line per new event until Ctrl-C), and the `Events:` section that ends `describe`.

use std::io::{BufRead, BufReader};

use anyhow::{Context, Result};
use serde_json::Value;
use shoal_protocol::Kind;

use super::Session;
use crate::args::GetArgs;
use crate::client;
use crate::output::{self, Column, human_duration, int, parse_rfc3339, text};

/// The columns of `get events`, as kubectl's.
pub const COLUMNS: &[Column] = &[
    Column {
        header: "LAST SEEN",
        wide: false,
        cell: last_seen,
    },
    Column {
        header: "TYPE",
        wide: false,
        cell: |v, _| text(v, "/type").unwrap_or_default(),
    },
    Column {
        header: "REASON",
        wide: false,
        cell: |v, _| text(v, "/reason").unwrap_or_default(),
    },
    Column {
        header: "OBJECT",
        wide: false,
        cell: |v, _| object(v),
    },
    Column {
        header: "SOURCE",
        wide: true,
        cell: |v, _| text(v, "/source/host").unwrap_or_default(),
    },
    Column {
        header: "MESSAGE",
        wide: false,
        cell: |v, _| text(v, "/message").unwrap_or_default(),
    },
    Column {
        header: "FIRST SEEN",
        wide: true,
        cell: |v, now| ago(v, "/firstTimestamp", now),
    },
    Column {
        header: "COUNT",
        wide: true,
        cell: |v, _| int(v, "/count").unwrap_or(1).to_string(),
    },
];

fn ago(v: &Value, pointer: &str, now: i64) -> String {
    text(v, pointer)
        .and_then(|t| parse_rfc3339(&t))
        .map_or_else(|| "<unknown>".into(), |t| human_duration(now - t))
}

fn last_seen(v: &Value, now: i64) -> String {
    ago(v, "/lastTimestamp", now)
}

/// `pod/web-0`, as kubectl names the involved object.
fn object(v: &Value) -> String {
    let kind = text(v, "/involvedObject/kind").unwrap_or_default();
    let name = text(v, "/involvedObject/name").unwrap_or_default();
    format!("{}/{name}", kind.to_ascii_lowercase())
}

/// Sorts events by last time seen, then first time seen, then name (kubectl's order).
pub fn sort(events: &mut [Value]) {
    let key = |v: &Value| {
        (
            text(v, "/lastTimestamp").and_then(|t| parse_rfc3339(&t)),
            text(v, "/firstTimestamp").and_then(|t| parse_rfc3339(&t)),
            text(v, "/metadata/name"),
        )
    };
    events.sort_by_key(key);
}

/// The `Events:` section of `describe`: kubectl's layout (Type, Reason, Age, From, Message),
/// or `Events:  <none>`.
pub fn section(events: &[Value], now: i64) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".into();
    }
    let mut sorted = events.to_vec();
    sort(&mut sorted);
    let headers = ["Type", "Reason", "Age", "From", "Message"];
    let head: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let dashes: Vec<String> = headers.iter().map(|h| "-".repeat(h.len())).collect();
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|v| {
            let count = int(v, "/count").unwrap_or(1);
            let age = if count > 1 {
                format!(
                    "{} (x{count} over {})",
                    last_seen(v, now),
                    ago(v, "/firstTimestamp", now)
                )
            } else {
                last_seen(v, now)
            };
            vec![
                text(v, "/type").unwrap_or_default(),
                text(v, "/reason").unwrap_or_default(),
                age,
                text(v, "/source/host").unwrap_or_default(),
                text(v, "/message").unwrap_or_default(),
            ]
        })
        .collect();
    let all: Vec<&[String]> = [head.as_slice(), dashes.as_slice()]
        .into_iter()
        .chain(rows.iter().map(Vec::as_slice))
        .collect();
    let mut out = String::from("Events:\n");
    for line in output::render_rows(&all).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The events about one object, for `describe`.
pub fn about(s: &Session, kind: Kind, obj: &Value) -> Result<Vec<Value>> {
    let name = text(obj, "/metadata/name").unwrap_or_default();
    let mut selector = format!(
        "involvedObject.kind={},involvedObject.name={name}",
        kind.name()
    );
    let path = match text(obj, "/metadata/namespace").filter(|_| kind.namespaced()) {
        Some(ns) => {
            selector.push_str(&format!(",involvedObject.namespace={ns}"));
            client::collection_path(Kind::Event, Some(&ns))
        }
        None => client::collection_path(Kind::Event, None),
    };
    let answer = s.client.get(&path, &[("fieldSelector", &selector)])?;
    Ok(answer
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// `get events -w`: the events now as a table, then a line for each new one (or a new count
/// of one) until the node stops or the user interrupts.
pub fn watch(s: &Session, a: &GetArgs) -> Result<()> {
    let ns = (!a.all_namespaces).then_some(s.namespace.as_str());
    let path = client::collection_path(Kind::Event, ns);
    let resp = s
        .client
        .get_stream(&path, &[("watch", "true"), ("allowWatchBookmarks", "true")])?;
    let wide = a.output == Some(crate::args::OutputFormat::Wide);
    let cols: Vec<&Column> = COLUMNS.iter().filter(|c| wide || !c.wide).collect();
    let mut headers: Vec<String> = Vec::new();
    if a.all_namespaces {
        headers.push("NAMESPACE".into());
    }
    headers.extend(cols.iter().map(|c| c.header.to_string()));
    let row = |v: &Value| -> Vec<String> {
        let mut r = Vec::new();
        if a.all_namespaces {
            r.push(text(v, "/metadata/namespace").unwrap_or_default());
        }
        r.extend(cols.iter().map(|c| (c.cell)(v, output::now())));
        r
    };
    let mut initial: Vec<Value> = Vec::new();
    let mut widths: Option<Vec<usize>> = None;
    for line in BufReader::new(resp).lines() {
        let line = line.map_err(|e| s.client.io_error(&e))?;
        if line.trim().is_empty() {
            continue;
        }
        let ev: Value = serde_json::from_str(&line)
            .with_context(|| format!("the node sent a watch line that is not JSON: {line}"))?;
        let object = ev.get("object").cloned().unwrap_or(Value::Null);
        match (ev.get("type").and_then(Value::as_str), &widths) {
            (Some("BOOKMARK"), None) => {
                sort(&mut initial);
                let rows: Vec<Vec<String>> = initial.iter().map(row).collect();
                let all: Vec<&[String]> = std::iter::once(headers.as_slice())
                    .chain(rows.iter().map(Vec::as_slice))
                    .collect();
                widths = Some(column_widths(&all));
                output::print(&output::render_rows(&all))?;
            }
            (Some("BOOKMARK"), Some(_)) => {}
            (Some("ERROR"), _) => {
                anyhow::bail!(
                    "the node ended the watch: {}",
                    text(&object, "/message").unwrap_or_default()
                );
            }
            (Some(_), None) => initial.push(object),
            (Some(_), Some(w)) => output::print(&padded(&row(&object), w))?,
            (None, _) => {}
        }
    }
    Ok(())
}

fn column_widths(rows: &[&[String]]) -> Vec<usize> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        if widths.len() < row.len() {
            widths.resize(row.len(), 0);
        }
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    widths
}

/// One row with the table's column widths (a longer cell pushes the rest right).
fn padded(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in row.iter().enumerate() {
        line.push_str(cell);
        if i + 1 < row.len() {
            let w = widths.get(i).copied().unwrap_or(0);
            line.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()) + 3,
            ));
        }
    }
    let mut line = line.trim_end().to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_714_557_600; // 2024-05-01T10:00:00Z

    fn event(reason: &str, kind: &str, name: &str, last: &str, count: i64) -> Value {
        json!({
            "kind": "Event",
            "metadata": {"name": format!("{name}.1"), "namespace": "default"},
            "type": "Normal",
            "reason": reason,
            "message": format!("{reason} {name}"),
            "involvedObject": {"kind": kind, "name": name},
            "source": {"host": "n1"},
            "firstTimestamp": "2024-05-01T09:50:00Z",
            "lastTimestamp": last,
            "count": count,
        })
    }

    #[test]
    fn the_table_has_kubectls_columns_sorted_by_last_seen() {
        let mut events = vec![
            event("Rescheduled", "Pod", "web-1", "2024-05-01T09:59:30Z", 1),
            event("Scheduled", "Pod", "web-0", "2024-05-01T09:55:00Z", 1),
        ];
        sort(&mut events);
        let t = output::table(Kind::Event, &events, false, false, NOW);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
        assert!(lines[1].starts_with("5m "), "{t}");
        assert!(lines[1].contains("pod/web-0"), "{t}");
        assert!(lines[2].starts_with("30s "), "{t}");
        assert!(lines[2].contains("Rescheduled"), "{t}");
    }

    #[test]
    fn describe_ends_with_the_objects_events() {
        assert_eq!(section(&[], NOW), "Events:  <none>\n");
        let s = section(
            &[event("BackOff", "Pod", "web-0", "2024-05-01T09:59:00Z", 3)],
            NOW,
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "Events:");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["Type", "Reason", "Age", "From", "Message"]
        );
        assert!(lines[2].trim_start().starts_with("----"));
        assert!(lines[3].contains("60s (x3 over 10m)"), "{s}");
        assert!(lines[3].contains("n1"), "{s}");
    }

    #[test]
    fn watched_rows_keep_the_tables_widths() {
        let w = [5, 4];
        assert_eq!(
            padded(&["a".into(), "b".into(), "c".into()], &w),
            "a       b      c\n"
        );
    }
}
