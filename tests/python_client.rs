//! The Python client (`clients/python/ngx_upload_client.py`) against real nginx with the
//! module: parallel segments, resuming what the server holds, retrying a failed hand-off and a
//! cut connection, refusing without retries. Every client request carries `X-Client: python`
//! and the access log records it, so the tests see exactly which ranges the client sent.

use flaky::{Relay, Spoil};
use ngx_upload_test_support::*;
use ngx_upload_test_support::{flaky, pyclient};
use pyclient::{client_dir, run_client, ClientRun};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The access log line format: who sent it, method, `X-Content-Range`, status.
const LOG_FORMAT: &str =
    "log_format client '$http_x_client|$request_method|$http_x_content_range|$status';";

/// The usual upload server (`{{BACKEND}}` → `backend`), logging every request.
fn logged_server(backend: &str) -> String {
    let body = "access_log {{PREFIX}}/client.log client;\n".to_string() + &upload_server("");
    body.replace("{{BACKEND}}", backend)
}

/// nginx (two workers) with the logged upload server, handing off to `handoff_to` (default:
/// straight to the echo backend).
fn start(handoff_to: impl FnOnce(&Backend) -> Option<String>) -> (UploadEnv, Option<String>) {
    let backend = backend::spawn("127.0.0.1:0");
    let target = handoff_to(&backend);
    let addr = target
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{}", backend.port()));
    let nginx = Nginx::builder()
        .worker_processes(2)
        .http(LOG_FORMAT)
        .start(&logged_server(&addr));
    (UploadEnv { nginx, backend }, target)
}

/// One access log line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Logged {
    client: String,
    /// `(first, last, total)` of a segment; `None` for a status query.
    range: Option<(u64, u64, u64)>,
    status: u16,
}

/// The client's requests, from the access log; stops nginx first so every line is written.
fn client_requests(env: &mut UploadEnv) -> Vec<Logged> {
    env.nginx.stop_and_check();
    let text = std::fs::read_to_string(env.nginx.path("client.log")).expect("client.log");
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f.len(), 4, "log line {line:?}");
            let range = (f[2] != "-").then(|| {
                let (a, rest) = f[2].trim_start_matches("bytes ").split_once('-').unwrap();
                let (b, t) = rest.split_once('/').unwrap();
                (a.parse().unwrap(), b.parse().unwrap(), t.parse().unwrap())
            });
            Logged {
                client: f[0].to_string(),
                range,
                status: f[3].parse().unwrap(),
            }
        })
        .filter(|l| l.client == "python")
        .collect()
}

/// The segments in `log` answered `201` or by the backend (`< 400`), sorted.
fn accepted_segments(log: &[Logged]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = log
        .iter()
        .filter(|l| l.status < 400)
        .filter_map(|l| l.range.map(|(a, b, _)| (a, b)))
        .collect();
    v.sort_unstable();
    v
}

/// Cuts `spans` into `size`-byte pieces (what the client is expected to send).
fn pieces(spans: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(a, b) in spans {
        let mut p = a;
        while p <= b {
            let e = (p + size - 1).min(b);
            out.push((p, e));
            p = e + 1;
        }
    }
    out
}

/// A file holding `data` in a fresh directory.
fn write_file(name: &str, data: &[u8]) -> (PathBuf, PathBuf) {
    let dir = fresh_dir("pyclient");
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    (dir, path)
}

/// Checks the backend got exactly one hand-off, that the client printed the backend's answer,
/// and that the handed-off file is `data`; returns the hand-off's fields.
#[track_caller]
fn assert_one_handoff(env: &UploadEnv, run: &ClientRun, data: &[u8]) -> Vec<backend::Field> {
    assert_eq!(run.code, Some(0), "{run}\n{}", env.nginx.error_log());
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1, "hand-offs: {requests:#?}\n{run}");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        backend::echo_body(&requests[0]),
        "the client's stdout is not the backend's answer"
    );
    let fields = requests[0].fields().expect("a form");
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(backend::Field::value_str)
            .unwrap_or_else(|| panic!("no field {name}: {fields:#?}"))
    };
    assert_eq!(get("file.size"), data.len().to_string());
    let stored = PathBuf::from(get("file.path"));
    assert_bytes_eq(
        &std::fs::read(&stored).unwrap(),
        data,
        "the handed-off file",
    );
    fields
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/upload")
}

/// The pure-Python unit tests (range reports, missing spans, session ids, arguments).
#[test]
fn python_unit_tests_pass() {
    let output = Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-m", "unittest", "-v", "test_ngx_upload_client"])
        .current_dir(client_dir())
        .output()
        .expect("run python3 -m unittest");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("\nOK"), "{text}");
}

/// Six MiB and a bit in 512 KiB segments over four connections to two workers: one status
/// query (404), every segment once, one hand-off of a byte-identical file under the session
/// id the client derived from the file.
#[test]
fn parallel_upload_hands_off_one_identical_file() {
    let (mut env, _) = start(|_| None);
    let data = test_data((6 << 20) + 12_345, 61);
    let (dir, file) = write_file("data.bin", &data);
    let run = run_client(
        &url(env.port()),
        &file,
        &[
            "--parallel",
            "4",
            "--segment-size",
            "512k",
            "--filename",
            "résumé.bin",
            "--content-type",
            "application/x-test",
        ],
    );
    let fields = assert_one_handoff(&env, &run, &data);
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(backend::Field::value_str)
    };
    // A non-ASCII name travels as filename*= and arrives intact.
    assert_eq!(get("file.name").as_deref(), Some("résumé.bin"));
    assert_eq!(
        get("file.content_type").as_deref(),
        Some("application/x-test")
    );
    // The derived session id names the stored file.
    let id = run
        .stderr
        .split("session ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .unwrap_or_else(|| panic!("no session id in the progress output:\n{run}"));
    assert_eq!(id.len(), 32, "{id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    assert_eq!(
        Path::new(&get("file.path").unwrap()).file_name().unwrap(),
        id
    );

    let log = client_requests(&mut env);
    let total = data.len() as u64;
    let queries: Vec<&Logged> = log.iter().filter(|l| l.range.is_none()).collect();
    assert_eq!(queries.len(), 1, "{log:#?}");
    assert_eq!(queries[0].status, 404, "a new session is unknown: {log:#?}");
    let segments: Vec<&Logged> = log.iter().filter(|l| l.range.is_some()).collect();
    let expected = pieces(&[(0, total - 1)], 512 << 10);
    assert_eq!(expected.len(), 13);
    assert_eq!(
        segments.len(),
        expected.len(),
        "each segment once: {log:#?}"
    );
    assert_eq!(accepted_segments(&log), expected);
    assert!(segments.iter().all(|l| l.range.unwrap().2 == total));
    assert_eq!(
        segments.iter().filter(|l| l.status == 200).count(),
        1,
        "{log:#?}"
    );
    assert_eq!(
        segments.iter().filter(|l| l.status == 201).count(),
        12,
        "{log:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Part of the file is already on the server (sent by the harness, at offsets that do not
/// match the client's segments): the client asks first and sends exactly the rest.
#[test]
fn resume_sends_only_what_the_server_lacks() {
    let (mut env, _) = start(|_| None);
    let data = test_data((3 << 20) + 777, 62);
    let total = data.len() as u64;
    let id = "resume-py1";
    let held = [
        (0, 699_999),
        (1_500_000, 1_799_999),
        (total - 1_000, total - 1),
    ];
    let mut sent = Vec::new();
    for &(a, b) in &held {
        sent.push((a, b));
        let r = env.post(&Segment::piece(id, &data, a as usize, b as usize));
        assert_progress(&r, &expected_report(&sent, total));
    }
    let (dir, file) = write_file("resume.bin", &data);
    let run = run_client(
        &url(env.port()),
        &file,
        &[
            "--session-id",
            id,
            "--segment-size",
            "256k",
            "--parallel",
            "3",
        ],
    );
    assert_one_handoff(&env, &run, &data);
    let held_bytes: u64 = held.iter().map(|(a, b)| b - a + 1).sum();
    assert!(
        run.stderr
            .contains(&format!("skipped {held_bytes} bytes already uploaded")),
        "{run}"
    );

    let log = client_requests(&mut env);
    let queries: Vec<&Logged> = log.iter().filter(|l| l.range.is_none()).collect();
    assert_eq!(queries.len(), 1, "{log:#?}");
    assert_eq!(queries[0].status, 200, "the session is known: {log:#?}");
    let missing = [(700_000, 1_499_999), (1_800_000, total - 1_001)];
    assert_eq!(
        accepted_segments(&log),
        pieces(&missing, 256 << 10),
        "the client should send exactly the missing bytes: {log:#?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.status >= 400).count(),
        0,
        "{log:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The backend fails the first hand-off (503). The session keeps its state, so the client,
/// after asking again and finding the file complete, sends the last byte once more: the
/// hand-off runs again and succeeds. The file is sent once.
#[test]
fn a_failed_handoff_is_retried_with_the_last_byte() {
    let mut relay = None;
    let (mut env, _) = start(|backend| {
        let r = Relay::start(backend.addr(), Spoil::AnswerFirst(503));
        let addr = r.addr();
        relay = Some(r);
        Some(addr)
    });
    let relay = relay.unwrap();
    let data = test_data((1 << 20) + 5, 63);
    let total = data.len() as u64;
    let (dir, file) = write_file("handoff.bin", &data);
    let run = run_client(
        &url(env.port()),
        &file,
        &["--segment-size", "256k", "--parallel", "2"],
    );
    assert_one_handoff(&env, &run, &data);
    assert!(relay.spoiled().is_some(), "the relay failed no hand-off");
    assert_eq!(
        relay.connections(),
        2,
        "two hand-offs: the failed one and the retry"
    );
    assert!(run.stderr.contains("retry 1/"), "{run}");
    assert!(run.stderr.contains("503"), "{run}");

    let log = client_requests(&mut env);
    let segments: Vec<&Logged> = log.iter().filter(|l| l.range.is_some()).collect();
    let failed: Vec<&&Logged> = segments.iter().filter(|l| l.status == 503).collect();
    assert_eq!(failed.len(), 1, "{log:#?}");
    let done: Vec<&&Logged> = segments.iter().filter(|l| l.status == 200).collect();
    assert_eq!(done.len(), 1, "{log:#?}");
    assert_eq!(
        done[0].range,
        Some((total - 1, total - 1, total)),
        "{log:#?}"
    );
    // Every byte went once, plus the one byte that re-ran the hand-off. That byte may first
    // meet a 409: the failed hand-off's claim on the session lasts until its request is
    // freed, just after the 503 went out; the client retries it.
    let conflicts: Vec<&&Logged> = segments.iter().filter(|l| l.status == 409).collect();
    assert!(
        conflicts
            .iter()
            .all(|l| l.range == Some((total - 1, total - 1, total))),
        "{log:#?}"
    );
    let sent: u64 = segments
        .iter()
        .filter(|l| l.status != 409)
        .map(|l| l.range.map(|(a, b, _)| b - a + 1).unwrap())
        .sum();
    assert_eq!(sent, total + 1, "{log:#?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The network cuts a segment in the middle (a relay between client and nginx passes half
/// of the first segment, then closes both sides). nginx keeps what reached the file; the
/// client retries, asks what the server holds and sends only the rest of that segment.
#[test]
fn a_cut_segment_is_resumed_where_the_server_stopped() {
    let (mut env, _) = start(|_| None);
    let relay = Relay::start(
        format!("127.0.0.1:{}", env.port()).parse().unwrap(),
        Spoil::CutFirstSegment,
    );
    let data = test_data((2 << 20) + 3, 64);
    let total = data.len() as u64;
    let (dir, file) = write_file("cut.bin", &data);
    let size = 512u64 << 10;
    let run = run_client(
        &url(relay.port()),
        &file,
        &["--segment-size", "512k", "--parallel", "2"],
    );
    assert_one_handoff(&env, &run, &data);
    assert!(run.stderr.contains("retry 1/"), "{run}");
    let spoiled = relay.spoiled().expect("the relay cut no segment");
    let range = spoiled.range.expect("the cut request had a range");
    let (a, rest) = range.trim_start_matches("bytes ").split_once('-').unwrap();
    let (b, _) = rest.split_once('/').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    let kept = spoiled.forwarded as u64;
    assert!(kept > 0);

    let log = client_requests(&mut env);
    let cut: Vec<&Logged> = log
        .iter()
        .filter(|l| l.range == Some((a, b, total)))
        .collect();
    assert_eq!(
        cut.len(),
        1,
        "the cut segment is not sent whole again: {log:#?}"
    );
    assert!(cut[0].status >= 400, "{log:#?}");
    // The rest of the cut segment went once, from where the server's report said: nginx
    // keeps what reached the file, at most the `kept` bytes the relay let through (bytes
    // still in nginx's read buffer at the cut are not on disk).
    let accepted = accepted_segments(&log);
    let resent: Vec<&(u64, u64)> = accepted.iter().filter(|&&(x, y)| x > a && y == b).collect();
    assert_eq!(resent.len(), 1, "{log:#?}");
    let resumed_at = resent[0].0;
    assert!(
        resumed_at <= a + kept,
        "the server claims {} bytes of the cut segment, the relay passed {kept}",
        resumed_at - a
    );
    let mut expected: Vec<(u64, u64)> = pieces(&[(0, total - 1)], size)
        .into_iter()
        .filter(|&p| p != (a, b))
        .collect();
    expected.push((resumed_at, b));
    expected.sort_unstable();
    assert_eq!(
        accepted, expected,
        "every other segment once, the cut one resumed: {log:#?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A 4xx is final: no retries, exit status 1, the server's answer on stdout. Two cases: a
/// location without `upload_resumable` (a 4xx to the status query), and a session that holds a
/// file of another size (the status query says so; no segment is sent).
#[test]
fn refusals_are_not_retried() {
    let backend = backend::spawn("127.0.0.1:0");
    let body = "access_log {{PREFIX}}/client.log client;\n".to_string()
        + r#"
location /plain { upload_pass @backend; upload_store {{PREFIX}}/store 1; }
"# + &upload_server("");
    let nginx = Nginx::builder()
        .http(LOG_FORMAT)
        .backend(&backend)
        .start(&body);
    let mut env = UploadEnv { nginx, backend };
    let data = test_data(6_000, 65);
    let (dir, file) = write_file("refused.bin", &data);

    let run = run_client(
        &format!("http://127.0.0.1:{}/plain", env.port()),
        &file,
        &["--session-id", "refused1"],
    );
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("status query refused: 4"), "{run}");
    assert!(!run.stderr.contains("retry"), "{run}");
    assert!(
        !run.stdout.is_empty(),
        "the refusal's body goes to stdout: {run}"
    );

    let other = test_data(5_000, 66);
    let r = env.post(&Segment::piece("mismatch1", &other, 0, 999));
    assert_progress(&r, "0-999/5000");
    let run = run_client(&url(env.port()), &file, &["--session-id", "mismatch1"]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr
            .contains("holds a file of 5000 bytes, this file has 6000"),
        "{run}"
    );
    assert!(env.backend.requests().is_empty());

    // One status query each, nothing else: the refusal (the module answers 405 there) and
    // the query that found the other size.
    let log = client_requests(&mut env);
    assert_eq!(log.len(), 2, "{log:#?}");
    assert!(log.iter().all(|l| l.range.is_none()), "{log:#?}");
    assert!((400..500).contains(&log[0].status), "{log:#?}");
    assert_eq!(log[1].status, 200, "{log:#?}");
    let _ = std::fs::remove_dir_all(dir);
}
