//! `image push`: sends images from this machine's Docker engine to the node the CLI talks to.
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

use super::Session;
use crate::args::ImagePushArgs;

/// The node's route for uploads (the node's `api::images::LOAD_PATH`).
const LOAD_PATH: &str = "/shoal/v1/images/load";

pub fn push(s: &Session, a: &ImagePushArgs) -> Result<()> {
    let progress = !a.quiet && std::io::stderr().is_terminal();
    for image in &a.images {
        push_one(s, image, progress)?;
    }
    Ok(())
}

fn push_one(s: &Session, image: &str, progress: bool) -> Result<()> {
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
    let answer = s
        .client
        .post_stream(LOAD_PATH, reqwest::blocking::Body::new(reader));
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
    crate::output::print(&format!(
        "image {image} pushed to node {node} (loaded: {})\n",
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
}
