//! `apply -f`: every input is checked locally, then the whole batch goes to the node in one
//! request, which applies all of it or nothing.

use anyhow::{Result, bail};
use shoal_protocol::api::ApplyResult;
use shoal_protocol::{FieldError, Kind};

use super::Session;
use super::manifests::{self, Parsed};
use crate::Reported;
use crate::args::ApplyArgs;
use crate::client::ClientError;

pub fn run(s: &Session, a: &ApplyArgs) -> Result<()> {
    if a.files.files.is_empty() {
        bail!("must give at least one -f FILE|DIR|-");
    }
    let parsed = manifests::load(&a.files, &s.namespace, s.namespace_explicit)?;
    if parsed.iter().all(|p| p.objects.is_empty()) {
        bail!("no objects passed to apply");
    }
    // Inputs without objects (comment-only files) are left out: joined to others they would
    // count as an empty document.
    let used: Vec<&Parsed> = parsed.iter().filter(|p| !p.objects.is_empty()).collect();
    let sources: Vec<&manifests::Source> = used.iter().map(|p| &p.source).collect();
    let (key, namespace) = request_namespace(&s.namespace, s.namespace_explicit);
    let batch = manifests::batch(&sources);
    match s
        .client
        .apply((key, &namespace), batch.body, batch.content_type)
    {
        Ok(resp) => {
            let lines: String = resp.items.iter().map(|r| result_line(r) + "\n").collect();
            crate::output::print(&lines)
        }
        Err(ClientError::Status(status))
            if status
                .details
                .as_ref()
                .is_some_and(|d| !d.causes.is_empty()) =>
        {
            let causes = status.details.map(|d| d.causes).unwrap_or_default();
            for line in locate_causes(&batch.documents, causes) {
                eprintln!("error: {line}");
            }
            Err(Reported.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The namespace query of the apply request, as kubectl treats namespaces: an explicit `-n` is
/// enforced (an object naming another namespace is an error), while the context's namespace
/// only fills in objects that name none.
pub(super) fn request_namespace(namespace: &str, explicit: bool) -> (&'static str, String) {
    let key = if explicit {
        "namespace"
    } else {
        "defaultNamespace"
    };
    (key, namespace.to_string())
}

/// `deployment.apps/web created`, as kubectl prints it.
pub fn result_line(r: &ApplyResult) -> String {
    let kind = Kind::from_manifest(&r.api_version, &r.kind)
        .or_else(|| Kind::from_kind_name(&r.kind))
        .map_or_else(|| r.kind.to_ascii_lowercase(), Kind::display);
    format!("{kind}/{} {}", r.name, r.action.as_str())
}

/// Maps the node's errors, whose document index counts through the whole batch, back to the
/// file and the document in it: `FILE: document N: PATH: MESSAGE`.
fn locate_causes(documents: &[(String, usize)], causes: Vec<FieldError>) -> Vec<String> {
    let counts: Vec<(&str, usize)> = documents.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    causes
        .into_iter()
        .map(|mut c| {
            let Some(global) = c.document else {
                return c.to_string();
            };
            match locate(&counts, global) {
                Some((label, local)) => {
                    c.document = Some(local);
                    format!("{label}: {c}")
                }
                None => c.to_string(),
            }
        })
        .collect()
}

/// The input and local index of the `global`-th document of the batch.
fn locate<'a>(counts: &[(&'a str, usize)], global: usize) -> Option<(&'a str, usize)> {
    let mut offset = 0;
    for (label, n) in counts {
        if global < offset + n {
            return Some((label, global - offset));
        }
        offset += n;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use shoal_protocol::api::ApplyAction;

    #[test]
    fn results_print_like_kubectl() {
        let r = |api: &str, kind: &str, action| ApplyResult {
            api_version: api.into(),
            kind: kind.into(),
            namespace: Some("default".into()),
            name: "web".into(),
            action,
            generation: 1,
        };
        assert_eq!(
            result_line(&r("apps/v1", "Deployment", ApplyAction::Created)),
            "deployment.apps/web created"
        );
        assert_eq!(
            result_line(&r("v1", "Service", ApplyAction::Configured)),
            "service/web configured"
        );
        assert_eq!(
            result_line(&r("v1", "ConfigMap", ApplyAction::Unchanged)),
            "configmap/web unchanged"
        );
        assert_eq!(
            result_line(&r("x/v9", "Widget", ApplyAction::Created)),
            "widget/web created"
        );
    }

    #[test]
    fn the_request_namespace_keeps_kubectl_semantics() {
        // -n is enforced by the node: an object naming another namespace is refused.
        assert_eq!(
            request_namespace("dev", true),
            ("namespace", "dev".to_string())
        );
        // A context's namespace only fills in objects that name none.
        assert_eq!(
            request_namespace("apps", false),
            ("defaultNamespace", "apps".to_string())
        );
    }

    #[test]
    fn batch_indices_map_back_to_files() {
        let counts = [("a.yaml", 2), ("b.yaml", 1), ("c.yaml", 3)];
        assert_eq!(locate(&counts, 0), Some(("a.yaml", 0)));
        assert_eq!(locate(&counts, 1), Some(("a.yaml", 1)));
        assert_eq!(locate(&counts, 2), Some(("b.yaml", 0)));
        assert_eq!(locate(&counts, 5), Some(("c.yaml", 2)));
        assert_eq!(locate(&counts, 6), None);
    }
}
