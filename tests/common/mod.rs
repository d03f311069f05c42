//! The integration-test harness: real nginx processes with the module loaded, a plain HTTP/1.1
//! client over `TcpStream`, and helpers for test data and the store on disk.
//!
//! Which nginx and module are used:
//! - nginx: `$NGX_UPLOAD_NGINX`, else `nginx` in the vendored build directory that build.rs
//!   passes on as `NGX_UPLOAD_NGINX_BUILD_DIR` (the very binary the module is built against);
//! - module: `$NGX_UPLOAD_MODULE`, else `libngx_upload.so` in the cargo profile directory this
//!   test binary runs from (`target/<profile>/deps/<test>` → `target/<profile>/`).
//!
//! Every [`Nginx`] gets a fresh prefix directory (`/tmp/ngx-upload-test-…`) holding its
//! `nginx.conf`, `error.log` and temp paths; it is removed when the test passes and kept (and
//! printed) when it fails.

#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use ngx_upload_backend::{self as backend, Backend, Field, ReceivedRequest};

mod procfs;
pub use procfs::{held_connections, ofd_locks, tracers, unread_by_peer};

/// How long nginx may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nginx may take to exit after QUIT.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout of the test client.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Locating nginx and the module
// ---------------------------------------------------------------------------------------------

/// The nginx binary to run.
pub fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NGX_UPLOAD_NGINX") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NGX_UPLOAD_NGINX={} is not a file",
            path.display()
        );
        return path;
    }
    let Some(build_dir) = option_env!("NGX_UPLOAD_NGINX_BUILD_DIR") else {
        panic!(
            "no nginx to test with: build.rs did not provide NGX_UPLOAD_NGINX_BUILD_DIR \
             (is the \"vendored\" feature off?); set NGX_UPLOAD_NGINX to an nginx binary \
             built from the same sources as the module"
        );
    };
    let path = Path::new(build_dir).join("nginx");
    assert!(
        path.is_file(),
        "nginx binary {} not found; run `cargo build` first or set NGX_UPLOAD_NGINX",
        path.display()
    );
    path
}

/// The module to load.
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("NGX_UPLOAD_MODULE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NGX_UPLOAD_MODULE={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test binary has a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join("libngx_upload.so");
    assert!(
        path.is_file(),
        "the ngx-upload module {} does not exist: run `cargo build` (same profile as the \
         tests) first, or set NGX_UPLOAD_MODULE to the module's .so",
        path.display()
    );
    check_module_is_fresh(&path);
    path
}

/// `cargo test` does not build the module: integration tests cannot link a cdylib, so cargo
/// does not count it as their dependency. A module older than its sources would test stale
/// code; refuse it.
fn check_module_is_fresh(module: &Path) {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let built = fs::metadata(module)
            .and_then(|m| m.modified())
            .map_err(|e| format!("stat {}: {e}", module.display()))?;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
        let mut consider = |path: &Path| {
            if let Ok(modified) = fs::metadata(path).and_then(|m| m.modified()) {
                let newer = match &newest {
                    Some((t, _)) => modified > *t,
                    None => true,
                };
                if newer {
                    newest = Some((modified, path.to_path_buf()));
                }
            }
        };
        fn walk(dir: &Path, consider: &mut dyn FnMut(&Path)) {
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        walk(&path, consider);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        consider(&path);
                    }
                }
            }
        }
        // Cargo's dep-info file beside the module lists exactly the sources it was built from.
        let dep_info = module.with_extension("d");
        match fs::read_to_string(&dep_info) {
            Ok(text) => {
                let deps = text.split_once(':').map(|(_, d)| d).unwrap_or("");
                let deps = deps.replace("\\ ", "\u{0}");
                for dep in deps.split_whitespace() {
                    consider(Path::new(&dep.replace('\u{0}', " ")));
                }
            }
            Err(_) => {
                walk(&root.join("src"), &mut consider);
                walk(&root.join("engine/src"), &mut consider);
                consider(&root.join("build.rs"));
            }
        }
        match newest {
            Some((source_time, source)) if source_time > built => Err(format!(
                "the ngx-upload module {} is older than {}: `cargo test` does not rebuild the \
                 module (a cdylib); run `cargo build` (same profile as the tests) first, or set \
                 NGX_UPLOAD_MODULE to the module's .so",
                module.display(),
                source.display()
            )),
            _ => Ok(()),
        }
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

/// The version of the nginx under test, from `nginx -v` (`nginx version: nginx/1.28.3`).
pub fn nginx_version() -> (u32, u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let nginx = nginx_binary();
        let output = Command::new(&nginx)
            .arg("-v")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} -v: {e}", nginx.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        let version = text
            .split("nginx/")
            .nth(1)
            .map(|rest| {
                rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .next()
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let mut numbers = version.split('.').map(|n| n.parse::<u32>());
        match (numbers.next(), numbers.next(), numbers.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => (a, b, c),
            _ => panic!(
                "cannot read the version of {} from `nginx -v`: {text:?}",
                nginx.display()
            ),
        }
    })
}

/// Whether this process runs as root (nginx then needs `user root;` to write where we can).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------------
// Temporary prefix directories and ports
// ---------------------------------------------------------------------------------------------

/// A fresh, empty directory under the system temp dir.
pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "ngx-upload-{tag}-{}-{}-{nanos:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

// ---------------------------------------------------------------------------------------------
// Waiting for a state
// ---------------------------------------------------------------------------------------------

/// How long the harness waits for a state another process brings about.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `probe` until it returns `Ok`, for up to `timeout`: the value, or past the deadline
/// the last probe's `Err` (why it was not yet the state awaited).
pub fn try_wait_for<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    // Soon at first (most states come within a millisecond), then every 10 ms.
    let mut pause = Duration::from_micros(100);
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    }
}

/// [`try_wait_for`] that panics past the deadline, saying what was awaited (`what`) and why
/// the last probe was not it. What tests use instead of sleeping: the state they wait for,
/// checked until it holds.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    match try_wait_for(timeout, probe) {
        Ok(value) => value,
        Err(why) => panic!("waited {timeout:?} for {what}, in vain; last: {why}"),
    }
}

/// Waits until the process at the other end of `conn` (nginx) has read every byte written to
/// it: to split what a request sends into reads of nginx's exactly where a test cuts it.
#[track_caller]
pub fn wait_consumed(conn: &TcpStream) {
    wait_for(
        "nginx to read everything sent on the connection",
        WAIT_TIMEOUT,
        || match unread_by_peer(conn) {
            Ok(Some(0)) => Ok(()),
            Ok(Some(n)) => Err(format!("{n} bytes unread")),
            Ok(None) => Err("the connection is not accepted yet".to_string()),
            Err(e) => Err(format!("cannot inspect the connection: {e}")),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The configuration skeleton
// ---------------------------------------------------------------------------------------------

/// What goes around a server body.
#[derive(Debug, Clone)]
pub struct Skeleton {
    pub load_module: bool,
    pub worker_processes: u32,
    pub main_lines: Vec<String>,
    pub http_lines: Vec<String>,
    pub backend: Option<SocketAddr>,
    /// Serve HTTP/2 over cleartext (h2c) on the listening port.
    pub http2: bool,
}

impl Default for Skeleton {
    fn default() -> Self {
        Self {
            load_module: true,
            worker_processes: 1,
            main_lines: Vec::new(),
            http_lines: Vec::new(),
            backend: None,
            http2: false,
        }
    }
}

impl Skeleton {
    /// Replaces `{{PREFIX}}`, `{{BACKEND}}` and `{{MODULE}}` in `text`.
    pub fn substitute(&self, text: &str, prefix: &Path) -> String {
        let mut out = text.replace("{{PREFIX}}", &prefix.display().to_string());
        if out.contains("{{BACKEND}}") {
            let backend = self.backend.unwrap_or_else(|| {
                panic!("the configuration uses {{{{BACKEND}}}} but no backend is attached")
            });
            out = out.replace("{{BACKEND}}", &format!("127.0.0.1:{}", backend.port()));
        }
        if out.contains("{{MODULE}}") {
            out = out.replace("{{MODULE}}", &module_path().display().to_string());
        }
        out
    }

    /// The whole nginx.conf for a server listening on `port` with `server_body`.
    pub fn render(&self, prefix: &Path, port: u16, server_body: &str) -> String {
        let p = prefix.display();
        let mut conf = String::new();
        if self.load_module {
            conf.push_str(&format!("load_module {};\n", module_path().display()));
        }
        conf.push_str(&format!(
            "daemon off;\n\
             master_process on;\n\
             worker_processes {};\n\
             pid {p}/nginx.pid;\n\
             error_log {p}/error.log info;\n",
            self.worker_processes
        ));
        if running_as_root() {
            conf.push_str("user root;\n");
        }
        for line in &self.main_lines {
            conf.push_str(&self.substitute(line, prefix));
            conf.push('\n');
        }
        conf.push_str("events { worker_connections 1024; }\n");
        conf.push_str(&format!(
            "http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {p}/client_body;\n\
             \x20   proxy_temp_path {p}/proxy;\n\
             \x20   fastcgi_temp_path {p}/fastcgi;\n\
             \x20   uwsgi_temp_path {p}/uwsgi;\n\
             \x20   scgi_temp_path {p}/scgi;\n"
        ));
        for line in &self.http_lines {
            conf.push_str("    ");
            conf.push_str(&self.substitute(line, prefix));
            conf.push('\n');
        }
        if !self.http2 {
            conf.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port};\n"
            ));
        } else if nginx_version() >= (1, 25, 1) {
            conf.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port};\n        http2 on;\n"
            ));
        } else {
            // Before 1.25.1 HTTP/2 is a parameter of `listen`.
            conf.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port} http2;\n"
            ));
        }
        for line in self.substitute(server_body, prefix).lines() {
            conf.push_str("        ");
            conf.push_str(line);
            conf.push('\n');
        }
        conf.push_str("    }\n}\n");
        conf
    }
}

// ---------------------------------------------------------------------------------------------
// Running nginx
// ---------------------------------------------------------------------------------------------

/// Builds an [`Nginx`] with more than a server body.
#[derive(Debug, Clone, Default)]
pub struct NginxBuilder {
    skeleton: Skeleton,
    tolerated: Vec<String>,
}

impl NginxBuilder {
    pub fn worker_processes(mut self, n: u32) -> Self {
        self.skeleton.worker_processes = n;
        self
    }

    /// A line for the `http {}` block (`{{PREFIX}}`/`{{BACKEND}}` are substituted).
    pub fn http(mut self, line: &str) -> Self {
        self.skeleton.http_lines.push(line.to_string());
        self
    }

    /// A line for the main (top-level) context.
    pub fn main(mut self, line: &str) -> Self {
        self.skeleton.main_lines.push(line.to_string());
        self
    }

    /// Makes `{{BACKEND}}` stand for this backend.
    pub fn backend(mut self, backend: &Backend) -> Self {
        self.skeleton.backend = Some(backend.addr());
        self
    }

    /// Serves HTTP/2 over cleartext (prior knowledge) instead of HTTP/1.x: `http2 on;` on
    /// nginx 1.25.1 and later, `listen … http2` before.
    pub fn http2(mut self) -> Self {
        self.skeleton.http2 = true;
        self
    }

    /// Runs nginx without `load_module` (to test the harness itself).
    pub fn without_module(mut self) -> Self {
        self.skeleton.load_module = false;
        self
    }

    /// error.log lines holding `needle` do not fail the test when nginx stops, even at
    /// `[alert]`, `[crit]` or `[emerg]` level.
    pub fn tolerate_log(mut self, needle: &str) -> Self {
        self.tolerated.push(needle.to_string());
        self
    }

    pub fn skeleton(&self) -> &Skeleton {
        &self.skeleton
    }

    pub fn start(self, server_body: &str) -> Nginx {
        Nginx::start_with(self, server_body)
    }

    /// `nginx -t` on this skeleton around `server_body`; see [`nginx_t`].
    pub fn test_config(&self, server_body: &str) -> (bool, String) {
        nginx_binary();
        if self.skeleton.load_module {
            module_path();
        }
        let prefix = fresh_dir("conf-test");
        let conf = self.skeleton.render(&prefix, free_port(), server_body);
        let conf_path = prefix.join("nginx.conf");
        fs::write(&conf_path, &conf).expect("write nginx.conf");
        let (ok, output) = nginx_t(&conf_path);
        let _ = fs::remove_dir_all(&prefix);
        (ok, format!("{output}\n--- nginx.conf ---\n{conf}"))
    }
}

/// A running nginx (master and workers) serving one `server {}` on 127.0.0.1.
pub struct Nginx {
    child: Option<Child>,
    prefix: PathBuf,
    port: u16,
    tolerated: Vec<String>,
}

impl Nginx {
    pub fn builder() -> NginxBuilder {
        NginxBuilder::default()
    }

    /// Starts nginx with the module loaded and one server with `server_body`.
    pub fn start(server_body: &str) -> Nginx {
        Self::builder().start(server_body)
    }

    fn start_with(builder: NginxBuilder, server_body: &str) -> Nginx {
        // Find nginx and the module (or fail saying why) before making anything.
        let nginx = nginx_binary();
        if builder.skeleton.load_module {
            module_path();
        }
        let prefix = fresh_dir("test");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let conf = builder.skeleton.render(&prefix, port, server_body);
            let conf_path = prefix.join("nginx.conf");
            fs::write(&conf_path, &conf).expect("write nginx.conf");
            let error_log = prefix.join("error.log");
            let stderr = fs::File::create(prefix.join("stderr.log")).expect("create stderr.log");
            let child = Command::new(&nginx)
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(&error_log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", nginx.display()));
            let mut child = child;
            let workers = builder.skeleton.worker_processes;
            match wait_ready(&mut child, &prefix, port, workers) {
                Ok(()) => {
                    return Nginx {
                        child: Some(child),
                        prefix,
                        port,
                        tolerated: builder.tolerated.clone(),
                    }
                }
                Err(why) => {
                    kill_tree(&mut child);
                    let log = fs::read_to_string(&error_log).unwrap_or_default();
                    let stderr = fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
                    let port_taken = log.contains("Address already in use")
                        || stderr.contains("Address already in use");
                    if port_taken && attempt < 5 {
                        // Another test took the port between free_port() and nginx's bind.
                        let _ = fs::rename(&error_log, prefix.join(format!("error.log.{attempt}")));
                        continue;
                    }
                    // Everything worth seeing goes into the message.
                    let _ = fs::remove_dir_all(&prefix);
                    panic!(
                        "nginx did not start: {why}\n--- {} ---\n{log}\n--- stderr ---\n{stderr}\
                         \n--- nginx.conf ---\n{conf}",
                        error_log.display()
                    );
                }
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `{prefix}/{rel}`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.prefix.join(rel)
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn error_log(&self) -> String {
        fs::read(self.prefix.join("error.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Current length of error.log, to look at what a request adds with [`Self::log_since`].
    pub fn log_len(&self) -> usize {
        fs::metadata(self.prefix.join("error.log"))
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// What error.log gained after it was `offset` bytes long.
    pub fn log_since(&self, offset: usize) -> String {
        let log = fs::read(self.prefix.join("error.log")).unwrap_or_default();
        String::from_utf8_lossy(log.get(offset..).unwrap_or_default()).into_owned()
    }

    /// Waits (up to 3 s) until error.log gained, after `offset`, a line holding one of
    /// `needles` (case-insensitive); returns that line, or `Err` with what was gained.
    pub fn wait_log_line(&self, offset: usize, needles: &[&str]) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let gained = self.log_since(offset);
            for line in gained.lines() {
                let lower = line.to_ascii_lowercase();
                if needles
                    .iter()
                    .any(|n| lower.contains(&n.to_ascii_lowercase()))
                {
                    return Ok(line.to_string());
                }
            }
            if Instant::now() > deadline {
                return Err(gained);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that error.log gained, after `offset`, a line holding one of `needles`.
    #[track_caller]
    pub fn assert_logged(&self, offset: usize, needles: &[&str]) -> String {
        match self.wait_log_line(offset, needles) {
            Ok(line) => line,
            Err(gained) => panic!(
                "error.log gained no line mentioning any of {needles:?}; it gained:\n{gained}"
            ),
        }
    }

    /// Lines at `[alert]`, `[crit]` or `[emerg]` not covered by a tolerated needle.
    pub fn serious_log_lines(&self) -> Vec<String> {
        serious_lines(&self.error_log(), &self.tolerated)
    }

    /// Lets error.log lines holding `needle` pass the check at stop.
    pub fn tolerate_log(&mut self, needle: &str) {
        self.tolerated.push(needle.to_string());
    }

    /// Pids of the worker processes (children of the master).
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// The client connections nginx's workers hold open, described (empty when idle).
    pub fn client_connections(&self) -> Vec<String> {
        self.worker_pids()
            .into_iter()
            .flat_map(|pid| held_connections(pid, self.port))
            .collect()
    }

    /// Waits until nginx holds no client connection: every request it served is over and
    /// freed, so the cleanups of the requests' pools (where the module drops what a request
    /// held: its claim on a session, the files of a failed upload) have run. A test calls it
    /// after it has read the answers and closed its connections.
    #[track_caller]
    pub fn wait_idle(&self) {
        wait_for(
            "nginx to close its client connections (the requests' cleanups to run)",
            WAIT_TIMEOUT,
            || {
                let held = self.client_connections();
                if held.is_empty() {
                    Ok(())
                } else {
                    Err(held.join("; "))
                }
            },
        )
    }

    /// Sends `signal` to every worker; returns their pids.
    pub fn signal_workers(&self, signal: i32) -> Vec<u32> {
        let pids = self.worker_pids();
        for pid in &pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid as libc::pid_t, signal) };
        }
        pids
    }

    /// Sends `signal` to the master.
    pub fn signal_master(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// Whether the master is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Graceful shutdown: QUIT, then wait for the master to exit (TERM and KILL after a
    /// timeout). Returns whether it exited in time by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        eprintln!(
            "nginx {} did not quit in {STOP_TIMEOUT:?}; killing it",
            child.id()
        );
        kill_tree(&mut child);
        false
    }

    /// Stops nginx and checks error.log; panics on `[alert]`/`[crit]`/`[emerg]` lines.
    pub fn stop_and_check(&mut self) {
        let quit_in_time = self.stop();
        let serious = self.serious_log_lines();
        if !serious.is_empty() || !quit_in_time {
            panic!(
                "nginx in {} {}:\n{}\n--- whole error.log ---\n{}",
                self.prefix.display(),
                if quit_in_time {
                    "logged serious errors"
                } else {
                    "did not quit on SIGQUIT"
                },
                serious.join("\n"),
                self.error_log()
            );
        }
    }
}

/// Waits until nginx (`child`, started with `prefix`) listens on 127.0.0.1:`port` and has
/// forked its `workers` worker processes.
fn wait_ready(child: &mut Child, prefix: &Path, port: u16, workers: u32) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let pid = child.id();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("nginx exited with {status}"));
        }
        // The master writes its pid file after binding the listening sockets; checking it
        // tells our nginx from another process that grabbed the port.
        let pid_written =
            fs::read_to_string(prefix.join("nginx.pid")).is_ok_and(|p| p.trim() == pid.to_string());
        let listening =
            pid_written && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        // The master listens before it forks its workers: a test that looks at them (or
        // traces one) right after the start must find them all.
        let forked = || children_of(pid).len() >= workers as usize;
        if listening && forked() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(if listening {
                format!(
                    "nginx did not fork its {workers} worker processes within {START_TIMEOUT:?} \
                     (children: {:?})",
                    children_of(pid)
                )
            } else {
                format!("127.0.0.1:{port} did not accept connections within {START_TIMEOUT:?}")
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills an nginx master and its workers at once.
fn kill_tree(child: &mut Child) {
    for pid in children_of(child.id()) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.stop();
            eprintln!(
                "nginx test prefix kept for inspection: {}\n--- end of error.log ---\n{}",
                self.prefix.display(),
                tail(&self.error_log(), 40)
            );
            return;
        }
        // Panics (keeping the prefix) if error.log holds serious lines.
        self.stop_and_check();
        let _ = fs::remove_dir_all(&self.prefix);
    }
}

/// Pids of the processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    if parent == 0 {
        return pids;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let _state = fields.next();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `nginx -t` on a whole configuration file; the prefix is the file's directory. Returns
/// whether the test passed, and nginx's output.
pub fn nginx_t(conf_path: &Path) -> (bool, String) {
    let prefix = conf_path.parent().expect("config file has a directory");
    let output = Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf_path)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .stdin(Stdio::null())
        .output()
        .expect("run nginx -t");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `nginx -t` on the usual skeleton (module loaded) around `server_body`.
pub fn nginx_t_server(server_body: &str) -> (bool, String) {
    Nginx::builder().test_config(server_body)
}

// ---------------------------------------------------------------------------------------------
// The HTTP client
// ---------------------------------------------------------------------------------------------

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

/// The lines of an error.log at `[alert]`, `[crit]` or `[emerg]` that hold none of `tolerated`.
pub fn serious_lines(log: &str, tolerated: &[String]) -> Vec<String> {
    log.lines()
        .filter(|l| {
            ["[alert]", "[crit]", "[emerg]"]
                .iter()
                .any(|lvl| l.contains(lvl))
        })
        .filter(|l| !tolerated.iter().any(|t| l.contains(t.as_str())))
        .map(str::to_string)
        .collect()
}

/// POSTs one segment to `uri`.
pub fn post_segment(port: u16, uri: &str, segment: &Segment<'_>) -> Response {
    send_raw(port, &segment.to_request(uri))
}

// ---------------------------------------------------------------------------------------------
// Test data and the store on disk
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// `len` deterministic pseudo-random bytes.
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Inclusive `(first, last)` segment bounds cutting `total` bytes into `size`-byte pieces.
pub fn segments(total: usize, size: usize) -> Vec<(usize, usize)> {
    (0..total)
        .step_by(size)
        .map(|a| (a, (a + size).min(total) - 1))
        .collect()
}

/// Every regular file under `root` (or `root` itself if it is a file) with its content.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(path: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), out);
                }
            }
        } else {
            out.insert(path.to_path_buf(), fs::read(path).unwrap_or_default());
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

/// Asserts two snapshots are equal, naming the files that differ.
#[track_caller]
pub fn assert_same_files(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let mut problems = Vec::new();
    for (path, content) in after {
        match before.get(path) {
            None => problems.push(format!(
                "new file {} ({} bytes)",
                path.display(),
                content.len()
            )),
            Some(old) if old != content => problems.push(format!(
                "changed {} ({} → {} bytes)",
                path.display(),
                old.len(),
                content.len()
            )),
            _ => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        problems.push(format!("removed {}", path.display()));
    }
    assert!(
        problems.is_empty(),
        "stored files changed:\n{}",
        problems.join("\n")
    );
}

/// Asserts `actual == expected` for large byte strings without printing them whole.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first_diff = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: {} bytes, expected {} bytes; first difference at byte {first_diff}",
        actual.len(),
        expected.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The usual upload location, with its backend
// ---------------------------------------------------------------------------------------------

/// The server body most tests use; `{{EXTRA}}` takes more lines for `location /upload`.
pub const UPLOAD_SERVER: &str = r#"
location /upload {
    upload_pass @backend;
    upload_resumable on;
    upload_store {{PREFIX}}/store 1;
    upload_state_store {{PREFIX}}/state 1;
    upload_store_access user:rw group:r;
    upload_set_form_field $upload_field_name.name "$upload_file_name";
    upload_set_form_field $upload_field_name.path "$upload_tmp_path";
    upload_set_form_field "$upload_field_name.content_type" "$upload_content_type";
    upload_aggregate_form_field "$upload_field_name.size" "$upload_file_size";
    upload_aggregate_form_field "$upload_field_name.number" "$upload_file_number";
    upload_aggregate_form_field "range" "$upload_content_range";
    {{EXTRA}}
}
location @backend { proxy_pass http://{{BACKEND}}; }
"#;

/// [`UPLOAD_SERVER`] with `extra` lines in `location /upload`.
pub fn upload_server(extra: &str) -> String {
    UPLOAD_SERVER.replace("{{EXTRA}}", extra)
}

/// nginx with an upload location, and the echo backend it hands files to.
pub struct UploadEnv {
    // Declared first, so nginx stops before the backend goes away.
    pub nginx: Nginx,
    pub backend: Backend,
}

impl UploadEnv {
    /// nginx with `server_body` (which may use `{{BACKEND}}`) and a fresh backend.
    pub fn start_server(builder: NginxBuilder, server_body: &str) -> Self {
        let backend = backend::spawn("127.0.0.1:0");
        let nginx = builder.backend(&backend).start(server_body);
        UploadEnv { nginx, backend }
    }

    /// The usual server, with `extra` lines in `location /upload`.
    pub fn start(extra: &str) -> Self {
        Self::start_server(Nginx::builder(), &upload_server(extra))
    }

    pub fn port(&self) -> u16 {
        self.nginx.port()
    }

    /// Asserts that an answer with `status` and body `text` is the backend's 200 to the one
    /// hand-off it received (it echoes what it got), and returns that hand-off's form fields.
    #[track_caller]
    pub fn single_handoff(
        &self,
        status: u16,
        text: &str,
        shown: &dyn std::fmt::Display,
    ) -> Vec<backend::Field> {
        assert_eq!(status, 200, "{shown}\n{}", self.nginx.error_log());
        let requests = self.backend.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(text, backend::echo_body(&requests[0]));
        requests[0].fields().unwrap()
    }

    /// Sends `request`, asserts the answer has `status` (showing the request and what error.log
    /// gained if not) and that error.log gained a line with one of `needles`.
    #[track_caller]
    pub fn expect_status(&self, request: &[u8], status: u16, needles: &[&str]) -> Response {
        let offset = self.nginx.log_len();
        let r = send_raw(self.port(), request);
        assert_eq!(
            r.status,
            status,
            "request:\n{}\nresponse:\n{r}\nerror.log gained:\n{}",
            String::from_utf8_lossy(&request[..request.len().min(600)]),
            self.nginx.log_since(offset)
        );
        self.nginx.assert_logged(offset, needles);
        r
    }

    /// POSTs `segment` to `/upload`.
    pub fn post(&self, segment: &Segment<'_>) -> Response {
        post_segment(self.port(), "/upload", segment)
    }

    /// Asks what session `id` holds (a `POST` with the session id and no body): the status
    /// and the `Range` report.
    pub fn status_query(&self, id: &str) -> (u16, String) {
        let headers = [("X-Session-ID", id), ("Content-Length", "0")];
        let r = send_raw(
            self.port(),
            &build_request("POST", "/upload", &headers, None),
        );
        (r.status, r.header("Range").unwrap_or_default().to_string())
    }

    /// The `Range` report of a session that exists (empty if it holds nothing yet).
    #[track_caller]
    pub fn report(&self, id: &str) -> String {
        let (status, report) = self.status_query(id);
        assert_eq!(
            status,
            200,
            "status query for {id}:\n{}",
            self.nginx.error_log()
        );
        report
    }

    /// Polls the status query until session `id` exists (`200`; `404` until a request for it,
    /// maybe in another worker, has started it) with a report that `done` accepts, for up to
    /// [`WAIT_TIMEOUT`]; returns that report. Past the deadline it panics with the last answer.
    #[track_caller]
    pub fn wait_report(&self, id: &str, done: impl Fn(&str) -> bool) -> String {
        let waited = try_wait_for(WAIT_TIMEOUT, || match self.status_query(id) {
            (200, report) if done(&report) => Ok(report),
            (status, report) => Err(format!("status {status}, Range {report:?}")),
        });
        waited.unwrap_or_else(|last| {
            panic!(
                "waited {WAIT_TIMEOUT:?} for session {id} to exist with the report awaited, in \
                 vain; the last status query answered {last}\n--- end of error.log ---\n{}",
                tail(&self.nginx.error_log(), 40)
            )
        })
    }

    /// Waits until session `id` exists and a request holds its claim on bytes `first..=last`
    /// of the output file (the open-file-description lock a request writing them takes, in
    /// `/proc/locks`), so a segment overlapping them is refused; returns the session's report.
    /// The state file is written before that lock is taken: a report alone is not enough.
    #[track_caller]
    pub fn wait_in_flight(&self, id: &str, first: u64, last: u64) -> String {
        let report = self.wait_report(id, |_| true);
        let path = self.stored_path(id);
        wait_for(
            &format!("a request to claim bytes {first}-{last} of session {id}"),
            WAIT_TIMEOUT,
            || {
                let locks = ofd_locks(&path);
                let covered = locks
                    .iter()
                    .any(|&(a, b)| a <= first && b.is_none_or(|b| b >= last));
                if covered {
                    Ok(())
                } else {
                    Err(format!("locks on {}: {locks:?}", path.display()))
                }
            },
        );
        report
    }

    /// Sends the head of `segment` and the first `sent` bytes of its body, leaving the request
    /// open; the caller sends the rest (or drops the connection).
    pub fn start_segment(&self, segment: &Segment<'_>, sent: usize) -> TcpStream {
        let request = segment.to_request("/upload");
        let head_len = request.len() - segment.body.len();
        let mut conn = TcpStream::connect(("127.0.0.1", self.port())).unwrap();
        conn.set_nodelay(true).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conn.write_all(&request[..head_len + sent]).unwrap();
        conn
    }

    /// Where the usual config (`upload_store {{PREFIX}}/store 1`) keeps session `id`.
    pub fn stored_path(&self, id: &str) -> PathBuf {
        let last = &id[id.len() - 1..];
        self.nginx.path("store").join(last).join(id)
    }

    /// Every file under the data and state stores.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut all = snapshot(&self.nginx.path("store"));
        all.extend(snapshot(&self.nginx.path("state")));
        all
    }

    /// Asserts that `response` is the backend's answer to the one hand-off it received, which
    /// names, in the usual fields of `field`, the file `filename` holding `data` at `path`.
    #[track_caller]
    pub fn assert_handed_off(
        &self,
        response: &Response,
        field: &str,
        filename: &str,
        path: Option<&Path>,
        data: &[u8],
    ) -> ReceivedRequest {
        assert_eq!(
            response.status, 200,
            "expected the backend's answer, got:\n{response}"
        );
        let requests = self.backend.requests();
        assert_eq!(
            requests.len(),
            1,
            "the backend should have received exactly one hand-off, got {requests:#?}"
        );
        let req = requests.into_iter().next().unwrap();
        assert_eq!(req.method, "POST");
        let content_type = req.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("multipart/form-data"),
            "hand-off Content-Type {content_type:?}"
        );
        assert_eq!(
            response.text(),
            backend::echo_body(&req),
            "the client's answer is not the backend's"
        );
        let fields = req
            .fields()
            .unwrap_or_else(|e| panic!("hand-off body is not a valid form ({e}): {req:?}"));
        let get = |name: &str| -> String {
            fields
                .iter()
                .find(|f| f.name == name)
                .map(Field::value_str)
                .unwrap_or_else(|| panic!("hand-off has no field {name:?}: {fields:#?}"))
        };
        assert_eq!(get(&format!("{field}.name")), filename);
        assert_eq!(get(&format!("{field}.content_type")), "text/plain");
        assert_eq!(get(&format!("{field}.size")), data.len().to_string());
        let number = get(&format!("{field}.number"));
        assert!(
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
            "{field}.number = {number:?}"
        );
        let range = get("range");
        assert!(
            range.ends_with(&format!("/{}", data.len())),
            "range = {range:?} does not name the total size {}",
            data.len()
        );
        let stored = PathBuf::from(get(&format!("{field}.path")));
        if let Some(path) = path {
            assert_eq!(stored, path, "{field}.path");
        }
        let content = fs::read(&stored).unwrap_or_else(|e| {
            panic!("cannot read the handed-off file {}: {e}", stored.display())
        });
        assert_bytes_eq(&content, data, "the handed-off file");
        req
    }
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

// ---------------------------------------------------------------------------------------------
// Browser forms (multipart/form-data)
// ---------------------------------------------------------------------------------------------

/// A location taking browser forms: each file becomes its five fields, fields named `title` or
/// starting with `desc` are passed on, others dropped. `{{EXTRA}}` takes more lines.
pub const FORM_SERVER: &str = r#"
location /upload {
    upload_pass @backend;
    upload_store {{PREFIX}}/store 1;
    upload_set_form_field $upload_field_name.name "$upload_file_name";
    upload_set_form_field $upload_field_name.path "$upload_tmp_path";
    upload_set_form_field $upload_field_name.content_type "$upload_content_type";
    upload_aggregate_form_field $upload_field_name.size "$upload_file_size";
    upload_aggregate_form_field $upload_field_name.number "$upload_file_number";
    upload_pass_form_field "^title$|^desc";
    {{EXTRA}}
}
location @backend { proxy_pass http://{{BACKEND}}; }
"#;

/// [`FORM_SERVER`] with `extra` lines in `location /upload`.
pub fn form_server(extra: &str) -> String {
    FORM_SERVER.replace("{{EXTRA}}", extra)
}

/// One part of a browser form.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub name: &'a str,
    /// For a file: the `filename` parameter exactly as it goes between the quotes (nothing
    /// escaped, as old browsers sent Windows paths).
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub data: &'a [u8],
}

impl<'a> Part<'a> {
    pub fn field(name: &'a str, value: &'a str) -> Self {
        Part {
            name,
            filename: None,
            content_type: None,
            data: value.as_bytes(),
        }
    }

    pub fn file(name: &'a str, filename: &'a str, content_type: &'a str, data: &'a [u8]) -> Self {
        Part {
            name,
            filename: Some(filename),
            content_type: Some(content_type),
            data,
        }
    }
}

/// The body of a form with these parts, delimited by `boundary`.
pub fn multipart_body(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(filename) = part.filename {
            disposition.push_str(&format!("; filename=\"{filename}\""));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = part.content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// A POST of a form body with this Content-Type.
pub fn form_request(uri: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    build_request("POST", uri, &[("Content-Type", content_type)], Some(body))
}

/// What the backend should find in a hand-off, in order.
#[derive(Debug, Clone, Copy)]
pub enum Expected<'a> {
    /// A passed form field, verbatim.
    Field(&'a str, &'a [u8]),
    /// A file, as the five fields of [`FORM_SERVER`]: `.name`, `.path`, `.content_type`,
    /// `.size`, `.number`; `.path` must name a file holding `data`.
    File {
        field: &'a str,
        name: &'a str,
        content_type: &'a str,
        data: &'a [u8],
        number: u32,
    },
}

/// Checks the fields of a hand-off against `expected`: the same names in the same order, the
/// same values, every `.path` a distinct file under `store` holding the file's bytes. Returns
/// the paths.
#[track_caller]
pub fn assert_form_fields(
    fields: &[Field],
    expected: &[Expected<'_>],
    store: &Path,
) -> Vec<PathBuf> {
    // (name, value; None for a path, checked on disk)
    let mut want: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut files: Vec<&[u8]> = Vec::new();
    for e in expected {
        match *e {
            Expected::Field(name, value) => want.push((name.to_string(), Some(value.to_vec()))),
            Expected::File {
                field,
                name,
                content_type,
                data,
                number,
            } => {
                want.push((format!("{field}.name"), Some(name.as_bytes().to_vec())));
                want.push((format!("{field}.path"), None));
                want.push((
                    format!("{field}.content_type"),
                    Some(content_type.as_bytes().to_vec()),
                ));
                want.push((
                    format!("{field}.size"),
                    Some(data.len().to_string().into_bytes()),
                ));
                want.push((
                    format!("{field}.number"),
                    Some(number.to_string().into_bytes()),
                ));
                files.push(data);
            }
        }
    }
    let got_names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        got_names, want_names,
        "hand-off field names; fields: {fields:#?}"
    );
    let mut paths = Vec::new();
    for (field, (name, value)) in fields.iter().zip(&want) {
        assert!(
            field.filename.is_none(),
            "hand-off field {name} is a file part"
        );
        match value {
            Some(v) => assert_eq!(
                field.value_str(),
                String::from_utf8_lossy(v),
                "value of hand-off field {name}"
            ),
            None => paths.push(PathBuf::from(field.value_str())),
        }
    }
    for (path, data) in paths.iter().zip(&files) {
        assert!(
            path.starts_with(store),
            "{} is not under upload_store {}",
            path.display(),
            store.display()
        );
        let content = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read the stored file {}: {e}", path.display()));
        assert_bytes_eq(&content, data, &format!("stored file {}", path.display()));
    }
    let distinct: std::collections::BTreeSet<_> = paths.iter().collect();
    assert_eq!(
        distinct.len(),
        paths.len(),
        "two files share a path: {paths:?}"
    );
    paths
}

/// The regular files under `dir` (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir).into_keys().collect()
}

// ---------------------------------------------------------------------------------------------
// Reference digests and chunked bodies
// ---------------------------------------------------------------------------------------------

fn run_digest_tool(tool: &str, arg: Option<&Path>, stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new(tool);
    if let Some(path) = arg {
        cmd.arg(path);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool} (coreutils): {e}"));
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let output = child.wait_with_output().expect("wait for the digest tool");
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    assert!(
        output.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{tool} printed {text:?}"
    );
    hex
}

/// The hex digest `tool` (`md5sum`, `sha1sum`, `sha256sum`, `sha512sum`) prints for `data`.
pub fn digest_of_bytes(tool: &str, data: &[u8]) -> String {
    run_digest_tool(tool, None, Some(data))
}

/// The hex digest `tool` prints for the file at `path`.
pub fn digest_of_file(tool: &str, path: &Path) -> String {
    run_digest_tool(tool, Some(path), None)
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
