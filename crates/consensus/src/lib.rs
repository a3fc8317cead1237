//! Consensus: openraft types, the redb log store, the SQLite state machine adapter, the HTTP
//! network and the node that ties them together.

pub mod archive_hold;
pub mod blocking;
mod compaction;
mod free_space;
pub mod log_blobs;
pub mod log_store;
pub mod network;
pub mod node;
pub mod recovery;
pub mod replay;
pub mod restore;
mod restore_progress;
pub mod snapshot_floor;
pub mod startup;
pub mod state_machine;
pub mod types;

pub use state_machine::Raft;
pub use types::*;
