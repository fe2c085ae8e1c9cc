//! End-to-end tests: the real `opusd` and `opus` binaries. See `opus_tests` for the harness.

mod artifacts;
mod auto_deploys;
mod builds;
mod config;
mod dashboard;
mod dashboard_browser;
mod deploys;
mod disk_full;
mod github;
mod hooks;
mod kubernetes;
mod kubernetes_cli;
mod kubernetes_exec;
mod metrics;
mod processes;
mod projects;
mod s3;
mod security;
mod store_s3;
mod terminal;
mod vite;
mod webhooks;
