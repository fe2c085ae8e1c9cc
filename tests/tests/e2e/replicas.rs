//! Site replicas through the real binaries: `opusd sites` processes following what an opusd
//! writes into its artifact store (`_opus/sites/`): on a moto S3 store (a real S3-protocol
//! server, `.ci/setup-s3.sh`), and on a `file://` store that starts empty; and HTTPS with the
//! certificates shared under `_opus/certs/`.

use std::path::Path;
use std::time::{Duration, Instant};

use opus_tests::acme::https_get;
use opus_tests::moto::Moto;
use opus_tests::replica::Replica;
use opus_tests::{Daemon, HttpResponse};
use rustls::pki_types::CertificateDer;

/// Versions "1" and "2" of a site under `root`: `index.html` says the version, and an asset that
/// is the same in both.
fn versions(root: &Path) -> [std::path::PathBuf; 2] {
    ["1", "2"].map(|v| {
        let dir = root.join(format!("site-{v}"));
        std::fs::create_dir_all(dir.join("assets")).expect("mkdir");
        std::fs::write(dir.join("index.html"), format!("version {v}")).expect("write");
        std::fs::write(
            dir.join("assets/app.js"),
            "console.log('app');\n".repeat(500),
        )
        .expect("write");
        dir
    })
}

#[test]
fn two_replicas_on_s3_follow_a_deploy_a_rollback_and_a_domain_and_outlive_the_store() {
    let Some(mut moto) = Moto::start_or_skip(
        "two_replicas_on_s3_follow_a_deploy_a_rollback_and_a_domain_and_outlive_the_store",
        "opus-replicas",
    ) else {
        return;
    };
    let store = moto.store_url("opus-replicas", "opus");
    let d = Daemon::start_with(&["--store", &store]);
    // One replica is woken by opusd's event stream, the other only polls.
    let watched = Replica::start(&store, &["--api", &d.server]);
    let polling = Replica::start(&store, &["--poll-interval-ms", "200"]);
    for r in [&watched, &polling] {
        let home = r.get("web.localhost", "/");
        assert_eq!(home.status, 404, "an empty store serves nothing");
        assert!(home.text().contains("no site"), "{}", home.text());
    }

    let [v1, v2] = versions(d.root.path());
    d.opus(&["add", "web", v1.to_str().expect("utf-8")]).ok();
    d.publish("web", "1", &v1);
    d.publish("web", "2", &v2);
    d.opus(&["deploy", "web", "1"]).ok();
    for r in [&watched, &polling] {
        r.wait_for_body("web.localhost", "/", "version 1", 20);
    }
    d.opus(&["deploy", "web", "2"]).ok();
    for r in [&watched, &polling] {
        r.wait_for_body("web.localhost", "/", "version 2", 20);
        let asset = r.get("web.localhost", "/assets/app.js");
        assert_eq!(asset.status, 200);
        assert_eq!(asset.header("x-opus-version"), "2");
    }

    // The rollback RPC has returned once `opus rollback` exits; every replica follows.
    d.opus(&["rollback", "web"]).ok();
    let took = [&watched, &polling].map(|r| r.wait_for_body("web.localhost", "/", "version 1", 20));
    eprintln!(
        "rollback reached the watched replica in {:?}, the polling one in {:?}",
        took[0], took[1]
    );

    // A custom domain is part of its environment's pointer.
    d.opus(&["domain", "add", "web", "www.acme.com"]).ok();
    for r in [&watched, &polling] {
        r.wait_for_body("www.acme.com", "/", "version 1", 20);
    }
    let staging = d.opus(&["deploy", "web", "2", "--env", "staging"]);
    staging.ok();
    for r in [&watched, &polling] {
        r.wait_for_body("staging--web.localhost", "/", "version 2", 20);
        assert_eq!(
            r.get("staging--web.localhost", "/").header("x-robots-tag"),
            "noindex"
        );
    }

    // The store goes away: the replicas keep serving what they have (files from their caches).
    moto.stop();
    std::thread::sleep(Duration::from_millis(500));
    for r in [&watched, &polling] {
        let home = r.get("web.localhost", "/");
        assert_eq!((home.status, home.text().as_str()), (200, "version 1"));
        let asset = r.get("web.localhost", "/assets/app.js");
        assert_eq!(asset.status, 200, "{}", r.log());
        assert_eq!(asset.body.len(), "console.log('app');\n".len() * 500);
        assert_eq!(r.get("staging--web.localhost", "/").text(), "version 2");
    }
}

#[test]
fn a_replica_started_on_an_empty_store_serves_404_then_the_sites_that_appear() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = format!("file://{}", root.path().join("store").display());
    let replica = Replica::start(&store, &["--poll-interval-ms", "100"]);
    let home = replica.get("web.localhost", "/");
    assert_eq!(home.status, 404);
    assert!(home.text().contains("no site"), "{}", home.text());

    let d = Daemon::start_with(&["--store", &store]);
    let [v1, v2] = versions(d.root.path());
    d.opus(&["add", "web", v1.to_str().expect("utf-8")]).ok();
    d.publish("web", "1", &v1);
    d.publish("web", "2", &v2);
    d.opus(&["deploy", "web", "2"]).ok();
    replica.wait_for_body("web.localhost", "/", "version 2", 20);
    // A password set on opusd is asked for by the replica too.
    let password = d.root.path().join("password");
    std::fs::write(&password, "s3cret\n").expect("write");
    d.opus(&[
        "env",
        "protect",
        "web",
        "production",
        "--password-file",
        password.to_str().expect("utf-8"),
    ])
    .ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while replica.get("web.localhost", "/").status != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica does not ask for the password:\n{}",
            replica.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Removing the project removes its pointers: the replica stops serving it.
    d.opus(&["remove", "web", "--yes"]).ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while replica.get("web.localhost", "/").status != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed project is still served:\n{}",
            replica.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `opus <args>` with `KUBECONFIG` at the fake API server and an empty HOME.
fn opus_kube(kubeconfig: &Path, home: &Path, args: &[&str]) -> opus_tests::Run {
    let mut cmd = std::process::Command::new(opus_tests::bin("opus"));
    cmd.args(args)
        .env("HOME", home)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("OPUS_SERVER")
        .env_remove("OPUS_TOKEN");
    opus_tests::run_with_stdin(cmd, "")
}

#[test]
fn fake_apiserver_opus_install_site_replicas_applies_a_deployment_and_service_and_uninstall_removes_them()
 {
    let fake = opus_tests::fake_apiserver::FakeApiServer::start();
    let home = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(home.path());
    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/opus/deployments/opusd-sites";
    const SERVICE: &str = "/api/v1/namespaces/opus/services/opusd-sites";

    // Replicas need a store they all reach.
    let refused = opus_kube(
        &kubeconfig,
        home.path(),
        &["install", "--site-replicas", "3"],
    );
    let stderr = refused.fails(1);
    assert!(
        stderr.contains("--site-replicas") && stderr.contains("--store s3://"),
        "{stderr}"
    );
    assert!(fake.object(DEPLOYMENT).is_none());

    let args = [
        "install",
        "--site-replicas",
        "3",
        "--store",
        "s3://bucket/opus",
    ];
    let out = opus_kube(&kubeconfig, home.path(), &args);
    out.ok();
    assert!(
        out.stderr.contains("applied Deployment opusd-sites"),
        "{}",
        out.stderr
    );
    let deployment = fake.object(DEPLOYMENT).expect("the replicas' Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["sites"]));
    let env = container["env"].as_array().expect("env");
    for (name, value) in [
        ("OPUS_STORE", "s3://bucket/opus"),
        ("OPUS_API", "http://opusd.opus.svc:7070"),
    ] {
        assert!(
            env.contains(&serde_json::json!({"name": name, "value": value})),
            "{name}: {env:?}"
        );
    }
    let service = fake.object(SERVICE).expect("the replicas' Service");
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/name"],
        "opusd-sites"
    );
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && (r.path == DEPLOYMENT || r.path == SERVICE))
        .collect();
    assert_eq!(patches.len(), 2);
    assert!(
        patches
            .iter()
            .all(|r| r.query.get("fieldManager").map(String::as_str) == Some("opus"))
    );

    // Twice changes nothing; uninstall removes the replicas with opusd.
    fake.clear_requests();
    opus_kube(&kubeconfig, home.path(), &args).ok();
    assert_eq!(fake.object(DEPLOYMENT), Some(deployment));
    opus_kube(&kubeconfig, home.path(), &["uninstall"]).ok();
    assert!(fake.object(DEPLOYMENT).is_none());
    assert!(fake.object(SERVICE).is_none());
}

/// A certificate for `host` signed by a CA of its own: (key PEM, chain PEM, the CA's root, the
/// only root the certificate is trusted by).
fn certificate(host: &str) -> (String, String, CertificateDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "opus replica test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    (key.serialize_pem(), cert.pem(), ca_cert.der().clone())
}

/// Writes `host`'s certificate into the store at `url` as opusd shares it (`_opus/certs/`).
fn share(url: &str, host: &str, key: &str, chain: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = opus_core::store::MetaStore::open(&dir.path().join("meta")).expect("meta");
    let store = opus_core::artifact::ArtifactStore::open(meta, url, &[]).expect("store");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(store.put_certificate(host, key, chain))
        .expect("certificate stored");
}

/// Waits until an HTTPS `GET /` of `host` on `tls`, trusting only `root`, answers 200.
fn wait_for_https(
    replica: &Replica,
    tls: &str,
    host: &str,
    root: &CertificateDer<'static>,
) -> HttpResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match https_get(tls, host, "/", std::slice::from_ref(root)) {
            Ok(r) if r.status == 200 => return r,
            other => assert!(
                Instant::now() < deadline,
                "the replica does not serve {host} over HTTPS with the expected certificate ({:?}):\n{}",
                other.map(|r| r.status),
                replica.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_replica_serves_https_with_the_certificates_opusd_shares_in_s3_and_follows_their_renewal() {
    let Some(moto) = Moto::start_or_skip(
        "a_replica_serves_https_with_the_certificates_opusd_shares_in_s3_and_follows_their_renewal",
        "opus-replica-tls",
    ) else {
        return;
    };
    let store = moto.store_url("opus-replica-tls", "opus");
    let d = Daemon::start_with(&["--store", &store]);
    let [v1, _] = versions(d.root.path());
    d.opus(&["add", "web", v1.to_str().expect("utf-8")]).ok();
    d.publish("web", "1", &v1);
    d.opus(&["deploy", "web", "1"]).ok();
    d.opus(&["domain", "add", "web", "www.acme.com"]).ok();
    let (key, chain, root) = certificate("www.acme.com");
    share(&store, "www.acme.com", &key, &chain);
    // A damaged pair next to it does not stop the replica.
    share(&store, "bad.acme.com", "not a key", "not a chain");

    let replica = Replica::start(
        &store,
        &[
            "--sites-tls-listen",
            "127.0.0.1:0",
            "--poll-interval-ms",
            "100",
        ],
    );
    let tls = replica.https.clone().expect("the HTTPS address");
    let r = wait_for_https(&replica, &tls, "www.acme.com", &root);
    assert_eq!(r.text(), "version 1");
    assert_eq!(r.header("strict-transport-security"), "max-age=31536000");
    // Plain HTTP of the certified host redirects to the replica's HTTPS port, keeping the path.
    let plain = replica.get("www.acme.com", "/a?b=1");
    assert_eq!(plain.status, 308, "{}", replica.log());
    let port = tls.rsplit(':').next().expect("port");
    assert_eq!(
        plain.header("location"),
        format!("https://www.acme.com:{port}/a?b=1")
    );
    // Hosts without a certificate stay plain; the damaged one gets no handshake.
    assert_eq!(replica.get("web.localhost", "/").text(), "version 1");
    assert!(https_get(&tls, "bad.acme.com", "/", std::slice::from_ref(&root)).is_err());
    assert!(
        replica.log().contains("cannot be served"),
        "{}",
        replica.log()
    );

    // Renewed in the store (a certificate of another CA): the replica serves the new one.
    let (key2, chain2, root2) = certificate("www.acme.com");
    share(&store, "www.acme.com", &key2, &chain2);
    let r = wait_for_https(&replica, &tls, "www.acme.com", &root2);
    assert_eq!(r.text(), "version 1");
    assert!(
        https_get(&tls, "www.acme.com", "/", std::slice::from_ref(&root)).is_err(),
        "the old certificate is still served"
    );

    // Damaged in the store (a chain that is not the key's): the renewed one stays served.
    share(&store, "www.acme.com", &key, &chain2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.log().matches("cannot be served").count() < 2 {
        assert!(Instant::now() < deadline, "{}", replica.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = https_get(&tls, "www.acme.com", "/", std::slice::from_ref(&root2)).expect("HTTPS GET");
    assert_eq!((r.status, r.text().as_str()), (200, "version 1"));
    assert_eq!(replica.get("www.acme.com", "/").status, 308);
}
