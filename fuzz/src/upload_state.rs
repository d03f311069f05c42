//! `UploadState`: the state of an upload by id, with its `length` and `meta` lines.
//!
//! [`check_text`] (run by the `state` target on every input): what `UploadState::decode`
//! accepts is well-formed (length within `MAX_OFFSET`, spans sorted, disjoint, not touching,
//! below the length or, deferred, `MAX_OFFSET`; metadata keys visible ASCII, at most
//! `MAX_METADATA_LEN` bytes) and equal to a reference reading of the text as `state.rs`
//! documents it, with a base64 decoder of its own; it agrees with `SessionState::decode`
//! wherever both accept, and accepts whatever that accepts if the text has no `length` and no
//! `meta` line; `encode` decodes back equal and is a fixed point, and is a session's encoding
//! when the length is above 0 and there is no metadata. Appended ranges (below the limit) add
//! exactly those ranges; an append cut before its newline changes nothing.
//!
//! [`check`] (the `upload_state` target) builds a state from the input (layout below), encodes
//! it, and checks that it decodes back equal, metadata bytes included, and that what older
//! readers (`SessionState::decode`) make of the text is the same upload or a refusal.
//!
//! Layout of a [`check`] input: byte 0 selects the length (`0..=63`: deferred; `64..=127`: 0;
//! else `u64` from the next 8 bytes, capped at `MAX_OFFSET`); then up to 8 spans of two `u64`s
//! each, scaled into the limit, while byte `n` says so; then metadata pairs: a key length byte,
//! the key (its bytes mapped into visible ASCII), a value length `u16`, the value.

use crate::Cursor;
use ngx_upload_engine::base64;
use ngx_upload_engine::content_range::MAX_OFFSET;
use ngx_upload_engine::state::{
    is_metadata_key, metadata_len, Metadata, SessionState, UploadState, MAX_METADATA_KEY_LEN,
    MAX_METADATA_LEN,
};

pub fn check_text(data: &[u8]) {
    let session = SessionState::decode(data);
    let decoded = UploadState::decode(data);
    let has_new_lines = lines(data).any(|l| l.starts_with("length") || l.starts_with("meta"));
    if session.is_ok() && !has_new_lines {
        assert!(decoded.is_ok(), "a session's state refused as an upload's");
    }
    let Ok(state) = decoded else {
        return;
    };
    invariants(&state);
    if let Ok(session) = &session {
        assert_eq!(state.length, Some(session.total));
        assert_eq!(state.received, session.received);
        assert_eq!((&state.file, &state.hash), (&session.file, &session.hash));
    }
    let (length, ranges, file, hash, metadata) = reference(data);
    assert_eq!(state.length, length);
    assert_eq!(state.received.iter().collect::<Vec<_>>(), merge(ranges));
    assert_eq!((&state.file, &state.hash), (&file, &hash));
    assert_eq!(state.metadata, metadata);
    round_trip(&state);
    appends(&state, data);
}

pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let length = match c.u8() {
        0..=63 => None,
        64..=127 => Some(0),
        _ => Some(u64::from_le_bytes(array8(c.bytes(8))).min(MAX_OFFSET)),
    };
    let mut state = UploadState::new(length);
    let limit = state.limit();
    for _ in 0..8 {
        if c.u8() & 1 == 0 || limit == 0 {
            break;
        }
        let a = u64::from_le_bytes(array8(c.bytes(8))) % limit;
        let b = a + 1 + u64::from_le_bytes(array8(c.bytes(8))) % (limit - a);
        state.received.insert(a, b);
    }
    while !c.is_empty() {
        let key_len = usize::from(c.u8()) % (MAX_METADATA_KEY_LEN + 8);
        let key: String = c
            .bytes(key_len)
            .iter()
            .map(|b| char::from(b'!' + b % 94))
            .collect();
        let value_len = usize::from(c.u16());
        let value = c.bytes(value_len).to_vec();
        if is_metadata_key(&key) {
            state.metadata.insert(key, value);
        }
    }
    if metadata_len(&state.metadata) > MAX_METADATA_LEN {
        // Not a state the engine writes (creation refuses it), and decode refuses it.
        assert!(UploadState::decode(&state.encode()).is_err());
        return;
    }
    invariants(&state);
    round_trip(&state);
    // Older readers: the same upload, or (a length of 0 or deferred) a refusal.
    match SessionState::decode(&state.encode()) {
        Ok(session) => {
            assert_eq!(Some(session.total), state.length);
            assert_eq!(session.received, state.received);
            assert!(state.length.is_some_and(|n| n > 0));
        }
        Err(_) => assert!(!state.length.is_some_and(|n| n > 0)),
    }
    let encoded = state.encode();
    appends(&state, &encoded);
}

fn array8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out[..bytes.len()].copy_from_slice(bytes);
    out
}

fn invariants(state: &UploadState) {
    if let Some(n) = state.length {
        assert!(n <= MAX_OFFSET);
    }
    assert_eq!(state.limit(), state.length.unwrap_or(MAX_OFFSET));
    let spans: Vec<(u64, u64)> = state.received.iter().collect();
    for (i, &(start, end)) in spans.iter().enumerate() {
        assert!(start < end, "empty span in {spans:?}");
        if i > 0 {
            assert!(spans[i - 1].1 < start, "spans overlap or touch: {spans:?}");
        }
    }
    assert_eq!(state.held_end(), spans.last().map_or(0, |s| s.1));
    assert!(state.held_end() <= state.limit());
    assert_eq!(state.held(), spans.iter().map(|(a, b)| b - a).sum::<u64>());
    assert_eq!(
        state.offset(),
        spans.first().filter(|s| s.0 == 0).map_or(0, |s| s.1)
    );
    let complete = match state.length {
        None => false,
        Some(0) => true,
        Some(n) => spans == [(0, n)],
    };
    assert_eq!(state.is_complete(), complete);
    assert!(state.metadata.keys().all(|k| is_metadata_key(k)));
    assert!(metadata_len(&state.metadata) <= MAX_METADATA_LEN);
}

fn round_trip(state: &UploadState) {
    let encoded = state.encode();
    let text = std::str::from_utf8(&encoded).expect("encode wrote non-UTF-8");
    assert!(text.ends_with('\n'));
    assert_eq!(UploadState::decode(&encoded).as_ref(), Ok(state));
    assert_eq!(
        UploadState::decode(&encoded).unwrap().encode(),
        encoded,
        "encode is not canonical"
    );
    if let Some(session) = state.to_session_state() {
        assert!(state.length.is_some_and(|n| n > 0));
        if state.metadata.is_empty() {
            assert_eq!(session.encode(), encoded);
        }
        assert_eq!(UploadState::from(session).received, state.received);
    } else {
        assert!(!state.length.is_some_and(|n| n > 0));
    }
}

/// Ranges derived from the state appended to its encoding, then a torn append.
fn appends(state: &UploadState, seed: &[u8]) {
    let limit = state.limit();
    if limit == 0 {
        return;
    }
    let mut text = state.encode();
    let mut expect = state.clone();
    for pair in seed.chunks_exact(2).take(4) {
        let start = (u128::from(pair[0]) * u128::from(limit) / 256) as u64;
        let end = start + 1 + u64::from(pair[1]) % (limit - start);
        text.extend_from_slice(SessionState::append_range(start, end).as_bytes());
        expect.received.insert(start, end);
        assert_eq!(UploadState::decode(&text).as_ref(), Ok(&expect));
    }
    let full = text.len();
    text.extend_from_slice(SessionState::append_range(0, limit).as_bytes());
    text.pop();
    assert_eq!(UploadState::decode(&text).as_ref(), Ok(&expect));
    text.truncate(full);
    text.extend_from_slice(b"meta k");
    assert_eq!(UploadState::decode(&text).as_ref(), Ok(&expect));
}

fn lines(data: &[u8]) -> impl Iterator<Item = &str> {
    let end = data
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(data.len(), |i| i + 1);
    std::str::from_utf8(&data[..end])
        .unwrap_or("")
        .lines()
        .skip(1)
}

type Reading = (
    Option<u64>,
    Vec<(u64, u64)>,
    Option<String>,
    Option<String>,
    Metadata,
);

/// A state `UploadState::decode` accepted, read independently as `state.rs` documents it:
/// `total` or `length` (`deferred`, or a number) give the length; `+ a-b` lines add ranges
/// below the length known so far (or `MAX_OFFSET`) until the first that cannot be read;
/// `meta key [value]` set metadata, later lines replacing earlier ones.
fn reference(data: &[u8]) -> Reading {
    let (mut total, mut length) = (None::<u64>, None::<Option<u64>>);
    let mut ranges: Option<Vec<(u64, u64)>> = None;
    let (mut file, mut hash) = (None, None);
    let mut metadata = Metadata::new();
    for line in lines(data) {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "total" => total = Some(value.parse().unwrap()),
            "length" => {
                length = Some(if value == "deferred" {
                    None
                } else {
                    Some(value.parse().unwrap())
                })
            }
            "received" => {
                ranges = Some(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|span| span_of(span).unwrap())
                        .collect(),
                )
            }
            "+" => {
                let limit = total.or(length.flatten()).unwrap_or(MAX_OFFSET);
                match span_of(value) {
                    Some((a, b)) if b <= limit => ranges.as_mut().unwrap().push((a, b)),
                    _ => break,
                }
            }
            "file" => file = Some(value.to_string()),
            "hash" => hash = Some(value.to_string()),
            "meta" => {
                let (name, coded) = value.split_once(' ').unwrap_or((value, ""));
                metadata.insert(name.to_string(), reference_base64(coded).unwrap());
            }
            _ => {}
        }
    }
    let length = total.or(length.flatten());
    (length, ranges.unwrap(), file, hash, metadata)
}

const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 decoded bit by bit, canonical exactly when encoding the result again gives the text.
fn reference_base64(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=');
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in digits.chars() {
        bits = bits << 6 | ALPHABET.find(c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    (base64::encode(&out) == text && reference_encode(&out) == text).then_some(out)
}

fn reference_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET.as_bytes()[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn span_of(span: &str) -> Option<(u64, u64)> {
    let (a, b) = span.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b.checked_add(1)?))
}

fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}
