//! TLS for the control channel: the daemon's server side (optionally
//! requiring client certificates from proxies) and the CLI's client side.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not PEM certificates: {e}", path.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{}: no certificate in it",
        path.display()
    );
    Ok(chain)
}

fn key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM private key: {e}", path.display()))
}

fn roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in chain(path)? {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// *ring*, as in the proxy (`switchyard_proxy::tls::crypto_provider`; this
/// library does not depend on the proxy): rustls 0.23.48 deprecates it for
/// having no post-quantum key exchange, and the allow keeps clippy green.
#[allow(deprecated, reason = "ring is our chosen provider")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The daemon's TLS: its certificate, and with `client_ca` a required
/// client certificate signed by that CA (mutual TLS, on top of tokens).
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain(cert)?, key(key_path)?)
        .map_err(|e| anyhow::anyhow!("{} and {}: {e}", cert.display(), key_path.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's TLS: trust `ca` (or the system's roots), present a client
/// certificate when given one.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let roots = match ca {
        Some(ca) => roots(ca)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key_path)) => builder.with_client_auth_cert(chain(cert)?, key(key_path)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
