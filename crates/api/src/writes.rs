//! Writes through the log, bounded by the time the request may take.

use std::time::Duration;

use raftlite_consensus::node::{RaftNode, WriteError, WriteOutcome};
use raftlite_store::WriteRequest;

pub(crate) async fn write_with_timeout(
    node: &RaftNode,
    request: WriteRequest,
    timeout: Duration,
) -> Result<WriteOutcome, WriteError> {
    match tokio::time::timeout(timeout, node.write(request)).await {
        Ok(r) => r,
        Err(_) => Err(WriteError::Unavailable(format!(
            "the write was not committed within {timeout:?} (no quorum?); it may still be \
             applied later"
        ))),
    }
}
