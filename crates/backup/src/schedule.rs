//! When scheduled backups run: a fixed interval or a cron expression, as a sequence of slots.

use std::time::Duration;

use chrono::{DateTime, TimeZone};
use croner::parser::{CronParser, Seconds, Year};

use raftlite_store::go_duration::parse_duration_with_days;

use crate::error::BackupError;

/// How far back [`Schedule::slot_at_or_before`] looks for a cron match: a year and a day, so
/// a yearly expression always finds its last run, even across a leap day.
const CRON_LOOKBACK_MS: i64 = 366 * 86_400_000;

/// A backup schedule. Every run belongs to a *slot*: the Unix time (ms) at which it was due.
/// Slots are deterministic (the same on every node), so two leaders agree on which slot a
/// backup is for.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Slots at every multiple of `every` since the Unix epoch (UTC): `1h` runs on the hour.
    Interval { every: Duration },
    /// Slots at the times a cron expression matches, in a time zone.
    Cron {
        /// The expression as given (trimmed), for messages.
        expr: String,
        /// The zone's IANA name (`UTC` when none was given).
        tz: String,
        cron: Box<croner::Cron>,
        zone: chrono_tz::Tz,
    },
}

impl Schedule {
    /// An interval schedule; at least one second.
    pub fn interval(every: Duration) -> Result<Schedule, BackupError> {
        if every < Duration::from_secs(1) {
            return Err(BackupError::InvalidOptions {
                reason: format!(
                    "--backup-interval {} is too short: backups run at most once a second; \
                     use e.g. --backup-interval 1h",
                    format_duration(every)
                ),
            });
        }
        // Slots are computed in whole milliseconds; a finer interval would drift from them.
        if !every.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(BackupError::InvalidOptions {
                reason: format!(
                    "--backup-interval {every:?} is not a whole number of milliseconds; use \
                     e.g. --backup-interval 90s"
                ),
            });
        }
        if i64::try_from(every.as_millis()).is_err() {
            return Err(BackupError::InvalidOptions {
                reason: format!(
                    "--backup-interval {} is too long; use e.g. --backup-interval 1d",
                    format_duration(every)
                ),
            });
        }
        Ok(Schedule::Interval { every })
    }

    /// A cron schedule: 5 fields (minute hour day-of-month month day-of-week) or 6 with
    /// seconds first; `tz` is an IANA zone name (`Europe/Berlin`), `None` = UTC.
    pub fn cron(expr: &str, tz: Option<&str>) -> Result<Schedule, BackupError> {
        let expr = expr.trim();
        let zone = match tz.map(str::trim) {
            None => chrono_tz::UTC,
            Some(name) => {
                name.parse::<chrono_tz::Tz>()
                    .map_err(|_| BackupError::InvalidOptions {
                        reason: format!(
                            "--backup-tz {name:?} is not an IANA time zone name; use e.g. \
                         --backup-tz Europe/Berlin, America/New_York or UTC"
                        ),
                    })?
            }
        };
        let bad = |why: String| BackupError::InvalidOptions {
            reason: format!(
                "--backup-cron {expr:?} {why}; give 5 fields (minute hour day-of-month month \
                 day-of-week), e.g. --backup-cron \"0 3 * * *\" for 03:00 every day, or 6 with \
                 seconds first, e.g. \"0 */15 * * * *\""
            ),
        };
        // croner would also accept a seventh (year) field; the flag promises 5 or 6.
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| bad(format!("is not a cron expression ({e})")))?;
        // An expression like `0 0 30 2 *` parses but never fires: refuse it now rather than
        // never back up. Any 28 years hold every calendar a month can have (1901-2099), and the
        // search starts from a fixed date so that the answer does not depend on the clock.
        let probe_start = zone
            .timestamp_millis_opt(978_307_200_000) // 2001-01-01T00:00:00Z
            .single();
        let fires = probe_start
            .and_then(|start| cron.find_next_occurrence(&start, true).ok())
            .is_some_and(|first| first.timestamp_millis() < 1_893_456_000_000); // 2030-01-01
        if !fires {
            return Err(bad("never matches a date".into()));
        }
        Ok(Schedule::Cron {
            expr: expr.to_string(),
            tz: zone.name().to_string(),
            cron: Box::new(cron),
            zone,
        })
    }

    /// The latest slot at or before `now_unix_ms`, if any (a cron expression may not have
    /// matched within the search window, a year).
    pub fn slot_at_or_before(&self, now_unix_ms: i64) -> Option<i64> {
        match self {
            Schedule::Interval { every } => {
                let every = interval_ms(*every)?;
                now_unix_ms.div_euclid(every).checked_mul(every)
            }
            Schedule::Cron { cron, zone, .. } => {
                let now = in_zone(zone, now_unix_ms)?;
                // Matches fall on whole seconds and croner starts from `now`'s second, so an
                // inclusive search never returns a time after `now`.
                let slot = cron
                    .find_previous_occurrence(&now, true)
                    .ok()?
                    .timestamp_millis();
                let oldest = now_unix_ms.saturating_sub(CRON_LOOKBACK_MS);
                (slot >= oldest && slot <= now_unix_ms).then_some(slot)
            }
        }
    }

    /// The first slot strictly after `after_unix_ms`, if any.
    pub fn next_slot_after(&self, after_unix_ms: i64) -> Option<i64> {
        match self {
            Schedule::Interval { every } => {
                let every = interval_ms(*every)?;
                after_unix_ms
                    .div_euclid(every)
                    .checked_add(1)?
                    .checked_mul(every)
            }
            Schedule::Cron { cron, zone, .. } => {
                let after = in_zone(zone, after_unix_ms)?;
                // Exclusive search starts at the next whole second after `after`'s second,
                // which is exactly the first whole second strictly after `after`.
                let slot = cron
                    .find_next_occurrence(&after, false)
                    .ok()?
                    .timestamp_millis();
                (slot > after_unix_ms).then_some(slot)
            }
        }
    }

    /// For logs and `/status`: `every 1h` or `cron "0 * * * *" (Europe/Berlin)`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Interval { every } => format!("every {}", format_duration(*every)),
            Schedule::Cron { expr, tz, .. } => format!("cron {expr:?} ({tz})"),
        }
    }
}

/// The interval in ms, never zero (a hand-built `Schedule::Interval` may hold anything).
fn interval_ms(every: Duration) -> Option<i64> {
    i64::try_from(every.as_millis()).ok().filter(|&ms| ms > 0)
}

fn in_zone(zone: &chrono_tz::Tz, unix_ms: i64) -> Option<DateTime<chrono_tz::Tz>> {
    zone.timestamp_millis_opt(unix_ms).single()
}

/// The units [`format_duration`] writes (weeks are left out there).
const UNITS: [(&str, u64); 6] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 7 * 86_400_000),
];

/// Parses a duration of a backup setting (interval, retention, restore drills): Go's syntax
/// with the units `d` and `w` and a bare number of seconds (`90s`, `1h30m`, `2d`, `1h0m0s`,
/// `500ms`, `45`), as [`parse_duration_with_days`] reads it. Zero is allowed here (callers
/// decide); a negative or empty duration or an unknown unit is an error naming the problem.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_with_days(text).map_err(|e| e.to_string())
}

/// `1h30m`, `2d`, `45s`, `500ms`: the shortest exact form of `d`, for messages.
pub fn format_duration(d: Duration) -> String {
    // Below a millisecond nothing here is exact; Debug (`1.5µs`) is.
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{d:?}");
    }
    if d.is_zero() {
        return "0s".into();
    }
    let mut ms = d.as_millis();
    let mut out = String::new();
    // Weeks are left out: `8d` reads better than `1w1d`, and `7d` is no longer than `1w`.
    for (name, unit_ms) in UNITS.iter().rev().filter(|(name, _)| *name != "w") {
        let unit_ms = u128::from(*unit_ms);
        let n = ms / unit_ms;
        if n > 0 {
            out.push_str(&format!("{n}{name}"));
            ms %= unit_ms;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date and time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        chrono::Utc
            .with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .unwrap()
            .timestamp_millis()
    }

    fn reason(e: BackupError) -> String {
        match e {
            BackupError::InvalidOptions { reason } => reason,
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
    }

    #[test]
    fn interval_slots_are_multiples_of_the_interval() {
        let hourly = Schedule::interval(Duration::from_secs(3600)).unwrap();
        let t = utc(2025, 3, 4, 10, 17, 5) + 123;
        assert_eq!(hourly.slot_at_or_before(t), Some(utc(2025, 3, 4, 10, 0, 0)));
        assert_eq!(hourly.next_slot_after(t), Some(utc(2025, 3, 4, 11, 0, 0)));
        let on_the_hour = utc(2025, 3, 4, 10, 0, 0);
        assert_eq!(hourly.slot_at_or_before(on_the_hour), Some(on_the_hour));
        assert_eq!(
            hourly.next_slot_after(on_the_hour),
            Some(utc(2025, 3, 4, 11, 0, 0))
        );
        assert_eq!(hourly.describe(), "every 1h");

        let two = Schedule::interval(Duration::from_secs(2)).unwrap();
        assert_eq!(two.slot_at_or_before(5_999), Some(4_000));
        assert_eq!(two.slot_at_or_before(6_000), Some(6_000));
        assert_eq!(two.next_slot_after(6_000), Some(8_000));
        assert_eq!(two.slot_at_or_before(-1), Some(-2_000));
        // Near the ends of time: no slot rather than an overflow.
        assert_eq!(two.next_slot_after(i64::MAX), None);
        assert_eq!(two.slot_at_or_before(i64::MIN), None);

        let odd = Schedule::interval(Duration::from_millis(1_500)).unwrap();
        assert_eq!(odd.describe(), "every 1s500ms");
        assert_eq!(odd.next_slot_after(1_500), Some(3_000));
    }

    #[test]
    fn interval_refuses_less_than_a_second() {
        for bad in [
            Duration::ZERO,
            Duration::from_millis(999),
            Duration::from_nanos(1_000_000_001),
            Duration::MAX,
        ] {
            let r = reason(Schedule::interval(bad).unwrap_err());
            assert!(r.contains("--backup-interval"), "{r}");
        }
    }

    #[test]
    fn cron_with_five_fields() {
        let s = Schedule::cron("0 * * * *", None).unwrap();
        assert_eq!(s.describe(), "cron \"0 * * * *\" (UTC)");
        let t = utc(2025, 6, 1, 12, 30, 0);
        assert_eq!(s.slot_at_or_before(t), Some(utc(2025, 6, 1, 12, 0, 0)));
        assert_eq!(s.next_slot_after(t), Some(utc(2025, 6, 1, 13, 0, 0)));
        // A slot is its own latest slot, and not its own successor.
        let slot = utc(2025, 6, 1, 12, 0, 0);
        assert_eq!(s.slot_at_or_before(slot), Some(slot));
        assert_eq!(s.slot_at_or_before(slot + 999), Some(slot));
        assert_eq!(s.slot_at_or_before(slot - 1), Some(slot - 3_600_000));
        assert_eq!(s.next_slot_after(slot), Some(slot + 3_600_000));
        assert_eq!(s.next_slot_after(slot - 1), Some(slot));

        // 03:00 on Mondays.
        let weekly = Schedule::cron("0 3 * * MON", Some("UTC")).unwrap();
        // 2025-06-04 is a Wednesday.
        let wed = utc(2025, 6, 4, 8, 0, 0);
        assert_eq!(
            weekly.slot_at_or_before(wed),
            Some(utc(2025, 6, 2, 3, 0, 0))
        );
        assert_eq!(weekly.next_slot_after(wed), Some(utc(2025, 6, 9, 3, 0, 0)));
    }

    #[test]
    fn cron_with_seconds() {
        let s = Schedule::cron("30 */15 * * * *", None).unwrap();
        let t = utc(2025, 1, 1, 0, 14, 0);
        assert_eq!(s.slot_at_or_before(t), Some(utc(2025, 1, 1, 0, 0, 30)));
        assert_eq!(s.next_slot_after(t), Some(utc(2025, 1, 1, 0, 15, 30)));
        let every_second = Schedule::cron("* * * * * *", None).unwrap();
        assert_eq!(every_second.next_slot_after(1_000), Some(2_000));
        assert_eq!(every_second.next_slot_after(999), Some(1_000));
        assert_eq!(every_second.slot_at_or_before(1_999), Some(1_000));
    }

    #[test]
    fn cron_looks_back_at_most_a_year() {
        // Once a year: found from eleven months later, not from two years later.
        let yearly = Schedule::cron("0 0 1 1 *", None).unwrap();
        assert_eq!(
            yearly.slot_at_or_before(utc(2025, 12, 1, 0, 0, 0)),
            Some(utc(2025, 1, 1, 0, 0, 0))
        );
        // Leap days: the last one (2024-02-29) lies more than a year before 2025-06-01.
        let leap = Schedule::cron("0 0 29 2 *", None).unwrap();
        assert_eq!(leap.slot_at_or_before(utc(2025, 6, 1, 0, 0, 0)), None);
        assert_eq!(
            leap.slot_at_or_before(utc(2024, 6, 1, 0, 0, 0)),
            Some(utc(2024, 2, 29, 0, 0, 0))
        );
        assert_eq!(
            leap.next_slot_after(utc(2024, 6, 1, 0, 0, 0)),
            Some(utc(2028, 2, 29, 0, 0, 0))
        );
    }

    #[test]
    fn cron_in_a_zone_with_daylight_saving() {
        let s = Schedule::cron("0 3 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(s.describe(), "cron \"0 3 * * *\" (Europe/Berlin)");
        // Winter: 03:00 CET = 02:00 UTC; summer: 03:00 CEST = 01:00 UTC.
        assert_eq!(
            s.slot_at_or_before(utc(2025, 1, 15, 12, 0, 0)),
            Some(utc(2025, 1, 15, 2, 0, 0))
        );
        assert_eq!(
            s.slot_at_or_before(utc(2025, 7, 15, 12, 0, 0)),
            Some(utc(2025, 7, 15, 1, 0, 0))
        );

        // 2025-03-30: clocks jump 02:00 -> 03:00; 2025-10-26: 03:00 -> 02:00. Walk both days
        // hour by hour (and the hourly and 02:30 expressions, which hit the gap and the
        // repeated hour): slots never go backwards, and the two functions agree.
        for expr in ["0 3 * * *", "30 2 * * *", "0 * * * *", "*/20 * * * *"] {
            let s = Schedule::cron(expr, Some("Europe/Berlin")).unwrap();
            for (from, to) in [
                (utc(2025, 3, 29, 20, 0, 0), utc(2025, 3, 30, 6, 0, 0)),
                (utc(2025, 10, 25, 20, 0, 0), utc(2025, 10, 26, 6, 0, 0)),
            ] {
                let mut t = from;
                while t < to {
                    let before = s.slot_at_or_before(t).unwrap();
                    let next = s.next_slot_after(t).unwrap();
                    assert!(before <= t && t < next, "{expr} at {t}: {before} {next}");
                    assert_eq!(s.slot_at_or_before(next), Some(next), "{expr} at {t}");
                    assert!(
                        s.next_slot_after(before).unwrap() <= next,
                        "{expr} at {t}: a slot between {before} and {next}"
                    );
                    t += 7 * 60_000;
                }
            }
        }

        // 02:30 does not exist on 2025-03-30: croner runs it when the clock has jumped, at
        // 03:00 CEST (01:00 UTC).
        let s = Schedule::cron("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            s.next_slot_after(utc(2025, 3, 29, 12, 0, 0)),
            Some(utc(2025, 3, 30, 1, 0, 0))
        );
        // 02:30 happens twice on 2025-10-26: a fixed-time job runs once, at the first.
        assert_eq!(
            s.next_slot_after(utc(2025, 10, 25, 12, 0, 0)),
            Some(utc(2025, 10, 26, 0, 30, 0))
        );
        assert_eq!(
            s.next_slot_after(utc(2025, 10, 26, 0, 30, 0)),
            Some(utc(2025, 10, 27, 1, 30, 0))
        );
    }

    #[test]
    fn cron_refuses_bad_input() {
        for bad in [
            "",
            "* * * *",
            "0 0 0 * * * 2030",
            "61 * * * *",
            "nonsense",
            "0 0 30 2 *",
        ] {
            let r = reason(Schedule::cron(bad, None).unwrap_err());
            assert!(
                r.contains("--backup-cron") && r.contains("e.g."),
                "{bad}: {r}"
            );
        }
        let r = reason(Schedule::cron("0 * * * *", Some("Mars/Olympus")).unwrap_err());
        assert!(
            r.contains("--backup-tz") && r.contains("Europe/Berlin"),
            "{r}"
        );
    }

    #[test]
    fn durations_parse() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("2d"), Duration::from_secs(2 * 86_400));
        assert_eq!(ok("1h0m0s"), Duration::from_secs(3600));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1w"), Duration::from_secs(7 * 86_400));
        assert_eq!(ok(" 45 "), Duration::from_secs(45));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("1m1ms"), Duration::from_millis(60_001));
        // Go's syntax as a whole: fractions and the small units.
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("250us"), Duration::from_micros(250));

        for (bad, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("-5s", "negative"),
            ("5x", "unknown unit"),
            ("5 s", "unknown unit"),
            ("1h30", "no unit"),
            ("h", "invalid duration"),
            ("99999999999999999999", "too long"),
            ("9999999999999999w", "too long"),
            ("18446744073709551615s1s", "too long"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations_format_and_round_trip() {
        let f = |ms: u64| format_duration(Duration::from_millis(ms));
        assert_eq!(f(5_400_000), "1h30m");
        assert_eq!(f(2 * 86_400_000), "2d");
        assert_eq!(f(45_000), "45s");
        assert_eq!(f(500), "500ms");
        assert_eq!(f(0), "0s");
        assert_eq!(f(8 * 86_400_000 + 1), "8d1ms");
        assert_eq!(format_duration(Duration::from_nanos(1_500)), "1.5µs");
        for ms in [0, 1, 999, 1_000, 61_001, 3_600_000, 90_061_001, 1 << 40] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{ms}");
        }
        for text in ["90s", "1h30m", "2d", "1h0m0s", "500ms", "3w"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
    }
}
