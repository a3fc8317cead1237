//! `GET /db/backup` and `POST /db/load` against real `raftlite` processes.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::{
    check_results, first_values, http_get_raw, http_post_raw, query_at, wait_for, Cluster,
    RawResponse,
};
use serde_json::{json, Value};

const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn exec_ok(c: &Cluster, idx: usize, body: Value) -> Value {
    let resp = c.nodes[idx]
        .execute(body.clone())
        .unwrap_or_else(|e| panic!("execute {body} on node {}: {e}", c.nodes[idx].id));
    check_results(&resp)
        .unwrap_or_else(|e| panic!("execute {body} on node {}: {e}", c.nodes[idx].id));
    resp
}

/// All rows of `sql` read locally (level=none) on node `idx`.
fn rows(c: &Cluster, idx: usize, sql: &str) -> Result<Vec<Vec<Value>>, String> {
    first_values(&query_at(&c.nodes[idx].base_url(), sql, "none")?)
}

/// Waits until `sql` on node `idx` gives exactly `want`.
fn wait_rows(c: &Cluster, idx: usize, sql: &str, want: &[Vec<Value>]) {
    wait_for(
        || (rows(c, idx, sql).ok()? == want).then_some(()),
        secs(30),
        &format!("node {} to answer {sql} with {want:?}", c.nodes[idx].id),
    );
}

fn status(c: &Cluster, idx: usize) -> Value {
    c.nodes[idx]
        .status()
        .unwrap_or_else(|e| panic!("status of node {}: {e}", c.nodes[idx].id))
}

/// The current timeline id of node `idx`, once it has one.
fn wait_timeline(c: &Cluster, idx: usize) -> String {
    wait_for(
        || {
            c.nodes[idx].status().ok()?["store"]["timeline"]["id"]
                .as_str()
                .map(str::to_owned)
        },
        secs(30),
        &format!("node {} to have a timeline", c.nodes[idx].id),
    )
}

fn get_ok(url: &str) -> RawResponse {
    let resp = http_get_raw(url).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 200, "GET {url}: {}", resp.text());
    resp
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a valid gzip stream");
    out
}

/// Opens `bytes` as a SQLite database (written to `path`), checks its integrity and returns
/// the `(id, name)` rows of table `t`.
fn sqlite_rows(bytes: &[u8], path: &Path) -> Vec<(i64, String)> {
    assert!(bytes.starts_with(SQLITE_MAGIC), "not a SQLite file");
    std::fs::write(path, bytes).expect("write backup");
    let conn = rusqlite::Connection::open(path).expect("open backup");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let mut stmt = conn
        .prepare("SELECT id, name FROM t ORDER BY id")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows");
    rows
}

/// No `*.partial` scratch file is left in a node's snapshots directory.
fn wait_no_scratch(data_dir: &Path) {
    let dir = data_dir.join("snapshots");
    wait_for(
        || {
            let left = std::fs::read_dir(&dir)
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".partial"));
            (!left).then_some(())
        },
        secs(10),
        "scratch files to be removed",
    );
}

#[test]
fn backup_of_one_node_is_a_sqlite_file_and_compress_vacuum_and_sql_variants_work() {
    let c = Cluster::start(1, &[]);
    exec_ok(
        &c,
        0,
        json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)",
            "INSERT INTO t(name) VALUES ('fiona'), ('it''s'), ('sinéad')",
            "CREATE TABLE junk (v)",
            "INSERT INTO junk VALUES (randomblob(10000)), (randomblob(10000))",
            "DROP TABLE junk"
        ]),
    );
    let want = vec![
        (1, "fiona".to_string()),
        (2, "it's".to_string()),
        (3, "sinéad".to_string()),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");

    let plain = get_ok(&c.nodes[0].url("/db/backup"));
    assert_eq!(
        plain.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(
        sqlite_rows(&plain.body, &tmp.path().join("plain.sqlite")),
        want
    );
    {
        // The user's schema only: raftlite's tables are left out of the file...
        let conn = rusqlite::Connection::open(tmp.path().join("plain.sqlite")).expect("open");
        let internal: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE tbl_name LIKE '\\_raftlite%' ESCAPE '\\'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert_eq!(internal, 0);
        // ...unless raftlite's own tools ask for them.
        let with_meta = get_ok(&c.nodes[0].url("/db/backup?raftlite_meta"));
        let path = tmp.path().join("with-meta.sqlite");
        assert_eq!(sqlite_rows(&with_meta.body, &path), want);
        let conn = rusqlite::Connection::open(&path).expect("open");
        let applied: String = conn
            .query_row(
                "SELECT value FROM _raftlite_meta WHERE key = 'applied'",
                [],
                |r| r.get(0),
            )
            .expect("meta");
        assert!(applied.contains("index"), "{applied}");
    }

    let gz = get_ok(&c.nodes[0].url("/db/backup?compress"));
    assert_eq!(
        gz.header("content-encoding"),
        None,
        "a .gz file, not an encoding"
    );
    assert_eq!(&gz.body[..2], &[0x1f, 0x8b], "gzip magic");
    let unzipped = gunzip(&gz.body);
    assert!(
        unzipped == plain.body,
        "the gzip holds the same SQLite file as the plain backup"
    );
    assert_eq!(sqlite_rows(&unzipped, &tmp.path().join("gz.sqlite")), want);

    let vacuumed = get_ok(&c.nodes[0].url("/db/backup?vacuum"));
    assert!(
        vacuumed.body.len() < plain.body.len(),
        "VACUUM drops the free pages of the dropped table ({} vs {} bytes)",
        vacuumed.body.len(),
        plain.body.len()
    );
    assert_eq!(
        sqlite_rows(&vacuumed.body, &tmp.path().join("vacuum.sqlite")),
        want
    );

    let sql = get_ok(&c.nodes[0].url("/db/backup?fmt=sql"));
    let text = sql.text();
    assert!(
        text.starts_with("PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\n"),
        "{text}"
    );
    assert!(text.contains("INSERT INTO t VALUES(2,'it''s');"), "{text}");
    assert!(text.ends_with("COMMIT;\n"), "{text}");
    assert!(!text.contains("_raftlite_meta"), "{text}");
    let sql_gz = get_ok(&c.nodes[0].url("/db/backup?fmt=sql&compress"));
    assert_eq!(String::from_utf8(gunzip(&sql_gz.body)).ok(), Some(text));

    let bad = http_get_raw(&c.nodes[0].url("/db/backup?fmt=csv")).expect("request");
    assert_eq!(bad.status, 400, "{}", bad.text());

    // A large upload is spooled to disk whatever its size (no 16 MiB limit for files any
    // more), then checked: a SQLite header followed by zeros is refused and nothing changes.
    let mut huge = SQLITE_MAGIC.to_vec();
    huge.resize(63 * 1024 * 1024 + 512 * 1024, 0);
    let resp = http_post_raw(
        &c.nodes[0].url("/db/load"),
        "application/octet-stream",
        huge,
    )
    .expect("load");
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(
        resp.text().contains("nothing was changed"),
        "{}",
        resp.text()
    );
    let still = get_ok(&c.nodes[0].url("/db/backup"));
    assert_eq!(
        sqlite_rows(&still.body, &tmp.path().join("still.sqlite")),
        want
    );

    wait_no_scratch(&c.nodes[0].data_dir);
}

#[test]
fn sql_dump_loads_into_a_fresh_three_node_cluster() {
    let source = Cluster::start(1, &[]);
    exec_ok(
        &source,
        0,
        json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, score REAL, data BLOB)",
            "CREATE INDEX t_name ON t(name)",
            "CREATE TABLE audit (msg TEXT)",
            "CREATE TRIGGER t_audit AFTER INSERT ON t BEGIN INSERT INTO audit VALUES ('added; ' || NEW.name); END",
            "CREATE VIEW named AS SELECT id, name FROM t WHERE name IS NOT NULL",
            "INSERT INTO t(name, score, data) VALUES ('a''b;c', 1.5, x'00ff'), (NULL, -2.25e-5, NULL), ('line\nbreak', 3, x'')"
        ]),
    );
    let dump = get_ok(&source.nodes[0].url("/db/backup?fmt=sql")).body;

    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(30));
    let follower = c.followers(leader)[0];
    // Through a follower: the load is forwarded to the leader.
    let resp = http_post_raw(
        &c.nodes[follower].url("/db/load"),
        "text/plain",
        dump.clone(),
    )
    .expect("load");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body: Value = serde_json::from_slice(&resp.body).expect("JSON answer");
    check_results(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    // rqlite's handleLoad runs the text as one statement string: one result.
    assert_eq!(
        body["results"].as_array().map(Vec::len),
        Some(1),
        "one result: {body}"
    );

    for query in [
        "SELECT id, name, score, hex(data), typeof(score) FROM t ORDER BY id",
        "SELECT msg FROM audit ORDER BY rowid",
        "SELECT * FROM named ORDER BY id",
        "SELECT name, seq FROM sqlite_sequence",
        "SELECT type, name, sql FROM sqlite_schema WHERE name != '_raftlite_meta' \
         AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name",
    ] {
        let want = rows(&source, 0, query).unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(!want.is_empty(), "{query}");
        for idx in 0..3 {
            wait_rows(&c, idx, query, &want);
        }
    }
    // The trigger came along and works on every node.
    exec_ok(&c, leader, json!(["INSERT INTO t(name) VALUES ('later')"]));
    for idx in 0..3 {
        wait_rows(&c, idx, "SELECT count(*) FROM audit", &[vec![json!(4)]]);
    }

    // A dump that ends in ROLLBACK (sqlite3 writes that when the dump failed) is refused.
    let failed = b"BEGIN TRANSACTION;\nCREATE TABLE x(v);\nROLLBACK; -- due to errors\n".to_vec();
    let resp = http_post_raw(&c.nodes[leader].url("/db/load"), "text/plain", failed).expect("load");
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(
        rows(&c, leader, "SELECT * FROM x").is_err(),
        "nothing applied"
    );
}

/// A plain SQLite database (not made by raftlite) with `n` rows in table `loaded`.
fn plain_database(path: &Path, n: i64) -> Vec<u8> {
    let conn = rusqlite::Connection::open(path).expect("create");
    conn.execute_batch(
        "CREATE TABLE loaded (id INTEGER PRIMARY KEY, payload TEXT); \
         CREATE INDEX loaded_payload ON loaded(payload);",
    )
    .expect("schema");
    let mut insert = conn
        .prepare("INSERT INTO loaded(id, payload) VALUES (?1, ?2)")
        .expect("prepare");
    for i in 1..=n {
        insert
            .execute(rusqlite::params![i, format!("payload {i} ").repeat(8)])
            .expect("insert");
    }
    drop(insert);
    drop(conn);
    std::fs::read(path).expect("read database")
}

fn assert_old_data_everywhere(c: &Cluster, timeline: &str) {
    for idx in 0..c.nodes.len() {
        assert_eq!(
            rows(c, idx, "SELECT count(*) FROM old").ok(),
            Some(vec![vec![json!(3)]]),
            "node {} keeps the old data",
            c.nodes[idx].id
        );
        assert!(rows(c, idx, "SELECT * FROM loaded").is_err());
        assert_eq!(
            status(c, idx)["store"]["timeline"]["id"].as_str(),
            Some(timeline),
            "node {} keeps its timeline",
            c.nodes[idx].id
        );
    }
}

#[test]
fn loading_a_sqlite_file_replaces_the_data_on_every_node_and_starts_a_timeline() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(30));
    exec_ok(
        &c,
        leader,
        json!([
            "CREATE TABLE old (v)",
            "INSERT INTO old VALUES (1), (2), (3)"
        ]),
    );
    for idx in 0..3 {
        wait_rows(&c, idx, "SELECT count(*) FROM old", &[vec![json!(3)]]);
    }
    let old_timeline = wait_timeline(&c, leader);

    let tmp = tempfile::tempdir().expect("tempdir");
    let good = plain_database(&tmp.path().join("good.sqlite"), 200);
    let page_size = u16::from_be_bytes([good[16], good[17]]) as usize;

    // Bad inputs: refused with 400, nothing changes anywhere.
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    let mut bad_header = SQLITE_MAGIC.to_vec();
    bad_header.extend_from_slice(&garbage);
    let truncated = good[..good.len() / 2].to_vec();
    let mut flipped = good.clone();
    flipped[page_size] ^= 0x01; // page 2's b-tree page type becomes invalid
    for (what, body) in [
        ("garbage", garbage),
        ("garbage after a SQLite header", bad_header),
        ("a truncated SQLite file", truncated),
        ("a bit-flipped SQLite file", flipped),
    ] {
        let resp = http_post_raw(
            &c.nodes[leader].url("/db/load"),
            "application/octet-stream",
            body,
        )
        .expect("load");
        assert_eq!(resp.status, 400, "{what}: {}", resp.text());
        let error: Value = serde_json::from_slice(&resp.body).expect("JSON error");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("nothing was")),
            "{what}: {error}"
        );
    }
    assert_old_data_everywhere(&c, &old_timeline);

    // The good file, sent to a follower (forwarded to the leader).
    let follower = c.followers(leader)[0];
    let resp = http_post_raw(
        &c.nodes[follower].url("/db/load?raft_index"),
        "application/octet-stream",
        good.clone(),
    )
    .expect("load");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let answer: Value = serde_json::from_slice(&resp.body).expect("JSON answer");
    let load_index = answer["raft_index"].as_u64().expect("raft_index");
    assert_eq!(
        std::fs::read(tmp.path().join("good.sqlite")).expect("source"),
        good,
        "the source bytes are never modified"
    );

    let mut history = None;
    for idx in 0..3 {
        wait_rows(&c, idx, "SELECT count(*) FROM loaded", &[vec![json!(200)]]);
        assert!(
            rows(&c, idx, "SELECT * FROM old").is_err(),
            "old data replaced"
        );
        let s = status(&c, idx);
        let h = s["store"]["timeline_history"].clone();
        assert_eq!(
            h.as_array().map(Vec::len),
            Some(2),
            "node {}: {h}",
            c.nodes[idx].id
        );
        assert_eq!(h[1]["parent"].as_str(), Some(old_timeline.as_str()));
        assert_eq!(h[1]["reason"].as_str(), Some("load via /db/load"));
        assert_eq!(h[1]["counter"].as_u64(), Some(2));
        assert_ne!(
            s["store"]["timeline"]["id"].as_str(),
            Some(old_timeline.as_str())
        );
        assert_eq!(s["store"]["timeline"], h[1]);
        match &history {
            None => history = Some(h),
            Some(first) => assert_eq!(&h, first, "identical history on every node"),
        }
    }

    // Later writes work on the loaded data, everywhere.
    exec_ok(
        &c,
        leader,
        json!(["INSERT INTO loaded(id, payload) VALUES (201, 'after the load')"]),
    );
    for idx in 0..3 {
        wait_rows(&c, idx, "SELECT count(*) FROM loaded", &[vec![json!(201)]]);
    }

    // The leader compacts its log past the load.
    wait_for(
        || {
            let s = c.nodes[leader].status().ok()?;
            (s["store"]["raft"]["snapshot_index"].as_u64()? >= load_index).then_some(())
        },
        secs(30),
        "a snapshot covering the load on the leader",
    );

    // A backup asked of a follower comes from the leader (or is a redirect under ?redirect).
    let via_follower = get_ok(&c.nodes[follower].url("/db/backup"));
    assert!(via_follower.body.starts_with(SQLITE_MAGIC));
    let redirect = http_get_raw(&c.nodes[follower].url("/db/backup?redirect")).expect("get");
    assert_eq!(redirect.status, 301, "{}", redirect.text());
    assert!(
        redirect
            .header("location")
            .is_some_and(|l| l.contains(&c.nodes[leader].http_addr)),
        "{:?}",
        redirect.headers
    );

    // A restarted follower still serves the loaded data.
    c.nodes[follower].stop();
    c.nodes[follower].restart();
    c.nodes[follower].wait_ready(secs(30));
    wait_rows(
        &c,
        follower,
        "SELECT count(*) FROM loaded",
        &[vec![json!(201)]],
    );
    let after = status(&c, follower);
    assert_eq!(Some(&after["store"]["timeline_history"]), history.as_ref());

    for node in &c.nodes {
        wait_no_scratch(&node.data_dir);
    }
}
