//! The continuous archive of the committed Raft log (issue 20): segments of committed entries
//! beside the backups, for point-in-time restore. This module is the format and the
//! destination-side operations; the leader's archiver decides what goes into a segment and
//! when.
//!
//! # Layout
//!
//! ```text
//! <prefix>/<cluster-id>/archive/<timeline-id>/<first:020>-<last:020>.seg          a segment
//! <prefix>/<cluster-id>/archive/<timeline-id>/gaps/<from:020>-<to:020>.json      a recorded gap
//! ```
//!
//! Indexes are zero-padded to 20 digits so names sort like the ranges they hold. Every object
//! is written create-only and never changed: a segment re-sent by a new leader with the same
//! content is accepted ([`PutOutcome::AlreadyPresent`]), a different one under the same name is
//! refused ([`crate::BackupError::ArchiveConflict`]).
//!
//! # Segment format (version 1)
//!
//! ```text
//! offset 0   8 bytes   magic "RLARCH1\n"
//! offset 8   4 bytes   header length N, u32 little-endian, at most 64 KiB
//! offset 12  N bytes   header: JSON (SegmentHeader), in clear
//! offset 12+N          body: one zstd frame (content size and checksum included) of the
//!                      postcard-encoded Vec<ArchivedEntry>; when encrypted, that frame inside
//!                      an age v1 file (binary), to the same recipients or passphrase as backups
//! ```
//!
//! The header stays in clear, like a backup's `manifest.json`, so the leader (which holds only
//! public keys) can find its watermark and `backup list` can show coverage without the
//! identity. It records the cluster, timeline, index/term range, the smallest and largest entry
//! time (`at_unix_ms` the leader stamped in the entries, never object metadata), the entry
//! count, sha256 of the body as stored and of the plain entries, the plain size, compression,
//! encryption (scheme and recipient fingerprints, never keys), the writing node, creation time
//! and raftlite version, and `prev_segment_sha256`: the sha256 of the whole previous segment
//! object of the timeline (`None` for the first segment and the first one after a recorded
//! gap). Those hashes chain the segments: [`verify_archive_timeline`] notices a segment that
//! was replaced, removed or altered.
//!
//! The plain body is postcard: a varint count, then per entry `index` (varint), `term`
//! (varint), `at_unix_ms` (0x00 for none, or 0x01 and a zigzag varint), `kind` (varint: 0
//! blank, 1 membership, 2 command), and the payload (varint length, bytes). Payloads are the
//! consensus layer's own encoding of the entry.
//!
//! # Reading a segment without raftlite
//!
//! ```sh
//! n=$(od -An -t u4 -j 8 -N 4 seg | tr -d ' ')     # header length (little-endian host)
//! tail -c +13 seg | head -c "$n" | jq .           # the header
//! tail -c +$((13 + n)) seg > body                 # sha256sum body = body_sha256
//! age -d -i key.txt body | zstd -d > entries      # encrypted; `zstd -d < body` if not
//! sha256sum entries                               # = plain_sha256
//! ```
//!
//! # Limits
//!
//! A segment holds at most [`MAX_SEGMENT_PLAIN_BYTES`] of plain entries; readers refuse
//! objects over [`MAX_SEGMENT_OBJECT_BYTES`] and headers over 64 KiB unread, so a damaged or
//! hostile object cannot make them allocate without bound.

mod lease;
mod list;
mod retention;
mod segment;
mod store;
#[cfg(test)]
mod tests;

pub use lease::{release_lease, take_lease, RestoreLease, LEASE_DURATION};
pub use list::{
    archive_clusters, list_archive, list_segments, rfc3339_utc, ArchiveList, SegmentRef,
    TimelineCoverage,
};
pub use retention::{
    archive_needs, kept_backups, prune_archive, window_base, window_start, ArchivePruneReport,
    KeptSegments, PrunedKind, PrunedObject, TimelinePrune, DEFAULT_ARCHIVE_KEEP_WITHIN,
};
pub(crate) use segment::{check_body, split_object};
pub use segment::{
    decode_segment, encode_segment, entry_encoded_len, read_segment_header, segment_path,
    ArchivedEntry, ArchivedKind, EncodedSegment, SegmentDraft, SegmentHeader,
};
pub use store::{
    archive_watermark, claim_path, claim_segment, claim_timeline, put_segment,
    put_segment_for_chain, read_segment, record_gap, timeline_claim_path, timeline_history,
    verify_archive_timeline, ChainProblem, ChainReport, GapRecord, PutOutcome, SegmentClaim,
    Watermark,
};
pub(crate) use store::{get_small_object, put_object_create_only, CLAIMS_DIR, TIMELINES_DIR};

/// The segment format this crate writes; readers refuse anything newer.
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;
/// The first 8 bytes of every segment object.
pub const SEGMENT_MAGIC: &[u8; 8] = b"RLARCH1\n";
/// Plain (postcard) bytes a segment may hold. The archiver closes segments at 4 MiB; this
/// leaves room for one large entry.
pub const MAX_SEGMENT_PLAIN_BYTES: u64 = 64 << 20;
/// Stored bytes of a segment object readers accept: the plain limit plus what zstd and age can
/// add to incompressible data, with margin.
pub const MAX_SEGMENT_OBJECT_BYTES: u64 = 80 << 20;
/// Bytes of a segment header readers accept.
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 10;
/// Name of the folder under `<cluster-id>/` holding the archive.
pub(crate) const ARCHIVE_DIR: &str = "archive";
/// Name of the folder under a timeline's archive holding recorded gaps.
pub(crate) const GAPS_DIR: &str = "gaps";
const SEGMENT_SUFFIX: &str = ".seg";
const GAP_SUFFIX: &str = ".json";

/// `<first:020>-<last:020>.seg`
pub(crate) fn segment_file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}{SEGMENT_SUFFIX}")
}

/// `<from:020>-<to:020>.json`
pub(crate) fn gap_file_name(from: u64, to: u64) -> String {
    format!("{from:020}-{to:020}{GAP_SUFFIX}")
}

/// The range of a segment file name, `None` for any other name.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    parse_range(name.strip_suffix(SEGMENT_SUFFIX)?)
}

/// The range of a gap record's file name, `None` for any other name.
pub(crate) fn parse_gap_name(name: &str) -> Option<(u64, u64)> {
    parse_range(name.strip_suffix(GAP_SUFFIX)?)
}

fn parse_range(stem: &str) -> Option<(u64, u64)> {
    let (a, b) = stem.split_once('-')?;
    let number = |s: &str| {
        if s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    let (a, b) = (number(a)?, number(b)?);
    (a <= b).then_some((a, b))
}

/// sha256 of `bytes`, lowercase hex.
pub(crate) fn sha256_bytes_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    raftlite_store::hex::encode(&sha2::Sha256::digest(bytes))
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
