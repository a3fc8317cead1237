//! The backup settings `serve` gives the service, and the environment variables that tune a
//! backup's pacing.

use std::path::PathBuf;
use std::time::Duration;

use crate::{BackupError, RetentionPolicy, Schedule};

/// Everything `serve` configures about backups, parsed:
/// [`BackupService::from_settings`](super::BackupService::from_settings) checks the rest
/// (destination, keys, passphrase, level) before the server starts.
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
    /// Every `full_every`-th backup of a chain is full, the others incremental
    /// ([`crate::incremental`]); 1: every backup is full.
    pub full_every: u32,
    /// `None`: backups only on request (`POST /backups`).
    pub schedule: Option<Schedule>,
    /// How often the leader drills a restore of the newest backup; `None`: never.
    pub verify_interval: Option<Duration>,
    /// age identity file for drills of backups encrypted to recipients.
    pub identity_file: Option<PathBuf>,
    pub retention: RetentionPolicy,
    /// `--archive-keep-within`: after each backup's retention, also prune the log archive in
    /// the backup destination to what the points within this window need. `None`: the archive
    /// is not pruned (base backups it needs for the default window are still kept).
    pub archive_keep_within: Option<Duration>,
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
            full_every: DEFAULT_FULL_EVERY,
            schedule: None,
            verify_interval: None,
            identity_file: None,
            retention: RetentionPolicy::server_default(),
            archive_keep_within: None,
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

/// `--backup-full-every` when not given: every backup is full.
pub const DEFAULT_FULL_EVERY: u32 = 1;

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

/// The passphrase in the environment variable `var` (which must be set and not empty).
#[allow(clippy::result_large_err)] // the backup engine's own error type
pub(super) fn passphrase_from_env(var: &str) -> Result<String, BackupError> {
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
