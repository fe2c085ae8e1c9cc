//! What checks before promotion (opus.yml `checks:`) cost, against the real `opusd`:
//! trigger -> finished of a build whose one step writes `dist/index.html`, without checks,
//! with one built-in `http` check (a GET of the version's own URL through the site server,
//! `contains` tested), and with one shell check (`curl -fsS $OPUS_URL`). Medians (and p90)
//! over 30 builds of each, alternating, one build at a time; every build deploys to
//! production, so the checks run before a real promotion.
//!
//! Run: `cargo bench -p opus-server --bench checks` (or `bench/checks.sh`; `bench/checks.sh
//! --debug` measures the debug build, without a release build).
//! `OPUS_BENCH_OPUSD=/path/to/opusd` measures another opusd binary with the same client.

use std::time::{Duration, Instant};

use opus_core::proto::project_service_client::ProjectServiceClient;
use opus_core::proto::{
    self, build_service_client::BuildServiceClient, event_service_client::EventServiceClient,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

mod daemon;

const WRITE: &str = "mkdir -p dist && echo '<h1>hi</h1>' > dist/index.html";

/// Waits for the next build end event after `from`; returns when it arrived.
async fn wait_for_end(events: &mut EventServiceClient<Channel>, from: u64) -> Instant {
    let mut stream = events
        .watch_events(proto::WatchEventsRequest {
            from,
            project: String::new(),
            follow: true,
            tail: None,
        })
        .await
        .expect("watch")
        .into_inner();
    while let Some(e) = stream.next().await {
        let e = e.expect("event");
        match e.r#type.as_str() {
            "build.succeeded" => return Instant::now(),
            "build.failed" | "build.cancelled" => {
                panic!("a benchmark build did not succeed: {}", e.payload_json)
            }
            _ => {}
        }
    }
    panic!("the event stream ended");
}

async fn last_seq(events: &mut EventServiceClient<Channel>) -> u64 {
    let mut stream = events
        .watch_events(proto::WatchEventsRequest {
            from: 0,
            project: String::new(),
            follow: false,
            tail: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut last = 0;
    while let Some(e) = stream.next().await {
        last = e.expect("event").seq;
    }
    last
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One build of `project`, trigger -> finished.
async fn timed(
    builds: &mut BuildServiceClient<Channel>,
    events: &mut EventServiceClient<Channel>,
    project: &str,
    version: &str,
) -> Duration {
    let from = last_seq(events).await + 1;
    let mut watcher = events.clone();
    let waiter = tokio::spawn(async move { wait_for_end(&mut watcher, from).await });
    // Let the watcher subscribe before the clock starts.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t0 = Instant::now();
    builds
        .trigger_build(proto::TriggerBuildRequest {
            project: project.into(),
            r#ref: String::new(),
            version: version.into(),
            store: String::new(),
        })
        .await
        .expect("trigger");
    waiter.await.expect("waiter") - t0
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let envs = "environments:\n  production: { branch: main, auto_deploy: true }\n";
    let build = format!("build:\n  steps: [\"{WRITE}\"]\n{envs}");
    let recipes = [
        ("plain", build.clone()),
        (
            "http",
            format!(
                "{build}checks:\n  root: {{ http: {{ path: /, status: 200, contains: \"<h1>hi</h1>\" }} }}\n"
            ),
        ),
        (
            "shell",
            format!("{build}checks:\n  smoke: {{ run: \"curl -fsS $OPUS_URL\" }}\n"),
        ),
    ];
    let (_daemon, server, _) = daemon::start(
        &tmp.path().join("data"),
        &["--max-builds", "4"],
        Duration::from_secs(20),
    );
    let channel = Channel::from_shared(server)
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut projects = ProjectServiceClient::new(channel.clone());
    let mut builds = BuildServiceClient::new(channel.clone());
    let mut events = EventServiceClient::new(channel);
    for (name, recipe) in &recipes {
        let site = tmp.path().join(name);
        std::fs::create_dir(&site).expect("mkdir");
        std::fs::write(site.join("opus.yml"), recipe).expect("write");
        projects
            .create_project(proto::CreateProjectRequest {
                name: (*name).into(),
                source: site.display().to_string(),
                branch: String::new(),
            })
            .await
            .expect("project");
    }
    // Warm up (page cache, first spawn, first connection).
    for i in 0..3 {
        for (name, _) in &recipes {
            timed(&mut builds, &mut events, name, &format!("warm{i}")).await;
        }
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); recipes.len()];
    for i in 0..30 {
        for (n, (name, _)) in recipes.iter().enumerate() {
            times[n].push(timed(&mut builds, &mut events, name, &format!("lat{i}")).await);
        }
    }
    for t in &mut times {
        t.sort();
    }
    let median = |n: usize| ms(percentile(&times[n], 0.5));
    let p90 = |n: usize| ms(percentile(&times[n], 0.9));
    println!(
        "trigger -> finished, 30 builds each, alternating, each deploying to production: no checks median {:.1} ms, p90 {:.1} ms; one http check median {:.1} ms, p90 {:.1} ms ({:+.1} ms); one shell check (curl $OPUS_URL) median {:.1} ms, p90 {:.1} ms ({:+.1} ms)",
        median(0),
        p90(0),
        median(1),
        p90(1),
        median(1) - median(0),
        median(2),
        p90(2),
        median(2) - median(0),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
