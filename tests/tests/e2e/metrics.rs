//! `/metrics` on the API port: the build gauges, finished counts and durations, as a scheduler
//! running real builds and a restart leave them.

use std::path::Path;
use std::time::{Duration, Instant};

use opus_tests::{Daemon, http, site_with_opus_yml};

/// The value of one sample (`name{labels}`) in a Prometheus text answer, 0 when absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn metrics(d: &Daemon) -> String {
    let host = d.server.trim_start_matches("http://").to_owned();
    let r = http(&d.server, "GET", &host, "/metrics", &[]);
    assert_eq!(r.status, 200);
    r.text()
}

/// Waits until the metrics show every `(sample, value)`; panics with them after 30 s.
fn wait_for(d: &Daemon, want: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(d);
        if want.iter().all(|(name, v)| sample(&m, name) == *v) {
            return m;
        }
        let seen: Vec<_> = want.iter().map(|(n, _)| (n, sample(&m, n))).collect();
        assert!(
            Instant::now() < deadline,
            "metrics never showed {want:?}; last saw {seen:?}:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Project `web`: a build whose version starts with `hold` waits until `gate` exists; version
/// `bad` fails; any other succeeds at once.
fn add_web(d: &Daemon, gate: &Path) {
    let yml = format!(
        "build:\n  steps:\n    - \"case $OPUS_VERSION in hold*) while [ ! -f {} ]; do sleep 0.05; done;; esac\"\n    - \"if [ $OPUS_VERSION = bad ]; then exit 3; fi\"\n    - \"mkdir -p dist && echo hi > dist/index.html\"\n",
        gate.display()
    );
    let dir = site_with_opus_yml(d.root.path(), "web", &yml);
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
}

const RUNNING: &str = "opus_builds{state=\"running\"}";
const QUEUED: &str = "opus_builds{state=\"queued\"}";
const DEPTH: &str = "opus_build_queue_depth";
const SUCCEEDED: &str = "opus_builds_finished_total{state=\"succeeded\"}";
const FAILED: &str = "opus_builds_finished_total{state=\"failed\"}";
const CANCELLED: &str = "opus_builds_finished_total{state=\"cancelled\"}";

#[test]
fn build_metrics_follow_the_queue_the_outcomes_and_a_restart() {
    let mut d = Daemon::start_with(&["--max-builds", "1"]);
    let gate = d.root.path().join("gate");
    add_web(&d, &gate);
    let m = metrics(&d);
    for name in [RUNNING, QUEUED, DEPTH, SUCCEEDED, FAILED, CANCELLED] {
        assert!(m.contains(&format!("{name} 0")), "{name} starts at 0:\n{m}");
    }

    let held = d.trigger(&["web", "--version", "hold-1"]);
    d.wait_for_state("web", held, "running", 30);
    let ok = d.trigger(&["web", "--version", "ok"]);
    let bad = d.trigger(&["web", "--version", "bad"]);
    let gone = d.trigger(&["web", "--version", "gone"]);
    wait_for(&d, &[(RUNNING, 1.0), (QUEUED, 3.0), (DEPTH, 3.0)]);

    d.opus(&["cancel", &format!("web#{gone}")]).ok();
    wait_for(&d, &[(QUEUED, 2.0), (DEPTH, 2.0), (CANCELLED, 1.0)]);

    // The held build runs at least this long.
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(&gate, "").expect("open the gate");
    d.wait_for_state("web", held, "succeeded", 60);
    d.wait_for_state("web", ok, "succeeded", 60);
    d.wait_for_state("web", bad, "failed", 60);
    let m = wait_for(
        &d,
        &[
            (RUNNING, 0.0),
            (QUEUED, 0.0),
            (DEPTH, 0.0),
            (SUCCEEDED, 2.0),
            (FAILED, 1.0),
            (CANCELLED, 1.0),
        ],
    );
    // Durations of the builds that ran, by final state; the cancelled one never ran.
    let count = |state: &str| {
        sample(
            &m,
            &format!("opus_build_duration_seconds_count{{state=\"{state}\"}}"),
        )
    };
    assert_eq!(
        (count("succeeded"), count("failed"), count("cancelled")),
        (2.0, 1.0, 0.0),
        "{m}"
    );
    let sum = sample(&m, "opus_build_duration_seconds_sum{state=\"succeeded\"}");
    assert!(
        sum >= 0.6,
        "the held build took at least 0.6 s, sum {sum}:\n{m}"
    );
    let under_a_minute = sample(
        &m,
        "opus_build_duration_seconds_bucket{state=\"succeeded\",le=\"60\"}",
    );
    assert_eq!(under_a_minute, 2.0, "{m}");

    // A crash with one build running and two queued: the next opusd fails the running one
    // ("opusd restarted") and queues the other two again, and its metrics say so from the start.
    std::fs::remove_file(&gate).expect("close the gate");
    let crashed = d.trigger(&["web", "--version", "hold-2"]);
    d.wait_for_state("web", crashed, "running", 30);
    let first = d.trigger(&["web", "--version", "hold-3"]);
    let second = d.trigger(&["web", "--version", "hold-4"]);
    // The crash comes once the three builds' records are on disk.
    for (id, state) in [(crashed, "running"), (first, "queued"), (second, "queued")] {
        d.wait_until_on_disk(
            &format!("{{\"id\":{id},\"project\":\"web\",\"state\":\"{state}\""),
            30,
        );
    }
    d.kill();
    d.restart();
    d.wait_for_state("web", crashed, "failed", 30);
    wait_for(
        &d,
        &[
            (RUNNING, 1.0),
            (QUEUED, 1.0),
            (DEPTH, 1.0),
            (FAILED, 1.0),
            (SUCCEEDED, 0.0),
        ],
    );
    std::fs::write(&gate, "").expect("open the gate");
    d.wait_for_state("web", first, "succeeded", 60);
    d.wait_for_state("web", second, "succeeded", 60);
    wait_for(
        &d,
        &[
            (RUNNING, 0.0),
            (QUEUED, 0.0),
            (SUCCEEDED, 2.0),
            (FAILED, 1.0),
        ],
    );
}
