//! The IETF resumable-upload draft (draft-ietf-httpbis-resumable-upload), in the interop
//! versions clients speak: 3 (draft -01; iOS 17), 5 (-03; iOS 18.0, tus-js-client
//! `ietf-draft-03`), 6 (-04/-05; iOS 18.1, tus-js-client `ietf-draft-05`) and 8 (-09 to -11,
//! the current one).
//!
//! | request | plan | answer |
//! | --- | --- | --- |
//! | any method with a body, to the prefix, with `Upload-Complete` (`Upload-Incomplete` in v3) | [`Plan::Create`], with a 104 interim answer (`Location`, `Upload-Limit`) once the upload exists | `?0`: 201 + `Location`, `Upload-Offset`, `Upload-Complete: ?0`, `Upload-Limit`; `?1`: the hand-off's answer + `Upload-Complete: ?1`, `Upload-Offset` |
//! | `HEAD` upload | [`Plan::Inspect`] (retrying a failed hand-off) | 204, `Upload-Offset`, `Upload-Complete`, `Upload-Length`, `Upload-Limit`, `Cache-Control: no-store` |
//! | `PATCH` upload (`Content-Type: application/partial-upload` from v6), `Upload-Offset` | [`Plan::Append`] | `?0`: 201 (204 in v8) + `Upload-Offset`, `Upload-Complete: ?0`; `?1`: the hand-off's answer + `Upload-Complete: ?1`, `Upload-Offset` |
//! | `DELETE` upload | [`Plan::Terminate`] | 204 |
//! | `OPTIONS` | answered at once | 200, `Upload-Limit`, `Accept-Patch: application/partial-upload` (v6+) |
//!
//! Every answer echoes `Upload-Draft-Interop-Version`. An upload completes only when a request
//! says so ([`Completion::Declared`]): its length is `Upload-Length`, or the offset plus the
//! `Content-Length` of the request with `Upload-Complete: ?1`. Errors: 400 malformed or
//! inconsistent fields (with the `inconsistent-upload-length` problem in v8), 409 offset
//! mismatch (with the held `Upload-Offset` and, from v6, the `mismatching-upload-offset`
//! problem), 400 (410 in v8) an append to a completed upload, 404/410 unknown or expired, 413
//! too large, 415 a v6+ PATCH without `application/partial-upload`, 423 another request holds
//! the upload.
//!
//! Malformed Structured Fields are refused (400) rather than ignored as RFC 9651 would have
//! it: ignoring a malformed `Upload-Complete: ?0` on a v3-v6 append would complete the upload.

use core::fmt;

use ngx_upload_engine::disposition;
use ngx_upload_engine::session_id::SessionId;

use crate::plan::{Completion, Create, Held, Interim, Write};
use crate::resumable::{
    effective_method, foreign_outcome, has_body, media_type_is, single_header, standing, Settings,
    Standing, Target,
};
use crate::sf;
use crate::RequestHead;
use crate::{Answer, Failure, FileFacts, Method, Outcome, Plan, Problem, Protocol, Reply};

/// The media type of appends, from interop version 6.
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// The problem types of the draft (RFC 9457 `type` URIs).
const MISMATCHING_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
const COMPLETED_UPLOAD: &str = "https://iana.org/assignments/http-problem-types#completed-upload";
const INCONSISTENT_LENGTH: &str =
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";

/// An interop version this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InteropVersion {
    V3,
    V5,
    V6,
    V8,
}

impl InteropVersion {
    pub const ALL: [InteropVersion; 4] = [Self::V3, Self::V5, Self::V6, Self::V8];

    pub const fn number(self) -> u8 {
        match self {
            Self::V3 => 3,
            Self::V5 => 5,
            Self::V6 => 6,
            Self::V8 => 8,
        }
    }

    /// `Upload-Draft-Interop-Version`, an sf-integer.
    pub fn parse(value: &[u8]) -> Result<Self, Failure> {
        let n = sf::parse_integer(value).map_err(|e| {
            Failure::bad_request(format!(
                "Upload-Draft-Interop-Version \"{}\" {e}",
                value.escape_ascii()
            ))
        })?;
        Self::ALL
            .into_iter()
            .find(|v| i64::from(v.number()) == n)
            .ok_or_else(|| {
                Failure::new(
                    Problem::UnsupportedVersion,
                    format!(
                        "Upload-Draft-Interop-Version {n} is not one this server speaks \
                         (3, 5, 6, 8)"
                    ),
                )
            })
    }

    /// v3 says `Upload-Incomplete` (true while incomplete); later versions `Upload-Complete`.
    fn completion_field(self) -> &'static str {
        if self == Self::V3 {
            "Upload-Incomplete"
        } else {
            "Upload-Complete"
        }
    }

    /// The completion field's value for `complete`.
    fn completion_value(self, complete: bool) -> &'static str {
        sf::boolean(if self == Self::V3 {
            !complete
        } else {
            complete
        })
    }

    /// `Upload-Limit` exists from v6.
    fn has_limits(self) -> bool {
        self >= Self::V6
    }

    /// The key of the lifetime in `Upload-Limit` (`expires` in v6, `max-age` from v7).
    fn lifetime_key(self) -> &'static str {
        if self == Self::V6 {
            "expires"
        } else {
            "max-age"
        }
    }
}

impl fmt::Display for InteropVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// The IETF draft for one request: the location's settings and the request's interop version
/// (`None`: one this server does not speak; every request is refused).
#[derive(Debug, Clone, Copy)]
pub struct Ietf<'s> {
    pub settings: &'s Settings,
    pub version: Option<InteropVersion>,
}

type Headers = Vec<(&'static str, Vec<u8>)>;

fn field_error(name: &str, value: &[u8], e: sf::SfError) -> Failure {
    Failure::bad_request(format!("{name} \"{}\" {e}", value.escape_ascii()))
}

impl Ietf<'_> {
    fn version(&self) -> InteropVersion {
        // Only reached after plan() checked it; the newest is the safest to answer in.
        self.version.unwrap_or(InteropVersion::V8)
    }

    /// The interop version and CORS headers: what every answer carries.
    fn base(&self) -> Headers {
        let mut h = Vec::new();
        if let Some(v) = self.version {
            h.push(("Upload-Draft-Interop-Version", v.to_string().into_bytes()));
        }
        h.extend(self.settings.cors());
        h
    }

    fn answer(&self, status: u16, extra: Headers) -> Answer {
        let mut a = Answer::with_body(status, "");
        a.headers = self.base();
        a.headers.extend(extra);
        a
    }

    /// `Upload-Limit` (v6+), for a lifetime of `lifetime` seconds.
    fn limits(&self, lifetime: Option<u64>) -> Option<(&'static str, Vec<u8>)> {
        let v = self.version();
        if !v.has_limits() {
            return None;
        }
        let mut members = Vec::new();
        if let Some(max) = self.settings.max_size {
            members.push(("max-size", max));
        }
        if let Some(secs) = lifetime {
            members.push((v.lifetime_key(), secs));
        }
        if members.is_empty() {
            // "If the server does not apply any limits, it MUST use min-size=0" (draft -05).
            members.push(("min-size", 0));
        }
        Some((
            "Upload-Limit",
            sf::dictionary_of_integers(&members).into_bytes(),
        ))
    }

    fn upload_limits(&self, upload: &Held<'_>) -> Option<(&'static str, Vec<u8>)> {
        self.limits(upload.expires.map(|e| e.remaining()))
    }

    fn completion(&self, complete: bool) -> (&'static str, Vec<u8>) {
        let v = self.version();
        (v.completion_field(), v.completion_value(complete).into())
    }

    fn discovery(&self, head: &RequestHead<'_>) -> Answer {
        let mut a = Answer::with_body(200, "");
        if let Some(v) = self.version {
            a = a.header("Upload-Draft-Interop-Version", v.to_string());
        }
        if self.version().has_limits() {
            a = a.header("Accept-Patch", PARTIAL_UPLOAD);
            a.headers.extend(self.limits(self.settings.expire_after));
        }
        if let Some(origin) = &self.settings.cors_origin {
            if crate::cors::is_preflight(head) {
                a.headers.extend(crate::cors::preflight(origin));
            } else {
                a.headers.extend(crate::cors::headers(origin));
            }
        }
        a
    }

    /// The request's completion field: `Some(true)` when the upload is complete once the
    /// request's content is in.
    fn complete_flag(&self, head: &RequestHead<'_>) -> Result<Option<bool>, Failure> {
        let v = self.version();
        let (ours, other) = if v == InteropVersion::V3 {
            ("upload-incomplete", "upload-complete")
        } else {
            ("upload-complete", "upload-incomplete")
        };
        if head.header(other).is_some() && head.header(ours).is_none() {
            return Err(Failure::bad_request(format!(
                "interop version {v} says {}, not {}",
                v.completion_field(),
                if v == InteropVersion::V3 {
                    "Upload-Complete"
                } else {
                    "Upload-Incomplete"
                }
            )));
        }
        let Some(value) = single_header(head, ours)? else {
            return Ok(None);
        };
        let flag =
            sf::parse_boolean(value).map_err(|e| field_error(v.completion_field(), value, e))?;
        Ok(Some(if v == InteropVersion::V3 { !flag } else { flag }))
    }

    /// A byte-count field (`Upload-Offset`, `Upload-Length`): a non-negative sf-integer.
    fn count(head: &RequestHead<'_>, name: &'static str) -> Result<Option<u64>, Failure> {
        single_header(head, name)?
            .map(|v| sf::parse_non_negative(v).map_err(|e| field_error(name, v, e)))
            .transpose()
    }

    fn too_large(&self, what: String) -> Failure {
        Failure::new(
            Problem::TooLarge,
            format!(
                "{what} is more than the largest upload, {} bytes",
                self.settings.max_size()
            ),
        )
    }

    fn create(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        let v = self.version();
        let complete = self.complete_flag(head)?.ok_or_else(|| {
            Failure::bad_request(format!(
                "an upload is created by a request with {} (interop version {v})",
                v.completion_field()
            ))
        })?;
        if head.header("upload-offset").is_some() {
            return Err(Failure::bad_request(
                "a request creating an upload must not have Upload-Offset",
            ));
        }
        let declared = Self::count(head, "upload-length")?;
        let body = head.content_length;
        let length = match (complete, body, declared) {
            (true, Some(body), Some(declared)) if body != declared => {
                return Err(Failure::new(
                    Problem::TotalMismatch,
                    format!(
                        "Upload-Length {declared} differs from the Content-Length {body} of a \
                         request that completes the upload"
                    ),
                ))
            }
            (true, Some(body), _) => Some(body),
            (false, Some(body), Some(declared)) if body > declared => {
                return Err(Failure::new(
                    Problem::PastLength { length: declared },
                    format!("a body of {body} bytes is longer than Upload-Length {declared}"),
                ))
            }
            _ => declared,
        };
        let max = self.settings.max_size();
        if let Some(length) = length.filter(|l| *l > max) {
            return Err(self.too_large(format!("an upload of {length} bytes")));
        }
        if let Some(body) = body.filter(|b| *b > max) {
            return Err(self.too_large(format!("a body of {body} bytes")));
        }
        let file = FileFacts {
            field_name: Vec::new(),
            file_name: match head.header("content-disposition") {
                None => Vec::new(),
                Some(value) => {
                    let parsed = disposition::parse(value).map_err(|e| {
                        Failure::bad_request(format!(
                            "Content-Disposition \"{}\" {e}",
                            value.escape_ascii()
                        ))
                    })?;
                    parsed
                        .filename
                        .as_deref()
                        .map(disposition::base_name)
                        .unwrap_or_default()
                        .to_vec()
                }
            },
            content_type: head.content_type().unwrap_or_default().to_vec(),
        };
        let then_write = (has_body(head) || complete).then_some(Write {
            checksum: None,
            finish: complete,
        });
        let mut interim_headers =
            vec![("Upload-Draft-Interop-Version", v.to_string().into_bytes())];
        interim_headers.extend(self.limits(self.settings.expire_after));
        Ok(Plan::Create(Box::new(Create {
            length,
            max_size: max,
            completion: Completion::Declared,
            metadata: Vec::new(),
            file,
            partial: false,
            then_write,
            interim: Some(Interim {
                status: 104,
                headers: interim_headers,
                location_prefix: self.settings.location_prefix(),
            }),
        })))
    }

    fn append(&self, head: &RequestHead<'_>, id: SessionId) -> Result<Plan, Failure> {
        let v = self.version();
        if v >= InteropVersion::V6 && !media_type_is(head, PARTIAL_UPLOAD) {
            return Err(Failure::new(
                Problem::UnsupportedMediaType,
                format!(
                    "an append needs Content-Type: {PARTIAL_UPLOAD} (interop version {v}), \
                     not \"{}\"",
                    head.content_type().unwrap_or_default().escape_ascii()
                ),
            ));
        }
        let offset = Self::count(head, "upload-offset")?
            .ok_or_else(|| Failure::bad_request("an append needs Upload-Offset"))?;
        let complete = match self.complete_flag(head)? {
            Some(complete) => complete,
            None if v == InteropVersion::V8 => {
                return Err(Failure::bad_request(
                    "an append needs Upload-Complete (interop version 8)",
                ))
            }
            // Up to v6: "if the end of the content is not the end of the upload, it MUST be
            // set to false": no field means this is the last part.
            None => true,
        };
        let declared = Self::count(head, "upload-length")?;
        let body = head.content_length;
        let end = body.map(|b| offset.checked_add(b));
        let mut declare_length = declared;
        if complete {
            if let Some(end) = end {
                let end = end.ok_or_else(|| self.too_large(format!("offset {offset} + body")))?;
                if declared.is_some_and(|d| d != end) {
                    return Err(Failure::new(
                        Problem::TotalMismatch,
                        format!(
                            "Upload-Length {} differs from offset {offset} + Content-Length {} \
                             of a request that completes the upload",
                            declared.unwrap_or_default(),
                            body.unwrap_or_default()
                        ),
                    ));
                }
                declare_length = Some(end);
            }
        } else if let (Some(end), Some(declared)) = (end, declared) {
            if end.is_none_or(|end| end > declared) {
                return Err(Failure::new(
                    Problem::PastLength { length: declared },
                    format!(
                        "a body of {} bytes at offset {offset} goes past Upload-Length \
                         {declared}",
                        body.unwrap_or_default()
                    ),
                ));
            }
        }
        if let Some(length) = declare_length {
            if length < offset {
                return Err(Failure::new(
                    Problem::TotalMismatch,
                    format!("Upload-Length {length} is less than Upload-Offset {offset}"),
                ));
            }
            if length > self.settings.max_size() {
                return Err(self.too_large(format!("an upload of {length} bytes")));
            }
        }
        if let Some(end) = end {
            if end.is_none_or(|end| end > self.settings.max_size()) {
                return Err(self.too_large(format!(
                    "a body of {} bytes at offset {offset}",
                    body.unwrap_or_default()
                )));
            }
        }
        Ok(Plan::Append {
            id,
            offset,
            declare_length,
            checksum: None,
            finish: complete,
        })
    }

    /// Up to v6, offset retrieval and cancellation must not carry the append's fields.
    fn check_no_append_fields(&self, head: &RequestHead<'_>, what: &str) -> Result<(), Failure> {
        let v = self.version();
        if v > InteropVersion::V6 {
            return Ok(());
        }
        let mut forbidden = vec!["Upload-Offset", v.completion_field()];
        if v == InteropVersion::V6 && what == "an offset retrieval (HEAD)" {
            forbidden.push("Upload-Length");
        }
        match forbidden.into_iter().find(|n| head.header(n).is_some()) {
            Some(name) => Err(Failure::bad_request(format!(
                "{what} must not have {name} (interop version {v})"
            ))),
            None => Ok(()),
        }
    }

    /// The answer to a request that completed the upload: the hand-off's, with the state.
    /// The backend's answer carries the completion only when it took the file: a failed
    /// hand-off must not tell a client its upload is done.
    fn completed_hand_off(&self, upload: &Held<'_>) -> Reply {
        Reply::HandOffWith {
            headers: self.base(),
            on_success: vec![
                self.completion(true),
                ("Upload-Offset", upload.offset.to_string().into_bytes()),
            ],
        }
    }

    /// What offset retrieval tells of an upload.
    fn report(&self, upload: &Held<'_>, complete: bool) -> Headers {
        let mut h = vec![
            ("Upload-Offset", upload.offset.to_string().into_bytes()),
            self.completion(complete),
        ];
        if self.version().has_limits() {
            if let Some(length) = upload.length {
                h.push(("Upload-Length", length.to_string().into_bytes()));
            }
        }
        h.extend(self.upload_limits(upload));
        h
    }

    fn no_store() -> (&'static str, Vec<u8>) {
        ("Cache-Control", b"no-store".to_vec())
    }

    /// A problem details body (RFC 9457), from v6 where the draft defines problem types.
    fn problem(&self, answer: &mut Answer, kind: &str, title: &str, extra: &str) {
        if self.version() < InteropVersion::V6 {
            return;
        }
        answer.body =
            Some(format!("{{\"type\":\"{kind}\",\"title\":\"{title}\"{extra}}}\n").into_bytes());
        answer.content_type = Some("application/problem+json");
    }

    fn text(answer: &mut Answer, message: impl fmt::Display) {
        answer.body = Some(format!("{message}\n").into_bytes());
        answer.content_type = Some("text/plain; charset=utf-8");
    }

    /// A complete upload that may not be reported complete, or that takes no more appends.
    fn not_open(&self, standing: Standing, upload: &Held<'_>, appending: bool) -> Answer {
        match standing {
            Standing::Busy => {
                let mut a = self.answer(423, vec![]);
                Self::text(
                    &mut a,
                    format!("upload {} is complete and being handed off", upload.id),
                );
                a
            }
            Standing::Refused(status) if !appending => {
                let mut a = self.answer(410, vec![]);
                Self::text(
                    &mut a,
                    format!(
                        "upload {} was refused by the application (status {status})",
                        upload.id
                    ),
                );
                a
            }
            _ => {
                // An append to a completed upload.
                let status = if self.version() == InteropVersion::V8 {
                    410
                } else {
                    400
                };
                let mut a = self.answer(status, vec![]);
                Self::text(&mut a, format!("upload {} is already complete", upload.id));
                self.problem(&mut a, COMPLETED_UPLOAD, "upload is already completed", "");
                a
            }
        }
    }

    /// The status the draft answers a problem with.
    pub fn status(problem: Problem) -> u16 {
        match problem {
            Problem::BadRequest
            | Problem::BadRange
            | Problem::BodyLengthMismatch
            | Problem::TooManyRanges
            | Problem::TotalMismatch
            | Problem::PastLength { .. }
            | Problem::ChecksumMismatch
            | Problem::UnsupportedVersion => 400,
            Problem::MethodNotAllowed => 405,
            Problem::UnsupportedMediaType => 415,
            Problem::TooLarge => 413,
            Problem::OffsetMismatch { .. } | Problem::Exists => 409,
            Problem::InFlight | Problem::HandOffBusy => 423,
            Problem::NotFound => 404,
            Problem::Gone => 410,
            Problem::Forbidden => 403,
            Problem::Timeout => 408,
            Problem::StorageFull => 507,
            Problem::Internal => 500,
        }
    }
}

impl Protocol for Ietf<'_> {
    fn plan(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        if self.version.is_none() {
            let value = head
                .header("upload-draft-interop-version")
                .unwrap_or_default();
            return Err(InteropVersion::parse(value)
                .err()
                .unwrap_or_else(|| Failure::bad_request("no Upload-Draft-Interop-Version")));
        }
        let method = effective_method(head)?;
        if method == Method::Options {
            return Ok(Plan::Answer(self.discovery(head)));
        }
        match (method, self.settings.target(head.uri)?) {
            (Method::Get | Method::Head | Method::Delete, Target::Collection) => Err(Failure::new(
                Problem::MethodNotAllowed,
                format!(
                    "{} on the creation URL: an upload is created by a request with a body \
                         and Upload-Complete",
                    head.method_name_lossy()
                ),
            )),
            (_, Target::Collection) => self.create(head),
            (Method::Head, Target::Upload(id)) => {
                self.check_no_append_fields(head, "an offset retrieval (HEAD)")?;
                Ok(Plan::Inspect {
                    id,
                    retry_hand_off: true,
                })
            }
            (Method::Delete, Target::Upload(id)) => {
                self.check_no_append_fields(head, "a cancellation (DELETE)")?;
                Ok(Plan::Terminate { id })
            }
            (Method::Patch, Target::Upload(id)) => self.append(head, id),
            (_, Target::Upload(id)) => Err(Failure::new(
                Problem::MethodNotAllowed,
                format!(
                    "{} on upload {id}: an upload takes HEAD, PATCH and DELETE",
                    head.method_name_lossy()
                ),
            )),
        }
    }

    fn reply(&self, outcome: &Outcome<'_>) -> Reply {
        match outcome {
            Outcome::Created { upload, hands_off } | Outcome::Appended { upload, hands_off }
                if *hands_off =>
            {
                self.completed_hand_off(upload)
            }
            Outcome::Created { upload, .. } => match standing(upload) {
                Standing::Open => {
                    let mut extra = vec![
                        ("Location", self.settings.location(upload.id)),
                        ("Upload-Offset", upload.offset.to_string().into_bytes()),
                        self.completion(false),
                    ];
                    extra.extend(self.upload_limits(upload));
                    Reply::Answer(self.answer(201, extra))
                }
                other => Reply::Answer(self.not_open(other, upload, false)),
            },
            Outcome::Appended { upload, .. } => match standing(upload) {
                Standing::Open => {
                    let status = if self.version() == InteropVersion::V8 {
                        204
                    } else {
                        201
                    };
                    let extra = vec![
                        ("Upload-Offset", upload.offset.to_string().into_bytes()),
                        self.completion(false),
                    ];
                    Reply::Answer(self.answer(status, extra))
                }
                other => Reply::Answer(self.not_open(other, upload, true)),
            },
            Outcome::Inspected { upload, hands_off } => {
                if *hands_off {
                    let mut headers = self.base();
                    headers.push(Self::no_store());
                    return Reply::HandOffWith {
                        headers,
                        on_success: self.report(upload, true),
                    };
                }
                let mut a = match standing(upload) {
                    Standing::Open => self.answer(204, self.report(upload, false)),
                    Standing::Done => self.answer(204, self.report(upload, true)),
                    other => self.not_open(other, upload, false),
                };
                a.headers.push(Self::no_store());
                Reply::Answer(a)
            }
            Outcome::Terminated => Reply::Answer(self.answer(204, vec![])),
            Outcome::Report(_) | Outcome::Progress(_) | Outcome::Complete(_) => foreign_outcome(),
        }
    }

    fn refuse(&self, failure: &Failure) -> Answer {
        let status = Self::status(failure.problem);
        let mut a = self.answer(status, vec![]);
        if status >= 500 {
            a.body = None;
            return a;
        }
        Self::text(&mut a, &failure.message);
        match failure.problem {
            Problem::OffsetMismatch { held, sent } => {
                a.headers
                    .push(("Upload-Offset", held.to_string().into_bytes()));
                self.problem(
                    &mut a,
                    MISMATCHING_OFFSET,
                    "offset from request does not match offset of resource",
                    &format!(",\"expected-offset\":{held},\"provided-offset\":{sent}"),
                );
            }
            Problem::TotalMismatch | Problem::PastLength { .. }
                if self.version() == InteropVersion::V8 =>
            {
                self.problem(
                    &mut a,
                    INCONSISTENT_LENGTH,
                    "inconsistent length values for upload",
                    "",
                );
            }
            _ => {}
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Expiry, Stage};
    use crate::test_kit::*;
    use InteropVersion::*;

    fn settings() -> Settings {
        Settings {
            max_size: Some(1000),
            expire_after: Some(3600),
            ..Settings::new("/files/")
        }
    }

    fn ietf(s: &Settings, v: InteropVersion) -> Ietf<'_> {
        Ietf {
            settings: s,
            version: Some(v),
        }
    }

    /// The completion field of `v` saying `complete`.
    fn flag(v: InteropVersion, complete: bool) -> (&'static str, &'static str) {
        (v.completion_field(), v.completion_value(complete))
    }

    const PU: (&str, &str) = ("Content-Type", "application/partial-upload");

    #[test]
    fn versions() {
        assert_eq!(InteropVersion::parse(b"3"), Ok(V3));
        assert_eq!(InteropVersion::parse(b"8;x=1"), Ok(V8));
        for (bad, problem) in [
            (&b"7"[..], Problem::UnsupportedVersion),
            (b"4", Problem::UnsupportedVersion),
            (b"-6", Problem::UnsupportedVersion),
            (b"6.0", Problem::BadRequest),
            (b"v6", Problem::BadRequest),
            (b"", Problem::BadRequest),
        ] {
            assert_eq!(InteropVersion::parse(bad).unwrap_err().problem, problem);
        }
        // A request in a version this server does not speak is refused whatever it is.
        let s = settings();
        let p = Ietf {
            settings: &s,
            version: None,
        };
        let h = head(
            Method::Post,
            "/files/",
            &[
                ("Upload-Draft-Interop-Version", "7"),
                ("Upload-Complete", "?1"),
            ],
        );
        let f = p.plan(&h).unwrap_err();
        assert!(f.message.contains("3, 5, 6, 8"), "{}", f.message);
        let a = p.refuse(&f);
        assert_eq!(a.status, 400);
        assert_eq!(value(&a, "upload-draft-interop-version"), None);
    }

    #[test]
    fn decision_table_of_refusals() {
        use Method::*;
        use Problem::*;
        let s = settings();
        #[allow(clippy::type_complexity)]
        let rows: &[(
            &[InteropVersion],
            Method,
            &str,
            &[(&str, &str)],
            Problem,
            u16,
        )] = &[
            // Creation.
            (
                &[V3, V5, V6, V8],
                Post,
                "/files/",
                &[("Content-Length", "3")],
                BadRequest,
                400,
            ),
            (
                &[V3, V5, V6, V8],
                Get,
                "/files/",
                &[],
                MethodNotAllowed,
                405,
            ),
            (
                &[V3, V5, V6, V8],
                Head,
                "/files/",
                &[],
                MethodNotAllowed,
                405,
            ),
            (
                &[V3, V5, V6, V8],
                Delete,
                "/files/",
                &[],
                MethodNotAllowed,
                405,
            ),
            (&[V3, V5, V6, V8], Post, "/other/", &[], NotFound, 404),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?2")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "1")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "true")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?1"), ("Upload-Complete", "?0")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Incomplete", "?0")],
                BadRequest,
                400,
            ),
            (
                &[V3],
                Post,
                "/files/",
                &[("Upload-Complete", "?1")],
                BadRequest,
                400,
            ),
            (
                &[V3],
                Post,
                "/files/",
                &[("Upload-Incomplete", "yes")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?0"), ("Upload-Offset", "0")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?0"), ("Upload-Length", "-1")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?0"), ("Upload-Length", "1.5")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?0"), ("Upload-Length", "1e3")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[
                    ("Upload-Complete", "?0"),
                    ("Upload-Length", "9999999999999999"),
                ],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?0"), ("Upload-Length", "1001")],
                TooLarge,
                413,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?1"), ("Content-Length", "1001")],
                TooLarge,
                413,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[("Upload-Complete", "?0"), ("Content-Length", "1001")],
                TooLarge,
                413,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[
                    ("Upload-Complete", "?1"),
                    ("Content-Length", "5"),
                    ("Upload-Length", "6"),
                ],
                TotalMismatch,
                400,
            ),
            (
                &[V5, V6, V8],
                Post,
                "/files/",
                &[
                    ("Upload-Complete", "?0"),
                    ("Content-Length", "7"),
                    ("Upload-Length", "6"),
                ],
                PastLength { length: 6 },
                400,
            ),
            (
                &[V5, V6, V8],
                Put,
                "/files/",
                &[
                    ("Upload-Complete", "?1"),
                    ("Content-Length", "1"),
                    ("Content-Disposition", "bogus"),
                ],
                BadRequest,
                400,
            ),
            // Offset retrieval and cancellation.
            (
                &[V3, V5, V6],
                Head,
                "/files/abc",
                &[("Upload-Offset", "0")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6],
                Head,
                "/files/abc",
                &[("Upload-Complete", "?0")],
                BadRequest,
                400,
            ),
            (
                &[V3],
                Head,
                "/files/abc",
                &[("Upload-Incomplete", "?1")],
                BadRequest,
                400,
            ),
            (
                &[V6],
                Head,
                "/files/abc",
                &[("Upload-Length", "5")],
                BadRequest,
                400,
            ),
            (
                &[V3, V5, V6],
                Delete,
                "/files/abc",
                &[("Upload-Offset", "0")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6],
                Delete,
                "/files/abc",
                &[("Upload-Complete", "?1")],
                BadRequest,
                400,
            ),
            (&[V3, V5, V6, V8], Head, "/files/a.b", &[], NotFound, 404),
            (
                &[V3, V5, V6, V8],
                Post,
                "/files/abc",
                &[("Upload-Complete", "?1")],
                MethodNotAllowed,
                405,
            ),
            (
                &[V3, V5, V6, V8],
                Put,
                "/files/abc",
                &[],
                MethodNotAllowed,
                405,
            ),
            // Appends.
            (
                &[V6, V8],
                Patch,
                "/files/abc",
                &[("Upload-Offset", "0"), ("Upload-Complete", "?0")],
                UnsupportedMediaType,
                415,
            ),
            (
                &[V6, V8],
                Patch,
                "/files/abc",
                &[
                    ("Content-Type", "application/offset+octet-stream"),
                    ("Upload-Offset", "0"),
                    ("Upload-Complete", "?0"),
                ],
                UnsupportedMediaType,
                415,
            ),
            (
                &[V3, V5, V6, V8],
                Patch,
                "/files/abc",
                &[PU, ("Upload-Complete", "?0"), ("Upload-Incomplete", "?1")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[PU, ("Upload-Complete", "?0")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[PU, ("Upload-Offset", "-1"), ("Upload-Complete", "?0")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[PU, ("Upload-Offset", "abc"), ("Upload-Complete", "?0")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[
                    PU,
                    ("Upload-Offset", "1"),
                    ("Upload-Offset", "2"),
                    ("Upload-Complete", "?0"),
                ],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[PU, ("Upload-Offset", "0"), ("Upload-Complete", "?")],
                BadRequest,
                400,
            ),
            (
                &[V8],
                Patch,
                "/files/abc",
                &[PU, ("Upload-Offset", "0")],
                BadRequest,
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[
                    PU,
                    ("Upload-Offset", "5"),
                    ("Upload-Complete", "?1"),
                    ("Content-Length", "5"),
                    ("Upload-Length", "9"),
                ],
                TotalMismatch,
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[
                    PU,
                    ("Upload-Offset", "5"),
                    ("Upload-Complete", "?0"),
                    ("Content-Length", "5"),
                    ("Upload-Length", "9"),
                ],
                PastLength { length: 9 },
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[
                    PU,
                    ("Upload-Offset", "5"),
                    ("Upload-Complete", "?0"),
                    ("Upload-Length", "4"),
                ],
                TotalMismatch,
                400,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[
                    PU,
                    ("Upload-Offset", "999"),
                    ("Upload-Complete", "?0"),
                    ("Content-Length", "2"),
                ],
                TooLarge,
                413,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[
                    PU,
                    ("Upload-Offset", "999"),
                    ("Upload-Complete", "?1"),
                    ("Content-Length", "2"),
                ],
                TooLarge,
                413,
            ),
            (
                &[V5, V6, V8],
                Patch,
                "/files/abc",
                &[
                    PU,
                    ("Upload-Offset", "0"),
                    ("Upload-Complete", "?0"),
                    ("Upload-Length", "1001"),
                ],
                TooLarge,
                413,
            ),
        ];
        for (i, (versions, method, uri, headers, want, status)) in rows.iter().enumerate() {
            for v in *versions {
                let p = ietf(&s, *v);
                let mut all = headers.to_vec();
                let n = v.to_string();
                all.push(("Upload-Draft-Interop-Version", &n));
                let h = head(*method, uri, &all);
                let f = match p.plan(&h) {
                    Err(f) => f,
                    Ok(plan) => panic!("row {i} v{v}: planned {plan:?}"),
                };
                assert_eq!(f.problem, *want, "row {i} v{v}: {}", f.message);
                assert!(!f.message.is_empty());
                let a = p.refuse(&f);
                assert_eq!(a.status, *status, "row {i} v{v}");
                assert_eq!(
                    value(&a, "upload-draft-interop-version"),
                    Some(n.as_str()),
                    "row {i}"
                );
                assert!(a.body.is_some(), "row {i}");
            }
        }
    }

    #[test]
    fn refusals_the_glue_reports() {
        let s = settings();
        for v in InteropVersion::ALL {
            let p = ietf(&s, v);
            let a = p.refuse(&Failure::new(
                Problem::OffsetMismatch {
                    held: 100,
                    sent: 200,
                },
                "mismatch",
            ));
            assert_eq!(a.status, 409);
            assert_eq!(value(&a, "upload-offset"), Some("100"), "v{v}");
            let body = String::from_utf8(a.body.clone().unwrap()).unwrap();
            if v >= V6 {
                assert_eq!(a.content_type, Some("application/problem+json"));
                assert!(body.contains("mismatching-upload-offset"), "{body}");
                assert!(body.contains("\"expected-offset\":100"), "{body}");
                assert!(body.contains("\"provided-offset\":200"), "{body}");
            } else {
                assert_eq!(body, "mismatch\n");
            }
            let a = p.refuse(&Failure::new(Problem::PastLength { length: 5 }, "past"));
            assert_eq!(a.status, 400);
            let body = String::from_utf8(a.body.unwrap()).unwrap();
            assert_eq!(
                body.contains("inconsistent-upload-length"),
                v == V8,
                "{body}"
            );
            for (problem, status) in [
                (Problem::NotFound, 404),
                (Problem::Gone, 410),
                (Problem::InFlight, 423),
                (Problem::HandOffBusy, 423),
                (Problem::TooLarge, 413),
                (Problem::Forbidden, 403),
                (Problem::StorageFull, 507),
                (Problem::Internal, 500),
            ] {
                let a = p.refuse(&Failure::new(problem, "x"));
                assert_eq!(a.status, status, "{problem:?}");
                assert_eq!(a.body.is_none(), status >= 500, "{problem:?}");
            }
        }
    }

    #[test]
    fn creation_plans_every_version() {
        let s = settings();
        for v in InteropVersion::ALL {
            let p = ietf(&s, v);
            let n = v.to_string();
            // Optimistic: the whole file in one request, its length from Content-Length.
            let h = head(
                Method::Post,
                "/files",
                &[
                    ("Upload-Draft-Interop-Version", &n),
                    flag(v, true),
                    ("Content-Length", "100"),
                    ("Content-Type", "image/jpeg"),
                    (
                        "Content-Disposition",
                        "inline; filename=\"file name.jpg\"; filename*=UTF-8''file%20name.jpg",
                    ),
                ],
            );
            let Ok(Plan::Create(c)) = p.plan(&h) else {
                panic!("v{v}: not a creation")
            };
            assert_eq!(c.length, Some(100));
            assert_eq!(c.completion, Completion::Declared);
            assert_eq!(
                c.then_write,
                Some(Write {
                    checksum: None,
                    finish: true
                })
            );
            assert_eq!(c.file.file_name, b"file name.jpg");
            assert_eq!(c.file.content_type, b"image/jpeg");
            assert!(!c.partial && c.metadata.is_empty());
            // The 104: Location, the interop version, and (v6+) the limits.
            let interim = c.interim.as_ref().unwrap();
            let a = interim.answer(&id("b530ce8ff"));
            assert_eq!(a.status, 104);
            assert_eq!(a.body, None);
            assert_eq!(value(&a, "location"), Some("/files/b530ce8ff"));
            assert_eq!(value(&a, "upload-draft-interop-version"), Some(n.as_str()));
            let limit = match v {
                V3 | V5 => None,
                V6 => Some("max-size=1000, expires=3600"),
                V8 => Some("max-size=1000, max-age=3600"),
            };
            assert_eq!(value(&a, "upload-limit"), limit, "v{v}");
            // Careful: an empty creation, more to come; and PUT/PATCH create too.
            for method in [Method::Post, Method::Put, Method::Patch] {
                let h = head(
                    method,
                    "/files/",
                    &[
                        ("Upload-Draft-Interop-Version", &n),
                        flag(v, false),
                        ("Upload-Length", "500"),
                        ("Content-Length", "0"),
                    ],
                );
                let Ok(Plan::Create(c)) = p.plan(&h) else {
                    panic!("v{v}: not a creation")
                };
                assert_eq!((c.length, c.then_write), (Some(500), None));
            }
            // Part of the file, then more; chunked with the end: length unknown until then.
            let h = head(
                Method::Post,
                "/files/",
                &[
                    ("Upload-Draft-Interop-Version", &n),
                    flag(v, false),
                    ("Content-Length", "25"),
                ],
            );
            let Ok(Plan::Create(c)) = p.plan(&h) else {
                panic!()
            };
            assert_eq!(c.length, None);
            assert!(!c.then_write.unwrap().finish);
            let h = head(
                Method::Post,
                "/files/",
                &[
                    ("Upload-Draft-Interop-Version", &n),
                    flag(v, true),
                    ("Transfer-Encoding", "chunked"),
                ],
            );
            let Ok(Plan::Create(c)) = p.plan(&h) else {
                panic!()
            };
            assert_eq!(c.length, None);
            assert!(c.then_write.unwrap().finish);
            // An empty representation, complete at once.
            let h = head(
                Method::Post,
                "/files/",
                &[
                    ("Upload-Draft-Interop-Version", &n),
                    flag(v, true),
                    ("Content-Length", "0"),
                ],
            );
            let Ok(Plan::Create(c)) = p.plan(&h) else {
                panic!()
            };
            assert_eq!(c.length, Some(0));
            assert!(c.then_write.unwrap().finish);
        }
    }

    #[test]
    fn tus_js_client_creation_headers_are_understood() {
        // tus-js-client in 'ietf-draft-03' mode (interop 5): its tus-style Upload-Length is
        // taken, and its Tus-less headers otherwise ignored.
        let s = settings();
        let p = ietf(&s, V5);
        let h = head(
            Method::Post,
            "/files/",
            &[
                ("Upload-Draft-Interop-Version", "5"),
                ("Upload-Length", "11"),
                ("Upload-Metadata", "filename YS50eHQ="),
                ("Upload-Complete", "?0"),
            ],
        );
        let Ok(Plan::Create(c)) = p.plan(&h) else {
            panic!()
        };
        assert_eq!(c.length, Some(11));
        let h = head(
            Method::Post,
            "/files/",
            &[
                ("Upload-Draft-Interop-Version", "5"),
                ("Upload-Defer-Length", "1"),
                ("Upload-Complete", "?0"),
            ],
        );
        assert!(matches!(p.plan(&h), Ok(Plan::Create(c)) if c.length.is_none()));
    }

    #[test]
    fn append_plans_every_version() {
        let s = settings();
        for v in InteropVersion::ALL {
            let p = ietf(&s, v);
            let n = v.to_string();
            let mut headers = vec![
                ("Upload-Draft-Interop-Version", n.as_str()),
                ("Upload-Offset", "100"),
                ("Content-Length", "100"),
                flag(v, false),
            ];
            if v >= V6 {
                headers.push(PU);
            }
            let h = head(Method::Patch, "/files/abc", &headers);
            assert_eq!(
                p.plan(&h),
                Ok(Plan::Append {
                    id: id("abc"),
                    offset: 100,
                    declare_length: None,
                    checksum: None,
                    finish: false
                }),
                "v{v}"
            );
            // The last part: its end is the length.
            headers[3] = flag(v, true);
            let h = head(Method::Patch, "/files/abc", &headers);
            assert!(
                matches!(
                    p.plan(&h),
                    Ok(Plan::Append {
                        declare_length: Some(200),
                        finish: true,
                        ..
                    })
                ),
                "v{v}"
            );
            // Without the field: the last part up to v6, refused in v8.
            headers.remove(3);
            let h = head(Method::Patch, "/files/abc", &headers);
            match v {
                V8 => assert_eq!(p.plan(&h).unwrap_err().problem, Problem::BadRequest),
                _ => assert!(
                    matches!(p.plan(&h), Ok(Plan::Append { finish: true, .. })),
                    "v{v}"
                ),
            }
        }
        // v3 and v5 take an append without Content-Type (Apple's clients send none).
        for v in [V3, V5] {
            let s = settings();
            let n = v.to_string();
            let h = head(
                Method::Patch,
                "/files/abc",
                &[
                    ("Upload-Draft-Interop-Version", &n),
                    ("Upload-Offset", "0"),
                    flag(v, false),
                ],
            );
            assert!(matches!(ietf(&s, v).plan(&h), Ok(Plan::Append { .. })));
        }
        // A complete chunked append: the length is the offset reached, for the glue to record.
        let h = head(
            Method::Patch,
            "/files/abc",
            &[
                ("Upload-Draft-Interop-Version", "8"),
                PU,
                ("Upload-Offset", "5"),
                ("Upload-Complete", "?1"),
                ("Upload-Length", "9"),
                ("Transfer-Encoding", "chunked"),
            ],
        );
        assert!(matches!(
            ietf(&settings(), V8).plan(&h),
            Ok(Plan::Append {
                declare_length: Some(9),
                finish: true,
                ..
            })
        ));
        // X-HTTP-Method-Override (tus-js-client's overridePatchMethod works in IETF mode too).
        let h = head(
            Method::Post,
            "/files/abc",
            &[
                ("Upload-Draft-Interop-Version", "6"),
                ("X-HTTP-Method-Override", "PATCH"),
                PU,
                ("Upload-Offset", "0"),
                ("Upload-Complete", "?0"),
            ],
        );
        assert!(matches!(
            ietf(&settings(), V6).plan(&h),
            Ok(Plan::Append { .. })
        ));
    }

    #[test]
    fn head_and_delete_plans() {
        let s = settings();
        for v in InteropVersion::ALL {
            let n = v.to_string();
            let p = ietf(&s, v);
            let h = head(
                Method::Head,
                "/files/abc",
                &[("Upload-Draft-Interop-Version", &n)],
            );
            assert_eq!(
                p.plan(&h),
                Ok(Plan::Inspect {
                    id: id("abc"),
                    retry_hand_off: true
                })
            );
            let h = head(
                Method::Delete,
                "/files/abc",
                &[("Upload-Draft-Interop-Version", &n)],
            );
            assert_eq!(p.plan(&h), Ok(Plan::Terminate { id: id("abc") }));
        }
        // v8 no longer forbids the fields on HEAD.
        let h = head(
            Method::Head,
            "/files/abc",
            &[
                ("Upload-Draft-Interop-Version", "8"),
                ("Upload-Offset", "1"),
            ],
        );
        assert!(matches!(ietf(&s, V8).plan(&h), Ok(Plan::Inspect { .. })));
    }

    #[test]
    fn options() {
        let s = Settings {
            cors_origin: Some(b"*".to_vec()),
            ..settings()
        };
        for v in InteropVersion::ALL {
            let n = v.to_string();
            let h = head(
                Method::Options,
                "/files/",
                &[("Upload-Draft-Interop-Version", &n)],
            );
            let Ok(Plan::Answer(a)) = ietf(&s, v).plan(&h) else {
                panic!()
            };
            assert_eq!(a.status, 200);
            assert_eq!(value(&a, "upload-draft-interop-version"), Some(n.as_str()));
            assert_eq!(
                value(&a, "accept-patch"),
                (v >= V6).then_some("application/partial-upload")
            );
            assert_eq!(value(&a, "upload-limit").is_some(), v >= V6);
            assert_eq!(value(&a, "access-control-allow-origin"), Some("*"));
            assert_eq!(value(&a, "tus-version"), None);
        }
        // No limits at all: "min-size=0", never an empty field.
        let bare = Settings::new("/files/");
        let h = head(
            Method::Options,
            "/files/",
            &[("Upload-Draft-Interop-Version", "8")],
        );
        let Ok(Plan::Answer(a)) = ietf(&bare, V8).plan(&h) else {
            panic!()
        };
        assert_eq!(value(&a, "upload-limit"), Some("min-size=0"));
        // A preflight.
        let h = head(
            Method::Options,
            "/files/",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "PUT"),
                ("Upload-Draft-Interop-Version", "8"),
            ],
        );
        let Ok(Plan::Answer(a)) = ietf(&s, V8).plan(&h) else {
            panic!()
        };
        assert!(value(&a, "access-control-allow-methods")
            .unwrap()
            .contains("PUT"));
    }

    #[test]
    fn creation_answers_every_version() {
        let s = settings();
        let upload_id = id("b530ce8ff");
        for v in InteropVersion::ALL {
            let p = ietf(&s, v);
            let n = v.to_string();
            // Upload-Complete: ?0 (careful creation, or a part of the file).
            let upload = Held {
                expires: Some(Expiry {
                    at: 4600,
                    now: 1000,
                }),
                ..held(&upload_id, 25, None, Stage::Receiving)
            };
            let a = answer(p.reply(&Outcome::Created {
                upload,
                hands_off: false,
            }));
            assert_eq!(a.status, 201);
            assert_eq!(value(&a, "location"), Some("/files/b530ce8ff"));
            assert_eq!(value(&a, "upload-offset"), Some("25"));
            let (name, incomplete) = flag(v, false);
            assert_eq!(value(&a, name), Some(incomplete), "v{v}");
            assert_eq!(value(&a, "upload-draft-interop-version"), Some(n.as_str()));
            let limit = match v {
                V3 | V5 => None,
                V6 => Some("max-size=1000, expires=3600"),
                V8 => Some("max-size=1000, max-age=3600"),
            };
            assert_eq!(value(&a, "upload-limit"), limit, "v{v}");
            // Upload-Complete: ?1 and all of it arrived: the hand-off's answer, with the state.
            let reply = p.reply(&Outcome::Created {
                upload: held(&upload_id, 100, Some(100), Stage::Stored),
                hands_off: true,
            });
            let Reply::HandOffWith {
                headers,
                on_success,
            } = reply
            else {
                panic!()
            };
            // The completion goes on the backend's answer only if it took the file.
            let (name, complete) = flag(v, true);
            assert!(
                on_success.contains(&(name, complete.as_bytes().to_vec())),
                "v{v}"
            );
            assert!(on_success.contains(&("Upload-Offset", b"100".to_vec())));
            assert!(!headers.iter().any(|(h, _)| *h == "Upload-Offset"));
            assert!(headers.contains(&("Upload-Draft-Interop-Version", n.clone().into_bytes())));
        }
    }

    #[test]
    fn append_answers_every_version() {
        let s = settings();
        let upload_id = id("abc");
        for v in InteropVersion::ALL {
            let p = ietf(&s, v);
            let a = answer(p.reply(&Outcome::Appended {
                upload: held(&upload_id, 200, None, Stage::Receiving),
                hands_off: false,
            }));
            assert_eq!(a.status, if v == V8 { 204 } else { 201 });
            assert_eq!(value(&a, "upload-offset"), Some("200"));
            let (name, incomplete) = flag(v, false);
            assert_eq!(value(&a, name), Some(incomplete));
            // The completing append hands off.
            assert!(matches!(
                p.reply(&Outcome::Appended {
                    upload: held(&upload_id, 200, Some(200), Stage::Stored),
                    hands_off: true,
                }),
                Reply::HandOffWith { .. }
            ));
            // An (empty) append to an upload completed before.
            let a = answer(p.reply(&Outcome::Appended {
                upload: held(&upload_id, 200, Some(200), Stage::HandedOff { status: 200 }),
                hands_off: false,
            }));
            assert_eq!(a.status, if v == V8 { 410 } else { 400 }, "v{v}");
            let body = String::from_utf8(a.body.unwrap()).unwrap();
            assert_eq!(body.contains("completed-upload"), v >= V6, "{body}");
            // Being handed off by another request.
            let a = answer(p.reply(&Outcome::Appended {
                upload: held(&upload_id, 200, Some(200), Stage::HandingOff),
                hands_off: false,
            }));
            assert_eq!(a.status, 423);
        }
    }

    #[test]
    fn head_answers_every_version() {
        let s = settings();
        let upload_id = id("abc");
        for v in InteropVersion::ALL {
            let p = ietf(&s, v);
            let upload = Held {
                expires: Some(Expiry { at: 100, now: 40 }),
                ..held(&upload_id, 25, Some(100), Stage::Receiving)
            };
            let a = answer(p.reply(&Outcome::Inspected {
                upload,
                hands_off: false,
            }));
            assert_eq!(a.status, 204);
            assert_eq!(value(&a, "upload-offset"), Some("25"));
            let (name, incomplete) = flag(v, false);
            assert_eq!(value(&a, name), Some(incomplete), "v{v}");
            assert_eq!(value(&a, "cache-control"), Some("no-store"));
            assert_eq!(
                value(&a, "upload-length"),
                (v >= V6).then_some("100"),
                "v{v}"
            );
            let limit = match v {
                V3 | V5 => None,
                V6 => Some("max-size=1000, expires=60"),
                V8 => Some("max-size=1000, max-age=60"),
            };
            assert_eq!(value(&a, "upload-limit"), limit, "v{v}");
            // Complete and taken.
            let a = answer(p.reply(&Outcome::Inspected {
                upload: held(&upload_id, 100, Some(100), Stage::HandedOff { status: 200 }),
                hands_off: false,
            }));
            let (name, complete) = flag(v, true);
            assert_eq!((a.status, value(&a, name)), (204, Some(complete)));
            assert_eq!(value(&a, "upload-offset"), Some("100"));
            // Complete, never taken: this HEAD hands off; its state only on a 2xx.
            let Reply::HandOffWith {
                headers,
                on_success,
            } = p.reply(&Outcome::Inspected {
                upload: held(&upload_id, 100, Some(100), Stage::Stored),
                hands_off: true,
            })
            else {
                panic!()
            };
            assert!(headers.contains(&("Cache-Control", b"no-store".to_vec())));
            assert!(!headers
                .iter()
                .any(|(n, _)| *n == "Upload-Offset" || *n == name));
            assert!(on_success.contains(&("Upload-Offset", b"100".to_vec())));
            assert!(on_success.contains(&(name, complete.as_bytes().to_vec())));
            // Refused by the backend, or being handed off: not complete.
            for (stage, status) in [
                (Stage::HandedOff { status: 415 }, 410),
                (Stage::HandingOff, 423),
                (Stage::Stored, 423),
            ] {
                let a = answer(p.reply(&Outcome::Inspected {
                    upload: held(&upload_id, 100, Some(100), stage),
                    hands_off: false,
                }));
                assert_eq!(a.status, status);
                assert_eq!(value(&a, "upload-offset"), None);
                assert_eq!(value(&a, "cache-control"), Some("no-store"));
            }
            // Cancellation.
            let a = answer(p.reply(&Outcome::Terminated));
            assert_eq!(a.status, 204);
            assert_eq!(
                value(&a, "upload-draft-interop-version"),
                Some(v.to_string().as_str())
            );
        }
    }
}
