//! `delete`: by kind and names, by label selector, or by the objects of manifests.

use anyhow::{Result, bail};
use shoal_protocol::Kind;

use super::manifests::{self, ObjectRef};
use super::{Session, list_items, no_resources, parse_kind};
use crate::Reported;
use crate::args::DeleteArgs;
use crate::client;
use crate::output;

pub fn run(s: &Session, a: &DeleteArgs) -> Result<()> {
    let targets: Vec<ObjectRef> = if !a.files.files.is_empty() {
        let parsed = manifests::load(&a.files, &s.namespace, s.namespace_explicit)?;
        let objects: Vec<ObjectRef> = parsed.into_iter().flat_map(|p| p.objects).collect();
        if objects.is_empty() {
            bail!("no objects passed to delete");
        }
        objects
    } else {
        let Some(kind_name) = &a.kind else {
            bail!("give a kind and names, a kind and -l SELECTOR, or -f FILE");
        };
        let kind = parse_kind(kind_name)?;
        match (&a.selector, a.names.is_empty()) {
            (Some(_), false) => bail!("name cannot be provided when a selector is specified"),
            (None, true) => {
                bail!("resource name may not be empty: give NAME..., -l SELECTOR or -f FILE")
            }
            (Some(sel), true) => selected(s, kind, sel)?,
            (None, false) => a
                .names
                .iter()
                .map(|name| ObjectRef {
                    kind,
                    name: name.clone(),
                    namespace: None,
                })
                .collect(),
        }
    };
    let mut failed = false;
    for t in &targets {
        let ns = t
            .kind
            .namespaced()
            .then(|| t.namespace.as_deref().unwrap_or(&s.namespace));
        match s.client.delete(&client::object_path(t.kind, ns, &t.name)) {
            Ok(_) => output::print(&format!("{} \"{}\" deleted\n", t.kind.display(), t.name))?,
            Err(e) if e.is_not_found() => {
                if !a.ignore_not_found {
                    eprintln!("{}", client::not_found(t.kind, &t.name));
                    failed = true;
                }
            }
            // The node's message says why (a node that is still alive) and what to do.
            Err(e) if e.is_conflict() => {
                eprintln!("{e}");
                failed = true;
            }
            // Anything else (unreachable node, refused token) would repeat for every object.
            Err(e) => return Err(e.into()),
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// The objects of `kind` in the namespace that match a label selector.
fn selected(s: &Session, kind: Kind, selector: &str) -> Result<Vec<ObjectRef>> {
    let ns = kind.namespaced().then_some(s.namespace.as_str());
    let answer = s.client.get(
        &client::collection_path(kind, ns),
        &[("labelSelector", selector)],
    )?;
    let items = list_items(&s.client, answer)?;
    if items.is_empty() {
        no_resources(kind, &s.namespace, false);
    }
    Ok(items
        .iter()
        .map(|o| ObjectRef {
            kind,
            name: output::text(o, "/metadata/name").unwrap_or_default(),
            namespace: output::text(o, "/metadata/namespace"),
        })
        .collect())
}
