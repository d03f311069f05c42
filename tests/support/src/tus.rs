//! What the tus and IETF-draft tests share (`tests/tus.rs`, `tests/ietf.rs`): the tus location
//! they run, an HTTP exchange that keeps interim (1xx) answers and reads `HEAD` answers right,
//! the hand-off checks, a backend that holds its answer until told, curl over h2c, and the real
//! clients of `tests/clients/` (installed by `scripts/tus-clients.sh` on first use).

use crate::*;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The largest upload of [`TUS_SERVER`] (`upload_max_file_size 8m`).
pub const MAX_SIZE: u64 = 8 * 1024 * 1024;
/// Its `upload_state_expire 6h`, in seconds.
pub const EXPIRE_SECS: u64 = 6 * 3600;

/// The tus/IETF location of `nginx-conf/tus.conf`, with a smaller maximum. `{{EXPIRE}}` is the
/// expiry (`6h` by [`tus_server`]); `{{EXTRA}}` takes more lines.
pub const TUS_SERVER: &str = r#"
location /files/ {
    upload_protocol tus;
    upload_pass @backend;
    upload_store {{PREFIX}}/store 1;
    upload_state_store {{PREFIX}}/state 1;
    upload_state_expire {{EXPIRE}};
    upload_max_file_size 8m;
    upload_cors_origin *;
    upload_buffer_size 256k;
    upload_set_form_field file.name "$upload_file_name";
    upload_set_form_field file.content_type "$upload_content_type";
    upload_set_form_field file.path "$upload_tmp_path";
    upload_set_form_field upload.id "$upload_id";
    upload_set_form_field meta.filename "$upload_metadata_filename";
    upload_aggregate_form_field file.size "$upload_file_size";
    {{EXTRA}}
}
location @backend { proxy_pass http://{{BACKEND}}; }
"#;

/// [`TUS_SERVER`] expiring uploads after `expire`, with `extra` lines in the location.
pub fn tus_server(expire: &str, extra: &str) -> String {
    TUS_SERVER
        .replace("{{EXPIRE}}", expire)
        .replace("{{EXTRA}}", extra)
}

/// The builder every tus test starts from: bodies of any size reach the module.
pub fn tus_builder() -> NginxBuilder {
    Nginx::builder().http("client_max_body_size 0;")
}

/// nginx with [`TUS_SERVER`] (6 h expiry) and an echo backend.
pub fn start_tus() -> UploadEnv {
    UploadEnv::start_server(tus_builder(), &tus_server("6h", ""))
}

/// nginx with [`TUS_SERVER`] handing off to `backend_addr` (`127.0.0.1:port`) instead of the
/// echo backend it is given (which then receives nothing).
pub fn start_tus_via(backend_addr: &str) -> UploadEnv {
    let body = tus_server("6h", "").replace("{{BACKEND}}", backend_addr);
    UploadEnv::start_server(tus_builder(), &body)
}

// ---------------------------------------------------------------------------------------------
// One exchange, interim answers kept
// ---------------------------------------------------------------------------------------------

/// A final answer and the interim (1xx) answers before it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub interim: Vec<Response>,
    pub response: Response,
}

impl std::ops::Deref for Exchange {
    type Target = Response;
    fn deref(&self) -> &Response {
        &self.response
    }
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for i in &self.interim {
            writeln!(f, "{i}")?;
        }
        write!(f, "{}", self.response)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The head at the start of `buf` (status, reason, headers) and its length.
fn parse_head(buf: &[u8]) -> io::Result<(Response, usize)> {
    let end = find(buf, b"\r\n\r\n").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(500)])
            ),
        )
    })?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse().ok());
    let (true, Some(status)) = (version.starts_with("HTTP/1."), status) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {status_line:?}"),
        ));
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((
        Response {
            status,
            reason: parts.next().unwrap_or_default().to_string(),
            headers,
            body: Vec::new(),
        },
        end + 4,
    ))
}

/// Sends `request` (which must say `Connection: close`, as [`build_request`] does) and reads
/// everything nginx sends until it closes: the interim answers, then the final one. For a
/// `HEAD` (`head`), the final answer has no body whatever its `Content-Length` says.
pub fn exchange(port: u16, request: &[u8], head: bool) -> Exchange {
    try_exchange(port, request, head).unwrap_or_else(|e| {
        panic!(
            "exchange with port {port} failed: {e}\nrequest:\n{}",
            String::from_utf8_lossy(&request[..request.len().min(800)])
        )
    })
}

pub fn try_exchange(port: u16, request: &[u8], head: bool) -> io::Result<Exchange> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    conn.set_write_timeout(Some(Duration::from_secs(60)))?;
    conn.set_nodelay(true)?;
    // nginx may answer (and stop reading) before the whole body is sent: read what it said.
    let _ = conn.write_all(request).and_then(|_| conn.flush());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !buf.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    let mut interim = Vec::new();
    loop {
        let (response, len) = parse_head(&buf)?;
        if (100..200).contains(&response.status) {
            interim.push(response);
            buf.drain(..len);
            continue;
        }
        let response = if head {
            response
        } else {
            read_response(&mut io::Cursor::new(buf))?
        };
        return Ok(Exchange { interim, response });
    }
}

/// A request to `uri` with `headers` and, unless `None`, a body.
pub fn send(
    port: u16,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Exchange {
    exchange(
        port,
        &build_request(method, uri, headers, body),
        method == "HEAD",
    )
}

/// The upload id at the end of a `Location` (`/files/<id>` or an absolute URL).
#[track_caller]
pub fn id_of(location: &str) -> String {
    let id = location.rsplit('/').next().unwrap_or_default().to_string();
    assert!(
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "Location {location:?} does not end in an upload id"
    );
    id
}

/// The path part of a `Location`.
pub fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
        None => location.to_string(),
    }
}

/// Polls `probe` every 20 ms until `done` accepts what it returns, for up to `secs` seconds;
/// returns the last value (the caller asserts on it).
pub fn poll<T>(secs: u64, mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = probe();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals and the error log
// ---------------------------------------------------------------------------------------------

/// Asserts that error.log gained, after `offset`, a line at `[error]` or below (`warn`,
/// `notice`, `info`) for the request `method uri` (its request line, or one of `needles`), and
/// no line at `[crit]`, `[alert]` or `[emerg]`.
#[track_caller]
pub fn assert_refusal_logged(
    nginx: &Nginx,
    offset: usize,
    method: &str,
    uri: &str,
    needles: &[&str],
) {
    let request_line = format!("request: \"{method} {uri} HTTP/");
    let mut all: Vec<&str> = vec![&request_line];
    all.extend_from_slice(needles);
    let line = nginx.wait_log_line(offset, &all).unwrap_or_else(|gained| {
        panic!(
            "error.log gained no line for the refused {method} {uri} (looked for {all:?}); it \
             gained:\n{gained}"
        )
    });
    assert!(
        ["[error]", "[warn]", "[notice]", "[info]"]
            .iter()
            .any(|l| line.contains(l)),
        "the refusal of {method} {uri} is logged above [error]: {line}"
    );
    let gained = nginx.log_since(offset);
    let serious = serious_lines(&gained, &[]);
    assert!(
        serious.is_empty(),
        "a refusal logged at crit/alert/emerg:\n{}",
        serious.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Hand-offs
// ---------------------------------------------------------------------------------------------

/// The value of field `name` of a hand-off.
#[track_caller]
pub fn form_field(req: &ReceivedRequest, name: &str) -> String {
    let fields = req
        .fields()
        .unwrap_or_else(|e| panic!("hand-off body is not a form ({e}): {req:?}"));
    fields
        .iter()
        .find(|f| f.name == name)
        .map(Field::value_str)
        .unwrap_or_else(|| panic!("hand-off has no field {name:?}: {fields:#?}"))
}

/// The hand-offs the backend received for upload `id` (field `upload.id`).
pub fn handoffs_of(backend: &Backend, id: &str) -> Vec<ReceivedRequest> {
    backend
        .requests()
        .into_iter()
        .filter(|r| {
            r.fields()
                .ok()
                .and_then(|f| f.into_iter().find(|f| f.name == "upload.id"))
                .is_some_and(|f| f.value_str() == id)
        })
        .collect()
}

/// [`assert_one_handoff`] for the upload at `location` (its path or URL) of the usual server:
/// `env`'s backend, files under its `store`, any name.
#[track_caller]
pub fn assert_handed_off_once(env: &UploadEnv, location: &str, data: &[u8]) -> ReceivedRequest {
    assert_one_handoff(
        &env.backend,
        &env.nginx.path("store"),
        &id_of(location),
        data,
        None,
    )
}

/// Asserts that the backend received exactly one hand-off for upload `id`: a `POST` of a
/// `multipart/form-data` form whose `file.path` is an absolute path under `store` naming a
/// file that holds `data` byte for byte, `file.size` its size and, when given, `file.name`
/// `name`. Returns it.
#[track_caller]
pub fn assert_one_handoff(
    backend: &Backend,
    store: &Path,
    id: &str,
    data: &[u8],
    name: Option<&str>,
) -> ReceivedRequest {
    let all = backend.requests();
    let mine = handoffs_of(backend, id);
    assert_eq!(
        mine.len(),
        1,
        "upload {id} should have been handed off exactly once; the backend received {} \
         request(s): {all:#?}",
        all.len()
    );
    let req = mine.into_iter().next().unwrap();
    assert_eq!(req.method, "POST", "the hand-off is always a POST");
    let content_type = req.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("multipart/form-data"),
        "hand-off Content-Type {content_type:?}"
    );
    assert_eq!(form_field(&req, "file.size"), data.len().to_string());
    if let Some(name) = name {
        assert_eq!(form_field(&req, "file.name"), name, "file.name");
    }
    let path = PathBuf::from(form_field(&req, "file.path"));
    assert!(
        path.is_absolute(),
        "file.path {} is not absolute",
        path.display()
    );
    assert!(
        path.starts_with(store),
        "file.path {} is not under upload_store {}",
        path.display(),
        store.display()
    );
    let content = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read the handed-off file {}: {e}", path.display()));
    assert_bytes_eq(&content, data, "the handed-off file");
    req
}

/// Every file under the data and state stores whose name holds `id`.
pub fn files_of(nginx: &Nginx, id: &str) -> Vec<PathBuf> {
    let mut out = files_under(&nginx.path("store"));
    out.extend(files_under(&nginx.path("state")));
    out.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(id))
    });
    out
}

// ---------------------------------------------------------------------------------------------
// A backend that holds its answer
// ---------------------------------------------------------------------------------------------

/// A backend that reads each request whole, records it, and answers (as the echo backend
/// does) only once [`GatedBackend::open`] was called.
pub struct GatedBackend {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    stop: Arc<AtomicBool>,
}

impl GatedBackend {
    pub fn start() -> GatedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (open, requests, stop) = (open.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (open, requests) = (open.clone(), requests.clone());
                    std::thread::spawn(move || {
                        let mut writer = stream.try_clone().unwrap();
                        let mut reader = io::BufReader::new(stream);
                        let Ok(req) = backend::read_request(&mut reader, &mut writer) else {
                            return;
                        };
                        let answer = backend::response_for(&req);
                        requests.lock().unwrap().push(req);
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while !open.load(Ordering::SeqCst) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        let _ = writer.write_all(&answer);
                        let _ = writer.shutdown(std::net::Shutdown::Write);
                    });
                }
            });
        }
        GatedBackend {
            addr,
            open,
            requests,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }

    /// Lets every held answer (and every later one) go.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for GatedBackend {
    fn drop(&mut self) {
        self.open();
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Small encodings: Base64 (metadata, checksums), HTTP-dates
// ---------------------------------------------------------------------------------------------

/// Standard Base64 with padding.
pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `hex` as bytes.
pub fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The `Upload-Checksum` value `sha1 <base64>` of `data` (digest from coreutils' sha1sum).
pub fn sha1_checksum(data: &[u8]) -> String {
    format!("sha1 {}", b64(&unhex(&digest_of_bytes("sha1sum", data))))
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 5.6.7), checking its
/// exact form (weekday included); `None` for anything else.
pub fn parse_imf_fixdate(s: &str) -> Option<u64> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 || &s[3..5] != ", " || &s[25..] != " GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = &s[r];
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? as i64 + 1;
    let year = num(12..16)?;
    let (h, mi, se) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if [&s[7..8], &s[11..12], &s[16..17], &s[19..20], &s[22..23]] != [" ", " ", " ", ":", ":"] {
        return None;
    }
    // days_from_civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if DAYS[days.rem_euclid(7) as usize] != &s[..3] || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

/// An sf-dictionary of integers (`max-size=10, max-age=3600`) as pairs.
pub fn sf_integers(value: &str) -> Vec<(String, u64)> {
    value
        .split(',')
        .filter_map(|m| {
            let (k, v) = m.trim().split_once('=')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// curl over HTTP/2 cleartext
// ---------------------------------------------------------------------------------------------

/// What curl got.
pub struct Curl {
    pub status: u16,
    pub http_version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for Curl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "HTTP/{} {}", self.http_version, self.status)?;
        for (n, v) in &self.headers {
            writeln!(f, "{n}: {v}")?;
        }
        write!(f, "\n{}", self.text())
    }
}

/// `curl --http2-prior-knowledge -X method` to `uri` with `headers` and, if given, the body
/// in `body` (sent from a file). The headers of the final answer (after any 1xx) are kept.
pub fn curl_h2(
    port: u16,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Curl {
    let dir = fresh_dir("curl-h2-body");
    let data_path = dir.join("data");
    let mut args: Vec<String> = Vec::new();
    if method == "HEAD" {
        args.push("-I".into());
    } else {
        args.extend(["-X".into(), method.to_string()]);
    }
    args.extend(["-H".into(), "Expect:".into()]);
    for (n, v) in headers {
        args.push("-H".into());
        args.push(if v.is_empty() {
            format!("{n};")
        } else {
            format!("{n}: {v}")
        });
    }
    if let Some(body) = body {
        std::fs::write(&data_path, body).unwrap();
        args.push("--data-binary".into());
        args.push(format!("@{}", data_path.display()));
    }
    let a = crate::curl::curl_h2(port, uri, &args, None);
    let _ = std::fs::remove_dir_all(&dir);
    Curl {
        status: a.status,
        http_version: a.http_version,
        headers: a.headers,
        body: a.body,
    }
}

// ---------------------------------------------------------------------------------------------
// The real clients
// ---------------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    crate::locate::workspace_root()
}

pub fn tus_js_dir() -> PathBuf {
    repo().join("tests/clients/tus-js")
}

pub fn tuspy_python() -> PathBuf {
    repo().join("target/tuspy-venv/bin/python")
}

/// Installs tus-js-client and tuspy (`scripts/tus-clients.sh`, idempotent; `scripts/setup.sh`
/// runs it too) once per test binary.
pub fn ensure_clients() {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = DONE.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo().join("scripts/tus-clients.sh"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash scripts/tus-clients.sh: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/tus-clients.sh failed ({}): the tus client tests need node/npm and \
                 python3 with venv (scripts/setup.sh installs them)\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// What a client driver printed: one JSON object per run.
pub struct ClientOutput {
    pub code: Option<i32>,
    pub runs: Vec<Json>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for ClientOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl ClientOutput {
    /// The run of `scenario` (and, for tus-js-client, `protocol`).
    #[track_caller]
    pub fn run(&self, scenario: &str, protocol: Option<&str>) -> &Json {
        self.runs
            .iter()
            .find(|r| {
                r.get("scenario").and_then(Json::as_str) == Some(scenario)
                    && protocol.is_none_or(|p| r.get("protocol").and_then(Json::as_str) == Some(p))
            })
            .unwrap_or_else(|| panic!("no run of {scenario} {protocol:?}:\n{self}"))
    }
}

/// Runs `program args…` with a deadline, parsing each stdout line as JSON.
fn run_driver(mut cmd: Command, what: &str) -> ClientOutput {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    let runs = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Json::parse(l).unwrap_or_else(|e| panic!("{what} printed non-JSON ({e}): {l}")))
        .collect();
    let output = ClientOutput {
        code: status.and_then(|s| s.code()),
        runs,
        stdout,
        stderr,
    };
    assert!(
        status.is_some(),
        "{what} did not finish within 240 s:\n{output}"
    );
    output
}

/// `node tests/clients/tus-js/upload.mjs --endpoint … --file … args…`.
pub fn tus_js(endpoint: &str, file: &Path, args: &[&str]) -> ClientOutput {
    ensure_clients();
    let mut cmd = Command::new("node");
    cmd.arg(tus_js_dir().join("upload.mjs"))
        .args(["--endpoint", endpoint])
        .arg("--file")
        .arg(file)
        .args(["--timeout-ms", "60000"])
        .args(args);
    run_driver(cmd, "tus-js-client (upload.mjs)")
}

/// `target/tuspy-venv/bin/python tests/clients/tuspy/upload.py --endpoint … --file … args…`.
pub fn tuspy(endpoint: &str, file: &Path, args: &[&str]) -> ClientOutput {
    ensure_clients();
    let mut cmd = Command::new(tuspy_python());
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(repo().join("tests/clients/tuspy/upload.py"))
        .args(["--endpoint", endpoint])
        .arg("--file")
        .arg(file)
        .args(args);
    run_driver(cmd, "tuspy (upload.py)")
}

/// A test file of `len` deterministic bytes in a fresh directory, named `name`.
pub fn test_file(name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = test_data(len, seed);
    let path = fresh_dir("tus-file").join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

// ---------------------------------------------------------------------------------------------
// A small JSON reader for the drivers' output
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing text at {}", p.i));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }

    /// `self.key` as a string (`""` when absent or not a string).
    pub fn str(&self, key: &str) -> &str {
        self.get(key).and_then(Json::as_str).unwrap_or_default()
    }

    /// Whether `self.ok` is `true`.
    pub fn ok(&self) -> bool {
        self.get("ok").and_then(Json::as_bool) == Some(true)
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Json::Null => write!(f, "null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) => write!(f, "{n}"),
            Json::Str(s) => write!(f, "{s:?}"),
            Json::Arr(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().enumerate() {
                    write!(f, "{}{v}", if i > 0 { "," } else { "" })?;
                }
                write!(f, "]")
            }
            Json::Obj(m) => {
                write!(f, "{{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    write!(f, "{}{k:?}:{v}", if i > 0 { "," } else { "" })?;
                }
                write!(f, "}}")
            }
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && b" \t\r\n".contains(&self.s[self.i]) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit} at {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            None => Err("unexpected end".into()),
            Some(b'n') => self.eat("null").map(|_| Json::Null),
            Some(b't') => self.eat("true").map(|_| Json::Bool(true)),
            Some(b'f') => self.eat("false").map(|_| Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.i += 1;
                let mut out = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(out));
                }
                loop {
                    out.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(out));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut out = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(out));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.eat(":")?;
                    let v = self.value()?;
                    out.push((k, v));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(out));
                        }
                        _ => return Err(format!("bad object at {}", self.i)),
                    }
                }
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Json::Num)
                    .ok_or_else(|| format!("bad value at {start}"))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat("\"")?;
        let mut out = String::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err("unterminated string".into());
            };
            self.i += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("bad escape")?;
                    self.i += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.i..self.i + 4])
                                .map_err(|e| e.to_string())?;
                            let mut code =
                                u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            self.i += 4;
                            if (0xd800..0xdc00).contains(&code)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                let hex = std::str::from_utf8(&self.s[self.i + 2..self.i + 6])
                                    .map_err(|e| e.to_string())?;
                                let low =
                                    u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                                self.i += 6;
                                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                            }
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        other => out.push(other as char),
                    }
                }
                _ => {
                    // Copy a UTF-8 sequence whole.
                    let start = self.i - 1;
                    let len = match c {
                        0..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    self.i = (start + len).min(self.s.len());
                    out.push_str(&String::from_utf8_lossy(&self.s[start..self.i]));
                }
            }
        }
    }
}
