//! The dashboard in a real browser: Debian's chromium, driven over WebDriver (chromedriver on a
//! free port, the `fantoccini` client) against the real opusd: logging in with the token, a
//! running build's log growing live, deploying and rolling back from the UI (then the site
//! fetched over HTTP), the viewer refused, no horizontal scroll at 375 px. The run leaves two
//! screenshots in docs/screenshots/.
//!
//! `.ci/setup-browser.sh` installs chromium and chromium-driver; where they are missing these
//! tests say so and pass, unless `OPUS_REQUIRE_BROWSER=1` makes that a failure (as
//! `OPUS_REQUIRE_TMUX` does for the terminal tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use opus_tests::Daemon;
use serde_json::json;

const TOKEN: &str = "browser-api-token-123456";
const VIEWER: &str = "browser-viewer-token-654321";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long any one thing the browser waits for may take.
const WAIT: Duration = Duration::from_secs(30);

/// chromedriver on a free port with one headless chromium session; both end on drop.
struct Browser {
    client: Option<Client>,
    driver: Child,
    runtime: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a session; `None` (the test then passes, saying why) when the
    /// browser is not installed, unless `OPUS_REQUIRE_BROWSER` is set.
    fn start() -> Option<Browser> {
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

    fn c(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Runs `f` with the session.
    fn run<'a, T>(&'a self, f: impl AsyncFnOnce(&'a Client) -> T) -> T {
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
async fn wait_for_text(c: &Client, css: &str, needle: &str) -> String {
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

/// Clicks the submit button labelled `label` and waits for the next page's `h1` to show `h1`.
async fn submit(c: &Client, label: &str, h1: &str) {
    let button = c
        .find(Locator::XPath(&format!(
            "//button[normalize-space(.)='{label}']"
        )))
        .await
        .unwrap_or_else(|e| panic!("no button {label:?}: {e}"));
    button.click().await.expect("click");
    wait_for_text(c, "h1", h1).await;
}

/// Logs in with `token` from the login page the dashboard redirects to.
async fn log_in(c: &Client, d: &Daemon, token: &str) {
    c.goto(&format!("{}/", d.server))
        .await
        .expect("open the dashboard");
    wait_for_text(c, "h1", "Log in").await;
    c.find(Locator::Id("token"))
        .await
        .expect("the token field")
        .send_keys(token)
        .await
        .expect("type the token");
    submit(c, "Log in", "Projects").await;
}

/// Saves a PNG the test run makes into docs/screenshots/.
fn save_screenshot(name: &str, png: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("mkdir docs/screenshots");
    std::fs::write(dir.join(name), png).expect("write the screenshot");
}

/// Asserts the current page has no horizontal scroll in a 375 px wide window.
async fn fits_375(c: &Client) {
    let width: serde_json::Value = c
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth];",
            vec![],
        )
        .await
        .expect("measure");
    let inner = width[0].as_u64().expect("a width");
    let scroll = width[1].as_u64().expect("a width");
    assert!(inner <= 375, "the window is {inner} px wide");
    assert!(
        scroll <= 375,
        "the page scrolls sideways: {scroll} px wide at {inner} px"
    );
}

/// A daemon with a token and a viewer token, and project `web` (a local folder).
fn daemon() -> Daemon {
    let mut d = Daemon::start_with(&["--token", TOKEN, "--viewer-token", VIEWER]);
    d.token = Some(TOKEN.into());
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    d
}

/// Publishes `version` of `web` (an `index.html` saying it).
fn publish(d: &Daemon, version: &str) {
    let dir = d.root.path().join(format!("site-{version}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("index.html"), format!("version {version}")).expect("write");
    d.publish("web", version, &dir);
}

#[test]
fn log_in_and_watch_a_running_build_write_its_log() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let d = daemon();
    publish(&d, "1.0.3");
    d.opus(&["deploy", "web", "1.0.3"]).ok();
    let gate = d.root.path().join("gate");
    std::fs::write(
        d.root.path().join("src/opus.yml"),
        format!(
            "build:\n  steps:\n    - \"printf '\\\\033[32mready\\\\033[0m: waiting for the gate\\\\n'; while [ ! -f {} ]; do sleep 0.05; done; echo line-$((6*7))-after-the-gate\"\n    - mkdir -p dist && echo built > dist/index.html\n  output: dist\n",
            gate.display()
        ),
    )
    .expect("write opus.yml");
    let n = d.trigger(&["web", "--version", "1.0.4"]);
    d.wait_for_state("web", n, "running", 30);

    browser.run(async |c| {
        log_in(c, &d, TOKEN).await;
        c.set_window_size(1280, 800).await.expect("resize");
        wait_for_text(c, "main", "web").await;
        save_screenshot("projects.png", &c.screenshot().await.expect("screenshot"));

        c.goto(&format!("{}/projects/web/builds/{n}", d.server))
            .await
            .expect("open the build");
        // The step's output (its command, shown above it, reads differently).
        wait_for_text(c, "#log", "ready: waiting for the gate").await;
        let log = wait_for_text(c, "#state", "running").await;
        assert_eq!(log, "running");
    });
    // Written by the step only now, after the page opened.
    std::fs::write(&gate, "").expect("open the gate");
    browser.run(async |c| {
        let log = wait_for_text(c, "#log", "line-42-after-the-gate").await;
        assert!(
            log.contains("$((6*7))"),
            "the command line shows as written: {log}"
        );
        wait_for_text(c, "#state", "succeeded").await;
        let green = c
            .find(Locator::Css("#log .f2"))
            .await
            .expect("the ANSI green span");
        assert_eq!(green.text().await.expect("text"), "ready");
        // Reloaded, the ended build shows its step timings; tall enough for the log.
        c.set_window_size(1280, 1100).await.expect("resize");
        c.refresh().await.expect("reload");
        wait_for_text(c, "main", "Took").await;
        c.execute(
            "document.getElementById('log').scrollIntoView({block: 'end'});",
            vec![],
        )
        .await
        .expect("scroll to the log");
        save_screenshot("build.png", &c.screenshot().await.expect("screenshot"));
    });
}

#[test]
fn deploy_and_roll_back_from_the_ui() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let d = daemon();
    publish(&d, "1.0.3");
    publish(&d, "1.0.4");
    d.opus(&["deploy", "web", "1.0.3"]).ok();
    browser.run(async |c| {
        log_in(c, &d, TOKEN).await;
        wait_for_text(c, "#live", "production: 1.0.3").await;
    });
    // A deploy made elsewhere shows on the open projects page, from the event stream.
    d.opus(&["deploy", "web", "--env", "staging", "1.0.4"]).ok();
    browser.run(async |c| {
        wait_for_text(c, "#live", "staging: 1.0.4").await;
        c.goto(&format!("{}/projects/web", d.server)).await.expect("open");
        // The Deploy… form of version 1.0.4 (newest first) to production.
        let form = c
            .find(Locator::XPath(
                "//tr[td[@data-label='Version' and starts-with(normalize-space(.), '1.0.4')]]//form",
            ))
            .await
            .expect("the deploy form of 1.0.4");
        form.find(Locator::Css("button"))
            .await
            .expect("its button")
            .click()
            .await
            .expect("click");
        let what = wait_for_text(c, "main", "goes from").await;
        assert!(what.contains("production goes from 1.0.3 to 1.0.4"), "{what}");
        submit(c, "Deploy", "Deployed").await;
    });
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.4");
    browser.run(async |c| {
        c.goto(&format!("{}/projects/web", d.server))
            .await
            .expect("open");
        c.find(Locator::LinkText("Roll back…"))
            .await
            .expect("the rollback link")
            .click()
            .await
            .expect("click");
        let what = wait_for_text(c, "main", "back to").await;
        assert!(
            what.contains("production goes from 1.0.4 back to 1.0.3"),
            "{what}"
        );
        submit(c, "Roll back", "Rolled back").await;
    });
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.3");
    let releases = d.opus(&["releases", "web", "-o", "json"]).json();
    assert_eq!(releases[0]["actor"], "dashboard");
    assert_eq!(releases[0]["reason"], "rollback");

    // Narrow screens: no sideways scroll on the pages with the widest tables.
    browser.run(async |c| {
        c.set_window_size(375, 800).await.expect("resize");
        for path in ["/", "/projects/web", "/projects/web/builds/1", "/queue"] {
            c.goto(&format!("{}{path}", d.server)).await.expect("open");
            wait_for_text(c, "header", "Opus").await;
            fits_375(c).await;
        }
    });
}

#[test]
fn the_viewer_cannot_roll_back_and_a_form_without_csrf_is_refused() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let d = daemon();
    publish(&d, "1.0.3");
    publish(&d, "1.0.4");
    d.opus(&["deploy", "web", "1.0.3"]).ok();
    d.opus(&["deploy", "web", "1.0.4"]).ok();
    browser.run(async |c| {
        log_in(c, &d, VIEWER).await;
        wait_for_text(c, "header", "read-only").await;
        c.goto(&format!(
            "{}/projects/web/environments/production/rollback",
            d.server
        ))
        .await
        .expect("open");
        let text = wait_for_text(c, "main", "403").await;
        assert!(text.contains("viewer token"), "{text}");
    });
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.4");
    browser.run(async |c| {
        // As the operator, a form whose CSRF field was emptied is refused.
        c.goto(&format!("{}/login", d.server)).await.expect("open");
        c.find(Locator::Id("token"))
            .await
            .expect("token field")
            .send_keys(TOKEN)
            .await
            .expect("type");
        submit(c, "Log in", "Projects").await;
        c.goto(&format!(
            "{}/projects/web/environments/production/rollback",
            d.server
        ))
        .await
        .expect("open");
        wait_for_text(c, "main", "back to").await;
        c.execute(
            "document.querySelector('main input[name=csrf]').value = '';",
            vec![],
        )
        .await
        .expect("empty the field");
        submit(c, "Roll back", "403").await;
    });
    assert_eq!(d.get("web.localhost", "/").text(), "version 1.0.4");
}
