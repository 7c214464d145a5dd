//! Shared helpers for the end-to-end tests: real backends, the real proxy
//! (in-process, on 127.0.0.1 ports from `bind(:0)`), and real clients.
// Test helpers: a panic is the failure report, so unwrap is the point; not
// every test file uses every helper.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

pub mod backend;
pub mod client;
pub mod h2raw;
pub mod pki;
pub mod raw;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use switchyard_proxy::{Applier, Listeners, Settings, State};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use backend::TestBackend;
pub use client::{Client, Reply};

/// How long any `eventually` waits before failing the test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A proxy running in this process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub applier: Applier,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts a proxy serving `table` with `x-switchyard-backend` exposed.
    pub async fn start(table: &str) -> Self {
        Self::start_with(
            table,
            Settings {
                expose_backend: true,
                ..Settings::default()
            },
        )
        .await
    }

    pub async fn start_with(table: &str, settings: Settings) -> Self {
        let applier = Applier::new(State::new());
        applier
            .apply(table.as_bytes(), "test")
            .unwrap_or_else(|e| panic!("{e}"));
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            proxy: vec![proxy],
            admin: Some(admin),
            ..Listeners::default()
        };
        let task = tokio::spawn(switchyard_proxy::run(
            listeners,
            applier.clone(),
            settings,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            admin: admin_addr,
            applier,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Applies a new table, panicking if it is rejected.
    pub fn apply(&self, table: &str) {
        self.applier
            .apply(table.as_bytes(), "test")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The admin API's `GET /backends`, parsed.
    pub async fn backends(&self) -> serde_json::Value {
        let reply = Client::http1(self.admin).await.get("/backends", &[]).await;
        serde_json::from_slice(&reply.body).unwrap()
    }

    /// The admin API's `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        Client::http1(self.admin)
            .await
            .get("/metrics", &[])
            .await
            .text()
    }

    /// Stops the proxy and fails the test if its task panicked.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("proxy shut down within the deadline")
                .expect("proxy task did not panic");
        }
    }
}

/// An address where nothing listens, for the rest of the test process: a
/// socket bound and never listening, kept open (leaked) so that neither a
/// listener of another test nor the ephemeral port of an outgoing
/// connection can take the port. A port merely bound then closed could be
/// handed out again by `bind(:0)` while the test still expects refusals.
pub async fn dead_address() -> SocketAddr {
    let (addr, socket) = refusing_port();
    Box::leak(Box::new(socket));
    addr
}

/// A port that refuses connections until it is brought back: a socket
/// bound but not listening, so that no other socket can take the port
/// meanwhile. `refusing.listen(1024)` gives the listener.
pub fn refusing_port() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

/// Polls `check` until it returns true, failing after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the admin listener's metric line that starts with
/// `series` (name, labels and the space before the value).
pub async fn sample(admin: SocketAddr, series: &str) -> u64 {
    let text = Client::http1(admin).await.get("/metrics", &[]).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .unwrap_or_else(|| panic!("no {series:?} in the metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// A table whose one route sends everything to backend `app`, given as
/// the inside of its YAML map (`endpoints: [...]` and so on).
pub fn app_table(backend: &str) -> String {
    format!(
        "backends:\n  app: {{ {backend} }}\nroutes:\n  - {{ name: app, rules: [{{ backend: app }}] }}\n"
    )
}

/// A route sending everything to `blue` (for [`table`]).
pub const TO_BLUE: &str = "  - name: app\n    rules:\n      - backend: blue\n";

/// A normal HTTP/1.1 request still gets blue's answer.
pub async fn served_normally(addr: SocketAddr) {
    let mut client = Client::http1(addr).await;
    assert_eq!(client.get("/", &[]).await.text(), "blue");
}

/// A native table with backends `blue` and `green` at the given addresses
/// (green speaks `green_protocol`) and the given routes.
pub fn table(blue: SocketAddr, green: SocketAddr, routes: &str) -> String {
    format!(
        "backends:\n  blue: {{ endpoints: [\"{blue}\"] }}\n  green: {{ endpoints: [\"{green}\"] }}\nroutes:\n{routes}"
    )
}
