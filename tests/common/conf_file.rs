//! Running nginx on a whole configuration file from `nginx-conf/` (the harness's [`Nginx`]
//! builds its own skeleton around a server body): placeholders filled in, `daemon off` and,
//! as root, `user root` added on the command line, stopped with QUIT when dropped.

#![allow(dead_code)]

use crate::common::{
    children_of, free_port, fresh_dir, module_path, nginx_binary, running_as_root,
};
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Values for the placeholders of `nginx-conf/*.conf` (and `{{DEMO}}`, the browser demo's
/// directory in this repository).
#[derive(Debug, Clone)]
pub struct Placeholders {
    pub prefix: PathBuf,
    pub listen_port: u16,
    pub backend: String,
    /// `{{CERT}}` and `{{KEY}}`.
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl Placeholders {
    /// A fresh prefix, a free port, and `backend` as `{{BACKEND}}`.
    pub fn new(backend: &str) -> Self {
        Placeholders {
            prefix: fresh_dir("example"),
            listen_port: free_port(),
            backend: backend.to_string(),
            cert: None,
        }
    }

    /// `text` with every placeholder replaced; panics naming one it does not know.
    pub fn fill(&self, text: &str, name: &str) -> String {
        let mut out = text
            .replace("{{MODULE}}", &module_path().display().to_string())
            .replace("{{PREFIX}}", &self.prefix.display().to_string())
            .replace("{{LISTEN}}", &format!("127.0.0.1:{}", self.listen_port))
            .replace("{{BACKEND}}", &self.backend)
            .replace(
                "{{DEMO}}",
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("demo")
                    .display()
                    .to_string(),
            );
        if let Some((cert, key)) = &self.cert {
            out = out
                .replace("{{CERT}}", &cert.display().to_string())
                .replace("{{KEY}}", &key.display().to_string());
        }
        if let Some(at) = out.find("{{") {
            let end = out[at..].find("}}").map_or(out.len(), |e| at + e + 2);
            panic!(
                "{name} has a placeholder the tests do not fill: {}",
                &out[at..end]
            );
        }
        out
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost, made with the `openssl` command in
/// `dir`: `(cert.pem, key.pem)`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let output = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): the TLS example needs the openssl command")
        });
    assert!(
        output.status.success(),
        "openssl req failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

/// The arguments that make a deployment config run under a test: in the foreground, and as
/// root when the test runs as root (nginx would switch to nobody, who cannot write the
/// prefix). Only what the file does not set itself.
fn global_directives(conf: &str) -> String {
    let sets = |directive: &str| {
        conf.lines()
            .any(|l| l.trim_start().starts_with(&format!("{directive} ")))
    };
    let mut g = String::new();
    if !sets("daemon") {
        g.push_str("daemon off;");
    }
    if running_as_root() && !sets("user") {
        g.push_str(" user root;");
    }
    g
}

/// nginx running a whole configuration file.
pub struct ConfNginx {
    child: Option<Child>,
    pub prefix: PathBuf,
    pub port: u16,
}

impl ConfNginx {
    /// Fills `conf_file`'s placeholders from `values` and starts nginx on it; waits until it
    /// listens on `values.listen_port`.
    pub fn start(conf_file: &Path, values: &Placeholders) -> ConfNginx {
        let name = conf_file.display().to_string();
        let text = fs::read_to_string(conf_file).unwrap_or_else(|e| panic!("read {name}: {e}"));
        let filled = values.fill(&text, &name);
        let prefix = values.prefix.clone();
        let path = prefix.join("nginx.conf");
        fs::write(&path, &filled).expect("write nginx.conf");
        let g = global_directives(&filled);
        let mut cmd = Command::new(nginx_binary());
        cmd.arg("-p").arg(&prefix).arg("-c").arg(&path);
        cmd.arg("-e").arg(prefix.join("error.log"));
        if !g.is_empty() {
            cmd.arg("-g").arg(&g);
        }
        let stderr = fs::File::create(prefix.join("stderr.log")).expect("create stderr.log");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nginx: {e}"));
        let port = values.listen_port;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx on {name} exited with {status}:\n{}\n{}",
                    fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default(),
                    fs::read_to_string(prefix.join("error.log")).unwrap_or_default()
                );
            }
            // The pid file tells our nginx from another process that took the port.
            let pid_written = fs::read_to_string(prefix.join("nginx.pid"))
                .is_ok_and(|p| p.trim() == child.id().to_string());
            if pid_written && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nginx on {name} did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ConfNginx {
            child: Some(child),
            prefix,
            port,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.prefix.join(rel)
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }

    /// QUIT, wait; panics if nginx logged `[alert]`, `[crit]` or `[emerg]`.
    pub fn stop_and_check(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let quit = matches!(child.try_wait(), Ok(Some(_)));
        if !quit {
            for pid in children_of(child.id()) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.error_log();
        let serious: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["[alert]", "[crit]", "[emerg]"]
                    .iter()
                    .any(|s| l.contains(s))
            })
            .collect();
        assert!(
            quit && serious.is_empty(),
            "nginx in {} {}:\n{}",
            self.prefix.display(),
            if quit {
                "logged serious errors"
            } else {
                "did not quit on SIGQUIT"
            },
            serious.join("\n")
        );
    }
}

impl Drop for ConfNginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(mut child) = self.child.take() {
                for pid in children_of(child.id()) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            eprintln!(
                "nginx prefix kept for inspection: {}\n--- error.log ---\n{}",
                self.prefix.display(),
                self.error_log()
            );
            return;
        }
        self.stop_and_check();
        let _ = fs::remove_dir_all(&self.prefix);
    }
}
