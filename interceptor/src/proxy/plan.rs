//! What the proxy does with a call, given its plan: the sites to try in order (sharing is a
//! chain of one site, otherwise a longer one), when to go on to the next site, and what to
//! answer when none served. Pure decisions; `chain` does the I/O.
use dsl::{Name, Plan};
use hyper::Method;

use super::outcome::Outcome;

/// The sites to try, in order, or the collaboration that routing cannot carry out.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Try(Vec<String>),
    NotYet(&'static str),
}

pub fn route(plan: &Plan) -> Route {
    match plan {
        Plan::Site(site) => Route::Try(vec![site.as_str().to_owned()]),
        Plan::FirstOf(parts) => parts
            .iter()
            .map(|part| match part {
                Plan::Site(site) => Ok(site.as_str().to_owned()),
                other => Err(not_yet(other)),
            })
            .collect::<Result<_, _>>()
            .map_or_else(Route::NotYet, Route::Try),
        other => Route::NotYet(not_yet(other)),
    }
}

/// What routing alone cannot carry out: replication and cross, which the replicator
/// (`replication/`) serves for services with resource rules, and collaborations nested in a chain.
fn not_yet(plan: &Plan) -> &'static str {
    match plan {
        Plan::AllOf(_) => "replication ('&')",
        Plan::SpreadOver { .. } => "cross ('%')",
        Plan::Site(_) | Plan::FirstOf(_) => "this combination of collaborations",
    }
}

/// A plan with nested collaborations (`A & (B ; C)`, `(A ; B) % C`, `A ; B & C`) made into one
/// that runs: an otherwise (`;`) inside a replication or a cross, or one with a collaboration
/// among its parts, stands for its first part whose sites are all up (`is_up`; its first part
/// when none is); a replication or a cross inside another collaboration adds its sites to the
/// outer one (`A & (B % C)` replicates over A, B and C); a site named twice counts once; a
/// cross whose prime site was left out of its chosen part has that part's first site as prime.
/// A plan of single sites, or an otherwise of single sites (tried in turn), is unchanged.
pub fn settle(plan: Plan, is_up: &dyn Fn(&str) -> bool) -> Plan {
    match plan {
        Plan::FirstOf(parts) if !parts.iter().all(|part| matches!(part, Plan::Site(_))) => {
            settle(choose(parts, is_up), is_up)
        }
        Plan::Site(_) | Plan::FirstOf(_) => plan,
        Plan::AllOf(parts) => {
            let sites = sites_in(parts, is_up);
            one_or(sites, Plan::AllOf)
        }
        Plan::SpreadOver { parts, prime } => {
            let held_prime = parts.iter().position(|part| names(part, &prime));
            let chosen: Vec<Vec<Name>> = parts
                .into_iter()
                .map(|part| sites_in(vec![part], is_up))
                .collect();
            let prime = match held_prime.and_then(|at| chosen.get(at)) {
                Some(sites) if !sites.iter().any(|site| site.as_str() == prime) => sites
                    .first()
                    .map_or(prime, |first| first.as_str().to_owned()),
                _ => prime,
            };
            let sites = once_each(chosen.into_iter().flatten());
            one_or(sites, |parts| Plan::SpreadOver { parts, prime })
        }
    }
}

/// The sites that `parts` of a collaboration stand for, each once, in order.
fn sites_in(parts: Vec<Plan>, is_up: &dyn Fn(&str) -> bool) -> Vec<Name> {
    let mut sites = Vec::new();
    for part in parts {
        match part {
            Plan::Site(site) => sites.push(site),
            Plan::FirstOf(parts) => sites.extend(sites_in(vec![choose(parts, is_up)], is_up)),
            Plan::AllOf(parts) | Plan::SpreadOver { parts, .. } => {
                sites.extend(sites_in(parts, is_up))
            }
        }
    }
    once_each(sites.into_iter())
}

fn once_each(sites: impl Iterator<Item = Name>) -> Vec<Name> {
    let mut seen = Vec::new();
    for site in sites {
        if !seen.contains(&site) {
            seen.push(site);
        }
    }
    seen
}

/// A collaboration over `sites`, or the one site when only one is left.
fn one_or(mut sites: Vec<Name>, many: impl FnOnce(Vec<Plan>) -> Plan) -> Plan {
    if sites.len() == 1 {
        return Plan::Site(sites.swap_remove(0));
    }
    many(sites.into_iter().map(Plan::Site).collect())
}

/// Every site `plan` names.
fn all_sites(plan: &Plan) -> Vec<&str> {
    match plan {
        Plan::Site(name) => vec![name.as_str()],
        Plan::AllOf(parts) | Plan::FirstOf(parts) | Plan::SpreadOver { parts, .. } => {
            parts.iter().flat_map(all_sites).collect()
        }
    }
}

/// Whether `plan` names `site` anywhere.
fn names(plan: &Plan, site: &str) -> bool {
    all_sites(plan).contains(&site)
}

/// The first of `parts` whose every site is up, else the first.
fn choose(mut parts: Vec<Plan>, is_up: &dyn Fn(&str) -> bool) -> Plan {
    let all_up = |plan: &Plan| {
        sites_in(vec![plan.clone()], &|_| true)
            .iter()
            .all(|site| is_up(site.as_str()))
    };
    let at = parts.iter().position(all_up).unwrap_or(0);
    if at < parts.len() {
        parts.swap_remove(at)
    } else {
        // The language gives an otherwise two parts at least; an empty one stays empty.
        Plan::FirstOf(parts)
    }
}

/// What to do after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Give the client this site's answer.
    Answer,
    /// Try the next site of the chain.
    FallBack,
    /// Stop, and answer that no site served.
    GiveUp,
}

/// Decides after an attempt; `more` tells whether the chain has another site. A request that
/// is not idempotent goes on only if it never reached the service: running it twice could
/// create twice. A gRPC call (never idempotent: always POST) also goes on when the site said
/// UNAVAILABLE before any response message, as gRPC clients retry.
pub fn after(outcome: &Outcome, method: &Method, more: bool) -> Next {
    let retry_is_safe = is_idempotent(method);
    match outcome {
        Outcome::Answered(status) if status.is_server_error() && more && retry_is_safe => {
            Next::FallBack
        }
        Outcome::Answered(_) => Next::Answer,
        Outcome::Unavailable(_) if more => Next::FallBack,
        Outcome::Unavailable(_) => Next::Answer,
        Outcome::NotDelivered(_) if more => Next::FallBack,
        Outcome::Failed(_) if more && retry_is_safe => Next::FallBack,
        Outcome::NotDelivered(_) | Outcome::Failed(_) => Next::GiveUp,
    }
}

/// RFC 9110's idempotent methods.
pub fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// One sentence naming every site tried and why it did not serve.
pub fn none_served(service: &str, tried: &[(String, Outcome)]) -> String {
    let reasons: Vec<String> = tried
        .iter()
        .map(|(site, outcome)| format!("site {site}: {outcome}"))
        .collect();
    format!("no site served service '{service}': {}", reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        peer,
        proxy::outcome::{Failed, NotDelivered},
    };
    use hyper::StatusCode;
    use std::time::Duration;

    fn down() -> Outcome {
        Outcome::NotDelivered(NotDelivered::Peer(peer::NotDelivered::Down {
            why: "no heartbeat answered yet".into(),
        }))
    }

    fn no_answer_within(after: Duration) -> Outcome {
        Outcome::Failed(Failed::Peer(peer::MaybeDelivered::Timeout { after }))
    }

    fn sites(names: &[&str]) -> Route {
        Route::Try(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn sharing_and_otherwise_become_chains_and_the_rest_waits() {
        let site = |s: &str| Plan::site(s);
        assert_eq!(route(&site("B")), sites(&["B"]));
        assert_eq!(
            route(&Plan::FirstOf(vec![site("B"), site("C")])),
            sites(&["B", "C"])
        );
        assert_eq!(
            route(&Plan::AllOf(vec![site("B"), site("C")])),
            Route::NotYet("replication ('&')")
        );
        assert_eq!(
            route(&Plan::FirstOf(vec![
                site("A"),
                Plan::SpreadOver {
                    parts: vec![site("B"), site("C")],
                    prime: "B".into()
                }
            ])),
            Route::NotYet("cross ('%')")
        );
    }

    fn settled(text: &str, up: &[&str]) -> Plan {
        let scope = dsl::parse(text).unwrap();
        let plan = dsl::resolve(&scope, "s", "A", &dsl::RoundTripTable::default());
        settle(plan, &|site| up.contains(&site))
    }

    fn spread(names: &[&str], prime: &str) -> Plan {
        Plan::SpreadOver {
            parts: names.iter().map(|s| Plan::site(s)).collect(),
            prime: prime.into(),
        }
    }

    #[test]
    fn nested_collaborations_settle_on_the_sites_that_are_up() {
        let all = |names: &[&str]| Plan::AllOf(names.iter().map(|s| Plan::site(s)).collect());
        let every = ["A", "B", "C"];
        // An otherwise inside a replication: its first part that is up.
        assert_eq!(settled("{s: A & (B ; C)}", &every), all(&["A", "B"]));
        assert_eq!(settled("{s: A & (B ; C)}", &["A", "C"]), all(&["A", "C"]));
        // None up: the first part (its sites get the operation when they are back).
        assert_eq!(settled("{s: A & (B ; C)}", &[]), all(&["A", "B"]));
        // Inside a cross: the prime follows the part that held it.
        assert_eq!(
            settled("{s: (A ; B) % C}", &every),
            spread(&["A", "C"], "A")
        );
        assert_eq!(
            settled("{s: (A ; B) % C}", &["B", "C"]),
            spread(&["B", "C"], "B")
        );
        // A collaboration in an otherwise: the first part wholly up.
        assert_eq!(settled("{s: A ; B & C}", &every), Plan::site("A"));
        assert_eq!(settled("{s: A ; B & C}", &["B", "C"]), all(&["B", "C"]));
        // One collaboration inside another: its sites join the outer one, once each.
        assert_eq!(settled("{s: A & (B % C)}", &every), all(&every));
        assert_eq!(settled("{s: (A & B) % C}", &every), spread(&every, "A"));
        assert_eq!(settled("{s: A & (B ; A)}", &["A"]), Plan::site("A"));
        // What already runs is left alone: an otherwise of sites is tried in turn.
        let chain = Plan::FirstOf(vec![Plan::site("B"), Plan::site("C")]);
        assert_eq!(settled("{s: B ; C}", &[]), chain);
        assert_eq!(settled("{s: B & C}", &[]), all(&["B", "C"]));
    }

    #[test]
    fn a_site_that_never_got_the_request_is_passed_over_whatever_the_method() {
        let down = down();
        assert_eq!(after(&down, &Method::POST, true), Next::FallBack);
        assert_eq!(after(&down, &Method::GET, true), Next::FallBack);
        assert_eq!(after(&down, &Method::GET, false), Next::GiveUp);
    }

    #[test]
    fn a_request_that_may_have_run_is_retried_only_if_idempotent() {
        let timeout = no_answer_within(Duration::from_secs(2));
        assert_eq!(after(&timeout, &Method::GET, true), Next::FallBack);
        assert_eq!(after(&timeout, &Method::POST, true), Next::GiveUp);
        let failed = Outcome::Answered(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(after(&failed, &Method::PUT, true), Next::FallBack);
        assert_eq!(after(&failed, &Method::POST, true), Next::Answer);
        assert_eq!(after(&failed, &Method::GET, false), Next::Answer);
        let fine = Outcome::Answered(StatusCode::NOT_FOUND);
        assert_eq!(after(&fine, &Method::GET, true), Next::Answer);
    }

    #[test]
    fn a_grpc_call_answered_unavailable_before_any_message_goes_on() {
        let unavailable = Outcome::Unavailable("overloaded".into());
        assert_eq!(after(&unavailable, &Method::POST, true), Next::FallBack);
        assert_eq!(after(&unavailable, &Method::POST, false), Next::Answer);
        assert_eq!(
            none_served("kv", &[("B".into(), unavailable)]),
            "no site served service 'kv': site B: answered UNAVAILABLE (overloaded)"
        );
    }

    #[test]
    fn the_failure_names_every_site_and_why() {
        let text = none_served(
            "catalog",
            &[
                ("B".into(), down()),
                ("C".into(), no_answer_within(Duration::from_secs(2))),
            ],
        );
        assert_eq!(
            text,
            "no site served service 'catalog': site B: down (no heartbeat answered yet); site C: \
             no answer within 2s"
        );
    }
}
