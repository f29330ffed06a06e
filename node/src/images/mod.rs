//! The node's image service: pulls images from registries for the node agent.
//!
//! Role: one task ([`ImageService::run`]) owns what the node knows about pulling each image
//! (one [`pull::Record`] per image and set of credentials). The agent asks it, for each
//! container it is about to make, whether the image may be used ([`Images::ensure`]); the
//! service answers at once from its records ([`pull::decide`]) and, when a pull is due, queues
//! one. Pulls run in the background, at most `max_pulls` at a time, so a slow pull never delays
//! another pod's start; pods of one image share one pull. When a pull ends, the service bumps
//! a counter the agent watches ([`Images::finished`]), so the agent makes the containers at once
//! rather than at its next round.
//!
//! Every [`GC_EVERY`] it also collects garbage as kubelet does ([`gc`]): over the high
//! threshold of the image filesystem, images it pulled that no container uses are removed,
//! least recently used first.
//!
//! Sharing between nodes: the service reports what its engine holds (and what it is pulling)
//! as this node's image inventory, which the heartbeat gossips ([`crate::observed::inventory`]).
//! A pull of an image a live peer holds fetches it from that peer instead ([`share`]); an
//! image no peer holds is pulled from its registry by one node while the others wait and then
//! fetch it from that node ([`source`]). `Always` asks the registry each time, as kubelet does.
//!
//! Owns: the pull records, the pulls in flight, when each pulled image was last used, and this
//! node's image list. Talks to: the container engine (through [`Engine`]), the peers'
//! inventories (read from observed state) and the peers themselves (through [`share::Fetch`]).
//! Credentials come with each request from the pod's `imagePullSecrets` ([`auth`]); they are
//! never logged.
//!
//! Pure parts: [`reference`] (image names), [`auth`] (matching credentials to a registry as
//! kubelet does), [`pull`] (the pull policy, back-off, error sorting, allowed registries),
//! [`source`] (peer or registry, and who pulls).

pub mod auth;
pub mod gc;
pub mod pull;
pub mod reference;
pub mod share;
pub mod source;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use shoal_protocol::kinds::PullPolicy;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::gc::{Candidate, GcPolicy};
use self::pull::{Allowed, FailureKind, Pulled, Record, Verdict};
use self::reference::ImageRef;
use self::share::Fetch;
use self::source::{Progress, Step};
use crate::observed::{ImageEntry, Liveness, LocalImages, ObservedHandle};
use crate::runtime::{Engine, RegistryAuth, Runtime, RuntimeError};

/// How often the image filesystem is checked for garbage collection.
pub const GC_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// How often the engine's image list is read again (it is also read after every pull, fetch,
/// collection and upload): images loaded by hand show up within this.
pub const LIST_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The record file's name in the data directory ([`ImagesConfig::record_file`]).
pub const RECORD_FILE: &str = "images.json";

/// How long this node asks the others to fetch an image pushed with `--all`.
pub const SPREAD_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// How long a pull whose holders were all busy waits before it asks again.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a pull that waits (for announcements, or for a peer's pull) looks again.
const WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(250);

/// The peers, for sharing images: their inventories and liveness, and how to fetch from them.
#[derive(Clone)]
pub struct Peers {
    pub observed: ObservedHandle,
    pub fetch: Arc<dyn Fetch>,
}

/// How pulls are bounded.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// Pulls at once on this node.
    pub max_pulls: usize,
    /// Registries this node may pull from; `None`: any.
    pub allowed: Allowed,
    /// Size of the command channel.
    pub channel_size: usize,
    pub gc: GcPolicy,
    /// Where the node keeps the names of the images it pulled or fetched, so that garbage
    /// collection knows them after a restart (written only when that list changes); `None`:
    /// kept in memory only.
    pub record_file: Option<std::path::PathBuf>,
}

impl Default for ImagesConfig {
    fn default() -> ImagesConfig {
        ImagesConfig {
            max_pulls: 2,
            allowed: Allowed(None),
            channel_size: 64,
            gc: GcPolicy::default(),
            record_file: None,
        }
    }
}

/// One container's question about its image.
#[derive(Debug, Clone)]
pub struct Want {
    pub image: String,
    pub policy: PullPolicy,
    /// Whether the engine holds the image now.
    pub present: bool,
    /// When the container was first wanted: an `Always` pull must have started since.
    pub since: Instant,
    pub auth: Option<RegistryAuth>,
}

enum Command {
    Ensure {
        want: Want,
        reply: oneshot::Sender<Verdict>,
    },
    /// Read the engine's image list again (images were loaded by someone else).
    Refresh,
    /// Ask every other node to fetch these images from this one now.
    Spread { images: Vec<String> },
}

/// A cheap handle on the image service.
#[derive(Clone)]
pub struct Images {
    tx: mpsc::Sender<Command>,
    finished: watch::Receiver<u64>,
}

/// Why the service could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the image service has stopped")]
pub struct Stopped;

impl Images {
    /// Whether the container may be made now, and if not why (see [`pull::decide`]); a due
    /// pull is started.
    pub async fn ensure(&self, want: Want) -> Result<Verdict, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ensure { want, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Changes each time a pull ends.
    pub fn finished(&self) -> watch::Receiver<u64> {
        self.finished.clone()
    }

    /// Tells the service that the engine's images changed (an upload was loaded), so that the
    /// peers learn of it at once. Never waits: a full channel drops it (the next periodic
    /// read catches up).
    pub fn refresh(&self) {
        let _ = self.tx.try_send(Command::Refresh);
    }

    /// Asks every other node to fetch `images` from this one now (`shoal image push --all`),
    /// for [`SPREAD_FOR`]. Never waits, as [`refresh`](Self::refresh).
    pub fn spread(&self, images: Vec<String>) {
        let _ = self.tx.try_send(Command::Spread { images });
    }
}

/// Pulls by image and credentials: two pods with different credentials for one image pull
/// separately, so that one's refusal never blocks the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    image: String,
    auth: u64,
}

fn key(want: &Want) -> Key {
    let auth = want.auth.as_ref().map_or(0, |a| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&a.server, &a.username, &a.password, &a.identity_token).hash(&mut h);
        h.finish() | 1
    });
    Key {
        image: want.image.clone(),
        auth,
    }
}

/// How a pull ended: what it brought, or why it failed with a message for people.
type PullResult = Result<Pulled, (FailureKind, String)>;

struct Queued {
    key: Key,
    image: ImageRef,
    auth: Option<RegistryAuth>,
    policy: PullPolicy,
    /// Why this node may not pull the image from its registry, if it may not.
    not_allowed: Option<String>,
    /// Whether the engine held the image when the pull was asked for.
    present: bool,
}

/// The task that owns the pull records.
pub struct ImageService {
    engine: Engine,
    config: ImagesConfig,
    rx: mpsc::Receiver<Command>,
    finished: watch::Sender<u64>,
    records: HashMap<Key, Record>,
    queue: VecDeque<Queued>,
    running: JoinSet<(Key, PullResult)>,
    /// When a container was last made with each image (by reference), or seen using it.
    last_used: HashMap<String, Instant>,
    /// The collection under way.
    collecting: JoinSet<Collected>,
    /// This node's image list, for its inventory.
    local: Arc<watch::Sender<LocalImages>>,
    /// The reading of the engine's image list under way, and whether another is due after it.
    listing: JoinSet<()>,
    list_again: bool,
    peers: Option<Peers>,
    /// Images this node asks the others to fetch, until when.
    spreading: HashMap<String, Instant>,
    /// Every image this node pulled or fetched and has not collected, as in the record file
    /// (earlier runs' included).
    brought: BTreeSet<String>,
    /// When this service started: the last use of an image an earlier run brought.
    started: Instant,
}

/// What a collection did.
#[derive(Debug, Default)]
struct Collected {
    removed: Vec<String>,
    /// Pulled images the engine no longer has (removed by someone else).
    gone: Vec<String>,
    /// Pulled images a container uses now.
    in_use: Vec<String>,
}

impl ImageService {
    pub fn new(engine: Engine, config: ImagesConfig) -> (ImageService, Images) {
        let (tx, rx) = mpsc::channel(config.channel_size.max(1));
        let (finished, finished_rx) = watch::channel(0);
        let (local, _) = watch::channel(LocalImages::default());
        let mut service = ImageService {
            engine,
            config,
            rx,
            finished,
            records: HashMap::new(),
            queue: VecDeque::new(),
            running: JoinSet::new(),
            last_used: HashMap::new(),
            collecting: JoinSet::new(),
            local: Arc::new(local),
            listing: JoinSet::new(),
            list_again: false,
            peers: None,
            spreading: HashMap::new(),
            brought: BTreeSet::new(),
            started: Instant::now(),
        };
        if let Some(path) = &service.config.record_file {
            service.brought = read_brought(path);
        }
        (
            service,
            Images {
                tx,
                finished: finished_rx,
            },
        )
    }

    /// Shares images with the peers: fetches from them before any registry, and lets one
    /// node pull for all.
    pub fn with_peers(mut self, peers: Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    /// This node's image list as it changes (for its inventory).
    pub fn local_images(&self) -> watch::Receiver<LocalImages> {
        self.local.subscribe()
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut gc_tick = tokio::time::interval(GC_EVERY);
        gc_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut list_tick = tokio::time::interval(LIST_EVERY);
        list_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inventories = self
            .peers
            .as_ref()
            .map(|p| p.observed.subscribe_inventories());
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(_) = self.listing.join_next(), if !self.listing.is_empty() => {
                    if std::mem::take(&mut self.list_again) {
                        self.refresh();
                    }
                }
                _ = list_tick.tick() => {
                    self.refresh();
                    self.expire_spread();
                    self.fetch_spread();
                }
                changed = async {
                    match inventories.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if changed {
                        self.fetch_spread();
                    } else {
                        inventories = None;
                    }
                }
                Some(done) = self.collecting.join_next(), if !self.collecting.is_empty() => {
                    match done {
                        Ok(c) => {
                            if !c.removed.is_empty() {
                                self.refresh();
                            }
                            self.collected(c);
                        }
                        Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
                    }
                }
                _ = gc_tick.tick() => self.collect(),
                Some(done) = self.running.join_next(), if !self.running.is_empty() => {
                    match done {
                        Ok((key, result)) => self.finish(key, result),
                        Err(e) => tracing::warn!(error = %e, "a pull task failed"),
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Ensure { want, reply }) => {
                        let verdict = self.ensure(want);
                        let _ = reply.send(verdict);
                    }
                    Some(Command::Refresh) => self.refresh(),
                    Some(Command::Spread { images }) => {
                        let until = Instant::now() + SPREAD_FOR;
                        for image in images {
                            self.spreading.insert(image, until);
                        }
                        self.publish_spread();
                    }
                    None => break,
                },
            }
            self.start_queued();
        }
        self.running.abort_all();
        self.listing.abort_all();
    }

    /// Drops the images asked for long enough from this node's inventory.
    fn expire_spread(&mut self) {
        let now = Instant::now();
        let before = self.spreading.len();
        self.spreading.retain(|_, until| *until > now);
        if self.spreading.len() != before {
            self.publish_spread();
        }
    }

    fn publish_spread(&self) {
        let mut spread: Vec<String> = self.spreading.keys().cloned().collect();
        spread.sort();
        self.local.send_if_modified(|l| {
            if l.spread == spread {
                return false;
            }
            l.spread = spread;
            true
        });
    }

    /// Fetches what live peers ask every node to fetch and this node lacks (each image once:
    /// [`ensure`](Self::ensure) shares a pull in flight and keeps the back-off of one that
    /// failed).
    fn fetch_spread(&mut self) {
        let Some(peers) = &self.peers else { return };
        let me = peers.observed.local_name().to_string();
        let alive = alive_nodes(&peers.observed);
        let mut wanted = BTreeSet::new();
        for (name, inventory) in peers.observed.inventories().iter() {
            if *name != me && alive.contains(name) {
                wanted.extend(inventory.spread.iter().cloned());
            }
        }
        if wanted.is_empty() {
            return;
        }
        let held: Vec<ImageRef> = self
            .local
            .borrow()
            .images
            .iter()
            .flat_map(|i| i.repo_tags.iter())
            .filter_map(|t| ImageRef::parse(t).ok())
            .collect();
        let now = Instant::now();
        for image in wanted {
            let Ok(r) = ImageRef::parse(&image) else {
                continue;
            };
            // Held, or brought here already (the image list may not show it yet).
            let brought = self
                .records
                .iter()
                .any(|(k, rec)| k.image == image && rec.last_ok.is_some());
            if brought || held.iter().any(|h| source::same_tag(h, &r)) {
                continue;
            }
            let verdict = self.ensure(Want {
                image,
                policy: PullPolicy::IfNotPresent,
                present: false,
                since: now,
                auth: None,
            });
            tracing::debug!(?verdict, "fetching an image a peer spreads");
        }
    }

    /// Reads the engine's image list into this node's inventory (once more after the reading
    /// under way, if one is).
    fn refresh(&mut self) {
        if !self.listing.is_empty() {
            self.list_again = true;
            return;
        }
        let Ok(rt) = self.engine.get() else {
            return;
        };
        let local = self.local.clone();
        self.listing.spawn(async move {
            match rt.list_images().await {
                Ok(list) => {
                    let mut images: Vec<ImageEntry> = list
                        .into_iter()
                        .map(|i| ImageEntry {
                            id: i.id,
                            repo_tags: i.repo_tags,
                            repo_digests: i.repo_digests,
                            size: i.size,
                        })
                        .collect();
                    images.sort();
                    local.send_if_modified(|l| {
                        if l.images == images {
                            return false;
                        }
                        l.images = images;
                        true
                    });
                }
                Err(e) => tracing::debug!(error = %e, "cannot list the engine's images"),
            }
        });
    }

    fn ensure(&mut self, want: Want) -> Verdict {
        let now = Instant::now();
        let key = key(&want);
        let verdict = pull::decide(
            want.policy,
            want.present,
            want.since,
            self.records.get(&key),
            now,
        );
        if let Verdict::Use { .. } = verdict {
            self.last_used.insert(want.image.clone(), now);
        }
        if verdict != Verdict::Start {
            return verdict;
        }
        let record = self.records.entry(key.clone()).or_default();
        record.in_flight = Some(now);
        // Failures known without asking anyone are recorded as pulls that failed at once;
        // deciding again then applies their back-off (and the local copy where one serves).
        let decide_again = |record: &Record| {
            pull::decide(want.policy, want.present, want.since, Some(record), now)
        };
        let image = match ImageRef::parse(&want.image) {
            Ok(i) => i,
            Err(e) => {
                record.finish(Err((FailureKind::BadReference, e.to_string())), now);
                return decide_again(record);
            }
        };
        let may_pull = self.config.allowed.permits(&image.registry);
        // A node sharing with peers may still fetch what it may not pull.
        let barred = |why: &str| {
            format!(
                "failed to pull image \"{}\": {why}this node may not pull from registry {} \
                 (its setting allowed-registries is {})",
                want.image,
                image.registry,
                self.config
                    .allowed
                    .0
                    .as_ref()
                    .map(|l| l.join(", "))
                    .unwrap_or_default()
            )
        };
        if !may_pull && self.peers.is_none() {
            let message = barred("");
            record.finish(Err((FailureKind::NotAllowed, message)), now);
            return decide_again(record);
        }
        let not_allowed = (!may_pull).then(|| barred("no peer holds it, and "));
        tracing::info!(image = %want.image, registry = %image.registry,
            with_credentials = want.auth.is_some(), "pulling image");
        self.queue.push_back(Queued {
            key,
            image,
            auth: want.auth,
            policy: want.policy,
            not_allowed,
            present: want.present,
        });
        Verdict::Wait
    }

    fn start_queued(&mut self) {
        while self.running.len() < self.config.max_pulls.max(1) {
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            let engine = self.engine.clone();
            let peers = self.peers.clone();
            let local = self.local.clone();
            self.running.spawn(async move {
                let started = Instant::now();
                let result = match engine.get() {
                    Ok(rt) => obtain(rt, &q, peers.as_ref(), &local, started).await,
                    Err(e) => Err((FailureKind::Other, e.to_string())),
                };
                (q.key, result)
            });
        }
    }

    fn finish(&mut self, key: Key, result: PullResult) {
        match &result {
            Ok(p) => tracing::info!(image = %key.image, took_ms = p.took.as_millis() as u64,
                size = p.size, "image pulled"),
            Err((kind, message)) => {
                tracing::warn!(image = %key.image, %kind, error = %message, "pull failed")
            }
        }
        if result.is_ok() && self.brought.insert(key.image.clone()) {
            self.save_brought();
        }
        let record = self.records.entry(key).or_default();
        record.finish(result, Instant::now());
        self.finished.send_modify(|n| *n = n.wrapping_add(1));
        self.refresh();
    }

    /// Writes the record file (atomically: a whole new file, then a rename).
    fn save_brought(&self) {
        let Some(path) = &self.config.record_file else {
            return;
        };
        let body = serde_json::json!({ "brought": self.brought });
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&body)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e,
                "cannot record the images this node brought");
        }
    }
}

impl ImageService {
    /// Starts a collection unless one runs, with every image this node pulled.
    fn collect(&mut self) {
        if !self.collecting.is_empty() {
            return;
        }
        let Ok(rt) = self.engine.get() else {
            return;
        };
        let now = Instant::now();
        let mut pulled: Vec<(String, Instant)> = Vec::new();
        for (key, record) in &self.records {
            if let Some(ok) = &record.last_ok
                && record.in_flight.is_none()
            {
                let used = self
                    .last_used
                    .get(&key.image)
                    .copied()
                    .unwrap_or(ok.started + ok.took);
                pulled.push((key.image.clone(), used));
            }
        }
        // Brought by an earlier run of this node: last used, for all it knows, when it started.
        for image in &self.brought {
            if !pulled.iter().any(|(i, _)| i == image) {
                let used = self.last_used.get(image).copied().unwrap_or(self.started);
                pulled.push((image.clone(), used));
            }
        }
        pulled.sort();
        pulled.dedup_by(|a, b| a.0 == b.0);
        if pulled.is_empty() {
            return;
        }
        let policy = self.config.gc;
        self.collecting
            .spawn(async move { collect(rt, policy, pulled, now).await });
    }

    fn collected(&mut self, c: Collected) {
        let now = Instant::now();
        for image in &c.in_use {
            self.last_used.insert(image.clone(), now);
        }
        let before = self.brought.len();
        for image in c.removed.iter().chain(&c.gone) {
            // Pulled again if a pod wants it later.
            self.records.retain(|k, _| &k.image != image);
            self.last_used.remove(image);
            self.brought.remove(image);
        }
        if self.brought.len() != before {
            self.save_brought();
        }
    }
}

/// The images an earlier run recorded in `path` (none when there is no file; a file that
/// cannot be read is reported and ignored: its images are then never collected).
fn read_brought(path: &std::path::Path) -> BTreeSet<String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeSet::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the images record");
            return BTreeSet::new();
        }
    };
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        brought: BTreeSet<String>,
    }
    match serde_json::from_slice::<File>(&text) {
        Ok(f) => f.brought,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the images record is unreadable");
            BTreeSet::new()
        }
    }
}

/// One collection: the engine's facts, then [`gc::plan`], then the removals.
async fn collect(
    rt: Arc<dyn Runtime>,
    policy: GcPolicy,
    pulled: Vec<(String, Instant)>,
    now: Instant,
) -> Collected {
    let mut out = Collected::default();
    let containers = match rt.list(&[]).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list containers for image garbage collection");
            return out;
        }
    };
    let in_use: BTreeSet<String> = containers.iter().map(|c| c.image_id.clone()).collect();
    let mut candidates = Vec::new();
    for (image, last_used) in pulled {
        match rt.image_info(&image).await {
            Ok(info) => {
                if in_use.contains(&info.id) {
                    out.in_use.push(image.clone());
                }
                candidates.push(Candidate {
                    image,
                    id: info.id,
                    size: info.size,
                    last_used,
                });
            }
            Err(RuntimeError::NotFound { .. }) => out.gone.push(image),
            Err(e) => {
                tracing::debug!(image = %image, error = %e, "cannot inspect a pulled image");
            }
        }
    }
    let fs = match rt.image_fs().await {
        Ok(fs) => fs,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the image filesystem's use");
            return out;
        }
    };
    for image in gc::plan(fs, policy, candidates, &in_use, now) {
        match rt.remove_image(&image).await {
            Ok(()) => {
                tracing::info!(image = %image, used_percent = fs.percent(),
                    high = policy.high_percent, "image removed by garbage collection");
                out.removed.push(image);
            }
            Err(RuntimeError::NotFound { .. }) => out.gone.push(image),
            // Taken into use since it was listed: kept.
            Err(e) => tracing::info!(image = %image, error = %e, "image kept"),
        }
    }
    out
}

/// Gets one image onto this node: from a peer that holds it, else from its registry, one
/// node pulling for all (see [`source`]).
async fn obtain(
    rt: Arc<dyn Runtime>,
    q: &Queued,
    peers: Option<&Peers>,
    local: &watch::Sender<LocalImages>,
    started: Instant,
) -> PullResult {
    let reference = q.image.to_string();
    // Why the registry cannot serve this pull, when it cannot.
    let mut barred = q
        .not_allowed
        .clone()
        .map(|why| (FailureKind::NotAllowed, why));
    // `Always` asks the registry first, as kubelet does: which manifest it serves now. The
    // content then comes from a peer holding the image at that digest, if one does. A registry
    // that cannot be reached leaves the peers, and a node's own copy (see `pull::decide`).
    let mut digest = None;
    if q.policy == PullPolicy::Always && barred.is_none() {
        if peers.is_none() || q.image.digest.is_some() {
            return pull_one(rt.clone(), &q.image, q.auth.as_ref(), started).await;
        }
        match rt
            .registry_digest(&q.image.name(), &q.image.tag_or_digest(), q.auth.as_ref())
            .await
        {
            Ok(d) => {
                // Held at that digest already: the pull only reads the manifest.
                let at = format!("{}@{d}", q.image.name());
                if rt.image_present(&at).await.unwrap_or(false) {
                    return pull_one(rt.clone(), &q.image, q.auth.as_ref(), started).await;
                }
                digest = Some(d);
            }
            Err(e) => {
                let said = e.to_string();
                let kind = pull::classify(&said);
                let failure = (kind, pull::failure_message(&q.image, kind, &said));
                if kind != FailureKind::Unreachable || q.present {
                    return Err(failure);
                }
                barred = Some(failure);
            }
        }
    }
    if let Some(e) = barred.as_ref().filter(|_| q.present) {
        return Err(e.clone());
    }
    let mut tried = BTreeSet::new();
    let mut progress = Progress {
        may_pull: barred.is_none(),
        began: started,
        announced: None,
    };
    let result = loop {
        let step = match peers {
            Some(p) => {
                let alive = alive_nodes(&p.observed);
                source::next_step(
                    &q.image,
                    digest.as_deref(),
                    p.observed.local_name(),
                    &p.observed.inventories(),
                    &alive,
                    &tried,
                    progress,
                    Instant::now(),
                )
            }
            None => Step::Pull,
        };
        match (step, peers) {
            (Step::Fetch(holders), Some(p)) => {
                // This node holds that image already (fetched before, so without the digest).
                if let Ok(info) = rt.image_info(&reference).await
                    && holders.iter().any(|h| h.id == info.id)
                {
                    withdraw(local, &reference, progress.announced.is_some());
                    return Ok(Pulled {
                        started,
                        took: started.elapsed(),
                        size: info.size,
                        from: None,
                    });
                }
                let mut busy = false;
                for h in holders {
                    let t = Instant::now();
                    tracing::info!(image = %reference, from = %h.node, "fetching image from a peer");
                    match p.fetch.fetch(&h.peer_id, &h.reference, rt.clone()).await {
                        Ok(f) => {
                            tracing::info!(image = %reference, from = %h.node, bytes = f.bytes,
                                took_ms = t.elapsed().as_millis() as u64, "fetched image from a peer");
                            let size = rt
                                .image_info(&h.reference)
                                .await
                                .map_or(f.bytes, |i| i.size);
                            withdraw(local, &reference, progress.announced.is_some());
                            return Ok(Pulled {
                                started,
                                took: t.elapsed(),
                                size,
                                from: Some(h.node),
                            });
                        }
                        // Asked again soon: it serves others now, and they become holders too.
                        Err(share::FetchError::Busy(why)) => {
                            tracing::debug!(image = %reference, from = %h.node, %why,
                                "the holder is busy");
                            busy = true;
                        }
                        Err(e) => {
                            tracing::warn!(image = %reference, from = %h.node, error = %e,
                                "fetching image from a peer failed; trying elsewhere");
                            tried.insert(h.node);
                        }
                    }
                }
                if busy {
                    tokio::time::sleep(BUSY_WAIT).await;
                }
            }
            (Step::Announce, _) => {
                local.send_modify(|l| {
                    if !l.pulling.contains(&reference) {
                        l.pulling.push(reference.clone());
                        l.pulling.sort();
                    }
                });
                progress.announced = Some(Instant::now());
            }
            (Step::Wait, _) => tokio::time::sleep(WAIT_STEP).await,
            _ => match &barred {
                Some(e) => break Err(e.clone()),
                None => break pull_one(rt.clone(), &q.image, q.auth.as_ref(), started).await,
            },
        }
    };
    withdraw(local, &reference, progress.announced.is_some());
    result
}

/// The nodes alive now (this one included: a node is always alive to itself).
fn alive_nodes(observed: &ObservedHandle) -> BTreeSet<String> {
    observed
        .snapshot()
        .values()
        .filter(|r| observed.liveness(r) == Liveness::Alive)
        .map(|r| r.name.clone())
        .collect()
}

/// Withdraws this node's announcement that it pulls `reference`, if it made one.
fn withdraw(local: &watch::Sender<LocalImages>, reference: &str, announced: bool) {
    if announced {
        local.send_if_modified(|l| {
            let before = l.pulling.len();
            l.pulling.retain(|p| p != reference);
            l.pulling.len() != before
        });
    }
}

async fn pull_one(
    rt: Arc<dyn Runtime>,
    image: &ImageRef,
    auth: Option<&RegistryAuth>,
    started: Instant,
) -> PullResult {
    if let Err(e) = rt.pull(&image.name(), &image.tag_or_digest(), auth).await {
        let said = e.to_string();
        let kind = pull::classify(&said);
        return Err((kind, pull::failure_message(image, kind, &said)));
    }
    let took = started.elapsed();
    let size = match rt.image_info(&image.to_string()).await {
        Ok(info) => info.size,
        Err(e) => {
            tracing::debug!(image = %image, error = %e, "cannot read the pulled image's size");
            0
        }
    };
    Ok(Pulled {
        started,
        took,
        size,
        from: None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::SimRuntime;

    fn service(sim: &SimRuntime, config: ImagesConfig) -> Images {
        let (svc, images) = ImageService::new(Engine::ready(Arc::new(sim.clone())), config);
        tokio::spawn(svc.run(CancellationToken::new()));
        images
    }

    fn want(image: &str, present: bool, since: Instant) -> Want {
        Want {
            image: image.into(),
            policy: PullPolicy::IfNotPresent,
            present,
            since,
            auth: None,
        }
    }

    async fn until_finished(images: &Images, from: u64) {
        let mut rx = images.finished();
        while *rx.borrow_and_update() == from {
            let _ = rx.changed().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pods_of_one_image_share_one_pull() {
        let sim = SimRuntime::new(Vec::<String>::new());
        sim.publish("reg.lan/app:1", None);
        sim.set_pull_delay(Duration::from_secs(3));
        let images = service(&sim, ImagesConfig::default());
        let t0 = Instant::now();
        assert_eq!(
            images.ensure(want("reg.lan/app:1", false, t0)).await,
            Ok(Verdict::Wait)
        );
        assert_eq!(
            images.ensure(want("reg.lan/app:1", false, t0)).await,
            Ok(Verdict::Wait)
        );
        until_finished(&images, 0).await;
        assert_eq!(sim.pulls("reg.lan/app:1"), 1);
        match images.ensure(want("reg.lan/app:1", true, t0)).await {
            Ok(Verdict::Use {
                pulled: Some(p), ..
            }) => assert_eq!(p.took, Duration::from_secs(3)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pulls_are_bounded_and_queued() {
        let sim = SimRuntime::new(Vec::<String>::new());
        for i in 0..3 {
            sim.publish(&format!("reg.lan/app:{i}"), None);
        }
        sim.set_pull_delay(Duration::from_secs(10));
        let images = service(
            &sim,
            ImagesConfig {
                max_pulls: 1,
                ..ImagesConfig::default()
            },
        );
        let t0 = Instant::now();
        for i in 0..3 {
            let v = images
                .ensure(want(&format!("reg.lan/app:{i}"), false, t0))
                .await;
            assert_eq!(v, Ok(Verdict::Wait));
        }
        tokio::time::sleep(Duration::from_secs(15)).await;
        let done: u64 = (0..3).map(|i| sim.pulls(&format!("reg.lan/app:{i}"))).sum();
        assert_eq!(done, 1, "one pull at a time");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let done: u64 = (0..3).map(|i| sim.pulls(&format!("reg.lan/app:{i}"))).sum();
        assert_eq!(done, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_pull_backs_off_then_names_the_registry_and_its_words() {
        let sim = SimRuntime::new(Vec::<String>::new());
        let images = service(&sim, ImagesConfig::default());
        let t0 = Instant::now();
        assert_eq!(
            images.ensure(want("reg.lan/app:9", false, t0)).await,
            Ok(Verdict::Wait)
        );
        until_finished(&images, 0).await;
        let Ok(Verdict::Failed(f)) = images.ensure(want("reg.lan/app:9", false, t0)).await else {
            panic!("expected a failure");
        };
        assert_eq!((f.failures, f.kind), (1, FailureKind::NotFound));
        assert!(f.message.contains("registry reg.lan"), "{}", f.message);
        assert!(f.message.contains("manifest unknown"), "{}", f.message);
        // Within the back-off nothing is pulled again; after it, once more.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(matches!(
            images.ensure(want("reg.lan/app:9", false, t0)).await,
            Ok(Verdict::Failed(_))
        ));
        assert_eq!(sim.calls("pull"), 1);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            images.ensure(want("reg.lan/app:9", false, t0)).await,
            Ok(Verdict::Wait)
        );
        until_finished(&images, 1).await;
        let Ok(Verdict::Failed(f)) = images.ensure(want("reg.lan/app:9", false, t0)).await else {
            panic!("expected a failure");
        };
        assert_eq!(f.failures, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_are_sent_and_a_refusal_says_unauthorized() {
        let sim = SimRuntime::new(Vec::<String>::new());
        sim.publish("reg.lan/private:1", Some(("u", "pw")));
        let images = service(&sim, ImagesConfig::default());
        let t0 = Instant::now();
        let _ = images.ensure(want("reg.lan/private:1", false, t0)).await;
        until_finished(&images, 0).await;
        let Ok(Verdict::Failed(f)) = images.ensure(want("reg.lan/private:1", false, t0)).await
        else {
            panic!("expected a failure");
        };
        assert_eq!(f.kind, FailureKind::Unauthorized);
        assert!(f.message.contains("unauthorized"), "{}", f.message);
        // Other credentials are another pull, not held back by the first one's back-off.
        let mut w = want("reg.lan/private:1", false, t0);
        w.auth = Some(RegistryAuth {
            server: "reg.lan".into(),
            username: "u".into(),
            password: "pw".into(),
            identity_token: None,
        });
        assert_eq!(images.ensure(w.clone()).await, Ok(Verdict::Wait));
        until_finished(&images, 1).await;
        w.present = true;
        assert!(matches!(images.ensure(w).await, Ok(Verdict::Use { .. })));
        assert_eq!(sim.pulls("reg.lan/private:1"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_not_allowed_is_never_asked() {
        let sim = SimRuntime::new(Vec::<String>::new());
        sim.publish("nginx:1.27", None);
        let images = service(
            &sim,
            ImagesConfig {
                allowed: Allowed(Some(vec!["127.0.0.0/8".into()])),
                ..ImagesConfig::default()
            },
        );
        let v = images
            .ensure(want("nginx:1.27", false, Instant::now()))
            .await;
        let Ok(Verdict::Failed(f)) = v else {
            panic!("{v:?}");
        };
        assert_eq!(f.kind, FailureKind::NotAllowed);
        assert!(f.message.contains("docker.io"), "{}", f.message);
        assert!(f.message.contains("allowed-registries"), "{}", f.message);
        assert_eq!(sim.calls("pull"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn always_asks_again_for_a_container_wanted_after_the_last_pull() {
        let sim = SimRuntime::new(Vec::<String>::new());
        sim.publish("reg.lan/app:1", None);
        let images = service(&sim, ImagesConfig::default());
        let mut w = want("reg.lan/app:1", false, Instant::now());
        w.policy = PullPolicy::Always;
        let _ = images.ensure(w.clone()).await;
        until_finished(&images, 0).await;
        w.present = true;
        assert!(matches!(
            images.ensure(w.clone()).await,
            Ok(Verdict::Use { .. })
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.since = Instant::now();
        assert_eq!(images.ensure(w.clone()).await, Ok(Verdict::Wait));
        until_finished(&images, 1).await;
        assert_eq!(sim.pulls("reg.lan/app:1"), 2);
        // The registry gone, the local copy serves, and the caller learns why.
        sim.set_registry_down("reg.lan", true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.since = Instant::now();
        let _ = images.ensure(w.clone()).await;
        until_finished(&images, 2).await;
        let v = images.ensure(w).await;
        let Ok(Verdict::Use {
            stale: Some(why), ..
        }) = v
        else {
            panic!("{v:?}");
        };
        assert!(why.contains("unreachable"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_collection_removes_unused_pulled_images_over_the_threshold_never_used_ones() {
        let sim = SimRuntime::new(["local/kept:1"]);
        sim.publish("reg.lan/old:1", None);
        sim.publish("reg.lan/busy:1", None);
        let images = service(
            &sim,
            ImagesConfig {
                gc: GcPolicy {
                    high_percent: 50,
                    low_percent: 40,
                    min_age: Duration::from_secs(60),
                },
                ..ImagesConfig::default()
            },
        );
        let t0 = Instant::now();
        for image in ["reg.lan/old:1", "reg.lan/busy:1"] {
            let _ = images.ensure(want(image, false, t0)).await;
        }
        let mut rx = images.finished();
        while *rx.borrow_and_update() < 2 {
            let _ = rx.changed().await;
        }
        let spec = crate::runtime::ContainerSpec {
            name: "busy".into(),
            image: "reg.lan/busy:1".into(),
            ..Default::default()
        };
        let id = sim.create(&spec).await.unwrap();
        sim.start(&id).await.unwrap();
        // Under the threshold nothing goes, however old.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(sim.has_image("reg.lan/old:1"));
        sim.set_image_fs(crate::runtime::FsUsage {
            capacity: 100 << 30,
            used: 90 << 30,
        });
        tokio::time::sleep(GC_EVERY * 2).await;
        assert!(
            !sim.has_image("reg.lan/old:1"),
            "the unused pulled image stays"
        );
        assert!(
            sim.has_image("reg.lan/busy:1"),
            "an image in use was removed"
        );
        assert!(
            sim.has_image("local/kept:1"),
            "an image shoal did not pull was removed"
        );
        // Removed, it is pulled again when a pod wants it.
        assert_eq!(
            images
                .ensure(want("reg.lan/old:1", false, Instant::now()))
                .await,
            Ok(Verdict::Wait)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn images_pulled_before_a_restart_are_still_collected() {
        let dir = tempfile::tempdir().unwrap();
        let record_file = dir.path().join("images.json");
        let config = ImagesConfig {
            gc: GcPolicy {
                high_percent: 50,
                low_percent: 40,
                min_age: Duration::from_secs(60),
            },
            record_file: Some(record_file.clone()),
            ..ImagesConfig::default()
        };
        let sim = SimRuntime::new(["local/kept:1"]);
        sim.publish("reg.lan/old:1", None);
        let (svc, images) = ImageService::new(Engine::ready(Arc::new(sim.clone())), config.clone());
        let stop = CancellationToken::new();
        let first = tokio::spawn(svc.run(stop.clone()));
        let _ = images
            .ensure(want("reg.lan/old:1", false, Instant::now()))
            .await;
        until_finished(&images, 0).await;
        let text = std::fs::read_to_string(&record_file).unwrap();
        assert!(text.contains("reg.lan/old:1"), "{text}");
        stop.cancel();
        first.await.unwrap();

        // The node restarts: the new service knows the image only from the file.
        sim.set_image_fs(crate::runtime::FsUsage {
            capacity: 100 << 30,
            used: 90 << 30,
        });
        let (svc, _images) = ImageService::new(Engine::ready(Arc::new(sim.clone())), config);
        tokio::spawn(svc.run(CancellationToken::new()));
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert!(
            !sim.has_image("reg.lan/old:1"),
            "an image pulled before the restart stays"
        );
        assert!(
            sim.has_image("local/kept:1"),
            "an image shoal did not pull was removed"
        );
        let text = std::fs::read_to_string(&record_file).unwrap();
        assert!(!text.contains("reg.lan/old:1"), "{text}");

        // A record file that is not JSON is reported and ignored.
        std::fs::write(&record_file, "not json").unwrap();
        assert!(read_brought(&record_file).is_empty());
    }

    /// Sharing: peers whose engines are simulated, their records and inventories fed to this
    /// node's observed state as gossip, and fetches that move images between the engines.
    mod sharing {
        use std::collections::HashMap;
        use std::sync::Mutex;

        use super::*;
        use crate::images::share::Fetched;
        use crate::observed::{self, Inbound, Inventory, Message, NodeRecord, Timing};

        struct Quiet;
        #[async_trait::async_trait]
        impl observed::Publish for Quiet {
            async fn publish(&self, _: Vec<u8>) {}
        }

        #[derive(Default)]
        struct SimFetch {
            engines: HashMap<String, SimRuntime>,
            broken: Vec<String>,
            /// Peers that answer busy once.
            busy: Mutex<std::collections::HashSet<String>>,
            calls: Mutex<Vec<String>>,
        }

        #[async_trait::async_trait]
        impl Fetch for SimFetch {
            async fn fetch(
                &self,
                peer: &str,
                image: &str,
                rt: Arc<dyn Runtime>,
            ) -> Result<Fetched, share::FetchError> {
                self.calls.lock().unwrap().push(peer.to_string());
                if self.broken.iter().any(|b| b == peer) {
                    return Err(share::FetchError::Failed(
                        "the transfer stalled for 10s".into(),
                    ));
                }
                if self.busy.lock().unwrap().remove(peer) {
                    return Err(share::FetchError::Busy("it sends 2 images already".into()));
                }
                let from = self
                    .engines
                    .get(peer)
                    .ok_or_else(|| "no such peer".to_string())?;
                let tar = from.export_image(image).await.map_err(|e| e.to_string())?;
                rt.load_image(tar).await.map_err(|e| e.to_string())?;
                let id = rt.image_info(image).await.map_err(|e| e.to_string())?.id;
                Ok(Fetched { id, bytes: 1 })
            }
        }

        struct Net {
            images: Images,
            local: watch::Receiver<LocalImages>,
            gossip: mpsc::Sender<Inbound>,
        }

        async fn node(sim: &SimRuntime, fetch: Arc<SimFetch>, policy: Option<Allowed>) -> Net {
            let me = NodeRecord {
                name: "me".into(),
                peer_id: "p-me".into(),
                ..NodeRecord::default()
            };
            let (obs, _reporter, hb) = observed::start(me, Timing::default(), 16);
            let (gossip, rx) = mpsc::channel(16);
            tokio::spawn(
                hb.with_gossip(Arc::new(Quiet), rx)
                    .run(CancellationToken::new()),
            );
            let config = ImagesConfig {
                allowed: policy.unwrap_or(Allowed(None)),
                ..ImagesConfig::default()
            };
            let (svc, images) = ImageService::new(Engine::ready(Arc::new(sim.clone())), config);
            let svc = svc.with_peers(Peers {
                observed: obs.clone(),
                fetch,
            });
            let local = svc.local_images();
            tokio::spawn(svc.run(CancellationToken::new()));
            Net {
                images,
                local,
                gossip,
            }
        }

        /// Peer `name` (peer id `p-NAME`) is alive and holds `tags`.
        async fn peer(net: &Net, name: &str, tags: &[&str]) {
            peer_at(net, name, tags, None).await;
        }

        /// [`peer`], its images pulled at the manifest digest `digest` when given.
        async fn peer_at(net: &Net, name: &str, tags: &[&str], digest: Option<&str>) {
            let record = NodeRecord {
                name: name.into(),
                peer_id: format!("p-{name}"),
                version: 10,
                ..NodeRecord::default()
            };
            let inventory = Inventory {
                version: 10,
                peer_id: format!("p-{name}"),
                images: tags
                    .iter()
                    .map(|t| observed::ImageEntry {
                        id: format!("sha256:{t}"),
                        repo_tags: vec![(*t).into()],
                        repo_digests: digest
                            .map(|d| format!("{}@{d}", t.rsplit_once(':').map_or(*t, |(r, _)| r)))
                            .into_iter()
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Inventory::default()
            };
            for m in [
                Message::Record(record),
                Message::Images {
                    name: name.into(),
                    inventory,
                },
            ] {
                let data = m.encode().unwrap();
                net.gossip.send(Inbound::Gossip { data }).await.unwrap();
            }
            tokio::task::yield_now().await;
        }

        fn engine_with(images: &[&str]) -> SimRuntime {
            SimRuntime::new(images.iter().map(|i| (*i).to_string()))
        }

        async fn pulled(net: &Net, image: &str, policy: PullPolicy) -> Pulled {
            let t0 = Instant::now();
            let w = Want {
                policy,
                ..want(image, false, t0)
            };
            assert_eq!(net.images.ensure(w.clone()).await, Ok(Verdict::Wait));
            until_finished(&net.images, 0).await;
            match net.images.ensure(Want { present: true, ..w }).await {
                Ok(Verdict::Use {
                    pulled: Some(p), ..
                }) => p,
                other => panic!("{other:?}"),
            }
        }

        #[tokio::test(start_paused = true)]
        async fn an_image_a_peer_holds_is_fetched_from_it_not_pulled() {
            let sim = engine_with(&[]);
            sim.publish("reg.lan/app:1", None);
            let fetch = Arc::new(SimFetch {
                engines: HashMap::from([("p-b".to_string(), engine_with(&["reg.lan/app:1"]))]),
                ..SimFetch::default()
            });
            let net = node(&sim, fetch.clone(), None).await;
            peer(&net, "b", &["reg.lan/app:1"]).await;
            let p = pulled(&net, "reg.lan/app:1", PullPolicy::IfNotPresent).await;
            assert_eq!(p.from.as_deref(), Some("b"));
            assert!(sim.has_image("reg.lan/app:1"));
            assert_eq!(sim.pulls("reg.lan/app:1"), 0, "the registry was asked");
            assert_eq!(*fetch.calls.lock().unwrap(), vec!["p-b"]);
        }

        #[tokio::test(start_paused = true)]
        async fn a_busy_holder_is_asked_again_not_given_up() {
            let sim = engine_with(&[]);
            sim.publish("reg.lan/app:1", None);
            let fetch = Arc::new(SimFetch {
                engines: HashMap::from([("p-b".to_string(), engine_with(&["reg.lan/app:1"]))]),
                busy: Mutex::new(["p-b".to_string()].into()),
                ..SimFetch::default()
            });
            let net = node(&sim, fetch.clone(), None).await;
            peer(&net, "b", &["reg.lan/app:1"]).await;
            let p = pulled(&net, "reg.lan/app:1", PullPolicy::IfNotPresent).await;
            assert_eq!(p.from.as_deref(), Some("b"));
            assert_eq!(*fetch.calls.lock().unwrap(), vec!["p-b", "p-b"]);
            assert_eq!(sim.pulls("reg.lan/app:1"), 0, "the registry was asked");
        }

        #[tokio::test(start_paused = true)]
        async fn a_holder_that_fails_is_followed_by_the_next_then_the_registry() {
            let sim = engine_with(&[]);
            sim.publish("reg.lan/app:1", None);
            let fetch = Arc::new(SimFetch {
                engines: HashMap::from([("p-c".to_string(), engine_with(&["reg.lan/app:1"]))]),
                broken: vec!["p-b".into()],
                ..SimFetch::default()
            });
            let net = node(&sim, fetch.clone(), None).await;
            peer(&net, "b", &["reg.lan/app:1"]).await;
            peer(&net, "c", &["reg.lan/app:1"]).await;
            let p = pulled(&net, "reg.lan/app:1", PullPolicy::IfNotPresent).await;
            assert_eq!(p.from.as_deref(), Some("c"));
            // Whichever it tried first, it ended at the holder that works.
            let calls = fetch.calls.lock().unwrap().clone();
            assert_eq!(calls.last().map(String::as_str), Some("p-c"), "{calls:?}");
            assert_eq!(sim.pulls("reg.lan/app:1"), 0, "the registry was asked");

            // Only a broken holder of another image: the registry serves it.
            sim.publish("reg.lan/app:2", None);
            peer(&net, "b", &["reg.lan/app:1", "reg.lan/app:2"]).await;
            let t0 = Instant::now();
            assert_eq!(
                net.images.ensure(want("reg.lan/app:2", false, t0)).await,
                Ok(Verdict::Wait)
            );
            until_finished(&net.images, 1).await;
            assert_eq!(sim.pulls("reg.lan/app:2"), 1);
            assert!(sim.has_image("reg.lan/app:2"));
        }

        #[tokio::test(start_paused = true)]
        async fn with_a_peer_alive_a_pull_is_announced_then_withdrawn() {
            let sim = engine_with(&[]);
            sim.publish("reg.lan/app:1", None);
            sim.set_pull_delay(Duration::from_millis(500));
            let net = node(&sim, Arc::new(SimFetch::default()), None).await;
            peer(&net, "b", &[]).await;
            let mut local = net.local.clone();
            let t0 = Instant::now();
            assert_eq!(
                net.images.ensure(want("reg.lan/app:1", false, t0)).await,
                Ok(Verdict::Wait)
            );
            tokio::time::timeout(
                Duration::from_secs(1),
                local.wait_for(|l| !l.pulling.is_empty()),
            )
            .await
            .expect("the pull was not announced")
            .unwrap();
            assert_eq!(local.borrow().pulling, vec!["reg.lan/app:1"]);
            until_finished(&net.images, 0).await;
            assert_eq!(sim.pulls("reg.lan/app:1"), 1);
            assert!(local.borrow().pulling.is_empty(), "the announcement stayed");
            // The settle wait came before the pull.
            assert!(
                t0.elapsed() >= source::SETTLE + Duration::from_millis(500),
                "{:?}",
                t0.elapsed()
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_node_barred_from_the_registry_fetches_from_a_peer() {
            let sim = engine_with(&[]);
            let fetch = Arc::new(SimFetch {
                engines: HashMap::from([(
                    "p-b".to_string(),
                    engine_with(&["shoal-test/echo:latest"]),
                )]),
                ..SimFetch::default()
            });
            let net = node(&sim, fetch, Some(Allowed(Some(vec!["reg.lan".into()])))).await;
            peer(&net, "b", &["shoal-test/echo:latest"]).await;
            let p = pulled(&net, "shoal-test/echo:latest", PullPolicy::Always).await;
            assert_eq!(p.from.as_deref(), Some("b"));
            assert!(sim.has_image("shoal-test/echo:latest"));
        }

        #[tokio::test(start_paused = true)]
        async fn always_takes_the_content_from_a_peer_at_the_registrys_digest() {
            let sim = engine_with(&[]);
            sim.publish("reg.lan/app:latest", None);
            let d1 = sim
                .registry_digest("reg.lan/app", "latest", None)
                .await
                .unwrap();
            let fetch = Arc::new(SimFetch {
                engines: HashMap::from([("p-b".to_string(), engine_with(&["reg.lan/app:latest"]))]),
                ..SimFetch::default()
            });
            let net = node(&sim, fetch.clone(), None).await;
            peer_at(&net, "b", &["reg.lan/app:latest"], Some(&d1)).await;
            let p = pulled(&net, "reg.lan/app:latest", PullPolicy::Always).await;
            assert_eq!(p.from.as_deref(), Some("b"));
            assert_eq!(
                sim.pulls("reg.lan/app:latest"),
                0,
                "the content came from the registry"
            );

            // A new push: b holds the old version only, so this node pulls.
            sim.publish("reg.lan/app:latest", None);
            tokio::time::advance(Duration::from_millis(100)).await;
            let t1 = Instant::now();
            let w = Want {
                policy: PullPolicy::Always,
                ..want("reg.lan/app:latest", true, t1)
            };
            assert_eq!(net.images.ensure(w).await, Ok(Verdict::Wait));
            until_finished(&net.images, 1).await;
            assert_eq!(sim.pulls("reg.lan/app:latest"), 1);
            assert_eq!(fetch.calls.lock().unwrap().len(), 1);
        }
    }
}
