//! One build from start to end, whichever executor runs it.
//!
//! [`run`] is called by the scheduler with a slot held, and owns the whole sequence:
//!
//! 1. prepare: start the build, open its log, admit a pull request by its base branch's opus.yml
//!    (`pull_request`), make its workspace, fetch the source
//!    (`Executor::source`), decide the version (`prepare::record_checkout`), read the recipe,
//!    make the steps' environment (`prepare::build_env`);
//! 2. execute the recipe's [`Job`] on the [`Executor`]: the local one runs the steps here
//!    ([`job::run_job`]), the kubernetes one in a build pod whose runner uploads the output;
//! 3. store the output as a version, with its site options in the same commit (`store`);
//! 4. check it (`gate`: opus.yml `checks:` against the version's own URL; a failure fails the
//!    build and moves no environment), then promote it ([`crate::promotion::after_stored`]:
//!    automatic deploys, retention); an
//!    environment with `approval: true` is left for `opus approve`, and the build then ends
//!    awaiting approval ([`crate::approval`]);
//! 5. finish: record the outcome (with its event), remove the workspace, close the log.
//!
//! Every stage fails with a [`BuildFailure`]; the first one becomes the build's [`Outcome`].
//!
//! Modules: `failure` (the failure and outcome types), `prepare` (version and environment),
//! `job` (a job: steps and output checks, shared with `opusd runner`), [`steps`] (running steps
//! as processes), `local` (the local executor), `store` (a version from the executor's output),
//! [`pipeline`] (a pipeline's stages of parallel jobs, on either executor), `job_copy` (each
//! job's copy of the checkout), `when` (`when:` of jobs and stages).
//!
//! A `build:` recipe is one job and runs in the checkout itself, as it always did; a
//! `pipeline:` runs through `pipeline::run`.

mod executor;
mod failure;
mod gate;
mod job;
pub mod job_copy;
mod local;
pub mod pipeline;
pub(crate) mod prepare;
mod pull_request;
pub mod steps;
mod store;
mod when;

use std::path::PathBuf;
use std::time::SystemTime;

use opus_core::error::{ModelError, StoreError};
use opus_core::model::{Build, BuildState, DEFAULT_STORE, StoreName};
use opus_core::recipe;
use opus_core::store::MetaStore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span};

pub use executor::Executor;
pub(crate) use executor::Produced;
pub use failure::{BuildFailure, FailureKind, Outcome, Stage};
pub use job::{Job, Output, check_output, run_job};
pub use pipeline::JobSlots;

use crate::logs::{BuildLog, LogHub};
use crate::source::SourceFetcher;

/// What every build needs from the daemon.
#[derive(Clone)]
pub struct BuildContext {
    /// `<data-dir>/work`: one workspace per build.
    pub work_dir: PathBuf,
    /// `<data-dir>/cache`: cache folders per project.
    pub cache_dir: PathBuf,
    /// Build logs.
    pub logs: LogHub,
    /// Source checkouts.
    pub sources: SourceFetcher,
    /// Names of the artifact stores a trigger may name.
    pub store_names: Vec<StoreName>,
    /// Where a succeeded build's output is stored as a version.
    pub artifacts: opus_core::artifact::ArtifactStore,
    /// Automatic deploys and retention after a version is stored.
    pub deployer: crate::deploys::Deployer,
    /// Where builds run: here, or as Kubernetes Jobs (`--executor kubernetes`).
    pub executor: Executor,
}

impl BuildContext {
    /// Reads the store name a trigger asks for (empty means [`DEFAULT_STORE`]) as one of the
    /// stores opusd was started with; refuses any other.
    pub fn check_store(&self, name: &str) -> Result<StoreName, ModelError> {
        let name = if name.is_empty() { DEFAULT_STORE } else { name };
        if let Some(known) = self.store_names.iter().find(|n| n.as_str() == name) {
            return Ok(known.clone());
        }
        let names: Vec<&str> = self.store_names.iter().map(StoreName::as_str).collect();
        Err(ModelError::Invalid(format!(
            "unknown artifact store {name:?}: this opusd has {}; start opusd with --extra-store {name}=URL to add it",
            names.join(", ")
        )))
    }
}

/// Runs build `id` to its end. `cancel` stops it (user cancel or shutdown); `stopping` tells the
/// two apart; `slots` are where a pipeline's jobs run.
pub async fn run(
    ctx: &BuildContext,
    store: &MetaStore,
    id: u64,
    cancel: CancellationToken,
    stopping: &CancellationToken,
    slots: JobSlots,
) {
    let started = store.update_build(id, |b| {
        if b.state == BuildState::Queued {
            b.state = BuildState::Running;
            b.started_at = Some(SystemTime::now());
        }
    });
    let build = match started {
        Ok(b) if b.state == BuildState::Running => b,
        Ok(_) => return, // cancelled while it waited for its slot
        Err(e) => {
            error!(build = id, error = %e, "cannot start build");
            let failure = BuildFailure::new(Stage::Start, FailureKind::Metadata(e));
            record(store, id, Outcome::from(failure));
            return;
        }
    };
    let span = info_span!("build", build = id, project = %build.project, number = build.number);
    async {
        let masks = store
            .secrets(&build.project)
            .map(|s| s.into_iter().map(|(_, v)| v).collect())
            .unwrap_or_default();
        let log = match ctx.logs.open(id, masks) {
            Ok(log) => log,
            Err(e) => {
                let failure = BuildFailure::new(Stage::Start, FailureKind::Log(e));
                record(store, id, Outcome::from(failure));
                return;
            }
        };
        let workspace = ctx.work_dir.join(id.to_string());
        let outcome = match sequence(ctx, store, &build, &workspace, &log, &cancel, slots).await {
            Ok(awaiting) if awaiting.is_empty() => Outcome::succeeded(),
            Ok(awaiting) => {
                let reason = crate::approval::waiting_reason(&build, &awaiting);
                Outcome::awaiting_approval(awaiting, reason)
            }
            Err(failure) if failure.is_cancel() && stopping.is_cancelled() => {
                Outcome::from(BuildFailure::new(failure.stage, FailureKind::Stopped))
            }
            Err(failure) => {
                failure.report(&log);
                Outcome::from(failure)
            }
        };
        finish(ctx, store, id, &workspace, &log, outcome).await;
    }
    .instrument(span)
    .await;
}

/// Prepare, execute, store, promote: everything between start and finish that can fail. Returns
/// the environments that await approval (none: the build succeeded).
async fn sequence(
    ctx: &BuildContext,
    store: &MetaStore,
    build: &Build,
    workspace: &std::path::Path,
    log: &BuildLog,
    cancel: &CancellationToken,
    slots: JobSlots,
) -> Result<Vec<opus_core::model::EnvName>, BuildFailure> {
    let project = store
        .get_project(&build.project)
        .map_err(|e| BuildFailure::new(Stage::Start, e))?;
    if let Some(pr) = &build.pull_request {
        let scratch = ctx.work_dir.join(format!("{}.base", build.id));
        pull_request::admit(ctx, store, &project, build, pr, &scratch, log).await?;
    }
    prepare::fresh_dir(workspace).await.map_err(|source| {
        BuildFailure::new(
            Stage::Start,
            FailureKind::Workspace {
                path: workspace.to_path_buf(),
                source,
            },
        )
    })?;
    let checkout = ctx
        .executor
        .source(ctx, &project, build, workspace, log, cancel)
        .await?;
    let build = prepare::record_checkout(store, build, &checkout)?;
    let (spec, origin) =
        recipe::discover(workspace).map_err(|e| BuildFailure::new(Stage::Recipe, e))?;
    ctx.executor.describe_recipe(&spec, origin, log);
    if crate::triggers::reads_triggers(&project.branch, &build) {
        crate::triggers::record(store, &build, &spec, log)?;
    }
    let plan = spec.plan();
    let base_env = prepare::build_env(store, &build)?;
    let check_env = base_env.clone();
    let produced = match &ctx.executor {
        executor if plan.is_pipeline => {
            pipeline::run(
                ctx, store, executor, &project, &build, &plan, origin, base_env, workspace, log,
                cancel, slots,
            )
            .await?
        }
        _ => {
            let job = Job::from_recipe(&spec, origin, workspace)?;
            let mut env = plan.output_job().map(|j| j.env.clone()).unwrap_or_default();
            env.extend(base_env);
            ctx.executor
                .execute(ctx, &project, &build, &job, env, workspace, log, cancel)
                .await?
        }
    };
    let mut awaiting = Vec::new();
    if let Some(produced) = produced {
        let options = store::site_options(&spec, origin, &produced, log);
        store::store(ctx, &build, produced, &options, log).await?;
        let version = prepare::decided_version(&build, Stage::Store)?;
        gate::before_promotion(
            ctx,
            store,
            gate::Gate {
                build: &build,
                project: &project,
                recipe: (&spec, origin),
                version,
                env: &check_env,
                workspace,
            },
            log,
            cancel,
        )
        .await?;
        awaiting = crate::promotion::after_stored(
            store,
            &ctx.deployer,
            &build,
            &project,
            (&spec, origin),
            version,
            log,
        )
        .await;
    }
    Ok(awaiting)
}

/// Ends a build: removes its workspace, says how it ended, records the outcome (and its event),
/// closes the log.
async fn finish(
    ctx: &BuildContext,
    store: &MetaStore,
    id: u64,
    workspace: &std::path::Path,
    log: &BuildLog,
    outcome: Outcome,
) {
    for dir in [workspace.to_path_buf(), pipeline::jobs_dir(workspace)] {
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log.opus("cleanup", &format!("cannot remove the workspace: {e}"));
        }
    }
    let line = match outcome.state() {
        BuildState::Succeeded => "build succeeded".to_owned(),
        BuildState::AwaitingApproval => outcome.reason().to_owned(),
        state => format!("build {state}: {}", outcome.reason()),
    };
    log.opus("done", &line);
    info!(state = %outcome.state(), reason = %outcome.reason(), "build ended");
    record(store, id, outcome);
    log.finish();
    ctx.logs.close(id);
}

/// Records the outcome (and its event), and makes it durable.
///
/// A failure on a full disk says so (the step or file that hit it may not). The outcome is
/// flushed: sled accepts a write before its disk does, and when the disk fills meanwhile, the
/// store reopened afterwards no longer has it (the build would look queued or running for
/// good). When the store cannot take or keep the outcome, it is written again as soon as the
/// store takes writes, so that what clients were told is what stays: the outcome itself when
/// the store had taken it (others may have read it), else failed (a client following the
/// build is told so: see `api::builds`).
fn record(store: &MetaStore, id: u64, outcome: Outcome) {
    let outcome = match store
        .path()
        .parent()
        .and_then(crate::health::full_disk_note)
    {
        Some(note) => outcome.noted(&note),
        None => outcome,
    };
    let write = move |store: &MetaStore, outcome: &Outcome| {
        if outcome.state() == BuildState::AwaitingApproval {
            return store.await_approval(id, outcome.awaiting(), outcome.reason());
        }
        store.update_build(id, |b| {
            b.state = outcome.state();
            b.reason = outcome.reason().to_owned();
            b.finished_at = Some(SystemTime::now());
        })
    };
    let mut written = true;
    let outcome = match write(store, &outcome) {
        Ok(_) => outcome,
        Err(e) => {
            written = false;
            error!(build = id, error = %e, "cannot record the build's outcome; retrying until the store takes it");
            Outcome::unrecorded(&e)
        }
    };
    let store = store.clone();
    tokio::spawn(async move {
        let mut retry = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            if written && store.flush().await.is_ok() {
                return;
            }
            retry.tick().await;
            written = match write(&store, &outcome) {
                Ok(_) => true,
                Err(StoreError::BuildNotFound(_) | StoreError::Corrupt { .. }) => return,
                Err(_) => false,
            };
        }
    });
}
