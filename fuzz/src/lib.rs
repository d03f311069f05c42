//! The checks behind the fuzz targets in `fuzz_targets/`, one module per target.
//!
//! Each `check(data)` takes the raw fuzzer input, runs it through a parser of
//! `ngx-upload-engine` by its public API only, and panics if a property fails: a round trip,
//! agreement with a simple model, or an invariant of the output. Keeping them in a library
//! lets `tests/corpus.rs` replay the committed corpus on stable Rust.

pub mod content_range;
pub mod disposition;
pub mod form_body;
pub mod hash_state;
pub mod multipart;
pub mod multipart_content_type;
pub mod range_set;
pub mod session_id;
pub mod state;
pub mod upload_state;

/// A little-endian cursor over the front of a fuzzer input, for targets that take a few
/// parameters before their payload. Reads past the end give zeros, so every input is valid.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }

    /// Up to `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.data
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
