//! The HTTP API: rqlite-compatible endpoints, cluster management and metrics.

pub mod auth;
pub mod backups;
pub mod error;
pub mod limits;
pub mod pragma;
pub mod rqlite;
pub mod server;
pub mod transfer;
