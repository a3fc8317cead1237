//! Plain data types shared by every layer: what a client asks for and what SQLite answers.
//! They are serialized into Raft log entries (postcard), so changing them changes the log format.

use serde::{Deserialize, Serialize};

/// A SQLite value as it travels through the API and the Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    /// Only in results: an integer of a column declared `BOOLEAN`, as rqlite reports it
    /// (see `results.rs`). Bound as a parameter it is the integer 1 or 0. Last, so the
    /// postcard tags of the other variants (in the Raft log) stay as they were.
    Bool(bool),
}

/// Bound parameters of one statement: rqlite allows either positional or named, not both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Params {
    #[default]
    None,
    Positional(Vec<Value>),
    /// Names without their sigil (`:`, `@`, `$`); the engine tries each sigil when binding.
    Named(Vec<(String, Value)>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    pub params: Params,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            params: Params::None,
        }
    }

    pub fn with_params(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Statement {
            sql: sql.into(),
            params: Params::Positional(params),
        }
    }
}

/// One client's write request. Several of them share one Raft entry (group commit), but each keeps
/// its own results and its own transaction boundary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    pub statements: Vec<Statement>,
    /// All statements commit together or none does (rqlite's `?transaction`).
    pub transaction: bool,
}

/// The outcome of one statement, in the order the statements were given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StatementResult {
    /// The connection's `sqlite3_last_insert_rowid` and `sqlite3_changes` after the statement,
    /// as go-sqlite3 reports them to rqlite: a statement that is no INSERT/UPDATE/DELETE leaves
    /// the values of the request's previous one (each request starts from 0 and 0).
    Execute {
        last_insert_id: i64,
        rows_affected: u64,
        time_secs: f64,
    },
    Rows(Rows),
    Error(String),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    pub columns: Vec<String>,
    /// Declared column types in lower case; for a column without one (an expression), the kind
    /// of the first row's value ("integer", "real", "text", ...), "" when that is NULL or there
    /// are no rows (rqlite's `populateEmptyTypes`).
    pub types: Vec<String>,
    pub values: Vec<Vec<Value>>,
    pub time_secs: f64,
}

/// Where the database stands in the Raft log. Stored in the database's own meta table in the same
/// transaction as the data it describes, so the file alone says which log entry it reflects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogPosition {
    pub term: u64,
    /// The node that led `term` (openraft's leader id is term + node).
    pub leader_node: u64,
    pub index: u64,
}

/// A lineage of the data. See DESIGN.md section 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineRecord {
    /// Random 128-bit id, hex.
    pub id: String,
    /// 1 for the first bootstrap, parent's counter + 1 afterwards.
    pub counter: u64,
    pub parent: Option<String>,
    pub parent_index: Option<u64>,
    pub reason: String,
    /// Unix milliseconds, as stamped by the leader that proposed it.
    pub at_unix_ms: i64,
}

/// Everything the meta table says about the database, read in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    /// None for a database no Raft entry was ever applied to.
    pub applied: Option<LogPosition>,
    /// The last applied entry that changed user data (a write, a load, a new timeline); entries
    /// that change nothing users can read (leader blanks, membership) leave it alone. `None` in
    /// a database written before raftlite recorded it: use `applied` then.
    pub data_changed: Option<LogPosition>,
    /// Opaque to this crate: the consensus layer stores its membership here (JSON).
    pub membership_json: Option<String>,
    /// The current timeline is the last element; empty before the bootstrap initialized it.
    pub timeline_history: Vec<TimelineRecord>,
}

impl MetaState {
    pub fn timeline(&self) -> Option<&TimelineRecord> {
        self.timeline_history.last()
    }

    /// The index of the last entry that changed user data: two databases of one timeline with
    /// the same value hold the same data.
    pub fn data_changed_index(&self) -> u64 {
        self.data_changed
            .or(self.applied)
            .map(|p| p.index)
            .unwrap_or(0)
    }
}
