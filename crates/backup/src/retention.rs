//! Which backups to keep: keep-last / hourly / daily / weekly / monthly / within rules, and
//! pruning a destination accordingly.
//!
//! The rules work like restic's and borg's: a bucket rule (hourly, daily, ...) walks the
//! backups newest first and keeps the newest backup of each of the N most recent buckets that
//! hold one. A backup kept by any rule stays. Whatever the policy, the newest backup and the
//! newest verified backup stay, so pruning can never leave a destination without a restorable
//! backup it had.
//!
//! An incremental restores only on top of its parent, the parent's parent, ..., down to a full
//! backup, so every set a kept backup's chain runs through stays too (reason `chain`), and
//! sets are deleted children first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Datelike;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::destination::Destination;
use crate::error::BackupError;
use crate::list::{list_backups, BackupList};
use crate::manifest::{BackupId, MANIFEST_FILE};

/// Sets deleted at once: enough to hide a cloud store's latency, few enough to stay polite.
const DELETES_IN_FLIGHT: usize = 8;
/// A set without a manifest younger than this may be a backup still uploading.
const INCOMPLETE_GRACE_MS: i64 = 24 * 3_600_000;

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
        RetentionPolicy {
            keep_last: Some(10),
            keep_hourly: Some(24),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
            ..RetentionPolicy::default()
        }
    }

    /// No rule set.
    pub fn is_empty(&self) -> bool {
        *self == RetentionPolicy::default()
    }

    /// `keep-hourly 24, keep-daily 7, ...` for logs and `/status`.
    pub fn describe(&self) -> String {
        let mut rules: Vec<String> = [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
        ]
        .into_iter()
        .filter_map(|(name, n)| n.map(|n| format!("{name} {n}")))
        .collect();
        if let Some(d) = self.keep_within {
            rules.push(format!("keep-within {}", crate::format_duration(d)));
        }
        if rules.is_empty() {
            "no retention rules (keep everything)".into()
        } else {
            rules.join(", ")
        }
    }
}

/// One backup as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: BackupId,
    pub created_at_unix_ms: i64,
    /// A restore drill or `backup verify` passed for it.
    pub verified: bool,
    /// The backup an incremental applies on top of (`None` for a full backup).
    pub parent: Option<BackupId>,
}

/// What [`plan`] decided, each list newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Kept, with the rules that keep each (`last`, `hourly`, `daily`, `weekly`, `monthly`,
    /// `within`, `newest`, `newest-verified`, `archive` for a base the log archive needs;
    /// `no-rules` when the policy is empty, which keeps everything; `chain` for a set that a
    /// kept incremental's chain runs through, down to its full backup).
    pub keep: Vec<(BackupId, Vec<&'static str>)>,
    pub delete: Vec<BackupId>,
}

/// A calendar bucket of a bucket rule; `None` for a time the calendar cannot hold (a
/// nonsensical manifest), which no bucket rule keeps.
type BucketOf = fn(i64) -> Option<i64>;

fn hour_of(ms: i64) -> Option<i64> {
    Some(ms.div_euclid(3_600_000))
}

fn day_of(ms: i64) -> Option<i64> {
    Some(ms.div_euclid(86_400_000))
}

/// ISO weeks run Monday to Sunday; day 0 (1970-01-01) was a Thursday, so shifting by three
/// days makes every Monday start a new multiple of seven.
fn iso_week_of(ms: i64) -> Option<i64> {
    Some((ms.div_euclid(86_400_000) + 3).div_euclid(7))
}

fn month_of(ms: i64) -> Option<i64> {
    let t = chrono::DateTime::from_timestamp_millis(ms)?;
    Some(i64::from(t.year()) * 12 + i64::from(t.month0()))
}

/// Decides which of `candidates` (one cluster's complete backups, any order) to keep at
/// `now_unix_ms`. Pure. The newest backup and the newest verified backup are always kept.
pub fn plan(policy: &RetentionPolicy, candidates: &[Candidate], now_unix_ms: i64) -> RetentionPlan {
    plan_keeping(policy, candidates, now_unix_ms, &BTreeSet::new())
}

/// [`plan`], also keeping every candidate in `also_keep` (reason `archive`: a base backup the
/// log archive's retained window replays from, see [`crate::archive::archive_needs`]).
///
/// After the rules, every candidate that a kept one's chain runs through (its `parent`, the
/// parent's parent, ...) is kept as well (reason `chain`). A chain whose parent is not among
/// `candidates` keeps the part that is; a cycle of parents (corrupt manifests) ends the walk.
pub fn plan_keeping(
    policy: &RetentionPolicy,
    candidates: &[Candidate],
    now_unix_ms: i64,
    also_keep: &BTreeSet<BackupId>,
) -> RetentionPlan {
    plan_chains(policy, candidates, now_unix_ms, also_keep, &[]).0
}

/// [`plan_keeping`], where chains may also run through `uncounted` sets (each with its parent):
/// superseded sets, which no rule counts, but which an incremental taken on top of one before
/// it was superseded still needs. Also returns the uncounted sets that a kept chain runs
/// through.
fn plan_chains(
    policy: &RetentionPolicy,
    candidates: &[Candidate],
    now_unix_ms: i64,
    also_keep: &BTreeSet<BackupId>,
    uncounted: &[(&BackupId, Option<&BackupId>)],
) -> (RetentionPlan, BTreeSet<BackupId>) {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    // Newest first; the id breaks ties so that the plan does not depend on the input order.
    sorted.sort_by(|a, b| (b.created_at_unix_ms, &b.id).cmp(&(a.created_at_unix_ms, &a.id)));
    let mut reasons: Vec<Vec<&'static str>> = vec![Vec::new(); sorted.len()];

    if let Some(n) = policy.keep_last {
        for r in reasons.iter_mut().take(n as usize) {
            r.push("last");
        }
    }
    let bucket_rules: [(&'static str, Option<u32>, BucketOf); 4] = [
        ("hourly", policy.keep_hourly, hour_of),
        ("daily", policy.keep_daily, day_of),
        ("weekly", policy.keep_weekly, iso_week_of),
        ("monthly", policy.keep_monthly, month_of),
    ];
    for (name, n, bucket_of) in bucket_rules {
        let Some(n) = n else { continue };
        let mut kept = 0u32;
        let mut last_bucket = None;
        for (c, r) in sorted.iter().zip(reasons.iter_mut()) {
            if kept >= n {
                break;
            }
            let Some(bucket) = bucket_of(c.created_at_unix_ms) else {
                continue;
            };
            // Newest first, so the first backup met in a bucket is that bucket's newest.
            if last_bucket != Some(bucket) {
                last_bucket = Some(bucket);
                r.push(name);
                kept += 1;
            }
        }
    }
    if let Some(within) = policy.keep_within {
        let within_ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_unix_ms.saturating_sub(within_ms);
        for (c, r) in sorted.iter().zip(reasons.iter_mut()) {
            if c.created_at_unix_ms > cutoff {
                r.push("within");
            }
        }
    }
    if let Some(r) = reasons.first_mut() {
        r.push("newest");
    }
    if let Some(i) = sorted.iter().position(|c| c.verified) {
        reasons[i].push("newest-verified");
    }
    for (c, r) in sorted.iter().zip(reasons.iter_mut()) {
        if also_keep.contains(&c.id) {
            r.push("archive");
        }
    }
    if policy.is_empty() {
        for r in &mut reasons {
            r.push("no-rules");
        }
    }

    let mut parents: BTreeMap<&BackupId, Option<&BackupId>> =
        sorted.iter().map(|c| (&c.id, c.parent.as_ref())).collect();
    for &(id, parent) in uncounted {
        parents.entry(id).or_insert(parent);
    }
    let kept = sorted
        .iter()
        .zip(&reasons)
        .filter(|(_, r)| !r.is_empty())
        .map(|(c, _)| &c.id);
    let chain = ancestors(kept, &parents);
    for (c, r) in sorted.iter().zip(reasons.iter_mut()) {
        if chain.contains(&c.id) {
            r.push("chain");
        }
    }
    let uncounted_kept = uncounted
        .iter()
        .filter(|(id, _)| chain.contains(id))
        .map(|(id, _)| (*id).clone())
        .collect();

    let mut out = RetentionPlan::default();
    for (c, r) in sorted.into_iter().zip(reasons) {
        if r.is_empty() {
            out.delete.push(c.id.clone());
        } else {
            out.keep.push((c.id.clone(), r));
        }
    }
    (out, uncounted_kept)
}

/// Every set that one of `roots` needs to restore: its parent, the parent's parent, ..., as far
/// as `parents` (each known set with its parent) knows them.
///
/// The walk stops at a parent that is not known, keeping the part of the chain that is: the
/// missing set may only have been unreadable this once, and the rest of its chain would be gone
/// for good. It also stops at a set already reached, so a cycle of parents (corrupt manifests)
/// ends it and no set is walked twice.
fn ancestors<'a>(
    roots: impl IntoIterator<Item = &'a BackupId>,
    parents: &BTreeMap<&'a BackupId, Option<&'a BackupId>>,
) -> BTreeSet<&'a BackupId> {
    let mut out = BTreeSet::new();
    for root in roots {
        let mut next = parents.get(root).copied().flatten();
        while let Some(id) = next {
            let Some((&known, &parent)) = parents.get_key_value(id) else {
                break;
            };
            if !out.insert(known) {
                break;
            }
            next = parent;
        }
    }
    out
}

/// What [`prune`] did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// Per cluster, its kept backups newest first with their reasons (see
    /// [`RetentionPlan::keep`]), then the superseded sets a kept chain runs through (`chain`).
    pub kept: Vec<(BackupId, Vec<&'static str>)>,
    /// Complete backups deleted (manifest first, then the rest of the set), children before
    /// the sets they apply on top of.
    pub deleted: Vec<BackupId>,
    /// Sets without a manifest older than a day, and superseded sets no kept chain runs
    /// through, removed.
    pub cleaned: Vec<BackupId>,
    /// Sets that could not be (fully) deleted, with the reason; a later prune retries them.
    pub failed: Vec<(BackupId, String)>,
    pub dry_run: bool,
}

/// Applies `policy` to the backups in `dest` (only `cluster_id`'s when given, else each
/// cluster separately) at `now_unix_ms`.
///
/// Also removes garbage whatever the policy: superseded sets (a later leader's backup of the
/// same slot replaced them) unless a kept incremental's chain runs through one, and sets
/// without a manifest whose name dates them more than a day
/// before `now_unix_ms` (failed or abandoned uploads). Sets with an unreadable manifest are
/// left alone: nobody can tell what they are. Only a failure to list the destination is an
/// error; a set that cannot be deleted is reported in [`PruneReport::failed`].
pub async fn prune(
    dest: &Destination,
    cluster_id: Option<&str>,
    policy: &RetentionPolicy,
    now_unix_ms: i64,
    dry_run: bool,
) -> Result<PruneReport, BackupError> {
    let listing = list_backups(dest).await?;
    prune_keeping(
        dest,
        &listing,
        cluster_id,
        policy,
        now_unix_ms,
        &BTreeSet::new(),
        dry_run,
    )
    .await
}

/// [`prune`] from a `listing` of `dest` the caller already made, also keeping the backups in
/// `also_keep` (reason `archive`: the bases the log archive's retained window needs, from
/// [`crate::archive::archive_needs`] on the same listing).
pub async fn prune_keeping(
    dest: &Destination,
    listing: &BackupList,
    cluster_id: Option<&str>,
    policy: &RetentionPolicy,
    now_unix_ms: i64,
    also_keep: &BTreeSet<BackupId>,
    dry_run: bool,
) -> Result<PruneReport, BackupError> {
    let wanted = |id: &BackupId| cluster_id.is_none_or(|c| id.cluster_id() == c);

    let mut clusters: BTreeMap<&str, Vec<Candidate>> = BTreeMap::new();
    for (id, manifest) in listing.backups.iter().filter(|(id, _)| wanted(id)) {
        clusters
            .entry(id.cluster_id())
            .or_default()
            .push(Candidate {
                id: id.clone(),
                created_at_unix_ms: manifest.created_at_unix_ms,
                verified: listing.verified.contains(id),
                parent: manifest.parent.as_ref().map(|p| p.id.clone()),
            });
    }

    // Superseded sets count as no backup, but an incremental may have been taken on top of one
    // before a later leader's set for the same slot replaced it.
    let mut superseded: BTreeMap<&str, Vec<(&BackupId, Option<&BackupId>)>> = BTreeMap::new();
    for (id, manifest) in listing.superseded.iter().filter(|(id, _)| wanted(id)) {
        superseded
            .entry(id.cluster_id())
            .or_default()
            .push((id, manifest.parent.as_ref().map(|p| &p.id)));
    }

    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let mut doomed = Vec::new();
    let mut chained = BTreeSet::new();
    for (cluster, candidates) in &clusters {
        let uncounted = superseded.get(cluster).map_or(&[][..], Vec::as_slice);
        let (plan, kept_uncounted) =
            plan_chains(policy, candidates, now_unix_ms, also_keep, uncounted);
        report.kept.extend(plan.keep);
        // Superseded sets come after the cluster's backups, newest first like them.
        report.kept.extend(
            uncounted
                .iter()
                .filter(|(id, _)| kept_uncounted.contains(*id))
                .map(|(id, _)| ((*id).clone(), vec!["chain"])),
        );
        doomed.extend(plan.delete);
        chained.extend(kept_uncounted);
    }
    let garbage: Vec<BackupId> = listing
        .superseded
        .iter()
        .map(|(id, _)| id.clone())
        .filter(|id| wanted(id) && !chained.contains(id))
        .chain(
            listing
                .incomplete
                .iter()
                .filter(|id| {
                    wanted(id)
                        && set_time_unix_ms(id.set())
                            .is_some_and(|t| t < now_unix_ms.saturating_sub(INCOMPLETE_GRACE_MS))
                })
                .cloned(),
        )
        .collect::<BTreeSet<_>>()
        .into_iter()
        .rev()
        .collect();

    if dry_run {
        report.deleted = doomed;
        report.cleaned = garbage;
        return Ok(report);
    }
    let parents: BTreeMap<&BackupId, &BackupId> = listing
        .backups
        .iter()
        .chain(&listing.superseded)
        .filter_map(|(id, m)| Some((id, &m.parent.as_ref()?.id)))
        .collect();
    let doomed_count = doomed.len();
    let sets: Vec<(BackupId, Option<BackupId>)> = doomed
        .into_iter()
        .chain(garbage)
        .map(|id| {
            let parent = parents.get(&id).map(|p| (*p).clone());
            (id, parent)
        })
        .collect();
    let outcomes =
        delete_children_first(sets, |id| async move { delete_set(dest, &id).await }).await;
    for (n, (id, result)) in outcomes.into_iter().enumerate() {
        match result {
            Ok(()) if n < doomed_count => report.deleted.push(id),
            Ok(()) => report.cleaned.push(id),
            Err(reason) => report.failed.push((id, reason)),
        }
    }
    for (id, reason) in &report.failed {
        tracing::warn!(dest = %dest, %id, %reason, "pruning a backup set failed");
    }
    Ok(report)
}

/// Deletes `sets` (each with its parent, if known) with `delete`, several at once, children
/// first: a set goes only once every set among `sets` that applies on top of it is gone. A
/// failed deletion may leave the child's manifest in place, and a child left without its parent
/// would be listed as a backup that cannot be restored; so the sets its chain runs through stay
/// too (reported as failed, the next prune retries them). Parents that name each other in a
/// cycle (corrupt manifests) go once nothing else can. Results in the order of `sets`.
async fn delete_children_first<F, Fut>(
    sets: Vec<(BackupId, Option<BackupId>)>,
    delete: F,
) -> Vec<(BackupId, Result<(), String>)>
where
    F: Fn(BackupId) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut index: BTreeMap<&BackupId, usize> = BTreeMap::new();
    for (i, (id, _)) in sets.iter().enumerate() {
        index.entry(id).or_insert(i);
    }
    let parent_of: Vec<Option<usize>> = sets
        .iter()
        .map(|(_, parent)| parent.as_ref().and_then(|p| index.get(p).copied()))
        .collect();
    let mut children_left = vec![0usize; sets.len()];
    for &p in parent_of.iter().flatten() {
        children_left[p] += 1;
    }
    let mut results: Vec<Option<Result<(), String>>> = vec![None; sets.len()];
    // The failed deletion of a set whose chain runs through this one.
    let mut blocked_by: Vec<Option<usize>> = vec![None; sets.len()];
    loop {
        let pending = |i: &usize| results[*i].is_none() && blocked_by[*i].is_none();
        let mut wave: Vec<usize> = (0..sets.len())
            .filter(|i| pending(i) && children_left[*i] == 0)
            .collect();
        if wave.is_empty() {
            // Whatever still waits waits on a cycle: nothing restores through it.
            wave = (0..sets.len()).filter(pending).collect();
        }
        if wave.is_empty() {
            break;
        }
        let done: Vec<(usize, Result<(), String>)> = futures::stream::iter(wave)
            .map(|i| {
                let deleting = delete(sets[i].0.clone());
                async move { (i, deleting.await) }
            })
            .buffered(DELETES_IN_FLIGHT)
            .collect()
            .await;
        for (i, result) in done {
            if result.is_ok() {
                if let Some(p) = parent_of[i] {
                    children_left[p] = children_left[p].saturating_sub(1);
                }
            } else {
                let mut next = parent_of[i];
                while let Some(p) = next {
                    if results[p].is_some() || blocked_by[p].is_some() {
                        break;
                    }
                    blocked_by[p] = Some(i);
                    next = parent_of[p];
                }
            }
            results[i] = Some(result);
        }
    }
    let names: Vec<String> = sets.iter().map(|(id, _)| id.to_string()).collect();
    sets.into_iter()
        .zip(results.into_iter().zip(blocked_by))
        .map(|((id, _), (result, blocked_by))| {
            let result = result.unwrap_or_else(|| {
                let child = blocked_by.map_or("a set on top of it", |c| names[c].as_str());
                Err(format!(
                    "not deleted: {child} could not be deleted and restores through this set,                      so this set stays until {child} is gone; the next prune retries"
                ))
            });
            (id, result)
        })
        .collect()
}

/// Deletes one set: `manifest.json` first, so that from the first delete on readers no longer
/// see a backup that is half gone, then whatever else the set holds. `Err` says what failed.
async fn delete_set(dest: &Destination, id: &BackupId) -> Result<(), String> {
    let dir = dest.set_dir(id);
    let store = dest.store();
    delete_object(dest, &dir.clone().join(MANIFEST_FILE))
        .await
        .map_err(|e| format!("deleting {MANIFEST_FILE} failed: {e}"))?;
    let objects: Vec<ObjectPath> = store
        .list(Some(&dir))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| {
            format!(
                "{MANIFEST_FILE} was deleted but listing the rest of the set failed: {e}; the \
                 set no longer counts as a backup and a later prune removes the rest"
            )
        })?;
    let mut errors = Vec::new();
    for object in objects {
        // The listing is by prefix; never act on anything outside this very set.
        if object
            .prefix_match(&dir)
            .is_none_or(|mut rest| rest.next().is_none())
        {
            continue;
        }
        if let Err(e) = delete_object(dest, &object).await {
            errors.push(format!("{object}: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{MANIFEST_FILE} was deleted but not everything else: {}; the set no longer counts \
             as a backup and a later prune removes the rest",
            errors.join("; ")
        ))
    }
}

/// Deletes one object; one that is already gone (a concurrent prune) counts as deleted.
async fn delete_object(dest: &Destination, path: &ObjectPath) -> Result<(), object_store::Error> {
    match dest.store().delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The creation time a set name starts with (`YYYYMMDDTHHMMSS.mmmZ-...`), if it does.
fn set_time_unix_ms(set: &str) -> Option<i64> {
    let stamp = set.get(..20)?;
    if set.len() > 20 && !set[20..].starts_with('-') {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;

    fn utc(y: i32, mo: u32, d: u32, h: u32) -> i64 {
        chrono::Utc
            .with_ymd_and_hms(y, mo, d, h, 0, 0)
            .single()
            .unwrap()
            .timestamp_millis()
    }

    fn candidate(ms: i64) -> Candidate {
        Candidate {
            id: BackupId::for_backup("c1", ms, 1, 1).unwrap(),
            created_at_unix_ms: ms,
            verified: false,
            parent: None,
        }
    }

    fn id_at(ms: i64) -> BackupId {
        candidate(ms).id
    }

    /// An incremental taken at `ms` on top of the backup taken at `parent_ms`.
    fn incremental(ms: i64, parent_ms: i64) -> Candidate {
        Candidate {
            parent: Some(id_at(parent_ms)),
            ..candidate(ms)
        }
    }

    fn kept_times(plan: &RetentionPlan, all: &[Candidate]) -> Vec<i64> {
        plan.keep
            .iter()
            .map(|(id, _)| all.iter().find(|c| &c.id == id).unwrap().created_at_unix_ms)
            .collect()
    }

    fn reasons_of<'a>(plan: &'a RetentionPlan, id: &BackupId) -> &'a [&'static str] {
        &plan.keep.iter().find(|(k, _)| k == id).unwrap().1
    }

    /// Newest of each of the `n` most recent buckets, computed independently of `plan`: group
    /// everything, then take the top buckets.
    fn expected_bucket_keeps(times: &[i64], n: usize, bucket: impl Fn(i64) -> i64) -> Vec<i64> {
        let mut newest: BTreeMap<i64, i64> = BTreeMap::new();
        for &t in times {
            let e = newest.entry(bucket(t)).or_insert(t);
            *e = (*e).max(t);
        }
        newest.values().rev().take(n).copied().collect()
    }

    #[test]
    fn months_of_hourly_backups() {
        // 120 days of hourly backups at :17 past the hour, ending 2025-06-10 23:17 UTC.
        let end = utc(2025, 6, 10, 23) + 17 * 60_000;
        let times: Vec<i64> = (0..120 * 24).map(|i| end - i * HOUR).collect();
        let all: Vec<Candidate> = times.iter().rev().map(|&t| candidate(t)).collect();
        let policy = RetentionPolicy {
            keep_hourly: Some(24),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(3),
            ..RetentionPolicy::default()
        };
        let now = end + 10 * 60_000;
        let plan = plan(&policy, &all, now);

        let hourly = expected_bucket_keeps(&times, 24, |t| t.div_euclid(HOUR));
        let daily = expected_bucket_keeps(&times, 7, |t| t.div_euclid(DAY));
        let weekly = expected_bucket_keeps(&times, 4, |t| {
            let d = chrono::DateTime::from_timestamp_millis(t)
                .unwrap()
                .iso_week();
            i64::from(d.year()) * 100 + i64::from(d.week())
        });
        let monthly = expected_bucket_keeps(&times, 3, |t| {
            let d = chrono::DateTime::from_timestamp_millis(t).unwrap();
            i64::from(d.year()) * 100 + i64::from(d.month())
        });
        let mut expected: BTreeSet<i64> = BTreeSet::new();
        for set in [&hourly, &daily, &weekly, &monthly] {
            expected.extend(set.iter().copied());
        }
        let kept: BTreeSet<i64> = kept_times(&plan, &all).into_iter().collect();
        assert_eq!(kept, expected);

        // By hand: the last 24 hours (2025-06-10 00:17 .. 23:17); the last of each day for
        // 06-04 .. 06-09 (06-10's is among the hourly ones); ISO weeks end on Sundays
        // 06-08, 06-01, 05-25 (this week's is 06-10 23:17); months end 05-31, 04-30.
        let at = |mo, d, h| utc(2025, mo, d, h) + 17 * 60_000;
        let mut by_hand: BTreeSet<i64> = (0..24).map(|h| at(6, 10, h)).collect();
        by_hand.extend((4..=9).map(|d| at(6, d, 23)));
        by_hand.extend([at(6, 1, 23), at(5, 25, 23), at(5, 31, 23), at(4, 30, 23)]);
        assert_eq!(kept, by_hand);
        assert_eq!(plan.keep.len(), 24 + 6 + 2 + 2);
        assert_eq!(plan.keep.len() + plan.delete.len(), all.len());

        // Newest first in both lists, and reasons name every rule.
        let kept_order = kept_times(&plan, &all);
        assert!(kept_order.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(
            reasons_of(&plan, &candidate(end).id),
            ["hourly", "daily", "weekly", "monthly", "newest"]
        );
        assert_eq!(
            reasons_of(&plan, &candidate(at(6, 8, 23)).id),
            ["daily", "weekly"]
        );
        assert_eq!(reasons_of(&plan, &candidate(at(5, 31, 23)).id), ["monthly"]);
        assert_eq!(reasons_of(&plan, &candidate(at(6, 10, 5)).id), ["hourly"]);
        let deleted: Vec<i64> = plan
            .delete
            .iter()
            .map(|id| all.iter().find(|c| &c.id == id).unwrap().created_at_unix_ms)
            .collect();
        assert!(deleted.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn chains_of_120_days_of_hourly_incrementals_with_daily_fulls() {
        use chrono::Timelike;
        // Hourly at :17 past the hour, UTC, from 2025-02-11 00:17 to 2025-06-10 13:17 (120
        // calendar days, the last cut short by `now`): a full at 00:17, then each hour an
        // incremental on top of the hour before, so every day is one chain of its own.
        let at = |mo: u32, d: u32, h: u32| utc(2025, mo, d, h) + 17 * 60_000;
        let first = at(2, 11, 0);
        let end = at(6, 10, 13);
        let times: Vec<i64> = (0..)
            .map(|i| first + i * HOUR)
            .take_while(|&t| t <= end)
            .collect();
        assert_eq!(times.len(), 119 * 24 + 14);
        let hour_of_day = |t: i64| chrono::DateTime::from_timestamp_millis(t).unwrap().hour();
        let all: Vec<Candidate> = times
            .iter()
            .map(|&t| match hour_of_day(t) {
                0 => candidate(t),
                _ => incremental(t, t - HOUR),
            })
            .collect();
        let policy = RetentionPolicy {
            keep_hourly: Some(24),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(3),
            ..RetentionPolicy::default()
        };
        let plan = plan(&policy, &all, end + 10 * 60_000);

        // What the rules pick, by hand (2025-06-10 is a Tuesday):
        // - hourly 24: 06-10 00:17 .. 13:17 (14) and 06-09 14:17 .. 23:17 (10);
        // - daily 7: the last of 06-10 (13:17) and of 06-09 .. 06-04 (23:17);
        // - weekly 4: the last of this week (06-10 13:17) and of the weeks ending on Sundays
        //   06-08, 06-01, 05-25 (23:17);
        // - monthly 3: the last of June (06-10 13:17), May (05-31 23:17), April (04-30 23:17).
        let mut by_rules: BTreeSet<i64> = (0..=13).map(|h| at(6, 10, h)).collect();
        by_rules.extend((14..24).map(|h| at(6, 9, h)));
        by_rules.extend((4..=8).map(|d| at(6, d, 23)));
        by_rules.extend([at(6, 1, 23), at(5, 25, 23), at(5, 31, 23), at(4, 30, 23)]);
        assert_eq!(by_rules.len(), 14 + 10 + 5 + 4);
        // Each of those needs its day's chain back to that day's 00:17 full: 06-10 up to
        // 13:17, and every hour of each day that has a pick at 23:17 or (06-09) from 14:17.
        let whole_days = [
            (6, 9),
            (6, 8),
            (6, 7),
            (6, 6),
            (6, 5),
            (6, 4),
            (6, 1),
            (5, 31),
            (5, 25),
            (4, 30),
        ];
        let mut expected: BTreeSet<i64> = (0..=13).map(|h| at(6, 10, h)).collect();
        for (mo, d) in whole_days {
            expected.extend((0..24).map(|h| at(mo, d, h)));
        }
        assert_eq!(expected.len(), 14 + 10 * 24);
        // The same from the picks, modelling a chain as "every earlier backup of its day".
        let day = |t: i64| t.div_euclid(DAY);
        let closed: BTreeSet<i64> = times
            .iter()
            .copied()
            .filter(|&t| by_rules.iter().any(|&k| day(k) == day(t) && t <= k))
            .collect();
        assert_eq!(closed, expected);

        let kept: BTreeSet<i64> = kept_times(&plan, &all).into_iter().collect();
        assert_eq!(kept, expected);
        assert_eq!(plan.keep.len(), 254);
        assert_eq!(plan.keep.len() + plan.delete.len(), all.len());

        // Rules keep exactly the picks; everything else stays for `chain` alone.
        let time_of = |id: &BackupId| all.iter().find(|c| &c.id == id).unwrap().created_at_unix_ms;
        let picked: BTreeSet<i64> = plan
            .keep
            .iter()
            .filter(|(_, r)| r.iter().any(|r| *r != "chain"))
            .map(|(id, _)| time_of(id))
            .collect();
        assert_eq!(picked, by_rules);
        let chain_only = plan.keep.iter().filter(|(_, r)| *r == ["chain"]).count();
        assert_eq!(chain_only, 254 - by_rules.len());

        // No kept incremental lost its parent.
        let kept_ids: BTreeSet<&BackupId> = plan.keep.iter().map(|(id, _)| id).collect();
        for (id, _) in &plan.keep {
            let c = all.iter().find(|c| &c.id == id).unwrap();
            if let Some(parent) = &c.parent {
                assert!(
                    kept_ids.contains(parent),
                    "{id} kept without its parent {parent}"
                );
            }
        }

        let reasons = |mo, d, h| reasons_of(&plan, &id_at(at(mo, d, h))).to_vec();
        assert_eq!(
            reasons(6, 10, 13),
            ["hourly", "daily", "weekly", "monthly", "newest"]
        );
        assert_eq!(reasons(6, 10, 12), ["hourly", "chain"]);
        assert_eq!(reasons(6, 10, 0), ["hourly", "chain"]);
        assert_eq!(reasons(6, 9, 23), ["hourly", "daily"]);
        assert_eq!(reasons(6, 9, 14), ["hourly", "chain"]);
        assert_eq!(reasons(6, 9, 13), ["chain"]);
        assert_eq!(reasons(6, 9, 0), ["chain"]);
        assert_eq!(reasons(6, 8, 23), ["daily", "weekly"]);
        assert_eq!(reasons(6, 8, 0), ["chain"]);
        assert_eq!(reasons(6, 4, 23), ["daily"]);
        assert_eq!(reasons(6, 1, 23), ["weekly"]);
        assert_eq!(reasons(5, 31, 23), ["monthly"]);
        assert_eq!(reasons(4, 30, 12), ["chain"]);

        // Newest first in both lists.
        let order: Vec<i64> = plan.keep.iter().map(|(id, _)| time_of(id)).collect();
        assert!(order.windows(2).all(|w| w[0] > w[1]));
        let deleted: Vec<i64> = plan.delete.iter().map(time_of).collect();
        assert!(deleted.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(deleted.first(), Some(&at(6, 3, 23)));
    }

    #[test]
    fn a_chain_missing_a_parent_keeps_what_there_is_of_it() {
        let t0 = utc(2025, 3, 1, 0);
        let old_full = candidate(t0 - DAY);
        // The full at t0 is not among the candidates.
        let i1 = incremental(t0 + HOUR, t0);
        let i2 = incremental(t0 + 2 * HOUR, t0 + HOUR);
        let i3 = incremental(t0 + 3 * HOUR, t0 + 2 * HOUR);
        let all = [old_full.clone(), i1.clone(), i2.clone(), i3.clone()];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let p = plan(&policy, &all, t0 + DAY);
        assert_eq!(
            p.keep,
            vec![
                (i3.id.clone(), vec!["last", "newest"]),
                (i2.id.clone(), vec!["chain"]),
                (i1.id.clone(), vec!["chain"]),
            ]
        );
        assert_eq!(p.delete, std::slice::from_ref(&old_full.id));

        // The kept one's own parent missing: the rules alone decide, as for a full.
        let lone = [old_full.clone(), i1.clone()];
        let p = plan(&policy, &lone, t0 + DAY);
        assert_eq!(p.keep, vec![(i1.id.clone(), vec!["last", "newest"])]);
        assert_eq!(p.delete, std::slice::from_ref(&old_full.id));
        let as_fulls = [old_full.clone(), candidate(t0 + HOUR)];
        assert_eq!(plan(&policy, &as_fulls, t0 + DAY), p);
    }

    #[test]
    fn a_cycle_of_parents_ends_the_walk() {
        // Corrupt manifests: a and b name each other, s names itself.
        let t0 = utc(2025, 3, 1, 0);
        let full = candidate(t0);
        let a = incremental(t0 + HOUR, t0 + 2 * HOUR);
        let b = incremental(t0 + 2 * HOUR, t0 + HOUR);
        let s = incremental(t0 + 3 * HOUR, t0 + 3 * HOUR);
        let d = incremental(t0 + 4 * HOUR, t0 + HOUR);
        let all = [full.clone(), a.clone(), b.clone(), s.clone(), d.clone()];
        let last = |n| RetentionPolicy {
            keep_last: Some(n),
            ..RetentionPolicy::default()
        };
        let p = plan(&last(1), &all, t0 + DAY);
        assert_eq!(
            p.keep,
            vec![
                (d.id.clone(), vec!["last", "newest"]),
                (b.id.clone(), vec!["chain"]),
                (a.id.clone(), vec!["chain"]),
            ]
        );
        assert_eq!(p.delete, [s.id.clone(), full.id.clone()]);

        let p = plan(&last(2), &all, t0 + DAY);
        assert_eq!(reasons_of(&p, &s.id), ["last", "chain"]);
        assert_eq!(p.delete, std::slice::from_ref(&full.id));

        let p = plan(&RetentionPolicy::default(), &all, t0 + DAY);
        assert!(p.delete.is_empty());
        assert_eq!(reasons_of(&p, &b.id), ["no-rules", "chain"]);
        assert_eq!(reasons_of(&p, &full.id), ["no-rules"]);
    }

    #[test]
    fn an_archive_base_keeps_its_chain() {
        let t0 = utc(2025, 3, 1, 0);
        let f = candidate(t0);
        let i1 = incremental(t0 + HOUR, t0);
        let i2 = incremental(t0 + 2 * HOUR, t0 + HOUR);
        let g = candidate(t0 + DAY);
        let h = incremental(t0 + DAY + HOUR, t0 + DAY);
        let all = [f.clone(), i1.clone(), i2.clone(), g.clone(), h.clone()];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let needs = BTreeSet::from([i2.id.clone()]);
        let p = plan_keeping(&policy, &all, t0 + 2 * DAY, &needs);
        assert_eq!(
            p.keep,
            vec![
                (h.id.clone(), vec!["last", "newest"]),
                (g.id.clone(), vec!["chain"]),
                (i2.id.clone(), vec!["archive"]),
                (i1.id.clone(), vec!["chain"]),
                (f.id.clone(), vec!["chain"]),
            ]
        );
        assert!(p.delete.is_empty());

        let p = plan(&policy, &all, t0 + 2 * DAY);
        assert_eq!(p.delete, [i2.id.clone(), i1.id.clone(), f.id.clone()]);
    }

    fn manifest(
        created: i64,
        slot: i64,
        leader_term: u64,
        parent: Option<&(BackupId, crate::manifest::Manifest)>,
    ) -> (BackupId, crate::manifest::Manifest) {
        use crate::manifest::{BackupKind, Manifest, ParentRef, TimelineRef};
        let timeline = TimelineRef {
            id: "tl-1".into(),
            counter: 1,
        };
        let m = Manifest {
            format_version: if parent.is_some() { 2 } else { 1 },
            leader_term: Some(leader_term),
            slot_unix_ms: Some(slot),
            kind: match parent {
                Some(_) => BackupKind::Incremental,
                None => BackupKind::Full,
            },
            parent: parent.map(|(id, _)| ParentRef {
                id: id.clone(),
                pages_digest: "0".repeat(64),
            }),
            pages_digest: Some("1".repeat(64)),
            chain_depth: parent.map_or(0, |(_, m)| m.chain_depth + 1),
            ..Manifest::sample("c1", timeline, 1, created)
        };
        (m.id().unwrap(), m)
    }

    #[tokio::test]
    async fn a_superseded_set_a_kept_chain_runs_through_stays() {
        use object_store::PutPayload;
        let dest = Destination::parse("memory://").unwrap();
        let t0 = utc(2025, 3, 1, 0);
        let old = manifest(t0 - DAY, t0 - DAY, 1, None);
        let full = manifest(t0, t0, 1, None);
        // The 01:00 set of a leader that lost its term, finished late; the new leader's set for
        // the same slot went on top of it and replaced it.
        let lost = manifest(t0 + HOUR + 60_000, t0 + HOUR, 1, Some(&full));
        let winner = manifest(t0 + HOUR + 5 * 60_000, t0 + HOUR, 2, Some(&lost));
        let next = manifest(t0 + 2 * HOUR, t0 + 2 * HOUR, 2, Some(&winner));
        for (id, m) in [&old, &full, &lost, &winner, &next] {
            let path = dest.set_dir(id).join(MANIFEST_FILE);
            let body = serde_json::to_vec(m).unwrap();
            dest.store()
                .put(&path, PutPayload::from(body))
                .await
                .unwrap();
        }
        let listing = list_backups(&dest).await.unwrap();
        let ids = |l: &[(BackupId, crate::manifest::Manifest)]| -> Vec<BackupId> {
            l.iter().map(|(id, _)| id.clone()).collect()
        };
        assert_eq!(ids(&listing.superseded), std::slice::from_ref(&lost.0));

        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let expected_kept = vec![
            (next.0.clone(), vec!["last", "newest"]),
            (winner.0.clone(), vec!["chain"]),
            (full.0.clone(), vec!["chain"]),
            (lost.0.clone(), vec!["chain"]),
        ];
        let none = BTreeSet::new();
        let now = t0 + 3 * HOUR;
        let dry = prune_keeping(&dest, &listing, None, &policy, now, &none, true)
            .await
            .unwrap();
        assert_eq!(dry.kept, expected_kept);
        assert_eq!(dry.deleted, std::slice::from_ref(&old.0));
        assert!(dry.cleaned.is_empty());

        let report = prune_keeping(&dest, &listing, None, &policy, now, &none, false)
            .await
            .unwrap();
        assert_eq!(report.kept, expected_kept);
        assert_eq!(report.deleted, std::slice::from_ref(&old.0));
        assert!(report.cleaned.is_empty() && report.failed.is_empty());
        let after = list_backups(&dest).await.unwrap();
        assert_eq!(
            ids(&after.backups),
            [next.0.clone(), winner.0.clone(), full.0.clone()]
        );
        assert_eq!(ids(&after.superseded), std::slice::from_ref(&lost.0));
    }

    #[tokio::test]
    async fn deletes_go_children_first_and_a_failure_keeps_the_chain_below_it() {
        let id = |n: i64| id_at(utc(2025, 3, 1, 0) + n * HOUR);
        // Newest first: c3 -> c2 -> c1 -> c0 (full), d2 -> d1 (full), e whose parent is not
        // being deleted, x naming itself, y and z naming each other.
        let sets = vec![
            (id(20), Some(id(19))),
            (id(19), Some(id(18))),
            (id(18), Some(id(17))),
            (id(17), None),
            (id(16), Some(id(15))),
            (id(15), None),
            (id(14), Some(id(1))),
            (id(13), Some(id(13))),
            (id(12), Some(id(11))),
            (id(11), Some(id(12))),
        ];
        let calls = std::sync::Mutex::new(Vec::new());
        let results = delete_children_first(sets.clone(), |set| {
            calls.lock().unwrap().push(set.clone());
            let fails = set == id(19);
            async move {
                if fails {
                    Err("boom".to_string())
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Waves: what nothing waits on, then what that freed, then the cycles.
        assert_eq!(
            calls.into_inner().unwrap(),
            [
                id(20),
                id(16),
                id(14),
                id(19),
                id(15),
                id(13),
                id(12),
                id(11)
            ]
        );
        let got: Vec<&BackupId> = results.iter().map(|(id, _)| id).collect();
        let want: Vec<&BackupId> = sets.iter().map(|(id, _)| id).collect();
        assert_eq!(got, want);
        for (set, result) in &results {
            match set {
                s if *s == id(19) => assert_eq!(result, &Err("boom".to_string())),
                s if *s == id(18) || *s == id(17) => {
                    let reason = result.as_ref().unwrap_err();
                    assert!(reason.contains(&id(19).to_string()), "{reason}");
                    assert!(reason.contains("next prune retries"), "{reason}");
                }
                _ => assert_eq!(result, &Ok(()), "{set}"),
            }
        }
        assert!(delete_children_first(Vec::new(), |_| async { Ok(()) })
            .await
            .is_empty());
    }

    #[test]
    fn buckets_skip_empty_periods() {
        // Daily backups with a ten-day hole: keep-daily 3 reaches over the hole.
        let times = [
            utc(2025, 1, 1, 5),
            utc(2025, 1, 2, 5),
            utc(2025, 1, 13, 5),
            utc(2025, 1, 14, 5),
        ];
        let all: Vec<Candidate> = times.iter().map(|&t| candidate(t)).collect();
        let policy = RetentionPolicy {
            keep_daily: Some(3),
            ..RetentionPolicy::default()
        };
        let plan = plan(&policy, &all, utc(2025, 2, 1, 0));
        assert_eq!(kept_times(&plan, &all), [times[3], times[2], times[1]]);
        assert_eq!(plan.delete, [all[0].id.clone()]);
    }

    #[test]
    fn keep_last() {
        let all: Vec<Candidate> = (0..10)
            .map(|i| candidate(1_700_000_000_000 + i * 1000))
            .collect();
        let policy = RetentionPolicy {
            keep_last: Some(3),
            ..RetentionPolicy::default()
        };
        // Input order does not matter.
        let mut shuffled = all.clone();
        shuffled.swap(0, 9);
        shuffled.swap(3, 7);
        let plan = plan(&policy, &shuffled, 1_800_000_000_000);
        assert_eq!(
            plan.keep,
            vec![
                (all[9].id.clone(), vec!["last", "newest"]),
                (all[8].id.clone(), vec!["last"]),
                (all[7].id.clone(), vec!["last"]),
            ]
        );
        let deleted: Vec<_> = (0..7).rev().map(|i| all[i].id.clone()).collect();
        assert_eq!(plan.delete, deleted);

        // keep-last 0 still keeps the newest.
        let zero = RetentionPolicy {
            keep_last: Some(0),
            ..RetentionPolicy::default()
        };
        let plan = super::plan(&zero, &all, 0);
        assert_eq!(plan.keep, vec![(all[9].id.clone(), vec!["newest"])]);
        assert_eq!(plan.delete.len(), 9);
    }

    #[test]
    fn keep_within() {
        let now = utc(2025, 3, 1, 12);
        let all: Vec<Candidate> = (0..48).map(|h| candidate(now - h * HOUR)).collect();
        let policy = RetentionPolicy {
            keep_within: Some(Duration::from_secs(10 * 3600)),
            ..RetentionPolicy::default()
        };
        let plan = plan(&policy, &all, now);
        // Strictly younger than ten hours: ages 0..=9 h.
        let expected: Vec<i64> = (0..10).map(|h| now - h * HOUR).collect();
        assert_eq!(kept_times(&plan, &all), expected);
        assert_eq!(reasons_of(&plan, &all[0].id), ["within", "newest"]);
        assert_eq!(reasons_of(&plan, &all[9].id), ["within"]);
        assert_eq!(plan.delete.len(), 38);

        // A huge duration keeps everything without overflowing.
        let forever = RetentionPolicy {
            keep_within: Some(Duration::MAX),
            ..RetentionPolicy::default()
        };
        assert!(super::plan(&forever, &all, now).delete.is_empty());
    }

    #[test]
    fn verified_backup_is_protected() {
        let now = utc(2025, 3, 1, 12);
        let mut all: Vec<Candidate> = (0..10).map(|h| candidate(now - h * HOUR)).collect();
        all[6].verified = true;
        all[8].verified = true;
        let policy = RetentionPolicy {
            keep_last: Some(2),
            ..RetentionPolicy::default()
        };
        let plan = plan(&policy, &all, now);
        assert_eq!(
            plan.keep,
            vec![
                (all[0].id.clone(), vec!["last", "newest"]),
                (all[1].id.clone(), vec!["last"]),
                (all[6].id.clone(), vec!["newest-verified"]),
            ]
        );
        assert!(plan.delete.contains(&all[8].id));

        // When the newest is the verified one, it carries both reasons.
        all[0].verified = true;
        let plan = super::plan(&policy, &all, now);
        assert_eq!(
            reasons_of(&plan, &all[0].id),
            ["last", "newest", "newest-verified"]
        );
        assert_eq!(plan.keep.len(), 2);
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let all: Vec<Candidate> = (0..5).map(|i| candidate(i * DAY)).collect();
        let policy = RetentionPolicy::default();
        assert!(policy.is_empty());
        let plan = plan(&policy, &all, 10 * DAY);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.keep.len(), 5);
        assert_eq!(reasons_of(&plan, &all[4].id), ["newest", "no-rules"]);
        assert_eq!(reasons_of(&plan, &all[0].id), ["no-rules"]);
        assert_eq!(super::plan(&policy, &[], 0), RetentionPlan::default());
    }

    #[test]
    fn rules_add_up() {
        // Every 6 hours for 10 days.
        let now = utc(2025, 5, 11, 0);
        let all: Vec<Candidate> = (1..=40).map(|i| candidate(now - i * 6 * HOUR)).collect();
        let last = RetentionPolicy {
            keep_last: Some(2),
            ..RetentionPolicy::default()
        };
        let daily = RetentionPolicy {
            keep_daily: Some(3),
            ..RetentionPolicy::default()
        };
        let within = RetentionPolicy {
            keep_within: Some(Duration::from_secs(4 * 86_400 + 1)),
            ..RetentionPolicy::default()
        };
        let both = RetentionPolicy {
            keep_last: Some(2),
            keep_daily: Some(3),
            keep_within: Some(Duration::from_secs(4 * 86_400 + 1)),
            ..RetentionPolicy::default()
        };
        let kept = |p: &RetentionPolicy| -> BTreeSet<BackupId> {
            plan(p, &all, now)
                .keep
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        let union: BTreeSet<BackupId> = kept(&last)
            .into_iter()
            .chain(kept(&daily))
            .chain(kept(&within))
            .collect();
        assert_eq!(kept(&both), union);
        // Within covers 16 backups (ages 6 h .. 96 h), and the last and daily ones are all
        // among them.
        assert_eq!(union.len(), 16);
        let p = plan(&both, &all, now);
        assert_eq!(
            reasons_of(&p, &all[0].id),
            ["last", "daily", "within", "newest"]
        );
        assert_eq!(reasons_of(&p, &all[1].id), ["last", "within"]);
        assert_eq!(reasons_of(&p, &all[3].id), ["within"]);
        assert_eq!(reasons_of(&p, &all[4].id), ["daily", "within"]);
    }

    #[test]
    fn policy_text() {
        assert_eq!(
            RetentionPolicy::server_default().describe(),
            "keep-last 10, keep-hourly 24, keep-daily 7, keep-weekly 4, keep-monthly 12"
        );
        let p = RetentionPolicy {
            keep_last: Some(3),
            keep_within: Some(Duration::from_secs(2 * 86_400)),
            ..RetentionPolicy::default()
        };
        assert_eq!(p.describe(), "keep-last 3, keep-within 2d");
        assert!(!p.is_empty());
        assert!(RetentionPolicy::default()
            .describe()
            .contains("keep everything"));
    }

    #[test]
    fn set_times() {
        assert_eq!(
            set_time_unix_ms("20250102T030405.678Z-1-42"),
            Some(1_735_787_045_678)
        );
        assert_eq!(
            set_time_unix_ms("20250102T030405.678Z"),
            Some(1_735_787_045_678)
        );
        for bad in [
            "",
            "none",
            "20250102T030405.678Zx",
            "20251302T030405.678Z-1-1",
            "2025-01-02",
        ] {
            assert_eq!(set_time_unix_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn week_buckets_start_on_monday() {
        // 2025-06-08 was a Sunday, 2025-06-09 a Monday.
        assert_eq!(
            iso_week_of(utc(2025, 6, 8, 23)),
            iso_week_of(utc(2025, 6, 2, 0))
        );
        assert_ne!(
            iso_week_of(utc(2025, 6, 8, 23)),
            iso_week_of(utc(2025, 6, 9, 0))
        );
        assert_eq!(month_of(i64::MAX), None);
    }
}
