//! Prometheus metrics, served as text at `/metrics` on the API port.
//!
//! One [`Metrics`] per opusd, cloned into every part that counts something. The registry is
//! private to it (not the process-global one), so in-process tests running several daemons do
//! not mix their counts.

use axum::http::StatusCode;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

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
    /// `opus_builds{state}`: builds by state, set by the scheduler.
    pub builds: IntGaugeVec,
    /// `opus_build_queue_depth`: builds waiting for a slot, set by the scheduler.
    pub queue_depth: IntGauge,
    /// `opus_builds_finished_total`: builds that ended, set by the scheduler.
    pub builds_finished: IntCounter,
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
        let builds = IntGaugeVec::new(Opts::new("opus_builds", "Builds by state."), &["state"])
            .expect("a valid metric definition");
        let queue_depth = IntGauge::new("opus_build_queue_depth", "Builds waiting for a slot.")
            .expect("a valid metric definition");
        let builds_finished = IntCounter::new("opus_builds_finished_total", "Builds that ended.")
            .expect("a valid metric definition");
        for c in [
            Box::new(site_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(deploys.clone()),
            Box::new(builds.clone()),
            Box::new(queue_depth.clone()),
            Box::new(builds_finished.clone()),
        ] {
            // Registering distinct names in a fresh registry cannot fail.
            let _ = registry.register(c);
        }
        for state in ["queued", "running", "succeeded", "failed", "cancelled"] {
            builds.with_label_values(&[state]).set(0);
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
