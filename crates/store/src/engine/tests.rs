//! The engine's unit tests, by the part of the engine they test (`tests/*.rs`), and the set-ups
//! they share.

use std::path::Path;

use rusqlite::Connection;

use super::{EntryTime, Store, StoreOptions};
use crate::types::*;

mod apply;
mod files;
mod meta;
mod read;
mod restore;

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
    crate::hex::encode(&sha2::Sha256::digest(bytes))
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
