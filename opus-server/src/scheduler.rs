//! The scheduler: a FIFO queue of builds, at most `--max-builds` running at once.
//!
//! - `trigger` stores a queued build (with its `build.queued` event) and wakes the dispatcher. A
//!   newer trigger for the same project and ref cancels the older build still queued for it.
//! - The dispatcher takes a slot (a semaphore permit), pops the oldest queued build and runs it
//!   in its own task ([`crate::build::run`]).
//! - `cancel` removes a queued build or signals a running one, whose steps are then killed.
//! - On start, builds left `running` by a previous opusd become failed ("opusd restarted"), or
//!   succeeded when their version was committed before it stopped; the processes their steps
//!   left running are killed (`process_tree::kill_leftovers`); builds left `queued` are queued
//!   again, oldest first.
//! - `cancel_project` cancels a project's builds and waits for the running ones to end (before
//!   the project is removed).
//! - `shutdown` stops dispatching, gives running builds a grace period, then cancels them; they
//!   are recorded as failed ("opusd stopped"), and queued builds stay queued for the next start.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use opus_core::forge::{GithubCommit, PullRequest};
use opus_core::model::{Build, BuildState, ProjectName, Source, StoreName, Trigger, VersionName};
use opus_core::store::{MetaStore, TriggerMark};
use opus_core::{CoreError, error::ModelError, error::StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::build::BuildContext;
use crate::metrics::Metrics;

/// What GitHub tells of a build it triggers.
#[derive(Debug, Clone, Default)]
pub struct GithubOrigin {
    /// The commit its statuses go on (none: no statuses, e.g. a push without a repository).
    pub commit: Option<GithubCommit>,
    /// The pull request it builds.
    pub pull_request: Option<PullRequest>,
}

/// Whether a newer build makes the older one's work useless: the same pull request (whatever
/// its commit), or else the same ref outside any pull request.
/// What a build works on, as a newer trigger compares it to supersede a queued one: a pull
/// request by its number, anything else by its ref.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    PullRequest(u64),
    Ref(String),
}

impl Work {
    fn of(build: &Build) -> Work {
        match &build.pull_request {
            Some(pr) => Work::PullRequest(pr.number),
            None => Work::Ref(build.git_ref.clone()),
        }
    }
}

/// A build waiting in the queue, with what superseding and cancelling compare, so that a
/// trigger never reads the other queued builds' records (a trigger's cost stays flat however
/// long the queue is).
#[derive(Debug, Clone)]
struct Queued {
    id: u64,
    project: ProjectName,
    work: Work,
    /// A version given by hand: never superseded.
    pinned: bool,
}

impl Queued {
    fn of(build: &Build) -> Queued {
        Queued {
            id: build.id,
            project: build.project.clone(),
            work: Work::of(build),
            pinned: build.version_pinned,
        }
    }
}

/// What a trigger asks for.
#[derive(Debug, Clone)]
pub struct TriggerRequest {
    /// The project.
    pub project: ProjectName,
    /// Branch, tag, commit, or `latest`/empty for the default branch.
    pub git_ref: String,
    /// A version name that overrides the computed one.
    pub version: Option<String>,
    /// The artifact store, one opusd was started with ([`Scheduler::configured_store`]).
    pub store: StoreName,
    /// Who triggers.
    pub trigger: Trigger,
}

/// Why a build is waiting, for `GetBuild`/`ListBuilds`.
#[derive(Debug, Clone, Copy)]
pub struct QueueInfo {
    /// 1-based position in the queue.
    pub position: usize,
    /// Builds running now.
    pub running: usize,
    /// The limit.
    pub max: usize,
}

impl QueueInfo {
    /// "queued: 3rd, waiting for a free slot (4/4 running)".
    pub fn reason(&self) -> String {
        let n = self.position;
        let suffix = match (n % 10, n % 100) {
            (1, r) if r != 11 => "st",
            (2, r) if r != 12 => "nd",
            (3, r) if r != 13 => "rd",
            _ => "th",
        };
        if self.running >= self.max {
            format!(
                "queued: {n}{suffix}, waiting for a free slot ({}/{} running)",
                self.running, self.max
            )
        } else {
            format!(
                "queued: {n}{suffix}, starting ({}/{} running)",
                self.running, self.max
            )
        }
    }
}

struct Inner {
    store: MetaStore,
    context: BuildContext,
    max: usize,
    /// Builds waiting, oldest first.
    queue: Mutex<VecDeque<Queued>>,
    /// Running builds and the token that cancels each.
    running: Mutex<HashMap<u64, CancellationToken>>,
    /// Woken when the queue gains a build.
    queued: Notify,
    /// Woken when a running build's task has ended.
    ended: Notify,
    slots: Arc<Semaphore>,
    /// Cancelled when opusd shuts down.
    stopping: CancellationToken,
    tasks: TaskTracker,
    /// Build gauges (queued, running), finished counts and durations.
    metrics: Metrics,
}

/// The build scheduler; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// Recovers builds left by a previous run and starts dispatching.
    pub fn start(
        store: MetaStore,
        context: BuildContext,
        max: usize,
        metrics: Metrics,
    ) -> Result<Scheduler, StoreError> {
        let inner = Arc::new(Inner {
            store: store.clone(),
            context,
            max,
            queue: Mutex::default(),
            running: Mutex::default(),
            queued: Notify::new(),
            ended: Notify::new(),
            slots: Arc::new(Semaphore::new(max)),
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics,
        });
        let left = store.builds_in_states(&[BuildState::Running, BuildState::Queued])?;
        for build in left {
            if build.state == BuildState::Running {
                let state = recover_running(&store, &build)?;
                inner.metrics.build_finished(state.as_str(), None);
                // Its steps' processes outlived the opusd that ran them.
                let workspace = inner.context.work_dir.join(build.id.to_string());
                let killed = crate::process_tree::kill_leftovers(&workspace)
                    + kill_job_leftovers(&workspace);
                if killed > 0 {
                    warn!(
                        build = build.id,
                        killed, "killed processes the build left running"
                    );
                }
            } else {
                inner
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_back(Queued::of(&build));
            }
        }
        clear_work_dir(&inner.context.work_dir);
        let scheduler = Scheduler { inner };
        scheduler.publish_gauges();
        let dispatcher = scheduler.clone();
        scheduler
            .inner
            .tasks
            .spawn(async move { dispatcher.dispatch().await });
        Ok(scheduler)
    }

    /// The store a trigger request names (empty: the default), when opusd was started with it.
    pub fn configured_store(&self, requested: &str) -> Result<StoreName, ModelError> {
        self.inner.context.check_store(requested)
    }

    /// Queues a build.
    pub fn trigger(&self, req: TriggerRequest) -> Result<Build, CoreError> {
        self.queue_build(req, GithubOrigin::default(), None)
    }

    /// Queues a build an opus.yml `on:` trigger started, recording `mark` (the schedule's run,
    /// the `after` cursor) in the build's own transaction: it is queued exactly once.
    pub fn trigger_marked(
        &self,
        req: TriggerRequest,
        mark: TriggerMark,
    ) -> Result<Build, CoreError> {
        self.queue_build(req, GithubOrigin::default(), Some(mark))
    }

    /// Queues a build GitHub triggered: its statuses go on `origin.commit`; the build of a pull
    /// request's head commit (`req.git_ref`) supersedes the older queued build of the same pull
    /// request, whichever commit that was.
    pub fn trigger_from_github(
        &self,
        req: TriggerRequest,
        origin: GithubOrigin,
    ) -> Result<Build, CoreError> {
        self.queue_build(req, origin, None)
    }

    /// Cancels the queued and running builds of pull request `number` of `project` (it was
    /// closed: their preview would outlive it); returns how many.
    pub fn cancel_pull_request(
        &self,
        project: &ProjectName,
        number: u64,
        reason: &str,
    ) -> Result<usize, StoreError> {
        let store = &self.inner.store;
        let queued = self.queued_where(|q| {
            &q.project == project && q.work == Work::PullRequest(number)
        });
        let of_it = |id: u64| {
            store.get_build(id).is_ok_and(|b| {
                &b.project == project && b.pull_request.as_ref().map(|p| p.number) == Some(number)
            })
        };
        let mut cancelled = 0;
        for id in queued {
            if self.cancel_queued(id, reason)? {
                cancelled += 1;
            }
        }
        let running: Vec<(u64, CancellationToken)> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, token)| (*id, token.clone()))
            .collect();
        for (id, token) in running {
            if of_it(id) {
                token.cancel();
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }

    fn queue_build(
        &self,
        req: TriggerRequest,
        origin: GithubOrigin,
        mark: Option<TriggerMark>,
    ) -> Result<Build, CoreError> {
        let store = &self.inner.store;
        let project = store.get_project(&req.project)?;
        let git_ref = match req.git_ref.trim() {
            "" | "latest" => project.branch.clone(),
            r => r.to_owned(),
        };
        if git_ref.starts_with('-') || git_ref.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(ModelError::Invalid(format!("invalid ref {git_ref:?}")).into());
        }
        // A plain folder has no refs: refused now, not by a build that fails at its source.
        if let Source::Local(dir) = &project.source
            && git_ref != project.branch
        {
            return Err(ModelError::NotARepository {
                project: project.name.as_str().into(),
                git_ref: git_ref.into(),
                dir: dir.display().to_string().into(),
            }
            .into());
        }
        let version = match req.version.filter(|v| !v.is_empty()) {
            Some(v) => Some(VersionName::new(v)?),
            None => None,
        };
        let template = Build {
            id: 0,
            number: 0,
            project: project.name.clone(),
            state: BuildState::Queued,
            git_ref: git_ref.clone(),
            commit: String::new(),
            version_pinned: version.is_some(),
            version,
            reason: String::new(),
            trigger: req.trigger,
            store: req.store,
            branch: None,
            is_tag: false,
            queued_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            pull_request: origin.pull_request,
            github: origin.commit,
        };
        let build = match mark {
            Some(mark) => store.create_triggered_build(&template, mark)?,
            None => store.create_build(&template)?,
        };
        // A newer trigger of the same project and ref supersedes older builds still waiting.
        let work = Work::of(&build);
        let superseded =
            self.queued_where(|q| q.project == build.project && q.work == work && !q.pinned);
        for id in superseded {
            let reason = format!("superseded by {}#{}", build.project, build.number);
            if self.cancel_queued(id, &reason)? {
                info!(build = id, by = build.id, "queued build superseded");
            }
        }
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Queued::of(&build));
        self.publish_gauges();
        self.inner.queued.notify_one();
        info!(build = build.id, project = %build.project, git_ref = %build.git_ref, "build queued");
        Ok(build)
    }

    /// Cancels a queued or running build; a finished one is returned unchanged with an error.
    pub fn cancel(&self, id: u64) -> Result<Build, CancelError> {
        let build = self
            .inner
            .store
            .get_build(id)
            .map_err(|e| CancelError::Core(e.into()))?;
        if build.state.is_finished() {
            return Err(CancelError::Finished(Box::new(build)));
        }
        if self
            .cancel_queued(id, "cancelled by a user")
            .map_err(|e| CancelError::Core(e.into()))?
        {
            return self
                .inner
                .store
                .get_build(id)
                .map_err(|e| CancelError::Core(e.into()));
        }
        let token = self
            .inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        match token {
            Some(token) => {
                token.cancel();
                Ok(build)
            }
            // Between the queue and running: the build task sees the cancelled state.
            None => self
                .inner
                .store
                .get_build(id)
                .map_err(|e| CancelError::Core(e.into())),
        }
    }

    /// Deletes what builds of `project` keep from one build to the next: its build cache
    /// (`<data-dir>/cache/<project>`) and its git mirror (`<data-dir>/git/<project>.git`), for
    /// the project's removal.
    pub async fn remove_project_files(
        &self,
        project: &ProjectName,
    ) -> Result<(), crate::source::SourceError> {
        let context = &self.inner.context;
        crate::source::remove_dir_if_present(&context.cache_dir.join(project.as_str())).await?;
        context.sources.remove_mirror(project).await
    }

    /// Cancels every queued and running build of `project`, and waits up to `limit` for the
    /// running ones to end (their outcome recorded). Returns the builds still running after it.
    pub async fn cancel_project(
        &self,
        project: &ProjectName,
        limit: Duration,
    ) -> Result<Vec<u64>, StoreError> {
        let queued = self.queued_where(|q| q.project == *project);
        for id in queued {
            self.cancel_queued(id, "cancelled: the project is being removed")?;
        }
        let store = &self.inner.store;
        let mine = |id: u64| {
            store
                .get_build(id)
                .is_ok_and(|b| b.project == *project && !b.state.is_finished())
        };
        let running: Vec<(u64, CancellationToken)> = {
            let running = self
                .inner
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            running
                .iter()
                .map(|(id, token)| (*id, token.clone()))
                .collect()
        };
        let running: Vec<u64> = running
            .into_iter()
            .filter(|(id, _)| mine(*id))
            .map(|(id, token)| {
                token.cancel();
                info!(build = id, project = %project, "running build cancelled: its project is being removed");
                id
            })
            .collect();
        let still_running = || {
            let now = self
                .inner
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            running
                .iter()
                .copied()
                .filter(|id| now.contains_key(id))
                .collect::<Vec<u64>>()
        };
        let ended = async {
            loop {
                let notified = self.inner.ended.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if still_running().is_empty() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, ended).await;
        Ok(still_running())
    }

    /// The ids of the queued builds `keep` selects, oldest first.
    fn queued_where(&self, keep: impl Fn(&Queued) -> bool) -> Vec<u64> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|q| keep(q))
            .map(|q| q.id)
            .collect()
    }

    /// Removes a build from the queue and marks it cancelled; false when it was not queued.
    fn cancel_queued(&self, id: u64, reason: &str) -> Result<bool, StoreError> {
        let removed = {
            let mut queue = self
                .inner
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let before = queue.len();
            queue.retain(|q| q.id != id);
            queue.len() != before
        };
        if removed {
            self.inner.store.update_build(id, |b| {
                b.state = BuildState::Cancelled;
                b.reason = reason.to_owned();
                b.finished_at = Some(SystemTime::now());
            })?;
            self.inner
                .metrics
                .build_finished(BuildState::Cancelled.as_str(), None);
            self.publish_gauges();
        }
        Ok(removed)
    }

    /// Where a queued build stands.
    pub fn queue_info(&self, id: u64) -> Option<QueueInfo> {
        let position = {
            let queue = self
                .inner
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queue.iter().position(|q| q.id == id)? + 1
        };
        Some(QueueInfo {
            position,
            running: self.running_count(),
            max: self.inner.max,
        })
    }

    /// Builds running now.
    pub fn running_count(&self) -> usize {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Builds waiting.
    pub fn queued_count(&self) -> usize {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Sets the queued and running gauges from the queue and the running set.
    fn publish_gauges(&self) {
        self.inner
            .metrics
            .set_builds(self.queued_count(), self.running_count());
    }

    /// Counts a build whose task ended (by its recorded final state, with its duration when it
    /// ran) and updates the gauges.
    fn count_finished(&self, id: u64) {
        match self.inner.store.get_build(id) {
            Ok(b) if b.state.is_finished() => {
                let ran_for = b
                    .started_at
                    .zip(b.finished_at)
                    .and_then(|(start, end)| end.duration_since(start).ok());
                self.inner.metrics.build_finished(b.state.as_str(), ran_for);
            }
            Ok(_) => {}
            Err(e) => warn!(build = id, error = %e, "cannot read a finished build for the metrics"),
        }
        self.publish_gauges();
    }

    /// The dispatcher loop: one slot, one build, oldest first.
    ///
    /// It takes a slot only once a build is queued: a slot held while the queue is empty would
    /// be one that a running pipeline's jobs cannot use (see `build::pipeline`).
    async fn dispatch(&self) {
        loop {
            let queued = || {
                !self
                    .inner
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_empty()
            };
            while !queued() {
                // `notify_one` keeps its wake-up for a dispatcher not yet waiting.
                tokio::select! {
                    () = self.inner.queued.notified() => {}
                    () = self.inner.stopping.cancelled() => return,
                }
            }
            let permit = tokio::select! {
                p = self.inner.slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = self.inner.stopping.cancelled() => return,
            };
            let popped = self
                .inner
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            // Cancelled while the dispatcher waited for the slot: give it back.
            let Some(Queued { id: next, .. }) = popped else {
                continue;
            };
            let token = self.inner.stopping.child_token();
            self.inner
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(next, token.clone());
            self.publish_gauges();
            let this = self.clone();
            self.inner.tasks.spawn(async move {
                crate::build::run(
                    &this.inner.context,
                    &this.inner.store,
                    next,
                    token,
                    &this.inner.stopping,
                    crate::build::JobSlots::new(this.inner.slots.clone()),
                )
                .await;
                this.inner
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&next);
                this.inner.ended.notify_waiters();
                this.count_finished(next);
                drop(permit);
            });
        }
    }

    /// Stops dispatching, waits up to `grace` for running builds, then cancels them and waits for
    /// their tasks to record the outcome.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.tasks.close();
        // Stop taking new builds; running builds keep their own tokens until the grace ends.
        let running = self.running_count();
        if running > 0 {
            info!(running, grace = ?grace, "waiting for running builds to finish");
        }
        let drained = async {
            while self.running_count() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        self.inner.slots.close();
        if tokio::time::timeout(grace, drained).await.is_err() {
            warn!("grace period over: stopping running builds");
        }
        self.inner.stopping.cancel();
        self.inner.tasks.wait().await;
    }
}

/// Removes the workspaces a previous opusd left (before any build of this one starts).
fn clear_work_dir(work_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            warn!(path = %path.display(), error = %e, "cannot remove a workspace left by the previous run");
        }
    }
}

/// Ends what the jobs of a pipeline left running when opusd was killed: each job's processes
/// are scoped by its own copy of the checkout (`<work>/<build>.jobs/<job>`), so the copies are
/// listed (the work folder is emptied only after this, see `daemon`).
fn kill_job_leftovers(workspace: &std::path::Path) -> usize {
    let Ok(jobs) = std::fs::read_dir(crate::build::pipeline::jobs_dir(workspace)) else {
        return 0;
    };
    jobs.flatten()
        .map(|job| crate::process_tree::kill_leftovers(&job.path()))
        .sum()
}

/// Records a build a previous opusd left running: succeeded when its version was committed (opusd
/// stopped between the version's commit and the build's outcome), else failed ("opusd
/// restarted"). Returns the state recorded.
fn recover_running(store: &MetaStore, build: &Build) -> Result<BuildState, StoreError> {
    let stored = match &build.version {
        Some(version) => store
            .get_version(&build.project, version)?
            .is_some_and(|v| v.build_id == build.number),
        None => false,
    };
    let (state, reason) = if stored {
        (
            BuildState::Succeeded,
            "opusd restarted after storing the version (automatic deploys did not run)",
        )
    } else {
        (BuildState::Failed, "opusd restarted")
    };
    store.update_build(build.id, |b| {
        b.state = state;
        b.reason = reason.into();
        b.finished_at = Some(SystemTime::now());
    })?;
    warn!(build = build.id, project = %build.project, state = %state, "build was running when opusd stopped");
    Ok(state)
}

/// Why a cancel did not happen.
#[derive(Debug)]
pub enum CancelError {
    /// The build had already ended.
    Finished(Box<Build>),
    /// Store or lookup failure.
    Core(CoreError),
}
