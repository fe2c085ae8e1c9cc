//! End-to-end tests: the real `opusd` and `opus` binaries. See `opus_tests` for the harness.

mod builds;
mod config;
mod hooks;
mod projects;
mod security;
mod vite;
mod webhooks;
