//! After a restore's commit or abort, every node snapshots and purges its log so the restore's
//! chunk entries do not linger (started by the node; the restore driver never calls it).

use std::time::{Duration, Instant};

use crate::state_machine::Raft;

/// How long to keep trying to compact the log after a restore.
const COMPACT_WAIT: Duration = Duration::from_secs(60);

/// On every node, after each restore commit or abort its state machine applies: compacts the
/// log up to it (see [`compact_log_after`]).
pub(crate) async fn compact_after_restores(
    raft: Raft,
    mut settled: tokio::sync::watch::Receiver<u64>,
) {
    let delay = compact_delay();
    while settled.changed().await.is_ok() {
        let index = *settled.borrow_and_update();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        compact_log_after(raft.clone(), index).await;
    }
}

/// How long a node waits after a restore's commit or abort before it compacts its log: none,
/// or `RAFTLITE_RESTORE_COMPACT_DELAY_MS` (tests widen the moment between the two with it).
fn compact_delay() -> Duration {
    std::env::var("RAFTLITE_RESTORE_COMPACT_DELAY_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}

/// After a restore commit or abort at `index`: build a snapshot covering it, then purge the log
/// up to it, so the chunks do not linger in the log (the segment files holding them are
/// deleted) and a lagging follower receives the (streamed) snapshot instead.
pub(crate) async fn compact_log_after(raft: Raft, index: u64) {
    let deadline = Instant::now() + COMPACT_WAIT;
    loop {
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::warn!(error = %e, "cannot trigger a snapshot after a restore");
            return;
        }
        let covered = raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= index),
                "a snapshot that covers the restore",
            )
            .await;
        if covered.is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                index,
                "no snapshot covered the restore within {COMPACT_WAIT:?}; its entries stay in \
                 the log until the next one"
            );
            return;
        }
    }
    if let Err(e) = raft.trigger().purge_log(index).await {
        tracing::warn!(error = %e, "cannot purge the log after a restore");
    }
}
