//! The control channel over TLS with client certificates (mutual TLS, on
//! top of tokens): proxies and the CLI with a certificate from the CA get
//! through, anyone without one is refused at the handshake.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use support::{
    ADMIN_SECRET, Daemon, FollowingProxy, Workspace, backend, cli, eventually, split_table,
};
use switchyard_proxy::control_plane::ControlPlaneTls;

/// A small CA, as `README.md` describes: one CA, a server certificate for
/// the daemon's address, a client certificate per proxy or operator.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// Writes a certificate for `names` and its key into `work`.
    fn issue(&self, work: &Workspace, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let cert = params
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        (
            work.write(&format!("{name}.pem"), &cert.pem()),
            work.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_and_the_cli_need_a_certificate_from_the_ca() {
    let work = Workspace::new();
    let ca = Ca::new();
    let ca_file = work.write("ca.pem", &ca.pem);
    let (server_cert, server_key) = ca.issue(&work, "server", &["127.0.0.1"]);
    let (client_cert, client_key) = ca.issue(&work, "client", &["proxy-1"]);
    let with_cert =
        switchyard_control::tls::client_config(Some(&ca_file), Some((&client_cert, &client_key)))
            .unwrap();
    let daemon = Daemon::start_tls(
        &work,
        "127.0.0.1:0",
        &[
            "--tls-cert",
            server_cert.to_str().unwrap(),
            "--tls-key",
            server_key.to_str().unwrap(),
            "--client-ca",
            ca_file.to_str().unwrap(),
        ],
        Some(with_cert),
    )
    .await;
    assert!(daemon.url().starts_with("https://"));

    // A proxy with a client certificate follows the control plane.
    let (blue, green) = (backend("blue").await, backend("green").await);
    let proxy = FollowingProxy::start_with(&daemon.url(), "edge", "p1", |plane| {
        plane.tls = ControlPlaneTls {
            ca_file: Some(ca_file.clone()),
            client_cert: Some(client_cert.clone()),
            client_key: Some(client_key.clone()),
        };
    })
    .await;
    let answer = daemon
        .client(Some(ADMIN_SECRET))
        .post(
            "/v1/groups/edge/apply",
            &serde_json::json!({ "table": split_table(blue, green, 1, 0) }),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.refusal());
    let version = answer.json().unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the proxy runs the table it got over TLS", || async {
        proxy.version().as_deref() == Some(version.as_str())
    })
    .await;

    // Without a client certificate the handshake fails, token or not.
    let without = switchyard_control::tls::client_config(Some(&ca_file), None).unwrap();
    let client = switchyard_control::client::Client::with_tls(
        &daemon.url(),
        Some(ADMIN_SECRET.to_owned()),
        Some(Arc::clone(&without)),
    )
    .unwrap();
    assert!(client.get("/v1/status").await.is_err());

    // The CLI: with the CA and a client certificate it works; without, it
    // fails with the TLS alert.
    let ca_arg = ca_file.to_str().unwrap();
    let (cert_arg, key_arg) = (client_cert.to_str().unwrap(), client_key.to_str().unwrap());
    let run = cli(
        &work,
        &daemon,
        Some("admin.token"),
        &[
            "status",
            "-g",
            "edge",
            "--ca-file",
            ca_arg,
            "--client-cert",
            cert_arg,
            "--client-key",
            key_arg,
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("LIVE"), "{}", run.stdout);
    let run = cli(
        &work,
        &daemon,
        Some("admin.token"),
        &["status", "-g", "edge", "--ca-file", ca_arg],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    // TLS 1.3 reports a missing client certificate after the handshake.
    assert!(run.stderr.contains("CertificateRequired"), "{}", run.stderr);
}
