//! Peers under overload: a stalled peer (it accepts TCP and never answers) holds at most its
//! cap of requests, refuses the next at once, and delays no request to another peer.
use std::{collections::BTreeMap, path::Path, time::Duration};

use hyper::{Response, StatusCode};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::{config::Peer, tls::TlsFiles};

fn files(dir: &Path, site: &str) -> TlsFiles {
    let (cert, key) = tls::site_files(site).unwrap();
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(cert),
        key: dir.join(key),
        expiry_margin: Duration::from_secs(30 * 24 * 3600),
    }
}

/// Accepts connections and keeps them, never answering: a stalled peer.
async fn stalled_peer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    address
}

/// A peer API that answers every request `200` at once, over mutual TLS and HTTP/2.
async fn answering_peer(tls: &SiteTls) -> SocketAddr {
    answering_peer_after(tls, Duration::ZERO, Arc::default()).await
}

/// A peer API that answers every request `200` after `delay`, counting its connections.
async fn answering_peer_after(
    tls: &SiteTls,
    delay: Duration,
    connections: Arc<AtomicU64>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(tls.current().server.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tls = acceptor.accept(stream).await.unwrap();
            connections.fetch_add(1, Ordering::SeqCst);
            let answer = hyper::service::service_fn(move |_request| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::convert::Infallible>(Response::new(empty_body()))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), answer),
            );
        }
    });
    address
}

fn request() -> Request<ProxyBody> {
    Request::get("/products").body(empty_body()).unwrap()
}

#[tokio::test]
async fn a_stalled_peer_holds_its_cap_refuses_the_next_at_once_and_delays_no_other_peer() {
    let dir = std::env::temp_dir().join(format!("cheops-peers-{}", ulid::Ulid::generate()));
    let sites = ["Here", "Stalled", "Good"].map(String::from);
    tls::generate(&dir, &sites, None).unwrap();
    let here = SiteTls::load(&files(&dir, "Here")).unwrap();
    let good = answering_peer(&SiteTls::load(&files(&dir, "Good")).unwrap()).await;
    std::fs::remove_dir_all(&dir).unwrap();
    let peers = [("Stalled", stalled_peer().await), ("Good", good)].map(|(name, address)| Peer {
        name: name.into(),
        address,
        allow_services: None,
    });
    let settings = PeerApiSettings {
        max_requests_per_peer: 3,
        ..PeerApiSettings::default()
    };
    let peers =
        Arc::new(Peers::new("Here".into(), &peers, Some(Arc::new(here)), settings).unwrap());
    // Both answered a heartbeat before the one stalled.
    for link in peers.links.load().iter() {
        link.health
            .lock()
            .unwrap()
            .answered(Duration::from_millis(1), BTreeMap::new());
    }
    let hanging: Vec<_> = (0..3)
        .map(|_| {
            let peers = peers.clone();
            tokio::spawn(async move { peers.forward("Stalled", "catalog", request()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let refused = peers.forward("Stalled", "catalog", request()).await;
    assert!(
        matches!(
            refused,
            Err(PeerError::NotDelivered(NotDelivered::Busy { max: 3 }))
        ),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "refused late"
    );
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(1),
        peers.forward("Good", "catalog", request()),
    )
    .await
    .expect("a request to another peer waited for the stalled one")
    .expect("the other peer answers");
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
    for request in hanging {
        assert!(!request.is_finished(), "the stalled peer answered");
        request.abort();
    }
}

#[tokio::test]
async fn new_tls_material_moves_the_link_to_a_new_connection_and_the_request_in_flight_finishes() {
    let dir = std::env::temp_dir().join(format!("cheops-renew-{}", ulid::Ulid::generate()));
    let sites = ["Here", "There"].map(String::from);
    tls::generate(&dir, &sites, None).unwrap();
    let here_files = files(&dir, "Here");
    let here = Arc::new(SiteTls::load(&here_files).unwrap());
    let connections = Arc::new(AtomicU64::new(0));
    let there = SiteTls::load(&files(&dir, "There")).unwrap();
    let slow = Duration::from_millis(800);
    let address = answering_peer_after(&there, slow, connections.clone()).await;
    let peer = Peer {
        name: "There".into(),
        address,
        allow_services: None,
    };
    let peers = Arc::new(
        Peers::new(
            "Here".into(),
            &[peer],
            Some(here.clone()),
            PeerApiSettings::default(),
        )
        .unwrap(),
    );
    peers.links.load()[0]
        .health
        .lock()
        .unwrap()
        .answered(Duration::from_millis(1), BTreeMap::new());
    peers.spawn_renewals();
    let in_flight = {
        let peers = peers.clone();
        tokio::spawn(async move { peers.forward("There", "catalog", request()).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    let renewed = dir.join("renewed");
    let ca_key = dir.join(tls::CA_KEY_FILE);
    tls::issue(&renewed, &here_files.ca, &ca_key, &sites[..1], None).unwrap();
    std::fs::copy(renewed.join("here.pem"), &here_files.cert).unwrap();
    std::fs::copy(renewed.join("here.key"), &here_files.key).unwrap();
    assert_eq!(here.reload().unwrap().number, 2);
    std::fs::remove_dir_all(&dir).unwrap();
    let moved = tokio::time::timeout(Duration::from_secs(2), async {
        while peers.links.load()[0]
            .connection
            .lock()
            .await
            .as_ref()
            .unwrap()
            .generation
            < 2
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    moved
        .await
        .expect("the link did not move to the new material");
    // The peer counts a connection once its side of the TLS handshake ends, which may come
    // just after the link's (in TLS 1.3 the client is done first): a loaded machine showed it.
    let counted = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    counted
        .await
        .expect("the peer never counted a second connection");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert!(!in_flight.is_finished(), "the slow answer came early");

    let answer = in_flight
        .await
        .unwrap()
        .expect("the request in flight failed");
    assert_eq!(answer.status(), StatusCode::OK);
    let answer = peers.forward("There", "catalog", request()).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "a third connection");
}

#[tokio::test]
async fn a_peer_removed_live_keeps_its_request_in_flight_and_takes_no_new_one() {
    let dir = std::env::temp_dir().join(format!("cheops-peers-{}", ulid::Ulid::generate()));
    let sites = ["Here", "Stalled", "Good"].map(String::from);
    tls::generate(&dir, &sites, None).unwrap();
    let here = SiteTls::load(&files(&dir, "Here")).unwrap();
    let good = answering_peer(&SiteTls::load(&files(&dir, "Good")).unwrap()).await;
    std::fs::remove_dir_all(&dir).unwrap();
    let peer = |name: &str, address| Peer {
        name: name.into(),
        address,
        allow_services: None,
    };
    let stalled = peer("Stalled", stalled_peer().await);
    let peers = Arc::new(
        Peers::new(
            "Here".into(),
            &[stalled],
            Some(Arc::new(here)),
            PeerApiSettings::default(),
        )
        .unwrap(),
    );
    peers.links.load()[0]
        .health
        .lock()
        .unwrap()
        .answered(Duration::from_millis(1), BTreeMap::new());
    let in_flight = {
        let peers = peers.clone();
        tokio::spawn(async move { peers.forward("Stalled", "catalog", request()).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    peers.apply(&[peer("Good", good)]).unwrap();
    assert_eq!(peers.names(), ["Good"]);
    assert!(!peers.knows_site("Stalled"));
    let refused = peers.forward("Stalled", "catalog", request()).await;
    assert!(
        matches!(
            refused,
            Err(PeerError::NotDelivered(NotDelivered::NotAPeer { .. }))
        ),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !in_flight.is_finished(),
        "the request in flight to the removed peer was cut"
    );
    in_flight.abort();
    // The peer added gets heartbeats (this one answers them with no heartbeat, so it stays
    // down, saying why).
    let beaten = tokio::time::timeout(Duration::from_secs(5), async {
        while peers.status()[0].last_error.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        beaten.is_ok(),
        "no heartbeat to the peer added: {:?}",
        peers.status()
    );
    let error = peers.status()[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("not understood"), "{error}");
}
