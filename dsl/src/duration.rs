//! Reads a duration's text, as in `around(Paris, 10ms)`. Apart from the parser, so that a
//! hint can try whether a word is a duration too.

use std::time::Duration;

use crate::error::ErrorKind;

/// `text` as a duration: a whole number then `us`, `ms` or `s`, in whole microseconds. Read
/// as bytes, the digits and units being ASCII: a scope's `around` is read on every request.
pub(crate) fn read(text: &str) -> Result<Duration, ErrorKind> {
    let bytes = text.as_bytes();
    let digits = bytes
        .iter()
        .position(|byte| !byte.is_ascii_digit())
        .unwrap_or(bytes.len());
    let micros_per_unit: u64 = match &bytes[digits..] {
        b"us" => 1,
        b"ms" => 1_000,
        b"s" => 1_000_000,
        _ => return Err(ErrorKind::BadDuration(text.to_owned())),
    };
    if digits == 0 {
        return Err(ErrorKind::BadDuration(text.to_owned()));
    }
    bytes[..digits]
        .iter()
        .try_fold(0u64, |count, digit| {
            count.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
        .and_then(|count| count.checked_mul(micros_per_unit))
        .map(Duration::from_micros)
        .ok_or_else(|| ErrorKind::DurationTooLong(text.to_owned()))
}
