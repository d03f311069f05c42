//! Requests of the resumable protocol: a [`Segment`] (`X-Content-Range`, `X-Session-ID`,
//! a disposition) or a whole single-request upload, and the `Range` reports they are answered
//! with.

use crate::http::{build_request, send_raw, Response};

/// Which header names a segment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderStyle {
    /// `X-Content-Range`, `X-Session-ID`.
    #[default]
    X,
    /// `Content-Range`, `Session-ID`.
    Plain,
}

/// One request of the resumable protocol (or a raw upload, without session and range).
#[derive(Debug, Clone, Default)]
pub struct Segment<'a> {
    pub session_id: Option<&'a str>,
    /// `(first, last, total)`, inclusive like the header.
    pub range: Option<(u64, u64, u64)>,
    pub style: HeaderStyle,
    /// With a field name the disposition is `form-data; name=…; filename=…`, without one
    /// `attachment; filename=…`.
    pub field_name: Option<&'a str>,
    pub filename: Option<&'a str>,
    /// A Content-Disposition sent as is instead of the one built from name and filename.
    pub disposition: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// More headers, sent last.
    pub extra_headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

impl<'a> Segment<'a> {
    /// All of `data` as one single-request upload: no session id, no range.
    pub fn whole(data: &'a [u8]) -> Self {
        Segment {
            session_id: None,
            range: None,
            ..Segment::piece("unused", data, 0, data.len() - 1)
        }
    }

    /// Bytes `first..=last` of `data` in session `session_id`: field `f`, file `big.TXT`,
    /// `text/plain`, X- headers.
    pub fn piece(session_id: &'a str, data: &'a [u8], first: usize, last: usize) -> Self {
        Segment {
            session_id: Some(session_id),
            range: Some((first as u64, last as u64, data.len() as u64)),
            field_name: Some("f"),
            filename: Some("big.TXT"),
            content_type: Some("text/plain"),
            body: &data[first..=last],
            ..Segment::default()
        }
    }

    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        if let Some(ct) = self.content_type {
            headers.push(("Content-Type".to_string(), ct.to_string()));
        }
        let disposition = match (self.disposition, self.field_name, self.filename) {
            (Some(d), _, _) => Some(d.to_string()),
            (None, Some(n), Some(f)) => Some(format!("form-data; name=\"{n}\"; filename=\"{f}\"")),
            (None, None, Some(f)) => Some(format!("attachment; filename=\"{f}\"")),
            (None, Some(n), None) => Some(format!("form-data; name=\"{n}\"")),
            (None, None, None) => None,
        };
        if let Some(d) = disposition {
            headers.push(("Content-Disposition".to_string(), d));
        }
        let (range_header, session_header) = match self.style {
            HeaderStyle::X => ("X-Content-Range", "X-Session-ID"),
            HeaderStyle::Plain => ("Content-Range", "Session-ID"),
        };
        if let Some((a, b, t)) = self.range {
            headers.push((range_header.to_string(), format!("bytes {a}-{b}/{t}")));
        }
        if let Some(s) = self.session_id {
            headers.push((session_header.to_string(), s.to_string()));
        }
        for (n, v) in &self.extra_headers {
            headers.push((n.to_string(), v.to_string()));
        }
        headers
    }

    pub fn to_request(&self, uri: &str) -> Vec<u8> {
        let headers = self.headers();
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        build_request("POST", uri, &refs, Some(self.body))
    }
}

/// POSTs one segment to `uri`.
pub fn post_segment(port: u16, uri: &str, segment: &Segment<'_>) -> Response {
    send_raw(port, &segment.to_request(uri))
}

/// The protocol's report of the inclusive `spans` received of a `total`-byte file: sorted,
/// overlapping and adjacent spans merged, `first-last/total` joined by commas.
pub fn expected_report(spans: &[(u64, u64)], total: u64) -> String {
    let mut sorted = spans.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in sorted {
        match merged.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
        .iter()
        .map(|(a, b)| format!("{a}-{b}/{total}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `first-last/total` → `(first, last)`, for a report of one range.
#[track_caller]
pub fn single_range(report: &str) -> (usize, usize) {
    let (span, _) = report.split_once('/').expect("a range");
    assert!(!report.contains(','), "one range expected: {report}");
    let (a, b) = span.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// Asserts a `201 Created` whose `Range` header and body both are `expected`.
#[track_caller]
pub fn assert_progress(response: &Response, expected: &str) {
    assert_eq!(
        response.status, 201,
        "expected 201 Created, got:\n{response}"
    );
    assert_eq!(
        response.header("range"),
        Some(expected),
        "Range header of:\n{response}"
    );
    assert_eq!(response.text(), expected, "201 body");
}
