//! Cuts a scope's text into tokens: punctuation, operators and names. White space inside a
//! bare name folds to one space; a quoted name is kept as written.

use std::borrow::Cow;

use crate::error::{ErrorKind, ScopeError};
use crate::hints;
use crate::token::{Kind, Token};
use crate::tree::{Op, Span};

/// The characters of a bare word.
pub(crate) fn is_word_char(c: char) -> bool {
    WORD.contains(c)
}

/// The ASCII characters of a bare word, as a byte.
pub(crate) fn is_word_byte(byte: u8) -> bool {
    WORD.ascii.get(usize::from(byte)) == Some(&true)
}

/// A kind of character that the lexer runs over: ASCII looked up in a table (the lexer's inner
/// loop, since names are most of a scope's text), the rest decoded and tested.
struct Class {
    ascii: [bool; 128],
    other: fn(char) -> bool,
}

/// Letters, digits, '_', '-' and '.': the characters of a bare word.
static WORD: Class = Class {
    ascii: ascii_table(true, b"_-."),
    other: char::is_alphanumeric,
};

/// White space, as `char::is_whitespace` has it.
static SPACE: Class = Class {
    ascii: ascii_table(false, b" \t\n\x0b\x0c\r"),
    other: char::is_whitespace,
};

/// The table of the ASCII letters and digits if `alphanumeric`, and of the bytes of `also`.
const fn ascii_table(alphanumeric: bool, also: &[u8]) -> [bool; 128] {
    let mut table = [false; 128];
    let mut byte: u8 = 0;
    while byte < 128 {
        table[byte as usize] = alphanumeric && byte.is_ascii_alphanumeric();
        byte += 1;
    }
    let mut at = 0;
    while at < also.len() {
        table[also[at] as usize] = true;
        at += 1;
    }
    table
}

impl Class {
    fn contains(&self, c: char) -> bool {
        match u8::try_from(c) {
            Ok(byte) if byte.is_ascii() => self.ascii[usize::from(byte)],
            _ => (self.other)(c),
        }
    }

    /// The offset of the first character from `from` on that is not of this class.
    #[inline]
    fn end(&self, text: &str, from: usize) -> usize {
        let bytes = text.as_bytes();
        let mut at = from;
        while let Some(&byte) = bytes.get(at) {
            if byte.is_ascii() {
                if !self.ascii[usize::from(byte)] {
                    break;
                }
                at += 1;
            } else {
                match text[at..].chars().next() {
                    Some(c) if (self.other)(c) => at += c.len_utf8(),
                    _ => break,
                }
            }
        }
        at
    }
}

/// Hands out the tokens of a text one at a time, so that no list of them is ever built.
pub(crate) struct Lexer<'a, F> {
    text: &'a str,
    pos: usize,
    /// Turns an offset in `text` into one in the input the user wrote (they differ for a
    /// value inside a JSON string).
    at: F,
}

impl<'a, F: Fn(usize) -> usize> Lexer<'a, F> {
    pub(crate) fn new(text: &'a str, at: F) -> Lexer<'a, F> {
        Lexer { text, pos: 0, at }
    }

    /// The next token; at the end of the text, [`Kind::End`] again and again.
    pub(crate) fn next_token(&mut self) -> Result<Token<'a>, ScopeError> {
        let text = self.text;
        let at = &self.at;
        let start = SPACE.end(text, self.pos);
        let Some(c) = char_at(text, start) else {
            self.pos = start;
            let end = at(text.len());
            return Ok(Token {
                kind: Kind::End,
                span: Span::new(end, end),
            });
        };
        let mut pos = start + c.len_utf8();
        let kind = match c {
            '{' => Kind::LBrace,
            '}' => Kind::RBrace,
            '(' => Kind::LParen,
            ')' => Kind::RParen,
            ':' => Kind::Colon,
            ',' => Kind::Comma,
            '/' => Kind::Slash,
            '&' => Kind::Op(Op::Replicate),
            '%' => Kind::Op(Op::Cross),
            ';' => Kind::Op(Op::Otherwise),
            '|' => {
                // '|' and '||' are older spellings of ';'.
                if text[pos..].starts_with('|') {
                    pos += 1;
                }
                Kind::Op(Op::Otherwise)
            }
            '"' => {
                let Some(len) = text[pos..].find('"') else {
                    let span = Span::new(at(start), at(pos));
                    return Err(ScopeError::new(ErrorKind::UnclosedQuote, span));
                };
                let name = &text[pos..pos + len];
                pos += len + 1;
                Kind::Name {
                    text: Cow::Borrowed(name),
                    quoted: true,
                }
            }
            _ if is_word_char(c) => {
                let (name, end) = bare_name(text, start);
                pos = end;
                Kind::Name {
                    text: name,
                    quoted: false,
                }
            }
            _ => {
                let span = Span::new(at(start), at(pos));
                return Err(ScopeError::new(ErrorKind::UnexpectedChar(c), span)
                    .with_hint(hints::unexpected_char(text, start, c)));
            }
        };
        self.pos = pos;
        Ok(Token {
            kind,
            span: Span::new(at(start), at(pos)),
        })
    }
}

/// The words starting at `start`, joined by single spaces, and the offset after the last word.
fn bare_name(text: &str, start: usize) -> (Cow<'_, str>, usize) {
    let mut end = WORD.end(text, start);
    let mut single_spaced = true;
    loop {
        let next_word = SPACE.end(text, end);
        if next_word == end || !text[next_word..].starts_with(is_word_char) {
            break;
        }
        single_spaced &= &text[end..next_word] == " ";
        end = WORD.end(text, next_word);
    }
    let written = &text[start..end];
    if single_spaced {
        return (Cow::Borrowed(written), end);
    }
    let mut name = String::with_capacity(written.len());
    for word in written.split_whitespace() {
        if !name.is_empty() {
            name.push(' ');
        }
        name.push_str(word);
    }
    (Cow::Owned(name), end)
}

/// The character at byte `at`, decoded only when it is not ASCII: scopes are mostly ASCII,
/// and decoding every character stood out in profiles of the parser.
fn char_at(text: &str, at: usize) -> Option<char> {
    match text.as_bytes().get(at) {
        Some(&byte) if byte.is_ascii() => Some(char::from(byte)),
        Some(_) => text[at..].chars().next(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{is_word_byte, SPACE, WORD};

    #[test]
    fn tables_say_what_the_predicates_say() {
        for byte in 0..=u8::MAX {
            let c = char::from(byte);
            let word = c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
            assert_eq!(WORD.contains(c), word, "{c:?}");
            assert_eq!(SPACE.contains(c), c.is_whitespace(), "{c:?}");
            assert_eq!(is_word_byte(byte), word && byte.is_ascii(), "{c:?}");
        }
    }
}
