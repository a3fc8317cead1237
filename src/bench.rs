//! `raftlite bench`: measured throughput figures anyone can rerun.
//!
//! One run measures plain SQLite (the ceiling: one fsync'd single-row transaction at a time) and
//! then real `raftlite serve` clusters on loopback, started from this very binary, under 1..N
//! concurrent HTTP clients. Only acknowledged inserts count (HTTP 200 and no `error`), and after
//! every measurement a strong `COUNT(*)` checks that no acknowledged insert is missing.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::config::BenchArgs;

/// Every wait (node ready, membership, a request) gives up after this long.
const DEADLINE: Duration = Duration::from_secs(30);
/// Run before each measurement and not counted: fills connection pools and caches.
const WARMUP: Duration = Duration::from_secs(1);
/// The inserted value: 16 characters, the same for every row, so only the write path is measured.
const VALUE: &str = "raftlite-bench-v";
const INSERT: &str = "INSERT INTO bench(v) VALUES(?)";
const CREATE: &str = "CREATE TABLE bench (id INTEGER PRIMARY KEY, v TEXT)";

/// One measured configuration: a line of the table.
struct Row {
    cluster: String,
    clients: usize,
    stats: Stats,
    /// `SELECT COUNT(*)` after the run and the inserts acknowledged so far (warm-up included);
    /// `None` for the SQLite baseline, which has nothing to verify.
    check: Option<(u64, u64)>,
}

/// What one measurement window saw.
#[derive(Default)]
struct Stats {
    acked: u64,
    failed: u64,
    latencies: Vec<Duration>,
    window: Duration,
    /// How the failures looked (`HTTP 503`, `SQL error: ...`), with counts, for the report.
    failures: BTreeMap<String, u64>,
}

impl Stats {
    fn per_sec(&self) -> f64 {
        self.acked as f64 / self.window.as_secs_f64()
    }

    /// Nearest-rank percentile in milliseconds (`p` in 0..=1); `None` without samples.
    fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1));
        self.latencies.get(rank - 1).map(|d| d.as_secs_f64() * 1e3)
    }

    fn merge(&mut self, other: Stats) {
        self.acked += other.acked;
        self.failed += other.failed;
        self.latencies.extend(other.latencies);
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.duration_secs == 0 || args.clients.contains(&0) || args.nodes.contains(&0) {
        bail!("--duration-secs, --clients and --nodes must all be at least 1");
    }
    let work = WorkDir::create(args.work_dir.clone())?;
    let duration = Duration::from_secs(args.duration_secs);
    // Dropping the measurement future on Ctrl-C drops its guards, so nodes are killed then too.
    let rows = tokio::select! {
        rows = measure_all(&args, &work.path, duration) => rows?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    print_report(&args, &rows)?;
    // The figures are printed either way, but a run that lost acknowledged writes must not pass.
    match rows
        .iter()
        .find(|r| r.check.is_some_and(|(count, acked)| count < acked))
    {
        Some(r) => bail!(
            "{} with {} clients lost acknowledged inserts",
            r.cluster,
            r.clients
        ),
        None => Ok(()),
    }
}

async fn measure_all(
    args: &BenchArgs,
    work: &Path,
    duration: Duration,
) -> anyhow::Result<Vec<Row>> {
    eprintln!(
        "bench: sqlite baseline for {duration:?} (work dir {})",
        work.display()
    );
    let db = work.join("baseline.sqlite");
    let stats = tokio::task::spawn_blocking(move || sqlite_baseline(&db, duration))
        .await
        .context("the sqlite baseline thread failed")??;
    let mut rows = vec![Row {
        cluster: "sqlite baseline".into(),
        clients: 1,
        stats,
        check: None,
    }];

    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(max_clients)
        .timeout(DEADLINE)
        // A proxy from the environment would measure the proxy, not raftlite.
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    for &size in &args.nodes {
        let name = format!("{size}-node");
        eprintln!("bench: starting a {name} cluster");
        let mut cluster = Cluster {
            dir: work.join(&name),
            nodes: Vec::new(),
        };
        let result = measure_cluster(&mut cluster, &http, size, &args.clients, duration).await;
        match result {
            Ok(stats) => rows.extend(stats.into_iter().map(|(clients, stats, check)| Row {
                cluster: name.clone(),
                clients,
                stats,
                check: Some(check),
            })),
            Err(e) => {
                cluster.print_log_tails();
                return Err(e.context(format!("{name} cluster")));
            }
        }
    } // `cluster` is dropped here: its nodes are killed before the next one starts.
    Ok(rows)
}

/// Plain SQLite as durable as it gets: WAL, `synchronous=FULL`, one autocommit INSERT at a time.
fn sqlite_baseline(path: &Path, duration: Duration) -> anyhow::Result<Stats> {
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("{} refused WAL mode (got {mode})", path.display());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute(CREATE, [])?;
    let mut insert = conn.prepare(INSERT)?;
    let start = Instant::now();
    let (measure_from, end) = (start + WARMUP, start + WARMUP + duration);
    let mut stats = Stats {
        window: duration,
        ..Stats::default()
    };
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        insert.execute([VALUE])?;
        let t1 = Instant::now();
        if t0 >= measure_from && t1 <= end {
            stats.acked += 1;
            stats.latencies.push(t1 - t0);
        }
    }
    stats.latencies.sort_unstable();
    Ok(stats)
}

/// Starts the cluster, creates the table and measures every client count in turn.
async fn measure_cluster(
    cluster: &mut Cluster,
    http: &reqwest::Client,
    size: usize,
    clients: &[usize],
    duration: Duration,
) -> anyhow::Result<Vec<(usize, Stats, (u64, u64))>> {
    let leader = cluster.start(http, size).await?;
    let created = post(http, &format!("{leader}/db/execute"), &json!([CREATE])).await?;
    if let Some(err) = result_error(&created) {
        bail!("CREATE TABLE failed: {err}");
    }
    let url = format!("{leader}/db/execute");
    let body = json!([[INSERT, VALUE]]).to_string();
    let mut acked_total = 0;
    let mut out = Vec::new();
    for &n in clients {
        eprintln!("bench: {size}-node, {n} clients for {duration:?}");
        let start = Instant::now();
        let (measure_from, end) = (start + WARMUP, start + WARMUP + duration);
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(client_loop(
                    http.clone(),
                    url.clone(),
                    body.clone(),
                    measure_from,
                    end,
                ))
            })
            .collect();
        let mut stats = Stats {
            window: duration,
            ..Stats::default()
        };
        for task in tasks {
            let (measured, acked) = task.await.context("a client task failed")?;
            stats.merge(measured);
            acked_total += acked;
        }
        stats.latencies.sort_unstable();
        for (kind, count) in &stats.failures {
            eprintln!("bench: {size}-node, {n} clients: {count} x {kind}");
        }
        let count = count_rows(http, &leader).await?;
        out.push((n, stats, (count, acked_total)));
    }
    Ok(out)
}

/// One client: inserts back to back until `end`. Returns what completed inside the measurement
/// window, and how many inserts were acknowledged at any time (for the `COUNT(*)` check).
async fn client_loop(
    http: reqwest::Client,
    url: String,
    body: String,
    measure_from: Instant,
    end: Instant,
) -> (Stats, u64) {
    let mut stats = Stats::default();
    let mut acked_total = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let outcome = insert_once(&http, &url, body.clone()).await;
        let t1 = Instant::now();
        let counted = t0 >= measure_from && t1 <= end;
        match outcome {
            Ok(()) => {
                acked_total += 1;
                if counted {
                    stats.acked += 1;
                    stats.latencies.push(t1 - t0);
                }
            }
            Err(kind) => {
                if counted {
                    stats.failed += 1;
                    *stats.failures.entry(kind).or_default() += 1;
                }
                // Don't spin against a node that is refusing (e.g. 503 during an election).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    (stats, acked_total)
}

/// `Ok` only for an acknowledged insert; otherwise a short description of the failure.
async fn insert_once(http: &reqwest::Client, url: &str, body: String) -> Result<(), String> {
    let resp = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request error: {e}"))?;
    let status = resp.status();
    let doc: Value = resp
        .json()
        .await
        .map_err(|e| format!("HTTP {status}, unreadable body: {e}"))?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    match result_error(&doc) {
        Some(err) => Err(format!("error in response: {err}")),
        None => Ok(()),
    }
}

/// The first `error` in an rqlite response, at the top level or in a statement's result; a
/// response without a `results` array counts as an error too.
fn result_error(doc: &Value) -> Option<String> {
    if let Some(err) = doc.get("error") {
        return Some(err.to_string());
    }
    let Some(results) = doc.get("results").and_then(Value::as_array) else {
        return Some(format!("no results in {doc}"));
    };
    results
        .iter()
        .find_map(|r| r.get("error").map(Value::to_string))
}

/// `SELECT COUNT(*) FROM bench` at level `strong`, so it reflects everything committed.
async fn count_rows(http: &reqwest::Client, leader: &str) -> anyhow::Result<u64> {
    let url = format!("{leader}/db/query?level=strong");
    let doc = post(http, &url, &json!(["SELECT COUNT(*) FROM bench"])).await?;
    if let Some(err) = result_error(&doc) {
        bail!("SELECT COUNT(*) failed: {err}");
    }
    doc.pointer("/results/0/values/0/0")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("SELECT COUNT(*) returned no count: {doc}"))
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    send_json(http.post(url).json(body))
        .await
        .with_context(|| format!("POST {url}"))
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    send_json(http.get(url))
        .await
        .with_context(|| format!("GET {url}"))
}

/// Sends a request and returns its JSON body; any status but 2xx is an error quoting the body.
async fn send_json(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

/// A node process, killed when its [`Cluster`] is dropped.
struct Node {
    id: u64,
    url: String,
    log: PathBuf,
    child: Child,
}

/// The nodes of one cluster under `dir` (`n<ID>/` data dirs and `node-<ID>.log` files). Dropping
/// it kills every node, whatever path led there.
struct Cluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `size` nodes and returns the leader's URL once it lists all of them as voters.
    async fn start(&mut self, http: &reqwest::Client, size: usize) -> anyhow::Result<String> {
        std::fs::create_dir(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let ports = free_ports(2 * size)?;
        for (i, pair) in ports.chunks(2).enumerate() {
            let join = self.nodes.first().map(|n| n.url.clone());
            self.spawn(i as u64 + 1, pair[0], pair[1], join)?;
            // Node 1 must have bootstrapped before the others ask it to let them join.
            if i == 0 {
                self.wait_ready(http, 0).await?;
            }
        }
        for i in 1..size {
            self.wait_ready(http, i).await?;
        }
        let first = format!("http://127.0.0.1:{}", ports[0]);
        let what = format!("the leader to list all {size} nodes as voters in /nodes?ver=2");
        self.wait_for(&what, || leader_with_voters(http, &first, size))
            .await
    }

    fn spawn(
        &mut self,
        id: u64,
        http_port: u16,
        raft_port: u16,
        join: Option<String>,
    ) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot locate the raftlite binary")?;
        let log_path = self.dir.join(format!("node-{id}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(format!("n{id}")))
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--raft-addr", &format!("127.0.0.1:{raft_port}")]);
        if let Some(url) = join {
            cmd.args(["--join", &url]);
        }
        // RAFTLITE_* settings from the caller's environment would make the figures irreproducible.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RAFTLITE_") {
                cmd.env_remove(key);
            }
        }
        // The logs go to files that are read, not to a terminal: no colour escapes.
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        let url = format!("http://127.0.0.1:{http_port}");
        self.nodes.push(Node {
            id,
            url,
            log: log_path,
            child,
        });
        Ok(())
    }

    async fn wait_ready(&mut self, http: &reqwest::Client, index: usize) -> anyhow::Result<()> {
        let (id, url) = match self.nodes.get(index) {
            Some(node) => (node.id, format!("{}/readyz", node.url)),
            None => bail!("no node at position {index}"),
        };
        let what = format!("node {id} to answer 200 on {url}");
        self.wait_for(&what, || async {
            let resp = http.get(&url).send().await.map_err(|e| e.to_string())?;
            resp.error_for_status().map(drop).map_err(|e| e.to_string())
        })
        .await
    }

    /// Polls `check` until it succeeds, failing early if a node exits and after [`DEADLINE`].
    async fn wait_for<T, F, Fut>(&mut self, what: &str, mut check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let why = match check().await {
                Ok(v) => return Ok(v),
                Err(why) => why,
            };
            for node in &mut self.nodes {
                if let Ok(Some(status)) = node.child.try_wait() {
                    bail!(
                        "node {} exited ({status}) while waiting for {what}",
                        node.id
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!("timed out after {DEADLINE:?} waiting for {what} (last: {why})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn print_log_tails(&self) {
        for node in &self.nodes {
            let text = std::fs::read(&node.log).unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {} ---", node.log.display());
            for line in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// Asks `node` who leads, then asks the leader whether every node 1..=size is a voter. Returns
/// the leader's URL.
async fn leader_with_voters(
    http: &reqwest::Client,
    node: &str,
    size: usize,
) -> Result<String, String> {
    let doc = get_json(http, &format!("{node}/leader"))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let leader = doc
        .pointer("/leader/api_addr")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no leader in {doc}"))?
        .trim_end_matches('/')
        .to_owned();
    let doc = get_json(http, &format!("{leader}/nodes?ver=2"))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let nodes = doc
        .get("nodes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let voter = |id: usize| {
        nodes.iter().any(|n| {
            n.get("id").and_then(Value::as_str) == Some(id.to_string().as_str())
                && n.get("voter").and_then(Value::as_bool) == Some(true)
        })
    };
    match (1..=size).find(|&id| !voter(id)) {
        None => Ok(leader),
        Some(id) => Err(format!("node {id} is not a voter yet: {doc}")),
    }
}

/// Distinct free loopback ports: all listeners are held until every port is chosen.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot allocate a loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The benchmark's files; a directory we created ourselves is removed again on drop.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn create(given: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(path) = given {
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create --work-dir {}", path.display()))?;
            // Leftovers (an old bench table, old node data) would distort or break the run.
            if std::fs::read_dir(&path)?.next().is_some() {
                bail!(
                    "--work-dir {} is not empty; give a new or empty directory",
                    path.display()
                );
            }
            return Ok(WorkDir {
                path,
                remove: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("raftlite-bench-{}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path, remove: true })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn print_report(args: &BenchArgs, rows: &[Row]) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let version = env!("CARGO_PKG_VERSION");
    let baseline = rows.first().map_or(0.0, |r| r.stats.per_sec());
    let ratio = |r: &Row| r.stats.per_sec() / baseline.max(f64::MIN_POSITIVE);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    if args.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "cluster": r.cluster,
                    "clients": r.clients,
                    "inserts_per_sec": round(r.stats.per_sec()),
                    "ratio_vs_baseline": round(ratio(r)),
                    "p50_ms": r.stats.percentile_ms(0.50).map(round),
                    "p99_ms": r.stats.percentile_ms(0.99).map(round),
                    "acknowledged": r.stats.acked,
                    "failed": r.stats.failed,
                    "failures": r.stats.failures,
                    "count_after": r.check.map(|c| c.0),
                    "acknowledged_total": r.check.map(|c| c.1),
                })
            })
            .collect();
        let doc = json!({
            "raftlite_version": version,
            "cores": cores,
            "duration_secs": args.duration_secs,
            "warmup_secs": WARMUP.as_secs(),
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "raftlite {version} bench, {cores} cores: acknowledged single-row INSERTs, {} s per row after {} s warm-up",
        args.duration_secs,
        WARMUP.as_secs()
    );
    println!(
        "{:<16} {:>7} {:>10} {:>9} {:>8} {:>8} {:>7}  COUNT(*) >= acked",
        "cluster", "clients", "inserts/s", "vs sqlite", "p50 ms", "p99 ms", "failed"
    );
    let ms = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for r in rows {
        let check = match r.check {
            None => String::new(),
            Some((count, acked)) if count >= acked => format!("ok ({count} >= {acked})"),
            Some((count, acked)) => format!("LOST ({count} < {acked})"),
        };
        println!(
            "{:<16} {:>7} {:>10.1} {:>8.2}x {:>8} {:>8} {:>7}  {check}",
            r.cluster,
            r.clients,
            r.stats.per_sec(),
            ratio(r),
            ms(r.stats.percentile_ms(0.50)),
            ms(r.stats.percentile_ms(0.99)),
            r.stats.failed,
        );
    }
    Ok(())
}
