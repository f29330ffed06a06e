//! [`SimRuntime`]: an in-memory, deterministic [`Runtime`] for unit tests and the large-N
//! simulator.
//!
//! It owns a table of simulated containers, volumes, networks and present images. Nothing
//! runs: a started container stays `Running` until a test hook ends it ([`SimRuntime::exit`],
//! [`SimRuntime::oom_kill`]) or the node stops or kills it. Ids, host ports, addresses and
//! timestamps come from counters and a settable clock, so the same calls give the same
//! results. Test hooks also count calls per operation, inject failures, append log lines
//! and decide exec results.
//!
//! Semantics follow Docker's where the node depends on them: creating with a missing image is
//! `ImageNotFound`; a taken name is `Conflict`; `start` of a running container and `stop`/`kill`
//! of a stopped one succeed; `remove` takes a running container too; stop ends with exit code
//! 0 (the process honoured SIGTERM) unless [`SimRuntime::ignore_sigterm`] says otherwise, in
//! which case it ends as a kill does, 137.
//!
//! The engine itself can go away and come back: [`SimRuntime::stop_engine`] does what a
//! SIGTERM to `dockerd` does (its socket goes at once, its running containers stop and stay
//! stopped, since shoal sets no restart policy), [`SimRuntime::set_unreachable`] only makes it
//! stop answering (a hung engine), and [`SimRuntime::start_engine`] brings it back. Meanwhile
//! every call fails with [`RuntimeError::Unavailable`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    ByteStream, ContainerInfo, ContainerSpec, ContainerState, ExecChunk, ExecOutput, ExecSession,
    ExecSpec, FsUsage, ImageInfo, LogOptions, NetworkInfo, NetworkSpec, PortBinding, RegistryAuth,
    Runtime, RuntimeError, Stats, Subnet, VolumeInfo, VolumeSpec, labels_match,
};

/// Decides an exec's result in the simulation: given the container and the command.
pub type ExecHandler = Arc<dyn Fn(&ContainerInfo, &[String]) -> ExecOutput + Send + Sync>;

/// The simulated engine. Cloning shares the same simulated engine.
#[derive(Clone)]
pub struct SimRuntime {
    // A std Mutex: every critical section is a few map operations and never awaits.
    inner: Arc<Mutex<Sim>>,
}

struct SimContainer {
    info: ContainerInfo,
    spec: ContainerSpec,
    logs: Vec<u8>,
    ignore_sigterm: bool,
}

struct Sim {
    images: BTreeSet<String>,
    containers: BTreeMap<String, SimContainer>,
    volumes: BTreeMap<String, VolumeInfo>,
    /// Networks by name, with the number of each (its subnet is `172.(18+n).0.0/16`).
    networks: BTreeMap<String, u32>,
    /// How each network was made, by number.
    network_specs: BTreeMap<u32, NetworkSpec>,
    next_network: u32,
    execs: HashMap<String, i64>,
    calls: BTreeMap<&'static str, u64>,
    failures: HashMap<&'static str, Vec<RuntimeError>>,
    exec_handler: Option<ExecHandler>,
    next_id: u64,
    next_port: u16,
    next_ip: u32,
    /// Simulated wall clock, Unix seconds.
    now: i64,
    /// Why the engine does not answer, while it does not: every call fails with it.
    unreachable: Option<String>,
    /// What the simulated registries serve (normalised names), each with the username and
    /// password it needs, if any.
    registry: BTreeMap<String, Option<(String, String)>>,
    /// How many times each reference was published (its manifest digest changes each time).
    pushes: HashMap<String, u64>,
    /// The manifest digest each pulled image was pulled at (its repo digest).
    repo_digests: HashMap<String, String>,
    /// Registry hosts that do not answer.
    registries_down: BTreeSet<String>,
    /// How long each pull takes (paused-time tests advance through it).
    pull_delay: Duration,
    /// Finished pulls per normalised name.
    pulls: BTreeMap<String, u64>,
    /// What [`Runtime::image_fs`] reports.
    fs: FsUsage,
}

/// Why calls fail after [`SimRuntime::stop_engine`], worded as the Docker runtime words it.
pub const SIM_SOCKET_GONE: &str = "cannot reach the Docker engine at unix:///sim/docker.sock (no such socket): is dockerd running?";

/// Where simulated time starts: 2026-01-01T00:00:00Z.
const SIM_EPOCH: i64 = 1_767_225_600;

impl SimRuntime {
    /// An engine with these images present.
    pub fn new<I, S>(images: I) -> SimRuntime
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        SimRuntime {
            inner: Arc::new(Mutex::new(Sim {
                images: images
                    .into_iter()
                    .map(|i| normalize_image(&i.into()))
                    .collect(),
                containers: BTreeMap::new(),
                volumes: BTreeMap::new(),
                networks: BTreeMap::new(),
                network_specs: BTreeMap::new(),
                next_network: 0,
                execs: HashMap::new(),
                calls: BTreeMap::new(),
                failures: HashMap::new(),
                exec_handler: None,
                next_id: 1,
                next_port: 32768,
                next_ip: 2,
                now: SIM_EPOCH,
                unreachable: None,
                registry: BTreeMap::new(),
                pushes: HashMap::new(),
                repo_digests: HashMap::new(),
                registries_down: BTreeSet::new(),
                pull_delay: Duration::ZERO,
                pulls: BTreeMap::new(),
                fs: FsUsage {
                    capacity: 100 << 30,
                    used: 10 << 30,
                },
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        // A panic in a test thread must not hide the state from the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(normalize_image(image));
    }

    pub fn remove_image(&self, image: &str) {
        self.lock().images.remove(&normalize_image(image));
    }

    /// Makes `image` pullable from its simulated registry, with `credentials` required when
    /// given.
    pub fn publish(&self, image: &str, credentials: Option<(&str, &str)>) {
        let mut sim = self.lock();
        let key = normalize_image(image);
        *sim.pushes.entry(key.clone()).or_default() += 1;
        sim.registry.insert(
            key,
            credentials.map(|(u, p)| (u.to_string(), p.to_string())),
        );
    }

    /// Makes the registry at `host` (e.g. `reg.lan:5000`) refuse connections, or answer again.
    pub fn set_registry_down(&self, host: &str, down: bool) {
        let mut sim = self.lock();
        if down {
            sim.registries_down.insert(host.to_string());
        } else {
            sim.registries_down.remove(host);
        }
    }

    /// Every pull takes this long from now on.
    pub fn set_pull_delay(&self, delay: Duration) {
        self.lock().pull_delay = delay;
    }

    /// What the image filesystem reports from now on.
    pub fn set_image_fs(&self, fs: FsUsage) {
        self.lock().fs = fs;
    }

    /// Whether `image` is present (without counting a call).
    pub fn has_image(&self, image: &str) -> bool {
        self.lock().images.contains(&normalize_image(image))
    }

    /// How many pulls of `image` finished.
    pub fn pulls(&self, image: &str) -> u64 {
        self.lock()
            .pulls
            .get(&normalize_image(image))
            .copied()
            .unwrap_or(0)
    }

    /// Sets the simulated clock (Unix seconds); timestamps in [`ContainerInfo`] follow it.
    pub fn set_now(&self, unix_secs: i64) {
        self.lock().now = unix_secs;
    }

    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        let mut sim = self.lock();
        sim.now = sim.now.saturating_add(secs);
    }

    /// How many times `op` (a trait method's name, e.g. `"create"`) was called.
    pub fn calls(&self, op: &str) -> u64 {
        self.lock().calls.get(op).copied().unwrap_or(0)
    }

    /// Every call count, by operation.
    pub fn all_calls(&self) -> BTreeMap<&'static str, u64> {
        self.lock().calls.clone()
    }

    /// Makes the next call of `op` fail with `err` (queued: several calls fail in order).
    pub fn fail_next(&self, op: &'static str, err: RuntimeError) {
        self.lock().failures.entry(op).or_default().push(err);
    }

    /// The engine stops as `dockerd` does on SIGTERM: every running container stops (exit 0,
    /// or 137 for one that ignores SIGTERM) and every call fails with
    /// [`RuntimeError::Unavailable`] until [`SimRuntime::start_engine`].
    pub fn stop_engine(&self) {
        let mut sim = self.lock();
        let ids: Vec<String> = sim.containers.keys().cloned().collect();
        for id in ids {
            // Every id was just listed under the lock: it resolves.
            let _ = sim.stop_now(&id, None);
        }
        sim.unreachable = Some(SIM_SOCKET_GONE.to_string());
    }

    /// The containers running now, whether or not the engine answers (a hung engine's
    /// containers still run): what an observer outside the engine sees.
    pub fn running(&self) -> Vec<ContainerInfo> {
        self.lock()
            .containers
            .values()
            .filter(|c| c.info.state == ContainerState::Running)
            .map(|c| c.info.clone())
            .collect()
    }

    /// The engine answers again, with the containers as it left them.
    pub fn start_engine(&self) {
        self.lock().unreachable = None;
    }

    /// The engine stops answering with `why` (Some), its containers untouched (a hung or
    /// unreachable engine), or answers again (None).
    pub fn set_unreachable(&self, why: Option<&str>) {
        self.lock().unreachable = why.map(str::to_string);
    }

    /// The process in container `id` exits by itself with `code`.
    pub fn exit(&self, id: &str, code: i64) -> Result<(), RuntimeError> {
        self.end(id, code, false)
    }

    /// The kernel kills the process in `id` for exceeding its memory limit.
    pub fn oom_kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.end(id, 137, true)
    }

    /// The process in `id` ignores SIGTERM: `stop` ends as a kill (137).
    pub fn ignore_sigterm(&self, id: &str) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        let c = sim.get_mut(id)?;
        c.ignore_sigterm = true;
        Ok(())
    }

    /// The container `id` writes `data` to its output (visible to `logs`).
    pub fn append_log(&self, id: &str, data: &[u8]) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.get_mut(id)?.logs.extend_from_slice(data);
        Ok(())
    }

    /// Decides the result of every later exec; without one, execs succeed with no output.
    pub fn set_exec_handler(&self, handler: ExecHandler) {
        self.lock().exec_handler = Some(handler);
    }

    /// The spec a container was created from.
    pub fn spec(&self, id: &str) -> Result<ContainerSpec, RuntimeError> {
        let mut sim = self.lock();
        Ok(sim.get_mut(id)?.spec.clone())
    }

    /// Every network made so far.
    pub fn networks(&self) -> BTreeSet<String> {
        self.lock().networks.keys().cloned().collect()
    }

    fn end(&self, id: &str, code: i64, oom: bool) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        let now = sim.now_str();
        let c = sim.get_mut(id)?;
        if c.info.state != ContainerState::Running {
            return Err(RuntimeError::Conflict {
                message: format!("container {id} is not running"),
            });
        }
        c.info.state = ContainerState::Exited;
        c.info.exit_code = Some(code);
        c.info.oom_killed = oom;
        c.info.finished_at = Some(now);
        Ok(())
    }
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sim = self.lock();
        f.debug_struct("SimRuntime")
            .field("containers", &sim.containers.len())
            .field("images", &sim.images)
            .finish_non_exhaustive()
    }
}

/// `name` and `name:latest` are one image, as Docker sees them.
fn normalize_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

impl Sim {
    /// What a registry says to a pull or a manifest request of `name` at `tag_or_digest`: the
    /// normalised reference it serves, or the engine's words for its refusal.
    fn ask_registry(
        &self,
        name: &str,
        tag_or_digest: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        let full = if tag_or_digest.starts_with("sha256:") {
            format!("{name}@{tag_or_digest}")
        } else {
            format!("{name}:{tag_or_digest}")
        };
        let key = normalize_image(&full);
        let host = name
            .split_once('/')
            .map_or("docker.io", |(h, _)| h)
            .to_string();
        if self.registries_down.contains(&host) {
            return Err(RuntimeError::Other {
                message: format!(
                    "Get \"http://{host}/v2/\": dial tcp {host}: connect: connection refused"
                ),
            });
        }
        match self.registry.get(&key) {
            None => Err(RuntimeError::Other {
                message: format!(
                    "manifest for {full} not found: manifest unknown: manifest unknown (HTTP 404)"
                ),
            }),
            Some(Some((user, pass)))
                if auth.is_none_or(|a| &a.username != user || &a.password != pass) =>
            {
                Err(RuntimeError::Other {
                    message: format!(
                        "Head \"http://{host}/v2/{}/manifests/{tag_or_digest}\": no basic auth credentials (HTTP 500)",
                        name.split_once('/').map_or(name, |(_, r)| r)
                    ),
                })
            }
            Some(_) => Ok(key),
        }
    }

    /// The stored name of the image `image` names: by its name, or by `repo@digest` when it
    /// was pulled at that digest.
    fn find_image(&self, image: &str) -> Option<String> {
        let name = normalize_image(image);
        if self.images.contains(&name) {
            return Some(name);
        }
        let (repo, digest) = image.split_once('@')?;
        self.images
            .iter()
            .find(|n| {
                repository(n) == repo && self.repo_digests.get(*n).is_some_and(|d| d == digest)
            })
            .cloned()
    }

    /// The digest of the manifest the registry serves for `key` now: it changes with every
    /// [`SimRuntime::publish`].
    fn manifest_digest(&self, key: &str) -> String {
        let pushes = self.pushes.get(key).copied().unwrap_or(0);
        format!("sha256:{:064x}", fnv(&format!("{key}#{pushes}")))
    }

    /// Counts the call and pops an injected failure for it, if any.
    fn enter(&mut self, op: &'static str) -> Result<(), RuntimeError> {
        *self.calls.entry(op).or_insert(0) += 1;
        if let Some(why) = &self.unreachable {
            return Err(RuntimeError::Unavailable {
                message: why.clone(),
            });
        }
        match self.failures.get_mut(op) {
            Some(queue) if !queue.is_empty() => Err(queue.remove(0)),
            _ => Ok(()),
        }
    }

    fn now_str(&self) -> String {
        crate::time::rfc3339(self.now)
    }

    /// By full id, unique id prefix, or name, as Docker resolves them.
    fn resolve(&self, id: &str) -> Option<String> {
        if self.containers.contains_key(id) {
            return Some(id.to_string());
        }
        if let Some((k, _)) = self.containers.iter().find(|(_, c)| c.info.name == id) {
            return Some(k.clone());
        }
        let mut prefixed = self.containers.keys().filter(|k| k.starts_with(id));
        match (prefixed.next(), prefixed.next()) {
            (Some(k), None) if !id.is_empty() => Some(k.clone()),
            _ => None,
        }
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut SimContainer, RuntimeError> {
        let key = self
            .resolve(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
        self.containers
            .get_mut(&key)
            .ok_or_else(|| RuntimeError::NotFound { id: id.into() })
    }

    fn running(&mut self, id: &str) -> Result<&mut SimContainer, RuntimeError> {
        let c = self.get_mut(id)?;
        if c.info.state != ContainerState::Running {
            return Err(RuntimeError::Conflict {
                message: format!("container {id} is not running"),
            });
        }
        Ok(c)
    }

    fn allocated_host_ports(&self) -> BTreeSet<(String, u16, super::Protocol)> {
        self.containers
            .values()
            .filter(|c| c.info.state == ContainerState::Running)
            .flat_map(|c| c.info.ports.iter())
            .map(|p| (p.host_ip.clone(), p.host_port, p.protocol))
            .collect()
    }

    fn stop_now(&mut self, id: &str, exit_code: Option<i64>) -> Result<(), RuntimeError> {
        let now = self.now_str();
        let c = self.get_mut(id)?;
        if c.info.state == ContainerState::Running {
            c.info.state = ContainerState::Exited;
            c.info.exit_code = Some(exit_code.unwrap_or(if c.ignore_sigterm { 137 } else { 0 }));
            c.info.finished_at = Some(now);
        }
        Ok(())
    }
}

#[async_trait]
impl Runtime for SimRuntime {
    async fn ensure_network(&self, name: &str, spec: &NetworkSpec) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("ensure_network")?;
        if let Some(n) = sim.networks.get(name).copied() {
            let made = sim.network_specs.get(&n);
            if spec.subnet.is_some() && made.and_then(|m| m.subnet) != spec.subnet {
                return Err(RuntimeError::Conflict {
                    message: format!("network {name} exists on another subnet"),
                });
            }
            return Ok(());
        }
        let n = sim.next_network;
        sim.next_network += 1;
        sim.networks.insert(name.to_string(), n);
        sim.network_specs.insert(n, spec.clone());
        Ok(())
    }

    async fn inspect_network(&self, name: &str) -> Result<NetworkInfo, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("inspect_network")?;
        let Some(n) = sim.networks.get(name).copied() else {
            return Err(RuntimeError::NotFound { id: name.into() });
        };
        if let Some(spec) = sim.network_specs.get(&n).filter(|s| s.subnet.is_some()) {
            return Ok(NetworkInfo {
                name: name.to_string(),
                id: format!("{:064x}", fnv(name)),
                subnet: spec.subnet,
                gateway: spec.gateway,
                ip_range: spec.ip_range,
            });
        }
        // 172.18.0.0/16, 172.19.0.0/16, ... as Docker's default pool hands them out.
        let second = u8::try_from(18 + n % 200).unwrap_or(18);
        Ok(NetworkInfo {
            name: name.to_string(),
            id: format!("{:064x}", fnv(name)),
            subnet: Some(Subnet {
                addr: std::net::Ipv4Addr::new(172, second, 0, 0).into(),
                prefix: 16,
            }),
            gateway: Some(std::net::Ipv4Addr::new(172, second, 0, 1).into()),
            ip_range: None,
        })
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("remove_network")?;
        if sim.networks.remove(name).is_none() {
            return Err(RuntimeError::NotFound { id: name.into() });
        }
        Ok(())
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("image_present")?;
        Ok(sim.find_image(image).is_some())
    }

    async fn image_info(&self, image: &str) -> Result<ImageInfo, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("image_info")?;
        let Some(name) = sim.find_image(image) else {
            return Err(RuntimeError::NotFound { id: image.into() });
        };
        Ok(sim_image_info(&name, sim.repo_digests.get(&name)))
    }

    /// The simulated tarball is the names of its images, one a line; anything else (or a
    /// stream that fails) loads nothing.
    async fn load_image(&self, mut tarball: ByteStream) -> Result<Vec<String>, RuntimeError> {
        self.lock().enter("load_image")?;
        let mut bytes = Vec::new();
        while let Some(chunk) = tarball.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        let text = String::from_utf8(bytes).map_err(|_| RuntimeError::Other {
            message: "unexpected EOF: not a tarball".into(),
        })?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if names.is_empty() || names.iter().any(|n| n.contains(char::is_whitespace)) {
            return Err(RuntimeError::Other {
                message: "unexpected EOF: not a tarball".into(),
            });
        }
        let mut sim = self.lock();
        for n in &names {
            // A loaded image keeps its id but no repo digest.
            sim.repo_digests.remove(&normalize_image(n));
            sim.images.insert(normalize_image(n));
        }
        Ok(names)
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("list_images")?;
        Ok(sim
            .images
            .iter()
            .map(|n| sim_image_info(n, sim.repo_digests.get(n)))
            .collect())
    }

    /// The simulated tarball of an image is its name on a line (what [`Runtime::load_image`]
    /// here reads back).
    async fn export_image(&self, image: &str) -> Result<ByteStream, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("export_image")?;
        let name = normalize_image(image);
        if !sim.images.contains(&name) {
            return Err(RuntimeError::NotFound { id: image.into() });
        }
        let bytes = Bytes::from(format!("{name}\n"));
        Ok(futures_util::stream::iter([Ok(bytes)]).boxed())
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("remove_image")?;
        let name = normalize_image(image);
        if !sim.images.contains(&name) {
            return Err(RuntimeError::NotFound { id: image.into() });
        }
        if let Some(c) = sim
            .containers
            .values()
            .find(|c| normalize_image(&c.info.image) == name)
        {
            return Err(RuntimeError::Conflict {
                message: format!(
                    "unable to remove repository reference \"{image}\" (must force) - container {} is using its referenced image",
                    &c.info.id[..12.min(c.info.id.len())]
                ),
            });
        }
        sim.images.remove(&name);
        Ok(())
    }

    async fn image_fs(&self) -> Result<FsUsage, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("image_fs")?;
        Ok(sim.fs)
    }

    async fn pull(
        &self,
        name: &str,
        tag_or_digest: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), RuntimeError> {
        let key = {
            let mut sim = self.lock();
            sim.enter("pull")?;
            sim.ask_registry(name, tag_or_digest, auth)?
        };
        let delay = self.lock().pull_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut sim = self.lock();
        let digest = sim.manifest_digest(&key);
        sim.repo_digests.insert(key.clone(), digest);
        sim.images.insert(key.clone());
        *sim.pulls.entry(key).or_default() += 1;
        Ok(())
    }

    async fn registry_digest(
        &self,
        name: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("registry_digest")?;
        let key = sim.ask_registry(name, tag, auth)?;
        Ok(sim.manifest_digest(&key))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("create")?;
        if !sim.images.contains(&normalize_image(&spec.image)) {
            return Err(RuntimeError::ImageNotFound {
                image: spec.image.clone(),
            });
        }
        if sim.containers.values().any(|c| c.info.name == spec.name) {
            return Err(RuntimeError::Conflict {
                message: format!("the container name {:?} is already in use", spec.name),
            });
        }
        if let Some(net) = &spec.network
            && !sim.networks.contains_key(net)
        {
            return Err(RuntimeError::NotFound {
                id: format!("network {net}"),
            });
        }
        let id = format!("{:064x}", sim.next_id);
        sim.next_id += 1;
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id: format!("sha256:{:064x}", fnv(&normalize_image(&spec.image))),
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            network: spec.network.clone(),
            ..Default::default()
        };
        sim.containers.insert(
            id.clone(),
            SimContainer {
                info,
                spec: spec.clone(),
                logs: Vec::new(),
                ignore_sigterm: false,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("start")?;
        let state = sim.get_mut(id)?.info.state;
        if state == ContainerState::Running {
            return Ok(());
        }
        // Ports are bound at start, as Docker does; fixed ports may clash with running ones.
        let taken = sim.allocated_host_ports();
        let spec = sim.get_mut(id)?.spec.clone();
        let mut ports = Vec::new();
        for p in &spec.ports {
            let host_ip = p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
            let host_port = if p.host_port == 0 {
                let port = sim.next_port;
                sim.next_port = sim.next_port.checked_add(1).unwrap_or(32768);
                port
            } else {
                if taken.contains(&(host_ip.clone(), p.host_port, p.protocol)) {
                    return Err(RuntimeError::Conflict {
                        message: format!(
                            "Bind for {host_ip}:{} failed: port is already allocated",
                            p.host_port
                        ),
                    });
                }
                p.host_port
            };
            ports.push(PortBinding {
                container_port: p.container_port,
                protocol: p.protocol,
                host_ip,
                host_port,
            });
        }
        ports.sort();
        let ip_n = sim.next_ip;
        sim.next_ip += 1;
        let now = sim.now_str();
        let c = sim.get_mut(id)?;
        c.info.state = ContainerState::Running;
        c.info.exit_code = None;
        c.info.oom_killed = false;
        c.info.started_at = Some(now);
        c.info.finished_at = None;
        c.info.ports = ports;
        c.info.ip = Some(format!(
            "10.{}.{}.{}",
            (ip_n >> 16) & 0xff,
            (ip_n >> 8) & 0xff,
            ip_n & 0xff
        ));
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("stop")?;
        sim.stop_now(id, None)
    }

    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("kill")?;
        sim.stop_now(id, Some(137))
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("remove")?;
        let key = sim
            .resolve(id)
            .ok_or_else(|| RuntimeError::NotFound { id: id.into() })?;
        sim.containers.remove(&key);
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("inspect")?;
        Ok(sim.get_mut(id)?.info.clone())
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("list")?;
        Ok(sim
            .containers
            .values()
            .filter(|c| labels_match(&c.info.labels, labels))
            .map(|c| c.info.clone())
            .collect())
    }

    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<ByteStream, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("logs")?;
        let logs = sim.get_mut(id)?.logs.clone();
        // Whole lines, so that `tail` counts lines as Docker does; `since`, `follow` and
        // `timestamps` have no meaning without a real clock and process.
        let mut lines: Vec<Bytes> = logs
            .split_inclusive(|b| *b == b'\n')
            .map(Bytes::copy_from_slice)
            .collect();
        if let Some(n) = opts.tail {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        Ok(futures_util::stream::iter(lines.into_iter().map(Ok)).boxed())
    }

    async fn exec_output(&self, id: &str, cmd: &[String]) -> Result<ExecOutput, RuntimeError> {
        let (info, handler) = {
            let mut sim = self.lock();
            sim.enter("exec_output")?;
            let info = sim.running(id)?.info.clone();
            (info, sim.exec_handler.clone())
        };
        // Outside the lock: the handler is the test's code and may call back into the sim.
        Ok(handler.map(|h| h(&info, cmd)).unwrap_or_default())
    }

    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecSession, RuntimeError> {
        let (info, handler, exec_id) = {
            let mut sim = self.lock();
            sim.enter("exec")?;
            let info = sim.running(id)?.info.clone();
            let exec_id = format!("exec-{}", sim.next_id);
            sim.next_id += 1;
            (info, sim.exec_handler.clone(), exec_id)
        };
        let out = handler.map(|h| h(&info, &spec.cmd)).unwrap_or_default();
        self.lock().execs.insert(exec_id.clone(), out.exit_code);
        let mut chunks = Vec::new();
        if !out.stdout.is_empty() {
            chunks.push(Ok(ExecChunk::Stdout(Bytes::from(out.stdout))));
        }
        if !out.stderr.is_empty() {
            chunks.push(Ok(ExecChunk::Stderr(Bytes::from(out.stderr))));
        }
        Ok(ExecSession {
            exec_id,
            output: futures_util::stream::iter(chunks).boxed(),
            // Input is accepted and dropped: the simulated process reads nothing.
            input: spec
                .stdin
                .then(|| Box::pin(tokio::io::sink()) as super::ExecInput),
        })
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("exec_exit_code")?;
        sim.execs
            .get(exec_id)
            .map(|c| Some(*c))
            .ok_or_else(|| RuntimeError::NotFound { id: exec_id.into() })
    }

    async fn exec_resize(
        &self,
        exec_id: &str,
        _width: u16,
        _height: u16,
    ) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("exec_resize")?;
        if !sim.execs.contains_key(exec_id) {
            return Err(RuntimeError::NotFound { id: exec_id.into() });
        }
        Ok(())
    }

    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("stats")?;
        let c = sim.running(id)?;
        // Plausible, deterministic numbers: a tenth of the limit (or 8 MiB) of memory.
        Ok(Stats {
            cpu_nanos: 0,
            memory_bytes: c.spec.memory_limit.map(|m| m / 10).unwrap_or(8 << 20),
        })
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("create_volume")?;
        let info = sim
            .volumes
            .entry(spec.name.clone())
            .or_insert_with(|| VolumeInfo {
                name: spec.name.clone(),
                driver: spec.driver.clone().unwrap_or_else(|| "local".into()),
                labels: spec.labels.clone(),
                options: spec.driver_opts.clone(),
                mountpoint: format!("/var/lib/docker/volumes/{}/_data", spec.name),
            });
        Ok(info.clone())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let mut sim = self.lock();
        sim.enter("remove_volume")?;
        if !sim.volumes.contains_key(name) {
            return Err(RuntimeError::NotFound { id: name.into() });
        }
        let in_use = sim.containers.values().any(|c| {
            c.spec
                .mounts
                .iter()
                .any(|m| matches!(m, super::MountSpec::Volume { name: n, .. } if n == name))
        });
        if in_use {
            return Err(RuntimeError::Conflict {
                message: format!("volume {name} is in use"),
            });
        }
        sim.volumes.remove(name);
        Ok(())
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<VolumeInfo>, RuntimeError> {
        let mut sim = self.lock();
        sim.enter("list_volumes")?;
        Ok(sim
            .volumes
            .values()
            .filter(|v| labels_match(&v.labels, labels))
            .cloned()
            .collect())
    }
}

/// A stable, dependency-free hash for fake image ids.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A simulated image as the engine would describe it: its id derived from its name, and the
/// manifest digest it was pulled at, if it was pulled (a loaded image has none).
fn sim_image_info(name: &str, digest: Option<&String>) -> ImageInfo {
    ImageInfo {
        id: format!("sha256:{:064x}", fnv(name)),
        repo_tags: vec![name.to_string()],
        repo_digests: digest
            .map(|d| format!("{}@{d}", repository(name)))
            .into_iter()
            .collect(),
        size: 7_340_032,
    }
}

/// `name:tag` without its tag.
fn repository(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::{MountSpec, PortSpec, Protocol};
    use super::*;
    use futures_util::TryStreamExt;

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "shoal-test/echo".into(),
            labels: [("shoal.pod".to_string(), name.to_string())].into(),
            ports: vec![PortSpec {
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_ip: Some("127.0.0.1".into()),
                host_port: 0,
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn lifecycle() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let id = rt.create(&spec("a")).await.unwrap();
        let info = rt.inspect(&id).await.unwrap();
        assert_eq!(info.state, ContainerState::Created);
        assert_eq!(info.name, "a");
        assert!(info.ports.is_empty(), "ports are bound at start");

        rt.start(&id).await.unwrap();
        rt.start("a").await.unwrap(); // by name, and idempotent
        let info = rt.inspect(&id).await.unwrap();
        assert_eq!(info.state, ContainerState::Running);
        assert_eq!(
            info.host_port(8080, Protocol::Tcp).unwrap().host_port,
            32768
        );
        assert_eq!(info.started_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert!(info.ip.is_some());

        rt.advance(Duration::from_secs(5));
        rt.stop(&id, Duration::from_secs(30)).await.unwrap();
        rt.stop(&id, Duration::from_secs(30)).await.unwrap();
        let info = rt.inspect(&id).await.unwrap();
        assert_eq!(info.state, ContainerState::Exited);
        assert_eq!(info.exit_code, Some(0));
        assert_eq!(info.finished_at.as_deref(), Some("2026-01-01T00:00:05Z"));

        rt.remove(&id).await.unwrap();
        assert_eq!(
            rt.inspect(&id).await,
            Err(RuntimeError::NotFound { id: id.clone() })
        );
        assert_eq!(rt.calls("start"), 2);
        assert_eq!(rt.calls("inspect"), 4);
    }

    #[tokio::test]
    async fn missing_image_and_name_conflict() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let mut s = spec("a");
        s.image = "nope:1".into();
        assert_eq!(
            rt.create(&s).await,
            Err(RuntimeError::ImageNotFound {
                image: "nope:1".into()
            })
        );
        assert!(!rt.image_present("nope:1").await.unwrap());
        assert!(rt.image_present("shoal-test/echo").await.unwrap());
        rt.create(&spec("a")).await.unwrap();
        assert!(matches!(
            rt.create(&spec("a")).await,
            Err(RuntimeError::Conflict { .. })
        ));
        rt.add_image("nope:1");
        rt.create(&s.clone()).await.unwrap_err(); // still the name "a"
        s.name = "b".into();
        rt.create(&s).await.unwrap();
    }

    #[tokio::test]
    async fn hooks_end_containers() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let a = rt.create(&spec("a")).await.unwrap();
        let b = rt.create(&spec("b")).await.unwrap();
        let c = rt.create(&spec("c")).await.unwrap();
        assert!(rt.exit(&a, 3).is_err(), "not running yet");
        for id in [&a, &b, &c] {
            rt.start(id).await.unwrap();
        }
        rt.exit(&a, 3).unwrap();
        rt.oom_kill(&b).unwrap();
        rt.ignore_sigterm(&c).unwrap();
        rt.stop(&c, Duration::from_secs(1)).await.unwrap();

        let a = rt.inspect(&a).await.unwrap();
        assert_eq!((a.exit_code, a.oom_killed), (Some(3), false));
        let b = rt.inspect(&b).await.unwrap();
        assert_eq!((b.exit_code, b.oom_killed), (Some(137), true));
        let c = rt.inspect(&c).await.unwrap();
        assert_eq!(c.exit_code, Some(137));

        // A restart clears the last run's outcome.
        rt.start(&b.id).await.unwrap();
        let b = rt.inspect(&b.id).await.unwrap();
        assert_eq!((b.exit_code, b.oom_killed), (None, false));
        rt.kill(&b.id).await.unwrap();
        rt.kill(&b.id).await.unwrap();
        assert_eq!(rt.inspect(&b.id).await.unwrap().exit_code, Some(137));
    }

    #[tokio::test]
    async fn a_stopped_engine_stops_its_containers_and_answers_nothing_until_started() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let a = rt.create(&spec("a")).await.unwrap();
        rt.start(&a).await.unwrap();
        let b = rt.create(&spec("b")).await.unwrap();
        rt.stop_engine();
        for r in [
            rt.list(&[]).await.map(|_| ()),
            rt.start(&b).await,
            rt.inspect(&a).await.map(|_| ()),
        ] {
            let e = r.unwrap_err();
            assert!(matches!(e, RuntimeError::Unavailable { .. }), "{e:?}");
            assert!(e.to_string().contains("unix:///sim/docker.sock"), "{e}");
        }
        rt.start_engine();
        let a = rt.inspect(&a).await.unwrap();
        assert_eq!((a.state, a.exit_code), (ContainerState::Exited, Some(0)));
        assert_eq!(rt.list(&[]).await.unwrap().len(), 2);

        // Unreachable only: the containers keep running.
        rt.start(&a.id).await.unwrap();
        rt.set_unreachable(Some("hung"));
        assert_eq!(
            rt.list(&[]).await,
            Err(RuntimeError::Unavailable {
                message: "hung".into()
            })
        );
        rt.set_unreachable(None);
        assert_eq!(
            rt.inspect(&a.id).await.unwrap().state,
            ContainerState::Running
        );
    }

    #[tokio::test]
    async fn list_by_label_and_injected_failures() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        rt.create(&spec("a")).await.unwrap();
        rt.create(&spec("b")).await.unwrap();
        assert_eq!(rt.list(&[]).await.unwrap().len(), 2);
        let only_b = rt.list(&[("shoal.pod", "b")]).await.unwrap();
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].name, "b");

        let down = RuntimeError::Unavailable {
            message: "engine down".into(),
        };
        rt.fail_next("list", down.clone());
        assert_eq!(rt.list(&[]).await, Err(down));
        assert_eq!(rt.list(&[]).await.unwrap().len(), 2);
        assert_eq!(rt.calls("list"), 4);
    }

    #[tokio::test]
    async fn fixed_host_ports_clash_only_while_running() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let fixed = |name: &str| {
            let mut s = spec(name);
            s.ports[0].host_port = 8080;
            s
        };
        let a = rt.create(&fixed("a")).await.unwrap();
        let b = rt.create(&fixed("b")).await.unwrap();
        rt.start(&a).await.unwrap();
        assert!(matches!(
            rt.start(&b).await,
            Err(RuntimeError::Conflict { .. })
        ));
        rt.stop(&a, Duration::ZERO).await.unwrap();
        rt.start(&b).await.unwrap();
    }

    #[tokio::test]
    async fn networks_must_exist() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let mut s = spec("a");
        s.network = Some("shoal-n1".into());
        assert!(rt.create(&s).await.unwrap_err().is_not_found());
        assert!(
            rt.inspect_network("shoal-n1")
                .await
                .unwrap_err()
                .is_not_found()
        );
        rt.ensure_network("shoal-n1", &NetworkSpec::engine_default())
            .await
            .unwrap();
        rt.ensure_network("shoal-n1", &NetworkSpec::engine_default())
            .await
            .unwrap();
        rt.ensure_network("shoal-n2", &NetworkSpec::engine_default())
            .await
            .unwrap();
        let n1 = rt.inspect_network("shoal-n1").await.unwrap();
        assert_eq!(n1.gateway, Some("172.18.0.1".parse().unwrap()));
        assert_eq!(n1.subnet.unwrap().to_string(), "172.18.0.0/16");
        let n2 = rt.inspect_network("shoal-n2").await.unwrap();
        assert_eq!(n2.gateway, Some("172.19.0.1".parse().unwrap()));
        let id = rt.create(&s).await.unwrap();
        assert_eq!(
            rt.inspect(&id).await.unwrap().network.as_deref(),
            Some("shoal-n1")
        );
        rt.remove_network("shoal-n1").await.unwrap();
        assert!(
            rt.remove_network("shoal-n1")
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn logs_tail_lines() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let id = rt.create(&spec("a")).await.unwrap();
        rt.append_log(&id, b"one\ntwo\nthree\n").unwrap();
        let all: Vec<Bytes> = rt
            .logs(&id, &LogOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.concat(), b"one\ntwo\nthree\n");
        let tail: Vec<Bytes> = rt
            .logs(
                &id,
                &LogOptions {
                    tail: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(tail.concat(), b"two\nthree\n");
        assert!(rt.logs("nope", &LogOptions::default()).await.is_err());
    }

    #[tokio::test]
    async fn exec_uses_the_handler_and_needs_a_running_container() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let id = rt.create(&spec("a")).await.unwrap();
        let cmd = vec!["cat".to_string(), "/tmp/ready".to_string()];
        assert!(matches!(
            rt.exec_output(&id, &cmd).await,
            Err(RuntimeError::Conflict { .. })
        ));
        rt.start(&id).await.unwrap();
        assert_eq!(rt.exec_output(&id, &cmd).await.unwrap().exit_code, 0);
        rt.set_exec_handler(Arc::new(|info, cmd| ExecOutput {
            exit_code: 1,
            stdout: format!("{} {}", info.name, cmd.join(" ")).into_bytes(),
            stderr: b"no".to_vec(),
        }));
        let out = rt.exec_output(&id, &cmd).await.unwrap();
        assert_eq!(out.exit_code, 1);
        assert_eq!(out.stdout, b"a cat /tmp/ready");

        let session = rt
            .exec(
                &id,
                &ExecSpec {
                    cmd: cmd.clone(),
                    tty: false,
                    stdin: true,
                },
            )
            .await
            .unwrap();
        assert!(session.input.is_some());
        let chunks: Vec<ExecChunk> = session.output.try_collect().await.unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(rt.exec_exit_code(&session.exec_id).await.unwrap(), Some(1));
        rt.exec_resize(&session.exec_id, 80, 24).await.unwrap();
    }

    #[tokio::test]
    async fn volumes_outlive_containers_and_refuse_removal_in_use() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let vol = VolumeSpec {
            name: "data".into(),
            labels: [("shoal.pvc".to_string(), "data".to_string())].into(),
            driver_opts: [("type".to_string(), "nfs".to_string())].into(),
            ..Default::default()
        };
        let info = rt.create_volume(&vol).await.unwrap();
        assert_eq!(info.driver, "local");
        assert_eq!(rt.create_volume(&vol).await.unwrap(), info, "idempotent");
        let mut s = spec("a");
        s.mounts.push(MountSpec::Volume {
            name: "data".into(),
            container_path: "/data".into(),
            read_only: false,
        });
        let id = rt.create(&s).await.unwrap();
        assert!(matches!(
            rt.remove_volume("data").await,
            Err(RuntimeError::Conflict { .. })
        ));
        rt.remove(&id).await.unwrap();
        assert_eq!(
            rt.list_volumes(&[("shoal.pvc", "data")])
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            rt.list_volumes(&[("shoal.pvc", "x")])
                .await
                .unwrap()
                .is_empty()
        );
        rt.remove_volume("data").await.unwrap();
        assert!(rt.remove_volume("data").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn stats_of_running_containers() {
        let rt = SimRuntime::new(["shoal-test/echo:latest"]);
        let mut s = spec("a");
        s.memory_limit = Some(100 << 20);
        let id = rt.create(&s).await.unwrap();
        assert!(rt.stats(&id).await.is_err());
        rt.start(&id).await.unwrap();
        assert_eq!(rt.stats(&id).await.unwrap().memory_bytes, 10 << 20);
    }

    #[test]
    fn image_names_normalize() {
        assert_eq!(normalize_image("a/b"), "a/b:latest");
        assert_eq!(normalize_image("a/b:1"), "a/b:1");
        assert_eq!(normalize_image("reg:5000/a"), "reg:5000/a:latest");
        assert_eq!(normalize_image("a@sha256:00"), "a@sha256:00");
    }
}
