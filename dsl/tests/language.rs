//! Every example of docs/cheops.md: how it reads, and how it prints in canonical form.

use std::time::Duration;

use dsl::{parse, Entry, LocExpr, Name, Op, Site};

/// Parses `input` and checks its canonical form, and that the form reads back the same.
fn prints_as(input: &str, canonical: &str) {
    let scope = parse(input).unwrap_or_else(|error| panic!("{input:?} should parse:\n{error}"));
    assert_eq!(scope.to_string(), canonical, "canonical form of {input:?}");
    let again = parse(canonical).expect("a canonical form parses");
    assert_eq!(again, scope, "{canonical:?} reads back as the same tree");
    assert_eq!(again.to_string(), canonical, "printing is stable");
}

fn site(name: &str) -> LocExpr {
    LocExpr::Site(Site::new(Name::new(name).unwrap()))
}

fn service(name: &str, location: LocExpr) -> Entry {
    Entry::Service {
        service: Name::new(name).unwrap(),
        location,
    }
}

#[test]
fn the_examples_of_the_design_print_as_written() {
    for example in [
        "{compute: Nantes, image: Paris}",
        "{image: Paris & Nantes}",
        "{catalog: Paris % Nantes}",
        "{image: Paris ; Nantes}",
        "{image: around(Paris, 10ms)}",
        "{Site1 & Site2}",
        "{catalog: Paris % Nantes, prime: Paris}",
        "{A: S1 & S2, B: S1}",
    ] {
        prints_as(example, example);
    }
}

#[test]
fn otherwise_has_three_spellings_and_binds_loosest() {
    prints_as(
        "Instance2 | Instance1&Instance3",
        "{Instance2 ; Instance1 & Instance3}",
    );
    prints_as("a || b ; c", "{a ; b ; c}");
    let scope = parse("Instance2 | Instance1&Instance3").unwrap();
    assert_eq!(
        scope.entries(),
        [Entry::Bare(LocExpr::Chain(
            Op::Otherwise,
            vec![
                site("Instance2"),
                LocExpr::Chain(Op::Replicate, vec![site("Instance1"), site("Instance3")]),
            ]
        ))]
    );
}

#[test]
fn cross_binds_tighter_than_replication() {
    prints_as("a & b % c", "{a & b % c}");
    prints_as("(a & b) % c", "{(a & b) % c}");
    prints_as("a % (b ; c) & d", "{a % (b ; c) & d}");
    let scope = parse("a & b % c").unwrap();
    assert_eq!(
        scope.entries(),
        [Entry::Bare(LocExpr::Chain(
            Op::Replicate,
            vec![
                site("a"),
                LocExpr::Chain(Op::Cross, vec![site("b"), site("c")])
            ]
        ))]
    );
}

#[test]
fn parentheses_stay_only_where_precedence_needs_them() {
    prints_as("{x: (a)}", "{x: a}");
    prints_as("{x: ((a & b))}", "{x: a & b}");
    prints_as("{x: (a ; b) & c}", "{x: (a ; b) & c}");
    prints_as("{x: a ; (b & c)}", "{x: a ; b & c}");
}

#[test]
fn chains_of_one_operator_are_flattened() {
    prints_as("{x: (a & b) & (c & d)}", "{x: a & b & c & d}");
    prints_as("{x: a ; (b ; c)}", "{x: a ; b ; c}");
    prints_as("{x: a % (b % c)}", "{x: a % b % c}");
    let scope = parse("{x: (a & b) & c}").unwrap();
    assert_eq!(
        scope.entries(),
        [service(
            "x",
            LocExpr::Chain(Op::Replicate, vec![site("a"), site("b"), site("c")])
        )]
    );
}

#[test]
fn white_space_is_insignificant_around_tokens_and_folds_inside_names() {
    prints_as(
        "  {  compute :Nantes,image:  Paris  }  ",
        "{compute: Nantes, image: Paris}",
    );
    prints_as("{Service   A: New \t York}", "{Service A: New York}");
    prints_as("{x: a\n&\nb}", "{x: a & b}");
}

#[test]
fn names_are_quoted_only_when_they_cannot_be_bare() {
    prints_as("{image: \"Site #1\"}", "{image: \"Site #1\"}");
    prints_as("{\"image\": \"Paris\" & Nantes}", "{image: Paris & Nantes}");
    prints_as("{x: \"two  spaces\"}", "{x: \"two  spaces\"}");
    prints_as("{x: \" padded\"}", "{x: \" padded\"}");
    prints_as("{x: \"a&b\" & c}", "{x: \"a&b\" & c}");
    prints_as(
        "{x: Zürich & São-Paulo_2.eu}",
        "{x: Zürich & São-Paulo_2.eu}",
    );
}

#[test]
fn durations_print_in_their_largest_whole_unit() {
    prints_as("{x: around(a, 1500us)}", "{x: around(a, 1500us)}");
    prints_as("{x: around(a, 2000ms)}", "{x: around(a, 2s)}");
    prints_as("{x: around(a, 3000000us)}", "{x: around(a, 3s)}");
    prints_as("{x: around(a, 10ms)}", "{x: around(a, 10ms)}");
    prints_as("{x: around(a, 0s)}", "{x: around(a, 0s)}");
    prints_as(
        "{x: around ( \"Site #1\" , 7us ) & b}",
        "{x: around(\"Site #1\", 7us) & b}",
    );
    let scope = parse("{x: around(a, 1500us)}").unwrap();
    let LocExpr::Around { within, .. } = scope.location_for("x").unwrap() else {
        panic!("around reads as around");
    };
    assert_eq!(*within, Duration::from_micros(1500));
}

#[test]
fn around_is_a_plain_name_unless_called() {
    prints_as("{x: around}", "{x: around}");
    prints_as("{around: around & b}", "{around: around & b}");
}

#[test]
fn a_scope_may_go_without_braces_and_end_with_a_comma_inside_them() {
    prints_as(
        "compute: Nantes, image: Paris",
        "{compute: Nantes, image: Paris}",
    );
    prints_as(
        "{compute: Nantes, image: Paris,}",
        "{compute: Nantes, image: Paris}",
    );
    prints_as("{}", "{}");
    prints_as("{ }", "{}");
}

#[test]
fn entries_keep_their_written_order() {
    prints_as(
        "{b: x, Lyon, a: y, prime: x, c: x % z}",
        "{b: x, Lyon, a: y, prime: x, c: x % z}",
    );
}

#[test]
fn the_json_format_reads_values_as_expressions() {
    prints_as(
        r#"{"compute": "CloudOne", "image": "CloudTwo & CloudThree"}"#,
        "{compute: CloudOne, image: CloudTwo & CloudThree}",
    );
    prints_as(r#" { } "#, "{}");
    prints_as(
        r#"{"catalog": "Paris % Nantes", "prime": "Paris"}"#,
        "{catalog: Paris % Nantes, prime: Paris}",
    );
    prints_as(
        r#"{"Service A": "Site \u0031 ; \"Site #2\""}"#,
        "{Service A: Site 1 ; \"Site #2\"}",
    );
    prints_as(r#"{"x  y": "a"}"#, "{\"x  y\": a}");
    // Not JSON (a value is not a string): read as scope-lang, a quoted key is a name.
    prints_as(r#"{"image": Paris & Nantes}"#, "{image: Paris & Nantes}");
}

#[test]
fn the_service_slash_site_format_names_one_service_and_one_site() {
    prints_as("image/Paris", "{image: Paris}");
    prints_as(" image / New York ", "{image: New York}");
    prints_as("\"my image\"/\"Site #1\"", "{my image: \"Site #1\"}");
}

#[test]
fn the_three_formats_give_the_same_tree() {
    let scope_lang = parse("{image: Paris}").unwrap();
    assert_eq!(parse(r#"{"image": "Paris"}"#).unwrap(), scope_lang);
    assert_eq!(parse("image/Paris").unwrap(), scope_lang);
    assert_eq!(parse("image: Paris").unwrap(), scope_lang);
}

#[test]
fn a_canonical_form_that_would_be_json_gets_a_trailing_comma() {
    // Both names need quotes, so the plain form would be a JSON object of strings, whose
    // value "a & b" would read as an expression.
    prints_as("{\"Service #1\": \"a & b\"}", "{\"Service #1\": a & b}");
    prints_as(
        "{\"Service #1\": (\"a & b\")}",
        "{\"Service #1\": \"a & b\",}",
    );
    assert_eq!(
        parse("{\"Service #1\": \"a & b\",}")
            .unwrap()
            .location_for("Service #1"),
        Some(&site("a & b"))
    );
    prints_as(
        "{\"Service #1\": \"a & b\", x: y}",
        "{\"Service #1\": \"a & b\", x: y}",
    );
}
