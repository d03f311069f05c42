//! A resumable upload session on disk: the output file that segments are written into at their
//! offsets, and the state file that records which ranges are held.
//!
//! Any number of requests, in any worker process, may work on one session at once. They
//! serialise on an exclusive `flock` of the output file, held only while the state file is read
//! and replaced, never while waiting for the network. Data is written before the state that
//! claims it, and the state file is replaced by rename, so it never claims bytes not written.

use crate::content_range::ContentRange;
use crate::session_id::SessionId;
use crate::state::{SessionState, StateError, MAX_STATE_LEN};
use crate::store::{self, HashedDir};
use core::fmt;
use std::fs::{self, File};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where a location keeps its sessions.
#[derive(Debug, Clone)]
pub struct SessionStore {
    pub data: HashedDir,
    pub state: HashedDir,
    /// Mode of created files (`upload_store_access`).
    pub file_mode: u32,
}

#[derive(Debug)]
pub enum SessionError {
    /// The session id is shorter than the hashed levels need.
    IdTooShort {
        need: usize,
    },
    /// The segment names another total size than the session was started with.
    TotalMismatch {
        stored: u64,
        sent: u64,
    },
    /// The state file exists but cannot be understood.
    DamagedState(StateError),
    Io(io::Error),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdTooShort { need } => {
                write!(
                    f,
                    "session id is shorter than the {need} characters upload_store levels need"
                )
            }
            Self::TotalMismatch { stored, sent } => {
                write!(
                    f,
                    "total size {sent} differs from the session's total size {stored}"
                )
            }
            Self::DamagedState(e) => write!(f, "damaged state file: {e}"),
            Self::Io(e) => e.fmt(f),
        }
    }
}

impl From<io::Error> for SessionError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// An open session: the output file, and the paths of both files.
#[derive(Debug)]
pub struct Session {
    file: File,
    data_path: PathBuf,
    state_path: PathBuf,
    total: u64,
}

impl SessionStore {
    pub fn data_path(&self, id: &SessionId) -> Result<PathBuf, SessionError> {
        self.data
            .path_of(id.as_str())
            .ok_or(SessionError::IdTooShort {
                need: self.data.min_name_len(),
            })
    }

    pub fn state_path(&self, id: &SessionId) -> Result<PathBuf, SessionError> {
        // Levels come from the end of the whole leaf, `.state` included, as nginx-upload-module
        // does it, so state files stay where existing deployments expect them.
        self.state
            .path_of(&format!("{}.state", id.as_str()))
            .ok_or(SessionError::IdTooShort {
                need: self.state.min_name_len(),
            })
    }

    /// What a session holds, for a client asking before it resumes; `None` if there is no such
    /// session (or its output file is gone, so nothing it claims is there). Creates nothing.
    pub fn progress(&self, id: &SessionId) -> Result<Option<SessionState>, SessionError> {
        if !self.data_path(id)?.exists() {
            return Ok(None);
        }
        // The state file is replaced by rename, so an unlocked read sees a whole version.
        match fs::read(self.state_path(id)?) {
            Ok(bytes) => SessionState::decode(&bytes)
                .map(Some)
                .map_err(SessionError::DamagedState),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the session for a segment of `range`, creating it if it is new. Fails with
    /// [`SessionError::TotalMismatch`] if the session exists with another total size.
    pub fn open(&self, id: &SessionId, range: &ContentRange) -> Result<Session, SessionError> {
        let data_path = self.data_path(id)?;
        let state_path = self.state_path(id)?;
        let (file, created) = open_or_create(&data_path, self.file_mode)?;
        let session = Session {
            file,
            data_path,
            state_path,
            total: range.total,
        };
        session.check_total(created, self.file_mode)?;
        Ok(session)
    }
}

impl Session {
    fn check_total(&self, created: bool, file_mode: u32) -> Result<(), SessionError> {
        let session = self;
        let _lock = session.lock()?;
        let state = match session.read_state()? {
            // An output file that had to be created cannot hold what an old state file claims
            // (the backend moved the finished file away, or someone deleted it): start afresh.
            Some(state) if !created => state,
            _ => {
                let state = SessionState::new(session.total);
                session.write_state(&state, file_mode)?;
                state
            }
        };
        if state.total != session.total {
            return Err(SessionError::TotalMismatch {
                stored: state.total,
                sent: session.total,
            });
        }
        Ok(())
    }

    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Records that `[start, end)` is written, and returns the session's state after it.
    pub fn record(
        &self,
        start: u64,
        end: u64,
        file_mode: u32,
    ) -> Result<SessionState, SessionError> {
        let _lock = self.lock()?;
        let mut state = self
            .read_state()?
            .unwrap_or_else(|| SessionState::new(self.total));
        if state.total != self.total {
            return Err(SessionError::TotalMismatch {
                stored: state.total,
                sent: self.total,
            });
        }
        if !state.received.contains(start, end) {
            state.received.insert(start, end);
            self.write_state(&state, file_mode)?;
        }
        Ok(state)
    }

    /// The state as recorded now.
    pub fn current_state(&self) -> Result<SessionState, SessionError> {
        let _lock = self.lock()?;
        Ok(self
            .read_state()?
            .unwrap_or_else(|| SessionState::new(self.total)))
    }

    /// Removes both files (for `upload_cleanup`).
    pub fn remove(&self) -> io::Result<()> {
        let _lock = self.lock()?;
        let data = remove_if_present(&self.data_path);
        let state = remove_if_present(&self.state_path);
        data.and(state)
    }

    /// Removes the state file only: the upload is finished and its file belongs to the backend.
    pub fn forget_state(&self) -> io::Result<()> {
        let _lock = self.lock()?;
        remove_if_present(&self.state_path)
    }

    fn lock(&self) -> io::Result<FileLock<'_>> {
        FileLock::exclusive(&self.file)
    }

    fn read_state(&self) -> Result<Option<SessionState>, SessionError> {
        let file = match File::open(&self.state_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        file.take(MAX_STATE_LEN as u64 + 1)
            .read_to_end(&mut bytes)?;
        SessionState::decode(&bytes)
            .map(Some)
            .map_err(SessionError::DamagedState)
    }

    /// Replaces the state file atomically: a reader sees the old state or the new, never a
    /// torn one. Called with the lock held, so one temporary name is enough.
    fn write_state(&self, state: &SessionState, file_mode: u32) -> io::Result<()> {
        let mut tmp = self.state_path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = match create_truncated(&tmp, file_mode) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                store::create_parents(&tmp, file_mode)?;
                create_truncated(&tmp, file_mode)
            }
            other => other,
        }?;
        file.write_all(&state.encode())?;
        drop(file);
        fs::rename(&tmp, &self.state_path)
    }
}

fn create_truncated(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
}

fn open_or_create(path: &Path, mode: u32) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let existing = fs::OpenOptions::new().read(true).write(true).open(path);
    match existing {
        Ok(f) => Ok((f, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let create = || {
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(path)
            };
            let created = match create() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    store::create_parents(path, mode)?;
                    create()
                }
                other => other,
            };
            match created {
                Ok(f) => Ok((f, true)),
                // Another request created it between our two opens.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((
                    fs::OpenOptions::new().read(true).write(true).open(path)?,
                    false,
                )),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes all of `bufs` at `offset`, with as few `pwritev` calls as the kernel allows.
pub fn write_all_at(file: &File, mut offset: u64, bufs: &[IoSlice<'_>]) -> io::Result<()> {
    let mut storage: Vec<IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).copied().collect();
    let mut slices = &mut storage[..];
    while !slices.is_empty() {
        let iov = slices.len().min(1024);
        // SAFETY: IoSlice is ABI-compatible with iovec; the file descriptor is open for writing
        // for the duration of the call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                iov as libc::c_int,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        offset += n as u64;
        IoSlice::advance_slices(&mut slices, n as usize);
    }
    Ok(())
}

/// An exclusive `flock` on an open file, released on drop. `flock` locks belong to the open
/// file description, so they exclude other requests in the same worker as well as other
/// processes.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a File) -> io::Result<Self> {
        loop {
            // SAFETY: flock on a valid open descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocking a lock this descriptor holds.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content_range;
    use std::os::unix::fs::FileExt;

    fn write_at(file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    fn store(root: &Path, levels: &[usize]) -> SessionStore {
        SessionStore {
            data: HashedDir::new(root.join("data"), levels),
            state: HashedDir::new(root.join("state"), levels),
            file_mode: 0o600,
        }
    }

    fn range(s: &str) -> ContentRange {
        content_range::parse(s.as_bytes()).unwrap()
    }

    fn id(s: &str) -> SessionId {
        SessionId::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn segments_in_any_order_assemble_the_file() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[1, 2]);
        let content: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let segments = [(6000, 9999), (0, 2999), (3000, 5999)];
        let mut last = None;
        for (a, b) in segments {
            let r = range(&format!("bytes {a}-{b}/10000"));
            let s = st.open(&id("abc123"), &r).unwrap();
            let (x, y) = content[a..=b].split_at(100);
            write_all_at(s.file(), a as u64, &[IoSlice::new(x), IoSlice::new(y)]).unwrap();
            last = Some(s.record(a as u64, b as u64 + 1, 0o600).unwrap());
        }
        let state = last.unwrap();
        assert!(state.is_complete());
        let path = tmp.join("data/3/12/abc123");
        assert_eq!(fs::read(&path).unwrap(), content);
        assert!(tmp.join("state/e/at/abc123.state").is_file());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn another_total_is_a_conflict_and_changes_nothing() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let s = st.open(&id("s1"), &range("bytes 0-9/100")).unwrap();
        write_at(s.file(), 0, b"0123456789").unwrap();
        s.record(0, 10, 0o600).unwrap();
        let before = fs::read(s.state_path()).unwrap();
        let err = st.open(&id("s1"), &range("bytes 0-9/200")).unwrap_err();
        assert!(matches!(
            err,
            SessionError::TotalMismatch {
                stored: 100,
                sent: 200
            }
        ));
        assert_eq!(fs::read(s.state_path()).unwrap(), before);
        assert_eq!(fs::read(s.data_path()).unwrap(), b"0123456789");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_vanished_output_file_restarts_the_session() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let s = st.open(&id("s2"), &range("bytes 0-3/4")).unwrap();
        write_at(s.file(), 0, b"abcd").unwrap();
        assert!(s.record(0, 4, 0o600).unwrap().is_complete());
        fs::remove_file(s.data_path()).unwrap();
        // A new upload under the same id, with another size, is a new session.
        let s = st.open(&id("s2"), &range("bytes 0-1/8")).unwrap();
        assert_eq!(s.current_state().unwrap(), SessionState::new(8));
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn damaged_state_is_reported_not_overwritten() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let s = st.open(&id("s3"), &range("bytes 0-3/4")).unwrap();
        fs::write(s.state_path(), b"garbage").unwrap();
        assert!(matches!(
            st.open(&id("s3"), &range("bytes 0-3/4")),
            Err(SessionError::DamagedState(_))
        ));
        assert_eq!(fs::read(s.state_path()).unwrap(), b"garbage");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn progress_reports_without_creating_anything() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[1]);
        assert!(st.progress(&id("none1")).unwrap().is_none());
        assert!(!tmp.join("data").exists() && !tmp.join("state").exists());
        let s = st.open(&id("some1"), &range("bytes 5-9/10")).unwrap();
        write_at(s.file(), 5, b"56789").unwrap();
        s.record(5, 10, 0o600).unwrap();
        let p = st.progress(&id("some1")).unwrap().unwrap();
        assert_eq!(p.received.report(p.total).to_string(), "5-9/10");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn short_ids_are_refused_when_levels_need_more() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[2, 2]);
        assert!(matches!(
            st.open(&id("abc"), &range("bytes 0-0/1")),
            Err(SessionError::IdTooShort { need: 4 })
        ));
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn concurrent_threads_never_lose_a_range() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[1]);
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let st = st.clone();
                std::thread::spawn(move || {
                    for k in 0..25u64 {
                        let i = k * 8 + t;
                        let r = range(&format!("bytes {}-{}/2000", i * 10, i * 10 + 9));
                        let s = st.open(&id("para1"), &r).unwrap();
                        write_at(s.file(), i * 10, &[i as u8; 10]).unwrap();
                        s.record(i * 10, i * 10 + 10, 0o600).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = st.open(&id("para1"), &range("bytes 0-0/2000")).unwrap();
        assert!(s.current_state().unwrap().is_complete());
        let data = fs::read(s.data_path()).unwrap();
        assert!(data.chunks(10).enumerate().all(|(i, c)| c == [i as u8; 10]));
        s.remove().unwrap();
        assert!(!s.data_path().exists() && !s.state_path().exists());
        fs::remove_dir_all(&tmp).unwrap();
    }
}
