//! Which backups to keep: keep-last / hourly / daily / weekly / monthly / within rules, and
//! pruning a destination accordingly. STUB: interface only; the implementation replaces it.

use std::time::Duration;

use crate::destination::Destination;
use crate::error::BackupError;
use crate::manifest::BackupId;

/// Retention rules. A backup kept by any rule stays. Buckets (hour, day, ISO week, month)
/// are in UTC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_within: Option<Duration>,
}

impl RetentionPolicy {
    /// The server's policy when no rule is configured: 24 hourly, 7 daily, 4 weekly, 12
    /// monthly.
    pub fn server_default() -> RetentionPolicy {
        RetentionPolicy::default()
    }

    /// No rule set.
    pub fn is_empty(&self) -> bool {
        true
    }

    /// `keep-hourly 24, keep-daily 7, ...` for logs and `/status`.
    pub fn describe(&self) -> String {
        String::new()
    }
}

/// One backup as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: BackupId,
    pub created_at_unix_ms: i64,
    /// A restore drill or `backup verify` passed for it.
    pub verified: bool,
}

/// What [`plan`] decided, each list newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Kept, with the rules that keep each (`last`, `hourly`, `daily`, `weekly`, `monthly`,
    /// `within`, `newest`, `newest-verified`).
    pub keep: Vec<(BackupId, Vec<&'static str>)>,
    pub delete: Vec<BackupId>,
}

/// Decides which of `candidates` (one cluster's complete backups, any order) to keep at
/// `now_unix_ms`. Pure. The newest backup and the newest verified backup are always kept.
pub fn plan(policy: &RetentionPolicy, candidates: &[Candidate], now_unix_ms: i64) -> RetentionPlan {
    let _ = (policy, candidates, now_unix_ms);
    RetentionPlan::default()
}

/// What [`prune`] did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    pub kept: Vec<(BackupId, Vec<&'static str>)>,
    /// Complete backups deleted (manifest first, then the rest of the set).
    pub deleted: Vec<BackupId>,
    /// Sets without a manifest older than a day, and superseded sets, removed.
    pub cleaned: Vec<BackupId>,
    /// Sets that could not be (fully) deleted, with the reason; a later prune retries them.
    pub failed: Vec<(BackupId, String)>,
    pub dry_run: bool,
}

/// Applies `policy` to the backups in `dest` (only `cluster_id`'s when given, else each
/// cluster separately) at `now_unix_ms`.
pub async fn prune(
    dest: &Destination,
    cluster_id: Option<&str>,
    policy: &RetentionPolicy,
    now_unix_ms: i64,
    dry_run: bool,
) -> Result<PruneReport, BackupError> {
    let _ = (dest, cluster_id, policy, now_unix_ms);
    Ok(PruneReport {
        dry_run,
        ..PruneReport::default()
    })
}
