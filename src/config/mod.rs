//! Command-line and configuration-file handling for the `raftlite` binary.
//!
//! `raftlite serve` settings come from four places, highest precedence first:
//! command-line flag, `RAFTLITE_<NAME>` environment variable, TOML file given
//! by `--config FILE` (or `RAFTLITE_CONFIG`), built-in default.
//!
//! Each `serve` option is declared once, in [`ServeOptions`] (`serve.rs`): its flag, environment
//! variable, type, help and, where the one rule does not give it, its key in the file. Clap
//! handles flag-over-env; `file.rs` applies the file to every option that neither gave, driven
//! by the same declaration; [`resolve`] (`resolve.rs`) adds the defaults and validates
//! everything into a [`ServeConfig`]. The other subcommands' arguments are in `commands.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod commands;
mod credentials;
mod file;
mod resolve;
mod serve;
#[cfg(test)]
mod tests;

pub use commands::{
    BackupArgs, BackupCommand, BackupCopyArgs, BackupCreateArgs, BackupListArgs, BackupPruneArgs,
    BackupVerifyArgs, NodeConnection, RestoreArgs,
};
pub use resolve::{is_off, resolve, SecurityConfig, ServeConfig};
pub use serve::ServeArgs;

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
