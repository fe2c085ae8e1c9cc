//! Benchmark (not a test): 200 signed GitHub push deliveries per second for 10 seconds against a
//! project whose build is one fast step. Checks that every delivery is answered 202 with its own
//! build (none lost, none duplicated), that a redelivery of each is ignored, and prints the p99
//! answer time. Run with `cargo run --release -p opus-tests --example github_pushes`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use opus_tests::{Daemon, site_with_opus_yml};
use sha2::Sha256;

const RATE: usize = 200;
const SECONDS: usize = 10;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let d = Daemon::start_with(&["--max-builds", "2"]);
    let dir = site_with_opus_yml(
        d.root.path(),
        "web",
        "build:\n  steps: [\"mkdir -p dist && echo hi > dist/index.html\"]\n",
    );
    d.opus(&["add", "web", dir.to_str().expect("utf-8")]).ok();
    let hook = d.opus(&["hook", "github", "web", "-o", "json"]).json();
    let url = hook["url"].as_str().expect("url").to_owned();
    let secret = hook["secret"].as_str().expect("secret").to_owned();
    let client = reqwest::Client::new();
    let total = RATE * SECONDS;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / RATE as f64);
        tokio::time::sleep_until(due.into()).await;
        // Distinct branches, so no push supersedes another's queued build.
        let body = format!(r#"{{"ref":"refs/heads/b{i}","after":"{i:040x}"}}"#);
        let sig = sign(&secret, body.as_bytes());
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = vec![];
            for _ in 0..2 {
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("delivery-{i}"))
                    .header("x-hub-signature-256", &sig)
                    .body(body.clone())
                    .send()
                    .await;
                let took = t.elapsed();
                let (status, json) = match resp {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.json::<serde_json::Value>().await.unwrap_or_default(),
                    ),
                    Err(_) => (0, serde_json::Value::Null),
                };
                out.push((status, json["build"].as_u64(), took));
            }
            out
        }));
    }
    let mut times = vec![];
    let mut builds = HashSet::new();
    let (mut accepted, mut repeats_ignored, mut other) = (0, 0, 0);
    for t in tasks {
        let Ok(r) = t.await else { continue };
        match (r[0].0, r[0].1) {
            (202, Some(id)) => {
                accepted += 1;
                builds.insert(id);
            }
            _ => other += 1,
        }
        if r[1].0 == 200 {
            repeats_ignored += 1;
        }
        times.extend(r.iter().map(|x| x.2.as_secs_f64() * 1000.0));
    }
    times.sort_by(f64::total_cmp);
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "{total} pushes at {RATE}/s in {:.1}s: {accepted} accepted, {} distinct builds, {repeats_ignored} redeliveries ignored, {other} other; answer time median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        start.elapsed().as_secs_f64(),
        builds.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}
