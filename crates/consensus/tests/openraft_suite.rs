//! openraft's storage conformance suite against the redb log store and the SQLite state machine.

use openraft::testing::{StoreBuilder, Suite};
use raftlite_consensus::log_store::LogStore;
use raftlite_consensus::state_machine::SqliteStateMachine;
use raftlite_consensus::{StorageError, TypeConfig};
use tempfile::TempDir;

/// Builds a log store and a state machine in a fresh temporary directory, removed with the guard.
struct RaftliteStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, SqliteStateMachine, TempDir> for RaftliteStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, SqliteStateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let log_store = LogStore::open(&dir.path().join("raft"))?;
        let sm =
            SqliteStateMachine::open(&dir.path().join("db.sqlite"), &dir.path().join("snapshots"))?;
        Ok((dir, log_store, sm))
    }
}

/// `Suite::test_all` builds its own tokio runtime per case, so it runs on a plain test thread.
#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RaftliteStoreBuilder) {
        panic!("openraft storage suite: {e}");
    }
}
