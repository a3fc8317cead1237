//! Splitting input lines into SQL statements.

/// Lexer state carried from one line to the next (line comments end with their line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Lex {
    #[default]
    Normal,
    /// Inside `'...'`.
    Single,
    /// Inside `"..."`.
    Double,
    /// Inside `` `...` ``.
    Backtick,
    /// Inside `[...]`.
    Bracket,
    /// Inside `/* ... */`.
    Block,
}

/// Splits input lines into statements at `;` outside literals, quoted identifiers and
/// comments. A `CREATE [TEMP] TRIGGER` statement ends only at `END;`.
#[derive(Debug, Default)]
pub(super) struct Splitter {
    buf: String,
    lex: Lex,
    /// Something other than whitespace and comments is in `buf`.
    has_content: bool,
    /// The first three words of the statement, upper-cased.
    words: Vec<String>,
    /// The last token was the keyword `END`.
    after_end: bool,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

impl Splitter {
    /// True while a statement is being typed (the continuation prompt is shown and dot
    /// commands are not recognized).
    pub(super) fn is_pending(&self) -> bool {
        self.has_content || self.lex != Lex::Normal
    }

    fn in_trigger(&self) -> bool {
        let w = |i: usize| self.words.get(i).map(String::as_str);
        w(0) == Some("CREATE")
            && (w(1) == Some("TRIGGER")
                || (matches!(w(1), Some("TEMP" | "TEMPORARY")) && w(2) == Some("TRIGGER")))
    }

    fn end_word(&mut self, word: &mut String) {
        if word.is_empty() {
            return;
        }
        let upper = word.to_ascii_uppercase();
        self.after_end = upper == "END";
        if self.words.len() < 3 {
            self.words.push(upper);
        }
        word.clear();
    }

    fn take_statement(&mut self) -> Option<String> {
        let sql = self.buf.trim().to_owned();
        let content = self.has_content;
        *self = Splitter::default();
        content.then_some(sql)
    }

    /// Adds one line (without its newline); returns the statements it completes, without
    /// their `;`.
    pub(super) fn push_line(&mut self, line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match self.lex {
                Lex::Normal => {
                    if is_word_char(c) {
                        word.push(c);
                        self.buf.push(c);
                        self.has_content = true;
                        continue;
                    }
                    self.end_word(&mut word);
                    match c {
                        ';' => {
                            if self.in_trigger() && !self.after_end {
                                self.buf.push(c);
                            } else {
                                out.extend(self.take_statement());
                            }
                        }
                        '-' if chars.peek() == Some(&'-') => {
                            // A line comment: the rest of the line.
                            self.buf.push(c);
                            self.buf.extend(chars.by_ref());
                        }
                        '/' if chars.peek() == Some(&'*') => {
                            chars.next();
                            self.buf.push_str("/*");
                            self.lex = Lex::Block;
                        }
                        c if c.is_whitespace() => self.buf.push(c),
                        c => {
                            self.buf.push(c);
                            self.has_content = true;
                            self.after_end = false;
                            self.lex = match c {
                                '\'' => Lex::Single,
                                '"' => Lex::Double,
                                '`' => Lex::Backtick,
                                '[' => Lex::Bracket,
                                _ => Lex::Normal,
                            };
                        }
                    }
                }
                Lex::Block => {
                    self.buf.push(c);
                    if c == '*' && chars.peek() == Some(&'/') {
                        chars.next();
                        self.buf.push('/');
                        self.lex = Lex::Normal;
                    }
                }
                quoted => {
                    self.buf.push(c);
                    let close = match quoted {
                        Lex::Single => '\'',
                        Lex::Double => '"',
                        Lex::Backtick => '`',
                        _ => ']',
                    };
                    if c == close {
                        self.lex = Lex::Normal;
                    }
                }
            }
        }
        self.end_word(&mut word);
        if self.is_pending() {
            self.buf.push('\n');
        } else {
            // Only whitespace and comments since the last statement: nothing to keep.
            self.buf.clear();
        }
        out
    }

    /// What is left at the end of the input, if it holds anything but whitespace and comments.
    pub(super) fn finish(&mut self) -> Option<String> {
        self.take_statement()
    }
}

/// True for statements whose first keyword marks a read (`SELECT`, `WITH`, `PRAGMA`,
/// `EXPLAIN`, `VALUES`); used only to print nothing for a read without columns.
pub(super) fn is_query_like(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let rest = rest.trim_start_matches('(').trim_start();
    let word: String = rest.chars().take_while(|c| is_word_char(*c)).collect();
    matches!(
        word.to_ascii_uppercase().as_str(),
        "SELECT" | "WITH" | "PRAGMA" | "EXPLAIN" | "VALUES"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn split_all(lines: &[&str]) -> (Vec<String>, Splitter) {
        let mut sp = Splitter::default();
        let mut out = Vec::new();
        for l in lines {
            out.extend(sp.push_line(l));
        }
        (out, sp)
    }

    #[test]
    fn statements_split_at_semicolons() {
        let (out, sp) = split_all(&["SELECT 1; SELECT 2;", "INSERT INTO t", "VALUES (1);"]);
        assert_eq!(
            out,
            s(&["SELECT 1", "SELECT 2", "INSERT INTO t\nVALUES (1)"])
        );
        assert!(!sp.is_pending());
    }

    #[test]
    fn semicolons_in_literals_identifiers_and_comments_do_not_split() {
        let (out, sp) = split_all(&[
            "INSERT INTO t VALUES ('a;b', 'it''s;', \"c;d\", `e;f`, [g;h]); -- x; y",
            "SELECT 1 /* a; b",
            "c; */ + 1;",
            "SELECT 'multi",
            "line;' AS x;",
        ]);
        assert_eq!(
            out,
            s(&[
                "INSERT INTO t VALUES ('a;b', 'it''s;', \"c;d\", `e;f`, [g;h])",
                "SELECT 1 /* a; b\nc; */ + 1",
                "SELECT 'multi\nline;' AS x",
            ])
        );
        assert!(!sp.is_pending());
    }

    #[test]
    fn pending_state_and_leftovers() {
        let (out, mut sp) = split_all(&["SELECT 1;", "-- only a comment", "  "]);
        assert_eq!(out, s(&["SELECT 1"]));
        assert!(!sp.is_pending(), "comments alone are not a statement");
        assert_eq!(sp.finish(), None);

        let (out, mut sp) = split_all(&["SELECT 'open"]);
        assert!(out.is_empty());
        assert!(sp.is_pending());
        assert_eq!(sp.finish(), Some("SELECT 'open".to_owned()));

        let (out, sp) = split_all(&[";;", " ; "]);
        assert!(out.is_empty(), "empty statements are dropped: {out:?}");
        assert!(!sp.is_pending());

        let (_, mut sp) = split_all(&["SELECT 2 -- no semicolon"]);
        assert!(sp.is_pending());
        assert_eq!(sp.finish(), Some("SELECT 2 -- no semicolon".to_owned()));
    }

    #[test]
    fn trigger_bodies_end_at_end() {
        let (out, sp) = split_all(&[
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN",
            "  INSERT INTO log VALUES (new.id);",
            "  UPDATE c SET n = n + 1;",
            "END; SELECT 1;",
            "create temp trigger t2 after delete on t begin delete from x; end;",
        ]);
        assert_eq!(
            out,
            s(&[
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  INSERT INTO log VALUES (new.id);\n  UPDATE c SET n = n + 1;\nEND",
                "SELECT 1",
                "create temp trigger t2 after delete on t begin delete from x; end",
            ])
        );
        assert!(!sp.is_pending());
        // `END` must be a word of its own: `weekend;` ends nothing.
        let (out, sp) = split_all(&["CREATE TRIGGER x BEGIN SELECT weekend;"]);
        assert!(out.is_empty());
        assert!(sp.is_pending());
    }

    #[test]
    fn query_like_statements() {
        assert!(is_query_like("SELECT 1"));
        assert!(is_query_like(
            "  -- c\n /* d */ with x as (select 1) select * from x"
        ));
        assert!(is_query_like("(SELECT 1)"));
        assert!(is_query_like("pragma table_info(t)"));
        assert!(is_query_like("EXPLAIN QUERY PLAN SELECT 1"));
        assert!(!is_query_like("INSERT INTO t VALUES (1)"));
        assert!(!is_query_like("SELECTED"));
        assert!(!is_query_like(""));
    }
}
