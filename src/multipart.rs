//! The `multipart/form-data` adapter (RFC 1867 browser forms): each file part streams into its
//! own numbered file in `upload_store` and is replaced in the hand-off form by its
//! `upload_set_form_field` / `upload_aggregate_form_field` fields; ordinary fields matching
//! `upload_pass_form_field` are passed on, all others dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::io::IoSlice;
use std::path::PathBuf;

use ngx::ffi::NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
use ngx::ffi::{ngx_uint_t, NGX_HTTP_BAD_REQUEST, NGX_HTTP_INTERNAL_SERVER_ERROR};

use ngx_upload_engine::form::{tame_array_name, FormBody};
use ngx_upload_engine::hashing::{Algorithms, Digests, MultiHasher};
use ngx_upload_engine::multipart::{
    Limits, MultipartError, MultipartParser, PartAction, PartHeaders, PartSink,
};
use ngx_upload_engine::session::write_all_at;
use ngx_upload_engine::store;

use crate::conf::UploadConf;
use crate::handler::Failure;

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
}

pub struct MultipartUpload {
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
}

fn bad_request(message: String) -> Failure {
    Failure::new(NGX_HTTP_BAD_REQUEST as ngx_uint_t, message)
}

impl MultipartUpload {
    pub fn new(
        conf: &'static UploadConf,
        content_type: &[u8],
        log: *mut ngx::ffi::ngx_log_t,
        unique: &str,
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
        })
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

    /// The body has ended: it must have ended with the closing delimiter.
    pub fn finish(&mut self) -> Result<(), Failure> {
        let Some(mut parser) = self.parser.take() else {
            return Err(into_failure(MultipartError::Failed));
        };
        let result = parser.finish(self).map_err(into_failure);
        self.parser = Some(parser);
        result
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
                NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_uint_t,
                format!("the hand-off body would exceed upload_max_output_body_len {max}"),
            )),
            _ => Ok(()),
        }
    }
}

fn into_failure(e: MultipartError<Failure>) -> Failure {
    match e {
        MultipartError::Sink(failure) => failure,
        MultipartError::Failed => Failure::new(
            NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
            "multipart parser used after an error",
        ),
        other => bad_request(format!("malformed multipart body: {other}")),
    }
}

impl PartSink for MultipartUpload {
    type Error = Failure;

    fn part_start(&mut self, headers: &PartHeaders) -> Result<PartAction, Failure> {
        let name = headers.name();
        if let Some(file_name) = headers.filename() {
            let field_name = if self.tame_arrays {
                tame_array_name(name)
            } else {
                name
            };
            let sessions = self.conf.sessions();
            let (path, file) =
                store::create_numbered(&sessions.data, sessions.file_mode).map_err(|e| {
                    Failure::new(
                        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
                        format!(
                            "cannot create a file in \"{}\": {e}",
                            sessions.data.root.display()
                        ),
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
                    Failure::new(
                        NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t,
                        format!("writing \"{}\" failed: {e}", stored.path.display()),
                    )
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
                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_uint_t,
                        format!("form fields exceed upload_max_output_body_len {max}"),
                    )),
                    _ => Ok(()),
                }
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
            Current::None | Current::Skipped => {}
        }
        Ok(())
    }
}
