//! Applying a changed configuration file to the running agent (`cheops reload`, SIGHUP): peers,
//! services, workloads, carriers and policies change in place, while requests under way keep
//! the configuration they started with. A file that does not load, or changes what only a
//! restart can (`config::check_live_change`), is refused whole: nothing changes.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::{
    config::{check_live_change, Config},
    intercept::{self, ebpf::Interception, namespaces::WorkloadNamespaces},
    metrics::Metrics,
    peer::Peers,
    proxy::{Proxy, Routing},
    replication::{sites::PeerSites, Replicator},
    resources::ResourceRule,
    scope::{
        policy::PolicyOf,
        workloads::{WorkloadCgroup, WorkloadScopes},
    },
    tls::SiteTls,
};

/// Which configuration runs: its generation (1 at start, one more per reload applied) and
/// when it was loaded.
#[derive(Debug)]
pub struct ConfigGeneration {
    generation: AtomicU64,
    loaded_at_unix: AtomicU64,
}

impl ConfigGeneration {
    fn first() -> ConfigGeneration {
        ConfigGeneration {
            generation: AtomicU64::new(1),
            loaded_at_unix: AtomicU64::new(unix_now()),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// When the running configuration was loaded, in seconds since the Unix epoch.
    pub fn loaded_at_unix(&self) -> u64 {
        self.loaded_at_unix.load(Ordering::Relaxed)
    }

    fn next(&self) -> u64 {
        self.loaded_at_unix.store(unix_now(), Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Asks the running agent to reload its file: answered with the new generation, or why not.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<oneshot::Sender<Result<u64, String>>>);

impl ReloadHandle {
    pub async fn reload(&self) -> Result<u64, String> {
        let (answer, answered) = oneshot::channel();
        let gone = || "the agent is shutting down".to_owned();
        self.0.send(answer).await.map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

/// The workload cgroups' directories and what each gives its requests.
pub fn workloads_of(
    config: &Config,
    mount: &Path,
) -> anyhow::Result<(Vec<PathBuf>, Vec<WorkloadCgroup>)> {
    let mut dirs = Vec::new();
    let mut workloads = Vec::new();
    for workload in &config.workloads {
        let dir = intercept::cgroup::workload_dir(mount, &workload.cgroup)?;
        let default_scope = workload
            .default_scope
            .as_deref()
            .map(|text| config.check_scope(text))
            .transpose()?;
        dirs.push(dir.clone());
        workloads.push(WorkloadCgroup {
            dir,
            default_scope,
            policy: workload.policy(),
        });
    }
    Ok((dirs, workloads))
}

/// What the proxy routes with under `config`.
pub fn routing_of(config: &Config, replicator: Option<Arc<Replicator<PeerSites>>>) -> Routing {
    Routing {
        services: config.services.clone(),
        carriers: config.carriers.clone(),
        inbound_policy: PolicyOf::limiting(
            "a request from another machine (`[inbound]`)".into(),
            config.inbound.clone(),
        ),
        peer_services: config
            .peers
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.allow_services.clone()?)))
            .collect(),
        replicator,
    }
}

/// Each service's resource rules.
pub fn resource_rules_of(config: &Config) -> HashMap<String, Vec<ResourceRule>> {
    config
        .services
        .iter()
        .map(|s| (s.name.clone(), s.resources.clone()))
        .collect()
}

/// Where this site's instance of each service listens.
pub fn instances_of(config: &Config) -> HashMap<String, SocketAddr> {
    config
        .services
        .iter()
        .map(|s| (s.name.clone(), s.local))
        .collect()
}

/// The parts of the running agent that a reload changes.
pub struct Reloader {
    pub path: PathBuf,
    pub running: Config,
    pub mount: PathBuf,
    pub proxy: Arc<Proxy>,
    pub peers: Arc<Peers>,
    pub workload_scopes: Arc<WorkloadScopes>,
    pub interception: Option<Arc<Interception>>,
    pub namespaces: Option<Arc<WorkloadNamespaces>>,
    pub replicator: Option<Arc<Replicator<PeerSites>>>,
    /// This site's TLS material, reloaded too (none without peers).
    pub tls: Option<Arc<SiteTls>>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Serves reloads, one at a time, on SIGHUP and from `ReloadHandle`s, on this runtime.
    /// The SIGHUP handler is installed before this returns, so a hangup never ends the agent.
    pub fn spawn(self) -> anyhow::Result<(ReloadHandle, Arc<ConfigGeneration>)> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let (asks, mut asked) = mpsc::channel::<oneshot::Sender<Result<u64, String>>>(8);
        let generation = Arc::new(ConfigGeneration::first());
        let shown = generation.clone();
        let mut reloader = self;
        tokio::spawn(async move {
            loop {
                let answer = tokio::select! {
                    Some(()) = hangup.recv() => {
                        info!("SIGHUP: reloading the configuration file and the TLS material");
                        None
                    }
                    Some(answer) = asked.recv() => Some(answer),
                    else => return,
                };
                let outcome = reloader.reload(&generation);
                if let Some(answer) = answer {
                    let _ = answer.send(outcome);
                }
            }
        });
        Ok((ReloadHandle(asks), shown))
    }

    /// The configuration file, then the TLS material: each is applied whole or not at all, on
    /// its own (good new certificates are put in use even when the file is refused).
    fn reload(&mut self, generation: &ConfigGeneration) -> Result<u64, String> {
        let applied = self.apply();
        let tls = match self.tls.as_ref().map(|tls| tls.reload()) {
            Some(Err(err)) => Some(format!(
                "the TLS material was refused, the running one stays: {err}"
            )),
            _ => None,
        };
        match applied {
            Ok(()) => {
                let now = generation.next();
                self.metrics.set_config_generation(now);
                info!(generation = now, config = %self.path.display(), "configuration reloaded");
                match tls {
                    None => Ok(now),
                    Some(tls) => Err(format!("configuration generation {now} applied, but {tls}")),
                }
            }
            Err(err) => {
                self.metrics.record_refused_reload();
                let why = format!("{err:#}");
                warn!(config = %self.path.display(), "reload refused, the running configuration stays: {why}");
                Err(match tls {
                    None => why,
                    Some(tls) => format!("{why}; and {tls}"),
                })
            }
        }
    }

    /// Loads the file and applies it; on an error, nothing has changed.
    fn apply(&mut self) -> anyhow::Result<()> {
        let new = Config::load(&self.path)?;
        check_live_change(&self.running, &new)?;
        if self.replicator.is_none() && new.services.iter().any(|s| !s.resources.is_empty()) {
            anyhow::bail!(
                "`[[service.resource]]` rules on a site that started without any cannot be \
                 added while the agent runs (its store is opened at start): restart it to apply \
                 this file"
            );
        }
        let (dirs, workloads) = workloads_of(&new, &self.mount)?;
        if let Some(interception) = &self.interception {
            interception.set_workloads(&dirs)?;
        }
        let running_dirs = || workloads_of(&self.running, &self.mount).map(|(dirs, _)| dirs);
        if let Err(err) = self.workload_scopes.apply(workloads) {
            if let (Some(interception), Ok(dirs)) = (&self.interception, running_dirs()) {
                let _ = interception.set_workloads(&dirs);
            }
            return Err(err.into());
        }
        self.peers.apply(&new.peers)?;
        // Connections to a service removed pass untouched before the proxy forgets it, and
        // the proxy knows a service added before connections to it are redirected.
        let addresses =
            |config: &Config| -> Vec<_> { config.services.iter().map(|s| s.address).collect() };
        let (before, after) = (addresses(&self.running), addresses(&new));
        if let Some(interception) = &self.interception {
            let kept: Vec<_> = after
                .iter()
                .filter(|a| before.contains(a))
                .copied()
                .collect();
            interception.set_services(&kept)?;
        }
        if let Some(replicator) = &self.replicator {
            replicator.set_rules(resource_rules_of(&new));
            replicator.sites().set_instances(instances_of(&new));
            replicator.sites().set_carriers(new.carriers.clone());
        }
        self.proxy
            .reroute(routing_of(&new, self.replicator.clone()));
        if let Some(interception) = &self.interception {
            interception.set_services(&after)?;
        }
        if let Some(namespaces) = &self.namespaces {
            namespaces.set_roots(dirs);
        }
        self.running = new;
        Ok(())
    }
}
