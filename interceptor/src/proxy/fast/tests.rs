//! The fast path against hyper's: the same requests through a proxy whose service takes the
//! fast path and through one whose service has resource rules (served by hyper throughout)
//! give the instance the same heads and the client the same answers, but for `date`.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::{
    config::{ProxySettings, Service},
    proxy::tests::{catalog, nothing_listening, proxy_of, proxy_serving},
    resources::ResourceRule,
};

/// What an instance was sent: each request's head and body, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// A raw HTTP/1.1 instance that keeps connections open, records every request and answers
/// by its path in every framing there is.
async fn recording_instance() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Seen::default();
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer_requests(stream, recorded.clone()));
        }
    });
    (address, seen)
}

async fn answer_requests(mut stream: TcpStream, seen: Seen) {
    let mut read = Vec::new();
    loop {
        let (head_len, method, path, body_len) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut fields);
            if let Ok(httparse::Status::Complete(len)) = request.parse(&read) {
                let field = |name: &str| {
                    let field = request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name));
                    field.map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                // A chunked body is taken to its last chunk, with no trailers.
                let last_chunk = read.windows(5).position(|w| w == b"0\r\n\r\n");
                let body_len = match (field("transfer-encoding"), last_chunk) {
                    (Some(_), Some(at)) => at + 5 - len,
                    (Some(_), None) => usize::MAX - len,
                    (None, _) => field("content-length").map_or(0, |l| l.parse().unwrap()),
                };
                if body_len != usize::MAX - len {
                    let method = request.method.unwrap().to_owned();
                    break (len, method, request.path.unwrap().to_owned(), body_len);
                }
            }
            let mut more = [0u8; 4096];
            match stream.read(&mut more).await {
                Ok(0) | Err(_) => return,
                Ok(len) => read.extend_from_slice(&more[..len]),
            }
        };
        while read.len() < head_len + body_len {
            let mut more = [0u8; 4096];
            match stream.read(&mut more).await {
                Ok(0) | Err(_) => return,
                Ok(len) => read.extend_from_slice(&more[..len]),
            }
        }
        let request: Vec<u8> = read.drain(..head_len + body_len).collect();
        let body = String::from_utf8_lossy(&request[head_len..]).into_owned();
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&request).into_owned());
        let answer = match path.as_str() {
            "/length" if method == "HEAD" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".into(),
            "/length" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Many: a\r\n\
                 Connection: keep-alive, x-private\r\nX-Private: 1\r\nX-Many: b\r\n\r\nhello"
                .into(),
            "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n\
                 5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n"
                .into(),
            "/until-close" | "/http10" => {
                let version = if path == "/http10" { "1.0" } else { "1.1" };
                let answer =
                    format!("HTTP/{version} 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close");
                let _ = stream.write_all(answer.as_bytes()).await;
                return;
            }
            // Repeated names in any case, a name Connection lists, cheops's own, two lengths.
            "/odd" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n\
                 X-Cheops-Site: Elsewhere\r\nConnection: X-Gone, Keep-Alive\r\n\
                 set-cookie: b=2\r\nX-Gone: 1\r\nContent-length: 2\r\nTE: trailers\r\n\
                 X-Spaced:   a  b \t\r\nSET-COOKIE: c=3\r\nX-Last: z\r\n\r\nok"
                .into(),
            "/no-content" => "HTTP/1.1 204 No Content\r\n\r\n".into(),
            "/not-modified" => "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n".into(),
            "/reason" => "HTTP/1.1 200 Fine Indeed\r\nContent-Length: 0\r\n\r\n".into(),
            "/hints" => "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                .into(),
            _ => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        };
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Sends `requests` at once on a new connection to `proxy` and reads until it closes; the
/// answers without their `date` lines.
async fn conversation(proxy: SocketAddr, requests: &str) -> String {
    let mut client = TcpStream::connect(proxy).await.unwrap();
    client.write_all(requests.as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answers))
        .await
        .expect("the proxy closes the connection after the last answer")
        .unwrap();
    String::from_utf8_lossy(&answers)
        .split_inclusive("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect()
}

/// The same service with a resource rule: the proxy serves it through hyper.
fn with_resources(mut service: Service) -> Service {
    let rule = "collection = \"/pods\"\nitem = \"/pods/{id}\"\nid = \"location\"";
    let rule: ResourceRule = toml::from_str(rule).unwrap();
    service.resources.push(rule);
    service
}

fn settings() -> ProxySettings {
    ProxySettings {
        response_timeout: Duration::from_secs(2),
        ..ProxySettings::default()
    }
}

/// Conversations, each on a connection of its own, that end with the proxy closing it.
const CONVERSATIONS: [&str; 9] = [
    // No scope: repeated names in any case, names that Connection lists (the last names take
    // their places), hop-by-hop and peer headers, odd white space, answers likewise.
    "GET /odd HTTP/1.1\r\nHost: catalog\r\nX-Rep: 1\r\nConnection: X-Drop , keep-alive,x-two\r\n\
     Accept: a\r\nx-rep: 2\r\nX-Drop: 1\r\nTE: trailers\r\nX-TWO: 2\r\nX-REP: 3\r\n\
     X-Cheops-Not-Delivered: 1\r\nX-Padded:  v  w\t \r\nKeep-Alive: timeout=5\r\n\
     Accept: b\r\nX-Tail: t\r\n\r\n\
     GET /te HTTP/1.1\r\nHost: catalog\r\nTE: gzip\r\nte: trailers\r\nX-After: 1\r\n\r\n\
     GET /te2 HTTP/1.1\r\nhost: catalog\r\nte: trailers\r\nX-Cheops-Instance-Http2: 1\r\n\
     X-After: 1\r\n\r\n\
     GET /baggage HTTP/1.1\r\nHost: catalog\r\nbaggage: k=v\r\nX-Auth-Token: t0k\r\n\
     Connection: x-auth-token\r\n\r\n\
     GET /token HTTP/1.1\r\nHost: catalog\r\nX-Auth-Token: t0k!SCOPE!{catalog: Paris}\r\n\
     Accept: */*\r\n\r\n\
     GET /CLOSE HTTP/1.1\r\nHost: catalog\r\nConnection: x-y, Close\r\n\r\n",
    // Two lengths alike, and unlike (hyper's, handed over), then more.
    "POST /lengths HTTP/1.1\r\nHost: catalog\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi\
     POST /unlike HTTP/1.1\r\nHost: catalog\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nhey\
     GET /after HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n",
    // A folded header line (obs-fold): hyper's answer.
    "GET /first HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /folded HTTP/1.1\r\nHost: catalog\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n",
    // Pipelined: scope, hop-by-hop and peer headers, bodies, HEAD, every framing of answers.
    "GET /length HTTP/1.1\r\nHost: catalog\r\nX-Scope: {catalog: Paris}\r\n\
     Connection: keep-alive, x-private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\n\
     TE: trailers\r\nX-Cheops-Forwarded-By: Lyon\r\nX-Cheops-Service: other\r\n\r\n\
     POST /echo HTTP/1.1\r\nHost: catalog\r\nContent-Length: 11\r\n\
     Content-Type: text/plain\r\n\r\nhello world\
     HEAD /length HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /chunked HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /no-content HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /not-modified HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /reason HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /hints HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /many HTTP/1.1\r\nHost: catalog\r\nAccept: a\r\nX-Other: 1\r\nAccept: b\r\n\r\n\
     GET /until-close HTTP/1.1\r\nHost: catalog\r\n\r\n\
     PUT /no-host HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
     GET /last HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n",
    // An HTTP/1.0 answer of no length: the client's connection ends with it.
    "GET /http10 HTTP/1.1\r\nHost: catalog\r\n\r\n",
    // Handed over to hyper: a malformed head after a served request.
    "GET /first HTTP/1.1\r\nHost: catalog\r\n\r\nGET /bad HTTP/1.1\r\nBad Header\r\n\r\n",
    // Handed over: an upgrade (declined: the instance answers), an expectation, then more.
    "GET /ws HTTP/1.1\r\nHost: catalog\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\
     POST /expect HTTP/1.1\r\nHost: catalog\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi\
     GET /after HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n",
    // A target of every byte the fast path takes, then ones of other bytes, hyper's (handed
    // over): its `Uri` cuts a fragment.
    "GET /a%20b/c.d?x=1&y=(2)*!$';:@,+~_?z HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /json/{a}|x^y HTTP/1.1\r\nHost: catalog\r\n\r\n\
     GET /frag#part HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n",
    // Handed over: a scope that names an unknown site (400), a chunked request.
    "GET /nowhere HTTP/1.1\r\nHost: catalog\r\nX-Scope: {catalog: Nowhere}\r\n\r\n\
     POST /chunked-request HTTP/1.1\r\nHost: catalog\r\nTransfer-Encoding: chunked\r\n\r\n\
     2\r\nhi\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n",
];

#[tokio::test]
async fn the_fast_path_gives_the_instance_and_the_client_what_hyper_gives() {
    let (instance, seen) = recording_instance().await;
    let fast = proxy_serving(catalog(instance), settings()).await;
    let hyper = proxy_serving(with_resources(catalog(instance)), settings()).await;
    for requests in CONVERSATIONS {
        let by_fast = conversation(fast, requests).await;
        let seen_by_fast = std::mem::take(&mut *seen.lock().unwrap());
        let by_hyper = conversation(hyper, requests).await;
        let seen_by_hyper = std::mem::take(&mut *seen.lock().unwrap());
        assert!(by_fast.starts_with("HTTP/1."), "{by_fast}");
        assert_eq!(by_fast, by_hyper, "the answers to {requests:?}");
        assert_eq!(
            seen_by_fast, seen_by_hyper,
            "what the instance saw of {requests:?}"
        );
    }
}

#[tokio::test]
async fn errors_name_the_service_and_site_as_hyper_s_path_does() {
    let local = nothing_listening().await;
    let fast = proxy_serving(catalog(local), settings()).await;
    let hyper = proxy_serving(with_resources(catalog(local)), settings()).await;
    let requests = "GET /a HTTP/1.1\r\nHost: catalog\r\n\r\n\
                    GET /b HTTP/1.1\r\nHost: catalog\r\nConnection: close\r\n\r\n";
    let by_fast = conversation(fast, requests).await;
    assert!(by_fast.starts_with("HTTP/1.1 502"), "{by_fast}");
    assert!(by_fast.contains("service 'catalog': site Paris: its instance of 'catalog'"));
    assert_eq!(by_fast, conversation(hyper, requests).await);
    // A head past `proxy.max_header_bytes`, after a request: hyper's 431, as before.
    let large = format!(
        "GET /a HTTP/1.1\r\nHost: catalog\r\n\r\nGET /b HTTP/1.1\r\nX-Large: {}\r\n\r\n",
        "x".repeat(1024 * 1024)
    );
    for proxy in [fast, hyper] {
        let (mut client, mut sending) = TcpStream::connect(proxy).await.unwrap().into_split();
        let large = large.clone();
        // Not all of it is read: the proxy answers before.
        tokio::spawn(async move { sending.write_all(large.as_bytes()).await });
        let mut answers = Vec::new();
        while !String::from_utf8_lossy(&answers).contains("HTTP/1.1 431") {
            let mut more = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut more));
            let len = read.await.expect("an answer in time").unwrap();
            assert_ne!(len, 0, "{}", String::from_utf8_lossy(&answers));
            answers.extend_from_slice(&more[..len]);
        }
        assert!(answers.starts_with(b"HTTP/1.1 502"), "{proxy}");
    }
}

/// The fast path's own decision: what it serves, and what it hands over, with the bytes it
/// read of the connection.
#[tokio::test]
async fn the_fast_path_serves_the_common_request_and_hands_over_the_rest_with_its_bytes() {
    let (instance, seen) = recording_instance().await;
    let service = catalog(instance);
    let proxy = proxy_of(&service, settings());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = "GET /one HTTP/1.1\r\nHost: catalog\r\n\r\n";
    let left = "GET /ws HTTP/1.1\r\nHost: catalog\r\nUpgrade: websocket\r\n\r\nGET /next";
    for (sent, handed_over) in [
        (served.to_owned(), None),
        (format!("{served}{left}"), Some(left)),
    ] {
        let mut client = TcpStream::connect(address).await.unwrap();
        client.write_all(sent.as_bytes()).await.unwrap();
        if handed_over.is_none() {
            client.shutdown().await.unwrap();
        }
        let (stream, _) = listener.accept().await.unwrap();
        let workload = proxy.workload(Arc::new(service.clone()), 1);
        let settings = settings();
        let handed = super::serve(stream, &workload, &settings, None).await;
        let mut answer = [0u8; 15];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200 OK");
        match (handed, handed_over) {
            (super::Served::Closed, None) => {}
            (super::Served::ToHyper(handed), Some(left)) => {
                // Pipelined bytes may come in several reads: those read are the start of `left`.
                assert!(!handed.read.is_empty());
                assert!(
                    left.as_bytes().starts_with(&handed.read),
                    "{:?}",
                    handed.read
                );
            }
            (super::Served::ToHyper(handed), None) => panic!("handed over: {:?}", handed.read),
            _ => panic!("not served as it should"),
        }
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("GET /one HTTP/1.1\r\nhost: catalog\r\n"));
    }
}
