//! Auto-restore: a brand-new, empty node that bootstraps (not one that joins) first restores
//! the newest verified backup from a destination, on a new timeline, before it serves.
//!
//! The decision is made from the start-up probe alone (no side effects); the backup is
//! downloaded only once it is certain it will be installed, into the data dir, checked (both
//! hashes, decryption, `integrity_check`), given a new timeline record, fsync'd and renamed
//! into place. A node with data never auto-restores: it logs why and serves its own data.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use raftlite_backup::{download_backup, list_backups, Destination, Identity};
use raftlite_consensus::node::{unix_ms, DataDirLayout};
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

fn identity(settings: &AutoRestoreSettings) -> anyhow::Result<Option<Identity>> {
    if let Some(file) = &settings.identity_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --auto-restore-identity {}", file.display()))?;
        return Ok(Some(Identity::from_identity_file(&text)?));
    }
    if let Some(var) = &settings.passphrase_env {
        let passphrase = std::env::var(var).map_err(|_| {
            anyhow::anyhow!(
                "--backup-passphrase-env names {var:?}, which is not set; set it to open the \
                 backups to restore"
            )
        })?;
        return Ok(Some(Identity::passphrase(passphrase)?));
    }
    Ok(None)
}

/// Restores the newest verified backup (the newest one when none is marked verified: it is
/// verified while downloading anyway) into the empty data dir `data_dir`.
pub async fn restore_into_empty(
    data_dir: &Path,
    settings: &AutoRestoreSettings,
) -> anyhow::Result<AutoRestoreOutcome> {
    let mut options = vec![
        ("max_retries".to_string(), "4".to_string()),
        ("retry_timeout_secs".to_string(), "30".to_string()),
    ];
    options.extend(settings.store_options.iter().cloned());
    let dest = Destination::parse_with_options(&settings.from, options)
        .context("invalid --auto-restore-from")?;
    let identity = identity(settings)?;
    let list = list_backups(&dest)
        .await
        .with_context(|| format!("auto-restore cannot list the backups in {dest}"))?;
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
        bail!(
            "auto-restore found no backup in {dest}; refusing to start empty. Check the \
             destination and credentials, or start with --auto-restore-if-empty-ok to start an \
             empty cluster when there is nothing to restore"
        );
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

    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let layout = DataDirLayout::new(data_dir);
    let staging = layout.db.with_extension("sqlite.auto-restore");
    let _ = std::fs::remove_file(&staging);
    let report = download_backup(&dest, id, identity.as_ref(), &staging)
        .await
        .with_context(|| {
            format!("auto-restore of {id} from {dest} failed; nothing was installed")
        })?;
    let record = TimelineRecord {
        id: format!("{:032x}", rand::random::<u128>()),
        counter: 0,
        parent: None,
        parent_index: None,
        reason: format!("auto-restore from backup {id} ({dest})"),
        at_unix_ms: unix_ms(),
    };
    let installed = (|| -> anyhow::Result<TimelineRecord> {
        let (meta, _) = raftlite_store::reset_for_new_cluster(&staging, &record)?;
        std::fs::File::open(&staging)?.sync_all()?;
        std::fs::rename(&staging, &layout.db)?;
        std::fs::File::open(data_dir)?.sync_all()?;
        meta.timeline()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the restored database has no timeline"))
    })();
    match installed {
        Ok(timeline) => Ok(AutoRestoreOutcome::Restored {
            id: id.to_string(),
            timeline,
            index: report.manifest.log_index,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            Err(e.context(format!(
                "cannot install the restored backup {id} in {}",
                data_dir.display()
            )))
        }
    }
}
