//! The manifest of a backup set and the names of things in the store.
//!
//! ```text
//! <prefix>/<cluster-id>/backups/<set>/db.sqlite.zst[.age]   a full backup's data (standard zstd frame, in a standard age file)
//! <prefix>/<cluster-id>/backups/<set>/pages.zst[.age]       an incremental's page frames (crate::incremental)
//! <prefix>/<cluster-id>/backups/<set>/manifest.json         written last: a set without it does not exist
//! <set> = <UTC time YYYYMMDDTHHMMSS.mmmZ>-<timeline counter>-<log index>
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::BackupError;

/// The newest manifest format this crate reads; readers refuse anything newer.
pub const FORMAT_VERSION: u32 = 2;
/// The format of a full backup's manifest: 1, so a raftlite from before incrementals still
/// restores every full backup.
pub const FULL_FORMAT_VERSION: u32 = 1;
/// The format of an incremental's manifest: a raftlite that cannot apply page frames refuses
/// it as written by a newer raftlite instead of mistaking it for a database.
pub const INCREMENTAL_FORMAT_VERSION: u32 = 2;
/// File name of the manifest inside a set.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the data object of an unencrypted set.
pub const DATA_FILE: &str = "db.sqlite.zst";
/// File name of the data object of an encrypted set.
pub const DATA_FILE_ENCRYPTED: &str = "db.sqlite.zst.age";
/// File name of the page frames of an unencrypted incremental set.
pub const PAGES_FILE: &str = "pages.zst";
/// File name of the page frames of an encrypted incremental set.
pub const PAGES_FILE_ENCRYPTED: &str = "pages.zst.age";
/// Written into a set by a successful restore drill (or `backup verify`): the set was
/// downloaded, decrypted, decompressed and opened, and every check passed.
pub const VERIFIED_FILE: &str = "verified.json";
pub(crate) const BACKUPS_DIR: &str = "backups";
/// The folder, inside a set, of the markers that record its copies (`crate::copy`).
pub(crate) const COPIES_DIR: &str = "copies";
/// Hex digits of a destination's key in a copy marker's name (`crate::copy::copy_key`).
pub(crate) const COPY_KEY_HEX: usize = 16;
pub(crate) const MARKER_SUFFIX: &str = ".json";

/// The key of a copy marker's file name (`<16 hex>.json`), `None` for any other name.
pub(crate) fn marker_key_of(file: &str) -> Option<String> {
    let key = file.strip_suffix(MARKER_SUFFIX)?;
    (key.len() == COPY_KEY_HEX && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| key.to_string())
}
/// Manifests larger than this are refused unread (a real one is about 1 KiB).
pub(crate) const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Names one backup set: `<cluster-id>/<set>`, as listed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId {
    cluster_id: String,
    set: String,
}

impl BackupId {
    /// The id of a backup taken at `created_at_unix_ms` of the database at `log_index` on the
    /// timeline numbered `timeline_counter`: `<cluster>/<YYYYMMDDTHHMMSS.mmmZ>-<counter>-<index>`.
    /// Names sort by time, and say at a glance which lineage and index they hold.
    pub fn for_backup(
        cluster_id: &str,
        created_at_unix_ms: i64,
        timeline_counter: u64,
        log_index: u64,
    ) -> Result<BackupId, BackupError> {
        let set = format!(
            "{}-{timeline_counter}-{log_index}",
            compact_timestamp(created_at_unix_ms)
        );
        BackupId::new(cluster_id, &set)
    }

    pub fn new(cluster_id: &str, set: &str) -> Result<BackupId, BackupError> {
        let whole = format!("{cluster_id}/{set}");
        check_segment(cluster_id).map_err(|reason| BackupError::InvalidId {
            id: whole.clone(),
            reason: format!("cluster id: {reason}"),
        })?;
        check_segment(set).map_err(|reason| BackupError::InvalidId {
            id: whole.clone(),
            reason: format!("set name: {reason}"),
        })?;
        Ok(BackupId {
            cluster_id: cluster_id.to_string(),
            set: set.to_string(),
        })
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The set folder's name, `<time>-<timeline counter>-<log index>`.
    pub fn set(&self) -> &str {
        &self.set
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster_id, self.set)
    }
}

impl FromStr for BackupId {
    type Err = BackupError;

    fn from_str(s: &str) -> Result<BackupId, BackupError> {
        match s.split_once('/') {
            Some((cluster, set)) => BackupId::new(cluster, set),
            None => Err(BackupError::InvalidId {
                id: s.to_string(),
                reason: "missing `/` between cluster id and set".into(),
            }),
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = BackupError;
    fn try_from(s: String) -> Result<BackupId, BackupError> {
        s.parse()
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.to_string()
    }
}

/// A single path segment we are willing to put in an object key: 1-128 of `[A-Za-z0-9._-]`,
/// not `.`/`..`. Keeps keys portable across S3, GCS, Azure and local filesystems.
pub(crate) fn check_segment(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.len() > 128 {
        return Err("longer than 128 characters".into());
    }
    if s == "." || s == ".." {
        return Err("`.` and `..` are not allowed".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "character {c:?} not allowed (use A-Z a-z 0-9 . _ -)"
        ));
    }
    Ok(())
}

/// The timeline a backup belongs to (see DESIGN.md section 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineRef {
    pub id: String,
    pub counter: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compression {
    /// Always `"zstd"`.
    pub algorithm: String,
    pub level: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncryptionScheme {
    /// age with X25519 recipients (`age1...` public keys).
    #[serde(rename = "age-x25519")]
    AgeX25519,
    /// age with a passphrase (scrypt).
    #[serde(rename = "age-scrypt")]
    AgeScrypt,
}

impl fmt::Display for EncryptionScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncryptionScheme::AgeX25519 => "age-x25519",
            EncryptionScheme::AgeScrypt => "age-scrypt",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    pub scheme: EncryptionScheme,
    /// sha256 (hex) of each recipient string (`age1...`) the file was encrypted to, so an
    /// operator can tell which key opens it. Never keys. Empty for a passphrase.
    pub recipient_fingerprints: Vec<String>,
}

/// What a set's data object holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// The whole SQLite file.
    #[default]
    Full,
    /// The pages that changed since `parent` ([`crate::incremental`]).
    Incremental,
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
        })
    }
}

/// The backup an incremental applies on top of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub id: BackupId,
    /// The parent's [`Manifest::pages_digest`]: the database the page frames expect.
    pub pages_digest: String,
}

/// `manifest.json`: everything needed to check and restore a set without opening it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub cluster_id: String,
    /// The node that took the backup.
    pub node_id: u64,
    pub timeline: TimelineRef,
    /// The Raft log position the database reflects.
    pub log_index: u64,
    pub log_term: u64,
    /// RFC 3339, UTC, milliseconds: `2025-01-02T03:04:05.678Z`.
    pub created_at: String,
    pub created_at_unix_ms: i64,
    pub sqlite_page_size: u32,
    pub sqlite_page_count: u64,
    /// sha256 (hex) and size of the SQLite file.
    pub plain_sha256: String,
    pub plain_size: u64,
    /// sha256 (hex) and size of the object as stored (`db.sqlite.zst[.age]`).
    pub stored_sha256: String,
    pub stored_size: u64,
    pub compression: Compression,
    pub encryption: Option<EncryptionInfo>,
    pub raftlite_version: String,
    /// Index of the last entry that changed user data when the backup was taken (absent in
    /// manifests of raftlite before it was recorded: `log_index` stands in). Two backups of one
    /// timeline with the same value hold the same data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_changed_index: Option<u64>,
    /// Raft term of the leader that took the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_term: Option<u64>,
    /// The schedule slot (Unix ms of its start) the backup was taken for; absent when it was
    /// taken on request. Of two sets for one slot only the one with the higher `leader_term`
    /// counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_unix_ms: Option<i64>,
    /// Full, or incremental on top of `parent`. Manifests from before incrementals are full.
    #[serde(default)]
    pub kind: BackupKind,
    /// The set an incremental applies on top of; `None` for a full backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Digest of the database this set restores to, page by page
    /// ([`crate::incremental::PageDigests`]): what an incremental on top of it expects, and
    /// what a restore of a chain checks at its end. Absent in fulls from before incrementals,
    /// which therefore never start a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages_digest: Option<String>,
    /// Incrementals from the chain's full backup to this set (0 for a full).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub chain_depth: u32,
    /// Page bytes (uncompressed) of the incrementals from the chain's full to this set: a full
    /// is due when they pass half the database.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub chain_delta_bytes: u64,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    /// [`Manifest::data_changed_index`], or the log index for older manifests.
    pub fn data_index(&self) -> u64 {
        self.data_changed_index.unwrap_or(self.log_index)
    }

    /// The id of the backup set this manifest describes.
    pub fn id(&self) -> Result<BackupId, BackupError> {
        BackupId::for_backup(
            &self.cluster_id,
            self.created_at_unix_ms,
            self.timeline.counter,
            self.log_index,
        )
    }
}

impl Manifest {
    /// The data object's file name inside the set.
    pub fn object_name(&self) -> &'static str {
        match (self.kind, self.encryption.is_some()) {
            (BackupKind::Full, true) => DATA_FILE_ENCRYPTED,
            (BackupKind::Full, false) => DATA_FILE,
            (BackupKind::Incremental, true) => PAGES_FILE_ENCRYPTED,
            (BackupKind::Incremental, false) => PAGES_FILE,
        }
    }

    pub fn is_incremental(&self) -> bool {
        self.kind == BackupKind::Incremental
    }

    /// Checks what a reader relies on; `Err` carries the reason.
    pub(crate) fn check(&self, id: &BackupId) -> Result<(), String> {
        if self.format_version > FORMAT_VERSION {
            return Err(format!(
                "format_version {} was written by a newer raftlite (this one reads up to {}); \
                 upgrade raftlite",
                self.format_version, FORMAT_VERSION
            ));
        }
        if self.format_version == 0 {
            return Err("format_version 0 is not a valid manifest".into());
        }
        if self.cluster_id != id.cluster_id() {
            return Err(format!(
                "it names cluster {:?} but lies under cluster folder {:?}",
                self.cluster_id,
                id.cluster_id()
            ));
        }
        if self.compression.algorithm != "zstd" {
            return Err(format!(
                "unknown compression {:?} (only zstd)",
                self.compression.algorithm
            ));
        }
        for (name, value) in [
            ("plain_sha256", &self.plain_sha256),
            ("stored_sha256", &self.stored_sha256),
        ] {
            if !is_hex_digest(value) {
                return Err(format!("{name} is not a sha256 in hex"));
            }
        }
        if let Some(digest) = &self.pages_digest {
            if !is_hex_digest(digest) {
                return Err("pages_digest is not a 32-byte digest in hex".into());
            }
        }
        match (self.kind, &self.parent) {
            (BackupKind::Full, None) => Ok(()),
            (BackupKind::Full, Some(_)) => Err("a full backup names a parent".into()),
            (BackupKind::Incremental, None) => Err("an incremental names no parent".into()),
            (BackupKind::Incremental, Some(parent)) => {
                if self.format_version < INCREMENTAL_FORMAT_VERSION {
                    return Err(format!(
                        "an incremental with format_version {}",
                        self.format_version
                    ));
                }
                if self.pages_digest.is_none() || !is_hex_digest(&parent.pages_digest) {
                    return Err("an incremental without both page digests".into());
                }
                if parent.id.cluster_id() != self.cluster_id {
                    return Err(format!(
                        "its parent {} belongs to another cluster",
                        parent.id
                    ));
                }
                if self.chain_depth == 0 {
                    return Err("an incremental with chain_depth 0".into());
                }
                Ok(())
            }
        }
    }
}

fn is_hex_digest(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
impl Manifest {
    /// A full backup's manifest for tests: cluster `cluster_id`, timeline `timeline`, log index
    /// `log_index`, taken at `created`; placeholder hashes and sizes.
    pub(crate) fn sample(
        cluster_id: &str,
        timeline: TimelineRef,
        log_index: u64,
        created: i64,
    ) -> Manifest {
        Manifest {
            format_version: FULL_FORMAT_VERSION,
            cluster_id: cluster_id.into(),
            node_id: 1,
            timeline,
            log_index,
            log_term: 1,
            created_at: rfc3339(created),
            created_at_unix_ms: created,
            sqlite_page_size: 4096,
            sqlite_page_count: 1,
            plain_sha256: "0".repeat(64),
            plain_size: 4096,
            stored_sha256: "0".repeat(64),
            stored_size: 10,
            compression: Compression {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: None,
            raftlite_version: "0".into(),
            data_changed_index: None,
            leader_term: None,
            slot_unix_ms: None,
            kind: BackupKind::Full,
            parent: None,
            pages_digest: None,
            chain_depth: 0,
            chain_delta_bytes: 0,
        }
    }
}

/// sha256 of `text`, hex.
pub(crate) fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    raftlite_store::hex::encode(&sha2::Sha256::digest(text.as_bytes()))
}

/// UTC calendar fields of a Unix time in milliseconds.
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    milli: u32,
}

fn utc(unix_ms: i64) -> Utc {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let (year, month, day) = raftlite_store::calendar::civil_from_days(days);
    Utc {
        year,
        month,
        day,
        hour: (ms_of_day / 3_600_000) as u32,
        minute: (ms_of_day / 60_000 % 60) as u32,
        second: (ms_of_day / 1000 % 60) as u32,
        milli: (ms_of_day % 1000) as u32,
    }
}

/// `2025-01-02T03:04:05.678Z`
pub(crate) fn rfc3339(unix_ms: i64) -> String {
    let t = utc(unix_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.milli
    )
}

/// `20250102T030405.678Z`: sorts like the time, and is safe in any object key or file name.
pub(crate) fn compact_timestamp(unix_ms: i64) -> String {
    let t = utc(unix_ms);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second, t.milli
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(1_735_689_600_000), "2025-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(compact_timestamp(1_735_787_045_678), "20250102T030405.678Z");
    }

    #[test]
    fn ids() {
        let id: BackupId = "c1/20250102T030405.678Z-1-42".parse().unwrap();
        assert_eq!(id.cluster_id(), "c1");
        assert_eq!(id.set(), "20250102T030405.678Z-1-42");
        assert_eq!(id.to_string(), "c1/20250102T030405.678Z-1-42");
        for bad in ["c1", "/x", "c1/", "c1/a/b", "../x", "c 1/x", "c1/.."] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"c1/20250102T030405.678Z-1-42\"");
        assert_eq!(serde_json::from_str::<BackupId>(&json).unwrap(), id);
    }

    #[test]
    fn hex_and_fingerprint() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
