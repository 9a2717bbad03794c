//! Bodies past what the fast path reads whole, request bodies moved from socket to socket
//! (`splice`) and answers relayed through user space: whole and intact both ways, and cut where
//! they were cut, by the client or by the instance; an answer that comes before the whole body
//! still reaches the client.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Body, client::conn::http1::SendRequest, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use crate::{
    config::ProxySettings,
    proxy::tests::{catalog, proxy_of},
};

/// Larger than the socket buffers between client, proxy and instance together.
const LARGE: usize = 32 * 1024 * 1024;

/// `len` bytes that differ from one position to the next, so that a byte lost, doubled or
/// moved shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8).collect()
}

/// What the instance read of a request body: its path, how many bytes, and whether the body
/// reached its length.
type Read = (String, usize, bool);

/// A raw HTTP/1.1 instance answering by path; it tells what it read of each body.
async fn instance() -> (SocketAddr, mpsc::UnboundedReceiver<Read>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (tell, told) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer_requests(stream, tell.clone()));
        }
    });
    (address, told)
}

async fn answer_requests(mut stream: TcpStream, tell: mpsc::UnboundedSender<Read>) {
    let mut read = Vec::new();
    loop {
        let (head_len, path, body_len) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut fields);
            if let Ok(httparse::Status::Complete(len)) = request.parse(&read) {
                let length = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"));
                let length = length.map_or(0, |h| {
                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                });
                break (len, request.path.unwrap().to_owned(), length);
            }
            if !read_more(&mut stream, &mut read).await {
                return;
            }
        };
        read.drain(..head_len);
        if path == "/duplex" {
            // Each piece of the body echoed as it comes, before the body's end.
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut echoed = 0;
            loop {
                let piece = read.len().min(body_len - echoed);
                if stream.write_all(&read[..piece]).await.is_err() {
                    return;
                }
                read.drain(..piece);
                echoed += piece;
                if echoed == body_len || !read_more(&mut stream, &mut read).await {
                    break;
                }
            }
            let _ = tell.send((path, echoed, echoed == body_len));
            continue;
        }
        let early = match path.as_str() {
            "/early" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly",
            "/refuse" => {
                let refusal = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\
                               Connection: close\r\n\r\n";
                let _ = stream.write_all(refusal.as_bytes()).await;
                return;
            }
            _ => "",
        };
        if !early.is_empty() {
            stream.write_all(early.as_bytes()).await.unwrap();
            // Long enough for the proxy to take the answer before the body's end.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        while read.len() < body_len && read_more(&mut stream, &mut read).await {}
        let body: Vec<u8> = read.drain(..read.len().min(body_len)).collect();
        let whole = body.len() == body_len;
        let _ = tell.send((path.clone(), body.len(), whole));
        if !whole {
            return;
        }
        let answer = match path.as_str() {
            "/echo" => [
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
                body,
            ]
            .concat(),
            "/large" => [
                format!("HTTP/1.1 200 OK\r\nContent-Length: {LARGE}\r\n\r\n").into_bytes(),
                pattern(LARGE),
            ]
            .concat(),
            "/until-close" => [b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), pattern(LARGE)].concat(),
            "/cut" => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {LARGE}\r\n\r\n");
                [head.into_bytes(), pattern(LARGE / 4)].concat()
            }
            _ => continue,
        };
        if stream.write_all(&answer).await.is_err() || path != "/echo" && path != "/large" {
            return;
        }
    }
}

/// Reads more of `stream` into `read`: false at its end.
async fn read_more(stream: &mut TcpStream, read: &mut Vec<u8>) -> bool {
    let mut more = vec![0u8; 256 * 1024];
    match stream.read(&mut more).await {
        Ok(0) | Err(_) => false,
        Ok(len) => {
            read.extend_from_slice(&more[..len]);
            true
        }
    }
}

fn settings() -> ProxySettings {
    ProxySettings {
        response_timeout: Duration::from_secs(10),
        ..ProxySettings::default()
    }
}

/// A proxy whose connections the fast path alone serves (`fast::serve`); how many it handed
/// to hyper.
async fn fast_proxy(instance: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let service = catalog(instance);
    let proxy = proxy_of(&service, settings());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let handed_over = Arc::new(AtomicUsize::new(0));
    let counted = handed_over.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let workload = proxy.workload(Arc::new(service.clone()), 1);
            let counted = counted.clone();
            tokio::spawn(async move {
                let served = super::serve(stream, &workload, &settings(), None).await;
                if matches!(served, super::Served::ToHyper(_)) {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (address, handed_over)
}

async fn client<B>(proxy: SocketAddr) -> SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// Bounds a test's wait: a hang fails it.
async fn in_time<F: std::future::Future>(work: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .expect("done in time")
}

#[tokio::test]
async fn large_bodies_go_whole_and_intact_both_ways_and_the_connection_goes_on() {
    let (instance, mut told) = instance().await;
    let (proxy, handed_over) = fast_proxy(instance).await;
    let mut sender = client(proxy).await;
    let sent = Bytes::from(pattern(LARGE));
    let echo = Request::post("/echo")
        .header("host", "catalog")
        .body(Full::new(sent.clone()))
        .unwrap();
    let answer = in_time(sender.send_request(echo)).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let echoed = in_time(answer.into_body().collect()).await.unwrap();
    assert!(echoed.to_bytes() == sent, "the echoed body differs");
    assert_eq!(told.recv().await, Some(("/echo".into(), LARGE, true)));
    // The same connection, kept alive, then a body up to the instance's close (chunked to
    // the client).
    for path in ["/large", "/until-close"] {
        let get = Request::get(path)
            .header("host", "catalog")
            .body(Full::default())
            .unwrap();
        let answer = in_time(sender.send_request(get)).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let body = in_time(answer.into_body().collect()).await.unwrap();
        assert!(
            body.to_bytes() == pattern(LARGE),
            "{path}: the body differs"
        );
    }
    assert_eq!(handed_over.load(Ordering::SeqCst), 0, "served by hyper");
}

#[tokio::test]
async fn an_instance_that_closes_mid_answer_leaves_the_client_a_cut_connection() {
    let (instance, _told) = instance().await;
    let (proxy, _) = fast_proxy(instance).await;
    let mut sender = client::<Empty<Bytes>>(proxy).await;
    let get = Request::get("/cut").header("host", "catalog");
    let answer = in_time(sender.send_request(get.body(Empty::new()).unwrap()))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let body = in_time(answer.into_body().collect()).await;
    assert!(body.is_err(), "a cut body was taken as whole");
}

/// Sends `head` and `LARGE` bytes of body (only `close_after` bytes, then its side closed) on a
/// new connection to `proxy`, and reads until the proxy closes it: what it read.
async fn upload(proxy: SocketAddr, head: &str, close_after: Option<usize>) -> Vec<u8> {
    let (mut answers, mut sending) = TcpStream::connect(proxy).await.unwrap().into_split();
    let body = pattern(close_after.unwrap_or(LARGE));
    let head = head.to_owned();
    // The proxy may stop reading the body, and close: what is left unsent does not matter.
    let sender = tokio::spawn(async move {
        let _ = sending.write_all(head.as_bytes()).await;
        let _ = sending.write_all(&body).await;
        // Ending the client's side early: dropped, its socket closes.
        close_after.is_none().then_some(sending)
    });
    let mut read = Vec::new();
    let _ = in_time(answers.read_to_end(&mut read)).await;
    drop(sender.await.unwrap());
    read
}

fn post(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: catalog\r\nContent-Length: {LARGE}\r\n\r\n")
}

#[tokio::test]
async fn an_answer_before_the_whole_body_reaches_the_client_and_the_body_goes_on() {
    let (instance, mut told) = instance().await;
    let (proxy, handed_over) = fast_proxy(instance).await;
    let text = |answer: &[u8]| String::from_utf8_lossy(answer).into_owned();
    // Answered at once, the body read later: the client is told that the connection closes
    // after the answer, its request's body not all read by then.
    let answer = text(&upload(proxy, &post("/early"), None).await);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nearly"), "{answer}");
    // Answered and closed, the body never read.
    let answer = text(&upload(proxy, &post("/refuse"), None).await);
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{answer}"
    );
    // The body echoed as it comes: it must go on while the answer is relayed.
    let answer = upload(proxy, &post("/duplex"), None).await;
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(text(&answer[..head_end]).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(
        answer[head_end..] == pattern(LARGE),
        "the echoed body differs"
    );
    let duplex = loop {
        match in_time(told.recv()).await.unwrap() {
            (path, read, whole) if path == "/duplex" => break (read, whole),
            _ => {}
        }
    };
    assert_eq!(duplex, (LARGE, true));
    assert_eq!(handed_over.load(Ordering::SeqCst), 0, "served by hyper");
}

#[tokio::test]
async fn a_client_that_closes_mid_body_ends_the_instance_s_request_too() {
    let (instance, mut told) = instance().await;
    let (proxy, handed_over) = fast_proxy(instance).await;
    let answer = upload(proxy, &post("/count"), Some(LARGE / 8)).await;
    assert!(
        answer.is_empty(),
        "nothing answers a request cut by its client"
    );
    let (path, read, whole) = in_time(told.recv()).await.unwrap();
    assert_eq!(path, "/count");
    assert!(
        !whole && read <= LARGE / 8,
        "the instance read {read} bytes"
    );
    assert_eq!(handed_over.load(Ordering::SeqCst), 0, "served by hyper");
}
