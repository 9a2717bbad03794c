//! What the proxy asks of a scope: the location of a service, what is left downstream, the
//! sites it names and whether they exist.

use dsl::{parse, ErrorKind};

#[test]
fn a_service_uses_its_entry_else_the_bare_one_else_none() {
    let scope = parse("{compute: Nantes, Lyon & Rennes, image: Paris}").unwrap();
    assert_eq!(scope.location_for("compute").unwrap().to_string(), "Nantes");
    assert_eq!(scope.location_for("image").unwrap().to_string(), "Paris");
    assert_eq!(
        scope.location_for("network").unwrap().to_string(),
        "Lyon & Rennes"
    );
    let no_bare = parse("{compute: Nantes}").unwrap();
    assert!(no_bare.location_for("network").is_none());
    assert!(no_bare.location_for("prime").is_none());
}

#[test]
fn executing_a_share_consumes_the_entry_used_and_keeps_the_others() {
    // cheops.md: {A: S1 & S2, B: S1} replicates A at S1 and S2, and both use B from S1.
    let scope = parse("{A: S1 & S2, B: S1}").unwrap();
    let downstream = scope.consume("A");
    assert_eq!(downstream.to_string(), "{B: S1}");
    assert_eq!(downstream.location_for("B").unwrap().to_string(), "S1");
    assert!(downstream.consume("B").is_empty());
    // The bare entry serves once, for the first service without its own entry.
    let bare = parse("{A: S1, S2 ; S3}").unwrap();
    assert_eq!(bare.consume("C").to_string(), "{A: S1}");
    assert_eq!(bare.consume("A").to_string(), "{S2 ; S3}");
    // A service with no entry leaves the scope as it was.
    assert_eq!(scope.consume("C"), scope);
}

#[test]
fn a_prime_left_without_a_cross_is_consumed_too() {
    let scope = parse("{catalog: Paris % Nantes, prime: Paris, image: Lyon}").unwrap();
    let downstream = scope.consume("catalog");
    assert_eq!(downstream.to_string(), "{image: Lyon}");
    // What travels on must read back as the same scope at the next site.
    assert_eq!(parse(&downstream.to_string()).unwrap(), downstream);
    let two = parse("{c: a % b, prime: a, d: a % c}").unwrap();
    assert_eq!(two.consume("c").to_string(), "{prime: a, d: a % c}");
}

#[test]
fn an_empty_scope_keeps_every_call_local() {
    let scope = parse("{}").unwrap();
    assert!(scope.is_empty());
    assert!(scope.location_for("anything").is_none());
    assert!(!parse("{a: b}").unwrap().is_empty());
}

#[test]
fn sites_lists_every_site_once_in_written_order() {
    let scope =
        parse("{c: Paris % Nantes, prime: Nantes, i: around(Lyon, 1ms) ; Paris, Brest}").unwrap();
    assert_eq!(scope.sites(), ["Paris", "Nantes", "Lyon", "Brest"]);
}

#[test]
fn check_sites_names_the_first_unknown_site_and_its_column() {
    let known = |site: &str| ["Paris", "Nantes", "Lyon"].contains(&site);
    let scope = parse("{compute: Nantes, image: Paris & Pariss & Lyon}").unwrap();
    let error = scope.check_sites(known).unwrap_err();
    assert_eq!(error.kind, ErrorKind::UnknownSite("Pariss".into()));
    assert_eq!(error.column(), 34);
    assert_eq!(
        error.to_string(),
        "column 34: unknown site 'Pariss'\n  \
         {compute: Nantes, image: Paris & Pariss & Lyon}\n                                   ^^^^^^"
    );
    assert!(parse("{compute: Nantes, image: Paris}")
        .unwrap()
        .check_sites(known)
        .is_ok());
}

#[test]
fn check_sites_points_into_the_json_it_was_read_from() {
    let known = |site: &str| site == "Paris";
    let scope = parse(r#"{"image": "Paris & Nantes"}"#).unwrap();
    assert_eq!(scope.check_sites(known).unwrap_err().column(), 20);
}

#[test]
fn a_service_and_site_run_together_get_a_hint() {
    let known = |site: &str| ["Paris", "Nantes"].contains(&site);
    // `{image Paris}` is grammatical (one site named "image Paris"); the site check tells.
    let error = parse("{image Paris}")
        .unwrap()
        .check_sites(known)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::UnknownSite("image Paris".into()));
    assert_eq!(error.column(), 2);
    assert_eq!(error.hint.as_deref(), Some("missing ':' after 'image'?"));
    let error = parse("{image: Paris Nantes}")
        .unwrap()
        .check_sites(known)
        .unwrap_err();
    assert_eq!(
        error.hint.as_deref(),
        Some("missing an operator ('&', '%' or ';') between 'Paris' and 'Nantes'?")
    );
    let error = parse("{image: New York}")
        .unwrap()
        .check_sites(known)
        .unwrap_err();
    assert_eq!(error.hint, None);
}

#[test]
fn a_scope_built_in_code_is_checked_like_a_written_one() {
    let parsed = parse("{x: a & b}").unwrap();
    let built = dsl::Scope::new(parsed.entries().to_vec()).unwrap();
    assert_eq!(built, parsed);
    let mut twice = parsed.entries().to_vec();
    twice.extend(parsed.entries().iter().cloned());
    let error = dsl::Scope::new(twice).unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::ServiceTwice {
            service: "x".into(),
            first_at: 2
        }
    );
    assert_eq!(error.input, "{x: a & b, x: a & b}");
}
