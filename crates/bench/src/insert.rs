//! The default measurement: acknowledged single-row INSERTs per second through the HTTP API of
//! 1..N-node clusters under 1..N clients, beside plain SQLite.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::compare::Figure;
use crate::http::{self, count_rows, post, result_error, CREATE, INSERT, VALUE};
use crate::report::{cores, opt, round2, VERSION};
use crate::writers::{join_writers, spawn_writers, window_stats, Stats, WARMUP};
use crate::BenchArgs;

/// One measured configuration: a line of the table.
pub struct Row {
    pub cluster: String,
    pub clients: usize,
    stats: Stats,
    /// `SELECT COUNT(*)` after the run and the inserts acknowledged so far (warm-up included);
    /// `None` for the SQLite baseline, which has nothing to verify.
    pub check: Option<(u64, u64)>,
}

/// The SQLite baseline, then every cluster size under every client count, the clusters'
/// files under `work`.
pub async fn measure(args: &BenchArgs, server: &Path, work: &Path) -> anyhow::Result<Vec<Row>> {
    let duration = Duration::from_secs(args.duration_secs);
    eprintln!(
        "bench: sqlite baseline for {duration:?} (work dir {})",
        work.display()
    );
    let db = work.join("baseline.sqlite");
    let stats = tokio::task::spawn_blocking(move || sqlite_baseline(&db, duration))
        .await
        .context("the sqlite baseline thread failed")??;
    let mut rows = vec![Row {
        cluster: "sqlite baseline".into(),
        clients: 1,
        stats,
        check: None,
    }];

    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let http = http::client(Some(max_clients))?;
    for &size in &args.nodes {
        let name = format!("{size}-node");
        eprintln!("bench: starting a {name} cluster");
        let mut cluster = Cluster::new(server, work.join(&name), Vec::new());
        let result = measure_cluster(&mut cluster, &http, size, &args.clients, duration).await;
        match result {
            Ok(stats) => rows.extend(stats.into_iter().map(|(clients, stats, check)| Row {
                cluster: name.clone(),
                clients,
                stats,
                check: Some(check),
            })),
            Err(e) => {
                cluster.print_log_tails();
                return Err(e.context(format!("{name} cluster")));
            }
        }
    } // `cluster` is dropped here: its nodes are killed before the next one starts.
    Ok(rows)
}

/// Plain SQLite as durable as it gets: WAL, `synchronous=FULL`, one autocommit INSERT at a time.
fn sqlite_baseline(path: &Path, duration: Duration) -> anyhow::Result<Stats> {
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("{} refused WAL mode (got {mode})", path.display());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute(CREATE, [])?;
    let mut insert = conn.prepare(INSERT)?;
    let start = Instant::now();
    let (measure_from, end) = (start + WARMUP, start + WARMUP + duration);
    let mut stats = Stats {
        window: duration,
        ..Stats::default()
    };
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        insert.execute([VALUE])?;
        let t1 = Instant::now();
        if t0 >= measure_from && t1 <= end {
            stats.acked += 1;
            stats.latencies.push(t1 - t0);
        }
    }
    stats.latencies.sort_unstable();
    Ok(stats)
}

/// Starts the cluster, creates the table and measures every client count in turn.
async fn measure_cluster(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    size: usize,
    clients: &[usize],
    duration: Duration,
) -> anyhow::Result<Vec<(usize, Stats, (u64, u64))>> {
    let leader = cluster.start(http, size).await?;
    let created = post(http, &format!("{leader}/db/execute"), &json!([CREATE])).await?;
    if let Some(err) = result_error(&created) {
        bail!("CREATE TABLE failed: {err}");
    }
    let mut acked_total = 0;
    let mut out = Vec::new();
    for &n in clients {
        eprintln!("bench: {size}-node, {n} clients for {duration:?}");
        let start = Instant::now();
        let (measure_from, end) = (start + WARMUP, start + WARMUP + duration);
        let writers = spawn_writers(http, &leader, n, move |now| now >= end);
        let samples = join_writers(writers).await?;
        let (stats, acked) = window_stats(samples, measure_from, end);
        acked_total += acked;
        stats.print_failures(&format!("bench: {size}-node, {n} clients: "));
        let count = count_rows(http, &leader).await?;
        out.push((n, stats, (count, acked_total)));
    }
    Ok(out)
}

pub fn print_report(args: &BenchArgs, rows: &[Row]) -> anyhow::Result<()> {
    let baseline = rows.first().map_or(0.0, |r| r.stats.per_sec());
    let ratio = |r: &Row| r.stats.per_sec() / baseline.max(f64::MIN_POSITIVE);
    if args.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "cluster": r.cluster,
                    "clients": r.clients,
                    "inserts_per_sec": round2(r.stats.per_sec()),
                    "ratio_vs_baseline": round2(ratio(r)),
                    "p50_ms": r.stats.percentile_ms(0.50).map(round2),
                    "p99_ms": r.stats.percentile_ms(0.99).map(round2),
                    "acknowledged": r.stats.acked,
                    "failed": r.stats.failed,
                    "failures": r.stats.failures,
                    "count_after": r.check.map(|c| c.0),
                    "acknowledged_total": r.check.map(|c| c.1),
                })
            })
            .collect();
        let doc = json!({
            "raftlite_version": VERSION,
            "cores": cores(),
            "duration_secs": args.duration_secs,
            "warmup_secs": WARMUP.as_secs(),
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "raftlite {VERSION} bench, {} cores: acknowledged single-row INSERTs, {} s per row after {} s warm-up",
        cores(),
        args.duration_secs,
        WARMUP.as_secs()
    );
    println!(
        "{:<16} {:>7} {:>10} {:>9} {:>8} {:>8} {:>7}  COUNT(*) >= acked",
        "cluster", "clients", "inserts/s", "vs sqlite", "p50 ms", "p99 ms", "failed"
    );
    for r in rows {
        let check = match r.check {
            None => String::new(),
            Some((count, acked)) if count >= acked => format!("ok ({count} >= {acked})"),
            Some((count, acked)) => format!("LOST ({count} < {acked})"),
        };
        println!(
            "{:<16} {:>7} {:>10.1} {:>8.2}x {:>8} {:>8} {:>7}  {check}",
            r.cluster,
            r.clients,
            r.stats.per_sec(),
            ratio(r),
            opt(r.stats.percentile_ms(0.50), 2),
            opt(r.stats.percentile_ms(0.99), 2),
            r.stats.failed,
        );
    }
    Ok(())
}

/// Each row's inserts/s and latencies (the SQLite baseline shows how noisy the machine is).
pub fn figures(rows: &[Row]) -> Vec<Figure> {
    rows.iter()
        .flat_map(|r| {
            let name = if r.check.is_some() {
                format!("{}, {} clients", r.cluster, r.clients)
            } else {
                r.cluster.clone()
            };
            [
                Figure::higher(format!("{name}: inserts/s"), Some(r.stats.per_sec())),
                Figure::lower(format!("{name}: p50 ms"), r.stats.percentile_ms(0.50)),
                Figure::lower(format!("{name}: p99 ms"), r.stats.percentile_ms(0.99)),
            ]
        })
        .collect()
}
