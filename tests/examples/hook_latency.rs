//! Benchmark (not a test): latency from a state change (the event's commit time) to its arrival at
//! a hook receiver, through the real opusd. Run with
//! `cargo run --release -p opus-tests --example hook_latency` after `cargo build --release`
//! (it uses the binaries next to it).

use std::time::Duration;

use opus_tests::Daemon;
use opus_tests::receiver::Receiver;

fn main() {
    let rx = Receiver::start();
    let d = Daemon::start();
    d.opus(&["add", "web", "https://example.com/site.git"]).ok();
    d.opus(&["hook", "add", "web", &rx.url(), "--events", "secret.set"])
        .ok();
    let n = 100;
    for i in 0..n {
        d.opus(&["secret", "set", "web", &format!("S{i}"), "--value", "xxxx"])
            .ok();
    }
    let got = rx.wait_for(Duration::from_secs(60), |g| g.len() >= n);
    let mut lat: Vec<f64> = got
        .iter()
        .filter_map(|r| {
            let t = r.json()["time"].as_str()?.to_owned();
            let at = humantime::parse_rfc3339(&t).ok()?;
            Some(r.at.duration_since(at).ok()?.as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
    println!(
        "state change -> hook receiver, {} events: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}
