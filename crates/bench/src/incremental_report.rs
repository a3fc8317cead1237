//! The report of `raftlite-bench --incremental` (measured in [`crate::incremental`]).

use serde_json::{json, Value};

use crate::backupper::{BACKUP_BENCH_CLIENTS, NO_RAFT_SNAPSHOTS};
use crate::compare::Figure;
use crate::fill::{FILL_BLOB_BYTES, FILL_NOTE_BYTES};
use crate::incremental::{
    BackupStep, IncrementalReport, RestoreStep, INCREMENTAL_LEVEL, TARGET_COPY_WRITE_RATIO,
    TARGET_RESTORE_RATIO, TARGET_RSS_MIB, TARGET_SIZE_RATIO, TARGET_TIME_RATIO,
};
use crate::proc::ServerMem;
use crate::report::{cores, median, mib_of, mib_of_kib, opt, round2, VERSION};
use crate::writers::{Stats, WARMUP};
use crate::BenchArgs;

/// The figures the targets are judged on, computed once for both outputs.
struct Judged {
    time_ratio: Option<f64>,
    size_ratio: Option<f64>,
    /// The server's peak during the full and the first incremental, and over every backup.
    backup_peak_mib: Option<f64>,
    all_backups_peak_mib: Option<f64>,
    restore_ratio: f64,
    restore_cli_peak_mib: Option<f64>,
    restore_server_peak_mib: Option<f64>,
    write_ratio: f64,
}

impl Judged {
    fn of(r: &IncrementalReport) -> Judged {
        let full = &r.full;
        let first = r.first();
        let peak = |steps: &mut dyn Iterator<Item = &BackupStep>| {
            mib_of_kib(steps.filter_map(|b| b.server.peak_kib).max())
        };
        Judged {
            time_ratio: first.map(|i| i.wall.as_secs_f64() / full.wall.as_secs_f64().max(1e-9)),
            size_ratio: first.map(|i| i.stored_size as f64 / full.stored_size.max(1) as f64),
            backup_peak_mib: peak(&mut std::iter::once(full).chain(first)),
            all_backups_peak_mib: peak(&mut r.backups()),
            restore_ratio: r.restore_chain.wall.as_secs_f64()
                / r.restore_full.wall.as_secs_f64().max(1e-9),
            restore_cli_peak_mib: mib_of_kib(
                r.restore_full
                    .cli_peak_kib
                    .max(r.restore_chain.cli_peak_kib),
            ),
            restore_server_peak_mib: mib_of_kib(
                r.restore_full
                    .server
                    .peak_kib
                    .max(r.restore_chain.server.peak_kib),
            ),
            write_ratio: r.copy.ratio(),
        }
    }

    /// `(target, met)` for every target, in the order; `None` when not measured.
    fn verdicts(&self) -> Vec<(&'static str, Option<bool>)> {
        let under = |x: Option<f64>, limit: f64| x.map(|x| x <= limit);
        let below = |x: Option<f64>, limit: f64| x.map(|x| x < limit);
        vec![
            (
                "incremental time <= 10% of the full's",
                under(self.time_ratio, TARGET_TIME_RATIO),
            ),
            (
                "incremental stored size <= 3% of the full's",
                under(self.size_ratio, TARGET_SIZE_RATIO),
            ),
            (
                "server peak RSS during the full and the incremental < 200 MiB",
                below(self.backup_peak_mib, TARGET_RSS_MIB),
            ),
            (
                "chain restore <= 1.3x the full restore",
                Some(self.restore_ratio <= TARGET_RESTORE_RATIO),
            ),
            (
                "restore CLI peak RSS < 200 MiB",
                below(self.restore_cli_peak_mib, TARGET_RSS_MIB),
            ),
            (
                "server peak RSS during the restores < 200 MiB",
                below(self.restore_server_peak_mib, TARGET_RSS_MIB),
            ),
            (
                "writes during the copy >= 95% of without",
                Some(self.write_ratio >= TARGET_COPY_WRITE_RATIO),
            ),
        ]
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "not measured",
    }
}

/// The chain's links after the first: median and largest wall time and stored size, and the
/// range of changed page fractions over every link.
struct ChainSummary {
    median_wall: Option<f64>,
    max_wall: Option<f64>,
    median_stored: Option<f64>,
    fraction_range: Option<(f64, f64)>,
}

fn chain_summary(r: &IncrementalReport) -> ChainSummary {
    let links: Vec<&BackupStep> = r.links.iter().map(|l| &l.backup).collect();
    let walls: Vec<f64> = links.iter().map(|b| b.wall.as_secs_f64()).collect();
    let fractions: Vec<f64> = links.iter().filter_map(|b| b.changed_fraction()).collect();
    ChainSummary {
        median_wall: median(walls.clone()),
        max_wall: walls.iter().copied().reduce(f64::max),
        median_stored: median(links.iter().map(|b| b.stored_size as f64).collect()),
        fraction_range: fractions
            .iter()
            .copied()
            .reduce(f64::min)
            .zip(fractions.iter().copied().reduce(f64::max)),
    }
}

pub fn print(args: &BenchArgs, r: &IncrementalReport) -> anyhow::Result<()> {
    let j = Judged::of(r);
    let chain = chain_summary(r);
    let round = round2;
    let full_secs = r.full.wall.as_secs_f64().max(1e-9);
    let full_stored = r.full.stored_size.max(1) as f64;
    let flags = format!(
        "--backup-to file://<work>/backups --backup-interval off --archive-to off \
         --backup-full-every 1000 --backup-verify-interval off --backup-keep-last 1000 \
         --backup-level {INCREMENTAL_LEVEL} --snapshot-threshold {NO_RAFT_SNAPSHOTS}"
    );
    let pct = |x: Option<f64>, digits: usize| {
        x.map(|x| 100.0 * x)
            .map_or("-".into(), |x| format!("{x:.digits$}%"))
    };

    if args.json {
        let mem_json = |m: &ServerMem| {
            json!({
                "rss_before_mib": mib_of_kib(m.rss_before_kib).map(round),
                "peak_rss_mib": mib_of_kib(m.peak_kib).map(round),
                "peak_exact": m.exact,
            })
        };
        let backup_json = |b: &BackupStep| {
            json!({
                "id": b.id,
                "kind": b.kind,
                "parent": b.parent,
                "chain_depth": b.chain_depth,
                "wall_secs": round(b.wall.as_secs_f64()),
                "ratio_vs_full": round(b.wall.as_secs_f64() / full_secs),
                "stored_bytes": b.stored_size,
                "stored_ratio_vs_full": b.stored_size as f64 / full_stored,
                "plain_bytes": b.plain_size,
                "changed_pages": b.changed_pages(),
                "changed_fraction": b.changed_fraction(),
                "server": mem_json(&b.server),
            })
        };
        let restore_json = |s: &RestoreStep| {
            json!({
                "id": s.id,
                "chain_depth": s.chain_depth,
                "wall_secs": round(s.wall.as_secs_f64()),
                "cluster_secs": s.cluster_secs.map(round),
                "cli_peak_rss_mib": mib_of_kib(s.cli_peak_kib).map(round),
                "server": mem_json(&s.server),
                "sha256": s.sha256,
            })
        };
        let window_json = |w: &Stats| {
            json!({
                "inserts_per_sec": round(w.per_sec()),
                "window_secs": round(w.window.as_secs_f64()),
                "p50_ms": w.percentile_ms(0.50).map(round),
                "p99_ms": w.percentile_ms(0.99).map(round),
                "acknowledged": w.acked,
                "failed": w.failed,
                "failures": w.failures,
            })
        };
        let links: Vec<Value> = r
            .links
            .iter()
            .map(|l| {
                let mut b = backup_json(&l.backup);
                if let Some(obj) = b.as_object_mut() {
                    obj.insert("rows_changed".into(), json!(l.change.rows));
                    obj.insert(
                        "change_secs".into(),
                        json!(round(l.change.took.as_secs_f64())),
                    );
                }
                b
            })
            .collect();
        let targets: Vec<Value> = j
            .verdicts()
            .into_iter()
            .map(|(name, ok)| json!({"target": name, "met": ok}))
            .collect();
        let doc = json!({
            "raftlite_version": VERSION,
            "cores": cores(),
            "load_average_before": r.load_before,
            "server_flags": flags,
            "plan": {
                "db_mib": r.plan.db_mib,
                "links": r.plan.links,
                "change_pct": r.plan.change_pct,
            },
            "database": {
                "size_bytes": r.db.size_bytes(),
                "page_size": r.db.page_size,
                "page_count": r.db.page_count,
                "rows": r.db.rows,
                "payload_bytes": r.db.payload_bytes,
                "build_secs": round(r.db.build.as_secs_f64()),
            },
            "full": backup_json(&r.full),
            "chain": links,
            "final_full": backup_json(&r.final_full),
            "restores": {
                "full": restore_json(&r.restore_full),
                "chain": restore_json(&r.restore_chain),
                "ratio": round(j.restore_ratio),
            },
            "copy": {
                "method": r.copy.method.describe(),
                "copied_bytes": r.copy.copied_bytes,
                "copy_secs": round(r.copy.copy.wall.as_secs_f64()),
                "stopped_at_window_end": r.copy.stopped,
                "destination": r.copy.place,
                "sync_secs": r.copy.sync.map(|d| round(d.as_secs_f64())),
                "peak_rss_mib": mib_of_kib(r.copy.copy.peak_kib).map(round),
                "writes": {
                    "clients": BACKUP_BENCH_CLIENTS,
                    "warmup_secs": WARMUP.as_secs(),
                    "without_copy": window_json(&r.copy.idle),
                    "during_copy": window_json(&r.copy.during),
                    "ratio": round(j.write_ratio),
                },
            },
            "summary": {
                "incremental_time_ratio": j.time_ratio,
                "incremental_size_ratio": j.size_ratio,
                "changed_fraction_first": r.first().and_then(BackupStep::changed_fraction),
                "changed_fraction_range": chain.fraction_range.map(|(a, b)| [a, b]),
                "chain_median_wall_secs": chain.median_wall.map(round),
                "chain_max_wall_secs": chain.max_wall.map(round),
                "backup_server_peak_rss_mib": j.backup_peak_mib.map(round),
                "all_backups_server_peak_rss_mib": j.all_backups_peak_mib.map(round),
                "restore_ratio": round(j.restore_ratio),
                "restore_cli_peak_rss_mib": j.restore_cli_peak_mib.map(round),
                "restore_server_peak_rss_mib": j.restore_server_peak_mib.map(round),
                "copy_write_ratio": round(j.write_ratio),
            },
            "targets": targets,
            "phases": r.phases.iter().map(|p| json!({"phase": p.name, "secs": round(p.took.as_secs_f64())})).collect::<Vec<_>>(),
            "total_secs": round(r.total.as_secs_f64()),
            "count_check": { "count": r.check.0, "acknowledged": r.check.1 },
            "notes": r.notes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!(
        "raftlite {VERSION} incremental backup bench, {} cores: {:.1} MiB database ({} pages of {} \
         bytes; {} rows of {} KiB blob + {} KiB text, half random), filled in {:.1} s (setup, not \
         measured)",
        cores(),
        mib_of(r.db.size_bytes()),
        r.db.page_count,
        r.db.page_size,
        r.db.rows,
        FILL_BLOB_BYTES / 1024,
        FILL_NOTE_BYTES / 1024,
        r.db.build.as_secs_f64()
    );
    if let Some(load) = &r.load_before {
        println!(
            "load average before the run: {load} (other work on the machine skews the figures)"
        );
    }
    println!("single node: {flags}; `sync` before each measured phase");
    println!(
        "each link: the blobs of random rows rewritten (same size: SQLite rewrites their pages in \
         place), aiming at {}% of the pages; the pages changed are read from the incremental's \
         manifest (page frames of plain_size / (page_size + 4) over sqlite_page_count)",
        r.plan.change_pct
    );
    println!();
    println!(
        "{:<30} {:>8} {:>8} {:>11} {:>8} {:>22} {:>14}",
        "backup (POST /backups)",
        "wall s",
        "vs full",
        "stored MiB",
        "vs full",
        "changed pages",
        "server peak MiB"
    );
    let line = |name: String, b: &BackupStep, extra: String| {
        println!(
            "{:<30} {:>8.2} {:>7.3}x {:>11.2} {:>7.2}% {:>22} {:>14}{extra}",
            name,
            b.wall.as_secs_f64(),
            b.wall.as_secs_f64() / full_secs,
            mib_of(b.stored_size),
            100.0 * b.stored_size as f64 / full_stored,
            match (b.changed_pages(), b.changed_fraction()) {
                (Some(p), Some(f)) => format!("{p} ({:.2}%)", 100.0 * f),
                _ => "-".into(),
            },
            format!(
                "{}{}",
                opt(mib_of_kib(b.server.peak_kib), 1),
                if b.server.exact { "" } else { "~" }
            ),
        )
    };
    line("full (chain root)".into(), &r.full, String::new());
    for (i, l) in r.links.iter().enumerate() {
        let kind = if l.backup.is_incremental() {
            String::new()
        } else {
            format!(" [{}]", l.backup.kind)
        };
        line(
            format!("incremental {}{kind}", i + 1),
            &l.backup,
            format!("  {} rows changed", l.change.rows),
        );
    }
    line(
        "full after restart (same data)".into(),
        &r.final_full,
        String::new(),
    );
    println!(
        "links: median {} s ({} of the full), slowest {} s; median stored {} MiB; pages \
         changed per link {}",
        opt(chain.median_wall, 2),
        opt(chain.median_wall.map(|w| w / full_secs), 3),
        opt(chain.max_wall, 2),
        opt(chain.median_stored.map(|s| s / (1024.0 * 1024.0)), 2),
        chain.fraction_range.map_or("-".into(), |(a, b)| format!(
            "{:.2}-{:.2}%",
            100.0 * a,
            100.0 * b
        )),
    );
    println!("(server peak: VmHWM after a reset at the POST, its baseline included; ~ = sampled)");
    println!();
    println!(
        "{:<40} {:>8} {:>8} {:>10} {:>13} {:>16}",
        "restore (`raftlite restore` child)",
        "wall s",
        "vs full",
        "cluster s",
        "CLI peak MiB",
        "server peak MiB"
    );
    for (name, s) in [
        ("full after restart".to_string(), &r.restore_full),
        (
            format!(
                "chain: 1 full + {} incrementals",
                r.restore_chain.chain_depth
            ),
            &r.restore_chain,
        ),
    ] {
        println!(
            "{:<40} {:>8.2} {:>7.2}x {:>10} {:>13} {:>16}",
            name,
            s.wall.as_secs_f64(),
            s.wall.as_secs_f64() / r.restore_full.wall.as_secs_f64().max(1e-9),
            opt(s.cluster_secs, 2),
            opt(mib_of_kib(s.cli_peak_kib), 1),
            opt(mib_of_kib(s.server.peak_kib), 1),
        );
    }
    println!("(wall: the CLI's start to its exit, the restore confirmed on the cluster; cluster s: what the node reported)");
    println!();
    println!(
        "copy of the backups to a second destination in {} by {}: {:.1} MiB copied in {:.2} s \
         from the node's start{}; node peak RSS {} MiB",
        r.copy.place,
        r.copy.method.describe(),
        mib_of(r.copy.copied_bytes),
        r.copy.copy.wall.as_secs_f64(),
        if r.copy.stopped {
            " (still copying at the end of the write window)"
        } else {
            " (it finished within the write window: the figure during the copy is noisier)"
        },
        opt(mib_of_kib(r.copy.copy.peak_kib), 1),
    );
    println!(
        "{:<40} {:>10} {:>8} {:>8} {:>7} {:>9}",
        format!("writes ({BACKUP_BENCH_CLIENTS} clients, 1-row INSERT)"),
        "inserts/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "window s"
    );
    for (name, w) in [
        ("without copy", &r.copy.idle),
        ("during the copy", &r.copy.during),
    ] {
        println!(
            "{:<40} {:>10.1} {:>8} {:>8} {:>7} {:>9.2}",
            name,
            w.per_sec(),
            opt(w.percentile_ms(0.50), 2),
            opt(w.percentile_ms(0.99), 2),
            w.failed,
            w.window.as_secs_f64()
        );
    }
    println!("{:<40} {:>9.1}%", "during / without", 100.0 * j.write_ratio);
    println!();

    let first = r.first();
    println!("targets from the issue:");
    let details = [
        format!(
            "{} ({} s vs {} s)",
            pct(j.time_ratio, 1),
            opt(first.map(|b| b.wall.as_secs_f64()), 2),
            format_args!("{:.2}", r.full.wall.as_secs_f64()),
        ),
        format!(
            "{} ({} MiB vs {:.1} MiB; {} of the pages changed)",
            pct(j.size_ratio, 2),
            opt(first.map(|b| mib_of(b.stored_size)), 2),
            mib_of(r.full.stored_size),
            pct(first.and_then(BackupStep::changed_fraction), 2),
        ),
        format!(
            "full {} MiB (RSS before it {} MiB), incremental {} MiB (before {} MiB); highest \
             over all {} backups {} MiB",
            opt(mib_of_kib(r.full.server.peak_kib), 1),
            opt(mib_of_kib(r.full.server.rss_before_kib), 1),
            opt(first.and_then(|b| mib_of_kib(b.server.peak_kib)), 1),
            opt(first.and_then(|b| mib_of_kib(b.server.rss_before_kib)), 1),
            r.backups().count(),
            opt(j.all_backups_peak_mib, 1),
        ),
        format!(
            "{:.2}x ({:.2} s for 1 full + {} vs {:.2} s)",
            j.restore_ratio,
            r.restore_chain.wall.as_secs_f64(),
            r.restore_chain.chain_depth,
            r.restore_full.wall.as_secs_f64(),
        ),
        format!(
            "full {} MiB, chain {} MiB",
            opt(mib_of_kib(r.restore_full.cli_peak_kib), 1),
            opt(mib_of_kib(r.restore_chain.cli_peak_kib), 1),
        ),
        format!(
            "full {} MiB (RSS before it {} MiB), chain {} MiB (before {} MiB)",
            opt(mib_of_kib(r.restore_full.server.peak_kib), 1),
            opt(mib_of_kib(r.restore_full.server.rss_before_kib), 1),
            opt(mib_of_kib(r.restore_chain.server.peak_kib), 1),
            opt(mib_of_kib(r.restore_chain.server.rss_before_kib), 1),
        ),
        format!(
            "{:.1}% ({:.1} vs {:.1} inserts/s){}",
            100.0 * j.write_ratio,
            r.copy.during.per_sec(),
            r.copy.idle.per_sec(),
            match r.copy.method {
                crate::incremental::CopyMethod::Server => "",
            }
        ),
    ];
    for ((name, ok), detail) in j.verdicts().into_iter().zip(details) {
        println!("  {name}: {} — {detail}", verdict(ok));
    }
    let (count, acked) = r.check;
    println!(
        "  COUNT(*) >= acknowledged inserts: {}",
        if count >= acked {
            format!("ok ({count} >= {acked})")
        } else {
            format!("LOST ({count} < {acked})")
        }
    );
    println!();
    println!("time per phase:");
    for p in &r.phases {
        println!("  {:<52} {:>9.1} s", p.name, p.took.as_secs_f64());
    }
    println!("  {:<52} {:>9.1} s", "total", r.total.as_secs_f64());
    for note in &r.notes {
        println!("note: {note}");
    }
    Ok(())
}

/// Times, sizes, ratios and peaks, for `--compare-bin`.
pub fn figures(r: &IncrementalReport) -> Vec<Figure> {
    let j = Judged::of(r);
    let chain = chain_summary(r);
    let first = r.first();
    vec![
        Figure::lower("full backup: s", Some(r.full.wall.as_secs_f64())),
        Figure::lower("first incremental: s", first.map(|b| b.wall.as_secs_f64())),
        Figure::lower("incremental / full: time", j.time_ratio),
        Figure::lower("incremental / full: stored size", j.size_ratio),
        Figure::lower("chain links, median: s", chain.median_wall),
        Figure::lower("backups, server peak RSS MiB", j.all_backups_peak_mib),
        Figure::lower(
            "restore of the full: s",
            Some(r.restore_full.wall.as_secs_f64()),
        ),
        Figure::lower(
            "restore of the chain: s",
            Some(r.restore_chain.wall.as_secs_f64()),
        ),
        Figure::lower("chain restore / full restore", Some(j.restore_ratio)),
        Figure::lower("restore, CLI peak RSS MiB", j.restore_cli_peak_mib),
        Figure::lower("restore, server peak RSS MiB", j.restore_server_peak_mib),
        Figure::higher(
            "writes without copy: inserts/s",
            Some(r.copy.idle.per_sec()),
        ),
        Figure::higher(
            "writes during copy: inserts/s",
            Some(r.copy.during.per_sec()),
        ),
        Figure::higher("writes during / without copy", Some(j.write_ratio)),
    ]
}
