//! Real local shoal nodes for tests, fault injection and benchmarks.
//!
//! A [`Node`] is a `shoald` process with its own data directory and loopback address, started
//! from the binaries of this workspace. Tests talk to it as users do: over HTTP ([`Node::api`])
//! and through the `shoal` binary ([`Node::cli`]). Every address used is on loopback.
//! [`image`] builds the test container image `shoal-test/echo:latest` that tests run.
//! A [`Cluster`] is N nodes on their own loopback addresses, with faults to inject: kill,
//! restart, whole-cluster stop and start, and network partitions made by the kernel
//! ([`partition`]).
//! [`hosts`] puts each node on a test host of its own instead (a network namespace on a LAN
//! bridge, with its own Docker engine), with the faults of machines: power-off and boot,
//! unplugging, an engine that stops, partitions at the bridge ([`Cluster::up_hosts`]).
//! Container tests hold a [`Testnet`] (a cluster whose containers go with it), apply through
//! [`fixture::apply`] and read pods and names back with [`listing`].
//! A [`Registry`] is a real Docker registry (Debian's `docker-registry`) on loopback or a test
//! LAN, to push images to and count what nodes pull.

pub mod bench;
pub mod bench_applies;
pub mod bench_convergence;
pub mod bench_dns;
pub mod bench_failover;
pub mod bench_idle;
pub mod bench_images;
pub mod cleanup;
pub mod cluster;
pub mod etcd;
pub mod fixture;
pub mod hosts;
pub mod image;
pub mod listing;
pub mod partition;
mod process;
pub mod registry;

pub use cleanup::DockerCleanup;
pub use cluster::{Cluster, ClusterFile, HostOptions, NodeEntry, pick_addresses};
pub use fixture::{SingleNode, Testnet};
pub use listing::PodView;
pub use process::{Api, CliOutput, Node, NodeOptions, OnHost, bin_path, free_port};
pub use registry::{Registry, RegistryOptions};

use std::time::{Duration, Instant};

/// Whether the tests that need containers can run: the Docker engine answers, and the test
/// image is built and loaded. Without an engine this says so and returns false, except where
/// `CI` is set: there a missing engine fails the test.
pub fn docker_ready() -> bool {
    let ok = std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and the Docker engine is unreachable"
        );
        eprintln!("skipping: no Docker engine here");
        return false;
    }
    let built = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(image::ensure_echo_image()));
    if let Err(e) = built {
        panic!("building the test image: {e:#}");
    }
    true
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout` with the last
/// thing `describe` says about the state (tests never sleep a fixed time).
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            let detail = last_err
                .map(|e| format!(": last error: {e:#}"))
                .unwrap_or_default();
            anyhow::bail!("timed out after {timeout:?} waiting for {what}{detail}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
