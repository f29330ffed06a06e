//! Observed state: what nodes see right now (heartbeats, capacity, and later pod status).
//!
//! It changes constantly, so it never enters the automerge document, whose history would grow
//! without bound. Each node is the only writer of its own [`NodeRecord`], which carries a
//! version counter; records from peers (once the cluster exists) replace older ones of the same
//! node. This module owns the records of this process behind a `watch` channel: one writer task
//! at a time, any number of readers that take a cheap snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_protocol::status::PodStatus;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::time::unix_now;

/// What one node reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    /// Bumped by the owner on every change; the higher version wins a merge.
    pub version: u64,
    pub address: String,
    pub shoal_version: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// When the node process started (seconds since the Unix epoch).
    pub started_at: i64,
    /// The owner's wall clock at its last heartbeat (seconds since the Unix epoch).
    pub heartbeat_at: i64,
    /// The status of every pod the node runs, by `namespace/pod`.
    #[serde(default)]
    pub pods: BTreeMap<String, PodStatus>,
}

impl NodeRecord {
    /// Merge law: the record with the higher version wins; equal versions keep `self`. This is
    /// commutative on distinct versions, associative and idempotent, and only the owner ever
    /// creates a new version.
    pub fn merge(self, other: NodeRecord) -> NodeRecord {
        if other.version > self.version {
            other
        } else {
            self
        }
    }
}

/// Every node record this process knows, by node name.
pub type Observed = Arc<BTreeMap<String, NodeRecord>>;

/// A cheap handle to read observed state.
#[derive(Clone)]
pub struct ObservedHandle {
    rx: watch::Receiver<Observed>,
}

impl ObservedHandle {
    pub fn snapshot(&self) -> Observed {
        self.rx.borrow().clone()
    }
}

impl ObservedHandle {
    /// The status of one pod, wherever it runs, with the node that reported it.
    pub fn pod(&self, key: &str) -> Option<(String, PodStatus)> {
        self.snapshot()
            .values()
            .find_map(|r| r.pods.get(key).map(|p| (r.name.clone(), p.clone())))
    }

    /// Every reported pod status, by `namespace/pod`. A pod two nodes report (one still
    /// stopping it) keeps the report of the node whose heartbeat is newer.
    pub fn pods(&self) -> BTreeMap<String, PodStatus> {
        let snapshot = self.snapshot();
        let mut records: Vec<&NodeRecord> = snapshot.values().collect();
        records.sort_by_key(|r| r.heartbeat_at);
        let mut out = BTreeMap::new();
        for r in records {
            for (k, p) in &r.pods {
                out.insert(k.clone(), p.clone());
            }
        }
        out
    }

    /// A receiver that changes whenever a record does.
    pub fn subscribe(&self) -> watch::Receiver<Observed> {
        self.rx.clone()
    }
}

/// Where the node agent reports the pods of this node: the whole set each time, so a pod
/// that is gone simply leaves it.
#[derive(Clone)]
pub struct PodReporter {
    tx: mpsc::Sender<BTreeMap<String, PodStatus>>,
}

impl PodReporter {
    /// Replaces this node's pod statuses. Waits when the heartbeat task is busy; fails only
    /// when it has stopped (shutdown).
    pub async fn report(&self, pods: BTreeMap<String, PodStatus>) -> Result<(), Stopped> {
        self.tx.send(pods).await.map_err(|_| Stopped)
    }
}

/// The observed-state task has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the observed-state task has stopped")]
pub struct Stopped;

/// The task that keeps this node's own record fresh.
pub struct Heartbeat {
    tx: watch::Sender<Observed>,
    pods: mpsc::Receiver<BTreeMap<String, PodStatus>>,
    record: NodeRecord,
    interval: Duration,
}

/// Creates the store with this node's first record.
pub fn start(
    record: NodeRecord,
    interval: Duration,
    channel_size: usize,
) -> (ObservedHandle, PodReporter, Heartbeat) {
    let mut map = BTreeMap::new();
    map.insert(record.name.clone(), record.clone());
    let (tx, rx) = watch::channel(Arc::new(map));
    let (pods_tx, pods) = mpsc::channel(channel_size.max(1));
    (
        ObservedHandle { rx },
        PodReporter { tx: pods_tx },
        Heartbeat {
            tx,
            pods,
            record,
            interval,
        },
    )
}

impl Heartbeat {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                pods = self.pods.recv() => match pods {
                    Some(pods) if pods != self.record.pods => self.record.pods = pods,
                    Some(_) => continue,
                    None => break,
                },
                _ = tick.tick() => {}
            }
            self.record.version += 1;
            self.record.heartbeat_at = unix_now();
            let record = self.record.clone();
            self.tx.send_modify(|map| {
                Arc::make_mut(map).insert(record.name.clone(), record);
            });
        }
    }
}

/// This machine's logical CPUs and total memory, read from the OS.
pub fn host_capacity() -> (u32, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_meminfo_total(&s))
        .unwrap_or(0);
    (cpus, memory)
}

fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rec(version: u64, address: &str) -> NodeRecord {
        NodeRecord {
            name: "n1".into(),
            version,
            address: address.into(),
            shoal_version: "0".into(),
            cpus: 1,
            memory_bytes: 1,
            started_at: 0,
            heartbeat_at: 0,
            pods: BTreeMap::new(),
        }
    }

    #[test]
    fn merge_laws() {
        let (a, b, c) = (rec(1, "a"), rec(2, "b"), rec(3, "c"));
        // Commutative on distinct versions.
        assert_eq!(a.clone().merge(b.clone()), b.clone().merge(a.clone()));
        // Associative.
        assert_eq!(
            a.clone().merge(b.clone()).merge(c.clone()),
            a.clone().merge(b.clone().merge(c.clone()))
        );
        // Idempotent.
        assert_eq!(b.clone().merge(b.clone()), b);
    }

    #[test]
    fn meminfo() {
        let s = "MemTotal:       24575392 kB\nMemFree: 1 kB\n";
        assert_eq!(parse_meminfo_total(s), Some(24_575_392 * 1024));
        assert_eq!(parse_meminfo_total("garbage"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_bumps_version() {
        let (h, reporter, hb) = start(rec(0, "a"), Duration::from_secs(1), 4);
        let stop = CancellationToken::new();
        let task = tokio::spawn(hb.run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let v = h.snapshot().get("n1").unwrap().version;
        assert!(v >= 2, "version {v}");
        let mut pods = BTreeMap::new();
        pods.insert(
            "default/web-0".to_string(),
            PodStatus {
                phase: "Running".into(),
                ..PodStatus::default()
            },
        );
        reporter.report(pods).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (node, pod) = h.pod("default/web-0").unwrap();
        assert_eq!((node.as_str(), pod.phase.as_str()), ("n1", "Running"));
        assert!(
            h.snapshot().get("n1").unwrap().version > v,
            "a report bumps the version"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
