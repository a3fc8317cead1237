//! Backup destinations as the commands open them: the URL, with retry bounds for cloud stores
//! from the environment, and a reachability probe before any work.
//!
//! Cloud destinations retry failing requests (object_store's default: up to 10 retries within
//! 3 minutes). `RAFTLITE_BACKUP_MAX_RETRIES` (a count) and `RAFTLITE_BACKUP_RETRY_TIMEOUT_SECS`
//! (seconds) bound that, e.g. to fail fast in scripts and tests.

use raftlite_backup::{read_manifest, BackupError, BackupId, Destination};

use crate::node_client::with_root_cause;
use crate::{engine_error, EngineError};

/// Environment variables bounding the retries of cloud destinations.
pub const MAX_RETRIES_ENV: &str = "RAFTLITE_BACKUP_MAX_RETRIES";
pub const RETRY_TIMEOUT_ENV: &str = "RAFTLITE_BACKUP_RETRY_TIMEOUT_SECS";

/// Why a destination cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{}={value:?} is not a count (e.g. 3)", MAX_RETRIES_ENV)]
    MaxRetries { value: String },
    #[error("{}={value:?} is not a number of seconds (e.g. 30)", RETRY_TIMEOUT_ENV)]
    RetryTimeout { value: String },
    #[error("{}={value:?} must be between 0 and 86400 seconds", RETRY_TIMEOUT_ENV)]
    RetryTimeoutRange { value: String },
    #[error("{var} does not hold valid UTF-8")]
    NotUnicode { var: &'static str },
    #[error(
        "cannot reach the backup destination {dest}: {cause}; check the URL, the endpoint and \
         credentials in the environment (AWS_*, GOOGLE_*, AZURE_*) and connectivity; nothing \
         was backed up"
    )]
    Unreachable { dest: String, cause: String },
}

/// Parses a destination URL, with the retry bounds from the environment.
pub fn open_destination(url: &str) -> Result<Destination, DestinationError> {
    Ok(Destination::parse_with_options(url, retry_options()?).map_err(engine_error)?)
}

/// `max_retries` / `retry_timeout_secs` from [`MAX_RETRIES_ENV`] / [`RETRY_TIMEOUT_ENV`].
fn retry_options() -> Result<Vec<(&'static str, String)>, DestinationError> {
    let mut options = Vec::new();
    if let Some(value) = non_empty_env(MAX_RETRIES_ENV)? {
        if value.trim().parse::<u32>().is_err() {
            return Err(DestinationError::MaxRetries { value });
        }
        options.push(("max_retries", value));
    }
    if let Some(value) = non_empty_env(RETRY_TIMEOUT_ENV)? {
        let Ok(secs) = value.trim().parse::<f64>() else {
            return Err(DestinationError::RetryTimeout { value });
        };
        if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
            return Err(DestinationError::RetryTimeoutRange { value });
        }
        options.push(("retry_timeout_secs", value));
    }
    Ok(options)
}

fn non_empty_env(var: &'static str) -> Result<Option<String>, DestinationError> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(DestinationError::NotUnicode { var }),
    }
}

/// Fails unless the destination answers: reading the manifest of a backup that does not exist
/// must come back "not found". Done before the snapshot is transferred, so a dead or
/// misconfigured destination costs no copy of the database.
pub async fn check_reachable(dest: &Destination) -> Result<(), DestinationError> {
    let probe = BackupId::new("raftlite-reachability-check", "none").map_err(engine_error)?;
    match read_manifest(dest, &probe).await {
        Ok(_) | Err(BackupError::NotFound { .. }) | Err(BackupError::BadManifest { .. }) => Ok(()),
        Err(e) => {
            // The store's own error, not the engine's wording about downloading a backup.
            let cause = match std::error::Error::source(&e) {
                Some(source) => with_root_cause(source),
                None => e.to_string(),
            };
            Err(DestinationError::Unreachable {
                dest: dest.to_string(),
                cause,
            })
        }
    }
}
