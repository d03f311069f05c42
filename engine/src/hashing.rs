//! Hashes of an uploaded file, for `$upload_file_md5`, `$upload_file_sha1`,
//! `$upload_file_sha256`, `$upload_file_sha512` (each also `_uc`, upper case) and
//! `$upload_file_crc32`.
//!
//! Hashing costs CPU, so only the [`Algorithms`] that a configured template names are computed.
//! A [`MultiHasher`] feeds each byte once to all of them and ends in [`Digests`], which formats
//! each hash as nginx-upload-module does: hex, lower or upper case, and crc32 as `%08x`.
//!
//! A resumable session needs the hash state to outlive a request; [`crate::hash_state`] keeps it
//! as text. The states of MD5 and the SHAs are the RustCrypto crates' own serialized states
//! (`SerializableState`, stable across the patch versions of one `0.x` release); crc32's state is
//! the crc value so far.

use core::fmt;
use core::ops::{BitOr, BitOrAssign};
use md5::digest::common::hazmat::{SerializableState, SerializedState};
use md5::digest::Digest;
use md5::Md5;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

/// One hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha256,
    Sha512,
    Crc32,
}

/// Lower or upper case hex (`$upload_file_md5` or `$upload_file_md5_uc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Case {
    Lower,
    Upper,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha512,
        Algorithm::Crc32,
    ];

    /// Lower-case name, as in the variable names and the saved state: `md5`, `sha1`, ...
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Crc32 => "crc32",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The hash and case a variable name stands for: `upload_file_sha1_uc` is SHA-1 in upper
    /// case. crc32 has no `_uc` form, as in nginx-upload-module.
    pub fn from_variable(name: &str) -> Option<(Self, Case)> {
        let name = name.strip_prefix("upload_file_")?;
        let (name, case) = match name.strip_suffix("_uc") {
            Some(n) => (n, Case::Upper),
            None => (name, Case::Lower),
        };
        let alg = Self::from_name(name)?;
        if alg == Algorithm::Crc32 && case == Case::Upper {
            return None;
        }
        Some((alg, case))
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Algorithm`]s, bitflags style: `Algorithms::MD5 | Algorithms::CRC32`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Algorithms(u8);

impl Algorithms {
    pub const NONE: Self = Self(0);
    pub const MD5: Self = Self(Algorithm::Md5.bit());
    pub const SHA1: Self = Self(Algorithm::Sha1.bit());
    pub const SHA256: Self = Self(Algorithm::Sha256.bit());
    pub const SHA512: Self = Self(Algorithm::Sha512.bit());
    pub const CRC32: Self = Self(Algorithm::Crc32.bit());
    pub const ALL: Self =
        Self(Self::MD5.0 | Self::SHA1.0 | Self::SHA256.0 | Self::SHA512.0 | Self::CRC32.0);

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every algorithm of `other` is in the set.
    pub fn contains(self, other: impl Into<Algorithms>) -> bool {
        let other = other.into();
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: impl Into<Algorithms>) {
        self.0 |= other.into().0;
    }

    /// The set's algorithms, in the order of [`Algorithm::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(move |a| self.contains(*a))
    }
}

impl From<Algorithm> for Algorithms {
    fn from(a: Algorithm) -> Self {
        Self(a.bit())
    }
}

impl FromIterator<Algorithm> for Algorithms {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        let mut set = Self::NONE;
        iter.into_iter().for_each(|a| set.insert(a));
        set
    }
}

impl<T: Into<Algorithms>> BitOr<T> for Algorithms {
    type Output = Self;
    fn bitor(self, rhs: T) -> Self {
        Self(self.0 | rhs.into().0)
    }
}

impl<T: Into<Algorithms>> BitOrAssign<T> for Algorithms {
    fn bitor_assign(&mut self, rhs: T) {
        self.insert(rhs);
    }
}

/// `md5,sha1`, for logs.
impl fmt::Display for Algorithms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.name())?;
        }
        Ok(())
    }
}

/// Computes the selected hashes of one byte stream at once.
#[derive(Clone, Default)]
pub struct MultiHasher {
    md5: Option<Md5>,
    sha1: Option<Sha1>,
    sha256: Option<Sha256>,
    sha512: Option<Sha512>,
    crc32: Option<crc32fast::Hasher>,
    /// Bytes fed so far.
    len: u64,
}

impl fmt::Debug for MultiHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiHasher")
            .field("algorithms", &self.algorithms())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl MultiHasher {
    pub fn new(algorithms: Algorithms) -> Self {
        let on = |a: Algorithm| algorithms.contains(a);
        Self {
            md5: on(Algorithm::Md5).then(Md5::new),
            sha1: on(Algorithm::Sha1).then(Sha1::new),
            sha256: on(Algorithm::Sha256).then(Sha256::new),
            sha512: on(Algorithm::Sha512).then(Sha512::new),
            crc32: on(Algorithm::Crc32).then(crc32fast::Hasher::new),
            len: 0,
        }
    }

    pub fn algorithms(&self) -> Algorithms {
        let mut set = Algorithms::NONE;
        let mut add = |on: bool, a: Algorithm| {
            if on {
                set.insert(a);
            }
        };
        add(self.md5.is_some(), Algorithm::Md5);
        add(self.sha1.is_some(), Algorithm::Sha1);
        add(self.sha256.is_some(), Algorithm::Sha256);
        add(self.sha512.is_some(), Algorithm::Sha512);
        add(self.crc32.is_some(), Algorithm::Crc32);
        set
    }

    /// Number of bytes hashed so far.
    pub fn bytes_hashed(&self) -> u64 {
        self.len
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
        if let Some(h) = &mut self.crc32 {
            h.update(data);
        }
        self.len += data.len() as u64;
    }

    pub fn finish(self) -> Digests {
        Digests {
            md5: self.md5.map(|h| h.finalize().into()),
            sha1: self.sha1.map(|h| h.finalize().into()),
            sha256: self.sha256.map(|h| h.finalize().into()),
            sha512: self.sha512.map(|h| h.finalize().into()),
            crc32: self.crc32.map(|h| h.finalize().to_be_bytes()),
        }
    }

    /// Stops computing the algorithms not in `keep`.
    pub(crate) fn restrict(&mut self, keep: Algorithms) {
        let off = |a: Algorithm| !keep.contains(a);
        if off(Algorithm::Md5) {
            self.md5 = None;
        }
        if off(Algorithm::Sha1) {
            self.sha1 = None;
        }
        if off(Algorithm::Sha256) {
            self.sha256 = None;
        }
        if off(Algorithm::Sha512) {
            self.sha512 = None;
        }
        if off(Algorithm::Crc32) {
            self.crc32 = None;
        }
    }

    /// The saved state of one selected algorithm: the crate's serialized state for MD5 and the
    /// SHAs, the big-endian crc so far for crc32. `None` if `alg` is not selected.
    pub(crate) fn saved_state(&self, alg: Algorithm) -> Option<Vec<u8>> {
        match alg {
            Algorithm::Md5 => self.md5.as_ref().map(save),
            Algorithm::Sha1 => self.sha1.as_ref().map(save),
            Algorithm::Sha256 => self.sha256.as_ref().map(save),
            Algorithm::Sha512 => self.sha512.as_ref().map(save),
            Algorithm::Crc32 => self
                .crc32
                .as_ref()
                .map(|h| h.clone().finalize().to_be_bytes().to_vec()),
        }
    }

    /// A hasher with no algorithm that has hashed `len` bytes; states are added with
    /// [`Self::restore_state`].
    pub(crate) fn empty_at(len: u64) -> Self {
        Self {
            len,
            ..Self::default()
        }
    }

    /// Selects `alg` with a state from [`Self::saved_state`] of a hasher that had hashed
    /// [`Self::bytes_hashed`] bytes. `None` if the state is not one that `saved_state` writes.
    pub(crate) fn restore_state(&mut self, alg: Algorithm, state: &[u8]) -> Option<()> {
        // The byte count inside a state must be the one the hasher is restored at: the crates
        // compute message lengths with unchecked arithmetic, so a damaged count would make
        // them panic (debug) or give wrong digests (release). SHA lengths stop at 2^61 bytes.
        let counted = |words: usize, count: usize, block: u128| {
            counts(state, words, count, block) == Some(u128::from(self.len))
        };
        let sha_len_ok = self.len < 1 << 61;
        match alg {
            Algorithm::Md5 if counted(16, 8, 64) => self.md5 = Some(load(state)?),
            Algorithm::Sha1 if sha_len_ok && counted(20, 8, 64) => self.sha1 = Some(load(state)?),
            Algorithm::Sha256 if sha_len_ok && counted(32, 8, 64) => {
                self.sha256 = Some(load(state)?)
            }
            Algorithm::Sha512 if sha_len_ok && counted(64, 16, 128) => {
                self.sha512 = Some(load(state)?)
            }
            Algorithm::Md5 | Algorithm::Sha1 | Algorithm::Sha256 | Algorithm::Sha512 => {
                return None
            }
            Algorithm::Crc32 => {
                let crc = u32::from_be_bytes(state.try_into().ok()?);
                self.crc32 = Some(crc32fast::Hasher::new_with_initial_len(crc, self.len));
            }
        }
        Some(())
    }
}

/// The bytes a serialized MD5/SHA state has hashed: after `words` bytes of chaining words come
/// the count of whole blocks (`count` bytes, little-endian) and the buffered length (one byte);
/// see `the_encoding_is_pinned` in hash_state.rs.
fn counts(state: &[u8], words: usize, count: usize, block: u128) -> Option<u128> {
    let blocks = state.get(words..words + count)?;
    let pos = *state.get(words + count)?;
    let blocks = blocks.iter().rev().try_fold(0u128, |n, &b| {
        n.checked_mul(256)?.checked_add(u128::from(b))
    })?;
    blocks.checked_mul(block)?.checked_add(u128::from(pos))
}

fn save<H: SerializableState>(h: &H) -> Vec<u8> {
    h.serialize().to_vec()
}

/// Restores a state, accepting only the canonical form `serialize` writes.
fn load<H: SerializableState>(bytes: &[u8]) -> Option<H> {
    let state = SerializedState::<H>::try_from(bytes).ok()?;
    let h = H::deserialize(&state).ok()?;
    (h.serialize() == state).then_some(h)
}

/// The finished hashes; `None` for the algorithms that were not selected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    md5: Option<[u8; 16]>,
    sha1: Option<[u8; 20]>,
    sha256: Option<[u8; 32]>,
    sha512: Option<[u8; 64]>,
    /// Big-endian, so that its hex is `%08x` of the crc.
    crc32: Option<[u8; 4]>,
}

impl Digests {
    pub fn algorithms(&self) -> Algorithms {
        Algorithm::ALL
            .into_iter()
            .filter(|a| self.raw(*a).is_some())
            .collect()
    }

    /// The digest's bytes; crc32's are big-endian.
    pub fn raw(&self, alg: Algorithm) -> Option<&[u8]> {
        match alg {
            Algorithm::Md5 => self.md5.as_ref().map(|d| &d[..]),
            Algorithm::Sha1 => self.sha1.as_ref().map(|d| &d[..]),
            Algorithm::Sha256 => self.sha256.as_ref().map(|d| &d[..]),
            Algorithm::Sha512 => self.sha512.as_ref().map(|d| &d[..]),
            Algorithm::Crc32 => self.crc32.as_ref().map(|d| &d[..]),
        }
    }

    /// The digest in hex; crc32 is 8 digits (`%08x`).
    pub fn hex(&self, alg: Algorithm, case: Case) -> Option<String> {
        self.raw(alg).map(|bytes| to_hex(bytes, case))
    }

    /// The value of a variable such as `upload_file_sha256_uc`, if it names a computed hash.
    pub fn variable(&self, name: &str) -> Option<String> {
        let (alg, case) = Algorithm::from_variable(name)?;
        self.hex(alg, case)
    }

    pub fn crc32_value(&self) -> Option<u32> {
        self.crc32.map(u32::from_be_bytes)
    }

    pub fn md5(&self) -> Option<String> {
        self.hex(Algorithm::Md5, Case::Lower)
    }
    pub fn md5_uc(&self) -> Option<String> {
        self.hex(Algorithm::Md5, Case::Upper)
    }
    pub fn sha1(&self) -> Option<String> {
        self.hex(Algorithm::Sha1, Case::Lower)
    }
    pub fn sha1_uc(&self) -> Option<String> {
        self.hex(Algorithm::Sha1, Case::Upper)
    }
    pub fn sha256(&self) -> Option<String> {
        self.hex(Algorithm::Sha256, Case::Lower)
    }
    pub fn sha256_uc(&self) -> Option<String> {
        self.hex(Algorithm::Sha256, Case::Upper)
    }
    pub fn sha512(&self) -> Option<String> {
        self.hex(Algorithm::Sha512, Case::Lower)
    }
    pub fn sha512_uc(&self) -> Option<String> {
        self.hex(Algorithm::Sha512, Case::Upper)
    }
    /// `%08x`, lower case, as nginx-upload-module prints it.
    pub fn crc32(&self) -> Option<String> {
        self.hex(Algorithm::Crc32, Case::Lower)
    }
}

pub(crate) fn to_hex(bytes: &[u8], case: Case) -> String {
    let digits = match case {
        Case::Lower => b"0123456789abcdef",
        Case::Upper => b"0123456789ABCDEF",
    };
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digits[usize::from(b >> 4)] as char);
        out.push(digits[usize::from(b & 15)] as char);
    }
    out
}

/// Lower-case hex only, the form [`to_hex`] writes with [`Case::Lower`].
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic bytes that are not periodic in any block size.
    pub(crate) fn pattern(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// The hashes of `data` from the crates' one-shot functions.
    pub(crate) fn one_shot(data: &[u8]) -> [String; 5] {
        [
            to_hex(&Md5::digest(data), Case::Lower),
            to_hex(&Sha1::digest(data), Case::Lower),
            to_hex(&Sha256::digest(data), Case::Lower),
            to_hex(&Sha512::digest(data), Case::Lower),
            format!("{:08x}", crc32fast::hash(data)),
        ]
    }

    pub(crate) fn all_hex(d: &Digests) -> [String; 5] {
        Algorithm::ALL.map(|a| d.hex(a, Case::Lower).unwrap())
    }

    fn hash_all(data: &[u8]) -> Digests {
        let mut h = MultiHasher::new(Algorithms::ALL);
        h.update(data);
        h.finish()
    }

    #[test]
    fn known_answers() {
        let empty = hash_all(b"");
        assert_eq!(empty.md5().unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            empty.sha1().unwrap(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            empty.sha256().unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            empty.sha512().unwrap(),
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
             47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
        assert_eq!(empty.crc32().unwrap(), "00000000");

        let abc = hash_all(b"abc");
        assert_eq!(abc.md5().unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            abc.sha1().unwrap(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            abc.sha256().unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            abc.sha512().unwrap(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(abc.crc32().unwrap(), "352441c2");
        assert_eq!(abc.crc32_value(), Some(0x3524_41c2));
        assert_eq!(hash_all(b"123456789").crc32().unwrap(), "cbf43926");
        // A crc with a leading zero digit keeps it: `%08x`.
        assert_eq!(hash_all(b"a").crc32().unwrap(), "e8b7be43");
        let small = (0u32..)
            .map(|i| i.to_be_bytes())
            .find(|b| crc32fast::hash(b) < 0x1000_0000)
            .unwrap();
        let text = hash_all(&small).crc32().unwrap();
        assert_eq!(text.len(), 8);
        assert!(text.starts_with('0'), "{text}");
    }

    #[test]
    fn upper_case_variants() {
        let d = hash_all(b"abc");
        assert_eq!(d.md5_uc().unwrap(), "900150983CD24FB0D6963F7D28E17F72");
        assert_eq!(
            d.sha1_uc().unwrap(),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
        assert_eq!(d.sha256_uc().unwrap(), d.sha256().unwrap().to_uppercase());
        assert_eq!(d.sha512_uc().unwrap(), d.sha512().unwrap().to_uppercase());
        assert_eq!(
            d.variable("upload_file_sha256_uc"),
            d.sha256().map(|s| s.to_uppercase())
        );
        assert_eq!(d.variable("upload_file_crc32"), d.crc32());
        assert_eq!(d.variable("upload_file_crc32_uc"), None);
        assert_eq!(d.variable("upload_file_md4"), None);
    }

    #[test]
    fn a_megabyte_in_odd_pieces_matches_one_shot() {
        let data = pattern(1 << 20);
        let mut h = MultiHasher::new(Algorithms::ALL);
        let mut rest = &data[..];
        let mut step = 1;
        while !rest.is_empty() {
            let (a, b) = rest.split_at(step.min(rest.len()));
            h.update(a);
            rest = b;
            step = step * 3 % 4099 + 1;
        }
        assert_eq!(h.bytes_hashed(), 1 << 20);
        assert_eq!(all_hex(&h.finish()), one_shot(&data));
    }

    #[test]
    fn computes_only_the_selected_algorithms() {
        let algs = Algorithms::SHA1 | Algorithm::Crc32;
        let mut h = MultiHasher::new(algs);
        assert_eq!(h.algorithms(), algs);
        h.update(b"abc");
        let d = h.finish();
        assert_eq!(d.algorithms(), algs);
        assert_eq!(d.md5(), None);
        assert_eq!(d.sha256_uc(), None);
        assert_eq!(
            d.sha1().unwrap(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(d.crc32().unwrap(), "352441c2");
        assert_eq!(
            MultiHasher::new(Algorithms::NONE).finish(),
            Digests::default()
        );
    }

    #[test]
    fn algorithm_sets() {
        let mut s = Algorithms::NONE;
        assert!(s.is_empty());
        s |= Algorithm::Sha512;
        s.insert(Algorithms::MD5);
        assert!(s.contains(Algorithm::Md5));
        assert!(s.contains(Algorithms::MD5 | Algorithms::SHA512));
        assert!(!s.contains(Algorithms::MD5 | Algorithms::SHA1));
        assert!(s.contains(Algorithms::NONE));
        assert_eq!(s.to_string(), "md5,sha512");
        assert_eq!(Algorithms::ALL.iter().count(), 5);
        assert_eq!(
            Algorithms::ALL.iter().collect::<Algorithms>(),
            Algorithms::ALL
        );
        assert_eq!(
            Algorithm::from_variable("upload_file_md5_uc"),
            Some((Algorithm::Md5, Case::Upper))
        );
        assert_eq!(
            Algorithm::from_variable("upload_file_sha512"),
            Some((Algorithm::Sha512, Case::Lower))
        );
        assert_eq!(Algorithm::from_variable("upload_file_name"), None);
        assert_eq!(Algorithm::from_variable("md5"), None);
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(to_hex(&[0x00, 0x9f, 0xa0], Case::Lower), "009fa0");
        assert_eq!(to_hex(&[0x00, 0x9f, 0xa0], Case::Upper), "009FA0");
        assert_eq!(from_hex("009fa0"), Some(vec![0x00, 0x9f, 0xa0]));
        assert_eq!(from_hex(""), Some(vec![]));
        for bad in ["0", "0g", "009FA0", " 00", "+0"] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
    }
}
