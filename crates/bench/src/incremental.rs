//! `raftlite-bench --incremental`: incremental backups against full ones, in one run.
//!
//! One single-node cluster, started from the server binary with `--backup-to file://<work>/
//! backups --backup-interval off --archive-to off --backup-full-every 1000
//! --backup-verify-interval off` (and `--backup-keep-last 1000`, so that retention deletes
//! nothing the run restores or copies):
//!
//! 1. setup, not measured: the database is filled to N MiB with the rows of the backup bench
//!    (ids 1..=rows, each row 16 KiB of blob and 1 KiB of text, about four pages);
//! 2. a full backup (`POST /backups` on a fresh chain), then about P% of the pages changed by
//!    rewriting the blobs of random rows (same size, so SQLite rewrites those pages in place),
//!    then an incremental: wall time of the POST, stored size, the server's peak RSS during
//!    each. The fraction of pages that really changed is read from the incremental's manifest
//!    (its page frames over `sqlite_page_count`) and the rows changed next are scaled by it;
//! 3. L-1 more incrementals, each after another P% change: a chain of 1 full + L links; the
//!    node is restarted with `--backup-full-every 1` and takes one more full backup of the same
//!    database (the chain's newest state). Then `raftlite restore` (the CLI, a child process)
//!    of that full and of the chain's newest incremental, each timed until the CLI exits (the
//!    restore took effect), with the CLI's and the server's peak RSS;
//! 4. the copy load: single-row inserts/s of 16 clients for --duration-secs after a restart,
//!    then for as long again after a restart with `--backup-copy-to` (to `/dev/shm` where there
//!    is one: another device than the log's, as a copy in another place would be), once the
//!    node's own copier is copying every backup (it keeps to 8 MiB/s while the node applies
//!    writes); then a restart without it for the restores.
//!
//! The report is printed by [`crate::incremental_report`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::backupper::{long_deadline, start_filled, BACKUP_BENCH_CLIENTS, NO_RAFT_SNAPSHOTS};
use crate::cluster::{clean_env, Cluster};
use crate::fill::{fill_blob, hex_literal, FILL_BLOB_BYTES, FILL_LOADERS};
use crate::http::{self, count_rows, get_json, post, result_error, send_json};
use crate::proc::{load_average, watch_memory, ServerMem};
use crate::report::mib_of;
use crate::tools::{create_dir_in, file_url, log_tail, logged, run_child};
use crate::tools::{settle_disk, ChildRun};
use crate::writers::{join_writers, spawn_writers, window_stats, Stats, WARMUP};
use crate::BenchArgs;

/// `--backup-full-every` while the chain is built: more than any run's links.
const CHAIN_FULL_EVERY: u32 = 1000;
/// `--backup-keep-last`: retention deletes nothing the run restores or copies.
const KEEP_LAST: u32 = 1000;
/// zstd level of every backup (the server's default).
pub const INCREMENTAL_LEVEL: i32 = 3;
/// Rows per `POST /db/execute` while rows are changed (about 2 MB of JSON).
const UPDATE_ROWS_PER_REQUEST: usize = 64;
const UPDATE: &str = "UPDATE filler SET data = ? WHERE id = ?";
/// Bytes in front of each page of an incremental's page-frame file (its page number).
const FRAME_PREFIX_BYTES: u64 = 4;

/// The targets.
pub const TARGET_TIME_RATIO: f64 = 0.10;
pub const TARGET_SIZE_RATIO: f64 = 0.03;
pub const TARGET_RESTORE_RATIO: f64 = 1.3;
pub const TARGET_RSS_MIB: f64 = 200.0;
pub const TARGET_COPY_WRITE_RATIO: f64 = 0.95;

/// What `--incremental*` asks for.
#[derive(Clone, Copy, Debug)]
pub struct IncrementalPlan {
    pub db_mib: u64,
    pub links: u32,
    pub change_pct: f64,
    /// The write window without a copy.
    pub window: Duration,
}

impl IncrementalPlan {
    pub fn of(args: &BenchArgs) -> IncrementalPlan {
        IncrementalPlan {
            db_mib: args.incremental_db_mib,
            links: args.incremental_links,
            change_pct: args.incremental_change_pct,
            window: Duration::from_secs(args.duration_secs),
        }
    }

    /// Refuses values the run cannot honour: the server takes a full backup once a chain's
    /// changes pass half the database, so P x L must stay under 50%.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.db_mib == 0 || self.links == 0 || self.window.is_zero() {
            bail!(
                "--incremental-db-mib, --incremental-links and --duration-secs must be at least 1"
            );
        }
        if !(self.change_pct > 0.0 && self.change_pct <= 10.0) {
            bail!("--incremental-change-pct must be above 0 and at most 10");
        }
        if self.change_pct * f64::from(self.links) >= 50.0 {
            bail!(
                "--incremental-change-pct x --incremental-links must stay under 50 (the server \
                 takes a full backup once a chain's changes pass half the database); lower one"
            );
        }
        Ok(())
    }
}

/// The database built for the run.
pub struct DbShape {
    pub rows: u64,
    pub payload_bytes: u64,
    pub build: Duration,
    pub page_size: u64,
    pub page_count: u64,
}

impl DbShape {
    pub fn size_bytes(&self) -> u64 {
        self.page_size * self.page_count
    }
}

/// One measured `POST /backups` and what its manifest says.
pub struct BackupStep {
    pub id: String,
    pub kind: String,
    pub parent: Option<String>,
    pub chain_depth: u64,
    pub log_index: u64,
    pub wall: Duration,
    pub server: ServerMem,
    pub stored_size: u64,
    pub plain_size: u64,
    pub page_size: u64,
    pub page_count: u64,
    pub plain_sha256: String,
}

impl BackupStep {
    pub fn is_incremental(&self) -> bool {
        self.kind == "incremental"
    }

    /// Pages in an incremental's page frames: its plain form is a small header (well under a
    /// page) and, per page, a 4-byte page number and the page.
    pub fn changed_pages(&self) -> Option<u64> {
        self.is_incremental()
            .then(|| self.plain_size / (self.page_size + FRAME_PREFIX_BYTES).max(1))
    }

    /// [`changed_pages`](Self::changed_pages) over the database's pages.
    pub fn changed_fraction(&self) -> Option<f64> {
        self.changed_pages()
            .map(|c| c as f64 / self.page_count.max(1) as f64)
    }
}

/// Rows whose blobs were rewritten before a link, and how long it took (setup, not measured).
pub struct Change {
    pub rows: u64,
    pub took: Duration,
}

/// One link of the chain: the change before it and the incremental taken after it.
pub struct Link {
    pub change: Change,
    pub backup: BackupStep,
}

/// One `raftlite restore` child.
pub struct RestoreStep {
    pub id: String,
    /// Incrementals applied on top of the full (0 for a full).
    pub chain_depth: u64,
    pub wall: Duration,
    pub cli_peak_kib: Option<u64>,
    pub server: ServerMem,
    /// What the node reported: the cluster side's duration, the restored file's sha256.
    pub cluster_secs: Option<f64>,
    pub sha256: Option<String>,
    /// The log index the restore took effect at.
    pub index: Option<u64>,
}

/// How the backups were copied to the second destination: by the node's own copier
/// (`--backup-copy-to`), which keeps to its pace while the node applies writes.
#[derive(Clone, Debug)]
pub enum CopyMethod {
    Server,
}

impl CopyMethod {
    pub fn describe(&self) -> String {
        match self {
            CopyMethod::Server => "the node's own copier (`--backup-copy-to`, 8 MiB/s while the \
                                   node applies writes)"
                .into(),
        }
    }
}

/// Writes without and during the copy of every backup to a second destination.
pub struct CopyLoad {
    pub method: CopyMethod,
    /// Bytes of one copy of every backup.
    pub copied_bytes: u64,
    pub copy: ChildRun,
    /// The copy was still running at the end of the write window and was stopped there.
    pub stopped: bool,
    /// Where the copy went.
    pub place: String,
    /// The `sync` after it (`None` without a `sync` tool).
    pub sync: Option<Duration>,
    pub idle: Stats,
    pub during: Stats,
    /// Inserts acknowledged in each window, warm-ups included (what `COUNT(*)` must reach).
    pub idle_acked_total: u64,
    pub during_acked_total: u64,
}

impl CopyLoad {
    pub fn ratio(&self) -> f64 {
        self.during.per_sec() / self.idle.per_sec().max(f64::MIN_POSITIVE)
    }
}

/// A named stretch of the run and how long it took.
pub struct Phase {
    pub name: String,
    pub took: Duration,
}

pub struct IncrementalReport {
    pub load_before: Option<String>,
    pub plan: IncrementalPlan,
    pub db: DbShape,
    /// The chain's root, the full backup measured against.
    pub full: BackupStep,
    /// The chain: the first link is the incremental measured against `full`.
    pub links: Vec<Link>,
    /// The full backup of the chain's newest state, after a restart with
    /// `--backup-full-every 1`.
    pub final_full: BackupStep,
    pub restore_full: RestoreStep,
    pub restore_chain: RestoreStep,
    pub copy: CopyLoad,
    /// `SELECT COUNT(*) FROM bench` and the inserts acknowledged in the write windows.
    pub check: (u64, u64),
    pub phases: Vec<Phase>,
    pub total: Duration,
    pub notes: Vec<String>,
}

impl IncrementalReport {
    /// The incremental measured against the full: the chain's first link.
    pub fn first(&self) -> Option<&BackupStep> {
        self.links.first().map(|l| &l.backup)
    }

    /// Every backup the run took, in order.
    pub fn backups(&self) -> impl Iterator<Item = &BackupStep> {
        std::iter::once(&self.full)
            .chain(self.links.iter().map(|l| &l.backup))
            .chain(std::iter::once(&self.final_full))
    }
}

/// The steps described at the top of this module, against `server`, under `work`.
pub async fn measure(
    args: &BenchArgs,
    server: &Path,
    work: &Path,
) -> anyhow::Result<IncrementalReport> {
    let plan = IncrementalPlan::of(args);
    plan.check()?;
    let http = http::client(Some(BACKUP_BENCH_CLIENTS + FILL_LOADERS))?;
    let dest_dir = create_dir_in(work, "backups")?;
    let dest_url = file_url(&dest_dir)?;
    let mut cluster = Cluster::new(
        server,
        work.join("cluster"),
        vec![
            // The fill, the chain and the write windows go through the log; a Raft snapshot
            // (a full copy of the database) landing in one phase and not another would decide
            // the comparison.
            "--snapshot-threshold".into(),
            NO_RAFT_SNAPSHOTS.to_string(),
            "--backup-to".into(),
            dest_url.clone(),
            "--backup-interval".into(),
            "off".into(),
            "--archive-to".into(),
            "off".into(),
            "--backup-full-every".into(),
            CHAIN_FULL_EVERY.to_string(),
            "--backup-verify-interval".into(),
            "off".into(),
            "--backup-keep-last".into(),
            KEEP_LAST.to_string(),
            "--backup-level".into(),
            INCREMENTAL_LEVEL.to_string(),
        ],
    );
    let run = Run {
        http,
        server: server.to_path_buf(),
        work: work.to_path_buf(),
        dest_url,
        plan,
        deadline: long_deadline(plan.db_mib),
    };
    let result = run.scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_log_tails();
    }
    result
}

/// What every step of one run needs.
struct Run {
    http: reqwest::Client,
    /// The `raftlite` binary: the nodes and the CLI children.
    server: PathBuf,
    work: PathBuf,
    dest_url: String,
    plan: IncrementalPlan,
    deadline: Duration,
}

impl Run {
    async fn scenario(&self, cluster: &mut Cluster) -> anyhow::Result<IncrementalReport> {
        let started = Instant::now();
        let plan = self.plan;
        let mut notes = Vec::new();
        let mut phases = Vec::new();
        let mut phase = |name: &str, since: Instant| {
            phases.push(Phase {
                name: name.into(),
                took: since.elapsed(),
            })
        };
        let load_before = load_average();

        let t = Instant::now();
        let (leader, rows, payload_bytes, build) =
            start_filled(cluster, &self.http, plan.db_mib, &self.work).await?;
        let max_id = self.check_ids(&leader, rows).await?;
        phase("setup: start + fill (not measured)", t);
        eprintln!(
            "bench: {rows} rows (ids 1..={max_id}), filled in {:.1} s",
            build.as_secs_f64()
        );

        let mut pid = cluster.pid(0)?;
        eprintln!("bench: full backup (the chain's root)");
        settle_disk().await;
        let t = Instant::now();
        let full = self.take(&leader, pid, "full").await?;
        phase("full backup", t);
        if full.is_incremental() {
            bail!(
                "the first backup of the run came back {:?}, not full",
                full.kind
            );
        }
        let db = DbShape {
            rows,
            payload_bytes,
            build,
            page_size: full.page_size,
            page_count: full.page_count,
        };
        eprintln!(
            "bench: full {}: {:.2} s, {:.1} MiB stored; {} pages of {} bytes ({:.1} MiB)",
            full.id,
            full.wall.as_secs_f64(),
            mib_of(full.stored_size),
            db.page_count,
            db.page_size,
            mib_of(db.size_bytes())
        );

        // Pages per changed row, first from the database's shape, then from what each link
        // really changed: the next change aims at P% of the pages with it.
        let target_pages = plan.change_pct / 100.0 * db.page_count as f64;
        // A rewritten row changes its overflow pages and its leaf: about one page more than
        // its share of the file.
        let mut pages_per_row = (db.page_count as f64 / rows.max(1) as f64).ceil();
        let mut links: Vec<Link> = Vec::new();
        let chain_start = Instant::now();
        for n in 1..=plan.links {
            let want = (target_pages / pages_per_row.max(1e-9)).round();
            let count = (want as u64).clamp(1, max_id);
            let t = Instant::now();
            let change = self.change_rows(&leader, max_id, count).await?;
            if n == 1 {
                phase("change before the first incremental (not measured)", t);
            }
            settle_disk().await;
            let t = Instant::now();
            let backup = self.take(&leader, pid, &format!("incremental {n}")).await?;
            if n == 1 {
                phase("first incremental", t);
            }
            let parent = links.last().map_or(&full.id, |l| &l.backup.id);
            if !backup.is_incremental() {
                notes.push(format!(
                    "link {n} came back {} (the server decided on a full backup): the chain \
                     restored is shorter than asked",
                    backup.kind
                ));
            } else if backup.parent.as_ref() != Some(parent) || backup.chain_depth != u64::from(n) {
                notes.push(format!(
                    "link {n}: parent {:?} at depth {}, expected {parent} at depth {n}",
                    backup.parent, backup.chain_depth
                ));
            }
            if let Some(pages) = backup.changed_pages().filter(|&p| p > 0) {
                pages_per_row = pages as f64 / change.rows.max(1) as f64;
            }
            eprintln!(
                "bench: incremental {n}/{}: {} rows changed, {} pages ({:.2}%), {:.2} s, {:.2} \
                 MiB stored",
                plan.links,
                change.rows,
                backup.changed_pages().map_or("-".into(), |p| p.to_string()),
                100.0 * backup.changed_fraction().unwrap_or(0.0),
                backup.wall.as_secs_f64(),
                mib_of(backup.stored_size)
            );
            links.push(Link { change, backup });
        }
        phase(
            &format!("the whole chain: {} x (change + incremental)", plan.links),
            chain_start,
        );
        let newest = links
            .last()
            .map(|l| &l.backup)
            .ok_or_else(|| anyhow!("the chain has no link"))?;

        eprintln!("bench: restarting the node with --backup-full-every 1; one more full backup");
        let t = Instant::now();
        set_flag(&mut cluster.extra_args, "--backup-full-every", "1");
        cluster.restart(&self.http, 0).await?;
        pid = cluster.pid(0)?;
        phase("restart with --backup-full-every 1 (not measured)", t);
        settle_disk().await;
        let t = Instant::now();
        let final_full = self.take(&leader, pid, "final full").await?;
        phase("final full backup", t);
        if final_full.is_incremental() {
            bail!("the backup after the restart with --backup-full-every 1 came back incremental");
        }
        if final_full.page_count != newest.page_count {
            notes.push(format!(
                "the final full has {} pages, the chain's newest {}",
                final_full.page_count, newest.page_count
            ));
        }

        eprintln!("bench: copy load: {BACKUP_BENCH_CLIENTS} clients inserting without, then during a copy of every backup");
        let t = Instant::now();
        let copy = self.copy_load(cluster, &leader).await?;
        // The copy load restarted the node.
        pid = cluster.pid(0)?;
        let count = count_rows(&self.http, &leader).await?;
        phase("copy load: both write windows", t);
        eprintln!(
            "bench: {:.1} inserts/s without, {:.1} during the copy ({:.2} s + sync {:.2} s, \
             {:.1} MiB)",
            copy.idle.per_sec(),
            copy.during.per_sec(),
            copy.copy.wall.as_secs_f64(),
            copy.sync.unwrap_or_default().as_secs_f64(),
            mib_of(copy.copied_bytes)
        );
        let check = (count, copy.idle_acked_total + copy.during_acked_total);
        if copy.during.window < plan.window {
            notes.push(format!(
                "the copy and its sync took {:.2} s, less than the {} s window without: the \
                 figure during the copy is noisier",
                copy.during.window.as_secs_f64(),
                plan.window.as_secs()
            ));
        }

        eprintln!("bench: restore of the final full ({})", final_full.id);
        settle_disk().await;
        let t = Instant::now();
        let restore_full = self
            .restore(&leader, pid, &final_full.id, 0, "restore-full")
            .await?;
        phase("restore of the full", t);
        self.after_restore(cluster, &leader, rows, restore_full.index, &mut notes)
            .await;
        eprintln!(
            "bench: restore of the chain's newest incremental ({}, 1 full + {})",
            newest.id, newest.chain_depth
        );
        settle_disk().await;
        let t = Instant::now();
        let restore_chain = self
            .restore(
                &leader,
                pid,
                &newest.id,
                newest.chain_depth,
                "restore-chain",
            )
            .await?;
        phase("restore of the chain", t);
        self.after_restore(cluster, &leader, rows, restore_chain.index, &mut notes)
            .await;
        let expected = &final_full.plain_sha256;
        match (&restore_full.sha256, &restore_chain.sha256) {
            (Some(full), Some(chain)) if full == expected && chain == expected => {
                notes.push(format!(
                    "the chain's restore gave the same file as the final full's (sha256 \
                     {expected})"
                ))
            }
            (Some(full), Some(chain))
                if full == expected && final_full.log_index != newest.log_index =>
            {
                notes.push(format!(
                    "the chain's restore gave another file than the final full's (sha256 {chain} \
                     vs {full}): the final full is of log index {}, the chain's newest of {} \
                     (the restart added log entries, and the database records its applied \
                     position)",
                    final_full.log_index, newest.log_index
                ))
            }
            (Some(full), Some(chain)) => notes.push(format!(
                "restored files: the full's sha256 {full}, the chain's {chain}; the final full's \
                 manifest says {expected}"
            )),
            _ => notes.push("the node did not report the restored files' sha256".into()),
        }

        Ok(IncrementalReport {
            load_before,
            plan,
            db,
            full,
            links,
            final_full,
            restore_full,
            restore_chain,
            copy,
            check,
            phases,
            total: started.elapsed(),
            notes,
        })
    }

    /// The filler rows must be ids 1..=rows (no gaps): rows are picked at random from them.
    async fn check_ids(&self, leader: &str, rows: u64) -> anyhow::Result<u64> {
        let url = format!("{leader}/db/query?level=strong");
        let doc = post(
            &self.http,
            &url,
            &json!(["SELECT MIN(id), MAX(id), COUNT(*) FROM filler"]),
        )
        .await?;
        if let Some(err) = result_error(&doc) {
            bail!("reading the filler ids failed: {err}");
        }
        let field = |i: usize| {
            doc.pointer(&format!("/results/0/values/0/{i}"))
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("no MIN/MAX/COUNT in {doc}"))
        };
        let (min, max, count) = (field(0)?, field(1)?, field(2)?);
        if min != 1 || max != count || count != rows {
            bail!("the filler ids are not 1..={rows}: MIN {min}, MAX {max}, COUNT {count}");
        }
        Ok(max)
    }

    /// Rewrites the blob of `count` distinct random rows among 1..=`max_id` with new bytes of
    /// the same size and shape (SQLite then rewrites those rows' pages in place).
    async fn change_rows(&self, leader: &str, max_id: u64, count: u64) -> anyhow::Result<Change> {
        let started = Instant::now();
        let ids = random_ids(max_id, count)?;
        let url = format!("{leader}/db/execute?transaction");
        for batch in ids.chunks(UPDATE_ROWS_PER_REQUEST) {
            let body = update_request(batch);
            let req = self
                .http
                .post(&url)
                .timeout(self.deadline)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            let doc = send_json(req).await.context("an update request failed")?;
            if let Some(err) = result_error(&doc) {
                bail!("an update request failed: {err}");
            }
        }
        Ok(Change {
            rows: ids.len() as u64,
            took: started.elapsed(),
        })
    }

    /// `POST /backups`, timed, with the server's memory watched; the answer's manifest read.
    async fn take(&self, leader: &str, server: u32, label: &str) -> anyhow::Result<BackupStep> {
        let url = format!("{leader}/backups");
        let post_backup = async {
            let start = Instant::now();
            let resp = self
                .http
                .post(&url)
                .timeout(self.deadline)
                .send()
                .await
                .with_context(|| format!("POST {url} ({label})"))?;
            let status = resp.status();
            let text = resp
                .text()
                .await
                .with_context(|| format!("POST {url} ({label})"))?;
            let wall = start.elapsed();
            if !status.is_success() {
                bail!("POST {url} ({label}): HTTP {status}: {}", text.trim());
            }
            let doc: Value = serde_json::from_str(&text)
                .with_context(|| format!("POST {url} ({label}): not JSON: {text}"))?;
            Ok((wall, doc))
        };
        let (outcome, server) = watch_memory(server, post_backup).await;
        let (wall, doc) = outcome?;
        backup_step(&doc, wall, server).with_context(|| format!("POST {url} ({label})"))
    }

    /// `raftlite restore --node LEADER --from DEST --id ID --json` as a child process, timed
    /// until it exits, with its peak RSS and the server's. Its scratch files go under the work
    /// directory (`TMPDIR`).
    async fn restore(
        &self,
        leader: &str,
        server: u32,
        id: &str,
        chain_depth: u64,
        name: &str,
    ) -> anyhow::Result<RestoreStep> {
        let tmp = create_dir_in(&self.work, &format!("{name}-tmp"))?;
        let log = self.work.join(format!("{name}.log"));
        let out = self.work.join(format!("{name}.json"));
        let mut cmd = Command::new(&self.server);
        cmd.args([
            "restore",
            "--node",
            leader,
            "--from",
            &self.dest_url,
            "--id",
            id,
        ])
        .arg("--json")
        .env("TMPDIR", &tmp);
        clean_env(&mut cmd);
        let mut cmd = logged(cmd, &log)?;
        let stdout = std::fs::File::create(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        cmd.stdout(stdout);
        let (run, mem) =
            watch_memory(server, run_child(cmd, "raftlite restore", self.deadline)).await;
        let run = run?;
        let _ = std::fs::remove_dir_all(&tmp);
        if !run.status.success() {
            bail!(
                "raftlite restore --id {id} failed ({}):\n{}",
                run.status,
                log_tail(&log, 20)
            );
        }
        let text = std::fs::read_to_string(&out)
            .with_context(|| format!("cannot read {}", out.display()))?;
        let answer: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        eprintln!(
            "bench: restored {id} in {:.2} s (CLI peak {:.1} MiB)",
            run.wall.as_secs_f64(),
            run.peak_kib.map_or(0.0, |k| k as f64 / 1024.0)
        );
        Ok(RestoreStep {
            id: id.to_string(),
            chain_depth,
            wall: run.wall,
            cli_peak_kib: run.peak_kib,
            server: mem,
            cluster_secs: answer
                .pointer("/restore/duration_secs")
                .and_then(Value::as_f64),
            sha256: answer
                .pointer("/restore/sha256")
                .and_then(Value::as_str)
                .map(str::to_owned),
            index: answer.pointer("/restore/index").and_then(Value::as_u64),
        })
    }

    /// After a restore (not measured): every filler row is there, and the node's log has been
    /// compacted past the restore (the snapshot and purge it does then must not run under the
    /// next measurement). Problems become notes.
    async fn after_restore(
        &self,
        cluster: &mut Cluster,
        leader: &str,
        rows: u64,
        index: Option<u64>,
        notes: &mut Vec<String>,
    ) {
        let url = format!("{leader}/db/query?level=strong");
        match post(&self.http, &url, &json!(["SELECT COUNT(*) FROM filler"])).await {
            Ok(doc) => {
                let count = doc.pointer("/results/0/values/0/0").and_then(Value::as_u64);
                if count != Some(rows) {
                    notes.push(format!(
                        "after a restore the filler table has {count:?} rows, not {rows}"
                    ));
                }
            }
            Err(e) => notes.push(format!("after a restore, COUNT(*) failed: {e:#}")),
        }
        let Some(index) = index else {
            notes.push(
                "the restore's answer gave no log index: its compaction was not waited for".into(),
            );
            return;
        };
        let status = format!("{leader}/status");
        let http = &self.http;
        let what = format!("the node's log purged past the restore (index {index})");
        let settled = cluster
            .wait_for(&what, || async {
                let doc = get_json(http, &status)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let purged = doc
                    .pointer("/store/raft/purged_index")
                    .and_then(Value::as_u64);
                match purged {
                    Some(p) if p >= index => Ok(()),
                    _ => Err(format!("purged up to {purged:?}")),
                }
            })
            .await;
        if let Err(e) = settled {
            notes.push(format!("{e:#}; the next phase may pay for that compaction"));
        }
    }

    /// Writes of [`BACKUP_BENCH_CLIENTS`] clients for the plan's window without a copy, then
    /// from the start of a copy of every backup to a second destination until it is on disk
    /// (the copy, then `sync`: `cp` leaves most of its writes to the page cache, to be flushed
    /// under whatever runs next).
    async fn copy_load(&self, cluster: &mut Cluster, leader: &str) -> anyhow::Result<CopyLoad> {
        let (to, place) = self.copy_target();
        let method = CopyMethod::Server;
        eprintln!("bench: copy by {}", method.describe());

        // Both windows start from a fresh restart, the second with the copier on.
        cluster.restart(&self.http, 0).await?;
        settle_disk().await;
        let (idle, idle_acked) = self.write_window(leader).await?;
        idle.print_failures("bench: without copy: ");

        std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
        let copy_url = file_url(&to)?;
        set_flag(&mut cluster.extra_args, "--backup-copy-to", &copy_url);
        let started = Instant::now();
        cluster.restart(&self.http, 0).await?;
        let status_url = format!("{leader}/status");
        let copying = |status: &Value| status["backup"]["copies"][0]["in_progress"] == true;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(status) = get_json(&self.http, &status_url).await {
                if copying(&status) {
                    break;
                }
            }
            if Instant::now() >= until {
                bail!("the node's copier did not start copying within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (during, during_acked) = self.write_window(leader).await?;
        during.print_failures("bench: during copy: ");
        let still = get_json(&self.http, &status_url)
            .await
            .map(|s| copying(&s))
            .unwrap_or(false);
        let wall = started.elapsed();
        let peak_kib = crate::proc::proc_mem(cluster.pid(0)?).map(|m| m.hwm_kib);
        // The copier off again for the restores; what it wrote is only measured.
        cluster
            .extra_args
            .retain(|a| a != "--backup-copy-to" && *a != copy_url);
        cluster.restart(&self.http, 0).await?;
        let copied_bytes = dir_bytes(&to)?;
        let _ = std::fs::remove_dir_all(&to);
        Ok(CopyLoad {
            method,
            copied_bytes,
            copy: ChildRun {
                status: std::process::ExitStatus::default(),
                wall,
                peak_kib,
            },
            stopped: still,
            place,
            sync: None,
            idle,
            during,
            idle_acked_total: idle_acked,
            during_acked_total: during_acked,
        })
    }

    /// [`BACKUP_BENCH_CLIENTS`] clients inserting for the plan's window after a warm-up.
    async fn write_window(&self, leader: &str) -> anyhow::Result<(Stats, u64)> {
        let from = Instant::now() + WARMUP;
        let end = from + self.plan.window;
        let writers = spawn_writers(&self.http, leader, BACKUP_BENCH_CLIENTS, move |now| {
            now >= end
        });
        let samples = join_writers(writers).await?;
        Ok(window_stats(samples, from, end))
    }

    /// Where the copy goes: a folder on another device than the log's when there is one
    /// (`/dev/shm`, standing for a store in another place, which the copy's writes do not
    /// reach the node's disk for), else beside the backups, on the log's disk.
    fn copy_target(&self) -> (PathBuf, String) {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            (
                shm.join(format!("raftlite-bench-copy-{}", std::process::id())),
                "/dev/shm (tmpfs, another device than the log's, as for a copy in another place)"
                    .into(),
            )
        } else {
            (
                self.work.join("backups-copy"),
                "the work dir (the log's own disk: the worst case)".into(),
            )
        }
    }
}

/// The backup described by a `POST /backups` answer.
fn backup_step(doc: &Value, wall: Duration, server: ServerMem) -> anyhow::Result<BackupStep> {
    let backup = doc
        .get("backup")
        .ok_or_else(|| anyhow!("no `backup` in the answer: {doc}"))?;
    let manifest = backup
        .get("manifest")
        .ok_or_else(|| anyhow!("no `backup.manifest` in the answer: {doc}"))?;
    let id = backup
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no `backup.id` in the answer: {doc}"))?;
    let number = |key: &str| {
        manifest
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("the manifest has no {key}: {manifest}"))
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(BackupStep {
        id: id.to_string(),
        // Manifests from before incrementals have no kind: full.
        kind: manifest
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("full")
            .to_string(),
        parent: manifest.pointer("/parent/id").map(text),
        chain_depth: manifest
            .get("chain_depth")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        log_index: number("log_index")?,
        wall,
        server,
        stored_size: number("stored_size")?,
        plain_size: number("plain_size")?,
        page_size: number("sqlite_page_size")?,
        page_count: number("sqlite_page_count")?,
        plain_sha256: manifest
            .get("plain_sha256")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// `count` distinct ids drawn at random from 1..=`max_id`.
fn random_ids(max_id: u64, count: u64) -> anyhow::Result<Vec<u64>> {
    let length = usize::try_from(max_id).context("too many rows for this platform")?;
    let amount = usize::try_from(count.min(max_id)).context("too many rows for this platform")?;
    let mut rng = rand::rng();
    Ok(rand::seq::index::sample(&mut rng, length, amount)
        .into_iter()
        .map(|i| i as u64 + 1)
        .collect())
}

/// One update request: a JSON array of `UPDATE filler SET data = <new blob> WHERE id = <id>`,
/// blobs of the fill's size and shape.
fn update_request(ids: &[u64]) -> String {
    let mut rng = rand::rng();
    let mut blob = vec![0u8; FILL_BLOB_BYTES];
    let rows: Vec<Value> = ids
        .iter()
        .map(|&id| {
            fill_blob(&mut rng, &mut blob);
            json!([UPDATE, hex_literal(&blob), id])
        })
        .collect();
    Value::Array(rows).to_string()
}

/// Sets `flag`'s value in a `serve` command line (appending it when absent).
fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value.to_string(),
        _ => args.extend([flag.to_string(), value.to_string()]),
    }
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_backups_answer_reads_as_a_step() {
        let doc = json!({"backup": {"id": "c/123", "destination": "file:///x", "manifest": {
            "kind": "incremental",
            "parent": {"id": "c/100", "pages_digest": "ab"},
            "chain_depth": 3,
            "log_index": 42,
            "stored_size": 1000,
            "plain_size": 2 * (4096 + 4) + 300,
            "sqlite_page_size": 4096,
            "sqlite_page_count": 200,
            "plain_sha256": "ff",
        }}});
        let step = backup_step(&doc, Duration::from_secs(1), ServerMem::default()).unwrap();
        assert!(step.is_incremental());
        assert_eq!(step.parent.as_deref(), Some("c/100"));
        assert_eq!(step.chain_depth, 3);
        assert_eq!(step.changed_pages(), Some(2));
        assert_eq!(step.changed_fraction(), Some(0.01));

        let full = json!({"backup": {"id": "c/1", "manifest": {
            "log_index": 7, "stored_size": 10, "plain_size": 8192, "sqlite_page_size": 4096,
            "sqlite_page_count": 2,
        }}});
        let step = backup_step(&full, Duration::ZERO, ServerMem::default()).unwrap();
        assert_eq!((step.kind.as_str(), step.changed_pages()), ("full", None));
        assert!(backup_step(&json!({"error": "x"}), Duration::ZERO, ServerMem::default()).is_err());
    }

    #[test]
    fn random_ids_are_distinct_and_in_range() {
        let mut ids = random_ids(100, 30).unwrap();
        assert_eq!(ids.len(), 30);
        assert!(ids.iter().all(|&i| (1..=100).contains(&i)));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 30);
        assert_eq!(random_ids(5, 50).unwrap().len(), 5);
    }

    #[test]
    fn update_requests_carry_fill_sized_blobs() {
        let doc: Value = serde_json::from_str(&update_request(&[7, 9])).unwrap();
        let rows = doc.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], UPDATE);
        assert_eq!(rows[0][1].as_str().unwrap().len(), 2 * FILL_BLOB_BYTES + 3);
        assert_eq!(rows[1][2], 9);
    }

    #[test]
    fn flags_are_replaced_or_appended() {
        let mut args = vec!["--a".to_string(), "1".into(), "--b".into(), "2".into()];
        set_flag(&mut args, "--a", "9");
        set_flag(&mut args, "--c", "3");
        assert_eq!(args, ["--a", "9", "--b", "2", "--c", "3"]);
    }

    #[test]
    fn plans_refuse_chains_past_half_the_database() {
        let plan = |links, change_pct| IncrementalPlan {
            db_mib: 64,
            links,
            change_pct,
            window: Duration::from_secs(10),
        };
        assert!(plan(23, 1.0).check().is_ok());
        assert!(plan(23, 3.0).check().is_err());
        assert!(plan(0, 1.0).check().is_err());
        assert!(plan(3, 0.0).check().is_err());
    }
}
