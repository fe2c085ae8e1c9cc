//! End-to-end tests: the real `opusd` and `opus` binaries. See `opus_tests` for the harness.

mod config;
mod deploys;
mod projects;
mod security;
