//! Passive health: an endpoint that could not be connected to is passed
//! over for a while, tried again when its time is up, and used anyway when
//! every endpoint of its backend is passed over.
// Helpers in test files: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Client, TestBackend, TestProxy, app_table, dead_address, eventually, refusing_port};
use switchyard_proxy::settings::Settings;

async fn start(endpoints: &[SocketAddr], ejection: Duration) -> TestProxy {
    let settings = Settings {
        expose_backend: true,
        endpoint_ejection: ejection,
        ..Settings::default()
    };
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let table = app_table(&format!("endpoints: [{}]", list.join(", ")));
    TestProxy::start_with(&table, settings).await
}

/// The `/backends` entry of the endpoint at `addr`.
async fn endpoint(proxy: &TestProxy, addr: SocketAddr) -> serde_json::Value {
    proxy.backends().await["backends"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_refuses_connections_is_passed_over() {
    let alive = TestBackend::start("alive").await;
    let dead = dead_address().await;
    // Long enough that the endpoint stays passed over for the whole test.
    let proxy = start(&[dead, alive.addr], Duration::from_secs(600)).await;
    let mut client = Client::http1(proxy.addr).await;
    for i in 0..40 {
        let reply = client.get("/", &[]).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.text(), "alive");
    }
    // Half the picks would go to the dead endpoint (each a failed connect
    // and a retry) were it not passed over after its first failure. Missing
    // it in all 40 picks has odds of 2^-40.
    let text = proxy.metrics().await;
    assert!(
        text.contains("switchyard_upstream_retries_total{backend=\"app\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("switchyard_upstream_endpoints_ejected{backend=\"app\"} 1\n"));
    let passed_over = endpoint(&proxy, dead).await;
    assert_eq!(passed_over["ejected"], true);
    assert_eq!(passed_over["connect_failures"], 1);
    assert_eq!(endpoint(&proxy, alive.addr).await["ejected"], false);
    assert_eq!(alive.seen().len(), 40);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_over_endpoint_is_tried_again_when_its_time_is_up() {
    let alive = TestBackend::start("alive").await;
    let (dead, refusing) = refusing_port();
    let proxy = start(&[dead, alive.addr], Duration::from_millis(20)).await;
    eventually("a connect to the dead endpoint failed", || async {
        assert_eq!(
            Client::http1(proxy.addr).await.get("/", &[]).await.status,
            200
        );
        endpoint(&proxy, dead).await["connect_failures"] != 0
    })
    .await;
    // The endpoint comes back; once its time is up, requests reach it, and
    // the connection that opens clears its failures.
    let revived = TestBackend::start_on("revived", refusing.listen(1024).unwrap()).await;
    eventually("the revived endpoint gets requests", || async {
        assert_eq!(
            Client::http1(proxy.addr).await.get("/", &[]).await.status,
            200
        );
        !revived.seen().is_empty()
    })
    .await;
    let cleared = endpoint(&proxy, dead).await;
    assert_eq!(cleared["connect_failures"], 0);
    assert_eq!(cleared["ejected"], false);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_all_passed_over_are_tried_anyway() {
    let first = dead_address().await;
    let (second, refusing) = refusing_port();
    let proxy = start(&[first, second], Duration::from_secs(600)).await;
    let mut client = Client::http1(proxy.addr).await;
    // Both refuse: a 502 that says so, not a 503 for "nothing to try".
    let reply = client.get("/", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        reply.headers["x-switchyard-error"],
        "upstream_connect_failed"
    );
    assert_eq!(endpoint(&proxy, first).await["ejected"], true);
    assert_eq!(endpoint(&proxy, second).await["ejected"], true);
    // One comes back: the next request reaches it at once (tried first, or
    // after the other's failed connect), though both are passed over.
    let revived = TestBackend::start_on("revived", refusing.listen(1024).unwrap()).await;
    let reply = client.get("/", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "revived");
    assert_eq!(revived.seen().len(), 1);
    assert_eq!(endpoint(&proxy, second).await["ejected"], false);
    proxy.shutdown().await;
}
