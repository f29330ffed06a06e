//! Probes: the pure verdict machine ([`ProbeMachine`]: thresholds of consecutive results) and
//! the workers that run one probe of one container run on its period (httpGet to the
//! container's address on the node's bridge network, tcpSocket, exec through the runtime).
//!
//! A worker only measures: it sends each result to the agent task, which owns the machines and
//! decides (ready flag, restart on liveness failure). Startup probes gate the others: the agent
//! starts liveness and readiness workers only once the startup probe has succeeded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::intstr::IntOrString;
use shoal_protocol::kinds::{Container, Probe, Scheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }

    /// The container's probe of this kind.
    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => c.startup_probe.as_ref(),
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

fn threshold(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(1).max(1)
}

/// Consecutive results of one probe, and the verdict they reached: `None` before any
/// threshold was met; `Some(true)` after `successThreshold` successes in a row; `Some(false)`
/// after `failureThreshold` failures in a row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeMachine {
    pub successes: u32,
    pub failures: u32,
    pub verdict: Option<bool>,
    pub last_message: String,
}

impl ProbeMachine {
    /// Records one result; returns the verdict when it changed.
    pub fn record(&mut self, probe: &Probe, ok: bool, message: &str) -> Option<bool> {
        self.last_message = message.to_string();
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= threshold(probe.success_threshold) && self.verdict != Some(true) {
                self.verdict = Some(true);
                return self.verdict;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= threshold(probe.failure_threshold) && self.verdict != Some(false) {
                self.verdict = Some(false);
                return self.verdict;
            }
        }
        None
    }
}

/// The probe machines of one container run. A new run (another id or start time) starts
/// from scratch, as Kubernetes does after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeMemory {
    pub instance: Option<String>,
    pub machines: BTreeMap<ProbeKind, ProbeMachine>,
}

impl ProbeMemory {
    /// Forgets the verdicts of a previous run.
    pub fn follow(&mut self, instance: &str) {
        if self.instance.as_deref() != Some(instance) {
            self.instance = Some(instance.to_string());
            self.machines.clear();
        }
    }

    fn verdict(&self, kind: ProbeKind) -> Option<bool> {
        self.machines.get(&kind).and_then(|m| m.verdict)
    }

    /// Whether the container counts as started: no startup probe, or it succeeded.
    pub fn started(&self, c: &Container) -> bool {
        c.startup_probe.is_none() || self.verdict(ProbeKind::Startup) == Some(true)
    }

    /// Whether the (running) container is ready: started, and its readiness probe (if any)
    /// succeeded last.
    pub fn ready(&self, c: &Container) -> bool {
        self.started(c)
            && (c.readiness_probe.is_none() || self.verdict(ProbeKind::Readiness) == Some(true))
    }
}

/// The identity of one container run for probes: its id and start time.
pub fn instance(id: &str, started_at: Option<&str>) -> String {
    format!("{id}@{}", started_at.unwrap_or_default())
}

/// One probe result, from a worker to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    pub pod: String,
    pub container: String,
    /// The container's id and the run (see [`instance`]) the result belongs to.
    pub id: String,
    pub instance: String,
    pub kind: ProbeKind,
    pub ok: bool,
    pub message: String,
}

/// Where a probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub id: String,
    pub ip: Option<String>,
    /// Container port names → numbers, for `port: http`.
    pub named_ports: BTreeMap<String, u16>,
}

fn secs(n: i32) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

/// Runs `probe` every period until `cancel` fires (or the agent is gone), after the initial
/// delay, sending every result.
#[allow(clippy::too_many_arguments)]
pub async fn worker(
    rt: Arc<dyn Runtime>,
    pod: String,
    container: String,
    instance: String,
    kind: ProbeKind,
    probe: Probe,
    target: ProbeTarget,
    tx: mpsc::Sender<ProbeEvent>,
    cancel: CancellationToken,
) {
    let period = secs(probe.period_seconds).max(Duration::from_secs(1));
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(secs(probe.initial_delay_seconds)) => {}
    }
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = run_once(rt.as_ref(), &probe, &target) => r,
        };
        let (ok, message) = match result {
            Ok(()) => (true, String::new()),
            Err(m) => (false, m),
        };
        let event = ProbeEvent {
            pod: pod.clone(),
            container: container.clone(),
            id: target.id.clone(),
            instance: instance.clone(),
            kind,
            ok,
            message,
        };
        if tx.send(event).await.is_err() {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Runs a probe once, bounded by its timeout. `Err` says why it failed.
pub async fn run_once(rt: &dyn Runtime, probe: &Probe, target: &ProbeTarget) -> Result<(), String> {
    let timeout = secs(probe.timeout_seconds).max(Duration::from_secs(1));
    let fut = async {
        if let Some(exec) = &probe.exec {
            let out = rt
                .exec_output(&target.id, &exec.command)
                .await
                .map_err(|e| format!("exec: {e}"))?;
            return if out.exit_code == 0 {
                Ok(())
            } else {
                Err(format!(
                    "exec {:?} exited with {}: {}",
                    exec.command,
                    out.exit_code,
                    String::from_utf8_lossy(&out.stdout).trim()
                ))
            };
        }
        if let Some(tcp) = &probe.tcp_socket {
            let addr = address(tcp.host.as_deref(), &tcp.port, target)?;
            TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("tcp {addr}: {e}"))?;
            return Ok(());
        }
        if let Some(http) = &probe.http_get {
            if http.scheme == Scheme::Https {
                return Err("httpGet with scheme HTTPS is not supported".into());
            }
            let addr = address(http.host.as_deref(), &http.port, target)?;
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let code = http_get(&addr, &http.path, &headers).await?;
            return if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("GET http://{addr}{}: status {code}", http.path))
            };
        }
        Err("the probe has no handler (httpGet, tcpSocket or exec)".into())
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

/// `ip:port` of a probe: the explicit host or the container's address, the port by number or
/// by container port name.
pub fn address(
    host: Option<&str>,
    port: &IntOrString,
    target: &ProbeTarget,
) -> Result<String, String> {
    let port = match port {
        IntOrString::Int(p) => {
            u16::try_from(*p).map_err(|_| format!("port {p} is out of range"))?
        }
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(p) => p,
            Err(_) => *target
                .named_ports
                .get(name)
                .ok_or_else(|| format!("no container port named {name:?}"))?,
        },
    };
    let host = match host.filter(|h| !h.is_empty()) {
        Some(h) => h.to_string(),
        None => target
            .ip
            .clone()
            .ok_or_else(|| "the container has no address yet".to_string())?,
    };
    Ok(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// A minimal HTTP/1.1 GET: enough to read a status code, without pulling an HTTP client into
/// the daemon.
async fn http_get(addr: &str, path: &str, headers: &[(String, String)]) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
    let path = if path.is_empty() { "/" } else { path };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: shoal-probe\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status(&buf).ok_or_else(|| format!("GET http://{addr}{path}: no HTTP status line"))
}

/// The status code of an HTTP response's first line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}
