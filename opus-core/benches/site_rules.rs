//! Benchmark (not a test): the per-request cost of a version's redirect and header rules.
//!
//! Usage: `cargo bench -p opus-core --no-default-features --bench site_rules`
//!
//! Prints the median time per request of matching a path against 0 and 50 redirect rules (the
//! path matching none, the worst case: every rule is tried; and matching the last one, with a
//! splat to fill), and of collecting the headers of 50 header rules.

use std::hint::black_box;
use std::time::{Duration, Instant};

use opus_core::site_rules::{SiteRules, parse_headers, parse_redirects};

const ROUNDS: u32 = 200_000;

fn median_ns(mut run: impl FnMut()) -> f64 {
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..ROUNDS {
                run();
            }
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2].as_nanos() as f64 / f64::from(ROUNDS)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut redirects = String::new();
    for i in 0..49 {
        redirects.push_str(&format!(
            "/section-{i}/:slug/* /moved-{i}/:slug/:splat 301\n"
        ));
    }
    redirects.push_str("/last/* /final/:splat 302\n");
    let mut headers = String::new();
    for i in 0..49 {
        headers.push_str(&format!("/section-{i}/*\n  X-Section: {i}\n"));
    }
    headers.push_str("/*\n  X-Frame-Options: DENY\n");
    let none = SiteRules::default().compile();
    let fifty = SiteRules {
        redirects: parse_redirects(&redirects, "_redirects")?,
        headers: parse_headers(&headers, "_headers")?,
    }
    .compile();

    let path = "/assets/app.3f9a1c2b.js";
    let base = median_ns(|| {
        black_box(none.redirect(black_box(path), None));
    });
    let miss = median_ns(|| {
        black_box(fifty.redirect(black_box(path), None));
    });
    let last = median_ns(|| {
        black_box(fifty.redirect(black_box("/last/a/b/c"), Some("x=1")));
    });
    let hdrs = median_ns(|| {
        black_box(fifty.headers(black_box(path)));
    });
    println!("redirect, 0 rules:                 {base:8.1} ns/request");
    println!("redirect, 50 rules, none matching: {miss:8.1} ns/request");
    println!("redirect, 50 rules, the last one:  {last:8.1} ns/request");
    println!("headers, 50 rules:                 {hdrs:8.1} ns/request");
    Ok(())
}
