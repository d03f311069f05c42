//! `disposition::parse`: output invariants, and that what it accepts survives being written
//! out again (as a browser would) and parsed back; `base_name` of every file name.

use ngx_upload_engine::disposition::{base_name, parse, Disposition};

pub fn check(data: &[u8]) {
    let Ok(d) = parse(data) else {
        return;
    };
    assert!(
        matches!(d.kind.as_str(), "attachment" | "form-data" | "inline"),
        "{:?}",
        d.kind
    );
    for field in [&d.name, &d.filename].into_iter().flatten() {
        assert!(
            !field.iter().any(|b| *b < 0x20 || *b == 0x7f),
            "control byte in {field:?}"
        );
    }
    if let Some(filename) = &d.filename {
        let base = base_name(filename);
        assert!(filename.ends_with(base));
        assert!(!base.iter().any(|b| *b == b'/' || *b == b'\\'));
        // Only a path separator may come right before the base name.
        let cut = filename.len() - base.len();
        assert!(cut == 0 || matches!(filename[cut - 1], b'/' | b'\\'));
    }
    if let Some(text) = write(&d) {
        assert_eq!(
            parse(&text),
            Ok(d.clone()),
            "{:?} rewritten as {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&text)
        );
    }
}

/// `kind; name=...; filename=...`, each value in whichever form the parser can read back:
/// a quoted string (`"` written `\"`; the parser takes no other escape, so a value ending in
/// `\` cannot be quoted), a bare value, or for file names an RFC 8187 `filename*`.
/// `None` if a value fits none of them.
fn write(d: &Disposition) -> Option<Vec<u8>> {
    let mut out = d.kind.as_bytes().to_vec();
    for (param, value) in [(&b"name"[..], &d.name), (b"filename", &d.filename)] {
        let Some(value) = value else { continue };
        out.extend_from_slice(b"; ");
        out.extend_from_slice(param);
        if !value.ends_with(b"\\") {
            out.extend_from_slice(b"=\"");
            for &b in value.iter() {
                if b == b'"' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'"');
        } else if !value
            .iter()
            .any(|b| matches!(b, b';' | b' ' | b'\t' | b'"'))
        {
            out.push(b'=');
            out.extend_from_slice(value);
        } else if param == b"filename" && std::str::from_utf8(value).is_ok() {
            out.extend_from_slice(b"*=UTF-8''");
            for b in value.iter() {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        } else {
            return None;
        }
    }
    Some(out)
}
