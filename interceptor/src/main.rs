//! `cheops`: the Cheops node daemon and its command line.
//! Read top to bottom, the request path is: loader (kernel programs) -> proxy -> carriers
//! (the scope) -> collaborate (the sites to try) -> local instance or peer.
mod admin;
mod carriers;
mod cgroup;
mod check;
mod collaborate;
mod config;
mod exchange;
mod exec;
mod identity;
mod loader;
mod metrics;
mod nat_redirect;
mod peer;
mod peer_sites;
mod proxy;
mod replicate;
mod replicator;
mod resources;
mod scope_command;
mod store;
mod tls;
mod token_scopes;
mod workload_scopes;

use std::{
    ffi::OsString,
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
    /// List this site's replicants and cross resources, and each replica's state.
    Replicas {
        /// The agent's admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// Print the JSON the agent gives.
        #[arg(long)]
        json: bool,
    },
    /// Generate a test CA and a certificate and key for each site (for demos and tests).
    Certs {
        /// The directory to write `ca.pem`, `<site>.pem` and `<site>.key` into.
        #[arg(long)]
        out: PathBuf,
        /// The sites, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        sites: Vec<String>,
    },
    /// Run an unmodified command whose requests all carry a scope (through a transient
    /// workload cgroup registered with the local agent).
    Exec {
        /// The scope of every request the command makes.
        #[arg(long)]
        scope: String,
        /// The agent's admin address.
        #[arg(long, default_value = "127.0.0.1:15000")]
        admin: SocketAddr,
        /// The workload cgroup to run under (default: the agent's first).
        #[arg(long)]
        workload: Option<PathBuf>,
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
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
        Command::Replicas { admin, json } => report_error(replicas(admin, json)),
        Command::Certs { out, sites } => report_error(
            tls::generate(&out, &sites)
                .map(|written| {
                    for path in written {
                        println!("{}", path.display());
                    }
                })
                .map_err(Into::into),
        ),
        Command::Exec {
            scope,
            admin,
            workload,
            command,
        } => match exec::run(admin, &scope, workload.as_deref(), &command) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("cheops exec: {err:#}");
                ExitCode::FAILURE
            }
        },
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
    let workload_scopes = Arc::new(workload_scopes::WorkloadScopes::new(
        cgroups
            .iter()
            .zip(&config.workloads)
            .map(|(dir, workload)| {
                let scope = workload
                    .default_scope
                    .as_deref()
                    .map(|text| config.check_scope(text))
                    .transpose()?;
                Ok((dir.clone(), scope))
            })
            .collect::<Result<Vec<_>, dsl::ScopeError>>()?,
    )?);
    let tls = config
        .tls
        .as_ref()
        .map(tls::load)
        .transpose()
        .context("loading this site's TLS credentials")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let port = config.proxy.port;
        let listeners = bind_proxy(port).await?;
        let peers = Arc::new(peer::Peers::new(
            config.site.clone(),
            &config.peers,
            tls.as_ref(),
            config.peer_api.clone(),
        )?);
        let peer_api = match (config.peer_api.listen, &tls) {
            (Some(address), Some(tls)) => Some((
                TcpListener::bind(address).await.with_context(|| {
                    format!("binding the peer API to {address} (see `peer_api.listen`)")
                })?,
                tokio_rustls::TlsAcceptor::from(tls.server.clone()),
            )),
            _ => None,
        };
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
        let proxy_counters = Arc::new(proxy::ProxyCounters::default());
        let metrics = Arc::new(metrics::Metrics::new(
            interception.clone(),
            proxy_counters.clone(),
            Some(peers.clone()),
        ));
        let replicator = replicator(&config, &peers)?;
        let proxy = Arc::new(proxy::Proxy::new(proxy::ProxyParts {
            site: config.site.clone(),
            services: config.services.clone(),
            settings: config.proxy.clone(),
            carriers: config.carriers.clone(),
            destinations,
            peers: peers.clone(),
            workload_scopes,
            counters: proxy_counters,
            metrics: metrics.clone(),
            replicator,
        }));
        if let Some((listener, acceptor)) = peer_api {
            tokio::spawn(peer::serve_peer_api(listener, acceptor, proxy.clone()));
        }
        peers.spawn_heartbeats();
        let admin_address = SocketAddr::from((Ipv4Addr::LOCALHOST, config.admin.port));
        admin::Admin {
            site: config.site.clone(),
            proxy: proxy.clone(),
            interception: interception.clone(),
            metrics,
        }
        .spawn(admin_address)
        .with_context(|| format!("binding the admin endpoint {admin_address}"))?;
        for listener in listeners {
            tokio::spawn(proxy.clone().serve(listener));
        }
        info!(
            site = %config.site,
            services = config.services.len(),
            peers = config.peers.len(),
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

/// Replication and cross, with their durable store, when some service has resource rules;
/// operations that replicas missed (before a restart too) are offered to them again.
fn replicator(
    config: &config::Config,
    peers: &Arc<peer::Peers>,
) -> anyhow::Result<Option<Arc<replicator::Replicator<peer_sites::PeerSites>>>> {
    if config.services.iter().all(|s| s.resources.is_empty()) {
        return Ok(None);
    }
    let settings = &config.replication;
    let store = store::Store::open(&settings.store)
        .with_context(|| format!("opening the store {}", settings.store.display()))?;
    let sites = peer_sites::PeerSites::new(
        config.site.clone(),
        config.services.clone(),
        peers.clone(),
        config.proxy.connect_timeout,
        config.proxy.response_timeout,
    );
    let rules = config
        .services
        .iter()
        .map(|s| (s.name.clone(), s.resources.clone()))
        .collect();
    let replicator = Arc::new(
        replicator::Replicator::new(
            config.site.clone(),
            rules,
            store,
            sites,
            settings.replica_timeout,
        )
        .waiting_for_leaders(settings.leader_wait),
    );
    replicator.spawn_replay(settings.replay_every);
    // A site that comes back gets what it missed at once, not at the next round.
    replicator.spawn_replay_on(peers.ups());
    Ok(Some(replicator))
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

fn replicas(admin: SocketAddr, json: bool) -> anyhow::Result<()> {
    let (_, body) = admin::request(admin, "GET", "/replicas", "")?;
    let view: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| anyhow::anyhow!("{}", body.trim()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    println!("site {}", text(&view["site"]));
    for replicant in view["replicants"].as_array().into_iter().flatten() {
        let replicas: Vec<String> = replicant["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{}={} ({})",
                    text(&r["site"]),
                    text(&r["local_id"]),
                    text(&r["state"])
                )
            })
            .collect();
        let deleted = if replicant["deleted"] == true {
            "  deleted"
        } else {
            ""
        };
        println!(
            "{}  {}  leader {}  {}{deleted}",
            text(&replicant["meta_id"]),
            text(&replicant["service"]),
            text(&replicant["leader"]),
            replicas.join(", ")
        );
    }
    for cross in view["cross"].as_array().into_iter().flatten() {
        println!(
            "{}  {}  cross, at {} as {}",
            text(&cross["meta_id"]),
            text(&cross["service"]),
            text(&cross["site"]),
            text(&cross["local_id"])
        );
    }
    for (site, count) in view["pending"].as_object().into_iter().flatten() {
        println!("site {site} has {count} operation(s) of this site's log to apply");
    }
    Ok(())
}

fn status(admin: SocketAddr, json: bool) -> anyhow::Result<()> {
    let (_, body) = admin::request(admin, "GET", "/status", "")?;
    let status: serde_json::Value =
        serde_json::from_str(&body).context("the agent's status is not JSON")?;
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
    for peer in status["peers"].as_array().into_iter().flatten() {
        let state = match (peer["up"].as_bool(), peer["round_trip_us"].as_u64()) {
            (Some(true), Some(us)) => format!("up, round trip {us} us"),
            _ => format!("down: {}", peer["last_error"].as_str().unwrap_or("?")),
        };
        println!(
            "peer         {} ({}) {state}",
            peer["name"].as_str().unwrap_or("?"),
            peer["address"].as_str().unwrap_or("?")
        );
    }
    let replication = &status["replication"];
    if let Some(error) = replication["error"].as_str() {
        println!("replication  the store cannot be read: {error}");
    } else if replication.is_object() {
        let pending: Vec<String> = replication["pending"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(site, count)| format!("{site} {count}"))
            .collect();
        println!(
            "replication  {} replicants, {} cross resources, replays pending: {}",
            replication["replicants"],
            replication["cross_resources"],
            if pending.is_empty() {
                "none".to_owned()
            } else {
                pending.join(", ")
            }
        );
    }
    Ok(())
}
