//! Test harness.

pub mod fake_apiserver;
