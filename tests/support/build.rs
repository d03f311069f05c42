//! Passes nginx-sys's build directory on as `NGX_UPLOAD_NGINX_BUILD_DIR` (read with
//! `option_env!` by `locate::nginx_binary`): the vendored build leaves there the `nginx` binary
//! the module is built against. nginx-sys (`links = "nginx"`) gives it to the build scripts of
//! the packages that depend on it directly, so the `nginx-build-dir` feature makes this crate
//! one of them.
fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let Ok(build_dir) = std::env::var("DEP_NGINX_BUILD_DIR") {
        println!("cargo::rustc-env=NGX_UPLOAD_NGINX_BUILD_DIR={build_dir}");
    }
}
