//! The bytes the benchmark uploads, a checksum to verify what nginx stored, and a small
//! seeded random number generator for shuffling.
//!
//! Every upload body is a range of one pre-generated payload file: the client sends it with
//! `sendfile(2)` straight from the page cache (over HTTP/1.1 and HTTP/2 alike), so the client
//! costs as little CPU as a client can.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

/// A pseudo-random payload file; the byte at offset `o` depends on `o`, so every session's
/// range differs from every other's and a misplaced block changes the checksum.
pub struct Payload {
    pub file: File,
    pub len: u64,
    sums: Mutex<HashMap<(u64, u64), u64>>,
}

impl Payload {
    /// Writes `len` bytes to `path`.
    pub fn create(path: &Path, len: u64) -> io::Result<Payload> {
        const CHUNK: usize = 4 << 20;
        let mut out = File::create(path)?;
        let mut buf = vec![0u8; CHUNK];
        let mut word = 0u64;
        let mut written = 0u64;
        while written < len {
            let n = CHUNK.min((len - written) as usize);
            for chunk in buf[..n].chunks_mut(8) {
                let bytes = splitmix64(word).to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
                word += 1;
            }
            out.write_all(&buf[..n])?;
            written += n as u64;
        }
        out.flush()?;
        drop(out);
        Ok(Payload {
            file: File::open(path)?,
            len,
            sums: Mutex::new(HashMap::new()),
        })
    }

    /// The checksum of `len` bytes at `offset` (computed once, then remembered).
    pub fn checksum(&self, offset: u64, len: u64) -> io::Result<u64> {
        if let Some(sum) = self.sums.lock().unwrap().get(&(offset, len)) {
            return Ok(*sum);
        }
        let mut hasher = Checksum::default();
        let mut buf = vec![0u8; 4 << 20];
        let mut done = 0u64;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            self.file.read_exact_at(&mut buf[..n], offset + done)?;
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        let sum = hasher.finish();
        self.sums.lock().unwrap().insert((offset, len), sum);
        Ok(sum)
    }
}

/// Size and checksum of a file on disk.
pub fn checksum_file(path: &Path) -> io::Result<(u64, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Checksum::default();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((hasher.len, hasher.finish()))
}

/// A cheap order-sensitive 64-bit checksum over little-endian words (not cryptographic: it
/// only has to notice missing, zeroed, shifted or swapped data, at several GB/s).
#[derive(Default)]
pub struct Checksum {
    state: u64,
    len: u64,
    pending: [u8; 8],
    npending: usize,
}

impl Checksum {
    fn mix(&mut self, word: u64) {
        self.state = (self.state.rotate_left(23) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.npending > 0 {
            let take = (8 - self.npending).min(data.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&data[..take]);
            self.npending += take;
            data = &data[take..];
            if self.npending < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.pending));
            self.npending = 0;
        }
        let mut words = data.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().unwrap()));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    pub fn finish(mut self) -> u64 {
        if self.npending > 0 {
            self.pending[self.npending..].fill(0);
            self.mix(u64::from_le_bytes(self.pending));
        }
        let len = self.len;
        self.mix(len);
        self.state
    }
}

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded generator, so that "shuffled" is the same order in every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_does_not_depend_on_how_the_data_is_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Checksum::default();
        whole.update(&data);
        let mut pieces = Checksum::default();
        for piece in data.chunks(13) {
            pieces.update(piece);
        }
        assert_eq!(whole.finish(), pieces.finish());
    }

    #[test]
    fn checksum_notices_swapped_words_and_a_trailing_zero() {
        let sum = |data: &[u8]| {
            let mut c = Checksum::default();
            c.update(data);
            c.finish()
        };
        let a: Vec<u8> = (0..16).collect();
        let mut b = a.clone();
        b.rotate_left(8);
        assert_ne!(sum(&a), sum(&b));
        let mut c = a.clone();
        c.push(0);
        assert_ne!(sum(&a), sum(&c));
    }
}
