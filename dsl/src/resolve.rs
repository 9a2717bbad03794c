//! Turns a scope into the plan for one call: which sites, and how they collaborate. A pure
//! function of the scope and the measured round trips, so that the proxy's decisions can be
//! tested without a network.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::tree::{LocExpr, Op, Scope, Site};

/// What the proxy does with one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// Forward to this site (or run here, if it is this site).
    Site(String),
    /// Replication: every part.
    AllOf(Vec<Plan>),
    /// Cross: one resource spread over the parts, created at the prime site.
    SpreadOver { parts: Vec<Plan>, prime: String },
    /// Otherwise: the first part, the next only if it failed.
    FirstOf(Vec<Plan>),
}

impl Plan {
    /// How many parts this plan gives a flattened chain of its own kind (an upper bound for
    /// the others), so that flattening allocates once.
    fn width(&self) -> usize {
        match self {
            Plan::AllOf(parts) | Plan::FirstOf(parts) => parts.len(),
            _ => 1,
        }
    }
}

/// Measured round trips between sites.
pub trait RoundTrips {
    /// The round trip from `from` to `to`, if it was measured.
    fn between(&self, from: &str, to: &str) -> Option<Duration>;

    /// Every site measured from `from`, with its round trip: the candidates of `around`.
    fn measured_from(&self, from: &str) -> impl Iterator<Item = (&str, Duration)>;
}

/// Round trips in a map; a round trip is the same both ways, so one `insert` serves both.
#[derive(Clone, Debug, Default)]
pub struct RoundTripTable {
    from: BTreeMap<String, BTreeMap<String, Duration>>,
}

impl RoundTripTable {
    pub fn insert(&mut self, a: &str, b: &str, round_trip: Duration) {
        for (from, to) in [(a, b), (b, a)] {
            self.from
                .entry(from.to_owned())
                .or_default()
                .insert(to.to_owned(), round_trip);
        }
    }
}

impl RoundTrips for RoundTripTable {
    fn between(&self, from: &str, to: &str) -> Option<Duration> {
        self.from.get(from)?.get(to).copied()
    }

    fn measured_from(&self, from: &str) -> impl Iterator<Item = (&str, Duration)> {
        let measured = self.from.get(from).into_iter().flatten();
        measured.map(|(to, round_trip)| (to.as_str(), *round_trip))
    }
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
        None => Plan::Site(this_site.to_owned()),
    }
}

/// The plan for `location`; `prime` is the scope's prime site, a site of every cross.
pub(crate) fn plan(
    location: &LocExpr,
    prime: Option<&Site>,
    round_trips: &impl RoundTrips,
) -> Plan {
    match location {
        LocExpr::Site(site) => Plan::Site(site.name.as_str().to_owned()),
        LocExpr::Around { site, within } => {
            first_of(around(site.name.as_str(), *within, round_trips))
        }
        LocExpr::Chain(op, parts) => {
            let parts = parts
                .iter()
                .map(|part| plan(part, prime, round_trips))
                .collect();
            match op {
                Op::Otherwise => first_of(parts),
                Op::Replicate => all_of(parts),
                Op::Cross => Plan::SpreadOver {
                    parts,
                    prime: prime
                        .unwrap_or_else(|| location.first_site())
                        .name
                        .as_str()
                        .to_owned(),
                },
            }
        }
    }
}

/// `center` then the sites measured within `within` of it, nearest first (ties by name, so
/// that the plan does not depend on the order of measurement).
fn around(center: &str, within: Duration, round_trips: &impl RoundTrips) -> Vec<Plan> {
    let mut near: Vec<(Duration, &str)> = round_trips
        .measured_from(center)
        .filter(|&(site, round_trip)| site != center && round_trip <= within)
        .map(|(site, round_trip)| (round_trip, site))
        .collect();
    near.sort_unstable();
    std::iter::once(center)
        .chain(near.into_iter().map(|(_, site)| site))
        .map(|site| Plan::Site(site.to_owned()))
        .collect()
}

/// Otherwise over `parts`, simplified: nested alternatives flattened, a part already tried
/// dropped, a single part standing for itself.
fn first_of(parts: Vec<Plan>) -> Plan {
    let mut flat: Vec<Plan> = Vec::with_capacity(parts.iter().map(Plan::width).sum());
    let mut try_once = |part: Plan| {
        if !flat.contains(&part) {
            flat.push(part);
        }
    };
    for part in parts {
        match part {
            Plan::FirstOf(inner) => inner.into_iter().for_each(&mut try_once),
            other => try_once(other),
        }
    }
    single_or(flat, Plan::FirstOf)
}

/// Replication over `parts`, nested replications flattened.
fn all_of(parts: Vec<Plan>) -> Plan {
    let mut flat = Vec::with_capacity(parts.iter().map(Plan::width).sum());
    for part in parts {
        match part {
            Plan::AllOf(inner) => flat.extend(inner),
            other => flat.push(other),
        }
    }
    single_or(flat, Plan::AllOf)
}

fn single_or(mut parts: Vec<Plan>, many: fn(Vec<Plan>) -> Plan) -> Plan {
    if parts.len() == 1 {
        parts.swap_remove(0)
    } else {
        many(parts)
    }
}
