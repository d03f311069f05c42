//! Reference digests of test data, from the coreutils tools (`md5sum`, `sha1sum`,
//! `sha256sum`, `sha512sum`): an implementation independent of the module's.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn run_digest_tool(tool: &str, arg: Option<&Path>, stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new(tool);
    if let Some(path) = arg {
        cmd.arg(path);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool} (coreutils): {e}"));
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let output = child.wait_with_output().expect("wait for the digest tool");
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    assert!(
        output.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{tool} printed {text:?}"
    );
    hex
}

/// The hex digest `tool` (`md5sum`, `sha1sum`, `sha256sum`, `sha512sum`) prints for `data`.
pub fn digest_of_bytes(tool: &str, data: &[u8]) -> String {
    run_digest_tool(tool, None, Some(data))
}

/// The hex digest `tool` prints for the file at `path`.
pub fn digest_of_file(tool: &str, path: &Path) -> String {
    run_digest_tool(tool, Some(path), None)
}
