//! End-to-end tests: the real `opusd` and `opus` binaries. See `opus_tests` for the harness.

mod artifacts;
mod auto_deploys;
mod builds;
mod config;
mod dashboard;
mod dashboard_browser;
mod deploys;
mod disk_full;
mod env_locks;
mod hooks;
mod kubernetes;
mod kubernetes_cli;
mod kubernetes_exec;
mod metrics;
mod pipelines;
mod processes;
mod projects;
mod s3;
mod security;
mod site_access;
mod site_rules;
mod store_s3;
mod terminal;
mod version;
mod vite;
mod webhooks;
