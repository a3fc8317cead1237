//! `raftlite backup create|list|verify` as a user runs it: real `raftlite serve` processes, the
//! CLI as a child process, destinations on a local directory (`file://`) and on an in-process
//! S3-compatible server (`S3TestServer`, reached through the standard `AWS_*` variables).
//!
//! Covered: a backup taken while a writer keeps inserting (its row count lies between the counts
//! before and after), age encryption to a recipient and with a passphrase (right key, wrong key,
//! no key), S3, corruption of the stored object (truncated, one byte flipped), destinations that
//! are down or bogus (clean failure, destination named, no secret shown, nothing listed), and a
//! `kill -9` in the middle of an upload (no complete backup appears).
//!
//! Every child process has a deadline, and cloud retries are bounded through
//! `RAFTLITE_BACKUP_MAX_RETRIES` / `RAFTLITE_BACKUP_RETRY_TIMEOUT_SECS`, so nothing hangs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use age::secrecy::ExposeSecret;
use common::{check_results, execute_at, free_port, run_to_completion, wait_for, Cluster, Run};
use raftlite_backup::{download_backup, BackupId, Destination, Identity};
use raftlite_testkit::S3TestServer;
use serde_json::{json, Value};

/// A CLI run never takes longer than this; past it the process is killed and the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
const S3_SECRET: &str = raftlite_testkit::SECRET_KEY;

// ---------------------------------------------------------------------------------------------
// Running `raftlite backup ...`
// ---------------------------------------------------------------------------------------------

/// Where and with what environment the CLI runs: a private TMPDIR (to check that temporary
/// copies are removed), no inherited `AWS_*`/`RAFTLITE_*` settings, short cloud retries.
struct Cli {
    tmpdir: PathBuf,
    envs: Vec<(String, String)>,
}

impl Cli {
    fn new(dir: &Path) -> Cli {
        let tmpdir = dir.join("cli-tmp");
        std::fs::create_dir_all(&tmpdir).expect("create the CLI's TMPDIR");
        Cli {
            tmpdir,
            envs: vec![
                ("RAFTLITE_BACKUP_MAX_RETRIES".into(), "2".into()),
                ("RAFTLITE_BACKUP_RETRY_TIMEOUT_SECS".into(), "3".into()),
            ],
        }
    }

    fn with_envs(mut self, envs: &[(String, String)]) -> Cli {
        self.envs.extend(envs.iter().cloned());
        self
    }

    fn command(&self, args: &[&str], extra_envs: &[(&str, &str)]) -> Command {
        let mut cmd = common::cli_command();
        cmd.arg("backup")
            .args(args)
            .env("TMPDIR", &self.tmpdir)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_envs.iter().copied());
        cmd
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args, &[])
            .spawn()
            .expect("spawn raftlite backup")
    }

    /// Runs `raftlite backup ARGS...` to completion (killed past [`RUN_DEADLINE`]).
    fn run_env(&self, args: &[&str], extra_envs: &[(&str, &str)]) -> Run {
        let child = self
            .command(args, extra_envs)
            .spawn()
            .expect("spawn raftlite backup");
        finish(child, args)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Names in the CLI's TMPDIR (temporary copies left behind).
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(&self.tmpdir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Collects a child's output and status, killing it past the deadline.
fn finish(mut child: Child, args: &[&str]) -> Run {
    let run = run_to_completion(&mut child, RUN_DEADLINE);
    assert!(
        !run.timed_out,
        "raftlite backup {args:?} did not finish within {RUN_DEADLINE:?}"
    );
    run
}

// ---------------------------------------------------------------------------------------------
// Data, destinations, downloads
// ---------------------------------------------------------------------------------------------

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn exec(base: &str, body: Value) {
    let resp = execute_at(base, &body).unwrap_or_else(|e| panic!("execute {body}: {e}"));
    check_results(&resp).unwrap_or_else(|e| panic!("execute {body}: {e}"));
}

/// `CREATE TABLE t` and `rows` rows of about 100 bytes.
fn load_rows(base: &str, rows: u64) {
    exec(
        base,
        json!([
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)",
            format!(
                "INSERT INTO t(v) SELECT hex(randomblob(50)) FROM (WITH RECURSIVE c(x) AS \
                 (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows}) SELECT x FROM c)"
            )
        ]),
    );
}

/// About `mib` MiB of incompressible rows in table `big`, 8 MiB per request.
fn load_mib(base: &str, mib: u64) {
    exec(
        base,
        json!(["CREATE TABLE IF NOT EXISTS big (id INTEGER PRIMARY KEY, b BLOB)"]),
    );
    let mut left = mib;
    while left > 0 {
        let now = left.min(8);
        exec(
            base,
            json!([format!(
                "INSERT INTO big(b) SELECT randomblob(16384) FROM (WITH RECURSIVE c(x) AS \
                 (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {}) SELECT x FROM c)",
                now * 64
            )]),
        );
        left -= now;
    }
}

fn count(c: &Cluster) -> i64 {
    c.count_rows(0, "t")
}

/// Keeps inserting single rows into `t` until stopped; counts the acknowledged ones.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(base: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, acked) = (stop.clone(), acked.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(90);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let body = json!([["INSERT INTO t(v) VALUES(?)", "live"]]);
                    if execute_at(&base, &body)
                        .ok()
                        .filter(|r| check_results(r).is_ok())
                        .is_some()
                    {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    sleep(Duration::from_millis(2));
                }
            })
        };
        Writer {
            stop,
            acked,
            handle: Some(handle),
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.acked()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The in-process view of an S3 destination (the same server the CLI uses).
fn s3_destination(s3: &S3TestServer, prefix: &str) -> Destination {
    let mut options: Vec<(String, String)> = s3
        .object_store_options()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    options.push(("max_retries".into(), "1".into()));
    options.push(("retry_timeout_secs".into(), "3".into()));
    Destination::parse_with_options(&format!("s3://{}/{prefix}", s3.bucket()), options)
        .expect("S3 destination")
}

/// Downloads (every check included) backup `id` and counts the rows of table `t` in it.
fn rows_in_backup(dest: &Destination, id: &str, identity: Option<&Identity>, dir: &Path) -> i64 {
    let id: BackupId = id.parse().expect("a backup id");
    let target = dir.join(format!("restored-{}.sqlite", rand_suffix()));
    let report = runtime()
        .block_on(download_backup(dest, &id, identity, &target))
        .unwrap_or_else(|e| panic!("download backup {id}: {e}"));
    let applied = report
        .raftlite_meta
        .applied
        .expect("the backup records its applied position");
    assert_eq!(applied.index, report.manifest.log_index);
    let conn = rusqlite::Connection::open(&target).expect("open the restored database");
    let rows = conn
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .expect("count rows in the restored database");
    drop(conn);
    let _ = std::fs::remove_file(&target);
    rows
}

fn rand_suffix() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// `(cluster, set)` of a backup id.
fn split_id(id: &str) -> (&str, &str) {
    id.split_once('/')
        .unwrap_or_else(|| panic!("not a backup id: {id}"))
}

/// Path of `file` of backup `id` inside a file:// destination directory.
fn set_file(dir: &Path, id: &str, file: &str) -> PathBuf {
    let (cluster, set) = split_id(id);
    dir.join(cluster).join("backups").join(set).join(file)
}

/// Key of `file` of backup `id` under `prefix` in the S3 bucket.
fn set_key(prefix: &str, id: &str, file: &str) -> String {
    let (cluster, set) = split_id(id);
    format!("{prefix}/{cluster}/backups/{set}/{file}")
}

/// `backup create ... --json`: the new backup's id.
fn create_json(cli: &Cli, node: &str, to: &str, extra: &[&str]) -> (String, Value) {
    let mut args = vec!["create", "--node", node, "--to", to, "--json"];
    args.extend_from_slice(extra);
    let run = cli.run(&args).ok();
    let manifest = run.json();
    let id = manifest["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {manifest}"))
        .to_owned();
    (id, manifest)
}

/// Ids listed by `backup list --json`, in order.
fn listed_ids(cli: &Cli, from: &str) -> Vec<String> {
    let run = cli.run(&["list", "--from", from, "--json"]).ok();
    run.json()
        .as_array()
        .unwrap_or_else(|| panic!("list --json is not an array: {run:?}"))
        .iter()
        .map(|m| m["id"].as_str().expect("listed id").to_owned())
        .collect()
}

fn truncate_half(path: &Path) {
    let len = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.set_len(len / 2).expect("truncate");
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).expect("write the flipped object");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// (1) file://: a backup taken while a writer inserts; list shows it; verify passes; its rows
/// lie between the counts before and after; the temporary copy is gone.
#[test]
fn file_backup_while_writing_lists_verifies_and_restores() {
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    load_rows(&base, 3000);
    let dir = c.dir().join("backups");
    let dest = file_url(&dir);
    let cli = Cli::new(c.dir());

    let mut writer = Writer::start(base.clone());
    wait_for(
        || (writer.acked() >= 20).then_some(()),
        Duration::from_secs(20),
        "the writer to get going",
    );
    let before = count(&c);
    let run = cli.run(&["create", "--node", &base, "--to", &dest]).ok();
    let after = count(&c);
    let acked_during = writer.acked();
    writer.stop();
    assert!(
        after > before,
        "the writer kept inserting: {before} -> {after}"
    );
    assert!(acked_during > 20);

    // Human summary.
    let first_line = run.stdout.lines().next().unwrap_or_default().to_owned();
    let id = first_line
        .strip_prefix("backup created: ")
        .unwrap_or_else(|| panic!("no id line: {run:?}"))
        .trim()
        .to_owned();
    for want in [
        "timeline",
        "log index",
        "plain",
        "stored",
        "duration",
        &dest,
    ] {
        assert!(run.stdout.contains(want), "{want:?} missing: {run:?}");
    }
    assert!(
        cli.leftovers().is_empty(),
        "temporary copy left behind: {:?}",
        cli.leftovers()
    );
    assert!(set_file(&dir, &id, "manifest.json").is_file());
    assert!(set_file(&dir, &id, "db.sqlite.zst").is_file());

    // list: table and JSON.
    let list = cli.run(&["list", "--from", &dest]).ok();
    assert!(list.stdout.contains(&id), "{list:?}");
    assert!(list.stdout.contains("ENCRYPTED"), "{list:?}");
    assert!(list.stdout.contains("1 backup in"), "{list:?}");
    assert_eq!(listed_ids(&cli, &dest), vec![id.clone()]);

    // verify: the newest by default, and by id as JSON.
    let verify = cli.run(&["verify", "--from", &dest]).ok();
    assert!(
        verify.stdout.starts_with(&format!("OK      {id}")),
        "{verify:?}"
    );
    for check in [
        "stored object",
        "zstd frame",
        "integrity_check",
        "_raftlite_meta",
    ] {
        assert!(verify.stdout.contains(check), "{check} missing: {verify:?}");
    }
    let verify = cli
        .run(&["verify", "--from", &dest, "--id", &id, "--json"])
        .ok();
    let report = verify.json();
    assert_eq!(report[0]["ok"], true, "{verify:?}");
    assert_eq!(report[0]["id"], id.as_str());

    // The backup's content: a consistent point between before and after.
    let dest_handle = Destination::parse(&dest).expect("file destination");
    let rows = rows_in_backup(&dest_handle, &id, None, c.dir());
    assert!(
        (before..=after).contains(&rows),
        "backup has {rows} rows, outside [{before}, {after}]"
    );
}

/// (2) age: to an X25519 recipient and with a passphrase; the right key verifies, a wrong key
/// and no key fail naming the check; flags that contradict each other are refused.
#[test]
fn encrypted_backups_need_the_right_key() {
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    load_rows(&base, 500);
    let cli = Cli::new(c.dir());
    let keys_dir = c.dir().join("keys");
    std::fs::create_dir_all(&keys_dir).expect("keys dir");

    let key = age::x25519::Identity::generate();
    let recipient = key.to_public().to_string();
    let good = keys_dir.join("key.txt");
    std::fs::write(
        &good,
        format!(
            "# created: test\n# public key: {recipient}\n{}\n",
            key.to_string().expose_secret()
        ),
    )
    .expect("write identity");
    let other = age::x25519::Identity::generate();
    let wrong = keys_dir.join("wrong.txt");
    std::fs::write(&wrong, format!("{}\n", other.to_string().expose_secret()))
        .expect("write identity");

    // To a recipient.
    let dir = c.dir().join("enc-key");
    let dest = file_url(&dir);
    let (id, manifest) = create_json(&cli, &base, &dest, &["--recipient", &recipient]);
    assert_eq!(manifest["encryption"]["scheme"], "age-x25519", "{manifest}");
    let stored = std::fs::read(set_file(&dir, &id, "db.sqlite.zst.age")).expect("stored object");
    assert!(stored.starts_with(b"age-encryption.org/v1"));

    let list = cli.run(&["list", "--from", &dest]).ok();
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{list:?}"));
    // ... ENCRYPTED VERIFIED
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[columns.len() - 2], "yes", "{list:?}");

    let good_path = good.to_string_lossy().into_owned();
    let wrong_path = wrong.to_string_lossy().into_owned();
    let ok = cli
        .run(&["verify", "--from", &dest, "--identity", &good_path])
        .ok();
    assert!(ok.stdout.starts_with(&format!("OK      {id}")), "{ok:?}");
    assert!(ok.stdout.contains("decryption"), "{ok:?}");

    let bad = cli.run(&["verify", "--from", &dest, "--identity", &wrong_path]);
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stdout.contains(&format!(
            "FAILED  {id}: decryption (wrong key) check failed"
        )),
        "{bad:?}"
    );
    let none = cli.run(&["verify", "--from", &dest]);
    assert_eq!(none.code, Some(1), "{none:?}");
    assert!(
        none.stdout
            .contains(&format!("FAILED  {id}: decryption (identity required)")),
        "{none:?}"
    );
    let json = cli.run(&["verify", "--from", &dest, "--json"]);
    assert_eq!(json.code, Some(1), "{json:?}");
    assert_eq!(
        json.json()[0]["failed_check"],
        "decryption (identity required)"
    );
    let secret = key.to_string().expose_secret().to_owned();
    for run in [&ok, &bad, &none] {
        assert!(!run.all_output().contains(&secret), "{run:?}");
    }

    // With a passphrase, read from the variable the flag names.
    const PASS_VAR: &str = "RAFTLITE_TEST_BACKUP_PASSPHRASE";
    const PASS: &str = "correct horse battery staple";
    let dir = c.dir().join("enc-pass");
    let dest = file_url(&dir);
    let created = cli
        .run_env(
            &[
                "create",
                "--node",
                &base,
                "--to",
                &dest,
                "--passphrase-env",
                PASS_VAR,
            ],
            &[(PASS_VAR, PASS)],
        )
        .ok();
    assert!(created.stdout.contains("age-scrypt"), "{created:?}");
    let id = created
        .stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("backup created: "))
        .unwrap_or_else(|| panic!("{created:?}"))
        .trim()
        .to_owned();
    let ok = cli
        .run_env(
            &["verify", "--from", &dest, "--passphrase-env", PASS_VAR],
            &[(PASS_VAR, PASS)],
        )
        .ok();
    assert!(ok.stdout.starts_with(&format!("OK      {id}")), "{ok:?}");
    let bad = cli.run_env(
        &["verify", "--from", &dest, "--passphrase-env", PASS_VAR],
        &[(PASS_VAR, "not the passphrase")],
    );
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stdout.contains(&format!("FAILED  {id}: decryption")),
        "{bad:?}"
    );
    let none = cli.run(&["verify", "--from", &dest]);
    assert_eq!(none.code, Some(1), "{none:?}");
    assert!(
        none.stdout.contains("decryption (identity required)"),
        "{none:?}"
    );
    for run in [&created, &ok, &bad, &none] {
        assert!(!run.all_output().contains(PASS), "{run:?}");
    }
    let identity = Identity::passphrase(PASS).expect("passphrase");
    let dest_handle = Destination::parse(&dest).expect("file destination");
    assert_eq!(
        rows_in_backup(&dest_handle, &id, Some(&identity), c.dir()),
        500
    );

    // Contradicting or missing settings are refused before anything is transferred.
    let both = cli.run_env(
        &[
            "create",
            "--node",
            &base,
            "--to",
            &dest,
            "--recipient",
            &recipient,
            "--passphrase-env",
            PASS_VAR,
        ],
        &[(PASS_VAR, PASS)],
    );
    assert_eq!(both.code, Some(2), "{both:?}");
    assert!(both.stderr.contains("not both"), "{both:?}");
    let unset = cli.run(&[
        "create",
        "--node",
        &base,
        "--to",
        &dest,
        "--passphrase-env",
        "RAFTLITE_TEST_UNSET_VAR",
    ]);
    assert_eq!(unset.code, Some(2), "{unset:?}");
    assert!(
        unset.stderr.contains("RAFTLITE_TEST_UNSET_VAR is not set"),
        "{unset:?}"
    );
    let empty = cli.run_env(
        &[
            "create",
            "--node",
            &base,
            "--to",
            &dest,
            "--passphrase-env",
            PASS_VAR,
        ],
        &[(PASS_VAR, "")],
    );
    assert_eq!(empty.code, Some(2), "{empty:?}");
    assert!(empty.stderr.contains("is empty"), "{empty:?}");
    let bad_recipient = cli.run(&[
        "create",
        "--node",
        &base,
        "--to",
        &dest,
        "--recipient",
        "age1notakey",
    ]);
    assert_eq!(bad_recipient.code, Some(2), "{bad_recipient:?}");
    assert!(
        bad_recipient.stderr.contains("recipient"),
        "{bad_recipient:?}"
    );
    let both = cli.run_env(
        &[
            "verify",
            "--from",
            &dest,
            "--identity",
            &good_path,
            "--passphrase-env",
            PASS_VAR,
        ],
        &[(PASS_VAR, PASS)],
    );
    assert_eq!(both.code, Some(2), "{both:?}");
    // Only the one passphrase backup exists there: nothing partial was left by the refusals.
    assert_eq!(listed_ids(&cli, &dest), vec![id]);
}

/// (3) S3: create (two levels), list newest first, verify --all, the objects where the docs
/// say, the content restorable, and no secret in any output.
#[test]
fn s3_destination_round_trip() {
    let s3 = S3TestServer::start().expect("start the S3 test server");
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    load_rows(&base, 2000);
    let cli = Cli::new(c.dir()).with_envs(&s3.env_vars());
    let dest = "s3://raftlite-test/team/prod";

    let (first, _) = create_json(&cli, &base, dest, &[]);
    load_rows(&base, 100);
    let (second, manifest) = create_json(&cli, &base, dest, &["--level", "9"]);
    assert_eq!(manifest["compression"]["level"], 9, "{manifest}");
    for id in [&first, &second] {
        for file in ["manifest.json", "db.sqlite.zst"] {
            let key = set_key("team/prod", id, file);
            assert!(s3.object_path(&key).is_file(), "no object {key}");
        }
    }

    assert_eq!(listed_ids(&cli, dest), vec![second.clone(), first.clone()]);
    let list = cli.run(&["list", "--from", dest]).ok();
    assert!(
        list.stdout
            .contains("2 backups in s3://raftlite-test/team/prod"),
        "{list:?}"
    );
    let verify = cli.run(&["verify", "--from", dest, "--all"]).ok();
    assert!(
        verify.stdout.contains(&format!("OK      {first}")),
        "{verify:?}"
    );
    assert!(
        verify.stdout.contains(&format!("OK      {second}")),
        "{verify:?}"
    );
    assert!(
        verify.stdout.contains("2 verified, 2 passed, 0 failed"),
        "{verify:?}"
    );
    for run in [&list, &verify] {
        assert!(!run.all_output().contains(S3_SECRET), "{run:?}");
    }
    assert!(cli.leftovers().is_empty(), "{:?}", cli.leftovers());

    let handle = s3_destination(&s3, "team/prod");
    assert_eq!(rows_in_backup(&handle, &first, None, c.dir()), 2000);
    assert_eq!(rows_in_backup(&handle, &second, None, c.dir()), 2100);
}

/// (4) Corruption behind the tool's back, on disk and in the S3 server: a truncated object and
/// a flipped byte fail verification naming the backup and the check.
#[test]
fn corrupted_backups_fail_verification() {
    let s3 = S3TestServer::start().expect("start the S3 test server");
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    load_rows(&base, 1500);
    let cli = Cli::new(c.dir()).with_envs(&s3.env_vars());

    let dir = c.dir().join("backups");
    let file_dest = file_url(&dir);
    let s3_dest = "s3://raftlite-test/corrupt";
    let mut cases = Vec::new(); // (dest, truncated id, flipped id)
    for dest in [file_dest.as_str(), s3_dest] {
        let (a, _) = create_json(&cli, &base, dest, &[]);
        let (b, _) = create_json(&cli, &base, dest, &[]);
        let (good, _) = create_json(&cli, &base, dest, &[]);
        let (path_a, path_b) = if dest == s3_dest {
            (
                s3.object_path(&set_key("corrupt", &a, "db.sqlite.zst")),
                s3.object_path(&set_key("corrupt", &b, "db.sqlite.zst")),
            )
        } else {
            (
                set_file(&dir, &a, "db.sqlite.zst"),
                set_file(&dir, &b, "db.sqlite.zst"),
            )
        };
        truncate_half(&path_a);
        flip_byte(&path_b);
        cases.push((dest.to_owned(), a, b, good));
    }

    for (dest, truncated, flipped, good) in &cases {
        let run = cli.run(&["verify", "--from", dest, "--id", truncated]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(
            run.stdout
                .contains(&format!("FAILED  {truncated}: stored size check failed")),
            "{run:?}"
        );
        assert!(run.stdout.contains("truncated"), "{run:?}");

        let run = cli.run(&["verify", "--from", dest, "--id", flipped]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(
            run.stdout
                .contains(&format!("FAILED  {flipped}: stored sha256 check failed")),
            "{run:?}"
        );

        cli.run(&["verify", "--from", dest, "--id", good]).ok();

        let all = cli.run(&["verify", "--from", dest, "--all", "--json"]);
        assert_eq!(all.code, Some(1), "{all:?}");
        let reports = all.json();
        let reports = reports.as_array().expect("array of reports");
        assert_eq!(reports.len(), 3, "{all:?}");
        let failed: Vec<(&str, &str)> = reports
            .iter()
            .filter(|r| r["ok"] == false)
            .map(|r| {
                (
                    r["id"].as_str().unwrap_or_default(),
                    r["failed_check"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(failed.len(), 2, "{all:?}");
        assert!(
            failed.contains(&(truncated.as_str(), "stored size")),
            "{all:?}"
        );
        assert!(
            failed.contains(&(flipped.as_str(), "stored sha256")),
            "{all:?}"
        );
        assert!(!all.all_output().contains(S3_SECRET), "{all:?}");

        let human = cli.run(&["verify", "--from", dest, "--all"]);
        assert_eq!(human.code, Some(1), "{human:?}");
        assert!(
            human.stdout.contains("3 verified, 1 passed, 2 failed"),
            "{human:?}"
        );
    }
}

/// (5) A destination that is down, one that does not exist, and wrong credentials: create
/// fails with exit 2, names the destination, shows no secret, leaves no temporary copy, and
/// nothing is listed afterwards. An unreachable node fails the same way.
#[test]
fn unreachable_destinations_fail_cleanly() {
    let s3 = S3TestServer::start().expect("start the S3 test server");
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    load_rows(&base, 200);
    let cli = Cli::new(c.dir()).with_envs(&s3.env_vars());
    let dest = "s3://raftlite-test/down";

    s3.set_unavailable(true);
    let started = Instant::now();
    let run = cli.run(&["create", "--node", &base, "--to", dest]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains(dest), "{run:?}");
    assert!(
        run.stderr.contains("cannot reach the backup destination"),
        "{run:?}"
    );
    assert!(!run.all_output().contains(S3_SECRET), "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "retries are bounded"
    );
    let listing = cli.run(&["list", "--from", dest]);
    assert_eq!(
        listing.code,
        Some(2),
        "listing a down destination fails: {listing:?}"
    );
    assert!(listing.stderr.contains(dest), "{listing:?}");
    s3.set_unavailable(false);
    assert!(listed_ids(&cli, dest).is_empty());
    let list = cli.run(&["list", "--from", dest]).ok();
    assert!(list.stdout.contains("no complete backups"), "{list:?}");
    let verify = cli.run(&["verify", "--from", dest]);
    assert_eq!(verify.code, Some(2), "{verify:?}");
    assert!(verify.stderr.contains("no complete backup"), "{verify:?}");

    // Nothing listens at this endpoint.
    let bogus = format!("http://127.0.0.1:{}", free_port());
    let run = cli.run_env(
        &["create", "--node", &base, "--to", dest],
        &[("AWS_ENDPOINT_URL", &bogus)],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains(dest), "{run:?}");
    assert!(run.stderr.contains("Connection refused"), "{run:?}");
    assert!(!run.all_output().contains(S3_SECRET), "{run:?}");

    // Wrong secret key: refused by the server, and the key we gave is not echoed.
    const WRONG: &str = "wrong-secret-key-7f3a9c";
    let run = cli.run_env(
        &["create", "--node", &base, "--to", dest],
        &[("AWS_SECRET_ACCESS_KEY", WRONG)],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains(dest), "{run:?}");
    assert!(!run.all_output().contains(WRONG), "{run:?}");
    assert!(!run.all_output().contains(S3_SECRET), "{run:?}");

    // A node that is not there.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let run = cli.run(&["create", "--node", &nobody, "--to", dest]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("cannot connect to the node"), "{run:?}");
    assert!(run.stderr.contains(&nobody), "{run:?}");

    assert!(listed_ids(&cli, dest).is_empty());
    assert!(cli.leftovers().is_empty(), "{:?}", cli.leftovers());
}

/// Files under `dir`, recursively (empty when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Spawns `backup create` and kills it (SIGKILL) once `uploading()` says the upload is under
/// way. `None` if it finished first (then it must have succeeded).
fn kill_during_upload(
    cli: &Cli,
    node: &str,
    dest: &str,
    uploading: impl FnMut() -> bool,
) -> Option<Run> {
    signal_during_upload(cli, node, dest, "KILL", uploading)
}

/// Spawns `backup create` and sends it `signal` once `uploading()` says the upload is under
/// way. `None` if it finished first (then it must have succeeded).
fn signal_during_upload(
    cli: &Cli,
    node: &str,
    dest: &str,
    signal: &str,
    mut uploading: impl FnMut() -> bool,
) -> Option<Run> {
    let mut child = cli.spawn(&["create", "--node", node, "--to", dest]);
    let deadline = Instant::now() + RUN_DEADLINE;
    let finished_first = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break true;
        }
        if uploading() {
            break false;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("backup create to {dest} made no progress");
        }
        sleep(Duration::from_millis(2));
    };
    if !finished_first {
        let sent = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -s {signal} failed");
    }
    let run = finish(child, &["create", "--to", dest]);
    if finished_first {
        eprintln!("note: backup create to {dest} finished before SIG{signal}: {run:?}");
        assert_eq!(run.code, Some(0), "{run:?}");
        return None;
    }
    Some(run)
}

/// Marks everything in the CLI's TMPDIR as last modified two hours ago.
fn age_leftovers(cli: &Cli) {
    let past = std::time::SystemTime::now() - Duration::from_secs(7200);
    for name in cli.leftovers() {
        let dir = cli.tmpdir.join(&name);
        for path in files_under(&dir).into_iter().chain([dir]) {
            if let Ok(f) = std::fs::File::open(&path) {
                let _ = f.set_modified(past);
            }
        }
    }
}

/// (6) `kill -9` of `backup create` while it uploads a few dozen MiB, to S3 and to file://: no
/// complete backup appears (at most an incomplete set) and verify finds nothing to check; the
/// next run succeeds and removes the killed run's temporary copy.
#[test]
fn killed_create_leaves_no_backup() {
    let s3 = S3TestServer::start().expect("start the S3 test server");
    let c = Cluster::start(1, &[]);
    let base = c.nodes[0].base_url();
    load_rows(&base, 100);
    load_mib(&base, 32);
    let cli = Cli::new(c.dir()).with_envs(&s3.env_vars());

    // S3. Requests: the reachability check, then (after the snapshot download) the manifest
    // check, the multipart upload's creation, then parts: signal once parts are going.
    let s3_dest = "s3://raftlite-test/killed";
    // SIGTERM (and Ctrl-C): the run stops, says so, and removes its temporary copy.
    let termed_dest = "s3://raftlite-test/termed";
    let before = s3.request_count();
    let termed = signal_during_upload(&cli, &base, termed_dest, "TERM", || {
        s3.request_count() >= before + 4
    });
    if let Some(run) = &termed {
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(run.stderr.contains("interrupted by SIGTERM"), "{run:?}");
        assert!(cli.leftovers().is_empty(), "{:?}", cli.leftovers());
        assert!(listed_ids(&cli, termed_dest).is_empty());
    }
    let before = s3.request_count();
    let killed = kill_during_upload(&cli, &base, s3_dest, || s3.request_count() >= before + 4);
    // file://: kill once the data object's staging file has bytes.
    let dir = c.dir().join("killed");
    let file_dest = file_url(&dir);
    let killed_file = kill_during_upload(&cli, &base, &file_dest, || {
        files_under(&dir)
            .iter()
            .any(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
    });

    for (dest, killed) in [(s3_dest, &killed), (file_dest.as_str(), &killed_file)] {
        let listed = listed_ids(&cli, dest);
        if let Some(run) = killed {
            assert_eq!(run.code, None, "killed by a signal: {run:?}");
        } else {
            assert_eq!(listed.len(), 1, "{listed:?}");
            cli.run(&["verify", "--from", dest]).ok();
            continue;
        }
        assert!(
            listed.is_empty(),
            "a killed backup is listed in {dest}: {listed:?}"
        );
        let list = cli.run(&["list", "--from", dest]).ok();
        assert!(list.stdout.contains("no complete backups"), "{list:?}");
        let incomplete = list
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("incomplete"))
            .skip(1)
            .count();
        assert!(incomplete <= 1, "{list:?}");
        let verify = cli.run(&["verify", "--from", dest]);
        assert_eq!(verify.code, Some(2), "{verify:?}");
        assert!(verify.stderr.contains("no complete backup"), "{verify:?}");
    }

    // A killed run cannot clean up after itself; the next run removes its temporary copy once
    // it is old enough, and succeeds.
    let killed_runs = usize::from(killed.is_some()) + usize::from(killed_file.is_some());
    assert_eq!(cli.leftovers().len(), killed_runs, "{:?}", cli.leftovers());
    age_leftovers(&cli);
    let listed_before = listed_ids(&cli, s3_dest).len();
    let (id, _) = create_json(&cli, &base, s3_dest, &[]);
    assert!(cli.leftovers().is_empty(), "{:?}", cli.leftovers());
    let listed = listed_ids(&cli, s3_dest);
    assert_eq!(listed.len(), listed_before + 1, "{listed:?}");
    assert_eq!(listed[0], id);
}
