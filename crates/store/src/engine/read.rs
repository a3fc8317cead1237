//! The read path: queries on pooled read-only connections, with rqlite's `db_timeout`, a bound
//! on the result's size and bare PRAGMA reads; committed reads that never wait for the writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthContext, Authorization};
use rusqlite::Connection;

use super::sql::{run_sql, Guard, ResultBudget};
use super::{internal_schema, open_reader, Store, MAX_IDLE_READERS};
use crate::error::StoreError;
use crate::types::*;

impl Store {
    /// Runs `read` on a pooled read-only connection inside one read transaction: it sees the
    /// last committed state, consistently across its statements, without the writer's lock.
    ///
    /// File swaps: like queries, it holds the swap gate shared, so it never overlaps
    /// [`Store::swap_in`], which empties the pool under the gate (no connection here reads the
    /// old file afterwards). While a swap holds or waits for the gate, `read` runs on the
    /// writer instead, which is then free (the swap waits for the gate before it takes the
    /// writer) or held by the swap itself for its short duration: never longer than a read on
    /// the writer would wait, and a pending swap does not queue this read behind long queries.
    pub(super) fn read_committed<T>(
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
