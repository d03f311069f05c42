//! What a protocol asks the glue to do with a request, and what the glue reports back.

use ngx_upload_engine::content_range::ContentRange;
use ngx_upload_engine::session_id::SessionId;
use ngx_upload_engine::state::SessionState;

use crate::Answer;

/// What the variables say of the file an upload stores (`$upload_field_name`,
/// `$upload_file_name`, `$upload_content_type`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFacts {
    pub field_name: Vec<u8>,
    pub file_name: Vec<u8>,
    pub content_type: Vec<u8>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answer at once; nothing is stored and the body, if any, is discarded.
    Answer(Answer),
    /// Tell what upload `id` holds ([`Outcome::Report`]); an unknown upload is a
    /// [`crate::Problem::NotFound`].
    Report { id: SessionId },
    /// Stream the body into bytes `range` of resumable upload `id` (created by its first
    /// segment); the request that completes the upload hands it off.
    Segment {
        id: SessionId,
        range: ContentRange,
        file: FileFacts,
    },
    /// Stream the whole body into one file, hand it off at the end: a new numbered file, or
    /// the file of `id` (refused while `id` is a resumable upload in progress).
    Whole {
        id: Option<SessionId>,
        /// Most bytes the file may have.
        max_size: u64,
        file: FileFacts,
    },
    /// A `multipart/form-data` body: every file part into a file of its own, passed fields kept,
    /// a file part carrying a `Content-Range` written as a segment of a resumable upload.
    Form {
        /// The request's `Content-Type`, which names the boundary.
        content_type: Vec<u8>,
        /// The request's session id, for segment parts that carry none.
        session_id: Option<Vec<u8>>,
    },
}

/// What carrying out a plan came to.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// What an upload holds, for [`Plan::Report`].
    Report(&'a SessionState),
    /// The request's bytes are recorded; the upload is not complete yet.
    Progress(&'a SessionState),
    /// The upload is complete and this request hands it off.
    Complete(&'a SessionState),
}

/// How a protocol answers an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The module answers itself.
    Answer(Answer),
    /// The finished file goes to `upload_pass`, whose answer is the client's; `headers` are
    /// added to it.
    HandOff {
        headers: Vec<(&'static str, Vec<u8>)>,
    },
}
