//! Gathering one request's answers from several sites: the lists of a collection as one, a
//! fan-out, the first site that has a resource. Messages go through `Deliver`, so that a site
//! of the expression that is this one is served here.
use std::{future::Future, sync::Arc, time::Duration};

use serde_json::Value;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{
    call::{Answer, Call},
    decide::{chosen, statuses, REPLICAS_HEADER},
    exchange::{Deliver, Message, Reply, Unreached},
    ids::MetaId,
    lists::{merged, ListShape, SiteList, MOST_PAGES},
};

/// Gathers for the site `here`, each message given `limit` to be answered.
pub struct Gather<'a, D: Deliver> {
    pub here: &'a str,
    pub to: &'a Arc<D>,
    pub limit: Duration,
}

impl<D: Deliver> Gather<'_, D> {
    /// The collection from every site, as one list: a site whose list goes on by links is
    /// followed to its last page; a resource named by a meta-ID is shown from its `owner` only.
    pub async fn list(
        &self,
        sites: Vec<String>,
        call: Call,
        shape: ListShape,
        owner: impl Fn(&MetaId) -> Option<String>,
    ) -> Answer {
        let shape = Arc::new(shape);
        let results = self
            .per_site(&sites, |to, site, limit| {
                let (call, shape) = (call.clone(), shape.clone());
                async move { site_list(&to, &site, call, &shape, limit).await }
            })
            .await;
        let mut lists = Vec::new();
        let mut statuses_of = Vec::new();
        for (site, outcome) in results {
            let (reply, list) = outcome.unwrap_or_else(|| (lost(&site), None));
            match list {
                Some(Ok(list)) => lists.push(list),
                Some(Err(why)) => return Answer::from_cheops(502, why),
                None => {}
            }
            statuses_of.push((site, reply));
        }
        let mut answer = if lists.is_empty() {
            Answer::from_cheops(
                502,
                "no site of the expression could list the collection".into(),
            )
        } else {
            Answer::new(200, "application/json", merged(&shape, &lists, owner))
        };
        answer.set_header(REPLICAS_HEADER, statuses(&statuses_of));
        answer
    }

    pub async fn fan_out(&self, sites: Vec<String>, call: Call) -> Answer {
        let results = self.everywhere(&sites, call).await;
        let mut answer = chosen(self.here, &results)
            .cloned()
            .unwrap_or_else(|| Answer::from_cheops(502, "no site answered".into()));
        answer.set_header(REPLICAS_HEADER, statuses(&results));
        answer
    }

    /// `call` at each site in order until one has the resource.
    pub async fn first_found(&self, sites: Vec<String>, call: Call) -> Answer {
        let mut last = None;
        for site in &sites {
            match self
                .to
                .deliver(site, Message::Execute(call.clone()), self.limit)
                .await
            {
                Ok(reply) if reply.answer.status != 404 && reply.answer.status < 500 => {
                    return reply.answer
                }
                Ok(reply) => last = Some(reply.answer),
                Err(cause) => debug!("{cause}"),
            }
        }
        last.unwrap_or_else(|| {
            Answer::from_cheops(
                502,
                format!("none of the sites {} could be reached", sites.join(", ")),
            )
        })
    }

    /// `call` at every site at once, answers in the order of `sites`.
    async fn everywhere(
        &self,
        sites: &[String],
        call: Call,
    ) -> Vec<(String, Result<Reply, Unreached>)> {
        let results = self
            .per_site(sites, |to, site, limit| {
                let call = call.clone();
                async move { to.deliver(&site, Message::Execute(call), limit).await }
            })
            .await;
        results
            .into_iter()
            .map(|(site, result)| {
                let result = result.unwrap_or_else(|| lost(&site));
                (site, result)
            })
            .collect()
    }

    /// `job` for every site at once, results in the order of `sites` (`None`: the job was lost).
    async fn per_site<T, F, Fut>(&self, sites: &[String], job: F) -> Vec<(String, Option<T>)>
    where
        T: Send + 'static,
        F: Fn(Arc<D>, String, Duration) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut tasks = JoinSet::new();
        for (index, site) in sites.iter().enumerate() {
            let work = job(self.to.clone(), site.clone(), self.limit);
            tasks.spawn(async move { (index, work.await) });
        }
        let mut results: Vec<Option<T>> = sites.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, result)) = joined {
                results[index] = Some(result);
            }
        }
        sites.iter().cloned().zip(results).collect()
    }
}

fn lost(site: &str) -> Result<Reply, Unreached> {
    Err(Unreached::Unreachable {
        site: site.to_owned(),
        why: "the request to it was lost".into(),
    })
}

/// One site's list, its links followed to the last page (at most `MOST_PAGES`): the reply that
/// tells how the site fared, and its list when it gave one (`Err`: not a list of this shape).
async fn site_list<D: Deliver>(
    to: &Arc<D>,
    site: &str,
    mut call: Call,
    shape: &ListShape,
    limit: Duration,
) -> (Result<Reply, Unreached>, Option<Result<SiteList, String>>) {
    let first = to
        .deliver(site, Message::Execute(call.clone()), limit)
        .await;
    let Some(reply) = first.as_ref().ok().filter(|r| r.answer.is_success()) else {
        return (first, None);
    };
    let mut list = match SiteList::new(site, shape, &reply.answer.body) {
        Ok(list) => list,
        Err(why) => return (first, Some(Err(why))),
    };
    let mut next = shape.link(&list.first);
    let mut pages = 1;
    while let Some(target) = next.take() {
        if pages == MOST_PAGES {
            warn!(%site, "a list still went on after {MOST_PAGES} pages: cut there");
            break;
        }
        call.target = target;
        let page = match to
            .deliver(site, Message::Execute(call.clone()), limit)
            .await
        {
            Ok(reply) if reply.answer.is_success() => reply.answer.body,
            Ok(reply) => return (Ok(reply), None),
            Err(cause) => return (Err(cause), None),
        };
        let page: Value = serde_json::from_str(&page).unwrap_or(Value::Null);
        if let Err(why) = list.add_page(shape, &page) {
            return (first, Some(Err(why)));
        }
        next = shape.link(&page);
        pages += 1;
    }
    (first, Some(Ok(list)))
}
