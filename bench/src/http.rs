//! A minimal HTTP/1.1 keep-alive client: request heads are written with `write`, bodies with
//! `sendfile(2)` from the payload file (no user-space copy on the client side).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// A request body: a range of a file.
#[derive(Clone, Copy)]
pub struct FileRange<'a> {
    pub file: &'a File,
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The header fields, names as sent (compare them case-insensitively: [`Response::header`]).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The server will close the connection after this answer.
    pub close: bool,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of the first header field named `name` (case-insensitive), as sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Conn {
    port: u16,
    stream: TcpStream,
    /// Bytes read past the last answer.
    rbuf: Vec<u8>,
    closed: bool,
}

impl Conn {
    pub fn connect(port: u16) -> io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            port,
            stream,
            rbuf: Vec::new(),
            closed: false,
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// One request and its answer; reconnects first if the server closed the connection.
    pub fn request(
        &mut self,
        method: &str,
        uri: &str,
        headers: &[(&str, String)],
        body: Option<FileRange<'_>>,
    ) -> io::Result<Response> {
        if self.closed {
            *self = Conn::connect(self.port)?;
        }
        self.write_head(method, uri, headers, body.map(|b| b.len))?;
        if let Some(body) = body {
            self.send_file(body)?;
        }
        // Interim answers (the IETF draft's `104 Upload Resumption Supported`) precede the
        // final one; the benchmark sends no `Expect`, so they carry nothing it needs.
        let response = loop {
            let r = self.read_response(method == "HEAD")?;
            if !(100..=199).contains(&r.status) || r.status == 101 {
                break r;
            }
        };
        self.closed = response.close;
        Ok(response)
    }

    /// `GET /ping`: the pid of the worker serving this connection.
    pub fn ping(&mut self) -> io::Result<u32> {
        let r = self.request("GET", "/ping", &[], None)?;
        if r.status != 200 {
            return Err(io::Error::other(format!("/ping answered {}", r.status)));
        }
        r.text()
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("/ping answered {:?}", r.text())))
    }

    pub fn write_head(
        &mut self,
        method: &str,
        uri: &str,
        headers: &[(&str, String)],
        content_length: Option<u64>,
    ) -> io::Result<()> {
        let mut head = format!("{method} {uri} HTTP/1.1\r\nHost: bench\r\n");
        if let Some(len) = content_length {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes())
    }

    /// Sends `body` with sendfile(2), all of it.
    pub fn send_file(&mut self, body: FileRange<'_>) -> io::Result<()> {
        send_file(&self.stream, body)
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        let n = self.stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a complete answer",
            ));
        }
        self.rbuf.extend_from_slice(&buf[..n]);
        Ok(())
    }

    pub fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.rbuf, b"\r\n\r\n") {
                break i;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.rbuf[..head_end]).into_owned();
        self.rbuf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let mut close = get("connection").is_some_and(|v| v.contains("close"))
            || status_line.starts_with("HTTP/1.0");
        let no_body = head_only || matches!(status, 100..=199 | 204 | 304);
        let body = if no_body {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.read_chunked()?
        } else if let Some(len) = get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| io::Error::other("bad Content-Length"))?;
            while self.rbuf.len() < len {
                self.fill()?;
            }
            self.rbuf.drain(..len).collect()
        } else {
            // Delimited by the end of the connection.
            close = true;
            let mut rest = std::mem::take(&mut self.rbuf);
            self.stream.read_to_end(&mut rest)?;
            rest
        };
        Ok(Response {
            status,
            headers,
            body,
            close,
        })
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.rbuf, b"\r\n") {
                    break i;
                }
                self.fill()?;
            };
            let line = String::from_utf8_lossy(&self.rbuf[..line_end]).into_owned();
            self.rbuf.drain(..line_end + 2);
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.rbuf, b"\r\n") {
                            break i;
                        }
                        self.fill()?;
                    };
                    self.rbuf.drain(..end + 2);
                    if end == 0 {
                        return Ok(body);
                    }
                }
            }
            while self.rbuf.len() < size + 2 {
                self.fill()?;
            }
            body.extend_from_slice(&self.rbuf[..size]);
            self.rbuf.drain(..size + 2);
        }
    }
}

/// Sends `body` to `stream` with sendfile(2), all of it.
pub fn send_file(stream: &TcpStream, body: FileRange<'_>) -> io::Result<()> {
    let mut offset = body.offset as libc::off_t;
    let end = body.offset + body.len;
    while (offset as u64) < end {
        let count = ((end - offset as u64) as usize).min(1 << 30);
        // SAFETY: both descriptors are open for the duration of the call; offset is a
        // valid pointer.
        let n = unsafe {
            libc::sendfile(
                stream.as_raw_fd(),
                body.file.as_raw_fd(),
                &mut offset,
                count,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sendfile: payload file shorter than the body",
            ));
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes written to `stream` that the peer has not acknowledged yet (SIOCOUTQ).
pub fn unacked_bytes(stream: &TcpStream) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
