//! A full disk under `upload_store`: the segment that hits it is answered `507 Insufficient Storage` with an
//! error_log line, the state claims only bytes really in the file, and the upload resumes from
//! the server's report once there is space again.
//!
//! The store is a small tmpfs mounted for the test, so this needs root (as the test suite runs
//! on CI); where mounting is not allowed the test says so and does nothing.

use ngx_upload_test_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// nginx whose data store (`store`) is a tmpfs of `size`; `None` (the test says it is
/// skipped) where mounting is not allowed.
fn start_with_small_store(size: &str) -> Option<(UploadEnv, SmallDisk)> {
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server(""),
    );
    let Some(disk) = SmallDisk::mount(&env.nginx.path("store"), size) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); disk-full not tested");
        return None;
    };
    Some((env, disk))
}

#[test]
fn a_full_disk_answers_507_and_the_upload_resumes_when_space_returns() {
    // The data store fills up; the state store stays writable.
    let Some((env, disk)) = start_with_small_store("3m") else {
        return;
    };
    let data = test_data(8 << 20, 121);
    let id = "diskfull1";
    let last = data.len() - 1;
    assert_eq!(
        env.post(&Segment::piece(id, &data, 0, (2 << 20) - 1))
            .status,
        201
    );
    // 2 MiB more do not fit in the megabyte left.
    let r = env.expect_status(
        &Segment::piece(id, &data, 2 << 20, (4 << 20) - 1).to_request("/upload"),
        507,
        &["No space left on device"],
    );
    assert!(r.status == 507);
    // Its claim on 2-4 MiB goes when nginx frees it, maybe after the answer.
    env.nginx.wait_idle();
    // What the session claims is really in the file.
    let report = env.report(id);
    let (first, held) = single_range(&report);
    assert_eq!(first, 0, "{report}");
    assert!(held + 1 >= 2 << 20, "lost stored bytes: {report}");
    let stored = std::fs::read(env.stored_path(id)).unwrap();
    assert_bytes_eq(&stored[..=held], &data[..=held], "bytes the state claims");
    eprintln!("after the full disk the session holds {report}");

    // Space returns: the client resumes from the report.
    disk.grow("32m");
    let r = env.post(&Segment::piece(id, &data, held + 1, last));
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
    drop(disk);
}

/// The last write of a segment runs on the thread pool, with the segment's record after it in
/// the same job: when that write finds the disk full, the answer is the same 507, and nothing
/// of the segment is recorded.
#[test]
fn a_small_segment_that_finds_the_disk_full_records_nothing() {
    let Some((env, disk)) = start_with_small_store("1m") else {
        return;
    };
    const PIECE: usize = 64 << 10;
    let data = test_data(32 * PIECE, 122);
    let id = "diskfull2";
    let mut stored = 0;
    let (refused, log_offset) = loop {
        let log_offset = env.nginx.log_len();
        let r = env.post(&Segment::piece(id, &data, stored, stored + PIECE - 1));
        if r.status != 201 {
            break (r, log_offset);
        }
        stored += PIECE;
        assert!(stored < data.len(), "a megabyte of tmpfs took 2 MiB");
    };
    assert_eq!(refused.status, 507, "{refused}");
    env.nginx
        .assert_logged(log_offset, &["No space left on device"]);
    env.nginx.wait_idle();
    let report = env.report(id);
    let (first, held) = single_range(&report);
    assert_eq!((first, held + 1), (0, stored), "{report}");
    let file = std::fs::read(env.stored_path(id)).unwrap();
    assert_bytes_eq(&file[..stored], &data[..stored], "bytes the state claims");

    disk.grow("32m");
    for at in (stored..data.len()).step_by(PIECE) {
        let r = env.post(&Segment::piece(id, &data, at, at + PIECE - 1));
        let done = at + PIECE == data.len();
        if done {
            env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
        } else {
            assert_eq!(r.status, 201, "{r}");
        }
    }
    drop(disk);
}
