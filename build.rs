//! Passes nginx-sys' build facts on: `ngx_feature`/`ngx_os`/version cfgs for the module code, and
//! the nginx build directory for the integration tests (the vendored build leaves the `nginx`
//! binary there, the very binary the module is built against).
fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        std::env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or("any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = std::env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }
    println!("cargo::rustc-check-cfg=cfg(nginx1_25_1)");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    if let Ok(version) = std::env::var("DEP_NGINX_VERSION_NUMBER") {
        if version.parse::<u64>().unwrap_or(0) >= 1_025_001 {
            println!("cargo::rustc-cfg=nginx1_25_1");
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let Ok(build_dir) = std::env::var("DEP_NGINX_BUILD_DIR") {
        println!("cargo::rustc-env=NGX_UPLOAD_NGINX_BUILD_DIR={build_dir}");
    }
}
