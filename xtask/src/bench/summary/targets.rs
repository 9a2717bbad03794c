//! The targets (issue 14, the data plane), each with what was measured and whether it
//! is met; a target whose measurement is missing says so rather than pass.
use super::{times, Summary, CHEOPS, PEERS};

/// One target: what it asks, what was measured, its status.
pub struct Target {
    pub target: String,
    pub measured: String,
    pub status: String,
}

fn verdict(met: Option<bool>) -> String {
    match met {
        Some(true) => "met",
        Some(false) => "not met",
        None => "n/a (noise: some path added nothing measurable)",
    }
    .to_owned()
}

impl Summary {
    /// The worst of cheops's ratios to nginx and HAProxy at `index` of `ratios` (the largest
    /// when lower is better, the smallest otherwise); `None` unless both exist.
    fn worst(&self, index: usize, lower_is_better: bool) -> Option<f64> {
        let all: Option<Vec<f64>> = PEERS
            .iter()
            .map(|peer| self.ratios(peer).and_then(|r| r[index]))
            .collect();
        let pick = if lower_is_better { f64::max } else { f64::min };
        all.and_then(|all| all.into_iter().reduce(pick))
    }

    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let mut add = |target: &str, measured: String, status: String| {
            targets.push(Target {
                target: target.to_owned(),
                measured,
                status,
            })
        };
        let cpu = self.worst(3, true);
        add(
            "proxy CPU per request at 1,000 req/s <= 0.8x nginx's and HAProxy's",
            times(cpu),
            verdict(cpu.map(|v| v <= 0.8)),
        );
        let per_cpu_second = self.worst(2, false);
        add(
            "requests per proxy CPU-second >= 1.25x nginx's and HAProxy's",
            times(per_cpu_second),
            verdict(per_cpu_second.map(|v| v >= 1.25)),
        );
        for (index, percentile) in [(0, "p50"), (1, "p99")] {
            let value = self.worst(index, true);
            add(
                &format!(
                    "latency cheops adds at {percentile} (1,000 req/s, median of the interleaved \
                     rounds) <= 0.8x what nginx and HAProxy add"
                ),
                times(value),
                verdict(value.map(|v| v <= 0.8)),
            );
        }
        let instructions = self.instruction_ratio();
        add(
            "instructions per request (callgrind, cheops NAT): against the leaner of nginx and \
             HAProxy, for reference",
            times(instructions),
            "counted, no target".to_owned(),
        );
        let added = [self.idle_targets(), self.grpc_targets()];
        for (target, measured, met) in self.body_targets().into_iter().chain(added.concat()) {
            add(&target, measured, verdict(met));
        }
        let memory = self
            .find(CHEOPS)
            .and_then(|c| c.proxy.as_ref())
            .map(|p| p.rss_mib);
        add(
            "cheops resident memory < 20 MiB at 1,000 req/s",
            memory.map_or("n/a".to_owned(), |m| format!("{m:.1} MiB")),
            verdict(memory.map(|m| m < 20.0)),
        );
        let sixteen = self.across.iter().find(|a| a.sites == 16);
        add(
            "replicated create over 16 sites <= 1.2x one round trip",
            sixteen.map_or("not measured".to_owned(), |a| {
                times(Some(a.round_trips(a.create[0])))
            }),
            match sixteen {
                Some(a) => verdict(Some(a.round_trips(a.create[0]) <= 1.2)),
                None => "not measured (the quick run stops at 4 sites)".to_owned(),
            },
        );
        let scope = self.scope_language;
        add(
            "scope-lang parse + resolve < 1 µs (criterion, `cargo bench -p dsl`)",
            scope.map_or("not measured".to_owned(), |[ns, baseline]| {
                format!("{ns:.0} ns (serde_json map of the same entries: {baseline:.0} ns)")
            }),
            verdict(scope.map(|[ns, _]| ns < 1000.0)),
        );
        targets
    }

    /// cheops's instructions per request over the larger of nginx's and HAProxy's.
    pub fn instruction_ratio(&self) -> Option<f64> {
        let of = |name: &str| {
            self.costs
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.instructions)
        };
        let cheops = of("cheops-nat")?;
        let peers: Option<Vec<f64>> = PEERS.iter().map(|p| of(p)).collect();
        let best_peer = peers?.into_iter().reduce(f64::min)?;
        (best_peer > 0.0).then(|| cheops / best_peer)
    }
}
