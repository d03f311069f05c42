//! Where one request's body goes: a segment of a resumable upload, a whole file, or a form's
//! files. The body sink hands each batch of body bytes to [`Target::write`]; what a target
//! records in the engine is described by [`Target::commit_of`].

use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};

use ngx_upload_engine::content_range::ContentRange;
use ngx_upload_engine::hash_state::HashProgress;
use ngx_upload_engine::hashing::{Algorithms, MultiHasher};
use ngx_upload_engine::session::{self, Commit, Session};
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

pub enum Target {
    Segment(SegmentTarget),
    Whole(WholeTarget),
    /// A browser form: any number of files and fields.
    Form(Box<FormUpload>),
}

impl Target {
    /// Writes body buffers at their place; `received` bytes of the body came before them.
    pub fn write(&mut self, received: u64, bufs: &[IoSlice<'_>]) -> Result<(), Failure> {
        let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        match self {
            Target::Form(form) => form.feed(bufs),
            Target::Segment(seg) => {
                let limit = seg.range.len();
                if received + len > limit {
                    return Err(Failure::new(
                        Problem::BodyLengthMismatch,
                        format!("body is longer than the {limit} bytes of its Content-Range"),
                    ));
                }
                let offset = seg.range.first + received;
                write_at(seg.session.file(), offset, bufs, seg.session.data_path())?;
                if let Some(progress) = &mut seg.stream_hash {
                    let mut at = offset;
                    for b in bufs {
                        progress.advance(at, b);
                        at += b.len() as u64;
                    }
                }
                Ok(())
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
                write_at(&whole.file, received, bufs, &whole.path)?;
                if let Some(hasher) = &mut whole.hasher {
                    bufs.iter().for_each(|b| hasher.update(b));
                }
                Ok(())
            }
        }
    }

    /// Whether the body's bytes are checkpointed while it streams: a raw segment's are.
    pub fn checkpoints(&self) -> bool {
        matches!(self, Target::Segment(_))
    }

    /// Whether this request writes a segment of a resumable upload (raw, or a form's part).
    pub fn has_segment(&self) -> bool {
        self.session().is_some()
    }

    /// The resumable upload this request writes into, if any.
    pub fn session(&self) -> Option<&Session> {
        match self {
            Target::Segment(seg) => Some(&seg.session),
            Target::Form(form) => form.segment.as_ref().map(|s| &s.session),
            Target::Whole(_) => None,
        }
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
            Target::Whole(_) => return None,
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

    /// Files this request stored on its own (not an upload's), for `upload_cleanup`.
    pub fn stored_files(&mut self) -> Vec<PathBuf> {
        match self {
            Target::Whole(whole) => vec![whole.path.clone()],
            Target::Form(form) => std::mem::take(&mut form.files),
            Target::Segment(_) => Vec::new(),
        }
    }

    /// Removes what a failed request stored that no upload keeps: a single-request file, the
    /// files of a form. Segments stay: they are part of an upload that may resume.
    pub fn discard_unfinished(&mut self) {
        match self {
            Target::Whole(whole) => remove_quietly(&whole.path),
            Target::Form(form) => form.files.drain(..).for_each(|p| remove_quietly(&p)),
            Target::Segment(_) => {}
        }
    }
}

fn write_at(file: &File, offset: u64, bufs: &[IoSlice<'_>], path: &Path) -> Result<(), Failure> {
    session::write_all_at(file, offset, bufs)
        .map_err(|e| Failure::io(format!("writing \"{}\" failed", path.display()), &e))
}

pub fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// A failed commit of `[start, end)`, saying which bytes and which state file.
pub fn commit_failure(
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
