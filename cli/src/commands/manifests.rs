//! Reading the manifests of `-f` (files, directories, stdin) and checking them locally, so that
//! a batch with any mistake is refused before anything is sent.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::Value;
use shoal_protocol::{Kind, Resource, manifest};

use crate::Reported;
use crate::args::FileArgs;

/// One input: a file or stdin.
#[derive(Debug, Clone)]
pub struct Source {
    /// How errors name it: the path as given, or `<stdin>`.
    pub label: String,
    pub text: String,
}

/// What an object is called, all that `apply` and `delete` need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: Kind,
    pub name: String,
    pub namespace: Option<String>,
}

/// One input and the objects it holds, in document order.
#[derive(Debug)]
pub struct Parsed {
    pub source: Source,
    pub objects: Vec<ObjectRef>,
}

/// Reads and parses every input. On any error, prints each as
/// `error: FILE: document N: PATH: MESSAGE` and returns [`Reported`].
pub fn load(files: &FileArgs, namespace: &str, namespace_explicit: bool) -> Result<Vec<Parsed>> {
    let mut errors: Vec<String> = Vec::new();
    let sources = read_sources(files, &mut errors);
    let mut parsed = Vec::new();
    for source in sources {
        match manifest::parse(&source.text) {
            Ok(resources) => {
                let objects: Vec<ObjectRef> = resources.iter().map(object_ref).collect();
                for e in namespace_conflicts(&objects, namespace, namespace_explicit) {
                    errors.push(format!("{}: {e}", source.label));
                }
                parsed.push(Parsed { source, objects });
            }
            Err(errs) => {
                for e in errs.0 {
                    errors.push(format!("{}: {e}", source.label));
                }
            }
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Err(Reported.into());
    }
    Ok(parsed)
}

fn object_ref(r: &Resource) -> ObjectRef {
    ObjectRef {
        kind: r.kind(),
        name: r.name().to_string(),
        namespace: r.namespace().map(str::to_string),
    }
}

/// kubectl's rule: with an explicit `-n`, an object that names another namespace is a mistake
/// (it would otherwise land where the user did not look). Without `-n`, the manifest wins.
/// Errors name the object (`deployment.apps/web: metadata.namespace: ...`): a `List` holds
/// several objects in one document, so the document index would not say which.
pub fn namespace_conflicts(objects: &[ObjectRef], namespace: &str, explicit: bool) -> Vec<String> {
    if !explicit {
        return Vec::new();
    }
    objects
        .iter()
        .filter_map(|o| {
            let ns = o.namespace.as_deref()?;
            (o.kind.namespaced() && ns != namespace).then(|| {
                format!(
                    "{}/{}: metadata.namespace: the namespace from the provided object {ns:?} \
                     does not match the namespace {namespace:?} given with -n; remove one of them",
                    o.kind.display(),
                    o.name
                )
            })
        })
        .collect()
}

fn read_sources(files: &FileArgs, errors: &mut Vec<String>) -> Vec<Source> {
    let mut sources = Vec::new();
    let mut stdin_used = false;
    for arg in &files.files {
        if arg == "-" {
            if stdin_used {
                errors.push("-f - (stdin) may be given only once".into());
                continue;
            }
            stdin_used = true;
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => sources.push(Source {
                    label: "<stdin>".into(),
                    text,
                }),
                Err(e) => errors.push(format!("<stdin>: cannot read: {e}")),
            }
            continue;
        }
        let path = Path::new(arg);
        if path.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = manifest_files(path, files.recursive, &mut found) {
                errors.push(format!("{arg}: cannot list the directory: {e}"));
                continue;
            }
            if found.is_empty() {
                errors.push(format!(
                    "{arg}: no .yaml, .yml or .json files in the directory"
                ));
            }
            for p in found {
                read_file(&p, &mut sources, errors);
            }
        } else {
            read_file(path, &mut sources, errors);
        }
    }
    sources
}

fn read_file(path: &Path, sources: &mut Vec<Source>, errors: &mut Vec<String>) {
    let label = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => sources.push(Source { label, text }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            errors.push(format!("{label}: the path does not exist"));
        }
        Err(e) => errors.push(format!("{label}: cannot read: {e}")),
    }
}

/// The manifests of a directory, sorted by name; subdirectories only when `recursive`, each
/// in its place in the order.
pub fn manifest_files(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                manifest_files(&p, true, out)?;
            }
        } else if is_manifest(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn is_manifest(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json"))
}

/// The body of one apply request and where each input's documents start in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub body: String,
    pub content_type: &'static str,
    /// Each input's label and its number of documents, in body order: the node's document
    /// indices count through the whole body, and these map them back to files.
    pub documents: Vec<(String, usize)>,
}

/// Joins every input into one multi-document YAML stream, so that the node applies the whole
/// batch or nothing. Inputs are sent as written (a newer node may know fields this client does
/// not), joined so that each keeps its number of documents as the manifest parser counts them:
/// an input that opens with its own `---` gets no second one, and JSON inputs of a batch are
/// re-encoded one object per line (JSON's flow style is YAML; a JSON stream is not).
pub fn batch(sources: &[&Source]) -> Batch {
    let documents = sources
        .iter()
        .map(|s| (s.label.clone(), count_documents(&s.text)))
        .collect();
    if let [one] = sources {
        let content_type = if json_values(&one.text).is_some() {
            "application/json"
        } else {
            "application/yaml"
        };
        return Batch {
            body: one.text.clone(),
            content_type,
            documents,
        };
    }
    let mut body = String::new();
    for (i, s) in sources.iter().enumerate() {
        let text = strip_bom(&s.text);
        let (text, opens_with_marker) = match json_values(text) {
            Some(values) => {
                let lines: Vec<String> = values.iter().map(Value::to_string).collect();
                (lines.join("\n---\n"), false)
            }
            None => yaml_without_prefix_directives(text),
        };
        if i == 0 && !opens_with_marker {
            // A body that starts like JSON would first be tried as one JSON stream.
            body.push_str("---\n");
        } else if i > 0 && opens_with_marker {
            body.push('\n');
        } else if i > 0 {
            body.push_str("\n---\n");
        }
        body.push_str(&text);
    }
    Batch {
        body,
        content_type: "application/yaml",
        documents,
    }
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// The values of a JSON input (one object, a stream, a `List`), or `None` for YAML.
fn json_values(text: &str) -> Option<Vec<Value>> {
    let text = strip_bom(text);
    if !text.trim_start().starts_with(['{', '[']) {
        return None;
    }
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .ok()
}

/// How many documents the manifest parser counts in an input: JSON values, or YAML documents
/// (those opened by `---` even when empty, and those with content). This mirrors
/// `shoal_protocol::manifest`'s split, which is private; `batch_indices_match_the_parser`
/// checks the two agree.
pub fn count_documents(text: &str) -> usize {
    shoal_protocol::manifest::document_count(text)
}

fn marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(marker)?;
    (rest.is_empty() || rest.starts_with([' ', '\t', '\r'])).then_some(rest)
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// A YAML input without the directives (`%YAML 1.2`) before its first document, which would
/// be content in the middle of a stream, and whether its first document opens with `---`.
fn yaml_without_prefix_directives(text: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut in_prefix = true;
    let mut opens_with_marker = false;
    for line in text.lines() {
        if in_prefix {
            if line.starts_with('%') {
                continue;
            }
            if marker(line, "---").is_some() {
                opens_with_marker = true;
                in_prefix = false;
            } else if is_content(line) || marker(line, "...").is_some() {
                in_prefix = false;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, opens_with_marker)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn obj(kind: Kind, name: &str, ns: Option<&str>) -> ObjectRef {
        ObjectRef {
            kind,
            name: name.into(),
            namespace: ns.map(str::to_string),
        }
    }

    #[test]
    fn explicit_namespace_must_match_the_manifests() {
        let objs = [
            obj(Kind::Deployment, "a", None),
            obj(Kind::Deployment, "b", Some("prod")),
            obj(Kind::Service, "c", Some("dev")),
            obj(Kind::Namespace, "prod", None),
        ];
        assert!(namespace_conflicts(&objs, "dev", false).is_empty());
        let errs = namespace_conflicts(&objs, "dev", true);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("deployment.apps/b: metadata.namespace: ")
                && errs[0].contains("\"prod\""),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn directories_are_read_sorted_and_recursive_only_with_r() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["b.yaml", "a.yml", "c.json", "notes.txt", "sub/d.yaml"] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let names = |recursive| {
            let mut out = Vec::new();
            manifest_files(d, recursive, &mut out).unwrap();
            out.iter()
                .map(|p| p.strip_prefix(d).unwrap().display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(false), ["a.yml", "b.yaml", "c.json"]);
        assert_eq!(names(true), ["a.yml", "b.yaml", "c.json", "sub/d.yaml"]);
    }

    const GOOD: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: v\n";
    const GOOD_JSON: &str =
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}}"#;
    const BAD: &str = "apiVersion: v1\nkind: Widget\nmetadata:\n  name: w\n";

    fn src(label: &str, text: &str) -> Source {
        Source {
            label: label.into(),
            text: text.into(),
        }
    }

    /// Inputs written in every way the parser distinguishes documents.
    fn samples() -> Vec<String> {
        vec![
            GOOD.to_string(),
            format!("---\n{GOOD}"),
            format!("# header\n\n---\n{GOOD}---\n{GOOD}---\n"),
            format!("{GOOD}...\n"),
            format!("%YAML 1.2\n---\n{GOOD}"),
            format!("{GOOD}---\n---\n{GOOD}"),
            format!("--- # first\n{GOOD}\n---\n# only a comment\n"),
            GOOD_JSON.to_string(),
            format!("{GOOD_JSON}\n{GOOD_JSON}"),
            format!(
                r#"{{"apiVersion": "v1", "kind": "List", "items": [{GOOD_JSON}, {GOOD_JSON}]}}"#
            ),
            format!("\u{feff}{GOOD}"),
        ]
    }

    #[test]
    fn batch_indices_match_the_parser() {
        for text in samples() {
            assert!(manifest::parse(&text).is_ok(), "{text}");
            for before in [vec![], vec![GOOD.to_string()], vec![GOOD_JSON.to_string()]] {
                let mut inputs: Vec<Source> = before.iter().map(|t| src("before", t)).collect();
                inputs.push(src("sample", &text));
                inputs.push(src("bad", BAD));
                let refs: Vec<&Source> = inputs.iter().collect();
                let b = batch(&refs);
                let errs = manifest::parse(&b.body).unwrap_err().0;
                let bad_at: usize = b.documents[..b.documents.len() - 1]
                    .iter()
                    .map(|(_, n)| n)
                    .sum();
                assert_eq!(errs.len(), 1, "{text:?}: {errs:?}\n{}", b.body);
                assert_eq!(errs[0].document, Some(bad_at), "{text:?}\n{}", b.body);
            }
        }
    }

    #[test]
    fn a_single_input_is_sent_as_written() {
        let b = batch(&[&src("a", GOOD)]);
        assert_eq!(b.body, GOOD);
        assert_eq!(b.content_type, "application/yaml");
        assert_eq!(b.documents, vec![("a".to_string(), 1)]);
        let b = batch(&[&src("j", GOOD_JSON)]);
        assert_eq!(b.body, GOOD_JSON);
        assert_eq!(b.content_type, "application/json");
    }

    #[test]
    fn documents_are_counted_like_the_parser() {
        assert_eq!(count_documents(""), 0);
        assert_eq!(count_documents("# nothing\n"), 0);
        assert_eq!(count_documents("---\n"), 1);
        assert_eq!(count_documents("a: 1\n---\n---\nb: 2\n"), 3);
        assert_eq!(count_documents("{}\n{}"), 2);
    }
}
