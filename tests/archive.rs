//! The continuous log archive and point-in-time restore, as an operator meets them: a real
//! 3-node cluster (`raftlite serve` processes) archiving to a `file://` destination beside its
//! backups, and `raftlite restore --to-index | --to-time | --to-latest` as a child process.
//!
//! Covered: restore to an index and to a moment gives exactly the rows committed at that point
//! on every node; the archive continues across a leader change (the new leader resumes from the
//! destination's watermark, the chain stays unbroken); a target past the archive is refused with
//! nothing changed; `/status` shows the archive's lag and watermark.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{http_post, run_to_completion, wait_for, Cluster, Run};
use raftlite_backup::archive::{list_archive, verify_archive_timeline};
use raftlite_backup::Destination;
use serde_json::{json, Value};

const RUN_DEADLINE: Duration = Duration::from_secs(120);

fn raftlite(tmpdir: &Path, args: &[&str]) -> Run {
    std::fs::create_dir_all(tmpdir).expect("create the CLI's TMPDIR");
    let mut child = common::cli_command()
        .args(args)
        .env("TMPDIR", tmpdir)
        .spawn()
        .expect("spawn raftlite");
    let run = run_to_completion(&mut child, RUN_DEADLINE);
    assert!(!run.timed_out, "raftlite {args:?} did not finish");
    run
}

/// Inserts row `n` through `base`; returns the log index it was committed at.
fn insert(base: &str, n: i64) -> u64 {
    let body = json!([["INSERT INTO t(n) VALUES(?)", n]]).to_string();
    let (status, text) =
        http_post(&format!("{base}/db/execute?raft_index"), body).expect("POST /db/execute");
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert!(v["results"][0]["error"].is_null(), "{text}");
    v["raft_index"].as_u64().expect("raft_index in the answer")
}

fn leader_base(c: &Cluster) -> String {
    c.nodes[c.wait_leader(Duration::from_secs(30))].base_url()
}

fn archive_status(base: &str) -> Option<Value> {
    let (_, text) = common::http_get(&format!("{base}/status")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    Some(v["archive"].clone())
}

/// Waits until the leader's archive holds entry `index`.
fn wait_archived(c: &Cluster, index: u64) {
    wait_for(
        || {
            let base = c.nodes[c.leader_index()?].base_url();
            let archived = archive_status(&base)?["last_archived_index"].as_u64()?;
            (archived >= index).then_some(())
        },
        Duration::from_secs(30),
        &format!("the archive to reach entry {index}"),
    );
}

fn rows_everywhere(c: &Cluster, want: i64) {
    for node in 0..c.nodes.len() {
        if !c.nodes[node].is_started() {
            continue;
        }
        wait_for(
            || (c.try_count_rows(node, "t").ok()? == want).then_some(()),
            Duration::from_secs(30),
            &format!("node {} to hold {want} rows", node + 1),
        );
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn restore_to_an_index_and_to_a_moment_across_a_leader_change() {
    let backups = tempfile::tempdir().expect("tempdir");
    let dest_url = format!("file://{}", backups.path().display());
    let mut c = Cluster::start(
        3,
        &[
            "--backup-to",
            &dest_url,
            "--backup-interval",
            "off",
            "--archive-to",
            "backup",
            "--archive-interval",
            "200ms",
        ],
    );
    let base = leader_base(&c);
    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    for n in 1..=10 {
        insert(&base, n);
    }
    // The base backup everything below replays from.
    let (status, text) = http_post(&format!("{base}/backups"), "").expect("POST /backups");
    assert_eq!(status, 200, "{text}");

    let mut index_of = vec![0u64];
    for n in 11..=30 {
        index_of.push(insert(&base, n));
    }
    let after_20 = index_of[10];
    std::thread::sleep(Duration::from_millis(20)); // the leader's clock must move past row 30
    let moment_after_30 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    wait_archived(&c, index_of[20]);

    // A leader change: the new leader resumes from the destination's watermark.
    let old_leader = c.wait_leader(Duration::from_secs(30));
    c.nodes[old_leader].kill9();
    let base = wait_for(
        || {
            let leader = c.leader_index()?;
            (leader != old_leader).then(|| c.nodes[leader].base_url())
        },
        Duration::from_secs(30),
        "a new leader",
    );
    let mut last = 0;
    for n in 31..=40 {
        last = insert(&base, n);
    }
    wait_archived(&c, last);
    let status = archive_status(&base).expect("/status");
    assert_eq!(status["archiving"], json!(true), "{status}");
    assert_eq!(status["gaps_recorded"], json!(0), "{status}");
    c.nodes[old_leader].start(None);
    c.nodes[old_leader].wait_ready(Duration::from_secs(30));
    rows_everywhere(&c, 40);

    // The archive is one unbroken chain.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dest = Destination::parse(&dest_url).expect("destination");
    let listed = runtime.block_on(async {
        let meta = list_archive_cluster(&dest).await;
        let report = verify_archive_timeline(&dest, &meta.0, &meta.1, None)
            .await
            .expect("verify");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        meta
    });
    let (cluster_id, timeline_id) = listed;
    assert!(!cluster_id.is_empty() && !timeline_id.is_empty());

    let cli_tmp = backups.path().join("cli-tmp");
    let node = c.nodes[c.wait_leader(Duration::from_secs(30))].base_url();

    // Past the end of the archive: refused, nothing changes.
    let run = raftlite(
        &cli_tmp,
        &[
            "restore",
            "--node",
            &node,
            "--from",
            &dest_url,
            "--to-index",
            "999999",
        ],
    );
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.all_output().contains("past the end"), "{run:?}");
    rows_everywhere(&c, 40);

    // To an index: exactly the rows committed up to it.
    let run = raftlite(
        &cli_tmp,
        &[
            "restore",
            "--node",
            &node,
            "--from",
            &dest_url,
            "--to-index",
            &after_20.to_string(),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 20);

    // To a moment, on the original timeline (the cluster is on a new one now).
    let run = raftlite(
        &cli_tmp,
        &[
            "restore",
            "--node",
            &node,
            "--from",
            &dest_url,
            "--timeline",
            &timeline_id,
            "--to-time",
            &rfc3339(moment_after_30),
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 30);

    // And to the latest archived write.
    let run = raftlite(
        &cli_tmp,
        &[
            "restore",
            "--node",
            &node,
            "--from",
            &dest_url,
            "--timeline",
            &timeline_id,
            "--to-latest",
        ],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 40);
}

/// The cluster id and the first timeline of the only cluster archived in `dest`.
async fn list_archive_cluster(dest: &Destination) -> (String, String) {
    let backups = raftlite_backup::list_backups(dest).await.expect("list");
    let (_, manifest) = backups.backups.first().expect("a backup");
    let cluster_id = manifest.cluster_id.clone();
    let archive = list_archive(dest, &cluster_id).await.expect("list archive");
    let timeline = archive
        .timelines
        .iter()
        .find(|t| t.timeline_id == manifest.timeline.id)
        .expect("the backup's timeline is archived");
    assert!(timeline.gaps.is_empty(), "gaps: {:?}", timeline.gaps);
    (cluster_id, timeline.timeline_id.clone())
}
