//! Deterministic evaluation of SQL that would otherwise differ between nodes.
//!
//! Every node applies the same log entry, so `'now'`, `CURRENT_TIMESTAMP`, a column
//! `DEFAULT CURRENT_TIMESTAMP`, a trigger calling `random()` and so on must evaluate to the same
//! value everywhere, and again on every replay. Instead of rewriting SQL text (which misses
//! defaults, triggers and views), the writer connection evaluates them against the entry itself:
//! - time: a VFS that wraps the platform VFS and answers SQLite's clock queries with the leader's
//!   timestamp stored in the entry;
//! - randomness: `random()` and `randomblob(N)` are replaced on the writer connection by a PRNG
//!   seeded from the entry.
//!
//! Read-only connections keep the real clock and real randomness.

use std::cell::Cell;
use std::ffi::{c_int, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

use crate::error::StoreError;

/// Name under which the wrapping VFS is registered with SQLite.
pub const VFS_NAME: &CStr = c"raftlite-deterministic";

/// Milliseconds between the Julian day epoch and the Unix epoch, as SQLite counts them.
const JULIAN_UNIX_EPOCH_MS: i64 = 210_866_760_000_000;

thread_local! {
    /// The leader's timestamp of the entry being applied on this thread (Unix ms).
    static ENTRY_NOW_MS: Cell<Option<i64>> = const { Cell::new(None) };
    /// State of the per-entry PRNG behind `random()` and `randomblob()`.
    static ENTRY_RNG: Cell<u64> = const { Cell::new(0) };
}

struct BaseVfs(*mut ffi::sqlite3_vfs);
// SAFETY: the pointer refers to SQLite's static default VFS, which lives for the whole process and
// is safe to call from any thread.
unsafe impl Send for BaseVfs {}
unsafe impl Sync for BaseVfs {}

static BASE_VFS: OnceLock<BaseVfs> = OnceLock::new();
static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// Sets the entry's clock and random seed for everything this thread evaluates until the guard is
/// dropped.
pub struct EntryScope {
    _private: (),
}

impl EntryScope {
    pub fn enter(at_unix_ms: i64, seed: u64) -> EntryScope {
        ENTRY_NOW_MS.with(|c| c.set(Some(at_unix_ms)));
        ENTRY_RNG.with(|c| c.set(seed ^ 0x9E37_79B9_7F4A_7C15));
        EntryScope { _private: () }
    }

    /// Restarts the PRNG, so a retried attempt at the same entry draws the same numbers.
    pub fn reseed(&self, seed: u64) {
        ENTRY_RNG.with(|c| c.set(seed ^ 0x9E37_79B9_7F4A_7C15));
    }
}

impl Drop for EntryScope {
    fn drop(&mut self) {
        ENTRY_NOW_MS.with(|c| c.set(None));
    }
}

fn next_random() -> u64 {
    // splitmix64: tiny, fast, and good enough for SQL `random()`.
    ENTRY_RNG.with(|c| {
        let mut z = c.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        c.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

unsafe extern "C" fn current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    if let Some(ms) = ENTRY_NOW_MS.with(|c| c.get()) {
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = ms + JULIAN_UNIX_EPOCH_MS };
        return ffi::SQLITE_OK;
    }
    match BASE_VFS.get() {
        // SAFETY: the base VFS is SQLite's own and outlives the process.
        Some(base) => match unsafe { (*base.0).xCurrentTimeInt64 } {
            Some(f) => unsafe { f(base.0, out) },
            None => ffi::SQLITE_ERROR,
        },
        None => {
            let _ = vfs;
            ffi::SQLITE_ERROR
        }
    }
}

unsafe extern "C" fn current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    let mut ms: i64 = 0;
    // SAFETY: forwards SQLite's own arguments.
    let rc = unsafe { current_time_int64(vfs, &mut ms) };
    if rc == ffi::SQLITE_OK {
        unsafe { *out = ms as f64 / 86_400_000.0 };
    }
    rc
}

/// Registers the deterministic VFS once per process. It copies the platform VFS (so files, locks
/// and shared memory behave exactly as for ordinary connections) and replaces only the clock.
pub fn register_vfs() -> Result<(), StoreError> {
    let outcome = REGISTERED.get_or_init(|| {
        // SAFETY: plain SQLite C API calls; the copied struct is leaked so it lives forever, as
        // SQLite requires of a registered VFS.
        unsafe {
            if ffi::sqlite3_initialize() != ffi::SQLITE_OK {
                return Err("sqlite3_initialize failed".to_string());
            }
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            if base.is_null() {
                return Err("SQLite has no default VFS".to_string());
            }
            let _ = BASE_VFS.set(BaseVfs(base));
            let mut vfs: ffi::sqlite3_vfs = *base;
            vfs.zName = VFS_NAME.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.xCurrentTime = Some(current_time);
            if vfs.iVersion >= 2 {
                vfs.xCurrentTimeInt64 = Some(current_time_int64);
            }
            let leaked: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
            let rc = ffi::sqlite3_vfs_register(leaked, 0);
            if rc != ffi::SQLITE_OK {
                return Err(format!("sqlite3_vfs_register failed with code {rc}"));
            }
        }
        Ok(())
    });
    outcome.clone().map_err(|detail| {
        StoreError::Refused(format!("cannot set up deterministic SQLite: {detail}"))
    })
}

/// Replaces `random()` and `randomblob(N)` on a writer connection with the entry-seeded PRNG.
pub fn install_functions(conn: &Connection) -> Result<(), StoreError> {
    conn.create_scalar_function("random", 0, FunctionFlags::SQLITE_UTF8, |_ctx| {
        Ok(next_random() as i64)
    })?;
    conn.create_scalar_function("randomblob", 1, FunctionFlags::SQLITE_UTF8, |ctx| {
        // SQLite treats N < 1 as 1.
        let n = ctx.get::<i64>(0).unwrap_or(1).clamp(1, 1 << 30) as usize;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.extend_from_slice(&next_random().to_le_bytes());
        }
        out.truncate(n);
        Ok(out)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::OpenFlags;

    fn open_writer(dir: &std::path::Path) -> Connection {
        register_vfs().unwrap();
        let conn = Connection::open_with_flags_and_vfs(
            dir.join("t.db"),
            OpenFlags::default(),
            VFS_NAME.to_str().unwrap(),
        )
        .unwrap();
        install_functions(&conn).unwrap();
        conn
    }

    #[test]
    fn now_and_random_follow_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(dir.path());
        let scope = EntryScope::enter(1_700_000_000_123, 42);
        let (ts, jd, r1, blob): (String, f64, i64, Vec<u8>) = conn
            .query_row(
                "SELECT datetime('now'), julianday('now'), random(), randomblob(5)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(ts, "2023-11-14 22:13:20");
        assert!((jd - 2460263.425927).abs() < 1e-5);
        assert_eq!(blob.len(), 5);
        let cur: String = conn
            .query_row("SELECT CURRENT_TIMESTAMP", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cur, "2023-11-14 22:13:20");
        scope.reseed(42);
        let r2: i64 = conn.query_row("SELECT random()", [], |r| r.get(0)).unwrap();
        assert_eq!(r1, r2, "same seed, same numbers");
        drop(scope);
        let now: String = conn
            .query_row("SELECT datetime('now')", [], |r| r.get(0))
            .unwrap();
        assert_ne!(
            now, "2023-11-14 22:13:20",
            "outside an entry the real clock is used"
        );
    }

    #[test]
    fn column_default_current_timestamp_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(dir.path());
        conn.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, at TEXT DEFAULT CURRENT_TIMESTAMP)",
        )
        .unwrap();
        {
            let _s = EntryScope::enter(0, 1);
            conn.execute("INSERT INTO t(id) VALUES (1)", []).unwrap();
        }
        let at: String = conn
            .query_row("SELECT at FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(at, "1970-01-01 00:00:00");
    }
}
