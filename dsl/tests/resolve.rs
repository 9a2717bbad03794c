//! The plan for a call, and how it is explained.

use std::time::Duration;

use dsl::{explain, parse, resolve, Plan, RoundTripTable, RoundTrips};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn site(name: &str) -> Plan {
    Plan::site(name)
}

fn sites(names: &[&str]) -> Vec<Plan> {
    names.iter().map(|name| site(name)).collect()
}

/// Paris is 2 ms from Nantes, 5 ms from Lyon, 5 ms from Brest, 30 ms from Rennes; Marseille
/// was never measured from Paris.
fn round_trips() -> RoundTripTable {
    let mut table = RoundTripTable::default();
    table.insert("Paris", "Nantes", ms(2));
    table.insert("Paris", "Lyon", ms(5));
    table.insert("Paris", "Brest", ms(5));
    table.insert("Paris", "Rennes", ms(30));
    table.insert("Lyon", "Marseille", ms(3));
    table
}

fn plan(scope: &str, service: &str) -> Plan {
    resolve(&parse(scope).unwrap(), service, "Here", &round_trips())
}

#[test]
fn each_collaboration_gives_its_plan() {
    assert_eq!(plan("{image: Paris}", "image"), site("Paris"));
    assert_eq!(
        plan("{image: Paris & Nantes}", "image"),
        Plan::AllOf(sites(&["Paris", "Nantes"]))
    );
    assert_eq!(
        plan("{image: Paris ; Nantes}", "image"),
        Plan::FirstOf(sites(&["Paris", "Nantes"]))
    );
    assert_eq!(
        plan("{catalog: Paris % Nantes}", "catalog"),
        Plan::SpreadOver {
            parts: sites(&["Paris", "Nantes"]),
            prime: "Paris".into()
        }
    );
    assert_eq!(
        plan("{catalog: Paris % Nantes, prime: Nantes}", "catalog"),
        Plan::SpreadOver {
            parts: sites(&["Paris", "Nantes"]),
            prime: "Nantes".into()
        }
    );
}

#[test]
fn a_service_without_entry_stays_where_the_call_arrived() {
    assert_eq!(plan("{image: Paris}", "compute"), site("Here"));
    assert_eq!(plan("{}", "compute"), site("Here"));
    assert_eq!(plan("{image: Paris, Lyon}", "compute"), site("Lyon"));
}

#[test]
fn around_is_the_nearest_first_chain_within_the_round_trip() {
    // Nearest first, ties by name, Rennes too far, Marseille not measured from Paris.
    assert_eq!(
        plan("{image: around(Paris, 10ms)}", "image"),
        Plan::FirstOf(sites(&["Paris", "Nantes", "Brest", "Lyon"]))
    );
    assert_eq!(
        plan("{image: around(Paris, 2ms)}", "image"),
        Plan::FirstOf(sites(&["Paris", "Nantes"]))
    );
    assert_eq!(
        plan("{image: around(Paris, 1999us)}", "image"),
        site("Paris")
    );
    assert_eq!(
        plan("{image: around(Marseille, 1s)}", "image"),
        Plan::FirstOf(sites(&["Marseille", "Lyon"]))
    );
    assert_eq!(
        plan("{image: around(Nowhere, 1s)}", "image"),
        site("Nowhere")
    );
}

#[test]
fn a_round_trip_table_holds_each_round_trip_both_ways() {
    let table = round_trips();
    assert_eq!(table.between("Paris", "Nantes"), Some(ms(2)));
    assert_eq!(table.between("Nantes", "Paris"), Some(ms(2)));
    assert_eq!(table.between("Nantes", "Lyon"), None);
    let mut from_lyon: Vec<_> = table.measured_from("Lyon").collect();
    from_lyon.sort();
    assert_eq!(from_lyon, [("Marseille", ms(3)), ("Paris", ms(5))]);
    assert_eq!(table.measured_from("Nowhere").count(), 0);
}

#[test]
fn plans_are_simplified() {
    // A nested otherwise joins its parent; a site already tried is not tried again.
    assert_eq!(
        plan("{image: around(Paris, 2ms) ; Nantes ; Rennes}", "image"),
        Plan::FirstOf(sites(&["Paris", "Nantes", "Rennes"]))
    );
    assert_eq!(
        plan("{image: around(Paris, 2ms) & Lyon}", "image"),
        Plan::AllOf(vec![
            Plan::FirstOf(sites(&["Paris", "Nantes"])),
            site("Lyon")
        ])
    );
    assert_eq!(
        plan("{c: (Paris ; Lyon) % Nantes}", "c"),
        Plan::SpreadOver {
            parts: vec![Plan::FirstOf(sites(&["Paris", "Lyon"])), site("Nantes")],
            prime: "Paris".into(),
        }
    );
}

#[test]
fn plans_serialise_for_machines() {
    let plan = plan("{c: Paris % Nantes ; Lyon & Brest}", "c");
    assert_eq!(
        serde_json::to_string(&plan).unwrap(),
        r#"{"first_of":[{"spread_over":{"parts":[{"site":"Paris"},{"site":"Nantes"}],"prime":"Paris"}},{"all_of":[{"site":"Lyon"},{"site":"Brest"}]}]}"#
    );
}

#[test]
fn explain_gives_the_scope_the_tree_and_the_plan_in_words() {
    let scope = parse("{catalog: Paris&Nantes, image: around(Paris, 3ms) | Rennes, c: Lyon % Brest, prime: Brest, Brest}").unwrap();
    let explanation = explain(&scope, None, None, &round_trips());
    assert_eq!(
        explanation.to_string(),
        "scope: {catalog: Paris & Nantes, image: around(Paris, 3ms) ; Rennes, c: Lyon % Brest, prime: Brest, Brest}
tree:
  catalog
    replicate (&)
      Paris
      Nantes
  image
    otherwise (;)
      around Paris, within 3ms
      Rennes
  c
    cross (%), prime Brest
      Lyon
      Brest
  prime: Brest
  any other service
    Brest
plan:
  catalog: replicate at Paris and Nantes
  image: try Paris, Nantes, then Rennes
  c: spread over Lyon and Brest (prime Brest)
  any other service: run at Brest
"
    );
}

#[test]
fn explain_for_one_service_at_one_site() {
    let scope = parse("{catalog: Paris & (Nantes ; Lyon)}").unwrap();
    let for_catalog = explain(&scope, Some("catalog"), Some("Lyon"), &round_trips());
    assert_eq!(for_catalog.plans.len(), 1);
    assert_eq!(
        for_catalog.plans[0].words,
        "replicate at Paris and (try Nantes, then Lyon)"
    );
    let local = explain(&scope, Some("image"), Some("Lyon"), &round_trips());
    assert_eq!(local.plans[0].words, "no entry: stays local, at Lyon");
    assert_eq!(local.plans[0].plan, Some(site("Lyon")));
    let nowhere = explain(&scope, Some("image"), None, &round_trips());
    assert_eq!(
        nowhere.plans[0].words,
        "no entry: stays on the site where the call arrives"
    );
    assert_eq!(nowhere.plans[0].plan, None);
}

#[test]
fn explain_has_a_json_form() {
    let scope = parse("{c: a % around(b, 1500us), prime: b, x ; \"Site #1\"}").unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&explain(&scope, Some("c"), Some("a"), &round_trips()).to_json())
            .unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "scope": "{c: a % around(b, 1500us), prime: b, x ; \"Site #1\"}",
            "tree": [
                {"service": "c", "location": {"cross": [{"site": "a"}, {"around": {"site": "b", "within": "1500us"}}]}},
                {"prime": "b"},
                {"location": {"otherwise": [{"site": "x"}, {"site": "Site #1"}]}}
            ],
            "plans": [{
                "service": "c",
                "site": "a",
                "location": "a % around(b, 1500us)",
                "plan": {"spread_over": {"parts": [{"site": "a"}, {"site": "b"}], "prime": "b"}},
                "words": "spread over a and b (prime b)"
            }]
        })
    );
}
