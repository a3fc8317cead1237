//! Files and child processes: the work directory, command-line tools (`sqlite3`, `zstd`, `cp`,
//! `sync`) run and timed, their logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};

use crate::proc::proc_mem;
use crate::waits::DEADLINE;
use crate::waits::POLL;

/// The benchmark's files; a directory we created ourselves is removed again on drop.
pub struct WorkDir {
    pub path: PathBuf,
    remove: bool,
}

impl WorkDir {
    /// `given` (`--work-dir`), which must be new or empty and is kept, else a new temporary
    /// directory.
    pub fn create(given: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(path) = given {
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create --work-dir {}", path.display()))?;
            // Leftovers (an old bench table, old node data) would distort or break the run.
            if std::fs::read_dir(&path)?.next().is_some() {
                bail!(
                    "--work-dir {} is not empty; give a new or empty directory",
                    path.display()
                );
            }
            return Ok(WorkDir {
                path,
                remove: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("raftlite-bench-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path, remove: true })
    }

    /// A new directory `name` inside this one, removed on drop when this one is ours too (then
    /// one measurement's files are gone before the next starts).
    pub fn child(&self, name: &str) -> anyhow::Result<Self> {
        let path = self.path.join(name);
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir {
            path,
            remove: self.remove,
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process killed (and reaped) when dropped, whatever path leads there.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Both are no-ops for a child already reaped by `try_wait`.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A finished child process: exit status, wall time and the last VmHWM seen before it exited
/// (sampled every [`POLL`], so a peak in its last few milliseconds can be missed).
pub struct ChildRun {
    pub status: std::process::ExitStatus,
    pub wall: Duration,
    pub peak_kib: Option<u64>,
}

/// Runs `cmd` to completion, killing it after `deadline`.
pub async fn run_child(
    mut cmd: Command,
    what: &str,
    deadline: Duration,
) -> anyhow::Result<ChildRun> {
    let start = Instant::now();
    let mut child = ChildGuard(
        cmd.spawn()
            .with_context(|| format!("cannot start {what}"))?,
    );
    let pid = child.0.id();
    let mut peak_kib = None;
    loop {
        if let Some(m) = proc_mem(pid) {
            peak_kib = peak_kib.max(Some(m.hwm_kib));
        }
        if let Some(status) = child
            .0
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            return Ok(ChildRun {
                status,
                wall: start.elapsed(),
                peak_kib,
            });
        }
        if start.elapsed() >= deadline {
            bail!("{what} did not finish within {deadline:?}; killed");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `cmd` with stdin closed and stdout/stderr appended to `log`.
pub fn logged(mut cmd: Command, log: &Path) -> anyhow::Result<Command> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    Ok(cmd)
}

/// A `file://` URL for an absolute path, percent-encoding anything but unreserved characters.
pub fn file_url(path: &Path) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", path.display()))?;
    let mut url = String::from("file://");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(url)
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `dir/name`, created.
pub fn create_dir_in(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(path)
}

/// Flushes the machine's dirty pages (`sync`), so that a measured phase does not pay for the
/// writeback of the one before (the 1 GiB copy, the baseline's files). Best effort.
pub async fn settle_disk() {
    if let Some(sync) = find_tool("sync") {
        let mut cmd = Command::new(sync);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Err(e) = run_child(cmd, "sync", DEADLINE).await {
            eprintln!("bench: sync failed ({e:#}); going on");
        }
    }
}

/// Looks `name` up in `PATH`, then in /usr/bin.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_percent_encoded() {
        assert_eq!(
            file_url(Path::new("/tmp/a b/c%d")).expect("UTF-8"),
            "file:///tmp/a%20b/c%25d"
        );
    }
}
