//! Large log entries, kept beside the redb log in append-only segment files.
//!
//! redb keeps a large value in its B-tree pages and writes it twice (measured: appending 256 MiB
//! as 1 MiB values wrote 512 MiB), and writes through the page cache, which on the VMs we
//! measured costs more CPU than anything else in a restore (the chunks of a restored file are
//! the log's large entries). So the log store hands every entry of at least
//! [`crate::log_store::SPILL_BYTES`] encoded bytes to this store, which writes it once, with
//! `O_DIRECT | O_DSYNC` where the file system allows it (no page-cache copy; durable when the
//! write returns, one device flush per write), else through the page cache and `fdatasync`,
//! always before redb commits the [`BlobRef`] saying where it is.
//!
//! Layout: `<raft dir>/log-blobs/<seq:016x>-<first index:020>.seg`. `seq` orders the segments
//! by creation; `first index` is the log index of the first record written to the segment.
//! Records start at 4 KiB-aligned offsets and are zero-padded to the next boundary. A segment
//! takes records until it holds [`SEGMENT_BYTES`]; then the next write opens a new one.
//!
//! Why whole segments can be deleted by index: an append always writes index `last + 1`, so
//! when a segment is created with first index `F`, no live entry at `F` or above exists in an
//! older segment (a truncation removed them), and none is ever written there again. Every live
//! record of a segment thus has an index below the next segment's first index, and once the
//! log is purged up to that index minus one, the segment holds nothing live.
//!
//! Bytes no redb record points at (a truncated entry, a write cut short by a crash before redb
//! committed its reference) are garbage that goes with its segment. A record is checked against
//! the crc32 in its reference when read.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use raftlite_store::direct_io;
use serde::{Deserialize, Serialize};

/// The directory, inside the raft directory, that holds the segments.
pub const BLOB_DIR_NAME: &str = "log-blobs";
/// Bytes after which a segment takes no more records. Small enough that a purge frees space
/// soon after a restore, large enough that a 1 GiB restore opens only a few files.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Record alignment: `O_DIRECT` needs offsets, lengths and buffer addresses aligned.
const ALIGN: usize = direct_io::ALIGN;
/// Records written together in one write, at most (unless one record is larger); the write
/// buffer is kept between calls up to this size, and dropped when a larger record made it grow
/// past it.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

/// Where a record is: what redb stores instead of a large entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
    pub crc32: u32,
}

/// Why an operation on the segment files failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "segment {segment} of the log's large entries is missing from {} (or shorter than its \
         records); the log is damaged \
         (see the runbook: recovery mode rebuilds a node from its database or a backup)",
        dir.display()
    )]
    MissingSegment { dir: PathBuf, segment: u64 },
    #[error(
        "{}: the record at offset {offset} ({len} bytes) does not match its checksum; the log \
         is damaged (see the runbook: recovery mode rebuilds a node from its database or a \
         backup)",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> BlobError {
    let path = path.to_path_buf();
    move |source| BlobError::Io { path, op, source }
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    first_index: u64,
    path: PathBuf,
}

struct Writer {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Where the next record goes (always aligned).
    len: u64,
    direct: bool,
}

struct State {
    /// In creation order; the writer, when open, writes the last one.
    segments: Vec<Segment>,
    writer: Option<Writer>,
    buffer: Vec<u8>,
}

/// The segment files of one log.
pub struct BlobStore {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
}

fn round_up(len: u64) -> u64 {
    len.div_ceil(ALIGN as u64) * ALIGN as u64
}

fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (seq, first) = stem.split_once('-')?;
    if seq.len() != 16 || first.len() != 20 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        first.parse::<u64>().ok()?,
    ))
}

/// The length of every segment file under `raft_dir`, by sequence number (for start-up checks,
/// without opening the store).
pub fn segment_lengths(raft_dir: &Path) -> Result<std::collections::HashMap<u64, u64>, BlobError> {
    let dir = raft_dir.join(BLOB_DIR_NAME);
    let mut lengths = std::collections::HashMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(lengths),
        Err(e) => return Err(io_error(&dir, "list")(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error(&dir, "list"))?;
        let Some((seq, _)) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        let len = entry
            .metadata()
            .map_err(io_error(&entry.path(), "stat"))?
            .len();
        lengths.insert(seq, len);
    }
    Ok(lengths)
}

/// Deletes `segments`' files (an already missing one counts as deleted); returns how many were
/// deleted.
fn remove_segments(segments: impl Iterator<Item = Segment>) -> Result<usize, BlobError> {
    let mut removed = 0;
    for segment in segments {
        match std::fs::remove_file(&segment.path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&segment.path, "delete")(e)),
        }
    }
    Ok(removed)
}

fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync the directory"))
}

/// Opens a segment for writing, with `O_DIRECT | O_DSYNC` (each write durable when it returns,
/// the file's size included) unless the file system refuses it (tmpfs does): then plain, and the
/// writer fsyncs.
fn open_for_writing(path: &Path, create: bool) -> io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.write(true);
    if create {
        options.create_new(true);
    }
    match direct_io::open(&options, path)? {
        Some(file) => Ok((file, true)),
        None => Ok((options.open(path)?, false)),
    }
}

/// Records gathered for one write: `buffer[start..start + len]`, `start` an
/// [`ALIGN`]-aligned address, each record zero-padded to a multiple of [`ALIGN`].
#[derive(Default)]
struct Group {
    start: usize,
    len: usize,
}

impl Group {
    fn add(&mut self, buffer: &mut Vec<u8>, data: &[u8]) {
        let padded = round_up(data.len() as u64) as usize;
        if self.len == 0 {
            if buffer.len() < padded + ALIGN {
                buffer.resize(padded + ALIGN, 0);
            }
            self.start = direct_io::aligned_start(buffer);
        } else if buffer.len() < self.start + self.len + padded {
            // Growing may move the buffer: keep the gathered bytes at an aligned address.
            let gathered = buffer[self.start..self.start + self.len].to_vec();
            buffer.resize(self.start + self.len + padded + ALIGN, 0);
            self.start = direct_io::aligned_start(buffer);
            buffer[self.start..self.start + self.len].copy_from_slice(&gathered);
        }
        let slot = &mut buffer[self.start + self.len..self.start + self.len + padded];
        slot[..data.len()].copy_from_slice(data);
        slot[data.len()..].fill(0);
        self.len += padded;
    }
}

impl BlobStore {
    /// Opens (creating if needed) `raft_dir/log-blobs`, with segments of [`SEGMENT_BYTES`].
    pub fn open(raft_dir: &Path) -> Result<BlobStore, BlobError> {
        BlobStore::open_with_segment_bytes(raft_dir, SEGMENT_BYTES)
    }

    pub fn open_with_segment_bytes(
        raft_dir: &Path,
        segment_bytes: u64,
    ) -> Result<BlobStore, BlobError> {
        let dir = raft_dir.join(BLOB_DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir, "create the directory"))?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir, "list"))? {
            let entry = entry.map_err(io_error(&dir, "list"))?;
            let name = entry.file_name();
            let Some((seq, first_index)) = name.to_str().and_then(parse_segment_name) else {
                tracing::warn!(
                    file = %entry.path().display(),
                    "ignoring a file that is not a log segment"
                );
                continue;
            };
            segments.push(Segment {
                seq,
                first_index,
                path: entry.path(),
            });
        }
        segments.sort_by_key(|s| s.seq);
        Ok(BlobStore {
            dir,
            segment_bytes,
            state: Mutex::new(State {
                segments,
                writer: None,
                buffer: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `records` (log index, bytes) durably; returns where each one is, in order.
    /// Consecutive records go out in one write of up to [`KEEP_BUFFER_BYTES`] (more when one
    /// record is larger): with `O_DIRECT | O_DSYNC` each such write is durable when it returns,
    /// one device flush per write instead of a write and an `fdatasync` per append.
    pub fn write(&self, records: &[(u64, &[u8])]) -> Result<Vec<BlobRef>, BlobError> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut refs = Vec::with_capacity(records.len());
        let mut group = Group::default();
        for &(index, data) in records {
            let padded = round_up(data.len() as u64) as usize;
            let full = state
                .writer
                .as_ref()
                .is_none_or(|w| w.len + group.len as u64 >= self.segment_bytes);
            if full || (group.len > 0 && group.len + padded > KEEP_BUFFER_BYTES) {
                self.write_group(state, &mut group)?;
            }
            if full {
                self.rotate(state, index)?;
            }
            let Some(writer) = state.writer.as_ref() else {
                // rotate() always leaves a writer.
                continue;
            };
            refs.push(BlobRef {
                segment: writer.seq,
                offset: writer.len + group.len as u64,
                len: data.len() as u64,
                crc32: crc32fast::hash(data),
            });
            group.add(&mut state.buffer, data);
        }
        self.write_group(state, &mut group)?;
        if state.buffer.len() > KEEP_BUFFER_BYTES + ALIGN {
            state.buffer = Vec::new();
        }
        if let Some(writer) = state.writer.as_ref().filter(|w| !w.direct) {
            writer
                .file
                .sync_data()
                .map_err(io_error(&writer.path, "fsync"))?;
        }
        Ok(refs)
    }

    /// Writes the records gathered in `group` at the writer's end, and empties it.
    fn write_group(&self, state: &mut State, group: &mut Group) -> Result<(), BlobError> {
        if group.len == 0 {
            return Ok(());
        }
        let Some(writer) = state.writer.as_mut() else {
            return Ok(());
        };
        let bytes = &state.buffer[group.start..group.start + group.len];
        let offset = writer.len;
        match writer.file.write_all_at(bytes, offset) {
            Err(e) if writer.direct && direct_io::refused(&e) => {
                // The device wants a larger alignment than ours: write through the page
                // cache from now on (and fsync at the end of each write call).
                writer.file = OpenOptions::new()
                    .write(true)
                    .open(&writer.path)
                    .map_err(io_error(&writer.path, "reopen"))?;
                writer.direct = false;
                writer
                    .file
                    .write_all_at(bytes, offset)
                    .map_err(io_error(&writer.path, "write"))?;
            }
            other => other.map_err(io_error(&writer.path, "write"))?,
        }
        writer.len += group.len as u64;
        *group = Group::default();
        Ok(())
    }

    /// Makes the writer write a segment with room: the last one if it has room (after a
    /// restart), else a new one whose first record is `index`. The full one is fsynced first.
    fn rotate(&self, state: &mut State, index: u64) -> Result<(), BlobError> {
        if let Some(old) = state.writer.take() {
            if !old.direct {
                old.file.sync_data().map_err(io_error(&old.path, "fsync"))?;
            }
        } else if let Some(last) = state.segments.last() {
            let len = std::fs::metadata(&last.path)
                .map_err(io_error(&last.path, "stat"))?
                .len();
            if len < self.segment_bytes {
                let (file, direct) =
                    open_for_writing(&last.path, false).map_err(io_error(&last.path, "open"))?;
                state.writer = Some(Writer {
                    seq: last.seq,
                    path: last.path.clone(),
                    file,
                    // A write cut short by a crash may have left an unaligned tail.
                    len: round_up(len),
                    direct,
                });
                return Ok(());
            }
        }
        let seq = state.segments.last().map_or(1, |s| s.seq + 1);
        let path = self.dir.join(segment_name(seq, index));
        let (file, direct) = open_for_writing(&path, true).map_err(io_error(&path, "create"))?;
        // The file must survive a crash before redb commits a reference into it.
        sync_dir(&self.dir)?;
        state.segments.push(Segment {
            seq,
            first_index: index,
            path: path.clone(),
        });
        state.writer = Some(Writer {
            seq,
            path,
            file,
            len: 0,
            direct,
        });
        Ok(())
    }

    /// Reads the record `blob` points at and checks its crc32.
    pub fn read(&self, blob: &BlobRef) -> Result<Vec<u8>, BlobError> {
        let path = {
            let state = self.lock();
            match state.segments.iter().find(|s| s.seq == blob.segment) {
                Some(s) => s.path.clone(),
                None => {
                    return Err(BlobError::MissingSegment {
                        dir: self.dir.clone(),
                        segment: blob.segment,
                    })
                }
            }
        };
        let file = File::open(&path).map_err(io_error(&path, "open"))?;
        let len = usize::try_from(blob.len).map_err(|_| BlobError::Checksum {
            path: path.clone(),
            offset: blob.offset,
            len: blob.len,
        })?;
        let mut data = vec![0u8; len];
        file.read_exact_at(&mut data, blob.offset)
            .map_err(io_error(&path, "read"))?;
        if crc32fast::hash(&data) != blob.crc32 {
            return Err(BlobError::Checksum {
                path,
                offset: blob.offset,
                len: blob.len,
            });
        }
        Ok(data)
    }

    /// Deletes the segments whose records are all at or below `index` (see the module doc);
    /// returns how many. The segment being written is kept.
    pub fn purge(&self, index: u64) -> Result<usize, BlobError> {
        let mut state = self.lock();
        let dead = state
            .segments
            .windows(2)
            .take_while(|pair| pair[1].first_index <= index.saturating_add(1))
            .count();
        remove_segments(state.segments.drain(..dead))
    }

    /// Deletes every segment: for a log that holds no entry, hence no reference.
    pub fn clear(&self) -> Result<usize, BlobError> {
        let mut state = self.lock();
        state.writer = None;
        remove_segments(state.segments.drain(..))
    }

    /// The segment files, in creation order.
    #[cfg(test)]
    fn segment_paths(&self) -> Vec<PathBuf> {
        self.lock()
            .segments
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u64 ^ index.wrapping_mul(0x9E37)) as u8)
            .collect()
    }

    #[test]
    fn records_read_back_across_reopen_and_continue_the_last_segment() {
        let dir = tempfile::tempdir().unwrap();
        let a = record(1, 70_000);
        let b = record(2, 4096);
        let c = record(3, 1);
        let refs = {
            let store = BlobStore::open(dir.path()).unwrap();
            let refs = store
                .write(&[(1, a.as_slice()), (2, b.as_slice())])
                .unwrap();
            assert_eq!(store.read(&refs[0]).unwrap(), a);
            assert_eq!(store.read(&refs[1]).unwrap(), b);
            assert_eq!(refs[1].offset % ALIGN as u64, 0);
            refs
        };
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(store.read(&refs[0]).unwrap(), a);
        assert_eq!(store.read(&refs[1]).unwrap(), b);
        let more = store.write(&[(3, c.as_slice())]).unwrap();
        assert_eq!(
            more[0].segment, refs[1].segment,
            "the last segment had room"
        );
        assert!(more[0].offset >= refs[1].offset + refs[1].len);
        assert_eq!(store.read(&more[0]).unwrap(), c);
        assert_eq!(store.segment_paths().len(), 1);
    }

    #[test]
    fn a_damaged_record_or_missing_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = record(7, 10_000);
        let refs = store.write(&[(7, data.as_slice())]).unwrap();
        let path = store.segment_paths()[0].clone();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = store.read(&refs[0]).unwrap_err();
        assert!(matches!(err, BlobError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));

        let elsewhere = BlobRef {
            segment: 99,
            ..refs[0]
        };
        let err = store.read(&elsewhere).unwrap_err();
        assert!(matches!(err, BlobError::MissingSegment { .. }), "{err}");
        // A reference past the end of the file.
        let past = BlobRef {
            offset: 1 << 30,
            ..refs[0]
        };
        assert!(store.read(&past).is_err());
    }

    #[test]
    fn segments_rotate_and_purge_deletes_only_dead_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_with_segment_bytes(dir.path(), 3 * ALIGN as u64).unwrap();
        let data = record(0, ALIGN);
        let mut refs = Vec::new();
        for index in 1..=9 {
            refs.extend(store.write(&[(index, data.as_slice())]).unwrap());
        }
        // Three records per segment: first indexes 1, 4, 7.
        assert_eq!(store.segment_paths().len(), 3);
        assert_eq!(store.purge(2).unwrap(), 0, "segment 1 still holds index 3");
        assert_eq!(store.purge(3).unwrap(), 1);
        assert!(store.read(&refs[2]).is_err());
        assert_eq!(store.read(&refs[3]).unwrap(), data);
        // The segment being written is never deleted, even when everything is purged.
        assert_eq!(store.purge(100).unwrap(), 1);
        assert_eq!(store.segment_paths().len(), 1);
        assert_eq!(store.read(&refs[8]).unwrap(), data);

        // After a truncation the next append may go below a segment's first index; a new
        // segment then starts there, and ordering by creation keeps the rule right.
        let low = store.write(&[(5, data.as_slice())]).unwrap();
        assert_eq!(store.segment_paths().len(), 2);
        assert_eq!(
            store.purge(4).unwrap(),
            1,
            "index 5's segment is the live one"
        );
        assert_eq!(store.read(&low[0]).unwrap(), data);

        drop(store);
        let store = BlobStore::open_with_segment_bytes(dir.path(), 3 * ALIGN as u64).unwrap();
        assert_eq!(store.read(&low[0]).unwrap(), data);
        assert_eq!(store.clear().unwrap(), 1);
        assert!(store.segment_paths().is_empty());
        let again = store.write(&[(1, data.as_slice())]).unwrap();
        assert_eq!(store.read(&again[0]).unwrap(), data);
    }

    #[test]
    fn a_batch_spanning_several_writes_and_segments_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_with_segment_bytes(dir.path(), 6 << 20).unwrap();
        // Sizes that are not multiples of the alignment, some above the group size.
        let records: Vec<Vec<u8>> = [1_500_000, 70_001, 2_000_000, 5_000_000, 3, 1_048_576]
            .iter()
            .enumerate()
            .map(|(i, &len)| record(i as u64 + 1, len))
            .collect();
        let batch: Vec<(u64, &[u8])> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 1, r.as_slice()))
            .collect();
        let refs = store.write(&batch).unwrap();
        assert!(
            store.segment_paths().len() >= 2,
            "{:?}",
            store.segment_paths()
        );
        for (r, data) in refs.iter().zip(&records) {
            assert_eq!(r.offset % ALIGN as u64, 0);
            assert_eq!(&store.read(r).unwrap(), data);
        }
        drop(store);
        let store = BlobStore::open_with_segment_bytes(dir.path(), 6 << 20).unwrap();
        for (r, data) in refs.iter().zip(&records) {
            assert_eq!(&store.read(r).unwrap(), data);
        }
    }

    #[test]
    fn an_unaligned_tail_left_by_a_crash_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let data = record(1, 5000);
        let first = {
            let store = BlobStore::open(dir.path()).unwrap();
            store.write(&[(1, data.as_slice())]).unwrap()
        };
        let path = BlobStore::open(dir.path()).unwrap().segment_paths()[0].clone();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        io::Write::write_all(&mut f, &[0xAB; 123]).unwrap();
        drop(f);
        let store = BlobStore::open(dir.path()).unwrap();
        let second = store.write(&[(2, data.as_slice())]).unwrap();
        assert_eq!(second[0].offset % ALIGN as u64, 0);
        assert_eq!(store.read(&first[0]).unwrap(), data);
        assert_eq!(store.read(&second[0]).unwrap(), data);
    }

    #[test]
    fn foreign_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(BLOB_DIR_NAME)).unwrap();
        std::fs::write(dir.path().join(BLOB_DIR_NAME).join("notes.txt"), b"x").unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(store.segment_paths().is_empty());
        assert_eq!(parse_segment_name(&segment_name(3, 42)), Some((3, 42)));
        assert_eq!(parse_segment_name("3-42.seg"), None);
    }
}
