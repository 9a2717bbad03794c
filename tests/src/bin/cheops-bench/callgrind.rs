//! Where callgrind's instructions went, read from a dump written with
//! `--compress-strings=no --compress-pos=no`: each function's instructions of its own (its
//! cost lines, without the inclusive costs of the calls it makes), and the same summed by
//! crate. Read here rather than by `callgrind_annotate`, which credits a threaded program's
//! whole cost to the `clone` that started its threads.
use std::collections::HashMap;

/// (instructions per request, function or crate), largest first.
pub type Profile = Vec<(f64, String)>;

/// Instructions of their own, by function.
pub fn self_costs(dump: &str) -> HashMap<&str, u64> {
    let mut costs: HashMap<&str, u64> = HashMap::new();
    let mut function = "";
    let mut after_call = false;
    for line in dump.lines() {
        if let Some(name) = line.strip_prefix("fn=") {
            function = name;
        } else if line.starts_with("calls=") {
            // The next cost line is the call's, inclusive: the callee has it as its own.
            after_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            let cost = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
            if std::mem::take(&mut after_call) {
                continue;
            }
            *costs.entry(function).or_default() += cost.unwrap_or(0);
        }
    }
    costs
}

/// The crate a function belongs to (`hyper`, `tokio`, ..., `interceptor` for cheops); C
/// functions (the allocator, memcpy) and Rust's allocation shims are `libc`, the standard
/// library's crates are `std`.
pub fn crate_of(function: &str) -> &str {
    let path = function.trim_start_matches('<');
    match path.split_once("::") {
        None => "libc",
        Some(("__rustc", _)) => "libc",
        Some(("core" | "alloc" | "std", _)) => "std",
        Some((krate, _)) => krate,
    }
}

/// The `count` largest entries of `costs`, each divided by `requests`, largest first.
pub fn per_request<'a>(
    costs: impl IntoIterator<Item = (&'a str, u64)>,
    requests: u32,
    count: usize,
) -> Profile {
    let mut sorted: Vec<(u64, &str)> = costs.into_iter().map(|(name, c)| (c, name)).collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted
        .into_iter()
        .take(count)
        .map(|(cost, name)| (cost as f64 / f64::from(requests), name.to_owned()))
        .collect()
}

/// The same costs summed by crate.
pub fn by_crate<'a>(costs: &HashMap<&'a str, u64>) -> HashMap<&'a str, u64> {
    let mut crates: HashMap<&str, u64> = HashMap::new();
    for (&function, &cost) in costs {
        *crates.entry(crate_of(function)).or_default() += cost;
    }
    crates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_counts_for_the_callee_only() {
        let dump = "fn=outer\n10 5\ncfn=inner\ncalls=1 20\n11 100\n12 1\nfn=inner\n20 100\n";
        let costs = self_costs(dump);
        assert_eq!(costs["outer"], 6);
        assert_eq!(costs["inner"], 100);
    }

    #[test]
    fn crates_are_the_first_path_segment() {
        assert_eq!(
            crate_of("<hyper::proto::h1::role::Server as x::Y>::encode"),
            "hyper"
        );
        assert_eq!(crate_of("__memcpy_avx_unaligned_erms"), "libc");
        assert_eq!(crate_of("__rustc::__rust_alloc"), "libc");
        assert_eq!(crate_of("alloc::raw_vec::RawVec<T,A>::grow_one"), "std");
    }
}
