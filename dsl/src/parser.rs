//! Builds the tree of a scope from its text, in any of the three formats (scope-lang, the
//! JSON object of strings, `service/site`), and refuses what the grammar does not allow.
//! A scope built in code (`Scope::new`) is read here too, from its canonical form.

use smallvec::SmallVec;

use crate::check;
use crate::duration;
use crate::error::{ErrorKind, ScopeError};
use crate::hints;
use crate::json;
use crate::lexer::Lexer;
use crate::token::{Kind, Token};
use crate::tree::{Entry, LocExpr, Name, Op, Scope, Site, Span, Written};
use crate::usual;

/// Deepest nesting of parentheses accepted: far more than any real scope needs, and few
/// enough that recursion never threatens the stack.
pub const MAX_NESTING: usize = 64;

/// The reserved key that names the prime site of a cross.
const PRIME: &str = "prime";

/// Reads a scope: a JSON object of strings if the input is exactly that, else scope-lang.
pub fn parse(input: &str) -> Result<Scope, ScopeError> {
    // The usual reader takes no '"', so no JSON object but `{}`, which reads the same either way.
    let written = match usual::scope_lang(input) {
        Some(written) => Ok(written),
        None => match json::object_of_strings(input) {
            Some(members) => from_json(members),
            None => from_tokens(input),
        },
    };
    let written = written
        .and_then(|written| check::entries(&written).map(|()| written))
        .map_err(|error| error.in_input(input))?;
    Ok(Scope {
        entries: written.entries,
        source: input.to_owned(),
    })
}

impl Scope {
    /// A scope built in code, checked as if it had been written in canonical form (its errors
    /// point into that form).
    pub fn new(entries: Vec<Entry>) -> Result<Scope, ScopeError> {
        let unchecked = Scope {
            entries,
            source: String::new(),
        };
        parse(&unchecked.to_string())
    }
}

/// Any scope-lang text, token by token, with what is wrong in it told precisely.
pub(crate) fn from_tokens(input: &str) -> Result<Written, ScopeError> {
    let mut parser = Parser::new(input, |at| at)?;
    let written = match (parser.peek(), parser.peek_second()) {
        (Kind::LBrace, _) => parser.braced()?,
        (Kind::Name { .. }, Kind::Slash) => parser.service_slash_site()?,
        _ => parser.unbraced()?,
    };
    parser.end("the end of the scope")?;
    Ok(written)
}

fn from_json(members: Vec<json::Member>) -> Result<Written, ScopeError> {
    let mut written = Written::default();
    for member in members {
        let service = match Name::new(&member.key) {
            Some(service) => service,
            None if member.key_span.start == member.key_span.end => {
                return Err(ScopeError::new(ErrorKind::EmptyName, member.key_span))
            }
            None => return Err(ScopeError::new(ErrorKind::QuoteInName, member.key_span)),
        };
        let mut value = Parser::new(&member.value, |i: usize| member.value_at[i])?;
        let entry = value.keyed(service)?;
        value.end("the end of the value")?;
        written.push(entry, member.key_span);
    }
    Ok(written)
}

struct Parser<'a, F> {
    lexer: Lexer<'a, F>,
    /// The next token, and the one after it: enough to tell `name:` from a bare name.
    current: Token<'a>,
    following: Token<'a>,
    /// The operator just taken, for the hint on one written twice.
    previous_op: Option<Op>,
    /// Where the last token taken ended.
    last_end: usize,
    /// The brackets open around the next token, innermost last, for "not closed" errors.
    open: SmallVec<[(char, Span); 8]>,
}

impl<'a, F: Fn(usize) -> usize> Parser<'a, F> {
    fn new(text: &'a str, at: F) -> Result<Parser<'a, F>, ScopeError> {
        let mut lexer = Lexer::new(text, at);
        let current = lexer.next_token()?;
        let following = lexer.next_token()?;
        Ok(Parser {
            lexer,
            current,
            following,
            previous_op: None,
            last_end: 0,
            open: SmallVec::new(),
        })
    }

    fn peek(&self) -> &Kind<'a> {
        &self.current.kind
    }

    fn peek_second(&self) -> &Kind<'a> {
        &self.following.kind
    }

    fn span(&self) -> Span {
        self.current.span
    }

    /// Takes the next token; at the end of the input that is the end again.
    fn bump(&mut self) -> Result<Token<'a>, ScopeError> {
        let after = self.lexer.next_token()?;
        let following = std::mem::replace(&mut self.following, after);
        let taken = std::mem::replace(&mut self.current, following);
        self.last_end = taken.span.end;
        self.previous_op = match taken.kind {
            Kind::Op(op) => Some(op),
            _ => None,
        };
        Ok(taken)
    }

    /// `{` [entry (`,` entry)* [`,`]] `}`
    fn braced(&mut self) -> Result<Written, ScopeError> {
        self.open_bracket('{')?;
        let mut written = Written::default();
        while *self.peek() != Kind::RBrace {
            let (entry, span) = self.entry()?;
            match self.peek() {
                Kind::Comma => {
                    self.bump()?;
                }
                Kind::RBrace => {}
                _ => return Err(self.after_entry(&entry, "',' or '}'")),
            }
            written.push(entry, span);
        }
        self.close_bracket()?;
        Ok(written)
    }

    /// entry (`,` entry)*
    fn unbraced(&mut self) -> Result<Written, ScopeError> {
        let mut written = Written::default();
        loop {
            let (entry, span) = self.entry()?;
            written.push(entry, span);
            match self.peek() {
                Kind::Comma => {
                    self.bump()?;
                }
                Kind::End => return Ok(written),
                _ => {
                    return Err(self.after_entry(
                        &written.entries[written.entries.len() - 1],
                        "',' or the end",
                    ))
                }
            }
            if *self.peek() == Kind::End {
                return Err(self.unexpected("an entry after ','").with_hint(Some(
                    "a trailing ',' is allowed only inside braces".to_owned(),
                )));
            }
        }
    }

    /// The earlier `service/site` form, which stands alone.
    fn service_slash_site(&mut self) -> Result<Written, ScopeError> {
        let (service, span) = self.name()?;
        self.bump()?;
        let site = self.site()?;
        if *self.peek() != Kind::End {
            return Err(self
                .unexpected("the end after 'service/site'")
                .with_hint(Some(hints::SLASH_FORM.to_owned())));
        }
        let mut written = Written::default();
        written.push(keyed_site(service, site), span);
        Ok(written)
    }

    /// `name: location` or a bare location.
    fn entry(&mut self) -> Result<(Entry, Span), ScopeError> {
        match (self.peek(), self.peek_second()) {
            (Kind::Name { .. }, Kind::Colon) => {
                let (service, span) = self.name()?;
                self.bump()?;
                Ok((self.keyed(service)?, span))
            }
            (Kind::Name { .. } | Kind::LParen, _) => {
                let start = self.span().start;
                let location = self.location()?;
                Ok((Entry::Bare(location), Span::new(start, self.last_end)))
            }
            _ => Err(self.unexpected("an entry").with_hint(match self.peek() {
                Kind::End => Some("an empty scope is written '{}'".to_owned()),
                _ => None,
            })),
        }
    }

    /// What follows `service:`; the reserved key `prime` takes one site.
    fn keyed(&mut self, service: Name) -> Result<Entry, ScopeError> {
        if service.as_str() != PRIME {
            return Ok(Entry::Service {
                service,
                location: self.location()?,
            });
        }
        let start = self.span().start;
        match self.location()? {
            LocExpr::Site(site) => Ok(Entry::Prime(site)),
            other => Err(ScopeError::new(
                ErrorKind::Expected {
                    expected: "one site after 'prime:'",
                    found: format!("'{other}'"),
                },
                Span::new(start, self.last_end),
            )),
        }
    }

    fn location(&mut self) -> Result<LocExpr, ScopeError> {
        self.chain(Op::Otherwise)
    }

    /// Parts joined by `op`, each part bound tighter than `op`.
    fn chain(&mut self, op: Op) -> Result<LocExpr, ScopeError> {
        let first = self.operand(op)?;
        if *self.peek() != Kind::Op(op) {
            return Ok(first);
        }
        // Room for the usual chain, so that it is allocated once.
        let mut parts = Vec::with_capacity(4);
        parts.push(first);
        while *self.peek() == Kind::Op(op) {
            self.bump()?;
            parts.push(self.operand(op)?);
        }
        let chain = LocExpr::chain(op, parts);
        check::chain_sites(&chain)?;
        Ok(chain)
    }

    fn operand(&mut self, op: Op) -> Result<LocExpr, ScopeError> {
        match op {
            Op::Otherwise => self.chain(Op::Replicate),
            Op::Replicate => self.chain(Op::Cross),
            Op::Cross => self.atom(),
        }
    }

    /// A site, `( location )` or `around(site, duration)`.
    fn atom(&mut self) -> Result<LocExpr, ScopeError> {
        match (self.peek(), self.peek_second()) {
            (Kind::LParen, _) => {
                self.open_bracket('(')?;
                if self.open.len() > MAX_NESTING {
                    let (_, span) = self.open[self.open.len() - 1];
                    return Err(ScopeError::new(ErrorKind::TooDeep(MAX_NESTING), span));
                }
                let inner = self.location()?;
                if *self.peek() != Kind::RParen {
                    return Err(self.unexpected("an operator or ')'"));
                }
                self.close_bracket()?;
                Ok(inner)
            }
            (
                Kind::Name {
                    text,
                    quoted: false,
                },
                Kind::LParen,
            ) if text == "around" => {
                self.bump()?;
                self.around()
            }
            (Kind::Name { .. }, _) => Ok(LocExpr::Site(self.site()?)),
            _ => Err(self
                .unexpected("a site")
                .with_hint(hints::doubled_operator(self.previous_op, self.peek()))),
        }
    }

    /// `(site, duration)`, after the word `around`.
    fn around(&mut self) -> Result<LocExpr, ScopeError> {
        self.open_bracket('(')?;
        let site = self.site()?;
        if *self.peek() != Kind::Comma {
            return Err(self
                .unexpected("',' then a duration")
                .with_hint(hints::missing_comma_in_around(site.name.as_str())));
        }
        self.bump()?;
        let span = self.span();
        let within = match self.peek() {
            Kind::Name {
                text,
                quoted: false,
            } => duration::read(text).map_err(|kind| {
                let hint =
                    matches!(kind, ErrorKind::BadDuration(_)).then(|| hints::bad_duration(text));
                ScopeError::new(kind, span).with_hint(hint)
            })?,
            Kind::Name { text, quoted: true } => {
                return Err(ScopeError::new(
                    ErrorKind::BadDuration(String::from(text.as_ref())),
                    span,
                )
                .with_hint(Some("write a duration without quotes".to_owned())))
            }
            _ => return Err(self.unexpected("a duration")),
        };
        self.bump()?;
        if *self.peek() != Kind::RParen {
            return Err(self.unexpected("')'"));
        }
        self.close_bracket()?;
        Ok(LocExpr::Around { site, within })
    }

    fn site(&mut self) -> Result<Site, ScopeError> {
        let (name, span) = self.name()?;
        Ok(Site { name, span })
    }

    fn name(&mut self) -> Result<(Name, Span), ScopeError> {
        let span = self.span();
        let name = match &self.current.kind {
            Kind::Name { text, .. } => Name::read(text),
            _ => return Err(self.unexpected("a name")),
        };
        self.bump()?;
        let name = name.ok_or_else(|| ScopeError::new(ErrorKind::EmptyName, span))?;
        Ok((name, span))
    }

    fn open_bracket(&mut self, open: char) -> Result<(), ScopeError> {
        let span = self.bump()?.span;
        self.open.push((open, span));
        Ok(())
    }

    /// Takes the closing bracket that the caller has checked is next.
    fn close_bracket(&mut self) -> Result<(), ScopeError> {
        self.bump()?;
        self.open.pop();
        Ok(())
    }

    fn end(&self, expected: &'static str) -> Result<(), ScopeError> {
        match self.peek() {
            Kind::End => Ok(()),
            _ => Err(self.unexpected(expected)),
        }
    }

    /// The error for a token where `expected` should be, told as precisely as possible: an
    /// unclosed or unopened bracket says so.
    fn unexpected(&self, expected: &'static str) -> ScopeError {
        let span = self.span();
        let innermost = self.open.last().copied();
        let closes = match self.peek() {
            Kind::RParen => Some(('(', ')')),
            Kind::RBrace => Some(('{', '}')),
            _ => None,
        };
        let is_open = |bracket: char| self.open.iter().any(|(open, _)| *open == bracket);
        match (self.peek(), innermost, closes) {
            // The end, or a closing bracket that belongs further out: the innermost is unclosed.
            (Kind::End, Some((open, opened)), _) => unclosed(open, opened, span),
            (_, Some((open, opened)), Some((opener, _))) if open != opener && is_open(opener) => {
                unclosed(open, opened, span)
            }
            (_, _, Some((opener, close))) if !is_open(opener) => {
                ScopeError::new(ErrorKind::Unopened(close), span)
            }
            (found, _, _) => ScopeError::new(
                ErrorKind::Expected {
                    expected,
                    found: describe(found),
                },
                span,
            )
            .with_hint(hints::unexpected_token(found)),
        }
    }

    /// The error for what follows a complete entry when it is not a separator.
    fn after_entry(&self, entry: &Entry, expected: &'static str) -> ScopeError {
        let error = self.unexpected(expected);
        match (self.peek(), entry.location()) {
            (Kind::Colon, Some(location)) => {
                error.with_hint(hints::missing_comma(location.last_site().name.as_str()))
            }
            (Kind::Name { text, .. }, _) => {
                error.with_hint(Some(format!("missing ',' or an operator before '{text}'?")))
            }
            _ => error,
        }
    }
}

fn keyed_site(service: Name, site: Site) -> Entry {
    if service.as_str() == PRIME {
        Entry::Prime(site)
    } else {
        Entry::Service {
            service,
            location: LocExpr::Site(site),
        }
    }
}

fn unclosed(open: char, opened: Span, span: Span) -> ScopeError {
    let close = if open == '{' { '}' } else { ')' };
    let opened_at = opened.start + 1;
    ScopeError::new(
        ErrorKind::Unclosed {
            open,
            close,
            opened_at,
        },
        span,
    )
}

/// A token as an error message names it.
fn describe(kind: &Kind) -> String {
    match kind {
        Kind::LBrace => "'{'".to_owned(),
        Kind::RBrace => "'}'".to_owned(),
        Kind::LParen => "'('".to_owned(),
        Kind::RParen => "')'".to_owned(),
        Kind::Colon => "':'".to_owned(),
        Kind::Comma => "','".to_owned(),
        Kind::Slash => "'/'".to_owned(),
        Kind::Op(op) => format!("'{}'", op.symbol()),
        Kind::Name { text, .. } => format!("the name '{text}'"),
        Kind::End => "the end of the input".to_owned(),
    }
}
