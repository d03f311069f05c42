//! A minimal FastCGI responder (the role PHP-FPM plays): it records each request's params and
//! body and answers 200 with a plain-text echo, one connection per request (nginx's default
//! without `fastcgi_keep_conn`). Enough of the FastCGI 1.0 record protocol for nginx.
//!
//! The echo: `content-type = …`, `content-length = …` and `stdin-bytes = …` first, then every
//! param as `name = value`, then the fields of the form in STDIN, if it is one, as the echo
//! backend writes them.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;

/// One request as the responder received it.
#[derive(Debug, Clone, Default)]
pub struct FcgiRequest {
    pub params: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

impl FcgiRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct FastCgi {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<FcgiRequest>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FastCgi {
    pub fn start() -> FastCgi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fastcgi: bind");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let requests = Arc::clone(&requests);
                    std::thread::spawn(move || {
                        if let Err(e) = serve(stream, &requests) {
                            eprintln!("fastcgi responder: {e}");
                        }
                    });
                }
            })
        };
        FastCgi {
            addr,
            requests,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:port`, for `fastcgi_pass`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<FcgiRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }
}

impl Drop for FastCgi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
    }
}

fn read_record(conn: &mut TcpStream) -> io::Result<(u8, u16, Vec<u8>)> {
    let mut head = [0u8; 8];
    conn.read_exact(&mut head)?;
    if head[0] != 1 {
        return Err(io::Error::other(format!("FastCGI version {}", head[0])));
    }
    let id = u16::from_be_bytes([head[2], head[3]]);
    let len = u16::from_be_bytes([head[4], head[5]]) as usize;
    let mut content = vec![0u8; len + head[6] as usize];
    conn.read_exact(&mut content)?;
    content.truncate(len);
    Ok((head[1], id, content))
}

fn write_record(conn: &mut TcpStream, kind: u8, id: u16, content: &[u8]) -> io::Result<()> {
    let len = content.len() as u16;
    let [i0, i1] = id.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    conn.write_all(&[1, kind, i0, i1, l0, l1, 0, 0])?;
    conn.write_all(content)
}

/// Name-value pairs: each length is one byte below 128, else four with the top bit set.
fn parse_params(data: &[u8]) -> io::Result<Vec<(String, String)>> {
    let mut pos = 0;
    let length = |pos: &mut usize| -> io::Result<usize> {
        let b = *data
            .get(*pos)
            .ok_or_else(|| io::Error::other("truncated params"))?;
        if b < 0x80 {
            *pos += 1;
            return Ok(b as usize);
        }
        let four = data
            .get(*pos..*pos + 4)
            .ok_or_else(|| io::Error::other("truncated params"))?;
        *pos += 4;
        Ok((u32::from_be_bytes([four[0] & 0x7f, four[1], four[2], four[3]])) as usize)
    };
    let mut out = Vec::new();
    while pos < data.len() {
        let n = length(&mut pos)?;
        let v = length(&mut pos)?;
        let name = data
            .get(pos..pos + n)
            .ok_or_else(|| io::Error::other("truncated params"))?;
        let value = data
            .get(pos + n..pos + n + v)
            .ok_or_else(|| io::Error::other("truncated params"))?;
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        pos += n + v;
    }
    Ok(out)
}

fn serve(mut conn: TcpStream, requests: &Mutex<Vec<FcgiRequest>>) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut params = Vec::new();
    let mut req = FcgiRequest::default();
    let mut id = 0;
    loop {
        let (kind, rid, content) = read_record(&mut conn)?;
        match kind {
            BEGIN_REQUEST => id = rid,
            PARAMS if content.is_empty() => req.params = parse_params(&params)?,
            PARAMS => params.extend_from_slice(&content),
            STDIN if content.is_empty() => break,
            STDIN => req.stdin.extend_from_slice(&content),
            _ => {}
        }
    }
    let content_type = req.param("CONTENT_TYPE").unwrap_or_default().to_string();
    let mut body = format!(
        "content-type = {content_type}\ncontent-length = {}\nstdin-bytes = {}\n",
        req.param("CONTENT_LENGTH").unwrap_or_default(),
        req.stdin.len()
    );
    for (n, v) in &req.params {
        body.push_str(&format!("{n} = {v}\n"));
    }
    if let Ok(fields) = ngx_upload_backend::parse_multipart(&content_type, &req.stdin) {
        for f in fields {
            body.push_str(&f.echo_line());
            body.push('\n');
        }
    }
    requests.lock().unwrap().push(req);
    let out = format!(
        "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for chunk in out.as_bytes().chunks(32 * 1024) {
        write_record(&mut conn, STDOUT, id, chunk)?;
    }
    write_record(&mut conn, STDOUT, id, b"")?;
    // appStatus 0, FCGI_REQUEST_COMPLETE.
    write_record(&mut conn, END_REQUEST, id, &[0, 0, 0, 0, 0, 0, 0, 0])?;
    conn.flush()
}
