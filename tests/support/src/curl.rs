//! `curl --http2-prior-knowledge`: the HTTP/2 client of the tests (h2c on 127.0.0.1).

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::prefix::fresh_dir;

/// What curl got: the final answer (after any 1xx).
pub struct CurlAnswer {
    pub status: u16,
    /// `%{http_version}`: `2` for HTTP/2.
    pub http_version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Runs `curl -sS --http2-prior-knowledge` with `args` against `uri` on 127.0.0.1:`port`,
/// standard input from `stdin` if given; panics with curl's words if it fails.
pub fn curl_h2(port: u16, uri: &str, args: &[String], stdin: Option<&Path>) -> CurlAnswer {
    let dir = fresh_dir("curl-h2");
    let (head_path, body_path) = (dir.join("head"), dir.join("body"));
    let output = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "60"])
        .arg("-D")
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{uri}"))
        .stdin(match stdin {
            Some(path) => Stdio::from(std::fs::File::open(path).expect("curl's standard input")),
            None => Stdio::null(),
        })
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "the HTTP/2 tests need the `curl` binary, which is not installed: \
             run scripts/setup.sh (it installs curl) or `apt-get install curl`"
        ),
        Err(e) => panic!("cannot run curl: {e}"),
    };
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl {args:?} {uri} failed ({}): {}{written}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut fields = written.split_whitespace();
    let status = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = fields.next().unwrap_or_default().to_string();
    let head = std::fs::read_to_string(&head_path).unwrap_or_default();
    // -D holds every head (1xx ones too): keep the last.
    let last = head
        .split("\r\n\r\n")
        .filter(|h| !h.trim().is_empty())
        .last()
        .unwrap_or_default();
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&body_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    CurlAnswer {
        status,
        http_version,
        headers,
        body,
    }
}
