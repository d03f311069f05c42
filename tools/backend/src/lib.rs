//! A tiny HTTP/1.1 backend for testing ngx-upload: it reads each request, records it, and
//! answers with a plain-text echo of what it received.
//!
//! The echo body is one `key = value` line per fact:
//!
//! ```text
//! method = POST
//! uri = /upload?a=1
//! content-type = multipart/form-data; boundary=xyz
//! file.name = big.TXT
//! file.path = /var/upload/1/abc1
//! ```
//!
//! After the three request lines come, for a `multipart/form-data` body, one line per form
//! field in order (a part with a file name reads `name = <file filename, N bytes>`), and for
//! any other body `body-bytes = N`. A path holding `/status/NNN` is answered with status NNN
//! (and the same echo body, except for statuses that carry none).
//!
//! Only `std` is used; every connection is served by its own thread and closed after one
//! answer (`Connection: close`).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
const MAX_BODY: usize = 256 * 1024 * 1024;

/// One request as the backend received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    /// The request target exactly as sent (`/path?args`).
    pub target: String,
    /// Header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path part of the target.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string, if the target has one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The form fields of a `multipart/form-data` body.
    pub fn fields(&self) -> Result<Vec<Field>, String> {
        parse_multipart(self.header("content-type").unwrap_or(""), &self.body)
    }

    /// The value of the first form field named `name`, as text.
    pub fn field(&self, name: &str) -> Option<String> {
        self.fields()
            .ok()?
            .into_iter()
            .find(|f| f.name == name)
            .map(|f| f.value_str())
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The `name` parameter of the part's Content-Disposition, as sent.
    pub name: String,
    /// The `filename` parameter, if the part has one.
    pub filename: Option<String>,
    /// The part's Content-Type header, if any.
    pub content_type: Option<String>,
    /// The part's content.
    pub value: Vec<u8>,
}

impl Field {
    /// The content as text (invalid UTF-8 replaced).
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    /// The echo line of this field, without the line end.
    pub fn echo_line(&self) -> String {
        match &self.filename {
            Some(filename) => format!(
                "{} = <file {}, {} bytes>",
                self.name,
                filename,
                self.value.len()
            ),
            None => format!("{} = {}", self.name, self.value_str()),
        }
    }
}

/// Parses a `multipart/form-data` body. `content_type` is the request's Content-Type, whose
/// `boundary` parameter (quoted or not) delimits the parts. Preamble and epilogue are ignored;
/// every part needs a `form-data` Content-Disposition with a `name`.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Field>, String> {
    let (mime, params) = split_header_value(content_type)?;
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!("content type {mime:?} is not multipart/form-data"));
    }
    let boundary = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.clone())
        .ok_or_else(|| "content type has no boundary parameter".to_string())?;
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(format!("bad boundary {boundary:?}"));
    }
    let delimiter = format!("--{boundary}").into_bytes();
    let mut crlf_delimiter = b"\r\n".to_vec();
    crlf_delimiter.extend_from_slice(&delimiter);

    // Opening delimiter: at the very start, or after a preamble line.
    let mut pos = if body.starts_with(&delimiter) {
        0
    } else {
        find(body, &crlf_delimiter, 0)
            .map(|i| i + 2)
            .ok_or_else(|| "no opening boundary".to_string())?
    };

    let mut fields = Vec::new();
    loop {
        pos += delimiter.len();
        if body[pos..].starts_with(b"--") {
            return Ok(fields); // close delimiter; the rest is epilogue
        }
        while matches!(body.get(pos), Some(b' ' | b'\t')) {
            pos += 1; // transport padding
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(format!("boundary not followed by CRLF at byte {pos}"));
        }
        pos += 2;
        // Part headers end with an empty line; a part may have no header at all.
        let (head, content_start) = if body[pos..].starts_with(b"\r\n") {
            (&body[pos..pos], pos + 2)
        } else {
            let end = find(body, b"\r\n\r\n", pos)
                .ok_or_else(|| format!("unterminated part headers at byte {pos}"))?;
            (&body[pos..end], end + 4)
        };
        let content_end = find(body, &crlf_delimiter, content_start)
            .ok_or_else(|| format!("part at byte {content_start} has no closing boundary"))?;
        fields.push(parse_part(head, &body[content_start..content_end])?);
        pos = content_end + 2;
    }
}

fn parse_part(head: &[u8], content: &[u8]) -> Result<Field, String> {
    let head = std::str::from_utf8(head).map_err(|_| "part headers are not UTF-8".to_string())?;
    let mut disposition = None;
    let mut content_type = None;
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed part header {line:?}"))?;
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("content-disposition") {
            disposition = Some(value.to_string());
        } else if name.trim().eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        }
    }
    let disposition = disposition.ok_or_else(|| "part has no Content-Disposition".to_string())?;
    let (kind, params) = split_header_value(&disposition)?;
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(format!("part disposition {kind:?} is not form-data"));
    }
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let name = param("name").ok_or_else(|| format!("part {disposition:?} has no name"))?;
    Ok(Field {
        name,
        filename: param("filename"),
        content_type,
        value: content.to_vec(),
    })
}

/// Splits `type; key=value; key="quoted \" value"` into the type and its parameters.
fn split_header_value(value: &str) -> Result<(String, Vec<(String, String)>), String> {
    let bytes = value.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while matches!(bytes.get(*i), Some(b' ' | b'\t')) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    let start = i;
    while i < bytes.len() && bytes[i] != b';' {
        i += 1;
    }
    let kind = value[start..i].trim().to_string();
    if kind.is_empty() {
        return Err(format!("header value {value:?} has no type"));
    }
    let mut params = Vec::new();
    while i < bytes.len() {
        i += 1; // the ';'
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        let key_start = i;
        while i < bytes.len() && !matches!(bytes[i], b'=' | b';') {
            i += 1;
        }
        let key = value[key_start..i].trim().to_string();
        if bytes.get(i) != Some(&b'=') {
            if key.is_empty() {
                continue;
            }
            return Err(format!("parameter {key:?} has no value in {value:?}"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut param = Vec::new();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(format!("unterminated quoted string in {value:?}")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        param.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(b) => {
                        param.push(*b);
                        i += 1;
                    }
                }
            }
            skip_ws(&mut i);
            if i < bytes.len() && bytes[i] != b';' {
                return Err(format!("junk after quoted string in {value:?}"));
            }
        } else {
            let v_start = i;
            while i < bytes.len() && bytes[i] != b';' {
                i += 1;
            }
            param.extend_from_slice(value[v_start..i].trim().as_bytes());
        }
        params.push((key, String::from_utf8_lossy(&param).into_owned()));
    }
    Ok((kind, params))
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The echo body for a request.
pub fn echo_body(req: &ReceivedRequest) -> String {
    let mut out = String::new();
    out.push_str(&format!("method = {}\n", req.method));
    out.push_str(&format!("uri = {}\n", req.target));
    let content_type = req.header("content-type").unwrap_or("");
    out.push_str(&format!("content-type = {content_type}\n"));
    let is_multipart = content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/form-data"));
    if is_multipart {
        match parse_multipart(content_type, &req.body) {
            Ok(fields) => {
                for field in fields {
                    out.push_str(&field.echo_line());
                    out.push('\n');
                }
            }
            Err(e) => out.push_str(&format!("multipart-error = {e}\n")),
        }
    } else {
        out.push_str(&format!("body-bytes = {}\n", req.body.len()));
    }
    out
}

/// Parses an echo body back into its `key = value` lines, in order.
pub fn parse_echo(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The status NNN of a path holding `/status/NNN`.
fn status_from_path(path: &str) -> Option<u16> {
    let mut rest = path;
    while let Some(i) = rest.find("/status/") {
        let tail = &rest[i + "/status/".len()..];
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if digits.len() == 3 {
            if let Ok(n) = digits.parse::<u16>() {
                if (100..=599).contains(&n) {
                    return Some(n);
                }
            }
        }
        rest = tail;
    }
    None
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// The connection closed before a request line arrived (a wake-up or health probe).
    Closed,
    Malformed(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Closed => f.write_str("connection closed before a request"),
            Self::Malformed(m) => write!(f, "malformed request: {m}"),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads one request from `reader`. `continue_to` receives `100 Continue` if the client
/// expects it.
pub fn read_request<R: BufRead, W: Write>(
    reader: &mut R,
    continue_to: &mut W,
) -> Result<ReceivedRequest, ReadError> {
    let mut head_len = 0;
    let mut line = Vec::new();
    // Request line; tolerate empty lines before it (RFC 9112 2.2).
    let request_line = loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        head_len += n;
        if head_len > MAX_HEAD {
            return Err(ReadError::Malformed("request head too long".into()));
        }
        let text = trim_line(&line);
        if !text.is_empty() {
            break String::from_utf8_lossy(text).into_owned();
        }
    };
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => {
            (m.to_string(), t.to_string(), v.to_string())
        }
        _ => {
            return Err(ReadError::Malformed(format!(
                "bad request line {request_line:?}"
            )))
        }
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Malformed(format!("bad version {version:?}")));
    }
    let mut headers = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(ReadError::Malformed("connection closed in headers".into()));
        }
        head_len += n;
        if head_len > MAX_HEAD {
            return Err(ReadError::Malformed("request head too long".into()));
        }
        let text = trim_line(&line);
        if text.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(text);
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| ReadError::Malformed(format!("bad header line {text:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut req = ReceivedRequest {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        continue_to.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        continue_to.flush()?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(reader)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Malformed(format!("bad Content-Length {len:?}")))?;
        if len > MAX_BODY {
            return Err(ReadError::Malformed(format!(
                "body of {len} bytes too large"
            )));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(req)
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Err(ReadError::Malformed(
                "connection closed in chunk size".into(),
            ));
        }
        let text = String::from_utf8_lossy(trim_line(&line)).into_owned();
        let size_text = text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ReadError::Malformed(format!("bad chunk size {text:?}")))?;
        if size == 0 {
            // Trailer fields until an empty line.
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line)? == 0 || trim_line(&line).is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Malformed("chunked body too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_until(b'\n', &mut line)?;
        if !trim_line(&line).is_empty() {
            return Err(ReadError::Malformed("chunk not followed by CRLF".into()));
        }
    }
}

/// The full response (head and body) the backend sends for `req`.
pub fn response_for(req: &ReceivedRequest) -> Vec<u8> {
    let status = status_from_path(req.path()).unwrap_or(200);
    let body = if matches!(status, 100..=199 | 204 | 304) {
        String::new()
    } else {
        echo_body(req)
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nConnection: close\r\n",
        reason(status)
    );
    if !matches!(status, 100..=199 | 204 | 304) {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

fn bad_request(message: &str) -> Vec<u8> {
    let body = format!("bad request: {message}\n");
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one connection: one request, one answer.
fn serve(stream: TcpStream, requests: &Mutex<Vec<ReceivedRequest>>, log: bool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let answer = match read_request(&mut reader, &mut writer) {
        Ok(req) => {
            let answer = response_for(&req);
            if log {
                eprintln!(
                    "{} {} ({} body bytes)",
                    req.method,
                    req.target,
                    req.body.len()
                );
            }
            // Recorded before answering: whoever sees the answer sees the record.
            requests.lock().unwrap_or_else(|e| e.into_inner()).push(req);
            answer
        }
        Err(ReadError::Closed) => return,
        Err(e) => {
            if log {
                eprintln!("{e}");
            }
            bad_request(&e.to_string())
        }
    };
    let _ = writer.write_all(&answer);
    let _ = writer.flush();
    let _ = writer.shutdown(std::net::Shutdown::Write);
    // Drain what the peer may still send so that closing does not reset the connection
    // before it has read the answer.
    let _ = reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}

/// A running backend; stops when dropped.
pub struct Backend {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in the order they were read completely.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the blocking accept.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
    }
}

/// Starts a backend on `addr` (port 0 picks a free one) in background threads.
pub fn try_spawn(addr: impl ToSocketAddrs) -> io::Result<Backend> {
    spawn_inner(addr, false)
}

/// Starts a backend on `addr` (port 0 picks a free one) in background threads; panics if
/// it cannot listen.
pub fn spawn(addr: impl ToSocketAddrs + fmt::Debug) -> Backend {
    let shown = format!("{addr:?}");
    try_spawn(addr).unwrap_or_else(|e| panic!("backend cannot listen on {shown}: {e}"))
}

/// Like [`try_spawn`], logging each request to standard error.
pub fn try_spawn_logging(addr: impl ToSocketAddrs) -> io::Result<Backend> {
    spawn_inner(addr, true)
}

fn spawn_inner(addr: impl ToSocketAddrs, log: bool) -> io::Result<Backend> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let requests = Arc::clone(&requests);
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("backend-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let requests = Arc::clone(&requests);
                    let _ = std::thread::Builder::new()
                        .name("backend-conn".into())
                        .spawn(move || serve(stream, &requests, log));
                }
            })?
    };
    Ok(Backend {
        addr,
        requests,
        stop,
        acceptor: Some(acceptor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// The body ngx-upload-engine's `FormBody` builds for two fields.
    const ENGINE_BODY: &[u8] = b"--------------------ngxuploadx\r\n\
        Content-Disposition: form-data; name=\"file.name\"\r\n\r\nbig.TXT\r\n\
        --------------------ngxuploadx\r\n\
        Content-Disposition: form-data; name=\"a%22b\"\r\n\r\n\r\n\
        --------------------ngxuploadx--\r\n";

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.into(),
            filename: None,
            content_type: None,
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn parses_the_engine_hand_off_body() {
        let fields = parse_multipart(
            "multipart/form-data; boundary=------------------ngxuploadx",
            ENGINE_BODY,
        )
        .unwrap();
        assert_eq!(
            fields,
            vec![field("file.name", "big.TXT"), field("a%22b", "")]
        );
    }

    #[test]
    fn accepts_a_quoted_boundary_and_odd_spacing() {
        let body = b"--a b;c\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--a b;c--";
        let fields = parse_multipart(
            "Multipart/Form-Data ;charset=utf-8; BOUNDARY=\"a b;c\"",
            body,
        )
        .unwrap();
        assert_eq!(fields, vec![field("x", "1")]);
    }

    #[test]
    fn reads_file_parts_values_with_crlf_preamble_and_epilogue() {
        let body = b"preamble\r\n--XX\r\n\
            Content-Disposition: form-data; name=\"up\"; filename=\"C:\\\\d\\\\a \\\"q\\\".txt\"\r\n\
            Content-Type: application/octet-stream\r\n\r\n\
            line1\r\nline2\r\n--X not a boundary\r\n\
            --XX  \r\n\
            content-disposition: FORM-DATA; name=empty\r\n\r\n\
            \r\n--XX--\r\nepilogue";
        let fields = parse_multipart("multipart/form-data; boundary=XX", body).unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].name, "up");
        assert_eq!(fields[0].filename.as_deref(), Some("C:\\d\\a \"q\".txt"));
        assert_eq!(
            fields[0].content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(fields[0].value, b"line1\r\nline2\r\n--X not a boundary");
        assert_eq!(
            fields[0].echo_line(),
            "up = <file C:\\d\\a \"q\".txt, 32 bytes>"
        );
        assert_eq!(fields[1], field("empty", ""));
    }

    #[test]
    fn empty_form_has_no_fields() {
        let fields = parse_multipart("multipart/form-data; boundary=b", b"--b--\r\n").unwrap();
        assert!(fields.is_empty());
    }

    #[test]
    fn rejects_malformed_bodies() {
        let ct = "multipart/form-data; boundary=b";
        for (content_type, body) in [
            ("text/plain", &b"--b--"[..]),
            ("multipart/form-data", b"--b--"),
            ("multipart/form-data; boundary=", b"----"),
            ("multipart/form-data; boundary=\"b", b"--b--"),
            (ct, b""),
            (ct, b"no boundary here"),
            (
                ct,
                b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nvalue",
            ),
            (ct, b"--b\r\nContent-Disposition: form-data; name=a\r\n"),
            (ct, b"--bjunk\r\n"),
            (ct, b"--b\r\nContent-Type: text/plain\r\n\r\nv\r\n--b--"),
            (
                ct,
                b"--b\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n--b--",
            ),
            (
                ct,
                b"--b\r\nContent-Disposition: form-data; filename=a\r\n\r\nv\r\n--b--",
            ),
            (ct, b"--b\r\nno colon\r\n\r\nv\r\n--b--"),
        ] {
            assert!(
                parse_multipart(content_type, body).is_err(),
                "{content_type:?} {:?} parsed",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_part_without_headers_is_rejected_but_parsed_structurally() {
        let r = parse_multipart("multipart/form-data; boundary=b", b"--b\r\n\r\nv\r\n--b--");
        assert_eq!(r.unwrap_err(), "part has no Content-Disposition");
    }

    fn request(raw: &[u8]) -> Result<ReceivedRequest, ReadError> {
        read_request(&mut Cursor::new(raw.to_vec()), &mut Vec::new())
    }

    #[test]
    fn reads_content_length_and_chunked_requests() {
        let req =
            request(b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/a?b=1");
        assert_eq!(req.path(), "/a");
        assert_eq!(req.query(), Some("b=1"));
        assert_eq!(req.header("HOST"), Some("x"));
        assert_eq!(req.body, b"abc");

        let req = request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(req.body, b"abc0123456789abcdef");

        let req = request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(req.body.is_empty());
    }

    #[test]
    fn answers_100_continue_when_asked() {
        let mut out = Vec::new();
        let raw = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx";
        let req = read_request(&mut Cursor::new(raw.to_vec()), &mut out).unwrap();
        assert_eq!(req.body, b"x");
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn rejects_bad_requests() {
        assert!(matches!(request(b""), Err(ReadError::Closed)));
        assert!(matches!(request(b"\r\n"), Err(ReadError::Closed)));
        for raw in [
            &b"POST\r\n\r\n"[..],
            b"POST / SPDY/3\r\n\r\n",
            b"POST / HTTP/1.1\r\nno colon\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert!(request(raw).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    fn multipart_request(target: &str) -> ReceivedRequest {
        ReceivedRequest {
            method: "POST".into(),
            target: target.into(),
            headers: vec![(
                "Content-Type".into(),
                "multipart/form-data; boundary=------------------ngxuploadx".into(),
            )],
            body: ENGINE_BODY.to_vec(),
        }
    }

    #[test]
    fn echoes_fields_and_plain_bodies() {
        let req = multipart_request("/up?x=1");
        let echo = echo_body(&req);
        assert_eq!(
            echo,
            "method = POST\nuri = /up?x=1\n\
             content-type = multipart/form-data; boundary=------------------ngxuploadx\n\
             file.name = big.TXT\na%22b = \n"
        );
        let parsed = parse_echo(&echo);
        assert_eq!(parsed[0], ("method".into(), "POST".into()));
        assert_eq!(parsed[3], ("file.name".into(), "big.TXT".into()));
        assert_eq!(parsed[4], ("a%22b".into(), "".into()));
        assert_eq!(req.field("file.name").as_deref(), Some("big.TXT"));

        let plain = ReceivedRequest {
            method: "PUT".into(),
            target: "/p".into(),
            headers: vec![],
            body: vec![0; 7],
        };
        assert_eq!(
            echo_body(&plain),
            "method = PUT\nuri = /p\ncontent-type = \nbody-bytes = 7\n"
        );

        let mut broken = multipart_request("/");
        broken.body.truncate(20);
        assert!(echo_body(&broken).contains("multipart-error = "));
    }

    #[test]
    fn status_paths() {
        assert_eq!(status_from_path("/status/404"), Some(404));
        assert_eq!(status_from_path("/a/status/201/b"), Some(201));
        assert_eq!(status_from_path("/status/x/status/503"), Some(503));
        assert_eq!(status_from_path("/status/4040"), None);
        assert_eq!(status_from_path("/status/099"), None);
        assert_eq!(status_from_path("/upload"), None);

        let mut req = multipart_request("/x/status/204?q");
        let resp = String::from_utf8(response_for(&req)).unwrap();
        assert!(resp.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(resp.ends_with("\r\n\r\n"));
        assert!(!resp.contains("Content-Length"));
        req.target = "/status/409".into();
        let resp = String::from_utf8(response_for(&req)).unwrap();
        assert!(resp.starts_with("HTTP/1.1 409 Conflict\r\n"));
        assert!(resp.contains("Connection: close\r\n"));
        assert!(resp.ends_with("file.name = big.TXT\na%22b = \n"));
    }

    /// A whole round trip over TCP against the threaded server.
    #[test]
    fn serves_and_records_over_tcp() {
        let backend = spawn("127.0.0.1:0");
        let body = ENGINE_BODY;
        let mut conn = TcpStream::connect(backend.addr()).unwrap();
        write!(
            conn,
            "POST /hand-off?a=1 HTTP/1.1\r\nHost: x\r\n\
             Content-Type: multipart/form-data; boundary=\"------------------ngxuploadx\"\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        conn.write_all(body).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains("\r\n\r\nmethod = POST\nuri = /hand-off?a=1\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with("\nfile.name = big.TXT\na%22b = \n"),
            "{answer}"
        );

        let mut conn = TcpStream::connect(backend.addr()).unwrap();
        conn.write_all(
            b"POST /status/503 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.ends_with("body-bytes = 2\n"), "{answer}");

        let mut conn = TcpStream::connect(backend.addr()).unwrap();
        conn.write_all(b"BROKEN\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

        let requests = backend.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].target, "/hand-off?a=1");
        assert_eq!(requests[0].field("file.name").as_deref(), Some("big.TXT"));
        assert_eq!(requests[1].body, b"hi");
        backend.clear();
        assert!(backend.requests().is_empty());
        drop(backend); // joins the acceptor
    }
}
