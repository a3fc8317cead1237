//! Against a real S3-compatible server (s3s-fs, in process, on 127.0.0.1): multipart upload,
//! path-style requests chosen because an endpoint is given, corruption behind the client's
//! back, and a store that goes down (bounded retries: the test never hangs).

mod common;

use std::time::Duration;

use common::{make_db, make_random_db, meta};
use raftlite_backup::secrecy::ExposeSecret;
use raftlite_backup::{
    create_backup, list_backups, verify_backup, BackupError, CreateOptions, Destination,
    Encryption, Identity,
};
use raftlite_testkit::S3TestServer;

/// The server's settings as options, minus the explicit path-style flag (the destination must
/// pick path style by itself when an endpoint is given), plus short retries.
fn destination(s3: &S3TestServer, prefix: &str) -> Destination {
    let mut options: Vec<(String, String)> = s3
        .object_store_options()
        .into_iter()
        .filter(|(k, _)| *k != "aws_virtual_hosted_style_request" && *k != "aws_bucket")
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    options.push(("max_retries".into(), "1".into()));
    options.push(("retry_timeout_secs".into(), "2".into()));
    let url = format!("s3://{}/{prefix}", s3.bucket());
    let dest = Destination::parse_with_options(&url, options).unwrap();
    let shown = format!("{dest} {dest:?}");
    assert!(!shown.contains(s3.secret_key()), "{shown}");
    dest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_corruption_and_outage() {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .expect("the S3 scenario finished in time");
}

async fn scenario() {
    let s3 = S3TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.sqlite");
    make_db(&small, 3000);
    let big = dir.path().join("big.sqlite");
    make_random_db(&big, 12); // > 2 parts of 5 MiB
    let dest = destination(&s3, "team/raftlite");

    // Plain, multipart, encrypted.
    let m1 = create_backup(&small, meta(1), &dest, &CreateOptions::default())
        .await
        .unwrap();
    let m2 = create_backup(
        &big,
        meta(2),
        &dest,
        &CreateOptions {
            level: 1,
            encryption: None,
        },
    )
    .await
    .unwrap();
    assert!(m2.stored_size > 10 * 1024 * 1024);
    let key = age::x25519::Identity::generate();
    let enc = Encryption::recipients([key.to_public().to_string()]).unwrap();
    let opts = CreateOptions {
        level: 3,
        encryption: Some(enc),
    };
    let m3 = create_backup(&small, meta(3), &dest, &opts).await.unwrap();
    let identity = Identity::from_identity_file(key.to_string().expose_secret()).unwrap();

    let list = list_backups(&dest).await.unwrap();
    assert_eq!(
        list.backups
            .iter()
            .map(|(_, m)| m.log_index)
            .collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert!(list.incomplete.is_empty() && list.warnings.is_empty());
    for (id, m) in &list.backups {
        let report = verify_backup(&dest, id, Some(&identity)).await.unwrap();
        assert_eq!(&report.manifest, m);
    }
    assert_eq!([m1.log_index, m2.log_index, m3.log_index], [1, 2, 3]);

    // The objects are where the layout says, as plain files on the server's disk.
    let (id1, _) = list.backups[2].clone();
    let key1 = format!("team/raftlite/c1/backups/{}/db.sqlite.zst", id1.set());
    let on_disk = s3.object_path(&key1);
    let original = std::fs::read(&on_disk).unwrap();
    assert_eq!(original.len() as u64, m1.stored_size);
    assert!(s3
        .object_path(&format!(
            "team/raftlite/c1/backups/{}/manifest.json",
            id1.set()
        ))
        .exists());

    // Corruption behind the client's back.
    let mut flipped = original.clone();
    let at = flipped.len() / 3;
    flipped[at] ^= 1;
    std::fs::write(&on_disk, &flipped).unwrap();
    let err = verify_backup(&dest, &id1, None).await.unwrap_err();
    assert!(
        matches!(err, BackupError::StoredHashMismatch { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("s3://raftlite-test/team/raftlite"),
        "{err}"
    );
    std::fs::write(&on_disk, &original[..original.len() - 100]).unwrap();
    let err = verify_backup(&dest, &id1, None).await.unwrap_err();
    assert!(matches!(err, BackupError::Truncated { .. }), "{err}");
    std::fs::write(&on_disk, &original).unwrap();
    verify_backup(&dest, &id1, None).await.unwrap();

    // The store goes down: a typed error after bounded retries, no manifest, no hang.
    s3.set_unavailable(true);
    let started = std::time::Instant::now();
    let err = create_backup(&small, meta(4), &dest, &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Upload { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("s3://raftlite-test/team/raftlite"), "{msg}");
    assert!(!msg.contains(s3.secret_key()), "{msg}");
    let err = list_backups(&dest).await.unwrap_err();
    assert!(matches!(err, BackupError::List { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    s3.set_unavailable(false);
    let list = list_backups(&dest).await.unwrap();
    assert_eq!(list.backups.len(), 3, "the failed backup left no set");

    // Wrong credentials: refused, and the message does not echo them.
    let bad = Destination::parse_with_options(
        &format!("s3://{}/team/raftlite", s3.bucket()),
        [
            ("aws_endpoint", s3.endpoint()),
            ("aws_allow_http", "true".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_access_key_id", "wrong-key-id".into()),
            ("aws_secret_access_key", "wrong-secret-value".into()),
            ("max_retries", "0".into()),
        ],
    )
    .unwrap();
    let err = list_backups(&bad).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BackupError::List { .. }), "{msg}");
    assert!(!msg.contains("wrong-secret-value"), "{msg}");
}
