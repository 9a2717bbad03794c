//! Any text: the parser never panics; what it reads prints in a canonical form that reads
//! back as the same scope and prints the same; what it refuses shows as an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match dsl::parse(text) {
        Ok(scope) => {
            let printed = scope.to_string();
            let again = dsl::parse(&printed)
                .unwrap_or_else(|error| panic!("canonical form {printed:?} refused:\n{error}"));
            assert_eq!(again, scope, "{printed:?} reads back differently");
            assert_eq!(again.to_string(), printed, "printing is not stable");
            let _ = scope
                .check_sites(|site| site.len() % 2 == 0)
                .map_err(|e| e.to_string());
            let tables = dsl::RoundTripTable::default();
            let service = scope.sites().first().map_or("x", |site| *site).to_owned();
            let _ = dsl::resolve(&scope, &service, "here", &tables);
            let _ = dsl::explain(&scope, None, None, &tables).to_string();
            let _ = scope.consume(&service).to_string();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
