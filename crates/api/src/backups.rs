//! `POST /backups`: the leader takes a consistent backup and uploads it to the destination the
//! server was started with (`--backup-to`), compressed and optionally encrypted
//! (`--backup-recipient` / `--backup-passphrase-env`, `--backup-level`).
//!
//! - Only the leader takes backups. A follower forwards the request to the leader (or answers
//!   301 under `?redirect`), like writes.
//! - The leader copies the database with `Store::snapshot_to` (SQLite's online backup API on
//!   its own read transaction, so writes continue) into a scratch file under
//!   `<data-dir>/snapshots/` on a blocking thread, then streams it to the destination with
//!   [`raftlite_backup::create_backup`] (bounded memory) and removes the scratch file, also on
//!   error or cancellation (start-up removes leftovers of a crash).
//! - One backup at a time per node: a second request meanwhile gets 409.
//! - Answers: 200 `{"backup": {"id": ..., "destination": ..., "manifest": {...}}}`; 400 when
//!   the leader has no `--backup-to`; 503 (with `Retry-After`) when the destination fails, the
//!   message naming it without credentials; 409 while another backup runs.
//! - The request runs as its own task, so a client that goes away does not cancel an upload
//!   halfway (which could leave an unfinished multipart upload behind).
//!
//! [`BackupService::run_once`] is the reusable core (the scheduler calls it too); it records
//! Prometheus metrics (`raftlite_backup_*`, labelled with the destination's safe label), logs
//! every backup and keeps the outcome shown under `backup` in `/status`.

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
    create_backup, BackupError, BackupMeta, CreateOptions, Destination, Encryption, Manifest,
};
use raftlite_consensus::node::{DataDirLayout, RaftNode, WriteError};
use raftlite_consensus::state_machine::SnapshotDir;
use raftlite_consensus::{NodeAddr, NodeId};
use serde_json::{json, Value as Json};

use crate::error::ApiError;
use crate::server::{flag, json_response, to_leader_within, ApiState, LeaderOnly};

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
// The service
// ---------------------------------------------------------------------------------------------

/// Where and how this node backs up, and what its last backups did.
pub struct BackupService {
    dest: Destination,
    /// `dest` as displayed: scheme, bucket (or directory) and prefix, never credentials.
    label: String,
    options: CreateOptions,
    /// `<data-dir>/snapshots`: where the consistent copy is written before upload.
    snapshots: PathBuf,
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
            .finish()
    }
}

/// What `/status` shows about past backups.
#[derive(Default)]
struct Record {
    in_progress_since_unix_ms: Option<i64>,
    /// The most recent attempt, successful or not.
    last: Option<Json>,
    last_success: Option<Json>,
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

impl BackupService {
    /// A service uploading to `dest` with `options`; scratch files go under
    /// `<data_dir>/snapshots/`.
    pub fn new(dest: Destination, options: CreateOptions, data_dir: &Path) -> BackupService {
        BackupService {
            label: dest.to_string(),
            dest,
            options,
            snapshots: DataDirLayout::new(data_dir).snapshots,
            running: tokio::sync::Mutex::new(()),
            record: Mutex::new(Record::default()),
        }
    }

    /// Builds the service from the `serve` settings (`--backup-to`, `--backup-recipient`,
    /// `--backup-passphrase-env`, `--backup-level`), checking everything up front so that a
    /// server with a bad backup configuration refuses to start instead of failing later:
    /// the destination URL, each recipient, the passphrase variable (set and not empty),
    /// recipients and passphrase not both, and the level (1-22).
    ///
    /// Cloud stores are credentialled from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`);
    /// requests to a failing store are retried a few times within 30 s, then the backup fails.
    /// Errors never contain credentials or the passphrase.
    #[allow(clippy::result_large_err)] // the backup engine's own error type
    pub fn from_config(
        to: &str,
        recipients: &[String],
        passphrase_env: Option<&str>,
        level: i32,
        data_dir: &Path,
    ) -> Result<BackupService, BackupError> {
        if !(1..=22).contains(&level) {
            return Err(BackupError::InvalidOptions {
                reason: format!("--backup-level {level} is outside 1..=22 (zstd levels)"),
            });
        }
        let encryption = match (recipients.is_empty(), passphrase_env) {
            (true, None) => None,
            (false, None) => Some(Encryption::recipients(recipients)?),
            (true, Some(var)) => Some(passphrase_from_env(var)?),
            (false, Some(_)) => {
                return Err(BackupError::InvalidOptions {
                    reason: "--backup-recipient and --backup-passphrase-env cannot be combined \
                             (age encrypts a file either to recipients or with a passphrase); \
                             keep one, preferably the recipients"
                        .into(),
                })
            }
        };
        let dest = Destination::parse_with_options(
            to,
            [
                ("max_retries", STORE_MAX_RETRIES),
                ("retry_timeout_secs", STORE_RETRY_TIMEOUT_SECS),
            ],
        )?;
        Ok(BackupService::new(
            dest,
            CreateOptions { level, encryption },
            data_dir,
        ))
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

    /// Makes the backup metrics exist (at zero) before the first backup, so dashboards and
    /// alerts see them from the start. Call once the metrics recorder is installed.
    pub fn register_metrics(&self) {
        let dest = self.label.clone();
        metrics::counter!("raftlite_backup_success_total", "destination" => dest.clone())
            .increment(0);
        metrics::counter!("raftlite_backup_failure_total", "destination" => dest).increment(0);
    }

    /// Takes one backup: checks that `node` leads, copies the database consistently into a
    /// scratch file, uploads it and returns the manifest written. Records metrics, logs and the
    /// outcome for `/status`. Refuses at once (`InProgress`) while another backup runs on
    /// this node, and (`NotLeader`) on a follower; neither counts as a failed backup.
    pub async fn run_once(&self, node: &RaftNode) -> Result<Manifest, BackupRunError> {
        let Ok(_running) = self.running.try_lock() else {
            return Err(BackupRunError::InProgress {
                node: node.id(),
                dest: self.label.clone(),
            });
        };
        if !node.is_leader() {
            return Err(BackupRunError::NotLeader {
                node: node.id(),
                leader: node.leader(),
            });
        }
        let started = Instant::now();
        self.with_record(|r| r.in_progress_since_unix_ms = Some(unix_ms()));
        let result = self.take(node).await;
        let elapsed = started.elapsed();
        match &result {
            Ok(manifest) => self.succeeded(manifest, elapsed),
            Err(e) => self.failed(e, elapsed),
        }
        result
    }

    async fn take(&self, node: &RaftNode) -> Result<Manifest, BackupRunError> {
        let snapshot_error = |reason: String| BackupRunError::Snapshot {
            dest: self.label.clone(),
            reason,
        };
        let snapshots = self.snapshots.clone();
        let store = node.store();
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
        let backup_meta = BackupMeta::of_database(node.id(), &meta)?;
        let manifest = create_backup(&scratch.0, backup_meta, &self.dest, &self.options).await?;
        drop(scratch);
        Ok(manifest)
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
            "plain_size": manifest.plain_size,
            "stored_size": manifest.stored_size,
        });
        self.with_record(|r| {
            r.in_progress_since_unix_ms = None;
            r.last = Some(entry.clone());
            r.last_success = Some(entry);
        });
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

    fn with_record(&self, f: impl FnOnce(&mut Record)) {
        // A poisoned lock only means a panic elsewhere while updating plain data: keep going.
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut record);
    }

    /// What `/status` shows under `backup`.
    pub fn status(&self) -> Json {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        json!({
            "destination": self.label,
            "encryption": self.encryption_name(),
            "level": self.options.level,
            "in_progress": record.in_progress_since_unix_ms.is_some(),
            "in_progress_since_unix_ms": record.in_progress_since_unix_ms,
            "last": record.last,
            "last_success": record.last_success,
        })
    }
}

/// `backup` in `/status`: the service's state, or nulls on a node without `--backup-to`.
pub fn status_json(service: Option<&BackupService>) -> Json {
    match service {
        Some(s) => s.status(),
        None => json!({ "destination": null, "last": null }),
    }
}

/// `Encryption::Passphrase` from the environment variable `var` (which must be set).
#[allow(clippy::result_large_err)] // the backup engine's own error type
fn passphrase_from_env(var: &str) -> Result<Encryption, BackupError> {
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
        Ok(p) => Encryption::passphrase(p),
        Err(std::env::VarError::NotPresent) => Err(missing("not set")),
        Err(std::env::VarError::NotUnicode(_)) => Err(missing("not valid UTF-8")),
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

    #[test]
    fn config_is_checked_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let to = format!("file://{}", dir.path().join("b").display());
        let ok = BackupService::from_config(&to, &[], None, 3, dir.path()).unwrap();
        assert_eq!(ok.label(), to);
        assert_eq!(ok.encryption_name(), "none");

        let err = BackupService::from_config("ftp://x/y", &[], None, 3, dir.path()).unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
        let err = BackupService::from_config("s3://AKID:hunter2@b/p", &[], None, 3, dir.path())
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");

        let err =
            BackupService::from_config(&to, &["age1nope".into()], None, 3, dir.path()).unwrap_err();
        assert!(err.to_string().contains("recipient"), "{err}");

        let var = "RAFTLITE_API_TEST_SURELY_UNSET_PASSPHRASE";
        let err = BackupService::from_config(&to, &[], Some(var), 3, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(var) && err.to_string().contains("not set"),
            "{err}"
        );

        let err = BackupService::from_config(&to, &[], None, 0, dir.path()).unwrap_err();
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
