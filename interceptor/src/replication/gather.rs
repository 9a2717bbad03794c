//! Gathering one request's answers from several sites: the lists of a collection as one, a
//! fan-out, the first site that has a resource. Messages go through `Deliver`, so that a site
//! of the expression that is this one is served here.
use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;
use tracing::debug;

use super::{
    call::{Answer, Call},
    decide::{chosen, merged_lists, statuses, REPLICAS_HEADER},
    exchange::{Deliver, Message, Reply, Unreached},
};

/// Gathers for the site `here`, each message given `limit` to be answered.
pub struct Gather<'a, D: Deliver> {
    pub here: &'a str,
    pub to: &'a Arc<D>,
    pub limit: Duration,
}

impl<D: Deliver> Gather<'_, D> {
    /// The collection from every site, as one list.
    pub async fn list(&self, sites: Vec<String>, call: Call, pointer: Option<&str>) -> Answer {
        let results = self.everywhere(&sites, call).await;
        let lists: Vec<(String, &Answer)> = results
            .iter()
            .filter_map(|(site, r)| {
                Some((
                    site.clone(),
                    &r.as_ref().ok().filter(|r| r.answer.is_success())?.answer,
                ))
            })
            .collect();
        if lists.is_empty() {
            let mut answer = Answer::from_cheops(
                502,
                "no site of the expression could list the collection".into(),
            );
            answer.set_header(REPLICAS_HEADER, statuses(&results));
            return answer;
        }
        let mut answer = match merged_lists(pointer, &lists) {
            Ok(body) => Answer::new(200, "application/json", body),
            Err(why) => Answer::from_cheops(502, why),
        };
        answer.set_header(REPLICAS_HEADER, statuses(&results));
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
        let mut tasks = JoinSet::new();
        for (index, site) in sites.iter().enumerate() {
            let (to, limit) = (self.to.clone(), self.limit);
            let (site, call) = (site.clone(), call.clone());
            tasks.spawn(async move {
                (
                    index,
                    to.deliver(&site, Message::Execute(call), limit).await,
                )
            });
        }
        let mut results: Vec<Option<Result<Reply, Unreached>>> = vec![None; sites.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, result)) = joined {
                results[index] = Some(result);
            }
        }
        sites
            .iter()
            .zip(results)
            .map(|(site, result)| {
                let result = result.unwrap_or_else(|| {
                    Err(Unreached::Unreachable {
                        site: site.clone(),
                        why: "the request to it was lost".into(),
                    })
                });
                (site.clone(), result)
            })
            .collect()
    }
}
