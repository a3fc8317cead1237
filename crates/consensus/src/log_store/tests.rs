use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::types::{Command, CommittedLeaderId, EntryPayload, Membership, NodeAddr};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId { term, node_id: 1 }, index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn normal(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::Write {
            requests: Vec::new(),
            at_unix_ms: 1_700_000_000_000 + index as i64,
            seed: index,
        }),
    }
}

fn membership(term: u64, index: u64) -> Entry {
    let nodes = BTreeMap::from([(
        1,
        NodeAddr {
            raft_addr: "127.0.0.1:7001".into(),
            api_addr: "127.0.0.1:8001".into(),
        },
    )]);
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(
            Membership::new(vec![BTreeSet::from([1])], nodes).unwrap(),
        ),
    }
}

/// Appends through the storage API and waits for the flush callback.
async fn append(store: &mut LogStore, entries: Vec<Entry>) {
    use openraft::storage::RaftLogStorageExt;
    store.blocking_append(entries).await.unwrap();
}

async fn all_entries(store: &mut LogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.unwrap()
}

#[tokio::test]
async fn append_and_read_back_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let raft_dir = dir.path().join("raft");
    let written = vec![blank(1, 1), membership(1, 2), normal(1, 3), normal(2, 4)];
    {
        let mut store = LogStore::open(&raft_dir).unwrap();
        append(&mut store, written.clone()).await;
        assert_eq!(all_entries(&mut store).await, written);
        assert_eq!(
            store.try_get_log_entries(2..4).await.unwrap(),
            written[1..3].to_vec()
        );
        assert_eq!(
            store.try_get_log_entries(3..=4).await.unwrap(),
            written[2..4].to_vec()
        );
        // Empty and out-of-range requests are empty, not errors.
        assert!(store.try_get_log_entries(3..3).await.unwrap().is_empty());
        assert!(store.try_get_log_entries(9..).await.unwrap().is_empty());
        assert!(store
            .try_get_log_entries((Bound::Excluded(u64::MAX), Bound::Unbounded))
            .await
            .unwrap()
            .is_empty());
    }
    let mut store = LogStore::open(&raft_dir).unwrap();
    assert_eq!(all_entries(&mut store).await, written);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 4)));
    assert_eq!(state.last_purged_log_id, None);
    // The reader shares the store.
    let mut reader = store.get_log_reader().await;
    append(&mut store, vec![normal(2, 5)]).await;
    assert_eq!(
        reader.try_get_log_entries(5..6).await.unwrap(),
        vec![normal(2, 5)]
    );
}

#[tokio::test]
async fn vote_and_committed_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(3, 2);
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), None);
        assert_eq!(store.read_committed().await.unwrap(), None);
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(3, 7))).await.unwrap();
    }
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 7)));
    store.save_committed(None).await.unwrap();
    assert_eq!(store.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn purge_and_log_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    let empty = store.get_log_state().await.unwrap();
    assert_eq!((empty.last_purged_log_id, empty.last_log_id), (None, None));

    append(&mut store, (1..=10).map(|i| normal(1, i)).collect()).await;
    store.purge(log_id(1, 4)).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));
    let left = all_entries(&mut store).await;
    assert_eq!(left.first().map(|e| e.log_id), Some(log_id(1, 5)));
    assert_eq!(left.len(), 6);

    // Purging everything leaves last_log_id at the purge point, also after a reopen.
    store.purge(log_id(1, 10)).await.unwrap();
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert!(all_entries(&mut store).await.is_empty());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));

    // The log continues after the purge point.
    append(&mut store, vec![normal(2, 11)]).await;
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
    assert_eq!(state.last_log_id, Some(log_id(2, 11)));
}

#[tokio::test]
async fn truncate_deletes_from_index_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, (1..=10).map(|i| normal(1, i)).collect()).await;
    store.truncate_after(Some(log_id(1, 6))).await.unwrap();
    let left = all_entries(&mut store).await;
    assert_eq!(
        left.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 6))
    );
    // A conflicting suffix is replaced.
    append(&mut store, vec![normal(2, 7), normal(2, 8)]).await;
    assert_eq!(
        store.try_get_log_entries(6..).await.unwrap(),
        vec![normal(1, 6), normal(2, 7), normal(2, 8)]
    );
    store.truncate_after(None).await.unwrap();
    assert!(all_entries(&mut store).await.is_empty());
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, None);
}

#[tokio::test]
async fn probe_missing_and_populated() {
    let dir = tempfile::tempdir().unwrap();
    let raft_dir = dir.path().join("raft");

    // Absent: nothing is created.
    assert_eq!(probe(&raft_dir).unwrap(), LogProbe::default());
    assert!(!raft_dir.exists());
    std::fs::create_dir(&raft_dir).unwrap();
    assert_eq!(probe(&raft_dir).unwrap(), LogProbe::default());
    assert!(!raft_dir.join(LOG_FILE_NAME).exists());

    let vote = Vote::new_committed(4, 1);
    {
        let mut store = LogStore::open(&raft_dir).unwrap();
        // The probe reads a private copy, so a log in use can be probed (by `doctor`).
        assert!(probe(&raft_dir).unwrap().exists);
        append(&mut store, (1..=5).map(|i| normal(4, i)).collect()).await;
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(4, 5))).await.unwrap();
        store.purge(log_id(4, 2)).await.unwrap();
    }
    assert_eq!(
        probe(&raft_dir).unwrap(),
        LogProbe {
            exists: true,
            vote: Some(vote),
            last_purged: Some(log_id(4, 2)),
            last_log_id: Some(log_id(4, 5)),
            committed: Some(log_id(4, 5)),
        }
    );
    // Probing left the log usable.
    let mut store = LogStore::open(&raft_dir).unwrap();
    store.purge(log_id(4, 5)).await.unwrap();
    drop(store);
    let p = probe(&raft_dir).unwrap();
    assert_eq!(p.last_log_id, Some(log_id(4, 5)));
    assert_eq!(p.last_purged, Some(log_id(4, 5)));

    // A freshly created log exists and is empty.
    let other = dir.path().join("other");
    drop(LogStore::open(&other).unwrap());
    assert_eq!(
        probe(&other).unwrap(),
        LogProbe {
            exists: true,
            ..LogProbe::default()
        }
    );
}

#[tokio::test]
async fn garbage_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE_NAME);
    // Deterministic pseudo-random bytes (xorshift), several pages' worth.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, &garbage).unwrap();

    let err = LogStore::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    let err = probe(dir.path()).unwrap_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
    // Neither call replaced the file.
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[tokio::test]
async fn damaged_file_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        for i in 1..=100 {
            append(&mut store, vec![normal(1, i)]).await;
        }
        store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
    }
    let path = dir.path().join(LOG_FILE_NAME);
    let pristine = std::fs::read(&path).unwrap();
    // Flip one byte at a time across the file: each open either fails with an error naming the
    // file or succeeds, and what it then reads is entries or errors, never a panic.
    let mut failed = 0;
    for offset in (0..pristine.len()).step_by(509) {
        let mut damaged = pristine.clone();
        damaged[offset] ^= 0x5A;
        std::fs::write(&path, &damaged).unwrap();
        match LogStore::open(dir.path()) {
            Err(e) => {
                failed += 1;
                assert!(e.to_string().contains(LOG_FILE_NAME), "{e}");
            }
            Ok(mut store) => {
                let _ = store.try_get_log_entries(..).await;
                let _ = store.get_log_state().await;
                let _ = store.read_vote().await;
            }
        }
        let _ = probe(dir.path());
    }
    assert!(failed > 0, "no flip was detected");
}

fn chunk(term: u64, index: u64, len: usize) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::RestoreChunk {
            restore_id: format!("r{term}"),
            offset: index * len as u64,
            data: (0..len).map(|i| (i as u64 ^ index ^ term) as u8).collect(),
        }),
    }
}

fn segment_count(raft_dir: &Path) -> usize {
    std::fs::read_dir(raft_dir.join(crate::log_blobs::BLOB_DIR_NAME))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn no_encoded_entry_starts_with_the_spill_marker() {
    let mut bytes = SPILL_MAGIC.to_vec();
    bytes.extend_from_slice(&encode("entry", &normal(1, 1)).unwrap());
    assert!(postcard::from_bytes::<Entry>(&bytes).is_err());
    for e in [
        blank(u64::MAX, u64::MAX),
        normal(u64::MAX, 1),
        chunk(1, 1, 10),
    ] {
        assert!(!encode("entry", &e).unwrap().starts_with(&SPILL_MAGIC));
    }
}

#[tokio::test]
async fn large_entries_live_in_segments_and_read_back_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let raft_dir = dir.path().join("raft");
    let big = SPILL_BYTES + 1000;
    let written = vec![
        normal(1, 1),
        chunk(1, 2, big),
        chunk(1, 3, big),
        normal(1, 4),
        chunk(1, 5, big),
    ];
    {
        let mut store = LogStore::open(&raft_dir).unwrap();
        append(&mut store, written[..2].to_vec()).await;
        append(&mut store, written[2..].to_vec()).await;
        assert_eq!(all_entries(&mut store).await, written);
        // redb holds a reference, not the bytes.
        assert!(std::fs::metadata(store.path()).unwrap().len() < 2 * big as u64);
        assert_eq!(segment_count(&raft_dir), 1);
    }
    // After a restart the entries come from the segment (nothing in memory).
    let mut store = LogStore::open(&raft_dir).unwrap();
    assert_eq!(all_entries(&mut store).await, written);
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 5))
    );
    assert_eq!(probe(&raft_dir).unwrap().last_log_id, Some(log_id(1, 5)));

    // A conflicting suffix replaces spilled entries, also in memory.
    store.truncate_after(Some(log_id(1, 2))).await.unwrap();
    append(&mut store, vec![chunk(2, 3, big), normal(2, 4)]).await;
    let expect = vec![
        normal(1, 1),
        chunk(1, 2, big),
        chunk(2, 3, big),
        normal(2, 4),
    ];
    assert_eq!(all_entries(&mut store).await, expect);
    drop(store);
    let mut store = LogStore::open(&raft_dir).unwrap();
    assert_eq!(all_entries(&mut store).await, expect);

    // Purging everything deletes the segments no entry points into, at once or at the
    // next open.
    store.purge(log_id(2, 4)).await.unwrap();
    assert!(all_entries(&mut store).await.is_empty());
    drop(store);
    let mut store = LogStore::open(&raft_dir).unwrap();
    assert_eq!(segment_count(&raft_dir), 0);
    append(&mut store, vec![chunk(3, 5, big)]).await;
    assert_eq!(all_entries(&mut store).await, vec![chunk(3, 5, big)]);
}

#[tokio::test]
async fn a_damaged_or_missing_segment_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let raft_dir = dir.path().join("raft");
    {
        let mut store = LogStore::open(&raft_dir).unwrap();
        append(&mut store, vec![chunk(1, 1, SPILL_BYTES), normal(1, 2)]).await;
    }
    let segments: Vec<PathBuf> = std::fs::read_dir(raft_dir.join(crate::log_blobs::BLOB_DIR_NAME))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(segments.len(), 1);
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    bytes[SPILL_BYTES / 2] ^= 0x10;
    std::fs::write(&segments[0], &bytes).unwrap();
    let mut store = LogStore::open(&raft_dir).unwrap();
    let err = store.try_get_log_entries(1..2).await.unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert_eq!(
        store.try_get_log_entries(2..3).await.unwrap(),
        vec![normal(1, 2)]
    );
    drop(store);
    assert!(
        probe(&raft_dir).is_ok(),
        "a damaged record is found when read"
    );
    std::fs::remove_file(&segments[0]).unwrap();
    // A missing segment is found before the node starts (start-up classification).
    let err = probe(&raft_dir).unwrap_err();
    assert!(
        err.contains("missing") && err.contains("recovery mode"),
        "{err}"
    );
    let mut store = LogStore::open(&raft_dir).unwrap();
    let err = store.try_get_log_entries(..).await.unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // The log's state does not need the segment.
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 2))
    );
}

#[tokio::test]
async fn corrupt_record_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&mut store, vec![normal(1, 1)]).await;
    // Write bytes that are not an entry, and an entry under the wrong index.
    let inner = Arc::clone(&store.inner);
    let txn = begin_durable_write(&inner.db).unwrap();
    {
        let mut table = txn.open_table(ENTRIES).unwrap();
        table.insert(2, [0xFFu8; 3].as_slice()).unwrap();
        let wrong = encode("entry", &normal(1, 9)).unwrap();
        table.insert(3, wrong.as_slice()).unwrap();
    }
    txn.commit().unwrap();

    let err = store.try_get_log_entries(2..3).await.unwrap_err();
    assert!(err.to_string().contains("raft.redb"), "{err}");
    let err = store.try_get_log_entries(3..4).await.unwrap_err();
    assert!(err.to_string().contains("index 3"), "{err}");
    assert!(store.get_log_state().await.is_err());
    assert_eq!(
        store.try_get_log_entries(1..2).await.unwrap(),
        vec![normal(1, 1)]
    );
}

#[tokio::test]
async fn archive_hold_keeps_purged_entries_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let raft_dir = dir.path().join("raft");
    let hold = ArchiveHold::with_max_held(1_000);
    {
        let mut store = LogStore::open(&raft_dir)
            .unwrap()
            .with_archive_hold(hold.clone());
        append(&mut store, (1..=10).map(|i| normal(1, i)).collect()).await;
        hold.hold_after(4);
        store.purge(log_id(1, 8)).await.unwrap();

        // openraft sees exactly the purge it asked for...
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 8)));
        assert_eq!(state.last_log_id, Some(log_id(1, 10)));
        // ...while the archive still reads what it does not hold yet.
        let (first, entries) = store.read_for_archive(5, 10).await.unwrap();
        assert_eq!(first, Some(5));
        assert_eq!(entries, (5..=10).map(|i| normal(1, i)).collect::<Vec<_>>());
    }
    {
        // The kept entries survive a restart; a purge of everything leaves openraft's view sane.
        let mut store = LogStore::open(&raft_dir)
            .unwrap()
            .with_archive_hold(hold.clone());
        store.purge(log_id(1, 10)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
        assert_eq!(state.last_log_id, Some(log_id(1, 10)));
        let (first, entries) = store.read_for_archive(5, 10).await.unwrap();
        assert_eq!((first, entries.len()), (Some(5), 6));

        store.release_archived(7).await.unwrap();
        let (first, _) = store.read_for_archive(8, 10).await.unwrap();
        assert_eq!(first, Some(8));
        // Release never goes past the purge point openraft set.
        append(&mut store, (11..=12).map(|i| normal(1, i)).collect()).await;
        store.release_archived(100).await.unwrap();
        let (first, entries) = store.read_for_archive(11, 12).await.unwrap();
        assert_eq!((first, entries.len()), (Some(11), 2));
    }
}

#[tokio::test]
async fn a_full_archive_hold_lets_the_purge_through() {
    let dir = tempfile::tempdir().unwrap();
    let hold = ArchiveHold::with_max_held(3);
    let mut store = LogStore::open(&dir.path().join("raft"))
        .unwrap()
        .with_archive_hold(hold.clone());
    append(&mut store, (1..=10).map(|i| normal(1, i)).collect()).await;
    hold.hold_after(2);
    store.purge(log_id(1, 8)).await.unwrap();
    assert_eq!(hold.forced_purges(), 1);
    let (first, _) = store.read_for_archive(3, 10).await.unwrap();
    assert_eq!(first, Some(9));
}
