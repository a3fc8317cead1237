//! The service's settings.

use std::path::Path;

use serde_json::json;

use super::*;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

#[test]
fn ids_follow_the_backup_crate_naming() {
    let manifest: Manifest = serde_json::from_value(json!({
        "format_version": 1,
        "cluster_id": "c1",
        "node_id": 1,
        "timeline": {"id": "t1", "counter": 2},
        "log_index": 42,
        "log_term": 3,
        "created_at": "2025-01-02T03:04:05.678Z",
        "created_at_unix_ms": 1_735_787_045_678i64,
        "sqlite_page_size": 4096,
        "sqlite_page_count": 2,
        "plain_sha256": "0".repeat(64),
        "plain_size": 8192,
        "stored_sha256": "0".repeat(64),
        "stored_size": 100,
        "compression": {"algorithm": "zstd", "level": 3},
        "encryption": null,
        "raftlite_version": "0.1.0",
    }))
    .unwrap();
    assert_eq!(
        manifest.id().unwrap().to_string(),
        "c1/20250102T030405.678Z-2-42"
    );
}

#[allow(clippy::result_large_err)]
fn from_config(
    to: &str,
    recipients: &[String],
    passphrase_env: Option<&str>,
    level: i32,
    data_dir: &Path,
) -> Result<BackupService, BackupError> {
    let mut settings = BackupSettings::new(to);
    settings.recipients = recipients.to_vec();
    settings.passphrase_env = passphrase_env.map(str::to_string);
    settings.level = level;
    BackupService::from_settings(settings, data_dir)
}

#[test]
fn config_is_checked_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let to = format!("file://{}", dir.path().join("b").display());
    let ok = from_config(&to, &[], None, 3, dir.path()).unwrap();
    assert_eq!(ok.label(), to);
    assert_eq!(ok.encryption_name(), "none");

    let err = from_config("ftp://x/y", &[], None, 3, dir.path()).unwrap_err();
    assert!(err.to_string().contains("unsupported scheme"), "{err}");
    let err = from_config("s3://AKID:hunter2@b/p", &[], None, 3, dir.path()).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let err = from_config(&to, &["age1nope".into()], None, 3, dir.path()).unwrap_err();
    assert!(err.to_string().contains("recipient"), "{err}");

    let var = "RAFTLITE_API_TEST_SURELY_UNSET_PASSPHRASE";
    let err = from_config(&to, &[], Some(var), 3, dir.path()).unwrap_err();
    assert!(
        err.to_string().contains(var) && err.to_string().contains("not set"),
        "{err}"
    );

    let err = from_config(&to, &[], None, 0, dir.path()).unwrap_err();
    assert!(err.to_string().contains("--backup-level"), "{err}");
}
