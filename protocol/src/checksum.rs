//! A digest a client sends with a body, for the glue to check before it records the bytes
//! (tus's `Upload-Checksum: <algorithm> <base64 digest>`, checksum extension).

use ngx_upload_engine::hashing::{Algorithm, Algorithms};

use crate::{base64, Failure};

/// What the body of one request must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    /// The expected digest, raw bytes: 16 for MD5, 20 for SHA-1, 32 for SHA-256, 64 for SHA-512,
    /// and for CRC-32 the 4 bytes of the value, most significant first.
    pub digest: Vec<u8>,
}

/// How many bytes a digest of `algorithm` has.
pub const fn digest_len(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Md5 => 16,
        Algorithm::Sha1 => 20,
        Algorithm::Sha256 => 32,
        Algorithm::Sha512 => 64,
        Algorithm::Crc32 => 4,
    }
}

/// The names of `offered`, comma-separated, as `Tus-Checksum-Algorithm` lists them.
pub fn names(offered: Algorithms) -> String {
    offered
        .iter()
        .map(Algorithm::name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `Upload-Checksum`. An algorithm the location does not offer (or that does not exist;
/// names are lower case) is a [`crate::Problem::BadRequest`], as tus says.
pub fn parse_upload_checksum(value: &[u8], offered: Algorithms) -> Result<Checksum, Failure> {
    let shown = || String::from_utf8_lossy(value).into_owned();
    let text = value.trim_ascii();
    let Some(space) = text.iter().position(|b| *b == b' ') else {
        return Err(Failure::bad_request(format!(
            "Upload-Checksum \"{}\" is not \"<algorithm> <base64 digest>\"",
            shown()
        )));
    };
    let (name, digest) = (&text[..space], text[space + 1..].trim_ascii());
    let algorithm = std::str::from_utf8(name)
        .ok()
        .and_then(Algorithm::from_name)
        .filter(|a| offered.contains(*a))
        .ok_or_else(|| {
            Failure::bad_request(format!(
                "Upload-Checksum algorithm \"{}\" is not supported (this location takes {})",
                String::from_utf8_lossy(name),
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    names(offered)
                }
            ))
        })?;
    let digest = base64::decode(digest).map_err(|e| {
        Failure::bad_request(format!("Upload-Checksum \"{}\": the digest {e}", shown()))
    })?;
    if digest.len() != digest_len(algorithm) {
        return Err(Failure::bad_request(format!(
            "Upload-Checksum \"{}\": a {algorithm} digest has {} bytes, not {}",
            shown(),
            digest_len(algorithm),
            digest.len()
        )));
    }
    Ok(Checksum { algorithm, digest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Problem;

    const OFFERED: Algorithms = Algorithms::NONE;

    fn offered() -> Algorithms {
        Algorithms::MD5 | Algorithms::SHA1 | Algorithms::SHA256 | Algorithms::CRC32
    }

    #[test]
    fn parses_each_algorithm() {
        // sha1("hello world"), the tus specification's example.
        let c = parse_upload_checksum(b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", offered()).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha1);
        assert_eq!(c.digest[..4], [0x2a, 0xae, 0x6c, 0x35]);
        // md5("hello world")
        let c = parse_upload_checksum(b"md5 XrY7u+Ae7tCTyyK7j1rNww==", offered()).unwrap();
        assert_eq!((c.algorithm, c.digest.len()), (Algorithm::Md5, 16));
        // sha256("hello world")
        let c = parse_upload_checksum(
            b"sha256 uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
            offered(),
        )
        .unwrap();
        assert_eq!((c.algorithm, c.digest.len()), (Algorithm::Sha256, 32));
        // crc32("hello world") = 0x0d4a1185
        let c = parse_upload_checksum(b"crc32 DUoRhQ==", offered()).unwrap();
        assert_eq!(c.digest, [0x0d, 0x4a, 0x11, 0x85]);
        assert_eq!(names(offered()), "md5,sha1,sha256,crc32");
    }

    #[test]
    fn refuses_unknown_algorithms_and_bad_digests() {
        let cases: &[&[u8]] = &[
            b"sha3 AAAA",
            b"SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            b"sha512 AAAA",
            b"sha1",
            b"sha1Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            b"sha1 !!!!",
            b"sha1 AAAA",
            b"crc32 DUoRhQAA",
            b"",
        ];
        for value in cases {
            let f = parse_upload_checksum(value, offered()).unwrap_err();
            assert_eq!(f.problem, Problem::BadRequest, "{}", f.message);
            assert!(f.message.contains("Upload-Checksum"), "{}", f.message);
        }
        let f = parse_upload_checksum(b"sha512 AAAA", offered()).unwrap_err();
        assert!(f.message.contains("md5,sha1,sha256,crc32"), "{}", f.message);
        let f = parse_upload_checksum(b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", OFFERED).unwrap_err();
        assert!(f.message.contains("none"), "{}", f.message);
    }
}
