//! Pipelines (opus.yml `pipeline:`) through the real binaries: jobs of a stage run at once and
//! stages one after the other (shown by timestamps the steps write), each job in its own copy of
//! the checkout; slots count jobs; a failing job fails the build, ends its siblings and is named;
//! `when:` skips with its reason; `opus logs --job`; a bad pipeline names its line; opusd killed
//! while a stage runs.
//!
//! Each test's `sleep` has its own argument (`sleep 7411`...), so that the processes it looks for
//! in /proc are its own.

use std::path::Path;

use opus_tests::{Daemon, site_with_opus_yml};

use crate::sleeps::{assert_gone, sleeps, wait_for_sleep};

fn add_site(d: &Daemon, name: &str, opus_yml: &str) -> std::path::PathBuf {
    let dir = site_with_opus_yml(d.root.path(), name, opus_yml);
    d.opus(&["add", name, dir.to_str().expect("utf-8")]).ok();
    dir
}

/// A step that writes the time (nanoseconds) to `$OUT/<name>`.
fn stamp(name: &str) -> String {
    format!("date +%s%N > \"$OUT/{name}\"")
}

/// A step that waits (up to 20 s) for `$OUT/<name>`, and fails if it never comes.
fn wait_for(name: &str) -> String {
    format!(
        "i=0; while [ ! -e \"$OUT/{name}\" ]; do i=$((i+1)); [ $i -gt 400 ] && exit 9; sleep 0.05; done"
    )
}

/// The timestamp a step wrote.
fn read_stamp(out: &Path, name: &str) -> u128 {
    std::fs::read_to_string(out.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn jobs_of_a_stage_overlap_and_stages_do_not() {
    let d = Daemon::start();
    let out = d.root.path().join("stamps");
    std::fs::create_dir(&out).expect("mkdir");
    // Each job of `test` waits for the other's start: run one after the other, the first would
    // wait for good (and fail). Both append to the same checked-out file, in their own copies.
    let yml = format!(
        "env: {{ OUT: {out:?} }}\npipeline:\n  - stage: test\n    jobs:\n      lint:\n        steps:\n          - {a_start:?}\n          - {a_wait:?}\n          - echo lint >> shared.txt && cat shared.txt\n          - {a_end:?}\n      unit:\n        steps:\n          - {b_start:?}\n          - {b_wait:?}\n          - echo unit >> shared.txt && cat shared.txt\n          - {b_end:?}\n  - stage: build\n    jobs:\n      site:\n        steps:\n          - {c_start:?}\n          - \"cat shared.txt\"\n          - mkdir -p dist && cp shared.txt dist/index.html\n        output: dist\n",
        out = out.display().to_string(),
        a_start = stamp("lint.start"),
        a_wait = wait_for("unit.start"),
        a_end = stamp("lint.end"),
        b_start = stamp("unit.start"),
        b_wait = wait_for("lint.start"),
        b_end = stamp("unit.end"),
        c_start = stamp("site.start"),
    );
    let dir = add_site(&d, "web", &yml);
    std::fs::write(dir.join("shared.txt"), "original\n").expect("write");
    let run = d.opus(&["trigger", "web", "--wait"]);
    let text = run.ok().to_owned();
    let b = d.build("web", 1);
    assert_eq!(b["state"], "succeeded", "{text}\n{}", run.stderr);

    let (lint_start, lint_end) = (read_stamp(&out, "lint.start"), read_stamp(&out, "lint.end"));
    let (unit_start, unit_end) = (read_stamp(&out, "unit.start"), read_stamp(&out, "unit.end"));
    let site_start = read_stamp(&out, "site.start");
    // The two jobs of `test` overlap: each started before the other ended.
    assert!(
        lint_start < unit_end && unit_start < lint_end,
        "test's jobs did not overlap"
    );
    // `build` started after both ended.
    assert!(
        site_start > lint_end && site_start > unit_end,
        "stage build started before stage test ended"
    );
    // Each job saw only its own append; the next stage sees the checkout as it was.
    for (job, other) in [("lint", "unit"), ("unit", "lint")] {
        let log = d.opus(&["logs", "web#1", "--job", job]);
        let log = log.ok();
        assert!(log.contains(&format!("\noriginal\n{job}\n")), "{log}");
        assert!(!log.contains(&format!("\n{other}\n")), "{log}");
    }
    let site = d.opus(&["logs", "web#1", "--job", "site"]);
    let site = site.ok();
    assert!(site.contains("\noriginal\n"), "{site}");
    assert!(
        !site.contains("\nlint\n") && !site.contains("\nunit\n"),
        "{site}"
    );
    // Without --job, a job's lines say which job they are of.
    assert!(text.contains("==> [site] $ cat shared.txt"), "{text}");
    let none = d.opus(&["logs", "web#1", "--job", "e2e"]);
    assert!(
        none.stderr.contains("its jobs: lint, site, unit"),
        "{}",
        none.stderr
    );
    assert_eq!(b["version"], "main-1");
}

#[test]
fn slots_count_jobs_so_one_slot_runs_a_stages_jobs_one_at_a_time() {
    let d = Daemon::start_with(&["--max-builds", "1"]);
    let out = d.root.path().join("stamps");
    std::fs::create_dir(&out).expect("mkdir");
    let yml = format!(
        "env: {{ OUT: {out:?} }}\npipeline:\n  - stage: test\n    jobs:\n      a: {{ steps: [{a1:?}, sleep 0.3, {a2:?}] }}\n      b: {{ steps: [{b1:?}, sleep 0.3, {b2:?}], }}\n      c: {{ steps: [\"mkdir -p dist && touch dist/index.html\"], output: dist }}\n",
        out = out.display().to_string(),
        a1 = stamp("a.start"),
        a2 = stamp("a.end"),
        b1 = stamp("b.start"),
        b2 = stamp("b.end"),
    );
    add_site(&d, "web", &yml);
    let id = d.trigger(&["web"]);
    d.wait_for_state("web", id, "succeeded", 60);
    let (a1, a2) = (read_stamp(&out, "a.start"), read_stamp(&out, "a.end"));
    let (b1, b2) = (read_stamp(&out, "b.start"), read_stamp(&out, "b.end"));
    assert!(a2 <= b1 || b2 <= a1, "two jobs ran at once in one slot");
}

#[test]
fn a_failing_job_fails_the_build_ends_its_siblings_and_is_named() {
    let d = Daemon::start();
    let out = d.root.path().join("stamps");
    std::fs::create_dir(&out).expect("mkdir");
    // `bad` fails only once the test has seen `slow`'s sleep running, so that there is a running
    // sibling to end, however loaded the machine.
    let yml = format!(
        "env: {{ OUT: {out:?} }}\npipeline:\n  - stage: test\n    jobs:\n      bad: {{ steps: [{go:?}, \"exit 3\"] }}\n      slow: {{ steps: [\"sleep 7411\"] }}\n  - stage: build\n    jobs:\n      site: {{ steps: [\"echo never-ran\"], output: dist }}\n",
        out = out.display().to_string(),
        go = wait_for("go"),
    );
    add_site(&d, "web", &yml);
    let id = d.trigger(&["web"]);
    wait_for_sleep("7411");
    std::fs::write(out.join("go"), "").expect("write go");
    let b = d.wait_for_state("web", id, "failed", 30);
    assert_eq!(
        b["reason"],
        "job bad (stage test) failed: step 2 `exit 3` exited with code 3"
    );
    assert_gone("7411");
    let log = d.opus(&["logs", &format!("web#{id}")]);
    let log = log.ok();
    assert!(log.contains("==> [slow] cancelled"), "{log}");
    assert!(!log.contains("never-ran"), "{log}");

    // Each change of a job is an event, with the job, its stage and (failed) the reason.
    let events = d.opus(&["events", "-p", "web", "-o", "json"]);
    let jobs: Vec<(String, String)> = events
        .ok()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("job.")))
        .map(|e| {
            assert_eq!(e["payload"]["build"], id, "{e}");
            assert_eq!(e["payload"]["stage"], "test", "{e}");
            if e["type"] == "job.failed" {
                assert_eq!(
                    e["payload"]["reason"], "step 2 `exit 3` exited with code 3",
                    "{e}"
                );
            }
            (
                e["type"].as_str().expect("type").to_owned(),
                e["payload"]["job"].as_str().expect("job").to_owned(),
            )
        })
        .collect();
    for expected in [
        ("job.started", "bad"),
        ("job.started", "slow"),
        ("job.failed", "bad"),
        ("job.cancelled", "slow"),
    ] {
        assert!(
            jobs.iter()
                .any(|(t, j)| (t.as_str(), j.as_str()) == expected),
            "{expected:?} not in {jobs:?}"
        );
    }
    assert!(!jobs.iter().any(|(_, j)| j == "site"), "{jobs:?}");
}

#[test]
fn when_skips_a_job_with_the_reason() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        "pipeline:\n  - stage: test\n    jobs:\n      release-only: { steps: [\"echo should-not-run\"], when: { branch: [\"release/*\"] } }\n      site: { steps: [\"mkdir -p dist && touch dist/index.html\"], output: dist }\n",
    );
    // `--wait --job` follows one job's lines.
    let waited = d.opus(&["trigger", "web", "--wait", "--job", "site"]);
    let text = waited.ok();
    assert!(
        text.contains("==> $ mkdir -p dist && touch dist/index.html"),
        "{text}"
    );
    assert!(
        !text.contains("skipped") && !text.contains("stage test"),
        "{text}"
    );
    let id = 1;
    let log = d.opus(&["logs", &format!("web#{id}"), "--job", "release-only"]);
    let log = log.ok();
    assert!(
        log.contains("skipped: branch main matches none of release/* (when.branch)"),
        "{log}"
    );
    assert!(!log.contains("should-not-run"), "{log}");
    let events = d.opus(&["events", "-p", "web", "-o", "json"]);
    let skipped = events
        .ok()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|e| e["type"] == "job.skipped")
        .expect("a job.skipped event");
    assert_eq!(skipped["payload"]["job"], "release-only");
    assert_eq!(
        skipped["payload"]["reason"],
        "branch main matches none of release/* (when.branch)"
    );
}

#[test]
fn a_pipeline_with_two_outputs_fails_naming_the_line() {
    let d = Daemon::start();
    add_site(
        &d,
        "web",
        "pipeline:\n  - stage: a\n    jobs:\n      one: { steps: [x], output: dist }\n      two:\n        steps: [y]\n        output: out\n",
    );
    let id = d.trigger(&["web"]);
    let b = d.wait_for_state("web", id, "failed", 30);
    let reason = b["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("opus.yml: ")
            && reason.contains("jobs one and two both have `output`")
            && reason.contains("line 7"),
        "{reason}"
    );
}

#[test]
fn opusd_killed_while_a_stage_runs_fails_the_build_and_ends_its_jobs() {
    let mut d = Daemon::start();
    add_site(
        &d,
        "web",
        "pipeline:\n  - stage: test\n    jobs:\n      a: { steps: [\"setsid sleep 7421 > /dev/null 2>&1 & sleep 7422\"] }\n      b: { steps: [\"sleep 7423\"] }\n      site: { steps: [\"mkdir -p dist\"], output: dist }\n",
    );
    let id = d.trigger(&["web"]);
    for s in ["7421", "7422", "7423"] {
        wait_for_sleep(s);
    }
    d.wait_until_on_disk(
        &format!("{{\"id\":{id},\"project\":\"web\",\"state\":\"running\""),
        10,
    );
    d.kill();
    assert!(!sleeps("7422").is_empty() && !sleeps("7423").is_empty());
    d.restart();
    let b = d.wait_for_state("web", id, "failed", 30);
    assert_eq!(b["reason"], "opusd restarted");
    for s in ["7421", "7422", "7423"] {
        assert_gone(s);
    }
    assert!(
        !d.data_dir()
            .join("work")
            .join(format!("{id}.jobs"))
            .exists(),
        "the jobs' copies are removed at restart"
    );
}

#[test]
fn each_job_keeps_its_own_cache_between_builds() {
    let d = Daemon::start();
    let step = "if [ -f node_modules/seen ]; then echo cache-hit-$OPUS_JOB; else mkdir -p node_modules && touch node_modules/seen && echo cache-miss-$OPUS_JOB; fi";
    add_site(
        &d,
        "web",
        &format!(
            "cache: [node_modules]\npipeline:\n  - stage: test\n    jobs:\n      unit: {{ steps: [{step:?}] }}\n      lint: {{ steps: [{step:?}], cache: [] }}\n  - stage: build\n    jobs:\n      site: {{ steps: [{step:?}, \"mkdir -p dist\"], output: dist }}\n"
        ),
    );
    for (id, unit, lint, site) in [
        (1, "cache-miss-unit", "cache-miss-lint", "cache-miss-site"),
        (2, "cache-hit-unit", "cache-miss-lint", "cache-hit-site"),
    ] {
        assert_eq!(d.trigger(&["web"]), id);
        d.wait_for_state("web", id, "succeeded", 30);
        let log = d.opus(&["logs", &format!("web#{id}")]);
        let log = log.ok();
        for expected in [unit, lint, site] {
            assert!(log.contains(expected), "{expected} in {log}");
        }
    }
    assert!(
        d.data_dir()
            .join("cache/web/.jobs/unit/node_modules/seen")
            .is_file()
    );
}
