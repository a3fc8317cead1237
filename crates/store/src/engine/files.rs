//! The database as a file: pinned for a backup to stream, copied consistently (snapshots), and
//! replaced atomically by another file (a snapshot install, `/db/load`, a restore's commit).

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;

use super::disk::{sidecar, sync_file, sync_parent_dir};
use super::meta::{probe, read_meta, stamp_for_install, validate_database};
use super::{open_reader, open_writer, Store};
use crate::error::StoreError;
use crate::types::*;

/// Copies [`Store::snapshot_to`] takes before giving up while restores keep committing under it.
const SNAPSHOT_ATTEMPTS: usize = 10;

/// The database file pinned as a consistent snapshot (see [`Store::pin_consistent_file`]):
/// `file` reads exactly the snapshot described by `meta` while this value lives.
pub struct PinnedFile {
    /// Holds the read transaction that keeps checkpoints from changing the file.
    _reader: Connection,
    pub file: std::fs::File,
    pub meta: MetaState,
}

impl Store {
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
    pub(super) fn staging_path(&self) -> PathBuf {
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

/// Puts the database file at `path` (a staging copy nobody else has open, in rollback-journal
/// mode like every snapshot) into WAL mode and closes it, so that no `-wal`/`-shm` remains and
/// the file is durable. Done before the file takes the database's name: switching the mode
/// rewrites page 1 through a rollback journal, and a crash in that write under the database's
/// own name left a hot `db.sqlite-journal` that the read-only start-up probe cannot roll back
/// (the node then refused to start, calling the database damaged). Beside the staging file such
/// a journal is harmless: the staging file is rebuilt or resumed through SQLite, which rolls it
/// back.
pub(super) fn switch_to_wal(path: &Path) -> Result<(), StoreError> {
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
pub(super) fn remove_sidecars(path: &Path) -> Result<(), StoreError> {
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
