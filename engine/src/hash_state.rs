//! The hash state of a resumable session, kept as one line of text in its state file, so that
//! any request, in any worker process, can carry the hashes on.
//!
//! A [`HashProgress`] holds the hashes of the file's prefix `[0, hashed_upto)`. A segment that
//! continues the prefix advances it ([`HashProgress::advance`]); one that lies beyond it leaves
//! it, and those bytes are read back from the output file once the gap before them is filled
//! ([`HashProgress::catch_up`], by `Session::commit`). So the
//! hashes are those of the whole assembled file in any order of arrival, and in-order uploads
//! hash every byte once, as it arrives.
//!
//! The text is one line with no newline, for the state file's `hash` key:
//! ```text
//! hash 1 upto=51201 md5=<hex> sha1=<hex> crc32=<8 hex digits>
//! ```
//! `1` is the format; `upto` the prefix length; then the state of each selected algorithm, in
//! the order of [`Algorithm::ALL`]: lower-case hex of the RustCrypto crate's serialized state
//! (see `hashing.rs`), and for crc32 the crc so far.
//!
//! A state that cannot be read is no reason to fail the upload: the output file holds the data,
//! so [`HashProgress::resume`] starts over from offset 0 and the hashes are computed from the
//! file at the end.

use crate::hashing::{self, Algorithm, Algorithms, Case, Digests, MultiHasher};
use core::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The state file key whose value is [`HashProgress::encode`].
pub const STATE_KEY: &str = "hash";

/// The format word that starts the encoded state. Changes whenever the encoding of any
/// algorithm's state changes (for example a new major version of the hash crates), so that an
/// old state is refused, and the hashes are recomputed from the file, instead of misread.
const FORMAT: &str = "1";

/// Bytes read at a time from the output file.
const READ_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashStateError(pub String);

impl fmt::Display for HashStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HashStateError {}

/// The selected hashes of the prefix `[0, hashed_upto)` of a session's file.
#[derive(Debug, Clone)]
pub struct HashProgress {
    hasher: MultiHasher,
}

impl HashProgress {
    /// Nothing hashed yet.
    pub fn new(algorithms: Algorithms) -> Self {
        Self {
            hasher: MultiHasher::new(algorithms),
        }
    }

    /// The progress to go on with, from the state file's `hash` value if there is one: the
    /// stored progress if it can be read and has every wanted algorithm (dropping any others),
    /// otherwise a new one for `wanted`, which recomputes everything from the file at the end.
    pub fn resume(stored: Option<&str>, wanted: Algorithms) -> Self {
        match stored.map(Self::decode) {
            Some(Ok(mut p)) if p.algorithms().contains(wanted) => {
                p.hasher.restrict(wanted);
                p
            }
            _ => Self::new(wanted),
        }
    }

    pub fn algorithms(&self) -> Algorithms {
        self.hasher.algorithms()
    }

    /// Length of the hashed prefix.
    pub fn hashed_upto(&self) -> u64 {
        self.hasher.bytes_hashed()
    }

    /// Hashes `data`, the bytes at `offset` of the file, if they continue the hashed prefix:
    /// bytes the prefix already holds are skipped, and data that starts after the prefix's end
    /// is left for [`Self::catch_up`] or [`finish_from_file`]. Returns whether the prefix grew.
    ///
    /// For a segment in several buffers, call it for each buffer with its own offset.
    pub fn advance(&mut self, offset: u64, data: &[u8]) -> bool {
        let upto = self.hashed_upto();
        let end = offset.saturating_add(data.len() as u64);
        if offset > upto || end <= upto {
            return false;
        }
        self.hasher.update(&data[(upto - offset) as usize..]);
        true
    }

    /// Extends the prefix to `upto` by reading `[hashed_upto, upto)` from `file`, which must
    /// hold those bytes (the session's received ranges cover them). Nothing to do if the prefix
    /// is already that long. On a read error, the prefix may have grown by whole chunks.
    pub fn catch_up(&mut self, file: &File, upto: u64) -> io::Result<()> {
        let mut offset = self.hashed_upto();
        if offset >= upto {
            return Ok(());
        }
        let left = |offset: u64| usize::try_from(upto - offset).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; READ_CHUNK.min(left(offset))];
        while offset < upto {
            let n = buf.len().min(left(offset));
            file.read_exact_at(&mut buf[..n], offset)?;
            self.hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(())
    }

    /// Of two progresses of the same session, the one that hashed more; both hash prefixes of
    /// the same file, so the longer one supersedes the other. Used when a request that hashed
    /// its segment as it streamed records it, and another request has meanwhile stored a
    /// progress of its own. With differing algorithms, `self` is kept.
    pub fn merge(self, other: Self) -> Self {
        if other.algorithms() == self.algorithms() && other.hashed_upto() > self.hashed_upto() {
            other
        } else {
            self
        }
    }

    /// The hashes, if the prefix is the whole file of `total` bytes.
    pub fn finish(self, total: u64) -> Option<Digests> {
        (self.hashed_upto() == total).then(|| self.hasher.finish())
    }

    /// One line of text, no newline; see the module documentation.
    pub fn encode(&self) -> String {
        let mut out = format!("{FORMAT} upto={}", self.hashed_upto());
        for alg in Algorithm::ALL {
            if let Some(state) = self.hasher.saved_state(alg) {
                out.push(' ');
                out.push_str(alg.name());
                out.push('=');
                out.push_str(&hashing::to_hex(&state, Case::Lower));
            }
        }
        out
    }

    /// Reads what [`Self::encode`] wrote. Refuses anything else, including states of another
    /// format or of unknown algorithms.
    pub fn decode(text: &str) -> Result<Self, HashStateError> {
        let bad = |why: &str| HashStateError(format!("hash state: {why}"));
        let mut words = text.split(' ');
        if words.next() != Some(FORMAT) {
            return Err(bad("unknown format"));
        }
        let upto = words
            .next()
            .and_then(|w| w.strip_prefix("upto="))
            .filter(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|&n| n <= crate::content_range::MAX_OFFSET)
            .ok_or_else(|| bad("bad upto"))?;
        let mut hasher = MultiHasher::empty_at(upto);
        for word in words {
            let (name, hex) = word.split_once('=').ok_or_else(|| bad("bad word"))?;
            let alg = Algorithm::from_name(name).ok_or_else(|| bad("unknown algorithm"))?;
            if hasher.algorithms().contains(alg) {
                return Err(bad("algorithm given twice"));
            }
            let state = hashing::from_hex(hex).ok_or_else(|| bad("state is not hex"))?;
            hasher
                .restore_state(alg, &state)
                .ok_or_else(|| bad("state cannot be restored"))?;
        }
        Ok(Self { hasher })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::tests::{all_hex, one_shot, pattern};
    use std::fs;
    use std::io::Write;

    /// Encodes and decodes, as when another request goes on with the state file.
    fn reload(p: &HashProgress) -> HashProgress {
        let text = p.encode();
        assert!(!text.contains('\n'));
        let q = HashProgress::decode(&text).unwrap();
        assert_eq!(q.encode(), text);
        q
    }

    fn temp_file(content: &[u8]) -> (std::path::PathBuf, File) {
        let dir = crate::store::tests::tempdir();
        let path = dir.join("data");
        fs::File::create(&path).unwrap().write_all(content).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    #[test]
    fn round_trips_at_every_split() {
        // Past two SHA-512 blocks, so every buffer position of every algorithm is saved.
        let data = pattern(300);
        let expect = one_shot(&data);
        for split in 0..=data.len() {
            let mut p = HashProgress::new(Algorithms::ALL);
            assert!(p.advance(0, &data[..split]) || split == 0);
            let mut q = reload(&p);
            assert_eq!(q.hashed_upto(), split as u64);
            assert_eq!(q.algorithms(), Algorithms::ALL);
            q.advance(split as u64, &data[split..]);
            let d = q.finish(data.len() as u64).unwrap();
            assert_eq!(all_hex(&d), expect, "split at {split}");
        }
    }

    #[test]
    fn round_trips_through_many_reloads() {
        let data = pattern(5000);
        let mut p = HashProgress::new(Algorithms::ALL);
        let mut at = 0;
        let mut step = 1;
        while at < data.len() {
            let end = (at + step).min(data.len());
            p.advance(at as u64, &data[at..end]);
            p = reload(&p);
            at = end;
            step = step * 7 % 301 + 1;
        }
        assert_eq!(all_hex(&p.finish(5000).unwrap()), one_shot(&data));
    }

    #[test]
    fn the_encoding_is_pinned() {
        // The crates' serialized states: the chaining words little-endian, the count of whole
        // blocks hashed (u64, u128 for SHA-512), then the block buffer: a length byte and room
        // for a block less one byte (it never holds a whole one), zero past the length. If a new version of a hash crate serializes its state
        // differently, this fails: bump FORMAT, so that old states are refused, not misread.
        let le32 = |words: &[u32]| -> String {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            hashing::to_hex(&bytes, Case::Lower)
        };
        let le64 = |words: &[u64]| -> String {
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            hashing::to_hex(&bytes, Case::Lower)
        };
        let abc_in = |block: usize| format!("03616263{}", "00".repeat(block - 4));
        let md5 = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
        let sha1 = [
            0x6745_2301,
            0xefcd_ab89,
            0x98ba_dcfe,
            0x1032_5476,
            0xc3d2_e1f0,
        ];
        let sha256 = [
            0x6a09_e667,
            0xbb67_ae85,
            0x3c6e_f372,
            0xa54f_f53a,
            0x510e_527f,
            0x9b05_688c,
            0x1f83_d9ab,
            0x5be0_cd19,
        ];
        let sha512 = [
            0x6a09_e667_f3bc_c908,
            0xbb67_ae85_84ca_a73b,
            0x3c6e_f372_fe94_f82b,
            0xa54f_f53a_5f1d_36f1,
            0x510e_527f_ade6_82d1,
            0x9b05_688c_2b3e_6c1f,
            0x1f83_d9ab_fb41_bd6b,
            0x5be0_cd19_137e_2179,
        ];
        let expect = format!(
            "1 upto=3 md5={}{}{} sha1={}{}{} sha256={}{}{} sha512={}{}{} crc32=352441c2",
            le32(&md5),
            "00".repeat(8),
            abc_in(64),
            le32(&sha1),
            "00".repeat(8),
            abc_in(64),
            le32(&sha256),
            "00".repeat(8),
            abc_in(64),
            le64(&sha512),
            "00".repeat(16),
            abc_in(128),
        );
        let mut p = HashProgress::new(Algorithms::ALL);
        p.advance(0, b"abc");
        assert_eq!(p.encode(), expect);
        // A whole block moves from the buffer into the chaining words and the block count.
        let mut p = HashProgress::new(Algorithms::MD5);
        p.advance(0, &[0u8; 65]);
        let text = p.encode();
        let state = text.strip_prefix("1 upto=65 md5=").unwrap();
        assert_eq!(&state[32..48], "0100000000000000", "{text}");
        assert_eq!(&state[48..52], "0100", "{text}");
    }

    #[test]
    fn out_of_order_segments_finish_from_the_file() {
        let total = 2 * READ_CHUNK + 12345;
        let data = pattern(total);
        let (dir, file) = temp_file(&data);
        let segments = [
            (READ_CHUNK, 2 * READ_CHUNK),
            (2 * READ_CHUNK, total),
            (0, READ_CHUNK),
        ];
        // Each segment is handled by "another worker": the state goes through text each time.
        let mut stored = HashProgress::new(Algorithms::ALL).encode();
        for (a, b) in segments {
            let mut p = HashProgress::resume(Some(&stored), Algorithms::ALL);
            p.advance(a as u64, &data[a..b]);
            stored = p.encode();
        }
        let mut p = HashProgress::decode(&stored).unwrap();
        assert_eq!(p.hashed_upto(), READ_CHUNK as u64);
        p.catch_up(&file, total as u64).unwrap();
        assert_eq!(all_hex(&p.finish(total as u64).unwrap()), one_shot(&data));

        // Nothing hashed in order at all.
        let mut p = HashProgress::new(Algorithms::ALL);
        p.catch_up(&file, total as u64).unwrap();
        assert_eq!(all_hex(&p.finish(total as u64).unwrap()), one_shot(&data));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn catch_up_joins_segments_that_arrived_early() {
        let data = pattern(10_000);
        let (dir, file) = temp_file(&data);
        let mut p = HashProgress::new(Algorithms::SHA256 | Algorithms::CRC32);
        assert!(!p.advance(4000, &data[4000..]));
        assert!(p.advance(0, &data[..4000]));
        p.catch_up(&file, 7000).unwrap();
        assert_eq!(p.hashed_upto(), 7000);
        p.catch_up(&file, 6000).unwrap();
        assert_eq!(p.hashed_upto(), 7000);
        assert!(p.advance(6500, &data[6500..]));
        let d = p.finish(10_000).unwrap();
        assert_eq!(d.sha256().unwrap(), one_shot(&data)[2]);
        assert_eq!(d.crc32().unwrap(), one_shot(&data)[4]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlapping_segments_hash_each_byte_once() {
        let data = pattern(1000);
        let mut p = HashProgress::new(Algorithms::ALL);
        assert!(p.advance(0, &data[..100]));
        assert!(p.advance(50, &data[50..150])); // overlaps the prefix by 50
        assert!(!p.advance(10, &data[10..40])); // inside the prefix
        assert!(!p.advance(140, &data[140..150])); // ends at the prefix's end
        assert!(!p.advance(151, &data[151..300])); // a gap of one byte
        assert!(!p.advance(150, &[])); // empty
        assert_eq!(p.hashed_upto(), 150);
        assert!(p.advance(0, &data[..300])); // a resend of everything and more
        assert_eq!(p.hashed_upto(), 300);
        assert!(p.advance(300, &data[300..]));
        assert_eq!(all_hex(&p.clone().finish(1000).unwrap()), one_shot(&data));
        assert!(p.finish(999).is_none());
    }

    #[test]
    fn merge_keeps_the_longer_prefix() {
        let data = pattern(500);
        let mut short = HashProgress::new(Algorithms::MD5);
        short.advance(0, &data[..100]);
        let mut long = short.clone();
        long.advance(100, &data[100..300]);
        assert_eq!(short.clone().merge(long.clone()).hashed_upto(), 300);
        assert_eq!(long.clone().merge(short.clone()).hashed_upto(), 300);
        let other = HashProgress::new(Algorithms::SHA1);
        assert_eq!(short.clone().merge(other).algorithms(), Algorithms::MD5);
    }

    #[test]
    fn finishing_needs_exactly_the_whole_file() {
        let data = pattern(100);
        let (dir, file) = temp_file(&data);
        let mut p = HashProgress::new(Algorithms::MD5);
        p.advance(0, &data);
        assert!(p.clone().finish(50).is_none(), "hashed more than the total");
        assert!(p.finish(100).is_some());
        let e = HashProgress::new(Algorithms::MD5)
            .catch_up(&file, 200)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resume_falls_back_to_a_new_progress() {
        let mut p = HashProgress::new(Algorithms::ALL);
        p.advance(0, b"hello");
        let text = p.encode();
        let all = HashProgress::resume(Some(&text), Algorithms::ALL);
        assert_eq!(all.hashed_upto(), 5);
        let fewer = HashProgress::resume(Some(&text), Algorithms::SHA1);
        assert_eq!(
            (fewer.hashed_upto(), fewer.algorithms()),
            (5, Algorithms::SHA1)
        );
        assert!(fewer.encode().starts_with("1 upto=5 sha1="));
        let sha1_only = fewer.encode();
        // The configuration asks for more than was hashed: start over.
        let more = HashProgress::resume(Some(&sha1_only), Algorithms::SHA1 | Algorithms::MD5);
        assert_eq!(
            (more.hashed_upto(), more.algorithms()),
            (0, Algorithms::SHA1 | Algorithms::MD5)
        );
        let none = HashProgress::resume(None, Algorithms::MD5);
        assert_eq!(none.hashed_upto(), 0);
        let damaged = HashProgress::resume(Some("garbage"), Algorithms::MD5);
        assert_eq!(
            (damaged.hashed_upto(), damaged.algorithms()),
            (0, Algorithms::MD5)
        );
    }

    #[test]
    fn malformed_states_are_refused() {
        let mut p = HashProgress::new(Algorithms::MD5 | Algorithms::CRC32);
        p.advance(0, b"abc");
        let good = p.encode();
        let md5 = good
            .split(' ')
            .nth(2)
            .unwrap()
            .strip_prefix("md5=")
            .unwrap();
        // The block buffer's position byte (after the 24-byte core) claims more than a block.
        let mut bad_pos = hashing::from_hex(md5).unwrap();
        bad_pos[24] = 64;
        let bad_pos = hashing::to_hex(&bad_pos, Case::Lower);
        // Bytes past the buffered data must be zero.
        let mut dirty = hashing::from_hex(md5).unwrap();
        *dirty.last_mut().unwrap() = 1;
        let dirty = hashing::to_hex(&dirty, Case::Lower);
        let cases = [
            String::new(),
            "1".into(),
            "2 upto=3".into(),
            "1 upto=".into(),
            "1 upto=x".into(),
            "1 upto=+3".into(),
            "1 upto=-3".into(),
            "1 upto=99999999999999999999".into(),
            "1  upto=3".into(),
            "1 upto=3 ".into(),
            format!("1 upto=3 md5={md5} md5={md5}"),
            format!("1 upto=3 md4={md5}"),
            format!("1 upto=3 md5{md5}"),
            format!("1 upto=3 md5={}", &md5[2..]),
            format!("1 upto=3 md5={md5}00"),
            format!("1 upto=3 md5={}", md5.to_uppercase()),
            format!("1 upto=3 md5={}", md5.replacen('0', "g", 1)),
            format!("1 upto=3 md5={bad_pos}"),
            format!("1 upto=3 md5={dirty}"),
            format!("1 upto=3 sha1={md5}"),
            "1 upto=3 crc32=352441c".into(),
            "1 upto=3 crc32=352441c200".into(),
            "1 upto=3 crc32=352441C2".into(),
            format!("{good}\n"),
        ];
        for text in &cases {
            assert!(HashProgress::decode(text).is_err(), "{text:?}");
        }
        assert!(HashProgress::decode(&good).is_ok());
        assert!(HashProgress::decode("1 upto=0").is_ok());
    }

    #[test]
    fn a_state_whose_byte_count_is_not_upto_is_refused() {
        // Found by fuzzing: a damaged block count made sha1 overflow when finishing.
        let damaged = "1 upto=0 sha1=0123456789abcdeffedcba9876543210f0e1d2c3ffffffffffffffff\
                       00000000000000000000000000000000000000000000000000000000000000000000\
                       000000000000000000000000000000000000000000000000000000000000";
        assert!(HashProgress::decode(damaged).is_err());
        assert_eq!(
            HashProgress::resume(Some(damaged), Algorithms::SHA1).hashed_upto(),
            0
        );
        // The same state with the right count (none) is fine.
        let good = HashProgress::new(Algorithms::SHA1).encode();
        assert!(HashProgress::decode(&good).is_ok());
        let mut p = HashProgress::new(Algorithms::ALL);
        p.advance(0, &pattern(1000));
        let text = p.encode();
        assert!(HashProgress::decode(&text).is_ok());
        let shifted = text.replacen("upto=1000", "upto=1064", 1);
        assert!(HashProgress::decode(&shifted).is_err(), "{shifted}");
    }
}
