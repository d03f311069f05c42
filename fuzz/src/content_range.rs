//! `content_range::parse` against an independent reference parser written with `str`
//! methods, and the `Display` round trip of what it accepts.

use ngx_upload_engine::content_range::{parse, ContentRange, ContentRangeError, MAX_OFFSET};

pub fn check(data: &[u8]) {
    let got = parse(data);
    assert_eq!(
        got,
        reference(data),
        "input {:?}",
        String::from_utf8_lossy(data)
    );
    match got {
        Ok(r) => {
            assert!(r.first <= r.last && r.last < r.total && r.total <= MAX_OFFSET);
            assert_eq!(r.len(), r.last - r.first + 1);
            assert_eq!(r.span(), (r.first, r.last + 1));
            // What is accepted prints in the canonical form, which parses back to it.
            let text = r.to_string();
            assert_eq!(parse(text.as_bytes()), Ok(r), "{text:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The grammar as the module documents it: optional blanks (SP, HT) around the value and
/// around `-` and `/`, a case-insensitive alphanumeric unit `bytes` followed by a blank, then
/// `first-last/total` in decimal digits, each at most `MAX_OFFSET`, `first <= last < total`.
/// Errors are reported in reading order, left to right.
fn reference(data: &[u8]) -> Result<ContentRange, ContentRangeError> {
    use ContentRangeError::*;
    // Every byte the grammar allows is ASCII; other bytes can only be a syntax error, but
    // may come after a wrong unit, which is reported first. So map them to a byte that is
    // not in the grammar and keep going.
    let text: String = data
        .iter()
        .map(|&b| if b.is_ascii() { b as char } else { '\u{0}' })
        .collect();
    let blank = |c: char| c == ' ' || c == '\t';
    let value = text.trim_matches(blank);
    let (unit, rest) = value.split_at(value.find(blank).ok_or(Syntax)?);
    if unit.is_empty() || !unit.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Syntax);
    }
    if !unit.eq_ignore_ascii_case("bytes") {
        return Err(Unit);
    }
    let rest = rest.trim_matches(blank);
    let (first, rest) = rest.split_once('-').ok_or(Syntax)?;
    let (last, total) = rest.split_once('/').ok_or(Syntax)?;
    if first.contains('/') {
        return Err(Syntax); // `/` before `-`
    }
    let number = |s: &str| -> Result<u64, ContentRangeError> {
        let s = s.trim_matches(blank);
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Syntax);
        }
        match s.parse::<u128>() {
            Ok(n) if n <= u128::from(MAX_OFFSET) => Ok(n as u64),
            _ => Err(TooLarge), // all digits: only too long for u128 or beyond off_t
        }
    };
    let first = number(first)?;
    let last = number(last)?;
    let total = number(total)?;
    if last < first {
        return Err(EndBeforeStart);
    }
    if last >= total {
        return Err(EndBeyondTotal);
    }
    Ok(ContentRange { first, last, total })
}
