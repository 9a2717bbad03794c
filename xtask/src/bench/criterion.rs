//! The scope language's cost, measured by criterion in the same `cargo xtask bench` run
//! (`cargo bench -p dsl`): the median time of each benchmark, read from target/criterion,
//! with parse + resolve of a typical scope beside the serde_json baseline of the same run.
use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

/// The benchmark the target is about, and its baseline (dsl/benches/scope.rs).
const PARSE_AND_RESOLVE: &str = "parse and resolve";
const BASELINE: &str = "baseline: serde_json map of the same entries";

/// `{"medians_ns": {id: ns}, "parse_and_resolve_ns", "baseline_ns"}` from criterion's last
/// results in `dir`.
pub fn scope_language(dir: &Path) -> anyhow::Result<Value> {
    let mut medians = serde_json::Map::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let new = entry?.path().join("new");
        let (Ok(benchmark), Ok(estimates)) = (
            read(&new.join("benchmark.json")),
            read(&new.join("estimates.json")),
        ) else {
            continue;
        };
        if let (Some(id), Some(median)) = (
            benchmark["full_id"].as_str(),
            estimates["median"]["point_estimate"].as_f64(),
        ) {
            medians.insert(id.to_owned(), json!(median));
        }
    }
    let parse_and_resolve = medians.get(PARSE_AND_RESOLVE).cloned();
    let baseline = medians.get(BASELINE).cloned();
    Ok(json!({
        "medians_ns": medians,
        "parse_and_resolve_ns": parse_and_resolve,
        "baseline_ns": baseline,
    }))
}

fn read(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)?;
    Ok(serde_json::from_str(&text)?)
}
