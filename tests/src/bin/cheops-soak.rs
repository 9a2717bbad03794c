//! `cargo xtask soak [--minutes N] [--seed S]`: the soak of `cheops_tests::soak`, its summary
//! printed; exits non-zero when anything acknowledged was lost, applied twice, answered from a
//! wrong site, or a log holds a panic or error the faults do not explain.
use std::time::Duration;

use clap::Parser;

use cheops_tests::soak::{self, SoakSettings};

#[derive(Parser)]
struct Args {
    /// How long the clients send requests.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// The seed of the fault schedule and of the clients' mixes.
    #[arg(long, default_value_t = 15)]
    seed: u64,
    /// Concurrent clients (spread over the sites).
    #[arg(long, default_value_t = 6)]
    clients: usize,
}

fn main() {
    let args = Args::parse();
    let settings = SoakSettings {
        duration: Duration::from_secs(args.minutes * 60),
        seed: args.seed,
        clients: args.clients,
    };
    let summary = soak::run(&settings);
    println!("{summary}");
    if !summary.failures().is_empty() {
        std::process::exit(1);
    }
}
