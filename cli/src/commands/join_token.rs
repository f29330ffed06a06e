//! `join-token`: the line to paste on a new machine to join this node's cluster.

use anyhow::Result;

use super::Session;
use crate::args::JoinTokenArgs;
use crate::client::{ClientError, JOIN_TOKEN_PATH};
use crate::output;

pub fn run(s: &Session, a: &JoinTokenArgs) -> Result<()> {
    let answer = s.client.get(JOIN_TOKEN_PATH, &[])?;
    let field = if a.quiet { "token" } else { "command" };
    let Some(value) = output::text(&answer, &format!("/{field}")).filter(|v| !v.is_empty()) else {
        return Err(ClientError::Decode {
            url: s.client.base().to_string(),
            detail: format!("the join-token answer has no {field:?}"),
        }
        .into());
    };
    output::print(&format!("{value}\n"))
}
