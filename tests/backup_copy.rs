//! A second copy of the backups in another place, against real `raftlite` processes:
//! `--backup-copy-to` (a 1-node cluster backing up to a `file://` directory, copying to the
//! in-process S3 server), and `raftlite backup copy` by hand between two `file://` directories.
//!
//! Covered: finished backups and the log archive reach the copy with their manifests; while the
//! copy is down, backups and writes go on, failures and the backlog show in the metrics and
//! `/status`; once it is back, the copy catches up by itself (every set, every segment); a
//! restore from the copy gives exactly the rows of the newest backup. By hand: everything is
//! copied, a second run moves nothing, `backup list` shows each backup's kind and copies, and a
//! damaged backup is refused (exit 1) without a manifest in the copy.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{http_get, http_post, run_to_completion, wait_for, Cluster, Run};
use raftlite_backup::archive::{archive_clusters, list_segments};
use raftlite_backup::{list_backups, BackupId, Destination};
use raftlite_testkit::S3TestServer;
use serde_json::{json, Value};

const COPY_URL: &str = "s3://raftlite-test/copy";
const RUN_DEADLINE: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `raftlite ARGS` with `envs`, to completion.
fn raftlite(envs: &[(String, String)], args: &[&str]) -> Run {
    let tmp = tempfile::tempdir().expect("the CLI's TMPDIR");
    let mut child = common::cli_command()
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TMPDIR", tmp.path())
        .spawn()
        .expect("spawn raftlite");
    let run = run_to_completion(&mut child, RUN_DEADLINE);
    assert!(!run.timed_out, "raftlite {args:?} did not finish: {run:?}");
    run
}

fn insert(base: &str, from: i64, to: i64) {
    for n in from..=to {
        let r =
            common::execute_at(base, &json!([["INSERT INTO t(n) VALUES(?)", n]])).expect("insert");
        common::check_results(&r).expect("insert result");
    }
}

/// `POST /backups`, waiting out a backup already running (the archive's own base); the id.
fn take_backup(base: &str) -> BackupId {
    let (status, text) = wait_for(
        || {
            let (status, text) = http_post(&format!("{base}/backups"), "").ok()?;
            (status != 409).then_some((status, text))
        },
        WAIT,
        "POST /backups while no other backup runs",
    );
    assert_eq!(status, 200, "POST /backups: {text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    body["backup"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup.id: {body}"))
        .parse()
        .expect("a backup id")
}

/// The complete backups in `dest` (none when it cannot be listed).
fn backup_ids(rt: &tokio::runtime::Runtime, dest: &Destination) -> BTreeSet<BackupId> {
    rt.block_on(list_backups(dest))
        .map(|l| l.backups.into_iter().map(|(id, _)| id).collect())
        .unwrap_or_default()
}

/// Every archive segment in `dest`, as `cluster/timeline/first-last`.
fn segments(rt: &tokio::runtime::Runtime, dest: &Destination) -> BTreeSet<String> {
    rt.block_on(async {
        let mut all = BTreeSet::new();
        for cluster in archive_clusters(dest).await.unwrap_or_default() {
            let history = raftlite_backup::archive::timeline_history(dest, &cluster)
                .await
                .unwrap_or_default();
            for timeline in history {
                for s in list_segments(dest, &cluster, &timeline.id)
                    .await
                    .unwrap_or_default()
                {
                    all.insert(format!(
                        "{cluster}/{}/{}-{}",
                        timeline.id, s.first_index, s.last_index
                    ));
                }
            }
        }
        all
    })
}

/// The value of `name{destination="dest"}` in the node's metrics.
fn metric(base: &str, name: &str, dest: &str) -> Option<f64> {
    let (_, body) = http_get(&format!("{base}/metrics")).ok()?;
    let prefix = format!("{name}{{destination=\"{dest}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// `/status`'s `backup.copies[0]`.
fn copy_status(base: &str) -> Option<Value> {
    let (_, text) = http_get(&format!("{base}/status")).ok()?;
    let status: Value = serde_json::from_str(&text).ok()?;
    Some(status["backup"]["copies"][0].clone()).filter(|c| !c.is_null())
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn copies_survive_an_outage_of_the_copy_and_catch_up() {
    let s3 = S3TestServer::start().expect("S3 test server");
    let primary_dir = tempfile::tempdir().expect("tempdir");
    let primary_url = file_url(primary_dir.path());
    let c = Cluster::start_with_envs(
        1,
        &[
            "--backup-to",
            &primary_url,
            "--backup-copy-to",
            COPY_URL,
            "--backup-interval",
            "off",
            "--backup-verify-interval",
            "off",
            "--archive-interval",
            "200ms",
        ],
        &s3.env_vars(),
    );
    let base = c.nodes[c.wait_leader(WAIT)].base_url();
    let rt = runtime();
    let primary = Destination::parse(&primary_url).expect("primary");
    // Few, quick retries: the test lists the copy itself only while it is up.
    let mut options = s3.object_store_options();
    options.push(("max_retries", "1".into()));
    let copy = Destination::parse_with_options(COPY_URL, options).expect("copy");

    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    insert(&base, 1, 5);
    take_backup(&base);
    insert(&base, 6, 10);
    take_backup(&base);
    wait_for(
        || {
            let want = backup_ids(&rt, &primary);
            (want.len() >= 2 && want.is_subset(&backup_ids(&rt, &copy))).then_some(())
        },
        WAIT,
        "the copy to hold every backup with its manifest",
    );
    let status = wait_for(
        || copy_status(&base).filter(|s| s["state"] == "in sync"),
        WAIT,
        "/status to show the copy in sync",
    );
    assert_eq!(status["destination"], COPY_URL, "{status}");
    assert_eq!(status["archive"], true, "{status}");
    assert!(metric(
        &base,
        "raftlite_backup_copy_last_success_timestamp_seconds",
        COPY_URL
    )
    .is_some());

    // The copy goes down: backups and writes go on, the copier fails and says how far behind.
    s3.set_unavailable(true);
    insert(&base, 11, 15);
    take_backup(&base);
    insert(&base, 16, 20);
    let newest = take_backup(&base);
    insert(&base, 21, 25); // after the newest backup: a restore of it must not have them
    wait_for(
        || {
            let failures = metric(&base, "raftlite_backup_copy_failures_total", COPY_URL)?;
            let pending = metric(&base, "raftlite_backup_copy_pending_objects", COPY_URL)?;
            (failures >= 1.0 && pending >= 2.0).then_some(())
        },
        WAIT,
        "the failures and the backlog of the copy in the metrics",
    );
    assert!(
        metric(&base, "raftlite_backup_copy_lag_seconds", COPY_URL).is_some(),
        "a lag while behind"
    );
    let status = copy_status(&base).expect("/status");
    assert_eq!(status["state"], "failing", "{status}");
    assert!(status["last_error"].as_str().is_some(), "{status}");
    assert_eq!(c.count_rows(0, "t"), 25, "the primary keeps working");
    assert!(backup_ids(&rt, &primary).contains(&newest));

    // Back: the copy catches up by itself, backups and archive.
    s3.set_unavailable(false);
    wait_for(
        || {
            let sets = backup_ids(&rt, &primary).is_subset(&backup_ids(&rt, &copy));
            let archived = segments(&rt, &primary);
            let copied = segments(&rt, &copy);
            (sets && !archived.is_empty() && archived.is_subset(&copied)).then_some(())
        },
        Duration::from_secs(45),
        "the copy to catch up with every backup and archive segment",
    );
    let status = wait_for(
        || copy_status(&base).filter(|s| s["state"] == "in sync"),
        WAIT,
        "/status to show the copy in sync again",
    );
    assert!(status["failures"].as_u64().unwrap_or(0) >= 1, "{status}");
    assert_eq!(
        metric(&base, "raftlite_backup_copy_lag_seconds", COPY_URL),
        Some(0.0)
    );
    // `backup list` of the primary names the copy of each backup.
    let list = raftlite(&[], &["backup", "list", "--from", &primary_url, "--json"]).ok();
    for entry in list.json().as_array().expect("an array") {
        assert_eq!(entry["copies"], json!([COPY_URL]), "{entry}");
    }

    // A restore from the copy gives exactly the rows of the newest backup.
    let restore = raftlite(
        &s3.env_vars(),
        &["restore", "--node", &base, "--from", COPY_URL],
    );
    assert_eq!(restore.code, Some(0), "{restore:?}");
    assert!(
        restore.all_output().contains(&newest.to_string()),
        "{restore:?}"
    );
    wait_for(
        || (c.try_count_rows(0, "t").ok()? == 20).then_some(()),
        WAIT,
        "the node to hold the 20 rows of the newest backup",
    );
}

fn set_file(dir: &Path, id: &BackupId, file: &str) -> PathBuf {
    dir.join(id.cluster_id())
        .join("backups")
        .join(id.set())
        .join(file)
}

#[test]
fn backup_copy_by_hand_between_two_file_destinations() {
    let dirs = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dirs.path().join("a"), dirs.path().join("b"));
    let (a_url, b_url) = (file_url(&a), file_url(&b));
    let c = Cluster::start(
        1,
        &[
            "--backup-to",
            &a_url,
            "--backup-interval",
            "off",
            "--backup-verify-interval",
            "off",
            "--archive-interval",
            "200ms",
        ],
    );
    let base = c.nodes[c.wait_leader(WAIT)].base_url();
    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    insert(&base, 1, 5);
    take_backup(&base);
    insert(&base, 6, 10);
    take_backup(&base);
    let rt = runtime();
    let primary = Destination::parse(&a_url).expect("a");
    let copy = Destination::parse(&b_url).expect("b");
    let sets = backup_ids(&rt, &primary);
    // Let the archive settle: the second run below must find nothing new.
    let archived = wait_for(
        || {
            let first = segments(&rt, &primary);
            std::thread::sleep(Duration::from_millis(500));
            (!first.is_empty() && first == segments(&rt, &primary)).then_some(first)
        },
        WAIT,
        "the archive to stop growing",
    );

    let run = raftlite(
        &[],
        &["backup", "copy", "--from", &a_url, "--to", &b_url, "--json"],
    )
    .ok();
    let report = run.json();
    assert_eq!(
        report["copied"].as_array().map(Vec::len),
        Some(sets.len()),
        "{report}"
    );
    assert_eq!(report["failed"], json!([]), "{report}");
    assert!(
        report["archive"]["segments"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    assert_eq!(backup_ids(&rt, &copy), sets);
    assert_eq!(segments(&rt, &copy), archived);

    let again = raftlite(&[], &["backup", "copy", "--from", &a_url, "--to", &b_url]).ok();
    assert!(
        again.stdout.contains(&format!(
            "0 backups copied (0 B), {} already there, 0 skipped, 0 failed",
            sets.len()
        )),
        "{again:?}"
    );
    assert!(
        again.stdout.contains("log archive: 0 objects copied"),
        "{again:?}"
    );

    // `backup list` shows each backup's kind and where it was copied.
    let list = raftlite(&[], &["backup", "list", "--from", &a_url]).ok();
    assert!(
        list.stdout.contains("KIND") && list.stdout.contains("COPIES"),
        "{list:?}"
    );
    for id in &sets {
        let row = list
            .stdout
            .lines()
            .find(|l| l.starts_with(&id.to_string()))
            .unwrap_or_else(|| panic!("{id} not listed: {list:?}"));
        assert!(row.contains(" full ") && row.contains(&b_url), "{row}");
    }
    let json = raftlite(&[], &["backup", "list", "--from", &a_url, "--json"]).ok();
    for entry in json.json().as_array().expect("an array") {
        assert_eq!(entry["kind"], "full", "{entry}");
        assert_eq!(entry["copies"], json!([b_url]), "{entry}");
    }
    raftlite(&[], &["backup", "verify", "--from", &b_url, "--all"]).ok();

    // A damaged backup is refused: exit 1, no manifest in the copy; the rest is fine.
    insert(&base, 11, 15);
    let damaged = take_backup(&base);
    let object = set_file(&a, &damaged, "db.sqlite.zst");
    let mut bytes = std::fs::read(&object).expect("the data object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&object, bytes).expect("damage it");
    let run = raftlite(
        &[],
        &[
            "backup",
            "copy",
            "--from",
            &a_url,
            "--to",
            &b_url,
            "--no-archive",
        ],
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.contains(&format!("failed   {damaged}")) && run.stdout.contains("sha256"),
        "{run:?}"
    );
    assert!(!set_file(&b, &damaged, "manifest.json").exists());
    assert!(!set_file(&b, &damaged, "db.sqlite.zst").exists());
    assert_eq!(backup_ids(&rt, &copy), sets);
}
