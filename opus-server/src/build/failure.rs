//! How a build ends: [`BuildFailure`] (the stage that failed and why) and [`Outcome`] (what is
//! recorded on the build).
//!
//! Every stage of a build returns `Result<_, BuildFailure>`, whichever executor runs it and also
//! inside `opusd runner`; [`crate::build::run`] turns the first failure into the build's
//! [`Outcome`] and its reason (the failure's `Display`).

use std::path::PathBuf;

use opus_core::error::{ArtifactError, ModelError, RecipeError, StoreError};
use opus_core::model::{BuildState, EnvName};
use thiserror::Error;

use super::steps::{LogSink, StepFailure};
use crate::source::SourceError;

/// The stage of a build, which names its lines in the build log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Starting: the build log, the project, the workspace.
    Start,
    /// Fetching the source and deciding the version.
    Source,
    /// Reading opus.yml (or package.json) and the steps' environment.
    Recipe,
    /// Running the steps.
    Steps,
    /// Checking the output folder.
    Output,
    /// Storing the output as a version.
    Store,
    /// The build's Job (the kubernetes executor).
    Kubernetes,
    /// Checks of the stored version before any environment moves to it (opus.yml `checks:`).
    Checks,
}

impl Stage {
    /// The step name of this stage's lines in the build log.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Start => "start",
            Stage::Source => "source",
            Stage::Recipe => "recipe",
            Stage::Steps => "steps",
            Stage::Output => "output",
            Stage::Store => "store",
            Stage::Kubernetes => "kubernetes",
            Stage::Checks => "checks",
        }
    }
}

/// Why a build stage failed. The `Display` is the build's recorded reason.
#[derive(Debug, Error)]
pub enum FailureKind {
    /// Cancelled (by a user, a newer push, or the build pod being deleted).
    #[error("cancelled")]
    Cancelled,
    /// opusd stopped while the build was running.
    #[error("opusd stopped while the build was running")]
    Stopped,
    /// The build must not run (a pull request its base branch's opus.yml does not build); it
    /// is recorded as cancelled with this reason.
    #[error("skipped: {0}")]
    Skipped(String),
    /// The build log could not be opened.
    #[error("cannot open the build log: {0}")]
    Log(#[source] std::io::Error),
    /// The workspace could not be made.
    #[error("cannot create the workspace {}: {source}", path.display())]
    Workspace {
        /// The workspace.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metadata store failed (the project is gone, a write failed).
    #[error(transparent)]
    Metadata(#[from] StoreError),
    /// The project's secrets could not be read.
    #[error("cannot read the project's secrets: {0}")]
    Secrets(#[source] StoreError),
    /// The source could not be fetched.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The kubernetes executor cannot build a local directory.
    #[error(
        "the source of {project} is a local directory ({dir}), which a build pod cannot read: \
         the kubernetes executor builds git sources (opus add {project} <git URL>); \
         run opusd with --executor local to build local directories"
    )]
    LocalSourceInPod {
        /// The project.
        project: String,
        /// Its directory.
        dir: String,
    },
    /// The assignment a runner got is not usable.
    #[error("{0}")]
    Assignment(String),
    /// A tag whose name cannot be a version.
    #[error("tag {tag:?} cannot be a version: {source}; trigger with --version")]
    TagNotVersion {
        /// The tag.
        tag: String,
        /// Why.
        #[source]
        source: ModelError,
    },
    /// The build reached a stage that needs its version before the version was decided.
    #[error("the build's version was not decided before its output was stored")]
    VersionUndecided,
    /// The version name is invalid.
    #[error(transparent)]
    Version(#[from] ModelError),
    /// opus.yml (or package.json) cannot be read.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// A step failed or the steps ran out of time.
    #[error("{0}")]
    Steps(StepFailure),
    /// The output folder is not there.
    #[error(
        "the output folder {output:?} does not exist after the build (build.output in opus.yml)"
    )]
    OutputMissing {
        /// build.output, as resolved.
        output: String,
    },
    /// The output folder is a link to somewhere outside the workspace.
    #[error(
        "the output folder {output:?} leads outside the workspace (to {}): a build's output must be \
         a folder of the workspace, as links inside it must stay inside it (build.output in opus.yml)",
        target.display()
    )]
    OutputEscapes {
        /// build.output, as resolved.
        output: String,
        /// Where it leads.
        target: PathBuf,
    },
    /// Storing the version failed.
    #[error("storing version {version} failed: {source}")]
    Store {
        /// The version.
        version: String,
        /// Why.
        #[source]
        source: ArtifactError,
    },
    /// A runner could not open the artifact store.
    #[error("cannot open the artifact store: {0}")]
    OpenStore(#[source] ArtifactError),
    /// A runner could not upload the version.
    #[error("uploading version {version} failed: {source}")]
    Upload {
        /// The version.
        version: String,
        /// Why.
        #[source]
        source: ArtifactError,
    },
    /// A job ran without producing an output folder where one was needed.
    #[error("the build's job has no output folder to store")]
    NoOutput,
    /// The build could not be given a token.
    #[error("{0}")]
    Token(#[from] crate::runners::TokenError),
    /// The build's Job could not be created.
    #[error("cannot create the build's Job: {0}")]
    CreateJob(#[source] opus_core::kubernetes::KubeError),
    /// The Job ran past opusd's deadline.
    #[error(
        "timed out: the Job {job} did not end within {} (build.timeout, and as long again up to a minute)",
        humantime::format_duration(*limit)
    )]
    JobTimedOut {
        /// The Job.
        job: String,
        /// opusd's deadline.
        limit: std::time::Duration,
    },
    /// The build pod could not start (Kubernetes' reason).
    #[error("{0}")]
    Pod(String),
    /// The build's Job failed (Kubernetes' reason; logged with the Job's name when seen).
    #[error("{0}")]
    JobFailed(String),
    /// The build pod ended without reporting.
    #[error(
        "the build pod exited without reporting to opusd; see `kubectl -n {namespace} logs job/{job}`"
    )]
    PodSilent {
        /// The namespace.
        namespace: String,
        /// The Job.
        job: String,
    },
    /// The Job was deleted by someone else.
    #[error("the Job {0} was deleted outside Opus")]
    JobMissing(String),
    /// The runner reported a failure (its reason; the runner logged it).
    #[error("{0}")]
    Runner(String),
    // Pipelines.
    /// A job of a pipeline failed (its own log lines say how).
    #[error("job {job} (stage {stage}) failed: {failure}")]
    InJob {
        /// The job.
        job: String,
        /// Its stage.
        stage: String,
        /// How it failed: the step, the output, its copy.
        failure: BuildFailure,
    },
    /// A job's task ended without an outcome (it panicked): a bug, said as such.
    #[error("a job ended abnormally (a bug in opusd, please report it): {0}")]
    JobTask(String),
    /// A job's copy of the checkout could not be made.
    #[error(transparent)]
    JobCopy(#[from] super::job_copy::CopyError),
    /// A pipeline of several jobs run as one job: a runner assigned the whole build (by an opusd
    /// that predates per-job Jobs) whose opus.yml has a pipeline.
    #[error(
        "this opus.yml has a pipeline of {jobs} jobs, and the runner was assigned the build as one job: \
         run the runner with the opusd version that assigned it"
    )]
    PipelineOnKubernetes {
        /// How many jobs the pipeline has.
        jobs: usize,
    },
    // Checks before promotion.
    /// A check of the stored version failed: no environment moved ("check smoke failed;
    /// production stays on 1.0.3"). Its own lines in the log say how.
    #[error("check {check} failed; {stays}")]
    CheckFailed {
        /// The check.
        check: String,
        /// Where the environments the build would have moved stay.
        stays: String,
    },
}

/// A build that did not succeed: the stage and why. Its `Display` is the reason recorded on the
/// build.
#[derive(Debug, Error)]
#[error("{kind}")]
pub struct BuildFailure {
    /// Where it failed.
    pub stage: Stage,
    /// Why (boxed: some causes are large, and every stage returns this).
    pub kind: Box<FailureKind>,
}

impl BuildFailure {
    /// A failure at `stage`.
    pub fn new(stage: Stage, kind: impl Into<FailureKind>) -> BuildFailure {
        BuildFailure {
            stage,
            kind: Box::new(kind.into()),
        }
    }

    /// A cancelled build.
    pub fn cancelled() -> BuildFailure {
        BuildFailure::new(Stage::Steps, FailureKind::Cancelled)
    }

    /// The steps' failure; a cancel is [`FailureKind::Cancelled`].
    pub fn steps(failure: StepFailure) -> BuildFailure {
        match failure {
            StepFailure::Cancelled => BuildFailure::cancelled(),
            failure => BuildFailure::new(Stage::Steps, FailureKind::Steps(failure)),
        }
    }

    /// Whether the build was cancelled.
    pub fn is_cancel(&self) -> bool {
        matches!(*self.kind, FailureKind::Cancelled)
    }

    /// Writes the failure to the build log under its stage, unless it is there already (a step's
    /// exit, which the step runner logs; a runner's report, which the runner logged; a failed
    /// Job, which the watch logged; a cancel, which the build's last line says).
    pub fn report<L: LogSink>(&self, log: &L) {
        let step = match &*self.kind {
            FailureKind::Cancelled
            | FailureKind::Stopped
            | FailureKind::Skipped(_)
            | FailureKind::Runner(_)
            | FailureKind::InJob { .. }
            | FailureKind::JobFailed(_) => return,
            FailureKind::Steps(StepFailure::Exited { .. }) => return,
            FailureKind::Steps(StepFailure::TimedOut(_)) | FailureKind::JobTimedOut { .. } => {
                "timeout"
            }
            _ => self.stage.as_str(),
        };
        log.opus(step, &self.to_string());
    }
}

/// How a build ended, as it is recorded. Made only from a [`BuildFailure`] or
/// [`Outcome::succeeded`].
#[derive(Debug)]
pub struct Outcome {
    state: BuildState,
    reason: String,
    /// The environments a build awaiting approval waits for (empty otherwise).
    awaiting: Vec<EnvName>,
}

impl Outcome {
    /// The build succeeded.
    pub fn succeeded() -> Outcome {
        Outcome {
            state: BuildState::Succeeded,
            reason: String::new(),
            awaiting: Vec::new(),
        }
    }

    /// The build's version is stored and awaits approval for `environments` (`reason` says
    /// how to give it).
    pub fn awaiting_approval(environments: Vec<EnvName>, reason: String) -> Outcome {
        Outcome {
            state: BuildState::AwaitingApproval,
            reason,
            awaiting: environments,
        }
    }

    /// The environments a build awaiting approval waits for.
    pub fn awaiting(&self) -> &[EnvName] {
        &self.awaiting
    }

    /// A build whose outcome the store could not take: recorded failed once it can, since a
    /// follower of the build was told it failed.
    pub fn unrecorded(error: &StoreError) -> Outcome {
        Outcome {
            state: BuildState::Failed,
            reason: format!("its outcome could not be recorded: {error}"),
            awaiting: Vec::new(),
        }
    }

    /// A failure with `note` (why the disk is full) before its reason: the step or file that
    /// hit the full disk may not say so.
    pub fn noted(self, note: &str) -> Outcome {
        match self.state {
            BuildState::Failed => Outcome {
                reason: format!("{note} ({})", self.reason),
                ..self
            },
            _ => self,
        }
    }

    /// The final state.
    pub fn state(&self) -> BuildState {
        self.state
    }

    /// The reason (empty for a success).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl From<BuildFailure> for Outcome {
    fn from(failure: BuildFailure) -> Outcome {
        if failure.is_cancel() {
            return Outcome {
                state: BuildState::Cancelled,
                reason: "cancelled by a user".into(),
                awaiting: Vec::new(),
            };
        }
        if matches!(*failure.kind, FailureKind::Skipped(_)) {
            return Outcome {
                state: BuildState::Cancelled,
                reason: failure.kind.to_string(),
                awaiting: Vec::new(),
            };
        }
        Outcome {
            state: BuildState::Failed,
            reason: failure.to_string(),
            awaiting: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_build_is_recorded_cancelled_with_its_reason() {
        let skipped = Outcome::from(BuildFailure::new(
            Stage::Source,
            FailureKind::Skipped("the pull request is a draft".into()),
        ));
        assert_eq!(skipped.state(), BuildState::Cancelled);
        assert_eq!(skipped.reason(), "skipped: the pull request is a draft");
    }

    #[test]
    fn a_cancel_is_recorded_cancelled_and_any_other_failure_failed() {
        let cancelled = Outcome::from(BuildFailure::steps(StepFailure::Cancelled));
        assert_eq!(cancelled.state(), BuildState::Cancelled);
        assert_eq!(cancelled.reason(), "cancelled by a user");
        let missing = Outcome::from(BuildFailure::new(
            Stage::Output,
            FailureKind::OutputMissing {
                output: "dist".into(),
            },
        ));
        assert_eq!(missing.state(), BuildState::Failed);
        assert_eq!(
            missing.reason(),
            "the output folder \"dist\" does not exist after the build (build.output in opus.yml)"
        );
    }
}
