//! The files in `deploy/` and the auto-backup example in README.md, run the way a container or
//! systemd would run them, minus Docker and systemd (neither exists where tests run): the
//! built binary is started with the Dockerfile's runtime environment and command, with the
//! example TOML config, and with README's rqlite auto-backup file.
//!
//! Paths and addresses that only make sense inside a container or on a server (`/data`,
//! `0.0.0.0:4001`, `10.0.0.x`) are mapped onto a temp dir and free 127.0.0.1 ports; everything
//! else is taken from the files as written, so a broken example breaks this test.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{execute_at, free_port, http_get, tail};
use serde_json::{json, Value};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A 2 s schedule must have produced a backup well within this.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(20);

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// A raftlite process, killed when dropped
// ---------------------------------------------------------------------------------------------

struct Server {
    child: Child,
    log: PathBuf,
    name: &'static str,
}

impl Server {
    /// Starts `raftlite ARGS...` with a clean environment (no inherited `RAFTLITE_*` or
    /// `AWS_*`: only `envs`), output to `<log_dir>/<name>.log`.
    fn start(
        name: &'static str,
        log_dir: &Path,
        args: &[String],
        envs: &[(String, String)],
        cwd: Option<&Path>,
    ) -> Server {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create the server log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftlite"));
        cmd.args(args);
        common::clear_inherited_settings(&mut cmd);
        cmd.envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().expect("spawn raftlite");
        Server { child, log, name }
    }

    fn log_tail(&self) -> String {
        format!("--- {} log ---\n{}", self.name, tail(&self.log, 60))
    }

    /// Polls `url` until it answers 200, as a health check would; panics with the log tail if
    /// the process exits or the deadline passes.
    fn wait_healthy(&mut self, url: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before it was ready\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok((200, _)) = http_get(url) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("{url} not 200 after {READY_TIMEOUT:?}\n{}", self.log_tail());
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        self.kill();
    }
}

fn status(http: &str) -> Value {
    let (code, body) = http_get(&format!("http://{http}/status")).expect("GET /status");
    assert_eq!(code, 200, "/status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// Ids that `raftlite backup list --from DEST --json` lists.
fn listed_ids(dest: &str) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftlite"));
    cmd.args(["backup", "list", "--from", dest, "--json"]);
    common::clear_inherited_settings(&mut cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run raftlite backup list");
    assert!(
        out.status.success(),
        "backup list failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    listed
        .as_array()
        .expect("list --json is an array")
        .iter()
        .map(|m| m["id"].as_str().expect("listed id").to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile's runtime stage
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RuntimeStage {
    env: Vec<(String, String)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: String,
    volumes: Vec<String>,
    expose: Vec<String>,
    user: Option<String>,
    workdir: Option<String>,
}

/// Instructions of the last stage (the image that runs), continuation lines joined.
fn runtime_stage(dockerfile: &str) -> RuntimeStage {
    let mut instructions: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|i| i.to_ascii_uppercase().starts_with("FROM "))
        .expect("the Dockerfile has a FROM");
    let mut stage = RuntimeStage::default();
    for instruction in &instructions[last_from + 1..] {
        let (word, rest) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction, ""));
        let rest = rest.trim();
        match word.to_ascii_uppercase().as_str() {
            "ENV" => stage.env.extend(env_pairs(rest)),
            "ENTRYPOINT" => stage.entrypoint = exec_form(rest),
            "CMD" => stage.cmd = exec_form(rest),
            "HEALTHCHECK" => stage.healthcheck = rest.to_owned(),
            "VOLUME" => stage.volumes.extend(words_or_json(rest)),
            "EXPOSE" => stage
                .expose
                .extend(rest.split_whitespace().map(str::to_owned)),
            "USER" => stage.user = Some(rest.to_owned()),
            "WORKDIR" => stage.workdir = Some(rest.to_owned()),
            _ => {}
        }
    }
    stage
}

/// `ENV K=V K2="V 2"` or the old `ENV K V`.
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (key, value) = rest.split_once(char::is_whitespace).expect("ENV KEY VALUE");
        return vec![(key.to_owned(), value.trim().to_owned())];
    }
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return pairs;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            value.extend(chars.by_ref().take_while(|c| *c != '"'));
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push((key, value));
    }
}

fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("not the exec (JSON) form ({e}): {rest}"))
}

fn words_or_json(rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|_| rest.split_whitespace().map(str::to_owned).collect())
}

fn env_value<'a>(stage: &'a RuntimeStage, key: &str) -> &'a str {
    stage
        .env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the Dockerfile sets no {key}: {stage:?}"))
}

/// Port of a `HOST:PORT` address or an `http://HOST:PORT/...` URL.
fn port_of(addr: &str) -> &str {
    let after_scheme = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let host_port = after_scheme.split('/').next().unwrap_or("");
    host_port.rsplit_once(':').map_or("", |(_, port)| port)
}

#[test]
fn dockerfile_runtime_stage_serves_and_schedules_backups() {
    let stage = runtime_stage(&read("deploy/Dockerfile"));
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-deploy-")
        .tempdir()
        .unwrap();

    // What the image promises, checked on the file itself.
    let user = stage.user.as_deref().expect("the image sets USER");
    assert!(
        !matches!(user, "root" | "0" | "0:0"),
        "the image runs as root: {user}"
    );
    let http_env = env_value(&stage, "RAFTLITE_HTTP_ADDR");
    let raft_env = env_value(&stage, "RAFTLITE_RAFT_ADDR");
    let data_env = env_value(&stage, "RAFTLITE_DATA_DIR");
    for addr in [http_env, raft_env] {
        assert!(
            addr.starts_with("0.0.0.0:"),
            "{addr}: reachable from outside the container"
        );
        assert!(
            stage.expose.iter().any(|p| p == port_of(addr)),
            "{addr} is not EXPOSEd: {:?}",
            stage.expose
        );
    }
    let volume = stage
        .volumes
        .first()
        .expect("the image declares a VOLUME")
        .clone();
    let data_parent = Path::new(data_env)
        .parent()
        .expect("the data dir has a parent");
    assert!(
        data_parent.starts_with(&volume),
        "the default backup dir ({}/raftlite-backups) must be on the volume {volume}",
        data_parent.display()
    );
    let health_url = stage
        .healthcheck
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in HEALTHCHECK: {}", stage.healthcheck));
    assert!(health_url.starts_with("http://127.0.0.1:"), "{health_url}");
    assert_eq!(
        port_of(health_url),
        port_of(http_env),
        "the health check asks the API port"
    );
    let after_scheme = &health_url["http://".len()..];
    let health_path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    assert_eq!(health_path, "/readyz", "{health_url}");
    assert_eq!(
        stage.entrypoint.first().map(String::as_str),
        Some("raftlite")
    );

    // The container's paths under the temp dir, its listeners on free local ports.
    let on_host = |container_path: &str| -> PathBuf {
        let relative = container_path.trim_start_matches('/');
        tmp.path().join(relative)
    };
    let http = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    let backups = tmp.path().join("b");
    let mut envs: Vec<(String, String)> = stage
        .env
        .iter()
        .map(|(key, value)| {
            let value = match key.as_str() {
                "RAFTLITE_DATA_DIR" => on_host(value).display().to_string(),
                "RAFTLITE_HTTP_ADDR" => http.clone(),
                "RAFTLITE_RAFT_ADDR" => raft.clone(),
                _ => value.clone(),
            };
            (key.clone(), value)
        })
        .collect();
    envs.push((
        "RAFTLITE_BACKUP_TO".into(),
        format!("file://{}", backups.display()),
    ));
    envs.push(("RAFTLITE_BACKUP_INTERVAL".into(), "2s".into()));
    let workdir = stage.workdir.as_deref().map(on_host);
    if let Some(dir) = &workdir {
        std::fs::create_dir_all(dir).unwrap();
    }
    let args: Vec<String> = stage.entrypoint[1..]
        .iter()
        .chain(&stage.cmd)
        .cloned()
        .collect();

    let mut server = Server::start("docker", tmp.path(), &args, &envs, workdir.as_deref());
    server.wait_healthy(&format!("http://{http}{health_path}"));
    assert!(
        on_host(data_env).join("db.sqlite").is_file(),
        "the data dir is RAFTLITE_DATA_DIR"
    );

    let status = status(&http);
    let schedule = status["backup"]["schedule"].as_str().unwrap_or_default();
    assert!(
        schedule.contains("every 2s"),
        "/status backup.schedule should show the 2 s schedule: {}",
        status["backup"]
    );
    assert_eq!(
        status["backup"]["destination"].as_str(),
        Some(format!("file://{}", backups.display()).as_str()),
        "{}",
        status["backup"]
    );
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// The example TOML config
// ---------------------------------------------------------------------------------------------

#[test]
fn example_config_starts_with_machine_specific_values_overridden() {
    let tmp = tempfile::Builder::new()
        .prefix("raftlite-deploy-")
        .tempdir()
        .unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    let config = repo_file("deploy/raftlite.toml").display().to_string();
    let data_dir = tmp.path().join("data").display().to_string();
    let mut args: Vec<String> = [
        "serve",
        "--config",
        &config,
        "--data-dir",
        &data_dir,
        "--http-addr",
        &http,
        "--raft-addr",
        &raft,
        "--http-advertise-addr",
        &http,
        "--raft-advertise-addr",
        &raft,
        // The file joins other members; empty = none, so this lone node bootstraps.
        "--join=",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // As asked: backups off.
    let mut off = args.clone();
    off.extend(["--backup-to".to_owned(), "off".to_owned()]);
    let mut server = Server::start("toml-off", tmp.path(), &off, &[], None);
    server.wait_healthy(&format!("http://{http}/readyz"));
    assert_eq!(status(&http)["backup"]["schedule"], "off");
    server.stop();

    // With backups on, the file's [backup] settings (interval, retention, drills, level) must
    // be accepted as written; the same data dir and flags restart cleanly.
    let backups = tmp.path().join("b");
    args.extend([
        "--backup-to".to_owned(),
        format!("file://{}", backups.display()),
    ]);
    let mut server = Server::start("toml-on", tmp.path(), &args, &[], None);
    server.wait_healthy(&format!("http://{http}/readyz"));
    let status = status(&http);
    assert!(
        status["backup"]["schedule"]
            .as_str()
            .unwrap_or_default()
            .contains("every 1h"),
        "{}",
        status["backup"]
    );
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// README's rqlite auto-backup example
// ---------------------------------------------------------------------------------------------

/// The ```json blocks of README.md's "Moving from rqlite's auto-backup" section.
fn readme_auto_backup_examples() -> Vec<Value> {
    let readme = read("README.md");
    let start = readme
        .find("## Moving from rqlite's auto-backup")
        .expect("README.md has a \"Moving from rqlite's auto-backup\" section");
    let section = &readme[start..];
    let section = match section[3..].find("\n## ") {
        Some(end) => &section[..end + 3],
        None => section,
    };
    section
        .split("```json")
        .skip(1)
        .map(|block| {
            let body = block.split("```").next().unwrap_or_default();
            serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("README auto-backup example is not JSON ({e}):{body}"))
        })
        .collect()
}

#[test]
fn readme_auto_backup_example_takes_backups() {
    let examples = readme_auto_backup_examples();
    assert!(
        examples.iter().any(|e| e["type"] == "s3"),
        "README shows rqlite's S3 example"
    );
    let mut example = examples
        .into_iter()
        .find(|e| e["type"] == "file")
        .expect("README shows a `\"type\": \"file\"` example");

    let tmp = tempfile::Builder::new()
        .prefix("raftlite-deploy-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("rqlite-backups");
    example["interval"] = json!("2s");
    example["sub"]["dir"] = json!(dir.display().to_string());
    let file = tmp.path().join("auto-backup.json");
    std::fs::write(&file, example.to_string()).unwrap();

    let http = format!("127.0.0.1:{}", free_port());
    let raft = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "serve",
        "--data-dir",
        &tmp.path().join("data").display().to_string(),
        "--http-addr",
        &http,
        "--raft-addr",
        &raft,
        "--auto-backup",
        &file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut server = Server::start("auto-backup", tmp.path(), &args, &[], None);
    server.wait_healthy(&format!("http://{http}/readyz"));
    let wrote = execute_at(
        &format!("http://{http}"),
        &json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
            ["INSERT INTO t(v) VALUES(?)", "x"]
        ]),
    );
    assert!(wrote.is_ok(), "{wrote:?}");

    let dest = format!("file://{}", dir.display());
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    loop {
        if !listed_ids(&dest).is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "no backup in {dest} after {BACKUP_TIMEOUT:?}; /status backup: {}",
                status(&http)["backup"]
            );
        }
        sleep(Duration::from_millis(250));
    }
    server.stop();
}

#[test]
fn readme_shows_the_compose_file_as_it_is() {
    let compose = read("deploy/docker-compose.yml");
    // README leaves out the file's opening comment block and explains it in prose instead.
    let body: String = compose
        .lines()
        .skip_while(|l| l.starts_with('#') || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let readme = read("README.md");
    assert!(
        readme.contains(&format!("```yaml\n{body}```")),
        "README.md's compose block differs from deploy/docker-compose.yml"
    );
    for node in ["node2", "node3"] {
        let service = compose
            .split(&format!("\n  {node}:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no service {node}"));
        let service = service.split("\n\n").next().unwrap_or_default();
        assert!(
            service.contains("\"--join\", \"http://node1:4001\""),
            "{node} joins node1"
        );
        assert!(service.contains(&format!("RAFTLITE_HTTP_ADVERTISE_ADDR: {node}:4001")));
        assert!(
            service.contains(&format!("- {node}:/data")),
            "{node} has its own volume"
        );
    }
}
