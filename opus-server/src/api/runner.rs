//! `opus.v1.RunnerService`: what `opusd runner` calls while it runs a build elsewhere (a Kubernetes
//! Job). Not behind the API token: every call carries the build's own token and names its build
//! (the request's `build_id`, or the `opus-build-id` metadata of `PushLogs`), and
//! [`crate::runners::Runners::authorize`] admits it only for that build, while it runs.
//!
//! When opusd is a GitHub App and the build's project belongs to an installation, `GetAssignment`
//! adds the installation's token as git's credential (minted at that moment, so it is fresh when
//! the runner clones); the runner hands it to git through `GIT_ASKPASS` only.

use std::sync::Arc;

use opus_core::model::ProjectName;
use opus_core::proto::{self, runner_service_server::RunnerService};
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::{instrument, warn};

use crate::github::askpass::GitCredentials;
use crate::runners::{BUILD_ID_METADATA, Finish, RunnerAuthError, Runners, Slot};

/// Implements the runner RPCs over the registry of builds running elsewhere.
pub(crate) struct RunnerApi {
    /// The builds running elsewhere, with their tokens.
    runners: Runners,
    /// Installation tokens as git credentials, when opusd is a GitHub App.
    credentials: Option<Arc<GitCredentials>>,
}

impl RunnerApi {
    pub(crate) fn new(runners: Runners, credentials: Option<Arc<GitCredentials>>) -> Self {
        RunnerApi {
            runners,
            credentials,
        }
    }

    /// Adds git's credential for the assignment's source to `assignment`, when its project
    /// belongs to an installation of the App opusd is.
    async fn add_credential(&self, assignment: &mut proto::Assignment) -> Result<(), Status> {
        let Some(credentials) = &self.credentials else {
            return Ok(());
        };
        let Some(project) = assignment
            .build
            .as_ref()
            .and_then(|b| ProjectName::new(b.project.as_str()).ok())
        else {
            return Ok(());
        };
        let credential = credentials
            .for_project(&project, &assignment.source)
            .await
            .map_err(|e| {
                warn!(%project, error = %e, "no installation token for the runner's clone");
                Status::unavailable(format!(
                    "cannot get the GitHub App installation token of project {project} for its clone: {e}"
                ))
            })?;
        if let Some(credential) = credential {
            assignment.git_username = credential.username().to_owned();
            assignment.git_password = credential.password().to_owned();
        }
        Ok(())
    }

    fn authorize(&self, build: u64, meta: &MetadataMap) -> Result<std::sync::Arc<Slot>, Status> {
        let token = super::auth::bearer_of(meta);
        self.runners
            .authorize(build, token)
            .map_err(|e: RunnerAuthError| {
                warn!(build, error = %e, "runner call refused");
                Status::unauthenticated(e.to_string())
            })
    }
}

/// The build a `PushLogs` stream names in its metadata.
fn build_of_stream(meta: &MetadataMap) -> Result<u64, Status> {
    meta.get(BUILD_ID_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "PushLogs needs the build id in the `{BUILD_ID_METADATA}` metadata"
            ))
        })
}

#[tonic::async_trait]
impl RunnerService for RunnerApi {
    #[instrument(skip_all, fields(build = req.get_ref().build_id))]
    async fn get_assignment(
        &self,
        req: Request<proto::GetAssignmentRequest>,
    ) -> Result<Response<proto::Assignment>, Status> {
        let slot = self.authorize(req.get_ref().build_id, req.metadata())?;
        let mut assignment = slot.assignment.clone();
        self.add_credential(&mut assignment).await?;
        Ok(Response::new(assignment))
    }

    #[instrument(skip_all, fields(build))]
    async fn push_logs(
        &self,
        req: Request<Streaming<proto::LogLine>>,
    ) -> Result<Response<proto::PushLogsResponse>, Status> {
        let build = build_of_stream(req.metadata())?;
        tracing::Span::current().record("build", build);
        let slot = self.authorize(build, req.metadata())?;
        let mut lines = req.into_inner();
        loop {
            let next = tokio::select! {
                next = lines.next() => next,
                () = slot.ended.cancelled() => {
                    return Err(Status::unauthenticated(RunnerAuthError::Invalid(build).to_string()));
                }
            };
            let Some(line) = next else { break };
            let line = line?;
            let stream = match line.stream.as_str() {
                s @ ("stdout" | "stderr" | "opus") => s,
                _ => "stdout",
            };
            slot.log.line(&line.step, stream, &line.text);
        }
        Ok(Response::new(proto::PushLogsResponse {}))
    }

    #[instrument(skip_all, fields(build = req.get_ref().build_id, succeeded = req.get_ref().succeeded))]
    async fn finish_build(
        &self,
        req: Request<proto::FinishBuildRequest>,
    ) -> Result<Response<proto::FinishBuildResponse>, Status> {
        let build = req.get_ref().build_id;
        let slot = self.authorize(build, req.metadata())?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let finish = Finish {
            request: req.into_inner(),
            reply,
        };
        let ended = || Status::unauthenticated(RunnerAuthError::Invalid(build).to_string());
        if slot.finish.send(finish).await.is_err() {
            return Err(ended());
        }
        match answer.await {
            Ok(Ok(())) => Ok(Response::new(proto::FinishBuildResponse {})),
            Ok(Err(reason)) => Err(Status::failed_precondition(reason)),
            Err(_) => Err(ended()),
        }
    }
}
