//! Backup round trips, listing and every verify failure, on `memory://` and `file://`.

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{make_db, make_random_db, meta, Probe};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use raftlite_backup::secrecy::ExposeSecret;
use raftlite_backup::{
    create_backup, download_backup, list_backups, verify_backup, BackupError, BackupId,
    CreateOptions, Destination, Encryption, EncryptionScheme, Identity, Manifest,
};

fn object_path(dest: &Destination, id: &BackupId, file: &str) -> ObjectPath {
    let mut p = dest.prefix().clone();
    for part in [id.cluster_id(), "backups", id.set(), file] {
        p = p.join(part);
    }
    p
}

async fn get_bytes(dest: &Destination, path: &ObjectPath) -> Vec<u8> {
    dest.store()
        .get(path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

async fn put_bytes(dest: &Destination, path: &ObjectPath, bytes: Vec<u8>) {
    dest.store()
        .put(path, PutPayload::from(bytes))
        .await
        .unwrap();
}

async fn rewrite_manifest(dest: &Destination, id: &BackupId, edit: impl FnOnce(&mut Manifest)) {
    let path = object_path(dest, id, "manifest.json");
    let mut manifest: Manifest = serde_json::from_slice(&get_bytes(dest, &path).await).unwrap();
    edit(&mut manifest);
    put_bytes(dest, &path, serde_json::to_vec(&manifest).unwrap()).await;
}

fn id_of(manifest: &Manifest, list: &raftlite_backup::BackupList) -> BackupId {
    list.backups
        .iter()
        .find(|(_, m)| m == manifest)
        .map(|(id, _)| id.clone())
        .expect("the new backup is listed")
}

/// Creates a backup of `db` and checks the manifest against the file.
async fn backup(
    db: &Path,
    dest: &Destination,
    index: u64,
    encryption: Option<Encryption>,
) -> (BackupId, Manifest) {
    let opts = CreateOptions {
        level: 3,
        encryption,
    };
    let manifest = create_backup(db, meta(index), dest, &opts).await.unwrap();
    let plain = std::fs::read(db).unwrap();
    assert_eq!(manifest.plain_size, plain.len() as u64);
    assert_eq!(manifest.log_index, index);
    assert_eq!(manifest.cluster_id, "c1");
    assert_eq!(manifest.format_version, 1);
    assert_eq!(
        manifest.sqlite_page_size as u64 * manifest.sqlite_page_count,
        manifest.plain_size
    );
    assert!(manifest.created_at.ends_with('Z') && manifest.created_at.contains('T'));
    let list = list_backups(dest).await.unwrap();
    let id = id_of(&manifest, &list);
    assert!(id.set().ends_with(&format!("-1-{index}")), "{id}");
    (id, manifest)
}

/// Decodes a stored object with the age and zstd crates' plain streaming decoders, exactly
/// what `age -d | zstd -d` does, and compares with the original file.
fn decode_like_the_cli(stored: &[u8], identity: Option<&dyn age::Identity>, original: &Path) {
    let mut plain = Vec::new();
    match identity {
        Some(identity) => {
            let decryptor = age::Decryptor::new(stored).unwrap();
            let reader = decryptor.decrypt(std::iter::once(identity)).unwrap();
            zstd::stream::read::Decoder::new(reader)
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
        }
        None => {
            zstd::stream::read::Decoder::new(stored)
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
        }
    }
    assert!(
        plain == std::fs::read(original).unwrap(),
        "decoded bytes differ"
    );
}

#[tokio::test]
async fn round_trip_memory_plain_and_x25519() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_db(&db, 3000);
    let dest = Destination::parse("memory://").unwrap();

    // Plain.
    let (id, manifest) = backup(&db, &dest, 10, None).await;
    assert_eq!(manifest.encryption, None);
    assert!(
        manifest.stored_size < manifest.plain_size,
        "zstd compresses"
    );
    let report = verify_backup(&dest, &id, None).await.unwrap();
    assert_eq!(report.plain_size, manifest.plain_size);
    assert_eq!(report.page_count, manifest.sqlite_page_count);
    let stored = get_bytes(&dest, &object_path(&dest, &id, "db.sqlite.zst")).await;
    assert_eq!(stored.len() as u64, manifest.stored_size);
    decode_like_the_cli(&stored, None, &db);

    // X25519.
    let key = age::x25519::Identity::generate();
    let enc = Encryption::recipients([key.to_public().to_string()]).unwrap();
    let (id, manifest) = backup(&db, &dest, 11, Some(enc)).await;
    let info = manifest.encryption.clone().unwrap();
    assert_eq!(info.scheme, EncryptionScheme::AgeX25519);
    assert_eq!(
        info.recipient_fingerprints,
        vec![raftlite_backup::recipient_fingerprint(
            &key.to_public().to_string()
        )]
    );
    let json = get_bytes(&dest, &object_path(&dest, &id, "manifest.json")).await;
    let json = String::from_utf8(json).unwrap();
    assert!(!json.contains(key.to_string().expose_secret()));
    assert!(
        !json.contains(&key.to_public().to_string()),
        "fingerprints, not keys"
    );

    let identity = Identity::from_identity_file(&format!(
        "# test key\n{}\n",
        key.to_string().expose_secret()
    ))
    .unwrap();
    let report = verify_backup(&dest, &id, Some(&identity)).await.unwrap();
    assert_eq!(report.manifest, manifest);
    let stored = get_bytes(&dest, &object_path(&dest, &id, "db.sqlite.zst.age")).await;
    decode_like_the_cli(&stored, Some(&key), &db);

    // Missing identity.
    let err = verify_backup(&dest, &id, None).await.unwrap_err();
    assert!(matches!(err, BackupError::IdentityRequired { .. }), "{err}");
    assert!(err.to_string().contains("memory://"), "{err}");

    // Download keeps a checked copy.
    let target = dir.path().join("restored.sqlite");
    download_backup(&dest, &id, Some(&identity), &target)
        .await
        .unwrap();
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&db).unwrap());
    let conn = rusqlite::Connection::open(&target).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3000);
}

#[tokio::test]
async fn round_trip_file_with_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_db(&db, 4000);
    let store_dir = dir.path().join("backups here");
    let url = format!("file://{}", store_dir.display()).replace(' ', "%20");
    let dest = Destination::parse(&url).unwrap();
    assert_eq!(dest.to_string(), format!("file://{}", store_dir.display()));

    let (id, manifest) = backup(
        &db,
        &dest,
        7,
        Some(Encryption::passphrase("correct horse battery staple").unwrap()),
    )
    .await;
    let info = manifest.encryption.clone().unwrap();
    assert_eq!(info.scheme, EncryptionScheme::AgeScrypt);
    assert!(info.recipient_fingerprints.is_empty());

    // On disk: exactly the documented layout, and nothing else.
    let set_dir = store_dir.join("c1").join("backups").join(id.set());
    let mut names: Vec<String> = std::fs::read_dir(&set_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["db.sqlite.zst.age", "manifest.json"]);

    let identity = Identity::passphrase("correct horse battery staple").unwrap();
    verify_backup(&dest, &id, Some(&identity)).await.unwrap();
    let stored = std::fs::read(set_dir.join("db.sqlite.zst.age")).unwrap();
    let scrypt = age::scrypt::Identity::new("correct horse battery staple".into());
    decode_like_the_cli(&stored, Some(&scrypt), &db);

    let wrong = Identity::passphrase("incorrect horse").unwrap();
    let err = verify_backup(&dest, &id, Some(&wrong)).await.unwrap_err();
    assert!(matches!(err, BackupError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains(&dest.to_string()), "{err}");

    // A key cannot open a passphrase backup, and says so before downloading.
    let key = age::x25519::Identity::generate();
    let keys = Identity::from_identity_file(key.to_string().expose_secret()).unwrap();
    let err = verify_backup(&dest, &id, Some(&keys)).await.unwrap_err();
    assert!(matches!(err, BackupError::WrongKey { .. }), "{err}");
}

#[tokio::test]
async fn round_trip_file_plain_and_x25519_with_two_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_db(&db, 2500);
    let dest = Destination::parse(&format!("file://{}/b", dir.path().display())).unwrap();

    let (id, _) = backup(&db, &dest, 1, None).await;
    verify_backup(&dest, &id, None).await.unwrap();

    let a = age::x25519::Identity::generate();
    let b = age::x25519::Identity::generate();
    let enc =
        Encryption::recipients([a.to_public().to_string(), b.to_public().to_string()]).unwrap();
    let (id, manifest) = backup(&db, &dest, 2, Some(enc)).await;
    assert_eq!(
        manifest
            .encryption
            .as_ref()
            .unwrap()
            .recipient_fingerprints
            .len(),
        2
    );
    for key in [&a, &b] {
        let identity = Identity::from_identity_file(key.to_string().expose_secret()).unwrap();
        verify_backup(&dest, &id, Some(&identity)).await.unwrap();
    }
}

#[tokio::test]
async fn a_real_store_snapshot_round_trips_with_its_meta() {
    use raftlite_store::{
        EntryTime, LogPosition, Statement, Store, StoreOptions, TimelineRecord, WriteRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.sqlite"), StoreOptions::default()).unwrap();
    let pos = |index| LogPosition {
        term: 3,
        leader_node: 1,
        index,
    };
    let timeline = TimelineRecord {
        id: "feedfacefeedfacefeedfacefeedface".into(),
        counter: 1,
        parent: None,
        parent_index: None,
        reason: "bootstrap".into(),
        at_unix_ms: 1_700_000_000_000,
    };
    store.apply_init_timeline(pos(1), &timeline).unwrap();
    let time = EntryTime {
        at_unix_ms: 1_700_000_000_000,
        seed: 7,
    };
    store
        .apply_write(
            pos(2),
            time,
            &[WriteRequest {
                statements: vec![Statement::new(
                    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                )],
                transaction: false,
            }],
        )
        .unwrap();
    for i in 0..20u64 {
        let statements = (0..100)
            .map(|j| Statement::new(format!("INSERT INTO t(v) VALUES ('row {i}-{j}')")))
            .collect();
        store
            .apply_write(
                pos(3 + i),
                time,
                &[WriteRequest {
                    statements,
                    transaction: true,
                }],
            )
            .unwrap();
    }
    let snap = dir.path().join("snap.sqlite");
    let state = store.snapshot_to(&snap).unwrap();
    let meta = raftlite_backup::BackupMeta::from_meta_state("cluster-a", 1, &state).unwrap();
    assert_eq!(meta.log_index, 22);
    assert_eq!(meta.log_term, 3);
    let dest = Destination::parse("memory://").unwrap();
    let manifest = create_backup(&snap, meta.clone(), &dest, &CreateOptions::default())
        .await
        .unwrap();
    assert_eq!(manifest.timeline.id, timeline.id);
    let list = list_backups(&dest).await.unwrap();
    let (id, _) = list.newest("cluster-a").unwrap().clone();
    let report = verify_backup(&dest, &id, None).await.unwrap();
    assert_eq!(report.raftlite_meta.applied, state.applied);
    assert_eq!(
        report.raftlite_meta.timeline_history,
        state.timeline_history
    );

    // Metadata that contradicts the file is refused before anything is uploaded.
    let mut wrong = meta.clone();
    wrong.log_index = 5;
    let err = create_backup(&snap, wrong, &dest, &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::MetaMismatch { .. }), "{err}");
    // A manifest that contradicts the file is caught by verify.
    rewrite_manifest(&dest, &id, |m| m.log_index = 99).await;
    let err = verify_backup(&dest, &id, None).await.unwrap_err();
    assert!(
        matches!(err, BackupError::RestoredMetaMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn list_is_newest_first_and_ignores_sets_without_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_db(&db, 200);
    for url in [
        "memory://".to_string(),
        format!("file://{}/store", dir.path().display()),
    ] {
        let dest = Destination::parse(&url).unwrap();
        assert!(list_backups(&dest).await.unwrap().backups.is_empty());
        for index in [5, 9, 7] {
            backup(&db, &dest, index, None).await;
        }
        // A set being written (or whose upload failed): data, no manifest.
        let pending: BackupId = "c1/29990101T000000.000Z-1-100".parse().unwrap();
        put_bytes(
            &dest,
            &object_path(&dest, &pending, "db.sqlite.zst"),
            b"partial".to_vec(),
        )
        .await;
        // A set whose manifest is garbage, and one from a newer format.
        let garbage: BackupId = "c1/29990101T000000.000Z-1-101".parse().unwrap();
        put_bytes(
            &dest,
            &object_path(&dest, &garbage, "manifest.json"),
            b"{not json".to_vec(),
        )
        .await;
        // Objects that are not ours are ignored.
        put_bytes(
            &dest,
            &ObjectPath::from("c1/backups/readme.txt"),
            b"hi".to_vec(),
        )
        .await;
        put_bytes(&dest, &ObjectPath::from("other/thing"), b"hi".to_vec()).await;

        let list = list_backups(&dest).await.unwrap();
        let indexes: Vec<u64> = list.backups.iter().map(|(_, m)| m.log_index).collect();
        assert_eq!(indexes, [7, 9, 5], "newest (last created) first on {url}");
        assert_eq!(list.incomplete, vec![pending.clone()]);
        assert_eq!(list.warnings.len(), 1, "{:?}", list.warnings);
        assert_eq!(list.warnings[0].id, garbage);
        assert!(list.warnings[0].to_string().contains("not a manifest"));
        assert_eq!(list.newest("c1").unwrap().1.log_index, 7);
        assert!(list.newest("c2").is_none());

        let err = verify_backup(&dest, &pending, None).await.unwrap_err();
        assert!(matches!(err, BackupError::NotFound { .. }), "{err}");
        let err = verify_backup(&dest, &garbage, None).await.unwrap_err();
        assert!(matches!(err, BackupError::BadManifest { .. }), "{err}");

        let (newest, _) = &list.backups[0];
        rewrite_manifest(&dest, newest, |m| m.format_version = 3).await;
        let list = list_backups(&dest).await.unwrap();
        assert_eq!(list.backups.len(), 2);
        assert!(list
            .warnings
            .iter()
            .any(|w| w.reason.contains("newer raftlite")));
    }
}

#[tokio::test]
async fn list_under_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_db(&db, 100);
    let store = Arc::new(object_store::memory::InMemory::new());
    let a = Destination::from_store(store.clone(), "team/a", "memory://team/a").unwrap();
    let b = Destination::from_store(store.clone(), "team/ab", "memory://team/ab").unwrap();
    backup(&db, &a, 1, None).await;
    assert_eq!(list_backups(&a).await.unwrap().backups.len(), 1);
    assert!(list_backups(&b).await.unwrap().backups.is_empty());
}

#[tokio::test]
async fn verify_detects_each_kind_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_db(&db, 3000);
    let dest = Destination::parse("memory://").unwrap();
    let key = age::x25519::Identity::generate();
    let identity = Identity::from_identity_file(key.to_string().expose_secret()).unwrap();
    let recipients = || Encryption::recipients([key.to_public().to_string()]).unwrap();

    // Truncated object.
    for encryption in [None, Some(recipients())] {
        let name = if encryption.is_some() {
            "db.sqlite.zst.age"
        } else {
            "db.sqlite.zst"
        };
        let (id, m) = backup(&db, &dest, 1, encryption).await;
        let path = object_path(&dest, &id, name);
        let stored = get_bytes(&dest, &path).await;
        put_bytes(&dest, &path, stored[..stored.len() / 2].to_vec()).await;
        let err = verify_backup(&dest, &id, Some(&identity))
            .await
            .unwrap_err();
        match &err {
            BackupError::Truncated {
                expected, actual, ..
            } => {
                assert_eq!(*expected, m.stored_size);
                assert_eq!(*actual, m.stored_size / 2);
            }
            other => panic!("expected Truncated, got {other}"),
        }
        assert!(err.to_string().contains(&id.to_string()), "{err}");

        // Flipped byte, same size.
        let mut flipped = stored.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x40;
        put_bytes(&dest, &path, flipped).await;
        let err = verify_backup(&dest, &id, Some(&identity))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackupError::StoredHashMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&id.to_string()), "{err}");

        // A longer object.
        let mut longer = stored.clone();
        longer.extend_from_slice(b"tail");
        put_bytes(&dest, &path, longer).await;
        let err = verify_backup(&dest, &id, Some(&identity))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackupError::StoredSizeMismatch { .. }),
            "{err}"
        );
        put_bytes(&dest, &path, stored).await;
        verify_backup(&dest, &id, Some(&identity)).await.unwrap();
    }

    // Wrong identity: refused from the fingerprints, and by age itself when the manifest's
    // fingerprints are no help.
    let (id, _) = backup(&db, &dest, 2, Some(recipients())).await;
    let other = age::x25519::Identity::generate();
    let other_identity = Identity::from_identity_file(other.to_string().expose_secret()).unwrap();
    let err = verify_backup(&dest, &id, Some(&other_identity))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::WrongKey { .. }), "{err}");
    rewrite_manifest(&dest, &id, |m| {
        m.encryption.as_mut().unwrap().recipient_fingerprints = other_identity.fingerprints()
    })
    .await;
    let err = verify_backup(&dest, &id, Some(&other_identity))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::WrongKey { .. }), "{err}");

    // Manifest hashes that do not match the data.
    let (id, m) = backup(&db, &dest, 3, None).await;
    rewrite_manifest(&dest, &id, |m| m.plain_sha256 = "0".repeat(64)).await;
    let err = verify_backup(&dest, &id, None).await.unwrap_err();
    match &err {
        BackupError::PlainHashMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &"0".repeat(64));
            assert_eq!(actual, &m.plain_sha256);
        }
        other => panic!("expected PlainHashMismatch, got {other}"),
    }
    rewrite_manifest(&dest, &id, |x| {
        x.plain_sha256 = m.plain_sha256.clone();
        x.stored_sha256 = "f".repeat(64);
    })
    .await;
    let err = verify_backup(&dest, &id, None).await.unwrap_err();
    assert!(
        matches!(err, BackupError::StoredHashMismatch { .. }),
        "{err}"
    );
    rewrite_manifest(&dest, &id, |x| {
        x.stored_sha256 = m.stored_sha256.clone();
        x.plain_size += 1;
    })
    .await;
    let err = verify_backup(&dest, &id, None).await.unwrap_err();
    assert!(
        matches!(err, BackupError::PlainSizeMismatch { .. }),
        "{err}"
    );
    rewrite_manifest(&dest, &id, |x| {
        x.plain_size = m.plain_size;
        x.sqlite_page_count += 1;
    })
    .await;
    let err = verify_backup(&dest, &id, None).await.unwrap_err();
    assert!(
        matches!(err, BackupError::PageCountMismatch { .. }),
        "{err}"
    );
}

/// Data whose hashes match the manifest but that is not a valid zstd frame / SQLite file:
/// what a buggy writer would produce. Each gets its own error.
#[tokio::test]
async fn verify_names_bad_frames_and_bad_databases() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_db(&db, 1000);
    let dest = Destination::parse("memory://").unwrap();
    let hex = |b: &[u8]| {
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    };

    // Not zstd at all.
    let (id, _) = backup(&db, &dest, 1, None).await;
    let junk = b"this is not a zstd frame, not even close".to_vec();
    let (size, sha) = (junk.len() as u64, hex(&junk));
    put_bytes(&dest, &object_path(&dest, &id, "db.sqlite.zst"), junk).await;
    rewrite_manifest(&dest, &id, |m| {
        m.stored_size = size;
        m.stored_sha256 = sha;
    })
    .await;
    let err = verify_backup(&dest, &id, None).await.unwrap_err();
    assert!(matches!(err, BackupError::BadZstdFrame { .. }), "{err}");

    // A valid frame of a corrupt database (a page of the middle zeroed).
    let (id, m) = backup(&db, &dest, 2, None).await;
    let mut plain = std::fs::read(&db).unwrap();
    let page = m.sqlite_page_size as usize;
    let mid = (plain.len() / page / 2) * page;
    plain[mid..mid + page].fill(0);
    let stored = zstd::encode_all(&plain[..], 3).unwrap();
    let (psize, psha, ssize, ssha) = (
        plain.len() as u64,
        hex(&plain),
        stored.len() as u64,
        hex(&stored),
    );
    put_bytes(&dest, &object_path(&dest, &id, "db.sqlite.zst"), stored).await;
    rewrite_manifest(&dest, &id, |m| {
        m.plain_size = psize;
        m.plain_sha256 = psha;
        m.stored_size = ssize;
        m.stored_sha256 = ssha;
    })
    .await;
    let err = verify_backup(&dest, &id, None).await.unwrap_err();
    assert!(matches!(err, BackupError::IntegrityCheck { .. }), "{err}");
}

#[tokio::test]
async fn a_failed_upload_is_aborted_and_leaves_no_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_random_db(&db, 16);
    for fail_part in [0usize, 1] {
        let probe = Arc::new(Probe::memory(Some(fail_part)));
        let stats = probe.stats.clone();
        let dest = Destination::from_store(probe, "", "probe://failing").unwrap();
        let err = create_backup(&db, meta(1), &dest, &CreateOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::Upload { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("probe://failing") && msg.contains("aborted"),
            "{msg}"
        );
        assert!(
            stats.aborted.load(Ordering::SeqCst),
            "the multipart upload was aborted"
        );
        assert!(!stats.completed.load(Ordering::SeqCst));
        let list = list_backups(&dest).await.unwrap();
        assert!(
            list.backups.is_empty() && list.warnings.is_empty(),
            "{list:?}"
        );
        let objects: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(dest.store().list(None))
            .await
            .unwrap();
        assert!(
            objects
                .iter()
                .all(|o| !o.location.as_ref().ends_with("manifest.json")),
            "{objects:?}"
        );
    }
}

#[tokio::test]
async fn bad_inputs_are_refused_before_uploading() {
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination::parse("memory://").unwrap();
    let not_db = dir.path().join("not.sqlite");
    std::fs::write(&not_db, vec![7u8; 4096]).unwrap();
    let err = create_backup(&not_db, meta(1), &dest, &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::NotSqlite { .. }), "{err}");
    let err = create_backup(
        &dir.path().join("missing"),
        meta(1),
        &dest,
        &CreateOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BackupError::Source { .. }), "{err}");

    let db = dir.path().join("snap.sqlite");
    make_db(&db, 10);
    let mut bad = meta(1);
    bad.cluster_id = "../escape".into();
    let err = create_backup(&db, bad, &dest, &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::InvalidMeta { .. }), "{err}");
    let opts = CreateOptions {
        level: 99,
        encryption: None,
    };
    let err = create_backup(&db, meta(1), &dest, &opts).await.unwrap_err();
    assert!(matches!(err, BackupError::InvalidOptions { .. }), "{err}");

    // A database whose last transactions are still in its WAL.
    let wal_db = dir.path().join("wal.sqlite");
    let conn = rusqlite::Connection::open(&wal_db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let err = create_backup(&wal_db, meta(1), &dest, &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::NotSqlite { .. }), "{err}");
    assert!(err.to_string().contains("-wal"), "{err}");
    drop(conn);

    assert!(list_backups(&dest).await.unwrap().backups.is_empty());
    assert!(list_backups(&dest).await.unwrap().incomplete.is_empty());
}

/// The real `zstd` CLI (and age's format via the age crate, since the age CLI is not installed
/// here) decodes what we store: `age -d -i key | zstd -d > db.sqlite`.
#[tokio::test]
async fn the_zstd_cli_decodes_the_stored_object() {
    let zstd_cli = ["/usr/bin/zstd", "/usr/local/bin/zstd"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(zstd_cli) = zstd_cli else {
        eprintln!("SKIPPED: no zstd command-line tool installed; the crate decoders prove the format in the other tests");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("snap.sqlite");
    make_db(&db, 3000);
    let dest = Destination::parse(&format!("file://{}/store", dir.path().display())).unwrap();

    let key = age::x25519::Identity::generate();
    let enc = Encryption::recipients([key.to_public().to_string()]).unwrap();
    for encryption in [None, Some(enc)] {
        let encrypted = encryption.is_some();
        let (id, _) = backup(&db, &dest, 1, encryption).await;
        let name = if encrypted {
            "db.sqlite.zst.age"
        } else {
            "db.sqlite.zst"
        };
        let stored_path = dir
            .path()
            .join("store/c1/backups")
            .join(id.set())
            .join(name);
        // `age -d -i key` (by the age crate) ...
        let zst = dir.path().join("piped.zst");
        if encrypted {
            let f = std::fs::File::open(&stored_path).unwrap();
            let decryptor = age::Decryptor::new(f).unwrap();
            let mut reader = decryptor
                .decrypt(std::iter::once(&key as &dyn age::Identity))
                .unwrap();
            let mut out = std::fs::File::create(&zst).unwrap();
            std::io::copy(&mut reader, &mut out).unwrap();
        } else {
            std::fs::copy(&stored_path, &zst).unwrap();
        }
        // ... `| zstd -d > db.sqlite` (the real CLI).
        let restored = dir.path().join("cli.sqlite");
        let status = std::process::Command::new(zstd_cli)
            .arg("-d")
            .arg("-q")
            .arg("-f")
            .arg(&zst)
            .arg("-o")
            .arg(&restored)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(std::fs::read(&restored).unwrap() == std::fs::read(&db).unwrap());
        // The frame records its content size and a checksum (zstd -l shows both).
        let out = std::process::Command::new(zstd_cli)
            .arg("-lv")
            .arg(&zst)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Check: XXH64"), "{text}");
    }
}

/// `OpenSource` on `db` with a spill hook: the spill is asked for once `after` bytes were
/// read (paced so that it comes mid-file); `take_rest` copies the rest, or fails when `fail`.
/// Returns the backup's manifest and the byte counts the hook was given.
async fn backup_with_spill(
    db: &Path,
    dest: &Destination,
    index: u64,
    fail: bool,
) -> (Manifest, Arc<std::sync::Mutex<Vec<u64>>>) {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    let requested = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let scratch = db.with_extension("rest");
    let take_rest = {
        let (seen, scratch) = (seen.clone(), scratch.clone());
        Box::new(move |source: &mut std::fs::File, rest: u64| {
            seen.lock().unwrap().push(rest);
            if fail {
                return Err(std::io::Error::other("no room for the copy"));
            }
            let mut copy = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&scratch)?;
            std::io::copy(&mut (&*source).take(rest), &mut copy)?;
            std::io::Seek::rewind(&mut copy)?;
            // The source may change from here on: the backup must not read it again.
            std::fs::write(db_of(&scratch), b"overwritten after the spill")?;
            Ok(copy)
        })
    };
    let source = raftlite_backup::OpenSource {
        file: std::fs::File::open(db).unwrap(),
        path: db.to_path_buf(),
        state: raftlite_store::MetaState::default(),
        // 4 MiB/s: the 3 MiB file takes most of a second, the spill comes after 0.2 s.
        pace: Some(Arc::new(AtomicU64::new(4 << 20))),
        spill: Some(raftlite_backup::Spill {
            requested: requested.clone(),
            take_rest,
        }),
    };
    let flip = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        requested.store(true, Ordering::Relaxed);
    });
    let opts = CreateOptions {
        level: 3,
        encryption: None,
    };
    let manifest = raftlite_backup::create_backup_open(
        source,
        meta(index),
        dest,
        &opts,
        std::future::ready(Ok(())),
    )
    .await
    .unwrap();
    flip.await.unwrap();
    (manifest, seen)
}

/// The database a spill scratch file `<name>.rest` was copied from: `<name>.sqlite`.
fn db_of(scratch: &Path) -> std::path::PathBuf {
    scratch.with_extension("sqlite")
}

#[tokio::test]
async fn a_spilled_source_backs_up_the_same_bytes_and_a_failed_spill_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination::parse("memory://").unwrap();

    let db = dir.path().join("spilled.sqlite");
    make_random_db(&db, 3);
    let original = std::fs::read(&db).unwrap();
    let (manifest, seen) = backup_with_spill(&db, &dest, 20, false).await;
    let rest = seen.lock().unwrap().clone();
    assert_eq!(rest.len(), 1, "one spill: {rest:?}");
    assert!(
        rest[0] > 0 && rest[0] < original.len() as u64,
        "the spill came mid-file: {rest:?} of {}",
        original.len()
    );
    let list = list_backups(&dest).await.unwrap();
    let id = id_of(&manifest, &list);
    let restored = dir.path().join("restored.sqlite");
    download_backup(&dest, &id, None, &restored).await.unwrap();
    assert!(
        std::fs::read(&restored).unwrap() == original,
        "the backup differs from the file as it was before the spill"
    );

    let db = dir.path().join("kept.sqlite");
    make_random_db(&db, 3);
    let original = std::fs::read(&db).unwrap();
    let (manifest, seen) = backup_with_spill(&db, &dest, 21, true).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    let list = list_backups(&dest).await.unwrap();
    let id = id_of(&manifest, &list);
    let restored = dir.path().join("restored-kept.sqlite");
    download_backup(&dest, &id, None, &restored).await.unwrap();
    assert!(
        std::fs::read(&restored).unwrap() == original,
        "after a failed spill the backup reads on from the source"
    );
}
