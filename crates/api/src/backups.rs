//! Backups taken by the server: `POST /backups` on request, and on a schedule
//! (`--backup-interval` / `--backup-cron`, see [`crate::backup_schedule`]), to the destination
//! the server was started with (`--backup-to`, by default a local directory beside the data
//! dir), compressed and optionally encrypted (`--backup-recipient` / `--backup-passphrase-env`,
//! `--backup-level`), with retention after every backup (`--backup-keep-*`) and restore drills
//! (`--backup-verify-interval`).
//!
//! - Only the leader takes backups. A follower forwards `POST /backups` to the leader (or
//!   answers 301 under `?redirect`), like writes.
//! - The leader pins the database file as a consistent snapshot (`Store::pin_consistent_file`:
//!   a full checkpoint, then a read transaction that keeps checkpoints from changing the file
//!   while writes go on into the WAL) and streams the file itself to the destination with
//!   [`raftlite_backup::create_backup_open`]: no copy, bounded memory. When it cannot be pinned
//!   at once (a long query holds an older snapshot), it copies the database with
//!   `Store::snapshot_to` into a scratch file under `<data-dir>/snapshots/` instead and streams
//!   that, removing it afterwards (start-up removes leftovers of a crash).
//! - While the file is pinned no checkpoint can complete, so every write grows the WAL. When the
//!   WAL passes `RAFTLITE_BACKUP_MAX_WAL_MIB` (default [`DEFAULT_MAX_WAL_MIB`]), the part of the
//!   file not yet read is copied at local disk speed into a scratch file under
//!   `<data-dir>/snapshots/` and the pin is released; the upload goes on from the copy. The
//!   WAL's peak is that limit plus what the writes add during the copy.
//! - Every backup records the leader's term; before its manifest is written the leader
//!   confirms with a quorum that it still leads in that term, so a deposed leader never
//!   publishes a set (and of two sets for one schedule slot, listings count the higher term).
//! - One backup at a time per node: a second request meanwhile gets 409.
//! - Answers: 200 `{"backup": {"id": ..., "destination": ..., "manifest": {...}}}`; 400 when
//!   backups are off (`--backup-to off`); 503 (with `Retry-After`) when the destination fails,
//!   the message naming it without credentials; 409 while another backup runs.
//! - The request runs as its own task, so a client that goes away does not cancel an upload
//!   halfway (which could leave an unfinished multipart upload behind).
//!
//! The service records Prometheus metrics (`raftlite_backup_*`, labelled with the
//! destination's safe label), logs every backup and keeps what `/status` shows under `backup`.

use raftlite_consensus::node::unix_ms;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use raftlite_backup::{
    create_backup_fenced, list_backups, BackupError, BackupMeta, CreateOptions, Destination,
    Encryption, Identity, Manifest, RetentionPolicy, Schedule,
};
use raftlite_consensus::node::{DataDirLayout, RaftNode, WriteError};
use raftlite_consensus::state_machine::SnapshotDir;
use raftlite_consensus::{NodeAddr, NodeId};
use raftlite_store::MetaState;
use serde_json::{json, Value as Json};

use crate::error::ApiError;
use crate::forward::{to_leader_within, LeaderOnly};
use crate::params::flag;
use crate::respond::json_response;
use crate::state::ApiState;

/// Retries of one request to a failing cloud store (object_store's default is 10 within
/// 3 minutes, which would hold `POST /backups` for minutes when the destination is down).
const STORE_MAX_RETRIES: &str = "4";
/// Time budget of those retries, per request, in seconds.
const STORE_RETRY_TIMEOUT_SECS: &str = "30";
/// A backup forwarded to the leader may take long (a large database to a remote store); the
/// shared client's 30 s limit is too short.
const FORWARDED_BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Prefix of the scratch file names under `<data-dir>/snapshots/`.
const SCRATCH_PURPOSE: &str = "backups";

type Params = Query<HashMap<String, String>>;

/// The routes of this module, merged into [`crate::server::router`].
pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/backups", post(create))
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Everything `serve` configures about backups, parsed: [`BackupService::from_settings`]
/// checks the rest (destination, keys, passphrase, level) before the server starts.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    /// Destination URL.
    pub to: String,
    /// object_store configuration keys that override the environment (an rqlite auto-backup
    /// file's endpoint, region and keys). Never shown.
    pub store_options: Vec<(String, String)>,
    pub recipients: Vec<String>,
    pub passphrase_env: Option<String>,
    pub level: i32,
    /// `None`: backups only on request (`POST /backups`).
    pub schedule: Option<Schedule>,
    /// How often the leader drills a restore of the newest backup; `None`: never.
    pub verify_interval: Option<Duration>,
    /// age identity file for drills of backups encrypted to recipients.
    pub identity_file: Option<PathBuf>,
    pub retention: RetentionPolicy,
    /// A backup lets go of the pinned database file once the WAL is larger than this (see
    /// the module documentation).
    pub max_wal_bytes: u64,
    /// The read rate of a backup while the node applies writes.
    pub busy_pace_bytes_per_sec: u64,
}

impl BackupSettings {
    /// Backups to `to` on request only, zstd level 3, not encrypted, no drills, the default
    /// retention.
    pub fn new(to: impl Into<String>) -> BackupSettings {
        BackupSettings {
            to: to.into(),
            store_options: Vec::new(),
            recipients: Vec::new(),
            passphrase_env: None,
            level: 3,
            schedule: None,
            verify_interval: None,
            identity_file: None,
            retention: RetentionPolicy::server_default(),
            max_wal_bytes: DEFAULT_MAX_WAL_MIB << 20,
            busy_pace_bytes_per_sec: DEFAULT_BUSY_PACE_MIB << 20,
        }
    }

    /// Applies `RAFTLITE_BACKUP_MAX_WAL_MIB` and `RAFTLITE_BACKUP_BUSY_PACE_MIB` when set.
    #[allow(clippy::result_large_err)] // the backup engine's own error type
    pub fn with_env_overrides(mut self) -> Result<BackupSettings, BackupError> {
        if let Some(mib) = mib_from_env(MAX_WAL_ENV)? {
            self.max_wal_bytes = mib << 20;
        }
        if let Some(mib) = mib_from_env(BUSY_PACE_ENV)? {
            self.busy_pace_bytes_per_sec = mib << 20;
        }
        Ok(self)
    }
}

/// Environment variable: the WAL size (MiB) past which a backup stops pinning the database.
pub const MAX_WAL_ENV: &str = "RAFTLITE_BACKUP_MAX_WAL_MIB";
/// Environment variable: a backup's read rate (MiB/s) while the node applies writes.
pub const BUSY_PACE_ENV: &str = "RAFTLITE_BACKUP_BUSY_PACE_MIB";
/// The WAL size (MiB) past which a backup stops pinning the database, unless [`MAX_WAL_ENV`]
/// says otherwise. About 16 times the WAL's usual size (SQLite checkpoints at 1000 pages).
pub const DEFAULT_MAX_WAL_MIB: u64 = 64;
/// A backup's read rate (MiB/s) while the node applies writes: its disk traffic otherwise
/// stretches the log's fsyncs (a 1 GiB backup at full speed halved the write rate of 16
/// clients; at this pace they keep 0.74-0.99 of it with the WAL bound below, 0.63 without,
/// `raftlite bench --backup-wal-db-mib`). An idle node
/// backs up at full speed. [`BUSY_PACE_ENV`] overrides it (tests slow backups down with it).
pub const DEFAULT_BUSY_PACE_MIB: u64 = 32;

/// A whole number of MiB (at least 1) from the environment variable `var`, if set.
#[allow(clippy::result_large_err)] // the backup engine's own error type
fn mib_from_env(var: &str) -> Result<Option<u64>, BackupError> {
    let Ok(text) = std::env::var(var) else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(mib) if (1..=1 << 20).contains(&mib) => Ok(Some(mib)),
        _ => Err(BackupError::InvalidOptions {
            reason: format!(
                "{var}={text:?} is not a whole number of MiB between 1 and 1048576; fix or \
                 unset it"
            ),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------

/// Where and how this node backs up, and what its last backups did.
pub struct BackupService {
    dest: Destination,
    /// `dest` as displayed: scheme, bucket (or directory) and prefix, never credentials.
    label: String,
    options: CreateOptions,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) verify_interval: Option<Duration>,
    /// What opens the backups for drills; `None` for encrypted backups without
    /// `--backup-identity` (drills then check the stored bytes only).
    pub(crate) identity: Option<Identity>,
    pub(crate) retention: RetentionPolicy,
    /// `<data-dir>/snapshots`: where the consistent copy is written before upload, and where
    /// drills decompress.
    pub(crate) snapshots: PathBuf,
    max_wal_bytes: u64,
    busy_pace_bytes_per_sec: u64,
    /// Held for the whole of a backup: one at a time per node.
    running: tokio::sync::Mutex<()>,
    record: Mutex<Record>,
}

impl std::fmt::Debug for BackupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the options: they may hold a passphrase (Encryption's Debug redacts it anyway).
        f.debug_struct("BackupService")
            .field("destination", &self.label)
            .field("level", &self.options.level)
            .field("encryption", &self.encryption_name())
            .field("schedule", &self.schedule_description())
            .finish()
    }
}

/// What `/status` shows about past and coming backups.
#[derive(Default)]
pub(crate) struct Record {
    pub(crate) in_progress_since_unix_ms: Option<i64>,
    /// The most recent attempt: success, skip or failure.
    pub(crate) last: Option<Json>,
    pub(crate) last_success: Option<Json>,
    pub(crate) next_run_unix_ms: Option<i64>,
    pub(crate) last_verify: Option<Json>,
    pub(crate) last_prune: Option<Json>,
    /// A backup whose restore drill failed: never the reason to skip a slot as unchanged.
    pub(crate) failed_drill_id: Option<String>,
}

/// Why [`BackupService::run_once`] did not produce a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupRunError {
    /// Only the leader takes backups; `leader` is who to ask instead, when known.
    #[error("node {node} is not the leader; only the leader takes backups")]
    NotLeader {
        node: NodeId,
        leader: Option<(NodeId, NodeAddr)>,
    },
    #[error(
        "a backup to {dest} is already in progress on node {node}; wait for it to finish and \
         retry"
    )]
    InProgress { node: NodeId, dest: String },
    #[error("cannot take a consistent copy of the database for the backup to {dest}: {reason}")]
    Snapshot { dest: String, reason: String },
    #[error(transparent)]
    Backup(#[from] BackupError),
}

impl BackupRunError {
    /// Whether running again later may succeed without anyone changing anything (the
    /// destination or the cluster was unavailable, another backup was running).
    pub fn is_retryable(&self) -> bool {
        match self {
            BackupRunError::NotLeader { .. } | BackupRunError::InProgress { .. } => true,
            BackupRunError::Snapshot { .. } => false,
            BackupRunError::Backup(e) => destination_failed(e),
        }
    }
}

/// Errors where the destination (or the network to it) failed, or the cluster is not ready
/// yet: retrying later can work.
fn destination_failed(e: &BackupError) -> bool {
    matches!(
        e,
        BackupError::OpenDestination { .. }
            | BackupError::Upload { .. }
            | BackupError::ManifestWrite { .. }
            | BackupError::List { .. }
            | BackupError::Download { .. }
            | BackupError::AlreadyExists { .. }
            | BackupError::InvalidMeta { .. }
            | BackupError::Fenced { .. }
    )
}

impl From<BackupRunError> for ApiError {
    fn from(e: BackupRunError) -> ApiError {
        match &e {
            BackupRunError::NotLeader { leader: None, .. } => ApiError::NoLeader,
            BackupRunError::NotLeader { .. } => ApiError::Unavailable(format!(
                "{e}; leadership changed while the request was being handled, retry"
            )),
            BackupRunError::InProgress { .. } => ApiError::Conflict(e.to_string()),
            BackupRunError::Snapshot { .. } => ApiError::Internal(e.to_string()),
            BackupRunError::Backup(inner) if destination_failed(inner) => {
                ApiError::Unavailable(e.to_string())
            }
            BackupRunError::Backup(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// What one due schedule slot came to.
#[derive(Debug)]
pub enum SlotOutcome {
    /// A backup was taken for the slot.
    Taken(Box<Manifest>),
    /// The newest backup in the destination already holds this timeline and data.
    Skipped { newest: String },
    /// A backup for this slot (or a later one) is already in the destination: another
    /// leader took it.
    AlreadyDone { newest: String },
    /// The cluster has no timeline yet (the leader has not finished bootstrapping).
    NotReady,
}

impl BackupService {
    /// Builds the service from the `serve` settings, checking everything up front so that a
    /// server with a bad backup configuration refuses to start instead of failing later: the
    /// destination URL and options, each recipient, the passphrase variable (set and not
    /// empty), recipients and passphrase not both, the level (1-22) and the identity file.
    ///
    /// Cloud stores are credentialled from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`)
    /// unless `store_options` says otherwise; requests to a failing store are retried a few
    /// times within 30 s, then the attempt fails. Errors never contain credentials or the
    /// passphrase.
    #[allow(clippy::result_large_err)] // the backup engine's own error type
    pub fn from_settings(
        settings: BackupSettings,
        data_dir: &Path,
    ) -> Result<BackupService, BackupError> {
        let settings = settings.with_env_overrides()?;
        let level = settings.level;
        if !(1..=22).contains(&level) {
            return Err(BackupError::InvalidOptions {
                reason: format!("--backup-level {level} is outside 1..=22 (zstd levels)"),
            });
        }
        let passphrase = settings
            .passphrase_env
            .as_deref()
            .map(passphrase_from_env)
            .transpose()?;
        let encryption = match (settings.recipients.is_empty(), &passphrase) {
            (true, None) => None,
            (false, None) => Some(Encryption::recipients(&settings.recipients)?),
            (true, Some(p)) => Some(Encryption::passphrase(p.clone())?),
            (false, Some(_)) => {
                return Err(BackupError::InvalidOptions {
                    reason: "--backup-recipient and --backup-passphrase-env cannot be combined \
                             (age encrypts a file either to recipients or with a passphrase); \
                             keep one, preferably the recipients"
                        .into(),
                })
            }
        };
        let identity = match (&settings.identity_file, passphrase) {
            (Some(file), _) => {
                let contents =
                    std::fs::read_to_string(file).map_err(|e| BackupError::InvalidIdentity {
                        reason: format!(
                            "cannot read --backup-identity {}: {e}; give an age identity file \
                             (age-keygen output) readable by the server",
                            file.display()
                        ),
                    })?;
                Some(Identity::from_identity_file(&contents)?)
            }
            (None, Some(p)) => Some(Identity::passphrase(p)?),
            (None, None) => None,
        };
        let mut options: Vec<(String, String)> = vec![
            ("max_retries".into(), STORE_MAX_RETRIES.into()),
            ("retry_timeout_secs".into(), STORE_RETRY_TIMEOUT_SECS.into()),
        ];
        options.extend(settings.store_options);
        let dest = Destination::parse_with_options(&settings.to, options)?;
        Ok(BackupService {
            label: dest.to_string(),
            dest,
            options: CreateOptions { level, encryption },
            schedule: settings.schedule,
            verify_interval: settings.verify_interval,
            identity,
            retention: settings.retention,
            snapshots: DataDirLayout::new(data_dir).snapshots,
            max_wal_bytes: settings.max_wal_bytes,
            busy_pace_bytes_per_sec: settings.busy_pace_bytes_per_sec,
            running: tokio::sync::Mutex::new(()),
            record: Mutex::new(Record::default()),
        })
    }

    /// The destination as it may be shown: no credentials.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    pub fn options(&self) -> &CreateOptions {
        &self.options
    }

    /// `age-x25519`, `age-scrypt` or `none`.
    pub fn encryption_name(&self) -> String {
        match &self.options.encryption {
            Some(e) => e.info().scheme.to_string(),
            None => "none".to_string(),
        }
    }

    /// `every 1h`, `cron "..." (UTC)` or `off (POST /backups only)`.
    pub fn schedule_description(&self) -> String {
        match &self.schedule {
            Some(s) => s.describe(),
            None => "off (POST /backups only)".to_string(),
        }
    }

    /// Makes the backup metrics exist (at zero) before the first backup, so dashboards and
    /// alerts see them from the start. Call once the metrics recorder is installed.
    pub fn register_metrics(&self) {
        let dest = self.label.clone();
        for name in [
            "raftlite_backup_success_total",
            "raftlite_backup_failure_total",
            "raftlite_backup_skipped_total",
            "raftlite_backup_pruned_total",
            "raftlite_backup_verify_success_total",
            "raftlite_backup_verify_failure_total",
        ] {
            metrics::counter!(name, "destination" => dest.clone()).increment(0);
        }
    }

    /// Takes one backup on request: checks that `node` leads, copies the database
    /// consistently into a scratch file, uploads it and returns the manifest written, then
    /// applies retention. Records metrics, logs and the outcome for `/status`. Refuses at
    /// once (`InProgress`) while another backup runs on this node, and (`NotLeader`) on a
    /// follower; neither counts as a failed backup.
    pub async fn run_once(&self, node: &RaftNode) -> Result<Manifest, BackupRunError> {
        let Ok(_running) = self.running.try_lock() else {
            return Err(BackupRunError::InProgress {
                node: node.id(),
                dest: self.label.clone(),
            });
        };
        ensure_leader(node)?;
        let manifest = self.attempt(node, None).await?;
        self.apply_retention(&manifest).await;
        Ok(manifest)
    }

    /// Runs the schedule slot starting at `slot_unix_ms`: nothing when the destination already
    /// has a backup for it (or a later slot), a skip when its newest backup holds the same
    /// timeline and data (read from the destination, so this holds across restarts and leader
    /// changes), otherwise a backup marked with the slot and this leader's term, then
    /// retention. Errors as [`BackupService::run_once`].
    pub async fn run_slot(
        &self,
        node: &RaftNode,
        slot_unix_ms: i64,
    ) -> Result<SlotOutcome, BackupRunError> {
        let Ok(_running) = self.running.try_lock() else {
            return Err(BackupRunError::InProgress {
                node: node.id(),
                dest: self.label.clone(),
            });
        };
        ensure_leader(node)?;
        let meta = current_meta(node, &self.label).await?;
        let (Some(first), Some(current)) = (meta.timeline_history.first(), meta.timeline()) else {
            return Ok(SlotOutcome::NotReady);
        };
        let cluster_id = first.id.clone();
        let list = match list_backups(&self.dest).await {
            Ok(list) => list,
            Err(e) => {
                let e = BackupRunError::from(e);
                self.failed(&e, Duration::ZERO);
                return Err(e);
            }
        };
        if let Some((id, newest)) = list.newest(&cluster_id) {
            if newest.slot_unix_ms.is_some_and(|s| s >= slot_unix_ms) {
                return Ok(SlotOutcome::AlreadyDone {
                    newest: id.to_string(),
                });
            }
            let failed_drill = self.with_record(|r| r.failed_drill_id.clone());
            if newest.timeline.id == current.id
                && newest.data_index() == meta.data_changed_index()
                && failed_drill.as_deref() != Some(id.to_string().as_str())
            {
                self.skipped(&id.to_string(), slot_unix_ms);
                return Ok(SlotOutcome::Skipped {
                    newest: id.to_string(),
                });
            }
        }
        let manifest = self.attempt(node, Some(slot_unix_ms)).await?;
        self.apply_retention(&manifest).await;
        Ok(SlotOutcome::Taken(Box::new(manifest)))
    }

    /// One backup with metrics, logs and the `/status` record; the caller holds `running`.
    async fn attempt(
        &self,
        node: &RaftNode,
        slot_unix_ms: Option<i64>,
    ) -> Result<Manifest, BackupRunError> {
        let started = Instant::now();
        self.with_record(|r| r.in_progress_since_unix_ms = Some(unix_ms()));
        let result = self.take(node, slot_unix_ms).await;
        let elapsed = started.elapsed();
        match &result {
            Ok(manifest) => self.succeeded(manifest, elapsed),
            Err(e) => self.failed(e, elapsed),
        }
        result
    }

    async fn take(
        &self,
        node: &RaftNode,
        slot_unix_ms: Option<i64>,
    ) -> Result<Manifest, BackupRunError> {
        let snapshot_error = |reason: String| BackupRunError::Snapshot {
            dest: self.label.clone(),
            reason,
        };
        // The term is read before the copy: the fence below then proves this node led
        // throughout, from the copy to the manifest.
        let term = node.metrics().current_term;
        let store = node.store();
        // First choice: stream the database file itself, pinned unchanged by a read
        // transaction (no copy, no extra disk writes competing with the log's fsyncs).
        let pinned = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.pin_consistent_file())
                .await
                .map_err(|e| snapshot_error(format!("the pinning thread failed: {e}")))?
                .map_err(|e| snapshot_error(e.to_string()))?
        };
        if let Some(pinned) = pinned {
            let mut backup_meta = BackupMeta::of_database(node.id(), &pinned.meta)?;
            backup_meta.leader_term = Some(term);
            backup_meta.slot_unix_ms = slot_unix_ms;
            let file = pinned
                .file
                .try_clone()
                .map_err(|e| snapshot_error(format!("cannot reopen the database file: {e}")))?;
            let state = pinned.meta.clone();
            // Shared with the spill, which releases it early; otherwise it goes at the end.
            let pin = Arc::new(Mutex::new(Some(pinned)));
            let scratch =
                Scratch(SnapshotDir::read_only(&self.snapshots).scratch_path(SCRATCH_PURPOSE));
            let spill = raftlite_backup::Spill {
                requested: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                take_rest: {
                    let runtime = tokio::runtime::Handle::current();
                    let (snapshots, scratch, pin) =
                        (self.snapshots.clone(), scratch.0.clone(), pin.clone());
                    Box::new(move |source: &mut std::fs::File, rest: u64| {
                        spill_rest(runtime, source, rest, snapshots, scratch, pin)
                    })
                },
            };
            let pace = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let yielding = YieldToWrites::start(
                node,
                pace.clone(),
                self.busy_pace_bytes_per_sec,
                (self.max_wal_bytes, spill.requested.clone()),
            );
            let source = raftlite_backup::OpenSource {
                file,
                path: store.path().to_path_buf(),
                state,
                pace: Some(pace),
                spill: Some(spill),
            };
            let manifest = raftlite_backup::create_backup_open(
                source,
                backup_meta,
                &self.dest,
                &self.options,
                self.fence(node, term),
            )
            .await?;
            drop(yielding);
            drop(pin);
            drop(scratch);
            return Ok(manifest);
        }
        tracing::info!("the database file could not be pinned (a long query holds an older snapshot); copying it for the backup instead");
        let snapshots = self.snapshots.clone();
        // The guard lives here, so the scratch file goes whatever happens below (an error, a
        // panic in the blocking task, or this future being dropped).
        let scratch = Scratch(SnapshotDir::read_only(&snapshots).scratch_path(SCRATCH_PURPOSE));
        let path = scratch.0.clone();
        let meta = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&snapshots).map_err(|e| {
                format!(
                    "cannot create the snapshots directory {}: {e}",
                    snapshots.display()
                )
            })?;
            store.snapshot_to(&path).map_err(|e| e.to_string())?;
            raftlite_store::probe(&path).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| snapshot_error(format!("the copying thread failed: {e}")))?
        .map_err(snapshot_error)?
        .ok_or_else(|| snapshot_error("the copy vanished before it could be read".into()))?;
        let mut backup_meta = BackupMeta::of_database(node.id(), &meta)?;
        backup_meta.leader_term = Some(term);
        backup_meta.slot_unix_ms = slot_unix_ms;
        let manifest = create_backup_fenced(
            &scratch.0,
            backup_meta,
            &self.dest,
            &self.options,
            self.fence(node, term),
        )
        .await?;
        drop(scratch);
        Ok(manifest)
    }

    /// Awaited after the upload, before the manifest: proves with a quorum that `node` still
    /// leads in `term`, so a deposed leader never publishes a backup.
    fn fence<'a>(
        &self,
        node: &'a RaftNode,
        term: u64,
    ) -> impl std::future::Future<Output = Result<(), String>> + 'a {
        async move {
            node.ensure_linearizable().await.map_err(|e| {
                format!(
                    "node {} could not confirm with a quorum that it still leads: {e}",
                    node.id()
                )
            })?;
            let now_term = node.metrics().current_term;
            if now_term != term || !node.is_leader() {
                return Err(format!(
                    "node {} led in term {term} when the backup started but the cluster is now \
                     in term {now_term}",
                    node.id()
                ));
            }
            Ok(())
        }
    }

    /// Retention after a backup: deletes what no rule keeps (never `latest`, which is the
    /// newest backup). A failure is logged and shown, never fails the backup.
    async fn apply_retention(&self, latest: &Manifest) {
        if self.retention.is_empty() {
            return;
        }
        let report = raftlite_backup::prune(
            &self.dest,
            Some(&latest.cluster_id),
            &self.retention,
            unix_ms(),
            false,
        )
        .await;
        let dest = self.label.clone();
        let entry = match report {
            Ok(report) => {
                let removed = report.deleted.len() + report.cleaned.len();
                metrics::counter!("raftlite_backup_pruned_total", "destination" => dest.clone())
                    .increment(report.deleted.len() as u64);
                if removed > 0 || !report.failed.is_empty() {
                    tracing::info!(
                        destination = %dest,
                        deleted = report.deleted.len(),
                        cleaned = report.cleaned.len(),
                        failed = report.failed.len(),
                        kept = report.kept.len(),
                        policy = %self.retention.describe(),
                        "retention applied"
                    );
                }
                for (id, reason) in &report.failed {
                    tracing::warn!(destination = %dest, %id, %reason, "retention could not delete a backup; the next run retries");
                }
                json!({
                    "at_unix_ms": unix_ms(),
                    "kept": report.kept.len(),
                    "deleted": report.deleted.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                    "cleaned": report.cleaned.len(),
                    "failed": report.failed.iter().map(|(id, r)| json!({"id": id.to_string(), "reason": r})).collect::<Vec<_>>(),
                })
            }
            Err(e) => {
                tracing::warn!(destination = %dest, error = %e, "retention failed; the next backup retries it");
                json!({"at_unix_ms": unix_ms(), "error": e.to_string()})
            }
        };
        self.with_record(|r| r.last_prune = Some(entry));
    }

    fn succeeded(&self, manifest: &Manifest, elapsed: Duration) {
        let dest = self.label.clone();
        let id = manifest.id().map(|id| id.to_string()).unwrap_or_default();
        let secs = elapsed.as_secs_f64();
        tracing::info!(
            destination = %dest,
            %id,
            log_index = manifest.log_index,
            log_term = manifest.log_term,
            timeline = %manifest.timeline.id,
            slot = manifest.slot_unix_ms,
            plain_size = manifest.plain_size,
            stored_size = manifest.stored_size,
            duration_secs = secs,
            "backup taken"
        );
        metrics::counter!("raftlite_backup_success_total", "destination" => dest.clone())
            .increment(1);
        metrics::gauge!("raftlite_backup_last_success_timestamp_seconds", "destination" => dest.clone())
            .set(unix_ms() as f64 / 1000.0);
        metrics::gauge!("raftlite_backup_last_duration_seconds", "destination" => dest.clone())
            .set(secs);
        metrics::gauge!("raftlite_backup_last_size_bytes", "destination" => dest)
            .set(manifest.stored_size as f64);
        let entry = json!({
            "outcome": "success",
            "id": id,
            "finished_at_unix_ms": unix_ms(),
            "duration_secs": secs,
            "created_at": manifest.created_at,
            "log_index": manifest.log_index,
            "log_term": manifest.log_term,
            "timeline": manifest.timeline,
            "slot_unix_ms": manifest.slot_unix_ms,
            "plain_size": manifest.plain_size,
            "stored_size": manifest.stored_size,
        });
        self.with_record(|r| {
            r.in_progress_since_unix_ms = None;
            r.last = Some(entry.clone());
            r.last_success = Some(entry);
        });
    }

    fn skipped(&self, newest: &str, slot_unix_ms: i64) {
        let dest = self.label.clone();
        // Once per newest backup at INFO; the repeats of a quiet cluster only at DEBUG (with
        // second-level intervals they would fill the log).
        let repeat = self.with_record(|r| {
            r.last
                .as_ref()
                .is_some_and(|l| l["outcome"] == "skipped" && l["newest"] == newest)
        });
        if repeat {
            tracing::debug!(
                destination = %dest,
                newest,
                slot = slot_unix_ms,
                "scheduled backup skipped again: still unchanged"
            );
        } else {
            tracing::info!(
                destination = %dest,
                newest,
                slot = slot_unix_ms,
                "scheduled backup skipped: the newest backup already holds this data (later \
                 skips for the same backup are logged at debug level)"
            );
        }
        metrics::counter!("raftlite_backup_skipped_total", "destination" => dest).increment(1);
        let entry = json!({
            "outcome": "skipped",
            "reason": "unchanged since the newest backup",
            "newest": newest,
            "slot_unix_ms": slot_unix_ms,
            "finished_at_unix_ms": unix_ms(),
        });
        self.with_record(|r| r.last = Some(entry));
    }

    fn failed(&self, error: &BackupRunError, elapsed: Duration) {
        let dest = self.label.clone();
        let secs = elapsed.as_secs_f64();
        tracing::warn!(
            destination = %dest,
            duration_secs = secs,
            retryable = error.is_retryable(),
            error = %error,
            "backup failed"
        );
        metrics::counter!("raftlite_backup_failure_total", "destination" => dest).increment(1);
        let entry = json!({
            "outcome": "failure",
            "finished_at_unix_ms": unix_ms(),
            "duration_secs": secs,
            "error": error.to_string(),
        });
        self.with_record(|r| {
            r.in_progress_since_unix_ms = None;
            r.last = Some(entry);
        });
    }

    pub(crate) fn with_record<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        // A poisoned lock only means a panic elsewhere while updating plain data: keep going.
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut record)
    }

    /// What `/status` shows under `backup`.
    pub fn status(&self) -> Json {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        json!({
            "destination": self.label,
            "encryption": self.encryption_name(),
            "level": self.options.level,
            "schedule": self.schedule_description(),
            "leader_only": true,
            "next_run_unix_ms": record.next_run_unix_ms,
            "retention": self.retention.describe(),
            "verify_interval": self.verify_interval.map(raftlite_backup::format_duration),
            "in_progress": record.in_progress_since_unix_ms.is_some(),
            "in_progress_since_unix_ms": record.in_progress_since_unix_ms,
            "last": record.last,
            "last_success": record.last_success,
            "last_verify": record.last_verify,
            "last_prune": record.last_prune,
        })
    }
}

#[allow(clippy::result_large_err)] // the backup engine's own error type
fn ensure_leader(node: &RaftNode) -> Result<(), BackupRunError> {
    if node.is_leader() {
        Ok(())
    } else {
        Err(BackupRunError::NotLeader {
            node: node.id(),
            leader: node.leader(),
        })
    }
}

/// The store's meta as last committed, read off the async threads (without waiting for an
/// entry being applied: what a backup's checks compare is committed state anyway).
async fn current_meta(node: &RaftNode, label: &str) -> Result<MetaState, BackupRunError> {
    let store = node.store();
    let snapshot_error = |reason: String| BackupRunError::Snapshot {
        dest: label.to_string(),
        reason,
    };
    tokio::task::spawn_blocking(move || store.committed_meta())
        .await
        .map_err(|e| snapshot_error(format!("the reading thread failed: {e}")))?
        .map_err(|e| snapshot_error(format!("cannot read the database's meta table: {e}")))
}

/// `backup` in `/status`: the service's state, or nulls when backups are off.
pub fn status_json(service: Option<&BackupService>) -> Json {
    match service {
        Some(s) => s.status(),
        None => json!({ "destination": null, "schedule": "off", "last": null }),
    }
}

/// The passphrase in the environment variable `var` (which must be set and not empty).
#[allow(clippy::result_large_err)] // the backup engine's own error type
fn passphrase_from_env(var: &str) -> Result<String, BackupError> {
    let missing = |what: &str| BackupError::InvalidOptions {
        reason: format!(
            "--backup-passphrase-env names the environment variable {var:?}, which is {what}; \
             set it to the backup passphrase or leave the option out"
        ),
    };
    if var.is_empty() {
        return Err(BackupError::InvalidOptions {
            reason: "--backup-passphrase-env is empty; give the NAME of an environment variable \
                     holding the passphrase"
                .into(),
        });
    }
    match std::env::var(var) {
        Ok(p) if p.is_empty() => Err(missing("empty")),
        Ok(p) => Ok(p),
        Err(std::env::VarError::NotPresent) => Err(missing("not set")),
        Err(std::env::VarError::NotUnicode(_)) => Err(missing("not valid UTF-8")),
    }
}

/// How often the node's write activity and its WAL are looked at during a backup.
const PACE_CHECK: Duration = Duration::from_millis(200);
/// Free space a spill leaves beside the copy, for the WAL and the log.
const SPILL_SPACE_MARGIN: u64 = 256 << 20;

/// Sets a backup's pace from the node's write activity until dropped: `busy_pace` while entries
/// are being applied, unlimited when none were in the last check interval; with `spill_at`
/// `(max, flag)`, sets `flag` once the WAL is larger than `max` bytes.
struct YieldToWrites(tokio::task::JoinHandle<()>);

impl YieldToWrites {
    fn start(
        node: &RaftNode,
        pace: Arc<std::sync::atomic::AtomicU64>,
        busy_pace: u64,
        spill_at: (u64, Arc<std::sync::atomic::AtomicBool>),
    ) -> YieldToWrites {
        let node = node.clone();
        YieldToWrites(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            let applied = |n: &RaftNode| n.metrics().last_applied.map(|l| l.index).unwrap_or(0);
            let mut last = applied(&node);
            let mut spill_at = Some(spill_at);
            loop {
                tokio::time::sleep(PACE_CHECK).await;
                let now = applied(&node);
                let rate = if now > last { busy_pace } else { 0 };
                pace.store(rate, Ordering::Relaxed);
                last = now;
                if let Some((max, flag)) = &spill_at {
                    let wal = node.store().wal_len();
                    if wal > *max {
                        tracing::info!(
                            wal_bytes = wal,
                            max_wal_bytes = *max,
                            "the WAL grew past its limit during a backup (checkpoints wait for \
                             the backup's pinned file): copying the rest of the file locally \
                             to release it"
                        );
                        flag.store(true, Ordering::Relaxed);
                        spill_at = None;
                    }
                }
            }
        }))
    }
}

/// The spill of a pinned backup (see [`raftlite_backup::Spill`]), on the backup's reading
/// thread: copies the `rest` bytes of `source` from its position into `scratch`, then releases
/// the pin. The copy runs on the blocking pool at normal priority (the reading thread runs at
/// the lowest, and every moment of the copy is WAL growth). On failure `source` is back where
/// it was and still pinned.
fn spill_rest(
    runtime: tokio::runtime::Handle,
    source: &mut std::fs::File,
    rest: u64,
    snapshots: PathBuf,
    scratch: PathBuf,
    pin: Arc<Mutex<Option<raftlite_store::PinnedFile>>>,
) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let at = source.stream_position()?;
    let reader = source.try_clone()?;
    let (done, copied) = std::sync::mpsc::channel();
    let target = scratch.clone();
    runtime.spawn_blocking(move || {
        let _ = done.send(copy_rest(reader, rest, &snapshots, &target));
    });
    let copied = copied.recv().unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "the thread copying the rest of the backup's source stopped",
        ))
    });
    match copied {
        Ok(copy) => {
            // The copy holds every byte still to be read: the file may change from here on.
            drop(pin.lock().unwrap_or_else(|p| p.into_inner()).take());
            Ok(copy)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&scratch);
            source.seek(SeekFrom::Start(at))?;
            Err(e)
        }
    }
}

/// Copies `rest` bytes of `source` from its position into a new file `scratch` under `dir`,
/// returned open at its start. Refuses when the copy would leave less than
/// [`SPILL_SPACE_MARGIN`] free: a full disk would stop the database's own writes.
fn copy_rest(
    source: std::fs::File,
    rest: u64,
    dir: &Path,
    scratch: &Path,
) -> std::io::Result<std::fs::File> {
    use std::io::{Read, Seek, SeekFrom};
    std::fs::create_dir_all(dir)?;
    if let Some(free) = raftlite_store::free_space(dir) {
        if free < rest.saturating_add(SPILL_SPACE_MARGIN) {
            return Err(std::io::Error::other(format!(
                "{} has {free} bytes free, too few for a {rest}-byte copy and a margin of \
                 {SPILL_SPACE_MARGIN}",
                dir.display()
            )));
        }
    }
    let mut copy = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(scratch)?;
    // `std::io::copy` between files uses copy_file_range: no round trip through user space.
    let copied = std::io::copy(&mut (&source).take(rest), &mut copy)?;
    if copied != rest {
        return Err(std::io::Error::other(format!(
            "copied {copied} of the {rest} bytes left: the source ended early"
        )));
    }
    copy.seek(SeekFrom::Start(0))?;
    Ok(copy)
}

impl Drop for YieldToWrites {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A scratch file removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.0.display(), error = %e, "could not remove a backup scratch file")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// POST /backups
// ---------------------------------------------------------------------------------------------

async fn create(
    State(state): State<Arc<ApiState>>,
    Query(params): Params,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    metrics::counter!("raftlite_http_requests_total", "endpoint" => "backups").increment(1);
    let redirect = flag(&params, "redirect");
    if !state.node.is_leader() {
        return forward(&state, &uri, &headers, redirect).await;
    }
    let Some(service) = state.backups.clone() else {
        return ApiError::BadRequest(format!(
            "backups are not configured on node {} (the leader, which takes them): start the \
             server with --backup-to DEST (file:///dir, s3://bucket/prefix, gs://bucket/prefix \
             or az://container/prefix)",
            state.node.id()
        ))
        .into_response();
    };
    let node = state.node.clone();
    let run = tokio::spawn(async move {
        let result = service.run_once(&node).await;
        (result, service)
    });
    match run.await {
        Ok((Ok(manifest), service)) => {
            let id = match manifest.id() {
                Ok(id) => Json::String(id.to_string()),
                Err(_) => Json::Null,
            };
            let body = json!({
                "backup": {
                    "id": id,
                    "destination": service.label(),
                    "manifest": manifest,
                }
            });
            json_response(StatusCode::OK, &body, flag(&params, "pretty"))
        }
        // Leadership moved between the check above and the backup: send it on.
        Ok((Err(BackupRunError::NotLeader { .. }), _)) => {
            forward(&state, &uri, &headers, redirect).await
        }
        Ok((Err(e), _)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::Internal(format!("the backup task failed: {e}")).into_response(),
    }
}

/// A follower's answer: the leader's answer to the same request (forwarded with a long
/// timeout: a backup takes as long as the upload), a 301 under `?redirect`, or 503 when no
/// leader is known or leadership is moving.
async fn forward(state: &ApiState, uri: &Uri, headers: &HeaderMap, redirect: bool) -> Response {
    let req = LeaderOnly {
        method: Method::POST,
        uri,
        headers,
        body: Bytes::new(),
        redirect,
    };
    let err = WriteError::NotLeader {
        leader: state.node.leader(),
    };
    to_leader_within(state, req, err, Some(FORWARDED_BACKUP_TIMEOUT)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_backup_crate_naming() {
        let manifest: Manifest = serde_json::from_value(json!({
            "format_version": 1,
            "cluster_id": "c1",
            "node_id": 1,
            "timeline": {"id": "t1", "counter": 2},
            "log_index": 42,
            "log_term": 3,
            "created_at": "2025-01-02T03:04:05.678Z",
            "created_at_unix_ms": 1_735_787_045_678i64,
            "sqlite_page_size": 4096,
            "sqlite_page_count": 2,
            "plain_sha256": "0".repeat(64),
            "plain_size": 8192,
            "stored_sha256": "0".repeat(64),
            "stored_size": 100,
            "compression": {"algorithm": "zstd", "level": 3},
            "encryption": null,
            "raftlite_version": "0.1.0",
        }))
        .unwrap();
        assert_eq!(
            manifest.id().unwrap().to_string(),
            "c1/20250102T030405.678Z-2-42"
        );
    }

    #[allow(clippy::result_large_err)]
    fn from_config(
        to: &str,
        recipients: &[String],
        passphrase_env: Option<&str>,
        level: i32,
        data_dir: &Path,
    ) -> Result<BackupService, BackupError> {
        let mut settings = BackupSettings::new(to);
        settings.recipients = recipients.to_vec();
        settings.passphrase_env = passphrase_env.map(str::to_string);
        settings.level = level;
        BackupService::from_settings(settings, data_dir)
    }

    #[test]
    fn config_is_checked_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let to = format!("file://{}", dir.path().join("b").display());
        let ok = from_config(&to, &[], None, 3, dir.path()).unwrap();
        assert_eq!(ok.label(), to);
        assert_eq!(ok.encryption_name(), "none");

        let err = from_config("ftp://x/y", &[], None, 3, dir.path()).unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
        let err = from_config("s3://AKID:hunter2@b/p", &[], None, 3, dir.path()).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");

        let err = from_config(&to, &["age1nope".into()], None, 3, dir.path()).unwrap_err();
        assert!(err.to_string().contains("recipient"), "{err}");

        let var = "RAFTLITE_API_TEST_SURELY_UNSET_PASSPHRASE";
        let err = from_config(&to, &[], Some(var), 3, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(var) && err.to_string().contains("not set"),
            "{err}"
        );

        let err = from_config(&to, &[], None, 0, dir.path()).unwrap_err();
        assert!(err.to_string().contains("--backup-level"), "{err}");
    }

    #[test]
    fn errors_map_to_statuses() {
        let busy = BackupRunError::InProgress {
            node: 1,
            dest: "file:///x".into(),
        };
        assert_eq!(ApiError::from(busy).status(), StatusCode::CONFLICT);
        let meta = BackupRunError::Backup(BackupError::InvalidMeta {
            reason: "no timeline".into(),
        });
        assert!(meta.is_retryable());
        assert_eq!(
            ApiError::from(meta).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let snap = BackupRunError::Snapshot {
            dest: "file:///x".into(),
            reason: "disk full".into(),
        };
        assert_eq!(
            ApiError::from(snap).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
