//! What the backup measurements share: a single-node cluster that backs up to a `file://`
//! destination and takes no Raft snapshots, filled to N MiB, and the [`Backupper`] that asks it
//! for backups and measures them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::cluster::{clean_env, Cluster};
use crate::fill::{fill_database, FILL_CREATE, FILL_LOADERS};
use crate::http::{self, execute_each, CREATE};
use crate::proc::{watch_memory, ServerMem};
use crate::tools::{create_dir_in, file_url, log_tail, logged, run_child};
use crate::waits::DEADLINE;
use crate::waits::POLL;

/// Concurrent single-row writers in the throughput windows.
pub const BACKUP_BENCH_CLIENTS: usize = 16;
/// zstd level of every backup measured here, and of the shell baseline (`zstd -1`).
pub const BACKUP_LEVEL: i32 = 1;
/// `--snapshot-threshold` of the node: more log entries than the run writes.
pub const NO_RAFT_SNAPSHOTS: u64 = 10_000_000;
/// The target: writes during a backup at least this share of those without.
pub const TARGET_WRITE_RATIO: f64 = 0.70;

/// How a backup was taken: the brief's preferred path, or the fallback when the server has no
/// `POST /backups` (404).
#[derive(Clone, Debug)]
pub enum BackupPath {
    Endpoint,
    Cli { why: String },
}

impl BackupPath {
    pub fn describe(&self) -> String {
        match self {
            BackupPath::Endpoint => "POST /backups (the server takes and uploads it)".into(),
            BackupPath::Cli { why } => format!(
                "`raftlite backup create` as a child process (POST /backups unavailable: {why})"
            ),
        }
    }
}

/// What a backup's manifest says (read from the destination directory).
pub struct ManifestInfo {
    pub set: String,
    pub plain_size: u64,
    pub stored_size: u64,
    pub level: Option<i64>,
    pub encryption: String,
}

/// One measured raftlite backup.
pub struct BackupRun {
    pub label: String,
    pub wall: Duration,
    /// The server around the backup.
    pub server: ServerMem,
    /// The CLI child's peak when the CLI did the work.
    pub cli_peak_kib: Option<u64>,
    /// Whether the backup was meant to be encrypted (the node has a recipient).
    pub encrypted: bool,
    pub manifest: ManifestInfo,
}

impl BackupRun {
    /// Peak RSS of the process that did the work: the CLI child, else the server.
    pub fn worker_peak_kib(&self) -> Option<u64> {
        self.cli_peak_kib.or(self.server.peak_kib)
    }
}

/// Time allowed for one long operation on an `mib` database (fill, copy, one backup): generous
/// (at least 1 MiB/s), but finite.
pub fn long_deadline(mib: u64) -> Duration {
    DEADLINE + Duration::from_secs(mib)
}

/// An HTTP client for the writers, a cluster of `server` processes (not started) that backs up
/// to a `file://` destination under `work` and takes no Raft snapshots, and the backupper that
/// asks it for backups through `POST /backups`.
pub fn backup_bench_setup(
    server: &Path,
    work: &Path,
    mib: u64,
) -> anyhow::Result<(reqwest::Client, Cluster, Backupper)> {
    let http = http::client(Some(BACKUP_BENCH_CLIENTS + FILL_LOADERS))?;
    let dest_dir = create_dir_in(work, "backups")?;
    let dest_url = file_url(&dest_dir)?;
    let cluster = Cluster::new(
        server,
        work.join("cluster"),
        vec![
            // A Raft snapshot (a full copy of the database) landing in one throughput window
            // and not the other would decide the comparison: none are taken during the run.
            "--snapshot-threshold".into(),
            NO_RAFT_SNAPSHOTS.to_string(),
            "--backup-to".into(),
            dest_url.clone(),
            "--backup-level".into(),
            BACKUP_LEVEL.to_string(),
        ],
    );
    let backupper = Backupper {
        exe: server.to_path_buf(),
        path: BackupPath::Endpoint,
        dest_dir,
        dest_url,
        recipient: None,
        deadline: long_deadline(mib),
        logs: work.to_path_buf(),
        runs: 0,
    };
    Ok((http, cluster, backupper))
}

/// Starts the single node (saying so with `shown` as the work dir), creates the `bench` and
/// `filler` tables and fills the database to `mib` MiB (setup, not measured). Returns the
/// leader's URL, the rows and bytes inserted and how long the fill took.
pub async fn start_filled(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    mib: u64,
    shown: &Path,
) -> anyhow::Result<(String, u64, u64, Duration)> {
    eprintln!(
        "bench: starting a 1-node cluster (work dir {})",
        shown.display()
    );
    let leader = cluster.start(http, 1).await?;
    execute_each(http, &leader, &[CREATE, FILL_CREATE]).await?;
    eprintln!("bench: filling the database to {mib} MiB (setup, not measured)");
    let started = Instant::now();
    let (rows, payload_bytes) = fill_database(http, &leader, mib << 20, long_deadline(mib)).await?;
    Ok((leader, rows, payload_bytes, started.elapsed()))
}

/// Takes backups of the node to `dest_url`, through `POST /backups` while the server has it,
/// through the CLI otherwise, and measures them.
pub struct Backupper {
    /// The `raftlite` binary for the CLI path (the one the node runs).
    exe: PathBuf,
    pub path: BackupPath,
    dest_dir: PathBuf,
    dest_url: String,
    /// For the CLI path: the recipient the server was (re)started with.
    pub recipient: Option<String>,
    deadline: Duration,
    /// Where CLI logs go.
    logs: PathBuf,
    runs: usize,
}

impl Backupper {
    pub async fn take(
        &mut self,
        http: &reqwest::Client,
        leader: &str,
        server: u32,
        label: &str,
    ) -> anyhow::Result<BackupRun> {
        let before = manifests(&self.dest_dir)?;
        if let BackupPath::Endpoint = self.path {
            let url = format!("{leader}/backups");
            let post_backup = async {
                let start = Instant::now();
                let resp = http
                    .post(&url)
                    .timeout(self.deadline)
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status == reqwest::StatusCode::NOT_FOUND {
                    return Ok(Err(format!("HTTP 404 {}", text.trim())));
                }
                if !status.is_success() {
                    bail!("POST {url}: HTTP {status}: {}", text.trim());
                }
                // The answer comes once the manifest is written; seeing it confirms that.
                let manifest = wait_manifest(&self.dest_dir, &before, DEADLINE).await?;
                Ok(Ok((start.elapsed(), manifest)))
            };
            let (outcome, mem) = watch_memory(server, post_backup).await;
            match outcome? {
                Ok((wall, manifest)) => {
                    return Ok(BackupRun {
                        label: label.into(),
                        wall,
                        server: mem,
                        cli_peak_kib: None,
                        encrypted: self.recipient.is_some(),
                        manifest,
                    })
                }
                Err(why) => {
                    eprintln!("bench: POST /backups is not available ({why}); using the CLI");
                    self.path = BackupPath::Cli { why };
                }
            }
        }
        self.runs += 1;
        let log = self.logs.join(format!("backup-cli-{}.log", self.runs));
        let mut cmd = Command::new(&self.exe);
        cmd.args(["backup", "create", "--node", leader, "--to", &self.dest_url])
            .args(["--level", &BACKUP_LEVEL.to_string()]);
        if let Some(r) = &self.recipient {
            cmd.args(["--recipient", r]);
        }
        clean_env(&mut cmd);
        let cmd = logged(cmd, &log)?;
        let (run, mem) = watch_memory(
            server,
            run_child(cmd, "raftlite backup create", self.deadline),
        )
        .await;
        let run = run?;
        if !run.status.success() {
            bail!(
                "raftlite backup create failed ({}):\n{}",
                run.status,
                log_tail(&log, 20)
            );
        }
        let manifest = wait_manifest(&self.dest_dir, &before, DEADLINE).await?;
        Ok(BackupRun {
            label: label.into(),
            wall: run.wall,
            server: mem,
            cli_peak_kib: run.peak_kib,
            encrypted: self.recipient.is_some(),
            manifest,
        })
    }
}

/// Every `manifest.json` under `dir`.
fn manifests(dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut found = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().is_some_and(|n| n == "manifest.json") {
                found.insert(path);
            }
        }
    }
    Ok(found)
}

/// Waits (up to `deadline`) for a `manifest.json` under `dir` that is not in `before`, and
/// reads it.
async fn wait_manifest(
    dir: &Path,
    before: &BTreeSet<PathBuf>,
    deadline: Duration,
) -> anyhow::Result<ManifestInfo> {
    let give_up = Instant::now() + deadline;
    loop {
        let new = manifests(dir)?.into_iter().find(|p| !before.contains(p));
        if let Some(path) = new {
            if let Ok(info) = read_manifest(dir, &path) {
                return Ok(info);
            }
        }
        if Instant::now() >= give_up {
            bail!(
                "no new readable manifest.json appeared under {} within {deadline:?}",
                dir.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn read_manifest(dir: &Path, path: &Path) -> anyhow::Result<ManifestInfo> {
    let text = std::fs::read_to_string(path)?;
    let doc: Value = serde_json::from_str(&text)?;
    let size = |key: &str| {
        doc.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{} has no {key}", path.display()))
    };
    let set = path
        .parent()
        .and_then(|p| p.strip_prefix(dir).ok())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Ok(ManifestInfo {
        set,
        plain_size: size("plain_size")?,
        stored_size: size("stored_size")?,
        level: doc.pointer("/compression/level").and_then(Value::as_i64),
        encryption: doc
            .pointer("/encryption/scheme")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_string(),
    })
}
