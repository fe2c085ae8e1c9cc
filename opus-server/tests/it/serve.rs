//! `serve` on its ways out: a failure after the scheduler started ends it at once, closed (the
//! scheduler stopped, the store flushed), not when a signal arrives.

use std::time::Duration;

use opus_server::config::{Config, ConfigArgs};

/// A certificate and key that can be read but are not PEM: the API fails once everything else,
/// the scheduler included, has started.
#[tokio::test]
async fn an_unusable_tls_identity_ends_serve_at_once_without_a_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, "not a certificate").expect("write");
    std::fs::write(&key, "not a key").expect("write");
    let config = Config::resolve(ConfigArgs {
        data_dir: Some(dir.path().join("data")),
        sites_listen: Some("127.0.0.1:0".parse().expect("address")),
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..Default::default()
    })
    .expect("the files are readable");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    // The shutdown future never completes: serve must end by itself.
    let serve = opus_server::serve(listener, config, std::future::pending());
    let result = tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .expect("serve ended without a signal");
    let msg = result.expect_err("the identity is unusable").to_string();
    assert!(msg.contains("TLS certificate or key"), "{msg}");
    // The address file was written once the daemon was open, so the run did get that far.
    assert!(dir.path().join("data").join("opusd.json").is_file());
}
