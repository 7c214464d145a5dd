//! TLS towards a backend: verified against a CA bundle or the system's
//! roots, with an optional SNI/name override and a client certificate.
//! A certificate problem fails the connection (502 with the reason); there
//! is never a fallback to plaintext.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use switchyard_config::spec::{BackendTlsSpec, Protocol};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A backend's TLS client.
pub(crate) struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A problem with one field of a backend's `tls`.
pub(crate) type FieldProblem = (&'static str, String);

impl UpstreamTls {
    /// Reads the files `spec` names and builds the client.
    pub(crate) fn load(spec: &BackendTlsSpec, protocol: Protocol) -> Result<Self, FieldProblem> {
        let mut roots = rustls::RootCertStore::empty();
        match &spec.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| ("ca_file", format!("cannot read {path}: {e}")))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert =
                        cert.map_err(|e| ("ca_file", format!("{path}: not a PEM bundle: {e}")))?;
                    roots.add(cert).map_err(|e| {
                        ("ca_file", format!("{path}: unusable CA certificate: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(("ca_file", format!("{path}: no certificate in it")));
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err((
                        "ca_file",
                        "no ca_file given and no system root certificates found".to_owned(),
                    ));
                }
            }
        }
        let provider = crate::tls::crypto_provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ("ca_file", e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&spec.client_cert, &spec.client_key) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = std::fs::read(cert_path)
                    .map_err(|e| ("client_cert", format!("cannot read {cert_path}: {e}")))?;
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| ("client_cert", format!("{cert_path}: not a PEM chain: {e}")))?;
                let key_pem = std::fs::read(key_path)
                    .map_err(|e| ("client_key", format!("cannot read {key_path}: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| ("client_key", format!("{key_path}: not a PEM key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ("client_key", format!("{cert_path} and {key_path}: {e}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match protocol {
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
            Protocol::Http2 => vec![b"h2".to_vec()],
        };
        let server_name = match &spec.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| ("server_name", format!("{name:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The handshake with the endpoint at `addr` (`host:port`).
    pub(crate) async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = host_of(addr);
                ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("TLS: {host:?} is not a server name: {e}"))?
            }
        };
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    }
}

fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// An upstream connection, plain or TLS.
#[derive(Debug)]
pub(crate) enum UpstreamIo {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
