//! Where files live: a root directory with nginx-style hashed levels (`upload_store /x 1 2`),
//! directory creation, and files created with an access mode.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// nginx allows at most three levels of one or two characters each.
pub const MAX_LEVELS: usize = 3;

/// A storage directory with hashed sub-directory levels, as `ngx_path_t` describes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedDir {
    pub root: PathBuf,
    /// Characters per level, outermost first; zero-length levels are not stored.
    pub levels: Vec<usize>,
}

impl HashedDir {
    pub fn new(root: impl Into<PathBuf>, levels: &[usize]) -> Self {
        Self {
            root: root.into(),
            levels: levels.iter().copied().filter(|l| *l > 0).collect(),
        }
    }

    /// Shortest file name the levels can be taken from.
    pub fn min_name_len(&self) -> usize {
        self.levels.iter().sum()
    }

    /// `root/<l1>/<l2>/name`, where each level is taken from the end of `name`, exactly as
    /// nginx's `ngx_create_hashed_filename` does: level 1 is the last `levels[0]` characters,
    /// level 2 the `levels[1]` before them. `None` if `name` is too short.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        if name.len() < self.min_name_len() || !name.is_ascii() {
            return None;
        }
        let mut path = self.root.clone();
        let mut end = name.len();
        for level in &self.levels {
            path.push(&name[end - level..end]);
            end -= level;
        }
        path.push(name);
        Some(path)
    }
}

/// Directory mode for a file access mode, as nginx's `ngx_dir_access`: readable implies
/// searchable.
pub fn dir_mode(file_mode: u32) -> u32 {
    let mode = file_mode | ((file_mode & 0o444) >> 2);
    mode | 0o700
}

/// Creates the parent directories of `path` below `root` (the root itself is nginx's to create).
pub fn create_parents(path: &Path, file_mode: u32) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fs::DirBuilder::new()
            .recursive(true)
            .mode(dir_mode(file_mode))
            .create(parent),
        _ => Ok(()),
    }
}

/// Opens (creating if needed, with its directories) a file for reading and writing.
pub fn open_rw(path: &Path, file_mode: u32) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(file_mode)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_parents(path, file_mode)?;
            open()
        }
        other => other,
    }
}

/// Creates the file at `path`, which must not exist yet (`O_EXCL`), readable and writable,
/// and the directories it lies in if they are missing.
pub(crate) fn create_new(path: &Path, file_mode: u32) -> io::Result<File> {
    let create = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(file_mode)
            .open(path)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_parents(path, file_mode)?;
            create()
        }
        other => other,
    }
}

/// Creates a new file with a unique 10-digit name in `dir`, as nginx names its temporary files
/// (`0000000042`), hashed into the levels from the end of the name.
pub fn create_numbered(dir: &HashedDir, file_mode: u32) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for _ in 0..1000 {
        let n = seed.wrapping_add(COUNTER.fetch_add(7919, Ordering::Relaxed));
        let name = format!("{:010}", n);
        let path = dir.path_of(&name).expect("10 digits cover 3 levels of 2");
        match create_new(&path, file_mode) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free file name after 1000 tries",
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hashes_from_the_end_like_nginx() {
        let dir = HashedDir::new("/s", &[1, 2, 0]);
        assert_eq!(
            dir.path_of("0123456789").unwrap(),
            Path::new("/s/9/78/0123456789")
        );
        let dir = HashedDir::new("/s", &[2]);
        assert_eq!(dir.path_of("abc").unwrap(), Path::new("/s/bc/abc"));
        let flat = HashedDir::new("/s", &[]);
        assert_eq!(flat.path_of("x").unwrap(), Path::new("/s/x"));
    }

    #[test]
    fn refuses_names_shorter_than_the_levels() {
        let dir = HashedDir::new("/s", &[2, 2, 2]);
        assert_eq!(dir.min_name_len(), 6);
        assert!(dir.path_of("12345").is_none());
        assert!(dir.path_of("123456").is_some());
    }

    #[test]
    fn directory_mode_follows_nginx() {
        assert_eq!(dir_mode(0o600), 0o700);
        assert_eq!(dir_mode(0o644), 0o755);
        assert_eq!(dir_mode(0o660), 0o770);
    }

    #[test]
    fn creates_files_and_levels_with_modes() {
        let tmp = tempdir();
        let dir = HashedDir::new(&tmp, &[1, 2]);
        let path = dir.path_of("session42").unwrap();
        let file = open_rw(&path, 0o640).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o640);
        assert!(tmp.join("2/n4/session42").is_file());
        let (p1, _) = create_numbered(&dir, 0o600).unwrap();
        let (p2, _) = create_numbered(&dir, 0o600).unwrap();
        assert_ne!(p1, p2);
        let name = p1.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 10);
        assert!(name.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(dir.path_of(name).unwrap(), p1);
        fs::remove_dir_all(&tmp).unwrap();
    }

    pub(crate) fn tempdir() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "ngx-upload-engine-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).unwrap();
        p
    }
}
