//! `multipart::boundary_from_content_type`: a boundary it returns is one the parser takes,
//! and reads back the same from a Content-Type written anew, quoted and (where possible) bare.

use ngx_upload_engine::multipart::{
    boundary_from_content_type, Limits, MultipartError, MultipartParser, MAX_BOUNDARY_LEN,
};

pub fn check(data: &[u8]) {
    let boundary = match boundary_from_content_type(data) {
        Ok(b) => b,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!boundary.is_empty() && boundary.len() <= MAX_BOUNDARY_LEN);
    assert!(!boundary.iter().any(|b| *b < 0x20 || *b == 0x7f));
    assert!(MultipartParser::new(&boundary, Limits::default()).is_ok());

    // In a quoted string a backslash escapes any byte.
    let mut quoted = b"Multipart/Form-Data; charset=\"a;boundary=no\"; boundary=\"".to_vec();
    for &b in &boundary {
        if b == b'"' || b == b'\\' {
            quoted.push(b'\\');
        }
        quoted.push(b);
    }
    quoted.extend_from_slice(b"\" ;");
    assert_eq!(boundary_from_content_type(&quoted), Ok(boundary.clone()));

    if !boundary
        .iter()
        .any(|b| matches!(b, b';' | b' ' | b'\t' | b'"'))
    {
        let mut bare = b"multipart/form-data;boundary=".to_vec();
        bare.extend_from_slice(&boundary);
        assert_eq!(boundary_from_content_type(&bare), Ok(boundary.clone()));
        // A second boundary is refused whatever it is.
        bare.extend_from_slice(b"; BOUNDARY=");
        bare.extend_from_slice(&boundary);
        assert_eq!(
            boundary_from_content_type(&bare),
            Err(MultipartError::BadBoundary)
        );
    }
}
