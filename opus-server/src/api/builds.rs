//! `opus.v1.BuildService`: trigger, inspect, cancel, and stream the logs of builds.

use std::path::Path;
use std::pin::Pin;

use futures::Stream;
use opus_core::model::{BuildState, ProjectName, Trigger};
use opus_core::proto::{self, build_service_server::BuildService};
use opus_core::store::BuildFilter;
use opus_core::wire;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::status;
use crate::logs;
use crate::logs::LogHub;
use crate::scheduler::{CancelError, Scheduler, TriggerRequest};
use opus_core::store::MetaStore;

/// Implements the build RPCs over the scheduler, the store and the log files.
pub(crate) struct BuildsApi {
    /// Builds as recorded.
    store: MetaStore,
    /// The queue: triggers, cancels, and which builds run now.
    scheduler: Scheduler,
    /// Build logs, replayed and followed.
    logs: LogHub,
}

impl BuildsApi {
    pub(crate) fn new(store: MetaStore, scheduler: Scheduler, logs: LogHub) -> Self {
        BuildsApi {
            store,
            scheduler,
            logs,
        }
    }
}

/// A build as the API shows it, with where it stands in the queue while it waits.
pub(crate) fn describe(scheduler: &Scheduler, build: &opus_core::model::Build) -> proto::Build {
    let mut out = proto::Build::from(build);
    if build.state == BuildState::Queued
        && let Some(info) = scheduler.queue_info(build.id)
    {
        out.queue_position = u32::try_from(info.position).unwrap_or(u32::MAX);
        out.reason = info.reason();
    }
    out
}

/// The build a request names: by project and number (`web#3`), or by id when it names no project
/// (older clients).
fn named_build(
    store: &MetaStore,
    id: u64,
    project: &str,
    number: u64,
) -> Result<opus_core::model::Build, Status> {
    if project.is_empty() {
        if id == 0 {
            return Err(Status::invalid_argument(
                "name a build by its project and number, such as web#3 (see `opus builds`)",
            ));
        }
        return store.get_build(id).map_err(status);
    }
    let project = ProjectName::new(project).map_err(status)?;
    store.build_by_number(&project, number).map_err(status)
}

type LogStream = Pin<Box<dyn Stream<Item = Result<proto::LogLine, Status>> + Send>>;

/// The log lines of `path` from byte `offset` on, as sent; moves `offset` past them.
async fn read_lines(path: &Path, offset: &mut u64) -> Result<Vec<proto::LogLine>, Status> {
    let (lines, next) = logs::read_from(path, *offset)
        .await
        .map_err(|e| Status::internal(format!("cannot read the log: {e}")))?;
    *offset = next;
    Ok(lines.into_iter().map(log_line).collect())
}

fn log_line(r: logs::LogRecord) -> proto::LogLine {
    proto::LogLine {
        time: Some(wire::timestamp(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.t),
        )),
        step: r.step,
        text: r.text,
        stream: r.stream,
        final_state: 0,
    }
}

#[tonic::async_trait]
impl BuildService for BuildsApi {
    type StreamLogsStream = LogStream;

    #[instrument(skip_all, fields(project = %req.get_ref().project, git_ref = %req.get_ref().r#ref))]
    async fn trigger_build(
        &self,
        req: Request<proto::TriggerBuildRequest>,
    ) -> Result<Response<proto::Build>, Status> {
        let req = req.into_inner();
        let build = self
            .scheduler
            .trigger(TriggerRequest {
                project: ProjectName::new(req.project).map_err(status)?,
                git_ref: req.r#ref,
                version: Some(req.version),
                store: self
                    .scheduler
                    .configured_store(&req.store)
                    .map_err(status)?,
                trigger: Trigger::Cli,
            })
            .map_err(status)?;
        Ok(Response::new(describe(&self.scheduler, &build)))
    }

    async fn get_build(
        &self,
        req: Request<proto::GetBuildRequest>,
    ) -> Result<Response<proto::Build>, Status> {
        let req = req.get_ref();
        let build = named_build(&self.store, req.id, &req.project, req.number)?;
        Ok(Response::new(describe(&self.scheduler, &build)))
    }

    async fn list_builds(
        &self,
        req: Request<proto::ListBuildsRequest>,
    ) -> Result<Response<proto::ListBuildsResponse>, Status> {
        let req = req.into_inner();
        let project = if req.project.is_empty() {
            None
        } else {
            let p = ProjectName::new(req.project).map_err(status)?;
            self.store.get_project(&p).map_err(status)?;
            Some(p)
        };
        let state = proto::BuildState::try_from(req.state)
            .ok()
            .and_then(wire::build_state);
        let filter = BuildFilter {
            project,
            state,
            limit: req.limit as usize,
        };
        let builds = self.store.list_builds(&filter).map_err(status)?;
        Ok(Response::new(proto::ListBuildsResponse {
            builds: builds
                .iter()
                .map(|b| describe(&self.scheduler, b))
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(project = %req.get_ref().project, number = req.get_ref().number, id = req.get_ref().id))]
    async fn cancel_build(
        &self,
        req: Request<proto::CancelBuildRequest>,
    ) -> Result<Response<proto::Build>, Status> {
        let req = req.get_ref();
        let build = named_build(&self.store, req.id, &req.project, req.number)?;
        match self.scheduler.cancel(build.id) {
            Ok(b) => Ok(Response::new(describe(&self.scheduler, &b))),
            Err(CancelError::Finished(b)) if b.state == BuildState::AwaitingApproval => {
                Err(Status::failed_precondition(format!(
                    "{p}#{n} awaits approval and runs nothing; `opus reject {p}#{n}` ends it",
                    p = b.project,
                    n = b.number
                )))
            }
            Err(CancelError::Finished(b)) => Err(Status::failed_precondition(format!(
                "{}#{} has already {}; only queued or running builds can be cancelled",
                b.project, b.number, b.state
            ))),
            Err(CancelError::Core(e)) => Err(status(e)),
        }
    }

    async fn stream_logs(
        &self,
        req: Request<proto::StreamLogsRequest>,
    ) -> Result<Response<LogStream>, Status> {
        let req = req.into_inner();
        let store = self.store.clone();
        let id = named_build(&store, req.id, &req.project, req.number)?.id;
        let hub = self.logs.clone();
        let path = hub.path(id);
        let follow = req.follow;
        let stream = async_stream::try_stream! {
            let mut offset = 0u64;
            // Wait for a queued build to start (woken by its events), when following.
            let mut events = store.subscribe_events();
            loop {
                let live = hub.follow(id);
                let build = store.get_build(id).map_err(status)?;
                if live.is_none() && build.state == BuildState::Queued && follow {
                    if let Some(e) = store.failure() {
                        // Nothing moves a queued build while the store takes no writes.
                        Err::<(), Status>(status(e))?;
                    }
                    if events.changed().await.is_err() {
                        break;
                    }
                    continue;
                }
                match live {
                    Some(mut progress) if follow => {
                        loop {
                            for line in read_lines(&path, &mut offset).await? {
                                yield line;
                            }
                            let p = *progress.borrow_and_update();
                            if p.finished && offset >= p.len {
                                break;
                            }
                            if p.len > offset {
                                continue;
                            }
                            if progress.changed().await.is_err() {
                                // The writer is gone: read what is left once more.
                                for line in read_lines(&path, &mut offset).await? {
                                    yield line;
                                }
                                break;
                            }
                        }
                    }
                    _ => {
                        for line in read_lines(&path, &mut offset).await? {
                            yield line;
                        }
                    }
                }
                if !follow {
                    break;
                }
                // The log is complete; the build's state is recorded just before the log is
                // marked finished, but a build still marked running is waited for.
                let build = store.get_build(id).map_err(status)?;
                // A build whose outcome the store could not take ended failed (`build::finish`
                // records that once it can).
                let unrecorded = !build.state.is_finished() && store.failure().is_some()
                    && hub.follow(id).is_none_or(|p| p.borrow().finished);
                if build.state.is_finished() || unrecorded {
                    let (state, reason) = match store.failure() {
                        Some(e) if unrecorded => (
                            BuildState::Failed,
                            format!("its outcome could not be recorded: {e}"),
                        ),
                        _ => (build.state, build.reason.clone()),
                    };
                    for line in read_lines(&path, &mut offset).await? {
                        yield line;
                    }
                    yield proto::LogLine {
                        final_state: proto::BuildState::from(state) as i32,
                        text: reason,
                        stream: "opus".into(),
                        step: "done".into(),
                        time: build.finished_at.map(wire::timestamp),
                    };
                    break;
                }
                if events.changed().await.is_err() {
                    break;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
