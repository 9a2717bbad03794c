//! The soak: three sites under load from several clients for the whole run, beside a seeded
//! schedule of faults (link cuts, added delay, `kill -9` of agents, an instance killed, a full
//! store), then healed; a checker then proves that nothing acknowledged was lost or applied
//! twice, that no answer came from a site its scope did not allow, and reads the logs. The
//! same seed gives the same schedule (`faults::schedule`).
mod check;
mod faults;
mod load;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use interceptor::config::ReplicationSettings;
use serde_json::json;

use crate::{
    mesh::{pod_rule, Mesh, MeshOptions, PEER_PORT},
    sites::Topology,
    tmpfs::Tmpfs,
};
pub use check::Summary;
use faults::{Injector, Paths};
use load::Ledger;

pub const SITES: [&str; 3] = ["Site1", "Site2", "Site3"];
/// The site whose store lives on a small file system that the schedule fills up.
pub const FULL_STORE_SITE: &str = "Site3";
/// The round trip a relay adds between two sites, and the slow one of a delay fault.
const WAN: Duration = Duration::from_millis(4);
const SLOW_WAN: Duration = Duration::from_millis(600);

#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// How long clients send requests (faults stop a little earlier).
    pub duration: Duration,
    pub seed: u64,
    pub clients: usize,
}

/// A small deterministic generator (splitmix64): the schedule depends on the seed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// json-server gives the next pod the highest ID plus one: different IDs at each site, so that
/// a replica under another site's ID would show.
fn seeds() -> HashMap<String, serde_json::Value> {
    SITES
        .iter()
        .enumerate()
        .map(|(n, site)| {
            let pods = json!([{"id": 1000 * (n + 1), "name": format!("seed of {site}")}]);
            (
                site.to_string(),
                json!({ "pods": pods, "products": [{"id": 1, "name": site}] }),
            )
        })
        .collect()
}

/// The relay port from `from` to `to`.
fn relay_port(from: usize, to: usize) -> u16 {
    20000 + (from * 10 + to) as u16
}

/// Runs the soak and returns its summary (printing is the caller's).
pub fn run(settings: &SoakSettings) -> Summary {
    let topology = Topology::create(&SITES);
    let mut relays = HashMap::new();
    let mut addresses: HashMap<(&str, &str), SocketAddr> = HashMap::new();
    for (from, site) in SITES.iter().enumerate() {
        for (to, peer) in SITES.iter().enumerate().filter(|(to, _)| *to != from) {
            let relay = topology.relay(relay_port(from, to), peer, PEER_PORT, WAN);
            addresses.insert((site, peer), relay.address);
            relays.insert((site.to_string(), peer.to_string()), relay);
        }
    }
    let options = MeshOptions {
        catalog_resources: vec![pod_rule()],
        replication: ReplicationSettings {
            replica_timeout: Duration::from_secs(2),
            replay_every: Duration::from_millis(500),
            leader_wait: Duration::from_secs(5),
            ..ReplicationSettings::default()
        },
        catalog_data: seeds(),
        request_timeout: Duration::from_secs(10),
        ..MeshOptions::default()
    };
    let mut mesh = Mesh::start_with(topology, &addresses, &options);
    let tmpfs = Tmpfs::mount(32 * 1024);
    mesh.move_store(FULL_STORE_SITE, tmpfs.path());
    let ledger = Mutex::new(Ledger::default());
    let started = Instant::now();
    let mut injector = Injector::new(
        &mut mesh,
        Paths {
            relays,
            tmpfs: &tmpfs,
        },
        settings.clients,
    );
    let schedule = faults::schedule(settings.seed, settings.duration);
    std::thread::scope(|scope| {
        for client in 0..settings.clients {
            let clients = injector.clients();
            let ledger = &ledger;
            let seed = settings.seed ^ (client as u64 + 1).wrapping_mul(0x1000_0001);
            scope.spawn(move || {
                load::client(client, seed, clients, ledger, started + settings.duration)
            });
        }
        injector.run(&schedule, started, started + settings.duration);
    });
    let convergence = injector.finish();
    let mut summary = check::check(
        &mut mesh,
        ledger.into_inner().unwrap_or_else(|p| p.into_inner()),
        convergence,
        settings,
    );
    if !summary.failures().is_empty() {
        summary.evidence = Some(keep_evidence(&mesh, settings.seed));
    }
    summary
}

/// Copies what a failed run's sites leave behind (each agent's log and store, each
/// json-server's data and request log) out of the temporary folders that are removed with
/// the mesh, into `/var/tmp/cheops-soak-<seed>-<pid>/<site>/`.
fn keep_evidence(mesh: &Mesh, seed: u64) -> PathBuf {
    let kept = PathBuf::from(format!(
        "/var/tmp/cheops-soak-{seed}-{}",
        std::process::id()
    ));
    for site in &mesh.sites {
        let folder = kept.join(&site.name);
        std::fs::create_dir_all(&folder).expect("creating the evidence folder");
        let store = mesh.state.path().join(format!("{}.redb", site.name));
        let files = [
            (site.agent.log.clone(), "agent.log"),
            (store, "store.redb"),
            (site.catalog.dir().join("db.json"), "json-server-db.json"),
            (site.catalog.dir().join("log"), "json-server.log"),
        ];
        for (from, name) in files {
            if let Err(e) = std::fs::copy(&from, folder.join(name)) {
                eprintln!("soak: {} was not kept: {e}", from.display());
            }
        }
    }
    kept
}
