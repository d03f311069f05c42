//! The state file of a resumable session: which bytes of the output file are durably written.
//!
//! Text, one fact per line, so an operator can read it:
//! ```text
//! ngx-upload-state 1
//! total 511920
//! received 0-51200,460809-511919
//! file 1835023.1763762231000000000
//! hash 1 upto=51201 md5=<hex>
//! ```
//! A request that records a segment appends to the file instead of rewriting it (replacing a
//! file by rename costs a flush on ext4, and rewriting would cost the whole range list per
//! segment):
//! ```text
//! + 51201-102401
//! hash 1 upto=102402 md5=<hex>
//! ```
//! `+ a-b` adds a range; a later `hash` line replaces an earlier one. The file is rewritten
//! whole (by rename) only when it has grown past a few kilobytes. A crash can leave the last
//! line unfinished: it is ignored, as is everything from the first appended line that cannot
//! be read, which can only make the state claim less.
//!
//! Ranges are inclusive like the protocol's. `file` (optional) identifies the output file the
//! state describes (inode number, and birth time where the filesystem has one): a state naming
//! another file is left over from an earlier file of the same name and claims nothing. `hash` (optional) is the hash progress of the
//! file's prefix, see `hash_state.rs`. Unknown keys are ignored, so later versions may add lines
//! that older ones skip.
//!
//! # Uploads (`upload.rs`)
//!
//! An upload created by id ([`crate::upload::UploadStore::create`]) has a state in the same
//! format, read by [`UploadState`], with two more keys, both ignored by [`SessionState`] and by
//! older versions (which skip unknown keys):
//! ```text
//! length deferred
//! meta filename bXlmaWxlLnR4dA==
//! meta x:user
//! ```
//! - `length <n>` or `length deferred`: the upload's length where `total` cannot say it, that is
//!   when it is 0 or not declared yet. A known length above 0 is written as `total` (and no
//!   `length`), so such a state is exactly a session's, and older versions read it. A state with
//!   `length` and no `total` has none for them: they refuse it as damaged, never misread it.
//! - `meta <key> <value>`: one metadata pair; the key is 1 to [`MAX_METADATA_KEY_LEN`] visible
//!   ASCII characters (no space), the value any bytes in [`crate::base64`], left out when empty.
//!   A later line of the same key replaces an earlier one. Keys and values together are at most
//!   [`MAX_METADATA_LEN`] bytes.
//!
//! While the length is deferred, ranges may lie anywhere below
//! [`crate::content_range::MAX_OFFSET`].
//!
//! A part of a final upload created before the part was complete (tus
//! concatenation-unfinished) names that final upload, one line per final, appended when the
//! final is created:
//! ```text
//! awaited-by 6cUqWmOdfZ0yW3NbvSLTsOq7Lm3Y8Kpt
//! ```
//! The request that completes the part reads these lines (with the state its commit recorded)
//! and assembles a final whose parts are now all complete
//! ([`crate::upload::UploadStore::assemble_awaiting`]). Older versions skip the line.

use crate::content_range::MAX_OFFSET;
use crate::range_set::RangeSet;
use crate::session_id::SessionId;
use core::fmt;
use std::collections::BTreeMap;

const MAGIC: &str = "ngx-upload-state 1";

/// Largest state file accepted; bounds memory when reading one that is damaged or hostile.
pub const MAX_STATE_LEN: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub total: u64,
    pub received: RangeSet,
    /// The identity of the output file this state describes, if recorded.
    pub file: Option<String>,
    /// The encoded hash progress ([`crate::hash_state::HashProgress::encode`]), if any.
    pub hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl SessionState {
    pub fn new(total: u64) -> Self {
        Self {
            total,
            received: RangeSet::new(),
            file: None,
            hash: None,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.received.is_complete(self.total)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC}\ntotal {}\n", self.total);
        push_received_and_file(&mut out, &self.received, self.file.as_deref());
        if let Some(hash) = &self.hash {
            out.push_str(crate::hash_state::STATE_KEY);
            out.push(' ');
            out.push_str(hash);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// The lines appended to record that `[start, end)` was added.
    pub fn append_range(start: u64, end: u64) -> String {
        let mut line = String::with_capacity(44);
        line.push_str("+ ");
        crate::range_set::push_decimal(&mut line, start);
        line.push('-');
        crate::range_set::push_decimal(&mut line, end - 1);
        line.push('\n');
        line
    }

    /// The line appended to record a new hash progress.
    pub fn append_hash(hash: &str) -> String {
        format!("{} {hash}\n", crate::hash_state::STATE_KEY)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let fields = Fields::read(bytes, Keys::Session)?;
        let total = fields.total.ok_or_else(|| bad("state file has no total"))?;
        if fields
            .received
            .iter()
            .last()
            .is_some_and(|(_, end)| end > total)
        {
            return Err(bad("state file claims bytes beyond total"));
        }
        Ok(Self {
            total,
            received: fields.received,
            file: fields.file,
            hash: fields.hash,
        })
    }
}

/// Most bytes of metadata (keys and values together) an upload may have: room for a tus final
/// upload's list of up to 1000 part ids (33 bytes each) besides a client's metadata, which one
/// header line limits anyway, and small enough that the state stays small.
pub const MAX_METADATA_LEN: usize = 48 << 10;

/// Longest metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 128;

/// An upload's metadata: key → bytes (tus `Upload-Metadata`, Qiniu `x:` variables, a file name,
/// a content type...), in key order.
pub type Metadata = BTreeMap<String, Vec<u8>>;

/// Whether `key` can be a metadata key: 1 to [`MAX_METADATA_KEY_LEN`] visible ASCII characters.
pub fn is_metadata_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_METADATA_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Bytes of `metadata` counted against [`MAX_METADATA_LEN`]: every key and value.
pub fn metadata_len(metadata: &Metadata) -> usize {
    metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The state of an upload addressed by id (see the module documentation): like
/// [`SessionState`], but its length may be 0 or not declared yet, and it has metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadState {
    /// The upload's length; `None` while it is deferred.
    pub length: Option<u64>,
    pub received: RangeSet,
    /// The identity of the data file this state describes, if recorded.
    pub file: Option<String>,
    /// The encoded hash progress ([`crate::hash_state::HashProgress::encode`]), if any.
    pub hash: Option<String>,
    pub metadata: Metadata,
    /// The final uploads created while this (partial) upload was incomplete, which await it.
    pub awaited_by: Vec<SessionId>,
}

impl UploadState {
    pub fn new(length: Option<u64>) -> Self {
        Self {
            length,
            ..Self::default()
        }
    }

    /// The upload offset: the length of the held prefix (tus `Upload-Offset`).
    pub fn offset(&self) -> u64 {
        self.received.prefix_len()
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.received.held()
    }

    /// The end of the last held range: no declared length may be below it.
    pub fn held_end(&self) -> u64 {
        self.received.iter().last().map_or(0, |(_, end)| end)
    }

    /// Where ranges must end: the length, or [`MAX_OFFSET`] while it is deferred.
    pub fn limit(&self) -> u64 {
        self.length.unwrap_or(MAX_OFFSET)
    }

    /// The length is declared and every byte of it is held (at once for a length of 0).
    pub fn is_complete(&self) -> bool {
        match self.length {
            Some(0) => true,
            Some(n) => self.received.is_complete(n),
            None => false,
        }
    }

    /// The same state as a [`SessionState`], for code written for sessions; `None` if the
    /// length is 0 or deferred, which a session cannot have.
    pub fn to_session_state(&self) -> Option<SessionState> {
        Some(SessionState {
            total: self.length.filter(|&n| n > 0)?,
            received: self.received.clone(),
            file: self.file.clone(),
            hash: self.hash.clone(),
        })
    }

    /// The state file's text. With a length above 0 and no metadata, exactly
    /// [`SessionState::encode`]'s.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC}\n");
        match self.length {
            Some(n) if n > 0 => out.push_str(&format!("total {n}\n")),
            Some(n) => out.push_str(&format!("{LENGTH_KEY} {n}\n")),
            None => out.push_str(&format!("{LENGTH_KEY} {DEFERRED}\n")),
        }
        push_received_and_file(&mut out, &self.received, self.file.as_deref());
        for (key, value) in &self.metadata {
            out.push_str(&Self::metadata_line(key, value));
        }
        for id in &self.awaited_by {
            out.push_str(&Self::awaited_by_line(id));
        }
        if let Some(hash) = &self.hash {
            out.push_str(&SessionState::append_hash(hash));
        }
        out.into_bytes()
    }

    /// The line appended to record that final upload `id` awaits this one.
    pub fn awaited_by_line(id: &SessionId) -> String {
        format!("{AWAITED_BY_KEY} {id}\n")
    }

    /// Records that final upload `id` awaits this one; the line to append, empty if it was
    /// recorded already.
    pub fn add_awaited_by(&mut self, id: &SessionId) -> String {
        if self.awaited_by.contains(id) {
            return String::new();
        }
        self.awaited_by.push(id.clone());
        Self::awaited_by_line(id)
    }

    /// The `meta` line of one pair.
    fn metadata_line(key: &str, value: &[u8]) -> String {
        if value.is_empty() {
            format!("{META_KEY} {key}\n")
        } else {
            format!("{META_KEY} {key} {}\n", crate::base64::encode(value))
        }
    }

    /// Reads an upload's state file, or a session's (whose `total` is the length). The rules
    /// of [`SessionState::decode`] apply, see the module documentation.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let Fields {
            total,
            length,
            received,
            hash,
            file,
            metadata,
            awaited_by,
        } = Fields::read(bytes, Keys::Upload)?;
        let length = match (total, length) {
            (Some(n), None) => Some(n),
            (None, Some(length)) => length,
            (Some(n), Some(Some(m))) if n == m => Some(n),
            (Some(_), Some(_)) => return Err(bad("total and length disagree")),
            (None, None) => return Err(bad("state file has no total")),
        };
        let state = Self {
            length,
            received,
            file,
            hash,
            metadata,
            awaited_by,
        };
        if state.held_end() > state.limit() {
            return Err(bad("state file claims bytes beyond the length"));
        }
        if metadata_len(&state.metadata) > MAX_METADATA_LEN {
            return Err(bad("state file has too much metadata"));
        }
        Ok(state)
    }
}

impl From<SessionState> for UploadState {
    fn from(s: SessionState) -> Self {
        Self {
            length: Some(s.total),
            received: s.received,
            file: s.file,
            hash: s.hash,
            metadata: Metadata::new(),
            awaited_by: Vec::new(),
        }
    }
}

/// The `received` line (inclusive ranges, as the protocol writes them) and the `file` line,
/// which sessions' and uploads' states share.
fn push_received_and_file(out: &mut String, received: &RangeSet, file: Option<&str>) {
    out.push_str("received ");
    for (i, (start, end)) in received.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        crate::range_set::push_decimal(out, start);
        out.push('-');
        crate::range_set::push_decimal(out, end - 1);
    }
    out.push('\n');
    if let Some(file) = file {
        out.push_str("file ");
        out.push_str(file);
        out.push('\n');
    }
}

/// A damaged state, saying why.
fn bad(why: &str) -> StateError {
    StateError(why.to_string())
}

/// Which reader reads a state file: a session's skips the keys only uploads have (as an older
/// version skips them), an upload's takes them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    Session,
    Upload,
}

/// What a state file's lines say, by the rules both readers share (see the module
/// documentation); what each reader requires of them is its own.
struct Fields {
    total: Option<u64>,
    /// `Some(None)`: `length deferred`.
    length: Option<Option<u64>>,
    received: RangeSet,
    hash: Option<String>,
    file: Option<String>,
    metadata: Metadata,
    awaited_by: Vec<SessionId>,
}

impl Fields {
    fn read(bytes: &[u8], keys: Keys) -> Result<Fields, StateError> {
        if bytes.len() > MAX_STATE_LEN {
            return Err(bad("state file is too large"));
        }
        // An append cut short by a crash leaves a last line without its newline: not part of
        // the state.
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => &bytes[..=i],
            None => bytes,
        };
        let text = core::str::from_utf8(complete).map_err(|_| bad("state file is not text"))?;
        let mut lines = state_lines(text);
        if lines.next() != Some(MAGIC) {
            return Err(bad("state file has no ngx-upload-state 1 header"));
        }
        let upload = keys == Keys::Upload;
        let mut total: Option<u64> = None;
        let mut length: Option<Option<u64>> = None;
        let mut received: Option<RangeSet> = None;
        // The `+` lines, merged in once: one sort instead of an insert per line.
        let mut appended: Vec<(u64, u64)> = Vec::new();
        let mut hash = None;
        let mut file = None;
        let mut metadata = Metadata::new();
        let mut awaited_by: Vec<SessionId> = Vec::new();
        for line in lines {
            let (key, value) = split_key(line);
            match key {
                "+" => {
                    if received.is_none() {
                        return Err(bad("range appended before the received line"));
                    }
                    let limit = match (total, length) {
                        (Some(n), _) | (None, Some(Some(n))) => n,
                        (None, Some(None)) => MAX_OFFSET,
                        (None, None) => return Err(bad("range appended before the length")),
                    };
                    match parse_span(value) {
                        Some((a, b)) if b < limit => appended.push((a, b + 1)),
                        // A damaged append: what follows it is not trusted either.
                        _ => break,
                    }
                }
                "total" => {
                    let n: u64 = value.parse().map_err(|_| bad("bad total"))?;
                    if n == 0 || n > MAX_OFFSET {
                        return Err(bad("bad total"));
                    }
                    total = Some(n);
                }
                "received" => {
                    let mut spans = Vec::new();
                    for span in value.split(',').filter(|s| !s.is_empty()) {
                        let (a, b) = parse_span(span).ok_or_else(|| bad("bad range"))?;
                        spans.push((a, b + 1));
                    }
                    let mut set = RangeSet::new();
                    set.extend_unsorted(spans);
                    received = Some(set);
                    // Ranges appended before a later received line belong to an older state.
                    appended.clear();
                }
                crate::hash_state::STATE_KEY => hash = Some(value.to_string()),
                "file" => file = Some(value.to_string()),
                LENGTH_KEY if upload => {
                    length = Some(if value == DEFERRED {
                        None
                    } else {
                        Some(
                            parse_decimal(value)
                                .filter(|&n| n <= MAX_OFFSET)
                                .ok_or_else(|| bad("bad length"))?,
                        )
                    });
                }
                META_KEY if upload => {
                    let (name, coded) = value.split_once(' ').unwrap_or((value, ""));
                    if !is_metadata_key(name) {
                        return Err(bad("bad metadata key"));
                    }
                    let bytes = crate::base64::decode(coded)
                        .filter(|v| !v.is_empty() || coded.is_empty())
                        .ok_or_else(|| bad("bad metadata value"))?;
                    metadata.insert(name.to_string(), bytes);
                }
                // A line that names no upload is skipped, as a session's state skips it: a
                // state either reads both ways or neither.
                AWAITED_BY_KEY if upload => {
                    if let Ok(id) = SessionId::parse(value.as_bytes()) {
                        if !awaited_by.contains(&id) {
                            awaited_by.push(id);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut received = received.ok_or_else(|| bad("state file has no received line"))?;
        received.extend_unsorted(appended);
        Ok(Fields {
            total,
            length,
            received,
            hash,
            file,
            metadata,
            awaited_by,
        })
    }
}

/// The key of an upload's length where `total` cannot say it.
const LENGTH_KEY: &str = "length";
/// The value of [`LENGTH_KEY`] while the length is not declared.
const DEFERRED: &str = "deferred";
/// The key of a metadata pair.
const META_KEY: &str = "meta";
/// The key of a final upload awaiting this one.
const AWAITED_BY_KEY: &str = "awaited-by";

/// A decimal number of digits only (no sign), fitting in `u64`.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `a-b`, inclusive, `a <= b < u64::MAX`.
fn parse_span(span: &str) -> Option<(u64, u64)> {
    let bytes = span.as_bytes();
    let dash = bytes.iter().position(|&b| b == b'-')?;
    let (a, b) = (parse_u64(&bytes[..dash])?, parse_u64(&bytes[dash + 1..])?);
    (a <= b && b != u64::MAX).then_some((a, b))
}

/// A `u64` as `str::parse` reads one (an optional `+`, then digits), without its generic
/// machinery: a shuffled upload's state has a line like this per segment, read per segment.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    let digits = digits.strip_prefix(b"+").unwrap_or(digits);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = d.wrapping_sub(b'0');
        (d < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// The lines of a state file as `str::lines` gives them (split at `\n`, one trailing `\r`
/// dropped), found by a plain byte scan: state lines are short, where `lines` spends more
/// setting up its search than searching.
fn state_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, next) = match rest.bytes().position(|b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        rest = next;
        Some(line.strip_suffix('\r').unwrap_or(line))
    })
}

/// A line's key and value, split at its first space (the value empty if there is none).
fn split_key(line: &str) -> (&str, &str) {
    match line.bytes().position(|b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut s = SessionState::new(511920);
        assert_eq!(SessionState::decode(&s.encode()).unwrap(), s);
        s.received.insert(0, 51201);
        s.received.insert(460809, 511920);
        let text = String::from_utf8(s.encode()).unwrap();
        assert_eq!(
            text,
            "ngx-upload-state 1\ntotal 511920\nreceived 0-51200,460809-511919\n"
        );
        assert_eq!(SessionState::decode(text.as_bytes()).unwrap(), s);
    }

    #[test]
    fn keeps_the_hash_line() {
        let mut s = SessionState::new(10);
        s.received.insert(0, 4);
        s.hash = Some("1 upto=4 crc32=0a0b0c0d".to_string());
        let text = String::from_utf8(s.encode()).unwrap();
        assert!(
            text.ends_with("received 0-3\nhash 1 upto=4 crc32=0a0b0c0d\n"),
            "{text}"
        );
        assert_eq!(SessionState::decode(text.as_bytes()).unwrap(), s);
    }

    #[test]
    fn appended_lines_add_ranges_and_replace_the_hash() {
        let mut text = String::from_utf8(SessionState::new(100).encode()).unwrap();
        text.push_str(&SessionState::append_range(0, 10));
        text.push_str(&SessionState::append_hash("1 upto=10"));
        text.push_str(&SessionState::append_range(50, 60));
        text.push_str(&SessionState::append_range(10, 50));
        text.push_str(&SessionState::append_hash("1 upto=60"));
        let s = SessionState::decode(text.as_bytes()).unwrap();
        assert_eq!(s.received.report(100).to_string(), "0-59/100");
        assert_eq!(s.hash.as_deref(), Some("1 upto=60"));
        // A crash in the middle of an append: the unfinished line does not count.
        let cut = format!("{text}+ 60-9");
        assert_eq!(SessionState::decode(cut.as_bytes()).unwrap(), s);
        // A damaged append ends what is trusted; the state only claims less.
        let damaged = format!("{text}+ 9x-99\n+ 60-99\n");
        assert_eq!(SessionState::decode(damaged.as_bytes()).unwrap(), s);
        let beyond = format!("{text}+ 60-100\n");
        assert_eq!(SessionState::decode(beyond.as_bytes()).unwrap(), s);
    }

    #[test]
    fn awaited_by_lines_name_the_finals_once_each_and_sessions_skip_them() {
        let a = SessionId::parse(b"finalAAAA").unwrap();
        let b = SessionId::parse(b"finalBBBB").unwrap();
        let mut state = UploadState::new(Some(10));
        let mut text = String::from_utf8(state.encode()).unwrap();
        text.push_str(&state.add_awaited_by(&a));
        text.push_str(&state.add_awaited_by(&b));
        assert_eq!(state.add_awaited_by(&a), "", "recorded once");
        assert!(
            text.ends_with("awaited-by finalAAAA\nawaited-by finalBBBB\n"),
            "{text}"
        );
        let decoded = UploadState::decode(text.as_bytes()).unwrap();
        assert_eq!(decoded.awaited_by, [a.clone(), b.clone()]);
        assert_eq!(decoded, state);
        // A rewritten (compacted) state keeps them.
        assert_eq!(UploadState::decode(&state.encode()).unwrap(), state);
        // The same line twice (two appends) is one final.
        let twice = format!("{text}awaited-by finalAAAA\n");
        assert_eq!(
            UploadState::decode(twice.as_bytes()).unwrap().awaited_by,
            [a, b]
        );
        assert_eq!(SessionState::decode(text.as_bytes()).unwrap().total, 10);
        // One that names no upload is skipped.
        let bad = format!("{text}awaited-by not/an/id\n");
        assert_eq!(UploadState::decode(bad.as_bytes()).unwrap(), state);
    }

    #[test]
    fn ignores_unknown_lines() {
        let s =
            SessionState::decode(b"ngx-upload-state 1\nfuture x\ntotal 3\nreceived 0-0\n").unwrap();
        assert_eq!(s.total, 3);
        assert_eq!(s.received.held(), 1);
    }

    #[test]
    fn rejects_damaged_files() {
        for bad in [
            &b""[..],
            b"ngx-upload-state 2\ntotal 3\nreceived \n",
            b"ngx-upload-state 1\nreceived \n",
            b"ngx-upload-state 1\ntotal 3\n",
            b"ngx-upload-state 1\ntotal 0\nreceived \n",
            b"ngx-upload-state 1\ntotal x\nreceived \n",
            b"ngx-upload-state 1\ntotal 3\nreceived 0-3\n",
            b"ngx-upload-state 1\ntotal 3\nreceived 2-1\n",
            b"ngx-upload-state 1\ntotal 3\nreceived 0-\n",
            b"ngx-upload-state 1\ntotal 3\nreceived 0-18446744073709551615\n",
            b"ngx-upload-state 1\ntotal 3\nreceived \xff\n",
        ] {
            assert!(
                SessionState::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn upload_state(text: &str) -> Result<UploadState, StateError> {
        UploadState::decode(text.as_bytes())
    }

    #[test]
    fn an_upload_state_with_a_length_is_a_session_state() {
        let mut u = UploadState::new(Some(511920));
        u.received.insert(0, 51201);
        u.file = Some("12.34".into());
        u.hash = Some("1 upto=51201".into());
        let mut s = SessionState::new(511920);
        s.received.insert(0, 51201);
        s.file = Some("12.34".into());
        s.hash = Some("1 upto=51201".into());
        // Same text both ways, so older versions read the states of uploads of known length.
        assert_eq!(u.encode(), s.encode());
        assert_eq!(u.to_session_state().unwrap(), s);
        assert_eq!(UploadState::from(s.clone()), u);
        assert_eq!(SessionState::decode(&u.encode()).unwrap(), s);
        assert_eq!(UploadState::decode(&s.encode()).unwrap(), u);
    }

    #[test]
    fn states_written_by_sessions_are_read_as_uploads() {
        // What session.rs writes: a header, then appended lines.
        let text = "ngx-upload-state 1\ntotal 100\nreceived 10-19\nfile 7.8\n\
                    + 0-9\nhash 1 upto=20\n+ 50-59\n+ 5x\n+ 60-69\n";
        let u = upload_state(text).unwrap();
        assert_eq!(u.length, Some(100));
        assert_eq!(u.received.report(100).to_string(), "0-19/100,50-59/100");
        assert_eq!(u.offset(), 20);
        assert_eq!(u.held(), 30);
        assert_eq!(u.held_end(), 60);
        assert_eq!(u.file.as_deref(), Some("7.8"));
        assert_eq!(u.hash.as_deref(), Some("1 upto=20"));
        assert!(u.metadata.is_empty() && !u.is_complete());
        // Before file ids were recorded, and with a torn last line.
        let old = upload_state("ngx-upload-state 1\ntotal 3\nreceived 0-2\n+ 0-").unwrap();
        assert!(old.is_complete() && old.file.is_none());
    }

    #[test]
    fn deferred_and_zero_lengths_round_trip_and_older_readers_refuse_them() {
        let mut deferred = UploadState::new(None);
        deferred.received.insert(0, 1 << 40);
        deferred
            .metadata
            .insert("filename".into(), b"my file.txt".to_vec());
        let text = String::from_utf8(deferred.encode()).unwrap();
        assert_eq!(
            text,
            "ngx-upload-state 1\nlength deferred\nreceived 0-1099511627775\n\
             meta filename bXkgZmlsZS50eHQ=\n"
        );
        assert_eq!(upload_state(&text).unwrap(), deferred);
        assert!(!deferred.is_complete());
        assert_eq!(deferred.limit(), MAX_OFFSET);
        assert!(deferred.to_session_state().is_none());
        let empty = UploadState::new(Some(0));
        let text = String::from_utf8(empty.encode()).unwrap();
        assert_eq!(text, "ngx-upload-state 1\nlength 0\nreceived \n");
        assert_eq!(upload_state(&text).unwrap(), empty);
        assert!(empty.is_complete());
        // A session reader has no total for them: damaged, never misread.
        for state in [&deferred, &empty] {
            let e = SessionState::decode(&state.encode()).unwrap_err();
            assert!(e.0.contains("total"), "{e}");
        }
    }

    #[test]
    fn a_deferred_length_allows_appends_up_to_max_offset() {
        let head = "ngx-upload-state 1\nlength deferred\nreceived \n";
        let top = MAX_OFFSET - 1;
        let u = upload_state(&format!("{head}+ 0-9\n+ {}-{top}\n", top - 9)).unwrap();
        assert_eq!(u.held(), 20);
        // Past MAX_OFFSET is a damaged append: it and what follows are ignored.
        let u = upload_state(&format!("{head}+ 0-9\n+ 0-{MAX_OFFSET}\n+ 10-19\n")).unwrap();
        assert_eq!(u.held(), 10);
        // Once declared, the length bounds appends like a total.
        let u = upload_state("ngx-upload-state 1\nlength 0\nreceived \n+ 0-0\n").unwrap();
        assert!(u.received.is_empty());
    }

    #[test]
    fn metadata_round_trips_arbitrary_bytes() {
        let mut u = UploadState::new(Some(5));
        let every_byte: Vec<u8> = (0..=255u8).collect();
        u.metadata.insert("bytes".into(), every_byte.clone());
        u.metadata.insert("empty".into(), Vec::new());
        u.metadata
            .insert("x:name".into(), "Grüße\n\r".as_bytes().to_vec());
        u.metadata
            .insert("~!#$%&'()*+,-./:;<=>?@[\\]^_`{|}".into(), b" ".to_vec());
        u.hash = Some("1 upto=0".into());
        let text = String::from_utf8(u.encode()).unwrap();
        assert!(text.contains("\nmeta empty\n"), "{text}");
        assert_eq!(text.lines().count(), 8, "{text}");
        let back = upload_state(&text).unwrap();
        assert_eq!(back, u);
        assert_eq!(back.metadata["bytes"], every_byte);
        assert_eq!(back.encode(), u.encode());
        // Older readers skip the lines.
        let s = SessionState::decode(text.as_bytes()).unwrap();
        assert_eq!((s.total, s.hash.as_deref()), (5, Some("1 upto=0")));
        // A later line replaces an earlier one; a trailing space is an empty value.
        let u = upload_state(
            "ngx-upload-state 1\ntotal 1\nreceived \nmeta a YQ==\nmeta a Yg==\nmeta b \n",
        )
        .unwrap();
        assert_eq!(u.metadata["a"], b"b");
        assert_eq!(u.metadata["b"], b"");
    }

    #[test]
    fn metadata_is_bounded() {
        let at_limit = format!(
            "ngx-upload-state 1\ntotal 1\nreceived \nmeta k {}\n",
            crate::base64::encode(&vec![7; MAX_METADATA_LEN - 1])
        );
        assert_eq!(
            upload_state(&at_limit).unwrap().metadata["k"].len(),
            MAX_METADATA_LEN - 1
        );
        let over = format!("{at_limit}meta l {}\n", crate::base64::encode(b"x"));
        assert!(upload_state(&over).is_err());
        assert!(is_metadata_key(&"k".repeat(MAX_METADATA_KEY_LEN)));
        assert!(!is_metadata_key(&"k".repeat(MAX_METADATA_KEY_LEN + 1)));
        for bad in ["", "a b", "a\tb", "é", "a\u{7f}"] {
            assert!(!is_metadata_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn damaged_upload_states_are_refused() {
        for bad in [
            "",
            "ngx-upload-state 1\nreceived \n",
            "ngx-upload-state 1\nlength \nreceived \n",
            "ngx-upload-state 1\nlength -1\nreceived \n",
            "ngx-upload-state 1\nlength +1\nreceived \n",
            "ngx-upload-state 1\nlength later\nreceived \n",
            "ngx-upload-state 1\nlength 9223372036854775808\nreceived \n",
            "ngx-upload-state 1\nlength deferred\n",
            "ngx-upload-state 1\ntotal 3\nlength 4\nreceived \n",
            "ngx-upload-state 1\ntotal 3\nlength deferred\nreceived \n",
            "ngx-upload-state 1\nlength 0\nreceived 0-0\n",
            "ngx-upload-state 1\nlength 3\nreceived 0-3\n",
            "ngx-upload-state 1\nlength deferred\nreceived 0-9223372036854775807\n",
            "ngx-upload-state 1\nlength deferred\n+ 0-1\nreceived \n",
            "ngx-upload-state 1\nreceived \n+ 0-1\nlength deferred\n",
            "ngx-upload-state 1\ntotal 3\nreceived \nmeta\n",
            "ngx-upload-state 1\ntotal 3\nreceived \nmeta a b\n",
            "ngx-upload-state 1\ntotal 3\nreceived \nmeta a Yg\n",
            "ngx-upload-state 1\ntotal 3\nreceived \nmeta a  Yg==\n",
            "ngx-upload-state 1\ntotal 3\nreceived \nmeta a Yg== x\n",
        ] {
            assert!(upload_state(bad).is_err(), "{bad:?}");
        }
        // What both agree on.
        let same = "ngx-upload-state 1\ntotal 3\nlength 3\nreceived 0-2\n";
        assert!(upload_state(same).unwrap().is_complete());
    }

    /// A state of many appended ranges, in any order and some repeated, reads as the same set
    /// its compact form holds; numbers are read as `str::parse` reads them.
    #[test]
    fn many_appended_ranges_read_as_their_union() {
        let total = 1u64 << 30;
        let mut expect = RangeSet::new();
        let mut text = format!("{MAGIC}\ntotal {total}\nreceived 0-9\n");
        expect.insert(0, 10);
        for k in (0..400u64).rev().chain(0..50) {
            let (a, b) = (k * 4096 + 7 * (k % 3), k * 4096 + 4095);
            text.push_str(&SessionState::append_range(a, b + 1));
            expect.insert(a, b + 1);
        }
        let state = SessionState::decode(text.as_bytes()).unwrap();
        assert_eq!(state.received, expect);
        let upload = UploadState::decode(text.as_bytes()).unwrap();
        assert_eq!(upload.received, expect);
        assert_eq!(SessionState::decode(&state.encode()).unwrap(), state);
        // CRLF lines, as `str::lines` took them, and a `+` sign on a number.
        let crlf = format!("{MAGIC}\r\ntotal 10\r\nreceived +0-3\r\n+ 4-+5\r\n");
        let state = SessionState::decode(crlf.as_bytes()).unwrap();
        assert_eq!(state.received.iter().collect::<Vec<_>>(), [(0, 6)]);
    }

    #[test]
    fn numbers_are_digits_that_fit() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"+42"), Some(42));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"+",
            b"18446744073709551616",
            b"-1",
            b"1 ",
            b"1a",
            b"++1",
        ] {
            assert_eq!(parse_u64(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
        assert_eq!(parse_span("3-2"), None);
        assert_eq!(parse_span("1-18446744073709551615"), None);
        assert_eq!(parse_span("1-2-3"), None);
        assert_eq!(parse_span("7-7"), Some((7, 7)));
    }
}
