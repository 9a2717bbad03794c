//! Added latency, measured again in short interleaved rounds. Each path's long run comes at
//! its own time, so a burst of other work on the machine can land on one path's run alone
//! (the last full run's direct p99 was 2.8 ms, the proxies' 0.4 ms). After the long runs,
//! every path runs again for a few seconds, round after round, in an order that rotates; the
//! report compares what each path adds over direct in the same round, and takes the median.
use anyhow::{ensure, Context};

use super::{Plan, Stage, INTERRUPTED, SCENARIOS};

impl Stage {
    /// `plan.latency_rounds` rounds of every scenario at the fixed rate; for each scenario, in
    /// `SCENARIOS`'s order, its (p50, p99) in µs in each round.
    pub fn latency_rounds(&self, plan: &Plan) -> anyhow::Result<Vec<Vec<[f64; 2]>>> {
        let mut rounds = vec![Vec::new(); SCENARIOS.len()];
        for round in 0..plan.latency_rounds {
            eprintln!(
                "bench: latency round {} of {}, every path",
                round + 1,
                plan.latency_rounds
            );
            for offset in 0..SCENARIOS.len() {
                ensure!(
                    !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst),
                    "interrupted (Ctrl-C)"
                );
                let index = (round + offset) % SCENARIOS.len();
                let scenario = &SCENARIOS[index];
                let serving = self.serve(scenario)?;
                let (report, _) =
                    self.at_rate(serving.server.as_ref(), plan, plan.round_seconds)?;
                let percentile = |key: &str| {
                    report["latency_us"][key]
                        .as_f64()
                        .with_context(|| format!("{}: no latency {key}", scenario.name))
                };
                rounds[index].push([percentile("p50")?, percentile("p99")?]);
            }
        }
        Ok(rounds)
    }
}
