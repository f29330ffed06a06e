//! Removing what a test's nodes left in the Docker engine, even when the test fails.

use std::process::{Command, Stdio};

/// Removes, when dropped, every container labelled with the cluster id, the cluster's pod
/// networks (`shoal-<node>-<first 8 characters of the cluster id>`: Docker's default address
/// pool holds only about 30 bridge networks), and the named volumes given. Uses the `docker`
/// CLI so that it works from `Drop` without an async runtime.
pub struct DockerCleanup {
    cluster_id: String,
    volumes: Vec<String>,
}

impl DockerCleanup {
    pub fn new(cluster_id: &str) -> DockerCleanup {
        DockerCleanup {
            cluster_id: cluster_id.to_string(),
            volumes: Vec::new(),
        }
    }

    /// The cluster id whose containers and networks this removes.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Also removes this named volume.
    pub fn volume(&mut self, name: &str) {
        self.volumes.push(name.to_string());
    }

    /// Ids of the cluster's containers, running or not.
    pub fn containers(&self) -> Vec<String> {
        containers_with_label(&format!("shoal.cluster={}", self.cluster_id))
    }
}

/// Ids of the containers carrying `label` (`key=value`), running or not.
pub fn containers_with_label(label: &str) -> Vec<String> {
    containers_with_labels(&[label])
}

/// Ids of the containers carrying every one of `labels` (`key=value`), running or not; none
/// when the `docker` CLI is missing or fails.
pub fn containers_with_labels(labels: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-aq", "--no-trunc"]);
    for l in labels {
        cmd.args(["--filter", &format!("label={l}")]);
    }
    cmd.stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let ids = self.containers();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let suffix: String = self.cluster_id.chars().take(8).collect();
        let networks: Vec<String> = Command::new("docker")
            .args(["network", "ls", "--format", "{{.Name}}"])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|n| n.starts_with("shoal-") && n.ends_with(&format!("-{suffix}")))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !suffix.is_empty() && !networks.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&networks)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for v in &self.volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
