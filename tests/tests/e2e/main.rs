//! End-to-end tests: the real `opusd` and `opus` binaries. See `opus_tests` for the harness.

mod artifacts;
mod builds;
mod config;
mod kubernetes;
mod kubernetes_cli;
mod deploys;
mod projects;
mod s3;
mod security;
mod vite;
