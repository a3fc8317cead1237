//! What a verification checked, in words for a person: the check list of a passed backup and
//! the name of the check a failed one did not pass (`raftlite backup verify` prints both; the
//! JSON report carries them too).

use serde::Serialize;

use crate::{BackupError, Identity, VerifyReport};

/// One check a verification passed, for the report.
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub detail: String,
}

/// The checks a successful verification did, in order.
pub fn checks_of(report: &VerifyReport, identity: Option<&Identity>) -> Vec<Check> {
    let m = &report.manifest;
    let mut checks = vec![
        Check {
            check: "manifest",
            detail: format!(
                "format {}, cluster {}, timeline #{}, log index {}, created {}",
                m.format_version, m.cluster_id, m.timeline.counter, m.log_index, m.created_at
            ),
        },
        Check {
            check: "stored object",
            detail: format!(
                "{}, {}: size and sha256 as recorded",
                m.object_name(),
                human_bytes(report.stored_size)
            ),
        },
    ];
    if let Some(e) = &m.encryption {
        checks.push(Check {
            check: "decryption",
            detail: format!(
                "{} with the given {}, authenticated",
                e.scheme,
                match identity {
                    Some(Identity::Passphrase(_)) => "passphrase",
                    _ => "identity",
                }
            ),
        });
    }
    checks.extend([
        Check {
            check: "zstd frame",
            detail: format!("complete, checksum ok (level {})", m.compression.level),
        },
        Check {
            check: "plain database",
            detail: format!(
                "{}: size and sha256 as recorded",
                human_bytes(report.plain_size)
            ),
        },
        Check {
            check: "integrity_check",
            detail: "ok".to_string(),
        },
        Check {
            check: "page count",
            detail: format!(
                "{} pages of {} bytes as recorded",
                report.page_count, report.page_size
            ),
        },
        Check {
            check: "_raftlite_meta",
            detail: format!(
                "timeline #{} ({}), log index {} as recorded",
                m.timeline.counter, m.timeline.id, m.log_index
            ),
        },
    ]);
    checks
}

/// The name of the check a verification error stands for.
pub fn failed_check(e: &BackupError) -> &'static str {
    match e {
        BackupError::NotFound { .. } | BackupError::BadManifest { .. } => "manifest",
        BackupError::InvalidId { .. } => "backup id",
        BackupError::Download { .. } => "download",
        BackupError::Truncated { .. } | BackupError::StoredSizeMismatch { .. } => "stored size",
        BackupError::StoredHashMismatch { .. } => "stored sha256",
        BackupError::IdentityRequired { .. } => "decryption (identity required)",
        BackupError::WrongKey { .. } => "decryption (wrong key)",
        BackupError::InvalidIdentity { .. } | BackupError::Decrypt { .. } => "decryption",
        BackupError::BadZstdFrame { .. } => "zstd frame",
        BackupError::PlainSizeMismatch { .. } => "plain size",
        BackupError::PlainHashMismatch { .. } => "plain sha256",
        BackupError::IntegrityCheck { .. } => "integrity_check",
        BackupError::PageCountMismatch { .. } => "page count",
        BackupError::RestoredMetaMismatch { .. } => "_raftlite_meta",
        BackupError::Local { .. } => "local file",
        BackupError::BrokenChain { .. } => "chain of incrementals",
        BackupError::ChainDigestMismatch { .. } => "page digest of the chain",
        _ => "verify",
    }
}

/// `512 B`, `1.5 KiB`, `12.3 MiB`, `1.20 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit >= 2 {
        format!("{value:.2} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024 + 300 * 1024), "12.3 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }
}
