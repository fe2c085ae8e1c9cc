//! opusd with an S3 store: `--extra-store s3=s3://...` against a real S3-protocol server (moto's,
//! installed by `.ci/setup-s3.sh`) on 127.0.0.1, driven by the real `opus`.
//!
//! Without a Python that has moto the test prints why it did not run; `OPUS_REQUIRE_S3=1` makes
//! that a failure.

use opus_tests::Daemon;
use opus_tests::moto::Moto;

#[test]
fn publish_download_and_verify_through_an_s3_store() {
    let Some(moto) = Moto::start_or_skip(
        "publish_download_and_verify_through_an_s3_store",
        "opus-e2e",
    ) else {
        return;
    };
    let store = format!("s3={}", moto.store_url("opus-e2e", "sites"));
    let d = Daemon::start_with(&["--extra-store", &store]);
    let src = d.root.path().join("src");
    std::fs::create_dir_all(src.join("static")).expect("mkdir");
    std::fs::write(src.join("index.html"), "<html>s3</html>").expect("write");
    std::fs::write(src.join("static/app.js"), "x=1;\n".repeat(5000)).expect("write");
    let src_s = src.to_str().expect("utf-8");
    d.opus(&["add", "web", src_s]).ok();

    d.opus(&["publish", "web", "1", src_s, "--store", "s3"])
        .ok();
    let again = d
        .opus(&["publish", "web", "2", src_s, "--store", "s3", "-o", "json"])
        .json();
    assert_eq!(again["uploaded_files"], 0, "{again}");
    let listed = d.opus(&["artifacts", "web", "-o", "json"]).json();
    assert_eq!(listed[0]["store"], "s3", "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    // Nothing went to the local default store.
    assert!(!d.data_dir().join("artifacts/web").exists());

    let out = d.root.path().join("out");
    d.opus(&[
        "download",
        "web",
        "1",
        "--extract",
        out.to_str().expect("utf-8"),
    ])
    .ok();
    assert_eq!(
        std::fs::read(out.join("static/app.js")).expect("extracted"),
        std::fs::read(src.join("static/app.js")).expect("source")
    );
    d.opus(&["verify", "web"]).ok();
}

/// The value of one sample (`name{labels}`) in a Prometheus text answer, 0 when absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn metrics(d: &Daemon) -> String {
    let host = d.server.trim_start_matches("http://").to_owned();
    opus_tests::http(&d.server, "GET", &host, "/metrics", &[]).text()
}

/// Bytes that do not compress, larger than the memory cache's per-file limit (512 KiB), so they
/// are streamed from the disk cache.
fn noise(len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn sites_in_an_s3_store_are_served_through_the_local_cache() {
    let Some(mut moto) = Moto::start_or_skip(
        "sites_in_an_s3_store_are_served_through_the_local_cache",
        "opus-sites",
    ) else {
        return;
    };
    let store = moto.store_url("opus-sites", "opus");
    // A bound that holds the small files but not big.bin: big.bin is fetched for each request
    // (and the version, larger than half the bound, is not warmed at deploy).
    let mut d = Daemon::start_with(&["--store", &store, "--site-cache-size", "600000"]);
    let src = opus_tests::site_with_opus_yml(
        d.root.path(),
        "web",
        "build:\n  steps: [\"mkdir -p dist && cp -r public/. dist/\"]\n",
    );
    std::fs::create_dir_all(src.join("public/assets")).expect("mkdir");
    std::fs::write(src.join("public/index.html"), "<h1>from s3</h1>").expect("write");
    let app = "console.log('s3');\n".repeat(3000);
    std::fs::write(src.join("public/assets/app.3f9a1c2b.js"), &app).expect("write");
    let big = noise(700_000);
    std::fs::write(src.join("public/big.bin"), &big).expect("write");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    d.opus(&["trigger", "web", "--version", "1.0", "--wait"])
        .ok();
    let listed = d.opus(&["artifacts", "web", "-o", "json"]).json();
    assert_eq!(listed[0]["store"], "default", "{listed}");
    assert!(
        !d.data_dir().join("artifacts").exists(),
        "the version went to S3, not to local disk"
    );
    d.opus(&["deploy", "web", "1.0"]).ok();

    let check_site = |d: &Daemon| {
        let home = d.get("web.localhost", "/");
        assert_eq!(
            (home.status, home.text().as_str()),
            (200, "<h1>from s3</h1>")
        );
        assert_eq!(home.header("x-opus-version"), "1.0");
        let js = d.get("web.localhost", "/assets/app.3f9a1c2b.js");
        assert_eq!((js.status, js.text()), (200, app.clone()));
        assert_eq!(
            js.header("cache-control"),
            "public, max-age=31536000, immutable"
        );
        let etag = js.header("etag").to_owned();
        let again = opus_tests::http(
            &d.sites,
            "GET",
            "web.localhost",
            "/assets/app.3f9a1c2b.js",
            &[&format!("If-None-Match: {etag}")],
        );
        assert_eq!(again.status, 304);
        let gz = opus_tests::http(
            &d.sites,
            "GET",
            "web.localhost",
            "/assets/app.3f9a1c2b.js",
            &["Accept-Encoding: gzip"],
        );
        assert_eq!(gz.header("content-encoding"), "gzip");
        let part = opus_tests::http(
            &d.sites,
            "GET",
            "web.localhost",
            "/big.bin",
            &["Range: bytes=600000-600999"],
        );
        assert_eq!(part.status, 206);
        assert_eq!(part.header("content-range"), "bytes 600000-600999/700000");
        assert_eq!(part.body, big[600_000..601_000]);
        let whole = d.get("web.localhost", "/big.bin");
        assert_eq!((whole.status, whole.body.len()), (200, big.len()));
        assert!(whole.body == big, "big.bin's bytes");
        assert_eq!(d.get("web.localhost", "/nope.js").status, 404);
    };
    check_site(&d);
    let m = metrics(&d);
    // index.html and app.js once each, big.bin once per request of it (two).
    assert_eq!(sample(&m, "opus_site_cache_fetches_total"), 4.0, "{m}");
    let cached = d.data_dir().join("site-cache");
    let names: Vec<String> = std::fs::read_dir(&cached)
        .expect("the site cache folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tmp")
        .collect();
    assert_eq!(names.len(), 2, "the two small files, by sha256: {names:?}");
    assert!(names.iter().all(|n| n.len() == 64), "{names:?}");
    assert_eq!(
        sample(&m, "opus_site_cache_bytes"),
        (16 + app.len()) as f64,
        "{m}"
    );

    // A second opusd serves it again; the small files come from the disk cache.
    d.restart();
    check_site(&d);
    let m = metrics(&d);
    assert_eq!(
        sample(&m, "opus_site_cache_fetches_total"),
        2.0,
        "only big.bin, twice: {m}"
    );

    // The store goes away: cached files are still served, the rest is a 502 naming nothing.
    moto.stop();
    assert_eq!(d.get("web.localhost", "/").status, 200);
    let r = d.get("web.localhost", "/big.bin");
    assert_eq!(r.status, 502, "{}", r.text());
    let text = r.text();
    for internal in ["s3", "opus-sites", "127.0.0.1", "sha", "1.0", "web/"] {
        assert!(!text.contains(internal), "{internal:?} in {text:?}");
    }
    assert!(
        d.log()
            .contains("cannot fetch a deployed file from the artifact store"),
        "logged:\n{}",
        d.log()
    );
    // A store that accepts connections and never answers: the visitor still gets the 502 within
    // opusd's 5 s wait (the store client alone would retry for minutes), not a hung request.
    let silent = std::net::TcpListener::bind(("127.0.0.1", moto.port)).expect("moto's port");
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept() {
            open.push(conn);
        }
    });
    let r = d.get("web.localhost", "/big.bin");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        d.log()
            .contains("did not start sending the file within 5 s"),
        "logged:\n{}",
        d.log()
    );
    drop(d);
    drop(held);
}
