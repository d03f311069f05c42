//! Test data and the store on disk: deterministic pseudo-random bytes, segment cuts,
//! snapshots of directories and comparisons that name what differs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// xorshift64*: deterministic, dependency-free test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// `len` deterministic pseudo-random bytes.
pub fn test_data(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Inclusive `(first, last)` segment bounds cutting `total` bytes into `size`-byte pieces.
pub fn segments(total: usize, size: usize) -> Vec<(usize, usize)> {
    (0..total)
        .step_by(size)
        .map(|a| (a, (a + size).min(total) - 1))
        .collect()
}

/// Every regular file under `root` (or `root` itself if it is a file) with its content.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(path: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), out);
                }
            }
        } else {
            out.insert(path.to_path_buf(), fs::read(path).unwrap_or_default());
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

/// Asserts two snapshots are equal, naming the files that differ.
#[track_caller]
pub fn assert_same_files(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let mut problems = Vec::new();
    for (path, content) in after {
        match before.get(path) {
            None => problems.push(format!(
                "new file {} ({} bytes)",
                path.display(),
                content.len()
            )),
            Some(old) if old != content => problems.push(format!(
                "changed {} ({} → {} bytes)",
                path.display(),
                old.len(),
                content.len()
            )),
            _ => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        problems.push(format!("removed {}", path.display()));
    }
    assert!(
        problems.is_empty(),
        "stored files changed:\n{}",
        problems.join("\n")
    );
}

/// Asserts `actual == expected` for large byte strings without printing them whole.
#[track_caller]
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first_diff = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: {} bytes, expected {} bytes; first difference at byte {first_diff}",
        actual.len(),
        expected.len()
    );
}

/// The regular files under `dir` (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir).into_keys().collect()
}
