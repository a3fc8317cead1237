//! Durations written as Go's `time.ParseDuration` reads them, the syntax rqlite's HTTP API takes
//! for `?timeout=`, `?db_timeout=`, `?freshness=` and `?linearizable_timeout=` (rqlite
//! `http/query_params.go`, `NewQueryParams`, refuses a value `time.ParseDuration` refuses).
//!
//! The grammar is `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or `0` alone (with an optional sign):
//! each element is a decimal number (digits before or after the point, at least one of them)
//! followed by a unit among `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`, `m` and `h`;
//! elements add up (`1h2m3.5s`). Nothing else is accepted: no spaces, no bare numbers other than
//! `0`, no days. The value is an exact count of nanoseconds that must fit in an `i64` (Go's
//! `time.Duration`); a fraction is worked out in floating point per element, as Go does, so
//! `1.0000000001h` and Go agree to the nanosecond.
//!
//! raftlite's own settings (backup intervals, retention, restore drills) take the same grammar
//! with a documented extension, [`parse_duration_with_days`]: the units `d` (24h) and `w` (7d),
//! a bare whole number meaning seconds, surrounding whitespace ignored, and anything up to
//! `Duration::MAX`. There is one parser; the extension is its unit table, its bound and two
//! conveniences in front.
//!
//! It lives here, in the lowest crate, so that the API crate and any other crate can share it.

use std::time::Duration;

/// Why a text is not a Go duration. The message quotes the text and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    #[error("invalid duration {0:?}: expected numbers with units such as 500ms, 1.5s or 1m30s (units: ns, us, ms, s, m, h)")]
    Invalid(String),
    #[error("missing unit in duration {0:?}: give one of ns, us, ms, s, m, h, e.g. 10s")]
    MissingUnit(String),
    #[error(
        "unknown unit {unit:?} in duration {text:?}: units are ns, us (or µs), ms, s, m and h"
    )]
    UnknownUnit { unit: String, text: String },
    #[error("duration {0:?} is too long: at most about 2562047h")]
    Overflow(String),
    #[error("duration {0:?} is negative; a non-negative duration is needed here")]
    Negative(String),
}

/// Why a text is not a duration of the extended form ([`parse_duration_with_days`]). The
/// message quotes the text, says what is wrong and names the units, `d` and `w` included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; give one, {EXAMPLES}")]
    Empty,
    #[error("invalid duration {0:?}: expected numbers with units, {EXAMPLES} (units: ns, us, ms, s, m, h, d, w)")]
    Invalid(String),
    #[error("duration {0:?}: a number has no unit; units are ns, us, ms, s, m, h, d and w (a bare number alone means seconds), {EXAMPLES}")]
    MissingUnit(String),
    #[error("unknown unit {unit:?} in duration {text:?}: units are ns, us (or µs), ms, s, m, h, d and w, {EXAMPLES}")]
    UnknownUnit { unit: String, text: String },
    #[error("duration {0:?} is too long")]
    Overflow(String),
    #[error("duration {0:?} is negative; give a positive one, {EXAMPLES}")]
    Negative(String),
}

/// Examples of the extended form, for its messages.
const EXAMPLES: &str = "e.g. 90s, 1h30m, 2d or 500ms";

/// A grammar's parameters: its units (name, nanoseconds) and the largest magnitude it takes,
/// in nanoseconds, before the sign is applied.
struct Grammar {
    units: &'static [(&'static str, u64)],
    max: u128,
}

const GO_UNITS: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

const UNITS_WITH_DAYS: [(&str, u64); 10] = [
    GO_UNITS[0],
    GO_UNITS[1],
    GO_UNITS[2],
    GO_UNITS[3],
    GO_UNITS[4],
    GO_UNITS[5],
    GO_UNITS[6],
    GO_UNITS[7],
    ("d", 86_400_000_000_000),
    ("w", 7 * 86_400_000_000_000),
];

/// Go's: magnitudes up to `2^63` (the magnitude of `i64::MIN`).
const GO: Grammar = Grammar {
    units: &GO_UNITS,
    max: 1 << 63,
};

/// The extension's: days and weeks, anything a `Duration` holds.
const WITH_DAYS: Grammar = Grammar {
    units: &UNITS_WITH_DAYS,
    max: u64::MAX as u128 * NANOS_PER_SEC + (NANOS_PER_SEC - 1),
};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses `text` exactly as Go's `time.ParseDuration`: the signed number of nanoseconds.
pub fn parse_go_duration_nanos(text: &str) -> Result<i64, GoDurationError> {
    let (negative, total) = parse_magnitude(text, &GO)?;
    let overflow = || GoDurationError::Overflow(text.to_owned());
    if negative {
        // total <= 2^63, so the negation fits (2^63 itself is i64::MIN).
        i64::try_from(-(total as i128)).map_err(|_| overflow())
    } else {
        i64::try_from(total).map_err(|_| overflow())
    }
}

/// Parses a duration of raftlite's settings: Go's syntax (`90s`, `1h30m`, `1.5h`, `500ms`)
/// extended with the units `d` (24 hours) and `w` (7 days), a bare whole number of seconds
/// (`45`, `0`) and whitespace around the text; up to `Duration::MAX`. Zero is allowed (callers
/// decide); negative durations are refused.
pub fn parse_duration_with_days(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| DurationError::Overflow(text.to_owned()));
    }
    let (negative, nanos) = parse_magnitude(text, &WITH_DAYS).map_err(|e| match e {
        GoDurationError::Invalid(t) => DurationError::Invalid(t),
        GoDurationError::MissingUnit(t) => DurationError::MissingUnit(t),
        GoDurationError::UnknownUnit { unit, text } => DurationError::UnknownUnit { unit, text },
        GoDurationError::Overflow(t) => DurationError::Overflow(t),
        GoDurationError::Negative(t) => DurationError::Negative(t),
    })?;
    if negative && nanos > 0 {
        return Err(DurationError::Negative(text.to_owned()));
    }
    // nanos <= WITH_DAYS.max, so the seconds fit a u64.
    let secs = u64::try_from(nanos / NANOS_PER_SEC)
        .map_err(|_| DurationError::Overflow(text.to_owned()))?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// The grammar's walk over `text`: whether it is negative, and its magnitude in nanoseconds
/// (at most `grammar.max`).
fn parse_magnitude(text: &str, grammar: &Grammar) -> Result<(bool, u128), GoDurationError> {
    let invalid = || GoDurationError::Invalid(text.to_owned());
    let overflow = || GoDurationError::Overflow(text.to_owned());
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok((negative, 0));
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // [0-9]*
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .filter(|w| *w <= grammar.max)
                .ok_or_else(invalid)?;
        }
        rest = after;
        // (\.[0-9]*)?  Digits past what a u64 holds add no precision and are skipped.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut has_fraction_digits = false;
        if let Some(after_point) = rest.strip_prefix('.') {
            let frac_len = after_point.bytes().take_while(u8::is_ascii_digit).count();
            let (frac_digits, after) = after_point.split_at(frac_len);
            has_fraction_digits = frac_len > 0;
            let mut saturated = false;
            for d in frac_digits.bytes() {
                if saturated {
                    continue;
                }
                match fraction
                    .checked_mul(10)
                    .and_then(|f| f.checked_add(u64::from(d - b'0')))
                    .filter(|f| *f <= 1 << 63)
                {
                    Some(f) => {
                        fraction = f;
                        scale *= 10.0;
                    }
                    None => saturated = true,
                }
            }
            rest = after;
        }
        if int_len == 0 && !has_fraction_digits {
            return Err(invalid());
        }
        // The unit: everything up to the next digit or point.
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        if unit_len == 0 {
            return Err(GoDurationError::MissingUnit(text.to_owned()));
        }
        let (unit, after) = rest.split_at(unit_len);
        rest = after;
        let Some(&(_, per_unit)) = grammar.units.iter().find(|(name, _)| *name == unit) else {
            return Err(GoDurationError::UnknownUnit {
                unit: unit.to_owned(),
                text: text.to_owned(),
            });
        };
        let mut value = whole
            .checked_mul(u128::from(per_unit))
            .filter(|v| *v <= grammar.max)
            .ok_or_else(overflow)?;
        if fraction > 0 {
            // Below one unit's nanoseconds (at most a week's, 6.1e14), so the conversion is
            // exact enough.
            let extra = (fraction as f64 * (per_unit as f64 / scale)) as u128;
            value = value
                .checked_add(extra)
                .filter(|v| *v <= grammar.max)
                .ok_or_else(overflow)?;
        }
        total = total
            .checked_add(value)
            .filter(|t| *t <= grammar.max)
            .ok_or_else(overflow)?;
    }
    Ok((negative, total))
}

/// Parses a Go duration that must not be negative (a timeout, a freshness bound). `-0s` is zero.
pub fn parse_go_duration(text: &str) -> Result<Duration, GoDurationError> {
    let nanos = parse_go_duration_nanos(text)?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| GoDurationError::Negative(text.to_owned()))
}

/// `d` as Go's `time.Duration.String` writes it (`2h57m11.95070937s`, `1m0s`, `1.5ms`, `0s`):
/// what rqlite shows for durations in `/status` (e.g. `node.uptime`).
pub fn format_go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    // Below a second: one unit, with a fraction.
    let with_fraction = |value: u128, unit_nanos: u128, digits: usize, unit: &str| {
        let whole = value / unit_nanos;
        let frac = value % unit_nanos;
        let mut out = whole.to_string();
        if frac > 0 {
            let frac = format!("{frac:0digits$}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push_str(unit);
        out
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return with_fraction(nanos, 1_000, 3, "\u{b5}s");
    }
    if nanos < 1_000_000_000 {
        return with_fraction(nanos, 1_000_000, 6, "ms");
    }
    let secs = with_fraction(nanos % 60_000_000_000, 1_000_000_000, 9, "s");
    let minutes = nanos / 60_000_000_000;
    if minutes == 0 {
        return secs;
    }
    let hours = minutes / 60;
    if hours == 0 {
        return format!("{minutes}m{secs}");
    }
    format!("{hours}h{}m{secs}", minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    /// The valid cases of Go's own table (`time/time_test.go`, `parseDurationTests`).
    #[test]
    fn go_examples_parse() {
        let cases: &[(&str, i64)] = &[
            // simple
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            // sign
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            // decimal
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            // different units
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            // composite durations
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            (
                "1h2m3s4ms5us6ns",
                H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            // large value
            ("52763797000ns", 52763797000 * NS),
            // more than 9 digits after the point
            ("0.3333333333333333333h", 20 * M),
            // 9007199254740993 = 1<<53+1 cannot be stored precisely in a float64
            ("9007199254740993ns", (1 << 53) + 1),
            // largest duration that can be represented by int64 in nanoseconds
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            // largest negative value
            ("-9223372036854775808ns", i64::MIN),
            // huge string; issue 15011
            ("0.100000000000000000000h", 6 * M),
            // This value tests the first overflow check in leadingFraction.
            (
                "0.830103483285477580700h",
                49 * M + 48 * S + 372_539_827 * NS,
            ),
            // rqlite's own examples
            ("1m30s", 90 * S),
            ("1h2m3.5s", H + 2 * M + 3 * S + 500 * MS),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration_nanos(text), Ok(*want), "{text:?}");
        }
    }

    /// The invalid cases of Go's table (`parseDurationErrorTests` and the plain failures).
    #[test]
    fn go_refusals_are_refused() {
        for text in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{ff}\u{ff}",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854776us",
            "3000000h",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            " 1s",
            "1s ",
            "1 s",
            "1S",
            "1sec",
            "10",
            "abc",
            "1x",
        ] {
            assert!(
                parse_go_duration_nanos(text).is_err(),
                "{text:?} parsed to {:?}",
                parse_go_duration_nanos(text)
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            parse_go_duration_nanos("10"),
            Err(GoDurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_go_duration_nanos("1d"),
            Err(GoDurationError::UnknownUnit {
                unit: "d".into(),
                text: "1d".into()
            })
        );
        assert_eq!(
            parse_go_duration_nanos("soon"),
            Err(GoDurationError::Invalid("soon".into()))
        );
        assert_eq!(
            parse_go_duration_nanos("3000000h"),
            Err(GoDurationError::Overflow("3000000h".into()))
        );
    }

    #[test]
    fn non_negative_form() {
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("-0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_go_duration("-1s"),
            Err(GoDurationError::Negative("-1s".into()))
        );
        assert_eq!(
            parse_go_duration("9223372036854775807ns"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
    }

    /// The extension: days and weeks, bare seconds, whitespace, up to `Duration::MAX`.
    #[test]
    fn with_days_extension() {
        let ok = |t: &str| parse_duration_with_days(t).unwrap();
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        assert_eq!(ok("1w"), Duration::from_secs(7 * 86_400));
        assert_eq!(ok("2d12h"), Duration::from_secs(60 * 3_600));
        assert_eq!(ok("1.5d"), Duration::from_secs(36 * 3_600));
        assert_eq!(ok(" 45 "), Duration::from_secs(45));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("18446744073709551615"), Duration::from_secs(u64::MAX));
        assert_eq!(ok("3000000h"), Duration::from_secs(3_000_000 * 3_600));
        assert_eq!(
            ok("18446744073709551615s999999999ns"),
            Duration::new(u64::MAX, 999_999_999)
        );
        for (text, want) in [
            ("", DurationError::Empty),
            (" ", DurationError::Empty),
            ("-5s", DurationError::Negative("-5s".into())),
            ("1h30", DurationError::MissingUnit("1h30".into())),
            ("h", DurationError::Invalid("h".into())),
            (
                "5x",
                DurationError::UnknownUnit {
                    unit: "x".into(),
                    text: "5x".into(),
                },
            ),
            (
                "18446744073709551616",
                DurationError::Overflow("18446744073709551616".into()),
            ),
            (
                "18446744073709551615s1s",
                DurationError::Overflow("18446744073709551615s1s".into()),
            ),
        ] {
            assert_eq!(parse_duration_with_days(text), Err(want), "{text:?}");
        }
        assert!(DurationError::MissingUnit("1h30".into())
            .to_string()
            .contains("d and w"));
    }

    /// What Go accepts (and is not negative), the extension accepts with the same meaning.
    #[test]
    fn with_days_extends_go() {
        for text in [
            "0",
            "5s",
            "+5s",
            "-0",
            "5.6s",
            ".5s",
            "12µs",
            "12μs",
            "10.5s4m",
            "1h2m3s4ms5us6ns",
            "0.3333333333333333333h",
            "9223372036854775807ns",
            "9223372036854775.807us",
            "0.830103483285477580700h",
            "39h9m14.425s",
        ] {
            let nanos = parse_go_duration_nanos(text).unwrap();
            assert_eq!(
                parse_duration_with_days(text),
                Ok(Duration::from_nanos(nanos as u64)),
                "{text:?}"
            );
        }
    }

    /// Go's `durationTests` (`time/time_test.go`) for `Duration.String`.
    #[test]
    fn formats_like_go() {
        for (nanos, want) in [
            (0u64, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (4 * 60_000_000_000 + 5_000_000_000, "4m5s"),
            (4 * 60_000_000_000 + 5_001_000_000, "4m5.001s"),
            (
                5 * 3_600_000_000_000 + 6 * 60_000_000_000 + 7_001_000_000,
                "5h6m7.001s",
            ),
            (8 * 60_000_000_000 + 1, "8m0.000000001s"),
            (60_000_000_000, "1m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (i64::MAX as u64, "2562047h47m16.854775807s"),
        ] {
            assert_eq!(
                format_go_duration(Duration::from_nanos(nanos)),
                want,
                "{nanos}"
            );
        }
        // What Go prints, Go parses back.
        let d = Duration::from_nanos(10_683_950_709_370);
        let text = format_go_duration(d);
        assert_eq!(text, "2h58m3.95070937s");
        assert_eq!(parse_go_duration(&text), Ok(d));
    }
}
