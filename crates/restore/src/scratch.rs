//! Private scratch space for the backup and restore commands: a snapshot being backed up, a
//! consolidated or spooled database being restored. Removed when dropped (on error and on
//! Ctrl-C/SIGTERM too, since the work future is dropped), and by a later run when a run was
//! killed outright.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// No private temporary directory could be made.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create a temporary directory in {}: {reason}; set TMPDIR to a writable directory \
     with room for the whole database",
    base.display()
)]
pub struct ScratchError {
    pub base: PathBuf,
    pub reason: String,
}

/// A private (0700) directory under the system temp dir, removed with everything in it when
/// dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    const PREFIX: &'static str = "raftlite-backup-";

    pub fn new() -> Result<ScratchDir, ScratchError> {
        let base = std::env::temp_dir();
        ScratchDir::remove_stale(&base);
        let mut last_error = None;
        for _ in 0..16 {
            let path = base.join(format!(
                "{}{}-{:016x}",
                ScratchDir::PREFIX,
                std::process::id(),
                rand::random::<u64>()
            ));
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            match builder.create(&path) {
                Ok(()) => return Ok(ScratchDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        Err(ScratchError {
            base,
            reason: last_error.map_or_else(|| "unknown error".to_string(), |e| e.to_string()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Removes the scratch directories of earlier runs that were killed (`kill -9`, power
    /// loss): `raftlite-backup-<pid>-<random>` whose process no longer exists and that nothing
    /// touched for [`STALE_AFTER`] (a process of another PID namespace sharing this temp dir
    /// is not visible in `/proc`). Best effort; only where `/proc` tells which processes live.
    fn remove_stale(base: &Path) {
        let proc = Path::new("/proc");
        if !proc.join("self").exists() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(ScratchDir::PREFIX))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir
                && pid != std::process::id()
                && !proc.join(pid.to_string()).exists()
                && untouched_for(&entry.path()) >= STALE_AFTER
            {
                // Someone else's (another user's) directory simply fails to go: ignored.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// How long a dead run's scratch directory is left alone before a later run removes it.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Time since `dir` or anything directly in it was last modified (zero when unknown).
fn untouched_for(dir: &Path) -> Duration {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut newest = modified(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            newest = newest.max(modified(&entry.path()));
        }
    }
    newest
        .and_then(|t| t.elapsed().ok())
        .unwrap_or(Duration::ZERO)
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "warning: could not remove the temporary directory {}: {e}; delete it by hand",
                self.0.display()
            ),
        }
    }
}
