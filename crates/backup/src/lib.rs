//! raftlite's backup engine: a consistent SQLite file (taken with `Store::snapshot_to`),
//! compressed with zstd, optionally encrypted with age, uploaded to any object store with a
//! manifest written last. DESIGN.md section 4.
//!
//! # Format
//!
//! ```text
//! <prefix>/<cluster-id>/backups/<set>/db.sqlite.zst        unencrypted, or
//! <prefix>/<cluster-id>/backups/<set>/db.sqlite.zst.age    encrypted
//! <prefix>/<cluster-id>/backups/<set>/manifest.json        written last
//!
//! <set> = <UTC YYYYMMDDTHHMMSS.mmmZ>-<timeline counter>-<log index>
//! ```
//!
//! - The data object is one standard zstd frame (content size and checksum included) of the
//!   SQLite file; when encrypted, that frame inside a standard age v1 file (binary, not armored),
//!   to X25519 recipients or a passphrase.
//! - `manifest.json` ([`Manifest`]) records the cluster, node, timeline, Raft log index and
//!   term, creation time, SQLite page size and count, size and sha256 of both the plain file
//!   and the stored object, the zstd level, the encryption scheme with sha256 fingerprints of
//!   the recipients (never keys) and the raftlite version.
//! - A set without `manifest.json` does not exist for readers: it is a backup in progress or
//!   one that failed. Backups are never overwritten.
//!
//! # Recovering without raftlite
//!
//! A backup is a plain SQLite file inside standard containers:
//!
//! ```sh
//! age -d -i key.txt db.sqlite.zst.age | zstd -d > db.sqlite     # encrypted to a key
//! age -d db.sqlite.zst.age | zstd -d > db.sqlite                # encrypted with a passphrase
//! zstd -d db.sqlite.zst -o db.sqlite                            # not encrypted
//! sha256sum db.sqlite    # compare with plain_sha256 in manifest.json
//! ```
//!
//! # API
//!
//! [`Destination::parse`] a URL, then [`create_backup`], [`list_backups`], [`verify_backup`]
//! (everything checked, file discarded) or [`download_backup`] (everything checked, file kept:
//! the first half of a restore). All are `async` (tokio) and keep memory bounded whatever the
//! database size; the CPU-heavy parts run on tokio's blocking pool.
//!
//! [`archive`] is the continuous archive of the committed Raft log beside the backups
//! (`<prefix>/<cluster-id>/archive/<timeline>/`), for point-in-time restore: the segment format
//! (clear JSON header, zstd body, age like backups) and its create-only uploads, watermark, gap
//! records, listing and chain check.
//!
//! [`service`] runs the engine on the leader (requested and scheduled backups, retention,
//! restore drills) against the cluster through [`service::BackupCluster`];
//! [`auto_backup`] maps rqlite's auto-backup and auto-restore files onto its settings.

pub mod archive;
pub mod auto_backup;
mod checks;
pub mod copy;
mod create;
mod crypto;
mod destination;
mod error;
pub mod incremental;
mod keep;
mod keys;
mod list;
mod manifest;
mod pipe;
pub mod retention;
pub mod schedule;
pub mod service;
mod verify;

pub use age::secrecy;
pub use checks::{checks_of, failed_check, human_bytes, Check};
pub use copy::{copy_destination, CopyReport, CopySelection};
pub use create::{
    create_backup, create_backup_fenced, create_backup_open, create_full_open, create_incremental,
    BackupMeta, CreateOptions, Created, IncrementalUpload, OpenSource, Spill, PARTS_IN_FLIGHT,
    PART_SIZE,
};
pub use crypto::{recipient_fingerprint, Encryption, Identity};
pub use destination::Destination;
pub use error::BackupError;
pub use keep::{KeepRules, KeepRulesError};
pub use keys::{encryption_from, identity_from, passphrase_from_env, KeyError};
pub use list::{list_backups, BackupList, ListWarning};
pub use manifest::{
    BackupId, BackupKind, Compression, EncryptionInfo, EncryptionScheme, Manifest, ParentRef,
    TimelineRef, DATA_FILE, DATA_FILE_ENCRYPTED, FORMAT_VERSION, MANIFEST_FILE, PAGES_FILE,
    PAGES_FILE_ENCRYPTED, VERIFIED_FILE,
};
pub use retention::{
    plan as plan_retention, prune, Candidate, PruneReport, RetentionPlan, RetentionPolicy,
};
pub use schedule::{format_duration, parse_duration, Schedule};
pub use verify::{
    backup_chain, download_backup, mark_verified, read_manifest, stream_backup, stream_chain,
    verify_backup, verify_backup_in, verify_stored, VerifyReport,
};
