//! Incremental backups against real `raftlite` processes: chains across a restart, a leader
//! change and a restore (timeline switch); restores of an incremental give exactly the rows of
//! that backup; a damaged or missing link is found by `backup verify` and refused by restore
//! with nothing changed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{http_post_raw, run_to_completion, wait_for, Cluster, Run};
use raftlite_backup::{BackupId, BackupKind, Manifest};
use serde_json::{json, Value};

const RUN_DEADLINE: Duration = Duration::from_secs(120);

fn backup_args<'a>(dest_url: &'a str, full_every: &'a str) -> Vec<&'a str> {
    vec![
        "--backup-to",
        dest_url,
        "--backup-interval",
        "off",
        "--backup-verify-interval",
        "off",
        "--archive-to",
        "off",
        "--backup-full-every",
        full_every,
    ]
}

/// `POST /backups` at `base`, until one is taken (a node that just became leader may still be
/// settling): its id and manifest.
fn take_backup(base: &str) -> (BackupId, Manifest) {
    let body: Value = wait_for(
        || {
            let resp =
                http_post_raw(&format!("{base}/backups"), "application/json", Vec::new()).ok()?;
            (resp.status == 200)
                .then(|| serde_json::from_slice(&resp.body).ok())
                .flatten()
        },
        Duration::from_secs(30),
        "POST /backups to succeed",
    );
    let id: BackupId = body["backup"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup.id: {body}"))
        .parse()
        .expect("a valid backup id");
    let manifest: Manifest =
        serde_json::from_value(body["backup"]["manifest"].clone()).expect("a manifest");
    (id, manifest)
}

fn execute(base: &str, statements: Value) {
    common::execute_at(base, &statements).unwrap_or_else(|e| panic!("execute: {e}"));
}

/// Every row of `t` and `m`, as the leader reads them.
fn content(base: &str) -> Value {
    let rows = |sql: &str| {
        common::query_at(base, sql, "strong")
            .and_then(|r| common::first_values(&r))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    json!({
        "t": rows("SELECT id, hex(v) FROM t ORDER BY id"),
        "m": rows("SELECT k FROM m ORDER BY k"),
    })
}

fn seed(base: &str) {
    execute(
        base,
        json!([
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)",
            "CREATE TABLE m(k INTEGER)",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) \
             INSERT INTO t SELECT i, randomblob(700) FROM n",
        ]),
    );
}

/// A small change: a few rows rewritten and a marker row.
fn change(base: &str, k: i64) {
    execute(
        base,
        json!([
            format!(
                "UPDATE t SET v = randomblob(700) WHERE id % 97 = {}",
                k % 97
            ),
            format!("INSERT INTO m VALUES ({k})"),
        ]),
    );
}

fn cli(args: &[&str]) -> Run {
    cli_with(args, &[])
}

fn cli_with(args: &[&str], envs: &[(String, String)]) -> Run {
    let mut cmd = common::cli_command();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn raftlite");
    run_to_completion(&mut child, RUN_DEADLINE)
}

fn restore(base: &str, dest_url: &str, id: &BackupId) -> Run {
    cli(&[
        "restore",
        "--node",
        base,
        "--from",
        dest_url,
        "--id",
        &id.to_string(),
    ])
}

fn set_dir(dest: &Path, id: &BackupId) -> std::path::PathBuf {
    dest.join(id.cluster_id()).join("backups").join(id.set())
}

fn assert_link(m: &Manifest, parent: &BackupId, depth: u32) {
    assert_eq!(m.kind, BackupKind::Incremental, "{m:?}");
    assert_eq!(m.parent.as_ref().map(|p| &p.id), Some(parent), "{m:?}");
    assert_eq!(m.chain_depth, depth, "{m:?}");
}

#[test]
fn a_chain_survives_a_restart_restores_exactly_and_a_bad_link_is_refused() {
    let backups = tempfile::tempdir().expect("tempdir");
    let dest_url = format!("file://{}", backups.path().display());
    let mut c = Cluster::start(1, &backup_args(&dest_url, "4"));
    let base = c.nodes[0].base_url();
    seed(&base);

    let (b1, m1) = take_backup(&base);
    assert_eq!(m1.kind, BackupKind::Full);
    assert!(m1.pages_digest.is_some(), "{m1:?}");
    change(&base, 1);
    let (b2, m2) = take_backup(&base);
    assert_link(&m2, &b1, 1);
    assert!(
        m2.stored_size * 5 < m1.stored_size,
        "an incremental of a few pages is much smaller than the full: {} vs {}",
        m2.stored_size,
        m1.stored_size
    );

    // The page hashes survive a restart: the chain goes on.
    c.nodes[0].stop();
    c.nodes[0].restart();
    c.nodes[0].wait_ready(Duration::from_secs(30));
    change(&base, 2);
    let (b3, m3) = take_backup(&base);
    assert_link(&m3, &b2, 2);
    let at_b3 = content(&base);
    change(&base, 3);
    let (b4, m4) = take_backup(&base);
    assert_link(&m4, &b3, 3);
    // --backup-full-every 4: the fifth is full again.
    change(&base, 4);
    let (_b5, m5) = take_backup(&base);
    assert_eq!(m5.kind, BackupKind::Full, "{m5:?}");

    // Restoring the middle of a chain gives exactly its rows.
    let run = restore(&base, &dest_url, &b3);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.all_output().contains("incremental"), "{run:?}");
    assert_eq!(content(&base), at_b3);

    let verify = cli(&["backup", "verify", "--all", "--from", &dest_url]);
    assert_eq!(verify.code, Some(0), "{verify:?}");

    // A damaged link: verify names it, restore of a later link refuses and changes nothing.
    change(&base, 50);
    let before = content(&base);
    let object = set_dir(backups.path(), &b2).join("pages.zst");
    let mut bytes = std::fs::read(&object).expect("read the link");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&object, &bytes).expect("damage the link");
    let verify = cli(&["backup", "verify", "--all", "--from", &dest_url]);
    assert_ne!(verify.code, Some(0), "{verify:?}");
    assert!(verify.all_output().contains(&b2.to_string()), "{verify:?}");
    let run = restore(&base, &dest_url, &b4);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.all_output().contains("sha256"), "{run:?}");
    assert_eq!(content(&base), before);

    // A missing link: refused, naming it.
    std::fs::remove_file(set_dir(backups.path(), &b2).join("manifest.json"))
        .expect("remove the link's manifest");
    let run = restore(&base, &dest_url, &b4);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.all_output().contains("missing") && run.all_output().contains(&b2.to_string()),
        "{run:?}"
    );
    assert_eq!(content(&base), before);
    let verify = cli(&[
        "backup",
        "verify",
        "--from",
        &dest_url,
        "--id",
        &b4.to_string(),
    ]);
    assert_ne!(verify.code, Some(0), "{verify:?}");
    assert!(verify.all_output().contains("missing"), "{verify:?}");
    let _ = m4;
}

/// On the embedded S3 server, encrypted to an age recipient.
#[test]
fn a_new_leader_and_a_restore_start_new_chains() {
    let s3 = raftlite_testkit::S3TestServer::start().expect("S3 test server");
    let envs = s3.env_vars();
    let key = age::x25519::Identity::generate();
    let recipient = key.to_public().to_string();
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("key.txt");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&key_file, key.to_string().expose_secret()).expect("write key");
    }
    let key_arg = key_file.display().to_string();
    let dest_url = "s3://raftlite-test/incremental".to_string();
    let mut args = backup_args(&dest_url, "10");
    args.extend(["--backup-recipient", &recipient]);
    let mut c = Cluster::start_with_envs(3, &args, &envs);
    let leader = c.wait_leader(Duration::from_secs(30));
    let base = c.nodes[leader].base_url();
    seed(&base);
    let (b1, m1) = take_backup(&base);
    assert_eq!(m1.kind, BackupKind::Full);
    change(&base, 1);
    let (b2, m2) = take_backup(&base);
    assert_link(&m2, &b1, 1);
    assert!(m2.encryption.is_some(), "{m2:?}");

    // A new leader holds no page hashes of the old one's backups: a full backup, then its own
    // chain.
    c.nodes[leader].kill9();
    let new_leader = wait_for(
        || c.leader_index().filter(|&i| i != leader),
        Duration::from_secs(30),
        "a new leader",
    );
    let base = c.nodes[new_leader].base_url();
    change(&base, 2);
    let (b3, m3) = take_backup(&base);
    assert_eq!(m3.kind, BackupKind::Full, "{m3:?}");
    change(&base, 3);
    let (b4, m4) = take_backup(&base);
    assert_link(&m4, &b3, 1);
    let at_b4 = content(&base);
    c.nodes[leader].restart();
    c.nodes[leader].wait_ready(Duration::from_secs(30));

    // Restoring the incremental: the whole cluster gets exactly its rows.
    change(&base, 4);
    let restore_args = [
        "restore",
        "--node",
        &base,
        "--from",
        &dest_url,
        "--identity",
        &key_arg,
        "--id",
        &b4.to_string(),
    ];
    let run = cli_with(&restore_args, &envs);
    assert_eq!(run.code, Some(0), "{run:?}");
    let leader = c.wait_sole_leader(Duration::from_secs(30));
    let base = c.nodes[leader].base_url();
    assert_eq!(content(&base), at_b4);
    for i in 0..c.nodes.len() {
        let node = c.nodes[i].base_url();
        wait_for(
            || {
                let rows = common::query_i64s(&node, "SELECT COUNT(*) FROM m", "none").ok()?;
                (rows == vec![3]).then_some(())
            },
            Duration::from_secs(30),
            "every node to hold the restored rows",
        );
    }

    // The restore started a new timeline: its first backup is full.
    change(&base, 5);
    let (_b5, m5) = take_backup(&base);
    assert_eq!(m5.kind, BackupKind::Full, "{m5:?}");
    assert_ne!(m5.timeline.id, m4.timeline.id);
    let _ = b2;
}

/// Waits until the archive of the node at `base` holds everything it applied.
fn wait_all_archived(base: &str) {
    wait_for(
        || {
            let (_, text) = common::http_get(&format!("{base}/status")).ok()?;
            let status: Value = serde_json::from_str(&text).ok()?;
            let applied = status["store"]["raft"]["applied_index"].as_u64()?;
            let archived = status["archive"]["last_archived_index"].as_u64()?;
            (archived >= applied).then_some(())
        },
        Duration::from_secs(30),
        "the archive to hold every applied entry",
    );
}

#[test]
fn point_in_time_restore_and_auto_restore_start_from_an_incremental() {
    let backups = tempfile::tempdir().expect("tempdir");
    let dest_url = format!("file://{}", backups.path().display());
    let c = Cluster::start(
        1,
        &[
            "--backup-to",
            &dest_url,
            "--backup-interval",
            "off",
            "--backup-verify-interval",
            "off",
            "--archive-interval",
            "200ms",
            "--backup-full-every",
            "10",
        ],
    );
    let base = c.nodes[0].base_url();
    seed(&base);
    take_backup(&base);
    change(&base, 1);
    let (incremental, m) = take_backup(&base);
    assert_eq!(m.kind, BackupKind::Incremental, "{m:?}");
    change(&base, 2);
    change(&base, 3);
    wait_all_archived(&base);
    let latest = content(&base);

    // Point in time: the archive replays onto the incremental, the newest base.
    let run = cli(&[
        "restore",
        "--node",
        &base,
        "--from",
        &dest_url,
        "--to-latest",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.all_output()
            .contains(&format!("onto backup {incremental}")),
        "{run:?}"
    );
    assert_eq!(content(&base), latest);

    // A brand-new node restores the newest point through the same chain.
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut node = common::Node::new(7, fresh.path(), &["--auto-restore-from", &dest_url]);
    node.start(None);
    node.wait_ready(Duration::from_secs(60));
    assert_eq!(content(&node.base_url()), latest);
    node.stop();
}
