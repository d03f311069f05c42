//! Crash safety: sessions keep uploading while nginx's processes are SIGKILLed under them.
//!
//! Four clients stream sessions of 4 MiB in 256 KiB segments, in random order and slowly (raw
//! `TcpStream`, small writes with pauses), to nginx with two workers. Meanwhile:
//! - phase 1 SIGKILLs a random worker at random moments (the master starts another);
//! - phase 2 SIGKILLs the whole nginx (master and workers at once) and starts it again on the
//!   same prefix and port, as after a crash of the service.
//!
//! Now and then a client also abandons a segment midway itself.
//! A client whose connection dies asks the status query (POST with `X-Session-ID`, empty body)
//! and sends only the bytes the report lacks. Every report, from a status query or a 201, is
//! checked against the disk: it must claim only bytes the client sent, must still claim every
//! byte an earlier report claimed, and every claimed byte in the stored file must equal the
//! source. That is the durability promise: a state never claims bytes that are not on disk.
//! At the end every session is handed off and the handed-off file equals its source.
//!
//! The seed is printed (`NGX_UPLOAD_CRASH_SEED` replays the same choices; kill timing still
//! depends on the machine); with `--nocapture` the counts of kills and resumes are shown.

use crash::CrashNginx;
use ngx_upload_test_support::crash;
use ngx_upload_test_support::*;
use std::collections::VecDeque;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

const SESSIONS: usize = 4;
const SESSION_LEN: usize = 4 << 20;
const SEGMENT: usize = 256 << 10;
/// Clients write a segment's body this many bytes at a time, pausing between writes, so kills
/// land in the middle of segments.
const WRITE_CHUNK: usize = 16 << 10;
const WRITE_PAUSE: Duration = Duration::from_millis(3);
/// Rounds of each phase; every round uploads fresh sessions.
const WORKER_KILL_ROUNDS: usize = 6;
const WHOLE_KILL_ROUNDS: usize = 4;
const WHOLE_KILLS_PER_ROUND: usize = 3;
/// A client that has not finished by then reports why (a hang is a failure, not a slow run).
const CLIENT_DEADLINE: Duration = Duration::from_secs(45);

#[derive(Default)]
struct Stats {
    worker_kills: AtomicUsize,
    whole_kills: AtomicUsize,
    /// Requests that died with their connection (no answer), the client's aborts included.
    broken_requests: AtomicUsize,
    /// Segments the client itself abandoned midway.
    client_aborts: AtomicUsize,
    /// Status queries a client made to resume.
    resumes: AtomicUsize,
    /// Reports (201 or status query) checked against the disk.
    reports_checked: AtomicUsize,
    /// Reports claiming part of a segment (what an interrupted segment recorded).
    partial_claims: AtomicUsize,
    /// Sessions found complete by a status query, so a segment was sent again to hand off.
    rehandoffs: AtomicUsize,
    /// Sessions whose hand-off reached the backend while the client lost the answer.
    lost_answers: AtomicUsize,
    /// 409s: a resumed segment overlapped the abandoned request the server had not yet seen
    /// end; the client waits a moment and asks again, as a real client retries.
    conflicts: AtomicUsize,
    /// Complete sessions whose state outlived a hand-off (worker killed right after answering).
    stale_states: AtomicUsize,
}

// ---------------------------------------------------------------------------------------------
// Inclusive byte spans
// ---------------------------------------------------------------------------------------------

/// Sorted, merged inclusive spans.
fn merged(mut spans: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    spans.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Whether every byte of `inner` is in `outer` (both merged).
fn covers(outer: &[(u64, u64)], inner: &[(u64, u64)]) -> bool {
    inner
        .iter()
        .all(|(a, b)| outer.iter().any(|(x, y)| x <= a && b <= y))
}

/// The spans of `0..total` not in `held` (merged).
fn missing(held: &[(u64, u64)], total: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = 0;
    for &(a, b) in held {
        if a > next {
            out.push((next, a - 1));
        }
        next = b + 1;
    }
    if next < total {
        out.push((next, total - 1));
    }
    out
}

/// `a-b/t,c-d/t` → spans and the total (`None` for an empty report).
fn parse_report(report: &str) -> (Vec<(u64, u64)>, Option<u64>) {
    let mut total = None;
    let spans = report
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|span| {
            let (range, t) = span
                .split_once('/')
                .unwrap_or_else(|| panic!("bad report {report:?}"));
            let (a, b) = range
                .split_once('-')
                .unwrap_or_else(|| panic!("bad report {report:?}"));
            total = Some(t.parse().unwrap());
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    (spans, total)
}

// ---------------------------------------------------------------------------------------------
// A client
// ---------------------------------------------------------------------------------------------

struct Client<'a> {
    id: String,
    data: Vec<u8>,
    port: u16,
    stored: PathBuf,
    backend: &'a Backend,
    stats: &'a Stats,
    rng: Rng,
    /// Every byte the client began to send.
    sent: Vec<(u64, u64)>,
    /// What the latest report claimed.
    acked: Vec<(u64, u64)>,
}

enum Next {
    Send(VecDeque<(u64, u64)>),
    Done,
}

impl Client<'_> {
    fn total(&self) -> u64 {
        self.data.len() as u64
    }

    /// Uploads the session until a hand-off answers 200 (or is found to have happened).
    fn run(&mut self) {
        let deadline = Instant::now() + CLIENT_DEADLINE;
        let mut queue: VecDeque<(u64, u64)> = {
            let mut cuts: Vec<(u64, u64)> = segments(self.data.len(), SEGMENT)
                .into_iter()
                .map(|(a, b)| (a as u64, b as u64))
                .collect();
            self.rng.shuffle(&mut cuts);
            cuts.into()
        };
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: not finished after {CLIENT_DEADLINE:?}; reports claimed {:?}",
                self.id,
                self.acked
            );
            let Some(piece) = queue.pop_front() else {
                match self.resume() {
                    Next::Send(q) => queue = q,
                    Next::Done => return,
                }
                continue;
            };
            self.sent = merged([self.sent.clone(), vec![piece]].concat());
            match self.send(piece) {
                Ok(r) if r.status == 201 => {
                    let report = r.header("Range").unwrap_or_default().to_string();
                    assert_eq!(r.text(), report, "{}: 201 body vs Range", self.id);
                    self.check_report(&report, "a 201");
                }
                Ok(r) if r.status == 200 => return,
                Ok(r) if r.status == 409 => {
                    self.stats.conflicts.fetch_add(1, SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    match self.resume() {
                        Next::Send(q) => queue = q,
                        Next::Done => return,
                    }
                }
                Ok(r) => panic!("{}: segment {}-{} answered\n{r}", self.id, piece.0, piece.1),
                Err(_) => {
                    self.stats.broken_requests.fetch_add(1, SeqCst);
                    match self.resume() {
                        Next::Send(q) => queue = q,
                        Next::Done => return,
                    }
                }
            }
        }
    }

    /// Streams one segment slowly; `Err` when the connection dies without an answer.
    fn send(&mut self, (a, b): (u64, u64)) -> std::io::Result<Response> {
        let (a, b) = (a as usize, b as usize);
        let request = Segment::piece(&self.id, &self.data, a, b).to_request("/upload");
        let body_len = b - a + 1;
        let head_len = request.len() - body_len;
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        if conn.local_addr()? == conn.peer_addr()? {
            // Connected to itself while nginx was down (see crash.rs): not nginx.
            return Err(std::io::Error::other("connected to itself"));
        }
        conn.set_read_timeout(Some(Duration::from_secs(20)))?;
        conn.set_write_timeout(Some(Duration::from_secs(20)))?;
        conn.set_nodelay(true)?;
        conn.write_all(&request[..head_len])?;
        let chunks = body_len.div_ceil(WRITE_CHUNK) as u64;
        // Now and then the client itself gives up mid-segment: the module then records what
        // arrived, which the next status query reports.
        let give_up_after =
            (chunks > 1 && self.rng.below(10) == 0).then(|| 1 + self.rng.below(chunks - 1));
        for (n, chunk) in request[head_len..].chunks(WRITE_CHUNK).enumerate() {
            if give_up_after == Some(n as u64) {
                self.stats.client_aborts.fetch_add(1, SeqCst);
                return Err(std::io::Error::other("the client gave up"));
            }
            conn.write_all(chunk)?;
            if self.rng.below(4) != 0 {
                std::thread::sleep(WRITE_PAUSE);
            }
        }
        read_response(&mut conn)
    }

    /// Asks what the server holds until it answers; returns what to send next.
    fn resume(&mut self) -> Next {
        self.stats.resumes.fetch_add(1, SeqCst);
        let query = build_request(
            "POST",
            "/upload",
            &[("X-Session-ID", &self.id), ("Content-Length", "0")],
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: no answer to the status query for 20 s",
                self.id
            );
            let r = match try_send_raw(self.port, &query) {
                Ok(r) => r,
                Err(_) => {
                    // nginx is down (being restarted) or the worker died: ask again.
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            match r.status {
                200 => {
                    let report = r.header("Range").unwrap_or_default().to_string();
                    assert_eq!(r.text(), report, "{}: status body vs Range", self.id);
                    self.check_report(&report, "a status query");
                    let lacking = missing(&self.acked, self.total());
                    if lacking.is_empty() {
                        // All bytes are held but no hand-off answered: send one again, which
                        // runs the hand-off (the state stays until the backend accepts).
                        self.stats.rehandoffs.fetch_add(1, SeqCst);
                        let last = self.total() - 1;
                        return Next::Send([(last, last)].into());
                    }
                    let mut cuts: Vec<(u64, u64)> = lacking
                        .iter()
                        .flat_map(|&(a, b)| {
                            (a..=b)
                                .step_by(SEGMENT)
                                .map(move |x| (x, (x + SEGMENT as u64 - 1).min(b)))
                        })
                        .collect();
                    self.rng.shuffle(&mut cuts);
                    return Next::Send(cuts.into());
                }
                404 => {
                    // No session: either the hand-off was accepted (state forgotten) while
                    // the answer was lost, or nothing was ever recorded.
                    if self.handoffs().next().is_some() {
                        self.stats.lost_answers.fetch_add(1, SeqCst);
                        return Next::Done;
                    }
                    assert!(
                        self.acked.is_empty(),
                        "{}: the session is gone (404) but reports had claimed {:?} and no \
                         hand-off reached the backend",
                        self.id,
                        self.acked
                    );
                    let mut cuts: Vec<(u64, u64)> = segments(self.data.len(), SEGMENT)
                        .into_iter()
                        .map(|(a, b)| (a as u64, b as u64))
                        .collect();
                    self.rng.shuffle(&mut cuts);
                    return Next::Send(cuts.into());
                }
                _ => panic!("{}: status query answered\n{r}", self.id),
            }
        }
    }

    /// The durability check of one report.
    fn check_report(&mut self, report: &str, from: &str) {
        let (claimed, total) = parse_report(report);
        if let Some(total) = total {
            assert_eq!(
                total,
                self.total(),
                "{}: report {report} from {from}",
                self.id
            );
        }
        let claimed = merged(claimed);
        assert!(
            covers(&self.sent, &claimed),
            "{}: report {report} from {from} claims bytes never sent (sent {:?})",
            self.id,
            self.sent
        );
        assert!(
            covers(&claimed, &self.acked),
            "{}: report {report} from {from} forgot bytes an earlier report claimed ({:?})",
            self.id,
            self.acked
        );
        let stored = std::fs::read(&self.stored).unwrap_or_default();
        for &(a, b) in &claimed {
            assert!(
                stored.len() as u64 > b,
                "{}: report {report} from {from} claims bytes {a}-{b}, the stored file has {} bytes",
                self.id,
                stored.len()
            );
            let (a, b) = (a as usize, b as usize);
            if stored[a..=b] != self.data[a..=b] {
                assert_bytes_eq(
                    &stored[a..=b],
                    &self.data[a..=b],
                    &format!(
                        "{}: report {report} from {from}: claimed bytes {a}-{b} on disk",
                        self.id
                    ),
                );
            }
        }
        let seg = SEGMENT as u64;
        if claimed
            .iter()
            .any(|&(a, b)| a % seg != 0 || ((b + 1) % seg != 0 && b + 1 != self.total()))
        {
            self.stats.partial_claims.fetch_add(1, SeqCst);
        }
        self.acked = claimed;
        self.stats.reports_checked.fetch_add(1, SeqCst);
    }

    /// The hand-offs of this session the backend received.
    fn handoffs(&self) -> impl Iterator<Item = ReceivedRequest> + '_ {
        let path = self.stored.display().to_string();
        self.backend
            .requests()
            .into_iter()
            .filter(move |r| r.field("f.path").as_deref() == Some(path.as_str()))
    }
}

/// Counts a finished (or failed) client when dropped, so the killer stops even on a panic.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

fn seed() -> u64 {
    std::env::var("NGX_UPLOAD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn stored_path(store: &Path, id: &str) -> PathBuf {
    store.join(&id[id.len() - 1..]).join(id)
}

/// Sleeps `ms` milliseconds or until every client has finished; returns whether they have.
fn pause_unless_done(ms: u64, finished: &AtomicUsize) -> bool {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        if finished.load(SeqCst) == SESSIONS {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    finished.load(SeqCst) == SESSIONS
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    KillWorkers,
    KillEverything,
}

/// Uploads `SESSIONS` fresh sessions while `phase` kills processes; checks every hand-off.
fn round(
    nginx: &mut CrashNginx,
    backend: &Backend,
    stats: &Stats,
    rng: &mut Rng,
    phase: Phase,
    n: usize,
) {
    let port = nginx.port();
    let store = nginx.path("store");
    let finished = AtomicUsize::new(0);
    let clients: Vec<Client<'_>> = (0..SESSIONS)
        .map(|i| {
            let id = format!("crash-{n}-{phase:?}-{i}");
            Client {
                stored: stored_path(&store, &id),
                data: Rng::new(rng.next_u64()).bytes(SESSION_LEN),
                id,
                port,
                backend,
                stats,
                rng: Rng::new(rng.next_u64()),
                sent: Vec::new(),
                acked: Vec::new(),
            }
        })
        .collect();
    let sessions: Vec<(String, Vec<u8>, PathBuf)> = clients
        .iter()
        .map(|c| (c.id.clone(), c.data.clone(), c.stored.clone()))
        .collect();
    std::thread::scope(|s| {
        let finished = &finished;
        let handles: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                s.spawn(move || {
                    let _done = Finished(finished);
                    client.run();
                })
            })
            .collect();
        match phase {
            Phase::KillWorkers => {
                while !pause_unless_done(50 + rng.below(200), finished) {
                    if nginx.kill_worker(rng.next_u64()).is_some() {
                        stats.worker_kills.fetch_add(1, SeqCst);
                    }
                }
            }
            Phase::KillEverything => {
                for _ in 0..WHOLE_KILLS_PER_ROUND {
                    if pause_unless_done(100 + rng.below(400), finished) {
                        break;
                    }
                    nginx.kill_all();
                    stats.whole_kills.fetch_add(1, SeqCst);
                    std::thread::sleep(Duration::from_millis(rng.below(200)));
                    nginx.restart();
                }
            }
        }
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });

    // Every session was handed off, and the file the backend was given is the source.
    let requests = backend.requests();
    for (id, data, stored) in &sessions {
        let path = stored.display().to_string();
        let handed: Vec<_> = requests
            .iter()
            .filter(|r| r.field("f.path").as_deref() == Some(path.as_str()))
            .collect();
        assert!(!handed.is_empty(), "{id}: no hand-off reached the backend");
        let last = handed.last().unwrap();
        assert_eq!(
            last.field("f.size").as_deref(),
            Some(SESSION_LEN.to_string().as_str()),
            "{id}"
        );
        assert_bytes_eq(
            &std::fs::read(stored).unwrap(),
            data,
            &format!("{id}: the handed-off file"),
        );
        // The accepted hand-off ends the session: its state is gone (the status query says
        // 404). The request's cleanup may run just after its answer: wait a little. A worker
        // killed between the answer and that cleanup leaves the state behind, complete (the
        // client has its answer; upload_state_expire removes such states): counted, not failed.
        let query = build_request(
            "POST",
            "/upload",
            &[("X-Session-ID", id), ("Content-Length", "0")],
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let r = send_raw(port, &query);
            if r.status == 404 {
                break;
            }
            let whole = format!("0-{}/{}", SESSION_LEN - 1, SESSION_LEN);
            if Instant::now() >= deadline && r.status == 200 && r.header("Range") == Some(&whole) {
                stats.stale_states.fetch_add(1, SeqCst);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: a completed session still answers the status query:\n{r}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn uploads_survive_killed_workers_and_a_killed_nginx() {
    let seed = seed();
    eprintln!("crash test seed {seed} (NGX_UPLOAD_CRASH_SEED={seed} replays its choices)");
    let mut rng = Rng::new(seed);
    let backend = backend::spawn("127.0.0.1:0");
    let skeleton = Skeleton {
        worker_processes: 2,
        backend: Some(backend.addr()),
        ..Skeleton::default()
    };
    let mut nginx = CrashNginx::start(&skeleton, &upload_server(""));
    let stats = Stats::default();
    let started = Instant::now();
    for n in 0..WORKER_KILL_ROUNDS {
        round(
            &mut nginx,
            &backend,
            &stats,
            &mut rng,
            Phase::KillWorkers,
            n,
        );
    }
    for n in 0..WHOLE_KILL_ROUNDS {
        round(
            &mut nginx,
            &backend,
            &stats,
            &mut rng,
            Phase::KillEverything,
            n,
        );
    }
    let serious = nginx.serious_log_lines();
    assert!(
        serious.is_empty(),
        "error.log has serious lines besides the killed workers:\n{}",
        serious.join("\n")
    );
    let g = |a: &AtomicUsize| a.load(SeqCst);
    eprintln!(
        "crash test seed {seed}: {} sessions of {} KiB completed in {:.1} s; {} worker kills, \
         {} whole-nginx kills and restarts; {} requests broken ({} abandoned by the client), \
         {} resumes (status queries), {} reports checked against the disk ({} claiming parts of segments), {} complete sessions re-sent to hand off, \
         {} hand-offs whose answer was lost, {} segments refused with 409 while an abandoned \
         one was still in flight, {} complete states left by a worker killed after its answer",
        (WORKER_KILL_ROUNDS + WHOLE_KILL_ROUNDS) * SESSIONS,
        SESSION_LEN >> 10,
        started.elapsed().as_secs_f64(),
        g(&stats.worker_kills),
        g(&stats.whole_kills),
        g(&stats.broken_requests),
        g(&stats.client_aborts),
        g(&stats.resumes),
        g(&stats.reports_checked),
        g(&stats.partial_claims),
        g(&stats.rehandoffs),
        g(&stats.lost_answers),
        g(&stats.conflicts),
        g(&stats.stale_states),
    );
    assert!(
        g(&stats.worker_kills) > 0 && g(&stats.whole_kills) > 0,
        "the run killed nothing"
    );
}
