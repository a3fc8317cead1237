//! The client flags every command that talks to a running node shares (`raftlite backup`,
//! `raftlite restore`, `raftlite-shell`). Both binaries compile this one file, so the flags are
//! declared once.

use std::path::PathBuf;

use clap::Args;

/// How a command authenticates to a node and which certificates it trusts (every command that
/// talks to a running node: backup, restore, shell).
#[derive(Debug, Clone, Args)]
pub struct ClientCredentials {
    /// Credentials as USER:PASSWORD for a server started with --auth.
    #[arg(long, short = 'u', value_name = "USER:PASSWORD", env = "RAFTLITE_USER")]
    pub user: Option<String>,

    /// PEM CA certificate to trust for an HTTPS node or server.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Accept any server certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
}
