//! `SessionState::decode` of arbitrary text: what it accepts is a well-formed state (total in
//! range, spans sorted, disjoint, not touching, within the total) equal to a reference reading
//! of the text (ranges merged by sorting, not by `RangeSet::insert`), and `encode` gives text
//! that decodes to the same state and is a fixed point.

use ngx_upload_engine::content_range::MAX_OFFSET;
use ngx_upload_engine::state::{SessionState, MAX_STATE_LEN};

pub fn check(data: &[u8]) {
    let Ok(state) = SessionState::decode(data) else {
        return;
    };
    assert!(data.len() <= MAX_STATE_LEN);
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

    let text = std::str::from_utf8(data).expect("decode accepted non-UTF-8");
    let (total, ranges) = reference(text);
    assert_eq!(state.total, total);
    assert_eq!(spans, merge(ranges), "received line of {text:?}");

    let encoded = state.encode();
    assert_eq!(SessionState::decode(&encoded).as_ref(), Ok(&state));
    assert_eq!(
        SessionState::decode(&encoded).unwrap().encode(),
        encoded,
        "encode is not canonical"
    );
}

/// The last `total` and the ranges of the last `received` line of a state `decode`
/// accepted, read independently: keys are the first word of a line, values the rest.
fn reference(text: &str) -> (u64, Vec<(u64, u64)>) {
    let mut total = None;
    let mut ranges = None;
    for line in text.lines().skip(1) {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        if key == "total" {
            total = Some(value.parse().unwrap());
        } else if key == "received" {
            ranges = Some(
                value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|span| {
                        let (a, b) = span.split_once('-').unwrap();
                        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                        (a, b + 1)
                    })
                    .collect(),
            );
        }
    }
    (total.unwrap(), ranges.unwrap())
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
