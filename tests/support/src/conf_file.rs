//! Running nginx on a whole configuration file from `nginx-conf/` (the harness's
//! [`crate::Nginx`] builds its own skeleton around a server body): placeholders filled in,
//! `daemon off` and, as root, `user root` added on the command line, stopped with QUIT when
//! dropped.

use crate::errorlog::{read_log, serious_lines};
use crate::locate::{module_path, nginx_binary, running_as_root, workspace_root};
use crate::prefix::{free_port, fresh_dir};
use crate::process::{Launch, Master, START_TIMEOUT, STOP_TIMEOUT};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
                &workspace_root().join("demo").display().to_string(),
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
    master: Option<Master>,
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
        let mut launch = Launch::new(&nginx_binary(), &prefix, &path);
        if !g.is_empty() {
            launch = launch.globals(&g);
        }
        let mut master = launch
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nginx: {e}"));
        let port = values.listen_port;
        if master.wait_ready(port, 0, START_TIMEOUT).is_err() {
            if let Some(status) = master.exit_status() {
                panic!(
                    "nginx on {name} exited with {status}:\n{}\n{}",
                    read_log(&prefix.join("stderr.log")),
                    read_log(&prefix.join("error.log"))
                );
            }
            master.kill_tree();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            panic!("nginx on {name} did not listen on {addr} within {START_TIMEOUT:?}");
        }
        ConfNginx {
            master: Some(master),
            prefix,
            port,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.prefix.join(rel)
    }

    pub fn error_log(&self) -> String {
        read_log(&self.prefix.join("error.log"))
    }

    /// QUIT, wait; panics if nginx logged `[alert]`, `[crit]` or `[emerg]`.
    pub fn stop_and_check(&mut self) {
        let Some(mut master) = self.master.take() else {
            return;
        };
        let quit = master.quit(STOP_TIMEOUT);
        let serious = serious_lines(&self.error_log(), &[]);
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
            if let Some(mut master) = self.master.take() {
                master.kill_tree();
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
