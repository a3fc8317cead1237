//! Command-line and configuration-file handling for the `raftlite` binary.
//!
//! `raftlite serve` settings come from four places, highest precedence first:
//! command-line flag, `RAFTLITE_<NAME>` environment variable, TOML file given
//! by `--config FILE` (or `RAFTLITE_CONFIG`), built-in default. Clap handles
//! flag-over-env; [`resolve`] merges the result with the file and defaults and
//! validates everything into a [`ServeConfig`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

pub const DEFAULT_DATA_DIR: &str = "./raftlite-data";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4001";
pub const DEFAULT_RAFT_ADDR: &str = "127.0.0.1:4002";
pub const DEFAULT_SNAPSHOT_THRESHOLD: u64 = 8192;
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "raftlite",
    version,
    about = "Raft-replicated SQLite server with an rqlite-compatible HTTP API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up; boxing the large variant would only complicate the derive.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a raftlite node.
    Serve(ServeArgs),
    /// Interactive SQL shell against a running node.
    Shell(ShellArgs),
    /// Create, list and verify backups.
    Backup(BackupArgs),
    /// Replace the whole cluster's database with a SQLite file or a backup (online, all nodes
    /// switch at one log index on a new timeline).
    Restore(RestoreArgs),
    /// Examine a data dir: classification, indexes, timelines, the recommended action.
    /// Changes nothing.
    Doctor(crate::recovery_cli::DoctorArgs),
    /// Lost quorum: rewrite the membership of a STOPPED surviving node so it can serve again.
    Recover(crate::recovery_cli::RecoverArgs),
}

/// Raw `serve` arguments. Every field is optional so that values missing from
/// the command line and environment can be taken from the config file; call
/// [`resolve`] to obtain the final [`ServeConfig`].
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; keys are the flag names with underscores (data_dir, http_addr, ...).
    #[arg(long, value_name = "FILE", env = "RAFTLITE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory holding the Raft log, snapshots and the SQLite database [default: ./raftlite-data].
    #[arg(long, value_name = "DIR", env = "RAFTLITE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the HTTP API listens on [default: 127.0.0.1:4001].
    #[arg(long, value_name = "HOST:PORT", env = "RAFTLITE_HTTP_ADDR")]
    pub http_addr: Option<String>,

    /// Address the Raft RPC server listens on [default: 127.0.0.1:4002].
    #[arg(long, value_name = "HOST:PORT", env = "RAFTLITE_RAFT_ADDR")]
    pub raft_addr: Option<String>,

    /// HTTP address other nodes and clients should use [default: --http-addr].
    #[arg(long, value_name = "HOST:PORT", env = "RAFTLITE_HTTP_ADVERTISE_ADDR")]
    pub http_advertise_addr: Option<String>,

    /// Raft address other nodes should use [default: --raft-addr].
    #[arg(long, value_name = "HOST:PORT", env = "RAFTLITE_RAFT_ADVERTISE_ADDR")]
    pub raft_advertise_addr: Option<String>,

    /// Numeric id of this node (must be unique in the cluster).
    #[arg(long, value_name = "N", env = "RAFTLITE_NODE_ID")]
    pub node_id: Option<u64>,

    /// HTTP URL(s) of existing cluster members to join; comma-separated and/or repeated.
    #[arg(
        long,
        value_name = "URL[,URL...]",
        env = "RAFTLITE_JOIN",
        value_delimiter = ','
    )]
    pub join: Vec<String>,

    /// Take a Raft snapshot after this many log entries [default: 8192].
    #[arg(long, value_name = "N", env = "RAFTLITE_SNAPSHOT_THRESHOLD")]
    pub snapshot_threshold: Option<u64>,

    /// Log filter, e.g. `info` or `raftlite=debug,openraft=info` [default: info].
    #[arg(long, value_name = "LEVEL", env = "RAFTLITE_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// rqlite-format permissions file enabling HTTP Basic auth:
    /// `[{"username": "..", "password": "..", "perms": ["all"]}]`.
    #[arg(long, value_name = "FILE", env = "RAFTLITE_AUTH")]
    pub auth: Option<PathBuf>,

    /// User from the --auth file whose credentials this node uses to join and forward.
    #[arg(long, value_name = "USER", env = "RAFTLITE_JOIN_AS")]
    pub join_as: Option<String>,

    /// PEM certificate (chain) for HTTPS on the HTTP API.
    #[arg(long, value_name = "FILE", env = "RAFTLITE_HTTP_CERT")]
    pub http_cert: Option<PathBuf>,

    /// PEM private key for --http-cert.
    #[arg(long, value_name = "FILE", env = "RAFTLITE_HTTP_KEY")]
    pub http_key: Option<PathBuf>,

    /// PEM CA certificate(s) that client certificates of the HTTP API must chain to.
    #[arg(long, value_name = "FILE", env = "RAFTLITE_HTTP_CA_CERT")]
    pub http_ca_cert: Option<PathBuf>,

    /// Require HTTP API clients to present a certificate signed by --http-ca-cert.
    #[arg(long, env = "RAFTLITE_HTTP_VERIFY_CLIENT")]
    pub http_verify_client: bool,

    /// PEM certificate (chain) for node-to-node traffic (Raft RPC, joins, forwarding).
    #[arg(long, value_name = "FILE", env = "RAFTLITE_NODE_CERT")]
    pub node_cert: Option<PathBuf>,

    /// PEM private key for --node-cert.
    #[arg(long, value_name = "FILE", env = "RAFTLITE_NODE_KEY")]
    pub node_key: Option<PathBuf>,

    /// PEM CA certificate(s) other nodes' certificates must chain to.
    #[arg(long, value_name = "FILE", env = "RAFTLITE_NODE_CA")]
    pub node_ca: Option<PathBuf>,

    /// Require nodes connecting to the Raft port to present a certificate signed by --node-ca.
    #[arg(long, env = "RAFTLITE_NODE_VERIFY_CLIENT")]
    pub node_verify_client: bool,

    /// Where the leader uploads backups (file:///dir, s3://bucket/prefix, gs://, az://), or
    /// `off` [default: file://<data-dir's parent>/raftlite-backups, hourly].
    #[arg(long, value_name = "DEST|off", env = "RAFTLITE_BACKUP_TO")]
    pub backup_to: Option<String>,

    /// Back up on this interval, e.g. `30m`, `1h`, `1d`; `off` for POST /backups only
    /// [default: 1h unless --backup-cron].
    #[arg(long, value_name = "DUR|off", env = "RAFTLITE_BACKUP_INTERVAL")]
    pub backup_interval: Option<String>,

    /// Back up on a cron schedule instead: 5 fields (`0 * * * *`) or 6 with seconds first.
    #[arg(long, value_name = "EXPR", env = "RAFTLITE_BACKUP_CRON")]
    pub backup_cron: Option<String>,

    /// Time zone of --backup-cron, e.g. `Europe/Berlin` [default: UTC].
    #[arg(long, value_name = "ZONE", env = "RAFTLITE_BACKUP_TZ")]
    pub backup_tz: Option<String>,

    /// Restore-drill the newest backup this often (download, hashes, decrypt with
    /// --backup-identity, integrity_check); `off` to disable [default: 24h].
    #[arg(long, value_name = "DUR|off", env = "RAFTLITE_BACKUP_VERIFY_INTERVAL")]
    pub backup_verify_interval: Option<String>,

    /// age identity file that opens the backups, for restore drills of encrypted backups.
    #[arg(long, value_name = "FILE", env = "RAFTLITE_BACKUP_IDENTITY")]
    pub backup_identity: Option<PathBuf>,

    /// Retention: keep the newest N backups. With no --backup-keep-* option the policy is
    /// the newest 10, 24 hourly, 7 daily, 4 weekly, 12 monthly.
    #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_KEEP_LAST")]
    pub backup_keep_last: Option<u32>,

    /// Retention: keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_KEEP_HOURLY")]
    pub backup_keep_hourly: Option<u32>,

    /// Retention: keep the newest backup of each of the last N days (UTC) that have one.
    #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_KEEP_DAILY")]
    pub backup_keep_daily: Option<u32>,

    /// Retention: keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_KEEP_WEEKLY")]
    pub backup_keep_weekly: Option<u32>,

    /// Retention: keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_KEEP_MONTHLY")]
    pub backup_keep_monthly: Option<u32>,

    /// Retention: keep every backup younger than this, e.g. `48h`, `30d`.
    #[arg(long, value_name = "DUR", env = "RAFTLITE_BACKUP_KEEP_WITHIN")]
    pub backup_keep_within: Option<String>,

    /// rqlite's `-auto-backup` JSON config file, mapped onto raftlite's backups (instead of
    /// --backup-to and --backup-interval).
    #[arg(long, value_name = "FILE", env = "RAFTLITE_AUTO_BACKUP")]
    pub auto_backup: Option<PathBuf>,

    /// Start even though the Raft log is lost or damaged: the surviving database seeds a new
    /// single-node cluster on a new timeline (damaged parts are moved aside, never deleted).
    #[arg(long, env = "RAFTLITE_RECOVERY_MODE")]
    pub recovery_mode: bool,

    /// On a brand-new empty node that bootstraps (not one that joins): first restore the newest
    /// verified backup from this destination, on a new timeline. Never over existing data.
    #[arg(long, value_name = "DEST", env = "RAFTLITE_AUTO_RESTORE_FROM")]
    pub auto_restore_from: Option<String>,

    /// age identity file that opens the backups to auto-restore.
    #[arg(long, value_name = "FILE", env = "RAFTLITE_AUTO_RESTORE_IDENTITY")]
    pub auto_restore_identity: Option<PathBuf>,

    /// With --auto-restore-from: start empty when the destination has no backup (instead of
    /// refusing to start).
    #[arg(long, env = "RAFTLITE_AUTO_RESTORE_IF_EMPTY_OK")]
    pub auto_restore_if_empty_ok: bool,

    /// rqlite's `-auto-restore` JSON config file (instead of --auto-restore-from).
    #[arg(long, value_name = "FILE", env = "RAFTLITE_AUTO_RESTORE")]
    pub auto_restore: Option<PathBuf>,

    /// age X25519 recipient (`age1...`) to encrypt backups to; repeatable or comma-separated.
    #[arg(
        long,
        value_name = "AGE_RECIPIENT",
        env = "RAFTLITE_BACKUP_RECIPIENT",
        value_delimiter = ','
    )]
    pub backup_recipient: Vec<String>,

    /// Name of an environment variable holding a passphrase to encrypt backups with.
    #[arg(long, value_name = "VAR", env = "RAFTLITE_BACKUP_PASSPHRASE_ENV")]
    pub backup_passphrase_env: Option<String>,

    /// zstd level for backups [default: 3].
    #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_LEVEL")]
    pub backup_level: Option<i32>,

    /// Largest write request, encoded as one Raft log entry (bytes, or with KiB/MiB): a larger
    /// one is refused with 413 before it reaches the log [default: 4MiB; at most 8MiB].
    #[arg(long, value_name = "BYTES", env = "RAFTLITE_MAX_ENTRY_BYTES", value_parser = parse_bytes)]
    pub max_entry_bytes: Option<usize>,

    /// Largest query result one response carries; a larger one is refused with 413 and the
    /// query stops reading [default: 64MiB].
    #[arg(long, value_name = "BYTES", env = "RAFTLITE_MAX_RESPONSE_BYTES", value_parser = parse_bytes)]
    pub max_response_bytes: Option<usize>,

    /// Requests handled at once (not counting /readyz, /status, /metrics); more are answered
    /// 503 with Retry-After [default: 256].
    #[arg(long, value_name = "N", env = "RAFTLITE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,

    /// Request bodies held in memory at once, by Content-Length; a request that does not fit is
    /// answered 503 with Retry-After before its body is read [default: 256MiB].
    #[arg(long, value_name = "BYTES", env = "RAFTLITE_MAX_BUFFERED_BODY_BYTES", value_parser = parse_bytes)]
    pub max_buffered_body_bytes: Option<usize>,
}

/// A byte count: a plain number or one with a `KiB`, `MiB` or `GiB` suffix (`KB`, `MB`, `GB`
/// and `K`, `M`, `G` mean the same powers of 1024).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count: use e.g. 4194304, 512KiB or 4MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown unit {other:?}: use KiB, MiB or GiB")),
    };
    number
        .checked_mul(1usize << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A byte count in the config file: a number or a string such as "4MiB".
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a byte count: a number or a string such as \"4MiB\""
)]
enum FileBytes {
    Number(usize),
    Text(String),
}

impl FileBytes {
    fn resolve(self, flag: &'static str) -> Result<usize, ConfigError> {
        match self {
            FileBytes::Number(n) => Ok(n),
            FileBytes::Text(t) => parse_bytes(&t).map_err(|reason| ConfigError::InvalidValue {
                flag,
                value: t,
                reason,
            }),
        }
    }
}

/// What one request may cost a node (`--max-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_entry_bytes: usize,
    pub api: raftlite_api::limits::Limits,
}

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
    /// Download and check backups: hashes, decryption, decompression, integrity_check.
    Verify(BackupVerifyArgs),
    /// Delete backups that no retention rule keeps (manifest first, then data).
    Prune(BackupPruneArgs),
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

    /// Print what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Retention rules of `raftlite backup prune` (a backup kept by any rule stays; at least one
/// rule is required).
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

    /// Credentials as USER:PASSWORD for a server started with --auth.
    #[arg(long, short = 'u', value_name = "USER:PASSWORD", env = "RAFTLITE_USER")]
    pub user: Option<String>,

    /// PEM CA certificate to trust for an HTTPS node.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
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

    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `raftlite shell`.
#[derive(Debug, Clone, Args)]
pub struct ShellArgs {
    /// HTTP(S) URL of any cluster member.
    #[arg(default_value = "http://127.0.0.1:4001", env = "RAFTLITE_URL")]
    pub url: String,

    /// Credentials as USER:PASSWORD for a server started with --auth.
    #[arg(long, short = 'u', value_name = "USER:PASSWORD", env = "RAFTLITE_USER")]
    pub user: Option<String>,

    /// PEM CA certificate to trust for an HTTPS server.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
}

/// Fully resolved settings for `raftlite serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    pub http_advertise_addr: String,
    pub raft_advertise_addr: String,
    pub node_id: Option<u64>,
    /// Join URLs, each with a scheme (`http://` added when missing) and no trailing `/`.
    pub join: Vec<String>,
    pub snapshot_threshold: u64,
    pub log_level: String,
    pub security: SecurityConfig,
    pub backup: BackupConfig,
    pub recovery_mode: bool,
    pub auto_restore: AutoRestoreConfig,
    pub limits: RequestLimits,
}

/// `--auto-restore-*` as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoRestoreConfig {
    pub from: Option<String>,
    pub identity: Option<PathBuf>,
    pub if_empty_ok: bool,
    /// rqlite `-auto-restore` file.
    pub file: Option<PathBuf>,
}

/// Where, when and how the leader backs up (`--backup-*`, `[backup]` in the file,
/// `RAFTLITE_BACKUP_*`), as given: durations, cron and zone are checked when the server builds
/// its backup service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    /// `None`: backups are off (`--backup-to off`). The default is a local directory beside
    /// the data dir.
    pub to: Option<String>,
    /// Whether `to` is the built-in default rather than something the operator chose.
    pub to_is_default: bool,
    pub recipients: Vec<String>,
    pub passphrase_env: Option<String>,
    pub level: i32,
    /// `Some("off")` turns the schedule off; `None` with no cron means hourly.
    pub interval: Option<String>,
    pub cron: Option<String>,
    pub tz: Option<String>,
    pub verify_interval: Option<String>,
    pub identity: Option<PathBuf>,
    pub keep: RetentionConfig,
    /// rqlite `-auto-backup` file; replaces `to` and `interval`.
    pub auto_backup: Option<PathBuf>,
}

/// `--backup-keep-*`; all `None` means the default policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_within: Option<String>,
}

/// `[backup]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackup {
    to: Option<String>,
    recipients: Option<Vec<String>>,
    passphrase_env: Option<String>,
    level: Option<i32>,
    interval: Option<String>,
    cron: Option<String>,
    tz: Option<String>,
    verify_interval: Option<String>,
    identity: Option<PathBuf>,
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_within: Option<String>,
    /// rqlite `-auto-backup` JSON file.
    auto_backup: Option<PathBuf>,
}

/// Name of the default backup directory, created beside the data dir.
pub const DEFAULT_BACKUP_DIR_NAME: &str = "raftlite-backups";

/// `file://` URL of the default backup directory for `data_dir`: `raftlite-backups` in the
/// data dir's parent (so `./raftlite-data` backs up to `./raftlite-backups`; clusters sharing a
/// parent directory keep apart by cluster id inside it).
pub fn default_backup_to(data_dir: &Path) -> Result<String, ConfigError> {
    let absolute = if data_dir.is_absolute() {
        data_dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| ConfigError::InvalidValue {
                flag: "--data-dir",
                value: data_dir.display().to_string(),
                reason: format!("cannot resolve the current directory: {e}"),
            })?
            .join(data_dir)
    };
    let parent = absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok(format!(
        "file://{}",
        parent.join(DEFAULT_BACKUP_DIR_NAME).display()
    ))
}

/// Authentication and TLS settings; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    pub auth: Option<PathBuf>,
    pub join_as: Option<String>,
    pub http_cert: Option<PathBuf>,
    pub http_key: Option<PathBuf>,
    pub http_ca_cert: Option<PathBuf>,
    pub http_verify_client: bool,
    pub node_cert: Option<PathBuf>,
    pub node_key: Option<PathBuf>,
    pub node_ca: Option<PathBuf>,
    pub node_verify_client: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source} (check the path given with --config or RAFTLITE_CONFIG)", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid config file {}: {message}", path.display())]
    ParseFile { path: PathBuf, message: String },

    #[error(
        "invalid address `{value}` for {flag}: {reason}; expected HOST:PORT, e.g. 127.0.0.1:4001"
    )]
    InvalidAddr {
        flag: &'static str,
        value: String,
        reason: String,
    },

    #[error("invalid value `{value}` for {flag}: {reason}")]
    InvalidValue {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// Contents of the `--config` TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http_addr: Option<String>,
    raft_addr: Option<String>,
    http_advertise_addr: Option<String>,
    raft_advertise_addr: Option<String>,
    node_id: Option<u64>,
    join: Option<JoinList>,
    snapshot_threshold: Option<u64>,
    log_level: Option<String>,
    auth: Option<PathBuf>,
    join_as: Option<String>,
    http_cert: Option<PathBuf>,
    http_key: Option<PathBuf>,
    http_ca_cert: Option<PathBuf>,
    http_verify_client: Option<bool>,
    node_cert: Option<PathBuf>,
    node_key: Option<PathBuf>,
    node_ca: Option<PathBuf>,
    node_verify_client: Option<bool>,
    backup: Option<FileBackup>,
    auto_restore_from: Option<String>,
    auto_restore_identity: Option<PathBuf>,
    auto_restore_if_empty_ok: Option<bool>,
    auto_restore: Option<PathBuf>,
    max_entry_bytes: Option<FileBytes>,
    max_response_bytes: Option<FileBytes>,
    max_concurrent_requests: Option<usize>,
    max_buffered_body_bytes: Option<FileBytes>,
}

/// The `--max-*` flags (flag first, then the file, then the default), checked.
fn request_limits(
    entry: (Option<usize>, Option<FileBytes>),
    response: (Option<usize>, Option<FileBytes>),
    concurrent: Option<usize>,
    buffered: (Option<usize>, Option<FileBytes>),
) -> Result<RequestLimits, ConfigError> {
    use raftlite_api::limits as api;
    use raftlite_consensus::node;
    let pick = |(flag_value, file_value): (Option<usize>, Option<FileBytes>),
                flag: &'static str,
                default: usize|
     -> Result<usize, ConfigError> {
        match (flag_value, file_value) {
            (Some(v), _) => Ok(v),
            (None, Some(v)) => v.resolve(flag),
            (None, None) => Ok(default),
        }
    };
    let check = |flag: &'static str, value: usize, min: usize, max: usize| {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::InvalidValue {
                flag,
                value: value.to_string(),
                reason: format!("must be between {min} and {max}"),
            })
        }
    };
    let max_entry_bytes = check(
        "--max-entry-bytes",
        pick(entry, "--max-entry-bytes", node::DEFAULT_MAX_ENTRY_BYTES)?,
        node::MIN_ENTRY_BYTES,
        node::MAX_ENTRY_BYTES_CEILING,
    )?;
    let max_response_bytes = check(
        "--max-response-bytes",
        pick(
            response,
            "--max-response-bytes",
            api::DEFAULT_MAX_RESPONSE_BYTES,
        )?,
        1 << 10,
        usize::MAX,
    )?;
    let max_concurrent_requests = check(
        "--max-concurrent-requests",
        concurrent.unwrap_or(api::DEFAULT_MAX_CONCURRENT_REQUESTS),
        1,
        1 << 20,
    )?;
    let max_buffered_body_bytes = check(
        "--max-buffered-body-bytes",
        pick(
            buffered,
            "--max-buffered-body-bytes",
            api::DEFAULT_MAX_BUFFERED_BODY_BYTES,
        )?,
        1 << 20,
        usize::MAX,
    )?;
    Ok(RequestLimits {
        max_entry_bytes,
        api: api::Limits {
            max_concurrent_requests,
            max_buffered_body_bytes,
            max_response_bytes,
        },
    })
}

/// `off` (or `none`, `false`, `0`, empty) switches a feature off.
pub fn is_off(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "off" | "none" | "false" | "0" | ""
    )
}

/// `join` in the file: an array of strings or one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "`join` must be an array of URL strings or a comma-separated string"
)]
enum JoinList {
    List(Vec<String>),
    Csv(String),
}

impl JoinList {
    fn into_vec(self) -> Vec<String> {
        match self {
            JoinList::List(v) => v,
            JoinList::Csv(s) => s.split(',').map(str::to_owned).collect(),
        }
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })
}

fn parse_socket_addr(flag: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |reason: String| ConfigError::InvalidAddr {
        flag,
        value: value.to_owned(),
        reason,
    };
    let value = value.trim();
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Accept host names such as `localhost:4001`; require a numeric port first
    // so that obviously malformed values fail without a name lookup.
    check_host_port(value).map_err(bad)?;
    let mut addrs = value.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("host name resolved to no address".to_owned()))
}

/// Checks the `HOST:PORT` shape of an address without resolving it.
fn check_host_port(value: &str) -> Result<(), String> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| "missing `:PORT`".to_owned())?;
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| format!("port `{port}` is not a number between 0 and 65535"))
}

fn advertise_addr(
    flag: &'static str,
    value: Option<String>,
    bind: SocketAddr,
) -> Result<String, ConfigError> {
    match value {
        None => Ok(bind.to_string()),
        Some(v) => {
            let v = v.trim().to_owned();
            check_host_port(&v).map_err(|reason| ConfigError::InvalidAddr {
                flag,
                value: v.clone(),
                reason,
            })?;
            Ok(v)
        }
    }
}

/// Normalises join URLs: trims, drops empty entries, adds `http://` when no
/// scheme is given and strips trailing slashes.
fn normalize_join(raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for entry in raw {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let url = if entry.contains("://") {
            entry.to_owned()
        } else {
            format!("http://{entry}")
        };
        let url = url.trim_end_matches('/').to_owned();
        let host = url.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if host.is_empty() {
            return Err(ConfigError::InvalidValue {
                flag: "--join",
                value: entry.to_owned(),
                reason: "URL has no host; expected e.g. http://10.0.0.1:4001".to_owned(),
            });
        }
        out.push(url);
    }
    Ok(out)
}

/// Merges `args` (flags and environment) with the config file, if any, and
/// the defaults, and validates the result.
pub fn resolve(args: ServeArgs) -> Result<ServeConfig, ConfigError> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };

    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError::InvalidValue {
            flag: "--data-dir",
            value: String::new(),
            reason: "must not be empty".to_owned(),
        });
    }

    let http_addr_raw = args
        .http_addr
        .or(file.http_addr)
        .unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned());
    let http_addr = parse_socket_addr("--http-addr", &http_addr_raw)?;
    let raft_addr_raw = args
        .raft_addr
        .or(file.raft_addr)
        .unwrap_or_else(|| DEFAULT_RAFT_ADDR.to_owned());
    let raft_addr = parse_socket_addr("--raft-addr", &raft_addr_raw)?;

    let http_advertise_addr = advertise_addr(
        "--http-advertise-addr",
        args.http_advertise_addr.or(file.http_advertise_addr),
        http_addr,
    )?;
    let raft_advertise_addr = advertise_addr(
        "--raft-advertise-addr",
        args.raft_advertise_addr.or(file.raft_advertise_addr),
        raft_addr,
    )?;

    let join_raw = if args.join.is_empty() {
        file.join.map(JoinList::into_vec).unwrap_or_default()
    } else {
        args.join
    };
    let join = normalize_join(join_raw)?;

    let snapshot_threshold = args
        .snapshot_threshold
        .or(file.snapshot_threshold)
        .unwrap_or(DEFAULT_SNAPSHOT_THRESHOLD);
    if snapshot_threshold == 0 {
        return Err(ConfigError::InvalidValue {
            flag: "--snapshot-threshold",
            value: "0".to_owned(),
            reason: "must be at least 1".to_owned(),
        });
    }

    let log_level = args
        .log_level
        .or(file.log_level)
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
    if log_level.trim().is_empty() {
        return Err(ConfigError::InvalidValue {
            flag: "--log-level",
            value: log_level,
            reason: "must not be empty; use e.g. `info` or `raftlite=debug`".to_owned(),
        });
    }

    let limits = request_limits(
        (args.max_entry_bytes, file.max_entry_bytes),
        (args.max_response_bytes, file.max_response_bytes),
        args.max_concurrent_requests
            .or(file.max_concurrent_requests),
        (args.max_buffered_body_bytes, file.max_buffered_body_bytes),
    )?;
    let default_backup_url = default_backup_to(&data_dir)?;
    Ok(ServeConfig {
        limits,
        data_dir,
        http_addr,
        raft_addr,
        http_advertise_addr,
        raft_advertise_addr,
        node_id: args.node_id.or(file.node_id),
        join,
        snapshot_threshold,
        log_level,
        backup: {
            let file_backup = file.backup.unwrap_or_default();
            let auto_backup = args.auto_backup.or(file_backup.auto_backup);
            let given_to = args.backup_to.or(file_backup.to);
            let (to, to_is_default) = match given_to {
                Some(to) if is_off(&to) => (None, false),
                Some(to) => (Some(to), false),
                None if auto_backup.is_some() => (None, false),
                None => (Some(default_backup_url), true),
            };
            BackupConfig {
                to,
                to_is_default,
                recipients: if args.backup_recipient.is_empty() {
                    file_backup.recipients.unwrap_or_default()
                } else {
                    args.backup_recipient
                },
                passphrase_env: args.backup_passphrase_env.or(file_backup.passphrase_env),
                level: args.backup_level.or(file_backup.level).unwrap_or(3),
                interval: args.backup_interval.or(file_backup.interval),
                cron: args.backup_cron.or(file_backup.cron),
                tz: args.backup_tz.or(file_backup.tz),
                verify_interval: args.backup_verify_interval.or(file_backup.verify_interval),
                identity: args.backup_identity.or(file_backup.identity),
                keep: RetentionConfig {
                    keep_last: args.backup_keep_last.or(file_backup.keep_last),
                    keep_hourly: args.backup_keep_hourly.or(file_backup.keep_hourly),
                    keep_daily: args.backup_keep_daily.or(file_backup.keep_daily),
                    keep_weekly: args.backup_keep_weekly.or(file_backup.keep_weekly),
                    keep_monthly: args.backup_keep_monthly.or(file_backup.keep_monthly),
                    keep_within: args.backup_keep_within.or(file_backup.keep_within),
                },
                auto_backup,
            }
        },
        recovery_mode: args.recovery_mode,
        auto_restore: AutoRestoreConfig {
            from: args.auto_restore_from.or(file.auto_restore_from),
            identity: args.auto_restore_identity.or(file.auto_restore_identity),
            if_empty_ok: args.auto_restore_if_empty_ok
                || file.auto_restore_if_empty_ok.unwrap_or(false),
            file: args.auto_restore.or(file.auto_restore),
        },
        security: SecurityConfig {
            auth: args.auth.or(file.auth),
            join_as: args.join_as.or(file.join_as),
            http_cert: args.http_cert.or(file.http_cert),
            http_key: args.http_key.or(file.http_key),
            http_ca_cert: args.http_ca_cert.or(file.http_ca_cert),
            http_verify_client: args.http_verify_client || file.http_verify_client.unwrap_or(false),
            node_cert: args.node_cert.or(file.node_cert),
            node_key: args.node_key.or(file.node_key),
            node_ca: args.node_ca.or(file.node_ca),
            node_verify_client: args.node_verify_client || file.node_verify_client.unwrap_or(false),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Mutex, MutexGuard};

    /// The environment is process-global: every test that parses a command
    /// line (clap reads `RAFTLITE_*`) holds this lock.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    const ENV_VARS: &[&str] = &[
        "RAFTLITE_CONFIG",
        "RAFTLITE_DATA_DIR",
        "RAFTLITE_HTTP_ADDR",
        "RAFTLITE_RAFT_ADDR",
        "RAFTLITE_HTTP_ADVERTISE_ADDR",
        "RAFTLITE_RAFT_ADVERTISE_ADDR",
        "RAFTLITE_NODE_ID",
        "RAFTLITE_JOIN",
        "RAFTLITE_SNAPSHOT_THRESHOLD",
        "RAFTLITE_LOG_LEVEL",
    ];

    /// Holds the env lock, starts from a clean `RAFTLITE_*` environment and
    /// cleans it again on drop (also when the test panics).
    struct EnvGuard {
        _lock: MutexGuard<'static, ()>,
    }

    impl EnvGuard {
        fn new() -> Self {
            let lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            for v in ENV_VARS {
                std::env::remove_var(v);
            }
            EnvGuard { _lock: lock }
        }
        fn set(&self, key: &str, value: &str) {
            std::env::set_var(key, value);
        }
    }

    impl Drop for EnvGuard {
        fn drop(&mut self) {
            for v in ENV_VARS {
                std::env::remove_var(v);
            }
        }
    }

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["raftlite", "serve"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full)
            .expect("command line parses")
            .command
        {
            Command::Serve(a) => a,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    /// Writes `contents` to a temporary `.toml` file (deleted on drop).
    fn temp_toml(contents: &str) -> (tempfile::NamedTempFile, String) {
        let mut f = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("create temp file");
        f.write_all(contents.as_bytes()).expect("write temp file");
        let p = f.path().to_string_lossy().into_owned();
        (f, p)
    }

    #[test]
    fn defaults() {
        let _env = EnvGuard::new();
        let cfg = resolve(serve_args(&[])).expect("defaults resolve");
        assert_eq!(cfg.data_dir, PathBuf::from("./raftlite-data"));
        assert_eq!(
            cfg.http_addr,
            "127.0.0.1:4001".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            cfg.raft_addr,
            "127.0.0.1:4002".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(cfg.http_advertise_addr, "127.0.0.1:4001");
        assert_eq!(cfg.raft_advertise_addr, "127.0.0.1:4002");
        assert_eq!(cfg.node_id, None);
        assert!(cfg.join.is_empty());
        assert_eq!(cfg.snapshot_threshold, 8192);
        assert_eq!(cfg.log_level, "info");
    }

    #[test]
    fn advertise_defaults_to_bind_addr() {
        let _env = EnvGuard::new();
        let cfg = resolve(serve_args(&[
            "--http-addr",
            "127.0.0.1:5001",
            "--raft-addr",
            "127.0.0.1:5002",
        ]))
        .unwrap();
        assert_eq!(cfg.http_advertise_addr, "127.0.0.1:5001");
        assert_eq!(cfg.raft_advertise_addr, "127.0.0.1:5002");
        let cfg = resolve(serve_args(&["--http-advertise-addr", "db1.example:4001"])).unwrap();
        assert_eq!(cfg.http_advertise_addr, "db1.example:4001");
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let env = EnvGuard::new();
        let (_f, path) = temp_toml(
            r#"
            data_dir = "/var/lib/raftlite"
            http_addr = "127.0.0.1:6001"
            raft_addr = "127.0.0.1:6002"
            node_id = 7
            snapshot_threshold = 100
            log_level = "debug"
            join = ["10.0.0.1:4001", "https://10.0.0.2:4001/"]
            "#,
        );
        let cfg = resolve(serve_args(&["--config", &path])).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/raftlite"));
        assert_eq!(cfg.http_addr.port(), 6001);
        assert_eq!(cfg.node_id, Some(7));
        assert_eq!(cfg.snapshot_threshold, 100);
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(
            cfg.join,
            vec!["http://10.0.0.1:4001", "https://10.0.0.2:4001"]
        );

        env.set("RAFTLITE_CONFIG", &path);
        env.set("RAFTLITE_HTTP_ADDR", "127.0.0.1:7001");
        env.set("RAFTLITE_NODE_ID", "9");
        env.set("RAFTLITE_JOIN", "a:1,b:2");
        let cfg = resolve(serve_args(&[])).unwrap();
        assert_eq!(cfg.http_addr.port(), 7001, "env beats file");
        assert_eq!(cfg.node_id, Some(9), "env beats file");
        assert_eq!(cfg.join, vec!["http://a:1", "http://b:2"]);
        assert_eq!(cfg.raft_addr.port(), 6002, "file still used for the rest");
        assert_eq!(cfg.log_level, "debug");
    }

    #[test]
    fn flag_overrides_env() {
        let env = EnvGuard::new();
        env.set("RAFTLITE_HTTP_ADDR", "127.0.0.1:7001");
        env.set("RAFTLITE_SNAPSHOT_THRESHOLD", "5");
        env.set("RAFTLITE_LOG_LEVEL", "warn");
        let cfg = resolve(serve_args(&[
            "--http-addr",
            "127.0.0.1:8001",
            "--log-level",
            "trace",
        ]))
        .unwrap();
        assert_eq!(cfg.http_addr.port(), 8001);
        assert_eq!(cfg.log_level, "trace");
        assert_eq!(cfg.snapshot_threshold, 5, "env used when no flag");
    }

    #[test]
    fn unknown_key_in_file_is_an_error_naming_it() {
        let _env = EnvGuard::new();
        let (_f, path) = temp_toml("http_addr = \"127.0.0.1:4001\"\nhttp_adress = \"x\"\n");
        let err = resolve(serve_args(&["--config", &path])).unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
        assert!(err.to_string().contains("http_adress"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let _env = EnvGuard::new();
        let err = resolve(serve_args(&["--config", "/nonexistent/raftlite.toml"])).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/raftlite.toml"),
            "{err}"
        );
    }

    #[test]
    fn bad_address_names_flag_and_value() {
        let _env = EnvGuard::new();
        let err = resolve(serve_args(&["--http-addr", "not-an-address"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--http-addr") && msg.contains("not-an-address"),
            "{msg}"
        );

        let err = resolve(serve_args(&["--raft-addr", "127.0.0.1:99999"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--raft-addr") && msg.contains("127.0.0.1:99999"),
            "{msg}"
        );

        let err = resolve(serve_args(&["--raft-advertise-addr", "nohost"])).unwrap_err();
        assert!(err.to_string().contains("--raft-advertise-addr"), "{err}");

        let (_f, path) = temp_toml("http_addr = \"bogus\"\n");
        let err = resolve(serve_args(&["--config", &path])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--http-addr") && msg.contains("bogus"),
            "{msg}"
        );
    }

    #[test]
    fn join_parsing() {
        let _env = EnvGuard::new();
        let cfg = resolve(serve_args(&[
            "--join",
            "127.0.0.1:4001, http://127.0.0.1:4003/",
            "--join",
            "https://h:4005",
            "--join",
            "h2:4007,",
        ]))
        .unwrap();
        assert_eq!(
            cfg.join,
            vec![
                "http://127.0.0.1:4001",
                "http://127.0.0.1:4003",
                "https://h:4005",
                "http://h2:4007"
            ]
        );

        let (_f, path) = temp_toml("join = \"a:1, b:2\"\n");
        let cfg = resolve(serve_args(&["--config", &path])).unwrap();
        assert_eq!(cfg.join, vec!["http://a:1", "http://b:2"]);

        let (_f2, path2) = temp_toml("join = 5\n");
        let err = resolve(serve_args(&["--config", &path2])).unwrap_err();
        assert!(err.to_string().contains("join"), "{err}");

        // A --join flag replaces the file's list rather than merging with it.
        let cfg = resolve(serve_args(&["--config", &path, "--join", "c:3"])).unwrap();
        assert_eq!(cfg.join, vec!["http://c:3"]);
    }

    #[test]
    fn request_limits_take_byte_suffixes_and_are_checked() {
        let _env = EnvGuard::new();
        let cfg = resolve(serve_args(&[])).unwrap();
        assert_eq!(cfg.limits.max_entry_bytes, 4 << 20);
        assert_eq!(cfg.limits.api, raftlite_api::limits::Limits::default());
        let cfg = resolve(serve_args(&[
            "--max-entry-bytes",
            "512KiB",
            "--max-response-bytes",
            "1MiB",
            "--max-concurrent-requests",
            "8",
            "--max-buffered-body-bytes",
            "1G",
        ]))
        .unwrap();
        assert_eq!(cfg.limits.max_entry_bytes, 512 << 10);
        assert_eq!(cfg.limits.api.max_response_bytes, 1 << 20);
        assert_eq!(cfg.limits.api.max_concurrent_requests, 8);
        assert_eq!(cfg.limits.api.max_buffered_body_bytes, 1 << 30);
        let err = resolve(serve_args(&["--max-entry-bytes", "64MiB"])).unwrap_err();
        assert!(err.to_string().contains("--max-entry-bytes"), "{err}");
        assert!(parse_bytes("4 parsecs").is_err());
        assert_eq!(parse_bytes("4194304"), Ok(4 << 20));
    }

    #[test]
    fn zero_snapshot_threshold_is_rejected() {
        let _env = EnvGuard::new();
        let err = resolve(serve_args(&["--snapshot-threshold", "0"])).unwrap_err();
        assert!(err.to_string().contains("--snapshot-threshold"), "{err}");
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
