//! Reads a duration's text, as in `around(Paris, 10ms)`. Apart from the parser, so that a
//! hint can try whether a word is a duration too.

use std::time::Duration;

use crate::error::ErrorKind;

/// `text` as a duration: a whole number then `us`, `ms` or `s`, in whole microseconds.
pub(crate) fn read(text: &str) -> Result<Duration, ErrorKind> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let micros_per_unit: u64 = match &text[digits..] {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        _ => return Err(ErrorKind::BadDuration(text.to_owned())),
    };
    if digits == 0 {
        return Err(ErrorKind::BadDuration(text.to_owned()));
    }
    text[..digits]
        .parse::<u64>()
        .ok()
        .and_then(|count| count.checked_mul(micros_per_unit))
        .map(Duration::from_micros)
        .ok_or_else(|| ErrorKind::DurationTooLong(text.to_owned()))
}
