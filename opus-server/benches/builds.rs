//! Build benchmark (DESIGN.md "Performance targets"), against the real release `opusd`:
//!
//! 1. trigger -> finished for a build whose one step writes `dist/index.html` from a local
//!    source: median (and p90) over 50 builds, one at a time;
//! 2. 200 such builds at `--max-builds 4`: builds per second.
//!
//! Run: `cargo bench -p opus-server --bench builds` (or `bench/builds.sh`).
//! `OPUS_BENCH_LOG=info` passes opusd's log through (timestamps for profiling);
//! `OPUS_BENCH_OPUSD=/path/to/opusd` measures another opusd binary with the same client.

use std::time::{Duration, Instant};

use opus_core::proto::project_service_client::ProjectServiceClient;
use opus_core::proto::{
    self, build_service_client::BuildServiceClient, event_service_client::EventServiceClient,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

mod daemon;

/// Waits for `count` build end events after `from`; returns when the last one arrived.
async fn wait_for_ends(
    events: &mut EventServiceClient<Channel>,
    from: u64,
    count: usize,
) -> Instant {
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
    let mut seen = 0;
    while let Some(e) = stream.next().await {
        let e = e.expect("event");
        match e.r#type.as_str() {
            "build.succeeded" => seen += 1,
            "build.failed" | "build.cancelled" => {
                panic!("a benchmark build did not succeed: {}", e.payload_json)
            }
            _ => {}
        }
        if seen == count {
            break;
        }
    }
    Instant::now()
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

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let site = tmp.path().join("site");
    std::fs::create_dir(&site).expect("mkdir");
    std::fs::write(
        site.join("opus.yml"),
        "build:\n  steps: [\"mkdir -p dist && echo '<h1>hi</h1>' > dist/index.html\"]\n",
    )
    .expect("write");
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
    projects
        .create_project(proto::CreateProjectRequest {
            name: "bench".into(),
            source: site.display().to_string(),
            branch: String::new(),
        })
        .await
        .expect("project");

    // Warm up (page cache, first spawn).
    for i in 0..5 {
        let from = last_seq(&mut events).await + 1;
        trigger(&mut builds, &format!("warm{i}")).await;
        wait_for_ends(&mut events, from, 1).await;
    }

    // 1. Latency, one build at a time.
    let mut times = Vec::with_capacity(50);
    for i in 0..50 {
        let from = last_seq(&mut events).await + 1;
        let mut watcher = events.clone();
        let waiter = tokio::spawn(async move { wait_for_ends(&mut watcher, from, 1).await });
        // Let the watcher subscribe before the clock starts.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t0 = Instant::now();
        trigger(&mut builds, &format!("lat{i}")).await;
        let done = waiter.await.expect("waiter");
        times.push(done - t0);
    }
    times.sort();
    let median = percentile(&times, 0.5);
    println!(
        "trigger -> finished (50 builds, one at a time): median {:.1} ms, p90 {:.1} ms, min {:.1} ms (target < 20 ms; buildbot ~330 ms: {:.0}x faster)",
        ms(median),
        ms(percentile(&times, 0.9)),
        ms(times[0]),
        330.0 / ms(median)
    );

    // 2. Throughput, 200 builds at --max-builds 4.
    let from = last_seq(&mut events).await + 1;
    let mut watcher = events.clone();
    let waiter = tokio::spawn(async move { wait_for_ends(&mut watcher, from, 200).await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t0 = Instant::now();
    for i in 0..200 {
        trigger(&mut builds, &format!("tp{i}")).await;
    }
    let done = waiter.await.expect("waiter");
    let secs = (done - t0).as_secs_f64();
    println!(
        "200 builds, --max-builds 4: {:.2} s, {:.0} builds/s (target > 100/s; buildbot ~3.6/s: {:.0}x)",
        secs,
        200.0 / secs,
        200.0 / secs / 3.6
    );
}

async fn trigger(builds: &mut BuildServiceClient<Channel>, version: &str) {
    builds
        .trigger_build(proto::TriggerBuildRequest {
            project: "bench".into(),
            r#ref: String::new(),
            version: version.into(),
            store: String::new(),
        })
        .await
        .expect("trigger");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
