//! `shoal-testnet bench applies`: sequential small applies per second through one node's API,
//! next to sequential puts through a single etcd member's JSON gateway (the anchor of
//! `../shared/TARGETS.md`) in the same run when `etcd` is installed.
//!
//! One client, one kept-alive HTTP connection, one request at a time: each apply is a new
//! ConfigMap of a few bytes, acknowledged only once it is on disk (fsynced), as each etcd put
//! is. It also prints what the desired-state document takes on disk afterwards.

use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine as _;
use serde_json::json;

use crate::Cluster;

/// Runs the benchmark; returns (shoal applies/s, etcd puts/s if measured).
pub fn applies(count: usize) -> anyhow::Result<(f64, Option<f64>)> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::up(1, dir.path())?;
    let api = cluster.nodes()[0].api()?;
    let manifest = |i: usize| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a{i}}}\ndata: {{k: v}}\n")
    };
    // Warm up the connection and the store.
    for i in 0..20 {
        api.apply(&manifest(count + i))?;
    }
    let started = Instant::now();
    for i in 0..count {
        let (code, body) = api.apply(&manifest(i))?;
        if code != 200 && code != 201 {
            bail!("apply {i}: {code} {body}");
        }
    }
    let shoal = count as f64 / started.elapsed().as_secs_f64();
    println!("shoal: {count} sequential applies through the API: {shoal:.0} applies/s");
    // What the desired-state document takes on disk after them (snapshot and change log).
    let data_dir = &cluster.nodes()[0].opts.data_dir;
    let size = |f: &str| std::fs::metadata(data_dir.join(f)).map_or(0, |m| m.len());
    let (snapshot, log) = (size("state.automerge"), size("state.log"));
    println!(
        "state on disk after {} applies: snapshot {snapshot} bytes + log {log} bytes = {:.2} MiB",
        count + 20,
        (snapshot + log) as f64 / (1024.0 * 1024.0)
    );
    drop(cluster);
    let etcd = match etcd_puts(count) {
        Ok(r) => {
            println!(
                "etcd member: {count} sequential puts through the JSON gateway: {r:.0} puts/s"
            );
            Some(r)
        }
        Err(e) => {
            println!("anchor etcd: not measured: {e:#}");
            None
        }
    };
    Ok((shoal, etcd))
}

fn etcd_puts(count: usize) -> anyhow::Result<f64> {
    let etcd = crate::etcd::EtcdMember::start()?;
    let url = etcd.url();
    let http = reqwest::blocking::Client::new();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let put = |key: &str| -> anyhow::Result<()> {
        let r = http
            .post(format!("{url}/v3/kv/put"))
            .json(&json!({"key": b64(key), "value": b64("v")}))
            .send()?;
        if !r.status().is_success() {
            bail!("etcd put: {}", r.status());
        }
        Ok(())
    };
    let began = Instant::now();
    while put("warmup").is_err() {
        if began.elapsed() > Duration::from_secs(20) {
            bail!("etcd did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..20 {
        put(&format!("w{i}"))?;
    }
    let started = Instant::now();
    for i in 0..count {
        put(&format!("a{i}"))?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
