//! The figures beyond wrk's: h2c throughput and CPU (h2load), latency at a
//! fixed rate (an open-loop generator here), and memory per idle keep-alive
//! connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::measure::{clock_ticks, tree_cpu_ticks, tree_rss_kib};

/// h2load against `target` (h2c, prior knowledge): requests/s and, with
/// `pid`, the process tree's CPU per request.
pub(crate) fn h2load(
    target: &str,
    pid: Option<u32>,
    duration: Duration,
) -> anyhow::Result<(f64, Option<f64>)> {
    let before = pid.map(tree_cpu_ticks);
    let output = Command::new("taskset")
        .args(["-c", "0", "h2load", "-t1", "-c16", "-m10"])
        .arg(format!("-D{}", duration.as_secs().max(1)))
        .arg(format!("http://{target}/"))
        .output()?;
    let after = pid.map(tree_cpu_ticks);
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "h2load failed: {text}");
    // "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, ..."
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("requests:"))
        .ok_or_else(|| anyhow::anyhow!("no request line in h2load output: {text}"))?;
    let count = |word: &str| -> Option<f64> {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        words
            .windows(2)
            .find(|w| w[1] == word)
            .and_then(|w| w[0].parse().ok())
    };
    let succeeded = count("succeeded").ok_or_else(|| anyhow::anyhow!("no count: {line}"))?;
    let failed = count("failed").unwrap_or(0.0);
    anyhow::ensure!(failed == 0.0, "h2load saw failed requests: {line}");
    let rps = text
        .lines()
        .find(|l| l.contains("req/s"))
        .and_then(|l| l.split(',').find(|p| p.contains("req/s")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no req/s in h2load output: {text}"))?;
    let cpu = match (before, after) {
        (Some(before), Some(after)) if succeeded > 0.0 => {
            Some(after.since(before).total() as f64 / clock_ticks() * 1e6 / succeeded)
        }
        _ => None,
    };
    Ok((rps, cpu))
}

/// Latency percentiles (p50, p99, in microseconds) at `rate` requests per
/// second over 16 keep-alive HTTP/1.1 connections, measured from when each
/// request was due (open loop: a slow answer does not delay later requests).
pub(crate) fn fixed_rate(
    target: &str,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    const CONNECTIONS: u32 = 16;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let failures = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let per_connection = f64::from(rate) / f64::from(CONNECTIONS);
        let interval = Duration::from_secs_f64(1.0 / per_connection);
        let start = tokio::time::Instant::now() + Duration::from_millis(100);
        for c in 0..CONNECTIONS {
            let target = target.to_owned();
            let failures = failures.clone();
            // Spread the connections' schedules over one interval.
            let offset = interval.mul_f64(f64::from(c) / f64::from(CONNECTIONS));
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut sender = connect(&target).await?;
                let mut due = start + offset;
                let end = start + duration;
                while due < end {
                    // Behind schedule (the last answer was late): count from
                    // when the request was due. On time: sleep, and count from
                    // the send, so the timer's granularity is not measured.
                    let began = if tokio::time::Instant::now() >= due {
                        due
                    } else {
                        tokio::time::sleep_until(due).await;
                        tokio::time::Instant::now()
                    };
                    // A server may close a keep-alive connection (nginx after
                    // 1,000 requests): reconnect once, as wrk does.
                    let mut outcome = send(&mut sender).await;
                    if outcome.is_err() {
                        sender = connect(&target).await?;
                        outcome = send(&mut sender).await;
                    }
                    match outcome {
                        Ok(true) => latencies.push(began.elapsed().as_secs_f64() * 1e6),
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    due += interval;
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        anyhow::ensure!(
            failures.load(Ordering::Relaxed) == 0,
            "failed requests at a fixed rate"
        );
        all.sort_by(f64::total_cmp);
        let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        anyhow::ensure!(!all.is_empty(), "no request completed");
        Ok((at(0.50), at(0.99)))
    })
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(target: &str) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET; `Ok(true)` for a 2xx read to its end, `Err` when the
/// connection could not carry it.
async fn send(sender: &mut Sender) -> anyhow::Result<bool> {
    sender.ready().await?;
    let request = hyper::Request::get("/")
        .header("host", "bench")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let ok = response.status().is_success();
    response.into_body().collect().await?;
    Ok(ok)
}

/// RSS of the target's process tree fresh, and per idle keep-alive
/// connection once `connections` clients each made one request and stayed.
pub(crate) fn idle_memory(
    target: &str,
    pid: u32,
    connections: usize,
) -> anyhow::Result<(u64, f64)> {
    let fresh = tree_rss_kib(pid);
    let mut open = Vec::with_capacity(connections);
    let mut buffer = [0u8; 4096];
    for _ in 0..connections {
        let mut stream = TcpStream::connect(target)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")?;
        // One response (small, in one read) so the connection is idle in
        // keep-alive, as a browser's would be.
        let read = stream.read(&mut buffer)?;
        anyhow::ensure!(read > 0, "connection closed before answering");
        open.push(stream);
    }
    // Idle long enough for Switchyard to park every connection (after 1 to
    // 2 s of idleness it gives hyper's buffers back; nginx and HAProxy free
    // theirs at once) and for lazily freed memory to settle.
    std::thread::sleep(Duration::from_millis(2500));
    let loaded = tree_rss_kib(pid);
    drop(open);
    Ok((
        fresh,
        loaded.saturating_sub(fresh) as f64 / connections as f64,
    ))
}
