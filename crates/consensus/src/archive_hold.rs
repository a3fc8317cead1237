//! How far the log may be purged while the continuous archive has not caught up.
//!
//! openraft purges the log behind each snapshot it builds. With a log archive, entries that the
//! archive does not hold yet must outlive that purge, or a slow or unreachable destination turns
//! into a silent hole in the archive. So while this node archives, the log store records the purge
//! openraft asked for (its view of the log stays exactly what it asked) but deletes entries only up
//! to the archive's watermark; the archiver releases the rest as it uploads them.
//!
//! The hold is bounded: once more than [`ArchiveHold::max_held_entries`] entries would be kept, a
//! purge goes through anyway and the archiver, finding the entries gone, records a gap in the
//! archive (never skips silently) and asks for a new base backup. The bound keeps a destination
//! that stays down from filling the node's disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Entries a hold keeps at most beyond the archive's watermark (override:
/// `RAFTLITE_ARCHIVE_MAX_HELD_ENTRIES`). Group-commit entries are at most 4 MiB of SQL and
/// usually far smaller; at 1,000 entries a second this is over an hour of log.
pub const DEFAULT_MAX_HELD_ENTRIES: u64 = 5_000_000;

const NO_HOLD: u64 = u64::MAX;

/// Shared by the archiver (which moves it) and the log store (which obeys it). Cloning is cheap:
/// clones share one hold.
#[derive(Clone, Debug)]
pub struct ArchiveHold {
    inner: Arc<HoldState>,
}

#[derive(Debug)]
struct HoldState {
    /// Entries at or below this index are archived and may be deleted; `NO_HOLD` when this node
    /// does not archive.
    archived: AtomicU64,
    max_held: u64,
    /// Purges that went past the watermark because the hold reached its bound.
    forced_purges: AtomicU64,
}

impl Default for ArchiveHold {
    fn default() -> Self {
        let max_held = std::env::var("RAFTLITE_ARCHIVE_MAX_HELD_ENTRIES")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&v| v > 0)
            .unwrap_or(DEFAULT_MAX_HELD_ENTRIES);
        ArchiveHold::with_max_held(max_held)
    }
}

impl ArchiveHold {
    /// A hold that keeps at most `max_held` entries beyond the watermark; inactive until
    /// [`ArchiveHold::hold_after`] is called.
    pub fn with_max_held(max_held: u64) -> ArchiveHold {
        ArchiveHold {
            inner: Arc::new(HoldState {
                archived: AtomicU64::new(NO_HOLD),
                max_held,
                forced_purges: AtomicU64::new(0),
            }),
        }
    }

    /// Keeps every entry after `archived` (0: keep them all) until released.
    pub fn hold_after(&self, archived: u64) {
        self.inner
            .archived
            .store(archived.min(NO_HOLD - 1), Ordering::SeqCst);
    }

    /// Stops holding: the next purge deletes everything openraft asked for.
    pub fn clear(&self) {
        self.inner.archived.store(NO_HOLD, Ordering::SeqCst);
    }

    /// The archive's watermark while holding.
    pub fn archived(&self) -> Option<u64> {
        match self.inner.archived.load(Ordering::SeqCst) {
            NO_HOLD => None,
            index => Some(index),
        }
    }

    pub fn max_held_entries(&self) -> u64 {
        self.inner.max_held
    }

    /// How many purges went past the watermark because the hold was full.
    pub fn forced_purges(&self) -> u64 {
        self.inner.forced_purges.load(Ordering::SeqCst)
    }

    /// The highest index a purge up to `requested` may delete now.
    pub(crate) fn delete_limit(&self, requested: u64) -> u64 {
        let Some(archived) = self.archived() else {
            return requested;
        };
        if requested <= archived {
            return requested;
        }
        if requested - archived > self.inner.max_held {
            self.inner.forced_purges.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(
                archived,
                requested,
                max_held = self.inner.max_held,
                "the log archive is too far behind to keep holding the log; purging anyway \
                 (the archive will record a gap and take a new base backup)"
            );
            return requested;
        }
        archived
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_hold_lets_everything_go() {
        let hold = ArchiveHold::with_max_held(10);
        assert_eq!(hold.delete_limit(100), 100);
    }

    #[test]
    fn active_hold_stops_at_the_watermark_until_full() {
        let hold = ArchiveHold::with_max_held(10);
        hold.hold_after(50);
        assert_eq!(hold.delete_limit(40), 40);
        assert_eq!(hold.delete_limit(55), 50);
        assert_eq!(hold.delete_limit(60), 50);
        assert_eq!(hold.forced_purges(), 0);
        assert_eq!(hold.delete_limit(61), 61);
        assert_eq!(hold.forced_purges(), 1);
        hold.clear();
        assert_eq!(hold.delete_limit(70), 70);
    }
}
