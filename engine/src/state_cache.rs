//! A process's memory of the state files it read or wrote last, so that reading one again
//! costs one `statx` instead of opening, reading and decoding it. A shuffled upload reads its
//! state twice a segment (checking the segment, recording it), and its state is hundreds of
//! appended lines by the end.
//!
//! A remembered state is used only while the file at its path is provably the file it was read
//! from, unchanged: same device, inode, birth time, size and modification time. That holds
//! because no writer changes a state file in place: they append to it (the size grows) or
//! replace it by rename (another inode). Where the filesystem records no birth time (an inode
//! number can be reused by a later file of the same size), nothing is remembered.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::disk;
use crate::idle_files;
use crate::state::MAX_STATE_LEN;

/// States remembered at most; past it the memory starts over (a worker rarely has more
/// uploads in flight at once).
const CAPACITY: usize = 1024;

/// What identifies one version of a state file: the file (device, inode, birth time) and its
/// length. Writers only ever append to a state file (which changes its length) or replace it
/// by renaming a new file over it (another inode, born later), so the length tells the
/// versions of one file apart, and a writer that appended knows the new one without asking.
/// The modification time goes along, for expiry; it is no part of the identity.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    dev: u64,
    ino: u64,
    born_ns: u128,
    len: u64,
    modified_ns: i128,
}

impl PartialEq for Stamp {
    fn eq(&self, other: &Stamp) -> bool {
        (self.dev, self.ino, self.born_ns, self.len)
            == (other.dev, other.ino, other.born_ns, other.len)
    }
}

impl Eq for Stamp {}

impl Stamp {
    /// The same file after `appended` more bytes were appended to it just now.
    fn after_append(self, appended: usize) -> Stamp {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(self.modified_ns, |d| d.as_nanos() as i128);
        Stamp {
            len: self.len + appended as u64,
            modified_ns: now,
            ..self
        }
    }

    /// The modification time it records.
    fn modified(&self) -> Option<SystemTime> {
        let ns = u64::try_from(self.modified_ns).ok()?;
        Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
    }

    fn of(meta: &fs::Metadata) -> Option<Stamp> {
        let born_ns = disk::born_ns(meta)?;
        Some(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            born_ns,
            len: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

/// A state file as read: its decoded state, its length, and whether its last line is cut
/// short (a crash during an append), in which case the next write must not append to it.
#[derive(Debug, Clone)]
pub(crate) struct StateRead<T> {
    pub state: T,
    pub len: usize,
    pub torn: bool,
    /// The file's modification time as read (for expiry), when known.
    pub modified: Option<SystemTime>,
}

impl<T> StateRead<T> {
    /// The modification time of the state file at `path` as read; asked of the path again
    /// only if the read did not have it.
    pub fn state_modified(&self, path: &Path) -> io::Result<Option<SystemTime>> {
        match self.modified {
            Some(at) => Ok(Some(at)),
            None => disk::modified(path),
        }
    }
}

struct Entry<T> {
    stamp: Stamp,
    read: StateRead<T>,
}

/// Keyed by the path's bytes: `Path`'s own `Hash` and `==` parse it into components, which
/// cost more than the rest of a lookup. The store builds an upload's paths the same way every
/// time.
type Entries<T> = HashMap<OsString, Entry<T>>;

pub(crate) struct StateCache<T> {
    entries: Mutex<Option<Entries<T>>>,
}

impl<T: Clone> StateCache<T> {
    pub const fn new() -> Self {
        Self {
            entries: Mutex::new(None),
        }
    }

    /// The state file at `path`, decoded by `decode`; `None` if there is none. A decoding
    /// error is `Ok(Err(..))`, and nothing is remembered of such a file.
    pub fn read<E>(
        &self,
        path: &Path,
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> io::Result<Option<Result<StateRead<T>, E>>> {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(path);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if let Some(stamp) = Stamp::of(&meta) {
            if let Some(mut read) = self.lookup(path, stamp) {
                read.modified = meta.modified().ok();
                return Ok(Some(Ok(read)));
            }
        }
        let (bytes, stamp) = match read_with_stamp(path)? {
            Some(read) => read,
            None => {
                self.forget(path);
                return Ok(None);
            }
        };
        let state = match decode(&bytes) {
            Ok(state) => state,
            Err(e) => {
                self.forget(path);
                return Ok(Some(Err(e)));
            }
        };
        let read = StateRead {
            state,
            len: bytes.len(),
            torn: bytes.last().is_some_and(|&b| b != b'\n'),
            // Of the version read (its descriptor's, after reading), else of the path's.
            modified: stamp
                .and_then(|s| s.modified())
                .or_else(|| meta.modified().ok()),
        };
        // An append between reading and the stamp would make the stamp name more bytes than
        // were decoded: remembered only when they agree.
        match stamp {
            Some(stamp) if stamp.len == bytes.len() as u64 => self.store(path, stamp, read.clone()),
            _ => self.forget(path),
        }
        Ok(Some(Ok(read)))
    }

    /// Replaces the state file at `path` with `bytes`, the encoding of `state`
    /// ([`disk::replace_state_file`]), and remembers `state` as what it says.
    pub fn replace(
        &self,
        path: &Path,
        state: &T,
        bytes: &[u8],
        file_mode: u32,
        durable: bool,
    ) -> io::Result<()> {
        let written = disk::replace_state_file(path, bytes, file_mode, durable);
        self.after_write(path, written, state)
    }

    /// Appends `lines` to the state file at `path` ([`disk::append_state_lines`]), after which
    /// it says `state`, and remembers that. Called under the writers' lock right after
    /// [`Self::read`] of the same path, so the file remembered for the path is the one there:
    /// the descriptor kept from an earlier append to that very file is used
    /// ([`idle_files::take_appender`]), which saves an `openat` and a `close` a commit.
    pub fn append(&self, path: &Path, lines: &str, durable: bool, state: &T) -> io::Result<()> {
        let stamp = self
            .lock()
            .as_ref()
            .and_then(|m| m.get(path.as_os_str()))
            .map(|e| e.stamp);
        let kept = stamp.and_then(|s| Some((s, idle_files::take_appender(path, s.dev, s.ino)?)));
        if let Some((stamp, appender)) = kept {
            // The very version read under the writers' lock, through its own descriptor: what
            // the file is after the append is known without an fstat.
            return match disk::append_state_lines(appender.file(), lines, durable) {
                Ok(()) => {
                    appender.keep();
                    self.remember_stamp(path, stamp.after_append(lines.len()), state);
                    Ok(())
                }
                Err(e) => {
                    self.forget(path);
                    Err(e)
                }
            };
        }
        let file = idle_files::open_with_retry(|| fs::OpenOptions::new().append(true).open(path));
        let written = file.and_then(|file| {
            disk::append_state_lines(&file, lines, durable)?;
            let meta = file.metadata().ok();
            // Without a stamp nothing is remembered of the file, so nothing would use it.
            if let Some(meta) = meta.as_ref().filter(|m| Stamp::of(m).is_some()) {
                idle_files::keep_appender(path, meta.dev(), meta.ino(), file);
            }
            Ok(meta)
        });
        self.after_write(path, written, state)
    }

    /// What a write leaves remembered: `state`, or nothing if the write failed.
    fn after_write(
        &self,
        path: &Path,
        written: io::Result<Option<fs::Metadata>>,
        state: &T,
    ) -> io::Result<()> {
        match written {
            Ok(meta) => {
                self.remember(path, meta.as_ref(), state);
                Ok(())
            }
            Err(e) => {
                self.forget(path);
                Err(e)
            }
        }
    }

    /// Remembers `state` as what the file at `path` now says, right after this process wrote
    /// it (under the lock that keeps other writers out, so nothing else changed it since);
    /// `written` is the metadata of the file as written, by its descriptor.
    fn remember(&self, path: &Path, written: Option<&fs::Metadata>, state: &T) {
        match written.and_then(Stamp::of) {
            Some(stamp) => self.remember_stamp(path, stamp, state),
            None => self.forget(path),
        }
    }

    /// Remembers `state` as what the version `stamp` of the file at `path` says.
    fn remember_stamp(&self, path: &Path, stamp: Stamp, state: &T) {
        self.store(
            path,
            stamp,
            StateRead {
                state: state.clone(),
                len: stamp.len as usize,
                torn: false,
                modified: stamp.modified(),
            },
        );
    }

    /// Drops what is remembered of `path`: it was written in a way [`Self::remember`] cannot
    /// vouch for, or removed.
    pub fn forget(&self, path: &Path) {
        if let Some(map) = self.lock().as_mut() {
            map.remove(path.as_os_str());
        }
        idle_files::forget_appenders(path);
    }

    fn lookup(&self, path: &Path, stamp: Stamp) -> Option<StateRead<T>> {
        let entries = self.lock();
        let entry = entries.as_ref()?.get(path.as_os_str())?;
        (entry.stamp == stamp).then(|| entry.read.clone())
    }

    fn store(&self, path: &Path, stamp: Stamp, read: StateRead<T>) {
        let mut entries = self.lock();
        let map = entries.get_or_insert_with(HashMap::new);
        let entry = Entry { stamp, read };
        // Every commit of a segment stores its state again: the path is copied only once.
        if let Some(known) = map.get_mut(path.as_os_str()) {
            *known = entry;
            return;
        }
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(path.as_os_str().to_owned(), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Entries<T>>> {
        // A panic while holding it leaves a map that is still whole: go on with it.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The bytes of a state file (at most [`MAX_STATE_LEN`] + 1, so that a decoder can tell a file
/// too large) and the stamp of the open file once read; `None` if there is no file.
fn read_with_stamp(path: &Path) -> io::Result<Option<(Vec<u8>, Option<Stamp>)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A buffer as large as a typical state: one read(2) for it, and one to see its end.
    let mut bytes = Vec::with_capacity(4096);
    (&file)
        .take(MAX_STATE_LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    let stamp = file.metadata().ok().and_then(|meta| Stamp::of(&meta));
    Ok(Some((bytes, stamp)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decode_lines(bytes: &[u8]) -> Result<Vec<String>, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        if text.starts_with("bad") {
            return Err("bad".into());
        }
        Ok(text.lines().map(str::to_string).collect())
    }

    fn has_birth_time(dir: &Path) -> bool {
        let probe = dir.join("probe");
        fs::write(&probe, b"x").unwrap();
        fs::metadata(&probe).unwrap().created().is_ok()
    }

    /// Every way the file changes under the cache is seen: appends, replacement by rename,
    /// removal, a damaged version; and a remembered state is returned without reading.
    #[test]
    fn sees_every_change_and_remembers_writes() {
        let dir = crate::store::tests::tempdir();
        let path = dir.join("s.state");
        let cache: StateCache<Vec<String>> = StateCache::new();
        assert!(cache.read(&path, decode_lines).unwrap().is_none());
        fs::write(&path, b"a\n").unwrap();
        let read = cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        assert_eq!(
            (read.state, read.len, read.torn),
            (vec!["a".into()], 2, false)
        );
        // Appended by someone else: read again.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"b")
            .unwrap();
        let read = cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        assert_eq!((read.state.len(), read.len, read.torn), (2, 3, true));
        // Replaced by rename with as many bytes: another inode, read again.
        let tmp = dir.join("s.tmp");
        fs::write(&tmp, b"c\nd").unwrap();
        fs::rename(&tmp, &path).unwrap();
        let read = cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        assert_eq!(read.state, ["c", "d"]);
        // Damaged: the error, and nothing remembered.
        fs::write(&tmp, b"bad\n").unwrap();
        fs::rename(&tmp, &path).unwrap();
        assert!(cache.read(&path, decode_lines).unwrap().unwrap().is_err());
        // Removed.
        fs::remove_file(&path).unwrap();
        assert!(cache.read(&path, decode_lines).unwrap().is_none());
        // What this process wrote is remembered as it said, without decoding the file.
        let remembered = vec!["remembered".to_string()];
        cache
            .replace(&path, &remembered, b"e\n", 0o600, false)
            .unwrap();
        let read = cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        if has_birth_time(&dir) {
            assert_eq!(read.state, ["remembered"]);
            assert_eq!(read.len, 2);
        } else {
            assert_eq!(read.state, ["e"]);
        }
    }

    /// An append goes through the descriptor kept from the last one only while the path still
    /// names that file: after a replacement by rename it goes to the new file, never the old.
    #[test]
    fn appends_reuse_a_descriptor_of_the_same_file_only() {
        let dir = crate::store::tests::tempdir();
        let path = dir.join("a.state");
        let cache: StateCache<Vec<String>> = StateCache::new();
        fs::write(&path, b"a\n").unwrap();
        let read = cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        cache.append(&path, "b\n", false, &read.state).unwrap();
        let kept = idle_files::appenders_of(&path);
        if !has_birth_time(&dir) {
            assert_eq!(kept, 0, "nothing is remembered, so nothing kept");
            return;
        }
        assert_eq!(kept, 1);
        cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        cache.append(&path, "c\n", false, &vec![]).unwrap();
        assert_eq!(
            idle_files::appenders_of(&path),
            1,
            "the same one, kept again"
        );
        assert_eq!(fs::read(&path).unwrap(), b"a\nb\nc\n");
        // Replaced by another writer; the old file stays reachable to check it is untouched.
        let old = dir.join("old.state");
        fs::hard_link(&path, &old).unwrap();
        let tmp = dir.join("a.tmp");
        fs::write(&tmp, b"x\n").unwrap();
        fs::rename(&tmp, &path).unwrap();
        cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        cache.append(&path, "y\n", false, &vec![]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"x\ny\n");
        assert_eq!(fs::read(&old).unwrap(), b"a\nb\nc\n");
        assert_eq!(
            idle_files::appenders_of(&path),
            1,
            "the old file's is closed"
        );
        cache.forget(&path);
        assert_eq!(idle_files::appenders_of(&path), 0);
    }

    /// An append through the kept descriptor knows the file's new version without an fstat:
    /// the next read is answered from memory (the decoder is not called), with the state the
    /// append left and the file's real length and modification time; an append by someone
    /// else, even of as many bytes again, is seen.
    #[test]
    fn an_append_through_the_kept_descriptor_is_remembered_as_the_file_now_is() {
        let dir = crate::store::tests::tempdir();
        if !has_birth_time(&dir) {
            return; // nothing is remembered without a birth time (the test above covers it)
        }
        let path = dir.join("k.state");
        let cache: StateCache<Vec<String>> = StateCache::new();
        fs::write(&path, b"a\n").unwrap();
        let read = cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        cache.append(&path, "b\n", false, &read.state).unwrap();
        assert_eq!(idle_files::appenders_of(&path), 1);
        let said = vec!["said".to_string()];
        cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        cache.append(&path, "c\n", false, &said).unwrap();
        let not_decoded = |_: &[u8]| -> Result<Vec<String>, String> {
            panic!("the remembered version is the file's: nothing to decode")
        };
        let read = cache.read(&path, not_decoded).unwrap().unwrap().unwrap();
        assert_eq!((read.state.clone(), read.len), (said.clone(), 6));
        let on_disk = fs::metadata(&path).unwrap();
        assert_eq!(on_disk.len(), 6);
        assert_eq!(
            read.modified,
            on_disk.modified().ok(),
            "the file's own mtime"
        );
        // Another writer appends as many bytes again: another length, read afresh.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"d\n")
            .unwrap();
        let read = cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        assert_eq!(read.state, ["a", "b", "c", "d"]);
        cache.forget(&path);
    }

    #[test]
    fn is_bounded() {
        let dir = crate::store::tests::tempdir();
        let cache: StateCache<Vec<String>> = StateCache::new();
        for i in 0..CAPACITY + 10 {
            let path = dir.join(format!("{i}.state"));
            fs::write(&path, b"x\n").unwrap();
            cache.read(&path, decode_lines).unwrap().unwrap().unwrap();
        }
        let held = cache.lock().as_ref().map_or(0, HashMap::len);
        assert!(held <= CAPACITY, "{held}");
    }
}
