//! The HTTP API: rqlite-compatible endpoints, cluster management and metrics.
//!
//! Handler modules (`db`, `status`, `cluster`, [`transfer`], [`backups`]) use only the shared
//! modules (`state`, `params`, `forward`, `respond`, `writes`, [`limits`], [`error`],
//! [`rqlite`], [`pragma`], [`auth`]), never each other; [`server`] assembles their routes.

pub mod auth;
pub mod backups;
mod cluster;
mod db;
pub mod error;
mod forward;
pub mod limits;
mod params;
pub mod pragma;
mod respond;
pub mod rqlite;
pub mod server;
mod state;
mod status;
pub mod transfer;
mod writes;
