//! The store's files in the data directory: a checksummed snapshot of the whole document and
//! an append-only log of the changes made since.
//!
//! Written for SD cards and crashes: a small write appends one short record and fsyncs once
//! (no rewrite of the whole document); the snapshot is rewritten only at compaction, by atomic
//! replace. A file damaged in any other way than a torn last log record is refused with an
//! error that names it and says what to do: never a panic, never a silent reset.
//!
//! Formats (integers little-endian):
//! - `state.automerge`: magic `SHOALDOC`, format version u32 (1), payload length u64, CRC-32
//!   of the payload u32, then the payload: `AutoCommit::save()` of the whole document.
//! - `state.log`: records `[len u32][crc u32][bytes]`, where `bytes` is an incremental save
//!   (the changes since the previous record) and the CRC-32 covers the 4 length bytes and the
//!   bytes, so a damaged length is caught too.
//!
//! Compaction writes a new snapshot (temp file, fsync, rename, fsync of the directory), then
//! empties the log. A crash between the two leaves records that the snapshot already holds;
//! replaying them is harmless, because loading a change twice is a no-op in automerge.
//!
//! The log file also carries an advisory lock, so a second `shoald` on the same data directory
//! fails at start instead of interleaving writes.
//!
//! Owned by the state task ([`super::StateTask`]); nothing else touches these files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::StateError;

/// Magic bytes at the start of the snapshot.
const MAGIC: &[u8; 8] = b"SHOALDOC";
/// The snapshot format this code writes and reads.
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;
const RECORD_HEADER_LEN: usize = 8;
/// The log is compacted when it grows past max(this, 4 × the snapshot).
const MIN_COMPACT_BYTES: u64 = 1 << 20;

pub(crate) const SNAPSHOT_FILE: &str = "state.automerge";
pub(crate) const LOG_FILE: &str = "state.log";
const TEMP_FILE: &str = "state.automerge.tmp";

/// What was on disk at open.
pub(crate) struct Loaded {
    /// The snapshot's payload (a full automerge save), or None for a new data directory.
    pub(crate) snapshot: Option<Vec<u8>>,
    /// The log's complete records, in order.
    pub(crate) records: Vec<Vec<u8>>,
}

/// The open files of one data directory.
pub(crate) struct Files {
    dir: PathBuf,
    snapshot_path: PathBuf,
    log_path: PathBuf,
    /// Opened for append; also holds the directory's lock.
    log: File,
    log_len: u64,
    snapshot_len: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> StateError {
    StateError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// What to tell the operator about a damaged snapshot.
const SNAPSHOT_ADVICE: &str = "Restore it from a backup, or move state.automerge and \
    state.log away to start with an empty state (the node then receives the cluster's state \
    from its peers)";
/// What to tell the operator about a damaged log.
const LOG_ADVICE: &str = "Restore it from a backup, or move state.log away to start from the \
    last snapshot (the changes written since are lost on this node; peers that have them send \
    them again)";

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

impl Files {
    /// Opens (creating if needed) the data directory and its files, locks it, and reads what
    /// is there. An incomplete last log record is cut off here (with a warning).
    pub(crate) fn open(dir: &Path) -> Result<(Files, Loaded), StateError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let log_path = dir.join(LOG_FILE);

        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        lock(&log, &log_path)?;

        let (snapshot, snapshot_len) = match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let len = bytes.len() as u64;
                (Some(decode_snapshot(&snapshot_path, &bytes)?), len)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, 0),
            Err(e) => return Err(io_err(&snapshot_path)(e)),
        };

        let mut data = Vec::new();
        log.read_to_end(&mut data).map_err(io_err(&log_path))?;
        let (records, good_len) = decode_log(&log_path, &data)?;
        if good_len < data.len() {
            tracing::warn!(
                path = %log_path.display(),
                dropped_bytes = data.len() - good_len,
                "dropping an incomplete or torn last record of the change log: a write was cut off \
                 (crash or power loss) before it was acknowledged"
            );
            log.set_len(good_len as u64).map_err(io_err(&log_path))?;
            log.sync_all().map_err(io_err(&log_path))?;
        }
        if snapshot.is_none() && !records.is_empty() {
            return Err(corrupt(
                &snapshot_path,
                format!(
                    "missing, while {} holds changes that build on it. Restore it from a backup, \
                     or move state.log away to start with an empty state",
                    log_path.display()
                ),
            ));
        }

        let files = Files {
            dir: dir.to_path_buf(),
            snapshot_path,
            log_path,
            log,
            log_len: good_len as u64,
            snapshot_len,
        };
        Ok((files, Loaded { snapshot, records }))
    }

    pub(crate) fn snapshot_path(&self) -> &Path {
        &self.snapshot_path
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Size of the snapshot file in bytes.
    pub(crate) fn snapshot_len(&self) -> u64 {
        self.snapshot_len
    }

    /// Size of the log in bytes.
    pub(crate) fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Whether appending `record_bytes` more would take the log past its compaction limit, so
    /// that a snapshot should be written instead.
    pub(crate) fn should_compact(&self, record_bytes: usize) -> bool {
        let after = self.log_len + (RECORD_HEADER_LEN + record_bytes) as u64;
        after > MIN_COMPACT_BYTES.max(4 * self.snapshot_len)
    }

    /// Appends one record and fsyncs it. On failure the log is cut back to its previous length
    /// (best effort) and the caller must compact before appending again, since a torn record in
    /// the middle of the log would make it unreadable.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let len = u32::try_from(bytes.len()).map_err(|_| {
            StateError::Internal(format!(
                "a change of {} bytes is too large for one log record",
                bytes.len()
            ))
        })?;
        let len_bytes = len.to_le_bytes();
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + bytes.len());
        record.extend_from_slice(&len_bytes);
        record.extend_from_slice(&crc(&[&len_bytes, bytes]).to_le_bytes());
        record.extend_from_slice(bytes);
        let written = self
            .log
            .write_all(&record)
            .and_then(|()| self.log.sync_data());
        if let Err(e) = written {
            let _ = self.log.set_len(self.log_len);
            return Err(io_err(&self.log_path)(e));
        }
        self.log_len += record.len() as u64;
        Ok(())
    }

    /// Replaces the snapshot atomically with `payload` (a full save), then empties the log.
    pub(crate) fn write_snapshot(&mut self, payload: &[u8]) -> Result<(), StateError> {
        let tmp = self.dir.join(TEMP_FILE);
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc(&[payload]).to_le_bytes());
        bytes.extend_from_slice(payload);
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &self.snapshot_path).map_err(io_err(&self.snapshot_path))?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        self.snapshot_len = bytes.len() as u64;
        self.log.set_len(0).map_err(io_err(&self.log_path))?;
        self.log.sync_all().map_err(io_err(&self.log_path))?;
        self.log_len = 0;
        Ok(())
    }
}

/// Takes the directory's advisory lock on the log file.
fn lock(log: &File, path: &Path) -> Result<(), StateError> {
    match log.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(StateError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::WouldBlock,
                "locked by another process: is another shoald running with this data directory?",
            ),
        }),
        // Some file systems (old NFS) have no locks: run without, as before locks existed.
        Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::warn!(path = %path.display(), "file locks are not supported here; \
                make sure only one shoald uses this data directory");
            Ok(())
        }
        Err(fs::TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
}

/// Checks a snapshot file and returns its payload.
fn decode_snapshot(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, StateError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(corrupt(
            path,
            format!("not a shoal state file (bad magic bytes). {SNAPSHOT_ADVICE}"),
        ));
    }
    let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    let version = u32::from_le_bytes(word(8));
    if version != FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!(
                "format version {version}, while this shoald reads version {FORMAT_VERSION}: \
                 run a shoald that reads it (a newer release), or restore a backup"
            ),
        ));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len8);
    let stored_crc = u32::from_le_bytes(word(20));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(corrupt(
            path,
            format!(
                "truncated or extended: the header says {len} bytes, the file holds {}. {SNAPSHOT_ADVICE}",
                payload.len()
            ),
        ));
    }
    if crc(&[payload]) != stored_crc {
        return Err(corrupt(
            path,
            format!("checksum mismatch: the file is damaged. {SNAPSHOT_ADVICE}"),
        ));
    }
    Ok(payload.to_vec())
}

/// Splits the log into its complete records; returns them and the length of the complete part
/// (shorter than `data` when the last record is incomplete).
fn decode_log(path: &Path, data: &[u8]) -> Result<(Vec<Vec<u8>>, usize), StateError> {
    let mut records = Vec::new();
    let mut at = 0;
    while data.len() - at >= RECORD_HEADER_LEN {
        let len_bytes = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let stored_crc =
            u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        let start = at + RECORD_HEADER_LEN;
        if len > data.len() - start {
            break; // incomplete: a torn last write
        }
        let body = &data[start..start + len];
        if crc(&[&len_bytes, body]) != stored_crc {
            // A torn last write: the last record (its length fits, its bytes do not), or a
            // tail of zeros that a power cut left where the file had grown. It was never
            // acknowledged (its fsync had not returned): cut off, as an incomplete record is.
            if torn_tail(&data[at..], start + len == data.len()) {
                break;
            }
            return Err(corrupt(
                path,
                format!(
                    "checksum mismatch in the record at byte {at}: the file is damaged. {LOG_ADVICE}"
                ),
            ));
        }
        records.push(body.to_vec());
        at = start + len;
    }
    Ok((records, at))
}

/// Whether the bytes from a record whose checksum fails to the end of the log are the tail of
/// a write cut off by a crash: that record is the last one (`last`), or nothing but zeros
/// follows its start. Pure.
fn torn_tail(rest: &[u8], last: bool) -> bool {
    last || rest.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn snapshot_and_log_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut files, loaded) = Files::open(dir.path()).unwrap();
            assert!(loaded.snapshot.is_none() && loaded.records.is_empty());
            files.write_snapshot(b"payload").unwrap();
            files.append(b"one").unwrap();
            files.append(b"two").unwrap();
            assert_eq!(files.log_len(), 2 * 8 + 6);
        }
        let (_files, loaded) = Files::open(dir.path()).unwrap();
        assert_eq!(loaded.snapshot.as_deref(), Some(&b"payload"[..]));
        assert_eq!(loaded.records, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_files, _) = Files::open(dir.path()).unwrap();
        match Files::open(dir.path()) {
            Err(StateError::Io { path, source }) => {
                assert!(path.ends_with(LOG_FILE));
                assert!(source.to_string().contains("another shoald"), "{source}");
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a second open must fail"),
        }
    }

    #[test]
    fn damaged_snapshots_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut files, _) = Files::open(dir.path()).unwrap();
            files.write_snapshot(b"some payload").unwrap();
        }
        let path = dir.path().join(SNAPSHOT_FILE);
        let good = fs::read(&path).unwrap();
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 1;
        let mut newer = good.clone();
        newer[8] = 2;
        let mut short = good.clone();
        short.pop();
        let cases: [(&[u8], &str); 5] = [
            (&bad_magic, "bad magic"),
            (&newer, "format version 2"),
            (&short, "truncated"),
            (&good[..10], "bad magic"),
            (b"", "bad magic"),
        ];
        for (bytes, want) in cases {
            fs::write(&path, bytes).unwrap();
            match Files::open(dir.path()) {
                Err(StateError::Corrupt { path: p, detail }) => {
                    assert_eq!(p, path);
                    assert!(detail.contains(want), "{detail}");
                }
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => panic!("{want}: must be refused"),
            }
        }
    }

    #[test]
    fn a_log_without_its_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut files, _) = Files::open(dir.path()).unwrap();
            files.append(b"orphan").unwrap();
        }
        assert!(matches!(
            Files::open(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_damaged_length_field_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut files, _) = Files::open(dir.path()).unwrap();
            files.write_snapshot(b"p").unwrap();
            files.append(b"0123456789").unwrap();
            files.append(b"abc").unwrap();
        }
        let path = dir.path().join(LOG_FILE);
        let mut log = fs::read(&path).unwrap();
        log[0] = 9; // 10 → 9: still inside the file
        fs::write(&path, &log).unwrap();
        assert!(matches!(
            Files::open(dir.path()),
            Err(StateError::Corrupt { .. })
        ));
    }

    /// A power cut leaves the last record with its length written and its bytes not (a
    /// zero-filled tail, or the last record's body damaged): the tail is cut off with a
    /// warning and every record before it is kept. Damage before the last record still
    /// refuses (above).
    #[test]
    fn a_torn_last_record_with_a_bad_checksum_is_cut_off() {
        for case in ["zeros", "last body", "last crc"] {
            let dir = tempfile::tempdir().unwrap();
            {
                let (mut files, _) = Files::open(dir.path()).unwrap();
                files.write_snapshot(b"p").unwrap();
                files.append(b"0123456789").unwrap();
                files.append(b"abc").unwrap();
            }
            let path = dir.path().join(LOG_FILE);
            let mut log = fs::read(&path).unwrap();
            let good = log.len();
            let kept = match case {
                "zeros" => {
                    log.extend(std::iter::repeat_n(0u8, 4096));
                    2
                }
                "last body" => {
                    let end = log.len() - 1;
                    log[end] ^= 0xff;
                    1
                }
                _ => {
                    let at = good - 3 - RECORD_HEADER_LEN + 4;
                    log[at] ^= 0xff;
                    1
                }
            };
            fs::write(&path, &log).unwrap();
            let (files, loaded) = Files::open(dir.path()).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(loaded.records.len(), kept, "{case}");
            assert_eq!(loaded.records[0], b"0123456789", "{case}");
            assert!(
                files.log_len() < log.len() as u64,
                "{case}: the tail is cut off"
            );
            drop(files);
            // And the next open finds a clean log.
            let (_, again) = Files::open(dir.path()).unwrap();
            assert_eq!(again.records.len(), kept, "{case}");
        }
    }
}
