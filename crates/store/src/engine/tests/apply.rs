//! Tests of `engine/apply.rs` and of running a client's statements (`engine/sql.rs`).

use super::*;
use crate::engine::probe;

#[test]
fn applied_position_is_stored_with_the_data_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.meta().unwrap().applied, None);
    let r = store
        .apply_write(
            pos(3),
            T,
            &[req(
                &[
                    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                    "INSERT INTO t(v) VALUES ('a')",
                ],
                false,
            )],
        )
        .unwrap();
    assert_eq!(
        r[0][1],
        StatementResult::Execute {
            last_insert_id: 1,
            rows_affected: 1,
            time_secs: match &r[0][1] {
                StatementResult::Execute { time_secs, .. } => *time_secs,
                _ => 0.0,
            }
        }
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.meta().unwrap().applied, Some(pos(3)));
    assert_eq!(
        probe(&dir.path().join("db.sqlite"))
            .unwrap()
            .unwrap()
            .applied,
        Some(pos(3))
    );
}

#[test]
fn transaction_request_rolls_back_on_first_error_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_write(
            pos(1),
            T,
            &[req(&["CREATE TABLE t(id INTEGER PRIMARY KEY)"], false)],
        )
        .unwrap();
    let results = store
        .apply_write(
            pos(2),
            T,
            &[
                req(
                    &[
                        "INSERT INTO t VALUES (1)",
                        "INSERT INTO nope VALUES (1)",
                        "INSERT INTO t VALUES (2)",
                    ],
                    true,
                ),
                req(
                    &[
                        "INSERT INTO t VALUES (10)",
                        "INSERT INTO nope VALUES (1)",
                        "INSERT INTO t VALUES (11)",
                    ],
                    false,
                ),
            ],
        )
        .unwrap();
    assert_eq!(results[0].len(), 2, "transaction stops at the first error");
    assert!(matches!(results[0][1], StatementResult::Error(_)));
    assert_eq!(results[1].len(), 3);
    let rows = store
        .query(&[Statement::new("SELECT id FROM t ORDER BY id")])
        .unwrap();
    match &rows[0] {
        StatementResult::Rows(r) => assert_eq!(
            r.values,
            vec![vec![Value::Integer(10)], vec![Value::Integer(11)]]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn transaction_control_and_meta_writes_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = store
        .apply_write(
            pos(1),
            T,
            &[req(
                &["BEGIN", "COMMIT", "DELETE FROM _raftlite_meta"],
                false,
            )],
        )
        .unwrap();
    for result in &r[0] {
        match result {
            StatementResult::Error(e) => assert!(
                e.contains("not allowed") || e == "no such table: _raftlite_meta",
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(store.meta().unwrap().applied, Some(pos(1)));
}

#[test]
fn pragmas_that_would_change_the_log_connections_are_refused_wherever_they_hide() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let hidden = [
        "SELECT 1; PRAGMA synchronous=OFF",
        "/* note */ PRAGMA query_only = 1",
        "-- x\nPRAGMA main.journal_mode=DELETE",
        "SELECT 1; PRAGMA journal_mode(MEMORY)",
        "SELECT 1; pragma WAL_AUTOCHECKPOINT=0",
        "SELECT 1; PRAGMA wal_checkpoint",
    ];
    let r = store
        .apply_write(pos(1), T, &[req(&hidden, false)])
        .unwrap();
    for (sql, result) in hidden.iter().zip(&r[0]) {
        match result {
            StatementResult::Error(e) => {
                assert!(e.starts_with("disallowed pragma"), "{sql}: {e}")
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    let conn = store.writer();
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 1, "synchronous stays NORMAL");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(conn);
    // Reading them, and other pragmas, still works.
    let r = store
        .apply_write(
            pos(2),
            T,
            &[req(
                &[
                    "PRAGMA journal_mode",
                    "PRAGMA synchronous",
                    "PRAGMA foreign_keys=ON",
                ],
                false,
            )],
        )
        .unwrap();
    assert!(
        r[0].iter().all(|r| !matches!(r, StatementResult::Error(_))),
        "{r:?}"
    );
}

#[test]
fn or_rollback_request_is_answered_with_an_error_and_the_rest_of_the_entry_applies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_write(
            pos(1),
            T,
            &[req(
                &[
                    "CREATE TABLE t(id INTEGER PRIMARY KEY)",
                    "INSERT INTO t VALUES (1)",
                ],
                false,
            )],
        )
        .unwrap();
    let r = store
        .apply_write(
            pos(2),
            T,
            &[
                req(&["INSERT INTO t VALUES (2)"], false),
                req(&["INSERT OR ROLLBACK INTO t VALUES (1)"], false),
                req(&["INSERT INTO t VALUES (3)"], false),
            ],
        )
        .unwrap();
    assert!(matches!(r[1][0], StatementResult::Error(_)));
    let rows = store
        .query(&[Statement::new("SELECT count(*) FROM t")])
        .unwrap();
    match &rows[0] {
        StatementResult::Rows(r) => assert_eq!(r.values, vec![vec![Value::Integer(3)]]),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.meta().unwrap().applied, Some(pos(2)));
}

#[test]
fn params_bind_positional_and_named_and_queries_report_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = store
        .apply_write(
            pos(1),
            T,
            &[WriteRequest {
                statements: vec![
                    Statement::new("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, b BLOB)"),
                    Statement::with_params(
                        "INSERT INTO t(name, b) VALUES (?, ?)",
                        vec![Value::Text("x".into()), Value::Blob(vec![1, 2])],
                    ),
                    Statement {
                        sql: "INSERT INTO t(name) VALUES (:name)".into(),
                        params: Params::Named(vec![("name".into(), Value::Text("y".into()))]),
                    },
                    Statement::with_params("INSERT INTO t(name) VALUES (?)", vec![]),
                ],
                transaction: false,
            }],
        )
        .unwrap();
    assert_eq!(
        r[0][3],
        StatementResult::Error("not enough args to execute query: want 1 got 0".into())
    );
    let q = store
        .query(&[Statement::new("SELECT id, name, b, 1+1 FROM t ORDER BY id")])
        .unwrap();
    match &q[0] {
        StatementResult::Rows(rows) => {
            assert_eq!(rows.columns, vec!["id", "name", "b", "1+1"]);
            // rqlite's populateEmptyTypes: the expression's type from the first row.
            assert_eq!(rows.types, vec!["integer", "text", "blob", "integer"]);
            assert_eq!(rows.values[0][2], Value::Blob(vec![1, 2]));
            assert_eq!(rows.values[1][1], Value::Text("y".into()));
        }
        other => panic!("{other:?}"),
    }
    let refused = store
        .query(&[Statement::new("INSERT INTO t(name) VALUES ('z')")])
        .unwrap();
    assert!(matches!(&refused[0], StatementResult::Error(_)));
}

fn exec(last_insert_id: i64, rows_affected: u64) -> StatementResult {
    StatementResult::Execute {
        last_insert_id,
        rows_affected,
        time_secs: 0.0,
    }
}

fn without_times(results: Vec<Vec<StatementResult>>) -> Vec<Vec<StatementResult>> {
    results
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|s| match s {
                    StatementResult::Execute {
                        last_insert_id,
                        rows_affected,
                        ..
                    } => exec(last_insert_id, rows_affected),
                    StatementResult::Rows(rows) => StatementResult::Rows(Rows {
                        time_secs: 0.0,
                        ..rows
                    }),
                    other => other,
                })
                .collect()
        })
        .collect()
}

/// rqlite's ExecuteResult is go-sqlite3's SQLiteResult, read right after the step
/// (`_sqlite3_step_row_internal` in rqlite+go-sqlite3 sqlite3.go; db/db.go
/// executeStmtWithConn): sqlite3_last_insert_rowid and sqlite3_changes of the connection.
/// Statements that are no INSERT/UPDATE/DELETE leave both as they were; each request here
/// starts from a fresh connection's 0 and 0, on every node and after a restart.
#[test]
fn execute_results_are_the_connections_rowid_and_changes() {
    let entries: Vec<Vec<WriteRequest>> = vec![
        vec![req(
            &[
                "CREATE TABLE t(id INTEGER PRIMARY KEY, x)",
                "CREATE TABLE log(y)",
                "CREATE TRIGGER tr AFTER UPDATE ON t BEGIN \
                 INSERT INTO log VALUES (1); INSERT INTO log VALUES (2); END",
                "INSERT INTO t VALUES (5, 'a')",
                "INSERT INTO t VALUES (6, 'b')",
            ],
            false,
        )],
        vec![
            // The first statement of a request: a fresh connection's values.
            req(&["CREATE TABLE u(z)"], false),
            req(
                &[
                    // One row updated; the trigger's two inserts count neither as
                    // changes nor as the last rowid.
                    "UPDATE t SET x = 'c' WHERE id = 5",
                    // DDL keeps the previous statement's values.
                    "DROP TABLE u",
                    "DELETE FROM t WHERE id = 6",
                    // The same rowid again is still reported.
                    "INSERT INTO t VALUES (6, 'd')",
                    "UPDATE t SET x = x WHERE 0",
                ],
                false,
            ),
        ],
    ];
    let want = [
        vec![vec![
            exec(0, 0),
            exec(0, 0),
            exec(0, 0),
            exec(5, 1),
            exec(6, 1),
        ]],
        vec![
            vec![exec(0, 0)],
            vec![exec(0, 1), exec(0, 1), exec(0, 1), exec(6, 1), exec(6, 0)],
        ],
    ];
    let run = |store: &Store, i: usize| {
        without_times(
            store
                .apply_write(pos(i as u64 + 1), T, &entries[i])
                .unwrap(),
        )
    };
    // Two nodes applying the same entries, and one that restarts between them.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(dirs[0].path());
    let b = open(dirs[1].path());
    let c = open(dirs[2].path());
    for (i, want) in want.iter().enumerate() {
        assert_eq!(&run(&a, i), want, "entry {i} on a");
        assert_eq!(&run(&b, i), want, "entry {i} on b");
    }
    assert_eq!(run(&c, 0), want[0]);
    drop(c);
    let c = open(dirs[2].path());
    assert_eq!(run(&c, 1), want[1]);
}

/// go-sqlite3 `SQLiteConn.exec` takes as many values as the statement has parameters and
/// `SQLiteStmt.bind` skips names it does not find (rqlite+go-sqlite3 sqlite3.go).
#[test]
fn extra_and_unknown_parameters_are_left_out_as_in_go_sqlite3() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = store
        .apply_write(
            pos(1),
            T,
            &[WriteRequest {
                statements: vec![
                    Statement::new("CREATE TABLE t(a, b)"),
                    Statement::with_params(
                        "INSERT INTO t VALUES (?, 2)",
                        vec![Value::Integer(1), Value::Integer(9)],
                    ),
                    Statement {
                        sql: "INSERT INTO t VALUES (:a, $a)".into(),
                        params: Params::Named(vec![
                            ("a".into(), Value::Integer(3)),
                            ("zz".into(), Value::Integer(9)),
                        ]),
                    },
                    Statement::new("INSERT INTO t VALUES (?, ?)"),
                ],
                transaction: false,
            }],
        )
        .unwrap();
    assert_eq!(
        r[0][3],
        StatementResult::Error("not enough args to execute query: want 2 got 0".into())
    );
    let q = store
        .query(&[Statement::new("SELECT a, b FROM t ORDER BY rowid")])
        .unwrap();
    match &q[0] {
        StatementResult::Rows(rows) => assert_eq!(
            rows.values,
            vec![
                vec![Value::Integer(1), Value::Integer(2)],
                vec![Value::Integer(3), Value::Integer(3)],
            ]
        ),
        other => panic!("{other:?}"),
    }
}

/// go-sqlite3's Error.Error() is sqlite3_errmsg (rqlite+go-sqlite3 error.go, lastError in
/// sqlite3.go), for prepare and step errors alike.
#[test]
fn statement_errors_are_sqlites_message_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = store
        .apply_write(
            pos(1),
            T,
            &[req(
                &[
                    "CREATE TABLE t(x UNIQUE NOT NULL)",
                    "INSERT INTO t VALUES (1)",
                    "INSERT INTO t VALUES (1)",
                    "INSERT INTO t VALUES (NULL)",
                    "INSERT blah blah",
                    "SELECT * FROM nowhere",
                ],
                false,
            )],
        )
        .unwrap();
    let errors: Vec<&str> = r[0]
        .iter()
        .filter_map(|s| match s {
            StatementResult::Error(e) => Some(e.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        [
            "UNIQUE constraint failed: t.x",
            "NOT NULL constraint failed: t.x",
            "near \"blah\": syntax error",
            "no such table: nowhere",
        ]
    );
    let q = store
        .query(&[Statement::new("SELECT nope FROM t")])
        .unwrap();
    assert_eq!(q, [StatementResult::Error("no such column: nope".into())]);
}

#[test]
fn timeline_initializes_once_and_repeats_are_no_ops() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = TimelineRecord {
        id: "aa".into(),
        counter: 1,
        parent: None,
        parent_index: None,
        reason: "bootstrap".into(),
        at_unix_ms: 1,
    };
    let mut second = first.clone();
    second.id = "bb".into();
    assert_eq!(store.apply_init_timeline(pos(1), &first).unwrap(), first);
    assert_eq!(store.apply_init_timeline(pos(2), &second).unwrap(), first);
    assert_eq!(store.apply_init_timeline(pos(3), &first).unwrap(), first);
    assert_eq!(store.meta().unwrap().timeline_history, vec![first]);
}
