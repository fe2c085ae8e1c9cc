//! Dashboard benchmark (DESIGN.md "Performance targets": "a log line to the browser, under 100
//! ms"): the time from a line a build step writes to its appearance in the build page of a real
//! browser (headless chromium, [`opus_tests::browser`]), through opusd's log file and the page's
//! Server-Sent Events. The step writes each line with the time it wrote it (`date +%s%3N`); the
//! page records, as each line is inserted, when it arrived (a `MutationObserver`); both clocks
//! are this machine's. Prints the median and the 90th percentile of 40 lines.
//!
//! Run: `bash bench/dashboard.sh` (builds the release opusd it drives). The projects page with
//! 10,000 projects and 1,000,000 builds is measured by `bench/scale.sh`.

use std::time::{Duration, Instant};

use opus_tests::Daemon;
use opus_tests::browser::{Browser, WAIT, wait_for_text};

/// Lines timed.
const LINES: usize = 40;

/// Records, for each line inserted into the log, how long after its writing it arrived.
const OBSERVE: &str = r#"
window.latencies = [];
new MutationObserver(function (mutations) {
  var now = Date.now();
  mutations.forEach(function (m) {
    m.addedNodes.forEach(function (n) {
      var t = /^tick (\d+)/.exec(n.textContent || "");
      if (t) { window.latencies.push(now - Number(t[1])); }
    });
  });
}).observe(document.getElementById("log"), { childList: true, subtree: true });
return true;
"#;

fn main() {
    let Some(browser) = Browser::start() else {
        println!(
            "log line to browser: not measured, chromium is not installed (bash .ci/setup-browser.sh)"
        );
        return;
    };
    let d = Daemon::start();
    let src = d.root.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let gate = d.root.path().join("gate");
    std::fs::write(
        src.join("opus.yml"),
        format!(
            "build:\n  steps:\n    - \"while [ ! -f {} ]; do sleep 0.01; done; for i in $(seq 1 {LINES}); do echo \\\"tick $(date +%s%3N)\\\"; sleep 0.05; done\"\n    - mkdir -p dist && echo done > dist/index.html\n  output: dist\n",
            gate.display()
        ),
    )
    .expect("write opus.yml");
    d.opus(&["add", "web", src.to_str().expect("utf-8")]).ok();
    let n = d.trigger(&["web"]);
    d.wait_for_state("web", n, "running", 30);
    browser.run(async |c| {
        c.goto(&format!("{}/projects/web/builds/{n}", d.server))
            .await
            .expect("open the build");
        wait_for_text(c, "#state", "running").await;
        c.execute(OBSERVE, vec![]).await.expect("observe the log");
    });
    std::fs::write(&gate, "").expect("open the gate");
    let mut latencies: Vec<u64> = browser.run(async |c| {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = c
                .execute("return window.latencies;", vec![])
                .await
                .expect("read the latencies");
            let list: Vec<u64> = seen
                .as_array()
                .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                .unwrap_or_default();
            if list.len() >= LINES {
                break list;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {LINES} lines arrived within {WAIT:?}",
                list.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    latencies.sort_unstable();
    println!(
        "log line to browser ({LINES} lines): median {} ms, 90th percentile {} ms (target < 100 ms)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 9 / 10]
    );
}
