//! `raftlite backup prune` as a user runs it: the CLI as a child process against a `file://`
//! destination whose sets are written directly with the backup engine, checked with
//! `raftlite backup list --json` and on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raftlite_backup::{
    create_backup, BackupId, BackupMeta, CreateOptions, Destination, TimelineRef,
};
use serde_json::{json, Value};

/// A CLI run never takes longer than this; past it the process is killed and the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// An incomplete set from long ago: prune cleans it up.
const OLD_INCOMPLETE: &str = "c1/20200101T000000.000Z-1-99";

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs `raftlite backup ARGS...` without inherited `RAFTLITE_*`/`AWS_*` settings.
fn raftlite_backup(args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftlite"));
    cmd.arg("backup").args(args);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("AWS_") || key.starts_with("RAFTLITE_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn raftlite backup");
    let started = Instant::now();
    while child.try_wait().expect("wait for raftlite").is_none() {
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            panic!("raftlite backup {args:?} did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect raftlite's output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A destination with four backups of cluster `c1` (returned oldest first) and an incomplete
/// set from 2020.
fn destination_with_backups(dir: &Path) -> (String, PathBuf, Vec<String>) {
    let db = dir.join("db.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    drop(conn);
    let root = dir.join("dest");
    let url = format!("file://{}", root.display());
    let dest = Destination::parse(&url).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = (1..=4)
        .map(|log_index| {
            let meta = BackupMeta {
                cluster_id: "c1".into(),
                node_id: 1,
                timeline: TimelineRef {
                    id: "0123456789abcdef0123456789abcdef".into(),
                    counter: 1,
                },
                log_index,
                log_term: 1,
                data_changed_index: Some(log_index),
                leader_term: None,
                slot_unix_ms: None,
            };
            let manifest = rt
                .block_on(create_backup(&db, meta, &dest, &CreateOptions::default()))
                .unwrap();
            // Set names carry milliseconds: keep creation times apart.
            std::thread::sleep(Duration::from_millis(3));
            manifest.id().unwrap().to_string()
        })
        .collect();
    let old = set_path(&root, OLD_INCOMPLETE);
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("db.sqlite.zst"), b"an upload that never finished").unwrap();
    (url, root, ids)
}

fn set_path(root: &Path, id: &str) -> PathBuf {
    let id: BackupId = id.parse().unwrap();
    root.join(id.cluster_id()).join("backups").join(id.set())
}

fn listed_ids(url: &str) -> Vec<String> {
    let run = raftlite_backup(&["list", "--from", url, "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    run.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn prune_keep_last_dry_run_then_for_real() {
    let dir = tempfile::tempdir().unwrap();
    let (url, root, ids) = destination_with_backups(dir.path());
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed_ids(&url), newest_first);

    let run = raftlite_backup(&["prune", "--from", &url, "--keep-last", "2", "--dry-run"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let expected_lines = [
        format!("keep {} (last, newest)", ids[3]),
        format!("keep {} (last)", ids[2]),
        format!("would delete {}", ids[1]),
        format!("would delete {}", ids[0]),
        format!("would clean {OLD_INCOMPLETE} (superseded, or incomplete for over a day)"),
    ];
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[..5], expected_lines, "{run:?}");
    assert!(
        lines[5].starts_with("dry run")
            && lines[5].contains("2 kept, 2 would be deleted, 1 would be cleaned up")
            && lines[5].contains("nothing was deleted"),
        "{run:?}"
    );
    assert_eq!(lines.len(), 6, "{run:?}");
    assert_eq!(listed_ids(&url), newest_first);
    assert!(set_path(&root, OLD_INCOMPLETE)
        .join("db.sqlite.zst")
        .is_file());

    let run = raftlite_backup(&["prune", "--from", &url, "--keep-last", "2", "--json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.json(),
        json!({
            "dry_run": false,
            "kept": [
                {"id": ids[3], "reasons": ["last", "newest"]},
                {"id": ids[2], "reasons": ["last"]},
            ],
            "deleted": [ids[1], ids[0]],
            "cleaned": [OLD_INCOMPLETE],
            "failed": [],
        })
    );
    assert_eq!(listed_ids(&url), newest_first[..2]);
    for gone in [&ids[0], &ids[1]] {
        assert!(
            !set_path(&root, gone).join("db.sqlite.zst").exists(),
            "{gone}"
        );
    }
    assert!(!set_path(&root, OLD_INCOMPLETE)
        .join("db.sqlite.zst")
        .exists());

    // Nothing left to do; the summary says so.
    let run = raftlite_backup(&[
        "prune",
        "--from",
        &url,
        "--cluster",
        "c1",
        "--keep-last",
        "2",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "cluster c1 in {url}: 2 kept, 0 deleted, 0 cleaned up, 0 failed"
        )),
        "{run:?}"
    );
}

#[test]
fn prune_refuses_without_a_rule_or_with_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _root, ids) = destination_with_backups(dir.path());
    for (args, says) in [
        (
            vec!["prune", "--from", &url],
            "give at least one --keep-* rule",
        ),
        (vec!["prune", "--from", &url, "--dry-run"], "never guesses"),
        (
            vec!["prune", "--from", &url, "--keep-within", "5x"],
            "--keep-within",
        ),
        (
            vec![
                "prune",
                "--from",
                &url,
                "--keep-last",
                "1",
                "--cluster",
                "a/b",
            ],
            "--cluster",
        ),
        (
            vec!["prune", "--from", "ftp://nowhere/x", "--keep-last", "1"],
            "unsupported scheme",
        ),
    ] {
        let run = raftlite_backup(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:?}");
    }
    assert_eq!(listed_ids(&url).len(), ids.len());
}

#[test]
fn prune_fails_when_a_set_cannot_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (url, root, ids) = destination_with_backups(dir.path());
    // A `manifest.json` that is a directory cannot be removed as a file (even by root), so
    // cleaning this old incomplete set fails.
    let stuck = "c1/20200102T000000.000Z-1-98";
    let stuck_dir = set_path(&root, stuck);
    std::fs::create_dir_all(stuck_dir.join("manifest.json")).unwrap();
    std::fs::write(stuck_dir.join("manifest.json/junk"), b"junk").unwrap();
    std::fs::write(stuck_dir.join("db.sqlite.zst"), b"junk").unwrap();

    let run = raftlite_backup(&["prune", "--from", &url, "--keep-last", "3"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("failed {stuck}: deleting manifest.json failed")),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(&format!("delete {}", ids[0])),
        "{run:?}"
    );
    assert!(run.stdout.contains("1 failed"), "{run:?}");
    assert!(
        run.stderr.contains("could not be (fully) deleted"),
        "{run:?}"
    );
    // Everything else went ahead.
    assert_eq!(listed_ids(&url).len(), 3);
    assert!(!set_path(&root, OLD_INCOMPLETE).exists());

    let run = raftlite_backup(&["prune", "--from", &url, "--keep-last", "3", "--json"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let report = run.json();
    assert_eq!(report["failed"][0]["id"], stuck);
    assert!(report["failed"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("manifest.json"));
    assert_eq!(report["deleted"], json!([]));
}
