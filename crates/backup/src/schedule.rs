//! When scheduled backups run: a fixed interval or a cron expression, as a sequence of slots.
//! STUB: interface only; the implementation replaces the bodies.

use std::time::Duration;

use crate::error::BackupError;

/// A backup schedule. Every run belongs to a *slot*: the Unix time (ms) at which it was due.
/// Slots are deterministic (the same on every node), so two leaders agree on which slot a
/// backup is for.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Slots at every multiple of `every` since the Unix epoch (UTC): `1h` runs on the hour.
    Interval { every: Duration },
    /// Slots at the times a cron expression matches, in a time zone.
    Cron {
        expr: String,
        tz: String,
        cron: Box<croner::Cron>,
        zone: chrono_tz::Tz,
    },
}

impl Schedule {
    /// An interval schedule; at least one second.
    pub fn interval(every: Duration) -> Result<Schedule, BackupError> {
        let _ = every;
        Err(BackupError::InvalidOptions {
            reason: "stub".into(),
        })
    }

    /// A cron schedule: 5 fields (minute hour day-of-month month day-of-week) or 6 with
    /// seconds first; `tz` is an IANA zone name (`Europe/Berlin`), `None` = UTC.
    pub fn cron(expr: &str, tz: Option<&str>) -> Result<Schedule, BackupError> {
        let _ = (expr, tz);
        Err(BackupError::InvalidOptions {
            reason: "stub".into(),
        })
    }

    /// The latest slot at or before `now_unix_ms`, if any (a cron expression may not have
    /// matched within the search window, a year).
    pub fn slot_at_or_before(&self, now_unix_ms: i64) -> Option<i64> {
        let _ = now_unix_ms;
        None
    }

    /// The first slot strictly after `after_unix_ms`, if any.
    pub fn next_slot_after(&self, after_unix_ms: i64) -> Option<i64> {
        let _ = after_unix_ms;
        None
    }

    /// For logs and `/status`: `every 1h` or `cron "0 * * * *" (Europe/Berlin)`.
    pub fn describe(&self) -> String {
        String::new()
    }
}

/// Parses a duration: a sequence of `<number><unit>` with units `ms`, `s`, `m`, `h`, `d`, `w`
/// (`90s`, `1h30m`, `2d`, Go's `1h0m0s`), or a bare number of seconds. Zero is allowed here
/// (callers decide); negative, empty or unknown units are errors naming the problem.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let _ = text;
    Err("stub".into())
}

/// `1h30m`, `2d`, `45s`, `500ms`: the shortest exact form of `d`, for messages.
pub fn format_duration(d: Duration) -> String {
    format!("{d:?}")
}
