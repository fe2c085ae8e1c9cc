//! One build from start to end: source, recipe, steps, output, outcome.
//!
//! [`run`] is called by the scheduler with a slot held. Every outcome is recorded: the build's
//! state and reason in the store (with its event), the story in the build log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use opus_core::error::ModelError;
use opus_core::manifest;
use opus_core::model::{Build, BuildState, VersionName, branch_slug};
use opus_core::store::MetaStore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span};

use crate::executor::{self, StepFailure};
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
    pub store_names: Vec<String>,
    /// Where a succeeded build's output is stored as a version.
    pub artifacts: opus_core::artifact::ArtifactStore,
    /// Automatic deploys and retention after a version is stored.
    pub deployer: crate::deploys::Deployer,
    /// The kubernetes executor, when builds run as Jobs (`--executor kubernetes`); else builds
    /// run here.
    pub kubernetes: Option<crate::kubernetes::KubeExecutor>,
}

impl BuildContext {
    /// Refuses a store name opusd was not started with.
    pub fn check_store(&self, name: &str) -> Result<(), ModelError> {
        if self.store_names.iter().any(|n| n == name) {
            return Ok(());
        }
        Err(ModelError::Invalid(format!(
            "unknown artifact store {name:?}: this opusd has {}; start opusd with --extra-store {name}=URL to add it",
            self.store_names.join(", ")
        )))
    }
}

/// How a build ended, before it is recorded.
pub(crate) struct Outcome {
    pub(crate) state: BuildState,
    pub(crate) reason: String,
}

impl Outcome {
    pub(crate) fn failed(reason: impl Into<String>) -> Outcome {
        Outcome {
            state: BuildState::Failed,
            reason: reason.into(),
        }
    }

    pub(crate) fn cancelled() -> Outcome {
        Outcome {
            state: BuildState::Cancelled,
            reason: "cancelled by a user".into(),
        }
    }

    pub(crate) fn succeeded() -> Outcome {
        Outcome {
            state: BuildState::Succeeded,
            reason: String::new(),
        }
    }
}

/// Runs build `id` to its end. `cancel` stops it (user cancel or shutdown); `stopping` tells the
/// two apart.
pub async fn run(
    ctx: &BuildContext,
    store: &MetaStore,
    id: u64,
    cancel: CancellationToken,
    stopping: &CancellationToken,
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
            finish(store, id, Outcome::failed(format!("cannot start: {e}")));
            return;
        }
    };
    let span = info_span!("build", build = id, project = %build.project);
    async {
        let masks = store
            .secrets(build.project.as_str())
            .map(|s| s.into_iter().map(|(_, v)| v).collect())
            .unwrap_or_default();
        let log = match ctx.logs.open(id, masks) {
            Ok(log) => log,
            Err(e) => {
                finish(
                    store,
                    id,
                    Outcome::failed(format!("cannot open the build log: {e}")),
                );
                return;
            }
        };
        let workspace = ctx.work_dir.join(id.to_string());
        let outcome = match &ctx.kubernetes {
            Some(k) => {
                k.execute(ctx, store, &build, &workspace, &log, &cancel)
                    .await
            }
            None => execute(ctx, store, &build, &workspace, &log, &cancel).await,
        };
        let outcome = match outcome {
            Outcome {
                state: BuildState::Cancelled,
                ..
            } if stopping.is_cancelled() => {
                Outcome::failed("opusd stopped while the build was running")
            }
            o => o,
        };
        if let Err(e) = tokio::fs::remove_dir_all(&workspace).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log.opus("cleanup", &format!("cannot remove the workspace: {e}"));
        }
        let line = match outcome.state {
            BuildState::Succeeded => "build succeeded".to_owned(),
            state => format!("build {state}: {}", outcome.reason),
        };
        log.opus("done", &line);
        info!(state = %outcome.state, reason = %outcome.reason, "build ended");
        finish(store, id, outcome);
        log.finish();
        ctx.logs.close(id);
    }
    .instrument(span)
    .await;
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
fn finish(store: &MetaStore, id: u64, mut outcome: Outcome) {
    if outcome.state == BuildState::Failed
        && let Some(note) = store
            .path()
            .parent()
            .and_then(crate::health::full_disk_note)
    {
        outcome.reason = format!("{note} ({})", outcome.reason);
    }
    let write = move |store: &MetaStore, outcome: &Outcome| {
        store.update_build(id, |b| {
            b.state = outcome.state;
            b.reason = outcome.reason.clone();
            b.finished_at = Some(SystemTime::now());
        })
    };
    let mut written = true;
    let outcome = match write(store, &outcome) {
        Ok(_) => outcome,
        Err(e) => {
            written = false;
            error!(build = id, error = %e, "cannot record the build's outcome; retrying until the store takes it");
            Outcome::failed(format!("its outcome could not be recorded: {e}"))
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
                Err(
                    opus_core::error::StoreError::BuildNotFound(_)
                    | opus_core::error::StoreError::Corrupt { .. },
                ) => return,
                Err(_) => false,
            };
        }
    });
}

/// The part of a build that can fail: everything between start and record.
async fn execute(
    ctx: &BuildContext,
    store: &MetaStore,
    build: &Build,
    workspace: &Path,
    log: &BuildLog,
    cancel: &CancellationToken,
) -> Outcome {
    let project = match store.get_project(build.project.as_str()) {
        Ok(p) => p,
        Err(e) => return Outcome::failed(e.to_string()),
    };
    if let Err(e) = fresh_dir(workspace).await {
        return Outcome::failed(format!(
            "cannot create the workspace {}: {e}",
            workspace.display()
        ));
    }

    log.opus(
        "source",
        &format!("fetching {} at {}", project.source.display(), build.git_ref),
    );
    let checkout = tokio::select! {
        r = ctx.sources.checkout(&project, &build.git_ref, workspace) => r,
        () = cancel.cancelled() => return Outcome { state: BuildState::Cancelled, reason: "cancelled by a user".into() },
    };
    let checkout = match checkout {
        Ok(c) => c,
        Err(e) => {
            log.opus("source", &e.to_string());
            return Outcome::failed(e.to_string());
        }
    };
    let build = match record_checkout(store, build, &checkout, log) {
        Ok(b) => b,
        Err(outcome) => return outcome,
    };
    if !checkout.commit.is_empty() {
        log.opus("source", &format!("checked out {}", checkout.commit));
    }

    let (spec, origin) = match manifest::discover(workspace) {
        Ok(found) => found,
        Err(e) => {
            log.opus("recipe", &e.to_string());
            return Outcome::failed(e.to_string());
        }
    };
    log.opus("recipe", &origin.describe(&spec));

    let mut env: BTreeMap<String, String> = spec.build.env.clone();
    match build_env(store, &build) {
        Ok(vars) => env.extend(vars),
        Err(outcome) => return outcome,
    }

    let cache_root = ctx.cache_dir.join(build.project.as_str());
    restore_cache(&cache_root, workspace, &spec.build.cache, log).await;
    let ran = executor::run_steps(
        &spec.build.steps,
        workspace,
        &env,
        log,
        cancel,
        spec.build.timeout,
    )
    .await;
    save_cache(&cache_root, workspace, &spec.build.cache, log).await;
    match ran {
        Ok(()) => {}
        Err(StepFailure::Cancelled) => {
            return Outcome {
                state: BuildState::Cancelled,
                reason: "cancelled by a user".into(),
            };
        }
        Err(failure) => {
            if matches!(failure, StepFailure::TimedOut(_)) {
                log.opus("timeout", &failure.to_string());
            }
            return Outcome::failed(failure.to_string());
        }
    }

    let output = manifest::resolve_output(workspace, &spec.build, origin);
    let output_dir = workspace.join(&output);
    match tokio::fs::metadata(&output_dir).await {
        Ok(m) if m.is_dir() => {}
        _ => {
            let msg = format!(
                "the output folder {output:?} does not exist after the build (build.output in opus.yml)"
            );
            log.opus("output", &msg);
            return Outcome::failed(msg);
        }
    }
    if let Err(reason) = store_version(
        ctx,
        &build,
        &build.version,
        &checkout.commit,
        &output_dir,
        &output,
        log,
    )
    .await
    {
        return Outcome::failed(reason);
    }
    crate::promotion::after_stored(
        store,
        &ctx.deployer,
        &build,
        &project,
        &spec,
        &build.version,
        log,
    )
    .await;
    Outcome {
        state: BuildState::Succeeded,
        reason: String::new(),
    }
}

/// Stores the output folder (`output` in opus.yml's words) as the build's version (files,
/// archive, manifest, then the metadata commit). The error is the build's failure reason.
async fn store_version(
    ctx: &BuildContext,
    build: &Build,
    version: &str,
    commit: &str,
    output_dir: &Path,
    output: &str,
    log: &BuildLog,
) -> Result<(), String> {
    let version = VersionName::new(version).map_err(|e| e.to_string())?;
    let origin = opus_core::artifact::Origin {
        build_id: build.id,
        commit: commit.to_owned(),
        store: build.store.clone(),
    };
    match ctx
        .artifacts
        .store_dir(&build.project, &version, output_dir, &origin)
        .await
    {
        Ok(stored) => {
            // The counts of the walk that stored it: the output is not walked twice.
            log.opus(
                "output",
                &format!(
                    "{output}: {} file(s), {} bytes",
                    stored.record.file_count, stored.record.size
                ),
            );
            log.opus(
                "store",
                &format!(
                    "stored version {version} in {}: {} file(s) written ({} bytes), {} unchanged file(s) copied",
                    stored.record.store, stored.files_written, stored.bytes_written, stored.files_copied
                ),
            );
            Ok(())
        }
        Err(e) => {
            let msg = format!("storing version {version} failed: {e}");
            log.opus("store", &msg);
            Err(msg)
        }
    }
}

/// Records on the build what its checkout found: commit, branch, whether it is a tag, and the
/// version it will produce ([`decide_version`]). A version that cannot be made is logged under
/// "source" and fails the build.
pub(crate) fn record_checkout(
    store: &MetaStore,
    build: &Build,
    checkout: &crate::source::Checkout,
    log: &BuildLog,
) -> Result<Build, Outcome> {
    let version = decide_version(build, checkout).map_err(|e| {
        log.opus("source", &e);
        Outcome::failed(e)
    })?;
    store
        .update_build(build.id, |b| {
            b.commit = checkout.commit.clone();
            b.branch = checkout.branch.clone();
            b.is_tag = checkout.is_tag;
            b.version = version.clone();
        })
        .map_err(|e| Outcome::failed(e.to_string()))
}

/// The variables opusd gives every build step, whichever executor runs it: `CI`, the `OPUS_*`
/// variables of the build (after its checkout is recorded), and the project's secrets, which win
/// over the rest. opus.yml's own `env` goes under these.
pub(crate) fn build_env(
    store: &MetaStore,
    build: &Build,
) -> Result<BTreeMap<String, String>, Outcome> {
    let mut env = BTreeMap::new();
    env.insert("CI".to_owned(), "true".to_owned());
    env.insert("OPUS_PROJECT".to_owned(), build.project.to_string());
    env.insert("OPUS_BUILD".to_owned(), build.id.to_string());
    env.insert("OPUS_VERSION".to_owned(), build.version.clone());
    env.insert("OPUS_COMMIT".to_owned(), build.commit.clone());
    env.insert("OPUS_REF".to_owned(), build.git_ref.clone());
    let secrets = store
        .secrets(build.project.as_str())
        .map_err(|e| Outcome::failed(format!("cannot read the project's secrets: {e}")))?;
    env.extend(secrets);
    Ok(env)
}

/// The version a build produces: named by the trigger; a tag's name; or
/// `<branch-slug>-<build>-<short sha>` (`<branch-slug>-<build>` for a local source).
fn decide_version(build: &Build, checkout: &crate::source::Checkout) -> Result<String, String> {
    if build.version_pinned {
        return Ok(build.version.clone());
    }
    if checkout.is_tag {
        let tag = build.git_ref.trim_start_matches("refs/tags/");
        return VersionName::new(tag)
            .map(|v| v.to_string())
            .map_err(|e| format!("tag {tag:?} cannot be a version: {e}; trigger with --version"));
    }
    let slug = branch_slug(checkout.branch.as_deref().unwrap_or("commit"));
    let short: String = checkout.commit.chars().take(7).collect();
    let version = if short.is_empty() {
        format!("{slug}-{}", build.id)
    } else {
        format!("{slug}-{}-{short}", build.id)
    };
    VersionName::new(version)
        .map(|v| v.to_string())
        .map_err(|e| e.to_string())
}

/// Moves cached folders into the workspace (a rename: no copying).
async fn restore_cache(cache_root: &Path, workspace: &Path, folders: &[String], log: &BuildLog) {
    for folder in folders {
        let cached = cache_root.join(folder);
        let target = workspace.join(folder);
        if tokio::fs::metadata(&cached).await.is_err() || tokio::fs::metadata(&target).await.is_ok()
        {
            continue;
        }
        if let Some(parent) = target.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        match tokio::fs::rename(&cached, &target).await {
            Ok(()) => log.opus("cache", &format!("restored {folder}")),
            Err(e) => log.opus("cache", &format!("cannot restore {folder}: {e}")),
        }
    }
}

/// Moves the workspace's cache folders back for the next build.
async fn save_cache(cache_root: &Path, workspace: &Path, folders: &[String], log: &BuildLog) {
    for folder in folders {
        let source = workspace.join(folder);
        if tokio::fs::metadata(&source).await.is_err() {
            continue;
        }
        let cached = cache_root.join(folder);
        let _ = tokio::fs::remove_dir_all(&cached).await;
        if let Some(parent) = cached.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        if let Err(e) = tokio::fs::rename(&source, &cached).await {
            log.opus("cache", &format!("cannot keep {folder}: {e}"));
        }
    }
}

/// Creates `dir` empty: a new folder, or an emptied one when a folder of that name is left over.
async fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    match tokio::fs::create_dir(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            tokio::fs::remove_dir_all(dir).await?;
            tokio::fs::create_dir_all(dir).await
        }
        Err(_) => tokio::fs::create_dir_all(dir).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_workspace_starts_empty_even_over_a_leftover() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The work folder itself may be gone: it is created.
        let workspace = dir.path().join("work").join("7");
        fresh_dir(&workspace).await.expect("created");
        std::fs::create_dir(workspace.join("dist")).expect("mkdir");
        std::fs::write(workspace.join("dist").join("old.html"), "old").expect("write");
        fresh_dir(&workspace).await.expect("emptied");
        assert_eq!(std::fs::read_dir(&workspace).expect("read").count(), 0);
    }
}
