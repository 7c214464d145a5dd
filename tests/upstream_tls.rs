//! Upstream TLS with certificates made here (rcgen): the proxy verifies
//! the backend (CA and name) and never falls back to plaintext, presents a
//! client certificate when the table names one, and rejects a table whose
//! TLS files it cannot read, by field path.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::CertificateDer;
use support::pki::Pki;
use switchyard_proxy::{Applier, State};
use tokio::net::TcpListener;

/// A TLS backend answering `tls-backend`, with counts of the handshakes
/// it completed and of those where the client showed a certificate; with
/// `client_roots` it requires a client certificate.
struct TlsBackend {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    client_certs: Arc<AtomicUsize>,
}

async fn tls_backend(
    pki: &Pki,
    names: &[&str],
    client_roots: Option<rustls::RootCertStore>,
) -> TlsBackend {
    let (files, _) = pki.issue("backend", names, 50);
    let chain: Vec<CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = rustls_pki_types::pem::PemObject::from_pem_file(&files.key).unwrap();
    let provider = switchyard_proxy::tls::crypto_provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_roots {
        Some(roots) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client_certs = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let (counted, shaken) = (client_certs.clone(), handshakes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, counted, shaken) = (acceptor.clone(), counted.clone(), shaken.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                shaken.fetch_add(1, Ordering::Relaxed);
                if stream.get_ref().1.peer_certificates().is_some() {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"tls-backend")),
                    ))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TlsBackend {
        addr,
        handshakes,
        client_certs,
    }
}

fn tls_table(backend: SocketAddr, tls: &str, protocol: &str) -> String {
    format!(
        "backends:\n  secure: {{ endpoints: [\"{backend}\"], protocol: {protocol}, tls: {tls} }}\nroutes:\n  - name: app\n    rules:\n      - backend: secure\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_backend_and_never_falls_back_to_plaintext() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let tls = tls_backend(&pki, &["backend.test"], None).await;
    let backend = tls.addr;
    let good = format!(
        "{{ ca_file: \"{}\", server_name: backend.test }}",
        ca.display()
    );
    for protocol in ["http1", "http2"] {
        let proxy = support::TestProxy::start(&tls_table(backend, &good, protocol)).await;
        let before = tls.handshakes.load(Ordering::Relaxed);
        let mut client = support::Client::http1(proxy.addr).await;
        for _ in 0..10 {
            let reply = client.get("/", &[]).await;
            assert_eq!(
                (reply.status.as_u16(), reply.text()),
                (200, "tls-backend".to_owned()),
                "{protocol}"
            );
        }
        // One after another, the requests share one TLS connection (the
        // server's TLS 1.3 session tickets do not make it look closed).
        assert_eq!(
            tls.handshakes.load(Ordering::Relaxed) - before,
            1,
            "{protocol}"
        );
        proxy.shutdown().await;
    }

    // Another CA, or a name the certificate does not have: 502 with the reason.
    let other = Pki::new();
    let other_ca = other.ca_file();
    for (what, tls) in [
        (
            "unknown CA",
            format!(
                "{{ ca_file: \"{}\", server_name: backend.test }}",
                other_ca.display()
            ),
        ),
        (
            "wrong name",
            format!(
                "{{ ca_file: \"{}\", server_name: other.test }}",
                ca.display()
            ),
        ),
    ] {
        let proxy = support::TestProxy::start(&tls_table(backend, &tls, "http1")).await;
        let reply = support::Client::http1(proxy.addr).await.get("/", &[]).await;
        assert_eq!(reply.status, 502, "{what}");
        assert_eq!(
            reply.headers["x-switchyard-error"], "upstream_connect_failed",
            "{what}"
        );
        assert!(
            reply.text().contains("TLS handshake failed"),
            "{what}: {}",
            reply.text()
        );
        proxy.shutdown().await;
    }

    // Files the proxy cannot read reject the table, by field path.
    let applier = Applier::new(State::new());
    let missing = tls_table(backend, "{ ca_file: /nonexistent/ca.pem }", "http1");
    let invalid = applier.apply(missing.as_bytes(), "test").unwrap_err();
    assert_eq!(
        invalid.problems[0].path, "backends.secure.tls.ca_file",
        "{invalid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let tls = tls_backend(&pki, &["backend.test"], Some(pki.roots())).await;
    let (backend, client_certs) = (tls.addr, tls.client_certs);
    let (client, _) = pki.issue("client", &["proxy.test"], 60);
    let with_cert = format!(
        "{{ ca_file: \"{}\", server_name: backend.test, client_cert: \"{}\", client_key: \"{}\" }}",
        ca.display(),
        client.cert.display(),
        client.key.display()
    );
    let proxy = support::TestProxy::start(&tls_table(backend, &with_cert, "http1")).await;
    let reply = support::Client::http1(proxy.addr).await.get("/", &[]).await;
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "tls-backend".to_owned())
    );
    assert_eq!(client_certs.load(Ordering::Relaxed), 1);
    proxy.shutdown().await;

    let without = format!(
        "{{ ca_file: \"{}\", server_name: backend.test }}",
        ca.display()
    );
    let proxy = support::TestProxy::start(&tls_table(backend, &without, "http1")).await;
    let reply = support::Client::http1(proxy.addr).await.get("/", &[]).await;
    assert_eq!(
        reply.status, 502,
        "a backend that wants a client certificate refuses us"
    );
    proxy.shutdown().await;
}
