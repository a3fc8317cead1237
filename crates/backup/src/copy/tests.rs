//! The copy engine between two `file://` destinations in temp dirs: real backups of small
//! SQLite files, real archive objects.

use std::path::{Path, PathBuf};

use object_store::ObjectStoreExt;
use raftlite_store::TimelineRecord;

use super::*;
use crate::archive::{
    claim_segment, claim_timeline, encode_segment, list_archive, put_segment, record_gap,
    take_lease, verify_archive_timeline, ArchivedEntry, ArchivedKind, RestoreLease, SegmentDraft,
};
use crate::manifest::{Compression, ParentRef, TimelineRef, INCREMENTAL_FORMAT_VERSION};
use crate::{create_backup, verify_backup, BackupMeta, CreateOptions};

const CLUSTER: &str = "c1";
const TIMELINE: &str = "0123456789abcdef0123456789abcdef";

struct Sides {
    _dirs: tempfile::TempDir,
    from_dir: PathBuf,
    to_dir: PathBuf,
    from: Destination,
    to: Destination,
}

fn sides() -> Sides {
    let dirs = tempfile::tempdir().unwrap();
    let from_dir = dirs.path().join("primary");
    let to_dir = dirs.path().join("copy");
    let from = Destination::parse(&format!("file://{}", from_dir.display())).unwrap();
    let to = Destination::parse(&format!("file://{}", to_dir.display())).unwrap();
    Sides {
        _dirs: dirs,
        from_dir,
        to_dir,
        from,
        to,
    }
}

fn make_db(path: &Path, rows: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT); BEGIN;")
        .unwrap();
    for i in 0..rows {
        conn.execute("INSERT INTO t(name) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

fn meta(log_index: u64) -> BackupMeta {
    BackupMeta {
        cluster_id: CLUSTER.into(),
        node_id: 1,
        timeline: TimelineRef {
            id: TIMELINE.into(),
            counter: 1,
        },
        log_index,
        log_term: 2,
        data_changed_index: Some(log_index),
        leader_term: None,
        slot_unix_ms: None,
    }
}

/// `n` full backups of growing databases in `dest`, oldest first.
async fn backups(dest: &Destination, n: u64) -> Vec<BackupId> {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for i in 1..=n {
        let db = dir.path().join(format!("db{i}.sqlite"));
        make_db(&db, 10 * i as usize);
        let m = create_backup(&db, meta(i * 10), dest, &CreateOptions::default())
            .await
            .unwrap();
        ids.push(m.id().unwrap());
    }
    ids
}

fn set_file(dir: &Path, id: &BackupId, file: &str) -> PathBuf {
    dir.join(id.cluster_id())
        .join("backups")
        .join(id.set())
        .join(file)
}

#[tokio::test]
async fn copies_every_set_byte_for_byte_and_a_second_run_moves_nothing() {
    let s = sides();
    let ids = backups(&s.from, 3).await;
    let report = copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    let copied: Vec<&BackupId> = report.copied.iter().map(|c| &c.id).collect();
    assert_eq!(copied, ids.iter().collect::<Vec<_>>(), "oldest first");
    assert!(report.remaining.is_empty());
    for id in &ids {
        for file in [MANIFEST_FILE, crate::DATA_FILE] {
            assert_eq!(
                std::fs::read(set_file(&s.from_dir, id, file)).unwrap(),
                std::fs::read(set_file(&s.to_dir, id, file)).unwrap(),
                "{id}/{file}"
            );
        }
        verify_backup(&s.to, id, None).await.unwrap();
    }
    let listed = list_backups(&s.to).await.unwrap();
    assert_eq!(listed.backups.len(), 3);
    assert!(listed.incomplete.is_empty() && listed.warnings.is_empty());

    // The source records each copy; listings show it and name the destination.
    let source = list_backups(&s.from).await.unwrap();
    assert_eq!(source.backups.len(), 3, "a marker is not a set of its own");
    assert!(source.incomplete.is_empty());
    let key = copy_key(&s.to);
    for id in &ids {
        assert_eq!(source.copies[id], BTreeSet::from([key.clone()]));
    }
    let labels = copy_labels(&s.from, &source).await;
    assert_eq!(labels[&key], s.to.to_string());
    // A marker beside the set's files changes nothing for verify.
    verify_backup(&s.from, &ids[0], None).await.unwrap();

    let again = copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    assert!(again.copied.is_empty() && again.is_complete(), "{again:?}");
    assert_eq!(again.present, 3);
    assert_eq!(again.archive, Some(ArchiveCopyReport::default()));
    let pending = pending_copies(&s.from, &s.to, &CopySelection::default(), None)
        .await
        .unwrap();
    assert_eq!(pending, Pending::default());
}

#[tokio::test]
async fn a_damaged_source_never_lands_as_a_complete_set() {
    let s = sides();
    let ids = backups(&s.from, 3).await;
    // One set with a flipped byte (same size), one truncated.
    let flipped = set_file(&s.from_dir, &ids[1], crate::DATA_FILE);
    let mut bytes = std::fs::read(&flipped).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&flipped, &bytes).unwrap();
    let truncated = set_file(&s.from_dir, &ids[2], crate::DATA_FILE);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();

    let report = copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    assert_eq!(report.copied.len(), 1, "{report:?}");
    assert_eq!(report.copied[0].id, ids[0]);
    let failed: Vec<&str> = report.failed.iter().map(|f| f.object.as_str()).collect();
    assert_eq!(failed, [ids[1].to_string(), ids[2].to_string()]);
    assert!(
        report.failed[0].reason.contains("sha256") && report.failed[0].reason.contains("damaged"),
        "{:?}",
        report.failed[0]
    );
    assert!(
        report.failed[1].reason.contains("bytes"),
        "{:?}",
        report.failed[1]
    );
    assert_eq!(report.remaining.len(), 2);
    for id in &ids[1..] {
        // Nothing of the refused sets: no manifest, and no data object either.
        assert!(!set_file(&s.to_dir, id, MANIFEST_FILE).exists());
        assert!(!set_file(&s.to_dir, id, crate::DATA_FILE).exists());
    }
    let listed = list_backups(&s.to).await.unwrap();
    assert_eq!(listed.backups.len(), 1);
    // No marker for what was not copied: the next pass tries again.
    let source = list_backups(&s.from).await.unwrap();
    assert!(!source.copies.contains_key(&ids[1]));
    let pending = pending_copies(&s.from, &s.to, &CopySelection::default(), None)
        .await
        .unwrap();
    assert_eq!(pending.objects, 2);
}

#[tokio::test]
async fn a_set_the_copy_deleted_is_copied_again_only_when_asked() {
    let s = sides();
    let ids = backups(&s.from, 2).await;
    copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    // The copy's retention deleted the older set.
    std::fs::remove_dir_all(set_file(&s.to_dir, &ids[0], "")).unwrap();

    let report = copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    assert!(report.copied.is_empty(), "{report:?}");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].id, ids[0]);
    assert!(report.skipped[0].reason.contains("--id"), "{report:?}");

    let by_id = CopySelection {
        ids: vec![ids[0].clone()],
        archive: false,
        ..CopySelection::default()
    };
    let report = copy_destination(&s.from, &s.to, &by_id).await.unwrap();
    assert_eq!(report.copied.len(), 1, "{report:?}");
    assert_eq!(report.archive, None);

    std::fs::remove_dir_all(set_file(&s.to_dir, &ids[0], "")).unwrap();
    let recopy = CopySelection {
        recopy: true,
        ..CopySelection::default()
    };
    let report = copy_destination(&s.from, &s.to, &recopy).await.unwrap();
    assert_eq!(report.copied.len(), 1, "{report:?}");

    // An id the source does not have is a failure, not an error.
    let missing = BackupId::new(CLUSTER, "20200101T000000.000Z-1-1").unwrap();
    let report = copy_destination(
        &s.from,
        &s.to,
        &CopySelection {
            ids: vec![missing.clone()],
            ..CopySelection::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].object, missing.to_string());
    // A selection naming another cluster's id is refused up front.
    let err = copy_destination(
        &s.from,
        &s.to,
        &CopySelection {
            ids: vec![missing],
            cluster: Some("other".into()),
            ..CopySelection::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not of cluster"), "{err}");
    let err = copy_destination(&s.from, &s.from, &CopySelection::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("same destination"), "{err}");
}

/// Puts a set made by hand: `object` as its data, with a manifest that describes it.
async fn put_set(dest: &Destination, manifest: &Manifest, object: &[u8]) {
    let id = manifest.id().unwrap();
    let dir = dest.set_dir(&id);
    dest.store()
        .put(
            &dir.clone().join(manifest.object_name()),
            PutPayload::from(object.to_vec()),
        )
        .await
        .unwrap();
    dest.store()
        .put(
            &dir.join(MANIFEST_FILE),
            PutPayload::from(serde_json::to_vec_pretty(manifest).unwrap()),
        )
        .await
        .unwrap();
}

fn hand_made(created: i64, object: &[u8], parent: Option<&Manifest>) -> Manifest {
    let digest = |n: i64| format!("{n:064x}");
    Manifest {
        format_version: INCREMENTAL_FORMAT_VERSION,
        cluster_id: CLUSTER.into(),
        node_id: 1,
        timeline: TimelineRef {
            id: TIMELINE.into(),
            counter: 1,
        },
        log_index: created as u64,
        log_term: 1,
        created_at: rfc3339(created),
        created_at_unix_ms: created,
        sqlite_page_size: 4096,
        sqlite_page_count: 1,
        plain_sha256: digest(created),
        plain_size: 4096,
        stored_sha256: raftlite_store::hex::encode(&sha2::Sha256::digest(object)),
        stored_size: object.len() as u64,
        compression: Compression {
            algorithm: "zstd".into(),
            level: 3,
        },
        encryption: None,
        raftlite_version: "test".into(),
        data_changed_index: None,
        leader_term: None,
        slot_unix_ms: None,
        kind: if parent.is_some() {
            BackupKind::Incremental
        } else {
            BackupKind::Full
        },
        parent: parent.map(|p| ParentRef {
            id: p.id().unwrap(),
            pages_digest: p.pages_digest.clone().unwrap(),
        }),
        pages_digest: Some(digest(created + 1)),
        chain_depth: parent.map_or(0, |p| p.chain_depth + 1),
        chain_delta_bytes: 0,
    }
}

#[tokio::test]
async fn an_incremental_brings_the_parents_the_copy_lacks() {
    let s = sides();
    let full = hand_made(1_700_000_000_000, b"full backup bytes", None);
    let first = hand_made(1_700_000_100_000, b"first page frames", Some(&full));
    let second = hand_made(1_700_000_200_000, b"second page frames", Some(&first));
    for (m, object) in [
        (&second, &b"second page frames"[..]),
        (&full, b"full backup bytes"),
        (&first, b"first page frames"),
    ] {
        put_set(&s.from, m, object).await;
    }
    let only_the_newest = CopySelection {
        ids: vec![second.id().unwrap()],
        archive: false,
        ..CopySelection::default()
    };
    let report = copy_destination(&s.from, &s.to, &only_the_newest)
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    let copied: Vec<(BackupId, BackupKind)> = report
        .copied
        .iter()
        .map(|c| (c.id.clone(), c.kind))
        .collect();
    assert_eq!(
        copied,
        [
            (full.id().unwrap(), BackupKind::Full),
            (first.id().unwrap(), BackupKind::Incremental),
            (second.id().unwrap(), BackupKind::Incremental),
        ]
    );
    assert!(set_file(&s.to_dir, &second.id().unwrap(), crate::PAGES_FILE).exists());

    // A chain whose parent is gone everywhere is not copied: it could not be restored.
    let orphan = hand_made(1_700_000_300_000, b"orphan frames", Some(&full));
    let mut orphan = orphan;
    orphan.parent = Some(ParentRef {
        id: BackupId::new(CLUSTER, "20231114T221320.000Z-1-5").unwrap(),
        pages_digest: "0".repeat(64),
    });
    put_set(&s.from, &orphan, b"orphan frames").await;
    let report = copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    assert!(report.copied.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1);
    assert!(report.failed[0].reason.contains("parent"), "{report:?}");
    assert!(!set_file(&s.to_dir, &orphan.id().unwrap(), MANIFEST_FILE).exists());
}

fn entries(first: u64, last: u64) -> Vec<ArchivedEntry> {
    (first..=last)
        .map(|index| ArchivedEntry {
            index,
            term: 2,
            at_unix_ms: Some(1_700_000_000_000 + index as i64),
            kind: ArchivedKind::Command,
            payload: format!("INSERT INTO t VALUES ({index})").into_bytes(),
        })
        .collect()
}

/// Segments of 10 entries `from..` in `dest`, each after its claim, chained to `prev`.
async fn segments(dest: &Destination, first: u64, n: u64, mut prev: Option<String>) -> String {
    let timeline = TimelineRef {
        id: TIMELINE.into(),
        counter: 1,
    };
    for i in 0..n {
        let start = first + i * 10;
        let claim = SegmentClaim {
            first_index: start,
            last_index: start + 9,
            node_id: 1,
            claimed_at_unix_ms: 1,
        };
        claim_segment(dest, CLUSTER, TIMELINE, &claim)
            .await
            .unwrap();
        let entries = entries(start, start + 9);
        let draft = SegmentDraft {
            cluster_id: CLUSTER,
            timeline: &timeline,
            node_id: 1,
            entries: &entries,
            prev_segment_sha256: prev.take(),
        };
        let segment = encode_segment(dest, &draft, None, 3).unwrap();
        put_segment(dest, &segment).await.unwrap();
        prev = Some(segment.object_sha256);
    }
    prev.unwrap_or_default()
}

fn archive_file(dir: &Path, first: u64, last: u64) -> PathBuf {
    dir.join(CLUSTER)
        .join("archive")
        .join(TIMELINE)
        .join(format!("{first:020}-{last:020}.seg"))
}

#[tokio::test]
async fn the_archive_is_copied_checked_in_order_and_not_past_a_damaged_segment() {
    let s = sides();
    let record = TimelineRecord {
        id: TIMELINE.into(),
        counter: 1,
        parent: None,
        parent_index: None,
        reason: "bootstrap".into(),
        at_unix_ms: 1,
    };
    claim_timeline(&s.from, CLUSTER, &record).await.unwrap();
    let last = segments(&s.from, 1, 3, None).await;
    let gap = GapRecord {
        from_index: 31,
        to_index: 40,
        reason: "test".into(),
        node_id: 1,
        recorded_at_unix_ms: 1,
    };
    record_gap(&s.from, CLUSTER, TIMELINE, &gap).await.unwrap();
    segments(&s.from, 41, 1, None).await;
    let lease = RestoreLease {
        base: format!("{CLUSTER}/x"),
        from_index: 1,
        to_index: 50,
        taken_at_unix_ms: 1,
        expires_at_unix_ms: i64::MAX,
        holder: "test".into(),
    };
    take_lease(&s.from, CLUSTER, TIMELINE, &lease)
        .await
        .unwrap();

    let report = copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    let archive = report.archive.clone().unwrap();
    // A timeline record, 4 claims, 4 segments and a gap record; not the lease.
    assert_eq!((archive.copied, archive.segments), (10, 4), "{archive:?}");
    let leases = s
        .to_dir
        .join(CLUSTER)
        .join("archive")
        .join(TIMELINE)
        .join("leases");
    assert!(!leases.exists());
    let chain = verify_archive_timeline(&s.to, CLUSTER, TIMELINE, None)
        .await
        .unwrap();
    assert!(chain.problems.is_empty(), "{:?}", chain.problems);
    assert_eq!(chain.segments_checked, 4);
    let coverage = list_archive(&s.to, CLUSTER).await.unwrap();
    assert_eq!(coverage.timelines[0].gaps, [(31, 40)]);
    assert_eq!(
        crate::archive::timeline_history(&s.to, CLUSTER)
            .await
            .unwrap(),
        [record]
    );

    // More segments; the first new one damaged at the source: it and what follows wait.
    segments(&s.from, 51, 2, None).await;
    let damaged = archive_file(&s.from_dir, 51, 60);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let end = bytes.len() - 1;
    bytes[end] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    let report = copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0]
        .object
        .ends_with("00000000000000000051-00000000000000000060.seg"));
    assert!(report.failed[0].reason.contains("sha256"), "{report:?}");
    assert!(!archive_file(&s.to_dir, 51, 60).exists());
    assert!(
        !archive_file(&s.to_dir, 61, 70).exists(),
        "no hole in the copy"
    );
    // The segment after it and its claim are still to copy.
    assert_eq!(report.remaining.len(), 3, "{:?}", report.remaining);

    // The copy's retention removed its oldest segment and claim: they are not copied again.
    std::fs::remove_file(archive_file(&s.to_dir, 1, 10)).unwrap();
    let claim = s
        .to_dir
        .join(CLUSTER)
        .join("archive")
        .join(TIMELINE)
        .join("claims");
    std::fs::remove_file(claim.join(format!("{:020}.json", 1))).unwrap();
    let report = copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    assert_eq!(report.archive.unwrap().pruned_in_copy, 2);
    assert!(!archive_file(&s.to_dir, 1, 10).exists());
    let _ = last;
}

#[tokio::test]
async fn retention_deletes_a_set_with_its_markers_and_a_lone_marker_is_incomplete() {
    let s = sides();
    let ids = backups(&s.from, 2).await;
    copy_destination(&s.from, &s.to, &CopySelection::default())
        .await
        .unwrap();
    let policy = crate::RetentionPolicy {
        keep_last: Some(1),
        ..crate::RetentionPolicy::default()
    };
    let report = crate::prune(&s.from, None, &policy, now_unix_ms(), false)
        .await
        .unwrap();
    assert_eq!(report.deleted, [ids[0].clone()]);
    assert!(report.failed.is_empty(), "{report:?}");
    // The whole folder went, the marker with it.
    assert!(!set_file(&s.from_dir, &ids[0], COPIES_DIR).exists());
    let listed = list_backups(&s.from).await.unwrap();
    assert!(listed.incomplete.is_empty(), "{:?}", listed.incomplete);
    assert_eq!(listed.copies.len(), 1);

    // A marker left behind by an interrupted deletion makes an incomplete set, which
    // retention cleans up like any other once it is old.
    let lone = BackupId::new(CLUSTER, "20200101T000000.000Z-1-1").unwrap();
    write_marker(&s.from, &s.to, &lone).await.unwrap();
    let listed = list_backups(&s.from).await.unwrap();
    assert_eq!(listed.incomplete, std::slice::from_ref(&lone));
    assert!(!listed.copies.contains_key(&lone));
    let report = crate::prune(&s.from, None, &policy, now_unix_ms(), false)
        .await
        .unwrap();
    assert_eq!(report.cleaned, [lone]);
    assert!(list_backups(&s.from).await.unwrap().incomplete.is_empty());
}
