//! Reads the earlier JSON format: an object whose keys are services and whose string values
//! are location expressions. Kept here rather than in serde_json because the entries' order,
//! repeated keys and each character's position in the input all matter for errors.

use crate::tree::Span;

/// One `"key": "value"` member, with where each decoded byte of the value was written.
pub(crate) struct Member {
    pub key: String,
    pub key_span: Span,
    pub value: String,
    /// `value_at[i]` is the input offset of the value's byte `i`; one more for its end.
    pub value_at: Vec<usize>,
}

/// The members of `input` if it is exactly one JSON object of strings, else `None`.
pub(crate) fn object_of_strings(input: &str) -> Option<Vec<Member>> {
    let mut reader = Reader { input, pos: 0 };
    reader.skip_space();
    reader.eat('{')?;
    let mut members = Vec::new();
    reader.skip_space();
    if reader.eat('}').is_none() {
        loop {
            reader.skip_space();
            let key_start = reader.pos + 1;
            let (key, _) = reader.string()?;
            let key_span = Span::new(key_start, reader.pos - 1);
            reader.skip_space();
            reader.eat(':')?;
            reader.skip_space();
            let (value, value_at) = reader.string()?;
            members.push(Member {
                key,
                key_span,
                value,
                value_at,
            });
            reader.skip_space();
            if reader.eat('}').is_some() {
                break;
            }
            reader.eat(',')?;
        }
    }
    reader.skip_space();
    (reader.pos == input.len()).then_some(members)
}

struct Reader<'a> {
    input: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn eat(&mut self, expected: char) -> Option<()> {
        (self.peek()? == expected).then(|| self.pos += expected.len_utf8())
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    /// A JSON string, decoded, with the input offset of each decoded byte and of its end.
    fn string(&mut self) -> Option<(String, Vec<usize>)> {
        self.eat('"')?;
        let mut text = String::new();
        let mut at = Vec::new();
        loop {
            let start = self.pos;
            let c = self.peek()?;
            self.pos += c.len_utf8();
            let decoded = match c {
                '"' => {
                    at.push(start);
                    return Some((text, at));
                }
                '\\' => self.escape()?,
                c if u32::from(c) < 0x20 => return None,
                c => c,
            };
            text.push(decoded);
            at.extend(std::iter::repeat_n(start, decoded.len_utf8()));
        }
    }

    /// The character of an escape, after its backslash.
    fn escape(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(match c {
            '"' | '\\' | '/' => c,
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let unit = self.hex4()?;
                if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate must be followed by an escaped low one.
                    self.eat('\\')?;
                    self.eat('u')?;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                } else {
                    char::from_u32(unit)?
                }
            }
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.input.get(self.pos..self.pos + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::object_of_strings;

    proptest! {
        // The reader must take exactly what serde_json takes for a map of strings, and decode
        // it the same: otherwise a scope could be read as JSON by one and not the other.
        #[test]
        fn reads_what_serde_json_reads(
            text in r#"[ \n]?\{ ?("([ab\\"/]|\\u[0-9a-fA-F]{4}|\\u[dD][89abAB][0-9a-f]{2}|\\[nrtbfu"\\/x])*" ?:[ \t]?"([ab&"\\]|\\u[dD][c-fC-F]00|\\[nt"\\])*" ?,?){0,3}\} ?x?"#
        ) {
            let ours = object_of_strings(&text).map(|members| {
                members.into_iter().map(|member| (member.key, member.value)).collect::<HashMap<_, _>>()
            });
            let theirs = serde_json::from_str::<HashMap<String, String>>(&text).ok();
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn value_offsets_point_at_the_written_characters() {
        let text = r#"{"a": "x\ny\u00e9z"}"#;
        let members = object_of_strings(text).unwrap();
        let member = &members[0];
        assert_eq!(member.value, "x\nyéz");
        let written: Vec<&str> = member
            .value
            .char_indices()
            .map(|(at, _)| &text[member.value_at[at]..][..1])
            .collect();
        assert_eq!(written, ["x", "\\", "y", "\\", "z"]);
        assert_eq!(&text[member.value_at[member.value.len()]..], "\"}");
    }
}
