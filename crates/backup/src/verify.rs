//! Reading a backup back: download (streaming) -> stored size + sha256 -> age -> zstd -> plain
//! size + sha256 -> a local SQLite file -> `PRAGMA integrity_check`, page size and count, and
//! the database's own `_raftlite_meta` against the manifest.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use raftlite_store::MetaState;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use crate::create::{check_meta_agrees, run_blocking, BackupMeta};
use crate::crypto::Identity;
use crate::destination::Destination;
use crate::error::BackupError;
use crate::manifest::{
    rfc3339, BackupId, EncryptionInfo, EncryptionScheme, Manifest, MANIFEST_FILE,
    MAX_MANIFEST_BYTES, VERIFIED_FILE,
};
use crate::pipe::{ChannelReader, Digester, CHANNEL_DEPTH, MESSAGE_BYTES};

/// Lines of `PRAGMA integrity_check` kept in an error.
const INTEGRITY_LINES: usize = 20;
const COPY_BYTES: usize = 256 * 1024;

/// What a successful verification (or download) checked.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub id: BackupId,
    pub manifest: Manifest,
    pub stored_size: u64,
    pub plain_size: u64,
    pub page_size: u32,
    pub page_count: u64,
    /// The database's own `_raftlite_meta` (`None` applied/timeline for a plain SQLite file).
    pub raftlite_meta: MetaState,
}

/// Reads and checks the manifest of `id`: `NotFound` if the set has none (an incomplete set).
pub async fn read_manifest(dest: &Destination, id: &BackupId) -> Result<Manifest, BackupError> {
    let label = dest.label();
    read_manifest_inner(dest, id).await.map_err(|e| match e {
        ManifestError::NotFound => BackupError::NotFound {
            id: id.clone(),
            dest: label.clone(),
        },
        ManifestError::Store(source) => BackupError::Download {
            id: id.clone(),
            dest: label.clone(),
            source: Box::new(source),
        },
        ManifestError::Bad(reason) => BackupError::BadManifest {
            id: id.clone(),
            dest: label.clone(),
            reason,
        },
    })
}

pub(crate) enum ManifestError {
    NotFound,
    Store(object_store::Error),
    Bad(String),
}

pub(crate) async fn read_manifest_inner(
    dest: &Destination,
    id: &BackupId,
) -> Result<Manifest, ManifestError> {
    let path = dest.set_dir(id).join(MANIFEST_FILE);
    let got = match dest.store().get(&path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Err(ManifestError::NotFound),
        Err(e) => return Err(ManifestError::Store(e)),
    };
    if got.meta.size > MAX_MANIFEST_BYTES {
        return Err(ManifestError::Bad(format!(
            "{} bytes, more than a manifest can be",
            got.meta.size
        )));
    }
    let body = got.bytes().await.map_err(ManifestError::Store)?;
    let manifest: Manifest = serde_json::from_slice(&body)
        .map_err(|e| ManifestError::Bad(format!("not a manifest: {e}")))?;
    manifest.check(id).map_err(ManifestError::Bad)?;
    Ok(manifest)
}

/// Downloads backup `id`, checks everything (see the module doc) and throws the file away.
/// Needs `identity` for an encrypted backup. Uses the system temp dir for the decompressed
/// file; see [`verify_backup_in`] to choose where.
pub async fn verify_backup(
    dest: &Destination,
    id: &BackupId,
    identity: Option<&Identity>,
) -> Result<VerifyReport, BackupError> {
    verify_backup_in(dest, id, identity, &std::env::temp_dir()).await
}

/// [`verify_backup`] with the decompressed file in `work_dir` (it needs the database's size
/// in free space there; the file is removed afterwards).
pub async fn verify_backup_in(
    dest: &Destination,
    id: &BackupId,
    identity: Option<&Identity>,
    work_dir: &Path,
) -> Result<VerifyReport, BackupError> {
    let tmp = temp_dir_in(dest, id, work_dir)?;
    fetch_to(dest, id, identity, &tmp.path().join("db.sqlite")).await
}

/// Downloads backup `id` as a plain SQLite file at `target`, after every check of
/// [`verify_backup`] passed: the file is written beside `target` and renamed over it (and the
/// directory fsync'd) only then, so `target` is never a half-checked file. For restores.
pub async fn download_backup(
    dest: &Destination,
    id: &BackupId,
    identity: Option<&Identity>,
    target: &Path,
) -> Result<VerifyReport, BackupError> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = temp_dir_in(dest, id, &dir)?;
    let staged = tmp.path().join("db.sqlite");
    let report = fetch_to(dest, id, identity, &staged).await?;
    install_staged(dest, id, &staged, target, &dir)?;
    Ok(report)
}

/// Renames the checked file `staged` over `target` and makes the rename durable.
fn install_staged(
    dest: &Destination,
    id: &BackupId,
    staged: &Path,
    target: &Path,
    dir: &Path,
) -> Result<(), BackupError> {
    let local = |path: &Path, source| BackupError::Local {
        id: id.clone(),
        dest: dest.label(),
        path: path.to_path_buf(),
        source,
    };
    std::fs::rename(staged, target).map_err(|e| local(target, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| local(dir, e))
}

/// Checks only what can be checked without the key: the stored object's size and sha256
/// against the manifest (for an encrypted backup when no identity is at hand). Streams; keeps
/// nothing.
pub async fn verify_stored(dest: &Destination, id: &BackupId) -> Result<Manifest, BackupError> {
    use sha2::Digest;
    let label = dest.label();
    let manifest = read_manifest(dest, id).await?;
    let object_path = dest.set_dir(id).join(manifest.object_name());
    let download = |source| BackupError::Download {
        id: id.clone(),
        dest: label.clone(),
        source: Box::new(source),
    };
    let got = dest.store().get(&object_path).await.map_err(download)?;
    check_stored_size(&manifest, got.meta.size, id, &label)?;
    let mut stream = got.into_stream();
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(download)?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    check_stored_size(&manifest, size, id, &label)?;
    let actual = raftlite_store::hex::encode(&hasher.finalize());
    if actual != manifest.stored_sha256 {
        return Err(BackupError::StoredHashMismatch {
            id: id.clone(),
            dest: label,
            expected: manifest.stored_sha256.clone(),
            actual,
        });
    }
    Ok(manifest)
}

/// Records in the set that it passed a full verification at `at_unix_ms`
/// ([`VERIFIED_FILE`]); listings report such sets in `verified`, and retention never deletes
/// the newest of them.
pub async fn mark_verified(
    dest: &Destination,
    id: &BackupId,
    at_unix_ms: i64,
) -> Result<(), BackupError> {
    let body = serde_json::json!({
        "verified_at": rfc3339(at_unix_ms),
        "verified_at_unix_ms": at_unix_ms,
        "raftlite_version": env!("CARGO_PKG_VERSION"),
    });
    let path = dest.set_dir(id).join(VERIFIED_FILE);
    dest.store()
        .put(&path, body.to_string().into_bytes().into())
        .await
        .map(|_| ())
        .map_err(|source| BackupError::Upload {
            dest: dest.label(),
            object: format!("{id}/{VERIFIED_FILE}"),
            source: Box::new(source),
        })
}

fn temp_dir_in(
    dest: &Destination,
    id: &BackupId,
    dir: &Path,
) -> Result<tempfile::TempDir, BackupError> {
    tempfile::Builder::new()
        .prefix(".raftlite-backup-")
        .tempdir_in(dir)
        .map_err(|source| BackupError::Local {
            id: id.clone(),
            dest: dest.label(),
            path: dir.to_path_buf(),
            source,
        })
}

/// The whole check, leaving the plain database at `out` on success.
/// What [`fetch_into`] checked: the plain bytes matched the manifest's size and sha256.
struct Fetched {
    manifest: Manifest,
    stored_size: u64,
    plain_size: u64,
}

/// Sends `range` of a local object to the decoder, in [`MESSAGE_BYTES`] pieces; stops early,
/// without an error, when the decoder stopped (it reports why).
pub(crate) fn read_local_object(
    mut file: File,
    range: std::ops::Range<u64>,
    tx: &mpsc::Sender<Bytes>,
) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(range.start))?;
    let mut remaining = range.end.saturating_sub(range.start);
    while remaining > 0 {
        let mut piece = Vec::with_capacity(MESSAGE_BYTES);
        let read = (&mut file)
            .take(remaining.min(MESSAGE_BYTES as u64))
            .read_to_end(&mut piece)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the object ended {remaining} bytes early"),
            ));
        }
        remaining -= read as u64;
        if tx.blocking_send(Bytes::from(piece)).is_err() {
            break;
        }
    }
    Ok(())
}

/// Downloads backup `id` into `sink` (decrypted and decompressed, on a blocking thread),
/// checking the stored bytes and then the plain bytes against the manifest. `Local` errors name
/// `sink_path`. On any error the sink has received bytes that must not be used.
async fn fetch_into<W: Write + Send + 'static>(
    dest: &Destination,
    id: &BackupId,
    identity: Option<&Identity>,
    sink: W,
    sink_path: &Path,
) -> Result<Fetched, BackupError> {
    let label = dest.label();
    let manifest = read_manifest(dest, id).await?;
    check_identity(&manifest, identity, id, &label)?;

    let object_path = dest.set_dir(id).join(manifest.object_name());
    let got = dest
        .store()
        .get(&object_path)
        .await
        .map_err(|source| BackupError::Download {
            id: id.clone(),
            dest: label.clone(),
            source: Box::new(source),
        })?;
    check_stored_size(&manifest, got.meta.size, id, &label)?;

    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let decoder = {
        let identity = identity.cloned();
        let encrypted = manifest.encryption.is_some();
        tokio::task::spawn_blocking(move || decode(rx, encrypted, identity, sink))
    };
    let mut download_error = None;
    match got.payload {
        // A local object (file://): read here in MESSAGE_BYTES blocks on a thread of its own.
        // object_store's stream of a local file reads 8 KiB per step, each on the blocking
        // pool, which held a restore of a 1 GiB backup to a fraction of the decoder's speed.
        object_store::GetResultPayload::File(file, path) => {
            let range = got.range.clone();
            let read = tokio::task::spawn_blocking(move || read_local_object(file, range, &tx))
                .await
                .map_err(|e| BackupError::Internal {
                    dest: label.clone(),
                    reason: format!("the reading thread failed: {e}"),
                })?;
            download_error = read.err().map(|source| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!("cannot read {}: {source}", path.display()).into(),
            });
        }
        object_store::GetResultPayload::Stream(mut stream) => {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => {
                        if tx.send(chunk).await.is_err() {
                            break; // the decoder stopped (local error); it reports why
                        }
                    }
                    Err(e) => {
                        download_error = Some(e);
                        break;
                    }
                }
            }
            // The decoder finishes once the channel closes.
            drop(tx);
        }
    }
    let decoded = decoder.await.map_err(|e| BackupError::Internal {
        dest: label.clone(),
        reason: format!("the decompression thread failed: {e}"),
    })?;

    if let Some(source) = download_error {
        return Err(BackupError::Download {
            id: id.clone(),
            dest: label.clone(),
            source: Box::new(source),
        });
    }
    if let Err(DecodeFailure::Local(source)) = decoded.result {
        return Err(BackupError::Local {
            id: id.clone(),
            dest: label.clone(),
            path: sink_path.to_path_buf(),
            source,
        });
    }
    // The stored bytes first: when they differ from what was uploaded, any decoding error is
    // a consequence and would mislead.
    let (stored_size, stored_sha256) = decoded.stored.finish();
    check_stored_size(&manifest, stored_size, id, &label)?;
    if stored_sha256 != manifest.stored_sha256 {
        return Err(BackupError::StoredHashMismatch {
            id: id.clone(),
            dest: label.clone(),
            expected: manifest.stored_sha256.clone(),
            actual: stored_sha256,
        });
    }
    let (plain_size, plain_sha256) = match decoded.result {
        Ok(plain) => plain.finish(),
        Err(failure) => return Err(failure.into_error(&manifest, id, &label)),
    };
    if plain_size != manifest.plain_size {
        return Err(BackupError::PlainSizeMismatch {
            id: id.clone(),
            dest: label.clone(),
            expected: manifest.plain_size,
            actual: plain_size,
        });
    }
    if plain_sha256 != manifest.plain_sha256 {
        return Err(BackupError::PlainHashMismatch {
            id: id.clone(),
            dest: label.clone(),
            expected: manifest.plain_sha256.clone(),
            actual: plain_sha256,
        });
    }
    Ok(Fetched {
        manifest,
        stored_size,
        plain_size,
    })
}

/// Streams backup `id`, decrypted and decompressed, into `sink` (written on a blocking thread)
/// for a restore that checks the database itself (`PRAGMA integrity_check` on the node):
/// nothing is stored locally. Checks the stored bytes' and the plain bytes' size and sha256
/// against the manifest as they pass; `Ok` only when every check passed, so a caller that
/// forwards the bytes must not let the receiver treat them as complete before this returns
/// `Ok` (and should send it `manifest.plain_sha256` to check as well).
pub async fn stream_backup<W: Write + Send + 'static>(
    dest: &Destination,
    id: &BackupId,
    identity: Option<&Identity>,
    sink: W,
) -> Result<Manifest, BackupError> {
    let manifest = read_manifest(dest, id).await?;
    if manifest.is_incremental() {
        return Err(BackupError::InvalidOptions {
            reason: format!(
                "backup {id} is incremental: it cannot be streamed, its chain is applied to a \
                 local file first (download_backup)"
            ),
        });
    }
    let fetched = fetch_into(dest, id, identity, sink, Path::new("(the upload)")).await?;
    Ok(fetched.manifest)
}

/// Streams the database that backup `id` restores to into `sink`, like [`stream_backup`], for
/// an incremental too: each link's page frames are downloaded into `scratch` first (checked as
/// [`fetch_into`] checks every object, and against their parents), then the full backup is
/// streamed and every page is taken from the newest link that holds it, else from the full.
/// `Ok` only when the page digest of everything written equals the manifest's, so a caller
/// forwarding the bytes must not let the receiver treat them as complete before `Ok`.
pub async fn stream_chain<W: Write + Send + 'static>(
    dest: &Destination,
    id: &BackupId,
    identity: Option<&Identity>,
    sink: W,
    scratch: &Path,
) -> Result<Manifest, BackupError> {
    let label = dest.label();
    let chain = backup_chain(dest, id).await?;
    let (Some((root_id, root)), Some((target_id, target))) = (chain.first(), chain.last()) else {
        return Err(BackupError::Internal {
            dest: label,
            reason: "an empty chain".into(),
        });
    };
    if chain.len() == 1 {
        return stream_backup(dest, id, identity, sink).await;
    }
    let broken = |link: &BackupId, reason: String| BackupError::BrokenChain {
        id: target_id.clone(),
        dest: label.clone(),
        reason: format!("link {link}: {reason}"),
    };
    let local = |link: &BackupId, path: &Path, source| BackupError::Local {
        id: link.clone(),
        dest: label.clone(),
        path: path.to_path_buf(),
        source,
    };
    let mut cleanup = Vec::new();
    let mut links = Vec::new();
    for (n, pair) in chain.windows(2).enumerate() {
        let [(parent_id, _), (link_id, link)] = pair else {
            continue;
        };
        let path = scratch.join(format!("link-{n}.frames"));
        cleanup.push(RemoveOnDrop(path.clone()));
        let file = File::create(&path).map_err(|e| local(link_id, &path, e))?;
        fetch_into(
            dest,
            link_id,
            identity,
            BufWriter::with_capacity(COPY_BYTES, file),
            &path,
        )
        .await?;
        let expected_parent = link
            .parent
            .as_ref()
            .map(|p| p.pages_digest.clone())
            .unwrap_or_default();
        let indexed = {
            let (path, parent_id) = (path.clone(), parent_id.clone());
            run_blocking(&label, move || {
                crate::incremental::index_page_frames(&path, (&parent_id, &expected_parent))
            })
            .await?
        };
        let (header, index) = indexed.map_err(|reason| broken(link_id, reason))?;
        if link.pages_digest.as_deref() != Some(header.pages_digest.as_str())
            || header.db_pages != link.sqlite_page_count
        {
            return Err(broken(
                link_id,
                "its page frames and its manifest disagree on the database they make".into(),
            ));
        }
        let file = File::open(&path).map_err(|e| local(link_id, &path, e))?;
        links.push((file, header, index));
    }
    let page_size = root.sqlite_page_size.max(1);
    let merge = crate::incremental::ChainMerge::new(
        root.sqlite_page_size,
        root.plain_size / u64::from(page_size),
        links,
    )
    .map_err(|reason| broken(root_id, reason))?;
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Some((merge, sink))));
    let feeder = MergeSink(shared.clone());
    fetch_into(dest, root_id, identity, feeder, Path::new("(the upload)")).await?;
    let taken = shared.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some((merge, mut sink)) = taken else {
        return Err(BackupError::Internal {
            dest: label,
            reason: "the merged stream was lost".into(),
        });
    };
    let actual = run_blocking(&label, move || merge.finish(&mut sink))
        .await?
        .map_err(|e| local(target_id, Path::new("(the upload)"), e))?;
    let expected = target.pages_digest.clone().unwrap_or_default();
    if actual != expected {
        return Err(BackupError::ChainDigestMismatch {
            id: target_id.clone(),
            dest: label,
            expected,
            actual,
        });
    }
    drop(cleanup);
    Ok(target.clone())
}

/// The full backup's plain bytes into a [`crate::incremental::ChainMerge`], whose pages go on
/// to the sink beside it.
struct MergeSink<W>(std::sync::Arc<std::sync::Mutex<Option<(crate::incremental::ChainMerge, W)>>>);

impl<W: Write> Write for MergeSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (merge, sink) = guard
            .as_mut()
            .ok_or_else(|| io::Error::other("the merge is over"))?;
        merge.feed(buf, sink)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some((_, sink)) => sink.flush(),
            None => Ok(()),
        }
    }
}

/// The longest chain a restore follows: a full backup and this many incrementals.
const MAX_CHAIN_LINKS: usize = 10_000;

/// The chain backup `id` restores from, its full backup first and `id` last, every link's
/// manifest read and checked against the next: the parent exists, holds the page digest its
/// child expects, and has the same page size. A full backup is a chain of one.
pub async fn backup_chain(
    dest: &Destination,
    id: &BackupId,
) -> Result<Vec<(BackupId, Manifest)>, BackupError> {
    let label = dest.label();
    let broken = |reason: String| BackupError::BrokenChain {
        id: id.clone(),
        dest: label.clone(),
        reason,
    };
    let mut chain = vec![(id.clone(), read_manifest(dest, id).await?)];
    while let Some((child_id, child)) = chain.last() {
        let Some(parent) = child.parent.clone() else {
            break;
        };
        let child_id = child_id.clone();
        let page_size = child.sqlite_page_size;
        if chain.len() > MAX_CHAIN_LINKS {
            return Err(broken(format!(
                "more than {MAX_CHAIN_LINKS} links without reaching a full backup"
            )));
        }
        if chain.iter().any(|(seen, _)| *seen == parent.id) {
            return Err(broken(format!(
                "its links name each other in a circle (at {})",
                parent.id
            )));
        }
        let manifest = match read_manifest(dest, &parent.id).await {
            Ok(m) => m,
            Err(BackupError::NotFound { .. }) => {
                return Err(broken(format!(
                    "link {} (the parent of {child_id}) is missing",
                    parent.id
                )))
            }
            Err(BackupError::BadManifest { reason, .. }) => {
                return Err(broken(format!(
                    "the manifest of link {} is unusable: {reason}",
                    parent.id
                )))
            }
            Err(e) => return Err(e),
        };
        if manifest.pages_digest.as_deref() != Some(parent.pages_digest.as_str()) {
            return Err(broken(format!(
                "link {child_id} applies to {} with page digest {}, but that backup records {}",
                parent.id,
                parent.pages_digest,
                manifest.pages_digest.as_deref().unwrap_or("none")
            )));
        }
        if manifest.sqlite_page_size != page_size {
            return Err(broken(format!(
                "link {child_id} has pages of {page_size} bytes, its parent {} of {}",
                parent.id, manifest.sqlite_page_size
            )));
        }
        chain.push((parent.id, manifest));
    }
    chain.reverse();
    Ok(chain)
}

/// Downloads a chain (from [`backup_chain`]) into `out`: the full backup, then each
/// incremental's page frames (every object checked as [`fetch_into`] checks it) applied in
/// order, then the page digest of the result against the last link's manifest.
async fn fetch_chain_to(
    dest: &Destination,
    chain: &[(BackupId, Manifest)],
    identity: Option<&Identity>,
    out: &Path,
) -> Result<Fetched, BackupError> {
    let label = dest.label();
    let (Some((root_id, _)), Some((target_id, target))) = (chain.first(), chain.last()) else {
        return Err(BackupError::Internal {
            dest: label,
            reason: "an empty chain".into(),
        });
    };
    let local = |id: &BackupId, path: &Path, source| BackupError::Local {
        id: id.clone(),
        dest: label.clone(),
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(out).map_err(|e| local(root_id, out, e))?;
    let sink = BufWriter::with_capacity(COPY_BYTES, file);
    let mut stored_size = fetch_into(dest, root_id, identity, sink, out)
        .await?
        .stored_size;
    let frames = out.with_extension("frames");
    let _cleanup = RemoveOnDrop(frames.clone());
    for pair in chain.windows(2) {
        let [(parent_id, _), (link_id, link)] = pair else {
            continue;
        };
        let file = File::create(&frames).map_err(|e| local(link_id, &frames, e))?;
        let sink = BufWriter::with_capacity(COPY_BYTES, file);
        stored_size += fetch_into(dest, link_id, identity, sink, &frames)
            .await?
            .stored_size;
        let expected_parent = link
            .parent
            .as_ref()
            .map(|p| p.pages_digest.clone())
            .unwrap_or_default();
        let applied = {
            let (frames, out, parent_id) = (frames.clone(), out.to_path_buf(), parent_id.clone());
            run_blocking(&label, move || {
                crate::incremental::apply_page_frames(&frames, &out, (&parent_id, &expected_parent))
            })
            .await?
        };
        let broken = |reason: String| BackupError::BrokenChain {
            id: target_id.clone(),
            dest: label.clone(),
            reason: format!("link {link_id}: {reason}"),
        };
        let header = applied.map_err(broken)?;
        if link.pages_digest.as_deref() != Some(header.pages_digest.as_str())
            || header.db_pages != link.sqlite_page_count
        {
            return Err(broken(
                "its page frames and its manifest disagree on the database they make".into(),
            ));
        }
    }
    let expected = target.pages_digest.clone().unwrap_or_default();
    let (actual, plain_size) = {
        let (path, page_size) = (out.to_path_buf(), target.sqlite_page_size);
        run_blocking(&label, move || -> io::Result<(String, u64)> {
            let file = File::open(&path)?;
            let len = file.metadata()?.len();
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let digests = crate::incremental::PageDigests::of_file(
                &file,
                page_size,
                len / u64::from(page_size.max(1)),
                threads,
            )?;
            file.sync_all()?;
            Ok((digests.digest(), len))
        })
        .await?
        .map_err(|e| local(target_id, out, e))?
    };
    if actual != expected {
        return Err(BackupError::ChainDigestMismatch {
            id: target_id.clone(),
            dest: label.clone(),
            expected,
            actual,
        });
    }
    Ok(Fetched {
        manifest: target.clone(),
        stored_size,
        plain_size,
    })
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn fetch_to(
    dest: &Destination,
    id: &BackupId,
    identity: Option<&Identity>,
    out: &Path,
) -> Result<VerifyReport, BackupError> {
    let label = dest.label();
    let local = |source| BackupError::Local {
        id: id.clone(),
        dest: label.clone(),
        path: out.to_path_buf(),
        source,
    };
    let head = read_manifest(dest, id).await?;
    let Fetched {
        manifest,
        stored_size,
        plain_size,
    } = if head.is_incremental() {
        let chain = backup_chain(dest, id).await?;
        fetch_chain_to(dest, &chain, identity, out).await?
    } else {
        let file = File::create(out).map_err(local)?;
        let sink = SyncedFile(BufWriter::with_capacity(COPY_BYTES, file));
        fetch_into(dest, id, identity, sink, out).await?
    };

    let checked = {
        let out = out.to_path_buf();
        run_blocking(&label, move || check_database(&out)).await?
    };
    let (page_size, page_count, raftlite_meta) = match checked {
        Ok(v) => v,
        Err(report) => {
            return Err(BackupError::IntegrityCheck {
                id: id.clone(),
                dest: label.clone(),
                report,
            })
        }
    };
    if page_count != manifest.sqlite_page_count || page_size != manifest.sqlite_page_size {
        return Err(BackupError::PageCountMismatch {
            id: id.clone(),
            dest: label.clone(),
            expected: manifest.sqlite_page_count,
            actual: page_count,
            expected_page_size: manifest.sqlite_page_size,
            actual_page_size: page_size,
        });
    }
    let claimed = BackupMeta {
        cluster_id: manifest.cluster_id.clone(),
        node_id: manifest.node_id,
        timeline: manifest.timeline.clone(),
        log_index: manifest.log_index,
        log_term: manifest.log_term,
        data_changed_index: manifest.data_changed_index,
        leader_term: manifest.leader_term,
        slot_unix_ms: manifest.slot_unix_ms,
    };
    check_meta_agrees(&raftlite_meta, &claimed).map_err(|reason| {
        BackupError::RestoredMetaMismatch {
            id: id.clone(),
            dest: label.clone(),
            reason,
        }
    })?;
    Ok(VerifyReport {
        id: id.clone(),
        manifest,
        stored_size,
        plain_size,
        page_size,
        page_count,
        raftlite_meta,
    })
}

/// Why `identity` cannot open what `info` describes, if it cannot: the wrong kind of key, or
/// (for X25519) none of its keys among the recorded recipients. Shared by backups and archive
/// segments so both refuse before downloading or decrypting.
pub(crate) fn identity_mismatch(info: &EncryptionInfo, identity: &Identity) -> Option<String> {
    match (info.scheme, identity) {
        (EncryptionScheme::AgeX25519, Identity::Passphrase(_)) => Some(
            "it is encrypted to X25519 recipients, not a passphrase; give an identity file".into(),
        ),
        (EncryptionScheme::AgeScrypt, Identity::Keys(_)) => Some(
            "it is encrypted with a passphrase, not to X25519 recipients; give the passphrase"
                .into(),
        ),
        (EncryptionScheme::AgeX25519, Identity::Keys(_)) => {
            let mine = identity.fingerprints();
            (!info.recipient_fingerprints.is_empty()
                && !mine.iter().any(|f| info.recipient_fingerprints.contains(f)))
            .then(|| {
                format!(
                    "none of the identity's public keys (sha256 {}) is among its recipients \
                     (sha256 {})",
                    mine.join(", "),
                    info.recipient_fingerprints.join(", ")
                )
            })
        }
        (EncryptionScheme::AgeScrypt, Identity::Passphrase(_)) => None,
    }
}

/// Refuses early, without downloading, when the identity cannot possibly open the backup.
fn check_identity(
    manifest: &Manifest,
    identity: Option<&Identity>,
    id: &BackupId,
    label: &str,
) -> Result<(), BackupError> {
    let Some(info) = &manifest.encryption else {
        return Ok(()); // an identity given for a plain backup is simply not needed
    };
    let wrong = |reason: String| BackupError::WrongKey {
        id: id.clone(),
        dest: label.to_string(),
        scheme: info.scheme.to_string(),
        reason,
    };
    let Some(identity) = identity else {
        return Err(BackupError::IdentityRequired {
            id: id.clone(),
            dest: label.to_string(),
            scheme: info.scheme.to_string(),
        });
    };
    match identity_mismatch(info, identity) {
        Some(reason) => Err(wrong(reason)),
        None => Ok(()),
    }
}

fn check_stored_size(
    manifest: &Manifest,
    actual: u64,
    id: &BackupId,
    label: &str,
) -> Result<(), BackupError> {
    let expected = manifest.stored_size;
    if actual < expected {
        Err(BackupError::Truncated {
            id: id.clone(),
            dest: label.to_string(),
            expected,
            actual,
        })
    } else if actual > expected {
        Err(BackupError::StoredSizeMismatch {
            id: id.clone(),
            dest: label.to_string(),
            expected,
            actual,
        })
    } else {
        Ok(())
    }
}

enum DecodeFailure {
    /// age refused the header or the key.
    AgeHeader(age::DecryptError),
    /// age's payload failed authentication.
    AgeStream(io::Error),
    Zstd(io::Error),
    /// Writing the local file.
    Local(io::Error),
}

impl DecodeFailure {
    fn into_error(self, manifest: &Manifest, id: &BackupId, label: &str) -> BackupError {
        let id = id.clone();
        let dest = label.to_string();
        let scheme = manifest
            .encryption
            .as_ref()
            .map(|e| e.scheme.to_string())
            .unwrap_or_default();
        match self {
            DecodeFailure::AgeHeader(e) => match e {
                age::DecryptError::NoMatchingKeys
                | age::DecryptError::DecryptionFailed
                | age::DecryptError::KeyDecryptionFailed => BackupError::WrongKey {
                    id,
                    dest,
                    scheme,
                    reason: e.to_string(),
                },
                other => BackupError::Decrypt {
                    id,
                    dest,
                    reason: other.to_string(),
                },
            },
            DecodeFailure::AgeStream(e) => BackupError::Decrypt {
                id,
                dest,
                reason: e.to_string(),
            },
            DecodeFailure::Zstd(e) => BackupError::BadZstdFrame {
                id,
                dest,
                reason: e.to_string(),
            },
            DecodeFailure::Local(source) => BackupError::Local {
                id,
                dest,
                path: PathBuf::new(),
                source,
            },
        }
    }
}

struct Decoded {
    /// Everything received from the store (drained to the end).
    stored: Digester,
    /// The plain bytes written, or why decoding stopped.
    result: Result<Digester, DecodeFailure>,
}

/// A file sink that is fsynced when flushed at the end of a download.
struct SyncedFile(BufWriter<File>);

impl Write for SyncedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.0.get_ref().sync_all()
    }
}

/// The blocking half: channel -> (age) -> zstd -> sink, hashing both ends.
fn decode<W: Write>(
    rx: mpsc::Receiver<Bytes>,
    encrypted: bool,
    identity: Option<Identity>,
    mut sink: W,
) -> Decoded {
    let mut reader = ChannelReader::new(rx);
    let result = decode_into(&mut reader, encrypted, identity.as_ref(), &mut sink);
    if !matches!(result, Err(DecodeFailure::Local(_))) {
        reader.drain();
    }
    Decoded {
        stored: reader.take_digest(),
        result,
    }
}

fn decode_into<W: Write>(
    reader: &mut ChannelReader,
    encrypted: bool,
    identity: Option<&Identity>,
    sink: &mut W,
) -> Result<Digester, DecodeFailure> {
    let plain = if encrypted {
        let decryptor = age::Decryptor::new_buffered(BufReader::new(&mut *reader))
            .map_err(DecodeFailure::AgeHeader)?;
        let identities = identity.map(Identity::age_identities).unwrap_or_default();
        let stream = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(DecodeFailure::AgeHeader)?;
        let age_failed = Rc::new(Cell::new(false));
        let tagged = Tagged {
            inner: stream,
            failed: age_failed.clone(),
        };
        decompress(tagged, sink).map_err(|e| match e {
            CopyError::Read(e) if age_failed.get() => DecodeFailure::AgeStream(e),
            CopyError::Read(e) => DecodeFailure::Zstd(e),
            CopyError::Write(e) => DecodeFailure::Local(e),
        })?
    } else {
        decompress(&mut *reader, sink).map_err(|e| match e {
            CopyError::Read(e) => DecodeFailure::Zstd(e),
            CopyError::Write(e) => DecodeFailure::Local(e),
        })?
    };
    Ok(plain)
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

fn decompress<R: Read, W: Write>(input: R, out: &mut W) -> Result<Digester, CopyError> {
    let mut decoder = zstd::stream::read::Decoder::new(input).map_err(CopyError::Read)?;
    let mut plain = Digester::in_background();
    let mut buf = vec![0u8; COPY_BYTES];
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        plain.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    out.flush().map_err(CopyError::Write)?;
    Ok(plain)
}

/// Remembers whether a read error came from this layer (age) or from the one above (zstd).
struct Tagged<R> {
    inner: R,
    failed: Rc<Cell<bool>>,
}

impl<R: Read> Read for Tagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed.set(true))
    }
}

/// `Ok((page_size, page_count, meta))`, or `Err(report)` when the file is not a sound
/// SQLite database.
fn check_database(path: &Path) -> Result<(u32, u64, MetaState), String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open it: {e}"))?;
    let mut lines = Vec::new();
    {
        let mut stmt = conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| e.to_string())?;
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            let line: String = row.get(0).map_err(|e| e.to_string())?;
            if lines.len() < INTEGRITY_LINES {
                lines.push(line);
            }
        }
    }
    if lines != ["ok"] {
        return Err(lines.join("; "));
    }
    let page_size: u32 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let page_count: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let page_count = u64::try_from(page_count).map_err(|e| e.to_string())?;
    drop(conn);
    let meta = raftlite_store::probe(path)
        .map_err(|e| format!("cannot read _raftlite_meta: {e}"))?
        .unwrap_or_default();
    Ok((page_size, page_count, meta))
}
