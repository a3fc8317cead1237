//! Scanning SQL text without parsing it: where comments end, and skipping blanks and comments.
//! Shared by the dump's statement scanning and the read path's PRAGMA check.

/// Where the comment starting at `i` ends (past its `*/` or before its newline), if one starts there.
pub(crate) fn comment_end(bytes: &[u8], i: usize) -> Option<usize> {
    match (bytes.get(i), bytes.get(i + 1)) {
        (Some(b'-'), Some(b'-')) => Some(
            bytes[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |n| i + n),
        ),
        (Some(b'/'), Some(b'*')) => Some(
            bytes[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(bytes.len(), |n| i + 2 + n + 2),
        ),
        _ => None,
    }
}

/// `sql` without its leading whitespace and comments.
pub(crate) fn skip_blanks_and_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        match comment_end(sql.as_bytes(), 0) {
            Some(end) => sql = &sql[end..],
            None => return sql,
        }
    }
}
