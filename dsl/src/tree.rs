//! The meaning of a scope as a tree: entries mapping services to location expressions, and
//! the questions the proxy asks of it (where does this service go, what is left downstream).
//! Building a scope (`Scope::new`) and checking its sites stand above, in `parser` and `check`.

use std::time::Duration;

use compact_str::CompactString;
use smallvec::SmallVec;

/// Bytes `start..end` of the input where something was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

/// A service or site name: never empty, never containing '"' (so that it can always be
/// printed, bare or quoted), except a site a plan carries as the caller gave it
/// (`Plan::site`). Kept inline up to 24 bytes, so that reading the usual name allocates
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(CompactString);

impl Name {
    /// `None` for a text that no scope could spell: empty, or containing '"'.
    pub fn new(text: impl AsRef<str>) -> Option<Name> {
        let text = text.as_ref();
        if text.contains('"') {
            return None;
        }
        Name::read(text)
    }

    /// A name as the lexer reads it, which holds no '"' (a quote ends it); `None` if empty.
    pub(crate) fn read(text: &str) -> Option<Name> {
        (!text.is_empty()).then(|| Name(CompactString::new(text)))
    }

    /// `text` as it is, unchecked: a site that a plan only carries back to its caller.
    pub(crate) fn carried(text: &str) -> Name {
        Name(CompactString::new(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A site named in a scope, and where it was written (for errors about it).
#[derive(Clone, Debug)]
pub struct Site {
    pub name: Name,
    pub span: Span,
}

impl Site {
    /// A site written nowhere: one built in code rather than parsed.
    pub fn new(name: Name) -> Site {
        Site {
            name,
            span: Span::default(),
        }
    }
}

/// A site is its name: where it was written is not part of what a scope means.
impl PartialEq for Site {
    fn eq(&self, other: &Site) -> bool {
        self.name == other.name
    }
}

impl Eq for Site {}

/// The binary operators, declared from the loosest to the tightest binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `;` (also `|`, `||`): the first part, the next only if it failed.
    Otherwise,
    /// `&`: every part.
    Replicate,
    /// `%`: one resource spread over the parts.
    Cross,
}

impl Op {
    pub fn symbol(self) -> char {
        match self {
            Op::Otherwise => ';',
            Op::Replicate => '&',
            Op::Cross => '%',
        }
    }
}

/// Where a service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocExpr {
    Site(Site),
    /// `around(site, within)`: the sites within a round trip of `site`, nearest first.
    Around {
        site: Site,
        within: Duration,
    },
    /// Two or more parts joined by one operator; a part is never a chain of the same operator.
    Chain(Op, Vec<LocExpr>),
}

impl LocExpr {
    /// `parts` joined by `op`, with chains of the same operator flattened into this one:
    /// the operators are associative, and the canonical form writes such chains flat.
    pub fn chain(op: Op, parts: Vec<LocExpr>) -> LocExpr {
        let nested = |part: &LocExpr| matches!(part, LocExpr::Chain(inner, _) if *inner == op);
        if parts.len() > 1 && !parts.iter().any(nested) {
            return LocExpr::Chain(op, parts);
        }
        let mut flat = Vec::with_capacity(parts.len());
        for part in parts {
            match part {
                LocExpr::Chain(inner, inner_parts) if inner == op => flat.extend(inner_parts),
                other => flat.push(other),
            }
        }
        if flat.len() == 1 {
            flat.swap_remove(0)
        } else {
            LocExpr::Chain(op, flat)
        }
    }

    /// Calls `visit` on every site written in this expression, in written order.
    pub(crate) fn each_site<'a>(&'a self, visit: &mut impl FnMut(&'a Site)) {
        match self {
            LocExpr::Site(site) | LocExpr::Around { site, .. } => visit(site),
            LocExpr::Chain(_, parts) => parts.iter().for_each(|part| part.each_site(visit)),
        }
    }

    /// Calls `visit` on every cross in this expression.
    pub(crate) fn each_cross<'a>(&'a self, visit: &mut impl FnMut(&'a LocExpr)) {
        if let LocExpr::Chain(op, parts) = self {
            if *op == Op::Cross {
                visit(self);
            }
            parts.iter().for_each(|part| part.each_cross(visit));
        }
    }

    /// The first site written in this expression: the default prime of a cross.
    pub(crate) fn first_site(&self) -> &Site {
        match self {
            LocExpr::Site(site) | LocExpr::Around { site, .. } => site,
            LocExpr::Chain(_, parts) => parts[0].first_site(),
        }
    }

    pub(crate) fn last_site(&self) -> &Site {
        match self {
            LocExpr::Site(site) | LocExpr::Around { site, .. } => site,
            LocExpr::Chain(_, parts) => parts[parts.len() - 1].last_site(),
        }
    }
}

/// One entry of a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `service: location`.
    Service { service: Name, location: LocExpr },
    /// A location with no service: for whichever service is called without an entry.
    Bare(LocExpr),
    /// `prime: site`: the prime site of the scope's crosses, instead of their first site.
    Prime(Site),
}

impl Entry {
    pub fn location(&self) -> Option<&LocExpr> {
        match self {
            Entry::Service { location, .. } | Entry::Bare(location) => Some(location),
            Entry::Prime(_) => None,
        }
    }
}

/// Entries as read, each with where it was written (its key, or the whole bare location):
/// the spans apart, so that the entries become the scope's as they are.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub entries: Vec<Entry>,
    pub spans: SmallVec<[Span; 4]>,
}

impl Written {
    pub fn push(&mut self, entry: Entry, span: Span) {
        self.entries.push(entry);
        self.spans.push(span);
    }
}

/// A checked scope: what it says, and the text it was read from (for errors about it).
#[derive(Clone, Debug)]
pub struct Scope {
    pub(crate) entries: Vec<Entry>,
    pub(crate) source: String,
}

/// Two scopes are equal when they say the same thing, however they were written.
impl PartialEq for Scope {
    fn eq(&self, other: &Scope) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Scope {}

impl Scope {
    /// The entries, in written order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// True when the scope has no entry: every call stays where it arrives.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `service` runs: its own entry, else the bare entry; `None` means local.
    pub fn location_for(&self, service: &str) -> Option<&LocExpr> {
        self.entry_for(service)
            .and_then(|at| self.entries[at].location())
    }

    /// The scope that travels on once a site has executed its share of a call to `service`:
    /// the entry that [`Scope::location_for`] used is gone, the others still apply downstream.
    pub fn consume(&self, service: &str) -> Scope {
        let mut rest = self.clone();
        if let Some(at) = self.entry_for(service) {
            rest.entries.remove(at);
        }
        // A prime with no cross left to be prime of would make the scope invalid downstream.
        if rest.crosses().is_empty() {
            rest.entries
                .retain(|entry| !matches!(entry, Entry::Prime(_)));
        }
        rest
    }

    /// The prime site given by the `prime` key, if any.
    pub fn prime(&self) -> Option<&Site> {
        self.entries.iter().find_map(|entry| match entry {
            Entry::Prime(site) => Some(site),
            _ => None,
        })
    }

    /// Every site named, once each, in written order.
    pub fn sites(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        self.each_site(&mut |site| {
            if !names.contains(&site.name.as_str()) {
                names.push(site.name.as_str());
            }
        });
        names
    }

    pub(crate) fn each_site<'a>(&'a self, visit: &mut impl FnMut(&'a Site)) {
        for entry in &self.entries {
            match entry {
                Entry::Service { location, .. } | Entry::Bare(location) => {
                    location.each_site(visit)
                }
                Entry::Prime(site) => visit(site),
            }
        }
    }

    pub(crate) fn crosses(&self) -> Vec<&LocExpr> {
        let mut crosses = Vec::new();
        for location in self.entries.iter().filter_map(Entry::location) {
            location.each_cross(&mut |cross| crosses.push(cross));
        }
        crosses
    }

    fn entry_for(&self, service: &str) -> Option<usize> {
        let own = self.entries.iter().position(|entry| {
            matches!(entry, Entry::Service { service: name, .. } if name.as_str() == service)
        });
        own.or_else(|| {
            self.entries
                .iter()
                .position(|entry| matches!(entry, Entry::Bare(_)))
        })
    }
}
