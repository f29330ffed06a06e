//! `describe`: the readable view of named objects, or of every object listed.

use anyhow::Result;

use super::{Session, fetch, no_resources, parse_kind};
use crate::Reported;
use crate::args::DescribeArgs;
use crate::describe::{Options, describe};
use crate::output;

pub fn run(s: &Session, a: &DescribeArgs) -> Result<()> {
    let kind = parse_kind(&a.kind)?;
    let fetched = fetch(s, kind, &a.names, a.selector.as_deref(), a.all_namespaces)?;
    if fetched.objects.is_empty() && a.names.is_empty() {
        no_resources(kind, &s.namespace, a.all_namespaces);
    }
    let opts = Options {
        show_secrets: s.show_secrets,
        now: output::now(),
    };
    let text = fetched
        .objects
        .iter()
        .map(|o| {
            let mut text = describe(kind, o, opts);
            if kind != shoal_protocol::Kind::Event {
                // A node without events (an older version) still describes the object.
                match super::events::about(s, kind, o) {
                    Ok(events) => text.push_str(&super::events::section(&events, opts.now)),
                    Err(e) => text.push_str(&format!("Events:  <unavailable: {e}>\n")),
                }
            }
            text
        })
        .collect::<Vec<_>>()
        .join("\n");
    output::print(&text)?;
    if fetched.missing {
        return Err(Reported.into());
    }
    Ok(())
}
