//! The SQLite state machine: one writer connection applying Raft entries, a pool of read-only
//! connections serving queries, consistent snapshots through the online backup API, and atomic
//! installation of a snapshot file.
//!
//! Its parts: `apply` (log entries in), `read` (queries and committed reads on the reader
//! pool), `files` (pinning, snapshots, installs, loads and a restore's commit), `meta`
//! (`_raftlite_meta` and `probe`), `sql` (a client's statements under the guard),
//! `restore_chunks` (a restore's chunks until its commit) and `internal_schema` (raftlite's
//! tables hidden from clients).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use rusqlite::hooks::AuthContext;
use rusqlite::{Connection, OpenFlags};

use crate::deterministic;
use crate::error::StoreError;

mod apply;
mod disk;
mod files;
mod internal_schema;
mod meta;
mod read;
mod restore_chunks;
mod sql;
#[cfg(test)]
mod tests;

pub use files::PinnedFile;
pub use internal_schema::{
    is_internal_object, is_internal_table, strip_internal_tables, INTERNAL_TABLES,
};
pub use meta::{probe, probe_checked, reseed_database, validate_database, validate_database_fully};
use sql::Guard;

/// Name of the table that records where the data stands in the Raft log.
pub const META_TABLE: &str = "_raftlite_meta";
/// Name of the table recording the chunks of a restore in progress (see
/// [`Store::apply_restore_chunk`]): which arrived, in the same transaction as the applied
/// position; the bytes are in a staging file, and in the rows of a snapshot's copy.
pub const RESTORE_TABLE: &str = "_raftlite_restore";

/// Bytes available to this process on the file system holding `dir`; `None` when unknown.
pub fn free_space(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Idle read-only connections kept open between queries.
const MAX_IDLE_READERS: usize = 8;
/// What the WAL file is cut back to after a checkpoint emptied it (`journal_size_limit`).
const WAL_SIZE_LIMIT_BYTES: i64 = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long a query waits for a lock before answering "database is locked".
    pub busy_timeout_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout_ms: 5_000,
        }
    }
}

/// The leader's clock and random seed for one entry; see [`crate::deterministic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryTime {
    pub at_unix_ms: i64,
    pub seed: u64,
}

pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Queries hold it shared; swapping the database file holds it exclusively.
    swap_gate: RwLock<()>,
    writer_guard: Arc<Guard>,
    /// Leader clock (Unix ms) of the last applied write entry; 0 before the first.
    last_write_at_ms: std::sync::atomic::AtomicI64,
    /// Held while a restore's staging file is written, read into a snapshot, or taken by the
    /// commit (see `restore_chunks`); holds the sha256 of the chunks applied in order.
    restore_staging: Mutex<restore_chunks::StagingState>,
}

impl Drop for Store {
    /// Closes the pooled readers before the writer (fields drop in declaration order, writer
    /// first): SQLite checkpoints and removes the WAL only when the last connection closes, so a
    /// cleanly stopped node leaves one self-contained database file, and damage to that file is
    /// not masked by pages still in a leftover WAL at the next start.
    fn drop(&mut self) {
        let readers = match self.readers.get_mut() {
            Ok(readers) => readers,
            Err(poisoned) => poisoned.into_inner(),
        };
        readers.clear();
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` for applying entries and serving reads.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        deterministic::register_vfs()?;
        let writer_guard = Arc::new(Guard::default());
        let writer = open_writer(path, &options, writer_guard.clone())?;
        let store = Store {
            path: path.to_path_buf(),
            options,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            swap_gate: RwLock::new(()),
            writer_guard,
            last_write_at_ms: std::sync::atomic::AtomicI64::new(0),
            restore_staging: Mutex::new(Default::default()),
        };
        store.clean_restore_staging()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes of the database's WAL file (0 when there is none). It grows only while
    /// something (a pinned backup, a long read) keeps checkpoints from completing.
    pub fn wal_len(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::metadata(&wal).map_or(0, |m| m.len())
    }

    /// The leader's clock (Unix ms) when it proposed the last write this node applied, if any
    /// since start-up. Used for rqlite's `freshness_strict`.
    pub fn last_write_at_ms(&self) -> Option<i64> {
        match self.last_write_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (its own transaction
        // guarantees that), so a poisoned lock is safe to reuse.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn open_writer(
    path: &Path,
    options: &StoreOptions,
    guard: Arc<Guard>,
) -> Result<Connection, StoreError> {
    let vfs = deterministic::VFS_NAME
        .to_str()
        .map_err(|e| StoreError::Refused(e.to_string()))?;
    let mut conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)?;
    // The Raft log is the durable record: a crash may lose the last commits of the database,
    // never of the log, and replay restores them. So the database need not fsync every commit.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // A WAL that grew (while a backup pinned the file, before it let go) shrinks back once a
    // checkpoint has emptied it, instead of keeping its peak size on disk for good.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    conn.busy_timeout(std::time::Duration::from_millis(options.busy_timeout_ms))?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    ))?;
    deterministic::install_functions(&conn)?;
    conn.authorizer(Some(move |ctx: AuthContext<'_>| guard.authorize(ctx)))?;
    Ok(conn)
}

fn open_reader(path: &Path, options: &StoreOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(options.busy_timeout_ms))?;
    Ok(conn)
}

/// A read-only connection to a file under examination; failing to open it means it is no database.
pub(crate) fn open_to_examine(path: &Path) -> Result<Connection, StoreError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::NotADatabase {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}
