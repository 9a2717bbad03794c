//! Says what a scope means and what it does for a call: its canonical form, its tree, and
//! the plan per service in words; as text for people (`Display`) and JSON for machines.

use std::fmt::{self, Display, Formatter, Write};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::print::DurationText;
use crate::resolve::{plan, Plan, RoundTrips};
use crate::tree::{Entry, LocExpr, Name, Op, Scope, Site};

/// A scope explained.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The canonical form.
    pub scope: String,
    /// The entries, as a tree.
    pub tree: Vec<Entry>,
    /// The plan of each service asked about.
    pub plans: Vec<ServicePlan>,
    /// The scope's prime site, for the text tree.
    #[serde(skip)]
    prime: Option<Site>,
}

/// What a call to one service does.
#[derive(Clone, Debug, Serialize)]
pub struct ServicePlan {
    /// The service; `None` for the bare entry, which serves any service without its own.
    pub service: Option<String>,
    /// The site where the call arrives, when given.
    pub site: Option<String>,
    /// The location that applies, in canonical form; `None` when the call stays local.
    pub location: Option<String>,
    /// The plan; `None` only for a local call whose site was not given.
    pub plan: Option<Plan>,
    /// The plan in words.
    pub words: String,
}

/// Explains `scope`, with the plan of `service` as called at `this_site`, or without a
/// service the plan of every entry.
pub fn explain(
    scope: &Scope,
    service: Option<&str>,
    this_site: Option<&str>,
    round_trips: &impl RoundTrips,
) -> Explanation {
    let planned = |service: Option<&str>, location: &LocExpr| {
        let plan = plan(location, scope.prime(), round_trips);
        ServicePlan {
            service: service.map(str::to_owned),
            site: this_site.map(str::to_owned),
            location: Some(location.to_string()),
            words: words(&plan),
            plan: Some(plan),
        }
    };
    let plans = match service {
        Some(service) => vec![match scope.location_for(service) {
            Some(location) => planned(Some(service), location),
            None => ServicePlan {
                service: Some(service.to_owned()),
                site: this_site.map(str::to_owned),
                location: None,
                plan: this_site.map(Plan::site),
                words: match this_site {
                    Some(site) => format!("no entry: stays local, at {site}"),
                    None => "no entry: stays on the site where the call arrives".to_owned(),
                },
            },
        }],
        None => scope
            .entries()
            .iter()
            .filter_map(|entry| match entry {
                Entry::Service { service, location } => {
                    Some(planned(Some(service.as_str()), location))
                }
                Entry::Bare(location) => Some(planned(None, location)),
                Entry::Prime(_) => None,
            })
            .collect(),
    };
    Explanation {
        scope: scope.to_string(),
        tree: scope.entries().to_vec(),
        plans,
        prime: scope.prime().cloned(),
    }
}

impl Explanation {
    /// The JSON form, for machines.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("an explanation is only strings, lists and maps with string keys")
    }
}

impl Display for Explanation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "scope: {}", self.scope)?;
        writeln!(f, "tree:")?;
        for entry in &self.tree {
            match entry {
                Entry::Service { service, location } => {
                    writeln!(f, "  {service}")?;
                    self.write_tree(f, location, 2)?;
                }
                Entry::Bare(location) => {
                    writeln!(f, "  any other service")?;
                    self.write_tree(f, location, 2)?;
                }
                Entry::Prime(site) => writeln!(f, "  prime: {site}")?,
            }
        }
        writeln!(f, "plan:")?;
        for plan in &self.plans {
            let service = plan.service.as_deref().unwrap_or("any other service");
            writeln!(f, "  {service}: {}", plan.words)?;
        }
        Ok(())
    }
}

impl Explanation {
    fn write_tree(&self, f: &mut Formatter<'_>, location: &LocExpr, depth: usize) -> fmt::Result {
        let indent = "  ".repeat(depth);
        match location {
            LocExpr::Site(site) => writeln!(f, "{indent}{site}"),
            LocExpr::Around { site, within } => {
                writeln!(f, "{indent}around {site}, within {}", DurationText(*within))
            }
            LocExpr::Chain(op, parts) => {
                match op {
                    Op::Otherwise => writeln!(f, "{indent}otherwise (;)")?,
                    Op::Replicate => writeln!(f, "{indent}replicate (&)")?,
                    Op::Cross => {
                        let prime = self.prime.as_ref().unwrap_or(location.first_site());
                        writeln!(f, "{indent}cross (%), prime {prime}")?
                    }
                }
                for part in parts {
                    self.write_tree(f, part, depth + 1)?;
                }
                Ok(())
            }
        }
    }
}

/// A plan in words: "replicate at Paris and Nantes".
pub fn words(plan: &Plan) -> String {
    match plan {
        Plan::Site(site) => format!("run at {}", site.as_str()),
        Plan::AllOf(parts) => format!("replicate at {}", listed(parts, " and ")),
        Plan::SpreadOver { parts, prime } => {
            format!("spread over {} (prime {prime})", listed(parts, " and "))
        }
        Plan::FirstOf(parts) => format!("try {}", listed(parts, ", then ")),
    }
}

/// `parts` as a list whose last two are joined by `last`: "A, B and C".
fn listed(parts: &[Plan], last: &str) -> String {
    let mut out = String::new();
    for (at, part) in parts.iter().enumerate() {
        if at > 0 {
            out.push_str(if at + 1 == parts.len() { last } else { ", " });
        }
        match part {
            Plan::Site(site) => out.push_str(site.as_str()),
            nested => {
                let _ = write!(out, "({})", words(nested));
            }
        }
    }
    out
}

// The JSON tree: a site is its name; an expression is an object whose one key says what it is.

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Serialize for Site {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.name.serialize(serializer)
    }
}

impl Serialize for LocExpr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Around<'a> {
            site: &'a Site,
            within: String,
        }
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            LocExpr::Site(site) => map.serialize_entry("site", site)?,
            LocExpr::Around { site, within } => {
                let within = DurationText(*within).to_string();
                map.serialize_entry("around", &Around { site, within })?
            }
            LocExpr::Chain(op, parts) => {
                let key = match op {
                    Op::Otherwise => "otherwise",
                    Op::Replicate => "replicate",
                    Op::Cross => "cross",
                };
                map.serialize_entry(key, parts)?
            }
        }
        map.end()
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Entry::Service { service, location } => {
                map.serialize_entry("service", service)?;
                map.serialize_entry("location", location)?;
            }
            Entry::Bare(location) => map.serialize_entry("location", location)?,
            Entry::Prime(site) => map.serialize_entry("prime", site)?,
        }
        map.end()
    }
}
