//! `raftlite restore`: replaces the whole cluster's database, online, with a SQLite file or a
//! backup.
//!
//! The source is prepared on the operator's machine, then streamed to `POST {node}/db/load`
//! (any member: a follower forwards the upload to the leader), which checks it again, sends it
//! through the Raft log in chunks and has every node swap it in at one log index on a new
//! timeline (`raftlite_consensus::restore`).
//!
//! Sources:
//! - a SQLite file, never modified. A file in WAL mode is copied (with its `-wal` when there is
//!   one) into a private temporary directory and consolidated there with SQLite's backup API,
//!   so committed transactions still in the WAL come along; opening the original, even
//!   read-only, would create a `-shm` beside it. A file beside a hot rollback journal (a writer
//!   crashed or is mid-transaction) is refused. The file must pass `PRAGMA integrity_check`
//!   before anything is sent.
//! - `-`: stdin, spooled to a temporary file first (memory stays bounded).
//! - a backup destination URL (anything with `://`): `--id` or the newest verified backup (else
//!   the newest), streamed to the node as it downloads, decrypted and decompressed on the way,
//!   without a local copy: the stored bytes' and the database's size and sha256 are checked
//!   against the manifest as they pass, the upload ends only once every check passed (a failed
//!   check cuts it off, and the node refuses a cut-off upload), and the node checks the
//!   database's sha256 again (header `x-raftlite-expect-sha256`) and runs `integrity_check`.
//!
//! The client picks the new timeline's id (`?timeline_id=`). When the answer is lost, or the
//! node says the outcome is unknown, every member's `/status` is polled (the members are asked
//! for with `/nodes` before the upload): the restore took effect (all-new) exactly when a node's
//! current timeline is that id; the polling goes on while the leader reports the restore in
//! progress or chunks keep arriving, and ends [`POLL_FOR`] after that stops.
//!
//! Exit status: 0 only when the restore took effect; 2 otherwise (refused, failed, all-old, bad
//! flags, node unreachable; `main` maps errors to 2).

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use raftlite_backup::{list_backups, read_manifest, BackupError, BackupId, Destination};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::backup_cli::{
    engine_error, excerpt, human_bytes, human_duration, innermost, interruptible, open_destination,
    print_json, spinner, NodeClient, ScratchDir,
};
use crate::config::RestoreArgs;
use raftlite_restore::upload::{backup_body, BackupStream, UploadProgress, EXPECT_SHA256_HEADER};

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// The first 8 bytes of a rollback journal that still holds a transaction to roll back.
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
/// Bytes read from the file per chunk of the upload.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// The node answers only once the whole cluster switched to the new file (after checking and
/// replicating all of it): one read may wait that long.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3 * 3600);
/// How long `/status` is polled, when the outcome is unknown, after the restore stops moving.
const POLL_FOR: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Lines of a failed `integrity_check` shown.
const INTEGRITY_LINES: usize = 5;

/// Why a local source cannot be restored. Nothing was sent when any of these happens.
#[derive(Debug, thiserror::Error)]
enum SourceError {
    #[error("cannot read {}: {source}; nothing was sent", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is not a SQLite database file ({detail}); nothing was sent. `raftlite restore` takes \
         a SQLite file or a backup destination; load SQL text with `raftlite shell` and \
         `.restore FILE`",
        path.display()
    )]
    NotSqlite { path: PathBuf, detail: String },
    #[error(
        "{} has a hot rollback journal beside it ({}): a writer is in the middle of a \
         transaction or crashed in one; stop the writer, or open the file once with sqlite3 to \
         roll it back, then retry; nothing was sent",
        path.display(),
        journal.display()
    )]
    HotJournal { path: PathBuf, journal: PathBuf },
    #[error(
        "{} fails PRAGMA integrity_check: {detail}; nothing was sent, the cluster is unchanged. \
         Restore from an undamaged copy or a backup",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot {action} {}: {source}; nothing was sent", path.display())]
    Sqlite {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "cannot write the temporary copy {}: {source} (is TMPDIR full? it needs room for the \
         whole database); nothing was sent",
        path.display()
    )]
    Scratch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The file to upload and what it is, for the report.
struct Prepared {
    /// What the operator named: a path, `stdin` or `backup <id> in <dest>`.
    label: String,
    upload: Upload,
    size: u64,
    /// Set when a WAL-mode source was consolidated with its `-wal`.
    consolidated_wal: bool,
}

/// What is sent.
enum Upload {
    /// A file: the source itself, or a copy in the scratch directory.
    File(PathBuf),
    /// A backup, streamed from its destination while it is sent (see the module doc).
    Backup(BackupStream),
}

/// Why a streamed backup failed, when it failed for its own reasons (a check, the download);
/// `None` when it succeeded or only stopped because the upload did. Waits a little for it.
async fn backup_failure(
    feeder: &mut tokio::task::JoinHandle<Result<(), BackupError>>,
) -> Option<String> {
    let done = tokio::time::timeout(Duration::from_secs(10), &mut *feeder).await;
    match done {
        Ok(Ok(Err(BackupError::Local { .. }))) | Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(e.to_string()),
        Ok(Err(e)) => Some(format!("the download task failed: {e}")),
        Err(_) => None,
    }
}

/// Entry point of `raftlite restore`.
pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    // Chosen before anything is sent so that every message can name it.
    let timeline_id = format!("{:032x}", rand::random::<u128>());
    let cleanup = format!(
        "the temporary files were removed. If the upload had finished, the restore may still \
         take effect: it did if /status shows the current timeline {timeline_id}"
    );
    interruptible(restore(args, timeline_id), &cleanup).await
}

async fn restore(args: RestoreArgs, timeline_id: String) -> anyhow::Result<()> {
    let started = Instant::now();
    let is_backup = args.from.contains("://");
    if !is_backup {
        if args.id.is_some() {
            bail!("--id picks a backup: it needs --from with a backup destination URL");
        }
        if args.identity.is_some() || args.passphrase_env.is_some() {
            bail!(
                "--identity and --passphrase-env decrypt backups: they need --from with a \
                 backup destination URL"
            );
        }
    }
    let node = NodeClient::with_read_timeout(&args.connection, ANSWER_TIMEOUT)?;
    let progress = io::stderr().is_terminal();
    let scratch = ScratchDir::new()?;

    let prepared = if is_backup {
        prepare_backup(&args).await?
    } else if args.from == "-" {
        let spooled = spool_stdin(scratch.path()).await?;
        prepare_local_file(spooled, "stdin".to_string(), scratch.path(), progress).await?
    } else {
        let path = PathBuf::from(&args.from);
        prepare_local_file(path, args.from.clone(), scratch.path(), progress).await?
    };
    if prepared.consolidated_wal {
        eprintln!(
            "note: {} is in WAL mode; its -wal was consolidated into a temporary copy, which is \
             what is restored",
            prepared.label
        );
    }

    let reason = format!("restore from {}", prepared.label);
    // Asked now, while the cluster answers: if the answer is lost, any of them can tell.
    let peers = peer_bases(&node).await;
    let outcome = upload(&node, &prepared, &timeline_id, &reason, progress).await?;
    drop(scratch);
    let answer = match outcome {
        Answer::Restored(answer) => answer,
        Answer::Unknown(why) => {
            eprintln!(
                "the outcome is unknown ({why}); asking /status of {} while the restore is under \
                 way (and up to {} s after it stops moving) whether the cluster is on the new \
                 timeline {timeline_id}",
                std::iter::once(node.base.as_str())
                    .chain(peers.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
                POLL_FOR.as_secs()
            );
            return match poll_timeline(&node, &peers, &timeline_id).await {
                Polled::TookEffect(timeline) => {
                    report_polled(&args, &prepared, &timeline, started.elapsed())
                }
                Polled::Other(current) => bail!(
                    "the restore did not take effect (all-old): {why}; /status shows timeline \
                     {current}, not {timeline_id}, and no restore has been under way for {} s; \
                     every node keeps its old data; retry when the cluster is healthy",
                    POLL_FOR.as_secs()
                ),
                Polled::Unreachable(e) => bail!(
                    "the outcome of the restore is unknown ({why}) and no node's /status \
                     answered within {} s ({e}); it took effect on every node or on none: it \
                     did if /status shows the current timeline {timeline_id}",
                    POLL_FOR.as_secs()
                ),
            };
        }
    };
    report(&args, &prepared, &answer, &timeline_id, started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------------

/// Picks the backup and reads its manifest; the backup itself is streamed by the upload.
async fn prepare_backup(args: &RestoreArgs) -> anyhow::Result<Prepared> {
    let identity =
        crate::backup_cli::identity_from(args.identity.as_deref(), args.passphrase_env.as_deref())?;
    let dest = open_destination(&args.from)?;
    let id = match &args.id {
        Some(raw) => raw.trim().parse::<BackupId>().map_err(engine_error)?,
        None => newest_backup(&dest).await?,
    };
    let manifest = read_manifest(&dest, &id)
        .await
        .map_err(|e| anyhow!("{e}; nothing was sent to the cluster"))?;
    if manifest.encryption.is_some() && identity.is_none() {
        bail!(
            "backup {id} in {dest} is encrypted: give its key with --identity FILE or \
             --passphrase-env VAR; nothing was sent to the cluster"
        );
    }
    Ok(Prepared {
        label: format!("backup {id} in {dest}"),
        size: manifest.plain_size,
        upload: Upload::Backup(BackupStream {
            dest,
            id,
            identity,
            plain_sha256: manifest.plain_sha256.clone(),
        }),
        consolidated_wal: false,
    })
}

/// The newest verified backup in `dest`, else the newest one (with a note).
async fn newest_backup(dest: &Destination) -> anyhow::Result<BackupId> {
    let listing = list_backups(dest).await.map_err(engine_error)?;
    for w in &listing.warnings {
        eprintln!("warning: {w}");
    }
    if let Some((id, _)) = listing
        .backups
        .iter()
        .find(|(id, _)| listing.verified.contains(id))
    {
        return Ok(id.clone());
    }
    match listing.backups.first() {
        Some((id, _)) => {
            eprintln!(
                "note: no backup in {dest} has been verified yet; restoring the newest, {id}, \
                 which is verified end to end while it downloads anyway"
            );
            Ok(id.clone())
        }
        None => bail!(
            "no complete backup in {dest} to restore{}; list them with `raftlite backup list \
             --from {dest}`",
            if listing.incomplete.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} incomplete set(s) without manifest.json)",
                    listing.incomplete.len()
                )
            }
        ),
    }
}

/// Copies stdin into `dir/stdin.sqlite` (bounded memory).
async fn spool_stdin(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("stdin.sqlite");
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|source| SourceError::Scratch {
            path: path.clone(),
            source,
        })?;
    let mut stdin = tokio::io::stdin();
    tokio::io::copy(&mut stdin, &mut file)
        .await
        .map_err(|source| SourceError::Scratch {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Checks a local file (consolidating a WAL-mode one into `dir`) without ever modifying it.
async fn prepare_local_file(
    path: PathBuf,
    label: String,
    dir: &Path,
    progress: bool,
) -> anyhow::Result<Prepared> {
    let dir = dir.to_path_buf();
    let bar = spinner(
        progress,
        format!("checking {label} (PRAGMA integrity_check)"),
    );
    let prepared = tokio::task::spawn_blocking(move || prepare_local(&path, label, &dir))
        .await
        .map_err(|e| anyhow!("the checking thread failed: {e}"));
    bar.finish_and_clear();
    Ok(prepared??)
}

fn prepare_local(path: &Path, label: String, dir: &Path) -> Result<Prepared, SourceError> {
    let read_error = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(SourceError::NotSqlite {
            path: path.to_path_buf(),
            detail: "not a regular file".into(),
        });
    }
    let mut header = [0u8; 100];
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let n = read_up_to(&mut file, &mut header).map_err(read_error)?;
    drop(file);
    if n < header.len() || !header.starts_with(SQLITE_HEADER) {
        return Err(SourceError::NotSqlite {
            path: path.to_path_buf(),
            detail: if n < header.len() {
                format!("{n} bytes, shorter than a SQLite header")
            } else {
                "it does not start with the SQLite header".into()
            },
        });
    }
    // Bytes 18 and 19 are the read and write format versions: 2 means WAL mode.
    let wal_mode = header[18] == 2 && header[19] == 2;
    if wal_mode {
        let wal = companion(path, "-wal");
        let has_wal = std::fs::metadata(&wal)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        let upload = consolidate(path, has_wal.then_some(wal.as_path()), dir)?;
        integrity_check(&upload)?;
        let size = std::fs::metadata(&upload)
            .map_err(|source| SourceError::Read {
                path: upload.clone(),
                source,
            })?
            .len();
        return Ok(Prepared {
            label,
            upload: Upload::File(upload),
            size,
            consolidated_wal: has_wal,
        });
    }
    let journal = companion(path, "-journal");
    if is_hot_journal(&journal) {
        return Err(SourceError::HotJournal {
            path: path.to_path_buf(),
            journal,
        });
    }
    integrity_check(path)?;
    Ok(Prepared {
        label,
        upload: Upload::File(path.to_path_buf()),
        size: meta.len(),
        consolidated_wal: false,
    })
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `<path><suffix>`, e.g. `db.sqlite-wal`.
fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// A rollback journal whose header still marks a transaction to roll back.
fn is_hot_journal(journal: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(journal) else {
        return false;
    };
    let mut magic = [0u8; 8];
    matches!(read_up_to(&mut file, &mut magic), Ok(8)) && magic == JOURNAL_MAGIC
}

/// Copies a WAL-mode database (and its `-wal`) into `dir`, and writes from the copy a
/// consolidated file in rollback-journal mode with SQLite's backup API. Returns its path.
fn consolidate(path: &Path, wal: Option<&Path>, dir: &Path) -> Result<PathBuf, SourceError> {
    let copy = dir.join("source.sqlite");
    let scratch_error = |at: &Path| {
        let at = at.to_path_buf();
        move |source| SourceError::Scratch { path: at, source }
    };
    copy_file(path, &copy)?;
    if let Some(wal) = wal {
        copy_file(wal, &companion(&copy, "-wal"))?;
    }
    let sqlite_error = |action: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| SourceError::Sqlite {
            action,
            path: at,
            source,
        }
    };
    // Read-write, so that SQLite recovers the WAL of the copy (it rebuilds the missing -shm).
    let source = rusqlite::Connection::open_with_flags(
        &copy,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error("open the copy of", path))?;
    let out = dir.join("consolidated.sqlite");
    let mut target =
        rusqlite::Connection::open(&out).map_err(sqlite_error("create the consolidated", &out))?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut target)
            .map_err(sqlite_error("consolidate", path))?;
        backup
            .run_to_completion(1024, Duration::ZERO, None)
            .map_err(sqlite_error("consolidate", path))?;
    }
    // The copied header still says WAL: a self-contained file needs no -wal to be read.
    let mode: String = target
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(sqlite_error("switch out of WAL mode", &out))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(SourceError::Scratch {
            path: out,
            source: io::Error::other(format!("SQLite kept journal mode {mode} instead of delete")),
        });
    }
    drop(target);
    drop(source);
    std::fs::OpenOptions::new()
        .read(true)
        .open(&out)
        .and_then(|f| f.sync_all())
        .map_err(scratch_error(&out))?;
    Ok(out)
}

fn copy_file(from: &Path, to: &Path) -> Result<(), SourceError> {
    let mut reader = std::fs::File::open(from).map_err(|source| SourceError::Read {
        path: from.to_path_buf(),
        source,
    })?;
    let mut writer = std::fs::File::create(to).map_err(|source| SourceError::Scratch {
        path: to.to_path_buf(),
        source,
    })?;
    io::copy(&mut reader, &mut writer).map_err(|source| SourceError::Scratch {
        path: to.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// `PRAGMA integrity_check` on a read-only connection (creates nothing beside a
/// rollback-journal file).
fn integrity_check(path: &Path) -> Result<(), SourceError> {
    let sqlite_error = |action: &'static str| {
        move |source| SourceError::Sqlite {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error("open"))?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| SourceError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.take(INTEGRITY_LINES + 1).collect())
        .map_err(|e| SourceError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    let mut detail = lines
        .iter()
        .take(INTEGRITY_LINES)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if lines.len() > INTEGRITY_LINES {
        detail.push_str("; ...");
    }
    Err(SourceError::Corrupt {
        path: path.to_path_buf(),
        detail,
    })
}

// ---------------------------------------------------------------------------------------------
// The node: POST /db/load, GET /status
// ---------------------------------------------------------------------------------------------

enum Answer {
    /// The node's 200 answer.
    Restored(Value),
    /// Whether the restore took effect cannot be told from the answer (why).
    Unknown(String),
}

/// Streams the file to `/db/load` and interprets the answer. `Err` when the restore certainly
/// did not take effect.
async fn upload(
    node: &NodeClient,
    prepared: &Prepared,
    timeline_id: &str,
    reason: &str,
    progress: bool,
) -> anyhow::Result<Answer> {
    let url = Url::parse_with_params(
        &format!("{}/db/load", node.base),
        [("timeline_id", timeline_id), ("reason", reason)],
    )
    .map_err(|e| anyhow!("invalid --node URL {}: {e}", node.base))?;
    let bar = upload_bar(prepared.size, progress);
    let mut request = node
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
    let mut feeder = None;
    match &prepared.upload {
        Upload::File(path) => request = request.body(upload_body(path.clone(), bar.clone())),
        Upload::Backup(backup) => {
            let (body, task) = backup_body(
                backup.clone(),
                std::sync::Arc::new(BarProgress(bar.clone())),
            );
            request = request
                .header(EXPECT_SHA256_HEADER, backup.plain_sha256.as_str())
                .body(body);
            feeder = Some(task);
        }
    }
    let sent = node.authorized(request).send().await;
    // A backup that failed a check cut its upload off, so the node cannot have restored it.
    let failed_backup = match (&sent, feeder.as_mut()) {
        (Ok(resp), _) if resp.status() == StatusCode::OK => None,
        (_, Some(task)) => backup_failure(task).await,
        (_, None) => None,
    };
    if let Some(why) = failed_backup {
        bar.finish_and_clear();
        bail!(
            "the restore did not take effect (all-old): {why}; the upload was cut off before \
             its end, so the node restored nothing"
        );
    }
    let resp = match sent {
        Ok(resp) => resp,
        // Nothing reached the node.
        Err(e) if e.is_connect() => {
            bar.finish_and_clear();
            return Err(anyhow!("{}; nothing was sent", node.transport_error(&e)));
        }
        Err(e) => {
            bar.finish_and_clear();
            return Ok(Answer::Unknown(format!(
                "the connection to {} broke: {}",
                node.base,
                innermost(&e)
            )));
        }
    };
    let status = resp.status();
    let text = resp.text().await;
    bar.finish_and_clear();
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            return Ok(Answer::Unknown(format!(
                "the answer of {} broke off: {}",
                node.base,
                innermost(&e)
            )))
        }
    };
    let body: Option<Value> = serde_json::from_str(&text).ok();
    let message = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| excerpt(&text));
    if status == StatusCode::OK {
        return match body {
            Some(body) if body.get("restore").is_some() => Ok(Answer::Restored(body)),
            _ => bail!(
                "POST /db/load on {} answered 200 without a restore report ({}); is it a \
                 raftlite node of this version? Check /status: the restore took effect if the \
                 current timeline is {timeline_id}",
                node.base,
                excerpt(&text)
            ),
        };
    }
    if status.is_server_error() && !is_definitely_all_old(&message, timeline_id) {
        return Ok(Answer::Unknown(format!("HTTP {status}: {message}")));
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED => " (give credentials with -u USER:PASSWORD)",
        StatusCode::FORBIDDEN => " (the user needs the `load` permission)",
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => " (is this a raftlite node?)",
        _ => "",
    };
    bail!(
        "the restore did not take effect (all-old): POST /db/load: HTTP {status}: {message}{hint}"
    )
}

/// Server errors that say the cluster kept its old data; any other one may hide a restore that
/// took effect (a broken forward, a leader change after the commit was proposed).
fn is_definitely_all_old(message: &str, timeline_id: &str) -> bool {
    // An unknown outcome names the timeline to look for (and mentions both outcomes).
    if message.contains(timeline_id) || message.contains("unknown") {
        return false;
    }
    message.contains("(all-old)")
        || message.contains("nothing was changed")
        || message.contains("no leader is known")
}

/// The file in [`UPLOAD_CHUNK`] pieces, counted on `bar`; once all is sent the bar turns into a
/// spinner while the cluster works.
fn upload_body(path: PathBuf, bar: ProgressBar) -> reqwest::Body {
    let stream = futures::stream::try_unfold(None, move |open: Option<tokio::fs::File>| {
        let path = path.clone();
        let bar = bar.clone();
        async move {
            let mut file = match open {
                Some(file) => file,
                None => tokio::fs::File::open(&path).await?,
            };
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                waiting_style(&bar);
                return Ok(None);
            }
            buf.truncate(n);
            bar.inc(n as u64);
            Ok::<_, io::Error>(Some((buf, Some(file))))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

fn upload_bar(len: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "upload {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The CLI's progress bar as an upload's progress.
struct BarProgress(ProgressBar);

impl UploadProgress for BarProgress {
    fn sent(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn all_sent(&self) {
        waiting_style(&self.0);
    }
}

fn waiting_style(bar: &ProgressBar) {
    if bar.is_hidden() {
        return;
    }
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message("the cluster checks, replicates and swaps in the file");
    bar.enable_steady_tick(Duration::from_millis(120));
}

#[derive(Debug, PartialEq)]
enum Polled {
    /// `/status` shows the new timeline (its record).
    TookEffect(Value),
    /// `/status` answered, with this other timeline id, and the restore stopped moving.
    Other(String),
    /// `/status` never answered.
    Unreachable(String),
}

/// The API bases of the other members, non-voters too, from `/nodes` (none when it does not
/// answer).
async fn peer_bases(node: &NodeClient) -> Vec<String> {
    let request = node.authorized(
        node.client
            .get(format!("{}/nodes?ver=2&nonvoters", node.base))
            .timeout(Duration::from_secs(10)),
    );
    let Ok(resp) = request.send().await else {
        return Vec::new();
    };
    let Ok(nodes) = resp.json::<Value>().await else {
        return Vec::new();
    };
    let own = node.base.trim_end_matches('/');
    nodes["nodes"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|n| n["api_addr"].as_str())
                .map(|a| a.trim_end_matches('/').to_string())
                .filter(|a| a != own)
                .collect()
        })
        .unwrap_or_default()
}

/// Decides the outcome of a restore whose answer was lost from what the nodes' `/status` say:
/// it took effect once any node is on its timeline; it is still under way while the leader
/// reports it in progress or any node's held chunks grow; it did not take effect once it has
/// stopped moving for [`POLL_FOR`] with the nodes on another timeline.
struct OutcomeWatch {
    timeline_id: String,
    deadline: Instant,
    /// Bytes of chunks held, per node, at the last answer.
    held: std::collections::HashMap<String, u64>,
    /// A known timeline is the best evidence; an error only replaces another error.
    last: Option<Result<String, String>>,
}

impl OutcomeWatch {
    fn new(timeline_id: &str, now: Instant) -> OutcomeWatch {
        OutcomeWatch {
            timeline_id: timeline_id.to_string(),
            deadline: now + POLL_FOR,
            held: Default::default(),
            last: None,
        }
    }

    /// One node's `/status` (or why it did not answer); `Some` once the outcome is known.
    fn observe(
        &mut self,
        base: &str,
        answer: Result<Value, String>,
        now: Instant,
    ) -> Option<Polled> {
        let status = match answer {
            Ok(status) => status,
            Err(e) => {
                if !matches!(self.last, Some(Ok(_))) {
                    self.last = Some(Err(e));
                }
                return None;
            }
        };
        let timeline = &status["store"]["timeline"];
        match timeline["id"].as_str() {
            Some(id) if id == self.timeline_id => {
                return Some(Polled::TookEffect(timeline.clone()))
            }
            Some(id) => self.last = Some(Ok(id.to_string())),
            None => self.last = Some(Ok("(none)".to_string())),
        }
        let restore = &status["store"]["restore"];
        let ours_running =
            restore["in_progress"]["timeline_id"].as_str() == Some(self.timeline_id.as_str());
        let held = restore["chunks_held"]["bytes"].as_u64().unwrap_or(0);
        let grew = self
            .held
            .insert(base.to_string(), held)
            .is_some_and(|before| held > before);
        if ours_running || grew {
            self.deadline = now + POLL_FOR;
        }
        None
    }

    /// The verdict once nothing moved for [`POLL_FOR`].
    fn expired(&self, now: Instant) -> Option<Polled> {
        if now < self.deadline {
            return None;
        }
        Some(match &self.last {
            Some(Ok(id)) => Polled::Other(id.clone()),
            Some(Err(e)) => Polled::Unreachable(e.clone()),
            None => Polled::Unreachable("no answer".to_string()),
        })
    }
}

async fn poll_timeline(node: &NodeClient, peers: &[String], timeline_id: &str) -> Polled {
    let started = Instant::now();
    let mut watch = OutcomeWatch::new(timeline_id, started);
    loop {
        for base in std::iter::once(&node.base).chain(peers) {
            let request = node.authorized(
                node.client
                    .get(format!("{base}/status"))
                    .timeout(Duration::from_secs(5)),
            );
            let answer = match request.send().await {
                Ok(resp) if resp.status() == StatusCode::OK => resp
                    .json::<Value>()
                    .await
                    .map_err(|e| format!("unreadable /status: {}", innermost(&e))),
                Ok(resp) => Err(format!("/status answered HTTP {}", resp.status())),
                Err(e) => Err(innermost(&e)),
            };
            if let Some(outcome) = watch.observe(base, answer, Instant::now()) {
                return outcome;
            }
        }
        let now = Instant::now();
        if let Some(outcome) = watch.expired(now) {
            return outcome;
        }
        if now.duration_since(started) >= ANSWER_TIMEOUT {
            return Polled::Unreachable(format!(
                "still under way after {} s",
                ANSWER_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn report(
    args: &RestoreArgs,
    prepared: &Prepared,
    answer: &Value,
    timeline_id: &str,
    total: Duration,
) -> anyhow::Result<()> {
    let timeline = &answer["timeline"];
    let restore = &answer["restore"];
    if timeline["id"].as_str() != Some(timeline_id) {
        eprintln!(
            "warning: the node reports timeline {} but {timeline_id} was asked for",
            timeline["id"]
        );
    }
    if args.json {
        let mut out = answer.clone();
        if let Some(obj) = out.as_object_mut() {
            obj.insert("source".into(), json!(prepared.label));
            obj.insert("outcome".into(), json!("took effect (all-new)"));
            obj.insert("duration_secs".into(), json!(total.as_secs_f64()));
        }
        return print_json(&out);
    }
    let mut out = io::stdout().lock();
    writeln!(out, "restore took effect on the whole cluster (all-new)")?;
    writeln!(out, "  source       {}", prepared.label)?;
    writeln!(
        out,
        "  size         {} (sha256 {})",
        human_bytes(restore["size"].as_u64().unwrap_or(prepared.size)),
        restore["sha256"].as_str().unwrap_or("?")
    )?;
    writeln!(out, "  timeline     {}", timeline_text(timeline))?;
    writeln!(
        out,
        "  log index    {} (every node switched to the new data there)",
        restore["index"]
    )?;
    writeln!(
        out,
        "  duration     {} (cluster {})",
        human_duration(total),
        human_duration(Duration::from_secs_f64(
            restore["duration_secs"]
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(0.0)
        ))
    )?;
    Ok(())
}

/// The outcome told by `/status` after a lost answer.
fn report_polled(
    args: &RestoreArgs,
    prepared: &Prepared,
    timeline: &Value,
    total: Duration,
) -> anyhow::Result<()> {
    if args.json {
        return print_json(&json!({
            "source": prepared.label,
            "outcome": "took effect (all-new)",
            "confirmed_by": "/status",
            "timeline": timeline,
            "size": prepared.size,
            "duration_secs": total.as_secs_f64(),
        }));
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "restore took effect on the whole cluster (all-new), confirmed by /status"
    )?;
    writeln!(out, "  source       {}", prepared.label)?;
    writeln!(out, "  size         {}", human_bytes(prepared.size))?;
    writeln!(out, "  timeline     {}", timeline_text(timeline))?;
    writeln!(out, "  duration     {}", human_duration(total))?;
    Ok(())
}

/// `#2 (id), after #1's parent id at index N`.
fn timeline_text(timeline: &Value) -> String {
    let mut text = format!(
        "#{} ({})",
        timeline["counter"],
        timeline["id"].as_str().unwrap_or("?")
    );
    if let Some(parent) = timeline["parent"].as_str() {
        text.push_str(&format!(", parent {parent}"));
        if let Some(at) = timeline["parent_index"].as_u64() {
            text.push_str(&format!(" at index {at}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(timeline: &str, in_progress: Option<&str>, held: Option<u64>) -> Value {
        json!({ "store": {
            "timeline": { "id": timeline, "counter": 1 },
            "restore": {
                "in_progress": in_progress.map(|t| json!({ "timeline_id": t, "phase": "sending" })),
                "chunks_held": held.map(|b| json!({ "restore_id": "r", "chunks": 1, "bytes": b })),
            },
        }})
    }

    #[test]
    fn a_lost_answer_waits_while_the_restore_moves_and_reports_what_it_became() {
        let t0 = Instant::now();
        let later = |s: u64| t0 + Duration::from_secs(s);
        let mut watch = OutcomeWatch::new("new", t0);
        // The leader still checks or sends our restore: no verdict, however long it takes.
        for s in [0, 20, 40, 60] {
            assert_eq!(
                watch.observe("a", Ok(status("old", Some("new"), None)), later(s)),
                None
            );
            assert_eq!(watch.expired(later(s + 1)), None);
        }
        // The leader is gone; a follower's held chunks keep growing.
        assert_eq!(watch.observe("a", Err("refused".into()), later(70)), None);
        assert_eq!(
            watch.observe("b", Ok(status("old", None, Some(10))), later(70)),
            None
        );
        assert_eq!(
            watch.observe("b", Ok(status("old", None, Some(20))), later(85)),
            None
        );
        assert_eq!(watch.expired(later(100)), None);
        // Then nothing moves for POLL_FOR: all-old, with the timeline seen.
        assert_eq!(
            watch.observe("b", Ok(status("old", None, Some(20))), later(110)),
            None
        );
        assert_eq!(watch.expired(later(116)), Some(Polled::Other("old".into())));
        // A node on the new timeline settles it at once.
        let mut watch = OutcomeWatch::new("new", t0);
        assert_eq!(watch.observe("a", Err("refused".into()), t0), None);
        assert!(matches!(
            watch.observe("b", Ok(status("new", None, None)), t0),
            Some(Polled::TookEffect(_))
        ));
        // Another restore in progress does not keep ours alive; no answer at all is unknown.
        let mut watch = OutcomeWatch::new("new", t0);
        assert_eq!(
            watch.observe("a", Ok(status("old", Some("other"), None)), t0),
            None
        );
        assert_eq!(watch.expired(later(31)), Some(Polled::Other("old".into())));
        let mut watch = OutcomeWatch::new("new", t0);
        assert_eq!(watch.observe("a", Err("refused".into()), t0), None);
        assert_eq!(
            watch.expired(later(31)),
            Some(Polled::Unreachable("refused".into()))
        );
    }

    fn database(path: &Path, wal: bool) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(path).unwrap();
        if wal {
            let _: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .unwrap();
            conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        }
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);")
            .unwrap();
        conn
    }

    fn count(path: &Path) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_wal_file_is_consolidated_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let conn = database(&db, true);
        let wal = companion(&db, "-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        let before = std::fs::read(&db).unwrap();
        let wal_before = std::fs::read(&wal).unwrap();
        // The writer stays open: the rows are in the WAL only.
        let prepared = prepare_local(&db, "db".into(), scratch.path()).unwrap();
        assert!(prepared.consolidated_wal);
        let Upload::File(upload) = &prepared.upload else {
            panic!("a local file is uploaded from a file");
        };
        assert_ne!(upload, &db);
        assert_eq!(count(upload), 3);
        let header = std::fs::read(upload).unwrap();
        assert_eq!((header[18], header[19]), (1, 1), "rollback-journal mode");
        assert_eq!(std::fs::read(&db).unwrap(), before);
        assert_eq!(std::fs::read(&wal).unwrap(), wal_before);
        drop(conn);
    }

    #[test]
    fn plain_files_are_sent_as_they_are_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        drop(database(&db, false));
        let prepared = prepare_local(&db, "db".into(), scratch.path()).unwrap();
        assert!(matches!(&prepared.upload, Upload::File(p) if p == &db));
        assert!(!prepared.consolidated_wal);

        let text = dir.path().join("dump.sql");
        std::fs::write(&text, "CREATE TABLE t(x);".repeat(10)).unwrap();
        let err = prepare_local(&text, "dump".into(), scratch.path()).err();
        assert!(
            matches!(err, Some(SourceError::NotSqlite { .. })),
            "{err:?}"
        );

        let journal = companion(&db, "-journal");
        let mut hot = JOURNAL_MAGIC.to_vec();
        hot.resize(512, 0);
        std::fs::write(&journal, hot).unwrap();
        let err = prepare_local(&db, "db".into(), scratch.path()).err();
        assert!(
            matches!(err, Some(SourceError::HotJournal { .. })),
            "{err:?}"
        );
        std::fs::write(&journal, [0u8; 512]).unwrap();
        assert!(prepare_local(&db, "db".into(), scratch.path()).is_ok());

        let missing = dir.path().join("missing.sqlite");
        let err = prepare_local(&missing, "m".into(), scratch.path()).err();
        assert!(matches!(err, Some(SourceError::Read { .. })), "{err:?}");
    }

    #[test]
    fn server_errors_that_leave_the_old_data() {
        use raftlite_consensus::restore::RestoreError;
        let id = "0123abcd";
        let failed = RestoreError::Failed { reason: "x".into() }.to_string();
        assert!(is_definitely_all_old(&failed, id), "{failed}");
        let unknown = RestoreError::Unknown {
            reason: "y".into(),
            timeline_id: id.into(),
        }
        .to_string();
        assert!(!is_definitely_all_old(&unknown, id), "{unknown}");
        assert!(!is_definitely_all_old(
            "cannot forward to leader 2 at 127.0.0.1:1: error; retry shortly",
            id
        ));
    }

    #[test]
    fn timelines_read_well() {
        let t = json!({"id": "abc", "counter": 2, "parent": "p", "parent_index": 7});
        assert_eq!(timeline_text(&t), "#2 (abc), parent p at index 7");
    }
}
