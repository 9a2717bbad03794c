//! `cargo xtask`: what cargo alone cannot do for Cheops. Every command first makes sure the
//! toolchain is there (scripts/setup-toolchain.sh, a no-op once done), so each one works on a
//! fresh machine.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

mod bench;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building needs (Debian packages, bpf-linker, json-server), if missing.
    Setup,
    /// Build the eBPF object and the whole workspace.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Check formatting and lints, then run every test, the privileged ones included (root).
    Test {
        /// Arguments passed to `cargo test` after `--` (a test name filter, `--nocapture`, ...).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build cheops's container image (interceptor/Containerfile) with podman, as
    /// `localhost/cheops:latest`, from the debug or release binary (root).
    Image {
        #[arg(long)]
        release: bool,
    },
    /// Run the multi-site demo on this machine (root).
    Demo {
        /// Add OpenStack: Keystone and Glance at two sites, driven by the `openstack` client
        /// (about two more minutes).
        #[arg(long)]
        openstack: bool,
    },
    /// Faults under load (root): three sites, clients for the whole run, a seeded schedule
    /// of faults, then a check that nothing acknowledged was lost or applied twice.
    Soak {
        #[arg(long, default_value_t = 5)]
        minutes: u64,
        #[arg(long, default_value_t = 15)]
        seed: u64,
    },
    /// Measure what interception costs against the direct path, HAProxy and nginx (root), and
    /// write docs/benchmarks.md.
    Bench {
        /// A reduced run (under 90 s once built), to check the harness.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup(),
        Task::Build { release } => {
            setup()?;
            build(release)
        }
        Task::Test { args } => {
            setup()?;
            test(&args)
        }
        Task::Bench { quick } => {
            setup()?;
            bench::bench(quick)
        }
        Task::Image { release } => {
            setup()?;
            let mut args = vec!["build", "-p", "interceptor"];
            if release {
                args.push("--release");
            }
            cargo(&args)?;
            let profile = if release { "release" } else { "debug" };
            let binary = workspace().join("target").join(profile).join("cheops");
            xtask::image::build(&workspace(), &binary, IMAGE)?;
            println!("built {IMAGE} from {}", binary.display());
            Ok(())
        }
        Task::Soak { minutes, seed } => {
            setup()?;
            build(false)?;
            let (minutes, seed) = (minutes.to_string(), seed.to_string());
            cargo(&[
                "run",
                "--quiet",
                "-p",
                "cheops-tests",
                "--bin",
                "cheops-soak",
                "--",
                "--minutes",
                &minutes,
                "--seed",
                &seed,
            ])
        }
        Task::Demo { openstack } => {
            setup()?;
            build(false)?;
            let mut args = vec![
                "run",
                "--quiet",
                "-p",
                "cheops-tests",
                "--bin",
                "cheops-demo",
            ];
            if openstack {
                args.extend(["--", "--openstack"]);
            }
            cargo(&args)
        }
    }
}

/// The image `cargo xtask image` builds.
const IMAGE: &str = "localhost/cheops:latest";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn setup() -> anyhow::Result<()> {
    run(Command::new("bash").arg(workspace().join("scripts/setup-toolchain.sh")))
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut args = vec!["build", "--workspace", "--all-targets"];
    if release {
        args.push("--release");
    }
    cargo(&args)
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The end-to-end tests run the `cheops` binary: build it first.
    build(false)?;
    let mut args = vec!["test", "--workspace", "--"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace())
            .args(args),
    )
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
