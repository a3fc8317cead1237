//! Disaster recovery against real `raftlite` processes (the runbook in
//! `docs/disaster-recovery.md` runs the same commands):
//!
//! - auto-restore of a lost cluster from S3: while the store is down the new node answers 503
//!   "restore" on every request, `/readyz` included; once the store is back it serves the
//!   backup's data on a new timeline; a restart after new writes keeps them ("auto-restore
//!   skipped"); another node joins it with an empty data dir and receives the restored data;
//!   a store that is down for 3 s at boot does not stop the restore;
//! - auto-restore from a file destination through rqlite's `--auto-restore` JSON file, of an
//!   encrypted backup (`--auto-restore-identity`), choosing the newest *verified* backup; without
//!   the key the start is refused and the data dir stays empty;
//! - an empty destination: refused (naming the destination and `--auto-restore-if-empty-ok`),
//!   or an empty start with that flag;
//! - a lost node: removed, then back with an empty data dir; a wiped node that rejoins under
//!   its old id without being removed keeps the cluster writable;
//! - a lost Raft log: `serve` refuses naming `--recovery-mode`, `doctor` says "log lost",
//!   `--recovery-mode` serves every row on a new timeline and two empty nodes join it directly;
//!   clusters seeded by `--recovery-mode` or an auto-restore replicate the seed to joiners;
//! - a damaged log / a damaged database (unreadable, damaged pages, or a 0-byte file next to a
//!   non-empty WAL): refused naming the file, `doctor` says "corrupt" and deletes nothing;
//!   `--recovery-mode` moves the damaged part aside;
//! - a lost quorum: `raftlite recover` on the survivor, which then leads alone with every
//!   acknowledged row, and the dead nodes rejoin with empty data dirs; `recover` replays log
//!   entries the database never applied;
//! - bad data written by an application: `raftlite restore --id` from `raftlite backup list`;
//! - `doctor | head`: a reader that goes away early does not make `doctor` panic;
//! - fuzzing: hundreds of corruptions of the log and the database: `doctor` never panics, never
//!   hangs and changes nothing; a sample of `serve` runs refuses cleanly or serves intact data.
//!
//! Every timeline a path creates is asserted (counter, parent, reason).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use common::{
    check_results, execute_at, first_values, free_port, http_get, http_post_raw, query_at,
    query_i64s, run_to_completion, tail, wait_for, Cluster, Node, Run,
};
use raftlite_testkit::S3TestServer;
use serde_json::{json, Value};

/// A command that does not finish within this is a hang: killed, and the test fails.
const DEADLINE: Duration = Duration::from_secs(20);
const READY: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// `raftlite ARGS...` with no inherited `AWS_*`/`RAFTLITE_*` settings (backups of a `serve`
/// off unless a flag says otherwise), `envs` added.
fn command(args: &[String], envs: &[(String, String)]) -> Command {
    let mut cmd = common::cli_command();
    cmd.args(args);
    if args.first().is_some_and(|a| a == "serve") {
        cmd.env("RAFTLITE_BACKUP_TO", "off");
    }
    cmd.envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Reads a child's stdout and stderr on threads (so a full pipe never blocks it).
struct Output {
    out: thread::JoinHandle<String>,
    err: thread::JoinHandle<String>,
}

fn capture(child: &mut Child) -> Output {
    fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    }
    Output {
        out: reader(child.stdout.take()),
        err: reader(child.stderr.take()),
    }
}

/// Runs `raftlite ARGS...` to completion; past `deadline` it is killed (`timed_out`).
fn raftlite_env(args: &[String], envs: &[(String, String)], deadline: Duration) -> Run {
    let mut child = command(args, envs).spawn().expect("spawn raftlite");
    run_to_completion(&mut child, deadline)
}

fn raftlite(args: &[&str]) -> Run {
    raftlite_env(&strings(args), &[], DEADLINE)
}

/// The `serve` flags of `node` (as `Node::start` passes them) plus `extra`.
fn serve_args(node: &Node, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&[
        "serve",
        "--data-dir",
        &node.data_dir.display().to_string(),
        "--http-addr",
        &node.http_addr,
        "--raft-addr",
        &node.raft_addr,
        "--node-id",
        &node.id.to_string(),
    ]);
    args.extend(strings(extra));
    args
}

/// `raftlite serve` that is expected to refuse: it must exit (non-zero) within [`DEADLINE`].
fn serve_expecting_refusal(args: &[String], envs: &[(String, String)]) -> Run {
    let run = raftlite_env(args, envs, DEADLINE);
    assert!(!run.timed_out, "serve neither refused nor stopped: {run:?}");
    assert!(
        run.code.is_some_and(|c| c != 0),
        "serve should have refused to start: {run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    run
}

fn doctor_json(data_dir: &Path) -> Value {
    let run = raftlite(&[
        "doctor",
        "--data-dir",
        &data_dir.display().to_string(),
        "--json",
    ])
    .ok();
    run.json()
}

// ---------------------------------------------------------------------------------------------
// Data and timelines
// ---------------------------------------------------------------------------------------------

fn exec(base: &str, body: Value) {
    let resp = execute_at(base, &body).unwrap_or_else(|e| panic!("execute {body}: {e}"));
    check_results(&resp).unwrap_or_else(|e| panic!("execute {body}: {e}"));
}

fn create_table(base: &str) {
    exec(
        base,
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]),
    );
}

/// Inserts each id in its own request (its own log entry); returns the acknowledged ids.
fn insert(base: &str, ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut acked = Vec::new();
    for id in ids {
        exec(
            base,
            json!([["INSERT INTO t(id, v) VALUES(?, ?)", id, format!("row {id}")]]),
        );
        acked.push(id);
    }
    acked
}

fn ids(base: &str) -> Result<Vec<i64>, String> {
    query_i64s(base, "SELECT id FROM t ORDER BY id", "none")
}

/// Waits until `base` holds exactly `want` (ids of `t`, in order).
fn wait_ids(base: &str, want: &[i64]) {
    let mut last = None;
    let found = (|| {
        let deadline = Instant::now() + READY;
        while Instant::now() < deadline {
            let now = ids(base);
            if now.as_deref() == Ok(want) {
                return true;
            }
            last = Some(now);
            sleep(Duration::from_millis(100));
        }
        false
    })();
    assert!(
        found,
        "{base}: want ids {want:?}, last read {last:?} after {READY:?}"
    );
}

fn status(node: &Node) -> Value {
    node.status()
        .unwrap_or_else(|e| panic!("status of node {}: {e}", node.id))
}

/// `store.timeline_history` of a running node.
fn history(node: &Node) -> Vec<Value> {
    let s = status(node);
    let history = s["store"]["timeline_history"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no store.timeline_history in {s}"));
    // The current timeline is the last one recorded.
    assert_eq!(
        s["store"]["timeline"],
        history.last().cloned().unwrap_or(Value::Null),
        "{s}"
    );
    history
}

/// Checks that `new` is a timeline record branching off `parent` (a record) at `parent_index`
/// with a reason starting with `reason_prefix`.
fn assert_branch(new: &Value, parent: &Value, parent_index: Option<u64>, reason_prefix: &str) {
    assert_eq!(
        new["counter"].as_u64(),
        parent["counter"].as_u64().map(|c| c + 1),
        "counter: {new} after {parent}"
    );
    assert_eq!(new["parent"], parent["id"], "parent: {new} after {parent}");
    assert_ne!(new["id"], parent["id"], "{new}");
    if let Some(index) = parent_index {
        assert_eq!(new["parent_index"].as_u64(), Some(index), "{new}");
    }
    let reason = new["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(reason_prefix),
        "reason should start with {reason_prefix:?}: {new}"
    );
    assert!(new["at_unix_ms"].as_u64().is_some_and(|t| t > 0), "{new}");
}

fn log_text(node: &Node) -> String {
    std::fs::read_to_string(node.log_path()).unwrap_or_default()
}

/// Names in `dir` starting with `prefix`.
fn names_starting(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// 1-3. Auto-restore
// ---------------------------------------------------------------------------------------------

#[test]
fn auto_restore_from_s3_waits_for_the_store_then_serves_the_backup_on_a_new_timeline() {
    let s3 = S3TestServer::start().expect("S3 test server");
    let url = "s3://raftlite-test/dr";

    // The old cluster: data, one backup taken by the server, then writes the backup misses.
    let src = Cluster::start_with_envs(
        1,
        &[
            "--backup-to",
            url,
            "--backup-interval",
            "off",
            "--backup-verify-interval",
            "off",
        ],
        &s3.env_vars(),
    );
    let src_base = src.nodes[0].base_url();
    create_table(&src_base);
    let in_backup = insert(&src_base, 1..=20);
    let resp = http_post_raw(
        &format!("{src_base}/backups"),
        "application/json",
        Vec::new(),
    )
    .expect("POST /backups");
    assert_eq!(resp.status, 200, "POST /backups: {}", resp.text());
    let answer: Value = serde_json::from_slice(&resp.body).expect("POST /backups JSON");
    let manifest = answer["backup"]["manifest"].clone();
    let backup_id = answer["backup"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup.id: {answer}"))
        .to_string();
    insert(&src_base, 21..=25);
    let src_history = history(&src.nodes[0]);
    assert_eq!(src_history.len(), 1, "{src_history:?}");
    assert_eq!(
        manifest["timeline"]["id"], src_history[0]["id"],
        "{manifest}"
    );
    let backup_index = manifest["log_index"].as_u64().expect("manifest log_index");
    // The whole cluster is lost.
    drop(src);

    // A brand-new node restores while the store is down: not ready, every request 503.
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let mut node = Node::new(1, tmp.path(), &["--auto-restore-from", url]);
    node.set_envs(&s3.env_vars());
    s3.set_unavailable(true);
    let requests_before = s3.request_count();
    node.start(None);
    let restoring = format!("[-]restore: auto-restore from {url} in progress");
    // The store comes back as soon as the window has been seen and the node has met the
    // outage (the node keeps retrying it meanwhile: see
    // `auto_restore_survives_a_three_second_store_outage`).
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let body = loop {
        assert!(
            node.is_running(),
            "the node exited during the restore; log:\n{}",
            tail(&node.log_path(), 60)
        );
        let answer = http_get(&node.url("/readyz"));
        if let Ok((200, body)) = &answer {
            panic!("/readyz answered 200 before the restore: {body}; seen {seen:?}");
        }
        if let Ok((503, body)) = &answer {
            if body.contains(&restoring) {
                break body.clone();
            }
        }
        seen.push(answer);
        assert!(Instant::now() < deadline, "no restore window: {seen:?}");
        sleep(Duration::from_millis(10));
    };
    assert!(body.contains(url), "{body}");
    for path in ["/status", "/db/query?q=SELECT%201", "/nodes"] {
        let (status, text) = http_get(&node.url(path)).expect("GET during restore");
        assert_eq!(status, 503, "{path} during the restore: {text}");
        assert!(text.contains("[-]restore"), "{path}: {text}");
    }
    let write = http_post_raw(
        &node.url("/db/execute"),
        "application/json",
        br#"["CREATE TABLE x(y)"]"#.to_vec(),
    )
    .expect("POST during restore");
    assert_eq!(write.status, 503, "{}", write.text());
    // The node really met the outage (its listing was refused), then the store comes back.
    while s3.request_count() <= requests_before {
        assert!(
            Instant::now() < deadline,
            "the node never reached the unavailable store"
        );
        sleep(Duration::from_millis(5));
    }
    s3.set_unavailable(false);
    node.wait_ready(READY);

    // Exactly the backup's data, on a new timeline branching off the backup's.
    assert_eq!(ids(&node.base_url()), Ok(in_backup.clone()));
    let h = history(&node);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0], src_history[0], "the old history is kept");
    assert_branch(&h[1], &src_history[0], Some(backup_index), "auto-restore");
    assert_eq!(
        h[1]["counter"].as_u64(),
        manifest["timeline"]["counter"].as_u64().map(|c| c + 1)
    );
    let reason = h[1]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&backup_id), "{reason}");
    let log = log_text(&node);
    assert!(log.contains("auto-restore done"), "{log}");

    // New writes survive a restart with the same flags: the restore is skipped.
    let base = node.base_url();
    insert(&base, 100..=104);
    node.stop();
    node.restart();
    node.wait_ready(READY);
    let mut all = in_backup.clone();
    all.extend(100..=104);
    assert_eq!(ids(&base), Ok(all.clone()));
    let log = log_text(&node);
    assert!(log.contains("auto-restore skipped"), "{log}");
    assert_eq!(history(&node), h, "a restart starts no timeline");

    // Another node (same flags, empty data dir, --join) joins directly and gets everything,
    // the restored rows included (as a snapshot: the restored node's log begins after them).
    let mut second = Node::new(2, tmp.path(), &["--auto-restore-from", url]);
    second.set_envs(&s3.env_vars());
    second.start(Some(&base));
    second.wait_ready(READY);
    all.extend(insert(&base, 105..=109));
    wait_ids(&second.base_url(), &all);
    assert_eq!(history(&second), h);
    assert!(log_text(&second).contains("auto-restore skipped"));
}

#[test]
fn auto_restore_file_picks_the_newest_verified_encrypted_backup() {
    let key = age::x25519::Identity::generate();
    let recipient = key.to_public().to_string();
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let key_file = tmp.path().join("key.txt");
    std::fs::write(&key_file, key.to_string().expose_secret()).expect("write key");
    let key_file = key_file.display().to_string();
    let backups = tmp.path().join("backups");
    let dest = format!("file://{}", backups.display());

    let src = Cluster::start(1, &[]);
    let src_base = src.nodes[0].base_url();
    create_table(&src_base);
    let verified_rows = insert(&src_base, 1..=10);
    let older = raftlite(&[
        "backup",
        "create",
        "--node",
        &src_base,
        "--to",
        &dest,
        "--recipient",
        &recipient,
        "--json",
    ])
    .ok()
    .json();
    let older_id = older["id"].as_str().expect("id").to_string();
    let verify = raftlite(&[
        "backup",
        "verify",
        "--from",
        &dest,
        "--id",
        &older_id,
        "--identity",
        &key_file,
    ])
    .ok();
    assert!(verify.stdout.contains("OK"), "{verify:?}");
    // `backup verify` does not write the marker (only the server's restore drills do): write
    // it as a passing drill would.
    let destination = raftlite_backup::Destination::parse(&dest).expect("destination");
    let older_backup_id: raftlite_backup::BackupId = older_id.parse().expect("backup id");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(raftlite_backup::mark_verified(
            &destination,
            &older_backup_id,
            1_700_000_000_000,
        ))
        .expect("mark verified");
    insert(&src_base, 11..=15);
    let newer = raftlite(&[
        "backup",
        "create",
        "--node",
        &src_base,
        "--to",
        &dest,
        "--recipient",
        &recipient,
        "--json",
    ])
    .ok()
    .json();
    assert_ne!(newer["id"], older["id"]);
    let src_history = history(&src.nodes[0]);
    drop(src);

    // Without the key the encrypted backup cannot be opened: refused, the node stays empty.
    let mut keyless = Node::new(3, tmp.path(), &[]);
    keyless.data_dir = tmp.path().join("keyless");
    let run = serve_expecting_refusal(&serve_args(&keyless, &["--auto-restore-from", &dest]), &[]);
    assert!(run.stderr.contains(&dest), "{run:?}");
    assert!(!keyless.data_dir.join("db.sqlite").exists(), "{run:?}");
    assert!(!keyless.data_dir.join("raft").exists(), "{run:?}");

    // rqlite's auto-restore file, type "file": the directory is the destination.
    let config = tmp.path().join("auto-restore.json");
    std::fs::write(
        &config,
        json!({
            "version": 1,
            "type": "file",
            "timeout": "60s",
            "continue_on_failure": false,
            "sub": {"dir": backups.display().to_string(), "name": "db.sqlite3"}
        })
        .to_string(),
    )
    .expect("write the auto-restore file");
    let config = config.display().to_string();
    let mut node = Node::new(
        1,
        tmp.path(),
        &[
            "--auto-restore",
            &config,
            "--auto-restore-identity",
            &key_file,
        ],
    );
    node.start(None);
    node.wait_ready(READY);
    // The newest VERIFIED backup, not the newest one.
    assert_eq!(ids(&node.base_url()), Ok(verified_rows));
    let h = history(&node);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_branch(
        &h[1],
        &src_history[0],
        older["log_index"].as_u64(),
        "auto-restore",
    );
    assert!(
        h[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&older_id)),
        "{h:?}"
    );
    exec(
        &node.base_url(),
        json!(["INSERT INTO t(id, v) VALUES(500, 'new')"]),
    );
}

#[test]
fn auto_restore_from_an_empty_destination_refuses_unless_if_empty_ok() {
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let empty = tmp.path().join("no-backups-here");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let dest = format!("file://{}", empty.display());

    let mut node = Node::new(1, tmp.path(), &["--auto-restore-from", &dest]);
    let run = serve_expecting_refusal(&serve_args(&node, &["--auto-restore-from", &dest]), &[]);
    assert!(run.stderr.contains(&dest), "names the destination: {run:?}");
    assert!(
        run.stderr.contains("--auto-restore-if-empty-ok"),
        "names the flag: {run:?}"
    );
    assert!(!node.data_dir.join("db.sqlite").exists());
    assert!(!node.data_dir.join("raft").exists());
    assert_eq!(doctor_json(&node.data_dir)["classification"], "empty");

    // With the flag: an empty new cluster, on its first (bootstrap) timeline.
    node = Node::new(
        1,
        tmp.path(),
        &["--auto-restore-from", &dest, "--auto-restore-if-empty-ok"],
    );
    node.start(None);
    node.wait_ready(READY);
    let tables = query_at(
        &node.base_url(),
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_raftlite%' ESCAPE '\\'",
        "none",
    )
    .and_then(|r| first_values(&r))
    .expect("list tables");
    assert!(tables.is_empty(), "{tables:?}");
    let h = wait_for(
        || {
            let h = history(&node);
            (!h.is_empty()).then_some(h)
        },
        DEADLINE,
        "the first timeline",
    );
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["counter"].as_u64(), Some(1), "{h:?}");
    assert!(h[0]["parent"].is_null(), "{h:?}");
    create_table(&node.base_url());
    assert_eq!(
        insert(&node.base_url(), 1..=3),
        ids(&node.base_url()).unwrap()
    );
    assert!(log_text(&node).contains("starting empty"));
}

/// A store that is down for 3 s at boot (S3 hiccup, network not up yet) does not stop a
/// restore: auto-restore keeps retrying a failing destination (for up to 120 s by default, or
/// the `timeout` of an `--auto-restore` file) and then serves the backup.
#[test]
fn auto_restore_survives_a_three_second_store_outage() {
    let s3 = S3TestServer::start().expect("S3 test server");
    let url = "s3://raftlite-test/outage";
    let src = Cluster::start_with_envs(
        1,
        &["--backup-to", url, "--backup-interval", "off"],
        &s3.env_vars(),
    );
    let src_base = src.nodes[0].base_url();
    create_table(&src_base);
    let rows = insert(&src_base, 1..=5);
    let resp = http_post_raw(
        &format!("{src_base}/backups"),
        "application/json",
        Vec::new(),
    )
    .expect("POST /backups");
    assert_eq!(resp.status, 200, "{}", resp.text());
    drop(src);

    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let mut node = Node::new(1, tmp.path(), &["--auto-restore-from", url]);
    node.set_envs(&s3.env_vars());
    s3.set_unavailable(true);
    let requests_before = s3.request_count();
    node.start(None);
    let outage_began = Instant::now();
    // The node really meets the outage (a request of its restore is refused)...
    wait_for(
        || (s3.request_count() > requests_before).then_some(()),
        READY,
        "the restoring node to reach the unavailable store",
    );
    // ...and the outage lasts 3 s from boot: its length is what this test is about (the
    // restore's retries must outlast it), so this sleep is not a wait for a condition.
    sleep(Duration::from_secs(3).saturating_sub(outage_began.elapsed()));
    s3.set_unavailable(false);
    node.wait_ready(READY);
    assert_eq!(ids(&node.base_url()), Ok(rows));
}

// ---------------------------------------------------------------------------------------------
// Lost node (its disk is gone; the rest of the cluster runs)
// ---------------------------------------------------------------------------------------------

/// `DELETE /remove` of node `id` on `base` (any member; forwarded to the leader).
fn remove_node(base: &str, id: u64) {
    let r = common::http_request_as(
        "DELETE",
        &format!("{base}/remove"),
        None,
        Some(&json!({"id": id}).to_string()),
    )
    .expect("DELETE /remove");
    assert_eq!(r.status, 200, "DELETE /remove: {}", r.body);
}

#[test]
fn lost_node_is_removed_then_rejoins_with_an_empty_data_dir() {
    let mut c = Cluster::start(3, &[]);
    let base = c.nodes[0].base_url();
    create_table(&base);
    let mut acked = insert(&base, 1..=20);
    let before = history(&c.nodes[0]);

    // Node 3 and its disk are gone; the others keep serving.
    c.nodes[2].kill9();
    std::fs::remove_dir_all(&c.nodes[2].data_dir).expect("lose the data dir");
    assert_eq!(doctor_json(&c.nodes[2].data_dir)["classification"], "empty");
    acked.extend(insert(&base, 21..=30));

    // Remove it from the membership, then start it empty with its usual flags (--join).
    remove_node(&base, c.nodes[2].id);
    wait_for(
        || (c.nodes[0].member_count().ok()? == 2).then_some(()),
        DEADLINE,
        "the membership without node 3",
    );
    c.nodes[2].restart();
    c.nodes[2].wait_ready(READY);
    wait_for(
        || (c.nodes[0].member_count().ok()? == 3).then_some(()),
        READY,
        "node 3 back in the membership",
    );
    acked.extend(insert(&base, 31..=35));
    for n in &c.nodes {
        wait_ids(&n.base_url(), &acked);
        assert_eq!(history(n), before, "a lost node starts no timeline");
    }
    // The cluster still tolerates the loss of any one node: stop node 1, write through 2.
    c.nodes[0].kill9();
    let leader = c.wait_leader(READY);
    acked.extend(insert(&c.nodes[leader].base_url(), 36..=40));
    wait_ids(&c.nodes[2].base_url(), &acked);
}

/// A node whose data is lost and that rejoins with an empty data dir under its old id and
/// address WITHOUT being removed first (what `serve`'s refusal message and `doctor` recommend
/// for a lost log: "move this data dir aside and start the node empty with --join") catches up
/// and the cluster keeps accepting writes (openraft's `Config::allow_log_reversion`). Removing
/// it first stays the runbook's order.
#[test]
fn a_wiped_node_rejoining_under_its_old_id_keeps_the_cluster_writable() {
    let mut c = Cluster::start(3, &[]);
    let base = c.nodes[0].base_url();
    create_table(&base);
    let mut acked = insert(&base, 1..=10);
    c.nodes[2].stop();
    let mut aside = c.nodes[2].data_dir.as_os_str().to_os_string();
    aside.push(".old");
    std::fs::rename(&c.nodes[2].data_dir, PathBuf::from(aside)).expect("move aside");
    acked.extend(insert(&base, 11..=12));
    c.nodes[2].restart();
    c.nodes[2].wait_ready(READY);
    // The leader has met the wiped follower (its log went back to empty) and replicated to it
    // again: it holds every acknowledged row. A write after that must still succeed.
    wait_ids(&c.nodes[2].base_url(), &acked);
    let write = execute_at(&base, &json!([["INSERT INTO t(id, v) VALUES(13, 'x')"]]));
    assert!(
        write.as_ref().is_ok_and(|r| check_results(r).is_ok()),
        "a write after the rejoin: {write:?}"
    );
    acked.push(13);
    for n in &c.nodes {
        wait_ids(&n.base_url(), &acked);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Lost or damaged Raft log; damaged database
// ---------------------------------------------------------------------------------------------

#[test]
fn lost_raft_log_refuses_then_recovery_mode_seeds_a_new_cluster_that_others_join() {
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let mut n1 = Node::new(1, tmp.path(), &[]);
    n1.start(None);
    n1.wait_ready(READY);
    let base = n1.base_url();
    create_table(&base);
    let rows = insert(&base, 1..=30);
    let before = history(&n1);
    n1.stop();

    std::fs::remove_dir_all(n1.data_dir.join("raft")).expect("delete raft/");
    let run = serve_expecting_refusal(&serve_args(&n1, &[]), &[]);
    assert!(run.stderr.contains("--recovery-mode"), "{run:?}");
    assert!(run.stderr.contains("db.sqlite"), "{run:?}");

    let report = doctor_json(&n1.data_dir);
    assert_eq!(report["classification"], "log lost", "{report}");
    let index = report["database"]["applied"]["index"]
        .as_u64()
        .expect("the database's index");
    assert!(index >= 32, "{report}");
    assert_eq!(report["log"]["present"], false, "{report}");
    let text = raftlite(&["doctor", "--data-dir", &n1.data_dir.display().to_string()]).ok();
    assert!(text.stdout.contains("log lost"), "{text:?}");
    assert!(text.stdout.contains("--recovery-mode"), "{text:?}");
    // doctor changed nothing: still refused.
    serve_expecting_refusal(&serve_args(&n1, &[]), &[]);

    // Same flags plus --recovery-mode.
    let mut recovering = Node::new(1, tmp.path(), &["--recovery-mode"]);
    recovering.http_addr = n1.http_addr.clone();
    recovering.raft_addr = n1.raft_addr.clone();
    recovering.start(None);
    recovering.wait_ready(READY);
    assert_eq!(ids(&base), Ok(rows.clone()));
    let h = history(&recovering);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0], before[0]);
    assert_branch(&h[1], &before[0], Some(index), "recovery-mode");
    assert!(
        !names_starting(&n1.data_dir, "snapshots.before-recovery-").is_empty(),
        "the old snapshots dir is kept aside"
    );
    assert!(log_text(&recovering).contains("RECOVERY MODE"));
    let mut all = rows.clone();
    all.extend(insert(&base, 31..=40));
    recovering.stop();

    // The flag was for one start: the usual flags serve the recovered data dir.
    n1.start(None);
    n1.wait_ready(READY);
    assert_eq!(ids(&base), Ok(all.clone()));
    assert_eq!(history(&n1), h);

    // Two nodes with empty data dirs join directly and replicate everything, the seeded rows
    // included (as a snapshot: the recovered node's log begins after them).
    let mut joiners: Vec<Node> = (2..=3).map(|id| Node::new(id, tmp.path(), &[])).collect();
    for j in &mut joiners {
        j.start(Some(&base));
        j.wait_ready(READY);
    }
    all.extend(insert(&base, 41..=45));
    for j in &joiners {
        wait_ids(&j.base_url(), &all);
        assert_eq!(history(j), h);
    }
    assert_eq!(n1.member_count(), Ok(3));
}

/// A node seeded from existing data (`--recovery-mode`, auto-restore) starts a single-node
/// cluster whose Raft log begins after the seed (purged up to it, with a snapshot), so a node
/// that joins it with an empty data dir receives the seeded rows as a snapshot, then every
/// later write: the copies never diverge.
#[test]
fn seeded_clusters_replicate_their_seed_to_joiners() {
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let dest = format!("file://{}", tmp.path().join("backups").display());
    let mut problems = Vec::new();

    // recovery-mode
    let mut n1 = Node::new(1, tmp.path(), &[]);
    n1.start(None);
    n1.wait_ready(READY);
    let base = n1.base_url();
    create_table(&base);
    let mut rows = insert(&base, 1..=10);
    raftlite(&["backup", "create", "--node", &base, "--to", &dest]).ok();
    n1.stop();
    std::fs::remove_dir_all(n1.data_dir.join("raft")).expect("delete raft/");
    let mut recovering = Node::new(1, tmp.path(), &["--recovery-mode"]);
    recovering.start(None);
    recovering.wait_ready(READY);
    let mut joiner = Node::new(2, tmp.path(), &[]);
    joiner.start(Some(&recovering.base_url()));
    joiner.wait_ready(READY);
    rows.extend(insert(&recovering.base_url(), 11..=12));
    if let Err(e) = try_wait_ids(&joiner.base_url(), &rows, Duration::from_secs(10)) {
        problems.push(format!("recovery-mode: the joiner {e}"));
    }
    recovering.stop();
    joiner.stop();

    // auto-restore
    let mut restored = Node::new(3, tmp.path(), &["--auto-restore-from", &dest]);
    restored.start(None);
    restored.wait_ready(READY);
    let mut joiner = Node::new(4, tmp.path(), &[]);
    joiner.start(Some(&restored.base_url()));
    joiner.wait_ready(READY);
    let mut rows: Vec<i64> = (1..=10).collect();
    rows.extend(insert(&restored.base_url(), 11..=12));
    if let Err(e) = try_wait_ids(&joiner.base_url(), &rows, Duration::from_secs(10)) {
        problems.push(format!("auto-restore: the joiner {e}"));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

fn try_wait_ids(base: &str, want: &[i64], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = ids(base);
        if now.as_deref() == Ok(want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "at {base}: want ids {want:?}, read {now:?} after {timeout:?}"
            ));
        }
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn damaged_log_or_database_is_refused_and_recovery_mode_moves_it_aside() {
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let mut n1 = Node::new(1, tmp.path(), &[]);
    n1.start(None);
    n1.wait_ready(READY);
    let base = n1.base_url();
    create_table(&base);
    let rows = insert(&base, 1..=20);
    let before = history(&n1);
    n1.stop();
    let pristine = tmp.path().join("pristine");
    copy_dir(&n1.data_dir, &pristine);
    let index = doctor_json(&pristine)["database"]["applied"]["index"]
        .as_u64()
        .expect("the database's index");

    // A damaged database with an intact log: moved aside and rebuilt from the log; the lineage
    // is unchanged.
    let db = n1.data_dir.join("db.sqlite");
    overwrite(&db, 0, &[0x5a; 100]);
    let run = serve_expecting_refusal(&serve_args(&n1, &[]), &[]);
    assert!(run.stderr.contains("db.sqlite"), "{run:?}");
    assert!(run.stderr.contains("--recovery-mode"), "{run:?}");
    assert_eq!(doctor_json(&n1.data_dir)["classification"], "corrupt");
    let mut recovering = Node::new(1, tmp.path(), &["--recovery-mode"]);
    recovering.http_addr = n1.http_addr.clone();
    recovering.raft_addr = n1.raft_addr.clone();
    recovering.start(None);
    recovering.wait_ready(READY);
    assert_eq!(ids(&base), Ok(rows.clone()));
    assert_eq!(history(&recovering), before, "no new timeline");
    assert!(!names_starting(&n1.data_dir, "db.sqlite.damaged-").is_empty());
    recovering.stop();

    // A damaged log: refused naming it; recovery mode moves it aside (raft.lost-*) and the
    // database seeds a new cluster.
    std::fs::remove_dir_all(&n1.data_dir).expect("rm");
    copy_dir(&pristine, &n1.data_dir);
    let log = n1.data_dir.join("raft").join("raft.redb");
    let len = std::fs::metadata(&log).expect("stat log").len() as usize;
    std::fs::write(&log, vec![0xa5u8; len]).expect("damage the log");
    let run = serve_expecting_refusal(&serve_args(&n1, &[]), &[]);
    assert!(run.stderr.contains("raft.redb"), "{run:?}");
    assert!(run.stderr.contains("--recovery-mode"), "{run:?}");
    assert_eq!(doctor_json(&n1.data_dir)["classification"], "corrupt");
    recovering.start(None);
    recovering.wait_ready(READY);
    assert_eq!(ids(&base), Ok(rows));
    let h = history(&recovering);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_branch(&h[1], &before[0], Some(index), "recovery-mode");
    assert!(h[1]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("damaged")));
    assert!(!names_starting(&n1.data_dir, "raft.lost-").is_empty());
    exec(&base, json!(["INSERT INTO t(id, v) VALUES(99, 'after')"]));
}

// ---------------------------------------------------------------------------------------------
// 5. Lost quorum
// ---------------------------------------------------------------------------------------------

#[test]
fn lost_quorum_recover_makes_the_survivor_lead_alone_with_every_acknowledged_row() {
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(DEADLINE);
    let followers = c.followers(leader);
    let (survivor, other) = (followers[0], followers[1]);
    let base = c.nodes[leader].base_url();
    create_table(&base);
    let mut acked = insert(&base, 1..=40);
    let before = history(&c.nodes[leader]);

    // One follower dies; from now on every acknowledged write is in the survivor's log.
    c.nodes[other].kill9();
    acked.extend(insert(&base, 41..=80));
    // The leader dies right after the last acknowledgement: the survivor may hold entries it
    // has not applied yet (it did not learn they were committed).
    c.nodes[leader].kill9();
    c.nodes[survivor].stop();

    let dir = c.nodes[survivor].data_dir.display().to_string();
    let doctor = doctor_json(&c.nodes[survivor].data_dir);
    assert_eq!(doctor["classification"], "consistent", "{doctor}");
    let members = format!("{}={}", c.nodes[survivor].id, c.nodes[survivor].raft_addr);
    let run = raftlite(&["recover", "--data-dir", &dir, "--members", &members]).ok();
    assert!(run.stdout.contains("RECOVERED"), "{run:?}");
    eprintln!("recover: {}", run.stdout.trim());
    let doctor = doctor_json(&c.nodes[survivor].data_dir);
    assert_eq!(doctor["classification"], "consistent", "{doctor}");
    let recorded = doctor["database"]["timeline_history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recorded.len(), 2, "{doctor}");
    assert!(
        recorded[1]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("recover:")),
        "{doctor}"
    );

    // Usual flags, without --join: it leads a one-node cluster with every acknowledged row.
    c.nodes[survivor].start(None);
    c.nodes[survivor].wait_ready(READY);
    let survivor_base = c.nodes[survivor].base_url();
    assert_eq!(
        status(&c.nodes[survivor])["store"]["raft"]["state"],
        "Leader"
    );
    assert_eq!(ids(&survivor_base), Ok(acked.clone()));
    let h = history(&c.nodes[survivor]);
    assert_eq!(h, recorded);
    assert_eq!(h[0], before[0]);
    assert_branch(&h[1], &before[0], None, "recover:");
    acked.extend(insert(&survivor_base, 81..=90));
    assert_eq!(c.nodes[survivor].member_count(), Ok(1));

    // The dead nodes come back with EMPTY data dirs (old ones moved aside) and join.
    for idx in [leader, other] {
        let node = &mut c.nodes[idx];
        let mut aside = node.data_dir.as_os_str().to_os_string();
        aside.push(".old");
        std::fs::rename(&node.data_dir, PathBuf::from(aside)).expect("move aside");
        node.start(Some(&survivor_base));
        node.wait_ready(READY);
    }
    acked.extend(insert(&survivor_base, 91..=95));
    for idx in [leader, other] {
        wait_ids(&c.nodes[idx].base_url(), &acked);
        assert_eq!(history(&c.nodes[idx]), h);
    }
    assert_eq!(c.nodes[survivor].member_count(), Ok(3));
}

/// `raftlite recover` applies every entry of the log that the database lacks (here the
/// database is an older copy, so the log holds 20 entries it never applied) before it rewrites
/// the membership.
#[test]
fn recover_replays_the_log_entries_the_database_never_applied() {
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let mut n1 = Node::new(1, tmp.path(), &[]);
    n1.start(None);
    n1.wait_ready(READY);
    let base = n1.base_url();
    create_table(&base);
    let mut acked = insert(&base, 1..=10);
    n1.stop();
    let old_db = tmp.path().join("old-db");
    std::fs::create_dir_all(&old_db).expect("mkdir");
    for f in ["db.sqlite", "db.sqlite-wal"] {
        if n1.data_dir.join(f).exists() {
            std::fs::copy(n1.data_dir.join(f), old_db.join(f)).expect("copy");
        }
    }
    n1.start(None);
    n1.wait_ready(READY);
    acked.extend(insert(&base, 11..=30));
    let before = history(&n1);
    n1.stop();
    for f in ["db.sqlite", "db.sqlite-wal", "db.sqlite-shm"] {
        let _ = std::fs::remove_file(n1.data_dir.join(f));
        if old_db.join(f).exists() {
            std::fs::copy(old_db.join(f), n1.data_dir.join(f)).expect("copy back");
        }
    }
    let report = doctor_json(&n1.data_dir);
    // A database behind its log is "consistent" (a start replays the log).
    assert_eq!(report["classification"], "consistent", "{report}");
    let db_index = report["database"]["applied"]["index"].as_u64();
    let log_index = report["log"]["last_index"].as_u64();
    assert!(
        db_index.unwrap_or(0) + 20 <= log_index.unwrap_or(0),
        "{report}"
    );

    let members = format!("1={}", n1.raft_addr);
    let dir = n1.data_dir.display().to_string();
    let run = raftlite(&["recover", "--data-dir", &dir, "--members", &members]).ok();
    let replayed: u64 = run
        .stdout
        .split("replayed ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no replay count: {run:?}"));
    assert!(replayed >= 20, "{run:?}");
    assert_eq!(doctor_json(&n1.data_dir)["classification"], "consistent");
    n1.start(None);
    n1.wait_ready(READY);
    assert_eq!(ids(&base), Ok(acked));
    let h = history(&n1);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_branch(&h[1], &before[0], None, "recover:");
}

// ---------------------------------------------------------------------------------------------
// Bad data written by an application: online restore of a chosen backup
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_data_is_undone_by_restoring_the_backup_chosen_from_the_list() {
    let c = Cluster::start(3, &[]);
    let base = c.nodes[0].base_url();
    create_table(&base);
    let good = insert(&base, 1..=10);
    let tmp = tempfile::tempdir().expect("temp dir");
    let dest = format!("file://{}", tmp.path().join("backups").display());
    let created = raftlite(&["backup", "create", "--node", &base, "--to", &dest, "--json"])
        .ok()
        .json();
    let before = history(&c.nodes[0]);

    // The application deletes rows by mistake.
    exec(&base, json!(["DELETE FROM t WHERE id > 3"]));
    let list = raftlite(&["backup", "list", "--from", &dest, "--json"])
        .ok()
        .json();
    let chosen = list
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|b| b["data_changed_index"] == created["data_changed_index"])
        })
        .and_then(|b| b["id"].as_str())
        .expect("the backup taken before the mistake")
        .to_string();
    let run = raftlite(&["restore", "--node", &base, "--from", &dest, "--id", &chosen]).ok();
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    for n in &c.nodes {
        wait_ids(&n.base_url(), &good);
        let h = history(n);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_branch(&h[1], &before[0], None, "restore");
    }
}

/// `raftlite doctor --data-dir D | head -3`: the reader goes away early; doctor must not panic
/// (a broken pipe on stdout is not an error).
#[test]
fn doctor_into_a_closed_pipe_does_not_panic() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut cmd = command(
        &strings(&["doctor", "--data-dir", &tmp.path().display().to_string()]),
        &[],
    );
    cmd.stdout(writer);
    let mut child = cmd.spawn().expect("spawn doctor");
    let output = capture(&mut child);
    let status = child.wait().expect("wait");
    let stderr = output.err.join().unwrap_or_default();
    assert!(!stderr.contains("panicked"), "exit {status:?}: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// 6. Fuzzing damaged data dirs
// ---------------------------------------------------------------------------------------------

/// splitmix64: a small deterministic generator (the seed fixes every case).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every file under `dir` with its bytes, except SQLite's `-shm` (the WAL's shared-memory
/// index: every reader, even a read-only one, rewrites it; it holds no data).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.insert(path.clone(), Vec::new());
                stack.push(path);
            } else if !path.to_string_lossy().ends_with("-shm") {
                out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

fn overwrite(path: &Path, at: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).expect("read");
    let end = (at + bytes.len()).min(data.len());
    data[at..end].copy_from_slice(&bytes[..end - at]);
    std::fs::write(path, data).expect("write");
}

/// Damages `path` in one of several ways; returns a description.
fn corrupt(rng: &mut Rng, path: &Path, kind: usize) -> String {
    let mut data = std::fs::read(path).expect("read the file to damage");
    let len = data.len();
    let what = match kind {
        0 => {
            let at = rng.below(len);
            data.truncate(at);
            format!("truncated to {at} of {len} bytes")
        }
        1 => {
            let at = rng.below(len);
            let n = 1 + rng.below(4096.min(len - at));
            data[at..at + n].copy_from_slice(&rng.bytes(n));
            format!("{n} random bytes at {at}")
        }
        2 => {
            let pages = len / 4096;
            let page = rng.below(pages.max(1));
            let end = ((page + 1) * 4096).min(len);
            data[page * 4096..end].fill(0);
            format!("page {page} zeroed")
        }
        3 => {
            let at = rng.below(len);
            let bit = rng.below(8);
            data[at] ^= 1 << bit;
            format!("bit {bit} of byte {at} flipped")
        }
        4 => {
            let n = rng.below(2 * len + 1);
            data = rng.bytes(n);
            format!("replaced by {n} random bytes")
        }
        5 => {
            let n = 100.min(len);
            data[..n].copy_from_slice(&rng.bytes(n));
            format!("first {n} bytes random")
        }
        6 => {
            let n = 1 + rng.below(8192);
            data.extend(rng.bytes(n));
            format!("{n} random bytes appended")
        }
        _ => {
            let pages = len / 4096;
            if pages < 2 {
                data.clear();
                "emptied".to_string()
            } else {
                let (from, to) = (rng.below(pages), rng.below(pages));
                let page = data[from * 4096..(from + 1) * 4096].to_vec();
                data[to * 4096..(to + 1) * 4096].copy_from_slice(&page);
                format!("page {from} copied over page {to}")
            }
        }
    };
    std::fs::write(path, data).expect("write the damaged file");
    what
}

const CLASSIFICATIONS: [&str; 5] = ["empty", "consistent", "db lost", "log lost", "corrupt"];

enum ServeOutcome {
    Exited(Run),
    Ready(Child, Output),
    Hung(Run),
}

/// Starts `raftlite serve` on `data_dir` with fresh ports: it exits, or becomes ready, within
/// [`DEADLINE`] (else it is killed: a hang).
fn serve_sample(data_dir: &Path, base_out: &mut String) -> ServeOutcome {
    let http = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    *base_out = format!("http://{http}");
    let args = strings(&[
        "serve",
        "--data-dir",
        &data_dir.display().to_string(),
        "--http-addr",
        &http,
        "--raft-addr",
        &raft,
        "--node-id",
        "1",
    ]);
    let mut child = command(&args, &[]).spawn().expect("spawn serve");
    let output = capture(&mut child);
    let until = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return ServeOutcome::Exited(Run {
                code: status.code(),
                stdout: output.out.join().unwrap_or_default(),
                stderr: output.err.join().unwrap_or_default(),
                timed_out: false,
            });
        }
        if let Ok((200, _)) = http_get(&format!("http://{http}/readyz")) {
            return ServeOutcome::Ready(child, output);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return ServeOutcome::Hung(Run {
                code: None,
                stdout: output.out.join().unwrap_or_default(),
                stderr: output.err.join().unwrap_or_default(),
                timed_out: true,
            });
        }
        sleep(Duration::from_millis(50));
    }
}

fn all_rows(base: &str) -> Result<Vec<Vec<Value>>, String> {
    query_at(base, "SELECT id, v FROM t ORDER BY id", "none").and_then(|r| first_values(&r))
}

/// Copies the stopped node's data dir `from` to `to` and folds its WAL into `db.sqlite` (as a
/// clean SQLite close does), so the database file itself holds the data.
fn checkpointed_copy(from: &Path, to: &Path) {
    copy_dir(from, to);
    let conn = rusqlite::Connection::open(to.join("db.sqlite")).expect("open the copy");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    conn.pragma_update(None, "journal_mode", "DELETE")
        .expect("leave WAL mode");
    drop(conn);
    assert!(!to.join("db.sqlite-wal").exists());
}

/// A data dir whose `db.sqlite` is empty (0 bytes) but whose `db.sqlite-wal` holds the data
/// (the runbook's "damaged database"): `doctor` reports it corrupt naming db.sqlite, `serve`
/// refuses naming it, and neither deletes or changes the WAL (SQLite would delete the WAL of an
/// empty database file it opens, so nothing may open it). `--recovery-mode` then moves the
/// database and its WAL aside (kept) and rebuilds the database from the log.
#[test]
fn doctor_keeps_the_wal_of_an_empty_database_file() {
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-dr-")
        .tempdir()
        .expect("temp dir");
    let mut n1 = Node::new(1, tmp.path(), &[]);
    n1.start(None);
    n1.wait_ready(READY);
    let base = n1.base_url();
    create_table(&base);
    let rows = insert(&base, 1..=20);
    let before = history(&n1);
    n1.kill9();
    let wal = n1.data_dir.join("db.sqlite-wal");
    let wal_len = std::fs::metadata(&wal).expect("a WAL after kill -9").len();
    assert!(wal_len > 0);
    std::fs::write(n1.data_dir.join("db.sqlite"), b"").expect("truncate db.sqlite");
    let text = raftlite(&["doctor", "--data-dir", &n1.data_dir.display().to_string()]).ok();
    assert!(text.stdout.contains("classification:  corrupt"), "{text:?}");
    let report = doctor_json(&n1.data_dir);
    assert_eq!(report["classification"], "corrupt", "{report}");
    assert!(
        report["database"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("db.sqlite")),
        "{report}"
    );
    let run = serve_expecting_refusal(&serve_args(&n1, &[]), &[]);
    assert!(run.stderr.contains("db.sqlite"), "{run:?}");
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).ok(),
        Some(wal_len),
        "doctor or serve deleted or changed {}",
        wal.display()
    );

    // The runbook: the usual flags plus --recovery-mode, once.
    let mut recovering = Node::new(1, tmp.path(), &["--recovery-mode"]);
    recovering.http_addr = n1.http_addr.clone();
    recovering.raft_addr = n1.raft_addr.clone();
    recovering.start(None);
    recovering.wait_ready(READY);
    // The rows come back from the log, which the node replays once it leads: ready (a leader is
    // known) can come a moment before the last entry is applied, and this read is local.
    wait_ids(&base, &rows);
    assert_eq!(history(&recovering), before, "no new timeline");
    let kept = names_starting(&n1.data_dir, "db.sqlite-wal.damaged-");
    assert_eq!(kept.len(), 1, "the WAL is moved aside, not deleted");
    assert_eq!(
        std::fs::metadata(n1.data_dir.join(&kept[0]))
            .map(|m| m.len())
            .ok(),
        Some(wal_len)
    );
}

/// A running single node (snapshots every 25 entries) in a new temp dir named `prefix...`,
/// with table `t` holding 60 rows of 300 bytes written one entry each, and those rows.
fn node_with_sixty_rows(prefix: &str) -> (tempfile::TempDir, Node, Vec<Vec<Value>>) {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    let mut n1 = Node::new(1, tmp.path(), &["--snapshot-threshold", "25"]);
    n1.start(None);
    n1.wait_ready(READY);
    let base = n1.base_url();
    create_table(&base);
    for id in 1..=60i64 {
        exec(
            &base,
            json!([[
                "INSERT INTO t(id, v) VALUES(?, ?)",
                id,
                format!("{id:0>300}")
            ]]),
        );
    }
    let original = all_rows(&base).expect("rows");
    (tmp, n1, original)
}

/// A node whose `db.sqlite` has a damaged b-tree page (here: one page copied over another, with
/// `_raftlite_meta` intact) and whose log is intact does not serve the damaged data: start-up
/// classification and `doctor` run `PRAGMA quick_check`, so `doctor` says "corrupt" and `serve`
/// refuses naming db.sqlite; then `--recovery-mode` moves it aside and rebuilds it from the
/// snapshot and the log, with every row and no new timeline.
#[test]
fn a_database_with_damaged_pages_is_not_served() {
    let (tmp, mut n1, original) = node_with_sixty_rows("raftlite-dr-");
    let before = history(&n1);
    n1.stop();
    let damaged = tmp.path().join("damaged");
    checkpointed_copy(&n1.data_dir, &damaged);
    let db = damaged.join("db.sqlite");
    let bytes = std::fs::read(&db).expect("read db");
    assert!(bytes.len() >= 8 * 4096, "{} bytes", bytes.len());
    // The 4 KiB page at offset 7 * 4096 over the one at 3 * 4096 (0-based, as the fuzzing's
    // case 124 does).
    overwrite(&db, 3 * 4096, &bytes[7 * 4096..8 * 4096]);

    let report = doctor_json(&damaged);
    assert_eq!(report["classification"], "corrupt", "{report}");
    assert!(
        report["database"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("db.sqlite") && e.contains("quick_check")),
        "{report}"
    );
    let mut node = Node::new(1, tmp.path(), &[]);
    node.data_dir = damaged.clone();
    let run = serve_expecting_refusal(&serve_args(&node, &[]), &[]);
    assert!(run.stderr.contains("db.sqlite"), "{run:?}");
    assert!(run.stderr.contains("--recovery-mode"), "{run:?}");

    // The runbook: the usual flags plus --recovery-mode, once.
    let mut recovering = Node::new(1, tmp.path(), &["--recovery-mode"]);
    recovering.data_dir = damaged.clone();
    recovering.start(None);
    recovering.wait_ready(READY);
    assert_eq!(all_rows(&recovering.base_url()), Ok(original));
    assert_eq!(history(&recovering), before, "no new timeline");
    assert!(!names_starting(&damaged, "db.sqlite.damaged-").is_empty());
}

#[test]
fn fuzzed_logs_and_databases_never_panic_doctor_or_serve() {
    // A crashed node's data dir with a log, a database (with its WAL, as kill -9 leaves it: a
    // clean stop folds the WAL into the database) and snapshots; and a copy whose WAL is folded
    // into the database.
    let (tmp, mut n1, original) = node_with_sixty_rows("raftlite-fuzz-");
    n1.kill9();
    let with_wal = n1.data_dir.clone();
    let folded = tmp.path().join("folded");
    checkpointed_copy(&with_wal, &folded);
    for pristine in [&with_wal, &folded] {
        assert_eq!(doctor_json(pristine)["classification"], "consistent");
        let layout: Vec<(PathBuf, usize)> = tree(pristine)
            .into_iter()
            .map(|(k, v)| (k, v.len()))
            .collect();
        eprintln!("a data dir to damage: {layout:?}");
    }

    const CASES: usize = 300;
    const SERVE_EVERY: usize = 31;
    // (pristine data dir, file to damage)
    let targets: [(&Path, &str); 5] = [
        (&with_wal, "raft/raft.redb"),
        (&with_wal, "db.sqlite"),
        (&with_wal, "db.sqlite-wal"),
        (&folded, "raft/raft.redb"),
        (&folded, "db.sqlite"),
    ];
    let probe_tmp = tmp.path().join("doctor-tmp");
    std::fs::create_dir_all(&probe_tmp).expect("mkdir");
    let doctor_env = vec![("TMPDIR".to_string(), probe_tmp.display().to_string())];
    let mut rng = Rng(0x00D1_5A57_E5EE_D001);
    let mut failures = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    for case in 0..CASES {
        let (pristine, name) = targets[case % targets.len()];
        let variant = if pristine == folded { "folded" } else { "wal" };
        let dir = tmp.path().join(format!("case-{case}"));
        copy_dir(pristine, &dir);
        let target = dir.join(name);
        let kind = rng.below(8);
        let what = format!(
            "case {case} ({variant}): {name} {}",
            corrupt(&mut rng, &target, kind)
        );
        let before = tree(&dir);

        let mut args = strings(&["doctor", "--data-dir", &dir.display().to_string()]);
        let text_mode = case % 7 == 0;
        if !text_mode {
            args.push("--json".into());
        }
        let run = raftlite_env(&args, &doctor_env, DEADLINE);
        if run.timed_out || run.code != Some(0) || run.stderr.contains("panicked") {
            failures.push(format!("{what}: doctor failed: {run:?}"));
        } else if text_mode {
            if !CLASSIFICATIONS
                .iter()
                .any(|c| run.stdout.contains(&format!("classification:  {c}")))
            {
                failures.push(format!("{what}: doctor printed no classification: {run:?}"));
            }
        } else {
            match serde_json::from_str::<Value>(&run.stdout) {
                Ok(report) => {
                    let class = report["classification"].as_str().unwrap_or("?").to_string();
                    if !CLASSIFICATIONS.contains(&class.as_str()) {
                        failures.push(format!("{what}: unknown classification: {run:?}"));
                    }
                    *seen
                        .entry(format!("{variant} {name}: {class}"))
                        .or_default() += 1;
                }
                Err(e) => failures.push(format!("{what}: doctor JSON ({e}): {run:?}")),
            }
        }
        let after = tree(&dir);
        if after != before {
            let changed: Vec<&PathBuf> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            failures.push(format!("{what}: doctor changed the data dir: {changed:?}"));
        }
        let leftovers = names_starting(&probe_tmp, "");
        if !leftovers.is_empty() {
            failures.push(format!("{what}: doctor left {leftovers:?} in TMPDIR"));
            for l in leftovers {
                let _ = std::fs::remove_file(probe_tmp.join(l));
            }
        }

        if case % SERVE_EVERY == 0 {
            let file = Path::new(name)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or(name);
            let mut sample_base = String::new();
            match serve_sample(&dir, &mut sample_base) {
                ServeOutcome::Exited(run) => {
                    let named = run.stderr.contains(file)
                        || (file == "raft.redb" && run.stderr.contains("Raft log"));
                    if run.code == Some(0) || run.stderr.contains("panicked") || !named {
                        failures.push(format!(
                            "{what}: serve should refuse cleanly, naming {file}: {run:?}"
                        ));
                    }
                    *seen
                        .entry(format!("serve {variant} {name}: refused"))
                        .or_default() += 1;
                }
                ServeOutcome::Ready(mut child, output) => {
                    let rows = all_rows(&sample_base);
                    let _ = child.kill();
                    let _ = child.wait();
                    let stderr = output.err.join().unwrap_or_default();
                    if rows.as_ref() != Ok(&original) || stderr.contains("panicked") {
                        let got = match &rows {
                            Ok(r) => format!(
                                "{} rows, first differing: {:?}",
                                r.len(),
                                r.iter().zip(&original).find(|(a, b)| a != b)
                            ),
                            Err(e) => e.clone(),
                        };
                        failures.push(format!(
                            "{what}: serve started but does not serve the data intact ({got}); \
                             log tail:\n{}",
                            stderr.lines().rev().take(15).collect::<Vec<_>>().join("\n")
                        ));
                    }
                    *seen
                        .entry(format!("serve {variant} {name}: started"))
                        .or_default() += 1;
                }
                ServeOutcome::Hung(run) => {
                    failures.push(format!("{what}: serve hung for {DEADLINE:?}: {run:?}"))
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!(
        "{CASES} corruptions in {:?}; outcomes: {seen:#?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {CASES} cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
