//! `cargo xtask bench [--quick]`: builds cheops and the benchmark's binaries (release), runs
//! the measurements (`cheops-bench`, in the tests crate, which starts and removes its own
//! namespace, cgroup, servers and rules) and the scope language's criterion benchmark, then
//! reports them: a table on the terminal, the raw
//! results and a summary as JSON under target/bench/, an SVG plot of the latency distributions,
//! and docs/benchmarks.md.
mod criterion;
mod plot;
mod summary;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{cargo, run, workspace};

pub fn bench(quick: bool) -> anyhow::Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "interceptor",
        "-p",
        "cheops-tests",
        "--bins",
    ])?;
    if !quick {
        wait_for_a_quiet_machine();
    }
    let root = workspace();
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let raw_path = out.join("results.json");
    let mut measure = Command::new(root.join("target/release/cheops-bench"));
    measure
        .env("CHEOPS_BIN", root.join("target/release/cheops"))
        .arg("--out")
        .arg(&raw_path);
    if quick {
        measure.arg("--quick");
    }
    let started = std::time::Instant::now();
    run(&mut measure)?;
    // The scope language, in the same run: criterion, with its serde_json baseline.
    let mut scope_bench = vec!["bench", "-p", "dsl", "--bench", "scope", "--", "--noplot"];
    if quick {
        scope_bench.push("--quick");
    }
    cargo(&scope_bench)?;
    let measured_in = started.elapsed();

    let mut raw: serde_json::Value = serde_json::from_str(&read(&raw_path)?)
        .with_context(|| format!("{} is not JSON", raw_path.display()))?;
    raw["scope_language"] = criterion::scope_language(&root.join("target/criterion"))?;
    write(&raw_path, &serde_json::to_string_pretty(&raw)?)?;
    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let summary = summary::Summary::from_results(&raw)?;
    println!("\n{}", summary.terminal_table());
    write(&out.join("summary.json"), &summary.json()?)?;
    let svg = plot::latency_distributions(&summary);
    write(&out.join("latency.svg"), &svg)?;
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs)?;
    write(&docs.join("benchmarks-latency.svg"), &svg)?;
    write(
        &docs.join("benchmarks.md"),
        &summary.markdown(&raw, command, "benchmarks-latency.svg"),
    )?;
    println!(
        "measured in {:.0} s; wrote target/bench/results.json (raw), target/bench/summary.json, \
         target/bench/latency.svg, docs/benchmarks.md and docs/benchmarks-latency.svg",
        measured_in.as_secs_f64()
    );
    Ok(())
}

/// The 1-minute load average under which the machine counts as quiet, and the longest wait for
/// it: the build just before leaves the load near 2 on 2 cores, which takes about 80 s to fall
/// under 0.5 once the cores are free. Busy with other work past that, the run goes on, and the
/// report shows the load it started with.
const QUIET_LOAD: f64 = 0.5;
const LONGEST_WAIT: Duration = Duration::from_secs(180);

fn wait_for_a_quiet_machine() {
    let started = Instant::now();
    let load = || -> Option<f64> {
        let text = std::fs::read_to_string("/proc/loadavg").ok()?;
        text.split_whitespace().next()?.parse().ok()
    };
    while load().is_some_and(|l| l > QUIET_LOAD) && started.elapsed() < LONGEST_WAIT {
        std::thread::sleep(Duration::from_secs(5));
    }
    println!(
        "waited {:.0} s for the machine to settle: load average {} (1 min)",
        started.elapsed().as_secs_f64(),
        load().map_or("unknown".into(), |l| l.to_string())
    );
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
