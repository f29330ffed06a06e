//! `cordon`, `uncordon` and `drain`: whether new pods may go to a node, and moving its pods
//! away.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::Session;
use crate::args::DrainArgs;
use crate::output;

pub fn run(s: &Session, name: &str, cordon: bool) -> Result<()> {
    let action = if cordon { "cordon" } else { "uncordon" };
    s.client
        .post_json(&format!("/shoal/v1/nodes/{name}/{action}"), &json!({}))?;
    let done = if cordon { "cordoned" } else { "uncordoned" };
    output::print(&format!("node/{name} {done}\n"))
}

/// Cordons the node, asks the cluster to move its pods, then waits until none is left on it,
/// saying what it waits for whenever that changes.
pub fn drain(s: &Session, a: &DrainArgs) -> Result<()> {
    let force = if a.force { "?force=true" } else { "" };
    s.client.post_json(
        &format!("/shoal/v1/nodes/{}/drain{force}", a.name),
        &json!({}),
    )?;
    output::print(&format!("node/{} cordoned\n", a.name))?;
    let started = Instant::now();
    let mut last: Option<Vec<String>> = None;
    loop {
        let list = s.client.get("/api/v1/pods", &[])?;
        let left = pods_on(&list, &a.name);
        if left.is_empty() {
            return output::print(&format!("node/{} drained\n", a.name));
        }
        if last.as_ref() != Some(&left) {
            output::print(&format!(
                "waiting for {} pod(s) to leave {}: {}\n",
                left.len(),
                a.name,
                left.join(", ")
            ))?;
            last = Some(left.clone());
        }
        if started.elapsed() >= Duration::from_secs(a.timeout) {
            bail!(
                "timed out after {}s: {} pod(s) still on {}: {} (the drain goes on; \
                 --force moves them regardless of maxUnavailable)",
                a.timeout,
                left.len(),
                a.name,
                left.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `namespace/name` of the pods of a pod list assigned to `node`, sorted.
fn pods_on(list: &Value, node: &str) -> Vec<String> {
    let mut out: Vec<String> = list["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap_or("default"),
                p["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_on_a_node() {
        let list = json!({"items": [
            {"metadata": {"namespace": "default", "name": "b"}, "spec": {"nodeName": "n1"}},
            {"metadata": {"namespace": "web", "name": "a"}, "spec": {"nodeName": "n1"}},
            {"metadata": {"namespace": "default", "name": "c"}, "spec": {"nodeName": "n2"}},
            {"metadata": {"namespace": "default", "name": "d"}, "spec": {}},
        ]});
        assert_eq!(pods_on(&list, "n1"), ["default/b", "web/a"]);
        assert!(pods_on(&list, "n3").is_empty());
    }
}
