//! `cheops`: the Cheops node daemon and its command line; the verbs live in the library.
use std::{ffi::OsString, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use interceptor::{admin::client::Endpoint, app, cli, config::DEFAULT_CONTROL_SOCKET, tls};

#[derive(Parser)]
#[command(
    name = "cheops",
    version,
    about = "Cheops: a service mesh that makes edge sites collaborate, intercepting in the kernel with eBPF"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node daemon: load the kernel programs, attach them to the workload cgroups, proxy.
    Agent {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check that this node can run the agent, and say what is missing.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show a running agent's status (from its admin endpoint).
    Status {
        /// The agent's read-only admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Ask through the agent's control socket instead (root or `admin.control_group`).
        #[arg(long)]
        control: Option<PathBuf>,
        /// Print the JSON the agent gives.
        #[arg(long)]
        json: bool,
    },
    /// List this site's replicants and cross resources, and each replica's state.
    Replicas {
        /// The agent's read-only admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Ask through the agent's control socket instead (root or `admin.control_group`).
        #[arg(long)]
        control: Option<PathBuf>,
        /// Print the JSON the agent gives.
        #[arg(long)]
        json: bool,
    },
    /// Generate a CA and a certificate and key for each site; or, with `--ca` and `--ca-key`,
    /// only the sites' certificates, signed by an existing CA (adding a site keeps the CA).
    Certs {
        /// The directory to write `ca.pem`, `ca.key`, `<site>.pem` and `<site>.key` into.
        #[arg(long)]
        out: PathBuf,
        /// The sites, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        sites: Vec<String>,
        /// The existing CA's certificate.
        #[arg(long, requires = "ca_key")]
        ca: Option<PathBuf>,
        /// The existing CA's key (`ca.key` where `cheops certs` made the CA).
        #[arg(long, requires = "ca")]
        ca_key: Option<PathBuf>,
        /// How long the site certificates are valid, e.g. `90d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        valid_for: Option<std::time::Duration>,
    },
    /// Run an unmodified command whose requests all carry a scope (through a transient
    /// workload cgroup registered with the local agent).
    Exec {
        /// The scope of every request the command makes.
        #[arg(long)]
        scope: String,
        /// The agent's control socket (root or `admin.control_group` only).
        #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
        control: PathBuf,
        /// The workload cgroup to run under (default: the agent's first).
        #[arg(long)]
        workload: Option<PathBuf>,
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Have a running agent apply its configuration file again (as SIGHUP does): peers,
    /// services, workloads, carriers and policies change live; a file that is invalid or
    /// changes what needs a restart is refused, and the running configuration stays.
    Reload {
        /// The agent's control socket (root or `admin.control_group` only).
        #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
        control: PathBuf,
    },
    /// Work with scope-lang expressions (no privileges needed).
    #[command(subcommand)]
    Scope(cli::scope::ScopeCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scope(command) => command.run(),
        Command::Check { config } => {
            if cli::check::report(&cli::check::run(config.as_deref())) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Agent { config } => report_error(app::run_agent(&config)),
        Command::Reload { control } => report_error(
            interceptor::admin::client::reload(&Endpoint::Control(control)).map(|generation| {
                println!("configuration reloaded: generation {generation}");
            }),
        ),
        Command::Status {
            admin,
            control,
            json,
        } => report_error(cli::status::run(&endpoint(admin, control), json)),
        Command::Replicas {
            admin,
            control,
            json,
        } => report_error(cli::replicas::run(&endpoint(admin, control), json)),
        Command::Certs {
            out,
            sites,
            ca,
            ca_key,
            valid_for,
        } => report_error({
            let validity = valid_for.map(tls::Validity::from_now);
            match ca.zip(ca_key) {
                Some((ca, ca_key)) => tls::issue(&out, &ca, &ca_key, &sites, validity),
                None => tls::generate(&out, &sites, validity),
            }
            .map(|written| {
                for path in written {
                    println!("{}", path.display());
                }
            })
            .map_err(Into::into)
        }),
        Command::Exec {
            scope,
            control,
            workload,
            command,
        } => match cli::exec::run(
            &Endpoint::Control(control),
            &scope,
            workload.as_deref(),
            &command,
        ) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("cheops exec: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The control socket when asked for, else the read-only TCP endpoint.
fn endpoint(admin: SocketAddr, control: Option<PathBuf>) -> Endpoint {
    control.map_or(Endpoint::Tcp(admin), Endpoint::Control)
}

fn report_error(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cheops: {err:#}");
            ExitCode::FAILURE
        }
    }
}
