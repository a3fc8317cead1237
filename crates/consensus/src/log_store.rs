//! The Raft log and vote store, on redb.
//!
//! One file, `<raft_dir>/raft.redb`, with two tables:
//!
//! - `entries`: `u64` log index -> postcard-encoded [`Entry`] or, for an entry of at least
//!   [`SPILL_BYTES`] encoded bytes (a restore's chunks), [`SPILL_MAGIC`] followed by the
//!   postcard-encoded [`SpilledEntry`]: the entry itself is in a segment file under
//!   `<raft_dir>/log-blobs` (see [`crate::log_blobs`] for why and how);
//! - `meta`: `&str` key -> postcard-encoded value, with the keys `"vote"` ([`Vote`]),
//!   `"committed"` ([`LogId`]) and `"last_purged"` ([`LogId`]).
//!
//! Every write transaction commits with [`redb::Durability::Immediate`] (fsync) before the call
//! that made it returns, and `append` reports its entries flushed only after that commit (a
//! spilled entry's segment record is fsynced before the transaction that points at it). The
//! spilled entries appended last are also kept in memory (up to [`RECENT_BYTES`]): the leader
//! reads each one back once per follower to replicate it and every node once more to apply it. redb is
//! blocking, so every async method runs its redb work on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`], which works on any tokio runtime flavour); openraft serializes
//! the write calls (each one is awaited before the next is issued). [`LogStore::open`] and
//! [`probe`] are synchronous start-up calls.
//!
//! Nothing read from disk is trusted: the file is opened with redb's integrity check (every page's
//! checksum is verified, which reads the whole file once per open), and a record that does not
//! decode, or an entry stored under an index other than its own, is an error naming the file,
//! never a panic.

use std::fmt;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::archive_hold::ArchiveHold;
use crate::log_blobs::{BlobError, BlobRef, BlobStore};
use crate::snapshot_floor::SnapshotFloor;
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// The log file's name inside the raft directory.
pub const LOG_FILE_NAME: &str = "raft.redb";

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// redb's page cache. The log is written at its tail and read near it (replication, apply), so a
/// modest cache serves it; redb's default (1 GiB) would let a long log grow the process a lot.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Entries whose encoding is at least this long go to a segment file instead of redb. A restore
/// chunk (1 MiB) always does; an ordinary write batch of SQL rarely does.
pub const SPILL_BYTES: usize = 64 * 1024;
/// Marks a spilled entry's record. No postcard-encoded [`Entry`] starts with it: an entry
/// starts with its term as a varint, and ten bytes with the continuation bit set are not a
/// valid `u64` varint (a unit test pins this).
const SPILL_MAGIC: [u8; 10] = [0xFF; 10];
/// Bytes of recently appended spilled entries kept in memory for replication and apply.
const RECENT_BYTES: usize = 32 << 20;

/// The segment size: [`crate::log_blobs::SEGMENT_BYTES`], or `RAFTLITE_LOG_SEGMENT_BYTES` when
/// set to at least 4096 (tests use small segments to watch them being deleted).
fn segment_bytes() -> u64 {
    std::env::var("RAFTLITE_LOG_SEGMENT_BYTES")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n >= 4096)
        .unwrap_or(crate::log_blobs::SEGMENT_BYTES)
}

/// What redb holds for a spilled entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct SpilledEntry {
    log_id: LogId,
    blob: BlobRef,
}

/// A log record as stored: the entry, or where it is.
enum Stored {
    Inline(Entry),
    Spilled(SpilledEntry),
}

/// The Raft log and vote of one node. Cloning is cheap: clones share the open database.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
    /// When set, a purge waits until a snapshot durable on this node covers its purge point
    /// (see [`crate::snapshot_floor`]). Offline tools that write a snapshot and the log
    /// themselves run without it.
    floor: Option<SnapshotFloor>,
    /// While this node archives the log, purges keep what the archive does not hold yet.
    hold: Option<ArchiveHold>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    blobs: BlobStore,
    recent: std::sync::Mutex<RecentEntries>,
}

/// The spilled entries appended last, newest at the back, within [`RECENT_BYTES`].
#[derive(Default)]
struct RecentEntries {
    entries: std::collections::VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl RecentEntries {
    fn get(&self, log_id: &LogId) -> Option<Entry> {
        self.entries
            .iter()
            .rev()
            .find(|(e, _)| &e.log_id == log_id)
            .map(|(e, _)| e.clone())
    }

    fn push(&mut self, entry: Entry, size: usize) {
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > RECENT_BYTES {
            match self.entries.pop_front() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.entries.retain(|(e, _)| keep(e.log_id.index));
        self.bytes = self.entries.iter().map(|(_, size)| size).sum();
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// What an existing log says, read without starting a node (see [`probe`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogProbe {
    /// Whether `raft.redb` exists. When false every other field is `None`.
    pub exists: bool,
    pub vote: Option<Vote>,
    pub last_purged: Option<LogId>,
    /// The last entry's log id or, with no entry, `last_purged` (as openraft's log state).
    pub last_log_id: Option<LogId>,
    pub committed: Option<LogId>,
}

/// Why an operation on the log file failed.
#[derive(Debug, thiserror::Error)]
enum Cause {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: postcard::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: postcard::Error,
    },
    #[error("the entry stored under index {key} has log id {log_id}")]
    IndexMismatch { key: u64, log_id: LogId },
    #[error(
        "the entry at index {key} should have log id {expected} but its segment record has {found}"
    )]
    SpillMismatch {
        key: u64,
        expected: LogId,
        found: LogId,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("the blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

macro_rules! redb_cause {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for Cause {
            fn from(e: $t) -> Self {
                Cause::Redb(redb::Error::from(e))
            }
        })*
    };
}

redb_cause!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);

/// A failure on the log file, naming the file and the operation.
#[derive(Debug, thiserror::Error)]
#[error("raft log {}: {op}: {cause}", path.display())]
struct FileError {
    path: PathBuf,
    op: &'static str,
    cause: Cause,
}

impl From<FileError> for io::Error {
    /// openraft's storage traits speak `io::Error`; the message names the file, the operation
    /// and the cause.
    fn from(e: FileError) -> io::Error {
        io::Error::other(e)
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, Cause> {
    postcard::to_stdvec(value).map_err(|source| Cause::Encode {
        what: what.to_string(),
        source,
    })
}

fn decode<T: DeserializeOwned>(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<T, Cause> {
    postcard::from_bytes(bytes).map_err(|source| Cause::Decode {
        what: what(),
        source,
    })
}

/// Decodes the record stored under `key` and checks it is for that index.
fn decode_stored(key: u64, bytes: &[u8]) -> Result<Stored, Cause> {
    let (stored, log_id) = match bytes.strip_prefix(SPILL_MAGIC.as_slice()) {
        Some(rest) => {
            let spilled: SpilledEntry =
                decode(|| format!("the spilled log entry at index {key}"), rest)?;
            (Stored::Spilled(spilled), spilled.log_id)
        }
        None => {
            let entry: Entry = decode(|| format!("the log entry at index {key}"), bytes)?;
            let log_id = entry.log_id;
            (Stored::Inline(entry), log_id)
        }
    };
    if log_id.index != key {
        return Err(Cause::IndexMismatch { key, log_id });
    }
    Ok(stored)
}

fn stored_log_id(key: u64, bytes: &[u8]) -> Result<LogId, Cause> {
    Ok(match decode_stored(key, bytes)? {
        Stored::Inline(entry) => entry.log_id,
        Stored::Spilled(spilled) => spilled.log_id,
    })
}

fn meta_get<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, Cause> {
    match table.get(key)? {
        None => Ok(None),
        Some(guard) => decode(|| format!("meta record {key:?}"), guard.value()).map(Some),
    }
}

/// The log's last id as openraft sees it: the last entry's, or the purge point when entries kept
/// for the archive ([`ArchiveHold`]) are all at or below it.
fn last_log_id(last_entry: Option<LogId>, last_purged: Option<LogId>) -> Option<LogId> {
    match (last_entry, last_purged) {
        (Some(entry), Some(purged)) if entry.index <= purged.index => Some(purged),
        (entry, purged) => entry.or(purged),
    }
}

/// The index of the entry with the smallest index, if any.
fn first_entry_index(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<Option<u64>, Cause> {
    Ok(table.first()?.map(|(key, _)| key.value()))
}

/// The log id of the entry with the greatest index, if any.
fn last_entry_log_id(
    table: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<LogId>, Cause> {
    match table.last()? {
        None => Ok(None),
        Some((key, value)) => Ok(Some(stored_log_id(key.value(), value.value())?)),
    }
}

/// Opens the log file, checking the integrity of every page (so a damaged file is an error, not a
/// panic inside redb). `create` also creates or initializes an absent or empty file.
fn open_db(path: &Path, create: bool) -> Result<Database, redb::DatabaseError> {
    let mut builder = Database::builder();
    builder
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true);
    if create {
        builder.create(path)
    } else {
        builder.open(path)
    }
}

/// A write transaction that is durable (fsynced) once `commit` returns.
fn begin_durable_write(db: &Database) -> Result<WriteTransaction, Cause> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

/// Converts a range of indexes to `[start, end)`, `end` None for unbounded; None if it is empty.
fn half_open(lo: Bound<&u64>, hi: Bound<&u64>) -> Option<(u64, Option<u64>)> {
    let start = match lo {
        Bound::Included(&x) => x,
        Bound::Excluded(&x) => x.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match hi {
        Bound::Included(&x) => x.checked_add(1),
        Bound::Excluded(&x) => Some(x),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if start >= end => None,
        _ => Some((start, end)),
    }
}

impl Inner {
    fn read_entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, Cause> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        for item in table.range((Bound::Included(start), upper))? {
            let (key, value) = item?;
            let entry = match decode_stored(key.value(), value.value())? {
                Stored::Inline(entry) => entry,
                Stored::Spilled(spilled) => self.read_spilled(key.value(), &spilled)?,
            };
            out.push(entry);
        }
        Ok(out)
    }

    fn read_spilled(&self, key: u64, spilled: &SpilledEntry) -> Result<Entry, Cause> {
        if let Some(entry) = self.recent().get(&spilled.log_id) {
            return Ok(entry);
        }
        let bytes = self.blobs.read(&spilled.blob)?;
        let entry: Entry = decode(|| format!("the spilled log entry at index {key}"), &bytes)?;
        if entry.log_id != spilled.log_id {
            return Err(Cause::SpillMismatch {
                key,
                expected: spilled.log_id,
                found: entry.log_id,
            });
        }
        Ok(entry)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_state(&self) -> Result<(Option<LogId>, Option<LogId>), Cause> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let last_purged: Option<LogId> = meta_get(&meta, KEY_LAST_PURGED)?;
        let entries = txn.open_table(ENTRIES)?;
        let last = last_log_id(last_entry_log_id(&entries)?, last_purged);
        Ok((last_purged, last))
    }

    fn meta_read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Cause> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        meta_get(&meta, key)
    }

    /// Sets (or, with None, removes) one meta record. `durable` false skips the fsync: the record
    /// then becomes durable with the next durable commit (the next append).
    fn meta_write<T: Serialize>(
        &self,
        key: &str,
        value: Option<&T>,
        durable: bool,
    ) -> Result<(), Cause> {
        let txn = if durable {
            begin_durable_write(&self.db)?
        } else {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::None)?;
            txn
        };
        {
            let mut meta = txn.open_table(META)?;
            match value {
                Some(v) => {
                    let bytes = encode(key, v)?;
                    meta.insert(key, bytes.as_slice())?;
                }
                None => {
                    meta.remove(key)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn append(&self, entries: Vec<Entry>) -> Result<(), Cause> {
        let encoded = entries
            .iter()
            .map(|entry| encode("a log entry", entry))
            .collect::<Result<Vec<_>, _>>()?;
        let large: Vec<(u64, &[u8])> = entries
            .iter()
            .zip(&encoded)
            .filter(|(_, bytes)| bytes.len() >= SPILL_BYTES)
            .map(|(entry, bytes)| (entry.log_id.index, bytes.as_slice()))
            .collect();
        // Durable before redb points at them.
        let mut blobs = self.blobs.write(&large)?.into_iter();
        let txn = begin_durable_write(&self.db)?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            for (entry, bytes) in entries.iter().zip(&encoded) {
                if bytes.len() < SPILL_BYTES {
                    table.insert(entry.log_id.index, bytes.as_slice())?;
                    continue;
                }
                let Some(blob) = blobs.next() else {
                    return Err(Cause::Blob(BlobError::MissingSegment {
                        dir: self.path.clone(),
                        segment: 0,
                    }));
                };
                let spilled = SpilledEntry {
                    log_id: entry.log_id,
                    blob,
                };
                let mut record = SPILL_MAGIC.to_vec();
                record.extend_from_slice(&encode("a spilled entry's reference", &spilled)?);
                table.insert(entry.log_id.index, record.as_slice())?;
            }
        }
        txn.commit()?;
        let mut recent = self.recent();
        for (entry, bytes) in entries.into_iter().zip(&encoded) {
            if bytes.len() >= SPILL_BYTES {
                recent.push(entry, bytes.len());
            }
        }
        Ok(())
    }

    /// Deletes the entries at `index` and after.
    fn truncate(&self, index: u64) -> Result<(), Cause> {
        let txn = begin_durable_write(&self.db)?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            table.retain_in((Bound::Included(index), Bound::Unbounded), |_, _| false)?;
        }
        txn.commit()?;
        // Their segment records become garbage that goes with the segment.
        self.recent().retain(|i| i < index);
        Ok(())
    }

    /// Records `log_id` as purged and deletes the entries up to `delete_upto` (at most
    /// `log_id`'s index: less while the archive holds some), in one durable transaction.
    fn purge(&self, log_id: &LogId, delete_upto: u64) -> Result<(), Cause> {
        let delete_upto = delete_upto.min(log_id.index);
        let txn = begin_durable_write(&self.db)?;
        {
            let mut meta = txn.open_table(META)?;
            let prev: Option<LogId> = meta_get(&meta, KEY_LAST_PURGED)?;
            // Never move the purge point back: openraft does not ask to, and a stale request must
            // not make purged entries look present.
            if prev.as_ref().is_none_or(|p| p < log_id) {
                let bytes = encode(KEY_LAST_PURGED, log_id)?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice())?;
            }
            let mut table = txn.open_table(ENTRIES)?;
            table.retain_in((Bound::Unbounded, Bound::Included(delete_upto)), |_, _| {
                false
            })?;
        }
        txn.commit()?;
        raftlite_store::failpoint::hit("log-purged");
        self.recent().retain(|i| i > delete_upto);
        self.purge_segments(delete_upto);
        Ok(())
    }

    /// Deletes entries kept for the archive, up to `upto` and never past the purge point. Not
    /// fsync'd: entries that come back after a crash are deleted again by the next release or
    /// purge.
    fn release(&self, upto: u64) -> Result<(), Cause> {
        let Some(purged) = self.meta_read::<LogId>(KEY_LAST_PURGED)? else {
            return Ok(());
        };
        let upto = upto.min(purged.index);
        {
            let txn = self.db.begin_read()?;
            let entries = txn.open_table(ENTRIES)?;
            if first_entry_index(&entries)?.is_none_or(|first| first > upto) {
                return Ok(());
            }
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut table = txn.open_table(ENTRIES)?;
            table.retain_in((Bound::Unbounded, Bound::Included(upto)), |_, _| false)?;
        }
        txn.commit()?;
        self.recent().retain(|i| i > upto);
        self.purge_segments(upto);
        Ok(())
    }

    /// The index of the first entry on disk (kept ones included), if any.
    fn first_index(&self) -> Result<Option<u64>, Cause> {
        let txn = self.db.begin_read()?;
        let entries = txn.open_table(ENTRIES)?;
        first_entry_index(&entries)
    }

    /// Deletes the segment files nothing at or below `index` needs. A failure only leaves a
    /// file for the next purge, so it is logged, not returned.
    fn purge_segments(&self, index: u64) {
        if let Err(e) = self.blobs.purge(index) {
            tracing::warn!(error = %e, "cannot delete a purged log segment; the next purge retries");
        }
    }
}

impl LogStore {
    /// Opens `raft_dir/raft.redb`, creating the directory and the file if needed.
    pub fn open(raft_dir: &Path) -> io::Result<LogStore> {
        let path = raft_dir.join(LOG_FILE_NAME);
        let fail = |op: &'static str, cause: Cause| -> io::Error {
            FileError {
                path: path.clone(),
                op,
                cause,
            }
            .into()
        };
        std::fs::create_dir_all(raft_dir)
            .map_err(|e| fail("create the directory", Cause::Redb(redb::Error::Io(e))))?;
        let db = open_db(&path, true).map_err(|e| fail("open", e.into()))?;
        // Create the tables up front, so readers always find them.
        let init = || -> Result<(), Cause> {
            let txn = begin_durable_write(&db)?;
            txn.open_table(ENTRIES)?;
            txn.open_table(META)?;
            txn.commit()?;
            Ok(())
        };
        init().map_err(|e| fail("create the tables", e))?;
        let blobs = BlobStore::open_with_segment_bytes(raft_dir, segment_bytes())
            .map_err(|e| fail("open the segments", e.into()))?;
        let inner = Inner {
            db,
            path: path.clone(),
            blobs,
            recent: Default::default(),
        };
        // Segments a crash kept from being deleted: all of them when no entry is left to point
        // into one, else those a completed purge no longer needs.
        let (last_purged, last) = inner
            .log_state()
            .map_err(|e| fail("read the log state", e))?;
        if last == last_purged {
            inner
                .blobs
                .clear()
                .map_err(|e| fail("delete unused segments", e.into()))?;
        } else if let Some(purged) = last_purged {
            // Entries kept for the archive may still point into segments below the purge point.
            let first = inner
                .first_index()
                .map_err(|e| fail("read the log state", e))?;
            let unneeded = match first {
                Some(first) if first <= purged.index => first.saturating_sub(1),
                _ => purged.index,
            };
            inner.purge_segments(unneeded);
        }
        Ok(LogStore {
            inner: Arc::new(inner),
            floor: None,
            hold: None,
        })
    }

    /// Makes every purge wait until `floor` (the newest snapshot durable on this node) covers
    /// its purge point: the log never starts past what this node's disk can rebuild.
    pub fn with_snapshot_floor(mut self, floor: SnapshotFloor) -> LogStore {
        self.floor = Some(floor);
        self
    }

    /// Keeps entries the log archive does not hold yet through purges (see
    /// [`crate::archive_hold`]).
    pub fn with_archive_hold(mut self, hold: ArchiveHold) -> LogStore {
        self.hold = Some(hold);
        self
    }

    /// Committed entries `from..=to` for the log archive, including entries openraft has purged
    /// but the archive hold kept. Returns the index of the first entry on disk too, so a caller
    /// asking for entries already deleted can tell (and record a gap) instead of getting none.
    pub async fn read_for_archive(
        &self,
        from: u64,
        to: u64,
    ) -> io::Result<(Option<u64>, Vec<Entry>)> {
        Ok(self
            .blocking("read entries for the archive", move |inner| {
                let first = inner.first_index()?;
                let entries = if from > to {
                    Vec::new()
                } else {
                    inner.read_entries(from, to.checked_add(1))?
                };
                Ok((first, entries))
            })
            .await?)
    }

    /// Deletes entries kept for the archive up to `upto` (it has them now).
    pub async fn release_archived(&self, upto: u64) -> io::Result<()> {
        Ok(self
            .blocking("release archived entries", move |inner| inner.release(upto))
            .await?)
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the blocking pool, naming the file and `op` in its error.
    async fn blocking<T, F>(&self, op: &'static str, f: F) -> Result<T, FileError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, Cause> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let res = crate::blocking::run_blocking(move || f(&inner)).await;
        let cause = match res {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(cause)) => cause,
            Err(join) => Cause::Join(join),
        };
        Err(FileError {
            path: self.inner.path.clone(),
            op,
            cause,
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let Some((start, end)) = half_open(range.start_bound(), range.end_bound()) else {
            return Ok(Vec::new());
        };
        Ok(self
            .blocking("read entries", move |inner| inner.read_entries(start, end))
            .await?)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self
            .blocking("read the vote", |inner| inner.meta_read(KEY_VOTE))
            .await?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let (last_purged_log_id, last_log_id) = self
            .blocking("read the log state", |inner| inner.log_state())
            .await?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let vote = *vote;
        Ok(self
            .blocking("save the vote", move |inner| {
                inner.meta_write(KEY_VOTE, Some(&vote), true)
            })
            .await?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        Ok(self
            .blocking("save the committed log id", move |inner| {
                // Only a hint for replay after a restart (the state machine records what it
                // applied), so it is not worth an fsync on every commit; the next append makes
                // it durable.
                inner.meta_write(KEY_COMMITTED, committed.as_ref(), false)
            })
            .await?)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self
            .blocking("read the committed log id", |inner| {
                inner.meta_read(KEY_COMMITTED)
            })
            .await?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let res = if entries.is_empty() {
            Ok(())
        } else {
            self.blocking("append entries", move |inner| inner.append(entries))
                .await
        };
        // The commit above was durable (fsynced) before the flush is reported.
        match res {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::other(e.to_string())));
                Err(e.into())
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        // Everything after `last_log_id` goes; with `None`, every entry.
        let from = last_log_id.map_or(0, |l| l.index + 1);
        Ok(self
            .blocking("truncate the log", move |inner| inner.truncate(from))
            .await?)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        if let Some(floor) = &self.floor {
            floor
                .wait_covers(log_id.index)
                .await
                .map_err(io::Error::other)?;
        }
        let delete_upto = self
            .hold
            .as_ref()
            .map_or(log_id.index, |hold| hold.delete_limit(log_id.index));
        Ok(self
            .blocking("purge the log", move |inner| {
                inner.purge(&log_id, delete_upto)
            })
            .await?)
    }
}

/// Reads what an existing log holds, for start-up classification and `doctor`, without creating
/// or changing anything: an absent `raft_dir/raft.redb` (or an absent `raft_dir`) gives
/// `exists: false`; an existing file is copied to the temp dir and the copy is opened with the
/// same integrity checks (and crash recovery) a start runs; a zero-length file, which holds
/// nothing, gives `exists: true` and no values.
pub fn probe(raft_dir: &Path) -> Result<LogProbe, String> {
    let path = raft_dir.join(LOG_FILE_NAME);
    let fail =
        |what: &str, e: &dyn fmt::Display| format!("raft log {}: {what}: {e}", path.display());
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LogProbe::default()),
        Err(e) => return Err(fail("stat", &e)),
    };
    if !meta.is_file() {
        return Err(fail("probe", &"not a regular file"));
    }
    let present = LogProbe {
        exists: true,
        ..LogProbe::default()
    };
    if meta.len() == 0 {
        return Ok(present);
    }
    // redb writes to a file it opens read-write (header, and recovery after a crash), and its
    // read-only open neither recovers nor checks integrity. So the probe opens a private copy
    // with the same checks a start would run, and the operator's file stays untouched.
    let copy = ProbeCopy::of(&path).map_err(|e| fail("copy for probing", &e))?;
    let db = open_db(&copy.0, false).map_err(|e| fail("open", &e))?;
    let read = || -> Result<LogProbe, Cause> {
        let txn = db.begin_read()?;
        let (vote, last_purged, committed) = match txn.open_table(META) {
            Ok(meta) => (
                meta_get(&meta, KEY_VOTE)?,
                meta_get(&meta, KEY_LAST_PURGED)?,
                meta_get(&meta, KEY_COMMITTED)?,
            ),
            Err(TableError::TableDoesNotExist(_)) => (None, None, None),
            Err(e) => return Err(e.into()),
        };
        let last_entry = match txn.open_table(ENTRIES) {
            Ok(entries) => {
                check_spilled_records(&entries, raft_dir)?;
                last_entry_log_id(&entries)?
            }
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(LogProbe {
            vote,
            last_purged,
            last_log_id: last_log_id(last_entry, last_purged),
            committed,
            ..present
        })
    };
    read().map_err(|e| fail("read", &e))
}

/// Checks that every spilled entry's segment record is on disk (its segment exists and is long
/// enough), so that a log whose large entries were lost is found at start-up (and refused, with
/// recovery mode as the fix) instead of stopping the node when the entry is read.
fn check_spilled_records(
    entries: &impl ReadableTable<u64, &'static [u8]>,
    raft_dir: &Path,
) -> Result<(), Cause> {
    let mut lengths: Option<std::collections::HashMap<u64, u64>> = None;
    for item in entries.iter()? {
        let (key, value) = item?;
        let Some(rest) = value.value().strip_prefix(SPILL_MAGIC.as_slice()) else {
            continue;
        };
        let spilled: SpilledEntry = decode(
            || format!("the spilled log entry at index {}", key.value()),
            rest,
        )?;
        if lengths.is_none() {
            lengths = Some(crate::log_blobs::segment_lengths(raft_dir)?);
        }
        let end = spilled.blob.offset.saturating_add(spilled.blob.len);
        let present = lengths
            .as_ref()
            .and_then(|l| l.get(&spilled.blob.segment))
            .is_some_and(|&len| len >= end);
        if !present {
            return Err(Cause::Blob(BlobError::MissingSegment {
                dir: raft_dir.join(crate::log_blobs::BLOB_DIR_NAME),
                segment: spilled.blob.segment,
            }));
        }
    }
    Ok(())
}

/// A temporary copy of a log file, removed when dropped.
struct ProbeCopy(PathBuf);

impl ProbeCopy {
    fn of(path: &Path) -> io::Result<ProbeCopy> {
        let copy = std::env::temp_dir().join(format!(
            "raftlite-probe-{}-{:016x}.redb",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::copy(path, &copy)?;
        Ok(ProbeCopy(copy))
    }
}

impl Drop for ProbeCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests;
