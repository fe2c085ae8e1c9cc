//! Benchmark (not a test), run by `bench/github.sh`:
//!
//! 1. 200 signed GitHub `pull_request` deliveries per second for 10 seconds (each `opened` for
//!    its own pull request, then each delivered a second time, as GitHub's redelivery does):
//!    every first delivery must be answered 202 with its own build (none lost, none
//!    duplicated) and every repeat 200 (ignored); prints the answer time's median, p99 and max.
//!    The base branch's opus.yml has no `pull_requests:`, so each build ends early as skipped,
//!    after resolving the base (what a refused pull request costs).
//! 2. The time from a build's end (its `finished_at`) to its `success` commit status reaching a
//!    fake GitHub API (`opus_tests::fake_github`): median, p90 and max over 30 builds of GitHub
//!    pushes, one at a time.
//!
//! Run: `cargo run --release -p opus-tests --example github_prs` (or without `--release`).

use std::collections::HashSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use opus_tests::fake_github::FakeGithub;
use opus_tests::{Daemon, GitRepo};
use serde_json::json;
use sha2::Sha256;

const RATE: usize = 200;
const SECONDS: usize = 10;
const STATUS_BUILDS: usize = 30;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// A project `web` on a git repository whose main holds `opus_yml`; its webhook URL, secret and
/// main's commit.
fn project(d: &Daemon, opus_yml: &str) -> (GitRepo, String, String, String) {
    let repo = GitRepo::init(&d.root.path().join("repo"));
    repo.write("opus.yml", opus_yml);
    repo.write("index.txt", "hi\n");
    let sha = repo.commit("first");
    d.opus(&["add", "web", &repo.url()]).ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    (repo, format!("{}/hooks/github/web", d.server), secret, sha)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    pull_request_deliveries().await;
    status_latency().await;
}

async fn pull_request_deliveries() {
    let d = Daemon::start_with(&["--max-builds", "2"]);
    let (_repo, url, secret, sha) = project(
        &d,
        "build:\n  steps: [\"mkdir -p dist && cp index.txt dist/index.html\"]\n",
    );
    let client = reqwest::Client::new();
    let total = RATE * SECONDS;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / RATE as f64);
        tokio::time::sleep_until(due.into()).await;
        let number = i + 1;
        let body = serde_json::to_vec(&json!({
            "action": "opened",
            "number": number,
            "pull_request": {
                "number": number,
                "draft": false,
                "labels": [],
                "head": { "sha": sha, "ref": format!("pr{number}"), "repo": { "full_name": "acme/web" } },
                "base": { "ref": "main", "repo": { "full_name": "acme/web" } }
            },
            "repository": { "full_name": "acme/web" }
        }))
        .expect("JSON");
        let sig = sign(&secret, &body);
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = vec![];
            for _ in 0..2 {
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("x-github-event", "pull_request")
                    .header("x-github-delivery", format!("pr-delivery-{number}"))
                    .header("x-hub-signature-256", &sig)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let took = t.elapsed();
                let (status, answer) = match resp {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.json::<serde_json::Value>().await.unwrap_or_default(),
                    ),
                    Err(_) => (0, serde_json::Value::Null),
                };
                out.push((status, answer["build"].as_u64(), took));
            }
            out
        }));
    }
    let sent_in = start.elapsed();
    let mut times = vec![];
    let mut builds = HashSet::new();
    let (mut accepted, mut repeats_ignored, mut other) = (0, 0, 0);
    // What the deliveries not accepted got: HTTP status (0: no answer) -> how many.
    let mut refused = std::collections::BTreeMap::<u16, usize>::new();
    for t in tasks {
        let Ok(r) = t.await else {
            other += 1;
            continue;
        };
        match (r[0].0, r[0].1) {
            (202, Some(n)) => {
                accepted += 1;
                builds.insert(n);
            }
            (status, _) => {
                other += 1;
                *refused.entry(status).or_default() += 1;
            }
        }
        if r[1].0 == 200 && r[1].1.is_none() {
            repeats_ignored += 1;
        }
        times.extend(r.iter().map(|x| x.2.as_secs_f64() * 1000.0));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{total} pull_request deliveries at {RATE}/s (sent in {:.1} s), each delivered twice: {accepted} accepted, {} distinct builds, {repeats_ignored} repeats ignored, {other} other (lost: {}, duplicated: {}); answer time median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sent_in.as_secs_f64(),
        builds.len(),
        total - accepted,
        accepted - builds.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    );
    if !refused.is_empty() {
        println!("  first deliveries not accepted, by HTTP status (0: no answer): {refused:?}");
    }
}

async fn status_latency() {
    let fake = FakeGithub::start();
    let d = Daemon::start_with(&[
        "--github-api-url",
        fake.url.as_str(),
        "--public-url",
        "http://opus.bench",
    ]);
    let (_repo, url, secret, sha) = project(
        &d,
        "build:\n  steps: [\"mkdir -p dist && cp index.txt dist/index.html\"]\n",
    );
    let token = d.root.path().join("github-token");
    std::fs::write(&token, "ghp_bench\n").expect("token file");
    d.opus(&[
        "github",
        "connect",
        "--token-file",
        token.to_str().expect("utf-8"),
    ])
    .ok();
    let channel = tonic::transport::Endpoint::from_shared(d.server.clone())
        .expect("the API's URL")
        .connect()
        .await
        .expect("connect");
    let mut grpc = opus_core::proto::build_service_client::BuildServiceClient::new(channel);
    let client = reqwest::Client::new();
    let mut lags = Vec::with_capacity(STATUS_BUILDS);
    for i in 0..STATUS_BUILDS {
        let body = serde_json::to_vec(&json!({
            "ref": "refs/heads/main",
            "after": sha,
            "repository": { "full_name": "acme/web" }
        }))
        .expect("JSON");
        let answer: serde_json::Value = client
            .post(&url)
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("status-{i}"))
            .header("x-hub-signature-256", sign(&secret, &body))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("delivered")
            .json()
            .await
            .expect("JSON");
        let number = answer["build"].as_u64().expect("a build");
        let page = format!("/builds/{number}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let received = loop {
            let got = fake.calls().into_iter().find(|c| {
                c.body["state"] == "success"
                    && c.body["target_url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(&page))
            });
            if let Some(call) = got {
                break call.received;
            }
            assert!(
                Instant::now() < deadline,
                "no success status for web#{number} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let build = grpc
            .get_build(opus_core::proto::GetBuildRequest {
                id: 0,
                project: "web".into(),
                number,
            })
            .await
            .expect("GetBuild")
            .into_inner();
        let finished = build.finished_at.expect("a finished build");
        let finished = UNIX_EPOCH
            + Duration::new(
                u64::try_from(finished.seconds).expect("after 1970"),
                u32::try_from(finished.nanos).expect("nanos"),
            );
        let lag = received.duration_since(finished).unwrap_or(Duration::ZERO);
        lags.push(lag.as_secs_f64() * 1000.0);
    }
    lags.sort_by(f64::total_cmp);
    println!(
        "build end -> its success status at the fake GitHub ({STATUS_BUILDS} builds, one at a time): median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        percentile(&lags, 0.5),
        percentile(&lags, 0.9),
        percentile(&lags, 1.0)
    );
}
