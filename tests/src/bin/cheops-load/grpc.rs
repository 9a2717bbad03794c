//! gRPC unary calls: `grpc` calls at a fixed rate on one HTTP/2 connection (cleartext, prior
//! knowledge, as gRPC inside a mesh is), each one checked (status 200, the message echoed,
//! `grpc-status: 0` in the trailers); `grpc-origin` answers every call with its own message.
//! Messages are raw bytes in gRPC's length-prefixed framing: no protobuf needed for a proxy.
use std::net::SocketAddr;

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming, client::conn::http2::SendRequest, header, HeaderMap, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::{Schedule, Target, Timing};

/// One gRPC message (uncompressed) of `message` bytes.
fn framed(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(message);
    frame.freeze()
}

/// Calls at `rate` per second, the message `target.body_bytes` long, to `target.path` (the
/// method, `/package.Service/Method`).
pub fn calls(target: &Target, timing: &Timing, rate: u32) -> anyhow::Result<serde_json::Value> {
    let mut schedule = Schedule::new(rate, timing)?;
    let call = framed(&vec![b'x'; target.body_bytes]);
    crate::runtime()?.block_on(async {
        let (mut sender, uri) = open(target).await?;
        let mut marks = None;
        while let Some(due) = schedule.wait() {
            let answer = unary(&mut sender, &uri, &call).await;
            let ok = answer.as_ref().is_ok_and(|(_, echoed)| *echoed);
            if let (None, Ok((headers, _))) = (&marks, &answer) {
                marks = Some(crate::marks(headers));
            }
            schedule.record(due, ok);
        }
        let mut report = schedule.report();
        report["marks"] = json!(marks);
        Ok(report)
    })
}

/// `calls` unary calls one after another on one connection, untimed: for counting what a
/// proxy spends on them (instructions, system calls).
pub fn count(target: &Target, calls: u32) -> anyhow::Result<serde_json::Value> {
    let call = framed(&vec![b'x'; target.body_bytes]);
    crate::runtime()?.block_on(async {
        let (mut sender, uri) = open(target).await?;
        let mut errors = 0u64;
        for _ in 0..calls {
            let echoed = unary(&mut sender, &uri, &call).await;
            if !echoed.is_ok_and(|(_, echoed)| echoed) {
                errors += 1;
            }
        }
        Ok(json!({ "requests": calls, "errors": errors }))
    })
}

/// One HTTP/2 connection (cleartext, prior knowledge) to the target, and the URI of its
/// method.
async fn open(target: &Target) -> anyhow::Result<(SendRequest<Full<Bytes>>, String)> {
    let stream = tokio::net::TcpStream::connect(target.address)
        .await
        .with_context(|| format!("connecting to {}", target.address))?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .context("HTTP/2 handshake")?;
    tokio::spawn(connection);
    Ok((sender, format!("http://{}{}", target.address, target.path)))
}

/// One unary call: the answer's headers, and whether it echoed `call` with `grpc-status: 0`.
async fn unary(
    sender: &mut SendRequest<Full<Bytes>>,
    uri: &str,
    call: &Bytes,
) -> anyhow::Result<(HeaderMap, bool)> {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Full::new(call.clone()))?;
    let response = sender.send_request(request).await?;
    let (head, body) = response.into_parts();
    let answer = body.collect().await?;
    let status_ok = answer
        .trailers()
        .and_then(|trailers| trailers.get("grpc-status"))
        .is_some_and(|status| status == "0");
    let echoed = head.status == StatusCode::OK && status_ok && answer.to_bytes() == *call;
    Ok((head.headers, echoed))
}

/// Serves gRPC over cleartext HTTP/2 on every `listen` address: each call is answered with its
/// own message and `grpc-status: 0`.
pub fn origin(listen: &[SocketAddr]) -> anyhow::Result<serde_json::Value> {
    crate::runtime()?.block_on(crate::serve(listen, |io| async move {
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            let message = request.into_body().collect().await?.to_bytes();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", header::HeaderValue::from_static("0"));
            let body = Full::new(message).with_trailers(async { Some(Ok(trailers)) });
            let mut response = Response::new(body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/grpc"),
            );
            Ok::<_, hyper::Error>(response)
        });
        // A client that goes away mid-call is its own business: the next one is served.
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    }))
}
