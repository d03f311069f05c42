//! A minimal HTTP/2 client (h2c, prior knowledge) for one upload request, for what curl does
//! not show: the body goes out in 16 KiB DATA frames, a window's worth in one `writev` (or one
//! frame at a time, [`Pacing`]), and the answer says how large nginx opened the stream's
//! window. The benchmark sends its payload with it (a mapped file: the client spends little
//! per byte, where curl used a whole core per GiB and was what limited the rate).
//!
//! Only what one upload needs: no HPACK dynamic table on the way out (every field is a literal
//! "without indexing"), and of the answer only `:status` (nginx sends it first, as a static
//! table index or a raw literal). Flow control is obeyed: a frame never exceeds the connection
//! window, the stream window or the peer's MAX_FRAME_SIZE.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DEFAULT_WINDOW: i64 = 65_535;
const DEFAULT_MAX_FRAME: u64 = 16_384;
/// The windows this client opens for the answer: larger than any answer here.
const OUR_WINDOW: u32 = 1 << 30;
/// The largest DATA frame sent, whatever the peer allows: browsers and curl send 16 KiB
/// frames (the protocol's default maximum). A frame as large as the whole window would make
/// the upload stop-and-wait: nginx opens the window again only as its body buffer empties,
/// and a smaller frame lets it do that while the next frames are on the way.
const DATA_FRAME: u64 = 16_384;
const IO_TIMEOUT: Duration = Duration::from_secs(300);

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

const STREAM: u32 = 1;

/// How the body goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// As many frames as the windows allow, in one `writev`: a fast client.
    WholeWindows,
    /// One frame, then nothing until nginx has opened the stream's window again by as much: a
    /// client that never has more than one frame in flight, however fast nginx is.
    FrameByFrame,
}

/// The final answer to the upload, and how the body went out.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Body bytes sent in DATA frames.
    pub sent: u64,
    pub data_frames: u64,
    /// The most the stream's window ever allowed to send at once.
    pub largest_window: i64,
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

struct Client {
    stream: TcpStream,
    conn_window: i64,
    stream_window: i64,
    peer_initial_window: i64,
    max_frame: u64,
    status: Option<u16>,
    ended: bool,
    /// Bytes read past the last complete frame.
    rbuf: Vec<u8>,
    largest_window: i64,
}

/// Sends one request with `body` as its body on a new h2c connection to `port`, and waits for
/// the final answer (interim 1xx answers are skipped). A server that answers before the whole
/// body is sent ends the upload there: [`Answer::sent`] is then short of the body.
pub fn upload(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
    pacing: Pacing,
) -> io::Result<Answer> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut client = Client {
        stream,
        conn_window: DEFAULT_WINDOW,
        stream_window: DEFAULT_WINDOW,
        peer_initial_window: DEFAULT_WINDOW,
        max_frame: DEFAULT_MAX_FRAME,
        status: None,
        ended: false,
        rbuf: Vec::new(),
        largest_window: 0,
    };
    client.start(method, path, headers, body.len() as u64)?;
    let (sent, data_frames) = client.send_body(body, pacing)?;
    while !client.ended {
        client.read_frames()?;
    }
    let status = client
        .status
        .ok_or_else(|| io::Error::other("the stream ended without an answer"))?;
    Ok(Answer {
        status,
        sent,
        data_frames,
        largest_window: client.largest_window,
    })
}

impl Client {
    fn start(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        len: u64,
    ) -> io::Result<()> {
        let mut out = PREFACE.to_vec();
        let mut settings = Vec::new();
        for (id, value) in [
            (SETTINGS_ENABLE_PUSH, 0),
            (SETTINGS_INITIAL_WINDOW_SIZE, OUR_WINDOW),
        ] {
            settings.extend_from_slice(&id.to_be_bytes());
            settings.extend_from_slice(&value.to_be_bytes());
        }
        push_frame(&mut out, SETTINGS, 0, 0, &settings);
        push_frame(
            &mut out,
            WINDOW_UPDATE,
            0,
            0,
            &(OUR_WINDOW - DEFAULT_WINDOW as u32).to_be_bytes(),
        );
        let mut block = Vec::new();
        let len_text = len.to_string();
        let fields = [
            (":method", method),
            (":scheme", "http"),
            (":path", path),
            (":authority", "bench"),
            ("content-length", len_text.as_str()),
        ];
        for (name, value) in fields {
            push_literal(&mut block, name, value);
        }
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if name != "content-length" && name != "host" {
                push_literal(&mut block, &name, value);
            }
        }
        let flags = END_HEADERS | if len == 0 { END_STREAM } else { 0 };
        push_frame(&mut out, HEADERS, flags, STREAM, &block);
        self.stream.write_all(&out)
    }

    /// The whole body: whenever the windows are open, as many DATA frames as they allow in one
    /// `writev` (or one at a time: [`Pacing`]); reads the peer's frames only when a window is closed. Returns the bytes and
    /// frames sent.
    fn send_body(&mut self, bytes: &[u8], pacing: Pacing) -> io::Result<(u64, u64)> {
        let (mut sent, mut frames) = (0usize, 0u64);
        while sent < bytes.len() {
            if self.ended {
                // Answered before the whole body (nginx's discard does): the caller sees
                // `sent` short of the body.
                break;
            }
            let window = self.conn_window.min(self.stream_window);
            if window <= 0 {
                self.read_frames()?;
                continue;
            }
            self.largest_window = self.largest_window.max(self.stream_window);
            let frame_max = self.max_frame.min(DATA_FRAME) as usize;
            let mut burst = (window as usize).min(bytes.len() - sent);
            if pacing == Pacing::FrameByFrame {
                burst = burst.min(frame_max);
            }
            let mut heads = Vec::with_capacity(burst.div_ceil(frame_max) * 9);
            let mut pieces = Vec::new();
            let mut at = sent;
            while at < sent + burst {
                let n = frame_max.min(sent + burst - at);
                let flags = if at + n == bytes.len() { END_STREAM } else { 0 };
                push_frame_head(&mut heads, n, DATA, flags, STREAM);
                pieces.push(&bytes[at..at + n]);
                at += n;
            }
            let mut slices: Vec<IoSlice<'_>> = heads
                .chunks(9)
                .zip(&pieces)
                .flat_map(|(head, piece)| [IoSlice::new(head), IoSlice::new(piece)])
                .collect();
            write_all_slices(&self.stream, &mut slices)?;
            frames += pieces.len() as u64;
            sent += burst;
            self.conn_window -= burst as i64;
            self.stream_window -= burst as i64;
            if pacing == Pacing::FrameByFrame && sent < bytes.len() {
                let before = self.stream_window + burst as i64;
                while self.stream_window < before && !self.ended {
                    self.read_frames()?;
                }
            }
        }
        Ok((sent as u64, frames))
    }

    /// Reads what the peer sent (one `read`, waiting for it if need be) and handles every
    /// complete frame in it: the window updates that queued up while the client wrote are
    /// taken together, and the next burst is as large as they allow.
    fn read_frames(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.rbuf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while self.rbuf.len() - at >= 9 {
            let head = &self.rbuf[at..at + 9];
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            if self.rbuf.len() - at < 9 + len {
                break;
            }
            let frame = Frame {
                kind: head[3],
                flags: head[4],
                stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                payload: self.rbuf[at + 9..at + 9 + len].to_vec(),
            };
            at += 9 + len;
            self.handle(frame)?;
        }
        self.rbuf.drain(..at);
        Ok(())
    }

    fn handle(&mut self, frame: Frame) -> io::Result<()> {
        match frame.kind {
            SETTINGS if frame.flags & ACK == 0 => {
                for setting in frame.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    let value =
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    match id {
                        SETTINGS_INITIAL_WINDOW_SIZE => {
                            // A new initial window moves every open stream's window by the
                            // difference (RFC 9113, 6.9.2).
                            self.stream_window += value as i64 - self.peer_initial_window;
                            self.peer_initial_window = value as i64;
                        }
                        SETTINGS_MAX_FRAME_SIZE => self.max_frame = value as u64,
                        _ => {}
                    }
                }
                let mut ack = Vec::new();
                push_frame(&mut ack, SETTINGS, ACK, 0, &[]);
                self.stream.write_all(&ack)?;
            }
            WINDOW_UPDATE => {
                let bytes: [u8; 4] = frame
                    .payload
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| io::Error::other("short WINDOW_UPDATE"))?;
                let increment = (u32::from_be_bytes(bytes) & 0x7fff_ffff) as i64;
                match frame.stream {
                    0 => self.conn_window += increment,
                    STREAM => self.stream_window += increment,
                    _ => {}
                }
            }
            PING if frame.flags & ACK == 0 => {
                let mut pong = Vec::new();
                push_frame(&mut pong, PING, ACK, 0, &frame.payload);
                self.stream.write_all(&pong)?;
            }
            HEADERS if frame.stream == STREAM => {
                let status = status_of(&frame)?;
                if !(100..=199).contains(&status) {
                    self.status = Some(status);
                }
                if frame.flags & END_STREAM != 0 {
                    self.ended = true;
                }
            }
            DATA if frame.stream == STREAM && frame.flags & END_STREAM != 0 => {
                self.ended = true;
            }
            RST_STREAM if frame.stream == STREAM => {
                // NO_ERROR after the answer: the server needs no more of the body.
                if code_of(&frame.payload, 0) == 0 && self.status.is_some() {
                    self.ended = true;
                    return Ok(());
                }
                return Err(io::Error::other(format!(
                    "the stream was reset (error code {}) after answer {:?}",
                    code_of(&frame.payload, 0),
                    self.status
                )));
            }
            GOAWAY => {
                return Err(io::Error::other(format!(
                    "GOAWAY (error code {})",
                    code_of(&frame.payload, 4)
                )));
            }
            _ => {}
        }
        Ok(())
    }
}

fn code_of(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

/// `:status` of a HEADERS frame: nginx sends it first, as an indexed field of HPACK's static
/// table (entries 8–14) or as a literal with the `:status` name index and a raw 3-digit value.
fn status_of(frame: &Frame) -> io::Result<u16> {
    let mut block = frame.payload.as_slice();
    if frame.flags & PADDED != 0 {
        let pad = *block.first().unwrap_or(&0) as usize;
        block = block.get(1..block.len().saturating_sub(pad)).unwrap_or(&[]);
    }
    if frame.flags & PRIORITY != 0 {
        block = block.get(5..).unwrap_or(&[]);
    }
    let bad = || io::Error::other(format!("cannot read :status from {block:02x?}"));
    let first = *block.first().ok_or_else(bad)?;
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if first & 0x80 != 0 {
        let index = (first & 0x7f) as usize;
        return index
            .checked_sub(8)
            .and_then(|i| STATIC.get(i))
            .copied()
            .ok_or_else(bad);
    }
    // A literal with an indexed name: 6-bit prefix (incremental indexing) or 4-bit.
    let name_index = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&name_index) {
        return Err(bad());
    }
    match block.get(1..5) {
        Some([3, digits @ ..]) => std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A literal header field without indexing, new name (RFC 7541, 6.2.2), no Huffman coding.
fn push_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    push_string(out, name.as_bytes());
    push_string(out, value.as_bytes());
}

fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    // An integer with a 7-bit prefix (RFC 7541, 5.1); the H bit stays 0.
    let mut len = s.len();
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        len -= 127;
        while len >= 128 {
            out.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(s);
}

fn push_frame_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    push_frame_head(out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
}

/// Writes all of `slices`, however many calls it takes.
fn write_all_slices(mut stream: &TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
