//! Downstream TLS: certificates chosen by SNI, reloaded when their files
//! change, and the Host check that answers 421 when a request names a
//! hostname another certificate serves.
//!
//! rustls with the ring provider: TLS 1.2 and 1.3 only, no 0-RTT, ALPN `h2`
//! and `http/1.1` (a client offering neither is refused with the
//! `no_application_protocol` alert).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::watch;

/// The crypto provider of every TLS configuration in Switchyard: *ring*,
/// the one our conventions name for its simple build (no cmake).
///
/// rustls 0.23.48 deprecates ring's provider because it has no
/// post-quantum key exchange. The allow keeps `clippy -D warnings` green
/// when the lockfile reaches that release; moving to aws-lc-rs (for
/// X25519MLKEM768) is a build-toolchain decision of its own.
#[allow(deprecated, reason = "ring is our chosen provider; see above")]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What TLS listeners serve.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Certificates; the first also serves clients that send no SNI.
    pub certificates: Vec<CertificateFiles>,
    /// Refuse clients without SNI instead of giving them the first certificate.
    pub require_sni: bool,
    /// Longest a handshake may take.
    pub handshake_timeout: Duration,
    /// How often certificate files are checked for changes.
    pub reload_interval: Duration,
}

/// The certificates in force, swapped whole on reload.
#[derive(Debug)]
pub struct CertStore {
    files: Vec<CertificateFiles>,
    require_sni: bool,
    loaded: ArcSwap<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    keys: Vec<Arc<CertifiedKey>>,
    /// The file contents they came from, to notice changes.
    sources: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Which certificate a TLS connection was served, carried by its requests.
#[derive(Debug, Clone)]
pub struct TlsConnection {
    /// Index of the certificate chosen for the SNI (or the default).
    pub certificate: Option<usize>,
    /// The store, to check Hosts against.
    pub store: Arc<CertStore>,
}

impl CertStore {
    /// Loads every certificate; any error refuses the whole set.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(
            !settings.certificates.is_empty(),
            "a TLS listener needs at least one certificate (--tls-cert CERT:KEY)"
        );
        let loaded = load_all(&settings.certificates)?;
        Ok(Arc::new(Self {
            files: settings.certificates.clone(),
            require_sni: settings.require_sni,
            loaded: ArcSwap::from_pointee(loaded),
        }))
    }

    /// The rustls server configuration over this store.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = crypto_provider();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // No 0-RTT: early data can be replayed.
        config.max_early_data_size = 0;
        Ok(Arc::new(config))
    }

    /// The certificate for `name`: the first whose names cover it.
    pub fn index_for(&self, name: &str) -> Option<usize> {
        let server_name = ServerName::try_from(name).ok()?;
        let loaded = self.loaded.load();
        loaded.keys.iter().position(|key| {
            key.end_entity_cert()
                .ok()
                .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&server_name).is_ok())
        })
    }

    /// Re-reads the files; a set that fails to load is logged and the
    /// certificates in force keep serving. Returns whether anything changed.
    pub fn reload(&self) -> bool {
        let current = self.loaded.load();
        let unchanged = self
            .files
            .iter()
            .zip(&current.sources)
            .all(|(files, source)| {
                std::fs::read(&files.cert).is_ok_and(|c| c == source.0)
                    && std::fs::read(&files.key).is_ok_and(|k| k == source.1)
            });
        if unchanged {
            return false;
        }
        match load_all(&self.files) {
            Ok(loaded) => {
                self.loaded.store(Arc::new(loaded));
                tracing::info!("TLS certificates reloaded; new handshakes use them");
                true
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "TLS certificates not reloaded; the previous ones keep serving");
                false
            }
        }
    }

    /// Whether a request on a connection served certificate `served` names,
    /// in `host`, a hostname another certificate serves (421).
    pub fn misdirected(&self, served: Option<usize>, host: &str) -> bool {
        let name = host_without_port(host);
        match self.index_for(name) {
            Some(wanted) => Some(wanted) != served,
            None => false,
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.load();
        match hello.server_name() {
            Some(name) => {
                let index = self.index_for(name).unwrap_or(0);
                loaded.keys.get(index).cloned()
            }
            None if self.require_sni => None,
            None => loaded.keys.first().cloned(),
        }
    }
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

fn load_all(files: &[CertificateFiles]) -> anyhow::Result<Loaded> {
    let provider = crypto_provider();
    let mut keys = Vec::with_capacity(files.len());
    let mut sources = Vec::with_capacity(files.len());
    for pair in files {
        let cert_pem = std::fs::read(&pair.cert)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", pair.cert.display()))?;
        let key_pem = std::fs::read(&pair.key)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", pair.key.display()))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                anyhow::anyhow!("{}: not a PEM certificate chain: {e}", pair.cert.display())
            })?;
        anyhow::ensure!(
            !chain.is_empty(),
            "{}: no certificate in it",
            pair.cert.display()
        );
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| anyhow::anyhow!("{}: not a PEM private key: {e}", pair.key.display()))?;
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            anyhow::anyhow!(
                "{} and {} do not make a certificate: {e}",
                pair.cert.display(),
                pair.key.display()
            )
        })?;
        keys.push(Arc::new(certified));
        sources.push((cert_pem, key_pem));
    }
    Ok(Loaded { keys, sources })
}

/// Checks the certificate files every `interval` (and on SIGHUP) until `stop`.
pub async fn watch_certificates(
    store: Arc<CertStore>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup_signal = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_signal = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = crate::state::stopped(&mut stop) => return,
            _ = tick.tick() => {}
            _ = hangup_signal => {}
        }
        let store = store.clone();
        // File reads and key parsing are blocking work.
        let _ = tokio::task::spawn_blocking(move || store.reload()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("a.test:8443"), "a.test");
        assert_eq!(host_without_port("a.test"), "a.test");
        assert_eq!(host_without_port("[::1]:443"), "::1");
    }
}
