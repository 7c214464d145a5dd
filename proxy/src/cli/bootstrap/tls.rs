//! The TLS listener section of the bootstrap: flags, else the file.

use std::time::Duration;

use switchyard_proxy::tls::{CertificateFiles, TlsSettings};

use super::{Bootstrap, duration};
use crate::cli::RunArgs;

pub(super) fn tls_settings(
    args: &RunArgs,
    file: &Bootstrap,
    tls_listen: &[String],
) -> anyhow::Result<Option<TlsSettings>> {
    let certificates: Vec<CertificateFiles> = if args.tls_cert.is_empty() {
        file.tls_certificates
            .iter()
            .map(|c| CertificateFiles {
                cert: c.cert.clone(),
                key: c.key.clone(),
            })
            .collect()
    } else {
        args.tls_cert
            .iter()
            .map(|pair| {
                let (cert, key) = pair.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!("--tls-cert {pair:?}: expected CERT.pem:KEY.pem")
                })?;
                Ok(CertificateFiles {
                    cert: cert.into(),
                    key: key.into(),
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    if tls_listen.is_empty() {
        anyhow::ensure!(
            certificates.is_empty(),
            "--tls-cert without --tls-listen: no listener would serve it"
        );
        return Ok(None);
    }
    anyhow::ensure!(
        !certificates.is_empty(),
        "--tls-listen needs at least one --tls-cert CERT.pem:KEY.pem"
    );
    Ok(Some(TlsSettings {
        certificates,
        require_sni: args.tls_require_sni || file.tls_require_sni,
        handshake_timeout: duration(
            &args.tls_handshake_timeout,
            file.tls_handshake_timeout,
            Duration::from_secs(10),
            "tls-handshake-timeout",
        )?,
        reload_interval: duration(
            &args.tls_reload_interval,
            file.tls_reload_interval,
            Duration::from_secs(2),
            "tls-reload-interval",
        )?,
    }))
}
