//! Streaming `multipart/form-data` (RFC 7578, framing from RFC 2046 §5.1): the body of a
//! browser form post carrying files.
//!
//! The body arrives in buffers split wherever the network or nginx split it, and a file part can
//! be gigabytes, so [`MultipartParser`] is a push parser: it is fed slices in order, never keeps
//! a part body, and hands body bytes to a [`PartSink`] as borrowed slices of the input as soon as
//! they cannot be the start of a delimiter. All it keeps between calls is the current header
//! line (at most [`Limits::max_part_header_len`] bytes) and the headers of the current part;
//! a possible delimiter cut by the end of an input is remembered as a count of matched bytes,
//! since those bytes are the delimiter's own.
//!
//! What is accepted follows nginx-upload-module where that is sane: a preamble is skipped, the
//! delimiter may also be a bare `\n--boundary` (old Internet Explorer), transport padding may
//! follow it, the epilogue after `--boundary--` is ignored, and a body that ends right after a
//! delimiter line without the closing `--` has all its parts ([`Ending::Unclosed`]). Where the
//! C module silently skipped junk after a delimiter, or handed off a body cut inside a part,
//! this one reports a malformed body: a body holding its own delimiter can only be cut wrongly,
//! and a part cut short is not a part.

use core::convert::Infallible;
use core::fmt;

use crate::disposition::{self, Disposition, DispositionError};

/// RFC 2046: a boundary is 1 to 70 characters.
pub const MAX_BOUNDARY_LEN: usize = 70;

/// Bounds on what a client can make the parser keep in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest part header line, line ending excluded (`upload_max_part_header_len`).
    pub max_part_header_len: usize,
    /// Most header lines in one part: each is kept until the part starts.
    pub max_part_headers: usize,
}

impl Default for Limits {
    /// 512 is the C module's default `upload_max_part_header_len`; browsers send two or three
    /// header lines per part.
    fn default() -> Self {
        Self {
            max_part_header_len: 512,
            max_part_headers: 32,
        }
    }
}

/// Why a Content-Type or a body was refused, or the sink's own error.
///
/// Every variant but [`Sink`](Self::Sink) and [`Failed`](Self::Failed) is the client's fault
/// (400 Bad Request, or 415 for [`NotMultipartFormData`](Self::NotMultipartFormData) if the
/// caller prefers). The default `E` is for errors that cannot come from a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartError<E = Infallible> {
    /// The Content-Type is not `type/subtype *(; parameter)`.
    BadContentType,
    /// The Content-Type is another media type than `multipart/form-data`.
    NotMultipartFormData,
    /// The Content-Type has no `boundary` parameter, or an empty one.
    NoBoundary,
    /// The boundary is over 70 bytes, holds a control byte, or is given twice.
    BadBoundary,
    /// A delimiter is followed by something other than padding and a line end, or `--`.
    BadDelimiter,
    /// A part header line is not `name: value` (folded lines included).
    BadPartHeader,
    /// A part header line is longer than [`Limits::max_part_header_len`].
    PartHeaderTooLong,
    /// A part has more header lines than [`Limits::max_part_headers`].
    TooManyPartHeaders,
    /// A part has no `Content-Disposition`.
    NoDisposition,
    /// A part's `Content-Disposition` does not parse.
    BadDisposition(DispositionError),
    /// A part's `Content-Disposition` is `attachment` or `inline`, not `form-data`.
    DispositionNotFormData,
    /// The body ended before the closing delimiter.
    Truncated,
    /// The parser was fed or finished after it had already failed, or fed after
    /// [`MultipartParser::finish`]: a bug in the caller.
    Failed,
    /// The sink refused a part start, some data or a part end.
    Sink(E),
}

impl<E> MultipartError<E> {
    /// Changes the sink error, e.g. to wrap it or to turn it into a status code.
    pub fn map_sink<F>(self, f: impl FnOnce(E) -> F) -> MultipartError<F> {
        use MultipartError::*;
        match self {
            BadContentType => BadContentType,
            NotMultipartFormData => NotMultipartFormData,
            NoBoundary => NoBoundary,
            BadBoundary => BadBoundary,
            BadDelimiter => BadDelimiter,
            BadPartHeader => BadPartHeader,
            PartHeaderTooLong => PartHeaderTooLong,
            TooManyPartHeaders => TooManyPartHeaders,
            NoDisposition => NoDisposition,
            BadDisposition(e) => BadDisposition(e),
            DispositionNotFormData => DispositionNotFormData,
            Truncated => Truncated,
            Failed => Failed,
            Sink(e) => Sink(f(e)),
        }
    }
}

impl MultipartError {
    /// An error that holds no sink error as one of any sink's error type.
    pub fn with_sink_error<E>(self) -> MultipartError<E> {
        self.map_sink(|never| match never {})
    }
}

impl<E: fmt::Display> fmt::Display for MultipartError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MultipartError::*;
        match self {
            BadContentType => f.write_str("malformed Content-Type"),
            NotMultipartFormData => f.write_str("Content-Type is not multipart/form-data"),
            NoBoundary => f.write_str("no boundary in Content-Type"),
            BadBoundary => f.write_str("invalid boundary in Content-Type"),
            BadDelimiter => f.write_str("malformed multipart delimiter"),
            BadPartHeader => f.write_str("malformed part header"),
            PartHeaderTooLong => f.write_str("part header too long"),
            TooManyPartHeaders => f.write_str("too many part headers"),
            NoDisposition => f.write_str("part has no Content-Disposition"),
            BadDisposition(e) => write!(f, "part Content-Disposition {e}"),
            DispositionNotFormData => f.write_str("part Content-Disposition is not form-data"),
            Truncated => f.write_str("multipart body ends before its closing delimiter"),
            Failed => f.write_str("multipart parser used after an error"),
            Sink(e) => e.fmt(f),
        }
    }
}

/// The `boundary` parameter of a `multipart/form-data` Content-Type, unquoted.
///
/// Parameters are parsed one by one rather than searched for `boundary=`, so that
/// `charset="x; boundary=y"` or `xboundary=y` cannot pass for it; a second `boundary` is
/// refused, since two readers could pick different ones.
pub fn boundary_from_content_type(value: &[u8]) -> Result<Vec<u8>, MultipartError> {
    use MultipartError::*;
    let rest = skip_ws(value);
    let type_len = token_len(rest);
    let (media_type, rest) = rest.split_at(type_len);
    let rest = rest.strip_prefix(b"/").ok_or(BadContentType)?;
    let subtype_len = token_len(rest);
    let (subtype, mut rest) = rest.split_at(subtype_len);
    if type_len == 0 || subtype_len == 0 {
        return Err(BadContentType);
    }
    if !media_type.eq_ignore_ascii_case(b"multipart") || !subtype.eq_ignore_ascii_case(b"form-data")
    {
        return Err(NotMultipartFormData);
    }
    let mut boundary = None;
    loop {
        rest = skip_ws(rest);
        if rest.is_empty() {
            break;
        }
        rest = skip_ws(rest.strip_prefix(b";").ok_or(BadContentType)?);
        if rest.is_empty() || rest[0] == b';' {
            continue; // empty parameters (`a/b;`, `a/b;;c=d`) are harmless
        }
        let name_len = token_len(rest);
        if name_len == 0 {
            return Err(BadContentType);
        }
        let (name, tail) = rest.split_at(name_len);
        let tail = skip_ws(tail).strip_prefix(b"=").ok_or(BadContentType)?;
        let tail = skip_ws(tail);
        let (param, tail) = match tail.strip_prefix(b"\"") {
            Some(quoted_value) => quoted(quoted_value).ok_or(BadContentType)?,
            None => {
                let n = tail
                    .iter()
                    .take_while(|b| !matches!(b, b';' | b' ' | b'\t' | b'"'))
                    .count();
                (tail[..n].to_vec(), &tail[n..])
            }
        };
        if name.eq_ignore_ascii_case(b"boundary") {
            if boundary.is_some() {
                return Err(BadBoundary);
            }
            boundary = Some(param);
        }
        rest = tail;
    }
    let boundary = boundary.ok_or(NoBoundary)?;
    check_boundary(&boundary)?;
    Ok(boundary)
}

/// Control bytes are refused: a boundary holding CR or LF could never be found, and the
/// delimiter search relies on `\n` occurring in the delimiter only at its start.
fn check_boundary(boundary: &[u8]) -> Result<(), MultipartError> {
    if boundary.is_empty() {
        Err(MultipartError::NoBoundary)
    } else if boundary.len() > MAX_BOUNDARY_LEN || boundary.iter().any(|b| is_ctl(*b)) {
        Err(MultipartError::BadBoundary)
    } else {
        Ok(())
    }
}

/// What the sink wants done with the body of a part it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartAction {
    /// Pass the body to [`PartSink::part_data`].
    Accept,
    /// Discard the body (a field not passed through, a file refused); `part_end` still follows.
    Skip,
}

/// The headers of one part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHeaders {
    /// The `Content-Disposition`, whose type is always `form-data`.
    pub disposition: Disposition,
    /// The `Content-Type` value, trimmed, if the part has one.
    pub content_type: Option<Vec<u8>>,
    /// Every other header as sent (`Content-Range`, `Session-ID`, ...), in order.
    pub other: Vec<(Vec<u8>, Vec<u8>)>,
}

impl PartHeaders {
    /// The form field name; empty if the disposition has none, as the C module had it.
    pub fn name(&self) -> &[u8] {
        self.disposition.name.as_deref().unwrap_or_default()
    }

    /// The file name exactly as sent, path included.
    pub fn raw_filename(&self) -> Option<&[u8]> {
        self.disposition.filename.as_deref()
    }

    /// The file name without its path, for a file part.
    pub fn filename(&self) -> Option<&[u8]> {
        self.raw_filename()
            .map(disposition::base_name)
            .filter(|name| !name.is_empty())
    }

    /// Whether the part is a file: it has a file name that is not empty once its path is
    /// stripped. Browsers send `filename=""` for a file input left empty, and the C module
    /// judged by the stripped name too.
    pub fn is_file(&self) -> bool {
        self.filename().is_some()
    }

    pub fn content_type(&self) -> Option<&[u8]> {
        self.content_type.as_deref()
    }

    /// The first header among [`other`](Self::other) named `name`, case-insensitively.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.other
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Receives the parts of a body in order: `part_start`, any number of `part_data`, `part_end`.
///
/// When the parser or the sink fails, the current part gets no `part_end`: the sink treats a
/// started part without one as aborted.
pub trait PartSink {
    type Error;

    fn part_start(&mut self, headers: &PartHeaders) -> Result<PartAction, Self::Error>;

    /// Some body bytes of the current accepted part, never empty.
    fn part_data(&mut self, data: &[u8]) -> Result<(), Self::Error>;

    /// The current part, accepted or skipped, ended with a delimiter.
    fn part_end(&mut self) -> Result<(), Self::Error>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter; what is seen is discarded.
    Preamble,
    /// Just past `--boundary`.
    AfterDelimiter(After),
    Headers,
    Body,
    /// Past the closing delimiter; the epilogue is discarded.
    Done,
    /// Finished right after a delimiter line, without the closing delimiter.
    Unclosed,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Start,
    /// One `-` of a closing `--`.
    Dash,
    /// Spaces or tabs of transport padding.
    Padding,
    /// The `\r` of the line end.
    Cr,
}

/// How a complete body ended, as [`MultipartParser::finish`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// With the closing delimiter `--boundary--`.
    Closed,
    /// Right after a delimiter line, without the closing `--`: some clients send that, and
    /// nginx-upload-module takes the form. Worth a log line, not a refusal.
    Unclosed,
}

/// A push parser for one `multipart/form-data` body.
#[derive(Debug, Clone)]
pub struct MultipartParser {
    /// `\r\n--boundary`: the delimiter before every part but the first (whose `\r\n` is
    /// optional) and the bytes held back when an input ends inside it.
    delim: Vec<u8>,
    limits: Limits,
    state: State,
    /// How many bytes of `\n--boundary` the last input ended with (in the preamble, starts at
    /// 1: the body start counts as a line start).
    matched: usize,
    /// The last input ended with a `\r` that may begin a delimiter, or one is part of the
    /// `matched` bytes.
    held_cr: bool,
    /// The current part's body goes to the sink.
    accept: bool,
    /// The header line read so far.
    line: Vec<u8>,
    header_lines: usize,
    disposition: Option<Disposition>,
    content_type: Option<Vec<u8>>,
    other: Vec<(Vec<u8>, Vec<u8>)>,
}

impl MultipartParser {
    /// A parser for a body whose boundary is `boundary` (as returned by
    /// [`boundary_from_content_type`], which checks it the same way).
    pub fn new(boundary: &[u8], limits: Limits) -> Result<Self, MultipartError> {
        check_boundary(boundary)?;
        let mut delim = Vec::with_capacity(boundary.len() + 4);
        delim.extend_from_slice(b"\r\n--");
        delim.extend_from_slice(boundary);
        Ok(Self {
            delim,
            limits,
            state: State::Preamble,
            matched: 1,
            held_cr: false,
            accept: false,
            line: Vec::new(),
            header_lines: 0,
            disposition: None,
            content_type: None,
            other: Vec::new(),
        })
    }

    /// Whether the closing delimiter has been seen: the rest of the body is epilogue.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Parses the next bytes of the body. After an error, the parser only answers
    /// [`MultipartError::Failed`].
    pub fn feed<S: PartSink>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> Result<(), MultipartError<S::Error>> {
        if matches!(self.state, State::Failed | State::Unclosed) {
            // Failed, or finished: the body has ended.
            return Err(MultipartError::Failed);
        }
        let result = self.run(input, sink);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Ends the body. It is complete if it reached the closing delimiter, or, as
    /// nginx-upload-module has it, if it ended right after a delimiter line (`--boundary`,
    /// with or without its line end, padding or one `-` of the closing `--`): every part got
    /// its [`PartSink::part_end`] and no part was begun, so nothing is missing but the `--`
    /// ([`Ending::Unclosed`]). A body that ends anywhere else (in the preamble, inside a
    /// part's headers or body) fails with [`MultipartError::Truncated`], the current part
    /// without its `part_end`. The sink is not called; it gives the error the same type as
    /// `feed`'s. After an `Unclosed` end, `finish` answers the same and `feed` fails.
    pub fn finish<S: PartSink>(
        &mut self,
        _sink: &mut S,
    ) -> Result<Ending, MultipartError<S::Error>> {
        match self.state {
            State::Done => Ok(Ending::Closed),
            State::Unclosed => Ok(Ending::Unclosed),
            State::AfterDelimiter(_) => {
                self.state = State::Unclosed;
                Ok(Ending::Unclosed)
            }
            // Just past a delimiter's line end, before any header byte of a new part.
            State::Headers if self.line.is_empty() && self.header_lines == 0 => {
                self.state = State::Unclosed;
                Ok(Ending::Unclosed)
            }
            State::Failed => Err(MultipartError::Failed),
            _ => {
                self.state = State::Failed;
                Err(MultipartError::Truncated)
            }
        }
    }

    fn run<S: PartSink>(
        &mut self,
        input: &[u8],
        sink: &mut S,
    ) -> Result<(), MultipartError<S::Error>> {
        let mut pos = 0;
        while pos < input.len() {
            pos = match self.state {
                State::Preamble | State::Body => self.body(input, pos, sink)?,
                State::AfterDelimiter(after) => {
                    self.after_delimiter(after, input[pos])?;
                    pos + 1
                }
                State::Headers => self.headers(input, pos, sink)?,
                State::Done => input.len(),
                State::Failed | State::Unclosed => {
                    unreachable!("feed checks for Failed and Unclosed and stops on errors")
                }
            };
        }
        Ok(())
    }

    /// Scans preamble or part body from `pos` for the next delimiter, passing body bytes on;
    /// returns where the delimiter ends, or the input's end.
    fn body<S: PartSink>(
        &mut self,
        input: &[u8],
        pos: usize,
        sink: &mut S,
    ) -> Result<usize, MultipartError<S::Error>> {
        let emit = self.state == State::Body && self.accept;
        let mut search = pos;
        if self.held_cr || self.matched > 0 {
            // The previous input ended in what may be a delimiter: go on matching it.
            let want = &self.delim[1 + self.matched..];
            let n = common_prefix_len(&input[pos..], want);
            if n == want.len() {
                self.held_cr = false;
                self.matched = 0;
                return self.delimiter(pos + n, sink);
            }
            if pos + n == input.len() {
                self.matched += n;
                return Ok(input.len());
            }
            // It was body after all. The boundary holds no `\n`, so no other delimiter can
            // start inside the held bytes or the `n` just matched.
            let held = &self.delim[usize::from(!self.held_cr)..1 + self.matched];
            if emit && !held.is_empty() {
                sink.part_data(held).map_err(MultipartError::Sink)?;
            }
            self.held_cr = false;
            self.matched = 0;
            search = pos + n;
        }
        let want = &self.delim[1..];
        loop {
            let Some(offset) = find_byte(b'\n', &input[search..]) else {
                let mut end = input.len();
                if end > pos && input[end - 1] == b'\r' {
                    end -= 1;
                    self.held_cr = true;
                }
                if emit && end > pos {
                    sink.part_data(&input[pos..end])
                        .map_err(MultipartError::Sink)?;
                }
                return Ok(input.len());
            };
            let lf = search + offset;
            let n = common_prefix_len(&input[lf..], want);
            if n == want.len() || lf + n == input.len() {
                // A delimiter, or the start of one cut by the end of the input.
                let cr = lf > pos && input[lf - 1] == b'\r';
                let end = lf - usize::from(cr);
                if emit && end > pos {
                    sink.part_data(&input[pos..end])
                        .map_err(MultipartError::Sink)?;
                }
                if n == want.len() {
                    return self.delimiter(lf + n, sink);
                }
                self.held_cr = cr;
                self.matched = n;
                return Ok(input.len());
            }
            search = lf + 1;
        }
    }

    fn delimiter<S: PartSink>(
        &mut self,
        end: usize,
        sink: &mut S,
    ) -> Result<usize, MultipartError<S::Error>> {
        if self.state == State::Body {
            sink.part_end().map_err(MultipartError::Sink)?;
        }
        self.state = State::AfterDelimiter(After::Start);
        Ok(end)
    }

    /// One byte after `--boundary`: `--` closes the body, else optional spaces or tabs and a
    /// CRLF or LF start a part's headers.
    fn after_delimiter<E>(&mut self, after: After, byte: u8) -> Result<(), MultipartError<E>> {
        self.state = match (after, byte) {
            (After::Start, b'-') => State::AfterDelimiter(After::Dash),
            (After::Dash, b'-') => State::Done,
            (After::Start | After::Padding, b' ' | b'\t') => State::AfterDelimiter(After::Padding),
            (After::Start | After::Padding, b'\r') => State::AfterDelimiter(After::Cr),
            (After::Start | After::Padding | After::Cr, b'\n') => {
                self.line.clear();
                self.header_lines = 0;
                self.disposition = None;
                self.content_type = None;
                self.other.clear();
                State::Headers
            }
            _ => return Err(MultipartError::BadDelimiter),
        };
        Ok(())
    }

    /// Reads header bytes from `pos` up to the end of a line or of the input.
    fn headers<S: PartSink>(
        &mut self,
        input: &[u8],
        pos: usize,
        sink: &mut S,
    ) -> Result<usize, MultipartError<S::Error>> {
        let rest = &input[pos..];
        let lf = find_byte(b'\n', rest);
        let chunk = &rest[..lf.unwrap_or(rest.len())];
        // `+ 1`: a last `\r` belongs to the line end, not to the limited line.
        if self.line.len() + chunk.len() > self.limits.max_part_header_len.saturating_add(1) {
            return Err(MultipartError::PartHeaderTooLong);
        }
        self.line.extend_from_slice(chunk);
        let Some(lf) = lf else {
            return Ok(input.len());
        };
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        if self.line.len() > self.limits.max_part_header_len {
            return Err(MultipartError::PartHeaderTooLong);
        }
        if self.line.is_empty() {
            self.start_part(sink)?;
        } else {
            let line = core::mem::take(&mut self.line);
            let result = self.header_line(&line);
            self.line = line;
            self.line.clear();
            result?;
        }
        Ok(pos + lf + 1)
    }

    fn header_line<E>(&mut self, line: &[u8]) -> Result<(), MultipartError<E>> {
        use MultipartError::*;
        self.header_lines += 1;
        if self.header_lines > self.limits.max_part_headers {
            return Err(TooManyPartHeaders);
        }
        // Folded continuation lines (obsolete, RFC 7230 §3.2.4) start with a blank, which no
        // name holds.
        let colon = line.iter().position(|b| *b == b':').ok_or(BadPartHeader)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(BadPartHeader);
        }
        let value = trim_ws(&line[colon + 1..]);
        if value.iter().any(|b| is_ctl(*b) && *b != b'\t') {
            return Err(BadPartHeader);
        }
        if name.eq_ignore_ascii_case(b"content-disposition") {
            if self.disposition.is_some() {
                return Err(BadPartHeader);
            }
            let parsed = disposition::parse(value).map_err(BadDisposition)?;
            if parsed.kind != "form-data" {
                return Err(DispositionNotFormData);
            }
            self.disposition = Some(parsed);
        } else if name.eq_ignore_ascii_case(b"content-type") {
            if self.content_type.is_some() {
                return Err(BadPartHeader);
            }
            self.content_type = Some(value.to_vec());
        } else {
            self.other.push((name.to_vec(), value.to_vec()));
        }
        Ok(())
    }

    fn start_part<S: PartSink>(&mut self, sink: &mut S) -> Result<(), MultipartError<S::Error>> {
        let headers = PartHeaders {
            disposition: self
                .disposition
                .take()
                .ok_or(MultipartError::NoDisposition)?,
            content_type: self.content_type.take(),
            other: core::mem::take(&mut self.other),
        };
        let action = sink.part_start(&headers).map_err(MultipartError::Sink)?;
        self.accept = action == PartAction::Accept;
        self.state = State::Body;
        Ok(())
    }
}

fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|b| is_tchar(**b)).count()
}

fn skip_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    s = skip_ws(s);
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Reads a quoted string after its opening quote; returns the unescaped value and the rest.
fn quoted(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut value = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => return Some((value, &s[i + 1..])),
            b'\\' if i + 1 < s.len() => {
                value.push(s[i + 1]);
                i += 2;
            }
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
    None
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// First `needle` in `haystack`, a word at a time: part bodies are scanned for `\n`, which is
/// rare in binary files and once a line in text ones.
fn find_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    const WORD: usize = core::mem::size_of::<usize>();
    const LO: usize = usize::MAX / 0xff; // 0x0101...01
    const HI: usize = LO << 7; // 0x8080...80
    let pattern = LO * usize::from(needle);
    let mut chunks = haystack.chunks_exact(WORD);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = usize::from_ne_bytes(chunk.try_into().expect("chunk of a word")) ^ pattern;
        // Non-zero iff some byte of `word` is zero, i.e. some byte of the chunk is `needle`.
        if word.wrapping_sub(LO) & !word & HI != 0 {
            return chunk.iter().position(|b| *b == needle).map(|i| offset + i);
        }
        offset += WORD;
    }
    chunks
        .remainder()
        .iter()
        .position(|b| *b == needle)
        .map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Error = MultipartError<&'static str>;

    /// One part as the sink saw it.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Part {
        name: Vec<u8>,
        raw_filename: Option<Vec<u8>>,
        filename: Option<Vec<u8>>,
        content_type: Option<Vec<u8>>,
        other: Vec<(Vec<u8>, Vec<u8>)>,
        body: Vec<u8>,
        skipped: bool,
        ended: bool,
    }

    impl Part {
        fn field(name: &str, body: &[u8]) -> Self {
            Self {
                name: name.into(),
                body: body.into(),
                ended: true,
                ..Self::default()
            }
        }

        fn file(name: &str, filename: &str, content_type: &str, body: &[u8]) -> Self {
            Self {
                name: name.into(),
                raw_filename: Some(filename.into()),
                filename: Some(disposition::base_name(filename.as_bytes()).into()),
                content_type: Some(content_type.into()),
                body: body.into(),
                ended: true,
                ..Self::default()
            }
        }
    }

    /// Records parts; skips those whose name starts with `skip`; fails where told to.
    #[derive(Debug, Default)]
    struct Recorder {
        parts: Vec<Part>,
        open: bool,
        fail_start: Option<usize>,
        fail_data: Option<usize>,
        fail_end: Option<usize>,
    }

    impl PartSink for Recorder {
        type Error = &'static str;

        fn part_start(&mut self, h: &PartHeaders) -> Result<PartAction, &'static str> {
            assert!(!self.open, "part_start inside a part");
            assert_eq!(h.disposition.kind, "form-data");
            if self.fail_start == Some(self.parts.len()) {
                return Err("start refused");
            }
            let skipped = h.name().starts_with(b"skip");
            assert_eq!(h.is_file(), h.filename().is_some());
            self.parts.push(Part {
                name: h.name().to_vec(),
                raw_filename: h.raw_filename().map(<[u8]>::to_vec),
                filename: h.filename().map(<[u8]>::to_vec),
                content_type: h.content_type().map(<[u8]>::to_vec),
                other: h.other.clone(),
                body: Vec::new(),
                skipped,
                ended: false,
            });
            self.open = true;
            Ok(if skipped {
                PartAction::Skip
            } else {
                PartAction::Accept
            })
        }

        fn part_data(&mut self, data: &[u8]) -> Result<(), &'static str> {
            assert!(self.open, "part_data outside a part");
            assert!(!data.is_empty(), "empty part_data");
            let index = self.parts.len() - 1;
            let part = &mut self.parts[index];
            assert!(!part.skipped, "part_data for a skipped part");
            if self.fail_data == Some(index) {
                return Err("data refused");
            }
            part.body.extend_from_slice(data);
            Ok(())
        }

        fn part_end(&mut self) -> Result<(), &'static str> {
            assert!(self.open, "part_end outside a part");
            if self.fail_end == Some(self.parts.len() - 1) {
                return Err("end refused");
            }
            self.open = false;
            self.parts.last_mut().unwrap().ended = true;
            Ok(())
        }
    }

    fn parser(boundary: &str) -> MultipartParser {
        MultipartParser::new(boundary.as_bytes(), Limits::default()).unwrap()
    }

    /// Feeds `chunks` in order then finishes; how the body ended, or the first error.
    fn run_with(
        boundary: &str,
        limits: Limits,
        chunks: &[&[u8]],
        sink: &mut Recorder,
    ) -> Result<Ending, Error> {
        let mut p = MultipartParser::new(boundary.as_bytes(), limits).unwrap();
        for chunk in chunks {
            p.feed(chunk, sink)?;
        }
        p.finish(sink)
    }

    /// The parts seen and how the body ended, or the first error.
    fn run_ending(boundary: &str, chunks: &[&[u8]]) -> Result<(Vec<Part>, Ending), Error> {
        let mut sink = Recorder::default();
        run_with(boundary, Limits::default(), chunks, &mut sink).map(|e| (sink.parts, e))
    }

    /// The parts of a body that must end with its closing delimiter, or the first error.
    #[track_caller]
    fn run(boundary: &str, chunks: &[&[u8]]) -> Result<Vec<Part>, Error> {
        run_ending(boundary, chunks).map(|(parts, ending)| {
            assert_eq!(ending, Ending::Closed, "{chunks:?}");
            parts
        })
    }

    #[track_caller]
    fn parse(boundary: &str, body: &[u8]) -> Result<Vec<Part>, Error> {
        run(boundary, &[body])
    }

    /// Parses `body` whole, cut at every offset, cut at every pair of offsets if it is short,
    /// and byte by byte; all must agree. Returns the common result.
    fn parse_every_split_ending(boundary: &str, body: &[u8]) -> Result<(Vec<Part>, Ending), Error> {
        let whole = run_ending(boundary, &[body]);
        for i in 0..=body.len() {
            let (a, b) = body.split_at(i);
            assert_eq!(run_ending(boundary, &[a, b]), whole, "split at {i}");
        }
        if body.len() <= 200 {
            for i in 0..=body.len() {
                for j in i..=body.len() {
                    let chunks = [&body[..i], &body[i..j], &body[j..]];
                    assert_eq!(run_ending(boundary, &chunks), whole, "split at {i}, {j}");
                }
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run_ending(boundary, &bytes), whole, "byte by byte");
        whole
    }

    /// [`parse_every_split_ending`] for a body that must end with its closing delimiter.
    #[track_caller]
    fn parse_every_split(boundary: &str, body: &[u8]) -> Result<Vec<Part>, Error> {
        parse_every_split_ending(boundary, body).map(|(parts, ending)| {
            assert_eq!(ending, Ending::Closed, "{body:?}");
            parts
        })
    }

    const CHROME_BODY: &[u8] = b"------WebKitFormBoundaryePkpFF7tjBAqx29L\r\n\
Content-Disposition: form-data; name=\"title\"\r\n\
\r\n\
Holiday\r\n\
------WebKitFormBoundaryePkpFF7tjBAqx29L\r\n\
Content-Disposition: form-data; name=\"file1\"; filename=\"a.txt\"\r\n\
Content-Type: text/plain\r\n\
\r\n\
line one\r\nline two\r\n\r\n\
------WebKitFormBoundaryePkpFF7tjBAqx29L\r\n\
Content-Disposition: form-data; name=\"file2\"; filename=\"C:\\Users\\me\\b.bin\"\r\n\
Content-Type: application/octet-stream\r\n\
\r\n\
\x00\x01\r\x02-\n--\r\n-\xff\r\n\
------WebKitFormBoundaryePkpFF7tjBAqx29L\r\n\
Content-Disposition: form-data; name=\"empty\"; filename=\"\"\r\n\
Content-Type: application/octet-stream\r\n\
\r\n\
\r\n\
------WebKitFormBoundaryePkpFF7tjBAqx29L\r\n\
Content-Disposition: form-data; name=\"comment\"\r\n\
\r\n\
after the files\r\n\
------WebKitFormBoundaryePkpFF7tjBAqx29L--\r\n";

    const CHROME_BOUNDARY: &str = "----WebKitFormBoundaryePkpFF7tjBAqx29L";

    fn chrome_parts() -> Vec<Part> {
        vec![
            Part::field("title", b"Holiday"),
            Part::file("file1", "a.txt", "text/plain", b"line one\r\nline two\r\n"),
            Part::file(
                "file2",
                "C:\\Users\\me\\b.bin",
                "application/octet-stream",
                b"\x00\x01\r\x02-\n--\r\n-\xff",
            ),
            Part {
                raw_filename: Some(Vec::new()),
                filename: None,
                content_type: Some(b"application/octet-stream".to_vec()),
                ..Part::field("empty", b"")
            },
            Part::field("comment", b"after the files"),
        ]
    }

    #[test]
    fn parses_a_browser_body_with_fields_before_and_after_files() {
        assert_eq!(parse(CHROME_BOUNDARY, CHROME_BODY), Ok(chrome_parts()));
    }

    #[test]
    fn every_split_of_a_browser_body_gives_the_same_parts() {
        assert_eq!(
            parse_every_split(CHROME_BOUNDARY, CHROME_BODY),
            Ok(chrome_parts())
        );
    }

    #[test]
    fn parses_a_firefox_body() {
        let body = b"-----------------------------9051914041544843365972754266\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"\xc3\xa9t\xc3\xa9.txt\"\r\n\
Content-Type: text/plain\r\n\
\r\n\
Content of a.txt.\n\r\n\
-----------------------------9051914041544843365972754266\r\n\
Content-Disposition: form-data; name=\"text\"\r\n\
\r\n\
text default\r\n\
-----------------------------9051914041544843365972754266--\r\n";
        let boundary = "---------------------------9051914041544843365972754266";
        assert_eq!(
            parse_every_split(boundary, body),
            Ok(vec![
                Part::file("file", "été.txt", "text/plain", b"Content of a.txt.\n"),
                Part::field("text", b"text default"),
            ])
        );
    }

    #[test]
    fn keeps_other_part_headers() {
        let body = b"--b\r\n\
content-disposition: form-data; name=\"f\"; filename=\"/tmp/x.bin\"\r\n\
CONTENT-TYPE:  image/png \r\n\
Content-Range: bytes 0-3/10\r\n\
session-id:\t42\r\n\
\r\n\
abcd\r\n--b--";
        let mut sink = Recorder::default();
        run_with("b", Limits::default(), &[body], &mut sink).unwrap();
        let part = &sink.parts[0];
        assert_eq!(part.filename.as_deref(), Some(&b"x.bin"[..]));
        assert_eq!(part.raw_filename.as_deref(), Some(&b"/tmp/x.bin"[..]));
        assert_eq!(part.content_type.as_deref(), Some(&b"image/png"[..]));
        assert_eq!(
            part.other,
            vec![
                (b"Content-Range".to_vec(), b"bytes 0-3/10".to_vec()),
                (b"session-id".to_vec(), b"42".to_vec()),
            ]
        );
        assert_eq!(part.body, b"abcd");
    }

    #[test]
    fn part_headers_accessors() {
        // In a quoted string, a backslash escapes the next byte.
        let mut h = PartHeaders {
            disposition: disposition::parse(b"form-data; name=\"f\"; filename=\"C:\\a\\b.txt\"")
                .unwrap(),
            content_type: Some(b"text/plain".to_vec()),
            other: vec![(b"Session-ID".to_vec(), b"7".to_vec())],
        };
        assert_eq!(h.name(), b"f");
        assert_eq!(h.raw_filename(), Some(&b"C:\\a\\b.txt"[..]));
        assert_eq!(h.filename(), Some(&b"b.txt"[..]));
        assert!(h.is_file());
        assert_eq!(h.content_type(), Some(&b"text/plain"[..]));
        assert_eq!(h.header(b"session-id"), Some(&b"7"[..]));
        assert_eq!(h.header(b"content-range"), None);
        // A path with no name in it, or no name at all, is not a file.
        h.disposition.filename = Some(b"dir/".to_vec());
        assert!(!h.is_file());
        assert_eq!(h.filename(), None);
        h.disposition.filename = Some(Vec::new());
        assert!(!h.is_file());
        h.disposition.filename = None;
        assert!(!h.is_file());
        h.disposition.name = None;
        assert_eq!(h.name(), b"");
    }

    #[test]
    fn ignores_preamble_and_epilogue() {
        let body = b"This is the preamble.\r\nIt has --b inside a line.\r\n\
--b\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n\
--b--\r\nEpilogue with a delimiter:\r\n--b\r\nand junk --b-- \x00";
        assert_eq!(
            parse_every_split("b", body),
            Ok(vec![Part::field("a", b"A")])
        );
        // A bare-LF preamble line end counts too.
        let body = b"preamble\n--b\nContent-Disposition: form-data; name=a\n\nA\n--b--";
        assert_eq!(
            parse_every_split("b", body),
            Ok(vec![Part::field("a", b"A")])
        );
    }

    #[test]
    fn body_with_no_parts_is_valid() {
        for body in [
            &b"--b--"[..],
            b"--b--\r\n",
            b"preamble\r\n--b--",
            b"\r\n--b--junk",
        ] {
            assert_eq!(parse_every_split("b", body), Ok(vec![]), "{body:?}");
        }
    }

    #[test]
    fn body_crlf_edge_cases() {
        for content in [
            &b""[..],
            b"\r",
            b"\n",
            b"\r\r",
            b"ends with CR\r",
            b"ends with CRLF\r\n",
            b"ends with LF CR\n\r",
            b"\r\n--",
            b"\r\n-- b",
            b"x\r\n--",
            b"\r\n--a",
            b"\r\n-",
            b"\n-",
            b"--b",
            b"x--b--",
            b"--b\r\n",
            b"\r--b",
            b"\r\r\n\r\n-\r\n--\r\n-",
        ] {
            let mut body = b"--b\r\nContent-Disposition: form-data; name=f\r\n\r\n".to_vec();
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n--b\r\nContent-Disposition: form-data; name=g\r\n\r\n");
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n--b--\r\n");
            assert_eq!(
                parse_every_split("b", &body),
                Ok(vec![Part::field("f", content), Part::field("g", content)]),
                "{content:?}"
            );
        }
    }

    #[test]
    fn boundary_prefixes_in_body_are_data() {
        let boundary = "--xyz--";
        let content = b"\r\n----\r\n---xy\r\n----xyz-\n----x\r\n\r\n----xy--";
        let mut body = b"----xyz--\r\nContent-Disposition: form-data; name=f\r\n\r\n".to_vec();
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n----xyz----");
        assert_eq!(
            parse_every_split(boundary, &body),
            Ok(vec![Part::field("f", content)])
        );
    }

    #[test]
    fn accepts_lf_only_delimiters_and_header_lines() {
        let body = b"--b\n\
Content-Disposition: form-data; name=\"a\"\n\
\n\
one\n\
--b\r\n\
Content-Disposition: form-data; name=\"f\"; filename=\"f.txt\"\n\
Content-Type: text/plain\r\n\
\n\
two\r\n\
--b\n\
Content-Disposition: form-data; name=\"c\"\r\n\
\r\n\
three\r\n\n\
--b--";
        assert_eq!(
            parse_every_split("b", body),
            Ok(vec![
                Part::field("a", b"one"),
                Part::file("f", "f.txt", "text/plain", b"two"),
                Part::field("c", b"three\r\n"),
            ])
        );
    }

    #[test]
    fn accepts_transport_padding() {
        let body = b"--b \t \r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--b\t\n\
Content-Disposition: form-data; name=b\r\n\r\nB\r\n--b--";
        assert_eq!(
            parse_every_split("b", body),
            Ok(vec![Part::field("a", b"A"), Part::field("b", b"B")])
        );
    }

    #[test]
    fn rejects_garbage_after_a_delimiter() {
        let part = "Content-Disposition: form-data; name=a\r\n\r\nA\r\n";
        for body in [
            format!("--bx\r\n{part}--b--"),
            format!("--b\rx\n{part}--b--"),
            format!("--b-x\r\n{part}--b--"),
            "--b  --\r\n".to_string(),
            format!("--b\r\r\n{part}--b--"),
            format!("--b\r\n{part}--bb--"),
            format!("--b\r\n{part}--b -\r\n"),
            "\r\n--b_\r\n--b--".to_string(),
        ] {
            assert_eq!(
                parse_every_split("b", body.as_bytes()),
                Err(MultipartError::BadDelimiter),
                "{body:?}"
            );
        }
    }

    #[test]
    fn garbage_without_any_delimiter_is_truncated() {
        for body in [
            &b""[..],
            b"garbage",
            b"-",
            b"--",
            b"-b--",
            b" --b--",
            b"x--b--",
        ] {
            assert_eq!(
                parse_every_split("b", body),
                Err(MultipartError::Truncated),
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_body_cut_inside_a_part_is_truncated_and_after_a_delimiter_unclosed() {
        let full = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--b--";
        let first_delimiter = b"--b".len();
        let first_headers = b"--b\r\n".len();
        let second_delimiter = full.len() - b"--".len();
        for end in 0..full.len() {
            let expected = if (first_delimiter..=first_headers).contains(&end) {
                // `--b`, `--b\r`, `--b\r\n`: a form without parts, not closed.
                Ok((vec![], Ending::Unclosed))
            } else if end >= second_delimiter {
                // `\r\n--b` and `\r\n--b-`: the part ended, only the closing `--` is missing.
                Ok((vec![Part::field("a", b"A")], Ending::Unclosed))
            } else {
                // In the preamble, the part's headers or its body.
                Err(MultipartError::Truncated)
            };
            assert_eq!(
                parse_every_split_ending("b", &full[..end]),
                expected,
                "cut at {end}"
            );
        }
        assert_eq!(parse("b", full), Ok(vec![Part::field("a", b"A")]));
    }

    /// The form of issue 10: a file part, then a delimiter line and nothing more.
    #[test]
    fn a_body_ending_with_a_delimiter_line_gives_its_parts() {
        let boundary = "------123456789";
        let content = vec![b'x'; 4096];
        let head = b"--------123456789\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"test.txt\"\r\n\r\n";
        let file = Part {
            name: b"file".to_vec(),
            raw_filename: Some(b"test.txt".to_vec()),
            filename: Some(b"test.txt".to_vec()),
            body: content.clone(),
            ended: true,
            ..Part::default()
        };
        for tail in [
            &b"\r\n--------123456789\r\n"[..],
            b"\r\n--------123456789",
            b"\r\n--------123456789\r",
            b"\r\n--------123456789 \t",
            b"\n--------123456789\n",
            b"\r\n--------123456789-",
        ] {
            let body = [&head[..], &content, tail].concat();
            assert_eq!(
                run_ending(boundary, &[&body]),
                Ok((vec![file.clone()], Ending::Unclosed)),
                "{tail:?}"
            );
            // Fed byte by byte, the part still ends once, at its delimiter.
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(
                run_ending(boundary, &bytes),
                Ok((vec![file.clone()], Ending::Unclosed)),
                "{tail:?} byte by byte"
            );
        }
        // With the closing delimiter, the same form is closed.
        let body = [&head[..], &content, b"\r\n--------123456789--\r\n"].concat();
        assert_eq!(
            run_ending(boundary, &[&body]),
            Ok((vec![file], Ending::Closed))
        );
    }

    /// Ending inside the headers of the next part, or inside its body, stays an error; the
    /// part begun gets no end.
    #[test]
    fn a_body_ending_in_the_next_part_stays_truncated() {
        let first = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--b\r\n";
        for tail in [
            &b"C"[..],
            b"\r",
            b"Content-Disposition: form-data; name=b",
            b"Content-Disposition: form-data; name=b\r\n",
            b"Content-Disposition: form-data; name=b\r\n\r",
        ] {
            let body = [&first[..], tail].concat();
            assert_eq!(
                parse_every_split_ending("b", &body),
                Err(MultipartError::Truncated),
                "{tail:?}"
            );
        }
        let mut sink = Recorder::default();
        let body = [
            &first[..],
            b"Content-Disposition: form-data; name=b\r\n\r\nB",
        ]
        .concat();
        let result = run_with("b", Limits::default(), &[&body], &mut sink);
        assert_eq!(result, Err(MultipartError::Truncated));
        assert_eq!(sink.parts.len(), 2);
        assert!(sink.parts[0].ended);
        assert_eq!(sink.parts[1].body, b"B");
        assert!(!sink.parts[1].ended, "a part cut short got its end");
    }

    /// Part headers take a Content-Disposition with text after its last quoted value, as
    /// raw uploads do (`\r` here is a backslash and an `r`).
    #[test]
    fn part_disposition_with_text_after_the_last_quote() {
        let body = b"--b\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"test.txt\"\\r\r\n\
\r\n\
data\r\n\
--b\r\n\
Content-Disposition: form-data; name=\"title\"x;\r\n\
\r\n\
T\r\n\
--b--\r\n";
        let file = Part {
            name: b"file".to_vec(),
            raw_filename: Some(b"test.txt".to_vec()),
            filename: Some(b"test.txt".to_vec()),
            body: b"data".to_vec(),
            ended: true,
            ..Part::default()
        };
        assert_eq!(
            parse_every_split("b", body),
            Ok(vec![file, Part::field("title", b"T")])
        );
        // A real CR there is no part of a header line.
        let body = b"--b\r\nContent-Disposition: form-data; name=\"f\"\r; filename=\"a\"\r\n\r\nA\r\n--b--";
        assert_eq!(
            parse_every_split("b", body),
            Err(MultipartError::BadPartHeader)
        );
    }

    #[test]
    fn an_unclosed_end_is_final() {
        let mut sink = Recorder::default();
        let mut p = parser("b");
        p.feed(
            b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--b",
            &mut sink,
        )
        .unwrap();
        assert!(!p.is_done());
        assert_eq!(p.finish(&mut sink), Ok(Ending::Unclosed));
        assert!(!p.is_done());
        assert_eq!(p.finish(&mut sink), Ok(Ending::Unclosed));
        assert_eq!(p.feed(b"--", &mut sink), Err(MultipartError::Failed));
        assert_eq!(sink.parts, vec![Part::field("a", b"A")]);
    }

    #[test]
    fn truncated_part_gets_no_end() {
        let mut sink = Recorder::default();
        let body = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nsome data\r\n--";
        let result = run_with("b", Limits::default(), &[body], &mut sink);
        assert_eq!(result, Err(MultipartError::Truncated));
        assert_eq!(sink.parts.len(), 1);
        assert_eq!(sink.parts[0].body, b"some data");
        assert!(!sink.parts[0].ended);
    }

    #[test]
    fn limits_part_header_lines() {
        let limits = Limits {
            max_part_header_len: 60,
            max_part_headers: 3,
        };
        let disposition = "Content-Disposition: form-data; name=a"; // 38 bytes
        let padded = |n: usize| format!("X: {}", "v".repeat(n - 3));
        let body = |lines: &[String], eol: &str| {
            let mut s = format!("--b{eol}");
            for line in lines {
                s.push_str(line);
                s.push_str(eol);
            }
            s.push_str(eol);
            s.push_str("A\r\n--b--");
            s.into_bytes()
        };
        let check = |lines: &[String], eol: &str| {
            let body = body(lines, eol);
            let whole = run_with("b", limits, &[&body], &mut Recorder::default());
            for i in 0..=body.len() {
                let (a, b) = body.split_at(i);
                let split = run_with("b", limits, &[a, b], &mut Recorder::default());
                assert_eq!(split, whole, "split at {i}");
            }
            whole
        };
        for eol in ["\r\n", "\n"] {
            let ok = check(&[disposition.into(), padded(60)], eol);
            assert_eq!(ok, Ok(Ending::Closed), "{eol:?}");
            let long = check(&[disposition.into(), padded(61)], eol);
            assert_eq!(long, Err(MultipartError::PartHeaderTooLong), "{eol:?}");
            let long = check(&[padded(200), disposition.into()], eol);
            assert_eq!(long, Err(MultipartError::PartHeaderTooLong), "{eol:?}");
            let three = [disposition.into(), padded(10), padded(10)];
            assert_eq!(check(&three, eol), Ok(Ending::Closed));
            let four = [disposition.into(), padded(10), padded(10), padded(10)];
            assert_eq!(check(&four, eol), Err(MultipartError::TooManyPartHeaders));
        }
        // A CR inside a line at the limit is neither a line end nor allowed.
        let body = body(&[format!("{}\rx", padded(60)), disposition.into()], "\r\n");
        assert_eq!(
            run_with("b", limits, &[&body], &mut Recorder::default()),
            Err(MultipartError::PartHeaderTooLong)
        );
    }

    #[test]
    fn default_header_line_limit_is_512() {
        assert_eq!(Limits::default().max_part_header_len, 512);
        let value = |n: usize| {
            format!(
                "--b\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n\r\n--b--",
                "n".repeat(n)
            )
        };
        let fixed = "Content-Disposition: form-data; name=\"\"".len();
        let ok = parse("b", value(512 - fixed).as_bytes()).unwrap();
        assert_eq!(ok[0].name.len(), 512 - fixed);
        assert_eq!(
            parse("b", value(513 - fixed).as_bytes()),
            Err(MultipartError::PartHeaderTooLong)
        );
    }

    #[test]
    fn rejects_malformed_part_headers() {
        use MultipartError::*;
        for (headers, why) in [
            ("Content-Type: text/plain\r\n", NoDisposition),
            ("", NoDisposition),
            ("Content-Disposition: attachment; filename=a\r\n", DispositionNotFormData),
            ("Content-Disposition: inline\r\n", DispositionNotFormData),
            ("Content-Disposition: bogus\r\n", BadDisposition(DispositionError::UnknownType)),
            ("Content-Disposition: form-data; name\r\n", BadDisposition(DispositionError::BadParameter)),
            ("Content-Disposition:\r\n", BadDisposition(DispositionError::Syntax)),
            ("Content-Disposition: form-data; name=a\r\n no colon\r\n", BadPartHeader),
            ("Content-Disposition: form-data;\r\n name=a\r\n", BadPartHeader),
            ("Content-Disposition: form-data;\r\n\tname: a\r\n", BadPartHeader),
            ("Content-Disposition : form-data; name=a\r\n", BadPartHeader),
            (": x\r\nContent-Disposition: form-data; name=a\r\n", BadPartHeader),
            ("X\x01: y\r\nContent-Disposition: form-data; name=a\r\n", BadPartHeader),
            ("X: a\x00b\r\nContent-Disposition: form-data; name=a\r\n", BadPartHeader),
            ("X: a\rb\r\nContent-Disposition: form-data; name=a\r\n", BadPartHeader),
            (
                "Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n",
                BadPartHeader,
            ),
            (
                "Content-Disposition: form-data; name=a\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n",
                BadPartHeader,
            ),
            ("--b--\r\n", BadPartHeader),
        ] {
            let body = format!("--b\r\n{headers}\r\nA\r\n--b--");
            assert_eq!(parse_every_split("b", body.as_bytes()), Err(why), "{headers:?}");
        }
    }

    #[test]
    fn headers_without_blank_line_before_next_delimiter_are_malformed() {
        let body = b"--b\r\nContent-Disposition: form-data; name=a\r\n--b--\r\n";
        assert_eq!(
            parse_every_split("b", body),
            Err(MultipartError::BadPartHeader)
        );
    }

    #[test]
    fn skipped_parts_get_no_data_but_an_end() {
        let body = b"--b\r\n\
Content-Disposition: form-data; name=keep1\r\n\r\none\r\n\
--b\r\n\
Content-Disposition: form-data; name=skip_me; filename=big.iso\r\n\r\n\
lots of\r\n-- data \r\n\r\n--b\r\n\
Content-Disposition: form-data; name=keep2\r\n\r\ntwo\r\n\
--b--";
        let parts = parse_every_split("b", body).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], Part::field("keep1", b"one"));
        assert!(parts[1].skipped && parts[1].ended && parts[1].body.is_empty());
        assert_eq!(parts[1].filename.as_deref(), Some(&b"big.iso"[..]));
        assert_eq!(parts[2], Part::field("keep2", b"two"));
    }

    #[test]
    fn sink_errors_propagate_and_stop_the_parser() {
        let body = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n\
--b\r\nContent-Disposition: form-data; name=b\r\n\r\nB\r\n--b--";
        type Setup = fn(&mut Recorder);
        let cases: [(Setup, &str, usize); 4] = [
            (|s| s.fail_start = Some(0), "start refused", 0),
            (|s| s.fail_start = Some(1), "start refused", 1),
            (|s| s.fail_data = Some(1), "data refused", 2),
            (|s| s.fail_end = Some(0), "end refused", 1),
        ];
        for (setup, message, parts_seen) in cases {
            for split in 0..=body.len() {
                let mut sink = Recorder::default();
                setup(&mut sink);
                let mut p = parser("b");
                let (a, b) = body.split_at(split);
                let result = p.feed(a, &mut sink).and_then(|()| p.feed(b, &mut sink));
                assert_eq!(result, Err(MultipartError::Sink(message)), "split {split}");
                assert_eq!(sink.parts.len(), parts_seen);
                assert_eq!(p.feed(b"more", &mut sink), Err(MultipartError::Failed));
                assert_eq!(p.finish(&mut sink), Err(MultipartError::Failed));
            }
        }
    }

    #[test]
    fn parser_states_around_the_end() {
        let mut sink = Recorder::default();
        let mut p = parser("b");
        assert!(!p.is_done());
        p.feed(b"--b-", &mut sink).unwrap();
        assert!(!p.is_done());
        p.feed(b"-", &mut sink).unwrap();
        assert!(p.is_done());
        p.feed(b"\r\nanything at all \r\n--b\r\n", &mut sink)
            .unwrap();
        p.feed(b"", &mut sink).unwrap();
        assert_eq!(p.finish(&mut sink), Ok(Ending::Closed));
        assert_eq!(p.finish(&mut sink), Ok(Ending::Closed));
        assert!(sink.parts.is_empty());

        let mut p = parser("b");
        assert_eq!(p.finish(&mut sink), Err(MultipartError::Truncated));
        assert_eq!(p.finish(&mut sink), Err(MultipartError::Failed));
        assert_eq!(p.feed(b"--b--", &mut sink), Err(MultipartError::Failed));
    }

    /// Body bytes are passed on at once, from the caller's buffer, holding back only what may
    /// start a delimiter.
    #[test]
    fn streams_part_bodies_without_buffering() {
        struct Counter<'a> {
            input: Option<&'a [u8]>,
            received: usize,
        }
        impl PartSink for Counter<'_> {
            type Error = ();
            fn part_start(&mut self, _: &PartHeaders) -> Result<PartAction, ()> {
                Ok(PartAction::Accept)
            }
            fn part_data(&mut self, data: &[u8]) -> Result<(), ()> {
                if let Some(input) = self.input {
                    let range = input.as_ptr_range();
                    assert!(
                        range.contains(&data.as_ptr()),
                        "data is not borrowed from the input"
                    );
                    assert!(data.as_ptr_range().end <= range.end);
                }
                self.received += data.len();
                Ok(())
            }
            fn part_end(&mut self) -> Result<(), ()> {
                Ok(())
            }
        }
        let boundary = "XyZzY-42"; // not a run of the content's counting bytes
        let head = b"--XyZzY-42\r\nContent-Disposition: form-data; name=f; filename=f\r\n\r\n";
        let content: Vec<u8> = (0..100_000u32)
            .map(|i| match i % 97 {
                0 => b'\r',
                1 => b'\n',
                2 | 3 => b'-',
                _ => (i % 251) as u8,
            })
            .collect();
        let mut body = head.to_vec();
        body.extend_from_slice(&content);
        body.extend_from_slice(b"\r\n--XyZzY-42--\r\n");

        // Whole: every data slice comes from the body itself.
        let mut p = MultipartParser::new(boundary.as_bytes(), Limits::default()).unwrap();
        let mut sink = Counter {
            input: Some(&body),
            received: 0,
        };
        p.feed(&body, &mut sink).unwrap();
        p.finish(&mut sink).unwrap();
        assert_eq!(sink.received, content.len());

        // In chunks: after each, at most the delimiter's length is held back.
        let mut p = MultipartParser::new(boundary.as_bytes(), Limits::default()).unwrap();
        let mut sink = Counter {
            input: None,
            received: 0,
        };
        p.feed(head, &mut sink).unwrap();
        let mut fed = 0;
        for chunk in content.chunks(777) {
            p.feed(chunk, &mut sink).unwrap();
            fed += chunk.len();
            assert!(sink.received <= fed);
            assert!(
                fed - sink.received < boundary.len() + 4,
                "holds {}",
                fed - sink.received
            );
        }
        p.feed(b"\r\n--XyZzY-42--", &mut sink).unwrap();
        p.finish(&mut sink).unwrap();
        assert_eq!(sink.received, content.len());
    }

    #[test]
    fn new_checks_the_boundary() {
        let limits = Limits::default();
        assert_eq!(
            MultipartParser::new(b"", limits).unwrap_err(),
            MultipartError::NoBoundary
        );
        for bad in [&b"a\nb"[..], b"a\rb", b"\0", &[b'x'; 71]] {
            assert_eq!(
                MultipartParser::new(bad, limits).unwrap_err(),
                MultipartError::BadBoundary
            );
        }
        assert!(MultipartParser::new(&[b'x'; 70], limits).is_ok());
        assert!(MultipartParser::new(b"a b'()+_,-./:=?", limits).is_ok());
    }

    #[test]
    fn finds_the_boundary_in_a_content_type() {
        for (value, boundary) in [
            ("multipart/form-data; boundary=abc", "abc"),
            ("multipart/form-data;boundary=abc", "abc"),
            ("Multipart/Form-Data; BOUNDARY=abc", "abc"),
            ("  multipart/form-data ;  boundary = abc  ", "abc"),
            ("multipart/form-data; boundary=\"a b;c=d\"", "a b;c=d"),
            ("multipart/form-data; boundary=\"a\\\"b\"", "a\"b"),
            (
                "multipart/form-data; charset=utf-8; boundary=abc; x=y",
                "abc",
            ),
            (
                "multipart/form-data; boundary=----=_Part_0_1.2",
                "----=_Part_0_1.2",
            ),
            (
                "multipart/form-data; x=\"boundary=no; y\"; boundary=yes",
                "yes",
            ),
            ("multipart/form-data; xboundary=no; boundary=yes;", "yes"),
            ("multipart/form-data;; boundary=abc;;", "abc"),
            ("multipart/form-data; empty=; boundary=abc", "abc"),
            ("multipart/form-data;\tboundary=abc\t", "abc"),
        ] {
            assert_eq!(
                boundary_from_content_type(value.as_bytes()),
                Ok(boundary.as_bytes().to_vec()),
                "{value:?}"
            );
        }
        let seventy = "x".repeat(70);
        let value = format!("multipart/form-data; boundary={seventy}");
        assert_eq!(
            boundary_from_content_type(value.as_bytes()),
            Ok(seventy.into_bytes())
        );
    }

    #[test]
    fn refuses_content_types_without_a_usable_boundary() {
        use MultipartError::*;
        let long = format!("multipart/form-data; boundary={}", "x".repeat(71));
        let quoted_long = format!("multipart/form-data; boundary=\"{}\"", "x".repeat(71));
        for (value, why) in [
            ("", BadContentType),
            ("multipart", BadContentType),
            ("multipart/", BadContentType),
            ("/form-data; boundary=a", BadContentType),
            ("text/plain; boundary=a", NotMultipartFormData),
            ("multipart/mixed; boundary=a", NotMultipartFormData),
            ("multipart/form-datax; boundary=a", NotMultipartFormData),
            ("multipart/form-data", NoBoundary),
            ("multipart/form-data;", NoBoundary),
            ("multipart/form-data; charset=utf-8", NoBoundary),
            ("multipart/form-data; xboundary=a", NoBoundary),
            ("multipart/form-data; boundary=", NoBoundary),
            ("multipart/form-data; boundary=;", NoBoundary),
            ("multipart/form-data; boundary=\"\"", NoBoundary),
            (long.as_str(), BadBoundary),
            (quoted_long.as_str(), BadBoundary),
            ("multipart/form-data; boundary=\"a\rb\"", BadBoundary),
            ("multipart/form-data; boundary=a; boundary=b", BadBoundary),
            ("multipart/form-data; boundary=a; Boundary=a", BadBoundary),
            ("multipart/form-data; boundary=\"abc", BadContentType),
            ("multipart/form-data boundary=abc", BadContentType),
            ("multipart/form-data; boundary", BadContentType),
            ("multipart/form-data; =abc", BadContentType),
            ("multipart/form-data; boundary=a b", BadContentType),
            ("multipart/form-data; boundary=\"a\"b", BadContentType),
        ] {
            assert_eq!(
                boundary_from_content_type(value.as_bytes()),
                Err(why),
                "{value:?}"
            );
        }
    }

    #[test]
    fn errors_display_and_map() {
        let e: Error = MultipartError::Sink("disk full");
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(e.map_sink(str::len), MultipartError::Sink(9));
        let e: Error = MultipartError::BadDisposition(DispositionError::Unterminated);
        assert_eq!(
            e.to_string(),
            "part Content-Disposition has an unterminated quoted string"
        );
        let e: MultipartError<u16> = MultipartError::Truncated.with_sink_error();
        assert_eq!(e, MultipartError::Truncated);
    }

    #[test]
    fn find_byte_matches_a_plain_search() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for len in 0..80 {
            let hay: Vec<u8> = (0..len).map(|_| rng.pick(b"\n\r-a\x80\xff\x00")).collect();
            for start in 0..=len {
                for needle in [b'\n', b'\r', b'-', b'\x80', b'\xff', b'\x00', b'z'] {
                    let hay = &hay[start..];
                    assert_eq!(
                        find_byte(needle, hay),
                        hay.iter().position(|b| *b == needle),
                        "{needle} in {hay:?}"
                    );
                }
            }
        }
    }

    /// A deterministic generator, so a failing fuzz case can be replayed.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, one_in: usize) -> bool {
            self.below(one_in) == 0
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Bytes rich in what confuses delimiter matching: CR, LF, dashes and boundary prefixes.
    fn tricky_bytes(rng: &mut XorShift, boundary: &[u8], max_pieces: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..rng.below(max_pieces + 1) {
            match rng.below(10) {
                0 => out.push(b'\r'),
                1 => out.push(b'\n'),
                2 => out.push(b'-'),
                3 => out.extend_from_slice(b"\r\n--"),
                4 => out.extend_from_slice(b"\n--"),
                5 => out.extend_from_slice(&boundary[..rng.below(boundary.len() + 1)]),
                6 => out.extend_from_slice(boundary),
                7 => out.push(rng.next() as u8),
                _ => out.extend_from_slice(b"data"),
            }
        }
        out
    }

    /// Random bytes that do not hold `\n--boundary`.
    fn body_bytes(rng: &mut XorShift, boundary: &[u8], max_pieces: usize) -> Vec<u8> {
        let delimiter = [b"\n--", boundary].concat();
        loop {
            let bytes = tricky_bytes(rng, boundary, max_pieces);
            if !contains(&bytes, &delimiter) {
                return bytes;
            }
        }
    }

    fn random_case(rng: &mut XorShift, s: &str) -> String {
        s.chars()
            .map(|c| {
                if rng.chance(2) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    /// A random body and the parts it must give.
    fn random_body(rng: &mut XorShift, boundary: &[u8]) -> (Vec<u8>, Vec<Part>) {
        let mut body = Vec::new();
        let eol = |rng: &mut XorShift| if rng.chance(4) { &b"\n"[..] } else { b"\r\n" };
        if rng.chance(3) {
            // A preamble, cut from the first delimiter by a line end.
            let delimiter = [b"\n--", boundary].concat();
            let preamble = loop {
                let p = tricky_bytes(rng, boundary, 6);
                if !contains(&[b"\n", &p[..]].concat(), &delimiter) {
                    break p;
                }
            };
            body.extend_from_slice(&preamble);
            body.extend_from_slice(eol(rng));
        }
        let mut parts = Vec::new();
        for i in 0..rng.below(5) {
            body.extend_from_slice(b"--");
            body.extend_from_slice(boundary);
            for _ in 0..rng.below(3) {
                body.push(rng.pick(b" \t"));
            }
            body.extend_from_slice(eol(rng));
            let name = format!("{}{i}", rng.pick(&["f", "skip", "x[]", "a b"]));
            let mut part = Part {
                name: name.clone().into_bytes(),
                skipped: name.starts_with("skip"),
                ended: true,
                ..Part::default()
            };
            let mut disposition = format!("form-data; name=\"{name}\"");
            if rng.chance(2) {
                let filename = rng.pick(&["", "a.txt", "C:\\dir\\b.bin", "/tmp/c", "dir/", "é"]);
                disposition.push_str(&format!("; filename=\"{filename}\""));
                part.raw_filename = Some(filename.into());
                let base = disposition::base_name(filename.as_bytes());
                part.filename = (!base.is_empty()).then(|| base.to_vec());
            }
            let mut lines = vec![format!(
                "{}: {disposition}",
                random_case(rng, "Content-Disposition")
            )];
            if rng.chance(2) {
                lines.push(format!(
                    "{}:application/x-{i}",
                    random_case(rng, "Content-Type")
                ));
                part.content_type = Some(format!("application/x-{i}").into_bytes());
            }
            if rng.chance(3) {
                lines.push(format!("Content-Range: bytes 0-{i}/100"));
                part.other.push((
                    b"Content-Range".to_vec(),
                    format!("bytes 0-{i}/100").into_bytes(),
                ));
            }
            if rng.chance(3) {
                lines.push("Session-ID:  s1 ".into());
                part.other.push((b"Session-ID".to_vec(), b"s1".to_vec()));
            }
            // The disposition goes anywhere; the others keep their order.
            let disposition_line = lines.remove(0);
            lines.insert(rng.below(lines.len() + 1), disposition_line);
            for line in &lines {
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(eol(rng));
            }
            body.extend_from_slice(eol(rng));
            let content = body_bytes(rng, boundary, 12);
            body.extend_from_slice(&content);
            // A bare LF after a final CR would make that CR part of the delimiter.
            if content.last() == Some(&b'\r') {
                body.extend_from_slice(b"\r\n");
            } else {
                body.extend_from_slice(eol(rng));
            }
            if !part.skipped {
                part.body = content;
            }
            parts.push(part);
        }
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary);
        body.extend_from_slice(b"--");
        if rng.chance(2) {
            // The epilogue may hold anything, delimiters included.
            body.extend_from_slice(&tricky_bytes(rng, boundary, 6));
        }
        (body, parts)
    }

    #[test]
    fn random_bodies_round_trip_at_random_splits() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let bchars = b"0123456789abcXYZ'()+_,-./:=? ";
        for round in 0..3000 {
            let len = if rng.chance(4) {
                rng.below(70) + 1
            } else {
                rng.below(6) + 1
            };
            let mut boundary: Vec<u8> = (0..len).map(|_| rng.pick(bchars)).collect();
            if rng.chance(3) {
                boundary[0] = b'-'; // leading dashes overlap the delimiter's own
            }
            let boundary = String::from_utf8(boundary).unwrap();
            let (body, parts) = random_body(&mut rng, boundary.as_bytes());
            assert_eq!(
                parse(&boundary, &body),
                Ok(parts.clone()),
                "round {round}: {body:?}"
            );
            for _ in 0..4 {
                let mut cuts: Vec<usize> = (0..rng.below(8))
                    .map(|_| rng.below(body.len() + 1))
                    .collect();
                cuts.sort_unstable();
                let mut chunks = Vec::new();
                let mut start = 0;
                for cut in cuts {
                    chunks.push(&body[start..cut]);
                    start = cut;
                }
                chunks.push(&body[start..]);
                assert_eq!(
                    run(&boundary, &chunks),
                    Ok(parts.clone()),
                    "round {round}: {chunks:?}"
                );
            }
            if round % 10 == 0 {
                let bytes: Vec<&[u8]> = body.chunks(1).collect();
                assert_eq!(
                    run(&boundary, &bytes),
                    Ok(parts),
                    "round {round}, byte by byte"
                );
            }
        }
    }

    /// Random bytes, and random damage to valid bodies, never panic and split-independently
    /// give the same answer.
    #[test]
    fn random_damage_is_split_independent() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        for round in 0..1500 {
            let boundary = rng.pick(&["b", "-", "--x", "ab-c"]);
            let (mut body, _) = random_body(&mut rng, boundary.as_bytes());
            for _ in 0..rng.below(4) + 1 {
                if body.is_empty() {
                    break;
                }
                let at = rng.below(body.len());
                match rng.below(3) {
                    0 => body[at] = rng.pick(b"\r\n- x:"),
                    1 => {
                        body.remove(at);
                    }
                    _ => body.insert(at, rng.pick(b"\r\n- x:")),
                }
            }
            let whole = run_ending(boundary, &[&body]);
            for _ in 0..3 {
                let cut = rng.below(body.len() + 1);
                let (a, b) = body.split_at(cut);
                assert_eq!(
                    run_ending(boundary, &[a, b]),
                    whole,
                    "round {round}: cut {cut} {body:?}"
                );
            }
        }
    }
}
