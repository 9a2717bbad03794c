//! A replicated resource's binary content (an image's file), streamed: an upload goes to every
//! replica at once, each under its own local ID, the client's body read once and never kept
//! whole (a few frames per replica in flight); a download comes from the first replica.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::BodyExt;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header::HeaderName,
    http::request::Parts,
    Request, Response, StatusCode, Uri,
};
use tokio::sync::mpsc;

use super::{
    chain::{Attempt, Chain},
    grpc,
    outcome::{Failed, Outcome},
};
use crate::{
    config::Service,
    http::{error_response, ProxyBody},
    peer::wire::header_value,
    replication::decide::{SiteStatus, META_ID_HEADER, REPLICAS_HEADER},
};

/// Frames of the client's body waiting for each replica: what bounds memory, whatever the size.
const FRAMES_IN_FLIGHT: usize = 4;

/// The body one replica gets: the client's frames as the pump hands them over.
struct Relayed(mpsc::Receiver<Bytes>);

impl Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(Frame::data(d))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Sends `body` to each of `targets` (site, path with its local ID) at once and answers as
/// the replicator does: this site's answer (else the first success), with every site's status
/// and the meta-ID. A client whose body breaks off gets an error and no replica a whole body:
/// their requests are dropped unfinished.
pub async fn to_replicas(
    chain: &Chain,
    parts: &Parts,
    body: Incoming,
    service: &Service,
    meta_id: &str,
    targets: Vec<(String, String)>,
) -> Response<ProxyBody> {
    if targets.is_empty() {
        return error_response(
            StatusCode::NOT_FOUND,
            format!("no replica of {meta_id} was created yet"),
        );
    }
    let mut senders = Vec::with_capacity(targets.len());
    let mut attempts = Vec::with_capacity(targets.len());
    let grpc = grpc::is_grpc(&parts.headers);
    for (site, target) in &targets {
        let (sender, receiver) = mpsc::channel(FRAMES_IN_FLIGHT);
        senders.push(Some(sender));
        let mut request = Request::new(Relayed(receiver).boxed());
        *request.method_mut() = parts.method.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        *request.uri_mut() = match target.parse::<Uri>() {
            Ok(uri) => uri,
            Err(err) => return error_response(StatusCode::BAD_REQUEST, format!("{target}: {err}")),
        };
        attempts.push(async move {
            if *site == chain.site {
                chain.attempt_local(request, service, None, grpc).await
            } else {
                chain.attempt_peer(site, request, service).await
            }
        });
    }
    let attempts = join_all(attempts);
    let pump = pump(body, senders);
    tokio::pin!(attempts, pump);
    let mut pumped = false;
    let attempts: Vec<Attempt> = loop {
        tokio::select! {
            read = &mut pump, if !pumped => match read {
                Ok(()) => pumped = true,
                // Dropping the unfinished requests breaks them off at every replica.
                Err(cause) => return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body of the upload to {meta_id} failed: {cause}; no replica got it whole"),
                ),
            },
            done = &mut attempts => break done,
        }
    };
    composed(chain, meta_id, &targets, attempts)
}

/// Hands each frame of `body` to every replica still taking it, waiting for the slowest (so
/// memory stays flat); a replica whose request ended early is left out from then on.
async fn pump(
    mut body: Incoming,
    mut senders: Vec<Option<mpsc::Sender<Bytes>>>,
) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let mut live = 0;
        for slot in &mut senders {
            if let Some(sender) = slot {
                if sender.send(data.clone()).await.is_err() {
                    *slot = None;
                } else {
                    live += 1;
                }
            }
        }
        if live == 0 {
            break;
        }
    }
    Ok(())
}

fn status_of(outcome: &Outcome) -> SiteStatus {
    match outcome {
        Outcome::Answered(status) if status.is_success() => SiteStatus::Ok,
        Outcome::Answered(status) => SiteStatus::Failed(status.as_u16()),
        Outcome::Failed(Failed::Timeout { .. }) => SiteStatus::Timeout,
        _ => SiteStatus::Unreachable,
    }
}

fn composed(
    chain: &Chain,
    meta_id: &str,
    targets: &[(String, String)],
    attempts: Vec<Attempt>,
) -> Response<ProxyBody> {
    let statuses: Vec<String> = targets
        .iter()
        .zip(&attempts)
        .map(|((site, _), attempt)| format!("{site}={}", status_of(&attempt.outcome)))
        .collect();
    let mut answers: Vec<(&String, Response<ProxyBody>)> = targets
        .iter()
        .zip(attempts)
        .filter_map(|((site, _), attempt)| Some((site, attempt.response?)))
        .collect();
    let pick = answers
        .iter()
        .position(|(site, r)| **site == chain.site && r.status().is_success())
        .or_else(|| answers.iter().position(|(_, r)| r.status().is_success()))
        .or((!answers.is_empty()).then_some(0));
    let mut response = match pick {
        Some(at) => answers.swap_remove(at).1,
        None => error_response(
            StatusCode::BAD_GATEWAY,
            format!(
                "no replica of {meta_id} took its content: {}",
                statuses.join(", ")
            ),
        ),
    };
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static(REPLICAS_HEADER),
        header_value(&statuses.join(", ")),
    );
    headers.insert(
        HeaderName::from_static(META_ID_HEADER),
        header_value(meta_id),
    );
    response
}
