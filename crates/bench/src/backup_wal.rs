//! `raftlite-bench --backup-wal-db-mib N`: the WAL during a backup under writes (issue 16).
//!
//! One single-node cluster (`--backup-to file://...`, zstd 1, no Raft snapshots), filled to N
//! MiB as for `--backup-db-mib` (setup, not measured); then [`BACKUP_BENCH_CLIENTS`] clients
//! insert single rows for `--duration-secs` without a backup (the baseline), and then again
//! while one `POST /backups` runs, as the scheduler would start it, until it answers.
//! Throughout, the size of `db.sqlite-wal` is sampled every [`WAL_SAMPLE`]: a backup that keeps
//! checkpoints from completing shows as a WAL that grows for as long as the backup lasts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::backupper::{
    backup_bench_setup, start_filled, BackupPath, BackupRun, Backupper, BACKUP_BENCH_CLIENTS,
    TARGET_WRITE_RATIO,
};
use crate::cluster::Cluster;
use crate::compare::Figure;
use crate::http::count_rows;
use crate::proc::load_average;
use crate::report::{cores, mib_of, opt, round2, VERSION};
use crate::tools::settle_disk;
use crate::writers::{join_writers, spawn_writers, window_stats, Stats, WARMUP};
use crate::BenchArgs;

/// How often the WAL's size is looked at.
const WAL_SAMPLE: Duration = Duration::from_millis(50);

/// One window of inserts with the WAL watched.
pub struct WalWindow {
    stats: Stats,
    acked_total: u64,
    wal_at_start: u64,
    wal_peak: u64,
    wal_at_end: u64,
    /// The largest size seen in each second of the window, for the report's timeline.
    wal_per_second: Vec<u64>,
}

pub struct WalReport {
    load_before: Option<String>,
    db_mib: u64,
    rows: u64,
    db_bytes: u64,
    build: Duration,
    baseline: WalWindow,
    during: WalWindow,
    backup: BackupRun,
    /// `SELECT COUNT(*) FROM bench` and the inserts acknowledged in both windows.
    pub check: (u64, u64),
}

/// The steps described at the top of this module, against `server`, under `work`.
pub async fn measure(
    server: &Path,
    work: &Path,
    mib: u64,
    window: Duration,
) -> anyhow::Result<WalReport> {
    let (http, mut cluster, mut backupper) = backup_bench_setup(server, work, mib)?;
    let result = backup_wal_scenario(&mut cluster, &mut backupper, &http, mib, window).await;
    if result.is_err() {
        cluster.print_log_tails();
    }
    result
}

async fn backup_wal_scenario(
    cluster: &mut Cluster,
    backupper: &mut Backupper,
    http: &reqwest::Client,
    mib: u64,
    window: Duration,
) -> anyhow::Result<WalReport> {
    let load_before = load_average();
    let shown = cluster.dir.clone();
    let (leader, rows, _, build) = start_filled(cluster, http, mib, &shown).await?;
    let db_path = cluster.dir.join("n1").join("db.sqlite");
    let wal_path = cluster.dir.join("n1").join("db.sqlite-wal");
    let db_bytes = std::fs::metadata(&db_path)
        .with_context(|| format!("cannot stat {}", db_path.display()))?
        .len();
    eprintln!(
        "bench: {rows} rows, {:.1} MiB database, built in {:.1} s",
        mib_of(db_bytes),
        build.as_secs_f64()
    );

    eprintln!("bench: {BACKUP_BENCH_CLIENTS} clients inserting for {window:?}, no backup");
    settle_disk().await;
    let (baseline, ()) = wal_window(http, &leader, &wal_path, async {
        tokio::time::sleep(window).await;
        Ok(())
    })
    .await?;
    eprintln!(
        "bench: {:.1} inserts/s, WAL peak {:.1} MiB",
        baseline.stats.per_sec(),
        mib_of(baseline.wal_peak)
    );

    eprintln!("bench: {BACKUP_BENCH_CLIENTS} clients inserting while POST /backups runs");
    settle_disk().await;
    let server = cluster.pid(0)?;
    let (during, backup) = wal_window(http, &leader, &wal_path, async {
        backupper
            .take(http, &leader, server, "zstd 1, under writes")
            .await
    })
    .await?;
    if let BackupPath::Cli { why } = &backupper.path {
        bail!("POST /backups is not available ({why}); this mode measures the server's backup");
    }
    eprintln!(
        "bench: {:.1} inserts/s over the {:.2} s backup, WAL peak {:.1} MiB",
        during.stats.per_sec(),
        backup.wall.as_secs_f64(),
        mib_of(during.wal_peak)
    );
    let count = count_rows(http, &leader).await?;
    Ok(WalReport {
        load_before,
        db_mib: mib,
        rows,
        db_bytes,
        build,
        check: (count, baseline.acked_total + during.acked_total),
        baseline,
        during,
        backup,
    })
}

/// [`BACKUP_BENCH_CLIENTS`] clients insert single rows for [`WARMUP`], then while `work` runs;
/// only the inserts inside `work` count. The WAL at `wal` is sampled from the warm-up's end
/// until `work` is done.
async fn wal_window<F, T>(
    http: &reqwest::Client,
    leader: &str,
    wal: &Path,
    work: F,
) -> anyhow::Result<(WalWindow, T)>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let writers = spawn_writers(http, leader, BACKUP_BENCH_CLIENTS, move |_| {
        stopped.load(Ordering::Relaxed)
    });
    tokio::time::sleep(WARMUP).await;
    let wal_len = || std::fs::metadata(wal).map_or(0, |m| m.len());
    let from = Instant::now();
    let wal_at_start = wal_len();
    let mut wal_per_second = vec![wal_at_start];
    let mut tick = tokio::time::interval(WAL_SAMPLE);
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                let second = from.elapsed().as_secs() as usize;
                if wal_per_second.len() <= second {
                    wal_per_second.resize(second + 1, 0);
                }
                wal_per_second[second] = wal_per_second[second].max(wal_len());
            }
        }
    };
    let until = Instant::now();
    let wal_at_end = wal_len();
    stop.store(true, Ordering::Relaxed);
    let samples = join_writers(writers).await?;
    let out = out?;
    let (stats, acked_total) = window_stats(samples, from, until);
    stats.print_failures("bench: ");
    let wal_peak = wal_per_second
        .iter()
        .copied()
        .chain([wal_at_end])
        .max()
        .unwrap_or(0);
    let window = WalWindow {
        stats,
        acked_total,
        wal_at_start,
        wal_peak,
        wal_at_end,
        wal_per_second,
    };
    Ok((window, out))
}

pub fn print_report(args: &BenchArgs, r: &WalReport) -> anyhow::Result<()> {
    let round = round2;
    let ratio = r.during.stats.per_sec() / r.baseline.stats.per_sec().max(f64::MIN_POSITIVE);
    let window_json = |w: &WalWindow| {
        json!({
            "inserts_per_sec": round(w.stats.per_sec()),
            "window_secs": round(w.stats.window.as_secs_f64()),
            "p50_ms": w.stats.percentile_ms(0.50).map(round),
            "p99_ms": w.stats.percentile_ms(0.99).map(round),
            "failed": w.stats.failed,
            "wal_at_start_mib": round(mib_of(w.wal_at_start)),
            "wal_peak_mib": round(mib_of(w.wal_peak)),
            "wal_at_end_mib": round(mib_of(w.wal_at_end)),
            "wal_mib_per_second": w.wal_per_second.iter().map(|b| round(mib_of(*b))).collect::<Vec<_>>(),
        })
    };
    let doc = json!({
        "mode": "backup-wal",
        "version": VERSION,
        "cores": cores(),
        "load_before": r.load_before,
        "db_mib": r.db_mib,
        "db_bytes": r.db_bytes,
        "rows": r.rows,
        "build_secs": round(r.build.as_secs_f64()),
        "clients": BACKUP_BENCH_CLIENTS,
        "baseline": window_json(&r.baseline),
        "during_backup": window_json(&r.during),
        "write_ratio": round(ratio),
        "target_write_ratio": TARGET_WRITE_RATIO,
        "backup_secs": round(r.backup.wall.as_secs_f64()),
        "backup_plain_bytes": r.backup.manifest.plain_size,
        "backup_stored_bytes": r.backup.manifest.stored_size,
        "backup_set": r.backup.manifest.set,
        "count": r.check.0,
        "acked": r.check.1,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let per_second = |w: &WalWindow| {
        w.wal_per_second
            .iter()
            .map(|b| format!("{:.0}", mib_of(*b)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "raftlite {} bench --backup-wal-db-mib {}: {} cores, load before {}",
        VERSION,
        r.db_mib,
        cores(),
        r.load_before.as_deref().unwrap_or("unknown")
    );
    println!(
        "database: {:.1} MiB, {} rows (built in {:.1} s); {BACKUP_BENCH_CLIENTS} clients inserting single rows",
        mib_of(r.db_bytes),
        r.rows,
        r.build.as_secs_f64()
    );
    for (name, w) in [("baseline", &r.baseline), ("during backup", &r.during)] {
        println!(
            "{name:>14}: {:8.1} inserts/s over {:6.2} s (p50 {} ms, p99 {} ms, {} failed); WAL {:.1} -> peak {:.1} -> {:.1} MiB",
            w.stats.per_sec(),
            w.stats.window.as_secs_f64(),
            opt(w.stats.percentile_ms(0.50), 1),
            opt(w.stats.percentile_ms(0.99), 1),
            w.stats.failed,
            mib_of(w.wal_at_start),
            mib_of(w.wal_peak),
            mib_of(w.wal_at_end),
        );
    }
    println!(
        "backup: POST /backups took {:.2} s, {:.1} MiB plain, {:.1} MiB stored",
        r.backup.wall.as_secs_f64(),
        mib_of(r.backup.manifest.plain_size),
        mib_of(r.backup.manifest.stored_size)
    );
    println!(
        "writes during the backup: {:.2} of the baseline (target >= {TARGET_WRITE_RATIO:.2})",
        ratio
    );
    println!(
        "WAL MiB per second, baseline:      {}",
        per_second(&r.baseline)
    );
    println!(
        "WAL MiB per second, during backup: {}",
        per_second(&r.during)
    );
    println!(
        "check: COUNT(*) {} >= {} acknowledged: {}",
        r.check.0,
        r.check.1,
        if r.check.0 >= r.check.1 {
            "ok"
        } else {
            "LOST WRITES"
        }
    );
    Ok(())
}

/// The writes with and without the backup, the WAL's peak during it and the backup's time.
pub fn figures(r: &WalReport) -> Vec<Figure> {
    let (idle, during) = (r.baseline.stats.per_sec(), r.during.stats.per_sec());
    vec![
        Figure::higher("writes without backup: inserts/s", Some(idle)),
        Figure::higher("writes during backup: inserts/s", Some(during)),
        Figure::higher(
            "writes during / without backup",
            Some(during / idle.max(f64::MIN_POSITIVE)),
        ),
        Figure::lower(
            "WAL peak without backup: MiB",
            Some(mib_of(r.baseline.wal_peak)),
        ),
        Figure::lower(
            "WAL peak during backup: MiB",
            Some(mib_of(r.during.wal_peak)),
        ),
        Figure::lower("backup under writes: s", Some(r.backup.wall.as_secs_f64())),
    ]
}
