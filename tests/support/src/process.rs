//! Running an nginx master the way every harness here does (the tests' [`crate::Nginx`], the
//! whole-file [`crate::conf_file::ConfNginx`], the restartable [`crate::crash::CrashNginx`],
//! the benchmark's nginx): `nginx -p PREFIX -c CONF -e PREFIX/error.log` with stderr in
//! `PREFIX/stderr.log`, ready once it listens with its workers forked, stopped with QUIT, or
//! killed with its workers.

use crate::procfs::children_of;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long nginx may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nginx may take to exit after QUIT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run an nginx binary on a prefix directory.
pub struct Launch {
    command: Command,
    prefix: PathBuf,
    append_stderr: bool,
}

impl Launch {
    /// `nginx -p prefix -c conf -e prefix/error.log`, stdin and stdout closed.
    pub fn new(nginx: &Path, prefix: &Path, conf: &Path) -> Launch {
        let mut command = Command::new(nginx);
        command
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        Launch {
            command,
            prefix: prefix.to_path_buf(),
            append_stderr: false,
        }
    }

    /// `-g directives`: main-context directives the configuration file does not hold.
    pub fn globals(mut self, directives: &str) -> Launch {
        self.command.arg("-g").arg(directives);
        self
    }

    /// Appends to `stderr.log` instead of replacing it (a restart on the same prefix keeps what
    /// the earlier runs said).
    pub fn append_stderr(mut self) -> Launch {
        self.append_stderr = true;
        self
    }

    /// The command, for what a harness adds to it (a `pre_exec` hook, say).
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Starts the master; it is not serving yet (see [`Master::wait_ready`]).
    pub fn spawn(mut self) -> io::Result<Master> {
        let path = self.prefix.join("stderr.log");
        let stderr = if self.append_stderr {
            fs::OpenOptions::new().create(true).append(true).open(&path)
        } else {
            fs::File::create(&path)
        }
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let child = self.command.stderr(Stdio::from(stderr)).spawn()?;
        Ok(Master {
            child,
            prefix: self.prefix,
        })
    }
}

/// A running nginx master process, and through it its workers.
pub struct Master {
    child: Child,
    prefix: PathBuf,
}

impl Master {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// Pids of the worker processes (and any other children, such as a cache manager).
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// How the master ended, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` to the master.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
    }

    /// Waits until the master listens on 127.0.0.1:`port` and has forked at least `workers`
    /// worker processes; returns the pids of its children. The master writes its pid file
    /// after binding the listening sockets: checking it tells this nginx from another process
    /// that took the port. The master listens before it forks its workers: a caller that
    /// looks at them (or traces one) right after the start must find them all.
    pub fn wait_ready(
        &mut self,
        port: u16,
        workers: u32,
        timeout: Duration,
    ) -> Result<Vec<u32>, String> {
        let deadline = Instant::now() + timeout;
        let pid = self.pid();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Some(status) = self.exit_status() {
                return Err(format!("nginx exited with {status}"));
            }
            let pid_written = fs::read_to_string(self.prefix.join("nginx.pid"))
                .is_ok_and(|p| p.trim() == pid.to_string());
            let listening = pid_written
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            if listening {
                let children = children_of(pid);
                if children.len() >= workers as usize {
                    return Ok(children);
                }
            }
            if Instant::now() > deadline {
                return Err(if listening {
                    format!(
                        "nginx did not fork its {workers} worker processes within {timeout:?} \
                         (children: {:?})",
                        children_of(pid)
                    )
                } else {
                    format!("127.0.0.1:{port} did not accept connections within {timeout:?}")
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop: QUIT, then waits up to `timeout` for the master to exit; if it does
    /// not, kills it and its workers. Whether it exited by itself.
    pub fn quit(&mut self, timeout: Duration) -> bool {
        self.signal(libc::SIGQUIT);
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break,
            }
        }
        self.kill_tree();
        false
    }

    /// SIGKILLs the workers and the master at once, and reaps the master.
    pub fn kill_tree(&mut self) {
        for pid in children_of(self.pid()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the master to exit (after a signal that ends it).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }
}

/// Whether the nginx on `prefix` failed because its port was taken (error.log or stderr.log
/// says so): another process took the port between [`crate::free_port`] and nginx's bind.
pub fn port_in_use(prefix: &Path) -> bool {
    ["error.log", "stderr.log"].iter().any(|log| {
        fs::read(prefix.join(log))
            .is_ok_and(|l| String::from_utf8_lossy(&l).contains("Address already in use"))
    })
}
