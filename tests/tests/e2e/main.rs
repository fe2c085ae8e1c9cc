//! End-to-end tests: the real `opusd` and `opus` binaries. See `opus_tests` for the harness.

mod artifacts;
mod config;
mod deploys;
mod projects;
mod s3;
mod security;
