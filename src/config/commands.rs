//! The arguments of the subcommands other than `serve`: `backup`, `restore` and `shell`
//! (`doctor` and `recover` keep theirs in `recovery_cli.rs`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::credentials::ClientCredentials;

/// `raftlite backup ...`
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: BackupCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BackupCommand {
    /// Take a consistent backup of a running cluster and upload it.
    Create(BackupCreateArgs),
    /// List the backups in a destination.
    List(BackupListArgs),
    /// Download and check backups (hashes, decryption, decompression, integrity_check) and the
    /// log archive (segment hashes, chain continuity).
    Verify(BackupVerifyArgs),
    /// Delete backups that no retention rule keeps (manifest first, then data), and with
    /// --archive-keep-within the log archive no retained point needs.
    Prune(BackupPruneArgs),
    /// Copy finished backups and the log archive to another destination: every hash checked
    /// before an object lands, manifests last; only what the copy lacks moves.
    Copy(BackupCopyArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BackupCopyArgs {
    /// Destination to copy from.
    #[arg(long, value_name = "DEST", env = "RAFTLITE_BACKUP_TO")]
    pub from: String,

    /// Destination to copy to (file:///abs/dir, s3://bucket/prefix, gs://..., az://...).
    #[arg(long, value_name = "DEST")]
    pub to: String,

    /// Only this backup (with the parents an incremental needs), even if it was copied before
    /// and deleted from --to since; repeatable. The log archive is not copied then.
    #[arg(long, value_name = "ID")]
    pub id: Vec<String>,

    /// Only this cluster's backups and log archive [default: every cluster in --from].
    #[arg(long, value_name = "ID")]
    pub cluster: Option<String>,

    /// Copy backups only, not the log archive.
    #[arg(long)]
    pub no_archive: bool,

    /// Also copy backups copied to --to before that it no longer holds (its retention deleted
    /// them, or it was emptied).
    #[arg(long)]
    pub recopy: bool,

    /// Copy backups at most this many bytes per second (e.g. `16MiB`), so a copy sharing a disk
    /// or a link with a running cluster leaves it room [default: no limit].
    #[arg(long, value_name = "BYTES", value_parser = super::serve::parse_bytes)]
    pub max_rate: Option<usize>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BackupPruneArgs {
    /// Destination holding the backups.
    #[arg(long, value_name = "DEST", env = "RAFTLITE_BACKUP_TO")]
    pub from: String,

    /// Only this cluster's backups [default: every cluster in the destination].
    #[arg(long, value_name = "ID")]
    pub cluster: Option<String>,

    #[command(flatten)]
    pub keep: PruneKeepArgs,

    /// Also prune the log archive: keep every segment that a point within this window (e.g.
    /// `7d`) needs, from the newest base backup at or before its start. Whether given or not,
    /// backups the archive's window needs (7d when not given) are kept.
    #[arg(long, value_name = "DUR")]
    pub archive_keep_within: Option<String>,

    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Retention rules of `raftlite backup prune` (a backup kept by any rule stays; at least one
/// rule is required, unless only the archive is pruned with --archive-keep-within).
#[derive(Debug, Clone, Default, Args)]
pub struct PruneKeepArgs {
    /// Keep the newest N backups.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last N days (UTC) that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep every backup younger than this, e.g. `48h`, `30d`.
    #[arg(long, value_name = "DUR")]
    pub keep_within: Option<String>,
}

/// Connection to a running node (shared by CLI commands that talk to one).
#[derive(Debug, Clone, Args)]
pub struct NodeConnection {
    /// HTTP(S) URL of any cluster member (the leader takes the snapshot).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:4001",
        env = "RAFTLITE_NODE"
    )]
    pub node: String,

    #[command(flatten)]
    pub credentials: ClientCredentials,
}

#[derive(Debug, Clone, Args)]
pub struct BackupCreateArgs {
    #[command(flatten)]
    pub connection: NodeConnection,

    /// Destination: file:///abs/dir, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(long, value_name = "DEST", env = "RAFTLITE_BACKUP_TO")]
    pub to: String,

    /// age X25519 recipient (`age1...`); repeatable.
    #[arg(long, value_name = "AGE_RECIPIENT")]
    pub recipient: Vec<String>,

    /// Name of an environment variable holding a passphrase to encrypt with.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,

    /// zstd compression level.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub level: i32,

    /// Print the manifest as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BackupListArgs {
    /// Destination to list.
    #[arg(long, value_name = "DEST", env = "RAFTLITE_BACKUP_TO")]
    pub from: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// List the log archive instead of the backups: per cluster and timeline its coverage
    /// (first/last index and time, gaps, segments) and the timeline's record (parent, branch
    /// point, reason); with --json as a JSON array.
    #[arg(long)]
    pub archive: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BackupVerifyArgs {
    /// Destination holding the backups.
    #[arg(long, value_name = "DEST", env = "RAFTLITE_BACKUP_TO")]
    pub from: String,

    /// Backup to verify [default: the newest].
    #[arg(long, value_name = "ID", conflicts_with = "all")]
    pub id: Option<String>,

    /// Verify every backup in the destination.
    #[arg(long)]
    pub all: bool,

    /// age identity file (`AGE-SECRET-KEY-1...`) for encrypted backups.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Name of an environment variable holding the passphrase of passphrase-encrypted backups.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,

    /// Print JSON reports.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `raftlite restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub connection: NodeConnection,

    /// What to restore: a SQLite file, `-` for stdin, or a backup destination (file:///abs/dir,
    /// s3://bucket/prefix, gs://..., az://...).
    #[arg(long, value_name = "SOURCE")]
    pub from: String,

    /// Backup to restore from a destination [default: the newest verified one].
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    /// age identity file (`AGE-SECRET-KEY-1...`) for encrypted backups.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_env")]
    pub identity: Option<PathBuf>,

    /// Name of an environment variable holding the passphrase of passphrase-encrypted backups.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,

    /// Point-in-time restore: the database as it stood after this log index (a base backup
    /// plus the archived log of `--archive-to`, replayed).
    #[arg(long, value_name = "N", conflicts_with_all = ["to_time", "to_latest", "id"])]
    pub to_index: Option<u64>,

    /// Point-in-time restore: the database with every write committed at or before this moment
    /// (RFC 3339, e.g. 2026-12-07T14:03:00Z), by the leader's clock stamped in the log.
    #[arg(long, value_name = "RFC3339", conflicts_with_all = ["to_latest", "id"])]
    pub to_time: Option<String>,

    /// Point-in-time restore: the last archived write.
    #[arg(long, conflicts_with = "id")]
    pub to_latest: bool,

    /// With --to-*: the timeline whose archive to replay [default: the newest backup's].
    #[arg(long, value_name = "ID")]
    pub timeline: Option<String>,

    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}
