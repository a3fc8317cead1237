//! Tests of `engine/meta.rs`: the meta table, read on the writer or as committed.

use super::*;
use crate::engine::meta::{write_applied, MetaChange};
use crate::engine::RESTORE_TABLE;

#[test]
fn data_changed_moves_with_writes_and_timelines_not_with_blanks() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    let meta = store.meta().unwrap();
    assert_eq!(meta.applied.map(|p| p.index), Some(3));
    assert_eq!(meta.data_changed_index(), 2);
    store.apply_membership(pos(4), Some("{}")).unwrap();
    assert_eq!(store.meta().unwrap().data_changed_index(), 2);
}

/// `/status` reads the committed meta while an entry is being applied: with the writer held
/// inside an open transaction that has changed the meta (what a long apply looks like), the
/// committed reads answer at once and show the last commit, not the change in progress.
/// Before the read moved off the writer, this waited for the writer until the timeout.
#[test]
fn committed_reads_answer_while_the_writer_is_held_and_see_only_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = with_old_data(dir.path());
    store.apply_restore_chunk(pos(4), "r1", 0, b"abcd").unwrap();
    let store = &store;
    let writer = store.writer();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    write_applied(&writer, pos(9), MetaChange::Data).unwrap();
    writer
        .execute_batch(&format!("DELETE FROM {RESTORE_TABLE}"))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.send((store.committed_meta(), store.committed_pending_restore()));
        });
        // Generous: only a read that waits for the writer comes near it.
        let got = rx.recv_timeout(std::time::Duration::from_secs(30));
        writer.execute_batch("ROLLBACK").unwrap();
        drop(writer);
        let (meta, pending) = got.expect("the committed reads waited for the writer");
        let meta = meta.unwrap();
        assert_eq!(meta.applied, Some(pos(4)));
        assert_eq!(meta.data_changed, Some(pos(2)));
        assert_eq!(meta.timeline().map(|t| t.id.as_str()), Some("t1"));
        assert_eq!(pending.unwrap(), Some(("r1".to_string(), 1, 4)));
    });
    // The same answers as on the writer once nothing is in flight.
    assert_eq!(store.committed_meta().unwrap(), store.meta().unwrap());
    assert_eq!(
        store.committed_pending_restore().unwrap(),
        store.pending_restore().unwrap()
    );
}

/// A committed read never sees the file a swap replaced: the pooled reader it used before
/// is dropped by the swap, and while a swap holds (or waits for) the gate the read is
/// answered on the writer instead of queueing behind the swap's wait.
#[test]
fn committed_reads_follow_a_swapped_in_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    a.apply_write(pos(5), T, &[req(&["CREATE TABLE t(v)"], false)])
        .unwrap();
    let snap = dir.path().join("snap.sqlite");
    a.snapshot_to(&snap).unwrap();

    let other = tempfile::tempdir().unwrap();
    let b = open(other.path());
    b.apply_write(pos(1), T, &[req(&["CREATE TABLE old(v)"], false)])
        .unwrap();
    // Leaves a reader of the old file in the pool.
    assert_eq!(b.committed_meta().unwrap().applied, Some(pos(1)));
    b.install_from(&snap).unwrap();
    assert_eq!(b.committed_meta().unwrap().applied, Some(pos(5)));

    let b = &b;
    let gate = b.swap_gate.write().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.send(b.committed_meta().map(|m| m.applied));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(30));
        drop(gate);
        let applied = got.expect("the committed read waited for the swap gate");
        assert_eq!(applied.unwrap(), Some(pos(5)));
    });
}
