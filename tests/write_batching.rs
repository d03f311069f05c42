//! Body bytes reach the file in `upload_buffer_size` pieces, one `pwritev` each, however small
//! the pieces the client sends, and a small segment that arrives at once is one `pwritev`:
//! checked by tracing the worker's system calls (its other threads' too) with strace.

use ngx_upload_test_support::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// strace attached to every thread of an nginx worker, tracing its writes and opens.
struct WriteTrace {
    strace: Child,
    path: std::path::PathBuf,
    /// The worker's pid, which is its event loop's thread id.
    worker: u32,
}

impl WriteTrace {
    /// `None` (the test says it is skipped) without strace.
    fn attach(env: &UploadEnv) -> Option<Self> {
        if Command::new("strace").arg("-V").output().is_err() {
            eprintln!("SKIPPED: strace is not installed (scripts/setup.sh installs it)");
            return None;
        }
        let worker = env.nginx.worker_pids()[0];
        let path = env.nginx.path("strace.out");
        let strace = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=pwritev,pwrite64,write,writev,openat",
                "-o",
            ])
            .arg(&path)
            .args(["-p", &worker.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // strace is attached once it traces every thread of the worker, and the worker answers
        // a request it traced.
        wait_for("strace to attach to the worker", WAIT_TIMEOUT, || {
            let tracers = tracers(worker);
            if !tracers.is_empty() && tracers.iter().all(|&t| t == strace.id()) {
                Ok(())
            } else {
                Err(format!("tracers of the worker's threads: {tracers:?}"))
            }
        });
        wait_for(
            "strace to trace an answer of the worker",
            WAIT_TIMEOUT,
            || {
                get(env.port(), "/");
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.contains("HTTP/1.1 ") {
                    Ok(())
                } else {
                    Err(format!("the trace so far:\n{text}"))
                }
            },
        );
        Some(WriteTrace {
            strace,
            path,
            worker,
        })
    }

    /// Waits until `done` accepts the trace: strace writes a call's line when the call returns,
    /// which may be after its client already has what the call sent.
    fn wait_for_trace(&self, what: &str, done: impl Fn(&str) -> bool) {
        wait_for(what, WAIT_TIMEOUT, || {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            if done(&text) {
                Ok(())
            } else {
                Err(format!("the trace so far:\n{text}"))
            }
        });
    }

    /// Stops tracing; the whole trace.
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.strace.id() as i32, libc::SIGINT) };
        let _ = self.strace.wait();
        let _ = self
            .strace
            .stderr
            .take()
            .map(|e| BufReader::new(e).lines().count());
        std::fs::read_to_string(&self.path).unwrap()
    }

    /// Stops tracing; the sizes of the `pwritev` calls (data writes) and the whole trace.
    fn data_writes(self) -> (Vec<u64>, String) {
        let (writes, text) = self.data_writes_by_thread();
        (writes.into_iter().map(|(_, len)| len).collect(), text)
    }

    /// Stops tracing; each `pwritev` as whether the event loop made it (not the thread pool)
    /// and its size, and the whole trace.
    fn data_writes_by_thread(self) -> (Vec<(bool, u64)>, String) {
        let worker = self.worker.to_string();
        let text = self.stop();
        let writes = calls(&text, "pwritev", |_| true)
            .into_iter()
            .filter_map(|(tid, result)| Some((tid == worker, result? as u64)))
            .collect();
        (writes, text)
    }
}

/// A thread of the worker: its name (`comm`) and id.
type Thread = (String, String);

impl WriteTrace {
    /// The data writes (`pwritev`), each with the name and id of the worker's thread that
    /// made it (`/proc/<worker>/task/<tid>/comm`, read while the worker runs).
    fn data_writes_by_thread_name(self) -> (Vec<(Thread, u64)>, String) {
        let worker = self.worker;
        let text = self.stop();
        let writes = calls(&text, "pwritev", |_| true)
            .into_iter()
            .filter_map(|(tid, result)| {
                let comm = std::fs::read_to_string(format!("/proc/{worker}/task/{tid}/comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_else(|_| format!("gone thread {tid}"));
                Some(((comm, tid.to_string()), result? as u64))
            })
            .collect();
        (writes, text)
    }
}

/// nginx with `http` lines and the upload location's `location` lines, its worker traced;
/// `None` (the test says it is skipped) without strace.
fn traced(http: &str, location: &str) -> Option<(UploadEnv, WriteTrace)> {
    let env = UploadEnv::start_server(Nginx::builder().http(http), &upload_server(location));
    let trace = WriteTrace::attach(&env)?;
    Some((env, trace))
}

#[test]
fn a_segment_is_written_once_per_upload_buffer_size() {
    let Some((env, trace)) = traced("client_max_body_size 0;", "upload_buffer_size 256k;") else {
        return;
    };
    let data = test_data(8 << 20, 141);
    let id = "batched1";
    let mut conn = env.start_segment(&Segment::piece(id, &data, 0, data.len() - 1), 0);
    // Small pieces, each flushed on its own: without batching each would be a write.
    for piece in data.chunks(4096) {
        conn.write_all(piece).unwrap();
    }
    let r = read_response(&mut conn).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_bytes_eq(&std::fs::read(env.stored_path(id)).unwrap(), &data, "file");

    let (data_writes, text) = trace.data_writes();
    let written: u64 = data_writes.iter().sum();
    eprintln!(
        "{} pwritev calls for {} bytes sent in 4 KiB pieces",
        data_writes.len(),
        data.len()
    );
    assert_eq!(written, data.len() as u64, "{text}");
    let full_buffers = (data.len() as u64).div_ceil(256 << 10);
    assert!(
        data_writes.len() as u64 <= full_buffers + 2,
        "{} writes for {} buffers of 256 KiB:\n{data_writes:?}",
        data_writes.len(),
        full_buffers
    );
}

/// nginx reads the first `client_body_buffer_size` (8 KiB here) of a body on its own; the
/// module moves those bytes into the larger buffer rather than writing them, so a segment that
/// arrives whole is one write, of all its bytes, and lands intact. Each segment's head and body
/// are one send that fits a loopback packet, so all of it is there when nginx reads.
#[test]
fn a_small_segment_that_arrives_at_once_is_one_write() {
    let Some((env, trace)) = traced(
        "client_max_body_size 0; client_body_buffer_size 8k;",
        "upload_buffer_size 256k;",
    ) else {
        return;
    };
    const PIECE: usize = 60 << 10;
    let data = test_data(4 * PIECE, 142);
    let id = "small1";
    // Out of order; the last one completes the file.
    for (n, first) in [2, 0, 3, 1].map(|k| k * PIECE).into_iter().enumerate() {
        let segment = Segment::piece(id, &data, first, first + PIECE - 1);
        let mut conn = env.start_segment(&segment, segment.body.len());
        let r = read_response(&mut conn).unwrap();
        assert_eq!(
            r.status,
            if n == 3 { 200 } else { 201 },
            "segment at {first}: {r}"
        );
    }
    assert_bytes_eq(&std::fs::read(env.stored_path(id)).unwrap(), &data, "file");

    let (data_writes, text) = trace.data_writes();
    assert_eq!(
        data_writes,
        vec![PIECE as u64; 4],
        "one pwritev of the whole body per segment:\n{text}"
    );
}

/// A fast client fills the 256 KiB buffer again and again: each full buffer is written off the
/// event loop (by the worker's write lane) while nginx reads on into the other, and the event loop writes at most the
/// first few KiB (nginx's own first buffer) and the last piece.
#[test]
fn a_fast_client_s_buffers_are_written_behind_off_the_event_loop() {
    let Some((env, trace)) = traced(
        "client_max_body_size 0; client_body_buffer_size 8k;",
        "upload_buffer_size 256k;",
    ) else {
        return;
    };
    let data = test_data(4 << 20, 143);
    let id = "behind1";
    let segment = Segment::piece(id, &data, 0, data.len() - 1);
    let mut conn = env.start_segment(&segment, segment.body.len());
    let r = read_response(&mut conn).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_bytes_eq(&std::fs::read(env.stored_path(id)).unwrap(), &data, "file");

    let (writes, text) = trace.data_writes_by_thread();
    let on_loop: Vec<u64> = writes.iter().filter(|w| w.0).map(|w| w.1).collect();
    let behind = writes.iter().filter(|w| !w.0 && w.1 == 256 << 10).count();
    assert_eq!(
        writes.iter().map(|w| w.1).sum::<u64>(),
        data.len() as u64,
        "{text}"
    );
    assert!(
        on_loop.len() <= 2 && on_loop.iter().all(|&len| len < 256 << 10),
        "the event loop wrote {on_loop:?}:\n{text}"
    );
    assert!(
        behind >= 14,
        "{behind} buffers of 256 KiB written behind:\n{text}"
    );
}

/// Small segments of several uploads, sent at once on several connections, are written off the
/// event loop, by the worker's write lane ("upload-lane", a thread of its own: nginx's pool
/// would wake an idle thread for each segment), one `pwritev` each; every file lands intact.
#[test]
fn small_segments_are_written_by_the_worker_s_write_lane() {
    let Some((env, trace)) = traced(
        "client_max_body_size 0; client_body_buffer_size 8k;",
        "upload_buffer_size 256k;",
    ) else {
        return;
    };
    const PIECE: usize = 48 << 10;
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|n| (format!("lane{n}"), test_data(8 * PIECE, 150 + n)))
        .collect();
    let port = env.port();
    std::thread::scope(|scope| {
        for (id, data) in &files {
            let env = &env;
            scope.spawn(move || {
                // Shuffled, the last one completes the file.
                for (n, k) in [5, 1, 7, 3, 0, 6, 2, 4].into_iter().enumerate() {
                    let segment = Segment::piece(id, data, k * PIECE, (k + 1) * PIECE - 1);
                    let r = post_segment(port, "/upload", &segment);
                    let want = if n == 7 { 200 } else { 201 };
                    assert_eq!(
                        r.status,
                        want,
                        "{id} segment {k}: {r}\n{}",
                        env.nginx.error_log()
                    );
                }
            });
        }
    });
    for (id, data) in &files {
        assert_bytes_eq(&std::fs::read(env.stored_path(id)).unwrap(), data, id);
    }
    // The answers are in; strace may not have written the last calls' ends yet.
    trace.wait_for_trace("32 finished pwritev calls in the trace", |text| {
        let finished = calls(text, "pwritev", |_| true);
        finished
            .iter()
            .filter(|(_, result)| result.is_some())
            .count()
            >= 32
    });
    let worker = trace.worker.to_string();
    let (writes, text) = trace.data_writes_by_thread_name();
    assert_eq!(writes.len(), 32, "one pwritev per segment:\n{text}");
    assert!(
        writes.iter().all(|(_, len)| *len == PIECE as u64),
        "each of a whole segment:\n{text}"
    );
    // The first write finds the lane idle, so it is the lane's. While the lane's job has run
    // for over 2 ms (here: under strace, on a loaded machine) new ones go to nginx's pool
    // instead; none is written by the event loop.
    let by_lane = writes.iter().filter(|(t, _)| t.0 == "upload-lane").count();
    assert!(by_lane >= 1, "none written by the lane:\n{text}");
    assert!(
        writes.iter().all(|(t, _)| t.1 != worker),
        "written on the event loop:\n{text}"
    );
}

/// A fragmented session's answer carries its ranges in a `Range` header longer than nginx's
/// `postpone_output` (1460 bytes) and again in the body: header and body still go out in one
/// write, not two (each a wake-up of the client).
#[test]
fn a_long_answer_goes_out_in_one_write() {
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server(""),
    );
    // Every other byte of a 400-byte file: 200 ranges.
    let data = test_data(400, 144);
    let id = "fragments1";
    for at in (0..data.len()).step_by(2).skip(1) {
        assert_eq!(env.post(&Segment::piece(id, &data, at, at)).status, 201);
    }
    let Some(trace) = WriteTrace::attach(&env) else {
        return;
    };
    let r = env.post(&Segment::piece(id, &data, 0, 0));
    assert_eq!(r.status, 201, "{r}");
    let range = r.header("range").unwrap_or_default().to_string();
    assert!(
        range.len() > 1460,
        "a Range header of {} bytes",
        range.len()
    );
    trace.wait_for_trace("the answer's writev in the trace", |text| {
        answer_writes(text).iter().any(Option::is_some)
    });
    let text = trace.stop();
    let answers = answer_writes(&text);
    assert_eq!(answers.len(), 1, "{text}");
    let written = answers[0].unwrap_or(0);
    assert!(
        written > 2 * range.len(),
        "the answer's one write has {written} bytes:\n{text}"
    );
}

/// The calls of system call `name` in the trace whose first line `pick` accepts: each with
/// the thread that made it and what it returned (`None` while it has not). With several
/// threads traced, strace may split a call into an `<unfinished ...>` line and a
/// `<... name resumed>` line of the same thread.
fn calls<'a>(
    text: &'a str,
    name: &str,
    pick: impl Fn(&str) -> bool,
) -> Vec<(&'a str, Option<usize>)> {
    // strace pads a resumed call's `)` from its ` = result` with spaces.
    let result = |line: &str| -> Option<usize> { line.rsplit_once(" = ")?.1.trim().parse().ok() };
    let start = format!("{name}(");
    let resumed_mark = format!("<... {name} resumed>");
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        if !(line.contains(&start) && pick(line)) {
            continue;
        }
        let tid = line.split_whitespace().next().unwrap_or_default();
        if !line.contains("<unfinished ...>") {
            found.push((tid, result(line)));
            continue;
        }
        let resumed = lines[at + 1..]
            .iter()
            .find(|l| l.split_whitespace().next() == Some(tid) && l.contains(&resumed_mark));
        found.push((tid, resumed.and_then(|l| result(l))));
    }
    found
}

/// The `writev` calls that sent a `201` answer, with what each returned.
fn answer_writes(text: &str) -> Vec<Option<usize>> {
    calls(text, "writev", |l| l.contains("HTTP/1.1 201"))
        .into_iter()
        .map(|(_, result)| result)
        .collect()
}

/// The next segment of an upload finds its file open: the worker keeps the descriptor of a
/// request that holds no lock on it, so back-to-back small segments cost no `openat` and
/// `close` each (ngx_upload_engine::idle_files).
#[test]
fn the_segments_of_an_upload_open_its_file_once() {
    let Some((env, trace)) = traced("client_max_body_size 0;", "") else {
        return;
    };
    let data = test_data(8 * 4096, 145);
    let id = "keptopen1";
    for (first, last) in segments(data.len(), 4096) {
        let r = env.post(&Segment::piece(id, &data, first, last));
        assert!(matches!(r.status, 200 | 201), "{r}");
    }
    assert_bytes_eq(&std::fs::read(env.stored_path(id)).unwrap(), &data, "file");
    let text = trace.stop();
    let stored = env.stored_path(id).display().to_string();
    let quoted = format!("\"{stored}\"");
    // Opens that succeeded (a failed one returns -1 and an error name).
    let opens = calls(&text, "openat", |l| l.contains(&quoted))
        .into_iter()
        .filter(|(_, result)| result.is_some())
        .count();
    assert_eq!(opens, 1, "openat of {stored} by the worker:\n{text}");
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|t| {
                let path = t.ok()?.path().join("comm");
                Some(std::fs::read_to_string(path).ok()?.trim().to_string())
            })
            .collect()
        })
        .unwrap_or_default()
}

/// A reload: the new workers start lanes of their own and take the upload on where the old
/// ones left it; the old workers, whose lanes wrote its first segments, exit cleanly (the
/// lane's eventfd is no connection of nginx's to be reported left open).
#[test]
fn after_a_reload_new_workers_lanes_go_on_with_an_upload() {
    const PIECE: usize = 64 << 10;
    let env = UploadEnv::start_server(
        Nginx::builder()
            .worker_processes(2)
            .http("client_max_body_size 0;"),
        &upload_server("upload_buffer_size 256k;"),
    );
    let data = test_data(4 * PIECE, 160);
    let id = "reload1";
    let post = |k: usize| {
        post_segment(
            env.port(),
            "/upload",
            &Segment::piece(id, &data, k * PIECE, (k + 1) * PIECE - 1),
        )
    };
    for k in [1, 3] {
        let r = post(k);
        assert_eq!(r.status, 201, "segment {k}: {r}\n{}", env.nginx.error_log());
    }
    let old = env.nginx.worker_pids();
    assert_eq!(old.len(), 2);
    for pid in &old {
        assert!(
            thread_names(*pid).iter().any(|n| n == "upload-lane"),
            "worker {pid}: threads {:?}",
            thread_names(*pid)
        );
    }
    env.nginx.signal_master(libc::SIGHUP);
    wait_for("the old workers to be replaced", WAIT_TIMEOUT, || {
        let now = env.nginx.worker_pids();
        let gone = old
            .iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
        let lanes = now
            .iter()
            .all(|p| thread_names(*p).iter().any(|n| n == "upload-lane"));
        if gone && now.len() == 2 && lanes && now.iter().all(|p| !old.contains(p)) {
            Ok(())
        } else {
            Err(format!("old {old:?}, now {now:?}"))
        }
    });
    for k in [0, 2] {
        let r = post(k);
        let want = if k == 2 { 200 } else { 201 };
        assert_eq!(
            r.status,
            want,
            "segment {k}: {r}\n{}",
            env.nginx.error_log()
        );
    }
    assert_bytes_eq(&std::fs::read(env.stored_path(id)).unwrap(), &data, "file");
    let serious = env.nginx.serious_log_lines();
    assert!(serious.is_empty(), "{serious:#?}");
}

/// Whether thread `tid` of process `pid` is blocked in system call `nr` now
/// (`/proc/<pid>/task/<tid>/syscall` starts with its number).
fn in_syscall(pid: u32, tid: &str, nr: libc::c_long) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some(&nr.to_string()))
}

/// The id of the thread named `name` in process `pid`.
fn thread_id(pid: u32, name: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .find_map(|t| {
            let t = t.ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| t.file_name().to_string_lossy().into_owned())
        })
}

/// Slow storage does not hold a worker's writes up behind one: while a lane job has been stuck
/// for over 2 ms (here the record of upload A waits for A's writers' lock, which the test
/// holds), another upload's segment is written and answered by nginx's thread pool; A's is
/// answered once the lock goes, and both files are whole.
#[test]
fn a_stuck_lane_job_does_not_hold_up_other_uploads() {
    const PIECE: usize = 64 << 10;
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server("upload_buffer_size 256k;"),
    );
    let a = test_data(2 * PIECE, 161);
    let b = test_data(2 * PIECE, 162);
    let port = env.port();
    let segment = |id: &'static str, data: &[u8], k: usize| {
        post_segment(
            port,
            "/upload",
            &Segment::piece(id, data, k * PIECE, (k + 1) * PIECE - 1),
        )
    };
    assert_eq!(segment("stuckA", &a, 0).status, 201);
    assert_eq!(segment("stuckB", &b, 0).status, 201);
    let worker = env.nginx.worker_pids()[0];
    let lane = thread_id(worker, "upload-lane").expect("the worker's lane thread");
    // The writers' lock of A: an flock on its output file.
    let held = std::fs::File::open(env.stored_path("stuckA")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    std::thread::scope(|scope| {
        let answer_a = scope.spawn(|| segment("stuckA", &a, 1));
        // A's last write and record run on the lane, which now waits for the lock; the lane
        // hands new jobs to nginx's pool once that has lasted 2 ms.
        let mut blocked_since = None;
        wait_for(
            "A's record to wait for the lock for 3 ms",
            WAIT_TIMEOUT,
            || {
                if !in_syscall(worker, &lane, libc::SYS_flock) {
                    blocked_since = None;
                    return Err("the lane is not in flock".into());
                }
                let since = *blocked_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= std::time::Duration::from_millis(3) {
                    Ok(())
                } else {
                    Err("not for 3 ms yet".into())
                }
            },
        );
        let r = segment("stuckB", &b, 1);
        assert_eq!(
            r.status,
            200,
            "B, while A waits: {r}\n{}",
            env.nginx.error_log()
        );
        assert!(
            !answer_a.is_finished(),
            "A was answered while its lock was held"
        );
        drop(held);
        let r = answer_a.join().unwrap();
        assert_eq!(r.status, 200, "A: {r}\n{}", env.nginx.error_log());
    });
    assert_bytes_eq(&std::fs::read(env.stored_path("stuckA")).unwrap(), &a, "A");
    assert_bytes_eq(&std::fs::read(env.stored_path("stuckB")).unwrap(), &b, "B");
}
