//! The dashboard in a real browser: Debian's chromium, driven over WebDriver (chromedriver on a
//! free port, the `fantoccini` client) against the real opusd: logging in with the token, a
//! running build's log growing live, deploying and rolling back from the UI (then the site
//! fetched over HTTP), the viewer refused, no horizontal scroll at 375 px or 1440 px. The run leaves two
//! screenshots in docs/screenshots/.
//!
//! `.ci/setup-browser.sh` installs chromium and chromium-driver; where they are missing these
//! tests say so and pass, unless `OPUS_REQUIRE_BROWSER=1` makes that a failure (as
//! `OPUS_REQUIRE_TMUX` does for the terminal tests).

use std::path::PathBuf;

use fantoccini::{Client, Locator};
use opus_tests::Daemon;
use opus_tests::browser::{Browser, wait_for_text};

const TOKEN: &str = "browser-api-token-123456";
const VIEWER: &str = "browser-viewer-token-654321";
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

/// Asserts the current page has no horizontal scroll in a window `wide` px wide.
async fn fits(c: &Client, wide: u64) {
    let width: serde_json::Value = c
        .execute(
            "return [window.innerWidth, document.documentElement.scrollWidth];",
            vec![],
        )
        .await
        .expect("measure");
    let inner = width[0].as_u64().expect("a width");
    let scroll = width[1].as_u64().expect("a width");
    assert!(inner <= wide, "the window is {inner} px wide");
    assert!(
        scroll <= wide,
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

    // A phone and a wide desktop: no sideways scroll on the pages with the widest tables.
    browser.run(async |c| {
        for wide in [375, 1440] {
            c.set_window_size(u32::try_from(wide).expect("a width"), 800)
                .await
                .expect("resize");
            for path in ["/", "/projects/web", "/projects/web/builds/1", "/queue"] {
                c.goto(&format!("{}{path}", d.server)).await.expect("open");
                wait_for_text(c, "header", "Opus").await;
                fits(c, wide).await;
            }
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
