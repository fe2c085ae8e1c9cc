//! Pipeline overhead, against the real release `opusd`: trigger -> finished of a two-stage,
//! three-job pipeline of trivial steps (`lint` and `unit` in parallel, then `site` writing
//! `dist/index.html`), against the same three steps as one job (`build:`), local source.
//! Medians (and p90) over 30 builds of each, alternating, one build at a time.
//!
//! Run: `cargo bench -p opus-server --bench pipelines` (or `bench/pipelines.sh`).
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
    let recipes = [
        (
            "one",
            format!("build:\n  steps: [\"true\", \"true\", \"{WRITE}\"]\n"),
        ),
        (
            "pipe",
            format!(
                "pipeline:\n  - stage: test\n    jobs:\n      lint: {{ steps: [\"true\"] }}\n      unit: {{ steps: [\"true\"] }}\n  - stage: build\n    jobs:\n      site: {{ steps: [\"{WRITE}\"], output: dist }}\n"
            ),
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
    // Warm up (page cache, first spawn).
    for i in 0..3 {
        for (name, _) in &recipes {
            timed(&mut builds, &mut events, name, &format!("warm{i}")).await;
        }
    }
    let mut one = Vec::new();
    let mut pipe = Vec::new();
    for i in 0..30 {
        one.push(timed(&mut builds, &mut events, "one", &format!("lat{i}")).await);
        pipe.push(timed(&mut builds, &mut events, "pipe", &format!("lat{i}")).await);
    }
    one.sort();
    pipe.sort();
    let (m1, m2) = (percentile(&one, 0.5), percentile(&pipe, 0.5));
    println!(
        "trigger -> finished, 30 builds each, alternating: three steps as one job (build:) median {:.1} ms, p90 {:.1} ms; the same steps as a two-stage, three-job pipeline median {:.1} ms, p90 {:.1} ms; overhead {:+.1} ms",
        ms(m1),
        ms(percentile(&one, 0.9)),
        ms(m2),
        ms(percentile(&pipe, 0.9)),
        ms(m2) - ms(m1)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
