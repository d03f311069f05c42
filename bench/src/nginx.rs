//! Starting and stopping nginx with the three endpoints, and reading its workers' CPU time and
//! memory from `/proc`. The process handling is the test support's (ngx-upload-test-support):
//! the command line, the wait until it serves, QUIT and kill, `/proc`.

use ngx_upload_test_support::errorlog::{lines_at, read_log};
use ngx_upload_test_support::prefix::try_free_port;
use ngx_upload_test_support::process::{port_in_use, Launch, Master, START_TIMEOUT};
use ngx_upload_test_support::procfs::{children_of, cpu_ticks, status_kib};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use ngx_upload_test_support::errorlog::tail;
pub use ngx_upload_test_support::locate::version_of as nginx_version;
pub use ngx_upload_test_support::procfs::clock_ticks_per_second;

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

/// A running nginx with the benchmark configuration.
pub struct Nginx {
    master: Option<Master>,
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

# The module, tus 1.0 and the IETF resumable-upload draft (told apart per request): uploads are
# created by `POST /files/` and live at /files/<id>; same stores, buffer and hand-off as /upload.
location /files/ {
    upload_protocol tus;
    upload_store {{P}}/store;
    upload_state_store {{P}}/state;
    upload_pass @done;
    upload_buffer_size {{UPLOAD_BUFFER}};
    upload_set_form_field file.name "$upload_file_name";
    upload_set_form_field file.path "$upload_tmp_path";
    upload_set_form_field upload.id "$upload_id";
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
        // What earlier runs left in the page cache is written back now, not during this run.
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
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
            let mut launch = Launch::new(&setup.nginx, &prefix, &conf_path);
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                launch.command_mut().pre_exec(|| {
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
            let mut master = launch
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", setup.nginx.display()))?;
            LIVE_MASTERS.lock().unwrap().push(master.pid());
            match master.wait_ready(port, setup.workers, START_TIMEOUT) {
                Ok(workers) => {
                    return Ok(Nginx {
                        master: Some(master),
                        prefix,
                        port,
                        h2_port,
                        workers,
                    })
                }
                Err(why) => {
                    master.kill_tree();
                    LIVE_MASTERS.lock().unwrap().retain(|p| *p != master.pid());
                    if port_in_use(&prefix) && attempt < 5 {
                        continue;
                    }
                    let log = fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
                    let stderr = fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
                    return Err(format!(
                        "nginx did not start: {why}\n--- error.log ---\n{log}\n--- stderr ---\n\
                         {stderr}\n--- nginx.conf ---\n{conf}"
                    ));
                }
            }
        }
    }

    pub fn master_pid(&self) -> u32 {
        self.master.as_ref().map_or(0, Master::pid)
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

    /// `/proc/<pid>/io` of the workers, summed.
    pub fn io(&self) -> Result<IoCounters, String> {
        let mut sum = IoCounters::default();
        for pid in &self.workers {
            let path = format!("/proc/{pid}/io");
            let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            for line in text.lines() {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value: u64 = value.trim().parse().unwrap_or(0);
                match name {
                    "rchar" => sum.rchar += value,
                    "wchar" => sum.wchar += value,
                    "syscr" => sum.syscr += value,
                    "syscw" => sum.syscw += value,
                    _ => {}
                }
            }
        }
        Ok(sum)
    }

    pub fn error_log(&self) -> String {
        read_log(&self.prefix.join("error.log"))
    }

    /// `[emerg]`/`[alert]`/`[crit]` lines, and `[error]` lines too when `errors` is set.
    pub fn bad_log_lines(&self, errors: bool) -> Vec<String> {
        let mut levels = vec!["[emerg]", "[alert]", "[crit]"];
        if errors {
            levels.push("[error]");
        }
        lines_at(&self.error_log(), &levels)
    }

    /// QUIT, wait, then remove the prefix (uploaded files included).
    pub fn stop(mut self) {
        self.shutdown();
        let _ = fs::remove_dir_all(&self.prefix);
    }

    fn shutdown(&mut self) {
        let Some(mut master) = self.master.take() else {
            return;
        };
        master.quit(Duration::from_secs(10));
        LIVE_MASTERS.lock().unwrap().retain(|p| *p != master.pid());
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
         {main}\
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
         \x20   # `Upload-Concat: final;/files/<id> …` names up to 256 parts: one header line of\n\
         \x20   # ~12 KiB, more than the default 8k buffer. Only such a line takes a large buffer.\n\
         \x20   large_client_header_buffers 4 64k;\n\
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
        main = std::env::var("NGX_BENCH_MAIN").unwrap_or_default(),
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
    try_free_port().map_err(|e| format!("bind 127.0.0.1:0: {e}"))
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

/// I/O counters of `/proc/<pid>/io` (all threads of the process, the thread pool's included).
/// `rchar`/`wchar` count the bytes of read-type/write-type syscalls, and the kernel counts
/// `copy_file_range(2)` and `sendfile(2)` there too (`add_rchar`/`add_wchar` in
/// fs/read_write.c), although those bytes never reach user space.
#[derive(Debug, Default, Clone, Copy)]
pub struct IoCounters {
    pub rchar: u64,
    pub wchar: u64,
    pub syscr: u64,
    pub syscw: u64,
}

impl IoCounters {
    pub fn since(self, before: IoCounters) -> IoCounters {
        IoCounters {
            rchar: self.rchar.saturating_sub(before.rchar),
            wchar: self.wchar.saturating_sub(before.wchar),
            syscr: self.syscr.saturating_sub(before.syscr),
            syscw: self.syscw.saturating_sub(before.syscw),
        }
    }
}
