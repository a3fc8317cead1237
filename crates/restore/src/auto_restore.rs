//! Auto-restore: a brand-new, empty node that bootstraps (not one that joins) first restores
//! the newest verified backup from a destination, on a new timeline, before it serves.
//!
//! The decision is made from the start-up probe alone (no side effects); the backup is
//! downloaded only once it is certain it will be installed, into the data dir, checked (both
//! hashes, decryption, `integrity_check`), given a new timeline record, fsync'd and renamed
//! into place. A node with data never auto-restores: it logs why and serves its own data.

use std::path::{Path, PathBuf};

use raftlite_backup::{
    download_backup, identity_from, list_backups, BackupError, BackupId, Destination, KeyError,
};
use raftlite_consensus::node::DataDirLayout;
use raftlite_consensus::recovery::{seed_single_node, RecoveryError};
use raftlite_consensus::NodeAddr;
use raftlite_store::TimelineRecord;

/// Where to restore from, resolved from `--auto-restore-from` / `--auto-restore FILE`.
#[derive(Clone, Debug)]
pub struct AutoRestoreSettings {
    pub from: String,
    /// object_store options (from an rqlite auto-restore file); never shown.
    pub store_options: Vec<(String, String)>,
    pub identity_file: Option<PathBuf>,
    /// Passphrase environment variable for passphrase-encrypted backups.
    pub passphrase_env: Option<String>,
    /// Start empty when the destination has no backup of any cluster.
    pub if_empty_ok: bool,
    /// How long to keep retrying a destination that fails (rqlite's `timeout`).
    pub timeout: std::time::Duration,
}

/// Why the auto-restore failed; the node then refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AutoRestoreError {
    #[error("invalid --auto-restore-from")]
    Destination(#[source] BackupError),
    #[error("auto-restore cannot open the backups (--auto-restore-identity)")]
    Identity(#[source] KeyError),
    #[error("auto-restore cannot list the backups in {dest}")]
    List {
        dest: String,
        #[source]
        source: BackupError,
    },
    #[error(
        "auto-restore found no backup in {dest}; refusing to start empty. Check the destination \
         and credentials, or start with --auto-restore-if-empty-ok to start an empty cluster \
         when there is nothing to restore"
    )]
    NoBackup { dest: String },
    #[error("cannot create the data dir {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auto-restore of {id} from {dest} failed; nothing was installed")]
    Download {
        id: BackupId,
        dest: String,
        #[source]
        source: BackupError,
    },
    #[error("cannot install the restored backup {id} in {}", dir.display())]
    Install {
        id: BackupId,
        dir: PathBuf,
        #[source]
        source: InstallError,
    },
}

/// Why a downloaded backup could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Seed(#[from] RecoveryError),
}

/// What happened.
pub enum AutoRestoreOutcome {
    Restored {
        id: String,
        timeline: TimelineRecord,
        index: u64,
    },
    /// No backup, and `if_empty_ok`.
    NothingToRestore,
}

/// Runs `op` until it succeeds, fails for a reason retrying cannot fix, or `deadline` passes:
/// a destination that is down for a while (a store restarting with the cluster) must not make
/// a new node give up at once.
async fn with_retries<T, F, Fut>(
    deadline: tokio::time::Instant,
    dest: &Destination,
    mut op: F,
) -> Result<T, BackupError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BackupError>>,
{
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(
                e @ (BackupError::List { .. }
                | BackupError::Download { .. }
                | BackupError::OpenDestination { .. }),
            ) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(destination = %dest, error = %e, retry_in_secs = wait.as_secs(), "auto-restore: the destination failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Restores the newest verified backup (the newest one when none is marked verified: it is
/// verified while downloading anyway) into the empty data dir `data_dir`.
pub async fn restore_into_empty(
    data_dir: &Path,
    settings: &AutoRestoreSettings,
    node_id: u64,
    addr: &NodeAddr,
) -> Result<AutoRestoreOutcome, AutoRestoreError> {
    let mut options = vec![
        ("max_retries".to_string(), "4".to_string()),
        ("retry_timeout_secs".to_string(), "30".to_string()),
    ];
    options.extend(settings.store_options.iter().cloned());
    let dest = Destination::parse_with_options(&settings.from, options)
        .map_err(AutoRestoreError::Destination)?;
    let identity = identity_from(
        settings.identity_file.as_deref(),
        settings.passphrase_env.as_deref(),
    )
    .map_err(AutoRestoreError::Identity)?;
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let list = with_retries(deadline, &dest, || list_backups(&dest))
        .await
        .map_err(|source| AutoRestoreError::List {
            dest: dest.to_string(),
            source,
        })?;
    // Newest verified first; else the newest (download_backup verifies everything anyway).
    let chosen = list
        .backups
        .iter()
        .find(|(id, _)| list.verified.contains(id))
        .or_else(|| list.backups.first());
    let Some((id, manifest)) = chosen else {
        if settings.if_empty_ok {
            return Ok(AutoRestoreOutcome::NothingToRestore);
        }
        return Err(AutoRestoreError::NoBackup {
            dest: dest.to_string(),
        });
    };
    let clusters: std::collections::BTreeSet<&str> =
        list.backups.iter().map(|(i, _)| i.cluster_id()).collect();
    if clusters.len() > 1 {
        tracing::warn!(
            destination = %dest,
            clusters = ?clusters,
            chosen = %id,
            "the destination holds backups of several clusters; restoring the newest"
        );
    }
    tracing::info!(destination = %dest, %id, log_index = manifest.log_index, "auto-restore: downloading and verifying the backup");

    std::fs::create_dir_all(data_dir).map_err(|source| AutoRestoreError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let layout = DataDirLayout::new(data_dir);
    let staging = layout.db.with_extension("sqlite.auto-restore");
    let _ = std::fs::remove_file(&staging);
    // The newest archived point of the backup's timeline, when the log archive goes past it.
    let replayed = newest_archived_point(&dest, manifest, identity.as_ref(), data_dir).await;
    let (index, reason) = match replayed {
        Some((path, index)) => {
            std::fs::rename(&path, &staging).map_err(|source| AutoRestoreError::DataDir {
                path: staging.clone(),
                source,
            })?;
            let _ = std::fs::remove_dir_all(pitr_scratch(data_dir));
            (
                index,
                format!(
                    "auto-restore from backup {id} and the log archive up to entry {index} ({dest})"
                ),
            )
        }
        None => {
            let report = with_retries(deadline, &dest, || {
                download_backup(&dest, id, identity.as_ref(), &staging)
            })
            .await
            .map_err(|source| AutoRestoreError::Download {
                id: id.clone(),
                dest: dest.to_string(),
                source,
            })?;
            (
                report.manifest.log_index,
                format!("auto-restore from backup {id} ({dest})"),
            )
        }
    };
    let installed = async {
        std::fs::File::open(&staging)?.sync_all()?;
        std::fs::rename(&staging, &layout.db)?;
        std::fs::File::open(data_dir)?.sync_all()?;
        // The new single-node cluster's log starts after the restored data, so nodes that join
        // later receive it as a snapshot.
        let timeline = seed_single_node(&layout, node_id, addr, reason).await?;
        Ok::<_, InstallError>(timeline)
    }
    .await;
    match installed {
        Ok(timeline) => Ok(AutoRestoreOutcome::Restored {
            id: id.to_string(),
            timeline,
            index,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            Err(AutoRestoreError::Install {
                id: id.clone(),
                dir: data_dir.to_path_buf(),
                source: e,
            })
        }
    }
}

/// Where the point-in-time replay of an auto-restore works: inside the data dir, so the result
/// is renamed into place on the same file system.
fn pitr_scratch(data_dir: &Path) -> PathBuf {
    data_dir.join("auto-restore-replay")
}

/// The database at the newest point the log archive holds for `manifest`'s timeline, when that
/// is past the backup itself: the file's path and its log index. Any failure (no archive, a
/// gap, a damaged segment) is logged and gives `None`: the backup alone is restored then.
async fn newest_archived_point(
    dest: &Destination,
    manifest: &raftlite_backup::Manifest,
    identity: Option<&raftlite_backup::Identity>,
    data_dir: &Path,
) -> Option<(PathBuf, u64)> {
    let timeline = &manifest.timeline.id;
    let archive = match raftlite_backup::archive::list_archive(dest, &manifest.cluster_id).await {
        Ok(archive) => archive,
        Err(e) => {
            tracing::warn!(destination = %dest, error = %e, "auto-restore: cannot list the log archive; restoring the backup alone");
            return None;
        }
    };
    let coverage = archive
        .timelines
        .iter()
        .find(|t| &t.timeline_id == timeline)?;
    if coverage.last_index <= manifest.data_index() {
        return None;
    }
    let scratch = pitr_scratch(data_dir);
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        tracing::warn!(error = %e, "auto-restore: cannot create {}; restoring the backup alone", scratch.display());
        return None;
    }
    tracing::info!(
        destination = %dest,
        timeline = %timeline,
        archived_to = coverage.last_index,
        "auto-restore: replaying the log archive onto the newest base backup"
    );
    let built = crate::point_in_time::prepare_point_in_time(
        dest,
        Some(timeline),
        crate::point_in_time::Target::Latest,
        identity,
        &scratch,
        &mut |line| tracing::info!("auto-restore: {line}"),
    )
    .await;
    match built {
        Ok(built) => Some((built.path, built.index)),
        Err(e) => {
            tracing::warn!(
                destination = %dest,
                error = %e,
                "auto-restore: the log archive cannot be replayed; restoring the newest backup alone"
            );
            let _ = std::fs::remove_dir_all(&scratch);
            None
        }
    }
}
