//! Scopes that must be refused: the error's kind, its column, its hint, and how it shows.

use dsl::{parse, ErrorKind, ScopeError, MAX_NESTING};

fn error(input: &str) -> ScopeError {
    match parse(input) {
        Ok(scope) => panic!("{input:?} should be refused, read as {scope}"),
        Err(error) => error,
    }
}

/// Checks the column (from 1) and the hint, or that there is none.
fn at(input: &str, column: usize, hint: Option<&str>) -> ErrorKind {
    let error = error(input);
    assert_eq!(error.column(), column, "column of {input:?}: {error}");
    assert_eq!(error.hint.as_deref(), hint, "hint for {input:?}");
    assert_eq!(error.input, input, "the error carries its input");
    error.kind
}

fn expected(what: &'static str, found: &str) -> ErrorKind {
    ErrorKind::Expected {
        expected: what,
        found: found.to_owned(),
    }
}

#[test]
fn display_shows_the_column_the_input_a_caret_and_the_hint() {
    assert_eq!(
        error("{image: Paris && Nantes}").to_string(),
        "column 16: expected a site, found '&'\n  \
         {image: Paris && Nantes}\n                 ^\n  \
         hint: '&&' is written '&'"
    );
    assert_eq!(
        error("{image: Paris, image: Nantes}").to_string(),
        "column 16: service 'image' is named twice (first at column 2)\n  \
         {image: Paris, image: Nantes}\n                 ^^^^^\n  \
         hint: give each service one entry, combining its sites with '&', '%' or ';'"
    );
}

#[test]
fn a_long_input_is_shown_around_the_culprit() {
    let sites: Vec<String> = (0..100).map(|i| format!("S{i}")).collect();
    let input = format!("{{x: {} & S7}}", sites.join(" & "));
    let shown = error(&input).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[1].starts_with("  …") && lines[1].contains("S99 & S7}"),
        "{shown}"
    );
    let caret = lines[2].find('^').unwrap();
    assert_eq!(
        &lines[1][lines[1].char_indices().nth(caret).unwrap().0..][..2],
        "S7"
    );
}

#[test]
fn names_twice() {
    assert_eq!(
        at(
            "{image: Paris, image: Nantes}",
            16,
            Some("give each service one entry, combining its sites with '&', '%' or ';'")
        ),
        ErrorKind::ServiceTwice {
            service: "image".into(),
            first_at: 2
        }
    );
    assert_eq!(
        at("{image: Paris & Nantes & Paris}", 26, None),
        ErrorKind::SiteTwice {
            site: "Paris".into(),
            op: '&',
            first_at: 9
        }
    );
    assert_eq!(
        at("{x: a % (b % a)}", 14, None),
        ErrorKind::SiteTwice {
            site: "a".into(),
            op: '%',
            first_at: 5
        }
    );
    // The same site in two chains, or twice in an otherwise chain, is allowed.
    assert!(parse("{x: (a % b) & (a % c), y: a ; a}").is_ok());
    assert!(matches!(
        at(
            r#"{"image": "Paris", "image": "Nantes"}"#,
            21,
            Some("give each service one entry, combining its sites with '&', '%' or ';'")
        ),
        ErrorKind::ServiceTwice { .. }
    ));
}

#[test]
fn repeats_are_found_in_long_scopes_too() {
    let services: Vec<String> = (0..40).map(|i| format!("s{i}: a")).collect();
    let input = format!("{{{}, s7: b, s3: c}}", services.join(", "));
    let error = error(&input);
    let first_at = input.find("s7: a").unwrap() + 1;
    assert_eq!(
        error.kind,
        ErrorKind::ServiceTwice {
            service: "s7".into(),
            first_at
        }
    );
    assert_eq!(&input[error.span.start..error.span.end], "s7");
    assert_eq!(error.span.start, input.find("s7: b").unwrap());
}

#[test]
fn one_bare_entry_at_most() {
    assert_eq!(
        at(
            "{image: Paris, Lyon, compute Nantes}",
            22,
            Some("missing ':' after 'compute'?")
        ),
        ErrorKind::SecondBare { first_at: 16 }
    );
    assert_eq!(
        at("Lyon, Nantes & Paris", 7, None),
        ErrorKind::SecondBare { first_at: 1 }
    );
}

#[test]
fn empty_names() {
    assert_eq!(at("{x: \"\"}", 5, None), ErrorKind::EmptyName);
    assert_eq!(at("{\"\": a}", 2, None), ErrorKind::EmptyName);
    assert_eq!(at(r#"{"": "a"}"#, 3, None), ErrorKind::EmptyName);
    assert_eq!(
        at(r#"{"image": ""}"#, 12, None),
        expected("a site", "the end of the input")
    );
    assert_eq!(at("{: a}", 2, None), expected("an entry", "':'"));
    assert_eq!(at(r#"{"a\"b": "x"}"#, 3, None), ErrorKind::QuoteInName);
}

#[test]
fn unbalanced_brackets() {
    let unclosed = |open, close, opened_at| ErrorKind::Unclosed {
        open,
        close,
        opened_at,
    };
    assert_eq!(at("{image: Paris", 14, None), unclosed('{', '}', 1));
    assert_eq!(
        at("{image: (Paris & Nantes}", 24, None),
        unclosed('(', ')', 9)
    );
    assert_eq!(at("((((a", 6, None), unclosed('(', ')', 4));
    assert_eq!(at("x: around(a, 1ms", 17, None), unclosed('(', ')', 10));
    assert_eq!(at("{image: Paris)}", 14, None), ErrorKind::Unopened(')'));
    assert_eq!(at("{a: b}}", 7, None), ErrorKind::Unopened('}'));
    assert_eq!(at("a)", 2, None), ErrorKind::Unopened(')'));
    assert_eq!(at("{x: a \"b}", 7, None), ErrorKind::UnclosedQuote);
}

#[test]
fn bad_durations() {
    let bad = |text: &str| ErrorKind::BadDuration(text.to_owned());
    assert_eq!(
        at("{x: around(a, 10)}", 15, Some("add a unit: us, ms or s")),
        bad("10")
    );
    assert_eq!(
        at(
            "{x: around(a, ms)}",
            15,
            Some("a duration starts with a whole number, as in 10ms")
        ),
        bad("ms")
    );
    assert_eq!(
        at(
            "{x: around(a, 10 ms)}",
            15,
            Some("write the unit right after the number, as in 10ms")
        ),
        bad("10 ms")
    );
    assert_eq!(
        at(
            "{x: around(a, 1.5s)}",
            15,
            Some("durations are whole numbers: use a smaller unit, as in 1500ms")
        ),
        bad("1.5s")
    );
    assert_eq!(
        at(
            "{x: around(a, 10min)}",
            15,
            Some("the units are us, ms and s")
        ),
        bad("10min")
    );
    assert_eq!(
        at(
            "{x: around(a, \"10ms\")}",
            15,
            Some("write a duration without quotes")
        ),
        bad("10ms")
    );
    assert_eq!(
        at("{x: around(a, 99999999999999999999s)}", 15, None),
        ErrorKind::DurationTooLong("99999999999999999999s".into())
    );
    assert_eq!(
        at(
            "{x: around(a 10ms)}",
            18,
            Some("missing ',' before '10ms'?")
        ),
        expected("',' then a duration", "')'")
    );
    assert_eq!(
        at("{x: around(a, )}", 15, None),
        expected("a duration", "')'")
    );
}

#[test]
fn the_prime_names_one_site_of_every_cross() {
    assert_eq!(
        at(
            "{catalog: Paris % Nantes, prime: Lyon}",
            34,
            Some("the sites of that cross are Paris, Nantes")
        ),
        ErrorKind::PrimeNotInCross {
            prime: "Lyon".into(),
            cross: "Paris % Nantes".into()
        }
    );
    assert_eq!(
        at(
            "{catalog: Paris & Nantes, prime: Paris}",
            34,
            Some("a cross is written with '%', as in 'Paris % Nantes'")
        ),
        ErrorKind::PrimeWithoutCross
    );
    assert_eq!(
        at("{prime: a, c: a % b, prime: a}", 22, None),
        ErrorKind::PrimeTwice { first_at: 2 }
    );
    assert_eq!(
        at("{c: a % b, prime: a & b}", 19, None),
        expected("one site after 'prime:'", "'a & b'")
    );
    assert!(matches!(
        at(
            "{c: a % b, \"prime\": c}",
            21,
            Some("the sites of that cross are a, b")
        ),
        ErrorKind::PrimeNotInCross { .. }
    ));
}

#[test]
fn usual_mistakes_get_a_hint() {
    let cases = [
        ("{image = Paris}", 8, "entries are written 'service: location'"),
        ("{'image': 'Paris'}", 2, "quote names with '\"', as in \"Site #1\""),
        ("{x: [a & b]}", 5, "group with '(' and ')'"),
        ("{image: Site #1}", 14, "quote a name that holds '#': \"Site #1\""),
        ("{image: Paris && Nantes}", 16, "'&&' is written '&'"),
        ("{image: Paris %% Nantes}", 16, "'%%' is written '%'"),
        ("{image: Paris compute: Nantes}", 22, "missing ',' before 'compute'?"),
        (r#"{"a": "b" "c": "d"}"#, 11, "missing ',' or an operator before 'c'?"),
        ("{image/Paris}", 7, "the service/site form names one service and one site, as in 'image/Paris'; inside a scope write 'image: Paris'"),
        ("image/Paris & Nantes", 13, "the service/site form names one service and one site, as in 'image/Paris'; inside a scope write 'image: Paris'"),
        ("{x: {a}}", 5, "braces go only around the whole scope; group with '(' and ')'"),
        ("image: Paris,", 14, "a trailing ',' is allowed only inside braces"),
        ("", 1, "an empty scope is written '{}'"),
    ];
    for (input, column, hint) in cases {
        at(input, column, Some(hint));
    }
}

#[test]
fn errors_in_json_values_point_into_the_json_text() {
    // Column of the second '&' in the value, escapes before it included.
    assert_eq!(
        at(r#"{"image": "Paris &&"}"#, 19, Some("'&&' is written '&'")),
        expected("a site", "'&'")
    );
    assert_eq!(
        at(
            r#"{"image": "\u0050aris &&"}"#,
            24,
            Some("'&&' is written '&'")
        ),
        expected("a site", "'&'")
    );
    assert_eq!(
        at(r#"{"image": "a", "b": "x & x"}"#, 26, None),
        ErrorKind::SiteTwice {
            site: "x".into(),
            op: '&',
            first_at: 22
        }
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = "(".repeat(10_000) + "a" + &")".repeat(10_000);
    assert_eq!(
        at(&deep, MAX_NESTING + 1, None),
        ErrorKind::TooDeep(MAX_NESTING)
    );
    let in_json = format!("{{\"x\": \"{}\"}}", "(".repeat(10_000));
    assert_eq!(error(&in_json).kind, ErrorKind::TooDeep(MAX_NESTING));
    let just_enough = "(".repeat(MAX_NESTING) + "a" + &")".repeat(MAX_NESTING);
    assert_eq!(parse(&just_enough).unwrap().to_string(), "{a}");
}

#[test]
fn no_input_makes_the_parser_panic() {
    let pieces = [
        "{", "}", "(", ")", ":", ",", "/", "&", "%", ";", "|", "||", "\"", "a", "b c", "around",
        "1ms", "prime", "é", "\n", " ", "\\u0041", "#", "\u{0}",
    ];
    // Every sequence of three pieces, then longer ones built from them.
    for a in pieces {
        for b in pieces {
            for c in pieces {
                let input = format!("{a}{b}{c}");
                let _ = parse(&input)
                    .map(|scope| scope.to_string())
                    .map_err(|error| error.to_string());
                let json = format!("{{\"{a}\": \"{b}{c}\"}}");
                let _ = parse(&json).map_err(|error| error.to_string());
            }
        }
    }
}
