//! HTTP/1.1's common request served without hyper: each head is parsed once (`head`) and its
//! fields used where they lie in the read buffer (`fields`: a map is built only for a request
//! that carries a scope header, which the decisions read and rewrite), the request goes to
//! this site's instance over a connection of its thread's `pool`, and the answer's body is
//! relayed by its framing (`body`). It takes a request in HTTP/1.1 whose body is absent or of
//! a `Content-Length` (read whole up to `MAX_BODY`, larger ones streamed through the kernel:
//! `upload`, `splice`), with no upgrade nor expectation, not gRPC, whose scope plans this site
//! alone; the same decisions as hyper's path (`WorkloadRequests::local_plan`), the same
//! changes to its headers, the same answers, log line and metrics. Any other request, and the
//! rest of its connection, goes to hyper with the bytes read of it replayed first. An idle
//! connection holds little: no buffer (taken when bytes come, given back once they are
//! served), no connection to the instance (taken from its thread's `pool` for a request, given
//! back after the answer), one timer, and a task whose state for a request is kept apart
//! while it is served (in its thread's `kept_box`); once idle for `proxy.park_idle_after`, not even that (`super::park`). The wait
//! for a head is `waiting`'s.
mod answer;
mod body;
mod buffers;
mod fields;
mod head;
mod kept_box;
mod names;
pub(super) mod pool;
#[cfg(test)]
mod pooling_tests;
mod splice;
#[cfg(test)]
mod streamed_tests;
#[cfg(test)]
mod tests;
mod upload;
mod waiting;

use std::{
    future::{poll_fn, Future},
    io::ErrorKind,
    pin::pin,
    sync::{atomic::Ordering, Arc},
    task::Poll,
    time::Instant,
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    header::{self, HeaderValue},
    HeaderMap, Response, StatusCode,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time,
};
use tracing::debug;

use super::{
    chain::instance_failure,
    http2::WorkloadConnection,
    outcome::{InstanceError, UpstreamError},
    plan,
    request::{strip_for_instance, RequestLine, WorkloadRequests},
    timer::KeptTimer,
};
use crate::{
    config::ProxySettings,
    http::{error_response, ProxyBody},
    metrics::{Collaboration, Metrics},
    peer::wire::header_value,
};
use answer::{Answer, BodyLength, Framing};
use body::{RelayError, Relayed};
use head::{AnswerHead, AnswerRead, AnswerTo, RequestFields, RequestHead};
use kept_box::KeptBox;
use upload::Upload;
use waiting::{wait_for_head, ReadHead, Waited};

/// The largest request body read whole before the request is sent; a larger one goes on from
/// socket to socket once the head is sent (`upload`).
const MAX_BODY: u64 = 64 * 1024;
/// What a connection reads with when bytes come.
const READS: usize = 8 * 1024;
/// The largest head of an answer read (as hyper's client's buffer).
const MAX_ANSWER_HEAD: usize = 400 * 1024;

/// A connection that the fast path hands to hyper, with the bytes read of it and not served.
pub struct HandOver {
    pub stream: TcpStream,
    pub read: Bytes,
}

/// Where a connection is once the fast path stops serving it.
pub enum Served {
    Closed,
    /// A request the fast path leaves: hyper serves the rest of the connection.
    ToHyper(HandOver),
    /// Idle for `proxy.park_idle_after` with nothing read: to be parked (`park`) until its
    /// wait for the next head ends, at the deadline given.
    Idle(TcpStream, time::Instant),
}

/// Serves `stream`'s requests while the fast path can, from its wait for a head; `resumed`: the
/// deadline of that wait for a connection that was parked during it.
pub fn serve<'a>(
    stream: TcpStream,
    workload: &'a WorkloadConnection,
    settings: &'a ProxySettings,
    mut resumed: Option<time::Instant>,
) -> impl Future<Output = Served> + Send + 'a {
    let mut connection = Connection {
        client: stream,
        workload,
        settings,
    };
    // Not an `async fn`, which would hold the connection twice (as its argument and as a
    // local) through the whole of it; nor does the block use `workload` and `settings` but
    // through it, which would keep them twice too.
    async move {
        // The wait for each head, on a timer in the task itself, used again for each (and
        // moved to a wait's deadline only when it goes off before it: `wait_for_head`): one
        // of its own would be one more allocation per connection. Those for the answers are
        // the thread's.
        let mut head_timer = pin!(tokio::time::sleep(connection.settings.header_read_timeout));
        let answer_timer = KeptTimer::for_answers_on_this_thread();
        // What the client sent and was not served yet; no buffer while there is nothing.
        let mut read = Vec::new();
        let closed = loop {
            // As hyper: the wait for a head starts when the last answer was sent and ends
            // `header_read_timeout` later, closing the connection. One with nothing read is
            // parked before, once idle for `park_idle_after`; a resumed one waits on until the
            // deadline it had.
            let (until, parks) = match resumed.take() {
                Some(deadline) => (deadline, false),
                None => {
                    let ProxySettings {
                        park_idle_after,
                        header_read_timeout,
                        ..
                    } = *connection.settings;
                    let parks = park_idle_after < header_read_timeout;
                    let wait = if parks {
                        park_idle_after
                    } else {
                        header_read_timeout
                    };
                    (time::Instant::now() + wait, parks)
                }
            };
            // The request's state is kept apart from the connection's task, in the thread's
            // kept block (`kept_box`: no allocation per request). In the task, it would make
            // every connection's task 2.5 KiB, idle most of its life, and more than double the
            // memory of idle connections not parked yet (`cheops-bench --only idle`). Nor is
            // the head kept in the task: it is gone after this statement.
            let waited = wait_for_head(&connection, &mut read, head_timer.as_mut(), until, parks);
            let serving = match waited.await {
                Waited::Head(ReadHead::Fast(head, requests)) => {
                    KeptBox::new_with(|| connection.serve(head, requests, &mut read, &answer_timer))
                }
                Waited::Head(ReadHead::ToHyper) => break false,
                Waited::Head(ReadHead::Closed) | Waited::TimedOut => break true,
                Waited::Idle(deadline) => return Served::Idle(connection.client, deadline),
            };
            match serving.await {
                Next::KeepAlive if read.is_empty() => buffers::give_back(std::mem::take(&mut read)),
                Next::KeepAlive => {}
                Next::Close => break true,
                Next::ToHyper => break false,
            }
        };
        if closed {
            let _ = connection.client.shutdown().await;
            return Served::Closed;
        }
        Served::ToHyper(HandOver {
            stream: connection.client,
            read: read.into(),
        })
    }
}

enum Next {
    KeepAlive,
    Close,
    ToHyper,
}

struct Connection<'a> {
    client: TcpStream,
    workload: &'a WorkloadConnection,
    settings: &'a ProxySettings,
}

/// Why an exchange with the instance gave no answer: whether the request never reached it,
/// and why.
type NoAnswer = (bool, UpstreamError);

impl Connection<'_> {
    /// Serves one request whose head is at the start of `read`, unless hyper must; `timer`
    /// bounds the wait for its answer.
    async fn serve(
        &mut self,
        head: RequestHead,
        requests: Arc<WorkloadRequests>,
        read: &mut Vec<u8>,
        timer: &KeptTimer,
    ) -> Next {
        // What of the body is sent with the head: all of it, or what came with the head when
        // the rest is streamed.
        let (inline, mut upload) = match head.body_len {
            small @ ..=MAX_BODY => (small as usize, None),
            large => {
                let inline = read.len() - head.len;
                let inline = inline.min(usize::try_from(large).unwrap_or(usize::MAX));
                match Upload::new(large - inline as u64) {
                    Ok(upload) => (inline, Some(upload)),
                    // No pipe (out of descriptors): hyper streams it.
                    Err(_) => return Next::ToHyper,
                }
            }
        };
        let workload = self.workload;
        let Some(slot) = workload.in_flight.try_take() else {
            // Refused by hyper's path, as every other request past the cap.
            return Next::ToHyper;
        };
        let at = Instant::now();
        let RequestHead {
            method,
            uri,
            fields,
            len,
            body_len: _,
            close,
        } = head;
        let service = &workload.service;
        // The fields the decisions read and rewrite: a request with no scope carrier has none,
        // its head being written already; they add theirs after it.
        let (mut request, has_host, mut headers) = match fields {
            RequestFields::Written { head, host } => (head, host, HeaderMap::new()),
            RequestFields::Map { mut headers, head } => {
                strip_for_instance(&mut headers);
                (head, false, headers)
            }
        };
        let plan = requests.local_plan(&mut headers, service, workload.cgroup_id);
        let (Some(scope), waited) = with_wait(plan).await else {
            return Next::ToHyper;
        };
        requests
            .counters
            .http_requests
            .fetch_add(1, Ordering::Relaxed);
        let chain = &requests.chain;
        chain
            .token_scopes
            .remember_passed_on(&mut headers, &chain.carriers);
        if !has_host && !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, header_value(&service.local.to_string()));
        }
        head::end_request(&mut request, &headers);
        let body_end = len + inline;
        let limit = Some(self.settings.response_timeout);
        // The wait for the answer starts once the request is decided, as on hyper's path: when
        // the decisions waited, the time read when the request came is too early for it.
        let decided = if waited { Instant::now() } else { at };
        let exchange = async {
            if read_body(&mut self.client, read, body_end).await.is_err() {
                return None;
            }
            request.extend_from_slice(&read[len..body_end]);
            let to = AnswerTo {
                method: &method,
                served_by: &chain.site_header,
                close,
            };
            Some(self.exchange(&request, &to, at, upload.as_mut()).await)
        };
        let answered = timer.within_from(decided, limit, exchange).await;
        drop(slot);
        buffers::give_back(request);
        let answered = match answered {
            Ok(None) => return Next::Close,
            _ if upload.as_ref().is_some_and(Upload::cut_by_client) => return Next::Close,
            Ok(Some(answered)) => answered.map_err(Ok),
            Err(after) => Err(Err(after)),
        };
        // A body not all read (no answer in time, or an answer before its end) leaves the
        // connection unusable after this.
        let streamed_whole = upload.as_ref().is_none_or(Upload::whole);
        let close = close || read.len() < body_end || !streamed_whole;
        read.drain(..body_end.min(read.len()));
        let line = RequestLine {
            service: service.clone(),
            collaboration: Collaboration::Local,
            served_by: HeaderValue::from_static("none"),
            method,
            uri,
            scope: scope
                .filter(|_| tracing::enabled!(tracing::Level::INFO))
                .map(|scope| scope.to_string()),
            status: 0,
            started: at,
            histograms: workload.histograms.clone(),
        };
        let (instance, mut answer_read, answer) = match answered {
            Ok(answered) => answered,
            Err(failed) => {
                chain
                    .counters
                    .upstream_errors
                    .fetch_add(1, Ordering::Relaxed);
                let failed =
                    failed.map(|(never_sent, error)| (never_sent, InstanceError::from(error)));
                let tried = [(chain.site.clone(), instance_failure(service, failed))];
                let response = error_response(
                    StatusCode::BAD_GATEWAY,
                    plan::none_served(&service.name, &tried),
                );
                let answer = self.answer_ourselves(response, line, close, &requests.metrics);
                // Boxed, as errors are rare: the request's state stays small.
                return Box::pin(answer).await;
            }
        };
        let AnswerHead {
            status,
            body,
            keep_alive,
            len: answer_len,
            head: mut out,
            to,
            at: answer_at,
        } = answer;
        RequestLine {
            served_by: chain.site_header.clone(),
            status: status.as_u16(),
            ..line
        }
        .write(&requests.metrics, None, answer_at);
        let mut instance = instance;
        let from = body.unwrap_or(Framing::Length(0));
        let (client_read, mut client_write) = self.client.split();
        let (mut instance_read, instance_write) = instance.split();
        let relay = body::relay(
            &mut instance_read,
            &mut client_write,
            &mut out,
            &mut answer_read,
            answer_len,
            from,
            to,
        );
        let relayed = match upload.as_mut() {
            // The instance answered before it took the whole body, which goes on meanwhile.
            Some(upload) if !streamed_whole => {
                let (client, instance) = (client_read.as_ref(), instance_write.as_ref());
                Box::pin(upload.alongside(client, instance, relay))
                    .await
                    .unwrap_or(Err(RelayError::ClientCut))
            }
            _ => relay.await,
        };
        let streamed_whole = upload.as_ref().is_none_or(Upload::whole);
        buffers::give_back(out);
        buffers::give_back(answer_read);
        match relayed {
            Ok(Relayed { instance_reusable }) => {
                if instance_reusable && keep_alive && streamed_whole {
                    pool::give_back(service.local, instance, at);
                }
                if close || to == Framing::UntilClose {
                    return Next::Close;
                }
                Next::KeepAlive
            }
            Err(error) => {
                debug!(service = %service.name, "answer not relayed to its end: {error}");
                Next::Close
            }
        }
    }

    /// Sends `request`, which started `at`, to the instance, over a connection of this thread's
    /// pool when one is still open (once more over a new one when it closed before taking any
    /// of it, as hyper's pool does), and reads the answer's head, passing over interim (1xx)
    /// answers as hyper's client does. The rest of a streamed body goes on from the client
    /// meanwhile (`upload`).
    async fn exchange(
        &mut self,
        request: &[u8],
        to: &AnswerTo<'_>,
        at: Instant,
        mut upload: Option<&mut Upload>,
    ) -> Result<(TcpStream, Vec<u8>, AnswerHead), NoAnswer> {
        let mut instance = match pool::take(self.workload.service.local, at) {
            Some(kept) => match kept.try_write(request) {
                Ok(len) => Some((kept, len)),
                Err(error) if error.kind() == ErrorKind::WouldBlock => Some((kept, 0)),
                Err(_) => None,
            },
            None => None,
        };
        let mut written = 0;
        let mut stream = match instance.take() {
            Some((kept, len)) => {
                written = len;
                kept
            }
            // Boxed, as a connection is rarely opened: the request's state stays small.
            None => Box::pin(self.connect()).await?,
        };
        stream
            .write_all(&request[written..])
            .await
            .map_err(|error| (false, UpstreamError::Io(error)))?;
        let mut read = buffers::take(READS);
        loop {
            if !read.is_empty() {
                // An answer before the body's end: the client's connection closes after it.
                let cut_short = upload.as_deref().is_some_and(|upload| !upload.whole());
                let to = AnswerTo {
                    close: to.close || cut_short,
                    ..*to
                };
                let parsed = head::parse_answer(&read, &to, Instant::now())
                    .map_err(|bad| (false, UpstreamError::BadAnswer(bad.to_string())))?;
                match parsed {
                    AnswerRead::Interim(len) => {
                        read.drain(..len);
                        continue;
                    }
                    AnswerRead::Final(answer) => return Ok((stream, read, answer)),
                    AnswerRead::Partial if read.len() >= MAX_ANSWER_HEAD => {
                        let error = UpstreamError::BadAnswer("its head is too large".into());
                        return Err((false, error));
                    }
                    AnswerRead::Partial => {}
                }
            }
            if read.capacity() - read.len() < READS / 2 {
                read.reserve(READS.max(read.len()));
            }
            let more = match upload.as_deref_mut() {
                Some(upload) => {
                    let (mut from, to) = stream.split();
                    let reading = from.read_buf(&mut read);
                    let reading = upload.alongside(&self.client, to.as_ref(), reading);
                    // Boxed, as large bodies are rare: the request's state stays small.
                    match Box::pin(reading).await {
                        Ok(more) => more,
                        // The caller sees the cut and closes the connection.
                        Err(_) => return Err((false, UpstreamError::Closed)),
                    }
                }
                None => stream.read_buf(&mut read).await,
            };
            match more {
                Ok(0) => return Err((false, UpstreamError::Closed)),
                Ok(_) => {}
                Err(error) => return Err((false, UpstreamError::Io(error))),
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, NoAnswer> {
        let address = self.workload.service.local;
        let limit = self.settings.connect_timeout;
        let stream = match tokio::time::timeout(limit, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err((true, UpstreamError::Connect(error))),
            Err(_) => return Err((true, UpstreamError::ConnectTimeout(limit))),
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Writes an answer made by cheops itself (its body whole), and logs its line.
    async fn answer_ourselves(
        &mut self,
        response: Response<ProxyBody>,
        line: RequestLine,
        close: bool,
        metrics: &Metrics,
    ) -> Next {
        let (mut parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if close {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let headers = &parts.headers;
        let now = Instant::now();
        let answer = Answer {
            status: parts.status,
            reason: None,
            http11: true,
            has_date: headers.contains_key(header::DATE),
            at: now,
            body: (!body.is_empty()).then_some(BodyLength::Known(body.len() as u64)),
        };
        let fields = headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
        let mut out = Vec::with_capacity(256 + body.len());
        answer::encode_answer(&mut out, &answer, fields, &line.method, &[]);
        out.extend_from_slice(&body);
        RequestLine {
            status: parts.status.as_u16(),
            ..line
        }
        .write(metrics, None, now);
        if self.client.write_all(&out).await.is_err() || close {
            return Next::Close;
        }
        Next::KeepAlive
    }
}

/// `future`'s output, and whether it waited (was not ready when first polled).
async fn with_wait<F: Future>(future: F) -> (F::Output, bool) {
    let mut future = pin!(future);
    let mut waited = false;
    poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(done) => Poll::Ready((done, waited)),
        Poll::Pending => {
            waited = true;
            Poll::Pending
        }
    })
    .await
}

/// Reads the client's body until `read` holds `end` bytes.
async fn read_body(client: &mut TcpStream, read: &mut Vec<u8>, end: usize) -> Result<(), ()> {
    if read.len() < end {
        read.reserve(end - read.len());
    }
    while read.len() < end {
        match client.read_buf(read).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(_) => {}
        }
    }
    Ok(())
}
