//! `cheops`: the Cheops node daemon and its command line.
//! Read top to bottom, the request path is: loader (kernel programs) -> proxy -> local instance.
mod admin;
mod cgroup;
mod check;
mod config;
mod loader;
mod nat_redirect;
mod proxy;
mod scope_command;

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::InterceptionMode;

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
        /// The agent's admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Print the JSON the agent gives.
        #[arg(long)]
        json: bool,
    },
    /// Work with scope-lang expressions (no privileges needed).
    #[command(subcommand)]
    Scope(scope_command::ScopeCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scope(command) => command.run(),
        Command::Check { config } => {
            if check::report(&check::run(config.as_deref())) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Agent { config } => report_error(agent(config)),
        Command::Status { admin, json } => report_error(status(admin, json)),
    }
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

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn agent(config_path: PathBuf) -> anyhow::Result<()> {
    init_logs();
    let config = config::Config::load(&config_path)?;
    let mount = cgroup::cgroup2_mount()?;
    let cgroups = config
        .workloads
        .iter()
        .map(|w| cgroup::workload_dir(&mount, &w.cgroup))
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let port = config.proxy.port;
        let listeners = bind_proxy(port).await?;
        let (destinations, interception): (Arc<dyn proxy::OriginalDestinations>, _) =
            match config.proxy.interception {
                InterceptionMode::Ebpf => {
                    let interception = Arc::new(
                        loader::Interception::start(
                            config.services.iter().map(|s| s.address),
                            &cgroups,
                            port,
                        )
                        .context("setting up kernel interception")?,
                    );
                    (interception.clone(), Some(interception))
                }
                InterceptionMode::Nat => (Arc::new(nat_redirect::NatRedirect), None),
            };
        let proxy = Arc::new(proxy::Proxy::new(
            config.site.clone(),
            config.services.clone(),
            config.proxy.clone(),
            destinations,
        ));
        let admin_address = SocketAddr::from((Ipv4Addr::LOCALHOST, config.admin.port));
        admin::Admin {
            site: config.site.clone(),
            proxy: proxy.clone(),
            interception: interception.clone(),
        }
        .spawn(admin_address)
        .with_context(|| format!("binding the admin endpoint {admin_address}"))?;
        for listener in listeners {
            tokio::spawn(proxy.clone().serve(listener));
        }
        info!(
            site = %config.site,
            services = config.services.len(),
            workloads = cgroups.len(),
            interception = ?config.proxy.interception,
            proxy_port = port,
            admin = %admin_address,
            "cheops agent ready"
        );
        shutdown_signal().await;
        info!("shutting down: connections to services pass untouched from now on");
        if let Some(interception) = interception {
            interception.stop_redirecting();
        }
        Ok(())
    })
}

/// The proxy listens on loopback only: on 127.0.0.1 always, on ::1 when IPv6 is up.
async fn bind_proxy(port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut listeners = vec![TcpListener::bind(v4).await.with_context(|| {
        format!("binding the proxy to {v4} (is another cheops running? see `proxy.port`)")
    })?];
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match TcpListener::bind(v6).await {
        Ok(listener) => listeners.push(listener),
        Err(err) => warn!("IPv6 connections will not be intercepted: binding {v6} failed: {err}"),
    }
    Ok(listeners)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn status(admin: SocketAddr, json: bool) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).with_context(|| {
        format!("no cheops agent answers at {admin} (is it running? see `admin.port`)")
    })?;
    write!(stream, "GET /status HTTP/1.0\r\nHost: {admin}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let status: serde_json::Value =
        serde_json::from_str(body).context("the agent's status is not JSON")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!("site         {}", status["site"].as_str().unwrap_or("?"));
    if status["kernel"].is_null() {
        println!("kernel       no eBPF programs (NAT interception)");
    } else {
        println!(
            "kernel       redirected {}  passed through {}  failed open {}",
            status["kernel"]["redirected"],
            status["kernel"]["passed_through"],
            status["kernel"]["failed_open"]
        );
    }
    println!(
        "proxy        connections {}  HTTP requests {}  upstream errors {}  TCP relays {}",
        status["proxy"]["connections"],
        status["proxy"]["http_requests"],
        status["proxy"]["upstream_errors"],
        status["proxy"]["tcp_relays"]
    );
    Ok(())
}
