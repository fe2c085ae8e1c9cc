//! A `pipeline:` on `opusd --executor kubernetes`, against the fake API server with the real
//! `opusd runner` run as a local process where each pod would run it: each job is its own Job,
//! the jobs of a stage are all created before any of them finishes, the next stage's Job comes
//! only once they succeeded, the job with `output` uploads the version, and the first failure
//! deletes its siblings' Jobs.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kubernetes_exec::{
    Cluster, JOBS, cluster, git_project, job_env, requests_to, run_job_locally,
};

const PIPELINE: &str = "pipeline:\n  - stage: test\n    jobs:\n      lint: { steps: [\"echo linted $OPUS_JOB\"] }\n      unit: { steps: [\"echo tested $OPUS_JOB\"], image: node:20-unit }\n  - stage: build\n    jobs:\n      site: { steps: [\"mkdir -p dist && echo \\\"<h1>$OPUS_VERSION</h1>\\\" > dist/index.html\"], output: dist }\nenvironments:\n  production: { branch: main, auto_deploy: true }\n";

fn path(build: u64, job: &str) -> String {
    format!("{JOBS}/opus-web-{build}-{job}")
}

/// Waits for the Job of `job` of build id `build`.
fn wait_for(c: &Cluster, build: u64, job: &str) -> Value {
    c.fake
        .wait_for_object(&path(build, job), 30)
        .unwrap_or_else(|| panic!("no Job for {job} within 30s\nopusd log:\n{}", c.d.log()))
}

/// The build id a Job belongs to (its `opus/build` label).
fn build_id_of(job: &Value) -> u64 {
    job["metadata"]["labels"]["opus/build"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an opus/build label")
}

/// Waits for the first Job of `job` of project web, whatever its build id.
fn first_job(c: &Cluster, job: &str) -> Value {
    let suffix = format!("-{job}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(p) = c
            .fake
            .paths()
            .into_iter()
            .find(|p| p.starts_with(&format!("{JOBS}/opus-web-")) && p.ends_with(&suffix))
            && let Some(found) = c.fake.object(&p)
        {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no Job for {job} within 30s\nopusd log:\n{}",
            c.d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fake_apiserver_each_pipeline_job_is_its_own_job_and_a_stages_jobs_are_created_together() {
    let c = cluster();
    let d = &c.d;
    git_project(d, "web", PIPELINE);
    let number = d.trigger(&["web"]);
    // Both jobs of `test` exist before either has run (no runner has started yet).
    let lint = first_job(&c, "lint");
    let id = build_id_of(&lint);
    let unit = wait_for(&c, id, "unit");
    assert!(
        c.fake.object(&path(id, "site")).is_none(),
        "stage build started before stage test ended"
    );
    assert_eq!(lint["metadata"]["labels"]["opus/job"], "lint");
    assert_eq!(
        unit["spec"]["template"]["spec"]["containers"][0]["image"],
        "node:20-unit"
    );
    let (lint_env, unit_env) = (job_env(&lint), job_env(&unit));
    assert_ne!(lint_env["OPUS_RUNNER_TOKEN"], unit_env["OPUS_RUNNER_TOKEN"]);
    assert_ne!(lint_env["OPUS_RUNNER_BUILD"], unit_env["OPUS_RUNNER_BUILD"]);

    // Their runners, at once, as two pods would run.
    let ran = std::thread::scope(|s| {
        let runs: Vec<_> = [&lint, &unit]
            .into_iter()
            .map(|job| {
                s.spawn(|| {
                    let workspace = tempfile::tempdir().expect("workspace");
                    run_job_locally(&c, job, workspace.path())
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("runner thread"))
            .collect::<Vec<_>>()
    });
    for run in &ran {
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    // Then the output job's Job; its runner uploads the version.
    let site = wait_for(&c, id, "site");
    let workspace = tempfile::tempdir().expect("workspace");
    let run = run_job_locally(&c, &site, workspace.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b = d.wait_for_state("web", number, "succeeded", 30);
    let version = b["version"].as_str().expect("version").to_owned();
    assert_eq!(
        d.get("web.localhost", "/").text(),
        format!("<h1>{version}</h1>\n")
    );
    let unit_log = d.opus(&["logs", &format!("web#{number}"), "--job", "unit"]);
    assert!(unit_log.ok().contains("tested unit"), "{}", unit_log.stdout);
    assert!(!unit_log.stdout.contains("linted"), "{}", unit_log.stdout);
}

#[test]
fn fake_apiserver_the_first_failing_job_deletes_its_siblings_jobs() {
    let c = cluster();
    let d = &c.d;
    git_project(
        d,
        "web",
        "pipeline:\n  - stage: test\n    jobs:\n      bad: { steps: [\"echo broken; exit 4\"] }\n      slow: { steps: [\"sleep 600\"] }\n  - stage: build\n    jobs:\n      site: { steps: [\"mkdir -p dist\"], output: dist }\n",
    );
    let number = d.trigger(&["web"]);
    let bad = first_job(&c, "bad");
    let id = build_id_of(&bad);
    wait_for(&c, id, "slow");
    let workspace = tempfile::tempdir().expect("workspace");
    let run = run_job_locally(&c, &bad, workspace.path());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let b = d.wait_for_state("web", number, "failed", 30);
    let reason = b["reason"].as_str().expect("reason");
    assert!(reason.contains("bad"), "{reason}");
    assert_eq!(
        requests_to(&c.fake, "DELETE", &path(id, "slow")).len(),
        1,
        "the sibling's Job is deleted\n{}",
        c.d.log()
    );
    assert!(c.fake.object(&path(id, "slow")).is_none());
    assert!(c.fake.object(&path(id, "site")).is_none(), "no next stage");
}

#[test]
fn fake_apiserver_opusd_killed_while_a_stage_runs_fails_the_build_and_deletes_every_job() {
    let mut c = cluster();
    git_project(&c.d, "web", PIPELINE);
    let number = c.d.trigger(&["web"]);
    let lint = first_job(&c, "lint");
    let id = build_id_of(&lint);
    wait_for(&c, id, "unit");
    c.d.wait_until_on_disk(
        &format!("{{\"id\":{id},\"project\":\"web\",\"state\":\"running\""),
        30,
    );
    c.d.kill();
    c.d.restart();
    let b = c.d.wait_for_state("web", number, "failed", 30);
    assert_eq!(b["reason"], "opusd restarted");
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.fake.object(&path(id, "lint")).is_some() || c.fake.object(&path(id, "unit")).is_some() {
        assert!(
            Instant::now() < deadline,
            "the stage's Jobs were not deleted:\n{}",
            c.d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
