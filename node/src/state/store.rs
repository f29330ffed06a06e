//! The desired-state document and the rules of apply, get, list and delete on it, at the level
//! of `(Kind, serde_json::Value)`. No I/O and no async: the state task ([`super::StateTask`])
//! owns one [`Store`], feeds it commands and persists what changed.
//!
//! # Document layout (schema 1)
//!
//! ```text
//! ROOT
//! ├─ schema: 1                     (Int; a newer schema is refused, not misread)
//! ├─ objects                       (Map)
//! │   ├─ Deployment                (Map, one per kind, by the kind's `kind` name)
//! │   │   ├─ "default/web"         (Map: the object, `namespace/name`; `name` when cluster-scoped)
//! │   │   │   ├─ apiVersion, kind, metadata{name, labels{...}, $annotations, ...}
//! │   │   │   ├─ spec{replicas}    (only `replicas`: a field of its own)
//! │   │   │   └─ $body             (the rest of the object, one JSON text: a merge unit)
//! │   ...
//! │   └─ Secret / "ns/name"        (as above, but `data` replaced by `sealedData: "v1:..."`
//! │                                 inside `$body`)
//! ├─ slots                         (Map, reserved: pod slots and their node assignment)
//! ├─ leases                        (Map, reserved: leader roles and their epochs)
//! └─ nodes                         (Map, reserved: node cordons and the like)
//! ```
//!
//! How an object is split into fields and merge units, and why, is [`super::tree`]'s to say
//! (objects written before units existed are plain trees, and still read).
//!
//! Every map above the objects themselves is created by the **genesis change**: a change with
//! a fixed actor, time 0 and fixed content, so its hash is the same on every node of every
//! cluster. Why: a map key created concurrently by two nodes (say `objects/Deployment`) is a
//! conflict that automerge resolves by keeping ONE of the two maps, which would hide every
//! object written into the other. With a shared genesis, all nodes write into the same maps
//! from the start. A later kind needs its map in a new deterministic change of this kind (never
//! an ad-hoc `put_object`); until then [`Store`] creates a missing kind map on first write,
//! with a warning.
//!
//! # Merge laws (two nodes' documents)
//!
//! Merging is automerge's: commutative, associative, idempotent; two nodes that hold the same
//! changes hold the same state, whatever the order in which the changes arrived. For one
//! object, the rule is: **a merge never builds an object that no writer applied, apart from
//! combining parts that always validate together**. So:
//! - the body (everything but `apiVersion`, `kind`, `metadata` and `spec.replicas`: the whole
//!   spec, a ConfigMap's data, a Secret's type and sealed data) is one merge unit: of two
//!   concurrent applies that change it, one body wins whole, the same on every node (chosen
//!   by automerge's total order of operations), never a mix of the two;
//! - so are `metadata.annotations` and `metadata.ownerReferences`, each on its own;
//! - `spec.replicas`, each label and the scalar metadata are fields of their own: edits of
//!   different ones both survive (a scale on one node, a new image or a label on another),
//!   and concurrent writes of the same one keep one value (field-level last-writer-wins);
//! - the same object created concurrently on two nodes, or a nested map created concurrently
//!   (first label on both sides): one of the two maps wins whole;
//! - delete against a concurrent edit: the delete of the object's key wins unless the edit
//!   re-created the key; an edit of a field inside the deleted map is lost with it;
//! - `metadata.generation`/`resourceVersion` are per-object counters: two concurrent edits
//!   both write `n+1` and the merge keeps one; they order edits on one node, not across nodes;
//! - a Namespace deleted on one node while another creates an object in it leaves that object
//!   in place after the merge (an orphan, listed as usual); cleaning up orphans is a
//!   controller's job, not the store's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use automerge::sync::{self, Message, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, AutomergeError, Change, ChangeHash, ObjId, ObjType, Prop, ROOT, ReadDoc,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use shoal_protocol::api::{ApplyAction, ApplyResult};
use shoal_protocol::meta::SERVER_SET_METADATA;
use shoal_protocol::{FieldError, Kind};

use shoal_protocol::cluster::{Lease, Slot};

use super::crypto::Sealer;
use super::{StateError, StoredObject, ids, tree};

/// The layout version of the document.
pub(crate) const SCHEMA: i64 = 1;

/// The actor of the genesis change. Never used for anything else.
const GENESIS_ACTOR: &[u8; 16] = b"shoal genesis v1";
/// The kind maps of the genesis change. FROZEN: changing this list changes the genesis hash,
/// and nodes with different geneses would hide each other's objects after a merge.
const GENESIS_KINDS: [&str; 11] = [
    "Namespace",
    "Node",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "Service",
    "Pod",
    "Deployment",
    "StatefulSet",
    "ReplicaSet",
    "ControllerRevision",
];
/// Top-level maps reserved for the scheduler and the leader roles (also frozen).
const RESERVED_MAPS: [&str; 3] = ["slots", "leases", "nodes"];

/// The namespace that exists on a fresh node and cannot be deleted.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// The field under which a Secret's sealed `data` is stored.
const SEALED_DATA: &str = "sealedData";

/// The genesis document: schema, `objects` with one map per kind, and the reserved maps.
/// Byte-identical on every node (fixed actor, time 0), so that all share its maps.
pub(crate) fn genesis() -> Result<AutoCommit, AutomergeError> {
    let mut doc = AutoCommit::new().with_actor(ActorId::from(GENESIS_ACTOR));
    doc.put(ROOT, "schema", SCHEMA)?;
    let objects = doc.put_object(ROOT, "objects", ObjType::Map)?;
    for kind in GENESIS_KINDS {
        doc.put_object(&objects, kind, ObjType::Map)?;
    }
    for name in RESERVED_MAPS {
        doc.put_object(ROOT, name, ObjType::Map)?;
    }
    doc.commit_with(CommitOptions::default().with_time(0));
    Ok(doc)
}

/// The key of one epoch of a role's lease.
fn lease_key(role: &str, epoch: u64) -> String {
    format!("{role}/{epoch:020}")
}

/// The key of the cluster's pod range in the `nodes` map.
const POD_RANGE_KEY: &str = "podRange";
/// The prefix of a pod subnet's claim in the `nodes` map.
const POD_SUBNET_PREFIX: &str = "podSubnet/";

/// The key of the claim on pod subnet `index`.
fn pod_subnet_key(index: u32) -> String {
    format!("{POD_SUBNET_PREFIX}{index:05}")
}

/// The cluster's pod range as recorded (by the node that first needed it), and which node
/// holds each pod subnet, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSubnets {
    pub range: Option<String>,
    pub claims: BTreeMap<u32, String>,
}

/// The first bytes of every automerge chunk.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk types: a change, and a compressed change (a document is 0).
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

/// Splits concatenated automerge chunks (magic, checksum, type, LEB128 length, data) into
/// `(type, whole chunk)`. An error unless the bytes are exactly whole chunks.
fn split_chunks(mut data: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let mut chunks = Vec::new();
    while !data.is_empty() {
        let at = chunks.len();
        if data.get(..4) != Some(&CHUNK_MAGIC[..]) {
            return Err(format!("chunk {at} is not an automerge chunk"));
        }
        let kind = *data
            .get(8)
            .ok_or_else(|| format!("chunk {at} is truncated"))?;
        let (mut len, mut shift, mut header) = (0u64, 0u32, 9usize);
        loop {
            let byte = *data
                .get(header)
                .ok_or_else(|| format!("chunk {at} is truncated"))?;
            header += 1;
            if shift > 63 {
                return Err(format!("chunk {at} has a malformed length"));
            }
            len |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(header))
            .filter(|end| *end <= data.len())
            .ok_or_else(|| format!("chunk {at} is truncated"))?;
        chunks.push((kind, &data[..end]));
        data = &data[end..];
    }
    Ok(chunks)
}

/// The hash of the genesis change (None only if automerge cannot build it, a bug that
/// [`Store::create`] reports).
pub(crate) fn genesis_hash() -> Option<ChangeHash> {
    static HASH: OnceLock<Option<ChangeHash>> = OnceLock::new();
    *HASH.get_or_init(|| {
        genesis()
            .ok()
            .and_then(|mut doc| doc.get_heads().first().copied())
    })
}

fn internal(e: impl std::fmt::Display) -> StateError {
    StateError::Internal(e.to_string())
}

/// The identity of a stored object: kind, namespace (None for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjKey {
    pub(crate) kind: Kind,
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

impl ObjKey {
    /// Checks a key as a client gives it. The namespace is required for namespaced kinds and
    /// ignored for cluster-scoped ones (as Kubernetes does).
    pub(crate) fn new(
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ObjKey, Vec<FieldError>> {
        let mut errors = Vec::new();
        if name.is_empty() {
            errors.push(FieldError::new("metadata.name", "must be set"));
        } else if name.contains('/') {
            errors.push(FieldError::new(
                "metadata.name",
                format!("must not contain '/', got {name:?}"),
            ));
        }
        let namespace = if kind.namespaced() {
            match namespace {
                None | Some("") => {
                    errors.push(FieldError::new(
                        "metadata.namespace",
                        format!("must be set: {} is a namespaced kind", kind.name()),
                    ));
                    None
                }
                Some(ns) if ns.contains('/') => {
                    errors.push(FieldError::new(
                        "metadata.namespace",
                        format!("must not contain '/', got {ns:?}"),
                    ));
                    None
                }
                Some(ns) => Some(ns.to_string()),
            }
        } else {
            None
        };
        if errors.is_empty() {
            Ok(ObjKey {
                kind,
                namespace,
                name: name.to_string(),
            })
        } else {
            Err(errors)
        }
    }

    /// The key of the object in its kind's map: `namespace/name`, or `name`. Also the
    /// associated data that binds a sealed Secret to its object.
    pub(crate) fn doc_key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Object counts and sizes, for `shoal status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Stored objects of every kind.
    pub objects: usize,
    /// Size of the snapshot file (the compacted document), in bytes.
    pub doc_bytes: u64,
    /// Size of the change log written since the snapshot, in bytes.
    pub log_bytes: u64,
}

/// The document, with the key that seals Secret data and a clock.
pub(crate) struct Store {
    doc: AutoCommit,
    sealer: Sealer,
    /// The wall clock; replaceable so that tests (and the simulator) control time.
    pub(crate) clock: crate::time::SharedClock,
}

impl Store {
    /// A new document for a fresh node: the genesis, then the `default` namespace.
    pub(crate) fn create(sealer: Sealer) -> Result<Store, StateError> {
        let mut doc = genesis().map_err(internal)?;
        // This node's own actor for everything after the genesis.
        doc.set_actor(ActorId::random());
        let mut store = Store {
            doc,
            sealer,
            clock: crate::time::system_clock(),
        };
        store.apply_values(vec![(
            Kind::Namespace,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": DEFAULT_NAMESPACE},
            }),
        )])?;
        Ok(store)
    }

    /// Wraps a loaded document, checking that it is a shoal document of a known schema. The
    /// error is the detail of a `Corrupt` error about the file it came from.
    pub(crate) fn from_doc(mut doc: AutoCommit, sealer: Sealer) -> Result<Store, String> {
        match tree::read_prop(&doc, &ROOT, Prop::Map("schema".into())) {
            Ok(Some(Value::Number(n))) if n.as_i64() == Some(SCHEMA) => {}
            Ok(Some(Value::Number(n))) => {
                return Err(format!(
                    "the document has schema {n}, while this shoald knows schema {SCHEMA}: \
                     run a newer shoald, or restore a backup"
                ));
            }
            _ => {
                return Err(
                    "this is not a shoal state document (no schema). Restore it from \
                            a backup, or move it away to start with an empty state"
                        .into(),
                );
            }
        }
        // A fresh actor per process: never reuse an actor whose last changes may have been
        // lost in a crash (a reused sequence number would break merges with peers).
        doc.set_actor(ActorId::random());
        Ok(Store {
            doc,
            sealer,
            clock: crate::time::system_clock(),
        })
    }

    pub(crate) fn doc_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    pub(crate) fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Forgets every change after `heads` (changes that could not be made durable), and takes
    /// a new actor so that no sequence number of the forgotten changes is ever reused.
    pub(crate) fn revert_to(&mut self, heads: &[ChangeHash]) -> Result<(), StateError> {
        let mut doc = self.doc.fork_at(heads).map_err(internal)?;
        doc.set_actor(ActorId::random());
        self.doc = doc;
        Ok(())
    }

    /// Merges another document into this one (anti-entropy with a peer).
    // Used by the tests of the merge laws now, by the anti-entropy protocol next.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn merge(&mut self, other: &mut AutoCommit) -> Result<(), StateError> {
        self.doc.merge(other).map(|_| ()).map_err(internal)
    }

    /// Every change after `heads` (those that are not ancestors of them), as concatenated
    /// change chunks (`save_after`), with the current heads.
    pub(crate) fn changes_since(&mut self, heads: &[ChangeHash]) -> (Vec<u8>, Vec<ChangeHash>) {
        (self.doc.save_after(heads), self.doc.get_heads())
    }

    /// As [`Store::changes_since`], but only the changes that this process wrote itself (its
    /// actor): what gossip broadcasts, so that a node does not re-broadcast what it received.
    pub(crate) fn local_changes_since(
        &mut self,
        heads: &[ChangeHash],
    ) -> (Vec<u8>, Vec<ChangeHash>) {
        let actor = self.doc.get_actor().clone();
        let mut bytes = Vec::new();
        for change in self.doc.get_changes(heads) {
            if *change.actor_id() == actor {
                bytes.extend_from_slice(change.raw_bytes());
            }
        }
        (bytes, self.doc.get_heads())
    }

    /// Loads changes received from a peer: concatenated change chunks (`save_after`), or a
    /// saved document (`load_incremental`). Change chunks are checked whole first (framing,
    /// checksum, decoding), since automerge's own loader skips what it cannot read; a saved
    /// document is loaded as far as it is valid. Changes whose dependencies are missing wait
    /// inside automerge until those arrive. Returns whether the document changed.
    pub(crate) fn apply_remote(&mut self, data: &[u8]) -> Result<bool, StateError> {
        let before = self.doc.get_heads();
        self.remote(|doc| {
            let chunks = split_chunks(data)?;
            if chunks
                .iter()
                .all(|(kind, _)| *kind == CHUNK_CHANGE || *kind == CHUNK_COMPRESSED)
            {
                let mut changes = Vec::with_capacity(chunks.len());
                for (i, (_, chunk)) in chunks.into_iter().enumerate() {
                    let change = Change::try_from(chunk)
                        .map_err(|e| format!("change {i} cannot be decoded: {e}"))?;
                    if change.hash().as_ref().get(..4) != chunk.get(4..8) {
                        return Err(format!("change {i} fails its checksum"));
                    }
                    changes.push(change);
                }
                doc.apply_changes(changes)
            } else {
                doc.load_incremental(data).map(|_| ())
            }
            .map_err(|e| format!("the changes cannot be loaded: {e}"))
        })?;
        Ok(self.doc.get_heads() != before)
    }

    /// The next message of automerge's sync protocol for the peer whose session is `state`
    /// (None: nothing to send now), encoded, carrying at most `max_change_bytes` of changes
    /// (or a single change, if that one alone is larger).
    ///
    /// automerge puts every change the peer lacks into one message, and to a peer that lacks
    /// over a third of the document it sends the whole document as one compressed chunk: a
    /// node far behind would need one message larger than the network carries. So the
    /// whole-document form is never used (the session is told that the peer reads only the
    /// first message format, in which each change is its own chunk), and the changes beyond
    /// the budget are held back: marked as sent while automerge builds the message, and
    /// unmarked after. The next message of the session sends them, as automerge sends
    /// what the peer still lacks once the peer's answer tells its new heads; progress is in
    /// the receiver's document, so a session that is cut short loses none.
    pub(crate) fn sync_message(
        &mut self,
        state: &mut sync::State,
        max_change_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StateError> {
        // automerge asserts invariants of the peer's state while building a message: a panic
        // there is an error of this session, not the end of the task.
        let doc = &mut self.doc;
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some(caps) = state.their_capabilities.as_mut() {
                caps.retain(|c| *c != sync::Capability::MessageV2);
            }
            let held_back = beyond_budget(doc, state, max_change_bytes);
            state.sent_hashes.extend(held_back.iter().copied());
            let message = doc.sync().generate_sync_message(state);
            for hash in &held_back {
                state.sent_hashes.remove(hash);
            }
            message.map(Message::encode)
        }))
        .map_err(|_| StateError::Remote("automerge failed to build a sync message".into()))
    }

    /// Receives one sync message from the peer whose session is `state`, applying the changes
    /// it carries.
    pub(crate) fn receive_sync(
        &mut self,
        state: &mut sync::State,
        data: &[u8],
    ) -> Result<(), StateError> {
        self.remote(|doc| {
            let message = Message::decode(data)
                .map_err(|e| format!("the sync message cannot be decoded: {e}"))?;
            doc.sync()
                .receive_sync_message(state, message)
                .map_err(|e| format!("the sync message cannot be applied: {e}"))
        })
    }

    /// Runs `f`, which feeds data from a peer into the document. A failure (an error or a
    /// panic of the decoder) leaves the document as it was before; so do changes that do not
    /// descend from this node's genesis (another cluster, or an incompatible shoal).
    fn remote(
        &mut self,
        f: impl FnOnce(&mut AutoCommit) -> Result<(), String>,
    ) -> Result<(), StateError> {
        let before = self.doc.get_heads();
        let doc = &mut self.doc;
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| f(doc))) {
            Ok(Ok(())) => match self.foreign_roots(&before) {
                roots if roots.is_empty() => Ok(()),
                roots => Err(StateError::ForeignDocument(format!(
                    "its changes descend from {} root change(s) other than this cluster's \
                     genesis: the peer belongs to another cluster, or runs a shoald with an \
                     incompatible state schema (this node has schema {SCHEMA})",
                    roots.len()
                ))),
            },
            Ok(Err(detail)) => Err(StateError::Remote(detail)),
            Err(_) => Err(StateError::Remote("the automerge decoder failed".into())),
        };
        if result.is_err() {
            self.undo_remote(&before);
        }
        result
    }

    /// Goes back to `before` after a refused remote input, if it changed anything.
    fn undo_remote(&mut self, before: &[ChangeHash]) {
        let doc = &mut self.doc;
        let unchanged = std::panic::catch_unwind(AssertUnwindSafe(|| doc.get_heads() == before))
            .unwrap_or(false);
        if unchanged {
            return;
        }
        let reverted = std::panic::catch_unwind(AssertUnwindSafe(|| self.revert_to(before)));
        match reverted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot undo refused remote changes"),
            Err(_) => tracing::error!("cannot undo refused remote changes: automerge failed"),
        }
    }

    /// The changes added since `before` that have no dependencies but are not the genesis.
    fn foreign_roots(&mut self, before: &[ChangeHash]) -> Vec<ChangeHash> {
        let genesis = genesis_hash();
        self.doc
            .get_changes_meta(before)
            .into_iter()
            .filter(|c| c.deps.is_empty() && Some(c.hash) != genesis)
            .map(|c| c.hash)
            .collect()
    }

    /// A hex SHA-256 over the document's heads, sorted.
    ///
    /// Heads rather than content because heads are what replicas converge on: two nodes have
    /// equal heads exactly when they hold the same set of changes, hence the same state (the
    /// hashes of changes cover their whole history). It costs no traversal of the objects, so
    /// peers can compare it often. Two documents that hold equal objects reached through
    /// different histories have different digests: for anti-entropy that is right, as they
    /// still have changes to exchange.
    pub(crate) fn digest(&mut self) -> String {
        let mut heads = self.doc.get_heads();
        heads.sort();
        let mut h = Sha256::new();
        for head in &heads {
            h.update(head.as_ref());
        }
        hex::encode(h.finalize())
    }

    fn leases_map(&self) -> Result<ObjId, StateError> {
        match self.doc.get(ROOT, "leases").map_err(internal)? {
            Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(internal("the document has no `leases` map")),
        }
    }

    /// The newest lease of every role, by role. Leases are flat keys `ROLE/EPOCH` (the epoch
    /// zero-padded, so keys sort by epoch) holding the lease as JSON text: no nested object is
    /// ever created, so two nodes claiming at once conflict on one key, which automerge
    /// resolves the same way everywhere.
    pub(crate) fn leases(&self) -> Result<BTreeMap<String, Lease>, StateError> {
        let map = self.leases_map()?;
        let mut out: BTreeMap<String, Lease> = BTreeMap::new();
        for key in self.doc.keys(&map) {
            let Some((automerge::Value::Scalar(v), _)) =
                self.doc.get(&map, key.as_str()).map_err(internal)?
            else {
                continue;
            };
            let automerge::ScalarValue::Str(text) = v.as_ref() else {
                continue;
            };
            let lease: Lease = match serde_json::from_str(text) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(lease = %key, error = %e, "unreadable lease skipped");
                    continue;
                }
            };
            if out.get(&lease.role).is_none_or(|l| l.epoch < lease.epoch) {
                out.insert(lease.role.clone(), lease);
            }
        }
        Ok(out)
    }

    /// Takes `role` for `holder` at the epoch after `seen` if the newest epoch is still `seen`
    /// (0: none yet); otherwise writes nothing. Returns the newest lease after the call. Keeps
    /// the two newest epochs of the role and removes older ones.
    pub(crate) fn claim_lease(
        &mut self,
        role: &str,
        holder: &str,
        seen: u64,
        since: i64,
    ) -> Result<Option<Lease>, StateError> {
        let current = self.leases()?.remove(role);
        if current.as_ref().map_or(0, |l| l.epoch) != seen {
            return Ok(current);
        }
        let lease = Lease {
            role: role.to_string(),
            epoch: seen + 1,
            holder: holder.to_string(),
            since,
        };
        let map = self.leases_map()?;
        let text = serde_json::to_string(&lease).map_err(internal)?;
        self.doc
            .put(&map, lease_key(role, lease.epoch), text)
            .map_err(internal)?;
        let prefix = format!("{role}/");
        let old: Vec<String> = self
            .doc
            .keys(&map)
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .and_then(|e| e.parse::<u64>().ok())
                    .is_some_and(|e| e + 1 < lease.epoch)
            })
            .collect();
        for k in old {
            self.doc.delete(&map, k.as_str()).map_err(internal)?;
        }
        Ok(Some(lease))
    }

    fn nodes_map(&self) -> Result<ObjId, StateError> {
        match self.doc.get(ROOT, "nodes").map_err(internal)? {
            Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(internal("the document has no `nodes` map")),
        }
    }

    /// A text value of the `nodes` map.
    fn nodes_text(&self, map: &ObjId, key: &str) -> Result<Option<String>, StateError> {
        Ok(match self.doc.get(map, key).map_err(internal)? {
            Some((automerge::Value::Scalar(v), _)) => match v.as_ref() {
                automerge::ScalarValue::Str(text) => Some(text.to_string()),
                _ => None,
            },
            _ => None,
        })
    }

    /// The cluster's pod range and the pod subnets claimed in it (see `crate::podnet`). They
    /// live in the reserved `nodes` map as flat text keys, `podRange` and
    /// `podSubnet/INDEX` (zero-padded) naming the node that holds it, so that two nodes that
    /// claim one index at once conflict on one key, which automerge resolves the same way
    /// everywhere.
    pub(crate) fn pod_subnets(&self) -> Result<PodSubnets, StateError> {
        let map = self.nodes_map()?;
        let range = self.nodes_text(&map, POD_RANGE_KEY)?;
        let mut claims = BTreeMap::new();
        for key in self.doc.keys(&map) {
            let Some(index) = key
                .strip_prefix(POD_SUBNET_PREFIX)
                .and_then(|i| i.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(node) = self.nodes_text(&map, &key)? {
                claims.insert(index, node);
            }
        }
        Ok(PodSubnets { range, claims })
    }

    /// Records `range` as the cluster's pod range unless one is recorded; claims `index` for
    /// `node` (overwriting whatever claim the key holds: the caller decided from what it read)
    /// and removes `node`'s claims on `release`. Returns what holds afterwards.
    pub(crate) fn claim_pod_subnet(
        &mut self,
        range: &str,
        index: Option<u32>,
        node: &str,
        release: &[u32],
    ) -> Result<PodSubnets, StateError> {
        let map = self.nodes_map()?;
        if self.nodes_text(&map, POD_RANGE_KEY)?.is_none() {
            self.doc.put(&map, POD_RANGE_KEY, range).map_err(internal)?;
        }
        if let Some(index) = index {
            let key = pod_subnet_key(index);
            if self.nodes_text(&map, &key)?.as_deref() != Some(node) {
                self.doc.put(&map, key.as_str(), node).map_err(internal)?;
            }
        }
        for i in release {
            let key = pod_subnet_key(*i);
            if self.nodes_text(&map, &key)?.as_deref() == Some(node) {
                self.doc.delete(&map, key.as_str()).map_err(internal)?;
            }
        }
        self.pod_subnets()
    }

    fn slots_map(&self) -> Result<ObjId, StateError> {
        match self.doc.get(ROOT, "slots").map_err(internal)? {
            Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(internal("the document has no `slots` map")),
        }
    }

    /// Every pod slot, sorted by key. A slot the document holds in a shape this version cannot
    /// read (written by a newer node) is skipped with a warning rather than failing every read.
    pub(crate) fn slots(&self) -> Result<Vec<Slot>, StateError> {
        let map = self.slots_map()?;
        let mut out = Vec::new();
        for key in self.doc.keys(&map) {
            let Some(v) =
                tree::read_prop(&self.doc, &map, key.as_str().into()).map_err(internal)?
            else {
                continue;
            };
            match serde_json::from_value::<Slot>(v) {
                Ok(slot) => out.push(slot),
                Err(e) => tracing::warn!(slot = %key, error = %e, "unreadable slot skipped"),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes and removes slots in one change (none when nothing differs). Only the fields
    /// that differ are written, so that two writers of different fields both keep theirs.
    pub(crate) fn write_slots(
        &mut self,
        puts: &[Slot],
        deletes: &[String],
    ) -> Result<(), StateError> {
        let map = self.slots_map()?;
        for key in deletes {
            if self
                .doc
                .get(&map, key.as_str())
                .map_err(internal)?
                .is_some()
            {
                self.doc.delete(&map, key.as_str()).map_err(internal)?;
            }
        }
        for slot in puts {
            let Value::Object(fields) = serde_json::to_value(slot).map_err(internal)? else {
                return Err(internal("a slot is not a JSON object"));
            };
            let key = slot.key();
            let obj = match self.doc.get(&map, key.as_str()).map_err(internal)? {
                Some((automerge::Value::Object(ObjType::Map), id)) => id,
                _ => self
                    .doc
                    .put_object(&map, key.as_str(), ObjType::Map)
                    .map_err(internal)?,
            };
            tree::write_map(&mut self.doc, &obj, &fields).map_err(internal)?;
        }
        Ok(())
    }

    fn objects_map(&self) -> Result<ObjId, StateError> {
        match self.doc.get(ROOT, "objects").map_err(internal)? {
            Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
            _ => Err(internal("the document has no `objects` map")),
        }
    }

    /// The map of one kind's objects, if it exists.
    fn kind_map(&self, kind: Kind) -> Result<Option<ObjId>, StateError> {
        let objects = self.objects_map()?;
        match self.doc.get(&objects, kind.name()).map_err(internal)? {
            Some((automerge::Value::Object(ObjType::Map), id)) => Ok(Some(id)),
            _ => Ok(None),
        }
    }

    /// The map of one kind's objects, created if missing (a kind newer than the genesis).
    fn kind_map_for_write(&mut self, kind: Kind) -> Result<ObjId, StateError> {
        if let Some(id) = self.kind_map(kind)? {
            return Ok(id);
        }
        tracing::warn!(
            kind = kind.name(),
            "creating the map of a kind that the genesis lacks: add it to a deterministic \
             migration change, or concurrent creation on two nodes will hide objects"
        );
        let objects = self.objects_map()?;
        self.doc
            .put_object(&objects, kind.name(), ObjType::Map)
            .map_err(internal)
    }

    /// The object as stored (Secrets sealed), with the id of its map.
    fn stored(&self, key: &ObjKey) -> Result<Option<(ObjId, Value)>, StateError> {
        let Some(map) = self.kind_map(key.kind)? else {
            return Ok(None);
        };
        match self.doc.get(&map, key.doc_key()).map_err(internal)? {
            Some((automerge::Value::Object(_), id)) => {
                let v = tree::read_object(&self.doc, &id).map_err(internal)?;
                Ok(Some((id, v)))
            }
            _ => Ok(None),
        }
    }

    /// The object as stored, with Secret data opened: the form that apply compares against.
    fn plain(&self, key: &ObjKey) -> Result<Option<Value>, StateError> {
        match self.stored(key)? {
            Some((_, v)) => self.unseal(key.kind, &key.doc_key(), v).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces a Secret's `sealedData` by its `data` map; other kinds pass through.
    fn unseal(&self, kind: Kind, doc_key: &str, mut v: Value) -> Result<Value, StateError> {
        if kind != Kind::Secret {
            return Ok(v);
        }
        let Some(map) = v.as_object_mut() else {
            return Ok(v);
        };
        let Some(sealed) = map.remove(SEALED_DATA) else {
            return Ok(v);
        };
        let undecryptable = |detail: String| StateError::SecretData {
            object: doc_key.to_string(),
            detail,
        };
        let sealed = sealed
            .as_str()
            .ok_or_else(|| undecryptable("sealed data is not a string".into()))?;
        let bytes = self
            .sealer
            .open(sealed, doc_key)
            .map_err(|e| undecryptable(e.to_string()))?;
        let data: Value = serde_json::from_slice(&bytes)
            .map_err(|e| undecryptable(format!("sealed data is not JSON: {e}")))?;
        map.insert("data".into(), data);
        Ok(v)
    }

    /// The stored form of a Secret: `data` sealed. The previous ciphertext is kept when it
    /// opens to the same data, so that an unchanged Secret writes nothing.
    fn seal(
        &self,
        key: &ObjKey,
        plain: &Value,
        previous: Option<&Value>,
    ) -> Result<Value, StateError> {
        let mut v = plain.clone();
        if key.kind != Kind::Secret {
            return Ok(v);
        }
        let Some(map) = v.as_object_mut() else {
            return Ok(v);
        };
        let Some(data) = map.remove("data") else {
            return Ok(v);
        };
        let doc_key = key.doc_key();
        let reusable = previous
            .and_then(|p| p.get(SEALED_DATA))
            .and_then(Value::as_str)
            .filter(|old| {
                self.sealer
                    .open(old, &doc_key)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|old_data| old_data == data)
            })
            .map(str::to_string);
        let sealed = match reusable {
            Some(old) => old,
            None => {
                let bytes = serde_json::to_vec(&data).map_err(internal)?;
                self.sealer.seal(&bytes, &doc_key).map_err(internal)?
            }
        };
        map.insert(SEALED_DATA.into(), Value::String(sealed));
        Ok(v)
    }

    /// Checks one object of a batch and puts it in its stored shape, server-set fields removed.
    fn prepare(&self, kind: Kind, mut value: Value) -> Result<(ObjKey, Value), Vec<FieldError>> {
        let Some(map) = value.as_object_mut() else {
            return Err(vec![FieldError::new("", "must be a JSON object")]);
        };
        // The kind decides these two, whatever the input says.
        map.insert("apiVersion".into(), kind.api_version().into());
        map.insert("kind".into(), kind.name().into());
        // Status is observed state: never stored here.
        map.remove("status");
        if kind == Kind::Secret {
            // The stored form's own field: a client may not set it.
            map.remove(SEALED_DATA);
        }
        let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(vec![FieldError::new("metadata.name", "must be set")]);
        };
        for field in SERVER_SET_METADATA {
            meta.remove(*field);
        }
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
        let namespace = meta.get("namespace").and_then(Value::as_str);
        let key = ObjKey::new(kind, namespace, name)?;
        if key.namespace.is_none() {
            meta.remove("namespace");
        }
        Ok((key, value))
    }

    /// Applies a batch, all or nothing: see [`super::StateHandle::apply`]. One automerge change
    /// for the whole batch; none when nothing differs.
    pub(crate) fn apply_values(
        &mut self,
        batch: Vec<(Kind, Value)>,
    ) -> Result<Vec<ApplyResult>, StateError> {
        let now = self.clock.unix_now();
        // Namespaces that the batch itself creates, wherever they stand in it.
        let batch_namespaces: HashSet<String> = batch
            .iter()
            .filter(|(k, _)| *k == Kind::Namespace)
            .filter_map(|(_, v)| v.pointer("/metadata/name").and_then(Value::as_str))
            .map(str::to_string)
            .collect();

        // Phase 1: check and plan, reading only. `planned` holds the final plain value of each
        // object the batch writes (a later duplicate replaces an earlier one).
        let mut errors = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        let mut planned: Vec<(ObjKey, Value)> = Vec::new();
        let mut planned_at: HashMap<ObjKey, usize> = HashMap::new();
        for (i, (kind, value)) in batch.into_iter().enumerate() {
            let (key, desired) = match self.prepare(kind, value) {
                Ok(x) => x,
                Err(es) => {
                    errors.extend(es.into_iter().map(|e| e.in_document(i)));
                    continue;
                }
            };
            if let Some(ns) = &key.namespace
                && !batch_namespaces.contains(ns)
                && !self.namespace_exists(ns)?
            {
                errors.push(
                    FieldError::new(
                        "metadata.namespace",
                        format!(
                            "namespace {ns:?} not found: create it first (kind: Namespace) or \
                             apply it in the same file"
                        ),
                    )
                    .in_document(i),
                );
                continue;
            }
            let current = match planned_at.get(&key) {
                Some(&at) => Some(planned[at].1.clone()),
                None => self.plain(&key)?,
            };
            let (action, full, generation) = decide(current.as_ref(), desired, now)?;
            results.push(ApplyResult {
                api_version: kind.api_version().into(),
                kind: kind.name().into(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                action,
                generation,
            });
            if action != ApplyAction::Unchanged {
                match planned_at.get(&key) {
                    Some(&at) => planned[at].1 = full,
                    None => {
                        planned_at.insert(key.clone(), planned.len());
                        planned.push((key, full));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(StateError::Invalid(errors));
        }
        if planned.is_empty() {
            return Ok(results);
        }

        // Phase 2: write, in one transaction that is rolled back on any failure.
        self.write_all(&planned, now, Self::write_object)?;
        Ok(results)
    }

    /// Writes every planned object with `write` in one change committed at `now`, or, on the
    /// first failure, none (the transaction is rolled back).
    fn write_all(
        &mut self,
        planned: &[(ObjKey, Value)],
        now: i64,
        write: fn(&mut Self, &ObjKey, &Value) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        match planned.iter().try_for_each(|(key, v)| write(self, key, v)) {
            Ok(()) => {
                self.doc
                    .commit_with(CommitOptions::default().with_time(now));
                Ok(())
            }
            Err(e) => {
                self.doc.rollback();
                Err(e)
            }
        }
    }

    fn namespace_exists(&self, ns: &str) -> Result<bool, StateError> {
        let Some(map) = self.kind_map(Kind::Namespace)? else {
            return Ok(false);
        };
        Ok(self.doc.get(&map, ns).map_err(internal)?.is_some())
    }

    /// Writes one object (plain form) into the document, touching only what differs.
    fn write_object(&mut self, key: &ObjKey, plain: &Value) -> Result<(), StateError> {
        let previous = self.stored(key)?;
        let stored = self.seal(key, plain, previous.as_ref().map(|(_, v)| v))?;
        let Some(fields) = stored.as_object() else {
            return Err(internal("an object to store is not a JSON object"));
        };
        let id = match previous {
            Some((id, _)) if matches!(self.doc.object_type(&id), Ok(ObjType::Map)) => id,
            _ => {
                let map = self.kind_map_for_write(key.kind)?;
                self.doc
                    .put_object(&map, key.doc_key(), ObjType::Map)
                    .map_err(internal)?
            }
        };
        tree::write_object(&mut self.doc, &id, fields).map_err(internal)
    }

    /// One object as the API shows it.
    pub(crate) fn get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, StateError> {
        let key = ObjKey::new(kind, namespace, name).map_err(StateError::Invalid)?;
        Ok(self.plain(&key)?.map(|v| StoredObject {
            kind,
            value: present(v),
        }))
    }

    /// Objects of `kind`, in one namespace or (None) all, sorted by namespace and name. The
    /// namespace is ignored for cluster-scoped kinds.
    pub(crate) fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredObject>, StateError> {
        let Some(map) = self.kind_map(kind)? else {
            return Ok(Vec::new());
        };
        let keys = self.keys_in(&map, namespace.filter(|_| kind.namespaced()));
        let mut out = Vec::with_capacity(keys.len());
        for doc_key in keys {
            if let Some((automerge::Value::Object(_), id)) =
                self.doc.get(&map, doc_key.as_str()).map_err(internal)?
            {
                let v = tree::read_object(&self.doc, &id).map_err(internal)?;
                let v = self.unseal(kind, &doc_key, v)?;
                let (ns, name) = match doc_key.split_once('/') {
                    Some((ns, name)) => (ns.to_string(), name.to_string()),
                    None => (String::new(), doc_key.clone()),
                };
                out.push(((ns, name), present(v)));
            }
        }
        // Map keys sort as strings, where `a-b/x` comes before `a/x`: sort by the pair.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out
            .into_iter()
            .map(|(_, value)| StoredObject { kind, value })
            .collect())
    }

    /// The keys of a kind map, all or those of one namespace.
    fn keys_in(&self, map: &ObjId, namespace: Option<&str>) -> Vec<String> {
        match namespace {
            // '0' follows '/' in ASCII: the range holds exactly the keys `ns/...`.
            Some(ns) => self
                .doc
                .map_range(map, format!("{ns}/")..format!("{ns}0"))
                .map(|item| item.key.into_owned())
                .collect(),
            None => self.doc.keys(map).collect(),
        }
    }

    /// Deletes one object and returns it (None when absent: nothing is written). Deleting a
    /// Namespace deletes every object in it; the `default` namespace cannot be deleted.
    pub(crate) fn delete(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, StateError> {
        let key = ObjKey::new(kind, namespace, name).map_err(StateError::Invalid)?;
        if kind == Kind::Namespace && name == DEFAULT_NAMESPACE {
            return Err(StateError::Invalid(vec![FieldError::new(
                "metadata.name",
                "the \"default\" namespace cannot be deleted",
            )]));
        }
        let Some((_, stored)) = self.stored(&key)? else {
            return Ok(None);
        };
        let doc_key = key.doc_key();
        // A Secret whose data no longer opens can still be deleted; it is returned without data.
        let value = match self.unseal(kind, &doc_key, stored.clone()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "deleting a secret whose data cannot be opened");
                let mut v = stored;
                if let Some(m) = v.as_object_mut() {
                    m.remove(SEALED_DATA);
                }
                v
            }
        };
        let deleted = self.delete_keys(kind, &key, &doc_key);
        match deleted {
            Ok(()) => {
                self.doc
                    .commit_with(CommitOptions::default().with_time(self.clock.unix_now()));
                Ok(Some(StoredObject {
                    kind,
                    value: present(value),
                }))
            }
            Err(e) => {
                self.doc.rollback();
                Err(e)
            }
        }
    }

    fn delete_keys(&mut self, kind: Kind, key: &ObjKey, doc_key: &str) -> Result<(), StateError> {
        let map = self
            .kind_map(kind)?
            .ok_or_else(|| internal("kind map vanished"))?;
        self.doc.delete(&map, doc_key).map_err(internal)?;
        if kind == Kind::Namespace {
            for inner in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
                let Some(inner_map) = self.kind_map(inner)? else {
                    continue;
                };
                for k in self.keys_in(&inner_map, Some(&key.name)) {
                    self.doc.delete(&inner_map, k.as_str()).map_err(internal)?;
                }
            }
        }
        Ok(())
    }

    /// The number of stored objects of every kind.
    pub(crate) fn object_count(&self) -> usize {
        let Ok(objects) = self.objects_map() else {
            return 0;
        };
        self.doc
            .keys(&objects)
            .filter_map(|k| match self.doc.get(&objects, k.as_str()) {
                Ok(Some((automerge::Value::Object(_), id))) => Some(self.doc.length(&id)),
                _ => None,
            })
            .sum()
    }

    /// The public fingerprint of the key that seals Secret data (see `Sealer::key_id`).
    pub(crate) fn secrets_key_id(&self) -> &str {
        self.sealer.key_id()
    }

    /// Every object of the kinds a backup holds ([`BACKUP_KINDS`]), in that order, each
    /// sorted by namespace and name, in its stored form: server-set metadata kept and a
    /// Secret's data still sealed (`sealedData`), never opened.
    pub(crate) fn export(&self) -> Result<Vec<(Kind, Value)>, StateError> {
        let mut out = Vec::new();
        for kind in BACKUP_KINDS {
            let Some(map) = self.kind_map(kind)? else {
                continue;
            };
            let mut objects = Vec::new();
            for doc_key in self.keys_in(&map, None) {
                if let Some((automerge::Value::Object(_), id)) =
                    self.doc.get(&map, doc_key.as_str()).map_err(internal)?
                {
                    let v = tree::read_object(&self.doc, &id).map_err(internal)?;
                    let sort_key = match doc_key.split_once('/') {
                        Some((ns, name)) => (ns.to_string(), name.to_string()),
                        None => (String::new(), doc_key.clone()),
                    };
                    objects.push((sort_key, present(v)));
                }
            }
            objects.sort_by(|a, b| a.0.cmp(&b.0));
            out.extend(objects.into_iter().map(|(_, v)| (kind, v)));
        }
        Ok(out)
    }

    /// Restores objects in the stored form that [`Store::export`] gives, all or nothing: on
    /// any error nothing is written, and the error names every object at fault (its index in
    /// `items` as the field error's document).
    ///
    /// Checks: a kind of [`BACKUP_KINDS`], a valid key, no object twice, its namespace
    /// restored too or present, and for a Secret, `sealedData` that opens with this store's
    /// key (never clear `data`). An object equal to the stored one (apart from `generation`
    /// and `resourceVersion`) is unchanged; any other is written as the backup has it, uid
    /// and creation time included, with counters above both the stored and the backup's, so
    /// that they never go back. Objects that the backup does not hold are left alone.
    pub(crate) fn restore(
        &mut self,
        items: Vec<(Kind, Value)>,
    ) -> Result<Vec<ApplyResult>, StateError> {
        let now = self.clock.unix_now();
        let batch_namespaces: HashSet<String> = items
            .iter()
            .filter(|(k, _)| *k == Kind::Namespace)
            .filter_map(|(_, v)| v.pointer("/metadata/name").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        let mut errors = Vec::new();
        let mut seen: HashSet<ObjKey> = HashSet::new();
        let mut results = Vec::with_capacity(items.len());
        let mut planned: Vec<(ObjKey, Value)> = Vec::new();
        for (i, (kind, value)) in items.into_iter().enumerate() {
            let (key, value) = match self.check_restored(kind, value) {
                Ok(x) => x,
                Err(es) => {
                    errors.extend(es.into_iter().map(|e| e.in_document(i)));
                    continue;
                }
            };
            if !seen.insert(key.clone()) {
                errors.push(
                    FieldError::new(
                        "metadata.name",
                        format!("{} {} appears twice", kind.name(), key.doc_key()),
                    )
                    .in_document(i),
                );
                continue;
            }
            if let Some(ns) = &key.namespace
                && !batch_namespaces.contains(ns)
                && !self.namespace_exists(ns)?
            {
                errors.push(
                    FieldError::new(
                        "metadata.namespace",
                        format!("namespace {ns:?} is neither in the backup nor in the cluster"),
                    )
                    .in_document(i),
                );
                continue;
            }
            let current = self.stored(&key)?.map(|(_, v)| v);
            let (action, full) = self.decide_restore(&key, current, value, now)?;
            results.push(ApplyResult {
                api_version: kind.api_version().into(),
                kind: kind.name().into(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                action,
                generation: full
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
            });
            if action != ApplyAction::Unchanged {
                planned.push((key, full));
            }
        }
        if !errors.is_empty() {
            return Err(StateError::Invalid(errors));
        }
        if planned.is_empty() {
            return Ok(results);
        }
        self.write_all(&planned, now, Self::write_stored)?;
        Ok(results)
    }

    /// Checks one restored object and gives its key and stored form.
    fn check_restored(
        &self,
        kind: Kind,
        mut value: Value,
    ) -> Result<(ObjKey, Value), Vec<FieldError>> {
        if !BACKUP_KINDS.contains(&kind) {
            return Err(vec![FieldError::new(
                "kind",
                format!(
                    "{} objects are not restored (nodes register themselves; endpoints are                      computed)",
                    kind.name()
                ),
            )]);
        }
        let Some(map) = value.as_object_mut() else {
            return Err(vec![FieldError::new("", "must be a JSON object")]);
        };
        map.insert("apiVersion".into(), kind.api_version().into());
        map.insert("kind".into(), kind.name().into());
        map.remove("status");
        let Some(meta) = map.get("metadata").and_then(Value::as_object) else {
            return Err(vec![FieldError::new("metadata.name", "must be set")]);
        };
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
        let namespace = meta.get("namespace").and_then(Value::as_str);
        let key = ObjKey::new(kind, namespace, name)?;
        if key.namespace.is_none()
            && let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("namespace");
        }
        if kind == Kind::Secret {
            for clear in ["data", "stringData"] {
                if map.contains_key(clear) {
                    return Err(vec![FieldError::new(
                        clear,
                        "a backup holds a Secret's data only sealed (sealedData), never in                          clear: restore the file `shoal backup` wrote, or apply the Secret                          as a manifest",
                    )]);
                }
            }
            match map.get(SEALED_DATA) {
                None => {}
                Some(Value::String(sealed)) => {
                    let opened = self
                        .sealer
                        .open(sealed, &key.doc_key())
                        .map_err(|e| e.to_string())
                        .and_then(|bytes| {
                            serde_json::from_slice::<Map<String, Value>>(&bytes)
                                .map_err(|e| format!("opens to something that is not a map ({e})"))
                        });
                    if let Err(why) = opened {
                        return Err(vec![FieldError::new(
                            SEALED_DATA,
                            format!(
                                "does not open with this cluster's key: {why}. The backup was                                  made by a cluster with another cluster secret (or it was                                  altered): restore it into a cluster started from that                                  cluster's join token"
                            ),
                        )]);
                    }
                }
                Some(_) => {
                    return Err(vec![FieldError::new(SEALED_DATA, "must be a string")]);
                }
            }
        }
        Ok((key, value))
    }

    /// What restoring `backup` over `current` does, and the stored value to write.
    fn decide_restore(
        &self,
        key: &ObjKey,
        current: Option<Value>,
        mut backup: Value,
        now: i64,
    ) -> Result<(ApplyAction, Value), StateError> {
        let counter = |v: &Value, field: &str| -> i64 {
            match v.pointer(&format!("/metadata/{field}")) {
                Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
                Some(Value::String(s)) => s.parse().unwrap_or(0),
                _ => 0,
            }
        };
        let (generation, resource_version, action) = match &current {
            None => (
                counter(&backup, "generation").max(1),
                counter(&backup, "resourceVersion").max(1),
                ApplyAction::Created,
            ),
            Some(current) => {
                // Compared with Secret data opened: two sealings of equal data differ.
                let doc_key = key.doc_key();
                let open = |v: &Value| {
                    self.unseal(key.kind, &doc_key, v.clone())
                        .ok()
                        .map(|v| without_counters(&v))
                };
                let (was, will) = (open(current), open(&backup));
                if was.is_some() && was == will {
                    return Ok((ApplyAction::Unchanged, current.clone()));
                }
                let spec_changed =
                    without_key(current, "metadata") != without_key(&backup, "metadata");
                let generation = counter(current, "generation").max(counter(&backup, "generation"))
                    + i64::from(spec_changed);
                let resource_version = counter(current, "resourceVersion")
                    .max(counter(&backup, "resourceVersion"))
                    + 1;
                (generation.max(1), resource_version, ApplyAction::Configured)
            }
        };
        if let Some(meta) = backup.get_mut("metadata").and_then(Value::as_object_mut) {
            if !meta.get("uid").is_some_and(Value::is_string) {
                meta.insert("uid".into(), ids::new_uid().map_err(internal)?.into());
            }
            if !meta.get("creationTimestamp").is_some_and(Value::is_string) {
                meta.insert("creationTimestamp".into(), crate::time::rfc3339(now).into());
            }
            meta.insert("generation".into(), generation.into());
            meta.insert(
                "resourceVersion".into(),
                resource_version.to_string().into(),
            );
        }
        Ok((action, backup))
    }

    /// Writes one object in its stored form (Secrets already sealed), touching only what
    /// differs.
    fn write_stored(&mut self, key: &ObjKey, stored: &Value) -> Result<(), StateError> {
        let Some(fields) = stored.as_object() else {
            return Err(internal("an object to store is not a JSON object"));
        };
        let id = match self.stored(key)? {
            Some((id, _)) if matches!(self.doc.object_type(&id), Ok(ObjType::Map)) => id,
            _ => {
                let map = self.kind_map_for_write(key.kind)?;
                self.doc
                    .put_object(&map, key.doc_key(), ObjType::Map)
                    .map_err(internal)?
            }
        };
        tree::write_object(&mut self.doc, &id, fields).map_err(internal)
    }
}

/// The kinds a backup holds, in the order in which they are restored (namespaces first): every
/// stored kind but Node. A Node object names a machine's peer identity, which a wiped machine
/// no longer has; each node registers itself.
pub(crate) const BACKUP_KINDS: [Kind; 10] = [
    Kind::Namespace,
    Kind::ConfigMap,
    Kind::Secret,
    Kind::PersistentVolumeClaim,
    Kind::Service,
    Kind::Pod,
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::StatefulSet,
    Kind::ControllerRevision,
];

/// A value without its `generation` and `resourceVersion`, which a restore moves forward.
fn without_counters(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("generation");
        meta.remove("resourceVersion");
    }
    v
}

/// The apply decision for one object: action, the full plain value to store, generation.
fn decide(
    current: Option<&Value>,
    desired: Value,
    now: i64,
) -> Result<(ApplyAction, Value, i64), StateError> {
    let Some(current) = current else {
        let uid = ids::new_uid().map_err(internal)?;
        let full = with_server_meta(desired, &uid, 1, 1, &crate::time::rfc3339(now));
        return Ok((ApplyAction::Created, full, 1));
    };
    let meta = |field: &str| current.pointer(&format!("/metadata/{field}")).cloned();
    let generation = meta("generation").and_then(|v| v.as_i64()).unwrap_or(0);
    if without_server_meta(current) == desired {
        return Ok((ApplyAction::Unchanged, current.clone(), generation));
    }
    let spec_changed = without_key(current, "metadata") != without_key(&desired, "metadata");
    let generation = if spec_changed {
        generation + 1
    } else {
        generation.max(1)
    };
    let resource_version = meta("resourceVersion")
        .and_then(|v| v.as_str().and_then(|s| s.parse::<u64>().ok()))
        .unwrap_or(0)
        + 1;
    let uid = match meta("uid").and_then(|v| v.as_str().map(str::to_string)) {
        Some(uid) => uid,
        None => ids::new_uid().map_err(internal)?,
    };
    let created = meta("creationTimestamp")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| crate::time::rfc3339(now));
    let full = with_server_meta(desired, &uid, generation, resource_version, &created);
    Ok((ApplyAction::Configured, full, generation))
}

fn with_server_meta(
    mut v: Value,
    uid: &str,
    generation: i64,
    resource_version: u64,
    created: &str,
) -> Value {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("uid".into(), uid.into());
        meta.insert("generation".into(), generation.into());
        meta.insert(
            "resourceVersion".into(),
            resource_version.to_string().into(),
        );
        meta.insert("creationTimestamp".into(), created.into());
    }
    v
}

fn without_server_meta(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_SET_METADATA {
            meta.remove(*field);
        }
    }
    v
}

fn without_key(v: &Value, key: &str) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove(key);
    }
    v
}

/// Orders an object's keys as Kubernetes shows them: `apiVersion`, `kind`, `metadata` (name,
/// namespace, labels, annotations, then server-set fields), then the rest in sorted order. The
/// document itself keeps keys sorted; this is presentation only.
pub(crate) fn present(v: Value) -> Value {
    const TOP: [&str; 3] = ["apiVersion", "kind", "metadata"];
    const META: [&str; 8] = [
        "name",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "generation",
        "resourceVersion",
        "creationTimestamp",
    ];
    fn ordered(m: Map<String, Value>, first: &[&str]) -> Map<String, Value> {
        let mut entries: Vec<(String, Value)> = m.into_iter().collect();
        let rank = |k: &str| first.iter().position(|f| *f == k).unwrap_or(first.len());
        entries.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
        entries.into_iter().collect()
    }
    match v {
        Value::Object(m) => {
            let mut out = ordered(m, &TOP);
            if let Some(Value::Object(meta)) = out.get_mut("metadata") {
                *meta = ordered(std::mem::take(meta), &META);
            }
            Value::Object(out)
        }
        other => other,
    }
}

/// The changes that the next sync message of the session `state` would carry beyond
/// `max_change_bytes`, in the order automerge sends them (see [`Store::sync_message`]).
///
/// Mirrors automerge's choice of what to send: the changes the peer explicitly needs, then
/// those after the peer's last sync that its Bloom filters do not claim, with every change
/// that depends on one of those. The first of them up to the budget (at least one) go now.
fn beyond_budget(
    doc: &mut AutoCommit,
    state: &sync::State,
    max_change_bytes: usize,
) -> Vec<ChangeHash> {
    let (Some(have), Some(need)) = (state.their_have.as_ref(), state.their_need.as_ref()) else {
        return Vec::new();
    };
    let mut order: Vec<ChangeHash> = Vec::new();
    let mut chosen: HashSet<ChangeHash> = HashSet::new();
    if !have.is_empty() {
        let last_sync: Vec<ChangeHash> = have
            .iter()
            .flat_map(|h| h.last_sync.iter().copied())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let metas: Vec<(ChangeHash, Vec<ChangeHash>)> = doc
            .get_changes_meta(&last_sync)
            .into_iter()
            .map(|m| (m.hash, m.deps))
            .collect();
        let mut dependents: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        for (hash, deps) in &metas {
            for dep in deps {
                dependents.entry(*dep).or_default().push(*hash);
            }
            if have.iter().all(|h| !h.bloom.contains_hash(hash)) {
                chosen.insert(*hash);
            }
        }
        let mut stack: Vec<ChangeHash> = chosen.iter().copied().collect();
        while let Some(hash) = stack.pop() {
            for dependent in dependents.get(&hash).into_iter().flatten() {
                if chosen.insert(*dependent) {
                    stack.push(*dependent);
                }
            }
        }
        order.extend(
            metas
                .iter()
                .map(|(hash, _)| *hash)
                .filter(|hash| chosen.contains(hash)),
        );
    }
    let needed: Vec<ChangeHash> = need
        .iter()
        .filter(|hash| !chosen.contains(*hash) && doc.get_change_meta_by_hash(hash).is_some())
        .copied()
        .collect();
    let candidates = needed
        .into_iter()
        .chain(order)
        .filter(|hash| !state.sent_hashes.contains(hash));
    let mut bytes = 0usize;
    let mut now = 0usize;
    let mut later = Vec::new();
    for hash in candidates {
        if !later.is_empty() {
            later.push(hash);
            continue;
        }
        let size = doc
            .get_change_by_hash(&hash)
            .map_or(0, |c| c.raw_bytes().len());
        if now > 0 && bytes.saturating_add(size) > max_change_bytes {
            later.push(hash);
        } else {
            bytes = bytes.saturating_add(size);
            now += 1;
        }
    }
    later
}
