//! Helpers the protocols' unit tests share: request heads, ids, upload facts, answers.

use crate::answer::Answer;
use crate::head::{Method, RequestHead};
use crate::plan::{Concat, Held, Reply, Stage};
use ngx_upload_engine::session_id::SessionId;

/// A request head as nginx would hand it over: `Content-Length` and chunked encoding read
/// from `headers`.
pub fn head<'a>(method: Method, uri: &'a str, headers: &[(&'a str, &'a str)]) -> RequestHead<'a> {
    let mut h = RequestHead::new(method, uri.as_bytes());
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("content-length") {
            h.content_length = v.parse().ok();
        }
        if n.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = true;
        }
        h.headers.push((n.as_bytes(), v.as_bytes()));
    }
    h
}

pub fn id(s: &str) -> SessionId {
    SessionId::parse(s.as_bytes()).unwrap()
}

/// A single upload (no concatenation, no metadata, no expiry) at `offset`.
pub fn held<'a>(id: &'a SessionId, offset: u64, length: Option<u64>, stage: Stage) -> Held<'a> {
    Held {
        id,
        offset,
        length,
        stage,
        metadata: &[],
        concat: Concat::Single,
        expires: None,
    }
}

/// The protocol's own answer of `reply`; a hand-off panics.
pub fn answer(reply: Reply) -> Answer {
    match reply {
        Reply::Answer(a) => a,
        other => panic!("not an answer: {other:?}"),
    }
}

/// Header `name` of `a`, as text.
pub fn value<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.header_value(name)
        .map(|v| std::str::from_utf8(v).unwrap())
}
