//! The payload's bytes for the HTTP/2 client of the test support
//! ([`ngx_upload_test_support::h2`]): a range of the payload file, mapped read-only, so that
//! frames are written from the page cache without a copy into the client.

use std::io;
use std::os::fd::AsRawFd;

use crate::http::FileRange;

/// A range of the payload file mapped read-only: frames are written from it without a copy
/// into the client.
pub struct Mapped {
    base: *mut libc::c_void,
    map_len: usize,
    skip: usize,
}

impl Mapped {
    pub fn new(range: FileRange<'_>) -> io::Result<Mapped> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let start = range.offset / page * page;
        let skip = (range.offset - start) as usize;
        let map_len = skip + usize::try_from(range.len).map_err(io::Error::other)?;
        if range.len == 0 {
            return Ok(Mapped {
                base: std::ptr::null_mut(),
                map_len: 0,
                skip: 0,
            });
        }
        // SAFETY: a new read-only shared mapping of an open file; the kernel picks the address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                range.file.as_raw_fd(),
                start as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped {
            base,
            map_len,
            skip,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        if self.map_len == 0 {
            return &[];
        }
        // SAFETY: the mapping covers map_len readable bytes and lives as long as self; the
        // payload file is not written while the benchmark runs.
        unsafe {
            std::slice::from_raw_parts(
                self.base.cast::<u8>().add(self.skip),
                self.map_len - self.skip,
            )
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.map_len > 0 {
            // SAFETY: unmapping the mapping made in Mapped::new, no longer borrowed.
            unsafe { libc::munmap(self.base, self.map_len) };
        }
    }
}
