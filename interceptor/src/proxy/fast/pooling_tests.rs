//! The connections to the instance that the fast path takes from its thread's pool: one serves
//! the requests of several workload connections, one the instance closed while it was idle
//! fails no request, and one whose answer was not relayed whole is closed, not kept.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

use crate::{
    config::ProxySettings,
    proxy::tests::{catalog, proxy_serving},
};

/// The body of `/large`: far more than the sockets between the instance and a client hold.
const LARGE: usize = 16 * 1024 * 1024;
const WAIT: Duration = Duration::from_secs(5);

/// A raw HTTP/1.1 instance that counts the connections it accepted. `/close-after` is answered
/// and the connection then closed, though the answer said nothing of it; `/large` is a body of
/// `LARGE` bytes; any other path, `ok`.
struct Instance {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Told when the instance could not send a body whole: its connection was closed.
    cut: Arc<Notify>,
}

async fn instance() -> Instance {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(Notify::new());
    let (counted, told) = (connections.clone(), cut.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer(stream, told.clone()));
        }
    });
    Instance {
        address,
        connections,
        cut,
    }
}

async fn answer(mut stream: TcpStream, cut: Arc<Notify>) {
    let mut read = Vec::new();
    loop {
        let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut more = [0u8; 4096];
            match stream.read(&mut more).await {
                Ok(0) | Err(_) => return,
                Ok(len) => read.extend_from_slice(&more[..len]),
            }
            continue;
        };
        let head: Vec<u8> = read.drain(..end + 4).collect();
        let path = String::from_utf8_lossy(&head)
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let sent = match path.as_str() {
            "/large" => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {LARGE}\r\n\r\n");
                let mut answer = head.into_bytes();
                answer.resize(answer.len() + LARGE, b'x');
                stream.write_all(&answer).await
            }
            _ => {
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                stream.write_all(answer).await
            }
        };
        if sent.is_err() {
            cut.notify_one();
            return;
        }
        if path == "/close-after" {
            return;
        }
    }
}

/// An instance, and a proxy on loopback to it.
async fn proxied() -> (Instance, SocketAddr) {
    let instance = instance().await;
    let settings = ProxySettings {
        response_timeout: Duration::from_secs(2),
        ..ProxySettings::default()
    };
    let proxy = proxy_serving(catalog(instance.address), settings).await;
    (instance, proxy)
}

/// Whether `GET path` on `client` was answered `ok`.
async fn answered_ok(client: &mut TcpStream, path: &str) -> bool {
    get(client, path).await.ends_with("\r\n\r\nok")
}

/// Sends `GET path` on `client`, kept alive, and reads its answer (of a `Content-Length`).
async fn get(client: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: catalog\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&answer);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |length| length.parse::<usize>().unwrap());
                if answer.len() >= end + 4 + length {
                    return;
                }
            }
            let mut more = [0u8; 4096];
            let len = client.read(&mut more).await.unwrap();
            assert_ne!(len, 0, "closed after {answer:?}");
            answer.extend_from_slice(&more[..len]);
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("an answer");
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn one_connection_to_the_instance_serves_several_workload_connections_in_turn() {
    let (instance, proxy) = proxied().await;
    let mut first = TcpStream::connect(proxy).await.unwrap();
    let mut second = TcpStream::connect(proxy).await.unwrap();
    assert!(answered_ok(&mut first, "/a").await);
    // The first workload connection is idle: it holds no connection to the instance.
    assert!(answered_ok(&mut second, "/b").await);
    assert!(answered_ok(&mut first, "/c").await);
    assert_eq!(instance.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_instance_closed_while_idle_fails_no_request() {
    let (instance, proxy) = proxied().await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    assert!(get(&mut client, "/close-after")
        .await
        .starts_with("HTTP/1.1 200"));
    // The proxy's side of the closed connection learns of it on its next turn.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut other = TcpStream::connect(proxy).await.unwrap();
    assert!(answered_ok(&mut other, "/b").await);
    assert!(answered_ok(&mut client, "/c").await);
    assert_eq!(instance.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_whose_answer_was_not_relayed_whole_is_closed_not_kept() {
    let (instance, proxy) = proxied().await;
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client
        .write_all(b"GET /large HTTP/1.1\r\nHost: catalog\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 15];
    client.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");
    // The client goes away in the middle of the body: the proxy closes the instance's
    // connection, where the rest of the body is still being written.
    drop(client);
    tokio::time::timeout(WAIT, instance.cut.notified())
        .await
        .expect("the connection to the instance closed");
    let mut next = TcpStream::connect(proxy).await.unwrap();
    assert!(answered_ok(&mut next, "/b").await);
    assert_eq!(instance.connections.load(Ordering::SeqCst), 2);
}
