//! The continuous log archive and point-in-time restore, as an operator meets them: a real
//! 3-node cluster (`raftlite serve` processes) archiving to a `file://` destination beside its
//! backups, and `raftlite restore --to-index | --to-time | --to-latest` as a child process.
//!
//! Covered: restore to an index and to a moment gives exactly the rows committed at that point
//! on every node; the archive continues across a leader change (the new leader resumes from the
//! destination's watermark, the chain stays unbroken); a leader paused while holding entries it
//! has not archived cannot break the chain when it wakes up after a new leader took over; a
//! target past the archive is refused with nothing changed; `/status` shows the archive's lag and
//! watermark; losing every node and data dir loses no write older than the archive interval;
//! tampered and missing segments are found by `backup verify` and refused by restore; an outage
//! of the destination longer than the log hold is a recorded gap that restore refuses.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{http_post, run_to_completion, wait_for, Cluster, Paused, Run};
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
/// A node that knows no leader yet (an election after a kill) proposes nothing: retried.
fn insert(base: &str, n: i64) -> u64 {
    let body = json!([["INSERT INTO t(n) VALUES(?)", n]]).to_string();
    let (status, text) = wait_for(
        || {
            let (status, text) = http_post(&format!("{base}/db/execute?raft_index"), body.clone())
                .expect("POST /db/execute");
            (!(status == 503 && text.contains("no leader is known"))).then_some((status, text))
        },
        Duration::from_secs(30),
        "a leader to take the write",
    );
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert!(v["results"][0]["error"].is_null(), "{text}");
    v["raft_index"].as_u64().expect("raft_index in the answer")
}

/// `POST /backups`, waiting out the base backup the archive takes by itself when it starts.
fn take_backup(base: &str) {
    let (status, text) = wait_for(
        || {
            let (status, text) = http_post(&format!("{base}/backups"), "").ok()?;
            (status != 409).then_some((status, text))
        },
        Duration::from_secs(30),
        "POST /backups while no other backup runs",
    );
    assert_eq!(status, 200, "{text}");
}

/// `n` nodes backing up to `dest_url` on request only, archiving beside the backups (the
/// default) every `interval`.
fn archiving_cluster(n: usize, dest_url: &str, interval: &str) -> Cluster {
    Cluster::start(
        n,
        &[
            "--backup-to",
            dest_url,
            "--backup-interval",
            "off",
            "--archive-interval",
            interval,
        ],
    )
}

/// `raftlite restore --node NODE --from DEST` plus `target` (the `--to-*` flags), as a child
/// process with `cli_tmp` as its temp dir.
fn restore_with(cli_tmp: &Path, node: &str, dest_url: &str, target: &[&str]) -> Run {
    let mut args = vec!["restore", "--node", node, "--from", dest_url];
    args.extend_from_slice(target);
    raftlite(cli_tmp, &args)
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
    let mut c = archiving_cluster(3, &dest_url, "200ms");
    let base = leader_base(&c);
    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    for n in 1..=10 {
        insert(&base, n);
    }
    // The base backup everything below replays from.
    take_backup(&base);

    let mut index_of = vec![0u64];
    for n in 11..=30 {
        index_of.push(insert(&base, n));
    }
    let after_20 = index_of[10];
    std::thread::sleep(Duration::from_millis(20)); // the leader's clock must move past row 30
    let moment_after_30 = now_ms();
    std::thread::sleep(Duration::from_millis(20));
    wait_archived(&c, index_of[20]);
    // A later base: a restore to a point before it replays on to it and compares contents.
    take_backup(&base);

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

    // The archive's listing as JSON: coverage and the timeline's record from the history.
    let run = raftlite(
        &cli_tmp,
        &["backup", "list", "--from", &dest_url, "--archive", "--json"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let listed: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let first = &listed[0];
    assert_eq!(first["timeline_id"], json!(timeline_id), "{listed}");
    assert_eq!(first["counter"], json!(1), "{listed}");
    assert_eq!(first["parent"], Value::Null, "{listed}");
    assert_eq!(first["first_index"], json!(1), "{listed}");
    assert!(first["last_index"].as_u64() >= Some(last), "{listed}");
    assert_eq!(first["gaps"], json!([]), "{listed}");

    // Past the end of the archive: refused, nothing changes.
    let run = restore_with(&cli_tmp, &node, &dest_url, &["--to-index", "999999"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.all_output().contains("past the end"), "{run:?}");
    rows_everywhere(&c, 40);

    // To an index: exactly the rows committed up to it.
    let run = restore_with(
        &cli_tmp,
        &node,
        &dest_url,
        &["--to-index", &after_20.to_string()],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.all_output().contains("gives its content"),
        "the replay was checked against the later base: {run:?}"
    );
    rows_everywhere(&c, 20);

    // Across the restore: the new timeline's archive starts with a base of its own (the leader
    // takes it as soon as it archives the new timeline), so points on it can be restored too.
    let node = c.nodes[c.wait_leader(Duration::from_secs(30))].base_url();
    wait_for(
        || {
            let run = raftlite(&cli_tmp, &["backup", "list", "--from", &dest_url, "--json"]);
            let backups: Value = serde_json::from_str(&run.stdout).ok()?;
            backups
                .as_array()?
                .iter()
                .any(|b| b["timeline"]["id"] != json!(timeline_id))
                .then_some(())
        },
        Duration::from_secs(30),
        "the new timeline's base backup",
    );
    let mut on_new_timeline = Vec::new();
    for n in 41..=45 {
        on_new_timeline.push(insert(&node, n));
    }
    wait_archived(&c, on_new_timeline[4]);
    let run = restore_with(
        &cli_tmp,
        &node,
        &dest_url,
        &["--to-index", &on_new_timeline[2].to_string()],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 23);

    // To a moment before the restores: the timeline history leads back to the original
    // timeline (the cluster is two timelines further now) without naming it.
    let run = restore_with(
        &cli_tmp,
        &node,
        &dest_url,
        &["--to-time", &rfc3339(moment_after_30)],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.all_output().contains("following its history"),
        "{run:?}"
    );
    rows_everywhere(&c, 30);

    // And to the latest archived write.
    let run = restore_with(
        &cli_tmp,
        &node,
        &dest_url,
        &["--timeline", &timeline_id, "--to-latest"],
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

/// Every node and every data dir lost while a writer runs: a new node auto-restored from the
/// destination holds every write acknowledged more than a second before the loss.
#[test]
fn losing_every_node_loses_no_write_older_than_a_second() {
    let backups = tempfile::tempdir().expect("tempdir");
    let dest_url = format!("file://{}", backups.path().display());
    let mut c = archiving_cluster(3, &dest_url, "1s");
    let base = leader_base(&c);
    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    take_backup(&base);

    // One writer, rows 1, 2, 3, ... each acknowledged before the next is sent.
    let mut acked: Vec<(i64, std::time::Instant)> = Vec::new();
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(4) {
        n += 1;
        insert(&base, n);
        acked.push((n, std::time::Instant::now()));
    }
    let lost_at = std::time::Instant::now();
    for node in &mut c.nodes {
        node.kill9();
    }
    for node in &c.nodes {
        let _ = std::fs::remove_dir_all(&node.data_dir);
    }
    let must_have = acked
        .iter()
        .rev()
        .find(|(_, at)| lost_at.duration_since(*at) > Duration::from_secs(1))
        .map_or(0, |(n, _)| *n);
    assert!(must_have > 0, "no write was older than a second");

    let fresh = tempfile::tempdir().expect("tempdir");
    let mut node = common::Node::new(9, fresh.path(), &["--auto-restore-from", &dest_url]);
    node.start(None);
    node.wait_ready(Duration::from_secs(60));
    let rows = common::query_i64s(
        &node.base_url(),
        &format!("SELECT count(*) FROM t WHERE n <= {must_have}"),
        "strong",
    )
    .expect("query");
    assert_eq!(
        rows,
        vec![must_have],
        "writes acknowledged more than 1 s before the loss are missing (last acked: {n})"
    );
    node.stop();
}

/// A segment altered in the destination is refused by a point-in-time restore, which then
/// changes nothing in the cluster.
#[test]
fn a_tampered_segment_is_refused_and_nothing_changes() {
    let backups = tempfile::tempdir().expect("tempdir");
    let dest_url = format!("file://{}", backups.path().display());
    let c = archiving_cluster(1, &dest_url, "200ms");
    let base = leader_base(&c);
    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    take_backup(&base);
    let mut index_of = vec![0u64];
    for n in 1..=30 {
        index_of.push(insert(&base, n));
        if n % 10 == 0 {
            wait_archived(&c, index_of[n as usize]); // several segments
        }
    }
    let (last, at_25) = (index_of[30], index_of[25]);
    wait_archived(&c, last);
    let cli_tmp = backups.path().join("cli-tmp");
    let restore_to = |target: &[&str]| restore_with(&cli_tmp, &base, &dest_url, target);
    let verify = || raftlite(&cli_tmp, &["backup", "verify", "--from", &dest_url]);

    // Flip one byte near the end of the newest segment's body.
    let mut segments: Vec<std::path::PathBuf> = walk(backups.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let newest = segments.last().expect("segments").clone();
    let original = std::fs::read(&newest).expect("read segment");
    let mut tampered = original.clone();
    let at = tampered.len() - 3;
    tampered[at] ^= 0x40;
    std::fs::write(&newest, &tampered).expect("write segment");

    let run = restore_to(&["--to-latest"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    let out = run.all_output();
    assert!(out.contains("sha256") || out.contains("damaged"), "{out}");
    rows_everywhere(&c, 30);

    // Intact again, and a second base: verify replays the archive from the first base to it
    // and finds the same content.
    std::fs::write(&newest, &original).expect("put the segment back");
    take_backup(&base);
    let run = verify();
    assert_eq!(run.code, Some(0), "{run:?}");
    let out = run.all_output();
    assert!(out.contains("chain unbroken"), "{out}");
    assert!(out.contains("same content"), "{out}");

    // Verify finds the tampered segment.
    std::fs::write(&newest, &tampered).expect("write segment");
    let run = verify();
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.all_output().contains("FAILED  archive"), "{run:?}");
    std::fs::write(&newest, &original).expect("put the segment back");

    // A segment missing from the middle of the chain: verify names it, and a restore to a
    // point past it (from the first base) is refused with nothing changed.
    std::fs::remove_file(&segments[1]).expect("remove a segment");
    let run = verify();
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.all_output().contains("FAILED  archive"), "{run:?}");
    let run = restore_to(&["--to-index", &at_25.to_string()]);
    assert_ne!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 30);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The destination (an S3-compatible server, archive encrypted to an age recipient) goes down
/// for longer than the log may be held: the archive records the hole as a gap when it comes back,
/// `/status` shows it, a restore to a point inside it is refused and changes nothing, and points
/// after it... are not reachable from the old base either (the gap sits between), while points
/// before it restore exactly.
#[test]
fn a_destination_outage_past_the_hold_is_a_recorded_gap_that_restore_refuses() {
    let s3 = raftlite_testkit::S3TestServer::start().expect("S3 test server");
    let key = age::x25519::Identity::generate();
    let recipient = key.to_public().to_string();
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("key.txt");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&key_file, key.to_string().expose_secret()).expect("write key");
    }
    let dest_url = "s3://raftlite-test/archive-outage";
    let mut envs = s3.env_vars();
    envs.extend([
        (
            "RAFTLITE_ARCHIVE_MAX_HELD_ENTRIES".to_string(),
            "40".to_string(),
        ),
        (
            "RAFTLITE_SNAPSHOT_KEEP_ENTRIES".to_string(),
            "5".to_string(),
        ),
        ("RAFTLITE_BACKUP_MAX_RETRIES".to_string(), "1".to_string()),
        (
            "RAFTLITE_BACKUP_RETRY_TIMEOUT_SECS".to_string(),
            "2".to_string(),
        ),
    ]);
    let c = Cluster::start_with_envs(
        1,
        &[
            "--backup-to",
            dest_url,
            "--backup-recipient",
            &recipient,
            "--backup-interval",
            "off",
            "--archive-to",
            "backup",
            "--archive-interval",
            "200ms",
            "--snapshot-threshold",
            "20",
        ],
        &envs,
    );
    let base = leader_base(&c);
    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    take_backup(&base);
    let mut before_outage = 0;
    for n in 1..=10 {
        before_outage = insert(&base, n);
    }
    wait_archived(&c, before_outage);

    s3.set_unavailable(true);
    for n in 11..=200 {
        insert(&base, n);
    }
    // Snapshots every 20 entries purge the log; the hold keeps at most 40 entries past the
    // archive, so entries are lost to the archive while the destination is down.
    let forced = wait_for(
        || {
            let forced = archive_status(&base)?["log_hold"]["forced_purges"].as_u64()?;
            (forced > 0).then_some(forced)
        },
        Duration::from_secs(30),
        "a purge past the full hold",
    );
    assert!(forced > 0);
    s3.set_unavailable(false);
    let mut last = 0;
    for n in 201..=210 {
        last = insert(&base, n);
    }
    wait_archived(&c, last);
    let status = archive_status(&base).expect("/status");
    assert!(status["gaps_recorded"].as_u64() >= Some(1), "{status}");

    let envs_cli = s3.env_vars();
    let cli = |args: &[&str]| {
        let tmp = keys.path().join("cli-tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let mut cmd = common::cli_command();
        cmd.args(args).env("TMPDIR", &tmp);
        for (k, v) in &envs_cli {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn raftlite");
        run_to_completion(&mut child, RUN_DEADLINE)
    };
    // The listing shows the gap.
    let list = cli(&["backup", "list", "--from", dest_url]);
    assert_eq!(list.code, Some(0), "{list:?}");
    // The gap starts after the last entry archived before the outage (a segment read before
    // the purge may still have landed once the destination was back) and ends in the outage.
    let (gap_from, gap_to) = list
        .stdout
        .lines()
        .find_map(|line| {
            let gaps = line.split_whitespace().last()?;
            let (from, to) = gaps.split(',').next()?.split_once('-')?;
            Some((from.parse::<u64>().ok()?, to.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no gap listed: {list:?}"));
    assert!(
        gap_from > before_outage && gap_to >= gap_from,
        "{gap_from}-{gap_to}: {list:?}"
    );

    // Inside (and past) the gap from the only base: refused, nothing changes.
    let key_arg = key_file.display().to_string();
    let inside_gap = (gap_from + gap_to) / 2;
    let inside = inside_gap.to_string();
    let run = cli(&[
        "restore",
        "--node",
        &base,
        "--from",
        dest_url,
        "--identity",
        &key_arg,
        "--to-index",
        &inside,
    ]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.all_output().contains("gap"), "{run:?}");
    rows_everywhere(&c, 210);

    // After the gap the leader took a new base by itself, so the newest point is reachable.
    let timeline = archive_status(&base).expect("/status")["timeline"]
        .as_str()
        .expect("timeline")
        .to_string();
    wait_for(
        || {
            let list = cli(&["backup", "list", "--from", dest_url, "--json"]);
            let backups: Value = serde_json::from_str(&list.stdout).ok()?;
            backups
                .as_array()?
                .iter()
                .any(|b| b["log_index"].as_u64() > Some(inside_gap))
                .then_some(())
        },
        Duration::from_secs(30),
        "a base backup after the gap",
    );
    let run = cli(&[
        "restore",
        "--node",
        &base,
        "--from",
        dest_url,
        "--identity",
        &key_arg,
        "--to-latest",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 210);

    // Before the gap: exactly the rows up to that point, decrypted with the identity.
    let run = cli(&[
        "restore",
        "--node",
        &base,
        "--from",
        dest_url,
        "--identity",
        &key_arg,
        "--timeline",
        &timeline,
        "--to-index",
        &before_outage.to_string(),
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 10);
}

#[test]
fn a_paused_leader_waking_up_after_a_new_one_took_over_cannot_break_the_archive() {
    let backups = tempfile::tempdir().expect("tempdir");
    let dest_url = format!("file://{}", backups.path().display());
    let c = archiving_cluster(3, &dest_url, "300ms");
    let old = c.wait_leader(Duration::from_secs(30));
    let base = c.nodes[old].base_url();
    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    take_backup(&base);
    let mut last = 0;
    for n in 1..=10 {
        last = insert(&base, n);
    }
    wait_archived(&c, last);
    // Applied by the old leader, not archived by it yet, when it is paused.
    for n in 11..=20 {
        insert(&base, n);
    }
    let paused = Paused::new(&c.nodes[old]);
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = wait_for(
        || {
            others.iter().copied().find(|&i| {
                c.nodes[i]
                    .status()
                    .is_ok_and(|s| s["store"]["raft"]["state"] == "Leader")
            })
        },
        Duration::from_secs(30),
        "a new leader while the old one is paused",
    );
    let new_base = c.nodes[new].base_url();
    for n in 21..=30 {
        last = insert(&new_base, n);
    }
    wait_for(
        || {
            let archived = archive_status(&new_base)?["last_archived_index"].as_u64()?;
            (archived >= last).then_some(())
        },
        Duration::from_secs(30),
        "the new leader to archive every write",
    );

    // The old leader wakes up still believing it leads, with entries it meant to archive.
    drop(paused);
    wait_for(
        || {
            let status = c.nodes[old].status().ok()?;
            (status["store"]["raft"]["state"] != "Leader"
                && status["archive"]["archiving"] == json!(false))
            .then_some(())
        },
        Duration::from_secs(30),
        "the old leader to learn it no longer leads",
    );
    for n in 31..=40 {
        last = insert(&new_base, n);
    }
    wait_archived(&c, last);
    rows_everywhere(&c, 40);

    // One unbroken chain, no overlapping segments, and every write restorable.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dest = Destination::parse(&dest_url).expect("destination");
    runtime.block_on(async {
        let (cluster_id, timeline_id) = list_archive_cluster(&dest).await;
        let listed = list_archive(&dest, &cluster_id).await.expect("list");
        assert!(listed.warnings.is_empty(), "{:?}", listed.warnings);
        let report = verify_archive_timeline(&dest, &cluster_id, &timeline_id, None)
            .await
            .expect("verify");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    });
    let node = c.nodes[new].base_url();
    let run = restore_with(
        &backups.path().join("cli-tmp"),
        &node,
        &dest_url,
        &["--to-latest"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 40);
}

#[test]
fn retention_keeps_every_point_in_its_window_and_only_those() {
    let backups = tempfile::tempdir().expect("tempdir");
    let dest_url = format!("file://{}", backups.path().display());
    let window_ms = 3_000;
    let c = Cluster::start(
        1,
        &[
            "--backup-to",
            &dest_url,
            "--backup-interval",
            "off",
            "--backup-keep-last",
            "100",
            "--archive-interval",
            "200ms",
            "--archive-keep-within",
            "3s",
        ],
    );
    let base = leader_base(&c);
    common::execute_at(&base, &json!(["CREATE TABLE t(n INTEGER)"])).expect("create");
    take_backup(&base);
    let mut index_of = vec![0u64];
    for n in 1..=10 {
        index_of.push(insert(&base, n));
    }
    wait_archived(&c, index_of[10]);
    take_backup(&base); // the base the window will start from
    let second_base_at = now_ms();
    for n in 11..=20 {
        index_of.push(insert(&base, n));
    }
    wait_archived(&c, index_of[20]);
    // Once the second base is older than the window, the next backup applies retention.
    wait_for(
        || (now_ms() > second_base_at + window_ms).then_some(()),
        Duration::from_secs(10),
        "the second base to leave the retention window",
    );
    take_backup(&base);

    // Segments only the first base could replay are gone; the window's points remain.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dest = Destination::parse(&dest_url).expect("destination");
    let first = runtime.block_on(async {
        let (cluster_id, timeline_id) = list_archive_cluster(&dest).await;
        let listed = list_archive(&dest, &cluster_id).await.expect("list");
        let t = listed
            .timelines
            .iter()
            .find(|t| t.timeline_id == timeline_id)
            .expect("the timeline's archive")
            .clone();
        let report = verify_archive_timeline(&dest, &cluster_id, &timeline_id, None)
            .await
            .expect("verify");
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        t.first_index
    });
    assert!(
        first > index_of[5],
        "archive retention kept entries before the window's base: the archive starts at {first}"
    );
    let cli_tmp = backups.path().join("cli-tmp");
    let restore_to = |index: u64| {
        restore_with(
            &cli_tmp,
            &base,
            &dest_url,
            &["--to-index", &index.to_string()],
        )
    };
    // A point inside the window (after the second base): exact.
    let run = restore_to(index_of[15]);
    assert_eq!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 15);
    // A point only the pruned segments could reach: refused, nothing changes.
    let run = restore_to(index_of[5]);
    assert_ne!(run.code, Some(0), "{run:?}");
    rows_everywhere(&c, 15);
}
