//! The restore side of raftlite: what sends a database file or a backup to a running cluster
//! (shared by `raftlite restore` and the benchmarks), and the auto-restore of an empty node.

pub mod auto_restore;
pub mod upload;
