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

use crate::range_set::RangeSet;
use core::fmt;

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
        let mut out = format!("{MAGIC}\ntotal {}\nreceived ", self.total);
        for (i, (start, end)) in self.received.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("{}-{}", start, end - 1));
        }
        out.push('\n');
        if let Some(file) = &self.file {
            out.push_str(&format!("file {file}\n"));
        }
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
        format!("+ {start}-{}\n", end - 1)
    }

    /// The line appended to record a new hash progress.
    pub fn append_hash(hash: &str) -> String {
        format!("{} {hash}\n", crate::hash_state::STATE_KEY)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let bad = |why: &str| StateError(why.to_string());
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
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad("state file has no ngx-upload-state 1 header"));
        }
        let mut total: Option<u64> = None;
        let mut received: Option<RangeSet> = None;
        let mut hash = None;
        let mut file = None;
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "+" => {
                    let (Some(set), Some(total)) = (received.as_mut(), total) else {
                        return Err(bad("range appended before the received line"));
                    };
                    match parse_span(value) {
                        Some((a, b)) if b < total => set.insert(a, b + 1),
                        // A damaged append: what follows it is not trusted either.
                        _ => break,
                    }
                }
                "total" => {
                    let n: u64 = value.parse().map_err(|_| bad("bad total"))?;
                    if n == 0 || n > crate::content_range::MAX_OFFSET {
                        return Err(bad("bad total"));
                    }
                    total = Some(n);
                }
                "received" => {
                    let mut set = RangeSet::new();
                    for span in value.split(',').filter(|s| !s.is_empty()) {
                        let (a, b) = parse_span(span).ok_or_else(|| bad("bad range"))?;
                        set.insert(a, b + 1);
                    }
                    received = Some(set);
                }
                crate::hash_state::STATE_KEY => hash = Some(value.to_string()),
                "file" => file = Some(value.to_string()),
                _ => {}
            }
        }
        let total = total.ok_or_else(|| bad("state file has no total"))?;
        let received = received.ok_or_else(|| bad("state file has no received line"))?;
        if received.iter().last().is_some_and(|(_, end)| end > total) {
            return Err(bad("state file claims bytes beyond total"));
        }
        Ok(Self {
            total,
            received,
            file,
            hash,
        })
    }
}

/// `a-b`, inclusive, `a <= b < u64::MAX`.
fn parse_span(span: &str) -> Option<(u64, u64)> {
    let (a, b) = span.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b && b != u64::MAX).then_some((a, b))
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
}
