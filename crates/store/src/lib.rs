//! The storage engine: one SQLite file that is the Raft state machine.
//!
//! Every applied Raft entry runs in one SQLite transaction that also records the applied log
//! position, the membership and the timeline in `_raftlite_meta`, so a restarted node reads its
//! position from the file itself and never guesses.

pub mod calendar;
pub mod deterministic;
pub mod direct_io;
pub mod dump;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod go_duration;
pub mod hex;
mod results;
mod sql_text;
pub mod types;

pub use engine::{
    free_space, is_internal_object, is_internal_table, probe, probe_checked, reseed_database,
    strip_internal_tables, validate_database, validate_database_fully, EntryTime, PinnedFile,
    Store, StoreOptions, INTERNAL_TABLES, META_TABLE, RESTORE_TABLE,
};
pub use error::StoreError;
pub use types::*;

/// The version of the SQLite library linked in (bundled), e.g. `3.50.2`.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}
