//! A job: steps run in a workspace, and the folder they leave as output (when the job has one).
//!
//! A build is one job today, made from its recipe ([`Job::from_recipe`]). The local executor and
//! `opusd runner` (inside a build pod) both run a job with [`run_job`], so the steps, the time
//! limit and the output checks are the same wherever a build runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opus_core::recipe::{self, OpusFile, PlannedJob, SpecOrigin};
use tokio_util::sync::CancellationToken;

use super::failure::{BuildFailure, FailureKind, Stage};
use super::steps::{self, LogSink};
use crate::process_tree::Containment;

/// What runs in one workspace: steps, under one time limit, and the folder they produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Shell commands, run in order.
    pub steps: Vec<String>,
    /// Time limit of all the steps together.
    pub timeout: Duration,
    /// The container image the steps run in (the kubernetes executor; `None`: its default).
    pub image: Option<String>,
    /// Folders (relative to the workspace) kept between builds of the project.
    pub cache: Vec<String>,
    /// The folder (relative to the workspace) the job leaves as output; `None` for a job that
    /// produces none.
    pub output: Option<String>,
    /// The folder used instead when `output` does not exist after the steps: `build` for a recipe
    /// detected from package.json (Create React App writes `build`, Vite `dist`), which can only
    /// be told once the build has run.
    pub output_fallback: Option<String>,
}

impl Job {
    /// The job of a one-job recipe (`build:`, or a pipeline of one job), read from
    /// `workspace`: its steps, timeout, image, and its output folder (`build.output`, or what
    /// package.json's tooling writes). A pipeline of several jobs is refused: one place runs
    /// them all ([`super::pipeline`]).
    pub fn from_recipe(
        spec: &OpusFile,
        origin: SpecOrigin,
        workspace: &Path,
    ) -> Result<Job, BuildFailure> {
        let plan = spec.plan();
        if plan.job_count() > 1 {
            return Err(BuildFailure::new(
                Stage::Recipe,
                FailureKind::PipelineOnKubernetes {
                    jobs: plan.job_count(),
                },
            ));
        }
        plan.output_job()
            .map(|job| Job::from_planned(job, origin, workspace))
            .ok_or_else(|| BuildFailure::new(Stage::Output, FailureKind::NoOutput))
    }

    /// A job of a recipe's plan, run in `workspace`.
    pub fn from_planned(job: &PlannedJob, origin: SpecOrigin, workspace: &Path) -> Job {
        Job {
            steps: job.steps.clone(),
            timeout: job.timeout,
            image: job.image.clone(),
            cache: job.cache.clone(),
            output: job
                .output
                .as_deref()
                .map(|output| recipe::resolve_output(workspace, output, origin)),
            output_fallback: (origin == SpecOrigin::PackageJson && job.output.is_some())
                .then(|| "build".to_owned()),
        }
    }
}

/// A job's output, checked: the folder as configured and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// build.output, as resolved (for messages).
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
}

/// Runs `job` in `workspace` with `env`, its processes kept together as `containment` says
/// (stopping at the first failure, at `cancel`, or at the
/// job's time limit), then checks its output folder ([`check_output`]).
pub async fn run_job<L: LogSink>(
    job: &Job,
    workspace: &Path,
    env: &BTreeMap<String, String>,
    log: &L,
    cancel: &CancellationToken,
    containment: Containment,
) -> Result<Option<Output>, BuildFailure> {
    steps::run_steps(
        &job.steps,
        workspace,
        env,
        log,
        cancel,
        job.timeout,
        containment,
    )
    .await
    .map_err(BuildFailure::steps)?;
    let Some(output) = &job.output else {
        return Ok(None);
    };
    let output = match &job.output_fallback {
        Some(fallback) if !workspace.join(output).is_dir() && workspace.join(fallback).is_dir() => {
            fallback
        }
        _ => output,
    };
    check_output(workspace, output).await.map(Some)
}

/// The output folder `output` of `workspace`, once the steps ran: it must be a folder, and it must
/// be inside the workspace (an output that is a link, or under a link, to a folder elsewhere is
/// refused, as links inside the output that lead out of it are when it is stored).
pub async fn check_output(workspace: &Path, output: &str) -> Result<Output, BuildFailure> {
    let fail = |kind| BuildFailure::new(Stage::Output, kind);
    let dir = workspace.join(output);
    let missing = || {
        fail(FailureKind::OutputMissing {
            output: output.to_owned(),
        })
    };
    match tokio::fs::metadata(&dir).await {
        Ok(m) if m.is_dir() => {}
        _ => return Err(missing()),
    }
    let (root, real) = match (
        tokio::fs::canonicalize(workspace).await,
        tokio::fs::canonicalize(&dir).await,
    ) {
        (Ok(root), Ok(real)) => (root, real),
        _ => return Err(missing()),
    };
    if !real.starts_with(&root) {
        return Err(fail(FailureKind::OutputEscapes {
            output: output.to_owned(),
            target: real,
        }));
    }
    Ok(Output {
        name: output.to_owned(),
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_output_folder_inside_the_workspace_is_accepted() {
        let workspace = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(workspace.path().join("site/dist")).expect("mkdir");
        // A link to a folder of the workspace stays inside it.
        std::os::unix::fs::symlink("site/dist", workspace.path().join("out")).expect("symlink");
        for output in ["site/dist", "out"] {
            let found = check_output(workspace.path(), output).await.expect(output);
            assert_eq!(found.dir, workspace.path().join(output));
        }
    }

    #[tokio::test]
    async fn an_output_folder_that_leads_outside_the_workspace_is_refused() {
        let workspace = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(elsewhere.path(), workspace.path().join("dist"))
            .expect("symlink");
        std::os::unix::fs::symlink(elsewhere.path(), workspace.path().join("up")).expect("symlink");
        std::fs::create_dir(elsewhere.path().join("www")).expect("mkdir");
        for output in ["dist", "up/www"] {
            let failure = check_output(workspace.path(), output)
                .await
                .expect_err(output);
            assert_eq!(failure.stage, Stage::Output);
            assert!(
                matches!(*failure.kind, FailureKind::OutputEscapes { .. }),
                "{failure:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_output_or_a_file_is_missing_output() {
        let workspace = tempfile::tempdir().expect("tempdir");
        std::fs::write(workspace.path().join("dist"), "a file").expect("write");
        for output in ["dist", "build"] {
            let failure = check_output(workspace.path(), output)
                .await
                .expect_err(output);
            assert!(
                matches!(*failure.kind, FailureKind::OutputMissing { .. }),
                "{failure:?}"
            );
        }
    }
}
