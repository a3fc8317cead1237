//! The SQLite state machine: one writer connection applying Raft entries, a pool of read-only
//! connections serving queries, consistent snapshots through the online backup API, and atomic
//! installation of a snapshot file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use fallible_iterator::FallibleIterator;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::deterministic::{self, EntryScope};
use crate::error::StoreError;
use crate::types::*;

mod internal_schema;
mod restore_chunks;

pub use internal_schema::{
    is_internal_object, is_internal_table, strip_internal_tables, INTERNAL_TABLES,
};

/// Name of the table that records where the data stands in the Raft log.
pub const META_TABLE: &str = "_raftlite_meta";
/// Name of the table recording the chunks of a restore in progress (see
/// [`Store::apply_restore_chunk`]): which arrived, in the same transaction as the applied
/// position; the bytes are in a staging file, and in the rows of a snapshot's copy.
pub const RESTORE_TABLE: &str = "_raftlite_restore";

const META_APPLIED: &str = "applied";
const META_MEMBERSHIP: &str = "membership";
const META_TIMELINES: &str = "timeline_history";
/// The position of the last entry that changed user data (writes, loads, a new timeline), so
/// that entries that change nothing (leader blanks, membership) do not make a backup "new".
const META_DATA_CHANGED: &str = "data_changed";

/// Copies [`Store::snapshot_to`] takes before giving up while restores keep committing under it.
const SNAPSHOT_ATTEMPTS: usize = 10;
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

/// What `_raftlite_meta` must receive with an entry's data, in the same transaction.
enum MetaChange<'a> {
    None,
    /// User data changed (a write entry).
    Data,
    Membership(&'a str),
    Timeline(&'a TimelineRecord),
}

/// Why the statement guard refused a statement, read back after SQLite reports "not authorized".
#[derive(Default)]
struct Guard {
    /// Set while preparing statements that came from a client.
    client_sql: AtomicBool,
    refusal: Mutex<Option<String>>,
    /// What the statement being prepared does with raftlite's own tables and the schema.
    seen: internal_schema::Seen,
}

impl Guard {
    fn authorize(&self, ctx: AuthContext<'_>) -> Authorization {
        if !self.client_sql.load(Ordering::Relaxed) {
            return Authorization::Allow;
        }
        if let Some(decision) = self.seen.authorize(&ctx) {
            return internal_schema::answer(decision, &self.refusal);
        }
        let refusal = match ctx.action {
            AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
                "BEGIN, COMMIT, ROLLBACK, SAVEPOINT and RELEASE are not allowed in a request: \
                 raftlite runs each request in its own transaction; use ?transaction to make \
                 all statements of a request commit or fail together"
            }
            AuthAction::Pragma {
                pragma_name,
                pragma_value,
            } if breaks_the_store(pragma_name, pragma_value) => {
                "disallowed pragma: journal_mode, synchronous, query_only and wal_autocheckpoint \
                 cannot be set, and wal_checkpoint cannot run, in a request: raftlite sets them \
                 on every node itself"
            }
            AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
                "ATTACH and DETACH are not allowed: every node must hold the same single database"
            }
            _ => return Authorization::Allow,
        };
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(refusal.to_string());
        }
        Authorization::Deny
    }

    /// Turns SQLite's generic "not authorized" into the guard's reason.
    fn explain(&self, err: rusqlite::Error) -> String {
        let reason = self.refusal.lock().ok().and_then(|mut slot| slot.take());
        match reason {
            // "access to T.C is prohibited": a refused column read.
            Some(reason)
                if err.to_string().contains("not authorized")
                    || err.to_string().contains("is prohibited") =>
            {
                reason
            }
            _ => err.to_string(),
        }
    }
}

/// The PRAGMAs rqlite refuses (its `db/state.go` `BreakingPragmas`: setting `journal_mode`,
/// `synchronous`, `query_only` or `wal_autocheckpoint`, any `wal_checkpoint`). The API refuses
/// requests that start with one, as rqlite does (`raftlite_api::pragma`); this catches the
/// forms that check cannot see (after a comment or another statement in the same string), on
/// every node alike, so none of them changes the connections raftlite applies the log with.
fn breaks_the_store(name: &str, value: Option<&str>) -> bool {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    is("wal_checkpoint")
        || (value.is_some()
            && (is("journal_mode")
                || is("synchronous")
                || is("query_only")
                || is("wal_autocheckpoint")))
}

/// A request's statements could not run because one of them rolled back the whole enclosing
/// transaction (`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)`).
struct EndedTransaction;

/// The database file pinned as a consistent snapshot (see [`Store::pin_consistent_file`]):
/// `file` reads exactly the snapshot described by `meta` while this value lives.
pub struct PinnedFile {
    /// Holds the read transaction that keeps checkpoints from changing the file.
    _reader: Connection,
    pub file: std::fs::File,
    pub meta: MetaState,
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

    /// The meta table as the database currently says, read on the writer connection: it waits
    /// for an entry being applied and then sees it. For the apply paths, which decide what to
    /// write from it; a monitoring read that must not wait uses [`Store::committed_meta`].
    pub fn meta(&self) -> Result<MetaState, StoreError> {
        read_meta(&self.writer(), &self.path)
    }

    /// The meta table as of the last committed entry, read on a read-only connection in one
    /// read transaction, so it never waits for an entry being applied (`/status`, backups'
    /// checks). Only a swap of the database file (a restore, load or snapshot install) is waited
    /// for; see [`Store::read_committed`].
    pub fn committed_meta(&self) -> Result<MetaState, StoreError> {
        self.read_committed(|conn| read_meta(conn, &self.path))
    }

    /// Runs `read` on a pooled read-only connection inside one read transaction: it sees the
    /// last committed state, consistently across its statements, without the writer's lock.
    ///
    /// File swaps: like queries, it holds the swap gate shared, so it never overlaps
    /// [`Store::swap_in`], which empties the pool under the gate (no connection here reads the
    /// old file afterwards). While a swap holds or waits for the gate, `read` runs on the
    /// writer instead, which is then free (the swap waits for the gate before it takes the
    /// writer) or held by the swap itself for its short duration: never longer than a read on
    /// the writer would wait, and a pending swap does not queue this read behind long queries.
    fn read_committed<T>(
        &self,
        read: impl Fn(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _shared = match self.swap_gate.try_read() {
            Ok(shared) => shared,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return read(&self.writer()),
        };
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path, &self.options)?,
        };
        conn.execute_batch("BEGIN")?;
        let result = read(&conn);
        // A read transaction ends with its COMMIT; a connection left inside one is not pooled.
        if conn.execute_batch("COMMIT").is_ok() {
            self.pool_reader(conn);
        }
        result
    }

    /// Applies one entry of client writes. Each request runs in a savepoint of the entry's
    /// transaction; the applied position is written in the same transaction.
    pub fn apply_write(
        &self,
        position: LogPosition,
        time: EntryTime,
        requests: &[WriteRequest],
    ) -> Result<Vec<Vec<StatementResult>>, StoreError> {
        let conn = self.writer();
        let scope = EntryScope::enter(time.at_unix_ms, time.seed);
        // A request that ends the enclosing transaction is answered with an error and the entry is
        // applied again without it; that happens identically on every node.
        let mut excluded: HashSet<usize> = HashSet::new();
        loop {
            scope.reseed(time.seed);
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let mut all = Vec::with_capacity(requests.len());
            let mut ended = None;
            for (i, request) in requests.iter().enumerate() {
                if excluded.contains(&i) {
                    all.push(vec![StatementResult::Error(
                        "a statement of this request rolled back the whole transaction \
                         (ON CONFLICT ROLLBACK or RAISE(ROLLBACK)); use ABORT or FAIL instead"
                            .to_string(),
                    )]);
                    continue;
                }
                match self.run_request(&conn, request) {
                    Ok(results) => all.push(results),
                    Err(EndedTransaction) => {
                        ended = Some(i);
                        break;
                    }
                }
            }
            if let Some(i) = ended {
                if !conn.is_autocommit() {
                    conn.execute_batch("ROLLBACK")?;
                }
                excluded.insert(i);
                continue;
            }
            let committed = write_applied(&conn, position, MetaChange::Data)
                .and_then(|_| conn.execute_batch("COMMIT").map_err(StoreError::from));
            if let Err(e) = committed {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                return Err(e);
            }
            self.last_write_at_ms
                .store(time.at_unix_ms, Ordering::Relaxed);
            return Ok(all);
        }
    }

    fn run_request(
        &self,
        conn: &Connection,
        request: &WriteRequest,
    ) -> Result<Vec<StatementResult>, EndedTransaction> {
        let mut results = Vec::with_capacity(request.statements.len());
        if conn.execute_batch("SAVEPOINT request").is_err() {
            return Err(EndedTransaction);
        }
        if reset_statement_counters(conn).is_err() {
            return Err(EndedTransaction);
        }
        for statement in &request.statements {
            let result = execute_statement(conn, statement, &self.writer_guard);
            if conn.is_autocommit() {
                return Err(EndedTransaction);
            }
            let failed = matches!(result, StatementResult::Error(_));
            results.push(result);
            if failed && request.transaction {
                if conn
                    .execute_batch("ROLLBACK TO request; RELEASE request")
                    .is_err()
                {
                    return Err(EndedTransaction);
                }
                return Ok(results);
            }
        }
        if conn.execute_batch("RELEASE request").is_err() {
            return Err(EndedTransaction);
        }
        Ok(results)
    }

    /// Records an entry that changes no data (a blank or membership entry).
    pub fn apply_membership(
        &self,
        position: LogPosition,
        membership_json: Option<&str>,
    ) -> Result<(), StoreError> {
        let conn = self.writer();
        let change = match membership_json {
            Some(m) => MetaChange::Membership(m),
            None => MetaChange::None,
        };
        in_transaction(&conn, |c| write_applied(c, position, change))
    }

    /// Starts the first timeline if the database has none. Returns the timeline in force
    /// afterwards. Idempotent: a database that already has a timeline keeps it.
    pub fn apply_init_timeline(
        &self,
        position: LogPosition,
        record: &TimelineRecord,
    ) -> Result<TimelineRecord, StoreError> {
        let conn = self.writer();
        in_transaction(&conn, |c| {
            let history = read_timelines(c, &self.path)?;
            match history.last() {
                Some(current) => {
                    write_applied(c, position, MetaChange::None)?;
                    Ok(current.clone())
                }
                None => {
                    write_applied(c, position, MetaChange::Timeline(record))?;
                    Ok(record.clone())
                }
            }
        })
    }

    /// Appends `record` to the timeline history at `position` (counter and parent are set from
    /// the current timeline; `parent_index` is the current applied index), recording the
    /// position too. For lineage changes that keep the data, such as a lost-quorum recovery.
    pub fn append_timeline(
        &self,
        position: LogPosition,
        record: &TimelineRecord,
    ) -> Result<MetaState, StoreError> {
        let conn = self.writer();
        let before = read_meta(&conn, &self.path)?;
        let record = child_timeline(record, &before);
        in_transaction(&conn, |c| {
            write_applied(c, position, MetaChange::Timeline(&record))
        })?;
        read_meta(&conn, &self.path)
    }

    /// Runs read-only statements on a pooled read-only connection.
    pub fn query(&self, statements: &[Statement]) -> Result<Vec<StatementResult>, StoreError> {
        self.query_with_timeout(statements, None)
    }

    /// Like [`Store::query`], interrupting statements still running after `timeout` (rqlite's
    /// `db_timeout`); an interrupted statement reports an error naming the timeout. Never used
    /// for applying entries: an apply must run to the same end on every node.
    pub fn query_with_timeout(
        &self,
        statements: &[Statement],
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<StatementResult>, StoreError> {
        self.query_within(statements, timeout, None)
    }

    /// Like [`Store::query_with_timeout`], stopping as soon as the rows collected for all
    /// statements together pass `max_result_bytes` (measured as [`ResultBudget`] counts them):
    /// the request fails with [`StoreError::ResultTooLarge`], so memory stays bounded whatever
    /// the query returns.
    pub fn query_within(
        &self,
        statements: &[Statement],
        timeout: Option<std::time::Duration>,
        max_result_bytes: Option<usize>,
    ) -> Result<Vec<StatementResult>, StoreError> {
        let _shared = self.swap_gate.read().unwrap_or_else(|p| p.into_inner());
        let reader = self.take_reader()?;
        let watchdog = timeout.map(|t| QueryWatchdog::start(&reader.conn, t));
        let budget = max_result_bytes.map(ResultBudget::new);
        let mut results = Vec::with_capacity(statements.len());
        for s in statements {
            let result = match query_statement(&reader.conn, s, &reader.guard, budget.as_ref()) {
                StatementResult::Error(e) if watchdog.as_ref().is_some_and(|w| w.fired()) => {
                    StatementResult::Error(format!(
                        "{e}: the query ran longer than db_timeout ({:?}) and was interrupted",
                        timeout.unwrap_or_default()
                    ))
                }
                other => other,
            };
            if let Some(budget) = budget.as_ref().filter(|b| b.exceeded()) {
                drop(watchdog);
                self.return_reader(reader);
                return Err(StoreError::ResultTooLarge {
                    limit: budget.limit,
                });
            }
            results.push(result);
        }
        drop(watchdog);
        self.return_reader(reader);
        Ok(results)
    }

    /// Whether every statement only reads. A statement that does not compile counts as a read,
    /// so its error is reported by the cheap read path instead of going through the log.
    pub fn is_read_only(&self, statements: &[Statement]) -> Result<bool, StoreError> {
        let _shared = self.swap_gate.read().unwrap_or_else(|p| p.into_inner());
        let reader = self.take_reader()?;
        let mut read_only = true;
        'outer: for statement in statements {
            let mut batch = rusqlite::Batch::new(&reader.conn, &statement.sql);
            loop {
                match batch.next() {
                    Ok(Some(stmt)) if !stmt.readonly() => {
                        read_only = false;
                        break 'outer;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        self.return_reader(reader);
        Ok(read_only)
    }

    fn take_reader(&self) -> Result<Reader, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path, &self.options)?,
        };
        Ok(Reader::new(conn))
    }

    fn return_reader(&self, reader: Reader) {
        if !reader.conn.is_autocommit() {
            return; // never pool a connection left inside a transaction
        }
        self.pool_reader(reader.into_conn());
    }

    /// Keeps an idle read-only connection (no authorizer, not in a transaction) for reuse.
    fn pool_reader(&self, conn: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
    }

    /// Opens the database file itself as a consistent snapshot that stays unchanged while the
    /// returned [`PinnedFile`] lives, so a backup can stream the file without copying it first.
    ///
    /// How: with the writer held (so nothing commits meanwhile) the WAL is checkpointed
    /// completely, then a read transaction begins. A reader that starts on a fully checkpointed
    /// WAL reads the main file only (SQLite's read-lock slot 0), and while it holds that lock no
    /// checkpoint may copy newer pages into the file; new commits go to the WAL. So the file's
    /// bytes are exactly the snapshot until the pin is dropped. `Ok(None)` when the WAL could
    /// not be fully checkpointed right now (a long query holds an older snapshot): copy with
    /// [`Store::snapshot_to`] instead.
    pub fn pin_consistent_file(&self) -> Result<Option<PinnedFile>, StoreError> {
        for attempt in 0..20 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let writer = self.writer();
            let (busy, log, checkpointed): (i64, i64, i64) =
                writer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            if busy != 0 || log != checkpointed {
                continue;
            }
            let reader = open_reader(&self.path, &self.options)?;
            reader.execute_batch("BEGIN")?;
            let meta = read_meta(&reader, &self.path)?;
            let file =
                std::fs::File::open(&self.path).map_err(|e| StoreError::io(&self.path, e))?;
            drop(writer);
            return Ok(Some(PinnedFile {
                _reader: reader,
                file,
                meta,
            }));
        }
        Ok(None)
    }

    /// Writes a consistent copy of the database to `dest` with SQLite's online backup API, in
    /// one step on its own read transaction, so writes continue meanwhile and rowids are kept.
    /// The copy is fsync'd and self-contained (rollback journal mode). Returns the copy's meta.
    pub fn snapshot_to(&self, dest: &Path) -> Result<MetaState, StoreError> {
        // A restore committed or dropped between the copy and reading its staging file makes
        // the copy stale; the next copy no longer holds its chunks.
        for _ in 0..SNAPSHOT_ATTEMPTS {
            if let Some(meta) = self.try_snapshot_to(dest)? {
                return Ok(meta);
            }
        }
        Err(StoreError::Refused(format!(
            "no consistent snapshot after {SNAPSHOT_ATTEMPTS} attempts: a restore kept \
             changing under it; try again"
        )))
    }

    fn try_snapshot_to(&self, dest: &Path) -> Result<Option<MetaState>, StoreError> {
        let _ = std::fs::remove_file(dest);
        let mut target = Connection::open(dest)?;
        {
            // A reader that opens the old file mid-swap finds its WAL gone, falls back to
            // rollback mode and takes the new file's journal (same path, other inode, so no
            // lock of its own guards it) for a hot one: SQLITE_READONLY_ROLLBACK, seen in CI.
            // The gate keeps the swap out until the copy is done. It is released before
            // `carry_restore_chunks`, which takes the restore lock that a commit holds while
            // it waits for this gate.
            let _shared = self.swap_gate.read().unwrap_or_else(|p| p.into_inner());
            let source = open_reader(&self.path, &self.options)?;
            let backup = Backup::new(&source, &mut target)?;
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More | StepResult::Busy | StepResult::Locked => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    _ => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        }
        if !self.carry_restore_chunks(&target)? {
            return Ok(None);
        }
        target.pragma_update(None, "journal_mode", "DELETE")?;
        let meta = read_meta(&target, dest)?;
        drop(target);
        sync_file(dest)?;
        Ok(Some(meta))
    }

    /// Replaces the database with the SQLite file at `source` (left in place), atomically: a
    /// reader sees the old data or the new, never a mix, and a crash at any point leaves one
    /// complete file. Returns the new database's meta.
    pub fn install_from(&self, source: &Path) -> Result<MetaState, StoreError> {
        let incoming = validate_database(source)?;
        let staging = self.staging_path();
        // A journal left beside an earlier staging file by a crash would be rolled back onto
        // this new copy when it is opened: it belongs to another file.
        remove_sidecars(&staging)?;
        std::fs::copy(source, &staging).map_err(|e| StoreError::io(&staging, e))?;
        sync_file(&staging)?;
        crate::failpoint::hit("snapshot-db-installing");
        self.swap_in(&staging, incoming.applied)
    }

    /// Replaces the database with a copy of the SQLite file at `source` (a user's database, as
    /// `/db/load` receives it) as the state at Raft log `position`. The copy's `_raftlite_meta`
    /// is rewritten (created if absent) so that it says: applied = `position`; membership =
    /// `membership_json`, or this store's current membership when `None` (never the loaded
    /// file's); timeline history = this store's history plus `timeline`. The source file is
    /// never modified. The swap is atomic, as in [`Store::install_from`].
    ///
    /// `timeline`'s `counter`, `parent` and `parent_index` are set here from this store's current
    /// timeline and applied index, so every node (all apply the same entries) records the same
    /// history even if the proposer's view was stale; its `id`, `reason` and `at_unix_ms` are
    /// kept. Applying at a position the store already reached is a no-op (a replay after a
    /// restart), returning the current meta.
    pub fn load_from(
        &self,
        source: &Path,
        position: LogPosition,
        membership_json: Option<String>,
        timeline: &TimelineRecord,
    ) -> Result<MetaState, StoreError> {
        let current = self.meta()?;
        if current.applied.is_some_and(|a| a.index >= position.index) {
            return Ok(current);
        }
        validate_database(source)?;
        let staging = self.staging_path();
        let copied = std::fs::copy(source, &staging).map_err(|e| StoreError::io(&staging, e));
        self.finish_load(
            copied.map(|_| ()),
            &staging,
            position,
            membership_json,
            timeline,
            &current,
        )
    }

    /// Restores the database from the chunks of restore `restore_id` (see
    /// [`Store::apply_restore_chunk`]) as the state at `position` on a new timeline, like
    /// [`Store::load_from`]: the chunks are assembled into the staging file, which must have
    /// `expected_size` bytes with sha256 `expected_sha256` (hex) and be a SQLite database;
    /// then it is stamped and swapped in atomically. If the assembled file fails a check, the
    /// database is left as it was, the chunks are dropped, and `Ok(Err(reason))` says why: the
    /// same outcome on every node, as every node holds the same chunks. A replay at a position
    /// the store already reached is a no-op.
    pub fn restore_from_chunks(
        &self,
        position: LogPosition,
        restore_id: &str,
        expected_size: u64,
        expected_sha256: &str,
        timeline: &TimelineRecord,
    ) -> Result<Result<MetaState, String>, StoreError> {
        let current = self.meta()?;
        if current.applied.is_some_and(|a| a.index >= position.index) {
            return Ok(Ok(current));
        }
        // Held until the swap: see `restore_lock`.
        let mut staging_lock = self.restore_lock();
        let digest = staging_lock.finish();
        let staging = self.staging_path();
        if let Some(done) = self.resume_restore_commit(position, restore_id, timeline, &current)? {
            return Ok(Ok(done));
        }
        // The refusal is recorded (the chunks dropped, the commit's position applied) before
        // the file goes: a replay then is a no-op, never a commit without its bytes.
        let refuse = |reason: String| -> Result<Result<MetaState, String>, StoreError> {
            self.abort_restore_locked(position, restore_id)?;
            let _ = std::fs::remove_file(&staging);
            Ok(Err(reason))
        };
        // An error leaves any moved file in place for the replay (see `resume_restore_commit`).
        let (size, sha256) = match self.take_restore_staging(restore_id, &staging, digest)? {
            Ok(received) => received,
            Err(reason) => return refuse(reason),
        };
        if size != expected_size || sha256 != expected_sha256 {
            return refuse(format!(
                "the received file has {size} bytes with sha256 {sha256}, the restore announced \
                 {expected_size} bytes with sha256 {expected_sha256}"
            ));
        }
        if let Err(e) = probe(&staging) {
            return refuse(format!(
                "the received file is not a usable SQLite database: {e}"
            ));
        }
        self.finish_restore(&staging, position, timeline, &current)
            .map(Ok)
    }

    /// The end of a restore's commit: the checked file at `installing` gets its meta rewritten
    /// and is swapped in. Unlike a load's, a failure leaves the file in place: the chunks' bytes
    /// exist nowhere else, and [`Store::resume_restore_commit`] finishes from it on replay.
    fn finish_restore(
        &self,
        installing: &Path,
        position: LogPosition,
        timeline: &TimelineRecord,
        current: &MetaState,
    ) -> Result<MetaState, StoreError> {
        stamp_for_install(installing, position, None, timeline, current)?;
        self.swap_in(installing, Some(position))
    }

    /// A commit of restore `restore_id` that stopped after its staging file was moved to
    /// `db.sqlite.installing` and before the swap (the process died, or a write failed) is
    /// finished from that file when the commit is applied again. `None`: there is nothing to
    /// resume (the staging file is in place), or the moved file was put back to be checked
    /// again from the start.
    fn resume_restore_commit(
        &self,
        position: LogPosition,
        restore_id: &str,
        timeline: &TimelineRecord,
        current: &MetaState,
    ) -> Result<Option<MetaState>, StoreError> {
        let installing = self.staging_path();
        let staging = self.restore_staging_path(restore_id);
        if staging.exists() || !installing.exists() {
            return Ok(None);
        }
        // Opening it read-write rolls back a meta rewrite that a crash interrupted.
        {
            let conn = Connection::open(&installing)?;
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
        }
        let rewritten = matches!(
            probe(&installing),
            Ok(Some(meta)) if meta.applied == Some(position)
        );
        if rewritten {
            tracing::info!(
                restore = %restore_id,
                index = position.index,
                "finishing a restore commit that stopped before its swap"
            );
            return self
                .finish_restore(&installing, position, timeline, current)
                .map(Some);
        }
        // Not rewritten yet: the bytes are the checked chunks; they are checked again.
        std::fs::rename(&installing, &staging).map_err(|e| StoreError::io(&staging, e))?;
        sync_parent_dir(&staging)?;
        Ok(None)
    }

    /// The second half of a load: `staging` (already filled when `prepared` is Ok) gets its
    /// meta table rewritten for `position`, the new timeline and the membership, is fsync'd
    /// and swapped in.
    fn finish_load(
        &self,
        prepared: Result<(), StoreError>,
        staging: &Path,
        position: LogPosition,
        membership_json: Option<String>,
        timeline: &TimelineRecord,
        current: &MetaState,
    ) -> Result<MetaState, StoreError> {
        let prepared = prepared
            .and_then(|_| stamp_for_install(staging, position, membership_json, timeline, current));
        if let Err(e) = prepared {
            for leftover in [staging.to_path_buf(), sidecar(staging, "-journal")] {
                let _ = std::fs::remove_file(leftover);
            }
            return Err(e);
        }
        self.swap_in(staging, Some(position))
    }

    /// Where a replacement database is prepared before it is swapped in.
    fn staging_path(&self) -> PathBuf {
        self.path.with_extension("sqlite.installing")
    }

    /// Makes the complete, fsync'd SQLite file at `staging` the database, atomically: under the
    /// exclusive gate (waiting for in-flight reads) the WAL is checkpointed, the connections are
    /// closed, `-wal`/`-shm` removed, `staging` renamed over the database and the directory
    /// fsync'd, then the writer reopens. `expected` is the position the new file must report.
    fn swap_in(
        &self,
        staging: &Path,
        expected: Option<LogPosition>,
    ) -> Result<MetaState, StoreError> {
        switch_to_wal(staging)?;
        let _exclusive = self.swap_gate.write().unwrap_or_else(|p| p.into_inner());
        let mut writer = self.writer();
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // Fold the WAL into the old file first: once the connections close, a stale WAL must
        // never be replayed onto the new file.
        writer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let old = std::mem::replace(&mut *writer, Connection::open_in_memory()?);
        drop(old);
        for suffix in ["-wal", "-shm"] {
            remove_if_present(&sidecar(&self.path, suffix))?;
        }
        std::fs::rename(staging, &self.path).map_err(|e| StoreError::io(&self.path, e))?;
        sync_parent_dir(&self.path)?;
        *writer = open_writer(&self.path, &self.options, self.writer_guard.clone())?;
        let meta = read_meta(&writer, &self.path)?;
        if meta.applied != expected {
            return Err(StoreError::CorruptMeta {
                path: self.path.clone(),
                detail: "installed file does not report the position it was validated at".into(),
            });
        }
        Ok(meta)
    }

    /// Size of the database file in bytes (without WAL).
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

/// Interrupts the statements of one connection once a deadline passes.
struct QueryWatchdog {
    done: std::sync::mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
}

impl QueryWatchdog {
    fn start(conn: &Connection, timeout: std::time::Duration) -> QueryWatchdog {
        let handle = conn.get_interrupt_handle();
        let fired = Arc::new(AtomicBool::new(false));
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let flag = fired.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(timeout)
            {
                flag.store(true, Ordering::SeqCst);
                handle.interrupt();
            }
        });
        QueryWatchdog { done, fired }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for QueryWatchdog {
    fn drop(&mut self) {
        let _ = self.done.send(());
    }
}

struct Reader {
    conn: Connection,
    guard: Arc<Guard>,
}

impl Reader {
    fn new(mut conn: Connection) -> Reader {
        let guard = Arc::new(Guard::default());
        guard.client_sql.store(true, Ordering::Relaxed);
        let hook_guard = guard.clone();
        let _ = conn.authorizer(Some(move |ctx: AuthContext<'_>| hook_guard.authorize(ctx)));
        Reader { conn, guard }
    }

    fn into_conn(mut self) -> Connection {
        let _ = self
            .conn
            .authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
        self.conn
    }
}

/// Reads the meta table of a database file without changing anything on disk. `Ok(None)` when
/// there is no file. Used by start-up classification and by `doctor`.
pub fn probe(path: &Path) -> Result<Option<MetaState>, StoreError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    if len == 0 {
        // SQLite would treat an empty file as a new database and delete its -wal on close,
        // even read-only: never open it.
        let wal = sidecar(path, "-wal");
        return match std::fs::metadata(&wal) {
            Ok(w) if w.len() > 0 => Err(StoreError::NotADatabase {
                path: path.to_path_buf(),
                detail: format!(
                    "the file is empty but {} holds {} bytes: the database was truncated",
                    wal.display(),
                    w.len()
                ),
            }),
            _ => Ok(None),
        };
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::NotADatabase {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let has_meta: bool =
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [META_TABLE],
            |r| r.get::<_, i64>(0),
        )
        .map_err(|e| StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })? > 0;
    if !has_meta {
        return Ok(Some(MetaState::default()));
    }
    read_meta(&conn, path).map(Some)
}

/// [`probe`], plus `PRAGMA quick_check` of every page: what start-up classification and
/// `doctor` use, so a database with damaged pages is reported instead of served. Reads the
/// whole file (about a second per GiB); changes nothing.
pub fn probe_checked(path: &Path) -> Result<Option<MetaState>, StoreError> {
    let Some(meta) = probe(path)? else {
        return Ok(None);
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::NotADatabase {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if check != "ok" {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: format!("quick_check failed: {check}"),
        });
    }
    Ok(Some(meta))
}

/// Checks that `path` is a complete SQLite database that passes `PRAGMA quick_check`, and
/// returns its meta (empty for a database raftlite never wrote).
pub fn validate_database(path: &Path) -> Result<MetaState, StoreError> {
    validate_with(path, "quick_check")
}

/// [`validate_database`] with the full `PRAGMA integrity_check` (also indexes against their
/// tables): what a restore requires before anything changes.
pub fn validate_database_fully(path: &Path) -> Result<MetaState, StoreError> {
    validate_with(path, "integrity_check")
}

fn validate_with(path: &Path, pragma: &str) -> Result<MetaState, StoreError> {
    let not_db = |detail: String| StoreError::NotADatabase {
        path: path.to_path_buf(),
        detail,
    };
    let mut header = [0u8; 16];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
        f.read_exact(&mut header)
            .map_err(|_| not_db("file is shorter than a SQLite header".into()))?;
    }
    if &header != b"SQLite format 3\0" {
        return Err(not_db("missing the SQLite header".into()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not_db(e.to_string()))?;
    let check: String = conn
        .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        .map_err(|e| not_db(e.to_string()))?;
    if check != "ok" {
        return Err(not_db(format!("{pragma} failed: {check}")));
    }
    drop(conn);
    probe(path)?.ok_or_else(|| not_db("file disappeared during validation".into()))
}

/// Prepares the database file at `path` (nobody has it open) to seed a new cluster whose log
/// starts after the data: the applied position is kept, the membership becomes
/// `membership_json`, chunks of an unfinished restore are dropped, the data-changed position is
/// set to the applied one, and `record` is appended to the timeline history as a child of the
/// current timeline at the applied index (counter and parent are set here). The data is
/// untouched. One transaction: a crash leaves the file as it was or fully prepared. Fails when
/// the database has no applied position (it was never written by raftlite).
pub fn reseed_database(
    path: &Path,
    membership_json: &str,
    record: &TimelineRecord,
) -> Result<MetaState, StoreError> {
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL); \
         DROP TABLE IF EXISTS {RESTORE_TABLE}"
    ))?;
    let before = read_meta(&tx, path)?;
    let Some(applied) = before.applied else {
        return Err(StoreError::Refused(format!(
            "{} records no applied log position, so it cannot seed a cluster",
            path.display()
        )));
    };
    let mut history = before.timeline_history.clone();
    history.push(child_timeline(record, &before));
    {
        let mut upsert = tx.prepare(&format!(
            "INSERT INTO {META_TABLE}(key, value) VALUES (?1, ?2) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        ))?;
        upsert.execute(params![META_MEMBERSHIP, membership_json])?;
        upsert.execute(params![META_TIMELINES, to_json(&history)?])?;
        upsert.execute(params![META_DATA_CHANGED, to_json(&applied)?])?;
    }
    let after = read_meta(&tx, path)?;
    tx.commit()?;
    drop(conn);
    Ok(after)
}

/// Rewrites the meta of `staging` (a file about to replace the database described by
/// `current`) for `position`, the new `timeline` as a child of the current one, and
/// `membership_json` (else the current membership), and fsyncs it.
fn stamp_for_install(
    staging: &Path,
    position: LogPosition,
    membership_json: Option<String>,
    timeline: &TimelineRecord,
    current: &MetaState,
) -> Result<(), StoreError> {
    let mut history = current.timeline_history.clone();
    history.push(child_timeline(timeline, current));
    let membership = membership_json.or_else(|| current.membership_json.clone());
    rewrite_meta(staging, position, membership.as_deref(), &history)?;
    sync_file(staging)
}

/// Replaces the `_raftlite_meta` table of the database at `path` (a staging copy nobody else
/// has open) with the given position, membership and timeline history, in one transaction, and
/// leaves the file in rollback-journal mode so it is complete on its own.
fn rewrite_meta(
    path: &Path,
    position: LogPosition,
    membership_json: Option<&str>,
    history: &[TimelineRecord],
) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {RESTORE_TABLE}; DROP TABLE IF EXISTS {META_TABLE}; \
         CREATE TABLE {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
    ))?;
    {
        let mut insert = tx.prepare(&format!(
            "INSERT INTO {META_TABLE}(key, value) VALUES (?1, ?2)"
        ))?;
        insert.execute(params![META_APPLIED, to_json(&position)?])?;
        if let Some(m) = membership_json {
            insert.execute(params![META_MEMBERSHIP, m])?;
        }
        insert.execute(params![META_TIMELINES, to_json(&history)?])?;
        insert.execute(params![META_DATA_CHANGED, to_json(&position)?])?;
    }
    tx.commit()?;
    conn.close().map_err(|(_, e)| StoreError::from(e))
}

/// Puts the database file at `path` (a staging copy nobody else has open, in rollback-journal
/// mode like every snapshot) into WAL mode and closes it, so that no `-wal`/`-shm` remains and
/// the file is durable. Done before the file takes the database's name: switching the mode
/// rewrites page 1 through a rollback journal, and a crash in that write under the database's
/// own name left a hot `db.sqlite-journal` that the read-only start-up probe cannot roll back
/// (the node then refused to start, calling the database damaged). Beside the staging file such
/// a journal is harmless: the staging file is rebuilt or resumed through SQLite, which rolls it
/// back.
fn switch_to_wal(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.close().map_err(|(_, e)| StoreError::from(e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: format!("could not switch it to WAL mode (SQLite answered {mode:?})"),
        });
    }
    for suffix in ["-wal", "-shm"] {
        remove_if_present(&sidecar(path, suffix))?;
    }
    sync_file(path)
}

/// Removes the `-journal`, `-wal` and `-shm` files of the database at `path`, if any.
fn remove_sidecars(path: &Path) -> Result<(), StoreError> {
    for suffix in ["-journal", "-wal", "-shm"] {
        remove_if_present(&sidecar(path, suffix))?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(path, e))
}

pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), StoreError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(parent, e))
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

fn in_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match f(conn).and_then(|v| conn.execute_batch("COMMIT").map(|_| v).map_err(Into::into)) {
        Ok(v) => Ok(v),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

fn write_applied(
    conn: &Connection,
    position: LogPosition,
    change: MetaChange<'_>,
) -> Result<(), StoreError> {
    let mut upsert = conn.prepare_cached(&format!(
        "INSERT INTO {META_TABLE}(key, value) VALUES (?1, ?2) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value"
    ))?;
    upsert.execute(params![META_APPLIED, to_json(&position)?])?;
    match change {
        MetaChange::None => {}
        MetaChange::Data => {
            upsert.execute(params![META_DATA_CHANGED, to_json(&position)?])?;
        }
        MetaChange::Membership(m) => {
            upsert.execute(params![META_MEMBERSHIP, m])?;
        }
        MetaChange::Timeline(record) => {
            let mut history = read_timelines(conn, Path::new(""))?;
            history.push(record.clone());
            upsert.execute(params![META_TIMELINES, to_json(&history)?])?;
            upsert.execute(params![META_DATA_CHANGED, to_json(&position)?])?;
        }
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Refused(format!("cannot encode meta: {e}")))
}

/// `record` as the next timeline after `current`'s: its counter, parent and parent index come
/// from the database itself (every node computes the same history), its id, reason and time
/// from the record.
fn child_timeline(record: &TimelineRecord, current: &MetaState) -> TimelineRecord {
    let mut record = record.clone();
    match current.timeline() {
        Some(parent) => {
            record.counter = parent.counter + 1;
            record.parent = Some(parent.id.clone());
            record.parent_index = Some(current.applied.map(|a| a.index).unwrap_or(0));
        }
        None => {
            record.counter = 1;
            record.parent = None;
            record.parent_index = None;
        }
    }
    record
}

fn meta_value(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT value FROM {META_TABLE} WHERE key = ?1"),
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

fn read_timelines(conn: &Connection, path: &Path) -> Result<Vec<TimelineRecord>, StoreError> {
    match meta_value(conn, META_TIMELINES)? {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(&json).map_err(|e| StoreError::CorruptMeta {
            path: path.to_path_buf(),
            detail: format!("timeline history: {e}"),
        }),
    }
}

fn read_meta(conn: &Connection, path: &Path) -> Result<MetaState, StoreError> {
    let applied = match meta_value(conn, META_APPLIED)? {
        None => None,
        Some(json) => Some(
            serde_json::from_str(&json).map_err(|e| StoreError::CorruptMeta {
                path: path.to_path_buf(),
                detail: format!("applied position: {e}"),
            })?,
        ),
    };
    let data_changed = match meta_value(conn, META_DATA_CHANGED)? {
        None => None,
        Some(json) => Some(
            serde_json::from_str(&json).map_err(|e| StoreError::CorruptMeta {
                path: path.to_path_buf(),
                detail: format!("data-changed position: {e}"),
            })?,
        ),
    };
    Ok(MetaState {
        applied,
        data_changed,
        membership_json: meta_value(conn, META_MEMBERSHIP)?,
        timeline_history: read_timelines(conn, path)?,
    })
}

/// Binds a statement's parameters as go-sqlite3 does for rqlite (rqlite+go-sqlite3 sqlite3.go,
/// `SQLiteConn.exec` and `SQLiteStmt.bind`): fewer values than the statement has parameters is
/// the error "not enough args to execute query: want N got M"; positional values past the
/// statement's parameters are left out; a named value binds every parameter of that name with
/// any of the sigils `:`, `@` and `$`, and is left out when there is none.
fn bind_params(stmt: &mut rusqlite::Statement<'_>, params: &Params) -> Result<(), String> {
    let expected = stmt.parameter_count();
    let given = match params {
        Params::None => 0,
        Params::Positional(values) => values.len(),
        Params::Named(pairs) => pairs.len(),
    };
    if given < expected {
        return Err(format!(
            "not enough args to execute query: want {expected} got {given}"
        ));
    }
    match params {
        Params::None => Ok(()),
        Params::Positional(values) => {
            for (i, v) in values.iter().take(expected).enumerate() {
                stmt.raw_bind_parameter(i + 1, SqlValue(v))
                    .map_err(|e| crate::results::error_message(&e))?;
            }
            Ok(())
        }
        Params::Named(pairs) => {
            for (name, v) in pairs {
                for sigil in [":", "@", "$"] {
                    if let Ok(Some(i)) = stmt.parameter_index(&format!("{sigil}{name}")) {
                        stmt.raw_bind_parameter(i, SqlValue(v))
                            .map_err(|e| crate::results::error_message(&e))?;
                    }
                }
            }
            Ok(())
        }
    }
}

struct SqlValue<'a>(&'a Value);

impl rusqlite::ToSql for SqlValue<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(match self.0 {
            Value::Null => Borrowed(ValueRef::Null),
            Value::Integer(i) => Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => Borrowed(ValueRef::Blob(b)),
            Value::Bool(b) => Borrowed(ValueRef::Integer(i64::from(*b))),
        })
    }
}

/// Starts a request from the counters of a fresh connection: `sqlite3_last_insert_rowid` 0 and
/// `sqlite3_changes` 0, so a request's results never depend on what ran before it on this
/// node (earlier requests, raftlite's own meta writes, a restart). The connection keeps both
/// values across a request's statements, as rqlite's does (see [`StatementResult::Execute`]).
fn reset_statement_counters(conn: &Connection) -> Result<(), StoreError> {
    // SAFETY: the handle belongs to `conn`, which is borrowed (and so open) for the call;
    // sqlite3_set_last_insert_rowid only stores the value in the connection.
    unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(conn.handle(), 0) };
    // An UPDATE that changes no row sets sqlite3_changes to 0 (there is no setter).
    conn.prepare_cached(&format!("UPDATE {META_TABLE} SET value = value WHERE 0"))?
        .execute([])?;
    Ok(())
}

/// A statement's error as rqlite reports it (SQLite's message alone, see
/// [`results::error_message`]), or the guard's reason when the guard refused it.
fn statement_error(guard: &Guard, e: rusqlite::Error) -> String {
    let sqlite = crate::results::error_message(&e);
    let plain = e.to_string();
    match guard.explain(e) {
        explained if explained == plain => sqlite,
        explained => explained,
    }
}

/// How many bytes of rows one query request may still collect. Each value is counted as its
/// JSON text would take at least (text plus quotes, a blob as base64, a number at its longest),
/// so the response stays near the limit and the rows in memory below a small multiple of it.
struct ResultBudget {
    limit: usize,
    used: std::cell::Cell<usize>,
}

impl ResultBudget {
    fn new(limit: usize) -> ResultBudget {
        ResultBudget {
            limit,
            used: std::cell::Cell::new(0),
        }
    }

    /// Counts a row; false once the total has passed the limit.
    fn take(&self, row: &[Value]) -> bool {
        let bytes: usize = row
            .iter()
            .map(|v| match v {
                Value::Null => 5,
                Value::Integer(_) => 21,
                Value::Real(_) => 25,
                Value::Text(t) => t.len() + 3,
                Value::Blob(b) => b.len().div_ceil(3) * 4 + 3,
                Value::Bool(_) => 5,
            })
            .sum::<usize>()
            + 3;
        let used = self.used.get().saturating_add(bytes);
        self.used.set(used);
        used <= self.limit
    }

    fn exceeded(&self) -> bool {
        self.used.get() > self.limit
    }
}

/// Runs every statement in `sql` (a string may hold several, separated by `;`), binding the
/// parameters to the first. Returns rows when a statement produces columns.
fn run_sql(
    conn: &Connection,
    statement: &Statement,
    guard: &Guard,
    read_only: bool,
    budget: Option<&ResultBudget>,
) -> StatementResult {
    let started = Instant::now();
    guard.client_sql.store(true, Ordering::Relaxed);
    let result = run_sql_inner(conn, statement, guard, read_only, started, budget);
    guard.client_sql.store(false, Ordering::Relaxed);
    result.unwrap_or_else(StatementResult::Error)
}

fn run_sql_inner(
    conn: &Connection,
    statement: &Statement,
    guard: &Guard,
    read_only: bool,
    started: Instant,
    budget: Option<&ResultBudget>,
) -> Result<StatementResult, String> {
    if statement.sql.trim().is_empty() {
        return Err("empty statement".to_string());
    }
    let mut batch = rusqlite::Batch::new(conn, &statement.sql);
    let mut last = None;
    let mut first = true;
    guard.seen.preparing();
    while let Some(mut stmt) = batch.next().map_err(|e| statement_error(guard, e))? {
        let shown = guard.seen.prepared(&stmt)?;
        if first {
            bind_params(&mut stmt, &statement.params)?;
            first = false;
        } else if stmt.parameter_count() > 0 {
            return Err("parameters can only be bound to the first statement of a string".into());
        }
        if read_only
            && !stmt.readonly()
            && !stmt
                .expanded_sql()
                .is_some_and(|sql| is_pragma_value_read(&sql))
        {
            return Err("attempt to change database via query operation".to_string());
        }
        let column_count = stmt.column_count();
        if column_count > 0 {
            let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
            // go-sqlite3 converts by the declared type in lower case; rqlite reports it as
            // `types` and fills the empty ones from the first row (see `results.rs`).
            let decls: Vec<String> = stmt
                .columns()
                .map(|c| c.decl_type().unwrap_or("").to_lowercase())
                .collect();
            let mut types = decls.clone();
            let mut values = Vec::new();
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().map_err(|e| statement_error(guard, e))? {
                let mut out = Vec::with_capacity(column_count);
                for i in 0..column_count {
                    let v = row
                        .get_ref(i)
                        .map_err(|e| crate::results::error_message(&e))?;
                    out.push(crate::results::column_value(v, &decls[i], &types[i])?);
                }
                // A row hidden from the client (raftlite's own schema objects) must not
                // decide the column types it sees.
                if !shown.shows(&out) {
                    continue;
                }
                if values.is_empty() {
                    crate::results::fill_empty_types(&mut types, &out);
                }
                if let Some(budget) = budget {
                    if !budget.take(&out) {
                        return Err(format!(
                            "the results are larger than {} bytes; the query was stopped",
                            budget.limit
                        ));
                    }
                }
                values.push(out);
            }
            last = Some(StatementResult::Rows(Rows {
                columns,
                types,
                values,
                time_secs: 0.0,
            }));
        } else {
            stmt.raw_execute().map_err(|e| statement_error(guard, e))?;
            last = None;
        }
        guard.seen.preparing();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(match last {
        Some(StatementResult::Rows(mut rows)) => {
            rows.time_secs = elapsed;
            StatementResult::Rows(rows)
        }
        // What go-sqlite3 reads right after stepping the statement (`_sqlite3_step_row_internal`)
        // and rqlite reports: the connection's values, whatever statement last set them.
        _ => StatementResult::Execute {
            last_insert_id: conn.last_insert_rowid(),
            rows_affected: conn.changes(),
            time_secs: elapsed,
        },
    })
}

/// `PRAGMA [schema.]name` with no value and no argument: it only reports a setting, but SQLite
/// does not mark some of these read-only (`PRAGMA journal_mode`, for one, could switch modes when
/// given a value). rqlite answers them from its read-only connection, and pyrqlite sends every
/// PRAGMA as a query, so the read path lets them through; the reader connections are opened
/// read-only, so nothing they run can change the database.
fn is_pragma_value_read(sql: &str) -> bool {
    let mut rest = skip_blanks_and_comments(sql);
    let Some(keyword) = rest.get(..6) else {
        return false;
    };
    if !keyword.eq_ignore_ascii_case("pragma") {
        return false;
    }
    rest = &rest[6..];
    if !rest.starts_with(|c: char| c.is_whitespace() || c == '/' || c == '-') {
        return false;
    }
    rest = skip_blanks_and_comments(rest);
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len());
    if name_len == 0 {
        return false;
    }
    let tail = skip_blanks_and_comments(&rest[name_len..]);
    let tail = tail.strip_prefix(';').unwrap_or(tail);
    skip_blanks_and_comments(tail).is_empty()
}

fn skip_blanks_and_comments(mut sql: &str) -> &str {
    loop {
        let trimmed = sql.trim_start();
        if let Some(after) = trimmed.strip_prefix("--") {
            sql = after.find('\n').map_or("", |i| &after[i + 1..]);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            sql = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            return trimmed;
        }
    }
}

fn execute_statement(conn: &Connection, statement: &Statement, guard: &Guard) -> StatementResult {
    run_sql(conn, statement, guard, false, None)
}

fn query_statement(
    conn: &Connection,
    statement: &Statement,
    guard: &Guard,
    budget: Option<&ResultBudget>,
) -> StatementResult {
    // Schema reads see the user's objects only (see `internal_schema`).
    let result = internal_schema::query_hidden(
        statement,
        || {
            guard.client_sql.store(false, Ordering::Relaxed);
            let created = internal_schema::create_views(conn);
            guard.client_sql.store(true, Ordering::Relaxed);
            created
        },
        |s| run_sql(conn, s, guard, true, budget),
        || !budget.is_some_and(|b| b.exceeded()),
    );
    // Keep the guard armed on pooled readers: every statement there comes from a client.
    guard.client_sql.store(true, Ordering::Relaxed);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shared with the tests of `engine/internal_schema.rs`.
    pub(super) fn pos(index: u64) -> LogPosition {
        LogPosition {
            term: 1,
            leader_node: 1,
            index,
        }
    }

    pub(super) const T: EntryTime = EntryTime {
        at_unix_ms: 1_700_000_000_000,
        seed: 7,
    };

    fn req(sqls: &[&str], transaction: bool) -> WriteRequest {
        WriteRequest {
            statements: sqls.iter().map(|s| Statement::new(*s)).collect(),
            transaction,
        }
    }

    fn open(dir: &Path) -> Store {
        Store::open(&dir.join("db.sqlite"), StoreOptions::default()).unwrap()
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A standalone SQLite file with `rows` rows in table `r`, as bytes.
    fn source_file(dir: &Path, rows: i64) -> Vec<u8> {
        let path = dir.join(format!("source-{rows}.sqlite"));
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE r(id INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        for i in 0..rows {
            conn.execute("INSERT INTO r(id, v) VALUES (?1, randomblob(3000))", [i])
                .unwrap();
        }
        drop(conn);
        std::fs::read(&path).unwrap()
    }

    /// A store on timeline "t1" with table `old` holding one row, at index 3.
    fn with_old_data(dir: &Path) -> Store {
        let store = open(dir);
        store.apply_init_timeline(pos(1), &timeline("t1")).unwrap();
        store
            .apply_write(
                pos(2),
                T,
                &[req(
                    &["CREATE TABLE old(x)", "INSERT INTO old VALUES (1)"],
                    false,
                )],
            )
            .unwrap();
        store.apply_membership(pos(3), None).unwrap();
        store
    }

    #[test]
    fn a_query_stops_once_its_results_pass_the_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        store
            .apply_write(
                pos(4),
                T,
                &[req(
                    &["CREATE TABLE big(b TEXT)", "INSERT INTO big SELECT printf('%.1000c', 'x') FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) SELECT i FROM n)"],
                    false,
                )],
            )
            .unwrap();
        let select = [Statement::new("SELECT b FROM big")];
        match store.query_within(&select, None, Some(50_000)) {
            Err(StoreError::ResultTooLarge { limit }) => assert_eq!(limit, 50_000),
            other => panic!("expected ResultTooLarge, got {other:?}"),
        }
        // Two statements share one budget.
        let twice = [select[0].clone(), select[0].clone()];
        assert!(store.query_within(&select, None, Some(150_000)).is_ok());
        assert!(matches!(
            store.query_within(&twice, None, Some(150_000)),
            Err(StoreError::ResultTooLarge { .. })
        ));
        // The reader goes back to the pool in a usable state.
        let rows = store
            .query(&[Statement::new("SELECT COUNT(*) FROM big")])
            .unwrap();
        assert!(
            matches!(&rows[0], StatementResult::Rows(r) if r.values == vec![vec![Value::Integer(100)]])
        );
    }

    #[test]
    fn a_pinned_file_stays_the_snapshot_while_writes_and_checkpoints_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        for i in 0..50u64 {
            store
                .apply_write(
                    pos(10 + i),
                    T,
                    &[req(&["INSERT INTO old VALUES (randomblob(4000))"], false)],
                )
                .unwrap();
        }
        let pinned = store.pin_consistent_file().unwrap().unwrap();
        assert_eq!(pinned.meta.applied.map(|p| p.index), Some(59));
        // Far more than the auto-checkpoint threshold (1000 pages) while the pin is held.
        for i in 0..400u64 {
            store
                .apply_write(
                    pos(100 + i),
                    T,
                    &[req(&["INSERT INTO old VALUES (randomblob(16000))"], false)],
                )
                .unwrap();
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut pinned.file.try_clone().unwrap(), &mut bytes).unwrap();
        drop(pinned);
        let copy = dir.path().join("pinned-copy.sqlite");
        std::fs::write(&copy, &bytes).unwrap();
        let meta = validate_database_fully(&copy).unwrap();
        assert_eq!(meta.applied.map(|p| p.index), Some(59));
        let conn = Connection::open(&copy).unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM old", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 51);
        // After the pin, the live database has everything.
        assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 451);
    }

    #[test]
    fn data_changed_moves_with_writes_and_timelines_not_with_blanks() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        let meta = store.meta().unwrap();
        assert_eq!(meta.applied.map(|p| p.index), Some(3));
        assert_eq!(meta.data_changed_index(), 2);
        store.apply_membership(pos(4), Some("{}")).unwrap();
        assert_eq!(store.meta().unwrap().data_changed_index(), 2);
    }

    #[test]
    fn chunks_assemble_into_a_restore_on_a_new_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        let bytes = source_file(dir.path(), 50);
        let chunk = 32 * 1024;
        for (i, part) in bytes.chunks(chunk).enumerate() {
            let index = 4 + i as u64;
            store
                .apply_restore_chunk(pos(index), "rid", (i * chunk) as u64, part)
                .unwrap();
            // Until the commit, readers see the old data only.
            assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 1);
        }
        let (rid, chunks, held) = store.pending_restore().unwrap().unwrap();
        assert_eq!((rid.as_str(), held), ("rid", bytes.len() as u64));
        assert_eq!(chunks as usize, bytes.len().div_ceil(chunk));
        let commit = pos(100);
        let meta = store
            .restore_from_chunks(
                commit,
                "rid",
                bytes.len() as u64,
                &sha256_hex(&bytes),
                &timeline("t2"),
            )
            .unwrap()
            .unwrap();
        assert_eq!(meta.applied, Some(commit));
        assert_eq!(meta.data_changed_index(), 100);
        let t = meta.timeline().unwrap();
        assert_eq!((t.id.as_str(), t.counter), ("t2", 2));
        assert_eq!(t.parent.as_deref(), Some("t1"));
        assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 50);
        assert!(matches!(
            store.query(&[Statement::new("SELECT * FROM old")]).unwrap()[0],
            StatementResult::Error(_)
        ));
        assert_eq!(store.pending_restore().unwrap(), None);
        // A replay of the commit changes nothing.
        let again = store
            .restore_from_chunks(commit, "rid", 0, "x", &timeline("t3"))
            .unwrap()
            .unwrap();
        assert_eq!(again.timeline().unwrap().id, "t2");
        // The source bytes were never touched.
        assert_eq!(
            std::fs::read(dir.path().join("source-50.sqlite")).unwrap(),
            bytes
        );
    }

    #[test]
    fn a_bad_or_incomplete_restore_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        let bytes = source_file(dir.path(), 20);
        let half = bytes.len() / 2;
        // A gap: only the second half arrived.
        store
            .apply_restore_chunk(pos(4), "gap", half as u64, &bytes[half..])
            .unwrap();
        let refused = commit_restore(&store, 5, "gap", &bytes)
            .unwrap()
            .unwrap_err();
        assert!(refused.contains("missing bytes 0.."), "{refused}");
        // Wrong hash.
        store
            .apply_restore_chunk(pos(6), "hash", 0, &bytes)
            .unwrap();
        let refused = store
            .restore_from_chunks(
                pos(7),
                "hash",
                bytes.len() as u64,
                &"0".repeat(64),
                &timeline("t2"),
            )
            .unwrap()
            .unwrap_err();
        assert!(refused.contains("sha256"), "{refused}");
        // Not SQLite, though size and hash match.
        let junk = vec![7u8; 5000];
        store.apply_restore_chunk(pos(8), "junk", 0, &junk).unwrap();
        let refused = store
            .restore_from_chunks(
                pos(9),
                "junk",
                junk.len() as u64,
                &sha256_hex(&junk),
                &timeline("t2"),
            )
            .unwrap()
            .unwrap_err();
        assert!(refused.contains("SQLite"), "{refused}");
        let meta = store.meta().unwrap();
        assert_eq!(meta.applied.map(|p| p.index), Some(9));
        assert_eq!(meta.timeline().unwrap().id, "t1");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 1);
        assert_eq!(store.pending_restore().unwrap(), None);
    }

    #[test]
    fn a_newer_restore_supersedes_abandoned_chunks_and_snapshots_carry_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        let bytes = source_file(dir.path(), 10);
        store
            .apply_restore_chunk(pos(4), "old-one", 0, b"abandoned")
            .unwrap();
        store
            .apply_restore_chunk(pos(5), "new", 0, &bytes[..1000])
            .unwrap();
        assert_eq!(
            store.pending_restore().unwrap().map(|(id, _, _)| id),
            Some("new".to_string())
        );
        // A snapshot taken mid-restore holds the chunks: a node installing it can finish.
        let snap = dir.path().join("snap.sqlite");
        store.snapshot_to(&snap).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other = open(other_dir.path());
        other.install_from(&snap).unwrap();
        other
            .apply_restore_chunk(pos(6), "new", 1000, &bytes[1000..])
            .unwrap();
        let meta = other
            .restore_from_chunks(
                pos(7),
                "new",
                bytes.len() as u64,
                &sha256_hex(&bytes),
                &timeline("t2"),
            )
            .unwrap()
            .unwrap();
        assert_eq!(meta.timeline().unwrap().id, "t2");
        assert_eq!(count(&other, "SELECT COUNT(*) FROM r"), 10);
        // Clients cannot touch the chunks.
        let refused = store
            .apply_write(pos(8), T, &[req(&["DELETE FROM _raftlite_restore"], false)])
            .unwrap();
        assert!(
            matches!(refused[0][0], StatementResult::Error(_)),
            "{:?}",
            refused[0][0]
        );
        store.apply_restore_abort(pos(9), "new").unwrap();
        assert_eq!(store.pending_restore().unwrap(), None);
    }

    /// Applies the commit of restore `id` at `index`, announcing `bytes` as the file, on
    /// timeline t2.
    fn commit_restore(
        store: &Store,
        index: u64,
        id: &str,
        bytes: &[u8],
    ) -> Result<Result<MetaState, String>, StoreError> {
        store.restore_from_chunks(
            pos(index),
            id,
            bytes.len() as u64,
            &sha256_hex(bytes),
            &timeline("t2"),
        )
    }

    /// Names of the restore staging files beside the database in `dir`.
    fn staging_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("db.sqlite.restore-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn chunk_bytes_live_in_one_staging_file_that_the_commit_or_an_abort_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        let bytes = source_file(dir.path(), 12);
        let half = bytes.len() / 2;
        store
            .apply_restore_chunk(pos(4), "first", 0, &bytes[..half])
            .unwrap();
        assert_eq!(staging_files(dir.path()).len(), 1);
        // A newer restore supersedes the abandoned one: its file goes with its rows.
        store
            .apply_restore_chunk(pos(5), "second", 0, &bytes[..half])
            .unwrap();
        let second = staging_files(dir.path());
        assert_eq!(second.len(), 1);
        // The rows hold no bytes (read as raftlite does: clients cannot name the table).
        let with_data: i64 = store
            .writer()
            .query_row(
                "SELECT COUNT(*) FROM _raftlite_restore WHERE data IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(with_data, 0);
        // A replayed chunk (its position already applied) writes nothing.
        store
            .apply_restore_chunk(pos(5), "third", 0, &bytes[..half])
            .unwrap();
        assert_eq!(staging_files(dir.path()), second);
        store.apply_restore_abort(pos(6), "second").unwrap();
        assert!(staging_files(dir.path()).is_empty());
        // A file left by a crash between the row and the cleanup goes at the next start.
        store
            .apply_restore_chunk(pos(7), "fourth", 0, &bytes[..half])
            .unwrap();
        std::fs::write(dir.path().join("db.sqlite.restore-leftover"), b"x").unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(staging_files(dir.path()).len(), 1);
        store
            .apply_restore_chunk(pos(8), "fourth", half as u64, &bytes[half..])
            .unwrap();
        commit_restore(&store, 9, "fourth", &bytes)
            .unwrap()
            .unwrap();
        assert!(staging_files(dir.path()).is_empty());
        assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 12);
    }

    #[test]
    fn snapshots_taken_while_chunks_arrive_and_commit_always_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(with_old_data(dir.path()));
        let bytes = source_file(dir.path(), 200);
        let chunk = 16 * 1024;
        let done = Arc::new(AtomicBool::new(false));
        let snapshots = {
            let (store, done, dir) = (store.clone(), done.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                let mut taken = 0;
                while !done.load(Ordering::SeqCst) {
                    store.snapshot_to(&dir.join("snap.sqlite")).unwrap();
                    taken += 1;
                }
                taken
            })
        };
        for (i, part) in bytes.chunks(chunk).enumerate() {
            store
                .apply_restore_chunk(pos(4 + i as u64), "rid", (i * chunk) as u64, part)
                .unwrap();
        }
        // The commit swaps the file while snapshots keep being taken.
        commit_restore(&store, 1000, "rid", &bytes)
            .unwrap()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        done.store(true, Ordering::SeqCst);
        assert!(snapshots.join().unwrap() > 0);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 200);
    }

    #[test]
    fn a_commit_cut_short_before_its_swap_finishes_when_applied_again() {
        for rewritten in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = with_old_data(dir.path());
            let bytes = source_file(dir.path(), 30);
            store.apply_restore_chunk(pos(4), "rid", 0, &bytes).unwrap();
            // The commit got as far as moving the staging file (and maybe rewriting its meta),
            // then the process died.
            let installing = store.staging_path();
            store
                .take_restore_staging("rid", &installing, None)
                .unwrap()
                .unwrap();
            if rewritten {
                let current = store.meta().unwrap();
                stamp_for_install(&installing, pos(5), None, &timeline("t2"), &current).unwrap();
            }
            drop(store);
            let store = open(dir.path());
            let meta = commit_restore(&store, 5, "rid", &bytes).unwrap().unwrap();
            assert_eq!(meta.applied, Some(pos(5)), "rewritten: {rewritten}");
            let t = meta.timeline().unwrap();
            assert_eq!((t.id.as_str(), t.counter), ("t2", 2));
            assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 30);
            assert!(!installing.exists());
            assert!(staging_files(dir.path()).is_empty());
        }
    }

    #[test]
    fn chunks_hashed_as_they_arrive_or_read_back_give_the_same_decision() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = source_file(dir.path(), 40);
        let half = bytes.len() / 2;
        // In order, in one process: hashed as applied, the file is not read back. Out of
        // order, or across a restart: read back. Each path accepts the right file...
        for (case, order) in [("in order", [0, 1]), ("out of order", [1, 0])] {
            let dir = tempfile::tempdir().unwrap();
            let store = with_old_data(dir.path());
            for (i, part) in order.into_iter().enumerate() {
                let (offset, data) = if part == 0 {
                    (0, &bytes[..half])
                } else {
                    (half as u64, &bytes[half..])
                };
                store
                    .apply_restore_chunk(pos(4 + i as u64), "rid", offset, data)
                    .unwrap();
            }
            let meta = commit_restore(&store, 6, "rid", &bytes).unwrap().unwrap();
            assert_eq!(meta.timeline().unwrap().id, "t2", "{case}");
            assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 40, "{case}");
        }
        // ...and refuses a commit that announces another file.
        for restart in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = with_old_data(dir.path());
            store.apply_restore_chunk(pos(4), "rid", 0, &bytes).unwrap();
            if restart {
                drop(store);
                store = open(dir.path());
            }
            let mut other = bytes.clone();
            other[100] ^= 1;
            let refused = commit_restore(&store, 5, "rid", &other).unwrap();
            assert!(
                refused.unwrap_err().contains("sha256"),
                "restart: {restart}"
            );
            assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 1);
        }
        // The leader's staging file, seeded with the upload: the chunks' bytes are already
        // there and are not written again.
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        let upload = dir.path().join("upload");
        std::fs::write(&upload, &bytes).unwrap();
        assert!(store.seed_restore_staging("rid", &upload));
        store
            .apply_restore_chunk(pos(4), "rid", 0, &bytes[..half])
            .unwrap();
        store
            .apply_restore_chunk(pos(5), "rid", half as u64, &bytes[half..])
            .unwrap();
        commit_restore(&store, 6, "rid", &bytes).unwrap().unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 40);
    }

    #[test]
    fn a_damaged_staging_file_stops_the_node_instead_of_refusing_differently() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        let bytes = source_file(dir.path(), 8);
        store.apply_restore_chunk(pos(4), "rid", 0, &bytes).unwrap();
        let staging = dir.path().join(&staging_files(dir.path())[0]);
        let mut damaged = std::fs::read(&staging).unwrap();
        damaged[200] ^= 0xff;
        std::fs::write(&staging, &damaged).unwrap();
        // What a disk that loses synced bytes does shows after a restart (before one, the page
        // cache still holds what was written): the commit then reads the file back.
        drop(store);
        let store = open(dir.path());
        let err = commit_restore(&store, 5, "rid", &bytes).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        // Nothing changed: the old data, the old timeline, the commit not applied.
        let meta = store.meta().unwrap();
        assert_eq!(meta.applied.map(|p| p.index), Some(4));
        assert_eq!(meta.timeline().unwrap().id, "t1");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 1);
        // A snapshot refuses to carry the damaged bytes on, too.
        let err = store
            .snapshot_to(&dir.path().join("snap.sqlite"))
            .unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn applied_position_is_stored_with_the_data_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(store.meta().unwrap().applied, None);
        let r = store
            .apply_write(
                pos(3),
                T,
                &[req(
                    &[
                        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                        "INSERT INTO t(v) VALUES ('a')",
                    ],
                    false,
                )],
            )
            .unwrap();
        assert_eq!(
            r[0][1],
            StatementResult::Execute {
                last_insert_id: 1,
                rows_affected: 1,
                time_secs: match &r[0][1] {
                    StatementResult::Execute { time_secs, .. } => *time_secs,
                    _ => 0.0,
                }
            }
        );
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.meta().unwrap().applied, Some(pos(3)));
        assert_eq!(
            probe(&dir.path().join("db.sqlite"))
                .unwrap()
                .unwrap()
                .applied,
            Some(pos(3))
        );
    }

    #[test]
    fn transaction_request_rolls_back_on_first_error_and_others_are_unaffected() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .apply_write(
                pos(1),
                T,
                &[req(&["CREATE TABLE t(id INTEGER PRIMARY KEY)"], false)],
            )
            .unwrap();
        let results = store
            .apply_write(
                pos(2),
                T,
                &[
                    req(
                        &[
                            "INSERT INTO t VALUES (1)",
                            "INSERT INTO nope VALUES (1)",
                            "INSERT INTO t VALUES (2)",
                        ],
                        true,
                    ),
                    req(
                        &[
                            "INSERT INTO t VALUES (10)",
                            "INSERT INTO nope VALUES (1)",
                            "INSERT INTO t VALUES (11)",
                        ],
                        false,
                    ),
                ],
            )
            .unwrap();
        assert_eq!(results[0].len(), 2, "transaction stops at the first error");
        assert!(matches!(results[0][1], StatementResult::Error(_)));
        assert_eq!(results[1].len(), 3);
        let rows = store
            .query(&[Statement::new("SELECT id FROM t ORDER BY id")])
            .unwrap();
        match &rows[0] {
            StatementResult::Rows(r) => assert_eq!(
                r.values,
                vec![vec![Value::Integer(10)], vec![Value::Integer(11)]]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transaction_control_and_meta_writes_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let r = store
            .apply_write(
                pos(1),
                T,
                &[req(
                    &["BEGIN", "COMMIT", "DELETE FROM _raftlite_meta"],
                    false,
                )],
            )
            .unwrap();
        for result in &r[0] {
            match result {
                StatementResult::Error(e) => assert!(
                    e.contains("not allowed") || e == "no such table: _raftlite_meta",
                    "{e}"
                ),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(store.meta().unwrap().applied, Some(pos(1)));
    }

    #[test]
    fn pragmas_that_would_change_the_log_connections_are_refused_wherever_they_hide() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let hidden = [
            "SELECT 1; PRAGMA synchronous=OFF",
            "/* note */ PRAGMA query_only = 1",
            "-- x\nPRAGMA main.journal_mode=DELETE",
            "SELECT 1; PRAGMA journal_mode(MEMORY)",
            "SELECT 1; pragma WAL_AUTOCHECKPOINT=0",
            "SELECT 1; PRAGMA wal_checkpoint",
        ];
        let r = store
            .apply_write(pos(1), T, &[req(&hidden, false)])
            .unwrap();
        for (sql, result) in hidden.iter().zip(&r[0]) {
            match result {
                StatementResult::Error(e) => {
                    assert!(e.starts_with("disallowed pragma"), "{sql}: {e}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        let conn = store.writer();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "synchronous stays NORMAL");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // Reading them, and other pragmas, still works.
        let r = store
            .apply_write(
                pos(2),
                T,
                &[req(
                    &[
                        "PRAGMA journal_mode",
                        "PRAGMA synchronous",
                        "PRAGMA foreign_keys=ON",
                    ],
                    false,
                )],
            )
            .unwrap();
        assert!(
            r[0].iter().all(|r| !matches!(r, StatementResult::Error(_))),
            "{r:?}"
        );
    }

    #[test]
    fn or_rollback_request_is_answered_with_an_error_and_the_rest_of_the_entry_applies() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .apply_write(
                pos(1),
                T,
                &[req(
                    &[
                        "CREATE TABLE t(id INTEGER PRIMARY KEY)",
                        "INSERT INTO t VALUES (1)",
                    ],
                    false,
                )],
            )
            .unwrap();
        let r = store
            .apply_write(
                pos(2),
                T,
                &[
                    req(&["INSERT INTO t VALUES (2)"], false),
                    req(&["INSERT OR ROLLBACK INTO t VALUES (1)"], false),
                    req(&["INSERT INTO t VALUES (3)"], false),
                ],
            )
            .unwrap();
        assert!(matches!(r[1][0], StatementResult::Error(_)));
        let rows = store
            .query(&[Statement::new("SELECT count(*) FROM t")])
            .unwrap();
        match &rows[0] {
            StatementResult::Rows(r) => assert_eq!(r.values, vec![vec![Value::Integer(3)]]),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.meta().unwrap().applied, Some(pos(2)));
    }

    #[test]
    fn params_bind_positional_and_named_and_queries_report_types() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let r = store
            .apply_write(
                pos(1),
                T,
                &[WriteRequest {
                    statements: vec![
                        Statement::new("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, b BLOB)"),
                        Statement::with_params(
                            "INSERT INTO t(name, b) VALUES (?, ?)",
                            vec![Value::Text("x".into()), Value::Blob(vec![1, 2])],
                        ),
                        Statement {
                            sql: "INSERT INTO t(name) VALUES (:name)".into(),
                            params: Params::Named(vec![("name".into(), Value::Text("y".into()))]),
                        },
                        Statement::with_params("INSERT INTO t(name) VALUES (?)", vec![]),
                    ],
                    transaction: false,
                }],
            )
            .unwrap();
        assert_eq!(
            r[0][3],
            StatementResult::Error("not enough args to execute query: want 1 got 0".into())
        );
        let q = store
            .query(&[Statement::new("SELECT id, name, b, 1+1 FROM t ORDER BY id")])
            .unwrap();
        match &q[0] {
            StatementResult::Rows(rows) => {
                assert_eq!(rows.columns, vec!["id", "name", "b", "1+1"]);
                // rqlite's populateEmptyTypes: the expression's type from the first row.
                assert_eq!(rows.types, vec!["integer", "text", "blob", "integer"]);
                assert_eq!(rows.values[0][2], Value::Blob(vec![1, 2]));
                assert_eq!(rows.values[1][1], Value::Text("y".into()));
            }
            other => panic!("{other:?}"),
        }
        let refused = store
            .query(&[Statement::new("INSERT INTO t(name) VALUES ('z')")])
            .unwrap();
        assert!(matches!(&refused[0], StatementResult::Error(_)));
    }

    fn exec(last_insert_id: i64, rows_affected: u64) -> StatementResult {
        StatementResult::Execute {
            last_insert_id,
            rows_affected,
            time_secs: 0.0,
        }
    }

    fn without_times(results: Vec<Vec<StatementResult>>) -> Vec<Vec<StatementResult>> {
        results
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|s| match s {
                        StatementResult::Execute {
                            last_insert_id,
                            rows_affected,
                            ..
                        } => exec(last_insert_id, rows_affected),
                        StatementResult::Rows(rows) => StatementResult::Rows(Rows {
                            time_secs: 0.0,
                            ..rows
                        }),
                        other => other,
                    })
                    .collect()
            })
            .collect()
    }

    /// rqlite's ExecuteResult is go-sqlite3's SQLiteResult, read right after the step
    /// (`_sqlite3_step_row_internal` in rqlite+go-sqlite3 sqlite3.go; db/db.go
    /// executeStmtWithConn): sqlite3_last_insert_rowid and sqlite3_changes of the connection.
    /// Statements that are no INSERT/UPDATE/DELETE leave both as they were; each request here
    /// starts from a fresh connection's 0 and 0, on every node and after a restart.
    #[test]
    fn execute_results_are_the_connections_rowid_and_changes() {
        let entries: Vec<Vec<WriteRequest>> = vec![
            vec![req(
                &[
                    "CREATE TABLE t(id INTEGER PRIMARY KEY, x)",
                    "CREATE TABLE log(y)",
                    "CREATE TRIGGER tr AFTER UPDATE ON t BEGIN \
                     INSERT INTO log VALUES (1); INSERT INTO log VALUES (2); END",
                    "INSERT INTO t VALUES (5, 'a')",
                    "INSERT INTO t VALUES (6, 'b')",
                ],
                false,
            )],
            vec![
                // The first statement of a request: a fresh connection's values.
                req(&["CREATE TABLE u(z)"], false),
                req(
                    &[
                        // One row updated; the trigger's two inserts count neither as
                        // changes nor as the last rowid.
                        "UPDATE t SET x = 'c' WHERE id = 5",
                        // DDL keeps the previous statement's values.
                        "DROP TABLE u",
                        "DELETE FROM t WHERE id = 6",
                        // The same rowid again is still reported.
                        "INSERT INTO t VALUES (6, 'd')",
                        "UPDATE t SET x = x WHERE 0",
                    ],
                    false,
                ),
            ],
        ];
        let want = [
            vec![vec![
                exec(0, 0),
                exec(0, 0),
                exec(0, 0),
                exec(5, 1),
                exec(6, 1),
            ]],
            vec![
                vec![exec(0, 0)],
                vec![exec(0, 1), exec(0, 1), exec(0, 1), exec(6, 1), exec(6, 0)],
            ],
        ];
        let run = |store: &Store, i: usize| {
            without_times(
                store
                    .apply_write(pos(i as u64 + 1), T, &entries[i])
                    .unwrap(),
            )
        };
        // Two nodes applying the same entries, and one that restarts between them.
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let a = open(dirs[0].path());
        let b = open(dirs[1].path());
        let c = open(dirs[2].path());
        for (i, want) in want.iter().enumerate() {
            assert_eq!(&run(&a, i), want, "entry {i} on a");
            assert_eq!(&run(&b, i), want, "entry {i} on b");
        }
        assert_eq!(run(&c, 0), want[0]);
        drop(c);
        let c = open(dirs[2].path());
        assert_eq!(run(&c, 1), want[1]);
    }

    /// go-sqlite3 `SQLiteConn.exec` takes as many values as the statement has parameters and
    /// `SQLiteStmt.bind` skips names it does not find (rqlite+go-sqlite3 sqlite3.go).
    #[test]
    fn extra_and_unknown_parameters_are_left_out_as_in_go_sqlite3() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let r = store
            .apply_write(
                pos(1),
                T,
                &[WriteRequest {
                    statements: vec![
                        Statement::new("CREATE TABLE t(a, b)"),
                        Statement::with_params(
                            "INSERT INTO t VALUES (?, 2)",
                            vec![Value::Integer(1), Value::Integer(9)],
                        ),
                        Statement {
                            sql: "INSERT INTO t VALUES (:a, $a)".into(),
                            params: Params::Named(vec![
                                ("a".into(), Value::Integer(3)),
                                ("zz".into(), Value::Integer(9)),
                            ]),
                        },
                        Statement::new("INSERT INTO t VALUES (?, ?)"),
                    ],
                    transaction: false,
                }],
            )
            .unwrap();
        assert_eq!(
            r[0][3],
            StatementResult::Error("not enough args to execute query: want 2 got 0".into())
        );
        let q = store
            .query(&[Statement::new("SELECT a, b FROM t ORDER BY rowid")])
            .unwrap();
        match &q[0] {
            StatementResult::Rows(rows) => assert_eq!(
                rows.values,
                vec![
                    vec![Value::Integer(1), Value::Integer(2)],
                    vec![Value::Integer(3), Value::Integer(3)],
                ]
            ),
            other => panic!("{other:?}"),
        }
    }

    /// go-sqlite3's Error.Error() is sqlite3_errmsg (rqlite+go-sqlite3 error.go, lastError in
    /// sqlite3.go), for prepare and step errors alike.
    #[test]
    fn statement_errors_are_sqlites_message_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let r = store
            .apply_write(
                pos(1),
                T,
                &[req(
                    &[
                        "CREATE TABLE t(x UNIQUE NOT NULL)",
                        "INSERT INTO t VALUES (1)",
                        "INSERT INTO t VALUES (1)",
                        "INSERT INTO t VALUES (NULL)",
                        "INSERT blah blah",
                        "SELECT * FROM nowhere",
                    ],
                    false,
                )],
            )
            .unwrap();
        let errors: Vec<&str> = r[0]
            .iter()
            .filter_map(|s| match s {
                StatementResult::Error(e) => Some(e.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            errors,
            [
                "UNIQUE constraint failed: t.x",
                "NOT NULL constraint failed: t.x",
                "near \"blah\": syntax error",
                "no such table: nowhere",
            ]
        );
        let q = store
            .query(&[Statement::new("SELECT nope FROM t")])
            .unwrap();
        assert_eq!(q, [StatementResult::Error("no such column: nope".into())]);
    }

    /// go-sqlite3 converts by declared type (sqlite3.go nextSyncLocked), rqlite normalizes
    /// (db/db.go normalizeRowParameters, populateEmptyTypes); see results.rs for the rules.
    #[test]
    fn query_values_are_converted_by_declared_type() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .apply_write(
                pos(1),
                T,
                &[req(
                    &[
                        "CREATE TABLE t(ts TIMESTAMP, d DATE, ok BOOLEAN, x, b BLOB)",
                        "INSERT INTO t VALUES ('2004-02-14 07:15:00', 1136214245, 1, x'4142', x'4142')",
                        "INSERT INTO t VALUES ('bad', 1136214245123, 0, 7, NULL)",
                    ],
                    false,
                )],
            )
            .unwrap();
        let q = store
            .query(&[
                Statement::new("SELECT * FROM t ORDER BY rowid"),
                Statement::new("SELECT COUNT(*), NULL, 1.5, 'a' FROM t"),
                Statement::new("SELECT 1 WHERE 0"),
            ])
            .unwrap();
        let rows = |i: usize| match &q[i] {
            StatementResult::Rows(r) => (r.types.clone(), r.values.clone()),
            other => panic!("{other:?}"),
        };
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(
            rows(0),
            (
                vec!["timestamp", "date", "boolean", "text", "blob"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                vec![
                    vec![
                        text("2004-02-14T07:15:00Z"),
                        text("2006-01-02T15:04:05Z"),
                        Value::Bool(true),
                        text("AB"),
                        Value::Blob(b"AB".to_vec()),
                    ],
                    vec![
                        text("0001-01-01T00:00:00Z"),
                        text("2006-01-02T15:04:05.123Z"),
                        Value::Bool(false),
                        Value::Integer(7),
                        Value::Null,
                    ],
                ]
            )
        );
        assert_eq!(
            rows(1).0,
            vec!["integer", "", "real", "text"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        );
        assert_eq!(rows(2).0, vec![String::new()]);
    }

    /// `/status` reads the committed meta while an entry is being applied: with the writer held
    /// inside an open transaction that has changed the meta (what a long apply looks like), the
    /// committed reads answer at once and show the last commit, not the change in progress.
    /// Before the read moved off the writer, this waited for the writer until the timeout.
    #[test]
    fn committed_reads_answer_while_the_writer_is_held_and_see_only_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        store.apply_restore_chunk(pos(4), "r1", 0, b"abcd").unwrap();
        let store = &store;
        let writer = store.writer();
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        write_applied(&writer, pos(9), MetaChange::Data).unwrap();
        writer
            .execute_batch(&format!("DELETE FROM {RESTORE_TABLE}"))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(move || {
                let _ = tx.send((store.committed_meta(), store.committed_pending_restore()));
            });
            // Generous: only a read that waits for the writer comes near it.
            let got = rx.recv_timeout(std::time::Duration::from_secs(30));
            writer.execute_batch("ROLLBACK").unwrap();
            drop(writer);
            let (meta, pending) = got.expect("the committed reads waited for the writer");
            let meta = meta.unwrap();
            assert_eq!(meta.applied, Some(pos(4)));
            assert_eq!(meta.data_changed, Some(pos(2)));
            assert_eq!(meta.timeline().map(|t| t.id.as_str()), Some("t1"));
            assert_eq!(pending.unwrap(), Some(("r1".to_string(), 1, 4)));
        });
        // The same answers as on the writer once nothing is in flight.
        assert_eq!(store.committed_meta().unwrap(), store.meta().unwrap());
        assert_eq!(
            store.committed_pending_restore().unwrap(),
            store.pending_restore().unwrap()
        );
    }

    /// A committed read never sees the file a swap replaced: the pooled reader it used before
    /// is dropped by the swap, and while a swap holds (or waits for) the gate the read is
    /// answered on the writer instead of queueing behind the swap's wait.
    #[test]
    fn committed_reads_follow_a_swapped_in_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path());
        a.apply_write(pos(5), T, &[req(&["CREATE TABLE t(v)"], false)])
            .unwrap();
        let snap = dir.path().join("snap.sqlite");
        a.snapshot_to(&snap).unwrap();

        let other = tempfile::tempdir().unwrap();
        let b = open(other.path());
        b.apply_write(pos(1), T, &[req(&["CREATE TABLE old(v)"], false)])
            .unwrap();
        // Leaves a reader of the old file in the pool.
        assert_eq!(b.committed_meta().unwrap().applied, Some(pos(1)));
        b.install_from(&snap).unwrap();
        assert_eq!(b.committed_meta().unwrap().applied, Some(pos(5)));

        let b = &b;
        let gate = b.swap_gate.write().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(move || {
                let _ = tx.send(b.committed_meta().map(|m| m.applied));
            });
            let got = rx.recv_timeout(std::time::Duration::from_secs(30));
            drop(gate);
            let applied = got.expect("the committed read waited for the swap gate");
            assert_eq!(applied.unwrap(), Some(pos(5)));
        });
    }

    #[test]
    fn snapshot_and_install_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path());
        a.apply_write(
            pos(1),
            T,
            &[req(
                &[
                    "CREATE TABLE t(v)",
                    "INSERT INTO t VALUES (1)",
                    "INSERT INTO t VALUES (2)",
                ],
                false,
            )],
        )
        .unwrap();
        let snap = dir.path().join("snap.sqlite");
        let meta = a.snapshot_to(&snap).unwrap();
        assert_eq!(meta.applied, Some(pos(1)));

        let other = tempfile::tempdir().unwrap();
        let b = open(other.path());
        b.apply_write(pos(1), T, &[req(&["CREATE TABLE old(v)"], false)])
            .unwrap();
        let installed = b.install_from(&snap).unwrap();
        assert_eq!(installed.applied, Some(pos(1)));
        let q = b
            .query(&[Statement::new("SELECT count(*) FROM t")])
            .unwrap();
        assert!(
            matches!(&q[0], StatementResult::Rows(r) if r.values == vec![vec![Value::Integer(2)]])
        );
        let old = b.query(&[Statement::new("SELECT * FROM old")]).unwrap();
        assert!(matches!(&old[0], StatementResult::Error(_)));
        // Writes continue on the installed file.
        b.apply_write(pos(2), T, &[req(&["INSERT INTO t VALUES (3)"], false)])
            .unwrap();
        assert!(snap.exists(), "the source is left in place");
    }

    #[test]
    fn db_timeout_interrupts_a_long_query_and_the_reader_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let slow = Statement::new(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
             SELECT count(*) FROM c WHERE x < 0",
        );
        let started = Instant::now();
        let r = store
            .query_with_timeout(&[slow], Some(std::time::Duration::from_millis(50)))
            .unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            matches!(&r[0], StatementResult::Error(e) if e.contains("db_timeout")),
            "{r:?}"
        );
        let ok = store
            .query_with_timeout(
                &[Statement::new("SELECT 1")],
                Some(std::time::Duration::from_secs(5)),
            )
            .unwrap();
        assert!(matches!(&ok[0], StatementResult::Rows(_)));
    }

    #[test]
    fn an_installed_file_is_switched_to_wal_before_it_takes_the_database_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path());
        a.apply_write(pos(1), T, &[req(&["CREATE TABLE t(v)"], false)])
            .unwrap();
        let snap = dir.path().join("snap.sqlite");
        a.snapshot_to(&snap).unwrap();
        let header = |p: &Path| std::fs::read(p).unwrap()[18..20].to_vec();
        assert_eq!(
            header(&snap),
            vec![1, 1],
            "snapshots are rollback-journal files"
        );

        let staging = dir.path().join("staging.sqlite");
        std::fs::copy(&snap, &staging).unwrap();
        // A journal of an earlier staging file must never be rolled back onto a new copy.
        std::fs::write(sidecar(&staging, "-journal"), b"left by a crash").unwrap();
        remove_sidecars(&staging).unwrap();
        switch_to_wal(&staging).unwrap();
        assert_eq!(
            header(&staging),
            vec![2, 2],
            "WAL mode is in the file's own header"
        );
        for suffix in ["-journal", "-wal", "-shm"] {
            assert!(!sidecar(&staging, suffix).exists(), "{suffix} left behind");
        }
        assert!(validate_database(&staging).is_ok());

        let other = tempfile::tempdir().unwrap();
        let b = open(other.path());
        b.install_from(&snap).unwrap();
        let db = other.path().join("db.sqlite");
        assert!(!sidecar(&db, "-journal").exists());
        assert_eq!(header(&db), vec![2, 2]);
        assert_eq!(header(&snap), vec![1, 1], "the source is never modified");
    }

    #[test]
    fn install_refuses_garbage_and_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .apply_write(pos(1), T, &[req(&["CREATE TABLE t(v)"], false)])
            .unwrap();
        let bad = dir.path().join("bad.sqlite");
        std::fs::write(&bad, b"definitely not sqlite").unwrap();
        assert!(matches!(
            store.install_from(&bad),
            Err(StoreError::NotADatabase { .. })
        ));
        assert_eq!(store.meta().unwrap().applied, Some(pos(1)));
    }

    #[test]
    fn timeline_initializes_once_and_repeats_are_no_ops() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let first = TimelineRecord {
            id: "aa".into(),
            counter: 1,
            parent: None,
            parent_index: None,
            reason: "bootstrap".into(),
            at_unix_ms: 1,
        };
        let mut second = first.clone();
        second.id = "bb".into();
        assert_eq!(store.apply_init_timeline(pos(1), &first).unwrap(), first);
        assert_eq!(store.apply_init_timeline(pos(2), &second).unwrap(), first);
        assert_eq!(store.apply_init_timeline(pos(3), &first).unwrap(), first);
        assert_eq!(store.meta().unwrap().timeline_history, vec![first]);
    }

    fn timeline(id: &str) -> TimelineRecord {
        TimelineRecord {
            id: id.into(),
            counter: 1,
            parent: None,
            parent_index: None,
            reason: "bootstrap".into(),
            at_unix_ms: 1,
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        match &store.query(&[Statement::new(sql)]).unwrap()[0] {
            StatementResult::Rows(r) => match r.values.first().and_then(|row| row.first()) {
                Some(Value::Integer(n)) => *n,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn load_replaces_data_and_rewrites_meta_without_touching_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let first = timeline("t1");
        store.apply_init_timeline(pos(1), &first).unwrap();
        store
            .apply_membership(pos(2), Some("{\"current\":true}"))
            .unwrap();
        store
            .apply_write(pos(3), T, &[req(&["CREATE TABLE old(v)"], false)])
            .unwrap();

        // The source is another raftlite database: its own meta must not leak in.
        let other_dir = tempfile::tempdir().unwrap();
        let other = open(other_dir.path());
        other
            .apply_init_timeline(pos(1), &timeline("foreign"))
            .unwrap();
        other
            .apply_membership(pos(40), Some("{\"foreign\":true}"))
            .unwrap();
        other
            .apply_write(
                pos(41),
                T,
                &[req(
                    &["CREATE TABLE t(v)", "INSERT INTO t VALUES (1), (2)"],
                    false,
                )],
            )
            .unwrap();
        let source = other_dir.path().join("export.sqlite");
        other.snapshot_to(&source).unwrap();
        let before = std::fs::read(&source).unwrap();

        let mut record = timeline("t2");
        record.reason = "load".into();
        record.counter = 99; // a stale proposer's guess: corrected on apply
        let meta = store.load_from(&source, pos(4), None, &record).unwrap();

        assert_eq!(
            std::fs::read(&source).unwrap(),
            before,
            "the source is never modified"
        );
        assert_eq!(meta.applied, Some(pos(4)));
        assert_eq!(meta.membership_json.as_deref(), Some("{\"current\":true}"));
        let expected = TimelineRecord {
            id: "t2".into(),
            counter: 2,
            parent: Some("t1".into()),
            parent_index: Some(3),
            reason: "load".into(),
            at_unix_ms: 1,
        };
        assert_eq!(meta.timeline_history, vec![first.clone(), expected.clone()]);
        assert_eq!(store.meta().unwrap(), meta);
        assert_eq!(count(&store, "SELECT count(*) FROM t"), 2);
        assert!(matches!(
            &store.query(&[Statement::new("SELECT * FROM old")]).unwrap()[0],
            StatementResult::Error(_)
        ));

        // Writes continue; replaying the load entry afterwards changes nothing.
        store
            .apply_write(pos(5), T, &[req(&["INSERT INTO t VALUES (3)"], false)])
            .unwrap();
        let replay = store.load_from(&source, pos(4), None, &record).unwrap();
        assert_eq!(replay.applied, Some(pos(5)));
        assert_eq!(count(&store, "SELECT count(*) FROM t"), 3);
        assert_eq!(
            store.meta().unwrap().timeline_history,
            vec![first, expected]
        );
        drop(store);
        let reopened = open(dir.path());
        assert_eq!(count(&reopened, "SELECT count(*) FROM t"), 3);
    }

    #[test]
    fn load_accepts_a_plain_wal_mode_file_and_creates_the_meta_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.apply_init_timeline(pos(1), &timeline("t1")).unwrap();
        let source = dir.path().join("plain.sqlite");
        {
            let conn = Connection::open(&source).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch("CREATE TABLE p(v); INSERT INTO p VALUES ('x');")
                .unwrap();
        }
        let meta = store
            .load_from(&source, pos(2), Some("{\"m\":1}".into()), &timeline("t2"))
            .unwrap();
        assert_eq!(meta.applied, Some(pos(2)));
        assert_eq!(meta.membership_json.as_deref(), Some("{\"m\":1}"));
        assert_eq!(meta.timeline_history.len(), 2);
        assert_eq!(count(&store, "SELECT count(*) FROM p"), 1);
        assert!(
            !sidecar(&store.staging_path(), "-journal").exists() && !store.staging_path().exists()
        );
    }

    #[test]
    fn load_refuses_a_damaged_file_and_keeps_the_old_data() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .apply_write(
                pos(1),
                T,
                &[req(
                    &["CREATE TABLE t(v)", "INSERT INTO t VALUES (1)"],
                    false,
                )],
            )
            .unwrap();
        let good = dir.path().join("good.sqlite");
        store.snapshot_to(&good).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.sqlite");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let garbage = dir.path().join("garbage.sqlite");
        std::fs::write(&garbage, b"not a database at all").unwrap();
        for bad in [&truncated, &garbage] {
            assert!(
                matches!(
                    store.load_from(bad, pos(2), None, &timeline("x")),
                    Err(StoreError::NotADatabase { .. })
                ),
                "{}",
                bad.display()
            );
        }
        assert_eq!(store.meta().unwrap().applied, Some(pos(1)));
        assert_eq!(count(&store, "SELECT count(*) FROM t"), 1);
    }

    #[test]
    fn bare_pragmas_are_value_reads() {
        for sql in [
            "PRAGMA journal_mode",
            "pragma main.journal_mode;",
            "  /* c */ PRAGMA foreign_keys -- x",
            "PRAGMA\tpage_size ;  ",
        ] {
            assert!(is_pragma_value_read(sql), "{sql}");
        }
        for sql in [
            "PRAGMA journal_mode=DELETE",
            "PRAGMA cache_size = 10",
            "PRAGMA table_info(t)",
            "PRAGMA journal_mode; DELETE FROM t",
            "PRAGMAjournal_mode",
            "SELECT 1",
            "PRAGMA",
            "",
        ] {
            assert!(!is_pragma_value_read(sql), "{sql}");
        }
    }

    #[test]
    fn the_read_path_answers_a_bare_pragma_and_refuses_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite"), StoreOptions::default()).unwrap();
        let results = store
            .query(&[Statement::new("PRAGMA journal_mode")])
            .unwrap();
        match &results[0] {
            StatementResult::Rows(rows) => {
                assert_eq!(rows.values, vec![vec![Value::Text("wal".into())]])
            }
            other => panic!("PRAGMA journal_mode answered {other:?}"),
        }
        let results = store
            .query(&[Statement::new("PRAGMA user_version=7")])
            .unwrap();
        assert!(
            matches!(&results[0], StatementResult::Error(e) if e == "attempt to change database via query operation"),
            "{results:?}"
        );
    }

    #[test]
    fn a_dropped_store_leaves_no_wal_behind_even_after_pooled_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        store
            .apply_write(
                pos(1),
                T,
                &[req(
                    &["CREATE TABLE t (x)", "INSERT INTO t VALUES (1)"],
                    false,
                )],
            )
            .unwrap();
        // A query and a committed-meta read leave connections in the reader pool.
        store.query(&[Statement::new("SELECT x FROM t")]).unwrap();
        store.committed_meta().unwrap();
        drop(store);
        let wal = dir.path().join("db.sqlite-wal");
        assert!(!wal.exists(), "{} is left behind", wal.display());
    }
}
