//! Local clusters of `raftlite serve` processes on loopback, and which binary they run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::http::get_json;
use crate::tools::{log_tail, logged};
use crate::waits::poll_until;

/// The server binary to measure: `given` (`--server-bin`), else the `raftlite` executable
/// beside this one (cargo builds both into the same target directory).
pub fn server_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => {
            let me = std::env::current_exe().context("cannot locate the raftlite-bench binary")?;
            let name = format!("raftlite{}", std::env::consts::EXE_SUFFIX);
            match me.parent() {
                Some(dir) => dir.join(name),
                None => bail!(
                    "no directory around {}; give the server binary with --server-bin PATH \
                     (or RAFTLITE_BENCH_SERVER_BIN)",
                    me.display()
                ),
            }
        }
    };
    if !path.is_file() {
        bail!(
            "no raftlite server binary at {}: build it (`cargo build --release --workspace`) or \
             give one with --server-bin PATH (or RAFTLITE_BENCH_SERVER_BIN)",
            path.display()
        );
    }
    absolute(&path)
}

/// The `--compare-bin` binary, checked like [`server_bin`].
pub fn compare_bin(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!("--compare-bin {}: no such file", path.display());
    }
    absolute(path)
}

/// Nodes are started with other working directories' paths in mind: no relative binary path.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// A node process, killed when its [`Cluster`] is dropped.
pub struct Node {
    pub id: u64,
    pub url: String,
    log: PathBuf,
    child: Child,
    http_port: u16,
    raft_port: u16,
    join: Option<String>,
}

/// The nodes of one cluster under `dir` (`n<ID>/` data dirs and `node-<ID>.log` files). Dropping
/// it kills every node, whatever path led there.
pub struct Cluster {
    /// The `raftlite` binary every node runs.
    exe: PathBuf,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    /// Extra `serve` flags given to every node started (or restarted) from now on.
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// A cluster (not started) of `exe` processes under `dir`, each given `extra_args`.
    pub fn new(exe: &Path, dir: PathBuf, extra_args: Vec<String>) -> Self {
        Cluster {
            exe: exe.to_path_buf(),
            dir,
            nodes: Vec::new(),
            extra_args,
        }
    }

    /// Starts `size` nodes and returns the leader's URL once it lists all of them as voters.
    pub async fn start(&mut self, http: &reqwest::Client, size: usize) -> anyhow::Result<String> {
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
        let log_path = self.dir.join(format!("node-{id}.log"));
        let child = self.launch(id, http_port, raft_port, join.as_deref(), &log_path)?;
        self.nodes.push(Node {
            id,
            url: format!("http://127.0.0.1:{http_port}"),
            log: log_path,
            child,
            http_port,
            raft_port,
            join,
        });
        Ok(())
    }

    /// Starts `raftlite serve` for node `id`, appending its output to `log_path`.
    fn launch(
        &self,
        id: u64,
        http_port: u16,
        raft_port: u16,
        join: Option<&str>,
        log_path: &Path,
    ) -> anyhow::Result<Child> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(format!("n{id}")))
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--raft-addr", &format!("127.0.0.1:{raft_port}")])
            .args(&self.extra_args);
        if let Some(url) = join {
            cmd.args(["--join", url]);
        }
        clean_env(&mut cmd);
        // Appending: a restarted node's log follows its first run's.
        logged(cmd, log_path)?
            .spawn()
            .with_context(|| format!("cannot start node {id} ({})", self.exe.display()))
    }

    /// Kills the node at `index` and starts it again, with the same data dir and ports and the
    /// current `extra_args`; returns once it answers `/readyz`.
    pub async fn restart(&mut self, http: &reqwest::Client, index: usize) -> anyhow::Result<()> {
        let Some(node) = self.nodes.get_mut(index) else {
            bail!("no node at position {index}");
        };
        let _ = node.child.kill();
        node.child
            .wait()
            .with_context(|| format!("cannot reap node {}", node.id))?;
        let (id, http_port, raft_port) = (node.id, node.http_port, node.raft_port);
        let (join, log) = (node.join.clone(), node.log.clone());
        let child = self.launch(id, http_port, raft_port, join.as_deref(), &log)?;
        if let Some(node) = self.nodes.get_mut(index) {
            node.child = child;
        }
        self.wait_ready(http, index).await
    }

    /// The process id of the node at `index`.
    pub fn pid(&self, index: usize) -> anyhow::Result<u32> {
        self.nodes
            .get(index)
            .map(|n| n.child.id())
            .ok_or_else(|| anyhow!("no node at position {index}"))
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

    /// Polls `check` until it succeeds, failing early if a node exits and after
    /// [`DEADLINE`](crate::waits::DEADLINE).
    pub async fn wait_for<T, F, Fut>(&mut self, what: &str, check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let nodes = &mut self.nodes;
        poll_until(what, check, || {
            nodes
                .iter_mut()
                .find_map(|node| match node.child.try_wait() {
                    Ok(Some(status)) => Some(format!("node {} exited ({status})", node.id)),
                    _ => None,
                })
        })
        .await
    }

    pub fn print_log_tails(&self) {
        for node in &self.nodes {
            eprintln!("--- last lines of {} ---", node.log.display());
            let tail = log_tail(&node.log, 20);
            if !tail.is_empty() {
                eprintln!("{tail}");
            }
        }
    }
}

/// RAFTLITE_* settings from the caller's environment would make the figures irreproducible; the
/// logs go to files that are read, not to a terminal: no colour escapes.
pub fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RAFTLITE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
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
        .pointer("/api_addr")
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
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot allocate a loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_server_binary_names_the_flag() {
        let err = server_bin(Some(Path::new("/nonexistent/raftlite")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--server-bin"), "{err}");
        assert!(err.contains("RAFTLITE_BENCH_SERVER_BIN"), "{err}");
        let err = compare_bin(Path::new("/nonexistent/old")).unwrap_err();
        assert!(err.to_string().contains("--compare-bin"), "{err}");
    }
}
