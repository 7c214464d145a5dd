//! Downstream TLS with certificates made here (rcgen): SNI picks the
//! certificate, ALPN picks HTTP/2 or HTTP/1.1, 421 for a Host another
//! certificate serves, rotation without a failed handshake, a bad file keeps
//! the old certificate, and TLS 1.1 is refused.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use support::pki::Pki;
use support::{TO_BLUE, TestBackend, eventually, table};
use switchyard_proxy::tls::{CertStore, CertificateFiles, TlsSettings};
use switchyard_proxy::{Applier, Listeners, Settings, State, TlsListeners};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A proxy with one TLS listener; returns its address and the store.
async fn tls_proxy(
    blue: &TestBackend,
    green: &TestBackend,
    certificates: Vec<CertificateFiles>,
    require_sni: bool,
) -> (SocketAddr, Arc<CertStore>, tokio::sync::oneshot::Sender<()>) {
    let settings = TlsSettings {
        certificates,
        require_sni,
        handshake_timeout: Duration::from_secs(5),
        reload_interval: Duration::from_millis(50),
    };
    let store = CertStore::load(&settings).unwrap();
    let applier = Applier::new(State::new());
    applier
        .apply(table(blue.addr, green.addr, TO_BLUE).as_bytes(), "test")
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(switchyard_proxy::run(
        Listeners {
            proxy: Vec::new(),
            admin: None,
            tls: Some(TlsListeners {
                listeners: vec![listener],
                store: store.clone(),
                settings,
            }),
            ..Listeners::default()
        },
        applier,
        Settings {
            expose_backend: true,
            ..Settings::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    (addr, store, stop)
}

fn client_config(roots: rustls::RootCertStore, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = switchyard_proxy::tls::crypto_provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    TlsConnector::from(config).connect(name, stream).await
}

fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// GET / with `host` over an established TLS stream, by its ALPN protocol.
async fn get(stream: TlsStream<TcpStream>, host: &str) -> (u16, String) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get(format!("https://{host}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::get("/")
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_alpn_the_protocol() {
    let pki = Pki::new();
    let (default, default_der) = pki.issue("default", &["default.test", "127.0.0.1"], 1);
    let (a, a_der) = pki.issue("a", &["a.test"], 2);
    let (b, b_der) = pki.issue("b", &["*.b.test"], 3);
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let (addr, _store, _stop) = tls_proxy(&blue, &green, vec![default, a, b], false).await;

    let h2 = client_config(pki.roots(), &[b"h2", b"http/1.1"]);
    let stream = handshake(addr, h2.clone(), dns("a.test")).await.unwrap();
    assert_eq!(peer_leaf(&stream), a_der);
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(get(stream, "a.test").await, (200, "blue".to_owned()));

    let h1 = client_config(pki.roots(), &[b"http/1.1"]);
    let stream = handshake(addr, h1.clone(), dns("x.b.test")).await.unwrap();
    assert_eq!(peer_leaf(&stream), b_der, "wildcard");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get(stream, "x.b.test").await, (200, "blue".to_owned()));

    // An IP address sends no SNI: the default certificate answers.
    let stream = handshake(
        addr,
        h1,
        ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
    )
    .await
    .unwrap();
    assert_eq!(peer_leaf(&stream), default_der);

    // Requests over TLS are marked as such for the backend.
    let seen = blue.seen();
    assert!(
        seen.iter()
            .all(|s| s.headers["x-forwarded-proto"] == "https"),
        "{seen:?}"
    );

    // A client that offers only an unknown protocol is refused.
    let spdy = client_config(pki.roots(), &[b"spdy/3"]);
    assert!(handshake(addr, spdy, dns("a.test")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_served_by_another_certificate_gets_421() {
    let pki = Pki::new();
    let (a, _) = pki.issue("a", &["a.test"], 2);
    let (b, _) = pki.issue("b", &["*.b.test"], 3);
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let (addr, _store, _stop) = tls_proxy(&blue, &green, vec![a, b], false).await;
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let config = client_config(pki.roots(), &[alpn]);
        let stream = handshake(addr, config.clone(), dns("a.test"))
            .await
            .unwrap();
        assert_eq!(get(stream, "x.b.test").await.0, 421, "{alpn:?}");
        let stream = handshake(addr, config.clone(), dns("a.test"))
            .await
            .unwrap();
        assert_eq!(get(stream, "a.test:443").await.0, 200, "{alpn:?}");
        // A host no certificate serves is left to routing.
        let stream = handshake(addr, config, dns("a.test")).await.unwrap();
        assert_eq!(get(stream, "other.test").await.0, 200, "{alpn:?}");
    }
    assert!(blue.seen().iter().all(|s| s.headers["host"] != "x.b.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_sni_can_be_refused() {
    let pki = Pki::new();
    let (default, _) = pki.issue("default", &["default.test", "127.0.0.1"], 1);
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let (addr, _store, _stop) = tls_proxy(&blue, &green, vec![default], true).await;
    let config = client_config(pki.roots(), &[b"http/1.1"]);
    let no_sni = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    assert!(handshake(addr, config.clone(), no_sni).await.is_err());
    assert!(handshake(addr, config, dns("default.test")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_failed_handshake_and_a_bad_file_changes_nothing() {
    let pki = Pki::new();
    let (a, old_der) = pki.issue("a", &["a.test"], 10);
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let (addr, store, _stop) = tls_proxy(&blue, &green, vec![a.clone()], false).await;
    let config = client_config(pki.roots(), &[b"http/1.1"]);

    // New connections in a loop while the files change under them.
    let failures = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let stop_loop = Arc::new(AtomicBool::new(false));
    let new_seen = Arc::new(std::sync::Mutex::new(None::<CertificateDer<'static>>));
    let looping = {
        let (failures, handshakes, stop_loop, new_seen, config) = (
            failures.clone(),
            handshakes.clone(),
            stop_loop.clone(),
            new_seen.clone(),
            config.clone(),
        );
        let old_der = old_der.clone();
        tokio::spawn(async move {
            while !stop_loop.load(Ordering::Relaxed) {
                match handshake(addr, config.clone(), dns("a.test")).await {
                    Ok(stream) => {
                        handshakes.fetch_add(1, Ordering::Relaxed);
                        let leaf = peer_leaf(&stream);
                        if leaf != old_der {
                            *new_seen.lock().unwrap() = Some(leaf);
                        }
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    eventually("handshakes before the rotation", || async {
        handshakes.load(Ordering::Relaxed) >= 20
    })
    .await;
    let (_, new_der) = pki.issue("a", &["a.test"], 11);
    eventually("the new certificate is served", || async {
        new_seen.lock().unwrap().as_ref() == Some(&new_der)
    })
    .await;
    let before = handshakes.load(Ordering::Relaxed);
    eventually("more handshakes after the rotation", || async {
        handshakes.load(Ordering::Relaxed) >= before + 20
    })
    .await;
    stop_loop.store(true, Ordering::Relaxed);
    looping.await.unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no handshake failed");

    // A broken certificate file is refused; the current one keeps serving.
    std::fs::write(&a.cert, "not a certificate").unwrap();
    assert!(!store.reload(), "the broken file is not applied");
    let stream = handshake(addr, config, dns("a.test")).await.unwrap();
    assert_eq!(peer_leaf(&stream), new_der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_is_refused_and_1_2_accepted() {
    let pki = Pki::new();
    let (a, _) = pki.issue("a", &["a.test"], 2);
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let (addr, _store, _stop) = tls_proxy(&blue, &green, vec![a], false).await;
    let provider = switchyard_proxy::tls::crypto_provider();
    let mut tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    tls12.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = handshake(addr, Arc::new(tls12), dns("a.test"))
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(get(stream, "a.test").await.0, 200);

    // rustls cannot speak TLS 1.1; openssl can, when it is installed.
    let Ok(output) = tokio::process::Command::new("openssl")
        // SECLEVEL=0 lets this openssl offer TLS 1.1 at all, so that the
        // refusal is the proxy's, not the client's own policy.
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-servername",
            "a.test",
            "-connect",
        ])
        .arg(addr.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .await
    else {
        eprintln!("skipped the TLS 1.1 probe: openssl is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "TLS 1.1 was accepted: {text}");
    assert!(
        !text.contains("BEGIN CERTIFICATE"),
        "a certificate was sent over TLS 1.1: {text}"
    );
    // The client sent its hello and the proxy answered with an alert.
    assert!(text.contains("alert"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_closes_with_a_close_notify_at_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let (default, _) = pki.issue("default", &["a.test"], 1);
    let (blue, green) = (
        TestBackend::start("blue").await,
        TestBackend::start("green").await,
    );
    let (addr, _store, stop) = tls_proxy(&blue, &green, vec![default], false).await;
    let h1 = client_config(pki.roots(), &[b"http/1.1"]);
    let mut stream = handshake(addr, h1, dns("a.test")).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\nblue") {
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout(support::DEADLINE, stream.read(&mut chunk))
            .await
            .expect("an answer within the deadline")
            .unwrap();
        assert_ne!(read, 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..read]);
    }
    let _ = stop.send(());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(support::DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("the connection closes at shutdown");
    // Without close_notify, rustls reports the end as an unexpected EOF.
    assert!(closed.is_ok(), "a clean TLS close: {closed:?}");
    assert!(rest.is_empty());
}
