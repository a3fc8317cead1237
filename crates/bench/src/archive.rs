//! `raftlite-bench --archive`: what the continuous log archive (issue 20) costs and gives.
//!
//! One run, on one machine, three parts (each on its own 3-node loopback cluster of real
//! `raftlite serve` processes, killed before the next part starts):
//!
//! 1. **RPO / archive lag.** The cluster backs up to a `file://` destination with
//!    `--backup-interval off --archive-to backup --archive-interval 1s`. A paced writer sends
//!    `--archive-rate` single-row INSERTs per second (each due at a fixed moment, sent by one of
//!    [`PACED_WORKERS`] tasks; late ones go out at once) for `--archive-rpo-secs`, while the
//!    leader's `/status?key=archive` is read every [`SAMPLE_EVERY`]. Two figures:
//!    - the server's own `lag_seconds` and `lag_entries` as sampled (its view, refreshed by the
//!      archiver once per pass);
//!    - the exposure measured from outside: at each sample (time `t`, when the answer arrived),
//!      the oldest write acknowledged by `t` that the archive may not hold yet, i.e. the first
//!      write acknowledged after `last_archived_entry_unix_ms` (the leader's stamp of the newest
//!      archived write; same machine, same clock). Its age `t - ack` is what losing every node
//!      at `t` could lose, at most: an upper bound, by up to one write's latency, since a write
//!      is stamped before it is acknowledged. Zero when every acknowledged write is archived.
//!
//!    Samples of the first [`WARMUP`] are not counted. After the writes stop, the time until the
//!    archive holds everything applied is reported too.
//! 2. **Overhead.** [`OVERHEAD_CLIENTS`] clients inserting single rows back to back for
//!    `--duration-secs` after [`WARMUP`] (the insert bench's loop), on a cluster with the same
//!    backup settings and `--archive-to off`, and on one archiving as in part 1;
//!    `--archive-rounds` rounds, alternating which goes first. Archiving / not, as a ratio of
//!    the medians.
//! 3. **Replay.** A cluster archiving as in part 1 takes one base backup (`POST /backups`, the
//!    table still empty), then `--archive-replay-writes` single-row INSERTs paced at
//!    `--archive-rate` as in part 1 (one log entry each, the workload the replay target speaks
//!    of). Once the archive holds every applied entry the cluster is killed, and
//!    this process runs the local half of `raftlite restore --to-latest`
//!    ([`prepare_point_in_time`]: base download + replay of every archived entry) into a scratch
//!    directory, timed, its own peak RSS measured (VmHWM reset just before, and VmRSS sampled).
//!    The replayed file's `COUNT(*)` must equal the cluster's.
//!
//! The report is printed by [`crate::archive_report`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use raftlite_restore::point_in_time::{prepare_point_in_time, Target};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::http::{self, count_rows, execute_each, get_json, CREATE};
use crate::proc::{load_average, proc_mem, reset_hwm, sample_peaks};
use crate::tools::{create_dir_in, file_url};
use crate::writers::{measure_runs, RaftliteInsert, Stats, WriteOp, WARMUP};
use crate::BenchArgs;

/// Nodes of every cluster in this mode.
pub const ARCHIVE_NODES: usize = 3;
/// Concurrent clients of the overhead windows and of the replay part's writes.
pub const OVERHEAD_CLIENTS: usize = 64;
/// Tasks sending the paced writes: enough that a few slow writes do not hold the pace back.
pub const PACED_WORKERS: usize = 32;
/// How often the leader's `/status` is read during the paced writes.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The archive setting measured (the default `--archive-interval`).
pub const ARCHIVE_INTERVAL: &str = "1s";
/// The targets.
pub const TARGET_LAG_P99_SECS: f64 = 1.0;
pub const TARGET_OVERHEAD_RATIO: f64 = 0.90;
pub const TARGET_REPLAY_SPEEDUP: f64 = 20.0;
pub const TARGET_RSS_MIB: f64 = 300.0;
/// How long the archive may take to catch up once the writes stop.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// The mode's settings, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct ArchivePlan {
    pub rate: u64,
    pub rpo_secs: u64,
    pub overhead_secs: u64,
    pub rounds: u32,
    pub replay_writes: u64,
}

impl ArchivePlan {
    pub fn of(args: &BenchArgs) -> ArchivePlan {
        ArchivePlan {
            rate: args.archive_rate,
            rpo_secs: args.archive_rpo_secs,
            overhead_secs: args.duration_secs,
            rounds: args.archive_rounds,
            replay_writes: args.archive_replay_writes,
        }
    }
}

/// One read of the leader's `/status` `archive` object.
#[derive(Clone, Debug)]
pub struct ArchiveSample {
    /// When the answer arrived (Unix ms, this machine's clock).
    pub at_ms: f64,
    pub lag_seconds: Option<f64>,
    pub lag_entries: Option<u64>,
    pub last_entry_unix_ms: Option<i64>,
}

/// Part 1.
pub struct RpoRun {
    pub rate: u64,
    pub secs: u64,
    /// Writes sent, acknowledged, failed; the acknowledged rate over the whole run.
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub acked_per_sec: f64,
    /// The latest any write went out after its due time.
    pub max_late: Duration,
    /// Samples inside the counted window; reads of `/status` that failed.
    pub samples: Vec<ArchiveSample>,
    pub failed_samples: u64,
    /// Per counted sample: the age of the oldest acknowledged write not known archived (s).
    pub exposure_secs: Vec<f64>,
    /// From the last write's acknowledgment to the archive holding everything applied.
    pub drain: Duration,
    /// The archive object at the end.
    pub final_archive: Value,
    /// `COUNT(*)` at the end and the writes acknowledged.
    pub check: (u64, u64),
}

/// One window of part 2.
pub struct OverheadRun {
    pub archiving: bool,
    pub round: u32,
    pub stats: Stats,
    pub check: (u64, u64),
}

/// Part 3.
pub struct ReplayRun {
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub write_window: Duration,
    pub write_per_sec: f64,
    /// From the last acknowledged write to the archive holding everything applied.
    pub drain: Duration,
    pub segments: u64,
    pub archive_bytes: u64,
    pub base_index: u64,
    pub entries_replayed: u64,
    pub replay: Duration,
    pub rss_before_kib: Option<u64>,
    pub peak_kib: Option<u64>,
    pub peak_exact: bool,
    /// `COUNT(*)` of the cluster and of the replayed file.
    pub cluster_rows: u64,
    pub replayed_rows: u64,
}

impl ReplayRun {
    pub fn entries_per_sec(&self) -> f64 {
        self.entries_replayed as f64 / self.replay.as_secs_f64().max(1e-9)
    }
}

pub struct ArchiveReport {
    pub plan: ArchivePlan,
    pub load_before: Option<String>,
    pub rpo: RpoRun,
    pub overhead: Vec<OverheadRun>,
    pub replay: ReplayRun,
}

/// Every part in turn, under `work`.
pub async fn measure(
    args: &BenchArgs,
    server: &Path,
    work: &Path,
) -> anyhow::Result<ArchiveReport> {
    let plan = ArchivePlan::of(args);
    let load_before = load_average();
    let http = http::client(Some(OVERHEAD_CLIENTS + PACED_WORKERS))?;

    eprintln!(
        "bench: part 1/3, archive lag: {} writes/s for {} s (work dir {})",
        plan.rate,
        plan.rpo_secs,
        work.display()
    );
    let (mut cluster, _) = archiving_cluster(server, work, "rpo", true)?;
    let rpo = rpo_part(&mut cluster, &http, plan).await;
    let rpo = with_logs(&cluster, rpo)?;
    drop(cluster);

    let mut overhead = Vec::new();
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for archiving in order {
            let name = format!("overhead-{round}-{}", if archiving { "on" } else { "off" });
            eprintln!(
                "bench: part 2/3, round {}/{}: {OVERHEAD_CLIENTS} clients, archiving {}",
                round + 1,
                plan.rounds,
                if archiving { "on" } else { "off" }
            );
            let (mut cluster, _) = archiving_cluster(server, work, &name, archiving)?;
            let duration = Duration::from_secs(plan.overhead_secs);
            let measured = overhead_window(&mut cluster, &http, archiving, duration).await;
            let (stats, check) = with_logs(&cluster, measured)?;
            drop(cluster);
            eprintln!("bench: {:.1} inserts/s", stats.per_sec());
            overhead.push(OverheadRun {
                archiving,
                round,
                stats,
                check,
            });
        }
    }

    eprintln!(
        "bench: part 3/3, replay: a base backup, {} writes paced at {}/s, then the local half \
         of restore --to-latest",
        plan.replay_writes, plan.rate
    );
    let replay = replay_part(&http, server, work, plan).await?;
    Ok(ArchiveReport {
        plan,
        load_before,
        rpo,
        overhead,
        replay,
    })
}

/// A cluster (not started) under `work/name` backing up to its own `file://` destination
/// (`work/name-dest`, returned too) on demand only, archiving the log there when `archiving`.
fn archiving_cluster(
    server: &Path,
    work: &Path,
    name: &str,
    archiving: bool,
) -> anyhow::Result<(Cluster, PathBuf)> {
    let dest = create_dir_in(work, &format!("{name}-dest"))?;
    let mut extra = vec![
        "--backup-to".to_string(),
        file_url(&dest)?,
        // A scheduled backup landing in one window and not another would decide the figures.
        "--backup-interval".into(),
        "off".into(),
        "--archive-to".into(),
    ];
    if archiving {
        extra.extend([
            "backup".into(),
            "--archive-interval".into(),
            ARCHIVE_INTERVAL.into(),
        ]);
    } else {
        extra.push("off".into());
    }
    Ok((Cluster::new(server, work.join(name), extra), dest))
}

/// `outcome` of work on `cluster`; a failure prints the nodes' last log lines first.
fn with_logs<T>(cluster: &Cluster, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
    outcome.map_err(|e| {
        cluster.print_log_tails();
        e.context(format!("cluster under {}", cluster.dir.display()))
    })
}

/// One window of part 2 on `cluster` (started here).
async fn overhead_window(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    archiving: bool,
    duration: Duration,
) -> anyhow::Result<(Stats, (u64, u64))> {
    let leader = cluster.start(http, ARCHIVE_NODES).await?;
    execute_each(http, &leader, &[CREATE]).await?;
    let label = format!("archiving {}", if archiving { "on" } else { "off" });
    let leader = leader.as_str();
    let mut runs = measure_runs(
        &label,
        &[OVERHEAD_CLIENTS],
        duration,
        |_| RaftliteInsert::new(http, leader),
        move || count_rows(http, leader),
    )
    .await?;
    let m = runs
        .pop()
        .ok_or_else(|| anyhow!("no measurement came back"))?;
    Ok((m.stats, m.check))
}

fn unix_ms_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Part 1 on `cluster` (started here).
async fn rpo_part(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    plan: ArchivePlan,
) -> anyhow::Result<RpoRun> {
    let leader = cluster.start(http, ARCHIVE_NODES).await?;
    execute_each(http, &leader, &[CREATE]).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_archive(http.clone(), leader.clone(), stop.clone()));
    let started_ms = unix_ms_now();
    let paced = paced_writes(http, &leader, plan.rate, plan.rpo_secs).await;
    let ended_ms = unix_ms_now();
    stop.store(true, Ordering::Relaxed);
    let (all_samples, failed_samples) = sampler.await.context("the /status sampler failed")?;
    let paced = paced?;

    let applied = applied_index(http, &leader).await?;
    let last_ack = paced.acks_ms.last().copied().unwrap_or(ended_ms);
    let what = format!("the archive to hold entry {applied}");
    wait_archived(cluster, http, &leader, applied, &what).await?;
    let drain = Duration::from_secs_f64(((unix_ms_now() - last_ack) / 1e3).max(0.0));
    let final_archive = archive_status(http, &leader)
        .await
        .map_err(|e| anyhow!(e))?;
    let count = count_rows(http, &leader).await?;

    let from_ms = started_ms + WARMUP.as_secs_f64() * 1e3;
    let samples: Vec<ArchiveSample> = all_samples
        .into_iter()
        .filter(|s| s.at_ms >= from_ms && s.at_ms <= ended_ms)
        .collect();
    let exposure_secs = samples
        .iter()
        .map(|s| unarchived_age_ms(&paced.acks_ms, s.at_ms, s.last_entry_unix_ms) / 1e3)
        .collect();
    let window = ((ended_ms - started_ms) / 1e3).max(1e-9);
    Ok(RpoRun {
        rate: plan.rate,
        secs: plan.rpo_secs,
        sent: paced.sent,
        acked: paced.acks_ms.len() as u64,
        failed: paced.failed,
        acked_per_sec: paced.acks_ms.len() as f64 / window,
        max_late: paced.max_late,
        samples,
        failed_samples,
        exposure_secs,
        drain,
        final_archive,
        check: (count, paced.acks_ms.len() as u64),
    })
}

/// What the paced writer saw.
struct Paced {
    sent: u64,
    failed: u64,
    /// Acknowledgment times (Unix ms), sorted.
    acks_ms: Vec<f64>,
    max_late: Duration,
}

/// `rate` writes per second for `secs`: write `k` is due `k / rate` seconds after the start;
/// [`PACED_WORKERS`] tasks take the next write, wait for its moment and send it.
async fn paced_writes(
    http: &reqwest::Client,
    leader: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Paced> {
    let total = rate.saturating_mul(secs);
    let next = Arc::new(AtomicU64::new(0));
    let op = RaftliteInsert::new(http, leader);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..PACED_WORKERS {
        let (next, op) = (next.clone(), op.clone());
        tasks.spawn(async move {
            let mut acks = Vec::new();
            let (mut sent, mut failed, mut max_late) = (0u64, 0u64, Duration::ZERO);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= total {
                    break;
                }
                let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
                max_late = max_late.max(tokio::time::Instant::now().saturating_duration_since(due));
                sent += 1;
                match op.send(worker, k).await {
                    Ok(()) => acks.push(unix_ms_now()),
                    Err(_) => failed += 1,
                }
            }
            (acks, sent, failed, max_late)
        });
    }
    let mut out = Paced {
        sent: 0,
        failed: 0,
        acks_ms: Vec::with_capacity(usize::try_from(total).unwrap_or(0)),
        max_late: Duration::ZERO,
    };
    while let Some(done) = tasks.join_next().await {
        let (acks, sent, failed, late) = done.context("a paced writer failed")?;
        out.acks_ms.extend(acks);
        out.sent += sent;
        out.failed += failed;
        out.max_late = out.max_late.max(late);
    }
    out.acks_ms.sort_by(f64::total_cmp);
    Ok(out)
}

/// Reads the leader's archive status every [`SAMPLE_EVERY`] until `stop`; returns the samples
/// and how many reads failed.
async fn sample_archive(
    http: reqwest::Client,
    leader: String,
    stop: Arc<AtomicBool>,
) -> (Vec<ArchiveSample>, u64) {
    let mut samples = Vec::new();
    let mut failed = 0u64;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        match archive_status(&http, &leader).await {
            Ok(doc) => samples.push(ArchiveSample {
                at_ms: unix_ms_now(),
                lag_seconds: doc.get("lag_seconds").and_then(Value::as_f64),
                lag_entries: doc.get("lag_entries").and_then(Value::as_u64),
                last_entry_unix_ms: doc
                    .get("last_archived_entry_unix_ms")
                    .and_then(Value::as_i64),
            }),
            Err(_) => failed += 1,
        }
    }
    (samples, failed)
}

/// The leader's `/status` `archive` object.
async fn archive_status(http: &reqwest::Client, leader: &str) -> Result<Value, String> {
    let doc = get_json(http, &format!("{leader}/status"))
        .await
        .map_err(|e| format!("{e:#}"))?;
    match doc.get("archive") {
        Some(a) if a.get("destination").is_some_and(|d| !d.is_null()) => Ok(a.clone()),
        _ => Err(format!(
            "/status has no archive (is this server built with the log archive?): {doc}"
        )),
    }
}

async fn applied_index(http: &reqwest::Client, leader: &str) -> anyhow::Result<u64> {
    let doc = get_json(http, &format!("{leader}/status")).await?;
    doc.pointer("/store/raft/applied_index")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("/status of {leader} has no store.raft.applied_index"))
}

/// Waits until the leader's archive holds entry `index`, failing early on a recorded gap.
/// Each read is bounded by [`crate::waits::DEADLINE`]; the archive gets [`DRAIN_DEADLINE`].
async fn wait_archived(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    leader: &str,
    index: u64,
    what: &str,
) -> anyhow::Result<()> {
    let give_up = Instant::now() + DRAIN_DEADLINE;
    loop {
        let last = cluster
            .wait_for(what, || async {
                let a = archive_status(http, leader).await?;
                if a.get("gaps_recorded").and_then(Value::as_u64).unwrap_or(0) > 0 {
                    return Ok(Err(format!("the archive recorded a gap: {a}")));
                }
                Ok(Ok(a
                    .get("last_archived_index")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)))
            })
            .await?
            .map_err(|e| anyhow!(e))?;
        if last >= index {
            return Ok(());
        }
        if Instant::now() >= give_up {
            bail!("timed out after {DRAIN_DEADLINE:?} waiting for {what} (at {last})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// At `at_ms`, the age in ms of the oldest write in `acks_ms` (acknowledgment times, sorted)
/// acknowledged by then and after `last_archived_ms` (the newest archived write's stamp: a
/// write acknowledged before it was stamped before it, so is archived); 0 when there is none.
pub fn unarchived_age_ms(acks_ms: &[f64], at_ms: f64, last_archived_ms: Option<i64>) -> f64 {
    let first = match last_archived_ms {
        Some(l) => acks_ms.partition_point(|&a| a <= l as f64),
        None => 0,
    };
    match acks_ms.get(first) {
        Some(&ack) if ack <= at_ms => at_ms - ack,
        _ => 0.0,
    }
}

/// Nearest-rank percentile of `sorted` (`p` in 0..=1); `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
    sorted.get(rank - 1).copied()
}

/// Part 3.
async fn replay_part(
    http: &reqwest::Client,
    server: &Path,
    work: &Path,
    plan: ArchivePlan,
) -> anyhow::Result<ReplayRun> {
    let (mut cluster, dest_dir) = archiving_cluster(server, work, "replay", true)?;
    let dest_url = file_url(&dest_dir)?;
    let built = replay_build(&mut cluster, http, plan.replay_writes, plan.rate).await;
    let built = with_logs(&cluster, built)?;
    // The replay is measured on a quiet machine: the nodes go before it starts.
    drop(cluster);
    let (stats, drain, segments, cluster_rows) = built;
    let archive_bytes = tree_bytes(&dest_dir);

    let dest = raftlite_backup::Destination::parse(&dest_url)
        .with_context(|| format!("cannot open {dest_url}"))?;
    let scratch = create_dir_in(work, "replay-scratch")?;
    let me = std::process::id();
    let before = proc_mem(me);
    let exact = reset_hwm(me);
    let started = Instant::now();
    let mut say = |line: String| eprintln!("bench: restore: {line}");
    let (prepared, sampled) = sample_peaks(
        &[me],
        prepare_point_in_time(&dest, None, Target::Latest, None, &scratch, &mut say),
    )
    .await;
    let replay = started.elapsed();
    let prepared = prepared.map_err(|e| anyhow!("the point-in-time replay failed: {e}"))?;
    let after = proc_mem(me);
    let sampled = sampled.into_iter().flatten().max();
    let peak_kib = match (exact, after) {
        (true, Some(m)) => Some(m.hwm_kib).max(sampled),
        _ => sampled,
    };
    let replayed_rows = {
        let path = prepared.path.clone();
        tokio::task::spawn_blocking(move || count_file_rows(&path))
            .await
            .context("the row count thread failed")??
    };
    Ok(ReplayRun {
        writes_acked: stats.acked,
        writes_failed: stats.failed,
        write_window: stats.window,
        write_per_sec: stats.per_sec(),
        drain,
        segments,
        archive_bytes,
        base_index: prepared.base_index,
        entries_replayed: prepared.entries_replayed,
        replay,
        rss_before_kib: before.map(|m| m.rss_kib),
        peak_kib,
        peak_exact: exact && after.is_some(),
        cluster_rows,
        replayed_rows,
    })
}

/// Part 3's cluster work on `cluster` (started here): the base backup, `writes` inserts, the
/// archive caught up. Returns the writes' figures, the catch-up time, the segments written and
/// the cluster's `COUNT(*)`.
async fn replay_build(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    writes: u64,
    rate: u64,
) -> anyhow::Result<(Stats, Duration, u64, u64)> {
    let leader = cluster.start(http, ARCHIVE_NODES).await?;
    execute_each(http, &leader, &[CREATE]).await?;
    let url = format!("{leader}/backups");
    let resp = http
        .post(&url)
        .timeout(DRAIN_DEADLINE)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "POST {url} (the base backup): HTTP {status}: {}",
            text.trim()
        );
    }

    // The workload: single-row writes at the paced rate, one log entry each (64
    // clients back to back would group many writes per entry and flatter the replay).
    let secs = writes.div_ceil(rate.max(1));
    let start = Instant::now();
    let paced = paced_writes(http, &leader, rate, secs).await?;
    let end = Instant::now();
    let stats = Stats {
        acked: paced.acks_ms.len() as u64,
        failed: paced.failed,
        latencies: Vec::new(),
        window: end - start,
        failures: Default::default(),
    };
    let applied = applied_index(http, &leader).await?;
    let what = format!("the archive to hold entry {applied}");
    wait_archived(cluster, http, &leader, applied, &what).await?;
    let drain = end.elapsed();
    let a = archive_status(http, &leader)
        .await
        .map_err(|e| anyhow!(e))?;
    let segments = a
        .get("segments_written")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let rows = count_rows(http, &leader).await?;
    if rows < stats.acked {
        bail!(
            "the cluster lost acknowledged writes: COUNT(*) {rows} < {} acknowledged",
            stats.acked
        );
    }
    Ok((stats, drain, segments, rows))
}

fn count_file_rows(path: &Path) -> anyhow::Result<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open the replayed file {}", path.display()))?;
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM bench", [], |r| r.get(0))
        .with_context(|| format!("cannot count the rows of {}", path.display()))?;
    u64::try_from(n).map_err(|_| anyhow!("COUNT(*) of {} is negative", path.display()))
}

/// The bytes of every file under `dir` (best effort: unreadable entries count 0).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => todo.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_acknowledged_write_after_the_archive_is_the_exposure() {
        let acks = [100.0, 200.0, 300.0, 400.0];
        // Nothing archived yet: the first acknowledged write counts.
        assert_eq!(unarchived_age_ms(&acks, 350.0, None), 250.0);
        // Archived up to a stamp of 250: the write acknowledged at 300 is the oldest exposed.
        assert_eq!(unarchived_age_ms(&acks, 350.0, Some(250)), 50.0);
        // A write acknowledged exactly at the stamp was stamped no later: archived.
        assert_eq!(unarchived_age_ms(&acks, 350.0, Some(300)), 0.0);
        // Everything archived, or the next write not acknowledged yet at the sample.
        assert_eq!(unarchived_age_ms(&acks, 500.0, Some(400)), 0.0);
        assert_eq!(unarchived_age_ms(&acks, 150.0, Some(100)), 0.0);
        assert_eq!(unarchived_age_ms(&[], 150.0, None), 0.0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
