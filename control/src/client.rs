//! A small HTTP/1.1 client for the CLI: one connection per call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Calls to one control plane.
#[derive(Debug, Clone)]
pub struct Client {
    authority: String,
    token: Option<String>,
    /// TLS for an `https://` server.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Body bytes.
    pub body: Bytes,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// A client of `server` (`http://host:port`) presenting `token`.
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        Self::with_tls(server, token, None)
    }

    /// A client of `server` (`http://` or `https://`); `tls` is used for
    /// `https://` (the system's roots when `None`).
    pub fn with_tls(
        server: &str,
        token: Option<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Self> {
        let uri: Uri = server
            .parse()
            .map_err(|e| anyhow::anyhow!("--server {server:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => Some(match tls {
                Some(tls) => tls,
                None => crate::tls::client_config(None, None)?,
            }),
            _ => anyhow::bail!("--server {server:?} must start with http:// or https://"),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("--server {server:?} has no host"))?
            .to_string();
        Ok(Self {
            authority,
            token,
            tls,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Answer> {
        self.call(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Answer> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_once(method, path, body))
            .await
            .map_err(|_| {
                anyhow::anyhow!("{} did not answer within {CALL_TIMEOUT:?}", self.authority)
            })?
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Answer> {
        let stream = TcpStream::connect(&self.authority).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the control plane at {}: {e}",
                self.authority
            )
        })?;
        let request = self.request(method, path, body)?;
        match &self.tls {
            None => exchange(stream, request).await,
            Some(tls) => {
                let host = self
                    .authority
                    .rsplit_once(':')
                    .map_or(self.authority.as_str(), |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| anyhow::anyhow!("TLS with {}: {e}", self.authority))?;
                exchange(stream, request).await
            }
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        Ok(request.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
    }
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "the control plane answered {} with a body that is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` of a refusal, with its problems one per line.
    pub fn refusal(&self) -> String {
        let Ok(value) = self.json() else {
            return format!("{} {}", self.status, String::from_utf8_lossy(&self.body));
        };
        let mut text = format!(
            "{}: {}",
            self.status,
            value["error"].as_str().unwrap_or("(no reason given)")
        );
        for problem in value["problems"].as_array().into_iter().flatten() {
            let path = problem["path"].as_str().unwrap_or("");
            let reason = problem["reason"].as_str().unwrap_or("");
            if path.is_empty() {
                text.push_str(&format!("\n  {reason}"));
            } else {
                text.push_str(&format!("\n  {path}: {reason}"));
            }
        }
        text
    }
}

/// One request and its answer over a fresh HTTP/1.1 connection on `io`.
async fn exchange<I>(io: I, request: Request<Full<Bytes>>) -> anyhow::Result<Answer>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer { status, body })
}
