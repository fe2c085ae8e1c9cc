//! The certificate manager's parts without a CA: stored certificates, renewal times, backoff,
//! the SNI resolver. Orders against a real CA (pebble) are end-to-end tests.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;

/// A self-signed certificate for `host`: (key PEM, chain PEM).
fn self_signed(host: &str) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("rcgen");
    (c.signing_key.serialize_pem(), c.cert.pem())
}

fn config() -> HttpsConfig {
    HttpsConfig {
        tls_listen: ([127, 0, 0, 1], 0).into(),
        acme_directory: "https://127.0.0.1:1/dir".into(),
        acme_email: None,
        acme_ca_file: None,
        redirect: true,
        challenge: crate::config::AcmeChallenge::Http01,
        hsts_max_age: 0,
        dns_propagation: Duration::ZERO,
    }
}

#[test]
fn a_certificate_renews_two_thirds_into_its_life() {
    let (key, chain) = self_signed("www.acme.com");
    let cert = LoadedCert::parse(&key, &chain).expect("parses");
    let life = cert
        .not_after
        .duration_since(cert.not_before)
        .expect("positive life");
    let renew = cert
        .renew_at()
        .duration_since(cert.not_before)
        .expect("after start");
    assert_eq!(renew, life * 2 / 3);
    assert!(cert.issuer.contains("rcgen"), "{}", cert.issuer);
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let (key, _) = self_signed("www.acme.com");
    let (_, chain) = self_signed("www.acme.com");
    let e = LoadedCert::parse(&key, &chain).expect_err("mismatch");
    assert!(e.to_string().contains("not the certificate's"), "{e}");
    let e = LoadedCert::parse(&key, "no pem here").expect_err("no chain");
    assert!(e.to_string().contains("no certificate"), "{e}");
}

#[test]
fn backoff_doubles_up_to_an_hour() {
    assert_eq!(backoff(1), Duration::from_secs(10));
    assert_eq!(backoff(2), Duration::from_secs(20));
    assert_eq!(backoff(4), Duration::from_secs(80));
    assert_eq!(backoff(30), Duration::from_secs(3600));
    assert_eq!(backoff(u32::MAX), Duration::from_secs(3600));
}

#[test]
fn stored_certificates_are_served_at_start_and_damaged_ones_reordered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = AcmeFiles::new(dir.path().join("acme"));
    let (key, chain) = self_signed("www.acme.com");
    files
        .write_cert("www.acme.com", &key, &chain)
        .expect("write");
    std::fs::write(dir.path().join("acme/certs/bad.acme.com.pem"), "garbage").expect("write");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("acme/certs/www.acme.com.pem"))
            .expect("stat")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let https = Arc::new(HttpsState::new(true, 0));
    let m = CertManager::load(config(), dir.path(), https.clone(), None);
    let s = m.status("www.acme.com").expect("followed");
    assert_eq!(s.state, CertState::Issued);
    assert!(s.next_attempt > SystemTime::now());
    assert!(https.is_certified("www.acme.com"));
    assert!(m.status("bad.acme.com").is_none());
    assert!(!https.is_certified("bad.acme.com"));

    // Following the domains: a new one is pending at once, a removed one is forgotten.
    m.follow(&["new.acme.com".to_owned()]);
    let s = m.status("new.acme.com").expect("followed");
    assert_eq!(s.state, CertState::Pending);
    assert!(m.is_due("new.acme.com"));
    assert!(m.status("www.acme.com").is_none());
    assert!(!https.is_certified("www.acme.com"));
    assert!(
        !dir.path().join("acme/certs/www.acme.com.pem").exists(),
        "the removed domain's certificate is deleted"
    );
}

#[tokio::test]
async fn an_unreachable_ca_is_a_failed_order_retried_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let https = Arc::new(HttpsState::new(true, 0));
    let m = CertManager::load(config(), dir.path(), https, None);
    m.follow(&["www.acme.com".to_owned()]);
    m.attempt("www.acme.com").await;
    let s = m.status("www.acme.com").expect("followed");
    assert_eq!(s.state, CertState::Failed);
    assert!(!s.last_error.is_empty());
    assert!(
        !m.is_due("www.acme.com"),
        "the next order waits for the backoff"
    );
    let wait = m.next_wait(&["www.acme.com".to_owned()]);
    assert!(
        wait <= RETRY_BASE && wait > Duration::from_secs(5),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_renewal_the_ca_refuses_keeps_the_certificate_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = AcmeFiles::new(dir.path().join("acme"));
    let (key, chain) = self_signed("www.acme.com");
    files
        .write_cert("www.acme.com", &key, &chain)
        .expect("write");
    let https = Arc::new(HttpsState::new(true, 0));
    // The CA is down (nothing listens at its address).
    let m = CertManager::load(config(), dir.path(), https.clone(), None);
    m.attempt("www.acme.com").await;
    let s = m.status("www.acme.com").expect("followed");
    assert_eq!(s.state, CertState::Failed);
    assert!(!s.last_error.is_empty());
    assert!(s.served.is_some(), "the certificate is still listed");
    assert!(https.is_certified("www.acme.com"), "and still served");
    assert!(m.resolver.hosts().contains(&"www.acme.com".to_owned()));
    assert!(files.read_cert("www.acme.com").expect("read").is_some());
}

#[tokio::test]
async fn a_certificate_in_the_shared_store_is_taken_instead_of_ordered_and_unshared_on_removal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = opus_core::store::MetaStore::open(&dir.path().join("meta")).expect("meta");
    let url = format!("file://{}", dir.path().join("artifacts").display());
    let store = ArtifactStore::open(meta, &url, &[]).expect("artifacts");
    let (key, chain) = self_signed("www.acme.com");
    store
        .put_certificate("www.acme.com", &key, &chain)
        .await
        .expect("put");
    let https = Arc::new(HttpsState::new(true, 0));
    // The CA is down: only the shared certificate can make the domain issued.
    let m = CertManager::load(config(), &dir.path().join("data"), https.clone(), None)
        .with_shared_store(store.clone());
    m.follow(&["www.acme.com".to_owned()]);
    m.attempt("www.acme.com").await;
    let s = m.status("www.acme.com").expect("followed");
    assert_eq!(s.state, CertState::Issued, "{}", s.last_error);
    assert!(https.is_certified("www.acme.com"));
    assert!(
        dir.path().join("data/acme/certs/www.acme.com.pem").exists(),
        "cached in the data directory"
    );

    // A damaged shared certificate is not served: the manager orders (and here fails).
    store
        .put_certificate("bad.acme.com", "not a key", "not a chain")
        .await
        .expect("put");
    m.follow(&["www.acme.com".to_owned(), "bad.acme.com".to_owned()]);
    m.attempt("bad.acme.com").await;
    assert_eq!(
        m.status("bad.acme.com").expect("followed").state,
        CertState::Failed
    );

    let removed = m.follow(&[]);
    m.unshare(&removed).await;
    assert_eq!(store.certificate("www.acme.com").await.expect("read"), None);
}
