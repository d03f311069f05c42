//! The `multipart/form-data` adapter (RFC 1867 browser forms): each file part streams into its
//! own numbered file in `upload_store` and is replaced in the hand-off form by its
//! `upload_set_form_field` / `upload_aggregate_form_field` fields; ordinary fields matching
//! `upload_pass_form_field` are passed on, all others dropped.
//!
//! With `upload_resumable on`, a file part carrying `Content-Range` and a session id (its own
//! `Session-ID` header, or the request's) is a segment of a resumable session, as in
//! nginx-upload-module: its bytes go to the session's file at the range's offset, and the
//! request answers like a raw segment (`201` with the ranges held, or the hand-off once the
//! file is complete, its fields after the form's other fields).

use std::collections::VecDeque;
use std::fs::File;
use std::io::IoSlice;
use std::path::PathBuf;

use ngx_upload_engine::content_range::ContentRange;
use ngx_upload_engine::hash_state::HashProgress;
use ngx_upload_engine::session::Session;

use ngx_upload_engine::form::{tame_array_name, FormBody};
use ngx_upload_engine::hashing::{Algorithms, Digests, MultiHasher};
use ngx_upload_engine::multipart::{
    Ending, Limits, MultipartError, MultipartParser, PartAction, PartHeaders, PartSink,
};
use ngx_upload_engine::session::write_all_at;
use ngx_upload_engine::store;

use ngx_upload_protocol::nginx_upload::{parse_part_range, parse_session_id};
use ngx_upload_protocol::{Failure, Problem};

use crate::conf::UploadConf;

/// A file part that has been stored completely: what the field templates describe.
pub struct StoredFile {
    pub field_name: Vec<u8>,
    pub file_name: Vec<u8>,
    pub content_type: Vec<u8>,
    pub path: PathBuf,
    pub size: u64,
    pub number: u32,
    pub digests: Option<Digests>,
}

/// What a finished part contributes to the hand-off form, in body order.
pub enum Finished {
    File(Box<StoredFile>),
    Field { name: Vec<u8>, value: Vec<u8> },
}

enum Current {
    None,
    File {
        file: File,
        stored: Box<StoredFile>,
        hasher: Option<Box<MultiHasher>>,
    },
    Field {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// A dropped field, or a file over `upload_max_file_size` (already removed).
    Skipped,
    /// The part being received is the request's resumable segment ([`FormUpload::segment`]).
    Segment,
}

/// A file part that is a segment of a resumable session.
pub struct SegmentPart {
    pub session: Session,
    pub range: ContentRange,
    /// Bytes of the part written so far.
    pub written: u64,
    /// Hashes carried on as the bytes stream by, when the part continues the hashed prefix.
    pub stream_hash: Option<HashProgress>,
    pub field_name: Vec<u8>,
    pub file_name: Vec<u8>,
    pub content_type: Vec<u8>,
    /// The part ended with all the bytes of its range.
    pub complete: bool,
}

pub struct FormUpload {
    parser: Option<MultipartParser>,
    pub form: FormBody,
    /// Every file this request stored, for `upload_cleanup` and for an aborted request.
    pub files: Vec<PathBuf>,
    current: Current,
    finished: VecDeque<Finished>,
    files_started: u32,
    max_file_size: Option<u64>,
    max_output_len: Option<usize>,
    tame_arrays: bool,
    hashes: Algorithms,
    conf: &'static UploadConf,
    log: *mut ngx::ffi::ngx_log_t,
    /// The request's own session id header, for segment parts without one.
    request_session_id: Option<Vec<u8>>,
    /// The request's resumable segment, if one of its parts is one (at most one is).
    pub segment: Option<Box<SegmentPart>>,
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure::bad_request(message)
}

impl FormUpload {
    pub fn new(
        conf: &'static UploadConf,
        content_type: &[u8],
        log: *mut ngx::ffi::ngx_log_t,
        unique: &str,
        request_session_id: Option<&[u8]>,
    ) -> Result<Self, Failure> {
        let boundary = ngx_upload_engine::multipart::boundary_from_content_type(content_type)
            .map_err(|e| {
                bad_request(format!(
                    "Content-Type \"{}\": {e}",
                    String::from_utf8_lossy(content_type)
                ))
            })?;
        let limits = Limits {
            max_part_header_len: conf.max_part_header_len,
            ..Limits::default()
        };
        let parser = MultipartParser::new(&boundary, limits)
            .map_err(|e| bad_request(format!("multipart boundary: {e}")))?;
        Ok(Self {
            parser: Some(parser),
            form: FormBody::new(unique),
            files: Vec::new(),
            current: Current::None,
            finished: VecDeque::new(),
            files_started: 0,
            max_file_size: u64::try_from(conf.max_file_size).ok().filter(|m| *m > 0),
            max_output_len: Some(conf.max_output_body_len).filter(|m| *m > 0),
            tame_arrays: conf.tame_arrays == 1,
            hashes: conf.hash_algorithms(),
            conf,
            log,
            request_session_id: request_session_id.map(<[u8]>::to_vec),
            segment: None,
        })
    }

    /// Starts the part with `headers` as the request's resumable segment, if it is one: a file
    /// part with a `Content-Range`, in a resumable location.
    fn start_segment(
        &mut self,
        headers: &PartHeaders,
        field_name: &[u8],
        file_name: &[u8],
    ) -> Result<bool, Failure> {
        let range = headers
            .header(b"X-Content-Range")
            .or_else(|| headers.header(b"Content-Range"));
        let (Some(range_header), true) = (range, self.conf.resumable()) else {
            return Ok(false);
        };
        let range = parse_part_range(range_header)?;
        if self.segment.is_some() {
            return Err(bad_request(
                "a request carries one resumable segment; this one has a second part with a \
                 Content-Range"
                    .to_string(),
            ));
        }
        let id = headers
            .header(b"X-Session-ID")
            .or_else(|| headers.header(b"Session-ID"))
            .or(self.request_session_id.as_deref())
            .ok_or_else(|| {
                bad_request("a part with a Content-Range needs a session id".to_string())
            })?;
        let id = parse_session_id(id).map_err(|f| bad_request(format!("part {}", f.message)))?;
        if self.max_file_size.is_some_and(|max| range.total > max) {
            return Err(Failure::new(
                Problem::TooLarge,
                format!(
                    "file of {} bytes is larger than upload_max_file_size",
                    range.total
                ),
            ));
        }
        let session = self
            .conf
            .sessions()
            .open(&id, &range)
            .map_err(|e| Failure::from(e).context(format!("session \"{id}\"")))?;
        let stream_hash = session.streaming_hash(&range, self.hashes);
        self.segment = Some(Box::new(SegmentPart {
            session,
            range,
            written: 0,
            stream_hash,
            field_name: field_name.to_vec(),
            file_name: file_name.to_vec(),
            content_type: headers.content_type().unwrap_or_default().to_vec(),
            complete: false,
        }));
        self.current = Current::Segment;
        Ok(true)
    }

    /// Parses body bytes; finished parts are queued for [`Self::take_finished`].
    pub fn feed(&mut self, bufs: &[IoSlice<'_>]) -> Result<(), Failure> {
        let Some(mut parser) = self.parser.take() else {
            return Err(into_failure(MultipartError::Failed));
        };
        let mut result = Ok(());
        for buf in bufs {
            result = parser.feed(buf, self).map_err(into_failure);
            if result.is_err() {
                break;
            }
        }
        self.parser = Some(parser);
        result
    }

    /// The body has ended: it must have ended with the closing delimiter, or right after a
    /// delimiter line (every part ended; nginx-upload-module takes that form too), which is
    /// logged at `info`.
    pub fn finish(&mut self) -> Result<(), Failure> {
        let Some(mut parser) = self.parser.take() else {
            return Err(into_failure(MultipartError::Failed));
        };
        let result = parser.finish(self).map_err(into_failure);
        self.parser = Some(parser);
        if result? == Ending::Unclosed {
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_INFO,
                self.log,
                "upload: multipart body ends after a delimiter line without the closing \
                 delimiter; its parts are taken"
            );
        }
        Ok(())
    }

    /// Queues the complete session's file of this request's segment part to be described in
    /// the form like any file part, with the whole file's `digests`.
    pub fn describe_segment(&mut self, digests: Option<Digests>) {
        if let Some(seg) = self.segment.as_deref() {
            self.finished.push_back(Finished::File(Box::new(StoredFile {
                field_name: seg.field_name.clone(),
                file_name: seg.file_name.clone(),
                content_type: seg.content_type.clone(),
                path: seg.session.data_path().to_path_buf(),
                size: seg.range.total,
                number: 1,
                digests,
            })));
        }
    }

    /// The hand-off form built so far, taken for the hand-off.
    pub fn take_form(&mut self) -> FormBody {
        std::mem::replace(&mut self.form, FormBody::new(""))
    }

    /// The oldest part that ended and is not described in the form yet.
    pub fn next_finished(&mut self) -> Option<Finished> {
        self.finished.pop_front()
    }

    /// Adds a field to the form, within `upload_max_output_body_len`.
    pub fn add_field(&mut self, name: &[u8], value: &[u8]) -> Result<(), Failure> {
        self.form.add_field(name, value);
        self.check_output_len()
    }

    fn check_output_len(&self) -> Result<(), Failure> {
        match self.max_output_len {
            Some(max) if self.form.len() > max => Err(Failure::new(
                Problem::TooLarge,
                format!("the hand-off body would exceed upload_max_output_body_len {max}"),
            )),
            _ => Ok(()),
        }
    }
}

fn into_failure(e: MultipartError<Failure>) -> Failure {
    match e {
        MultipartError::Sink(failure) => failure,
        MultipartError::Failed => Failure::internal("multipart parser used after an error"),
        other => bad_request(format!("malformed multipart body: {other}")),
    }
}

impl PartSink for FormUpload {
    type Error = Failure;

    fn part_start(&mut self, headers: &PartHeaders) -> Result<PartAction, Failure> {
        let name = headers.name();
        if let Some(file_name) = headers.filename() {
            let field_name = if self.tame_arrays {
                tame_array_name(name)
            } else {
                name
            };
            if self.start_segment(headers, field_name, file_name)? {
                return Ok(PartAction::Accept);
            }
            let sessions = self.conf.sessions();
            let (path, file) =
                store::create_numbered(&sessions.data, sessions.file_mode).map_err(|e| {
                    Failure::io(
                        format!(
                            "cannot create a file in \"{}\"",
                            sessions.data.root.display()
                        ),
                        &e,
                    )
                })?;
            self.files.push(path.clone());
            self.files_started += 1;
            let hasher =
                (self.hashes != Algorithms::NONE).then(|| Box::new(MultiHasher::new(self.hashes)));
            self.current = Current::File {
                file,
                hasher,
                stored: Box::new(StoredFile {
                    field_name: field_name.to_vec(),
                    file_name: file_name.to_vec(),
                    content_type: headers.content_type().unwrap_or_default().to_vec(),
                    path,
                    size: 0,
                    number: self.files_started,
                    digests: None,
                }),
            };
            return Ok(PartAction::Accept);
        }
        if self.conf.passes_field(name, self.log) {
            self.current = Current::Field {
                name: name.to_vec(),
                value: Vec::new(),
            };
            Ok(PartAction::Accept)
        } else {
            self.current = Current::Skipped;
            Ok(PartAction::Skip)
        }
    }

    fn part_data(&mut self, data: &[u8]) -> Result<(), Failure> {
        match &mut self.current {
            Current::File {
                file,
                stored,
                hasher,
            } => {
                let size = stored.size + data.len() as u64;
                if self.max_file_size.is_some_and(|max| size > max) {
                    // A soft limit, as in nginx-upload-module: this file is dropped, the rest
                    // of the request goes on.
                    ngx::ngx_log_error!(
                        ngx::ffi::NGX_LOG_ERR,
                        self.log,
                        "upload: file \"{}\" is larger than upload_max_file_size, skipped",
                        String::from_utf8_lossy(&stored.file_name)
                    );
                    let _ = std::fs::remove_file(&stored.path);
                    self.files.retain(|p| *p != stored.path);
                    self.current = Current::Skipped;
                    return Ok(());
                }
                write_all_at(file, stored.size, &[IoSlice::new(data)]).map_err(|e| {
                    Failure::io(format!("writing \"{}\" failed", stored.path.display()), &e)
                })?;
                if let Some(h) = hasher {
                    h.update(data);
                }
                stored.size = size;
                Ok(())
            }
            Current::Field { value, .. } => {
                value.extend_from_slice(data);
                match self.max_output_len {
                    Some(max) if self.form.len() + value.len() > max => Err(Failure::new(
                        Problem::TooLarge,
                        format!("form fields exceed upload_max_output_body_len {max}"),
                    )),
                    _ => Ok(()),
                }
            }
            Current::Segment => {
                let Some(seg) = self.segment.as_deref_mut() else {
                    return Ok(());
                };
                let len = data.len() as u64;
                if seg.written + len > seg.range.len() {
                    return Err(Failure::new(
                        Problem::BodyLengthMismatch,
                        format!(
                            "part is longer than the {} bytes of its Content-Range",
                            seg.range.len()
                        ),
                    ));
                }
                let offset = seg.range.first + seg.written;
                write_all_at(seg.session.file(), offset, &[IoSlice::new(data)]).map_err(|e| {
                    Failure::io(
                        format!("writing \"{}\" failed", seg.session.data_path().display()),
                        &e,
                    )
                })?;
                if let Some(progress) = &mut seg.stream_hash {
                    progress.advance(offset, data);
                }
                seg.written += len;
                Ok(())
            }
            Current::None | Current::Skipped => Ok(()),
        }
    }

    fn part_end(&mut self) -> Result<(), Failure> {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::File {
                mut stored, hasher, ..
            } => {
                stored.digests = hasher.map(|h| h.finish());
                self.finished.push_back(Finished::File(stored));
            }
            Current::Field { name, value } => {
                self.finished.push_back(Finished::Field { name, value })
            }
            Current::Segment => {
                if let Some(seg) = self.segment.as_deref_mut() {
                    if seg.written != seg.range.len() {
                        return Err(Failure::new(
                            Problem::BodyLengthMismatch,
                            format!(
                                "part of {} bytes does not fill its Content-Range \"{}\"",
                                seg.written, seg.range
                            ),
                        ));
                    }
                    seg.complete = true;
                }
            }
            Current::None | Current::Skipped => {}
        }
        Ok(())
    }
}
