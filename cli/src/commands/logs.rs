//! `logs`: a container's output, streamed from the node that runs the pod.

use std::io::Write;

use anyhow::{Context, Result};

use super::{Session, parse_duration};
use crate::args::LogsArgs;
use crate::client::segment;

pub fn run(s: &Session, a: &LogsArgs) -> Result<()> {
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/log",
        segment(&s.namespace),
        segment(&a.pod)
    );
    let query = log_query(a)?;
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut resp = s.client.get_stream(&path, &query)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Copy as it comes, flushing each piece, so that `-f` shows lines as they are written.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match std::io::Read::read(&mut resp, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("the log stream broke"),
        };
        if let Err(e) = out.write_all(&buf[..n]).and_then(|()| out.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    Ok(())
}

/// The query parameters of the log request.
pub fn log_query(a: &LogsArgs) -> Result<Vec<(&'static str, String)>> {
    let mut q = Vec::new();
    if let Some(c) = &a.container {
        q.push(("container", c.clone()));
    }
    if a.follow {
        q.push(("follow", "true".into()));
    }
    if a.tail >= 0 {
        q.push(("tailLines", a.tail.to_string()));
    }
    if let Some(since) = &a.since {
        let secs = parse_duration(since).with_context(|| format!("--since {since}"))?;
        if secs == 0 {
            anyhow::bail!("--since must be more than 0s");
        }
        q.push(("sinceSeconds", secs.to_string()));
    }
    if a.timestamps {
        q.push(("timestamps", "true".into()));
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn query_from_flags() {
        let a = LogsArgs {
            pod: "web-0".into(),
            container: Some("app".into()),
            follow: true,
            tail: 10,
            since: Some("5m".into()),
            timestamps: false,
        };
        assert_eq!(
            log_query(&a).unwrap(),
            vec![
                ("container", "app".to_string()),
                ("follow", "true".into()),
                ("tailLines", "10".into()),
                ("sinceSeconds", "300".into()),
            ]
        );
        let all = LogsArgs {
            tail: -1,
            since: None,
            follow: false,
            container: None,
            ..a
        };
        assert!(log_query(&all).unwrap().is_empty());
        let bad = LogsArgs {
            since: Some("5 parsecs".into()),
            ..all
        };
        assert!(log_query(&bad).is_err());
    }
}
