//! Cross (`%`): a resource created at the prime site and registered at every other site of
//! its expression; deleted where it lives, it is forgotten by every one of them too.
use std::sync::Arc;

use tracing::warn;

use super::{
    statuses, Answer, Call, Change, CrossRecord, Message, MetaId, Refusal, Replicator, Reply,
    Sites, META_ID_HEADER, REPLICAS_HEADER,
};

impl<S: Sites> Replicator<S> {
    /// A cross create: at the prime site, then registered at every site of the expression.
    pub(super) async fn create_cross(
        self: &Arc<Self>,
        prime: String,
        sites: Vec<String>,
        call: Call,
    ) -> Answer {
        let meta_id = match self.new_meta_id(&call, &sites) {
            Ok(meta_id) => meta_id,
            Err(cause) => return self.store_failed(cause),
        };
        let service = call.service.clone();
        let message = Message::CreateCross {
            meta_id: meta_id.clone(),
            call,
            sites: sites.clone(),
        };
        let created = self
            .deliver_within(&prime, message, self.replica_timeout)
            .await;
        let Ok(Reply {
            answer,
            local_id: Some(local_id),
        }) = &created
        else {
            let mut answer = match created {
                Ok(reply) => reply.answer,
                Err(cause) => {
                    Answer::from_cheops(502, format!("the cross create was not made: {cause}"))
                }
            };
            answer.set_header(REPLICAS_HEADER, format!("{prime}=failed"));
            return answer;
        };
        let record = CrossRecord {
            meta_id: meta_id.clone(),
            service,
            site: prime.clone(),
            local_id: local_id.clone(),
            sites: sites.clone(),
        };
        let others: Vec<String> = sites.iter().filter(|s| **s != prime).cloned().collect();
        let registered = self.store.put_cross(&record).and_then(|()| {
            self.store
                .append(None, &meta_id, Change::Register(record), &others)
        });
        let operation = match registered {
            Ok(operation) => operation,
            Err(cause) => return self.store_failed(cause),
        };
        let mut results = vec![(prime, created.clone())];
        results.extend(self.log.apply_everywhere(self, &operation, &others).await);
        let mut answer = answer.clone();
        answer.set_header(REPLICAS_HEADER, statuses(&results));
        answer.set_header(META_ID_HEADER, meta_id.to_string());
        answer
    }

    /// At the prime site of a cross create.
    pub(super) async fn create_cross_here(
        &self,
        meta_id: &MetaId,
        call: Call,
        sites: Vec<String>,
    ) -> Result<Reply, Refusal> {
        let service = call.service.clone();
        let (answer, local_id, rule) = self.instance().create_at_instance(call).await?;
        if let Some(local_id) = &local_id {
            let record = CrossRecord {
                meta_id: meta_id.clone(),
                service,
                site: self.site.clone(),
                local_id: local_id.clone(),
                sites,
            };
            self.store
                .put_cross(&record)
                .map_err(|cause| Refusal::Store {
                    site: self.site.clone(),
                    store: self.store.path().to_owned(),
                    cause: Box::new(cause),
                })?;
        }
        Ok(Reply {
            answer: self
                .instance()
                .named(&rule, answer, meta_id, local_id.as_ref()),
            local_id,
        })
    }

    /// After the delete of `record` at this site, where it lives: forgotten here, and by the
    /// other sites of its expression through this site's log (each gets it once, when back).
    pub(super) async fn forget_cross_everywhere(self: &Arc<Self>, record: CrossRecord) {
        if let Err(cause) = self.store.forget_cross(&record) {
            warn!(site = %self.site, "{cause}");
        }
        let others: Vec<String> = record
            .sites
            .iter()
            .filter(|site| **site != self.site)
            .cloned()
            .collect();
        if others.is_empty() {
            return;
        }
        let meta_id = record.meta_id.clone();
        match self
            .store
            .append(None, &meta_id, Change::Forget(record), &others)
        {
            Ok(operation) => {
                self.log.apply_everywhere(self, &operation, &others).await;
            }
            Err(cause) => {
                warn!(site = %self.site, %meta_id, "the other sites keep the deleted cross resource: {cause}")
            }
        }
    }
}
