//! An nginx that can be killed whole (master and workers, SIGKILL) and started again on the same
//! prefix and port, as after a power cut of the service: what the module left on disk is all
//! the new nginx has. The harness's [`crate::Nginx`] removes its prefix when dropped, so this
//! keeps its own process.

use crate::errorlog::{read_log, serious_lines, tail};
use crate::locate::{module_path, nginx_binary};
use crate::prefix::{free_port, fresh_dir};
use crate::process::{Launch, Master, START_TIMEOUT, STOP_TIMEOUT};
use crate::procfs::{children_of, wait_process_state};
use crate::skeleton::Skeleton;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// nginx with the module, restartable on its prefix.
pub struct CrashNginx {
    prefix: PathBuf,
    port: u16,
    master: Option<Master>,
    /// `worker_processes`.
    workers: u32,
    /// error.log lines holding one of these do not fail the final check.
    tolerated: Vec<String>,
}

impl CrashNginx {
    /// Starts nginx with `skeleton` around `server_body` in a fresh prefix.
    pub fn start(skeleton: &Skeleton, server_body: &str) -> CrashNginx {
        nginx_binary();
        module_path();
        let prefix = fresh_dir("crash");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = port_outside_ephemeral_range();
            let conf = skeleton.render(&prefix, port, server_body);
            fs::write(prefix.join("nginx.conf"), &conf).expect("write nginx.conf");
            let mut nginx = CrashNginx {
                prefix: prefix.clone(),
                port,
                master: None,
                workers: skeleton.worker_processes,
                tolerated: vec!["exited on signal 9".to_string()],
            };
            match nginx.spawn() {
                Ok(()) => return nginx,
                Err(why) if why.contains("Address already in use") && attempt < 5 => {
                    nginx.prefix = PathBuf::new(); // keep the prefix for the next attempt
                    continue;
                }
                Err(why) => panic!("nginx did not start: {why}\n--- nginx.conf ---\n{conf}"),
            }
        }
    }

    /// Runs the nginx binary on the prefix and waits until it listens with its workers.
    fn spawn(&mut self) -> Result<(), String> {
        let mut master = Launch::new(
            &nginx_binary(),
            &self.prefix,
            &self.prefix.join("nginx.conf"),
        )
        .append_stderr()
        .spawn()
        .map_err(|e| format!("cannot run nginx: {e}"))?;
        match master.wait_ready(self.port, self.workers, START_TIMEOUT) {
            Ok(_) => {
                self.master = Some(master);
                Ok(())
            }
            Err(why) => {
                master.kill_tree();
                Err(format!(
                    "{why}\n--- error.log (end) ---\n{}",
                    tail(&self.error_log(), 20)
                ))
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.prefix.join(rel)
    }

    pub fn master_pid(&self) -> u32 {
        self.master.as_ref().map_or(0, Master::pid)
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.master_pid())
    }

    pub fn error_log(&self) -> String {
        read_log(&self.prefix.join("error.log"))
    }

    /// SIGKILLs one worker (the master starts another); returns whether there was one.
    pub fn kill_worker(&self, pick: u64) -> Option<u32> {
        let pids = self.worker_pids();
        if pids.is_empty() {
            return None;
        }
        let pid = pids[(pick % pids.len() as u64) as usize];
        // SAFETY: kill has no memory-safety preconditions; pid is a child of our nginx.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        Some(pid)
    }

    /// SIGKILLs the master and every worker at once and waits until all are gone.
    pub fn kill_all(&mut self) {
        let Some(mut master) = self.master.take() else {
            return;
        };
        // Stop the master first: a master forking a worker while we list its children would
        // leave that worker running, orphaned, holding the listening socket.
        master.signal(libc::SIGSTOP);
        wait_process_state(master.pid(), &["T", "t"]);
        let workers = children_of(master.pid());
        for pid in workers.iter().copied().chain([master.pid()]) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = master.wait();
        for pid in workers {
            wait_process_state(pid, &["Z"]);
        }
    }

    /// Starts nginx again on the same prefix, configuration and port (retrying while the port
    /// is still held by a dying process).
    pub fn restart(&mut self) {
        assert!(self.master.is_none(), "nginx is still running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(why) if Instant::now() < deadline && why.contains("Address already in use") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(why) => panic!("nginx did not restart on {}: {why}", self.prefix.display()),
            }
        }
    }

    /// Lines at `[alert]`, `[crit]` or `[emerg]` not covered by a tolerated needle.
    pub fn serious_log_lines(&self) -> Vec<String> {
        serious_lines(&self.error_log(), &self.tolerated)
    }

    /// Graceful stop (QUIT, then KILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut master) = self.master.take() {
            master.quit(STOP_TIMEOUT);
        }
    }
}

impl Drop for CrashNginx {
    fn drop(&mut self) {
        self.stop();
        if self.prefix.as_os_str().is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "nginx prefix kept for inspection: {}\n--- end of error.log ---\n{}",
                self.prefix.display(),
                tail(&self.error_log(), 40)
            );
        } else {
            let _ = fs::remove_dir_all(&self.prefix);
        }
    }
}

/// A free port on 127.0.0.1 below the kernel's ephemeral range. While nginx is down, clients
/// retrying `connect` to an ephemeral port can be given that very port as their source and
/// connect to themselves (TCP simultaneous open), holding the port nginx must bind again.
fn port_outside_ephemeral_range() -> u16 {
    let first_ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if first_ephemeral <= 11_000 {
        return free_port();
    }
    let span = u64::from(first_ephemeral - 10_000);
    let mut pick = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
    for _ in 0..200 {
        pick = pick
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 10_000 + ((pick >> 33) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}
