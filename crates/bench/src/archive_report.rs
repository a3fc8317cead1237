//! The report of `raftlite-bench --archive` (measured in [`crate::archive`]).

use anyhow::bail;
use serde_json::{json, Value};

use crate::archive::{
    percentile, ArchiveReport, OverheadRun, ReplayRun, RpoRun, ARCHIVE_INTERVAL, ARCHIVE_NODES,
    OVERHEAD_CLIENTS, PACED_WORKERS, SAMPLE_EVERY, TARGET_LAG_P99_SECS, TARGET_OVERHEAD_RATIO,
    TARGET_REPLAY_SPEEDUP, TARGET_RSS_MIB,
};
use crate::compare::Figure;
use crate::report::{cores, median, mib_of, mib_of_kib, opt, round2, VERSION};
use crate::writers::WARMUP;
use crate::BenchArgs;

/// Seconds in the hour the replay target speaks of.
const HOUR_SECS: f64 = 3600.0;

/// p50, p99 and max of `values`.
struct Spread {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        Spread {
            p50: percentile(&v, 0.50),
            p99: percentile(&v, 0.99),
            max: v.last().copied(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "p50": self.p50.map(round3),
            "p99": self.p99.map(round3),
            "max": self.max.map(round3),
        })
    }

    fn text(&self, digits: usize) -> String {
        format!(
            "p50 {}  p99 {}  max {}",
            opt(self.p50, digits),
            opt(self.p99, digits),
            opt(self.max, digits)
        )
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn lag_secs(r: &RpoRun) -> Spread {
    Spread::of(r.samples.iter().filter_map(|s| s.lag_seconds))
}

fn lag_entries(r: &RpoRun) -> Spread {
    Spread::of(
        r.samples
            .iter()
            .filter_map(|s| s.lag_entries.map(|n| n as f64)),
    )
}

fn exposure(r: &RpoRun) -> Spread {
    Spread::of(r.exposure_secs.iter().copied())
}

fn final_count(r: &RpoRun, key: &str) -> Option<u64> {
    r.final_archive.get(key).and_then(Value::as_u64)
}

/// The median inserts/s with archiving on (`true`) or off.
fn median_rate(runs: &[OverheadRun], archiving: bool) -> Option<f64> {
    median(
        runs.iter()
            .filter(|r| r.archiving == archiving)
            .map(|r| r.stats.per_sec())
            .collect(),
    )
}

/// Archiving / not, of the medians.
pub fn overhead_ratio(runs: &[OverheadRun]) -> Option<f64> {
    let (on, off) = (median_rate(runs, true)?, median_rate(runs, false)?);
    (off > 0.0).then(|| on / off)
}

/// Replay speed over the paced rate of part 1 (the "original write rate").
fn speedup(r: &ReplayRun, rate: u64) -> f64 {
    r.entries_per_sec() / (rate as f64).max(f64::MIN_POSITIVE)
}

/// How long an hour of `rate` writes/s would take to replay at the measured speed, in s.
fn hour_projection_secs(r: &ReplayRun, rate: u64) -> f64 {
    rate as f64 * HOUR_SECS / r.entries_per_sec().max(f64::MIN_POSITIVE)
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "unknown",
    }
}

pub fn print(args: &BenchArgs, r: &ArchiveReport) -> anyhow::Result<()> {
    let plan = r.plan;
    let rpo = &r.rpo;
    let replay = &r.replay;
    let (lag, entries, exposed) = (lag_secs(rpo), lag_entries(rpo), exposure(rpo));
    let ratio = overhead_ratio(&r.overhead);
    let speed = speedup(replay, plan.rate);
    let projection = hour_projection_secs(replay, plan.rate);
    let peak_mib = mib_of_kib(replay.peak_kib);
    if args.json {
        let overhead: Vec<Value> = r
            .overhead
            .iter()
            .map(|o| {
                json!({
                    "round": o.round + 1,
                    "archiving": o.archiving,
                    "inserts_per_sec": round2(o.stats.per_sec()),
                    "p50_ms": o.stats.percentile_ms(0.50).map(round2),
                    "p99_ms": o.stats.percentile_ms(0.99).map(round2),
                    "failed": o.stats.failed,
                    "count_after": o.check.0,
                    "acknowledged_total": o.check.1,
                })
            })
            .collect();
        let doc = json!({
            "mode": "archive",
            "raftlite_version": VERSION,
            "cores": cores(),
            "load_before": r.load_before,
            "nodes": ARCHIVE_NODES,
            "archive_interval": ARCHIVE_INTERVAL,
            "rpo": {
                "rate_per_sec": rpo.rate,
                "secs": rpo.secs,
                "paced_workers": PACED_WORKERS,
                "sent": rpo.sent,
                "acknowledged": rpo.acked,
                "failed": rpo.failed,
                "acknowledged_per_sec": round2(rpo.acked_per_sec),
                "max_late_ms": round2(rpo.max_late.as_secs_f64() * 1e3),
                "sample_every_ms": SAMPLE_EVERY.as_millis() as u64,
                "samples": rpo.samples.len(),
                "failed_samples": rpo.failed_samples,
                "warmup_secs_not_counted": WARMUP.as_secs(),
                "server_lag_seconds": lag.json(),
                "server_lag_entries": entries.json(),
                "acked_unarchived_age_seconds": exposed.json(),
                "target_lag_p99_seconds": TARGET_LAG_P99_SECS,
                "drain_after_writes_secs": round3(rpo.drain.as_secs_f64()),
                "segments_written": final_count(rpo, "segments_written"),
                "failures": final_count(rpo, "failures"),
                "gaps_recorded": final_count(rpo, "gaps_recorded"),
                "count_after": rpo.check.0,
                "acknowledged_total": rpo.check.1,
            },
            "overhead": {
                "clients": OVERHEAD_CLIENTS,
                "secs": plan.overhead_secs,
                "warmup_secs": WARMUP.as_secs(),
                "rounds": plan.rounds,
                "runs": overhead,
                "median_inserts_per_sec_archiving": median_rate(&r.overhead, true).map(round2),
                "median_inserts_per_sec_not_archiving": median_rate(&r.overhead, false).map(round2),
                "ratio": ratio.map(round3),
                "target_ratio": TARGET_OVERHEAD_RATIO,
            },
            "replay": {
                "writes": plan.replay_writes,
                "clients": OVERHEAD_CLIENTS,
                "writes_acknowledged": replay.writes_acked,
                "writes_failed": replay.writes_failed,
                "write_secs": round3(replay.write_window.as_secs_f64()),
                "writes_per_sec": round2(replay.write_per_sec),
                "archive_drain_secs": round3(replay.drain.as_secs_f64()),
                "segments": replay.segments,
                "destination_bytes": replay.archive_bytes,
                "base_index": replay.base_index,
                "entries_replayed": replay.entries_replayed,
                "replay_secs": round3(replay.replay.as_secs_f64()),
                "entries_per_sec": round2(replay.entries_per_sec()),
                "vs_paced_rate": round2(speed),
                "vs_write_rate": round2(replay.entries_per_sec() / replay.write_per_sec.max(f64::MIN_POSITIVE)),
                "target_vs_paced_rate": TARGET_REPLAY_SPEEDUP,
                "hour_at_paced_rate_replay_secs": round2(projection),
                "rss_before_mib": mib_of_kib(replay.rss_before_kib).map(round2),
                "peak_rss_mib": peak_mib.map(round2),
                "peak_rss_exact": replay.peak_exact,
                "target_rss_mib": TARGET_RSS_MIB,
                "cluster_rows": replay.cluster_rows,
                "replayed_rows": replay.replayed_rows,
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!(
        "raftlite {VERSION} bench --archive: {} cores, load before {}; {ARCHIVE_NODES}-node \
         clusters on loopback, backups to file:// (--backup-interval off), archive \
         --archive-to backup --archive-interval {ARCHIVE_INTERVAL}",
        cores(),
        r.load_before.as_deref().unwrap_or("unknown")
    );
    println!();
    println!(
        "1. archive lag: {} single-row INSERTs/s paced for {} s ({} sent, {} acknowledged, {} \
         failed: {:.1}/s; latest send {:.0} ms behind its slot); the leader's /status read \
         every {} ms, {} samples after the first {} s ({} reads failed)",
        rpo.rate,
        rpo.secs,
        rpo.sent,
        rpo.acked,
        rpo.failed,
        rpo.acked_per_sec,
        rpo.max_late.as_secs_f64() * 1e3,
        SAMPLE_EVERY.as_millis(),
        rpo.samples.len(),
        WARMUP.as_secs(),
        rpo.failed_samples
    );
    println!(
        "   {:<44} {}",
        "server archive.lag_seconds (s):",
        lag.text(3)
    );
    println!(
        "   {:<44} {}",
        "server archive.lag_entries:",
        entries.text(0)
    );
    println!(
        "   {:<44} {}",
        "acknowledged, not yet archived, oldest (s):",
        exposed.text(3)
    );
    println!(
        "   target: lag p99 <= {TARGET_LAG_P99_SECS} s: {} by the server's lag_seconds, {} by \
         the acknowledged-but-unarchived age",
        verdict(lag.p99.map(|p| p <= TARGET_LAG_P99_SECS)),
        verdict(exposed.p99.map(|p| p <= TARGET_LAG_P99_SECS)),
    );
    println!(
        "   (the age: at each sample, the oldest write acknowledged by then whose ack came after \
         archive.last_archived_entry_unix_ms, i.e. what losing every node at that moment could \
         lose at most; an upper bound by up to one write latency)"
    );
    println!(
        "   after the writes: archive caught up {:.2} s after the last ack; {} segments, {} \
         failures, {} gaps; COUNT(*) {} >= {} acknowledged: {}",
        rpo.drain.as_secs_f64(),
        opt(final_count(rpo, "segments_written").map(|n| n as f64), 0),
        opt(final_count(rpo, "failures").map(|n| n as f64), 0),
        opt(final_count(rpo, "gaps_recorded").map(|n| n as f64), 0),
        rpo.check.0,
        rpo.check.1,
        if rpo.check.0 >= rpo.check.1 {
            "ok"
        } else {
            "LOST WRITES"
        }
    );
    println!();
    println!(
        "2. overhead: {OVERHEAD_CLIENTS} clients inserting single rows back to back, {} s after \
         {} s warm-up, a fresh cluster per window, {} round(s) alternating the order",
        plan.overhead_secs,
        WARMUP.as_secs(),
        plan.rounds
    );
    println!(
        "   {:>5} {:>9} {:>10} {:>8} {:>8} {:>7}  stored >= acked",
        "round", "archiving", "writes/s", "p50 ms", "p99 ms", "failed"
    );
    for o in &r.overhead {
        let check = if o.check.0 >= o.check.1 {
            format!("ok ({} >= {})", o.check.0, o.check.1)
        } else {
            format!("LOST ({} < {})", o.check.0, o.check.1)
        };
        println!(
            "   {:>5} {:>9} {:>10.1} {:>8} {:>8} {:>7}  {check}",
            o.round + 1,
            if o.archiving { "on" } else { "off" },
            o.stats.per_sec(),
            opt(o.stats.percentile_ms(0.50), 2),
            opt(o.stats.percentile_ms(0.99), 2),
            o.stats.failed,
        );
    }
    println!(
        "   archiving / not (medians): {}x (target >= {TARGET_OVERHEAD_RATIO:.2}: {})",
        opt(ratio, 3),
        verdict(ratio.map(|x| x >= TARGET_OVERHEAD_RATIO))
    );
    println!();
    println!(
        "3. replay: base backup (POST /backups) at entry {}, then {} single-row INSERTs paced \
         at {}/s: {} acknowledged, {} failed, {:.1}/s over {:.1} s; archive caught up {:.2} s \
         after; {} segments, {:.1} MiB in the destination",
        replay.base_index,
        plan.replay_writes,
        plan.rate,
        replay.writes_acked,
        replay.writes_failed,
        replay.write_per_sec,
        replay.write_window.as_secs_f64(),
        replay.drain.as_secs_f64(),
        replay.segments,
        mib_of(replay.archive_bytes)
    );
    println!(
        "   cluster killed; local half of restore --to-latest in this process (base download + \
         replay into a scratch file): {} entries in {:.2} s = {:.0} entries/s",
        replay.entries_replayed,
        replay.replay.as_secs_f64(),
        replay.entries_per_sec()
    );
    println!(
        "   = {:.1}x the paced rate of {}/s (target >= {TARGET_REPLAY_SPEEDUP:.0}x: {})",
        speed,
        plan.rate,
        verdict(Some(speed >= TARGET_REPLAY_SPEEDUP)),
    );
    println!(
        "   projection: 1 h of {} writes/s ({:.0} entries) would replay in {:.0} s ({:.1} min) \
         at this rate",
        plan.rate,
        plan.rate as f64 * HOUR_SECS,
        projection,
        projection / 60.0
    );
    println!(
        "   peak RSS of this process during the replay: {} MiB ({}; {} MiB before) (target < \
         {TARGET_RSS_MIB:.0} MiB: {})",
        opt(peak_mib, 1),
        if replay.peak_exact {
            "VmHWM reset just before"
        } else {
            "largest VmRSS sampled"
        },
        opt(mib_of_kib(replay.rss_before_kib), 1),
        verdict(peak_mib.map(|m| m < TARGET_RSS_MIB))
    );
    println!(
        "   check: replayed COUNT(*) {} == cluster COUNT(*) {}: {}",
        replay.replayed_rows,
        replay.cluster_rows,
        if replay.replayed_rows == replay.cluster_rows {
            "ok"
        } else {
            "MISMATCH"
        }
    );
    Ok(())
}

/// The figures `--compare-bin` puts side by side.
pub fn figures(r: &ArchiveReport) -> Vec<Figure> {
    let (lag, exposed) = (lag_secs(&r.rpo), exposure(&r.rpo));
    vec![
        Figure::lower("archive lag_seconds p99", lag.p99),
        Figure::lower("acknowledged unarchived age p99: s", exposed.p99),
        Figure::higher(
            "inserts/s archiving (median)",
            median_rate(&r.overhead, true),
        ),
        Figure::higher(
            "inserts/s not archiving (median)",
            median_rate(&r.overhead, false),
        ),
        Figure::higher("archiving / not", overhead_ratio(&r.overhead)),
        Figure::higher("replay entries/s", Some(r.replay.entries_per_sec())),
        Figure::lower("replay peak RSS: MiB", mib_of_kib(r.replay.peak_kib)),
    ]
}

/// The figures are printed either way; a run that lost acknowledged writes, or whose replay
/// does not reproduce the cluster's rows, must not pass.
pub fn check(r: &ArchiveReport) -> anyhow::Result<()> {
    let (count, acked) = r.rpo.check;
    if count < acked {
        bail!("the archive-lag cluster lost acknowledged writes: COUNT(*) {count} < {acked}");
    }
    if let Some(o) = r.overhead.iter().find(|o| o.check.0 < o.check.1) {
        bail!(
            "the overhead cluster of round {} (archiving {}) lost acknowledged writes: COUNT(*) \
             {} < {}",
            o.round + 1,
            o.archiving,
            o.check.0,
            o.check.1
        );
    }
    let replay = &r.replay;
    if replay.replayed_rows != replay.cluster_rows {
        bail!(
            "the replayed database holds {} rows, the cluster {}: the archive replay is wrong",
            replay.replayed_rows,
            replay.cluster_rows
        );
    }
    Ok(())
}
