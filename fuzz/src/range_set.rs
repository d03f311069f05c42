//! `RangeSet` under an arbitrary sequence of inserts and queries, against a bitmap of a small
//! window of offsets placed at the bottom, the middle or the very top of `u64`. Every insert
//! checks that `len_after_insert` foretold the span count; after every step the spans, `held`,
//! `prefix_len`, `len`, `is_complete` must match the model; at the end
//! `report(total)` is read back span by span with `content_range::parse`, and the set goes
//! through the state file's `encode`/`decode`. Every insert is also kept, and all of them
//! given at once to `extend_unsorted` (in reverse, as a state file's appended lines may come)
//! must build the same set.
//!
//! Input: a base selector, a total selector, then 3 bytes per step: operation, a, b.

use ngx_upload_engine::content_range::{self, ContentRangeError, MAX_OFFSET};
use ngx_upload_engine::range_set::RangeSet;
use ngx_upload_engine::state::SessionState;

use crate::Cursor;

/// Offsets in the window are `base + 0 ..= base + WINDOW`.
const WINDOW: usize = 256;

pub fn check(data: &[u8]) {
    let mut input = Cursor::new(data);
    let base = match input.u8() % 4 {
        0 => 0,
        1 => 1 << 32,
        2 => MAX_OFFSET - WINDOW as u64,
        _ => u64::MAX - WINDOW as u64,
    };
    let total_selector = input.u8();
    let mut set = RangeSet::new();
    let mut model = vec![false; WINDOW];
    let mut inserted: Vec<(u64, u64)> = Vec::new();
    while !input.is_empty() {
        let op = input.u8();
        let a = usize::from(input.u8());
        let b = usize::from(input.u8());
        let (start, end) = (base + a as u64, base + b as u64);
        match op % 4 {
            // `[a, b)`, empty or reversed when `a >= b`: must change nothing.
            0 => {
                insert(&mut set, start, end);
                inserted.push((start, end));
                mark(&mut model, a, b);
            }
            // `[a, b]`, the protocol's inclusive form, reaching the window's end.
            1 => {
                insert(&mut set, start, end + 1);
                inserted.push((start, end + 1));
                mark(&mut model, a, b + 1);
            }
            2 => {
                let expect = a >= b || model[a..b].iter().all(|m| *m);
                assert_eq!(set.contains(start, end), expect, "contains({a}, {b})");
            }
            _ => {
                // An empty or reversed range shares no byte.
                let expect = a < b && model[a..b].iter().any(|m| *m);
                assert_eq!(set.overlaps(start, end), expect, "overlaps({a}, {b})");
            }
        }
        agrees(&set, &model, base);
    }
    inserted.reverse();
    let mut at_once = RangeSet::new();
    at_once.extend_unsorted(inserted);
    assert_eq!(at_once, set, "extend_unsorted");
    let max_end = runs(&model).last().map_or(0, |r| r.1) as u64;
    let total = if total_selector < 128 {
        base.saturating_add(max_end + u64::from(total_selector))
    } else {
        base + u64::from(total_selector - 128) * 2
    };
    report_round_trip(&set, total);
    if total > 0 && total <= MAX_OFFSET && base + max_end <= total {
        let state = SessionState {
            received: set.clone(),
            ..SessionState::new(total)
        };
        assert_eq!(SessionState::decode(&state.encode()), Ok(state));
    }
}

/// Inserts, checking that `len_after_insert` foretold the number of spans.
fn insert(set: &mut RangeSet, start: u64, end: u64) {
    let foretold = set.len_after_insert(start, end);
    set.insert(start, end);
    assert_eq!(set.len(), foretold, "len_after_insert({start}, {end})");
}

fn mark(model: &mut [bool], a: usize, b: usize) {
    if a < b {
        model[a..b].iter_mut().for_each(|m| *m = true);
    }
}

/// The maximal runs of `true`, half-open.
fn runs(model: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < model.len() {
        if model[i] {
            let start = i;
            while i < model.len() && model[i] {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

fn agrees(set: &RangeSet, model: &[bool], base: u64) {
    let expect: Vec<(u64, u64)> = runs(model)
        .into_iter()
        .map(|(a, b)| (base + a as u64, base + b as u64))
        .collect();
    let spans: Vec<(u64, u64)> = set.iter().collect();
    assert_eq!(spans, expect);
    assert_eq!(set.len(), expect.len());
    assert_eq!(set.is_empty(), expect.is_empty());
    assert_eq!(set.held(), model.iter().filter(|m| **m).count() as u64);
    let prefix = match expect.first() {
        Some(&(0, end)) => end,
        _ => 0,
    };
    assert_eq!(set.prefix_len(), prefix);
    let candidates = [
        0,
        1,
        base,
        prefix,
        expect.first().map_or(0, |s| s.1),
        u64::MAX,
    ];
    for total in candidates {
        assert_eq!(
            set.is_complete(total),
            total > 0 && expect == [(0, total)],
            "is_complete({total}) of {expect:?}"
        );
    }
}

/// `report(total)` is `first-last/total` per span, comma-separated; each piece is what
/// `content_range::parse` reads after `bytes `, and fails to read exactly when the span does
/// not fit in `total`.
fn report_round_trip(set: &RangeSet, total: u64) {
    let report = set.report(total).to_string();
    if set.is_empty() {
        assert_eq!(report, "");
        return;
    }
    let pieces: Vec<&str> = report.split(',').collect();
    assert_eq!(pieces.len(), set.len(), "{report:?}");
    for (piece, (start, end)) in pieces.into_iter().zip(set.iter()) {
        let parsed = content_range::parse(format!("bytes {piece}").as_bytes());
        if start > MAX_OFFSET || end - 1 > MAX_OFFSET || total > MAX_OFFSET {
            assert_eq!(parsed, Err(ContentRangeError::TooLarge), "{piece:?}");
        } else if end > total {
            assert_eq!(parsed, Err(ContentRangeError::EndBeyondTotal), "{piece:?}");
        } else {
            let r = parsed.unwrap_or_else(|e| panic!("{piece:?}: {e:?}"));
            assert_eq!((r.first, r.last + 1, r.total), (start, end, total));
        }
    }
}
