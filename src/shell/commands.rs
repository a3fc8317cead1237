//! Dot commands: `.help`, `.tables`, `.backup FILE`... parsed from a line, and run by the
//! shell.

use std::io::Write;
use std::path::PathBuf;

use super::client::SqlOutput;
use super::render::{nodes_table, render_table};
use super::{CmdError, Flow, Shell};

const HELP: &str = "\
Enter SQL statements terminated with a \";\" (they may span lines), or a dot command:
.backup FILE        write a copy of the database (SQLite file) to FILE
.dump FILE          write the database as SQL text to FILE
.exit               leave the shell (also .quit or Ctrl-D)
.help               show this message
.indexes [TABLE]    list indexes (of TABLE)
.nodes              list the cluster's nodes
.restore FILE       replace the database with FILE (a SQLite file or SQL text)
.schema [TABLE]     show the CREATE statements (of TABLE)
.status             show the node's status as JSON
.tables             list tables and views
.timer on|off       print the time each statement takes";

impl<W: Write> Shell<W> {
    pub(super) fn run_dot(&mut self, cmd: DotCommand) -> Result<Flow, CmdError> {
        match cmd {
            DotCommand::Help => self.say(HELP)?,
            DotCommand::Exit => return Ok(Flow::Exit),
            DotCommand::Timer(on) => self.timer = on,
            DotCommand::Tables => {
                let out = self.api.sql(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
                     AND name NOT LIKE 'sqlite_%' AND name != '_raftlite_meta' ORDER BY name",
                    &[],
                )?;
                self.print_output(&out)
                    .map_err(|e| CmdError::Failed(format!("writing to stdout: {e}")))?;
            }
            DotCommand::Indexes(table) => {
                let mut sql = String::from(
                    "SELECT name, tbl_name AS \"table\" FROM sqlite_master WHERE type = 'index' \
                     AND name NOT LIKE 'sqlite_%' AND tbl_name != '_raftlite_meta'",
                );
                let params: Vec<&str> = table.as_deref().into_iter().collect();
                if table.is_some() {
                    sql.push_str(" AND lower(tbl_name) = lower(?)");
                }
                sql.push_str(" ORDER BY tbl_name, name");
                let out = self.api.sql(&sql, &params)?;
                self.print_output(&out)
                    .map_err(|e| CmdError::Failed(format!("writing to stdout: {e}")))?;
            }
            DotCommand::Schema(table) => {
                let mut sql = String::from(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL \
                     AND name NOT LIKE 'sqlite_%' AND tbl_name != '_raftlite_meta'",
                );
                let params: Vec<&str> = table.as_deref().into_iter().collect();
                if table.is_some() {
                    sql.push_str(" AND lower(tbl_name) = lower(?)");
                }
                sql.push_str(" ORDER BY rowid");
                if let SqlOutput::Rows { rows, .. } = self.api.sql(&sql, &params)? {
                    for row in rows {
                        if let Some(stmt) = row.first() {
                            self.say(&format!("{stmt};"))?;
                        }
                    }
                }
            }
            DotCommand::Status => {
                let status = self.api.get_json("/status")?;
                let text = serde_json::to_string_pretty(&status)
                    .map_err(|e| CmdError::Failed(format!("formatting /status: {e}")))?;
                self.say(&text)?;
            }
            DotCommand::Nodes => {
                let nodes = self.api.get_json("/nodes?ver=2&nonvoters")?;
                let (columns, rows) = nodes_table(&nodes)?;
                self.say(render_table(&columns, &rows).trim_end())?;
            }
            DotCommand::Backup(path) => {
                let n = self
                    .api
                    .download("/db/backup", &path, true, self.progress)?;
                self.say(&format!("Backup written to {} ({n} bytes)", path.display()))?;
            }
            DotCommand::Dump(path) => {
                let n = self
                    .api
                    .download("/db/backup?fmt=sql", &path, false, self.progress)?;
                self.say(&format!(
                    "SQL dump written to {} ({n} bytes)",
                    path.display()
                ))?;
            }
            DotCommand::Restore(path) => {
                let (n, timeline) = self.api.restore(&path, self.progress)?;
                self.say(&format!(
                    "Database restored from {} ({n} bytes)",
                    path.display()
                ))?;
                if let Some(timeline) = timeline {
                    self.say(&timeline)?;
                }
            }
        }
        Ok(Flow::Continue)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DotCommand {
    Help,
    Tables,
    Schema(Option<String>),
    Indexes(Option<String>),
    Status,
    Nodes,
    Timer(bool),
    Backup(PathBuf),
    Dump(PathBuf),
    Restore(PathBuf),
    Exit,
}

/// Splits dot-command arguments at whitespace; `'...'` and `"..."` quote.
fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(args);
        };
        let mut arg = String::new();
        if first == '\'' || first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some(c) if c == first => break,
                    Some(c) => arg.push(c),
                    None => return Err(format!("unterminated {first} in arguments")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                arg.push(c);
            }
        }
        args.push(arg);
    }
}

/// Parses a line starting with `.`; the error is the message to show.
pub(super) fn parse_dot_command(line: &str) -> Result<DotCommand, String> {
    let line = line.trim();
    let line = line.strip_suffix(';').unwrap_or(line).trim_end();
    let body = line.strip_prefix('.').unwrap_or(line);
    let (name, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
    let args = split_args(rest)?;
    let usage = |u: &str| format!("usage: {u}");
    let one_optional = |u: &str| -> Result<Option<String>, String> {
        match args.as_slice() {
            [] => Ok(None),
            [a] => Ok(Some(a.clone())),
            _ => Err(usage(u)),
        }
    };
    let file = |u: &str| -> Result<PathBuf, String> {
        match args.as_slice() {
            [f] if !f.is_empty() => Ok(PathBuf::from(f)),
            _ => Err(usage(u)),
        }
    };
    let none = |cmd: DotCommand, u: &str| -> Result<DotCommand, String> {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(usage(u))
        }
    };
    match name.to_ascii_lowercase().as_str() {
        "help" => none(DotCommand::Help, ".help"),
        "tables" => none(DotCommand::Tables, ".tables"),
        "status" => none(DotCommand::Status, ".status"),
        "nodes" => none(DotCommand::Nodes, ".nodes"),
        "exit" | "quit" => none(DotCommand::Exit, ".exit"),
        "schema" => one_optional(".schema [TABLE]").map(DotCommand::Schema),
        "indexes" | "indices" => one_optional(".indexes [TABLE]").map(DotCommand::Indexes),
        "backup" => file(".backup FILE").map(DotCommand::Backup),
        "dump" => file(".dump FILE").map(DotCommand::Dump),
        "restore" => file(".restore FILE").map(DotCommand::Restore),
        "timer" => match args.as_slice() {
            [a] => match a.to_ascii_lowercase().as_str() {
                "on" | "1" | "yes" | "true" => Ok(DotCommand::Timer(true)),
                "off" | "0" | "no" | "false" => Ok(DotCommand::Timer(false)),
                _ => Err(usage(".timer on|off")),
            },
            _ => Err(usage(".timer on|off")),
        },
        "" => Err("missing command after \".\"; enter \".help\" for the list of commands".into()),
        _ => Err(format!(
            "unknown command \".{name}\"; enter \".help\" for the list of commands"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_commands_parse() {
        use DotCommand::*;
        assert_eq!(parse_dot_command(".help"), Ok(Help));
        assert_eq!(parse_dot_command("  .tables  "), Ok(Tables));
        assert_eq!(parse_dot_command(".tables;"), Ok(Tables));
        assert_eq!(parse_dot_command(".schema"), Ok(Schema(None)));
        assert_eq!(
            parse_dot_command(".schema foo"),
            Ok(Schema(Some("foo".into())))
        );
        assert_eq!(
            parse_dot_command(".schema \"my table\""),
            Ok(Schema(Some("my table".into())))
        );
        assert_eq!(parse_dot_command(".indexes"), Ok(Indexes(None)));
        assert_eq!(
            parse_dot_command(".indices t"),
            Ok(Indexes(Some("t".into())))
        );
        assert_eq!(parse_dot_command(".status"), Ok(Status));
        assert_eq!(parse_dot_command(".nodes"), Ok(Nodes));
        assert_eq!(parse_dot_command(".timer on"), Ok(Timer(true)));
        assert_eq!(parse_dot_command(".TIMER OFF"), Ok(Timer(false)));
        assert_eq!(
            parse_dot_command(".backup /tmp/b.db"),
            Ok(Backup(PathBuf::from("/tmp/b.db")))
        );
        assert_eq!(
            parse_dot_command(".dump 'a file.sql'"),
            Ok(Dump(PathBuf::from("a file.sql")))
        );
        assert_eq!(
            parse_dot_command(".restore x.db"),
            Ok(Restore(PathBuf::from("x.db")))
        );
        assert_eq!(parse_dot_command(".exit"), Ok(Exit));
        assert_eq!(parse_dot_command(".quit"), Ok(Exit));
    }

    #[test]
    fn bad_dot_commands_explain_themselves() {
        let err = parse_dot_command(".frobnicate").unwrap_err();
        assert!(
            err.contains(".frobnicate") && err.contains(".help"),
            "{err}"
        );
        assert!(parse_dot_command(".").unwrap_err().contains(".help"));
        assert_eq!(
            parse_dot_command(".backup"),
            Err("usage: .backup FILE".to_owned())
        );
        assert_eq!(
            parse_dot_command(".backup a b"),
            Err("usage: .backup FILE".to_owned())
        );
        assert_eq!(
            parse_dot_command(".timer maybe"),
            Err("usage: .timer on|off".to_owned())
        );
        assert_eq!(
            parse_dot_command(".timer"),
            Err("usage: .timer on|off".to_owned())
        );
        assert_eq!(
            parse_dot_command(".tables x"),
            Err("usage: .tables".to_owned())
        );
        assert!(parse_dot_command(".schema 'open")
            .unwrap_err()
            .contains("unterminated"));
    }
}
