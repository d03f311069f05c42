//! What a protocol asks the glue to do with a request, and what the glue reports back.

use ngx_upload_engine::content_range::ContentRange;
use ngx_upload_engine::session_id::SessionId;
use ngx_upload_engine::state::SessionState;

use crate::checksum::Checksum;
use crate::metadata::Metadata;
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
    /// Create a new upload under an id the glue generates (random, [`SessionId`]'s alphabet,
    /// unguessable: the URL is the only key to the upload), then write the body into it if
    /// [`Create::then_write`] says so. Answered with [`Outcome::Created`].
    Create(Box<Create>),
    /// Write the body into upload `id`, starting exactly at byte `offset`: the glue claims the
    /// write at the offset the upload holds and, when that is not `offset`, refuses with
    /// [`crate::Problem::OffsetMismatch`] before a byte is written. Answered with
    /// [`Outcome::Appended`].
    ///
    /// - `declare_length`: the upload's total length, sent with this request (tus's deferred
    ///   `Upload-Length`, the IETF draft's `Upload-Length`); recorded before the body is
    ///   written. Refused with [`crate::Problem::TotalMismatch`] when the upload already has
    ///   another length or holds more bytes, [`crate::Problem::TooLarge`] past its maximum.
    /// - `checksum`: what the body must hash to. The glue stages the body, hashes it, and only
    ///   then records it; on a mismatch it records nothing and refuses with
    ///   [`crate::Problem::ChecksumMismatch`], the offset unchanged.
    /// - `finish`: this request completes an upload whose completion is
    ///   [`Completion::Declared`], once its whole body is stored (see [`Write::finish`]).
    ///
    /// Bytes past the upload's length are refused with [`crate::Problem::PastLength`]; bytes
    /// sent to an upload that takes none (one assembled from parts) with
    /// [`crate::Problem::Forbidden`]. The body may be empty: an empty append to an upload that
    /// is complete but was never handed off retries the hand-off (see [`Outcome::Appended`]).
    Append {
        id: SessionId,
        offset: u64,
        declare_length: Option<u64>,
        checksum: Option<Checksum>,
        finish: bool,
    },
    /// Tell what upload `id` holds ([`Outcome::Inspected`]); the body, if any, is discarded.
    /// With `retry_hand_off`, an upload that is complete but that no backend has accepted
    /// (its hand-off failed, or the server stopped before it ran) is handed off by this request
    /// (and a final upload whose parts are all complete is assembled first), so that a client
    /// resuming after a failed hand-off either sees it succeed now or sees the failure again —
    /// never "complete" for a file the application did not take.
    Inspect { id: SessionId, retry_hand_off: bool },
    /// Remove upload `id`, data and state (tus termination, IETF cancellation); requests still
    /// writing to it may be cut off. Later requests for it find nothing ([`crate::Problem::NotFound`],
    /// or [`crate::Problem::Gone`] where the glue remembers it). Answered with
    /// [`Outcome::Terminated`].
    Terminate { id: SessionId },
    /// Create a new upload (under a generated id) assembled from the uploads `parts`, in this
    /// order (a part may appear more than once). Every part must be a partial upload
    /// ([`Create::partial`]); a missing one is a [`crate::Problem::NotFound`], one that is not
    /// partial a [`crate::Problem::BadRequest`], a sum over `max_size` a
    /// [`crate::Problem::TooLarge`]. When every part is complete the glue assembles the file
    /// now (copy_file_range) and hands it off in this request. Otherwise, if `unfinished_ok`
    /// (else it refuses with [`crate::Problem::BadRequest`]), it creates the new upload empty
    /// (its length the sum of the parts' once all are known), links each unfinished part to
    /// it, and answers it as not complete; the request that then completes its last part (a
    /// [`Plan::Append`], or a [`Plan::Create`] writing it) assembles it and hands it off,
    /// reporting its own part ([`Outcome::Appended`] with `hands_off`). A [`Plan::Inspect`]
    /// with `retry_hand_off` that finds the parts complete but the file not assembled or not
    /// taken assembles it and hands it off. A part terminated or expired meanwhile means the
    /// file can never be whole: the new upload is removed, [`crate::Problem::Gone`]. The new
    /// upload takes no bytes of its own ([`crate::Problem::Forbidden`] for an append).
    /// Answered with [`Outcome::Created`].
    Concatenate(Box<Concatenate>),
}

/// How an upload becomes complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// When its length is known and that many bytes are stored (tus).
    AtLength,
    /// Only when a request says so ([`Write::finish`]), once its whole body is stored; the
    /// upload's length is then the offset reached (it must equal a length declared before:
    /// [`crate::Problem::TotalMismatch`] otherwise, the bytes kept, the upload not complete).
    /// Reaching a declared length alone completes nothing (the IETF draft; also the model of
    /// "make file" calls of other services).
    Declared,
}

/// How a body is written into an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// What the body must hash to; see [`Plan::Append`].
    pub checksum: Option<Checksum>,
    /// The upload is complete once this body is stored entirely (for
    /// [`Completion::Declared`]); a body cut short leaves it incomplete.
    pub finish: bool,
}

/// A new upload; see [`Plan::Create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// The total length, when the client declared it; `None` while it is deferred (tus
    /// `Upload-Defer-Length: 1`) or unknown (IETF).
    pub length: Option<u64>,
    /// Most bytes the upload may ever hold: a length declared later, or bytes written while the
    /// length is unknown, beyond this are refused with [`crate::Problem::TooLarge`].
    pub max_size: u64,
    pub completion: Completion,
    /// Kept with the upload and reported back ([`Held::metadata`]); tus's `Upload-Metadata`.
    pub metadata: Metadata,
    /// Kept with the upload for the variables of its hand-off.
    pub file: FileFacts,
    /// A part of a later [`Plan::Concatenate`]: never handed off itself, however complete.
    pub partial: bool,
    /// Write the request's body at offset 0 once the upload exists (tus creation-with-upload,
    /// every IETF creation); `None`: the body, if any, is discarded.
    pub then_write: Option<Write>,
    /// An interim answer (IETF `104 Upload Resumption Supported`) to send once the upload
    /// exists and before the body is read: [`Interim::answer`] with the new id.
    pub interim: Option<Interim>,
}

/// An upload assembled from others; see [`Plan::Concatenate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concatenate {
    pub parts: Vec<SessionId>,
    /// Most bytes the assembled upload may have.
    pub max_size: u64,
    pub metadata: Metadata,
    pub file: FileFacts,
    /// The parts may still be incomplete (tus concatenation-unfinished).
    pub unfinished_ok: bool,
}

/// An interim (1xx) answer the glue sends once the upload exists; see [`Create::interim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interim {
    pub status: u16,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// The upload's URL is this followed by its id; it goes in a `Location` header.
    pub location_prefix: Vec<u8>,
}

impl Interim {
    /// The interim answer for the upload `id` (no body).
    pub fn answer(&self, id: &SessionId) -> Answer {
        let mut location = self.location_prefix.clone();
        location.extend_from_slice(id.as_str().as_bytes());
        let mut answer = Answer::status(self.status).header("Location", location);
        answer.headers.extend(self.headers.iter().cloned());
        answer
    }
}

/// What carrying out a plan came to.
///
/// For the plans of [`Plan::Create`] on, the glue reports the upload as it stands after the
/// request ([`Held`]) and whether this request hands it off (`hands_off`). The glue decides
/// that alone, the same way for every protocol: a request hands an upload off when, after it,
/// the upload is complete, not partial, not handed off yet ([`Stage::Stored`]), and this request
/// won the claim to hand it off (exactly one request does, even when several finish at once;
/// the claim dies with its process). A request on an upload that was handed off never hands it
/// off again. With `hands_off`, the protocol replies with a hand-off ([`Reply::HandOff`] or
/// [`Reply::HandOffWith`]); if the glue cannot hand off after all, it answers 500 and releases
/// the claim, leaving the upload [`Stage::Stored`].
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// What an upload holds, for [`Plan::Report`].
    Report(&'a SessionState),
    /// The request's bytes are recorded; the upload is not complete yet.
    Progress(&'a SessionState),
    /// The upload is complete and this request hands it off.
    Complete(&'a SessionState),
    /// [`Plan::Create`] or [`Plan::Concatenate`]: the upload exists, with what the request's
    /// body (if it was to be written) put in it.
    Created { upload: Held<'a>, hands_off: bool },
    /// [`Plan::Append`]: the body is recorded (all of it, or, for a body the client cut short,
    /// what arrived, when a protocol still answers). When it completed the last part of a
    /// final upload, `upload` is still the part, and `hands_off` hands off the final upload.
    Appended { upload: Held<'a>, hands_off: bool },
    /// [`Plan::Inspect`]: what the upload holds; `hands_off` when `retry_hand_off` found it
    /// complete and never accepted.
    Inspected { upload: Held<'a>, hands_off: bool },
    /// [`Plan::Terminate`]: the upload is gone.
    Terminated,
}

/// What the server holds of an upload, as the glue reports it to a protocol.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub id: &'a SessionId,
    /// Bytes stored contiguously from the start. For a final upload not assembled yet, 0.
    pub offset: u64,
    /// The total length, once known (for a final upload: the sum of its parts', once all are
    /// known).
    pub length: Option<u64>,
    pub stage: Stage,
    pub metadata: &'a [(Vec<u8>, Vec<u8>)],
    pub concat: Concat<'a>,
    /// When the upload expires, if the location expires uploads.
    pub expires: Option<Expiry>,
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Bytes are missing, or the completing request has not come yet ([`Completion::Declared`]);
    /// for a final upload: not assembled yet.
    Receiving,
    /// Every byte is stored (and, for [`Completion::Declared`], the client said so), and no
    /// backend has taken the file: it was never handed off (a partial upload never is), or its
    /// last hand-off failed (the backend answered 5xx, or not at all). When `hands_off` is
    /// true, this request holds the claim and hands it off now.
    Stored,
    /// Another request holds the claim and is handing it off now.
    HandingOff,
    /// A backend answered the hand-off with `status`, below 500: 2xx/3xx it took the file, 4xx
    /// it refused it. Either way its verdict is final: the upload is never handed off again.
    /// (The nginx glue forgets such an upload's state at once, as nginx-upload-module does, so
    /// it reports this stage to no request: later ones find no upload, 404.)
    HandedOff { status: u16 },
}

impl Stage {
    /// Every byte is stored and the upload takes no more.
    pub fn is_complete(self) -> bool {
        !matches!(self, Self::Receiving)
    }
}

/// An upload's place in a concatenation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concat<'a> {
    /// An ordinary upload.
    Single,
    /// A partial upload, a part of later final ones ([`Create::partial`]).
    Partial,
    /// An upload assembled from these parts ([`Plan::Concatenate`]).
    Final(&'a [SessionId]),
}

/// When an upload expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Unix time (seconds) after which the upload may be removed.
    pub at: u64,
    /// Unix time of the answer, to tell the time left.
    pub now: u64,
}

impl Expiry {
    /// Seconds left.
    pub fn remaining(self) -> u64 {
        self.at.saturating_sub(self.now)
    }
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
    /// Like [`Reply::HandOff`]: `headers` go on the backend's answer whatever it is, and
    /// `on_success` too when the backend answers 2xx (headers that would tell the client its
    /// upload succeeded: they must not reach it on a failure). When no backend answers, nginx's
    /// 502/504 is the answer (with `headers`). The backend gets a `POST` whatever the client's
    /// method; when the client's request is a `HEAD` (a hand-off retried by
    /// [`Plan::Inspect`]), the client gets the backend's status and headers only.
    HandOffWith {
        headers: Vec<(&'static str, Vec<u8>)>,
        on_success: Vec<(&'static str, Vec<u8>)>,
    },
}
