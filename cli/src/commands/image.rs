//! `image push`: sends images from this machine's Docker engine to the node the CLI talks to;
//! and `get images`: the images the cluster's nodes hold.
//!
//! The one place where the CLI touches a container engine, its local one, through the `docker`
//! CLI (`docker save`), so that `shoal` needs no engine client of its own. The tarball streams
//! from `docker save` straight into the request body (never whole in memory); the node loads it
//! into its engine as it arrives and answers with what it loaded. On a terminal, progress goes
//! to stderr.

use std::io::{IsTerminal as _, Read, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use serde_json::Value;

use super::Session;
use crate::args::{GetArgs, ImagePushArgs, OutputFormat};
use crate::output::{self, int, list, render_table, text};

/// The node's route for uploads (the node's `api::images::LOAD_PATH`).
const LOAD_PATH: &str = "/shoal/v1/images/load";

/// The same, asking every other node to fetch what it loaded (`--all`).
const LOAD_ALL_PATH: &str = "/shoal/v1/images/load?all=true";

/// The node's route for the list (the node's `api::images::LIST_PATH`).
const LIST_PATH: &str = "/shoal/v1/images";

/// Whether `get KIND` asks for images.
pub fn is_images(kind: &str) -> bool {
    matches!(
        kind.to_ascii_lowercase().as_str(),
        "images" | "image" | "img"
    )
}

/// `get images [NAME...]`: a table, or the answer as YAML or JSON.
pub fn get(s: &Session, a: &GetArgs) -> Result<()> {
    if a.watch || a.selector.is_some() {
        bail!("`get images` takes no --watch or --selector");
    }
    let mut answer = s.client.get(LIST_PATH, &[])?;
    if !a.names.is_empty()
        && let Some(items) = answer.get_mut("items").and_then(Value::as_array_mut)
    {
        items.retain(|i| {
            let name = text(i, "/name").unwrap_or_default();
            a.names
                .iter()
                .any(|n| name == *n || name.starts_with(&format!("{n}:")))
        });
    }
    let out = match a.output {
        None | Some(OutputFormat::Wide) => {
            let text = images_table(&answer);
            if text.is_empty() {
                eprintln!("No images found.");
            }
            text
        }
        Some(OutputFormat::Name) => list(&answer, "/items")
            .iter()
            .map(|i| format!("image/{}\n", text(i, "/name").unwrap_or_default()))
            .collect(),
        Some(OutputFormat::Yaml) => output::to_yaml(&answer)?,
        Some(OutputFormat::Json) => output::to_json(&answer)?,
    };
    output::print(&out)
}

/// NAME, IMAGE ID (12 characters, as docker shows it), SIZE, NODES, PODS; empty without rows.
pub fn images_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = list(answer, "/items")
        .iter()
        .map(|i| {
            let id = text(i, "/id").unwrap_or_default();
            let id = id.strip_prefix("sha256:").unwrap_or(&id);
            let names = |p: &str| {
                let l: Vec<String> = list(i, p).iter().filter_map(|v| text(v, "")).collect();
                if l.is_empty() {
                    "<none>".to_string()
                } else {
                    l.join(",")
                }
            };
            vec![
                text(i, "/name").unwrap_or_default(),
                id.chars().take(12).collect(),
                human_bytes(int(i, "/size").unwrap_or(0)),
                names("/nodes"),
                names("/pods"),
            ]
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    render_table(&["NAME", "IMAGE ID", "SIZE", "NODES", "PODS"], &rows)
}

/// Bytes as docker prints them (decimal units: `7.34MB`).
fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    match n {
        n if n >= 1e9 => format!("{:.3}GB", n / 1e9),
        n if n >= 1e6 => format!("{:.3}MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1}kB", n / 1e3),
        n => format!("{n}B"),
    }
}

pub fn push(s: &Session, a: &ImagePushArgs) -> Result<()> {
    let progress = !a.quiet && std::io::stderr().is_terminal();
    for image in &a.images {
        push_one(s, image, progress, a.all)?;
    }
    Ok(())
}

fn push_one(s: &Session, image: &str, progress: bool, all: bool) -> Result<()> {
    let size = local_size(image)?;
    let mut child = Command::new("docker")
        .args(["save", image])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `docker save`")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("`docker save` gave no output stream"))?;
    let reader = Progress {
        inner: stdout,
        sent: 0,
        total: size,
        label: image.to_string(),
        show: progress,
        last: None,
    };
    let answer = s.client.post_stream(
        if all { LOAD_ALL_PATH } else { LOAD_PATH },
        reqwest::blocking::Body::new(reader),
    );
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().context("`docker save` did not finish")?;
    if progress {
        eprintln!();
    }
    let answer = match (answer, status.success()) {
        (Ok(a), true) => a,
        (Ok(_), false) | (Err(_), false) => bail!(
            "`docker save {image}` failed, so nothing was loaded on the node: {}",
            stderr.trim()
        ),
        (Err(e), true) => return Err(e.into()),
    };
    let node = answer["node"].as_str().unwrap_or("the node");
    let loaded: Vec<&str> = answer["loaded"]
        .as_array()
        .map(|l| l.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let others = if all {
        "; the other nodes fetch it from there now"
    } else {
        ""
    };
    crate::output::print(&format!(
        "image {image} pushed to node {node} (loaded: {}){others}\n",
        loaded.join(", ")
    ))
}

/// The image's size in the local engine, which also checks that it is there.
fn local_size(image: &str) -> Result<u64> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Size}}", image])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            anyhow!(
                "`shoal image push` reads images from this machine's Docker engine with the \
                 docker CLI, which cannot be run here: {e}"
            )
        })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        bail!(
            "image {image} is not in this machine's Docker engine (build or pull it first): {}",
            said.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// Counts what goes through, and shows it on stderr at most a few times a second.
struct Progress<R> {
    inner: R,
    sent: u64,
    /// The image's size in the engine; the tarball is about as large.
    total: u64,
    label: String,
    show: bool,
    last: Option<Instant>,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        if self.show && (due || n == 0) {
            self.last = Some(Instant::now());
            eprint!("\r{}", progress_line(&self.label, self.sent, self.total));
            let _ = std::io::stderr().flush();
        }
        Ok(n)
    }
}

/// `app:v1  12.3 MB / 45.6 MB  27%`.
fn progress_line(label: &str, sent: u64, total: u64) -> String {
    let mb = |b: u64| b as f64 / 1_000_000.0;
    if total == 0 {
        return format!("{label}  {:.1} MB", mb(sent));
    }
    let pct = (sent.saturating_mul(100) / total).min(100);
    format!("{label}  {:.1} MB / {:.1} MB  {pct}%", mb(sent), mb(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let cases = [
            ("a:1", 0, 0, "a:1  0.0 MB"),
            ("a:1", 12_300_000, 45_600_000, "a:1  12.3 MB / 45.6 MB  26%"),
            (
                "a:1",
                50_000_000,
                45_600_000,
                "a:1  50.0 MB / 45.6 MB  100%",
            ),
        ];
        for (label, sent, total, want) in cases {
            assert_eq!(progress_line(label, sent, total), want);
        }
    }

    #[test]
    fn progress_counts_what_goes_through() {
        let mut r = Progress {
            inner: &b"0123456789"[..],
            sent: 0,
            total: 10,
            label: "x".into(),
            show: false,
            last: None,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).map(|_| ()).unwrap_or_default();
        assert_eq!((out.len(), r.sent), (10, 10));
    }

    #[test]
    fn images_table_columns() {
        let answer = serde_json::json!({"items": [
            {"name": "app:v1", "id": "sha256:0123456789abcdef0123", "size": 7340032,
             "nodes": ["h1", "h2"], "pods": ["default/web-1"]},
            {"name": "<none>", "id": "sha256:fedcba9876543210", "size": 999, "nodes": ["h1"], "pods": []},
        ]});
        let table = images_table(&answer);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("NAME"), "{table}");
        for want in [
            "app:v1",
            "0123456789ab",
            "7.340MB",
            "h1,h2",
            "default/web-1",
        ] {
            assert!(lines[1].contains(want), "{want} missing in {table}");
        }
        assert!(
            lines[2].contains("999B") && lines[2].ends_with("<none>"),
            "{table}"
        );
        assert_eq!(images_table(&serde_json::json!({"items": []})), "");
        assert!(is_images("images") && is_images("IMG") && !is_images("pods"));
    }
}
