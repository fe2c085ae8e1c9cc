//! A real browser for the dashboard's tests and benchmarks: Debian's chromium, headless, driven
//! over WebDriver (chromedriver on a free port, the `fantoccini` client), with a fresh profile.
//!
//! `.ci/setup-browser.sh` installs chromium and chromium-driver; where they are missing
//! [`Browser::start`] says so and gives `None` (the test passes), unless `OPUS_REQUIRE_BROWSER` is
//! set, which makes that a failure.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long any one thing the browser waits for may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// chromedriver on a free port with one headless chromium session; both end on drop.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    runtime: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a session; `None` (the test then passes, saying why) when the
    /// browser is not installed, unless `OPUS_REQUIRE_BROWSER` is set.
    pub fn start() -> Option<Browser> {
        if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
            assert!(
                std::env::var_os("OPUS_REQUIRE_BROWSER").is_none(),
                "chromium is not installed (bash .ci/setup-browser.sh)"
            );
            eprintln!("skipped: chromium and chromium-driver are not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let profile = tempfile::tempdir().expect("a profile folder");
        let mut browser = Browser {
            client: None,
            driver,
            runtime,
            _profile: profile,
        };
        let url = format!("http://127.0.0.1:{port}");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let caps = caps.as_object().cloned().expect("an object");
        let deadline = Instant::now() + WAIT;
        let client = browser.runtime.block_on(async {
            loop {
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                match ClientBuilder::new(connector)
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                {
                    Ok(c) => break c,
                    // chromedriver may not listen yet.
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("no WebDriver session with chromium: {e}"),
                }
            }
        });
        browser.client = Some(client);
        Some(browser)
    }

    /// The WebDriver session.
    pub fn c(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Runs `f` with the session.
    pub fn run<'a, T>(&'a self, f: impl AsyncFnOnce(&'a Client) -> T) -> T {
        self.runtime.block_on(f(self.c()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.runtime.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Waits until the element `css` shows `needle`; returns its text.
pub async fn wait_for_text(c: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(needle) {
            return text;
        }
        if Instant::now() >= deadline {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let source = c.source().await.unwrap_or_default();
            panic!("{css} did not show {needle:?} within {WAIT:?} at {url}: {text}\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
