//! Creating a backup set: SQLite file -> sha256 -> zstd -> (age) -> sha256 -> multipart upload,
//! then `manifest.json`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use raftlite_store::MetaState;
use tokio::sync::mpsc;

use crate::crypto::Encryption;
use crate::destination::Destination;
use crate::error::BackupError;
use crate::incremental::{PageDigests, PageHasher};
use crate::manifest::{
    check_segment, rfc3339, BackupId, BackupKind, Compression, Manifest, ParentRef, TimelineRef,
    FULL_FORMAT_VERSION, INCREMENTAL_FORMAT_VERSION, MANIFEST_FILE,
};
use crate::pipe::{ChannelWriter, Digester, CHANNEL_DEPTH};

/// Size of one multipart part. S3 requires at least 5 MiB for every part but the last.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploading at once. With the part being filled, the upload side holds at most
/// `(PARTS_IN_FLIGHT + 1) * PART_SIZE` bytes.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Bytes read from the SQLite file at a time.
const READ_BYTES: usize = 256 * 1024;
/// zstd worker threads at most (each holds a few MiB of window and job buffers).
const MAX_ZSTD_WORKERS: usize = 2;
/// Bytes of one zstd multi-threaded job (see `compress`).
const ZSTD_JOB_BYTES: u32 = 2 << 20;

/// Where the backed-up database stands: what the manifest records about its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupMeta {
    /// Names the folder under the destination prefix: `[A-Za-z0-9._-]`, 1-128 characters.
    pub cluster_id: String,
    /// The node taking the backup.
    pub node_id: u64,
    pub timeline: TimelineRef,
    /// Raft log position the file reflects.
    pub log_index: u64,
    pub log_term: u64,
    /// Index of the last entry that changed user data (see `MetaState::data_changed_index`):
    /// what skip-if-unchanged compares.
    pub data_changed_index: Option<u64>,
    /// The Raft term of the leader taking the backup: of two uploads for one schedule slot,
    /// the higher term counts.
    pub leader_term: Option<u64>,
    /// The schedule slot (Unix ms of its start) this backup was taken for; `None` when taken
    /// on request.
    pub slot_unix_ms: Option<i64>,
}

impl BackupMeta {
    /// From the [`MetaState`] that `Store::snapshot_to` returned for the file being backed up.
    /// Fails for a database that has no timeline yet (nothing was ever bootstrapped).
    /// The meta of a backup of a raftlite database: the cluster id is the id of the cluster's
    /// first timeline (the bootstrap one), which every later timeline keeps in its history, so
    /// all backups of one cluster share a folder across restores and leader changes.
    pub fn of_database(node_id: u64, state: &MetaState) -> Result<BackupMeta, BackupError> {
        let cluster_id = state
            .timeline_history
            .first()
            .map(|t| t.id.clone())
            .ok_or_else(|| BackupError::InvalidMeta {
                reason: "the database has no timeline yet; back up after the cluster has \
                         bootstrapped (a leader initializes the timeline)"
                    .into(),
            })?;
        BackupMeta::from_meta_state(cluster_id, node_id, state)
    }

    pub fn from_meta_state(
        cluster_id: impl Into<String>,
        node_id: u64,
        state: &MetaState,
    ) -> Result<BackupMeta, BackupError> {
        let timeline = state.timeline().ok_or_else(|| BackupError::InvalidMeta {
            reason: "the database has no timeline yet; back up after the cluster has \
                     bootstrapped (a leader initializes the timeline)"
                .into(),
        })?;
        let applied = state.applied.unwrap_or_default();
        Ok(BackupMeta {
            cluster_id: cluster_id.into(),
            node_id,
            timeline: TimelineRef {
                id: timeline.id.clone(),
                counter: timeline.counter,
            },
            log_index: applied.index,
            log_term: applied.term,
            data_changed_index: Some(state.data_changed_index()),
            leader_term: None,
            slot_unix_ms: None,
        })
    }

    fn check(&self) -> Result<(), BackupError> {
        check_segment(&self.cluster_id).map_err(|reason| BackupError::InvalidMeta {
            reason: format!("cluster id {:?}: {reason}", self.cluster_id),
        })?;
        if self.timeline.id.is_empty() {
            return Err(BackupError::InvalidMeta {
                reason: "the timeline id is empty".into(),
            });
        }
        Ok(())
    }
}

/// How to compress and encrypt.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// zstd level (1-22; 3 is zstd's default, a good speed/size balance).
    pub level: i32,
    /// `None` stores `db.sqlite.zst`; `Some` stores `db.sqlite.zst.age`.
    pub encryption: Option<Encryption>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            level: 3,
            encryption: None,
        }
    }
}

/// What the SQLite header says.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SourceInfo {
    pub(crate) page_size: u32,
    pub(crate) page_count: u64,
    pub(crate) len: u64,
}

/// Backs up `source`, a consistent SQLite file nobody writes to (as `Store::snapshot_to`
/// makes), to `dest`, and returns the manifest written.
///
/// The file is read once and streamed: sha256 of the plain bytes, zstd (multi-threaded, one
/// standard frame with content checksum), optionally age, sha256 of the stored bytes, and a
/// multipart upload of `PART_SIZE` parts, `PARTS_IN_FLIGHT` at a time. Memory stays bounded
/// whatever the file size: about `(PARTS_IN_FLIGHT + 1) * PART_SIZE` on the upload side, the
/// channel between the halves (`4 x 256 KiB`), a 256 KiB read buffer, age's 64 KiB chunk and
/// zstd's window/job buffers (a few MiB at the default level).
///
/// `manifest.json` is written last, only after the data object is complete. If anything fails
/// the multipart upload is aborted and no manifest is written, so readers never see the set.
/// If this future is dropped midway, the in-flight part uploads are cancelled but the store may
/// keep an unfinished multipart upload (S3: configure a lifecycle rule that aborts incomplete
/// multipart uploads); no manifest is written either way.
pub async fn create_backup(
    source: &Path,
    meta: BackupMeta,
    dest: &Destination,
    opts: &CreateOptions,
) -> Result<Manifest, BackupError> {
    create_backup_fenced(source, meta, dest, opts, std::future::ready(Ok(()))).await
}

/// [`create_backup`], with `fence` awaited after the data object is complete and before the
/// manifest is written: an `Err(reason)` (e.g. "this node is no longer the leader of term 7")
/// discards the upload and fails with [`BackupError::Fenced`], so a node that lost its right
/// to back up never publishes a set.
pub async fn create_backup_fenced(
    source: &Path,
    meta: BackupMeta,
    dest: &Destination,
    opts: &CreateOptions,
    fence: impl std::future::Future<Output = Result<(), String>>,
) -> Result<Manifest, BackupError> {
    let label = dest.label();
    let (info, file) = {
        let source = source.to_path_buf();
        let meta = meta.clone();
        run_blocking(
            &label,
            move || -> Result<(SourceInfo, File), BackupError> {
                let info = inspect_source(&source, &meta)?;
                let file = File::open(&source).map_err(|e| BackupError::Source {
                    path: source.clone(),
                    source: e,
                })?;
                Ok((info, file))
            },
        )
        .await??
    };
    upload(
        source,
        file,
        info,
        meta,
        dest,
        opts,
        fence,
        Reading::default(),
        UploadKind::Full,
    )
    .await
    .map(|created| created.manifest)
}

/// A consistent SQLite file the caller has open and keeps from changing until the backup is
/// done (`Store::pin_consistent_file`: a read transaction holds off checkpoints), with the
/// database's own meta as read in that transaction. Nothing is copied first.
pub struct OpenSource {
    pub file: File,
    /// For messages.
    pub path: PathBuf,
    pub state: MetaState,
    /// Read at most this many bytes per second (0: no limit); the caller may change it while
    /// the backup runs, e.g. to yield disk and CPU to a burst of writes.
    pub pace: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// A way to stop keeping the file unchanged before the backup is done; `None`: it is kept
    /// to the end.
    pub spill: Option<Spill>,
}

/// How a backup lets go of its pinned source early: while the source is pinned, the database's
/// WAL cannot be checkpointed and grows with every write, for as long as the (paced) upload
/// takes. Once `requested` is set, the backup hands the part it has not read yet to `take_rest`,
/// which copies it at local disk speed to a file that nobody changes, releases the pin, and
/// returns that copy; the backup reads on from the copy. The bytes read are the same either way.
pub struct Spill {
    /// Set, at any time, to ask for the spill; it happens before the next read.
    pub requested: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Given the source positioned at the first unread byte and the number of bytes left, copies
    /// them, releases the pin and returns the copy opened at its start. An error leaves the
    /// source pinned (the backup reads on from it) and is logged.
    pub take_rest: TakeRest,
}

/// See [`Spill::take_rest`].
pub type TakeRest = Box<dyn FnOnce(&mut File, u64) -> io::Result<File> + Send>;

/// A backup just written, and the page hashes of the database it holds (the parent's side of
/// the next incremental; `None` when the file was not a whole number of pages).
pub struct Created {
    pub manifest: Manifest,
    pub pages: Option<PageDigests>,
}

/// [`create_backup_fenced`] from an [`OpenSource`]: streams the open file directly.
pub async fn create_backup_open(
    source: OpenSource,
    meta: BackupMeta,
    dest: &Destination,
    opts: &CreateOptions,
    fence: impl std::future::Future<Output = Result<(), String>>,
) -> Result<Manifest, BackupError> {
    create_full_open(source, meta, dest, opts, fence)
        .await
        .map(|created| created.manifest)
}

/// [`create_backup_open`], also hashing every page as the file passes (for the manifest's
/// `pages_digest` and the next incremental).
pub async fn create_full_open(
    source: OpenSource,
    meta: BackupMeta,
    dest: &Destination,
    opts: &CreateOptions,
    fence: impl std::future::Future<Output = Result<(), String>>,
) -> Result<Created, BackupError> {
    let label = dest.label();
    let OpenSource {
        file,
        path,
        state,
        pace,
        spill,
    } = source;
    check_meta_agrees(&state, &meta).map_err(|reason| BackupError::MetaMismatch {
        path: path.clone(),
        reason,
    })?;
    let (info, file) = {
        let path = path.clone();
        run_blocking(&label, move || {
            read_sqlite_header(&file, &path).map(|info| (info, file))
        })
        .await??
    };
    let reading = Reading {
        pace,
        spill,
        pages: Some(PageHasher::new(info.page_size)),
    };
    upload(
        &path,
        file,
        info,
        meta,
        dest,
        opts,
        fence,
        reading,
        UploadKind::Full,
    )
    .await
}

/// An incremental's page-frame file, written by the caller (see
/// [`crate::incremental::write_page_frames`]), and what its manifest records.
pub struct IncrementalUpload {
    /// The plain page-frame file.
    pub frames: PathBuf,
    pub parent: ParentRef,
    /// The page hashes of the database the frames rebuild.
    pub pages: PageDigests,
    /// The parent's chain depth and delta bytes plus this link's.
    pub chain_depth: u32,
    pub chain_delta_bytes: u64,
}

/// Uploads an incremental set: the page-frame file compressed and encrypted like a full
/// backup, then the manifest (kind, parent, page digests, chain), last.
pub async fn create_incremental(
    upload_source: IncrementalUpload,
    meta: BackupMeta,
    dest: &Destination,
    opts: &CreateOptions,
    fence: impl std::future::Future<Output = Result<(), String>>,
) -> Result<Created, BackupError> {
    let frames = upload_source.frames.clone();
    let file = File::open(&frames).map_err(|source| BackupError::Source {
        path: frames.clone(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|source| BackupError::Source {
            path: frames.clone(),
            source,
        })?
        .len();
    let info = SourceInfo {
        page_size: upload_source.pages.page_size(),
        page_count: upload_source.pages.page_count(),
        len,
    };
    upload(
        &frames,
        file,
        info,
        meta,
        dest,
        opts,
        fence,
        Reading::default(),
        UploadKind::Incremental(upload_source),
    )
    .await
}

/// What [`upload`] stores: the database, or an incremental's page frames.
enum UploadKind {
    Full,
    Incremental(IncrementalUpload),
}

/// How the source is read: its pace, and whether it may be spilled (see [`OpenSource`]).
#[derive(Default)]
struct Reading {
    pace: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    spill: Option<Spill>,
    /// Hashes the pages as they are read (a full backup of a database).
    pages: Option<PageHasher>,
}

/// The common part: checks, then streams `file` (read from its start) up as a set.
#[allow(clippy::too_many_arguments)]
async fn upload(
    source: &Path,
    file: File,
    info: SourceInfo,
    meta: BackupMeta,
    dest: &Destination,
    opts: &CreateOptions,
    fence: impl std::future::Future<Output = Result<(), String>>,
    reading: Reading,
    kind: UploadKind,
) -> Result<Created, BackupError> {
    meta.check()?;
    let levels = zstd::compression_level_range();
    if !levels.contains(&opts.level) {
        return Err(BackupError::InvalidOptions {
            reason: format!(
                "zstd level {} is outside {}..={}",
                opts.level,
                levels.start(),
                levels.end()
            ),
        });
    }
    let label = dest.label();

    let created_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let id = BackupId::for_backup(
        &meta.cluster_id,
        created_at_unix_ms,
        meta.timeline.counter,
        meta.log_index,
    )?;
    let set_dir = dest.set_dir(&id);
    let object_name = match (&kind, opts.encryption.is_some()) {
        (UploadKind::Full, true) => crate::manifest::DATA_FILE_ENCRYPTED,
        (UploadKind::Full, false) => crate::manifest::DATA_FILE,
        (UploadKind::Incremental(_), true) => crate::manifest::PAGES_FILE_ENCRYPTED,
        (UploadKind::Incremental(_), false) => crate::manifest::PAGES_FILE,
    };
    let object_path = set_dir.clone().join(object_name);
    let manifest_path = set_dir.join(MANIFEST_FILE);
    let upload_error = |source: object_store::Error| BackupError::Upload {
        dest: label.clone(),
        object: format!("{id}/{object_name}"),
        source: Box::new(source),
    };

    match dest.store().head(&manifest_path).await {
        Ok(_) => {
            return Err(BackupError::AlreadyExists {
                id,
                dest: label.clone(),
            })
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(upload_error(e)),
    }

    let upload = dest
        .store()
        .put_multipart(&object_path)
        .await
        .map_err(upload_error)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let encoder = {
        let encryption = opts.encryption.clone();
        let level = opts.level;
        run_in_background(move || encode(file, info.len, level, encryption, tx, reading))
    };

    let mut failed_part = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            failed_part = Some(e);
            break;
        }
        writer.put(chunk);
    }
    // The encoder sees a closed channel and stops if we stopped early.
    drop(rx);
    let encoded = encoder.await;

    if let Some(e) = failed_part {
        abort_upload(writer, &label).await;
        return Err(upload_error(e));
    }
    let encoded = match encoded {
        Ok(Ok(encoded)) => encoded,
        Ok(Err(e)) => {
            abort_upload(writer, &label).await;
            return Err(e.into_error(source, &label));
        }
        Err(join) => {
            abort_upload(writer, &label).await;
            return Err(BackupError::Internal {
                dest: label.clone(),
                reason: format!("the compression thread failed: {join}"),
            });
        }
    };
    // `finish` aborts the upload itself when a part or the completion fails.
    writer.finish().await.map_err(upload_error)?;
    if let Err(reason) = fence.await {
        let _ = dest.store().delete(&object_path).await;
        return Err(BackupError::Fenced {
            id,
            dest: label.clone(),
            reason,
        });
    }

    let (plain_size, plain_sha256) = encoded.plain;
    let (stored_size, stored_sha256) = encoded.stored;
    let (format_version, backup_kind, parent, pages, chain_depth, chain_delta_bytes) = match kind {
        UploadKind::Full => (
            FULL_FORMAT_VERSION,
            BackupKind::Full,
            None,
            encoded.pages,
            0,
            0,
        ),
        UploadKind::Incremental(link) => (
            INCREMENTAL_FORMAT_VERSION,
            BackupKind::Incremental,
            Some(link.parent),
            Some(link.pages),
            link.chain_depth,
            link.chain_delta_bytes,
        ),
    };
    let manifest = Manifest {
        format_version,
        cluster_id: meta.cluster_id.clone(),
        node_id: meta.node_id,
        timeline: meta.timeline.clone(),
        log_index: meta.log_index,
        log_term: meta.log_term,
        created_at: rfc3339(created_at_unix_ms),
        created_at_unix_ms,
        sqlite_page_size: info.page_size,
        sqlite_page_count: info.page_count,
        plain_sha256,
        plain_size,
        stored_sha256,
        stored_size,
        compression: Compression {
            algorithm: "zstd".into(),
            level: opts.level,
        },
        encryption: opts.encryption.as_ref().map(Encryption::info),
        raftlite_version: env!("CARGO_PKG_VERSION").to_string(),
        data_changed_index: meta.data_changed_index,
        leader_term: meta.leader_term,
        slot_unix_ms: meta.slot_unix_ms,
        kind: backup_kind,
        parent,
        pages_digest: pages.as_ref().map(PageDigests::digest),
        chain_depth,
        chain_delta_bytes,
    };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Internal {
        dest: label.clone(),
        reason: format!("cannot serialize the manifest: {e}"),
    })?;
    if let Err(source) = dest
        .store()
        .put(&manifest_path, PutPayload::from(body))
        .await
    {
        // Without a manifest the object is garbage; try to remove it (readers ignore it anyway).
        let _ = dest.store().delete(&object_path).await;
        return Err(BackupError::ManifestWrite {
            id,
            dest: label.clone(),
            source: Box::new(source),
        });
    }
    tracing::info!(dest = %label, %id, kind = %manifest.kind, plain_size, stored_size, "backup written");
    Ok(Created { manifest, pages })
}

async fn abort_upload(writer: WriteMultipart, label: &str) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(dest = %label, error = %e, "aborting the multipart upload of a failed backup failed");
    }
}

/// Runs `f` on a thread of its own at the lowest CPU priority (nice 19; zstd's worker threads,
/// created from it, inherit that). A backup runs beside a node that is serving: when both want
/// the CPU, serving wins, and an idle machine still gives the backup all of it. The thread is
/// not pooled, so the lowered priority ends with it.
fn run_in_background<T, F>(f: F) -> tokio::sync::oneshot::Receiver<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("raftlite-backup-encode".into())
        .spawn(move || {
            lower_priority();
            let _ = done.send(f());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the backup's compression thread");
    }
    result
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread; failure only leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Runs `f` on the blocking pool; a panic there becomes an `Internal` error.
pub(crate) async fn run_blocking<T, F>(label: &str, f: F) -> Result<T, BackupError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackupError::Internal {
            dest: label.to_string(),
            reason: format!("a blocking task failed: {e}"),
        })
}

/// Reads the SQLite header of `path` and, when the file has a `_raftlite_meta`, checks that
/// it agrees with `meta`.
fn inspect_source(path: &Path, meta: &BackupMeta) -> Result<SourceInfo, BackupError> {
    let file = File::open(path).map_err(|source| BackupError::Source {
        path: path.to_path_buf(),
        source,
    })?;
    let info = read_sqlite_header(&file, path)?;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if std::fs::metadata(&wal)
        .map(|m| m.len() > 0)
        .unwrap_or(false)
    {
        return Err(BackupError::NotSqlite {
            path: path.to_path_buf(),
            reason: "a non-empty -wal file lies beside it, so the file alone misses committed \
                     transactions"
                .into(),
        });
    }
    let state = raftlite_store::probe(path).map_err(|e| BackupError::NotSqlite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if let Some(state) = state {
        check_meta_agrees(&state, meta).map_err(|reason| BackupError::MetaMismatch {
            path: path.to_path_buf(),
            reason,
        })?;
    }
    Ok(info)
}

/// `Err(reason)` when the database's own meta contradicts what the backup will claim. A
/// database without `_raftlite_meta` (a plain SQLite file) agrees with anything.
pub(crate) fn check_meta_agrees(state: &MetaState, meta: &BackupMeta) -> Result<(), String> {
    if let Some(applied) = state.applied {
        if applied.index != meta.log_index || applied.term != meta.log_term {
            return Err(format!(
                "the file is at log index {} term {}, the metadata says index {} term {}",
                applied.index, applied.term, meta.log_index, meta.log_term
            ));
        }
    }
    if let Some(t) = state.timeline() {
        if t.id != meta.timeline.id || t.counter != meta.timeline.counter {
            return Err(format!(
                "the file is on timeline {} #{}, the metadata says {} #{}",
                t.id, t.counter, meta.timeline.id, meta.timeline.counter
            ));
        }
    }
    Ok(())
}

/// Page size and page count from the 100-byte SQLite header, by SQLite's own rules: page size
/// at offset 16 (big-endian, 1 = 65536); the in-header page count (offset 28) is valid only if
/// non-zero and the change counter (24) equals version-valid-for (92), else size / page size.
pub(crate) fn read_sqlite_header(file: &File, path: &Path) -> Result<SourceInfo, BackupError> {
    use std::os::unix::fs::FileExt;
    let source_err = |source| BackupError::Source {
        path: path.to_path_buf(),
        source,
    };
    let not_sqlite = |reason: &str| BackupError::NotSqlite {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let len = file.metadata().map_err(source_err)?.len();
    let mut header = [0u8; 100];
    file.read_exact_at(&mut header, 0).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            not_sqlite("shorter than the 100-byte SQLite header")
        } else {
            source_err(e)
        }
    })?;
    if &header[..16] != b"SQLite format 3\0" {
        return Err(not_sqlite("no `SQLite format 3` magic"));
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u32,
        n if n >= 512 && n.is_power_of_two() => u32::from(n),
        n => return Err(not_sqlite(&format!("invalid page size {n}"))),
    };
    let in_header = u64::from(be32(28));
    let page_count = if in_header != 0 && be32(24) == be32(92) {
        in_header
    } else {
        len / u64::from(page_size)
    };
    Ok(SourceInfo {
        page_size,
        page_count,
        len,
    })
}

struct Encoded {
    plain: (u64, String),
    stored: (u64, String),
    pages: Option<PageDigests>,
}

enum EncodeError {
    Source(io::Error),
    Encode(String),
}

impl EncodeError {
    fn into_error(self, path: &Path, label: &str) -> BackupError {
        match self {
            EncodeError::Source(source) => BackupError::Source {
                path: path.to_path_buf(),
                source,
            },
            EncodeError::Encode(reason) => BackupError::Encode {
                path: path.to_path_buf(),
                dest: label.to_string(),
                reason,
            },
        }
    }
}

fn encode_io(e: io::Error) -> EncodeError {
    EncodeError::Encode(e.to_string())
}

/// The blocking half: file -> sha256 -> zstd -> (age) -> channel (sha256 of stored bytes).
fn encode(
    mut file: File,
    expected_len: u64,
    level: i32,
    encryption: Option<Encryption>,
    tx: mpsc::Sender<Bytes>,
    mut reading: Reading,
) -> Result<Encoded, EncodeError> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0)).map_err(EncodeError::Source)?;
    let sink = ChannelWriter::new(tx);
    let (sink, plain) = match encryption {
        None => compress(&mut file, sink, expected_len, level, &mut reading)?,
        Some(encryption) => {
            let encryptor = encryption.encryptor().map_err(EncodeError::Encode)?;
            let age = encryptor.wrap_output(sink).map_err(encode_io)?;
            let (age, plain) = compress(&mut file, age, expected_len, level, &mut reading)?;
            (age.finish().map_err(encode_io)?, plain)
        }
    };
    let stored = sink.finish().map_err(encode_io)?;
    Ok(Encoded {
        plain: plain.finish(),
        stored,
        pages: reading.pages.take().and_then(PageHasher::finish),
    })
}

fn compress<W: Write>(
    file: &mut File,
    out: W,
    expected_len: u64,
    level: i32,
    reading: &mut Reading,
) -> Result<(W, Digester), EncodeError> {
    let pace = reading.pace.as_deref();
    let started = std::time::Instant::now();
    // Bytes read and the moment pacing last changed, to pace from there.
    let mut paced_from = (0u64, started, 0u64);
    let mut encoder = zstd::stream::write::Encoder::new(out, level).map_err(encode_io)?;
    encoder.include_checksum(true).map_err(encode_io)?;
    encoder
        .set_pledged_src_size(Some(expected_len))
        .map_err(encode_io)?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_ZSTD_WORKERS);
    encoder.multithread(workers as u32).map_err(encode_io)?;
    if workers > 1 {
        // zstd's default job at level 3 is 8 MiB, and each worker holds its input and output:
        // smaller jobs keep a backup's memory down while the node serves.
        encoder
            .set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_BYTES))
            .map_err(encode_io)?;
    }

    let mut plain = Digester::in_background();
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        if let Some(spill) = reading
            .spill
            .take_if(|s| s.requested.load(Ordering::Relaxed))
        {
            let rest = expected_len.saturating_sub(plain.len());
            let started = std::time::Instant::now();
            match (spill.take_rest)(file, rest) {
                Ok(copy) => {
                    *file = copy;
                    // The copy's time is not reading time to make up for.
                    paced_from = (plain.len(), std::time::Instant::now(), paced_from.2);
                    tracing::info!(
                        bytes = rest,
                        secs = started.elapsed().as_secs_f64(),
                        "the backup's source was released: the rest is read from a copy"
                    );
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot copy the rest of the backup's source; reading on from the pinned \
                     file (the WAL keeps growing until the backup ends)"
                ),
            }
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(EncodeError::Source(e)),
        };
        plain.update(&buf[..n]);
        if let Some(pages) = reading.pages.as_mut() {
            pages.update(&buf[..n]);
        }
        if plain.len() > expected_len {
            break;
        }
        encoder.write_all(&buf[..n]).map_err(encode_io)?;
        if let Some(pace) = pace {
            let rate = pace.load(Ordering::Relaxed);
            if rate != paced_from.2 {
                paced_from = (plain.len(), std::time::Instant::now(), rate);
            }
            if rate > 0 {
                let due = std::time::Duration::from_secs_f64(
                    (plain.len() - paced_from.0) as f64 / rate as f64,
                );
                let elapsed = paced_from.1.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
        }
    }
    if plain.len() != expected_len {
        return Err(EncodeError::Encode(format!(
            "the file changed while it was read ({expected_len} bytes at the start, {} or more \
             read); back up a snapshot file nobody writes to",
            plain.len()
        )));
    }
    let out = encoder.finish().map_err(encode_io)?;
    Ok((out, plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "page_size", 8192).unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(20000));")
            .unwrap();
        let count: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let count = count as u64;
        drop(conn);
        let header = |p: &Path| {
            let file = File::open(p).map_err(|source| BackupError::Source {
                path: p.to_path_buf(),
                source,
            })?;
            read_sqlite_header(&file, p)
        };
        let info = header(&path).unwrap();
        assert_eq!(info.page_size, 8192);
        assert_eq!(info.page_count, count);
        assert_eq!(info.len, count * 8192);

        std::fs::write(&path, b"not a database at all, but long enough to hold a header......................................................").unwrap();
        assert!(matches!(header(&path), Err(BackupError::NotSqlite { .. })));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(header(&path), Err(BackupError::NotSqlite { .. })));
        assert!(matches!(
            header(&dir.path().join("missing")),
            Err(BackupError::Source { .. })
        ));
    }
}
