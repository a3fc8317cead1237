//! Scheduled backups against real `raftlite` processes: backups appear on schedule (file://
//! and the in-process S3 server); nothing is uploaded when nothing changed, also across a
//! restart and a leader change (kill -9 of the leader); a failing destination shows in the
//! metrics and recovers; retention after each backup; restore drills detect a corrupted
//! newest backup (and the next slot replaces it); the default destination beside the data dir.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{http_get, wait_for, Cluster};
use raftlite_backup::{list_backups, BackupList, Destination};
use raftlite_testkit::S3TestServer;
use serde_json::{json, Value};

/// Slot length of the schedules under test.
const EVERY: &str = "2s";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn list(dest: &Destination) -> BackupList {
    runtime()
        .block_on(list_backups(dest))
        .unwrap_or_else(|e| panic!("list {dest}: {e}"))
}

fn file_dest(dir: &Path) -> (String, Destination) {
    let url = format!("file://{}", dir.display());
    let dest = Destination::parse(&url).expect("file destination");
    (url, dest)
}

fn metrics_of(base: &str) -> String {
    let (status, body) = http_get(&format!("{base}/metrics")).expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Value of `name{destination="dest"}` in a Prometheus text body.
fn metric(metrics: &str, name: &str, dest: &str) -> Option<f64> {
    let prefix = format!("{name}{{destination=\"{dest}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn insert(base: &str, n: i64) {
    let resp = common::execute_at(base, &json!([["INSERT INTO t(v) VALUES(?)", n]]))
        .unwrap_or_else(|e| panic!("insert {n}: {e}"));
    common::check_results(&resp).unwrap_or_else(|e| panic!("insert {n}: {e}"));
}

/// Waits until the destination holds a backup whose data includes the leader's latest write
/// (its data-changed index reached `min_data_index`); returns the listing.
fn wait_backup_at(dest: &Destination, min_data_index: u64, timeout: Duration) -> BackupList {
    wait_for(
        || {
            let l = list(dest);
            l.backups
                .first()
                .is_some_and(|(_, m)| m.data_index() >= min_data_index)
                .then_some(l)
        },
        timeout,
        &format!("a backup at data index >= {min_data_index}"),
    )
}

fn applied_index(base: &str) -> u64 {
    let (_, body) = http_get(&format!("{base}/status")).expect("status");
    let status: Value = serde_json::from_str(&body).expect("status JSON");
    status["store"]["raft"]["applied_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no applied_index in {status}"))
}

/// `raftlite_backup_skipped_total` for `dest` at `base` (0 while the node is unreachable: the
/// metric is registered at zero from the start).
fn skipped_count(base: &str, dest: &str) -> f64 {
    http_get(&format!("{base}/metrics"))
        .ok()
        .filter(|(status, _)| *status == 200)
        .and_then(|(_, body)| metric(&body, "raftlite_backup_skipped_total", dest))
        .unwrap_or(0.0)
}

/// Waits until the node at `base` has counted `more` further skipped slots (each slot with no
/// data change since the newest backup), i.e. `more` schedule slots have passed on it.
fn wait_more_skips(base: &str, dest: &str, more: f64, what: &str) {
    let from = skipped_count(base, dest);
    wait_for(
        || (skipped_count(base, dest) >= from + more).then_some(()),
        Duration::from_secs(30),
        &format!("{more} more skipped slots at {base} ({what}; {from} before)"),
    );
}

fn backup_status(base: &str) -> Value {
    try_backup_status(base).unwrap_or_else(|| panic!("no /status from {base}"))
}

fn try_backup_status(base: &str) -> Option<Value> {
    let (_, body) = http_get(&format!("{base}/status")).ok()?;
    let status: Value = serde_json::from_str(&body).ok()?;
    Some(status["backup"].clone())
}

/// No schedule slot is counted twice.
fn assert_one_backup_per_slot(l: &BackupList) {
    let mut slots = HashSet::new();
    for (id, m) in &l.backups {
        if let Some(slot) = m.slot_unix_ms {
            assert!(
                slots.insert(slot),
                "two counted backups for slot {slot}: {id}"
            );
        }
    }
}

#[test]
fn schedule_skips_unchanged_data_across_restart_and_leader_change() {
    let backups = tempfile::tempdir().expect("temp dir");
    let (url, dest) = file_dest(backups.path());
    let mut c = Cluster::start(
        3,
        &[
            "--backup-to",
            &url,
            "--backup-interval",
            EVERY,
            "--backup-verify-interval",
            "off",
            "--backup-keep-last",
            "1000",
        ],
    );
    let leader = c.wait_leader(Duration::from_secs(20));
    let base = c.nodes[leader].base_url();
    common::execute_at(&base, &json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"]))
        .expect("create");
    for n in 0..20 {
        insert(&base, n);
    }
    // Backups appear on schedule, and follow new writes.
    let first = wait_backup_at(&dest, applied_index(&base), Duration::from_secs(20));
    for n in 20..40 {
        insert(&base, n);
    }
    let after_writes = wait_backup_at(&dest, applied_index(&base), Duration::from_secs(20));
    assert!(after_writes.backups.len() > first.backups.len());
    let newest = after_writes.backups[0].1.clone();
    assert_eq!(
        newest.node_id, c.nodes[leader].id,
        "the leader takes backups"
    );
    assert!(newest.slot_unix_ms.is_some() && newest.leader_term.is_some());

    // Nothing changes: several slots pass without an upload, and the leader says why.
    wait_more_skips(&base, &url, 3.0, "no writes after the last backup");
    let quiet = list(&dest);
    assert_eq!(
        quiet.backups.len(),
        after_writes.backups.len(),
        "no upload without changes"
    );
    let status = backup_status(&base);
    assert_eq!(status["schedule"], "every 2s", "{status}");
    assert_eq!(status["last"]["outcome"], "skipped", "{status}");
    let skipped = metric(&metrics_of(&base), "raftlite_backup_skipped_total", &url);
    assert!(
        skipped.is_some_and(|n| n >= 2.0),
        "skips counted: {skipped:?}"
    );

    // kill -9 of the leader: the new leader continues the schedule; its first entries (a
    // blank, membership) change no data, so it uploads nothing.
    c.nodes[leader].kill9();
    let new_leader = wait_for(
        || c.leader_index().filter(|&i| i != leader),
        Duration::from_secs(30),
        "a new leader",
    );
    let new_base = c.nodes[new_leader].base_url();
    wait_more_skips(&new_base, &url, 3.0, "a leader change, no writes");
    assert_eq!(
        list(&dest).backups.len(),
        after_writes.backups.len(),
        "a leader change alone uploads nothing"
    );
    assert_eq!(backup_status(&new_base)["last"]["outcome"], "skipped");

    // The killed node comes back (a restart): still nothing new.
    c.nodes[leader].restart();
    c.nodes[leader].wait_ready(Duration::from_secs(30));
    let now_leader = c.wait_sole_leader(Duration::from_secs(20));
    wait_more_skips(
        &c.nodes[now_leader].base_url(),
        &url,
        2.0,
        "the killed node restarted, no writes",
    );
    assert_eq!(list(&dest).backups.len(), after_writes.backups.len());

    // New writes: the new leader backs them up, in its own term.
    let new_leader = c.wait_leader(Duration::from_secs(20));
    let new_base = c.nodes[new_leader].base_url();
    insert(&new_base, 1000);
    let later = wait_backup_at(&dest, applied_index(&new_base), Duration::from_secs(20));
    let (_, m) = &later.backups[0];
    assert_eq!(m.node_id, c.nodes[new_leader].id);
    assert!(m.leader_term > newest.leader_term, "{m:?} vs {newest:?}");
    assert_one_backup_per_slot(&later);
    assert!(later.superseded.is_empty(), "{:?}", later.superseded);
}

#[test]
fn s3_schedule_reports_a_failing_destination_and_recovers() {
    let s3 = S3TestServer::start().expect("S3 test server");
    let url = "s3://raftlite-test/scheduled";
    let c = Cluster::start_with_envs(
        1,
        &[
            "--backup-to",
            url,
            "--backup-interval",
            EVERY,
            "--backup-verify-interval",
            "off",
            "--backup-keep-last",
            "1000",
        ],
        &s3.env_vars(),
    );
    let dest =
        Destination::parse_with_options(url, s3.object_store_options()).expect("S3 destination");
    let base = c.nodes[0].base_url();
    common::execute_at(&base, &json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"]))
        .expect("create");
    insert(&base, 1);
    wait_backup_at(&dest, applied_index(&base), Duration::from_secs(20));
    let successes = |m: &str| metric(m, "raftlite_backup_success_total", url).unwrap_or(0.0);
    let failures = |m: &str| metric(m, "raftlite_backup_failure_total", url).unwrap_or(0.0);
    assert_eq!(failures(&metrics_of(&base)), 0.0);

    // The store goes down; a change makes the next slot try, fail, and say so.
    s3.set_unavailable(true);
    insert(&base, 2);
    wait_for(
        || (failures(&metrics_of(&base)) >= 1.0).then_some(()),
        Duration::from_secs(60),
        "a failed scheduled backup counted",
    );
    let status = backup_status(&base);
    assert_eq!(status["last"]["outcome"], "failure", "{status}");
    let error = status["last"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("s3://raftlite-test/scheduled"), "{error}");
    assert!(!error.contains(s3.secret_key()), "{error}");
    // Serving is unaffected.
    insert(&base, 3);
    let before = successes(&metrics_of(&base));

    // Back up: the retry succeeds and the data is in the destination.
    s3.set_unavailable(false);
    wait_backup_at(&dest, applied_index(&base), Duration::from_secs(60));
    // The counter and the status move just after the upload the wait saw.
    wait_for(
        || {
            (successes(&metrics_of(&base)) > before
                && backup_status(&base)["last"]["outcome"] == "success")
                .then_some(())
        },
        Duration::from_secs(10),
        "the successful backup counted and shown in /status",
    );
}

#[test]
fn retention_runs_after_each_backup() {
    let backups = tempfile::tempdir().expect("temp dir");
    let (url, dest) = file_dest(backups.path());
    let c = Cluster::start(
        1,
        &[
            "--backup-to",
            &url,
            "--backup-interval",
            "1s",
            "--backup-verify-interval",
            "off",
            "--backup-keep-last",
            "2",
        ],
    );
    let base = c.nodes[0].base_url();
    common::execute_at(&base, &json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"]))
        .expect("create");
    let mut seen = HashSet::new();
    let mut data_index = 0;
    for n in 0..5 {
        insert(&base, n);
        let l = wait_backup_at(&dest, data_index + 1, Duration::from_secs(20));
        data_index = l.backups[0].1.data_index();
        seen.insert(l.backups[0].0.clone());
    }
    assert!(
        seen.len() >= 5,
        "five distinct backups were taken: {seen:?}"
    );
    let l = wait_for(
        || {
            let l = list(&dest);
            (l.backups.len() == 2).then_some(l)
        },
        Duration::from_secs(10),
        "retention to leave the newest 2",
    );
    // The counter moves just after the deletes it counts: wait for it rather than read once.
    wait_for(
        || metric(&metrics_of(&base), "raftlite_backup_pruned_total", &url).filter(|&n| n >= 3.0),
        Duration::from_secs(10),
        "raftlite_backup_pruned_total to count the 3 deleted backups",
    );
    assert_eq!(l.backups[0].1.data_index(), data_index);
}

#[test]
fn drills_detect_a_corrupted_newest_backup_and_the_next_slot_replaces_it() {
    let backups = tempfile::tempdir().expect("temp dir");
    let (url, dest) = file_dest(backups.path());
    let c = Cluster::start(
        1,
        &[
            "--backup-to",
            &url,
            "--backup-interval",
            "3s",
            "--backup-verify-interval",
            "2s",
        ],
    );
    let base = c.nodes[0].base_url();
    common::execute_at(&base, &json!(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"]))
        .expect("create");
    insert(&base, 1);
    let l = wait_backup_at(&dest, applied_index(&base), Duration::from_secs(20));
    let (id, manifest) = l.backups[0].clone();
    let last_verify = |m: &str| metric(m, "raftlite_backup_last_verify_success", &url);
    wait_for(
        || (last_verify(&metrics_of(&base)) == Some(1.0)).then_some(()),
        Duration::from_secs(20),
        "a passing drill",
    );
    assert!(
        list(&dest).verified.contains(&id),
        "a passing drill marks the set"
    );

    // Flip bytes in the middle of the stored object.
    let object = backups
        .path()
        .join(id.cluster_id())
        .join("backups")
        .join(id.set())
        .join(manifest.object_name());
    let mut bytes = std::fs::read(&object).expect("read object");
    let mid = bytes.len() / 2;
    let end = (mid + 8).min(bytes.len());
    for b in &mut bytes[mid..end] {
        *b ^= 0xff;
    }
    std::fs::write(&object, &bytes).expect("corrupt object");

    wait_for(
        || (last_verify(&metrics_of(&base)) == Some(0.0)).then_some(()),
        Duration::from_secs(20),
        "the drill to fail on the corrupted backup",
    );
    let status = backup_status(&base);
    assert_eq!(status["last_verify"]["outcome"], "failure", "{status}");
    assert_eq!(status["last_verify"]["id"], id.to_string(), "{status}");
    let failures = metric(
        &metrics_of(&base),
        "raftlite_backup_verify_failure_total",
        &url,
    );
    assert!(failures.is_some_and(|n| n >= 1.0));

    // No write happened, yet the next slot takes a fresh backup: the newest one is bad.
    let replaced = wait_for(
        || {
            let l = list(&dest);
            (l.backups[0].0 != id).then_some(l)
        },
        Duration::from_secs(20),
        "a fresh backup replacing the corrupted one",
    );
    assert_eq!(replaced.backups[0].1.data_index(), manifest.data_index());
    wait_for(
        || (last_verify(&metrics_of(&base)) == Some(1.0)).then_some(()),
        Duration::from_secs(20),
        "the drill to pass again on the fresh backup",
    );
}

#[test]
fn default_destination_is_beside_the_data_dir_and_hourly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = format!("127.0.0.1:{}", common::free_port());
    let raft = format!("127.0.0.1:{}", common::free_port());
    let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftlite"))
        .current_dir(dir.path())
        .args(["serve", "--http-addr", &http, "--raft-addr", &raft])
        .env_remove("RAFTLITE_BACKUP_TO")
        .env_remove("RAFTLITE_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn raftlite");
    let base = format!("http://{http}");
    let expected = format!("file://{}", dir.path().join("raftlite-backups").display());
    let status = wait_for(
        || {
            let s = try_backup_status(&base)?;
            s["last"]["outcome"].is_string().then_some(s)
        },
        Duration::from_secs(30),
        "the first scheduled backup",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(dir.path().join("raftlite-data").is_dir());
    assert_eq!(status["destination"], expected.as_str(), "{status}");
    assert_eq!(status["schedule"], "every 1h", "{status}");
    assert_eq!(status["last"]["outcome"], "success", "{status}");
    let (_, dest) = file_dest(&dir.path().join("raftlite-backups"));
    assert_eq!(list(&dest).backups.len(), 1);
}
