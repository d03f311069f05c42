//! The resumable protocol: segments with `X-Content-Range`/`X-Session-ID` (or the plain
//! names), `201 Created` with the ranges held until the file is complete, then the hand-off of
//! the finished file to `upload_pass`.

use ngx_upload_test_support::*;
use std::os::unix::fs::PermissionsExt;

/// Sends `order` (indexes into `cuts`) one by one; checks every 201 against a model and the
/// last answer as the hand-off.
fn upload_in_order(
    env: &UploadEnv,
    id: &str,
    data: &[u8],
    cuts: &[(usize, usize)],
    order: &[usize],
) {
    let total = data.len() as u64;
    let mut sent = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let (a, b) = cuts[i];
        let r = env.post(&Segment::piece(id, data, a, b));
        sent.push((a as u64, b as u64));
        if n + 1 < order.len() {
            assert_progress(&r, &expected_report(&sent, total));
            assert!(
                env.backend.requests().is_empty(),
                "handed off before the file was complete (after segment {a}-{b})"
            );
        } else {
            env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), data);
        }
    }
}

#[test]
fn single_segment_is_handed_off_at_once() {
    let env = UploadEnv::start("");
    let data = test_data(100_000, 1);
    let r = env.post(&Segment::piece("single1", &data, 0, data.len() - 1));
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path("single1")), &data);
    // upload_store_access user:rw group:r
    let mode = std::fs::metadata(env.stored_path("single1"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o640,
        "mode of the stored file is {:o}",
        mode & 0o777
    );
}

#[test]
fn first_segment_answers_201_with_the_range() {
    let env = UploadEnv::start("");
    let data = test_data(511_920, 2);
    let r = env.post(&Segment::piece("seed0001", &data, 0, 51_200));
    assert_progress(&r, "0-51200/511920");
    assert!(env.backend.requests().is_empty());
    let stored = std::fs::read(env.stored_path("seed0001")).expect("the session's output file");
    assert!(
        stored.len() >= 51_201,
        "output file holds {} bytes",
        stored.len()
    );
    assert_bytes_eq(
        &stored[..51_201],
        &data[..51_201],
        "the first segment on disk",
    );
}

#[test]
fn segments_in_order() {
    let env = UploadEnv::start("");
    let data = test_data(511_920, 3);
    let cuts = segments(data.len(), 51_200);
    let order: Vec<usize> = (0..cuts.len()).collect();
    upload_in_order(&env, "inorder1", &data, &cuts, &order);
}

#[test]
fn segments_in_reverse_order() {
    let env = UploadEnv::start("");
    let data = test_data(300_001, 4);
    let cuts = segments(data.len(), 40_000);
    let order: Vec<usize> = (0..cuts.len()).rev().collect();
    upload_in_order(&env, "reverse1", &data, &cuts, &order);
}

#[test]
fn segments_shuffled() {
    let env = UploadEnv::start("");
    let data = test_data(250_000, 5);
    let cuts = segments(data.len(), 17_000);
    let mut order: Vec<usize> = (0..cuts.len()).collect();
    Rng::new(0x5eed).shuffle(&mut order);
    upload_in_order(&env, "shuffle1", &data, &cuts, &order);
}

#[test]
fn gaps_are_reported_and_merged_when_filled() {
    let env = UploadEnv::start("");
    let data = test_data(1000, 6);
    let id = "gaps0001";
    assert_progress(&env.post(&Segment::piece(id, &data, 0, 99)), "0-99/1000");
    assert_progress(
        &env.post(&Segment::piece(id, &data, 200, 299)),
        "0-99/1000,200-299/1000",
    );
    assert_progress(
        &env.post(&Segment::piece(id, &data, 900, 999)),
        "0-99/1000,200-299/1000,900-999/1000",
    );
    assert_progress(
        &env.post(&Segment::piece(id, &data, 100, 199)),
        "0-299/1000,900-999/1000",
    );
    let r = env.post(&Segment::piece(id, &data, 300, 899));
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
}

#[test]
fn plain_header_names_work_like_x_headers() {
    let env = UploadEnv::start("");
    let data = test_data(10_000, 7);
    let id = "plain001";
    let first = Segment {
        style: HeaderStyle::Plain,
        ..Segment::piece(id, &data, 0, 4_999)
    };
    assert_progress(&env.post(&first), "0-4999/10000");
    let second = Segment {
        style: HeaderStyle::Plain,
        ..Segment::piece(id, &data, 5_000, 9_999)
    };
    let r = env.post(&second);
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
}

#[test]
fn four_mib_in_256_kib_segments() {
    let env = UploadEnv::start("");
    let data = test_data(4 << 20, 8);
    let cuts = segments(data.len(), 256 << 10);
    assert_eq!(cuts.len(), 16);
    let order: Vec<usize> = (0..cuts.len()).collect();
    upload_in_order(&env, "big4mib1", &data, &cuts, &order);
}

/// Eight clients upload the segments of one session at once, over separate connections, to
/// two workers: every segment lands, and exactly one request (the last to record its range)
/// hands the file off.
#[test]
fn parallel_segments_of_one_session() {
    let env = UploadEnv::start_server(Nginx::builder().worker_processes(2), &upload_server(""));
    let data = std::sync::Arc::new(test_data(2 << 20, 9));
    let cuts = segments(data.len(), 32 << 10);
    assert_eq!(cuts.len(), 64);
    let port = env.port();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let data = std::sync::Arc::clone(&data);
            let mine: Vec<(usize, usize)> = cuts.iter().copied().skip(t).step_by(8).collect();
            std::thread::spawn(move || {
                mine.into_iter()
                    .map(|(a, b)| {
                        post_segment(port, "/upload", &Segment::piece("parallel", &data, a, b))
                    })
                    .collect::<Vec<Response>>()
            })
        })
        .collect();
    let responses: Vec<Response> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    assert_eq!(responses.len(), 64);
    let (done, progress): (Vec<&Response>, Vec<&Response>) =
        responses.iter().partition(|r| r.status == 200);
    assert_eq!(
        done.len(),
        1,
        "exactly one segment should complete the upload; statuses: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &progress {
        assert_eq!(r.status, 201, "{r}");
        let range = r.header("range").unwrap_or_default();
        assert!(range.contains("/2097152"), "Range {range:?} of:\n{r}");
        assert_eq!(r.text(), range);
    }
    env.assert_handed_off(
        done[0],
        "f",
        "big.TXT",
        Some(&env.stored_path("parallel")),
        &data,
    );
}

/// A disposition without a field name still ends in a hand-off naming the complete file
/// (whatever field name the module picks).
#[test]
fn attachment_without_field_name_is_handed_off() {
    let env = UploadEnv::start("");
    let data = test_data(5_000, 10);
    let id = "noname01";
    let seg = |a, b| Segment {
        field_name: None,
        ..Segment::piece(id, &data, a, b)
    };
    assert_progress(&env.post(&seg(0, 2_499)), "0-2499/5000");
    let r = env.post(&seg(2_500, 4_999));
    assert_eq!(r.status, 200, "{r}");
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let fields = requests[0].fields().expect("a form");
    let path = fields
        .iter()
        .find(|f| f.name.ends_with(".path"))
        .unwrap_or_else(|| panic!("no *.path field: {fields:#?}"));
    assert_eq!(
        std::path::PathBuf::from(path.value_str()),
        env.stored_path(id)
    );
    assert_bytes_eq(
        &std::fs::read(env.stored_path(id)).unwrap(),
        &data,
        "handed-off file",
    );
    let name = fields
        .iter()
        .find(|f| f.name.ends_with(".name"))
        .expect("a *.name field");
    assert_eq!(name.value_str(), "big.TXT");
}

/// The session's output file is laid out by `upload_store` levels: the last character of the
/// id names the directory.
#[test]
fn sessions_are_stored_under_hashed_levels() {
    let env = UploadEnv::start("");
    let data = test_data(100, 11);
    for id in ["levels-a", "levels-b"] {
        assert_progress(&env.post(&Segment::piece(id, &data, 0, 9)), "0-9/100");
        let expected = env.nginx.path("store").join(&id[id.len() - 1..]).join(id);
        assert!(expected.is_file(), "{} missing", expected.display());
    }
}

/// Sending a segment again (a client retrying after a lost answer) is harmless.
#[test]
fn resending_a_segment_changes_nothing() {
    let env = UploadEnv::start("");
    let data = test_data(1000, 12);
    let id = "resend01";
    // A request gives up its claim on its bytes before it answers, so a resend goes in at once.
    assert_progress(&env.post(&Segment::piece(id, &data, 0, 99)), "0-99/1000");
    assert_progress(&env.post(&Segment::piece(id, &data, 0, 99)), "0-99/1000");
    assert_progress(&env.post(&Segment::piece(id, &data, 50, 149)), "0-149/1000");
    let r = env.post(&Segment::piece(id, &data, 150, 999));
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
}

/// A worker keeps a session's file open for the next segment. A file moved away meanwhile
/// (by the backend, or another node) is not written through that descriptor: the next segment
/// starts the session over in a new file, and the moved file keeps exactly what it had.
#[test]
fn a_file_moved_away_between_segments_is_not_written_again() {
    let env = UploadEnv::start("");
    let data = test_data(3000, 14);
    let id = "moved001";
    assert_progress(&env.post(&Segment::piece(id, &data, 0, 999)), "0-999/3000");
    let moved = env.nginx.path("moved-away");
    std::fs::rename(env.stored_path(id), &moved).unwrap();
    assert_progress(
        &env.post(&Segment::piece(id, &data, 1000, 1999)),
        "1000-1999/3000",
    );
    assert_bytes_eq(&std::fs::read(&moved).unwrap(), &data[..1000], "moved file");
    let stored = std::fs::read(env.stored_path(id)).unwrap();
    assert_bytes_eq(&stored[1000..2000], &data[1000..2000], "new file");
    // Removed rather than moved: the same.
    std::fs::remove_file(env.stored_path(id)).unwrap();
    assert_progress(
        &env.post(&Segment::piece(id, &data, 2000, 2999)),
        "2000-2999/3000",
    );
}

/// What a session recorded is on disk: a worker that dies between two segments loses
/// nothing, and the worker nginx starts in its place goes on with the session.
#[test]
fn a_session_survives_its_worker() {
    let mut env = UploadEnv::start("");
    env.nginx.tolerate_log("exited on signal 9");
    let data = test_data(3000, 13);
    let id = "survive1";
    assert_progress(&env.post(&Segment::piece(id, &data, 0, 999)), "0-999/3000");
    let killed = env.nginx.signal_workers(libc::SIGKILL);
    assert!(!killed.is_empty(), "no worker to kill");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = env.nginx.worker_pids();
        if !now.is_empty() && now.iter().all(|p| !killed.contains(p)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new worker after killing {killed:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_progress(
        &env.post(&Segment::piece(id, &data, 2000, 2999)),
        "0-999/3000,2000-2999/3000",
    );
    let r = env.post(&Segment::piece(id, &data, 1000, 1999));
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
}

/// A request gives up its claim on its segment's bytes once they are recorded, before it
/// answers, not when nginx frees it: with `lingering_close always` nginx keeps an answered
/// request until its client closes, and a client resending the segment at once on a new
/// connection (its answer seemed lost) must get 201, not 409 for bytes "in flight".
#[test]
fn an_answered_segment_claims_nothing_while_nginx_keeps_its_request() {
    let env = UploadEnv::start("lingering_close always;");
    let data = test_data(3000, 14);
    let id = "linger01";
    let mut held_open = Vec::new();
    for (first, last, report) in [(0, 999, "0-999/3000"), (1000, 1999, "0-1999/3000")] {
        let segment = Segment::piece(id, &data, first, last);
        let mut held = std::net::TcpStream::connect(("127.0.0.1", env.port())).unwrap();
        use std::io::{Read as _, Write as _};
        held.write_all(&segment.to_request("/upload")).unwrap();
        let mut answer = Vec::new();
        held.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        // Answered, its connection open: nginx lingers on it with the request.
        held_open.push(held);
        assert_progress(&env.post(&segment), report);
    }
    let r = env.post(&Segment::piece(id, &data, 2000, 2999));
    drop(held_open);
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
}

/// A worker at its descriptor limit goes on taking segments: it keeps upload files open
/// between requests only while its descriptor table has room, and gives the kept ones up when
/// an open finds none left.
#[test]
fn a_worker_short_of_descriptors_keeps_taking_segments() {
    let env = UploadEnv::start("");
    let worker = env.nginx.worker_pids()[0];
    let open_now = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .count() as u64;
    // Room for the connection of each request, a segment's files, and a few more.
    let limit = libc::rlimit {
        rlim_cur: open_now + 8,
        rlim_max: open_now + 8,
    };
    // SAFETY: prlimit on a process of ours, with a valid limit and no old-limit pointer.
    let set = unsafe {
        libc::prlimit(
            worker as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    let data = test_data(2000, 15);
    for session in 0..24 {
        let id = format!("short{session:03}");
        assert_progress(&env.post(&Segment::piece(&id, &data, 0, 999)), "0-999/2000");
    }
    for session in 0..24 {
        let id = format!("short{session:03}");
        let r = env.post(&Segment::piece(&id, &data, 1000, 1999));
        env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(&id)), &data);
        env.backend.clear();
    }
    let log = env.nginx.error_log();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// A worker does not hold a removed upload file open for long: it closes the descriptors it
/// keeps between segments once unused for a second (a timer, closing them on the thread pool),
/// though no request comes to reuse them.
#[test]
fn a_removed_file_is_not_held_open() {
    let env = UploadEnv::start("");
    let data = test_data(2000, 16);
    let id = "released1";
    assert_progress(&env.post(&Segment::piece(id, &data, 0, 999)), "0-999/2000");
    let stored = env.stored_path(id);
    std::fs::remove_file(&stored).unwrap();
    let worker = env.nginx.worker_pids()[0];
    let held = format!("{} (deleted)", stored.display());
    wait_for("the worker to close the removed file", WAIT_TIMEOUT, || {
        let open = procfs::open_files(worker);
        if open.contains(&held) {
            Err(format!("{open:?}"))
        } else {
            Ok(())
        }
    });
}
