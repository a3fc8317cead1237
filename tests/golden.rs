//! Golden tests: exact HTTP status and body for rqlite-compatible requests against a real node.
//!
//! The cases run in order on one fresh single-node cluster (later cases see earlier writes).
//! Before comparing, values that legitimately vary are masked: `"time":<number>` becomes
//! `"time":T`, `"sequence_number":<n>` becomes `"sequence_number":S`, `"raft_index":<n>` becomes
//! `"raft_index":R`, `"time_s":"<text>"` becomes `"time_s":"TS"`, `"version":"<this version>"`
//! becomes `"version":"V"`, and the node's addresses become `HTTP` and `RAFT`. Everything else must match
//! to the byte, including key order and number formatting.

mod common;

use std::time::Duration;

use common::*;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    status: u16,
    expected: &'static str,
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

const fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: &'static str,
    status: u16,
    expected: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        content_type: JSON,
        body,
        status,
        expected,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "create table gives an empty result",
            "POST",
            "/db/execute",
            r#"["CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER, data BLOB, score REAL)"]"#,
            200,
            r#"{"results":[{}]}"#,
        ),
        case(
            "positional parameters",
            "POST",
            "/db/execute",
            r#"[["INSERT INTO foo(name, age) VALUES(?, ?)", "fiona", 20]]"#,
            200,
            r#"{"results":[{"last_insert_id":1,"rows_affected":1}]}"#,
        ),
        case(
            "named parameters",
            "POST",
            "/db/execute",
            r#"[["INSERT INTO foo(name, age) VALUES(:name, :age)", {"name": "declan", "age": 30}]]"#,
            200,
            r#"{"results":[{"last_insert_id":2,"rows_affected":1}]}"#,
        ),
        case(
            "several statements, one result each",
            "POST",
            "/db/execute",
            r#"["INSERT INTO foo(name) VALUES('a')", "INSERT INTO foo(name) VALUES('b')"]"#,
            200,
            r#"{"results":[{"last_insert_id":3,"rows_affected":1},{"last_insert_id":4,"rows_affected":1}]}"#,
        ),
        case(
            "query with declared types and nulls",
            "GET",
            "/db/query?q=SELECT%20*%20FROM%20foo%20WHERE%20id%3D1",
            "",
            200,
            r#"{"results":[{"columns":["id","name","age","data","score"],"types":["integer","text","integer","blob","real"],"values":[[1,"fiona",20,null,null]]}]}"#,
        ),
        case(
            "empty result omits values",
            "GET",
            "/db/query?q=SELECT%20id%2C%20name%20FROM%20foo%20WHERE%20id%3D100",
            "",
            200,
            r#"{"results":[{"columns":["id","name"],"types":["integer","text"]}]}"#,
        ),
        case(
            "associative rows",
            "GET",
            "/db/query?associative&q=SELECT%20id%2C%20name%20FROM%20foo%20WHERE%20id%3C%3D2",
            "",
            200,
            r#"{"results":[{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"},{"id":2,"name":"declan"}]}]}"#,
        ),
        case(
            "query through POST body",
            "POST",
            "/db/query",
            r#"["SELECT name FROM foo WHERE id = 2"]"#,
            200,
            r#"{"results":[{"columns":["name"],"types":["text"],"values":[["declan"]]}]}"#,
        ),
        case(
            "query with a positional parameter",
            "POST",
            "/db/query",
            r#"[["SELECT name FROM foo WHERE age > ?", 25]]"#,
            200,
            r#"{"results":[{"columns":["name"],"types":["text"],"values":[["declan"]]}]}"#,
        ),
        case(
            "blob parameter as a byte array",
            "POST",
            "/db/execute",
            r#"[["INSERT INTO foo(name, data) VALUES(?, ?)", "blob", [1, 2, 3]]]"#,
            200,
            r#"{"results":[{"last_insert_id":5,"rows_affected":1}]}"#,
        ),
        case(
            "blobs are base64 by default",
            "GET",
            "/db/query?q=SELECT%20data%20FROM%20foo%20WHERE%20id%3D5",
            "",
            200,
            r#"{"results":[{"columns":["data"],"types":["blob"],"values":[["AQID"]]}]}"#,
        ),
        case(
            "blob_array gives byte arrays",
            "GET",
            "/db/query?blob_array&q=SELECT%20data%20FROM%20foo%20WHERE%20id%3D5",
            "",
            200,
            r#"{"results":[{"columns":["data"],"types":["blob"],"values":[[[1,2,3]]]}]}"#,
        ),
        case(
            "bool, float and null parameters",
            "POST",
            "/db/execute",
            r#"[["INSERT INTO foo(name, age, score, data) VALUES(?, ?, ?, ?)", "typed", true, 2.5, null]]"#,
            200,
            r#"{"results":[{"last_insert_id":6,"rows_affected":1}]}"#,
        ),
        case(
            "they come back as integer, real and null",
            "GET",
            "/db/query?q=SELECT%20age%2C%20score%2C%20data%20FROM%20foo%20WHERE%20id%3D6",
            "",
            200,
            r#"{"results":[{"columns":["age","score","data"],"types":["integer","real","blob"],"values":[[1,2.5,null]]}]}"#,
        ),
        case(
            "SQL error in an execute is per statement, status 200",
            "POST",
            "/db/execute",
            r#"["INSERT INTO nope VALUES(1)"]"#,
            200,
            r#"{"results":[{"error":"no such table: nope"}]}"#,
        ),
        case(
            "SQL error in a query",
            "GET",
            "/db/query?q=SELECT%20*%20FROM%20nope",
            "",
            200,
            r#"{"results":[{"error":"no such table: nope"}]}"#,
        ),
        case(
            "without transaction, later statements still run",
            "POST",
            "/db/execute",
            r#"["INSERT INTO nope VALUES(1)", "INSERT INTO foo(name) VALUES('after error')"]"#,
            200,
            r#"{"results":[{"error":"no such table: nope"},{"last_insert_id":7,"rows_affected":1}]}"#,
        ),
        case(
            "transaction stops at the first error",
            "POST",
            "/db/execute?transaction",
            r#"["INSERT INTO foo(name) VALUES('t1')", "INSERT INTO nope VALUES(1)", "INSERT INTO foo(name) VALUES('t2')"]"#,
            200,
            r#"{"results":[{"last_insert_id":8,"rows_affected":1},{"error":"no such table: nope"}]}"#,
        ),
        case(
            "and rolls back what it did",
            "GET",
            "/db/query?q=SELECT%20count(*)%20FROM%20foo%20WHERE%20name%20LIKE%20't_'",
            "",
            200,
            r#"{"results":[{"columns":["count(*)"],"types":["integer"],"values":[[0]]}]}"#,
        ),
        case(
            "update reports rows affected only",
            "POST",
            "/db/execute",
            r#"["UPDATE foo SET score = 1.5 WHERE score IS NULL"]"#,
            200,
            r#"{"results":[{"rows_affected":6}]}"#,
        ),
        case(
            "delete",
            "POST",
            "/db/execute",
            r#"["DELETE FROM foo WHERE name = 'after error'"]"#,
            200,
            r#"{"results":[{"rows_affected":1}]}"#,
        ),
        case(
            "text/plain body is one statement",
            "POST",
            "/db/execute",
            "",
            200,
            "",
        ),
        case(
            "unified endpoint mixes writes and reads",
            "POST",
            "/db/request",
            r#"["INSERT INTO foo(name) VALUES('r')", "SELECT name FROM foo WHERE name = 'r'"]"#,
            200,
            r#"{"results":[{"last_insert_id":8,"rows_affected":1},{"columns":["name"],"types":["text"],"values":[["r"]]}]}"#,
        ),
        case(
            "unified endpoint, reads only",
            "POST",
            "/db/request",
            r#"["SELECT count(*) AS n FROM foo"]"#,
            200,
            r#"{"results":[{"columns":["n"],"types":["integer"],"values":[[8]]}]}"#,
        ),
        case(
            "unified endpoint, associative: executes carry rows null",
            "POST",
            "/db/request?associative",
            r#"["INSERT INTO foo(name) VALUES('s')", "SELECT id FROM foo WHERE name = 's'"]"#,
            200,
            r#"{"results":[{"last_insert_id":9,"rows_affected":1,"rows":null},{"types":{"id":"integer"},"rows":[{"id":9}]}]}"#,
        ),
        case(
            "pretty",
            "POST",
            "/db/execute?pretty",
            r#"["INSERT INTO foo(name) VALUES('p')"]"#,
            200,
            "{\n    \"results\": [\n        {\n            \"last_insert_id\": 10,\n            \"rows_affected\": 1\n        }\n    ]\n}",
        ),
        case(
            "timings add time per result and overall",
            "POST",
            "/db/execute?timings",
            r#"["INSERT INTO foo(name) VALUES('timed')"]"#,
            200,
            r#"{"results":[{"last_insert_id":11,"rows_affected":1,"time":T}],"time":T}"#,
        ),
        case(
            "raft_index",
            "POST",
            "/db/execute?raft_index",
            r#"["INSERT INTO foo(name) VALUES('indexed')"]"#,
            200,
            r#"{"results":[{"last_insert_id":12,"rows_affected":1}],"raft_index":R}"#,
        ),
        case(
            "queued write",
            "POST",
            "/db/execute?queue",
            r#"["INSERT INTO foo(name) VALUES('queued')"]"#,
            200,
            r#"{"results":[],"sequence_number":S}"#,
        ),
        case(
            "parameter count mismatch is a statement error",
            "POST",
            "/db/execute",
            r#"[["INSERT INTO foo(name, age) VALUES(?, ?)", "only one"]]"#,
            200,
            r#"{"results":[{"error":"not enough args to execute query: want 2 got 1"}]}"#,
        ),
        case(
            "transaction control is refused with the reason",
            "POST",
            "/db/execute",
            r#"["BEGIN"]"#,
            200,
            r#"{"results":[{"error":"BEGIN, COMMIT, ROLLBACK, SAVEPOINT and RELEASE are not allowed in a request: raftlite runs each request in its own transaction; use ?transaction to make all statements of a request commit or fail together"}]}"#,
        ),
        case(
            "writes through the query endpoint are refused",
            "POST",
            "/db/query",
            r#"["INSERT INTO foo(name) VALUES('sneaky')"]"#,
            200,
            r#"{"results":[{"error":"attempt to change database via query operation"}]}"#,
        ),
        case(
            "an unknown level reads as weak, as in rqlite",
            "GET",
            "/db/query?level=bogus&q=SELECT%201",
            "",
            200,
            r#"{"results":[{"columns":["1"],"types":["integer"],"values":[[1]]}]}"#,
        ),
        case(
            "malformed JSON is 400",
            "POST",
            "/db/execute",
            r#"["SELECT 1""#,
            400,
            "",
        ),
        case("a non-array body is 400", "POST", "/db/execute", r#"{"sql":"SELECT 1"}"#, 400, ""),
        case("an empty array is 400", "POST", "/db/execute", "[]", 400, ""),
        case("an empty statement array is 400", "POST", "/db/execute", "[[]]", 400, ""),
        case(
            "an object as a positional parameter is 400",
            "POST",
            "/db/execute",
            r#"[["INSERT INTO foo(name) VALUES(?)", 1, {"x": 1}]]"#,
            400,
            "",
        ),
        case("a missing q is 400", "GET", "/db/query", "", 400, ""),
        case("an invalid timeout is 400", "POST", "/db/execute?timeout=soon", r#"["SELECT 1"]"#, 400, ""),
        case("wrong method is 405", "PUT", "/db/execute", r#"["SELECT 1"]"#, 405, ""),
        case("unknown path is 404", "GET", "/db/nothing", "", 404, ""),
        case(
            "status by key",
            "GET",
            "/status?key=store.raft.state",
            "",
            200,
            r#""Leader""#,
        ),
        // rqlite's /nodes (http/service.go, handleNodes) encodes http/nodes.go `Node`s in their
        // struct field order: `{"nodes": [...]}` with ver=2, a map keyed by id without.
        case(
            "nodes, version 2",
            "GET",
            "/nodes?ver=2",
            "",
            200,
            r#"{"nodes":[{"id":"1","api_addr":"http://HTTP","addr":"RAFT","version":"V","voter":true,"reachable":true,"leader":true,"time":T,"time_s":"TS"}]}"#,
        ),
        case(
            "nodes, legacy map",
            "GET",
            "/nodes",
            "",
            200,
            r#"{"1":{"id":"1","api_addr":"http://HTTP","addr":"RAFT","version":"V","voter":true,"reachable":true,"leader":true,"time":T,"time_s":"TS"}}"#,
        ),
        // rqlite's GET /leader (http/service.go, handleLeader) answers one `Node` of
        // http/nodes.go, like an entry of /nodes.
        case(
            "leader",
            "GET",
            "/leader",
            "",
            200,
            r#"{"id":"1","api_addr":"http://HTTP","addr":"RAFT","version":"V","voter":true,"reachable":true,"leader":true,"time":T,"time_s":"TS"}"#,
        ),
        case(
            "readyz",
            "GET",
            "/readyz",
            "",
            200,
            "[+]node ok\n[+]leader ok\n[+]store ok\n",
        ),
        case(
            "removing an unknown node is 404",
            "DELETE",
            "/remove",
            r#"{"id": 99}"#,
            404,
            r#"{"error":"node 99 is not a member"}"#,
        ),
        case("remove needs an id", "DELETE", "/remove", r#"{"name": 1}"#, 400, ""),
        // rqlite db/state.go BreakingPragmas, checked by store/state.go PragmaCheckRequest.Check
        // in store.Execute/Query/Request; http/service.go puts the error in Response.Error
        // beside an empty DBResults: 200 {"results":[],"error":"disallowed pragma"}.
        case(
            "a breaking pragma is refused by execute",
            "POST",
            "/db/execute",
            r#"["PRAGMA journal_mode=DELETE"]"#,
            200,
            r#"{"results":[],"error":"disallowed pragma"}"#,
        ),
        case(
            "a breaking pragma is refused by query",
            "GET",
            "/db/query?q=pragma%20main.synchronous%20%3D%20OFF",
            "",
            200,
            r#"{"results":[],"error":"disallowed pragma"}"#,
        ),
        case(
            "one breaking pragma refuses the whole request",
            "POST",
            "/db/request",
            r#"["SELECT 1","PRAGMA wal_checkpoint(TRUNCATE)"]"#,
            200,
            r#"{"results":[],"error":"disallowed pragma"}"#,
        ),
        // rqlite http/service.go handleLoad: SQL text is one statement string
        // (executeRequestFromStrings([]string{string(b)}), RollbackOnError), so one result,
        // with the last_insert_id and rows_affected go-sqlite3's exec reports after the text's
        // last statement (sqlite3.go SQLiteConn.exec).
        Case {
            content_type: TEXT,
            ..case(
                "load of SQL text gives one result",
                "POST",
                "/db/load",
                "BEGIN TRANSACTION;\nCREATE TABLE loaded (id INTEGER PRIMARY KEY, name TEXT);\nINSERT INTO loaded(id, name) VALUES(7, 'fiona');\nCOMMIT;\n",
                200,
                r#"{"results":[{"last_insert_id":7,"rows_affected":1}]}"#,
            )
        },
        Case {
            content_type: TEXT,
            ..case(
                "load of SQL text that fails gives one error",
                "POST",
                "/db/load",
                "INSERT INTO loaded(id, name) VALUES(8, 'x');\nINSERT INTO nope VALUES(1);\n",
                200,
                r#"{"results":[{"error":"no such table: nope"}]}"#,
            )
        },
        // Deliberately stricter than rqlite: the failed load left nothing (rqlite keeps row 8,
        // which ran outside a transaction before the error).
        case(
            "a failed load leaves nothing behind",
            "GET",
            "/db/query?q=SELECT%20id%2C%20name%20FROM%20loaded",
            "",
            200,
            r#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[7,"fiona"]]}]}"#,
        ),
        Case {
            content_type: TEXT,
            ..case(
                "load of SQL text starting with a breaking pragma is refused",
                "POST",
                "/db/load",
                "PRAGMA synchronous=OFF;\nINSERT INTO loaded(id, name) VALUES(9, 'y');\n",
                200,
                r#"{"results":[],"error":"disallowed pragma"}"#,
            )
        },
    ]
}

/// Replaces the number after each `"key":` with `placeholder`.
fn mask_number(body: &str, key: &str, placeholder: &str) -> String {
    let needle = format!("\"{key}\":");
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(&needle) {
        let (head, tail) = rest.split_at(at + needle.len());
        out.push_str(head);
        let skip = tail
            .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
            .unwrap_or(tail.len());
        if skip > 0 {
            out.push_str(placeholder);
        }
        rest = &tail[skip..];
    }
    out.push_str(rest);
    out
}

/// Replaces the string after each `"key":` with `"placeholder"` (no escapes expected inside).
fn mask_string(body: &str, key: &str, placeholder: &str) -> String {
    let needle = format!("\"{key}\":\"");
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(&needle) {
        let (head, tail) = rest.split_at(at + needle.len());
        out.push_str(head);
        let end = tail.find('"').unwrap_or(tail.len());
        out.push_str(placeholder);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn normalize(body: &str, node: &Node) -> String {
    let body = body
        .replace(&node.http_addr, "HTTP")
        .replace(&node.raft_addr, "RAFT");
    let body = body.replace(
        &format!("\"version\":\"{}\"", env!("CARGO_PKG_VERSION")),
        "\"version\":\"V\"",
    );
    let body = mask_string(&body, "time_s", "TS");
    let body = mask_number(&body, "time", "T");
    let body = mask_number(&body, "sequence_number", "S");
    mask_number(&body, "raft_index", "R")
}

fn send(node: &Node, c: &Case) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let method = reqwest::Method::from_bytes(c.method.as_bytes()).expect("method");
    let mut request = client.request(method, node.url(c.path));
    if !c.body.is_empty() {
        request = request
            .header("Content-Type", c.content_type)
            .body(c.body.to_string());
    }
    let response = request.send().expect("send");
    let status = response.status().as_u16();
    (status, response.text().expect("body"))
}

#[test]
fn rqlite_api_golden_pairs() {
    let c = Cluster::start(1, &[]);
    let node = &c.nodes[0];
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 40, "at least 40 pairs, have {}", all.len());
    for case in all {
        // The text/plain case needs its own content type and body.
        let case = if case.name.starts_with("text/plain") {
            Case {
                content_type: TEXT,
                body: "INSERT INTO foo(name) VALUES('plain')",
                expected: r#"{"results":[{"last_insert_id":7,"rows_affected":1}]}"#,
                ..case
            }
        } else {
            case
        };
        let (status, body) = send(node, &case);
        let got = normalize(&body, node);
        let body_ok = if case.status >= 400 && case.expected.is_empty() {
            // Refusals: a JSON object with a non-empty error (405/404 from the router: any body).
            case.status == 405
                || case.status == 404
                || serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.get("error")
                            .and_then(|e| e.as_str())
                            .map(|e| !e.is_empty())
                    })
                    .unwrap_or(false)
        } else {
            got == case.expected
        };
        if status != case.status || !body_ok {
            failures.push(format!(
                "{} ({} {}):\n  expected {} {}\n  got      {} {}",
                case.name, case.method, case.path, case.status, case.expected, status, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden pair(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What statements' results look like (issue 17), on a 3-node cluster: every node answers a
/// local read (`level=none`) with the same bytes, before and after a restart, and execute
/// results do not depend on which node leads or whether it restarted. Expected bytes:
///
/// * `last_insert_id`/`rows_affected`: rqlite db/db.go `executeStmtWithConn` reports
///   go-sqlite3's `SQLiteResult` (rqlite+go-sqlite3 sqlite3.go `execSync`, read by
///   `_sqlite3_step_row_internal`: `sqlite3_last_insert_rowid` and `sqlite3_changes` of the
///   connection), `omitempty` for zero (command/encoding/json.go `Result`). DDL keeps the
///   previous statement's values; a trigger's rows are not counted.
/// * values: go-sqlite3 sqlite3.go `nextSyncLocked` (decltype `timestamp`/`datetime`/`date`,
///   `boolean`), rqlite db/db.go `normalizeRowParameters` (`time.Time.MarshalText`, blobs of
///   text-typed columns as text) and `populateEmptyTypes` (expression types from row one).
/// * errors: go-sqlite3 error.go `Error.Error()` is `sqlite3_errmsg` alone.
#[test]
fn statement_results_are_rqlites_on_every_node_and_after_a_restart() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(30));
    let post = |node: &Node, path: &str, body: &str| -> String {
        let (status, body) = http_post(&node.url(path), body).expect("post");
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let writes: &[(&str, &str)] = &[
        (
            r#"["CREATE TABLE r (id INTEGER PRIMARY KEY, ts TIMESTAMP, dt DATETIME, d DATE, ok BOOLEAN, anything, b BLOB)",
                "CREATE TABLE log (y)",
                "CREATE TRIGGER tr AFTER UPDATE ON r BEGIN INSERT INTO log VALUES (1); INSERT INTO log VALUES (2); END",
                "INSERT INTO r VALUES (1, '2012-04-06 13:37:00-09:13', 1136214245, '2012-11-04Z', 1, x'4142', x'4142')",
                "INSERT INTO r VALUES (2, 'nonsense', 1136214245123, '2006-01-02T15:04:05.123456789', 0, 7, NULL)",
                "UPDATE r SET ok = 2 WHERE id = 1",
                "DROP TABLE IF EXISTS absent"]"#,
            r#"{"results":[{},{},{},{"last_insert_id":1,"rows_affected":1},{"last_insert_id":2,"rows_affected":1},{"last_insert_id":2,"rows_affected":1},{"last_insert_id":2,"rows_affected":1}]}"#,
        ),
        // Deliberate difference: a request starts from a fresh connection's 0 and 0, where
        // rqlite's long-lived connection would still say 2 and 1 from the request before.
        (r#"["DROP TABLE IF EXISTS absent"]"#, r#"{"results":[{}]}"#),
        // The same rowid as the statement before is reported again.
        (
            r#"["INSERT INTO r(id) VALUES (3)", "DELETE FROM r WHERE id = 3", "INSERT INTO r(id) VALUES (3)"]"#,
            r#"{"results":[{"last_insert_id":3,"rows_affected":1},{"last_insert_id":3,"rows_affected":1},{"last_insert_id":3,"rows_affected":1}]}"#,
        ),
        (
            r#"["INSERT blah blah", "INSERT INTO r(id) VALUES (1)", "INSERT INTO nowhere VALUES (1)"]"#,
            r#"{"results":[{"error":"near \"blah\": syntax error"},{"error":"UNIQUE constraint failed: r.id"},{"error":"no such table: nowhere"}]}"#,
        ),
    ];
    for (body, want) in writes {
        assert_eq!(post(&c.nodes[leader], "/db/execute", body), *want, "{body}");
    }
    let reads: &[(&str, &str, &str)] = &[
        (
            "/db/query?level=none",
            r#"["SELECT * FROM r ORDER BY id"]"#,
            r#"{"results":[{"columns":["id","ts","dt","d","ok","anything","b"],"types":["integer","timestamp","datetime","date","boolean","text","blob"],"values":[[1,"2012-04-06T13:37:00-09:13","2006-01-02T15:04:05Z","2012-11-04T00:00:00Z",true,"AB","QUI="],[2,"0001-01-01T00:00:00Z","2006-01-02T15:04:05.123Z","2006-01-02T15:04:05.123456789Z",false,7,null],[3,null,null,null,null,null,null]]}]}"#,
        ),
        (
            "/db/query?level=none&associative",
            r#"["SELECT id, ok, ts FROM r WHERE id = 1"]"#,
            r#"{"results":[{"types":{"id":"integer","ok":"boolean","ts":"timestamp"},"rows":[{"id":1,"ok":true,"ts":"2012-04-06T13:37:00-09:13"}]}]}"#,
        ),
        (
            "/db/request?level=none",
            r#"["SELECT ok, dt FROM r WHERE id = 2", "SELECT COUNT(*), 1.5, NULL, x'41' FROM r", "SELECT 1 WHERE 0"]"#,
            r#"{"results":[{"columns":["ok","dt"],"types":["boolean","datetime"],"values":[[false,"2006-01-02T15:04:05.123Z"]]},{"columns":["COUNT(*)","1.5","NULL","x'41'"],"types":["integer","real","","text"],"values":[[3,1.5,null,"A"]]},{"columns":["1"],"types":[""]}]}"#,
        ),
        (
            "/db/query?level=none",
            r#"["SELECT nope FROM r", "SELEC 1"]"#,
            r#"{"results":[{"error":"no such column: nope"},{"error":"near \"SELEC\": syntax error"}]}"#,
        ),
    ];
    let check_reads = |c: &Cluster, when: &str| {
        for (i, node) in c.nodes.iter().enumerate() {
            wait_for(
                || (c.try_count_rows(i, "r").ok()? == 3).then_some(()),
                Duration::from_secs(30),
                "the writes to reach every node",
            );
            for (path, body, want) in reads {
                assert_eq!(
                    post(node, path, body),
                    *want,
                    "{when}: node {} {path} {body}",
                    node.id
                );
            }
        }
    };
    check_reads(&c, "before the restart");

    // The leader restarts: its connection is new, and another node may lead now.
    c.nodes[leader].stop();
    c.nodes[leader].restart();
    c.nodes[leader].wait_ready(Duration::from_secs(30));
    check_reads(&c, "after the restart");
    let leader = c.wait_leader(Duration::from_secs(30));
    let after: &[(&str, &str)] = &[
        (r#"["DROP TABLE IF EXISTS absent"]"#, r#"{"results":[{}]}"#),
        (
            r#"["INSERT INTO log VALUES (9)", "CREATE TABLE IF NOT EXISTS z (a)", "UPDATE r SET ok = 1 WHERE id = 2"]"#,
            r#"{"results":[{"last_insert_id":3,"rows_affected":1},{"last_insert_id":3,"rows_affected":1},{"last_insert_id":3,"rows_affected":1}]}"#,
        ),
    ];
    for (body, want) in after {
        assert_eq!(post(&c.nodes[leader], "/db/execute", body), *want, "{body}");
    }
}
