//! Client tools the client-compatibility tests run (a Python venv with the rqlite clients, an
//! npm install of rqlite-js), provisioned on first use under `<target dir>/client-tools/<name>`
//! so a plain `cargo test --workspace` works on a machine with python3 (venv, pip), node and npm
//! and a reachable PyPI / npm registry.
//!
//! A tool directory is ready when its stamp file holds exactly the stamp the caller asks for
//! (the pinned package list, the lock file) and the caller's check passes; otherwise it is
//! removed and installed again, and the stamp is written last (temp file + rename), so an
//! interrupted install is redone. Tests of one binary share a process-wide lock, and test
//! binaries running at once share an `flock` on `<name>.lock`, so one installs while the others
//! wait. A failed install fails the test with the command's stderr (never a skip).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::run_to_completion;

/// The name of the stamp file inside a tool directory.
const STAMP: &str = ".raftlite-stamp";
/// How long one install command may run, and how long to wait for another process's install.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `<target dir>/client-tools`: cargo's target directory (wherever `CARGO_TARGET_DIR` put it)
/// is the parent of `CARGO_TARGET_TMPDIR`.
pub fn tools_root() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("client-tools")
}

/// Prints `line` to this process's stderr, past the test harness's output capture, so CI logs
/// show it for passing tests too.
pub fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The directory `<tools_root>/<name>`, ready: reused when its stamp equals `stamp` and
/// `check` passes, else emptied, filled by `install` and checked, and stamped last.
pub fn provision(
    name: &str,
    stamp: &str,
    install: impl FnOnce(&Path) -> Result<(), String>,
    check: impl Fn(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    // A test that panicked while holding the lock leaves nothing half-done that the stamp
    // would not reveal, so a poisoned lock is still usable.
    let _guard = IN_PROCESS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = tools_root();
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let _file_lock = FileLock::acquire(&root.join(format!("{name}.lock")))?;

    let dir = root.join(name);
    let stamp_path = dir.join(STAMP);
    if std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) && check(&dir).is_ok() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    install(&dir)?;
    check(&dir).map_err(|e| format!("{} after installing: {e}", dir.display()))?;
    let tmp = dir.join(format!("{STAMP}.tmp"));
    std::fs::write(&tmp, stamp).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &stamp_path)
        .map_err(|e| format!("rename {} to {}: {e}", tmp.display(), stamp_path.display()))?;
    Ok(dir)
}

/// Runs an install command to completion (stdin closed, output captured, killed after
/// [`INSTALL_TIMEOUT`]); an error names the command and carries its stderr and stdout.
pub fn run_install(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let run = run_to_completion(&mut child, INSTALL_TIMEOUT);
    if run.code == Some(0) && !run.timed_out {
        return Ok(());
    }
    let status = match run.code {
        _ if run.timed_out => format!("was killed after {INSTALL_TIMEOUT:?}"),
        Some(code) => format!("exited with {code}"),
        None => "was killed by a signal".into(),
    };
    let mut message = format!(
        "{shown} {status}\n--- stderr ---\n{}",
        run.stderr.trim_end()
    );
    if !run.stdout.trim().is_empty() {
        message.push_str(&format!("\n--- stdout ---\n{}", run.stdout.trim_end()));
    }
    Err(message)
}

/// An exclusive `flock` on a lock file, held until dropped (the kernel also drops it when the
/// process dies, so a crashed install leaves no stale lock).
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("open lock file {}: {e}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            use std::time::Instant;
            let deadline = Instant::now() + INSTALL_TIMEOUT;
            loop {
                // SAFETY: flock on a file descriptor this function owns (`file` outlives the
                // call); no memory is passed.
                let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                if rc == 0 {
                    break;
                }
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(format!("lock {}: {err}", path.display()));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "another process held {} for {INSTALL_TIMEOUT:?} (an install hung?)",
                        path.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(FileLock { _file: file })
    }
}
