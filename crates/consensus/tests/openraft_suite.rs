//! openraft's storage conformance suite against the redb log store and the SQLite state machine.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use raftlite_consensus::log_store::LogStore;
use raftlite_consensus::state_machine::SqliteStateMachine;
use raftlite_consensus::TypeConfig;
use tempfile::TempDir;

/// Builds a log store and a state machine in a fresh temporary directory, removed with the guard.
struct RaftliteStoreBuilder;

fn setup_error(e: std::io::Error) -> StorageError<TypeConfig> {
    StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e)
}

impl StoreBuilder<TypeConfig, LogStore, SqliteStateMachine, TempDir> for RaftliteStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, SqliteStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(setup_error)?;
        let log_store = LogStore::open(&dir.path().join("raft")).map_err(setup_error)?;
        let sm =
            SqliteStateMachine::open(&dir.path().join("db.sqlite"), &dir.path().join("snapshots"))
                .map_err(setup_error)?;
        Ok((dir, log_store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RaftliteStoreBuilder).await {
        panic!("openraft storage suite: {e}");
    }
}
