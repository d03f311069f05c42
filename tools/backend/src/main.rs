//! `upload-echo-backend --listen 127.0.0.1:PORT`: serves the echo backend until killed.

fn main() {
    let mut listen = String::from("127.0.0.1:8081");
    let mut quiet = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" | "-l" => match args.next() {
                Some(addr) => listen = addr,
                None => usage("--listen needs an address"),
            },
            a if a.starts_with("--listen=") => listen = a["--listen=".len()..].to_string(),
            "--quiet" | "-q" => quiet = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let backend = if quiet {
        ngx_upload_backend::try_spawn(listen.as_str())
    } else {
        ngx_upload_backend::try_spawn_logging(listen.as_str())
    };
    match backend {
        Ok(backend) => {
            println!("upload-echo-backend listening on {}", backend.addr());
            backend.wait();
        }
        Err(e) => {
            eprintln!("upload-echo-backend: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    }
}

const USAGE: &str = "usage: upload-echo-backend [--listen 127.0.0.1:PORT] [--quiet]\n\
    Answers every HTTP request with a text echo of its method, target, Content-Type and\n\
    multipart/form-data fields; a path holding /status/NNN is answered with status NNN.";

fn usage(problem: &str) -> ! {
    eprintln!("upload-echo-backend: {problem}\n{USAGE}");
    std::process::exit(2);
}
