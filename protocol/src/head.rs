//! The head of a request as the protocols read it: method, URI, headers, body length.

/// The methods the protocols tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

/// A request head, borrowed from the server's request.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    pub method: Method,
    /// The method as sent, for messages.
    pub method_name: &'a [u8],
    /// The decoded path (no arguments).
    pub uri: &'a [u8],
    /// Every header, in the order sent.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// `Content-Length`, when sent.
    pub content_length: Option<u64>,
    /// The body is chunked (HTTP/1.1) or of unknown length (HTTP/2 without a length).
    pub chunked: bool,
}

impl<'a> RequestHead<'a> {
    /// A head with no headers, for tests and as a base.
    pub fn new(method: Method, uri: &'a [u8]) -> Self {
        let method_name: &'static [u8] = match method {
            Method::Get => b"GET",
            Method::Head => b"HEAD",
            Method::Post => b"POST",
            Method::Put => b"PUT",
            Method::Patch => b"PATCH",
            Method::Delete => b"DELETE",
            Method::Options => b"OPTIONS",
            Method::Other => b"OTHER",
        };
        Self {
            method,
            method_name,
            uri,
            headers: Vec::new(),
            content_length: None,
            chunked: false,
        }
    }

    /// The value of header `name` (case-insensitive); the last one when it was sent twice.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| *v)
    }

    /// The first of `names` that was sent.
    pub fn first_header(&self, names: &[&str]) -> Option<&'a [u8]> {
        names.iter().find_map(|n| self.header(n))
    }

    pub fn content_type(&self) -> Option<&'a [u8]> {
        self.header("content-type")
    }

    /// The request has no body: no length, or a length of 0, and not chunked.
    pub fn has_no_body(&self) -> bool {
        !self.chunked && self.content_length.is_none_or(|n| n == 0)
    }

    pub fn method_name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.method_name)
    }
}

/// Whether `value` starts with `prefix`, ignoring ASCII case.
pub fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}
