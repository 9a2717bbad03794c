//! The replicator across three in-process sites, each with a small json-server-like instance
//! that gives its own IDs, and links that can be cut: replication, replay after a partition and
//! a restart, exactly once, and cross.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::Mutex,
};

use serde_json::{json, Value};

use super::*;
use crate::replication::{ids::LocalId, log::lock};

mod crash;
mod cross;
mod lost;
mod partitions;

/// A REST collection `/pods` as json-server keeps it; IDs are numbers above `first_id` unless
/// the client gives one: the highest one held plus one, so that a deleted highest ID is given
/// again, as json-server does.
struct App {
    items: BTreeMap<String, Value>,
    first_id: i64,
    /// Requests received, by method: to tell that nothing was applied twice.
    received: HashMap<String, usize>,
}

impl App {
    fn new(first_id: i64) -> App {
        App {
            items: BTreeMap::new(),
            first_id,
            received: HashMap::new(),
        }
    }

    fn serve(&mut self, call: &Call) -> Answer {
        *self.received.entry(call.method.clone()).or_default() += 1;
        let json =
            |status, value: Value| Answer::new(status, "application/json", value.to_string());
        let body: Value = serde_json::from_str(&call.body).unwrap_or(Value::Null);
        let path: Vec<&str> = call.target.trim_matches('/').split('/').collect();
        match (call.method.as_str(), path.as_slice()) {
            ("GET", ["pods"]) => json(200, Value::Array(self.items.values().cloned().collect())),
            // A body naming this instance's first ID in `refused_by` is refused, as a real
            // application refuses a malformed one.
            ("POST", ["pods"]) if refused(&body, self.first_id) => {
                json(400, json!({"error": "bad pod"}))
            }
            ("POST", ["pods"]) => {
                let mut item = body;
                let id = match item.get("id") {
                    Some(id) => id.clone(),
                    None => {
                        let highest = self.items.values().filter_map(|item| item["id"].as_i64());
                        json!(highest.max().unwrap_or(self.first_id).max(self.first_id) + 1)
                    }
                };
                item["id"] = id.clone();
                self.items.insert(key(&id), item.clone());
                json(201, item)
            }
            (method, ["pods", id]) => {
                let Some(item) = self.items.get_mut(*id) else {
                    return json(404, json!({}));
                };
                match method {
                    "GET" => json(200, item.clone()),
                    "PATCH" => {
                        for (field, value) in body.as_object().into_iter().flatten() {
                            item[field] = value.clone();
                        }
                        json(200, item.clone())
                    }
                    "DELETE" => {
                        self.items.remove(*id);
                        json(200, json!({}))
                    }
                    _ => json(405, json!({})),
                }
            }
            _ => json(404, json!({})),
        }
    }
}

fn refused(body: &Value, first_id: i64) -> bool {
    body["refused_by"]
        .as_array()
        .is_some_and(|ids| ids.contains(&json!(first_id)))
}

fn key(id: &Value) -> String {
    id.as_str().map_or_else(|| id.to_string(), str::to_owned)
}

#[derive(Default)]
struct Mesh {
    apps: Mutex<HashMap<String, App>>,
    cut: Mutex<HashSet<String>>,
    /// Sites whose daemon dies right after their instance applies the next call.
    crashing: Mutex<HashSet<String>>,
    replicators: Mutex<HashMap<String, Arc<Replicator<Link>>>>,
    /// `Apply` messages delivered, by site.
    applies: Mutex<HashMap<String, usize>>,
}

pub(super) struct Link {
    me: String,
    mesh: Arc<Mesh>,
}

impl Sites for Link {
    fn instance(&self, call: Call) -> impl Future<Output = Result<Answer, Unreached>> + Send {
        let answer = lock(&self.mesh.apps)
            .get_mut(&self.me)
            .unwrap()
            .serve(&call);
        let crashed = lock(&self.mesh.crashing).remove(&self.me);
        if crashed {
            // A dead daemon is unreachable until it is started again.
            lock(&self.mesh.cut).insert(self.me.clone());
        }
        let site = self.me.clone();
        async move {
            match crashed {
                true => Err(Unreached::Unreachable {
                    site,
                    why: "the daemon died after its instance applied the call".into(),
                }),
                false => Ok(answer),
            }
        }
    }

    fn deliver(
        &self,
        site: &str,
        message: Message,
    ) -> impl Future<Output = Result<Reply, Unreached>> + Send {
        let cut = lock(&self.mesh.cut);
        // A cut link refuses before anything is sent.
        let unreachable = |why: &str| Unreached::NotDelivered {
            site: site.to_owned(),
            why: why.to_owned(),
        };
        let target = if cut.contains(site) || cut.contains(&self.me) {
            Err(unreachable("the link is cut"))
        } else {
            Ok(lock(&self.mesh.replicators)[site].clone())
        };
        if target.is_ok() && matches!(message, Message::Apply { .. }) {
            *lock(&self.mesh.applies).entry(site.to_owned()).or_default() += 1;
        }
        let site = site.to_owned();
        async move {
            let replicator = target?;
            replicator
                .handle_here(message)
                .await
                .map_err(|refusal| Unreached::Unreachable {
                    site,
                    why: refusal.to_string(),
                })
        }
    }
}

const SITES: [&str; 3] = ["Site1", "Site2", "Site3"];
const LEADER_WAIT: Duration = Duration::from_secs(2);

pub(super) struct Test {
    mesh: Arc<Mesh>,
    dir: PathBuf,
}

impl Test {
    pub(super) fn new() -> Test {
        let dir =
            std::env::temp_dir().join(format!("cheops-replicator-{}", ulid::Ulid::generate()));
        let test = Test {
            mesh: Arc::new(Mesh::default()),
            dir,
        };
        for (n, site) in SITES.iter().enumerate() {
            lock(&test.mesh.apps).insert(site.to_string(), App::new(100 * (n as i64 + 1)));
            test.start(site);
        }
        test
    }

    /// Starts `site`'s replicator on its store (again, after a restart).
    fn start(&self, site: &str) {
        let rule = "collection = \"/pods\"\nitem = \"/pods/{id}\"\nid = \"json:id\"\n";
        let rules = HashMap::from([("pods".to_owned(), vec![toml::from_str(rule).unwrap()])]);
        let store = Store::open(&self.dir.join(format!("{site}.redb"))).unwrap();
        let link = Link {
            me: site.to_owned(),
            mesh: self.mesh.clone(),
        };
        let replicator = Replicator::new(
            site.to_owned(),
            rules,
            store,
            link,
            // How long a replica may take to answer: generous, as a loaded machine is slow
            // (a cut link or a crash answers at once all the same).
            Duration::from_secs(5),
        )
        .waiting_for_leaders(LEADER_WAIT)
        // Mappings go with the next operation or when the test converges (a replay), never
        // at a time the machine's load decides.
        .holding_mappings(Duration::from_secs(3600));
        lock(&self.mesh.replicators).insert(site.to_owned(), Arc::new(replicator));
    }

    /// Stops `site`'s replicator as a crash would, once no task of it runs any more.
    async fn stop(&self, site: &str) {
        let mut replicator = lock(&self.mesh.replicators).remove(site).unwrap();
        for _ in 0..200 {
            match Arc::try_unwrap(replicator) {
                Ok(stopped) => return drop(stopped),
                Err(still_used) => replicator = still_used,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("site {site}'s replicator is still in use");
    }

    pub(super) fn at(&self, site: &str) -> Arc<Replicator<Link>> {
        lock(&self.mesh.replicators)[site].clone()
    }

    pub(super) async fn request(
        &self,
        site: &str,
        plan: Plan,
        method: &str,
        target: &str,
        body: Value,
    ) -> Answer {
        let call = Call {
            service: "pods".into(),
            method: method.into(),
            target: target.into(),
            headers: vec![],
            body: body.to_string(),
        };
        self.at(site)
            .serve(&plan, call)
            .await
            .expect("the replicator serves this request")
    }

    /// Creates the pod `name` at `site`, replicated at `sites`; its meta-ID.
    pub(super) async fn create_pod(&self, site: &str, sites: &[&str], name: &str) -> String {
        let body = json!({ "name": name });
        meta_of(
            &self
                .request(site, all_of(sites), "POST", "/pods", body)
                .await,
        )
    }

    pub(super) async fn unscoped(
        &self,
        site: &str,
        method: &str,
        target: &str,
        body: Value,
    ) -> Answer {
        self.request(site, Plan::site(site), method, target, body)
            .await
    }

    pub(super) fn cut(&self, site: &str) {
        lock(&self.mesh.cut).insert(site.to_owned());
    }

    pub(super) fn heal(&self, site: &str) {
        lock(&self.mesh.cut).remove(site);
    }

    /// The items of `site`'s instance, by meta-ID, without their local IDs.
    fn state(&self, site: &str) -> BTreeMap<String, Value> {
        let replicator = self.at(site);
        let apps = lock(&self.mesh.apps);
        apps[site]
            .items
            .values()
            .map(|item| {
                let local = LocalId::from_json(&item["id"]).unwrap();
                let meta = replicator
                    .store
                    .meta_of("pods", site, &local)
                    .unwrap()
                    .unwrap();
                let mut item = item.clone();
                item.as_object_mut().unwrap().remove("id");
                (meta.to_string(), item)
            })
            .collect()
    }

    /// The `Apply` messages `site` got from other sites.
    pub(super) fn applies(&self, site: &str) -> usize {
        lock(&self.mesh.applies).get(site).copied().unwrap_or(0)
    }

    fn received(&self, site: &str, method: &str) -> usize {
        lock(&self.mesh.apps)[site]
            .received
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Replays until no site misses anything, or fails after 20 s (a loaded machine is slow).
    pub(super) async fn converge(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            let pending: usize = SITES
                .iter()
                .map(|site| {
                    self.at(site)
                        .store
                        .pending_by_site()
                        .unwrap()
                        .values()
                        .sum::<usize>()
                })
                .sum();
            if pending == 0 {
                return;
            }
            for site in SITES {
                self.at(site).replay_now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the sites did not converge");
    }
}

impl Drop for Test {
    fn drop(&mut self) {
        lock(&self.mesh.replicators).clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn all_of(sites: &[&str]) -> Plan {
    Plan::AllOf(sites.iter().map(|s| Plan::site(s)).collect())
}

pub(super) fn body(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|_| panic!("not JSON: {answer:?}"))
}

pub(super) fn meta_of(answer: &Answer) -> String {
    assert!(answer.is_success(), "{answer:?}");
    let meta = body(answer)["id"].as_str().unwrap().to_owned();
    assert_eq!(answer.header(META_ID_HEADER), Some(meta.as_str()));
    meta
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_thesis_check_purple_and_violet_are_read_at_both_sites_under_one_meta_id() {
    let test = Test::new();
    let both = all_of(&["Site1", "Site2"]);
    let purple = test
        .request(
            "Site1",
            both.clone(),
            "POST",
            "/pods",
            json!({"id": "purple"}),
        )
        .await;
    assert_eq!(purple.header(REPLICAS_HEADER), Some("Site1=ok, Site2=ok"));
    let violet = test
        .request("Site2", both, "POST", "/pods", json!({"id": "violet"}))
        .await;
    for meta in [meta_of(&purple), meta_of(&violet)] {
        for site in ["Site1", "Site2"] {
            let read = test
                .unscoped(site, "GET", &format!("/pods/{meta}"), Value::Null)
                .await;
            assert_eq!(body(&read)["id"], meta, "{site}: {read:?}");
        }
    }
    // By the local ID too, and the answer names the meta-ID.
    let read = test
        .unscoped("Site2", "GET", "/pods/purple", Value::Null)
        .await;
    assert_eq!(body(&read)["id"], meta_of(&purple));
    // Site3 was not involved: it holds nothing and knows nothing.
    assert!(test.state("Site3").is_empty());
    assert!(test.at("Site3").store.replicants().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_deletes_by_meta_id_reach_each_sites_own_local_id() {
    let test = Test::new();
    let created = test
        .request(
            "Site1",
            all_of(&SITES),
            "POST",
            "/pods",
            json!({"name": "a"}),
        )
        .await;
    let meta = meta_of(&created);
    let locals: Vec<Option<LocalId>> = test
        .at("Site1")
        .store
        .replicant(&MetaId::parse(&meta).unwrap())
        .unwrap()
        .unwrap()
        .replicas
        .into_iter()
        .map(|r| r.local_id)
        .collect();
    assert_eq!(
        locals,
        [
            Some(LocalId::Number(101)),
            Some(LocalId::Number(201)),
            Some(LocalId::Number(301))
        ]
    );

    // An unscoped update at a replica that is not the leader goes through the leader.
    let updated = test
        .unscoped(
            "Site2",
            "PATCH",
            &format!("/pods/{meta}"),
            json!({"name": "b"}),
        )
        .await;
    assert_eq!(
        updated.header(REPLICAS_HEADER),
        Some("Site1=ok, Site2=ok, Site3=ok")
    );
    for site in SITES {
        assert_eq!(test.state(site)[&meta]["name"], "b", "{site}");
    }
    // A list gathered from every site holds the resource once, under its meta-ID.
    let list = test
        .request("Site3", all_of(&SITES), "GET", "/pods", Value::Null)
        .await;
    assert_eq!(body(&list), json!([{"id": meta, "name": "b"}]));
    // A delete by a site's own local ID.
    let deleted = test
        .unscoped("Site3", "DELETE", "/pods/301", Value::Null)
        .await;
    assert!(deleted.is_success(), "{deleted:?}");
    for site in SITES {
        assert!(test.state(site).is_empty(), "{site}");
    }
    let again = test
        .unscoped("Site1", "DELETE", &format!("/pods/{meta}"), Value::Null)
        .await;
    assert_eq!(again.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_resources_are_listed_once_from_any_site_and_served_where_they_live() {
    let test = Test::new();
    let cross = |prime: &str| Plan::SpreadOver {
        parts: vec![Plan::site("Site1"), Plan::site("Site2")],
        prime: prime.into(),
    };
    let one = test
        .request(
            "Site2",
            cross("Site1"),
            "POST",
            "/pods",
            json!({"name": "one"}),
        )
        .await;
    let two = test
        .request(
            "Site1",
            cross("Site2"),
            "POST",
            "/pods",
            json!({"name": "two"}),
        )
        .await;
    let (one, two) = (meta_of(&one), meta_of(&two));
    assert_eq!(test.state("Site1").len(), 1);
    assert_eq!(test.state("Site2").len(), 1);
    for site in ["Site1", "Site2"] {
        let list = test
            .request(site, cross("Site1"), "GET", "/pods", Value::Null)
            .await;
        let mut ids: Vec<String> = body(&list)
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        let mut expected = vec![one.clone(), two.clone()];
        expected.sort();
        assert_eq!(ids, expected, "{site}");
    }
    // Read and update at the site where it does not live: routed to where it does.
    let read = test
        .unscoped("Site2", "GET", &format!("/pods/{one}"), Value::Null)
        .await;
    assert_eq!(body(&read)["name"], "one");
    let updated = test
        .unscoped(
            "Site2",
            "PATCH",
            &format!("/pods/{one}"),
            json!({"name": "uno"}),
        )
        .await;
    assert_eq!(body(&updated)["id"], one);
    assert_eq!(test.state("Site1")[&one]["name"], "uno");
    let deleted = test
        .unscoped("Site1", "DELETE", &format!("/pods/{two}"), Value::Null)
        .await;
    assert!(deleted.is_success(), "{deleted:?}");
    assert!(test.state("Site2").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_its_unreachable_leader_and_is_refused_only_after_the_wait() {
    let test = Test::new();
    let created = test
        .request("Site1", all_of(&SITES), "POST", "/pods", json!({"v": 0}))
        .await;
    let meta = meta_of(&created);
    let path = format!("/pods/{meta}");
    test.cut("Site1");
    // The leader is back while the write waits: it is made, once, everywhere.
    let write = test.unscoped("Site2", "PATCH", &path, json!({"v": 1}));
    let heal = async {
        tokio::time::sleep(LEADER_WAIT / 4).await;
        test.heal("Site1");
    };
    let (answer, ()) = tokio::join!(write, heal);
    assert!(answer.is_success(), "{answer:?}");
    for site in SITES {
        assert_eq!(test.state(site)[&meta]["v"], 1, "{site}");
        assert_eq!(test.received(site, "PATCH"), 1, "{site}");
    }
    // Not back in time: refused, after the wait, and nothing is made.
    test.cut("Site1");
    let started = std::time::Instant::now();
    let answer = test
        .unscoped("Site2", "PATCH", &path, json!({"v": 2}))
        .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(started.elapsed() >= LEADER_WAIT, "{:?}", started.elapsed());
    test.heal("Site1");
    test.converge().await;
    for site in SITES {
        assert_eq!(test.state(site)[&meta]["v"], 1, "{site}");
    }
}
