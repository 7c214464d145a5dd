//! A test CA (rcgen) issuing certificates into a temporary directory.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SerialNumber};
use rustls_pki_types::CertificateDer;
use switchyard_proxy::tls::CertificateFiles;

/// A CA and the certificates it issues, as files in a temporary directory.
pub struct Pki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    pub ca_der: CertificateDer<'static>,
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        Self {
            ca_params,
            ca_key,
            ca_der: ca.der().clone(),
            ca_pem: ca.pem(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Issues a certificate for `names` with `serial` into `file`.pem/.key.
    pub fn issue(
        &self,
        file: &str,
        names: &[&str],
        serial: u64,
    ) -> (CertificateFiles, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let files = CertificateFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (files, cert.der().clone())
    }

    /// The CA certificate as a PEM file.
    pub fn ca_file(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        roots
    }
}
