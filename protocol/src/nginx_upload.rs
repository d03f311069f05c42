//! The nginx-upload-module protocol (seed 000) and the RFC 1867 form mode it shares a location
//! with: `POST` a `multipart/form-data` form, or a raw body with `Content-Disposition`, optionally
//! a segment of a resumable upload (`X-Content-Range` + `X-Session-ID`); `201` with the ranges
//! held until the file is complete; `HEAD` (or an empty `POST` with a session id) asks what an
//! upload holds. Every error is a plain status with nginx's page, as in the C module.

use ngx_upload_engine::content_range::{self, ContentRange};
use ngx_upload_engine::disposition;
use ngx_upload_engine::form::tame_array_name;
use ngx_upload_engine::session_id::SessionId;
use ngx_upload_engine::state::SessionState;

use crate::head::starts_with_ignore_case;
use crate::{Answer, Failure, FileFacts, Method, Outcome, Plan, Problem, Reply, RequestHead};

/// The location's settings this protocol decides with.
#[derive(Debug, Clone, Copy, Default)]
pub struct NginxUpload {
    /// `upload_resumable`.
    pub resumable: bool,
    /// `upload_max_file_size`, when set.
    pub max_file_size: Option<u64>,
    /// `upload_tame_arrays`.
    pub tame_arrays: bool,
}

impl NginxUpload {
    /// A client asking what an upload holds before it resumes: `HEAD`, or a `POST` with a
    /// session id, no range, no body and no form.
    fn is_status_query(head: &RequestHead<'_>) -> bool {
        head.method == Method::Head
            || (head.method == Method::Post
                && head.has_no_body()
                && content_range_header(head).is_none()
                && session_id_header(head).is_some()
                && !starts_with_ignore_case(head.content_type().unwrap_or_default(), b"multipart/"))
    }

    fn status_query(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        if !self.resumable {
            return Err(Failure::new(
                Problem::MethodNotAllowed,
                "status queries need \"upload_resumable on\"",
            ));
        }
        let id = session_id_header(head).ok_or_else(|| {
            Failure::bad_request("a status query needs a session id (X-Session-ID)")
        })?;
        Ok(Plan::Report {
            id: parse_session_id(id)?,
        })
    }

    /// A raw body: a whole file, or a segment of a resumable upload.
    fn raw_upload(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        if !self.resumable {
            return Err(Failure::new(
                Problem::UnsupportedMediaType,
                "a raw upload (not multipart/form-data) needs \"upload_resumable on\"",
            ));
        }
        let Some(disposition) = head.header("content-disposition") else {
            return Err(Failure::new(
                Problem::UnsupportedMediaType,
                "a raw upload needs a Content-Disposition header",
            ));
        };
        let parsed = disposition::parse(disposition).map_err(|e| {
            Failure::bad_request(format!(
                "Content-Disposition \"{}\" {e}",
                String::from_utf8_lossy(disposition)
            ))
        })?;
        let session_id = session_id_header(head).map(parse_session_id).transpose()?;
        let range = content_range_header(head)
            .map(|value| {
                content_range::parse(value).map_err(|e| {
                    Failure::new(
                        Problem::BadRange,
                        format!("Content-Range \"{}\" {e}", String::from_utf8_lossy(value)),
                    )
                })
            })
            .transpose()?;
        let expected = head.content_length;
        let file = FileFacts {
            field_name: self.field_name(parsed.name.unwrap_or_default()),
            file_name: parsed
                .filename
                .as_deref()
                .map(disposition::base_name)
                .unwrap_or_default()
                .to_vec(),
            content_type: head.content_type().unwrap_or_default().to_vec(),
        };
        match (range, session_id) {
            (Some(_), None) => Err(Failure::bad_request(
                "Content-Range needs a session id (X-Session-ID)",
            )),
            (Some(range), Some(id)) => {
                if let Some(expected) = expected.filter(|n| *n != range.len()) {
                    return Err(Failure::new(
                        Problem::BodyLengthMismatch,
                        format!(
                            "Content-Length {expected} differs from the {} bytes of Content-Range \"{range}\"",
                            range.len()
                        ),
                    ));
                }
                self.check_size(range.total)?;
                Ok(Plan::Segment { id, range, file })
            }
            (None, id) => {
                if expected == Some(0) || (expected.is_none() && !head.chunked) {
                    return Err(Failure::bad_request("a raw upload needs a non-empty body"));
                }
                if let Some(size) = expected {
                    self.check_size(size)?;
                }
                Ok(Plan::Whole {
                    id,
                    max_size: self.max_file_size.unwrap_or(content_range::MAX_OFFSET),
                    file,
                })
            }
        }
    }

    fn check_size(&self, size: u64) -> Result<(), Failure> {
        match self.max_file_size {
            Some(max) if size > max => Err(Failure::new(
                Problem::TooLarge,
                format!("file of {size} bytes is larger than upload_max_file_size {max}"),
            )),
            _ => Ok(()),
        }
    }

    fn field_name(&self, name: Vec<u8>) -> Vec<u8> {
        if self.tame_arrays {
            tame_array_name(&name).to_vec()
        } else {
            name
        }
    }
}

impl crate::Protocol for NginxUpload {
    fn plan(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        if head.method == Method::Options {
            // CORS preflight setups rely on an empty 200 (with upload_add_header's headers).
            return Ok(Plan::Answer(Answer::with_body(200, "")));
        }
        if Self::is_status_query(head) {
            return self.status_query(head);
        }
        if head.method != Method::Post {
            return Err(Failure::new(
                Problem::MethodNotAllowed,
                format!(
                    "method {} is not allowed, uploads use POST",
                    head.method_name_lossy()
                ),
            ));
        }
        let content_type = head.content_type().unwrap_or_default();
        if starts_with_ignore_case(content_type, b"multipart/") {
            return Ok(Plan::Form {
                content_type: content_type.to_vec(),
                session_id: session_id_header(head).map(<[u8]>::to_vec),
            });
        }
        self.raw_upload(head)
    }

    fn reply(&self, outcome: &Outcome<'_>) -> Reply {
        match outcome {
            Outcome::Report(state) => Reply::Answer(range_report(200, state)),
            Outcome::Progress(state) => Reply::Answer(range_report(201, state)),
            Outcome::Complete(_) => Reply::HandOff {
                headers: Vec::new(),
            },
            // Outcomes of plans this protocol never makes.
            _ => Reply::Answer(Answer::status(500)),
        }
    }

    fn refuse(&self, failure: &Failure) -> Answer {
        Answer::status(failure.problem.plain_status())
    }
}

/// The ranges held, in a `Range` header and as the body (no Content-Type), as the C module
/// answers an incomplete upload.
fn range_report(status: u16, state: &SessionState) -> Answer {
    let report = state.received.report(state.total).text();
    Answer::with_body(status, report.clone()).header("Range", report)
}

/// `X-Content-Range`, else `Content-Range`.
pub fn content_range_header<'a>(head: &RequestHead<'a>) -> Option<&'a [u8]> {
    head.first_header(&["x-content-range", "content-range"])
}

/// `X-Session-ID`, else `Session-ID`.
pub fn session_id_header<'a>(head: &RequestHead<'a>) -> Option<&'a [u8]> {
    head.first_header(&["x-session-id", "session-id"])
}

pub fn parse_session_id(id: &[u8]) -> Result<SessionId, Failure> {
    SessionId::parse(id).map_err(|e| {
        Failure::bad_request(format!(
            "session id \"{}\" {e}",
            String::from_utf8_lossy(id)
        ))
    })
}

/// A part's `Content-Range` as a segment range (416 when malformed).
pub fn parse_part_range(value: &[u8]) -> Result<ContentRange, Failure> {
    content_range::parse(value).map_err(|e| {
        Failure::new(
            Problem::BadRange,
            format!(
                "part Content-Range \"{}\" {e}",
                String::from_utf8_lossy(value)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    const RESUMABLE: NginxUpload = NginxUpload {
        resumable: true,
        max_file_size: None,
        tame_arrays: false,
    };

    fn head<'a>(method: Method, headers: &[(&'a str, &'a str)]) -> RequestHead<'a> {
        let mut h = RequestHead::new(method, b"/upload");
        for (n, v) in headers {
            if n.eq_ignore_ascii_case("content-length") {
                h.content_length = v.parse().ok();
            }
            h.headers.push((n.as_bytes(), v.as_bytes()));
        }
        h
    }

    fn problem(p: &NginxUpload, h: &RequestHead<'_>) -> (Problem, String) {
        match p.plan(h) {
            Err(f) => (f.problem, f.message),
            Ok(plan) => panic!("planned {plan:?}"),
        }
    }

    const DISP: (&str, &str) = ("Content-Disposition", "attachment; filename=\"a.bin\"");

    /// A row of the decision table: the location, the request, what it is refused for.
    type Row<'a> = (NginxUpload, Method, &'a [(&'a str, &'a str)], Problem);

    #[test]
    fn decision_table() {
        use Problem::*;
        let rows: &[Row<'_>] = &[
            // Method and status queries.
            (RESUMABLE, Method::Get, &[], MethodNotAllowed),
            (
                RESUMABLE,
                Method::Put,
                &[DISP, ("Content-Length", "3")],
                MethodNotAllowed,
            ),
            (RESUMABLE, Method::Head, &[], BadRequest),
            (
                RESUMABLE,
                Method::Head,
                &[("X-Session-ID", "a/b")],
                BadRequest,
            ),
            (
                NginxUpload::default(),
                Method::Head,
                &[("X-Session-ID", "abc")],
                MethodNotAllowed,
            ),
            // Raw uploads.
            (
                NginxUpload::default(),
                Method::Post,
                &[DISP, ("Content-Length", "3")],
                UnsupportedMediaType,
            ),
            (
                RESUMABLE,
                Method::Post,
                &[("Content-Length", "3")],
                UnsupportedMediaType,
            ),
            (
                RESUMABLE,
                Method::Post,
                &[("Content-Disposition", "bogus"), ("Content-Length", "3")],
                BadRequest,
            ),
            (
                RESUMABLE,
                Method::Post,
                &[DISP, ("Content-Length", "0")],
                BadRequest,
            ),
            (RESUMABLE, Method::Post, &[DISP], BadRequest),
            (
                RESUMABLE,
                Method::Post,
                &[DISP, ("X-Session-ID", "bad id"), ("Content-Length", "3")],
                BadRequest,
            ),
            // Segments.
            (
                RESUMABLE,
                Method::Post,
                &[
                    DISP,
                    ("X-Content-Range", "bytes 0-2/9"),
                    ("Content-Length", "3"),
                ],
                BadRequest,
            ),
            (
                RESUMABLE,
                Method::Post,
                &[
                    DISP,
                    ("X-Session-ID", "abc"),
                    ("X-Content-Range", "bytes 2-0/9"),
                    ("Content-Length", "3"),
                ],
                BadRange,
            ),
            (
                RESUMABLE,
                Method::Post,
                &[
                    DISP,
                    ("X-Session-ID", "abc"),
                    ("X-Content-Range", "bytes 0-2/9"),
                    ("Content-Length", "4"),
                ],
                BodyLengthMismatch,
            ),
            (
                NginxUpload {
                    max_file_size: Some(8),
                    ..RESUMABLE
                },
                Method::Post,
                &[
                    DISP,
                    ("X-Session-ID", "abc"),
                    ("X-Content-Range", "bytes 0-2/9"),
                    ("Content-Length", "3"),
                ],
                TooLarge,
            ),
            (
                NginxUpload {
                    max_file_size: Some(2),
                    ..RESUMABLE
                },
                Method::Post,
                &[DISP, ("Content-Length", "3")],
                TooLarge,
            ),
        ];
        for (i, (p, method, headers, want)) in rows.iter().enumerate() {
            let (got, message) = problem(p, &head(*method, headers));
            assert_eq!(got, *want, "row {i}: {message}");
            assert!(!message.is_empty(), "row {i} has no message");
        }
    }

    #[test]
    fn a_segment_is_planned_with_its_range_and_facts() {
        let h = head(
            Method::Post,
            &[
                (
                    "Content-Disposition",
                    "attachment; name=\"f[]\"; filename=\"C:\\dir\\a.bin\"",
                ),
                ("Content-Type", "application/octet-stream"),
                ("Session-ID", "plain"),
                ("X-Session-ID", "xwins"),
                ("Content-Range", "bytes 9-9/10"),
                ("X-Content-Range", "bytes 0-2/10"),
                ("Content-Length", "3"),
            ],
        );
        let tame = NginxUpload {
            tame_arrays: true,
            ..RESUMABLE
        };
        let Ok(Plan::Segment { id, range, file }) = tame.plan(&h) else {
            panic!("not a segment");
        };
        assert_eq!(id.as_str(), "xwins");
        assert_eq!((range.first, range.last, range.total), (0, 2, 10));
        assert_eq!(file.field_name, b"f");
        assert_eq!(file.file_name, b"a.bin");
        assert_eq!(file.content_type, b"application/octet-stream");
    }

    #[test]
    fn whole_uploads_forms_and_queries() {
        let chunked = {
            let mut h = head(Method::Post, &[DISP]);
            h.chunked = true;
            h
        };
        assert!(matches!(
            RESUMABLE.plan(&chunked),
            Ok(Plan::Whole { id: None, .. })
        ));
        let form = head(
            Method::Post,
            &[
                ("Content-Type", "Multipart/Form-Data; boundary=x"),
                ("Content-Length", "9"),
            ],
        );
        assert!(matches!(
            NginxUpload::default().plan(&form),
            Ok(Plan::Form {
                session_id: None,
                ..
            })
        ));
        let query = head(
            Method::Post,
            &[("X-Session-ID", "abc"), ("Content-Length", "0")],
        );
        assert!(matches!(RESUMABLE.plan(&query), Ok(Plan::Report { .. })));
        let options = head(Method::Options, &[]);
        let Ok(Plan::Answer(a)) = RESUMABLE.plan(&options) else {
            panic!("OPTIONS is answered at once");
        };
        assert_eq!((a.status, a.body.as_deref()), (200, Some(&b""[..])));
    }

    #[test]
    fn progress_and_reports_carry_the_ranges_held() {
        let mut state = SessionState::new(10);
        state.received.insert(0, 3);
        state.received.insert(5, 10);
        let Reply::Answer(a) = RESUMABLE.reply(&Outcome::Progress(&state)) else {
            panic!("progress is answered");
        };
        assert_eq!(a.status, 201);
        assert_eq!(a.header_value("range"), Some(&b"0-2/10,5-9/10"[..]));
        assert_eq!(a.body.as_deref(), Some(&b"0-2/10,5-9/10"[..]));
        let Reply::Answer(a) = RESUMABLE.reply(&Outcome::Report(&state)) else {
            panic!("a report is answered");
        };
        assert_eq!(a.status, 200);
        assert!(matches!(
            RESUMABLE.reply(&Outcome::Complete(&state)),
            Reply::HandOff { .. }
        ));
        let refused = RESUMABLE.refuse(&Failure::new(Problem::InFlight, "x"));
        assert_eq!((refused.status, refused.body), (409, None));
    }
}
