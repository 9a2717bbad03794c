//! Cuts a scope's text into tokens: punctuation, operators and names. White space inside a
//! bare name folds to one space; a quoted name is kept as written.

use std::borrow::Cow;

use crate::error::{ErrorKind, ScopeError};
use crate::hints;
use crate::token::{Kind, Token};
use crate::tree::{Op, Span};

/// The characters of a bare word.
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
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
        let start = end_of(text, self.pos, char::is_whitespace);
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
    let mut end = end_of(text, start, is_word_char);
    let mut single_spaced = true;
    loop {
        let next_word = end_of(text, end, char::is_whitespace);
        if next_word == end || !text[next_word..].starts_with(is_word_char) {
            break;
        }
        single_spaced &= &text[end..next_word] == " ";
        end = end_of(text, next_word, is_word_char);
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

/// The offset of the first character from `from` on that is not `inside`.
fn end_of(text: &str, from: usize, inside: impl Fn(char) -> bool) -> usize {
    let mut at = from;
    while let Some(c) = char_at(text, at).filter(|&c| inside(c)) {
        at += c.len_utf8();
    }
    at
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
