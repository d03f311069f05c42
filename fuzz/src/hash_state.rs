//! `HashProgress::decode` (the state file's `hash` value).
//!
//! Input: a mode byte, then
//! - even mode: the rest is the text to decode. What decodes re-encodes to a fixed point with
//!   the same prefix length and algorithms; a decoded state can go on hashing and finish
//!   without panicking, as the same state re-read from its encoding does, to the same
//!   digests; `resume` always gives the wanted algorithms.
//! - odd mode: an algorithm mask, a split offset, a character position and value, then data.
//!   The hashes of `data[..split]` are encoded and decoded, go on with `data[split..]`, and must
//!   equal the hashes of `data` in one go; the encoding with one character replaced is then
//!   checked as in even mode.
//!
//! A decoded MD5/SHA state must hold exactly `upto` bytes (`inconsistent`): the engine once
//! accepted damaged block counts, on which the hash crates overflow (`regress-*` inputs).

use ngx_upload_engine::content_range::MAX_OFFSET;
use ngx_upload_engine::hash_state::HashProgress;
use ngx_upload_engine::hashing::{Algorithm, Algorithms, MultiHasher};

use crate::Cursor;

pub fn check(data: &[u8]) {
    let mut input = Cursor::new(data);
    let mode = input.u8();
    if mode.is_multiple_of(2) {
        let rest = input.rest();
        decoded(&String::from_utf8_lossy(rest), rest, algorithms(mode >> 1));
    } else {
        round_trip(input);
    }
}

fn algorithms(mask: u8) -> Algorithms {
    Algorithm::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, a)| a)
        .collect()
}

fn decoded(text: &str, more: &[u8], wanted: Algorithms) {
    let resumed = HashProgress::resume(Some(text), wanted);
    assert_eq!(resumed.algorithms(), wanted);
    let Ok(p) = HashProgress::decode(text) else {
        assert_eq!(resumed.hashed_upto(), 0);
        return;
    };
    if p.algorithms().contains(wanted) {
        assert_eq!(resumed.hashed_upto(), p.hashed_upto());
    } else {
        assert_eq!(resumed.hashed_upto(), 0);
    }
    assert!(p.hashed_upto() <= MAX_OFFSET);
    let encoded = p.encode();
    assert!(!encoded.contains('\n'));
    let q = HashProgress::decode(&encoded)
        .unwrap_or_else(|e| panic!("{text:?} decoded but its encoding {encoded:?} not: {e}"));
    assert_eq!(q.encode(), encoded);
    assert_eq!(q.hashed_upto(), p.hashed_upto());
    assert_eq!(q.algorithms(), p.algorithms());

    // Going on from the decoded state must work and agree with the re-read copy, but past
    // 2^61 bytes, where the SHA crates cannot count the message length.
    let upto = p.hashed_upto();
    let end = upto + more.len() as u64;
    if let Some(why) = inconsistent(&encoded) {
        panic!("{text:?} decoded: {why}");
    }
    if end >= 1 << 61 {
        return;
    }
    let (mut p, mut q) = (p, q);
    assert_eq!(p.advance(upto, more), !more.is_empty());
    q.advance(upto, more);
    assert_eq!(p.hashed_upto(), end);
    let a = p.finish(end).expect("whole prefix");
    let b = q.finish(end).expect("whole prefix");
    assert_eq!(a, b);
}

/// Why `encoded` (a canonical encoding) holds an MD5/SHA state whose byte count (blocks hashed
/// × block size + bytes buffered) is not `upto`, or a SHA state at 2^61 bytes or more: states
/// `HashProgress::decode` must refuse, as sha1/sha2 0.11 overflow on them.
fn inconsistent(encoded: &str) -> Option<String> {
    let mut words = encoded.split(' ').skip(1);
    let upto: u128 = words.next()?.strip_prefix("upto=")?.parse().ok()?;
    for word in words {
        let (name, hex) = word.split_once('=')?;
        // Chaining words, block counter width, block size (see the engine's pinned encoding).
        let (core, counter, block) = match name {
            "md5" => (16, 8, 64),
            "sha1" => (20, 8, 64),
            "sha256" => (32, 8, 64),
            "sha512" => (64, 16, 128),
            _ => continue,
        };
        let bytes = from_hex(hex)?;
        let mut count = [0u8; 16];
        count[..counter].copy_from_slice(&bytes[core..core + counter]);
        let blocks = u128::from_le_bytes(count);
        let buffered = u128::from(bytes[core + counter]);
        let claimed = blocks
            .checked_mul(block)
            .and_then(|n| n.checked_add(buffered));
        if claimed != Some(upto) {
            return Some(format!("{name} state holds {claimed:?} bytes, upto={upto}"));
        }
        if name != "md5" && upto >= 1 << 61 {
            return Some(format!("{name} cannot count {upto} bytes"));
        }
    }
    None
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn round_trip(mut input: Cursor) {
    let wanted = algorithms(input.u8());
    let split = usize::from(input.u16());
    let position = usize::from(input.u16());
    let replacement = input.u8();
    let data = input.rest();
    let split = split % (data.len() + 1);

    let mut first = HashProgress::new(wanted);
    assert_eq!(first.advance(0, &data[..split]), split > 0);
    let encoded = first.encode();
    let mut second = HashProgress::decode(&encoded)
        .unwrap_or_else(|e| panic!("own encoding {encoded:?} refused: {e}"));
    assert_eq!(second.hashed_upto(), split as u64);
    assert_eq!(second.algorithms(), wanted);
    second.advance(split as u64, &data[split..]);
    let resumed = second.finish(data.len() as u64).expect("whole file");
    let mut whole = MultiHasher::new(wanted);
    whole.update(data);
    assert_eq!(resumed, whole.finish(), "split at {split}");

    // A damaged state: one character replaced.
    let mut damaged = encoded.into_bytes();
    let at = position % damaged.len();
    damaged[at] = replacement;
    decoded(&String::from_utf8_lossy(&damaged), data, wanted);
}
