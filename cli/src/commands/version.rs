//! `version`: the client's version always, the node's when it answers.

use anyhow::Result;

use crate::args::GlobalArgs;
use crate::output;

pub fn run(g: &GlobalArgs) -> Result<()> {
    // The client line comes first and on its own, so that it is printed even when the
    // settings are broken or the node is down.
    output::print(&format!("Client Version: {}\n", shoal_protocol::VERSION))?;
    let s = super::connect(g)?;
    let v = s.client.version()?;
    output::print(&format!(
        "Server Version: {} (cluster {}, node {})\n",
        v.version, v.cluster_id, v.node_name
    ))
}
