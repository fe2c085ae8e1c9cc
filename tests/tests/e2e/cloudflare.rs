//! Cloudflare, against an HTTP fake of its API on 127.0.0.1 (`opus_tests::fake_cloudflare`;
//! no api.cloudflare.com here): the DNS record of each custom domain and preview, made and
//! deleted through the durable outbox; an outage retried; a record Opus did not make left alone;
//! a bad token file refused at start; and DNS-01 for the `--domain` wildcard, where the fake
//! hands the TXT record to pebble-challtestsrv so that the real pebble validates it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opus_tests::Daemon;
use opus_tests::acme::{PebbleSetup, WAIT, free_port, https_get};
use opus_tests::fake_cloudflare::{Call, FakeCloudflare};

const TOKEN: &str = "cf-test-token";
const ADDRESS: &str = "203.0.113.7";
const COMMENT_PREFIX: &str = "managed by opus";

/// A token file in its own folder (kept as long as the test holds it).
fn token_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cloudflare-token");
    std::fs::write(&path, text).expect("write");
    let path = path.to_str().expect("utf-8").to_owned();
    (dir, path)
}

/// The Cloudflare flags for `cf`, with `token` as the token file.
fn cloudflare_args<'a>(cf: &'a FakeCloudflare, token: &'a str) -> Vec<&'a str> {
    vec![
        "--domain",
        "preview.acme.test",
        "--cloudflare-token-file",
        token,
        "--cloudflare-zone",
        "acme.test",
        "--cloudflare-api-url",
        &cf.url,
        "--hook-retry-base-ms",
        "50",
        "--hook-retry-cap-ms",
        "200",
    ]
}

/// opusd routing names to `ADDRESS` through `cf`; project `web` with version `1.0`.
fn routing_daemon(cf: &FakeCloudflare, token: &str) -> Daemon {
    let mut args = cloudflare_args(cf, token);
    args.extend_from_slice(&["--public-address", ADDRESS]);
    let d = Daemon::start_with(&args);
    add_web(&d);
    d
}

fn add_web(d: &Daemon) {
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    let site = d.root.path().join("site");
    std::fs::create_dir_all(&site).expect("mkdir");
    std::fs::write(site.join("index.html"), "web 1.0").expect("write");
    d.publish("web", "1.0", &site);
}

/// `opus domain list -o json`'s `dns` of `domain`.
fn dns_of(d: &Daemon, domain: &str) -> serde_json::Value {
    let all = d.opus(&["domain", "list", "-o", "json"]).json();
    all.as_array()
        .and_then(|a| a.iter().find(|x| x["domain"] == domain))
        .map(|x| x["dns"].clone())
        .unwrap_or_else(|| panic!("{domain} is not listed: {all}"))
}

/// Waits until `domain`'s DNS change is `action` and `state`; returns it.
fn wait_for_dns(d: &Daemon, domain: &str, action: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dns = dns_of(d, domain);
        if dns["action"] == action && dns["state"] == state {
            return dns;
        }
        assert!(
            Instant::now() < deadline,
            "{domain}'s DNS is not {action} {state}: {dns}\nopusd:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn creates_of(calls: &[Call], name: &str) -> usize {
    calls
        .iter()
        .filter(|c| c.created() && c.body["name"] == name)
        .count()
}

#[test]
fn fake_cloudflare_gets_a_record_per_preview_and_domain_and_loses_them_with_them() {
    let cf = FakeCloudflare::start("acme.test", TOKEN);
    let (_dir, token) = token_file(&format!("{TOKEN}\n"));
    let d = routing_daemon(&cf, &token);

    d.opus(&["deploy", "web", "1.0", "-e", "pr-12"]).ok();
    let preview = "pr-12--web.preview.acme.test";
    let records = cf.wait_for_records(20, "the preview's record", |r| {
        r.iter().any(|r| r.name == preview)
    });
    let r = records.iter().find(|r| r.name == preview).expect("record");
    assert_eq!((r.kind.as_str(), r.content.as_str()), ("A", ADDRESS));
    assert_eq!(r.comment.as_deref(), Some("managed by opus: web/pr-12"));

    d.opus(&["domain", "add", "web", "www.acme.test"]).ok();
    let records = cf.wait_for_records(20, "the domain's record", |r| {
        r.iter().any(|r| r.name == "www.acme.test")
    });
    let r = records
        .iter()
        .find(|r| r.name == "www.acme.test")
        .expect("record");
    assert_eq!(
        r.comment.as_deref(),
        Some("managed by opus: web/production")
    );
    let dns = wait_for_dns(&d, "www.acme.test", "create", "done");
    assert_eq!(dns["error"], "", "{dns}");

    // A second deploy of the preview makes no second record; the outbox keeps the order, so
    // once the domain's removal is seen, the redeploy was handled.
    d.opus(&["deploy", "web", "1.0", "-e", "pr-12"]).ok();
    d.opus(&["domain", "remove", "www.acme.test"]).ok();
    cf.wait_for_records(20, "the domain's record deleted", |r| {
        r.iter().all(|r| r.name != "www.acme.test")
    });
    assert_eq!(creates_of(&cf.calls(), preview), 1, "{:#?}", cf.calls());

    d.opus(&["env", "remove", "web", "pr-12"]).ok();
    cf.wait_for_records(20, "the preview's record deleted", |r| r.is_empty());

    // Removing the project deletes every record Opus made for it: production's and a domain's.
    d.opus(&["deploy", "web", "1.0"]).ok();
    d.opus(&["domain", "add", "web", "shop.acme.test"]).ok();
    cf.wait_for_records(20, "production's and the domain's records", |r| {
        r.iter().any(|r| r.name == "web.preview.acme.test")
            && r.iter().any(|r| r.name == "shop.acme.test")
    });
    d.opus(&["remove", "web", "--yes"]).ok();
    cf.wait_for_records(20, "the project's records deleted", |r| r.is_empty());
    assert!(
        cf.calls().iter().all(|c| c.answered == 200),
        "{:#?}",
        cf.calls()
    );
}

#[test]
fn fake_cloudflare_answering_500_then_200_is_retried_and_the_record_made_once() {
    let cf = FakeCloudflare::start("acme.test", TOKEN);
    let (_dir, token) = token_file(TOKEN);
    let d = routing_daemon(&cf, &token);
    cf.script_creates([500]);
    d.opus(&["domain", "add", "web", "www.acme.test"]).ok();
    let dns = wait_for_dns(&d, "www.acme.test", "create", "done");
    assert_eq!(dns["attempts"], 2, "{dns}");
    let calls = cf.calls();
    let posts: Vec<u16> = calls
        .iter()
        .filter(|c| c.method == "POST" && c.body["name"] == "www.acme.test")
        .map(|c| c.answered)
        .collect();
    assert_eq!(posts, [500, 200], "{calls:#?}");
    assert_eq!(cf.records_named("www.acme.test").len(), 1);
    assert!(
        d.log().contains("Cloudflare call failed; retrying"),
        "{}",
        d.log()
    );
}

#[test]
fn fake_cloudflare_record_of_the_same_name_without_opus_comment_is_left_alone() {
    let cf = FakeCloudflare::start("acme.test", TOKEN);
    cf.seed("CNAME", "www.acme.test", "elsewhere.example.net", None);
    let (_dir, token) = token_file(TOKEN);
    let d = routing_daemon(&cf, &token);
    d.opus(&["domain", "add", "web", "www.acme.test"]).ok();
    let dns = wait_for_dns(&d, "www.acme.test", "create", "left alone");
    let why = dns["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("CNAME record of www.acme.test that Opus did not make"),
        "{dns}"
    );
    let table = d.opus(&["domain", "list"]).ok().to_owned();
    assert!(table.contains("left alone"), "{table}");

    d.opus(&["domain", "remove", "www.acme.test"]).ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The removal is gone from the list; its change is the name's newest in the outbox, seen
    // through the calls: a lookup of the name after the domain was removed, and no deletion.
    loop {
        let lookups = cf
            .calls()
            .iter()
            .filter(|c| c.method == "GET" && c.path.contains("name=www.acme.test"))
            .count();
        if lookups >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{:#?}", cf.calls());
        std::thread::sleep(Duration::from_millis(50));
    }
    let calls = cf.calls();
    assert!(
        calls.iter().all(|c| c.method == "GET"),
        "only lookups: {calls:#?}"
    );
    let records = cf.records_named("www.acme.test");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].content, "elsewhere.example.net");
    assert!(d.log().contains("DNS record left alone"), "{}", d.log());
}

/// Runs opusd with `args` and waits for it to exit; its exit code and stderr.
fn failed_start(args: &[&str]) -> (Option<i32>, String) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(opus_tests::bin("opusd"))
        .args(["--data-dir", data.path().to_str().expect("utf-8")])
        .args(["--listen", "127.0.0.1:0", "--sites-listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("opusd starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("opusd did not stop with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_cloudflare_token_file_stops_opusd_at_start_with_a_clear_error() {
    let cf = FakeCloudflare::start("acme.test", TOKEN);
    let (_dir, empty) = token_file("\n");
    let (code, err) = failed_start(&cloudflare_args(&cf, &empty));
    assert_ne!(code, Some(0));
    assert!(
        err.contains("cloudflare_token_file") && err.contains("is empty"),
        "{err}"
    );
    let (_dir2, two) = token_file("one token\nanother\n");
    let (code, err) = failed_start(&cloudflare_args(&cf, &two));
    assert_ne!(code, Some(0));
    assert!(err.contains("more than a Cloudflare API token"), "{err}");
    let (code, err) = failed_start(&cloudflare_args(&cf, "/nonexistent/cloudflare-token"));
    assert_ne!(code, Some(0));
    assert!(
        err.contains("cannot read the cloudflare_token_file file /nonexistent/cloudflare-token"),
        "{err}"
    );
    assert!(cf.calls().is_empty(), "{:#?}", cf.calls());
}

#[test]
fn fake_cloudflare_dns01_gets_a_wildcard_from_pebble_that_serves_every_preview_over_https() {
    let Some(setup) = PebbleSetup::prepare() else {
        return;
    };
    let cf = FakeCloudflare::start("acme.test", TOKEN);
    let (_dir, token) = token_file(TOKEN);
    let ca = setup.ca_file();
    let directory = setup.directory();
    // pebble first, on the site port opusd will take, so that the first order finds it.
    let sites_port = free_port();
    let pebble = setup.start(sites_port);
    cf.forward_txt_to(&pebble.challtestsrv_management());
    let sites = format!("127.0.0.1:{sites_port}");
    let mut args = cloudflare_args(&cf, &token);
    args.extend_from_slice(&[
        "--sites-listen",
        &sites,
        "--sites-tls-listen",
        "127.0.0.1:0",
        "--acme-directory",
        &directory,
        "--acme-ca-file",
        ca.to_str().expect("utf-8"),
        "--acme-dns-propagation-secs",
        "0",
    ]);
    let d = Daemon::start_with(&args);
    add_web(&d);
    d.opus(&["deploy", "web", "1.0", "-e", "pr-1"]).ok();
    d.opus(&["deploy", "web", "1.0"]).ok();

    let roots = pebble.issuing_root();
    let tls = d.sites_tls();
    let deadline = Instant::now() + WAIT;
    let r = loop {
        match https_get(&tls, "pr-1--web.preview.acme.test", "/", &roots) {
            Ok(r) => break r,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no wildcard certificate after {WAIT:?}: {e}\nopusd:\n{}\npebble:\n{}\ncalls: {:#?}",
                d.log(),
                pebble.log(),
                cf.calls()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((r.status, r.text().as_str()), (200, "web 1.0"));
    assert_eq!(r.header("strict-transport-security"), "max-age=31536000");
    // The same certificate serves production, one label under the domain too.
    let prod = https_get(&tls, "web.preview.acme.test", "/", &roots).expect("HTTPS GET");
    assert_eq!(prod.text(), "web 1.0");
    assert!(d.log().contains("*.preview.acme.test"), "{}", d.log());

    // The challenge went through Cloudflare's API with Opus's comment, and was deleted after.
    let challenge = "_acme-challenge.preview.acme.test";
    let calls = cf.calls();
    let txt = calls
        .iter()
        .find(|c| c.created() && c.body["name"] == challenge)
        .unwrap_or_else(|| panic!("no TXT record made: {calls:#?}"));
    assert_eq!(txt.body["type"], "TXT");
    assert!(
        txt.body["comment"]
            .as_str()
            .is_some_and(|c| c.starts_with(COMMENT_PREFIX)),
        "{txt:?}"
    );
    assert!(calls.iter().any(Call::deleted), "{calls:#?}");
    assert!(
        cf.records_named(challenge).is_empty(),
        "{:#?}",
        cf.records()
    );

    // Plain HTTP of a certified preview redirects with a 308; ACME's path is never redirected.
    let tls_port = tls.rsplit(':').next().expect("port");
    let plain = d.get("pr-1--web.preview.acme.test", "/a?b=1");
    assert_eq!(plain.status, 308);
    assert_eq!(
        plain.header("location"),
        format!("https://pr-1--web.preview.acme.test:{tls_port}/a?b=1")
    );
    let challenge_path = d.get(
        "pr-1--web.preview.acme.test",
        "/.well-known/acme-challenge/unknown",
    );
    assert_ne!(challenge_path.status, 308);
}

#[test]
fn fake_cloudflare_outage_across_a_sigkill_of_opusd_loses_no_record() {
    let cf = FakeCloudflare::start("acme.test", TOKEN);
    let (_dir, token) = token_file(TOKEN);
    let mut d = routing_daemon(&cf, &token);
    cf.script_creates([503; 10_000]);
    d.opus(&["domain", "add", "web", "www.acme.test"]).ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cf
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.answered == 503)
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{:#?}", cf.calls());
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill();
    cf.clear_script();
    d.restart();
    cf.wait_for_records(20, "the domain's record after the restart", |r| {
        r.iter().any(|r| r.name == "www.acme.test")
    });
    wait_for_dns(&d, "www.acme.test", "create", "done");
    assert_eq!(
        creates_of(&cf.calls(), "www.acme.test"),
        1,
        "{:#?}",
        cf.calls()
    );
}
