//! tus 1.0.0 (<https://tus.io/protocols/resumable-upload>) with every extension: creation,
//! creation-with-upload, creation-defer-length, expiration, checksum, termination,
//! concatenation, concatenation-unfinished (checksum-trailer aside).
//!
//! | request | plan | answer |
//! | --- | --- | --- |
//! | `OPTIONS` anywhere | answered at once | 200, `Tus-Version`, `Tus-Extension`, `Tus-Max-Size`, `Tus-Checksum-Algorithm` (no `Tus-Resumable`); a CORS preflight too |
//! | `POST` prefix, `Upload-Length` or `Upload-Defer-Length: 1` | [`Plan::Create`] (body written when `Content-Type: application/offset+octet-stream`) | 201, `Location`, `Upload-Offset`, `Upload-Expires`; a complete upload (length 0, or the body completed it) is handed off, its answer getting `Location` and `Upload-Offset` if 2xx |
//! | `POST` prefix, `Upload-Concat: final;URL…` | [`Plan::Concatenate`] | parts all complete: hand-off (`Location` if 2xx); else 201 + `Location` (+ `Upload-Expires`), and the request completing the last part hands the final upload off |
//! | `HEAD` upload | [`Plan::Inspect`] (retrying a failed hand-off; assembling a final upload whose parts are complete) | 200, `Upload-Offset` (not for a final upload awaiting parts), `Upload-Length` (a final's once every part's is known) or `Upload-Defer-Length: 1`, `Upload-Metadata`, `Upload-Concat`, `Upload-Expires`, `Cache-Control: no-store`; 410 for a final upload whose part was terminated or expired |
//! | `PATCH` upload, `Content-Type: application/offset+octet-stream`, `Upload-Offset` | [`Plan::Append`] | 204 + `Upload-Offset` (+ `Upload-Expires`); the completing one is handed off (`Upload-Offset` if 2xx), and the one completing the last part of a final upload hands that off |
//! | `DELETE` upload | [`Plan::Terminate`] | 204 |
//!
//! Every answer but OPTIONS's has `Tus-Resumable: 1.0.0`; a request without it (or with
//! another version) is refused with 412 and `Tus-Version`. `X-HTTP-Method-Override` replaces
//! the method. Errors: 400 malformed headers (and an unknown checksum algorithm), 403 PATCH on
//! a final upload, 404 unknown upload, 409 offset mismatch (with the held `Upload-Offset`), 410
//! expired or terminated, 412 version, 413 too large, 415 PATCH without the tus media type,
//! 423 another request holds the upload, 460 checksum mismatch; 4xx answers carry the message
//! as text.
//!
//! nginx knows no reason phrase for 460: the glue sends the status line `460 Checksum Mismatch`
//! itself (and `104 Upload Resumption Supported` for the IETF draft's interim answer).
//!
//! An upload is never reported complete before a backend took it (tus-js-client #557): a
//! complete upload whose hand-off failed is handed off again by the next `HEAD` (or empty
//! `PATCH`), and one the backend refused (4xx) answers `HEAD` with 410.

use ngx_upload_engine::session_id::SessionId;

use crate::checksum::{self, Checksum};
use crate::metadata::{self, Metadata};
use crate::plan::{Completion, Concat, Concatenate, Create, Held, Write};
use crate::resumable::{
    effective_method, facts_from_metadata, foreign_outcome, has_body, media_type_is, single_header,
    standing, Settings, Standing, Target,
};
use crate::{http_date, Answer, Failure, FileFacts, Method, Outcome, Plan, Problem, Reply};
use crate::{Protocol, RequestHead};

/// The version this server speaks.
pub const VERSION: &str = "1.0.0";

/// The media type of PATCH bodies (and of creation-with-upload bodies).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Most parts a final upload may have.
pub const MAX_PARTS: usize = 1000;

/// tus for one location.
#[derive(Debug, Clone, Copy)]
pub struct Tus<'s> {
    pub settings: &'s Settings,
}

type Headers = Vec<(&'static str, Vec<u8>)>;

/// A byte count in a tus header: a non-negative decimal integer.
enum Count {
    Value(u64),
    /// All digits, but past `u64`.
    Huge,
}

fn count(name: &str, value: &[u8]) -> Result<Count, Failure> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Failure::bad_request(format!(
            "{name} \"{}\" is not a non-negative decimal integer",
            value.escape_ascii()
        )));
    }
    Ok(std::str::from_utf8(value)
        .expect("ASCII digits")
        .parse()
        .map_or(Count::Huge, Count::Value))
}

impl Tus<'_> {
    fn extensions(&self) -> String {
        let mut list = vec!["creation", "creation-with-upload", "creation-defer-length"];
        if self.settings.expire_after.is_some() {
            list.push("expiration");
        }
        if !self.settings.checksums.is_empty() {
            list.push("checksum");
        }
        // A final upload may name parts still being written: it is assembled (and handed off)
        // by the request that completes its last part.
        list.extend(["termination", "concatenation", "concatenation-unfinished"]);
        list.join(",")
    }

    /// `Tus-Resumable` and the CORS headers: what every answer but OPTIONS's carries.
    fn base(&self) -> Headers {
        let mut h = vec![("Tus-Resumable", VERSION.into())];
        h.extend(self.settings.cors());
        h
    }

    /// An answer with the base headers, `extra`, and an empty body.
    fn answer(&self, status: u16, extra: Headers) -> Answer {
        let mut a = Answer::with_body(status, "");
        a.headers = self.base();
        a.headers.extend(extra);
        a
    }

    /// The answer to `OPTIONS` (and to a CORS preflight).
    fn discovery(&self, head: &RequestHead<'_>) -> Answer {
        let mut a = Answer::with_body(200, "")
            .header("Tus-Version", VERSION)
            .header("Tus-Extension", self.extensions());
        if let Some(max) = self.settings.max_size {
            a = a.header("Tus-Max-Size", max.to_string());
        }
        if !self.settings.checksums.is_empty() {
            a = a.header(
                "Tus-Checksum-Algorithm",
                checksum::names(self.settings.checksums),
            );
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

    fn check_version(&self, head: &RequestHead<'_>) -> Result<(), Failure> {
        match single_header(head, "tus-resumable")? {
            Some(v) if v == VERSION.as_bytes() => Ok(()),
            Some(v) => Err(Failure::new(
                Problem::UnsupportedVersion,
                format!(
                    "Tus-Resumable \"{}\" is not a version this server speaks ({VERSION})",
                    v.escape_ascii()
                ),
            )),
            None => Err(Failure::new(
                Problem::UnsupportedVersion,
                format!(
                    "a tus request needs Tus-Resumable: {VERSION} (or, for the IETF draft, \
                     Upload-Draft-Interop-Version)"
                ),
            )),
        }
    }

    /// `Upload-Length` (on POST or PATCH): at most the location's maximum.
    fn length(&self, value: &[u8]) -> Result<u64, Failure> {
        let max = self.settings.max_size();
        match count("Upload-Length", value)? {
            Count::Value(n) if n <= max => Ok(n),
            _ => Err(Failure::new(
                Problem::TooLarge,
                format!(
                    "Upload-Length {} is more than the largest upload, {max} bytes",
                    value.escape_ascii()
                ),
            )),
        }
    }

    fn metadata(&self, head: &RequestHead<'_>) -> Result<Metadata, Failure> {
        // Sent twice, the header is one comma-separated list.
        let values: Vec<&[u8]> = head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"upload-metadata"))
            .map(|(_, v)| *v)
            .collect();
        let joined = values.join(&b","[..]);
        metadata::parse(&joined).map_err(|e| {
            Failure::bad_request(format!("Upload-Metadata \"{}\" {e}", joined.escape_ascii()))
        })
    }

    fn checksum(&self, head: &RequestHead<'_>) -> Result<Option<Checksum>, Failure> {
        single_header(head, "upload-checksum")?
            .map(|v| checksum::parse_upload_checksum(v, self.settings.checksums))
            .transpose()
    }

    fn create(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        let metadata = self.metadata(head)?;
        let file = facts_from_metadata(&metadata);
        let writes = media_type_is(head, OFFSET_OCTET_STREAM) && has_body(head);
        let partial = match single_header(head, "upload-concat")? {
            None => false,
            Some(b"partial") => true,
            Some(v) if v.starts_with(b"final;") => {
                return self.concatenate(head, &v[b"final;".len()..], metadata, file, writes)
            }
            Some(v) => {
                return Err(Failure::bad_request(format!(
                    "Upload-Concat \"{}\" is neither \"partial\" nor \"final;<upload URLs>\"",
                    v.escape_ascii()
                )))
            }
        };
        let length = match (
            single_header(head, "upload-length")?,
            single_header(head, "upload-defer-length")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(Failure::bad_request(
                    "a creation has Upload-Length or Upload-Defer-Length: 1, not both",
                ))
            }
            (Some(v), None) => Some(self.length(v)?),
            (None, Some(b"1")) => None,
            (None, Some(v)) => {
                return Err(Failure::bad_request(format!(
                    "Upload-Defer-Length \"{}\" is not 1",
                    v.escape_ascii()
                )))
            }
            (None, None) => {
                return Err(Failure::bad_request(
                    "a creation needs Upload-Length, or Upload-Defer-Length: 1",
                ))
            }
        };
        let then_write = if writes {
            self.check_body_fits(head, 0, length)?;
            Some(Write {
                checksum: self.checksum(head)?,
                finish: false,
            })
        } else {
            None
        };
        Ok(Plan::Create(Box::new(Create {
            length,
            max_size: self.settings.max_size(),
            completion: Completion::AtLength,
            metadata,
            file,
            partial,
            then_write,
            interim: None,
        })))
    }

    fn concatenate(
        &self,
        head: &RequestHead<'_>,
        list: &[u8],
        metadata: Metadata,
        file: FileFacts,
        writes: bool,
    ) -> Result<Plan, Failure> {
        if writes {
            return Err(Failure::new(
                Problem::Forbidden,
                "a final upload (Upload-Concat: final) takes no bytes of its own",
            ));
        }
        for name in ["upload-length", "upload-defer-length"] {
            if head.header(name).is_some() {
                return Err(Failure::bad_request(format!(
                    "a final upload's length is the sum of its parts': it takes no {}",
                    if name == "upload-length" {
                        "Upload-Length"
                    } else {
                        "Upload-Defer-Length"
                    }
                )));
            }
        }
        let parts = list
            .split(|b| *b == b' ')
            .filter(|url| !url.is_empty())
            .map(|url| self.settings.resolve_upload_url(url, head.uri))
            .collect::<Result<Vec<SessionId>, Failure>>()?;
        if parts.is_empty() {
            return Err(Failure::bad_request(
                "Upload-Concat: final names no partial uploads",
            ));
        }
        if parts.len() > MAX_PARTS {
            return Err(Failure::bad_request(format!(
                "Upload-Concat: final names {} parts, more than {MAX_PARTS}",
                parts.len()
            )));
        }
        Ok(Plan::Concatenate(Box::new(Concatenate {
            parts,
            max_size: self.settings.max_size(),
            metadata,
            file,
            unfinished_ok: true,
        })))
    }

    /// A body with a known length must fit the upload (its declared length, the maximum).
    fn check_body_fits(
        &self,
        head: &RequestHead<'_>,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(), Failure> {
        let Some(body) = head.content_length else {
            return Ok(());
        };
        let end = offset.checked_add(body);
        if let Some(length) = length {
            if end.is_none_or(|end| end > length) {
                return Err(Failure::new(
                    Problem::PastLength { length },
                    format!(
                        "a body of {body} bytes at offset {offset} goes past the upload's \
                         length, {length} bytes"
                    ),
                ));
            }
        }
        let max = self.settings.max_size();
        if end.is_none_or(|end| end > max) {
            return Err(Failure::new(
                Problem::TooLarge,
                format!(
                    "a body of {body} bytes at offset {offset} goes past the largest upload, \
                     {max} bytes"
                ),
            ));
        }
        Ok(())
    }

    fn append(&self, head: &RequestHead<'_>, id: SessionId) -> Result<Plan, Failure> {
        if !media_type_is(head, OFFSET_OCTET_STREAM) {
            return Err(Failure::new(
                Problem::UnsupportedMediaType,
                format!(
                    "a PATCH needs Content-Type: {OFFSET_OCTET_STREAM}, not \"{}\"",
                    head.content_type().unwrap_or_default().escape_ascii()
                ),
            ));
        }
        let offset = match single_header(head, "upload-offset")? {
            None => return Err(Failure::bad_request("a PATCH needs Upload-Offset")),
            Some(v) => match count("Upload-Offset", v)? {
                Count::Value(n) => n,
                Count::Huge => {
                    return Err(Failure::bad_request(format!(
                        "Upload-Offset {} is past any upload",
                        v.escape_ascii()
                    )))
                }
            },
        };
        let declare_length = single_header(head, "upload-length")?
            .map(|v| self.length(v))
            .transpose()?;
        if let Some(length) = declare_length.filter(|l| *l < offset) {
            return Err(Failure::new(
                Problem::TotalMismatch,
                format!("Upload-Length {length} is less than Upload-Offset {offset}"),
            ));
        }
        match single_header(head, "upload-concat")? {
            // tus-js-client sends its headers on every request of a partial upload.
            None | Some(b"partial") => {}
            Some(v) => {
                return Err(Failure::bad_request(format!(
                    "Upload-Concat \"{}\" on a PATCH (only \"partial\" is tolerated there)",
                    v.escape_ascii()
                )))
            }
        }
        let checksum = self.checksum(head)?;
        self.check_body_fits(head, offset, declare_length)?;
        Ok(Plan::Append {
            id,
            offset,
            declare_length,
            checksum,
            finish: false,
        })
    }

    fn expires(upload: &Held<'_>) -> Headers {
        upload
            .expires
            .map(|e| ("Upload-Expires", http_date::format(e.at).into_bytes()))
            .into_iter()
            .collect()
    }

    /// What a HEAD tells of an upload.
    fn report(&self, upload: &Held<'_>) -> Headers {
        let mut h = Vec::new();
        let unassembled = matches!(upload.concat, Concat::Final(_)) && !upload.stage.is_complete();
        if !unassembled {
            h.push(("Upload-Offset", upload.offset.to_string().into_bytes()));
        }
        match upload.length {
            Some(length) => h.push(("Upload-Length", length.to_string().into_bytes())),
            None if matches!(upload.concat, Concat::Final(_)) => {}
            None => h.push(("Upload-Defer-Length", b"1".to_vec())),
        }
        if !upload.metadata.is_empty() {
            h.push(("Upload-Metadata", metadata::format(upload.metadata)));
        }
        match upload.concat {
            Concat::Single => {}
            Concat::Partial => h.push(("Upload-Concat", b"partial".to_vec())),
            Concat::Final(parts) => {
                let mut v = b"final;".to_vec();
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        v.push(b' ');
                    }
                    v.extend(self.settings.location(part));
                }
                h.push(("Upload-Concat", v));
            }
        }
        h.extend(Self::expires(upload));
        h
    }

    fn no_store() -> (&'static str, Vec<u8>) {
        ("Cache-Control", b"no-store".to_vec())
    }

    /// The answer for a complete upload this request does not hand off, when it may not be
    /// called complete.
    fn not_reportable(&self, standing: Standing, upload: &Held<'_>) -> Answer {
        let mut a = match standing {
            Standing::Refused(status) => {
                let mut a = self.answer(410, vec![]);
                a.body = Some(
                    format!(
                        "upload {} was refused by the application (status {status}); start a \
                         new upload\n",
                        upload.id
                    )
                    .into_bytes(),
                );
                a
            }
            _ => {
                let mut a = self.answer(423, vec![]);
                a.body = Some(
                    format!(
                        "upload {} is complete and being handed off; ask again later\n",
                        upload.id
                    )
                    .into_bytes(),
                );
                a
            }
        };
        a.content_type = Some("text/plain; charset=utf-8");
        a
    }

    fn created(&self, upload: &Held<'_>, hands_off: bool) -> Reply {
        let location = ("Location", self.settings.location(upload.id));
        let is_final = matches!(upload.concat, Concat::Final(_));
        if hands_off {
            let mut on_success = vec![location];
            if !is_final {
                on_success.push(("Upload-Offset", upload.offset.to_string().into_bytes()));
            }
            return Reply::HandOffWith {
                headers: self.base(),
                on_success,
            };
        }
        if let other @ (Standing::Busy | Standing::Refused(_)) = standing(upload) {
            // Complete, yet this request does not hand it off: never say its offset.
            return Reply::Answer(self.not_reportable(other, upload));
        }
        let mut extra = vec![location];
        if !is_final {
            extra.push(("Upload-Offset", upload.offset.to_string().into_bytes()));
        }
        extra.extend(Self::expires(upload));
        Reply::Answer(self.answer(201, extra))
    }

    fn appended(&self, upload: &Held<'_>, hands_off: bool) -> Reply {
        let offset = ("Upload-Offset", upload.offset.to_string().into_bytes());
        if hands_off {
            return Reply::HandOffWith {
                headers: self.base(),
                on_success: vec![offset],
            };
        }
        match standing(upload) {
            Standing::Open | Standing::Done => {
                let mut extra = vec![offset];
                extra.extend(Self::expires(upload));
                Reply::Answer(self.answer(204, extra))
            }
            other => Reply::Answer(self.not_reportable(other, upload)),
        }
    }

    fn inspected(&self, upload: &Held<'_>, hands_off: bool) -> Reply {
        if hands_off {
            let mut headers = self.base();
            headers.push(Self::no_store());
            return Reply::HandOffWith {
                headers,
                on_success: self.report(upload),
            };
        }
        let mut a = match standing(upload) {
            Standing::Open | Standing::Done => self.answer(200, self.report(upload)),
            other => self.not_reportable(other, upload),
        };
        a.headers.push(Self::no_store());
        Reply::Answer(a)
    }

    /// The status tus answers a problem with.
    pub fn status(problem: Problem) -> u16 {
        match problem {
            Problem::BadRequest
            | Problem::BadRange
            | Problem::BodyLengthMismatch
            | Problem::TooManyRanges
            | Problem::TotalMismatch => 400,
            Problem::MethodNotAllowed => 405,
            Problem::UnsupportedMediaType => 415,
            Problem::TooLarge | Problem::PastLength { .. } => 413,
            Problem::OffsetMismatch { .. } | Problem::Exists => 409,
            Problem::InFlight | Problem::HandOffBusy => 423,
            Problem::NotFound => 404,
            Problem::Gone => 410,
            Problem::Forbidden => 403,
            Problem::ChecksumMismatch => 460,
            Problem::UnsupportedVersion => 412,
            Problem::Timeout => 408,
            Problem::StorageFull => 507,
            Problem::Internal => 500,
        }
    }
}

impl Protocol for Tus<'_> {
    fn plan(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        let method = effective_method(head)?;
        if method == Method::Options {
            return Ok(Plan::Answer(self.discovery(head)));
        }
        self.check_version(head)?;
        match (method, self.settings.target(head.uri)?) {
            (Method::Post, Target::Collection) => self.create(head),
            (Method::Head, Target::Upload(id)) => Ok(Plan::Inspect {
                id,
                retry_hand_off: true,
            }),
            (Method::Patch, Target::Upload(id)) => self.append(head, id),
            (Method::Delete, Target::Upload(id)) => Ok(Plan::Terminate { id }),
            (_, Target::Collection) => Err(Failure::new(
                Problem::MethodNotAllowed,
                format!(
                    "{} on the creation URL: uploads are created with POST",
                    head.method_name_lossy()
                ),
            )),
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
            Outcome::Created { upload, hands_off } => self.created(upload, *hands_off),
            Outcome::Appended { upload, hands_off } => self.appended(upload, *hands_off),
            Outcome::Inspected { upload, hands_off } => self.inspected(upload, *hands_off),
            Outcome::Terminated => Reply::Answer(self.answer(204, vec![])),
            Outcome::Report(_) | Outcome::Progress(_) | Outcome::Complete(_) => foreign_outcome(),
        }
    }

    fn refuse(&self, failure: &Failure) -> Answer {
        let status = Self::status(failure.problem);
        let mut a = self.answer(status, vec![]);
        match failure.problem {
            Problem::UnsupportedVersion => a.headers.push(("Tus-Version", VERSION.into())),
            Problem::OffsetMismatch { held, .. } => a
                .headers
                .push(("Upload-Offset", held.to_string().into_bytes())),
            _ => {}
        }
        if status < 500 {
            a.body = Some(format!("{}\n", failure.message).into_bytes());
            a.content_type = Some("text/plain; charset=utf-8");
        } else {
            // nginx's page: a fault's message is for the error_log only.
            a.body = None;
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Expiry, Stage};
    use crate::test_kit::*;
    use ngx_upload_engine::hashing::{Algorithm, Algorithms};

    fn settings() -> Settings {
        Settings {
            max_size: Some(1000),
            ..Settings::new("/files/")
        }
    }

    const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
    const STREAM: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

    fn refused(s: &Settings, h: &RequestHead<'_>) -> (Problem, Answer, String) {
        let tus = Tus { settings: s };
        match tus.plan(h) {
            Err(f) => (f.problem, tus.refuse(&f), f.message),
            Ok(plan) => panic!("planned {plan:?}"),
        }
    }

    /// Every refusal: the problem, the status, a message, and the headers every tus answer has.
    #[test]
    fn decision_table_of_refusals() {
        use Method::*;
        use Problem::*;
        let s = settings();
        #[allow(clippy::type_complexity)]
        let rows: &[(Method, &str, &[(&str, &str)], Problem, u16)] = &[
            // Version.
            (
                Post,
                "/files/",
                &[("Upload-Length", "5")],
                UnsupportedVersion,
                412,
            ),
            (
                Post,
                "/files/",
                &[("Tus-Resumable", "0.2.2"), ("Upload-Length", "5")],
                UnsupportedVersion,
                412,
            ),
            (
                Head,
                "/files/abc",
                &[("Tus-Resumable", "1.0")],
                UnsupportedVersion,
                412,
            ),
            (
                Patch,
                "/files/abc",
                &[TUS, ("Tus-Resumable", "0.2.2")],
                BadRequest,
                400,
            ),
            // Targets and methods.
            (Head, "/other/abc", &[TUS], NotFound, 404),
            (Head, "/files/a.b", &[TUS], NotFound, 404),
            (Head, "/files/abc/def", &[TUS], NotFound, 404),
            (Get, "/files/abc", &[TUS], MethodNotAllowed, 405),
            (
                Post,
                "/files/abc",
                &[TUS, ("Upload-Length", "5")],
                MethodNotAllowed,
                405,
            ),
            (Put, "/files/abc", &[TUS], MethodNotAllowed, 405),
            (
                Patch,
                "/files/",
                &[TUS, STREAM, ("Upload-Offset", "0")],
                MethodNotAllowed,
                405,
            ),
            (Head, "/files/", &[TUS], MethodNotAllowed, 405),
            (Delete, "/files/", &[TUS], MethodNotAllowed, 405),
            (
                Post,
                "/files/abc",
                &[TUS, ("X-HTTP-Method-Override", "FROB")],
                MethodNotAllowed,
                405,
            ),
            // Creation: lengths.
            (Post, "/files/", &[TUS], BadRequest, 400),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "-1")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "+5")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "5 ")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "0x10")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "1e3")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "5"), ("Upload-Length", "6")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "1001")],
                TooLarge,
                413,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "99999999999999999999999")],
                TooLarge,
                413,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Defer-Length", "0")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Defer-Length", "true")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Defer-Length", "1"), ("Upload-Length", "5")],
                BadRequest,
                400,
            ),
            // Creation: metadata.
            (
                Post,
                "/files/",
                &[
                    TUS,
                    ("Upload-Length", "5"),
                    ("Upload-Metadata", "a YQ==,a Yg=="),
                ],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[
                    TUS,
                    ("Upload-Length", "5"),
                    ("Upload-Metadata", "a YQ=="),
                    ("Upload-Metadata", "a Yg=="),
                ],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "5"), ("Upload-Metadata", "a !!!")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[
                    TUS,
                    ("Upload-Length", "5"),
                    ("Upload-Metadata", "a YQ== Yg=="),
                ],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Length", "5"), ("Upload-Metadata", "a YQ==,")],
                BadRequest,
                400,
            ),
            // Creation with upload: the body must fit.
            (
                Post,
                "/files/",
                &[TUS, STREAM, ("Upload-Length", "5"), ("Content-Length", "6")],
                PastLength { length: 5 },
                413,
            ),
            (
                Post,
                "/files/",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Defer-Length", "1"),
                    ("Content-Length", "1001"),
                ],
                TooLarge,
                413,
            ),
            (
                Post,
                "/files/",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Length", "5"),
                    ("Content-Length", "5"),
                    ("Upload-Checksum", "sha3 AAAA"),
                ],
                BadRequest,
                400,
            ),
            // Concatenation.
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "partial;x")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "final")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "final;")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "final; ")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "final;/files/a /files/../etc/b")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "final;/files/a /other/b")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "final;https://h/files/a?x")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "final;/files/a /files/%2e%2e")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[TUS, ("Upload-Concat", "final;//evil/files/a")],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[
                    TUS,
                    ("Upload-Concat", "final;/files/a"),
                    ("Upload-Length", "5"),
                ],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[
                    TUS,
                    ("Upload-Concat", "final;/files/a"),
                    ("Upload-Defer-Length", "1"),
                ],
                BadRequest,
                400,
            ),
            (
                Post,
                "/files/",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Concat", "final;/files/a"),
                    ("Content-Length", "3"),
                ],
                Forbidden,
                403,
            ),
            // PATCH.
            (
                Patch,
                "/files/abc",
                &[TUS, ("Upload-Offset", "0"), ("Content-Length", "3")],
                UnsupportedMediaType,
                415,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    ("Content-Type", "application/octet-stream"),
                    ("Upload-Offset", "0"),
                ],
                UnsupportedMediaType,
                415,
            ),
            (Patch, "/files/abc", &[TUS, STREAM], BadRequest, 400),
            (
                Patch,
                "/files/abc",
                &[TUS, STREAM, ("Upload-Offset", "-1")],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[TUS, STREAM, ("Upload-Offset", "abc")],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[TUS, STREAM, ("Upload-Offset", "99999999999999999999999")],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[TUS, STREAM, ("Upload-Offset", "1"), ("Upload-Offset", "2")],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Offset", "0"),
                    ("Upload-Length", "1001"),
                ],
                TooLarge,
                413,
            ),
            (
                Patch,
                "/files/abc",
                &[TUS, STREAM, ("Upload-Offset", "10"), ("Upload-Length", "5")],
                TotalMismatch,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[TUS, STREAM, ("Upload-Offset", "0"), ("Upload-Length", "x")],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Offset", "999"),
                    ("Content-Length", "2"),
                ],
                TooLarge,
                413,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Offset", "2"),
                    ("Upload-Length", "3"),
                    ("Content-Length", "2"),
                ],
                PastLength { length: 3 },
                413,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Offset", "0"),
                    ("Upload-Checksum", "sha3 AAAA"),
                ],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Offset", "0"),
                    ("Upload-Checksum", "sha1 !!!"),
                ],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Offset", "0"),
                    ("Upload-Checksum", "sha1"),
                ],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Offset", "0"),
                    ("Upload-Checksum", "md5 AAAA"),
                ],
                BadRequest,
                400,
            ),
            (
                Patch,
                "/files/abc",
                &[
                    TUS,
                    STREAM,
                    ("Upload-Offset", "0"),
                    ("Upload-Concat", "final;/files/a"),
                ],
                BadRequest,
                400,
            ),
        ];
        for (i, (method, uri, headers, want, status)) in rows.iter().enumerate() {
            let (got, a, message) = refused(&s, &head(*method, uri, headers));
            assert_eq!(got, *want, "row {i}: {message}");
            assert_eq!(a.status, *status, "row {i}");
            assert!(!message.is_empty(), "row {i} has no message");
            assert_eq!(value(&a, "tus-resumable"), Some("1.0.0"), "row {i}");
            assert_eq!(a.body, Some(format!("{message}\n").into_bytes()), "row {i}");
            assert_eq!(a.content_type, Some("text/plain; charset=utf-8"));
            if *want == UnsupportedVersion {
                assert_eq!(value(&a, "tus-version"), Some("1.0.0"), "row {i}");
            } else {
                assert_eq!(value(&a, "tus-version"), None, "row {i}");
            }
        }
    }

    #[test]
    fn refusals_the_glue_reports() {
        let s = settings();
        let tus = Tus { settings: &s };
        let cases = [
            (Problem::OffsetMismatch { held: 7, sent: 3 }, 409),
            (Problem::ChecksumMismatch, 460),
            (Problem::Gone, 410),
            (Problem::NotFound, 404),
            (Problem::Forbidden, 403),
            (Problem::PastLength { length: 9 }, 413),
            (Problem::TotalMismatch, 400),
            (Problem::InFlight, 423),
            (Problem::HandOffBusy, 423),
            (Problem::StorageFull, 507),
            (Problem::Internal, 500),
            (Problem::Timeout, 408),
        ];
        for (problem, status) in cases {
            let a = tus.refuse(&Failure::new(problem, "why"));
            assert_eq!(a.status, status, "{problem:?}");
            assert_eq!(value(&a, "tus-resumable"), Some("1.0.0"));
            if status >= 500 {
                assert_eq!(a.body, None, "{problem:?}: faults get nginx's page");
            } else {
                assert_eq!(a.body.as_deref(), Some(&b"why\n"[..]));
            }
        }
        let a = tus.refuse(&Failure::new(
            Problem::OffsetMismatch { held: 7, sent: 3 },
            "x",
        ));
        assert_eq!(value(&a, "upload-offset"), Some("7"));
    }

    #[test]
    fn options_discovers_the_server() {
        let s = Settings {
            expire_after: Some(3600),
            ..settings()
        };
        let tus = Tus { settings: &s };
        // OPTIONS needs no Tus-Resumable and ignores a wrong one.
        for h in [
            head(Method::Options, "/files/", &[]),
            head(Method::Options, "/files/abc", &[("Tus-Resumable", "0.1")]),
            head(
                Method::Post,
                "/files/",
                &[("X-HTTP-Method-Override", "OPTIONS")],
            ),
        ] {
            let Ok(Plan::Answer(a)) = tus.plan(&h) else {
                panic!("OPTIONS is answered at once");
            };
            assert_eq!(a.status, 200);
            assert_eq!(a.body.as_deref(), Some(&b""[..]));
            assert_eq!(value(&a, "tus-version"), Some("1.0.0"));
            assert_eq!(
                value(&a, "tus-extension"),
                Some(
                    "creation,creation-with-upload,creation-defer-length,expiration,checksum,\
                     termination,concatenation,concatenation-unfinished"
                )
            );
            assert_eq!(value(&a, "tus-max-size"), Some("1000"));
            assert_eq!(
                value(&a, "tus-checksum-algorithm"),
                Some("md5,sha1,sha256,crc32")
            );
            assert_eq!(value(&a, "tus-resumable"), None);
            assert_eq!(value(&a, "access-control-allow-origin"), None);
        }
        // Without limits, expiry and checksums, the headers say so.
        let bare = Settings {
            checksums: Algorithms::NONE,
            ..Settings::new("/files/")
        };
        let Ok(Plan::Answer(a)) =
            Tus { settings: &bare }.plan(&head(Method::Options, "/files/", &[]))
        else {
            panic!()
        };
        assert_eq!(
            value(&a, "tus-extension"),
            Some(
                "creation,creation-with-upload,creation-defer-length,termination,concatenation,\
                 concatenation-unfinished"
            )
        );
        assert_eq!(value(&a, "tus-max-size"), None);
        assert_eq!(value(&a, "tus-checksum-algorithm"), None);
    }

    #[test]
    fn cors_headers_and_preflight() {
        let s = Settings {
            cors_origin: Some(b"https://app.example".to_vec()),
            ..settings()
        };
        let tus = Tus { settings: &s };
        let pre = head(
            Method::Options,
            "/files/",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "PATCH"),
                (
                    "Access-Control-Request-Headers",
                    "upload-offset,tus-resumable",
                ),
            ],
        );
        let Ok(Plan::Answer(a)) = tus.plan(&pre) else {
            panic!()
        };
        assert_eq!(a.status, 200);
        assert_eq!(
            value(&a, "access-control-allow-origin"),
            Some("https://app.example")
        );
        assert!(value(&a, "access-control-allow-methods")
            .unwrap()
            .contains("PATCH"));
        assert!(value(&a, "access-control-allow-headers")
            .unwrap()
            .contains("Upload-Offset"));
        assert_eq!(value(&a, "access-control-max-age"), Some("86400"));
        assert_eq!(value(&a, "tus-version"), Some("1.0.0"));
        // Every other answer exposes the protocol's headers.
        let upload_id = id("abc");
        let h = held(&upload_id, 1, Some(5), Stage::Receiving);
        for a in [
            answer(tus.reply(&Outcome::Inspected {
                upload: h,
                hands_off: false,
            })),
            answer(tus.reply(&Outcome::Terminated)),
            tus.refuse(&Failure::new(Problem::NotFound, "x")),
        ] {
            assert_eq!(
                value(&a, "access-control-allow-origin"),
                Some("https://app.example")
            );
            let exposed = value(&a, "access-control-expose-headers").unwrap();
            assert!(exposed.contains("Upload-Offset") && exposed.contains("Location"));
        }
        let Reply::HandOffWith { headers, .. } = tus.reply(&Outcome::Appended {
            upload: held(&upload_id, 5, Some(5), Stage::Stored),
            hands_off: true,
        }) else {
            panic!()
        };
        assert!(headers
            .iter()
            .any(|(n, _)| *n == "Access-Control-Expose-Headers"));
    }

    #[test]
    fn creation_plans() {
        let s = settings();
        let tus = Tus { settings: &s };
        // Known length, metadata as tuspy (empty header) and tus-js-client ("key ") send it.
        for (meta, want) in [
            ("", vec![]),
            (
                "filename bXkucGRm,filetype YXBwbGljYXRpb24vcGRm,empty ",
                vec![
                    (b"filename".to_vec(), b"my.pdf".to_vec()),
                    (b"filetype".to_vec(), b"application/pdf".to_vec()),
                    (b"empty".to_vec(), vec![]),
                ],
            ),
        ] {
            let h = head(
                Method::Post,
                "/files",
                &[
                    TUS,
                    ("Upload-Length", "100"),
                    ("Upload-Metadata", meta),
                    ("Content-Length", "0"),
                ],
            );
            let Ok(Plan::Create(c)) = tus.plan(&h) else {
                panic!("not a creation")
            };
            assert_eq!(c.length, Some(100));
            assert_eq!(c.max_size, 1000);
            assert_eq!(c.completion, Completion::AtLength);
            assert!(!c.partial && c.then_write.is_none() && c.interim.is_none());
            assert_eq!(c.metadata, want);
            if !want.is_empty() {
                assert_eq!(c.file.file_name, b"my.pdf");
                assert_eq!(c.file.content_type, b"application/pdf");
            }
        }
        // Deferred length, partial.
        let h = head(
            Method::Post,
            "/files/",
            &[
                TUS,
                ("Upload-Defer-Length", "1"),
                ("Upload-Concat", "partial"),
            ],
        );
        let Ok(Plan::Create(c)) = tus.plan(&h) else {
            panic!()
        };
        assert_eq!((c.length, c.partial), (None, true));
        // Creation with upload, checksum of the body included; a body of another type is
        // dropped (some clients send a default Content-Type).
        let h = head(
            Method::Post,
            "/files/",
            &[
                TUS,
                STREAM,
                ("Upload-Length", "11"),
                ("Content-Length", "11"),
                ("Upload-Checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            ],
        );
        let Ok(Plan::Create(c)) = tus.plan(&h) else {
            panic!()
        };
        let w = c.then_write.unwrap();
        assert!(!w.finish);
        assert_eq!(w.checksum.unwrap().algorithm, Algorithm::Sha1);
        let h = head(
            Method::Post,
            "/files/",
            &[
                TUS,
                ("Content-Type", "text/plain"),
                ("Upload-Length", "3"),
                ("Content-Length", "3"),
            ],
        );
        let Ok(Plan::Create(c)) = tus.plan(&h) else {
            panic!()
        };
        assert!(c.then_write.is_none());
        // Chunked creation-with-upload, zero length, the maximum itself.
        for (len, extra) in [
            ("0", ("Content-Length", "0")),
            ("1000", ("Transfer-Encoding", "chunked")),
        ] {
            let h = head(
                Method::Post,
                "/files/",
                &[TUS, STREAM, ("Upload-Length", len), extra],
            );
            let Ok(Plan::Create(c)) = tus.plan(&h) else {
                panic!()
            };
            assert_eq!(c.then_write.is_some(), extra.0 != "Content-Length");
        }
    }

    #[test]
    fn concatenation_plans() {
        let s = settings();
        let tus = Tus { settings: &s };
        let h = head(
            Method::Post,
            "/files/",
            &[
                TUS,
                (
                    "Upload-Concat",
                    "final;https://tus.example.org/files/a /files/b  c /files/a",
                ),
                ("Upload-Metadata", "filename YS50eHQ="),
            ],
        );
        let Ok(Plan::Concatenate(c)) = tus.plan(&h) else {
            panic!("not a concatenation")
        };
        let parts: Vec<&str> = c.parts.iter().map(SessionId::as_str).collect();
        assert_eq!(parts, ["a", "b", "c", "a"]);
        assert!(c.unfinished_ok);
        assert_eq!(c.max_size, 1000);
        assert_eq!(c.file.file_name, b"a.txt");
        // Too many parts.
        let many = format!("final;{}", vec!["/files/p"; MAX_PARTS + 1].join(" "));
        let h = head(Method::Post, "/files/", &[TUS, ("Upload-Concat", &many)]);
        assert_eq!(refused(&s, &h).0, Problem::BadRequest);
    }

    #[test]
    fn append_plans() {
        let s = settings();
        let tus = Tus { settings: &s };
        let h = head(
            Method::Patch,
            "/files/abc",
            &[
                TUS,
                ("Content-Type", "application/offset+octet-stream; charset=x"),
                ("Upload-Offset", "70"),
                ("Content-Length", "30"),
                ("Upload-Length", "100"),
                ("Upload-Checksum", "crc32 DUoRhQ=="),
                ("Upload-Concat", "partial"),
            ],
        );
        let Ok(Plan::Append {
            id: upload,
            offset,
            declare_length,
            checksum,
            finish,
        }) = tus.plan(&h)
        else {
            panic!("not an append")
        };
        assert_eq!(upload.as_str(), "abc");
        assert_eq!((offset, declare_length, finish), (70, Some(100), false));
        assert_eq!(checksum.unwrap().digest, [0x0d, 0x4a, 0x11, 0x85]);
        // X-HTTP-Method-Override turns a POST into the PATCH (tus-js-client's
        // overridePatchMethod); an empty PATCH is fine.
        let h = head(
            Method::Post,
            "/files/abc",
            &[
                TUS,
                STREAM,
                ("X-HTTP-Method-Override", "PATCH"),
                ("Upload-Offset", "0"),
                ("Content-Length", "0"),
            ],
        );
        assert!(matches!(tus.plan(&h), Ok(Plan::Append { offset: 0, .. })));
    }

    #[test]
    fn head_delete_and_override() {
        let s = settings();
        let tus = Tus { settings: &s };
        let h = head(Method::Head, "/files/abc", &[TUS]);
        assert_eq!(
            tus.plan(&h),
            Ok(Plan::Inspect {
                id: id("abc"),
                retry_hand_off: true
            })
        );
        // tus-js-client sends Upload-Concat: partial on HEAD of a partial upload, too.
        let h = head(
            Method::Head,
            "/files/abc",
            &[TUS, ("Upload-Concat", "partial")],
        );
        assert!(matches!(tus.plan(&h), Ok(Plan::Inspect { .. })));
        let h = head(Method::Delete, "/files/abc", &[TUS]);
        assert_eq!(tus.plan(&h), Ok(Plan::Terminate { id: id("abc") }));
        let h = head(
            Method::Post,
            "/files/abc",
            &[TUS, ("X-HTTP-Method-Override", "DELETE")],
        );
        assert_eq!(tus.plan(&h), Ok(Plan::Terminate { id: id("abc") }));
    }

    #[test]
    fn creation_answers() {
        let s = settings();
        let tus = Tus { settings: &s };
        let upload_id = id("24e533e0");
        let expires = Some(Expiry {
            at: 1_403_712_000,
            now: 1_403_708_400,
        });
        // An empty creation.
        let a = answer(tus.reply(&Outcome::Created {
            upload: Held {
                expires,
                ..held(&upload_id, 0, Some(100), Stage::Receiving)
            },
            hands_off: false,
        }));
        assert_eq!(a.status, 201);
        assert_eq!(value(&a, "location"), Some("/files/24e533e0"));
        assert_eq!(value(&a, "upload-offset"), Some("0"));
        assert_eq!(value(&a, "tus-resumable"), Some("1.0.0"));
        assert_eq!(
            value(&a, "upload-expires"),
            Some("Wed, 25 Jun 2014 16:00:00 GMT")
        );
        assert_eq!(a.body.as_deref(), Some(&b""[..]));
        // Creation with upload that did not complete it.
        let a = answer(tus.reply(&Outcome::Created {
            upload: held(&upload_id, 5, Some(100), Stage::Receiving),
            hands_off: false,
        }));
        assert_eq!(
            (
                a.status,
                value(&a, "upload-offset"),
                value(&a, "upload-expires")
            ),
            (201, Some("5"), None)
        );
        // A zero-length upload (or one the body completed) is handed off at once; the client
        // learns its Location only if the backend took it.
        let reply = tus.reply(&Outcome::Created {
            upload: held(&upload_id, 0, Some(0), Stage::Stored),
            hands_off: true,
        });
        assert_eq!(
            reply,
            Reply::HandOffWith {
                headers: vec![("Tus-Resumable", b"1.0.0".to_vec())],
                on_success: vec![
                    ("Location", b"/files/24e533e0".to_vec()),
                    ("Upload-Offset", b"0".to_vec())
                ],
            }
        );
        // A complete partial upload is never handed off: 201.
        let a = answer(tus.reply(&Outcome::Created {
            upload: Held {
                concat: Concat::Partial,
                ..held(&upload_id, 0, Some(0), Stage::Stored)
            },
            hands_off: false,
        }));
        assert_eq!((a.status, value(&a, "upload-offset")), (201, Some("0")));
        // A complete upload this request does not hand off (the glue lost the claim) is not
        // reported complete.
        let a = answer(tus.reply(&Outcome::Created {
            upload: held(&upload_id, 5, Some(5), Stage::HandingOff),
            hands_off: false,
        }));
        assert_eq!((a.status, value(&a, "upload-offset")), (423, None));
        // A final upload: handed off when assembled, else 201 without an offset.
        let parts = [id("a"), id("b")];
        let fin = Held {
            concat: Concat::Final(&parts),
            ..held(&upload_id, 0, Some(11), Stage::Receiving)
        };
        let a = answer(tus.reply(&Outcome::Created {
            upload: fin,
            hands_off: false,
        }));
        assert_eq!((a.status, value(&a, "upload-offset")), (201, None));
        assert_eq!(value(&a, "location"), Some("/files/24e533e0"));
        let reply = tus.reply(&Outcome::Created {
            upload: Held {
                stage: Stage::Stored,
                offset: 11,
                ..fin
            },
            hands_off: true,
        });
        let Reply::HandOffWith { on_success, .. } = reply else {
            panic!()
        };
        assert_eq!(on_success, vec![("Location", b"/files/24e533e0".to_vec())]);
    }

    #[test]
    fn patch_answers() {
        let s = settings();
        let tus = Tus { settings: &s };
        let upload_id = id("abc");
        let expires = Some(Expiry { at: 0, now: 0 });
        let a = answer(tus.reply(&Outcome::Appended {
            upload: Held {
                expires,
                ..held(&upload_id, 100, None, Stage::Receiving)
            },
            hands_off: false,
        }));
        assert_eq!(a.status, 204);
        assert_eq!(value(&a, "upload-offset"), Some("100"));
        assert_eq!(
            value(&a, "upload-expires"),
            Some("Thu, 01 Jan 1970 00:00:00 GMT")
        );
        assert_eq!(value(&a, "tus-resumable"), Some("1.0.0"));
        // The completing PATCH is the hand-off; Upload-Offset only on a 2xx answer.
        assert_eq!(
            tus.reply(&Outcome::Appended {
                upload: held(&upload_id, 100, Some(100), Stage::Stored),
                hands_off: true,
            }),
            Reply::HandOffWith {
                headers: vec![("Tus-Resumable", b"1.0.0".to_vec())],
                on_success: vec![("Upload-Offset", b"100".to_vec())],
            }
        );
        // A complete partial upload reports its offset.
        let a = answer(tus.reply(&Outcome::Appended {
            upload: Held {
                concat: Concat::Partial,
                ..held(&upload_id, 5, Some(5), Stage::Stored)
            },
            hands_off: false,
        }));
        assert_eq!((a.status, value(&a, "upload-offset")), (204, Some("5")));
        // An empty PATCH on an upload handed off already is a no-op; it never hands off again.
        let a = answer(tus.reply(&Outcome::Appended {
            upload: held(&upload_id, 5, Some(5), Stage::HandedOff { status: 200 }),
            hands_off: false,
        }));
        assert_eq!((a.status, value(&a, "upload-offset")), (204, Some("5")));
        // Complete but not taken: never "complete" to the client.
        for (stage, status) in [
            (Stage::HandingOff, 423),
            (Stage::Stored, 423),
            (Stage::HandedOff { status: 422 }, 410),
        ] {
            let a = answer(tus.reply(&Outcome::Appended {
                upload: held(&upload_id, 5, Some(5), stage),
                hands_off: false,
            }));
            assert_eq!(a.status, status, "{stage:?}");
            assert_eq!(value(&a, "upload-offset"), None, "{stage:?}");
            assert!(!a.body.as_deref().unwrap().is_empty());
        }
    }

    #[test]
    fn head_answers() {
        let s = settings();
        let tus = Tus { settings: &s };
        let upload_id = id("abc");
        let meta = vec![(b"filename".to_vec(), b"a.txt".to_vec())];
        let open = Held {
            metadata: &meta,
            expires: Some(Expiry {
                at: 1_403_712_000,
                now: 1,
            }),
            ..held(&upload_id, 70, Some(100), Stage::Receiving)
        };
        let a = answer(tus.reply(&Outcome::Inspected {
            upload: open,
            hands_off: false,
        }));
        assert_eq!(a.status, 200);
        assert_eq!(value(&a, "upload-offset"), Some("70"));
        assert_eq!(value(&a, "upload-length"), Some("100"));
        assert_eq!(value(&a, "upload-defer-length"), None);
        assert_eq!(value(&a, "upload-metadata"), Some("filename YS50eHQ="));
        assert_eq!(value(&a, "cache-control"), Some("no-store"));
        assert_eq!(value(&a, "tus-resumable"), Some("1.0.0"));
        assert_eq!(
            value(&a, "upload-expires"),
            Some("Wed, 25 Jun 2014 16:00:00 GMT")
        );
        assert_eq!(value(&a, "upload-concat"), None);
        // Offset 0 and a deferred length are said too.
        let a = answer(tus.reply(&Outcome::Inspected {
            upload: held(&upload_id, 0, None, Stage::Receiving),
            hands_off: false,
        }));
        assert_eq!(value(&a, "upload-offset"), Some("0"));
        assert_eq!(value(&a, "upload-defer-length"), Some("1"));
        assert_eq!(value(&a, "upload-length"), None);
        assert_eq!(value(&a, "upload-metadata"), None);
        // Complete and taken by the backend: offset = length.
        let a = answer(tus.reply(&Outcome::Inspected {
            upload: held(&upload_id, 100, Some(100), Stage::HandedOff { status: 201 }),
            hands_off: false,
        }));
        assert_eq!(
            (
                a.status,
                value(&a, "upload-offset"),
                value(&a, "upload-length")
            ),
            (200, Some("100"), Some("100"))
        );
        // Complete, its hand-off failed before: this HEAD hands it off again, and only a 2xx
        // answer tells the offset.
        let Reply::HandOffWith {
            headers,
            on_success,
        } = tus.reply(&Outcome::Inspected {
            upload: held(&upload_id, 100, Some(100), Stage::Stored),
            hands_off: true,
        })
        else {
            panic!()
        };
        assert!(headers.contains(&("Cache-Control", b"no-store".to_vec())));
        assert!(headers.contains(&("Tus-Resumable", b"1.0.0".to_vec())));
        assert!(!headers.iter().any(|(n, _)| *n == "Upload-Offset"));
        assert!(on_success.contains(&("Upload-Offset", b"100".to_vec())));
        assert!(on_success.contains(&("Upload-Length", b"100".to_vec())));
        // Being handed off elsewhere, or refused: not complete.
        for (stage, status) in [
            (Stage::HandingOff, 423),
            (Stage::Stored, 423),
            (Stage::HandedOff { status: 400 }, 410),
        ] {
            let a = answer(tus.reply(&Outcome::Inspected {
                upload: held(&upload_id, 100, Some(100), stage),
                hands_off: false,
            }));
            assert_eq!(a.status, status);
            assert_eq!(value(&a, "upload-offset"), None);
            assert_eq!(value(&a, "cache-control"), Some("no-store"));
        }
    }

    #[test]
    fn head_answers_of_concatenation() {
        let s = settings();
        let tus = Tus { settings: &s };
        let upload_id = id("ab");
        let partial = Held {
            concat: Concat::Partial,
            ..held(&upload_id, 5, Some(5), Stage::Stored)
        };
        let a = answer(tus.reply(&Outcome::Inspected {
            upload: partial,
            hands_off: false,
        }));
        assert_eq!(value(&a, "upload-concat"), Some("partial"));
        assert_eq!(value(&a, "upload-offset"), Some("5"));
        let parts = [id("a"), id("b")];
        let fin = Held {
            concat: Concat::Final(&parts),
            ..held(&upload_id, 0, Some(11), Stage::Receiving)
        };
        let a = answer(tus.reply(&Outcome::Inspected {
            upload: fin,
            hands_off: false,
        }));
        assert_eq!(value(&a, "upload-concat"), Some("final;/files/a /files/b"));
        assert_eq!(value(&a, "upload-offset"), None, "not assembled yet");
        assert_eq!(value(&a, "upload-length"), Some("11"));
        // The parts' lengths not all known: no length, and no Upload-Defer-Length either.
        let a = answer(tus.reply(&Outcome::Inspected {
            upload: Held {
                length: None,
                ..fin
            },
            hands_off: false,
        }));
        assert_eq!(value(&a, "upload-length"), None);
        assert_eq!(value(&a, "upload-defer-length"), None);
        // Assembled and taken: offset = length.
        let a = answer(tus.reply(&Outcome::Inspected {
            upload: Held {
                offset: 11,
                stage: Stage::HandedOff { status: 200 },
                ..fin
            },
            hands_off: false,
        }));
        assert_eq!(
            (value(&a, "upload-offset"), value(&a, "upload-length")),
            (Some("11"), Some("11"))
        );
    }

    /// concatenation-unfinished: the final upload's answers while its parts are written, and
    /// the PATCH that completes its last part.
    #[test]
    fn decision_table_of_a_final_upload_awaiting_its_parts() {
        let s = Settings {
            expire_after: Some(60),
            ..settings()
        };
        let tus = Tus { settings: &s };
        let (fin_id, part_id) = (id("fin"), id("part"));
        let parts = [id("a"), part_id.clone()];
        let expires = Some(Expiry {
            at: 1_000_000,
            now: 999_940,
        });
        let awaiting = Held {
            concat: Concat::Final(&parts),
            expires,
            ..held(&fin_id, 0, None, Stage::Receiving)
        };
        // The final POST: 201, Location, Upload-Expires, no offset, no hand-off.
        let a = answer(tus.reply(&Outcome::Created {
            upload: awaiting,
            hands_off: false,
        }));
        assert_eq!(a.status, 201);
        assert_eq!(value(&a, "location"), Some("/files/fin"));
        assert_eq!(value(&a, "upload-offset"), None);
        assert!(value(&a, "upload-expires").is_some());
        assert_eq!(value(&a, "tus-resumable"), Some("1.0.0"));
        // HEAD while awaiting: Upload-Concat as sent, a length only once computable, never an
        // offset, not cached.
        #[rustfmt::skip]
        let rows: &[(Option<u64>, Option<&str>)] = &[
            (None, None),
            (Some(30), Some("30")),
        ];
        for (length, said) in rows {
            let a = answer(tus.reply(&Outcome::Inspected {
                upload: Held {
                    length: *length,
                    ..awaiting
                },
                hands_off: false,
            }));
            assert_eq!(a.status, 200);
            assert_eq!(
                value(&a, "upload-concat"),
                Some("final;/files/a /files/part")
            );
            assert_eq!(value(&a, "upload-length"), *said);
            assert_eq!(value(&a, "upload-offset"), None);
            assert_eq!(value(&a, "upload-defer-length"), None);
            assert_eq!(value(&a, "cache-control"), Some("no-store"));
        }
        // The PATCH completing the last part hands the final off: the part's offset on the
        // backend's 2xx only.
        let part = Held {
            concat: Concat::Partial,
            ..held(&part_id, 20, Some(20), Stage::Stored)
        };
        let Reply::HandOffWith {
            headers,
            on_success,
        } = tus.reply(&Outcome::Appended {
            upload: part,
            hands_off: true,
        })
        else {
            panic!("not a hand-off")
        };
        assert!(headers.contains(&("Tus-Resumable", b"1.0.0".to_vec())));
        assert_eq!(on_success, vec![("Upload-Offset", b"20".to_vec())]);
        // A PATCH completing a part no final is ready for: 204 with its offset.
        let a = answer(tus.reply(&Outcome::Appended {
            upload: part,
            hands_off: false,
        }));
        assert_eq!((a.status, value(&a, "upload-offset")), (204, Some("20")));
        // A HEAD that assembled the final and hands it off: its offset and length on a 2xx.
        let Reply::HandOffWith { on_success, .. } = tus.reply(&Outcome::Inspected {
            upload: Held {
                offset: 30,
                length: Some(30),
                stage: Stage::Stored,
                ..awaiting
            },
            hands_off: true,
        }) else {
            panic!("not a hand-off")
        };
        assert!(on_success.contains(&("Upload-Offset", b"30".to_vec())));
        assert!(on_success.contains(&("Upload-Length", b"30".to_vec())));
        // A final whose part is gone can never complete: 410, with why.
        let f = Failure::new(Problem::Gone, "part 2 was terminated");
        let a = tus.refuse(&f);
        assert_eq!(a.status, 410);
        assert!(String::from_utf8_lossy(a.body.as_deref().unwrap()).contains("part 2"));
    }

    #[test]
    fn termination_and_foreign_outcomes() {
        let s = settings();
        let tus = Tus { settings: &s };
        let a = answer(tus.reply(&Outcome::Terminated));
        assert_eq!(a.status, 204);
        assert_eq!(value(&a, "tus-resumable"), Some("1.0.0"));
        let state = ngx_upload_engine::state::SessionState::new(1);
        let a = answer(tus.reply(&Outcome::Progress(&state)));
        assert_eq!(a.status, 500);
    }

    #[test]
    fn checksum_extension_follows_the_settings() {
        let s = Settings {
            checksums: Algorithms::SHA1,
            ..settings()
        };
        let tus = Tus { settings: &s };
        let h = head(
            Method::Patch,
            "/files/abc",
            &[
                TUS,
                STREAM,
                ("Upload-Offset", "0"),
                ("Upload-Checksum", "md5 XrY7u+Ae7tCTyyK7j1rNww=="),
            ],
        );
        let f = tus.plan(&h).unwrap_err();
        assert_eq!(f.problem, Problem::BadRequest);
        assert!(f.message.contains("sha1"), "{}", f.message);
    }
}
