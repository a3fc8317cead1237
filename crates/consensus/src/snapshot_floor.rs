//! How far this node's Raft log may be purged: up to the newest snapshot durable on its own disk.
//!
//! openraft (0.9 and 0.10 alike), installing a snapshot received from the leader, hands the install to the
//! state-machine task and issues "purge the log up to the snapshot" to the log store at once, in
//! its core task, without waiting for the install (`install_full_snapshot` in its following
//! handler; `Command::PurgeLog` carries no condition). A crash after that purge and before the
//! received snapshot was durable left a log that starts past everything the node holds (database
//! and snapshots): it could not be rebuilt and the node refused to start.
//!
//! The state machine raises the floor once a snapshot, built here or received, is complete on
//! disk (data fsync'd, `.meta.json` written and its directory fsync'd), and the log store's purge
//! waits until the floor covers the purge point. Built snapshots are durable before openraft hears
//! of them, so only a purge behind a snapshot being installed ever waits, and only until that
//! snapshot is durable (before the database is replaced). If the install fails first, the purge
//! fails with it instead of waiting forever.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone, Debug, Default)]
struct Floor {
    /// The log index of the newest durable snapshot.
    durable: Option<u64>,
    /// Why a snapshot install failed before its snapshot became durable.
    failed: Option<String>,
}

/// Shared by the state machine (which raises it) and the log store (which waits on it). Cloning
/// is cheap: clones share one floor.
#[derive(Clone, Debug)]
pub struct SnapshotFloor {
    floor: Arc<watch::Sender<Floor>>,
}

impl SnapshotFloor {
    /// A floor at `durable`: the index of the newest snapshot on disk, if any.
    pub fn new(durable: Option<u64>) -> SnapshotFloor {
        SnapshotFloor {
            floor: Arc::new(
                watch::channel(Floor {
                    durable,
                    failed: None,
                })
                .0,
            ),
        }
    }

    /// The index of the newest durable snapshot.
    pub fn durable(&self) -> Option<u64> {
        self.floor.borrow().durable
    }

    /// Records that the snapshot at `index` is durable. The floor never moves back.
    pub fn raise(&self, index: u64) {
        self.floor.send_if_modified(|f| {
            if f.durable < Some(index) {
                f.durable = Some(index);
                true
            } else {
                false
            }
        });
    }

    /// Records that a snapshot install failed before its snapshot was durable: a purge waiting
    /// for it fails too (openraft treats the install's error as fatal anyway).
    pub fn fail(&self, why: String) {
        self.floor.send_modify(|f| f.failed = Some(why));
    }

    /// Waits until a snapshot at `index` or later is durable.
    pub async fn wait_covers(&self, index: u64) -> Result<(), String> {
        let covered = |f: &Floor| f.durable >= Some(index);
        if covered(&self.floor.borrow()) {
            return Ok(());
        }
        tracing::info!(
            purge_upto = index,
            durable_snapshot = ?self.durable(),
            "the log purge waits until the snapshot it relies on is durable"
        );
        let mut rx = self.floor.subscribe();
        loop {
            let waited = tokio::time::timeout(
                Duration::from_secs(30),
                rx.wait_for(|f| covered(f) || f.failed.is_some()),
            )
            .await;
            match waited {
                Ok(Ok(f)) if covered(&f) => return Ok(()),
                Ok(Ok(f)) => {
                    return Err(format!(
                        "the log was not purged up to {index}: the snapshot it relies on was \
                         not installed ({})",
                        f.failed.as_deref().unwrap_or("unknown error")
                    ))
                }
                // The sender lives as long as `self`.
                Ok(Err(_)) => return Err("the snapshot floor was dropped".to_string()),
                // A large snapshot takes a while to make durable: keep waiting, visibly.
                Err(_) => tracing::warn!(
                    purge_upto = index,
                    durable_snapshot = ?self.durable(),
                    "the log purge is still waiting for the snapshot it relies on to be durable"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_raised_and_fails_with_the_install() {
        let floor = SnapshotFloor::new(Some(10));
        floor.wait_covers(10).await.expect("already covered");

        let waiter = tokio::spawn({
            let floor = floor.clone();
            async move { floor.wait_covers(20).await }
        });
        tokio::task::yield_now().await;
        floor.raise(15);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "15 does not cover 20");
        floor.raise(20);
        waiter.await.expect("join").expect("covered at 20");
        floor.raise(5);
        assert_eq!(floor.durable(), Some(20), "the floor never moves back");

        let waiter = tokio::spawn({
            let floor = floor.clone();
            async move { floor.wait_covers(30).await }
        });
        tokio::task::yield_now().await;
        floor.fail("disk full".into());
        let err = waiter.await.expect("join").expect_err("the install failed");
        assert!(err.contains("disk full"), "{err}");
    }
}
