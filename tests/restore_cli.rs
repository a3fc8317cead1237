//! `raftlite restore` and the chunked `POST /db/load` against real `raftlite serve` processes.
//!
//! Covered: a local file restored through a follower (every node serves it, a new timeline
//! descends from the old one), a file over the old 16 MiB limit sent straight to `/db/load`,
//! refusals (not SQLite, a bit-flipped page) that change nothing, a WAL-mode source whose
//! committed data lives in its `-wal`, and a restore from a `file://` backup destination with
//! the default backup choice. Failures mid-restore (kill -9, leader changes, writes during a
//! restore, S3) are in tests/restore.rs.

mod common;

use std::path::Path;
use std::process::Child;

use std::time::Duration;

use common::{
    check_results, execute_at, first_values, query_at, run_to_completion, wait_for, Cluster, Run,
};
use serde_json::{json, Value};

/// A CLI run never takes longer than this; past it the process is killed and the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------------
// Running `raftlite ...`
// ---------------------------------------------------------------------------------------------

/// Runs `raftlite ARGS...` with a private TMPDIR and no inherited `RAFTLITE_*`/`AWS_*`.
fn raftlite(tmpdir: &Path, args: &[&str]) -> Run {
    let mut child = spawn_raftlite(tmpdir, args);
    finish(&mut child, args)
}

/// Starts `raftlite ARGS...` as [`raftlite`] does, without waiting for it.
fn spawn_raftlite(tmpdir: &Path, args: &[&str]) -> Child {
    std::fs::create_dir_all(tmpdir).expect("create the CLI's TMPDIR");
    common::cli_command()
        .args(args)
        .env("TMPDIR", tmpdir)
        .spawn()
        .expect("spawn raftlite")
}

fn finish(child: &mut Child, args: &[&str]) -> Run {
    let run = run_to_completion(child, RUN_DEADLINE);
    assert!(
        !run.timed_out,
        "raftlite {args:?} did not finish within {RUN_DEADLINE:?}"
    );
    run
}

/// Names left in the CLI's TMPDIR.
fn leftovers(tmpdir: &Path) -> Vec<String> {
    std::fs::read_dir(tmpdir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Cluster data
// ---------------------------------------------------------------------------------------------

fn exec(c: &Cluster, idx: usize, body: Value) {
    let base = c.nodes[idx].base_url();
    let resp = execute_at(&base, &body).unwrap_or_else(|e| panic!("execute {body}: {e}"));
    check_results(&resp).unwrap_or_else(|e| panic!("execute {body}: {e}"));
}

fn rows(c: &Cluster, idx: usize, sql: &str) -> Result<Vec<Vec<Value>>, String> {
    first_values(&query_at(&c.nodes[idx].base_url(), sql, "none")?)
}

fn wait_rows(c: &Cluster, idx: usize, sql: &str, want: &[Vec<Value>]) {
    wait_for(
        || (rows(c, idx, sql).ok()? == want).then_some(()),
        secs(60),
        &format!("node {} to answer {sql} with {want:?}", c.nodes[idx].id),
    );
}

fn timeline(c: &Cluster, idx: usize) -> Value {
    wait_for(
        || {
            let t = c.nodes[idx].status().ok()?["store"]["timeline"].clone();
            t.get("id").is_some().then_some(t)
        },
        secs(30),
        &format!("node {} to have a timeline", c.nodes[idx].id),
    )
}

/// A 3-node cluster with table `old` (3 rows) everywhere; returns it, the leader's index and
/// the current timeline.
fn cluster_with_old_data() -> (Cluster, usize, Value) {
    let c = Cluster::start(3, &[]);
    let leader = c.wait_leader(secs(30));
    exec(
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
    let t = timeline(&c, leader);
    (c, leader, t)
}

/// Every node keeps `old` and the timeline `id`, and has no table `loaded`.
fn assert_unchanged(c: &Cluster, id: &str) {
    for idx in 0..c.nodes.len() {
        assert_eq!(
            rows(c, idx, "SELECT count(*) FROM old").ok(),
            Some(vec![vec![json!(3)]]),
            "node {} keeps the old data",
            c.nodes[idx].id
        );
        assert!(rows(c, idx, "SELECT * FROM loaded").is_err());
        assert_eq!(
            timeline(c, idx)["id"].as_str(),
            Some(id),
            "node {} keeps its timeline",
            c.nodes[idx].id
        );
    }
}

/// Waits until every node serves `n` rows of `loaded` on a timeline with `counter` whose
/// parent is `parent`; returns that timeline.
fn assert_restored(c: &Cluster, n: i64, counter: u64, parent: &str) -> Value {
    let mut seen: Option<Value> = None;
    for idx in 0..c.nodes.len() {
        wait_rows(c, idx, "SELECT count(*) FROM loaded", &[vec![json!(n)]]);
        assert!(
            rows(c, idx, "SELECT * FROM old").is_err(),
            "node {}: the old data is gone",
            c.nodes[idx].id
        );
        let t = timeline(c, idx);
        assert_eq!(t["counter"].as_u64(), Some(counter), "{t}");
        assert_eq!(t["parent"].as_str(), Some(parent), "{t}");
        match &seen {
            None => seen = Some(t),
            Some(first) => assert_eq!(&t, first, "the same timeline on every node"),
        }
    }
    seen.unwrap_or_default()
}

/// A SQLite file (not made by raftlite) with `n` rows of about `row_bytes` in table `loaded`.
fn plain_database(path: &Path, n: i64, row_bytes: usize) {
    let conn = rusqlite::Connection::open(path).expect("create");
    conn.execute_batch("CREATE TABLE loaded (id INTEGER PRIMARY KEY, payload BLOB);")
        .expect("schema");
    conn.execute(
        "INSERT INTO loaded(id, payload) SELECT x, randomblob(?1) FROM (WITH RECURSIVE c(x) AS \
         (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?2) SELECT x FROM c)",
        rusqlite::params![row_bytes as i64, n],
    )
    .expect("rows");
}

/// POSTs the file at `path` to `url`; a long limit, as the cluster checks and replicates it.
fn post_file(url: &str, path: &Path) -> (u16, Value) {
    let client = reqwest::blocking::Client::builder()
        .timeout(secs(120))
        .build()
        .expect("client");
    let file = std::fs::File::open(path).expect("open");
    let len = file.metadata().expect("metadata").len();
    let resp = client
        .post(url)
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::blocking::Body::sized(file, len))
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

fn no_scratch_left(c: &Cluster) {
    for node in &c.nodes {
        let dir = node.data_dir.join("snapshots");
        wait_for(
            || {
                let left = std::fs::read_dir(&dir)
                    .ok()?
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".partial"));
                (!left).then_some(())
            },
            secs(10),
            "scratch files to be removed",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_local_file_restored_through_a_follower_reaches_every_node_on_a_new_timeline() {
    let (c, leader, old) = cluster_with_old_data();
    let old_id = old["id"].as_str().expect("timeline id").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source.sqlite");
    plain_database(&source, 500, 200);
    let before = std::fs::read(&source).expect("read source");

    let follower = c.followers(leader)[0];
    let cli_tmp = tmp.path().join("cli-tmp");
    let run = raftlite(
        &cli_tmp,
        &[
            "restore",
            "--node",
            &c.nodes[follower].base_url(),
            "--from",
            &source.display().to_string(),
            "--json",
        ],
    )
    .ok();
    let answer = run.json();
    assert_eq!(answer["outcome"], "took effect (all-new)", "{run:?}");
    assert_eq!(
        answer["restore"]["size"].as_u64(),
        Some(before.len() as u64)
    );
    assert!(answer["restore"]["index"].as_u64().is_some(), "{run:?}");
    assert_eq!(answer["timeline"]["counter"].as_u64(), Some(2), "{run:?}");
    assert_eq!(answer["timeline"]["parent"].as_str(), Some(old_id.as_str()));
    assert!(
        answer["timeline"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("source.sqlite")),
        "{run:?}"
    );

    let restored = assert_restored(&c, 500, 2, &old_id);
    assert_eq!(restored["id"], answer["timeline"]["id"]);
    let history = c.nodes[leader].status().expect("status")["store"]["timeline_history"].clone();
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    assert_eq!(history[0]["id"].as_str(), Some(old_id.as_str()));

    assert_eq!(
        std::fs::read(&source).expect("read source"),
        before,
        "the source is never modified"
    );
    assert!(leftovers(&cli_tmp).is_empty(), "{:?}", leftovers(&cli_tmp));
    no_scratch_left(&c);

    // Writes go on on the restored data; the text report names the timeline and the index.
    exec(
        &c,
        leader,
        json!(["INSERT INTO loaded(id, payload) VALUES (501, x'00')"]),
    );
    for idx in 0..3 {
        wait_rows(&c, idx, "SELECT count(*) FROM loaded", &[vec![json!(501)]]);
    }
    let again = tmp.path().join("again.sqlite");
    plain_database(&again, 7, 10);
    let run = raftlite(
        &cli_tmp,
        &[
            "restore",
            "--node",
            &c.nodes[leader].base_url(),
            "--from",
            &again.display().to_string(),
        ],
    )
    .ok();
    assert!(run.stdout.contains("took effect"), "{run:?}");
    assert!(run.stdout.contains("timeline     #3"), "{run:?}");
    assert!(run.stdout.contains("log index"), "{run:?}");
    assert_restored(
        &c,
        7,
        3,
        restored["id"].as_str().expect("restored timeline id"),
    );
}

/// The node the CLI talks to dies once the leader has the file: the answer is lost, the restore
/// goes on. The CLI asks the other members (learned from `/nodes` before the upload), waits
/// while the leader reports the restore in progress, and reports it took effect. The killed
/// node converges when it comes back.
#[test]
fn a_lost_answer_is_settled_by_the_other_members_while_the_restore_goes_on() {
    let (mut c, leader, old) = cluster_with_old_data();
    let old_id = old["id"].as_str().expect("timeline id").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("big.sqlite");
    plain_database(&source, 3000, 16 * 1024);
    let follower = c.followers(leader)[0];
    let follower_url = c.nodes[follower].base_url();
    let source_arg = source.display().to_string();
    let args = ["restore", "--node", &follower_url, "--from", &source_arg];
    let mut cli = spawn_raftlite(&tmp.path().join("cli-tmp"), &args);
    let leader_url = c.nodes[leader].base_url();
    let (sent, total) = wait_for(
        || {
            let status = common::http_get(&format!("{leader_url}/status")).ok()?.1;
            let status: Value = serde_json::from_str(&status).ok()?;
            let progress = &status["store"]["restore"]["in_progress"];
            (progress["phase"] == "sending").then(|| {
                (
                    progress["bytes_sent"].as_u64().unwrap_or(0),
                    progress["bytes_total"].as_u64().unwrap_or(0),
                )
            })
        },
        secs(60),
        "the leader to send the chunks",
    );
    c.nodes[follower].kill9();
    eprintln!("killed the node the CLI talks to at {sent} of {total} bytes sent");
    let run = finish(&mut cli, &args);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("took effect"), "{run:?}");
    if sent < total / 2 {
        assert!(
            run.stdout.contains("confirmed by /status"),
            "the answer was lost, /status must have settled it: {run:?}"
        );
    }
    c.nodes[follower].restart();
    assert_restored(&c, 3000, 2, &old_id);
}

#[test]
fn a_file_over_16_mib_loads_through_db_load() {
    let (c, leader, old) = cluster_with_old_data();
    let old_id = old["id"].as_str().expect("timeline id").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("big.sqlite");
    // 20 MiB of incompressible rows: over the old one-entry limit, 20 chunk entries now.
    plain_database(&source, 20 * 1024, 1024);
    let size = std::fs::metadata(&source).expect("metadata").len();
    assert!(size > 20 * 1024 * 1024, "{size}");

    // Through a follower, which spools the upload and streams it on to the leader.
    let follower = c.followers(leader)[0];
    let url = c.nodes[follower].url("/db/load?raft_index&reason=big%20one&timeline_id=big-1");
    let (status, body) = post_file(&url, &source);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"], json!([]), "{body}");
    assert_eq!(body["restore"]["size"].as_u64(), Some(size), "{body}");
    assert_eq!(
        body["restore"]["sha256"].as_str().map(str::len),
        Some(64),
        "{body}"
    );
    assert_eq!(body["raft_index"], body["restore"]["index"], "{body}");
    assert_eq!(body["timeline"]["id"], "big-1", "{body}");
    assert_eq!(body["timeline"]["reason"], "big one", "{body}");

    let t = assert_restored(&c, 20 * 1024, 2, &old_id);
    assert_eq!(t["id"], "big-1");
    no_scratch_left(&c);
}

#[test]
fn files_that_are_not_sqlite_or_are_corrupt_are_refused_and_nothing_changes() {
    let (c, leader, old) = cluster_with_old_data();
    let old_id = old["id"].as_str().expect("timeline id").to_string();
    let follower = c.followers(leader)[0];
    let tmp = tempfile::tempdir().expect("tempdir");
    let cli_tmp = tmp.path().join("cli-tmp");

    let text = tmp.path().join("notes.txt");
    std::fs::write(
        &text,
        "these are not the rows you are looking for\n".repeat(100),
    )
    .expect("write");
    let good = tmp.path().join("good.sqlite");
    plain_database(&good, 300, 100);
    let mut bytes = std::fs::read(&good).expect("read");
    let page_size = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    bytes[page_size] ^= 0x01; // page 2's b-tree page type becomes invalid
    let flipped = tmp.path().join("flipped.sqlite");
    std::fs::write(&flipped, &bytes).expect("write");

    for (what, path, reason) in [
        ("not SQLite", &text, "not a SQLite database file"),
        ("a flipped bit", &flipped, "integrity_check"),
    ] {
        let run = raftlite(
            &cli_tmp,
            &[
                "restore",
                "--node",
                &c.nodes[follower].base_url(),
                "--from",
                &path.display().to_string(),
            ],
        );
        assert_ne!(run.code, Some(0), "{what}: {run:?}");
        assert!(run.stderr.contains(reason), "{what}: {run:?}");
        assert!(run.stderr.contains("nothing was sent"), "{what}: {run:?}");
        assert!(leftovers(&cli_tmp).is_empty(), "{:?}", leftovers(&cli_tmp));
    }
    assert_eq!(std::fs::read(&flipped).expect("read"), bytes);

    // The server refuses the same file on its own (a client without the local check).
    let (status, body) = post_file(&c.nodes[follower].url("/db/load"), &flipped);
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("nothing was changed"), "{body}");
    assert!(error.contains("integrity_check"), "{body}");
    // A bad timeline id is refused before the upload is even read.
    let (status, body) = post_file(
        &c.nodes[leader].url("/db/load?timeline_id=no%20spaces"),
        &good,
    );
    assert_eq!(status, 400, "{body}");

    assert_unchanged(&c, &old_id);
    no_scratch_left(&c);
}

#[test]
fn a_wal_mode_source_is_restored_with_the_rows_in_its_wal() {
    let (c, leader, old) = cluster_with_old_data();
    let old_id = old["id"].as_str().expect("timeline id").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).expect("mkdir");
    let db = live.join("app.sqlite");

    // An application's database: WAL mode, committed rows not yet checkpointed. Copying the
    // file and its -wal while the writer is open is what a crash leaves behind.
    let writer = rusqlite::Connection::open(&db).expect("open");
    let mode: String = writer
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("wal");
    assert_eq!(mode, "wal");
    writer
        .pragma_update(None, "wal_autocheckpoint", 0)
        .expect("no autocheckpoint");
    writer
        .execute_batch("CREATE TABLE loaded (id INTEGER PRIMARY KEY, payload TEXT);")
        .expect("schema");
    for i in 1..=250 {
        writer
            .execute(
                "INSERT INTO loaded(id, payload) VALUES (?1, ?2)",
                rusqlite::params![i, format!("row {i}")],
            )
            .expect("insert");
    }
    let source_dir = tmp.path().join("copy");
    std::fs::create_dir_all(&source_dir).expect("mkdir");
    let source = source_dir.join("app.sqlite");
    let wal = source_dir.join("app.sqlite-wal");
    std::fs::copy(&db, &source).expect("copy db");
    std::fs::copy(live.join("app.sqlite-wal"), &wal).expect("copy wal");
    drop(writer);
    assert!(std::fs::metadata(&wal).expect("wal").len() > 0);
    {
        // The main file alone does not hold the rows.
        let alone = tmp.path().join("alone.sqlite");
        std::fs::copy(&source, &alone).expect("copy");
        let conn = rusqlite::Connection::open(&alone).expect("open");
        assert!(conn
            .query_row("SELECT count(*) FROM loaded", [], |r| r.get::<_, i64>(0))
            .is_err());
    }
    let before = (
        std::fs::read(&source).expect("read"),
        std::fs::read(&wal).expect("read"),
    );

    let cli_tmp = tmp.path().join("cli-tmp");
    let run = raftlite(
        &cli_tmp,
        &[
            "restore",
            "--node",
            &c.nodes[leader].base_url(),
            "--from",
            &source.display().to_string(),
        ],
    )
    .ok();
    assert!(run.stderr.contains("WAL mode"), "{run:?}");
    assert_restored(&c, 250, 2, &old_id);
    assert_eq!(
        rows(&c, 0, "SELECT payload FROM loaded WHERE id = 250").ok(),
        Some(vec![vec![json!("row 250")]])
    );

    // The source and its -wal are untouched, and nothing was created beside them.
    let after = (
        std::fs::read(&source).expect("read"),
        std::fs::read(&wal).expect("read"),
    );
    assert!(after == before, "the source files are never modified");
    let mut names: Vec<String> = std::fs::read_dir(&source_dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["app.sqlite", "app.sqlite-wal"]);
    assert!(leftovers(&cli_tmp).is_empty(), "{:?}", leftovers(&cli_tmp));
}

#[test]
fn a_backup_destination_restores_its_newest_backup() {
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    exec(
        &c,
        0,
        json!([
            "CREATE TABLE loaded (id INTEGER PRIMARY KEY, payload TEXT)",
            "INSERT INTO loaded(payload) VALUES ('a'), ('b'), ('c')"
        ]),
    );
    let first = timeline(&c, 0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("backups");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let dest_url = format!("file://{}", dest.display());
    let cli_tmp = tmp.path().join("cli-tmp");
    let created = raftlite(
        &cli_tmp,
        &[
            "backup", "create", "--node", &base, "--to", &dest_url, "--json",
        ],
    )
    .ok();
    let id = created.json()["id"]
        .as_str()
        .expect("backup id")
        .to_string();

    // Changes after the backup are undone by the restore.
    exec(
        &c,
        0,
        json!([
            "INSERT INTO loaded(payload) VALUES ('later')",
            "CREATE TABLE extra (x)"
        ]),
    );
    wait_rows(&c, 0, "SELECT count(*) FROM loaded", &[vec![json!(4)]]);

    let run = raftlite(
        &cli_tmp,
        &["restore", "--node", &base, "--from", &dest_url, "--json"],
    )
    .ok();
    // The only backup was never verified: it is taken anyway, with a note.
    assert!(run.stderr.contains("verified"), "{run:?}");
    let answer = run.json();
    assert!(
        answer["source"].as_str().is_some_and(|s| s.contains(&id)),
        "{run:?}"
    );
    assert_eq!(answer["timeline"]["counter"].as_u64(), Some(2), "{run:?}");
    wait_rows(
        &c,
        0,
        "SELECT payload FROM loaded ORDER BY id",
        &[vec![json!("a")], vec![json!("b")], vec![json!("c")]],
    );
    assert!(rows(&c, 0, "SELECT * FROM extra").is_err());
    let now = timeline(&c, 0);
    assert_eq!(now["counter"].as_u64(), Some(2));
    assert_eq!(now["parent"], first["id"]);
    assert!(leftovers(&cli_tmp).is_empty(), "{:?}", leftovers(&cli_tmp));

    // An unknown --id is refused without touching the cluster.
    let run = raftlite(
        &cli_tmp,
        &[
            "restore",
            "--node",
            &base,
            "--from",
            &dest_url,
            "--id",
            "nosuch/20250101T000000.000Z-1-1",
        ],
    );
    assert_ne!(run.code, Some(0), "{run:?}");
    assert_eq!(timeline(&c, 0)["id"], now["id"]);
}
