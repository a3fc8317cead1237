//! `raftlite-shell`: an interactive SQL shell like rqlite's CLI, a binary of its own (the server
//! binary carries no tools).
//!
//! A blocking program (no async runtime of its own; `reqwest::blocking` runs one internally).
//! On a terminal it reads lines with `rustyline` (history in `~/.raftlite_history`); otherwise it
//! reads statements from stdin without prompts and exits 0, or 1 if any statement failed.
//!
//! Every SQL statement is sent on its own to `POST /db/request?level=weak`: the server decides
//! whether it reads or writes (so `WITH ... INSERT` and `PRAGMA x = y` go the right way), and
//! the non-associative form keeps the column order for the table printout. Statements end with
//! `;` outside string literals, quoted identifiers and comments; `CREATE TRIGGER` bodies end at
//! `END;`. Lines starting with `.` between statements are dot commands (see [`commands::HELP`]).

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::Value;

mod args;
mod client;
mod commands;
mod render;
mod split;

use args::ShellArgs;
use client::{Api, SqlOutput};
use commands::parse_dot_command;
use render::render_table;
use split::Splitter;

fn main() -> std::process::ExitCode {
    use clap::Parser as _;
    match run(ShellArgs::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlite-shell: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

const HISTORY_FILE: &str = ".raftlite_history";
const CONTINUATION_PROMPT: &str = "   ...> ";

/// Runs the shell. Setup problems (bad URL, unreadable CA file, bad `-u`) are
/// an `Err`; when a piped script had a failing statement the process exits with status 1.
fn run(args: ShellArgs) -> anyhow::Result<()> {
    let api = Api::new(&args)?;
    if args.credentials.insecure {
        let _ = writeln!(
            io::stderr(),
            "warning: --insecure: the server's TLS certificate is not verified"
        );
    }
    let mut shell = Shell {
        api,
        timer: false,
        progress: io::stderr().is_terminal(),
        out: io::stdout(),
        failed: false,
    };
    let script_ok = if io::stdin().is_terminal() {
        shell.run_interactive()?
    } else {
        shell.run_script(io::stdin().lock())?
    };
    shell.out.flush().context("writing to stdout")?;
    if !script_ok {
        std::process::exit(1);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The read-eval-print loop
// ---------------------------------------------------------------------------

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CmdError {
    /// The server could not be reached or did not answer in time: a piped script stops.
    Connection(String),
    /// The statement or command failed; the shell goes on.
    Failed(String),
}

impl CmdError {
    fn message(&self) -> &str {
        match self {
            CmdError::Connection(m) | CmdError::Failed(m) => m,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

struct Shell<W: Write> {
    api: Api,
    timer: bool,
    /// Draw progress bars (stderr is a terminal).
    progress: bool,
    out: W,
    failed: bool,
}

impl<W: Write> Shell<W> {
    /// Reads statements from a non-terminal: no prompts. Returns false if anything failed.
    fn run_script(&mut self, mut input: impl BufRead) -> anyhow::Result<bool> {
        let mut splitter = Splitter::default();
        let mut raw = Vec::new();
        loop {
            raw.clear();
            let n = input
                .read_until(b'\n', &mut raw)
                .context("reading statements from stdin")?;
            if n == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if self.handle_line(&mut splitter, line, false)? == Flow::Exit {
                return Ok(!self.failed);
            }
        }
        if let Some(sql) = splitter.finish() {
            self.run_statement(&sql, false)?;
        }
        Ok(!self.failed)
    }

    /// The interactive loop on a terminal. Errors never end it; Ctrl-C drops the statement
    /// being typed, Ctrl-D or `.exit` leaves.
    fn run_interactive(&mut self) -> anyhow::Result<bool> {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(e) => e,
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "warning: no line editing ({e}); reading plain lines"
                );
                return self.run_script(io::stdin().lock());
            }
        };
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(HISTORY_FILE));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        self.banner()?;
        let prompt = format!("{}> ", self.api.label);
        let mut splitter = Splitter::default();
        loop {
            let p = if splitter.is_pending() {
                CONTINUATION_PROMPT
            } else {
                prompt.as_str()
            };
            match editor.readline(p) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if self.handle_line(&mut splitter, &line, true)? == Flow::Exit {
                        break;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => splitter = Splitter::default(),
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => {
                    let _ = writeln!(io::stderr(), "Error: reading input: {e}");
                    break;
                }
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
        Ok(true)
    }

    fn banner(&mut self) -> anyhow::Result<()> {
        let base = self.api.base.clone();
        match self.api.get_json("/status") {
            Ok(status) => {
                let version = status["build"]["version"].as_str().unwrap_or("?");
                // A string, as rqlite's node ids are (older servers sent a number).
                let node = match &status["node"]["id"] {
                    Value::String(id) => id.clone(),
                    other => other.to_string(),
                };
                writeln!(
                    self.out,
                    "Connected to {base} (raftlite {version}, node {node}). Enter \".help\" for usage hints."
                )?;
            }
            Err(e) => {
                let _ = writeln!(io::stderr(), "warning: {}", e.message());
                writeln!(self.out, "Enter \".help\" for usage hints.")?;
            }
        }
        Ok(())
    }

    /// Handles one input line. `Err` only for failures writing to stdout.
    fn handle_line(
        &mut self,
        splitter: &mut Splitter,
        line: &str,
        interactive: bool,
    ) -> anyhow::Result<Flow> {
        if !splitter.is_pending() && line.trim_start().starts_with('.') {
            *splitter = Splitter::default();
            let started = Instant::now();
            let result = match parse_dot_command(line) {
                Ok(cmd) => self.run_dot(cmd),
                Err(msg) => Err(CmdError::Failed(msg)),
            };
            return self.finish_command(result, started, interactive, false);
        }
        for sql in splitter.push_line(line) {
            if self.run_statement(&sql, interactive)? == Flow::Exit {
                return Ok(Flow::Exit);
            }
        }
        Ok(Flow::Continue)
    }

    fn run_statement(&mut self, sql: &str, interactive: bool) -> anyhow::Result<Flow> {
        let started = Instant::now();
        let result = self.api.sql(sql, &[]).and_then(|output| {
            self.print_output(&output)
                .map_err(|e| CmdError::Failed(format!("writing to stdout: {e}")))
        });
        self.finish_command(result.map(|()| Flow::Continue), started, interactive, true)
    }

    /// Reports an error, prints the timer, and decides whether a script goes on.
    fn finish_command(
        &mut self,
        result: Result<Flow, CmdError>,
        started: Instant,
        interactive: bool,
        is_sql: bool,
    ) -> anyhow::Result<Flow> {
        let flow = match result {
            Ok(flow) => flow,
            Err(e) => {
                self.out.flush().context("writing to stdout")?;
                let _ = writeln!(io::stderr(), "Error: {}", e.message());
                self.failed = true;
                match e {
                    CmdError::Connection(_) if !interactive => Flow::Exit,
                    _ => Flow::Continue,
                }
            }
        };
        if self.timer && is_sql {
            writeln!(
                self.out,
                "Run Time: {:.6} s",
                started.elapsed().as_secs_f64()
            )
            .context("writing to stdout")?;
        }
        Ok(flow)
    }

    fn print_output(&mut self, output: &SqlOutput) -> io::Result<()> {
        match output {
            SqlOutput::Rows { columns, rows } => {
                if !columns.is_empty() {
                    self.out.write_all(render_table(columns, rows).as_bytes())?;
                }
            }
            SqlOutput::Executed {
                rows_affected,
                last_insert_id,
            } => match last_insert_id {
                Some(id) => writeln!(
                    self.out,
                    "{rows_affected} row(s) affected, last insert id {id}"
                )?,
                None => writeln!(self.out, "{rows_affected} row(s) affected")?,
            },
        }
        Ok(())
    }

    fn say(&mut self, text: &str) -> Result<(), CmdError> {
        writeln!(self.out, "{text}")
            .map_err(|e| CmdError::Failed(format!("writing to stdout: {e}")))
    }
}
