//! Parking through the proxy: an idle HTTP/1.1 connection leaves its task for the thread's
//! parker, is served again when it sends, and is closed at the end of its wait for a head,
//! holding its workload's connection slot until then.
use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    park::parked_here,
    routes::Routing,
    tests::{ask, ask_with, catalog, instance, listening, proxy_of, proxy_with},
};
use crate::config::{CarrierSettings, ProxySettings};

const PARK_AFTER: Duration = Duration::from_millis(100);
const HEAD_TIMEOUT: Duration = Duration::from_millis(800);

/// A proxy that parks connections idle for `PARK_AFTER`, one workload holding at most
/// `connections`.
async fn parking_proxy(connections: usize) -> std::net::SocketAddr {
    proxy_with(instance(false).await, parking(connections)).await
}

fn parking(connections: usize) -> ProxySettings {
    ProxySettings {
        header_read_timeout: HEAD_TIMEOUT,
        park_idle_after: PARK_AFTER,
        max_connections_per_workload: connections,
        ..ProxySettings::default()
    }
}

/// Waits past `PARK_AFTER`, and for the parker (on this thread, as the proxy's tasks).
async fn idle() {
    tokio::time::sleep(PARK_AFTER * 3).await;
}

/// A connection to `proxy` with one request answered, then parked; when it was answered.
async fn parked_on(proxy: std::net::SocketAddr) -> (TcpStream, Instant) {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    assert!(ask(&mut client).await.starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    idle().await;
    assert_eq!(parked_here(), 1, "an idle connection was not parked");
    (client, answered)
}

/// Reads `client` until the proxy closes it; how long after `since` that was.
async fn closed_after(client: &mut TcpStream, since: Instant) -> Duration {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(HEAD_TIMEOUT * 3, client.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "not closed in time: {read:?}");
    since.elapsed()
}

#[tokio::test]
async fn a_parked_connection_is_served_when_it_sends_again_and_parks_again() {
    let proxy = parking_proxy(4).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    assert!(ask(&mut client).await.starts_with("HTTP/1.1 200"));
    assert_eq!(parked_here(), 0, "parked before it was idle long enough");
    for _ in 0..2 {
        idle().await;
        assert_eq!(parked_here(), 1, "an idle connection was not parked");
        assert!(ask(&mut client).await.starts_with("HTTP/1.1 200"));
        assert_eq!(parked_here(), 0, "a connection that sent stayed parked");
    }
}

#[tokio::test]
async fn a_parked_connection_is_closed_when_its_wait_for_a_head_ends() {
    let (mut client, answered) = parked_on(parking_proxy(4).await).await;
    let after = closed_after(&mut client, answered).await;
    // The wait started at the last answer, not when the connection was parked.
    assert!(
        after >= HEAD_TIMEOUT - Duration::from_millis(50) && after < HEAD_TIMEOUT + PARK_AFTER * 2,
        "closed {after:?} after its answer, the timeout is {HEAD_TIMEOUT:?}"
    );
    assert_eq!(parked_here(), 0);
}

#[tokio::test]
async fn a_parked_connection_holds_its_slot_until_it_is_closed() {
    let proxy = parking_proxy(1).await;
    let (mut held, answered) = parked_on(proxy).await;
    let refused = ask(&mut TcpStream::connect(proxy).await.unwrap()).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    closed_after(&mut held, answered).await;
    let mut next = TcpStream::connect(proxy).await.unwrap();
    assert!(
        ask(&mut next).await.starts_with("HTTP/1.1 200"),
        "a parked connection closed did not give its slot back"
    );
}

#[tokio::test]
async fn a_connection_with_part_of_a_head_read_is_not_parked() {
    let proxy = parking_proxy(4).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    assert!(ask(&mut client).await.starts_with("HTTP/1.1 200"));
    client.write_all(b"GET /items HTTP/1.1\r\n").await.unwrap();
    idle().await;
    assert_eq!(parked_here(), 0, "parked with part of a head read");
    client.write_all(b"host: catalog\r\n\r\n").await.unwrap();
    let mut answer = vec![0u8; 4096];
    let len = client.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..len]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_parked_connection_s_next_request_takes_the_configuration_reloaded_meanwhile() {
    let service = catalog(instance(false).await);
    let proxy = proxy_of(&service, parking(4));
    let address = listening(proxy.clone(), &service).await;
    // A scope in a token header that the configuration does not read yet: ignored.
    let scoped =
        b"GET /items HTTP/1.1\r\nhost: catalog\r\nx-other-token: t!SCOPE!{catalog: Lyon}\r\n\r\n";
    let (mut client, _) = parked_on(address).await;
    let ignored = ask_with(&mut TcpStream::connect(address).await.unwrap(), scoped).await;
    assert!(ignored.starts_with("HTTP/1.1 200"), "{ignored}");
    proxy.reroute(Routing {
        services: vec![service],
        carriers: CarrierSettings {
            token_header: "X-Other-Token".into(),
            ..CarrierSettings::default()
        },
        inbound_policy: None,
        peer_services: Default::default(),
        replicator: None,
    });
    assert_eq!(parked_here(), 1);
    let read = ask_with(&mut client, scoped).await;
    assert!(
        !read.starts_with("HTTP/1.1 200") && read.contains("Lyon"),
        "the parked connection's request did not read the reloaded token header: {read}"
    );
}

#[tokio::test]
async fn a_connection_is_parked_once_idle_from_its_last_answer_not_an_earlier_one() {
    let proxy = parking_proxy(4).await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    let short = PARK_AFTER * 3 / 5;
    assert!(ask(&mut client).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(short).await;
    assert!(ask(&mut client).await.starts_with("HTTP/1.1 200"));
    // Past the first wait's end (where its timer was left), not yet the second's.
    tokio::time::sleep(short).await;
    assert_eq!(parked_here(), 0, "parked counting from an earlier answer");
    idle().await;
    assert_eq!(parked_here(), 1, "an idle connection was not parked");
}
