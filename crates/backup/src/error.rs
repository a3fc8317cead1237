//! The one error type of the backup engine. Every message names the destination as
//! [`crate::Destination`] displays it (never with credentials) and, where a person can act, says
//! what to do.

use std::path::PathBuf;

use crate::BackupId;

/// What went wrong in a backup, list, verify or download. Variants are distinct per failed check
/// so callers (CLI, HTTP, metrics) can tell them apart without parsing messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error(
        "invalid backup destination {url}: {reason}; use file:///absolute/dir, \
         s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or memory://"
    )]
    InvalidDestination { url: String, reason: String },

    #[error(
        "cannot open backup destination {dest}: {source}; check the URL and the credentials \
         and endpoint in the environment (AWS_*, GOOGLE_*, AZURE_*)"
    )]
    OpenDestination {
        dest: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error("invalid backup metadata: {reason}")]
    InvalidMeta { reason: String },

    #[error("invalid backup options: {reason}")]
    InvalidOptions { reason: String },

    #[error(
        "invalid age recipient #{index} ({recipient}): {reason}; a recipient is a public key \
         starting with `age1` (age-keygen prints it as `Public key: age1...`)"
    )]
    InvalidRecipient {
        index: usize,
        recipient: String,
        reason: String,
    },

    #[error(
        "invalid age identity: {reason}; give the contents of an age identity file (lines \
         `AGE-SECRET-KEY-1...`, `#` comments allowed) or the passphrase the backup was made with"
    )]
    InvalidIdentity { reason: String },

    #[error("cannot read the database to back up at {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} is not a SQLite database ({reason}); back up a file made with Store::snapshot_to"
    )]
    NotSqlite { path: PathBuf, reason: String },

    #[error(
        "the database at {path} disagrees with the backup metadata: {reason}; pass the \
         MetaState that Store::snapshot_to returned for this very file"
    )]
    MetaMismatch { path: PathBuf, reason: String },

    #[error("compressing or encrypting {path} for {dest} failed: {reason}")]
    Encode {
        path: PathBuf,
        dest: String,
        reason: String,
    },

    #[error(
        "backup {id} already exists in {dest}; backups are never overwritten, wait a moment \
         (set names carry the time in milliseconds) or delete that set first"
    )]
    AlreadyExists { id: BackupId, dest: String },

    #[error(
        "backup {id} to {dest} was discarded before its manifest was written: {reason}; it does \
         not count as a backup (the current leader takes the next one)"
    )]
    Fenced {
        id: BackupId,
        dest: String,
        reason: String,
    },

    #[error(
        "uploading {object} to {dest} failed: {source}; the partial upload was aborted and no \
         manifest was written, so readers ignore this set; check connectivity and permissions \
         (write access to the bucket/prefix) and run the backup again"
    )]
    Upload {
        dest: String,
        object: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error(
        "writing manifest.json of backup {id} to {dest} failed: {source}; the data object was \
         uploaded but without a manifest the set is ignored; run the backup again"
    )]
    ManifestWrite {
        id: BackupId,
        dest: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error("listing backups in {dest} failed: {source}; check the URL, credentials and permissions (list access)")]
    List {
        dest: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error("invalid backup id {id:?}: {reason}; ids look like `<cluster-id>/<set>` as `backup list` prints them")]
    InvalidId { id: String, reason: String },

    #[error("backup {id} not found in {dest} (no readable manifest.json); list the backups to see which exist")]
    NotFound { id: BackupId, dest: String },

    #[error(
        "backup {id} in {dest} is an incremental whose chain is broken: {reason}; it cannot be \
         restored: use a full backup or an incremental of an intact chain (`backup list` shows \
         the parents)"
    )]
    BrokenChain {
        id: BackupId,
        dest: String,
        reason: String,
    },

    #[error(
        "backup {id} in {dest}: applying its chain gave a database with page digest {actual}, \
         the manifest says {expected}; a link was altered or taken wrongly: use another backup"
    )]
    ChainDigestMismatch {
        id: BackupId,
        dest: String,
        expected: String,
        actual: String,
    },

    #[error("manifest.json of backup {id} in {dest} is unusable: {reason}; use another backup")]
    BadManifest {
        id: BackupId,
        dest: String,
        reason: String,
    },

    #[error("downloading backup {id} from {dest} failed: {source}; check connectivity and permissions and retry")]
    Download {
        id: BackupId,
        dest: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error(
        "backup {id} in {dest} is truncated: the stored object has {actual} bytes but the \
         manifest says {expected}; this backup cannot be restored, use an older one"
    )]
    Truncated {
        id: BackupId,
        dest: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "backup {id} in {dest}: the stored object has {actual} bytes but the manifest says \
         {expected}; it was modified after upload, use another backup"
    )]
    StoredSizeMismatch {
        id: BackupId,
        dest: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "backup {id} in {dest} is corrupt: sha256 of the stored object is {actual}, the \
         manifest says {expected}; use another backup"
    )]
    StoredHashMismatch {
        id: BackupId,
        dest: String,
        expected: String,
        actual: String,
    },

    #[error(
        "backup {id} in {dest} is encrypted ({scheme}); give the age identity file (or the \
         passphrase) it was encrypted for"
    )]
    IdentityRequired {
        id: BackupId,
        dest: String,
        scheme: String,
    },

    #[error(
        "backup {id} in {dest} is not encrypted for this identity ({scheme}): {reason}; give \
         the identity matching one of the recipients it was made for (or the right passphrase)"
    )]
    WrongKey {
        id: BackupId,
        dest: String,
        scheme: String,
        reason: String,
    },

    #[error(
        "backup {id} in {dest}: the stored object is not a valid age file or fails \
         authentication although its hash matches the manifest ({reason}); use another backup"
    )]
    Decrypt {
        id: BackupId,
        dest: String,
        reason: String,
    },

    #[error(
        "backup {id} in {dest}: bad zstd frame ({reason}) although the stored hash matches the \
         manifest; use another backup"
    )]
    BadZstdFrame {
        id: BackupId,
        dest: String,
        reason: String,
    },

    #[error(
        "backup {id} in {dest}: the decompressed database has {actual} bytes but the manifest \
         says {expected}; use another backup"
    )]
    PlainSizeMismatch {
        id: BackupId,
        dest: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "backup {id} in {dest}: sha256 of the decompressed database is {actual}, the manifest \
         says {expected}; use another backup"
    )]
    PlainHashMismatch {
        id: BackupId,
        dest: String,
        expected: String,
        actual: String,
    },

    #[error(
        "backup {id} in {dest}: the database fails PRAGMA integrity_check: {report}; use \
         another backup"
    )]
    IntegrityCheck {
        id: BackupId,
        dest: String,
        report: String,
    },

    #[error(
        "backup {id} in {dest}: the database has {actual} pages of {actual_page_size} bytes, \
         the manifest says {expected} pages of {expected_page_size} bytes; use another backup"
    )]
    PageCountMismatch {
        id: BackupId,
        dest: String,
        expected: u64,
        actual: u64,
        expected_page_size: u32,
        actual_page_size: u32,
    },

    #[error(
        "backup {id} in {dest}: the database's _raftlite_meta disagrees with the manifest: \
         {reason}; use another backup"
    )]
    RestoredMetaMismatch {
        id: BackupId,
        dest: String,
        reason: String,
    },

    #[error("backup {id} from {dest}: local file {path}: {source}; check free space and permissions there")]
    Local {
        id: BackupId,
        dest: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot make an archive segment: {reason}; nothing was written (this is a bug in the \
         caller, not damage in the archive)"
    )]
    InvalidSegment { reason: String },

    #[error(
        "archive segment {segment} is unusable: {reason}; check the archive with `raftlite \
         backup verify` (a restore cannot go past this segment)"
    )]
    ArchiveSegment { segment: String, reason: String },

    #[error(
        "archive segment {segment} is encrypted ({scheme}); give the age identity file (or the \
         passphrase) the archive was encrypted for"
    )]
    ArchiveIdentityRequired { segment: String, scheme: String },

    #[error(
        "archive segment {segment} is not encrypted for this identity ({scheme}): {reason}; give \
         the identity matching one of the recipients it was made for (or the right passphrase)"
    )]
    ArchiveWrongKey {
        segment: String,
        scheme: String,
        reason: String,
    },

    #[error(
        "a different archive segment {segment} already exists in {dest} ({reason}): a stale \
         leader or a second cluster writing under the same cluster id; nothing was overwritten; \
         check the archive with `raftlite backup verify` and make sure only one cluster writes \
         to this destination under this cluster id"
    )]
    ArchiveConflict {
        dest: String,
        segment: String,
        reason: String,
    },

    #[error(
        "{op} archive object {object} in {dest} failed: {source}; check connectivity and \
         permissions (list, read and write access to the bucket/prefix) and retry"
    )]
    ArchiveStore {
        dest: String,
        op: &'static str,
        object: String,
        #[source]
        source: Box<object_store::Error>,
    },

    #[error("internal error in the backup engine for {dest}: {reason}")]
    Internal { dest: String, reason: String },
}
