//! Body bytes reach the file in `upload_buffer_size` pieces, one `pwritev` each, however small
//! the pieces the client sends: checked by tracing the worker's system calls with strace.

use ngx_upload_test_support::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn a_segment_is_written_once_per_upload_buffer_size() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: strace is not installed (scripts/setup.sh installs it)");
        return;
    }
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server("upload_buffer_size 256k;"),
    );
    let worker = env.nginx.worker_pids()[0];
    let trace = env.nginx.path("strace.out");
    let mut strace = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=pwritev,pwrite64,write,writev",
            "-o",
        ])
        .arg(&trace)
        .args(["-p", &worker.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // strace is attached once it traces every thread of the worker, and the worker answers a
    // request it traced.
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
            let text = std::fs::read_to_string(&trace).unwrap_or_default();
            if text.contains("HTTP/1.1 ") {
                Ok(())
            } else {
                Err(format!("the trace so far:\n{text}"))
            }
        },
    );

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

    // SAFETY: signalling our own child.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let _ = strace.wait();
    let _ = strace
        .stderr
        .take()
        .map(|e| BufReader::new(e).lines().count());
    let text = std::fs::read_to_string(&trace).unwrap();
    let data_writes: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("pwritev("))
        .filter_map(|l| l.rsplit("= ").next()?.trim().parse().ok())
        .collect();
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
