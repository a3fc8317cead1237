//! Named crash points, for tests only.
//!
//! A test starts a process with `RAFTLITE_FAILPOINT=<name>`; when the process reaches the point of
//! that name it aborts at once ([`std::process::abort`]: no destructors, no flush, the same disk
//! state as `kill -9` at that instant). This is how the crash-safety tests stop a node between
//! two particular writes, which a timed `kill -9` hits only by chance. The variable is read once;
//! unset (always, outside tests) a crash point costs one load and one comparison.
//!
//! Points (each is named where it is hit):
//! - `snapshot-receiving`: a snapshot from the leader is being received into
//!   `snapshots/receiving-*.tmp`;
//! - `snapshot-received`: all of it has arrived and is fsync'd, not yet made a snapshot;
//! - `snapshot-data-committed`: its data file has its final name, its `.meta.json` is not written;
//! - `snapshot-meta-committed`: the snapshot is complete and durable, the database is untouched;
//! - `snapshot-db-installing`: `db.sqlite.installing` is written and fsync'd, not yet swapped in;
//! - `snapshot-installed`: the database is the snapshot's;
//! - `log-purged`: the Raft log's purge has committed.

use std::sync::OnceLock;

/// The environment variable naming the crash point a test armed.
pub const FAILPOINT_ENV: &str = "RAFTLITE_FAILPOINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            std::env::var(FAILPOINT_ENV)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
        .as_deref()
}

/// Aborts the process if `name` is the armed crash point.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        // stderr is unbuffered: the line reaches the node's log before the abort, so a test can
        // tell that the crash happened where it asked.
        eprintln!("{FAILPOINT_ENV}: aborting at crash point {name}");
        std::process::abort();
    }
}
