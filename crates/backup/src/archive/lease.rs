//! Restore leases: a point-in-time restore in progress marks, in the destination, the base
//! backup and the index range of the archive it reads, and archive retention keeps them while
//! the lease is live. So retention running on the leader never deletes what a restore still
//! has to download, even for a target at the edge of the retention window.
//!
//! `<prefix>/<cluster-id>/archive/<timeline>/leases/<taken_at>-<pid>-<n>.json`, deleted by the
//! restore when it ends, and by retention once expired (a restore that died).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::destination::Destination;
use crate::error::BackupError;

use super::store::{check_names, get_small_object, list_dir, store_error};

/// How long a lease holds without being released: longer than any restore runs.
pub const LEASE_DURATION: Duration = Duration::from_secs(6 * 3600);
/// Name of the folder under a timeline's archive holding restore leases.
const LEASES_DIR: &str = "leases";

/// What a running restore reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreLease {
    /// The base backup's id (`<cluster>/<set>`).
    pub base: String,
    /// Entries after this index are replayed from the archive...
    pub from_index: u64,
    /// ...up to this one.
    pub to_index: u64,
    pub taken_at_unix_ms: i64,
    pub expires_at_unix_ms: i64,
    /// Who holds it, for an operator reading the destination.
    pub holder: String,
}

fn leases_dir(dest: &Destination, cluster_id: &str, timeline_id: &str) -> ObjectPath {
    dest.archive_dir(cluster_id, timeline_id).join(LEASES_DIR)
}

/// Writes `lease` for a restore reading `timeline_id` and returns where, for
/// [`release_lease`].
pub async fn take_lease(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    lease: &RestoreLease,
) -> Result<ObjectPath, BackupError> {
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    check_names(cluster_id, timeline_id)?;
    let name = format!(
        "{}-{}-{}.json",
        lease.taken_at_unix_ms,
        std::process::id(),
        TAKEN.fetch_add(1, Ordering::Relaxed)
    );
    let path = leases_dir(dest, cluster_id, timeline_id).join(name.as_str());
    let body = serde_json::to_vec_pretty(lease).map_err(|e| BackupError::Internal {
        dest: dest.label(),
        reason: format!("cannot serialize a restore lease: {e}"),
    })?;
    dest.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(store_error(dest, "uploading", &path))?;
    Ok(path)
}

/// Deletes a lease [`take_lease`] wrote (best effort: an expired lease is cleaned up by
/// retention).
pub async fn release_lease(dest: &Destination, path: &ObjectPath) {
    if let Err(e) = dest.store().delete(path).await {
        tracing::warn!(destination = %dest, lease = %path, error = %e, "cannot delete a restore lease; archive retention deletes it once it expires");
    }
}

/// The live leases on `timeline_id`; expired ones are deleted on the way (best effort) unless
/// `dry_run`. Unreadable lease objects count as live for the whole timeline (`from_index` 0)
/// until they are older than [`LEASE_DURATION`]: retention errs on keeping.
pub(crate) async fn live_leases(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    now_unix_ms: i64,
    dry_run: bool,
) -> Result<Vec<RestoreLease>, BackupError> {
    let dir = leases_dir(dest, cluster_id, timeline_id);
    let mut live = Vec::new();
    for object in list_dir(dest, &dir).await? {
        let lease = match get_small_object(dest, &object.location).await {
            Ok(bytes) => serde_json::from_slice::<RestoreLease>(&bytes).ok(),
            Err(object_store::Error::NotFound { .. }) => continue, // released meanwhile
            Err(_) => None,
        };
        let lease = lease.unwrap_or_else(|| RestoreLease {
            base: String::new(),
            from_index: 0,
            to_index: u64::MAX,
            taken_at_unix_ms: object.last_modified.timestamp_millis(),
            expires_at_unix_ms: object.last_modified.timestamp_millis()
                + LEASE_DURATION.as_millis() as i64,
            holder: "unreadable lease".into(),
        });
        if lease.expires_at_unix_ms > now_unix_ms {
            live.push(lease);
        } else if !dry_run {
            let _ = dest.store().delete(&object.location).await;
        }
    }
    Ok(live)
}
