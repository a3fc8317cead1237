//! `raftlite-bench`: measured throughput figures anyone can rerun.
//!
//! One run measures plain SQLite (the ceiling: one fsync'd single-row transaction at a time) and
//! then real `raftlite serve` clusters on loopback, started from the server binary
//! (`--server-bin`, by default the `raftlite` beside this executable), under 1..N concurrent HTTP
//! clients. Only acknowledged inserts count (HTTP 200 and no `error`), and after every
//! measurement a strong `COUNT(*)` checks that no acknowledged insert is missing. When an `etcd`
//! binary is found (`--etcd-bin`, else `PATH`), etcd clusters of the same sizes are measured
//! beside them with the same clients doing puts (see [`etcd`]); without one, the report says
//! etcd was skipped.
//!
//! With `--backup-db-mib N` it measures backups instead (see [`backup`]): the time and memory of
//! a backup of an N MiB database beside `sqlite3 .backup` + `zstd`, and the inserts/s of 16
//! clients while one runs. With `--restore-db-mib N` it measures a cluster restore from such a
//! backup (see [`restore`]) beside `zstd -d` + `cp`. With `--backup-wal-db-mib [N]` it measures
//! how far the WAL grows while a backup of an N MiB database runs under 16 writers, and what the
//! backup costs the writes (see [`backup_wal`]).
//!
//! With `--archive` it measures the continuous log archive on 3-node clusters (see
//! [`archive`]): the archive's lag under 1,000 paced writes/s, the inserts/s of 64 clients with
//! and without archiving, and how fast the local half of a point-in-time restore replays it.
//!
//! With `--incremental` it measures incremental backups against full ones on one node (see
//! [`incremental`]): time, stored size and memory of a full and of an incremental after ~1% of
//! the pages changed, the restore of a chain of 1 full + 23 incrementals against that of a
//! full, and the inserts/s of 16 clients while every backup is copied to a second destination.
//!
//! With `--compare-bin OLD` every measurement runs for the OLD server binary and for the
//! `--server-bin` one, alternating, and one table gives both figures and their ratio (see
//! [`compare`]). Only HTTP and the `serve` command line are used, so an older build works.

mod archive;
mod archive_report;
mod backup;
mod backup_report;
mod backup_wal;
mod backupper;
mod cluster;
mod compare;
mod etcd;
mod fill;
mod http;
mod incremental;
mod incremental_report;
mod insert;
mod proc;
mod report;
mod restore;
mod restore_report;
mod tools;
mod waits;
mod writers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

use crate::compare::Figure;
use crate::etcd::EtcdPlan;
use crate::tools::WorkDir;

/// The command line of `raftlite-bench`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "raftlite-bench",
    version,
    about = "Run the benchmark suite against local raftlite clusters"
)]
pub struct BenchArgs {
    /// Comma-separated numbers of concurrent clients to measure.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    pub clients: Vec<usize>,

    /// Comma-separated cluster sizes to measure.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [1usize, 3])]
    pub nodes: Vec<usize>,

    /// Duration of each measurement, in seconds.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub duration_secs: u64,

    /// Directory for the benchmark clusters' data (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Print results as JSON.
    #[arg(long)]
    pub json: bool,

    /// Measure backups instead of inserts: a database of this many MiB backed up to file://,
    /// beside `sqlite3 .backup` + `zstd -1 -T2` on the same file.
    #[arg(long, value_name = "MIB")]
    pub backup_db_mib: Option<u64>,

    /// Measure a cluster restore instead of inserts: a database of this many MiB backed up to
    /// file:// (zstd), then streamed into POST /db/load of a 3-node cluster (as `raftlite
    /// restore` does), beside `zstd -d` + `cp` of the same backup.
    #[arg(long, value_name = "MIB")]
    pub restore_db_mib: Option<u64>,

    /// Measure the WAL during a backup under writes instead of inserts: a database of this many
    /// MiB [default 1024], 16 writers without a backup, then while `POST /backups` (to file://)
    /// runs, sampling the size of `db.sqlite-wal`.
    #[arg(long, value_name = "MIB", num_args = 0..=1, default_missing_value = "1024")]
    pub backup_wal_db_mib: Option<u64>,

    /// Measure the continuous log archive instead of inserts, on 3-node clusters archiving to
    /// file:// every 1s: the archive's lag under --archive-rate paced writes, inserts/s of 64
    /// clients with archiving vs without (--duration-secs each), and the replay speed and
    /// memory of a point-in-time restore of --archive-replay-writes writes.
    #[arg(long)]
    pub archive: bool,

    /// With --archive: single-row INSERTs per second while the archive's lag is sampled.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub archive_rate: u64,

    /// With --archive: seconds of paced writes while the archive's lag is sampled.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub archive_rpo_secs: u64,

    /// With --archive: rounds of the overhead comparison (a window without and one with
    /// archiving each, alternating which goes first).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub archive_rounds: u32,

    /// With --archive: single-row writes (paced at --archive-rate) archived after the base
    /// backup, then replayed.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub archive_replay_writes: u64,

    /// Measure incremental backups instead of inserts, on one node backing up to file://: a
    /// full backup and an incremental after --incremental-change-pct of the pages changed (time,
    /// stored size, peak RSS), a chain of 1 full + --incremental-links incrementals restored with
    /// `raftlite restore` vs a full of the same database, and inserts/s of 16 clients while
    /// every backup is copied to a second destination vs without.
    #[arg(long)]
    pub incremental: bool,

    /// With --incremental: the database's size in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    pub incremental_db_mib: u64,

    /// With --incremental: incrementals in the chain after its full backup.
    #[arg(long, value_name = "N", default_value_t = 23)]
    pub incremental_links: u32,

    /// With --incremental: percent of the database's pages changed (at random) before each
    /// incremental.
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub incremental_change_pct: f64,

    /// With --restore-db-mib: rounds of floor-then-restore on the one cluster. The report
    /// gives each round's ratio (against the floor measured just before it) and, for more than
    /// one, the medians: a shared machine's disk and CPU vary from run to run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub restore_runs: u32,

    /// The `raftlite` server binary whose `serve` processes are measured (default: the
    /// `raftlite` executable beside this one, i.e. the same target directory).
    #[arg(long, value_name = "PATH", env = "RAFTLITE_BENCH_SERVER_BIN")]
    pub server_bin: Option<PathBuf>,

    /// Also measure this OLD `raftlite` binary, alternating with --server-bin in the same run,
    /// and print old, new and new/old for every figure instead of the usual report.
    #[arg(long, value_name = "OLD_PATH")]
    pub compare_bin: Option<PathBuf>,

    /// With --compare-bin: how many times each binary is measured. Rounds alternate the order
    /// (old then new, then new then old, ...) and the table gives medians and the spread.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub compare_rounds: u32,

    /// The `etcd` binary measured beside raftlite in the insert measurement (default: `etcd`
    /// on PATH or in /usr/bin; without one etcd is skipped, e.g. Debian package etcd-server).
    #[arg(long, value_name = "PATH", env = "RAFTLITE_BENCH_ETCD_BIN")]
    pub etcd_bin: Option<PathBuf>,

    /// Do not measure etcd beside raftlite, even when it is installed.
    #[arg(long)]
    pub no_etcd: bool,
}

/// What one run measures, from the mode flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Inserts,
    Backup(u64),
    Restore(u64),
    BackupWal(u64),
    Archive,
    Incremental,
}

impl Mode {
    /// The mode the flags ask for, with their values checked.
    fn of(args: &BenchArgs) -> anyhow::Result<Mode> {
        let mode = match (
            args.backup_db_mib,
            args.restore_db_mib,
            args.backup_wal_db_mib,
            args.archive,
            args.incremental,
        ) {
            (Some(mib), None, None, false, false) => Mode::Backup(mib),
            (None, Some(mib), None, false, false) => Mode::Restore(mib),
            (None, None, Some(mib), false, false) => Mode::BackupWal(mib),
            (None, None, None, true, false) => Mode::Archive,
            (None, None, None, false, true) => Mode::Incremental,
            (None, None, None, false, false) => Mode::Inserts,
            _ => bail!(
                "give one of --backup-db-mib, --restore-db-mib, --backup-wal-db-mib, --archive \
                 and --incremental"
            ),
        };
        match mode {
            Mode::Inserts => {
                if args.duration_secs == 0 || args.clients.contains(&0) || args.nodes.contains(&0) {
                    bail!("--duration-secs, --clients and --nodes must all be at least 1");
                }
            }
            Mode::Backup(mib) => {
                if mib == 0 || args.duration_secs == 0 {
                    bail!("--backup-db-mib and --duration-secs must be at least 1");
                }
            }
            Mode::BackupWal(mib) => {
                if mib == 0 || args.duration_secs == 0 {
                    bail!("--backup-wal-db-mib and --duration-secs must be at least 1");
                }
            }
            Mode::Restore(mib) => {
                if mib == 0 {
                    bail!("--restore-db-mib must be at least 1");
                }
                if args.restore_runs == 0 {
                    bail!("--restore-runs must be at least 1");
                }
            }
            Mode::Archive => {
                if args.duration_secs == 0
                    || args.archive_rate == 0
                    || args.archive_rpo_secs == 0
                    || args.archive_rounds == 0
                    || args.archive_replay_writes == 0
                {
                    bail!(
                        "--duration-secs, --archive-rate, --archive-rpo-secs, --archive-rounds \
                         and --archive-replay-writes must all be at least 1"
                    );
                }
            }
            Mode::Incremental => incremental::IncrementalPlan::of(args).check()?,
        }
        Ok(mode)
    }

    /// Runs the measurement against `server`, its files under `root` (an existing, empty,
    /// absolute directory); the insert measurement runs etcd beside it as `etcd` says.
    async fn measure(
        self,
        args: &BenchArgs,
        server: &Path,
        root: &Path,
        etcd: &EtcdPlan,
    ) -> anyhow::Result<Report> {
        let window = Duration::from_secs(args.duration_secs);
        Ok(match self {
            Mode::Inserts => Report::Inserts(insert::measure(args, server, root, etcd).await?),
            Mode::Backup(mib) => {
                Report::Backup(Box::new(backup::measure(server, root, mib, window).await?))
            }
            Mode::BackupWal(mib) => Report::BackupWal(Box::new(
                backup_wal::measure(server, root, mib, window).await?,
            )),
            Mode::Restore(mib) => Report::Restore(Box::new(
                restore::measure(server, root, mib, args.restore_runs).await?,
            )),
            Mode::Archive => Report::Archive(Box::new(archive::measure(args, server, root).await?)),
            Mode::Incremental => {
                Report::Incremental(Box::new(incremental::measure(args, server, root).await?))
            }
        })
    }
}

/// The outcome of one measurement.
enum Report {
    Inserts(insert::InsertReport),
    Backup(Box<backup::BackupReport>),
    BackupWal(Box<backup_wal::WalReport>),
    Restore(Box<restore::RestoreReport>),
    Archive(Box<archive::ArchiveReport>),
    Incremental(Box<incremental::IncrementalReport>),
}

impl Report {
    fn print(&self, args: &BenchArgs) -> anyhow::Result<()> {
        match self {
            Report::Inserts(r) => insert::print_report(args, r),
            Report::Backup(r) => backup_report::print(args, r),
            Report::BackupWal(r) => backup_wal::print_report(args, r),
            Report::Restore(r) => restore_report::print(args, r),
            Report::Archive(r) => archive_report::print(args, r),
            Report::Incremental(r) => incremental_report::print(args, r),
        }
    }

    /// The figures `--compare-bin` puts side by side.
    fn figures(&self) -> Vec<Figure> {
        match self {
            Report::Inserts(r) => insert::figures(&r.rows),
            Report::Backup(r) => backup_report::figures(r),
            Report::BackupWal(r) => backup_wal::figures(r),
            Report::Restore(r) => restore_report::figures(r),
            Report::Archive(r) => archive_report::figures(r),
            Report::Incremental(r) => incremental_report::figures(r),
        }
    }

    /// The figures are printed either way, but a run that lost acknowledged writes must not
    /// pass.
    fn check(&self) -> anyhow::Result<()> {
        let (count, acked) = match self {
            Report::Inserts(report) => {
                return match report
                    .rows
                    .iter()
                    .find(|r| r.check.is_some_and(|(count, acked)| count < acked))
                {
                    Some(r) => bail!(
                        "{} with {} clients lost acknowledged writes",
                        r.label(),
                        r.clients
                    ),
                    None => Ok(()),
                }
            }
            Report::Backup(r) => r.check,
            Report::BackupWal(r) => r.check,
            Report::Restore(_) => return Ok(()),
            Report::Archive(r) => return archive_report::check(r),
            Report::Incremental(r) => r.check,
        };
        if count < acked {
            bail!("the node lost acknowledged inserts: COUNT(*) {count} < {acked} acknowledged");
        }
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let args = BenchArgs::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
        .and_then(|rt| rt.block_on(run(args)));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlite-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mode = Mode::of(&args)?;
    let server = cluster::server_bin(args.server_bin.as_deref())?;
    if let Some(old) = &args.compare_bin {
        let old = cluster::compare_bin(old)?;
        return compare::run(&args, mode, &old, &server).await;
    }
    let work = WorkDir::create(args.work_dir.clone())?;
    let root = std::fs::canonicalize(&work.path)
        .with_context(|| format!("cannot resolve {}", work.path.display()))?;
    let etcd = match mode {
        Mode::Inserts => etcd::plan(&args).await?,
        _ => EtcdPlan::Skip("etcd is measured only beside the inserts".into()),
    };
    if let EtcdPlan::Skip(why) = &etcd {
        if mode == Mode::Inserts {
            eprintln!("bench: etcd skipped: {why}");
        }
    }
    let report = interruptible(mode.measure(&args, &server, &root, &etcd)).await?;
    report.print(&args)?;
    report.check()
}

/// Runs `work` unless Ctrl-C comes first. Dropping the measurement future drops its guards, so
/// nodes and child processes are killed then too.
async fn interruptible<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        out = work => out,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_defaults_and_lists() {
        let b = BenchArgs::try_parse_from(["raftlite-bench"]).unwrap();
        assert_eq!(b.clients, vec![1, 16, 64]);
        assert_eq!(b.nodes, vec![1, 3]);
        assert_eq!(b.duration_secs, 10);
        assert_eq!(b.work_dir, None);
        assert!(!b.json);
        assert_eq!(b.compare_bin, None);
        assert_eq!(b.compare_rounds, 1);
        assert!(!b.no_etcd);
        assert_eq!(Mode::of(&b).unwrap(), Mode::Inserts);

        let b = BenchArgs::try_parse_from([
            "raftlite-bench",
            "--clients",
            "2,4",
            "--nodes",
            "5",
            "--duration-secs",
            "3",
            "--work-dir",
            "/tmp/x",
            "--json",
            "--server-bin",
            "/opt/new/raftlite",
            "--compare-bin",
            "/opt/old/raftlite",
            "--etcd-bin",
            "/opt/etcd/etcd",
            "--no-etcd",
        ])
        .unwrap();
        assert_eq!(b.clients, vec![2, 4]);
        assert_eq!(b.nodes, vec![5]);
        assert_eq!(b.duration_secs, 3);
        assert_eq!(b.work_dir, Some(PathBuf::from("/tmp/x")));
        assert!(b.json);
        assert_eq!(b.server_bin, Some(PathBuf::from("/opt/new/raftlite")));
        assert_eq!(b.compare_bin, Some(PathBuf::from("/opt/old/raftlite")));
        assert_eq!(b.etcd_bin, Some(PathBuf::from("/opt/etcd/etcd")));
        assert!(b.no_etcd);
    }

    #[test]
    fn one_mode_at_a_time_with_sane_values() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["raftlite-bench"];
            argv.extend_from_slice(extra);
            Mode::of(&BenchArgs::try_parse_from(argv).unwrap())
        };
        assert_eq!(parse(&["--backup-db-mib", "8"]).unwrap(), Mode::Backup(8));
        assert_eq!(
            parse(&["--backup-wal-db-mib"]).unwrap(),
            Mode::BackupWal(1024)
        );
        assert_eq!(parse(&["--restore-db-mib", "4"]).unwrap(), Mode::Restore(4));
        assert!(parse(&["--backup-db-mib", "8", "--restore-db-mib", "8"]).is_err());
        assert!(parse(&["--clients", "0"]).is_err());
        assert!(parse(&["--restore-db-mib", "4", "--restore-runs", "0"]).is_err());
        assert_eq!(parse(&["--archive"]).unwrap(), Mode::Archive);
        assert!(parse(&["--archive", "--backup-db-mib", "8"]).is_err());
        assert!(parse(&["--archive", "--archive-rate", "0"]).is_err());
        assert_eq!(parse(&["--incremental"]).unwrap(), Mode::Incremental);
        assert!(parse(&["--incremental", "--archive"]).is_err());
        assert!(parse(&["--incremental", "--incremental-links", "0"]).is_err());
        assert!(parse(&["--incremental", "--incremental-change-pct", "0"]).is_err());
        let b = BenchArgs::try_parse_from(["raftlite-bench", "--incremental"]).unwrap();
        let plan = incremental::IncrementalPlan::of(&b);
        assert_eq!((plan.db_mib, plan.links), (4096, 23));
        assert_eq!(plan.change_pct, 1.0);
        let b = BenchArgs::try_parse_from(["raftlite-bench", "--archive"]).unwrap();
        let plan = archive::ArchivePlan::of(&b);
        assert_eq!(
            (
                plan.rate,
                plan.rpo_secs,
                plan.overhead_secs,
                plan.rounds,
                plan.replay_writes
            ),
            (1000, 20, 10, 2, 20_000)
        );
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        BenchArgs::command().debug_assert();
    }
}
