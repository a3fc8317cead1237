//! `raftlite shell`: an interactive SQL shell like rqlite's CLI.
//!
//! A blocking program (no async runtime of its own; `reqwest::blocking` runs one internally).
//! On a terminal it reads lines with `rustyline` (history in `~/.raftlite_history`); otherwise it
//! reads statements from stdin without prompts and exits 0, or 1 if any statement failed.
//!
//! Every SQL statement is sent on its own to `POST /db/request?level=weak`: the server decides
//! whether it reads or writes (so `WITH ... INSERT` and `PRAGMA x = y` go the right way), and
//! the non-associative form keeps the column order for the table printout. Statements end with
//! `;` outside string literals, quoted identifiers and comments; `CREATE TRIGGER` bodies end at
//! `END;`. Lines starting with `.` between statements are dot commands (see [`HELP`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::blocking::{Body, Client, Response};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use crate::config::ShellArgs;

const HISTORY_FILE: &str = ".raftlite_history";
const CONTINUATION_PROMPT: &str = "   ...> ";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request limit for SQL and status requests (the server itself gives up after 10 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// For backups and restores: the longest wait for the response headers, for one read of a
/// download, and for sending a whole upload.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// For restores: the node answers only once every node switched to the new file, after
/// checking and replicating all of it.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_REDIRECTS: usize = 5;
const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

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

/// Entry point of `raftlite shell`. Setup problems (bad URL, unreadable CA file, bad `-u`) are
/// an `Err`; when a piped script had a failing statement the process exits with status 1.
pub fn run(args: ShellArgs) -> anyhow::Result<()> {
    let api = Api::new(&args)?;
    if args.insecure {
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

    fn run_dot(&mut self, cmd: DotCommand) -> Result<Flow, CmdError> {
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

/// `/nodes?ver=2` as table columns and rows, sorted by node id.
fn nodes_table(body: &Value) -> Result<(Vec<String>, Vec<Vec<String>>), CmdError> {
    let nodes = body["nodes"]
        .as_array()
        .ok_or_else(|| CmdError::Failed(format!("unexpected /nodes?ver=2 answer: {body}")))?;
    let keys = ["id", "api_addr", "addr", "voter", "reachable", "leader"];
    let mut rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            keys.iter()
                .map(|k| match &n[*k] {
                    Value::Null => String::new(),
                    v => cell_text(v),
                })
                .collect()
        })
        .collect();
    rows.sort_by_key(|r| {
        let id = r.first().cloned().unwrap_or_default();
        (id.parse::<u64>().unwrap_or(u64::MAX), id)
    });
    Ok((keys.iter().map(|k| k.to_string()).collect(), rows))
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// The server's HTTP API, with credentials and redirect handling.
struct Api {
    /// Base URL without a trailing `/`, e.g. `http://127.0.0.1:4001`.
    base: String,
    /// `host:port`, for the prompt.
    label: String,
    client: Client,
    auth: Option<(String, String)>,
}

/// Result of one SQL statement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SqlOutput {
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Executed {
        rows_affected: i64,
        last_insert_id: Option<i64>,
    },
}

/// Adds `http://` when no scheme is given and drops trailing `/`s.
fn normalize_url(raw: &str) -> anyhow::Result<(String, String)> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let url = Url::parse(&with_scheme).with_context(|| {
        format!("invalid server URL `{raw}`; expected e.g. http://127.0.0.1:4001")
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        anyhow::bail!("invalid server URL `{raw}`: the scheme must be http or https");
    }
    let host = url
        .host_str()
        .with_context(|| format!("invalid server URL `{raw}`: no host"))?;
    if url.query().is_some() || url.fragment().is_some() {
        anyhow::bail!("invalid server URL `{raw}`: remove the query string or fragment");
    }
    let label = match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let base = url.as_str().trim_end_matches('/').to_owned();
    Ok((base, label))
}

/// Splits `-u USER:PASSWORD` at the first `:`.
fn parse_credentials(raw: &str) -> anyhow::Result<(String, String)> {
    match raw.split_once(':') {
        Some((user, pass)) if !user.is_empty() => Ok((user.to_owned(), pass.to_owned())),
        _ => anyhow::bail!("invalid -u value: expected USER:PASSWORD"),
    }
}

impl Api {
    fn new(args: &ShellArgs) -> anyhow::Result<Api> {
        let (base, label) = normalize_url(&args.url)?;
        let auth = args.user.as_deref().map(parse_credentials).transpose()?;
        let mut builder = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TRANSFER_TIMEOUT)
            // Redirects are followed by hand, keeping the method, body and credentials.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("raftlite-shell/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.ca_cert {
            let pem = fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("--ca-cert {} is not a PEM certificate file", path.display())
            })?;
            if certs.is_empty() {
                anyhow::bail!("--ca-cert {} holds no PEM certificate", path.display());
            }
            builder = builder.tls_certs_merge(certs);
        }
        if args.insecure {
            builder = builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        let client = builder.build().context("cannot set up the HTTP client")?;
        Ok(Api {
            base,
            label,
            client,
            auth,
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> CmdError {
        let mut parts: Vec<String> = Vec::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let text = s.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
            source = s.source();
        }
        // The innermost cause is the informative one ("Connection refused (os error 111)",
        // "invalid peer certificate: UnknownIssuer"); the outer ones are reqwest's wrappers.
        let detail = parts.pop().unwrap_or_else(|| e.to_string());
        let base = &self.base;
        CmdError::Connection(if e.is_timeout() {
            format!("no answer from {base} in time ({detail})")
        } else if detail.contains("certificate") {
            format!(
                "cannot connect to {base}: {detail} (trust the server's CA with --ca-cert FILE, \
                 or skip the check with --insecure)"
            )
        } else if e.is_connect() {
            format!("cannot connect to {base}: {detail} (is raftlite running there?)")
        } else {
            format!("request to {base} failed: {detail}")
        })
    }

    /// Sends a request, following redirects (to the leader) with the same method, body and
    /// credentials. `body` is called again for every hop.
    fn send(
        &self,
        method: Method,
        path: &str,
        timeout: Option<Duration>,
        body: &mut dyn FnMut() -> Result<Option<(Body, &'static str)>, CmdError>,
    ) -> Result<Response, CmdError> {
        let mut url = Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| CmdError::Failed(format!("bad URL {}{path}: {e}", self.base)))?;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.client.request(method.clone(), url.clone());
            if let Some((user, pass)) = &self.auth {
                req = req.basic_auth(user, Some(pass));
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some((b, content_type)) = body()? {
                req = req.header(CONTENT_TYPE, content_type).body(b);
            }
            let resp = req.send().map_err(|e| self.transport_error(&e))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(location) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) else {
                return Ok(resp);
            };
            let next = url.join(location).map_err(|e| {
                CmdError::Failed(format!(
                    "the server redirected to a bad URL {location:?}: {e}"
                ))
            })?;
            if url.scheme() == "https" && next.scheme() != "https" {
                return Err(CmdError::Failed(format!(
                    "refusing to follow a redirect from HTTPS to {next}"
                )));
            }
            url = next;
        }
        Err(CmdError::Failed(format!(
            "too many redirects (more than {MAX_REDIRECTS}); last one to {url}"
        )))
    }

    /// Runs one statement with positional parameters.
    fn sql(&self, sql: &str, params: &[&str]) -> Result<SqlOutput, CmdError> {
        let stmt = if params.is_empty() {
            Value::from(sql)
        } else {
            let mut v = vec![Value::from(sql)];
            v.extend(params.iter().map(|p| Value::from(*p)));
            Value::Array(v)
        };
        let body = Value::Array(vec![stmt]).to_string();
        let resp = self.send(
            Method::POST,
            "/db/request?level=weak",
            Some(REQUEST_TIMEOUT),
            &mut || Ok(Some((Body::from(body.clone()), "application/json"))),
        )?;
        let json = self.json_body(resp, "/db/request")?;
        parse_sql_response(&json, is_query_like(sql)).map_err(CmdError::Failed)
    }

    fn get_json(&self, path: &str) -> Result<Value, CmdError> {
        let resp = self.send(Method::GET, path, Some(REQUEST_TIMEOUT), &mut || Ok(None))?;
        self.json_body(resp, path)
    }

    /// The JSON body of a 200 answer; anything else is an error carrying the server's message.
    fn json_body(&self, resp: Response, what: &str) -> Result<Value, CmdError> {
        if resp.status() != StatusCode::OK {
            return Err(http_error(resp, what));
        }
        let text = resp.text().map_err(|e| self.transport_error(&e))?;
        serde_json::from_str(&text).map_err(|e| {
            CmdError::Failed(format!(
                "{what}: the server's answer is not JSON ({e}): {}",
                excerpt(&text)
            ))
        })
    }

    /// Streams `GET path` into `dest` through a temporary file in the same directory, renamed
    /// into place once complete and synced. Returns the number of bytes.
    fn download(
        &self,
        path: &str,
        dest: &Path,
        expect_sqlite: bool,
        progress: bool,
    ) -> Result<u64, CmdError> {
        let endpoint = path.split('?').next().unwrap_or(path);
        let mut resp = self.send(Method::GET, path, None, &mut || Ok(None))?;
        if resp.status() != StatusCode::OK {
            return Err(http_error(resp, endpoint));
        }
        let tmp = temp_path_for(dest)?;
        // Read before the body: reqwest's value shrinks as the body is consumed.
        let expected_len = resp.content_length();
        let bar = progress_bar(expected_len, progress);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| CmdError::Failed(format!("cannot create {}: {e}", tmp.display())))?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total: u64 = 0;
            let mut head = Vec::with_capacity(SQLITE_HEADER.len());
            loop {
                let n = match resp.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(CmdError::Connection(format!(
                            "download from {}{endpoint} broke off after {total} bytes: {e}",
                            self.base
                        )))
                    }
                };
                let chunk = &buf[..n];
                if head.len() < SQLITE_HEADER.len() {
                    let take = (SQLITE_HEADER.len() - head.len()).min(n);
                    head.extend_from_slice(&chunk[..take]);
                }
                file.write_all(chunk).map_err(|e| {
                    CmdError::Failed(format!("cannot write {}: {e}", tmp.display()))
                })?;
                total += n as u64;
                bar.inc(n as u64);
            }
            if let Some(expected) = expected_len {
                if expected != total {
                    return Err(CmdError::Connection(format!(
                        "download from {}{endpoint} ended after {total} of {expected} bytes",
                        self.base
                    )));
                }
            }
            if expect_sqlite && head != SQLITE_HEADER {
                return Err(CmdError::Failed(format!(
                    "{endpoint}: the server's answer is not a SQLite database; nothing written"
                )));
            }
            file.sync_all()
                .map_err(|e| CmdError::Failed(format!("cannot sync {}: {e}", tmp.display())))?;
            drop(file);
            fs::rename(&tmp, dest).map_err(|e| {
                CmdError::Failed(format!(
                    "cannot rename {} to {}: {e}",
                    tmp.display(),
                    dest.display()
                ))
            })?;
            Ok(total)
        })();
        bar.finish_and_clear();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// `POST /db/load` with the bytes of `src`, streamed from the file as they are sent (never
    /// read whole). Returns the number of bytes sent and, when the server started a new
    /// timeline (a SQLite file), a line describing it.
    fn restore(&self, src: &Path, progress: bool) -> Result<(u64, Option<String>), CmdError> {
        let len = fs::metadata(src)
            .map_err(|e| CmdError::Failed(format!("cannot read {}: {e}", src.display())))?
            .len();
        let bar = progress_bar(Some(len), progress);
        let resp = self.send(Method::POST, "/db/load", Some(RESTORE_TIMEOUT), &mut || {
            let file = File::open(src)
                .map_err(|e| CmdError::Failed(format!("cannot open {}: {e}", src.display())))?;
            bar.set_position(0);
            let reader = ProgressReader {
                inner: file,
                bar: bar.clone(),
            };
            Ok(Some((Body::sized(reader, len), "application/octet-stream")))
        });
        bar.finish_and_clear();
        let body = self.json_body(resp?, "/db/load")?;
        if let Some(err) = body.get("error").and_then(Value::as_str) {
            return Err(CmdError::Failed(format!("/db/load: {err}")));
        }
        if let Some(err) = body["results"].as_array().and_then(|r| {
            r.iter()
                .find_map(|r| r.get("error").and_then(Value::as_str))
        }) {
            return Err(CmdError::Failed(format!("/db/load: {err}")));
        }
        Ok((len, timeline_line(&body)))
    }
}

/// `New timeline #2 (id), log index N` from a `/db/load` answer that has a timeline.
fn timeline_line(answer: &Value) -> Option<String> {
    let timeline = answer.get("timeline")?;
    let id = timeline.get("id")?.as_str()?;
    let mut line = match timeline.get("counter").and_then(Value::as_u64) {
        Some(counter) => format!("New timeline #{counter} ({id})"),
        None => format!("New timeline {id}"),
    };
    if let Some(index) = answer
        .get("restore")
        .and_then(|r| r.get("index"))
        .and_then(Value::as_u64)
    {
        line.push_str(&format!(", in effect on every node from log index {index}"));
    }
    Some(line)
}

/// `<dir>/.<name>.tmp-<pid>` beside `dest`.
fn temp_path_for(dest: &Path) -> Result<PathBuf, CmdError> {
    let name = dest
        .file_name()
        .ok_or_else(|| CmdError::Failed(format!("{} is not a file name", dest.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    Ok(dest.with_file_name(tmp_name))
}

fn progress_bar(len: Option<u64>, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    match len {
        Some(len) => {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec}")
            {
                bar.set_style(style);
            }
            bar
        }
    }
}

struct ProgressReader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn excerpt(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_owned(),
    }
}

/// A non-2xx answer as an error with the server's `error` message (or body) and a hint.
fn http_error(resp: Response, what: &str) -> CmdError {
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| excerpt(&text));
    let mut msg = format!("{what}: HTTP {status}");
    if !detail.is_empty() {
        msg.push_str(": ");
        msg.push_str(&detail);
    }
    match status {
        StatusCode::UNAUTHORIZED => msg.push_str(" (give credentials with -u USER:PASSWORD)"),
        StatusCode::FORBIDDEN => msg.push_str(" (the user lacks the permission for this)"),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            msg.push_str(" (this server does not support it)")
        }
        _ => {}
    }
    CmdError::Failed(msg)
}

/// Interprets the answer to a one-statement `/db/request`.
fn parse_sql_response(body: &Value, query_like: bool) -> Result<SqlOutput, String> {
    if let Some(err) = body.get("error").and_then(Value::as_str) {
        return Err(err.to_owned());
    }
    let result = body["results"]
        .as_array()
        .and_then(|r| r.first())
        .ok_or_else(|| format!("the server's answer has no results: {body}"))?;
    if let Some(err) = result.get("error") {
        return Err(err.as_str().map_or_else(|| err.to_string(), str::to_owned));
    }
    if let Some(cols) = result.get("columns").and_then(Value::as_array) {
        let columns = cols.iter().map(cell_text).collect();
        let rows = result["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        row.as_array()
                            .map(|cells| cells.iter().map(cell_text).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Ok(SqlOutput::Rows { columns, rows });
    }
    let rows_affected = result.get("rows_affected").and_then(Value::as_i64);
    let last_insert_id = result.get("last_insert_id").and_then(Value::as_i64);
    if query_like && rows_affected.is_none() && last_insert_id.is_none() {
        return Ok(SqlOutput::Rows {
            columns: Vec::new(),
            rows: Vec::new(),
        });
    }
    Ok(SqlOutput::Executed {
        rows_affected: rows_affected.unwrap_or(0),
        last_insert_id,
    })
}

/// Text of one cell: `NULL` for null, strings as they are (blobs arrive base64-encoded) with
/// control characters escaped so they cannot break the table, everything else as JSON.
fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => {
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                match c {
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                    c => out.push(c),
                }
            }
            out
        }
        other => other.to_string(),
    }
}

/// An aligned ASCII table: border, headers, border, rows, border.
fn render_table(columns: &[String], rows: &[Vec<String>]) -> String {
    let ncols = rows
        .iter()
        .map(Vec::len)
        .chain(std::iter::once(columns.len()))
        .max()
        .unwrap_or(0);
    fn cell(row: &[String], i: usize) -> &str {
        row.get(i).map(String::as_str).unwrap_or("")
    }
    let widths: Vec<usize> = (0..ncols)
        .map(|i| {
            rows.iter()
                .map(|r| cell(r, i).width())
                .chain(std::iter::once(cell(columns, i).width()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let border: String = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |row: &[String]| {
        let mut s = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            let text = cell(row, i);
            s.push(' ');
            s.push_str(text);
            s.push_str(&" ".repeat(w - text.width().min(*w) + 1));
            s.push('|');
        }
        s.push('\n');
        s
    };
    let mut out = String::new();
    out.push_str(&border);
    out.push_str(&line(columns));
    out.push_str(&border);
    for row in rows {
        out.push_str(&line(row));
    }
    if !rows.is_empty() {
        out.push_str(&border);
    }
    out
}

// ---------------------------------------------------------------------------
// Statement splitting
// ---------------------------------------------------------------------------

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
struct Splitter {
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
    fn is_pending(&self) -> bool {
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
    fn push_line(&mut self, line: &str) -> Vec<String> {
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
    fn finish(&mut self) -> Option<String> {
        self.take_statement()
    }
}

/// True for statements whose first keyword marks a read (`SELECT`, `WITH`, `PRAGMA`,
/// `EXPLAIN`, `VALUES`); used only to print nothing for a read without columns.
fn is_query_like(sql: &str) -> bool {
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

// ---------------------------------------------------------------------------
// Dot commands
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum DotCommand {
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
fn parse_dot_command(line: &str) -> Result<DotCommand, String> {
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
    use serde_json::json;

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
    fn table_is_aligned_with_headers_and_separators() {
        let t = render_table(
            &s(&["id", "name"]),
            &[s(&["1", "fiona"]), s(&["22", "NULL"])],
        );
        assert_eq!(
            t,
            "+----+-------+\n\
             | id | name  |\n\
             +----+-------+\n\
             | 1  | fiona |\n\
             | 22 | NULL  |\n\
             +----+-------+\n"
        );
    }

    #[test]
    fn table_without_rows_and_with_wide_and_short_rows() {
        assert_eq!(render_table(&s(&["a"]), &[]), "+---+\n| a |\n+---+\n");
        // Double-width characters count twice; a short row is padded.
        let t = render_table(&s(&["x", "y"]), &[s(&["日本", "1"]), s(&["a"])]);
        assert_eq!(
            t,
            "+------+---+\n| x    | y |\n+------+---+\n| 日本 | 1 |\n| a    |   |\n+------+---+\n"
        );
    }

    #[test]
    fn cells_render_null_numbers_and_escape_control_characters() {
        assert_eq!(cell_text(&Value::Null), "NULL");
        assert_eq!(cell_text(&json!(42)), "42");
        assert_eq!(cell_text(&json!(1.5)), "1.5");
        assert_eq!(cell_text(&json!("AAEC")), "AAEC");
        assert_eq!(cell_text(&json!("a\nb\tc\u{1}")), "a\\nb\\tc\\u{1}");
        assert_eq!(cell_text(&json!([1, 2])), "[1,2]");
    }

    #[test]
    fn sql_responses_are_interpreted() {
        let rows = json!({"results": [{"columns": ["id", "v"], "types": ["integer", "blob"],
            "values": [[1, "AAE="], [2, null]]}]});
        assert_eq!(
            parse_sql_response(&rows, true),
            Ok(SqlOutput::Rows {
                columns: s(&["id", "v"]),
                rows: vec![s(&["1", "AAE="]), s(&["2", "NULL"])],
            })
        );
        let exec = json!({"results": [{"last_insert_id": 3, "rows_affected": 1}]});
        assert_eq!(
            parse_sql_response(&exec, false),
            Ok(SqlOutput::Executed {
                rows_affected: 1,
                last_insert_id: Some(3)
            })
        );
        let empty = json!({"results": [{}]});
        assert_eq!(
            parse_sql_response(&empty, false),
            Ok(SqlOutput::Executed {
                rows_affected: 0,
                last_insert_id: None
            })
        );
        assert_eq!(
            parse_sql_response(&empty, true),
            Ok(SqlOutput::Rows {
                columns: vec![],
                rows: vec![]
            })
        );
        let err = json!({"results": [{"error": "no such table: t"}]});
        assert_eq!(
            parse_sql_response(&err, true),
            Err("no such table: t".to_owned())
        );
        let top = json!({"results": [], "error": "not leader"});
        assert_eq!(parse_sql_response(&top, true), Err("not leader".to_owned()));
        assert!(parse_sql_response(&json!({}), true).is_err());
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

    #[test]
    fn urls_and_credentials() {
        assert_eq!(
            normalize_url("http://127.0.0.1:4001/").unwrap(),
            (
                "http://127.0.0.1:4001".to_owned(),
                "127.0.0.1:4001".to_owned()
            )
        );
        assert_eq!(
            normalize_url("localhost:4011").unwrap(),
            (
                "http://localhost:4011".to_owned(),
                "localhost:4011".to_owned()
            )
        );
        assert_eq!(
            normalize_url("https://db.example").unwrap(),
            ("https://db.example".to_owned(), "db.example:443".to_owned())
        );
        assert_eq!(
            normalize_url("http://[::1]:4001").unwrap().1,
            "[::1]:4001".to_owned()
        );
        assert!(normalize_url("ftp://x").is_err());
        assert!(normalize_url("http://x:4001/?q=1").is_err());
        assert!(normalize_url("http://:99999").is_err());

        assert_eq!(
            parse_credentials("bob:se:cret").unwrap(),
            ("bob".to_owned(), "se:cret".to_owned())
        );
        assert_eq!(
            parse_credentials("bob:").unwrap(),
            ("bob".to_owned(), String::new())
        );
        assert!(parse_credentials("bob").is_err());
        assert!(parse_credentials(":pw").is_err());
    }

    #[test]
    fn nodes_table_is_sorted_by_id() {
        let body = json!({"nodes": [
            {"id": "10", "api_addr": "http://b", "addr": "b:2", "voter": true, "reachable": true, "leader": false},
            {"id": "2", "api_addr": "http://a", "addr": "a:2", "voter": false, "reachable": false, "leader": true},
        ]});
        let (cols, rows) = nodes_table(&body).unwrap();
        assert_eq!(
            cols,
            s(&["id", "api_addr", "addr", "voter", "reachable", "leader"])
        );
        assert_eq!(
            rows[0],
            s(&["2", "http://a", "a:2", "false", "false", "true"])
        );
        assert_eq!(rows[1][0], "10");
        assert!(nodes_table(&json!({"1": {}})).is_err());
    }

    #[test]
    fn restore_answers_name_the_new_timeline() {
        let answer = serde_json::json!({
            "results": [],
            "timeline": {"id": "abc", "counter": 3},
            "restore": {"index": 42}
        });
        assert_eq!(
            timeline_line(&answer).as_deref(),
            Some("New timeline #3 (abc), in effect on every node from log index 42")
        );
        assert_eq!(timeline_line(&serde_json::json!({"results": []})), None);
    }

    #[test]
    fn temp_file_sits_beside_the_destination() {
        let tmp = temp_path_for(Path::new("/x/y/backup.db")).unwrap();
        assert_eq!(tmp.parent(), Some(Path::new("/x/y")));
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".backup.db.tmp-"), "{name}");
        assert!(temp_path_for(Path::new("/")).is_err());
    }
}
