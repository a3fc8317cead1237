//! SQL text dumps (like the `sqlite3` shell's `.dump`) and splitting SQL text into statements.
//!
//! [`dump_sql`] streams a dump of a database to any [`Write`]r, row by row, so memory stays
//! bounded whatever the database size. raftlite's own tables ([`INTERNAL_TABLES`]: objects on
//! them and statistics about them too) and SQLite's internal tables are left out, except `sqlite_sequence` (dumped last among the tables, as
//! `DELETE FROM sqlite_sequence;` plus its rows, as `sqlite3` does) and the `sqlite_stat*`
//! tables (`ANALYZE sqlite_schema;` plus their rows, as `sqlite3` does).
//!
//! [`split_sql`] splits SQL text (a dump, a migration script) into complete statements with
//! SQLite's own `sqlite3_complete`, so `CREATE TRIGGER ... BEGIN ...; ...; END;` stays whole.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::engine::{is_internal_table, INTERNAL_TABLES};
use crate::error::StoreError;

fn write_err(e: std::io::Error) -> StoreError {
    StoreError::io(PathBuf::from("<SQL dump output>"), e)
}

/// Writes a SQL text dump of the `main` database of `conn` to `out`: `PRAGMA foreign_keys=OFF;
/// BEGIN TRANSACTION;`, each table's `CREATE` statement and its rows as `INSERT`s, then indexes,
/// triggers and views in schema order, then `COMMIT;`. Everything is read in one read
/// transaction (unless `conn` is already inside one), so the dump is consistent even while
/// another connection writes.
///
/// Virtual tables are dumped as their `CREATE VIRTUAL TABLE` statement plus `INSERT`s of their
/// visible columns (with the rowid for FTS tables); their shadow tables are left out because the
/// module rebuilds them. Contentless FTS tables cannot be reproduced this way.
pub fn dump_sql(conn: &Connection, out: &mut impl Write) -> Result<(), StoreError> {
    let own_transaction = conn.is_autocommit();
    if own_transaction {
        conn.execute_batch("BEGIN")?;
    }
    let result = dump_inner(conn, out);
    if own_transaction && !conn.is_autocommit() {
        // A read transaction: ending it cannot lose anything.
        let _ = conn.execute_batch("COMMIT");
    }
    result
}

/// [`dump_sql`] of the SQLite file at `path` (typically a snapshot copy nobody writes to),
/// opened read-only.
pub fn dump_file(path: &Path, out: &mut impl Write) -> Result<(), StoreError> {
    let conn = crate::engine::open_to_examine(path)?;
    dump_sql(&conn, out)
}

/// The sha256 (hex) of [`dump_file`]'s output for the SQLite file at `path`: a digest of the
/// user data and schema that two files with the same content share whatever their page layout,
/// free pages or raftlite bookkeeping. Point-in-time replay is checked with it against a later
/// base backup.
pub fn content_digest(path: &Path) -> Result<String, StoreError> {
    use sha2::Digest;

    struct Hashing(sha2::Sha256);
    impl Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(sha2::Sha256::new());
    // Buffered so each row's several small writes reach the hash as one.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut hashing);
    dump_file(path, &mut out)?;
    out.flush().map_err(write_err)?;
    drop(out);
    Ok(crate::hex::encode(&hashing.0.finalize()))
}

/// Writes a compacted copy of the SQLite file at `source` to `dest` (which must not exist) with
/// `VACUUM INTO`. For user downloads only: VACUUM renumbers rowids of tables without an
/// `INTEGER PRIMARY KEY`, so it is never used for Raft snapshots.
pub fn vacuum_copy(source: &Path, dest: &Path) -> Result<(), StoreError> {
    let target = dest
        .to_str()
        .ok_or_else(|| StoreError::Refused(format!("{} is not a UTF-8 path", dest.display())))?;
    let conn = crate::engine::open_to_examine(source)?;
    conn.execute("VACUUM INTO ?1", [target])?;
    Ok(())
}

struct SchemaTable {
    name: String,
    sql: String,
}

fn dump_inner(conn: &Connection, out: &mut impl Write) -> Result<(), StoreError> {
    out.write_all(b"PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n")
        .map_err(write_err)?;

    let shadow = shadow_tables(conn)?;
    let tables: Vec<SchemaTable> = {
        let mut stmt = conn.prepare(
            "SELECT name, sql FROM sqlite_schema \
             WHERE type = 'table' AND sql NOT NULL \
             ORDER BY name = 'sqlite_sequence', rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SchemaTable {
                name: r.get(0)?,
                sql: r.get(1)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };

    let mut analyzed = false;
    for table in &tables {
        let name = table.name.as_str();
        if is_internal_table(name) || shadow.contains(name) {
            continue;
        }
        if name == "sqlite_sequence" {
            out.write_all(b"DELETE FROM sqlite_sequence;\n")
                .map_err(write_err)?;
            dump_rows(conn, name, &Columns::All, None, out)?;
            continue;
        }
        if name.starts_with("sqlite_stat") {
            if !analyzed {
                out.write_all(b"ANALYZE sqlite_schema;\n")
                    .map_err(write_err)?;
                analyzed = true;
            }
            // Statistics of raftlite's own tables would name tables the dump does not create.
            let own = format!("tbl NOT IN ({})", internal_list());
            dump_rows(conn, name, &Columns::All, Some(&own), out)?;
            continue;
        }
        if starts_with_ignore_case(name, "sqlite_") {
            continue;
        }
        writeln!(out, "{};", table.sql).map_err(write_err)?;
        let columns = columns_to_dump(conn, name, &table.sql)?;
        dump_rows(conn, name, &columns, None, out)?;
    }

    let mut stmt = conn.prepare(&format!(
        "SELECT sql FROM sqlite_schema \
         WHERE sql NOT NULL AND type IN ('index', 'trigger', 'view') AND tbl_name NOT IN ({}) \
         ORDER BY rowid",
        internal_list()
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let sql: String = row.get(0)?;
        writeln!(out, "{sql};").map_err(write_err)?;
    }
    out.write_all(b"COMMIT;\n").map_err(write_err)?;
    out.flush().map_err(write_err)
}

/// [`INTERNAL_TABLES`] as an SQL list of strings.
fn internal_list() -> String {
    INTERNAL_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tables a virtual table module maintains (FTS5's `x_data`, R-tree's `x_node`...).
fn shadow_tables(conn: &Connection) -> Result<HashSet<String>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(names.collect::<Result<_, _>>()?)
}

/// Which columns of a table its `INSERT`s carry.
enum Columns {
    /// `SELECT *` and `INSERT INTO t VALUES(...)`.
    All,
    /// An explicit column list: some columns are generated or hidden, or the rowid is needed.
    Listed(Vec<String>),
}

fn columns_to_dump(conn: &Connection, table: &str, sql: &str) -> Result<Columns, StoreError> {
    let mut stmt = conn.prepare("SELECT name, hidden FROM pragma_table_xinfo(?1) ORDER BY cid")?;
    let all: Vec<(String, i64)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let visible: Vec<String> = all
        .iter()
        .filter(|(_, hidden)| *hidden == 0)
        .map(|(name, _)| name.clone())
        .collect();
    let is_virtual = starts_with_ignore_case(sql.trim_start(), "CREATE VIRTUAL TABLE");
    if is_virtual {
        let mut listed = Vec::with_capacity(visible.len() + 1);
        // FTS tables keep their rowids only when told; external-content FTS depends on them.
        if sql.to_ascii_lowercase().contains("using fts") {
            listed.push("rowid".to_string());
        }
        listed.extend(visible);
        return Ok(Columns::Listed(listed));
    }
    if visible.len() == all.len() {
        Ok(Columns::All)
    } else {
        Ok(Columns::Listed(visible))
    }
}

fn dump_rows(
    conn: &Connection,
    table: &str,
    columns: &Columns,
    filter: Option<&str>,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    let quoted = quote_ident(table);
    let (select, prefix) = match columns {
        Columns::All => (
            format!("SELECT * FROM {quoted}"),
            format!("INSERT INTO {quoted} VALUES("),
        ),
        Columns::Listed(names) => {
            if names.is_empty() {
                return Ok(());
            }
            let list = names
                .iter()
                .map(|n| quote_ident(n))
                .collect::<Vec<_>>()
                .join(",");
            (
                format!("SELECT {list} FROM {quoted}"),
                format!("INSERT INTO {quoted}({list}) VALUES("),
            )
        }
    };
    let select = match filter {
        Some(condition) => format!("{select} WHERE {condition}"),
        None => select,
    };
    let mut stmt = conn.prepare(&select)?;
    let count = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut line = String::new();
    while let Some(row) = rows.next()? {
        line.clear();
        line.push_str(&prefix);
        for i in 0..count {
            if i > 0 {
                line.push(',');
            }
            push_literal(&mut line, row.get_ref(i)?);
        }
        line.push_str(");\n");
        out.write_all(line.as_bytes()).map_err(write_err)?;
    }
    Ok(())
}

/// Appends `value` as a SQL literal that reads back as exactly the same value and type.
pub fn push_literal(out: &mut String, value: ValueRef<'_>) {
    match value {
        ValueRef::Null => out.push_str("NULL"),
        ValueRef::Integer(i) => out.push_str(&i.to_string()),
        ValueRef::Real(f) => {
            if f.is_infinite() {
                out.push_str(if f > 0.0 { "1e999" } else { "-1e999" });
            } else if f.is_nan() {
                // SQLite never stores NaN (it becomes NULL); kept for completeness.
                out.push_str("NULL");
            } else {
                // Rust's shortest round-trip form always has a '.' or an exponent, so SQLite
                // reads it back as the same REAL.
                out.push_str(&format!("{f:?}"));
            }
        }
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if !text.contains('\0') => {
                out.push('\'');
                out.push_str(&text.replace('\'', "''"));
                out.push('\'');
            }
            // A NUL cannot appear in a SQL string literal, and invalid UTF-8 would not survive
            // as text: write the exact bytes.
            _ => {
                out.push_str("CAST(");
                push_hex(out, bytes);
                out.push_str(" AS TEXT)");
            }
        },
        ValueRef::Blob(bytes) => push_hex(out, bytes),
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2 + 3);
    out.push_str("X'");
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0x0f) as usize] as char);
    }
    out.push('\'');
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// `name` as an identifier: bare when it is a plain word that is not a keyword, else
/// double-quoted (as the `sqlite3` shell does).
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && !is_keyword(name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn is_keyword(word: &str) -> bool {
    let Ok(len) = std::os::raw::c_int::try_from(word.len()) else {
        return true;
    };
    // SAFETY: the pointer and length describe `word`, which outlives the call; SQLite only
    // reads `len` bytes from it.
    unsafe { rusqlite::ffi::sqlite3_keyword_check(word.as_ptr().cast(), len) != 0 }
}

/// Whether `sql` is one or more complete SQL statements, by SQLite's own tokenizer.
pub fn is_complete(sql: &str) -> bool {
    // A NUL would end the C string early; SQL text with a NUL is never complete.
    let Ok(c) = CString::new(sql) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

/// Splits SQL text into statements, each ending with its `;` (the last one may lack it when the
/// text does). A `;` inside a string, a quoted identifier or a comment never splits; a `;` inside
/// `CREATE TRIGGER ... BEGIN ... END` does not either, because each candidate is confirmed with
/// `sqlite3_complete`. Pieces that hold only whitespace and comments are dropped.
pub fn split_sql(text: &str) -> Vec<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Normal,
        Quoted(u8),
        Bracket,
        LineComment,
        BlockComment,
    }
    let bytes = text.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut state = State::Normal;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match state {
            State::Normal => match b {
                b'\'' | b'"' | b'`' => state = State::Quoted(b),
                b'[' => state = State::Bracket,
                b'-' if next == Some(b'-') => {
                    state = State::LineComment;
                    i += 1;
                }
                b'/' if next == Some(b'*') => {
                    state = State::BlockComment;
                    i += 1;
                }
                b';' => {
                    let candidate = &text[start..=i];
                    if is_complete(candidate) {
                        if has_code(candidate) {
                            statements.push(candidate.trim().to_string());
                        }
                        start = i + 1;
                    }
                }
                _ => {}
            },
            // A doubled quote is an escaped quote: leaving and re-entering the state is the same.
            State::Quoted(q) if b == q => state = State::Normal,
            State::Bracket if b == b']' => state = State::Normal,
            State::LineComment if b == b'\n' => state = State::Normal,
            State::BlockComment if b == b'*' && next == Some(b'/') => {
                state = State::Normal;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let rest = &text[start.min(text.len())..];
    if has_code(rest) {
        statements.push(rest.trim().to_string());
    }
    statements
}

/// Whether `sql` holds anything but whitespace, comments and semicolons.
fn has_code(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = crate::sql_text::comment_end(bytes, i) {
            i = end;
            continue;
        }
        match bytes[i] {
            b if b.is_ascii_whitespace() || b == b';' => i += 1,
            _ => return true,
        }
    }
    false
}

/// The words of a statement, upper-cased, skipping comments; stops after `max` words.
fn leading_words(sql: &str, max: usize) -> Vec<String> {
    let mut words = Vec::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() && words.len() < max {
        if let Some(end) = crate::sql_text::comment_end(bytes, i) {
            i = end;
            continue;
        }
        match bytes[i] {
            b if b.is_ascii_alphanumeric() || b == b'_' => {
                let begin = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                words.push(sql[begin..i].to_ascii_uppercase());
            }
            b if b.is_ascii_whitespace() => i += 1,
            // Any other character ends the statement's leading words.
            _ => break,
        }
    }
    words
}

/// What a statement of loaded SQL text does to the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionControl {
    /// `BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE] [TRANSACTION]`.
    Begin,
    /// `COMMIT [TRANSACTION]` or `END [TRANSACTION]`.
    Commit,
    /// `ROLLBACK [TRANSACTION]` (not `ROLLBACK TO <savepoint>`).
    Rollback,
}

/// Whether `statement` (one statement, as [`split_sql`] returns) is transaction control.
pub fn transaction_control(statement: &str) -> Option<TransactionControl> {
    let words = leading_words(statement, 3);
    let first = words.first()?.as_str();
    match first {
        "BEGIN" => Some(TransactionControl::Begin),
        "COMMIT" | "END" => Some(TransactionControl::Commit),
        "ROLLBACK"
            if words.get(1).map(String::as_str) != Some("TO")
                && words.get(2).map(String::as_str) != Some("TO") =>
        {
            Some(TransactionControl::Rollback)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_digest_ignores_layout_and_bookkeeping_but_not_data() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.sqlite");
        let b = dir.path().join("b.sqlite");
        let ca = Connection::open(&a).unwrap();
        ca.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             CREATE TABLE junk(x); INSERT INTO junk VALUES (randomblob(100000)); DROP TABLE junk;
             INSERT INTO t VALUES (1, 'one'), (2, 'two');
             CREATE TABLE _raftlite_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO _raftlite_meta VALUES ('applied', '1');",
        )
        .unwrap();
        let cb = Connection::open(&b).unwrap();
        cb.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t VALUES (1, 'one'), (2, 'two');
             CREATE TABLE _raftlite_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO _raftlite_meta VALUES ('applied', '2');",
        )
        .unwrap();
        assert_eq!(content_digest(&a).unwrap(), content_digest(&b).unwrap());
        cb.execute("UPDATE t SET v = 'TWO' WHERE id = 2", [])
            .unwrap();
        assert_ne!(content_digest(&a).unwrap(), content_digest(&b).unwrap());
    }

    use super::*;
    use rusqlite::types::Value;

    fn sample_db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            r#"
            CREATE TABLE _raftlite_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO _raftlite_meta VALUES ('applied', '{"term":1}');
            CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, note);
            CREATE TABLE "my table" ("the key" TEXT, "order" INTEGER);
            CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
            CREATE TABLE gen (a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL,
                              c TEXT GENERATED ALWAYS AS (a || 'x') STORED);
            CREATE TABLE wr (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
            CREATE TABLE "order" (x);
            CREATE TABLE log (msg TEXT);
            CREATE INDEX t_name ON t(name);
            CREATE VIEW v AS SELECT id, name FROM t WHERE score > 0;
            CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
                INSERT INTO log VALUES ('trigger; fired');
                UPDATE log SET msg = msg || ';' WHERE rowid = last_insert_rowid();
            END;
            CREATE VIRTUAL TABLE docs USING fts5(title, body);
            "#,
        )
        .unwrap();
        let mut insert = conn
            .prepare("INSERT INTO t(id, name, score, data, note) VALUES (?1, ?2, ?3, ?4, ?5)")
            .unwrap();
        let rows: Vec<(i64, Value, Value, Value, Value)> = vec![
            (
                1,
                Value::Text("it's \"quoted\"; -- not a comment".into()),
                Value::Real(0.1),
                Value::Blob(vec![0, 1, 0xff]),
                Value::Null,
            ),
            (
                2,
                Value::Text("line1\nline2\r\n\ttab /* x */".into()),
                Value::Real(1e300),
                Value::Blob(vec![]),
                Value::Integer(i64::MIN),
            ),
            (
                3,
                Value::Text("nul\0inside".into()),
                Value::Real(-0.0),
                Value::Null,
                Value::Real(f64::INFINITY),
            ),
            (
                4,
                Value::Text("ünïcødé ✓".into()),
                Value::Real(-1.5e-310),
                Value::Blob(b"SQLite format 3\0".to_vec()),
                Value::Text("42".into()),
            ),
            (
                9_007_199_254_740_993,
                Value::Null,
                Value::Real(123456789.125),
                Value::Null,
                Value::Real(f64::NEG_INFINITY),
            ),
        ];
        for (id, name, score, data, note) in rows {
            insert
                .execute(rusqlite::params![id, name, score, data, note])
                .unwrap();
        }
        drop(insert);
        conn.execute_batch(
            r#"
            INSERT INTO "my table" VALUES ('a''b', 1), (NULL, 2);
            INSERT INTO seq(v) VALUES ('x'), ('y');
            DELETE FROM seq WHERE v = 'y';
            INSERT INTO gen(a) VALUES (1), (2);
            INSERT INTO wr VALUES ('k1', X'00'), ('k2', 2.5);
            INSERT INTO "order" VALUES ('select');
            INSERT INTO docs(rowid, title, body) VALUES (7, 'hello', 'world of sql');
            ANALYZE;
            "#,
        )
        .unwrap();
        conn
    }

    fn dump_of(conn: &Connection) -> String {
        let mut out = Vec::new();
        dump_sql(conn, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A table's name and its rows, each value with its SQLite type.
    type TableContents = (String, Vec<Vec<(String, Value)>>);

    /// Every user table's rows, in a stable order, with SQLite's own type of each value.
    fn contents(conn: &Connection) -> Vec<TableContents> {
        let mut tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_stat%' \
                 AND name != '_raftlite_meta' AND name NOT LIKE 'docs_%' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables.sort();
        tables
            .into_iter()
            .map(|t| {
                let q = quote_ident(&t);
                let mut stmt = conn
                    .prepare(&format!("SELECT *, typeof(1) FROM {q} ORDER BY 1, 2"))
                    .unwrap();
                let n = stmt.column_count() - 1;
                let rows = stmt
                    .query_map([], |r| {
                        let mut row = Vec::new();
                        for i in 0..n {
                            let v: Value = r.get(i)?;
                            let ty = match &v {
                                Value::Null => "null",
                                Value::Integer(_) => "integer",
                                Value::Real(_) => "real",
                                Value::Text(_) => "text",
                                Value::Blob(_) => "blob",
                            };
                            row.push((ty.to_string(), v));
                        }
                        Ok(row)
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                (t, rows)
            })
            .collect()
    }

    fn schema(conn: &Connection) -> Vec<(String, String, String)> {
        conn.prepare(
            "SELECT type, name, sql FROM sqlite_schema WHERE sql NOT NULL \
             AND name != '_raftlite_meta' ORDER BY type, name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn dump_round_trips_every_table_value_and_schema_object() {
        let source = sample_db();
        let dump = dump_of(&source);
        assert!(
            dump.starts_with("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"),
            "{dump}"
        );
        assert!(dump.ends_with("COMMIT;\n"), "{dump}");
        assert!(!dump.contains("_raftlite_meta"), "{dump}");
        assert!(dump.contains("DELETE FROM sqlite_sequence;\n"), "{dump}");
        assert!(
            dump.contains("INSERT INTO sqlite_sequence VALUES('seq',2);"),
            "{dump}"
        );
        assert!(dump.contains("X'0001ff'"), "{dump}");
        assert!(
            dump.contains("INSERT INTO \"order\" VALUES('select');"),
            "{dump}"
        );
        assert!(dump.contains("INSERT INTO gen(a) VALUES(1);"), "{dump}");
        assert!(
            !dump.contains("INSERT INTO docs_data"),
            "shadow tables are left out: {dump}"
        );
        assert!(
            dump.contains("INSERT INTO log VALUES('trigger; fired;');"),
            "{dump}"
        );

        let copy = Connection::open_in_memory().unwrap();
        copy.execute_batch(&dump).unwrap();
        assert_eq!(contents(&copy), contents(&source));
        assert_eq!(schema(&copy), schema(&source));
        let seq: i64 = copy
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'seq'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(seq, 2, "the AUTOINCREMENT counter survives");
        let hit: i64 = copy
            .query_row("SELECT rowid FROM docs WHERE docs MATCH 'world'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(hit, 7, "the full-text index is rebuilt with its rowids");
        // A dump of the copy is the same text: nothing drifts across repeated round trips.
        assert_eq!(dump_of(&copy), dump);
    }

    #[test]
    fn dump_through_split_statements_round_trips_too() {
        let source = sample_db();
        let dump = dump_of(&source);
        let statements = split_sql(&dump);
        assert_eq!(
            statements.first().map(String::as_str),
            Some("PRAGMA foreign_keys=OFF;")
        );
        let triggers: Vec<&String> = statements
            .iter()
            .filter(|s| s.starts_with("CREATE TRIGGER"))
            .collect();
        assert_eq!(
            triggers.len(),
            1,
            "the trigger body stays one statement: {statements:?}"
        );
        assert!(triggers[0].ends_with("END;"));
        let copy = Connection::open_in_memory().unwrap();
        copy.execute_batch("BEGIN").unwrap();
        for s in &statements {
            if transaction_control(s).is_some() {
                continue;
            }
            copy.execute_batch(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        copy.execute_batch("COMMIT").unwrap();
        assert_eq!(contents(&copy), contents(&source));
    }

    #[test]
    fn dump_file_and_vacuum_copy_work_on_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE t(v); \
                 WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500) \
                 INSERT INTO t SELECT x FROM c; DELETE FROM t WHERE v > 10;",
            )
            .unwrap();
        }
        let mut out = Vec::new();
        dump_file(&path, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("INSERT INTO t VALUES(10);"), "{text}");
        assert!(!text.contains("INSERT INTO t VALUES(11);"), "{text}");

        let vacuumed = dir.path().join("v.sqlite");
        vacuum_copy(&path, &vacuumed).unwrap();
        let conn = Connection::open(&vacuumed).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 10);
        assert!(vacuumed.metadata().unwrap().len() <= path.metadata().unwrap().len());
        assert!(matches!(
            dump_file(&dir.path().join("missing.sqlite"), &mut Vec::new()),
            Err(StoreError::NotADatabase { .. })
        ));
    }

    #[test]
    fn dump_of_an_empty_database_is_just_the_frame() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            dump_of(&conn),
            "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCOMMIT;\n"
        );
    }

    #[test]
    fn split_keeps_strings_comments_and_triggers_whole() {
        let text = "CREATE TABLE a(x); INSERT INTO a VALUES('x;y'); -- c;omment\n\
                    /* block; */ INSERT INTO \"we;ird\" VALUES (1);\n\
                    CREATE TRIGGER tr AFTER INSERT ON a BEGIN SELECT 1; SELECT 2; END;\n\
                    ;;  -- only a comment\n\
                    SELECT [semi;colon] FROM a";
        let parts = split_sql(text);
        assert_eq!(
            parts,
            vec![
                "CREATE TABLE a(x);".to_string(),
                "INSERT INTO a VALUES('x;y');".to_string(),
                "-- c;omment\n/* block; */ INSERT INTO \"we;ird\" VALUES (1);".to_string(),
                "CREATE TRIGGER tr AFTER INSERT ON a BEGIN SELECT 1; SELECT 2; END;".to_string(),
                "-- only a comment\nSELECT [semi;colon] FROM a".to_string(),
            ]
        );
        assert!(split_sql("  -- nothing\n /* at all */ ").is_empty());
        assert!(split_sql("").is_empty());
    }

    #[test]
    fn transaction_control_is_recognized() {
        use TransactionControl::*;
        for (sql, want) in [
            ("BEGIN TRANSACTION;", Some(Begin)),
            ("begin immediate;", Some(Begin)),
            ("/* x */ BEGIN;", Some(Begin)),
            ("COMMIT;", Some(Commit)),
            ("END TRANSACTION;", Some(Commit)),
            ("ROLLBACK; -- due to errors", Some(Rollback)),
            ("ROLLBACK TO sp;", None),
            ("ROLLBACK TRANSACTION TO SAVEPOINT sp;", None),
            (
                "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END;",
                None,
            ),
            ("INSERT INTO \"begin\" VALUES (1);", None),
            ("SAVEPOINT x;", None),
        ] {
            assert_eq!(transaction_control(sql), want, "{sql}");
        }
    }

    #[test]
    fn literals_read_back_as_the_same_values() {
        let conn = Connection::open_in_memory().unwrap();
        for v in [
            Value::Null,
            Value::Integer(-7),
            Value::Real(1.0),
            Value::Real(2.5e-8),
            Value::Real(f64::MAX),
            Value::Text(String::new()),
            Value::Text("''".into()),
            Value::Blob(vec![0xde, 0xad]),
        ] {
            let mut sql = String::from("SELECT ");
            push_literal(&mut sql, ValueRef::from(&v));
            let back: Value = conn.query_row(&sql, [], |r| r.get(0)).unwrap();
            assert_eq!(back, v, "{sql}");
        }
    }
}
