//! The desired-state store: the cluster's declared resources in one automerge document,
//! persisted in the node's data directory, with Secret data sealed by the cluster key.
//!
//! One task ([`StateTask`]) owns the document and its files; everyone else (the HTTP API, and
//! later the scheduler, controllers and the anti-entropy protocol) holds a cheap, cloneable
//! [`StateHandle`] that sends commands over a bounded channel and awaits the reply.
//!
//! Writes are group-committed: the task takes whatever commands are already queued, executes
//! them in order, appends their changes to the log as ONE record with ONE fsync, and only then
//! replies. A caller that got `Ok` from a write knows it is on disk.
//!
//! Replication (the `replication` module drives it) goes through the same task: changes
//! from peers, whether gossiped or received by automerge's sync protocol, are loaded into the
//! document, persisted by the same group commit and wake subscribers like local writes. The
//! task keeps one automerge `sync::State` per sync session. Input from a peer never panics the
//! task: a bad message is an error and leaves the document as it was, and a peer whose
//! changes do not descend from this node's genesis is refused ([`StateError::ForeignDocument`]).
//!
//! Layout of this module:
//! - [`store`]: the document layout, the apply/get/list/delete rules, merge laws, digest;
//! - `tree`: JSON ⇄ automerge trees with minimal writes;
//! - `persist`: the snapshot and the change log on disk;
//! - `crypto`: sealing of Secret data;
//! - `ids`: uids and timestamps.

mod crypto;
mod ids;
mod persist;
pub mod store;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use automerge::sync;
use automerge::{AutoCommit, ChangeHash};
use serde_json::Value;
use shoal_protocol::api::ApplyResult;
use shoal_protocol::cluster::{Lease, Slot};
use shoal_protocol::{FieldError, Kind, Resource};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crypto::Sealer;
use persist::Files;
use store::Store;
pub use store::{PodSubnets, Stats};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The request is wrong (a client error): e.g. the namespace does not exist. Each field
    /// error's `document` is the index of the object in the applied batch.
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
    /// A stored Secret's data does not open with this node's cluster secret (a node started
    /// with the wrong secret, or a damaged value). A server-side error: log it, answer 500.
    #[error("secret {object}: {detail}")]
    SecretData { object: String, detail: String },
    /// A failure that is not the client's: a bug, or the OS failing to give random bytes.
    #[error("internal error in the state store: {0}")]
    Internal(String),
    /// Changes or a sync message from a peer cannot be used (damaged, or not automerge); the
    /// document is unchanged. The caller logs it with the peer.
    #[error("unusable data from a peer: {0}")]
    Remote(String),
    /// A peer's document does not descend from this node's genesis: another cluster, or an
    /// incompatible version of shoald. Nothing of it was kept.
    #[error("refused a peer's changes: {0}")]
    ForeignDocument(String),
    /// The store task has stopped (shutdown).
    #[error("the state store has stopped")]
    Stopped,
}

impl StateError {
    /// A copy for every caller of a failed group commit (`io::Error` is not `Clone`).
    fn duplicate(&self) -> StateError {
        match self {
            StateError::Invalid(e) => StateError::Invalid(e.clone()),
            StateError::Corrupt { path, detail } => StateError::Corrupt {
                path: path.clone(),
                detail: detail.clone(),
            },
            StateError::Io { path, source } => StateError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StateError::SecretData { object, detail } => StateError::SecretData {
                object: object.clone(),
                detail: detail.clone(),
            },
            StateError::Internal(s) => StateError::Internal(s.clone()),
            StateError::Remote(s) => StateError::Remote(s.clone()),
            StateError::ForeignDocument(s) => StateError::ForeignDocument(s.clone()),
            StateError::Stopped => StateError::Stopped,
        }
    }
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

/// A store in `dir` whose task runs until `stop` is cancelled, for tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn open_for_test(
    dir: &std::path::Path,
    stop: &tokio_util::sync::CancellationToken,
) -> StateHandle {
    let (state, task) = open(&StateConfig {
        data_dir: dir.to_path_buf(),
        cluster_secret: [7; 32],
        channel_size: 16,
    })
    .unwrap();
    tokio::spawn(task.run(stop.clone()));
    state
}

/// One write of a node's pod subnet claim (see `crate::podnet::subnet::decide`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSubnetClaim {
    /// The pod range to record if none is recorded yet.
    pub range: String,
    pub node: String,
    /// The index to claim, if any.
    pub index: Option<u32>,
    /// Indexes this node holds and gives up.
    pub release: Vec<u32>,
}

type Reply<T> = oneshot::Sender<Result<T, StateError>>;

enum Command {
    Apply(Vec<(Kind, Value)>, Reply<Vec<ApplyResult>>),
    Get(Kind, Option<String>, String, Reply<Option<StoredObject>>),
    List(Kind, Option<String>, Reply<Vec<StoredObject>>),
    Delete(Kind, Option<String>, String, Reply<Option<StoredObject>>),
    Digest(Reply<String>),
    Stats(Reply<Stats>),
    Slots(Reply<Vec<Slot>>),
    WriteSlots(Vec<Slot>, Vec<String>, Reply<()>),
    Leases(Reply<BTreeMap<String, Lease>>),
    ClaimLease(String, String, u64, Reply<Option<Lease>>),
    PodSubnets(Reply<PodSubnets>),
    ClaimPodSubnet(PodSubnetClaim, Reply<PodSubnets>),
    Heads(Reply<Vec<ChangeHash>>),
    /// `true`: only this process's own changes (what gossip broadcasts).
    ChangesSince(Vec<ChangeHash>, bool, Reply<(Vec<u8>, Vec<ChangeHash>)>),
    ApplyRemote(Vec<u8>, Reply<bool>),
    SyncMessage(String, usize, Reply<Option<Vec<u8>>>),
    ReceiveSync(String, Vec<u8>, Reply<()>),
    ResetSync(String, Reply<()>),
    BeginSync(String, Reply<()>),
    /// Every object a backup holds, in stored form (see [`StateHandle::export`]).
    Export(Reply<Vec<StoredObject>>),
    /// Objects of a backup (see [`StateHandle::restore`]).
    Restore(Vec<(Kind, Value)>, Reply<Vec<ApplyResult>>),
}

/// A command executed, whose answer waits for the group's commit.
enum Pending {
    Apply(
        Reply<Vec<ApplyResult>>,
        Result<Vec<ApplyResult>, StateError>,
    ),
    Object(
        Reply<Option<StoredObject>>,
        Result<Option<StoredObject>, StateError>,
    ),
    List(
        Reply<Vec<StoredObject>>,
        Result<Vec<StoredObject>, StateError>,
    ),
    Digest(Reply<String>, String),
    Slots(Reply<Vec<Slot>>, Result<Vec<Slot>, StateError>),
    Leases(
        Reply<BTreeMap<String, Lease>>,
        Result<BTreeMap<String, Lease>, StateError>,
    ),
    Lease(Reply<Option<Lease>>, Result<Option<Lease>, StateError>),
    PodSubnets(Reply<PodSubnets>, Result<PodSubnets, StateError>),
    Done(Reply<()>, Result<(), StateError>),
    Heads(Reply<Vec<ChangeHash>>, Vec<ChangeHash>),
    Changes(
        Reply<(Vec<u8>, Vec<ChangeHash>)>,
        (Vec<u8>, Vec<ChangeHash>),
    ),
    Changed(Reply<bool>, Result<bool, StateError>),
    SyncMessage(Reply<Option<Vec<u8>>>, Result<Option<Vec<u8>>, StateError>),
    /// Answered after the commit, so that the sizes include it.
    Stats(Reply<Stats>),
}

/// A cheap, cloneable handle on the store.
#[derive(Clone)]
pub struct StateHandle {
    tx: mpsc::Sender<Command>,
    changes: watch::Receiver<u64>,
    /// The public fingerprint of the key that seals Secret data (fixed for the process).
    secrets_key_id: std::sync::Arc<str>,
}

/// The task that owns the document and its files.
pub struct StateTask {
    rx: mpsc::Receiver<Command>,
    store: Store,
    /// None only after a blocking write panicked (a bug): then every write fails.
    files: Option<Files>,
    /// The heads that the files on disk hold.
    persisted: Vec<ChangeHash>,
    /// Set after a failed write: the next write is a full snapshot, since the log may end in a
    /// partial record.
    must_compact: bool,
    /// At most this many queued commands go into one group commit.
    max_group: usize,
    /// Counts committed changes, so that controllers and agents wake up on a write instead of
    /// polling the document.
    changes: watch::Sender<u64>,
    /// automerge's sync state of each sync session with a peer (see
    /// [`StateHandle::sync_message`]). Dropped on reset, on a failed receive and after a
    /// failed commit (the document went back, so what a session believes was sent may be
    /// gone).
    sync: HashMap<String, sync::State>,
    /// Reads kept until the document changes.
    reads: ReadCache,
    /// Writes run on the task itself rather than on a blocking thread (see
    /// [`StateTask::with_inline_writes`]).
    inline_writes: bool,
}

/// The slots and the object lists last read, kept while the document's heads stay the same
/// (the heads name its content exactly). The agent, the controllers, the fence and the
/// proxies read them every second or so, and most of those reads find the document as it
/// was: decoding it again each time was most of an idle node's work.
#[derive(Default)]
struct ReadCache {
    heads: Vec<ChangeHash>,
    slots: Option<Vec<Slot>>,
    lists: BTreeMap<(Kind, Option<String>), Vec<StoredObject>>,
    objects: BTreeMap<(Kind, Option<String>, String), Option<StoredObject>>,
    leases: Option<BTreeMap<String, Lease>>,
}

impl ReadCache {
    /// Forgets what was read unless the document is still at `heads`.
    fn at(&mut self, heads: Vec<ChangeHash>) -> &mut ReadCache {
        if self.heads != heads {
            self.heads = heads;
            self.slots = None;
            self.lists.clear();
            self.objects.clear();
            self.leases = None;
        }
        self
    }
}

/// Opens (or creates) the store in `config.data_dir`. A file that cannot be read or fails its
/// checksum is an error that names it; nothing is reset silently.
pub fn open(config: &StateConfig) -> Result<(StateHandle, StateTask), StateError> {
    let sealer = Sealer::derive(&config.cluster_secret);
    let (mut files, loaded) = Files::open(&config.data_dir)?;
    let mut store = match loaded.snapshot {
        None => {
            let mut store = Store::create(sealer)?;
            files.write_snapshot(&store.doc_mut().save())?;
            tracing::info!(path = %files.snapshot_path().display(), "created a new state document");
            store
        }
        Some(payload) => {
            let doc = load_doc(&files, &payload, &loaded.records)?;
            Store::from_doc(doc, sealer).map_err(|detail| StateError::Corrupt {
                path: files.snapshot_path().to_path_buf(),
                detail,
            })?
        }
    };
    let persisted = store.heads();
    let secrets_key_id = store.secrets_key_id().into();
    tracing::info!(
        path = %files.snapshot_path().display(),
        objects = store.object_count(),
        snapshot_bytes = files.snapshot_len(),
        log_bytes = files.log_len(),
        log_records = loaded.records.len(),
        "state loaded"
    );
    let channel_size = config.channel_size.max(1);
    let (tx, rx) = mpsc::channel(channel_size);
    let (changes, changes_rx) = watch::channel(0);
    Ok((
        StateHandle {
            tx,
            changes: changes_rx,
            secrets_key_id,
        },
        StateTask {
            rx,
            store,
            files: Some(files),
            persisted,
            must_compact: false,
            max_group: channel_size,
            changes,
            sync: HashMap::new(),
            reads: ReadCache::default(),
            inline_writes: false,
        },
    ))
}

/// Loads the snapshot, then replays the log records on top of it.
fn load_doc(files: &Files, payload: &[u8], records: &[Vec<u8>]) -> Result<AutoCommit, StateError> {
    let snapshot_error = |detail: String| StateError::Corrupt {
        path: files.snapshot_path().to_path_buf(),
        detail: format!(
            "automerge cannot load the document ({detail}). Restore it from a backup, or move \
             state.automerge and state.log away to start with an empty state (the node then \
             receives the cluster's state from its peers)"
        ),
    };
    let log_error = |detail: String| StateError::Corrupt {
        path: files.log_path().to_path_buf(),
        detail: format!(
            "{detail}. Restore it from a backup, or move state.log away to start from the \
             last snapshot (the changes written since are lost on this node)"
        ),
    };
    // The checksum guards against random damage; catching a panic of the decoder guards
    // against the rest (a file written by a buggy or hostile tool), so that it is an error.
    let mut doc = std::panic::catch_unwind(|| AutoCommit::load(payload))
        .map_err(|_| snapshot_error("the decoder failed".into()))?
        .map_err(|e| snapshot_error(e.to_string()))?;
    for (i, record) in records.iter().enumerate() {
        std::panic::catch_unwind(AssertUnwindSafe(|| doc.load_incremental(record)))
            .map_err(|_| log_error(format!("record {i}: the decoder failed")))?
            .map_err(|e| log_error(format!("record {i} cannot be loaded: {e}")))?;
    }
    let missing = doc.get_missing_deps(&[]);
    if !missing.is_empty() {
        return Err(log_error(format!(
            "{} change(s) in the log build on changes that no file holds (was the snapshot \
             replaced by an older one?)",
            missing.len()
        )));
    }
    Ok(doc)
}

/// The path of the state file in a data directory (named in error messages).
pub fn state_file(data_dir: &Path) -> PathBuf {
    data_dir.join(persist::SNAPSHOT_FILE)
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
    ///
    /// A namespace may be created by the same batch, wherever it stands in it. An object named
    /// twice in a batch is applied twice, in order (the later wins; each gets its result). An
    /// unchanged object writes nothing; a change of labels or annotations only bumps
    /// `resourceVersion`, any other change `generation` too.
    pub async fn apply(&self, batch: Vec<Resource>) -> Result<Vec<ApplyResult>, StateError> {
        let values = batch.iter().map(|r| (r.kind(), r.to_value())).collect();
        self.apply_values(values).await
    }

    /// [`StateHandle::apply`] on Kubernetes-shaped JSON (also the way Nodes, which are no
    /// [`Resource`], get stored).
    pub async fn apply_values(
        &self,
        batch: Vec<(Kind, Value)>,
    ) -> Result<Vec<ApplyResult>, StateError> {
        self.call(|tx| Command::Apply(batch, tx)).await
    }

    pub async fn get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, StateError> {
        let (ns, name) = (namespace.map(str::to_string), name.to_string());
        self.call(|tx| Command::Get(kind, ns, name, tx)).await
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
    /// deletes every object in it; deleting `default` is refused (Invalid).
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, StateError> {
        let (ns, name) = (namespace.map(str::to_string), name.to_string());
        self.call(|tx| Command::Delete(kind, ns, name, tx)).await
    }

    /// A digest of the whole desired state: equal on two nodes exactly when they hold the
    /// same state. See [`store`] (`Store::digest`) for what it hashes and why.
    pub async fn digest(&self) -> Result<String, StateError> {
        self.call(Command::Digest).await
    }

    /// Every pod slot, sorted by namespace and pod.
    pub async fn slots(&self) -> Result<Vec<Slot>, StateError> {
        self.call(Command::Slots).await
    }

    /// Writes `puts` (whole slots; only differing fields are written) and removes the slots
    /// with the keys `deletes` (`namespace/pod`), in one change.
    pub async fn write_slots(
        &self,
        puts: Vec<Slot>,
        deletes: Vec<String>,
    ) -> Result<(), StateError> {
        self.call(|reply| Command::WriteSlots(puts, deletes, reply))
            .await
    }

    /// The newest lease of every leader role, by role.
    pub async fn leases(&self) -> Result<BTreeMap<String, Lease>, StateError> {
        self.call(Command::Leases).await
    }

    /// Takes `role` for `holder` at the next epoch, if the newest epoch is still `seen` (0:
    /// none). Returns the newest lease afterwards: `holder`'s if the claim went through.
    pub async fn claim_lease(
        &self,
        role: &str,
        holder: &str,
        seen: u64,
    ) -> Result<Option<Lease>, StateError> {
        let (role, holder) = (role.to_string(), holder.to_string());
        self.call(|reply| Command::ClaimLease(role, holder, seen, reply))
            .await
    }

    /// The cluster's pod range, once recorded, and every node's pod subnet.
    pub async fn pod_subnets(&self) -> Result<PodSubnets, StateError> {
        self.call(Command::PodSubnets).await
    }

    /// Records the pod range unless recorded, claims a subnet and releases others (see
    /// [`PodSubnetClaim`]). Returns what holds afterwards.
    pub async fn claim_pod_subnet(&self, claim: PodSubnetClaim) -> Result<PodSubnets, StateError> {
        self.call(|reply| Command::ClaimPodSubnet(claim, reply))
            .await
    }

    /// A receiver that changes after every committed write: wait on it with `changed()`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Object count and on-disk sizes.
    pub async fn stats(&self) -> Result<Stats, StateError> {
        self.call(Command::Stats).await
    }

    /// The document's current heads.
    pub async fn heads(&self) -> Result<Vec<ChangeHash>, StateError> {
        self.call(Command::Heads).await
    }

    /// Every change after `heads` (automerge's `save_after`: concatenated change chunks, empty
    /// when there is none), and the heads that they lead to. A peer loads them with
    /// [`StateHandle::apply_remote`].
    pub async fn changes_since(
        &self,
        heads: Vec<ChangeHash>,
    ) -> Result<(Vec<u8>, Vec<ChangeHash>), StateError> {
        self.call(|reply| Command::ChangesSince(heads, false, reply))
            .await
    }

    /// As [`StateHandle::changes_since`], but only the changes written by this process (not
    /// those received from peers): what gossip broadcasts, so that a received change is not
    /// broadcast again by every node. Anti-entropy carries everything else.
    pub async fn local_changes_since(
        &self,
        heads: Vec<ChangeHash>,
    ) -> Result<(Vec<u8>, Vec<ChangeHash>), StateError> {
        self.call(|reply| Command::ChangesSince(heads, true, reply))
            .await
    }

    /// Loads changes from a peer (the output of [`StateHandle::changes_since`], or a saved
    /// document), persisted by the group commit like a local write; returns whether the
    /// document changed. Changes that build on ones this node lacks wait (in memory) until
    /// those arrive. Errors: [`StateError::Remote`] for data that cannot be loaded,
    /// [`StateError::ForeignDocument`] for another cluster's changes; the document is then
    /// unchanged.
    pub async fn apply_remote(&self, changes: Vec<u8>) -> Result<bool, StateError> {
        self.call(|reply| Command::ApplyRemote(changes, reply))
            .await
    }

    /// The next message of automerge's sync protocol in the session `peer` (None: nothing to
    /// send now: in sync as far as this node knows, or waiting for an answer).
    ///
    /// `peer` names a sync session, one automerge `sync::State` kept by the task: a caller
    /// that syncs with one peer in both directions at once uses one name per direction.
    pub async fn sync_message(&self, peer: String) -> Result<Option<Vec<u8>>, StateError> {
        self.sync_message_within(peer, usize::MAX).await
    }

    /// As [`StateHandle::sync_message`], carrying at most `max_change_bytes` of changes (or
    /// one change, if that one alone is larger): the rest goes in the session's next
    /// messages, so that catching up takes several small messages rather than one huge one.
    pub async fn sync_message_within(
        &self,
        peer: String,
        max_change_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StateError> {
        self.call(|reply| Command::SyncMessage(peer, max_change_bytes, reply))
            .await
    }

    /// Receives a sync message of the session `peer`, applying the changes it carries
    /// (persisted like [`StateHandle::apply_remote`]). On error the session is reset and the
    /// document unchanged.
    pub async fn receive_sync(&self, peer: String, message: Vec<u8>) -> Result<(), StateError> {
        self.call(|reply| Command::ReceiveSync(peer, message, reply))
            .await
    }

    /// Forgets the session `peer` (a peer that reconnected, or went away): the next message
    /// starts afresh.
    pub async fn reset_sync(&self, peer: String) -> Result<(), StateError> {
        self.call(|reply| Command::ResetSync(peer, reply)).await
    }

    /// Starts a new exchange in the session `peer`, keeping only what the last one
    /// established (the heads both sides had in common), so that the first message carries a
    /// Bloom filter of the changes since then rather than of the whole history. Each
    /// anti-entropy round begins with it, on both sides.
    pub async fn begin_sync(&self, peer: String) -> Result<(), StateError> {
        self.call(|reply| Command::BeginSync(peer, reply)).await
    }

    /// Every object a backup holds (all stored kinds but Node; namespaces first), in stored
    /// form: server-set metadata kept, a Secret's data sealed (`sealedData`), never opened.
    pub async fn export(&self) -> Result<Vec<StoredObject>, StateError> {
        self.call(Command::Export).await
    }

    /// Restores objects in the form [`StateHandle::export`] gives, all or nothing (see
    /// `Store::restore` for the checks and what is written). Results are in input order.
    pub async fn restore(&self, items: Vec<(Kind, Value)>) -> Result<Vec<ApplyResult>, StateError> {
        self.call(|reply| Command::Restore(items, reply)).await
    }

    /// A public fingerprint of the key that seals Secret data (derived one-way from the
    /// cluster secret): equal on two nodes exactly when they share the cluster secret.
    pub fn secrets_key_id(&self) -> &str {
        &self.secrets_key_id
    }
}

impl StateTask {
    /// Writes the files on the task itself, not on a blocking thread: for the simulator, whose
    /// files are in memory (`/dev/shm`) and whose virtual time must not wait on threads that
    /// the runtime does not schedule. A node's task would stall on a slow disk this way.
    pub fn with_inline_writes(mut self) -> StateTask {
        self.inline_writes = true;
        self
    }

    /// Reads the wall clock (timestamps of objects and leases) from `clock`: the simulator's
    /// virtual, skewed one.
    pub fn with_clock(mut self, clock: crate::time::SharedClock) -> StateTask {
        self.store.clock = clock;
        self
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = self.rx.recv() => match cmd { Some(c) => c, None => break },
            };
            // Group commit: everything already queued shares one append and one fsync.
            let mut group = vec![self.execute(first)];
            while group.len() < self.max_group {
                match self.rx.try_recv() {
                    Ok(cmd) => group.push(self.execute(cmd)),
                    Err(_) => break,
                }
            }
            let committed = self.persist().await;
            if let Err(e) = &committed {
                tracing::error!(error = %e, commands = group.len(), "state write failed");
            }
            for pending in group {
                self.answer(pending, committed.as_ref().err());
            }
        }
        tracing::debug!("state task stopped");
    }

    fn execute(&mut self, cmd: Command) -> Pending {
        let store = &mut self.store;
        match cmd {
            Command::Apply(batch, reply) => {
                let result = store.apply_values(batch);
                if let Ok(results) = &result {
                    for r in results {
                        tracing::debug!(kind = %r.kind, namespace = ?r.namespace, name = %r.name,
                            action = r.action.as_str(), generation = r.generation, "applied");
                    }
                }
                Pending::Apply(reply, result)
            }
            Command::Get(kind, ns, name, reply) => {
                let reads = self.reads.at(store.heads());
                let key = (kind, ns, name);
                let result = match reads.objects.get(&key) {
                    Some(object) => Ok(object.clone()),
                    None => store.get(kind, key.1.as_deref(), &key.2).inspect(|object| {
                        reads.objects.insert(key.clone(), object.clone());
                    }),
                };
                Pending::Object(reply, result)
            }
            Command::List(kind, ns, reply) => {
                let reads = self.reads.at(store.heads());
                let result = match reads.lists.get(&(kind, ns.clone())) {
                    Some(objects) => Ok(objects.clone()),
                    None => store.list(kind, ns.as_deref()).inspect(|objects| {
                        reads.lists.insert((kind, ns), objects.clone());
                    }),
                };
                Pending::List(reply, result)
            }
            Command::Delete(kind, ns, name, reply) => {
                let result = store.delete(kind, ns.as_deref(), &name);
                if let Ok(Some(_)) = &result {
                    tracing::debug!(kind = %kind, namespace = ?ns, name = %name, "deleted");
                }
                Pending::Object(reply, result)
            }
            Command::Digest(reply) => Pending::Digest(reply, store.digest()),
            Command::Stats(reply) => Pending::Stats(reply),
            Command::Slots(reply) => {
                let reads = self.reads.at(store.heads());
                let result = match &reads.slots {
                    Some(slots) => Ok(slots.clone()),
                    None => store
                        .slots()
                        .inspect(|slots| reads.slots = Some(slots.clone())),
                };
                Pending::Slots(reply, result)
            }
            Command::WriteSlots(puts, deletes, reply) => {
                Pending::Done(reply, store.write_slots(&puts, &deletes))
            }
            Command::Leases(reply) => {
                let reads = self.reads.at(store.heads());
                let result = match &reads.leases {
                    Some(leases) => Ok(leases.clone()),
                    None => store.leases().inspect(|l| reads.leases = Some(l.clone())),
                };
                Pending::Leases(reply, result)
            }
            Command::ClaimLease(role, holder, seen, reply) => {
                let since = store.clock.unix_now();
                let result = store.claim_lease(&role, &holder, seen, since);
                Pending::Lease(reply, result)
            }
            Command::PodSubnets(reply) => Pending::PodSubnets(reply, store.pod_subnets()),
            Command::ClaimPodSubnet(c, reply) => {
                let result = store.claim_pod_subnet(&c.range, c.index, &c.node, &c.release);
                Pending::PodSubnets(reply, result)
            }
            Command::Heads(reply) => Pending::Heads(reply, store.heads()),
            Command::ChangesSince(heads, local, reply) => {
                let changes = if local {
                    store.local_changes_since(&heads)
                } else {
                    store.changes_since(&heads)
                };
                Pending::Changes(reply, changes)
            }
            Command::ApplyRemote(data, reply) => {
                let result = store.apply_remote(&data);
                match &result {
                    Ok(changed) => tracing::debug!(bytes = data.len(), changed, "remote changes"),
                    Err(e) => {
                        tracing::debug!(bytes = data.len(), error = %e, "remote changes refused")
                    }
                }
                Pending::Changed(reply, result)
            }
            Command::SyncMessage(peer, max_change_bytes, reply) => {
                let session = self.sync.entry(peer).or_default();
                Pending::SyncMessage(reply, store.sync_message(session, max_change_bytes))
            }
            Command::ReceiveSync(peer, data, reply) => {
                let session = self.sync.entry(peer.clone()).or_default();
                let result = store.receive_sync(session, &data);
                if let Err(e) = &result {
                    tracing::debug!(peer = %peer, error = %e, "sync message refused");
                    self.sync.remove(&peer);
                }
                Pending::Done(reply, result)
            }
            Command::ResetSync(peer, reply) => {
                self.sync.remove(&peer);
                Pending::Done(reply, Ok(()))
            }
            Command::BeginSync(peer, reply) => {
                // What automerge persists of a session is what the next one may reuse.
                if let Some(session) = self.sync.remove(&peer)
                    && let Ok(fresh) = sync::State::decode(&session.encode())
                {
                    self.sync.insert(peer, fresh);
                }
                Pending::Done(reply, Ok(()))
            }
            Command::Export(reply) => {
                let result = store.export().map(|items| {
                    items
                        .into_iter()
                        .map(|(kind, value)| StoredObject { kind, value })
                        .collect()
                });
                Pending::List(reply, result)
            }
            Command::Restore(items, reply) => {
                let result = store.restore(items);
                if let Ok(results) = &result {
                    for r in results {
                        tracing::debug!(kind = %r.kind, namespace = ?r.namespace, name = %r.name,
                            action = r.action.as_str(), "restored");
                    }
                }
                Pending::Apply(reply, result)
            }
        }
    }

    /// Sends one answer. When the group's commit failed, every command of the group gets the
    /// error: its effects were reverted (or, for a read, it may have seen reverted effects).
    fn answer(&mut self, pending: Pending, failure: Option<&StateError>) {
        fn send<T>(reply: Reply<T>, result: Result<T, StateError>, failure: Option<&StateError>) {
            let result = match failure {
                Some(e) => Err(e.duplicate()),
                None => result,
            };
            // The caller may have gone away (a dropped HTTP request): nothing to do then.
            let _ = reply.send(result);
        }
        match pending {
            Pending::Apply(reply, result) => send(reply, result, failure),
            Pending::Object(reply, result) => send(reply, result, failure),
            Pending::List(reply, result) => send(reply, result, failure),
            Pending::Digest(reply, digest) => send(reply, Ok(digest), failure),
            Pending::Slots(reply, result) => send(reply, result, failure),
            Pending::Leases(reply, result) => send(reply, result, failure),
            Pending::Lease(reply, result) => send(reply, result, failure),
            Pending::PodSubnets(reply, result) => send(reply, result, failure),
            Pending::Done(reply, result) => send(reply, result, failure),
            Pending::Heads(reply, heads) => send(reply, Ok(heads), failure),
            Pending::Changes(reply, changes) => send(reply, Ok(changes), failure),
            Pending::Changed(reply, result) => send(reply, result, failure),
            Pending::SyncMessage(reply, result) => send(reply, result, failure),
            Pending::Stats(reply) => {
                let stats = self.stats();
                send(reply, Ok(stats), failure)
            }
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            objects: self.store.object_count(),
            doc_bytes: self.files.as_ref().map_or(0, Files::snapshot_len),
            log_bytes: self.files.as_ref().map_or(0, Files::log_len),
        }
    }

    /// Makes every change since the last commit durable: one log record (or a new snapshot
    /// when the log has grown too large), fsynced, on a blocking thread. On failure the
    /// in-memory document goes back to what the disk holds.
    async fn persist(&mut self) -> Result<(), StateError> {
        let heads = self.store.heads();
        if heads == self.persisted {
            return Ok(());
        }
        let Some(mut files) = self.files.take() else {
            self.revert();
            return Err(StateError::Internal(
                "the state files are unavailable after an earlier internal failure: restart \
                 shoald"
                    .into(),
            ));
        };
        let delta = self.store.doc_mut().save_after(&self.persisted);
        let snapshot = if self.must_compact || files.should_compact(delta.len()) {
            Some(self.store.doc_mut().save())
        } else {
            None
        };
        let write = move || {
            let written = match &snapshot {
                Some(payload) => files.write_snapshot(payload),
                None => files.append(&delta),
            };
            (files, written, snapshot.is_some())
        };
        let joined = if self.inline_writes {
            Ok(write())
        } else {
            tokio::task::spawn_blocking(write).await
        };
        match joined {
            Ok((files, Ok(()), compacted)) => {
                if compacted {
                    tracing::info!(snapshot_bytes = files.snapshot_len(), "state log compacted");
                }
                self.files = Some(files);
                self.persisted = heads;
                self.must_compact = false;
                self.changes.send_modify(|n| *n += 1);
                Ok(())
            }
            Ok((files, Err(e), _)) => {
                self.files = Some(files);
                self.must_compact = true;
                self.revert();
                Err(e)
            }
            Err(join) => {
                self.revert();
                Err(StateError::Internal(format!(
                    "the state writer failed: {join}"
                )))
            }
        }
    }

    fn revert(&mut self) {
        self.sync.clear();
        if let Err(e) = self.store.revert_to(&self.persisted) {
            // The unwritten changes stay in memory; they reach the disk with the next write.
            tracing::error!(error = %e, "cannot revert the state to what the disk holds");
        }
    }
}

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;
