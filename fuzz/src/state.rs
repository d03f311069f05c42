//! `SessionState::decode` of arbitrary text, and the appends that record segments.
//!
//! What `decode` accepts is a well-formed state (total in range, spans sorted, disjoint, not
//! touching, within the total) equal to a reference reading of the text, whose ranges are
//! merged by sorting rather than by `RangeSet::insert`; `encode` gives text that decodes to the
//! same state and is a fixed point. Appending `append_range` / `append_hash` lines (derived
//! from the input) to the encoding adds exactly those ranges and replaces the hash, and an
//! append cut short before its newline, as by a crash, changes nothing. Every input is also
//! read as an upload's state (`crate::upload_state::check_text`).

use ngx_upload_engine::content_range::MAX_OFFSET;
use ngx_upload_engine::state::{SessionState, MAX_STATE_LEN};

pub fn check(data: &[u8]) {
    // The same text read as an upload's state, with its `length` and `meta` lines.
    crate::upload_state::check_text(data);
    let Ok(state) = SessionState::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_STATE_LEN);
    invariants(&state);

    let (total, ranges, file, hash) = reference(data);
    assert_eq!(state.total, total);
    assert_eq!(
        state.received.iter().collect::<Vec<_>>(),
        merge(ranges),
        "received of {:?}",
        String::from_utf8_lossy(data)
    );
    assert_eq!(state.file, file);
    assert_eq!(state.hash, hash);

    let encoded = state.encode();
    assert_eq!(SessionState::decode(&encoded).as_ref(), Ok(&state));
    assert_eq!(
        SessionState::decode(&encoded).unwrap().encode(),
        encoded,
        "encode is not canonical"
    );

    appends(&state, &encoded, data);
}

fn invariants(state: &SessionState) {
    assert!(state.total > 0 && state.total <= MAX_OFFSET);
    let spans: Vec<(u64, u64)> = state.received.iter().collect();
    for (i, &(start, end)) in spans.iter().enumerate() {
        assert!(start < end, "empty span in {spans:?}");
        if i > 0 {
            assert!(spans[i - 1].1 < start, "spans overlap or touch: {spans:?}");
        }
    }
    if let Some(&(_, end)) = spans.last() {
        assert!(end <= state.total);
    }
    assert_eq!(state.received.len(), spans.len());
    assert_eq!(state.received.is_empty(), spans.is_empty());
    assert_eq!(state.is_complete(), spans == [(0, state.total)]);
    assert_eq!(
        state.received.held(),
        spans.iter().map(|(a, b)| b - a).sum::<u64>()
    );
}

/// Ranges derived from the input appended to the encoding, then a hash line, then half a line.
fn appends(state: &SessionState, encoded: &[u8], data: &[u8]) {
    let mut text = encoded.to_vec();
    let mut expect = state.clone();
    let total = state.total;
    for pair in data.chunks_exact(2).take(4) {
        // `start` below `total`, `end` in `(start, total]`.
        let start = (u128::from(pair[0]) * u128::from(total) / 256) as u64;
        let end = start + 1 + u64::from(pair[1]) % (total - start);
        text.extend_from_slice(SessionState::append_range(start, end).as_bytes());
        expect.received.insert(start, end);
        let got = SessionState::decode(&text).expect("appended ranges refused");
        assert_eq!(got, expect, "after + {start}-{}", end - 1);
    }
    let hash = format!("1 upto={}", data.len());
    text.extend_from_slice(SessionState::append_hash(&hash).as_bytes());
    expect.hash = Some(hash);
    assert_eq!(SessionState::decode(&text).as_ref(), Ok(&expect));
    let full = text.len();
    text.extend_from_slice(SessionState::append_range(0, total).as_bytes());
    text.pop(); // the newline: the append did not finish
    assert_eq!(SessionState::decode(&text).as_ref(), Ok(&expect));
    text.truncate(full);
    text.extend_from_slice(b"hash 1 upto=");
    assert_eq!(SessionState::decode(&text).as_ref(), Ok(&expect));
    invariants(&expect);
}

type Reading = (u64, Vec<(u64, u64)>, Option<String>, Option<String>);

/// A state `decode` accepted, read independently as the module documents it: a last line
/// without its newline is not part of it; keys are the first word of a line; a later `total`,
/// `file` or `hash` replaces an earlier one; a `received` line sets the ranges, a `+ a-b` line
/// adds one, and everything from the first `+` line that cannot be read (or lies beyond the
/// total) on is ignored.
fn reference(data: &[u8]) -> Reading {
    let end = data
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(data.len(), |i| i + 1);
    let text = std::str::from_utf8(&data[..end]).expect("decode accepted non-UTF-8");
    let mut total: Option<u64> = None;
    let mut ranges: Option<Vec<(u64, u64)>> = None;
    let (mut file, mut hash) = (None, None);
    for line in text.lines().skip(1) {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "total" => total = Some(value.parse().unwrap()),
            "received" => {
                ranges = Some(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|span| span_of(span).unwrap())
                        .collect(),
                )
            }
            "+" => match span_of(value) {
                Some((a, b)) if b <= total.unwrap() => ranges.as_mut().unwrap().push((a, b)),
                _ => break,
            },
            "file" => file = Some(value.to_string()),
            "hash" => hash = Some(value.to_string()),
            _ => {}
        }
    }
    (total.unwrap(), ranges.unwrap(), file, hash)
}

/// `a-b`, inclusive, as a half-open range.
fn span_of(span: &str) -> Option<(u64, u64)> {
    let (a, b) = span.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b.checked_add(1)?))
}

/// Half-open ranges sorted and merged where they overlap or touch.
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
