//! Prometheus metrics, served as text at `/metrics` on the API port.
//!
//! One [`Metrics`] per opusd, cloned into every part that counts something. The registry is
//! private to it (not the process-global one), so in-process tests running several daemons do
//! not mix their counts.

use axum::http::StatusCode;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Bounds of the build duration histogram, in seconds: from a one-file build (tens of
/// milliseconds) to the longest timeout people set (an hour).
const BUILD_SECONDS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The counters and gauges opusd exports.
#[derive(Clone)]
pub struct Metrics {
    /// Where every metric is registered.
    registry: Registry,
    /// `opus_site_requests_total{status}`: site requests answered, by HTTP status.
    site_requests: IntCounterVec,
    /// The counters of the common statuses, resolved once (a label lookup per request costs a
    /// hash and a lock).
    common: std::sync::Arc<[(u16, IntCounter)]>,
    /// `opus_deploys_total{reason}`: releases made (deploy, rollback, auto).
    pub deploys: IntCounterVec,
    /// `opus_builds{state}`: builds queued and running now, set by the scheduler.
    pub builds: IntGaugeVec,
    /// `opus_build_queue_depth`: builds waiting for a slot, set by the scheduler.
    pub queue_depth: IntGauge,
    /// `opus_builds_finished_total{state}`: builds that ended since opusd started, by final
    /// state (succeeded, failed, cancelled), counted by the scheduler.
    pub builds_finished: IntCounterVec,
    /// `opus_build_duration_seconds{state}`: from start to end of each build that ran, by final
    /// state.
    pub build_duration: HistogramVec,
    /// `opus_site_cache_bytes`: bytes in the site server's disk cache of remote versions.
    pub site_cache_bytes: IntGauge,
    /// `opus_site_cache_fetches_total`: files fetched from remote stores into the site cache.
    pub site_cache_fetches: IntCounter,
    /// `opus_site_cache_evictions_total`: files evicted from the site cache to keep its bound.
    pub site_cache_evictions: IntCounter,
    /// `opus_site_pointer_failures_total`: site pointer writes that failed (each is retried).
    pub site_pointer_failures: IntCounter,
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let site_requests = IntCounterVec::new(
            Opts::new(
                "opus_site_requests_total",
                "Site requests answered, by HTTP status.",
            ),
            &["status"],
        )
        .expect("a valid metric definition");
        let deploys = IntCounterVec::new(
            Opts::new("opus_deploys_total", "Releases made, by reason."),
            &["reason"],
        )
        .expect("a valid metric definition");
        let builds = IntGaugeVec::new(
            Opts::new("opus_builds", "Builds queued and running now, by state."),
            &["state"],
        )
        .expect("a valid metric definition");
        let queue_depth = IntGauge::new("opus_build_queue_depth", "Builds waiting for a slot.")
            .expect("a valid metric definition");
        let builds_finished = IntCounterVec::new(
            Opts::new(
                "opus_builds_finished_total",
                "Builds that ended since opusd started, by final state.",
            ),
            &["state"],
        )
        .expect("a valid metric definition");
        let build_duration = HistogramVec::new(
            HistogramOpts::new(
                "opus_build_duration_seconds",
                "Time from a build's start to its end, by final state.",
            )
            .buckets(BUILD_SECONDS.to_vec()),
            &["state"],
        )
        .expect("a valid metric definition");
        let site_cache_bytes = IntGauge::new(
            "opus_site_cache_bytes",
            "Bytes in the site server's disk cache of remote versions.",
        )
        .expect("a valid metric definition");
        let site_cache_fetches = IntCounter::new(
            "opus_site_cache_fetches_total",
            "Files fetched from remote artifact stores into the site cache.",
        )
        .expect("a valid metric definition");
        let site_cache_evictions = IntCounter::new(
            "opus_site_cache_evictions_total",
            "Files evicted from the site cache to keep it within its bound.",
        )
        .expect("a valid metric definition");
        let site_pointer_failures = IntCounter::new(
            "opus_site_pointer_failures_total",
            "Site pointer writes for site replicas that failed (each is retried until it lands).",
        )
        .expect("a valid metric definition");
        for c in [
            Box::new(site_pointer_failures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(site_requests.clone()),
            Box::new(deploys.clone()),
            Box::new(builds.clone()),
            Box::new(queue_depth.clone()),
            Box::new(builds_finished.clone()),
            Box::new(build_duration.clone()),
            Box::new(site_cache_bytes.clone()),
            Box::new(site_cache_fetches.clone()),
            Box::new(site_cache_evictions.clone()),
        ] {
            // Registering distinct names in a fresh registry cannot fail.
            let _ = registry.register(c);
        }
        for state in ["queued", "running"] {
            builds.with_label_values(&[state]).set(0);
        }
        for state in ["succeeded", "failed", "cancelled"] {
            builds_finished.with_label_values(&[state]).reset();
        }
        let common = [200u16, 206, 304, 404]
            .into_iter()
            .map(|code| {
                (
                    code,
                    site_requests.with_label_values(&[code.to_string().as_str()]),
                )
            })
            .collect();
        Metrics {
            registry,
            common,
            site_requests,
            deploys,
            builds,
            queue_depth,
            builds_finished,
            build_duration,
            site_cache_bytes,
            site_cache_fetches,
            site_cache_evictions,
            site_pointer_failures,
        }
    }

    /// Sets the build gauges: builds waiting for a slot and builds running.
    pub fn set_builds(&self, queued: usize, running: usize) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.builds.with_label_values(&["queued"]).set(n(queued));
        self.builds.with_label_values(&["running"]).set(n(running));
        self.queue_depth.set(n(queued));
    }

    /// Counts a build that ended in `state`, and its duration when it ran.
    pub fn build_finished(&self, state: &str, ran_for: Option<Duration>) {
        self.builds_finished.with_label_values(&[state]).inc();
        if let Some(d) = ran_for {
            self.build_duration
                .with_label_values(&[state])
                .observe(d.as_secs_f64());
        }
    }

    /// Counts one site request by its status.
    pub fn site_request(&self, status: StatusCode) {
        let code = status.as_u16();
        if let Some((_, c)) = self.common.iter().find(|(s, _)| *s == code) {
            c.inc();
            return;
        }
        self.site_requests
            .with_label_values(&[status.as_str()])
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
