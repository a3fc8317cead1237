//! Helpers shared by the backup tests: SQLite files, metadata, and an object store wrapper
//! that measures (and can fail) multipart uploads.
#![allow(dead_code)]

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use raftlite_backup::{BackupMeta, TimelineRef};

/// A SQLite database with `rows` rows of text and a 200-byte blob each (compressible text,
/// incompressible blobs), in rollback-journal mode as `Store::snapshot_to` leaves it.
pub fn make_db(path: &Path, rows: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload BLOB);
         CREATE INDEX items_name ON items(name);",
    )
    .unwrap();
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut stmt = conn
            .prepare("INSERT INTO items(name, payload) VALUES (?1, randomblob(200))")
            .unwrap();
        for i in 0..rows {
            stmt.execute([format!("item number {i} of the backup test")])
                .unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

/// A database of about `mib` MiB of random (incompressible) blobs.
pub fn make_random_db(path: &Path, mib: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB); BEGIN;")
        .unwrap();
    {
        let mut stmt = conn
            .prepare("INSERT INTO blobs(b) VALUES (randomblob(65536))")
            .unwrap();
        for _ in 0..mib * 16 {
            stmt.execute([]).unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

pub fn meta(log_index: u64) -> BackupMeta {
    BackupMeta {
        cluster_id: "c1".into(),
        node_id: 1,
        timeline: TimelineRef {
            id: "0123456789abcdef0123456789abcdef".into(),
            counter: 1,
        },
        log_index,
        log_term: 2,
        data_changed_index: Some(log_index),
        leader_term: None,
        slot_unix_ms: None,
    }
}

/// Wraps a store: counts parts, records the most in flight and the largest part, can fail
/// the part numbered `fail_part` (0-based), and records aborts.
#[derive(Debug)]
pub struct Probe {
    pub inner: Arc<dyn ObjectStore>,
    pub fail_part: Option<usize>,
    pub stats: Arc<Stats>,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub parts: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub max_part: AtomicUsize,
    pub aborted: AtomicBool,
    pub completed: AtomicBool,
}

impl Probe {
    pub fn new(inner: Arc<dyn ObjectStore>, fail_part: Option<usize>) -> Probe {
        Probe {
            inner,
            fail_part,
            stats: Arc::default(),
        }
    }

    pub fn memory(fail_part: Option<usize>) -> Probe {
        Probe::new(Arc::new(InMemory::new()), fail_part)
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Probe({})", self.inner)
    }
}

#[derive(Debug)]
struct ProbeUpload {
    inner: Box<dyn MultipartUpload>,
    fail_part: Option<usize>,
    stats: Arc<Stats>,
}

#[async_trait::async_trait]
impl MultipartUpload for ProbeUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let n = self.stats.parts.fetch_add(1, Ordering::SeqCst);
        self.stats
            .max_part
            .fetch_max(data.content_length(), Ordering::SeqCst);
        if self.fail_part == Some(n) {
            return Box::pin(async move {
                Err(object_store::Error::Generic {
                    store: "Probe",
                    source: format!("injected failure of part {n}").into(),
                })
            });
        }
        let now = self.stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let stats = self.stats.clone();
        let fut = self.inner.put_part(data);
        Box::pin(async move {
            // Give other parts a chance to pile up, so the bound is really exercised.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let r = fut.await;
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.stats.completed.store(true, Ordering::SeqCst);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.stats.aborted.store(true, Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl ObjectStore for Probe {
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
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(ProbeUpload {
            inner,
            fail_part: self.fail_part,
            stats: self.stats.clone(),
        }))
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
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
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
