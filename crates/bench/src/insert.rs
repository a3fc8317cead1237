//! The default measurement: acknowledged single-row INSERTs per second through the HTTP API of
//! 1..N-node clusters under 1..N clients, beside plain SQLite and, when an `etcd` binary is
//! found, beside etcd clusters of the same sizes doing the same number of clients' puts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::compare::Figure;
use crate::etcd::{self, EtcdCluster, EtcdPlan, CLIENTS_SEND_TO};
use crate::http::{self, count_rows, post, result_error, CREATE, INSERT, VALUE};
use crate::report::{cores, opt, round2, VERSION};
use crate::writers::{measure_runs, Measured, RaftliteInsert, Stats, WARMUP};
use crate::BenchArgs;

/// What a row measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Sqlite,
    Raftlite,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Sqlite => "sqlite",
            System::Raftlite => "raftlite",
            System::Etcd => "etcd",
        }
    }
}

/// One measured configuration: a line of the table.
pub struct Row {
    pub system: System,
    /// The cluster's size (1 for the SQLite baseline).
    pub nodes: usize,
    pub clients: usize,
    stats: Stats,
    /// What the cluster holds after the run (`SELECT COUNT(*)`, etcd's key count) and the
    /// writes acknowledged on it so far (warm-up included); `None` for the SQLite baseline,
    /// which has nothing to verify.
    pub check: Option<(u64, u64)>,
}

impl Row {
    /// The row's name in the table and in error messages.
    pub fn label(&self) -> String {
        match self.system {
            System::Sqlite => "sqlite baseline".into(),
            other => format!("{} {}-node", other.name(), self.nodes),
        }
    }

    fn measured(system: System, nodes: usize, m: Measured) -> Row {
        Row {
            system,
            nodes,
            clients: m.clients,
            stats: m.stats,
            check: Some(m.check),
        }
    }
}

/// The insert measurement's outcome: its rows and what became of etcd.
pub struct InsertReport {
    pub rows: Vec<Row>,
    pub etcd: EtcdPlan,
}

/// The SQLite baseline, then every cluster size under every client count (raftlite, then etcd
/// of the same size when `etcd` says so), the clusters' files under `work`.
pub async fn measure(
    args: &BenchArgs,
    server: &Path,
    work: &Path,
    etcd: &EtcdPlan,
) -> anyhow::Result<InsertReport> {
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
        system: System::Sqlite,
        nodes: 1,
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
            Ok(runs) => rows.extend(
                runs.into_iter()
                    .map(|m| Row::measured(System::Raftlite, size, m)),
            ),
            Err(e) => {
                cluster.print_log_tails();
                return Err(e.context(format!("{name} cluster")));
            }
        }
        drop(cluster); // its nodes are killed before etcd or the next cluster starts

        if let EtcdPlan::Run { bin, .. } = etcd {
            eprintln!(
                "bench: starting a {size}-member etcd cluster ({})",
                bin.display()
            );
            let mut cluster = EtcdCluster::new(bin, work.join(format!("etcd-{name}")));
            let result =
                etcd::measure_cluster(&mut cluster, &http, size, &args.clients, duration).await;
            match result {
                Ok(runs) => rows.extend(
                    runs.into_iter()
                        .map(|m| Row::measured(System::Etcd, size, m)),
                ),
                Err(e) => {
                    cluster.print_log_tails();
                    return Err(e.context(format!(
                        "etcd {name} cluster (--no-etcd measures raftlite without etcd)"
                    )));
                }
            }
        } // the etcd cluster is dropped here: its members are killed.
    }
    Ok(InsertReport {
        rows,
        etcd: etcd.clone(),
    })
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
) -> anyhow::Result<Vec<Measured>> {
    let leader = cluster.start(http, size).await?;
    let created = post(http, &format!("{leader}/db/execute"), &json!([CREATE])).await?;
    if let Some(err) = result_error(&created) {
        bail!("CREATE TABLE failed: {err}");
    }
    let label = format!("raftlite {size}-node");
    let leader = leader.as_str();
    measure_runs(
        &label,
        clients,
        duration,
        |_| RaftliteInsert::new(http, leader),
        move || count_rows(http, leader),
    )
    .await
}

/// raftlite beside etcd for one cluster size and client count.
#[derive(Debug, PartialEq)]
pub struct VsEtcd {
    pub nodes: usize,
    pub clients: usize,
    pub raftlite: f64,
    pub etcd: f64,
}

impl VsEtcd {
    /// raftlite's writes/s over etcd's; `None` when etcd acknowledged nothing.
    pub fn ratio(&self) -> Option<f64> {
        (self.etcd > 0.0).then(|| self.raftlite / self.etcd)
    }
}

/// Each raftlite row paired with the etcd row of the same size and client count (the n-th
/// with the n-th when a count is measured more than once).
pub fn vs_etcd(rows: &[Row]) -> Vec<VsEtcd> {
    let mut etcd: Vec<Option<&Row>> = rows
        .iter()
        .filter(|r| r.system == System::Etcd)
        .map(Some)
        .collect();
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.system == System::Raftlite) {
        let twin = etcd
            .iter_mut()
            .find(|e| e.is_some_and(|e| e.nodes == r.nodes && e.clients == r.clients))
            .and_then(Option::take);
        if let Some(e) = twin {
            out.push(VsEtcd {
                nodes: r.nodes,
                clients: r.clients,
                raftlite: r.stats.per_sec(),
                etcd: e.stats.per_sec(),
            });
        }
    }
    out
}

/// How etcd was measured, or why not, in one line.
fn etcd_line(plan: &EtcdPlan) -> String {
    match plan {
        EtcdPlan::Run { bin, version } => format!(
            "etcd {version} ({}), default durability: a put of a key of its own with a {}-byte \
             value through POST /v3/kv/put (JSON gateway); raftlite: an INSERT of the same value \
             through POST /db/execute; all clients send to the {CLIENTS_SEND_TO}",
            bin.display(),
            VALUE.len()
        ),
        EtcdPlan::Skip(why) => format!("etcd skipped: {why}"),
    }
}

pub fn print_report(args: &BenchArgs, report: &InsertReport) -> anyhow::Result<()> {
    let rows = &report.rows;
    let baseline = rows.first().map_or(0.0, |r| r.stats.per_sec());
    let ratio = |r: &Row| r.stats.per_sec() / baseline.max(f64::MIN_POSITIVE);
    let pairs = vs_etcd(rows);
    if args.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                let rate = if r.system == System::Etcd {
                    "puts_per_sec"
                } else {
                    "inserts_per_sec"
                };
                let mut row = json!({
                    "system": r.system.name(),
                    "cluster": r.label(),
                    "nodes": r.nodes,
                    "clients": r.clients,
                    rate: round2(r.stats.per_sec()),
                    "ratio_vs_baseline": round2(ratio(r)),
                    "p50_ms": r.stats.percentile_ms(0.50).map(round2),
                    "p99_ms": r.stats.percentile_ms(0.99).map(round2),
                    "acknowledged": r.stats.acked,
                    "failed": r.stats.failed,
                    "failures": r.stats.failures,
                    "count_after": r.check.map(|c| c.0),
                    "acknowledged_total": r.check.map(|c| c.1),
                });
                if r.system == System::Raftlite {
                    let vs = pairs
                        .iter()
                        .find(|p| p.nodes == r.nodes && p.clients == r.clients);
                    row["ratio_vs_etcd"] = json!(vs.and_then(VsEtcd::ratio).map(round2));
                }
                row
            })
            .collect();
        let etcd = match &report.etcd {
            EtcdPlan::Run { bin, version } => json!({
                "skipped": false,
                "version": version,
                "binary": bin,
                "write": "POST /v3/kv/put, a distinct key per put",
                "value_bytes": VALUE.len(),
                "clients_send_to": CLIENTS_SEND_TO,
            }),
            EtcdPlan::Skip(why) => json!({"skipped": true, "reason": why}),
        };
        let vs: Vec<Value> = pairs
            .iter()
            .map(|p| {
                json!({
                    "nodes": p.nodes,
                    "clients": p.clients,
                    "raftlite_inserts_per_sec": round2(p.raftlite),
                    "etcd_puts_per_sec": round2(p.etcd),
                    "raftlite_over_etcd": p.ratio().map(round2),
                })
            })
            .collect();
        let doc = json!({
            "raftlite_version": VERSION,
            "cores": cores(),
            "duration_secs": args.duration_secs,
            "warmup_secs": WARMUP.as_secs(),
            "clients_send_to": CLIENTS_SEND_TO,
            "rows": rows,
            "etcd": etcd,
            "raftlite_vs_etcd": vs,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "raftlite {VERSION} bench, {} cores: acknowledged single-row writes, {} s per row after {} s warm-up",
        cores(),
        args.duration_secs,
        WARMUP.as_secs()
    );
    println!("{}", etcd_line(&report.etcd));
    println!(
        "{:<16} {:>7} {:>10} {:>9} {:>8} {:>8} {:>7}  stored >= acked",
        "cluster", "clients", "writes/s", "vs sqlite", "p50 ms", "p99 ms", "failed"
    );
    for r in rows {
        let check = match r.check {
            None => String::new(),
            Some((count, acked)) if count >= acked => format!("ok ({count} >= {acked})"),
            Some((count, acked)) => format!("LOST ({count} < {acked})"),
        };
        println!(
            "{:<16} {:>7} {:>10.1} {:>8.2}x {:>8} {:>8} {:>7}  {check}",
            r.label(),
            r.clients,
            r.stats.per_sec(),
            ratio(r),
            opt(r.stats.percentile_ms(0.50), 2),
            opt(r.stats.percentile_ms(0.99), 2),
            r.stats.failed,
        );
    }
    if !pairs.is_empty() {
        println!();
        println!(
            "{:>5} {:>7} {:>12} {:>12} {:>13}",
            "nodes", "clients", "raftlite/s", "etcd/s", "raftlite/etcd"
        );
        for p in &pairs {
            println!(
                "{:>5} {:>7} {:>12.1} {:>12.1} {:>12}x",
                p.nodes,
                p.clients,
                p.raftlite,
                p.etcd,
                opt(p.ratio(), 2)
            );
        }
    }
    Ok(())
}

/// Each row's writes/s and latencies (the SQLite baseline shows how noisy the machine is).
pub fn figures(rows: &[Row]) -> Vec<Figure> {
    rows.iter()
        .flat_map(|r| {
            let name = if r.check.is_some() {
                format!("{}, {} clients", r.label(), r.clients)
            } else {
                r.label()
            };
            let rate = if r.system == System::Etcd {
                "puts/s"
            } else {
                "inserts/s"
            };
            [
                Figure::higher(format!("{name}: {rate}"), Some(r.stats.per_sec())),
                Figure::lower(format!("{name}: p50 ms"), r.stats.percentile_ms(0.50)),
                Figure::lower(format!("{name}: p99 ms"), r.stats.percentile_ms(0.99)),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: System, nodes: usize, clients: usize, acked: u64) -> Row {
        Row {
            system,
            nodes,
            clients,
            stats: Stats {
                acked,
                window: Duration::from_secs(1),
                ..Stats::default()
            },
            check: (system != System::Sqlite).then_some((acked, acked)),
        }
    }

    #[test]
    fn raftlite_rows_pair_with_etcd_rows_of_the_same_size_and_clients() {
        let rows = vec![
            row(System::Sqlite, 1, 1, 500),
            row(System::Raftlite, 1, 1, 100),
            row(System::Raftlite, 1, 16, 800),
            row(System::Etcd, 1, 1, 200),
            row(System::Etcd, 1, 16, 0),
            row(System::Raftlite, 3, 1, 90),
        ];
        let pairs = vs_etcd(&rows);
        assert_eq!(pairs.len(), 2, "3-node has no etcd row: no pair");
        assert_eq!((pairs[0].nodes, pairs[0].clients), (1, 1));
        assert_eq!(pairs[0].ratio(), Some(0.5));
        assert_eq!((pairs[1].nodes, pairs[1].clients), (1, 16));
        assert_eq!(pairs[1].ratio(), None, "etcd acknowledged nothing");
        assert!(vs_etcd(&rows[..3]).is_empty(), "etcd skipped: no pairs");
    }

    #[test]
    fn rows_are_named_by_system_and_size() {
        assert_eq!(row(System::Sqlite, 1, 1, 0).label(), "sqlite baseline");
        assert_eq!(row(System::Raftlite, 3, 16, 0).label(), "raftlite 3-node");
        assert_eq!(row(System::Etcd, 3, 16, 0).label(), "etcd 3-node");
        let names: Vec<String> = figures(&[row(System::Etcd, 1, 4, 1)])
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names[0], "etcd 1-node, 4 clients: puts/s");
    }

    #[test]
    fn the_etcd_line_says_why_it_was_skipped_or_how_it_ran() {
        let skipped = etcd_line(&EtcdPlan::Skip("no `etcd` on PATH".into()));
        assert_eq!(skipped, "etcd skipped: no `etcd` on PATH");
        let ran = etcd_line(&EtcdPlan::Run {
            bin: "/usr/bin/etcd".into(),
            version: "3.4.23".into(),
        });
        assert!(ran.starts_with("etcd 3.4.23 (/usr/bin/etcd)"), "{ran}");
        assert!(ran.contains("leader"), "{ran}");
    }
}
