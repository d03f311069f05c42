//! Structured Field Values for HTTP (RFC 9651, which obsoletes RFC 8941), as far as the IETF
//! resumable-upload draft needs them: parsing an Item (`Upload-Offset`, `Upload-Length`,
//! `Upload-Complete`, `Upload-Incomplete`, `Upload-Draft-Interop-Version`) and serializing a
//! Dictionary of Integers (`Upload-Limit`).
//!
//! The parser follows the RFC's algorithms (section 4.2) for every bare item type, so an Item
//! with parameters (`?1;foo=bar`) is understood and its parameters are ignored, while anything
//! the RFC fails is refused with the reason.

use core::fmt;

/// Largest and smallest sf-integer (15 digits).
pub const MAX_INTEGER: i64 = 999_999_999_999_999;

/// A bare item; [`parse_item`] drops the parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum BareItem {
    Integer(i64),
    /// A Decimal, in thousandths.
    Decimal(i64),
    String(Vec<u8>),
    Token(Vec<u8>),
    ByteSequence(Vec<u8>),
    Boolean(bool),
    /// A Date (RFC 9651): seconds since the epoch.
    Date(i64),
    /// A Display String (RFC 9651), decoded.
    DisplayString(String),
}

impl BareItem {
    fn kind(&self) -> &'static str {
        match self {
            Self::Integer(_) => "an integer",
            Self::Decimal(_) => "a decimal",
            Self::String(_) => "a string",
            Self::Token(_) => "a token",
            Self::ByteSequence(_) => "a byte sequence",
            Self::Boolean(_) => "a boolean",
            Self::Date(_) => "a date",
            Self::DisplayString(_) => "a display string",
        }
    }
}

/// Why a field value is not the Structured Field it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfError {
    /// Not a Structured Field Item at all; says what went wrong, and where.
    Syntax { at: usize, what: &'static str },
    /// A well-formed Item of another type than the field's (`expected`, got `found`).
    Type {
        expected: &'static str,
        found: &'static str,
    },
    /// An Integer out of the field's range (a negative byte count, say).
    Range { value: i64, what: &'static str },
}

impl fmt::Display for SfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { at, what } => {
                write!(f, "is not a structured-field item ({what} at byte {at})")
            }
            Self::Type { expected, found } => {
                write!(f, "is {found}, not {expected}")
            }
            Self::Range { value, what } => write!(f, "is {value}, {what}"),
        }
    }
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn fail<T>(&self, what: &'static str) -> Result<T, SfError> {
        Err(SfError::Syntax { at: self.pos, what })
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn bare_item(&mut self) -> Result<BareItem, SfError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b'*' | b'A'..=b'Z' | b'a'..=b'z') => self.token(),
            Some(b':') => self.byte_sequence(),
            Some(b'?') => self.boolean(),
            Some(b'@') => {
                self.pos += 1;
                match self.number()? {
                    BareItem::Integer(n) => Ok(BareItem::Date(n)),
                    _ => self.fail("a date that is not an integer"),
                }
            }
            Some(b'%') => self.display_string(),
            None => self.fail("nothing"),
            _ => self.fail("a byte that starts no item"),
        }
    }

    fn number(&mut self) -> Result<BareItem, SfError> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let start = self.pos;
        let mut dot = None;
        while let Some(b) = self.peek() {
            match b {
                b'0'..=b'9' => {}
                b'.' if dot.is_none() => {
                    if self.pos - start > 12 {
                        return self.fail("a decimal with more than 12 integer digits");
                    }
                    dot = Some(self.pos);
                }
                _ => break,
            }
            self.pos += 1;
            let len = self.pos - start;
            if dot.is_none() && len > 15 {
                return self.fail("an integer with more than 15 digits");
            }
            if dot.is_some() && len > 16 {
                return self.fail("a decimal with more than 16 characters");
            }
        }
        let digits = &self.input[start..self.pos];
        if digits.is_empty() || digits[0] == b'.' {
            return self.fail("a number without digits");
        }
        let text = std::str::from_utf8(digits).expect("ASCII digits");
        let sign = if negative { -1 } else { 1 };
        match dot {
            None => Ok(BareItem::Integer(
                sign * text.parse::<i64>().expect("at most 15 digits"),
            )),
            Some(at) => {
                let fraction = &self.input[at + 1..self.pos];
                if fraction.is_empty() {
                    return self.fail("a decimal ending in \".\"");
                }
                if fraction.len() > 3 {
                    return self.fail("a decimal with more than 3 fractional digits");
                }
                let (int, frac) = text.split_once('.').expect("a dot");
                let int: i64 = int.parse().expect("at most 12 digits");
                let frac: i64 = format!("{frac:0<3}").parse().expect("3 digits");
                Ok(BareItem::Decimal(sign * (int * 1000 + frac)))
            }
        }
    }

    fn string(&mut self) -> Result<BareItem, SfError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return self.fail("an unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(BareItem::String(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(c),
                        _ => return self.fail("a bad escape in a string"),
                    }
                }
                Some(c @ 0x20..=0x7e) => out.push(c),
                Some(_) => return self.fail("a byte not allowed in a string"),
            }
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Result<BareItem, SfError> {
        let start = self.pos;
        self.pos += 1;
        while let Some(b) = self.peek() {
            if is_tchar(b) || b == b':' || b == b'/' {
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(BareItem::Token(self.input[start..self.pos].to_vec()))
    }

    fn byte_sequence(&mut self) -> Result<BareItem, SfError> {
        self.pos += 1;
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b':' {
                let text = &self.input[start..self.pos];
                self.pos += 1;
                return crate::base64::decode(text)
                    .map(BareItem::ByteSequence)
                    .or_else(|_| self.fail("a byte sequence that is not Base64"));
            }
            self.pos += 1;
        }
        self.fail("an unterminated byte sequence")
    }

    fn boolean(&mut self) -> Result<BareItem, SfError> {
        self.pos += 1;
        let value = match self.peek() {
            Some(b'1') => true,
            Some(b'0') => false,
            _ => return self.fail("a boolean that is neither ?0 nor ?1"),
        };
        self.pos += 1;
        Ok(BareItem::Boolean(value))
    }

    fn display_string(&mut self) -> Result<BareItem, SfError> {
        self.pos += 1;
        if self.peek() != Some(b'"') {
            return self.fail("a \"%\" not followed by a quote");
        }
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            match self.peek() {
                None => return self.fail("an unterminated display string"),
                Some(b'"') => {
                    self.pos += 1;
                    return String::from_utf8(bytes)
                        .map(BareItem::DisplayString)
                        .or_else(|_| self.fail("a display string that is not UTF-8"));
                }
                Some(b'%') => {
                    let hex = self.input.get(self.pos + 1..self.pos + 3);
                    let byte = hex
                        .filter(|h| h.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
                        .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                    match byte {
                        Some(b) => bytes.push(b),
                        None => return self.fail("a bad percent escape in a display string"),
                    }
                    self.pos += 2;
                }
                Some(c @ 0x20..=0x7e) => bytes.push(c),
                Some(_) => return self.fail("a byte not allowed in a display string"),
            }
            self.pos += 1;
        }
    }

    fn key(&mut self) -> Result<(), SfError> {
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.pos += 1,
            _ => return self.fail("a parameter key that does not start with a-z or *"),
        }
        while let Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*') = self.peek() {
            self.pos += 1;
        }
        Ok(())
    }

    fn parameters(&mut self) -> Result<(), SfError> {
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip_sp();
            self.key()?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                self.bare_item()?;
            }
        }
        Ok(())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `value` as an Item and returns its bare item, the parameters checked and dropped.
pub fn parse_item(value: &[u8]) -> Result<BareItem, SfError> {
    let mut p = Parser {
        input: value,
        pos: 0,
    };
    p.skip_sp();
    let item = p.bare_item()?;
    p.parameters()?;
    p.skip_sp();
    if p.pos != value.len() {
        return p.fail("bytes after the item");
    }
    Ok(item)
}

/// An Item that must be a Boolean (`?0`, `?1`).
pub fn parse_boolean(value: &[u8]) -> Result<bool, SfError> {
    match parse_item(value)? {
        BareItem::Boolean(b) => Ok(b),
        other => Err(SfError::Type {
            expected: "a boolean (?0 or ?1)",
            found: other.kind(),
        }),
    }
}

/// An Item that must be an Integer.
pub fn parse_integer(value: &[u8]) -> Result<i64, SfError> {
    match parse_item(value)? {
        BareItem::Integer(n) => Ok(n),
        other => Err(SfError::Type {
            expected: "an integer",
            found: other.kind(),
        }),
    }
}

/// An Item that must be a non-negative Integer, as byte counts are.
pub fn parse_non_negative(value: &[u8]) -> Result<u64, SfError> {
    let n = parse_integer(value)?;
    u64::try_from(n).map_err(|_| SfError::Range {
        value: n,
        what: "a negative byte count",
    })
}

/// `?1` or `?0`.
pub fn boolean(value: bool) -> &'static str {
    if value {
        "?1"
    } else {
        "?0"
    }
}

/// A Dictionary whose members are all Integers: `max-size=1000, max-age=3600`. Keys must be
/// sf-keys (the callers' are constants); integers are clamped to the sf-integer range.
pub fn dictionary_of_integers(members: &[(&str, u64)]) -> String {
    members
        .iter()
        .map(|(key, value)| format!("{key}={}", (*value).min(MAX_INTEGER as u64)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        assert_eq!(parse_boolean(b"?1"), Ok(true));
        assert_eq!(parse_boolean(b"?0"), Ok(false));
        assert_eq!(parse_boolean(b"  ?1  "), Ok(true));
        // Parameters are allowed and ignored.
        assert_eq!(parse_boolean(b"?1;foo=bar;x;n=-3.5;s=\"a b\""), Ok(true));
        for bad in [
            &b"?2"[..],
            b"?",
            b"1",
            b"true",
            b"?1 ?0",
            b"?1,?0",
            b"?1;",
            b"?1;Foo=1",
            b"",
            b"\t?1",
            b"?1;a=",
        ] {
            assert!(
                parse_boolean(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_boolean(b"1"),
            Err(SfError::Type {
                expected: "a boolean (?0 or ?1)",
                found: "an integer"
            })
        );
    }

    #[test]
    fn integers() {
        assert_eq!(parse_integer(b"0"), Ok(0));
        assert_eq!(parse_integer(b"-7"), Ok(-7));
        assert_eq!(parse_integer(b"007"), Ok(7));
        assert_eq!(parse_integer(b"999999999999999"), Ok(MAX_INTEGER));
        assert_eq!(parse_integer(b"-999999999999999"), Ok(-MAX_INTEGER));
        assert_eq!(parse_integer(b"42;unit=bytes"), Ok(42));
        assert!(matches!(
            parse_integer(b"1000000000000000"),
            Err(SfError::Syntax { .. })
        ));
        for bad in [
            &b"+1"[..],
            b"1e3",
            b"0x10",
            b"1 2",
            b"-",
            b"--1",
            b"12a",
            b"",
        ] {
            assert!(
                parse_integer(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_integer(b"1.5"),
            Err(SfError::Type {
                expected: "an integer",
                found: "a decimal"
            })
        );
        assert_eq!(
            parse_non_negative(b"-1"),
            Err(SfError::Range {
                value: -1,
                what: "a negative byte count"
            })
        );
        assert_eq!(parse_non_negative(b"12"), Ok(12));
    }

    #[test]
    fn every_bare_item_type_parses() {
        assert_eq!(parse_item(b"1.25"), Ok(BareItem::Decimal(1250)));
        assert_eq!(parse_item(b"-0.5"), Ok(BareItem::Decimal(-500)));
        assert!(parse_item(b"1.").is_err());
        assert!(parse_item(b"1.2345").is_err());
        assert!(parse_item(b"1234567890123.1").is_err());
        assert_eq!(
            parse_item(br#""a \"q\" \\""#),
            Ok(BareItem::String(br#"a "q" \"#.to_vec()))
        );
        assert!(parse_item(b"\"open").is_err());
        assert!(parse_item(b"\"bad \\n\"").is_err());
        assert_eq!(
            parse_item(b"text/plain"),
            Ok(BareItem::Token(b"text/plain".to_vec()))
        );
        assert_eq!(
            parse_item(b":aGk=:"),
            Ok(BareItem::ByteSequence(b"hi".to_vec()))
        );
        assert!(parse_item(b":a!:").is_err());
        assert!(parse_item(b":aGk=").is_err());
        assert_eq!(
            parse_item(b"@1659578233"),
            Ok(BareItem::Date(1_659_578_233))
        );
        assert!(parse_item(b"@1.5").is_err());
        assert_eq!(
            parse_item(b"%\"f%c3%bc\""),
            Ok(BareItem::DisplayString("fü".into()))
        );
        assert!(parse_item(b"%\"%C3%BC\"").is_err());
        assert!(parse_item(b"%\"%ff\"").is_err());
        assert!(parse_item(b"(1 2)").is_err());
    }

    #[test]
    fn dictionaries() {
        assert_eq!(
            dictionary_of_integers(&[("max-size", 1000), ("max-age", 3600)]),
            "max-size=1000, max-age=3600"
        );
        assert_eq!(
            dictionary_of_integers(&[("max-size", u64::MAX)]),
            "max-size=999999999999999"
        );
        assert_eq!(boolean(true), "?1");
        assert_eq!(boolean(false), "?0");
    }
}
