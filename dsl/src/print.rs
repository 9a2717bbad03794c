//! The canonical form, as `Display`: braces always, `, ` between entries, one space around
//! operators, `;` for otherwise, parentheses only where precedence needs them, durations in
//! their largest whole unit, names bare when they can be read back bare.

use std::fmt::{self, Display, Formatter};
use std::time::Duration;

use crate::json;
use crate::lexer::is_word_char;
use crate::tree::{Entry, LocExpr, Name, Op, Scope, Site};

impl Display for Scope {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let entries = Entries(&self.entries);
        if reads_as_json(&self.entries) {
            // A trailing ',' keeps it scope-lang: JSON allows none.
            write!(f, "{{{entries},}}")
        } else {
            write!(f, "{{{entries}}}")
        }
    }
}

struct Entries<'a>(&'a [Entry]);

impl Display for Entries<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (at, entry) in self.0.iter().enumerate() {
            if at > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// True when the plain canonical form of `entries` would be a JSON object of strings, as
/// `{"Site #1": "Site #2"}` is: read back, its values would be taken for expressions.
fn reads_as_json(entries: &[Entry]) -> bool {
    let one_site_each = entries.iter().all(|entry| {
        matches!(
            entry,
            Entry::Service {
                location: LocExpr::Site(_),
                ..
            }
        )
    });
    !entries.is_empty()
        && one_site_each
        && json::object_of_strings(&format!("{{{}}}", Entries(entries))).is_some()
}

impl Display for Entry {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Service { service, location } => write!(f, "{service}: {location}"),
            Entry::Bare(location) => write!(f, "{location}"),
            Entry::Prime(site) => write!(f, "prime: {site}"),
        }
    }
}

impl Display for LocExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_location(f, self, None)
    }
}

/// Writes `location` as a part of a chain of `outer`, in parentheses if it binds no tighter.
fn write_location(f: &mut Formatter<'_>, location: &LocExpr, outer: Option<Op>) -> fmt::Result {
    match location {
        LocExpr::Site(site) => write!(f, "{site}"),
        LocExpr::Around { site, within } => {
            write!(f, "around({site}, {})", DurationText(*within))
        }
        LocExpr::Chain(op, parts) => {
            let parenthesised = outer.is_some_and(|outer| outer >= *op);
            if parenthesised {
                f.write_str("(")?;
            }
            for (at, part) in parts.iter().enumerate() {
                if at > 0 {
                    write!(f, " {} ", op.symbol())?;
                }
                write_location(f, part, Some(*op))?;
            }
            if parenthesised {
                f.write_str(")")?;
            }
            Ok(())
        }
    }
}

impl Display for Site {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)
    }
}

impl Display for Name {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let text = self.as_str();
        let bare = text
            .split(' ')
            .all(|word| !word.is_empty() && word.chars().all(is_word_char));
        if bare {
            f.write_str(text)
        } else {
            write!(f, "\"{text}\"")
        }
    }
}

/// A duration in the largest unit that keeps it whole (`1500us`, `2s`).
pub(crate) struct DurationText(pub Duration);

impl Display for DurationText {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        if micros.is_multiple_of(1_000_000) {
            write!(f, "{}s", micros / 1_000_000)
        } else if micros.is_multiple_of(1_000) {
            write!(f, "{}ms", micros / 1_000)
        } else {
            write!(f, "{micros}us")
        }
    }
}
