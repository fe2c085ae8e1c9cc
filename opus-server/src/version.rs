//! Which build this opusd is: the crate version and the git commit it was built from (set by
//! build.rs through opus-build-info). `opusd --version` prints [`LONG`]; `GetServerInfo` reports
//! [`VERSION`] and [`COMMIT`] so that `opus status` can warn when the CLI is another build.

/// The crate version, `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit, 12 hex digits, or `unknown` for a build made without git.
pub const COMMIT: &str = env!("OPUS_COMMIT");

/// What `opusd --version` prints after the name: `0.1.0 (commit 5049aab1c2d3)`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OPUS_COMMIT"),
    ")"
);
