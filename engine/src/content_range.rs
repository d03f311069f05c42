//! `X-Content-Range` / `Content-Range` request header: `bytes <first>-<last>/<total>`.

use core::fmt;

/// One segment's place in the file: bytes `first..=last` of a file of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub total: u64,
}

impl ContentRange {
    /// Number of bytes the segment carries (never zero: `last` ≥ `first`).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Half-open form used by [`crate::range_set::RangeSet`].
    pub fn span(&self) -> (u64, u64) {
        (self.first, self.last + 1)
    }
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes {}-{}/{}", self.first, self.last, self.total)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRangeError {
    /// Not of the form `unit first-last/total` with decimal numbers.
    Syntax,
    /// A unit other than `bytes`.
    Unit,
    /// `last` < `first`.
    EndBeforeStart,
    /// `last` ≥ `total`.
    EndBeyondTotal,
    /// A number does not fit in a file offset (`off_t`).
    TooLarge,
}

impl fmt::Display for ContentRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syntax => "is not of the form \"bytes first-last/total\"",
            Self::Unit => "has a unit other than \"bytes\"",
            Self::EndBeforeStart => "ends before it starts",
            Self::EndBeyondTotal => "ends at or beyond the total size",
            Self::TooLarge => "has a number too large for a file offset",
        })
    }
}

/// Largest byte offset a file may have (`off_t` is signed 64-bit on every target nginx supports).
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// Parses a header value. Surrounding white space is allowed, as is white space around `-` and
/// `/`; the unit is case-insensitive, as HTTP range units are.
pub fn parse(value: &[u8]) -> Result<ContentRange, ContentRangeError> {
    let value = trim(value);
    let unit_end = value
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .ok_or(ContentRangeError::Syntax)?;
    let (unit, rest) = value.split_at(unit_end);
    if unit.is_empty() || !unit.iter().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ContentRangeError::Syntax);
    }
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return Err(ContentRangeError::Unit);
    }
    let rest = trim(rest);
    let dash = rest
        .iter()
        .position(|b| *b == b'-')
        .ok_or(ContentRangeError::Syntax)?;
    let slash = rest
        .iter()
        .position(|b| *b == b'/')
        .ok_or(ContentRangeError::Syntax)?;
    if slash < dash {
        return Err(ContentRangeError::Syntax);
    }
    let first = number(&rest[..dash])?;
    let last = number(&rest[dash + 1..slash])?;
    let total = number(&rest[slash + 1..])?;
    if last < first {
        return Err(ContentRangeError::EndBeforeStart);
    }
    if last >= total {
        return Err(ContentRangeError::EndBeyondTotal);
    }
    Ok(ContentRange { first, last, total })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn number(digits: &[u8]) -> Result<u64, ContentRangeError> {
    let digits = trim(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ContentRangeError::Syntax);
    }
    let mut n: u64 = 0;
    for d in digits {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .filter(|n| *n <= MAX_OFFSET)
            .ok_or(ContentRangeError::TooLarge)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ContentRange {
        parse(s.as_bytes()).unwrap()
    }
    fn err(s: &str) -> ContentRangeError {
        parse(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_the_seed_examples() {
        assert_eq!(
            ok("bytes 0-51200/511920"),
            ContentRange {
                first: 0,
                last: 51200,
                total: 511920
            }
        );
        let last = ok("bytes 460809-511919/511920");
        assert_eq!(last.len(), 51111);
        assert_eq!(last.span(), (460809, 511920));
        assert_eq!(last.to_string(), "bytes 460809-511919/511920");
    }

    #[test]
    fn tolerates_white_space_and_unit_case() {
        assert_eq!(
            ok("  Bytes 1 - 2 / 3 "),
            ContentRange {
                first: 1,
                last: 2,
                total: 3
            }
        );
        assert_eq!(
            ok("bytes\t0-0/1"),
            ContentRange {
                first: 0,
                last: 0,
                total: 1
            }
        );
    }

    #[test]
    fn single_byte_file() {
        assert_eq!(ok("bytes 0-0/1").len(), 1);
    }

    #[test]
    fn rejects_other_units() {
        assert_eq!(err("items 0-1/2"), ContentRangeError::Unit);
        assert_eq!(err("byte 0-1/2"), ContentRangeError::Unit);
    }

    #[test]
    fn rejects_inverted_and_out_of_bounds_ranges() {
        assert_eq!(err("bytes 5-4/10"), ContentRangeError::EndBeforeStart);
        assert_eq!(err("bytes 0-10/10"), ContentRangeError::EndBeyondTotal);
        assert_eq!(err("bytes 0-0/0"), ContentRangeError::EndBeyondTotal);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "bytes",
            "bytes ",
            "bytes 0-1",
            "bytes 0/1-2",
            "bytes -1/2",
            "bytes 0-/2",
            "bytes 0-1/",
            "bytes 0-1/*",
            "bytes */10",
            "bytes +0-1/2",
            "bytes 0x1-2/3",
            "bytes 0-1/2/3",
            "bytes 0--1/2",
            "0-1/2",
            "bytes=0-1/2",
            "bytes 0-1/2,3-4/5",
            "bytes 1 2-3/4",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn rejects_numbers_beyond_off_t() {
        assert_eq!(
            err("bytes 0-1/9223372036854775808"),
            ContentRangeError::TooLarge
        );
        assert_eq!(
            err("bytes 0-1/99999999999999999999999"),
            ContentRangeError::TooLarge
        );
        assert_eq!(ok("bytes 0-1/9223372036854775807").total, MAX_OFFSET);
    }
}
