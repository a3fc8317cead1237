//! Running a client's SQL on a connection: the statement guard (what a request may not do),
//! parameters bound as go-sqlite3 binds them, and results as rqlite reports them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::internal_schema;
use crate::types::*;

/// Why the statement guard refused a statement, read back after SQLite reports "not authorized".
#[derive(Default)]
pub(super) struct Guard {
    /// Set while preparing statements that came from a client.
    pub(super) client_sql: AtomicBool,
    refusal: Mutex<Option<String>>,
    /// What the statement being prepared does with raftlite's own tables and the schema.
    pub(super) seen: internal_schema::Seen,
}

impl Guard {
    pub(super) fn authorize(&self, ctx: AuthContext<'_>) -> Authorization {
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

/// Runs every statement in `sql` (a string may hold several, separated by `;`), binding the
/// parameters to the first. Returns rows when a statement produces columns.
pub(super) fn run_sql(
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

/// How many bytes of rows one query request may still collect. Each value is counted as its
/// JSON text would take at least (text plus quotes, a blob as base64, a number at its longest),
/// so the response stays near the limit and the rows in memory below a small multiple of it.
pub(super) struct ResultBudget {
    pub(super) limit: usize,
    used: std::cell::Cell<usize>,
}

impl ResultBudget {
    pub(super) fn new(limit: usize) -> ResultBudget {
        ResultBudget {
            limit,
            used: std::cell::Cell::new(0),
        }
    }

    /// Counts a row; false once the total has passed the limit.
    pub(super) fn take(&self, row: &[Value]) -> bool {
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

    pub(super) fn exceeded(&self) -> bool {
        self.used.get() > self.limit
    }
}

/// `PRAGMA [schema.]name` with no value and no argument: it only reports a setting, but SQLite
/// does not mark some of these read-only (`PRAGMA journal_mode`, for one, could switch modes when
/// given a value). rqlite answers them from its read-only connection, and pyrqlite sends every
/// PRAGMA as a query, so the read path lets them through; the reader connections are opened
/// read-only, so nothing they run can change the database.
pub(super) fn is_pragma_value_read(sql: &str) -> bool {
    let mut rest = crate::sql_text::skip_blanks_and_comments(sql);
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
    rest = crate::sql_text::skip_blanks_and_comments(rest);
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len());
    if name_len == 0 {
        return false;
    }
    let tail = crate::sql_text::skip_blanks_and_comments(&rest[name_len..]);
    let tail = tail.strip_prefix(';').unwrap_or(tail);
    crate::sql_text::skip_blanks_and_comments(tail).is_empty()
}
