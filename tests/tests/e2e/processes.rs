//! What a build's steps leave behind, through the real binaries: processes in the background
//! (also `setsid`) end with the build, at its timeout, at cancel, and after opusd is killed and
//! restarted; a line of hundreds of megabytes leaves opusd's memory small; a FIFO in a local
//! source fails the build instead of blocking it.
//!
//! Each test's `sleep` has its own argument (`sleep 7311`...), so that the processes it looks for
//! in /proc are its own.

use std::time::{Duration, Instant};

use opus_tests::{Daemon, site_with_opus_yml};

use crate::sleeps::{assert_gone, sleeps, wait_for_sleep};

const WRITE_DIST: &str = "mkdir -p dist && echo '<h1>hello</h1>' > dist/index.html";

fn add_site(d: &Daemon, name: &str, opus_yml: &str) -> std::path::PathBuf {
    let dir = site_with_opus_yml(d.root.path(), name, opus_yml);
    d.opus(&["add", name, dir.to_str().expect("utf-8")]).ok();
    dir
}

#[test]
fn a_step_that_leaves_processes_in_the_background_ends_at_its_timeout_without_them() {
    let d = Daemon::start();
    add_site(
        &d,
        "slow",
        "build:\n  timeout: 4s\n  steps: [\"sleep 7311 & setsid sleep 7312 &\", \"sleep 7313\"]\n",
    );
    // Polled with a deadline rather than `--wait`, so that a build that never ends fails the test.
    let started = Instant::now();
    let id = d.trigger(&["slow"]);
    let b = d.wait_for_state("slow", id, "failed", 20);
    let took = started.elapsed();
    eprintln!("a build with a 4s timeout ended after {took:?} (polled through opus builds)");
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timed out after 4s")),
        "{b}"
    );
    assert!(
        took > Duration::from_millis(3500) && took < Duration::from_millis(6500),
        "the build took {took:?} for a timeout of 4s"
    );
    for arg in ["7311", "7312", "7313"] {
        assert_gone(arg);
    }
}

#[test]
fn a_successful_build_leaves_no_process_behind() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  timeout: 60s\n  steps: [\"sleep 7321 &\", \"setsid sleep 7322 > /dev/null 2>&1 &\", \"{WRITE_DIST}\"]\n"
        ),
    );
    // The build must not wait for its background processes: a deadline, not `--wait`.
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "succeeded", 20);
    assert_gone("7321");
    assert_gone("7322");
}

#[test]
fn with_build_cgroups_a_process_that_clears_its_environment_and_detaches_ends_too() {
    let d = Daemon::start_with(&["--build-cgroups"]);
    if d.log()
        .contains("builds' processes are found in /proc instead")
    {
        // Said at start: this machine lets opusd create no cgroup (a read-only /sys/fs/cgroup).
        eprintln!("SKIPPED: no cgroup can be created here:\n{}", d.log());
        return;
    }
    assert!(
        d.log().contains("kept in a cgroup of its own"),
        "opusd says at start that builds get cgroups:\n{}",
        d.log()
    );
    // Neither the build's scope (env -i), nor its process group (setsid), nor a live parent
    // (the step's shell is gone) leads to it: only the cgroup does.
    add_site(
        &d,
        "web",
        &format!(
            "build:\n  steps: [\"env -i setsid sleep 7351 > /dev/null 2>&1 &\", \"{WRITE_DIST}\"]\n"
        ),
    );
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "succeeded", 20);
    assert_gone("7351");
}

#[test]
fn cancel_ends_a_build_and_its_background_processes_within_a_second() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        "build:\n  steps: [\"setsid sleep 7331 &\", \"sleep 7332\"]\n",
    );
    let id = d.trigger(&["web"]);
    wait_for_sleep("7332");
    let asked = Instant::now();
    d.opus(&["cancel", &format!("web#{id}")]).ok();
    let b = d.wait_for_state("web", id, "cancelled", 30);
    let took = asked.elapsed();
    eprintln!("cancelled after {took:?} (opus cancel and opus builds included)");
    assert!(
        took < Duration::from_millis(1500),
        "cancel took {took:?} (the CLI's own start included): {b}"
    );
    assert_gone("7331");
    assert_gone("7332");
}

#[test]
fn processes_of_a_build_running_when_opusd_is_killed_end_at_its_restart() {
    let mut d = Daemon::start();
    add_site(
        &d,
        "web",
        "build:\n  steps: [\"setsid sleep 7341 > /dev/null 2>&1 & sleep 7342\"]\n",
    );
    let id = d.trigger(&["web"]);
    wait_for_sleep("7341");
    wait_for_sleep("7342");
    // Give sled its periodic flush before the crash.
    std::thread::sleep(Duration::from_millis(800));
    d.kill();
    // opusd's death alone ends nothing: the steps' processes are now init's.
    assert!(!sleeps("7341").is_empty() && !sleeps("7342").is_empty());
    d.restart();
    let b = d.wait_for_state("web", id, "failed", 30);
    assert_eq!(b["reason"], "opusd restarted");
    assert_gone("7341");
    assert_gone("7342");
}

/// A field of `/proc/<pid>/status` in kB (`VmHWM`, `RssFile`...), in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb * 1024
}

/// opusd's peak resident memory (VmHWM) stays under 64 MiB without the pages of its own code
/// (`RssFile`: the debug binary the tests run maps ~37 MiB of it, a release binary far less), and
/// the 300 MB line adds almost nothing to what a small build already took.
#[test]
fn a_300_mb_line_is_cut_and_opusd_stays_under_64_mb() {
    let d = Daemon::start();
    add_site(
        &d,
        "small",
        &format!("build:\n  steps: [\"{WRITE_DIST}\"]\n"),
    );
    add_site(
        &d,
        "loud",
        &format!(
            "build:\n  steps: [\"head -c 300000000 /dev/zero | tr '\\\\0' a; echo; echo after-the-line\", \"{WRITE_DIST}\"]\n"
        ),
    );
    let pid = d.pid().expect("opusd runs");
    d.opus(&["trigger", "small", "--wait"]).ok();
    let before = status_bytes(pid, "VmHWM");
    let id = d.trigger(&["loud"]);
    d.wait_for_state("loud", id, "succeeded", 120);
    let peak = status_bytes(pid, "VmHWM");
    let code = status_bytes(pid, "RssFile");
    eprintln!(
        "opusd peak RSS: {} KiB after a small build, {} KiB after a 300 MB line ({} KiB of it file-backed)",
        before / 1024,
        peak / 1024,
        code / 1024
    );
    assert!(
        peak - before < 8 << 20,
        "the 300 MB line took opusd's peak RSS from {} to {} MiB",
        before >> 20,
        peak >> 20
    );
    assert!(
        peak.saturating_sub(code) < 64 << 20,
        "opusd's peak RSS was {} MiB, {} MiB of it its code",
        peak >> 20,
        code >> 20
    );
    let log = d.opus(&["logs", &format!("loud#{id}")]).ok().to_owned();
    let cut = log
        .lines()
        .find(|l| l.contains("[line cut: longer than 16 KiB, the rest of it is not logged]"))
        .unwrap_or_else(|| panic!("no cut marker in the log:\n{}", &log[..log.len().min(2000)]));
    assert!(
        cut.contains(&"a".repeat(16 * 1024)),
        "the kept part is missing"
    );
    assert!(
        !cut.contains(&"a".repeat(16 * 1024 + 1)),
        "more than 16 KiB kept"
    );
    assert!(log.contains("after-the-line"), "the line after was lost");
}

#[test]
fn a_fifo_in_a_local_source_fails_the_build_with_a_message() {
    let d = Daemon::start();
    let dir = add_site(
        &d,
        "piped",
        &format!("build:\n  steps: [\"{WRITE_DIST}\"]\n"),
    );
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("queue"))
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    // A copy that blocks on the FIFO must fail the test: a deadline, not `--wait`.
    let id = d.trigger(&["piped"]);
    let b = d.wait_for_state("piped", id, "failed", 20);
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("queue, a FIFO (named pipe), which cannot be copied: remove it or move it out of the folder"),
        "{b}"
    );
}
