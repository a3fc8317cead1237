//! A 64 MiB database goes through create and verify without the pipeline ever holding it:
//! every Rust allocation is counted (its own test binary, so nothing else runs beside it), and
//! the upload is watched part by part.
//!
//! What is not counted: zstd's and SQLite's own C allocations (zstd's window and job buffers
//! are a few MiB at level 3 with at most two workers; SQLite's page cache is bounded by its
//! cache_size). The peak resident set is printed for a human to judge.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{make_random_db, meta, Probe};
use object_store::local::LocalFileSystem;
use raftlite_backup::{
    create_backup, list_backups, verify_backup_in, CreateOptions, Destination, PARTS_IN_FLIGHT,
    PART_SIZE,
};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = CURRENT.fetch_add(grow, Ordering::SeqCst) + grow;
                PEAK.fetch_max(now, Ordering::SeqCst);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resets the peak to the current level; returns the current level.
fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::SeqCst);
    PEAK.store(now, Ordering::SeqCst);
    // Best effort: also reset the kernel's peak RSS (Linux), for the printed figure.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    now
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_database_never_sits_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.sqlite");
    make_random_db(&db, 64);
    let size = std::fs::metadata(&db).unwrap().len() as usize;
    assert!(size >= 64 * MIB, "{size}");

    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let local = Arc::new(LocalFileSystem::new_with_prefix(&store_dir).unwrap());
    let probe = Arc::new(Probe::new(local, None));
    let stats = probe.stats.clone();
    let dest = Destination::from_store(probe, "", "probe+file://store").unwrap();

    // Level 1: random blobs do not compress anyway, and the test stays quick in debug builds.
    let opts = CreateOptions {
        level: 1,
        encryption: None,
    };
    let base = reset_peak();
    let manifest = create_backup(&db, meta(1), &dest, &opts).await.unwrap();
    let create_peak = PEAK.load(Ordering::SeqCst) - base;
    let create_rss = peak_rss_kib();
    assert_eq!(manifest.plain_size as usize, size);
    assert!(
        manifest.stored_size as usize > 60 * MIB,
        "incompressible data stays big"
    );

    let max_in_flight = stats.max_in_flight.load(Ordering::SeqCst);
    let max_part = stats.max_part.load(Ordering::SeqCst);
    let parts = stats.parts.load(Ordering::SeqCst);
    assert!(parts >= 12, "{parts} parts");
    assert!(
        max_in_flight <= PARTS_IN_FLIGHT,
        "{max_in_flight} parts in flight"
    );
    assert!(max_part <= PART_SIZE, "{max_part} bytes in one part");

    let list = list_backups(&dest).await.unwrap();
    let (id, _) = list.backups[0].clone();
    let base = reset_peak();
    let report = verify_backup_in(&dest, &id, None, dir.path())
        .await
        .unwrap();
    let verify_peak = PEAK.load(Ordering::SeqCst) - base;
    let verify_rss = peak_rss_kib();
    assert_eq!(report.plain_size as usize, size);

    eprintln!(
        "64 MiB database, {parts} parts (max {max_in_flight} in flight, largest {max_part} B): \
         peak Rust heap above baseline: create {:.1} MiB, verify {:.1} MiB; \
         peak RSS: create {:?} KiB, verify {:?} KiB",
        create_peak as f64 / MIB as f64,
        verify_peak as f64 / MIB as f64,
        create_rss,
        verify_rss
    );
    // The bound by construction: (PARTS_IN_FLIGHT + 1) parts + 4 x 256 KiB channel + buffers.
    let bound = (PARTS_IN_FLIGHT + 1) * PART_SIZE + 6 * MIB;
    assert!(
        create_peak < bound,
        "create peaked at {create_peak} bytes (bound {bound})"
    );
    assert!(
        verify_peak < 8 * MIB,
        "verify peaked at {verify_peak} bytes"
    );
    assert!(create_peak < size / 3 && verify_peak < size / 3);
    // Everything, C allocations included: the process never grew by the database's size.
    for rss in [create_rss, verify_rss].into_iter().flatten() {
        assert!((rss as usize) * 1024 < size, "peak RSS {rss} KiB");
    }
}
