//! Why a request could not go on, in terms no protocol owns: each protocol turns a [`Problem`]
//! into its own status and format ([`crate::Protocol::refuse`]).

use core::fmt;
use std::io;

use ngx_upload_engine::session::SessionError;

/// What went wrong, as precisely as a protocol needs to tell it to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A header, id, range or body is malformed.
    BadRequest,
    /// The method is not one this location takes.
    MethodNotAllowed,
    /// The body's type (or its absence) is not one this location takes.
    UnsupportedMediaType,
    /// The file (or the hand-off body) would exceed a configured maximum, or what the
    /// filesystem can hold.
    TooLarge,
    /// A `Content-Range` header that cannot be parsed.
    BadRange,
    /// The body is longer or shorter than the range or length it declared.
    BodyLengthMismatch,
    /// The upload would hold more separate ranges than allowed.
    TooManyRanges,
    /// Another request is writing bytes this one overlaps.
    InFlight,
    /// The request names another total size than the upload has.
    TotalMismatch,
    /// The upload exists (or is in progress) and this request would replace it.
    Exists,
    /// The upload is complete and another request is handing it off.
    HandOffBusy,
    /// No such upload.
    NotFound,
    /// The client stopped sending the body in time.
    Timeout,
    /// The disk or quota is full.
    StorageFull,
    /// A fault of the server (damaged state, I/O error, out of memory).
    Internal,
    /// The request claims to write at byte `sent`, but the upload holds `held` bytes; nothing
    /// was written.
    OffsetMismatch { held: u64, sent: u64 },
    /// The body would take the upload past its length (`length` bytes); what came before the
    /// excess may be kept.
    PastLength { length: u64 },
    /// The body does not hash to the digest the request sent with it; nothing was recorded.
    ChecksumMismatch,
    /// The upload existed but is no more: it expired, or was terminated, and the glue still
    /// knows of it.
    Gone,
    /// The request is not allowed on this upload: bytes sent to an upload assembled from parts.
    Forbidden,
    /// The client speaks a version of the protocol this server does not.
    UnsupportedVersion,
}

impl Problem {
    /// The plain HTTP status for the problem, as the seed protocol and nginx-upload-module
    /// answer it.
    pub fn plain_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::MethodNotAllowed => 405,
            Self::UnsupportedMediaType => 415,
            Self::TooLarge => 413,
            Self::BadRange | Self::BodyLengthMismatch | Self::TooManyRanges => 416,
            Self::InFlight | Self::TotalMismatch | Self::Exists | Self::HandOffBusy => 409,
            Self::NotFound => 404,
            Self::Timeout => 408,
            Self::StorageFull => 507,
            Self::Internal => 500,
            Self::OffsetMismatch { .. } => 409,
            Self::PastLength { .. } => 413,
            Self::ChecksumMismatch => 400,
            Self::Gone => 410,
            Self::Forbidden => 403,
            Self::UnsupportedVersion => 412,
        }
    }
}

/// A request that cannot go on: the problem, and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub problem: Problem,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    pub fn new(problem: Problem, message: impl Into<String>) -> Self {
        Self {
            problem,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Problem::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Problem::Internal, message)
    }

    /// A failed disk operation: a full disk (or quota) is told apart from a fault, so clients
    /// and monitoring can tell it from a bug.
    pub fn io(context: impl fmt::Display, e: &io::Error) -> Self {
        let problem = match e.raw_os_error() {
            Some(libc_errno::ENOSPC) | Some(libc_errno::EDQUOT) => Problem::StorageFull,
            // An offset past what the filesystem can hold: the client asked too much.
            Some(libc_errno::EFBIG) => Problem::TooLarge,
            _ => Problem::Internal,
        };
        Self::new(problem, format!("{context}: {e}"))
    }

    /// The same failure with `context` in front of its message.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// The errno values [`Failure::io`] tells apart (Linux's, as nginx runs there; std exposes no
/// names for them).
mod libc_errno {
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EDQUOT: i32 = 122;
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        let problem = match &e {
            SessionError::IdTooShort { .. } => Problem::BadRequest,
            SessionError::TotalMismatch { .. } => Problem::TotalMismatch,
            SessionError::InFlight { .. } => Problem::InFlight,
            SessionError::TooManyRanges { .. } => Problem::TooManyRanges,
            SessionError::DamagedState(_) => Problem::Internal,
            SessionError::Io(io) => return Failure::io("session files", io),
        };
        Failure::new(problem, e.to_string())
    }
}

impl From<ngx_upload_engine::upload::UploadError> for Failure {
    fn from(e: ngx_upload_engine::upload::UploadError) -> Self {
        use ngx_upload_engine::content_range::MAX_OFFSET;
        use ngx_upload_engine::upload::UploadError as E;
        if let E::Part { index, error } = e {
            // The part's own error says what is wrong with it.
            let inner = Failure::from(*error);
            return Failure::new(inner.problem, format!("part {index}: {}", inner.message));
        }
        let problem = match &e {
            E::IdTooShort { .. } | E::BadMetadataKey { .. } | E::Incomplete { .. } => {
                Problem::BadRequest
            }
            E::AlreadyExists => Problem::Exists,
            E::NotFound => Problem::NotFound,
            E::Expired | E::Gone => Problem::Gone,
            E::OffsetMismatch { held, requested } => Problem::OffsetMismatch {
                held: *held,
                sent: *requested,
            },
            E::LengthAlreadyDeclared { .. } | E::LengthBelowHeld { .. } => Problem::TotalMismatch,
            E::LengthTooLarge { .. } | E::MetadataTooLarge { .. } => Problem::TooLarge,
            E::BeyondLength { length, .. } => Problem::PastLength {
                length: length.unwrap_or(MAX_OFFSET),
            },
            E::OutsideClaim { .. } | E::DamagedState(_) => Problem::Internal,
            E::InFlight { .. } => Problem::InFlight,
            E::TooManyRanges { .. } => Problem::TooManyRanges,
            E::AwaitedByTooMany { .. } => Problem::BadRequest,
            E::Part { .. } => unreachable!("taken above"),
            E::Io(io) => return Failure::io("upload files", io),
        };
        Failure::new(problem, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_not_a_fault() {
        let full = io::Error::from_raw_os_error(28);
        assert_eq!(Failure::io("w", &full).problem, Problem::StorageFull);
        let quota = io::Error::from_raw_os_error(122);
        assert_eq!(Failure::io("w", &quota).problem, Problem::StorageFull);
        let big = io::Error::from_raw_os_error(27);
        assert_eq!(Failure::io("w", &big).problem, Problem::TooLarge);
        let other = io::Error::from_raw_os_error(5);
        let f = Failure::io("writing \"x\"", &other);
        assert_eq!(f.problem, Problem::Internal);
        assert!(f.message.starts_with("writing \"x\": "), "{}", f.message);
    }

    #[test]
    fn session_errors_keep_their_meaning() {
        let cases = [
            (SessionError::IdTooShort { need: 3 }, Problem::BadRequest),
            (
                SessionError::TotalMismatch { stored: 1, sent: 2 },
                Problem::TotalMismatch,
            ),
            (
                SessionError::InFlight { first: 0, last: 1 },
                Problem::InFlight,
            ),
            (
                SessionError::TooManyRanges { max: 4 },
                Problem::TooManyRanges,
            ),
        ];
        for (e, problem) in cases {
            assert_eq!(Failure::from(e).problem, problem);
        }
    }

    #[test]
    fn plain_statuses_are_the_c_modules() {
        assert_eq!(Problem::BodyLengthMismatch.plain_status(), 416);
        assert_eq!(Problem::TooManyRanges.plain_status(), 416);
        assert_eq!(Problem::InFlight.plain_status(), 409);
        assert_eq!(Problem::StorageFull.plain_status(), 507);
        assert_eq!(Problem::UnsupportedMediaType.plain_status(), 415);
    }

    #[test]
    fn plain_statuses_of_the_resumable_protocols_problems() {
        let cases = [
            (Problem::OffsetMismatch { held: 1, sent: 2 }, 409),
            (Problem::PastLength { length: 3 }, 413),
            (Problem::ChecksumMismatch, 400),
            (Problem::Gone, 410),
            (Problem::Forbidden, 403),
            (Problem::UnsupportedVersion, 412),
        ];
        for (problem, status) in cases {
            assert_eq!(problem.plain_status(), status, "{problem:?}");
        }
    }
}
