//! The report of `raftlite-bench --backup-db-mib N` (measured in [`crate::backup`]).

use std::time::Duration;

use serde_json::json;

use crate::backup::{BackupReport, WriteWindow};
use crate::backupper::{
    BackupPath, BackupRun, BACKUP_BENCH_CLIENTS, BACKUP_LEVEL, NO_RAFT_SNAPSHOTS,
    TARGET_WRITE_RATIO,
};
use crate::compare::Figure;
use crate::fill::{FILL_BLOB_BYTES, FILL_NOTE_BYTES};
use crate::report::{cores, mib_of, mib_of_kib, opt, round2, VERSION};
use crate::writers::WARMUP;
use crate::BenchArgs;

/// The target: the peak RSS of the process doing a backup.
const TARGET_RSS_MIB: f64 = 200.0;

pub fn print(args: &BenchArgs, r: &BackupReport) -> anyhow::Result<()> {
    let cores = cores();
    let version = VERSION;
    let round = round2;
    let baseline_secs = r.baseline.as_ref().ok().map(|b| b.wall.as_secs_f64());
    let vs_shell = |d: Duration| baseline_secs.map(|b| round(d.as_secs_f64() / b.max(1e-9)));
    let write_ratio = r.during.stats.per_sec() / r.idle.stats.per_sec().max(f64::MIN_POSITIVE);
    // The targets, judged on the idle backups (the one under writes is slowed by them).
    let slowest = r.backups.iter().map(|b| b.wall).max().unwrap_or_default();
    let fastest_ok = baseline_secs.map(|b| slowest.as_secs_f64() <= b);
    let peak_rss = r
        .backups
        .iter()
        .chain(r.during.backup.as_ref())
        .filter_map(|b| mib_of_kib(b.worker_peak_kib()))
        .fold(0.0, f64::max);
    let worker = match r.path {
        BackupPath::Endpoint => "server",
        BackupPath::Cli { .. } => "cli",
    };
    let backup_json = |b: &BackupRun| {
        json!({
            "label": b.label,
            "wall_secs": round(b.wall.as_secs_f64()),
            "ratio_vs_shell": vs_shell(b.wall),
            "worker": worker,
            "worker_peak_rss_mib": mib_of_kib(b.worker_peak_kib()).map(round),
            "server_rss_before_mib": mib_of_kib(b.server.rss_before_kib).map(round),
            "server_vmhwm_before_mib": mib_of_kib(b.server.hwm_before_kib).map(round),
            "server_peak_rss_mib": mib_of_kib(b.server.peak_kib).map(round),
            "server_peak_exact": b.server.exact,
            "plain_bytes": b.manifest.plain_size,
            "stored_bytes": b.manifest.stored_size,
            "zstd_level": b.manifest.level,
            "encryption": b.manifest.encryption,
            "set": b.manifest.set,
        })
    };
    let window_json = |w: &WriteWindow| {
        json!({
            "inserts_per_sec": round(w.stats.per_sec()),
            "window_secs": round(w.stats.window.as_secs_f64()),
            "p50_ms": w.stats.percentile_ms(0.50).map(round),
            "p99_ms": w.stats.percentile_ms(0.99).map(round),
            "acknowledged": w.stats.acked,
            "failed": w.stats.failed,
            "failures": w.stats.failures,
        })
    };
    if args.json {
        let baseline = match &r.baseline {
            Ok(b) => json!({
                "wall_secs": round(b.wall.as_secs_f64()),
                "sqlite3_backup_secs": round(b.sqlite.wall.as_secs_f64()),
                "zstd_secs": round(b.zstd.wall.as_secs_f64()),
                "sqlite3_peak_rss_mib": mib_of_kib(b.sqlite.peak_kib).map(round),
                "zstd_peak_rss_mib": mib_of_kib(b.zstd.peak_kib).map(round),
                "stored_bytes": b.out_bytes,
            }),
            Err(why) => json!({ "skipped": why }),
        };
        let mut during = window_json(&r.during);
        if let (Some(obj), Some(b)) = (during.as_object_mut(), &r.during.backup) {
            obj.insert("backup".into(), backup_json(b));
        }
        let doc = json!({
            "raftlite_version": version,
            "cores": cores,
            "load_average_before": r.load_before,
            "database": {
                "requested_mib": r.db_mib,
                "size_bytes": r.db.size_bytes,
                "rows": r.db.rows,
                "payload_bytes": r.db.payload_bytes,
                "build_secs": round(r.db.build.as_secs_f64()),
            },
            "shell_baseline": baseline,
            "backup_path": r.path.describe(),
            "snapshot_threshold": NO_RAFT_SNAPSHOTS,
            "backups": r.backups.iter().map(backup_json).collect::<Vec<_>>(),
            "writes": {
                "clients": BACKUP_BENCH_CLIENTS,
                "warmup_secs": WARMUP.as_secs(),
                "without_backup": window_json(&r.idle),
                "during_backup": during,
                "ratio": round(write_ratio),
            },
            "targets": {
                "backup_time_le_shell": fastest_ok,
                "peak_rss_lt_200_mib": peak_rss < TARGET_RSS_MIB,
                "writes_during_backup_ge_70_percent": write_ratio >= TARGET_WRITE_RATIO,
            },
            "count_check": { "count": r.check.0, "acknowledged": r.check.1 },
            "notes": r.notes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!(
        "raftlite {version} backup bench, {cores} cores: {:.1} MiB database ({} rows of {} KiB \
         blob + {} KiB text, half random), built in {:.1} s (setup, not measured)",
        mib_of(r.db.size_bytes),
        r.db.rows,
        FILL_BLOB_BYTES / 1024,
        FILL_NOTE_BYTES / 1024,
        r.db.build.as_secs_f64()
    );
    println!("backups measured through {}", r.path.describe());
    if let Some(load) = &r.load_before {
        println!(
            "load average before the run: {load} (other work on the machine skews the figures)"
        );
    }
    println!(
        "node started with --backup-level {BACKUP_LEVEL} --snapshot-threshold \
         {NO_RAFT_SNAPSHOTS} (no Raft snapshot during the run); `sync` before each measured phase"
    );
    println!();
    println!(
        "{:<36} {:>8} {:>9} {:>13} {:>11}  notes",
        "backup (zstd level 1)", "wall s", "vs shell", "peak RSS MiB", "stored MiB"
    );
    match &r.baseline {
        Ok(b) => println!(
            "{:<36} {:>8.2} {:>8.2}x {:>13} {:>11.1}  sqlite3 .backup {:.2} s ({} MiB peak), \
             zstd {:.2} s ({} MiB peak)",
            "shell: sqlite3 .backup + zstd -T2",
            b.wall.as_secs_f64(),
            1.0,
            opt(mib_of_kib(b.sqlite.peak_kib.max(b.zstd.peak_kib)), 1),
            mib_of(b.out_bytes),
            b.sqlite.wall.as_secs_f64(),
            opt(mib_of_kib(b.sqlite.peak_kib), 1),
            b.zstd.wall.as_secs_f64(),
            opt(mib_of_kib(b.zstd.peak_kib), 1),
        ),
        Err(why) => println!("{:<36} skipped: {why}", "shell: sqlite3 .backup + zstd -T2"),
    }
    for b in r.backups.iter().chain(r.during.backup.as_ref()) {
        let server = format!(
            "server RSS {} MiB before (VmHWM so far {}), peak {}{}",
            opt(mib_of_kib(b.server.rss_before_kib), 1),
            opt(mib_of_kib(b.server.hwm_before_kib), 1),
            opt(mib_of_kib(b.server.peak_kib), 1),
            if b.server.exact { "" } else { " (sampled)" }
        );
        println!(
            "{:<36} {:>8.2} {:>9} {:>13} {:>11.1}  {} RSS; {server}",
            format!("raftlite, {}", b.label),
            b.wall.as_secs_f64(),
            vs_shell(b.wall).map_or("-".to_owned(), |x| format!("{x:.2}x")),
            opt(mib_of_kib(b.worker_peak_kib()), 1),
            mib_of(b.manifest.stored_size),
            if b.cli_peak_kib.is_some() {
                "CLI child"
            } else {
                "server (includes its baseline)"
            },
        );
    }
    println!();
    println!(
        "{:<36} {:>10} {:>8} {:>8} {:>7} {:>9}",
        format!("writes ({BACKUP_BENCH_CLIENTS} clients, 1-row INSERT)"),
        "inserts/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "window s"
    );
    for (name, w) in [
        ("without backup", &r.idle),
        ("during backup (overlap)", &r.during),
    ] {
        println!(
            "{:<36} {:>10.1} {:>8} {:>8} {:>7} {:>9.2}",
            name,
            w.stats.per_sec(),
            opt(w.stats.percentile_ms(0.50), 2),
            opt(w.stats.percentile_ms(0.99), 2),
            w.stats.failed,
            w.stats.window.as_secs_f64()
        );
    }
    println!("{:<36} {:>9.0}%", "during / without", write_ratio * 100.0);
    println!();
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not judged",
    };
    println!("targets from the issue:");
    println!(
        "  raftlite backup time <= shell pipeline: {} (slowest idle backup {:.2} s vs {} s)",
        verdict(fastest_ok),
        slowest.as_secs_f64(),
        opt(baseline_secs, 2)
    );
    println!(
        "  peak RSS < {TARGET_RSS_MIB:.0} MiB: {} (highest {peak_rss:.1} MiB, {})",
        verdict(Some(peak_rss < TARGET_RSS_MIB)),
        match r.path {
            BackupPath::Endpoint => "the server's VmHWM, its baseline included",
            BackupPath::Cli { .. } => "the CLI child's VmHWM",
        }
    );
    println!(
        "  writes during backup >= {:.0}% of without: {} ({:.0}%)",
        TARGET_WRITE_RATIO * 100.0,
        verdict(Some(write_ratio >= TARGET_WRITE_RATIO)),
        write_ratio * 100.0
    );
    let (count, acked) = r.check;
    println!(
        "  COUNT(*) >= acknowledged inserts: {}",
        if count >= acked {
            format!("ok ({count} >= {acked})")
        } else {
            format!("LOST ({count} < {acked})")
        }
    );
    for note in &r.notes {
        println!("note: {note}");
    }
    Ok(())
}

/// The backups' times and peaks and the writes with and without one (the shell baseline, which
/// runs no server, shows how noisy the machine is).
pub fn figures(r: &BackupReport) -> Vec<Figure> {
    let mut out = vec![Figure::lower(
        "shell baseline (sqlite3 .backup + zstd): s",
        r.baseline.as_ref().ok().map(|b| b.wall.as_secs_f64()),
    )];
    for b in r.backups.iter().chain(r.during.backup.as_ref()) {
        out.push(Figure::lower(
            format!("backup, {}: s", b.label),
            Some(b.wall.as_secs_f64()),
        ));
        out.push(Figure::lower(
            format!("backup, {}: peak RSS MiB", b.label),
            mib_of_kib(b.worker_peak_kib()),
        ));
    }
    let (idle, during) = (r.idle.stats.per_sec(), r.during.stats.per_sec());
    out.extend([
        Figure::higher("writes without backup: inserts/s", Some(idle)),
        Figure::higher("writes during backup: inserts/s", Some(during)),
        Figure::higher(
            "writes during / without backup",
            Some(during / idle.max(f64::MIN_POSITIVE)),
        ),
    ]);
    out
}
