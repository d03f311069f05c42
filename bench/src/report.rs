//! The markdown report: one table per workload, medians over the runs, each value with its
//! ratio to the discard baseline and to WebDAV PUT.

use std::fmt::Write;

use crate::workloads::{
    human, ConcatMeasurement, Endpoint, Measurement, SlowMeasurement, Workload, GIB,
};

pub struct Header {
    pub nginx: String,
    pub module: String,
    pub commit: String,
    pub date: String,
    pub cores: usize,
    pub workers: u32,
    pub runs: usize,
    pub quick: bool,
    pub load_before: String,
    pub load_after: String,
    pub dir: String,
    pub http_lines: Vec<String>,
    pub upload_buffer: String,
}

pub enum Section {
    Throughput {
        workload: Workload,
        title: String,
        results: Vec<(Endpoint, Vec<Measurement>)>,
    },
    Slow {
        title: String,
        results: Vec<(Endpoint, Vec<SlowMeasurement>)>,
    },
    Concat {
        title: String,
        results: Vec<ConcatMeasurement>,
    },
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// `value (×discard / ×DAV)`.
fn cell(value: f64, discard: Option<f64>, dav: Option<f64>, decimals: usize) -> String {
    let ratio = |base: Option<f64>| match base {
        Some(b) if b > 0.0 && b.is_finite() && value.is_finite() => format!("{:.2}", value / b),
        _ => "n/a".to_string(),
    };
    format!("{value:.decimals$} ({} / {})", ratio(discard), ratio(dav))
}

/// The medians of one endpoint's runs.
struct Medians {
    wall_s: f64,
    mb_s: f64,
    cpu_per_gib: f64,
    client_cpu_per_gib: f64,
    hwm_mib: f64,
    comparable: bool,
}

fn medians(runs: &[Measurement]) -> Medians {
    let of = |f: &dyn Fn(&Measurement) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Medians {
        wall_s: of(&|m| m.wall_s),
        mb_s: of(&|m| m.bytes as f64 / m.wall_s / 1e6),
        cpu_per_gib: of(&|m| m.cpu_s / (m.bytes as f64 / GIB as f64)),
        client_cpu_per_gib: of(&|m| m.client_cpu_s / (m.bytes as f64 / GIB as f64)),
        hwm_mib: of(&|m| m.hwm_kib as f64 / 1024.0),
        comparable: runs.iter().all(|m| m.not_comparable.is_none()),
    }
}

pub fn render(h: &Header, sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## ngx-upload benchmark{}\n",
        if h.quick { " (--quick)" } else { "" }
    );
    let _ = writeln!(out, "- date: {}; commit: `{}`", h.date, h.commit);
    let _ = writeln!(out, "- nginx: `{}`", h.nginx);
    let _ = writeln!(out, "- module: `{}`", h.module);
    let _ = writeln!(
        out,
        "- `worker_processes {}` on {} CPU cores; load average before: {}; after: {}",
        h.workers,
        h.cores,
        h.load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        h.load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        out,
        "- clients: ngx-upload-bench's own, HTTP/1.1 (one thread per connection) and HTTP/2 \
         (h2c, prior knowledge; 16 KiB DATA frames, a window's worth per writev from the mapped \
         payload); HTTP/1.1 bodies sent with sendfile from the page cache"
    );
    let _ = writeln!(
        out,
        "- the module's location has `upload_buffer_size {};` (its body buffer); the baselines \
         use nginx's default `client_body_buffer_size`",
        h.upload_buffer
    );
    if !h.http_lines.is_empty() {
        let _ = writeln!(
            out,
            "- added to nginx's `http` block: `{}`",
            h.http_lines.join(" ")
        );
    }
    let _ = writeln!(out, "- files written under `{}` (removed at exit)", h.dir);
    let _ = writeln!(
        out,
        "- every number is the median of {} run(s), each on a fresh nginx; a cell reads \
         `value (value ÷ discard's / value ÷ DAV PUT's)`. MB/s = 10^6 bytes/s, higher is \
         better; for wall time, CPU and RSS lower is better. CPU = utime+stime of the nginx \
         workers; peak RSS = largest worker VmHWM.",
        h.runs
    );
    for section in sections {
        match section {
            Section::Throughput {
                workload,
                title,
                results,
            } => throughput(&mut out, *workload, title, results),
            Section::Slow { title, results } => slow(&mut out, title, results),
            Section::Concat { title, results } => concat(&mut out, title, results),
        }
    }
    out
}

fn throughput(
    out: &mut String,
    workload: Workload,
    title: &str,
    results: &[(Endpoint, Vec<Measurement>)],
) {
    let med: Vec<(Endpoint, Medians)> = results
        .iter()
        .map(|(ep, runs)| (*ep, medians(runs)))
        .collect();
    let base = |which: Endpoint| {
        med.iter()
            .find(|(ep, m)| *ep == which && m.comparable)
            .map(|(_, m)| m)
    };
    let (discard, dav) = (base(Endpoint::Discard), base(Endpoint::Dav));
    // With several protocols of the module, each one's cost against the seed protocol's.
    let seed = results
        .iter()
        .any(|(ep, _)| matches!(ep, Endpoint::Tus | Endpoint::Ietf))
        .then(|| base(Endpoint::Module))
        .flatten();
    let _ = writeln!(out, "\n### `{}`: {title}\n", workload.name());
    if seed.is_some() {
        let _ = writeln!(
            out,
            "The module's protocols upload the same bytes in the same segment sizes; tus and \
             the IETF draft add a creation request per session, and each connection takes \
             whole sessions (their `PATCH`es must go in order). \"÷ ngx-upload\" is the row's \
             value ÷ the seed protocol's (`X-Content-Range`): wall s, MB/s, CPU s per GiB.\n"
        );
        let _ = writeln!(
            out,
            "| endpoint | wall s | MB/s | CPU s per GiB | peak worker RSS MiB | ÷ ngx-upload | wall s of each run | client CPU s per GiB | verified |"
        );
        let _ = writeln!(
            out,
            "| --- | --: | --: | --: | --: | --- | --- | --: | --- |"
        );
    } else {
        let _ = writeln!(
            out,
            "| endpoint | wall s | MB/s | CPU s per GiB | peak worker RSS MiB | wall s of each run | client CPU s per GiB | verified |"
        );
        let _ = writeln!(out, "| --- | --: | --: | --: | --: | --- | --: | --- |");
    }
    for ((ep, m), (_, runs)) in med.iter().zip(results) {
        let each = runs
            .iter()
            .map(|r| format!("{:.2}", r.wall_s))
            .collect::<Vec<_>>()
            .join(", ");
        if !m.comparable {
            let why = runs
                .iter()
                .find_map(|r| r.not_comparable.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | n/a | n/a | n/a | n/a |{} n/a | n/a | not comparable: {why} |",
                ep.label(),
                if seed.is_some() { " n/a |" } else { "" }
            );
            continue;
        }
        let vs_seed = match seed {
            Some(s) if ep.is_module() => {
                let r = |v: f64, b: f64| {
                    if b > 0.0 && b.is_finite() && v.is_finite() {
                        format!("{:.2}", v / b)
                    } else {
                        "n/a".to_string()
                    }
                };
                format!(
                    " wall {} · MB/s {} · CPU {} |",
                    r(m.wall_s, s.wall_s),
                    r(m.mb_s, s.mb_s),
                    r(m.cpu_per_gib, s.cpu_per_gib)
                )
            }
            Some(_) => " |".to_string(),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |{vs_seed} {each} | {:.2} | {} |",
            ep.label(),
            cell(
                m.wall_s,
                discard.map(|d| d.wall_s),
                dav.map(|d| d.wall_s),
                2
            ),
            cell(m.mb_s, discard.map(|d| d.mb_s), dav.map(|d| d.mb_s), 0),
            cell(
                m.cpu_per_gib,
                discard.map(|d| d.cpu_per_gib),
                dav.map(|d| d.cpu_per_gib),
                2
            ),
            cell(
                m.hwm_mib,
                discard.map(|d| d.hwm_mib),
                dav.map(|d| d.hwm_mib),
                1
            ),
            m.client_cpu_per_gib,
            runs.last().map(|r| r.check.as_str()).unwrap_or_default()
        );
    }
    if results
        .iter()
        .any(|(_, runs)| runs.iter().any(|r| r.latency.is_some()))
    {
        let realtime = results
            .iter()
            .flat_map(|(_, runs)| runs.iter().filter_map(|r| r.latency.as_ref()))
            .all(|l| l.realtime);
        let _ = writeln!(
            out,
            "\nEvent-loop latency: `GET /ping` every 10 ms on a keep-alive connection served \
             by the upload's worker (with several workers and connections: one of the \
             workers), while the uploads run; probe thread {}. Medians over the \
             runs; worst = the largest max of any run; > 5 ms = probes slower than 5 ms, \
             summed over the runs.\n",
            if realtime {
                "at real-time priority (SCHED_FIFO)"
            } else {
                "at normal priority (no permission for SCHED_FIFO): its own scheduling delays count too"
            }
        );
        let _ = writeln!(
            out,
            "| endpoint | probes | p50 ms | p99 ms | max ms | worst max ms | > 5 ms |"
        );
        let _ = writeln!(out, "| --- | --: | --: | --: | --: | --: | --: |");
        for (ep, runs) in results {
            let lat: Vec<_> = runs.iter().filter_map(|r| r.latency.as_ref()).collect();
            if lat.is_empty() {
                continue;
            }
            let of = |f: &dyn Fn(&crate::workloads::Latency) -> f64| {
                median(&lat.iter().map(|l| f(l)).collect::<Vec<_>>())
            };
            let worst = lat.iter().map(|l| l.max_ms).fold(0.0, f64::max);
            let slow: usize = lat.iter().map(|l| l.over_5ms).sum();
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {slow} |",
                ep.label(),
                of(&|l| l.samples as f64),
                of(&|l| l.p50_ms),
                of(&|l| l.p99_ms),
                of(&|l| l.max_ms),
                worst
            );
        }
    }
}

fn slow(out: &mut String, title: &str, results: &[(Endpoint, Vec<SlowMeasurement>)]) {
    let per = |ep: Endpoint| {
        results
            .iter()
            .find(|(e, _)| *e == ep)
            .map(|(_, runs)| median(&runs.iter().map(|m| m.per_upload_kib).collect::<Vec<_>>()))
    };
    let (discard, dav) = (per(Endpoint::Discard), per(Endpoint::Dav));
    let _ = writeln!(out, "\n### `slow`: {title}\n");
    let _ = writeln!(
        out,
        "| endpoint | idle RSS MiB, all workers | RSS with the uploads held MiB, all workers | KiB per held upload | KiB per held upload, each run | largest worker VmHWM MiB |"
    );
    let _ = writeln!(out, "| --- | --: | --: | --: | --- | --: |");
    for (ep, runs) in results {
        let of =
            |f: &dyn Fn(&SlowMeasurement) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let per_upload = of(&|m| m.per_upload_kib);
        let each = runs
            .iter()
            .map(|m| format!("{:.1}", m.per_upload_kib))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} | {each} | {:.1} |",
            ep.label(),
            of(&|m| m.idle_kib as f64 / 1024.0),
            of(&|m| m.loaded_kib as f64 / 1024.0),
            cell(per_upload, discard, dav, 1),
            of(&|m| m.hwm_kib as f64 / 1024.0),
        );
    }
}

fn concat(out: &mut String, title: &str, results: &[ConcatMeasurement]) {
    let Some(first) = results.first() else {
        return;
    };
    let of =
        |f: &dyn Fn(&ConcatMeasurement) -> f64| median(&results.iter().map(f).collect::<Vec<_>>());
    let _ = writeln!(out, "\n### `concat`: {title}\n");
    let _ = writeln!(
        out,
        "No nginx baseline: nginx has no assembly. The final upload's creation (`POST` with \
         `Upload-Concat: final;` and {} part URLs, {} of header) makes the module assemble the \
         parts on the thread pool (reflink where the filesystem can, else `copy_file_range`) \
         and hand the result off; it is timed from its first byte to its answer. `rchar` / \
         `wchar` are the workers' `/proc/<pid>/io` deltas over that request: the kernel counts \
         the bytes of `copy_file_range` there too (`add_rchar`/`add_wchar` in \
         `vfs_copy_file_range`), although they never reach user space (a reflink counts \
         nothing), so \"rchar − assembled\" is what the workers read besides the \
         in-kernel copy (the request head, the backend's answer); `syscr` / `syscw` count \
         read- and write-type syscalls (each `copy_file_range` call counts one of each; a \
         read/write copy in 1 MiB pieces would count {} of each).\n",
        first.parts,
        human(first.header_bytes as u64),
        first.bytes.div_ceil(1 << 20),
    );
    let _ = writeln!(
        out,
        "| final upload | ms | MB/s | worker CPU s | rchar Δ | wchar Δ | rchar − assembled | wchar − assembled | syscr Δ | syscw Δ | ms of each run | parts upload s | peak worker RSS MiB | verified |"
    );
    let _ = writeln!(
        out,
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- | --: | --: | --- |"
    );
    let each = results
        .iter()
        .map(|m| format!("{:.1}", m.final_s * 1000.0))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "| {} parts × {} = {} | {:.1} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {each} | {:.2} | {:.1} | {} |",
        first.parts,
        human(first.part_size),
        human(first.bytes),
        of(&|m| m.final_s * 1000.0),
        of(&|m| m.bytes as f64 / m.final_s / 1e6),
        of(&|m| m.cpu_s),
        of(&|m| m.io.rchar as f64),
        of(&|m| m.io.wchar as f64),
        of(&|m| m.io.rchar as f64 - m.bytes as f64),
        of(&|m| m.io.wchar as f64 - m.bytes as f64),
        of(&|m| m.io.syscr as f64),
        of(&|m| m.io.syscw as f64),
        of(&|m| m.parts_s),
        of(&|m| m.hwm_kib as f64 / 1024.0),
        results.last().map(|m| m.check.as_str()).unwrap_or_default()
    );
}
