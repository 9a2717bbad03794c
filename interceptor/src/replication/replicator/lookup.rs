//! What this site's records say of a resource, for the replicator: where the body of a
//! request to its content goes, which site's list shows it, and a fresh meta-ID that names
//! nothing known here.
use super::{Replicator, Sites};
use crate::replication::{
    call::Call,
    ids::{LocalId, MetaId},
    instance::Known,
    records::Replica,
    store::StoreError,
};
use crate::resources::{classify, content_of, Addressed, MetaIdShape};

/// Where a request to a resource's content goes.
#[derive(Debug, PartialEq, Eq)]
pub enum ContentRoute {
    /// Not a content path: the replicator serves the request.
    NotContent,
    /// The content of a resource that is not replicated: routed as its scope says, streamed.
    AsRouted,
    /// The content of a replicated resource: to each replica site, at this path (an upload
    /// to all, a download from the first).
    Replicas {
        meta_id: MetaId,
        targets: Vec<(String, String)>,
    },
}

impl<S: Sites> Replicator<S> {
    /// Where the body of a request to a resource's content (an image's file) goes; it is
    /// streamed, never given to `serve`.
    pub fn content_route(&self, service: &str, method: &str, target: &str) -> ContentRoute {
        let rules = self.rules(service);
        let Some((rule, id)) = content_of(&rules, target) else {
            return ContentRoute::NotContent;
        };
        let replicant = match self.instance().known(service, id) {
            Ok(Known::Replicated(replicant)) if !replicant.deleted => replicant,
            _ => return ContentRoute::AsRouted,
        };
        let Some(pattern) = &rule.content else {
            return ContentRoute::AsRouted;
        };
        // This site's replica first: a download is served from the first that answers.
        let mut replicas: Vec<&Replica> = replicant.replicas.iter().collect();
        replicas.sort_by_key(|r| r.site != self.site);
        let mut targets: Vec<(String, String)> = replicas
            .into_iter()
            .filter_map(|r| {
                let local_id = r.local_id.as_ref()?.to_string();
                Some((r.site.clone(), pattern.with_id(target, &local_id)))
            })
            .collect();
        if method == "GET" || method == "HEAD" {
            targets.truncate(1);
        }
        ContentRoute::Replicas {
            meta_id: replicant.meta_id,
            targets,
        }
    }

    /// The one site of `sites` whose list shows `meta`: its leader when it holds a replica,
    /// else the first of `sites` that does; where a cross resource lives.
    pub(super) fn owner(&self, meta: &MetaId, sites: &[String]) -> Option<String> {
        if let Ok(Some(replicant)) = self.store.replicant(meta) {
            let holds = |site: &String| {
                replicant
                    .replica(site)
                    .is_some_and(|r| r.local_id.is_some())
            };
            if sites.contains(&replicant.leader) && holds(&replicant.leader) {
                return Some(replicant.leader);
            }
            return sites.iter().find(|site| holds(site)).cloned();
        }
        self.store
            .cross(meta)
            .ok()
            .flatten()
            .map(|record| record.site)
    }

    /// A new meta-ID of the shape the rule of `call` gives, that names nothing this site
    /// knows (neither a meta-ID nor a local ID of any site).
    pub(super) fn new_meta_id(&self, call: &Call, sites: &[String]) -> Result<MetaId, StoreError> {
        let shape = match classify(&self.rules(&call.service), &call.method, &call.target) {
            Addressed::Create(rule) => rule.meta_id,
            _ => MetaIdShape::default(),
        };
        loop {
            let meta = MetaId::generate(shape);
            let local = LocalId::Text(meta.as_str().to_owned());
            let mut taken =
                self.store.replicant(&meta)?.is_some() || self.store.cross(&meta)?.is_some();
            for site in sites {
                taken |= self.store.meta_of(&call.service, site, &local)?.is_some();
            }
            if !taken {
                return Ok(meta);
            }
        }
    }
}
