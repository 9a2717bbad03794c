//! The CI-sized soak, as root: three sites under six clients for 150 s beside a fixed seed's
//! faults (every kind at least once), then healed and checked: nothing acknowledged lost or
//! applied twice, nothing from a wrong site, no unexplained panic or error in the logs. Its
//! summary is printed (`--nocapture` shows it).
use std::time::Duration;

use cheops_tests::{
    require_root,
    soak::{self, SoakSettings},
};

/// The seed of the CI run: the schedule it gives is in docs/reliability.md.
const SEED: u64 = 15;

#[test]
fn a_ci_sized_soak_loses_nothing_and_applies_nothing_twice() {
    require_root();
    let settings = SoakSettings {
        duration: Duration::from_secs(150),
        seed: SEED,
        clients: 6,
    };
    let summary = soak::run(&settings);
    println!("{summary}");
    assert_eq!(summary.faults.len(), 6, "every kind of fault: {summary}");
    assert!(summary.failures().is_empty(), "{summary}");
}
