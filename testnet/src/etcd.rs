//! One etcd member on a loopback address of its own, the anchor of several benchmarks; killed
//! when dropped.

use std::process::{Child, Command, Stdio};

use anyhow::Context;

pub struct EtcdMember {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl EtcdMember {
    /// Starts `etcd` (Debian's `etcd-server`) as a one-member cluster; it may take a moment
    /// before it answers.
    pub fn start() -> anyhow::Result<EtcdMember> {
        let dir = tempfile::tempdir()?;
        let ip = crate::cluster::pick_addresses(1)?[0].to_string();
        let (client, peer) = (crate::free_port(&ip)?, crate::free_port(&ip)?);
        let url = format!("http://{ip}:{client}");
        let peer_url = format!("http://{ip}:{peer}");
        let child = Command::new("etcd")
            .args([
                "--data-dir",
                &dir.path().join("e").to_string_lossy(),
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("default={peer_url}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("etcd is not installed (apt-get install etcd-server)")?;
        Ok(EtcdMember {
            child,
            url,
            _dir: dir,
        })
    }

    /// The client URL, `http://IP:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
