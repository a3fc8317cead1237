//! Applying log entries: client writes (one transaction per entry, a savepoint per request),
//! membership and timeline entries, each with the applied position in the same transaction.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use rusqlite::Connection;

use super::meta::{child_timeline, read_meta, read_timelines, write_applied, MetaChange};
use super::sql::{run_sql, Guard};
use super::{EntryTime, Store, META_TABLE};
use crate::deterministic::EntryScope;
use crate::error::StoreError;
use crate::types::*;

/// A request's statements could not run because one of them rolled back the whole enclosing
/// transaction (`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)`).
struct EndedTransaction;

impl Store {
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
}

pub(super) fn in_transaction<T>(
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

fn execute_statement(conn: &Connection, statement: &Statement, guard: &Guard) -> StatementResult {
    run_sql(conn, statement, guard, false, None)
}
