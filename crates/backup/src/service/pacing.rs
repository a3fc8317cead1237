//! Pacing of a backup that reads the pinned database file: [`YieldToWrites`] slows it down
//! while the node applies writes and asks for a spill when the WAL grows past its limit;
//! [`spill_rest`] copies the rest of the file locally and releases the pin.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cluster::BackupCluster;

/// How often the node's write activity and its WAL are looked at during a backup.
const PACE_CHECK: Duration = Duration::from_millis(200);
/// Free space a spill leaves beside the copy, for the WAL and the log.
const SPILL_SPACE_MARGIN: u64 = 256 << 20;

/// Sets a backup's pace from the node's write activity until dropped: `busy_pace` while entries
/// are being applied, unlimited when none were in the last check interval; with `spill_at`
/// `(max, flag)`, sets `flag` once the WAL is larger than `max` bytes.
pub(super) struct YieldToWrites(tokio::task::JoinHandle<()>);

impl YieldToWrites {
    pub(super) fn start(
        node: &impl BackupCluster,
        pace: Arc<std::sync::atomic::AtomicU64>,
        busy_pace: u64,
        spill_at: Option<(u64, Arc<std::sync::atomic::AtomicBool>)>,
    ) -> YieldToWrites {
        let node = node.clone();
        YieldToWrites(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            let mut last = node.applied_index();
            let mut spill_at = spill_at;
            loop {
                tokio::time::sleep(PACE_CHECK).await;
                let now = node.applied_index();
                let rate = if now > last { busy_pace } else { 0 };
                pace.store(rate, Ordering::Relaxed);
                last = now;
                if let Some((max, flag)) = &spill_at {
                    let wal = node.store().wal_len();
                    if wal > *max {
                        tracing::info!(
                            wal_bytes = wal,
                            max_wal_bytes = *max,
                            "the WAL grew past its limit during a backup (checkpoints wait for \
                             the backup's pinned file): copying the rest of the file locally \
                             to release it"
                        );
                        flag.store(true, Ordering::Relaxed);
                        spill_at = None;
                    }
                }
            }
        }))
    }
}

/// The spill of a pinned backup (see [`raftlite_backup::Spill`]), on the backup's reading
/// thread: copies the `rest` bytes of `source` from its position into `scratch`, then releases
/// the pin. The copy runs on the blocking pool at normal priority (the reading thread runs at
/// the lowest, and every moment of the copy is WAL growth). On failure `source` is back where
/// it was and still pinned.
pub(super) fn spill_rest(
    runtime: tokio::runtime::Handle,
    source: &mut std::fs::File,
    rest: u64,
    snapshots: PathBuf,
    scratch: PathBuf,
    pin: Arc<Mutex<Option<raftlite_store::PinnedFile>>>,
) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let at = source.stream_position()?;
    let reader = source.try_clone()?;
    let (done, copied) = std::sync::mpsc::channel();
    let target = scratch.clone();
    runtime.spawn_blocking(move || {
        let _ = done.send(copy_rest(reader, rest, &snapshots, &target));
    });
    let copied = copied.recv().unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "the thread copying the rest of the backup's source stopped",
        ))
    });
    match copied {
        Ok(copy) => {
            // The copy holds every byte still to be read: the file may change from here on.
            drop(pin.lock().unwrap_or_else(|p| p.into_inner()).take());
            Ok(copy)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&scratch);
            source.seek(SeekFrom::Start(at))?;
            Err(e)
        }
    }
}

/// Copies `rest` bytes of `source` from its position into a new file `scratch` under `dir`,
/// returned open at its start. Refuses when the copy would leave less than
/// [`SPILL_SPACE_MARGIN`] free: a full disk would stop the database's own writes.
fn copy_rest(
    source: std::fs::File,
    rest: u64,
    dir: &Path,
    scratch: &Path,
) -> std::io::Result<std::fs::File> {
    use std::io::{Read, Seek, SeekFrom};
    std::fs::create_dir_all(dir)?;
    if let Some(free) = raftlite_store::free_space(dir) {
        if free < rest.saturating_add(SPILL_SPACE_MARGIN) {
            return Err(std::io::Error::other(format!(
                "{} has {free} bytes free, too few for a {rest}-byte copy and a margin of \
                 {SPILL_SPACE_MARGIN}",
                dir.display()
            )));
        }
    }
    let mut copy = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(scratch)?;
    // `std::io::copy` between files uses copy_file_range: no round trip through user space.
    let copied = std::io::copy(&mut (&source).take(rest), &mut copy)?;
    if copied != rest {
        return Err(std::io::Error::other(format!(
            "copied {copied} of the {rest} bytes left: the source ended early"
        )));
    }
    copy.seek(SeekFrom::Start(0))?;
    Ok(copy)
}

impl Drop for YieldToWrites {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A scratch file removed when dropped.
pub(super) struct Scratch(pub(super) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.0.display(), error = %e, "could not remove a backup scratch file")
            }
        }
    }
}
