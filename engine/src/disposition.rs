//! `Content-Disposition` of a raw upload or of a multipart part:
//! `attachment; filename="big.TXT"` or `form-data; name="file"; filename="big.TXT"`.
//!
//! As tolerant as nginx-upload-module where clients need it: text after a closed quoted value
//! (`filename="test.txt"\r`, a literal backslash and `r`, as some clients send) is ignored up
//! to the next `;`, and empty parameters (`;;`, a trailing `;`) are skipped. What could make a
//! name or file name wrong is still refused: an unterminated quoted string, a control byte in a
//! value or in the text ignored, a parameter that is not `name=value`.

use core::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disposition {
    /// The disposition type, lower-cased (`attachment`, `form-data`, `inline`).
    pub kind: String,
    /// `name` parameter: the form field name.
    pub name: Option<Vec<u8>>,
    /// `filename` parameter (or a decoded `filename*`), exactly as sent, path included.
    pub filename: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispositionError {
    /// The header is empty or its type is not a token.
    Syntax,
    /// A type other than `attachment`, `form-data` or `inline`.
    UnknownType,
    /// A parameter is not `token=token` or `token="quoted"`.
    BadParameter,
    /// A quoted string is not closed.
    Unterminated,
    /// A name or file name holds a control byte (NUL, CR, LF, ...).
    ControlByte,
}

impl fmt::Display for DispositionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syntax => "has no disposition type",
            Self::UnknownType => "is not attachment, form-data or inline",
            Self::BadParameter => "has a malformed parameter",
            Self::Unterminated => "has an unterminated quoted string",
            Self::ControlByte => "has a control byte in a name or file name",
        })
    }
}

pub fn parse(value: &[u8]) -> Result<Disposition, DispositionError> {
    let mut rest = skip_ws(value);
    let kind_len = token_len(rest);
    if kind_len == 0 {
        return Err(DispositionError::Syntax);
    }
    let kind = String::from_utf8_lossy(&rest[..kind_len]).to_ascii_lowercase();
    if !matches!(kind.as_str(), "attachment" | "form-data" | "inline") {
        return Err(DispositionError::UnknownType);
    }
    rest = skip_ws(&rest[kind_len..]);
    let mut out = Disposition {
        kind,
        ..Disposition::default()
    };
    let mut extended_filename = None;
    while !rest.is_empty() {
        rest = match rest {
            [b';', tail @ ..] => skip_ws(tail),
            _ => return Err(DispositionError::BadParameter),
        };
        if rest.is_empty() {
            break; // a trailing `;` is common and harmless
        }
        if rest[0] == b';' {
            continue; // so is an empty parameter (`;;`)
        }
        let name_len = token_len(rest);
        if name_len == 0 {
            return Err(DispositionError::BadParameter);
        }
        let param = rest[..name_len].to_ascii_lowercase();
        rest = skip_ws(&rest[name_len..]);
        rest = match rest {
            [b'=', tail @ ..] => skip_ws(tail),
            _ => return Err(DispositionError::BadParameter),
        };
        let (value, tail) = if rest.first() == Some(&b'"') {
            let (value, tail) = quoted(&rest[1..])?;
            (value, skip_after_quoted(tail)?)
        } else {
            let n = value_token_len(rest);
            if n == 0 {
                return Err(DispositionError::BadParameter);
            }
            (rest[..n].to_vec(), &rest[n..])
        };
        rest = skip_ws(tail);
        match param.as_slice() {
            b"name" => out.name = Some(value),
            b"filename" => out.filename = Some(value),
            b"filename*" => extended_filename = decode_ext_value(&value),
            _ => {}
        }
    }
    // RFC 6266: filename* wins over filename when both are present and understood.
    if extended_filename.is_some() {
        out.filename = extended_filename;
    }
    for field in [&out.name, &out.filename].into_iter().flatten() {
        if field.iter().any(|b| *b < 0x20 || *b == 0x7f) {
            return Err(DispositionError::ControlByte);
        }
    }
    Ok(out)
}

/// The last path element of a client-side file name: browsers on Windows used to send
/// `C:\Users\me\file.txt`, others `/home/me/file.txt`.
pub fn base_name(filename: &[u8]) -> &[u8] {
    match filename.iter().rposition(|b| *b == b'/' || *b == b'\\') {
        Some(i) => &filename[i + 1..],
        None => filename,
    }
}

fn skip_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|b| is_tchar(**b)).count()
}

/// Unquoted parameter values in the wild hold more than tokens (`filename=a b.txt` is rare,
/// `filename=a.tar.gz` or `name=files[]` common): take everything up to `;` or white space.
fn value_token_len(s: &[u8]) -> usize {
    s.iter()
        .take_while(|b| !matches!(b, b';' | b' ' | b'\t' | b'"'))
        .count()
}

/// Reads a quoted string after its opening quote; returns the value and the rest.
///
/// Only `\"` is taken as an escape: old Internet Explorer sends Windows paths unescaped
/// (`filename="C:\Users\me\f.txt"`), and taking every backslash as an escape would glue the
/// path elements together before they can be stripped.
fn quoted(s: &[u8]) -> Result<(Vec<u8>, &[u8]), DispositionError> {
    let mut value = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => return Ok((value, &s[i + 1..])),
            b'\\' if s.get(i + 1) == Some(&b'"') => {
                value.push(b'"');
                i += 2;
            }
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
    Err(DispositionError::Unterminated)
}

/// What follows a closed quoted value, up to the next `;`, is ignored, as nginx-upload-module
/// ignores it (it takes the value up to its closing quote); a control byte there is refused.
fn skip_after_quoted(s: &[u8]) -> Result<&[u8], DispositionError> {
    let junk = s.iter().take_while(|b| **b != b';').count();
    if s[..junk]
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
    {
        return Err(DispositionError::BadParameter);
    }
    Ok(&s[junk..])
}

/// RFC 8187 `charset'language'percent-encoded`; only UTF-8 and ISO-8859-1 are defined.
fn decode_ext_value(value: &[u8]) -> Option<Vec<u8>> {
    let mut parts = value.splitn(3, |b| *b == b'\'');
    let charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            let hex = core::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(encoded[i]);
            i += 1;
        }
    }
    if charset.eq_ignore_ascii_case(b"utf-8") {
        core::str::from_utf8(&bytes).ok()?;
        Some(bytes)
    } else if charset.eq_ignore_ascii_case(b"iso-8859-1") {
        Some(
            bytes
                .iter()
                .map(|b| *b as char)
                .collect::<String>()
                .into_bytes(),
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Disposition {
        parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_raw_upload_disposition() {
        let d = ok("attachment; filename=\"big.TXT\"");
        assert_eq!(d.kind, "attachment");
        assert_eq!(d.filename.as_deref(), Some(&b"big.TXT"[..]));
        assert_eq!(d.name, None);
    }

    #[test]
    fn parses_form_data_disposition() {
        let d = ok("form-data; name=\"file\"; filename=\"a b;c.txt\"");
        assert_eq!(d.kind, "form-data");
        assert_eq!(d.name.as_deref(), Some(&b"file"[..]));
        assert_eq!(d.filename.as_deref(), Some(&b"a b;c.txt"[..]));
    }

    #[test]
    fn accepts_unquoted_values_case_and_spacing() {
        let d = ok("Form-Data ;NAME = files[] ; FileName=x.tar.gz;");
        assert_eq!(d.kind, "form-data");
        assert_eq!(d.name.as_deref(), Some(&b"files[]"[..]));
        assert_eq!(d.filename.as_deref(), Some(&b"x.tar.gz"[..]));
    }

    #[test]
    fn unescapes_quoted_quotes_only() {
        let d = ok(r#"attachment; filename="say \"hi\" \\o/.txt""#);
        assert_eq!(d.filename.as_deref(), Some(&br#"say "hi" \\o/.txt"#[..]));
    }

    #[test]
    fn keeps_unescaped_windows_paths() {
        let d = ok(r#"form-data; name="f"; filename="C:\Users\me\f.txt""#);
        assert_eq!(d.filename.as_deref(), Some(&br#"C:\Users\me\f.txt"#[..]));
        assert_eq!(base_name(d.filename.as_deref().unwrap()), b"f.txt");
    }

    #[test]
    fn prefers_extended_filename() {
        let d = ok("attachment; filename=\"fallback.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt");
        assert_eq!(d.filename.as_deref(), Some("été.txt".as_bytes()));
        let d = ok("attachment; filename*=iso-8859-1'en'%E9.txt");
        assert_eq!(d.filename.as_deref(), Some("é.txt".as_bytes()));
        // An undecodable filename* leaves the plain one.
        let d = ok("attachment; filename=\"plain\"; filename*=UTF-8''%ZZ");
        assert_eq!(d.filename.as_deref(), Some(&b"plain"[..]));
    }

    /// nginx-upload-module takes a quoted value up to its closing quote and ignores what
    /// follows; some clients send `\r` (a backslash and an `r`, not a CR) after the last one.
    #[test]
    fn ignores_text_after_a_closed_quoted_value() {
        let d = ok(r#"form-data; name="file"; filename="test.txt"\r"#);
        assert_eq!(d.kind, "form-data");
        assert_eq!(d.name.as_deref(), Some(&b"file"[..]));
        assert_eq!(d.filename.as_deref(), Some(&b"test.txt"[..]));
        let d = ok(r#"attachment; filename="test.txt"\r"#);
        assert_eq!(d.filename.as_deref(), Some(&b"test.txt"[..]));
        for (value, name, filename) in [
            (
                r#"form-data; name="f"\r\n; filename="a.txt"\r\n"#,
                "f",
                "a.txt",
            ),
            (
                r#"form-data; name="f"xyz ; filename="a.txt" junk"#,
                "f",
                "a.txt",
            ),
            (r#"form-data; name="f" "; filename="a.txt""#, "f", "a.txt"),
            (
                "form-data; name=\"f\"\t\\; filename=\"a.txt\"\\r;",
                "f",
                "a.txt",
            ),
            (r#"form-data; name="f";; filename="a.txt";"#, "f", "a.txt"),
            (
                r#"form-data;; name="f" ; ; filename="a.txt" ;"#,
                "f",
                "a.txt",
            ),
            (
                r#"form-data; name="f"; filename="C:\dir\a.txt"\r"#,
                "f",
                "C:\\dir\\a.txt",
            ),
        ] {
            let d = ok(value);
            assert_eq!(d.name.as_deref(), Some(name.as_bytes()), "{value:?}");
            assert_eq!(
                d.filename.as_deref(),
                Some(filename.as_bytes()),
                "{value:?}"
            );
        }
        let d = ok(r#"form-data; name="f"; filename="C:\dir\a.txt"\r"#);
        assert_eq!(base_name(d.filename.as_deref().unwrap()), b"a.txt");
    }

    #[test]
    fn rejects_malformed_headers() {
        use DispositionError::*;
        for (bad, why) in [
            ("", Syntax),
            ("; filename=a", Syntax),
            ("bogus; filename=a", UnknownType),
            ("attachment filename=a", BadParameter),
            ("attachment; filename", BadParameter),
            ("attachment; =a", BadParameter),
            ("attachment; filename=", BadParameter),
            ("attachment; filename=\"open", Unterminated),
            ("attachment; filename=\"a\"\\r; name=\"open", Unterminated),
            ("attachment; filename=\"a\"\x01", BadParameter),
            ("attachment; filename=\"a\" x\x7f; name=b", BadParameter),
            ("attachment; filename=\"a\"\\r\x00", BadParameter),
            ("attachment; filename=\"a\"; =b", BadParameter),
            ("attachment; filename=\"a\"; name", BadParameter),
            (
                "attachment; filename=\"a\"\\r; filename=\"b\0c\"",
                ControlByte,
            ),
            ("attachment; filename=\"a\0b\"", ControlByte),
            ("attachment; filename=\"a\rb\"", ControlByte),
            ("form-data; name=\"a\nb\"", ControlByte),
        ] {
            assert_eq!(parse(bad.as_bytes()), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn strips_dos_and_unix_paths() {
        assert_eq!(base_name(b"C:\\Users\\me\\file.txt"), b"file.txt");
        assert_eq!(base_name(b"/home/me/file.txt"), b"file.txt");
        assert_eq!(base_name(b"../../etc/passwd"), b"passwd");
        assert_eq!(base_name(b"plain.txt"), b"plain.txt");
        assert_eq!(base_name(b"dir/"), b"");
    }
}
