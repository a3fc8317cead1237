//! `prune` against real stores: what it deletes, in which order, what it leaves alone, and how
//! it reports a set it could not delete.

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{make_db, meta};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use raftlite_backup::{
    create_backup, list_backups, mark_verified, prune, BackupError, BackupId, BackupMeta,
    CreateOptions, Destination, RetentionPolicy,
};

/// Wraps a store: records every delete in order, can fail deletes of chosen objects and
/// every listing.
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn ObjectStore>,
    deletes: Arc<Mutex<Vec<String>>>,
    fail_delete_containing: Option<String>,
    fail_list: bool,
}

impl Recorder {
    fn new(inner: Arc<dyn ObjectStore>) -> Recorder {
        Recorder {
            inner,
            deletes: Arc::default(),
            fail_delete_containing: None,
            fail_list: false,
        }
    }
}

impl fmt::Display for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recorder({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Recorder {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        let deletes = self.deletes.clone();
        let fail = self.fail_delete_containing.clone();
        let inner = self.inner.clone();
        locations
            .and_then(move |path| {
                let deletes = deletes.clone();
                let fail = fail.clone();
                let inner = inner.clone();
                async move {
                    if fail.is_some_and(|f| path.as_ref().contains(&f)) {
                        return Err(object_store::Error::Generic {
                            store: "Recorder",
                            source: format!("injected failure deleting {path}").into(),
                        });
                    }
                    deletes.lock().unwrap().push(path.to_string());
                    inner.delete(&path).await.map(|()| path)
                }
            })
            .boxed()
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.fail_list {
            return futures::stream::once(async {
                Err(object_store::Error::Generic {
                    store: "Recorder",
                    source: "injected listing failure".into(),
                })
            })
            .boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn backup(dest: &Destination, db: &Path, meta: BackupMeta) -> BackupId {
    let manifest = create_backup(db, meta, dest, &CreateOptions::default())
        .await
        .unwrap();
    // Set names carry milliseconds: keep creation times apart so the order is unambiguous.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    manifest.id().unwrap()
}

fn meta_of(cluster: &str, log_index: u64) -> BackupMeta {
    BackupMeta {
        cluster_id: cluster.into(),
        ..meta(log_index)
    }
}

async fn put(store: &Arc<dyn ObjectStore>, path: &str) {
    store
        .put(&ObjectPath::from(path), PutPayload::from_static(b"x"))
        .await
        .unwrap();
}

async fn all_objects(store: &Arc<dyn ObjectStore>) -> BTreeSet<String> {
    store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

fn set_dir(id: &BackupId) -> String {
    format!("root/{}/backups/{}/", id.cluster_id(), id.set())
}

fn keep_last(n: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_last: Some(n),
        ..RetentionPolicy::default()
    }
}

#[tokio::test]
async fn prune_deletes_manifest_first_and_cleans_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    make_db(&db, 20);
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let recorder = Arc::new(Recorder::new(memory.clone()));
    let deletes = recorder.deletes.clone();
    let dest = Destination::from_store(recorder, "root", "recorder://root").unwrap();

    // Two uploads for one schedule slot: the later leader's (term 2) counts, term 1's is
    // superseded.
    let slot = Some(now_ms() - 60_000);
    let superseded = backup(
        &dest,
        &db,
        BackupMeta {
            leader_term: Some(1),
            slot_unix_ms: slot,
            ..meta_of("c1", 10)
        },
    )
    .await;
    let slot_winner = backup(
        &dest,
        &db,
        BackupMeta {
            leader_term: Some(2),
            slot_unix_ms: slot,
            ..meta_of("c1", 11)
        },
    )
    .await;
    let mut c1 = Vec::new();
    for i in 1..=4 {
        c1.push(backup(&dest, &db, meta_of("c1", i)).await);
    }
    mark_verified(&dest, &c1[0], now_ms()).await.unwrap();
    let mut c2 = Vec::new();
    for i in 1..=3 {
        c2.push(backup(&dest, &db, meta_of("c2", i)).await);
    }

    // Garbage and bystanders.
    let old_incomplete = BackupId::new("c1", "20200101T000000.000Z-1-99").unwrap();
    put(
        &memory,
        &format!("{}db.sqlite.zst", set_dir(&old_incomplete)),
    )
    .await;
    put(
        &memory,
        &format!("{}verified.json", set_dir(&old_incomplete)),
    )
    .await;
    let fresh_incomplete = BackupId::for_backup("c1", now_ms(), 1, 100).unwrap();
    put(
        &memory,
        &format!("{}db.sqlite.zst", set_dir(&fresh_incomplete)),
    )
    .await;
    let old_c2_incomplete = BackupId::new("c2", "20200101T000000.000Z-1-98").unwrap();
    put(
        &memory,
        &format!("{}db.sqlite.zst", set_dir(&old_c2_incomplete)),
    )
    .await;
    let unnamed_incomplete = BackupId::new("c1", "handmade").unwrap();
    put(
        &memory,
        &format!("{}db.sqlite.zst", set_dir(&unnamed_incomplete)),
    )
    .await;
    let bad_manifest = BackupId::new("c1", "20190101T000000.000Z-1-5").unwrap();
    put(&memory, &format!("{}manifest.json", set_dir(&bad_manifest))).await;
    for outside in [
        "root/c1/backups/README",
        "root/c1/notes.txt",
        "elsewhere/c1/backups/x",
    ] {
        put(&memory, outside).await;
    }
    let before = all_objects(&memory).await;

    // Dry run: the full plan, nothing deleted.
    let now = now_ms() + 1_000;
    let report = prune(&dest, Some("c1"), &keep_last(2), now, true)
        .await
        .unwrap();
    assert!(report.dry_run);
    let kept: Vec<(BackupId, Vec<&str>)> = report.kept.clone();
    assert_eq!(
        kept,
        vec![
            (c1[3].clone(), vec!["last", "newest"]),
            (c1[2].clone(), vec!["last"]),
            (c1[0].clone(), vec!["newest-verified"]),
        ]
    );
    assert_eq!(report.deleted, vec![c1[1].clone(), slot_winner.clone()]);
    let cleaned: BTreeSet<BackupId> = report.cleaned.iter().cloned().collect();
    assert_eq!(
        cleaned,
        BTreeSet::from([superseded.clone(), old_incomplete.clone()])
    );
    assert!(report.failed.is_empty());
    assert!(deletes.lock().unwrap().is_empty());
    assert_eq!(all_objects(&memory).await, before);

    // The real thing.
    let report = prune(&dest, Some("c1"), &keep_last(2), now, false)
        .await
        .unwrap();
    assert!(!report.dry_run);
    assert_eq!(report.kept, kept);
    assert_eq!(report.deleted, vec![c1[1].clone(), slot_winner.clone()]);
    assert_eq!(
        report.cleaned.iter().cloned().collect::<BTreeSet<_>>(),
        cleaned
    );
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    // Every set went manifest first, then everything else in it.
    let deletes = deletes.lock().unwrap().clone();
    for id in [&c1[1], &slot_winner, &superseded] {
        let dir = set_dir(id);
        let in_set: Vec<&String> = deletes.iter().filter(|d| d.starts_with(&dir)).collect();
        assert_eq!(
            in_set.first().unwrap().as_str(),
            format!("{dir}manifest.json")
        );
        assert!(
            in_set.contains(&&format!("{dir}db.sqlite.zst")),
            "{in_set:?}"
        );
    }
    assert!(deletes.contains(&format!("{}verified.json", set_dir(&old_incomplete))));
    assert!(
        deletes
            .iter()
            .all(|d| [&c1[1], &slot_winner, &superseded, &old_incomplete]
                .iter()
                .any(|id| d.starts_with(&set_dir(id)))),
        "{deletes:?}"
    );

    // What remains: exactly the objects of the other sets, and the bystanders.
    let after = all_objects(&memory).await;
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert!(
        gone.iter().all(|o| deletes.contains(o)),
        "{gone:?} vs {deletes:?}"
    );
    for id in [&c1[1], &slot_winner, &superseded, &old_incomplete] {
        assert!(!after.iter().any(|o| o.starts_with(&set_dir(id))), "{id}");
    }
    for id in c1[0..1].iter().chain(&c1[2..]).chain(&c2).chain([
        &fresh_incomplete,
        &old_c2_incomplete,
        &unnamed_incomplete,
        &bad_manifest,
    ]) {
        assert!(after.iter().any(|o| o.starts_with(&set_dir(id))), "{id}");
    }
    for outside in [
        "root/c1/backups/README",
        "root/c1/notes.txt",
        "elsewhere/c1/backups/x",
    ] {
        assert!(after.contains(outside), "{outside}");
    }
    let listing = list_backups(&dest).await.unwrap();
    let ids: Vec<BackupId> = listing.backups.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        ids,
        vec![
            c2[2].clone(),
            c2[1].clone(),
            c2[0].clone(),
            c1[3].clone(),
            c1[2].clone(),
            c1[0].clone()
        ]
    );
    assert!(listing.superseded.is_empty());
    assert_eq!(listing.verified, BTreeSet::from([c1[0].clone()]));

    // Without a cluster, each cluster on its own: c2 keeps its newest two.
    let report = prune(&dest, None, &keep_last(2), now, false).await.unwrap();
    assert_eq!(report.deleted, vec![c2[0].clone()]);
    assert_eq!(report.cleaned, vec![old_c2_incomplete.clone()]);
    assert_eq!(report.kept.len(), 5);
}

#[tokio::test]
async fn a_set_that_cannot_be_deleted_is_reported_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    make_db(&db, 5);
    let memory: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let plain = Destination::from_store(memory.clone(), "root", "memory://root").unwrap();
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(backup(&plain, &db, meta_of("c1", i)).await);
    }

    let mut recorder = Recorder::new(memory.clone());
    recorder.fail_delete_containing = Some(format!("{}/db.sqlite.zst", ids[1].set()));
    let dest = Destination::from_store(Arc::new(recorder), "root", "recorder://root").unwrap();
    let report = prune(&dest, None, &keep_last(1), now_ms(), false)
        .await
        .unwrap();
    assert_eq!(report.deleted, vec![ids[2].clone(), ids[0].clone()]);
    assert_eq!(report.failed.len(), 1);
    let (failed, reason) = &report.failed[0];
    assert_eq!(failed, &ids[1]);
    assert!(
        reason.contains("injected failure") && reason.contains("later prune"),
        "{reason}"
    );
    // Its manifest went first, so it no longer counts as a backup; its data is still there,
    // an incomplete set for a later prune.
    let listing = list_backups(&plain).await.unwrap();
    assert_eq!(listing.backups.len(), 1);
    assert_eq!(listing.incomplete, vec![ids[1].clone()]);

    // A destination that cannot be listed is an error, not an empty report.
    let mut broken = Recorder::new(memory.clone());
    broken.fail_list = true;
    let dest = Destination::from_store(Arc::new(broken), "root", "recorder://root").unwrap();
    let err = prune(&dest, None, &keep_last(1), now_ms(), false)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::List { .. }), "{err}");
}

#[tokio::test]
async fn prune_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    make_db(&db, 5);
    let root = dir.path().join("dest");
    let dest = Destination::parse(&format!("file://{}", root.display())).unwrap();
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(backup(&dest, &db, meta(i)).await);
    }
    let set_path = |id: &BackupId| root.join(id.cluster_id()).join("backups").join(id.set());
    let old = root.join("c1/backups/20200101T000000.000Z-1-7");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("db.sqlite.zst"), b"partial").unwrap();

    let policy = RetentionPolicy {
        keep_within: Some(std::time::Duration::from_secs(3600)),
        keep_last: Some(1),
        ..RetentionPolicy::default()
    };
    // An hour and a half later, only keep-last holds.
    let later = now_ms() + 90 * 60_000;
    let dry = prune(&dest, None, &policy, later, true).await.unwrap();
    assert_eq!(dry.deleted, vec![ids[1].clone(), ids[0].clone()]);
    assert!(set_path(&ids[0]).join("manifest.json").is_file());
    assert!(old.join("db.sqlite.zst").is_file());

    let report = prune(&dest, None, &policy, later, false).await.unwrap();
    assert_eq!(report.deleted, dry.deleted);
    assert_eq!(
        report.cleaned,
        vec![BackupId::new("c1", "20200101T000000.000Z-1-7").unwrap()]
    );
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for id in &ids[..2] {
        assert!(!set_path(id).join("db.sqlite.zst").exists(), "{id}");
        assert!(!set_path(id).join("manifest.json").exists(), "{id}");
    }
    assert!(!old.join("db.sqlite.zst").exists());
    assert!(set_path(&ids[2]).join("manifest.json").is_file());

    // Within the hour, keep-within holds everything that is left; nothing to do twice.
    let again = prune(&dest, None, &policy, now_ms(), false).await.unwrap();
    assert_eq!(
        again.kept,
        vec![(ids[2].clone(), vec!["last", "within", "newest"])]
    );
    assert!(again.deleted.is_empty() && again.cleaned.is_empty());
}
