//! One build's job as a Kubernetes Job: [`KubeExecutor::source`] resolves the ref in opusd's
//! mirror and reads the recipe files; [`KubeExecutor::execute`] reserves the version, gives the
//! build a token, creates the Job, then waits for whichever comes first: the runner's
//! `FinishBuild`, a pod that cannot start, a failed Job (its deadline is the build's timeout), a
//! cancel. A runner's success is handed back as an [`Uploaded`] version, which
//! [`crate::build::run`] commits.

use std::collections::BTreeMap;
use std::path::Path;

use super::JobState;
use super::job::{BuildJob, JobRef, PipelineJob, build_job};
use opus_core::artifact::{Origin, Reservation, StoredVersion};
use opus_core::model::{Build, Project, Source};
use opus_core::proto;
use opus_core::store::SiteOptions;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{KubeExecutor, deadline_of};
use crate::build::steps::LogSink;
use crate::build::{BuildContext, BuildFailure, FailureKind, Job, Produced, Stage};
use crate::logs::BuildLog;
use crate::runners::{Finish, Registration};
use crate::source::Checkout;

/// A version a runner uploaded and reported, not committed yet. The runner waits for the
/// answer: `Uploaded::commit` gives it, and dropping this uncommitted removes the upload.
pub struct Uploaded {
    reservation: Reservation,
    reply: RunnerReply,
}

/// opusd's answer to a runner's `FinishBuild` (`Err`: why the upload was refused, sent as the
/// status message).
type RunnerReply = oneshot::Sender<Result<(), String>>;

impl Uploaded {
    /// Checks the upload and commits it with `options` (see
    /// [`Reservation::commit_uploaded`]), then answers the runner; on failure the runner is told
    /// why and the uploaded objects are removed.
    pub(crate) async fn commit(
        self,
        origin: &Origin,
        options: &SiteOptions,
        log: &BuildLog,
    ) -> Result<StoredVersion, BuildFailure> {
        match self.reservation.commit_uploaded(origin, options).await {
            Ok(stored) => {
                let _ = self.reply.send(Ok(()));
                Ok(stored)
            }
            Err(source) => {
                let failure = BuildFailure::new(
                    Stage::Store,
                    FailureKind::Store {
                        version: self.reservation.version().to_string(),
                        source,
                    },
                );
                let _ = self.reply.send(Err(failure.to_string()));
                discard(&self.reservation, log).await;
                Err(failure)
            }
        }
    }
}

impl KubeExecutor {
    /// The image a job's steps run in: the one it asks for (`build.image`), else the configured
    /// build image.
    pub(crate) fn image_of(&self, requested: Option<&str>) -> String {
        requested.map_or_else(|| self.inner.config.build_image.clone(), str::to_owned)
    }

    /// Resolves the build's ref in opusd's git mirror and reads the recipe files of that commit
    /// into `workspace` (the build pod fetches the whole tree itself).
    pub(crate) async fn source(
        &self,
        ctx: &BuildContext,
        project: &Project,
        build: &Build,
        workspace: &Path,
        log: &BuildLog,
        cancel: &CancellationToken,
    ) -> Result<Checkout, BuildFailure> {
        let fail = |kind| BuildFailure::new(Stage::Source, kind);
        let url = git_url(project)?;
        log.opus("source", &format!("resolving {} in {url}", build.git_ref));
        let resolved = tokio::select! {
            r = ctx.sources.resolve_git(project, url, &build.git_ref) => r,
            () = cancel.cancelled() => return Err(fail(FailureKind::Cancelled)),
        };
        let checkout = resolved.map_err(|e| fail(e.into()))?;
        log.opus(
            "source",
            &format!("{} is commit {}", build.git_ref, checkout.commit),
        );
        ctx.sources
            .read_recipe(project, &checkout.commit, workspace)
            .await
            .map_err(|e| BuildFailure::new(Stage::Recipe, e))?;
        Ok(checkout)
    }

    /// Runs `job` as a Job: reserves the version, registers the build (its token and
    /// assignment), creates the Job and watches it to its end. The runner's upload comes back as
    /// [`Produced::Uploaded`]; on any failure the reservation's objects are removed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn execute(
        &self,
        ctx: &BuildContext,
        project: &Project,
        build: &Build,
        job: &Job,
        env: BTreeMap<String, String>,
        log: &BuildLog,
        cancel: &CancellationToken,
    ) -> Result<Option<Produced>, BuildFailure> {
        let (reservation, store_url) = reserve_output(ctx, build)?;
        let target = JobTarget {
            project,
            build,
            job,
            pipeline: None,
        };
        let result = self
            .run_job(&target, env, store_url, log, log, cancel)
            .await;
        match result {
            Ok(reply) => Ok(Some(Produced::Uploaded(Uploaded { reservation, reply }))),
            Err(failure) => {
                discard(&reservation, log).await;
                Err(failure)
            }
        }
    }

    /// Runs one job of a pipeline as its own Job (`opus-<project>-<build>-<job>`), its lines in
    /// `log` (the job's view of `build_log`). The job with `output` reserves the version and its
    /// runner uploads it, as [`KubeExecutor::execute`]'s does; any other job only runs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn execute_pipeline_job<L: LogSink>(
        &self,
        ctx: &BuildContext,
        project: &Project,
        build: &Build,
        job: &Job,
        pipeline: PipelineJob,
        env: BTreeMap<String, String>,
        build_log: &BuildLog,
        log: &L,
        cancel: &CancellationToken,
    ) -> Result<Option<Produced>, BuildFailure> {
        let target = JobTarget {
            project,
            build,
            job,
            pipeline: Some(&pipeline),
        };
        if job.output.is_none() {
            let reply = self
                .run_job(&target, env, String::new(), build_log, log, cancel)
                .await?;
            let _ = reply.send(Ok(()));
            return Ok(None);
        }
        let (reservation, store_url) = reserve_output(ctx, build)?;
        match self
            .run_job(&target, env, store_url, build_log, log, cancel)
            .await
        {
            Ok(reply) => Ok(Some(Produced::Uploaded(Uploaded { reservation, reply }))),
            Err(failure) => {
                discard(&reservation, build_log).await;
                Err(failure)
            }
        }
    }

    /// Creates the Job of `target` and waits for its runner's report of success (the answer to
    /// send it once the version is committed). The runner's lines go to `build_log` (a pipeline
    /// job's runner names them after its job); opusd's own lines about the Job go to `log`.
    async fn run_job<L: LogSink>(
        &self,
        target: &JobTarget<'_>,
        env: BTreeMap<String, String>,
        store_url: String,
        build_log: &BuildLog,
        log: &L,
        cancel: &CancellationToken,
    ) -> Result<RunnerReply, BuildFailure> {
        let JobTarget {
            project,
            build,
            job,
            pipeline,
        } = *target;
        let fail = |kind| BuildFailure::new(Stage::Kubernetes, kind);
        let image = self.image_of(job.image.as_deref());
        let source = git_url(project)?.to_owned();
        let assignment = proto::Assignment {
            build: Some(proto::Build::from(build)),
            source,
            env: env.into_iter().collect(),
            store_url,
            store_settings: self.inner.store_settings.iter().cloned().collect(),
            job: pipeline.map(|p| p.name.clone()).unwrap_or_default(),
            // Filled by `GetAssignment`, when the runner asks (a fresh installation token).
            git_username: String::new(),
            git_password: String::new(),
        };
        let runner = match pipeline {
            None => build.id,
            Some(_) => self.inner.runners.pipeline_key(),
        };
        let registration = self
            .inner
            .runners
            .register(runner, assignment, build_log.clone())
            .map_err(|e| fail(e.into()))?;
        let spec = build_job(&BuildJob {
            namespace: self.inner.config.namespace.clone(),
            project: build.project.to_string(),
            build: build.id,
            build_image: image.clone(),
            runner_image: self.inner.config.runner_image.clone(),
            server: self.inner.server_url.clone(),
            token: registration.token.clone(),
            timeout: Some(job.timeout),
            job: pipeline.cloned(),
            runner,
        });
        let name = self
            .inner
            .jobs
            .apply(&spec)
            .await
            .map_err(|e| fail(FailureKind::CreateJob(e)))?;
        log.opus(
            "kubernetes",
            &format!(
                "created Job {name} in namespace {}: image {image}, time limit {}",
                self.inner.jobs.namespace(),
                humantime::format_duration(job.timeout)
            ),
        );
        let watch = Watch {
            executor: self,
            job: JobRef {
                project: build.project.as_str(),
                build: build.id,
                job: pipeline,
            },
            log,
        };
        watch
            .until_end(registration, cancel, deadline_of(job.timeout))
            .await
    }
}

/// The git URL a build pod fetches; a local directory cannot be built in a pod.
fn git_url(project: &Project) -> Result<&str, BuildFailure> {
    match &project.source {
        Source::Git(url) => Ok(url),
        Source::Local(dir) => Err(BuildFailure::new(
            Stage::Source,
            FailureKind::LocalSourceInPod {
                project: project.name.to_string(),
                dir: dir.display().to_string(),
            },
        )),
    }
}

/// Removes what a runner may have uploaded for a version that was not committed.
async fn discard(reservation: &Reservation, log: &BuildLog) {
    if let Err(e) = reservation.discard().await {
        log.opus(
            "store",
            &format!("cannot remove the objects of the uncommitted version: {e}"),
        );
    }
}

/// What one Job runs: a build's job, and which of its pipeline's jobs it is (`None`: a `build:`
/// recipe's one job).
#[derive(Clone, Copy)]
struct JobTarget<'a> {
    project: &'a Project,
    build: &'a Build,
    job: &'a Job,
    pipeline: Option<&'a PipelineJob>,
}

/// A build's Job that exists, being watched.
struct Watch<'a, L: LogSink> {
    executor: &'a KubeExecutor,
    job: JobRef<'a>,
    log: &'a L,
}

impl<L: LogSink> Watch<'_, L> {
    /// Waits for the build's end; deletes the Job when the build ends because of opusd (cancel,
    /// a pod that cannot start, opusd's own deadline). The registration (and so the build's token)
    /// ends with this call.
    async fn until_end(
        &self,
        mut registration: Registration,
        cancel: &CancellationToken,
        limit: std::time::Duration,
    ) -> Result<RunnerReply, BuildFailure> {
        let fail = |kind| BuildFailure::new(Stage::Kubernetes, kind);
        let inner = &self.executor.inner;
        let name = self.job.name();
        let mut ticker = tokio::time::interval(inner.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let mut last_state: Option<JobState> = None;
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                finish = registration.finished.recv() => {
                    if let Some(finish) = finish {
                        return self.finished(finish);
                    }
                }
                () = cancel.cancelled() => {
                    self.delete_job("cancelled").await;
                    return Err(BuildFailure::cancelled());
                }
                () = &mut deadline => {
                    self.delete_job("past its time limit").await;
                    return Err(fail(FailureKind::JobTimedOut { job: name, limit }));
                }
                _ = ticker.tick() => {}
            }
            let state = match inner.jobs.state(&self.job).await {
                Ok(state) => state,
                Err(e) => {
                    let msg = format!("cannot read the state of Job {name}: {e}");
                    if last_error.as_deref() != Some(msg.as_str()) {
                        self.log.opus("kubernetes", &msg);
                        last_error = Some(msg);
                    }
                    continue;
                }
            };
            last_error = None;
            // A report that arrived while the state was read wins over the state.
            if let Ok(finish) = registration.finished.try_recv() {
                return self.finished(finish);
            }
            match &state {
                JobState::PodFailed(reason) => {
                    self.delete_job("cannot start").await;
                    return Err(fail(FailureKind::Pod(reason.clone())));
                }
                JobState::Failed(reason) => {
                    self.log
                        .opus("kubernetes", &format!("Job {name} failed: {reason}"));
                    return Err(fail(FailureKind::JobFailed(reason.clone())));
                }
                JobState::Succeeded => {
                    return Err(fail(FailureKind::PodSilent {
                        namespace: inner.jobs.namespace().to_owned(),
                        job: name,
                    }));
                }
                JobState::Missing => return Err(fail(FailureKind::JobMissing(name))),
                JobState::Pending(_) | JobState::Running => {
                    if last_state.as_ref() != Some(&state) {
                        let line = match &state {
                            JobState::Pending(Some(why)) => format!("pod pending: {why}"),
                            JobState::Pending(None) => "pod pending".to_owned(),
                            _ => "pod running".to_owned(),
                        };
                        self.log.opus("kubernetes", &line);
                        last_state = Some(state);
                    }
                }
            }
        }
    }

    /// The runner's report: a failure (answered at once) or an upload to commit, whose answer
    /// waits for the commit.
    fn finished(&self, finish: Finish) -> Result<RunnerReply, BuildFailure> {
        let Finish { request, reply } = finish;
        if request.succeeded {
            return Ok(reply);
        }
        let _ = reply.send(Ok(()));
        let reason = if request.reason.trim().is_empty() {
            "the runner reported a failure without a reason".to_owned()
        } else {
            request.reason
        };
        Err(BuildFailure::new(Stage::Steps, FailureKind::Runner(reason)))
    }

    /// Deletes the build's Job (background propagation: its pod goes too), saying so in the log.
    async fn delete_job(&self, why: &str) {
        let inner = &self.executor.inner;
        let name = self.job.name();
        match inner.jobs.delete_job(&self.job).await {
            Ok(_) => self
                .log
                .opus("kubernetes", &format!("deleted Job {name} ({why})")),
            Err(e) => self.log.opus(
                "kubernetes",
                &format!("cannot delete Job {name} ({why}): {e}; delete it with kubectl"),
            ),
        }
    }
}

/// Reserves the version `build` will store, for the runner of its job with `output` to upload
/// into, and the URL of the store it goes to.
fn reserve_output(
    ctx: &BuildContext,
    build: &Build,
) -> Result<(Reservation, String), BuildFailure> {
    let store_failure = |source| {
        BuildFailure::new(
            Stage::Store,
            FailureKind::Store {
                version: build
                    .version
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                source,
            },
        )
    };
    let version = crate::build::prepare::decided_version(build, Stage::Store)?.clone();
    let reservation = ctx
        .artifacts
        .reserve_version(&build.project, &version, &build.store)
        .map_err(store_failure)?;
    let store_url = ctx
        .artifacts
        .store_url(&build.store)
        .map_err(store_failure)?;
    Ok((reservation, store_url))
}
