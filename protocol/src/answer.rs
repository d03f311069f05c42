//! What the module answers a client itself (everything but a hand-off's answer).

/// Status, headers and body of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// `None`: nginx's own page for the status (its special response), as nginx modules answer
    /// errors; `Some`: exactly this body (possibly empty).
    pub body: Option<Vec<u8>>,
    /// The body's `Content-Type`, when it has one.
    pub content_type: Option<&'static str>,
}

impl Answer {
    /// An answer nginx renders itself: the status with nginx's page for it.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            content_type: None,
        }
    }

    /// An answer with exactly `body`.
    pub fn with_body(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: Some(body.into()),
            ..Self::status(status)
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of a header this answer carries.
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}
