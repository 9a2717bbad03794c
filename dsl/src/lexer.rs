//! Cuts a scope's text into tokens: punctuation, operators and names. White space inside a
//! bare name folds to one space; a quoted name is kept as written.

use crate::error::{ErrorKind, ScopeError};
use crate::hints;
use crate::tree::{Op, Span};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Colon,
    Comma,
    Slash,
    Op(Op),
    Name { text: String, quoted: bool },
    End,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub kind: Kind,
    pub span: Span,
}

/// The characters of a bare word.
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// The tokens of `text`, ending with [`Kind::End`]. `at` turns an offset in `text` into one
/// in the input the user wrote (they differ for a value inside a JSON string).
pub(crate) fn tokens(text: &str, at: &impl Fn(usize) -> usize) -> Result<Vec<Token>, ScopeError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(c) = text[pos..].chars().next() {
        let start = pos;
        pos += c.len_utf8();
        let kind = match c {
            _ if c.is_whitespace() => continue,
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
                let name = text[pos..pos + len].to_owned();
                pos += len + 1;
                Kind::Name {
                    text: name,
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
        out.push(Token {
            kind,
            span: Span::new(at(start), at(pos)),
        });
    }
    let end = at(text.len());
    out.push(Token {
        kind: Kind::End,
        span: Span::new(end, end),
    });
    Ok(out)
}

/// The words starting at `start`, joined by single spaces, and the offset after the last word.
fn bare_name(text: &str, start: usize) -> (String, usize) {
    let mut name = String::new();
    let mut word = start;
    loop {
        let word_end = end_of(text, word, is_word_char);
        name.push_str(&text[word..word_end]);
        let next = end_of(text, word_end, char::is_whitespace);
        if next == word_end || !text[next..].starts_with(is_word_char) {
            return (name, word_end);
        }
        name.push(' ');
        word = next;
    }
}

/// The offset of the first character from `from` on that is not `inside`.
fn end_of(text: &str, from: usize, inside: impl Fn(char) -> bool) -> usize {
    text[from..]
        .find(|c| !inside(c))
        .map_or(text.len(), |len| from + len)
}
