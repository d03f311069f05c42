//! The content handler of an `upload_pass` location: asks the location's protocol for a plan,
//! carries it out (opens where the body goes, then lets the body sink stream it there), and
//! answers with the protocol's reply to the outcome, or hands the finished file off.

use ngx::ffi::{ngx_http_finalize_request, ngx_http_request_t, ngx_int_t, NGX_ERROR};
use ngx::http::{HttpModuleLocationConf, Request};

use ngx_upload_engine::content_range::ContentRange;
use ngx_upload_engine::hashing::{Algorithms, MultiHasher};
use ngx_upload_engine::session::Committed;
use ngx_upload_engine::session_id::SessionId;
use ngx_upload_engine::store;
use ngx_upload_protocol::{Failure, FileFacts, Outcome, Plan, Problem, Protocol, Reply};

use crate::body;
use crate::conf::protocol::LocationProtocol;
use crate::conf::UploadConf;
use crate::context::{Facts, UploadCtx};
use crate::form::{Finished, FormUpload};
use crate::handoff;
use crate::request::{debug, refuse, RequestExt};
use crate::target::{Record, SegmentTarget, Target, WholeTarget};
use crate::uploads;
use crate::Module;

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
    let protocol = conf.protocol_for(&request.head());
    let plan = protocol.plan(&request.head());
    debug(request, || match &plan {
        Ok(plan) => format!("upload: plan {}", plan_name(plan)),
        Err(f) => format!("upload: refused: {}", f.message),
    });
    match plan.and_then(|plan| carry_out(request, conf, protocol, plan)) {
        Ok(rc) => rc,
        Err(failure) => refuse_request(request, conf, protocol, failure),
    }
}

/// A body this small is read (and dropped) before a refusal is answered: over HTTP/2, an
/// answer sent while the client still sends ends in a stream reset that clients report as a
/// failure, not as the answer.
const READ_BEFORE_REFUSING: u64 = 64 << 10;

/// Refuses a request before its body is read: at once, or once a small body has been read.
fn refuse_request(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    failure: Failure,
) -> ngx_int_t {
    let head = request.head();
    let small_body = !head.chunked
        && head
            .content_length
            .is_some_and(|n| n > 0 && n <= READ_BEFORE_REFUSING);
    if !small_body || !request.as_ref().request_body.is_null() {
        return refuse(request, &protocol, &failure);
    }
    let ctx = UploadCtx::new(
        request,
        conf,
        protocol,
        Target::Refused(Some(failure)),
        Facts::default(),
        refuse_after_body,
        |_, _| Ok(()),
    );
    body::install(request, ctx)
}

/// The body sink's `body_done` for [`Target::Refused`].
fn refuse_after_body(request: &mut Request, ctx: &UploadCtx) {
    let failure = match &mut *ctx.target.borrow_mut() {
        Target::Refused(failure) => failure.take(),
        _ => None,
    };
    let failure = failure.unwrap_or_else(|| Failure::internal("refused twice"));
    let rc = refuse(request, &ctx.protocol, &failure);
    body::abort(request, ctx, rc);
}

fn plan_name(plan: &Plan) -> String {
    match plan {
        Plan::Answer(a) => format!("answer {}", a.status),
        Plan::Report { id } => format!("report of \"{id}\""),
        Plan::Segment { id, range, .. } => format!("segment {range} of \"{id}\""),
        Plan::Whole { id: Some(id), .. } => format!("whole file \"{id}\""),
        Plan::Whole { id: None, .. } => "whole file".to_string(),
        Plan::Form { .. } => "form".to_string(),
        Plan::Create(_) => "create".to_string(),
        Plan::Append { id, offset, .. } => format!("append at {offset} to \"{id}\""),
        Plan::Inspect { id, .. } => format!("inspect \"{id}\""),
        Plan::Terminate { id } => format!("terminate \"{id}\""),
        Plan::Concatenate(c) => format!("concatenate {} parts", c.parts.len()),
    }
}

/// Carries a plan out; `Ok` is what the content handler returns.
fn carry_out(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    plan: Plan,
) -> Result<ngx_int_t, Failure> {
    let (target, facts) = match plan {
        Plan::Answer(answer) => {
            request.add_configured_headers(conf);
            return Ok(request.send_answer(&answer));
        }
        Plan::Report { id } => return report(request, conf, protocol, &id),
        Plan::Segment { id, range, file } => open_segment(conf, &id, range, file)?,
        Plan::Whole { id, max_size, file } => open_whole(conf, id.as_ref(), max_size, file)?,
        Plan::Form {
            content_type,
            session_id,
        } => {
            let form = FormUpload::new(
                conf,
                &content_type,
                request.log(),
                &request.unique_token(),
                session_id.as_deref(),
            )?;
            (Target::Form(Box::new(form)), Facts::default())
        }
        // The plans of protocols that create uploads and address them by id.
        Plan::Create(create) => return uploads::create(request, conf, protocol, create),
        Plan::Append {
            id,
            offset,
            declare_length,
            checksum,
            finish,
        } => {
            let append = uploads::Append {
                id,
                offset,
                declare_length,
                checksum,
                finish,
            };
            return uploads::append(request, conf, protocol, append);
        }
        Plan::Inspect { id, retry_hand_off } => {
            let after = uploads::After::Inspect { retry_hand_off };
            return uploads::without_body(request, conf, protocol, &id, after);
        }
        Plan::Terminate { id } => {
            return uploads::without_body(request, conf, protocol, &id, uploads::After::Terminate)
        }
        Plan::Concatenate(plan) => return uploads::concatenate(request, conf, protocol, *plan),
    };
    let ctx = UploadCtx::new(
        request,
        conf,
        protocol,
        target,
        facts,
        body_done,
        describe_finished_files,
    );
    Ok(body::install(request, ctx))
}

/// `Plan::Report`: what an upload holds.
fn report(
    request: &mut Request,
    conf: &'static UploadConf,
    protocol: LocationProtocol,
    id: &SessionId,
) -> Result<ngx_int_t, Failure> {
    match conf.sessions().progress(id)? {
        Some(state) => {
            let reply = protocol.reply(&Outcome::Report(&state));
            Ok(request.send_reply(conf, reply))
        }
        None => Err(Failure::new(
            Problem::NotFound,
            format!("status query for unknown session \"{id}\""),
        )),
    }
}

/// `Plan::Segment`: opens (or starts) the upload for bytes `range`.
fn open_segment(
    conf: &UploadConf,
    id: &SessionId,
    range: ContentRange,
    file: FileFacts,
) -> Result<(Target, Facts), Failure> {
    let session = conf
        .sessions()
        .open(id, &range)
        .map_err(|e| Failure::from(e).context(format!("session \"{id}\"")))?;
    let stream_hash = session.streaming_hash(&range, conf.hash_algorithms());
    let facts = Facts {
        file,
        path: session.data_path().to_path_buf(),
        size: range.total,
        number: 1,
        content_range: range.to_string(),
        digests: None,
        ..Facts::default()
    };
    let target = Target::Segment(SegmentTarget {
        session,
        range,
        stream_hash,
    });
    Ok((target, facts))
}

/// `Plan::Whole`: a new numbered file, or the file named by `id`.
fn open_whole(
    conf: &UploadConf,
    id: Option<&SessionId>,
    max_size: u64,
    file: FileFacts,
) -> Result<(Target, Facts), Failure> {
    let sessions = conf.sessions();
    let (data_dir, file_mode) = (&sessions.data, sessions.file_mode);
    let io_failure = |e: std::io::Error| {
        Failure::internal(format!(
            "cannot create a file in \"{}\": {e}",
            data_dir.root.display()
        ))
    };
    let (path, out) = match id {
        Some(id) => {
            if sessions.progress(id)?.is_some() {
                return Err(Failure::new(
                    Problem::Exists,
                    format!(
                        "session \"{id}\" is a resumable upload in progress; a body without \
                         Content-Range would overwrite it"
                    ),
                ));
            }
            let path = data_dir.path_of(id.as_str()).ok_or_else(|| {
                Failure::bad_request(format!(
                    "session id \"{id}\" is shorter than the {} characters of upload_store levels",
                    data_dir.min_name_len()
                ))
            })?;
            let out = store::open_rw(&path, file_mode).map_err(io_failure)?;
            out.set_len(0).map_err(io_failure)?;
            (path, out)
        }
        None => store::create_numbered(data_dir, file_mode).map_err(io_failure)?,
    };
    let algorithms = conf.hash_algorithms();
    let facts = Facts {
        file,
        path: path.clone(),
        number: 1,
        ..Facts::default()
    };
    let target = Target::Whole(WholeTarget {
        path,
        file: out,
        max_size,
        hasher: (algorithms != Algorithms::NONE).then(|| MultiHasher::new(algorithms)),
    });
    Ok((target, facts))
}

/// Adds the fields of the form parts that ended: a passed field as it came, a file as its
/// evaluated `upload_*_form_field` templates, with the variables describing that file.
fn describe_finished_files(request: &mut Request, ctx: &UploadCtx) -> Result<(), Failure> {
    loop {
        // Each borrow ends before templates are evaluated: evaluation reads the context
        // through the variables.
        let (next, segment) = match &mut *ctx.target.borrow_mut() {
            Target::Form(form) => (
                form.next_finished(),
                form.segment
                    .as_ref()
                    .map(|s| (s.session.data_path().to_path_buf(), s.range)),
            ),
            _ => (None, None),
        };
        let fields = match next {
            None => return Ok(()),
            Some(Finished::Field { name, value }) => vec![(name, value)],
            Some(Finished::File(stored)) => {
                // A segment part's range is its own; any other file is whole.
                let content_range = match segment {
                    Some((path, range)) if path == stored.path => range.to_string(),
                    _ => Facts::whole_range(stored.size),
                };
                *ctx.facts.borrow_mut() = Facts {
                    content_range,
                    file: FileFacts {
                        field_name: stored.field_name,
                        file_name: stored.file_name,
                        content_type: stored.content_type,
                    },
                    path: stored.path,
                    size: stored.size,
                    number: stored.number,
                    digests: stored.digests,
                    ..Facts::default()
                };
                handoff::evaluate_fields(request, ctx.conf)?
            }
        };
        if let Target::Form(form) = &mut *ctx.target.borrow_mut() {
            for (name, value) in fields {
                form.add_field(&name, &value)?;
            }
        }
    }
}

/// The body sink's `body_done`: the whole body is in its file.
fn body_done(request: &mut Request, ctx: &UploadCtx) {
    match complete(request, ctx) {
        // SAFETY: the request is live; this ends the reference taken by
        // ngx_http_read_client_request_body.
        Ok(Some(rc)) => unsafe { ngx_http_finalize_request(request.raw(), rc) },
        Ok(None) => {} // the segment is being recorded; answer_committed answers
        Err(failure) => {
            let rc = refuse(request, &ctx.protocol, &failure);
            body::abort(request, ctx, rc);
        }
    }
}

/// Answers a request whose body is complete, or starts recording a segment off the event loop
/// (`Ok(None)`).
fn complete(request: &mut Request, ctx: &UploadCtx) -> Result<Option<ngx_int_t>, Failure> {
    let received = ctx.received();
    let is_form = matches!(&*ctx.target.borrow(), Target::Form(_));
    if is_form {
        if let Target::Form(form) = &mut *ctx.target.borrow_mut() {
            form.finish()?;
        }
        describe_finished_files(request, ctx)?;
        if ctx.target.borrow().has_segment() {
            return record_segment(request, ctx).map(|()| None);
        }
        return handoff::hand_off(request, ctx, Vec::new(), Vec::new()).map(Some);
    }
    if let Some(expected) = ctx.progress.expected.filter(|n| *n != received) {
        return Err(Failure::bad_request(format!(
            "body ended after {received} of {expected} bytes"
        )));
    }
    let segment_range = match &*ctx.target.borrow() {
        Target::Segment(seg) => Some(seg.range),
        _ => None,
    };
    if let Some(range) = segment_range {
        if received != range.len() {
            return Err(Failure::new(
                Problem::BodyLengthMismatch,
                format!("body of {received} bytes does not fill Content-Range \"{range}\""),
            ));
        }
        return record_segment(request, ctx).map(|()| None);
    }
    if received == 0 {
        return Err(Failure::bad_request("a raw upload needs a non-empty body"));
    }
    let digests = match &mut *ctx.target.borrow_mut() {
        Target::Whole(whole) => whole.hasher.take().map(MultiHasher::finish),
        _ => None,
    };
    {
        let mut facts = ctx.facts.borrow_mut();
        facts.size = received;
        facts.content_range = Facts::whole_range(received);
        facts.digests = digests;
    }
    handoff::hand_off(request, ctx, Vec::new(), Vec::new()).map(Some)
}

/// Records the request's complete segment. Recording that may fsync, or read the file back to
/// hash it, runs off the event loop (see [`body::run_commit`]); [`answer_committed`] answers.
fn record_segment(request: &mut Request, ctx: &UploadCtx) -> Result<(), Failure> {
    body::run_commit(request, ctx, |request, ctx, result| {
        let rc = body::flatten(result).and_then(|record| match record {
            Record::Session(committed) => answer_committed(request, ctx, committed),
            Record::Upload(_) => Err(Failure::internal("a segment recorded as an upload")),
        });
        match rc {
            // SAFETY: the request is live; this ends the reference taken by
            // ngx_http_read_client_request_body.
            Ok(rc) => unsafe { ngx_http_finalize_request(request.raw(), rc) },
            Err(failure) => {
                let rc = refuse(request, &ctx.protocol, &failure);
                body::abort(request, ctx, rc);
            }
        }
    });
    Ok(())
}

/// A segment is recorded: answer with the protocol's reply to the progress, or hand the
/// complete file off if this request is the one to.
fn answer_committed(
    request: &mut Request,
    ctx: &UploadCtx,
    committed: Committed,
) -> Result<ngx_int_t, Failure> {
    ctx.progress.recorded.set(ctx.received());
    let state = committed.state;
    debug(request, || {
        format!(
            "upload: recorded, holds {}{}",
            state.received.report(state.total),
            if committed.hand_off {
                ", handing off"
            } else {
                ""
            }
        )
    });
    if !state.is_complete() {
        // The other files of a form carrying a segment go with it: nothing is handed off.
        ctx.discard_unfinished();
        let reply = ctx.protocol.reply(&Outcome::Progress(&state));
        return Ok(ctx.answer_recorded(request, reply));
    }
    if !committed.hand_off {
        return Err(Failure::new(
            Problem::HandOffBusy,
            format!(
                "session file \"{}\" is complete and another request is handing it off",
                ctx.target
                    .borrow()
                    .session()
                    .map(|s| s.data_path().display().to_string())
                    .unwrap_or_default()
            ),
        ));
    }
    let headers = match ctx.protocol.reply(&Outcome::Complete(&state)) {
        Reply::HandOff { headers } | Reply::HandOffWith { headers, .. } => headers,
        Reply::Answer(_) => {
            return Err(Failure::internal("the protocol answered a complete upload"));
        }
    };
    let digests = committed.digests;
    let described_segment = match &mut *ctx.target.borrow_mut() {
        Target::Form(form) => {
            // The segment's file joins the form, described like any file part.
            form.describe_segment(digests.clone());
            true
        }
        _ => false,
    };
    if described_segment {
        describe_finished_files(request, ctx)?;
    } else {
        ctx.facts.borrow_mut().digests = digests;
    }
    handoff::hand_off(request, ctx, headers, Vec::new())
}
