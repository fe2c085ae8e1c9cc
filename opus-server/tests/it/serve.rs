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

/// `serve` with a default config over `data`, its API and sites on port 0; runs until `serve`
/// returns, which these tests expect at once.
async fn serve_error(data: std::path::PathBuf) -> String {
    let config = Config::resolve(ConfigArgs {
        data_dir: Some(data),
        sites_listen: Some("127.0.0.1:0".parse().expect("address")),
        ..Default::default()
    })
    .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let serve = opus_server::serve(listener, config, std::future::pending());
    tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .expect("serve ended without a signal")
        .expect_err("serve cannot start")
        .to_string()
}

/// Only a store locked by another process suggests another opusd; a damaged one says what failed.
#[tokio::test]
async fn a_locked_store_and_a_broken_store_are_told_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let held = opus_core::store::MetaStore::open(&data.join("meta")).expect("open");
    let msg = serve_error(data.clone()).await;
    assert!(
        msg.contains("in use by another process") && msg.contains("another opusd"),
        "{msg}"
    );
    drop(held);

    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(broken.join("meta"), "not a store").expect("write");
    let msg = serve_error(broken).await;
    assert!(msg.contains("cannot open the metadata store"), "{msg}");
    assert!(!msg.contains("another opusd"), "{msg}");
}
