//! Running a pipeline (opus.yml `pipeline:`): its stages one after the other, the jobs of a
//! stage in parallel. On the local executor each job runs in its own copy of the checkout
//! ([`super::job_copy`]) with its own cache folders; on the kubernetes executor each job is its
//! own Job (`KubeExecutor::execute_pipeline_job`), and cancelling a job deletes its Job.
//!
//! - A job takes a slot ([`JobSlots`]): the build's own, or one more of the `--max-builds` slots
//!   while one is free; so slots count jobs, and a pipeline always makes progress on its own slot
//!   (waiting only for other builds' slots could deadlock two pipelines holding one each).
//! - A stage starts when every job of the previous one succeeded. The first job that fails
//!   cancels its running siblings, and the build fails naming the job, its stage and its step.
//! - `when:` skips a job or a stage, with the reason in the log (`super::when`).
//! - A job's log lines are named `<job>/<step>` (`unit/step 1`, `unit/job`), which
//!   `opus logs web#12 --job unit` selects; each change of a job is an event (`job.started`,
//!   `job.succeeded`, `job.failed`, `job.cancelled`, `job.skipped`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use opus_core::model::{Build, EventKind, Project, ProjectName};
use opus_core::recipe::{Plan, PlannedJob, SpecOrigin, When};
use opus_core::store::MetaStore;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::executor::{Executor, Produced};
use super::failure::{BuildFailure, FailureKind, Stage};
use super::job::{Job, run_job};
use super::job_copy::copy_checkout;
use super::steps::LogSink;
use super::when::{Facts, note, skip_reason};
use super::{BuildContext, local};
use crate::kubernetes::PipelineJob;
use crate::logs::BuildLog;

/// The step name of the pipeline's own lines in the build log.
const PIPELINE_STEP: &str = "pipeline";

/// The slots a build's jobs run in: its own (the one the scheduler gave the build), or any free
/// one of the daemon's `--max-builds`.
#[derive(Clone)]
pub struct JobSlots {
    global: Arc<Semaphore>,
    own: Arc<Semaphore>,
}

impl JobSlots {
    /// The slots of a build that holds one of `global`'s permits already.
    pub fn new(global: Arc<Semaphore>) -> JobSlots {
        JobSlots {
            global,
            own: Arc::new(Semaphore::new(1)),
        }
    }

    /// Waits for a slot: the build's own when it is free, else the first free one of the rest.
    async fn acquire(&self) -> OwnedSemaphorePermit {
        let own = self.own.clone().acquire_owned();
        let global = async {
            match self.global.clone().acquire_owned().await {
                Ok(p) => p,
                // Closed at shutdown: only the build's own slot is left.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            p = own => match p {
                Ok(p) => p,
                Err(_) => std::future::pending().await,
            },
            p = global => p,
        }
    }
}

/// A job's view of the build log: every line's step is prefixed with the job's name.
#[derive(Clone)]
pub(crate) struct JobLog {
    log: BuildLog,
    job: Arc<str>,
}

impl JobLog {
    fn new(log: &BuildLog, job: &str) -> JobLog {
        JobLog {
            log: log.clone(),
            job: job.into(),
        }
    }
}

impl LogSink for JobLog {
    fn line(&self, step: &str, stream: &str, text: &str) {
        self.log.line(&format!("{}/{step}", self.job), stream, text);
    }
}

/// The folder that holds the jobs' copies of the checkout `workspace`: `<work>/<build>.jobs`.
pub(crate) fn jobs_dir(workspace: &Path) -> PathBuf {
    let mut name = workspace.file_name().unwrap_or_default().to_owned();
    name.push(".jobs");
    workspace.with_file_name(name)
}

/// What every job of one build shares.
struct Shared {
    ctx: BuildContext,
    store: MetaStore,
    /// Where jobs run: here (each in its copy of the checkout), or each as its own Job.
    executor: Executor,
    /// The project's record (its source, for a Job's runner).
    record: Project,
    /// The build (its id, commit and version, for a Job's runner).
    build: Build,
    project: ProjectName,
    number: u64,
    origin: SpecOrigin,
    base_env: BTreeMap<String, String>,
    checkout: PathBuf,
    jobs_dir: PathBuf,
    slots: JobSlots,
}

impl Shared {
    /// Appends the event `kind` of `job` (of `stage`), with `extra` fields; a store that cannot
    /// take it is logged, and the build goes on.
    fn event(&self, kind: EventKind, job: &str, stage: &str, extra: serde_json::Value) {
        let mut payload = json!({
            "project": self.project.as_str(),
            "build": self.number,
            "job": job,
            "stage": stage,
        });
        if let (Some(payload), serde_json::Value::Object(extra)) = (payload.as_object_mut(), extra)
        {
            payload.extend(extra);
        }
        if let Err(e) = self.store.record_job_event(kind, &self.project, payload) {
            tracing::warn!(job, event = kind.as_str(), error = %e, "cannot record a job event");
        }
    }
}

/// Runs `plan` for `build`, whose checkout is `workspace`; `base_env` is what opusd gives every
/// step (it wins over opus.yml's `env`). The output job's folder is what it returns.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    ctx: &BuildContext,
    store: &MetaStore,
    executor: &Executor,
    project: &Project,
    build: &Build,
    plan: &Plan,
    origin: SpecOrigin,
    base_env: BTreeMap<String, String>,
    workspace: &Path,
    log: &BuildLog,
    cancel: &CancellationToken,
    slots: JobSlots,
) -> Result<Option<Produced>, BuildFailure> {
    let has_paths = |w: &Option<When>| w.as_ref().is_some_and(|w| !w.paths.is_empty());
    let needs_paths =
        plan.stages.iter().any(|s| has_paths(&s.when)) || plan.jobs().any(|j| has_paths(&j.when));
    let facts = Facts::gather(build.branch.clone(), &build.commit, workspace, needs_paths).await;
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        store: store.clone(),
        executor: executor.clone(),
        record: project.clone(),
        build: build.clone(),
        project: build.project.clone(),
        number: build.number,
        origin,
        base_env,
        checkout: workspace.to_path_buf(),
        jobs_dir: jobs_dir(workspace),
        slots,
    });
    let mut output = None;
    for stage in &plan.stages {
        if let Some(reason) = skip_reason(stage.when.as_ref(), &facts) {
            log.opus(
                PIPELINE_STEP,
                &format!("stage {} skipped: {reason}", stage.name),
            );
            for job in &stage.jobs {
                let why = format!("stage {} skipped: {reason}", stage.name);
                JobLog::new(log, job.name.as_str()).opus("job", &format!("skipped: {why}"));
                shared.event(
                    EventKind::JobSkipped,
                    job.name.as_str(),
                    &stage.name,
                    json!({ "reason": why }),
                );
            }
            continue;
        }
        if let Some(n) = note(stage.when.as_ref(), &facts) {
            log.opus(PIPELINE_STEP, &format!("stage {}: {n}", stage.name));
        }
        let stage_cancel = cancel.child_token();
        let mut running = JoinSet::new();
        let mut names = Vec::new();
        for job in &stage.jobs {
            let job_log = JobLog::new(log, job.name.as_str());
            if let Some(reason) = skip_reason(job.when.as_ref(), &facts) {
                job_log.opus("job", &format!("skipped: {reason}"));
                shared.event(
                    EventKind::JobSkipped,
                    job.name.as_str(),
                    &stage.name,
                    json!({ "reason": reason }),
                );
                continue;
            }
            if let Some(n) = note(job.when.as_ref(), &facts) {
                job_log.opus("job", n);
            }
            names.push(job.name.as_str());
            let (shared, job, cancel) = (shared.clone(), job.clone(), stage_cancel.clone());
            let stage_name = stage.name.clone();
            let index = plan
                .jobs()
                .position(|j| j.name == job.name)
                .unwrap_or_default();
            let build_log = log.clone();
            running.spawn(async move {
                let ran = run_one(
                    &shared,
                    &stage_name,
                    &job,
                    index,
                    &build_log,
                    &job_log,
                    &cancel,
                )
                .await;
                (job.name, stage_name, ran)
            });
        }
        log.opus(
            PIPELINE_STEP,
            &format!("stage {}: running {}", stage.name, names.join(", ")),
        );
        let mut failed: Option<BuildFailure> = None;
        while let Some(joined) = running.join_next().await {
            let (job, stage_name, ran) = match joined {
                Ok(done) => done,
                Err(e) => {
                    stage_cancel.cancel();
                    failed.get_or_insert(BuildFailure::new(
                        Stage::Steps,
                        FailureKind::JobTask(e.to_string()),
                    ));
                    continue;
                }
            };
            match ran {
                Ok(Some(out)) => output = Some(out),
                Ok(None) => {}
                Err(f) if f.is_cancel() => {}
                Err(f) => {
                    if failed.is_none() {
                        stage_cancel.cancel();
                        failed = Some(BuildFailure::new(
                            f.stage,
                            FailureKind::InJob {
                                job: job.to_string(),
                                stage: stage_name,
                                failure: f,
                            },
                        ));
                    }
                }
            }
        }
        if cancel.is_cancelled() {
            return Err(BuildFailure::cancelled());
        }
        if let Some(failure) = failed {
            return Err(failure);
        }
        log.opus(PIPELINE_STEP, &format!("stage {} succeeded", stage.name));
    }
    match output {
        Some(out) => Ok(Some(out)),
        None => Err(BuildFailure::new(Stage::Output, FailureKind::NoOutput)),
    }
}

/// Runs one job: a slot, its copy of the checkout, its cache, its steps; says in its log how it
/// ended (a failure's reason included).
async fn run_one(
    shared: &Shared,
    stage: &str,
    planned: &PlannedJob,
    index: usize,
    build_log: &BuildLog,
    log: &JobLog,
    cancel: &CancellationToken,
) -> Result<Option<Produced>, BuildFailure> {
    let started = Instant::now();
    let result = async {
        let _slot = tokio::select! {
            p = shared.slots.acquire() => p,
            () = cancel.cancelled() => return Err(BuildFailure::cancelled()),
        };
        let containment = match &shared.executor {
            Executor::Local(containment) => *containment,
            Executor::Kubernetes(kube) => {
                shared.event(
                    EventKind::JobStarted,
                    planned.name.as_str(),
                    stage,
                    json!({}),
                );
                log.opus("job", "started: as its own Job");
                let job = Job::from_planned(planned, shared.origin, &shared.checkout);
                return kube
                    .execute_pipeline_job(
                        &shared.ctx,
                        &shared.record,
                        &shared.build,
                        &job,
                        PipelineJob {
                            name: planned.name.to_string(),
                            index,
                        },
                        job_env(planned, &shared.base_env),
                        build_log,
                        log,
                        cancel,
                    )
                    .await;
            }
        };
        let workspace = shared.jobs_dir.join(planned.name.as_str());
        let copied = copy_checkout(shared.checkout.clone(), workspace.clone())
            .await
            .map_err(|e| BuildFailure::new(Stage::Start, FailureKind::JobCopy(e)))?;
        shared.event(
            EventKind::JobStarted,
            planned.name.as_str(),
            stage,
            json!({}),
        );
        log.opus(
            "job",
            &format!(
                "started: {} file(s) copied, {} git object(s) linked in {} ms",
                copied.copied,
                copied.linked,
                started.elapsed().as_millis()
            ),
        );
        let job = Job::from_planned(planned, shared.origin, &workspace);
        let env = job_env(planned, &shared.base_env);
        // Each job its own cache, inside the project's (removed with the project).
        let cache_root = shared
            .ctx
            .cache_dir
            .join(shared.project.as_str())
            .join(".jobs")
            .join(planned.name.as_str());
        local::restore_cache(&cache_root, &workspace, &job.cache, log).await;
        let ran = run_job(&job, &workspace, &env, log, cancel, containment).await;
        local::save_cache(&cache_root, &workspace, &job.cache, log).await;
        ran.map(|out| out.map(Produced::Folder))
    }
    .await;
    let took = started.elapsed();
    let (secs, ms) = (took.as_secs_f64(), took.as_millis() as u64);
    let name = planned.name.as_str();
    match &result {
        Ok(_) => {
            log.opus("job", &format!("succeeded in {secs:.1} s"));
            shared.event(EventKind::JobSucceeded, name, stage, json!({ "ms": ms }));
        }
        Err(f) if f.is_cancel() => {
            log.opus("job", "cancelled");
            shared.event(EventKind::JobCancelled, name, stage, json!({ "ms": ms }));
        }
        Err(f) => {
            f.report(log);
            log.opus("job", &format!("failed in {secs:.1} s: {f}"));
            let reason = f.to_string();
            shared.event(
                EventKind::JobFailed,
                name,
                stage,
                json!({ "ms": ms, "reason": reason }),
            );
        }
    }
    result
}

/// The environment of a job's steps: its opus.yml `env` (pipeline, stage, job), `OPUS_JOB`, and
/// what opusd gives every step (which wins).
fn job_env(planned: &PlannedJob, base_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = planned.env.clone();
    env.insert("OPUS_JOB".to_owned(), planned.name.to_string());
    env.extend(base_env.clone());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_use_free_slots_and_always_their_builds_own() {
        // Two slots, both held by two builds (the scheduler's permits).
        let global = Arc::new(Semaphore::new(2));
        let _first = global.clone().acquire_owned().await.expect("permit");
        let second = global.clone().acquire_owned().await.expect("permit");
        let (a, b) = (JobSlots::new(global.clone()), JobSlots::new(global.clone()));
        // Each build still runs a job on its own slot: no deadlock with every slot taken.
        let a1 = a.acquire().await;
        let b1 = b.acquire().await;
        // A second job of `a` waits: no slot is free.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), a.acquire());
        assert!(waiting.await.is_err(), "a second job ran without a slot");
        // A slot freed by another build is taken by the waiting job.
        drop(second);
        let a2 = a.acquire().await;
        assert_eq!(global.available_permits(), 0);
        drop((a1, b1, a2));
        // Shut down (closed): jobs still run on their build's own slot.
        global.close();
        let _own = a.acquire().await;
    }

    #[test]
    fn job_copies_sit_beside_the_checkout() {
        assert_eq!(
            jobs_dir(Path::new("/data/work/12")),
            Path::new("/data/work/12.jobs")
        );
    }
}
