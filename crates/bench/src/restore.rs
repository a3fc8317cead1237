//! `raftlite-bench --restore-db-mib N`: how long a cluster restore takes, and its memory.
//!
//! One run:
//!
//! 1. setup, not measured: an N MiB SQLite file is built locally with the rows of the backup
//!    bench (half random bytes, half words: zstd gets about 1.5x), backed up with
//!    `raftlite_backup::create_backup` (zstd level 3, the server's default, unencrypted) to a
//!    file:// destination, and the file is deleted; the backup is verified as `raftlite backup
//!    verify` does it, timed beside `zstd -d` of its object (reported on the setup line); a
//!    3-node loopback cluster is started from this binary (`--backup-to off`: no scheduled
//!    backup in the middle);
//! 2. the floor, timed in the same run: `zstd -d` of the backup object to a file, then `cp` of
//!    that file to a second location (no fsync: a lower bound); then the durable floor: that
//!    decompressed file copied once per node, the copies in parallel, each followed by `sync`
//!    of the copy (the least disk work of any restore that leaves the file durable everywhere);
//! 3. the restore as `raftlite restore --from DEST --id ID` does it: the backup streamed
//!    (download, decompress, both hashes checked on the way; no local copy) into
//!    `POST /db/load?timeline_id=<chosen>` on the leader with the manifest's sha256 in
//!    `x-raftlite-expect-sha256`; the clock stops when every node's
//!    `/status` shows the chosen timeline and its local `COUNT(*)` the file's rows. Peak RSS of
//!    each server process (VmHWM, reset just before) and of this process (the client side).
//!
//! The report is printed by [`crate::restore_report`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::backupper::long_deadline;
use crate::cluster::Cluster;
use crate::fill::build_source;
use crate::http::{self, get_json};
use crate::proc::{load_average, proc_io, proc_mem, reset_hwm, sample_peaks, DiskIo, ProcMem};
use crate::report::mib_of;
use crate::tools::{create_dir_in, file_url, find_tool, log_tail, logged, run_child};
use crate::tools::{settle_disk, ChildRun};
use crate::waits::DEADLINE;

/// zstd level of the backup restored (the server's default `--backup-level`).
pub const RESTORE_BACKUP_LEVEL: i32 = 3;
/// Nodes of the restored cluster.
pub const RESTORE_NODES: usize = 3;

/// The source database and its backup.
pub struct RestoreSource {
    pub rows: u64,
    pub payload_bytes: u64,
    pub size_bytes: u64,
    pub build: Duration,
    pub backup: Duration,
    pub stored_bytes: u64,
    pub plain_sha256: String,
    /// The backup's data object on disk (what the floor decompresses).
    pub object: PathBuf,
    /// `raftlite backup verify` of it, beside `zstd -d` of its object just before.
    pub verify: Result<VerifyRun, String>,
}

/// A verify of the bench's backup (setup, timed): what `raftlite backup verify` and the
/// scheduled verification do (download, both hashes, decompression to a file that is
/// fsync'd, `integrity_check`), beside the decompression alone (`zstd -d` to a file, no hash,
/// no fsync), measured just before on the same object.
pub struct VerifyRun {
    pub verify: Duration,
    pub zstd: Duration,
}

/// `zstd -d` + `cp`, and the durable variant a cluster restore must at least do.
pub struct RestoreFloor {
    pub zstd: ChildRun,
    pub cp: ChildRun,
    pub wall: Duration,
    /// `zstd -d`, then the file copied and fsync'd once per node, the copies in parallel:
    /// the least disk work of any restore that leaves the file durable on every node.
    pub durable: Option<Duration>,
}

/// One server process around the restore.
pub struct NodeMem {
    pub id: u64,
    pub leader: bool,
    pub rss_before_kib: Option<u64>,
    /// VmHWM after a reset just before the restore (`exact`), else the largest VmRSS sampled.
    pub peak_kib: Option<u64>,
    pub exact: bool,
    /// What the node sent to and fetched from storage during the restore (`/proc/PID/io`).
    pub disk: Option<DiskIo>,
}

/// The measured restore.
pub struct RestoreRun {
    /// The backup's stream done: every byte sent and every check passed.
    pub downloaded: Duration,
    /// `POST /db/load` answered 200 (from the start).
    pub answered: Duration,
    /// Every node serves the restored data (from the start): the figure that counts.
    pub all_serving: Duration,
    /// What the node reported: the restore's own duration, its log index.
    pub cluster_secs: Option<f64>,
    pub index: Option<u64>,
    pub nodes: Vec<NodeMem>,
    /// This process's peak during the restore (the client side: download, decompression,
    /// upload): VmHWM after a reset; `None` when it could not be reset.
    pub client_peak_kib: Option<u64>,
}

/// One floor and the restore measured right after it.
pub struct RestoreRound {
    pub floor: Result<RestoreFloor, String>,
    pub run: RestoreRun,
}

impl RestoreRound {
    pub fn floor_secs(&self) -> Option<f64> {
        self.floor.as_ref().ok().map(|f| f.wall.as_secs_f64())
    }

    pub fn durable_secs(&self) -> Option<f64> {
        self.floor
            .as_ref()
            .ok()
            .and_then(|f| f.durable)
            .map(|d| d.as_secs_f64())
    }

    pub fn wall_secs(&self) -> f64 {
        self.run.all_serving.as_secs_f64()
    }

    pub fn ratio(&self) -> Option<f64> {
        self.floor_secs().map(|f| self.wall_secs() / f.max(1e-9))
    }

    pub fn durable_ratio(&self) -> Option<f64> {
        self.durable_secs().map(|d| self.wall_secs() / d.max(1e-9))
    }
}

pub struct RestoreReport {
    pub load_before: Option<String>,
    pub db_mib: u64,
    pub source: RestoreSource,
    pub rounds: Vec<RestoreRound>,
    pub notes: Vec<String>,
}

/// The steps described at the top of this module, against `server`, under `work`.
pub async fn measure(
    server: &Path,
    work: &Path,
    mib: u64,
    runs: u32,
) -> anyhow::Result<RestoreReport> {
    let load_before = load_average();
    let dest_dir = create_dir_in(work, "backups")?;
    let dest_url = file_url(&dest_dir)?;
    let dest = raftlite_backup::Destination::parse(&dest_url)
        .with_context(|| format!("cannot open {dest_url}"))?;

    eprintln!("bench: building a {mib} MiB database (setup, not measured)");
    let source_path = work.join("source.sqlite");
    let started = Instant::now();
    let (rows, payload_bytes) = {
        let path = source_path.clone();
        tokio::task::spawn_blocking(move || build_source(&path, mib << 20))
            .await
            .context("the build thread failed")??
    };
    let build = started.elapsed();
    let size_bytes = std::fs::metadata(&source_path)
        .with_context(|| format!("cannot read {}", source_path.display()))?
        .len();
    eprintln!(
        "bench: {rows} rows, {:.1} MiB file, built in {:.1} s; backing it up (zstd {RESTORE_BACKUP_LEVEL})",
        mib_of(size_bytes),
        build.as_secs_f64()
    );
    let started = Instant::now();
    let meta = raftlite_backup::BackupMeta {
        cluster_id: "bench-restore".into(),
        node_id: 0,
        timeline: raftlite_backup::TimelineRef {
            id: "bench-source".into(),
            counter: 1,
        },
        log_index: 0,
        log_term: 0,
        data_changed_index: None,
        leader_term: None,
        slot_unix_ms: None,
    };
    let options = raftlite_backup::CreateOptions {
        level: RESTORE_BACKUP_LEVEL,
        encryption: None,
    };
    let manifest = raftlite_backup::create_backup(&source_path, meta, &dest, &options)
        .await
        .context("the backup of the source file failed")?;
    let backup = started.elapsed();
    let id = manifest.id().context("the manifest names no backup id")?;
    let object = dest_dir
        .join(id.cluster_id())
        .join("backups")
        .join(id.set())
        .join(manifest.object_name());
    if !object.is_file() {
        bail!("the backup's data object is not at {}", object.display());
    }
    // Only the backup is restored from; a file less on the disk.
    let _ = std::fs::remove_file(&source_path);
    let verify = measure_verify(&dest, &id, &object, work)
        .await
        .map_err(|e| format!("{e:#}"));
    let source = RestoreSource {
        rows,
        payload_bytes,
        size_bytes,
        build,
        backup,
        stored_bytes: manifest.stored_size,
        plain_sha256: manifest.plain_sha256.clone(),
        object,
        verify,
    };
    eprintln!(
        "bench: backup {id}: {:.1} MiB stored, in {:.1} s; {}",
        mib_of(source.stored_bytes),
        backup.as_secs_f64(),
        verify_text(&source.verify)
    );

    let http = http::client(None)?;
    let mut cluster = Cluster::new(
        server,
        work.join("cluster"),
        vec!["--backup-to".into(), "off".into()],
    );
    eprintln!("bench: starting a {RESTORE_NODES}-node cluster");
    let result = restore_scenario(&mut cluster, &http, work, mib, runs, &dest, &id, &source).await;
    if result.is_err() {
        cluster.print_log_tails();
    }
    let (rounds, notes) = result?;
    Ok(RestoreReport {
        load_before,
        db_mib: mib,
        source,
        rounds,
        notes,
    })
}

/// Runs `runs` rounds on one cluster, each a floor then a restore right after it (a new
/// timeline each), so every restore has a floor measured in the same conditions.
#[allow(clippy::too_many_arguments)]
async fn restore_scenario(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    work: &Path,
    mib: u64,
    runs: u32,
    dest: &raftlite_backup::Destination,
    id: &raftlite_backup::BackupId,
    source: &RestoreSource,
) -> anyhow::Result<(Vec<RestoreRound>, Vec<String>)> {
    let mut notes = Vec::new();
    let leader = cluster.start(http, RESTORE_NODES).await?;
    let leader_index = cluster
        .nodes
        .iter()
        .position(|n| n.url == leader)
        .ok_or_else(|| anyhow!("the leader {leader} is not one of the started nodes"))?;
    let pids = (0..cluster.nodes.len())
        .map(|i| cluster.pid(i))
        .collect::<anyhow::Result<Vec<u32>>>()?;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let floor_dir = create_dir_in(work, "floor")?;
    let mut rounds = Vec::new();
    for round in 1..=runs {
        let label = if runs > 1 {
            format!(" (run {round} of {runs})")
        } else {
            String::new()
        };
        // The last restore's log compaction (a snapshot and a purge on every node) must not
        // run under this floor.
        if let Some(index) = rounds.last().and_then(|k: &RestoreRound| k.run.index) {
            let what = format!("every node's log purged past the last restore (index {index})");
            if let Err(e) = cluster
                .wait_for(&what, || all_purged_to(http, &urls, index))
                .await
            {
                notes.push(format!(
                    "run {round}: {e:#}; its floor may be slowed by that"
                ));
            }
        }
        eprintln!("bench: floor: zstd -d + cp{label}");
        settle_disk().await;
        let floor = restore_floor(&source.object, &floor_dir, long_deadline(mib)).await?;
        match &floor {
            Ok(f) => eprintln!("bench: floor took {:.2} s", f.wall.as_secs_f64()),
            Err(why) => eprintln!("bench: floor skipped: {why}"),
        }

        let timeline_id = format!("{:032x}", rand::random::<u128>());
        eprintln!(
            "bench: restore: a backup streamed into POST /db/load, until every node serves \
             it{label}"
        );
        settle_disk().await;
        let before: Vec<Option<ProcMem>> = pids.iter().map(|&p| proc_mem(p)).collect();
        let io_before: Vec<Option<DiskIo>> = pids.iter().map(|&p| proc_io(p)).collect();
        let exact: Vec<bool> = pids.iter().map(|&p| reset_hwm(p)).collect();
        let me = std::process::id();
        let client_exact = reset_hwm(me);
        let plan = RestorePlan {
            dest,
            id,
            plain_sha256: &source.plain_sha256,
            node: &leader,
            all: &urls,
            timeline_id: &timeline_id,
            rows: source.rows,
            deadline: long_deadline(mib),
        };
        let restore = restore_once(http, &plan);
        let (outcome, sampled) = sample_peaks(&pids, restore).await;
        let after: Vec<Option<ProcMem>> = pids.iter().map(|&p| proc_mem(p)).collect();
        let io_after: Vec<Option<DiskIo>> = pids.iter().map(|&p| proc_io(p)).collect();
        let client_after = proc_mem(me);
        let (downloaded, answered, all_serving, answer) = outcome?;
        eprintln!(
            "bench: all {RESTORE_NODES} nodes served it at {:.2} s",
            all_serving.as_secs_f64()
        );

        let nodes = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let hwm = match (exact[i], after[i]) {
                    (true, Some(m)) => Some(m.hwm_kib),
                    _ => None,
                };
                NodeMem {
                    id: node.id,
                    leader: i == leader_index,
                    rss_before_kib: before[i].map(|m| m.rss_kib),
                    peak_kib: hwm.max(sampled[i]),
                    exact: hwm.is_some(),
                    disk: io_after[i].zip(io_before[i]).map(|(a, b)| a.since(b)),
                }
            })
            .collect();
        let restore = answer.get("restore").cloned().unwrap_or(Value::Null);
        if restore.get("sha256").and_then(Value::as_str) != Some(source.plain_sha256.as_str()) {
            notes.push(format!(
                "run {round}: the cluster restored sha256 {} but the backup's manifest says {}",
                restore.get("sha256").unwrap_or(&Value::Null),
                source.plain_sha256
            ));
        }
        if !client_exact && round == 1 {
            notes.push("VmHWM could not be reset: the client's peak is not reported".into());
        }
        let run = RestoreRun {
            downloaded,
            answered,
            all_serving,
            cluster_secs: restore.get("duration_secs").and_then(Value::as_f64),
            index: restore.get("index").and_then(Value::as_u64),
            nodes,
            client_peak_kib: if client_exact {
                client_after.map(|m| m.hwm_kib)
            } else {
                None
            },
        };
        rounds.push(RestoreRound { floor, run });
    }
    Ok((rounds, notes))
}

/// Whether every node in `urls` reports its log purged up to `index` (the compaction after a
/// restore is done); `Err` names one that does not yet.
async fn all_purged_to(http: &reqwest::Client, urls: &[String], index: u64) -> Result<(), String> {
    for url in urls {
        let purged = get_json(http, &format!("{url}/status"))
            .await
            .ok()
            .and_then(|s| {
                s.pointer("/store/raft/purged_index")
                    .and_then(Value::as_u64)
            });
        if purged.is_none_or(|p| p < index) {
            return Err(format!("{url} has purged up to {purged:?}"));
        }
    }
    Ok(())
}

/// Times `zstd -d` of the backup's object to a file, then a verify of the backup (see
/// [`VerifyRun`]); both leave nothing behind.
async fn measure_verify(
    dest: &raftlite_backup::Destination,
    id: &raftlite_backup::BackupId,
    object: &Path,
    work: &Path,
) -> anyhow::Result<VerifyRun> {
    let Some(zstd) = find_tool("zstd") else {
        bail!("zstd not found in PATH or /usr/bin");
    };
    let dir = work.join("verify");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let plain = dir.join("db.sqlite");
    let log = dir.join("tools.log");
    settle_disk().await;
    let baseline = zstd_decompress(&zstd, object, &plain, &log, DEADLINE).await?;
    let _ = std::fs::remove_file(&plain);
    settle_disk().await;
    let started = Instant::now();
    let verified = raftlite_backup::verify_backup_in(dest, id, None, &dir).await;
    let verify = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    verified.with_context(|| format!("the verify of backup {id} failed"))?;
    Ok(VerifyRun {
        verify,
        zstd: baseline.wall,
    })
}

/// `zstd -d` of `object` into `out` (its output in `log`), timed; an error if it fails.
async fn zstd_decompress(
    zstd: &Path,
    object: &Path,
    out: &Path,
    log: &Path,
    deadline: Duration,
) -> anyhow::Result<ChildRun> {
    let mut cmd = Command::new(zstd);
    cmd.args(["-d", "-q", "-f"]).arg(object).arg("-o").arg(out);
    let run = run_child(logged(cmd, log)?, "zstd -d", deadline).await?;
    if !run.status.success() {
        bail!("zstd -d failed ({}): {}", run.status, log_tail(log, 10));
    }
    Ok(run)
}

pub fn verify_text(verify: &Result<VerifyRun, String>) -> String {
    match verify {
        Ok(v) => format!(
            "verified in {:.2} s ({:.2}x `zstd -d` of it to a file, {:.2} s just before)",
            v.verify.as_secs_f64(),
            v.verify.as_secs_f64() / v.zstd.as_secs_f64().max(1e-9),
            v.zstd.as_secs_f64()
        ),
        Err(why) => format!("verify not measured: {why}"),
    }
}

/// `zstd -d -q OBJECT -o dir/db.sqlite` then `cp dir/db.sqlite dir/copy.sqlite`, timed
/// together; both files are removed afterwards. `Ok(Err(why))` when a tool is missing.
async fn restore_floor(
    object: &Path,
    dir: &Path,
    deadline: Duration,
) -> anyhow::Result<Result<RestoreFloor, String>> {
    let (Some(zstd), Some(cp)) = (find_tool("zstd"), find_tool("cp")) else {
        return Ok(Err("zstd or cp not found in PATH or /usr/bin".into()));
    };
    let (plain, copy) = (dir.join("db.sqlite"), dir.join("copy.sqlite"));
    let log = dir.join("tools.log");
    let start = Instant::now();
    let zstd = zstd_decompress(&zstd, object, &plain, &log, deadline).await?;
    let mut cmd = Command::new(&cp);
    cmd.arg(&plain).arg(&copy);
    let cp = run_child(logged(cmd, &log)?, "cp", deadline).await?;
    let wall = start.elapsed();
    if !cp.status.success() {
        bail!("cp failed ({}): {}", cp.status, log_tail(&log, 10));
    }
    let _ = std::fs::remove_file(&copy);
    let durable = match find_tool("sh") {
        Some(sh) => {
            settle_disk().await;
            let start = Instant::now();
            let copies = (1..=RESTORE_NODES).map(|node| {
                let mut cmd = Command::new(&sh);
                cmd.args(["-c", r#"cp "$1" "$2" && sync "$2""#, "sh"])
                    .arg(&plain)
                    .arg(dir.join(format!("node-{node}.sqlite")));
                logged(cmd, &log).map(|cmd| run_child(cmd, "cp + sync", deadline))
            });
            let runs =
                futures::future::try_join_all(copies.collect::<anyhow::Result<Vec<_>>>()?).await?;
            let copied = start.elapsed();
            for node in 1..=RESTORE_NODES {
                let _ = std::fs::remove_file(dir.join(format!("node-{node}.sqlite")));
            }
            runs.iter()
                .all(|r| r.status.success())
                .then(|| zstd.wall + copied)
        }
        None => None,
    };
    let _ = std::fs::remove_file(&plain);
    Ok(Ok(RestoreFloor {
        zstd,
        cp,
        wall,
        durable,
    }))
}

/// What [`restore_once`] restores, where, and how it knows it is done.
struct RestorePlan<'a> {
    dest: &'a raftlite_backup::Destination,
    id: &'a raftlite_backup::BackupId,
    /// The manifest's sha256 of the database file (the node checks the upload against it).
    plain_sha256: &'a str,
    /// The node that receives `POST /db/load`.
    node: &'a str,
    /// Every node: each must serve the restored data.
    all: &'a [String],
    timeline_id: &'a str,
    /// Rows of `filler` in the restored file.
    rows: u64,
    deadline: Duration,
}

/// The restore, timed from its start: `(downloaded, answered, all serving, the answer)`.
async fn restore_once(
    http: &reqwest::Client,
    plan: &RestorePlan<'_>,
) -> anyhow::Result<(Duration, Duration, Duration, Value)> {
    let RestorePlan {
        dest,
        id,
        plain_sha256,
        node,
        all,
        timeline_id,
        rows,
        deadline,
    } = *plan;
    let start = Instant::now();
    let give_up = start + deadline;
    let backup = raftlite_restore::upload::BackupStream {
        dest: dest.clone(),
        id: id.clone(),
        identity: None,
        plain_sha256: Some(plain_sha256.to_string()),
        chain_scratch: None,
    };
    let (body, feeder) = raftlite_restore::upload::backup_body(
        backup,
        std::sync::Arc::new(raftlite_restore::upload::NoProgress),
    );
    let feeder = tokio::spawn(async move {
        let fed = feeder.await;
        (fed, start.elapsed())
    });
    let url = format!("{node}/db/load?timeline_id={timeline_id}&reason=bench");
    let sent = http
        .post(&url)
        .timeout(deadline)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(raftlite_restore::upload::EXPECT_SHA256_HEADER, plain_sha256)
        .body(body)
        .send()
        .await;
    let (fed, downloaded) = feeder.await.context("the backup stream task failed")?;
    match fed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("streaming backup {id} failed: {e}"),
        Err(e) => bail!("the backup stream task failed: {e}"),
    }
    let resp = sent.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("POST {url}"))?;
    if !status.is_success() {
        bail!("POST {url}: HTTP {status}: {}", text.trim());
    }
    let answered = start.elapsed();
    let answer: Value =
        serde_json::from_str(&text).with_context(|| format!("POST {url}: not JSON: {text}"))?;

    let mut waiting: Vec<&String> = all.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for url in waiting {
            if !serves_restored(http, url, timeline_id, rows).await {
                still.push(url);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= give_up {
            bail!(
                "{} did not serve the restored data within {deadline:?}",
                waiting
                    .iter()
                    .map(|u| u.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((downloaded, answered, start.elapsed(), answer))
}

/// Whether `node`'s `/status` shows `timeline_id` and its local `COUNT(*)` the file's rows.
async fn serves_restored(http: &reqwest::Client, node: &str, timeline_id: &str, rows: u64) -> bool {
    let Ok(status) = get_json(http, &format!("{node}/status")).await else {
        return false;
    };
    if status.pointer("/store/timeline/id").and_then(Value::as_str) != Some(timeline_id) {
        return false;
    }
    let url = format!("{node}/db/query?level=none&q=SELECT%20COUNT(*)%20FROM%20filler");
    let Ok(doc) = get_json(http, &url).await else {
        return false;
    };
    doc.pointer("/results/0/values/0/0").and_then(Value::as_u64) == Some(rows)
}
