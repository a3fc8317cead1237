//! `raftlite-bench --backup-db-mib N`: backup time, memory and the writes' slowdown (issue 4).
//!
//! One run, one single-node cluster (started from the server binary with
//! `--backup-to file://...`):
//!
//! 1. setup, not measured: the database is filled to N MiB through `POST /db/execute` with
//!    batched rows of text and blobs that are half random bytes, half words (zstd has real work
//!    and gets about 1.5x, not 100x), then copied with `GET /db/backup`;
//! 2. the shell baseline on that copy: `sqlite3 copy ".backup tmp"` then `zstd -1 -T2 tmp`;
//! 3. raftlite's backup at zstd level 1 through `POST /backups` (or, where the server has no
//!    such endpoint yet, `raftlite backup create` as a child process), unencrypted, then after a
//!    restart with `--backup-recipient` encrypted to a fresh age X25519 key: wall time and the
//!    peak RSS of the process doing the work;
//! 4. single-row inserts/s of 16 clients without a backup, then while one runs.
//!
//! The report is printed by [`crate::backup_report`].

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::backupper::{
    backup_bench_setup, long_deadline, start_filled, BackupPath, BackupRun, Backupper,
    BACKUP_BENCH_CLIENTS, BACKUP_LEVEL,
};
use crate::cluster::Cluster;
use crate::http::{count_rows, download_db};
use crate::proc::load_average;
use crate::report::mib_of;
use crate::tools::{create_dir_in, file_name, find_tool, log_tail, logged, run_child};
use crate::tools::{settle_disk, ChildRun};
use crate::writers::{join_writers, spawn_writers, window_stats, Stats, WARMUP};

/// The database built for the run.
pub struct DbInfo {
    pub rows: u64,
    /// Text and blob bytes inserted.
    pub payload_bytes: u64,
    /// Size of the consistent copy taken with `GET /db/backup`: what every backup reads.
    pub size_bytes: u64,
    pub build: Duration,
}

/// `sqlite3 .backup` + `zstd -1 -T2` on the copy.
pub struct Baseline {
    pub sqlite: ChildRun,
    pub zstd: ChildRun,
    pub wall: Duration,
    pub out_bytes: u64,
}

/// One throughput window: [`Stats`] of the inserts inside it, and every insert acknowledged
/// at any time (for the `COUNT(*)` check).
pub struct WriteWindow {
    pub stats: Stats,
    pub acked_total: u64,
    /// The backup that ran during the window, if any.
    pub backup: Option<BackupRun>,
}

pub struct BackupReport {
    /// `/proc/loadavg` before the node started: other work on the machine skews every figure.
    pub load_before: Option<String>,
    pub db_mib: u64,
    pub db: DbInfo,
    pub baseline: Result<Baseline, String>,
    pub path: BackupPath,
    pub backups: Vec<BackupRun>,
    pub idle: WriteWindow,
    pub during: WriteWindow,
    /// `SELECT COUNT(*) FROM bench` and the inserts acknowledged in both windows.
    pub check: (u64, u64),
    pub notes: Vec<String>,
}

/// The steps described at the top of this module, against `server`, under `work`.
pub async fn measure(
    server: &Path,
    work: &Path,
    mib: u64,
    window: Duration,
) -> anyhow::Result<BackupReport> {
    let (http, mut cluster, mut backupper) = backup_bench_setup(server, work, mib)?;
    let result = backup_scenario(&mut cluster, &mut backupper, &http, work, mib, window).await;
    if result.is_err() {
        cluster.print_log_tails();
    }
    result
}

async fn backup_scenario(
    cluster: &mut Cluster,
    backupper: &mut Backupper,
    http: &reqwest::Client,
    work: &Path,
    mib: u64,
    window: Duration,
) -> anyhow::Result<BackupReport> {
    let mut notes = Vec::new();
    let load_before = load_average();
    let (leader, rows, payload_bytes, build) = start_filled(cluster, http, mib, work).await?;
    let baseline_dir = create_dir_in(work, "baseline")?;
    let copy = baseline_dir.join("copy.sqlite");
    let size_bytes = download_db(http, &leader, &copy, long_deadline(mib)).await?;
    let db = DbInfo {
        rows,
        payload_bytes,
        size_bytes,
        build,
    };
    eprintln!(
        "bench: {rows} rows, {:.1} MiB database, built in {:.1} s",
        mib_of(size_bytes),
        build.as_secs_f64()
    );

    eprintln!("bench: shell baseline: sqlite3 .backup + zstd -1 -T2");
    settle_disk().await;
    let baseline = shell_baseline(&copy, &baseline_dir, long_deadline(mib)).await?;
    match &baseline {
        Ok(b) => eprintln!("bench: shell baseline took {:.2} s", b.wall.as_secs_f64()),
        Err(why) => eprintln!("bench: shell baseline skipped: {why}"),
    }
    // Only the baseline reads the copy; a 1 GiB file less on the disk.
    let _ = std::fs::remove_file(&copy);

    let server = cluster.pid(0)?;
    let mut backups = Vec::new();
    eprintln!("bench: raftlite backup, zstd {BACKUP_LEVEL}, unencrypted");
    settle_disk().await;
    let run = backupper.take(http, &leader, server, "unencrypted").await?;
    eprintln!("bench: took {:.2} s", run.wall.as_secs_f64());
    backups.push(run);

    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    eprintln!("bench: restarting the node with --backup-recipient {recipient}");
    cluster
        .extra_args
        .extend(["--backup-recipient".to_string(), recipient.clone()]);
    backupper.recipient = Some(recipient);
    cluster.restart(http, 0).await?;
    let server = cluster.pid(0)?;
    eprintln!("bench: raftlite backup, zstd {BACKUP_LEVEL}, age X25519");
    settle_disk().await;
    let run = backupper.take(http, &leader, server, "age X25519").await?;
    eprintln!("bench: took {:.2} s", run.wall.as_secs_f64());
    backups.push(run);

    eprintln!("bench: {BACKUP_BENCH_CLIENTS} clients inserting for {window:?}, no backup");
    settle_disk().await;
    let idle = write_window(http, &leader, window, std::future::ready(Ok(None))).await?;
    eprintln!("bench: {:.1} inserts/s", idle.stats.per_sec());
    eprintln!("bench: {BACKUP_BENCH_CLIENTS} clients inserting while a backup (age X25519) runs");
    let during_backup = async {
        backupper
            .take(http, &leader, server, "age X25519, under writes")
            .await
            .map(Some)
    };
    settle_disk().await;
    let during = write_window(http, &leader, window, during_backup).await?;
    eprintln!(
        "bench: {:.1} inserts/s over {:.2} s of overlap",
        during.stats.per_sec(),
        during.stats.window.as_secs_f64()
    );
    let count = count_rows(http, &leader).await?;
    let acked = idle.acked_total + during.acked_total;

    for run in backups.iter().chain(during.backup.as_ref()) {
        if run.manifest.level != Some(i64::from(BACKUP_LEVEL)) {
            notes.push(format!(
                "{}: the manifest says zstd level {:?}, not {BACKUP_LEVEL}",
                run.label, run.manifest.level
            ));
        }
        let expected = if run.encrypted { "age-x25519" } else { "none" };
        if run.manifest.encryption != expected {
            notes.push(format!(
                "{}: the manifest says encryption {:?}, expected {expected:?}",
                run.label, run.manifest.encryption
            ));
        }
        if run.manifest.plain_size < size_bytes {
            notes.push(format!(
                "{}: backed up {} bytes, less than the {size_bytes} of the database",
                run.label, run.manifest.plain_size
            ));
        }
    }
    if let Some(run) = &during.backup {
        if run.wall < window {
            notes.push(format!(
                "the backup under writes finished after {:.2} s, before the {:.0} s window \
                 ended: the during-backup figure covers only that overlap",
                run.wall.as_secs_f64(),
                window.as_secs_f64()
            ));
        }
    }
    Ok(BackupReport {
        load_before,
        db_mib: mib,
        db,
        baseline,
        path: backupper.path.clone(),
        backups,
        idle,
        during,
        check: (count, acked),
        notes,
    })
}

/// `sqlite3 copy ".backup tmp"` then `zstd -1 -T2 tmp -o out`, timed together. `Ok(Err(why))`
/// when a tool is missing: the run goes on without a baseline.
async fn shell_baseline(
    copy: &Path,
    dir: &Path,
    deadline: Duration,
) -> anyhow::Result<Result<Baseline, String>> {
    let (Some(sqlite3), Some(zstd)) = (find_tool("sqlite3"), find_tool("zstd")) else {
        let missing: Vec<&str> = [
            ("sqlite3", find_tool("sqlite3")),
            ("zstd", find_tool("zstd")),
        ]
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(name, _)| *name)
        .collect();
        return Ok(Err(format!(
            "{} not found in PATH or /usr/bin",
            missing.join(" and ")
        )));
    };
    let (tmp, out) = (dir.join("backup.sqlite"), dir.join("backup.sqlite.zst"));
    let log = dir.join("tools.log");
    let start = Instant::now();
    let mut cmd = Command::new(&sqlite3);
    // Relative names: no quoting of paths inside the dot-command.
    cmd.current_dir(dir)
        .arg(copy)
        .arg(format!(".backup {}", file_name(&tmp)));
    let sqlite = run_child(logged(cmd, &log)?, "sqlite3 .backup", deadline).await?;
    if !sqlite.status.success() {
        bail!(
            "sqlite3 .backup failed ({}): {}",
            sqlite.status,
            log_tail(&log, 10)
        );
    }
    let mut cmd = Command::new(&zstd);
    cmd.current_dir(dir)
        .args(["-1", "-T2", "-q", "-f"])
        .arg(file_name(&tmp))
        .arg("-o")
        .arg(file_name(&out));
    let zstd = run_child(logged(cmd, &log)?, "zstd -1 -T2", deadline).await?;
    let wall = start.elapsed();
    if !zstd.status.success() {
        bail!("zstd failed ({}): {}", zstd.status, log_tail(&log, 10));
    }
    let out_bytes = std::fs::metadata(&out)
        .with_context(|| format!("zstd wrote no {}", out.display()))?
        .len();
    for file in [&tmp, &out] {
        let _ = std::fs::remove_file(file);
    }
    Ok(Ok(Baseline {
        sqlite,
        zstd,
        wall,
        out_bytes,
    }))
}

/// [`BACKUP_BENCH_CLIENTS`] clients insert single rows for [`WARMUP`] then `window`. `backup` is
/// started when the warm-up ends; when it yields a run, only the inserts inside the overlap of
/// the window and the backup count (the backup is waited for even past the window).
async fn write_window<F>(
    http: &reqwest::Client,
    leader: &str,
    window: Duration,
    backup: F,
) -> anyhow::Result<WriteWindow>
where
    F: std::future::Future<Output = anyhow::Result<Option<BackupRun>>>,
{
    let from = Instant::now() + WARMUP;
    let end = from + window;
    let writers = spawn_writers(http, leader, BACKUP_BENCH_CLIENTS, move |now| now >= end);
    tokio::time::sleep_until(from.into()).await;
    let backup = backup.await?;
    let until = match &backup {
        Some(_) => Instant::now().min(end),
        None => end,
    };
    let samples = join_writers(writers).await?;
    let (stats, acked_total) = window_stats(samples, from, until);
    stats.print_failures("bench: ");
    Ok(WriteWindow {
        stats,
        acked_total,
        backup,
    })
}
