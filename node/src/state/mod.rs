//! The desired-state store. INTERFACE STUB: an in-memory map with the final signatures; the
//! automerge document, persistence and secret encryption replace its insides.
//!
//! One task ([`StateTask`]) owns the document; everyone else holds a [`StateHandle`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shoal_protocol::api::{ApplyAction, ApplyResult};
use shoal_protocol::{FieldError, Kind, Resource};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The request is wrong (a client error): e.g. the namespace does not exist.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// The state file cannot be used; the message names the file and what to do.
    #[error("state file {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("state store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store task has stopped (shutdown).
    #[error("the state store has stopped")]
    Stopped,
}

/// One stored object as the API shows it: Kubernetes-shaped JSON without `status`, secret
/// data decrypted.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub kind: Kind,
    pub value: Value,
}

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StateConfig {
    pub data_dir: PathBuf,
    /// 32 bytes of the cluster secret, from which the secret-data key is derived.
    pub cluster_secret: [u8; 32],
    /// The bounded size of the command channel.
    pub channel_size: usize,
}

type Key = (Kind, Option<String>, String);

enum Command {
    Apply(
        Vec<Resource>,
        oneshot::Sender<Result<Vec<ApplyResult>, StateError>>,
    ),
    Get(Key, oneshot::Sender<Result<Option<StoredObject>, StateError>>),
    List(
        Kind,
        Option<String>,
        oneshot::Sender<Result<Vec<StoredObject>, StateError>>,
    ),
    Delete(Key, oneshot::Sender<Result<Option<StoredObject>, StateError>>),
    Digest(oneshot::Sender<Result<String, StateError>>),
}

/// A cheap, cloneable handle on the store.
#[derive(Clone)]
pub struct StateHandle {
    tx: mpsc::Sender<Command>,
}

/// The task that owns the document.
pub struct StateTask {
    rx: mpsc::Receiver<Command>,
    objects: BTreeMap<Key, Value>,
}

/// Opens (or creates) the store in `config.data_dir`. A file that cannot be read or fails its
/// checksum is an error that names it; nothing is reset silently.
pub fn open(config: &StateConfig) -> Result<(StateHandle, StateTask), StateError> {
    let (tx, rx) = mpsc::channel(config.channel_size);
    Ok((
        StateHandle { tx },
        StateTask {
            rx,
            objects: BTreeMap::new(),
        },
    ))
}

/// The path of the state file in a data directory (named in error messages).
pub fn state_file(data_dir: &Path) -> PathBuf {
    data_dir.join("state.automerge")
}

impl StateHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StateError>>) -> Command,
    ) -> Result<T, StateError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| StateError::Stopped)?;
        rx.await.map_err(|_| StateError::Stopped)?
    }

    /// Applies a batch atomically: every object is created, updated or left unchanged, or,
    /// on any error, nothing is written. Objects must be validated and have their namespace
    /// set (namespaced kinds). Results are in input order.
    pub async fn apply(&self, batch: Vec<Resource>) -> Result<Vec<ApplyResult>, StateError> {
        self.call(|tx| Command::Apply(batch, tx)).await
    }

    pub async fn get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, StateError> {
        let key = (kind, namespace.map(str::to_string), name.to_string());
        self.call(|tx| Command::Get(key, tx)).await
    }

    /// Objects of `kind`, in one namespace or (None) in all, sorted by namespace and name.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredObject>, StateError> {
        let ns = namespace.map(str::to_string);
        self.call(|tx| Command::List(kind, ns, tx)).await
    }

    /// Deletes one object; returns it, or None when it did not exist. Deleting a Namespace
    /// deletes every object in it.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, StateError> {
        let key = (kind, namespace.map(str::to_string), name.to_string());
        self.call(|tx| Command::Delete(key, tx)).await
    }

    /// A digest of the whole desired state: equal on two nodes exactly when they hold the
    /// same state.
    pub async fn digest(&self) -> Result<String, StateError> {
        self.call(Command::Digest).await
    }
}

impl StateTask {
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let cmd = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = self.rx.recv() => match cmd { Some(c) => c, None => break },
            };
            self.handle(cmd);
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Apply(batch, reply) => {
                let mut out = Vec::new();
                for r in batch {
                    let key = (
                        r.kind(),
                        r.namespace().map(str::to_string),
                        r.name().to_string(),
                    );
                    let action = if self.objects.contains_key(&key) {
                        ApplyAction::Configured
                    } else {
                        ApplyAction::Created
                    };
                    out.push(ApplyResult {
                        api_version: r.kind().api_version().into(),
                        kind: r.kind().name().into(),
                        namespace: key.1.clone(),
                        name: key.2.clone(),
                        action,
                        generation: 1,
                    });
                    self.objects.insert(key, r.to_value());
                }
                let _ = reply.send(Ok(out));
            }
            Command::Get(key, reply) => {
                let kind = key.0;
                let v = self.objects.get(&key).cloned();
                let _ = reply.send(Ok(v.map(|value| StoredObject { kind, value })));
            }
            Command::List(kind, ns, reply) => {
                let v = self
                    .objects
                    .iter()
                    .filter(|((k, n, _), _)| *k == kind && (ns.is_none() || *n == ns))
                    .map(|(_, value)| StoredObject {
                        kind,
                        value: value.clone(),
                    })
                    .collect();
                let _ = reply.send(Ok(v));
            }
            Command::Delete(key, reply) => {
                let kind = key.0;
                let v = self.objects.remove(&key);
                let _ = reply.send(Ok(v.map(|value| StoredObject { kind, value })));
            }
            Command::Digest(reply) => {
                let _ = reply.send(Ok(format!("{}", self.objects.len())));
            }
        }
    }
}
