//! The benchmark's load generator, one JSON report on stdout per run:
//! - `rate`: one keep-alive HTTP/1.1 connection, requests on an open-loop schedule at a fixed
//!   rate; each latency counts from when the request was due, so a slow answer also delays the
//!   ones behind it, as real clients would see (no coordinated omission);
//! - `saturate`: closed-loop connections sending as fast as answers come;
//! - `count`: a given number of requests, one after another on one connection, untimed: for
//!   counting what a proxy spends on them (instructions, system calls);
//! - `download`: one large body on a new connection: its throughput;
//! - `upload`: one large body sent on a new connection: its throughput (`sink` is the origin
//!   that reads it, see `upload.rs`);
//! - `idle`: many keep-alive connections, one request each, then held idle (`idle.rs`);
//! - `grpc`: gRPC unary calls at a fixed rate on one HTTP/2 connection (`grpc-origin` answers
//!   them, see `grpc.rs`); `grpc-count`: a given number of them, untimed, as `count`;
//! - `connect`: a connect()+close() loop timing connect() alone.
//!
//! Every answer must be a 200 with the expected body size, or it counts as an error.
mod grpc;
mod idle;
mod upload;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, client::conn::http1::SendRequest, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;

#[derive(Parser)]
#[command(name = "cheops-load", about = "Cheops's benchmark load generator")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Fixed request rate on one connection (latency).
    Rate {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        timing: Timing,
        /// Requests per second.
        #[arg(long)]
        rate: u32,
    },
    /// As many requests as the server answers (throughput).
    Saturate {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        timing: Timing,
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// A number of requests on one connection, one after another (costs, not timings).
    Count {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        requests: u32,
    },
    /// One large body downloaded on a new connection (throughput).
    Download(LargeBody),
    /// One large body uploaded on a new connection (throughput).
    Upload(LargeBody),
    /// An origin that reads each request's whole body, then answers with its length.
    Sink(Listen),
    /// Many keep-alive connections, one request each, held idle until stdin closes; a first
    /// report when all are open, a second one (how many stayed open) at the end.
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        connections: usize,
    },
    /// gRPC unary calls at a fixed rate on one HTTP/2 connection (latency).
    Grpc {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        timing: Timing,
        /// Calls per second.
        #[arg(long)]
        rate: u32,
    },
    /// A number of gRPC unary calls on one HTTP/2 connection, one after another (costs).
    GrpcCount {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        requests: u32,
    },
    /// A gRPC origin answering every unary call with its own message.
    GrpcOrigin(Listen),
    /// connect()+close() in a loop (the cost of the connect hook).
    Connect {
        #[arg(long)]
        address: SocketAddr,
        #[arg(long)]
        count: u32,
    },
}

/// One large body to or from `address`.
#[derive(Args)]
struct LargeBody {
    #[arg(long)]
    address: SocketAddr,
    #[arg(long)]
    path: String,
    #[arg(long)]
    bytes: u64,
}

/// Where a server listens.
#[derive(Args)]
struct Listen {
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
}

/// What each request goes to, and the answer it must get.
#[derive(Args, Clone)]
struct Target {
    /// Where to connect (what the application dials: interception may send it elsewhere).
    #[arg(long)]
    address: SocketAddr,
    #[arg(long, default_value = "/")]
    path: String,
    /// The size every answer's body must have.
    #[arg(long)]
    body_bytes: usize,
}

/// How long a timed run lasts.
#[derive(Args, Clone)]
struct Timing {
    /// Seconds measured, after the warm-up.
    #[arg(long)]
    seconds: f64,
    /// Seconds of load before measuring (connections, caches, pools warm up).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
}

/// Latencies in nanoseconds, up to a minute, to 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn main() -> anyhow::Result<()> {
    let report = match Cli::parse().mode {
        Mode::Rate {
            target,
            timing,
            rate,
        } => fixed_rate(&target, &timing, rate)?,
        Mode::Saturate {
            target,
            timing,
            connections,
        } => saturate(&target, &timing, connections)?,
        Mode::Count { target, requests } => count(&target, requests)?,
        Mode::Download(body) => download(&body)?,
        Mode::Upload(body) => upload::upload(&body)?,
        Mode::Sink(Listen { listen }) => upload::sink(&listen)?,
        Mode::Idle {
            target,
            connections,
        } => idle::idle(&target, connections)?,
        Mode::Grpc {
            target,
            timing,
            rate,
        } => grpc::calls(&target, &timing, rate)?,
        Mode::GrpcCount { target, requests } => grpc::count(&target, requests)?,
        Mode::GrpcOrigin(Listen { listen }) => grpc::origin(&listen)?,
        Mode::Connect { address, count } => connect_loop(address, count)?,
    };
    println!("{report}");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn fixed_rate(target: &Target, timing: &Timing, rate: u32) -> anyhow::Result<serde_json::Value> {
    let mut schedule = Schedule::new(rate, timing)?;
    runtime()?.block_on(async {
        let mut sender = open(target).await?;
        while let Some(due) = schedule.wait() {
            let ok = request(&mut sender, target).await;
            schedule.record(due, ok);
            if !ok {
                sender = open(target).await?;
            }
        }
        Ok(schedule.report())
    })
}

/// An open-loop schedule at a fixed rate: when each request is due, and the latencies measured
/// from then (after the warm-up), so that a slow answer also delays the ones behind it.
struct Schedule {
    interval: Duration,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    next: u32,
    latencies: Histogram<u64>,
    errors: u64,
    seconds: f64,
}

impl Schedule {
    fn new(rate: u32, timing: &Timing) -> anyhow::Result<Schedule> {
        if rate == 0 {
            bail!("--rate must be at least 1 request per second");
        }
        // tokio's timer ticks in milliseconds, too coarse for a schedule in microseconds: this
        // thread sleeps itself, with the kernel's default 50 µs timer slack removed. Blocking
        // the runtime between requests is harmless: the one connection is idle then.
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer and only affects this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let start = Instant::now() + interval;
        let measure_from = start + Duration::from_secs_f64(timing.warmup);
        Ok(Schedule {
            interval,
            start,
            measure_from,
            end: measure_from + Duration::from_secs_f64(timing.seconds),
            next: 0,
            latencies: histogram(),
            errors: 0,
            seconds: timing.seconds,
        })
    }

    /// Sleeps until the next request is due and returns when that was; `None` at the end.
    fn wait(&mut self) -> Option<Instant> {
        let due = self.start + self.interval * self.next;
        self.next += 1;
        if due >= self.end {
            return None;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        Some(due)
    }

    fn record(&mut self, due: Instant, ok: bool) {
        if due >= self.measure_from {
            self.latencies
                .saturating_record(due.elapsed().as_nanos() as u64);
            self.errors += u64::from(!ok);
        }
    }

    fn report(&self) -> serde_json::Value {
        report(&self.latencies, self.errors, self.seconds)
    }
}

fn saturate(
    target: &Target,
    timing: &Timing,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    runtime()?.block_on(async {
        let measure_from = Instant::now() + Duration::from_secs_f64(timing.warmup);
        let end = measure_from + Duration::from_secs_f64(timing.seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections.max(1) {
            let target = target.clone();
            tasks.spawn(async move {
                let mut sender = open(&target).await?;
                let mut latencies = histogram();
                let mut errors = 0u64;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let ok = request(&mut sender, &target).await;
                    if sent >= measure_from {
                        latencies.saturating_record(sent.elapsed().as_nanos() as u64);
                        errors += u64::from(!ok);
                    }
                    if !ok {
                        sender = open(&target).await?;
                    }
                }
                anyhow::Ok((latencies, errors))
            });
        }
        let mut latencies = histogram();
        let mut errors = 0;
        while let Some(done) = tasks.join_next().await {
            let (connection, connection_errors) = done??;
            latencies
                .add(connection)
                .expect("histograms of the same bounds");
            errors += connection_errors;
        }
        Ok(report(&latencies, errors, timing.seconds))
    })
}

fn count(target: &Target, requests: u32) -> anyhow::Result<serde_json::Value> {
    runtime()?.block_on(async {
        let mut sender = open(target).await?;
        let mut errors = 0u64;
        for _ in 0..requests {
            if !request(&mut sender, target).await {
                errors += 1;
                sender = open(target).await?;
            }
        }
        Ok(json!({ "requests": requests, "errors": errors }))
    })
}

/// One GET of a large body on a new connection: how fast it came, to its last byte.
fn download(body: &LargeBody) -> anyhow::Result<serde_json::Value> {
    let LargeBody {
        address,
        ref path,
        bytes,
    } = *body;
    runtime()?.block_on(async {
        let mut sender = handshake::<Empty<Bytes>>(address).await?;
        let request = Request::get(path)
            .header(hyper::header::HOST, address.ip().to_string())
            .body(Empty::new())?;
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let received = body_length(response.into_body()).await?;
        let seconds = started.elapsed().as_secs_f64();
        if status != StatusCode::OK || received != bytes {
            bail!("GET {path}: answered {status} with {received} bytes, not {bytes}");
        }
        Ok(json!({
            "bytes": bytes,
            "seconds": seconds,
            "mib_per_second": bytes as f64 / (1024.0 * 1024.0) / seconds,
            "errors": 0,
        }))
    })
}

fn connect_loop(address: SocketAddr, count: u32) -> anyhow::Result<serde_json::Value> {
    let mut latencies = histogram();
    let started = Instant::now();
    for _ in 0..count {
        let before = Instant::now();
        let stream = std::net::TcpStream::connect(address)
            .with_context(|| format!("connecting to {address}"))?;
        latencies.saturating_record(before.elapsed().as_nanos() as u64);
        drop(stream);
    }
    Ok(report(&latencies, 0, started.elapsed().as_secs_f64()))
}

/// Reads `body` to its end: how many bytes it had.
async fn body_length(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame?.data_ref().map_or(0, |d| d.len() as u64);
    }
    Ok(received)
}

/// One keep-alive HTTP/1.1 connection to the target.
async fn open(target: &Target) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    handshake(target.address).await
}

/// One keep-alive HTTP/1.1 connection to `address`, for requests with bodies of type `B`.
async fn handshake<B>(address: SocketAddr) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The answer's headers that show which proxy it went through (`x-…`), as `name: value`.
fn marks(headers: &hyper::HeaderMap) -> Vec<String> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-"))
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
        .collect()
}

/// Sends one GET and reads the whole answer: whether it was the expected one.
async fn request(sender: &mut SendRequest<Empty<Bytes>>, target: &Target) -> bool {
    let request = Request::get(&target.path)
        .header(hyper::header::HOST, target.address.ip().to_string())
        .body(Empty::new())
        .expect("a valid request");
    let Ok(response) = sender.send_request(request).await else {
        return false;
    };
    let status = response.status();
    match response.into_body().collect().await {
        Ok(body) => status == StatusCode::OK && body.to_bytes().len() == target.body_bytes,
        Err(_) => false,
    }
}

/// Percentiles in microseconds, and the distribution for plots: (percentile, µs) points
/// spaced evenly on the "nines" scale, as HdrHistogram plots are.
fn report(latencies: &Histogram<u64>, errors: u64, seconds: f64) -> serde_json::Value {
    let micros = |quantile: f64| latencies.value_at_quantile(quantile) as f64 / 1000.0;
    let distribution: Vec<[f64; 2]> = (0..=40)
        .map(|step| {
            let quantile = 1.0 - 10f64.powf(-f64::from(step) / 10.0);
            [quantile * 100.0, micros(quantile)]
        })
        .collect();
    json!({
        "requests": latencies.len(),
        "errors": errors,
        "seconds": seconds,
        "per_second": latencies.len() as f64 / seconds,
        "latency_us": {
            "p50": micros(0.50),
            "p90": micros(0.90),
            "p99": micros(0.99),
            "p999": micros(0.999),
            "max": latencies.max() as f64 / 1000.0,
            "mean": latencies.mean() / 1000.0,
        },
        "distribution": distribution,
    })
}

/// Accepts connections on every `listen` address and runs `serve_connection` on each, until a
/// listener fails.
async fn serve<F, Serving>(
    listen: &[SocketAddr],
    serve_connection: F,
) -> anyhow::Result<serde_json::Value>
where
    F: Fn(TokioIo<tokio::net::TcpStream>) -> Serving + Clone + Send + 'static,
    Serving: std::future::Future<Output = ()> + Send + 'static,
{
    let mut listeners = tokio::task::JoinSet::new();
    for &address in listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        let serve_connection = serve_connection.clone();
        listeners.spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(failed) => return failed,
                };
                // Latency matters here as much as in the clients.
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(TokioIo::new(stream)));
            }
        });
    }
    match listeners.join_next().await {
        Some(failed) => Err(failed?).context("accepting a connection"),
        None => bail!("no address to listen on"),
    }
}
