//! The rules a scope must follow beyond its grammar: nothing named twice where that is
//! ambiguous, one bare entry, a prime that belongs to its crosses, and sites that exist.

use crate::error::{ErrorKind, ScopeError};
use crate::hints;
use crate::tree::{Entry, LocExpr, Op, Scope, Written};

/// Services named once; one bare entry and one prime at most; the prime a site of every cross.
pub(crate) fn entries(written: &Written) -> Result<(), ScopeError> {
    // Keys that cannot collide: a service is never named "" nor "prime".
    let repeat = first_repeat(&written.entries, |entry| match entry {
        Entry::Service { service, .. } => Some(service.as_str()),
        Entry::Bare(_) => Some(""),
        Entry::Prime(_) => Some("prime"),
    });
    if let Some((first, second)) = repeat {
        let first_at = written.spans[first].start + 1;
        let (entry, span) = (&written.entries[second], &written.spans[second]);
        let error = match entry {
            Entry::Service { service, .. } => ScopeError::new(
                ErrorKind::ServiceTwice {
                    service: service.as_str().to_owned(),
                    first_at,
                },
                *span,
            )
            .with_hint(Some(hints::SERVICE_TWICE.to_owned())),
            Entry::Bare(location) => ScopeError::new(ErrorKind::SecondBare { first_at }, *span)
                .with_hint(hints::second_bare(location)),
            Entry::Prime(_) => ScopeError::new(ErrorKind::PrimeTwice { first_at }, *span),
        };
        return Err(error);
    }
    prime_in_crosses(&written.entries)
}

fn prime_in_crosses(entries: &[Entry]) -> Result<(), ScopeError> {
    let Some(prime) = entries.iter().find_map(|entry| match entry {
        Entry::Prime(site) => Some(site),
        _ => None,
    }) else {
        return Ok(());
    };
    let mut crosses = Vec::new();
    for location in entries.iter().filter_map(Entry::location) {
        location.each_cross(&mut |cross| crosses.push(cross));
    }
    if crosses.is_empty() {
        return Err(
            ScopeError::new(ErrorKind::PrimeWithoutCross, prime.span).with_hint(Some(
                "a cross is written with '%', as in 'Paris % Nantes'".to_owned(),
            )),
        );
    }
    for cross in crosses {
        let mut sites = Vec::new();
        cross.each_site(&mut |site| sites.push(site.name.as_str()));
        if !sites.contains(&prime.name.as_str()) {
            let kind = ErrorKind::PrimeNotInCross {
                prime: prime.name.as_str().to_owned(),
                cross: cross.to_string(),
            };
            let hint = format!("the sites of that cross are {}", sites.join(", "));
            return Err(ScopeError::new(kind, prime.span).with_hint(Some(hint)));
        }
    }
    Ok(())
}

/// No site twice among the parts of one `&` or `%` chain.
pub(crate) fn chain_sites(chain: &LocExpr) -> Result<(), ScopeError> {
    let LocExpr::Chain(op @ (Op::Replicate | Op::Cross), parts) = chain else {
        return Ok(());
    };
    let repeat = first_repeat(parts, |part| match part {
        LocExpr::Site(site) => Some(site.name.as_str()),
        _ => None,
    });
    let Some((LocExpr::Site(first), LocExpr::Site(second))) =
        repeat.map(|(first, second)| (&parts[first], &parts[second]))
    else {
        return Ok(());
    };
    Err(ScopeError::new(
        ErrorKind::SiteTwice {
            site: second.name.as_str().to_owned(),
            op: op.symbol(),
            first_at: first.span.start + 1,
        },
        second.span,
    ))
}

impl Scope {
    /// Fails on the first site that `is_known` does not know, naming it and its column.
    pub fn check_sites(&self, is_known: impl Fn(&str) -> bool) -> Result<(), ScopeError> {
        known_sites(self, is_known).map_err(|error| error.in_input(&self.source))
    }
}

/// The first site written that `is_known` does not know.
pub(crate) fn known_sites(
    scope: &Scope,
    is_known: impl Fn(&str) -> bool,
) -> Result<(), ScopeError> {
    let mut unknown = None;
    scope.each_site(&mut |site| {
        if unknown.is_none() && !is_known(site.name.as_str()) {
            unknown = Some(site);
        }
    });
    match unknown {
        Some(site) => {
            let name = site.name.as_str();
            Err(
                ScopeError::new(ErrorKind::UnknownSite(name.to_owned()), site.span)
                    .with_hint(hints::unknown_site(name, &is_known)),
            )
        }
        None => Ok(()),
    }
}

/// Among `items` in written order, the pair (first, second) with equal keys whose second
/// comes earliest: that second is where the input went wrong. Items without a key are never
/// a repeat.
fn first_repeat<'a, T>(
    items: &'a [T],
    key: impl Fn(&'a T) -> Option<&'a str>,
) -> Option<(usize, usize)> {
    // Real scopes have a handful of entries and parts: comparing pairs allocates nothing.
    if items.len() <= 16 {
        return (1..items.len()).find_map(|second| {
            let repeated = key(&items[second])?;
            let first = (0..second).find(|&first| key(&items[first]) == Some(repeated))?;
            Some((first, second))
        });
    }
    // Sorting keeps a header of thousands of entries linearithmic.
    let mut order: Vec<(&str, usize)> = items
        .iter()
        .enumerate()
        .filter_map(|(at, item)| Some((key(item)?, at)))
        .collect();
    order.sort_unstable();
    order
        .windows(2)
        .filter(|pair| pair[0].0 == pair[1].0)
        .map(|pair| (pair[0].1, pair[1].1))
        .min_by_key(|&(_, second)| second)
}
