//! CORS for browser clients of tus and the IETF draft (tus-js-client, Uppy): which headers a
//! page may read, and the answer to a preflight request, for a configured origin.

use crate::{Method, RequestHead};

/// The response headers a page needs to read: everything tus and the IETF draft answer with.
pub const EXPOSE_HEADERS: &str = "Location, Upload-Offset, Upload-Length, Upload-Defer-Length, \
Upload-Metadata, Upload-Concat, Upload-Expires, Tus-Resumable, Tus-Version, Tus-Extension, \
Tus-Max-Size, Tus-Checksum-Algorithm, Upload-Complete, Upload-Incomplete, Upload-Limit, \
Upload-Draft-Interop-Version";

/// The request headers a page may send.
pub const ALLOW_HEADERS: &str = "Authorization, Origin, X-Requested-With, X-Request-ID, \
X-HTTP-Method-Override, Content-Type, Content-Disposition, Upload-Length, Upload-Offset, \
Upload-Defer-Length, Upload-Metadata, Upload-Concat, Upload-Checksum, Tus-Resumable, \
Upload-Complete, Upload-Incomplete, Upload-Draft-Interop-Version";

/// The methods a page may use (PUT for an IETF creation).
pub const ALLOW_METHODS: &str = "POST, PUT, PATCH, HEAD, DELETE, OPTIONS";

/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE: &str = "86400";

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(head: &RequestHead<'_>) -> bool {
    head.method == Method::Options
        && head.header("origin").is_some()
        && head.header("access-control-request-method").is_some()
}

/// The headers of every answer when `origin` is configured (`*` or one origin).
pub fn headers(origin: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("Access-Control-Allow-Origin", origin.to_vec()),
        ("Access-Control-Expose-Headers", EXPOSE_HEADERS.into()),
    ]
}

/// The headers of the answer to a preflight.
pub fn preflight(origin: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("Access-Control-Allow-Origin", origin.to_vec()),
        ("Access-Control-Allow-Methods", ALLOW_METHODS.into()),
        ("Access-Control-Allow-Headers", ALLOW_HEADERS.into()),
        ("Access-Control-Max-Age", MAX_AGE.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_header_of_both_protocols() {
        for name in [
            "Upload-Offset",
            "Location",
            "Upload-Length",
            "Tus-Resumable",
            "Tus-Version",
            "Tus-Extension",
            "Tus-Max-Size",
            "Tus-Checksum-Algorithm",
            "Upload-Metadata",
            "Upload-Defer-Length",
            "Upload-Concat",
            "Upload-Expires",
            "Upload-Complete",
            "Upload-Incomplete",
            "Upload-Limit",
            "Upload-Draft-Interop-Version",
        ] {
            assert!(
                EXPOSE_HEADERS.split(", ").any(|h| h == name),
                "{name} is not exposed"
            );
        }
        for name in ["Upload-Checksum", "X-HTTP-Method-Override", "Upload-Concat"] {
            assert!(ALLOW_HEADERS.split(", ").any(|h| h == name), "{name}");
        }
    }

    #[test]
    fn tells_a_preflight() {
        let mut h = RequestHead::new(Method::Options, b"/files/");
        assert!(!is_preflight(&h));
        h.headers.push((b"Origin", b"https://app.example"));
        assert!(!is_preflight(&h));
        h.headers.push((b"Access-Control-Request-Method", b"PATCH"));
        assert!(is_preflight(&h));
        let p = preflight(b"https://app.example");
        assert_eq!(p[0].1, b"https://app.example");
        assert_eq!(
            headers(b"*")[0],
            ("Access-Control-Allow-Origin", b"*".to_vec())
        );
    }
}
