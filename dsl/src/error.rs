//! What can be wrong with a scope, and how it is shown: one sentence naming the culprit and
//! its column, the input with a caret under the culprit, and a hint for the usual mistakes.

use crate::tree::Span;

/// A scope that cannot be used, with where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(self))]
pub struct ScopeError {
    /// What is wrong.
    pub kind: ErrorKind,
    /// Bytes of `input` that are wrong (empty at the end of the input).
    pub span: Span,
    /// A guess at what was meant, for the usual mistakes.
    pub hint: Option<String>,
    /// The scope as it was given.
    pub input: String,
}

/// What is wrong with a scope; each reads as one sentence.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("{0:?} cannot appear in a scope outside quotes")]
    UnexpectedChar(char),
    #[error("this quoted name is not closed: expected '\"'")]
    UnclosedQuote,
    #[error("expected {expected}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
    },
    #[error("expected '{close}' to close the '{open}' at column {opened_at}")]
    Unclosed {
        open: char,
        close: char,
        opened_at: usize,
    },
    #[error("'{0}' closes nothing")]
    Unopened(char),
    #[error("more than {0} nested parentheses")]
    TooDeep(usize),
    #[error("'{0}' is not a duration: expected a whole number and a unit (us, ms or s)")]
    BadDuration(String),
    #[error("'{0}' is too long a duration")]
    DurationTooLong(String),
    #[error("a name cannot be empty")]
    EmptyName,
    #[error("a name cannot contain '\"'")]
    QuoteInName,
    #[error("service '{service}' is named twice (first at column {first_at})")]
    ServiceTwice { service: String, first_at: usize },
    #[error("site '{site}' is named twice in one '{op}' chain (first at column {first_at})")]
    SiteTwice {
        site: String,
        op: char,
        first_at: usize,
    },
    #[error("a second bare entry (the first is at column {first_at}): only one entry may leave out its service")]
    SecondBare { first_at: usize },
    #[error("'prime' is given twice (first at column {first_at})")]
    PrimeTwice { first_at: usize },
    #[error("'prime' names the prime site of a cross ('%'), and this scope has none")]
    PrimeWithoutCross,
    #[error("prime site '{prime}' is not a site of the cross '{cross}'")]
    PrimeNotInCross { prime: String, cross: String },
    #[error("unknown site '{0}'")]
    UnknownSite(String),
}

impl ScopeError {
    /// An error at `span`; the input is attached by whoever knows it.
    pub(crate) fn new(kind: ErrorKind, span: Span) -> ScopeError {
        ScopeError {
            kind,
            span,
            hint: None,
            input: String::new(),
        }
    }

    /// Adds a hint; a more precise one given later replaces a general one, `None` keeps it.
    pub(crate) fn with_hint(mut self, hint: Option<String>) -> ScopeError {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }

    pub(crate) fn in_input(mut self, input: &str) -> ScopeError {
        self.input = input.to_owned();
        self
    }

    /// The culprit's byte column in the input, counted from 1 as shown to users.
    pub fn column(&self) -> usize {
        self.span.start + 1
    }
}

/// Longest stretch of a line shown around the culprit, so that a huge header still gives a
/// readable message.
const WINDOW: usize = 72;

fn render(error: &ScopeError) -> String {
    let mut out = format!("column {}: {}", error.column(), error.kind);
    let (line, caret_at, caret_len) = excerpt(&error.input, error.span);
    let caret = format!("{}{}", " ".repeat(caret_at), "^".repeat(caret_len.max(1)));
    out.push_str(&format!("\n  {line}\n  {caret}"));
    if let Some(hint) = &error.hint {
        out.push_str(&format!("\n  hint: {hint}"));
    }
    out
}

/// The line of `input` holding `span`, cut to [`WINDOW`] characters around it, with the
/// caret's offset and width in characters (not bytes, so that it stands under non-ASCII
/// names too).
fn excerpt(input: &str, span: Span) -> (String, usize, usize) {
    let start = floor_char_boundary(input, span.start.min(input.len()));
    let end = floor_char_boundary(input, span.end.clamp(start, input.len()));
    let line_start = input[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = input[start..].find('\n').map_or(input.len(), |i| start + i);
    let chars: Vec<char> = input[line_start..line_end].chars().collect();
    let at = input[line_start..start].chars().count();
    let len = input[start..end.min(line_end)].chars().count();
    let from = if chars.len() <= WINDOW {
        0
    } else {
        at.saturating_sub(WINDOW / 2).min(chars.len() - WINDOW)
    };
    let to = chars.len().min(from + WINDOW);
    let mut line = String::new();
    if from > 0 {
        line.push('…');
    }
    // Control characters would move the caret or the terminal: shown as spaces.
    line.extend(
        chars[from..to]
            .iter()
            .map(|&c| if c.is_control() { ' ' } else { c }),
    );
    if to < chars.len() {
        line.push('…');
    }
    let caret_at = at - from + usize::from(from > 0);
    (line, caret_at, len.min(to.saturating_sub(at)))
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
