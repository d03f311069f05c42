//! Where one request's body goes: a segment of a resumable upload, a whole file, or a form's
//! files. The body sink hands each batch of body bytes to [`Target::write`]; what a target
//! records in the engine is described by [`Target::commit_of`].

use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};

use ngx_upload_engine::content_range::ContentRange;
use ngx_upload_engine::hash_state::HashProgress;
use ngx_upload_engine::hashing::{Algorithms, MultiHasher};
use ngx_upload_engine::session::{self, Commit, Committed, Session};
use ngx_upload_engine::upload::{Claim, Recorded, Upload};
use ngx_upload_protocol::checksum::Checksum;
use ngx_upload_protocol::{Failure, Problem};

use crate::form::FormUpload;

/// A segment of a resumable upload, written at `range.first`.
pub struct SegmentTarget {
    pub session: Session,
    pub range: ContentRange,
    /// A segment that continues the upload's hashed prefix carries the hashes on as its bytes
    /// stream by.
    pub stream_hash: Option<HashProgress>,
}

/// A whole file in one request: a new numbered file, or one named by the session id.
pub struct WholeTarget {
    pub path: PathBuf,
    pub file: File,
    pub max_size: u64,
    /// Hashes computed as the bytes stream by, when a template uses them.
    pub hasher: Option<MultiHasher>,
}

/// An upload created and addressed by id (tus, the IETF draft): the body, if any, is written
/// through a claim at the upload's offset.
pub struct UploadTarget {
    pub upload: Upload,
    /// The claim of the bytes this request writes; `None` for a request without a body.
    pub claim: Option<Claim>,
    /// What the body must hash to, and its hash as it streams by: nothing is recorded before
    /// it matches.
    pub checksum: Option<(Checksum, MultiHasher)>,
    /// Hashes of the upload carried on as the bytes stream by.
    pub stream_hash: Option<HashProgress>,
    /// The upload's length is the offset this body reaches once it is stored entirely (the
    /// IETF draft's `Upload-Complete: ?1`); `announced`, if any, must agree.
    pub completes: bool,
    pub announced: Option<u64>,
    /// Bytes the body may not go past: the announced length, or the location's maximum.
    pub limit: u64,
    /// What the request does once its body is in.
    pub after: After,
    /// When this request took its claim: a newer request's ask to yield is later.
    pub claimed_at: std::time::SystemTime,
}

/// An upload to assemble from complete partial ones (tus concatenation), on the thread pool
/// once the request's (empty) body is in; it becomes a [`Target::Upload`] then.
pub struct Assembly {
    pub id: ngx_upload_engine::session_id::SessionId,
    pub parts: Vec<ngx_upload_engine::session_id::SessionId>,
    pub metadata: ngx_upload_engine::state::Metadata,
}

pub enum Target {
    /// A request refused before its body was read: the (small) body is read and dropped, then
    /// the refusal answered.
    Refused(Option<Failure>),
    Segment(SegmentTarget),
    Assembly(Box<Assembly>),
    Whole(WholeTarget),
    /// A browser form: any number of files and fields.
    Form(Box<FormUpload>),
    Upload(Box<UploadTarget>),
}

/// What a request on an upload by id does once its body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Created,
    Appended,
    Inspect { retry_hand_off: bool },
    Terminate,
}

/// What recording an upload's bytes came to.
pub enum Record {
    Session(Committed),
    Upload(Recorded),
}

/// Where body bytes that are only written go (see [`Target::plain_placement`]).
pub struct Placement {
    /// The upload's open data file, which lives as long as the request's target.
    pub fd: std::os::fd::RawFd,
    pub offset: u64,
    pub path: PathBuf,
}

/// Recording work to run on the thread pool.
pub type CommitJob = Box<dyn FnOnce() -> Result<Record, Failure> + Send>;

impl Target {
    /// Writes body buffers at their place; `received` bytes of the body came before them.
    pub fn write(&mut self, received: u64, bufs: &[IoSlice<'_>]) -> Result<(), Failure> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        match self {
            Target::Form(form) => form.feed(bufs),
            Target::Refused(_) => Ok(()),
            Target::Assembly(_) => Err(Failure::bad_request(
                "a concatenation takes no body of its own",
            )),
            Target::Upload(_) | Target::Segment(_) | Target::Whole(_) => {
                // None: the plan writes no body (a creation of another media type): discarded.
                if let Some((file, offset, path)) = self.place(received, len)? {
                    write_at(file, offset, bufs, path)?;
                    self.hash_written(offset, bufs);
                }
                Ok(())
            }
        }
    }

    /// Where `len` body bytes go when nothing but writing them is done with them (no hash or
    /// checksum carried on, no form to parse), after the checks [`Target::write`] makes: so
    /// that they can be written off the event loop. `None` when the bytes are needed here.
    pub fn plain_placement(&self, received: u64, len: u64) -> Option<Result<Placement, Failure>> {
        let plain = match self {
            Target::Segment(seg) => seg.stream_hash.is_none(),
            Target::Upload(up) => {
                up.claim.is_some() && up.checksum.is_none() && up.stream_hash.is_none()
            }
            Target::Whole(whole) => whole.hasher.is_none(),
            Target::Form(_) | Target::Refused(_) | Target::Assembly(_) => false,
        };
        if !plain {
            return None;
        }
        Some(self.place(received, len).and_then(|place| {
            let (file, offset, path) =
                place.ok_or_else(|| Failure::internal("this request writes no bytes"))?;
            Ok(Placement {
                fd: std::os::fd::AsRawFd::as_raw_fd(file),
                offset,
                path: path.to_path_buf(),
            })
        }))
    }

    /// The file, offset and path `len` bytes go to, `received` bytes into the body, once they
    /// are known to fit; `None` for an upload request that writes no body.
    fn place(&self, received: u64, len: u64) -> Result<Option<(&File, u64, &Path)>, Failure> {
        match self {
            Target::Upload(up) => {
                let Some(claim) = &up.claim else {
                    return Ok(None);
                };
                let offset = claim.start() + received;
                if offset + len > up.limit {
                    return Err(Failure::new(
                        match up.announced {
                            Some(length) => Problem::PastLength { length },
                            None => Problem::TooLarge,
                        },
                        format!("body goes past byte {} the upload may have", up.limit),
                    ));
                }
                if offset + len > claim.end() {
                    return Err(Failure::new(
                        Problem::PastLength {
                            length: claim.state().length.unwrap_or(claim.end()),
                        },
                        format!("body goes past byte {} the upload may have", claim.end()),
                    ));
                }
                Ok(Some((claim.file(), offset, claim.data_path())))
            }
            Target::Segment(seg) => {
                let limit = seg.range.len();
                if received + len > limit {
                    return Err(Failure::new(
                        Problem::BodyLengthMismatch,
                        format!("body is longer than the {limit} bytes of its Content-Range"),
                    ));
                }
                let offset = seg.range.first + received;
                Ok(Some((seg.session.file(), offset, seg.session.data_path())))
            }
            Target::Whole(whole) => {
                if received + len > whole.max_size {
                    return Err(Failure::new(
                        Problem::TooLarge,
                        format!(
                            "file is larger than upload_max_file_size {}",
                            whole.max_size
                        ),
                    ));
                }
                Ok(Some((&whole.file, received, &whole.path)))
            }
            Target::Form(_) | Target::Refused(_) | Target::Assembly(_) => Ok(None),
        }
    }

    /// Carries the hashes and checksum of the upload on over bytes written at `offset`.
    fn hash_written(&mut self, offset: u64, bufs: &[IoSlice<'_>]) {
        let (hasher, progress) = match self {
            Target::Upload(up) => (
                up.checksum.as_mut().map(|(_, h)| h),
                up.stream_hash.as_mut(),
            ),
            Target::Segment(seg) => (None, seg.stream_hash.as_mut()),
            Target::Whole(whole) => (whole.hasher.as_mut(), None),
            Target::Form(_) | Target::Refused(_) | Target::Assembly(_) => return,
        };
        if let Some(hasher) = hasher {
            bufs.iter().for_each(|b| hasher.update(b));
        }
        if let Some(progress) = progress {
            let mut at = offset;
            for b in bufs {
                progress.advance(at, b);
                at += b.len() as u64;
            }
        }
    }

    /// Whether the body's bytes are checkpointed while it streams: a raw segment's are.
    pub fn checkpoints(&self) -> bool {
        match self {
            Target::Segment(_) => true,
            // A body with a checksum is recorded whole once it matches, or not at all.
            Target::Upload(up) => up.claim.is_some() && up.checksum.is_none(),
            _ => false,
        }
    }

    /// Whether this request writes bytes of an upload that keeps what arrived (a segment, raw
    /// or a form's part; an append without a checksum).
    pub fn has_segment(&self) -> bool {
        self.session().is_some() || self.checkpoints()
    }

    /// The resumable upload this request writes into, if any.
    pub fn session(&self) -> Option<&Session> {
        match self {
            Target::Segment(seg) => Some(&seg.session),
            Target::Form(form) => form.segment.as_ref().map(|s| &s.session),
            Target::Whole(_) | Target::Upload(_) | Target::Assembly(_) | Target::Refused(_) => None,
        }
    }

    /// The recording of the bytes written so far (`received` bytes of the body), to run on the
    /// thread pool; `finishing` once the body is complete. `None` when nothing is recorded.
    pub fn commit_job(
        &mut self,
        received: u64,
        finishing: bool,
        algorithms: Algorithms,
    ) -> Option<Result<CommitJob, Failure>> {
        if let Target::Upload(up) = self {
            return up.commit_job(received, finishing, algorithms);
        }
        let (session, commit) = self.commit_of(received, finishing, algorithms)?;
        let session = match session.try_clone() {
            Ok(s) => s,
            Err(e) => {
                return Some(Err(Failure::io(
                    format!("duplicating \"{}\"", session.data_path().display()),
                    &e,
                )))
            }
        };
        let finishing = commit.finishing;
        Some(Ok(Box::new(move || {
            let range = (commit.start, commit.end);
            let committed = session
                .commit(commit)
                .map_err(|e| commit_failure(&session, range, e))?;
            if finishing && !committed.hand_off {
                // Recorded, and nothing to hand off: the claim goes here (on the thread pool,
                // when the commit runs there) rather than on the event loop just before the
                // answer (UploadCtx::answer_recorded then finds it gone).
                let _ = session.release_claim();
            }
            Ok(Record::Session(committed))
        })))
    }

    /// The commit of the segment bytes written so far (`received` bytes of a raw body);
    /// `finishing` once the body is complete.
    pub fn commit_of(
        &mut self,
        received: u64,
        finishing: bool,
        algorithms: Algorithms,
    ) -> Option<(&Session, Commit)> {
        let (session, range, written, stream_hash) = match self {
            Target::Segment(seg) => (&seg.session, seg.range, received, &mut seg.stream_hash),
            Target::Form(form) => {
                let seg = form.segment.as_deref_mut()?;
                (&seg.session, seg.range, seg.written, &mut seg.stream_hash)
            }
            Target::Whole(_) | Target::Upload(_) | Target::Assembly(_) | Target::Refused(_) => {
                return None
            }
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
            algorithms,
            finishing,
        };
        Some((session, commit))
    }

    /// Gives up the claim on the bytes this request was writing, once they are recorded and
    /// before it answers: a resend on another connection must not find them claimed by a
    /// request nginx has not freed yet. A claim of the hand-off stays.
    pub fn release_claim(&mut self) {
        let session = match self {
            Target::Upload(up) => {
                up.claim = None;
                return;
            }
            Target::Segment(seg) => &seg.session,
            Target::Form(form) => match &form.segment {
                Some(seg) => &seg.session,
                None => return,
            },
            Target::Whole(_) | Target::Assembly(_) | Target::Refused(_) => return,
        };
        // Failing, the claim lasts until the request is freed, as it did before.
        let _ = session.release_claim();
    }

    /// Files this request stored on its own (not an upload's), for `upload_cleanup`.
    pub fn stored_files(&mut self) -> Vec<PathBuf> {
        match self {
            Target::Whole(whole) => vec![whole.path.clone()],
            Target::Form(form) => std::mem::take(&mut form.files),
            Target::Segment(_) | Target::Upload(_) | Target::Assembly(_) | Target::Refused(_) => {
                Vec::new()
            }
        }
    }

    /// Removes what a failed request stored that no upload keeps: a single-request file, the
    /// files of a form. Segments stay: they are part of an upload that may resume.
    pub fn discard_unfinished(&mut self) {
        match self {
            Target::Whole(whole) => remove_quietly(&whole.path),
            Target::Form(form) => form.files.drain(..).for_each(|p| remove_quietly(&p)),
            Target::Segment(_) | Target::Upload(_) | Target::Assembly(_) | Target::Refused(_) => {}
        }
    }
}

impl UploadTarget {
    fn commit_job(
        &mut self,
        received: u64,
        finishing: bool,
        algorithms: Algorithms,
    ) -> Option<Result<CommitJob, Failure>> {
        let claim = self.claim.as_ref()?;
        if finishing {
            if let Some((expected, hasher)) = self.checksum.take() {
                let digests = hasher.finish();
                let got = digests.raw(expected.algorithm).unwrap_or_default();
                if !constant_time_eq(got, &expected.digest) {
                    return Some(Err(Failure::new(
                        Problem::ChecksumMismatch,
                        format!(
                            "the body's {} does not match Upload-Checksum; nothing recorded",
                            expected.algorithm
                        ),
                    )));
                }
            }
        }
        let claim = match claim.try_clone() {
            Ok(c) => c,
            Err(e) => {
                return Some(Err(Failure::io(
                    format!("duplicating \"{}\"", claim.data_path().display()),
                    &e,
                )))
            }
        };
        let start = claim.start();
        let end = start + received;
        let hashes = if finishing {
            self.stream_hash.take()
        } else {
            self.stream_hash.clone()
        };
        let declare = (finishing && self.completes).then_some(end);
        let announced = self.announced;
        Some(Ok(Box::new(move || {
            let commit = Commit {
                start,
                end,
                hashes,
                algorithms,
                finishing,
            };
            let recorded = claim.commit(commit).map_err(|e| {
                Failure::from(e).context(format!(
                    "recording bytes {start}-{} in \"{}\"",
                    end.saturating_sub(1),
                    claim.state_path().display()
                ))
            })?;
            let Some(length) = declare else {
                return Ok(Record::Upload(recorded));
            };
            if announced.is_some_and(|a| a != length) {
                return Err(Failure::new(
                    Problem::TotalMismatch,
                    format!(
                        "the upload ends at {length} bytes, not the {} announced",
                        announced.unwrap_or_default()
                    ),
                ));
            }
            // The body completes the upload: its length is where the body ended.
            claim.declare_length(length).map_err(Failure::from)?;
            let recorded = claim
                .commit(Commit {
                    start: end,
                    end,
                    hashes: None,
                    algorithms,
                    finishing: true,
                })
                .map_err(Failure::from)?;
            Ok(Record::Upload(recorded))
        })))
    }
}

/// Compares two digests in time that depends on their length only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_at(file: &File, offset: u64, bufs: &[IoSlice<'_>], path: &Path) -> Result<(), Failure> {
    session::write_all_at(file, offset, bufs)
        .map_err(|e| Failure::io(format!("writing \"{}\" failed", path.display()), &e))
}

pub fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// A failed commit of `[start, end)`, saying which bytes and which state file.
fn commit_failure(
    session: &Session,
    (start, end): (u64, u64),
    e: session::SessionError,
) -> Failure {
    Failure::from(e).context(format!(
        "recording bytes {start}-{} in \"{}\"",
        end.saturating_sub(1),
        session.state_path().display(),
    ))
}
