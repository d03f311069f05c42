//! Starting and stopping nginx with the three endpoints, and reading its workers' CPU time and
//! memory from `/proc`.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Masters currently running, for the signal handler to stop them.
pub static LIVE_MASTERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// What every nginx of a benchmark run shares.
pub struct Setup {
    pub nginx: PathBuf,
    pub module: PathBuf,
    pub version: (u32, u32, u32),
    pub workers: u32,
    /// The benchmark's temp dir; each nginx gets a prefix below it.
    pub root: PathBuf,
    pub backend_port: u16,
    /// Extra lines for the `http` block (`--http`), e.g. `client_body_buffer_size 1m;`.
    pub http_lines: Vec<String>,
    /// `upload_buffer_size` of the module's location (`--upload-buffer`).
    pub upload_buffer: String,
}

/// `nginx -v` of `nginx`, as numbers.
pub fn nginx_version(nginx: &Path) -> Result<(u32, u32, u32), String> {
    let output = Command::new(nginx)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} -v: {e}", nginx.display()))?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    let version = text
        .split("nginx/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    let mut numbers = version.split('.').map(|n| n.parse::<u32>());
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Ok((a, b, c)),
        _ => Err(format!("cannot read the version in {text:?}")),
    }
}

/// A running nginx with the benchmark configuration.
pub struct Nginx {
    child: Option<Child>,
    pub prefix: PathBuf,
    /// HTTP/1.1 port.
    pub port: u16,
    /// HTTP/2 (h2c, prior knowledge) port, same locations.
    pub h2_port: u16,
    workers: Vec<u32>,
}

/// Locations served on both ports. `{{P}}` is the prefix.
const LOCATIONS: &str = r#"
# Answers with the worker's pid: the latency probe uses it to find the upload's worker.
location = /ping { return 200 "$pid\n"; }

# The ceiling: nginx reads the body and throws it away (ngx_http_discard_request_body, which
# the `return` answer runs). The answer goes out before the body is read; the connection is
# kept for the next request only once the whole body was read. lingering_time bounds how long
# nginx keeps discarding, 30 s by default: too short for a slow 1 GiB body.
location /discard {
    lingering_time 1h;
    lingering_timeout 60s;
    return 200;
}

# WebDAV PUT: nginx's own request-body-to-temp-file path, then a rename into the root; the
# temp dir is on the same filesystem so the rename is not a copy.
location /dav/ {
    root {{P}}/dav_root;
    dav_methods PUT DELETE;
    create_full_put_path on;
    client_body_temp_path {{P}}/dav_tmp;
}

# The module, resumable: segments are written at their offset in {{P}}/store/<session-id>.
location /upload {
    upload_resumable on;
    upload_store {{P}}/store;
    upload_state_store {{P}}/state;
    upload_pass @done;
    upload_buffer_size {{UPLOAD_BUFFER}};
    upload_set_form_field file.name "$upload_file_name";
    upload_set_form_field file.path "$upload_tmp_path";
    upload_aggregate_form_field file.size "$upload_file_size";
}

# The finished file goes to the echo backend, whose record of the form tells the benchmark
# which file to verify.
location @done {
    proxy_pass http://127.0.0.1:{{BACKEND}};
}
"#;

impl Nginx {
    pub fn start(setup: &Setup, tag: &str) -> Result<Nginx, String> {
        let prefix = setup.root.join(format!("nginx-{tag}"));
        let _ = fs::remove_dir_all(&prefix);
        for dir in [
            "",
            "client_body",
            "proxy",
            "dav_tmp",
            "dav_root/dav",
            "store",
            "state",
        ] {
            fs::create_dir_all(prefix.join(dir))
                .map_err(|e| format!("mkdir {}: {e}", prefix.join(dir).display()))?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (port, h2_port) = (free_port()?, free_port()?);
            let conf = render(setup, &prefix, port, h2_port);
            let conf_path = prefix.join("nginx.conf");
            fs::write(&conf_path, &conf).map_err(|e| format!("write nginx.conf: {e}"))?;
            let error_log = prefix.join("error.log");
            let stderr = fs::File::create(prefix.join("stderr.log"))
                .map_err(|e| format!("create stderr.log: {e}"))?;
            let mut command = Command::new(&setup.nginx);
            command
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(&error_log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr));
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    // The benchmark blocks INT/TERM for its signal thread; nginx must not
                    // inherit that. If the benchmark dies, the master gets TERM and stops
                    // its workers.
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut child = command
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", setup.nginx.display()))?;
            LIVE_MASTERS.lock().unwrap().push(child.id());
            match wait_ready(&mut child, &prefix, port, setup.workers) {
                Ok(workers) => {
                    return Ok(Nginx {
                        child: Some(child),
                        prefix,
                        port,
                        h2_port,
                        workers,
                    })
                }
                Err(why) => {
                    kill_tree(&mut child);
                    let log = fs::read_to_string(&error_log).unwrap_or_default();
                    let stderr = fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
                    if (log.contains("Address already in use")
                        || stderr.contains("Address already in use"))
                        && attempt < 5
                    {
                        continue;
                    }
                    return Err(format!(
                        "nginx did not start: {why}\n--- error.log ---\n{log}\n--- stderr ---\n\
                         {stderr}\n--- nginx.conf ---\n{conf}"
                    ));
                }
            }
        }
    }

    pub fn master_pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// CPU time and memory of the workers now. Fails if a worker is gone (a crash).
    pub fn stats(&self) -> Result<WorkerStats, String> {
        let now = children_of(self.master_pid());
        let mut stats = WorkerStats::default();
        for pid in &self.workers {
            if !now.contains(pid) {
                return Err(format!(
                    "nginx worker {pid} is gone (crashed?); error.log:\n{}",
                    tail(&self.error_log(), 20)
                ));
            }
            let (utime, stime) = cpu_ticks(*pid)?;
            stats.cpu_ticks += utime + stime;
            let rss = status_kib(*pid, "VmRSS")?;
            stats.rss_kib += rss;
            stats.hwm_kib = stats.hwm_kib.max(status_kib(*pid, "VmHWM")?);
        }
        Ok(stats)
    }

    pub fn error_log(&self) -> String {
        fs::read(self.prefix.join("error.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `[emerg]`/`[alert]`/`[crit]` lines, and `[error]` lines too when `errors` is set.
    pub fn bad_log_lines(&self, errors: bool) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|l| {
                l.contains("[emerg]")
                    || l.contains("[alert]")
                    || l.contains("[crit]")
                    || (errors && l.contains("[error]"))
            })
            .map(str::to_string)
            .collect()
    }

    /// QUIT, wait, then remove the prefix (uploaded files included).
    pub fn stop(mut self) {
        self.shutdown();
        let _ = fs::remove_dir_all(&self.prefix);
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    kill_tree(&mut child);
                    break;
                }
            }
        }
        LIVE_MASTERS.lock().unwrap().retain(|p| *p != child.id());
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn render(setup: &Setup, prefix: &Path, port: u16, h2_port: u16) -> String {
    let p = prefix.display();
    let locations = LOCATIONS
        .replace("{{P}}", &p.to_string())
        .replace("{{BACKEND}}", &setup.backend_port.to_string())
        .replace("{{UPLOAD_BUFFER}}", &setup.upload_buffer);
    let indent = |text: &str| {
        text.lines()
            .map(|l| format!("        {l}\n"))
            .collect::<String>()
    };
    let h2_listen = if setup.version >= (1, 25, 1) {
        format!("listen 127.0.0.1:{h2_port};\n        http2 on;")
    } else {
        format!("listen 127.0.0.1:{h2_port} http2;")
    };
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "load_module {module};\n\
         daemon off;\n\
         master_process on;\n\
         worker_processes {workers};\n\
         worker_rlimit_nofile 8192;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\n\
         {user}\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {p}/client_body;\n\
         \x20   proxy_temp_path {p}/proxy;\n\
         \x20   client_max_body_size 0;\n\
         \x20   client_body_timeout 300s;\n\
         \x20   send_timeout 300s;\n\
         \x20   keepalive_timeout 300s;\n\
         \x20   keepalive_requests 100000;\n\
         {extra}\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         {locations1}\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       {h2_listen}\n\
         {locations2}\
         \x20   }}\n\
         }}\n",
        module = setup.module.display(),
        workers = setup.workers,
        extra = setup
            .http_lines
            .iter()
            .map(|l| format!("    {l}\n"))
            .collect::<String>(),
        locations1 = indent(&locations),
        locations2 = indent(&locations),
    )
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("bind 127.0.0.1:0: {e}"))
}

/// Waits until nginx listens and all its workers run; returns the workers' pids.
fn wait_ready(
    child: &mut Child,
    prefix: &Path,
    port: u16,
    workers: u32,
) -> Result<Vec<u32>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = child.id();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("nginx exited with {status}"));
        }
        // The master writes its pid file after binding: this tells our nginx from another
        // process that took the port.
        let pid_written =
            fs::read_to_string(prefix.join("nginx.pid")).is_ok_and(|p| p.trim() == pid.to_string());
        if pid_written && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            let children = children_of(pid);
            if children.len() == workers as usize {
                return Ok(children);
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "127.0.0.1:{port} did not accept connections with {workers} workers in 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill_tree(child: &mut Child) {
    for pid in children_of(child.id()) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
    LIVE_MASTERS.lock().unwrap().retain(|p| *p != child.id());
}

/// CPU time and memory of a set of workers.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerStats {
    /// utime + stime, summed over the workers, in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS summed over the workers.
    pub rss_kib: u64,
    /// The largest VmHWM (peak RSS) of a worker.
    pub hwm_kib: u64,
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The fields of `/proc/<pid>/stat` after the command name: index 0 is field 3 (state).
fn stat_fields(pid: u32) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// (utime, stime) of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64), String> {
    let fields = stat_fields(pid).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let get = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: no field {}", i + 3))
    };
    // Fields 14 (utime) and 15 (stime).
    Ok((get(11)?, get(12)?))
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, key: &str) -> Result<u64, String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no {key}"))
}

/// Pids whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(fields) = stat_fields(pid) {
            if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
