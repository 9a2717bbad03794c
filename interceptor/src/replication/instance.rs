//! This site's instance of a service with resource rules: calls to it with meta-IDs turned
//! into its local IDs, its answers with local IDs turned back into meta-IDs, and what this site
//! knows of the resource a path names.
use std::{collections::HashMap, sync::Arc};

use tracing::warn;

use super::{
    call::{Answer, Call},
    exchange::{Sites, Unreached},
    ids::{locals_to_metas, metas_in_query, metas_to_locals, LocalId, MetaId},
    records::{CrossRecord, Replicant},
    store::{Store, StoreError},
};
use crate::http::SERVED_BY;
use crate::resources::{classify, Addressed, IdSource, JsonField, ResourceRule};

/// The resource rules of each service, as the running configuration gives them.
pub type RuleSet = HashMap<String, Arc<[ResourceRule]>>;

/// Why a site could not take its part of a collaboration; the sender keeps the operation and
/// offers it again later.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("site {site}'s store {}: {cause}", store.display())]
    Store {
        site: String,
        store: std::path::PathBuf,
        cause: Box<StoreError>,
    },
    #[error("site {site}'s instance of service '{service}' gave no answer: {cause}")]
    Instance {
        site: String,
        service: String,
        cause: Unreached,
    },
    #[error("site {site} could not finish applying an operation: {cause}")]
    Interrupted {
        site: String,
        cause: tokio::task::JoinError,
    },
    #[error("site {site} got operation {op_id} without the replicant it changes")]
    NoReplicant { site: String, op_id: String },
    #[error("site {site} has no resource rule for a create of service '{service}' at {target}")]
    NoRule {
        site: String,
        service: String,
        target: String,
    },
}

/// What this site knows of a resource that a path names.
pub enum Known {
    Unknown,
    Replicated(Replicant),
    Cross(CrossRecord),
}

/// This site's instances of the services with resource rules, and what its store knows of them.
pub struct Instance<'a, S: Sites> {
    pub site: &'a str,
    pub rules: Arc<RuleSet>,
    pub store: &'a Store,
    pub sites: &'a S,
}

impl<S: Sites> Instance<'_, S> {
    pub fn rules_of(&self, service: &str) -> &[ResourceRule] {
        self.rules.get(service).map_or(&[], |rules| rules)
    }

    /// `call` at this site's instance: meta-IDs in its body become local IDs, and the IDs of
    /// known resources in the answer become meta-IDs.
    pub async fn at_instance(&self, rule: Option<&ResourceRule>, call: Call) -> Answer {
        let service = call.service.clone();
        let mut answer = match self.send_to_instance(call).await {
            Ok(answer) => answer,
            Err(refusal) => return Answer::from_cheops(502, refusal.to_string()),
        };
        if let Some(
            rule @ ResourceRule {
                id: IdSource::Json(pointer),
                ..
            },
        ) = rule
        {
            let meta = |id: &LocalId| self.store.meta_of(&service, self.site, id).ok().flatten();
            let items = rule.list.as_ref().map(JsonField::pointer);
            if let Some(body) = locals_to_metas(&answer.body, items, pointer, meta) {
                answer.body = body;
            }
        }
        answer.set_header(SERVED_BY.as_str(), self.site.to_owned());
        answer
    }

    /// This site's local ID for `meta`, replica or cross, unless that ID names another resource
    /// now. Once the resource was deleted here (even by a delete whose record a crash
    /// prevented), the instance may give its ID to a new resource (json-server gives the
    /// highest ID plus one), and nothing sent for `meta` may reach that one.
    pub fn live_local_id(&self, meta: &MetaId) -> Result<Option<LocalId>, StoreError> {
        if let Some(replicant) = self.store.replicant(meta)? {
            return self.live_replica_id(&replicant);
        }
        let found = self
            .store
            .cross(meta)?
            .filter(|record| record.site == self.site);
        match found {
            Some(record) => self.unless_given_to_another(meta, &record.service, record.local_id),
            None => Ok(None),
        }
    }

    /// `live_local_id` of a replicant read from the store already.
    pub fn live_replica_id(&self, replicant: &Replicant) -> Result<Option<LocalId>, StoreError> {
        let local_id = replicant
            .replica(self.site)
            .and_then(|r| r.local_id.clone());
        match local_id {
            Some(local_id) => {
                self.unless_given_to_another(&replicant.meta_id, &replicant.service, local_id)
            }
            None => Ok(None),
        }
    }

    /// `local_id`, this site's ID of `meta`, unless it names another resource now.
    fn unless_given_to_another(
        &self,
        meta: &MetaId,
        service: &str,
        local_id: LocalId,
    ) -> Result<Option<LocalId>, StoreError> {
        // No mapping is no proof of anything: a create that reaches this site after its
        // leader recorded the delete maps no ID (a deleted resource's never are).
        let named = self.store.meta_of(service, self.site, &local_id)?;
        let given_to_another = named.is_some_and(|named| named != *meta);
        Ok((!given_to_another).then_some(local_id))
    }

    /// The same, `None` when the store cannot tell (to read with).
    pub fn local_id_here(&self, meta: &MetaId) -> Option<LocalId> {
        self.live_local_id(meta).ok().flatten()
    }

    /// Sends `call` to this site's instance, with the meta-IDs in its body turned into the
    /// local IDs they have here.
    pub async fn send_to_instance(&self, mut call: Call) -> Result<Answer, Refusal> {
        if let Some(body) = metas_to_locals(&call.body, |meta| self.local_id_here(meta)) {
            call.body = body;
        }
        // A client that pages on by the last ID it was shown (`?marker=ID`) names a meta-ID.
        if let Some(target) = metas_in_query(&call.target, |meta| self.local_id_here(meta)) {
            call.target = target;
        }
        let service = call.service.clone();
        self.sites
            .instance(call)
            .await
            .map_err(|cause| Refusal::Instance {
                site: self.site.to_owned(),
                service,
                cause,
            })
    }

    /// Runs a create at this site's instance, and finds the ID it gave.
    pub async fn create_at_instance(
        &self,
        call: Call,
    ) -> Result<(Answer, Option<LocalId>, ResourceRule), Refusal> {
        let rule = match classify(self.rules_of(&call.service), &call.method, &call.target) {
            Addressed::Create(rule) => rule.clone(),
            _ => {
                return Err(Refusal::NoRule {
                    site: self.site.to_owned(),
                    service: call.service,
                    target: call.target,
                })
            }
        };
        let answer = self.send_to_instance(call).await?;
        let local_id = answer
            .is_success()
            .then(|| rule.id.created_id(answer.header("location"), &answer.body))
            .flatten();
        if answer.is_success() && local_id.is_none() {
            warn!(site = %self.site, service = %rule.collection, "a create answered without the ID its rule names");
        }
        Ok((answer, local_id, rule))
    }

    /// `answer` about `local_id`, with its ID field (or `Location`) naming `meta_id` instead.
    pub fn named(
        &self,
        rule: &ResourceRule,
        mut answer: Answer,
        meta_id: &MetaId,
        local_id: Option<&LocalId>,
    ) -> Answer {
        let Some(local_id) = local_id else {
            return answer;
        };
        match &rule.id {
            IdSource::Json(pointer) => {
                if let Some(body) = locals_to_metas(&answer.body, None, pointer, |id| {
                    (id == local_id).then(|| meta_id.clone())
                }) {
                    answer.body = body;
                }
            }
            IdSource::Location => {
                if let Some(location) = answer.header("location") {
                    let renamed = location.replace(&local_id.to_string(), meta_id.as_str());
                    answer.set_header("location", renamed);
                }
            }
        }
        answer.set_header(SERVED_BY.as_str(), self.site.to_owned());
        answer
    }

    /// What this site knows of the resource a path names by `id` (a meta-ID or its local ID;
    /// a UUID may be either).
    pub fn known(&self, service: &str, id: &str) -> Result<Known, StoreError> {
        if let Some(meta_id) = MetaId::parse(id) {
            let known = self.known_meta(service, &meta_id)?;
            if !matches!(known, Known::Unknown) {
                return Ok(known);
            }
        }
        let mut found = self
            .store
            .meta_of(service, self.site, &LocalId::Text(id.to_owned()))?;
        if let (None, Ok(number)) = (&found, id.parse::<i64>()) {
            found = self
                .store
                .meta_of(service, self.site, &LocalId::Number(number))?;
        }
        match found {
            Some(meta_id) => self.known_meta(service, &meta_id),
            None => Ok(Known::Unknown),
        }
    }

    fn known_meta(&self, service: &str, meta_id: &MetaId) -> Result<Known, StoreError> {
        if let Some(replicant) = self.store.replicant(meta_id)? {
            if replicant.service == service {
                return Ok(Known::Replicated(replicant));
            }
        }
        Ok(match self.store.cross(meta_id)? {
            Some(record) if record.service == service => Known::Cross(record),
            _ => Known::Unknown,
        })
    }
}
