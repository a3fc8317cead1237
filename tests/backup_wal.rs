//! A backup under writes keeps the WAL bounded (issue 16, defect 6): the backup pins the
//! database file with a read transaction, which keeps checkpoints from completing, so the WAL
//! grew for as long as the (paced) upload lasted. Now, once the WAL passes
//! `RAFTLITE_BACKUP_MAX_WAL_MIB`, the rest of the file is copied locally and the pin released.
//! The backup is slowed down with `RAFTLITE_BACKUP_BUSY_PACE_MIB` so that it lasts several
//! seconds on a small database; the WAL is sampled throughout, and the backup must still verify
//! and hold exactly the rows of its log index.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_for, Cluster};
use raftlite_backup::{download_backup, BackupId, Destination, Manifest};
use serde_json::{json, Value};

/// The WAL limit the node is given, in MiB.
const MAX_WAL_MIB: u64 = 6;
/// The backup's read rate under writes, in MiB/s: the database takes 8 s or more.
const PACE_MIB: u64 = 2;
/// What the test allows the WAL to reach: the limit, plus as much again for the writes made
/// while the rest of the file is copied and for the sampling interval of the server (200 ms).
const WAL_BOUND_BYTES: u64 = (2 * MAX_WAL_MIB) << 20;
/// Size of the database before the backup.
const DB_MIB: u64 = 16;
/// Concurrent writers; each insert adds a 16 KiB blob, so the WAL grows quickly.
const WRITERS: usize = 8;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Fills `big` with `DB_MIB` MiB in transactions of 1 MiB: a larger transaction would leave a
/// WAL file of its own size behind before the backup starts.
fn fill(base: &str) {
    let r = common::execute_at(
        base,
        &json!([
            "CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB)",
            "CREATE TABLE w(id INTEGER PRIMARY KEY, writer INTEGER, seq INTEGER, data BLOB)",
        ]),
    )
    .expect("create tables");
    common::check_results(&r).expect("create tables");
    for _ in 0..DB_MIB {
        let r = common::execute_at(
            base,
            &json!([
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 16) \
                 INSERT INTO big(data) SELECT randomblob(65536) FROM n"
            ]),
        )
        .expect("fill");
        common::check_results(&r).expect("fill");
    }
}

/// Acknowledged inserts: `(writer, seq)` -> the log index that applied it.
type Acked = Arc<Mutex<BTreeMap<(u64, u64), u64>>>;

/// Inserts rows `(writer, seq, 16 KiB blob)` until `stop`, recording each acknowledged one
/// with its `raft_index`; returns the failures.
fn spawn_writer(
    base: String,
    writer: u64,
    stop: Arc<AtomicBool>,
    acked: Acked,
    count: Arc<AtomicU64>,
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let url = format!("{base}/db/execute?raft_index");
        let mut errors = Vec::new();
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            seq += 1;
            let body = json!([[
                "INSERT INTO w(writer, seq, data) VALUES(?, ?, randomblob(16384))",
                writer,
                seq
            ]]);
            let outcome = common::http_post(&url, body.to_string()).and_then(|(status, text)| {
                let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                if status != 200 {
                    return Err(format!("HTTP {status}: {text}"));
                }
                common::check_results(&doc)?;
                doc["raft_index"]
                    .as_u64()
                    .ok_or_else(|| format!("no raft_index in {doc}"))
            });
            match outcome {
                Ok(index) => {
                    acked.lock().expect("acked").insert((writer, seq), index);
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    })
}

fn wal_len(data_dir: &Path) -> u64 {
    std::fs::metadata(data_dir.join("db.sqlite-wal")).map_or(0, |m| m.len())
}

#[test]
fn a_backup_under_writes_keeps_the_wal_bounded_and_holds_exactly_its_index() {
    let dest_dir = tempfile::Builder::new()
        .prefix("raftlite-backups-")
        .tempdir()
        .expect("temp dir");
    let url = format!("file://{}", dest_dir.path().display());
    let envs = [
        (
            "RAFTLITE_BACKUP_MAX_WAL_MIB".to_string(),
            MAX_WAL_MIB.to_string(),
        ),
        (
            "RAFTLITE_BACKUP_BUSY_PACE_MIB".to_string(),
            PACE_MIB.to_string(),
        ),
    ];
    let c = Cluster::start_with_envs(
        1,
        &[
            "--backup-to",
            &url,
            "--backup-interval",
            "off",
            // No log archive: its base backup at start would run while the table fills.
            "--archive-to",
            "off",
            "--snapshot-threshold",
            "1000000",
        ],
        &envs,
    );
    let leader = c.wait_leader(Duration::from_secs(20));
    let base = c.nodes[leader].base_url();
    let data_dir = c.nodes[leader].data_dir.clone();
    fill(&base);
    let wal_before = wal_len(&data_dir);
    assert!(
        wal_before < MAX_WAL_MIB << 20,
        "the WAL is {wal_before} bytes before the backup, already past the limit"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let count = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS as u64)
        .map(|w| spawn_writer(base.clone(), w, stop.clone(), acked.clone(), count.clone()))
        .collect();
    wait_for(
        || (count.load(Ordering::SeqCst) >= 20).then_some(()),
        Duration::from_secs(20),
        "writes to start",
    );

    // The WAL is watched from a thread of its own while POST /backups runs.
    let backup_done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, data_dir) = (backup_done.clone(), data_dir.clone());
        thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(wal_len(&data_dir));
                thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let started = Instant::now();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client");
    let resp = client
        .post(format!("{base}/backups"))
        .send()
        .expect("POST /backups");
    let backup_secs = started.elapsed().as_secs_f64();
    backup_done.store(true, Ordering::SeqCst);
    let status = resp.status().as_u16();
    let body: Value = resp.json().expect("JSON answer");
    let peak = sampler.join().expect("sampler thread");
    let writes_during = count.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let mut errors = Vec::new();
    for w in writers {
        errors.extend(w.join().expect("writer thread"));
    }
    assert_eq!(status, 200, "POST /backups: {body}");
    assert!(errors.is_empty(), "writes failed: {errors:?}");
    eprintln!(
        "backup took {backup_secs:.1} s; WAL {wal_before} bytes before, peak {peak} bytes; \
         {writes_during} writes acknowledged by its end"
    );
    assert!(
        backup_secs >= 3.0,
        "the backup took only {backup_secs:.1} s: too short to show the WAL growing"
    );
    assert!(
        peak <= WAL_BOUND_BYTES,
        "the WAL reached {peak} bytes during the backup, past {WAL_BOUND_BYTES} (limit \
         {MAX_WAL_MIB} MiB)"
    );
    let log = std::fs::read_to_string(c.nodes[leader].log_path()).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("backup")) {
        eprintln!("{line}");
    }
    assert!(
        log.contains("the backup's source was released"),
        "the backup never let go of its pinned file"
    );

    // The backup verifies (hashes, integrity_check, meta) and holds exactly the acknowledged
    // rows at or below its index.
    let id: BackupId = body["backup"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no backup.id: {body}"))
        .parse()
        .expect("backup id");
    let manifest: Manifest =
        serde_json::from_value(body["backup"]["manifest"].clone()).expect("manifest");
    let dest = Destination::parse(&url).expect("destination");
    let work = tempfile::tempdir().expect("temp dir");
    let restored = work.path().join("db.sqlite");
    let report = runtime()
        .block_on(download_backup(&dest, &id, None, &restored))
        .unwrap_or_else(|e| panic!("verify {id}: {e}"));
    assert_eq!(
        report.raftlite_meta.applied.map(|a| a.index),
        Some(manifest.log_index)
    );
    let conn = rusqlite::Connection::open(&restored).expect("open the backup");
    let mut stmt = conn.prepare("SELECT writer, seq FROM w").expect("prepare");
    let rows: std::collections::BTreeSet<(u64, u64)> = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let acked = acked.lock().expect("acked");
    let expected: std::collections::BTreeSet<(u64, u64)> = acked
        .iter()
        .filter(|(_, &index)| index <= manifest.log_index)
        .map(|(&key, _)| key)
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < acked.len(),
        "the backup should fall between writes: {} of {} acknowledged rows at or below index {}",
        expected.len(),
        acked.len(),
        manifest.log_index
    );
    assert_eq!(
        rows, expected,
        "the backup at index {} does not hold exactly the rows acknowledged at or below it",
        manifest.log_index
    );
    let big: i64 = conn
        .query_row("SELECT COUNT(*) FROM big", [], |r| r.get(0))
        .expect("count big");
    assert_eq!(big as u64, DB_MIB * 16);
}
