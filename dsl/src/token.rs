//! The tokens that the lexer hands the parser: punctuation, operators and names, each with
//! where it was written. Apart from both, so that a hint can name a token without either.

use std::borrow::Cow;

use crate::tree::{Op, Span};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Colon,
    Comma,
    Slash,
    Op(Op),
    /// Borrowed from the text unless white space had to be folded.
    Name {
        text: Cow<'a, str>,
        quoted: bool,
    },
    End,
}

#[derive(Debug)]
pub(crate) struct Token<'a> {
    pub kind: Kind<'a>,
    pub span: Span,
}
