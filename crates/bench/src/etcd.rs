//! etcd beside raftlite: the same acknowledged single-key writes, through etcd's HTTP/JSON
//! gateway (`POST /v3/kv/put`), on an etcd cluster of the same size started on loopback with
//! etcd's defaults (every put fsync'd by its WAL before it is acknowledged).
//!
//! etcd is not a dependency: the bench uses the `etcd` it finds (`--etcd-bin`, else `PATH`) and
//! says it skipped etcd when there is none.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::cluster::free_ports;
use crate::http::{send_json, VALUE};
use crate::tools::{find_tool, log_tail, logged, ChildGuard};
use crate::waits::{poll_until, DEADLINE};
use crate::writers::{measure_runs, Measured, WriteOp};
use crate::BenchArgs;

/// How to get etcd, for every message that says it is missing.
const INSTALL_HINT: &str = "install etcd (Debian: `apt-get install etcd-server`, which also \
     enables a service of its own: stop it) or give --etcd-bin PATH (env RAFTLITE_BENCH_ETCD_BIN)";

/// Every key the bench writes starts with this; the check counts the keys under it.
const KEY_PREFIX: &str = "raftlite-bench/";

/// Where the clients send their writes, for the report: raftlite's go to the leader (see
/// `insert.rs`), and so do etcd's, so that neither pays a forwarding hop the other does not.
pub const CLIENTS_SEND_TO: &str = "leader";

/// Whether this run measures etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdPlan {
    Run { bin: PathBuf, version: String },
    Skip(String),
}

/// Which etcd binary to try, before running it.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// `explicit`: named by --etcd-bin / RAFTLITE_BENCH_ETCD_BIN, so a broken one is an error.
    Use {
        bin: PathBuf,
        explicit: bool,
    },
    Skip(String),
}

/// The skip decision: `--no-etcd` wins, then a given path (which must exist: it was asked
/// for), then `found` (the `etcd` on `PATH`); no etcd at all is a skip, not an error.
fn choose(given: Option<&Path>, disabled: bool, found: Option<PathBuf>) -> anyhow::Result<Choice> {
    if disabled {
        return Ok(Choice::Skip("--no-etcd was given".into()));
    }
    if let Some(path) = given {
        if !path.is_file() {
            bail!(
                "--etcd-bin {} (or RAFTLITE_BENCH_ETCD_BIN): no such file; give the path of an \
                 etcd binary (the Debian package etcd-server installs /usr/bin/etcd), or pass \
                 --no-etcd to measure raftlite alone",
                path.display()
            );
        }
        return Ok(Choice::Use {
            bin: path.to_path_buf(),
            explicit: true,
        });
    }
    Ok(match found {
        Some(bin) => Choice::Use {
            bin,
            explicit: false,
        },
        None => Choice::Skip(format!(
            "no `etcd` on PATH or in /usr/bin; to measure etcd beside raftlite, {INSTALL_HINT}"
        )),
    })
}

/// Decides whether this run measures etcd, and with which binary and version.
pub async fn plan(args: &BenchArgs) -> anyhow::Result<EtcdPlan> {
    let found = find_tool("etcd");
    match choose(args.etcd_bin.as_deref(), args.no_etcd, found)? {
        Choice::Skip(why) => Ok(EtcdPlan::Skip(why)),
        Choice::Use { bin, explicit } => {
            let bin = std::fs::canonicalize(&bin)
                .with_context(|| format!("cannot resolve {}", bin.display()))?;
            match version(&bin).await {
                Ok(version) => Ok(EtcdPlan::Run { bin, version }),
                Err(e) if explicit => Err(e),
                Err(e) => Ok(EtcdPlan::Skip(format!("{e:#}; {INSTALL_HINT}"))),
            }
        }
    }
}

/// `etcd --version`'s version number.
async fn version(bin: &Path) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--version").kill_on_drop(true);
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .map_err(|_| anyhow!("`{} --version` did not finish", bin.display()))?
        .with_context(|| format!("cannot run `{} --version`", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = match stderr.trim() {
            "" => "no output".to_owned(),
            text => text.to_owned(),
        };
        bail!(
            "`{} --version` failed ({}): {said}; is it an etcd binary?",
            bin.display(),
            out.status
        );
    }
    parse_version(&text).ok_or_else(|| {
        anyhow!(
            "`{} --version` printed no etcd version: {}",
            bin.display(),
            text.trim()
        )
    })
}

/// The number in etcd's `etcd Version: 3.4.23` line.
fn parse_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// An etcd member process, killed when its [`EtcdCluster`] is dropped.
struct Member {
    name: String,
    url: String,
    log: PathBuf,
    child: ChildGuard,
}

/// The members of one etcd cluster under `dir` (`m<N>/` data dirs, `member-<N>.log`). Dropping
/// it kills every member, whatever path led there (an error, Ctrl-C).
pub struct EtcdCluster {
    exe: PathBuf,
    dir: PathBuf,
    members: Vec<Member>,
}

impl EtcdCluster {
    pub fn new(exe: &Path, dir: PathBuf) -> Self {
        EtcdCluster {
            exe: exe.to_path_buf(),
            dir,
            members: Vec::new(),
        }
    }

    /// Starts `size` members as one new cluster and returns the leader's client URL once every
    /// member is healthy and names the same leader.
    pub async fn start(&mut self, http: &reqwest::Client, size: usize) -> anyhow::Result<String> {
        std::fs::create_dir(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let ports = free_ports(2 * size)?;
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster = (0..size)
            .map(|i| format!("m{}={}", i + 1, peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per run: a stray member of another run can never join this cluster.
        let token = format!("raftlite-bench-{}-{size}", std::process::id());
        for i in 0..size {
            let name = format!("m{}", i + 1);
            let url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let log = self.dir.join(format!("member-{}.log", i + 1));
            let mut cmd = Command::new(&self.exe);
            cmd.args(["--name", &name])
                .arg("--data-dir")
                .arg(self.dir.join(&name))
                .args(["--listen-client-urls", &url])
                .args(["--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token]);
            clean_etcd_env(&mut cmd);
            let child = logged(cmd, &log)?.spawn().with_context(|| {
                format!("cannot start etcd member {name} ({})", self.exe.display())
            })?;
            self.members.push(Member {
                name,
                url,
                log,
                child: ChildGuard(child),
            });
        }
        let urls: Vec<String> = self.members.iter().map(|m| m.url.clone()).collect();
        let what = format!("all {size} etcd members to be healthy and agree on a leader");
        let members = &mut self.members;
        poll_until(
            &what,
            || leader_url(http, &urls),
            || {
                members.iter_mut().find_map(|m| match m.child.0.try_wait() {
                    Ok(Some(status)) => Some(format!("etcd member {} exited ({status})", m.name)),
                    _ => None,
                })
            },
        )
        .await
    }

    pub fn print_log_tails(&self) {
        for m in &self.members {
            eprintln!("--- last lines of {} ---", m.log.display());
            let tail = log_tail(&m.log, 20);
            if !tail.is_empty() {
                eprintln!("{tail}");
            }
        }
    }
}

/// ETCD_* settings from the caller's environment would change the configuration measured (and
/// etcd refuses a setting given both as a flag and in its environment). ETCD_UNSUPPORTED_ARCH
/// stays: without it etcd 3.4 does not start at all on some architectures.
fn clean_etcd_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("ETCD_") && name != "ETCD_UNSUPPORTED_ARCH" {
            cmd.env_remove(&key);
        }
    }
}

/// Every member healthy and naming the same leader; returns the leader's client URL.
async fn leader_url(http: &reqwest::Client, urls: &[String]) -> Result<String, String> {
    let mut leaders = Vec::new();
    for url in urls {
        let health = send_json(http.get(format!("{url}/health")))
            .await
            .map_err(|e| format!("GET {url}/health: {e:#}"))?;
        if health.get("health").and_then(Value::as_str) != Some("true") {
            return Err(format!("{url} is not healthy yet: {health}"));
        }
        let status = send_json(
            http.post(format!("{url}/v3/maintenance/status"))
                .json(&json!({})),
        )
        .await
        .map_err(|e| format!("POST {url}/v3/maintenance/status: {e:#}"))?;
        let (member, leader) = parse_status(&status)?;
        leaders.push((url, member, leader));
    }
    let Some((_, _, leader)) = leaders.first() else {
        return Err("no members".into());
    };
    if let Some((url, _, other)) = leaders.iter().find(|(_, _, l)| l != leader) {
        return Err(format!("{url} names leader {other}, not {leader}"));
    }
    leaders
        .iter()
        .find(|(_, member, _)| member == leader)
        .map(|(url, _, _)| url.to_string())
        .ok_or_else(|| format!("leader {leader} is none of the members started"))
}

/// A member's ID and its leader's, from `POST /v3/maintenance/status`; the gateway gives
/// 64-bit IDs as strings, and a member without a leader says 0 or nothing.
fn parse_status(doc: &Value) -> Result<(String, String), String> {
    if let Some(err) = doc.get("error") {
        return Err(format!("status failed: {err}"));
    }
    let member = doc
        .pointer("/header/member_id")
        .and_then(id_text)
        .ok_or_else(|| format!("no header.member_id in {doc}"))?;
    match doc.get("leader").and_then(id_text) {
        Some(leader) if leader != "0" => Ok((member, leader)),
        _ => Err(format!("member {member} has no leader yet")),
    }
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A put of a key of its own (`raftlite-bench/<run>/<client>/<seq>`) with a value the size of
/// raftlite's inserted one, through `POST /v3/kv/put` (base64 key and value in JSON).
#[derive(Clone)]
pub struct EtcdPut {
    http: reqwest::Client,
    url: String,
    key_prefix: String,
    value: String,
}

impl EtcdPut {
    pub fn new(http: &reqwest::Client, member: &str, run: usize) -> Self {
        EtcdPut {
            http: http.clone(),
            url: format!("{member}/v3/kv/put"),
            key_prefix: format!("{KEY_PREFIX}{run}/"),
            value: base64(VALUE.as_bytes()),
        }
    }

    fn body(&self, client: usize, seq: u64) -> String {
        let key = format!("{}{client}/{seq}", self.key_prefix);
        json!({"key": base64(key.as_bytes()), "value": self.value}).to_string()
    }
}

impl WriteOp for EtcdPut {
    async fn send(&self, client: usize, seq: u64) -> Result<(), String> {
        let resp = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body(client, seq))
            .send()
            .await
            .map_err(|e| format!("request error: {e}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("HTTP {status}, unreadable body: {e}"))?;
        put_outcome(status.as_u16(), &text)
    }
}

/// `Ok` for an acknowledged put: HTTP 200 with a response header carrying the new revision.
/// A failure is described by its status and etcd's error text (the report counts by kind).
fn put_outcome(status: u16, body: &str) -> Result<(), String> {
    let doc: Option<Value> = serde_json::from_str(body).ok();
    let error = doc.as_ref().and_then(|d| d.get("error")).map(|e| match e {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if !(200..300).contains(&status) {
        return Err(match error {
            Some(e) => format!("HTTP {status}: {e}"),
            None => format!("HTTP {status}"),
        });
    }
    let Some(doc) = doc else {
        return Err(format!("HTTP {status}, not JSON"));
    };
    if let Some(e) = error {
        return Err(format!("error in response: {e}"));
    }
    match doc.pointer("/header/revision") {
        Some(_) => Ok(()),
        None => Err("no revision in the response".into()),
    }
}

/// How many keys the bench's writes left, by a linearizable `count_only` range over
/// [`KEY_PREFIX`]: it reflects every acknowledged put.
pub async fn count_keys(http: &reqwest::Client, member: &str) -> anyhow::Result<u64> {
    let url = format!("{member}/v3/kv/range");
    let body = json!({
        "key": base64(KEY_PREFIX.as_bytes()),
        "range_end": base64(&prefix_end(KEY_PREFIX.as_bytes())),
        "count_only": true,
    });
    let doc = send_json(http.post(&url).json(&body))
        .await
        .with_context(|| format!("POST {url}"))?;
    parse_count(&doc).with_context(|| format!("POST {url}"))
}

/// The `count` of a range response: a string (64-bit integers are strings in the gateway's
/// JSON), left out when 0.
fn parse_count(doc: &Value) -> anyhow::Result<u64> {
    if let Some(err) = doc.get("error") {
        bail!("range failed: {err}");
    }
    if doc.get("header").is_none() {
        bail!("not a range response: {doc}");
    }
    match doc.get("count") {
        None => Ok(0),
        Some(Value::String(s)) => s
            .parse()
            .with_context(|| format!("count {s:?} is not a number")),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| anyhow!("count {v} is not a number")),
    }
}

/// The end of the range of keys starting with `prefix` (etcd's `range_end`): the prefix with
/// its last byte that can grow grown by one; all 0xff bytes mean "to the end" (`\0`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Standard base64 with padding, as etcd's JSON wants bytes (the bench needs no decoder).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Starts an etcd cluster of `size` members and measures every client count on it, as
/// raftlite's clusters are measured.
pub async fn measure_cluster(
    cluster: &mut EtcdCluster,
    http: &reqwest::Client,
    size: usize,
    clients: &[usize],
    duration: Duration,
) -> anyhow::Result<Vec<Measured>> {
    let leader = cluster.start(http, size).await?;
    let label = format!("etcd {size}-node");
    let leader = leader.as_str();
    measure_runs(
        &label,
        clients,
        duration,
        |run| EtcdPut::new(http, leader, run),
        move || count_keys(http, leader),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn prefix_ranges_end_past_every_key_under_them() {
        assert_eq!(prefix_end(b"raftlite-bench/"), b"raftlite-bench0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn each_put_has_a_key_of_its_own_and_the_bench_value() {
        let http = reqwest::Client::new();
        let op = EtcdPut::new(&http, "http://127.0.0.1:1", 2);
        assert_eq!(op.url, "http://127.0.0.1:1/v3/kv/put");
        let doc: Value = serde_json::from_str(&op.body(5, 7)).unwrap();
        assert_eq!(doc["key"], base64(b"raftlite-bench/2/5/7"));
        assert_eq!(doc["value"], base64(VALUE.as_bytes()));
        assert_ne!(op.body(5, 7), op.body(5, 8));
        assert_ne!(op.body(5, 7), op.body(4, 7));
    }

    #[test]
    fn put_responses_are_acknowledged_only_with_a_revision() {
        let ok = r#"{"header":{"cluster_id":"1","member_id":"2","revision":"7","raft_term":"2"}}"#;
        assert_eq!(put_outcome(200, ok), Ok(()));
        let timeout = r#"{"error":"etcdserver: request timed out","message":"etcdserver: request timed out","code":14}"#;
        assert_eq!(
            put_outcome(503, timeout),
            Err("HTTP 503: etcdserver: request timed out".into())
        );
        assert_eq!(put_outcome(502, "bad gateway"), Err("HTTP 502".into()));
        assert_eq!(
            put_outcome(200, r#"{"error":"boom"}"#),
            Err("error in response: boom".into())
        );
        assert!(put_outcome(200, "{}").is_err());
        assert!(put_outcome(200, "").is_err());
    }

    #[test]
    fn range_counts_are_strings_and_absent_when_zero() {
        let header = json!({"cluster_id": "1", "member_id": "2", "revision": "9"});
        assert_eq!(
            parse_count(&json!({"header": header, "count": "1234"})).unwrap(),
            1234
        );
        assert_eq!(
            parse_count(&json!({"header": header, "count": 5})).unwrap(),
            5
        );
        assert_eq!(parse_count(&json!({"header": header})).unwrap(), 0);
        assert!(parse_count(&json!({"header": header, "count": "x"})).is_err());
        assert!(parse_count(&json!({"error": "no leader", "code": 14})).is_err());
        assert!(parse_count(&json!({})).is_err());
    }

    #[test]
    fn status_names_the_member_and_its_leader() {
        let doc = json!({
            "header": {"cluster_id": "1", "member_id": "13668033151171901709"},
            "version": "3.4.23",
            "leader": "13668033151171901709",
        });
        assert_eq!(
            parse_status(&doc).unwrap(),
            (
                "13668033151171901709".to_owned(),
                "13668033151171901709".to_owned()
            )
        );
        let no_leader = json!({"header": {"member_id": "5"}, "leader": "0"});
        assert!(parse_status(&no_leader).is_err());
        assert!(parse_status(&json!({"header": {"member_id": "5"}})).is_err());
        assert!(parse_status(&json!({"leader": "5"})).is_err());
    }

    #[test]
    fn the_version_line_is_found() {
        let text = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n";
        assert_eq!(parse_version(text).as_deref(), Some("3.4.23"));
        assert_eq!(parse_version("etcdctl version: 3.5.0\n"), None);
        assert_eq!(parse_version("etcd Version:\n"), None);
    }

    #[test]
    fn no_etcd_is_a_skip_that_says_how_to_get_it() {
        let Choice::Skip(why) = choose(None, false, None).unwrap() else {
            panic!("expected a skip");
        };
        assert!(why.contains("etcd-server"), "{why}");
        assert!(why.contains("--etcd-bin"), "{why}");

        let found = PathBuf::from("/usr/bin/etcd");
        assert_eq!(
            choose(None, false, Some(found.clone())).unwrap(),
            Choice::Use {
                bin: found.clone(),
                explicit: false
            }
        );
        assert!(matches!(
            choose(None, true, Some(found.clone())).unwrap(),
            Choice::Skip(why) if why.contains("--no-etcd")
        ));
        // Asked for by path, so a missing file is an error rather than a silent skip.
        let err = choose(Some(Path::new("/nonexistent/etcd")), false, Some(found))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--etcd-bin"), "{err}");
        assert!(err.contains("--no-etcd"), "{err}");
        let me = std::env::current_exe().unwrap();
        assert_eq!(
            choose(Some(&me), false, None).unwrap(),
            Choice::Use {
                bin: me,
                explicit: true
            }
        );
    }
}
