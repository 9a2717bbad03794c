//! Generated trees print to text that reads back as the same tree, and printing is stable;
//! generated text either reads and prints stably, or fails with an error.

use std::collections::HashSet;
use std::time::Duration;

use dsl::{parse, Entry, LocExpr, Name, Op, Site};
use proptest::prelude::*;
use proptest::sample::Index;

/// Names of every kind the printer must handle: bare words, words with spaces, and any text
/// a quoted name may hold.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{1,8}",
        "[A-Za-z]{1,5}( [A-Za-z0-9]{1,5}){1,2}",
        "[^\"]{1,8}",
    ]
}

fn site(text: String) -> Site {
    Site::new(Name::new(text).expect("generated names hold no '\"'"))
}

fn location() -> impl Strategy<Value = LocExpr> {
    let unit = prop_oneof![Just(1u64), Just(1_000), Just(1_000_000)];
    let leaf = prop_oneof![
        4 => name().prop_map(|text| LocExpr::Site(site(text))),
        1 => (name(), 0u64..5_000, unit).prop_map(|(text, count, unit)| LocExpr::Around {
            site: site(text),
            within: Duration::from_micros(count * unit),
        }),
    ];
    leaf.prop_recursive(4, 32, 4, |part| {
        let op = prop_oneof![Just(Op::Otherwise), Just(Op::Replicate), Just(Op::Cross)];
        (op, prop::collection::vec(part, 2..5)).prop_map(|(op, parts)| LocExpr::chain(op, parts))
    })
}

/// Gives every site written a name of its own, so that no chain names a site twice.
fn rename_apart(location: &mut LocExpr, taken: &mut HashSet<String>) {
    match location {
        LocExpr::Site(site) | LocExpr::Around { site, .. } => {
            let mut text = site.name.as_str().to_owned();
            while !taken.insert(text.clone()) {
                text.push('_');
            }
            *site = self::site(text);
        }
        LocExpr::Chain(_, parts) => parts.iter_mut().for_each(|part| rename_apart(part, taken)),
    }
}

fn crosses(location: &LocExpr, found: &mut Vec<LocExpr>) {
    if let LocExpr::Chain(op, parts) = location {
        if *op == Op::Cross {
            found.push(location.clone());
        }
        parts.iter().for_each(|part| crosses(part, found));
    }
}

fn cross_sites(location: &LocExpr, found: &mut Vec<Site>) {
    match location {
        LocExpr::Site(site) | LocExpr::Around { site, .. } => found.push(site.clone()),
        LocExpr::Chain(_, parts) => parts.iter().for_each(|part| cross_sites(part, found)),
    }
}

/// Valid entries: services named once (never `prime`), one bare entry at most, and a prime
/// only where a single cross holds it.
fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let services = prop::collection::vec((name(), location()), 0..4);
    let bare = prop::option::of(location());
    (
        services,
        bare,
        any::<Index>(),
        any::<Option<(Index, Index)>>(),
    )
        .prop_map(|(services, bare, bare_at, prime)| {
            let mut names = HashSet::new();
            let mut entries: Vec<Entry> = services
                .into_iter()
                .filter(|(service, _)| service != "prime" && names.insert(service.clone()))
                .map(|(service, location)| Entry::Service {
                    service: Name::new(service).unwrap(),
                    location,
                })
                .collect();
            if let Some(location) = bare {
                entries.insert(bare_at.index(entries.len() + 1), Entry::Bare(location));
            }
            let mut taken = HashSet::new();
            let mut found = Vec::new();
            for entry in &mut entries {
                if let Entry::Service { location, .. } | Entry::Bare(location) = entry {
                    rename_apart(location, &mut taken);
                    crosses(location, &mut found);
                }
            }
            if let (Some((pick, at)), [cross]) = (prime, found.as_slice()) {
                let mut sites = Vec::new();
                cross_sites(cross, &mut sites);
                let prime = sites[pick.index(sites.len())].clone();
                entries.insert(at.index(entries.len() + 1), Entry::Prime(prime));
            }
            entries
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_printed_tree_reads_back_as_the_same_tree(entries in entries()) {
        let printed = dsl::Scope::new(entries.clone())
            .map_err(|error| TestCaseError::fail(format!("{error}")))?;
        prop_assert_eq!(printed.entries(), &entries[..]);
        let text = printed.to_string();
        let again = parse(&text).map_err(|error| TestCaseError::fail(format!("{error}")))?;
        prop_assert_eq!(&again, &printed);
        prop_assert_eq!(again.to_string(), text);
    }

    #[test]
    fn any_text_reads_and_prints_stably_or_fails_cleanly(
        text in r#"[a-c &%;|(),:{}"/#0-9\n\\é]{0,40}|\{("[a-c &%;|/#\\]{0,6}": "[a-c &%;|()/#\\]{0,10}",? ?){0,3}\}"#
    ) {
        match parse(&text) {
            Ok(scope) => {
                let printed = scope.to_string();
                let again = parse(&printed).map_err(|error| TestCaseError::fail(format!("{printed}: {error}")))?;
                prop_assert_eq!(&again, &scope);
                prop_assert_eq!(again.to_string(), printed);
            }
            Err(error) => {
                let (start, end) = (error.span.start, error.span.end);
                prop_assert!(start <= end && end <= text.len());
                prop_assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
                let heading = format!("column {}: ", error.column());
                prop_assert!(error.to_string().starts_with(&heading));
            }
        }
    }
}
