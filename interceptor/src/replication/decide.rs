//! Pure decisions of replication (`&`) and cross (`%`): what to do with a scoped request for a
//! resource this site does not know yet, which of several sites' answers the client gets,
//! and the per-site status header.
use std::fmt;

use dsl::Plan;

use super::{
    call::Answer,
    exchange::{Reply, Unreached},
    ids::MetaId,
};
use crate::resources::Addressed;

/// The header giving each involved site's status: `Site1=ok, Site3=timeout`.
pub const REPLICAS_HEADER: &str = "x-cheops-replicas";
/// The header naming the meta-ID of the resource an answer is about.
pub const META_ID_HEADER: &str = "x-cheops-meta-id";

/// What to do with a scoped request that no record of this site already decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing of replication or cross: the proxy's own route (here, sharing, otherwise).
    Route,
    /// Create at every site, this site leading.
    Create { sites: Vec<String> },
    /// Create at the prime site; register it at every site of the expression.
    CreateCross { prime: String, sites: Vec<String> },
    /// Gather the collection from every site, each resource once.
    List { sites: Vec<String> },
    /// The same request at every site (a path no resource rule names).
    FanOut { sites: Vec<String> },
    /// The first site that has the resource: a site that knows it also knows its leader.
    FirstFound { sites: Vec<String> },
    /// Refused, for this reason.
    NotSupported(String),
}

pub fn decide(addressed: Addressed<'_>, plan: &Plan) -> Action {
    let (sites, cross_prime) = match plan {
        Plan::Site(_) | Plan::FirstOf(_) => return Action::Route,
        Plan::AllOf(parts) => (sites_of(parts, "replication ('&')"), None),
        Plan::SpreadOver { parts, prime } => (sites_of(parts, "cross ('%')"), Some(prime)),
    };
    let sites = match sites {
        Ok(sites) => sites,
        Err(why) => return Action::NotSupported(why),
    };
    match (addressed, cross_prime) {
        (Addressed::Create(_), None) => Action::Create { sites },
        (Addressed::Create(_), Some(prime)) => Action::CreateCross {
            prime: prime.clone(),
            sites,
        },
        (Addressed::List(_), _) => Action::List { sites },
        (Addressed::Read(..), _) => Action::FirstFound { sites },
        // A meta-ID names one resource with one leader: one site passes the write on to it.
        (Addressed::Write(_, id), _) if MetaId::parse(id).is_some() => Action::FirstFound { sites },
        (Addressed::Write(..) | Addressed::Other, None) => Action::FanOut { sites },
        (Addressed::Write(..), Some(_)) => Action::FirstFound { sites },
        (Addressed::Other, Some(_)) => Action::NotSupported(
            "cross ('%') applies to resources that the service's resource rules name".into(),
        ),
    }
}

/// The sites of a replication or cross whose parts are all single sites.
fn sites_of(parts: &[Plan], what: &str) -> Result<Vec<String>, String> {
    parts
        .iter()
        .map(|part| match part {
            Plan::Site(site) => Ok(site.as_str().to_owned()),
            _ => Err(format!(
                "{what} over a nested collaboration is not supported: name single sites"
            )),
        })
        .collect()
}

/// How one site fared with its part of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteStatus {
    Ok,
    /// The site's instance refused, with this status.
    Failed(u16),
    Timeout,
    Unreachable,
}

impl SiteStatus {
    pub fn of(result: &Result<Reply, Unreached>) -> SiteStatus {
        match result {
            Ok(reply) if reply.answer.is_success() => SiteStatus::Ok,
            Ok(reply) => SiteStatus::Failed(reply.answer.status),
            Err(Unreached::Timeout { .. }) => SiteStatus::Timeout,
            Err(Unreached::Unreachable { .. } | Unreached::NotDelivered { .. }) => {
                SiteStatus::Unreachable
            }
        }
    }
}

impl fmt::Display for SiteStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteStatus::Ok => f.write_str("ok"),
            SiteStatus::Failed(status) => write!(f, "failed ({status})"),
            SiteStatus::Timeout => f.write_str("timeout"),
            SiteStatus::Unreachable => f.write_str("unreachable"),
        }
    }
}

/// `Site1=ok, Site2=timeout`.
pub fn statuses(results: &[(String, Result<Reply, Unreached>)]) -> String {
    results
        .iter()
        .map(|(site, result)| format!("{site}={}", SiteStatus::of(result)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The answer the client gets of several sites': this site's success, else the first success
/// in the plan's order, else the first refusal; `None` when no site answered.
pub fn chosen<'r>(
    this_site: &str,
    results: &'r [(String, Result<Reply, Unreached>)],
) -> Option<&'r Answer> {
    let answers = || {
        results
            .iter()
            .filter_map(|(site, r)| Some((site, &r.as_ref().ok()?.answer)))
    };
    answers()
        .find(|(site, a)| *site == this_site && a.is_success())
        .or_else(|| answers().find(|(_, a)| a.is_success()))
        .or_else(|| answers().next())
        .map(|(_, answer)| answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{classify, MetaIdShape, ResourceRule};

    fn rules() -> Vec<ResourceRule> {
        let text = "collection = \"/pods\"\nitem = \"/pods/{id}\"\nid = \"json:id\"\n";
        vec![toml::from_str(text).unwrap()]
    }

    fn site(name: &str) -> Plan {
        Plan::site(name)
    }

    fn names(sites: &[&str]) -> Vec<String> {
        sites.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn replication_creates_everywhere_and_lists_from_everywhere() {
        let rules = rules();
        let both = Plan::AllOf(vec![site("S1"), site("S2")]);
        let action = |method, path| decide(classify(&rules, method, path), &both);
        assert_eq!(
            action("POST", "/pods"),
            Action::Create {
                sites: names(&["S1", "S2"])
            }
        );
        assert_eq!(
            action("GET", "/pods"),
            Action::List {
                sites: names(&["S1", "S2"])
            }
        );
        assert_eq!(
            action("GET", "/pods/9"),
            Action::FirstFound {
                sites: names(&["S1", "S2"])
            }
        );
        let meta = MetaId::generate(MetaIdShape::Cheops);
        let write = format!("/pods/{meta}");
        assert_eq!(
            action("DELETE", &write),
            Action::FirstFound {
                sites: names(&["S1", "S2"])
            }
        );
        assert_eq!(
            action("PUT", "/pods/purple"),
            Action::FanOut {
                sites: names(&["S1", "S2"])
            }
        );
        assert_eq!(
            action("POST", "/reset"),
            Action::FanOut {
                sites: names(&["S1", "S2"])
            }
        );
        assert_eq!(
            decide(classify(&rules, "POST", "/pods"), &site("S1")),
            Action::Route
        );
    }

    #[test]
    fn cross_creates_at_the_prime_and_refuses_what_it_cannot_name() {
        let rules = rules();
        let cross = Plan::SpreadOver {
            parts: vec![site("S1"), site("S2")],
            prime: "S2".into(),
        };
        let action = |method, path| decide(classify(&rules, method, path), &cross);
        assert_eq!(
            action("POST", "/pods"),
            Action::CreateCross {
                prime: "S2".into(),
                sites: names(&["S1", "S2"])
            }
        );
        assert_eq!(
            action("GET", "/pods"),
            Action::List {
                sites: names(&["S1", "S2"])
            }
        );
        assert!(matches!(action("POST", "/reset"), Action::NotSupported(_)));
        let nested = Plan::AllOf(vec![
            site("S1"),
            Plan::FirstOf(vec![site("S2"), site("S3")]),
        ]);
        let Action::NotSupported(why) = decide(classify(&rules, "POST", "/pods"), &nested) else {
            panic!("a nested plan was accepted");
        };
        assert!(why.contains("replication ('&')"), "{why}");
    }

    fn reply(status: u16, body: &str) -> Result<Reply, Unreached> {
        Ok(Reply {
            answer: Answer::new(status, "application/json", body.into()),
            local_id: None,
        })
    }

    #[test]
    fn the_client_gets_this_sites_success_first_and_every_sites_status() {
        let results = vec![
            ("S1".to_owned(), reply(500, "boom")),
            ("S2".to_owned(), reply(201, "two")),
            (
                "S3".to_owned(),
                Err(Unreached::Timeout {
                    site: "S3".into(),
                    after: std::time::Duration::from_secs(1),
                }),
            ),
            ("S4".to_owned(), reply(201, "four")),
        ];
        assert_eq!(chosen("S4", &results).unwrap().body, "four");
        assert_eq!(chosen("S1", &results).unwrap().body, "two");
        assert_eq!(chosen("S1", &results[..1]).unwrap().status, 500);
        assert!(chosen("S1", &results[2..3]).is_none());
        assert_eq!(
            statuses(&results),
            "S1=failed (500), S2=ok, S3=timeout, S4=ok"
        );
    }
}
