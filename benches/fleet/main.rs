//! `switchyard-fleet`: fleet convergence of the control plane.
//!
//! Starts the real `switchyard-control` daemon, opens N simulated proxies
//! (one HTTP/2 connection and subscription each, ACKing every push with a
//! report, as `switchyard-proxy` does), then applies 20 tables one after the
//! other and measures, for each, the time from the apply call returning to
//! the last of the N ACKs being answered. Prints p50/p99 per N and the
//! daemon's RSS with all N connected.
//!
//! `cargo build --release --workspace && target/release/switchyard-fleet`
//! (`--subscribers 100,1000,10000 --applies 20`). Everything is on
//! 127.0.0.1; the daemon is stopped by PID.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_control::client::Client;
use tokio::sync::{Notify, Semaphore};

const SECRET: &str = "fleet-bench-admin-secret";
const GROUP: &str = "bench";
/// How long one apply may take to reach every subscriber before the bench fails.
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);

struct Options {
    sizes: Vec<usize>,
    applies: usize,
    control_bin: PathBuf,
}

/// Counts ACKs of the version being measured.
#[derive(Default)]
struct Board {
    state: Mutex<BoardState>,
    changed: Notify,
    finished: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct BoardState {
    version: String,
    acks: usize,
    last_ack: Option<Instant>,
}

struct SizeResult {
    subscribers: usize,
    connect: Duration,
    latencies: Vec<Duration>,
    rss_kib: u64,
}

fn main() -> anyhow::Result<()> {
    let options = parse_args()?;
    anyhow::ensure!(
        options.control_bin.exists(),
        "{} not found: build it with `cargo build --release -p switchyard-control`",
        options.control_bin.display()
    );
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    let largest = options.sizes.iter().copied().max().unwrap_or(0) as u64;
    anyhow::ensure!(
        limit > largest + 100,
        "the descriptor limit is {limit}; {largest} subscribers need more (raise the hard limit)"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = Vec::new();
    for &size in &options.sizes {
        let result = runtime.block_on(measure(size, &options))?;
        eprintln!(
            "{size} subscribers: connected in {:.2}s, median {:.1} ms, daemon RSS {} MiB",
            result.connect.as_secs_f64(),
            millis(percentile(&result.latencies, 0.5)),
            result.rss_kib / 1024
        );
        results.push(result);
    }
    println!(
        "\nFleet convergence: time from `apply` returning to the last ACK, {} applies per size\n",
        options.applies
    );
    println!("| subscribers | p50 | p99 | max | daemon RSS | connect all |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for result in &results {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB | {:.2} s |",
            result.subscribers,
            millis(percentile(&result.latencies, 0.5)),
            millis(percentile(&result.latencies, 0.99)),
            millis(result.latencies.iter().copied().max().unwrap_or_default()),
            result.rss_kib as f64 / 1024.0,
            result.connect.as_secs_f64(),
        );
    }
    Ok(())
}

async fn measure(size: usize, options: &Options) -> anyhow::Result<SizeResult> {
    let dir = std::env::temp_dir().join(format!("switchyard-fleet-{}-{size}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("tokens"), format!("bench admin {SECRET}\n"))?;
    let (mut daemon, address) = start_daemon(&options.control_bin, &dir)?;
    let outcome = measure_with(size, options, &address, daemon.id()).await;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure_with(
    size: usize,
    options: &Options,
    address: &str,
    daemon_pid: u32,
) -> anyhow::Result<SizeResult> {
    let client = Client::new(&format!("http://{address}"), Some(SECRET.to_owned()))?;
    let board = Arc::new(Board::default());
    let first = table(0);
    expect(&board, &first);
    apply(&client, &first).await?;

    // Connect every subscriber; each ACKs the current table at once.
    let started = Instant::now();
    let connecting = Arc::new(Semaphore::new(64));
    for node in 0..size {
        let (board, address, connecting) = (board.clone(), address.to_owned(), connecting.clone());
        tokio::spawn(async move {
            let outcome = subscriber(node, &address, board.clone(), connecting).await;
            // Once the size is measured the daemon is killed: those errors are expected.
            if let Err(failure) = outcome
                && !board.finished.load(std::sync::atomic::Ordering::Relaxed)
            {
                eprintln!("subscriber {node}: {failure:#}");
            }
        });
    }
    wait_for_acks(&board, size).await?;
    let connect = started.elapsed();
    let rss_kib = rss_kib(daemon_pid)?;

    let mut latencies = Vec::with_capacity(options.applies);
    for round in 1..=options.applies {
        let text = table(round);
        expect(&board, &text);
        apply(&client, &text).await?;
        let returned = Instant::now();
        let last = wait_for_acks(&board, size).await?;
        latencies.push(last.saturating_duration_since(returned));
    }
    board
        .finished
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(SizeResult {
        subscribers: size,
        connect,
        latencies,
        rss_kib,
    })
}

/// One simulated proxy: subscribe, and ACK each pushed version with a report.
async fn subscriber(
    node: usize,
    address: &str,
    board: Arc<Board>,
    connecting: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let permit = connecting.acquire_owned().await?;
    let stream = tokio::net::TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await?;
    tokio::spawn(connection);
    let request = |method: &str, path: String, body: Bytes| {
        hyper::Request::builder()
            .method(method)
            .uri(format!("http://{address}{path}"))
            .header("authorization", format!("Bearer {SECRET}"))
            .body(Full::new(body))
    };
    let response = sender
        .send_request(request(
            "GET",
            format!("/v1/subscribe?group={GROUP}&node=n{node}"),
            Bytes::new(),
        )?)
        .await?;
    anyhow::ensure!(response.status() == 200, "subscribe: {}", response.status());
    drop(permit);
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line = buffer.split_to(end + 1);
            let push: switchyard_config::wire::Push = serde_json::from_slice(&line[..end])?;
            let report = switchyard_config::wire::Report {
                node: format!("n{node}"),
                group: GROUP.to_owned(),
                applied: Some(push.version.clone()),
                source: "bench".to_owned(),
                ..Default::default()
            };
            let answer = sender
                .send_request(request(
                    "POST",
                    switchyard_config::wire::REPORT_PATH.to_owned(),
                    Bytes::from(serde_json::to_vec(&report)?),
                )?)
                .await?;
            anyhow::ensure!(answer.status() == 200, "report: {}", answer.status());
            ack(&board, &push.version);
        }
    }
    Ok(())
}

fn expect(board: &Board, table_text: &str) {
    let version = switchyard_config::parse_table(table_text.as_bytes())
        .map(|t| t.version().as_str().to_owned())
        .unwrap_or_default();
    let mut state = board.state.lock().unwrap_or_else(|p| p.into_inner());
    *state = BoardState {
        version,
        acks: 0,
        last_ack: None,
    };
}

fn ack(board: &Board, version: &str) {
    let mut state = board.state.lock().unwrap_or_else(|p| p.into_inner());
    if state.version == version {
        state.acks += 1;
        state.last_ack = Some(Instant::now());
        board.changed.notify_one();
    }
}

/// Waits until `size` ACKs of the expected version; returns the last one's time.
async fn wait_for_acks(board: &Board, size: usize) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        {
            let state = board.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.acks >= size
                && let Some(last) = state.last_ack
            {
                return Ok(last);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {size} subscribers ACKed within {CONVERGE_LIMIT:?}",
                state.acks
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), board.changed.notified()).await;
    }
}

async fn apply(client: &Client, text: &str) -> anyhow::Result<()> {
    let answer = client
        .post(
            &format!("/v1/groups/{GROUP}/apply"),
            &serde_json::json!({ "table": text, "message": "fleet bench" }),
        )
        .await?;
    anyhow::ensure!(answer.status == 200, "apply: {}", answer.refusal());
    Ok(())
}

/// A 50-backend-pair table so that each push is a realistic few KiB.
fn table(round: usize) -> String {
    let mut text = String::from("backends:\n");
    for i in 0..20 {
        text.push_str(&format!(
            "  blue{i}: {{ endpoints: [\"10.0.{i}.1:8080\", \"10.0.{i}.2:8080\"] }}\n  green{i}: {{ endpoints: [\"10.1.{i}.1:8080\", \"10.1.{i}.2:8080\"] }}\n"
        ));
    }
    text.push_str("routes:\n");
    for i in 0..20 {
        let green = (round * 7 + i) % 101;
        text.push_str(&format!(
            "- name: svc{i}\n  hostnames: [\"svc{i}.example.com\"]\n  rules:\n  - split: {{ weights: {{ blue{i}: {}, green{i}: {green} }} }}\n",
            100 - green.min(100)
        ));
    }
    text
}

fn start_daemon(binary: &PathBuf, dir: &std::path::Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("data"))
        .arg("--tokens")
        .arg(dir.join("tokens"))
        .env("RUST_LOG", "warn,switchyard_control::cli=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let address = loop {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            anyhow::bail!("the daemon exited before listening");
        };
        let line = line?;
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap_or("").to_owned();
        }
    };
    // Keep draining the log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, address))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

fn percentile(samples: &[Duration], quantile: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn parse_args() -> anyhow::Result<Options> {
    let mut options = Options {
        sizes: vec![100, 1000, 10_000],
        applies: 20,
        control_bin: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/release/switchyard-control"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--subscribers" => {
                options.sizes = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--applies" => options.applies = value()?.parse()?,
            "--control-bin" => options.control_bin = PathBuf::from(value()?),
            other => anyhow::bail!(
                "unknown flag {other}; flags: --subscribers N,N,... --applies N --control-bin PATH"
            ),
        }
    }
    anyhow::ensure!(options.applies > 0, "--applies must be at least 1");
    Ok(options)
}
