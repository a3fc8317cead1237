//! `S3TestServer` driven by a real S3 client: object_store 0.14's `AmazonS3`.
//!
//! Every test bounds its client's retries and its own run time, so none can hang.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, Checksum, S3CopyIfNotExists,
};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, CopyMode, CopyOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, UpdateVersion, WriteMultipart,
};
use raftlite_testkit::S3TestServer;

/// Upper bound on any single test body.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its time limit")
}

/// Few, quick retries: a failure surfaces in well under a second.
fn quick_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(2),
    }
}

/// The minimal builder for the test server: endpoint, bucket, credentials, region,
/// `allow_http`. Everything else is object_store's default.
fn builder(s3: &S3TestServer) -> AmazonS3Builder {
    AmazonS3Builder::new()
        // First: `with_client_options` replaces all client options, `allow_http` included.
        .with_client_options(ClientOptions::new().with_timeout(Duration::from_secs(30)))
        .with_endpoint(s3.endpoint())
        .with_bucket_name(s3.bucket())
        .with_access_key_id(s3.access_key())
        .with_secret_access_key(s3.secret_key())
        .with_region(s3.region())
        .with_allow_http(true)
        .with_retry(quick_retry())
}

fn store(s3: &S3TestServer) -> AmazonS3 {
    builder(s3).build().expect("build AmazonS3")
}

async fn read_all(store: &AmazonS3, path: &Path) -> Bytes {
    store
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("get {path}: {e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
}

async fn list_keys(store: &AmazonS3, prefix: Option<&Path>) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(prefix)
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list");
    keys.sort();
    keys
}

/// Deterministic, non-repeating-looking test data.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn put_get_head_list_delete() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        let path = Path::from("backups/node-1/snapshot.db");
        let data = Bytes::from_static(b"hello from raftlite");
        store
            .put(&path, PutPayload::from(data.clone()))
            .await
            .expect("put");

        assert_eq!(read_all(&store, &path).await, data);
        let range = store.get_range(&path, 6..10).await.expect("get_range");
        assert_eq!(&range[..], b"from");

        let meta = store.head(&path).await.expect("head");
        assert_eq!(meta.size, data.len() as u64);
        assert!(meta.e_tag.is_some(), "s3s-fs returns an ETag");

        // The object is a plain file under root_dir()/bucket/key.
        assert_eq!(std::fs::read(s3.object_path(path.as_ref())).unwrap(), data);
        assert!(s3
            .root_dir()
            .join(s3.bucket())
            .join("backups/node-1")
            .is_dir());

        store
            .put(
                &Path::from("backups/node-2/a"),
                PutPayload::from_static(b"a"),
            )
            .await
            .expect("put a");
        assert_eq!(
            list_keys(&store, None).await,
            ["backups/node-1/snapshot.db", "backups/node-2/a"]
        );
        assert_eq!(
            list_keys(&store, Some(&Path::from("backups/node-2"))).await,
            ["backups/node-2/a"]
        );
        let listing = store
            .list_with_delimiter(Some(&Path::from("backups")))
            .await
            .expect("list_with_delimiter");
        let mut dirs: Vec<String> = listing
            .common_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect();
        dirs.sort();
        assert_eq!(dirs, ["backups/node-1", "backups/node-2"]);

        store.delete(&path).await.expect("delete");
        assert!(matches!(
            store.get(&path).await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert_eq!(list_keys(&store, None).await, ["backups/node-2/a"]);
    })
    .await;
    assert!(s3.request_count() >= 8);
}

#[tokio::test]
async fn multipart_upload_20_mib() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        let path = Path::from("big/20mib.bin");
        let data = pattern(20 * 1024 * 1024 + 12_345, 7);

        let upload = store.put_multipart(&path).await.expect("create multipart");
        // 5 MiB parts (S3's minimum for all but the last): 5 parts here.
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
        for chunk in data.chunks(1024 * 1024 + 17) {
            writer.wait_for_capacity(4).await.expect("upload part");
            writer.write(chunk);
        }
        writer.finish().await.expect("complete multipart");

        let meta = store.head(&path).await.expect("head");
        assert_eq!(meta.size, data.len() as u64);
        let got = read_all(&store, &path).await;
        assert!(
            got == data,
            "multipart object differs from what was uploaded"
        );
        assert_eq!(
            std::fs::metadata(s3.object_path("big/20mib.bin"))
                .unwrap()
                .len(),
            meta.size
        );
        // No leftover part files once the upload completed.
        let leftovers: Vec<_> = std::fs::read_dir(s3.root_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".part-"))
            .collect();
        assert!(leftovers.is_empty(), "leftover parts: {leftovers:?}");
    })
    .await;
}

#[tokio::test]
async fn aborted_multipart_leaves_no_object() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        let path = Path::from("aborted.bin");
        let mut upload = store.put_multipart(&path).await.expect("create multipart");
        upload
            .put_part(PutPayload::from(pattern(5 * 1024 * 1024, 1)))
            .await
            .expect("part");
        upload.abort().await.expect("abort");
        assert!(matches!(
            store.head(&path).await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert!(list_keys(&store, None).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn unavailable_switch_fails_then_recovers() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        let path = Path::from("down/x");
        store
            .put(&path, PutPayload::from_static(b"before"))
            .await
            .expect("put while up");

        s3.set_unavailable(true);
        assert!(s3.is_unavailable());
        let before = s3.request_count();
        let started = Instant::now();
        let err = store
            .put(&path, PutPayload::from_static(b"during"))
            .await
            .expect_err("put must fail while unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "quick_retry() bounds the failure"
        );
        let msg = err.to_string();
        assert!(msg.contains("503"), "error names the 503: {msg}");
        // The attempts reached the server (the first plus up to `max_retries` retries; fewer
        // if `retry_timeout` ran out first on a slow machine).
        let attempts = s3.request_count() - before;
        assert!((1..=3).contains(&attempts), "{attempts} attempts: {msg}");
        assert!(store.get(&path).await.is_err(), "reads fail too");
        // A large body that the server never reads still gets a clean error, not a hang.
        assert!(store
            .put(
                &Path::from("down/big"),
                PutPayload::from(pattern(4 * 1024 * 1024, 3))
            )
            .await
            .is_err());

        s3.set_unavailable(false);
        store
            .put(&path, PutPayload::from_static(b"after"))
            .await
            .expect("put after recovery");
        assert_eq!(&read_all(&store, &path).await[..], b"after");
    })
    .await;
}

#[tokio::test]
async fn recovers_while_client_retries() {
    let s3 = S3TestServer::start().expect("start");
    // A client with patient retries: the outage ends while it is still retrying.
    let store = builder(&s3)
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                base: 2.0,
            },
            max_retries: 50,
            retry_timeout: Duration::from_secs(20),
        })
        .build()
        .unwrap();
    s3.set_unavailable(true);
    let path = Path::from("retry/x");
    let put = store.put(&path, PutPayload::from_static(b"eventually"));
    let heal = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s3.set_unavailable(false);
    };
    let (res, ()) = bounded(async { tokio::join!(put, heal) }).await;
    res.expect("put succeeds once the server is back");
    assert_eq!(&read_all(&store, &path).await[..], b"eventually");
}

#[tokio::test]
async fn conditional_puts() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        let path = Path::from("manifest.json");
        let create = PutOptions::from(PutMode::Create);
        let first = store
            .put_opts(&path, PutPayload::from_static(b"v1"), create.clone())
            .await
            .expect("create");
        let err = store
            .put_opts(&path, PutPayload::from_static(b"v1 again"), create)
            .await
            .expect_err("second create must fail");
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "got {err:?}"
        );

        let update = |e_tag: Option<String>| {
            PutOptions::from(PutMode::Update(UpdateVersion {
                e_tag,
                version: None,
            }))
        };
        let second = store
            .put_opts(
                &path,
                PutPayload::from_static(b"v2"),
                update(first.e_tag.clone()),
            )
            .await
            .expect("update with current etag");
        assert_ne!(first.e_tag, second.e_tag);
        let err = store
            .put_opts(&path, PutPayload::from_static(b"v3"), update(first.e_tag))
            .await
            .expect_err("update with stale etag must fail");
        assert!(
            matches!(err, object_store::Error::Precondition { .. }),
            "got {err:?}"
        );
        assert_eq!(&read_all(&store, &path).await[..], b"v2");
    })
    .await;
}

#[tokio::test]
async fn checksum_headers_are_accepted() {
    let s3 = S3TestServer::start().expect("start");
    for algorithm in [Checksum::SHA256, Checksum::CRC64NVME] {
        let store = builder(&s3)
            .with_checksum_algorithm(algorithm)
            .build()
            .unwrap();
        bounded(async {
            let path = Path::from(format!("sum/{algorithm}"));
            store
                .put(&path, PutPayload::from_static(b"checked"))
                .await
                .unwrap_or_else(|e| panic!("put with {algorithm}: {e}"));
            assert_eq!(&read_all(&store, &path).await[..], b"checked");

            let big = Path::from(format!("sum/{algorithm}-multipart"));
            let data = pattern(6 * 1024 * 1024, 11);
            let mut upload = store.put_multipart(&big).await.expect("create multipart");
            upload
                .put_part(PutPayload::from(data[..5 * 1024 * 1024].to_vec()))
                .await
                .unwrap_or_else(|e| panic!("part 1 with {algorithm}: {e}"));
            upload
                .put_part(PutPayload::from(data[5 * 1024 * 1024..].to_vec()))
                .await
                .unwrap_or_else(|e| panic!("part 2 with {algorithm}: {e}"));
            upload
                .complete()
                .await
                .unwrap_or_else(|e| panic!("complete with {algorithm}: {e}"));
            assert!(read_all(&store, &big).await == data);
        })
        .await;
    }
}

#[tokio::test]
async fn unsigned_payload_works_too() {
    let s3 = S3TestServer::start().expect("start");
    let store = builder(&s3).with_unsigned_payload(true).build().unwrap();
    bounded(async {
        let path = Path::from("unsigned");
        store
            .put(&path, PutPayload::from_static(b"x"))
            .await
            .expect("put");
        assert_eq!(&read_all(&store, &path).await[..], b"x");
    })
    .await;
}

#[tokio::test]
async fn copy_rename_and_bulk_delete() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        let a = Path::from("c/a");
        let b = Path::from("c/b");
        store.put(&a, PutPayload::from_static(b"A")).await.unwrap();
        store.copy(&a, &b).await.expect("copy");
        assert_eq!(&read_all(&store, &b).await[..], b"A");
        store.rename(&b, &Path::from("c/r")).await.expect("rename");
        assert_eq!(list_keys(&store, None).await, ["c/a", "c/r"]);

        // copy_if_not_exists is not configured by default: refused client-side.
        let err = store
            .copy_if_not_exists(&a, &Path::from("c/new"))
            .await
            .expect_err("no copy_if_not_exists without configuration");
        assert!(
            matches!(err, object_store::Error::NotSupported { .. }),
            "got {err:?}"
        );

        for i in 0..5 {
            store
                .put(&Path::from(format!("d/{i}")), PutPayload::from_static(b"d"))
                .await
                .unwrap();
        }
        let doomed =
            futures::stream::iter((0..5).map(|i| Ok(Path::from(format!("d/{i}"))))).boxed();
        let deleted: Vec<Path> = store
            .delete_stream(doomed)
            .try_collect()
            .await
            .expect("bulk delete");
        assert_eq!(deleted.len(), 5);
        assert_eq!(list_keys(&store, None).await, ["c/a", "c/r"]);
    })
    .await;
}

#[tokio::test]
async fn copy_if_not_exists_multipart_mode() {
    let s3 = S3TestServer::start().expect("start");
    let store = builder(&s3)
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
        .build()
        .unwrap();
    bounded(async {
        let a = Path::from("m/a");
        let b = Path::from("m/b");
        store.put(&a, PutPayload::from_static(b"A")).await.unwrap();
        store
            .copy_opts(&a, &b, CopyOptions::new().with_mode(CopyMode::Create))
            .await
            .expect("first copy_if_not_exists");
        assert_eq!(&read_all(&store, &b).await[..], b"A");
        let err = store
            .copy_opts(&a, &b, CopyOptions::new().with_mode(CopyMode::Create))
            .await
            .expect_err("second copy_if_not_exists must fail");
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "got {err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn tags_are_accepted_and_ignored() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        let mut tags = object_store::TagSet::default();
        tags.push("kind", "snapshot");
        let path = Path::from("tagged");
        store
            .put_opts(
                &path,
                PutPayload::from_static(b"t"),
                PutOptions {
                    tags,
                    ..Default::default()
                },
            )
            .await
            .expect("put with tags");
        assert_eq!(&read_all(&store, &path).await[..], b"t");
    })
    .await;
}

#[tokio::test]
async fn config_keys_and_env_var_names() {
    let s3 = S3TestServer::start().expect("start");
    // object_store_options() feeds AmazonS3Builder::with_config directly.
    let mut b = AmazonS3Builder::new().with_retry(quick_retry());
    for (key, value) in s3.object_store_options() {
        let key: AmazonS3ConfigKey = key.parse().expect("known config key");
        b = b.with_config(key, value);
    }
    let store = b.build().expect("build from config keys");
    // env_vars() uses names object_store's from_env understands (lower-cased, they are
    // config keys too), so a child process using from_env gets the same settings.
    let mut from_env = AmazonS3Builder::new()
        .with_bucket_name(s3.bucket())
        .with_retry(quick_retry());
    let env = s3.env_vars();
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP",
    ] {
        assert!(env.iter().any(|(k, _)| k == name), "{name} missing");
    }
    for (k, v) in env {
        let key: AmazonS3ConfigKey = k.to_ascii_lowercase().parse().expect("known env var");
        from_env = from_env.with_config(key, v);
    }
    let from_env = from_env.build().expect("build from env vars");
    bounded(async {
        let path = Path::from("cfg");
        store
            .put(&path, PutPayload::from_static(b"c"))
            .await
            .expect("put");
        assert_eq!(&read_all(&from_env, &path).await[..], b"c");
    })
    .await;
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let s3 = S3TestServer::start().expect("start");
    let store = builder(&s3)
        .with_secret_access_key("not-the-secret")
        .build()
        .unwrap();
    bounded(async {
        let err = store
            .put(&Path::from("x"), PutPayload::from_static(b"x"))
            .await
            .expect_err("bad signature must be refused");
        assert!(err.to_string().contains("403"), "{err}");
        assert!(!s3.object_path("x").exists());
    })
    .await;
}

#[tokio::test]
async fn corrupted_object_is_served_as_stored() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        let path = Path::from("victim");
        store
            .put(&path, PutPayload::from_static(b"good data"))
            .await
            .unwrap();
        std::fs::write(s3.object_path("victim"), b"bad  data").unwrap();
        assert_eq!(&read_all(&store, &path).await[..], b"bad  data");
        std::fs::write(s3.object_path("victim"), b"short").unwrap();
        assert_eq!(&read_all(&store, &path).await[..], b"short");
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn start_and_drop_inside_a_current_thread_runtime() {
    let s3 = S3TestServer::start().expect("start");
    let store = store(&s3);
    bounded(async {
        store
            .put(&Path::from("k"), PutPayload::from_static(b"v"))
            .await
            .expect("put");
    })
    .await;
    drop(s3); // joins the server thread; must not panic inside a runtime
}
