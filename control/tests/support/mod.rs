//! Helpers for the control-plane tests: the real daemon binary as a child
//! process, the CLI, real proxies in this process following it, and tiny
//! backends that answer with their name. Everything on 127.0.0.1.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use switchyard_control::client::Client;
use switchyard_proxy::control_plane::{self, ControlPlane, ControlPlaneTls};
use switchyard_proxy::{Applier, Listeners, Settings, State};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How long any wait lasts before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub const ADMIN_SECRET: &str = "admin-secret-0123456789";
pub const PROXY_SECRET: &str = "proxy-secret-0123456789";

/// A scratch directory with tokens and token files.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokens"),
            format!("# test tokens\nalice admin {ADMIN_SECRET}\nedge proxy {PROXY_SECRET}\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN_SECRET).unwrap();
        std::fs::write(dir.path().join("proxy.token"), PROXY_SECRET).unwrap();
        std::fs::write(dir.path().join("wrong.token"), "not-a-known-secret-000").unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// The daemon, as a child process.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// Client TLS when the daemon serves `https://`.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Daemon {
    /// Starts `switchyard-control serve` on `listen` (`127.0.0.1:0` for any
    /// port) and waits until it answers.
    pub async fn start(work: &Workspace, listen: &str, extra: &[&str]) -> Self {
        Self::start_tls(work, listen, extra, None).await
    }

    /// Starts the daemon applying the group files of `watched` (created
    /// here), read every 50 ms.
    pub async fn start_watching(work: &Workspace, watched: &Path) -> Self {
        std::fs::create_dir_all(watched).unwrap();
        let watched = watched.to_str().unwrap();
        let args = ["--watch", watched, "--watch-interval", "50ms"];
        Self::start(work, "127.0.0.1:0", &args).await
    }

    /// Like `start`, for a daemon serving TLS that `tls` can talk to.
    pub async fn start_tls(
        work: &Workspace,
        listen: &str,
        extra: &[&str],
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard-control"))
            .args(["serve", "--listen", listen, "--data"])
            .arg(work.path("data"))
            .arg("--tokens")
            .arg(work.path("tokens"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (address_tx, address_rx) = tokio::sync::oneshot::channel();
        // Read the log for the bound address, then keep draining it.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut address_tx = Some(address_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("address=").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or("").to_owned();
                    if let Some(tx) = address_tx.take() {
                        let _ = tx.send(address);
                    }
                }
                eprintln!("[control] {line}");
            }
        });
        let address = tokio::time::timeout(DEADLINE, address_rx)
            .await
            .expect("the daemon logged its address in time")
            .expect("the daemon started");
        let addr: SocketAddr = address.parse().unwrap();
        let daemon = Self { child, addr, tls };
        eventually("the daemon answers /ready", || async {
            daemon
                .client(None)
                .get("/ready")
                .await
                .is_ok_and(|a| a.status == 200)
        })
        .await;
        daemon
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn client(&self, secret: Option<&str>) -> Client {
        Client::with_tls(&self.url(), secret.map(ToOwned::to_owned), self.tls.clone()).unwrap()
    }

    /// `kill -9`.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Status of `group` as JSON.
    pub async fn status(&self, group: &str) -> Value {
        let answer = self
            .client(Some(ADMIN_SECRET))
            .get(&format!("/v1/status?group={group}"))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        answer.json().unwrap()
    }

    /// History of `group` as JSON changes, newest first.
    pub async fn history(&self, group: &str) -> Vec<Value> {
        let answer = self
            .client(Some(ADMIN_SECRET))
            .get(&format!("/v1/history?group={group}&limit=10000"))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        answer.json().unwrap()["changes"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the CLI against `daemon` with `token` (a file name in `work`).
pub async fn cli(work: &Workspace, daemon: &Daemon, token: Option<&str>, args: &[&str]) -> CliRun {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard-control"));
    command
        .args(args)
        .env("SWITCHYARD_SERVER", daemon.url())
        .env_remove("SWITCHYARD_TOKEN_FILE")
        .env_remove("SWITCHYARD_GROUP")
        .current_dir(work.dir.path());
    if let Some(token) = token {
        command.env("SWITCHYARD_TOKEN_FILE", work.path(token));
    }
    let output = tokio::time::timeout(DEADLINE * 2, command.output())
        .await
        .expect("the CLI finished in time")
        .unwrap();
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A real proxy in this process, following the control plane.
pub struct FollowingProxy {
    pub addr: SocketAddr,
    pub applier: Applier,
    stop: watch::Sender<bool>,
    stop_proxy: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FollowingProxy {
    pub async fn start(url: &str, group: &str, node: &str) -> Self {
        Self::start_with(url, group, node, |_| {}).await
    }

    pub async fn start_with(
        url: &str,
        group: &str,
        node: &str,
        adjust: impl FnOnce(&mut ControlPlane),
    ) -> Self {
        let applier = Applier::new(State::new());
        let mut plane = ControlPlane {
            url: url.parse().unwrap(),
            group: group.to_owned(),
            node_id: node.to_owned(),
            token: Some(PROXY_SECRET.to_owned()),
            cache: None,
            report_interval: Duration::from_millis(200),
            max_table_bytes: switchyard_config::load::MAX_TABLE_BYTES,
            tls: ControlPlaneTls::default(),
        };
        adjust(&mut plane);
        control_plane::load_cache(&plane, &applier);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(control_plane::follow(plane, applier.clone(), stopped));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_proxy, proxy_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(switchyard_proxy::run(
            Listeners {
                proxy: vec![listener],
                ..Listeners::default()
            },
            applier.clone(),
            Settings {
                expose_backend: true,
                ..Settings::default()
            },
            async {
                let _ = proxy_stopped.await;
            },
        ));
        Self {
            addr,
            applier,
            stop,
            stop_proxy: Some(stop_proxy),
        }
    }

    /// The version it serves.
    pub fn version(&self) -> Option<String> {
        self.applier
            .state()
            .snapshot()
            .map(|s| s.table.version().as_str().to_owned())
    }

    /// GET `/` through the proxy: (status, body).
    pub async fn get(&self) -> (u16, String) {
        get(self.addr).await
    }
}

impl Drop for FollowingProxy {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(stop) = self.stop_proxy.take() {
            let _ = stop.send(());
        }
    }
}

/// One HTTP/1.1 GET `/` to `addr`.
pub async fn get(addr: SocketAddr) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/")
        .header("host", "app.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A backend answering every request with its name.
pub async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(name.as_bytes()),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A table splitting `web` between blue and green in sequence mode (exact
/// shares, so tests can compare counts without a tolerance).
pub fn split_table(
    blue: SocketAddr,
    green: SocketAddr,
    blue_weight: u32,
    green_weight: u32,
) -> String {
    format!(
        "backends:\n  blue: {{ endpoints: [\"{blue}\"] }}\n  green: {{ endpoints: [\"{green}\"] }}\nroutes:\n- name: web\n  rules:\n  - split: {{ weights: {{ blue: {blue_weight}, green: {green_weight} }}, mode: sequence }}\n"
    )
}

/// Polls `check` until true; fails the test after [`DEADLINE`].
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
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Counts of each body over `n` GETs through `addr`.
pub async fn tally(addr: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let (status, body) = get(addr).await;
        assert_eq!(status, 200, "body: {body}");
        *counts.entry(body).or_default() += 1;
    }
    counts
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The group the release tests work on.
pub const GROUP: &str = "edge";

/// The CLI with the admin token.
pub async fn admin(work: &Workspace, daemon: &Daemon, args: &[&str]) -> CliRun {
    cli(work, daemon, Some("admin.token"), args).await
}

/// Applies `table` with the CLI and waits with `status -w` until it is live.
pub async fn apply_live(work: &Workspace, daemon: &Daemon, name: &str, table: &str) -> String {
    let file = work.write(name, table);
    let run = admin(
        work,
        daemon,
        &[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "-g",
            GROUP,
            "-m",
            name,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "apply failed: {run:?}");
    let run = admin(
        work,
        daemon,
        &["status", "-w", "--timeout", "20s", "-g", GROUP],
    )
    .await;
    assert_eq!(run.code, 0, "status -w failed: {run:?}");
    assert!(run.stdout.contains("LIVE"), "{}", run.stdout);
    daemon.status(GROUP).await["desired"]
        .as_str()
        .unwrap()
        .to_owned()
}
