//! Listing backup sets: one recursive listing of the destination, then the manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use futures::{StreamExt, TryStreamExt};

use crate::destination::Destination;
use crate::error::BackupError;
use crate::manifest::{
    check_segment, marker_key_of, BackupId, Manifest, BACKUPS_DIR, COPIES_DIR, MANIFEST_FILE,
    VERIFIED_FILE,
};
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
    /// Complete sets that a later leader's backup of the same schedule slot replaced (a
    /// leader that lost its term finished an upload): not counted as backups, left for
    /// retention to delete. Newest first.
    pub superseded: Vec<(BackupId, Manifest)>,
    /// Sets (among `backups`) that a restore drill or `backup verify` checked end to end.
    pub verified: BTreeSet<BackupId>,
    /// Sets (among `backups`) copied to further destinations, by their copy markers' keys
    /// ([`crate::copy::copy_key`]; `copies/<key>.json` in the set's folder, from the same
    /// listing: no extra request). [`crate::copy::copy_labels`] names the destinations.
    pub copies: BTreeMap<BackupId, BTreeSet<String>>,
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
    let mut verified = BTreeSet::new();
    let mut copies: BTreeMap<BackupId, BTreeSet<String>> = BTreeMap::new();
    for object in objects {
        let Some(parts) = object.location.prefix_match(&prefix) else {
            continue;
        };
        let parts: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
        // A copy marker belongs to its set: a set left with nothing but a marker (its deletion
        // was interrupted) is incomplete, and retention removes it like any other.
        if let [cluster, backups, set, dir, file] = parts.as_slice() {
            if backups == BACKUPS_DIR && dir == COPIES_DIR {
                if let (Ok(id), Some(key)) = (BackupId::new(cluster, set), marker_key_of(file)) {
                    copies.entry(id.clone()).or_default().insert(key);
                    sets.entry(id).or_insert(false);
                }
            }
            continue;
        }
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
        if file == VERIFIED_FILE {
            verified.insert(id.clone());
        }
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
    let (counted, superseded) = drop_superseded(std::mem::take(&mut list.backups));
    list.backups = counted;
    list.superseded = superseded;
    list.verified = verified
        .into_iter()
        .filter(|id| list.backups.iter().any(|(b, _)| b == id))
        .collect();
    copies.retain(|id, _| list.backups.iter().any(|(b, _)| b == id));
    list.copies = copies;
    Ok(list)
}

/// A complete set as listed.
type Listed = (BackupId, Manifest);

/// Splits `backups` (newest first) into the sets that count and those superseded: for every
/// cluster and schedule slot only the set of the highest leader term counts (the newest one
/// among equals). Sets without a slot (taken on request) always count. Order is kept.
fn drop_superseded(backups: Vec<Listed>) -> (Vec<Listed>, Vec<Listed>) {
    let mut winners: BTreeMap<(String, i64), (u64, i64, BackupId)> = BTreeMap::new();
    for (id, m) in &backups {
        let Some(slot) = m.slot_unix_ms else { continue };
        let candidate = (m.leader_term.unwrap_or(0), m.created_at_unix_ms, id.clone());
        let entry = winners
            .entry((m.cluster_id.clone(), slot))
            .or_insert_with(|| candidate.clone());
        if candidate > *entry {
            *entry = candidate;
        }
    }
    backups
        .into_iter()
        .partition(|(id, m)| match m.slot_unix_ms {
            None => true,
            Some(slot) => winners
                .get(&(m.cluster_id.clone(), slot))
                .is_none_or(|(_, _, winner)| winner == id),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::TimelineRef;

    fn manifest(created: i64, slot: Option<i64>, term: Option<u64>) -> (BackupId, Manifest) {
        let timeline = TimelineRef {
            id: "t".into(),
            counter: 1,
        };
        let m = Manifest {
            created_at: String::new(),
            leader_term: term,
            slot_unix_ms: slot,
            ..Manifest::sample("c1", timeline, created as u64, created)
        };
        (m.id().unwrap(), m)
    }

    #[test]
    fn a_stale_leaders_upload_of_a_slot_does_not_count() {
        let stale = manifest(1_000, Some(0), Some(3));
        let current = manifest(900, Some(0), Some(4));
        let manual = manifest(800, None, Some(3));
        let other_slot = manifest(700, Some(-3_600_000), Some(3));
        let (counted, superseded) = drop_superseded(vec![
            stale.clone(),
            current.clone(),
            manual.clone(),
            other_slot.clone(),
        ]);
        let ids = |v: &[(BackupId, Manifest)]| v.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&counted), vec![current.0, manual.0, other_slot.0]);
        assert_eq!(ids(&superseded), vec![stale.0]);
    }
}
