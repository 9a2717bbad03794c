//! Any text: the parser never panics; what it reads prints in a canonical form that reads
//! back as the same scope and prints the same; what it refuses points at a place in the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// An error's span is a slice of its input, and it shows.
fn points_into(error: &dsl::ScopeError, text: &str) {
    let dsl::Span { start, end } = error.span;
    assert!(
        start <= end && end <= text.len(),
        "span {start}..{end} of {text:?}"
    );
    assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
    let _ = error.to_string();
}

fuzz_target!(|text: &str| {
    match dsl::parse(text) {
        Ok(scope) => {
            let printed = scope.to_string();
            let again = dsl::parse(&printed)
                .unwrap_or_else(|error| panic!("canonical form {printed:?} refused:\n{error}"));
            assert_eq!(again, scope, "{printed:?} reads back differently");
            assert_eq!(again.to_string(), printed, "printing is not stable");
            if let Err(error) = scope.check_sites(|site| site.len() % 2 == 0) {
                points_into(&error, text);
            }
            let round_trips = dsl::RoundTripTable::default();
            let service = scope.sites().first().map_or("x", |site| *site).to_owned();
            let _ = dsl::resolve(&scope, &service, "here", &round_trips);
            let _ = dsl::explain(&scope, None, None, &round_trips).to_string();
            let downstream = scope.consume(&service).to_string();
            assert!(
                dsl::parse(&downstream).is_ok(),
                "{downstream:?} does not read"
            );
        }
        Err(error) => points_into(&error, text),
    }
});
