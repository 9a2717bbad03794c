//! The usual mistakes in a scope and what to suggest for each. Kept together so that a new
//! hint is added in one place, and the error sites stay about what went wrong.

use crate::duration;
use crate::token::Kind;
use crate::tree::{LocExpr, Op};

pub(crate) const SLASH_FORM: &str =
    "the service/site form names one service and one site, as in 'image/Paris'; \
     inside a scope write 'image: Paris'";

pub(crate) const SERVICE_TWICE: &str =
    "give each service one entry, combining its sites with '&', '%' or ';'";

/// The characters with a meaning in scope-lang, which end a name.
const SYNTAX: &str = "{}():,/&%;|\"";

/// For a character that is neither syntax nor part of a bare name.
pub(crate) fn unexpected_char(text: &str, at: usize, c: char) -> Option<String> {
    match c {
        '=' => Some("entries are written 'service: location'".to_owned()),
        '\'' => Some("quote names with '\"', as in \"Site #1\"".to_owned()),
        '[' | ']' => Some("group with '(' and ')'".to_owned()),
        _ if c.is_control() => None,
        _ => {
            // The name the character stands in: up to the syntax around it.
            let start = text[..at]
                .rfind(|c| SYNTAX.contains(c))
                .map_or(0, |i| i + 1);
            let end = text[at..]
                .find(|c| SYNTAX.contains(c))
                .map_or(text.len(), |i| at + i);
            let name = text[start..end].trim();
            Some(format!("quote a name that holds '{c}': \"{name}\""))
        }
    }
}

/// For a token that cannot stand where it is, whatever was expected.
pub(crate) fn unexpected_token(found: &Kind) -> Option<String> {
    match found {
        Kind::Slash => Some(SLASH_FORM.to_owned()),
        Kind::LBrace => {
            Some("braces go only around the whole scope; group with '(' and ')'".to_owned())
        }
        _ => None,
    }
}

/// For an operator written twice, as in `Paris && Nantes`.
pub(crate) fn doubled_operator(previous: Option<Op>, found: &Kind) -> Option<String> {
    match (previous, found) {
        (Some(first), Kind::Op(second)) if first == *second && first != Op::Otherwise => {
            let op = first.symbol();
            Some(format!("'{op}{op}' is written '{op}'"))
        }
        _ => None,
    }
}

/// For a name followed by ':' where an entry should end, as in `{image: Paris compute: Nantes}`
/// where "Paris compute" was read as one name.
pub(crate) fn missing_comma(last_name: &str) -> Option<String> {
    let (_, last_word) = last_name.rsplit_once(' ')?;
    Some(format!("missing ',' before '{last_word}'?"))
}

/// For `around(Paris 10ms)`, read as a site named "Paris 10ms".
pub(crate) fn missing_comma_in_around(site: &str) -> Option<String> {
    let (_, last_word) = site.rsplit_once(' ')?;
    duration::read(last_word).ok()?;
    Some(format!("missing ',' before '{last_word}'?"))
}

pub(crate) fn bad_duration(text: &str) -> String {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let unit = &text[digits..];
    let hint = if digits == 0 {
        "a duration starts with a whole number, as in 10ms"
    } else if unit.is_empty() {
        "add a unit: us, ms or s"
    } else if unit.starts_with(' ') {
        "write the unit right after the number, as in 10ms"
    } else if unit.starts_with(['.', ',']) {
        "durations are whole numbers: use a smaller unit, as in 1500ms"
    } else {
        "the units are us, ms and s"
    };
    hint.to_owned()
}

/// For a second bare entry that is one name of several words: most likely `service site`
/// with the ':' left out.
pub(crate) fn second_bare(location: &LocExpr) -> Option<String> {
    let LocExpr::Site(site) = location else {
        return None;
    };
    let (service, _) = site.name.as_str().split_once(' ')?;
    Some(format!("missing ':' after '{service}'?"))
}

/// For an unknown site of several words that are a known site once split: `image Paris`
/// (a ':' left out) or `Paris Nantes` (an operator left out).
pub(crate) fn unknown_site(name: &str, is_known: &impl Fn(&str) -> bool) -> Option<String> {
    name.match_indices(' ').find_map(|(at, _)| {
        let (before, after) = (&name[..at], &name[at + 1..]);
        if !is_known(after) {
            None
        } else if is_known(before) {
            Some(format!(
                "missing an operator ('&', '%' or ';') between '{before}' and '{after}'?"
            ))
        } else {
            Some(format!("missing ':' after '{before}'?"))
        }
    })
}
