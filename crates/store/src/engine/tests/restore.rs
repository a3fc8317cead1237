//! Tests of a restore from chunks (`engine/restore_chunks.rs` and its commit in
//! `engine/files.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;
use crate::engine::meta::stamp_for_install;
use crate::error::StoreError;

#[test]
fn chunks_assemble_into_a_restore_on_a_new_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    let bytes = source_file(dir.path(), 50);
    let chunk = 32 * 1024;
    for (i, part) in bytes.chunks(chunk).enumerate() {
        let index = 4 + i as u64;
        store
            .apply_restore_chunk(pos(index), "rid", (i * chunk) as u64, part)
            .unwrap();
        // Until the commit, readers see the old data only.
        assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 1);
    }
    let (rid, chunks, held) = store.pending_restore().unwrap().unwrap();
    assert_eq!((rid.as_str(), held), ("rid", bytes.len() as u64));
    assert_eq!(chunks as usize, bytes.len().div_ceil(chunk));
    let commit = pos(100);
    let meta = store
        .restore_from_chunks(
            commit,
            "rid",
            bytes.len() as u64,
            &sha256_hex(&bytes),
            &timeline("t2"),
        )
        .unwrap()
        .unwrap();
    assert_eq!(meta.applied, Some(commit));
    assert_eq!(meta.data_changed_index(), 100);
    let t = meta.timeline().unwrap();
    assert_eq!((t.id.as_str(), t.counter), ("t2", 2));
    assert_eq!(t.parent.as_deref(), Some("t1"));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 50);
    assert!(matches!(
        store.query(&[Statement::new("SELECT * FROM old")]).unwrap()[0],
        StatementResult::Error(_)
    ));
    assert_eq!(store.pending_restore().unwrap(), None);
    // A replay of the commit changes nothing.
    let again = store
        .restore_from_chunks(commit, "rid", 0, "x", &timeline("t3"))
        .unwrap()
        .unwrap();
    assert_eq!(again.timeline().unwrap().id, "t2");
    // The source bytes were never touched.
    assert_eq!(
        std::fs::read(dir.path().join("source-50.sqlite")).unwrap(),
        bytes
    );
}

#[test]
fn a_bad_or_incomplete_restore_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    let bytes = source_file(dir.path(), 20);
    let half = bytes.len() / 2;
    // A gap: only the second half arrived.
    store
        .apply_restore_chunk(pos(4), "gap", half as u64, &bytes[half..])
        .unwrap();
    let refused = commit_restore(&store, 5, "gap", &bytes)
        .unwrap()
        .unwrap_err();
    assert!(refused.contains("missing bytes 0.."), "{refused}");
    // Wrong hash.
    store
        .apply_restore_chunk(pos(6), "hash", 0, &bytes)
        .unwrap();
    let refused = store
        .restore_from_chunks(
            pos(7),
            "hash",
            bytes.len() as u64,
            &"0".repeat(64),
            &timeline("t2"),
        )
        .unwrap()
        .unwrap_err();
    assert!(refused.contains("sha256"), "{refused}");
    // Not SQLite, though size and hash match.
    let junk = vec![7u8; 5000];
    store.apply_restore_chunk(pos(8), "junk", 0, &junk).unwrap();
    let refused = store
        .restore_from_chunks(
            pos(9),
            "junk",
            junk.len() as u64,
            &sha256_hex(&junk),
            &timeline("t2"),
        )
        .unwrap()
        .unwrap_err();
    assert!(refused.contains("SQLite"), "{refused}");
    let meta = store.meta().unwrap();
    assert_eq!(meta.applied.map(|p| p.index), Some(9));
    assert_eq!(meta.timeline().unwrap().id, "t1");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 1);
    assert_eq!(store.pending_restore().unwrap(), None);
}

#[test]
fn a_newer_restore_supersedes_abandoned_chunks_and_snapshots_carry_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    let bytes = source_file(dir.path(), 10);
    store
        .apply_restore_chunk(pos(4), "old-one", 0, b"abandoned")
        .unwrap();
    store
        .apply_restore_chunk(pos(5), "new", 0, &bytes[..1000])
        .unwrap();
    assert_eq!(
        store.pending_restore().unwrap().map(|(id, _, _)| id),
        Some("new".to_string())
    );
    // A snapshot taken mid-restore holds the chunks: a node installing it can finish.
    let snap = dir.path().join("snap.sqlite");
    store.snapshot_to(&snap).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    other.install_from(&snap).unwrap();
    other
        .apply_restore_chunk(pos(6), "new", 1000, &bytes[1000..])
        .unwrap();
    let meta = other
        .restore_from_chunks(
            pos(7),
            "new",
            bytes.len() as u64,
            &sha256_hex(&bytes),
            &timeline("t2"),
        )
        .unwrap()
        .unwrap();
    assert_eq!(meta.timeline().unwrap().id, "t2");
    assert_eq!(count(&other, "SELECT COUNT(*) FROM r"), 10);
    // Clients cannot touch the chunks.
    let refused = store
        .apply_write(pos(8), T, &[req(&["DELETE FROM _raftlite_restore"], false)])
        .unwrap();
    assert!(
        matches!(refused[0][0], StatementResult::Error(_)),
        "{:?}",
        refused[0][0]
    );
    store.apply_restore_abort(pos(9), "new").unwrap();
    assert_eq!(store.pending_restore().unwrap(), None);
}

/// Applies the commit of restore `id` at `index`, announcing `bytes` as the file, on
/// timeline t2.
fn commit_restore(
    store: &Store,
    index: u64,
    id: &str,
    bytes: &[u8],
) -> Result<Result<MetaState, String>, StoreError> {
    store.restore_from_chunks(
        pos(index),
        id,
        bytes.len() as u64,
        &sha256_hex(bytes),
        &timeline("t2"),
    )
}

/// Names of the restore staging files beside the database in `dir`.
fn staging_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db.sqlite.restore-"))
        .collect();
    names.sort();
    names
}

#[test]
fn chunk_bytes_live_in_one_staging_file_that_the_commit_or_an_abort_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    let bytes = source_file(dir.path(), 12);
    let half = bytes.len() / 2;
    store
        .apply_restore_chunk(pos(4), "first", 0, &bytes[..half])
        .unwrap();
    assert_eq!(staging_files(dir.path()).len(), 1);
    // A newer restore supersedes the abandoned one: its file goes with its rows.
    store
        .apply_restore_chunk(pos(5), "second", 0, &bytes[..half])
        .unwrap();
    let second = staging_files(dir.path());
    assert_eq!(second.len(), 1);
    // The rows hold no bytes (read as raftlite does: clients cannot name the table).
    let with_data: i64 = store
        .writer()
        .query_row(
            "SELECT COUNT(*) FROM _raftlite_restore WHERE data IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(with_data, 0);
    // A replayed chunk (its position already applied) writes nothing.
    store
        .apply_restore_chunk(pos(5), "third", 0, &bytes[..half])
        .unwrap();
    assert_eq!(staging_files(dir.path()), second);
    store.apply_restore_abort(pos(6), "second").unwrap();
    assert!(staging_files(dir.path()).is_empty());
    // A file left by a crash between the row and the cleanup goes at the next start.
    store
        .apply_restore_chunk(pos(7), "fourth", 0, &bytes[..half])
        .unwrap();
    std::fs::write(dir.path().join("db.sqlite.restore-leftover"), b"x").unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(staging_files(dir.path()).len(), 1);
    store
        .apply_restore_chunk(pos(8), "fourth", half as u64, &bytes[half..])
        .unwrap();
    commit_restore(&store, 9, "fourth", &bytes)
        .unwrap()
        .unwrap();
    assert!(staging_files(dir.path()).is_empty());
    assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 12);
}

#[test]
fn snapshots_taken_while_chunks_arrive_and_commit_always_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(with_old_data(dir.path()));
    let bytes = source_file(dir.path(), 200);
    let chunk = 16 * 1024;
    let done = Arc::new(AtomicBool::new(false));
    let snapshots = {
        let (store, done, dir) = (store.clone(), done.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let mut taken = 0;
            while !done.load(Ordering::SeqCst) {
                store.snapshot_to(&dir.join("snap.sqlite")).unwrap();
                taken += 1;
            }
            taken
        })
    };
    for (i, part) in bytes.chunks(chunk).enumerate() {
        store
            .apply_restore_chunk(pos(4 + i as u64), "rid", (i * chunk) as u64, part)
            .unwrap();
    }
    // The commit swaps the file while snapshots keep being taken.
    commit_restore(&store, 1000, "rid", &bytes)
        .unwrap()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    done.store(true, Ordering::SeqCst);
    assert!(snapshots.join().unwrap() > 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 200);
}

#[test]
fn a_commit_cut_short_before_its_swap_finishes_when_applied_again() {
    for rewritten in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        let bytes = source_file(dir.path(), 30);
        store.apply_restore_chunk(pos(4), "rid", 0, &bytes).unwrap();
        // The commit got as far as moving the staging file (and maybe rewriting its meta),
        // then the process died.
        let installing = store.staging_path();
        store
            .take_restore_staging("rid", &installing, None)
            .unwrap()
            .unwrap();
        if rewritten {
            let current = store.meta().unwrap();
            stamp_for_install(&installing, pos(5), None, &timeline("t2"), &current).unwrap();
        }
        drop(store);
        let store = open(dir.path());
        let meta = commit_restore(&store, 5, "rid", &bytes).unwrap().unwrap();
        assert_eq!(meta.applied, Some(pos(5)), "rewritten: {rewritten}");
        let t = meta.timeline().unwrap();
        assert_eq!((t.id.as_str(), t.counter), ("t2", 2));
        assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 30);
        assert!(!installing.exists());
        assert!(staging_files(dir.path()).is_empty());
    }
}

#[test]
fn chunks_hashed_as_they_arrive_or_read_back_give_the_same_decision() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = source_file(dir.path(), 40);
    let half = bytes.len() / 2;
    // In order, in one process: hashed as applied, the file is not read back. Out of
    // order, or across a restart: read back. Each path accepts the right file...
    for (case, order) in [("in order", [0, 1]), ("out of order", [1, 0])] {
        let dir = tempfile::tempdir().unwrap();
        let store = with_old_data(dir.path());
        for (i, part) in order.into_iter().enumerate() {
            let (offset, data) = if part == 0 {
                (0, &bytes[..half])
            } else {
                (half as u64, &bytes[half..])
            };
            store
                .apply_restore_chunk(pos(4 + i as u64), "rid", offset, data)
                .unwrap();
        }
        let meta = commit_restore(&store, 6, "rid", &bytes).unwrap().unwrap();
        assert_eq!(meta.timeline().unwrap().id, "t2", "{case}");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 40, "{case}");
    }
    // ...and refuses a commit that announces another file.
    for restart in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = with_old_data(dir.path());
        store.apply_restore_chunk(pos(4), "rid", 0, &bytes).unwrap();
        if restart {
            drop(store);
            store = open(dir.path());
        }
        let mut other = bytes.clone();
        other[100] ^= 1;
        let refused = commit_restore(&store, 5, "rid", &other).unwrap();
        assert!(
            refused.unwrap_err().contains("sha256"),
            "restart: {restart}"
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 1);
    }
    // The leader's staging file, seeded with the upload: the chunks' bytes are already
    // there and are not written again.
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    let upload = dir.path().join("upload");
    std::fs::write(&upload, &bytes).unwrap();
    assert!(store.seed_restore_staging("rid", &upload));
    store
        .apply_restore_chunk(pos(4), "rid", 0, &bytes[..half])
        .unwrap();
    store
        .apply_restore_chunk(pos(5), "rid", half as u64, &bytes[half..])
        .unwrap();
    commit_restore(&store, 6, "rid", &bytes).unwrap().unwrap();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM r"), 40);
}

#[test]
fn a_damaged_staging_file_stops_the_node_instead_of_refusing_differently() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    let bytes = source_file(dir.path(), 8);
    store.apply_restore_chunk(pos(4), "rid", 0, &bytes).unwrap();
    let staging = dir.path().join(&staging_files(dir.path())[0]);
    let mut damaged = std::fs::read(&staging).unwrap();
    damaged[200] ^= 0xff;
    std::fs::write(&staging, &damaged).unwrap();
    // What a disk that loses synced bytes does shows after a restart (before one, the page
    // cache still holds what was written): the commit then reads the file back.
    drop(store);
    let store = open(dir.path());
    let err = commit_restore(&store, 5, "rid", &bytes).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // Nothing changed: the old data, the old timeline, the commit not applied.
    let meta = store.meta().unwrap();
    assert_eq!(meta.applied.map(|p| p.index), Some(4));
    assert_eq!(meta.timeline().unwrap().id, "t1");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM old"), 1);
    // A snapshot refuses to carry the damaged bytes on, too.
    let err = store
        .snapshot_to(&dir.path().join("snap.sqlite"))
        .unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}
