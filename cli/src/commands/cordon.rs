//! `cordon` and `uncordon`: whether new pods may go to a node.

use anyhow::Result;
use serde_json::json;

use super::Session;
use crate::output;

pub fn run(s: &Session, name: &str, cordon: bool) -> Result<()> {
    let action = if cordon { "cordon" } else { "uncordon" };
    s.client
        .post_json(&format!("/shoal/v1/nodes/{name}/{action}"), &json!({}))?;
    let done = if cordon { "cordoned" } else { "uncordoned" };
    output::print(&format!("node/{name} {done}\n"))
}
