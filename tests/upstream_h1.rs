//! The proxy's in-task HTTP/1.1 client (requests without a body to a
//! plaintext backend) against a backend that answers with exact bytes:
//! each way a response body can be delimited, interim responses,
//! connection reuse, and answers that must become a 502.
// Helpers in test files: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty, Full};
use support::{Client, TestProxy, app_table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted backend does with one request.
struct Answer {
    bytes: Vec<u8>,
    /// Close the connection after writing the answer.
    close: bool,
}

/// A backend answering each request head with `script(head)`; it records
/// the heads it read and counts the connections it accepted.
struct Scripted {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    /// Connections the backend has closed.
    closed: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(script: fn(&str) -> Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (seen, accepted, done) = (heads.clone(), connections.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (seen, done) = (seen.clone(), done.clone());
                tokio::spawn(async move {
                    serve(&mut stream, script, &seen).await;
                    drop(stream);
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            heads,
            connections,
            closed,
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    async fn proxy(&self) -> TestProxy {
        TestProxy::start(&app_table(&format!("endpoints: [\"{}\"]", self.addr))).await
    }
}

/// Answers requests on one connection until the client closes it or the
/// script says to close.
async fn serve(stream: &mut TcpStream, script: fn(&str) -> Answer, seen: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        let head = String::from_utf8_lossy(&head).into_owned();
        let answer = script(&head);
        seen.lock().unwrap().push(head);
        if stream.write_all(&answer.bytes).await.is_err() || answer.close {
            return;
        }
    }
}

fn keep(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: false,
    }
}

fn assert_reply(reply: &support::Reply, status: u16, text: &str) {
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (status, text)
    );
}

/// Sends a request without a body; a hang fails the test at the deadline.
async fn send(client: &mut Client, method: Method, path: &str) -> support::Reply {
    tokio::time::timeout(
        support::DEADLINE,
        client.send(method, path, &[], BodyExt::boxed(Empty::new())),
    )
    .await
    .expect("an answer within the deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_framing_is_relayed_and_keep_alive_connections_are_reused() {
    let backend = Scripted::start(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        if head.starts_with("HEAD ") {
            // The length of the body a GET would get, and no body.
            return keep("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n");
        }
        match path {
            "/length" => keep("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nlength"),
            "/chunked" => keep(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                 3;ext=1\r\nchu\r\n4\r\nnked\r\n0\r\nx-trailer: t\r\n\r\n",
            ),
            "/hints" => keep(
                "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
            ),
            "/empty" => keep("HTTP/1.1 204 No Content\r\n\r\n"),
            _ => keep("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
        }
    })
    .await;
    let proxy = backend.proxy().await;
    let mut client = Client::http1(proxy.addr).await;
    for round in 0..3 {
        let reply = send(&mut client, Method::GET, "/length").await;
        assert_reply(&reply, 200, "length");
        let reply = send(&mut client, Method::GET, "/chunked").await;
        assert_reply(&reply, 200, "chunked");
        let reply = send(&mut client, Method::GET, "/hints").await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "final"),
            "the 103 is not relayed as the answer"
        );
        let reply = send(&mut client, Method::DELETE, "/empty").await;
        assert_reply(&reply, 204, "");
        let reply = send(&mut client, Method::HEAD, "/length").await;
        assert_eq!(reply.status, 200, "round {round}");
        assert_eq!(reply.headers["content-length"], "6");
        assert!(reply.body.is_empty());
    }
    assert_eq!(
        backend.connections(),
        1,
        "one upstream connection served all 15 requests, one after another"
    );
    let heads = backend.heads();
    assert_eq!(heads.len(), 15);
    assert!(
        heads[0].starts_with("GET /length HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[4].starts_with("HEAD /length HTTP/1.1\r\n"),
        "{}",
        heads[4]
    );
    let lower = heads[0].to_ascii_lowercase();
    assert!(lower.contains(&format!("\r\nhost: app.test:{}\r\n", proxy.addr.port())));
    assert!(lower.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"));
    assert!(!lower.contains("content-length") && !lower.contains("transfer-encoding"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_of_a_chunked_response_reach_an_http2_client() {
    let backend = Scripted::start(|_| {
        keep(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: grpc-status\r\n\r\n\
             2\r\nok\r\n0\r\ngrpc-status: 7\r\n\r\n",
        )
    })
    .await;
    let proxy = backend.proxy().await;
    let mut client = Client::http2(proxy.addr).await;
    let reply = client.get("/", &[("te", "trailers")]).await;
    assert_reply(&reply, 200, "ok");
    let trailers = reply.trailers.expect("the trailers are relayed");
    assert_eq!(trailers["grpc-status"], "7");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_delimited_by_the_close_or_marked_close_opens_a_new_connection_each_time() {
    let backend = Scripted::start(|head| {
        if head.starts_with("GET /until-close ") {
            Answer {
                bytes: b"HTTP/1.1 200 OK\r\n\r\nuntil the close".to_vec(),
                close: true,
            }
        } else {
            Answer {
                bytes: b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 6\r\n\r\nclosed"
                    .to_vec(),
                close: true,
            }
        }
    })
    .await;
    let proxy = backend.proxy().await;
    let mut client = Client::http1(proxy.addr).await;
    for _ in 0..3 {
        let reply = send(&mut client, Method::GET, "/until-close").await;
        assert_reply(&reply, 200, "until the close");
        let reply = send(&mut client, Method::GET, "/marked").await;
        assert_reply(&reply, 200, "closed");
    }
    assert_eq!(
        backend.connections(),
        6,
        "no connection is reused after a close"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_is_a_502_and_its_connection_is_not_reused() {
    let backend = Scripted::start(|head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        match path {
            "/two-lengths" => {
                keep("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab")
            }
            "/garbage" => keep("SSH-2.0-OpenSSH_9.2\r\n\r\n"),
            "/huge-head" => keep(&format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-big: {}\r\n\r\n",
                "a".repeat(70_000)
            )),
            "/bad-chunk" => keep("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
            "/short" => Answer {
                bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this".to_vec(),
                close: true,
            },
            _ => keep("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfine"),
        }
    })
    .await;
    let proxy = backend.proxy().await;
    for path in ["/two-lengths", "/garbage", "/huge-head"] {
        let mut client = Client::http1(proxy.addr).await;
        let reply = send(&mut client, Method::GET, path).await;
        assert_eq!(reply.status, 502, "{path}: {}", reply.text());
        assert_eq!(
            reply.headers["x-switchyard-error"], "upstream_failed",
            "{path}"
        );
    }
    // A body that breaks part way cannot become a 502 any more (the head
    // may have gone out): the client's response fails, at its head or in
    // its body, and never looks complete.
    for path in ["/bad-chunk", "/short"] {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", "app.test")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let outcome = tokio::time::timeout(support::DEADLINE, async {
            match sender.send_request(request).await {
                Ok(response) => response.into_body().collect().await.map(|_| ()),
                Err(e) => Err(e),
            }
        })
        .await
        .expect("an outcome within the deadline");
        assert!(outcome.is_err(), "{path}: the response was cut short");
    }
    let before = backend.connections();
    let mut client = Client::http1(proxy.addr).await;
    assert_eq!(send(&mut client, Method::GET, "/fine").await.text(), "fine");
    assert_eq!(
        backend.connections(),
        before + 1,
        "none of the failed connections went back to the pool"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_backend_closed_is_not_used_even_for_a_post() {
    // The backend closes each connection after its answer without saying
    // so: the proxy pools it, and must notice the close before reusing it.
    // A bodiless POST sent on it would fail with a 502 (a POST is never
    // sent twice).
    let backend = Scripted::start(|_| Answer {
        bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone".to_vec(),
        close: true,
    })
    .await;
    let proxy = backend.proxy().await;
    let mut client = Client::http1(proxy.addr).await;
    for i in 1..=5 {
        let reply = send(&mut client, Method::POST, "/").await;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "done"),
            "POST {i}"
        );
        support::eventually("the backend closed its connection", || async {
            backend.closed() == i
        })
        .await;
    }
    assert_eq!(backend.connections(), 5);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_beside_transfer_encoding_is_not_passed_on() {
    // The length is wrong for the chunked body it sits beside (RFC 9112
    // section 6.3: Transfer-Encoding wins, and an intermediary removes the
    // length). Relayed, it would cut the client's copy to 3 bytes. Both
    // clients of the proxy are tried: its own (GET) and hyper's (a POST
    // with a body).
    let backend = Scripted::start(|_| {
        keep(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
             7\r\nchunked\r\n0\r\n\r\n",
        )
    })
    .await;
    let proxy = backend.proxy().await;
    let mut client = Client::http1(proxy.addr).await;
    let reply = send(&mut client, Method::GET, "/").await;
    assert_reply(&reply, 200, "chunked");
    assert_eq!(reply.headers.get("content-length"), None);
    let mut client = Client::http1(proxy.addr).await;
    let with_body = BodyExt::boxed(Full::new(Bytes::from_static(b"payload")));
    let reply = tokio::time::timeout(
        support::DEADLINE,
        client.send(Method::POST, "/", &[], with_body),
    )
    .await
    .expect("an answer within the deadline");
    assert_reply(&reply, 200, "chunked");
    assert_eq!(reply.headers.get("content-length"), None);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_fields_reach_every_client_once_and_the_proxys_own_replace_its() {
    // The in-task client relays a response's fields from the head's bytes
    // (the proxy's own HTTP/1.1 writer copies them out as they came; for
    // hyper they are moved into the map). The proxy sets `x-request-id`
    // and `x-switchyard-backend` itself: the backend's must not go along.
    let backend = Scripted::start(|_| {
        keep(
            "HTTP/1.1 200 OK\r\nServer: scripted\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\
             X-Request-Id: the-backends\r\nX-Switchyard-Backend: a-proxy-before\r\n\
             Set-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let proxy = backend.proxy().await;
    let lines = |head: &str, name: &str| -> Vec<String> {
        head.lines()
            .filter_map(|line| line.split_once(": "))
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_owned())
            .collect()
    };
    let expected = |head: &str| {
        assert_eq!(lines(head, "x-request-id"), ["from-the-client"], "{head}");
        assert_eq!(lines(head, "x-switchyard-backend"), ["app"], "{head}");
        assert_eq!(lines(head, "set-cookie"), ["a=1", "b=2"], "{head}");
        assert_eq!(
            lines(head, "date"),
            ["Tue, 01 Dec 2026 10:00:00 GMT"],
            "{head}"
        );
        assert_eq!(lines(head, "server"), ["scripted"], "{head}");
        assert_eq!(lines(head, "content-length"), ["2"], "{head}");
    };
    // The fast path writes the names in the case they came in; hyper's
    // HTTP/1.1 server (the fast path hands it `Connection: close`
    // requests) in lower case.
    let clients: [(&[u8], &str); 2] = [
        (b"", "\r\nServer: scripted\r\n"),
        (b"Connection: close\r\n", "\r\nserver: scripted\r\n"),
    ];
    for (extra, server_line) in clients {
        let request = [
            &b"GET / HTTP/1.1\r\nHost: t\r\nX-Request-Id: from-the-client\r\n"[..],
            extra,
            b"\r\n",
        ]
        .concat();
        let reply = support::raw::send_raw(proxy.addr, &request).await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        expected(&reply.head);
        assert!(reply.head.contains(server_line), "{}", reply.head);
    }
    // An HTTP/2 client: hyper's HTTP/2 server, from the map.
    let mut client = Client::http2(proxy.addr).await;
    let reply = client
        .get("/", &[("x-request-id", "from-the-client")])
        .await;
    assert_reply(&reply, 200, "ok");
    let head: String = reply
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap()))
        .collect();
    expected(&head);
    proxy.shutdown().await;
}
