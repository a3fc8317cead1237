//! Tests of `engine/read.rs`: queries, their limits and the reader pool.

use std::time::Instant;

use super::*;
use crate::engine::sql::is_pragma_value_read;
use crate::error::StoreError;

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
