//! The set of byte ranges of a file that are stored: sorted, disjoint, never adjacent.

use core::fmt;

/// Half-open byte ranges `[start, end)`, kept sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    spans: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `[start, end)`, merging it with every span it overlaps or touches.
    /// Appending right after the last span (in-order uploads) touches only the tail.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if let Some(last) = self.spans.last_mut() {
            if start >= last.0 && start <= last.1 {
                last.1 = last.1.max(end);
                return;
            }
        }
        // First span that ends at or after `start` may merge; all spans starting at or before
        // `end` after it merge too.
        let first = self.spans.partition_point(|s| s.1 < start);
        let mut past = first;
        let (mut lo, mut hi) = (start, end);
        while past < self.spans.len() && self.spans[past].0 <= end {
            lo = lo.min(self.spans[past].0);
            hi = hi.max(self.spans[past].1);
            past += 1;
        }
        self.spans.splice(first..past, [(lo, hi)]);
    }

    /// Adds every span of `spans`, in any order, at the cost of one sort: what reading a state
    /// file of many appended ranges needs, where an insert each would move the tail each time.
    pub fn extend_unsorted(&mut self, mut spans: Vec<(u64, u64)>) {
        spans.retain(|&(start, end)| start < end);
        if spans.is_empty() {
            return;
        }
        spans.extend_from_slice(&self.spans);
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                // Sorted by start: overlapping or touching the last span means joining it.
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.spans = merged;
    }

    /// How many spans the set would have after [`Self::insert`]ing `[start, end)`, without
    /// inserting: lets a caller refuse a range that would grow the set past a limit.
    pub fn len_after_insert(&self, start: u64, end: u64) -> usize {
        if start >= end {
            return self.spans.len();
        }
        let first = self.spans.partition_point(|s| s.1 < start);
        let past = self.spans.partition_point(|s| s.0 <= end);
        self.spans.len() + 1 - past.saturating_sub(first)
    }

    /// Whether every byte of `[start, end)` is held.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        let i = self.spans.partition_point(|s| s.1 <= start);
        self.spans
            .get(i)
            .is_some_and(|s| s.0 <= start && s.1 >= end)
    }

    /// Whether `[start, end)` shares at least one byte with the set.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false; // an empty (or reversed) range has no byte to share
        }
        let i = self.spans.partition_point(|s| s.1 <= start);
        self.spans.get(i).is_some_and(|s| s.0 < end)
    }

    /// Whether the set is exactly the whole file `[0, total)`.
    pub fn is_complete(&self, total: u64) -> bool {
        total > 0 && self.spans == [(0, total)]
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.spans.iter().map(|s| s.1 - s.0).sum()
    }

    /// Length of the held prefix `[0, n)`.
    pub fn prefix_len(&self) -> u64 {
        match self.spans.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.spans.iter().copied()
    }

    /// The protocol's progress report: `first-last/total` per span, inclusive ends, joined by
    /// commas (`0-51200/511920`), as the `Range` header and 201 body carry it.
    pub fn report(&self, total: u64) -> Report<'_> {
        Report { set: self, total }
    }
}

/// See [`RangeSet::report`].
pub struct Report<'a> {
    set: &'a RangeSet,
    total: u64,
}

impl Report<'_> {
    /// The report as text, built directly: a fragmented upload's report is hundreds of
    /// numbers, sent twice (header and body) with every segment's answer, where `write!`'s
    /// general formatting costs more than building the answer itself.
    pub fn text(&self) -> String {
        let mut total = String::with_capacity(20);
        push_decimal(&mut total, self.total);
        let mut out = String::with_capacity(self.set.len() * (total.len() * 3 + 3));
        for (i, (start, end)) in self.set.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_decimal(&mut out, start);
            out.push('-');
            push_decimal(&mut out, end - 1);
            out.push('/');
            out.push_str(&total);
        }
        out
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: one copy; checking at most 20 ASCII bytes is next to free.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(spans: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(a, b) in spans {
            s.insert(a, b);
        }
        s
    }

    fn spans(s: &RangeSet) -> Vec<(u64, u64)> {
        s.iter().collect()
    }

    #[test]
    fn merges_in_order_appends() {
        let s = set(&[(0, 10), (10, 20), (20, 25)]);
        assert_eq!(spans(&s), [(0, 25)]);
        assert!(s.is_complete(25));
        assert!(!s.is_complete(26));
    }

    #[test]
    fn keeps_gaps_and_sorts() {
        let s = set(&[(20, 30), (0, 5), (10, 12)]);
        assert_eq!(spans(&s), [(0, 5), (10, 12), (20, 30)]);
        assert_eq!(s.held(), 17);
        assert_eq!(s.prefix_len(), 5);
        assert_eq!(s.report(40).to_string(), "0-4/40,10-11/40,20-29/40");
    }

    #[test]
    fn merges_adjacent_and_overlapping_across_many_spans() {
        let mut s = set(&[(0, 2), (4, 6), (8, 10), (12, 14)]);
        s.insert(1, 12);
        assert_eq!(spans(&s), [(0, 14)]);
        let mut s = set(&[(4, 6), (8, 10)]);
        s.insert(6, 8);
        assert_eq!(spans(&s), [(4, 10)]);
        let mut s = set(&[(4, 6)]);
        s.insert(0, 4);
        assert_eq!(spans(&s), [(0, 6)]);
    }

    #[test]
    fn contained_insert_changes_nothing() {
        let mut s = set(&[(0, 100)]);
        s.insert(10, 20);
        assert_eq!(spans(&s), [(0, 100)]);
        s.insert(5, 5);
        assert_eq!(spans(&s), [(0, 100)]);
    }

    #[test]
    fn contains_and_overlaps() {
        let s = set(&[(0, 10), (20, 30)]);
        assert!(s.contains(0, 10));
        assert!(s.contains(22, 25));
        assert!(!s.contains(5, 21));
        assert!(!s.contains(10, 11));
        assert!(s.overlaps(9, 11));
        assert!(!s.overlaps(10, 20));
        assert!(s.overlaps(29, 40));
        assert!(!s.overlaps(30, 40));
    }

    #[test]
    fn report_matches_the_seed() {
        assert_eq!(
            set(&[(0, 51201)]).report(511920).to_string(),
            "0-51200/511920"
        );
        assert_eq!(RangeSet::new().report(5).to_string(), "");
    }

    /// Every insertion order of the same spans gives the same set; checked against a bitmap.
    #[test]
    fn agrees_with_a_bitmap_model() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut s = RangeSet::new();
            let mut model = [false; 64];
            for _ in 0..(next() % 8) {
                let a = next() % 64;
                let b = a + next() % (65 - a);
                s.insert(a, b);
                model[a as usize..b as usize]
                    .iter_mut()
                    .for_each(|m| *m = true);
                let mut expect = Vec::new();
                let mut i = 0;
                while i < 64 {
                    if model[i] {
                        let start = i;
                        while i < 64 && model[i] {
                            i += 1;
                        }
                        expect.push((start as u64, i as u64));
                    } else {
                        i += 1;
                    }
                }
                assert_eq!(spans(&s), expect);
                assert_eq!(s.held(), model.iter().filter(|m| **m).count() as u64);
            }
        }
    }

    #[test]
    fn len_after_insert_matches_insert() {
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..200 {
            let mut set = RangeSet::new();
            for _ in 0..40 {
                let start = next(300);
                let end = start + next(20);
                let mut after = set.clone();
                after.insert(start, end);
                assert_eq!(
                    set.len_after_insert(start, end),
                    after.len(),
                    "{set:?} + {start}..{end}"
                );
                set = after;
            }
        }
    }

    /// Adding spans all at once, in any order, gives what inserting them one by one gives, on
    /// top of any set already there; empty and reversed spans add nothing.
    #[test]
    fn extend_unsorted_matches_inserts() {
        let mut rng = 0x51f1_5eed_d00d_f00du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for _ in 0..500 {
            let mut one_by_one = RangeSet::new();
            for _ in 0..next(6) {
                let start = next(500);
                one_by_one.insert(start, start + next(30));
            }
            let mut at_once = one_by_one.clone();
            let spans: Vec<(u64, u64)> = (0..next(60))
                .map(|_| {
                    let start = next(500);
                    // Now and then an empty or reversed span.
                    (start, (start + next(40)).saturating_sub(next(3)))
                })
                .collect();
            for &(start, end) in &spans {
                one_by_one.insert(start, end);
            }
            at_once.extend_unsorted(spans.clone());
            assert_eq!(at_once, one_by_one, "{spans:?}");
        }
    }

    #[test]
    fn decimals_are_written_as_display_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 4096, 16777215, u64::MAX - 1, u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
        let s = set(&[(0, 1), (5, 17), (100, u64::MAX)]);
        assert_eq!(
            s.report(u64::MAX).text(),
            format!("0-0/{m},5-16/{m},100-{}/{m}", u64::MAX - 1, m = u64::MAX)
        );
    }
}
