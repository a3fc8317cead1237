//! End-to-end tests that run real `raftlite` processes on 127.0.0.1.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    check_results, execute_at, first_values, http_post, wait_for, wait_ids_present, Cluster,
};
use serde_json::{json, Value};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Executes `body` on node `idx`, panicking on any HTTP or statement error.
fn exec_ok(c: &Cluster, idx: usize, body: Value) -> Value {
    let resp = c.nodes[idx]
        .execute(body.clone())
        .unwrap_or_else(|e| panic!("execute {body} on node {}: {e}", c.nodes[idx].id));
    check_results(&resp)
        .unwrap_or_else(|e| panic!("execute {body} on node {}: {e}", c.nodes[idx].id));
    resp
}

fn wait_count(c: &Cluster, idx: usize, table: &str, want: i64, timeout: Duration) {
    wait_for(
        || (c.try_count_rows(idx, table).ok()? == want).then_some(()),
        timeout,
        &format!("node {} to have {want} rows in {table}", c.nodes[idx].id),
    );
}

/// `store.raft.<field>` from node `idx`'s `/status`, or `None` while it does not answer.
fn try_raft_u64(c: &Cluster, idx: usize, field: &str) -> Option<u64> {
    c.nodes[idx].status().ok()?["store"]["raft"][field].as_u64()
}

fn raft_u64(c: &Cluster, idx: usize, field: &str) -> u64 {
    let status = c.nodes[idx]
        .status()
        .unwrap_or_else(|e| panic!("/status of node {}: {e}", c.nodes[idx].id));
    status["store"]["raft"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no store.raft.{field} in {status}"))
}

/// True if `dir` contains a regular file, at any depth.
fn has_file(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let p = e.path();
            p.is_file() || (p.is_dir() && has_file(&p))
        })
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
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn three_node_cluster_replicates_writes_sent_to_a_follower() {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(10));
    let followers = c.followers(leader);
    assert_eq!(followers.len(), 2);

    exec_ok(
        &c,
        followers[0],
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"]),
    );
    for id in 1..=100i64 {
        let f = followers[id as usize % 2];
        exec_ok(
            &c,
            f,
            json!([[
                "INSERT INTO t(id, name) VALUES(?, ?)",
                id,
                format!("name-{id}")
            ]]),
        );
    }

    let want: Vec<i64> = (1..=100).collect();
    for i in 0..3 {
        wait_ids_present(&c, i, "SELECT id FROM t", &want, secs(20));
        assert_eq!(c.count_rows(i, "t"), 100, "node {}", c.nodes[i].id);
        let v = first_values(
            &c.nodes[i]
                .query("SELECT name FROM t WHERE id = 42", "none")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v, vec![vec![json!("name-42")]], "node {}", c.nodes[i].id);
    }
}

#[test]
fn leader_kill9_during_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(10));
    exec_ok(
        &c,
        leader,
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY)"]),
    );

    let urls: Vec<String> = c.nodes.iter().map(|n| n.base_url()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        thread::spawn(move || {
            let mut rng = Rng::seeded();
            let mut id = 0i64;
            let mut failures = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // A failed attempt may or may not have been applied, so the
                // next attempt always uses a fresh id.
                id += 1;
                let url = &urls[rng.below(urls.len())];
                let body = json!([["INSERT INTO t(id) VALUES(?)", id]]);
                match execute_at(url, &body).and_then(|r| check_results(&r)) {
                    Ok(()) => acked.lock().unwrap().push(id),
                    Err(_) => {
                        failures += 1;
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
        "20 writes acknowledged before the leader is killed",
    );
    c.nodes[leader].kill9();
    let killed_at = Instant::now();
    let new_leader = c.wait_leader(secs(10));
    assert_ne!(new_leader, leader);
    eprintln!(
        "node {} killed; node {} leader after {:?}",
        c.nodes[leader].id,
        c.nodes[new_leader].id,
        killed_at.elapsed()
    );

    let acked_at_failover = acked_len();
    wait_for(
        || (acked_len() >= acked_at_failover + 20).then_some(()),
        secs(15),
        "20 writes to be acknowledged after the failover",
    );
    stop.store(true, Ordering::SeqCst);
    let failures = writer.join().expect("writer thread panicked");
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} writes acknowledged, {failures} failed attempts",
        acked.len()
    );

    c.nodes[leader].restart();
    c.nodes[leader].wait_ready(secs(30));
    for i in 0..3 {
        wait_ids_present(&c, i, "SELECT id FROM t", &acked, secs(30));
    }
}

#[test]
fn follower_down_during_20000_writes_catches_up_by_snapshot() {
    const ROWS: i64 = 20_000;
    // Small batches so the leader's log grows well past --snapshot-threshold
    // (ROWS / PER_REQUEST log entries) and old entries get compacted away.
    const PER_REQUEST: i64 = 5;
    const WRITERS: i64 = 4;

    let mut c = Cluster::start(3, &["--snapshot-threshold", "1000"]);
    let leader = c.wait_leader(secs(10));
    exec_ok(
        &c,
        leader,
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]),
    );
    let down = c.followers(leader)[0];
    c.nodes[down].kill9();
    // A follower's log never runs ahead of its leader's, so the killed node's last log index
    // is at most the leader's once it is dead (no client writes until then).
    let down_last_log = raft_u64(&c, leader, "last_log_index");

    let url = c.nodes[leader].base_url();
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = url.clone();
            thread::spawn(move || -> Result<(), String> {
                let deadline = Instant::now() + secs(90);
                let mut start = w * PER_REQUEST;
                while start < ROWS {
                    let batch: Vec<Value> = (start..(start + PER_REQUEST).min(ROWS))
                        .map(|id| {
                            json!([
                                "INSERT OR IGNORE INTO t(id, v) VALUES(?, ?)",
                                id,
                                format!("value-{id}")
                            ])
                        })
                        .collect();
                    let body = Value::Array(batch);
                    // INSERT OR IGNORE makes retrying an applied batch harmless.
                    loop {
                        match execute_at(&url, &body).and_then(|r| check_results(&r)) {
                            Ok(()) => break,
                            Err(e) if Instant::now() >= deadline => return Err(e),
                            Err(_) => thread::sleep(Duration::from_millis(50)),
                        }
                    }
                    start += WRITERS * PER_REQUEST;
                }
                Ok(())
            })
        })
        .collect();
    for w in writers {
        w.join()
            .expect("writer thread panicked")
            .expect("writer failed");
    }
    eprintln!("{ROWS} rows written in {:?}", started.elapsed());
    wait_count(&c, leader, "t", ROWS, secs(10));

    // Every running node has purged its log past the killed node's last entry, so whichever
    // leads when it comes back no longer has the entries it lacks: only a snapshot can bring it
    // up to date.
    let purged: Vec<u64> = (0..c.nodes.len())
        .filter(|&i| i != down)
        .map(|i| {
            wait_for(
                || {
                    let purged = try_raft_u64(&c, i, "purged_index")?;
                    (purged > down_last_log).then_some(purged)
                },
                secs(30),
                &format!(
                    "node {} to purge its log past index {down_last_log} (the killed node's last)",
                    c.nodes[i].id
                ),
            )
        })
        .collect();
    let purged_at_restart = purged.iter().copied().min().unwrap_or(0);
    eprintln!("killed node's last log index {down_last_log}; others purged up to {purged:?}");

    c.nodes[down].restart();
    let restarted = Instant::now();
    wait_count(&c, down, "t", ROWS, secs(60));
    eprintln!("follower caught up in {:?}", restarted.elapsed());

    // It did catch up (by snapshot, as shown above): its snapshot covers the entries purged
    // before its restart, it applies as far as the leader, and it holds the leader's data, row
    // for row.
    wait_for(
        || (try_raft_u64(&c, down, "snapshot_index")? >= purged_at_restart).then_some(()),
        secs(30),
        &format!(
            "node {} to hold a snapshot at index >= {purged_at_restart} (purged before its restart)",
            c.nodes[down].id
        ),
    );
    let leader = c.wait_leader(secs(10));
    let leader_applied = raft_u64(&c, leader, "applied_index");
    wait_for(
        || (try_raft_u64(&c, down, "applied_index")? >= leader_applied).then_some(()),
        secs(30),
        &format!(
            "node {} to apply up to index {leader_applied}",
            c.nodes[down].id
        ),
    );
    let rows_as_written =
        format!("SELECT COUNT(*) FROM t WHERE id >= 0 AND id < {ROWS} AND v = 'value-' || id");
    for i in [leader, down] {
        let n = common::query_i64s(&c.nodes[i].base_url(), &rows_as_written, "none")
            .unwrap_or_else(|e| panic!("{rows_as_written} on node {}: {e}", c.nodes[i].id));
        assert_eq!(n, vec![ROWS], "rows as written on node {}", c.nodes[i].id);
    }

    let snapshots = c.nodes[down].data_dir.join("snapshots");
    wait_for(
        || has_file(&snapshots).then_some(()),
        secs(10),
        &format!("a snapshot file under {}", snapshots.display()),
    );
}

#[test]
fn full_cluster_restart_keeps_all_data() {
    const ROWS: i64 = 50;
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(10));
    exec_ok(
        &c,
        leader,
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY)"]),
    );
    for chunk in (1..=ROWS).collect::<Vec<_>>().chunks(10) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|id| json!(["INSERT INTO t(id) VALUES(?)", id]))
            .collect();
        exec_ok(&c, leader, Value::Array(batch));
    }

    for n in &mut c.nodes {
        n.stop();
    }
    // Same flags as before: node 1 without --join (must not re-bootstrap),
    // the others with their --join (a no-op for existing members).
    for n in &mut c.nodes {
        n.restart();
    }
    let leader = c.wait_leader(secs(30));
    for n in &mut c.nodes {
        n.wait_ready(secs(30));
    }
    let want: Vec<i64> = (1..=ROWS).collect();
    for i in 0..3 {
        wait_ids_present(&c, i, "SELECT id FROM t", &want, secs(30));
    }

    wait_for(
        || {
            let resp = c.nodes[leader]
                .execute(json!([["INSERT INTO t(id) VALUES(?)", ROWS + 1]]))
                .ok()?;
            check_results(&resp).ok()
        },
        secs(15),
        "a write to succeed after the restart",
    );
    for i in 0..3 {
        wait_count(&c, i, "t", ROWS + 1, secs(20));
    }
}

#[test]
fn single_node_serve_works_with_defaults_and_bad_input_is_400() {
    let c = Cluster::start(1, &[]);
    let node = &c.nodes[0];
    let status = node.status().expect("status");
    assert_eq!(status["store"]["raft"]["state"], "Leader", "{status}");

    let url = node.url("/db/execute");
    for bad in [
        "[",
        "not json",
        "{\"sql\": \"SELECT 1\"}",
        "\"SELECT 1\"",
        "[]",
    ] {
        let (code, body) = http_post(&url, bad).expect("POST");
        assert_eq!(code, 400, "body {bad:?} answered {body}");
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("400 body for {bad:?} is not JSON ({e}): {body}"));
        assert!(
            v.get("error").is_some(),
            "400 body for {bad:?} has no error: {body}"
        );
    }

    let resp = node
        .execute(json!(["SELEC nonsense"]))
        .expect("SQL error is still HTTP 200");
    assert!(resp["results"][0].get("error").is_some(), "{resp}");

    let resp = exec_ok(
        &c,
        0,
        json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)",
            ["INSERT INTO t(name) VALUES(?)", "alice"]
        ]),
    );
    assert_eq!(resp["results"][1]["last_insert_id"], 1, "{resp}");
    assert_eq!(resp["results"][1]["rows_affected"], 1, "{resp}");

    for level in ["none", "weak", "strong"] {
        let v = first_values(&node.query("SELECT id, name FROM t", level).expect("query"))
            .expect("values");
        assert_eq!(v, vec![vec![json!(1), json!("alice")]], "level={level}");
    }
}
