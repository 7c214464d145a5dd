//! Span export (`--features otlp`): a real collector endpoint on 127.0.0.1
//! receives one span per request, in the trace the client started, and the
//! backend sees this span as its parent. Run with
//! `cargo test --features otlp --test otlp` (`.ci/run` does).
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::{Client, TestBackend, TestProxy, eventually, table};
use switchyard_proxy::Settings;
use tokio::net::TcpListener;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

/// A collector that keeps every span it is sent.
async fn collector() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        assert_eq!(request.uri().path(), "/v1/traces");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let document: Value = serde_json::from_slice(&body).unwrap();
                        for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]
                            .as_array()
                            .unwrap()
                        {
                            sink.lock().unwrap().push(span.clone());
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, spans)
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    let attribute = span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .unwrap_or_else(|| panic!("no attribute {key} in {span}"));
    &attribute["value"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_becomes_a_span_in_the_clients_trace() {
    let (collector, spans) = collector().await;
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = Settings {
        otlp_endpoint: Some(format!("http://{collector}")),
        ..Settings::default()
    };
    let routes = "  - name: app\n    rules:\n      - backend: blue\n";
    let proxy = TestProxy::start_with(&table(blue.addr, green.addr, routes), settings).await;
    let mut client = Client::http1(proxy.addr).await;
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let reply = client
        .get("/orders", &[("traceparent", &traceparent)])
        .await;
    assert_eq!(reply.status, 200);
    // Not sampled upstream: no span, and the header passes untouched.
    let unsampled = format!("00-{TRACE}-{PARENT}-00");
    client.get("/quiet", &[("traceparent", &unsampled)]).await;
    // No traceparent: a new trace (sample rate 1).
    client.get("/fresh", &[]).await;

    eventually("two spans reach the collector", || async {
        spans.lock().unwrap().len() >= 2
    })
    .await;
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let orders = spans
        .iter()
        .find(|s| attribute(s, "url.path")["stringValue"] == "/orders")
        .unwrap();
    assert_eq!(orders["traceId"], TRACE);
    assert_eq!(orders["parentSpanId"], PARENT);
    assert_eq!(orders["kind"], 2);
    assert_eq!(attribute(orders, "switchyard.route")["stringValue"], "app");
    assert_eq!(
        attribute(orders, "switchyard.backend")["stringValue"],
        "blue"
    );
    assert_eq!(
        attribute(orders, "http.response.status_code")["intValue"],
        "200"
    );
    let fresh = spans
        .iter()
        .find(|s| attribute(s, "url.path")["stringValue"] == "/fresh")
        .unwrap();
    assert_ne!(fresh["traceId"], TRACE);
    assert!(fresh.get("parentSpanId").is_none());

    // The backend's parent is the proxy's span; the unsampled header is as sent.
    let seen = blue.seen();
    let header = |path: &str| {
        seen.iter().find(|s| s.uri == path).unwrap().headers["traceparent"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let span_id = orders["spanId"].as_str().unwrap();
    assert_eq!(header("/orders"), format!("00-{TRACE}-{span_id}-01"));
    assert_eq!(header("/quiet"), unsampled);
}
