//! The hand-off body: a `multipart/form-data` document holding the fields configured with
//! `upload_set_form_field` / `upload_aggregate_form_field`, which the backend parses like any
//! browser form post.

/// Builds the body in one buffer; it holds only field names and values, never file content.
pub struct FormBody {
    boundary: String,
    body: Vec<u8>,
    fields: usize,
}

impl FormBody {
    /// `unique` makes the boundary unlikely to occur in a value; any value may still hold it,
    /// so callers pick something per request (a session id, a time stamp).
    pub fn new(unique: &str) -> Self {
        Self {
            boundary: format!("------------------ngxupload{unique}"),
            body: Vec::new(),
            fields: 0,
        }
    }

    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// Bytes of the body so far, without the closing delimiter.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields == 0
    }

    pub fn add_field(&mut self, name: &[u8], value: &[u8]) {
        self.fields += 1;
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(self.boundary.as_bytes());
        self.body
            .extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        escape_name(name, &mut self.body);
        self.body.extend_from_slice(b"\"\r\n\r\n");
        self.body.extend_from_slice(value);
        self.body.extend_from_slice(b"\r\n");
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(self.boundary.as_bytes());
        self.body.extend_from_slice(b"--\r\n");
        self.body
    }
}

/// Field names go inside a quoted string; encode what would end it or the header line the way
/// browsers do (WHATWG HTML multipart/form-data encoding).
fn escape_name(name: &[u8], out: &mut Vec<u8>) {
    for &b in name {
        match b {
            b'"' => out.extend_from_slice(b"%22"),
            b'\r' => out.extend_from_slice(b"%0D"),
            b'\n' => out.extend_from_slice(b"%0A"),
            _ => out.push(b),
        }
    }
}

/// `upload_tame_arrays on`: PHP-style `files[]` becomes `files`.
pub fn tame_array_name(name: &[u8]) -> &[u8] {
    name.strip_suffix(b"[]").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_form_body() {
        let mut f = FormBody::new("x");
        assert_eq!(
            f.content_type(),
            "multipart/form-data; boundary=------------------ngxuploadx"
        );
        f.add_field(b"file.name", b"big.TXT");
        f.add_field(b"a\"b", b"");
        assert!(!f.is_empty());
        let len_before_closing = f.len();
        let body = String::from_utf8(f.finish()).unwrap();
        assert_eq!(
            body.len(),
            len_before_closing + "--------------------ngxuploadx--\r\n".len()
        );
        assert_eq!(
            body,
            "--------------------ngxuploadx\r\n\
             Content-Disposition: form-data; name=\"file.name\"\r\n\r\nbig.TXT\r\n\
             --------------------ngxuploadx\r\n\
             Content-Disposition: form-data; name=\"a%22b\"\r\n\r\n\r\n\
             --------------------ngxuploadx--\r\n"
        );
    }

    #[test]
    fn empty_form_is_just_the_closing_boundary() {
        assert_eq!(
            FormBody::new("1").finish(),
            b"--------------------ngxupload1--\r\n"
        );
    }

    #[test]
    fn tames_arrays() {
        assert_eq!(tame_array_name(b"files[]"), b"files");
        assert_eq!(tame_array_name(b"files[0]"), b"files[0]");
        assert_eq!(tame_array_name(b"f"), b"f");
    }
}
