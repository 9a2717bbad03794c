//! What the proxy does with a call, given its plan: the sites to try in order (sharing is a
//! chain of one site, otherwise a longer one), when to go on to the next site, and what to
//! answer when none served. Pure decisions; `chain` does the I/O.
use dsl::Plan;
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
        Plan::Site(site) => Route::Try(vec![site.clone()]),
        Plan::FirstOf(parts) => parts
            .iter()
            .map(|part| match part {
                Plan::Site(site) => Ok(site.clone()),
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
        let site = |s: &str| Plan::Site(s.into());
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
