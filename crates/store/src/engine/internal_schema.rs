//! Keeping raftlite's own tables out of the user's sight.
//!
//! The applied position, membership and timeline live in tables of the user's database
//! ([`META_TABLE`], [`RESTORE_TABLE`]) because they must commit in the same SQLite transaction
//! as the data they describe (another file would not be atomic in WAL mode). Client SQL must
//! nevertheless see the schema the user made, and nothing else:
//!
//! - **Reading the schema** (`sqlite_master`, `sqlite_schema`, `main.`/`temp.` forms,
//!   `sqlite_temp_master`, `pragma_table_list` without arguments) in a query: [`rewrite`] puts
//!   a TEMP view of the same table without raftlite's objects in its place
//!   ([`create_views`] makes the views on the read-only connection when first needed, in its
//!   own TEMP schema, which the views hide too). Counting, joining, grouping over the schema is
//!   then exact. A rewritten statement that fails (e.g. it reads `rowid`, which a view lacks) is
//!   run as written instead, with the row filter below.
//! - **Everything else that shows schema rows** (the schema table read as written, through a
//!   user's view, in `/db/execute`, `PRAGMA` statements such as `table_list`, `sqlite_stat1`):
//!   the authorizer notices it ([`Seen::authorize`]) and result rows holding an internal
//!   object's name or `CREATE` statement are left out ([`RowFilter`]).
//! - **Naming an internal table** in client SQL: reading, writing, altering it, or putting an
//!   index or trigger on it fails with SQLite's own `no such table: NAME`;
//!   `DROP TABLE IF EXISTS` of it does nothing (as for a table that does not exist); `PRAGMA
//!   table_info(_raftlite_meta)` and the like answer no rows. Creating an object with one of
//!   the reserved names fails with a message saying so.
//!
//! Every internal name is listed here, once ([`INTERNAL_TABLES`], the views); the dump
//! ([`crate::dump`]) and the backup download ([`strip_internal_tables`]) use the same list.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;

use super::{META_TABLE, RESTORE_TABLE};
use crate::error::StoreError;
use crate::types::{Statement, StatementResult, Value};

/// raftlite's own tables in the user's database. Their automatic indexes
/// (`sqlite_autoindex_<table>_<n>`) are internal too.
pub const INTERNAL_TABLES: [&str; 2] = [META_TABLE, RESTORE_TABLE];

/// The TEMP views [`rewrite`] reads instead of the schema tables (one per reader connection).
const SCHEMA_VIEW: &str = "_raftlite_schema";
const TEMP_SCHEMA_VIEW: &str = "_raftlite_temp_schema";
const TABLE_LIST_VIEW: &str = "_raftlite_table_list";
const VIEWS: [&str; 3] = [SCHEMA_VIEW, TEMP_SCHEMA_VIEW, TABLE_LIST_VIEW];

/// Whether `name` is one of raftlite's tables (SQLite names are case-insensitive).
pub fn is_internal_table(name: &str) -> bool {
    INTERNAL_TABLES.iter().any(|t| t.eq_ignore_ascii_case(name))
}

/// Whether `name` is an object raftlite made: its tables, their automatic indexes, its views.
pub fn is_internal_object(name: &str) -> bool {
    if is_internal_table(name) || VIEWS.iter().any(|v| v.eq_ignore_ascii_case(name)) {
        return true;
    }
    // sqlite_autoindex_<table>_<n>
    let Some(rest) = strip_prefix_ignore_case(name, "sqlite_autoindex_") else {
        return false;
    };
    INTERNAL_TABLES.iter().any(|t| {
        strip_prefix_ignore_case(rest, t)
            .and_then(|n| n.strip_prefix('_'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates the views [`rewrite`] refers to in the TEMP schema of `conn`, unless they exist.
/// Run with the statement guard disarmed: the names are reserved for client SQL.
pub(super) fn create_views(conn: &Connection) -> rusqlite::Result<()> {
    let tables = quoted_list(&INTERNAL_TABLES);
    let views = quoted_list(&VIEWS);
    let mut all = INTERNAL_TABLES.to_vec();
    all.extend(VIEWS);
    let all = quoted_list(&all);
    conn.execute_batch(&format!(
        "CREATE TEMP VIEW IF NOT EXISTS {SCHEMA_VIEW} AS \
           SELECT * FROM main.sqlite_master WHERE tbl_name NOT IN ({tables}); \
         CREATE TEMP VIEW IF NOT EXISTS {TEMP_SCHEMA_VIEW} AS \
           SELECT * FROM temp.sqlite_master WHERE tbl_name NOT IN ({views}); \
         CREATE TEMP VIEW IF NOT EXISTS {TABLE_LIST_VIEW} AS \
           SELECT * FROM pragma_table_list WHERE name NOT IN ({all});"
    ))
}

// ---------------------------------------------------------------------------------------------
// Rewriting schema reads
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An unquoted word: keyword, identifier, number.
    Word,
    /// `"x"`, `[x]` or `` `x` ``.
    Quoted,
    Str,
    Dot,
    LParen,
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    start: usize,
    end: usize,
    text: &'a str,
}

impl Token<'_> {
    /// The identifier this token names, unquoted.
    fn ident(&self) -> Option<String> {
        match self.kind {
            Kind::Word => Some(self.text.to_string()),
            Kind::Quoted => {
                // The opening and closing characters are ASCII; an unterminated one has no end.
                let open = self.text.as_bytes().first().copied()?;
                let close = if open == b'[' { b']' } else { open };
                let body = self.text.get(1..)?;
                let inner = match body.as_bytes().last() {
                    Some(&last) if last == close => body.get(..body.len() - 1)?,
                    _ => body,
                };
                Some(match open {
                    b'"' => inner.replace("\"\"", "\""),
                    b'`' => inner.replace("``", "`"),
                    _ => inner.to_string(),
                })
            }
            _ => None,
        }
    }

    fn is_word(&self, word: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(word)
    }
}

/// SQLite's tokens, enough to find identifiers: comments and whitespace are skipped, strings
/// and quoted identifiers kept whole.
fn tokens(sql: &str) -> Vec<Token<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // The end (exclusive) of a quoted token opened at `i` by `open`, closed by `close`; a
    // doubled closing character stays inside (except for `[...]`).
    let quoted_end = |i: usize, close: u8, doubled: bool| -> usize {
        let mut j = i + 1;
        while j < bytes.len() {
            if bytes[j] == close {
                if doubled && bytes.get(j + 1) == Some(&close) {
                    j += 2;
                    continue;
                }
                return j + 1;
            }
            j += 1;
        }
        bytes.len()
    };
    while i < bytes.len() {
        let b = bytes[i];
        let (kind, end) = match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |n| i + 2 + n + 2);
                continue;
            }
            b'\'' => (Kind::Str, quoted_end(i, b'\'', true)),
            b'"' => (Kind::Quoted, quoted_end(i, b'"', true)),
            b'`' => (Kind::Quoted, quoted_end(i, b'`', true)),
            b'[' => (Kind::Quoted, quoted_end(i, b']', false)),
            b'.' => (Kind::Dot, i + 1),
            b'(' => (Kind::LParen, i + 1),
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80 => {
                let mut j = i + 1;
                while j < bytes.len()
                    && (bytes[j].is_ascii_alphanumeric()
                        || bytes[j] == b'_'
                        || bytes[j] == b'$'
                        || bytes[j] >= 0x80)
                {
                    j += 1;
                }
                (Kind::Word, j)
            }
            _ => {
                // One character (whole, if it is not ASCII: `sql` is UTF-8).
                let len = sql[i..].chars().next().map_or(1, char::len_utf8);
                (Kind::Other, i + len)
            }
        };
        out.push(Token {
            kind,
            start: i,
            end,
            text: &sql[i..end],
        });
        i = end;
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Schema,
    TempSchema,
    TableList,
}

fn view_of(target: Target) -> &'static str {
    match target {
        Target::Schema => SCHEMA_VIEW,
        Target::TempSchema => TEMP_SCHEMA_VIEW,
        Target::TableList => TABLE_LIST_VIEW,
    }
}

/// `sql` with every read of a schema table replaced by the view that hides raftlite's objects,
/// or `None` when it reads none (the common case, decided without tokenizing when the text
/// does not contain `sqlite_` or `pragma_table_list`). Each `[main.|temp.]sqlite_master` (or
/// `sqlite_schema`, `sqlite_temp_master`, `sqlite_temp_schema`, quoted or not), as a table or as
/// a column qualifier, becomes `temp."<view>"`; `pragma_table_list` only when it has no
/// arguments.
pub(super) fn rewrite(sql: &str) -> Option<String> {
    if !contains_ignore_case(sql, "sqlite_") && !contains_ignore_case(sql, "pragma_table_list") {
        return None;
    }
    let toks = tokens(sql);
    let mut replacements: Vec<(usize, usize, Target)> = Vec::new();
    for (i, tok) in toks.iter().enumerate() {
        let Some(name) = tok.ident() else { continue };
        let mut target = match name.to_ascii_lowercase().as_str() {
            "sqlite_master" | "sqlite_schema" => Target::Schema,
            "sqlite_temp_master" | "sqlite_temp_schema" => Target::TempSchema,
            "pragma_table_list" => Target::TableList,
            _ => continue,
        };
        let mut start = tok.start;
        if i >= 1 && toks[i - 1].kind == Kind::Dot {
            // Qualified: `main.` or `temp.` only (anything else is a column of that name).
            let qualifier = i
                .checked_sub(2)
                .and_then(|q| toks[q].ident())
                .map(|q| q.to_ascii_lowercase());
            target = match (qualifier.as_deref(), target) {
                (Some("main"), Target::Schema) => Target::Schema,
                (Some("temp"), Target::Schema | Target::TempSchema) => Target::TempSchema,
                _ => continue,
            };
            start = toks[i - 2].start;
        }
        if target == Target::TableList && toks.get(i + 1).is_some_and(|t| t.kind == Kind::LParen) {
            continue;
        }
        replacements.push((start, tok.end, target));
    }
    if replacements.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(sql.len() + 32 * replacements.len());
    let mut at = 0;
    for (start, end, target) in replacements {
        out.push_str(&sql[at..start]);
        out.push_str("temp.\"");
        out.push_str(view_of(target));
        out.push('"');
        at = end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// Runs a client query with its schema reads rewritten ([`rewrite`]); `run` runs one statement.
/// When the rewritten statement fails (a view has no `rowid`, a column happened to be called
/// `sqlite_master`...), the statement runs as written: its rows then go through the row filter.
/// `create` makes the views (see [`create_views`]) and is called only when needed.
pub(super) fn query_hidden(
    statement: &Statement,
    create: impl FnOnce() -> rusqlite::Result<()>,
    mut run: impl FnMut(&Statement) -> StatementResult,
    may_retry: impl FnOnce() -> bool,
) -> StatementResult {
    let Some(sql) = rewrite(&statement.sql) else {
        return run(statement);
    };
    if create().is_err() {
        return run(statement);
    }
    let rewritten = Statement {
        sql,
        params: statement.params.clone(),
    };
    match run(&rewritten) {
        StatementResult::Error(e) if e != "interrupted" && may_retry() => run(statement),
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// What the authorizer saw
// ---------------------------------------------------------------------------------------------

/// Which result rows of a statement are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RowFilter {
    /// The statement reads nothing that lists schema objects.
    All,
    /// Rows holding an internal object's name or `CREATE` statement are left out.
    NoInternal,
    /// A `PRAGMA` about an internal object: it answers no rows, as for one that does not exist.
    None,
}

impl RowFilter {
    /// Whether the row is shown.
    pub(super) fn shows(self, row: &[Value]) -> bool {
        match self {
            RowFilter::All => true,
            RowFilter::None => false,
            RowFilter::NoInternal => !row
                .iter()
                .any(|v| matches!(v, Value::Text(t) if is_internal_text(t))),
        }
    }
}

/// Whether a value names an internal object or is the `CREATE` statement of one.
fn is_internal_text(text: &str) -> bool {
    if is_internal_object(text) {
        return true;
    }
    if !text
        .get(..6)
        .is_some_and(|head| head.eq_ignore_ascii_case("create"))
    {
        return false;
    }
    let toks = tokens(text);
    let mut words = toks.iter().skip(1).peekable();
    while words.peek().is_some_and(|t| {
        ["temp", "temporary", "unique", "virtual"]
            .iter()
            .any(|w| t.is_word(w))
    }) {
        words.next();
    }
    if !words.next().is_some_and(|t| {
        ["table", "index", "view", "trigger"]
            .iter()
            .any(|w| t.is_word(w))
    }) {
        return false;
    }
    let rest: Vec<&Token<'_>> = words.collect();
    let skip = if rest.len() >= 3 && rest[0].is_word("if") && rest[1].is_word("not") {
        3
    } else {
        0
    };
    let name = match (rest.get(skip), rest.get(skip + 1), rest.get(skip + 2)) {
        (Some(_), Some(dot), Some(name)) if dot.kind == Kind::Dot => name.ident(),
        (Some(name), _, _) => name.ident(),
        _ => None,
    };
    name.is_some_and(|n| is_internal_object(&n))
}

const FILTER_ALL: u8 = 0;
const FILTER_INTERNAL: u8 = 1;
const FILTER_NONE: u8 = 2;

/// What the statement guard saw while one client statement was prepared (and run).
#[derive(Default)]
pub(super) struct Seen {
    filter: AtomicU8,
    /// The statement is being stepped (its rows read): an authorizer call now comes from a
    /// statement prepared inside it (the `pragma_*` table-valued functions do that).
    stepping: AtomicBool,
    /// An internal table that a `DROP TABLE` named (the drop was turned into a no-op).
    dropped: Mutex<Option<String>>,
}

/// What [`Seen::authorize`] decided.
pub(super) enum Decision {
    Ignore,
    Refuse(String),
}

fn no_such_table(name: &str) -> Decision {
    Decision::Refuse(format!("no such table: {name}"))
}

fn reserved(name: &str) -> Decision {
    Decision::Refuse(format!(
        "the name {name} is reserved: raftlite keeps its own data in a table of that name"
    ))
}

impl Seen {
    /// Called before each client statement is prepared.
    pub(super) fn preparing(&self) {
        self.filter.store(FILTER_ALL, Ordering::Relaxed);
        self.stepping.store(false, Ordering::Relaxed);
        if let Ok(mut dropped) = self.dropped.lock() {
            *dropped = None;
        }
    }

    /// Called once a client statement is prepared, before it runs. Fails as SQLite would for a
    /// missing table when the statement is `DROP TABLE` (without `IF EXISTS`) of an internal
    /// table; otherwise tells which rows to show.
    pub(super) fn prepared(&self, stmt: &rusqlite::Statement<'_>) -> Result<RowFilter, String> {
        self.stepping.store(true, Ordering::Relaxed);
        let dropped = self.dropped.lock().ok().and_then(|mut d| d.take());
        if let Some(name) = dropped {
            let sql = stmt.expanded_sql().unwrap_or_default();
            let toks = tokens(&sql);
            let if_exists = toks.len() >= 4
                && toks[0].is_word("drop")
                && toks[1].is_word("table")
                && toks[2].is_word("if")
                && toks[3].is_word("exists");
            if !if_exists {
                return Err(format!("no such table: {name}"));
            }
        }
        Ok(match self.filter.load(Ordering::Relaxed) {
            FILTER_NONE => RowFilter::None,
            FILTER_INTERNAL => RowFilter::NoInternal,
            _ => RowFilter::All,
        })
    }

    fn raise(&self, to: u8) {
        self.filter.fetch_max(to, Ordering::Relaxed);
    }

    /// The decision for one authorizer call made while client SQL is prepared; `None`: allow.
    pub(super) fn authorize(&self, ctx: &AuthContext<'_>) -> Option<Decision> {
        let ours = ctx.accessor.is_some_and(|a| VIEWS.contains(&a));
        match ctx.action {
            AuthAction::Read { table_name, .. } => {
                if is_internal_table(table_name) {
                    return Some(no_such_table(table_name));
                }
                let lists_objects = [
                    "sqlite_master",
                    "sqlite_temp_master",
                    "sqlite_stat1",
                    "sqlite_stat4",
                    "pragma_table_list",
                    "dbstat",
                ]
                .iter()
                .any(|t| t.eq_ignore_ascii_case(table_name));
                if lists_objects && !ours {
                    self.raise(FILTER_INTERNAL);
                }
                None
            }
            AuthAction::Pragma { pragma_value, .. } => {
                let about_internal = pragma_value.is_some_and(|v| {
                    let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
                    is_internal_object(v)
                });
                if about_internal && self.stepping.load(Ordering::Relaxed) {
                    // Inside `pragma_table_info('_raftlite_meta')`: no rows, as for a table that
                    // does not exist.
                    return Some(Decision::Ignore);
                }
                self.raise(if about_internal {
                    FILTER_NONE
                } else {
                    FILTER_INTERNAL
                });
                None
            }
            AuthAction::DropTable { table_name } | AuthAction::DropTempTable { table_name }
                if is_internal_table(table_name) =>
            {
                if let Ok(mut dropped) = self.dropped.lock() {
                    *dropped = Some(table_name.to_string());
                }
                Some(Decision::Ignore)
            }
            // `ANALYZE` leaves them out (naming one in `ANALYZE t` does nothing either).
            AuthAction::Analyze { table_name } if is_internal_table(table_name) => {
                Some(Decision::Ignore)
            }
            AuthAction::Insert { table_name }
            | AuthAction::Delete { table_name }
            | AuthAction::Update { table_name, .. }
            | AuthAction::AlterTable { table_name, .. }
            | AuthAction::CreateIndex { table_name, .. }
            | AuthAction::CreateTempIndex { table_name, .. }
            | AuthAction::CreateTrigger { table_name, .. }
            | AuthAction::CreateTempTrigger { table_name, .. }
            | AuthAction::DropIndex { table_name, .. }
            | AuthAction::DropTempIndex { table_name, .. }
            | AuthAction::DropTrigger { table_name, .. }
            | AuthAction::DropTempTrigger { table_name, .. }
                if is_internal_table(table_name) =>
            {
                Some(no_such_table(table_name))
            }
            AuthAction::CreateTable { table_name }
            | AuthAction::CreateTempTable { table_name }
            | AuthAction::CreateVtable { table_name, .. }
                if is_internal_object(table_name) =>
            {
                Some(reserved(table_name))
            }
            AuthAction::CreateView { view_name } | AuthAction::CreateTempView { view_name }
                if is_internal_object(view_name) =>
            {
                Some(reserved(view_name))
            }
            AuthAction::CreateIndex { index_name, .. }
            | AuthAction::CreateTempIndex { index_name, .. }
                if is_internal_object(index_name) =>
            {
                Some(reserved(index_name))
            }
            AuthAction::CreateTrigger { trigger_name, .. }
            | AuthAction::CreateTempTrigger { trigger_name, .. }
                if is_internal_object(trigger_name) =>
            {
                Some(reserved(trigger_name))
            }
            _ => None,
        }
    }
}

/// The authorizer's answer for a decision, recording a refusal's reason in `refusal`.
pub(super) fn answer(decision: Decision, refusal: &Mutex<Option<String>>) -> Authorization {
    match decision {
        Decision::Ignore => Authorization::Ignore,
        Decision::Refuse(reason) => {
            if let Ok(mut slot) = refusal.lock() {
                *slot = Some(reason);
            }
            Authorization::Deny
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Files handed to users
// ---------------------------------------------------------------------------------------------

/// Removes raftlite's own tables from the SQLite file at `path`: a copy about to be handed to a
/// user (`GET /db/backup`), which nobody else has open. Their pages are zeroed
/// (`secure_delete`), and `sqlite_stat1`/`sqlite_stat4` lose their rows about them, so the file
/// holds the user's schema and data only. raftlite loads such a file like any SQLite file.
pub fn strip_internal_tables(path: &Path) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "secure_delete", true)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let tables = quoted_list(&INTERNAL_TABLES);
    for stat in ["sqlite_stat1", "sqlite_stat4"] {
        let exists: bool = tx.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [stat],
            |r| r.get(0),
        )?;
        if exists {
            tx.execute_batch(&format!("DELETE FROM {stat} WHERE tbl IN ({tables})"))?;
        }
    }
    for table in INTERNAL_TABLES {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
    }
    tx.commit()?;
    conn.close().map_err(|(_, e)| StoreError::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names() {
        for name in [
            "_raftlite_meta",
            "_RAFTLITE_META",
            "_raftlite_restore",
            "sqlite_autoindex__raftlite_meta_1",
            "sqlite_autoindex__raftlite_restore_12",
            "_raftlite_schema",
        ] {
            assert!(is_internal_object(name), "{name}");
        }
        for name in [
            "t",
            "_raftlite_metadata",
            "sqlite_autoindex__raftlite_meta_",
            "sqlite_autoindex__raftlite_meta_x",
            "sqlite_autoindex_t_1",
            "sqlite_master",
        ] {
            assert!(!is_internal_object(name), "{name}");
        }
        assert!(is_internal_text(
            "CREATE TABLE _raftlite_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        ));
        assert!(is_internal_text(
            "create table if not exists main.\"_raftlite_restore\"(x)"
        ));
        assert!(!is_internal_text("CREATE TABLE t(_raftlite_meta)"));
        assert!(!is_internal_text("CREATE INDEX i ON t(x)"));
    }

    #[test]
    fn schema_reads_are_rewritten_whatever_their_spelling() {
        let v = "temp.\"_raftlite_schema\"";
        let tv = "temp.\"_raftlite_temp_schema\"";
        let cases = [
            ("SELECT * FROM sqlite_master", format!("SELECT * FROM {v}")),
            ("select * from SQLITE_SCHEMA", format!("select * from {v}")),
            (
                "SELECT * FROM main.sqlite_master m",
                format!("SELECT * FROM {v} m"),
            ),
            (
                "SELECT main . \"sqlite_schema\".name FROM [sqlite_master]",
                format!("SELECT {v}.name FROM {v}"),
            ),
            (
                "SELECT * FROM temp.sqlite_master",
                format!("SELECT * FROM {tv}"),
            ),
            (
                "SELECT * FROM sqlite_temp_schema",
                format!("SELECT * FROM {tv}"),
            ),
            (
                "SELECT count(*) FROM pragma_table_list",
                "SELECT count(*) FROM temp.\"_raftlite_table_list\"".to_string(),
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(rewrite(sql).as_deref(), Some(want.as_str()), "{sql}");
        }
        for sql in [
            "SELECT 'sqlite_master'",
            "SELECT 1 -- sqlite_master",
            "SELECT * FROM t /* sqlite_master */",
            "SELECT t.sqlite_master FROM t",
            "SELECT * FROM pragma_table_list('t')",
            "SELECT * FROM t",
        ] {
            assert_eq!(rewrite(sql), None, "{sql}");
        }
    }

    use crate::engine::tests::{pos, T};
    use crate::engine::{Store, StoreOptions};
    use crate::types::{Rows, TimelineRecord, WriteRequest};

    const USER_SCHEMA: [&str; 5] = [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT UNIQUE)",
        "CREATE INDEX t_v ON t(v, id)",
        "CREATE VIEW tv AS SELECT v FROM t",
        "CREATE TABLE log(msg)",
        "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (NEW.v); END",
    ];

    /// A store whose meta and restore tables hold rows, with `user` applied.
    fn store_with(dir: &Path, user: &[&str]) -> Store {
        let store = Store::open(&dir.join("db.sqlite"), StoreOptions::default()).unwrap();
        let timeline = TimelineRecord {
            id: "t1".into(),
            counter: 1,
            parent: None,
            parent_index: None,
            reason: "bootstrap".into(),
            at_unix_ms: 1,
        };
        store.apply_init_timeline(pos(1), &timeline).unwrap();
        store.apply_membership(pos(2), Some("{}")).unwrap();
        store
            .apply_restore_chunk(pos(3), "rid", 0, b"chunk")
            .unwrap();
        if !user.is_empty() {
            write(&store, 4, user);
        }
        store
    }

    fn write(store: &Store, index: u64, sqls: &[&str]) -> Vec<StatementResult> {
        let request = WriteRequest {
            statements: sqls.iter().map(|s| Statement::new(*s)).collect(),
            transaction: false,
        };
        store
            .apply_write(pos(index), T, &[request])
            .unwrap()
            .remove(0)
    }

    /// What plain SQLite answers, in the shape of a [`StatementResult`] (time left at 0).
    fn plain(conn: &Connection, sql: &str) -> StatementResult {
        let run = || -> rusqlite::Result<StatementResult> {
            let mut stmt = conn.prepare(sql)?;
            let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
            let decls: Vec<String> = stmt
                .columns()
                .map(|c| c.decl_type().unwrap_or("").to_lowercase())
                .collect();
            let mut types = decls.clone();
            let n = columns.len();
            let mut values: Vec<Vec<Value>> = Vec::new();
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                // The same conversions the engine applies to a client's rows.
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    out.push(
                        crate::results::column_value(row.get_ref(i)?, &decls[i], &types[i])
                            .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))?,
                    );
                }
                if values.is_empty() {
                    crate::results::fill_empty_types(&mut types, &out);
                }
                values.push(out);
            }
            Ok(StatementResult::Rows(Rows {
                columns,
                types,
                values,
                time_secs: 0.0,
            }))
        };
        run().unwrap_or_else(|e| StatementResult::Error(e.to_string()))
    }

    /// `result` without its time, with the values of columns `rootpage` and `rowid` (where
    /// raftlite's tables come first) masked, rows sorted.
    fn comparable(result: StatementResult) -> StatementResult {
        match result {
            StatementResult::Rows(mut rows) => {
                rows.time_secs = 0.0;
                for (i, column) in rows.columns.iter().enumerate() {
                    if column == "rootpage" || column == "rowid" {
                        for row in &mut rows.values {
                            if let Some(Value::Integer(n)) = row.get_mut(i) {
                                *n = 0;
                            }
                        }
                    }
                }
                // PRAGMA table_list lists in hash order.
                rows.values.sort_by_key(|row| format!("{row:?}"));
                StatementResult::Rows(rows)
            }
            other => other,
        }
    }

    /// Queries that list or count schema objects answer exactly what a plain SQLite database
    /// with the same user schema answers: on a fresh node (nothing) and with user objects.
    #[test]
    fn schema_queries_answer_as_a_database_without_internal_tables() {
        let queries = [
            "SELECT * FROM sqlite_master",
            "SELECT * FROM sqlite_schema ORDER BY name",
            "SELECT type, name, tbl_name, sql FROM main.sqlite_master ORDER BY 2",
            "SELECT name FROM \"sqlite_master\" WHERE type = 'table' ORDER BY name",
            "SELECT sqlite_master.name FROM sqlite_master ORDER BY 1",
            "SELECT count(*) FROM sqlite_master",
            "SELECT count(*), group_concat(name) FROM (SELECT name FROM sqlite_schema ORDER BY 1)",
            "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             ORDER BY 1, 2",
            "SELECT rowid, name FROM sqlite_master ORDER BY rowid",
            "SELECT * FROM sqlite_temp_master",
            "SELECT count(*) FROM temp.sqlite_master",
            "PRAGMA table_list",
            "SELECT * FROM pragma_table_list ORDER BY schema, name",
            "SELECT count(*) FROM pragma_table_list",
            "PRAGMA table_info(_raftlite_meta)",
            "PRAGMA index_list('_raftlite_meta')",
            "SELECT * FROM pragma_table_info('_raftlite_meta')",
            "SELECT * FROM _raftlite_meta",
            "SELECT count(*) FROM _raftlite_restore",
        ];
        for user in [&[][..], &USER_SCHEMA[..]] {
            let dir = tempfile::tempdir().unwrap();
            let store = store_with(dir.path(), user);
            let twin = Connection::open(dir.path().join("twin.sqlite")).unwrap();
            for sql in user {
                twin.execute_batch(sql).unwrap();
            }
            for sql in queries {
                let ours = comparable(store.query(&[Statement::new(sql)]).unwrap().remove(0));
                assert_eq!(
                    ours,
                    comparable(plain(&twin, sql)),
                    "{sql} (user objects: {})",
                    user.len()
                );
            }
            // The meta is untouched.
            assert_eq!(
                store.meta().unwrap().applied,
                Some(pos(if user.is_empty() { 3 } else { 4 }))
            );
        }
    }

    #[test]
    fn a_fresh_database_lists_no_objects_with_the_schema_table_types() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &[]);
        let result = store
            .query(&[Statement::new("SELECT * FROM sqlite_master")])
            .unwrap();
        match &result[0] {
            StatementResult::Rows(rows) => {
                assert_eq!(
                    rows.columns,
                    ["type", "name", "tbl_name", "rootpage", "sql"]
                );
                assert_eq!(rows.types, ["text", "text", "text", "int", "text"]);
                assert!(rows.values.is_empty(), "{rows:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Writes naming an internal table fail as for a table that does not exist, and a "drop
    /// every table" loop ends with an empty schema while the meta stays.
    #[test]
    fn internal_tables_cannot_be_named_and_drop_every_table_terminates() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &USER_SCHEMA);
        let twin = Connection::open(dir.path().join("twin.sqlite")).unwrap();
        let statements = [
            "DROP TABLE IF EXISTS _raftlite_meta",
            "DROP TABLE _raftlite_meta",
            "drop table _RAFTLITE_RESTORE",
            "DELETE FROM _raftlite_meta",
            "INSERT INTO _raftlite_meta VALUES ('a', 'b')",
            "UPDATE _raftlite_restore SET len = 0",
            "CREATE INDEX i ON _raftlite_meta(value)",
            "ALTER TABLE _raftlite_meta RENAME TO m",
        ];
        for (i, sql) in statements.into_iter().enumerate() {
            let ours = write(&store, 10 + i as u64, &[sql]).remove(0);
            let want = twin.execute_batch(sql).map_err(|e| e.to_string());
            match (ours, want) {
                (StatementResult::Execute { rows_affected, .. }, Ok(())) => {
                    assert_eq!(rows_affected, 0, "{sql}")
                }
                (StatementResult::Error(ours), Err(want)) => {
                    assert!(ours.starts_with("no such table"), "{sql}: {ours}");
                    assert!(want.starts_with("no such table"), "{sql}: {want}");
                }
                (ours, want) => panic!("{sql}: {ours:?} vs {want:?}"),
            }
        }
        let refused = write(&store, 30, &["CREATE TABLE _raftlite_meta(x)"]).remove(0);
        assert!(
            matches!(&refused, StatementResult::Error(e) if e.contains("reserved")),
            "{refused:?}"
        );
        // The schema read in a write (on the writer) is filtered too.
        let names = match write(
            &store,
            31,
            &["SELECT name FROM sqlite_master WHERE type = 'table'"],
        )
        .remove(0)
        {
            StatementResult::Rows(rows) => rows.values,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            names,
            vec![
                vec![Value::Text("t".into())],
                vec![Value::Text("log".into())]
            ]
        );
        // Schema changes of user tables (SQLite re-reads the whole schema for some) and
        // whole-database statements still work.
        let changes = [
            "ALTER TABLE log RENAME TO log2",
            "ALTER TABLE log2 ADD COLUMN c",
            "ALTER TABLE log2 RENAME COLUMN c TO d",
            "ALTER TABLE log2 DROP COLUMN d",
            "ALTER TABLE log2 RENAME TO log",
            "ANALYZE",
            "REINDEX",
            "PRAGMA integrity_check",
        ];
        for (i, sql) in changes.into_iter().enumerate() {
            let done = write(&store, 32 + i as u64, &[sql]).remove(0);
            assert!(
                !matches!(done, StatementResult::Error(_)),
                "{sql}: {done:?}"
            );
        }
        // Drop every table until none is left.
        let mut index = 40;
        for _ in 0..10 {
            let listed = store
                .query(&[Statement::new(
                    "SELECT name FROM sqlite_master WHERE type = 'table'",
                )])
                .unwrap()
                .remove(0);
            let StatementResult::Rows(rows) = listed else {
                panic!("{listed:?}")
            };
            if rows.values.is_empty() {
                break;
            }
            for row in rows.values {
                let Value::Text(name) = &row[0] else {
                    panic!("{row:?}")
                };
                let dropped = write(&store, index, &[&format!("DROP TABLE \"{name}\"")]).remove(0);
                assert!(
                    !matches!(dropped, StatementResult::Error(_)),
                    "{name}: {dropped:?}"
                );
                index += 1;
            }
        }
        let left = store
            .query(&[Statement::new(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            )])
            .unwrap()
            .remove(0);
        assert!(
            matches!(&left, StatementResult::Rows(r) if r.values == vec![vec![Value::Integer(0)]]),
            "{left:?}"
        );
        assert_eq!(store.meta().unwrap().applied, Some(pos(index - 1)));
        assert!(store.pending_restore().unwrap().is_some());
    }

    #[test]
    fn a_stripped_copy_holds_the_user_schema_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &USER_SCHEMA);
        write(&store, 5, &["INSERT INTO t(v) VALUES ('x')", "ANALYZE"]);
        let copy = dir.path().join("copy.sqlite");
        store.snapshot_to(&copy).unwrap();
        strip_internal_tables(&copy).unwrap();
        let conn = Connection::open(&copy).unwrap();
        let mut names: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        names.retain(|n| !n.starts_with("sqlite_autoindex_t_"));
        assert_eq!(names, ["log", "t", "t_log", "t_v", "tv"]);
        let stats: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_stat1 WHERE tbl LIKE '_raftlite%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stats, 0);
        drop(conn);
        let bytes = std::fs::read(&copy).unwrap();
        assert!(
            !bytes
                .windows(b"timeline_history".len())
                .any(|w| w == b"timeline_history"),
            "the meta's rows are zeroed"
        );
        assert_eq!(crate::engine::probe(&copy).unwrap().unwrap().applied, None);
    }

    #[test]
    fn the_row_filter_drops_rows_about_internal_objects() {
        let text = |s: &str| Value::Text(s.to_string());
        let meta = [text("table"), text("_raftlite_meta"), Value::Integer(2)];
        let user = [text("table"), text("t"), Value::Integer(3)];
        assert!(!RowFilter::NoInternal.shows(&meta));
        assert!(RowFilter::NoInternal.shows(&user));
        assert!(RowFilter::All.shows(&meta));
        assert!(!RowFilter::None.shows(&user));
    }
}
