//! What a statement's result looks like, value by value, as rqlite reports it.
//!
//! rqlite reads rows through its go-sqlite3 fork (`sqlite3.go`, `SQLiteRows.nextSyncLocked`) and
//! then normalizes them (`db/db.go`, `normalizeRowParameters`, `populateEmptyTypes`). This module
//! applies the same rules to SQLite's values:
//!
//! * A column whose declared type, lowercased, is exactly `date`, `datetime` or `timestamp`
//!   holds times. An integer is Unix seconds, or Unix milliseconds when it is beyond ±10^12; a
//!   text is parsed with go-sqlite3's `SQLiteTimestampFormats` in order (one trailing `Z`
//!   removed first) and is the zero time `0001-01-01T00:00:00Z` when none matches. The time is
//!   written as Go's `Time.MarshalText` writes it (RFC 3339, fraction without trailing zeros, `Z`
//!   or the parsed `±hh:mm` offset). A time Go cannot write (year outside 0..=9999, offset of 24
//!   hours or more) fails the statement with Go's message. Reals, blobs and nulls stay as they are.
//! * A column declared `boolean` turns integers into `true` (> 0) or `false`.
//! * A blob in a column whose type (as rqlite reports it so far, see below) has text affinity by
//!   rqlite's `isTextType` (`text`, `json`, `""`, `varchar…`, `nchar…`, `clob…`, …) is returned as
//!   text, invalid UTF-8 bytes each replaced by U+FFFD as Go's JSON encoder does.
//! * The `types` of a column without a declared type are filled in once, from the first row's
//!   values: `integer`, `real`, `text`, `blob`, `boolean`; a NULL (or no row at all) leaves `""`.

use rusqlite::types::ValueRef;

use crate::types::Value;

const TIME_TYPES: [&str; 3] = ["timestamp", "datetime", "date"];

/// One SQLite value of a row as rqlite reports it: `decl` is the column's declared type in lower
/// case, `reported` the column's type as rqlite's `types` says it at this row (see
/// [`fill_empty_types`]). An error is the statement's error.
pub(crate) fn column_value(v: ValueRef<'_>, decl: &str, reported: &str) -> Result<Value, String> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if TIME_TYPES.contains(&decl) => Value::Text(time_from_integer(i)?),
        ValueRef::Integer(i) if decl == "boolean" => Value::Bool(i > 0),
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) if TIME_TYPES.contains(&decl) => Value::Text(time_from_text(t)?),
        ValueRef::Text(t) => Value::Text(go_string(t)),
        ValueRef::Blob(b) if is_text_type(reported) => Value::Text(go_string(b)),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

/// rqlite's `populateEmptyTypes`, run once after the first row: each empty type becomes the kind
/// of that row's value; a NULL leaves it empty.
pub(crate) fn fill_empty_types(types: &mut [String], row: &[Value]) {
    for (t, v) in types.iter_mut().zip(row) {
        if t.is_empty() {
            *t = match v {
                Value::Null => "",
                Value::Integer(_) => "integer",
                Value::Real(_) => "real",
                Value::Bool(_) => "boolean",
                Value::Blob(_) => "blob",
                Value::Text(_) => "text",
            }
            .to_string();
        }
    }
}

/// rqlite's `isTextType` (db/db.go): the declared types it reads blobs of as text.
fn is_text_type(t: &str) -> bool {
    t == "text"
        || t == "json"
        || t.is_empty()
        || [
            "varchar",
            "varying character",
            "nchar",
            "native character",
            "nvarchar",
            "clob",
        ]
        .iter()
        .any(|p| t.starts_with(p))
}

/// Bytes as Go's JSON encoder reads a string: valid UTF-8 as is, each byte of an invalid sequence
/// as one U+FFFD (`encoding/json`'s `appendString` decodes rune by rune; a bad rune is 1 byte).
pub(crate) fn go_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
}

/// The text of a statement error as go-sqlite3's `Error.Error()` gives it: SQLite's message
/// (`sqlite3_errmsg`) alone, without rusqlite's "in <sql> at offset <n>".
pub(crate) fn error_message(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        other => other.to_string(),
    }
}

/// A civil time with a fixed offset, as Go's `time.Time` formats it.
#[derive(Debug, PartialEq)]
struct GoTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    /// Seconds east of UTC.
    offset: i64,
}

impl GoTime {
    /// Go's zero `time.Time{}`: what go-sqlite3 returns for a text no format parses.
    const ZERO: GoTime = GoTime {
        year: 1,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        offset: 0,
    };

    /// `time.Unix(secs, nanos).UTC()`.
    fn from_unix(secs: i64, nanos: u32) -> GoTime {
        let days = secs.div_euclid(86_400);
        let in_day = secs.rem_euclid(86_400);
        let (year, month, day) = crate::calendar::civil_from_days(days);
        GoTime {
            year,
            month,
            day,
            hour: (in_day / 3600) as u32,
            minute: (in_day % 3600 / 60) as u32,
            second: (in_day % 60) as u32,
            nanos,
            offset: 0,
        }
    }

    /// Go's `Time.MarshalText`: RFC 3339 with the fraction's trailing zeros trimmed, or its error.
    fn marshal_text(&self) -> Result<String, String> {
        if !(0..=9999).contains(&self.year) {
            return Err("Time.MarshalText: year outside of range [0,9999]".to_string());
        }
        let minutes = self.offset / 60;
        if minutes.abs() / 60 >= 24 {
            return Err("Time.MarshalText: timezone hour outside of range [0,23]".to_string());
        }
        let mut out = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        if minutes == 0 {
            out.push('Z');
        } else {
            let sign = if minutes < 0 { '-' } else { '+' };
            let m = minutes.abs();
            out.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
        }
        Ok(out)
    }
}

/// go-sqlite3's integer in a time column: milliseconds beyond ±1e12 (the multiplication to
/// nanoseconds wraps like Go's int64), seconds otherwise; UTC.
fn time_from_integer(v: i64) -> Result<String, String> {
    let t = if !(-1_000_000_000_000..=1_000_000_000_000).contains(&v) {
        let nanos = v.wrapping_mul(1_000_000);
        GoTime::from_unix(
            nanos.div_euclid(1_000_000_000),
            nanos.rem_euclid(1_000_000_000) as u32,
        )
    } else {
        GoTime::from_unix(v, 0)
    };
    t.marshal_text()
}

/// go-sqlite3's text in a time column: one trailing `Z` removed, then the first of
/// `SQLiteTimestampFormats` that parses, else the zero time.
fn time_from_text(text: &[u8]) -> Result<String, String> {
    let s = text.strip_suffix(b"Z").unwrap_or(text);
    LAYOUTS
        .iter()
        .find_map(|layout| parse_layout(layout, s))
        .unwrap_or(GoTime::ZERO)
        .marshal_text()
}

/// The parts of a Go layout that `SQLiteTimestampFormats` uses.
#[derive(Clone, Copy)]
enum Part {
    /// Literal text (`-`, `:`, `T`, ` `).
    Lit(&'static str),
    Year,   // 2006
    Month,  // 01
    Day,    // 02
    Hour,   // 15 (one or two digits)
    Minute, // 04
    Second, // 05
    Frac,   // .999999999 (optional)
    Offset, // -07:00
}

use Part::*;

const DATE: [Part; 5] = [Year, Lit("-"), Month, Lit("-"), Day];

/// go-sqlite3's `SQLiteTimestampFormats`, in order.
const LAYOUTS: [&[Part]; 9] = [
    // "2006-01-02 15:04:05.999999999-07:00"
    &[
        DATE[0],
        DATE[1],
        DATE[2],
        DATE[3],
        DATE[4],
        Lit(" "),
        Hour,
        Lit(":"),
        Minute,
        Lit(":"),
        Second,
        Frac,
        Offset,
    ],
    // "2006-01-02T15:04:05.999999999-07:00"
    &[
        DATE[0],
        DATE[1],
        DATE[2],
        DATE[3],
        DATE[4],
        Lit("T"),
        Hour,
        Lit(":"),
        Minute,
        Lit(":"),
        Second,
        Frac,
        Offset,
    ],
    // "2006-01-02 15:04:05.999999999"
    &[
        DATE[0],
        DATE[1],
        DATE[2],
        DATE[3],
        DATE[4],
        Lit(" "),
        Hour,
        Lit(":"),
        Minute,
        Lit(":"),
        Second,
        Frac,
    ],
    // "2006-01-02T15:04:05.999999999"
    &[
        DATE[0],
        DATE[1],
        DATE[2],
        DATE[3],
        DATE[4],
        Lit("T"),
        Hour,
        Lit(":"),
        Minute,
        Lit(":"),
        Second,
        Frac,
    ],
    // "2006-01-02 15:04:05"
    &[
        DATE[0],
        DATE[1],
        DATE[2],
        DATE[3],
        DATE[4],
        Lit(" "),
        Hour,
        Lit(":"),
        Minute,
        Lit(":"),
        Second,
    ],
    // "2006-01-02T15:04:05"
    &[
        DATE[0],
        DATE[1],
        DATE[2],
        DATE[3],
        DATE[4],
        Lit("T"),
        Hour,
        Lit(":"),
        Minute,
        Lit(":"),
        Second,
    ],
    // "2006-01-02 15:04"
    &[
        DATE[0],
        DATE[1],
        DATE[2],
        DATE[3],
        DATE[4],
        Lit(" "),
        Hour,
        Lit(":"),
        Minute,
    ],
    // "2006-01-02T15:04"
    &[
        DATE[0],
        DATE[1],
        DATE[2],
        DATE[3],
        DATE[4],
        Lit("T"),
        Hour,
        Lit(":"),
        Minute,
    ],
    // "2006-01-02"
    &DATE,
];

fn digit(s: &[u8], i: usize) -> Option<u32> {
    s.get(i)
        .filter(|c| c.is_ascii_digit())
        .map(|c| u32::from(c - b'0'))
}

/// Go's `getnum`: two digits, or one when `fixed` is false and the second is not a digit.
fn getnum(s: &[u8], fixed: bool) -> Option<(u32, &[u8])> {
    let d0 = digit(s, 0)?;
    match digit(s, 1) {
        Some(d1) => Some((d0 * 10 + d1, &s[2..])),
        None if fixed => None,
        None => Some((d0, &s[1..])),
    }
}

/// Go's `skip`: a space in the layout matches one or more spaces (or the end of the value).
fn skip<'a>(mut value: &'a [u8], lit: &str) -> Option<&'a [u8]> {
    let mut prefix = lit.as_bytes();
    while let Some((&p, rest)) = prefix.split_first() {
        if p == b' ' {
            if value.first().is_some_and(|&c| c != b' ') {
                return None;
            }
            prefix = trim_spaces(prefix);
            value = trim_spaces(value);
            continue;
        }
        match value.split_first() {
            Some((&c, after)) if c == p => {
                value = after;
                prefix = rest;
            }
            _ => return None,
        }
    }
    Some(value)
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b' ').count();
    &s[n..]
}

fn comma_or_period(c: u8) -> bool {
    c == b'.' || c == b','
}

/// Go's `parseNanoseconds`: `value` starts with the separator, `n` bytes in all; digits past
/// the ninth are ignored.
fn nanoseconds(value: &[u8], n: usize) -> u32 {
    let n = n.min(10);
    let mut ns: u32 = 0;
    for &c in &value[1..n] {
        ns = ns * 10 + u32::from(c - b'0');
    }
    for _ in n..10 {
        ns *= 10;
    }
    ns
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in(month: u32, year: i64) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Go's `time.ParseInLocation(layout, value, time.UTC)` for the layouts above.
fn parse_layout(layout: &[Part], mut value: &[u8]) -> Option<GoTime> {
    let mut t = GoTime {
        year: 0,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        nanos: 0,
        offset: 0,
    };
    for (i, part) in layout.iter().enumerate() {
        match *part {
            Lit(lit) => value = skip(value, lit)?,
            Year => {
                digit(value, 0)?;
                let mut year = 0i64;
                for k in 0..4 {
                    year = year * 10 + i64::from(digit(value, k)?);
                }
                t.year = year;
                value = &value[4..];
            }
            Month => {
                let (m, rest) = getnum(value, true)?;
                if !(1..=12).contains(&m) {
                    return None;
                }
                t.month = m;
                value = rest;
            }
            Day => {
                let (d, rest) = getnum(value, true)?;
                t.day = d;
                value = rest;
            }
            Hour => {
                let (h, rest) = getnum(value, false)?;
                if h >= 24 {
                    return None;
                }
                t.hour = h;
                value = rest;
            }
            Minute => {
                let (m, rest) = getnum(value, true)?;
                if m >= 60 {
                    return None;
                }
                t.minute = m;
                value = rest;
            }
            Second => {
                let (s, rest) = getnum(value, true)?;
                if s >= 60 {
                    return None;
                }
                t.second = s;
                value = rest;
                // A fraction the layout does not ask for is read anyway.
                let next_is_frac = matches!(layout.get(i + 1), Some(Frac));
                if !next_is_frac
                    && value.len() >= 2
                    && comma_or_period(value[0])
                    && digit(value, 1).is_some()
                {
                    let n = 2 + value[2..].iter().take_while(|c| c.is_ascii_digit()).count();
                    t.nanos = nanoseconds(value, n);
                    value = &value[n..];
                }
            }
            Frac => {
                if value.len() >= 2 && comma_or_period(value[0]) && digit(value, 1).is_some() {
                    let n = 1 + value[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    t.nanos = nanoseconds(value, n);
                    value = &value[n..];
                }
            }
            Offset => {
                if value.len() < 6 || value[3] != b':' {
                    return None;
                }
                let (hr, _) = getnum(&value[1..3], true)?;
                let (mm, _) = getnum(&value[4..6], true)?;
                if hr > 24 || mm > 60 {
                    return None;
                }
                let offset = i64::from((hr * 60 + mm) * 60);
                t.offset = match value[0] {
                    b'+' => offset,
                    b'-' => -offset,
                    _ => return None,
                };
                value = &value[6..];
            }
        }
    }
    if !value.is_empty() || t.day < 1 || t.day > days_in(t.month, t.year) {
        return None;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(decl: &str, s: &str) -> Result<Value, String> {
        column_value(ValueRef::Text(s.as_bytes()), decl, decl)
    }

    fn int(decl: &str, i: i64) -> Result<Value, String> {
        column_value(ValueRef::Integer(i), decl, decl)
    }

    fn t(s: &str) -> Result<Value, String> {
        Ok(Value::Text(s.to_string()))
    }

    /// The cases of go-sqlite3's `TestTimestamp` (sqlite3_test.go), with the value as go-sqlite3
    /// stores it (a `time.Time` is written with `SQLiteTimestampFormats[0]`) and the expected
    /// time as rqlite writes it (`normalizeRowParameters`: `time.Time.MarshalText`).
    #[test]
    fn times_follow_go_sqlite3_test_timestamp() {
        let cases: &[(&str, &str)] = &[
            ("nonsense", "0001-01-01T00:00:00Z"),
            ("0000-00-00 00:00:00", "0001-01-01T00:00:00Z"),
            ("2012-04-06 22:50:00+00:00", "2012-04-06T22:50:00Z"),
            ("2012-04-06 13:37:00-09:13", "2012-04-06T13:37:00-09:13"),
            ("2012-04-06 22:50:00.000", "2012-04-06T22:50:00Z"),
            ("2012-04-06T22:50:00.000", "2012-04-06T22:50:00Z"),
            ("2012-04-06 22:50:00", "2012-04-06T22:50:00Z"),
            ("2012-04-06T22:50:00", "2012-04-06T22:50:00Z"),
            (
                "2006-01-02 15:04:05.123456789+00:00",
                "2006-01-02T15:04:05.123456789Z",
            ),
            (
                "2006-01-02 15:04:05.123456789",
                "2006-01-02T15:04:05.123456789Z",
            ),
            (
                "2006-01-02T15:04:05.123456789",
                "2006-01-02T15:04:05.123456789Z",
            ),
            (
                "2006-01-02T05:51:05.123456789-09:13",
                "2006-01-02T05:51:05.123456789-09:13",
            ),
            ("2012-11-04", "2012-11-04T00:00:00Z"),
            ("2012-11-04 00:00", "2012-11-04T00:00:00Z"),
            ("2012-11-04 00:00:00", "2012-11-04T00:00:00Z"),
            ("2012-11-04 00:00:00.000", "2012-11-04T00:00:00Z"),
            ("2012-11-04T00:00", "2012-11-04T00:00:00Z"),
            ("2012-11-04T00:00:00", "2012-11-04T00:00:00Z"),
            ("2012-11-04T00:00:00.000", "2012-11-04T00:00:00Z"),
            (
                "2006-01-02T15:04:05.123456789Z",
                "2006-01-02T15:04:05.123456789Z",
            ),
            ("2012-11-04Z", "2012-11-04T00:00:00Z"),
            ("2012-11-04 00:00Z", "2012-11-04T00:00:00Z"),
            ("2012-11-04 00:00:00Z", "2012-11-04T00:00:00Z"),
            ("2012-11-04 00:00:00.000Z", "2012-11-04T00:00:00Z"),
            ("2012-11-04T00:00Z", "2012-11-04T00:00:00Z"),
            ("2012-11-04T00:00:00Z", "2012-11-04T00:00:00Z"),
            ("2012-11-04T00:00:00.000Z", "2012-11-04T00:00:00Z"),
        ];
        for decl in ["timestamp", "datetime", "date"] {
            for (input, want) in cases {
                assert_eq!(text(decl, input), t(want), "{decl} {input}");
            }
        }
        // Integers: time.Time{}.Unix(), timestamp2.Unix(), timestamp2 in milliseconds.
        assert_eq!(int("timestamp", -62_135_596_800), t("0001-01-01T00:00:00Z"));
        assert_eq!(int("datetime", 1_136_214_245), t("2006-01-02T15:04:05Z"));
        assert_eq!(
            int("date", 1_136_214_245_123),
            t("2006-01-02T15:04:05.123Z")
        );
    }

    /// Go's `time.Parse` details the formats inherit (time/format.go): a one-digit hour, runs of
    /// spaces, a comma before the fraction, a fraction where the layout has none, digits past
    /// the ninth ignored, day and month ranges, leap years, extra text.
    #[test]
    fn times_follow_go_time_parse_details() {
        let cases: &[(&str, &str)] = &[
            ("2004-02-14 7:15:00", "2004-02-14T07:15:00Z"),
            ("2004-02-14   07:15", "2004-02-14T07:15:00Z"),
            ("2004-02-14 07:15:00,5", "2004-02-14T07:15:00.5Z"),
            (
                "2004-02-14 07:15:00.1234567891234",
                "2004-02-14T07:15:00.123456789Z",
            ),
            ("2004-02-29", "2004-02-29T00:00:00Z"),
            ("2003-02-29", "0001-01-01T00:00:00Z"),
            ("2004-13-01", "0001-01-01T00:00:00Z"),
            ("2004-02-14 24:00", "0001-01-01T00:00:00Z"),
            ("2004-02-14 07:15:00 extra", "0001-01-01T00:00:00Z"),
            ("2004-2-14", "0001-01-01T00:00:00Z"),
            ("2004-02-14 07:15:00-00:00", "2004-02-14T07:15:00Z"),
            ("2004-02-14 07:15:00+05:60", "2004-02-14T07:15:00+06:00"),
            ("2004-02-14ZZ", "0001-01-01T00:00:00Z"),
            ("", "0001-01-01T00:00:00Z"),
        ];
        for (input, want) in cases {
            assert_eq!(text("datetime", input), t(want), "{input}");
        }
        assert_eq!(
            text("datetime", "2004-02-14 07:15:00+24:00"),
            Err("Time.MarshalText: timezone hour outside of range [0,23]".to_string())
        );
    }

    /// go-sqlite3 `nextSyncLocked`: seconds up to ±1e12, milliseconds beyond (wrapping like
    /// Go's int64 when scaled to nanoseconds); a year Go's `MarshalText` refuses fails the query.
    #[test]
    fn integer_times_switch_to_milliseconds_beyond_1e12() {
        assert_eq!(int("timestamp", 0), t("1970-01-01T00:00:00Z"));
        assert_eq!(int("timestamp", -1), t("1969-12-31T23:59:59Z"));
        assert_eq!(int("timestamp", 253_402_300_799), t("9999-12-31T23:59:59Z"));
        assert_eq!(
            int("timestamp", 253_402_300_800),
            Err("Time.MarshalText: year outside of range [0,9999]".to_string())
        );
        assert_eq!(
            int("timestamp", 1_000_000_000_000),
            Err("Time.MarshalText: year outside of range [0,9999]".to_string())
        );
        assert_eq!(
            int("timestamp", 1_000_000_000_001),
            t("2001-09-09T01:46:40.001Z")
        );
        assert_eq!(
            int("timestamp", -1_000_000_000_001),
            t("1938-04-24T22:13:19.999Z")
        );
        // i64::MAX ms * 1e6 wraps in Go: -1000000 ns.
        assert_eq!(int("timestamp", i64::MAX), t("1969-12-31T23:59:59.999Z"));
        // Reals are not converted.
        assert_eq!(
            column_value(ValueRef::Real(2.5), "date", "date"),
            Ok(Value::Real(2.5))
        );
    }

    /// go-sqlite3 `nextSyncLocked` `case "boolean"`: `val > 0`; `TestBoolean`'s text stays text.
    #[test]
    fn booleans_are_integers_above_zero() {
        assert_eq!(int("boolean", 1), Ok(Value::Bool(true)));
        assert_eq!(int("boolean", 2), Ok(Value::Bool(true)));
        assert_eq!(int("boolean", 0), Ok(Value::Bool(false)));
        assert_eq!(int("boolean", -1), Ok(Value::Bool(false)));
        assert_eq!(text("boolean", "nonsense"), t("nonsense"));
        assert_eq!(int("bool", 1), Ok(Value::Integer(1)));
    }

    /// rqlite `normalizeRowParameters`: a blob is text where `isTextType` says so.
    #[test]
    fn blobs_in_text_typed_columns_are_text() {
        let blob = |decl: &str, b: &[u8]| column_value(ValueRef::Blob(b), decl, decl);
        assert_eq!(blob("", b"AB"), t("AB"));
        assert_eq!(blob("varchar(10)", b"AB"), t("AB"));
        assert_eq!(blob("json", b"AB"), t("AB"));
        assert_eq!(blob("blob", b"AB"), Ok(Value::Blob(b"AB".to_vec())));
        assert_eq!(blob("integer", b"AB"), Ok(Value::Blob(b"AB".to_vec())));
        // Go's JSON encoder: each invalid byte is one U+FFFD.
        assert_eq!(
            blob("text", b"a\xf0\x9f\x98b"),
            t("a\u{fffd}\u{fffd}\u{fffd}b")
        );
    }

    /// rqlite `populateEmptyTypes`.
    #[test]
    fn empty_types_are_filled_from_the_first_row() {
        let mut types = vec![
            "".to_string(),
            "".to_string(),
            "".to_string(),
            "".to_string(),
            "".to_string(),
            "date".to_string(),
        ];
        fill_empty_types(
            &mut types,
            &[
                Value::Integer(1),
                Value::Real(1.0),
                Value::Text("x".into()),
                Value::Blob(vec![1]),
                Value::Null,
                Value::Text("x".into()),
            ],
        );
        assert_eq!(types, ["integer", "real", "text", "blob", "", "date"]);
    }
}
