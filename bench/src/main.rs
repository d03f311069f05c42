//! `ngx-upload-bench`: measures ngx-upload against two references on the same nginx binary —
//! a location that discards the body (the ceiling) and WebDAV `PUT` (nginx's own body-to-file
//! path) — and prints markdown tables. See docs/benchmark.md.

mod http;
mod nginx;
mod payload;
mod report;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use nginx::Setup;
use ngx_upload_test_support::locate::{newest_vendored_nginx, profile_dir, workspace_root};
use payload::Payload;
use workloads::{Bench, Endpoint, Sizes, Workload};

const USAGE: &str = "\
usage: cargo run --release -p ngx-upload-bench -- [options]

  --runs N          runs of every measurement; the tables show medians (default 3, --quick: 1)
  --quick           small sizes, for a smoke check
  --workers N       nginx worker_processes (default 1)
  --latency-probe   during single, pair, segments and shuffled: GET /ping every 10 ms on the
                    upload's worker
  --only LIST       comma-separated workloads: single,pair,segments,shuffled,h2,slow,concat
                    (default all)
  --nginx PATH      nginx binary (default: $NGX_UPLOAD_NGINX, else the vendored build's
                    target/<profile>/build/nginx-sys-*/out/objs/nginx)
  --module PATH     the module (default: $NGX_UPLOAD_MODULE, else target/<profile>/libngx_upload.so)
  --http LINE       add LINE to nginx's http block (repeatable), e.g. 'client_body_buffer_size 1m;'
  --upload-buffer SIZE
                    upload_buffer_size of the module's location (default 256k, as the README
                    recommends for large uploads; the baselines keep nginx's body buffer)
  --dir PATH        where the temp dir goes (default: $TMPDIR or /tmp); uploads are written there
  --allow-stale     measure a module older than its sources
  --keep            keep the temp dir (payload, nginx prefixes) for inspection";

struct Options {
    runs: Option<usize>,
    quick: bool,
    workers: u32,
    latency_probe: bool,
    only: Vec<Workload>,
    nginx: Option<PathBuf>,
    module: Option<PathBuf>,
    dir: Option<PathBuf>,
    http_lines: Vec<String>,
    upload_buffer: String,
    allow_stale: bool,
    keep: bool,
}

/// `path` made absolute against the current directory (not resolved: it may not exist yet).
fn absolute(path: &str) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path))
}

fn usage(problem: &str) -> ! {
    eprintln!("ngx-upload-bench: {problem}\n{USAGE}");
    std::process::exit(2);
}

fn parse_args() -> Options {
    let mut o = Options {
        runs: None,
        quick: false,
        workers: 1,
        latency_probe: false,
        only: Workload::ALL.to_vec(),
        nginx: None,
        module: None,
        dir: None,
        http_lines: Vec::new(),
        upload_buffer: "256k".to_string(),
        allow_stale: false,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> String {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage(&format!("{name} needs {what}")))
        };
        match name.as_str() {
            "--runs" => {
                o.runs = Some(
                    value("a number")
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .unwrap_or_else(|| usage("--runs needs a positive number")),
                )
            }
            "--quick" => o.quick = true,
            "--workers" => {
                o.workers = value("a number")
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| usage("--workers needs a positive number"))
            }
            "--latency-probe" => o.latency_probe = true,
            "--only" => {
                o.only = value("a list")
                    .split(',')
                    .map(|w| {
                        Workload::from_name(w.trim())
                            .unwrap_or_else(|| usage(&format!("unknown workload {w:?}")))
                    })
                    .collect()
            }
            // Absolute: nginx runs with its own prefix, where a relative path means nothing.
            "--nginx" => o.nginx = Some(absolute(&value("a path"))),
            "--module" => o.module = Some(absolute(&value("a path"))),
            "--dir" => o.dir = Some(PathBuf::from(value("a path"))),
            "--http" => o.http_lines.push(value("a directive")),
            "--upload-buffer" => o.upload_buffer = value("a size"),
            "--allow-stale" => o.allow_stale = true,
            "--keep" => o.keep = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    o
}

fn find_nginx(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = explicit.or_else(|| std::env::var_os("NGX_UPLOAD_NGINX").map(PathBuf::from))
    {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("nginx {} is not a file", path.display()))
        };
    }
    // The vendored build leaves nginx in the nginx-sys build script's out dir; with several
    // (older builds), the newest.
    let build = profile_dir().join("build");
    let newest =
        newest_vendored_nginx(&profile_dir()).map_err(|e| format!("{}: {e}", build.display()))?;
    newest.ok_or_else(|| {
        format!(
            "no nginx under {}/nginx-sys-*/out/objs: run `cargo build --release` first, or \
             pass --nginx",
            build.display()
        )
    })
}

fn find_module(explicit: Option<PathBuf>, allow_stale: bool) -> Result<PathBuf, String> {
    if let Some(path) =
        explicit.or_else(|| std::env::var_os("NGX_UPLOAD_MODULE").map(PathBuf::from))
    {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("module {} is not a file", path.display()))
        };
    }
    let path = profile_dir().join("libngx_upload.so");
    if !path.is_file() {
        return Err(format!(
            "{} does not exist: run `cargo build --release` first, or pass --module",
            path.display()
        ));
    }
    // `cargo run -p ngx-upload-bench` does not rebuild the module; refuse to measure old code.
    let built = mtime(&path).unwrap_or(SystemTime::UNIX_EPOCH);
    let root = workspace_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for dir in ["src", "engine/src"] {
        newest_rs(&root.join(dir), &mut newest);
    }
    if let Some((time, source)) = newest {
        if time > built && !allow_stale {
            return Err(format!(
                "{} is older than {}: run `cargo build --release` (or pass --allow-stale)",
                path.display(),
                source.display()
            ));
        }
    }
    Ok(path)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

fn newest_rs(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            newest_rs(&path, newest);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if let Some(t) = mtime(&path) {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    *newest = Some((t, path));
                }
            }
        }
    }
}

/// Set when a signal stops the benchmark: what fails then is a consequence, not a finding.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Blocks INT/TERM/HUP in every thread and stops nginx and removes `dir` when one arrives.
fn handle_signals(dir: PathBuf, keep: bool) {
    // SAFETY: plain libc signal-set manipulation on local values.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            libc::sigwait(&set, &mut sig);
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("ngx-upload-bench: signal {sig}, stopping nginx and cleaning up");
            let masters = nginx::LIVE_MASTERS
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default();
            for pid in &masters {
                libc::kill(*pid as libc::pid_t, libc::SIGTERM);
            }
            for _ in 0..100 {
                if masters
                    .iter()
                    .all(|p| !Path::new(&format!("/proc/{p}")).exists())
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            std::process::exit(128 + sig);
        });
    }
}

/// Removes the temp dir when main ends, however it ends.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the struct it is given.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut s) == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
    }
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let options = parse_args();
    if let Err(e) = run(options) {
        if INTERRUPTED.load(Ordering::SeqCst) {
            // The signal thread stops nginx, cleans up and exits.
            std::thread::sleep(Duration::from_secs(10));
        }
        eprintln!("ngx-upload-bench: {e}");
        std::process::exit(1);
    }
}

fn run(o: Options) -> Result<(), String> {
    let nginx_bin = find_nginx(o.nginx.clone())?;
    let module = find_module(o.module.clone(), o.allow_stale)?;
    let version = nginx::nginx_version(&nginx_bin)?;
    let sizes = if o.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let runs = o.runs.unwrap_or(if o.quick { 1 } else { 3 });

    let parent = o.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = parent.join(format!("ngx-upload-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    handle_signals(dir.clone(), o.keep);
    let _cleanup = TempDir {
        path: dir.clone(),
        keep: o.keep,
    };
    // The payload and two copies of the largest upload (pair) exist at once, with room to spare.
    let need = 4 * sizes.single + 256 * workloads::MIB;
    if let Some(free) = free_bytes(&dir) {
        if free < need {
            return Err(format!(
                "{} has {} MiB free, the benchmark needs about {} MiB",
                dir.display(),
                free / workloads::MIB,
                need / workloads::MIB
            ));
        }
    }

    eprintln!(
        "generating the {} payload in {}",
        workloads::human(sizes.single),
        dir.display()
    );
    let payload = Payload::create(&dir.join("payload.bin"), sizes.single)
        .map_err(|e| format!("payload: {e}"))?;
    let backend =
        ngx_upload_backend::try_spawn("127.0.0.1:0").map_err(|e| format!("echo backend: {e}"))?;
    let setup = Setup {
        nginx: nginx_bin.clone(),
        module: module.clone(),
        version,
        workers: o.workers,
        root: dir.clone(),
        backend_port: backend.port(),
        http_lines: o.http_lines.clone(),
        upload_buffer: o.upload_buffer.clone(),
    };
    let bench = Bench::new(setup, payload, backend, sizes.clone(), o.latency_probe);

    let mut header = report::Header {
        nginx: format!(
            "{} ({}.{}.{})",
            nginx_bin.display(),
            version.0,
            version.1,
            version.2
        ),
        module: module.display().to_string(),
        commit: command_line(
            "git",
            &[
                "-C",
                &workspace_root().display().to_string(),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        workers: o.workers,
        runs,
        quick: o.quick,
        load_before: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        load_after: String::new(),
        dir: dir.display().to_string(),
        http_lines: o.http_lines.clone(),
        upload_buffer: o.upload_buffer.clone(),
    };

    let mut sections = Vec::new();
    for &w in &o.only {
        if w == Workload::Slow {
            let mut by_endpoint = Vec::new();
            for ep in Endpoint::ALL {
                by_endpoint.push((ep, Vec::new()));
            }
            for run in 0..runs {
                for (ep, results) in by_endpoint.iter_mut() {
                    let m = bench.measure_slow(*ep)?;
                    eprintln!(
                        "{} {} run {}: {:.1} KiB per held upload (idle {} KiB, held {} KiB)",
                        w.name(),
                        ep.name(),
                        run + 1,
                        m.per_upload_kib,
                        m.idle_kib,
                        m.loaded_kib
                    );
                    results.push(m);
                }
            }
            sections.push(report::Section::Slow {
                title: sizes.describe(w),
                results: by_endpoint,
            });
            continue;
        }
        if w == Workload::Concat {
            let mut results = Vec::new();
            for run in 0..runs {
                let m = bench
                    .measure_concat()
                    .map_err(|e| format!("{} run {}: {e}", w.name(), run + 1))?;
                eprintln!(
                    "{} run {}: parts {:.2} s; final {:.1} ms, {:.0} MB/s, {:.2} CPU s; worker \
                     rchar {} wchar {} syscr {} syscw {} [{}]",
                    w.name(),
                    run + 1,
                    m.parts_s,
                    m.final_s * 1000.0,
                    m.bytes as f64 / m.final_s / 1e6,
                    m.cpu_s,
                    m.io.rchar,
                    m.io.wchar,
                    m.io.syscr,
                    m.io.syscw,
                    m.check
                );
                results.push(m);
            }
            sections.push(report::Section::Concat {
                title: sizes.describe(w),
                results,
            });
            continue;
        }
        let mut by_endpoint: Vec<(Endpoint, Vec<workloads::Measurement>)> =
            Endpoint::for_workload(w)
                .into_iter()
                .map(|e| (e, Vec::new()))
                .collect();
        // Endpoints alternate within each run, so that a change in background load affects
        // them alike.
        for run in 0..runs {
            for (ep, results) in by_endpoint.iter_mut() {
                let m = bench
                    .measure(w, *ep)
                    .map_err(|e| format!("{} {} run {}: {e}", w.name(), ep.name(), run + 1))?;
                match &m.not_comparable {
                    Some(why) => eprintln!(
                        "{} {} run {}: not comparable: {why}",
                        w.name(),
                        ep.name(),
                        run + 1
                    ),
                    None => eprintln!(
                        "{} {} run {}: {:.3} s, {:.0} MB/s, {:.2} CPU s, client {:.2} CPU s, \
                         peak RSS {} KiB{} [{}]",
                        w.name(),
                        ep.name(),
                        run + 1,
                        m.wall_s,
                        m.bytes as f64 / m.wall_s / 1e6,
                        m.cpu_s,
                        m.client_cpu_s,
                        m.hwm_kib,
                        m.latency
                            .as_ref()
                            .map(|l| format!(
                                ", ping p50 {:.2} p99 {:.2} max {:.2} ms",
                                l.p50_ms, l.p99_ms, l.max_ms
                            ))
                            .unwrap_or_default(),
                        m.check
                    ),
                }
                results.push(m);
            }
        }
        sections.push(report::Section::Throughput {
            workload: w,
            title: sizes.describe(w),
            results: by_endpoint,
        });
    }
    header.load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    print!("{}", report::render(&header, &sections));
    Ok(())
}
