//! Passes nginx-sys' build facts on: `ngx_feature`/`ngx_os`/version cfgs for the module code.
//! (The nginx build directory, where the vendored build leaves the `nginx` binary the module is
//! built against, reaches the integration tests through tests/support/build.rs.)
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
}
