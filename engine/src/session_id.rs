//! `X-Session-ID` / `Session-ID`: the client's name for one upload, also its file name on disk.

use core::fmt;

pub const MAX_LEN: usize = 128;

/// A validated session id: 1 to 128 bytes of `[A-Za-z0-9_-]`, so it is always a safe file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionIdError {
    Empty,
    TooLong,
    BadByte(u8),
}

impl fmt::Display for SessionIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::TooLong => write!(f, "is longer than {MAX_LEN} bytes"),
            Self::BadByte(b) => write!(f, "has byte 0x{b:02x} outside [A-Za-z0-9_-]"),
        }
    }
}

impl SessionId {
    pub fn parse(value: &[u8]) -> Result<Self, SessionIdError> {
        if value.is_empty() {
            return Err(SessionIdError::Empty);
        }
        if value.len() > MAX_LEN {
            return Err(SessionIdError::TooLong);
        }
        if let Some(b) = value
            .iter()
            .find(|b| !(b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-'))
        {
            return Err(SessionIdError::BadByte(*b));
        }
        // Checked above: ASCII only.
        Ok(Self(String::from_utf8(value.to_vec()).expect("ASCII")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert_eq!(
            SessionId::parse(b"1111215056").unwrap().as_str(),
            "1111215056"
        );
        assert!(SessionId::parse(b"aZ09_-").is_ok());
        assert!(SessionId::parse(&[b'x'; MAX_LEN]).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(SessionId::parse(b""), Err(SessionIdError::Empty));
        assert_eq!(
            SessionId::parse(&[b'x'; MAX_LEN + 1]),
            Err(SessionIdError::TooLong)
        );
        for bad in [
            &b"../etc"[..],
            b"a/b",
            b"a b",
            b"a.b",
            b"a\0b",
            b"\xc3\xa9",
            b"a\\b",
        ] {
            assert!(
                matches!(SessionId::parse(bad), Err(SessionIdError::BadByte(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            SessionId::parse(b"ok.state").unwrap_err().to_string(),
            "has byte 0x2e outside [A-Za-z0-9_-]"
        );
    }
}
