//! Bridges between the blocking (zstd, age, files) and async (object store) halves of a
//! pipeline: bounded channels of `Bytes` with a sha256 and a byte count on the way.
//!
//! Memory held by a bridge is at most `(CHANNEL_DEPTH + 1) * MESSAGE_BYTES` whatever the size of
//! the data: senders block (`blocking_send`) when the channel is full.

use std::io::{self, Read, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Size of one message between the halves.
pub(crate) const MESSAGE_BYTES: usize = 256 * 1024;
/// Messages in flight between the halves.
pub(crate) const CHANNEL_DEPTH: usize = 4;

/// Running sha256 + length.
#[derive(Clone, Default)]
pub(crate) struct Digester {
    hasher: Sha256,
    len: u64,
}

impl Digester {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// (length, hex sha256)
    pub(crate) fn finish(self) -> (u64, String) {
        (self.len, crate::manifest::hex(&self.hasher.finalize()))
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
            digest: Digester::default(),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(MESSAGE_BYTES));
        self.tx.blocking_send(Bytes::from(full)).map_err(|_| {
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
            self.digest.update(&rest[..take]);
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
            digest: Digester::default(),
        }
    }

    /// Receives (and hashes) everything left, so the digest covers the whole object.
    pub(crate) fn drain(&mut self) {
        self.current = Bytes::new();
        while let Some(chunk) = self.rx.blocking_recv() {
            self.digest.update(&chunk);
        }
    }

    pub(crate) fn digest(&self) -> Digester {
        self.digest.clone()
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
                    self.digest.update(&chunk);
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
        assert_eq!(reader.digest().finish().1, hash);
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
