//! The tests' nginx: the module loaded, one `server {}` on 127.0.0.1 around a test's body
//! ([`Skeleton`]), in a fresh prefix directory (`/tmp/ngx-upload-test-…`) holding its
//! `nginx.conf`, `error.log` and temp paths; removed when the test passes, kept (and printed)
//! when it fails. Its error.log must hold no `[alert]`, `[crit]` or `[emerg]` line when it
//! stops. `nginx -t` on the same skeleton.

use crate::errorlog::{read_log, serious_lines, tail};
use crate::locate::{module_path, nginx_binary};
use crate::prefix::{free_port, fresh_dir};
use crate::process::{port_in_use, Launch, Master, START_TIMEOUT, STOP_TIMEOUT};
use crate::procfs::{children_of, held_connections};
use crate::skeleton::Skeleton;
use crate::wait::{wait_for, WAIT_TIMEOUT};
use ngx_upload_backend::Backend;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Builds an [`Nginx`] with more than a server body.
#[derive(Debug, Clone, Default)]
pub struct NginxBuilder {
    skeleton: Skeleton,
    tolerated: Vec<String>,
}

impl NginxBuilder {
    pub fn worker_processes(mut self, n: u32) -> Self {
        self.skeleton.worker_processes = n;
        self
    }

    /// A line for the `http {}` block (`{{PREFIX}}`/`{{BACKEND}}` are substituted).
    pub fn http(mut self, line: &str) -> Self {
        self.skeleton.http_lines.push(line.to_string());
        self
    }

    /// A line for the main (top-level) context.
    pub fn main(mut self, line: &str) -> Self {
        self.skeleton.main_lines.push(line.to_string());
        self
    }

    /// Makes `{{BACKEND}}` stand for this backend.
    pub fn backend(mut self, backend: &Backend) -> Self {
        self.skeleton.backend = Some(backend.addr());
        self
    }

    /// Serves HTTP/2 over cleartext (prior knowledge) instead of HTTP/1.x: `http2 on;` on
    /// nginx 1.25.1 and later, `listen … http2` before.
    pub fn http2(mut self) -> Self {
        self.skeleton.http2 = true;
        self
    }

    /// Runs nginx without `load_module` (to test the harness itself).
    pub fn without_module(mut self) -> Self {
        self.skeleton.load_module = false;
        self
    }

    /// error.log lines holding `needle` do not fail the test when nginx stops, even at
    /// `[alert]`, `[crit]` or `[emerg]` level.
    pub fn tolerate_log(mut self, needle: &str) -> Self {
        self.tolerated.push(needle.to_string());
        self
    }

    pub fn skeleton(&self) -> &Skeleton {
        &self.skeleton
    }

    pub fn start(self, server_body: &str) -> Nginx {
        Nginx::start_with(self, server_body)
    }

    /// `nginx -t` on this skeleton around `server_body`; see [`nginx_t`].
    pub fn test_config(&self, server_body: &str) -> (bool, String) {
        nginx_binary();
        if self.skeleton.load_module {
            module_path();
        }
        let prefix = fresh_dir("conf-test");
        let conf = self.skeleton.render(&prefix, free_port(), server_body);
        let conf_path = prefix.join("nginx.conf");
        fs::write(&conf_path, &conf).expect("write nginx.conf");
        let (ok, output) = nginx_t(&conf_path);
        let _ = fs::remove_dir_all(&prefix);
        (ok, format!("{output}\n--- nginx.conf ---\n{conf}"))
    }
}

/// A running nginx (master and workers) serving one `server {}` on 127.0.0.1.
pub struct Nginx {
    master: Option<Master>,
    prefix: PathBuf,
    port: u16,
    tolerated: Vec<String>,
}

impl Nginx {
    pub fn builder() -> NginxBuilder {
        NginxBuilder::default()
    }

    /// Starts nginx with the module loaded and one server with `server_body`.
    pub fn start(server_body: &str) -> Nginx {
        Self::builder().start(server_body)
    }

    fn start_with(builder: NginxBuilder, server_body: &str) -> Nginx {
        // Find nginx and the module (or fail saying why) before making anything.
        let nginx = nginx_binary();
        if builder.skeleton.load_module {
            module_path();
        }
        let prefix = fresh_dir("test");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let conf = builder.skeleton.render(&prefix, port, server_body);
            let conf_path = prefix.join("nginx.conf");
            fs::write(&conf_path, &conf).expect("write nginx.conf");
            let error_log = prefix.join("error.log");
            let mut master = Launch::new(&nginx, &prefix, &conf_path)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", nginx.display()));
            let workers = builder.skeleton.worker_processes;
            match master.wait_ready(port, workers, START_TIMEOUT) {
                // nginx retries a bind that failed because another process held the port
                // for a moment, and may then serve: but its error.log has an [emerg] line,
                // which fails the test's log check. Start again on another port instead.
                Ok(_) if port_in_use(&prefix) && attempt < 5 => {
                    master.kill_tree();
                    let _ = fs::rename(&error_log, prefix.join(format!("error.log.{attempt}")));
                    continue;
                }
                Ok(_) => {
                    return Nginx {
                        master: Some(master),
                        prefix,
                        port,
                        tolerated: builder.tolerated.clone(),
                    }
                }
                Err(why) => {
                    master.kill_tree();
                    let log = fs::read_to_string(&error_log).unwrap_or_default();
                    let stderr = fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
                    let port_taken = port_in_use(&prefix);
                    if port_taken && attempt < 5 {
                        // Another test took the port between free_port() and nginx's bind.
                        let _ = fs::rename(&error_log, prefix.join(format!("error.log.{attempt}")));
                        continue;
                    }
                    // Everything worth seeing goes into the message.
                    let _ = fs::remove_dir_all(&prefix);
                    panic!(
                        "nginx did not start: {why}\n--- {} ---\n{log}\n--- stderr ---\n{stderr}\
                         \n--- nginx.conf ---\n{conf}",
                        error_log.display()
                    );
                }
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `{prefix}/{rel}`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.prefix.join(rel)
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.master.as_ref().map_or(0, Master::pid)
    }

    pub fn error_log(&self) -> String {
        read_log(&self.prefix.join("error.log"))
    }

    /// Current length of error.log, to look at what a request adds with [`Self::log_since`].
    pub fn log_len(&self) -> usize {
        fs::metadata(self.prefix.join("error.log"))
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// What error.log gained after it was `offset` bytes long.
    pub fn log_since(&self, offset: usize) -> String {
        let log = fs::read(self.prefix.join("error.log")).unwrap_or_default();
        String::from_utf8_lossy(log.get(offset..).unwrap_or_default()).into_owned()
    }

    /// Waits (up to 3 s) until error.log gained, after `offset`, a line holding one of
    /// `needles` (case-insensitive); returns that line, or `Err` with what was gained.
    pub fn wait_log_line(&self, offset: usize, needles: &[&str]) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let gained = self.log_since(offset);
            for line in gained.lines() {
                let lower = line.to_ascii_lowercase();
                if needles
                    .iter()
                    .any(|n| lower.contains(&n.to_ascii_lowercase()))
                {
                    return Ok(line.to_string());
                }
            }
            if Instant::now() > deadline {
                return Err(gained);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that error.log gained, after `offset`, a line holding one of `needles`.
    #[track_caller]
    pub fn assert_logged(&self, offset: usize, needles: &[&str]) -> String {
        match self.wait_log_line(offset, needles) {
            Ok(line) => line,
            Err(gained) => panic!(
                "error.log gained no line mentioning any of {needles:?}; it gained:\n{gained}"
            ),
        }
    }

    /// Lines at `[alert]`, `[crit]` or `[emerg]` not covered by a tolerated needle.
    pub fn serious_log_lines(&self) -> Vec<String> {
        serious_lines(&self.error_log(), &self.tolerated)
    }

    /// Lets error.log lines holding `needle` pass the check at stop.
    pub fn tolerate_log(&mut self, needle: &str) {
        self.tolerated.push(needle.to_string());
    }

    /// Pids of the worker processes (children of the master).
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// The client connections nginx's workers hold open, described (empty when idle).
    pub fn client_connections(&self) -> Vec<String> {
        self.worker_pids()
            .into_iter()
            .flat_map(|pid| held_connections(pid, self.port))
            .collect()
    }

    /// Waits until nginx holds no client connection: every request it served is over and
    /// freed, so the cleanups of the requests' pools (where the module drops what a request
    /// held: its claim on a session, the files of a failed upload) have run. A test calls it
    /// after it has read the answers and closed its connections.
    #[track_caller]
    pub fn wait_idle(&self) {
        wait_for(
            "nginx to close its client connections (the requests' cleanups to run)",
            WAIT_TIMEOUT,
            || {
                let held = self.client_connections();
                if held.is_empty() {
                    Ok(())
                } else {
                    Err(held.join("; "))
                }
            },
        )
    }

    /// Sends `signal` to every worker; returns their pids.
    pub fn signal_workers(&self, signal: i32) -> Vec<u32> {
        let pids = self.worker_pids();
        for pid in &pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid as libc::pid_t, signal) };
        }
        pids
    }

    /// Sends `signal` to the master.
    pub fn signal_master(&self, signal: i32) {
        if let Some(master) = &self.master {
            master.signal(signal);
        }
    }

    /// Whether the master is still running.
    pub fn is_running(&mut self) -> bool {
        self.master.as_mut().is_some_and(Master::is_running)
    }

    /// Graceful shutdown: QUIT, then wait for the master to exit (KILL, of the workers too,
    /// after a timeout). Returns whether it exited in time by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut master) = self.master.take() else {
            return true;
        };
        if master.quit(STOP_TIMEOUT) {
            return true;
        }
        eprintln!(
            "nginx {} did not quit in {STOP_TIMEOUT:?}; killed it",
            master.pid()
        );
        false
    }

    /// Stops nginx and checks error.log; panics on `[alert]`/`[crit]`/`[emerg]` lines.
    pub fn stop_and_check(&mut self) {
        let quit_in_time = self.stop();
        let serious = self.serious_log_lines();
        if !serious.is_empty() || !quit_in_time {
            panic!(
                "nginx in {} {}:\n{}\n--- whole error.log ---\n{}",
                self.prefix.display(),
                if quit_in_time {
                    "logged serious errors"
                } else {
                    "did not quit on SIGQUIT"
                },
                serious.join("\n"),
                self.error_log()
            );
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.stop();
            eprintln!(
                "nginx test prefix kept for inspection: {}\n--- end of error.log ---\n{}",
                self.prefix.display(),
                tail(&self.error_log(), 40)
            );
            return;
        }
        // Panics (keeping the prefix) if error.log holds serious lines.
        self.stop_and_check();
        let _ = fs::remove_dir_all(&self.prefix);
    }
}

/// `nginx -t` on a whole configuration file; the prefix is the file's directory. Returns
/// whether the test passed, and nginx's output.
pub fn nginx_t(conf_path: &Path) -> (bool, String) {
    let prefix = conf_path.parent().expect("config file has a directory");
    let output = Command::new(nginx_binary())
        .arg("-t")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf_path)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .stdin(Stdio::null())
        .output()
        .expect("run nginx -t");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `nginx -t` on the usual skeleton (module loaded) around `server_body`.
pub fn nginx_t_server(server_body: &str) -> (bool, String) {
    Nginx::builder().test_config(server_body)
}
