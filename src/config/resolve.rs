//! `serve`'s settings resolved: the options (flags, environment and, applied by `file.rs`, the
//! config file) completed with the defaults and checked into a [`ServeConfig`], what
//! `serve.rs` consumes.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::serve::{ServeArgs, ServeOptions};
use super::{file, ConfigError};

pub const DEFAULT_DATA_DIR: &str = "./raftlite-data";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4001";
pub const DEFAULT_RAFT_ADDR: &str = "127.0.0.1:4002";
pub const DEFAULT_SNAPSHOT_THRESHOLD: u64 = 8192;
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// What one request may cost a node (`--max-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_entry_bytes: usize,
    pub api: raftlite_api::limits::Limits,
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
    /// `--backup-full-every`: `None` for the default.
    pub full_every: Option<u32>,
    /// `Some("off")` turns the schedule off; `None` with no cron means hourly.
    pub interval: Option<String>,
    pub cron: Option<String>,
    pub tz: Option<String>,
    pub verify_interval: Option<String>,
    pub identity: Option<PathBuf>,
    /// `--backup-keep-*`; no rule at all means the server's default policy.
    pub keep: raftlite_backup::KeepRules,
    /// rqlite `-auto-backup` file; replaces `to` and `interval`.
    pub auto_backup: Option<PathBuf>,
    /// `--archive-to`: `None` when off, `backup` for `to` (the default when `to` is set), else
    /// a URL.
    pub archive_to: Option<String>,
    pub archive_interval: Option<String>,
    pub archive_keep_within: Option<String>,
    /// `--backup-copy-to`: further destinations every finished backup is copied to.
    pub copy_to: Vec<String>,
    /// `--backup-copy-keep-*`; no rule at all means the backups' own policy.
    pub copy_keep: raftlite_backup::KeepRules,
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

/// The `--max-*` options (from a flag, the environment or the file), defaulted and checked.
fn request_limits(
    entry: Option<usize>,
    response: Option<usize>,
    concurrent: Option<usize>,
    buffered: Option<usize>,
) -> Result<RequestLimits, ConfigError> {
    use raftlite_api::limits as api;
    use raftlite_consensus::node;
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
        entry.unwrap_or(node::DEFAULT_MAX_ENTRY_BYTES),
        node::MIN_ENTRY_BYTES,
        node::MAX_ENTRY_BYTES_CEILING,
    )?;
    let max_response_bytes = check(
        "--max-response-bytes",
        response.unwrap_or(api::DEFAULT_MAX_RESPONSE_BYTES),
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
        buffered.unwrap_or(api::DEFAULT_MAX_BUFFERED_BODY_BYTES),
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

/// Applies the config file, if any, to the options that neither the command line nor the
/// environment gave (`file.rs`), then adds the defaults and validates the result.
pub fn resolve(args: ServeArgs) -> Result<ServeConfig, ConfigError> {
    let ServeArgs {
        mut options,
        matches,
    } = args;
    if let Some(path) = options.config.clone() {
        file::apply(&mut options, &matches, &path)?;
    }
    validate(options)
}

/// The options, complete with the file's values, defaulted and checked.
fn validate(args: ServeOptions) -> Result<ServeConfig, ConfigError> {
    let data_dir = args
        .data_dir
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
        .unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_owned());
    let http_addr = parse_socket_addr("--http-addr", &http_addr_raw)?;
    let raft_addr_raw = args
        .raft_addr
        .unwrap_or_else(|| DEFAULT_RAFT_ADDR.to_owned());
    let raft_addr = parse_socket_addr("--raft-addr", &raft_addr_raw)?;

    let http_advertise_addr =
        advertise_addr("--http-advertise-addr", args.http_advertise_addr, http_addr)?;
    let raft_advertise_addr =
        advertise_addr("--raft-advertise-addr", args.raft_advertise_addr, raft_addr)?;

    let join = normalize_join(args.join)?;

    let snapshot_threshold = args
        .snapshot_threshold
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
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
    if log_level.trim().is_empty() {
        return Err(ConfigError::InvalidValue {
            flag: "--log-level",
            value: log_level,
            reason: "must not be empty; use e.g. `info` or `raftlite=debug`".to_owned(),
        });
    }

    let limits = request_limits(
        args.max_entry_bytes.map(|b| b.0),
        args.max_response_bytes.map(|b| b.0),
        args.max_concurrent_requests,
        args.max_buffered_body_bytes.map(|b| b.0),
    )?;
    let default_backup_url = default_backup_to(&data_dir)?;
    Ok(ServeConfig {
        limits,
        data_dir,
        http_addr,
        raft_addr,
        http_advertise_addr,
        raft_advertise_addr,
        node_id: args.node_id,
        join,
        snapshot_threshold,
        log_level,
        backup: {
            let auto_backup = args.auto_backup;
            let (to, to_is_default) = match args.backup_to {
                Some(to) if is_off(&to) => (None, false),
                Some(to) => (Some(to), false),
                None if auto_backup.is_some() => (None, false),
                None => (Some(default_backup_url), true),
            };
            // The archive follows the backups unless told otherwise, except with passphrase
            // encryption: age's scrypt costs about a second of CPU per segment, so there it
            // has to be asked for.
            let archive_to = match args.archive_to {
                Some(archive_to) => Some(archive_to).filter(|to| !is_off(to)),
                None if args.backup_passphrase_env.is_some() => None,
                None => to.as_ref().map(|_| "backup".to_string()),
            };
            BackupConfig {
                to,
                to_is_default,
                recipients: args.backup_recipient,
                passphrase_env: args.backup_passphrase_env,
                level: args.backup_level.unwrap_or(3),
                full_every: args.backup_full_every,
                interval: args.backup_interval,
                cron: args.backup_cron,
                tz: args.backup_tz,
                verify_interval: args.backup_verify_interval,
                identity: args.backup_identity,
                keep: raftlite_backup::KeepRules {
                    keep_last: args.backup_keep_last,
                    keep_hourly: args.backup_keep_hourly,
                    keep_daily: args.backup_keep_daily,
                    keep_weekly: args.backup_keep_weekly,
                    keep_monthly: args.backup_keep_monthly,
                    keep_within: args.backup_keep_within,
                },
                auto_backup,
                archive_to,
                archive_interval: args.archive_interval,
                archive_keep_within: args.archive_keep_within,
                copy_to: args
                    .backup_copy_to
                    .into_iter()
                    .map(|to| to.trim().to_string())
                    .filter(|to| !to.is_empty())
                    .collect(),
                copy_keep: raftlite_backup::KeepRules {
                    keep_last: args.backup_copy_keep_last,
                    keep_hourly: args.backup_copy_keep_hourly,
                    keep_daily: args.backup_copy_keep_daily,
                    keep_weekly: args.backup_copy_keep_weekly,
                    keep_monthly: args.backup_copy_keep_monthly,
                    keep_within: args.backup_copy_keep_within,
                },
            }
        },
        recovery_mode: args.recovery_mode,
        auto_restore: AutoRestoreConfig {
            from: args.auto_restore_from,
            identity: args.auto_restore_identity,
            if_empty_ok: args.auto_restore_if_empty_ok,
            file: args.auto_restore,
        },
        security: SecurityConfig {
            auth: args.auth,
            join_as: args.join_as,
            http_cert: args.http_cert,
            http_key: args.http_key,
            http_ca_cert: args.http_ca_cert,
            http_verify_client: args.http_verify_client,
            node_cert: args.node_cert,
            node_key: args.node_key,
            node_ca: args.node_ca,
            node_verify_client: args.node_verify_client,
        },
    })
}
