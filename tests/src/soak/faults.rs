//! The fault schedule, a function of the seed alone, and the injector that carries it out
//! against the mesh and heals each fault before the next; after each heal it measures how long
//! the sites take to converge (nothing left in any log for any site).
use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, Instant},
};

use interceptor::admin::api::{ReplicasView, REPLICAS_PAGE};

use super::{load::ClientSite, Rng, SITES, SLOW_WAN, WAN};
use crate::{
    agent::Agent,
    apps::JsonServer,
    mesh::{Mesh, CATALOG_LOCAL, PEER_PORT},
    sites::{Relay, Topology},
    tmpfs::Tmpfs,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// One site cut off from the others: the mesh split in two.
    Cut(&'static str),
    /// Every path to and from a site slowed to `SLOW_WAN`.
    Delay(&'static str),
    /// `kill -9` of an agent, restarted on the same store when healed.
    KillAgent(&'static str),
    /// Two agents at once: a leader and a replica of the same resources.
    KillAgents(&'static str, &'static str),
    /// A site's catalog instance killed, started again on its data when healed.
    KillInstance(&'static str),
    /// `FULL_STORE_SITE`'s store on a full file system.
    FullStore,
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Cut(_) => "link cut",
            Fault::Delay(_) => "added delay",
            Fault::KillAgent(_) => "kill -9 agent",
            Fault::KillAgents(..) => "kill -9 two agents",
            Fault::KillInstance(_) => "instance killed",
            Fault::FullStore => "full store",
        }
    }

    fn random(rng: &mut Rng, kind: usize) -> Fault {
        let at = rng.below(SITES.len());
        let site = SITES[at];
        match kind {
            0 => Fault::Cut(site),
            1 => Fault::Delay(site),
            2 => Fault::KillAgent(site),
            3 => Fault::KillAgents(site, SITES[(at + 1 + rng.below(2)) % SITES.len()]),
            4 => Fault::KillInstance(site),
            _ => Fault::FullStore,
        }
    }
}

const KINDS: usize = 6;

/// One fault: when it starts (from the start of the run), how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

/// The faults of a run of `duration` with `seed`: every kind once first, in a seeded order,
/// then seeded kinds, each 2 to 6 s, 4 to 8 s apart, none in the last 15% of the run.
pub fn schedule(seed: u64, duration: Duration) -> Vec<Scheduled> {
    let mut rng = Rng::new(seed);
    let mut kinds: Vec<usize> = (0..KINDS).collect();
    for i in (1..KINDS).rev() {
        kinds.swap(i, rng.below(i + 1));
    }
    let end = duration.mul_f64(0.85);
    let mut at = Duration::from_secs(3);
    let mut faults = Vec::new();
    while at < end {
        let kind = match faults.len() {
            n if n < KINDS => kinds[n],
            _ => rng.below(KINDS),
        };
        let lasts = Duration::from_millis(2000 + rng.below(4000) as u64);
        faults.push(Scheduled {
            at,
            lasts,
            fault: Fault::random(&mut rng, kind),
        });
        at += lasts + Duration::from_millis(4000 + rng.below(4000) as u64);
    }
    faults
}

/// What the injector changes besides the mesh.
pub struct Paths<'a> {
    pub relays: HashMap<(String, String), Relay>,
    pub tmpfs: &'a Tmpfs,
}

struct SiteHandles<'a> {
    name: &'static str,
    agent: &'a mut Agent,
    catalog: &'a mut JsonServer,
}

/// How the run converged: after each heal, and at the end.
pub struct Convergence {
    pub after_heals: Vec<Duration>,
    /// `None`: not within the bound.
    pub at_end: Option<Duration>,
    pub faults: BTreeMap<&'static str, u64>,
}

pub struct Injector<'a> {
    topology: &'a Topology,
    sites: Vec<SiteHandles<'a>>,
    clients: Vec<ClientSite<'a>>,
    paths: Paths<'a>,
    after_heals: Vec<Duration>,
    faults: BTreeMap<&'static str, u64>,
    /// Entries of the logs that the clients' requests under way may hold: one replicated
    /// write at three sites each.
    in_flight: usize,
}

/// How long the sites may take to converge after a heal.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(60);
/// Time kept after a fault for its heal and the convergence that follows.
const MARGIN: Duration = Duration::from_secs(5);

impl<'a> Injector<'a> {
    pub fn new(mesh: &'a mut Mesh, paths: Paths<'a>, client_count: usize) -> Injector<'a> {
        let Mesh {
            sites, topology, ..
        } = mesh;
        let mut handles = Vec::new();
        let mut clients = Vec::new();
        for site in sites.iter_mut() {
            let name = *SITES
                .iter()
                .find(|s| **s == site.name)
                .expect("a site of the soak");
            clients.push(ClientSite {
                name,
                netns: &topology.site(name).netns,
                workload: &site.workload,
            });
            handles.push(SiteHandles {
                name,
                agent: &mut site.agent,
                catalog: &mut site.catalog,
            });
        }
        Injector {
            topology,
            sites: handles,
            clients,
            paths,
            after_heals: Vec::new(),
            faults: BTreeMap::new(),
            in_flight: client_count * SITES.len(),
        }
    }

    /// Where clients run: each site's namespace and workload cgroup.
    pub fn clients(&self) -> Vec<ClientSite<'a>> {
        self.clients.clone()
    }

    /// Injects each fault of `schedule` at its time (from `started`), heals it after its
    /// length, and measures the convergence that follows.
    pub fn run(&mut self, schedule: &[Scheduled], started: Instant, ends: Instant) {
        for scheduled in schedule {
            let due = started + scheduled.at;
            // Healing and converging may run late: a fault that would outlast the clients is
            // left out (the summary counts what was injected).
            if due.max(Instant::now()) + scheduled.lasts + MARGIN > ends {
                eprintln!("soak: left out, too late: {:?}", scheduled.fault);
                continue;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            eprintln!(
                "soak: {:>6.1}s {:?} for {:.1}s",
                started.elapsed().as_secs_f64(),
                scheduled.fault,
                scheduled.lasts.as_secs_f64()
            );
            *self.faults.entry(scheduled.fault.kind()).or_default() += 1;
            let undo = self.inject(&scheduled.fault);
            std::thread::sleep(scheduled.lasts);
            self.heal(&scheduled.fault, undo);
            if let Some(took) = self.converge(self.in_flight) {
                self.after_heals.push(took);
            }
        }
    }

    fn handles(&mut self, site: &str) -> &mut SiteHandles<'a> {
        self.sites
            .iter_mut()
            .find(|h| h.name == site)
            .expect("a site of the soak")
    }

    /// Injects `fault`; returns what healing needs (the filler file of a full store).
    fn inject(&mut self, fault: &Fault) -> Option<PathBuf> {
        match fault {
            Fault::Cut(site) => self.topology.cut(site),
            Fault::Delay(site) => self.relink(site, SLOW_WAN),
            Fault::KillAgent(site) => self.handles(site).agent.crash(),
            Fault::KillAgents(one, other) => {
                self.handles(one).agent.crash();
                self.handles(other).agent.crash();
            }
            Fault::KillInstance(site) => self.handles(site).catalog.stop(),
            Fault::FullStore => return Some(self.paths.tmpfs.fill()),
        }
        None
    }

    fn heal(&mut self, fault: &Fault, filler: Option<PathBuf>) {
        match fault {
            Fault::Cut(site) => self.topology.heal(site),
            Fault::Delay(site) => self.relink(site, WAN),
            Fault::KillAgent(site) => self.handles(site).agent.restart(),
            Fault::KillAgents(one, other) => {
                self.handles(one).agent.restart();
                self.handles(other).agent.restart();
            }
            Fault::KillInstance(site) => {
                let netns = &self.topology.site(site).netns;
                let address = CATALOG_LOCAL.parse().expect("the catalog's address");
                self.handles(site).catalog.start_again(netns, address);
            }
            Fault::FullStore => {
                if let Some(filler) = filler {
                    let _ = std::fs::remove_file(filler);
                }
            }
        }
    }

    /// Every relay to and from `site` replaced by one adding `round_trip`.
    fn relink(&mut self, site: &str, round_trip: Duration) {
        let keys: Vec<(String, String)> = self
            .paths
            .relays
            .keys()
            .filter(|(from, to)| from == site || to == site)
            .cloned()
            .collect();
        for key in keys {
            let Some(old) = self.paths.relays.remove(&key) else {
                continue;
            };
            let port = old.address.port();
            drop(old);
            let relay = self.topology.relay(port, &key.1, PEER_PORT, round_trip);
            self.paths.relays.insert(key, relay);
        }
    }

    /// Operations that some site still has to apply, over every site's log; `None` while an
    /// agent does not answer.
    fn pending(&self) -> Option<usize> {
        self.sites.iter().try_fold(0, |sum, site| {
            let text = site.agent.admin(REPLICAS_PAGE)?;
            let view: ReplicasView = serde_json::from_str(&text).ok()?;
            Some(sum + view.pending.values().sum::<usize>())
        })
    }

    /// How long until the sites have no more left to apply than `in_flight` (what the
    /// clients' requests under way may hold), within `CONVERGENCE_BOUND`.
    fn converge(&self, in_flight: usize) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < CONVERGENCE_BOUND {
            if self.pending().is_some_and(|pending| pending <= in_flight) {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// The run is over: its convergence (every fault is healed already).
    pub fn finish(self) -> Convergence {
        let at_end = self.converge(0);
        Convergence {
            after_heals: self.after_heals,
            at_end,
            faults: self.faults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_with_every_kind_first() {
        let duration = Duration::from_secs(150);
        let schedule = schedule(15, duration);
        assert_eq!(schedule, super::schedule(15, duration));
        assert_ne!(schedule, super::schedule(16, duration));
        let mut first: Vec<&str> = schedule[..KINDS].iter().map(|s| s.fault.kind()).collect();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), KINDS, "{schedule:?}");
        assert!(schedule.iter().all(|s| s.at < duration.mul_f64(0.85)));
    }
}
