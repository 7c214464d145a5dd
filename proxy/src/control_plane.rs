//! Control-plane table source: one HTTP/2 connection to `switchyard-control`
//! carrying the subscription stream (tables in) and reports (ACK/NACK,
//! drain state, traffic counts out). See `switchyard_config::wire`.
//!
//! The control plane is off the request path: while it is unreachable the
//! last good table keeps serving, and the client reconnects with jittered
//! exponential backoff. With a cache file, the last good table also
//! survives a restart of the proxy while the control plane is down.

mod report;

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng;
use switchyard_config::wire::{Nack, Push, REPORT_PATH, SUBSCRIBE_PATH};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::state::Applier;
use crate::upstream_tls::{UpstreamIo, UpstreamTls};
use report::Reporter;
use switchyard_config::spec::{BackendTlsSpec, Protocol};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A push line longer than this is refused (tables are at most 16 MiB).
const MAX_LINE_BYTES: usize = 40 * 1024 * 1024;

/// Where and who this proxy is.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// `http://host:port` of the control plane.
    pub url: Uri,
    /// Group of proxies this one belongs to.
    pub group: String,
    /// This proxy's name in fleet status.
    pub node_id: String,
    /// Bearer token (role `proxy`).
    pub token: Option<String>,
    /// File keeping the last good table across restarts.
    pub cache: Option<PathBuf>,
    /// How often to report when nothing changes.
    pub report_interval: Duration,
    /// Pushed tables above this size are refused (NACK).
    pub max_table_bytes: usize,
    /// For an `https://` control plane: whom to trust and who we are.
    pub tls: ControlPlaneTls,
}

/// TLS towards the control plane (used when its URL is `https://`).
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneTls {
    /// CA bundle to verify the control plane (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate for a control plane that requires one.
    pub client_cert: Option<PathBuf>,
    /// Its private key.
    pub client_key: Option<PathBuf>,
}

type Body = Full<Bytes>;

impl ControlPlane {
    /// `origin` of tables from the control plane (shown by `/config`, `/ready`).
    pub fn origin(&self) -> String {
        let text = self.url.to_string();
        format!("control-plane {}", text.trim_end_matches('/'))
    }

    fn authority(&self) -> anyhow::Result<String> {
        anyhow::ensure!(
            matches!(self.url.scheme_str(), Some("http" | "https")),
            "--control-plane {} must start with http:// or https://",
            self.url
        );
        self.url
            .authority()
            .map(ToString::to_string)
            .ok_or_else(|| anyhow::anyhow!("--control-plane {} has no host", self.url))
    }

    /// Checks the settings before anything starts (URL, TLS files).
    pub fn check(&self) -> anyhow::Result<()> {
        self.authority()?;
        self.tls_client().map(drop)
    }

    /// The TLS client for an `https://` control plane, `None` for `http://`.
    fn tls_client(&self) -> anyhow::Result<Option<UpstreamTls>> {
        if self.url.scheme_str() != Some("https") {
            return Ok(None);
        }
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let spec = BackendTlsSpec {
            ca_file: path(&self.tls.ca_file),
            server_name: None,
            client_cert: path(&self.tls.client_cert),
            client_key: path(&self.tls.client_key),
        };
        UpstreamTls::load(&spec, Protocol::Http2)
            .map(Some)
            .map_err(|(field, reason)| anyhow::anyhow!("control-plane TLS ({field}): {reason}"))
    }
}

/// Applies the cached table, if any, so the proxy can serve before the
/// control plane answers. A missing or bad cache is only logged.
pub fn load_cache(plane: &ControlPlane, applier: &Applier) {
    let Some(path) = &plane.cache else {
        return;
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let origin = format!("cache {}", path.display());
            if applier.apply_logged(&bytes, &origin).is_ok() {
                tracing::info!(path = %path.display(), "serving the cached table until the control plane answers");
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot read the table cache"),
    }
}

/// Follows the control plane until `shutdown`.
pub async fn follow(plane: ControlPlane, applier: Applier, mut shutdown: watch::Receiver<bool>) {
    let tls = match plane.tls_client() {
        Ok(tls) => tls,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "cannot follow the control plane");
            return;
        }
    };
    let mut reporter = Reporter::new(&plane);
    let mut backoff = BACKOFF_FIRST;
    loop {
        let outcome = tokio::select! {
            _ = crate::state::stopped(&mut shutdown) => return,
            outcome = session(&plane, tls.as_ref(), &applier, &mut reporter) => outcome,
        };
        match outcome {
            Ok(()) => {
                tracing::warn!(url = %plane.url, "control plane closed the subscription; reconnecting");
                backoff = BACKOFF_FIRST;
            }
            Err(failure) => {
                tracing::warn!(url = %plane.url, error = %format!("{failure:#}"), retry_in = ?backoff, "control plane unreachable; the last good table keeps serving");
            }
        }
        // Full jitter: a fleet that lost the control plane together does
        // not come back in lockstep.
        let pause = rand::rng().random_range(backoff / 2..=backoff);
        tokio::select! {
            _ = crate::state::stopped(&mut shutdown) => return,
            () = tokio::time::sleep(pause) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: subscribe, apply pushes, report. Returns when the
/// stream ends; errors say why it could not go on.
async fn session(
    plane: &ControlPlane,
    tls: Option<&UpstreamTls>,
    applier: &Applier,
    reporter: &mut Reporter,
) -> anyhow::Result<()> {
    let authority = plane.authority()?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority))
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let stream = match tls {
        None => UpstreamIo::Plain(stream),
        Some(tls) => UpstreamIo::Tls(Box::new(
            tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(&authority, stream))
                .await
                .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))?
                .map_err(|reason| anyhow::anyhow!("{reason}"))?,
        )),
    };
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .handshake::<_, Body>(TokioIo::new(stream))
        .await?;
    let connection = tokio::spawn(connection);
    let _stop_connection = AbortOnDrop(connection);
    let path = format!(
        "{SUBSCRIBE_PATH}?group={}&node={}",
        plane.group, plane.node_id
    );
    let response = sender
        .send_request(request(
            plane,
            &authority,
            Method::GET,
            &path,
            Bytes::new(),
        )?)
        .await?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let body = body
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        anyhow::bail!("subscription refused: {status} {}", body.trim());
    }
    tracing::info!(url = %plane.url, group = %plane.group, node = %plane.node_id, "subscribed to the control plane");
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    let mut tick = tokio::time::interval(plane.report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(frame) = frame else { return Ok(()) };
                let Ok(data) = frame?.into_data() else { continue };
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line = buffer.split_to(end + 1);
                    receive(plane, applier, reporter, &line[..end]);
                    send_report(plane, &authority, &mut sender, applier, reporter).await?;
                }
                anyhow::ensure!(buffer.len() <= MAX_LINE_BYTES, "push line over {MAX_LINE_BYTES} bytes");
            }
            _ = tick.tick() => send_report(plane, &authority, &mut sender, applier, reporter).await?,
        }
    }
}

/// Applies one push line; a refusal becomes the NACK of the next report.
fn receive(plane: &ControlPlane, applier: &Applier, reporter: &mut Reporter, line: &[u8]) {
    let push: Push = match serde_json::from_slice(line) {
        Ok(push) => push,
        Err(error) => {
            reporter.nack(Nack {
                version: "unknown".to_owned(),
                reason: format!("cannot read the push: {error}"),
            });
            return;
        }
    };
    let bytes = push.table.get().as_bytes();
    if bytes.len() > plane.max_table_bytes {
        reporter.nack(Nack {
            version: push.version,
            reason: format!(
                "table is {} bytes; this proxy accepts at most {} (--max-table-bytes)",
                bytes.len(),
                plane.max_table_bytes
            ),
        });
        return;
    }
    // The same bytes must hash to the same version here; if not, this proxy
    // reads the schema differently (older or newer) and must not run it.
    match switchyard_config::parse_table(bytes) {
        Ok(table) if table.version().as_str() != push.version => {
            reporter.nack(Nack {
                reason: format!(
                    "this proxy computes version {} for the pushed table; refusing a table it reads differently",
                    table.version()
                ),
                version: push.version,
            });
            return;
        }
        _ => {}
    }
    match applier.apply_logged(bytes, &plane.origin()) {
        Ok(_) => {
            reporter.applied();
            save_cache(plane, bytes);
        }
        Err(invalid) => {
            let reasons: Vec<String> = invalid.problems.iter().map(ToString::to_string).collect();
            reporter.nack(Nack {
                version: push.version,
                reason: reasons.join("\n"),
            });
        }
    }
}

async fn send_report(
    plane: &ControlPlane,
    authority: &str,
    sender: &mut SendRequest<Body>,
    applier: &Applier,
    reporter: &mut Reporter,
) -> anyhow::Result<()> {
    let report = reporter.build(applier);
    let body = Bytes::from(serde_json::to_vec(&report)?);
    sender.ready().await?;
    let response = sender
        .send_request(request(plane, authority, Method::POST, REPORT_PATH, body)?)
        .await?;
    if !response.status().is_success() {
        tracing::warn!(status = %response.status(), "the control plane refused a report");
    }
    Ok(())
}

fn request(
    plane: &ControlPlane,
    authority: &str,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Request<Body>> {
    let uri = Uri::builder()
        .scheme(plane.url.scheme_str().unwrap_or("http"))
        .authority(authority)
        .path_and_query(path)
        .build()?;
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = &plane.token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if !body.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(Full::new(body))?)
}

/// Writes the cache atomically (temporary file, then rename), so a crash
/// leaves the old cache or the new one, never half of one.
fn save_cache(plane: &ControlPlane, bytes: &[u8]) {
    let Some(path) = &plane.cache else {
        return;
    };
    let temporary = path.with_extension("tmp");
    let written = std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "cannot write the table cache");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
