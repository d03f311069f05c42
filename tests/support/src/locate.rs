//! Which nginx and which module the tests run, and where the repository is.
//!
//! - nginx: `$NGX_UPLOAD_NGINX`, else `nginx` in nginx-sys's build directory, which this
//!   crate's build.rs passes on as `NGX_UPLOAD_NGINX_BUILD_DIR` when the `nginx-build-dir`
//!   feature is on (the root package's tests turn it on): the vendored build leaves there the
//!   very binary the module is built against;
//! - module: `$NGX_UPLOAD_MODULE`, else `libngx_upload.so` in the cargo profile directory the
//!   running binary was built into (`target/<profile>/deps/<test>` → `target/<profile>/`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root (this crate is `tests/support/` in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support is two levels below the workspace root")
        .to_path_buf()
}

/// `target/<profile>`: the directory the running binary was built into (a test binary runs
/// from `target/<profile>/deps/`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("the binary has a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The newest `nginx` that a vendored build left under `profile_dir`
/// (`build/nginx-sys-*/out/objs/nginx`; with several, from older builds, the newest), if any.
pub fn newest_vendored_nginx(profile_dir: &Path) -> io::Result<Option<PathBuf>> {
    let newest = fs::read_dir(profile_dir.join("build"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("nginx-sys-"))
        .map(|e| e.path().join("out/objs/nginx"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    Ok(newest)
}

/// The nginx binary to run.
pub fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NGX_UPLOAD_NGINX") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NGX_UPLOAD_NGINX={} is not a file",
            path.display()
        );
        return path;
    }
    let Some(build_dir) = option_env!("NGX_UPLOAD_NGINX_BUILD_DIR") else {
        panic!(
            "no nginx to test with: ngx-upload-test-support was built without \
             NGX_UPLOAD_NGINX_BUILD_DIR (its \"nginx-build-dir\" feature off, or the root \
             package's \"vendored\" feature off); set NGX_UPLOAD_NGINX to an nginx binary \
             built from the same sources as the module"
        );
    };
    let path = Path::new(build_dir).join("nginx");
    assert!(
        path.is_file(),
        "nginx binary {} not found; run `cargo build` first or set NGX_UPLOAD_NGINX",
        path.display()
    );
    path
}

/// The module to load.
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("NGX_UPLOAD_MODULE") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "NGX_UPLOAD_MODULE={} is not a file",
            path.display()
        );
        return path;
    }
    let path = profile_dir().join("libngx_upload.so");
    assert!(
        path.is_file(),
        "the ngx-upload module {} does not exist: run `cargo build` (same profile as the \
         tests) first, or set NGX_UPLOAD_MODULE to the module's .so",
        path.display()
    );
    check_module_is_fresh(&path);
    path
}

/// `cargo test` does not build the module: integration tests cannot link a cdylib, so cargo
/// does not count it as their dependency. A module older than its sources would test stale
/// code; refuse it.
fn check_module_is_fresh(module: &Path) {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let built = fs::metadata(module)
            .and_then(|m| m.modified())
            .map_err(|e| format!("stat {}: {e}", module.display()))?;
        let root = workspace_root();
        let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
        let mut consider = |path: &Path| {
            if let Ok(modified) = fs::metadata(path).and_then(|m| m.modified()) {
                let newer = match &newest {
                    Some((t, _)) => modified > *t,
                    None => true,
                };
                if newer {
                    newest = Some((modified, path.to_path_buf()));
                }
            }
        };
        fn walk(dir: &Path, consider: &mut dyn FnMut(&Path)) {
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        walk(&path, consider);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        consider(&path);
                    }
                }
            }
        }
        // Cargo's dep-info file beside the module lists exactly the sources it was built from.
        let dep_info = module.with_extension("d");
        match fs::read_to_string(&dep_info) {
            Ok(text) => {
                let deps = text.split_once(':').map(|(_, d)| d).unwrap_or("");
                let deps = deps.replace("\\ ", "\u{0}");
                for dep in deps.split_whitespace() {
                    consider(Path::new(&dep.replace('\u{0}', " ")));
                }
            }
            Err(_) => {
                walk(&root.join("src"), &mut consider);
                walk(&root.join("engine/src"), &mut consider);
                consider(&root.join("build.rs"));
            }
        }
        match newest {
            Some((source_time, source)) if source_time > built => Err(format!(
                "the ngx-upload module {} is older than {}: `cargo test` does not rebuild the \
                 module (a cdylib); run `cargo build` (same profile as the tests) first, or set \
                 NGX_UPLOAD_MODULE to the module's .so",
                module.display(),
                source.display()
            )),
            _ => Ok(()),
        }
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

/// The version of the nginx under test ([`nginx_binary`]), from `nginx -v`.
pub fn nginx_version() -> (u32, u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| version_of(&nginx_binary()).unwrap_or_else(|e| panic!("{e}")))
}

/// The version of the nginx binary `nginx`, from `nginx -v` (`nginx version: nginx/1.28.3`).
pub fn version_of(nginx: &Path) -> Result<(u32, u32, u32), String> {
    let output = Command::new(nginx)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} -v: {e}", nginx.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let version = text
        .split("nginx/")
        .nth(1)
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let mut numbers = version.split('.').map(|n| n.parse::<u32>());
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Ok((a, b, c)),
        _ => Err(format!(
            "cannot read the version of {} from `nginx -v`: {text:?}",
            nginx.display()
        )),
    }
}

/// Whether this process runs as root (nginx then needs `user root;` to write where we can).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
