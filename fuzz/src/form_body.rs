//! The hand-off body built by `form::FormBody` read back by the engine's own
//! `boundary_from_content_type` and `MultipartParser`: the fields come back, in order, with
//! the names escaped as WHATWG says (`"` CR LF as %22 %0D %0A) and the values intact.
//!
//! Input: a separator byte, then the `unique` part of the boundary and alternating field names
//! and values, separated by it.
//!
//! Known exceptions, not checked: a value that holds the delimiter (`\n--` and the boundary)
//! cannot be framed (FormBody documents it), and a name with a control byte other than CR or
//! LF, or one that ends in a backslash, makes a Content-Disposition the parser refuses (see
//! docs/fuzzing.md): for those only "no panic" is checked.

use ngx_upload_engine::form::FormBody;
use ngx_upload_engine::multipart::{
    boundary_from_content_type, Limits, MultipartParser, PartAction, PartHeaders, PartSink,
};

use crate::contains;

pub fn check(data: &[u8]) {
    let Some((&separator, rest)) = data.split_first() else {
        return;
    };
    let mut pieces = rest.split(|b| *b == separator);
    let unique: String = pieces
        .next()
        .unwrap_or_default()
        .iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .take(16)
        .map(|b| *b as char)
        .collect();
    let mut fields = Vec::new();
    while let Some(name) = pieces.next() {
        fields.push((name, pieces.next().unwrap_or_default()));
    }

    let mut form = FormBody::new(&unique);
    assert!(form.is_empty());
    for (name, value) in &fields {
        form.add_field(name, value);
    }
    assert_eq!(form.is_empty(), fields.is_empty());
    let content_type = form.content_type();
    let boundary = boundary_from_content_type(content_type.as_bytes())
        .unwrap_or_else(|e| panic!("{content_type:?}: {e}"));
    assert_eq!(boundary, form.boundary().as_bytes());
    let before_closing = form.len();
    let body = form.finish();
    assert_eq!(
        body.len(),
        before_closing + b"----\r\n".len() + boundary.len()
    );

    let mut delimiter = b"\n--".to_vec();
    delimiter.extend_from_slice(&boundary);
    let framable = fields.iter().all(|(_, value)| !contains(value, &delimiter));
    let expected: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|(name, value)| (escape(name), value.to_vec()))
        .collect();
    let names_readable = expected
        .iter()
        .all(|(name, _)| !name.ends_with(b"\\") && !name.iter().any(|b| *b < 0x20 || *b == 0x7f));

    // Long names make long header lines: lift the line limit, which is for clients' bodies.
    let limits = Limits {
        max_part_header_len: 1 << 20,
        ..Limits::default()
    };
    let mut parser = MultipartParser::new(&boundary, limits).unwrap();
    let mut sink = Fields::default();
    let result = parser
        .feed(&body, &mut sink)
        .and_then(|()| parser.finish(&mut sink));
    if framable && names_readable {
        result.unwrap_or_else(|e| panic!("{body:?}: {e:?}"));
        assert_eq!(sink.fields, expected);
    }
}

/// WHATWG: `"` CR LF in a field name are percent-encoded, nothing else.
fn escape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in name {
        match b {
            b'"' => out.extend_from_slice(b"%22"),
            b'\r' => out.extend_from_slice(b"%0D"),
            b'\n' => out.extend_from_slice(b"%0A"),
            _ => out.push(b),
        }
    }
    out
}

#[derive(Default)]
struct Fields {
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl PartSink for Fields {
    type Error = core::convert::Infallible;

    fn part_start(&mut self, headers: &PartHeaders) -> Result<PartAction, Self::Error> {
        assert!(!headers.is_file());
        self.fields.push((headers.name().to_vec(), Vec::new()));
        Ok(PartAction::Accept)
    }

    fn part_data(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        self.fields.last_mut().unwrap().1.extend_from_slice(data);
        Ok(())
    }

    fn part_end(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
