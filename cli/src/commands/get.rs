//! `get`: tables like kubectl's, or the objects as YAML, JSON or names.

use anyhow::Result;
use serde_json::Value;

use super::{Session, fetch, no_resources, parse_kind};
use crate::Reported;
use crate::args::{GetArgs, OutputFormat};
use crate::output;

pub fn run(s: &Session, a: &GetArgs) -> Result<()> {
    if super::image::is_images(&a.kind) {
        return super::image::get(s, a);
    }
    let kind = parse_kind(&a.kind)?;
    if a.watch {
        if kind != shoal_protocol::Kind::Event || !a.names.is_empty() {
            anyhow::bail!("--watch is supported for `get events` only (without names)");
        }
        return super::events::watch(s, a);
    }
    let fetched = fetch(s, kind, &a.names, a.selector.as_deref(), a.all_namespaces)?;
    let mut objects = fetched.objects;
    if kind == shoal_protocol::Kind::Event {
        super::events::sort(&mut objects);
    }
    let listing = a.names.is_empty();
    let text = match a.output {
        None | Some(OutputFormat::Wide) => {
            if objects.is_empty() {
                if listing {
                    no_resources(kind, &s.namespace, a.all_namespaces);
                }
                String::new()
            } else {
                let with_namespace = a.all_namespaces && kind.namespaced();
                let wide = a.output == Some(OutputFormat::Wide);
                output::table(kind, &objects, wide, with_namespace, output::now())
            }
        }
        Some(OutputFormat::Name) => {
            if objects.is_empty() && listing {
                no_resources(kind, &s.namespace, a.all_namespaces);
            }
            objects
                .iter()
                .map(|o| output::name_line(kind, o) + "\n")
                .collect()
        }
        Some(format @ (OutputFormat::Yaml | OutputFormat::Json)) => {
            // One named object prints as itself; anything else as a List, as kubectl does.
            let single = a.names.len() == 1;
            let mut value = match (single, objects.len()) {
                (true, 0) => Value::Null,
                (true, _) => objects.into_iter().next().unwrap_or(Value::Null),
                _ => output::as_list(objects),
            };
            if !s.show_secrets {
                output::mask_secrets(&mut value);
            }
            match (value.is_null(), format) {
                (true, _) => String::new(),
                (false, OutputFormat::Yaml) => output::to_yaml(&value)?,
                (false, _) => output::to_json(&value)?,
            }
        }
    };
    output::print(&text)?;
    if fetched.missing {
        return Err(Reported.into());
    }
    Ok(())
}
