//! Replays every committed input in `corpus/<target>/` through the target's checks, on stable
//! Rust, without libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml`.
//!
//! Committed inputs are hand-written seeds (`seed-*`) and reproducers of fixed bugs
//! (`regress-*`).

use std::fs;
use std::path::Path;

const COMMITTED: &[&str] = &["seed-", "regress-"];

fn replay(target: &str, check: fn(&[u8])) {
    replay_only(target, COMMITTED, check);
}

fn replay_only(target: &str, prefixes: &[&str], check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut inputs = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Only what git tracks; a local fuzzing run adds hash-named files next to them.
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let data = fs::read(&path).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            eprintln!("{target}: {} fails", path.display());
            std::panic::resume_unwind(panic);
        }
        inputs += 1;
    }
    assert!(inputs > 0, "no inputs {prefixes:?} in {}", dir.display());
}

macro_rules! targets {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), ngx_upload_fuzz::$target::check);
            }
        )*
    };
}

targets!(
    content_range,
    disposition,
    session_id,
    state,
    upload_state,
    range_set,
    hash_state,
    multipart,
    multipart_content_type,
    form_body,
);
