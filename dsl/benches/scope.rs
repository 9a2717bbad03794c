//! The cost of reading a typical scope (three services, five sites) and planning one call,
//! against the baseline of reading the same entries as a plain JSON map with serde_json.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use dsl::{parse, resolve, RoundTripTable};

const SCOPE: &str =
    "{compute: Nantes, image: Paris & Nantes & Lyon, catalog: around(Rennes, 10ms) ; Brest}";
const AS_JSON: &str = r#"{"compute": "Nantes", "image": "Paris & Nantes & Lyon", "catalog": "around(Rennes, 10ms) ; Brest"}"#;

fn round_trips() -> RoundTripTable {
    let sites = ["Paris", "Nantes", "Lyon", "Rennes", "Brest"];
    let mut table = RoundTripTable::default();
    for (i, from) in sites.iter().enumerate() {
        for (j, to) in sites.iter().enumerate().skip(i + 1) {
            table.insert(from, to, Duration::from_millis(3 * (i + j) as u64));
        }
    }
    table
}

fn scope(c: &mut Criterion) {
    let table = round_trips();
    let parsed = parse(SCOPE).unwrap();
    c.bench_function("baseline: serde_json map of the same entries", |b| {
        b.iter(|| serde_json::from_str::<HashMap<String, String>>(black_box(AS_JSON)).unwrap())
    });
    c.bench_function("parse", |b| b.iter(|| parse(black_box(SCOPE)).unwrap()));
    c.bench_function("parse the JSON format", |b| {
        b.iter(|| parse(black_box(AS_JSON)).unwrap())
    });
    c.bench_function("resolve around", |b| {
        b.iter(|| resolve(black_box(&parsed), "catalog", "Paris", &table))
    });
    c.bench_function("resolve replication", |b| {
        b.iter(|| resolve(black_box(&parsed), "image", "Paris", &table))
    });
    c.bench_function("parse and resolve", |b| {
        b.iter(|| {
            let scope = parse(black_box(SCOPE)).unwrap();
            resolve(&scope, "catalog", "Paris", &table)
        })
    });
}

criterion_group!(benches, scope);
criterion_main!(benches);
