//! Which backups to keep: keep-last / hourly / daily / weekly / monthly / within rules, and
//! pruning a destination accordingly.
//!
//! The rules work like restic's and borg's: a bucket rule (hourly, daily, ...) walks the
//! backups newest first and keeps the newest backup of each of the N most recent buckets that
//! hold one. A backup kept by any rule stays. Whatever the policy, the newest backup and the
//! newest verified backup stay, so pruning can never leave a destination without a restorable
//! backup it had.

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
    /// `no-rules` when the policy is empty, which keeps
    /// everything).
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
pub fn plan_keeping(
    policy: &RetentionPolicy,
    candidates: &[Candidate],
    now_unix_ms: i64,
    also_keep: &BTreeSet<BackupId>,
) -> RetentionPlan {
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

    let mut out = RetentionPlan::default();
    for (c, r) in sorted.into_iter().zip(reasons) {
        if r.is_empty() {
            out.delete.push(c.id.clone());
        } else {
            out.keep.push((c.id.clone(), r));
        }
    }
    out
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
///
/// Also removes garbage whatever the policy: superseded sets (a later leader's backup of the
/// same slot replaced them) and sets without a manifest whose name dates them more than a day
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

    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let mut doomed = Vec::new();
    for candidates in clusters.values() {
        let plan = plan_keeping(policy, candidates, now_unix_ms, also_keep);
        report.kept.extend(plan.keep);
        doomed.extend(plan.delete);
    }
    let garbage: Vec<BackupId> = listing
        .superseded
        .iter()
        .map(|(id, _)| id.clone())
        .filter(&wanted)
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
    let outcomes = |ids: Vec<BackupId>| {
        futures::stream::iter(ids)
            .map(|id| async move {
                let result = delete_set(dest, &id).await;
                (id, result)
            })
            .buffered(DELETES_IN_FLIGHT)
            .collect::<Vec<_>>()
    };
    for (id, result) in outcomes(doomed).await {
        match result {
            Ok(()) => report.deleted.push(id),
            Err(reason) => report.failed.push((id, reason)),
        }
    }
    for (id, result) in outcomes(garbage).await {
        match result {
            Ok(()) => report.cleaned.push(id),
            Err(reason) => report.failed.push((id, reason)),
        }
    }
    for (id, reason) in &report.failed {
        tracing::warn!(dest = %dest, %id, %reason, "pruning a backup set failed");
    }
    Ok(report)
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
