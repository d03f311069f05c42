//! Two segments of a new session that reach two workers at once: both are answered `201`
//! with the range they recorded, and both ranges must stay recorded.
//!
//! Found while testing the Python client (issue 6): under CPU contention a range the module
//! had acknowledged disappeared from the session, because a request that *created* the output
//! file started a fresh state even when another worker had meanwhile opened the same file and
//! recorded its range. Now a state names the output file it describes (inode and birth time),
//! and only a state naming another file is discarded.
//!
//! The window is the creator's time between `open(O_CREAT|O_EXCL)` and `flock`, so the test
//! runs many sessions from several threads at once to make a worker lose the CPU there; it
//! shows the loss within a few hundred sessions on a busy two-core machine, not on every run.

use ngx_upload_test_support::*;
use std::sync::Arc;

/// Sessions per client thread, and client threads.
const SESSIONS: usize = 150;
const THREADS: usize = 6;

#[test]
fn concurrent_first_segments_keep_every_acknowledged_range() {
    let env = UploadEnv::start_server(Nginx::builder().worker_processes(2), &upload_server(""));
    let port = env.port();
    // Two halves of all but the last byte: the file never completes, so no hand-off runs and
    // the report after both must hold both halves.
    let data = Arc::new(test_data(256 << 10, 91));
    let half = (data.len() - 1) / 2;
    let total = data.len();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let data = Arc::clone(&data);
            std::thread::spawn(move || {
                let mut losses = Vec::new();
                for n in 0..SESSIONS {
                    let id = format!("race{t:02}x{n:05}");
                    let send = |a: usize, b: usize| {
                        let data = Arc::clone(&data);
                        let id = id.clone();
                        std::thread::spawn(move || {
                            post_segment(port, "/upload", &Segment::piece(&id, &data, a, b))
                        })
                    };
                    let first = send(0, half - 1);
                    let second = send(half, total - 2);
                    let answers = [first.join().unwrap(), second.join().unwrap()];
                    let query = send_raw(
                        port,
                        &build_request(
                            "POST",
                            "/upload",
                            &[("X-Session-ID", &id), ("Content-Length", "0")],
                            None,
                        ),
                    );
                    let expected = format!("0-{}/{total}", total - 2);
                    if answers.iter().any(|r| r.status != 201)
                        || query.header("range") != Some(expected.as_str())
                    {
                        losses.push(format!(
                            "session {id}: answers {:?}, then the status query reports {:?}",
                            answers
                                .iter()
                                .map(|r| (r.status, r.text()))
                                .collect::<Vec<_>>(),
                            query.header("range")
                        ));
                    }
                }
                losses
            })
        })
        .collect();
    let losses: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        losses.is_empty(),
        "{} of {} sessions lost an acknowledged range:\n{}",
        losses.len(),
        SESSIONS * THREADS,
        losses.join("\n")
    );
}
