//! Carries out replication and cross over the `Sites` seam: creates under a meta-ID, the
//! leader's log (append durably, then apply at every replica in log order, exactly once),
//! replay of what a replica missed, ID rewriting around this site's instance, and the
//! messages other sites send.
use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use dsl::Plan;
use serde::Serialize;
use tracing::{debug, warn};

use super::{
    call::{Answer, Call},
    decide::{self, chosen, statuses, Action, META_ID_HEADER, REPLICAS_HEADER},
    exchange::{Deliver, Message, Reply, Sites, Unreached},
    gather::Gather,
    ids::MetaId,
    instance::{Instance, Known, Refusal, RuleSet},
    lists::ListShape,
    log::Log,
    records::{Change, CrossRecord, Replicant},
    store::{Store, StoreError},
};
use crate::resources::{classify, Addressed, ResourceRule};

/// How often a write waiting for its leader tries again.
const LEADER_POLL: Duration = Duration::from_millis(200);

pub struct Replicator<S: Sites> {
    site: String,
    /// Replaced whole when the configuration changes; a request keeps the rules it read.
    rules: ArcSwap<RuleSet>,
    store: Arc<Store>,
    log: Arc<Log>,
    sites: S,
    replica_timeout: Duration,
    /// How long a write waits for its leader to be reachable.
    leader_wait: Duration,
    /// Held while this site applies a leader's operation: a leader that sends an operation
    /// again (its replay after a crash) waits for a first delivery still under way, and then
    /// finds it applied, instead of applying it beside it.
    applying: Arc<tokio::sync::Mutex<()>>,
}

/// What `cheops replicas` shows.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ReplicasView {
    pub site: String,
    pub replicants: Vec<Replicant>,
    pub cross: Vec<CrossRecord>,
    /// Per site, the operations of this site's log it has yet to apply.
    pub pending: std::collections::BTreeMap<String, usize>,
}

impl<S: Sites> Replicator<S> {
    pub fn new(
        site: String,
        rules: HashMap<String, Vec<ResourceRule>>,
        store: Store,
        sites: S,
        replica_timeout: Duration,
    ) -> Replicator<S> {
        let store = Arc::new(store);
        Replicator {
            log: Arc::new(Log::new(site.clone(), store.clone(), replica_timeout)),
            site,
            rules: ArcSwap::from_pointee(rule_set(rules)),
            store,
            sites,
            replica_timeout,
            leader_wait: Duration::ZERO,
            applying: Arc::default(),
        }
    }

    /// A write whose leader cannot be reached waits for it, at most `wait`, instead of being
    /// refused at once (the default).
    pub fn waiting_for_leaders(mut self, wait: Duration) -> Replicator<S> {
        self.leader_wait = wait;
        self
    }

    /// Mappings wait `wait` for an operation to travel with (replays send them at once).
    #[cfg(test)]
    pub(crate) fn holding_mappings(mut self, wait: Duration) -> Replicator<S> {
        Arc::get_mut(&mut self.log)
            .expect("a new replicator's log is its own")
            .mapping_wait = wait;
        self
    }

    fn rules(&self, service: &str) -> Arc<[ResourceRule]> {
        self.rules
            .load()
            .get(service)
            .cloned()
            .unwrap_or_else(|| Arc::new([]))
    }

    /// The resource rules of the requests that start from now on.
    pub fn set_rules(&self, rules: HashMap<String, Vec<ResourceRule>>) {
        self.rules.store(Arc::new(rule_set(rules)));
    }

    /// The sites it reaches, this one's instances among them.
    pub fn sites(&self) -> &S {
        &self.sites
    }

    /// The store could not be read or written (disk full, I/O error): nothing was
    /// acknowledged, and the request may be made again.
    fn store_failed(&self, cause: StoreError) -> Answer {
        warn!(site = %self.site, store = %self.store.path().display(), "{cause}");
        let mut answer = Answer::from_cheops(
            503,
            format!(
                "site {}'s store {} cannot take this now, nothing was done: {cause}",
                self.site,
                self.store.path().display()
            ),
        );
        answer.headers.push(("retry-after".into(), "1".into()));
        answer
    }

    pub fn view(&self) -> Result<ReplicasView, StoreError> {
        Ok(ReplicasView {
            site: self.site.clone(),
            replicants: self.store.replicants()?,
            cross: self.store.crosses()?,
            pending: self.store.pending_by_site()?,
        })
    }

    /// A request that arrived with `plan`. `None`: not ours, the proxy routes it as usual.
    pub async fn serve(self: &Arc<Self>, plan: &Plan, call: Call) -> Option<Answer> {
        let rules = self.rules(&call.service);
        let addressed = classify(&rules, &call.method, &call.target);
        // A resource this site already knows is handled as its records say, whatever the scope.
        if let Addressed::Read(_, id) | Addressed::Write(_, id) = addressed {
            match self.instance().known(&call.service, id) {
                Ok(Known::Unknown) => {}
                Ok(_) => return Some(self.serve_here(call, false).await),
                Err(cause) => return Some(self.store_failed(cause)),
            }
        }
        let shape = match addressed {
            Addressed::List(rule) => ListShape::of(rule),
            _ => ListShape::default(),
        };
        match decide::decide(addressed, plan) {
            Action::Route if matches!(plan, Plan::Site(site) if site.as_str() == self.site) => {
                Some(self.serve_here(call, false).await)
            }
            Action::Route => None,
            Action::Create { sites } => Some(self.create(sites, call).await),
            Action::CreateCross { prime, sites } => {
                Some(self.create_cross(prime, sites, call).await)
            }
            Action::List { sites } => {
                let owner = |meta: &MetaId| self.owner(meta, &sites);
                Some(self.gather().list(sites.clone(), call, shape, owner).await)
            }
            Action::FanOut { sites } => Some(self.gather().fan_out(sites, call).await),
            Action::FirstFound { sites } => Some(self.gather().first_found(sites, call).await),
            Action::NotSupported(why) => Some(Answer::from_cheops(501, why)),
        }
    }

    /// A message from another site.
    pub async fn handle(self: &Arc<Self>, message: Message) -> Result<Reply, Refusal> {
        match message {
            Message::Execute(call) => Ok(answered(self.serve_here(call, true).await)),
            Message::Write { meta_id, call } => Ok(answered(self.order(&meta_id, call).await)),
            Message::CreateCross {
                meta_id,
                call,
                sites,
            } => self.create_cross_here(&meta_id, call, sites).await,
            Message::Apply {
                op_id,
                replicant,
                change,
                mappings,
            } => {
                // Run to completion in a task of its own: if the leader's connection drops
                // (it crashed), the operation is still recorded as applied once it was.
                let replicator = self.clone();
                let applying = tokio::spawn(async move {
                    let _one_at_a_time = replicator.applying.lock().await;
                    let here = replicator.instance();
                    let log = &replicator.log;
                    log.apply_once(&here, &op_id, replicant, change, mappings)
                        .await
                });
                applying.await.unwrap_or_else(|failed| {
                    Err(Refusal::Interrupted {
                        site: self.site.clone(),
                        cause: failed,
                    })
                })
            }
        }
    }

    /// Serves `call` at this site: a known resource by its records, anything else at this
    /// site's instance with IDs rewritten. `forwarded`: another site chose this one, so the
    /// resource is not looked for elsewhere.
    async fn serve_here(self: &Arc<Self>, mut call: Call, forwarded: bool) -> Answer {
        let rules = self.rules(&call.service);
        let addressed = classify(&rules, &call.method, &call.target);
        let (rule, id, writes) = match addressed {
            Addressed::Read(rule, id) => (rule, id, false),
            Addressed::Write(rule, id) => (rule, id, true),
            Addressed::Create(rule) | Addressed::List(rule) => {
                let rule = rule.clone();
                return self.instance().at_instance(Some(&rule), call).await;
            }
            Addressed::Other => return self.instance().at_instance(None, call).await,
        };
        let rule = rule.clone();
        let known = match self.instance().known(&call.service, id) {
            Ok(known) => known,
            Err(cause) => return self.store_failed(cause),
        };
        match known {
            Known::Unknown => self.instance().at_instance(Some(&rule), call).await,
            Known::Replicated(replicant) => {
                call.target = rule.item.with_id(&call.target, replicant.meta_id.as_str());
                if writes {
                    return self.write_through_leader(&replicant, call).await;
                }
                // Not the recorded local ID alone: the instance may have lost the resource
                // and given its ID to another (`live_replica_id`).
                let here = match self.instance().live_replica_id(&replicant) {
                    Ok(here) => here,
                    Err(cause) => return self.store_failed(cause),
                };
                match here {
                    Some(local_id) => {
                        call.target = rule.item.with_id(&call.target, &local_id.to_string());
                        self.instance().at_instance(Some(&rule), call).await
                    }
                    None if forwarded => Answer::from_cheops(
                        404,
                        format!(
                            "site {} holds no replica of {} yet",
                            self.site, replicant.meta_id
                        ),
                    ),
                    None => {
                        let elsewhere = replicant.sites_but(&self.site);
                        self.gather().first_found(elsewhere, call).await
                    }
                }
            }
            Known::Cross(record) => {
                if record.site == self.site {
                    call.target = rule
                        .item
                        .with_id(&call.target, &record.local_id.to_string());
                    let deleting = call.method == "DELETE";
                    let answer = self.instance().at_instance(Some(&rule), call).await;
                    if deleting && answer.is_success() {
                        self.forget_cross_everywhere(record).await;
                    }
                    answer
                } else if forwarded {
                    Answer::from_cheops(
                        404,
                        format!("{} lives at site {}, not here", record.meta_id, record.site),
                    )
                } else {
                    call.target = rule.item.with_id(&call.target, record.meta_id.as_str());
                    self.gather()
                        .first_found(vec![record.site.clone()], call)
                        .await
                }
            }
        }
    }

    async fn write_through_leader(self: &Arc<Self>, replicant: &Replicant, call: Call) -> Answer {
        if replicant.leader == self.site {
            return self.order(&replicant.meta_id, call).await;
        }
        let message = Message::Write {
            meta_id: replicant.meta_id.clone(),
            call: call.clone(),
        };
        // Only a message that surely never reached the leader is sent again: one that may have
        // reached it may be in its log already.
        let deadline = tokio::time::Instant::now() + self.leader_wait;
        let cause = loop {
            // The leader answers once its replicas did, or their timeout passed.
            let within = self.replica_timeout * 2;
            match self
                .deliver_within(&replicant.leader, message.clone(), within)
                .await
            {
                Ok(reply) => return reply.answer,
                Err(cause) if cause.not_delivered() && tokio::time::Instant::now() < deadline => {
                    debug!(leader = %replicant.leader, meta_id = %replicant.meta_id, "a write waits for its leader: {cause}");
                    tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + LEADER_POLL),
                    )
                    .await;
                }
                Err(cause) => break cause,
            }
        };
        let waited = match cause.not_delivered() {
            true if !self.leader_wait.is_zero() => format!(" (waited {:?})", self.leader_wait),
            _ => String::new(),
        };
        Answer::from_cheops(
            503,
            format!(
                "the {} of {} may not be made: its leader, site {}, orders every write, and {cause}{waited}; retry when it is back",
                call.method, replicant.meta_id, replicant.leader
            ),
        )
    }

    /// At the leader: appends the write to the log, then applies it at every replica.
    async fn order(self: &Arc<Self>, meta_id: &MetaId, call: Call) -> Answer {
        let replicant = match self.store.replicant(meta_id) {
            Ok(Some(replicant)) => replicant,
            Ok(None) => {
                return Answer::from_cheops(404, format!("site {} knows no {meta_id}", self.site))
            }
            Err(cause) => return self.store_failed(cause),
        };
        if replicant.leader != self.site {
            return Answer::from_cheops(
                409,
                format!(
                    "site {} is not the leader of {meta_id}; site {} is",
                    self.site, replicant.leader
                ),
            );
        }
        if replicant.deleted {
            return Answer::from_cheops(404, format!("{meta_id} was deleted"));
        }
        let deleting = call.method == "DELETE";
        let marked = deleting.then(|| Replicant {
            deleted: true,
            ..replicant.clone()
        });
        let sites: Vec<String> = replicant.replicas.iter().map(|r| r.site.clone()).collect();
        let operation =
            match self
                .store
                .append(marked.as_ref(), meta_id, Change::Write(call), &sites)
            {
                Ok(operation) => operation,
                Err(cause) => return self.store_failed(cause),
            };
        let results = self.log.apply_everywhere(self, &operation, &sites).await;
        self.composed(meta_id, &results)
    }

    /// A replicated create, led by this site.
    async fn create(self: &Arc<Self>, sites: Vec<String>, call: Call) -> Answer {
        let meta_id = match self.new_meta_id(&call, &sites) {
            Ok(meta_id) => meta_id,
            Err(cause) => return self.store_failed(cause),
        };
        let replicant = Replicant::created(
            meta_id.clone(),
            call.service.clone(),
            self.site.clone(),
            &sites,
        );
        let operation =
            match self
                .store
                .append(Some(&replicant), &meta_id, Change::Create(call), &sites)
            {
                Ok(operation) => operation,
                Err(cause) => return self.store_failed(cause),
            };
        let results = self.log.apply_everywhere(self, &operation, &sites).await;
        match self.store.drop_refused(&meta_id, &self.site) {
            // Refused by every site: nothing was made, the client gets the application's answer.
            Ok(None) => chosen(&self.site, &results)
                .cloned()
                .unwrap_or_else(|| Answer::from_cheops(502, "no site answered".into())),
            Ok(Some(mapping)) => {
                if let Some(mapping) = mapping {
                    self.log.send_mapping(&mapping, self);
                }
                self.composed(&meta_id, &results)
            }
            Err(cause) => self.store_failed(cause),
        }
    }

    /// The answer to a replicated request: the chosen site's, with every site's status. When
    /// no replica answered yet, the operation is in the log all the same: accepted.
    fn composed(&self, meta_id: &MetaId, results: &[(String, Result<Reply, Unreached>)]) -> Answer {
        let mut answer = match chosen(&self.site, results) {
            Some(answer) => answer.clone(),
            None => Answer::new(
                202,
                "application/json",
                serde_json::json!({ "meta_id": meta_id, "accepted": "no replica answered yet; each gets the operation when it is back" })
                    .to_string(),
            ),
        };
        answer.set_header(REPLICAS_HEADER, statuses(results));
        answer.set_header(META_ID_HEADER, meta_id.to_string());
        answer
    }

    /// Offers every site the operations it missed, now and then every `every`.
    pub fn spawn_replay(self: &Arc<Self>, every: Duration) {
        let replicator = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                replicator.replay_now();
            }
        });
    }

    /// Offers a site the operations it missed as soon as it comes back: `ups` names each site
    /// whose heartbeat is answered again.
    pub fn spawn_replay_on(self: &Arc<Self>, mut ups: tokio::sync::broadcast::Receiver<String>) {
        let replicator = self.clone();
        tokio::spawn(async move {
            loop {
                match ups.recv().await {
                    Ok(site) => {
                        debug!(%site, "site is back: replaying what it missed");
                        tokio::spawn(replicator.log.clone().drain(replicator.clone(), site));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        replicator.replay_now()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Starts a drain for every site that has operations to apply (one that is draining
    /// already just goes on).
    pub fn replay_now(self: &Arc<Self>) {
        self.log.replay_now(self);
    }

    /// This site's instance of the services.
    fn instance(&self) -> Instance<'_, S> {
        Instance {
            site: &self.site,
            rules: self.rules.load_full(),
            store: &self.store,
            sites: &self.sites,
        }
    }

    /// Gathering answers from several sites, through this replicator.
    fn gather(self: &Arc<Self>) -> Gather<'_, Self> {
        Gather {
            here: &self.site,
            to: self,
            limit: self.replica_timeout,
        }
    }

    /// `message` to `site`, handled here when it is this site, else sent, within `limit`.
    async fn deliver_within(
        self: &Arc<Self>,
        site: &str,
        message: Message,
        limit: Duration,
    ) -> Result<Reply, Unreached> {
        if site == self.site {
            return self
                .handle_here(message)
                .await
                .map_err(|refusal| Unreached::Unreachable {
                    site: site.to_owned(),
                    why: refusal.to_string(),
                });
        }
        match tokio::time::timeout(limit, self.sites.deliver(site, message)).await {
            Ok(result) => result,
            Err(_) => Err(Unreached::Timeout {
                site: site.to_owned(),
                after: limit,
            }),
        }
    }
}

impl<S: Sites> Deliver for Replicator<S> {
    fn deliver(
        self: &Arc<Self>,
        site: &str,
        message: Message,
        limit: Duration,
    ) -> impl Future<Output = Result<Reply, Unreached>> + Send {
        self.deliver_within(site, message, limit)
    }
}

impl<S: Sites> Replicator<S> {
    /// `handle`, type-erased: handling a message may deliver another to this same site, and
    /// a future cannot contain itself.
    fn handle_here(
        self: &Arc<Self>,
        message: Message,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, Refusal>> + Send>> {
        let replicator = self.clone();
        Box::pin(async move { replicator.handle(message).await })
    }
}

fn rule_set(rules: HashMap<String, Vec<ResourceRule>>) -> RuleSet {
    rules
        .into_iter()
        .map(|(service, rules)| (service, Arc::from(rules)))
        .collect()
}

fn answered(answer: Answer) -> Reply {
    Reply {
        answer,
        local_id: None,
    }
}

mod cross;
mod lookup;
pub use lookup::ContentRoute;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_creates;
