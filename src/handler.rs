//! The content handler of an `upload_pass` location: checks a request's headers, opens where
//! its bytes go, streams the body there, and either answers with the progress of a resumable
//! upload or hands the finished file to the backend.

use core::ffi::c_void;
use core::ptr;
use std::fs::File;
use std::io::IoSlice;
use std::path::PathBuf;

use ngx::ffi::{ngx_add_timer, ngx_current_msec, ngx_msec_t};
use ngx::ffi::{
    ngx_chain_t, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_read_unbuffered_request_body, ngx_http_request_t, ngx_int_t, ngx_uint_t, NGX_DONE,
    NGX_ERROR, NGX_HTTP_BAD_REQUEST, NGX_HTTP_CONFLICT, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_NOT_FOUND, NGX_HTTP_OPTIONS,
    NGX_HTTP_POST, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, NGX_HTTP_REQUEST_TIME_OUT,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE, NGX_LOG_ERR, NGX_LOG_INFO,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, Request};
use ngx::ngx_log_error;

use ngx_upload_engine::content_range::{self, ContentRange};
use ngx_upload_engine::disposition;
use ngx_upload_engine::session::{self, Commit, Committed, Session, SessionError};
use ngx_upload_engine::session_id::SessionId;
use ngx_upload_engine::store;

use crate::conf::UploadConf;
use crate::multipart::{Finished, MultipartUpload};
use crate::ngx_glue::{self, RequestHeaders};
use crate::offload;
use crate::{handoff, Module};
use ngx_upload_engine::hash_state::HashProgress;
use ngx_upload_engine::hashing::{Algorithms, Digests, MultiHasher};

pub const NGX_HTTP_RANGE_NOT_SATISFIABLE: ngx_uint_t = 416;
const NGX_HTTP_INSUFFICIENT_STORAGE: ngx_uint_t = 507;

/// Where one request's body goes.
pub enum Target {
    /// A segment of a resumable session, written at `range.first`.
    Segment {
        session: Session,
        range: ContentRange,
    },
    /// A whole file in one request: a new numbered file, or one named by the session id.
    Whole {
        path: PathBuf,
        file: File,
        max_size: u64,
    },
    /// A browser form: any number of files and fields.
    Multipart(Box<MultipartUpload>),
}

/// The file the variables describe while a multipart file's fields are evaluated.
pub struct Described {
    pub path: PathBuf,
    pub size: u64,
    pub number: u32,
}

/// Per-request state, owned by the request pool: dropping it (when the request ends) applies
/// `upload_cleanup` and removes the file of a single-request upload that never completed.
pub struct UploadCtx {
    request: *mut ngx_http_request_t,
    conf: &'static UploadConf,
    pub target: Target,
    /// Bytes of the body written so far.
    pub received: u64,
    /// Length the body must have, when known in advance (Content-Length).
    expected: Option<u64>,
    pub field_name: Vec<u8>,
    pub file_name: Vec<u8>,
    pub content_type: Vec<u8>,
    /// Set while the fields of one file of a multipart request are evaluated.
    pub described: Option<Described>,
    /// Hashes of the file, once complete, when a template uses them.
    pub digests: Option<Digests>,
    /// Hashes of a single-request upload, computed as the bytes stream by.
    hasher: Option<MultiHasher>,
    /// This request passed the finished file to `upload_pass`.
    pub handed_off: bool,
    /// When the body started, for `upload_limit_rate` (nginx's millisecond clock).
    started_msec: ngx_msec_t,
    /// The body is all in and the answer waits for `upload_limit_rate` ([`finish_paced`]).
    answer_paused: bool,
    /// Bytes of this segment already recorded in the session state.
    recorded: u64,
    /// A segment that continues the session's hashed prefix carries the hashes on as its
    /// bytes stream by.
    stream_hash: Option<HashProgress>,
    /// Disk work for this request is running on the thread pool: reading waits for it.
    job_in_flight: bool,
    /// A checkpoint is being recorded on the thread pool while reading goes on; shared with
    /// the job, which may finish after the request.
    checkpointing: std::rc::Rc<core::cell::Cell<bool>>,
    /// What that work came back with, for the continuation.
    job_done: Option<JobDone>,
}

/// The result of disk work done off the event loop for a request.
enum JobDone {
    /// The segment's body is complete and recorded (or not).
    Committed(Result<Committed, Failure>),
    /// A checkpoint of a long segment is recorded (or not); reading goes on.
    Checkpointed(Result<Committed, Failure>),
}

impl UploadCtx {
    fn new(request: *mut ngx_http_request_t, conf: &'static UploadConf, target: Target) -> Self {
        UploadCtx {
            request,
            conf,
            target,
            received: 0,
            expected: None,
            field_name: Vec::new(),
            file_name: Vec::new(),
            content_type: Vec::new(),
            described: None,
            digests: None,
            hasher: None,
            handed_off: false,
            started_msec: now_msec(),
            answer_paused: false,
            recorded: 0,
            stream_hash: None,
            job_in_flight: false,
            checkpointing: Default::default(),
            job_done: None,
        }
    }

    pub fn conf(&self) -> &'static UploadConf {
        self.conf
    }

    pub fn path(&self) -> &std::path::Path {
        if let Some(d) = &self.described {
            return &d.path;
        }
        match &self.target {
            Target::Segment { session, .. } => session.data_path(),
            Target::Whole { path, .. } => path,
            Target::Multipart(_) => std::path::Path::new(""),
        }
    }

    /// Size of the finished file.
    pub fn file_size(&self) -> u64 {
        if let Some(d) = &self.described {
            return d.size;
        }
        match &self.target {
            Target::Segment { range, .. } => range.total,
            Target::Whole { .. } | Target::Multipart(_) => self.received,
        }
    }

    /// `$upload_file_number`: files count from 1 in a request.
    pub fn file_number(&self) -> u32 {
        self.described.as_ref().map_or(1, |d| d.number)
    }

    /// `$upload_content_range`: the segment's range, or the whole file's.
    pub fn content_range(&self) -> String {
        match &self.target {
            Target::Segment { range, .. } => range.to_string(),
            // A form's segment part, while its fields are evaluated.
            Target::Multipart(upload)
                if upload.segment.as_ref().is_some_and(|s| {
                    self.described
                        .as_ref()
                        .is_some_and(|d| d.path == s.session.data_path())
                }) =>
            {
                upload
                    .segment
                    .as_ref()
                    .map(|s| s.range.to_string())
                    .unwrap_or_default()
            }
            _ => match self.file_size() {
                0 => "bytes 0-0/0".to_string(),
                size => format!("bytes 0-{}/{size}", size - 1),
            },
        }
    }

    /// Writes body buffers at their place in the file.
    fn write(&mut self, bufs: &[IoSlice<'_>]) -> Result<(), Failure> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        if let Target::Multipart(upload) = &mut self.target {
            upload.feed(bufs)?;
            self.received += len;
            return Ok(());
        }
        let (file, offset, limit) = match &self.target {
            Target::Segment { session, range } => {
                (session.file(), range.first + self.received, range.len())
            }
            Target::Whole { file, max_size, .. } => (file, self.received, *max_size),
            Target::Multipart(_) => unreachable!("handled above"),
        };
        if self.received + len > limit {
            return Err(match self.target {
                Target::Segment { .. } => Failure::new(
                    NGX_HTTP_RANGE_NOT_SATISFIABLE,
                    format!("body is longer than the {limit} bytes of its Content-Range"),
                ),
                _ => Failure::new(
                    NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_uint_t,
                    format!("file is larger than upload_max_file_size {limit}"),
                ),
            });
        }
        session::write_all_at(file, offset, bufs).map_err(|e| {
            Failure::io(format!("writing \"{}\" failed", self.path().display()), &e)
        })?;
        if let Some(hasher) = &mut self.hasher {
            bufs.iter().for_each(|b| hasher.update(b));
        }
        if let Some(progress) = &mut self.stream_hash {
            let mut at = offset;
            for b in bufs {
                progress.advance(at, b);
                at += b.len() as u64;
            }
        }
        self.received += len;
        Ok(())
    }

    /// Whether this request writes a segment of a resumable session (raw, or a form's part).
    fn has_segment(&self) -> bool {
        match &self.target {
            Target::Segment { .. } => true,
            Target::Multipart(upload) => upload.segment.is_some(),
            Target::Whole { .. } => false,
        }
    }

    /// Whether enough of a long segment arrived since it was last recorded.
    fn checkpoint_due(&self) -> bool {
        matches!(self.target, Target::Segment { .. })
            && self.received - self.recorded >= CHECKPOINT_BYTES
    }
}

/// A long segment records its progress every this many bytes, so an interrupted one keeps
/// what arrived (the C module loses the whole segment).
const CHECKPOINT_BYTES: u64 = 8 << 20;

impl UploadCtx {
    /// The commit of the bytes of this segment written so far; `finishing` once the body is
    /// complete.
    fn commit_of(&mut self, finishing: bool) -> Option<(&Session, Commit)> {
        let (session, range, written, stream_hash) = match &mut self.target {
            Target::Segment { session, range } => {
                (&*session, *range, self.received, &mut self.stream_hash)
            }
            Target::Multipart(upload) => {
                let seg = upload.segment.as_deref_mut()?;
                (&seg.session, seg.range, seg.written, &mut seg.stream_hash)
            }
            Target::Whole { .. } => return None,
        };
        let hashes = if finishing {
            stream_hash.take()
        } else {
            stream_hash.clone()
        };
        let commit = Commit {
            start: range.first,
            end: range.first + written,
            hashes,
            algorithms: self.conf.hash_algorithms(),
            finishing,
        };
        Some((session, commit))
    }

    /// Records the bytes of this segment written so far, here on the event loop: for a
    /// checkpoint of a session that is not fsynced, a state file rewrite under a lock.
    fn checkpoint_now(&mut self) -> Result<(), Failure> {
        if self.received <= self.recorded {
            return Ok(());
        }
        let received = self.received;
        let Some((session, commit)) = self.commit_of(false) else {
            return Ok(());
        };
        let range = (commit.start, commit.end);
        session
            .commit(commit)
            .map_err(|e| commit_failure(session, range, e))?;
        self.recorded = received;
        Ok(())
    }

    /// Records the bytes of this segment written so far on the thread pool; `then` gets the
    /// result back on the event loop. `Err` if the work could not be handed over.
    fn commit_off_loop(
        &mut self,
        finishing: bool,
        then: impl FnOnce(Result<Committed, Failure>) + 'static,
    ) -> Result<(), Failure> {
        let pool = offload::Pool(self.conf.thread_pool);
        // SAFETY: the request outlives its context.
        let log = unsafe { (*(*self.request).connection).log };
        let Some((session, commit)) = self.commit_of(finishing) else {
            return Err(Failure::new(
                NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
                "only segments are committed",
            ));
        };
        // The thread works on its own handle, which shares this request's locks.
        let session = session.try_clone().map_err(|e| {
            Failure::io(
                format!("duplicating \"{}\"", session.data_path().display()),
                &e,
            )
        })?;
        offload::run(
            pool,
            log,
            move || {
                let range = (commit.start, commit.end);
                session
                    .commit(commit)
                    .map_err(|e| commit_failure(&session, range, e))
            },
            move |result| {
                then(result.unwrap_or_else(|| {
                    Err(Failure::new(
                        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
                        "recording the segment failed",
                    ))
                }))
            },
        );
        Ok(())
    }

    /// Removes what a failed request stored that no session keeps: a single-request file, the
    /// files of a form. Segments stay: they are part of a session that may resume.
    fn discard_unfinished(&mut self) {
        if self.handed_off {
            return;
        }
        match &mut self.target {
            Target::Whole { path, .. } => remove_quietly(path),
            Target::Multipart(upload) => upload.files.drain(..).for_each(|p| remove_quietly(&p)),
            Target::Segment { .. } => {}
        }
    }
}

fn remove_quietly(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
}

impl Drop for UploadCtx {
    fn drop(&mut self) {
        if !self.handed_off {
            self.discard_unfinished();
            return;
        }
        // SAFETY: the context is dropped by a cleanup of the request's own pool, which runs
        // before the pool's memory (which holds the request) is freed.
        let status = unsafe { (*self.request).headers_out.status };
        let cleanup = self.conf.cleans_up_on(status);
        let files: Vec<PathBuf> = match &mut self.target {
            Target::Whole { path, .. } if cleanup => vec![path.clone()],
            Target::Multipart(upload) if cleanup => std::mem::take(&mut upload.files),
            _ => Vec::new(),
        };
        let session = match &self.target {
            Target::Segment { session, .. } => Some(session),
            Target::Multipart(upload) => upload.segment.as_ref().map(|s| &s.session),
            Target::Whole { .. } => None,
        };
        // The backend has the file: the session is over, as in the C module; its state (a
        // small file) goes at once, so a crash right after the answer cannot leave the
        // session looking alive. Any other failure keeps the state, so the client can retry
        // the hand-off. With upload_cleanup the session's files go, off the event loop.
        if !cleanup && status < 400 {
            if let Some(session) = session {
                let _ = session.forget_state();
            }
        }
        let session = session.filter(|_| cleanup).and_then(|s| s.try_clone().ok());
        if files.is_empty() && session.is_none() {
            return;
        }
        // Unlinking a large file can take a while: off the event loop. The request is gone by
        // then, so the job logs to the cycle's log.
        // SAFETY: ngx_cycle is the live cycle of this worker.
        let log = unsafe { (*ngx::ffi::ngx_cycle).log };
        offload::run(
            offload::Pool(self.conf.thread_pool),
            log,
            move || {
                files.iter().for_each(|p| remove_quietly(p));
                if let Some(session) = session {
                    let _ = session.remove();
                }
            },
            |_| {},
        );
    }
}

/// A request that cannot go on: the status to answer and what to log.
pub struct Failure {
    pub status: ngx_uint_t,
    pub message: String,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    pub fn new(status: ngx_uint_t, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure::new(NGX_HTTP_BAD_REQUEST as ngx_uint_t, message)
}

impl Failure {
    /// A failed disk operation: `507 Insufficient Storage` when the disk (or quota) is full,
    /// so clients and monitoring can tell it from a bug; `500` otherwise.
    pub fn io(context: impl core::fmt::Display, e: &std::io::Error) -> Self {
        let status = match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => NGX_HTTP_INSUFFICIENT_STORAGE,
            // An offset past what the filesystem can hold: the client asked too much.
            Some(libc::EFBIG) => NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_uint_t,
            _ => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
        };
        Failure::new(status, format!("{context}: {e}"))
    }
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        let status = match &e {
            SessionError::IdTooShort { .. } => NGX_HTTP_BAD_REQUEST as ngx_uint_t,
            SessionError::TotalMismatch { .. } | SessionError::InFlight { .. } => {
                NGX_HTTP_CONFLICT as ngx_uint_t
            }
            SessionError::TooManyRanges { .. } => NGX_HTTP_RANGE_NOT_SATISFIABLE,
            SessionError::DamagedState(_) => NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
            SessionError::Io(io) => return Failure::io("session files", io),
        };
        Failure::new(status, e.to_string())
    }
}

/// A failed commit of `[start, end)`, saying which bytes and which state file.
fn commit_failure(session: &Session, (start, end): (u64, u64), e: SessionError) -> Failure {
    let mut failure = Failure::from(e);
    failure.message = format!(
        "recording bytes {start}-{} in \"{}\": {}",
        end.saturating_sub(1),
        session.state_path().display(),
        failure.message
    );
    failure
}

/// Logs a failure and turns it into the handler's return value.
fn fail(r: *mut ngx_http_request_t, failure: Failure) -> ngx_int_t {
    // SAFETY: r is the live request being handled.
    let log = unsafe { (*(*r).connection).log };
    ngx_log_error!(NGX_LOG_ERR, log, "upload: {}", failure.message);
    failure.status as ngx_int_t
}

/// The `upload_pass` location's content handler.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn upload_content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a valid request.
    let request = unsafe { Request::from_ngx_http_request(r) };
    let Some(conf) = Module::location_conf(request) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: r is valid (above).
    let method = unsafe { (*r).method } as u32;
    if method == NGX_HTTP_OPTIONS {
        return ngx_glue::answer_options(r, conf);
    }
    // SAFETY: r is valid; the headers live as long as the request.
    let headers = unsafe { RequestHeaders::of(r) };
    if let Some(rc) = status_query(r, conf, method, &headers) {
        return rc;
    }
    if method != NGX_HTTP_POST {
        // SAFETY: r is valid; the method name points into the request line.
        let name = unsafe { (*r).method_name };
        return fail(
            r,
            Failure::new(
                NGX_HTTP_NOT_ALLOWED as ngx_uint_t,
                format!("method {} is not allowed, uploads use POST", name),
            ),
        );
    }
    let ctx = match start(r, conf, &headers) {
        Ok(ctx) => ctx,
        Err(failure) => return fail(r, failure),
    };
    let Some(ctx) = request.pool().allocate(ctx).as_mut() else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    request.set_module_ctx(ptr::from_mut(ctx).cast::<c_void>(), Module::module());
    // SAFETY: r is valid; streaming the body is how the bytes reach the file without being
    // buffered whole.
    unsafe { (*r).set_request_body_no_buffering(1) };
    // SAFETY: r is valid and its body has not been read yet.
    let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_started)) };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    NGX_DONE as ngx_int_t
}

/// A client asking what a session holds before it resumes: `HEAD`, or a `POST` with a session
/// id, no range and no body. Answers `200` with the same `Range` report a segment gets (`404`
/// for an unknown session); `None` when the request is not such a query.
fn status_query(
    r: *mut ngx_http_request_t,
    conf: &UploadConf,
    method: u32,
    headers: &RequestHeaders<'_>,
) -> Option<ngx_int_t> {
    let empty_body =
        headers.content_length == 0 || (headers.content_length < 0 && !headers.chunked);
    let query = method == NGX_HTTP_HEAD
        || (method == NGX_HTTP_POST
            && empty_body
            && headers.content_range.is_none()
            && headers.session_id.is_some()
            && !starts_with_ignore_case(headers.content_type.unwrap_or_default(), b"multipart/"));
    if !query {
        return None;
    }
    let answer = || -> Result<ngx_int_t, Failure> {
        if !conf.resumable() {
            return Err(Failure::new(
                NGX_HTTP_NOT_ALLOWED as ngx_uint_t,
                "status queries need \"upload_resumable on\"",
            ));
        }
        let id = headers
            .session_id
            .ok_or_else(|| bad_request("a status query needs a session id (X-Session-ID)"))?;
        let id = parse_session_id(id)?;
        match conf.sessions().progress(&id)? {
            Some(state) => Ok(ngx_glue::answer_status(r, &state)),
            None => Err(Failure::new(
                NGX_HTTP_NOT_FOUND as ngx_uint_t,
                format!("status query for unknown session \"{id}\""),
            )),
        }
    };
    // The body, if any, is empty; nginx discards it.
    Some(answer().unwrap_or_else(|failure| fail(r, failure)))
}

/// Checks the request headers and opens where the body will go.
fn start(
    r: *mut ngx_http_request_t,
    conf: &'static UploadConf,
    headers: &RequestHeaders<'_>,
) -> Result<UploadCtx, Failure> {
    let content_type = headers.content_type.unwrap_or_default();
    let hasher = {
        let algorithms = conf.hash_algorithms();
        (algorithms != Algorithms::NONE).then(|| MultiHasher::new(algorithms))
    };
    if starts_with_ignore_case(content_type, b"multipart/") {
        // SAFETY: r is live.
        let (log, unique) = unsafe {
            let c = (*r).connection;
            (
                (*c).log,
                format!("{:x}{:x}", ngx::ffi::ngx_time(), (*c).number),
            )
        };
        let upload = MultipartUpload::new(conf, content_type, log, &unique, headers.session_id)?;
        return Ok(UploadCtx::new(r, conf, Target::Multipart(Box::new(upload))));
    }
    if !conf.resumable() {
        return Err(Failure::new(
            NGX_HTTP_UNSUPPORTED_MEDIA_TYPE as ngx_uint_t,
            "a raw upload (not multipart/form-data) needs \"upload_resumable on\"",
        ));
    }
    let Some(disposition) = headers.content_disposition else {
        return Err(Failure::new(
            NGX_HTTP_UNSUPPORTED_MEDIA_TYPE as ngx_uint_t,
            "a raw upload needs a Content-Disposition header",
        ));
    };
    let disposition = disposition::parse(disposition).map_err(|e| {
        bad_request(format!(
            "Content-Disposition \"{}\" {e}",
            String::from_utf8_lossy(disposition)
        ))
    })?;
    let session_id = headers.session_id.map(parse_session_id).transpose()?;
    let range = headers
        .content_range
        .map(|value| {
            content_range::parse(value).map_err(|e| {
                Failure::new(
                    NGX_HTTP_RANGE_NOT_SATISFIABLE,
                    format!("Content-Range \"{}\" {e}", String::from_utf8_lossy(value)),
                )
            })
        })
        .transpose()?;
    let max_file_size = u64::try_from(conf.max_file_size).ok().filter(|m| *m > 0);
    let expected = u64::try_from(headers.content_length).ok();
    let too_large = |size: u64| {
        Failure::new(
            NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_uint_t,
            format!(
                "file of {size} bytes is larger than upload_max_file_size {}",
                conf.max_file_size
            ),
        )
    };
    let sessions = conf.sessions();
    let (data_dir, file_mode) = (&sessions.data, sessions.file_mode);
    let mut stream_hash = None;
    let target = match (range, session_id) {
        (Some(_), None) => {
            return Err(bad_request(
                "Content-Range needs a session id (X-Session-ID)",
            ));
        }
        (Some(range), Some(id)) => {
            if let Some(expected) = expected.filter(|n| *n != range.len()) {
                return Err(Failure::new(
                    NGX_HTTP_RANGE_NOT_SATISFIABLE,
                    format!(
                        "Content-Length {expected} differs from the {} bytes of Content-Range \"{range}\"",
                        range.len()
                    ),
                ));
            }
            if max_file_size.is_some_and(|max| range.total > max) {
                return Err(too_large(range.total));
            }
            let session = sessions.open(&id, &range).map_err(|e| {
                let mut failure = Failure::from(e);
                failure.message = format!("session \"{id}\": {}", failure.message);
                failure
            })?;
            stream_hash = session.streaming_hash(&range, conf.hash_algorithms());
            Target::Segment { session, range }
        }
        (None, id) => {
            if expected == Some(0) || (expected.is_none() && !headers.chunked) {
                return Err(bad_request("a raw upload needs a non-empty body"));
            }
            let max_size = max_file_size.unwrap_or(content_range::MAX_OFFSET);
            if let Some(size) = expected.filter(|n| *n > max_size) {
                return Err(too_large(size));
            }
            let io_failure = |e: std::io::Error| {
                Failure::new(
                    NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
                    format!(
                        "cannot create a file in \"{}\": {e}",
                        data_dir.root.display()
                    ),
                )
            };
            let (path, file) = match id {
                Some(id) => {
                    if sessions.progress(&id)?.is_some() {
                        return Err(Failure::new(
                            NGX_HTTP_CONFLICT as ngx_uint_t,
                            format!(
                                "session \"{id}\" is a resumable upload in progress; a body \
                                 without Content-Range would overwrite it"
                            ),
                        ));
                    }
                    let path = data_dir.path_of(id.as_str()).ok_or_else(|| {
                        bad_request(format!(
                            "session id \"{id}\" is shorter than the {} characters of upload_store levels",
                            data_dir.min_name_len()
                        ))
                    })?;
                    let file = store::open_rw(&path, file_mode).map_err(io_failure)?;
                    file.set_len(0).map_err(io_failure)?;
                    (path, file)
                }
                None => store::create_numbered(data_dir, file_mode).map_err(io_failure)?,
            };
            Target::Whole {
                path,
                file,
                max_size,
            }
        }
    };
    let field_name = disposition.name.unwrap_or_default();
    let field_name = if conf.tame_arrays == 1 {
        ngx_upload_engine::form::tame_array_name(&field_name).to_vec()
    } else {
        field_name
    };
    let file_name = disposition
        .filename
        .as_deref()
        .map(disposition::base_name)
        .unwrap_or_default()
        .to_vec();
    let mut ctx = UploadCtx::new(r, conf, target);
    ctx.expected = if headers.chunked { None } else { expected };
    ctx.field_name = field_name;
    ctx.file_name = file_name;
    ctx.content_type = content_type.to_vec();
    if matches!(ctx.target, Target::Segment { .. }) {
        ctx.stream_hash = stream_hash;
    } else {
        ctx.hasher = hasher;
    }
    Ok(ctx)
}

fn parse_session_id(id: &[u8]) -> Result<SessionId, Failure> {
    SessionId::parse(id).map_err(|e| {
        bad_request(format!(
            "session id \"{}\" {e}",
            String::from_utf8_lossy(id)
        ))
    })
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// # Safety
/// `r` must be a request whose module context was set by the content handler.
pub unsafe fn ctx_of<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut UploadCtx> {
    // SAFETY: r is valid; the context slot is NULL or an UploadCtx from the request pool, only
    // ever reached through the request, by one handler at a time.
    unsafe {
        let slot = *(*r).ctx.add(Module::module().ctx_index);
        slot.cast::<UploadCtx>().as_mut()
    }
}

/// Called once by `ngx_http_read_client_request_body` with what has arrived so far.
unsafe extern "C" fn body_started(r: *mut ngx_http_request_t) {
    // SAFETY: r is the request whose body reading the content handler started.
    unsafe {
        (*r).read_event_handler = Some(body_readable);
        if take_body_buffers(r, false).is_none() {
            return;
        }
        if (*r).reading_body() == 0 {
            finish_paced(r);
        } else {
            // nginx stops reading when its buffer is full; what waits in the socket raises no
            // new event, so read on now that the buffer is free.
            body_readable(r);
        }
    }
}

fn now_msec() -> ngx_msec_t {
    // SAFETY: nginx's cached clock, updated by the event loop of this (single-threaded) worker.
    unsafe { ngx_current_msec }
}

impl UploadCtx {
    /// `upload_limit_rate` pacing: how long to pause before reading more of the body (or, once
    /// it is all in, before answering) so that the body is taken no faster than the rate.
    ///
    /// Every byte of the body counts, those that came with the request header too, from when
    /// the body started (`started_msec`): the bytes received so far are due at
    /// `received / rate` seconds, and reading waits until then. There is no allowance ahead of
    /// the rate. nginx reads a whole buffer at a time, so one read may run ahead; the pause
    /// after it makes up for that, and the end of the body waits as well ([`finish_paced`]),
    /// so a body of `size` bytes is never answered before `size / rate` seconds.
    fn rate_delay(&self) -> Option<ngx_msec_t> {
        let rate = self.conf.limit_rate as u64;
        if rate == 0 {
            return None;
        }
        let elapsed = now_msec().wrapping_sub(self.started_msec) as u64;
        // When the bytes received so far are due, in ms, rounded up.
        let due = self.received.saturating_mul(1000).div_ceil(rate);
        (due > elapsed).then(|| (due - elapsed) as ngx_msec_t)
    }
}

/// The whole body is in: [`finish`], once `upload_limit_rate` allows it. Until then the read
/// event waits on a timer, as for a pause while reading; when it fires, [`body_readable`]
/// comes back here (`answer_paused`) without reading.
///
/// # Safety
/// `r` must be a live request whose body has been read, with our context.
unsafe fn finish_paced(r: *mut ngx_http_request_t) {
    // SAFETY: r is live; its context, if any, is ours.
    if let Some(ctx) = unsafe { ctx_of(r) } {
        if let Some(delay) = ctx.rate_delay() {
            ctx.answer_paused = true;
            // SAFETY: r is live; the read event's timer calls body_readable.
            unsafe {
                let rev = (*(*r).connection).read;
                (*rev).set_delayed(1);
                ngx_add_timer(rev, delay);
            }
            return;
        }
    }
    // SAFETY: as above.
    unsafe { finish(r) }
}

/// Read event while the body streams in.
unsafe extern "C" fn body_readable(r: *mut ngx_http_request_t) {
    // SAFETY: r is a live request; its connection and read event exist while it does.
    let rev = unsafe { (*(*r).connection).read };
    // SAFETY: r is live with our context.
    if unsafe { ctx_of(r) }.is_some_and(|ctx| ctx.job_in_flight) {
        return; // a checkpoint is being made durable; its completion resumes reading
    }
    // SAFETY: as above.
    unsafe {
        if (*rev).delayed() != 0 {
            if (*rev).timedout() == 0 {
                // An event during an upload_limit_rate pause. Over HTTP/2 it is data arriving,
                // and nginx has just replaced the pause's timer with client_body_timeout (or
                // removed it, at the end of the body): set the pause's timer again, or, if the
                // pause is over, go on without it.
                match ctx_of(r).and_then(|ctx| ctx.rate_delay()) {
                    Some(delay) => {
                        ngx_add_timer(rev, delay);
                        return;
                    }
                    None => {
                        if (*rev).timer_set() != 0 {
                            ngx::ffi::ngx_del_timer(rev);
                        }
                    }
                }
            }
            // The pause is over; this timeout is ours, not client_body_timeout.
            (*rev).set_timedout(0);
            (*rev).set_delayed(0);
        }
    }
    // SAFETY: r is live with our context.
    if let Some(ctx) = unsafe { ctx_of(r) }.filter(|ctx| ctx.answer_paused) {
        // The pause before answering is over (finish_paced): the body is all in, and nginx
        // must not be asked to read it again.
        ctx.answer_paused = false;
        // SAFETY: as above.
        unsafe { finish_paced(r) };
        return;
    }
    loop {
        // SAFETY: r is live with our context.
        if let Some(delay) = unsafe { ctx_of(r) }.and_then(|ctx| ctx.rate_delay()) {
            // SAFETY: pausing the read event: nginx calls body_readable again when it fires.
            unsafe {
                (*rev).set_delayed(1);
                ngx_add_timer(rev, delay);
            }
            return;
        }
        // SAFETY: r is a live request reading its body unbuffered.
        let rc = unsafe { ngx_http_read_unbuffered_request_body(r) };
        if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t || rc == NGX_ERROR as ngx_int_t {
            // The client went away, timed out or sent a malformed body. Bytes of a segment that
            // arrived are real: write what waits in nginx's buffer and record them, so a
            // resuming client is told.
            if rc == NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t {
                // nginx says nothing when a body stalls: say which upload it was.
                // SAFETY: r is live; its context (if any) is ours.
                let received = unsafe { ctx_of(r) }.map_or(0, |ctx| ctx.received);
                ngx_log_error!(
                    NGX_LOG_INFO,
                    // SAFETY: as above.
                    unsafe { (*(*r).connection).log },
                    "upload: client timed out sending the body (client_body_timeout) after \
                     {received} bytes were written"
                );
            }
            // SAFETY: r is live with our context; the buffers nginx holds are still valid.
            if unsafe { take_body_buffers(r, true) }.is_none() {
                return;
            }
            // SAFETY: r is live with our context.
            if let Some(ctx) = unsafe { ctx_of(r) } {
                ctx.keep_what_arrived(r);
            }
            // SAFETY: r is live; finalizing ends our part in it.
            unsafe { abort(r, rc) };
            return;
        }
        // SAFETY: as above.
        let Some(consumed) = (unsafe { take_body_buffers(r, false) }) else {
            return;
        };
        // SAFETY: as above.
        if unsafe { (*r).reading_body() } == 0 {
            // SAFETY: as above.
            unsafe { finish_paced(r) };
            return;
        }
        // SAFETY: r is live with our context.
        if let Some(ctx) = unsafe { ctx_of(r) }.filter(|ctx| ctx.checkpoint_due()) {
            if let Err(failure) = ctx.checkpoint(r) {
                let status = fail(r, failure);
                // SAFETY: r is live.
                unsafe { abort(r, status) };
                return;
            }
            if ctx.job_in_flight {
                return;
            }
        }
        if consumed == 0 {
            return; // nothing more for now: nginx calls again when data arrives
        }
    }
}

impl UploadCtx {
    /// Records a long segment's progress on the thread pool (a state file replaced by rename
    /// can take milliseconds): while reading goes on, or with `upload_state_fsync`, whose record
    /// must wait for the data's fsync, while reading pauses.
    fn checkpoint(&mut self, r: *mut ngx_http_request_t) -> Result<(), Failure> {
        if !self.conf.sessions().durable {
            if self.checkpointing.get() {
                return Ok(()); // one at a time; the next one is due at the next read
            }
            let busy = self.checkpointing.clone();
            busy.set(true);
            // SAFETY: r is live; the cycle's log outlives a request that may end first.
            let log = unsafe { (*ngx::ffi::ngx_cycle).log };
            self.commit_off_loop(false, move |result| {
                busy.set(false);
                if let Err(failure) = result {
                    ngx_log_error!(NGX_LOG_ERR, log, "upload: {}", failure.message);
                }
            })?;
            self.recorded = self.received;
            return Ok(());
        }
        let received = self.received;
        self.commit_off_loop(false, move |result| {
            // SAFETY: the request is blocked (kept alive) while the work runs.
            unsafe { job_finished(r, JobDone::Checkpointed(result), received) }
        })?;
        // The continuation runs later, from the event loop.
        self.job_in_flight = true;
        // SAFETY: r is live; client_body_timeout must not run while the server is busy.
        unsafe {
            block_for_job(r);
            let rev = (*(*r).connection).read;
            if (*rev).timer_set() != 0 {
                ngx::ffi::ngx_del_timer(rev);
            }
        }
        Ok(())
    }

    /// A segment cut short (client gone, timeout, bad body): records the bytes that reached
    /// the file. With `upload_state_fsync` the record waits for the data's fsync on the thread
    /// pool, without the request, which is ending.
    fn keep_what_arrived(&mut self, r: *mut ngx_http_request_t) {
        if self.received <= self.recorded || !self.has_segment() {
            return;
        }
        let result = if self.conf.sessions().durable {
            // SAFETY: r is live.
            let log = unsafe { (*(*r).connection).log };
            self.commit_off_loop(false, move |result| {
                if let Err(failure) = result {
                    ngx_log_error!(NGX_LOG_ERR, log, "upload: {}", failure.message);
                }
            })
        } else {
            self.checkpoint_now()
        };
        if let Err(failure) = result {
            fail(r, failure);
        }
    }
}

/// Keeps the request alive, and nginx from finalizing it, while disk work runs for it; as
/// nginx's own thread tasks do. [`job_finished`] undoes it.
///
/// # Safety
/// `r` must be live.
unsafe fn block_for_job(r: *mut ngx_http_request_t) {
    // SAFETY: see above.
    unsafe {
        let main = (*r).main;
        (*main).set_blocked((*main).blocked() + 1);
        (*r).set_aio(1);
        (*r).write_event_handler = Some(job_continuation);
    }
}

/// Back on the event loop with the result of a request's disk work.
///
/// # Safety
/// `r` must be a request blocked by [`block_for_job`].
unsafe fn job_finished(r: *mut ngx_http_request_t, done: JobDone, received: u64) {
    // SAFETY: the request was kept alive by block_for_job.
    unsafe {
        if let Some(ctx) = ctx_of(r) {
            if let JobDone::Checkpointed(Ok(_)) = &done {
                ctx.recorded = ctx.recorded.max(received);
            }
            ctx.job_done = Some(done);
        }
        let main = (*r).main;
        (*main).set_blocked((*main).blocked() - 1);
        (*r).set_aio(0);
        let c = (*r).connection;
        // Our continuation, or nginx's finalizer if the request was terminated meanwhile.
        if let Some(handler) = (*r).write_event_handler {
            handler(r);
        }
        ngx::ffi::ngx_http_run_posted_requests(c);
    }
}

/// The write event handler while disk work runs: goes on once its result is in.
unsafe extern "C" fn job_continuation(r: *mut ngx_http_request_t) {
    // SAFETY: r is live with our context (a write event or job_finished).
    let Some(ctx) = (unsafe { ctx_of(r) }) else {
        return;
    };
    let Some(done) = ctx.job_done.take() else {
        return; // a write event before the work finished: nothing to do yet
    };
    ctx.job_in_flight = false;
    // SAFETY: r is live.
    unsafe { (*r).write_event_handler = Some(ngx::ffi::ngx_http_request_empty_handler) };
    match done {
        JobDone::Checkpointed(Ok(_)) => {
            // SAFETY: r is live and still reading its body.
            unsafe { body_readable(r) }
        }
        JobDone::Checkpointed(Err(failure)) => {
            let status = fail(r, failure);
            // SAFETY: r is live.
            unsafe { abort(r, status) }
        }
        JobDone::Committed(result) => {
            let rc = result.and_then(|committed| answer_committed(r, ctx, committed));
            match rc {
                // SAFETY: r is live; this ends the reference taken by
                // ngx_http_read_client_request_body.
                Ok(rc) => unsafe { ngx_http_finalize_request(r, rc) },
                // SAFETY: as above.
                Err(failure) => unsafe { abort(r, fail(r, failure)) },
            }
        }
    }
}

/// Writes the body buffers nginx holds to the file and marks them consumed, once there is
/// enough to write: the body is complete, nginx's body buffer is full, `upload_buffer_size`
/// bytes wait, or `force`. Until then the bytes stay in nginx's buffer, which nginx keeps
/// filling, so a fast upload costs one `pwritev` per buffer, not one per read. Returns the
/// bytes written, or `None` if the request was finalized because of a failure.
unsafe fn take_body_buffers(r: *mut ngx_http_request_t, force: bool) -> Option<u64> {
    // SAFETY: r is live and has a context (set before the body was read).
    let Some(ctx) = (unsafe { ctx_of(r) }) else {
        // SAFETY: r is live.
        unsafe { ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t) };
        return None;
    };
    let before = ctx.received;
    // SAFETY: request_body exists once ngx_http_read_client_request_body ran.
    let rb = unsafe { &mut *(*r).request_body };
    // SAFETY: request_body is live (above).
    let pending: usize = unsafe { unread_body(rb) }.map(<[u8]>::len).sum();
    // SAFETY: r is live; rb.buf, when set, is nginx's body buffer.
    let write_now = force
        || unsafe { (*r).reading_body() } == 0
        || pending >= ctx.conf.buffer_size
        || rb.buf.is_null()
        || unsafe { (*rb.buf).last == (*rb.buf).end }
        || !unsafe { (*r).stream }.is_null();
    if !write_now || pending == 0 {
        return Some(0);
    }
    let mut slices: Vec<IoSlice<'_>> = Vec::new();
    // SAFETY: as above.
    for data in unsafe { unread_body(rb) } {
        // Successive reads into nginx's buffer are adjacent: one iovec for them.
        match slices.last_mut() {
            Some(prev) if prev.as_ptr_range().end == data.as_ptr() => {
                // SAFETY: both slices lie in the same live buffer, back to back.
                *prev = IoSlice::new(unsafe {
                    core::slice::from_raw_parts(prev.as_ptr(), prev.len() + data.len())
                });
            }
            _ => slices.push(IoSlice::new(data)),
        }
    }
    let written = ctx.write(&slices);
    drop(slices);
    // SAFETY: r is live; its pool holds the chain links.
    let pool = unsafe { (*r).pool };
    let mut cl = rb.bufs;
    while !cl.is_null() {
        // SAFETY: as above; consuming lets nginx reuse the buffer for the next read. The links
        // of rb.bufs were allocated from the request pool by nginx's save filter and are ours
        // alone: back to the pool's free list (ngx_free_chain), or a long request would
        // allocate one per read for its whole life.
        unsafe {
            let b = &mut *(*cl).buf;
            b.pos = b.last;
            let next = (*cl).next;
            (*cl).next = (*pool).chain;
            (*pool).chain = cl;
            cl = next;
        }
    }
    rb.bufs = ptr::null_mut();
    let consumed = ctx.received - before;
    if written.is_err() {
        ctx.keep_what_arrived(r);
    }
    let written = written.and_then(|()| describe_finished_files(r));
    if let Err(failure) = written {
        let status = fail(r, failure);
        // SAFETY: r is live.
        unsafe { abort(r, status) };
        return None;
    }
    Some(consumed)
}

/// The unread bytes of the body buffers nginx holds, in order.
///
/// # Safety
/// `rb` must be the live request body of a request reading its body unbuffered; the slices
/// live until the buffers are consumed.
unsafe fn unread_body<'a>(
    rb: &ngx::ffi::ngx_http_request_body_t,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut cl: *mut ngx_chain_t = rb.bufs;
    core::iter::from_fn(move || {
        while !cl.is_null() {
            // SAFETY: the chain and its buffers belong to the request body and are live.
            let b = unsafe { &*(*cl).buf };
            // SAFETY: as above.
            cl = unsafe { (*cl).next };
            if !b.pos.is_null() && b.last > b.pos {
                // SAFETY: [pos, last) is the unread data of a memory buffer; with
                // request_body_no_buffering nginx never puts body data in a file.
                return Some(unsafe {
                    core::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize)
                });
            }
        }
        None
    })
}

/// Ends a request that failed before its hand-off: files that hold no complete upload go now,
/// before the answer, rather than when nginx frees the request.
///
/// # Safety
/// `r` must be live.
unsafe fn abort(r: *mut ngx_http_request_t, status: ngx_int_t) {
    // SAFETY: r is live; its context, if any, is ours.
    if let Some(ctx) = unsafe { ctx_of(r) } {
        ctx.discard_unfinished();
    }
    // SAFETY: r is live.
    unsafe { ngx_http_finalize_request(r, status) };
}

/// Adds the fields of the multipart parts that ended: a passed field as it came, a file as its
/// evaluated `upload_*_form_field` templates, with the variables describing that file.
fn describe_finished_files(r: *mut ngx_http_request_t) -> Result<(), Failure> {
    loop {
        // SAFETY: r is live with our context; each borrow ends before templates are evaluated
        // (evaluation reads the context through the variables).
        let next = match unsafe { ctx_of(r) } {
            Some(UploadCtx {
                target: Target::Multipart(upload),
                ..
            }) => upload.next_finished(),
            _ => None,
        };
        let fields = match next {
            None => return Ok(()),
            Some(Finished::Field { name, value }) => vec![(name, value)],
            Some(Finished::File(stored)) => {
                // SAFETY: as above.
                if let Some(ctx) = unsafe { ctx_of(r) } {
                    ctx.field_name = stored.field_name;
                    ctx.file_name = stored.file_name;
                    ctx.content_type = stored.content_type;
                    ctx.digests = stored.digests;
                    ctx.described = Some(Described {
                        path: stored.path,
                        size: stored.size,
                        number: stored.number,
                    });
                }
                // SAFETY: as above.
                let conf = match unsafe { ctx_of(r) } {
                    Some(ctx) => ctx.conf,
                    None => return Ok(()),
                };
                handoff::evaluate_fields(r, conf)?
            }
        };
        // SAFETY: as above.
        if let Some(UploadCtx {
            target: Target::Multipart(upload),
            ..
        }) = unsafe { ctx_of(r) }
        {
            for (name, value) in fields {
                upload.add_field(&name, &value)?;
            }
        }
    }
}

/// The whole body is in the file: record it, then answer or hand off.
unsafe fn finish(r: *mut ngx_http_request_t) {
    // SAFETY: r is live with a context (checked by the caller's take_body_buffers).
    let Some(ctx) = (unsafe { ctx_of(r) }) else {
        return;
    };
    match complete(r, ctx) {
        Ok(Some(rc)) => {
            // SAFETY: r is live; this ends the reference taken by
            // ngx_http_read_client_request_body.
            unsafe { ngx_http_finalize_request(r, rc) }
        }
        Ok(None) => {} // the segment is being recorded; job_continuation answers
        // SAFETY: as above.
        Err(failure) => unsafe { abort(r, fail(r, failure)) },
    }
}

/// Answers a request whose body is complete, or starts recording a segment off the event
/// loop (`Ok(None)`).
fn complete(r: *mut ngx_http_request_t, ctx: &mut UploadCtx) -> Result<Option<ngx_int_t>, Failure> {
    if let Target::Multipart(upload) = &mut ctx.target {
        upload.finish()?;
        describe_finished_files(r)?;
        // SAFETY: r is live with our context.
        let Some(ctx) = (unsafe { ctx_of(r) }) else {
            return Err(Failure::new(
                NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
                "lost context",
            ));
        };
        ctx.described = None;
        if ctx.has_segment() {
            return ctx.record_segment(r).map(|()| None);
        }
        ngx_glue::add_configured_headers(r, ctx.conf);
        ctx.handed_off = true;
        return handoff::pass_to_backend(r, ctx).map(Some);
    }
    if let Some(expected) = ctx.expected.filter(|n| *n != ctx.received) {
        return Err(bad_request(format!(
            "body ended after {} of {expected} bytes",
            ctx.received
        )));
    }
    match &ctx.target {
        Target::Segment { range, .. } => {
            if ctx.received != range.len() {
                return Err(Failure::new(
                    NGX_HTTP_RANGE_NOT_SATISFIABLE,
                    format!(
                        "body of {} bytes does not fill Content-Range \"{range}\"",
                        ctx.received
                    ),
                ));
            }
            ctx.record_segment(r).map(|()| None)
        }
        Target::Whole { .. } => {
            if ctx.received == 0 {
                return Err(bad_request("a raw upload needs a non-empty body"));
            }
            ctx.digests = ctx.hasher.take().map(MultiHasher::finish);
            ngx_glue::add_configured_headers(r, ctx.conf);
            ctx.handed_off = true;
            handoff::pass_to_backend(r, ctx).map(Some)
        }
        Target::Multipart(_) => unreachable!("handled above"),
    }
}

impl UploadCtx {
    /// Records the request's complete segment. Recording may fsync, and read the file back to
    /// hash it: it runs off the event loop, and `job_continuation` answers.
    fn record_segment(&mut self, r: *mut ngx_http_request_t) -> Result<(), Failure> {
        let received = self.received;
        self.commit_off_loop(true, move |result| {
            // SAFETY: the request is blocked (kept alive) while the work runs.
            unsafe { job_finished(r, JobDone::Committed(result), received) }
        })?;
        self.job_in_flight = true;
        // SAFETY: r is live; the job's continuation runs later, from the event loop.
        unsafe { block_for_job(r) };
        Ok(())
    }
}

/// A segment is recorded: answer with the progress, or hand the complete file off if this
/// request is the one to.
fn answer_committed(
    r: *mut ngx_http_request_t,
    ctx: &mut UploadCtx,
    committed: Committed,
) -> Result<ngx_int_t, Failure> {
    ctx.recorded = ctx.received;
    ctx.digests = committed.digests;
    let state = committed.state;
    if !state.is_complete() {
        // The other files of a form carrying a segment go with it: nothing is handed off.
        ctx.discard_unfinished();
        ngx_glue::add_configured_headers(r, ctx.conf);
        return Ok(ngx_glue::answer_progress(r, &state));
    }
    if !committed.hand_off {
        return Err(Failure::new(
            NGX_HTTP_CONFLICT as ngx_uint_t,
            format!(
                "session file \"{}\" is complete and another request is handing it off",
                ctx.path().display()
            ),
        ));
    }
    let Target::Multipart(upload) = &mut ctx.target else {
        ngx_glue::add_configured_headers(r, ctx.conf);
        ctx.handed_off = true;
        return handoff::pass_to_backend(r, ctx);
    };
    // The segment's file joins the form, described like any file part, as describe_finished_files
    // does it: the variables read the context while its templates are evaluated.
    upload.describe_segment(ctx.digests.take());
    describe_finished_files(r)?;
    // SAFETY: r is live with our context; the borrow above has ended.
    let Some(ctx) = (unsafe { ctx_of(r) }) else {
        return Err(Failure::new(
            NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
            "lost context",
        ));
    };
    ctx.described = None;
    ngx_glue::add_configured_headers(r, ctx.conf);
    ctx.handed_off = true;
    handoff::pass_to_backend(r, ctx)
}
