//! What tus 1.0 ([`crate::tus`]) and the IETF resumable-upload draft ([`crate::ietf`]) share:
//! the location's [`Settings`], the URLs of uploads, and [`Resumable`], which tells the two apart
//! on one location (`Tus-Resumable` vs `Upload-Draft-Interop-Version`) and speaks the one the
//! request speaks.
//!
//! URLs: the location's URI prefix (`/files/`) is where uploads are created; upload `id` lives
//! at the prefix followed by the id (`/files/3f2a…`), which is also its `Location`.

use ngx_upload_engine::content_range::MAX_OFFSET;
use ngx_upload_engine::hashing::Algorithms;
use ngx_upload_engine::session_id::SessionId;

use crate::head::starts_with_ignore_case;
use crate::ietf::{Ietf, InteropVersion};
use crate::metadata;
use crate::plan::{Concat, Held, Stage};
use crate::tus::Tus;
use crate::{Answer, Failure, FileFacts, Method, Outcome, Plan, Problem, Reply, RequestHead};

/// The location's settings both protocols decide with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The decoded path uploads are created at, such as `/files/`; upload `id` is at the prefix
    /// followed by `id`. A missing final `/` is implied.
    pub uri_prefix: Vec<u8>,
    /// Largest upload, in bytes (`Tus-Max-Size`, `Upload-Limit: max-size`).
    pub max_size: Option<u64>,
    /// Uploads expire this many seconds after they were last written to (`Upload-Expires`,
    /// `Upload-Limit: max-age`, tus's expiration extension); `None`: never.
    pub expire_after: Option<u64>,
    /// The origin browsers may upload from (`*` or `https://app.example`): CORS headers on
    /// every answer and preflights answered. `None`: no CORS.
    pub cors_origin: Option<Vec<u8>>,
    /// The digests a client may send with a body (tus checksum extension; `sha1` is the one
    /// tus requires). Empty: the extension is off.
    pub checksums: Algorithms,
}

impl Settings {
    /// Settings for uploads under `uri_prefix`, without limits, expiry or CORS, with the
    /// checksums md5, sha1, sha256 and crc32.
    pub fn new(uri_prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            uri_prefix: uri_prefix.into(),
            max_size: None,
            expire_after: None,
            cors_origin: None,
            checksums: Algorithms::MD5 | Algorithms::SHA1 | Algorithms::SHA256 | Algorithms::CRC32,
        }
    }

    /// The most bytes an upload may have.
    pub fn max_size(&self) -> u64 {
        self.max_size.unwrap_or(MAX_OFFSET).min(MAX_OFFSET)
    }

    /// The prefix without its final `/` (`/files`; empty for `/`).
    fn base(&self) -> &[u8] {
        let mut base = self.uri_prefix.as_slice();
        while let [rest @ .., b'/'] = base {
            base = rest;
        }
        base
    }

    /// The URL uploads' ids follow, percent-encoded, ending in `/`.
    pub fn location_prefix(&self) -> Vec<u8> {
        let mut out = percent_encode_path(self.base());
        out.push(b'/');
        out
    }

    /// The URL of upload `id`: its `Location`.
    pub fn location(&self, id: &SessionId) -> Vec<u8> {
        let mut out = self.location_prefix();
        out.extend_from_slice(id.as_str().as_bytes());
        out
    }

    /// The CORS headers of an answer, if CORS is on.
    pub(crate) fn cors(&self) -> Vec<(&'static str, Vec<u8>)> {
        self.cors_origin
            .as_deref()
            .map(crate::cors::headers)
            .unwrap_or_default()
    }

    /// What a request's path names.
    pub(crate) fn target(&self, uri: &[u8]) -> Result<Target, Failure> {
        let base = self.base();
        if uri == base
            || (uri.len() == base.len() + 1 && uri.starts_with(base) && uri.ends_with(b"/"))
        {
            return Ok(Target::Collection);
        }
        let not_found = || {
            Failure::new(
                Problem::NotFound,
                format!(
                    "\"{}\" is neither {}/ nor an upload under it",
                    uri.escape_ascii(),
                    base.escape_ascii()
                ),
            )
        };
        match uri.strip_prefix(base).and_then(|r| r.strip_prefix(b"/")) {
            Some(id) => SessionId::parse(id)
                .map(Target::Upload)
                .map_err(|_| not_found()),
            None => Err(not_found()),
        }
    }

    /// The upload a URL of `Upload-Concat` names: an absolute `http(s)` URL, an absolute path,
    /// or a path relative to the request's `request_uri`, which must be exactly one of this
    /// location's upload URLs. Dot segments, queries, fragments, and anything outside the
    /// prefix are refused.
    pub(crate) fn resolve_upload_url(
        &self,
        url: &[u8],
        request_uri: &[u8],
    ) -> Result<SessionId, Failure> {
        let refuse = |why: &str| {
            Failure::bad_request(format!(
                "Upload-Concat part \"{}\" {why}",
                url.escape_ascii()
            ))
        };
        if url.iter().any(|b| *b == b'?' || *b == b'#') {
            return Err(refuse("has a query or fragment"));
        }
        if url.iter().any(|b| !b.is_ascii_graphic()) {
            return Err(refuse("has a byte that is not printable ASCII"));
        }
        let path: Vec<u8> = if let Some(rest) = strip_scheme(url) {
            let slash = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
            if slash == 0 {
                return Err(refuse("has no host"));
            }
            if rest[..slash].contains(&b'@') {
                return Err(refuse("has user information"));
            }
            rest[slash..].to_vec()
        } else if url.starts_with(b"//") {
            return Err(refuse(
                "is a network-path reference (give a path or an http(s) URL)",
            ));
        } else if url.starts_with(b"/") {
            url.to_vec()
        } else if url.contains(&b':') && !url.contains(&b'/') || has_scheme(url) {
            return Err(refuse("is not an http or https URL"));
        } else {
            // A relative path: merged with the directory of the request's path.
            let dir = match request_uri.iter().rposition(|b| *b == b'/') {
                Some(i) => &request_uri[..=i],
                None => b"/",
            };
            [dir, url].concat()
        };
        let path = percent_decode(&path).ok_or_else(|| refuse("has a malformed percent escape"))?;
        if path
            .split(|b| *b == b'/')
            .any(|segment| segment == b"." || segment == b"..")
        {
            return Err(refuse("has a dot segment"));
        }
        let base = self.base();
        let id = path
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix(b"/"))
            .ok_or_else(|| {
                refuse(&format!(
                    "is not under this location's {}/",
                    base.escape_ascii()
                ))
            })?;
        SessionId::parse(id).map_err(|e| refuse(&format!("does not end in an upload id: it {e}")))
    }
}

/// What a request's path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The URL uploads are created at.
    Collection,
    /// One upload.
    Upload(SessionId),
}

fn strip_scheme(url: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if starts_with_ignore_case(url, scheme) {
            return Some(&url[scheme.len()..]);
        }
    }
    None
}

/// `scheme:` at the start (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":").
fn has_scheme(url: &[u8]) -> bool {
    let Some(colon) = url.iter().position(|b| *b == b':') else {
        return false;
    };
    let slash = url.iter().position(|b| *b == b'/').unwrap_or(url.len());
    colon < slash
        && colon > 0
        && url[0].is_ascii_alphabetic()
        && url[..colon]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A decoded path as a URI path: bytes other than unreserved characters, sub-delims, `:`, `@`
/// and `/` percent-encoded.
fn percent_encode_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for b in path {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(b) {
            out.push(*b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// The method a request stands for: `X-HTTP-Method-Override` when sent (tus core; clients use
/// it where PATCH or DELETE cannot be sent), else its own.
pub(crate) fn effective_method(head: &RequestHead<'_>) -> Result<Method, Failure> {
    let Some(value) = single_header(head, "x-http-method-override")? else {
        return Ok(head.method);
    };
    let method = match value.to_ascii_uppercase().as_slice() {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"PATCH" => Method::Patch,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        _ => {
            return Err(Failure::new(
                Problem::MethodNotAllowed,
                format!(
                    "X-HTTP-Method-Override \"{}\" names no method this location takes",
                    value.escape_ascii()
                ),
            ))
        }
    };
    Ok(method)
}

/// The value of a header that may be sent once; sent twice (with different values) is a
/// malformed request.
pub(crate) fn single_header<'a>(
    head: &RequestHead<'a>,
    name: &str,
) -> Result<Option<&'a [u8]>, Failure> {
    let mut values = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v);
    let first = values.next();
    if let Some(other) = values.find(|v| Some(*v) != first) {
        return Err(Failure::bad_request(format!(
            "{name} is sent twice: \"{}\" and \"{}\"",
            first.unwrap_or_default().escape_ascii(),
            other.escape_ascii()
        )));
    }
    Ok(first)
}

/// Whether the request's media type (parameters aside) is `media_type`.
pub(crate) fn media_type_is(head: &RequestHead<'_>, media_type: &str) -> bool {
    let Some(value) = head.content_type() else {
        return false;
    };
    let essence = value.split(|b| *b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(media_type.as_bytes())
}

/// Whether the request has a body to store (a length above 0, or chunked).
pub(crate) fn has_body(head: &RequestHead<'_>) -> bool {
    !head.has_no_body()
}

/// What tus metadata says of the file, for the hand-off's variables: `filename` (or `name`),
/// its path elements stripped, and `filetype` (or `type`).
pub(crate) fn facts_from_metadata(metadata: &[(Vec<u8>, Vec<u8>)]) -> FileFacts {
    let pick = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| metadata::get(metadata, k))
            .unwrap_or_default()
    };
    FileFacts {
        field_name: Vec::new(),
        file_name: ngx_upload_engine::disposition::base_name(pick(&["filename", "name"])).to_vec(),
        content_type: pick(&["filetype", "type"]).to_vec(),
    }
}

/// How an upload may be reported to a client that asks (or that just wrote to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Still taking bytes (or, for a final upload, waiting for its parts).
    Open,
    /// Complete, and may be said so: a partial upload, or one a backend took.
    Done,
    /// Complete, but a backend refused it with this status: a client must not think it
    /// succeeded.
    Refused(u16),
    /// Complete, but no backend has taken it and this request does not hand it off (another
    /// one is): it must not be reported complete.
    Busy,
}

pub(crate) fn standing(upload: &Held<'_>) -> Standing {
    match upload.stage {
        Stage::Receiving => Standing::Open,
        Stage::Stored if upload.concat == Concat::Partial => Standing::Done,
        Stage::Stored | Stage::HandingOff => Standing::Busy,
        Stage::HandedOff { status } if status < 400 => Standing::Done,
        Stage::HandedOff { status } => Standing::Refused(status),
    }
}

/// The outcome of a plan neither protocol makes (a contract violation of the glue).
pub(crate) fn foreign_outcome() -> Reply {
    Reply::Answer(Answer::status(500))
}

/// Which protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Tus,
    /// The IETF draft; `None` for an `Upload-Draft-Interop-Version` this server does not speak
    /// (refused by the plan).
    Ietf(Option<InteropVersion>),
}

impl Dialect {
    /// `Upload-Draft-Interop-Version` makes it the IETF draft (even with `Tus-Resumable` too);
    /// anything else is tus, whose plan refuses a request without `Tus-Resumable: 1.0.0`.
    pub fn of(head: &RequestHead<'_>) -> Self {
        match head.header("upload-draft-interop-version") {
            Some(value) => Self::Ietf(InteropVersion::parse(value).ok()),
            None => Self::Tus,
        }
    }
}

/// tus and the IETF draft on one location: the protocol of one request. The glue builds it
/// with [`Resumable::for_request`] when the request comes, keeps its [`Resumable::dialect`]
/// (small, `Copy`) with the request, and rebuilds it with [`Resumable::new`] to reply.
#[derive(Debug, Clone, Copy)]
pub enum Resumable<'s> {
    Tus(Tus<'s>),
    Ietf(Ietf<'s>),
}

impl<'s> Resumable<'s> {
    pub fn new(settings: &'s Settings, dialect: Dialect) -> Self {
        match dialect {
            Dialect::Tus => Self::Tus(Tus { settings }),
            Dialect::Ietf(version) => Self::Ietf(Ietf { settings, version }),
        }
    }

    pub fn for_request(settings: &'s Settings, head: &RequestHead<'_>) -> Self {
        Self::new(settings, Dialect::of(head))
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Tus(_) => Dialect::Tus,
            Self::Ietf(i) => Dialect::Ietf(i.version),
        }
    }
}

impl crate::Protocol for Resumable<'_> {
    fn plan(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        match self {
            Self::Tus(p) => p.plan(head),
            Self::Ietf(p) => p.plan(head),
        }
    }

    fn reply(&self, outcome: &Outcome<'_>) -> Reply {
        match self {
            Self::Tus(p) => p.reply(outcome),
            Self::Ietf(p) => p.reply(outcome),
        }
    }

    fn refuse(&self, failure: &Failure) -> Answer {
        match self {
            Self::Tus(p) => p.refuse(failure),
            Self::Ietf(p) => p.refuse(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kit::id;
    use crate::Protocol;

    #[test]
    fn targets() {
        for prefix in ["/files/", "/files", "/files//"] {
            let s = Settings::new(prefix);
            assert_eq!(s.target(b"/files"), Ok(Target::Collection));
            assert_eq!(s.target(b"/files/"), Ok(Target::Collection));
            assert_eq!(s.target(b"/files/abc"), Ok(Target::Upload(id("abc"))));
            for other in [
                &b"/files/abc/"[..],
                b"/files/a.b",
                b"/files/a/b",
                b"/filesabc",
                b"/other/abc",
                b"/",
                b"/files//",
            ] {
                let f = s.target(other).unwrap_err();
                assert_eq!(f.problem, Problem::NotFound, "{}", other.escape_ascii());
                assert!(f.message.contains("/files/"), "{}", f.message);
            }
        }
        let root = Settings::new("/");
        assert_eq!(root.target(b"/"), Ok(Target::Collection));
        assert_eq!(root.target(b"/x1"), Ok(Target::Upload(id("x1"))));
        assert_eq!(root.location(&id("x1")), b"/x1");
    }

    #[test]
    fn locations_are_encoded_urls() {
        let s = Settings::new("/up loads/ü/");
        assert_eq!(s.location(&id("ab")), b"/up%20loads/%C3%BC/ab");
        assert_eq!(Settings::new("/files").location_prefix(), b"/files/");
    }

    #[test]
    fn resolves_concat_urls_under_the_prefix_only() {
        let s = Settings::new("/files/");
        let ok: &[(&[u8], &str)] = &[
            (b"/files/abc", "abc"),
            (b"https://tus.example.org/files/abc", "abc"),
            (b"HTTP://h:8080/files/a-b_c", "a-b_c"),
            (b"abc", "abc"),
            (b"/files/%61bc", "abc"),
        ];
        for (url, want) in ok {
            assert_eq!(
                s.resolve_upload_url(url, b"/files/").map(|i| i.to_string()),
                Ok(want.to_string()),
                "{}",
                url.escape_ascii()
            );
        }
        let bad: &[&[u8]] = &[
            b"/files/../secret/abc",
            b"/files/./abc",
            b"/files/%2e%2e/abc",
            b"/files/..%2Fabc",
            b"/other/abc",
            b"/filesabc",
            b"/files/",
            b"/files/abc/def",
            b"/files/abc?x=1",
            b"/files/abc#f",
            b"//evil.example/files/abc",
            b"ftp://h/files/abc",
            b"javascript:alert(1)",
            b"https:///files/abc",
            b"https://user@h/files/abc",
            b"https://h",
            b"/files/a%zz",
            b"/files/a%2",
            b"/files/a\x01b",
            b"../abc",
            b"/files/a.b",
        ];
        for url in bad {
            let f = s.resolve_upload_url(url, b"/files/").unwrap_err();
            assert_eq!(f.problem, Problem::BadRequest);
            assert!(f.message.contains("Upload-Concat part"), "{}", f.message);
        }
        // A relative path resolves against the request's path, as RFC 3986 merges it.
        assert!(s.resolve_upload_url(b"abc", b"/files").is_err());
    }

    #[test]
    fn method_override_and_duplicate_headers() {
        let mut h = RequestHead::new(Method::Post, b"/files/abc");
        assert_eq!(effective_method(&h), Ok(Method::Post));
        h.headers.push((b"X-HTTP-Method-Override", b"PATCH"));
        assert_eq!(effective_method(&h), Ok(Method::Patch));
        h.headers[0].1 = b"delete";
        assert_eq!(effective_method(&h), Ok(Method::Delete));
        h.headers[0].1 = b"BREW";
        assert_eq!(
            effective_method(&h).unwrap_err().problem,
            Problem::MethodNotAllowed
        );
        let mut h = RequestHead::new(Method::Patch, b"/files/abc");
        h.headers.push((b"Upload-Offset", b"1"));
        h.headers.push((b"upload-offset", b"1"));
        assert_eq!(single_header(&h, "upload-offset"), Ok(Some(&b"1"[..])));
        h.headers.push((b"Upload-Offset", b"2"));
        let f = single_header(&h, "upload-offset").unwrap_err();
        assert!(f.message.contains("twice"), "{}", f.message);
    }

    #[test]
    fn facts_come_from_the_metadata() {
        let m = vec![
            (b"name".to_vec(), b"C:\\x\\a.bin".to_vec()),
            (b"type".to_vec(), b"image/png".to_vec()),
        ];
        let f = facts_from_metadata(&m);
        assert_eq!(
            (f.file_name, f.content_type),
            (b"a.bin".to_vec(), b"image/png".to_vec())
        );
        let m = vec![
            (b"name".to_vec(), b"n".to_vec()),
            (b"filename".to_vec(), b"f".to_vec()),
        ];
        assert_eq!(facts_from_metadata(&m).file_name, b"f");
        assert_eq!(facts_from_metadata(&[]), FileFacts::default());
    }

    #[test]
    fn media_types() {
        let mut h = RequestHead::new(Method::Patch, b"/");
        assert!(!media_type_is(&h, "application/offset+octet-stream"));
        h.headers
            .push((b"Content-Type", b"Application/Offset+Octet-Stream ; x=1"));
        assert!(media_type_is(&h, "application/offset+octet-stream"));
        h.headers[0].1 = b"application/offset+octet-streamx";
        assert!(!media_type_is(&h, "application/offset+octet-stream"));
    }

    #[test]
    fn one_location_speaks_both() {
        use crate::plan::Completion;
        let settings = Settings::new("/files/");
        let mut tus = RequestHead::new(Method::Post, b"/files/");
        tus.headers.push((b"Tus-Resumable", b"1.0.0"));
        tus.headers.push((b"Upload-Length", b"10"));
        let p = Resumable::for_request(&settings, &tus);
        let Ok(Plan::Create(c)) = p.plan(&tus) else {
            panic!("tus creation")
        };
        assert_eq!(
            (c.completion, c.interim.is_none()),
            (Completion::AtLength, true)
        );
        let mut ietf = RequestHead::new(Method::Post, b"/files/");
        ietf.headers.push((b"Upload-Draft-Interop-Version", b"8"));
        ietf.headers.push((b"Upload-Complete", b"?0"));
        let p = Resumable::for_request(&settings, &ietf);
        let Ok(Plan::Create(c)) = p.plan(&ietf) else {
            panic!("IETF creation")
        };
        assert_eq!(
            (c.completion, c.interim.is_some()),
            (Completion::Declared, true)
        );
        // The dialect kept with the request rebuilds the same protocol for the reply.
        let again = Resumable::new(&settings, p.dialect());
        let upload_id = SessionId::parse(b"abc").unwrap();
        let Reply::Answer(a) = again.reply(&Outcome::Created {
            upload: Held {
                id: &upload_id,
                offset: 0,
                length: None,
                stage: Stage::Receiving,
                metadata: &[],
                concat: Concat::Single,
                expires: None,
            },
            hands_off: false,
        }) else {
            panic!()
        };
        assert_eq!(a.header_value("upload-complete"), Some(&b"?0"[..]));
        assert_eq!(a.header_value("location"), Some(&b"/files/abc"[..]));
        // Neither header: tus, which wants its version.
        let bare = RequestHead::new(Method::Post, b"/files/");
        let f = Resumable::for_request(&settings, &bare)
            .plan(&bare)
            .unwrap_err();
        assert_eq!(f.problem, Problem::UnsupportedVersion);
    }

    #[test]
    fn the_dialect_follows_the_headers() {
        let settings = Settings::new("/files/");
        let mut h = RequestHead::new(Method::Head, b"/files/abc");
        assert_eq!(
            Resumable::for_request(&settings, &h).dialect(),
            Dialect::Tus
        );
        h.headers.push((b"Tus-Resumable", b"1.0.0"));
        assert_eq!(Dialect::of(&h), Dialect::Tus);
        h.headers.push((b"Upload-Draft-Interop-Version", b"6"));
        assert_eq!(Dialect::of(&h), Dialect::Ietf(Some(InteropVersion::V6)));
        h.headers[1].1 = b"7";
        assert_eq!(Dialect::of(&h), Dialect::Ietf(None));
        let p = Resumable::new(&settings, Dialect::Ietf(Some(InteropVersion::V8)));
        assert_eq!(p.dialect(), Dialect::Ietf(Some(InteropVersion::V8)));
        // The plan and the answers are the dialect's own.
        let refused = p.refuse(&Failure::new(Problem::NotFound, "x"));
        assert_eq!(
            refused.header_value("upload-draft-interop-version"),
            Some(&b"8"[..])
        );
        let tus = Resumable::new(&settings, Dialect::Tus);
        let refused = tus.refuse(&Failure::new(Problem::NotFound, "x"));
        assert_eq!(refused.header_value("tus-resumable"), Some(&b"1.0.0"[..]));
    }
}
