//! Hot swaps and drains end to end: no request lost or misrouted while
//! tables change under load; drained backends finish their work, report it,
//! and are cut at their deadline; tunnels rebalance gradually.

// Helpers in test files: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use http::Method;
use http_body_util::{BodyExt, Empty};
use support::{Client, TestBackend, TestProxy, eventually, table};
use tokio_tungstenite::tungstenite::Message;

/// Weights for table `i`: a fixed-seed generator, with all-blue and
/// all-green tables mixed in (0 % and 100 %).
fn weights(i: u64) -> (u32, u32) {
    match i % 10 {
        3 => (0, 1),
        7 => (1, 0),
        _ => {
            let x = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                >> 33;
            ((x % 1000) as u32, (1000 - x % 1000) as u32)
        }
    }
}

fn split_table(blue: &TestBackend, green: &TestBackend, (b, g): (u32, u32)) -> String {
    table(
        blue.addr,
        green.addr,
        &format!(
            "  - name: app\n    rules:\n      - split: {{ weights: {{ blue: {b}, green: {g} }} }}\n"
        ),
    )
}

fn allowed((b, g): (u32, u32)) -> HashSet<&'static str> {
    let mut set = HashSet::new();
    if b > 0 {
        set.insert("blue");
    }
    if g > 0 {
        set.insert("green");
    }
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_swaps_under_load_lose_and_misroute_nothing() {
    const SWAPS: u64 = 100;
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = Arc::new(TestProxy::start(&split_table(&blue, &green, weights(0))).await);
    let tables: Arc<Vec<HashSet<&str>>> =
        Arc::new((0..=SWAPS).map(|i| allowed(weights(i))).collect());
    // The index of the newest table announced; announced before it is applied.
    let generation = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let mut clients = Vec::new();
    for c in 0..16 {
        let mut client = if c % 2 == 0 {
            Client::http1(proxy.addr).await
        } else {
            Client::http2(proxy.addr).await
        };
        let (tables, generation, completed, done) = (
            tables.clone(),
            generation.clone(),
            completed.clone(),
            done.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut sent = 0usize;
            while !done.load(Ordering::SeqCst) {
                let before = generation.load(Ordering::SeqCst);
                let reply = client.get("/", &[]).await;
                let after = generation.load(Ordering::SeqCst);
                assert_eq!(
                    reply.status,
                    200,
                    "request failed during swaps: {}",
                    reply.text()
                );
                let backend = reply.text();
                // The snapshot was taken at the request's start: some table
                // from the one before `before` (announced, maybe not yet
                // applied) to `after`.
                let ok = (before.saturating_sub(1)..=after)
                    .any(|g| tables[g].contains(backend.as_str()));
                assert!(
                    ok,
                    "{backend} served a request while tables {before}..={after} allowed only {:?}",
                    &tables[before.saturating_sub(1)..=after]
                );
                completed.fetch_add(1, Ordering::SeqCst);
                sent += 1;
            }
            sent
        }));
    }
    for i in 1..=SWAPS {
        // Paced by completed requests rather than by time.
        let target = completed.load(Ordering::SeqCst) + 30;
        eventually("requests flow between swaps", || {
            let completed = completed.clone();
            async move { completed.load(Ordering::SeqCst) >= target }
        })
        .await;
        generation.store(i as usize, Ordering::SeqCst);
        proxy.apply(&split_table(&blue, &green, weights(i)));
    }
    done.store(true, Ordering::SeqCst);
    let mut total = 0;
    for client in clients {
        total += client.await.unwrap();
    }
    assert!(total >= 3000, "{total} requests");
    // Pools of retained backends survive swaps: connections stay bounded by
    // the client concurrency (16), not by the number of swaps (100).
    assert!(
        blue.accepted() <= 32,
        "blue accepted {} connections",
        blue.accepted()
    );
    assert!(
        green.accepted() <= 32,
        "green accepted {} connections",
        green.accepted()
    );
    Arc::into_inner(proxy).unwrap().shutdown().await;
}

async fn backend_state(proxy: &TestProxy, name: &str) -> serde_json::Value {
    proxy.backends().await["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
        .unwrap()
}

/// Sends `text` on the WebSocket and expects it echoed back.
async fn assert_echoes<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    socket.send(Message::text(text.to_owned())).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), text);
}

fn drain_table(blue: &TestBackend, green: &TestBackend, deadline: &str) -> String {
    split_table(blue, green, (1, 1)).replace(
        &format!("green: {{ endpoints: [\"{}\"] }}", green.addr),
        &format!(
            "green: {{ endpoints: [\"{}\"], drain: {{ deadline: {deadline} }} }}",
            green.addr
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_finishes_its_long_request_and_reports_drained() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&split_table(&blue, &green, (0, 1))).await;
    let mut long = Client::http1(proxy.addr).await;
    let in_flight = tokio::spawn(async move { long.get("/gate", &[]).await });
    eventually("green holds the long request", || async {
        green.seen_on("/gate") == 1
    })
    .await;

    proxy.apply(&drain_table(&blue, &green, "60s"));
    let state = backend_state(&proxy, "green").await;
    assert_eq!(state["state"], "draining");
    assert_eq!(state["in_flight_requests"], 1);
    let mut client = Client::http2(proxy.addr).await;
    for _ in 0..50 {
        assert_eq!(
            client.get("/", &[]).await.text(),
            "blue",
            "a draining backend gets no new requests"
        );
    }

    green.open_gate();
    let reply = in_flight.await.unwrap();
    assert_eq!(
        (reply.status.as_u16(), reply.text().as_str()),
        (200, "green"),
        "the long request completes"
    );
    eventually("green reports drained", || async {
        backend_state(&proxy, "green").await["state"] == "drained"
    })
    .await;
    let state = backend_state(&proxy, "green").await;
    assert!(state["drain"]["drained_at"].as_f64().unwrap() > 0.0);
    assert_eq!(state["drain"]["cut_requests"], 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_deadline_tunnels_close_and_http2_streams_reset() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let proxy = TestProxy::start(&split_table(&blue, &green, (0, 1))).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut socket, _) =
        tokio_tungstenite::client_async(format!("ws://app.test:{}/ws", proxy.addr.port()), stream)
            .await
            .unwrap();
    let mut h2 = Client::http2(proxy.addr).await;
    let response = h2
        .request(Method::GET, "/stream", &[], BodyExt::boxed(Empty::new()))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first;");

    proxy.apply(&drain_table(&blue, &green, "2s"));
    // Before the deadline the tunnel still works.
    assert_echoes(&mut socket, "still here").await;

    // At the deadline the stream is reset and the tunnel closed.
    let cut = tokio::time::timeout(support::DEADLINE, body.frame())
        .await
        .expect("the stream ends at the deadline");
    assert!(
        matches!(cut, Some(Err(_))),
        "the stream was reset, not finished: {cut:?}"
    );
    let closed = tokio::time::timeout(support::DEADLINE, socket.next())
        .await
        .expect("the tunnel closes at the deadline");
    assert!(!matches!(closed, Some(Ok(Message::Text(_)))), "{closed:?}");
    eventually("the cuts are counted and green is drained", || async {
        let state = backend_state(&proxy, "green").await;
        state["state"] == "drained"
            && state["drain"]["cut_tunnels"] == 1
            && state["drain"]["cut_requests"] == 1
    })
    .await;
    // The proxy itself is fine: new requests go to blue.
    assert_eq!(h2.get("/", &[]).await.text(), "blue");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_drain_keeps_cohorts_already_on_the_backend() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let sticky = |extra: &str| {
        table(blue.addr, green.addr, "  - name: app\n    rules:\n      - split: { weights: { blue: 1, green: 1 }, cohort: { from: \"header:x-user\" } }\n")
            .replace(&format!("green: {{ endpoints: [\"{}\"] }}", green.addr), &format!("green: {{ endpoints: [\"{}\"]{extra} }}", green.addr))
    };
    let proxy = TestProxy::start(&sticky("")).await;
    let mut client = Client::http1(proxy.addr).await;
    let mut on_green = Vec::new();
    for i in 0..40 {
        let user = format!("u{i}");
        if client.get("/", &[("x-user", &user)]).await.text() == "green" {
            on_green.push(user);
        }
    }
    assert!(!on_green.is_empty());
    proxy.apply(&sticky(", drain: { deadline: 60s, mode: soft }"));
    for user in &on_green {
        assert_eq!(
            client.get("/", &[("x-user", user)]).await.text(),
            "green",
            "{user} stays during a soft drain"
        );
    }
    for _ in 0..20 {
        assert_eq!(
            client.get("/", &[]).await.text(),
            "blue",
            "key-less requests never go to a draining backend"
        );
    }
    proxy.apply(&sticky(", drain: { deadline: 60s, mode: hard }"));
    for user in &on_green {
        assert_eq!(
            client.get("/", &[("x-user", user)]).await.text(),
            "blue",
            "{user} moves in a hard drain"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_beyond_a_lowered_share_close_gradually() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = switchyard_proxy::Settings {
        tunnel_rebalance_window: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let proxy = TestProxy::start_with(&split_table(&blue, &green, (0, 1)), settings).await;
    let closed = Arc::new(AtomicUsize::new(0));
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (socket, _) = tokio_tungstenite::client_async(
            format!("ws://app.test:{}/ws", proxy.addr.port()),
            stream,
        )
        .await
        .unwrap();
        let (mut sink, mut source) = socket.split();
        let closed = closed.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        });
        let echoes = tokio::spawn(async move {
            let mut echoed = 0usize;
            while let Some(Ok(Message::Text(_))) = source.next().await {
                echoed += 1;
            }
            closed.fetch_add(1, Ordering::SeqCst);
            echoed
        });
        sockets.push((tx, echoes));
    }
    eventually("all 20 tunnels are open", || async {
        backend_state(&proxy, "green").await["drain"]["open_tunnels"] == 20
    })
    .await;

    // green's share goes from 100 % to 50 %: half of its tunnels must go.
    proxy.apply(&split_table(&blue, &green, (1, 1)));
    eventually("a first tunnel closes", || async {
        closed.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert!(closed.load(Ordering::SeqCst) < 10, "not all at once");
    eventually("ten tunnels have closed", || async {
        closed.load(Ordering::SeqCst) == 10
    })
    .await;
    eventually("the rest stay open", || async {
        backend_state(&proxy, "green").await["drain"]["open_tunnels"] == 10
    })
    .await;
    assert_eq!(closed.load(Ordering::SeqCst), 10);
    let mut alive = 0;
    for (tx, echoes) in &sockets {
        if !echoes.is_finished() && tx.send("ping".to_owned()).await.is_ok() {
            alive += 1;
        }
    }
    assert_eq!(alive, 10);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_table_again_is_a_no_op() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let text = split_table(&blue, &green, (1, 1));
    let proxy = TestProxy::start(&text).await;
    let before = proxy.applier.state().snapshot().unwrap();
    let again = proxy.applier.apply(text.as_bytes(), "test").unwrap();
    assert!(!again.changed);
    assert_eq!(&again.version, before.table.version());
    let after = proxy.applier.state().snapshot().unwrap();
    assert!(
        Arc::ptr_eq(&before, &after),
        "the snapshot was not replaced"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_shutdown_tunnels_get_the_grace_period_then_close() {
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let settings = switchyard_proxy::Settings {
        shutdown_grace: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let proxy = TestProxy::start_with(&split_table(&blue, &green, (1, 0)), settings).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut socket, _) =
        tokio_tungstenite::client_async(format!("ws://app.test:{}/ws", proxy.addr.port()), stream)
            .await
            .unwrap();
    let stopping = tokio::spawn(proxy.shutdown());
    // During the grace period the tunnel still works...
    assert_echoes(&mut socket, "during shutdown").await;
    // ...and when it ends the proxy closes it and finishes.
    let closed = tokio::time::timeout(support::DEADLINE, socket.next())
        .await
        .expect("the tunnel closes");
    assert!(!matches!(closed, Some(Ok(Message::Text(_)))), "{closed:?}");
    stopping.await.unwrap();
}
