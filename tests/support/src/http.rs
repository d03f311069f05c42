//! A plain HTTP/1.1 client over `TcpStream`: requests built byte for byte (so tests can send
//! exactly what they mean, malformed included), one response read with every framing nginx
//! uses (`Content-Length`, chunked, until close; interim `1xx` skipped).

use ngx_upload_backend as backend;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Read/write timeout of the test client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A response as read from the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The backend's echo lines (`key = value`).
    pub fn echo(&self) -> Vec<(String, String)> {
        backend::parse_echo(&self.text())
    }

    /// The value of the first echo line with that key.
    pub fn echo_value(&self, key: &str) -> Option<String> {
        self.echo()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "HTTP {} {}", self.status, self.reason)?;
        for (n, v) in &self.headers {
            writeln!(f, "{n}: {v}")?;
        }
        writeln!(f)?;
        let text = self.text();
        if text.len() > 2000 {
            let mut cut = 2000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            write!(f, "{}… ({} bytes)", &text[..cut], text.len())
        } else {
            write!(f, "{text}")
        }
    }
}

/// Sends `request` as is on a new connection to 127.0.0.1:`port` and reads one response
/// (skipping `100 Continue`). A failed write (nginx answering early and closing) is not an
/// error as long as a response can be read.
pub fn send_raw(port: u16, request: &[u8]) -> Response {
    try_send_raw(port, request).unwrap_or_else(|e| panic!("request to port {port} failed: {e}"))
}

pub fn try_send_raw(port: u16, request: &[u8]) -> io::Result<Response> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.set_nodelay(true)?;
    let write_result = conn.write_all(request).and_then(|_| conn.flush());
    match read_response(&mut conn) {
        Ok(r) => Ok(r),
        Err(e) => {
            let e = if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no complete response within {IO_TIMEOUT:?} ({e})"),
                )
            } else {
                e
            };
            Err(match write_result {
                Err(w) => io::Error::new(e.kind(), format!("{e} (after write error: {w})")),
                Ok(()) => e,
            })
        }
    }
}

/// Reads one HTTP/1.x response, skipping interim 1xx responses.
pub fn read_response<R: Read>(conn: &mut R) -> io::Result<Response> {
    let mut buf = Vec::new();
    loop {
        let (head_end, status, reason, headers) = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status_line = lines.next().unwrap_or_default();
                let mut parts = status_line.splitn(3, ' ');
                let version = parts.next().unwrap_or_default();
                if !version.starts_with("HTTP/1.") {
                    return Err(bad(format!("bad status line {status_line:?}")));
                }
                let status: u16 = parts
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
                let reason = parts.next().unwrap_or_default().to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect::<Vec<_>>();
                break (end + 4, status, reason, headers);
            }
            if read_more(conn, &mut buf)? == 0 {
                return Err(bad(format!(
                    "connection closed before a full response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                )));
            }
        };
        if (100..200).contains(&status) {
            buf.drain(..head_end);
            continue;
        }
        let mut response = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
        let length = response
            .header("content-length")
            .map(|l| {
                l.parse::<usize>()
                    .map_err(|_| bad(format!("bad Content-Length {l:?}")))
            })
            .transpose()?;
        let mut body = buf.split_off(head_end);
        if status == 204 || status == 304 {
            // no body
        } else if chunked {
            loop {
                if let Some(decoded) = decode_chunked(&body)? {
                    body = decoded;
                    break;
                }
                if read_more(conn, &mut body)? == 0 {
                    return Err(bad("connection closed inside a chunked body".into()));
                }
            }
        } else if let Some(length) = length {
            while body.len() < length {
                if read_more(conn, &mut body)? == 0 {
                    return Err(bad(format!(
                        "connection closed after {} of {length} body bytes",
                        body.len()
                    )));
                }
            }
            body.truncate(length);
        } else {
            while read_more(conn, &mut body)? > 0 {}
        }
        response.body = body;
        return Ok(response);
    }
}

fn read_more<R: Read>(conn: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match conn.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A reset after the response was sent completely ends a close-delimited body.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// The decoded body if `data` holds a complete chunked body.
fn decode_chunked(data: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_end) = find(&data[pos..], b"\r\n").map(|i| i + pos) else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&data[pos..line_end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = find(&data[pos..], b"\r\n").map(|i| i + pos) else {
                    return Ok(None);
                };
                if end == pos {
                    return Ok(Some(out));
                }
                pos = end + 2;
            }
        }
        if data.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[pos..pos + size]);
        pos += size + 2;
    }
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Builds a request: `METHOD uri HTTP/1.1`, `Host`, `Connection: close`, `Content-Length`
/// (unless `headers` has one, or `body` is `None`), then `headers` in order, then the body.
pub fn build_request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut req = format!("{method} {uri} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    let has_length = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if let Some(body) = body {
        if !has_length {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    if let Some(body) = body {
        req.extend_from_slice(body);
    }
    req
}

/// Any request with a body.
pub fn request(
    port: u16,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    send_raw(port, &build_request(method, uri, headers, Some(body)))
}

/// A GET (no body).
pub fn get(port: u16, uri: &str) -> Response {
    send_raw(port, &build_request("GET", uri, &[], None))
}

/// A POST with exactly these headers (plus Host, Connection and Content-Length).
pub fn post_raw_headers(port: u16, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request(port, "POST", uri, headers, body)
}

/// `body` in chunked transfer coding, chunk sizes taken from `sizes` in turn, then the last
/// chunk.
pub fn chunked_body(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < body.len() {
        let n = sizes[i % sizes.len()].max(1).min(body.len() - pos);
        i += 1;
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&body[pos..pos + n]);
        out.extend_from_slice(b"\r\n");
        pos += n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
