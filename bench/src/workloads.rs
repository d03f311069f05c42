//! The workloads, each run against a fresh nginx per (workload, endpoint, run), and the checks
//! that what was uploaded arrived intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ngx_upload_backend::Backend;

use crate::http::{self, Conn, FileRange, Response};
use crate::nginx::{clock_ticks_per_second, Nginx, Setup};
use crate::payload::{checksum_file, Payload, Rng};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `location /discard { return 200; }`: nginx reads and drops the body.
    Discard,
    /// WebDAV `PUT`: nginx writes the body to a temp file and renames it.
    Dav,
    /// ngx-upload, resumable segments.
    Module,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Discard, Endpoint::Dav, Endpoint::Module];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Discard => "discard",
            Endpoint::Dav => "dav-put",
            Endpoint::Module => "module",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Discard => "discard (`return 200`)",
            Endpoint::Dav => "WebDAV `PUT`",
            Endpoint::Module => "ngx-upload",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One upload of `single` bytes in one request, HTTP/1.1.
    Single,
    /// `seg_sessions` sessions of `session_size` in `seg_size` segments, in order, over
    /// `conns` connections.
    Segments,
    /// `small_sessions` sessions of `session_size` in `small_seg_size` segments, shuffled.
    SmallShuffled,
    /// `single` bytes in one request over HTTP/2 (curl).
    H2,
    /// `slow_conns` uploads held open mid-segment: memory per in-flight upload.
    Slow,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Single,
        Workload::Segments,
        Workload::SmallShuffled,
        Workload::H2,
        Workload::Slow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Single => "single",
            Workload::Segments => "segments",
            Workload::SmallShuffled => "shuffled",
            Workload::H2 => "h2",
            Workload::Slow => "slow",
        }
    }

    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// How big everything is (full or `--quick`).
#[derive(Clone, Debug)]
pub struct Sizes {
    pub single: u64,
    pub session_size: u64,
    pub conns: usize,
    pub seg_sessions: usize,
    pub seg_size: u64,
    pub small_sessions: usize,
    pub small_seg_size: u64,
    pub slow_conns: usize,
    pub slow_segment: u64,
    pub slow_sent: u64,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            single: GIB,
            session_size: 16 * MIB,
            conns: 8,
            seg_sessions: 32,
            seg_size: MIB,
            small_sessions: 8,
            small_seg_size: 64 * KIB,
            slow_conns: 200,
            slow_segment: MIB,
            slow_sent: 128 * KIB,
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            single: 64 * MIB,
            session_size: 2 * MIB,
            conns: 8,
            seg_sessions: 16,
            seg_size: 256 * KIB,
            small_sessions: 8,
            small_seg_size: 64 * KIB,
            slow_conns: 50,
            slow_segment: MIB,
            slow_sent: 128 * KIB,
        }
    }

    pub fn describe(&self, w: Workload) -> String {
        match w {
            Workload::Single => format!(
                "{} in one request, HTTP/1.1, one connection",
                human(self.single)
            ),
            Workload::Segments => format!(
                "{} sessions × {} in {} segments, in order, over {} keep-alive connections",
                self.seg_sessions,
                human(self.session_size),
                human(self.seg_size),
                self.conns
            ),
            Workload::SmallShuffled => format!(
                "{} sessions × {} in {} segments, shuffled, over {} keep-alive connections",
                self.small_sessions,
                human(self.session_size),
                human(self.small_seg_size),
                self.conns
            ),
            Workload::H2 => format!(
                "{} in one request, HTTP/2 (h2c, prior knowledge), client: curl -T",
                human(self.single)
            ),
            Workload::Slow => format!(
                "{} uploads held open, each after {} of a {} segment",
                self.slow_conns,
                human(self.slow_sent),
                human(self.slow_segment)
            ),
        }
    }
}

pub fn human(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// One throughput measurement.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub wall_s: f64,
    pub bytes: u64,
    /// utime + stime of the workers during the measurement.
    pub cpu_s: f64,
    /// CPU time of the benchmark process (client threads, echo backend) and of curl.
    pub client_cpu_s: f64,
    /// Largest VmHWM of a worker (fresh nginx per measurement, so: during it).
    pub hwm_kib: u64,
    /// What was verified.
    pub check: String,
    pub latency: Option<Latency>,
    /// Set when the numbers do not measure what the row claims.
    pub not_comparable: Option<String>,
}

/// One memory measurement of held uploads.
#[derive(Clone, Debug)]
pub struct SlowMeasurement {
    pub idle_kib: u64,
    pub loaded_kib: u64,
    pub per_upload_kib: f64,
    pub hwm_kib: u64,
}

/// Latency of the `/ping` probe.
#[derive(Clone, Debug)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Probes answered after more than [`SLOW_PROBE`].
    pub over_5ms: usize,
    /// Whether the probe thread ran with real-time priority (its own wake-ups then add
    /// next to nothing to the latencies).
    pub realtime: bool,
}

/// A probe slower than this counts as a stall.
pub const SLOW_PROBE: Duration = Duration::from_millis(5);

pub struct Bench {
    pub setup: Setup,
    pub payload: Payload,
    pub backend: Backend,
    pub sizes: Sizes,
    pub latency_probe: bool,
    counter: AtomicU32,
}

/// What a measured run leaves to verify.
enum Expect {
    Nothing,
    /// DAV files: name under /dav/, payload offset, length.
    Dav(Vec<(String, u64, u64)>),
    /// Module sessions: session id, payload offset, length.
    Module(Vec<(String, u64, u64)>),
}

struct Run {
    wall: Duration,
    bytes: u64,
    expect: Expect,
    latency: Option<Latency>,
    not_comparable: Option<String>,
    checked: String,
}

const CONTENT_TYPE: &str = "application/octet-stream";

impl Bench {
    pub fn new(
        setup: Setup,
        payload: Payload,
        backend: Backend,
        sizes: Sizes,
        latency_probe: bool,
    ) -> Bench {
        Bench {
            setup,
            payload,
            backend,
            sizes,
            latency_probe,
            counter: AtomicU32::new(0),
        }
    }

    fn tag(&self, w: Workload, ep: Endpoint) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{n}", w.name(), ep.name())
    }

    /// Runs one throughput workload once against `ep` on a fresh nginx.
    pub fn measure(&self, w: Workload, ep: Endpoint) -> Result<Measurement, String> {
        let tag = self.tag(w, ep);
        let nginx = Nginx::start(&self.setup, &tag)?;
        self.backend.clear();
        let before = nginx.stats()?;
        let client_before = client_cpu_s();
        let run = match w {
            Workload::Single => self.single(ep, &nginx, &tag),
            Workload::Segments => self.segments(
                ep,
                &nginx,
                &tag,
                self.sizes.seg_sessions,
                self.sizes.seg_size,
                false,
            ),
            Workload::SmallShuffled => self.segments(
                ep,
                &nginx,
                &tag,
                self.sizes.small_sessions,
                self.sizes.small_seg_size,
                true,
            ),
            Workload::H2 => self.h2(ep, &nginx, &tag),
            Workload::Slow => unreachable!("slow is measured by measure_slow"),
        };
        let after = nginx.stats()?;
        let client_cpu = client_cpu_s() - client_before;
        let run = run.map_err(|e| {
            format!(
                "{e}\n--- end of {}/error.log ---\n{}",
                nginx.prefix.display(),
                crate::nginx::tail(&nginx.error_log(), 20)
            )
        })?;
        let check = self.verify(&nginx, &run.expect)?;
        let bad = nginx.bad_log_lines(true);
        if !bad.is_empty() {
            return Err(format!(
                "{}: error.log has errors:\n{}",
                ep.name(),
                bad.join("\n")
            ));
        }
        nginx.stop();
        Ok(Measurement {
            wall_s: run.wall.as_secs_f64(),
            bytes: run.bytes,
            cpu_s: after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64
                / clock_ticks_per_second(),
            client_cpu_s: client_cpu,
            hwm_kib: after.hwm_kib,
            check: if run.checked.is_empty() {
                check
            } else {
                format!("{}; {check}", run.checked)
            },
            latency: run.latency,
            not_comparable: run.not_comparable,
        })
    }

    /// The request that uploads `len` bytes at `first` of a `total`-byte file named `name`.
    fn request_for(
        &self,
        ep: Endpoint,
        name: &str,
        first: u64,
        len: u64,
        total: u64,
    ) -> (&'static str, String, Vec<(&'static str, String)>) {
        match ep {
            Endpoint::Discard => (
                "POST",
                "/discard".to_string(),
                vec![("Content-Type", CONTENT_TYPE.to_string())],
            ),
            Endpoint::Dav => ("PUT", format!("/dav/{name}"), Vec::new()),
            Endpoint::Module => (
                "POST",
                "/upload".to_string(),
                vec![
                    ("Content-Type", CONTENT_TYPE.to_string()),
                    (
                        "Content-Disposition",
                        format!("attachment; filename=\"{name}.bin\""),
                    ),
                    (
                        "X-Content-Range",
                        format!("bytes {first}-{}/{total}", first + len - 1),
                    ),
                    ("X-Session-ID", name.to_string()),
                ],
            ),
        }
    }

    /// Whether `r` is the answer `ep` gives to a successful upload request; returns whether it
    /// is the module's hand-off answer (the segment that completed a file).
    fn check_answer(ep: Endpoint, r: &Response) -> Result<bool, String> {
        let ok = match ep {
            Endpoint::Discard => r.status == 200,
            Endpoint::Dav => r.status == 201 || r.status == 204,
            Endpoint::Module => r.status == 201 || r.status == 200,
        };
        if !ok {
            return Err(format!(
                "{} answered {} {:?}",
                ep.name(),
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(500)])
            ));
        }
        Ok(ep == Endpoint::Module && r.status == 200)
    }

    fn single(&self, ep: Endpoint, nginx: &Nginx, tag: &str) -> Result<Run, String> {
        let n = self.sizes.single;
        let mut conn = Conn::connect(nginx.port).map_err(|e| format!("connect: {e}"))?;
        let worker = conn.ping().map_err(|e| format!("ping: {e}"))?;
        let probe = if self.latency_probe {
            Some(Probe::start(nginx.port, worker)?)
        } else {
            None
        };
        let (method, uri, headers) = self.request_for(ep, tag, 0, n, n);
        let body = FileRange {
            file: &self.payload.file,
            offset: 0,
            len: n,
        };
        let start = Instant::now();
        let r = conn
            .request(method, &uri, &headers, Some(body))
            .map_err(|e| format!("{} upload: {e}", ep.name()))?;
        let handed_off = Self::check_answer(ep, &r)?;
        // A ping on the same connection is answered only after nginx has read the whole body
        // (the discard location answers before reading it).
        conn.ping()
            .map_err(|e| format!("ping after the upload: {e}"))?;
        let wall = start.elapsed();
        let latency = probe.map(Probe::stop).transpose()?;
        if ep == Endpoint::Module && !handed_off {
            return Err(format!(
                "the module answered {} to the only segment, not the hand-off",
                r.status
            ));
        }
        Ok(Run {
            wall,
            bytes: n,
            expect: self.expect(ep, &[(tag.to_string(), 0, n)]),
            latency,
            not_comparable: None,
            checked: String::new(),
        })
    }

    fn expect(&self, ep: Endpoint, files: &[(String, u64, u64)]) -> Expect {
        match ep {
            Endpoint::Discard => Expect::Nothing,
            Endpoint::Dav => Expect::Dav(files.to_vec()),
            Endpoint::Module => Expect::Module(files.to_vec()),
        }
    }

    fn segments(
        &self,
        ep: Endpoint,
        nginx: &Nginx,
        tag: &str,
        sessions: usize,
        seg_size: u64,
        shuffled: bool,
    ) -> Result<Run, String> {
        let size = self.sizes.session_size;
        assert!(size.is_multiple_of(seg_size) && sessions as u64 * size <= self.payload.len);
        let per_session = size / seg_size;
        let ids: Vec<String> = (0..sessions).map(|s| format!("{tag}-s{s}")).collect();
        // (session, segment index)
        let mut work: Vec<(usize, u64)> = (0..sessions)
            .flat_map(|s| (0..per_session).map(move |i| (s, i)))
            .collect();
        if shuffled {
            Rng::new(0x5eed).shuffle(&mut work);
        }
        let next = AtomicUsize::new(0);
        let handoffs = AtomicUsize::new(0);
        let conns = self.sizes.conns;
        let barrier = Barrier::new(conns + 1);
        let port = nginx.port;
        // With several workers the probe watches one of them, whichever its first
        // connection lands on.
        let probe = if self.latency_probe {
            let worker = Conn::connect(port)
                .and_then(|mut c| c.ping())
                .map_err(|e| format!("ping: {e}"))?;
            Some(Probe::start(port, worker)?)
        } else {
            None
        };
        let (wall, results) = thread::scope(|scope| {
            let handles: Vec<_> = (0..conns)
                .map(|_| {
                    scope.spawn(|| -> Result<(), String> {
                        let conn = Conn::connect(port).map_err(|e| format!("connect: {e}"));
                        barrier.wait();
                        let mut conn = conn?;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(s, k)) = work.get(i) else { break };
                            let first = k * seg_size;
                            let name = match ep {
                                Endpoint::Dav => format!("{}-{k}", ids[s]),
                                _ => ids[s].clone(),
                            };
                            let (method, uri, headers) =
                                self.request_for(ep, &name, first, seg_size, size);
                            let body = FileRange {
                                file: &self.payload.file,
                                offset: s as u64 * size + first,
                                len: seg_size,
                            };
                            let r = conn
                                .request(method, &uri, &headers, Some(body))
                                .map_err(|e| format!("{} segment {k} of {name}: {e}", ep.name()))?;
                            if Self::check_answer(ep, &r)? {
                                handoffs.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        conn.ping()
                            .map_err(|e| format!("ping after the uploads: {e}"))?;
                        Ok(())
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            let results: Vec<Result<(), String>> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("client thread panicked".into()))
                })
                .collect();
            (start.elapsed(), results)
        });
        let latency = probe.map(Probe::stop).transpose()?;
        for r in results {
            r?;
        }
        let expect = match ep {
            Endpoint::Discard => Expect::Nothing,
            Endpoint::Dav => Expect::Dav(
                work.iter()
                    .map(|&(s, k)| {
                        (
                            format!("{}-{k}", ids[s]),
                            s as u64 * size + k * seg_size,
                            seg_size,
                        )
                    })
                    .collect(),
            ),
            Endpoint::Module => {
                let handoffs = handoffs.load(Ordering::Relaxed);
                if handoffs != sessions {
                    return Err(format!(
                        "{handoffs} hand-off answers (200) for {sessions} sessions"
                    ));
                }
                Expect::Module(
                    ids.iter()
                        .enumerate()
                        .map(|(s, id)| (id.clone(), s as u64 * size, size))
                        .collect(),
                )
            }
        };
        Ok(Run {
            wall,
            bytes: work.len() as u64 * seg_size,
            expect,
            latency,
            not_comparable: None,
            checked: format!("{} requests", work.len()),
        })
    }

    fn h2(&self, ep: Endpoint, nginx: &Nginx, tag: &str) -> Result<Run, String> {
        let n = self.sizes.single;
        assert_eq!(self.payload.len, n, "curl uploads the whole payload file");
        let (method, uri, headers) = self.request_for(ep, tag, 0, n, n);
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--http2-prior-knowledge", "--max-time", "3600"])
            .args(["-o", "/dev/null"])
            .args(["-w", "%{http_code} %{http_version} %{size_upload}"])
            // No `Expect: 100-continue` round trip.
            .args(["-H", "Expect:"])
            .args(["-X", method]);
        for (name, value) in &headers {
            command.arg("-H").arg(format!("{name}: {value}"));
        }
        command
            .arg("-T")
            .arg(&self.payload.path)
            .arg(format!("http://127.0.0.1:{}{uri}", nginx.h2_port))
            .stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let start = Instant::now();
        let output = command
            .output()
            .map_err(|e| format!("cannot run curl (apt-get install curl): {e}"))?;
        let wall = start.elapsed();
        let written = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if ep == Endpoint::Discard
            && (!output.status.success() || !written.ends_with(&format!(" {n}")))
        {
            // HTTP/2 has no "read the rest and drop it": nginx's discard marks the stream to
            // skip DATA frames, answers, and resets the stream once the answer is out; the
            // client stops sending. Nothing comparable was measured.
            return Ok(Run {
                wall,
                bytes: n,
                expect: Expect::Nothing,
                latency: None,
                not_comparable: Some(format!(
                    "over HTTP/2 nginx answers `return 200` without reading the body and resets \
                     the stream, so the body is never sent in full ({})",
                    stderr.trim()
                )),
                checked: String::new(),
            });
        }
        if !output.status.success() {
            return Err(format!(
                "curl failed ({}): {stderr}{written}",
                output.status,
            ));
        }
        let mut fields = written.split_whitespace();
        let status: u16 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let version = fields.next().unwrap_or_default().to_string();
        let uploaded: u64 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if version != "2" {
            return Err(format!("curl spoke HTTP/{version}, not HTTP/2"));
        }
        let fake = Response {
            status,
            body: Vec::new(),
            close: false,
        };
        let handed_off = Self::check_answer(ep, &fake)?;
        if ep == Endpoint::Module && !handed_off {
            return Err(format!("the module answered {status}, not the hand-off"));
        }
        if uploaded != n {
            return Err(format!("curl sent {uploaded} of {n} bytes"));
        }
        Ok(Run {
            wall,
            bytes: uploaded,
            expect: self.expect(ep, &[(tag.to_string(), 0, n)]),
            latency: None,
            not_comparable: None,
            checked: "curl: HTTP/2".to_string(),
        })
    }

    /// Memory per in-flight upload: `slow_conns` connections each send a segment's head and
    /// `slow_sent` bytes of its body, then wait.
    pub fn measure_slow(&self, ep: Endpoint) -> Result<SlowMeasurement, String> {
        let tag = self.tag(Workload::Slow, ep);
        let nginx = Nginx::start(&self.setup, &tag)?;
        self.backend.clear();
        // Warm up: one whole small upload, so that code and allocator arenas the first request
        // touches count as idle, not as per-upload memory.
        {
            let warm = 64 * KIB;
            let name = format!("{tag}-warm");
            let (method, uri, headers) = self.request_for(ep, &name, 0, warm, warm);
            let mut conn = Conn::connect(nginx.port).map_err(|e| format!("connect: {e}"))?;
            let r = conn
                .request(
                    method,
                    &uri,
                    &headers,
                    Some(FileRange {
                        file: &self.payload.file,
                        offset: 0,
                        len: warm,
                    }),
                )
                .map_err(|e| format!("warm-up: {e}"))?;
            Self::check_answer(ep, &r)?;
            conn.ping().map_err(|e| format!("ping: {e}"))?;
        }
        thread::sleep(Duration::from_millis(300));
        let idle = nginx.stats()?;
        let n = self.sizes.slow_conns;
        let mut held = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{tag}-h{i}");
            let (method, uri, headers) = self.request_for(
                ep,
                &name,
                0,
                self.sizes.slow_segment,
                self.sizes.session_size,
            );
            let mut conn = Conn::connect(nginx.port).map_err(|e| format!("connect {i}: {e}"))?;
            conn.write_head(method, &uri, &headers, Some(self.sizes.slow_segment))
                .and_then(|()| {
                    conn.send_file(FileRange {
                        file: &self.payload.file,
                        offset: i as u64 * 4096,
                        len: self.sizes.slow_sent,
                    })
                })
                .map_err(|e| format!("held upload {i}: {e}"))?;
            held.push(conn);
        }
        // Everything sent has reached nginx's socket once the kernel has it acknowledged;
        // then give the worker a moment to read it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pending: usize = held
                .iter()
                .map(|c| http::unacked_bytes(c.stream()).unwrap_or(0))
                .sum();
            if pending == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{pending} bytes still unacknowledged after 30 s"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_secs(1));
        let loaded = nginx.stats()?;
        drop(held);
        thread::sleep(Duration::from_millis(200));
        let bad = nginx.bad_log_lines(false);
        if !bad.is_empty() {
            return Err(format!(
                "{}: error.log has serious lines:\n{}",
                ep.name(),
                bad.join("\n")
            ));
        }
        nginx.stop();
        Ok(SlowMeasurement {
            idle_kib: idle.rss_kib,
            loaded_kib: loaded.rss_kib,
            per_upload_kib: (loaded.rss_kib as f64 - idle.rss_kib as f64) / n as f64,
            hwm_kib: loaded.hwm_kib,
        })
    }

    /// Checks every uploaded file's size and checksum; returns a description.
    fn verify(&self, nginx: &Nginx, expect: &Expect) -> Result<String, String> {
        match expect {
            Expect::Nothing => Ok("status codes".to_string()),
            Expect::Dav(files) => {
                let dir = nginx.prefix.join("dav_root/dav");
                for (name, offset, len) in files {
                    self.verify_file(&dir.join(name), *offset, *len)?;
                }
                Ok(format!("{} files: size + checksum", files.len()))
            }
            Expect::Module(sessions) => {
                let wanted: HashMap<&str, (u64, u64)> = sessions
                    .iter()
                    .map(|(id, o, l)| (id.as_str(), (*o, *l)))
                    .collect();
                let mut seen = HashMap::new();
                for req in self.backend.requests() {
                    let path = req
                        .field("file.path")
                        .ok_or_else(|| format!("hand-off without file.path: {req:?}"))?;
                    let path = PathBuf::from(path);
                    let id = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .to_string();
                    let Some(&(offset, len)) = wanted.get(id.as_str()) else {
                        return Err(format!("hand-off of an unexpected file {}", path.display()));
                    };
                    let size = req.field("file.size").unwrap_or_default();
                    if size != len.to_string() {
                        return Err(format!("hand-off of {id} says file.size {size}, not {len}"));
                    }
                    self.verify_file(&path, offset, len)?;
                    if seen.insert(id.clone(), ()).is_some() {
                        return Err(format!("{id} was handed off twice"));
                    }
                }
                if seen.len() != wanted.len() {
                    return Err(format!(
                        "{} hand-offs for {} sessions",
                        seen.len(),
                        wanted.len()
                    ));
                }
                let states = count_files(&nginx.prefix.join("state"));
                if states != 0 {
                    return Err(format!(
                        "{states} state files left after every hand-off succeeded"
                    ));
                }
                Ok(format!(
                    "{} hand-offs; files: size + checksum; no state left",
                    seen.len()
                ))
            }
        }
    }

    fn verify_file(&self, path: &Path, offset: u64, len: u64) -> Result<(), String> {
        let (size, sum) =
            checksum_file(path).map_err(|e| format!("stored file {}: {e}", path.display()))?;
        if size != len {
            return Err(format!(
                "stored file {} has {size} bytes, not {len}",
                path.display()
            ));
        }
        let want = self
            .payload
            .checksum(offset, len)
            .map_err(|e| format!("payload: {e}"))?;
        if sum != want {
            return Err(format!(
                "stored file {} differs from what was sent (checksum {sum:016x}, want {want:016x})",
                path.display()
            ));
        }
        // Uploaded files are not needed any more; free the disk for the next measurement.
        let _ = std::fs::remove_file(path);
        Ok(())
    }
}

/// Puts the calling thread in SCHED_FIFO (needs root or CAP_SYS_NICE), so that on a busy
/// machine the probe's own wake-ups are not what it measures. Returns whether it worked.
fn make_realtime() -> bool {
    // SAFETY: sets the scheduling policy of the calling thread; the param is a local.
    unsafe {
        let param = libc::sched_param { sched_priority: 10 };
        libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) == 0
    }
}

/// utime + stime of this process and of its waited-for children (curl), in seconds.
fn client_cpu_s() -> f64 {
    let of = |who| {
        // SAFETY: getrusage fills the struct it is given.
        let u = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut u);
            u
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                count_files(&path)
            } else {
                1
            }
        })
        .sum()
}

/// `GET /ping` every 10 ms on a connection served by the worker under test.
struct Probe {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Result<(Vec<Duration>, bool), String>>,
}

const PROBE_INTERVAL: Duration = Duration::from_millis(10);

impl Probe {
    fn start(port: u16, worker: u32) -> Result<Probe, String> {
        // With several workers a new connection lands on any of them: try until one lands on
        // the upload's worker.
        let mut conn = None;
        for _ in 0..100 {
            let mut c = Conn::connect(port).map_err(|e| format!("probe connect: {e}"))?;
            if c.ping().map_err(|e| format!("probe ping: {e}"))? == worker {
                conn = Some(c);
                break;
            }
        }
        let mut conn =
            conn.ok_or_else(|| format!("no probe connection landed on worker {worker}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let realtime = make_realtime();
                let mut samples = Vec::new();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    next += PROBE_INTERVAL;
                    let now = Instant::now();
                    if next > now {
                        thread::sleep(next - now);
                    } else {
                        // A slow answer: go on from now rather than sending a burst.
                        next = now;
                    }
                    let sent = Instant::now();
                    let pid = conn.ping().map_err(|e| format!("probe: {e}"))?;
                    samples.push(sent.elapsed());
                    if pid != worker {
                        return Err(format!("probe answered by {pid}, not {worker}"));
                    }
                }
                Ok((samples, realtime))
            })
        };
        Ok(Probe { stop, handle })
    }

    fn stop(self) -> Result<Latency, String> {
        self.stop.store(true, Ordering::Relaxed);
        let (mut samples, realtime) = self
            .handle
            .join()
            .map_err(|_| "probe thread panicked".to_string())??;
        if samples.is_empty() {
            return Err("the probe took no sample".into());
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Ok(Latency {
            samples: samples.len(),
            p50_ms: ms(at(0.5)),
            p99_ms: ms(at(0.99)),
            max_ms: ms(*samples.last().unwrap()),
            over_5ms: samples.iter().filter(|d| **d > SLOW_PROBE).count(),
            realtime,
        })
    }
}
