//! Every error a client can get, with its status, reason header and body;
//! and the one retry the proxy allows itself.
// Helpers in test files: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Method;
use http_body_util::{BodyExt, Full};
use support::{Client, Reply, TestBackend, TestProxy, dead_address};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A server that reads a request head and then closes without answering.
/// Returns its address and how many requests it swallowed.
async fn closing_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let swallowed = Arc::new(AtomicUsize::new(0));
    let counter = swallowed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    if buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        return; // drops the connection unanswered
                    }
                }
            });
        }
    });
    (addr, swallowed)
}

fn assert_error(reply: &Reply, status: u16, code: &str, body_starts: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.headers["x-switchyard-error"], code);
    assert!(
        reply.text().starts_with(body_starts),
        "body: {}",
        reply.text()
    );
    assert!(reply.headers.contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_has_its_status_reason_and_body() {
    let blue = TestBackend::start("blue").await;
    let dead = dead_address().await;
    let (closer, _) = closing_server().await;
    let table = format!(
        r#"backends:
  blue: {{ endpoints: ["{blue}"] }}
  dead: {{ endpoints: ["{dead}"] }}
  closer: {{ endpoints: ["{closer}"] }}
  empty: {{ endpoints: [] }}
  drained: {{ endpoints: ["{blue}"], drain: {{ deadline: 30s }} }}
routes:
  - name: app
    rules:
      - {{ matches: [{{ path: {{ value: /dead }} }}], backend: dead }}
      - {{ matches: [{{ path: {{ value: /closer }} }}], backend: closer }}
      - {{ matches: [{{ path: {{ value: /empty }} }}], backend: empty }}
      - {{ matches: [{{ path: {{ value: /drained }} }}], backend: drained }}
      - {{ matches: [{{ path: {{ value: /all-drained }} }}], split: {{ weights: {{ drained: 1 }} }} }}
      - {{ matches: [{{ path: {{ value: /unresolved }} }}], split: {{ weights: {{}}, unresolved: [{{ ref: default/gone, weight: 1 }}] }} }}
      - {{ matches: [{{ path: {{ value: /hang }} }}], backend: blue, timeouts: {{ request: 200ms }} }}
      - {{ matches: [{{ path: {{ value: /direct }} }}], direct_response: {{ status: 418, body: "short and stout" }} }}
      - {{ backend: blue }}
"#,
        blue = blue.addr
    );
    let proxy = TestProxy::start(&table).await;
    let mut client = Client::http1(proxy.addr).await;
    assert_error(
        &client.get("/dead", &[]).await,
        502,
        "upstream_connect_failed",
        "could not connect to backend \"dead\"",
    );
    assert_error(
        &client.get("/closer", &[]).await,
        502,
        "upstream_failed",
        "backend \"closer\"",
    );
    assert_error(
        &client.get("/empty", &[]).await,
        503,
        "no_endpoints",
        "backend \"empty\" has no endpoints",
    );
    assert_error(
        &client.get("/drained", &[]).await,
        503,
        "backend_draining",
        "backend \"drained\" is draining",
    );
    assert_error(
        &client.get("/all-drained", &[]).await,
        503,
        "all_backends_draining",
        "every backend of this route is draining",
    );
    assert_error(
        &client.get("/unresolved", &[]).await,
        500,
        "unresolved_backend",
        "the route's backend reference resolves to no backend",
    );
    assert_error(
        &client.get("/hang", &[]).await,
        504,
        "upstream_timeout",
        "backend \"blue\" did not respond",
    );
    let direct = client.get("/direct", &[]).await;
    assert_eq!(
        (direct.status.as_u16(), direct.text().as_str()),
        (418, "short and stout")
    );
    // The client's connection survived every error.
    assert_eq!(client.get("/", &[]).await.text(), "blue");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_was_not_sent_is_retried_on_another_endpoint() {
    let alive = TestBackend::start("alive").await;
    let dead = dead_address().await;
    let table = format!(
        "backends:\n  app: {{ endpoints: [\"{dead}\", \"{}\"] }}\nroutes:\n  - {{ name: app, rules: [{{ backend: app }}] }}\n",
        alive.addr
    );
    let proxy = TestProxy::start(&table).await;
    let mut client = Client::http1(proxy.addr).await;
    for i in 0..50 {
        let method = if i % 2 == 0 {
            Method::GET
        } else {
            Method::POST
        };
        let body = BodyExt::boxed(Full::new(bytes::Bytes::from_static(b"payload")));
        let reply = client.send(method, "/", &[], body).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.text(), "alive");
    }
    assert_eq!(alive.seen().len(), 50);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_was_sent_is_never_retried() {
    let alive = TestBackend::start("alive").await;
    let (closer, swallowed) = closing_server().await;
    let table = format!(
        "backends:\n  app: {{ endpoints: [\"{closer}\", \"{}\"] }}\nroutes:\n  - {{ name: app, rules: [{{ backend: app }}] }}\n",
        alive.addr
    );
    let proxy = TestProxy::start(&table).await;
    let mut client = Client::http1(proxy.addr).await;
    let mut failed = 0;
    for _ in 0..40 {
        let body = BodyExt::boxed(Full::new(bytes::Bytes::from_static(b"charge the card")));
        let reply = client.send(Method::POST, "/pay", &[], body).await;
        match reply.status.as_u16() {
            200 => assert_eq!(reply.text(), "alive"),
            502 => failed += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // Each POST reached exactly one endpoint: what the closer swallowed
    // came back as 502 and never reached the other endpoint.
    assert!(
        failed > 0,
        "with two endpoints some POSTs go to the closing one"
    );
    assert_eq!(swallowed.load(Ordering::SeqCst), failed);
    assert_eq!(alive.seen().len(), 40 - failed);
    proxy.shutdown().await;
}
