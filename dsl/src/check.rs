//! The rules a scope must follow beyond its grammar: nothing named twice where that is
//! ambiguous, one bare entry, a prime that belongs to its crosses, and sites that exist.

use crate::error::{ErrorKind, ScopeError};
use crate::hints;
use crate::parser::Written;
use crate::tree::{Entry, LocExpr, Op, Scope, Span};

/// Services named once; one bare entry and one prime at most; the prime a site of every cross.
pub(crate) fn entries(written: &[Written]) -> Result<(), ScopeError> {
    // Keys that cannot collide: a service is never named "" nor "prime".
    let keys: Vec<(&str, Span)> = written
        .iter()
        .map(|(entry, span)| match entry {
            Entry::Service { service, .. } => (service.as_str(), *span),
            Entry::Bare(_) => ("", *span),
            Entry::Prime(_) => ("prime", *span),
        })
        .collect();
    if let Some((first, second)) = first_repeat(&keys) {
        let first_at = keys[first].1.start + 1;
        let (entry, span) = &written[second];
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
    prime_in_crosses(written)
}

fn prime_in_crosses(written: &[Written]) -> Result<(), ScopeError> {
    let Some(prime) = written.iter().find_map(|(entry, _)| match entry {
        Entry::Prime(site) => Some(site),
        _ => None,
    }) else {
        return Ok(());
    };
    let mut crosses = Vec::new();
    for location in written.iter().filter_map(|(entry, _)| entry.location()) {
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
    let sites: Vec<(&str, Span)> = parts
        .iter()
        .filter_map(|part| match part {
            LocExpr::Site(site) => Some((site.name.as_str(), site.span)),
            _ => None,
        })
        .collect();
    match first_repeat(&sites) {
        Some((first, second)) => Err(ScopeError::new(
            ErrorKind::SiteTwice {
                site: sites[second].0.to_owned(),
                op: op.symbol(),
                first_at: sites[first].1.start + 1,
            },
            sites[second].1,
        )),
        None => Ok(()),
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

/// Among keys written in order, the pair (first, second) of equal keys whose second comes
/// earliest: that second is where the input went wrong. Sorting keeps this linearithmic on
/// inputs with thousands of entries.
fn first_repeat(keys: &[(&str, Span)]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // Stable, so equal keys stay in written order.
    order.sort_by_key(|&at| keys[at].0);
    order
        .windows(2)
        .filter(|pair| keys[pair[0]].0 == keys[pair[1]].0)
        .map(|pair| (pair[0], pair[1]))
        .min_by_key(|&(_, second)| second)
}
