//! One build as a Kubernetes Job: prepare (ref, version, recipe, reservation, token), create the
//! Job, then wait for whichever comes first: the runner's `FinishBuild`, a pod that cannot start,
//! a failed Job (its deadline is the build's timeout), a cancel.

use std::path::Path;

use super::JobState;
use super::job::{BuildJob, build_job, job_name};
use opus_core::artifact::{Origin, Reservation};
use opus_core::manifest;
use opus_core::model::{Build, BuildState, Source, VersionName};
use opus_core::proto;
use opus_core::store::MetaStore;
use tokio_util::sync::CancellationToken;

use super::{KubeExecutor, deadline_of};
use crate::build::{BuildContext, Outcome, build_env, record_checkout};
use crate::logs::BuildLog;
use crate::runners::{Finish, Registration};

impl KubeExecutor {
    /// Runs `build` as a Job; `workspace` is a scratch folder of opusd's (the recipe files are
    /// read into it). Every failure is in the log and the returned outcome.
    pub(crate) async fn execute(
        &self,
        ctx: &BuildContext,
        store: &MetaStore,
        build: &Build,
        workspace: &Path,
        log: &BuildLog,
        cancel: &CancellationToken,
    ) -> Outcome {
        let fail = |step: &str, msg: String| {
            log.opus(step, &msg);
            Outcome::failed(msg)
        };
        let project = match store.get_project(build.project.as_str()) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e.to_string()),
        };
        let url = match &project.source {
            Source::Git(url) => url.clone(),
            Source::Local(dir) => {
                return fail(
                    "source",
                    format!(
                        "the source of {} is a local directory ({}), which a build pod cannot read: \
                         the kubernetes executor builds git sources (opus add {} <git URL>); \
                         run opusd with --executor local to build local directories",
                        project.name,
                        dir.display(),
                        project.name
                    ),
                );
            }
        };

        log.opus("source", &format!("resolving {} in {url}", build.git_ref));
        let resolved = tokio::select! {
            r = ctx.sources.resolve_git(&project, &url, &build.git_ref) => r,
            () = cancel.cancelled() => return Outcome::cancelled(),
        };
        let checkout = match resolved {
            Ok(c) => c,
            Err(e) => return fail("source", e.to_string()),
        };
        let build = match record_checkout(store, build, &checkout, log) {
            Ok(b) => b,
            Err(outcome) => return outcome,
        };
        log.opus(
            "source",
            &format!("{} is commit {}", build.git_ref, checkout.commit),
        );

        if let Err(e) = tokio::fs::create_dir_all(workspace).await {
            return Outcome::failed(format!(
                "cannot create the workspace {}: {e}",
                workspace.display()
            ));
        }
        if let Err(e) = ctx
            .sources
            .read_recipe(&project, &checkout.commit, workspace)
            .await
        {
            return fail("recipe", e.to_string());
        }
        let (spec, origin) = match manifest::discover(workspace) {
            Ok(found) => found,
            Err(e) => return fail("recipe", e.to_string()),
        };
        let image = spec
            .build
            .image
            .clone()
            .unwrap_or_else(|| self.inner.config.build_image.clone());
        log.opus(
            "recipe",
            &format!("{}; image {image}", origin.describe(&spec)),
        );

        let reservation = match VersionName::new(build.version.as_str())
            .map_err(|e| e.to_string())
            .and_then(|v| {
                ctx.artifacts
                    .reserve_version(&build.project, &v, &build.store)
                    .map_err(|e| e.to_string())
            }) {
            Ok(r) => r,
            Err(e) => return fail("store", e),
        };
        let store_url = match ctx.artifacts.store_url(&build.store) {
            Ok(u) => u,
            Err(e) => return fail("store", e.to_string()),
        };
        let env = match build_env(store, &build) {
            Ok(vars) => vars,
            Err(outcome) => return outcome,
        };
        let assignment = proto::Assignment {
            build: Some(proto::Build::from(&build)),
            source: url,
            env: env.into_iter().collect(),
            store_url,
            store_settings: self.inner.store_settings.iter().cloned().collect(),
        };
        let registration = match self
            .inner
            .runners
            .register(build.id, assignment, log.clone())
        {
            Ok(r) => r,
            Err(e) => return Outcome::failed(e.to_string()),
        };

        let job = build_job(&BuildJob {
            namespace: self.inner.config.namespace.clone(),
            project: build.project.to_string(),
            build: build.id,
            build_image: image.clone(),
            runner_image: self.inner.config.runner_image.clone(),
            server: self.inner.server_url.clone(),
            token: registration.token.clone(),
            timeout: Some(spec.build.timeout),
        });
        let name = match self.inner.jobs.apply(&job).await {
            Ok(name) => name,
            Err(e) => {
                drop(registration);
                let outcome = fail("kubernetes", format!("cannot create the build's Job: {e}"));
                discard(&reservation, log).await;
                return outcome;
            }
        };
        log.opus(
            "kubernetes",
            &format!(
                "created Job {name} in namespace {}: image {image}, time limit {}",
                self.inner.jobs.namespace(),
                humantime::format_duration(spec.build.timeout)
            ),
        );

        let watch = Watch {
            executor: self,
            ctx,
            store,
            build: &build,
            project: &project,
            spec: &spec,
            reservation: &reservation,
            log,
        };
        let outcome = watch
            .until_end(registration, cancel, deadline_of(spec.build.timeout))
            .await;
        if outcome.state != BuildState::Succeeded {
            discard(&reservation, log).await;
        }
        outcome
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

/// A build whose Job exists, being watched.
struct Watch<'a> {
    executor: &'a KubeExecutor,
    ctx: &'a BuildContext,
    store: &'a MetaStore,
    build: &'a Build,
    project: &'a opus_core::model::Project,
    spec: &'a opus_core::manifest::OpusFile,
    reservation: &'a Reservation,
    log: &'a BuildLog,
}

impl Watch<'_> {
    /// Waits for the build's end; deletes the Job when the build ends because of opusd (cancel,
    /// a pod that cannot start, opusd's own deadline). The registration (and so the build's token)
    /// ends with this call.
    async fn until_end(
        &self,
        mut registration: Registration,
        cancel: &CancellationToken,
        limit: std::time::Duration,
    ) -> Outcome {
        let inner = &self.executor.inner;
        let name = job_name(self.build.project.as_str(), self.build.id);
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
                        return self.finished(finish).await;
                    }
                }
                () = cancel.cancelled() => {
                    self.delete_job("cancelled").await;
                    return Outcome::cancelled();
                }
                () = &mut deadline => {
                    self.delete_job("past its time limit").await;
                    let msg = format!(
                        "timed out: the Job {name} did not end within {} (build.timeout, and as long again up to a minute)",
                        humantime::format_duration(limit)
                    );
                    self.log.opus("timeout", &msg);
                    return Outcome::failed(msg);
                }
                _ = ticker.tick() => {}
            }
            let state = match inner
                .jobs
                .state(self.build.project.as_str(), self.build.id)
                .await
            {
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
                return self.finished(finish).await;
            }
            match &state {
                JobState::PodFailed(reason) => {
                    self.log.opus("kubernetes", reason);
                    self.delete_job("cannot start").await;
                    return Outcome::failed(reason.clone());
                }
                JobState::Failed(reason) => {
                    self.log
                        .opus("kubernetes", &format!("Job {name} failed: {reason}"));
                    return Outcome::failed(reason.clone());
                }
                JobState::Succeeded => {
                    let msg = format!(
                        "the build pod exited without reporting to opusd; see `kubectl -n {} logs job/{name}`",
                        inner.jobs.namespace()
                    );
                    self.log.opus("kubernetes", &msg);
                    return Outcome::failed(msg);
                }
                JobState::Missing => {
                    let msg = format!("the Job {name} was deleted outside Opus");
                    self.log.opus("kubernetes", &msg);
                    return Outcome::failed(msg);
                }
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

    /// Handles the runner's report: commits the uploaded version (after checking it) or records
    /// the failure, and answers the runner.
    async fn finished(&self, finish: Finish) -> Outcome {
        let Finish { request, reply } = finish;
        if !request.succeeded {
            let _ = reply.send(Ok(()));
            let reason = if request.reason.trim().is_empty() {
                "the runner reported a failure without a reason".to_owned()
            } else {
                request.reason
            };
            return Outcome::failed(reason);
        }
        let origin = Origin {
            build_id: self.build.id,
            commit: self.build.commit.clone(),
            store: self.build.store.clone(),
        };
        let version = self.reservation.version().clone();
        match self.reservation.commit_uploaded(&origin).await {
            Ok(stored) => {
                let _ = reply.send(Ok(()));
                self.log.opus(
                    "store",
                    &format!(
                        "stored version {version} in {}: {} file(s), {} bytes, uploaded by the runner",
                        stored.record.store, stored.record.file_count, stored.record.size
                    ),
                );
                // The same step as local builds: site options, automatic deploys, retention.
                crate::promotion::after_stored(
                    self.store,
                    &self.ctx.deployer,
                    self.build,
                    self.project,
                    self.spec,
                    version.as_str(),
                    self.log,
                )
                .await;
                Outcome::succeeded()
            }
            Err(e) => {
                let msg = format!("storing version {version} failed: {e}");
                self.log.opus("store", &msg);
                let _ = reply.send(Err(msg.clone()));
                Outcome::failed(msg)
            }
        }
    }

    /// Deletes the build's Job (background propagation: its pod goes too), saying so in the log.
    async fn delete_job(&self, why: &str) {
        let inner = &self.executor.inner;
        let name = job_name(self.build.project.as_str(), self.build.id);
        match inner
            .jobs
            .delete(self.build.project.as_str(), self.build.id)
            .await
        {
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
