//! `backup` and `restore`: the desired state to a file and back.
//!
//! The backup is the node's JSON document as it answers it (`GET /shoal/v1/backup`), written
//! unchanged: Secrets stay sealed by the cluster key. `restore` sends a file back
//! (`POST /shoal/v1/restore`), which the node applies all or nothing, and prints per kind what
//! was created, changed or already equal.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use shoal_protocol::api::{
    ApplyAction, ApplyResponse, BACKUP_FORMAT, BACKUP_PATH, Backup, RESTORE_PATH,
};

use super::Session;
use crate::args::{BackupArgs, RestoreArgs};
use crate::client::ClientError;

pub fn backup(s: &Session, a: &BackupArgs) -> Result<()> {
    let value = s.client.get(BACKUP_PATH, &[])?;
    let summary: Backup =
        serde_json::from_value(value.clone()).map_err(|e| ClientError::Decode {
            url: s.client.base().to_string(),
            detail: format!("the backup answer is not a backup: {e}"),
        })?;
    let mut text = serde_json::to_string_pretty(&value)?;
    text.push('\n');
    let line = format!(
        "backup of cluster {} taken on node {} at {}: {} objects ({}); Secrets are sealed \
         with key {}: keep a join token of this cluster with the file to restore them",
        summary.cluster_id,
        summary.node_name,
        summary.created_at,
        summary.items.len(),
        counts(&summary.items),
        summary.secrets_key_id,
    );
    match &a.output {
        Some(path) => {
            write_private(path, text.as_bytes())?;
            crate::output::print(&format!("{line}\nwritten to {}\n", path.display()))
        }
        None => {
            crate::output::print(&text)?;
            eprintln!("{line}");
            Ok(())
        }
    }
}

pub fn restore(s: &Session, a: &RestoreArgs) -> Result<()> {
    let text = read_input(&a.file)?;
    let value: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON: give the file that `shoal backup` wrote",
            a.file
        )
    })?;
    match value.get("format").and_then(Value::as_str) {
        Some(BACKUP_FORMAT) => {}
        Some(other) => bail!(
            "{} has format {other:?}; this shoal reads {BACKUP_FORMAT:?}",
            a.file
        ),
        None => bail!(
            "{} is not a shoal backup (it has no \"format\": {BACKUP_FORMAT:?})",
            a.file
        ),
    }
    let answer = match s.client.post_json(RESTORE_PATH, &value) {
        Ok(v) => v,
        Err(ClientError::Status(status)) => {
            for cause in status.details.iter().flat_map(|d| &d.causes) {
                eprintln!("error: {cause}");
            }
            return Err(ClientError::Status(status).into());
        }
        Err(e) => return Err(e.into()),
    };
    let response: ApplyResponse =
        serde_json::from_value(answer).map_err(|e| ClientError::Decode {
            url: s.client.base().to_string(),
            detail: format!("the restore answer has no results: {e}"),
        })?;
    let from = |field: &str| value.get(field).and_then(Value::as_str).unwrap_or("?");
    let mut out = format!(
        "restored {} objects from the backup of cluster {} taken at {}:\n",
        response.items.len(),
        from("clusterId"),
        from("createdAt"),
    );
    out.push_str(&table(&response));
    crate::output::print(&out)
}

/// Per kind (in the order of first appearance): created, configured, unchanged.
fn table(response: &ApplyResponse) -> String {
    let mut rows: Vec<(String, [usize; 3])> = Vec::new();
    for r in &response.items {
        let at = match rows.iter().position(|(k, _)| *k == r.kind) {
            Some(at) => at,
            None => {
                rows.push((r.kind.clone(), [0; 3]));
                rows.len() - 1
            }
        };
        let column = match r.action {
            ApplyAction::Created => 0,
            ApplyAction::Configured => 1,
            ApplyAction::Unchanged => 2,
        };
        rows[at].1[column] += 1;
    }
    let width = rows
        .iter()
        .map(|(k, _)| k.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "{:<width$}  {:>7}  {:>10}  {:>9}\n",
        "KIND", "CREATED", "CONFIGURED", "UNCHANGED"
    );
    for (kind, [c, u, n]) in rows {
        out.push_str(&format!("{kind:<width$}  {c:>7}  {u:>10}  {n:>9}\n"));
    }
    out
}

/// `Namespace 2, Secret 1, ...` in the order of the items.
fn counts(items: &[Value]) -> String {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for item in items {
        let kind = item.get("kind").and_then(Value::as_str).unwrap_or("?");
        match seen.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => seen.push((kind, 1)),
        }
    }
    seen.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn read_input(file: &str) -> Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the backup from stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
}

/// Writes `bytes` to `path` through a temporary file in the same directory (mode 0600, fsynced,
/// renamed), so that an interrupted backup never leaves half a file under the name.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use shoal_protocol::api::ApplyResult;

    use super::*;

    fn result(kind: &str, action: ApplyAction) -> ApplyResult {
        ApplyResult {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: None,
            name: "x".into(),
            action,
            generation: 1,
        }
    }

    #[test]
    fn table_counts_per_kind_in_order() {
        let r = ApplyResponse {
            items: vec![
                result("Namespace", ApplyAction::Created),
                result("Namespace", ApplyAction::Unchanged),
                result("Secret", ApplyAction::Configured),
                result("Namespace", ApplyAction::Created),
            ],
        };
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("KIND"));
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols, ["Namespace", "2", "0", "1"]);
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cols, ["Secret", "0", "1", "0"]);
    }

    #[test]
    fn written_file_is_private_and_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.json");
        write_private(&p, b"{}\n").unwrap();
        write_private(&p, b"{\"a\":1}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("b.json.tmp").exists());
    }
}
