//! raftlite's own tables (`_raftlite_meta`, `_raftlite_restore`) are invisible to clients
//! (issue 17, item 6), against a real `raftlite` process: the schema a client reads, drops,
//! downloads and loads back is the user's own.

mod common;

use std::time::Duration;

use common::{
    check_results, first_values, http_get, http_get_raw, http_post_raw, query_at, urlencode,
    Cluster,
};
use serde_json::{json, Value};

fn query_body(base: &str, sql: &str) -> String {
    let (status, body) =
        http_get(&format!("{base}/db/query?q={}", urlencode(sql))).expect("GET /db/query");
    assert_eq!(status, 200, "{sql}: {body}");
    body
}

fn names(base: &str, sql: &str) -> Vec<String> {
    first_values(&query_at(base, sql, "weak").expect("query"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|row| match row.first() {
            Some(Value::String(s)) => s.clone(),
            other => panic!("{sql}: not a name: {other:?}"),
        })
        .collect()
}

fn execute(c: &Cluster, statements: Value) -> Value {
    c.nodes[0]
        .execute(statements.clone())
        .unwrap_or_else(|e| panic!("execute {statements}: {e}"))
}

/// The names of the objects in the schema of the SQLite file `path`.
fn file_objects(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open the downloaded file");
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master ORDER BY name")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("query");
    rows.collect::<Result<_, _>>().expect("names")
}

#[test]
fn clients_see_drop_download_and_load_the_user_schema_only() {
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();

    // A fresh node answers as a fresh rqlite node does: no rows, so no "values" (rqlite
    // command/encoding/json.go, `Rows.Values` is `omitempty`), the columns and the declared
    // types lower-cased (rqlite db/db.go, queryStmtWithConn: `strings.ToLower(
    // types[i].DatabaseTypeName())`; sqlite_master is declared `type text, name text, tbl_name
    // text, rootpage int, sql text`).
    let empty_schema = r#"{"results":[{"columns":["type","name","tbl_name","rootpage","sql"],"types":["text","text","text","int","text"]}]}"#;
    for sql in [
        "SELECT * FROM sqlite_master",
        "SELECT * FROM sqlite_schema",
        "SELECT * FROM main.sqlite_master",
    ] {
        assert_eq!(query_body(&base, sql), empty_schema, "{sql}");
    }
    assert_eq!(
        common::query_i64s(&base, "SELECT count(*) FROM sqlite_master", "weak"),
        Ok(vec![0])
    );
    assert_eq!(
        names(
            &base,
            "SELECT name FROM pragma_table_list WHERE schema = 'main'"
        ),
        ["sqlite_schema"]
    );

    // The internal tables behave as tables that do not exist.
    let resp = execute(
        &c,
        json!([
            "DROP TABLE IF EXISTS _raftlite_meta",
            "DROP TABLE _raftlite_meta",
            "SELECT * FROM _raftlite_meta"
        ]),
    );
    let results = &resp["results"];
    assert!(results[0].get("error").is_none(), "{resp}");
    assert_eq!(
        results[1]["error"], "no such table: _raftlite_meta",
        "{resp}"
    );
    assert_eq!(
        results[2]["error"], "no such table: _raftlite_meta",
        "{resp}"
    );

    // User objects.
    let resp = execute(
        &c,
        json!([
            "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT UNIQUE)",
            "CREATE INDEX t_name_id ON t(name, id)",
            "CREATE TABLE u(x)",
            "CREATE VIEW tv AS SELECT name FROM t",
            "INSERT INTO t(name) VALUES ('a'), ('b')",
            "INSERT INTO u VALUES (1)"
        ]),
    );
    check_results(&resp).unwrap_or_else(|e| panic!("{e}: {resp}"));
    let user_objects = ["sqlite_autoindex_t_1", "t", "t_name_id", "tv", "u"];
    assert_eq!(
        names(&base, "SELECT name FROM sqlite_master ORDER BY name"),
        user_objects
    );

    // The download holds the user's schema and data, nothing of raftlite's.
    let tmp = tempfile::tempdir().expect("tempdir");
    let backup = http_get_raw(&c.nodes[0].url("/db/backup")).expect("GET /db/backup");
    assert_eq!(backup.status, 200, "{}", backup.text());
    let file = tmp.path().join("backup.sqlite");
    std::fs::write(&file, &backup.body).expect("write the backup");
    assert_eq!(file_objects(&file), user_objects);
    for needle in [&b"_raftlite"[..], b"timeline_history"] {
        assert!(
            !backup.body.windows(needle.len()).any(|w| w == needle),
            "the file still holds {:?}",
            String::from_utf8_lossy(needle)
        );
    }

    // "Drop every table" ends with no tables (it looped forever on _raftlite_meta before).
    for round in 0.. {
        assert!(round < 5, "tables keep coming back");
        let tables = names(&base, "SELECT name FROM sqlite_master WHERE type = 'table'");
        if tables.is_empty() {
            break;
        }
        for table in tables {
            let resp = execute(&c, json!([format!("DROP TABLE \"{table}\"")]));
            check_results(&resp).unwrap_or_else(|e| panic!("DROP TABLE {table}: {e}"));
        }
    }
    assert_eq!(
        names(&base, "SELECT name FROM sqlite_master ORDER BY name"),
        ["tv"]
    );

    // The stripped file loads back (a restore on a new timeline).
    let resp = http_post_raw(
        &c.nodes[0].url("/db/load"),
        "application/octet-stream",
        backup.body.clone(),
    )
    .expect("POST /db/load");
    assert_eq!(resp.status, 200, "{}", resp.text());
    common::wait_for(
        || {
            (names(&base, "SELECT name FROM sqlite_master ORDER BY name") == user_objects)
                .then_some(())
        },
        Duration::from_secs(30),
        "the loaded schema",
    );
    assert_eq!(names(&base, "SELECT name FROM t ORDER BY id"), ["a", "b"]);
    // Writes go on after the load (the meta was made afresh).
    let resp = execute(&c, json!(["INSERT INTO u VALUES (2)"]));
    check_results(&resp).unwrap_or_else(|e| panic!("{e}: {resp}"));
    let status = c.nodes[0].status().expect("status");
    assert!(
        status["store"]["timeline_history"]
            .as_array()
            .is_some_and(|h| h.len() >= 2),
        "{status}"
    );
}
