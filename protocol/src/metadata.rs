//! tus's `Upload-Metadata`: `key base64,key2 base64,key3` (tus 1.0, creation extension).
//!
//! - pairs are separated by commas; white space around a pair is allowed;
//! - a key is non-empty, unique, printable ASCII without spaces or commas;
//! - the value is Base64 and may be empty, and then the space after the key may be left out too
//!   (`key` and `key ` both mean an empty value; tus-js-client sends `key `);
//! - an empty header means no metadata (tuspy always sends the header, empty when there is none).

use core::fmt;

use crate::base64;

/// Metadata of an upload: keys and values, in the order sent, keys unique. Values are
/// arbitrary bytes (they are Base64 on the wire).
pub type Metadata = Vec<(Vec<u8>, Vec<u8>)>;

/// Most pairs an upload may carry.
pub const MAX_PAIRS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// An empty pair: `a YQ==,,b` or a trailing comma.
    EmptyPair {
        index: usize,
    },
    /// A key with a byte that is not printable ASCII.
    BadKey {
        key: Vec<u8>,
    },
    /// The same key twice.
    DuplicateKey {
        key: Vec<u8>,
    },
    /// More than a key and one value.
    ExtraField {
        key: Vec<u8>,
    },
    /// The value is not Base64.
    BadValue {
        key: Vec<u8>,
        error: base64::Base64Error,
    },
    TooManyPairs,
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lossy = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        match self {
            Self::EmptyPair { index } => write!(f, "has an empty pair (number {})", index + 1),
            Self::BadKey { key } => write!(
                f,
                "has key \"{}\" with a byte that is not printable ASCII",
                key.escape_ascii()
            ),
            Self::DuplicateKey { key } => write!(f, "has key \"{}\" twice", lossy(key)),
            Self::ExtraField { key } => {
                write!(f, "has more than one value for key \"{}\"", lossy(key))
            }
            Self::BadValue { key, error } => {
                write!(f, "has a value for key \"{}\" that {error}", lossy(key))
            }
            Self::TooManyPairs => write!(f, "has more than {MAX_PAIRS} pairs"),
        }
    }
}

fn is_ws(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ws(first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ws(last) {
            break;
        }
        s = rest;
    }
    s
}

pub fn parse(header: &[u8]) -> Result<Metadata, MetadataError> {
    let mut out: Metadata = Vec::new();
    if trim(header).is_empty() {
        return Ok(out);
    }
    for (index, pair) in header.split(|b| *b == b',').enumerate() {
        let pair = trim(pair);
        if pair.is_empty() {
            return Err(MetadataError::EmptyPair { index });
        }
        if out.len() == MAX_PAIRS {
            return Err(MetadataError::TooManyPairs);
        }
        let key_len = pair.iter().position(is_ws).unwrap_or(pair.len());
        let key = &pair[..key_len];
        let value = trim(&pair[key_len..]);
        if !key.iter().all(|b| b.is_ascii_graphic()) {
            return Err(MetadataError::BadKey { key: key.to_vec() });
        }
        if value.iter().any(is_ws) {
            return Err(MetadataError::ExtraField { key: key.to_vec() });
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(MetadataError::DuplicateKey { key: key.to_vec() });
        }
        let value = base64::decode(value).map_err(|error| MetadataError::BadValue {
            key: key.to_vec(),
            error,
        })?;
        out.push((key.to_vec(), value));
    }
    Ok(out)
}

/// The header value for `metadata` (empty values as a bare key).
pub fn format(metadata: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (key, value)) in metadata.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(key);
        if !value.is_empty() {
            out.push(b' ');
            out.extend_from_slice(base64::encode(value).as_bytes());
        }
    }
    out
}

/// The value of `key`, if the metadata has it.
pub fn get<'a>(metadata: &'a [(Vec<u8>, Vec<u8>)], key: &str) -> Option<&'a [u8]> {
    metadata
        .iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Metadata {
        list.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn parses_the_specs_example() {
        let m = parse(b"filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential").unwrap();
        assert_eq!(
            m,
            pairs(&[
                ("filename", "world_domination_plan.pdf"),
                ("is_confidential", "")
            ])
        );
    }

    #[test]
    fn empty_headers_and_values() {
        // tuspy sends the header even without metadata.
        assert_eq!(parse(b""), Ok(vec![]));
        assert_eq!(parse(b"  "), Ok(vec![]));
        // tus-js-client writes "key " for an empty value; a bare key is the same.
        assert_eq!(parse(b"a ,b"), Ok(pairs(&[("a", ""), ("b", "")])));
        assert_eq!(
            parse(b" a YQ== , b\tYg==  "),
            Ok(pairs(&[("a", "a"), ("b", "b")]))
        );
        // Several blanks between key and value are tolerated.
        assert_eq!(parse(b"a   YQ=="), Ok(pairs(&[("a", "a")])));
    }

    #[test]
    fn binary_values_survive() {
        let m = parse(b"k AP8=").unwrap();
        assert_eq!(m, vec![(b"k".to_vec(), vec![0, 255])]);
        assert_eq!(format(&m), b"k AP8=");
    }

    #[test]
    fn refuses_malformed_metadata() {
        assert_eq!(
            parse(b"a YQ==,"),
            Err(MetadataError::EmptyPair { index: 1 })
        );
        assert_eq!(
            parse(b"a YQ==,,b Yg=="),
            Err(MetadataError::EmptyPair { index: 1 })
        );
        assert_eq!(parse(b","), Err(MetadataError::EmptyPair { index: 0 }));
        assert_eq!(
            parse(b"a YQ==,a Yg=="),
            Err(MetadataError::DuplicateKey { key: b"a".to_vec() })
        );
        assert_eq!(
            parse(b"a YQ== Yg=="),
            Err(MetadataError::ExtraField { key: b"a".to_vec() })
        );
        assert!(matches!(
            parse(b"a not-base64!"),
            Err(MetadataError::BadValue { .. })
        ));
        assert!(matches!(parse(b"a Y"), Err(MetadataError::BadValue { .. })));
        assert_eq!(
            parse("ké YQ==".as_bytes()),
            Err(MetadataError::BadKey {
                key: "ké".as_bytes().to_vec()
            })
        );
        assert_eq!(
            parse(b"a\x01 YQ=="),
            Err(MetadataError::BadKey {
                key: b"a\x01".to_vec()
            })
        );
        let many: Vec<String> = (0..=MAX_PAIRS).map(|i| format!("k{i}")).collect();
        assert_eq!(
            parse(many.join(",").as_bytes()),
            Err(MetadataError::TooManyPairs)
        );
        for e in [
            MetadataError::EmptyPair { index: 0 },
            MetadataError::TooManyPairs,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn formats_for_head_answers() {
        let m = pairs(&[("filename", "a.txt"), ("empty", ""), ("t", "x")]);
        assert_eq!(format(&m), b"filename YS50eHQ=,empty,t eA==");
        assert_eq!(parse(&format(&m)), Ok(m.clone()));
        assert_eq!(get(&m, "t"), Some(&b"x"[..]));
        assert_eq!(get(&m, "nope"), None);
    }
}
