//! `SessionId::parse` against the exact rule: 1 to `MAX_LEN` bytes of `[A-Za-z0-9_-]`, the
//! first offending byte reported.

use ngx_upload_engine::session_id::{SessionId, SessionIdError, MAX_LEN};

pub fn check(data: &[u8]) {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-';
    let expect = if data.is_empty() {
        Err(SessionIdError::Empty)
    } else if data.len() > MAX_LEN {
        Err(SessionIdError::TooLong)
    } else if let Some(b) = data.iter().find(|b| !allowed(b)) {
        Err(SessionIdError::BadByte(*b))
    } else {
        Ok(())
    };
    match SessionId::parse(data) {
        Ok(id) => {
            assert_eq!(expect, Ok(()), "{data:?} accepted");
            assert_eq!(id.as_str().as_bytes(), data);
            assert_eq!(id.to_string(), id.as_str());
            // It names a file in the store directory: never a path, never `.` or `..`.
            assert!(!id.as_str().contains(['/', '\0', '.']));
        }
        Err(e) => {
            assert_eq!(Err(e), expect, "{data:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}
