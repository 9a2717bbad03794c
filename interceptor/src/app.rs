//! The agent's wiring: logs, the data-plane runtime, the kernel programs, the proxy and peer
//! listeners, replication, the admin endpoint on its own thread, and a shutdown that first
//! stops the kernel from redirecting.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::Arc,
};

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    admin::{Admin, ControlSocket},
    config::{Config, InterceptionMode},
    intercept::{
        self,
        ebpf::{Interception, Steering},
        inbound::{bind_inbound, InboundDoor},
        namespaces::{self, NamespaceDestinations, ServeListener, WorkloadNamespaces},
        nat::NatRedirect,
    },
    metrics::{Metrics, ProxyCounters},
    peer::Peers,
    proxy::{serve_peer_api, Proxy, ProxyParts, Workers},
    reload::{self, Reloader},
    replication::{sites::PeerSites, store::Store, Replicator},
    scope::{tokens::TokenScopes, workloads::WorkloadScopes},
    tls,
};

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

pub fn run_agent(config_path: &Path) -> anyhow::Result<()> {
    init_logs();
    let config = Config::load(config_path)?;
    let mount = intercept::cgroup::cgroup2_mount()?;
    let (cgroups, workloads) = reload::workloads_of(&config, &mount)?;
    let workload_scopes = Arc::new(WorkloadScopes::new(workloads)?);
    let control = ControlSocket::new(&config.admin.control, config.admin.control_group.as_deref())?;
    let tls = config
        .tls
        .as_ref()
        .map(|files| tls::SiteTls::load(files).map(Arc::new))
        .transpose()
        .context("loading this site's TLS credentials")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let port = config.proxy.port;
        let listeners = bind_proxy(port).await?;
        let inbound_door = Arc::new(InboundDoor::new(
            config
                .services
                .iter()
                .filter(|s| s.inbound)
                .map(|s| (s.name.clone(), s.address)),
        ));
        let peers = Arc::new(Peers::new(
            config.site.clone(),
            &config.peers,
            tls.clone(),
            config.peer_api.clone(),
        )?);
        let peer_api = match (config.peer_api.listen, &tls) {
            (Some(address), Some(tls)) => Some((
                TcpListener::bind(address).await.with_context(|| {
                    format!("binding the peer API to {address} (see `peer_api.listen`)")
                })?,
                tls.clone(),
            )),
            _ => None,
        };
        let interception = match config.proxy.interception {
            InterceptionMode::Ebpf => Some(Arc::new(
                Interception::start(Steering {
                    services: config.services.iter().map(|s| s.address).collect(),
                    inbound_services: inbound_door.addresses(),
                    workload_cgroups: &cgroups,
                    proxy_port: port,
                })
                .context("setting up kernel interception")?,
            )),
            InterceptionMode::Nat => None,
        };
        let proxy_counters = Arc::new(ProxyCounters::default());
        let metrics = Arc::new(Metrics::new(
            interception.clone(),
            proxy_counters.clone(),
            Some(peers.clone()),
        ));
        if let Some(tls) = &tls {
            follow_tls_files(tls, &metrics);
        }
        let token_scopes = Arc::new(TokenScopes::default());
        let replicator = replicator(&config, &peers, &token_scopes)?;
        let proxy = Arc::new(Proxy::new(ProxyParts {
            site: config.site.clone(),
            settings: config.proxy.clone(),
            peers: peers.clone(),
            workload_scopes: workload_scopes.clone(),
            token_scopes,
            counters: proxy_counters.clone(),
            metrics: metrics.clone(),
            routing: reload::routing_of(&config, replicator.clone()),
            workers: Workers::start(config.proxy.workers)
                .context("starting the proxy's threads")?,
        }));
        if let Some((listener, tls)) = peer_api {
            tokio::spawn(serve_peer_api(listener, tls, proxy.clone()));
        }
        peers.spawn_heartbeats();
        peers.spawn_renewals();
        let namespaces = match &interception {
            Some(interception) => {
                serve_own_namespace(&proxy, interception, listeners)?;
                if !inbound_door.is_empty() {
                    serve_inbound(
                        &proxy,
                        interception,
                        &inbound_door,
                        config.proxy.inbound_port,
                    )
                    .await?;
                }
                let namespaces = Arc::new(
                    WorkloadNamespaces::new(
                        cgroups.clone(),
                        port,
                        interception.clone(),
                        serve_with(&proxy),
                    )
                    .context("finding this process's network namespace")?,
                );
                namespaces
                    .start_scanning(config.proxy.workload_scan_every)
                    .context("starting the scan of workload namespaces")?;
                Some(namespaces)
            }
            None => {
                for listener in listeners {
                    tokio::spawn(proxy.clone().serve(listener, Arc::new(NatRedirect)));
                }
                None
            }
        };
        let admin_address = config.admin.tcp_address();
        let (reload, generation) = Reloader {
            path: config_path.to_owned(),
            running: config.clone(),
            mount,
            proxy: proxy.clone(),
            peers: peers.clone(),
            workload_scopes: workload_scopes.clone(),
            interception: interception.clone(),
            namespaces: namespaces.clone(),
            replicator: replicator.clone(),
            tls: tls.clone(),
            metrics: metrics.clone(),
        }
        .spawn()?;
        Admin {
            site: config.site.clone(),
            counters: proxy_counters,
            peers: peers.clone(),
            workload_scopes,
            replicator,
            interception: interception.clone(),
            namespaces,
            inbound: inbound_door,
            metrics,
            control,
            tls: tls.clone(),
            reload,
            generation,
        }
        .spawn(admin_address)?;
        info!(
            site = %config.site,
            services = config.services.len(),
            peers = config.peers.len(),
            workloads = cgroups.len(),
            interception = ?config.proxy.interception,
            proxy_port = port,
            admin = admin_address.map(tracing::field::display),
            control = %config.admin.control.display(),
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

/// The TLS material is reloaded when its files change (and with the configuration, on SIGHUP
/// and `cheops reload`: `reload.rs`); the metrics follow it.
fn follow_tls_files(tls: &Arc<tls::SiteTls>, metrics: &Arc<Metrics>) {
    tls.spawn_watch(TLS_FILES_LOOKED_AT_EVERY);
    metrics.follow_certificates(tls);
}

/// How often the TLS files are looked at for a change (their size, times and inode).
const TLS_FILES_LOOKED_AT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Replication and cross, with their durable store, when some service has resource rules;
/// operations that replicas missed (before a restart too) are offered to them again.
fn replicator(
    config: &Config,
    peers: &Arc<Peers>,
    token_scopes: &Arc<TokenScopes>,
) -> anyhow::Result<Option<Arc<Replicator<PeerSites>>>> {
    if config.services.iter().all(|s| s.resources.is_empty()) {
        return Ok(None);
    }
    let settings = &config.replication;
    let store = Store::open(&settings.store)
        .with_context(|| format!("opening the store {}", settings.store.display()))?;
    let sites = PeerSites::new(
        config.site.clone(),
        reload::instances_of(config),
        peers.clone(),
        (token_scopes.clone(), config.carriers.clone()),
        config.proxy.connect_timeout,
        config.proxy.response_timeout,
    );
    let replicator = Arc::new(
        Replicator::new(
            config.site.clone(),
            reload::resource_rules_of(config),
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

/// Serves the proxy's listeners of this process's own network namespace (host processes).
fn serve_own_namespace(
    proxy: &Arc<Proxy>,
    interception: &Arc<Interception>,
    listeners: Vec<TcpListener>,
) -> anyhow::Result<()> {
    for listener in listeners {
        let netns_cookie = namespaces::netns_cookie(&listener)
            .context("reading the network namespace cookie of the proxy's listener")?;
        let seam = Arc::new(NamespaceDestinations {
            interception: interception.clone(),
            netns_cookie,
        });
        tokio::spawn(proxy.clone().serve(listener, seam));
        interception.mesh_namespace(netns_cookie)?;
    }
    Ok(())
}

/// Binds the inbound listeners, serves them, and only then hands them to the kernel.
async fn serve_inbound(
    proxy: &Arc<Proxy>,
    interception: &Interception,
    door: &Arc<InboundDoor>,
    port: u16,
) -> anyhow::Result<()> {
    let (ipv4, ipv6) = bind_inbound(port).await.with_context(|| {
        format!("binding the inbound listener on 127.0.0.1:{port} (see `proxy.inbound_port`)")
    })?;
    interception.set_inbound_listeners(&ipv4, ipv6.as_ref())?;
    for listener in std::iter::once(ipv4).chain(ipv6) {
        tokio::spawn(proxy.clone().serve(listener, door.clone()));
    }
    Ok(())
}

/// How the namespace scanner starts serving a listener it opened in a workload's namespace:
/// on this runtime, from the scanner's own thread.
fn serve_with(proxy: &Arc<Proxy>) -> ServeListener {
    let proxy = proxy.clone();
    let runtime = tokio::runtime::Handle::current();
    Box::new(move |listener, seam| {
        let listener = {
            let _registered_here = runtime.enter();
            TcpListener::from_std(listener)?
        };
        Ok(runtime
            .spawn(proxy.clone().serve(listener, seam))
            .abort_handle())
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
