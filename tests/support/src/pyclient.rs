//! Running the Python client (`clients/python/ngx_upload_client.py`) as a subprocess.

use crate::locate::workspace_root;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a client run may take before the test calls it hung.
const CLIENT_DEADLINE: Duration = Duration::from_secs(180);

pub fn client_dir() -> PathBuf {
    workspace_root().join("clients/python")
}

/// What a client run left.
pub struct ClientRun {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl std::fmt::Display for ClientRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

/// Runs `python3 ngx_upload_client.py URL FILE --header 'X-Client: python' ARGS…`; fast
/// retries so the tests do not sleep long.
pub fn run_client(url: &str, file: &Path, args: &[&str]) -> ClientRun {
    let mut child = Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .arg(client_dir().join("ngx_upload_client.py"))
        .arg(url)
        .arg(file)
        .args(["--header", "X-Client: python", "--backoff", "0.05"])
        .args(["--timeout", "30"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); the client needs Python 3.8+ (scripts/setup.sh)")
        });
    // Drain both pipes while waiting, so a chatty client cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).map(|_| v)
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).map(|_| v)
    });
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the client") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = ClientRun {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap().unwrap_or_default(),
        stderr: String::from_utf8_lossy(&err.join().unwrap().unwrap_or_default()).into_owned(),
    };
    assert!(
        status.is_some(),
        "the client did not finish within {CLIENT_DEADLINE:?}:\n{run}"
    );
    run
}
