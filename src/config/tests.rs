//! Tests of `serve`'s configuration: precedence, the file, validation.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use clap::{Args, Parser};

use super::file::{file_command, file_options, read, Shape};
use super::serve::{parse_bytes, ServeOptions};
use super::*;

/// The `serve` command alone, as the file is applied to it.
fn serve_command() -> clap::Command {
    ServeOptions::augment_args(clap::Command::new("serve"))
}

/// The environment is process-global: every test that parses a command
/// line (clap reads `RAFTLITE_*`) holds this lock.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Every environment variable of a `serve` option.
fn env_vars() -> Vec<std::ffi::OsString> {
    serve_command()
        .get_arguments()
        .filter_map(|arg| arg.get_env().map(ToOwned::to_owned))
        .collect()
}

/// Holds the env lock, starts from a clean `RAFTLITE_*` environment and
/// cleans it again on drop (also when the test panics).
struct EnvGuard {
    _lock: MutexGuard<'static, ()>,
}

impl EnvGuard {
    fn new() -> Self {
        let lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for v in env_vars() {
            std::env::remove_var(v);
        }
        EnvGuard { _lock: lock }
    }
    fn set(&self, key: &str, value: &str) {
        std::env::set_var(key, value);
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for v in env_vars() {
            std::env::remove_var(v);
        }
    }
}

fn serve_args(argv: &[&str]) -> ServeArgs {
    let mut full = vec!["raftlite", "serve"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full)
        .expect("command line parses")
        .command
    {
        Command::Serve(a) => a,
        other => panic!("expected serve, got {other:?}"),
    }
}

/// Writes `contents` to a temporary `.toml` file (deleted on drop).
fn temp_toml(contents: &str) -> (tempfile::NamedTempFile, String) {
    let mut f = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create temp file");
    f.write_all(contents.as_bytes()).expect("write temp file");
    let p = f.path().to_string_lossy().into_owned();
    (f, p)
}

#[test]
fn defaults() {
    let _env = EnvGuard::new();
    let cfg = resolve(serve_args(&[])).expect("defaults resolve");
    assert_eq!(cfg.data_dir, PathBuf::from("./raftlite-data"));
    assert_eq!(
        cfg.http_addr,
        "127.0.0.1:4001".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        cfg.raft_addr,
        "127.0.0.1:4002".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(cfg.http_advertise_addr, "127.0.0.1:4001");
    assert_eq!(cfg.raft_advertise_addr, "127.0.0.1:4002");
    assert_eq!(cfg.node_id, None);
    assert!(cfg.join.is_empty());
    assert_eq!(cfg.snapshot_threshold, 8192);
    assert_eq!(cfg.log_level, "info");
}

#[test]
fn advertise_defaults_to_bind_addr() {
    let _env = EnvGuard::new();
    let cfg = resolve(serve_args(&[
        "--http-addr",
        "127.0.0.1:5001",
        "--raft-addr",
        "127.0.0.1:5002",
    ]))
    .unwrap();
    assert_eq!(cfg.http_advertise_addr, "127.0.0.1:5001");
    assert_eq!(cfg.raft_advertise_addr, "127.0.0.1:5002");
    let cfg = resolve(serve_args(&["--http-advertise-addr", "db1.example:4001"])).unwrap();
    assert_eq!(cfg.http_advertise_addr, "db1.example:4001");
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    let env = EnvGuard::new();
    let (_f, path) = temp_toml(
        r#"
        data_dir = "/var/lib/raftlite"
        http_addr = "127.0.0.1:6001"
        raft_addr = "127.0.0.1:6002"
        node_id = 7
        snapshot_threshold = 100
        log_level = "debug"
        join = ["10.0.0.1:4001", "https://10.0.0.2:4001/"]
        "#,
    );
    let cfg = resolve(serve_args(&["--config", &path])).unwrap();
    assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/raftlite"));
    assert_eq!(cfg.http_addr.port(), 6001);
    assert_eq!(cfg.node_id, Some(7));
    assert_eq!(cfg.snapshot_threshold, 100);
    assert_eq!(cfg.log_level, "debug");
    assert_eq!(
        cfg.join,
        vec!["http://10.0.0.1:4001", "https://10.0.0.2:4001"]
    );

    env.set("RAFTLITE_CONFIG", &path);
    env.set("RAFTLITE_HTTP_ADDR", "127.0.0.1:7001");
    env.set("RAFTLITE_NODE_ID", "9");
    env.set("RAFTLITE_JOIN", "a:1,b:2");
    let cfg = resolve(serve_args(&[])).unwrap();
    assert_eq!(cfg.http_addr.port(), 7001, "env beats file");
    assert_eq!(cfg.node_id, Some(9), "env beats file");
    assert_eq!(cfg.join, vec!["http://a:1", "http://b:2"]);
    assert_eq!(cfg.raft_addr.port(), 6002, "file still used for the rest");
    assert_eq!(cfg.log_level, "debug");
}

#[test]
fn flag_overrides_env() {
    let env = EnvGuard::new();
    env.set("RAFTLITE_HTTP_ADDR", "127.0.0.1:7001");
    env.set("RAFTLITE_SNAPSHOT_THRESHOLD", "5");
    env.set("RAFTLITE_LOG_LEVEL", "warn");
    let cfg = resolve(serve_args(&[
        "--http-addr",
        "127.0.0.1:8001",
        "--log-level",
        "trace",
    ]))
    .unwrap();
    assert_eq!(cfg.http_addr.port(), 8001);
    assert_eq!(cfg.log_level, "trace");
    assert_eq!(cfg.snapshot_threshold, 5, "env used when no flag");
}

#[test]
fn unknown_key_in_file_is_an_error_naming_it() {
    let _env = EnvGuard::new();
    let (_f, path) = temp_toml("http_addr = \"127.0.0.1:4001\"\nhttp_adress = \"x\"\n");
    let err = resolve(serve_args(&["--config", &path])).unwrap_err();
    assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
    assert!(err.to_string().contains("http_adress"), "{err}");
}

#[test]
fn missing_file_is_an_error() {
    let _env = EnvGuard::new();
    let err = resolve(serve_args(&["--config", "/nonexistent/raftlite.toml"])).unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/raftlite.toml"),
        "{err}"
    );
}

#[test]
fn bad_address_names_flag_and_value() {
    let _env = EnvGuard::new();
    let err = resolve(serve_args(&["--http-addr", "not-an-address"])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("--http-addr") && msg.contains("not-an-address"),
        "{msg}"
    );

    let err = resolve(serve_args(&["--raft-addr", "127.0.0.1:99999"])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("--raft-addr") && msg.contains("127.0.0.1:99999"),
        "{msg}"
    );

    let err = resolve(serve_args(&["--raft-advertise-addr", "nohost"])).unwrap_err();
    assert!(err.to_string().contains("--raft-advertise-addr"), "{err}");

    let (_f, path) = temp_toml("http_addr = \"bogus\"\n");
    let err = resolve(serve_args(&["--config", &path])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("--http-addr") && msg.contains("bogus"),
        "{msg}"
    );
}

#[test]
fn join_parsing() {
    let _env = EnvGuard::new();
    let cfg = resolve(serve_args(&[
        "--join",
        "127.0.0.1:4001, http://127.0.0.1:4003/",
        "--join",
        "https://h:4005",
        "--join",
        "h2:4007,",
    ]))
    .unwrap();
    assert_eq!(
        cfg.join,
        vec![
            "http://127.0.0.1:4001",
            "http://127.0.0.1:4003",
            "https://h:4005",
            "http://h2:4007"
        ]
    );

    let (_f, path) = temp_toml("join = \"a:1, b:2\"\n");
    let cfg = resolve(serve_args(&["--config", &path])).unwrap();
    assert_eq!(cfg.join, vec!["http://a:1", "http://b:2"]);

    let (_f2, path2) = temp_toml("join = 5\n");
    let err = resolve(serve_args(&["--config", &path2])).unwrap_err();
    assert!(err.to_string().contains("join"), "{err}");

    // A --join flag replaces the file's list rather than merging with it.
    let cfg = resolve(serve_args(&["--config", &path, "--join", "c:3"])).unwrap();
    assert_eq!(cfg.join, vec!["http://c:3"]);
}

#[test]
fn request_limits_take_byte_suffixes_and_are_checked() {
    let _env = EnvGuard::new();
    let cfg = resolve(serve_args(&[])).unwrap();
    assert_eq!(cfg.limits.max_entry_bytes, 4 << 20);
    assert_eq!(cfg.limits.api, raftlite_api::limits::Limits::default());
    let cfg = resolve(serve_args(&[
        "--max-entry-bytes",
        "512KiB",
        "--max-response-bytes",
        "1MiB",
        "--max-concurrent-requests",
        "8",
        "--max-buffered-body-bytes",
        "1G",
    ]))
    .unwrap();
    assert_eq!(cfg.limits.max_entry_bytes, 512 << 10);
    assert_eq!(cfg.limits.api.max_response_bytes, 1 << 20);
    assert_eq!(cfg.limits.api.max_concurrent_requests, 8);
    assert_eq!(cfg.limits.api.max_buffered_body_bytes, 1 << 30);
    let err = resolve(serve_args(&["--max-entry-bytes", "64MiB"])).unwrap_err();
    assert!(err.to_string().contains("--max-entry-bytes"), "{err}");
    assert!(parse_bytes("4 parsecs").is_err());
    assert_eq!(parse_bytes("4194304"), Ok(4 << 20));
}

#[test]
fn zero_snapshot_threshold_is_rejected() {
    let _env = EnvGuard::new();
    let err = resolve(serve_args(&["--snapshot-threshold", "0"])).unwrap_err();
    assert!(err.to_string().contains("--snapshot-threshold"), "{err}");
}

#[test]
fn cli_definition_is_valid() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

/// The declaration covers every option, and only `--config` and `--recovery-mode` have no key
/// in the file (a file naming a file, a one-off start decision).
#[test]
fn every_option_declares_its_file_key() {
    let command = serve_command();
    let ids: Vec<&str> = command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .collect();
    let declared: Vec<&str> = ServeOptions::FILE_KEYS.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, declared);
    let in_file: Vec<&str> = file_options(&command).iter().map(|o| o.id).collect();
    let not_in_file: Vec<&str> = ids
        .iter()
        .filter(|id| !in_file.contains(id))
        .copied()
        .collect();
    assert_eq!(not_in_file, ["config", "recovery_mode"]);
}

/// Today's keys, exactly: top-level keys are the flag names with underscores, the backup
/// options live in `[backup]` without their prefix, and two keys are named by hand.
#[test]
fn file_keys_are_the_documented_ones() {
    let paths: Vec<String> = file_options(&serve_command())
        .iter()
        .map(|o| o.path())
        .collect();
    let mut top: Vec<&str> = paths
        .iter()
        .filter(|p| !p.contains('.'))
        .map(String::as_str)
        .collect();
    top.sort_unstable();
    let mut want_top = vec![
        "data_dir",
        "http_addr",
        "raft_addr",
        "http_advertise_addr",
        "raft_advertise_addr",
        "node_id",
        "join",
        "snapshot_threshold",
        "log_level",
        "auth",
        "join_as",
        "http_cert",
        "http_key",
        "http_ca_cert",
        "http_verify_client",
        "node_cert",
        "node_key",
        "node_ca",
        "node_verify_client",
        "auto_restore_from",
        "auto_restore_identity",
        "auto_restore_if_empty_ok",
        "auto_restore",
        "max_entry_bytes",
        "max_response_bytes",
        "max_concurrent_requests",
        "max_buffered_body_bytes",
    ];
    want_top.sort_unstable();
    assert_eq!(top, want_top);
    let mut backup: Vec<&str> = paths
        .iter()
        .filter_map(|p| p.strip_prefix("backup."))
        .collect();
    backup.sort_unstable();
    let mut want_backup = vec![
        "to",
        "recipients",
        "passphrase_env",
        "level",
        "full_every",
        "interval",
        "cron",
        "tz",
        "verify_interval",
        "identity",
        "keep_last",
        "keep_hourly",
        "keep_daily",
        "keep_weekly",
        "keep_monthly",
        "keep_within",
        "auto_backup",
        "archive_to",
        "archive_interval",
        "archive_keep_within",
        "copy_to",
        "copy_keep_last",
        "copy_keep_hourly",
        "copy_keep_daily",
        "copy_keep_weekly",
        "copy_keep_monthly",
        "copy_keep_within",
    ];
    want_backup.sort_unstable();
    assert_eq!(backup, want_backup);
}

/// A TOML value for `id`, of the kind the option takes, that differs from its default.
fn sample_value(id: &str, shape: Shape) -> &'static str {
    match (id, shape) {
        (_, Shape::Switch) => "true",
        ("join", _) => r#"["10.0.0.1:4001", "10.0.0.2:4001"]"#,
        (_, Shape::List { .. }) => r#"["age1example"]"#,
        ("http_addr" | "raft_addr", _) => r#""127.0.0.1:5999""#,
        ("http_advertise_addr" | "raft_advertise_addr", _) => r#""db1.example:5999""#,
        ("max_entry_bytes" | "max_response_bytes", _) => r#""1MiB""#,
        (_, Shape::Bytes) => "2097152",
        (_, Shape::Number) => "7",
        (_, Shape::Text) => r#""/some/where""#,
    }
}

/// `options` as a TOML document: top-level keys first, then one `[table]` per table.
fn toml_of(options: &[&super::file::FileOption]) -> String {
    let mut top = String::new();
    let mut tables: Vec<(&str, String)> = Vec::new();
    for o in options {
        let line = format!("{} = {}\n", o.key, sample_value(o.id, o.shape));
        match o.table {
            None => top.push_str(&line),
            Some(t) => match tables.iter_mut().find(|(name, _)| *name == t) {
                Some((_, body)) => body.push_str(&line),
                None => tables.push((t, line)),
            },
        }
    }
    for (name, body) in tables {
        top.push_str(&format!("[{name}]\n{body}"));
    }
    top
}

#[test]
fn a_file_key_for_every_serve_option_is_accepted() {
    let _env = EnvGuard::new();
    let command = serve_command();
    let options = file_options(&command);
    let all: Vec<_> = options.iter().collect();
    let text = toml_of(&all);
    let values = read(&text, &options, &file_command(&command)).expect(&text);
    assert_eq!(values.len(), options.len(), "{text}");
    let (_f, path) = temp_toml(&text);
    resolve(serve_args(&["--config", &path])).expect(&text);

    // Each key alone reaches its setting: the resolved config differs from the defaults.
    let defaults = resolve(serve_args(&[])).unwrap();
    for option in &options {
        let text = toml_of(&[option]);
        let (_f, path) = temp_toml(&text);
        let mut cfg = resolve(serve_args(&["--config", &path])).expect(&text);
        assert_ne!(cfg, defaults, "{text}");
        // ... and nothing but the file makes it differ.
        cfg = resolve(serve_args(&[])).unwrap();
        assert_eq!(cfg, defaults);
    }
}

/// One option of each kind (path, text, number, byte size, list, switch, `[backup]` table),
/// each from every source at once, then with one source fewer at a time.
#[test]
fn flag_beats_env_beats_file_beats_default() {
    type Get = fn(&ServeConfig) -> String;
    struct Case {
        flag: &'static [&'static str],
        env: (&'static str, &'static str),
        file: &'static str,
        get: Get,
        /// What `get` says with: everything, env and file, the file, nothing.
        want: [&'static str; 4],
    }
    let cases = [
        Case {
            flag: &["--data-dir", "/flag"],
            env: ("RAFTLITE_DATA_DIR", "/env"),
            file: r#"data_dir = "/file""#,
            get: |c| c.data_dir.display().to_string(),
            want: ["/flag", "/env", "/file", "./raftlite-data"],
        },
        Case {
            flag: &["--log-level", "trace"],
            env: ("RAFTLITE_LOG_LEVEL", "warn"),
            file: r#"log_level = "debug""#,
            get: |c| c.log_level.clone(),
            want: ["trace", "warn", "debug", "info"],
        },
        Case {
            flag: &["--snapshot-threshold", "1"],
            env: ("RAFTLITE_SNAPSHOT_THRESHOLD", "2"),
            file: "snapshot_threshold = 3",
            get: |c| c.snapshot_threshold.to_string(),
            want: ["1", "2", "3", "8192"],
        },
        Case {
            flag: &["--max-entry-bytes", "1MiB"],
            env: ("RAFTLITE_MAX_ENTRY_BYTES", "2MiB"),
            file: r#"max_entry_bytes = "3MiB""#,
            get: |c| (c.limits.max_entry_bytes >> 20).to_string(),
            want: ["1", "2", "3", "4"],
        },
        Case {
            flag: &["--join", "a:1"],
            env: ("RAFTLITE_JOIN", "b:2,b:3"),
            file: r#"join = ["c:4"]"#,
            get: |c| c.join.join(" "),
            want: ["http://a:1", "http://b:2 http://b:3", "http://c:4", ""],
        },
        Case {
            // A switch only turns on: the flag (on) beats the environment (off), the
            // environment (on) beats the file (off).
            flag: &["--node-verify-client"],
            env: ("RAFTLITE_NODE_VERIFY_CLIENT", "true"),
            file: "node_verify_client = false",
            get: |c| c.security.node_verify_client.to_string(),
            want: ["true", "true", "false", "false"],
        },
        Case {
            flag: &["--backup-keep-daily", "1"],
            env: ("RAFTLITE_BACKUP_KEEP_DAILY", "2"),
            file: "[backup]\nkeep_daily = 3",
            get: |c| format!("{:?}", c.backup.keep.keep_daily),
            want: ["Some(1)", "Some(2)", "Some(3)", "None"],
        },
    ];
    for case in &cases {
        let env = EnvGuard::new();
        let (_f, path) = temp_toml(case.file);
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(case.flag);
        env.set(case.env.0, case.env.1);
        let got = [
            (case.get)(&resolve(serve_args(&all)).unwrap()),
            (case.get)(&resolve(serve_args(&["--config", &path])).unwrap()),
            {
                std::env::remove_var(case.env.0);
                (case.get)(&resolve(serve_args(&["--config", &path])).unwrap())
            },
            (case.get)(&resolve(serve_args(&[])).unwrap()),
        ];
        assert_eq!(got, case.want, "{:?}", case.flag);
    }

    // As raftlite always read them: a switch that the environment leaves off is the file's.
    let env = EnvGuard::new();
    let (_f, path) = temp_toml("node_verify_client = true");
    env.set("RAFTLITE_NODE_VERIFY_CLIENT", "false");
    let cfg = resolve(serve_args(&["--config", &path])).unwrap();
    assert!(cfg.security.node_verify_client);
}

#[test]
fn file_values_are_checked_where_they_stand() {
    let _env = EnvGuard::new();
    for (text, says) in [
        ("node_id = -1", "--node-id"),
        ("node_id = 1.5", "expected a number"),
        (r#"node_id = "7""#, "expected a number"),
        ("max_concurrent_requests = \"8\"", "expected a number"),
        ("max_entry_bytes = true", "a byte count"),
        (r#"data_dir = """#, "--data-dir: must not be empty"),
        (r#"max_entry_bytes = "4 parsecs""#, "unknown unit"),
        ("http_addr = 4001", "expected a string"),
        (r#"http_verify_client = "yes""#, "expected a boolean"),
        ("[backup]\nlevel = 99999999999", "--backup-level"),
        ("[backup]\ntos = \"x\"", "unknown field `tos`"),
        ("backup = 5", "a table of backup settings"),
        ("recovery_mode = true", "unknown field `recovery_mode`"),
        (r#"config = "other.toml""#, "unknown field `config`"),
        ("backup_to = \"off\"", "unknown field `backup_to`"),
    ] {
        let (_f, path) = temp_toml(text);
        let err = resolve(serve_args(&["--config", &path])).unwrap_err();
        assert!(
            matches!(err, ConfigError::ParseFile { .. }),
            "{text}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(says) && msg.contains("line "), "{text}: {msg}");
    }
    // A value the command line overrides is still checked: the file is wrong either way.
    let (_f, path) = temp_toml("node_id = -1");
    assert!(resolve(serve_args(&["--config", &path, "--node-id", "3"])).is_err());
}

#[test]
fn backup_table_keys_and_lists() {
    let _env = EnvGuard::new();
    let (_f, path) = temp_toml(
        r#"
        [backup]
        to = "off"
        recipients = ["age1a", "age1b"]
        auto_backup = "/etc/auto.json"
        keep_within = "48h"
        "#,
    );
    let cfg = resolve(serve_args(&["--config", &path])).unwrap();
    assert_eq!(cfg.backup.to, None);
    assert_eq!(cfg.backup.recipients, ["age1a", "age1b"]);
    assert_eq!(
        cfg.backup.auto_backup,
        Some(PathBuf::from("/etc/auto.json"))
    );
    assert_eq!(cfg.backup.keep.keep_within.as_deref(), Some("48h"));
    // A flag list replaces the file's list.
    let cfg = resolve(serve_args(&[
        "--config",
        &path,
        "--backup-recipient",
        "age1c",
    ]))
    .unwrap();
    assert_eq!(cfg.backup.recipients, ["age1c"]);
}

#[test]
fn backup_copies_come_from_flags_env_and_file() {
    let env = EnvGuard::new();
    let defaults = resolve(serve_args(&[])).unwrap();
    assert!(defaults.backup.copy_to.is_empty());
    assert_eq!(
        defaults.backup.copy_keep,
        raftlite_backup::KeepRules::default()
    );
    let (_f, path) = temp_toml(
        r#"
        [backup]
        copy_to = ["s3://b/copy", "gs://c/copy"]
        copy_keep_daily = 30
        "#,
    );
    let cfg = resolve(serve_args(&["--config", &path])).unwrap();
    assert_eq!(cfg.backup.copy_to, ["s3://b/copy", "gs://c/copy"]);
    assert_eq!(cfg.backup.copy_keep.keep_daily, Some(30));
    env.set("RAFTLITE_BACKUP_COPY_TO", "s3://e/1, s3://e/2");
    env.set("RAFTLITE_BACKUP_COPY_KEEP_LAST", "3");
    let cfg = resolve(serve_args(&["--config", &path])).unwrap();
    assert_eq!(cfg.backup.copy_to, ["s3://e/1", "s3://e/2"]);
    assert_eq!(cfg.backup.copy_keep.keep_last, Some(3));
    assert_eq!(
        cfg.backup.copy_keep.keep_daily,
        Some(30),
        "the file for the rest"
    );
    let cfg = resolve(serve_args(&[
        "--config",
        &path,
        "--backup-copy-to",
        "file:///a",
        "--backup-copy-to",
        "file:///b,file:///c",
        "--backup-copy-keep-within",
        "48h",
    ]))
    .unwrap();
    assert_eq!(cfg.backup.copy_to, ["file:///a", "file:///b", "file:///c"]);
    assert_eq!(cfg.backup.copy_keep.keep_within.as_deref(), Some("48h"));
}

/// The commented example in `deploy/` is a valid file.
#[test]
fn the_example_config_is_accepted() {
    let command = serve_command();
    let text = include_str!("../../deploy/raftlite.toml");
    let values = read(text, &file_options(&command), &file_command(&command)).unwrap();
    assert_eq!(values.len(), 18);
}
