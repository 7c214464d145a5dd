//! The JSON access log: one line per request on stdout, Envoy-style keys.
//!
//! Writing never blocks a request: lines go through a bounded queue to a
//! writer thread, and a line that does not fit (stdout slow or blocked) is
//! dropped and counted in `switchyard_access_log_dropped_lines_total`.
//! Sampling decides per request whether its line is built at all.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE_LINES: usize = 8192;

/// How long the writer lets lines gather before writing them out.
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// The access log.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<String>,
    sample_rate: f64,
    dropped: Counter,
}

/// What is known of a request when it starts, for a sampled request.
#[derive(Debug)]
pub struct Pending {
    pub(crate) start_time: SystemTime,
    pub(crate) start: Instant,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) protocol: &'static str,
    pub(crate) authority: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) x_forwarded_for: Option<String>,
    pub(crate) request_id: String,
    pub(crate) received: Arc<AtomicU64>,
    pub(crate) response_code: u16,
    pub(crate) response_flags: &'static str,
    pub(crate) upstream_service_time_ms: Option<f64>,
    pub(crate) upstream_host: Option<String>,
    pub(crate) route: Option<String>,
    pub(crate) backend: Option<String>,
    pub(crate) table_version: Option<String>,
    pub(crate) cohort: bool,
}

#[derive(Debug, Serialize)]
struct Line<'a> {
    start_time: String,
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    response_code: u16,
    response_flags: &'a str,
    bytes_received: u64,
    bytes_sent: u64,
    duration: f64,
    upstream_service_time: Option<f64>,
    x_forwarded_for: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: &'a str,
    authority: Option<&'a str>,
    upstream_host: Option<&'a str>,
    route: Option<&'a str>,
    backend: Option<&'a str>,
    table_version: Option<&'a str>,
    cohort: bool,
}

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer thread. `sample_rate` in 0..=1 is the share of
    /// requests logged; `dropped` counts lines lost to a full queue.
    pub fn start(sample_rate: f64, dropped: Counter) -> Arc<Self> {
        let (queue, lines) = std::sync::mpsc::sync_channel::<String>(QUEUE_LINES);
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                while let Ok(line) = lines.recv() {
                    // Let lines gather for a moment: senders then find no
                    // waiting receiver to wake, and one write carries many
                    // lines. Lines reach stdout at most this late.
                    std::thread::sleep(BATCH_DELAY);
                    let mut ok = out.write_all(line.as_bytes()).is_ok();
                    while let Ok(line) = lines.try_recv() {
                        ok &= out.write_all(line.as_bytes()).is_ok();
                    }
                    if !ok || out.flush().is_err() {
                        return;
                    }
                }
            })
            .map_err(|error| tracing::error!(%error, "cannot start the access log writer"))
            .ok();
        Arc::new(Self {
            queue,
            sample_rate: sample_rate.clamp(0.0, 1.0),
            dropped,
        })
    }

    /// Whether this request is logged.
    pub fn sampled(&self) -> bool {
        self.sample_rate >= 1.0
            || (self.sample_rate > 0.0 && rand::random::<f64>() < self.sample_rate)
    }

    /// Queues the line of a finished request.
    pub(crate) fn finish(&self, pending: &Pending, bytes_sent: u64) {
        let line = Line {
            start_time: rfc3339(pending.start_time),
            method: &pending.method,
            path: &pending.path,
            protocol: pending.protocol,
            response_code: pending.response_code,
            response_flags: pending.response_flags,
            bytes_received: pending.received.load(Ordering::Relaxed),
            bytes_sent,
            duration: pending.start.elapsed().as_secs_f64() * 1000.0,
            upstream_service_time: pending.upstream_service_time_ms,
            x_forwarded_for: pending.x_forwarded_for.as_deref(),
            user_agent: pending.user_agent.as_deref(),
            request_id: &pending.request_id,
            authority: pending.authority.as_deref(),
            upstream_host: pending.upstream_host.as_deref(),
            route: pending.route.as_deref(),
            backend: pending.backend.as_deref(),
            table_version: pending.table_version.as_deref(),
            cohort: pending.cohort,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        match self.queue.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// `2026-11-23T21:04:05.123Z` (UTC, milliseconds).
fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339_utc() {
        let at = |secs: u64, millis: u64| {
            rfc3339(
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis),
            )
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_467_845, 123), "2026-11-23T21:04:05.123Z");
    }
}
