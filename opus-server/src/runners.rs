//! Builds running elsewhere (`opusd runner` in a Kubernetes Job), as opusd knows them: each has
//! its own random token, its assignment, its log, and a channel to the task that waits for its
//! end. [`Runners::register`] gives a build its token; dropping the [`Registration`] when the build
//! ends revokes it. `RunnerService` ([`crate::api`]) admits a call only when it names a registered
//! build and presents that build's token ([`Runners::authorize`], constant-time compare).
//!
//! Architecture Invariant: a build token opens `RunnerService` for its own build only, and only
//! while the build runs; it opens no other service (they check the API token), and the API token
//! does not open `RunnerService`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use opus_core::proto;
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::logs::BuildLog;

/// The metadata key naming the build of a `PushLogs` stream (which has no request message).
pub const BUILD_ID_METADATA: &str = "opus-build-id";

/// Bytes of randomness in a build token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;

/// Why a runner call is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RunnerAuthError {
    /// No `authorization: Bearer <token>`.
    #[error(
        "a runner call needs the build's token as `authorization: Bearer <token>` (opusd runner reads it from OPUS_RUNNER_TOKEN)"
    )]
    Missing,
    /// The token is not the one of that build, or the build is not running (ended, or never ran
    /// as a Job on this opusd).
    #[error(
        "the build token is not valid for build {0}: it belongs to another build, or build {0} has ended (build tokens expire when their build ends)"
    )]
    Invalid(u64),
}

/// A build's end as its runner reports it, and where to answer whether opusd accepted it.
#[derive(Debug)]
pub struct Finish {
    /// What the runner reported.
    pub request: proto::FinishBuildRequest,
    /// `Err(reason)` when opusd refused the report (an upload that does not check out).
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// One registered build.
pub struct Slot {
    token: String,
    /// What `GetAssignment` answers.
    pub assignment: proto::Assignment,
    /// The build's log, which `PushLogs` appends to.
    pub log: BuildLog,
    /// Where `FinishBuild` goes.
    pub finish: mpsc::Sender<Finish>,
    /// Cancelled when the build ends: log streams still open are closed.
    pub ended: CancellationToken,
}

/// The registry of builds running elsewhere. Cheap to clone.
#[derive(Clone, Default)]
pub struct Runners {
    slots: Arc<Mutex<HashMap<u64, Arc<Slot>>>>,
    /// The last key handed to a pipeline job's runner ([`Runners::pipeline_key`]).
    pipeline_keys: Arc<AtomicU64>,
}

/// The high bit marks a pipeline job's runner key, so that it never equals a build id.
const PIPELINE_KEY_BIT: u64 = 1 << 63;

/// A build's registration; dropping it revokes the build's token.
pub struct Registration {
    runners: Runners,
    build: u64,
    /// The build's token, for its Job.
    pub token: String,
    /// Reports of the build's end, from `FinishBuild`.
    pub finished: mpsc::Receiver<Finish>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = self
            .runners
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.build);
        if let Some(slot) = removed {
            slot.ended.cancel();
        }
    }
}

/// Why a build could not be registered.
#[derive(Debug, Error)]
#[error("cannot generate the build's token: {0}")]
pub struct TokenError(String);

impl Runners {
    /// A new key for a pipeline job's runner: a build's one job registers under the build's id,
    /// and each job of a pipeline (run as its own Job) under a key of its own, never a build id.
    pub fn pipeline_key(&self) -> u64 {
        PIPELINE_KEY_BIT | (self.pipeline_keys.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Registers build `build` with a new random token (replacing any earlier registration of the
    /// same build).
    pub fn register(
        &self,
        build: u64,
        assignment: proto::Assignment,
        log: BuildLog,
    ) -> Result<Registration, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| TokenError(e.to_string()))?;
        let token = hex::encode(bytes);
        let (finish, finished) = mpsc::channel(1);
        let slot = Arc::new(Slot {
            token: token.clone(),
            assignment,
            log,
            finish,
            ended: CancellationToken::new(),
        });
        let previous = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(build, slot);
        if let Some(previous) = previous {
            previous.ended.cancel();
        }
        Ok(Registration {
            runners: self.clone(),
            build,
            token,
            finished,
        })
    }

    /// The slot of build `build` when `presented` (the bearer token of the call) is its token.
    pub fn authorize(
        &self,
        build: u64,
        presented: Option<&str>,
    ) -> Result<Arc<Slot>, RunnerAuthError> {
        let presented = presented.ok_or(RunnerAuthError::Missing)?;
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&build)
            .cloned();
        // Compare against something even when the build is unknown, so that timing does not tell
        // which builds are running.
        let expected = slot.as_ref().map(|s| s.token.as_str()).unwrap_or_default();
        let equal: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
        match slot {
            Some(slot) if equal && !expected.is_empty() => Ok(slot),
            _ => Err(RunnerAuthError::Invalid(build)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_keys_are_distinct_and_never_build_ids() {
        let runners = Runners::default();
        let (a, b) = (runners.pipeline_key(), runners.pipeline_key());
        assert_ne!(a, b);
        assert!(a >= PIPELINE_KEY_BIT && b >= PIPELINE_KEY_BIT);
    }

    fn log(dir: &std::path::Path, id: u64) -> BuildLog {
        crate::logs::LogHub::new(dir.to_path_buf(), 1 << 20)
            .expect("hub")
            .open(id, Vec::new())
            .expect("log")
    }

    #[test]
    fn a_token_opens_its_own_build_only_and_only_while_registered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runners = Runners::default();
        let a = runners
            .register(1, proto::Assignment::default(), log(dir.path(), 1))
            .expect("register a");
        let b = runners
            .register(2, proto::Assignment::default(), log(dir.path(), 2))
            .expect("register b");
        assert_eq!(a.token.len(), 64);
        assert_ne!(a.token, b.token);

        assert!(runners.authorize(1, Some(&a.token)).is_ok());
        assert_eq!(
            runners.authorize(2, Some(&a.token)).err(),
            Some(RunnerAuthError::Invalid(2)),
            "build A's token does not open build B"
        );
        assert_eq!(
            runners.authorize(1, Some("guess")).err(),
            Some(RunnerAuthError::Invalid(1))
        );
        assert_eq!(
            runners.authorize(1, None).err(),
            Some(RunnerAuthError::Missing)
        );
        assert_eq!(
            runners.authorize(3, Some("")).err(),
            Some(RunnerAuthError::Invalid(3))
        );

        let slot = runners.authorize(1, Some(&a.token)).expect("valid");
        let token = a.token.clone();
        drop(a);
        assert!(
            slot.ended.is_cancelled(),
            "open streams learn the build ended"
        );
        assert_eq!(
            runners.authorize(1, Some(&token)).err(),
            Some(RunnerAuthError::Invalid(1)),
            "the token expires with its build"
        );
        assert!(runners.authorize(2, Some(&b.token)).is_ok());
    }
}
