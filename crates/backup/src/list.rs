//! Listing backup sets: one recursive listing of the destination, then the manifests.

use std::collections::BTreeMap;
use std::fmt;

use futures::{StreamExt, TryStreamExt};

use crate::destination::Destination;
use crate::error::BackupError;
use crate::manifest::{check_segment, BackupId, Manifest, BACKUPS_DIR, MANIFEST_FILE};
use crate::verify::{read_manifest_inner, ManifestError};

/// Manifests fetched at once.
const MANIFEST_READS: usize = 8;

/// A set whose manifest exists but cannot be used (unreadable, malformed, from a newer
/// raftlite). Listed apart: it never makes the whole listing fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListWarning {
    pub id: BackupId,
    pub reason: String,
}

impl fmt::Display for ListWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backup {}: {}", self.id, self.reason)
    }
}

/// The result of [`list_backups`].
#[derive(Clone, Debug, Default)]
pub struct BackupList {
    /// Complete sets, newest first (by creation time, then timeline counter, then log index).
    pub backups: Vec<(BackupId, Manifest)>,
    /// Sets with a manifest that could not be used.
    pub warnings: Vec<ListWarning>,
    /// Sets without a manifest: a backup in progress, or one that failed (safe to delete once
    /// older than any backup could take).
    pub incomplete: Vec<BackupId>,
}

impl BackupList {
    /// The newest complete backup of `cluster_id` (for skip-if-unchanged and auto-restore).
    pub fn newest(&self, cluster_id: &str) -> Option<&(BackupId, Manifest)> {
        self.backups
            .iter()
            .find(|(id, _)| id.cluster_id() == cluster_id)
    }
}

/// Lists every backup set under `dest` (all clusters). Only the listing itself failing is an
/// error; a bad manifest is a warning and a set without one is `incomplete`.
pub async fn list_backups(dest: &Destination) -> Result<BackupList, BackupError> {
    let label = dest.label();
    let prefix = dest.prefix().clone();
    let listing = if prefix.is_root() {
        dest.store().list(None)
    } else {
        dest.store().list(Some(&prefix))
    };
    let objects: Vec<_> = listing
        .try_collect()
        .await
        .map_err(|source| BackupError::List {
            dest: label.clone(),
            source: Box::new(source),
        })?;

    // set -> has a manifest
    let mut sets: BTreeMap<BackupId, bool> = BTreeMap::new();
    for object in objects {
        let Some(parts) = object.location.prefix_match(&prefix) else {
            continue;
        };
        let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
        let [cluster, backups, set, file] = parts.as_slice() else {
            continue;
        };
        if backups != BACKUPS_DIR || check_segment(cluster).is_err() || check_segment(set).is_err()
        {
            continue;
        }
        let Ok(id) = BackupId::new(cluster, set) else {
            continue;
        };
        *sets.entry(id).or_insert(false) |= file == MANIFEST_FILE;
    }

    let mut list = BackupList::default();
    let mut with_manifest = Vec::new();
    for (id, has_manifest) in sets {
        if has_manifest {
            with_manifest.push(id);
        } else {
            list.incomplete.push(id);
        }
    }
    let mut reads = futures::stream::iter(with_manifest)
        .map(|id| async move {
            let result = read_manifest_inner(dest, &id).await;
            (id, result)
        })
        .buffer_unordered(MANIFEST_READS);
    while let Some((id, result)) = reads.next().await {
        match result {
            Ok(manifest) => list.backups.push((id, manifest)),
            // Deleted between the listing and the read (pruning): as if never listed.
            Err(ManifestError::NotFound) => {}
            Err(ManifestError::Store(e)) => list.warnings.push(ListWarning {
                id,
                reason: format!("cannot read manifest.json: {e}"),
            }),
            Err(ManifestError::Bad(reason)) => list.warnings.push(ListWarning { id, reason }),
        }
    }
    list.backups.sort_by(|(a_id, a), (b_id, b)| {
        (b.created_at_unix_ms, b.timeline.counter, b.log_index, b_id).cmp(&(
            a.created_at_unix_ms,
            a.timeline.counter,
            a.log_index,
            a_id,
        ))
    });
    list.warnings.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(list)
}
