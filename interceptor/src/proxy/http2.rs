//! HTTP/2 from workloads, in plaintext: with prior knowledge (gRPC's way: the connection
//! starts with the preface) or through an HTTP/1.1 `Upgrade: h2c`. Each stream is a request
//! of its own, handled like an HTTP/1.1 one: its own scope, its own route, streamed both ways
//! under HTTP/2's flow control, trailers included.
use std::{convert::Infallible, sync::Arc};

use bytes::{BufMut, Bytes, BytesMut};
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    Request, Response, StatusCode, Version,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tracing::debug;

use super::{
    replayed::Replayed, request::WorkloadRequests, sniff::HTTP2_PREFACE, upstream::OwnedUpstream,
};
use crate::{
    config::{ProxySettings, Service},
    http::{empty_body, ProxyBody},
    limits::{self, KeySlots},
    metrics::RequestHistograms,
};

const FRAME_HEADER_LEN: usize = 9;
const SETTINGS_FRAME: u8 = 0x4;
const HEADERS_FRAME: u8 = 0x1;
const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
/// The largest frame an HTTP/2 endpoint must accept: the upgraded request's headers are
/// replayed in one frame, or the upgrade is declined.
const MAX_FRAME_LEN: usize = 16_384;

/// The `WorkloadRequests` of the running configuration.
pub type CurrentRequests = Arc<dyn Fn() -> Arc<WorkloadRequests> + Send + Sync>;

/// A workload's connection: the requests it sends go to the service it dialled, scoped by
/// its cgroup.
#[derive(Clone)]
pub struct WorkloadConnection {
    /// What serves its requests now: read once per request, so a request keeps the
    /// configuration it started with and the next one takes a reloaded one.
    pub requests: CurrentRequests,
    /// The workload's requests in flight, capped (`proxy.max_requests_per_workload`), shared
    /// with its other connections.
    pub in_flight: Arc<KeySlots<u64>>,
    pub service: Arc<Service>,
    pub cgroup_id: u64,
    /// Its own connection to the instance: HTTP/1.1, one request at a time, or HTTP/2, shared
    /// by its streams; none after an upgrade to HTTP/2 (the pooled client serves those).
    pub owned: Option<Arc<OwnedUpstream>>,
    /// The request histograms its requests were counted in.
    pub histograms: Arc<RequestHistograms>,
}

impl WorkloadConnection {
    /// Serves `request`, holding one of its workload's slots until the answer's head.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let Some(_slot) = self.in_flight.try_take() else {
            return limits::refused(format!(
                "service '{}': this workload has {} requests in flight already \
                 (`proxy.max_requests_per_workload`); retry later",
                self.service.name,
                self.in_flight.max()
            ));
        };
        (self.requests)()
            .handle(
                request,
                &self.service,
                self.cgroup_id,
                self.owned.as_deref(),
                &self.histograms,
            )
            .await
    }
}

/// Serves one workload connection that speaks HTTP/2 until it closes. `instance_http2`: the
/// client chose HTTP/2 knowing the service speaks it, so the instance is spoken to in HTTP/2
/// too, over a connection of this one's own; after an upgrade, the instance is spoken to as
/// the client first did, in HTTP/1.1.
pub async fn serve<I>(
    io: I,
    mut workload: WorkloadConnection,
    settings: &ProxySettings,
    instance_http2: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if instance_http2 {
        workload.owned = Some(Arc::default());
    }
    let handler = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let workload = workload.clone();
        if !instance_http2 {
            *request.version_mut() = Version::HTTP_11;
        }
        // Boxed: hyper spawns a task per stream, copied whole as it is spawned and run.
        Box::pin(async move { Ok::<_, Infallible>(workload.handle(request).await) })
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .serve_connection(TokioIo::new(io), handler);
    if let Err(err) = connection.await {
        debug!("client HTTP/2 connection ended: {err}");
    }
}

/// When `request` asks to go on in HTTP/2 (`Upgrade: h2c`) in a way that can be taken, itself
/// as the first stream of that connection. Taken with no body only (a body would have to be
/// replayed as well) and with headers that fit one frame; otherwise the upgrade is declined,
/// as RFC 9110 allows, and the request served in HTTP/1.1.
pub fn h2c_request(request: &Request<Incoming>) -> Option<Bytes> {
    let upgrade = request
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|protocol| protocol.trim().eq_ignore_ascii_case("h2c"));
    let acceptable = upgrade
        && request.headers().contains_key("http2-settings")
        && hyper::body::Body::is_end_stream(request.body());
    acceptable.then(|| first_stream_headers(request)).flatten()
}

/// Switches the connection of `request` to HTTP/2 (`101 Switching Protocols`), then serves it
/// as `serve` does; `request` itself is `first_stream` (from `h2c_request`) of the new one.
pub fn upgrade(
    mut request: Request<Incoming>,
    first_stream: Bytes,
    workload: WorkloadConnection,
    settings: ProxySettings,
) -> Response<ProxyBody> {
    let upgrading = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match upgrading.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(err) => return debug!("h2c upgrade failed: {err}"),
        };
        let read = tokio::time::timeout(
            settings.header_read_timeout,
            with_first_stream(upgraded, first_stream),
        );
        match read.await {
            Ok(Ok(io)) => serve(io, workload, &settings, false).await,
            Ok(Err(err)) => debug!("h2c upgrade: the client's HTTP/2 start is unreadable: {err}"),
            Err(_) => debug!("h2c upgrade: the client sent no HTTP/2 preface in time"),
        }
    });
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
    response
}

/// The upgraded request as an HTTP/2 HEADERS frame of stream 1 (RFC 9113, 3.2: the request
/// that asked for the upgrade is answered on stream 1); `None` when it does not fit in one
/// frame. Header fields are literals that touch no HPACK table, so nothing else changes.
fn first_stream_headers(request: &Request<Incoming>) -> Option<Bytes> {
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            let host = request.headers().get(header::HOST)?;
            host.to_str().ok().map(str::to_owned)
        })
        .unwrap_or_default();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut block = BytesMut::new();
    for (name, value) in [
        (":method", request.method().as_str().as_bytes()),
        (":scheme", b"http".as_slice()),
        (":path", path.as_bytes()),
        (":authority", authority.as_bytes()),
    ] {
        literal_field(&mut block, name.as_bytes(), value);
    }
    let connection_bound = ["host", "http2-settings", "keep-alive", "proxy-connection"];
    for (name, value) in request.headers() {
        let hop_by_hop = connection_bound.contains(&name.as_str())
            || name == header::CONNECTION
            || name == header::UPGRADE
            || name == header::TRANSFER_ENCODING
            || (name == header::TE && value != "trailers");
        if !hop_by_hop {
            literal_field(&mut block, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if block.len() > MAX_FRAME_LEN {
        return None;
    }
    let mut frame = BytesMut::with_capacity(FRAME_HEADER_LEN + block.len());
    frame.put_uint(block.len() as u64, 3);
    frame.put_u8(HEADERS_FRAME);
    frame.put_u8(END_STREAM_AND_HEADERS);
    frame.put_u32(1);
    frame.put(block);
    Some(frame.freeze())
}

/// One HPACK "literal header field without indexing, new name" (RFC 7541, 6.2.2).
fn literal_field(block: &mut BytesMut, name: &[u8], value: &[u8]) {
    block.put_u8(0);
    for text in [name, value] {
        hpack_integer(block, text.len(), 7);
        block.put_slice(text);
    }
}

/// An HPACK integer with an `prefix_bits` prefix, the rest of that first byte zero (RFC 7541,
/// 5.1); strings are sent without Huffman coding.
fn hpack_integer(block: &mut BytesMut, mut value: usize, prefix_bits: u32) {
    let max_prefix = (1usize << prefix_bits) - 1;
    if value < max_prefix {
        block.put_u8(value as u8);
        return;
    }
    block.put_u8(max_prefix as u8);
    value -= max_prefix;
    while value >= 128 {
        block.put_u8((value % 128 + 128) as u8);
        value /= 128;
    }
    block.put_u8(value as u8);
}

/// Reads the client's preface and first frame (its SETTINGS, RFC 9113, 3.4), and gives back a
/// connection that reads them, then `first_stream`, then the rest of what the client sends.
async fn with_first_stream<I: AsyncRead + Unpin>(
    mut io: I,
    first_stream: Bytes,
) -> std::io::Result<Replayed<I>> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut start = vec![0u8; HTTP2_PREFACE.len() + FRAME_HEADER_LEN];
    io.read_exact(&mut start).await?;
    if &start[..HTTP2_PREFACE.len()] != HTTP2_PREFACE {
        return Err(invalid("no HTTP/2 preface after the upgrade"));
    }
    let header = &start[HTTP2_PREFACE.len()..];
    if header[3] != SETTINGS_FRAME {
        return Err(invalid("the first frame after the preface is not SETTINGS"));
    }
    let length =
        usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    if length > MAX_FRAME_LEN {
        return Err(invalid("the client's SETTINGS frame is too large"));
    }
    let mut settings = vec![0u8; length];
    io.read_exact(&mut settings).await?;
    let mut replayed = BytesMut::from(&start[..]);
    replayed.put_slice(&settings);
    replayed.put(first_stream);
    Ok(Replayed::new(replayed.freeze(), io))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns, without making one.
    fn future_size<A, F: std::future::Future>(_make: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper spawns a task per stream, and a task's future is copied whole as it is spawned
    /// and run: what is large and rare (the replicator's work, a peer's exchange, opening a
    /// connection) is boxed, so that a call's future stays small (it was 11 KiB).
    #[test]
    fn a_calls_future_stays_small() {
        let size = future_size(
            |(w, r): (WorkloadConnection, Request<Incoming>)| async move { w.handle(r).await },
        );
        assert!(size < 5 * 1024, "a call's future takes {size} bytes");
    }

    #[test]
    fn hpack_integers_use_the_prefix_then_seven_bit_groups() {
        // RFC 7541, C.1.1 and C.1.2.
        let mut block = BytesMut::new();
        hpack_integer(&mut block, 10, 5);
        assert_eq!(&block[..], [10]);
        let mut block = BytesMut::new();
        hpack_integer(&mut block, 1337, 5);
        assert_eq!(&block[..], [31, 154, 10]);
    }

    #[test]
    fn a_literal_field_is_its_name_and_value_with_their_lengths() {
        let mut block = BytesMut::new();
        literal_field(&mut block, b":path", b"/");
        assert_eq!(&block[..], b"\x00\x05:path\x01/");
    }

    #[tokio::test]
    async fn the_upgraded_request_comes_right_after_the_clients_settings() {
        let settings_frame = [0, 0, 6, SETTINGS_FRAME, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        let mut sent = HTTP2_PREFACE.to_vec();
        sent.extend_from_slice(&settings_frame);
        sent.extend_from_slice(b"then the rest");
        let mut io = with_first_stream(&sent[..], Bytes::from_static(b"STREAM 1"))
            .await
            .unwrap();
        let mut read = Vec::new();
        io.read_to_end(&mut read).await.unwrap();
        let mut expected = HTTP2_PREFACE.to_vec();
        expected.extend_from_slice(&settings_frame);
        expected.extend_from_slice(b"STREAM 1then the rest");
        assert_eq!(read, expected);
    }
}
