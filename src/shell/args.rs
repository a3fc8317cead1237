//! `raftlite-shell`'s command line.

use clap::Parser;

#[path = "../config/credentials.rs"]
mod credentials;

pub use credentials::ClientCredentials;

/// Interactive SQL shell against a running raftlite node (or any rqlite-compatible server).
#[derive(Debug, Clone, Parser)]
#[command(name = "raftlite-shell", version)]
pub struct ShellArgs {
    /// HTTP(S) URL of any cluster member.
    #[arg(default_value = "http://127.0.0.1:4001", env = "RAFTLITE_URL")]
    pub url: String,

    #[command(flatten)]
    pub credentials: ClientCredentials,
}
