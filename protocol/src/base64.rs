//! Base64 of RFC 4648 (the standard alphabet), as tus uses it for `Upload-Metadata` values and
//! `Upload-Checksum` digests.
//!
//! Decoding is strict where it matters for what a client meant: only the standard alphabet, `=`
//! only at the end, and no stray bits in the last character (so every value has one spelling).
//! Padding may be left out, as some encoders do.

use core::fmt;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a value is not Base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base64Error {
    /// A byte outside the alphabet (at this index).
    BadByte { byte: u8, at: usize },
    /// A length no Base64 text has (one character past a group of four).
    BadLength,
    /// `=` in the middle, too many of them, or a padded text whose length is not a multiple of 4.
    BadPadding,
    /// The last character carries bits that no encoder sets.
    NonCanonical,
}

impl fmt::Display for Base64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadByte { byte, at } => {
                write!(
                    f,
                    "has byte 0x{byte:02x} at {at}, outside the Base64 alphabet"
                )
            }
            Self::BadLength => f.write_str("has a length no Base64 text has"),
            Self::BadPadding => f.write_str("has misplaced \"=\" padding"),
            Self::NonCanonical => f.write_str("ends in bits no Base64 encoder sets"),
        }
    }
}

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn value(byte: u8) -> Option<u32> {
    let v = match byte {
        b'A'..=b'Z' => byte - b'A',
        b'a'..=b'z' => byte - b'a' + 26,
        b'0'..=b'9' => byte - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

pub fn decode(text: &[u8]) -> Result<Vec<u8>, Base64Error> {
    let pad = text.iter().rev().take_while(|b| **b == b'=').count();
    let body = &text[..text.len() - pad];
    if pad > 2 || (pad > 0 && !text.len().is_multiple_of(4)) {
        return Err(Base64Error::BadPadding);
    }
    if body.contains(&b'=') {
        return Err(Base64Error::BadPadding);
    }
    if let Some(at) = body.iter().position(|b| value(*b).is_none()) {
        return Err(Base64Error::BadByte { byte: body[at], at });
    }
    if body.len() % 4 == 1 {
        return Err(Base64Error::BadLength);
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for (group, chunk) in body.chunks(4).enumerate() {
        let mut n = 0u32;
        for (i, byte) in chunk.iter().enumerate() {
            let v = value(*byte).ok_or(Base64Error::BadByte {
                byte: *byte,
                at: group * 4 + i,
            })?;
            n |= v << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = chunk.len() - 1;
        // The bits past the last whole byte must be zero.
        let spare = match keep {
            1 => n & 0xffff,
            2 => n & 0xff,
            _ => 0,
        };
        if spare != 0 {
            return Err(Base64Error::NonCanonical);
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_rfc_vectors() {
        let vectors: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (b"\xff\xfe\x00", "//4A"),
        ];
        for (raw, text) in vectors {
            assert_eq!(encode(raw), *text);
            assert_eq!(decode(text.as_bytes()).as_deref(), Ok(*raw), "{text}");
        }
    }

    #[test]
    fn padding_may_be_left_out() {
        assert_eq!(decode(b"Zg").unwrap(), b"f");
        assert_eq!(decode(b"Zm8").unwrap(), b"fo");
    }

    #[test]
    fn refuses_what_is_not_base64() {
        assert_eq!(
            decode(b"Zm9v!"),
            Err(Base64Error::BadByte { byte: b'!', at: 4 })
        );
        assert_eq!(
            decode(b"Zm 9v"),
            Err(Base64Error::BadByte { byte: b' ', at: 2 })
        );
        // URL-safe alphabet is another encoding.
        assert!(matches!(decode(b"_-4A"), Err(Base64Error::BadByte { .. })));
        assert_eq!(decode(b"Z"), Err(Base64Error::BadLength));
        assert_eq!(decode(b"Zm9vY"), Err(Base64Error::BadLength));
        assert_eq!(decode(b"Zg=a"), Err(Base64Error::BadPadding));
        assert_eq!(decode(b"Z==="), Err(Base64Error::BadPadding));
        assert_eq!(decode(b"Zg="), Err(Base64Error::BadPadding));
        assert_eq!(decode(b"Zm=9v"), Err(Base64Error::BadPadding));
        assert_eq!(decode(b"Zh=="), Err(Base64Error::NonCanonical));
        assert_eq!(decode(b"Zm9="), Err(Base64Error::NonCanonical));
    }
}
