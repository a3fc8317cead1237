//! The leader's backup service: backups taken by the server, on request (`POST /backups`,
//! whose handler is in the HTTP crate) and on a schedule (`--backup-interval` /
//! `--backup-cron`, see [`scheduler`]), to the destination the server was started with
//! (`--backup-to`, by default a local directory beside the data dir), compressed and optionally
//! encrypted (`--backup-recipient` / `--backup-passphrase-env`, `--backup-level`), with
//! retention after every backup (`--backup-keep-*`) and restore drills
//! (`--backup-verify-interval`, `drill.rs`).
//!
//! The service reaches the cluster through [`BackupCluster`] (implemented by `RaftNode`), so
//! its decisions (slots, skips, the fence, retention, the one-at-a-time guard) are tested with
//! a fake cluster.
//!
//! - Only the leader takes backups ([`BackupRunError::NotLeader`] elsewhere).
//! - The leader pins the database file as a consistent snapshot (`Store::pin_consistent_file`:
//!   a full checkpoint, then a read transaction that keeps checkpoints from changing the file
//!   while writes go on into the WAL) and streams the file itself to the destination with
//!   [`crate::create_backup_open`]: no copy, bounded memory. When it cannot be pinned
//!   at once (a long query holds an older snapshot), it copies the database with
//!   `Store::snapshot_to` into a scratch file under `<data-dir>/snapshots/` instead and streams
//!   that, removing it afterwards (start-up removes leftovers of a crash).
//! - While the file is pinned no checkpoint can complete, so every write grows the WAL. When the
//!   WAL passes `RAFTLITE_BACKUP_MAX_WAL_MIB` (default [`DEFAULT_MAX_WAL_MIB`]), the part of the
//!   file not yet read is copied at local disk speed into a scratch file under
//!   `<data-dir>/snapshots/` and the pin is released; the upload goes on from the copy. The
//!   WAL's peak is that limit plus what the writes add during the copy (`pacing.rs`).
//! - Every backup records the leader's term; before its manifest is written the leader
//!   confirms with a quorum that it still leads in that term, so a deposed leader never
//!   publishes a set (and of two sets for one schedule slot, listings count the higher term).
//! - One backup at a time per node: a second request meanwhile is refused
//!   ([`BackupRunError::InProgress`]).
//!
//! The service records Prometheus metrics (`raftlite_backup_*`, labelled with the
//! destination's safe label), logs every backup and keeps what `/status` shows under `backup`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use raftlite_consensus::node::DataDirLayout;
use serde_json::{json, Value as Json};

use crate::{
    BackupError, CreateOptions, Destination, Encryption, Identity, Manifest, RetentionPolicy,
    Schedule,
};

pub mod archiver;
mod cluster;
pub mod copier;
mod drill;
mod error;
mod incremental;
mod pacing;
mod run;
pub mod scheduler;
mod settings;
#[cfg(test)]
mod tests;

pub use cluster::BackupCluster;
pub use error::{destination_failed, BackupRunError};
pub use scheduler::spawn;
pub use settings::{
    BackupSettings, BUSY_PACE_ENV, DEFAULT_BUSY_PACE_MIB, DEFAULT_MAX_WAL_MIB, MAX_WAL_ENV,
};

use settings::passphrase_from_env;

/// Retries of one request to a failing cloud store (object_store's default is 10 within
/// 3 minutes, which would hold `POST /backups` for minutes when the destination is down).
const STORE_MAX_RETRIES: &str = "4";
/// Time budget of those retries, per request, in seconds.
const STORE_RETRY_TIMEOUT_SECS: &str = "30";

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
    /// Prune the log archive beside the backups to this window after each backup; `None`:
    /// leave the archive alone.
    pub(crate) archive_keep_within: Option<Duration>,
    /// `<data-dir>/snapshots`: where the consistent copy is written before upload, and where
    /// drills decompress.
    pub(crate) snapshots: PathBuf,
    max_wal_bytes: u64,
    busy_pace_bytes_per_sec: u64,
    /// `--backup-full-every`: 1 takes only full backups.
    pub(crate) full_every: u32,
    /// Held for the whole of a backup: one at a time per node.
    running: tokio::sync::Mutex<()>,
    /// The backup holding `running` is a base the log archive asked for: a requested backup
    /// waits for it instead of being refused.
    base_running: std::sync::atomic::AtomicBool,
    record: Mutex<Record>,
    /// The copies to further destinations (`--backup-copy-to`), shown in `status`.
    copier: std::sync::OnceLock<std::sync::Arc<copier::Copier>>,
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
            archive_keep_within: settings.archive_keep_within,
            snapshots: DataDirLayout::new(data_dir).snapshots,
            max_wal_bytes: settings.max_wal_bytes,
            busy_pace_bytes_per_sec: settings.busy_pace_bytes_per_sec,
            full_every: settings.full_every.max(1),
            running: tokio::sync::Mutex::new(()),
            base_running: std::sync::atomic::AtomicBool::new(false),
            record: Mutex::new(Record::default()),
            copier: std::sync::OnceLock::new(),
        })
    }

    /// Shows `copier`'s copies in [`BackupService::status`] (under `copies`); once.
    pub fn attach_copier(&self, copier: std::sync::Arc<copier::Copier>) {
        let _ = self.copier.set(copier);
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
            "archive_keep_within": self.archive_keep_within.map(crate::format_duration),
            "verify_interval": self.verify_interval.map(crate::format_duration),
            "in_progress": record.in_progress_since_unix_ms.is_some(),
            "in_progress_since_unix_ms": record.in_progress_since_unix_ms,
            "last": record.last,
            "last_success": record.last_success,
            "last_verify": record.last_verify,
            "last_prune": record.last_prune,
            "copies": self.copier.get().map(|c| c.status()),
        })
    }
}
