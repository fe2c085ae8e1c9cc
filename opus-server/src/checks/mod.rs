//! Running opus.yml's checks (`checks:`) against a URL: a stored version's own URL before any
//! environment moves to it (`crate::build::gate`), and an environment's URL for a while after
//! a deploy (`crate::verify`).
//!
//! A shell check runs its steps as a build's steps run ([`crate::build::steps::run_steps`]:
//! `sh -c` per step, every process it starts tracked by [`crate::process_tree`] and killed at
//! its end or its timeout), with `OPUS_URL` set to the URL checked. The built-in `http` check
//! (`http`) makes one GET. Either way its lines go to a [`LogSink`] under `check <name>/`, and
//! the last of them are kept ([`OutputTail`]) for the event a failure appends.

mod http;
mod tail;

use std::collections::BTreeMap;
use std::path::Path;

use opus_core::recipe::checks::{Check, CheckKind};
use tokio_util::sync::CancellationToken;

use crate::build::steps::{LogSink, StepFailure, run_steps};
use crate::process_tree::Containment;

pub use tail::OutputTail;

/// The environment variable a shell check finds the URL it checks in.
pub const URL_ENV: &str = "OPUS_URL";

/// How a check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// It passed.
    Passed,
    /// It failed: why, in one line, and the end of its output.
    Failed {
        /// Why.
        reason: String,
        /// The last lines of its output.
        output: String,
    },
    /// It was cancelled (the build was).
    Cancelled,
}

/// Where a check runs: the folder a shell check starts in (its processes are the processes of
/// that folder's scope: see `process_tree`), how they are kept together, and the environment
/// of its steps (`OPUS_URL` is added).
pub struct CheckPlace<'a> {
    /// The folder.
    pub dir: &'a Path,
    /// How its processes are kept together.
    pub containment: Containment,
    /// The steps' environment.
    pub env: &'a BTreeMap<String, String>,
}

/// Runs `check` against `url` at `place`, its lines to `log` under `check <name>`, until it
/// ends, its timeout passes, or `cancel`.
pub async fn run_check<L: LogSink>(
    check: &Check,
    url: &str,
    place: &CheckPlace<'_>,
    log: &L,
    cancel: &CancellationToken,
) -> CheckOutcome {
    let label = format!("check {}", check.name);
    let tail = OutputTail::new(log.clone(), label.clone());
    let result = match &check.kind {
        CheckKind::Shell(steps) => {
            let mut env = place.env.clone();
            env.insert(URL_ENV.to_owned(), url.to_owned());
            run_steps(
                steps,
                place.dir,
                &env,
                &tail,
                cancel,
                check.timeout,
                place.containment,
            )
            .await
            .map_err(|failure| match failure {
                StepFailure::Cancelled => None,
                StepFailure::TimedOut(limit) => Some(format!(
                    "timed out after {} (checks.{}.timeout in opus.yml)",
                    humantime::format_duration(limit),
                    check.name
                )),
                other => Some(other.to_string()),
            })
        }
        CheckKind::Http(spec) => {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(None),
                r = tokio::time::timeout(check.timeout, http::get(spec, url, &tail)) => {
                    match r {
                        Ok(r) => r.map_err(Some),
                        Err(_) => Err(Some(format!(
                            "timed out after {} (checks.{}.timeout in opus.yml)",
                            humantime::format_duration(check.timeout),
                            check.name
                        ))),
                    }
                }
            }
        }
    };
    match result {
        Ok(()) => {
            log.opus(&format!("{label}/check"), "passed");
            CheckOutcome::Passed
        }
        Err(None) => CheckOutcome::Cancelled,
        Err(Some(reason)) => {
            log.opus(&format!("{label}/check"), &format!("failed: {reason}"));
            CheckOutcome::Failed {
                reason,
                output: tail.text(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
