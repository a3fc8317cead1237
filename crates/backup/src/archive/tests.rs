use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use super::list::coverage_gaps;
use super::*;
use crate::{BackupError, Destination, Encryption, Identity, TimelineRef};

const CLUSTER: &str = "c1";

fn timeline() -> TimelineRef {
    TimelineRef {
        id: "tl-1".into(),
        counter: 1,
    }
}

fn entries(first: u64, last: u64, term: u64) -> Vec<ArchivedEntry> {
    (first..=last)
        .map(|index| ArchivedEntry {
            index,
            term,
            at_unix_ms: (index % 3 != 0).then_some(1_700_000_000_000 + index as i64 * 10),
            kind: match index % 3 {
                0 => ArchivedKind::Blank,
                1 => ArchivedKind::Command,
                _ => ArchivedKind::Membership,
            },
            payload: format!("INSERT INTO t VALUES ({index})").into_bytes(),
        })
        .collect()
}

fn encode(
    dest: &Destination,
    entries: &[ArchivedEntry],
    prev: Option<String>,
    encryption: Option<&Encryption>,
) -> EncodedSegment {
    let tl = timeline();
    let draft = SegmentDraft {
        cluster_id: CLUSTER,
        timeline: &tl,
        node_id: 7,
        entries,
        prev_segment_sha256: prev,
    };
    encode_segment(dest, &draft, encryption, 3).unwrap()
}

fn memory() -> Destination {
    Destination::parse("memory://").unwrap()
}

fn keypair() -> (Encryption, Identity) {
    let key = age::x25519::Identity::generate();
    let enc = Encryption::recipients([key.to_public().to_string()]).unwrap();
    (enc, Identity::Keys(vec![key]))
}

/// Puts `n` contiguous segments of 10 entries from index 1, chained; returns them.
async fn chain(dest: &Destination, n: u64) -> Vec<EncodedSegment> {
    let mut out: Vec<EncodedSegment> = Vec::new();
    for i in 0..n {
        let prev = out.last().map(|s| s.object_sha256.clone());
        let seg = encode(dest, &entries(i * 10 + 1, i * 10 + 10, 2), prev, None);
        assert_eq!(put_segment(dest, &seg).await.unwrap(), PutOutcome::Created);
        out.push(seg);
    }
    out
}

#[test]
fn entry_len_is_postcards() {
    let mut cases = entries(1, 5, 1);
    cases.push(ArchivedEntry {
        index: u64::MAX,
        term: 1 << 40,
        at_unix_ms: Some(-5),
        kind: ArchivedKind::Command,
        payload: vec![7; 300],
    });
    cases.push(ArchivedEntry {
        index: 0,
        term: 0,
        at_unix_ms: Some(i64::MIN),
        kind: ArchivedKind::Blank,
        payload: Vec::new(),
    });
    for e in &cases {
        assert_eq!(
            entry_encoded_len(e),
            postcard::to_stdvec(e).unwrap().len(),
            "{e:?}"
        );
    }
    let all = postcard::to_stdvec(&cases).unwrap();
    assert_eq!(
        all.len(),
        1 + cases.iter().map(entry_encoded_len).sum::<usize>()
    );
}

#[test]
fn plain_round_trip_and_header() {
    let dest = Destination::from_store(
        std::sync::Arc::new(object_store::memory::InMemory::new()),
        "some/prefix",
        "memory://x",
    )
    .unwrap();
    let es = entries(5, 9, 3);
    let seg = encode(&dest, &es, Some("ab".repeat(32)), None);
    assert_eq!(
        seg.path.as_ref(),
        "some/prefix/c1/archive/tl-1/00000000000000000005-00000000000000000009.seg"
    );
    assert!(seg.bytes.starts_with(b"RLARCH1\n"));
    assert_eq!(seg.object_sha256, sha256_bytes_hex(&seg.bytes));
    let h = &seg.header;
    assert_eq!((h.first_index, h.last_index, h.entry_count), (5, 9, 5));
    assert_eq!((h.first_term, h.last_term), (3, 3));
    assert_eq!(h.first_at_unix_ms, Some(1_700_000_000_050));
    assert_eq!(h.last_at_unix_ms, Some(1_700_000_000_080)); // 9 has no stamp
    assert_eq!(h.prev_segment_sha256, Some("ab".repeat(32)));
    assert_eq!(h.encryption, None);
    assert_eq!(h.node_id, 7);
    assert_eq!(read_segment_header(&seg.bytes).unwrap(), *h);
    let (header, decoded) = decode_segment(&seg.bytes, None).unwrap();
    assert_eq!(header, *h);
    assert_eq!(decoded, es);
    // The body is a plain zstd frame of the postcard entries.
    let n = u32::from_le_bytes(seg.bytes[8..12].try_into().unwrap()) as usize;
    let plain = zstd::decode_all(&seg.bytes[12 + n..]).unwrap();
    assert_eq!(plain, postcard::to_stdvec(&es).unwrap());
    assert_eq!(sha256_bytes_hex(&plain), h.plain_sha256);
}

#[test]
fn encrypted_round_trips_and_wrong_keys() {
    let dest = memory();
    let es = entries(1, 20, 1);
    let (enc, id) = keypair();
    let seg = encode(&dest, &es, None, Some(&enc));
    assert_eq!(
        seg.header
            .encryption
            .as_ref()
            .map(|e| e.recipient_fingerprints.clone()),
        Some(id.fingerprints())
    );
    // The header is readable without the key.
    assert_eq!(read_segment_header(&seg.bytes).unwrap(), seg.header);
    assert_eq!(decode_segment(&seg.bytes, Some(&id)).unwrap().1, es);

    let err = decode_segment(&seg.bytes, None).unwrap_err();
    assert!(
        matches!(err, BackupError::ArchiveIdentityRequired { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("identity"), "{err}");
    let (_, other) = keypair();
    let err = decode_segment(&seg.bytes, Some(&other)).unwrap_err();
    assert!(matches!(err, BackupError::ArchiveWrongKey { .. }), "{err}");
    let err = decode_segment(&seg.bytes, Some(&Identity::passphrase("x").unwrap())).unwrap_err();
    assert!(matches!(err, BackupError::ArchiveWrongKey { .. }), "{err}");
    // A right fingerprint list but the wrong secret: age itself refuses.
    let (enc2, _) = keypair();
    let seg2 = encode(&dest, &es, None, Some(&enc2));
    let mut headerless = seg2.header.clone();
    if let Some(info) = headerless.encryption.as_mut() {
        info.recipient_fingerprints.clear();
    }
    let rebuilt = rebuild(&headerless, body_of(&seg2.bytes));
    let err = decode_segment(&rebuilt, Some(&id)).unwrap_err();
    assert!(matches!(err, BackupError::ArchiveWrongKey { .. }), "{err}");

    let pass = Encryption::passphrase("correct horse").unwrap();
    let seg = encode(&dest, &es, None, Some(&pass));
    let right = Identity::passphrase("correct horse").unwrap();
    assert_eq!(decode_segment(&seg.bytes, Some(&right)).unwrap().1, es);
    let wrong = Identity::passphrase("battery staple").unwrap();
    let err = decode_segment(&seg.bytes, Some(&wrong)).unwrap_err();
    assert!(matches!(err, BackupError::ArchiveWrongKey { .. }), "{err}");
    let err = decode_segment(&seg.bytes, Some(&id)).unwrap_err();
    assert!(matches!(err, BackupError::ArchiveWrongKey { .. }), "{err}");
}

fn body_of(object: &[u8]) -> &[u8] {
    let n = u32::from_le_bytes(object[8..12].try_into().unwrap()) as usize;
    &object[12 + n..]
}

fn rebuild(header: &SegmentHeader, body: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut out = b"RLARCH1\n".to_vec();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(body);
    out
}

#[test]
fn damage_is_refused() {
    let dest = memory();
    let es = entries(1, 50, 1);
    let seg = encode(&dest, &es, None, None);
    let is_bad = |object: &[u8]| match decode_segment(object, None) {
        Err(e @ BackupError::ArchiveSegment { .. }) => e.to_string(),
        other => panic!("{other:?}"),
    };

    let mut tampered = seg.bytes.to_vec();
    let last = tampered.len() - 5;
    tampered[last] ^= 1;
    assert!(is_bad(&tampered).contains("body"));
    assert!(is_bad(&seg.bytes[..seg.bytes.len() - 1]).contains("body"));
    assert!(is_bad(&seg.bytes[..20]).contains("truncated"));
    let mut magic = seg.bytes.to_vec();
    magic[0] = b'X';
    assert!(is_bad(&magic).contains("magic"));
    let mut huge = seg.bytes.to_vec();
    huge[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
    assert!(is_bad(&huge).contains("header length"));

    // A header that lies about the entries, with a body hash that matches.
    let mut h = seg.header.clone();
    h.last_index = 51;
    h.entry_count = 51;
    assert!(is_bad(&rebuild(&h, body_of(&seg.bytes))).contains("entries"));
    let mut h = seg.header.clone();
    h.plain_sha256 = "0".repeat(64);
    assert!(is_bad(&rebuild(&h, body_of(&seg.bytes))).contains("sha256"));
    let mut h = seg.header.clone();
    h.plain_bytes = 10;
    assert!(is_bad(&rebuild(&h, body_of(&seg.bytes))).contains("decompresses"));
    let mut h = seg.header.clone();
    h.format_version = 2;
    assert!(is_bad(&rebuild(&h, body_of(&seg.bytes))).contains("newer"));
    assert!(matches!(
        read_segment_header(&rebuild(&h, body_of(&seg.bytes))),
        Err(BackupError::ArchiveSegment { .. })
    ));
}

#[test]
fn bad_drafts_are_refused() {
    let dest = memory();
    let tl = timeline();
    let try_encode = |entries: &[ArchivedEntry], prev: Option<String>, cluster: &str| {
        let draft = SegmentDraft {
            cluster_id: cluster,
            timeline: &tl,
            node_id: 1,
            entries,
            prev_segment_sha256: prev,
        };
        encode_segment(&dest, &draft, None, 3)
    };
    let invalid = |r: Result<EncodedSegment, BackupError>| match r {
        Err(e @ BackupError::InvalidSegment { .. }) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(invalid(try_encode(&[], None, CLUSTER)).contains("at least one"));
    let mut hole = entries(1, 5, 1);
    hole.remove(2);
    assert!(invalid(try_encode(&hole, None, CLUSTER)).contains("contiguous"));
    let mut terms = entries(1, 5, 2);
    terms[3].term = 1;
    assert!(invalid(try_encode(&terms, None, CLUSTER)).contains("term"));
    assert!(invalid(try_encode(&entries(1, 2, 1), Some("xyz".into()), CLUSTER)).contains("prev"));
    assert!(invalid(try_encode(&entries(1, 2, 1), None, "a/b")).contains("cluster"));
    // Rising terms inside a segment are fine.
    let mut rising = entries(1, 5, 1);
    rising[4].term = 2;
    let seg = try_encode(&rising, None, CLUSTER).unwrap();
    assert_eq!((seg.header.first_term, seg.header.last_term), (1, 2));
}

#[tokio::test]
async fn put_is_create_only_and_compares_content() {
    let dest = memory();
    let (enc, id) = keypair();
    let es = entries(1, 10, 4);
    let first = encode(&dest, &es, None, Some(&enc));
    assert_eq!(
        put_segment(&dest, &first).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        put_segment(&dest, &first).await.unwrap(),
        PutOutcome::AlreadyPresent
    );

    // A new leader re-sending the same range: other bytes (fresh age key), same content; the
    // chain continues from the stored object.
    let again = encode(&dest, &es, None, Some(&enc));
    assert_ne!(again.bytes, first.bytes);
    let (outcome, sha) = put_segment_for_chain(&dest, &again).await.unwrap();
    assert_eq!(outcome, PutOutcome::AlreadyPresent);
    assert_eq!(sha, first.object_sha256);
    let stored = read_segment(&dest, &first.path).await.unwrap();
    assert_eq!(stored, first.bytes);
    assert_eq!(decode_segment(&stored, Some(&id)).unwrap().1, es);

    // Same range, other entries: a stale leader or a second cluster.
    let mut other = es.clone();
    other[3].payload = b"DELETE FROM t".to_vec();
    let conflicting = encode(&dest, &other, None, Some(&enc));
    let err = put_segment(&dest, &conflicting).await.unwrap_err();
    assert!(matches!(err, BackupError::ArchiveConflict { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("raftlite backup verify") && msg.contains("plain_sha256"),
        "{msg}"
    );
    // Same entries but another chain.
    let rechained = encode(&dest, &es, Some("cd".repeat(32)), Some(&enc));
    let err = put_segment(&dest, &rechained).await.unwrap_err();
    assert!(err.to_string().contains("prev_segment_sha256"), "{err}");
    // Nothing was overwritten.
    assert_eq!(read_segment(&dest, &first.path).await.unwrap(), first.bytes);

    // Not a segment at all under the name.
    let junk = encode(&dest, &entries(11, 12, 4), None, None);
    dest.store()
        .put(&junk.path, PutPayload::from_static(b"garbage"))
        .await
        .unwrap();
    let err = put_segment(&dest, &junk).await.unwrap_err();
    assert!(matches!(err, BackupError::ArchiveConflict { .. }), "{err}");
}

#[tokio::test]
async fn file_destination_is_create_only_too() {
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination::parse(&format!("file://{}", dir.path().display())).unwrap();
    let segs = chain(&dest, 2).await;
    assert_eq!(
        put_segment(&dest, &segs[0]).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    let mut other = entries(1, 10, 2);
    other[0].term = 1;
    let err = put_segment(&dest, &encode(&dest, &other, None, None))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::ArchiveConflict { .. }), "{err}");
    assert!(dir
        .path()
        .join("c1/archive/tl-1/00000000000000000011-00000000000000000020.seg")
        .is_file());
    let mark = archive_watermark(&dest, CLUSTER, "tl-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mark.object_sha256, segs[1].object_sha256);
    let report = verify_archive_timeline(&dest, CLUSTER, "tl-1", None)
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(list_archive(&dest, "nobody")
        .await
        .unwrap()
        .timelines
        .is_empty());
    assert_eq!(
        archive_watermark(&dest, CLUSTER, "tl-0").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn watermark_is_the_greatest_range() {
    let dest = memory();
    assert_eq!(
        archive_watermark(&dest, CLUSTER, "tl-1").await.unwrap(),
        None
    );
    let segs = chain(&dest, 3).await;
    // Names that are not segments are ignored.
    for junk in ["c1/archive/tl-1/notes.txt", "c1/archive/tl-1/99-100.seg"] {
        dest.store()
            .put(&ObjectPath::from(junk), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }
    record_gap(&dest, CLUSTER, "tl-1", &gap(31, 99))
        .await
        .unwrap();
    let mark = archive_watermark(&dest, CLUSTER, "tl-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mark.last_index, 30);
    assert_eq!(mark.last_term, 2);
    assert_eq!(mark.last_at_unix_ms, Some(1_700_000_000_290));
    assert_eq!(mark.object_sha256, segs[2].object_sha256);
    assert_eq!(mark.path, segs[2].path);
    // Another timeline is its own archive.
    assert_eq!(
        archive_watermark(&dest, CLUSTER, "tl-2").await.unwrap(),
        None
    );

    // A damaged last segment is not something to chain on.
    let mut damaged = segs[2].bytes.to_vec();
    let n = damaged.len() - 3;
    damaged[n] ^= 0xff;
    dest.store()
        .put(&segs[2].path, PutPayload::from(damaged))
        .await
        .unwrap();
    let err = archive_watermark(&dest, CLUSTER, "tl-1").await.unwrap_err();
    assert!(matches!(err, BackupError::ArchiveSegment { .. }), "{err}");
}

fn gap(from: u64, to: u64) -> GapRecord {
    GapRecord {
        from_index: from,
        to_index: to,
        reason: "destination down past the log cap".into(),
        node_id: 1,
        recorded_at_unix_ms: 1_700_000_000_000,
    }
}

#[test]
fn holes_and_records_merge() {
    let (gaps, overlaps) = coverage_gaps(&[(1, 10), (21, 30), (41, 50)], &[(31, 40), (60, 70)]);
    assert_eq!(gaps, vec![(11, 20), (31, 40), (60, 70)]);
    assert!(overlaps.is_empty());
    let (gaps, overlaps) = coverage_gaps(&[(1, 10), (5, 12), (14, 20)], &[(13, 13), (2, 3)]);
    assert_eq!(gaps, vec![(2, 3), (13, 13)]);
    assert_eq!(overlaps.len(), 1);
}

#[tokio::test]
async fn list_shows_coverage_and_gaps() {
    let dest = memory();
    let put = |first: u64, last: u64, prev: Option<String>| {
        let seg = encode(&dest, &entries(first, last, 1), prev, None);
        let dest = dest.clone();
        async move {
            put_segment(&dest, &seg).await.unwrap();
            seg
        }
    };
    let a = put(1, 10, None).await;
    put(21, 30, None).await;
    put(31, 40, None).await;
    let last = put(51, 60, None).await;
    record_gap(&dest, CLUSTER, "tl-1", &gap(41, 45))
        .await
        .unwrap();
    record_gap(&dest, CLUSTER, "tl-1", &gap(41, 45))
        .await
        .unwrap(); // again: fine
    record_gap(&dest, CLUSTER, "tl-9", &gap(1, 5))
        .await
        .unwrap();
    let err = record_gap(&dest, CLUSTER, "tl-1", &gap(5, 4))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::InvalidOptions { .. }), "{err}");

    let list = list_archive(&dest, CLUSTER).await.unwrap();
    assert_eq!(list.timelines.len(), 1, "{list:?}");
    let t = &list.timelines[0];
    assert_eq!(t.timeline_id, "tl-1");
    assert_eq!((t.segments, t.first_index, t.last_index), (4, 1, 60));
    assert_eq!(t.gaps, vec![(11, 20), (41, 50)]);
    assert_eq!(t.first_at_unix_ms, a.header.first_at_unix_ms);
    assert_eq!(t.last_at_unix_ms, last.header.last_at_unix_ms);
    assert!(t.bytes > 0);
    assert_eq!(list.warnings.len(), 1, "{list:?}");
    assert!(list.warnings[0].contains("tl-9"), "{list:?}");
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(json["timelines"][0]["gaps"][0], serde_json::json!([11, 20]));

    // Overlapping segments are a warning.
    put(55, 65, None).await;
    let list = list_archive(&dest, CLUSTER).await.unwrap();
    assert_eq!(list.timelines[0].last_index, 65);
    assert!(
        list.warnings.iter().any(|w| w.contains("overlaps")),
        "{list:?}"
    );

    assert!(list_archive(&dest, "other")
        .await
        .unwrap()
        .timelines
        .is_empty());
    assert_eq!(
        archive_clusters(&dest).await.unwrap(),
        vec![CLUSTER.to_string()]
    );
    assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn verify_finds_broken_chains_and_missing_segments() {
    let dest = memory();
    let segs = chain(&dest, 4).await;
    let report = verify_archive_timeline(&dest, CLUSTER, "tl-1", None)
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!((report.segments_checked, report.entries), (4, 40));

    // A segment after a recorded gap may start a new chain.
    record_gap(&dest, CLUSTER, "tl-1", &gap(41, 50))
        .await
        .unwrap();
    let after_gap = encode(&dest, &entries(51, 60, 3), None, None);
    put_segment(&dest, &after_gap).await.unwrap();
    let report = verify_archive_timeline(&dest, CLUSTER, "tl-1", None)
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{report:?}");

    // A segment whose prev hash names something else.
    let stray = encode(&dest, &entries(61, 70, 3), Some("ef".repeat(32)), None);
    put_segment(&dest, &stray).await.unwrap();
    // One that directly follows but has no prev hash.
    let unchained = encode(&dest, &entries(71, 80, 3), None, None);
    put_segment(&dest, &unchained).await.unwrap();
    // A missing segment (21-30) and, after it, a chain that is fine on its own.
    dest.store().delete(&segs[2].path).await.unwrap();
    let report = verify_archive_timeline(&dest, CLUSTER, "tl-1", None)
        .await
        .unwrap();
    let problems: Vec<(String, String)> = report
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.problem.clone()))
        .collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0]
        .0
        .ends_with("00000000000000000031-00000000000000000040.seg"));
    assert!(problems[0].1.contains("entries 21-30") && problems[0].1.contains("missing"));
    assert_eq!(problems[1].0, stray.path.to_string());
    assert!(
        problems[1].1.contains("prev_segment_sha256"),
        "{}",
        problems[1].1
    );
    assert_eq!(problems[2].0, unchained.path.to_string());
    assert!(
        problems[2].1.contains("no prev_segment_sha256"),
        "{}",
        problems[2].1
    );

    // A damaged body and a segment under the wrong name, reported without stopping.
    let mut damaged = segs[0].bytes.to_vec();
    let n = damaged.len() - 2;
    damaged[n] ^= 1;
    dest.store()
        .put(&segs[0].path, PutPayload::from(damaged))
        .await
        .unwrap();
    let report = verify_archive_timeline(&dest, CLUSTER, "tl-1", None)
        .await
        .unwrap();
    assert_eq!(report.problems.len(), 5, "{report:#?}");
    assert!(
        report.problems[0].problem.starts_with("sha256 of the body"),
        "{report:#?}"
    );
    // The next segment's prev hash named the original, so the chain break shows too.
    assert!(
        report.problems[1].problem.contains("replaced or altered"),
        "{report:#?}"
    );
    assert_eq!(report.segments_checked, 6);
}

#[tokio::test]
async fn verify_checks_encrypted_segments_with_and_without_identity() {
    let dest = memory();
    let (enc, id) = keypair();
    let first = encode(&dest, &entries(1, 10, 1), None, Some(&enc));
    put_segment(&dest, &first).await.unwrap();
    let second = encode(
        &dest,
        &entries(11, 20, 1),
        Some(first.object_sha256.clone()),
        Some(&enc),
    );
    put_segment(&dest, &second).await.unwrap();
    for identity in [None, Some(&id)] {
        let report = verify_archive_timeline(&dest, CLUSTER, "tl-1", identity)
            .await
            .unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.entries, 20);
    }
    let (_, other) = keypair();
    let report = verify_archive_timeline(&dest, CLUSTER, "tl-1", Some(&other))
        .await
        .unwrap();
    assert_eq!(report.problems.len(), 2, "{report:?}");
    assert!(report.problems[0]
        .problem
        .contains("not encrypted for this identity"));
}

/// A store without create-only puts (like some S3-compatible servers).
#[derive(Debug)]
struct NoCreate(object_store::memory::InMemory);

impl std::fmt::Display for NoCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoCreate")
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for NoCreate {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if matches!(opts.mode, object_store::PutMode::Create) {
            return Err(object_store::Error::NotImplemented {
                operation: "put with PutMode::Create".into(),
                implementer: "NoCreate".into(),
            });
        }
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
        self.0.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn stores_without_create_only_puts_fall_back() {
    let dest = Destination::from_store(
        std::sync::Arc::new(NoCreate(object_store::memory::InMemory::new())),
        "",
        "nocreate://",
    )
    .unwrap();
    let segs = chain(&dest, 2).await;
    assert_eq!(
        put_segment(&dest, &segs[1]).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    let other = encode(&dest, &entries(11, 20, 9), None, None);
    let err = put_segment(&dest, &other).await.unwrap_err();
    assert!(matches!(err, BackupError::ArchiveConflict { .. }), "{err}");
    record_gap(&dest, CLUSTER, "tl-1", &gap(21, 30))
        .await
        .unwrap();
    record_gap(&dest, CLUSTER, "tl-1", &gap(21, 30))
        .await
        .unwrap();
    let list = list_archive(&dest, CLUSTER).await.unwrap();
    assert_eq!(list.timelines[0].gaps, vec![(21, 30)]);
}

#[tokio::test]
async fn the_first_claim_for_an_index_fixes_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let file = Destination::parse(&format!("file://{}", dir.path().display())).unwrap();
    for dest in [memory(), file] {
        let claim = |last, node_id| SegmentClaim {
            first_index: 11,
            last_index: last,
            node_id,
            claimed_at_unix_ms: 1,
        };
        let first = claim_segment(&dest, CLUSTER, "tl-1", &claim(20, 1))
            .await
            .unwrap();
        assert_eq!(first, claim(20, 1));
        // A stale leader claiming the same start gets the range already claimed.
        let second = claim_segment(&dest, CLUSTER, "tl-1", &claim(25, 2))
            .await
            .unwrap();
        assert_eq!(second, claim(20, 1));
        // Claims are not segments: the archive still lists nothing.
        assert!(list_archive(&dest, CLUSTER)
            .await
            .unwrap()
            .timelines
            .is_empty());
        let empty = SegmentClaim {
            first_index: 12,
            last_index: 11,
            node_id: 1,
            claimed_at_unix_ms: 1,
        };
        assert!(claim_segment(&dest, CLUSTER, "tl-1", &empty).await.is_err());
    }
}

#[tokio::test]
async fn timeline_ids_are_claimed_once_with_their_record() {
    let dest = memory();
    let record = |id: &str, counter, parent: Option<&str>| raftlite_store::TimelineRecord {
        id: id.to_string(),
        counter,
        parent: parent.map(str::to_string),
        parent_index: parent.map(|_| 41),
        reason: "test".into(),
        at_unix_ms: 7,
    };
    let first = record("tl-1", 1, None);
    let second = record("tl-2", 2, Some("tl-1"));
    claim_timeline(&dest, CLUSTER, &second).await.unwrap();
    claim_timeline(&dest, CLUSTER, &first).await.unwrap();
    // Another leader of the same timeline: the same record, fine.
    claim_timeline(&dest, CLUSTER, &first).await.unwrap();
    // A second lineage under the same id: refused.
    let err = claim_timeline(&dest, CLUSTER, &record("tl-1", 1, Some("tl-0")))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::ArchiveConflict { .. }), "{err}");
    assert_eq!(
        timeline_history(&dest, CLUSTER).await.unwrap(),
        vec![first, second]
    );
    // Timeline records are not backups nor archive timelines.
    assert!(list_archive(&dest, CLUSTER)
        .await
        .unwrap()
        .timelines
        .is_empty());
    assert!(crate::list_backups(&dest).await.unwrap().backups.is_empty());
}
