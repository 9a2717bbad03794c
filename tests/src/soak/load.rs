//! The clients: each runs curl from its home site's workload cgroup for the whole run, a
//! seeded mix of local, shared and `;` reads, a front that calls the catalog, replicated
//! creates, updates and deletes (with and without scope, at leaders and elsewhere), cross
//! creates and lists; the ledger keeps what was sent, acknowledged and refused.
use std::{collections::BTreeMap, sync::Mutex, time::Instant};

use super::{Rng, SITES};
use crate::{
    cgroup::Cgroup,
    mesh::{Answer, CATALOG, FRONT},
    netns::Netns,
};

/// Where a client runs.
#[derive(Clone, Copy)]
pub struct ClientSite<'a> {
    pub name: &'static str,
    pub netns: &'a Netns,
    pub workload: &'a Cgroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    None,
    /// Sent, not acknowledged: it may or may not have been made.
    Attempted,
    Acknowledged,
}

/// A create that was sent: its name (unique in the run), the sites its scope named, its
/// meta-ID if acknowledged.
#[derive(Debug, Clone)]
pub struct Create {
    pub token: String,
    pub sites: Vec<&'static str>,
    /// A cross create: where it lives.
    pub prime: Option<&'static str>,
    pub meta: Option<String>,
    pub deletion: Deletion,
}

impl Create {
    fn new(token: String, sites: Vec<&'static str>, prime: Option<&'static str>) -> Create {
        Create {
            token,
            sites,
            prime,
            meta: None,
            deletion: Deletion::None,
        }
    }

    /// Sends the create from `home` with `scope` and records it in `ledger`; its index there
    /// when acknowledged.
    fn send(mut self, home: ClientSite<'_>, scope: &str, ledger: &mut Ledger) -> Option<usize> {
        let body = format!("{{\"name\": \"{}\", \"v\": 0}}", self.token);
        let url = format!("http://{CATALOG}/pods");
        let answer = request(home, "POST", &url, Some(scope), Some(&body));
        // A cross create is answered by its prime site, a replicated one by one of its sites.
        let allowed = match self.prime {
            Some(prime) => vec![prime],
            None => self.sites.clone(),
        };
        ledger.record(&answer, Some(&allowed), "x-cheops-site", scope);
        self.meta = (200..300)
            .contains(&answer.status)
            .then(|| answer.header("x-cheops-meta-id").map(str::to_owned))
            .flatten();
        let acknowledged = self.meta.is_some();
        ledger.creates.push(self);
        acknowledged.then(|| ledger.creates.len() - 1)
    }
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub sent: u64,
    pub acknowledged: u64,
    /// Answers that were not 2xx, by status (0: no HTTP answer at all).
    pub refused: BTreeMap<u16, u64>,
    /// Answers that came from a site the request's scope did not allow.
    pub wrong_sites: Vec<String>,
    pub creates: Vec<Create>,
}

impl Ledger {
    fn record(&mut self, answer: &Answer, allowed: Option<&[&str]>, header: &str, what: &str) {
        self.sent += 1;
        if !(200..300).contains(&answer.status) {
            *self.refused.entry(answer.status).or_default() += 1;
            return;
        }
        self.acknowledged += 1;
        if let (Some(allowed), Some(site)) = (allowed, answer.header(header)) {
            if !allowed.contains(&site) {
                self.wrong_sites
                    .push(format!("{what} answered by {site}, allowed {allowed:?}"));
            }
        }
    }
}

fn request(
    at: ClientSite<'_>,
    method: &str,
    url: &str,
    scope: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut command = at.netns.command("curl");
    command.args(["-sS", "-i", "-m", "20", "-X", method]);
    if let Some(scope) = scope {
        command.args(["-H", &format!("x-scope: {scope}")]);
    }
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "-d", body]);
    }
    command.arg(url);
    at.workload.enter(&mut command);
    match command.output() {
        Ok(output) => Answer::from(output),
        Err(cause) => panic!("running curl at {}: {cause}", at.name),
    }
}

fn two_sites(rng: &mut Rng) -> (&'static str, &'static str) {
    let first = rng.below(SITES.len());
    let second = (first + 1 + rng.below(SITES.len() - 1)) % SITES.len();
    (SITES[first], SITES[second])
}

/// One client, at `sites[n % 3]`, until `until`.
pub fn client(
    n: usize,
    seed: u64,
    sites: Vec<ClientSite<'_>>,
    ledger: &Mutex<Ledger>,
    until: Instant,
) {
    let mut rng = Rng::new(seed);
    let home = sites[n % sites.len()];
    let at = |name: &str| {
        *sites
            .iter()
            .find(|s| s.name == name)
            .expect("a site of the soak")
    };
    let catalog = format!("http://{CATALOG}");
    let lock = || ledger.lock().unwrap_or_else(|p| p.into_inner());
    // This client's acknowledged replicated creates still alive: index in the ledger.
    let mut mine: Vec<usize> = Vec::new();
    let mut count = 0u64;
    while Instant::now() < until {
        count += 1;
        let token = format!("soak-{n}-{count}");
        match rng.below(100) {
            0..20 => {
                let answer = request(home, "GET", &format!("{catalog}/products"), None, None);
                lock().record(&answer, Some(&[home.name]), "x-cheops-site", "a local read");
            }
            20..35 => {
                let site = *rng.pick(&SITES);
                let scope = format!("{{catalog: {site}}}");
                let answer = request(
                    home,
                    "GET",
                    &format!("{catalog}/products"),
                    Some(&scope),
                    None,
                );
                lock().record(&answer, Some(&[site]), "x-cheops-site", &scope);
            }
            35..45 => {
                let (first, second) = two_sites(&mut rng);
                let scope = format!("{{catalog: {first} ; {second}}}");
                let answer = request(
                    home,
                    "GET",
                    &format!("{catalog}/products"),
                    Some(&scope),
                    None,
                );
                lock().record(&answer, Some(&[first, second]), "x-cheops-site", &scope);
            }
            45..50 => {
                let answer = request(home, "GET", &format!("http://{FRONT}/products"), None, None);
                lock().record(&answer, Some(&[home.name]), "x-catalog-site", "the front");
            }
            50..68 => {
                let (first, second) = two_sites(&mut rng);
                let mut replicas = vec![home.name];
                for site in [first, second] {
                    if !replicas.contains(&site) {
                        replicas.push(site);
                    }
                }
                replicas.truncate(2 + rng.below(2));
                let scope = format!("{{catalog: {}}}", replicas.join(" & "));
                let create = Create::new(token, replicas, None);
                if let Some(index) = create.send(home, &scope, &mut lock()) {
                    mine.push(index);
                }
            }
            68..88 if !mine.is_empty() => {
                let index = mine[rng.below(mine.len())];
                let created = lock().creates[index].clone();
                let meta = created.meta.clone().unwrap_or_default();
                let deleting = rng.below(4) == 0;
                // With its scope from any site, or without from one of its replicas.
                let (site, scope) = match rng.below(2) {
                    0 => (
                        *rng.pick(&SITES),
                        Some(format!("{{catalog: {}}}", created.sites.join(" & "))),
                    ),
                    _ => (*rng.pick(&created.sites), None),
                };
                let url = format!("{catalog}/pods/{meta}");
                let (method, body) = match deleting {
                    true => ("DELETE", None),
                    false => ("PATCH", Some(format!("{{\"v\": {count}}}"))),
                };
                let answer = request(at(site), method, &url, scope.as_deref(), body.as_deref());
                let mut ledger = lock();
                let what = format!("{method} {meta} at {site}");
                ledger.record(&answer, Some(&created.sites), "x-cheops-site", &what);
                if deleting {
                    let acknowledged = (200..300).contains(&answer.status);
                    ledger.creates[index].deletion = match acknowledged {
                        true => Deletion::Acknowledged,
                        false => Deletion::Attempted,
                    };
                    mine.retain(|i| *i != index);
                }
            }
            68..88 => {}
            _ => {
                let (prime, other) = two_sites(&mut rng);
                let scope = format!("{{catalog: {prime} % {other}}}");
                if rng.below(2) == 0 {
                    let answer =
                        request(home, "GET", &format!("{catalog}/pods"), Some(&scope), None);
                    lock().record(&answer, None, "x-cheops-site", &scope);
                    continue;
                }
                let create = Create::new(token, vec![prime, other], Some(prime));
                create.send(home, &scope, &mut lock());
            }
        }
    }
}
