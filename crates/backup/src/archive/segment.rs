//! One archive segment: entries -> postcard -> zstd -> (age) -> `RLARCH1\n` + header + body.
//! Everything here is synchronous and in memory (a segment is at most
//! [`MAX_SEGMENT_PLAIN_BYTES`] plain); callers on an async runtime run it on the blocking pool.

use std::io::{self, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::crypto::{Encryption, Identity};
use crate::destination::Destination;
use crate::error::BackupError;
use crate::manifest::{check_segment, Compression, EncryptionInfo, TimelineRef};
use crate::verify::identity_mismatch;

use super::{
    is_sha256_hex, sha256_bytes_hex, ARCHIVE_FORMAT_VERSION, MAX_HEADER_BYTES,
    MAX_SEGMENT_PLAIN_BYTES, SEGMENT_MAGIC,
};

/// What kind of log entry; the payload is opaque bytes for this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchivedKind {
    Blank,
    Membership,
    Command,
}

/// One committed Raft log entry as archived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedEntry {
    pub index: u64,
    pub term: u64,
    /// The leader's clock stamped in the entry (`Command::Write`'s `at_unix_ms`); `None` for
    /// entries without one.
    pub at_unix_ms: Option<i64>,
    pub kind: ArchivedKind,
    /// The entry's payload as the consensus layer encodes it.
    #[serde(with = "raftlite_consensus::types::byte_string")]
    pub payload: Vec<u8>,
}

/// What [`encode_segment`] turns into a segment.
#[derive(Clone, Debug)]
pub struct SegmentDraft<'a> {
    pub cluster_id: &'a str,
    pub timeline: &'a TimelineRef,
    /// The node (leader) writing the segment.
    pub node_id: u64,
    /// Non-empty, contiguous indexes, non-decreasing terms.
    pub entries: &'a [ArchivedEntry],
    /// sha256 (hex) of the whole previous segment object of this timeline; `None` for a
    /// timeline's first segment or the first one after a recorded gap.
    pub prev_segment_sha256: Option<String>,
}

/// The clear-text header of a segment (JSON): everything needed to list, chain and check a
/// segment without its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub format_version: u32,
    pub cluster_id: String,
    pub timeline: TimelineRef,
    pub first_index: u64,
    pub last_index: u64,
    pub first_term: u64,
    pub last_term: u64,
    /// Smallest and largest `at_unix_ms` among the entries (`None` when none has one).
    pub first_at_unix_ms: Option<i64>,
    pub last_at_unix_ms: Option<i64>,
    pub entry_count: u64,
    /// sha256 (hex) of the whole previous segment object; see [`SegmentDraft`].
    pub prev_segment_sha256: Option<String>,
    /// sha256 (hex) of the body as stored (after zstd and age).
    pub body_sha256: String,
    /// sha256 (hex) and size of the plain postcard bytes of the entries.
    pub plain_sha256: String,
    pub plain_bytes: u64,
    pub compression: Compression,
    /// Scheme and recipient fingerprints (never keys), as in a backup's manifest.
    pub encryption: Option<EncryptionInfo>,
    pub node_id: u64,
    pub created_at_unix_ms: i64,
    pub raftlite_version: String,
}

impl SegmentHeader {
    /// `<timeline-id>/<first:020>-<last:020>.seg`: how errors name a segment.
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            self.timeline.id,
            super::segment_file_name(self.first_index, self.last_index)
        )
    }

    /// Checks what readers rely on; `Err` carries the reason.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.format_version == 0 || self.format_version > ARCHIVE_FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not one this raftlite reads (1 to {}); a newer raftlite \
                 wrote it, upgrade raftlite",
                self.format_version, ARCHIVE_FORMAT_VERSION
            ));
        }
        check_segment(&self.cluster_id).map_err(|r| format!("cluster id: {r}"))?;
        check_segment(&self.timeline.id).map_err(|r| format!("timeline id: {r}"))?;
        if self.first_index > self.last_index {
            return Err(format!(
                "first_index {} is after last_index {}",
                self.first_index, self.last_index
            ));
        }
        if self.last_index - self.first_index != self.entry_count.wrapping_sub(1)
            || self.entry_count == 0
        {
            return Err(format!(
                "entry_count {} does not match the range {}-{}",
                self.entry_count, self.first_index, self.last_index
            ));
        }
        if self.first_term > self.last_term {
            return Err(format!(
                "first_term {} is after last_term {}",
                self.first_term, self.last_term
            ));
        }
        if let (Some(a), Some(b)) = (self.first_at_unix_ms, self.last_at_unix_ms) {
            if a > b {
                return Err(format!("first_at_unix_ms {a} is after last_at_unix_ms {b}"));
            }
        }
        if self.first_at_unix_ms.is_some() != self.last_at_unix_ms.is_some() {
            return Err("only one of first_at_unix_ms and last_at_unix_ms is set".into());
        }
        for (name, value) in [
            ("body_sha256", Some(&self.body_sha256)),
            ("plain_sha256", Some(&self.plain_sha256)),
            ("prev_segment_sha256", self.prev_segment_sha256.as_ref()),
        ] {
            if let Some(v) = value {
                if !is_sha256_hex(v) {
                    return Err(format!("{name} is not a sha256 in lowercase hex"));
                }
            }
        }
        if self.plain_bytes > MAX_SEGMENT_PLAIN_BYTES {
            return Err(format!(
                "plain_bytes {} is more than a segment may hold ({MAX_SEGMENT_PLAIN_BYTES})",
                self.plain_bytes
            ));
        }
        if self.compression.algorithm != "zstd" {
            return Err(format!(
                "unknown compression {:?} (only zstd)",
                self.compression.algorithm
            ));
        }
        Ok(())
    }

    /// Same entries at the same place in the chain: what makes a re-sent segment harmless even
    /// when its bytes differ (age encrypts with a fresh key every time, and levels may differ).
    pub(crate) fn same_content(&self, other: &SegmentHeader) -> bool {
        self.cluster_id == other.cluster_id
            && self.timeline.id == other.timeline.id
            && self.first_index == other.first_index
            && self.last_index == other.last_index
            && self.first_term == other.first_term
            && self.last_term == other.last_term
            && self.plain_sha256 == other.plain_sha256
            && self.prev_segment_sha256 == other.prev_segment_sha256
    }

    /// How `self` differs from `other` (for conflict messages); empty when the same content.
    pub(crate) fn differences(&self, other: &SegmentHeader) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{what} {a} there, {b} here"));
            }
        };
        diff("cluster", self.cluster_id.clone(), other.cluster_id.clone());
        diff(
            "timeline",
            self.timeline.id.clone(),
            other.timeline.id.clone(),
        );
        diff(
            "index range",
            format!("{}-{}", self.first_index, self.last_index),
            format!("{}-{}", other.first_index, other.last_index),
        );
        diff(
            "terms",
            format!("{}-{}", self.first_term, self.last_term),
            format!("{}-{}", other.first_term, other.last_term),
        );
        diff(
            "plain_sha256",
            self.plain_sha256.clone(),
            other.plain_sha256.clone(),
        );
        diff(
            "prev_segment_sha256",
            format!("{:?}", self.prev_segment_sha256),
            format!("{:?}", other.prev_segment_sha256),
        );
        out
    }
}

/// A segment ready to upload with [`super::put_segment`].
#[derive(Clone, Debug)]
pub struct EncodedSegment {
    pub header: SegmentHeader,
    /// The whole object: magic, header length, header, body.
    pub bytes: Bytes,
    /// sha256 (hex) of `bytes`: the next segment's `prev_segment_sha256`.
    pub object_sha256: String,
    pub path: ObjectPath,
}

/// `<prefix>/<cluster-id>/archive/<timeline-id>/<first:020>-<last:020>.seg`
pub fn segment_path(
    dest: &Destination,
    cluster_id: &str,
    timeline_id: &str,
    first: u64,
    last: u64,
) -> ObjectPath {
    dest.archive_dir(cluster_id, timeline_id)
        .join(super::segment_file_name(first, last).as_str())
}

/// Bytes `entry` takes in a segment's plain (postcard) body: exact for postcard 1.x, for
/// sizing segments before encoding. The body adds a count (1-10 bytes) in front of them.
pub fn entry_encoded_len(entry: &ArchivedEntry) -> usize {
    let stamp = match entry.at_unix_ms {
        None => 1,
        // postcard writes i64 as a zigzag varint.
        Some(at) => 1 + varint_len(((at << 1) ^ (at >> 63)) as u64),
    };
    varint_len(entry.index)
        + varint_len(entry.term)
        + stamp
        + 1 // the kind: a variant index below 128
        + varint_len(entry.payload.len() as u64)
        + entry.payload.len()
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn invalid(reason: impl Into<String>) -> BackupError {
    BackupError::InvalidSegment {
        reason: reason.into(),
    }
}

/// Builds a segment of `draft`'s entries: postcard, one zstd frame at `zstd_level`, inside an
/// age file when `encryption` is given. Fails (changing nothing) on a draft that breaks the
/// rules of [`SegmentDraft`] or holds more than [`MAX_SEGMENT_PLAIN_BYTES`]. CPU-bound (and
/// about a second of scrypt for a passphrase): call it on a blocking thread.
pub fn encode_segment(
    dest: &Destination,
    draft: &SegmentDraft<'_>,
    encryption: Option<&Encryption>,
    zstd_level: i32,
) -> Result<EncodedSegment, BackupError> {
    check_segment(draft.cluster_id)
        .map_err(|r| invalid(format!("cluster id {:?}: {r}", draft.cluster_id)))?;
    check_segment(&draft.timeline.id)
        .map_err(|r| invalid(format!("timeline id {:?}: {r}", draft.timeline.id)))?;
    if let Some(prev) = &draft.prev_segment_sha256 {
        if !is_sha256_hex(prev) {
            return Err(invalid(
                "prev_segment_sha256 is not a sha256 in lowercase hex",
            ));
        }
    }
    let summary = summarize(draft.entries).map_err(invalid)?;
    let plain = postcard::to_stdvec(draft.entries)
        .map_err(|e| invalid(format!("cannot encode the entries: {e}")))?;
    if plain.len() as u64 > MAX_SEGMENT_PLAIN_BYTES {
        return Err(invalid(format!(
            "the entries take {} bytes, more than a segment may hold ({MAX_SEGMENT_PLAIN_BYTES}); \
             close segments earlier",
            plain.len()
        )));
    }
    let body = compress_and_encrypt(&plain, encryption, zstd_level)
        .map_err(|e| invalid(format!("compressing or encrypting the entries failed: {e}")))?;

    let header = SegmentHeader {
        format_version: ARCHIVE_FORMAT_VERSION,
        cluster_id: draft.cluster_id.to_string(),
        timeline: draft.timeline.clone(),
        first_index: summary.first_index,
        last_index: summary.last_index,
        first_term: summary.first_term,
        last_term: summary.last_term,
        first_at_unix_ms: summary.first_at,
        last_at_unix_ms: summary.last_at,
        entry_count: draft.entries.len() as u64,
        prev_segment_sha256: draft.prev_segment_sha256.clone(),
        body_sha256: sha256_bytes_hex(&body),
        plain_sha256: sha256_bytes_hex(&plain),
        plain_bytes: plain.len() as u64,
        compression: Compression {
            algorithm: "zstd".into(),
            level: zstd_level,
        },
        encryption: encryption.map(Encryption::info),
        node_id: draft.node_id,
        created_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        raftlite_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    header.check().map_err(invalid)?;
    let header_json = serde_json::to_vec(&header)
        .map_err(|e| invalid(format!("cannot serialize the header: {e}")))?;
    if header_json.len() > MAX_HEADER_BYTES {
        return Err(invalid(format!(
            "the header takes {} bytes, more than {MAX_HEADER_BYTES} (too many recipients?)",
            header_json.len()
        )));
    }
    let mut object = Vec::with_capacity(SEGMENT_MAGIC.len() + 4 + header_json.len() + body.len());
    object.extend_from_slice(SEGMENT_MAGIC);
    object.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    object.extend_from_slice(&header_json);
    object.extend_from_slice(&body);
    let path = segment_path(
        dest,
        draft.cluster_id,
        &draft.timeline.id,
        header.first_index,
        header.last_index,
    );
    Ok(EncodedSegment {
        object_sha256: sha256_bytes_hex(&object),
        bytes: Bytes::from(object),
        header,
        path,
    })
}

struct Summary {
    first_index: u64,
    last_index: u64,
    first_term: u64,
    last_term: u64,
    first_at: Option<i64>,
    last_at: Option<i64>,
}

/// Range, terms and times of `entries`, or why they cannot form a segment.
fn summarize(entries: &[ArchivedEntry]) -> Result<Summary, String> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Err("a segment needs at least one entry".into());
    };
    for pair in entries.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.index.checked_add(1) != Some(b.index) {
            return Err(format!(
                "entry {} follows entry {}: indexes must be contiguous",
                b.index, a.index
            ));
        }
        if b.term < a.term {
            return Err(format!(
                "entry {} has term {}, lower than entry {}'s term {}",
                b.index, b.term, a.index, a.term
            ));
        }
    }
    let stamps = entries.iter().filter_map(|e| e.at_unix_ms);
    Ok(Summary {
        first_index: first.index,
        last_index: last.index,
        first_term: first.term,
        last_term: last.term,
        first_at: stamps.clone().min(),
        last_at: stamps.max(),
    })
}

fn compress_and_encrypt(
    plain: &[u8],
    encryption: Option<&Encryption>,
    level: i32,
) -> Result<Vec<u8>, String> {
    let compress = |out: &mut dyn Write| -> io::Result<()> {
        let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
        encoder.include_checksum(true)?;
        encoder.set_pledged_src_size(Some(plain.len() as u64))?;
        encoder.write_all(plain)?;
        encoder.finish()?;
        Ok(())
    };
    match encryption {
        None => {
            let mut out = Vec::new();
            compress(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        }
        Some(encryption) => {
            let encryptor = encryption.encryptor()?;
            let mut out = Vec::new();
            let mut age = encryptor.wrap_output(&mut out).map_err(|e| e.to_string())?;
            compress(&mut age).map_err(|e| e.to_string())?;
            age.finish().map_err(|e| e.to_string())?;
            Ok(out)
        }
    }
}

/// How errors name a segment whose header cannot be read; [`named`] puts the path instead when
/// the caller knows it.
const UNNAMED: &str = "(header unreadable)";

/// `e` naming the segment by `path` when it could not name it by its header.
pub(crate) fn named(e: BackupError, path: &ObjectPath) -> BackupError {
    match e {
        BackupError::ArchiveSegment { segment, reason } if segment == UNNAMED => {
            BackupError::ArchiveSegment {
                segment: path.to_string(),
                reason,
            }
        }
        other => other,
    }
}

/// Splits a segment object into its header (checked) and body.
pub(crate) fn split_object(object: &[u8]) -> Result<(SegmentHeader, &[u8]), BackupError> {
    let bad = |reason: String| BackupError::ArchiveSegment {
        segment: UNNAMED.into(),
        reason,
    };
    let Some(rest) = object.strip_prefix(SEGMENT_MAGIC) else {
        return Err(bad(
            "no RLARCH1 magic at the start: not a raftlite archive segment".into(),
        ));
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return Err(bad("truncated before the header length".into()));
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {len} is more than {MAX_HEADER_BYTES} bytes"
        )));
    }
    if rest.len() < len {
        return Err(bad(format!(
            "truncated: the header needs {len} bytes, {} are left",
            rest.len()
        )));
    }
    let (json, body) = rest.split_at(len);
    let header: SegmentHeader =
        serde_json::from_slice(json).map_err(|e| bad(format!("the header is not valid: {e}")))?;
    header
        .check()
        .map_err(|reason| BackupError::ArchiveSegment {
            segment: header.name(),
            reason,
        })?;
    Ok((header, body))
}

/// Reads and checks a segment's clear-text header. Needs no identity; checks nothing of the
/// body (see [`decode_segment`]).
pub fn read_segment_header(object: &[u8]) -> Result<SegmentHeader, BackupError> {
    split_object(object).map(|(header, _)| header)
}

/// Checks that the stored body matches the header's `body_sha256`.
pub(crate) fn check_body(header: &SegmentHeader, body: &[u8]) -> Result<(), BackupError> {
    let actual = sha256_bytes_hex(body);
    if actual != header.body_sha256 {
        return Err(BackupError::ArchiveSegment {
            segment: header.name(),
            reason: format!(
                "sha256 of the body is {actual}, the header says {}: the object was modified \
                 or truncated after it was written",
                header.body_sha256
            ),
        });
    }
    Ok(())
}

/// Decodes a whole segment object: the body's sha256, age (with `identity`), zstd (refusing
/// more than the header's `plain_bytes`, at most [`MAX_SEGMENT_PLAIN_BYTES`]), the plain
/// sha256, and the entries against the header (count, contiguous range, terms, times).
pub fn decode_segment(
    object: &[u8],
    identity: Option<&Identity>,
) -> Result<(SegmentHeader, Vec<ArchivedEntry>), BackupError> {
    let (header, body) = split_object(object)?;
    check_body(&header, body)?;
    let bad = |reason: String| BackupError::ArchiveSegment {
        segment: header.name(),
        reason,
    };
    let plain = match &header.encryption {
        None => decompress(body, header.plain_bytes).map_err(|e| e.into_error(&header))?,
        Some(info) => {
            check_identity(&header, info, identity)?;
            let identities = identity.map(Identity::age_identities).unwrap_or_default();
            let wrong = |e: age::DecryptError| match e {
                age::DecryptError::NoMatchingKeys
                | age::DecryptError::DecryptionFailed
                | age::DecryptError::KeyDecryptionFailed => BackupError::ArchiveWrongKey {
                    segment: header.name(),
                    scheme: info.scheme.to_string(),
                    reason: e.to_string(),
                },
                other => bad(format!("the body is not a valid age file: {other}")),
            };
            let decryptor = age::Decryptor::new(body).map_err(wrong)?;
            let stream = decryptor
                .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
                .map_err(wrong)?;
            decompress(stream, header.plain_bytes).map_err(|e| e.into_error(&header))?
        }
    };
    let actual = sha256_bytes_hex(&plain);
    if actual != header.plain_sha256 {
        return Err(bad(format!(
            "sha256 of the decoded entries is {actual}, the header says {}",
            header.plain_sha256
        )));
    }
    let (entries, rest): (Vec<ArchivedEntry>, &[u8]) = postcard::take_from_bytes(&plain)
        .map_err(|e| bad(format!("the entries do not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes follow the entries", rest.len())));
    }
    check_entries(&header, &entries).map_err(bad)?;
    Ok((header, entries))
}

/// The entries agree with what the header says of them.
fn check_entries(header: &SegmentHeader, entries: &[ArchivedEntry]) -> Result<(), String> {
    if entries.len() as u64 != header.entry_count {
        return Err(format!(
            "{} entries, the header says {}",
            entries.len(),
            header.entry_count
        ));
    }
    let s = summarize(entries)?;
    let found = (
        s.first_index,
        s.last_index,
        s.first_term,
        s.last_term,
        s.first_at,
        s.last_at,
    );
    let said = (
        header.first_index,
        header.last_index,
        header.first_term,
        header.last_term,
        header.first_at_unix_ms,
        header.last_at_unix_ms,
    );
    if found != said {
        return Err(format!(
            "the entries span (index first, last, term first, last, time first, last) \
             {found:?}, the header says {said:?}"
        ));
    }
    Ok(())
}

/// Refuses early, before age runs, when `identity` cannot open the segment.
fn check_identity(
    header: &SegmentHeader,
    info: &EncryptionInfo,
    identity: Option<&Identity>,
) -> Result<(), BackupError> {
    let wrong = |reason: String| BackupError::ArchiveWrongKey {
        segment: header.name(),
        scheme: info.scheme.to_string(),
        reason,
    };
    let Some(identity) = identity else {
        return Err(BackupError::ArchiveIdentityRequired {
            segment: header.name(),
            scheme: info.scheme.to_string(),
        });
    };
    match identity_mismatch(info, identity) {
        Some(reason) => Err(wrong(reason)),
        None => Ok(()),
    }
}

enum DecompressError {
    /// Reading failed: a bad zstd frame, or age's authentication (tagged by the reader).
    Read(io::Error, bool),
    TooLarge(u64),
}

impl DecompressError {
    fn into_error(self, header: &SegmentHeader) -> BackupError {
        let reason = match self {
            DecompressError::Read(e, true) => {
                format!("the age payload fails authentication: {e}")
            }
            DecompressError::Read(e, false) => format!("bad zstd frame: {e}"),
            DecompressError::TooLarge(limit) => format!(
                "the body decompresses to more than {limit} bytes (the header says {})",
                header.plain_bytes
            ),
        };
        BackupError::ArchiveSegment {
            segment: header.name(),
            reason,
        }
    }
}

/// Remembers whether the inner reader (age) failed, to tell its errors from zstd's.
struct Tagged<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Tagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// One zstd frame from `input`, refusing more than `expected` (capped) bytes of output so a
/// hostile object cannot make us allocate without bound.
fn decompress<R: Read>(input: R, expected: u64) -> Result<Vec<u8>, DecompressError> {
    let limit = expected.min(MAX_SEGMENT_PLAIN_BYTES);
    let mut tagged = Tagged {
        inner: input,
        failed: false,
    };
    let mut out = Vec::new();
    let result = zstd::stream::read::Decoder::new(&mut tagged)
        .and_then(|decoder| decoder.take(limit + 1).read_to_end(&mut out).map(|_| ()));
    if let Err(e) = result {
        return Err(DecompressError::Read(e, tagged.failed));
    }
    if out.len() as u64 > limit {
        return Err(DecompressError::TooLarge(limit));
    }
    Ok(out)
}
