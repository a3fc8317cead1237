//! The `serve` options, each declared once: flag, environment variable, type, help (the doc
//! comment) and, where the rule of [`super::file`] does not give it, its key in the `--config`
//! file. Everything else is derived from this declaration: the command line, the file's keys
//! and what they accept, and (in `resolve.rs`) the checked [`super::ServeConfig`].

use std::path::PathBuf;

use clap::{ArgMatches, Args, FromArgMatches};

/// Where the `--config` file sets an option, declared beside the option (applied by `file.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileKey {
    /// By the rule: the option's id; `backup_<key>` is `<key>` in the `[backup]` table.
    Rule,
    /// `key` at the top level, or `table.key`.
    Named(&'static str),
    /// The file cannot set the option.
    None,
}

/// The table the rule puts `backup_*` options in.
const BACKUP_TABLE: &str = "backup";

impl FileKey {
    /// The option's table (`None`: the top level) and key, or `None` when the file cannot set it.
    pub(super) fn place(self, id: &'static str) -> Option<(Option<&'static str>, &'static str)> {
        match self {
            FileKey::Rule => Some(match id.strip_prefix("backup_") {
                Some(key) => (Some(BACKUP_TABLE), key),
                None => (None, id),
            }),
            FileKey::Named(path) => Some(match path.split_once('.') {
                Some((table, key)) => (Some(table), key),
                None => (None, path),
            }),
            FileKey::None => None,
        }
    }
}

/// Declares [`ServeOptions`]: a clap derive struct whose fields may carry, between their
/// attributes and `pub`, `[file: "table.key"]` (the option's key in the `--config` file, where
/// the rule of [`FileKey::Rule`] does not give it) or `[file: none]` (the file
/// cannot set it). The struct comes out as written, plus `FILE_KEYS`: every option's id with
/// its [`FileKey`].
macro_rules! serve_options {
    (@key) => { FileKey::Rule };
    (@key none) => { FileKey::None };
    (@key $key:literal) => { FileKey::Named($key) };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $([file: $key:tt])?
                pub $field:ident: $ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(
                $(#[$field_meta])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// Every option's argument id (its field name) and where the file sets it.
            pub(super) const FILE_KEYS: &'static [(&'static str, FileKey)] = &[
                $( (stringify!($field), serve_options!(@key $($key)?)), )*
            ];
        }
    };
}

serve_options! {
    /// `serve`'s options as given on the command line and in the environment. Every field is
    /// optional (no clap defaults) so that values missing from both can be taken from the
    /// config file; [`super::resolve`] applies the file and the defaults and checks the result.
    #[derive(Debug, Clone, Default, Args)]
    pub struct ServeOptions {
        /// TOML config file; keys are the flag names with underscores (data_dir, http_addr, ...).
        #[arg(long, value_name = "FILE", env = "RAFTLITE_CONFIG")]
        [file: none]
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
        [file: "backup.auto_backup"]
        pub auto_backup: Option<PathBuf>,

        /// Start even though the Raft log is lost or damaged: the surviving database seeds a new
        /// single-node cluster on a new timeline (damaged parts are moved aside, never deleted).
        // Not in the file: a one-off decision for one start, not a setting to leave behind.
        #[arg(long, env = "RAFTLITE_RECOVERY_MODE")]
        [file: none]
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
        [file: "backup.recipients"]
        pub backup_recipient: Vec<String>,

        /// Name of an environment variable holding a passphrase to encrypt backups with.
        #[arg(long, value_name = "VAR", env = "RAFTLITE_BACKUP_PASSPHRASE_ENV")]
        pub backup_passphrase_env: Option<String>,

        /// zstd level for backups [default: 3].
        #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_LEVEL")]
        pub backup_level: Option<i32>,

        /// Take a full backup every N backups, and incremental ones (only the pages changed
        /// since the previous backup) between; a full is also taken when the chain's changes pass
        /// half the database, after a leader change and on a new timeline. 1 means every backup
        /// is full [default: 1].
        #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_FULL_EVERY")]
        pub backup_full_every: Option<u32>,

        /// Ship the committed log continuously to a destination, for point-in-time restore:
        /// `backup` for --backup-to's destination (and its encryption), a URL (encrypted like the
        /// backups), or `off` [default: backup when backups are on, else off].
        #[arg(long, value_name = "backup|DEST|off", env = "RAFTLITE_ARCHIVE_TO")]
        [file: "backup.archive_to"]
        pub archive_to: Option<String>,

        /// Close a log archive segment at least this often, e.g. `1s`, `500ms` [default: 1s].
        #[arg(long, value_name = "DUR", env = "RAFTLITE_ARCHIVE_INTERVAL")]
        [file: "backup.archive_interval"]
        pub archive_interval: Option<String>,

        /// Keep the log archive for points this far back (e.g. `7d`), with every segment and
        /// base backup such a point needs; older segments are deleted after each backup. Applies
        /// to `--archive-to backup`; prune an archive of its own with `backup prune` [default: 7d].
        #[arg(long, value_name = "DUR", env = "RAFTLITE_ARCHIVE_KEEP_WITHIN")]
        [file: "backup.archive_keep_within"]
        pub archive_keep_within: Option<String>,

        /// Also copy every finished backup, and the log archive when it lies beside the backups,
        /// to this further destination (file:///dir, s3://, gs://, az://), checking each object's
        /// hash, the manifest last; repeatable or comma-separated. Runs on the leader in the
        /// background and catches up after an outage; a restore can use any copy.
        #[arg(
            long,
            value_name = "DEST",
            env = "RAFTLITE_BACKUP_COPY_TO",
            value_delimiter = ','
        )]
        pub backup_copy_to: Vec<String>,

        /// Retention of the copies: keep the newest N backups. With no --backup-copy-keep-*
        /// option a copy keeps what the backups' own retention keeps.
        #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_COPY_KEEP_LAST")]
        pub backup_copy_keep_last: Option<u32>,

        /// Retention of the copies: keep the newest backup of each of the last N hours.
        #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_COPY_KEEP_HOURLY")]
        pub backup_copy_keep_hourly: Option<u32>,

        /// Retention of the copies: keep the newest backup of each of the last N days (UTC).
        #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_COPY_KEEP_DAILY")]
        pub backup_copy_keep_daily: Option<u32>,

        /// Retention of the copies: keep the newest backup of each of the last N ISO weeks.
        #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_COPY_KEEP_WEEKLY")]
        pub backup_copy_keep_weekly: Option<u32>,

        /// Retention of the copies: keep the newest backup of each of the last N months.
        #[arg(long, value_name = "N", env = "RAFTLITE_BACKUP_COPY_KEEP_MONTHLY")]
        pub backup_copy_keep_monthly: Option<u32>,

        /// Retention of the copies: keep every backup younger than this, e.g. `48h`, `30d`.
        #[arg(long, value_name = "DUR", env = "RAFTLITE_BACKUP_COPY_KEEP_WITHIN")]
        pub backup_copy_keep_within: Option<String>,

        /// Largest write request, encoded as one Raft log entry (bytes, or with KiB/MiB): a larger
        /// one is refused with 413 before it reaches the log [default: 4MiB; at most 8MiB].
        #[arg(long, value_name = "BYTES", env = "RAFTLITE_MAX_ENTRY_BYTES", value_parser = parse_byte_size)]
        pub max_entry_bytes: Option<ByteSize>,

        /// Largest query result one response carries; a larger one is refused with 413 and the
        /// query stops reading [default: 64MiB].
        #[arg(long, value_name = "BYTES", env = "RAFTLITE_MAX_RESPONSE_BYTES", value_parser = parse_byte_size)]
        pub max_response_bytes: Option<ByteSize>,

        /// Requests handled at once (not counting /readyz, /status, /metrics); more are answered
        /// 503 with Retry-After [default: 256].
        #[arg(long, value_name = "N", env = "RAFTLITE_MAX_CONCURRENT_REQUESTS")]
        pub max_concurrent_requests: Option<usize>,

        /// Request bodies held in memory at once, by Content-Length; a request that does not fit is
        /// answered 503 with Retry-After before its body is read [default: 256MiB].
        #[arg(long, value_name = "BYTES", env = "RAFTLITE_MAX_BUFFERED_BODY_BYTES", value_parser = parse_byte_size)]
        pub max_buffered_body_bytes: Option<ByteSize>,
    }
}

/// `raftlite serve`'s arguments: the options as parsed, and the parse itself, which says where
/// each option came from (command line, environment or neither): an option that came from
/// neither is taken from the config file when it has the option's key. Call
/// [`super::resolve`] to obtain the final [`super::ServeConfig`].
#[derive(Debug, Clone)]
pub struct ServeArgs {
    pub options: ServeOptions,
    pub(super) matches: ArgMatches,
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(ServeArgs {
            options: ServeOptions::from_arg_matches(matches)?,
            matches: matches.clone(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.options.update_from_arg_matches(matches)?;
        self.matches = matches.clone();
        Ok(())
    }
}

impl Args for ServeArgs {
    fn group_id() -> Option<clap::Id> {
        ServeOptions::group_id()
    }

    fn augment_args(cmd: clap::Command) -> clap::Command {
        ServeOptions::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        ServeOptions::augment_args_for_update(cmd)
    }
}

/// A byte count of a `--max-*-bytes` option (see [`parse_bytes`]); in the config file a number
/// or a string such as "4MiB".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

fn parse_byte_size(text: &str) -> Result<ByteSize, String> {
    parse_bytes(text).map(ByteSize)
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
