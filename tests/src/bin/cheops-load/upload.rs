//! Large uploads: `upload` sends one body of a given size on a new connection and times it to
//! the answer; `sink` is the origin it reaches, which reads each body to its end before
//! answering with its length (nginx answers at once and discards the body, which would time
//! nothing but buffers).
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    header, Request, Response, StatusCode,
};
use serde_json::json;

use crate::LargeBody;

/// The size of the chunks sent: one buffer of zeros, shared by all of them.
const CHUNK: usize = 64 * 1024;

/// `left` bytes of zeros.
struct Zeros {
    chunk: Bytes,
    left: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let length = self.left.min(CHUNK as u64) as usize;
        self.left -= length as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..length)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// One POST of `bytes` bytes to `path` on a new connection: how fast it went, from the first
/// byte sent to the origin's answer (sent once it has read the whole body).
pub fn upload(body: &LargeBody) -> anyhow::Result<serde_json::Value> {
    let LargeBody {
        address,
        ref path,
        bytes,
    } = *body;
    crate::runtime()?.block_on(async {
        let mut sender = crate::handshake(address).await?;
        let request = Request::post(path)
            .header(header::HOST, address.ip().to_string())
            .header(header::CONTENT_LENGTH, bytes)
            .body(Zeros {
                chunk: Bytes::from(vec![0; CHUNK]),
                left: bytes,
            })?;
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let marks = crate::marks(response.headers());
        let answer = response.into_body().collect().await?.to_bytes();
        let seconds = started.elapsed().as_secs_f64();
        let read = String::from_utf8_lossy(&answer);
        if status != StatusCode::OK || read.trim() != bytes.to_string() {
            bail!("POST {path} of {bytes} bytes: answered {status}: {read}");
        }
        Ok(json!({
            "bytes": bytes,
            "seconds": seconds,
            "mib_per_second": bytes as f64 / (1024.0 * 1024.0) / seconds,
            "marks": marks,
            "errors": 0,
        }))
    })
}

/// Serves HTTP/1.1 on every `listen` address: each request's body is read to its end, then
/// answered `200` with its length in bytes.
pub fn sink(listen: &[SocketAddr]) -> anyhow::Result<serde_json::Value> {
    crate::runtime()?.block_on(crate::serve(listen, |io| async move {
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            let read = crate::body_length(request.into_body()).await?;
            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(read.to_string()))))
        });
        // A client that goes away mid-body is its own business: the next one is served.
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    }))
}
