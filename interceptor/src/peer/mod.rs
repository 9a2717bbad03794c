//! The other sites, outbound: one multiplexed HTTP/2 connection over mutual TLS per peer,
//! re-established when it breaks; heartbeats that measure each round trip and mark peers up or
//! down; forwarding, whose errors say whether the peer may have got the request. (What other
//! sites ask of this one is `proxy::inbound`.) A link moves to new TLS material when it is
//! reloaded, and peer certificates out of their validity are refused and counted
//! (`certificates.rs`).
mod certificates;
mod health;
pub use health::ROUND_TRIP_SAMPLES;
#[cfg(test)]
mod tests;
pub mod wire;

use certificates::RefusalsLogged;
pub use certificates::{CertificateLabels, Direction};
use health::{Change, Health};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use wire::{header_value, Heartbeat, FORWARDED_BY, FORWARDED_SERVICE, HEARTBEAT_PATH};

use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use hyper::{body::Incoming, client::conn::http2::SendRequest, Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::{counter::Counter, family::Family};
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, info, warn};

use crate::{
    config::{Peer, PeerApiSettings},
    http::{empty_body, within, ProxyBody},
    tls::{self, SiteTls},
};

/// Why a forwarded request got no answer from a peer, by whether it may have reached it.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    NotDelivered(#[from] NotDelivered),
    #[error(transparent)]
    MaybeDelivered(#[from] MaybeDelivered),
}

/// The request surely never reached the peer: sending it again cannot make it run twice.
#[derive(Debug, thiserror::Error)]
pub enum NotDelivered {
    #[error("{site} is not a configured peer")]
    NotAPeer { site: String },
    /// Its last heartbeat failed, or none was answered yet.
    #[error("down ({why})")]
    Down { why: String },
    #[error("could not connect to {address} within {after:?}")]
    ConnectTimeout {
        address: SocketAddr,
        after: Duration,
    },
    #[error("connecting to {address} failed: {cause}")]
    Connect {
        address: SocketAddr,
        cause: std::io::Error,
    },
    #[error("this site has no `[tls]` to connect to peers with")]
    NoTls,
    #[error("the TLS handshake with {address} was refused: {refused}")]
    OutOfValidity {
        address: SocketAddr,
        refused: tls::OutOfValidity,
    },
    #[error("the TLS handshake with {address} failed: {cause}")]
    Tls {
        address: SocketAddr,
        cause: std::io::Error,
    },
    #[error("the HTTP/2 handshake with {address} failed: {cause}")]
    Http2Handshake {
        address: SocketAddr,
        cause: hyper::Error,
    },
    #[error("bad request target: {0}")]
    BadTarget(hyper::http::uri::InvalidUri),
    /// The peer holds `max` requests already (a stalled peer holds no more).
    #[error("busy: {max} requests in flight to it already (`peer_api.max_requests_per_peer`)")]
    Busy { max: usize },
}

/// The peer may have received the request, then it went wrong.
#[derive(Debug, thiserror::Error)]
pub enum MaybeDelivered {
    #[error("the request to {address} failed: {cause}")]
    Request {
        address: SocketAddr,
        cause: hyper::Error,
    },
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },
}

/// Why a heartbeat got no answer: the peer is then marked down with this as its last error.
#[derive(Debug, thiserror::Error)]
enum HeartbeatError {
    #[error(transparent)]
    NotDelivered(#[from] NotDelivered),
    #[error("{0}")]
    Request(hyper::http::Error),
    #[error("heartbeat failed: {0}")]
    Failed(hyper::Error),
    #[error("heartbeat answer broken: {0}")]
    Broken(hyper::Error),
    #[error("heartbeat answer is not understood: {0}")]
    NotUnderstood(serde_json::Error),
    #[error("no heartbeat answer within {0:?}")]
    NoAnswer(Duration),
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: SocketAddr,
    pub up: bool,
    /// The median of the latest heartbeats' round trips.
    pub round_trip_us: Option<u64>,
    /// How far those round trips stray from their median (median absolute deviation).
    #[serde(default)]
    pub round_trip_spread_us: Option<u64>,
    /// Heartbeats unanswered since the last answer.
    #[serde(default)]
    pub missed_heartbeats: u32,
    pub last_error: Option<String>,
}

struct PeerLink {
    name: String,
    address: SocketAddr,
    server_name: ServerName<'static>,
    /// The one connection to this peer, shared by every request; `None` until (re)connected.
    connection: tokio::sync::Mutex<Option<Connection>>,
    health: Mutex<Health>,
    /// One permit per request in flight to this peer, until its answer's head.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Taken out of the configuration: its heartbeats stop, and its connection closes once
    /// the requests still using it are done (the last holder of the link drops it).
    removed: AtomicBool,
}

/// One HTTP/2 connection to a peer, and the generation of TLS material it was made with.
struct Connection {
    sender: SendRequest<ProxyBody>,
    generation: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct PeerCounters {
    pub forwarded: AtomicU64,
    pub served_for_peers: AtomicU64,
    pub refused_connections: AtomicU64,
}

pub struct Peers {
    site: String,
    /// Replaced as a whole when the configuration changes; a request keeps the link it took.
    links: ArcSwap<Vec<Arc<PeerLink>>>,
    /// `None` only where no peer is configured.
    tls: Option<Arc<SiteTls>>,
    settings: PeerApiSettings,
    pub counters: PeerCounters,
    /// Peer certificates refused for being out of their validity, by peer and direction.
    pub out_of_validity: Family<CertificateLabels, Counter>,
    refusals_logged: RefusalsLogged,
    /// The name of each peer that comes up (again).
    ups: tokio::sync::broadcast::Sender<String>,
}

impl Peers {
    pub fn new(
        site: String,
        peers: &[Peer],
        tls: Option<Arc<SiteTls>>,
        settings: PeerApiSettings,
    ) -> Result<Peers, tls::TlsError> {
        let links = peers
            .iter()
            .map(|peer| PeerLink::new(peer, &settings))
            .collect::<Result<_, tls::TlsError>>()?;
        Ok(Peers {
            site,
            links: ArcSwap::from_pointee(links),
            tls,
            settings,
            counters: PeerCounters::default(),
            out_of_validity: Family::default(),
            refusals_logged: RefusalsLogged::default(),
            ups: tokio::sync::broadcast::channel(64).0,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.links
            .load()
            .iter()
            .map(|link| link.name.clone())
            .collect()
    }

    /// Takes a changed list of peers: a new peer gets a link and heartbeats; a peer gone has
    /// its heartbeats stopped and its connection closed once its requests in flight are done;
    /// a peer whose address changed is both. The others keep their link, connection and health.
    pub fn apply(self: &Arc<Self>, peers: &[Peer]) -> Result<(), tls::TlsError> {
        let running = self.links.load_full();
        let kept = |peer: &Peer| {
            running
                .iter()
                .find(|link| link.name == peer.name && link.address == peer.address)
                .cloned()
        };
        let mut added = Vec::new();
        let links = peers
            .iter()
            .map(|peer| match kept(peer) {
                Some(link) => Ok(link),
                None => {
                    let link = PeerLink::new(peer, &self.settings)?;
                    added.push(link.clone());
                    Ok(link)
                }
            })
            .collect::<Result<Vec<_>, tls::TlsError>>()?;
        for gone in running
            .iter()
            .filter(|old| !links.iter().any(|l| Arc::ptr_eq(l, old)))
        {
            info!(peer = %gone.name, address = %gone.address, "peer removed from the configuration");
            gone.removed.store(true, Ordering::Relaxed);
        }
        self.links.store(Arc::new(links));
        for link in added {
            info!(peer = %link.name, address = %link.address, "peer added by the configuration");
            tokio::spawn(self.clone().heartbeat(link));
        }
        Ok(())
    }

    fn link(&self, site: &str) -> Option<Arc<PeerLink>> {
        self.links
            .load()
            .iter()
            .find(|link| link.name == site)
            .cloned()
    }

    /// Whether `site` is this site, or a peer whose heartbeats are answered.
    pub fn is_up(&self, site: &str) -> bool {
        site == self.site
            || self
                .link(site)
                .is_some_and(|link| link.down_because().is_none())
    }

    /// Whether a scope may name `site`: this site or a configured peer.
    pub fn knows_site(&self, site: &str) -> bool {
        site == self.site || self.link(site).is_some()
    }

    /// The names of the peers that come up from now on, as their heartbeats are answered
    /// again (or for the first time).
    pub fn ups(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.ups.subscribe()
    }

    /// Starts one heartbeat task per peer.
    pub fn spawn_heartbeats(self: &Arc<Self>) {
        for link in self.links.load().iter() {
            tokio::spawn(self.clone().heartbeat(link.clone()));
        }
    }

    async fn heartbeat(self: Arc<Self>, link: Arc<PeerLink>) {
        let mut ticker = tokio::time::interval(self.settings.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if link.removed.load(Ordering::Relaxed) {
                return;
            }
            let beat = tokio::time::timeout(self.settings.heartbeat_timeout, self.beat(&link));
            let error = match beat.await {
                Ok(Ok((round_trip, reported))) => {
                    let change = link.health.lock().unwrap().answered(round_trip, reported);
                    if change == Change::CameUp {
                        info!(peer = %link.name, round_trip_us = round_trip.as_micros() as u64, "peer is up");
                        // Nobody listening (no replication here) is fine.
                        let _ = self.ups.send(link.name.clone());
                    }
                    continue;
                }
                Ok(Err(failure)) => failure,
                Err(_) => HeartbeatError::NoAnswer(self.settings.heartbeat_timeout),
            };
            let allowed = self.settings.heartbeat_misses;
            let change = link
                .health
                .lock()
                .unwrap()
                .missed(error.to_string(), allowed);
            if change == Change::WentDown {
                warn!(peer = %link.name, "peer is down after {allowed} unanswered heartbeats: {error}");
                // The connection may be stuck on a cut link: the next beat starts a fresh one.
                *link.connection.lock().await = None;
            }
        }
    }

    /// One heartbeat exchange: the round trip of the request alone (connecting is not part of
    /// it) and the peer's own measurements.
    async fn beat(
        &self,
        link: &PeerLink,
    ) -> Result<(Duration, BTreeMap<String, Duration>), HeartbeatError> {
        let mut sender = self.connection(link).await?;
        let request = Request::get(peer_uri(link, HEARTBEAT_PATH)?)
            .header(FORWARDED_BY, header_value(&self.site))
            .body(empty_body())
            .map_err(HeartbeatError::Request)?;
        let started = Instant::now();
        let response = sender
            .send_request(request)
            .await
            .map_err(HeartbeatError::Failed)?;
        let round_trip = started.elapsed();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(HeartbeatError::Broken)?
            .to_bytes();
        let heartbeat: Heartbeat =
            serde_json::from_slice(&body).map_err(HeartbeatError::NotUnderstood)?;
        let reported = heartbeat
            .round_trips_us
            .into_iter()
            .map(|(site, us)| (site, Duration::from_micros(us)))
            .collect();
        Ok((round_trip, reported))
    }

    /// The connection to `link`, made now if there is none or it broke.
    async fn connection(&self, link: &PeerLink) -> Result<SendRequest<ProxyBody>, NotDelivered> {
        let mut connection = link.connection.lock().await;
        if let Some(open) = connection.as_ref().filter(|c| !c.sender.is_closed()) {
            return Ok(open.sender.clone());
        }
        let made = self.connect_within(link).await?;
        let sender = made.sender.clone();
        *connection = Some(made);
        Ok(sender)
    }

    /// A new connection to `link`, within `[peer_api] connect_timeout`.
    async fn connect_within(&self, link: &PeerLink) -> Result<Connection, NotDelivered> {
        tokio::time::timeout(self.settings.connect_timeout, self.connect(link))
            .await
            .map_err(|_| NotDelivered::ConnectTimeout {
                address: link.address,
                after: self.settings.connect_timeout,
            })?
    }

    /// Connects with the TLS material in use now.
    async fn connect(&self, link: &PeerLink) -> Result<Connection, NotDelivered> {
        let address = link.address;
        let material = self.tls.as_ref().ok_or(NotDelivered::NoTls)?.current();
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|cause| NotDelivered::Connect { address, cause })?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(material.client.clone())
            .connect(link.server_name.clone(), tcp)
            .await
            .map_err(|cause| match tls::out_of_validity(&cause) {
                Some(dated) => {
                    self.refuse_out_of_validity(&link.name, address, Direction::Outbound, dated);
                    NotDelivered::OutOfValidity {
                        address,
                        refused: dated.clone(),
                    }
                }
                None => NotDelivered::Tls { address, cause },
            })?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.settings.heartbeat_interval)
            .keep_alive_timeout(self.settings.heartbeat_timeout)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|cause| NotDelivered::Http2Handshake { address, cause })?;
        let peer = link.name.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, "peer connection ended: {err}");
            }
        });
        let generation = material.generation.number;
        info!(peer = %link.name, address = %link.address, tls_generation = generation, "connected to peer");
        Ok(Connection { sender, generation })
    }

    /// Sends `request` (for `service`) to `site`'s instance through its cheops, waiting for
    /// the answer's head up to `[peer_api] request_timeout`.
    pub async fn forward(
        &self,
        site: &str,
        service: &str,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, PeerError> {
        let limit = Some(self.settings.request_timeout);
        self.forward_within(site, service, request, limit).await
    }

    /// `forward`, waiting for the answer's head up to `limit` (none: as long as it takes, for a
    /// gRPC call with no deadline of its own).
    pub async fn forward_within(
        &self,
        site: &str,
        service: &str,
        mut request: Request<ProxyBody>,
        limit: Option<Duration>,
    ) -> Result<Response<Incoming>, PeerError> {
        let link = self.link(site).ok_or_else(|| NotDelivered::NotAPeer {
            site: site.to_owned(),
        })?;
        let link = &*link;
        if let Some(why) = link.down_because() {
            return Err(NotDelivered::Down { why }.into());
        }
        let _in_flight =
            link.in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| NotDelivered::Busy {
                    max: self.settings.max_requests_per_peer,
                })?;
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = peer_uri(link, &path)?;
        let headers = request.headers_mut();
        headers.insert(FORWARDED_BY, header_value(&self.site));
        headers.insert(FORWARDED_SERVICE, header_value(service));
        let mut sender = self.connection(link).await?;
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        match within(limit, sender.send_request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(cause)) => Err(MaybeDelivered::Request {
                address: link.address,
                cause,
            }
            .into()),
            Err(after) => Err(MaybeDelivered::Timeout { after }.into()),
        }
    }

    /// Measured round trips: this site's to each peer that is up, and what those peers
    /// measured themselves (ours win where both measured the same pair).
    pub fn round_trips(&self) -> dsl::RoundTripTable {
        let mut table = dsl::RoundTripTable::default();
        let healths: Vec<(String, Option<Duration>, BTreeMap<String, Duration>)> = self
            .links
            .load()
            .iter()
            .filter_map(|link| {
                let health = link.health.lock().unwrap();
                health.up.then(|| {
                    (
                        link.name.clone(),
                        health.round_trip(),
                        health.reported.clone(),
                    )
                })
            })
            .collect();
        for (peer, _, reported) in &healths {
            for (other, round_trip) in reported {
                table.insert(peer, other, *round_trip);
            }
        }
        for (peer, round_trip, _) in &healths {
            if let Some(round_trip) = round_trip {
                table.insert(&self.site, peer, *round_trip);
            }
        }
        table
    }

    /// This site's heartbeat answer.
    pub fn heartbeat_answer(&self) -> Heartbeat {
        Heartbeat {
            site: self.site.clone(),
            round_trips_us: self
                .links
                .load()
                .iter()
                .filter_map(|link| {
                    let health = link.health.lock().unwrap();
                    let round_trip = health.round_trip().filter(|_| health.up)?;
                    Some((link.name.clone(), round_trip.as_micros() as u64))
                })
                .collect(),
        }
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        self.links
            .load()
            .iter()
            .map(|link| {
                let health = link.health.lock().unwrap();
                PeerStatus {
                    name: link.name.clone(),
                    address: link.address,
                    up: health.up,
                    round_trip_us: health.round_trip().map(|r| r.as_micros() as u64),
                    round_trip_spread_us: health.spread().map(|r| r.as_micros() as u64),
                    missed_heartbeats: health.misses,
                    last_error: health.last_error.clone(),
                }
            })
            .collect()
    }
}

impl PeerLink {
    fn new(peer: &Peer, settings: &PeerApiSettings) -> Result<Arc<PeerLink>, tls::TlsError> {
        Ok(Arc::new(PeerLink {
            name: peer.name.clone(),
            address: peer.address,
            server_name: tls::server_name(&peer.name)?,
            connection: tokio::sync::Mutex::new(None),
            health: Mutex::new(Health::default()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_requests_per_peer)),
            removed: AtomicBool::new(false),
        }))
    }

    /// `Some(why)` when the last heartbeat failed, or none was answered yet.
    fn down_because(&self) -> Option<String> {
        let health = self.health.lock().unwrap();
        (!health.up).then(|| {
            health
                .last_error
                .clone()
                .unwrap_or_else(|| "no heartbeat answered yet".into())
        })
    }
}

fn peer_uri(link: &PeerLink, path_and_query: &str) -> Result<Uri, NotDelivered> {
    let host = match &link.server_name {
        ServerName::DnsName(name) => name.as_ref().to_owned(),
        other => format!("{other:?}"),
    };
    format!("https://{host}{path_and_query}")
        .parse()
        .map_err(NotDelivered::BadTarget)
}
