//! Turns a scope into the plan for one call: which sites, and how they collaborate. A pure
//! function of the scope and the measured round trips, so that the proxy's decisions can be
//! tested without a network.

use std::time::Duration;

use serde::Serialize;
use smallvec::SmallVec;

use crate::tree::{LocExpr, Name, Op, Scope, Site};

/// What the proxy does with one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// Forward to this site (or run here, if it is this site). A `Name`, kept inline, so that
    /// planning the usual call allocates nothing per site.
    Site(Name),
    /// Replication: every part.
    AllOf(Vec<Plan>),
    /// Cross: one resource spread over the parts, created at the prime site.
    SpreadOver { parts: Vec<Plan>, prime: String },
    /// Otherwise: the first part, the next only if it failed.
    FirstOf(Vec<Plan>),
}

impl Plan {
    /// Forward to (or run at) the site named `name`, taken as given: the caller's own site
    /// need not be a name a scope could spell.
    pub fn site(name: &str) -> Plan {
        Plan::Site(Name::carried(name))
    }
}

/// Measured round trips between sites.
pub trait RoundTrips {
    /// The round trip from `from` to `to`, if it was measured.
    fn between(&self, from: &str, to: &str) -> Option<Duration>;

    /// Every site measured from `from`, with its round trip: the candidates of `around`.
    fn measured_from(&self, from: &str) -> impl Iterator<Item = (&str, Duration)>;
}

/// Round trips in vectors sorted by name; a round trip is the same both ways, so one `insert`
/// serves both. A mesh has a handful of sites: a walk along a short vector, comparing lengths
/// before bytes, costs far less than a map's descent and iteration (the table is read on
/// every call that `around` plans).
#[derive(Clone, Debug, Default)]
pub struct RoundTripTable {
    /// Each site measured from, by name, with the sites measured from it, by name.
    from: Vec<(String, Vec<(String, Duration)>)>,
}

impl RoundTripTable {
    pub fn insert(&mut self, a: &str, b: &str, round_trip: Duration) {
        for (from, to) in [(a, b), (b, a)] {
            let measured = entry(&mut self.from, from, Vec::new);
            *entry(measured, to, Duration::default) = round_trip;
        }
    }

    /// The sites measured from `from`, by name.
    fn measured(&self, from: &str) -> &[(String, Duration)] {
        let found = self.from.iter().find(|(other, _)| other == from);
        found.map_or(&[], |(_, measured)| measured)
    }
}

impl RoundTrips for RoundTripTable {
    fn between(&self, from: &str, to: &str) -> Option<Duration> {
        let mut measured = self.measured(from).iter();
        measured.find_map(|(other, round_trip)| (other == to).then_some(*round_trip))
    }

    fn measured_from(&self, from: &str) -> impl Iterator<Item = (&str, Duration)> {
        let measured = self.measured(from).iter();
        measured.map(|(to, round_trip)| (to.as_str(), *round_trip))
    }
}

/// The value of `name` in `sorted`, a vector sorted by name, first inserted in its place as
/// `absent()` if missing.
fn entry<'a, V>(
    sorted: &'a mut Vec<(String, V)>,
    name: &str,
    absent: impl FnOnce() -> V,
) -> &'a mut V {
    let at = match sorted.binary_search_by(|(other, _)| other.as_str().cmp(name)) {
        Ok(at) => at,
        Err(at) => {
            sorted.insert(at, (name.to_owned(), absent()));
            at
        }
    };
    &mut sorted[at].1
}

/// The plan for a call to `service` that arrived at `this_site`: the service's entry, else
/// the bare entry, else local.
pub fn resolve(
    scope: &Scope,
    service: &str,
    this_site: &str,
    round_trips: &impl RoundTrips,
) -> Plan {
    match scope.location_for(service) {
        Some(location) => plan(location, scope.prime(), round_trips),
        None => Plan::site(this_site),
    }
}

/// The plan for `location`; `prime` is the scope's prime site, a site of every cross.
pub(crate) fn plan(
    location: &LocExpr,
    prime: Option<&Site>,
    round_trips: &impl RoundTrips,
) -> Plan {
    let plans = |parts: &[LocExpr]| {
        let plan_of = |part| plan(part, prime, round_trips);
        parts.iter().map(plan_of).collect()
    };
    match location {
        LocExpr::Site(site) => Plan::Site(site.name.clone()),
        LocExpr::Around { .. } | LocExpr::Chain(Op::Otherwise, _) => {
            let mut tries = Vec::new();
            try_in_turn(location, prime, round_trips, &mut tries);
            match tries.len() {
                1 => tries.swap_remove(0),
                _ => Plan::FirstOf(tries),
            }
        }
        LocExpr::Chain(Op::Replicate, parts) => all_of(plans(parts)),
        LocExpr::Chain(Op::Cross, parts) => Plan::SpreadOver {
            parts: plans(parts),
            prime: prime
                .unwrap_or_else(|| location.first_site())
                .name
                .as_str()
                .to_owned(),
        },
    }
}

/// Adds what `location` tries in turn to `tries`: the parts of alternatives and the sites
/// around a center spliced in, a plan already tried left out.
fn try_in_turn(
    location: &LocExpr,
    prime: Option<&Site>,
    round_trips: &impl RoundTrips,
    tries: &mut Vec<Plan>,
) {
    let mut try_once = |plan: Plan| {
        if !tries.contains(&plan) {
            tries.push(plan);
        }
    };
    match location {
        LocExpr::Around { site, within } => {
            around(site.name.as_str(), *within, round_trips, |site| {
                try_once(Plan::site(site))
            })
        }
        LocExpr::Chain(Op::Otherwise, parts) => parts
            .iter()
            .for_each(|part| try_in_turn(part, prime, round_trips, tries)),
        other => try_once(plan(other, prime, round_trips)),
    }
}

/// Visits `center` then the sites measured within `within` of it, nearest first (ties by
/// name, so that the plan does not depend on the order of measurement).
fn around<'a>(
    center: &'a str,
    within: Duration,
    round_trips: &'a impl RoundTrips,
    mut visit: impl FnMut(&'a str),
) {
    // Filled in place: collecting would build the inline array apart and copy it in.
    let mut near: SmallVec<[(Duration, &str); 8]> = SmallVec::new();
    near.extend(
        round_trips
            .measured_from(center)
            .filter(|&(site, round_trip)| site != center && round_trip <= within)
            .map(|(site, round_trip)| (round_trip, site)),
    );
    near.sort_unstable();
    visit(center);
    near.iter().for_each(|&(_, site)| visit(site));
}

/// Replication over `parts`, nested replications flattened.
fn all_of(parts: Vec<Plan>) -> Plan {
    let flat = flatten(parts, |part| match part {
        Plan::AllOf(inner) => Some(inner),
        _ => None,
    });
    single_or(flat, Plan::AllOf)
}

/// `parts` with the parts of each one that `nested` opens spliced in its place; `parts`
/// itself when none opens, so that the usual plan is built without another vector.
fn flatten(mut parts: Vec<Plan>, nested: fn(&mut Plan) -> Option<&mut Vec<Plan>>) -> Vec<Plan> {
    if !parts.iter_mut().any(|part| nested(part).is_some()) {
        return parts;
    }
    let width = parts
        .iter_mut()
        .map(|part| nested(part).map_or(1, |inner| inner.len()))
        .sum();
    let mut flat = Vec::with_capacity(width);
    for mut part in parts {
        match nested(&mut part) {
            Some(inner) => flat.append(inner),
            None => flat.push(part),
        }
    }
    flat
}

fn single_or(mut parts: Vec<Plan>, many: fn(Vec<Plan>) -> Plan) -> Plan {
    if parts.len() == 1 {
        parts.swap_remove(0)
    } else {
        many(parts)
    }
}
