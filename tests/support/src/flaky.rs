//! A TCP relay that spoils exactly one connection and relays every other one unchanged: a
//! deterministic way to make a client or nginx meet a failure once.

use ngx_upload_backend as backend;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Which connection is spoiled, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    /// The first connection's request is read whole and answered with this status by the
    /// relay itself (as a failing backend would); it never reaches the target.
    AnswerFirst(u16),
    /// The first connection whose first request carries `X-Content-Range` is cut: its head
    /// and the first half of its body reach the target, then both sides are closed (as a
    /// client whose network fails mid-segment).
    CutFirstSegment,
}

/// What the spoiled connection carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spoiled {
    /// Its `X-Content-Range`, if any.
    pub range: Option<String>,
    /// Body bytes passed on to the target before the cut.
    pub forwarded: usize,
}

#[derive(Default)]
struct Shared {
    connections: AtomicUsize,
    spoiled_once: AtomicBool,
    spoiled: Mutex<Option<Spoiled>>,
}

pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and relays to `target`.
    pub fn start(target: SocketAddr, spoil: Spoil) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("relay: local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let stop = Arc::clone(&stop);
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        let _ = serve(stream, target, spoil, &shared);
                    });
                }
            })
        };
        Relay {
            addr,
            stop,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:port`, for a configuration or a URL.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far (the spoiled one included).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The spoiled connection, once there was one.
    pub fn spoiled(&self) -> Option<Spoiled> {
        self.shared.spoiled.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the blocking accept.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = acceptor.join();
        }
    }
}

fn serve(client: TcpStream, target: SocketAddr, spoil: Spoil, shared: &Shared) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let take_turn = || {
        shared
            .spoiled_once
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    };
    let mut reader = BufReader::new(client.try_clone()?);
    if let Spoil::AnswerFirst(status) = spoil {
        if take_turn() {
            let mut writer = client.try_clone()?;
            let request = backend::read_request(&mut reader, &mut writer)
                .map_err(|e| io::Error::other(e.to_string()))?;
            *shared.spoiled.lock().unwrap() = Some(Spoiled {
                range: request.header("x-content-range").map(str::to_string),
                forwarded: 0,
            });
            let body = format!("the relay answers {status} once\n");
            write!(
                writer,
                "HTTP/1.1 {status} Spoiled\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            writer.flush()?;
            return Ok(());
        }
    }

    // The request head, to decide; then it goes on as it came.
    let mut head = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 || head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let header = |name: &str| {
        text.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let mut upstream = TcpStream::connect(target)?;
    upstream.set_nodelay(true)?;
    upstream.write_all(&head)?;

    let range = header("x-content-range");
    if spoil == Spoil::CutFirstSegment && range.is_some() && take_turn() {
        let length: usize = header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let half = length / 2;
        let mut body = vec![0u8; half];
        reader.read_exact(&mut body)?;
        upstream.write_all(&body)?;
        upstream.flush()?;
        *shared.spoiled.lock().unwrap() = Some(Spoiled {
            range,
            forwarded: half,
        });
        // nginx reads `half` bytes, then the end of the stream; the client loses its peer.
        let _ = upstream.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }

    // Relay both ways until either side ends.
    upstream.write_all(reader.buffer())?;
    let mut from_client = reader.into_inner();
    let mut to_client = client;
    let mut from_upstream = upstream.try_clone()?;
    let mut to_upstream = upstream;
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut from_upstream, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}
