//! One HTTP request to a service and its answer, as collaborations carry them: text bodies
//! (kept in the operation log and rewritten), headers as pairs, no framing headers.
use serde::{Deserialize, Serialize};

/// One HTTP request to a service. Bodies of collaborations are text (JSON, in practice): they
/// are kept in the operation log and rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub service: String,
    pub method: String,
    /// The path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn new(status: u16, content_type: &str, body: String) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    }

    /// An answer made by cheops itself, one sentence of plain text.
    pub fn from_cheops(status: u16, message: String) -> Answer {
        Answer::new(
            status,
            "text/plain; charset=utf-8",
            format!("cheops: {message}\n"),
        )
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Sets `name` to `value`, replacing any earlier value.
    pub fn set_header(&mut self, name: &str, value: String) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value));
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
