//! rqlite's refusal of the PRAGMAs that would break the database layer under it.
//!
//! rqlite (`db/state.go`, `BreakingPragmas` and `IsBreakingPragma`; applied by
//! `store/state.go`, `PragmaCheckRequest.Check`) refuses a whole request when any of its
//! statement strings matches one of these Go regular expressions:
//!
//! ```text
//! (?i)^\s*PRAGMA\s+(\w+\.)?journal_mode\s*=\s*
//! (?i)^\s*PRAGMA\s+wal_autocheckpoint\s*=\s*
//! (?i)^\s*PRAGMA\s+(\w+\.)?wal_checkpoint
//! (?i)^\s*PRAGMA\s+(\w+\.)?synchronous\s*=\s*
//! (?i)^\s*PRAGMA\s+(\w+\.)?query_only\s*=\s*
//! ```
//!
//! `store.Execute`, `store.Query` and `store.Request` run the check first, before the leader
//! check, so a follower refuses too and nothing reaches Raft; `/db/load` with SQL text goes
//! through `store.Execute` (its whole text is one statement string). The HTTP answer is 200 with
//! `{"results":[],"error":"disallowed pragma"}` (`http/service.go`: the store's error becomes
//! `Response.Error`; `"time"` follows with `?timings`).
//!
//! [`is_breaking_pragma`] matches exactly what those expressions match, written out by hand:
//! anchored at the start of the statement string (a comment or another statement before the
//! PRAGMA hides it, as in rqlite), Go's `\s` (space, `\t`, `\n`, `\f`, `\r`), Go's `\w`
//! (ASCII letters, digits, `_`), an optional one-word schema prefix (`main.`) except for
//! `wal_autocheckpoint`, reads such as `PRAGMA journal_mode` (no `=`) allowed except for
//! `wal_checkpoint`, which is refused in every form. Go's `(?i)` folds case the Unicode way, so
//! `k` also matches the Kelvin sign (U+212A) and `s` the long s (U+017F), in the names and in
//! `\w`; they are matched the same way here.
//!
//! Stricter than rqlite, on purpose: the store's statement guard (`raftlite_store` engine,
//! `breaks_the_store`) also refuses the same pragmas where this check cannot see them (after a
//! comment or another statement in the same string), as a statement error starting with
//! `disallowed pragma`, on every node alike; and `/db/load` checks every statement of its SQL
//! text, not only the start.

use raftlite_store::types::Statement;

/// The error rqlite's store returns (`store/state.go`).
pub const DISALLOWED_PRAGMA: &str = "disallowed pragma";

/// One of rqlite's `BreakingPragmas`.
struct Breaking {
    /// Lowercase.
    name: &'static str,
    /// `(\w+\.)?` before the name.
    schema_prefix: bool,
    /// `\s*=` after the name (only assignments are refused).
    assignment: bool,
}

const BREAKING: [Breaking; 5] = [
    Breaking {
        name: "journal_mode",
        schema_prefix: true,
        assignment: true,
    },
    Breaking {
        name: "wal_autocheckpoint",
        schema_prefix: false,
        assignment: true,
    },
    Breaking {
        name: "wal_checkpoint",
        schema_prefix: true,
        assignment: false,
    },
    Breaking {
        name: "synchronous",
        schema_prefix: true,
        assignment: true,
    },
    Breaking {
        name: "query_only",
        schema_prefix: true,
        assignment: true,
    },
];

/// Go's `\s` (RE2's Perl class: no vertical tab, no Unicode spaces).
fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

/// Go's `\w` under `(?i)`: the class is case-folded, which adds U+212A and U+017F.
fn is_go_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '\u{212A}' || c == '\u{017F}'
}

/// Whether `c` matches the lowercase ASCII `want` under Go's `(?i)` simple case folding.
fn folds_to(c: char, want: char) -> bool {
    c.to_ascii_lowercase() == want
        || (want == 'k' && c == '\u{212A}')
        || (want == 's' && c == '\u{017F}')
}

/// `word` (lowercase ASCII) at the start of `s`, case-folded; the rest of `s` after it.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let mut chars = s.char_indices();
    for want in word.chars() {
        match chars.next() {
            Some((_, c)) if folds_to(c, want) => {}
            _ => return None,
        }
    }
    Some(chars.next().map_or("", |(i, _)| &s[i..]))
}

fn skip_spaces(s: &str) -> &str {
    s.trim_start_matches(is_go_space)
}

/// `name`, then `\s*=` when the pragma is only refused as an assignment.
fn matches_tail(s: &str, pragma: &Breaking) -> bool {
    match strip_word(s, pragma.name) {
        None => false,
        Some(rest) if pragma.assignment => skip_spaces(rest).starts_with('='),
        Some(_) => true,
    }
}

/// Whether rqlite refuses `sql` as a breaking PRAGMA (see the module documentation).
pub fn is_breaking_pragma(sql: &str) -> bool {
    let Some(rest) = strip_word(skip_spaces(sql), "pragma") else {
        return false;
    };
    // `\s+`: at least one.
    if !rest.starts_with(is_go_space) {
        return false;
    }
    let rest = skip_spaces(rest);
    // `(\w+\.)?`: `\w` never matches `.`, so the group can only be the whole leading run of
    // word characters and the dot after it.
    let word_run = rest
        .char_indices()
        .find(|(_, c)| !is_go_word(*c))
        .map_or(rest.len(), |(i, _)| i);
    let after_schema = (word_run > 0)
        .then(|| rest[word_run..].strip_prefix('.'))
        .flatten();
    BREAKING.iter().any(|pragma| {
        matches_tail(rest, pragma)
            || (pragma.schema_prefix && after_schema.is_some_and(|s| matches_tail(s, pragma)))
    })
}

/// Whether any statement of a request is refused (rqlite refuses the whole request then).
pub fn has_disallowed_pragma(statements: &[Statement]) -> bool {
    statements.iter().any(|s| is_breaking_pragma(&s.sql))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_as_rqlite_refuses_them() {
        // Each expression of rqlite's db/state.go BreakingPragmas, in the forms it matches.
        for sql in [
            "PRAGMA journal_mode=DELETE",
            "pragma JOURNAL_MODE = wal",
            "  \t\n\r\x0cPRAGMA\njournal_mode\t=\tOFF",
            "PRAGMA main.journal_mode=DELETE",
            "PRAGMA my_db2.journal_mode=MEMORY",
            "PRAGMA journal_mode=",
            "PRAGMA wal_autocheckpoint=0",
            "PRAGMA wal_autocheckpoint = 1000",
            "PRAGMA wal_checkpoint",
            "PRAGMA wal_checkpoint(TRUNCATE)",
            "PRAGMA main.wal_checkpoint(FULL)",
            "PRAGMA wal_checkpointer",
            "PRAGMA synchronous=OFF",
            "PRAGMA Main.Synchronous = 0",
            "PRAGMA query_only=1",
            "PRAGMA temp.query_only = true",
            "PRAGMA journal_mode=WAL; SELECT 1",
            // Go's (?i) folds k to the Kelvin sign and s to the long s, also inside \w.
            "PRAGMA wal_chec\u{212A}point",
            "PRAGMA \u{017F}ynchronous=OFF",
            "PRAGMA \u{212A}.synchronous=OFF",
        ] {
            assert!(is_breaking_pragma(sql), "{sql:?} should be refused");
        }
    }

    #[test]
    fn allowed_as_rqlite_allows_them() {
        for sql in [
            // Reads of the value.
            "PRAGMA journal_mode",
            "PRAGMA main.journal_mode",
            "PRAGMA synchronous",
            "PRAGMA query_only",
            "PRAGMA wal_autocheckpoint",
            // Function-call forms of the assignments do not match `\s*=`.
            "PRAGMA journal_mode(DELETE)",
            "PRAGMA synchronous(0)",
            // No schema prefix in rqlite's wal_autocheckpoint expression.
            "PRAGMA main.wal_autocheckpoint=0",
            // Anchored at the start of the statement string.
            "SELECT 1; PRAGMA journal_mode=DELETE",
            "-- note\nPRAGMA journal_mode=DELETE",
            "/* x */ PRAGMA synchronous=OFF",
            "EXPLAIN PRAGMA journal_mode=DELETE",
            // `\s+` needs a space; `\v` is not one in Go.
            "PRAGMAjournal_mode=DELETE",
            "PRAGMA\x0bjournal_mode=DELETE",
            "\x0bPRAGMA journal_mode=DELETE",
            // Only one schema word; a quoted schema is not `\w+`.
            "PRAGMA a.b.journal_mode=DELETE",
            "PRAGMA \"main\".journal_mode=DELETE",
            "PRAGMA .journal_mode=DELETE",
            "PRAGMA journal_modes=DELETE",
            "PRAGMA foreign_keys=ON",
            "PRAGMA table_info(journal_mode)",
            "SELECT 'PRAGMA journal_mode=DELETE'",
            "",
            "PRAGMA",
        ] {
            assert!(!is_breaking_pragma(sql), "{sql:?} should be allowed");
        }
    }

    #[test]
    fn one_statement_refuses_the_request() {
        let ok = Statement::new("SELECT 1");
        let bad = Statement::new("PRAGMA synchronous=OFF");
        assert!(!has_disallowed_pragma(std::slice::from_ref(&ok)));
        assert!(has_disallowed_pragma(&[ok, bad]));
        assert!(!has_disallowed_pragma(&[]));
    }
}
