//! `POST /backups` against real `raftlite` processes: a file:// destination through a follower
//! with writes running, an S3 destination (the in-process s3s test server) with age
//! encryption, the destination going down and coming back, one backup at a time, a server
//! without `--backup-to`, bad backup settings refusing the start, and secrets (S3 secret key,
//! passphrase) never shown.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use common::{http_get, http_post_raw, wait_for, Cluster, RawResponse};
use raftlite_backup::{verify_backup, BackupId, Destination, Identity, Manifest};
use raftlite_testkit::S3TestServer;
use serde_json::{json, Value};

const S3_URL: &str = "s3://raftlite-test/prefix";
const S3_PREFIX: &str = "prefix";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn post_backup(base: &str) -> RawResponse {
    http_post_raw(&format!("{base}/backups"), "application/json", Vec::new())
        .unwrap_or_else(|e| panic!("POST /backups: {e}"))
}

/// `(id, manifest)` of a 200 answer to `POST /backups`.
fn created(resp: &RawResponse) -> (BackupId, Manifest, Value) {
    assert_eq!(resp.status, 200, "POST /backups: {}", resp.text());
    let body: Value = serde_json::from_slice(&resp.body).expect("JSON body");
    let id: BackupId = body["backup"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup.id: {body}"))
        .parse()
        .expect("a valid backup id");
    let manifest: Manifest =
        serde_json::from_value(body["backup"]["manifest"].clone()).expect("a manifest");
    (id, manifest, body)
}

fn applied_index(status: &Value) -> u64 {
    status["store"]["raft"]["applied_index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no applied_index in {status}"))
}

/// Value of the counter `name` with the label `destination="dest"` in a Prometheus text body.
fn counter(metrics: &str, name: &str, dest: &str) -> Option<f64> {
    let prefix = format!("{name}{{destination=\"{dest}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn metrics_of(base: &str) -> String {
    let (status, body) = http_get(&format!("{base}/metrics")).expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Every `manifest.json` under `dir`.
fn manifests_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "manifest.json") {
                found.push(p);
            }
        }
    }
    found
}

fn scratch_files(data_dir: &Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("snapshots"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".partial") || n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes rows to `base` until `stop`; counts successes, returns the failures.
fn spawn_writer(
    base: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut errors = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let body = json!([["INSERT INTO w(v) VALUES(?)", format!("row {i}")]]);
            match common::execute_at(&base, &body).and_then(|r| common::check_results(&r)) {
                Ok(()) => {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => errors.push(e),
            }
            thread::sleep(Duration::from_millis(5));
        }
        errors
    })
}

/// A table with a few MiB so the copy and upload take a moment.
fn fill(base: &str) {
    let r = common::execute_at(
        base,
        &json!([
            "CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB)",
            "CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT)",
        ]),
    )
    .expect("create tables");
    common::check_results(&r).expect("create tables");
    for _ in 0..4 {
        let r = common::execute_at(
            base,
            &json!([
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
                 INSERT INTO big(data) SELECT randomblob(1024) FROM n"
            ]),
        )
        .expect("fill");
        common::check_results(&r).expect("fill");
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn file_destination_through_a_follower_with_writes_running() {
    let dest_dir = tempfile::Builder::new()
        .prefix("raftlite-backups-")
        .tempdir()
        .expect("temp dir");
    let url = format!("file://{}", dest_dir.path().display());
    // Backups on request only: a scheduled one would change the counts below.
    // No log archive: its own base backup would be one more set than this test counts.
    let c = Cluster::start(
        3,
        &[
            "--backup-to",
            &url,
            "--backup-interval",
            "off",
            "--archive-to",
            "off",
        ],
    );
    let leader = c.wait_leader(Duration::from_secs(20));
    let follower = c.followers(leader)[0];
    let leader_base = c.nodes[leader].base_url();
    let follower_base = c.nodes[follower].base_url();
    fill(&leader_base);

    // ?redirect on a follower: 301 to the leader.
    let r = http_post_raw(
        &format!("{follower_base}/backups?redirect"),
        "application/json",
        Vec::new(),
    )
    .expect("POST ?redirect");
    assert_eq!(r.status, 301, "{}", r.text());
    let location = r.header("location").unwrap_or_default().to_string();
    assert!(
        location.starts_with(&leader_base) && location.contains("/backups"),
        "{location}"
    );

    // A backup through the follower while writes keep going.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let writer = spawn_writer(leader_base.clone(), stop.clone(), ok.clone());
    wait_for(
        || (ok.load(Ordering::SeqCst) >= 5).then_some(()),
        Duration::from_secs(10),
        "writes to start",
    );
    let before = applied_index(&c.nodes[leader].status().expect("status"));
    let resp = post_backup(&follower_base);
    let after = applied_index(&c.nodes[leader].status().expect("status"));
    let (id, manifest, body) = created(&resp);
    let writes_before = ok.load(Ordering::SeqCst);
    wait_for(
        || (ok.load(Ordering::SeqCst) >= writes_before + 5).then_some(()),
        Duration::from_secs(10),
        "writes to continue after the backup",
    );
    stop.store(true, Ordering::SeqCst);
    let errors = writer.join().expect("writer thread");
    assert!(
        errors.is_empty(),
        "writes failed during the backup: {errors:?}"
    );

    let leader_status = c.nodes[leader].status().expect("status");
    assert_eq!(manifest.node_id, c.nodes[leader].id, "the leader takes it");
    assert_eq!(
        manifest.timeline.id, leader_status["store"]["timeline"]["id"],
        "{leader_status}"
    );
    assert_eq!(
        Some(manifest.timeline.counter),
        leader_status["store"]["timeline"]["counter"].as_u64()
    );
    assert!(
        before <= manifest.log_index && manifest.log_index <= after,
        "backup at index {} outside [{before}, {after}]",
        manifest.log_index
    );
    assert_eq!(body["backup"]["destination"], url.as_str());
    assert!(manifest.encryption.is_none());

    // On disk: <dir>/<cluster>/backups/<set>/{db.sqlite.zst, manifest.json}.
    let set_dir = dest_dir
        .path()
        .join(id.cluster_id())
        .join("backups")
        .join(id.set());
    assert!(
        set_dir.join("manifest.json").is_file(),
        "{}",
        set_dir.display()
    );
    assert!(set_dir.join("db.sqlite.zst").is_file());
    let dest = Destination::parse(&url).expect("destination");
    let report = runtime()
        .block_on(verify_backup(&dest, &id, None))
        .unwrap_or_else(|e| panic!("verify {id}: {e}"));
    assert_eq!(report.manifest, manifest);
    assert_eq!(
        report.raftlite_meta.applied.map(|a| a.index),
        Some(manifest.log_index)
    );

    // Quiet now: a second backup is exactly at the leader's applied index and term.
    let resp = post_backup(&follower_base);
    let (id2, manifest2, _) = created(&resp);
    assert_ne!(id2, id);
    let leader_status = c.nodes[leader].status().expect("status");
    assert_eq!(manifest2.log_index, applied_index(&leader_status));
    assert_eq!(
        Some(manifest2.log_term),
        leader_status["store"]["raft"]["term"].as_u64()
    );
    assert!(manifest2.log_index > manifest.log_index);
    assert_eq!(manifests_under(dest_dir.path()).len(), 2);

    // /status and /metrics of the leader tell about it; no scratch file is left.
    let backup = &leader_status["backup"];
    assert_eq!(backup["destination"], url.as_str(), "{leader_status}");
    assert_eq!(backup["last"]["outcome"], "success", "{backup}");
    assert_eq!(backup["last"]["id"], id2.to_string().as_str(), "{backup}");
    assert_eq!(backup["in_progress"], false);
    let metrics = metrics_of(&leader_base);
    assert_eq!(
        counter(&metrics, "raftlite_backup_success_total", &url),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("raftlite_backup_last_size_bytes"),
        "{metrics}"
    );
    assert!(metrics.contains("raftlite_backup_last_duration_seconds"));
    assert!(metrics.contains("raftlite_backup_last_success_timestamp_seconds"));
    let left = scratch_files(&c.nodes[leader].data_dir);
    assert!(left.is_empty(), "scratch files left behind: {left:?}");
}

#[test]
fn s3_destination_encrypted_down_and_back_and_no_secret_shown() {
    let s3 = S3TestServer::start().expect("S3 test server");
    let key = age::x25519::Identity::generate();
    let recipient = key.to_public().to_string();
    let c = Cluster::start_with_envs(
        3,
        &[
            "--backup-to",
            S3_URL,
            "--backup-recipient",
            &recipient,
            "--backup-interval",
            "off",
        ],
        &s3.env_vars(),
    );
    let leader = c.wait_leader(Duration::from_secs(20));
    let follower = c.followers(leader)[0];
    let leader_base = c.nodes[leader].base_url();
    let follower_base = c.nodes[follower].base_url();
    fill(&leader_base);
    let mut bodies: Vec<String> = Vec::new();

    // Through a follower, encrypted to the recipient.
    let resp = post_backup(&follower_base);
    bodies.push(resp.text());
    let (id, manifest, _) = created(&resp);
    let leader_status = c.nodes[leader].status().expect("status");
    assert_eq!(manifest.node_id, c.nodes[leader].id);
    assert_eq!(
        manifest.timeline.id,
        leader_status["store"]["timeline"]["id"]
    );
    assert_eq!(manifest.log_index, applied_index(&leader_status));
    let info = manifest.encryption.clone().expect("encrypted");
    assert_eq!(info.scheme.to_string(), "age-x25519");
    assert_eq!(
        info.recipient_fingerprints,
        vec![raftlite_backup::recipient_fingerprint(&recipient)]
    );
    let set = format!("{S3_PREFIX}/{}/backups/{}", id.cluster_id(), id.set());
    assert!(s3.object_path(&format!("{set}/manifest.json")).is_file());
    assert!(s3
        .object_path(&format!("{set}/db.sqlite.zst.age"))
        .is_file());
    let dest =
        Destination::parse_with_options(S3_URL, s3.object_store_options()).expect("S3 destination");
    let identity = Identity::from_identity_file(key.to_string().expose_secret()).expect("identity");
    let rt = runtime();
    let report = rt
        .block_on(verify_backup(&dest, &id, Some(&identity)))
        .unwrap_or_else(|e| panic!("verify {id}: {e}"));
    assert_eq!(report.manifest, manifest);

    // The destination goes down: 503 naming it, a failure in the metrics, no manifest; and
    // a second request meanwhile gets 409.
    let manifests_before = manifests_under(s3.root_dir()).len();
    let success_before = counter(
        &metrics_of(&leader_base),
        "raftlite_backup_success_total",
        S3_URL,
    )
    .expect("success counter");
    s3.set_unavailable(true);
    let first = {
        let base = follower_base.clone();
        thread::spawn(move || post_backup(&base))
    };
    wait_for(
        || {
            let s = c.nodes[leader].status().ok()?;
            (s["backup"]["in_progress"] == true).then_some(())
        },
        Duration::from_secs(10),
        "the leader's backup to be in progress",
    );
    let busy = post_backup(&leader_base);
    bodies.push(busy.text());
    assert_eq!(busy.status, 409, "{}", busy.text());
    assert!(
        busy.text().contains("already in progress"),
        "{}",
        busy.text()
    );
    let down = first.join().expect("first request");
    bodies.push(down.text());
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(down.text().contains(S3_URL), "{}", down.text());
    assert!(down.header("retry-after").is_some());
    let metrics = metrics_of(&leader_base);
    assert!(
        counter(&metrics, "raftlite_backup_failure_total", S3_URL).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    let status = c.nodes[leader].status().expect("status");
    assert_eq!(status["backup"]["last"]["outcome"], "failure", "{status}");
    assert_eq!(
        status["backup"]["last_success"]["id"],
        id.to_string().as_str()
    );
    s3.set_unavailable(false);
    assert_eq!(
        manifests_under(s3.root_dir()).len(),
        manifests_before,
        "no manifest may be written while the destination is down"
    );

    // Back up: the next one works and is counted.
    let resp = post_backup(&follower_base);
    bodies.push(resp.text());
    let (id2, _, _) = created(&resp);
    assert_ne!(id2, id);
    assert_eq!(manifests_under(s3.root_dir()).len(), manifests_before + 1);
    let metrics = metrics_of(&leader_base);
    assert_eq!(
        counter(&metrics, "raftlite_backup_success_total", S3_URL),
        Some(success_before + 1.0),
        "{metrics}"
    );

    // The secret key is nowhere to be seen.
    let secret = s3.secret_key();
    for node in &c.nodes {
        for path in ["/status", "/metrics", "/nodes"] {
            let (_, body) = http_get(&node.url(path)).expect("GET");
            bodies.push(body);
        }
        let log = std::fs::read_to_string(node.log_path()).expect("node log");
        assert!(
            !log.contains(secret),
            "node {} log shows the S3 secret key",
            node.id
        );
        assert!(
            log.contains("backup"),
            "node {} logs no backup line",
            node.id
        );
    }
    for b in &bodies {
        assert!(
            !b.contains(secret),
            "a response shows the S3 secret key: {b}"
        );
    }
}

#[test]
fn passphrase_encryption_keeps_the_passphrase_secret() {
    let dest_dir = tempfile::Builder::new()
        .prefix("raftlite-backups-")
        .tempdir()
        .expect("temp dir");
    let url = format!("file://{}", dest_dir.path().display());
    let passphrase = "correct-horse-battery-staple-7f3a";
    let envs = [(
        "RAFTLITE_TEST_BACKUP_PASS".to_string(),
        passphrase.to_string(),
    )];
    let c = Cluster::start_with_envs(
        1,
        &[
            "--backup-interval",
            "off",
            "--backup-to",
            &url,
            "--backup-passphrase-env",
            "RAFTLITE_TEST_BACKUP_PASS",
            "--backup-level",
            "1",
        ],
        &envs,
    );
    let base = c.nodes[0].base_url();
    let r = common::execute_at(
        &base,
        &json!(["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]),
    )
    .expect("write");
    common::check_results(&r).expect("write");
    let resp = post_backup(&base);
    let (id, manifest, _) = created(&resp);
    assert_eq!(
        manifest.encryption.as_ref().map(|e| e.scheme.to_string()),
        Some("age-scrypt".to_string())
    );
    assert_eq!(manifest.compression.level, 1);
    let dest = Destination::parse(&url).expect("destination");
    let identity = Identity::passphrase(passphrase).expect("identity");
    runtime()
        .block_on(verify_backup(&dest, &id, Some(&identity)))
        .unwrap_or_else(|e| panic!("verify {id}: {e}"));
    let (_, status) = http_get(&c.nodes[0].url("/status")).expect("status");
    let status_json: Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status_json["backup"]["encryption"], "age-scrypt");
    let metrics = metrics_of(&base);
    let log = std::fs::read_to_string(c.nodes[0].log_path()).expect("log");
    for (what, text) in [
        ("response", resp.text()),
        ("/status", status),
        ("/metrics", metrics),
        ("log", log),
    ] {
        assert!(!text.contains(passphrase), "{what} shows the passphrase");
    }
}

#[test]
fn without_backup_to_the_request_is_refused() {
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    let resp = post_backup(&base);
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("--backup-to"), "{}", resp.text());
    let status = c.nodes[0].status().expect("status");
    assert_eq!(status["backup"]["destination"], Value::Null, "{status}");
}

/// Runs `raftlite serve` with `args` and an empty data dir; it must exit (not serve) within
/// 20 s with an error mentioning every string in `expect`. Returns the output.
fn refuses_to_start(args: &[&str], envs: &[(&str, &str)], expect: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = format!("127.0.0.1:{}", common::free_port());
    let raft = format!("127.0.0.1:{}", common::free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftlite"));
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--http-addr", &http, "--raft-addr", &raft])
        .args(args)
        .env_remove("RAFTLITE_TEST_UNSET_PASSPHRASE")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn raftlite");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => break,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("raftlite serve {args:?} did not refuse to start");
            }
            None => thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success(), "{args:?} exited successfully");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for e in expect {
        assert!(text.contains(e), "{args:?}: expected {e:?} in:\n{text}");
    }
    assert!(
        !dir.path().join("data").join("raft").exists(),
        "nothing may be written before the settings are checked"
    );
    text
}

#[test]
fn bad_backup_settings_refuse_the_start() {
    let text = refuses_to_start(
        &["--backup-to", "s3://AKIDEXAMPLE:hunter2secret@bucket/p"],
        &[],
        &["refusing to start", "invalid backup destination"],
    );
    assert!(!text.contains("hunter2secret"), "{text}");
    refuses_to_start(
        &["--backup-to", "ftp://host/dir"],
        &[],
        &["unsupported scheme"],
    );
    refuses_to_start(
        &[
            "--backup-to",
            "file:///tmp/x",
            "--backup-recipient",
            "age1notakey",
        ],
        &[],
        &["invalid age recipient"],
    );
    refuses_to_start(
        &[
            "--backup-to",
            "file:///tmp/x",
            "--backup-passphrase-env",
            "RAFTLITE_TEST_UNSET_PASSPHRASE",
        ],
        &[],
        &["RAFTLITE_TEST_UNSET_PASSPHRASE", "not set"],
    );
    refuses_to_start(
        &["--backup-to", "file:///tmp/x"],
        &[("RAFTLITE_BACKUP_MAX_WAL_MIB", "lots")],
        &["RAFTLITE_BACKUP_MAX_WAL_MIB", "whole number of MiB"],
    );
}
