//! Incremental backups: the pages of the database that changed since a parent backup.
//!
//! SQLite rewrites pages in place and never moves them, so "what changed" is a set of page
//! numbers, and a backup of them is a list of page frames. An incremental set holds, instead of
//! `db.sqlite.zst`, a page-frame file (`pages.zst[.age]`, compressed and encrypted like a full
//! backup). Its plain form:
//!
//! ```text
//! offset 0   8 bytes   magic "RLPAGES1"
//! offset 8   4 bytes   header length N, u32 little-endian, at most 64 KiB
//! offset 12  N bytes   header: JSON (PageFramesHeader): page size, the database's size in
//!                      pages after applying, the parent's id and page digest, the page digest
//!                      of the database after applying, the number of frames
//! then, per frame, in increasing page number:
//!            4 bytes   page number (1-based), u32 little-endian
//!            page size bytes, the page
//! ```
//!
//! Applying: start from the parent's database, write each frame's page at
//! `(number - 1) * page_size`, then cut or extend the file to the header's size in pages.
//!
//! # Page digests
//!
//! Which pages changed is found by hashing: BLAKE3 (its first 16 bytes) of every page of the
//! database being backed up, compared with the page hashes of the parent, which the node that took the parent keeps
//! in its data dir ([`save_page_state`]). Reading and hashing the whole file is the cost of an
//! incremental besides the changed pages themselves (see the bench's `--incremental` report);
//! in exchange nothing has to watch SQLite's checkpoints, and a database file that was replaced
//! meanwhile (a snapshot install) still gives an exact difference.
//!
//! The database's page digest ([`PageDigests::digest`]) is the sha256 of the page size, the
//! page count and every page's hash: each manifest records it (`pages_digest`), an
//! incremental names its parent's, and a restore of a chain checks the result against it
//! before anything in the cluster changes.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::BackupId;

const MAGIC: &[u8; 8] = b"RLPAGES1";
/// The first 16 bytes of a page's BLAKE3 hash: collisions stay out of reach (2^64 work even
/// for an attacker who writes the pages), at half the memory of whole hashes (16 MiB per 4 GiB
/// of database). BLAKE3 hashes 4 KiB pages 1.7x as fast as sha256 here, and hashing every page
/// is most of an incremental's time.
type PageHash = [u8; 16];

fn page_hash(page: &[u8]) -> PageHash {
    let full = blake3::hash(page);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full.as_bytes()[..16]);
    out
}
const STATE_MAGIC: &[u8; 8] = b"RLPGSTA1";
const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// Bytes read at a time while hashing pages.
const HASH_READ_BYTES: usize = 1 << 20;

/// The header of a page-frame file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageFramesHeader {
    pub page_size: u32,
    /// The database's size in pages after applying.
    pub db_pages: u64,
    pub parent_id: BackupId,
    /// The parent's page digest: the database these frames apply to.
    pub parent_pages_digest: String,
    /// The page digest of the database after applying.
    pub pages_digest: String,
    pub frames: u64,
}

/// The hash of each page of a database ([`PageHash`]), in page order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageDigests {
    page_size: u32,
    pages: Vec<PageHash>,
}

impl PageDigests {
    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    pub fn page_count(&self) -> u64 {
        self.pages.len() as u64
    }

    /// The database's page digest, hex (see the module doc).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"raftlite-pages-v1");
        h.update(self.page_size.to_be_bytes());
        h.update((self.pages.len() as u64).to_be_bytes());
        for page in &self.pages {
            h.update(page);
        }
        raftlite_store::hex::encode(&h.finalize())
    }

    /// Hashes the first `page_count` pages of `file`, on up to `threads` threads.
    pub fn of_file(
        file: &File,
        page_size: u32,
        page_count: u64,
        threads: usize,
    ) -> io::Result<PageDigests> {
        let mut digests = PageDigests {
            page_size,
            pages: Vec::new(),
        };
        digests.update_from_file(file, page_count, threads)?;
        Ok(digests)
    }

    /// Makes these the hashes of the first `page_count` pages of `file` (same page size), in
    /// place, on up to `threads` threads: no second list, however large the database. Returns
    /// the 1-based numbers of the pages whose hash changed or that are new, in order.
    pub fn update_from_file(
        &mut self,
        file: &File,
        page_count: u64,
        threads: usize,
    ) -> io::Result<Vec<u32>> {
        let page = self.page_size as usize;
        let known = self.pages.len().min(page_count as usize);
        self.pages.resize(page_count as usize, PageHash::default());
        let threads = threads.clamp(1, 8);
        let per_thread = (page_count as usize).div_ceil(threads).max(1);
        let parts: Vec<io::Result<Vec<u32>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .pages
                .chunks_mut(per_thread)
                .enumerate()
                .map(|(t, slots)| {
                    scope.spawn(move || -> io::Result<Vec<u32>> {
                        let first = t * per_thread;
                        let pages_per_read = (HASH_READ_BYTES / page).max(1);
                        let mut buf = vec![0u8; pages_per_read * page];
                        let mut changed = Vec::new();
                        let mut done = 0;
                        while done < slots.len() {
                            let n = pages_per_read.min(slots.len() - done);
                            let bytes = &mut buf[..n * page];
                            file.read_exact_at(bytes, ((first + done) * page) as u64)?;
                            for (k, chunk) in bytes.chunks_exact(page).enumerate() {
                                let i = done + k;
                                let hash = page_hash(chunk);
                                if first + i >= known || slots[i] != hash {
                                    changed.push((first + i + 1) as u32);
                                    slots[i] = hash;
                                }
                            }
                            done += n;
                        }
                        Ok(changed)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a page hashing thread failed")))
                })
                .collect()
        });
        let mut changed = Vec::new();
        for part in parts {
            changed.extend(part?);
        }
        Ok(changed)
    }

    /// The 1-based numbers of the pages that differ from `parent` (or are new), in order.
    pub fn changed_since(&self, parent: &PageDigests) -> Vec<u32> {
        self.pages
            .iter()
            .enumerate()
            .filter(|(i, page)| parent.pages.get(*i) != Some(page))
            .map(|(i, _)| (i + 1) as u32)
            .collect()
    }
}

/// Hashes pages as a stream of the database's bytes passes (a full backup's read).
pub struct PageHasher {
    page_size: usize,
    partial: Vec<u8>,
    pages: Vec<PageHash>,
}

impl PageHasher {
    pub fn new(page_size: u32) -> PageHasher {
        PageHasher {
            page_size: page_size as usize,
            partial: Vec::with_capacity(page_size as usize),
            pages: Vec::new(),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        if !self.partial.is_empty() {
            let take = (self.page_size - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == self.page_size {
                self.pages.push(page_hash(&self.partial));
                self.partial.clear();
            }
        }
        let mut chunks = bytes.chunks_exact(self.page_size);
        for chunk in &mut chunks {
            self.pages.push(page_hash(chunk));
        }
        self.partial.extend_from_slice(chunks.remainder());
    }

    /// `None` when the bytes were not a whole number of pages.
    pub fn finish(self) -> Option<PageDigests> {
        self.partial.is_empty().then_some(PageDigests {
            page_size: self.page_size as u32,
            pages: self.pages,
        })
    }
}

fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

fn write_header<W: Write, T: Serialize>(
    out: &mut W,
    magic: &[u8; 8],
    header: &T,
) -> io::Result<()> {
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|n| *n <= MAX_HEADER_BYTES)
        .ok_or_else(|| invalid("the header is too large"))?;
    out.write_all(magic)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&json)
}

fn read_header<R: Read, T: for<'de> Deserialize<'de>>(
    input: &mut R,
    magic: &[u8; 8],
    what: &str,
) -> io::Result<T> {
    let mut start = [0u8; 12];
    input.read_exact(&mut start)?;
    if &start[..8] != magic {
        return Err(invalid(format!("not a {what} (wrong magic)")));
    }
    let len = u32::from_le_bytes([start[8], start[9], start[10], start[11]]);
    if len > MAX_HEADER_BYTES {
        return Err(invalid(format!("a {what} header of {len} bytes")));
    }
    let mut json = vec![0u8; len as usize];
    input.read_exact(&mut json)?;
    serde_json::from_slice(&json).map_err(|e| invalid(format!("a bad {what} header: {e}")))
}

/// Writes the page-frame file for `changed` pages (1-based, increasing) of `source` to `out`.
/// Returns the page bytes written (frames times page size).
pub fn write_page_frames<W: Write>(
    source: &File,
    header: &PageFramesHeader,
    changed: &[u32],
    out: W,
) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    write_header(&mut out, MAGIC, header)?;
    let mut page = vec![0u8; header.page_size as usize];
    for &number in changed {
        source.read_exact_at(
            &mut page,
            u64::from(number - 1) * u64::from(header.page_size),
        )?;
        out.write_all(&number.to_le_bytes())?;
        out.write_all(&page)?;
    }
    out.flush()?;
    Ok(changed.len() as u64 * u64::from(header.page_size))
}

/// Opens the page-frame file `frames` and reads its header, checking that it applies to
/// `parent` (id and page digest) and has a valid page size. Returns the reader positioned at
/// the first frame, the header and the file's length.
fn open_page_frames(
    frames: &Path,
    parent: (&BackupId, &str),
    buffer: usize,
) -> Result<(BufReader<File>, PageFramesHeader, u64), String> {
    let input = File::open(frames).map_err(|e| format!("cannot open {}: {e}", frames.display()))?;
    let len = input
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", frames.display()))?
        .len();
    let mut input = BufReader::with_capacity(buffer, input);
    let header: PageFramesHeader = read_header(&mut input, MAGIC, "page-frame file")
        .map_err(|e| format!("the page frames are unreadable: {e}"))?;
    if &header.parent_id != parent.0 || header.parent_pages_digest != parent.1 {
        return Err(format!(
            "the page frames apply to backup {} (page digest {}), not to {} ({})",
            header.parent_id, header.parent_pages_digest, parent.0, parent.1
        ));
    }
    if !(512..=65_536).contains(&header.page_size) || !header.page_size.is_power_of_two() {
        return Err(format!("a page size of {}", header.page_size));
    }
    Ok((input, header, len))
}

/// Applies the page-frame file `frames` to the database file `db` (the parent's content, whose
/// id and page digest must be `parent`), in place. Returns the header. `Err` leaves `db` in an
/// unknown state: the caller works on a copy. Reasons are for an operator.
pub fn apply_page_frames(
    frames: &Path,
    db: &Path,
    parent: (&BackupId, &str),
) -> Result<PageFramesHeader, String> {
    let (mut input, header, _) = open_page_frames(frames, parent, 1 << 20)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let page_size = u64::from(header.page_size);
    let mut page = vec![0u8; header.page_size as usize];
    let mut last = 0u32;
    for _ in 0..header.frames {
        let mut number = [0u8; 4];
        input
            .read_exact(&mut number)
            .and_then(|()| input.read_exact(&mut page))
            .map_err(|e| format!("the page frames end early: {e}"))?;
        let number = u32::from_le_bytes(number);
        if number <= last || u64::from(number) > header.db_pages {
            return Err(format!(
                "frame for page {number} out of order or past the database's {} pages",
                header.db_pages
            ));
        }
        last = number;
        file.write_all_at(&page, u64::from(number - 1) * page_size)
            .map_err(|e| format!("cannot write {}: {e}", db.display()))?;
    }
    let mut rest = [0u8; 1];
    match input.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => return Err("bytes after the last page frame".into()),
        Err(e) => return Err(format!("cannot read the page frames: {e}")),
    }
    file.set_len(header.db_pages * page_size)
        .map_err(|e| format!("cannot size {}: {e}", db.display()))?;
    Ok(header)
}

/// Where each frame's page lies in a page-frame file: (page number, offset of the page).
pub type FrameIndex = Vec<(u32, u64)>;
/// A link of a chain ready to merge: its frame file, header and index.
pub type IndexedLink = (File, PageFramesHeader, FrameIndex);

/// Reads the header of the page-frame file `frames` and where each frame's page lies in it,
/// checking that it applies to `parent` (id and page digest) and that its frames are in order
/// and within the database. `Err` reasons are for an operator.
pub fn index_page_frames(
    frames: &Path,
    parent: (&BackupId, &str),
) -> Result<(PageFramesHeader, FrameIndex), String> {
    use std::io::{Seek, SeekFrom};
    let (mut input, header, len) = open_page_frames(frames, parent, 1 << 16)?;
    let frame_len = 4 + u64::from(header.page_size);
    let mut at = input
        .stream_position()
        .map_err(|e| format!("cannot read {}: {e}", frames.display()))?;
    if header
        .frames
        .checked_mul(frame_len)
        .and_then(|n| n.checked_add(at))
        != Some(len)
    {
        return Err(format!(
            "{} frames of {frame_len} bytes do not fill the {len}-byte file",
            header.frames
        ));
    }
    let mut index = Vec::with_capacity(header.frames as usize);
    let mut last = 0u32;
    for _ in 0..header.frames {
        let mut number = [0u8; 4];
        input
            .read_exact(&mut number)
            .map_err(|e| format!("the page frames end early: {e}"))?;
        let number = u32::from_le_bytes(number);
        if number <= last || u64::from(number) > header.db_pages {
            return Err(format!(
                "frame for page {number} out of order or past the database's {} pages",
                header.db_pages
            ));
        }
        last = number;
        index.push((number, at + 4));
        at += frame_len;
        input
            .seek(SeekFrom::Start(at))
            .map_err(|e| format!("cannot read {}: {e}", frames.display()))?;
    }
    Ok((header, index))
}

/// Builds, page by page, the database a chain restores to from its full backup's bytes and
/// its links' frames, hashing every page it gives out for the page digest.
pub struct ChainMerge {
    page_size: usize,
    /// Pages of the result.
    db_pages: u64,
    /// Pages of the full backup still part of the result: no link cut the database below them.
    from_full: u64,
    /// The newest frame of each page: (link, offset of the page in that link's file).
    newest: std::collections::BTreeMap<u32, (usize, u64)>,
    links: Vec<File>,
    /// Bytes of the full backup not yet a whole page.
    partial: Vec<u8>,
    /// Pages of the full backup seen.
    seen: u64,
    /// Pages given out.
    out: u64,
    digest: Sha256,
    page: Vec<u8>,
}

impl ChainMerge {
    /// `full_pages`: the full backup's page count; `links`: each link's frame file, its header
    /// and index ([`index_page_frames`]), oldest first.
    pub fn new(
        page_size: u32,
        full_pages: u64,
        links: Vec<IndexedLink>,
    ) -> Result<ChainMerge, String> {
        let mut newest = std::collections::BTreeMap::new();
        let mut from_full = full_pages;
        let mut db_pages = full_pages;
        let mut files = Vec::with_capacity(links.len());
        for (i, (file, header, index)) in links.into_iter().enumerate() {
            if header.page_size != page_size {
                return Err(format!(
                    "a link has pages of {} bytes, the full backup of {page_size}",
                    header.page_size
                ));
            }
            // A link that shrinks the database drops every later page; one that grows it
            // again carries the new pages as frames (they differ from nothing).
            db_pages = header.db_pages;
            from_full = from_full.min(db_pages);
            let cut = u32::try_from(db_pages).unwrap_or(u32::MAX);
            newest.retain(|page, _| *page <= cut);
            for (page, offset) in index {
                newest.insert(page, (i, offset));
            }
            files.push(file);
        }
        let mut digest = Sha256::new();
        digest.update(b"raftlite-pages-v1");
        digest.update(page_size.to_be_bytes());
        digest.update(db_pages.to_be_bytes());
        Ok(ChainMerge {
            page_size: page_size as usize,
            db_pages,
            from_full,
            newest,
            links: files,
            partial: Vec::with_capacity(page_size as usize),
            seen: 0,
            out: 0,
            digest,
            page: vec![0u8; page_size as usize],
        })
    }

    /// The size of the result in bytes.
    pub fn len(&self) -> u64 {
        self.db_pages * self.page_size as u64
    }

    pub fn is_empty(&self) -> bool {
        self.db_pages == 0
    }

    /// Feeds bytes of the full backup; writes the result's pages they complete to `out`.
    pub fn feed<W: Write>(&mut self, mut bytes: &[u8], out: &mut W) -> io::Result<()> {
        while !bytes.is_empty() {
            let take = (self.page_size - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == self.page_size {
                self.seen += 1;
                let page = std::mem::take(&mut self.partial);
                if self.seen <= self.from_full {
                    self.emit(self.seen, Some(&page), out)?;
                }
                self.partial = page;
                self.partial.clear();
            }
        }
        Ok(())
    }

    /// After the whole full backup: the pages past it (all from frames), then the page digest.
    pub fn finish<W: Write>(mut self, out: &mut W) -> io::Result<String> {
        if !self.partial.is_empty() || self.seen < self.from_full {
            return Err(invalid(format!(
                "the full backup ended after {} pages and {} bytes; the chain needs {}",
                self.seen,
                self.partial.len(),
                self.from_full
            )));
        }
        for number in self.out + 1..=self.db_pages {
            self.emit(number, None, out)?;
        }
        out.flush()?;
        Ok(raftlite_store::hex::encode(&self.digest.finalize()))
    }

    fn emit<W: Write>(&mut self, number: u64, full: Option<&[u8]>, out: &mut W) -> io::Result<()> {
        let key = u32::try_from(number).map_err(|_| invalid("a page number past 2^32"))?;
        let page: &[u8] = match (self.newest.get(&key), full) {
            (Some(&(link, offset)), _) => {
                let file = self
                    .links
                    .get(link)
                    .ok_or_else(|| invalid("a frame of an unknown link"))?;
                file.read_exact_at(&mut self.page, offset)?;
                &self.page
            }
            (None, Some(full)) => full,
            (None, None) => {
                return Err(invalid(format!(
                    "page {number} is in neither the full backup nor any link"
                )))
            }
        };
        self.digest.update(page_hash(page));
        out.write_all(page)?;
        self.out = number;
        Ok(())
    }
}

/// What a node keeps of the newest backup it took: its id and page hashes, so that the next
/// backup can be an incremental on top of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageStateRecord {
    pub backup_id: BackupId,
    pub pages_digest: String,
    pub page_size: u32,
    pub page_count: u64,
}

/// Writes `record` and `digests` to `path` (temp file, fsync, rename, fsync the directory).
pub fn save_page_state(
    path: &Path,
    record: &PageStateRecord,
    digests: &PageDigests,
) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("the page state has no directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write_header(&mut out, STATE_MAGIC, record)?;
        for page in &digests.pages {
            out.write_all(page)?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Reads what [`save_page_state`] wrote; `Ok(None)` when there is nothing there. A file that
/// does not check out (torn, altered) is an error: the caller takes a full backup.
pub fn load_page_state(path: &Path) -> io::Result<Option<(PageStateRecord, PageDigests)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut input = BufReader::with_capacity(1 << 20, file);
    let record: PageStateRecord = read_header(&mut input, STATE_MAGIC, "page state")?;
    let hash_len = std::mem::size_of::<PageHash>() as u64;
    let expected = record
        .page_count
        .checked_mul(hash_len)
        .filter(|n| *n <= len)
        .ok_or_else(|| invalid("the page state is shorter than its header says"))?;
    let mut pages = Vec::with_capacity((expected / hash_len) as usize);
    let mut page = PageHash::default();
    for _ in 0..record.page_count {
        input.read_exact(&mut page)?;
        pages.push(page);
    }
    let digests = PageDigests {
        page_size: record.page_size,
        pages,
    };
    if digests.digest() != record.pages_digest {
        return Err(invalid("the page state does not match its own digest"));
    }
    Ok(Some((record, digests)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_file(dir: &Path, rows: i64) -> std::path::PathBuf {
        let path = dir.join(format!("db-{rows}.sqlite"));
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO t SELECT i, randomblob(300) FROM n;"
        ))
        .unwrap();
        path
    }

    fn digests_of(path: &Path) -> PageDigests {
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len();
        PageDigests::of_file(&file, 4096, len / 4096, 2).unwrap()
    }

    #[test]
    fn frames_of_the_changed_pages_rebuild_the_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let parent_path = db_file(dir.path(), 5000);
        let parent = digests_of(&parent_path);
        let child_path = dir.path().join("child.sqlite");
        std::fs::copy(&parent_path, &child_path).unwrap();
        {
            let conn = rusqlite::Connection::open(&child_path).unwrap();
            conn.execute_batch(
                "UPDATE t SET v = randomblob(300) WHERE id % 97 = 0;
                 INSERT INTO t SELECT id + 10000, randomblob(3000) FROM t WHERE id < 40;",
            )
            .unwrap();
        }
        let child = digests_of(&child_path);
        let changed = child.changed_since(&parent);
        assert!(!changed.is_empty() && changed.len() < child.pages.len() / 2);
        let mut in_place = parent.clone();
        let file = File::open(&child_path).unwrap();
        let found = in_place
            .update_from_file(&file, child.page_count(), 3)
            .unwrap();
        assert_eq!(found, changed);
        assert_eq!(in_place, child);

        let parent_id: BackupId = "c1/20250102T030405.678Z-1-42".parse().unwrap();
        let header = PageFramesHeader {
            page_size: 4096,
            db_pages: child.page_count(),
            parent_id: parent_id.clone(),
            parent_pages_digest: parent.digest(),
            pages_digest: child.digest(),
            frames: changed.len() as u64,
        };
        let frames = dir.path().join("frames");
        let source = File::open(&child_path).unwrap();
        write_page_frames(&source, &header, &changed, File::create(&frames).unwrap()).unwrap();

        let rebuilt = dir.path().join("rebuilt.sqlite");
        std::fs::copy(&parent_path, &rebuilt).unwrap();
        let applied = apply_page_frames(&frames, &rebuilt, (&parent_id, &parent.digest())).unwrap();
        assert_eq!(applied, header);
        assert_eq!(
            std::fs::read(&rebuilt).unwrap(),
            std::fs::read(&child_path).unwrap()
        );
        assert_eq!(digests_of(&rebuilt).digest(), child.digest());

        // The wrong parent is refused before anything is written.
        let other: BackupId = "c1/20250102T030405.678Z-1-41".parse().unwrap();
        let err = apply_page_frames(&frames, &rebuilt, (&other, &parent.digest())).unwrap_err();
        assert!(err.contains("apply to backup"), "{err}");

        // A truncated frame file is refused.
        let bytes = std::fs::read(&frames).unwrap();
        std::fs::write(&frames, &bytes[..bytes.len() - 10]).unwrap();
        let err = apply_page_frames(&frames, &rebuilt, (&parent_id, &parent.digest())).unwrap_err();
        assert!(err.contains("end early"), "{err}");
    }

    /// Frames from `parent` to `child`, written to `out`.
    fn frames_between(
        parent: &Path,
        parent_id: &BackupId,
        child: &Path,
        out: &Path,
    ) -> (PageFramesHeader, PageDigests) {
        let (p, c) = (digests_of(parent), digests_of(child));
        let changed = c.changed_since(&p);
        let header = PageFramesHeader {
            page_size: 4096,
            db_pages: c.page_count(),
            parent_id: parent_id.clone(),
            parent_pages_digest: p.digest(),
            pages_digest: c.digest(),
            frames: changed.len() as u64,
        };
        let source = File::open(child).unwrap();
        write_page_frames(&source, &header, &changed, File::create(out).unwrap()).unwrap();
        (header, c)
    }

    #[test]
    fn a_chain_merged_while_the_full_streams_is_the_newest_database() {
        let dir = tempfile::tempdir().unwrap();
        let full = db_file(dir.path(), 5000);
        let step = |from: &Path, name: &str, sql: &str| {
            let to = dir.path().join(name);
            std::fs::copy(from, &to).unwrap();
            rusqlite::Connection::open(&to)
                .unwrap()
                .execute_batch(sql)
                .unwrap();
            to
        };
        // Grows, then shrinks below the full's size (VACUUM), then grows again.
        let one = step(
            &full,
            "one.sqlite",
            "UPDATE t SET v = randomblob(300) WHERE id % 50 = 0;
             INSERT INTO t SELECT id + 10000, randomblob(2000) FROM t WHERE id < 300;",
        );
        let two = step(&one, "two.sqlite", "DELETE FROM t WHERE id > 2000; VACUUM;");
        let three = step(
            &two,
            "three.sqlite",
            "INSERT INTO t SELECT id + 20000, randomblob(900) FROM t WHERE id < 200;",
        );
        let ids: Vec<BackupId> = (1..=3)
            .map(|n| format!("c1/20250102T030405.678Z-1-{n}").parse().unwrap())
            .collect();
        let mut links = Vec::new();
        let mut last = None;
        for (n, (from, to)) in [(&full, &one), (&one, &two), (&two, &three)]
            .into_iter()
            .enumerate()
        {
            let path = dir.path().join(format!("link-{n}"));
            let (header, digests) = frames_between(from, &ids[n], to, &path);
            let (indexed, index) =
                index_page_frames(&path, (&ids[n], &header.parent_pages_digest)).unwrap();
            assert_eq!(indexed, header);
            links.push((File::open(&path).unwrap(), header, index));
            last = Some(digests);
        }
        let full_bytes = std::fs::read(&full).unwrap();
        let mut merge = ChainMerge::new(4096, full_bytes.len() as u64 / 4096, links).unwrap();
        let mut out = Vec::new();
        for piece in full_bytes.chunks(10_000) {
            merge.feed(piece, &mut out).unwrap();
        }
        let digest = merge.finish(&mut out).unwrap();
        assert_eq!(out, std::fs::read(&three).unwrap());
        assert_eq!(digest, last.unwrap().digest());
    }

    #[test]
    fn streaming_and_threaded_hashes_agree_and_the_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_file(dir.path(), 500);
        let threaded = digests_of(&path);
        let mut hasher = PageHasher::new(4096);
        let bytes = std::fs::read(&path).unwrap();
        for piece in bytes.chunks(1000) {
            hasher.update(piece);
        }
        assert_eq!(hasher.finish().unwrap(), threaded);
        let mut short = PageHasher::new(4096);
        short.update(&bytes[..5000]);
        assert!(short.finish().is_none());

        let record = PageStateRecord {
            backup_id: "c1/20250102T030405.678Z-1-42".parse().unwrap(),
            pages_digest: threaded.digest(),
            page_size: 4096,
            page_count: threaded.page_count(),
        };
        let state = dir.path().join("state/pages.bin");
        assert!(load_page_state(&state).unwrap().is_none());
        save_page_state(&state, &record, &threaded).unwrap();
        assert_eq!(load_page_state(&state).unwrap(), Some((record, threaded)));
        let mut damaged = std::fs::read(&state).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(&state, damaged).unwrap();
        assert!(load_page_state(&state).is_err());
    }
}
