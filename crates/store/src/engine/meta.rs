//! `_raftlite_meta`: where the data stands in the Raft log (applied position, membership,
//! timeline history), written in the same transaction as the data; read on the writer, as
//! committed, or from a file no store has open (`probe`); rewritten for a file about to be
//! installed or to seed a new cluster.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::disk::{sidecar, sync_file};
use super::{Store, META_TABLE, RESTORE_TABLE};
use crate::error::StoreError;
use crate::types::*;

const META_APPLIED: &str = "applied";
const META_MEMBERSHIP: &str = "membership";
const META_TIMELINES: &str = "timeline_history";
/// The position of the last entry that changed user data (writes, loads, a new timeline), so
/// that entries that change nothing (leader blanks, membership) do not make a backup "new".
const META_DATA_CHANGED: &str = "data_changed";

/// What `_raftlite_meta` must receive with an entry's data, in the same transaction.
pub(super) enum MetaChange<'a> {
    None,
    /// User data changed (a write entry).
    Data,
    Membership(&'a str),
    Timeline(&'a TimelineRecord),
}

impl Store {
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
    let conn = super::open_to_examine(path)?;
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
    let conn = super::open_to_examine(path)?;
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
pub(super) fn stamp_for_install(
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

pub(super) fn write_applied(
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
pub(super) fn child_timeline(record: &TimelineRecord, current: &MetaState) -> TimelineRecord {
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

pub(super) fn read_timelines(
    conn: &Connection,
    path: &Path,
) -> Result<Vec<TimelineRecord>, StoreError> {
    match meta_value(conn, META_TIMELINES)? {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(&json).map_err(|e| StoreError::CorruptMeta {
            path: path.to_path_buf(),
            detail: format!("timeline history: {e}"),
        }),
    }
}

pub(super) fn read_meta(conn: &Connection, path: &Path) -> Result<MetaState, StoreError> {
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
