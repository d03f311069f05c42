//! The workloads, each run against a fresh nginx per (workload, endpoint, run), and the checks
//! that what was uploaded arrived intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ngx_upload_backend::Backend;

use crate::http::{self, Conn, FileRange, Response};
use crate::nginx::{clock_ticks_per_second, IoCounters, Nginx, Setup};
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
    /// ngx-upload, resumable segments (the seed protocol, `X-Content-Range`).
    Module,
    /// ngx-upload, tus 1.0: a creation `POST`, then `PATCH`es in order.
    Tus,
    /// ngx-upload, the IETF resumable-upload draft, interop version 6: a creation `POST`
    /// (`Upload-Complete: ?0`, empty), then `PATCH`es in order, the last `Upload-Complete: ?1`.
    Ietf,
}

impl Endpoint {
    /// The endpoints of every workload.
    pub const ALL: [Endpoint; 3] = [Endpoint::Discard, Endpoint::Dav, Endpoint::Module];

    /// The endpoints `w` is measured on.
    pub fn for_workload(w: Workload) -> Vec<Endpoint> {
        match w {
            Workload::Segments => vec![
                Endpoint::Discard,
                Endpoint::Dav,
                Endpoint::Module,
                Endpoint::Tus,
                Endpoint::Ietf,
            ],
            Workload::Concat => vec![Endpoint::Tus],
            _ => Endpoint::ALL.to_vec(),
        }
    }

    /// Whether this is the module, whichever protocol.
    pub fn is_module(self) -> bool {
        matches!(self, Endpoint::Module | Endpoint::Tus | Endpoint::Ietf)
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Discard => "discard",
            Endpoint::Dav => "dav-put",
            Endpoint::Module => "module",
            Endpoint::Tus => "tus",
            Endpoint::Ietf => "ietf",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Discard => "discard (`return 200`)",
            Endpoint::Dav => "WebDAV `PUT`",
            Endpoint::Module => "ngx-upload",
            Endpoint::Tus => "ngx-upload, tus `PATCH`",
            Endpoint::Ietf => "ngx-upload, IETF draft v6",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One upload of `single` bytes in one request, HTTP/1.1.
    Single,
    /// Two such uploads at once, on two connections to the one worker.
    Pair,
    /// `seg_sessions` sessions of `session_size` in `seg_size` segments, in order, over
    /// `conns` connections.
    Segments,
    /// `small_sessions` sessions of `session_size` in `small_seg_size` segments, shuffled.
    SmallShuffled,
    /// `single` bytes in one request over HTTP/2 (h2c, the benchmark's own client).
    H2,
    /// `slow_conns` uploads held open mid-segment: memory per in-flight upload.
    Slow,
    /// tus concatenation: `concat_parts` partial uploads of `concat_part_size`, then the final
    /// upload that assembles them (timed alone).
    Concat,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Single,
        Workload::Pair,
        Workload::Segments,
        Workload::SmallShuffled,
        Workload::H2,
        Workload::Slow,
        Workload::Concat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Single => "single",
            Workload::Pair => "pair",
            Workload::Segments => "segments",
            Workload::SmallShuffled => "shuffled",
            Workload::H2 => "h2",
            Workload::Slow => "slow",
            Workload::Concat => "concat",
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
    pub concat_parts: usize,
    pub concat_part_size: u64,
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
            // 1 GiB. Not 256 × 4 MiB: the module keeps a final upload's part list in its
            // metadata, at most 8 KiB (engine MAX_METADATA_LEN), and 256 URLs /files/<32-char
            // id> take ~10 KiB (413 "bytes of metadata are more than the 8192 allowed"),
            // although tus.rs accepts up to MAX_PARTS = 1000 parts.
            concat_parts: 256,
            concat_part_size: 4 * MIB,
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
            concat_parts: 16,
            concat_part_size: 4 * MIB,
        }
    }

    pub fn describe(&self, w: Workload) -> String {
        match w {
            Workload::Single => format!(
                "{} in one request, HTTP/1.1, one connection",
                human(self.single)
            ),
            Workload::Pair => format!(
                "two uploads of {} at once, each in one request, HTTP/1.1, two connections",
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
                "{} in one request, HTTP/2 (h2c, prior knowledge), 16 KiB DATA frames, a window's worth per writev",
                human(self.single)
            ),
            Workload::Slow => format!(
                "{} uploads held open, each after {} of a {} segment",
                self.slow_conns,
                human(self.slow_sent),
                human(self.slow_segment)
            ),
            Workload::Concat => format!(
                "tus concatenation: {} partial uploads × {} (uploaded over {} keep-alive \
                 connections, untimed), then the final upload of {} that assembles them \
                 (timed)",
                self.concat_parts,
                human(self.concat_part_size),
                self.conns,
                human(self.concat_parts as u64 * self.concat_part_size)
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
    /// CPU time of the benchmark process (client threads, echo backend).
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

/// One assembly (`concat`) measurement.
#[derive(Clone, Debug)]
pub struct ConcatMeasurement {
    pub parts: usize,
    pub part_size: u64,
    /// Bytes of the final upload.
    pub bytes: u64,
    /// Uploading the parts (creations and PATCHes over `conns` connections).
    pub parts_s: f64,
    /// The final upload's creation: from its first byte sent to its answer (assembly and
    /// hand-off).
    pub final_s: f64,
    /// Worker CPU over the final upload's request.
    pub cpu_s: f64,
    /// `/proc/<pid>/io` deltas of the workers over the final upload's request.
    pub io: IoCounters,
    /// Size of the final request's `Tus-Resumable` and `Upload-Concat` header lines.
    pub header_bytes: usize,
    pub hwm_kib: u64,
    pub check: String,
}

/// Whether a tus upload is a part of a later concatenation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Concat {
    None,
    Partial,
}

const TUS_VERSION: &str = "1.0.0";
/// The IETF draft's interop version the benchmark speaks (draft -04/-05).
const IETF_VERSION: &str = "6";

/// The path of a `Location` (absolute URL or path).
fn path_of(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
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
    /// A tus final upload (id, payload offset, length) and its parts' ids: parts are kept
    /// after an assembly (until they expire or are deleted), so their states stay.
    Assembled((String, u64, u64), Vec<String>),
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
            Workload::Pair => self.pair(ep, &nginx, &tag),
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
            Workload::Concat => unreachable!("concat is measured by measure_concat"),
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
            Endpoint::Tus | Endpoint::Ietf => {
                unreachable!("tus and IETF uploads are sessions: see protocol_session")
            }
        }
    }

    /// Sends `piece` (`first` byte, length, the file's total) of the file `name` as `ep`'s
    /// upload request on `conn`, its bytes from the payload at `from`; whether the answer is
    /// the module's hand-off ([`Self::check_answer`]).
    fn send_piece(
        &self,
        conn: &mut Conn,
        ep: Endpoint,
        name: &str,
        (first, len, total): (u64, u64, u64),
        from: u64,
    ) -> Result<bool, String> {
        let (method, uri, headers) = self.request_for(ep, name, first, len, total);
        let body = FileRange {
            file: &self.payload.file,
            offset: from,
            len,
        };
        let r = conn
            .request(method, &uri, &headers, Some(body))
            .map_err(|e| format!("{} upload of {name} at {first}: {e}", ep.name()))?;
        Self::check_answer(ep, &r)
    }

    /// Whether `r` is the answer `ep` gives to a successful upload request; returns whether it
    /// is the module's hand-off answer (the segment that completed a file).
    fn check_answer(ep: Endpoint, r: &Response) -> Result<bool, String> {
        let ok = match ep {
            Endpoint::Discard => r.status == 200,
            Endpoint::Dav => r.status == 201 || r.status == 204,
            Endpoint::Module => r.status == 201 || r.status == 200,
            Endpoint::Tus | Endpoint::Ietf => matches!(r.status, 200 | 201 | 204),
        };
        if !ok {
            return Err(format!(
                "{} answered {} {:?}",
                ep.name(),
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(500)])
            ));
        }
        Ok(ep.is_module() && r.status == 200)
    }

    /// With `--latency-probe`, the probe of the worker a first connection lands on (with several
    /// workers: one of them).
    fn start_probe(&self, port: u16) -> Result<Option<Probe>, String> {
        if !self.latency_probe {
            return Ok(None);
        }
        let worker = Conn::connect(port)
            .and_then(|mut c| c.ping())
            .map_err(|e| format!("ping: {e}"))?;
        Probe::start(port, worker).map(Some)
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
        let start = Instant::now();
        let handed_off = self.send_piece(&mut conn, ep, tag, (0, n, n), 0)?;
        // A ping on the same connection is answered only after nginx has read the whole body
        // (the discard location answers before reading it).
        conn.ping()
            .map_err(|e| format!("ping after the upload: {e}"))?;
        let wall = start.elapsed();
        let latency = probe.map(Probe::stop).transpose()?;
        if ep == Endpoint::Module && !handed_off {
            // check_answer took it: 201, the answer to a segment that leaves the file short.
            return Err("the module answered 201 to the only segment, not the hand-off".into());
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

    /// Two uploads of the whole payload at once, each in one request on its own connection,
    /// with the probe (if any) on the same worker: what a second fast upload does to the first
    /// and to the event loop.
    fn pair(&self, ep: Endpoint, nginx: &Nginx, tag: &str) -> Result<Run, String> {
        let n = self.sizes.single;
        let names = [format!("{tag}-a"), format!("{tag}-b")];
        let next = AtomicUsize::new(0);
        let handoffs = AtomicUsize::new(0);
        let probe = self.start_probe(nginx.port)?;
        let (wall, results) = on_connections(nginx.port, names.len(), |conn| {
            let name = &names[next.fetch_add(1, Ordering::Relaxed)];
            if self.send_piece(conn, ep, name, (0, n, n), 0)? {
                handoffs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        let latency = probe.map(Probe::stop).transpose()?;
        for r in results {
            r?;
        }
        if ep == Endpoint::Module && handoffs.load(Ordering::Relaxed) != names.len() {
            return Err(format!(
                "{} hand-off answers for {} uploads",
                handoffs.load(Ordering::Relaxed),
                names.len()
            ));
        }
        let files: Vec<(String, u64, u64)> =
            names.iter().map(|name| (name.clone(), 0, n)).collect();
        Ok(Run {
            wall,
            bytes: n * names.len() as u64,
            expect: self.expect(ep, &files),
            latency,
            not_comparable: None,
            checked: String::new(),
        })
    }

    fn expect(&self, ep: Endpoint, files: &[(String, u64, u64)]) -> Expect {
        match ep {
            Endpoint::Discard => Expect::Nothing,
            Endpoint::Dav => Expect::Dav(files.to_vec()),
            Endpoint::Module | Endpoint::Tus | Endpoint::Ietf => Expect::Module(files.to_vec()),
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
        if matches!(ep, Endpoint::Tus | Endpoint::Ietf) {
            assert!(!shuffled, "a tus/IETF session's PATCHes go in order");
            return self.protocol_segments(ep, nginx, sessions, seg_size);
        }
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
        let port = nginx.port;
        let probe = self.start_probe(port)?;
        let (wall, results) = on_connections(port, self.sizes.conns, |conn| {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(s, k)) = work.get(i) else { break };
                let first = k * seg_size;
                let name = match ep {
                    Endpoint::Dav => format!("{}-{k}", ids[s]),
                    _ => ids[s].clone(),
                };
                let piece = (first, seg_size, size);
                if self.send_piece(conn, ep, &name, piece, s as u64 * size + first)? {
                    handoffs.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
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
            Endpoint::Tus | Endpoint::Ietf => unreachable!("see protocol_segments"),
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

    /// `segments` in tus or the IETF draft: a session's `PATCH`es must go in order (each
    /// names the offset the previous one ended at), so each connection takes whole sessions
    /// from the shared queue, one after the other.
    fn protocol_segments(
        &self,
        ep: Endpoint,
        nginx: &Nginx,
        sessions: usize,
        seg_size: u64,
    ) -> Result<Run, String> {
        let size = self.sizes.session_size;
        let next = AtomicUsize::new(0);
        let done: Mutex<Vec<(String, u64, u64)>> = Mutex::new(Vec::new());
        let requests = AtomicUsize::new(0);
        let port = nginx.port;
        let probe = self.start_probe(port)?;
        let (wall, results) = on_connections(port, self.sizes.conns, |conn| {
            loop {
                let s = next.fetch_add(1, Ordering::Relaxed);
                if s >= sessions {
                    break;
                }
                let offset = s as u64 * size;
                let (id, n) =
                    self.protocol_session(ep, conn, offset, size, seg_size, Concat::None)?;
                requests.fetch_add(n, Ordering::Relaxed);
                done.lock().unwrap().push((id, offset, size));
            }
            Ok(())
        });
        let latency = probe.map(Probe::stop).transpose()?;
        for r in results {
            r?;
        }
        let done = done.into_inner().unwrap();
        if done.len() != sessions {
            return Err(format!("{} of {sessions} sessions handed off", done.len()));
        }
        Ok(Run {
            wall,
            bytes: sessions as u64 * size,
            expect: Expect::Module(done),
            latency,
            not_comparable: None,
            checked: format!(
                "{} requests ({sessions} creations); each PATCH's Upload-Offset",
                requests.load(Ordering::Relaxed)
            ),
        })
    }

    /// One tus or IETF (interop version 6) upload of `len` bytes at `offset` of the payload:
    /// a creation `POST` with an empty body, then `PATCH`es of `seg_size` in order. Checks
    /// every answer; the last `PATCH`'s must be the hand-off's (the backend's 200), except for
    /// a tus partial upload, which is never handed off (204). Returns the upload's id (the end
    /// of its `Location`) and the number of requests.
    fn protocol_session(
        &self,
        ep: Endpoint,
        conn: &mut Conn,
        offset: u64,
        len: u64,
        seg_size: u64,
        concat: Concat,
    ) -> Result<(String, usize), String> {
        let empty = FileRange {
            file: &self.payload.file,
            offset: 0,
            len: 0,
        };
        let mut headers: Vec<(&str, String)> = match ep {
            Endpoint::Tus => vec![
                ("Tus-Resumable", TUS_VERSION.to_string()),
                ("Upload-Length", len.to_string()),
            ],
            Endpoint::Ietf => vec![
                ("Upload-Draft-Interop-Version", IETF_VERSION.to_string()),
                ("Upload-Complete", "?0".to_string()),
            ],
            _ => unreachable!("protocol_session is for tus and IETF"),
        };
        if concat == Concat::Partial {
            headers.push(("Upload-Concat", "partial".to_string()));
        }
        let r = conn
            .request("POST", "/files/", &headers, Some(empty))
            .map_err(|e| format!("{} creation: {e}", ep.name()))?;
        let location = match (r.status, r.header("Location")) {
            (201, Some(l)) => path_of(l).to_string(),
            _ => {
                return Err(format!(
                    "{} creation answered {} (Location {:?}) {:?}",
                    ep.name(),
                    r.status,
                    r.header("Location"),
                    r.text()
                ))
            }
        };
        let id = location.rsplit('/').next().unwrap_or_default().to_string();
        let segments = len.div_ceil(seg_size);
        for k in 0..segments {
            let first = k * seg_size;
            let this = seg_size.min(len - first);
            let last = k + 1 == segments;
            let headers: Vec<(&str, String)> = match ep {
                Endpoint::Tus => vec![
                    ("Tus-Resumable", TUS_VERSION.to_string()),
                    ("Upload-Offset", first.to_string()),
                    (
                        "Content-Type",
                        "application/offset+octet-stream".to_string(),
                    ),
                ],
                _ => vec![
                    ("Upload-Draft-Interop-Version", IETF_VERSION.to_string()),
                    ("Upload-Offset", first.to_string()),
                    (
                        "Upload-Complete",
                        if last { "?1" } else { "?0" }.to_string(),
                    ),
                    ("Content-Type", "application/partial-upload".to_string()),
                ],
            };
            let body = FileRange {
                file: &self.payload.file,
                offset: offset + first,
                len: this,
            };
            let r = conn
                .request("PATCH", &location, &headers, Some(body))
                .map_err(|e| format!("{} PATCH {k} of {location}: {e}", ep.name()))?;
            let want = match (ep, last, concat) {
                (Endpoint::Tus, true, Concat::Partial) => 204,
                (_, true, _) => 200,
                (Endpoint::Tus, false, _) => 204,
                _ => 201,
            };
            let held = r
                .header("Upload-Offset")
                .and_then(|v| v.parse::<u64>().ok());
            if r.status != want || held != Some(first + this) {
                return Err(format!(
                    "{} PATCH {k} of {location} answered {} with Upload-Offset {:?}, want {want} \
                     and {}: {:?}",
                    ep.name(),
                    r.status,
                    r.header("Upload-Offset"),
                    first + this,
                    r.text()
                ));
            }
        }
        Ok((id, 1 + segments as usize))
    }

    /// tus concatenation: the parts are uploaded (timed apart), then the final upload's
    /// creation assembles them and hands the result off: that request is the measurement,
    /// with the worker's `/proc/<pid>/io` counters over it.
    pub fn measure_concat(&self) -> Result<ConcatMeasurement, String> {
        let ep = Endpoint::Tus;
        let tag = self.tag(Workload::Concat, ep);
        let nginx = Nginx::start(&self.setup, &tag)?;
        self.backend.clear();
        let result = self.concat(&nginx);
        let m = result.map_err(|e| {
            format!(
                "{e}\n--- end of {}/error.log ---\n{}",
                nginx.prefix.display(),
                crate::nginx::tail(&nginx.error_log(), 20)
            )
        })?;
        let bad = nginx.bad_log_lines(true);
        if !bad.is_empty() {
            return Err(format!("concat: error.log has errors:\n{}", bad.join("\n")));
        }
        nginx.stop();
        Ok(m)
    }

    fn concat(&self, nginx: &Nginx) -> Result<ConcatMeasurement, String> {
        let (parts, part_size) = (self.sizes.concat_parts, self.sizes.concat_part_size);
        let total = parts as u64 * part_size;
        assert!(total <= self.payload.len);
        let ids: Vec<Mutex<Option<String>>> = (0..parts).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let port = nginx.port;
        let start = Instant::now();
        let results: Vec<Result<(), String>> = thread::scope(|scope| {
            let handles: Vec<_> = (0..self.sizes.conns.min(parts))
                .map(|_| {
                    scope.spawn(|| -> Result<(), String> {
                        let mut conn = Conn::connect(port).map_err(|e| format!("connect: {e}"))?;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= parts {
                                return Ok(());
                            }
                            let (id, _) = self.protocol_session(
                                Endpoint::Tus,
                                &mut conn,
                                i as u64 * part_size,
                                part_size,
                                part_size,
                                Concat::Partial,
                            )?;
                            *ids[i].lock().unwrap() = Some(id);
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("client thread panicked".into()))
                })
                .collect()
        });
        for r in results {
            r?;
        }
        let parts_s = start.elapsed().as_secs_f64();
        let ids: Vec<String> = ids
            .into_iter()
            .map(|m| m.into_inner().unwrap().expect("every part uploaded"))
            .collect();
        if !self.backend.requests().is_empty() {
            return Err("a partial upload was handed off".into());
        }
        let list = ids
            .iter()
            .map(|id| format!("/files/{id}"))
            .collect::<Vec<_>>()
            .join(" ");
        let headers = [
            ("Tus-Resumable", TUS_VERSION.to_string()),
            ("Upload-Concat", format!("final;{list}")),
        ];
        let mut conn = Conn::connect(port).map_err(|e| format!("connect: {e}"))?;
        conn.ping().map_err(|e| format!("ping: {e}"))?;
        let empty = FileRange {
            file: &self.payload.file,
            offset: 0,
            len: 0,
        };
        let (stats0, io0) = (nginx.stats()?, nginx.io()?);
        let start = Instant::now();
        let r = conn
            .request("POST", "/files/", &headers, Some(empty))
            .map_err(|e| format!("final upload: {e}"))?;
        let final_s = start.elapsed().as_secs_f64();
        let (stats1, io1) = (nginx.stats()?, nginx.io()?);
        let location = r.header("Location").map(|l| path_of(l).to_string());
        let Some(location) = location.filter(|_| r.status == 200) else {
            return Err(format!(
                "the final upload answered {} (Location {:?}), not the hand-off's 200: {:?}",
                r.status,
                r.header("Location"),
                r.text()
            ));
        };
        let id = location.rsplit('/').next().unwrap_or_default().to_string();
        let check = self.verify(nginx, &Expect::Assembled((id, 0, total), ids))?;
        Ok(ConcatMeasurement {
            parts,
            part_size,
            bytes: total,
            parts_s,
            final_s,
            cpu_s: stats1.cpu_ticks.saturating_sub(stats0.cpu_ticks) as f64
                / clock_ticks_per_second(),
            io: io1.since(io0),
            header_bytes: headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum(),
            hwm_kib: stats1.hwm_kib,
            check: format!("{parts} parts, each PATCH's Upload-Offset; final: {check}"),
        })
    }

    fn h2(&self, ep: Endpoint, nginx: &Nginx, tag: &str) -> Result<Run, String> {
        let n = self.sizes.single;
        let (method, uri, headers) = self.request_for(ep, tag, 0, n, n);
        // The frames go out straight from the page cache: no copy of the payload in the client.
        // SAFETY: the payload file is written once, before any measurement, and never after.
        let body = unsafe {
            memmap2::MmapOptions::new()
                .len(n as usize)
                .map(&self.payload.file)
        }
        .map_err(|e| format!("mapping the payload: {e}"))?;
        let start = Instant::now();
        let answer = ngx_upload_test_support::h2::upload(
            nginx.h2_port,
            method,
            &uri,
            &headers,
            &body,
            ngx_upload_test_support::h2::Pacing::WholeWindows,
        )
        .map_err(|e| format!("{} upload over HTTP/2: {e}", ep.name()))?;
        let wall = start.elapsed();
        if ep == Endpoint::Discard && answer.sent < n {
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
                     the stream, so the body is never sent in full (answer {} after {} of {n} \
                     bytes)",
                    answer.status, answer.sent
                )),
                checked: String::new(),
            });
        }
        if answer.sent != n {
            return Err(format!(
                "{} answered {} after {} of {n} bytes",
                ep.name(),
                answer.status,
                answer.sent
            ));
        }
        let status = answer.status;
        let fake = Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
        };
        let handed_off = Self::check_answer(ep, &fake)?;
        if ep == Endpoint::Module && !handed_off {
            return Err(format!("the module answered {status}, not the hand-off"));
        }
        Ok(Run {
            wall,
            bytes: answer.sent,
            expect: self.expect(ep, &[(tag.to_string(), 0, n)]),
            latency: None,
            not_comparable: None,
            checked: format!(
                "HTTP/2: {} DATA frames, stream window up to {} B",
                answer.data_frames, answer.largest_window
            ),
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
            Expect::Assembled(file, parts) => {
                let check = self.verify_module(nginx, std::slice::from_ref(file), parts)?;
                Ok(format!("{check} but the {} parts'", parts.len()))
            }
            Expect::Module(sessions) => self.verify_module(nginx, sessions, &[]),
        }
    }

    /// The hand-offs of `sessions`, byte for byte; no state left but those of `kept`.
    fn verify_module(
        &self,
        nginx: &Nginx,
        sessions: &[(String, u64, u64)],
        kept: &[String],
    ) -> Result<String, String> {
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
        let states = state_ids(&nginx.prefix.join("state"));
        let unexpected: Vec<&String> = states.iter().filter(|id| !kept.contains(id)).collect();
        if !unexpected.is_empty() || states.len() != kept.len() {
            return Err(format!(
                "{} state files left after every hand-off succeeded ({} expected): {:?}",
                states.len(),
                kept.len(),
                &unexpected[..unexpected.len().min(5)]
            ));
        }
        Ok(format!(
            "{} hand-offs; files: size + checksum; no state left",
            seen.len()
        ))
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

/// utime + stime of this process, in seconds.
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
    of(libc::RUSAGE_SELF)
}

/// The names of the files under `dir` (state files), without any extension.
fn state_ids(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(state_ids(&path));
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            out.push(name.split('.').next().unwrap_or(name).to_string());
        }
    }
    out
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

/// Runs `upload` on `conns` keep-alive connections at once, each in its own thread, from a
/// common start; every connection then proves nginx still answers it (`GET /ping`). The wall
/// time from the start to the last thread's end, and each thread's result.
fn on_connections(
    port: u16,
    conns: usize,
    upload: impl Fn(&mut Conn) -> Result<(), String> + Sync,
) -> (Duration, Vec<Result<(), String>>) {
    let barrier = Barrier::new(conns + 1);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    let conn = Conn::connect(port).map_err(|e| format!("connect: {e}"));
                    barrier.wait();
                    let mut conn = conn?;
                    upload(&mut conn)?;
                    conn.ping()
                        .map(drop)
                        .map_err(|e| format!("ping after the uploads: {e}"))
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
    })
}
