//! The leader's log at work: each operation, once appended, is applied at every replica in log
//! order (a drain per site, one at a time), replayed to a site that missed it, and applied at a
//! replica exactly once. Messages go through `Deliver`, so the log never imports the replicator.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{
    call::{Answer, Call},
    exchange::{Deliver, Mapping, Message, Reply, Sites, Unreached},
    ids::{LocalId, MetaId},
    instance::{Instance, Refusal},
    reconcile,
    records::{Applied, Change, CrossRecord, Operation, Replica, ReplicaState, Replicant},
    settles::Settles,
    store::{Carried, Store, StoreError},
};
use crate::resources::{classify, Addressed, ResourceRule};

/// Operations a drain takes from the log at once.
const DRAIN_BATCH: usize = 32;
/// How long a mapping waits, by default, for an operation to travel with
/// (`Log::map_unless_carried`).
const MAPPING_WAIT: Duration = Duration::from_millis(100);

type Waiter = oneshot::Sender<Result<Reply, Unreached>>;

/// The log of the site `site`, kept in `store`.
pub struct Log {
    site: String,
    store: Arc<Store>,
    /// Replicas' answers, recorded in the log together.
    settles: Settles,
    replica_timeout: Duration,
    /// How long a mapping waits for an operation to travel with.
    pub(super) mapping_wait: Duration,
    /// One drain at a time per site, so that a site gets the log in order.
    drains: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Requests waiting for their operation to be applied at a site.
    waiting: Mutex<HashMap<(u64, String), Waiter>>,
}

impl Log {
    pub fn new(site: String, store: Arc<Store>, replica_timeout: Duration) -> Log {
        Log {
            site,
            settles: Settles::new(store.clone()),
            store,
            replica_timeout,
            mapping_wait: MAPPING_WAIT,
            drains: Mutex::default(),
            waiting: Mutex::default(),
        }
    }

    /// Offers `operation` to each of `sites` (after what they missed before it) and waits, at
    /// most the replica timeout, for each to apply it.
    pub async fn apply_everywhere<D: Deliver>(
        self: &Arc<Self>,
        to: &Arc<D>,
        operation: &Operation,
        sites: &[String],
    ) -> Vec<(String, Result<Reply, Unreached>)> {
        let mut receivers = Vec::with_capacity(sites.len());
        for site in sites {
            let (sender, receiver) = oneshot::channel();
            lock(&self.waiting).insert((operation.seq, site.clone()), sender);
            receivers.push((site.clone(), receiver));
            tokio::spawn(self.clone().drain(to.clone(), site.clone()));
        }
        let mut results = Vec::with_capacity(sites.len());
        let deadline = tokio::time::Instant::now() + self.replica_timeout;
        for (site, receiver) in receivers {
            let result = match tokio::time::timeout_at(deadline, receiver).await {
                Ok(Ok(result)) => result,
                // The drain ended without reaching this operation: a later one will.
                Ok(Err(_)) | Err(_) => Err(Unreached::Timeout {
                    site: site.clone(),
                    after: self.replica_timeout,
                }),
            };
            lock(&self.waiting).remove(&(operation.seq, site.clone()));
            results.push((site, result));
        }
        results
    }

    /// Applies at `site`, in log order, every operation it has yet to apply; stops at the first
    /// that does not reach it (the rest wait for the next drain).
    pub async fn drain<D: Deliver>(self: Arc<Self>, to: Arc<D>, site: String) {
        let gate = lock(&self.drains).entry(site.clone()).or_default().clone();
        let _one_at_a_time = gate.lock().await;
        loop {
            let operations = match self.store.pending(&site, DRAIN_BATCH) {
                Ok(operations) if operations.is_empty() => return,
                Ok(operations) => operations,
                Err(cause) => return warn!(%site, "replay stopped: {cause}"),
            };
            for (mappings, operation) in with_mappings(operations) {
                if !self.apply_at(&to, &site, mappings, operation).await {
                    return;
                }
            }
        }
    }

    /// Delivers `operation` to `site` with the `mappings` before it, and settles the answer.
    /// `false`: it did not reach the site.
    async fn apply_at<D: Deliver>(
        self: &Arc<Self>,
        to: &Arc<D>,
        site: &str,
        mappings: Vec<Operation>,
        operation: Operation,
    ) -> bool {
        let message = match self.message(&operation, &mappings) {
            Ok(message) => message,
            Err(cause) => {
                warn!(%site, "replay stopped: {cause}");
                return false;
            }
        };
        let reply = match to.deliver(site, message, self.replica_timeout).await {
            Ok(reply) => reply,
            Err(cause) => {
                debug!(%site, seq = operation.seq, "operation left for later: {cause}");
                let mut waiting = lock(&self.waiting);
                let theirs: Vec<_> = waiting.keys().filter(|(_, s)| s == site).cloned().collect();
                for key in theirs {
                    if let Some(waiter) = waiting.remove(&key) {
                        let _ = waiter.send(Err(cause.clone()));
                    }
                }
                return false;
            }
        };
        let mapped = Applied {
            status: 204,
            local_id: None,
        };
        let mut answers: Vec<(u64, Applied)> =
            mappings.iter().map(|m| (m.seq, mapped.clone())).collect();
        answers.push((
            operation.seq,
            Applied {
                status: reply.answer.status,
                local_id: reply.local_id.clone(),
            },
        ));
        if let Err(cause) = self.settles.settle(site, answers).await {
            warn!(%site, "replay stopped: {cause}");
            return false;
        }
        let waiter = lock(&self.waiting).remove(&(operation.seq, site.to_owned()));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(Ok(reply));
            }
            // A create applied after its request was answered: the request sent the mapping
            // without this replica, so it goes again.
            None if reply.local_id.is_some() => {
                if let Change::Create(_) = operation.change {
                    self.map_everywhere(&operation.meta_id, to);
                }
            }
            None => {}
        }
        true
    }

    /// The message that applies `operation`, with the `mappings` before it, at a replica.
    fn message(
        &self,
        operation: &Operation,
        mappings: &[Operation],
    ) -> Result<Message, StoreError> {
        let mappings = mappings
            .iter()
            .map(|mapping| {
                Ok(Mapping {
                    op_id: mapping.op_id(&self.site),
                    replicant: self.store.replicant(&mapping.meta_id)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let replicant = match &operation.change {
            Change::Register(_) | Change::Forget(_) => None,
            _ => self.store.replicant(&operation.meta_id)?,
        };
        Ok(Message::Apply {
            op_id: operation.op_id(&self.site),
            replicant,
            change: operation.change.clone(),
            mappings,
        })
    }

    /// Appends a `Map` of `meta_id` for every replica but this site (its leader), and starts
    /// their drains: each replica then holds the leader's whole mapping.
    pub fn map_everywhere<D: Deliver>(self: &Arc<Self>, meta_id: &MetaId, to: &Arc<D>) {
        let replicant = match self.store.replicant(meta_id) {
            Ok(Some(replicant)) => replicant,
            Ok(None) => return,
            Err(cause) => return warn!("the mapping of {meta_id} was not sent: {cause}"),
        };
        let others = replicant.sites_but(&self.site);
        if others.is_empty() {
            return;
        }
        match self.store.append(None, meta_id, Change::Map, &others) {
            Ok(mapping) => self.send_mapping(&mapping, to),
            Err(cause) => warn!("the mapping of {meta_id} was not sent: {cause}"),
        }
    }

    /// Sends `mapping`, appended to the log, to each of its sites (`map_unless_carried`).
    pub fn send_mapping<D: Deliver>(self: &Arc<Self>, mapping: &Operation, to: &Arc<D>) {
        for site in mapping.applied.keys().cloned() {
            // Held weakly while it waits: a replicator that stops meanwhile leaves the mapping
            // to its replay.
            let (log, to) = (Arc::downgrade(self), Arc::downgrade(to));
            let (wait, seq) = (self.mapping_wait, mapping.seq);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let (Some(log), Some(to)) = (log.upgrade(), to.upgrade()) {
                    log.map_unless_carried(to, site, seq).await;
                }
            });
        }
    }

    /// A mapping waits `mapping_wait` for the next operation to `site`, to travel with it (a
    /// round trip of its own would hold up that operation, a create's next one in particular:
    /// replicas only need it to know each other's IDs); then, if none carried it, goes alone.
    async fn map_unless_carried<D: Deliver>(self: Arc<Self>, to: Arc<D>, site: String, seq: u64) {
        if !matches!(self.store.is_pending(&site, seq), Ok(false)) {
            self.drain(to, site).await;
        }
    }

    /// Starts a drain for every site that has operations to apply (one that is draining
    /// already just goes on).
    pub fn replay_now<D: Deliver>(self: &Arc<Self>, to: &Arc<D>) {
        match self.store.pending_by_site() {
            Ok(pending) => {
                for site in pending.into_keys() {
                    tokio::spawn(self.clone().drain(to.clone(), site));
                }
            }
            Err(cause) => warn!("replay: {cause}"),
        }
    }

    /// At a replica: applies one operation of a leader's log, unless it was applied already.
    /// The `mappings` it carries are recorded as applied with the operation's intent when it
    /// records one (a create, a write), and on their own before it otherwise.
    pub async fn apply_once<S: Sites>(
        &self,
        here: &Instance<'_, S>,
        op_id: &str,
        replicant: Option<Replicant>,
        change: Change,
        mappings: Vec<Mapping>,
    ) -> Result<Reply, Refusal> {
        let refused = |cause| self.refused(cause);
        let carried = self.not_applied(mappings)?;
        let applied = self.store.applied(op_id).map_err(refused)?;
        // A create or a write not applied yet records the carried mappings with its intent
        // (`intended`; a write this site holds no replica for, before its 404); anything else
        // records them here, in a step of their own.
        let intends = matches!(change, Change::Create(_) | Change::Write(_));
        if applied.is_some() || !intends {
            self.store.record_carried(&carried).map_err(refused)?;
        }
        if let Some(applied) = applied {
            return Ok(Reply {
                answer: Answer::from_cheops(
                    applied.status,
                    format!("operation {op_id} was applied already"),
                ),
                local_id: applied.local_id,
            });
        }
        match change {
            Change::Register(record) => {
                let done = format!("{} registered", record.meta_id);
                self.record_bookkeeping(op_id, None, Some(&record), done)
            }
            Change::Map => {
                let replicant = replicant.ok_or_else(|| self.no_replicant(op_id))?;
                let done = format!("{} mapped", replicant.meta_id);
                self.record_bookkeeping(op_id, Some(&replicant), None, done)
            }
            Change::Forget(record) => {
                self.store.forget_cross(&record).map_err(refused)?;
                let done = format!("{} forgotten", record.meta_id);
                self.record_bookkeeping(op_id, None, None, done)
            }
            Change::Create(call) => {
                let mut replicant = replicant.ok_or_else(|| self.no_replicant(op_id))?;
                let (answer, local_id, rule) =
                    match self.begin(here, op_id, &call, &carried).await? {
                        Some((rule, (answer, local_id))) => (answer, Some(local_id), rule),
                        None => here.create_at_instance(call).await?,
                    };
                match replicant.replicas.iter_mut().find(|r| r.site == self.site) {
                    Some(replica) => {
                        replica.local_id = local_id.clone();
                        replica.state = match local_id {
                            Some(_) => ReplicaState::Ok,
                            None => ReplicaState::Failed(answer.status),
                        };
                    }
                    None => replicant.replicas.push(Replica {
                        site: self.site.clone(),
                        local_id: local_id.clone(),
                        state: ReplicaState::Ok,
                    }),
                }
                let applied = Applied {
                    status: answer.status,
                    local_id: local_id.clone(),
                };
                // A site whose instance refused the create takes no part in the replicant.
                let taking_part = local_id.is_some().then_some(&replicant);
                let created = local_id.is_some().then_some(self.site.as_str());
                self.store
                    .record_applied(op_id, &applied, taking_part, None, None, created)
                    .map_err(refused)?;
                Ok(Reply {
                    answer: here.named(&rule, answer, &replicant.meta_id, local_id.as_ref()),
                    local_id,
                })
            }
            Change::Write(mut call) => {
                let replicant = replicant.ok_or_else(|| self.no_replicant(op_id))?;
                let local_id = here.live_local_id(&replicant.meta_id).map_err(refused)?;
                let rule = match classify(here.rules_of(&call.service), &call.method, &call.target)
                {
                    Addressed::Write(rule, _) => Some(rule.clone()),
                    _ => None,
                };
                let (Some(local_id), Some(rule)) = (local_id, rule) else {
                    self.store.record_carried(&carried).map_err(refused)?;
                    let applied = Applied {
                        status: 404,
                        local_id: None,
                    };
                    self.store
                        .record_applied(op_id, &applied, Some(&replicant), None, None, None)
                        .map_err(refused)?;
                    return Ok(Reply {
                        answer: Answer::from_cheops(
                            404,
                            format!("site {} holds no replica for operation {op_id}", self.site),
                        ),
                        local_id: None,
                    });
                };
                call.target = rule.item.with_id(&call.target, &local_id.to_string());
                let deleting = call.method == "DELETE";
                let answer = match self.begin_write(here, op_id, &call, &carried).await? {
                    Some(answer) => answer,
                    None => here.send_to_instance(call).await?,
                };
                let applied = Applied {
                    status: answer.status,
                    local_id: None,
                };
                // Gone from the instance: its local ID may name a new resource from now on.
                let gone = deleting && (answer.is_success() || answer.status == 404);
                let forget = gone.then_some((self.site.as_str(), &local_id));
                self.store
                    .record_applied(op_id, &applied, Some(&replicant), None, forget, None)
                    .map_err(refused)?;
                Ok(Reply {
                    answer: here.named(&rule, answer, &replicant.meta_id, Some(&local_id)),
                    local_id: None,
                })
            }
        }
    }

    /// Before a create reaches the instance: its intent recorded durably, or, when an
    /// earlier copy got that far (and the daemon died before its result was recorded), what
    /// the instance shows it made then.
    async fn begin<S: Sites>(
        &self,
        here: &Instance<'_, S>,
        op_id: &str,
        call: &Call,
        carried: &[Carried],
    ) -> Result<Option<(ResourceRule, (Answer, LocalId))>, Refusal> {
        if !self.intended(op_id, carried)? {
            return Ok(None);
        }
        let rule = match classify(here.rules_of(&call.service), &call.method, &call.target) {
            Addressed::Create(rule) => rule.clone(),
            _ => return Ok(None),
        };
        let found = reconcile::created(here, &rule, call).await?;
        if found.is_some() {
            info!(site = %self.site, %op_id, "a create sent before a crash had taken effect: not sent again");
        }
        Ok(found.map(|found| (rule, found)))
    }

    /// `begin`, for an update or a delete (its target this site's local path).
    async fn begin_write<S: Sites>(
        &self,
        here: &Instance<'_, S>,
        op_id: &str,
        call: &Call,
        carried: &[Carried],
    ) -> Result<Option<Answer>, Refusal> {
        if !self.intended(op_id, carried)? {
            return Ok(None);
        }
        let found = reconcile::written(here, call).await?;
        if found.is_some() {
            info!(site = %self.site, %op_id, "a {} sent before a crash had taken effect: not sent again", call.method);
        }
        Ok(found)
    }

    /// Whether `op_id` was sent to the instance before without its result being recorded;
    /// if not, records now that it is about to be (nothing is sent if that fails). The
    /// `carried` mappings are recorded as applied in the same step, or on their own.
    fn intended(&self, op_id: &str, carried: &[Carried]) -> Result<bool, Refusal> {
        let refused = |cause| self.refused(cause);
        if self.store.intended(op_id).map_err(refused)? {
            self.store.record_carried(carried).map_err(refused)?;
            return Ok(true);
        }
        self.store.record_intent(op_id, carried).map_err(refused)?;
        Ok(false)
    }

    /// The `mappings` an operation carries that this site has not applied yet; each must
    /// hold its replicant.
    fn not_applied(&self, mappings: Vec<Mapping>) -> Result<Vec<Carried>, Refusal> {
        let mut carried = Vec::with_capacity(mappings.len());
        for Mapping { op_id, replicant } in mappings {
            if self
                .store
                .applied(&op_id)
                .map_err(|cause| self.refused(cause))?
                .is_some()
            {
                continue;
            }
            let replicant = replicant.ok_or_else(|| self.no_replicant(&op_id))?;
            carried.push(Carried { op_id, replicant });
        }
        Ok(carried)
    }

    fn refused(&self, cause: StoreError) -> Refusal {
        Refusal::Store {
            site: self.site.clone(),
            store: self.store.path().to_owned(),
            cause: Box::new(cause),
        }
    }

    /// An operation that changes only what this site knows (a registration, a mapping, a
    /// forgotten cross resource), never its instance: recorded as applied, answered 204.
    fn record_bookkeeping(
        &self,
        op_id: &str,
        replicant: Option<&Replicant>,
        cross: Option<&CrossRecord>,
        done: String,
    ) -> Result<Reply, Refusal> {
        let applied = Applied {
            status: 204,
            local_id: None,
        };
        self.store
            .record_applied(op_id, &applied, replicant, cross, None, None)
            .map_err(|cause| self.refused(cause))?;
        Ok(Reply {
            answer: Answer::from_cheops(204, done),
            local_id: None,
        })
    }

    fn no_replicant(&self, op_id: &str) -> Refusal {
        Refusal::NoReplicant {
            site: self.site.clone(),
            op_id: op_id.to_owned(),
        }
    }
}

/// `operations`, in log order, as messages: each mapping travels with the operation after it
/// (the last mappings with the last of them).
fn with_mappings(operations: Vec<Operation>) -> Vec<(Vec<Operation>, Operation)> {
    let mut messages = Vec::new();
    let mut mappings = Vec::new();
    for operation in operations {
        match operation.change {
            Change::Map => mappings.push(operation),
            _ => messages.push((std::mem::take(&mut mappings), operation)),
        }
    }
    if let Some(last) = mappings.pop() {
        messages.push((mappings, last));
    }
    messages
}

/// A poisoned lock only means another request panicked; the map itself is still whole.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
