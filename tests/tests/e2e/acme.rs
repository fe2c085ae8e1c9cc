//! Automatic HTTPS of custom domains against a real ACME CA (Debian's pebble, with
//! pebble-challtestsrv as its DNS): HTTP-01 answered by opusd's site listener, the site fetched
//! over TLS by a client that trusts only pebble's root, the redirect, a restart that serves the
//! stored certificate, and a CA that refuses an order.

use std::time::{Duration, Instant};

use opus_tests::Daemon;
use opus_tests::acme::{Pebble, PebbleSetup, TlsSession, WAIT, https_get};

/// opusd with HTTPS against pebble, and pebble validating on opusd's site port; project `web`
/// with version `1.0` in production.
fn https_daemon() -> Option<(Daemon, Pebble)> {
    https_daemon_with(PebbleSetup::prepare()?, "127.0.0.1:0", &[])
}

/// [`https_daemon`] with pebble set up as given, the TLS listener at `tls_listen` and `extra`
/// flags; the site port is fixed, so that pebble reaches opusd after a restart too.
fn https_daemon_with(
    setup: PebbleSetup,
    tls_listen: &str,
    extra: &[&str],
) -> Option<(Daemon, Pebble)> {
    let ca = setup.ca_file();
    let sites = format!("127.0.0.1:{}", opus_tests::acme::free_port());
    let directory = setup.directory();
    let mut args = vec![
        "--sites-listen",
        &sites,
        "--sites-tls-listen",
        tls_listen,
        "--acme-directory",
        &directory,
        "--acme-ca-file",
        ca.to_str().expect("utf-8"),
        "--acme-email",
        "ops@acme.test",
    ];
    args.extend_from_slice(extra);
    let d = Daemon::start_with(&args);
    let port: u16 = d
        .sites
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("site port");
    let pebble = setup.start(port);
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    let site = d.root.path().join("site");
    std::fs::create_dir_all(&site).expect("mkdir");
    std::fs::write(site.join("index.html"), "web 1.0").expect("write");
    d.publish("web", "1.0", &site);
    d.opus(&["deploy", "web", "1.0"]).ok();
    Some((d, pebble))
}

/// `opus domain list -o json`'s entry for `domain`.
fn listed(d: &Daemon, domain: &str) -> serde_json::Value {
    let all = d.opus(&["domain", "list", "-o", "json"]).json();
    all.as_array()
        .and_then(|a| a.iter().find(|x| x["domain"] == domain).cloned())
        .unwrap_or_else(|| panic!("{domain} is not listed: {all}"))
}

/// Waits until `domain`'s certificate is in `state`; returns its listing.
fn wait_for_certificate(
    d: &Daemon,
    pebble: &Pebble,
    domain: &str,
    state: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let entry = listed(d, domain);
        if entry["certificate"]["state"] == state {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{domain} is not {state} after {WAIT:?}: {entry}\nopusd:\n{}\npebble:\n{}",
            d.log(),
            pebble.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_custom_domain_gets_a_certificate_from_pebble_and_is_served_over_https() {
    let Some((mut d, pebble)) = https_daemon() else {
        return;
    };
    d.opus(&["domain", "add", "web", "www.acme.test"]).ok();
    let entry = wait_for_certificate(&d, &pebble, "www.acme.test", "issued");
    let cert = &entry["certificate"];
    assert!(
        cert["issuer"]
            .as_str()
            .is_some_and(|i| i.contains("Pebble")),
        "{entry}"
    );
    assert!(
        !cert["not_after"].as_str().unwrap_or("").is_empty(),
        "{entry}"
    );
    assert_eq!(cert["last_error"], "", "{entry}");
    let tls = d.sites_tls();
    let tls_port = tls.rsplit(':').next().expect("port").to_owned();
    assert_eq!(
        entry["url"],
        format!("https://www.acme.test:{tls_port}/"),
        "{entry}"
    );

    let roots = pebble.issuing_root();
    let r = https_get(&tls, "www.acme.test", "/", &roots).expect("HTTPS GET");
    assert_eq!((r.status, r.text().as_str()), (200, "web 1.0"));
    // A name opusd has no certificate for ends the handshake.
    assert!(https_get(&tls, "other.acme.test", "/", &roots).is_err());
    // Plain HTTP redirects once the certificate exists; the wildcard hosts stay plain.
    let plain = d.get("www.acme.test", "/a?b=1");
    assert_eq!(plain.status, 308);
    assert_eq!(
        plain.header("location"),
        format!("https://www.acme.test:{tls_port}/a?b=1")
    );
    assert_eq!(d.get("web.localhost", "/").status, 200);

    // After a restart the stored certificate is served at once, with no new order.
    let orders_before = d.log().matches("ordering a certificate").count();
    d.restart();
    let entry = listed(&d, "www.acme.test");
    assert_eq!(entry["certificate"]["state"], "issued", "{entry}");
    let r = https_get(&d.sites_tls(), "www.acme.test", "/", &roots).expect("HTTPS GET");
    assert_eq!(r.text(), "web 1.0");
    assert_eq!(
        d.log().matches("ordering a certificate").count(),
        orders_before
    );

    // Removing the domain stops serving it over HTTPS and deletes its certificate.
    d.opus(&["domain", "remove", "www.acme.test"]).ok();
    let deadline = Instant::now() + WAIT;
    while https_get(&d.sites_tls(), "www.acme.test", "/", &roots).is_ok() {
        assert!(Instant::now() < deadline, "still served over HTTPS");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!d.data_dir().join("acme/certs/www.acme.test.pem").exists());
}

#[test]
fn a_refused_order_keeps_http_serving_and_lists_the_reason() {
    let Some((d, pebble)) = https_daemon() else {
        return;
    };
    // Pebble validates bad.acme.test at 127.0.0.2, where nothing listens.
    pebble.resolve("bad.acme.test", "127.0.0.2");
    d.opus(&["domain", "add", "web", "bad.acme.test"]).ok();
    let entry = wait_for_certificate(&d, &pebble, "bad.acme.test", "failed");
    let why = entry["certificate"]["last_error"].as_str().unwrap_or("");
    assert!(why.contains("refused"), "{entry}");
    assert!(
        !entry["certificate"]["next_attempt"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{entry}"
    );
    let table = d.opus(&["domain", "list"]);
    assert!(table.ok().contains("failed"), "{}", table.stdout);
    // Plain HTTP keeps serving the site, without a redirect.
    let plain = d.get("bad.acme.test", "/");
    assert_eq!((plain.status, plain.text().as_str()), (200, "web 1.0"));
    assert!(
        entry["url"].as_str().unwrap_or("").starts_with("http://"),
        "{entry}"
    );
}

/// The `not_after` of `domain`'s certificate as listed.
fn not_after(d: &Daemon, domain: &str) -> String {
    listed(d, domain)["certificate"]["not_after"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Waits until `domain` is served a certificate that expires after `than`.
fn wait_for_renewal(d: &Daemon, pebble: &Pebble, domain: &str, than: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = not_after(d, domain);
        if !now.is_empty() && now.as_str() > than {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{domain} was not renewed (still {now}, was {than})\nopusd:\n{}\npebble:\n{}",
            d.log(),
            pebble.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_short_lived_certificate_is_renewed_two_thirds_into_its_life() {
    let Some(setup) = PebbleSetup::prepare() else {
        return;
    };
    let Some((d, pebble)) = https_daemon_with(setup.cert_validity(9), "127.0.0.1:0", &[]) else {
        return;
    };
    d.opus(&["domain", "add", "web", "www.acme.test"]).ok();
    wait_for_certificate(&d, &pebble, "www.acme.test", "issued");
    let first = not_after(&d, "www.acme.test");
    // A kept-alive connection opened with the first certificate...
    let roots = pebble.issuing_root();
    let mut session =
        TlsSession::connect(&d.sites_tls(), "www.acme.test", &roots).expect("TLS connection");
    assert_eq!(session.get("/").expect("first request").text(), "web 1.0");
    let renewed = wait_for_renewal(&d, &pebble, "www.acme.test", &first);
    assert_eq!(
        listed(&d, "www.acme.test")["certificate"]["state"],
        "issued"
    );
    // ...is not dropped by the swap to the renewed one.
    assert_eq!(session.get("/").expect("same connection").text(), "web 1.0");
    let r = https_get(&d.sites_tls(), "www.acme.test", "/", &roots).expect("HTTPS GET");
    assert_eq!(r.text(), "web 1.0", "served after the renewal to {renewed}");
}

#[test]
fn opusd_killed_during_a_renewal_renews_after_its_restart() {
    let Some(setup) = PebbleSetup::prepare() else {
        return;
    };
    let Some((mut d, pebble)) = https_daemon_with(setup.cert_validity(9), "127.0.0.1:0", &[])
    else {
        return;
    };
    d.opus(&["domain", "add", "web", "www.acme.test"]).ok();
    wait_for_certificate(&d, &pebble, "www.acme.test", "issued");
    let first = not_after(&d, "www.acme.test");
    // The renewal starts 6 s into the certificate's life: SIGKILL as soon as it has.
    let deadline = Instant::now() + WAIT;
    while d.log().matches("ordering a certificate").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no renewal started:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    d.kill();
    d.restart();
    // Whatever the kill left (the old certificate or the new one), it loads, and a newer one
    // follows.
    let entry = listed(&d, "www.acme.test");
    assert!(
        ["issued", "pending"].contains(&entry["certificate"]["state"].as_str().unwrap_or("")),
        "{entry}"
    );
    wait_for_renewal(&d, &pebble, "www.acme.test", &first);
    let roots = pebble.issuing_root();
    let r = https_get(&d.sites_tls(), "www.acme.test", "/", &roots).expect("HTTPS GET");
    assert_eq!(r.text(), "web 1.0");
}

#[test]
fn tls_alpn_01_is_answered_on_the_tls_listener() {
    let Some(setup) = PebbleSetup::prepare() else {
        return;
    };
    let tls = format!("127.0.0.1:{}", setup.tls_port());
    let Some((d, pebble)) = https_daemon_with(setup, &tls, &["--acme-challenge", "tls-alpn-01"])
    else {
        return;
    };
    d.opus(&["domain", "add", "web", "alpn.acme.test"]).ok();
    wait_for_certificate(&d, &pebble, "alpn.acme.test", "issued");
    let roots = pebble.issuing_root();
    let r = https_get(&tls, "alpn.acme.test", "/", &roots).expect("HTTPS GET");
    assert_eq!(r.text(), "web 1.0");
}
