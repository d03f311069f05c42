//! Carrying out the plans of the protocols that create an upload first and address it by id
//! (tus, the IETF draft): create, append at the offset, inspect, terminate, concatenate. Every
//! such request goes through the body sink, with or without a body, so that nginx has read
//! (or discarded) the body before the answer or the hand-off; the upload's own work happens
//! once the body is in ([`body_done`]).
//!
//! What an upload keeps beyond the engine's state lives in its metadata under the reserved
//! `ngx-upload.` keys (never shown to clients): how it completes, whether it is a part of a
//! concatenation, the facts of its file.

use std::time::{SystemTime, UNIX_EPOCH};

use ngx::ffi::{ngx_http_finalize_request, ngx_int_t};
use ngx::http::Request;

use ngx_upload_engine::assemble::{Assembled, Settled};
use ngx_upload_engine::hashing::{Algorithms, Digests, MultiHasher};
use ngx_upload_engine::session_id::SessionId;
use ngx_upload_engine::state::{Metadata as StoredMetadata, UploadState};
use ngx_upload_engine::upload::{Recorded, Upload, UploadError, UploadStore};
use ngx_upload_protocol::plan::{Completion, Concat, Concatenate, Create, Expiry, Held, Stage};
use ngx_upload_protocol::{Failure, FileFacts, Outcome, Problem, Protocol, Reply};

use crate::body;
use crate::conf::protocol::LocationProtocol;
use crate::conf::UploadConf;
use crate::context::{Facts, UploadCtx};
use crate::handoff;
use crate::request::{debug, refuse, RequestExt};
pub use crate::target::After;
use crate::target::{Assembly, Record, Target, UploadTarget};

/// Reserved metadata keys.
const RESERVED: &str = "ngx-upload.";
const COMPLETION_DECLARED: &str = "ngx-upload.completes-when-told";
const ANNOUNCED_LENGTH: &str = "ngx-upload.announced-length";
const PARTIAL: &str = "ngx-upload.partial";
const PARTS: &str = "ngx-upload.parts";
const FIELD_NAME: &str = "ngx-upload.field-name";
const FILE_NAME: &str = "ngx-upload.file-name";
const CONTENT_TYPE: &str = "ngx-upload.content-type";

/// A fresh upload id: 32 characters of `[A-Za-z0-9]` from the kernel's random source, so the
/// URL, the only key to an upload, cannot be guessed.
fn fresh_id() -> Result<SessionId, Failure> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = Vec::with_capacity(32);
    while id.len() < 32 {
        let mut bytes = [0u8; 64];
        // SAFETY: writes at most the length of `bytes`.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n <= 0 {
            return Err(Failure::internal("getrandom failed making an upload id"));
        }
        // 62 does not divide 256: dropping the top values keeps the characters uniform.
        id.extend(
            bytes[..n as usize]
                .iter()
                .filter(|b| (**b as usize) < 4 * ALPHABET.len())
                .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()]),
        );
    }
    id.truncate(32);
    SessionId::parse(&id).map_err(|e| Failure::internal(format!("upload id {e}")))
}

/// The engine's metadata for a new upload: the client's pairs and the reserved facts.
fn stored_metadata(
    pairs: &[(Vec<u8>, Vec<u8>)],
    file: &FileFacts,
    extra: &[(&str, Vec<u8>)],
) -> Result<StoredMetadata, Failure> {
    let mut out = StoredMetadata::new();
    for (key, value) in pairs {
        let key = String::from_utf8(key.clone())
            .ok()
            .filter(|k| !k.starts_with(RESERVED))
            .ok_or_else(|| {
                Failure::bad_request(format!(
                    "metadata key \"{}\" is not one this server keeps",
                    String::from_utf8_lossy(key)
                ))
            })?;
        out.insert(key, value.clone());
    }
    for (key, value) in [
        (FIELD_NAME, &file.field_name),
        (FILE_NAME, &file.file_name),
        (CONTENT_TYPE, &file.content_type),
    ] {
        if !value.is_empty() {
            out.insert(key.to_string(), value.clone());
        }
    }
    for (key, value) in extra {
        out.insert(key.to_string(), value.clone());
    }
    Ok(out)
}

/// The client's metadata pairs of a state, without the reserved ones.
fn client_metadata(state: &UploadState) -> Vec<(Vec<u8>, Vec<u8>)> {
    state
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with(RESERVED))
        .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
        .collect()
}

fn meta<'a>(state: &'a UploadState, key: &str) -> Option<&'a [u8]> {
    state.metadata.get(key).map(Vec::as_slice)
}

/// The parts of a final upload, as recorded.
fn parts_of(state: &UploadState) -> Vec<SessionId> {
    meta(state, PARTS)
        .unwrap_or_default()
        .split(|b| *b == b' ')
        .filter_map(|p| SessionId::parse(p).ok())
        .collect()
}

/// What the variables say of an upload's file: the facts given at creation, else what tus
/// clients send as metadata (`filename`/`name`, `filetype`/`type`).
fn facts_of(upload: &Upload, state: &UploadState) -> Facts {
    let pick = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| meta(state, k).filter(|v| !v.is_empty()))
            .unwrap_or_default()
            .to_vec()
    };
    let size = state.length.unwrap_or(state.offset());
    Facts {
        file: FileFacts {
            field_name: pick(&[FIELD_NAME]),
            file_name: pick(&[FILE_NAME, "filename", "name"]),
            content_type: pick(&[CONTENT_TYPE, "filetype", "type", "contentType"]),
        },
        path: upload.data_path().to_path_buf(),
        size,
        number: 1,
        content_range: Facts::whole_range(size),
        digests: None,
        id: upload.id().as_str().as_bytes().to_vec(),
        metadata: client_metadata(state),
    }
}

/// `Plan::Create`: a new upload, then its body (if the plan writes it) or its answer.
pub fn create(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    plan: Box<Create>,
) -> Result<ngx_int_t, Failure> {
    let id = fresh_id()?;
    let declared = plan.completion == Completion::Declared;
    let mut extra: Vec<(&str, Vec<u8>)> = Vec::new();
    if declared {
        extra.push((COMPLETION_DECLARED, b"1".to_vec()));
        if let Some(length) = plan.length {
            extra.push((ANNOUNCED_LENGTH, length.to_string().into_bytes()));
        }
    }
    if plan.partial {
        extra.push((PARTIAL, b"1".to_vec()));
    }
    let metadata = stored_metadata(&plan.metadata, &plan.file, &extra)?;
    // With a declared completion the length is recorded by the completing request.
    let length = if declared { None } else { plan.length };
    let upload = conf
        .uploads()
        .create(&id, length, metadata)
        .map_err(|e| Failure::from(e).context(format!("creating upload \"{id}\"")))?;
    if let Some(interim) = &plan.interim {
        request.send_interim(&interim.answer(&id));
    }
    let (checksum, completes) = match &plan.then_write {
        Some(write) => (write.checksum.clone(), write.finish),
        None => (None, false),
    };
    let write = plan.then_write.is_some();
    start(
        request,
        conf,
        protocol,
        upload,
        Writing {
            at: write.then_some(0),
            max_size: plan.max_size,
            checksum,
            completes: completes && declared,
            announced: plan.length.filter(|_| declared),
        },
        After::Created,
    )
}

/// What a `Plan::Append` asks.
pub struct Append {
    pub id: SessionId,
    pub offset: u64,
    pub declare_length: Option<u64>,
    pub checksum: Option<ngx_upload_protocol::checksum::Checksum>,
    pub finish: bool,
}

/// `Plan::Append`.
pub fn append(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    plan: Append,
) -> Result<ngx_int_t, Failure> {
    let Append {
        id,
        offset,
        declare_length,
        checksum,
        finish,
    } = plan;
    let id = &id;
    let upload = open(conf, id)?;
    let state = upload.state().clone();
    if meta(&state, PARTS).is_some() {
        return Err(Failure::new(
            Problem::Forbidden,
            format!("upload \"{id}\" is assembled from parts and takes no bytes"),
        ));
    }
    let declared = meta(&state, COMPLETION_DECLARED).is_some();
    let mut announced =
        meta(&state, ANNOUNCED_LENGTH).and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
    if let Some(length) = declare_length {
        if declared {
            if announced.is_some_and(|a| a != length) {
                return Err(Failure::new(
                    Problem::TotalMismatch,
                    format!("upload \"{id}\" was announced with another length than {length}"),
                ));
            }
            announced = Some(length);
        } else {
            upload
                .declare_length(length)
                .map_err(|e| Failure::from(e).context(format!("upload \"{id}\"")))?;
        }
    }
    let max_size = conf
        .tus_settings
        .as_ref()
        .map_or(u64::MAX, |s| s.max_size());
    start(
        request,
        conf,
        protocol,
        upload,
        Writing {
            at: Some(offset),
            max_size,
            checksum,
            completes: finish && declared,
            announced,
        },
        After::Appended,
    )
}

/// `Plan::Inspect` and `Plan::Terminate`: the upload, no bytes.
pub fn without_body(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    id: &SessionId,
    after: After,
) -> Result<ngx_int_t, Failure> {
    let upload = open(conf, id)?;
    // A request still writing this upload (a client that lost its connection, and now asks
    // again) is asked to stop, keeping what it received.
    let offset = upload.state().offset();
    if let Err(ngx_upload_engine::upload::UploadError::InFlight { .. }) = upload.claim(offset, None)
    {
        upload.ask_to_yield();
    }
    start(request, conf, protocol, upload, Writing::none(), after)
}

/// How long a request writing an upload must have received nothing before it yields to a
/// newer request: a client still sending (watched by someone polling `HEAD`, say) goes on.
const QUIET_BEFORE_YIELDING_MSEC: ngx::ffi::ngx_msec_t = 1000;

/// The body sink's `yield_to` for a request writing an upload: a newer request asked, after
/// this one took its claim (allowing for clocks of other nodes a little behind), and this one
/// has received nothing for a while (its client is gone or stalled).
fn asked_to_yield(ctx: &UploadCtx) -> bool {
    let Ok(target) = ctx.target.try_borrow() else {
        return false;
    };
    let Target::Upload(up) = &*target else {
        return false;
    };
    // Answered either way: yielding, or going on because bytes still arrive (a newer request
    // that needs the upload asks again).
    if !up.upload.take_ask_to_yield(up.claimed_at) {
        return false;
    }
    let quiet = crate::context::now_msec().wrapping_sub(ctx.progress.last_read_msec.get());
    quiet >= QUIET_BEFORE_YIELDING_MSEC
}

/// `Plan::Concatenate`: a new upload assembled from partial uploads. With every part complete
/// it is assembled and handed off now; else (concatenation-unfinished) it is created empty,
/// linked from each unfinished part, and the request completing the last part assembles it
/// and hands it off ([`assemble_ready_final`]).
pub fn concatenate(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    plan: Concatenate,
) -> Result<ngx_int_t, Failure> {
    let uploads = conf.uploads();
    let mut known = 0u64;
    let mut length = Some(0u64);
    let mut unfinished: Vec<Upload> = Vec::new();
    for (i, part) in plan.parts.iter().enumerate() {
        let upload = uploads
            .open(part)
            .map_err(|e| Failure::from(e).context(format!("part {} \"{part}\"", i + 1)))?;
        let state = upload.state();
        if meta(state, PARTIAL).is_none() {
            return Err(Failure::bad_request(format!(
                "part {} \"{part}\" is not a partial upload",
                i + 1
            )));
        }
        known = known.saturating_add(state.length.unwrap_or_default());
        length = length.zip(state.length).map(|(a, b)| a.saturating_add(b));
        if !state.is_complete() {
            if !plan.unfinished_ok {
                return Err(Failure::bad_request(format!(
                    "part {} \"{part}\" is not complete ({} bytes held); this server assembles \
                     only complete parts",
                    i + 1,
                    state.offset()
                )));
            }
            if !unfinished.iter().any(|u| u.id() == part) {
                unfinished.push(upload);
            }
        }
    }
    if known > plan.max_size {
        return Err(Failure::new(
            Problem::TooLarge,
            format!(
                "the parts add up to {known} bytes, more than {}",
                plan.max_size
            ),
        ));
    }
    if !unfinished.is_empty() {
        return create_awaiting_final(request, conf, protocol, plan, length, &unfinished);
    }
    let id = fresh_id()?;
    let names: Vec<&str> = plan.parts.iter().map(SessionId::as_str).collect();
    let extra = [(PARTS, names.join(" ").into_bytes())];
    let metadata = stored_metadata(&plan.metadata, &plan.file, &extra)?;
    // The copying runs on the thread pool once the request's body is in (body_done).
    let target = Target::Assembly(Box::new(Assembly {
        id,
        parts: plan.parts,
        metadata,
    }));
    let ctx = UploadCtx::new(
        request,
        conf,
        protocol,
        target,
        Facts::default(),
        body_done,
        no_parts,
    );
    Ok(body::install(request, ctx))
}

/// A final upload over parts some of which are unfinished: created empty (its length the sum
/// of the parts' if all are known), then named in the state of each unfinished part. Its
/// answer (`answer_without_body`) looks at the parts again, after the links: a part completed
/// before its link was recorded was not seen by its completing request, so this one
/// assembles then.
fn create_awaiting_final(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    plan: Concatenate,
    length: Option<u64>,
    unfinished: &[Upload],
) -> Result<ngx_int_t, Failure> {
    let id = fresh_id()?;
    let names: Vec<&str> = plan.parts.iter().map(SessionId::as_str).collect();
    let extra = [(PARTS, names.join(" ").into_bytes())];
    let metadata = stored_metadata(&plan.metadata, &plan.file, &extra)?;
    let upload = conf
        .uploads()
        .create(&id, length, metadata)
        .map_err(|e| Failure::from(e).context(format!("creating final upload \"{id}\"")))?;
    let uploads = conf.uploads();
    // A final that is complete, or gone, awaits nothing any more.
    let still_waiting = |fin: &SessionId| uploads.open(fin).is_ok_and(|f| !f.state().is_complete());
    for part in unfinished {
        if let Err(e) = part.add_awaited_by(&id, still_waiting) {
            // The part went meanwhile (terminated, expired): the final could never be whole.
            let _ = upload.terminate();
            return Err(Failure::from(e).context(format!("part \"{}\"", part.id())));
        }
    }
    debug(request, || {
        format!(
            "upload: final upload \"{id}\" awaits {} unfinished part(s)",
            unfinished.len()
        )
    });
    start(
        request,
        conf,
        protocol,
        upload,
        Writing::none(),
        After::Created,
    )
}

/// Assembles the upload of a concatenation on the thread pool, then answers it as created.
fn assemble(request: &mut Request, ctx: &UploadCtx) {
    let Target::Assembly(assembly) = &*ctx.target.borrow() else {
        return;
    };
    let uploads = ctx.conf.uploads().clone();
    let algorithms = ctx.conf.hash_algorithms();
    let (id, parts, metadata) = (
        assembly.id.clone(),
        assembly.parts.clone(),
        assembly.metadata.clone(),
    );
    let work = move || -> Result<Assembled, Failure> {
        // Built as a final upload awaiting its (complete) parts, which are then not claimed:
        // the request that has just completed the last one may still hold its claim on it.
        // The kernel copies (copy_file_range): no byte passes through this process.
        uploads
            .create(&id, None, metadata)
            .map_err(|e| Failure::from(e).context(format!("creating final upload \"{id}\"")))?;
        let settled = uploads.assemble_awaiting(&id, &parts, u64::MAX, algorithms);
        let failure = match settled {
            Ok(Settled::Assembled(assembled)) => return Ok(*assembled),
            Ok(Settled::PartGone { index, error }) => {
                Failure::from(error).context(format!("part {} \"{}\"", index + 1, parts[index]))
            }
            Ok(other) => Failure::internal(format!("complete parts came to {other:?}")),
            Err(e) => Failure::from(e),
        };
        // Nobody has its URL yet: nothing else would ever remove it.
        let _ = uploads.terminate(&id);
        Err(failure.context(format!("assembling upload \"{id}\"")))
    };
    body::run_blocking(request, ctx, work, |request, ctx, result| {
        let rc = body::flatten(result).and_then(|assembled| {
            let upload = assembled.upload;
            let state = upload.state().clone();
            let mut facts = facts_of(&upload, &state);
            facts.digests = assembled.digests.clone();
            *ctx.facts.borrow_mut() = facts;
            let recorded = Recorded {
                hand_off: true,
                expires_at: upload.expires_at(),
                state,
                digests: assembled.digests,
            };
            *ctx.target.borrow_mut() = Target::Upload(Box::new(UploadTarget {
                upload,
                claim: None,
                checksum: None,
                stream_hash: None,
                completes: false,
                announced: None,
                limit: 0,
                after: After::Created,
                claimed_at: SystemTime::now(),
            }));
            answer(request, ctx, After::Created, &recorded, None)
        });
        finalize(request, ctx, rc);
    });
}

fn open(conf: &UploadConf, id: &SessionId) -> Result<Upload, Failure> {
    conf.uploads()
        .open(id)
        .map_err(|e| Failure::from(e).context(format!("upload \"{id}\"")))
}

/// How a request writes into its upload.
struct Writing {
    /// The body is written from this offset; `None`: the request takes no body.
    at: Option<u64>,
    max_size: u64,
    checksum: Option<ngx_upload_protocol::checksum::Checksum>,
    completes: bool,
    announced: Option<u64>,
}

impl Writing {
    fn none() -> Self {
        Writing {
            at: None,
            max_size: u64::MAX,
            checksum: None,
            completes: false,
            announced: None,
        }
    }
}

/// Sets the request's context up and reads its body (the bytes to write, or nothing).
fn start(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    upload: Upload,
    writing: Writing,
    after: After,
) -> Result<ngx_int_t, Failure> {
    let state = upload.state().clone();
    let claim = match writing.at {
        Some(offset) => {
            let length = request
                .head()
                .content_length
                .filter(|_| !request.head().chunked);
            if let (Some(n), Some(announced)) = (length, writing.announced) {
                if offset.saturating_add(n) > announced {
                    return Err(Failure::new(
                        Problem::PastLength { length: announced },
                        format!(
                            "{n} bytes at {offset} go past the {announced} bytes announced for \
                             the upload"
                        ),
                    ));
                }
            }
            if let Some(n) = length {
                if offset.saturating_add(n) > writing.max_size {
                    return Err(Failure::new(
                        Problem::TooLarge,
                        format!(
                            "{n} bytes at {offset} would make the upload larger than {}",
                            writing.max_size
                        ),
                    ));
                }
            }
            match upload.claim_append(offset, length) {
                Ok(claim) => Some(claim),
                Err(e) => {
                    if matches!(e, ngx_upload_engine::upload::UploadError::InFlight { .. }) {
                        upload.ask_to_yield();
                    }
                    return Err(Failure::from(e).context(format!("upload \"{}\"", upload.id())));
                }
            }
        }
        None => None,
    };
    let algorithms = conf.hash_algorithms();
    let stream_hash = claim.as_ref().and_then(|c| c.streaming_hash(algorithms));
    let writes = claim.is_some();
    let facts = facts_of(&upload, &state);
    let target = Target::Upload(Box::new(UploadTarget {
        checksum: writing
            .checksum
            .map(|c| (c.clone(), MultiHasher::new(c.algorithm.into()))),
        upload,
        claim,
        stream_hash,
        completes: writing.completes,
        announced: writing.announced,
        limit: writing.announced.unwrap_or(u64::MAX).min(writing.max_size),
        after,
        claimed_at: SystemTime::now(),
    }));
    let mut ctx = UploadCtx::new(request, conf, protocol, target, facts, body_done, no_parts);
    if writes {
        ctx.yield_to = Some(asked_to_yield);
    }
    Ok(body::install(request, ctx))
}

fn no_parts(_: &mut Request, _: &UploadCtx) -> Result<(), Failure> {
    Ok(())
}

/// The body sink's `body_done` for an upload by id.
fn body_done(request: &mut Request, ctx: &UploadCtx) {
    let (after, writes) = match &*ctx.target.borrow() {
        Target::Upload(up) => (up.after, up.claim.is_some()),
        Target::Assembly(_) => (After::Created, false),
        _ => return,
    };
    if matches!(&*ctx.target.borrow(), Target::Assembly(_)) {
        return assemble(request, ctx);
    }
    if writes {
        if let Some(expected) = ctx.progress.expected.filter(|n| *n != ctx.received()) {
            let failure = Failure::bad_request(format!(
                "body ended after {} of {expected} bytes",
                ctx.received()
            ));
            return finalize(request, ctx, Err(failure));
        }
        let uploads = ctx.conf.uploads().clone();
        let (max_size, algorithms) = (largest_upload(ctx.conf), ctx.conf.hash_algorithms());
        body::run_commit(request, ctx, move |request, ctx, result| {
            let recorded = match body::flatten(result) {
                Ok(Record::Upload(recorded)) => recorded,
                Ok(Record::Session(_)) => {
                    let failure = Failure::internal("an upload recorded as a session");
                    return finalize(request, ctx, Err(failure));
                }
                Err(failure) => return finalize(request, ctx, Err(failure)),
            };
            if !completes_an_awaited_part(&recorded.state) {
                let rc = answer(request, ctx, after, &recorded, None);
                return finalize(request, ctx, rc);
            }
            // The body completed a part that final uploads await: the assembly of one whose
            // parts are now all complete copies files, on the thread pool.
            let job = move || {
                assemble_ready_final(&uploads, &recorded.state, max_size, algorithms)
                    .map(|handed| (recorded, handed))
            };
            body::run_blocking(request, ctx, job, move |request, ctx, result| {
                let rc = body::flatten(result)
                    .and_then(|(recorded, handed)| answer(request, ctx, after, &recorded, handed));
                finalize(request, ctx, rc);
            });
        });
        return;
    }
    answer_without_body(request, ctx, after);
}

fn finalize(request: &mut Request, ctx: &UploadCtx, rc: Result<ngx_int_t, Failure>) {
    match rc {
        // SAFETY: the live request; this ends the reference taken by
        // ngx_http_read_client_request_body.
        Ok(rc) => unsafe { ngx_http_finalize_request(request.raw(), rc) },
        Err(failure) => {
            let rc = refuse(request, &ctx.protocol, &failure);
            body::abort(request, ctx, rc);
        }
    }
}

/// A request that wrote nothing: inspect, terminate, a creation without a body. The engine's
/// work (unlinking a large file, reading one back to hash it before its hand-off) runs on the
/// thread pool.
fn answer_without_body(request: &mut Request, ctx: &UploadCtx, after: After) {
    let algorithms = ctx.conf.hash_algorithms();
    let upload = match &*ctx.target.borrow() {
        // A handle on the same open file description: the hand-off this work may claim is
        // held by the request's own handle as well.
        Target::Upload(up) => up.upload.try_clone().map_err(|e| {
            Failure::io(
                format!("duplicating \"{}\"", up.upload.data_path().display()),
                &e,
            )
        }),
        _ => Err(Failure::internal("not an upload")),
    };
    let upload = match upload {
        Ok(upload) => upload,
        Err(failure) => return finalize(request, ctx, Err(failure)),
    };
    let uploads = ctx.conf.uploads().clone();
    let max_size = largest_upload(ctx.conf);
    let work = move || -> Result<Option<(Recorded, Option<Handed>)>, Failure> {
        if after == After::Terminate {
            upload
                .terminate()
                .map_err(|e| Failure::from(e).context(format!("upload \"{}\"", upload.id())))?;
            return Ok(None);
        }
        let retries = after
            != (After::Inspect {
                retry_hand_off: false,
            });
        let awaited_parts = !upload.state().is_complete() && meta(upload.state(), PARTS).is_some();
        let state = match upload.current_state() {
            Ok(state) => state,
            // A final upload assembled by another request since this one opened it: the
            // assembly replaced the data file this handle has.
            Err(UploadError::Gone) if retries && awaited_parts => upload.state().clone(),
            Err(e) => return Err(e.into()),
        };
        if retries && !state.is_complete() && meta(&state, PARTS).is_some() {
            return settle_awaiting_final(&uploads, &upload, state, after, max_size, algorithms)
                .map(Some);
        }
        let claims = retries && state.is_complete() && meta(&state, PARTIAL).is_none();
        Ok(Some(if claims {
            // Complete and never handed off: this request may be the one to.
            (upload.finish(algorithms).map_err(Failure::from)?, None)
        } else {
            (
                Recorded {
                    hand_off: false,
                    expires_at: upload.expires_at(),
                    state,
                    digests: None,
                },
                None,
            )
        }))
    };
    body::run_blocking(request, ctx, work, move |request, ctx, result| {
        let rc = body::flatten(result).and_then(|recorded| match recorded {
            None => {
                let reply = ctx.protocol.reply(&Outcome::Terminated);
                Ok(request.send_reply(ctx.conf, reply))
            }
            Some((recorded, handed)) => answer(request, ctx, after, &recorded, handed),
        });
        finalize(request, ctx, rc);
    });
}

/// The protocol's reply to what the upload holds after this request; the hand-off if this
/// request is the one to.
///
/// `handed`: a final upload this request assembled (or claimed the hand-off of) and hands off
/// instead; `recorded` is then still what the request reports (the part a PATCH completed).
fn answer(
    request: &mut Request,
    ctx: &UploadCtx,
    after: After,
    recorded: &Recorded,
    handed: Option<Handed>,
) -> Result<ngx_int_t, Failure> {
    let state = &recorded.state;
    let id = match &*ctx.target.borrow() {
        Target::Upload(up) => up.upload.id().clone(),
        _ => return Err(Failure::internal("not an upload")),
    };
    let partial = meta(state, PARTIAL).is_some();
    let parts = parts_of(state);
    let hands_off = (recorded.hand_off && !partial) || handed.is_some();
    let complete = state.is_complete();
    let stage = match (complete, hands_off) {
        (false, _) => Stage::Receiving,
        (true, true) => Stage::Stored,
        // A partial upload is never handed off: complete, stored.
        (true, false) if partial => Stage::Stored,
        (true, false) => Stage::HandingOff,
    };
    let metadata = client_metadata(state);
    let concat = if partial {
        Concat::Partial
    } else if meta(state, PARTS).is_some() {
        Concat::Final(&parts)
    } else {
        Concat::Single
    };
    let expires = recorded.expires_at.map(|at| Expiry {
        at: unix(at),
        now: unix(SystemTime::now()),
    });
    let announced = meta(state, ANNOUNCED_LENGTH)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
    let held = Held {
        id: &id,
        offset: state.offset(),
        length: state.length.or(announced),
        stage,
        metadata: &metadata,
        concat,
        expires,
    };
    let outcome = match after {
        After::Created => Outcome::Created {
            upload: held,
            hands_off,
        },
        After::Appended => Outcome::Appended {
            upload: held,
            hands_off,
        },
        After::Inspect { .. } | After::Terminate => Outcome::Inspected {
            upload: held,
            hands_off,
        },
    };
    let reply = ctx.protocol.reply(&outcome);
    if !hands_off {
        return Ok(ctx.answer_recorded(request, reply));
    }
    let (state, digests) = match handed {
        None => (state.clone(), recorded.digests.clone()),
        Some(handed) => {
            debug(request, || {
                format!(
                    "upload: hands off final upload \"{}\" ({} bytes)",
                    handed.upload.id(),
                    handed.state.length.unwrap_or_default()
                )
            });
            // The request now stands for the final upload: the variables describe its file,
            // and the end of the request forgets (or keeps, for a retry) its state.
            *ctx.facts.borrow_mut() = facts_of(&handed.upload, &handed.state);
            if let Target::Upload(up) = &mut *ctx.target.borrow_mut() {
                up.upload = handed.upload;
                up.claim = None;
            }
            (handed.state, handed.digests)
        }
    };
    let state = &state;
    if let (Target::Upload(up), Some(length)) = (&*ctx.target.borrow(), state.length) {
        // Bytes past the length that were written but never recorded (a body refused for its
        // checksum, say) are not part of the file the backend gets.
        let file = up.upload.file();
        if file.metadata().is_ok_and(|m| m.len() > length) {
            file.set_len(length).map_err(|e| {
                Failure::io(
                    format!("truncating \"{}\"", up.upload.data_path().display()),
                    &e,
                )
            })?;
        }
    }
    {
        let mut facts = ctx.facts.borrow_mut();
        facts.size = state.length.unwrap_or(state.offset());
        facts.content_range = Facts::whole_range(facts.size);
        if digests.is_some() {
            facts.digests = digests;
        }
    }
    match reply {
        Reply::HandOff { headers } => handoff::hand_off(request, ctx, headers, Vec::new()),
        Reply::HandOffWith {
            headers,
            on_success,
        } => handoff::hand_off(request, ctx, headers, on_success),
        // The protocol answers instead of handing off: the hand-off's claim goes with this
        // request, the claim of the bytes now.
        reply @ Reply::Answer(_) => Ok(ctx.answer_recorded(request, reply)),
    }
}

/// A final upload a request hands off though it addressed another upload (the PATCH that
/// completed its last part), or after assembling it: its handle holds the hand-off.
struct Handed {
    upload: Upload,
    state: UploadState,
    digests: Option<Digests>,
}

impl From<Assembled> for Handed {
    fn from(assembled: Assembled) -> Self {
        Handed {
            state: assembled.upload.state().clone(),
            upload: assembled.upload,
            digests: assembled.digests,
        }
    }
}

/// Most bytes an upload of the location may have.
fn largest_upload(conf: &UploadConf) -> u64 {
    conf.tus_settings
        .as_ref()
        .map_or(u64::MAX, |s| s.max_size())
}

/// A commit left a partial upload complete, and final uploads await it.
fn completes_an_awaited_part(state: &UploadState) -> bool {
    state.is_complete() && !state.awaited_by.is_empty() && meta(state, PARTIAL).is_some()
}

/// On the thread pool: assembles final upload `id` (`state`: awaiting its parts) if its parts
/// are all complete and no other request is at it. One that can never be whole (a part is
/// gone, the parts are too large) is removed: nothing would ever hand it off.
fn settle_final(
    uploads: &UploadStore,
    id: &SessionId,
    state: &UploadState,
    max_size: u64,
    algorithms: Algorithms,
) -> Result<Settled, Failure> {
    let settled = uploads
        .assemble_awaiting(id, &parts_of(state), max_size, algorithms)
        .map_err(|e| Failure::from(e).context(format!("assembling final upload \"{id}\"")))?;
    if matches!(settled, Settled::PartGone { .. } | Settled::TooLarge { .. }) {
        // No request can assemble it now, so none is removing an assembled file here.
        let _ = uploads.terminate(id);
    }
    Ok(settled)
}

/// On the thread pool, after a commit that completed a partial upload (`part`, its state):
/// assembles the first final upload awaiting it whose parts are now all complete. Others that
/// are complete too are assembled by a `HEAD` of theirs: one request hands off one file.
fn assemble_ready_final(
    uploads: &UploadStore,
    part: &UploadState,
    max_size: u64,
    algorithms: Algorithms,
) -> Result<Option<Handed>, Failure> {
    for id in &part.awaited_by {
        // Terminated, expired, or handed off and forgotten: nothing awaits.
        let Ok(waiting) = uploads.open(id) else {
            continue;
        };
        let state = waiting.state();
        if state.is_complete() || meta(state, PARTS).is_none() {
            continue;
        }
        match settle_final(uploads, id, state, max_size, algorithms) {
            Ok(Settled::Assembled(assembled)) => return Ok(Some((*assembled).into())),
            Ok(_) => {}
            // Handed off by another request (and forgotten), or terminated, since it was
            // opened above.
            Err(failure) if matches!(failure.problem, Problem::NotFound | Problem::Gone) => {}
            Err(failure) => return Err(failure),
        }
    }
    Ok(None)
}

/// On the thread pool, for a request on final upload `upload` awaiting its parts (its own
/// creation, which looks at the parts again after linking them, or a `HEAD`): assembles it if
/// it can, and says what to answer.
fn settle_awaiting_final(
    uploads: &UploadStore,
    upload: &Upload,
    state: UploadState,
    after: After,
    max_size: u64,
    algorithms: Algorithms,
) -> Result<(Recorded, Option<Handed>), Failure> {
    let id = upload.id();
    let waiting = |state| Recorded {
        hand_off: false,
        expires_at: upload.expires_at(),
        state,
        digests: None,
    };
    let settled = match settle_final(uploads, id, &state, max_size, algorithms) {
        // Its creation, after the request that completed its last part assembled it, handed it
        // off and forgot it.
        Err(failure)
            if after == After::Created
                && matches!(failure.problem, Problem::NotFound | Problem::Gone) =>
        {
            Settled::Elsewhere
        }
        other => other?,
    };
    match settled {
        Settled::Assembled(assembled) => {
            let handed = Handed::from(*assembled);
            let recorded = Recorded {
                hand_off: true,
                expires_at: handed.upload.expires_at(),
                state: handed.state.clone(),
                digests: handed.digests.clone(),
            };
            Ok((recorded, Some(handed)))
        }
        Settled::Awaiting { length } => {
            // Reported once every part has its length (tus: "MUST if computable").
            let mut state = state;
            state.length = state.length.or(length);
            Ok((waiting(state), None))
        }
        Settled::PartGone { index, error } => Err(Failure::new(
            Problem::Gone,
            format!(
                "part {} of final upload \"{id}\" is gone ({error}): the final upload can \
                 never be whole and is removed",
                index + 1
            ),
        )),
        Settled::TooLarge { known } => Err(Failure::new(
            Problem::TooLarge,
            format!(
                "the parts of final upload \"{id}\" add up to {known} bytes, more than \
                 {max_size}; it is removed"
            ),
        )),
        // Its creation: the request that assembles it hands it off.
        Settled::Elsewhere if after == After::Created => Ok((waiting(state), None)),
        Settled::Elsewhere => {
            // Assembled by another request (whose hand-off may have failed), or being
            // assembled now: the upload as it is now, and its hand-off if unclaimed.
            let now = uploads
                .open(id)
                .map_err(|e| Failure::from(e).context(format!("final upload \"{id}\"")))?;
            let state = now.current_state().map_err(Failure::from)?;
            if !state.is_complete() {
                return Ok((waiting(state), None));
            }
            let recorded = now.finish(algorithms).map_err(Failure::from)?;
            if !recorded.hand_off {
                return Ok((recorded, None));
            }
            let handed = Handed {
                upload: now,
                state: recorded.state.clone(),
                digests: recorded.digests.clone(),
            };
            Ok((recorded, Some(handed)))
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
