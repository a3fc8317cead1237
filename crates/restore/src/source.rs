//! What `raftlite restore` sends, prepared on the operator's machine before anything is sent:
//!
//! - a SQLite file, never modified. A file in WAL mode is copied (with its `-wal` when there is
//!   one) into a private temporary directory and consolidated there with SQLite's backup API,
//!   so committed transactions still in the WAL come along; opening the original, even
//!   read-only, would create a `-shm` beside it. A file beside a hot rollback journal (a writer
//!   crashed or is mid-transaction) is refused. The file must pass `PRAGMA integrity_check`
//!   before anything is sent.
//! - `-`: stdin, spooled to a temporary file first (memory stays bounded).
//! - a backup destination URL: `--id` or the newest verified backup (else the newest), whose
//!   manifest is read here; the backup itself is streamed by the upload
//!   ([`crate::upload::backup_body`]).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use raftlite_backup::{
    identity_from, list_backups, read_manifest, BackupId, Destination, KeyError,
};

use crate::destination::{open_destination, DestinationError};
use crate::upload::BackupStream;
use crate::{engine_error, EngineError};

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// The first 8 bytes of a rollback journal that still holds a transaction to roll back.
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
/// Lines of a failed `integrity_check` shown.
const INTEGRITY_LINES: usize = 5;

/// Why a source cannot be restored. Nothing was sent when any of these happens.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {source}; nothing was sent", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is not a SQLite database file ({detail}); nothing was sent. `raftlite restore` takes \
         a SQLite file or a backup destination; load SQL text with `raftlite-shell` and \
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
    #[error("the checking thread failed: {0}")]
    Thread(String),
    /// The keys given for an encrypted backup.
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}; nothing was sent to the cluster")]
    Manifest(Box<raftlite_backup::BackupError>),
    #[error(
        "backup {id} in {dest} is encrypted: give its key with --identity FILE or \
         --passphrase-env VAR; nothing was sent to the cluster"
    )]
    Encrypted { id: BackupId, dest: String },
    #[error(
        "no complete backup in {dest} to restore{}; list them with `raftlite backup list \
         --from {dest}`",
        if *incomplete == 0 {
            String::new()
        } else {
            format!(" ({incomplete} incomplete set(s) without manifest.json)")
        }
    )]
    NoBackup { dest: String, incomplete: usize },
}

/// Where a backup to restore is: `--from URL`, `--id` (else the newest verified one), and the
/// key of an encrypted backup.
#[derive(Clone, Debug, Default)]
pub struct BackupSource {
    pub from: String,
    pub id: Option<String>,
    pub identity: Option<PathBuf>,
    pub passphrase_env: Option<String>,
}

/// The file to upload and what it is, for the report.
pub struct Prepared {
    /// What the operator named: a path, `stdin` or `backup <id> in <dest>`.
    pub label: String,
    pub upload: Upload,
    pub size: u64,
    /// Set when a WAL-mode source was consolidated with its `-wal`.
    pub consolidated_wal: bool,
}

/// What is sent.
pub enum Upload {
    /// A file: the source itself, or a copy in the scratch directory.
    File(PathBuf),
    /// A backup, streamed from its destination while it is sent (see the module doc).
    Backup(BackupStream),
}

/// Picks the backup and reads its manifest; the backup itself is streamed by the upload.
/// `notice` is told the lines for the operator (a listing's warnings, an unverified choice).
///
/// An incremental streams too ([`raftlite_backup::stream_chain`]): its links' page frames are
/// downloaded into `scratch` first, then the full backup streams with their pages in place.
pub async fn prepare_backup(
    source: &BackupSource,
    scratch: &Path,
    notice: &mut (dyn FnMut(&str) + Send),
) -> Result<Prepared, SourceError> {
    let identity = identity_from(source.identity.as_deref(), source.passphrase_env.as_deref())?;
    let dest = open_destination(&source.from)?;
    let id = match &source.id {
        Some(raw) => raw.trim().parse::<BackupId>().map_err(engine_error)?,
        None => newest_backup(&dest, notice).await?,
    };
    let manifest = read_manifest(&dest, &id)
        .await
        .map_err(|e| SourceError::Manifest(Box::new(e)))?;
    if manifest.encryption.is_some() && identity.is_none() {
        return Err(SourceError::Encrypted {
            id,
            dest: dest.to_string(),
        });
    }
    if manifest.is_incremental() {
        notice(&format!(
            "backup {id} is incremental ({} links after its full backup): its links are \
             downloaded first, then the full backup streams with their pages in place",
            manifest.chain_depth
        ));
        return Ok(Prepared {
            label: format!("backup {id} in {dest}"),
            size: manifest.sqlite_page_count * u64::from(manifest.sqlite_page_size),
            upload: Upload::Backup(BackupStream {
                dest,
                id,
                identity,
                // The database's sha256 is not recorded for a chain: the page digest is
                // checked as it streams, and the body fails before its end if it differs.
                plain_sha256: None,
                chain_scratch: Some(scratch.to_path_buf()),
            }),
            consolidated_wal: false,
        });
    }
    Ok(Prepared {
        label: format!("backup {id} in {dest}"),
        size: manifest.plain_size,
        upload: Upload::Backup(BackupStream {
            dest,
            id,
            identity,
            plain_sha256: Some(manifest.plain_sha256.clone()),
            chain_scratch: None,
        }),
        consolidated_wal: false,
    })
}

/// The newest verified backup in `dest`, else the newest one (with a note).
async fn newest_backup(
    dest: &Destination,
    notice: &mut (dyn FnMut(&str) + Send),
) -> Result<BackupId, SourceError> {
    let listing = list_backups(dest).await.map_err(engine_error)?;
    for w in &listing.warnings {
        notice(&format!("warning: {w}"));
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
            notice(&format!(
                "note: no backup in {dest} has been verified yet; restoring the newest, {id}, \
                 which is verified end to end while it downloads anyway"
            ));
            Ok(id.clone())
        }
        None => Err(SourceError::NoBackup {
            dest: dest.to_string(),
            incomplete: listing.incomplete.len(),
        }),
    }
}

/// Copies stdin into `dir/stdin.sqlite` (bounded memory).
pub async fn spool_stdin(dir: &Path) -> Result<PathBuf, SourceError> {
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

/// Checks a local file (consolidating a WAL-mode one into `dir`) without ever modifying it, on
/// a blocking thread (`integrity_check` reads the whole file).
pub async fn prepare_local_file(
    path: PathBuf,
    label: String,
    dir: &Path,
) -> Result<Prepared, SourceError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || prepare_local(&path, label, &dir))
        .await
        .map_err(|e| SourceError::Thread(e.to_string()))?
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
