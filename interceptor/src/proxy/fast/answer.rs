//! The head of the answer the client gets, written as hyper's HTTP/1 server writes it: the
//! status line, the instance's fields in lower case (lines copied whole where they lie in
//! that form), the framing header the body needs, and `date` when the answer has none.
use std::{
    cell::RefCell,
    time::{Duration, Instant, SystemTime},
};

use hyper::{Method, StatusCode};

use super::{
    fields::content_length,
    names::{make_lower_case, same_name},
};

/// How a body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Up to the end of the connection.
    UntilClose,
}

/// How hyper's server sends an answer's body: its length known, or not (a chunked or
/// close-delimited answer from the instance); `None`: no body at all.
#[derive(Clone, Copy)]
pub enum BodyLength {
    Known(u64),
    Unknown,
}

/// What the client gets in answer to a request, besides its fields.
pub struct Answer<'a> {
    pub status: StatusCode,
    pub reason: Option<&'a [u8]>,
    pub http11: bool,
    /// Whether its fields hold a `date`.
    pub has_date: bool,
    /// When it is sent (its `date`, when it has none).
    pub at: Instant,
    pub body: Option<BodyLength>,
}

/// Writes the answer's head, its fields `(name, value)` in the order of a `HeaderMap`'s, as
/// hyper's HTTP/1 server does, and tells how its body goes; `Length(0)` when it has none.
/// `read`: the buffer the fields lie in, if they do (their lines are then copied whole).
pub fn encode_answer<'f>(
    dst: &mut Vec<u8>,
    answer: &Answer<'_>,
    fields: impl Iterator<Item = (&'f [u8], &'f [u8])>,
    method: &Method,
    read: &[u8],
) -> Framing {
    let status = answer.status;
    dst.extend_from_slice(if answer.http11 {
        b"HTTP/1.1 "
    } else {
        b"HTTP/1.0 "
    });
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    let reason = answer
        .reason
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(reason);
    dst.extend_from_slice(b"\r\n");
    let head = *method == Method::HEAD;
    let no_content = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let can_chunk = answer.http11 && !head && !no_content;
    let mut framing = None;
    let mut previous: Option<&[u8]> = None;
    for (name, value) in fields {
        let again = previous.is_some_and(|previous| same_name(previous, name));
        previous = Some(name);
        if same_name(name, b"content-length") {
            // As hyper: with a body, its first length stands; without, only HEAD keeps them.
            match answer.body {
                Some(_) if again => continue,
                Some(BodyLength::Known(len)) => framing = Some(Framing::Length(len)),
                Some(BodyLength::Unknown) => match content_length(value) {
                    Some(len) => framing = Some(Framing::Length(len)),
                    None => continue,
                },
                None if head => framing = Some(Framing::Length(0)),
                None => continue,
            }
        }
        write_field(dst, name, value, read);
    }
    let framing = framing.unwrap_or_else(|| match answer.body {
        Some(BodyLength::Unknown) if can_chunk => {
            dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
        Some(BodyLength::Unknown) => Framing::UntilClose,
        Some(BodyLength::Known(len)) if !no_content && len > 0 => {
            write_field(dst, b"content-length", len.to_string().as_bytes(), &[]);
            Framing::Length(len)
        }
        _ => {
            if !head && !no_content {
                dst.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
    });
    if !answer.has_date {
        write_field(dst, b"date", &http_date(answer.at), &[]);
    }
    dst.extend_from_slice(b"\r\n");
    if head || no_content {
        return Framing::Length(0);
    }
    framing
}

/// A field as hyper writes it: `name: value\r\n`, its name in lower case; copied in one go
/// when its line in `read`, the buffer it was read into, is in that form already.
// Inlined: called for each field of every answer, it costs little more than its call.
#[inline(always)]
pub(super) fn write_field(dst: &mut Vec<u8>, name: &[u8], value: &[u8], read: &[u8]) {
    let at = dst.len();
    match raw_line(read, name, value) {
        Some(line) => dst.extend_from_slice(line),
        None => {
            dst.reserve(name.len() + value.len() + 4);
            for part in [name, b": ", value, b"\r\n"] {
                dst.extend_from_slice(part);
            }
        }
    }
    make_lower_case(&mut dst[at..at + name.len()]);
}

/// The line `name: value\r\n` where `name` lies in `read`, if its bytes are that.
fn raw_line<'r>(read: &'r [u8], name: &[u8], value: &[u8]) -> Option<&'r [u8]> {
    let start = (name.as_ptr() as usize).checked_sub(read.as_ptr() as usize)?;
    let value_at = name.len() + 2;
    let line = read.get(start..start + value_at + value.len() + 2)?;
    let contiguous = value.as_ptr() as usize == name.as_ptr() as usize + value_at;
    (contiguous && line[name.len()..value_at] == *b": " && line.ends_with(b"\r\n")).then_some(line)
}

/// `now` as an HTTP date, formatted once a second per thread (as hyper keeps its own): the
/// wall clock is read only once `now` is past the second formatted last, which `now`, read
/// already for the request's time, tells without a clock read of its own.
fn http_date(now: Instant) -> [u8; 29] {
    thread_local! {
        /// The date formatted last, and when its second ends.
        static CACHED: RefCell<Option<([u8; 29], Instant)>> = const { RefCell::new(None) };
    }
    CACHED.with_borrow_mut(|cached| match *cached {
        Some((date, second_ends)) if now < second_ends => date,
        _ => {
            let wall = SystemTime::now();
            let into_second = wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| since.subsec_nanos());
            let second_ends = now + Duration::from_nanos(u64::from(1_000_000_000 - into_second));
            let mut date = [0; 29];
            date.copy_from_slice(&httpdate::fmt_http_date(wall).as_bytes()[..29]);
            *cached = Some((date, second_ends));
            date
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use super::http_date;

    #[test]
    fn the_date_is_the_wall_clock_s_when_formatted_and_when_kept() {
        for _ in 0..3 {
            let before = httpdate::fmt_http_date(SystemTime::now());
            let date = http_date(Instant::now());
            let after = httpdate::fmt_http_date(SystemTime::now());
            let date = std::str::from_utf8(&date).unwrap();
            assert!(
                date == before || date == after,
                "{date}: {before} .. {after}"
            );
        }
    }
}
