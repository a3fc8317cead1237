//! Failure-mode tests against real `raftlite` processes on 127.0.0.1: damaged or missing data
//! dir parts at start-up, non-deterministic SQL, group commit, redirects, membership removal,
//! loss of quorum, malformed bodies and a follower killed mid-stream.
//!
//! Every wait has a deadline; a test that finds a bug keeps asserting the right behaviour.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    check_results, execute_at, first_values, free_port, http_get, http_post, query_at, query_i64s,
    tail, wait_for, wait_ids_present, Cluster, Node,
};
use serde_json::{json, Value};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Executes `body` at `base`, panicking on any HTTP or statement error.
fn exec_ok(base: &str, body: Value) -> Value {
    let resp = execute_at(base, &body).unwrap_or_else(|e| panic!("execute {body} at {base}: {e}"));
    check_results(&resp).unwrap_or_else(|e| panic!("execute {body} at {base}: {e}"));
    resp
}

fn status_u64(node: &Node, key: &str) -> u64 {
    let status = node.status().expect("GET /status");
    status["store"]["raft"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("/status has no store.raft.{key}: {status}"))
}

/// Polls node `idx` (level=none) until `table` has exactly `want` rows.
fn wait_count(c: &Cluster, idx: usize, table: &str, want: i64, timeout: Duration) {
    wait_for(
        || (c.try_count_rows(idx, table).ok()? == want).then_some(()),
        timeout,
        &format!("node {} to have {want} rows in {table}", c.nodes[idx].id),
    );
}

/// Tiny xorshift PRNG so the tests need no extra crate.
struct Rng(u64);
impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9);
        Rng(nanos | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// FNV-1a, to name a file's content in messages.
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A file's bytes, for a before/after comparison.
fn snapshot_file(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn assert_same_file(path: &Path, before: &[u8], what: &str) {
    let after = snapshot_file(path);
    assert!(
        after == before,
        "{what}: {} changed (before: {} bytes, fnv {:016x}; after: {} bytes, fnv {:016x})",
        path.display(),
        before.len(),
        fnv64(before),
        after.len(),
        fnv64(&after)
    );
}

/// True if `text` contains `n` as a whole number (not as part of a longer one).
fn contains_number(text: &str, n: u64) -> bool {
    let needle = n.to_string();
    text.match_indices(&needle).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

struct Exited {
    status: ExitStatus,
    stderr: String,
    elapsed: Duration,
}

/// Runs `raftlite serve` with the node's flags (as `Node::start` passes them, without `--join`)
/// as a plain process and waits for it to exit; panics if it is still running after `timeout`.
fn serve_until_exit(node: &Node, extra_args: &[&str], timeout: Duration) -> Exited {
    let dir = node.data_dir.parent().expect("data dir has a parent");
    let out_path = dir.join(format!("node-{}.refused.stdout", node.id));
    let err_path = dir.join(format!("node-{}.refused.stderr", node.id));
    let out = fs::File::create(&out_path).expect("create stdout file");
    let err = fs::File::create(&err_path).expect("create stderr file");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftlite"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--http-addr", &node.http_addr])
        .args(["--raft-addr", &node.raft_addr])
        .args(["--node-id", &node.id.to_string()])
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn raftlite serve");
    let deadline = started + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "raftlite serve on {} did not exit within {timeout:?} (it should refuse to \
                 start); stderr tail:\n{}",
                node.data_dir.display(),
                tail(&err_path, 40)
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    Exited {
        status,
        stderr,
        elapsed,
    }
}

/// Asserts the common properties of a refused start: non-zero exit within 10 s, no panic.
fn assert_refused(exited: &Exited, what: &str) {
    assert!(
        !exited.status.success(),
        "{what}: serve exited successfully ({:?}); stderr:\n{}",
        exited.status,
        exited.stderr
    );
    assert!(
        exited.status.code().is_some(),
        "{what}: serve was killed by a signal ({:?}), not a clean refusal; stderr:\n{}",
        exited.status,
        exited.stderr
    );
    assert!(
        exited.elapsed < secs(10),
        "{what}: refusing took {:?}",
        exited.elapsed
    );
    assert!(
        !exited.stderr.contains("panicked"),
        "{what}: serve panicked:\n{}",
        exited.stderr
    );
}

/// A stopped (SIGTERM) 1-node cluster holding table `t` with `rows` rows; returns it and the
/// applied index the database records.
fn stopped_node_with_rows(rows: i64) -> (Cluster, u64) {
    let mut c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    exec_ok(
        &base,
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]),
    );
    for id in 1..=rows {
        exec_ok(
            &base,
            json!([["INSERT INTO t(id, v) VALUES(?, ?)", id, format!("v{id}")]]),
        );
    }
    // The answer to a write can arrive just before the node's metrics report it applied.
    let applied = wait_for(
        || {
            let applied = status_u64(&c.nodes[0], "applied_index");
            (applied == status_u64(&c.nodes[0], "last_log_index")).then_some(applied)
        },
        secs(10),
        "the node to report every log entry applied",
    );
    assert!(
        applied as i64 > rows,
        "applied_index {applied} after {rows} writes"
    );
    c.nodes[0].stop();
    (c, applied)
}

fn db_path(node: &Node) -> PathBuf {
    node.data_dir.join("db.sqlite")
}

fn log_path(node: &Node) -> PathBuf {
    node.data_dir.join("raft").join("raft.redb")
}

fn remove_db_files(node: &Node) {
    for suffix in ["", "-wal", "-shm"] {
        let p = node.data_dir.join(format!("db.sqlite{suffix}"));
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove {}: {e}", p.display()),
        }
    }
}

/// A client that neither follows redirects nor pools connections.
fn raw_client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .expect("build HTTP client")
}

fn json_error_body(body: &str, what: &str) -> Value {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
    assert!(
        v.get("error")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
        "{what}: body has no error string: {body}"
    );
    v
}

// ---------------------------------------------------------------------------
// 1-3: start-up refuses damaged data dirs
// ---------------------------------------------------------------------------

#[test]
fn deleted_raft_log_makes_serve_refuse_with_recovery_mode_hint() {
    let (c, applied) = stopped_node_with_rows(10);
    let node = &c.nodes[0];
    let db = db_path(node);
    let before = snapshot_file(&db);
    let raft_dir = node.data_dir.join("raft");
    fs::remove_dir_all(&raft_dir).expect("delete raft/");

    let exited = serve_until_exit(node, &[], secs(15));
    assert_refused(&exited, "raft/ deleted");
    assert!(
        exited.stderr.contains("--recovery-mode"),
        "stderr does not mention --recovery-mode:\n{}",
        exited.stderr
    );
    assert!(
        contains_number(&exited.stderr, applied),
        "stderr does not mention the database index {applied}:\n{}",
        exited.stderr
    );
    assert_same_file(&db, &before, "refused start");
    assert!(
        !raft_dir.exists(),
        "{} was re-created by a refused start",
        raft_dir.display()
    );
}

fn corrupt_log_case(damage: impl FnOnce(&Path), what: &str) {
    let (c, _) = stopped_node_with_rows(10);
    let node = &c.nodes[0];
    let log = log_path(node);
    damage(&log);
    let log_before = snapshot_file(&log);
    let db_before = snapshot_file(&db_path(node));

    let exited = serve_until_exit(node, &[], secs(15));
    assert_refused(&exited, what);
    assert!(
        exited.stderr.contains("raft.redb"),
        "{what}: stderr does not name raft.redb:\n{}",
        exited.stderr
    );
    assert_same_file(&log, &log_before, what);
    assert_same_file(&db_path(node), &db_before, what);
}

#[test]
fn corrupt_log_file_is_refused_naming_the_file() {
    corrupt_log_case(
        |log| {
            let len = fs::metadata(log).expect("stat raft.redb").len() as usize;
            assert!(len > 0, "raft.redb is empty before the damage");
            fs::write(log, Rng::seeded().bytes(len)).expect("overwrite raft.redb");
        },
        "raft.redb overwritten with random bytes",
    );
}

#[test]
fn truncated_log_file_is_refused_naming_the_file() {
    corrupt_log_case(
        |log| {
            let len = fs::metadata(log).expect("stat raft.redb").len();
            assert!(len > 1, "raft.redb too small to truncate: {len}");
            fs::OpenOptions::new()
                .write(true)
                .open(log)
                .and_then(|f| f.set_len(len / 2))
                .expect("truncate raft.redb");
        },
        "raft.redb truncated to half",
    );
}

#[test]
fn corrupt_database_file_is_refused_naming_the_file() {
    let (c, _) = stopped_node_with_rows(10);
    let node = &c.nodes[0];
    let db = db_path(node);
    let len = fs::metadata(&db).expect("stat db.sqlite").len() as usize;
    assert!(len > 0);
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(node.data_dir.join(format!("db.sqlite{suffix}")));
    }
    fs::write(&db, Rng::seeded().bytes(len)).expect("overwrite db.sqlite");
    let db_before = snapshot_file(&db);

    let exited = serve_until_exit(node, &[], secs(15));
    assert_refused(&exited, "db.sqlite overwritten with random bytes");
    assert!(
        exited.stderr.contains("db.sqlite"),
        "stderr does not name db.sqlite:\n{}",
        exited.stderr
    );
    assert_same_file(&db, &db_before, "refused start");
}

/// The start-up probe must only read (crates/consensus/src/startup.rs: "The probe only reads"),
/// and the refusal says "Nothing was changed." A refused start must leave a healthy Raft log
/// byte-identical.
#[test]
fn refused_start_leaves_a_healthy_raft_log_untouched() {
    let (c, _) = stopped_node_with_rows(10);
    let node = &c.nodes[0];
    let db = db_path(node);
    let len = fs::metadata(&db).expect("stat db.sqlite").len() as usize;
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(node.data_dir.join(format!("db.sqlite{suffix}")));
    }
    fs::write(&db, Rng::seeded().bytes(len)).expect("overwrite db.sqlite");
    let log = log_path(node);
    let log_before = snapshot_file(&log);
    for attempt in 0..2 {
        let exited = serve_until_exit(node, &[], secs(15));
        assert_refused(&exited, "db.sqlite overwritten with random bytes");
        assert_same_file(&log, &log_before, &format!("refused start #{attempt}"));
    }
}

// ---------------------------------------------------------------------------
// 4: a lost database is rebuilt from the snapshot and the log
// ---------------------------------------------------------------------------

/// Writes `rows` rows, `per_request` per request, to a 1-node cluster with the given snapshot
/// threshold, deletes the database files of the stopped node, restarts it and checks every row.
fn rebuild_case(threshold: &str, rows: i64, per_request: i64, expect_snapshot: bool) {
    let mut c = Cluster::start(1, &["--snapshot-threshold", threshold]);
    let base = c.nodes[0].base_url();
    exec_ok(
        &base,
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]),
    );
    let mut id = 1;
    while id <= rows {
        let batch: Vec<Value> = (id..(id + per_request).min(rows + 1))
            .map(|i| json!(["INSERT INTO t(id, v) VALUES(?, ?)", i, format!("v{i}")]))
            .collect();
        exec_ok(&base, Value::Array(batch));
        id += per_request;
    }
    assert_eq!(c.count_rows(0, "t"), rows);
    let snapshots = c.nodes[0].data_dir.join("snapshots");
    if expect_snapshot {
        wait_for(
            || (status_u64(&c.nodes[0], "snapshot_index") > 0).then_some(()),
            secs(10),
            "a snapshot to be taken",
        );
    } else {
        assert_eq!(status_u64(&c.nodes[0], "snapshot_index"), 0);
    }
    c.nodes[0].stop();
    let has_meta = fs::read_dir(&snapshots)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".meta.json"));
    assert_eq!(
        has_meta,
        expect_snapshot,
        "snapshot meta files in {}",
        snapshots.display()
    );

    remove_db_files(&c.nodes[0]);
    c.nodes[0].restart();
    c.nodes[0].wait_ready(secs(30));

    // The database is rebuilt before the node serves: a linearizable read sees every row.
    let want: Vec<i64> = (1..=rows).collect();
    let ids = query_i64s(&base, "SELECT id FROM t ORDER BY id", "strong").expect("strong read");
    assert_eq!(ids, want, "rows after the rebuild (level=strong)");
    let v =
        first_values(&query_at(&base, "SELECT v FROM t WHERE id = 7", "none").unwrap()).unwrap();
    assert_eq!(v, vec![vec![json!("v7")]]);
    assert_eq!(
        c.count_rows(0, "t"),
        rows,
        "level=none count after the rebuild"
    );

    // And the node keeps working on the rebuilt database.
    exec_ok(
        &base,
        json!([["INSERT INTO t(id, v) VALUES(?, 'new')", rows + 1]]),
    );
    assert_eq!(c.count_rows(0, "t"), rows + 1);
}

#[test]
fn deleted_database_is_rebuilt_from_snapshot_and_log() {
    rebuild_case("50", 300, 3, true);
}

#[test]
fn deleted_database_is_rebuilt_from_log_alone() {
    rebuild_case("100000", 20, 1, false);
}

// ---------------------------------------------------------------------------
// 5: non-deterministic SQL
// ---------------------------------------------------------------------------

#[test]
fn non_deterministic_sql_is_identical_on_every_node() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(10));
    let lbase = c.nodes[leader].base_url();
    exec_ok(
        &lbase,
        json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY, r INTEGER, b BLOB, ts TEXT, \
             d TEXT DEFAULT CURRENT_TIMESTAMP, j REAL)",
            // Rows inserted without r get one from the trigger.
            "CREATE TRIGGER stamp AFTER INSERT ON t WHEN NEW.r IS NULL BEGIN \
             UPDATE t SET r = random() WHERE id = NEW.id; END"
        ]),
    );
    // Rows 1..=10: one request each, every function in the statement.
    for id in 1..=10i64 {
        exec_ok(
            &lbase,
            json!([[
                "INSERT INTO t(id, r, b, ts, j) VALUES(?, random(), randomblob(8), \
                 datetime('now'), julianday('now'))",
                id
            ]]),
        );
        // Pacing, not a wait: rows a few ms apart get different 'now' values, so a node that
        // re-evaluated the time functions itself would store visibly different ones.
        thread::sleep(Duration::from_millis(5));
    }
    // Rows 11..=15: one request, r from the trigger, d from the column default.
    let batch: Vec<Value> = (11..=15i64)
        .map(|id| {
            json!([
                "INSERT INTO t(id, b, ts, j) VALUES(?, randomblob(8), datetime('now'), \
                 julianday('now'))",
                id
            ])
        })
        .collect();
    exec_ok(&lbase, Value::Array(batch));
    // Rows 16..=20: in a transaction, sent to a follower, mixing both.
    let follower = c.followers(leader)[0];
    let batch: Vec<Value> = (16..=20i64)
        .map(|id| {
            if id % 2 == 0 {
                json!([
                    "INSERT INTO t(id, r, b, ts, d, j) VALUES(?, random(), randomblob(8), \
                     strftime('%Y-%m-%d %H:%M:%f', 'now'), CURRENT_TIME, julianday('now'))",
                    id
                ])
            } else {
                json!(["INSERT INTO t(id, b) VALUES(?, randomblob(8))", id])
            }
        })
        .collect();
    let url = format!("{}/db/execute?transaction", c.nodes[follower].base_url());
    let (code, body) = http_post(&url, Value::Array(batch).to_string()).expect("POST");
    assert_eq!(code, 200, "{body}");
    check_results(&serde_json::from_str(&body).unwrap()).unwrap();

    let sql = "SELECT id, r, hex(b), ts, d, j FROM t ORDER BY id";
    let mut sets = Vec::new();
    for i in 0..3 {
        wait_count(&c, i, "t", 20, secs(20));
        let rows = first_values(&c.nodes[i].query(sql, "none").expect("query")).unwrap();
        assert_eq!(rows.len(), 20, "node {}", c.nodes[i].id);
        sets.push(rows);
    }
    for i in 1..3 {
        for (a, b) in sets[0].iter().zip(&sets[i]) {
            assert_eq!(
                a, b,
                "node {} and node {} store different values",
                c.nodes[0].id, c.nodes[i].id
            );
        }
    }
    // Sanity: the functions really produced values, and random() is not constant.
    let rows = &sets[0];
    for row in rows {
        assert!(row[1].is_i64(), "r is not an integer: {row:?}");
        assert_eq!(
            row[2].as_str().map(str::len),
            Some(16),
            "b is not 8 bytes: {row:?}"
        );
        assert!(row[4].is_string(), "d (default) not set: {row:?}");
    }
    let distinct_r: HashSet<i64> = rows.iter().filter_map(|r| r[1].as_i64()).collect();
    assert_eq!(distinct_r.len(), 20, "random() repeated values: {rows:?}");
    let distinct_b: HashSet<&str> = rows.iter().filter_map(|r| r[2].as_str()).collect();
    assert_eq!(
        distinct_b.len(),
        20,
        "randomblob(8) repeated values: {rows:?}"
    );
}

// ---------------------------------------------------------------------------
// 6: group commit
// ---------------------------------------------------------------------------

#[test]
fn concurrent_writes_share_log_entries() {
    const N: usize = 64;
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    exec_ok(&base, json!(["CREATE TABLE t (id INTEGER PRIMARY KEY)"]));
    let before = status_u64(&c.nodes[0], "last_log_index");

    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (base, barrier) = (base.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let body = json!([["INSERT INTO t(id) VALUES(?)", i as i64]]).to_string();
                http_post(&format!("{base}/db/execute"), body)
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (code, body) = t
            .join()
            .expect("writer thread panicked")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(code, 200, "request {i}: {body}");
        check_results(&serde_json::from_str(&body).unwrap())
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    let after = status_u64(&c.nodes[0], "last_log_index");
    eprintln!("{N} concurrent writes used {} log entries", after - before);
    assert!(after > before, "last_log_index did not advance");
    assert!(
        after - before < N as u64,
        "{N} concurrent writes used {} log entries: no group commit",
        after - before
    );
    assert_eq!(c.count_rows(0, "t"), N as i64);
}

// ---------------------------------------------------------------------------
// 7: redirect
// ---------------------------------------------------------------------------

#[test]
fn redirect_answers_301_with_leader_location() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(10));
    let lbase = c.nodes[leader].base_url();
    exec_ok(&lbase, json!(["CREATE TABLE t (id INTEGER PRIMARY KEY)"]));
    let fbase = c.nodes[c.followers(leader)[0]].base_url();
    let client = raw_client(secs(10));

    let resp = client
        .post(format!("{fbase}/db/execute?redirect"))
        .header("Content-Type", "application/json")
        .body(json!(["INSERT INTO t(id) VALUES(1)"]).to_string())
        .send()
        .expect("POST execute?redirect");
    assert_eq!(
        resp.status().as_u16(),
        301,
        "execute?redirect on a follower"
    );
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with(&format!("{lbase}/")),
        "Location {location:?} does not point at the leader {lbase}"
    );
    assert!(location.contains("/db/execute"), "Location {location:?}");
    // The redirected write was not applied anywhere.
    assert_eq!(c.count_rows(leader, "t"), 0);

    let resp = client
        .get(format!("{fbase}/db/query?level=strong&redirect&q=SELECT+1"))
        .send()
        .expect("GET query?redirect");
    assert_eq!(resp.status().as_u16(), 301, "query?level=strong&redirect");
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        location.starts_with(&format!("{lbase}/")),
        "Location {location:?} does not point at the leader {lbase}"
    );

    // Without ?redirect the follower forwards.
    let resp = client
        .post(format!("{fbase}/db/execute"))
        .header("Content-Type", "application/json")
        .body(json!(["INSERT INTO t(id) VALUES(1)"]).to_string())
        .send()
        .expect("POST execute");
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().expect("JSON");
    check_results(&v).unwrap();
    assert_eq!(v["results"][0]["rows_affected"], 1, "{v}");
    assert_eq!(c.count_rows(leader, "t"), 1);

    let resp = client
        .get(format!("{fbase}/db/query?level=strong&q=SELECT+1"))
        .send()
        .expect("GET query");
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().expect("JSON");
    assert_eq!(first_values(&v).unwrap(), vec![vec![json!(1)]]);
}

// ---------------------------------------------------------------------------
// 8: membership removal
// ---------------------------------------------------------------------------

fn delete_remove(base: &str, body: &Value) -> (u16, String) {
    let resp = raw_client(secs(15))
        .delete(format!("{base}/remove"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap_or_else(|e| panic!("DELETE {base}/remove: {e}"));
    let code = resp.status().as_u16();
    (code, resp.text().unwrap_or_default())
}

#[test]
fn remove_node_shrinks_membership() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(10));
    let lbase = c.nodes[leader].base_url();
    exec_ok(&lbase, json!(["CREATE TABLE t (id INTEGER PRIMARY KEY)"]));
    let followers = c.followers(leader);
    let (gone, via) = (followers[0], followers[1]);
    let gone_id = c.nodes[gone].id;

    let (code, body) = delete_remove(&c.nodes[via].base_url(), &json!({ "id": gone_id }));
    assert_eq!(code, 200, "remove node {gone_id} via a follower: {body}");
    wait_for(
        || (c.nodes[leader].member_count().ok()? == 2).then_some(()),
        secs(5),
        "the leader's /nodes to list 2 members",
    );
    let v2: Value =
        serde_json::from_str(&http_get(&c.nodes[leader].url("/nodes?ver=2")).unwrap().1).unwrap();
    let ids: HashSet<String> = v2["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!ids.contains(&gone_id.to_string()), "{v2}");
    let status = c.nodes[leader].status().unwrap();
    assert_eq!(
        status["store"]["raft"]["voters"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    // Writes still work with the two remaining members, repeatedly (the removed node still
    // runs and must not disturb them).
    for id in 1..=20i64 {
        exec_ok(&lbase, json!([["INSERT INTO t(id) VALUES(?)", id]]));
        // Pacing, not a wait: the writes are spread over ~2 s so that the removed node, which
        // still runs (and may time out and campaign), has the time to disturb them.
        thread::sleep(Duration::from_millis(100));
    }
    wait_count(&c, via, "t", 20, secs(10));
    assert_eq!(
        c.leader_index(),
        Some(leader),
        "leadership changed after the removal"
    );

    let (code, body) = delete_remove(&lbase, &json!({ "id": 999_999 }));
    assert_eq!(code, 404, "remove an unknown id: {body}");
    json_error_body(&body, "remove unknown id");
    assert_eq!(c.nodes[leader].member_count().unwrap(), 2);
}

// ---------------------------------------------------------------------------
// 9: lost quorum
// ---------------------------------------------------------------------------

#[test]
fn no_quorum_write_gets_503_within_timeout() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(10));
    let lbase = c.nodes[leader].base_url();
    exec_ok(&lbase, json!(["CREATE TABLE t (id INTEGER PRIMARY KEY)"]));
    for id in 1..=10i64 {
        exec_ok(&lbase, json!([["INSERT INTO t(id) VALUES(?)", id]]));
    }
    let followers = c.followers(leader);
    for &f in &followers {
        c.nodes[f].kill9();
    }

    let client = raw_client(secs(15));
    let started = Instant::now();
    let resp = client
        .post(format!("{lbase}/db/execute?timeout=2s"))
        .header("Content-Type", "application/json")
        .body(json!([["INSERT INTO t(id) VALUES(?)", 1000]]).to_string())
        .send()
        .expect("the write hung past the client timeout");
    let elapsed = started.elapsed();
    let code = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").is_some();
    let body = resp.text().unwrap_or_default();
    assert!(elapsed < secs(5), "answer took {elapsed:?}");
    assert_eq!(code, 503, "write without quorum: {body}");
    json_error_body(&body, "write without quorum");
    assert!(retry_after, "503 without Retry-After");

    let started = Instant::now();
    let resp = raw_client(secs(5))
        .get(format!("{lbase}/readyz"))
        .send()
        .expect("/readyz did not answer within 5 s");
    let code = resp.status().as_u16();
    assert!(code == 200 || code == 503, "/readyz answered {code}");
    assert!(started.elapsed() < secs(5));

    for &f in &followers {
        c.nodes[f].restart();
    }
    let deadline = Instant::now() + secs(20);
    loop {
        let leader = c.leader_index();
        let ok = leader.is_some_and(|l| {
            execute_at(
                &c.nodes[l].base_url(),
                &json!([["INSERT INTO t(id) VALUES(?)", 2000]]),
            )
            .and_then(|r| check_results(&r))
            .is_ok()
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write succeeded within 20 s of restarting the followers"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let leader = c.wait_leader(secs(10));
    let ids = query_i64s(
        &c.nodes[leader].base_url(),
        "SELECT id FROM t WHERE id <= 10 OR id = 2000 ORDER BY id",
        "strong",
    )
    .unwrap();
    let mut want: Vec<i64> = (1..=10).collect();
    want.push(2000);
    assert_eq!(ids, want);
}

// ---------------------------------------------------------------------------
// 10: bad bodies
// ---------------------------------------------------------------------------

#[test]
fn oversized_and_malformed_bodies_are_400() {
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    exec_ok(
        &base,
        json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
            "INSERT INTO t(id, v) VALUES(1, 'x')"
        ]),
    );
    let url = format!("{base}/db/execute");

    // 65 MiB: a valid statement that would insert a row if it were accepted.
    let mut big = String::with_capacity(65 * 1024 * 1024 + 64);
    big.push_str("[\"INSERT INTO t(v) VALUES('");
    big.extend(std::iter::repeat_n('a', 65 * 1024 * 1024));
    big.push_str("')\"]");
    let resp = raw_client(secs(30))
        .post(&url)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .expect("POST 65 MiB");
    let code = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    assert_eq!(code, 400, "65 MiB body answered {code}: {body}");
    json_error_body(&body, "65 MiB body");

    for bad in ["{}", "[1]", "[]", "[[]]", "[\"  \"]"] {
        let (code, body) = http_post(&url, bad).expect("POST");
        assert_eq!(code, 400, "body {bad:?} answered {code}: {body}");
        json_error_body(&body, bad);
    }
    assert_eq!(c.count_rows(0, "t"), 1, "a rejected body was applied");
    let v = first_values(&query_at(&base, "SELECT id, v FROM t", "strong").unwrap()).unwrap();
    assert_eq!(v, vec![vec![json!(1), json!("x")]]);
}

// ---------------------------------------------------------------------------
// 11: follower kill -9 mid-stream
// ---------------------------------------------------------------------------

#[test]
fn kill9_follower_mid_write_stream_then_restart_loses_nothing() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(10));
    let lbase = c.nodes[leader].base_url();
    exec_ok(&lbase, json!(["CREATE TABLE t (id INTEGER PRIMARY KEY)"]));

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let writer = {
        let (stop, acked, url) = (stop.clone(), acked.clone(), lbase.clone());
        thread::spawn(move || {
            let mut id = 0i64;
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                let body = json!([["INSERT INTO t(id) VALUES(?)", id]]);
                match execute_at(&url, &body).and_then(|r| check_results(&r)) {
                    Ok(()) => acked.lock().unwrap().push(id),
                    Err(e) => {
                        failures.push(e);
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            failures
        })
    };
    let acked_len = || acked.lock().unwrap().len();

    wait_for(
        || (acked_len() >= 20).then_some(()),
        secs(15),
        "20 writes acknowledged before the kill",
    );
    let down = c.followers(leader)[0];
    c.nodes[down].kill9();
    let at_kill = acked_len();
    wait_for(
        || (acked_len() >= at_kill + 20).then_some(()),
        secs(15),
        "20 writes acknowledged while the follower is down",
    );
    let after_kill = acked_len() - at_kill;
    c.nodes[down].restart();
    // The writer keeps going while the follower restarts and catches up.
    let at_restart = acked_len();
    wait_for(
        || (acked_len() >= at_restart + 10).then_some(()),
        secs(15),
        "10 writes acknowledged after the follower's restart",
    );
    stop.store(true, Ordering::SeqCst);
    let failures = writer.join().expect("writer thread panicked");
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} writes acknowledged ({after_kill} while node {} was down), {} failed",
        acked.len(),
        c.nodes[down].id,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "writes to the leader failed while one follower was down: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        after_kill > 0,
        "no write acknowledged while the follower was down"
    );

    c.nodes[down].wait_ready(secs(30));
    for i in 0..3 {
        wait_ids_present(&c, i, "SELECT id FROM t", &acked, secs(30));
    }
}

/// A node that advertises a Raft address the leader cannot reach must not become a voter: with
/// it counted, a 1-node cluster would need 2 votes and stop accepting writes.
#[test]
fn join_with_unreachable_raft_address_is_refused_and_quorum_is_kept() {
    let c = Cluster::start(1, &[]);
    let leader = c.nodes[0].base_url();
    exec_ok(&leader, json!(["CREATE TABLE t (id INTEGER PRIMARY KEY)"]));
    let unreachable = format!("127.0.0.1:{}", free_port());
    let mut rogue = Node::new(2, c.dir(), &["--raft-advertise-addr", &unreachable]);
    rogue.start(Some(&leader));
    wait_for(
        || {
            fs::read_to_string(rogue.log_path())
                .ok()
                .filter(|log| log.contains("cannot reach its Raft address"))
        },
        secs(20),
        "the join to be refused with the reason",
    );
    assert_eq!(c.nodes[0].member_count().expect("nodes"), 1);
    exec_ok(&leader, json!([["INSERT INTO t(id) VALUES(?)", 1]]));
    rogue.kill9();
}
