//! Scope policies: whether a request's plan stays within what its workload (or, for inbound
//! requests, `[inbound]`) may ask for: the other sites it reaches and the collaborations it
//! uses. Pure, so that a unit test can call it; the request layer says whose policy it is.
use std::sync::Arc;

use dsl::Plan;

use crate::config::{Collaborating, ScopePolicy};

/// A policy and whose it is, as refusals name it ("workload /sys/fs/cgroup/app").
#[derive(Debug, PartialEq, Eq)]
pub struct PolicyOf {
    pub who: String,
    pub policy: ScopePolicy,
}

impl PolicyOf {
    /// `None` when the policy allows everything: nothing to check.
    pub fn limiting(who: String, policy: ScopePolicy) -> Option<Arc<PolicyOf>> {
        (!policy.allows_everything()).then(|| Arc::new(PolicyOf { who, policy }))
    }
}

/// The rule a plan breaks, and what the rule allows.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Breach {
    #[error("site {site} is not in its `allow_sites` [{}]", allowed.join(", "))]
    Site { site: String, allowed: Vec<String> },
    #[error("{} is not in its `allow` [{}]", what.as_str(), names(allowed))]
    Collaboration {
        what: Collaborating,
        allowed: Vec<Collaborating>,
    },
}

impl Breach {
    /// The name of the rule, as the configuration and the metrics call it.
    pub fn rule(&self) -> &'static str {
        match self {
            Breach::Site { .. } => "allow_sites",
            Breach::Collaboration { .. } => "allow",
        }
    }
}

fn names(allowed: &[Collaborating]) -> String {
    let names: Vec<&str> = allowed.iter().map(|c| c.as_str()).collect();
    names.join(", ")
}

/// Whether `plan`, made at `this_site`, keeps to `policy`. This site is always allowed: a
/// request without a scope is served here anyway.
pub fn check(policy: &ScopePolicy, plan: &Plan, this_site: &str) -> Result<(), Breach> {
    let check = Check { policy, this_site };
    match plan {
        Plan::Site(site) if site.as_str() != this_site => {
            check.collaboration(Collaborating::Sharing)?;
            check.site(site.as_str())
        }
        plan => check.plan(plan),
    }
}

struct Check<'a> {
    policy: &'a ScopePolicy,
    this_site: &'a str,
}

impl Check<'_> {
    fn plan(&self, plan: &Plan) -> Result<(), Breach> {
        let (what, parts) = match plan {
            Plan::Site(site) => return self.site(site.as_str()),
            Plan::FirstOf(parts) => (Collaborating::Otherwise, parts),
            Plan::AllOf(parts) => (Collaborating::Replication, parts),
            Plan::SpreadOver { parts, prime } => {
                self.site(prime)?;
                (Collaborating::Cross, parts)
            }
        };
        self.collaboration(what)?;
        parts.iter().try_for_each(|part| self.plan(part))
    }

    fn site(&self, site: &str) -> Result<(), Breach> {
        match &self.policy.allow_sites {
            Some(allowed) if site != self.this_site && !allowed.iter().any(|a| a == site) => {
                Err(Breach::Site {
                    site: site.to_owned(),
                    allowed: allowed.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    fn collaboration(&self, what: Collaborating) -> Result<(), Breach> {
        match &self.policy.allow {
            Some(allowed) if !allowed.contains(&what) => Err(Breach::Collaboration {
                what,
                allowed: allowed.clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(scope: &str) -> Plan {
        let scope = dsl::parse(scope).unwrap();
        dsl::resolve(&scope, "svc", "Paris", &dsl::RoundTripTable::default())
    }

    fn policy(sites: Option<&[&str]>, allow: Option<&[Collaborating]>) -> ScopePolicy {
        ScopePolicy {
            allow_sites: sites.map(|s| s.iter().map(|s| s.to_string()).collect()),
            allow: allow.map(<[_]>::to_vec),
        }
    }

    #[test]
    fn a_site_outside_allow_sites_is_named_and_this_site_is_always_allowed() {
        let paris_only = policy(Some(&["Paris"]), None);
        let breach = check(&paris_only, &plan("{svc: Nantes}"), "Paris").unwrap_err();
        assert_eq!(breach.rule(), "allow_sites");
        assert_eq!(
            breach.to_string(),
            "site Nantes is not in its `allow_sites` [Paris]"
        );
        assert_eq!(check(&paris_only, &plan("{svc: Paris}"), "Paris"), Ok(()));
        let nantes_only = policy(Some(&["Nantes"]), None);
        assert_eq!(check(&nantes_only, &plan("{svc: Paris}"), "Paris"), Ok(()));
        let breach = check(&nantes_only, &plan("{svc: Nantes ; Rennes}"), "Paris");
        assert!(matches!(breach, Err(Breach::Site { site, .. }) if site == "Rennes"));
    }

    #[test]
    fn each_collaboration_needs_its_name_in_allow() {
        use Collaborating::*;
        let sharing = policy(None, Some(&[Sharing]));
        assert_eq!(check(&sharing, &plan("{svc: Nantes}"), "Paris"), Ok(()));
        for (scope, what) in [
            ("{svc: Nantes ; Paris}", Otherwise),
            ("{svc: Nantes & Paris}", Replication),
            ("{svc: Nantes % Paris}", Cross),
        ] {
            let breach = check(&sharing, &plan(scope), "Paris").unwrap_err();
            assert_eq!(breach.rule(), "allow", "{scope}");
            assert!(
                matches!(breach, Breach::Collaboration { what: w, .. } if w == what),
                "{scope}: {breach}"
            );
        }
        let none = policy(None, Some(&[]));
        assert_eq!(check(&none, &plan("{svc: Paris}"), "Paris"), Ok(()));
        assert!(check(&none, &plan("{svc: Nantes}"), "Paris").is_err());
        assert_eq!(
            check(
                &ScopePolicy::default(),
                &plan("{svc: Nantes & Paris}"),
                "Paris"
            ),
            Ok(())
        );
    }
}
