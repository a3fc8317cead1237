//! The restore side of raftlite, and what the `raftlite backup` and `raftlite restore` commands
//! share: the command-line front-ends (`src/backup_cli.rs`, `src/restore_cli.rs`) only map
//! their arguments to the settings here and print; the benchmarks use the streamed upload.
//!
//! - [`node_client`]: the HTTP client of one node (URL, credentials, CA), its errors with their
//!   root causes, and the download of a node's consistent copy ([`snapshot`] turns it into a
//!   backup's metadata).
//! - [`source`]: what `raftlite restore` sends, prepared on the operator's machine (a local
//!   SQLite file consolidated and checked, stdin spooled, a backup chosen).
//! - [`upload`]: the request bodies (a file, a backup streamed from its destination).
//! - [`outcome`]: `POST /db/load`, what its answer means, and polling `/status` when it is lost.
//! - [`auto_restore`]: an empty node that bootstraps restores the newest backup first.
//! - [`destination`], [`scratch`], [`signal`]: destinations with retry bounds from the
//!   environment, private temporary directories, Ctrl-C/SIGTERM.
//!
//! Progress is reported through small traits ([`upload::UploadProgress`],
//! [`node_client::DownloadProgress`]), so this crate draws no progress bars itself.

pub mod auto_restore;
pub mod destination;
pub mod node_client;
pub mod outcome;
pub mod point_in_time;
pub mod scratch;
pub mod signal;
pub mod snapshot;
pub mod source;
pub mod upload;

pub use destination::{check_reachable, open_destination, DestinationError};
pub use node_client::{innermost, DownloadProgress, NodeClient, NodeError, NodeSettings};
pub use scratch::{ScratchDir, ScratchError};
pub use signal::{interruptible, Interrupted};

use raftlite_backup::BackupError;

/// A backup-engine error with its (already complete) message only: the engine's messages embed
/// their sources, so a chain would repeat them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub Box<BackupError>);

/// [`EngineError`] of `e`, for `map_err`.
pub fn engine_error(e: BackupError) -> EngineError {
    EngineError(Box::new(e))
}
