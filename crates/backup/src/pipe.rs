//! Bridges between the blocking (zstd, age, files) and async (object store) halves of a
//! pipeline: bounded channels of `Bytes` with a sha256 and a byte count on the way.
//!
//! Memory held by a bridge is at most `(CHANNEL_DEPTH + 1) * MESSAGE_BYTES` whatever the size of
//! the data, and as much again waiting for its hashing thread: senders block (`blocking_send`)
//! when a channel is full.

use std::io::{self, Read, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Size of one message between the halves.
pub(crate) const MESSAGE_BYTES: usize = 256 * 1024;
/// Messages in flight between the halves.
pub(crate) const CHANNEL_DEPTH: usize = 4;

/// Running sha256 + length. [`Digester::in_background`] hashes on a thread of its own: a
/// backup read back for a restore or a verify is hashed twice (the stored bytes, then the plain
/// ones) besides being decompressed, and on one thread the two hashes took about as long as the
/// decompression.
#[derive(Default)]
pub(crate) struct Digester {
    len: u64,
    hashing: Hashing,
}

enum Hashing {
    Here(Sha256),
    /// Pieces go to the hashing thread through a bounded channel (`CHANNEL_DEPTH` pieces).
    Thread {
        pieces: std::sync::mpsc::SyncSender<Bytes>,
        hasher: std::thread::JoinHandle<Sha256>,
    },
    /// The hashing thread is gone (it cannot fail, short of a bug): the digest is unknown and
    /// `finish` says so, which no expected hash matches.
    Lost,
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing::Here(Sha256::new())
    }
}

/// What [`Digester::finish`] gives when its hashing thread was lost.
const HASH_LOST: &str = "(unknown: the hashing thread stopped)";

impl Digester {
    /// A digester that hashes on a thread of its own, or here when no thread can be started.
    pub(crate) fn in_background() -> Digester {
        let (pieces, received) = std::sync::mpsc::sync_channel::<Bytes>(CHANNEL_DEPTH);
        let started = std::thread::Builder::new()
            .name("raftlite-sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for piece in received {
                    hasher.update(&piece);
                }
                hasher
            });
        let hashing = match started {
            Ok(hasher) => Hashing::Thread { pieces, hasher },
            Err(_) => Hashing::default(),
        };
        Digester { len: 0, hashing }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match &mut self.hashing {
            Hashing::Here(hasher) => {
                hasher.update(data);
                self.len += data.len() as u64;
            }
            _ => self.update_shared(&Bytes::copy_from_slice(data)),
        }
    }

    /// [`Digester::update`] without a copy for a background digester.
    pub(crate) fn update_shared(&mut self, data: &Bytes) {
        self.len += data.len() as u64;
        match &mut self.hashing {
            Hashing::Here(hasher) => hasher.update(data),
            Hashing::Thread { pieces, .. } => {
                if pieces.send(data.clone()).is_err() {
                    self.hashing = Hashing::Lost;
                }
            }
            Hashing::Lost => {}
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// (length, hex sha256)
    pub(crate) fn finish(self) -> (u64, String) {
        let hasher = match self.hashing {
            Hashing::Here(hasher) => Some(hasher),
            Hashing::Thread { pieces, hasher } => {
                drop(pieces);
                hasher.join().ok()
            }
            Hashing::Lost => None,
        };
        let hex = hasher.map_or_else(
            || HASH_LOST.to_string(),
            |h| raftlite_store::hex::encode(&h.finalize()),
        );
        (self.len, hex)
    }
}

/// A `Write` on a blocking thread that sends what it is given, in `MESSAGE_BYTES` pieces, to
/// an async receiver, hashing it on the way. `finish` sends the rest.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    digest: Digester,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Bytes>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(MESSAGE_BYTES),
            digest: Digester::in_background(),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(MESSAGE_BYTES),
        ));
        self.digest.update_shared(&full);
        self.tx.blocking_send(full).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload stopped (see the upload error)",
            )
        })
    }

    /// Sends what is buffered and returns (stored length, stored sha256).
    pub(crate) fn finish(mut self) -> io::Result<(u64, String)> {
        self.send()?;
        Ok(self.digest.finish())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let take = rest.len().min(MESSAGE_BYTES - self.buf.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == MESSAGE_BYTES {
                self.send()?;
            }
        }
        Ok(data.len())
    }

    /// Nothing to do: pieces are sent when full, and the rest by `finish`. (Sending on every
    /// flush would let a writer above produce many tiny messages.)
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `Read` on a blocking thread over chunks an async task downloads; hashes every byte
/// received (consumed or not), so `drain` then `digest` give the whole object's hash.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    digest: Digester,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Bytes>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
            digest: Digester::in_background(),
        }
    }

    /// Receives (and hashes) everything left, so the digest covers the whole object.
    pub(crate) fn drain(&mut self) {
        self.current = Bytes::new();
        while let Some(chunk) = self.rx.blocking_recv() {
            self.digest.update_shared(&chunk);
        }
    }

    /// The digest of what was received; the reader's own is left empty.
    pub(crate) fn take_digest(&mut self) -> Digester {
        std::mem::take(&mut self.digest)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.digest.update_shared(&chunk);
                    self.current = chunk;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_round_trip_with_bounded_messages() {
        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let data: Vec<u8> = (0..(3 * MESSAGE_BYTES + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = ChannelWriter::new(tx);
            for piece in data.chunks(10_000) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap()
        });
        let mut got = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            assert!(chunk.len() <= MESSAGE_BYTES);
            got.extend_from_slice(&chunk);
        }
        let (len, hash) = writer.join().unwrap();
        assert_eq!(got, expected);
        assert_eq!(len, expected.len() as u64);
        let mut d = Digester::default();
        d.update(&expected);
        assert_eq!(d.finish().1, hash);

        let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let feeder = std::thread::spawn(move || {
            for piece in expected.chunks(70_000) {
                tx.blocking_send(Bytes::copy_from_slice(piece)).unwrap();
            }
        });
        let mut reader = ChannelReader::new(rx);
        let mut first = [0u8; 1000];
        reader.read_exact(&mut first).unwrap();
        reader.drain();
        feeder.join().unwrap();
        assert_eq!(reader.take_digest().finish().1, hash);
    }

    #[test]
    fn a_background_digest_is_the_digest() {
        let data: Vec<u8> = (0..(5 * MESSAGE_BYTES + 7))
            .map(|i| (i % 253) as u8)
            .collect();
        let mut here = Digester::default();
        let mut thread = Digester::in_background();
        assert!(matches!(thread.hashing, Hashing::Thread { .. }));
        for piece in data.chunks(100_000) {
            here.update(piece);
            thread.update(piece);
        }
        let shared = Bytes::from_static(b"and a shared piece");
        here.update_shared(&shared);
        thread.update_shared(&shared);
        assert_eq!(thread.len(), here.len());
        assert_eq!(thread.finish(), here.finish());
        assert_eq!(
            Digester::in_background().finish(),
            Digester::default().finish()
        );
    }

    #[test]
    fn writer_fails_when_the_receiver_is_gone() {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        drop(rx);
        let mut w = ChannelWriter::new(tx);
        let err = w.write_all(&vec![0u8; MESSAGE_BYTES * 2]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
