//! [`DockerRuntime`]: the [`Runtime`] on the local Docker engine, through bollard.
//!
//! It owns one bollard client (a cheap handle over the engine's Unix socket) and translates:
//! a [`ContainerSpec`] into Docker's create body, Docker's inspect into [`ContainerInfo`], and
//! engine errors into [`RuntimeError`]. The translations are pure functions, tested below
//! without an engine; the calls themselves are tested against the real engine by
//! `testnet/tests/docker_runtime.rs`.
//!
//! Nothing here decides when to pull an image (`crate::images` does) or sets an engine restart
//! policy: the node agent decides restarts.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerStatsResponse, ExecConfig, HostConfig, HostConfigLogConfig, Mount, MountTmpfsOptions,
    MountType, NetworkCreateRequest, NetworkInspect, PortBinding as DockerPortBinding,
    RestartPolicy, RestartPolicyNameEnum, Volume, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptionsBuilder, ImportImageOptionsBuilder,
    InspectContainerOptions, InspectNetworkOptions, KillContainerOptions, ListContainersOptions,
    ListImagesOptionsBuilder, ListVolumesOptions, LogsOptions, RemoveContainerOptions,
    RemoveImageOptions, RemoveVolumeOptions, ResizeExecOptions, StartContainerOptions,
    StatsOptions, StopContainerOptions,
};
use futures_util::{StreamExt, TryStreamExt};
use tracing::{debug, instrument};

use super::{
    ByteStream, ContainerInfo, ContainerSpec, ContainerState, EXEC_OUTPUT_CAP, ExecChunk,
    ExecOutput, ExecSession, ExecSpec, FsUsage, ImageInfo, LogOptions, MountSpec, NetworkInfo,
    NetworkSpec, PortBinding, Protocol, RegistryAuth, Runtime, RuntimeError, Stats, Subnet,
    VolumeInfo, VolumeSpec,
};

/// Where bollard's `connect_with_local_defaults` looks when `DOCKER_HOST` names no socket.
const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// The engine's socket that [`DockerRuntime::connect_to`] uses for `host`: `host` itself,
/// else `DOCKER_HOST` when it names a `unix://` socket, else `/var/run/docker.sock`.
pub fn address(host: Option<&str>) -> String {
    match host {
        Some(h) => h.to_string(),
        None => std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| h.starts_with("unix://"))
            .unwrap_or_else(|| DEFAULT_SOCKET.to_string()),
    }
}

/// Label put on the networks shoal creates, so that they can be told apart from the user's.
const NETWORK_LABEL: &str = "shoal.network";

/// How long an engine call may take before the engine counts as unavailable; `stop` adds the
/// grace period to it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Inspects in flight at once while listing: enough to hide the round trips, few enough not to
/// crowd the engine.
const LIST_CONCURRENCY: usize = 8;

/// The local Docker engine. Cloning shares the connection.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    /// The engine's address, for error messages.
    address: String,
    /// Serializes `ensure_network` within this process: Docker (API 1.41) lets two concurrent
    /// creates make two networks of the same name, after which the name is ambiguous.
    network_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` when it names a `unix://` socket, else
    /// `/var/run/docker.sock`) and agrees on the API version, so an unreachable engine is
    /// reported here rather than at the first container call.
    #[instrument(err)]
    pub async fn connect() -> Result<DockerRuntime, RuntimeError> {
        DockerRuntime::connect_to(None).await
    }

    /// Connects to the engine at `host` (`unix:///path/to/docker.sock`, the `docker-host`
    /// setting), or where [`DockerRuntime::connect`] looks when it is None.
    #[instrument(err)]
    pub async fn connect_to(host: Option<&str>) -> Result<DockerRuntime, RuntimeError> {
        let address = address(host);
        let docker = Docker::connect_with_unix(&address, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| map_error(&address, e, Target::Engine))?
            .with_timeout(CALL_TIMEOUT);
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| map_error(&address, e, Target::Engine))?;
        let version = docker.client_version();
        debug!(%address, api = %version, "connected to the Docker engine");
        Ok(DockerRuntime {
            docker,
            address,
            network_lock: Default::default(),
        })
    }

    /// The bollard client, for the few callers (tests, image import) that need more than the
    /// trait offers.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn err<'a>(&'a self, target: Target<'a>) -> impl Fn(BollardError) -> RuntimeError + 'a {
        move |e| map_error(&self.address, e, target)
    }
}

/// A pod's registry credentials as the engine takes them (empty fields left out).
fn docker_credentials(a: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: Some(a.username.clone()).filter(|u| !u.is_empty()),
        password: Some(a.password.clone()).filter(|p| !p.is_empty()),
        serveraddress: Some(a.server.clone()),
        identitytoken: a.identity_token.clone(),
        ..Default::default()
    }
}

/// What a failed call was about, to name it in the error.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Engine,
    Object(&'a str),
    Create {
        image: &'a str,
        network: Option<&'a str>,
    },
}

/// Translates a bollard error. 404 names the object (or, at create, the image or network),
/// 409 and port clashes are conflicts, failures to connect are `Unavailable`.
fn map_error(address: &str, err: BollardError, target: Target<'_>) -> RuntimeError {
    match err {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match (status_code, target) {
            (404, Target::Create { image, network }) => {
                let lower = message.to_ascii_lowercase();
                if lower.contains("image") {
                    RuntimeError::ImageNotFound {
                        image: image.to_string(),
                    }
                } else if let (Some(net), true) = (network, lower.contains("network")) {
                    RuntimeError::NotFound {
                        id: format!("network {net}"),
                    }
                } else {
                    RuntimeError::Other { message }
                }
            }
            // A container whose network is gone fails at start with the network's name.
            (404, Target::Object(_)) if missing_network(&message).is_some() => {
                RuntimeError::NotFound {
                    id: missing_network(&message).unwrap_or_default(),
                }
            }
            (404, Target::Object(id)) => RuntimeError::NotFound { id: id.to_string() },
            (409, _) => RuntimeError::Conflict { message },
            (_, _)
                if message.contains("port is already allocated")
                    || message.contains("address already in use") =>
            {
                RuntimeError::Conflict { message }
            }
            (code, _) => RuntimeError::Other {
                message: format!("{message} (HTTP {code})"),
            },
        },
        BollardError::SocketNotFoundError(_) => unavailable(address, "no such socket"),
        BollardError::RequestTimeoutError => {
            unavailable(address, "the engine did not answer in time")
        }
        BollardError::HyperLegacyError { err } if err.is_connect() => {
            unavailable(address, &source_chain(&err))
        }
        BollardError::IOError { err }
            if matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            unavailable(address, &err.to_string())
        }
        other => RuntimeError::Other {
            message: source_chain(&other),
        },
    }
}

/// The size and use of the filesystem that holds `path` (the engine's data root, which
/// `shoald` sees on the same machine).
fn fs_usage(path: &str) -> Result<FsUsage, RuntimeError> {
    let st = rustix::fs::statvfs(path).map_err(|e| RuntimeError::Other {
        message: format!("cannot read the filesystem of the engine's data root {path}: {e}"),
    })?;
    let capacity = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bfree.saturating_mul(st.f_frsize);
    Ok(FsUsage {
        capacity,
        used: capacity.saturating_sub(free),
    })
}

/// `network X not found` → `network X`.
fn missing_network(message: &str) -> Option<String> {
    let name = message
        .strip_prefix("network ")?
        .strip_suffix(" not found")?;
    Some(format!("network {name}"))
}

fn unavailable(address: &str, why: &str) -> RuntimeError {
    RuntimeError::Unavailable {
        message: format!(
            "cannot reach the Docker engine at {address} ({why}): is dockerd running?"
        ),
    }
}

/// An error with its causes, `a: b: c`, because hyper's top-level messages say little.
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = e.source();
    }
    s
}

impl DockerRuntime {
    /// Makes the network `name`, just created with a subnet the engine chose, again on the
    /// same subnet and gateway with containers' addresses taken from the lower half only, so
    /// that the upper half holds the Services' own addresses (`proxy::addresses`). On any
    /// failure the network stays or comes back as the engine made it, and pods reach every
    /// Service at the gateway instead.
    async fn reserve_upper_half(&self, name: &str) {
        let Ok(info) = self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
            .map(|n| network_info(name, n))
        else {
            return;
        };
        let (Some(subnet), Some(gateway)) = (info.subnet, info.gateway) else {
            return;
        };
        let Some(range) = crate::proxy::addresses::lower_half(&subnet) else {
            return;
        };
        if info.ip_range.is_some() || self.docker.remove_network(name).await.is_err() {
            return;
        }
        let labels = HashMap::from([(NETWORK_LABEL.to_string(), "true".to_string())]);
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone()),
            ipam: Some(bollard::models::Ipam {
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some(subnet.to_string()),
                    ip_range: Some(range.to_string()),
                    gateway: Some(gateway.to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Err(e) = self.docker.create_network(request).await {
            tracing::warn!(network = name, error = %e,
                "could not keep the upper half of the pod network for Service addresses; pods \
                 reach Services at the gateway");
            let plain = NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..Default::default()
            };
            if let Err(e) = self.docker.create_network(plain).await {
                tracing::warn!(network = name, error = %e, "re-creating the pod network failed");
            }
        }
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    #[instrument(skip(self), err)]
    async fn ensure_network(&self, name: &str, spec: &NetworkSpec) -> Result<(), RuntimeError> {
        let _guard = self.network_lock.lock().await;
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) => {
                let made = network_info(name, n);
                return match spec.subnet {
                    Some(want) if made.subnet != Some(want) => Err(RuntimeError::Conflict {
                        message: format!(
                            "network {name} exists on subnet {}, not {want}",
                            made.subnet.map_or("(none)".to_string(), |s| s.to_string())
                        ),
                    }),
                    _ => Ok(()),
                };
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(self.err(Target::Object(name))(e)),
        }
        let mut options = HashMap::new();
        if !spec.masquerade {
            options.insert(
                "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                "false".to_string(),
            );
        }
        if let Some(mtu) = spec.mtu {
            options.insert("com.docker.network.driver.mtu".to_string(), mtu.to_string());
        }
        let ipam = spec.subnet.map(|subnet| bollard::models::Ipam {
            config: Some(vec![bollard::models::IpamConfig {
                subnet: Some(subnet.to_string()),
                ip_range: spec.ip_range.map(|r| r.to_string()),
                gateway: spec.gateway.map(|g| g.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                NETWORK_LABEL.to_string(),
                "true".to_string(),
            )])),
            options: (!options.is_empty()).then_some(options),
            ipam,
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {
                debug!(network = name, "created network");
                if spec.subnet.is_none() {
                    self.reserve_upper_half(name).await;
                }
                Ok(())
            }
            // Another process made it meanwhile: that is what we wanted.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.err(Target::Object(name))(e)),
        }
    }

    #[instrument(skip(self), err)]
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.docker
            .remove_network(name)
            .await
            .map_err(self.err(Target::Object(name)))
    }

    #[instrument(skip(self), err)]
    async fn inspect_network(&self, name: &str) -> Result<NetworkInfo, RuntimeError> {
        let network = self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
            .map_err(self.err(Target::Object(name)))?;
        Ok(network_info(name, network))
    }

    #[instrument(skip(self), err)]
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.err(Target::Object(image))(e)),
        }
    }

    #[instrument(skip(self), err)]
    async fn image_info(&self, image: &str) -> Result<ImageInfo, RuntimeError> {
        let i = self
            .docker
            .inspect_image(image)
            .await
            .map_err(self.err(Target::Object(image)))?;
        Ok(ImageInfo {
            id: i.id.unwrap_or_default(),
            repo_tags: i.repo_tags.unwrap_or_default(),
            repo_digests: i.repo_digests.unwrap_or_default(),
            size: i.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        })
    }

    #[instrument(skip(self, tarball), err)]
    async fn load_image(&self, tarball: ByteStream) -> Result<Vec<String>, RuntimeError> {
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let mut progress = self.docker.import_image_stream(options, tarball, None);
        let mut loaded = Vec::new();
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    // `{"stream": "Loaded image: NAME\n"}`, or `Loaded image ID: sha256:...`.
                    if let Some(line) = info.stream.as_deref().map(str::trim) {
                        let name = line
                            .strip_prefix("Loaded image: ")
                            .or_else(|| line.strip_prefix("Loaded image ID: "));
                        if let Some(name) = name {
                            loaded.push(name.to_string());
                        }
                    }
                }
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(RuntimeError::Other { message: error });
                }
                Err(e) => return Err(self.err(Target::Engine)(e)),
            }
        }
        if loaded.is_empty() {
            return Err(RuntimeError::Other {
                message: "the engine loaded no image from the tarball".into(),
            });
        }
        Ok(loaded)
    }

    #[instrument(skip(self), err)]
    async fn list_images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let options = ListImagesOptionsBuilder::default().all(false).build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(self.err(Target::Engine))?;
        Ok(images
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                // An untagged image is listed with `<none>:<none>`.
                repo_tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                repo_digests: i
                    .repo_digests
                    .into_iter()
                    .filter(|d| !d.starts_with("<none>@"))
                    .collect(),
                size: u64::try_from(i.size).unwrap_or(0),
            })
            .collect())
    }

    #[instrument(skip(self), err)]
    async fn export_image(&self, image: &str) -> Result<ByteStream, RuntimeError> {
        // The engine answers 404 before the first byte when the image is absent: ask first,
        // so that the error is NotFound and not a broken stream.
        self.docker
            .inspect_image(image)
            .await
            .map_err(self.err(Target::Object(image)))?;
        let address = self.address.clone();
        let name = image.to_string();
        Ok(self
            .docker
            .export_image(image)
            .map_err(move |e| map_error(&address, e, Target::Object(&name)))
            .boxed())
    }

    #[instrument(skip(self), err)]
    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.docker
            .remove_image(image, None::<RemoveImageOptions>, None)
            .await
            .map_err(self.err(Target::Object(image)))?;
        Ok(())
    }

    #[instrument(skip(self), err)]
    async fn image_fs(&self) -> Result<FsUsage, RuntimeError> {
        let info = self.docker.info().await.map_err(self.err(Target::Engine))?;
        let root = info
            .docker_root_dir
            .unwrap_or_else(|| "/var/lib/docker".into());
        tokio::task::spawn_blocking(move || fs_usage(&root))
            .await
            .map_err(|e| RuntimeError::Other {
                message: e.to_string(),
            })?
    }

    // `auth` is skipped: its password must never reach a log.
    #[instrument(skip(self, auth), err)]
    async fn pull(
        &self,
        name: &str,
        tag_or_digest: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), RuntimeError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag_or_digest)
            .build();
        let credentials = auth.map(docker_credentials);
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            match item {
                Ok(_) => {}
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(RuntimeError::Other { message: error });
                }
                Err(e) => return Err(self.err(Target::Engine)(e)),
            }
        }
        Ok(())
    }

    // `auth` is skipped: its password must never reach a log.
    #[instrument(skip(self, auth), err)]
    async fn registry_digest(
        &self,
        name: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        let credentials = auth.map(docker_credentials);
        let reference = format!("{name}:{tag}");
        let inspected = self
            .docker
            .inspect_registry_image(&reference, credentials)
            .await
            .map_err(|e| match e {
                // The engine's words (manifest unknown, unauthorized, connection refused) are
                // what `crate::images` sorts, as for a pull.
                BollardError::DockerResponseServerError { message, .. } => {
                    RuntimeError::Other { message }
                }
                e => self.err(Target::Engine)(e),
            })?;
        inspected
            .descriptor
            .digest
            .ok_or_else(|| RuntimeError::Other {
                message: format!("the registry named no digest for {reference}"),
            })
    }

    #[instrument(skip(self, spec), fields(name = %spec.name, image = %spec.image), err)]
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), create_body(spec))
            .await
            .map_err(self.err(Target::Create {
                image: &spec.image,
                network: spec.network.as_deref(),
            }))?;
        for warning in &created.warnings {
            tracing::warn!(name = %spec.name, %warning, "docker create");
        }
        Ok(created.id)
    }

    #[instrument(skip(self), err)]
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(self.err(Target::Object(id)))
    }

    #[instrument(skip(self), err)]
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        // Docker takes whole seconds; round up so that a grace is never cut short.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptions {
            t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        // The engine answers once the container has stopped, so the call may take the whole
        // grace period.
        let docker = self
            .docker
            .clone()
            .with_timeout(CALL_TIMEOUT + Duration::from_secs(secs));
        docker
            .stop_container(id, Some(options))
            .await
            .map_err(self.err(Target::Object(id)))
    }

    #[instrument(skip(self), err)]
    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let options = KillContainerOptions {
            signal: "KILL".into(),
        };
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // "is not running": already where a kill would leave it.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(self.err(Target::Object(id))(e)),
        }
    }

    #[instrument(skip(self), err)]
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        self.docker
            .remove_container(id, Some(options))
            .await
            .map_err(self.err(Target::Object(id)))
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let resp = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(self.err(Target::Object(id)))?;
        info_from_inspect(resp)
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            filters: label_filters(labels),
            ..Default::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(self.err(Target::Engine))?;
        // The summary lacks exit codes, OOM and start times: inspect each one, a few at a
        // time, keeping the engine's order.
        let inspected: Vec<Result<ContainerInfo, RuntimeError>> =
            futures_util::stream::iter(summaries.into_iter().filter_map(|s| s.id))
                .map(|id| async move { self.inspect(&id).await })
                .buffered(LIST_CONCURRENCY)
                .collect()
                .await;
        let mut out = Vec::with_capacity(inspected.len());
        for r in inspected {
            match r {
                Ok(info) => out.push(info),
                // Removed between the list and the inspect.
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    #[instrument(skip(self), err)]
    async fn logs(&self, id: &str, opts: &LogOptions) -> Result<ByteStream, RuntimeError> {
        // Fail with NotFound now rather than as the stream's first item.
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(self.err(Target::Object(id)))?;
        let address = self.address.clone();
        let target_id = id.to_string();
        let stream = self
            .docker
            .logs(id, Some(logs_options(opts)))
            .map_ok(|chunk| chunk.into_bytes())
            .map_err(move |e| map_error(&address, e, Target::Object(&target_id)));
        Ok(stream.boxed())
    }

    #[instrument(skip(self), err)]
    async fn exec_output(&self, id: &str, cmd: &[String]) -> Result<ExecOutput, RuntimeError> {
        let session = self
            .exec(
                id,
                &ExecSpec {
                    cmd: cmd.to_vec(),
                    tty: false,
                    stdin: false,
                },
            )
            .await?;
        let mut out = ExecOutput::default();
        let mut output = session.output;
        while let Some(chunk) = output.next().await {
            let (buf, data) = match chunk? {
                ExecChunk::Stdout(d) => (&mut out.stdout, d),
                ExecChunk::Stderr(d) => (&mut out.stderr, d),
            };
            let room = EXEC_OUTPUT_CAP.saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
        }
        // The output ends when the process does, but the engine may record the exit code a
        // moment later.
        let mut delay = Duration::from_millis(5);
        for _ in 0..12 {
            if let Some(code) = self.exec_exit_code(&session.exec_id).await? {
                out.exit_code = code;
                return Ok(out);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
        Err(RuntimeError::Other {
            message: format!("exec {} ended without an exit code", session.exec_id),
        })
    }

    #[instrument(skip(self), err)]
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecSession, RuntimeError> {
        let config = ExecConfig {
            attach_stdin: Some(spec.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(spec.tty),
            cmd: Some(spec.cmd.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(id, config)
            .await
            .map_err(self.err(Target::Object(id)))?;
        let options = StartExecOptions {
            detach: false,
            tty: spec.tty,
            output_capacity: None,
        };
        let started = self
            .docker
            .start_exec(&created.id, Some(options))
            .await
            .map_err(self.err(Target::Object(&created.id)))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Other {
                message: "the engine started the exec detached".into(),
            });
        };
        let address = self.address.clone();
        let exec_id = created.id.clone();
        let output = output
            .map_ok(|log| match log {
                bollard::container::LogOutput::StdErr { message } => ExecChunk::Stderr(message),
                other => ExecChunk::Stdout(other.into_bytes()),
            })
            .map_err(move |e| map_error(&address, e, Target::Object(&exec_id)))
            .boxed();
        Ok(ExecSession {
            exec_id: created.id,
            output,
            input: spec.stdin.then_some(input),
        })
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        let inspect = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(self.err(Target::Object(exec_id)))?;
        if inspect.running == Some(true) {
            return Ok(None);
        }
        Ok(inspect.exit_code)
    }

    async fn exec_resize(
        &self,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), RuntimeError> {
        let options = ResizeExecOptions {
            w: i32::from(width),
            h: i32::from(height),
        };
        self.docker
            .resize_exec(exec_id, options)
            .await
            .map_err(self.err(Target::Object(exec_id)))
    }

    async fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        let options = StatsOptions {
            stream: false,
            // One sample now, instead of the engine waiting a second for a CPU delta that we
            // do not use.
            one_shot: true,
        };
        let mut stream = self.docker.stats(id, Some(options));
        match stream.next().await {
            Some(Ok(resp)) => Ok(stats_from(&resp)),
            Some(Err(e)) => Err(self.err(Target::Object(id))(e)),
            None => Err(RuntimeError::Other {
                message: format!("the engine sent no stats for {id}"),
            }),
        }
    }

    #[instrument(skip(self, spec), fields(name = %spec.name), err)]
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<VolumeInfo, RuntimeError> {
        let request = VolumeCreateRequest {
            name: Some(spec.name.clone()),
            driver: Some(spec.driver.clone().unwrap_or_else(|| "local".into())),
            driver_opts: Some(to_hash_map(&spec.driver_opts)),
            labels: Some(to_hash_map(&spec.labels)),
            ..Default::default()
        };
        let volume = self
            .docker
            .create_volume(request)
            .await
            .map_err(self.err(Target::Object(&spec.name)))?;
        Ok(volume_info(volume))
    }

    #[instrument(skip(self), err)]
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
            .map_err(self.err(Target::Object(name)))
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<VolumeInfo>, RuntimeError> {
        let options = ListVolumesOptions {
            filters: label_filters(labels),
        };
        let resp = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(self.err(Target::Engine))?;
        Ok(resp
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(volume_info)
            .collect())
    }
}

/// Docker's `label=k=v` filters; `None` (every object) for no labels.
fn label_filters(labels: &[(&str, &str)]) -> Option<HashMap<String, Vec<String>>> {
    if labels.is_empty() {
        return None;
    }
    let values = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(HashMap::from([("label".to_string(), values)]))
}

fn to_hash_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn logs_options(opts: &LogOptions) -> LogsOptions {
    LogsOptions {
        follow: opts.follow,
        stdout: true,
        stderr: true,
        since: opts
            .since
            .map(|s| i32::try_from(s.max(0)).unwrap_or(i32::MAX))
            .unwrap_or(0),
        until: 0,
        timestamps: opts.timestamps,
        tail: opts
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".into()),
    }
}

/// Docker's create body for a spec. Pure.
pub(crate) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(DockerPortBinding {
                host_ip: p.host_ip.clone(),
                // An empty host port lets the engine choose a free one.
                host_port: (p.host_port != 0).then(|| p.host_port.to_string()),
            });
    }
    let mounts: Vec<Mount> = spec.mounts.iter().map(mount).collect();
    let memory = spec
        .memory_limit
        .map(|m| i64::try_from(m).unwrap_or(i64::MAX));
    let host_config = HostConfig {
        memory,
        // Swap equal to the limit: no swap, so exceeding the limit is an OOM kill rather than
        // a slow crawl, as Kubernetes behaves.
        memory_swap: memory,
        nano_cpus: spec.nano_cpus.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        mounts: (!mounts.is_empty()).then_some(mounts),
        network_mode: spec.network.clone(),
        dns: (!spec.dns_servers.is_empty()).then(|| spec.dns_servers.clone()),
        dns_search: (!spec.dns_search.is_empty()).then(|| spec.dns_search.clone()),
        dns_options: (!spec.dns_options.is_empty()).then(|| spec.dns_options.clone()),
        // The agent restarts containers itself (with back-off and counting); an engine policy
        // would race it.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        // json-file always supports reading logs back (a daemon-wide journald or syslog
        // driver might not), and rotation bounds the disk a chatty pod can use.
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), "10m".to_string()),
                ("max-file".to_string(), "3".to_string()),
            ])),
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.command.clone(),
        cmd: spec.args.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(to_hash_map(&spec.labels)),
        working_dir: spec.working_dir.clone(),
        hostname: spec.hostname.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec
            .stop_grace
            .map(|g| i64::try_from(g.as_secs()).unwrap_or(i64::MAX)),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// A network's inspect as [`NetworkInfo`]: its first IPv4 IPAM entry with a subnet (else its
/// first entry with one) gives the subnet and the gateway. Pure.
pub(crate) fn network_info(name: &str, network: NetworkInspect) -> NetworkInfo {
    type Entry = (Subnet, Option<std::net::IpAddr>, Option<Subnet>);
    let configs: Vec<Entry> = network
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let subnet = Subnet::parse(c.subnet.as_deref()?)?;
            let gateway = c
                .gateway
                .as_deref()
                .and_then(|g| g.split('/').next()?.parse().ok());
            let range = c.ip_range.as_deref().and_then(Subnet::parse);
            Some((subnet, gateway, range))
        })
        .collect();
    let chosen = configs
        .iter()
        .find(|(s, _, _)| s.addr.is_ipv4())
        .or_else(|| configs.first())
        .copied();
    NetworkInfo {
        name: network.name.unwrap_or_else(|| name.to_string()),
        id: network.id.unwrap_or_default(),
        subnet: chosen.map(|(s, _, _)| s),
        gateway: chosen.and_then(|(_, g, _)| g),
        ip_range: chosen.and_then(|(_, _, r)| r),
    }
}

fn mount(m: &MountSpec) -> Mount {
    match m {
        MountSpec::Bind {
            host_path,
            container_path,
            read_only,
        } => Mount {
            typ: Some(MountType::BIND),
            source: Some(host_path.clone()),
            target: Some(container_path.clone()),
            read_only: Some(*read_only),
            ..Default::default()
        },
        MountSpec::Volume {
            name,
            container_path,
            read_only,
        } => Mount {
            typ: Some(MountType::VOLUME),
            source: Some(name.clone()),
            target: Some(container_path.clone()),
            read_only: Some(*read_only),
            ..Default::default()
        },
        MountSpec::Tmpfs {
            container_path,
            size_bytes,
        } => Mount {
            typ: Some(MountType::TMPFS),
            target: Some(container_path.clone()),
            tmpfs_options: size_bytes.map(|s| MountTmpfsOptions {
                size_bytes: Some(i64::try_from(s).unwrap_or(i64::MAX)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// Docker reports "never" as the zero time.
fn engine_time(t: Option<String>) -> Option<String> {
    t.filter(|s| !s.is_empty() && !s.starts_with("0001-01-01"))
}

/// `8080/tcp` → (8080, Tcp).
fn parse_port_key(key: &str) -> Option<(u16, Protocol)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    Some((port.parse().ok()?, Protocol::parse(proto)?))
}

/// Our view of Docker's inspect. Pure; fails only without an id.
pub(crate) fn info_from_inspect(
    resp: ContainerInspectResponse,
) -> Result<ContainerInfo, RuntimeError> {
    let id = resp.id.ok_or_else(|| RuntimeError::Other {
        message: "the engine described a container without an id".into(),
    })?;
    let state = resp.state.unwrap_or_default();
    let status = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::STOPPING) => {
            ContainerState::Running
        }
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        Some(ContainerStateStatusEnum::EMPTY) | None => {
            if state.running == Some(true) {
                ContainerState::Running
            } else if state.dead == Some(true) {
                ContainerState::Dead
            } else {
                ContainerState::Created
            }
        }
    };
    let finished_at = engine_time(state.finished_at);
    let exit_code = match status {
        ContainerState::Exited | ContainerState::Dead => state.exit_code,
        _ => None,
    };
    let config = resp.config.unwrap_or_default();
    let host_config = resp.host_config.unwrap_or_default();
    let memory_limited = host_config.memory.is_some_and(|m| m > 0);
    let network_mode = host_config.network_mode;
    let settings = resp.network_settings.unwrap_or_default();
    let networks: BTreeMap<String, String> = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, ep)| Some((name, ep.ip_address.filter(|ip| !ip.is_empty())?)))
        .collect();
    // The network the spec asked for, else any (the default bridge).
    let (network, ip) = network_mode
        .as_ref()
        .and_then(|n| networks.get_key_value(n))
        .or_else(|| networks.iter().next())
        .map(|(n, ip)| (Some(n.clone()), Some(ip.clone())))
        .unwrap_or((network_mode.filter(|n| n != "default"), None));
    let mut ports = Vec::new();
    for (key, bound) in settings.ports.unwrap_or_default() {
        let Some((container_port, protocol)) = parse_port_key(&key) else {
            continue;
        };
        for b in bound.unwrap_or_default() {
            let Some(host_port) = b.host_port.and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            ports.push(PortBinding {
                container_port,
                protocol,
                host_ip: b.host_ip.unwrap_or_default(),
                host_port,
            });
        }
    }
    ports.sort();
    Ok(ContainerInfo {
        id,
        name: resp
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        image_id: resp.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: status,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false)
            || killed_at_its_memory_limit(exit_code, memory_limited),
        error: state.error.filter(|e| !e.is_empty()),
        started_at: engine_time(state.started_at),
        finished_at,
        network,
        ip,
        ports,
        restart_count: resp
            .restart_count
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0),
    })
}

/// An engine whose containerd misses the kernel's OOM event (seen with cgroup v2 when the
/// engine itself runs inside a container) reports `OOMKilled: false` for a container the
/// kernel killed at its memory limit. A SIGKILL exit (137) of a container with a memory limit
/// is then counted as an OOM kill. shoal stops containers with SIGTERM first and removes what
/// it stops, so the guess can only be wrong for a container someone killed by hand.
fn killed_at_its_memory_limit(exit_code: Option<i64>, memory_limited: bool) -> bool {
    memory_limited && exit_code == Some(137)
}

/// CPU total and memory without reclaimable page cache (the key differs between cgroup v1 and
/// v2), as `docker stats` computes it. Pure.
pub(crate) fn stats_from(resp: &ContainerStatsResponse) -> Stats {
    let cpu_nanos = resp
        .cpu_stats
        .as_ref()
        .and_then(|c| c.cpu_usage.as_ref())
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    let memory_bytes = resp
        .memory_stats
        .as_ref()
        .map(|m| {
            let usage = m.usage.unwrap_or(0);
            let cache = m
                .stats
                .as_ref()
                .and_then(|s| {
                    s.get("inactive_file")
                        .or_else(|| s.get("total_inactive_file"))
                })
                .copied()
                .unwrap_or(0);
            usage.saturating_sub(cache)
        })
        .unwrap_or(0);
    Stats {
        cpu_nanos,
        memory_bytes,
    }
}

fn volume_info(v: Volume) -> VolumeInfo {
    VolumeInfo {
        name: v.name,
        driver: v.driver,
        labels: v.labels.into_iter().collect(),
        options: v.options.into_iter().collect(),
        mountpoint: v.mountpoint,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerCpuStats, ContainerCpuUsage, ContainerMemoryStats,
        ContainerState as DockerState, EndpointSettings, NetworkSettings,
    };

    fn full_spec() -> ContainerSpec {
        ContainerSpec {
            name: "web-1".into(),
            image: "shoal-test/echo:latest".into(),
            command: Some(vec!["/shoal-echo".into()]),
            args: Some(vec!["--port".into(), "9000".into()]),
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            labels: [("shoal.pod".to_string(), "web-1".to_string())].into(),
            working_dir: Some("/tmp".into()),
            hostname: Some("web-1".into()),
            ports: vec![
                super::super::PortSpec {
                    container_port: 9000,
                    protocol: Protocol::Tcp,
                    host_ip: Some("127.0.0.1".into()),
                    host_port: 0,
                },
                super::super::PortSpec {
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: None,
                    host_port: 5353,
                },
            ],
            mounts: vec![
                MountSpec::Bind {
                    host_path: "/srv/cfg".into(),
                    container_path: "/etc/cfg".into(),
                    read_only: true,
                },
                MountSpec::Volume {
                    name: "data".into(),
                    container_path: "/data".into(),
                    read_only: false,
                },
                MountSpec::Tmpfs {
                    container_path: "/scratch".into(),
                    size_bytes: Some(1 << 20),
                },
            ],
            memory_limit: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            network: Some("shoal-node-1".into()),
            dns_servers: vec!["10.0.0.1".into()],
            dns_search: vec!["default.svc.shoal.home.arpa".into()],
            dns_options: vec!["ndots:5".into()],
            stop_signal: Some("SIGTERM".into()),
            stop_grace: Some(Duration::from_secs(30)),
        }
    }

    #[test]
    fn create_body_carries_the_whole_spec() {
        let body = create_body(&full_spec());
        assert_eq!(body.image.as_deref(), Some("shoal-test/echo:latest"));
        assert_eq!(body.entrypoint, Some(vec!["/shoal-echo".to_string()]));
        assert_eq!(
            body.cmd,
            Some(vec!["--port".to_string(), "9000".to_string()])
        );
        assert_eq!(body.env, Some(vec!["A=1".to_string(), "B=x=y".to_string()]));
        assert_eq!(body.labels.unwrap()["shoal.pod"], "web-1");
        assert_eq!(body.hostname.as_deref(), Some("web-1"));
        assert_eq!(body.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(body.stop_signal.as_deref(), Some("SIGTERM"));
        assert_eq!(body.stop_timeout, Some(30));
        let mut exposed = body.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp".to_string(), "9000/tcp".to_string()]);

        let hc = body.host_config.unwrap();
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.memory_swap, Some(64 << 20));
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.network_mode.as_deref(), Some("shoal-node-1"));
        assert_eq!(hc.dns, Some(vec!["10.0.0.1".to_string()]));
        assert_eq!(hc.dns_search.unwrap().len(), 1);
        assert_eq!(hc.dns_options, Some(vec!["ndots:5".to_string()]));
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        let pb = hc.port_bindings.unwrap();
        let tcp = pb["9000/tcp"].as_ref().unwrap();
        assert_eq!(tcp[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(tcp[0].host_port, None, "0 lets the engine choose");
        let udp = pb["53/udp"].as_ref().unwrap();
        assert_eq!(udp[0].host_ip, None);
        assert_eq!(udp[0].host_port.as_deref(), Some("5353"));

        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/cfg"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[1].source.as_deref(), Some("data"));
        assert_eq!(mounts[2].typ, Some(MountType::TMPFS));
        assert_eq!(
            mounts[2].tmpfs_options.as_ref().unwrap().size_bytes,
            Some(1 << 20)
        );
    }

    #[test]
    fn create_body_of_a_minimal_spec_keeps_image_defaults() {
        let body = create_body(&ContainerSpec {
            name: "x".into(),
            image: "img".into(),
            ..Default::default()
        });
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, None);
        assert_eq!(body.exposed_ports, None);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.port_bindings, None);
        assert_eq!(hc.mounts, None);
        assert_eq!(hc.memory, None);
        assert_eq!(hc.network_mode, None);
        assert_eq!((hc.dns, hc.dns_search, hc.dns_options), (None, None, None));
    }

    #[test]
    fn network_inspect_gives_the_ipv4_subnet_and_gateway() {
        let inspect: NetworkInspect = serde_json::from_value(serde_json::json!({
            "Name": "shoal-n1-c0ffee00", "Id": "abc", "Driver": "bridge",
            "IPAM": {"Driver": "default", "Config": [
                {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"},
                {"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}
            ]}
        }))
        .unwrap();
        let info = network_info("shoal-n1-c0ffee00", inspect);
        assert_eq!(info.id, "abc");
        assert_eq!(
            info.subnet.map(|s| s.to_string()).as_deref(),
            Some("172.18.0.0/16")
        );
        assert_eq!(
            info.gateway.map(|g| g.to_string()).as_deref(),
            Some("172.18.0.1")
        );
        // No IPAM configuration: nothing known, no panic.
        let bare = network_info("x", NetworkInspect::default());
        assert_eq!(
            (bare.name.as_str(), bare.subnet, bare.gateway),
            ("x", None, None)
        );
        assert_eq!(bare.pod_network(), None);
    }

    #[test]
    fn same_port_twice_is_exposed_once_with_two_bindings() {
        let port = |ip: &str| super::super::PortSpec {
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: Some(ip.into()),
            host_port: 8080,
        };
        let body = create_body(&ContainerSpec {
            ports: vec![port("127.0.0.2"), port("127.0.0.3")],
            ..Default::default()
        });
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_string()]));
        let pb = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(pb["80/tcp"].as_ref().unwrap().len(), 2);
    }

    fn inspect_json() -> ContainerInspectResponse {
        // Trimmed from a real `GET /containers/{id}/json` of engine 20.10 (API 1.41).
        serde_json::from_str(
            r#"{
              "Id": "abc123",
              "Name": "/web-1",
              "Image": "sha256:feed",
              "RestartCount": 0,
              "State": {"Status": "exited", "Running": false, "Paused": false,
                        "Restarting": false, "OOMKilled": true, "Dead": false, "Pid": 0,
                        "ExitCode": 137, "Error": "",
                        "StartedAt": "2026-11-25T18:00:00.123456789Z",
                        "FinishedAt": "2026-11-25T18:00:05.5Z"},
              "HostConfig": {"NetworkMode": "shoal-node-1"},
              "Config": {"Image": "shoal-test/echo:latest",
                         "Labels": {"shoal.pod": "web-1"}},
              "NetworkSettings": {
                "Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"},
                                       {"HostIp": "::", "HostPort": "49153"}],
                          "9090/tcp": null},
                "Networks": {"shoal-node-1": {"IPAddress": "172.20.0.2"},
                             "bridge": {"IPAddress": ""}}
              }
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn inspect_maps_to_info() {
        let info = info_from_inspect(inspect_json()).unwrap();
        assert_eq!(info.id, "abc123");
        assert_eq!(info.name, "web-1");
        assert_eq!(info.image, "shoal-test/echo:latest");
        assert_eq!(info.image_id, "sha256:feed");
        assert_eq!(info.labels["shoal.pod"], "web-1");
        assert_eq!(info.state, ContainerState::Exited);
        assert_eq!(info.exit_code, Some(137));
        assert!(info.oom_killed);
        assert_eq!(info.error, None);
        // A SIGKILL exit at a memory limit counts as OOM even when the engine missed it; one
        // without a limit does not.
        let mut missed = inspect_json();
        let st = missed.state.as_mut().unwrap();
        st.oom_killed = Some(false);
        missed.host_config.as_mut().unwrap().memory = Some(32 << 20);
        assert!(info_from_inspect(missed.clone()).unwrap().oom_killed);
        missed.host_config.as_mut().unwrap().memory = None;
        assert!(!info_from_inspect(missed).unwrap().oom_killed);
        assert_eq!(
            info.started_at.as_deref(),
            Some("2026-11-25T18:00:00.123456789Z")
        );
        assert_eq!(info.network.as_deref(), Some("shoal-node-1"));
        assert_eq!(info.ip.as_deref(), Some("172.20.0.2"));
        assert_eq!(info.ports.len(), 2);
        let p = info.host_port(8080, Protocol::Tcp).unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port), ("127.0.0.1", 49153));
    }

    #[test]
    fn inspect_of_a_created_container() {
        let resp = ContainerInspectResponse {
            id: Some("c1".into()),
            state: Some(DockerState {
                status: Some(ContainerStateStatusEnum::CREATED),
                exit_code: Some(0),
                started_at: Some("0001-01-01T00:00:00Z".into()),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            config: Some(ContainerConfig::default()),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([(
                    "bridge".to_string(),
                    EndpointSettings::default(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = info_from_inspect(resp).unwrap();
        assert_eq!(info.state, ContainerState::Created);
        assert_eq!(info.exit_code, None, "no exit code before it ran");
        assert_eq!(info.started_at, None);
        assert_eq!(info.finished_at, None);
        assert_eq!(info.ip, None);
        assert!(info.ports.is_empty());
    }

    #[test]
    fn inspect_without_id_is_an_error_not_a_panic() {
        assert!(info_from_inspect(ContainerInspectResponse::default()).is_err());
    }

    #[test]
    fn port_keys() {
        assert_eq!(parse_port_key("8080/tcp"), Some((8080, Protocol::Tcp)));
        assert_eq!(parse_port_key("53/udp"), Some((53, Protocol::Udp)));
        assert_eq!(parse_port_key("80"), Some((80, Protocol::Tcp)));
        assert_eq!(parse_port_key("80/sctp"), None);
        assert_eq!(parse_port_key("x/tcp"), None);
    }

    #[test]
    fn stats_subtract_the_page_cache() {
        let resp = |key: &str| ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(1_500),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10_000),
                stats: Some(HashMap::from([(key.to_string(), 4_000)])),
                ..Default::default()
            }),
            ..Default::default()
        };
        for key in ["inactive_file", "total_inactive_file"] {
            assert_eq!(
                stats_from(&resp(key)),
                Stats {
                    cpu_nanos: 1_500,
                    memory_bytes: 6_000
                }
            );
        }
        assert_eq!(
            stats_from(&ContainerStatsResponse::default()),
            Stats::default()
        );
    }

    #[test]
    fn errors_are_classified() {
        let server = |code: u16, msg: &str| BollardError::DockerResponseServerError {
            status_code: code,
            message: msg.into(),
        };
        let create = Target::Create {
            image: "shoal-test/nope:1",
            network: Some("net-a"),
        };
        assert_eq!(
            map_error(
                "sock",
                server(404, "No such image: shoal-test/nope:1"),
                create
            ),
            RuntimeError::ImageNotFound {
                image: "shoal-test/nope:1".into()
            }
        );
        assert_eq!(
            map_error("sock", server(404, "network net-a not found"), create),
            RuntimeError::NotFound {
                id: "network net-a".into()
            }
        );
        assert_eq!(
            map_error(
                "sock",
                server(404, "No such container: c1"),
                Target::Object("c1")
            ),
            RuntimeError::NotFound { id: "c1".into() }
        );
        assert_eq!(
            map_error(
                "sock",
                server(404, "network net-b not found"),
                Target::Object("c1")
            ),
            RuntimeError::NotFound {
                id: "network net-b".into()
            }
        );
        assert!(matches!(
            map_error("sock", server(409, "name in use"), create),
            RuntimeError::Conflict { .. }
        ));
        assert!(matches!(
            map_error(
                "sock",
                server(
                    500,
                    "Bind for 127.0.0.1:80 failed: port is already allocated"
                ),
                Target::Object("c1")
            ),
            RuntimeError::Conflict { .. }
        ));
        assert!(matches!(
            map_error("sock", server(500, "boom"), Target::Object("c1")),
            RuntimeError::Other { .. }
        ));
        let e = map_error(
            "unix:///nowhere.sock",
            BollardError::SocketNotFoundError("/nowhere.sock".into()),
            Target::Engine,
        );
        assert!(matches!(e, RuntimeError::Unavailable { .. }));
        assert!(
            e.to_string()
                .contains("cannot reach the Docker engine at unix:///nowhere.sock")
        );
        assert!(e.to_string().contains("is dockerd running?"));
        let refused = BollardError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(matches!(
            map_error("s", refused, Target::Engine),
            RuntimeError::Unavailable { .. }
        ));
    }

    #[test]
    fn log_options() {
        let o = logs_options(&LogOptions {
            tail: Some(10),
            since: Some(1_700_000_000),
            follow: true,
            timestamps: true,
        });
        assert_eq!(o.tail, "10");
        assert_eq!(o.since, 1_700_000_000);
        assert!(o.follow && o.timestamps && o.stdout && o.stderr);
        assert_eq!(logs_options(&LogOptions::default()).tail, "all");
    }

    #[test]
    fn label_filter_query() {
        assert_eq!(label_filters(&[]), None);
        let f = label_filters(&[("a", "1"), ("b", "2")]).unwrap();
        assert_eq!(f["label"], vec!["a=1".to_string(), "b=2".to_string()]);
    }

    /// A stand-in for the engine on a Unix socket: answers `/version` and the container list
    /// (empty), over HTTP/1.1 with keep-alive, until the returned task is aborted.
    fn fake_engine(path: &std::path::Path) -> tokio::task::JoinHandle<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            // Dropped with the task: every open connection closes with it, as with dockerd.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let body = if head.contains("/version") {
                            r#"{"ApiVersion":"1.43","MinAPIVersion":"1.12","Version":"24.0.0"}"#
                        } else {
                            "[]"
                        };
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    }

    #[tokio::test]
    async fn the_client_works_again_once_the_socket_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let host = format!("unix://{}", path.display());
        let engine = fake_engine(&path);
        let rt = DockerRuntime::connect_to(Some(&host)).await.unwrap();
        assert_eq!(rt.list(&[]).await.unwrap(), Vec::new());

        // dockerd stops: its connections close and its socket goes.
        engine.abort();
        let _ = engine.await;
        std::fs::remove_file(&path).unwrap();
        let mut down = None;
        for _ in 0..5 {
            // The first call may still meet the closed pooled connection.
            if let Err(e @ RuntimeError::Unavailable { .. }) = rt.list(&[]).await {
                down = Some(e);
                break;
            }
        }
        let down = down.expect("an unavailable engine");
        assert!(down.to_string().contains(&host), "{down}");

        // It comes back on the same socket: the same client answers again.
        let engine = fake_engine(&path);
        assert_eq!(rt.list(&[]).await.unwrap(), Vec::new());
        engine.abort();
    }
}
