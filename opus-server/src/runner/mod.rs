//! `opusd runner`: runs one build that an opusd assigned, wherever this process runs (a Kubernetes
//! Job's pod, or any machine that reaches opusd), with the build's own token.
//!
//! 1. `GetAssignment`: the project's git URL, the commit, the version, the steps' environment
//!    (with the project's secrets) and the artifact store to upload to.
//! 2. Fetches that commit ([`crate::source::fetch_commit`]), reads `opus.yml`
//!    ([`opus_core::recipe::discover`]) and runs its job with the same code as local builds
//!    ([`crate::build::run_job`]: the steps, then the output folder's checks), sending every line
//!    to opusd over `PushLogs`.
//! 3. Uploads the version to the object store itself
//!    ([`opus_core::artifact::Uploader`]: files, archive, manifest).
//! 4. `FinishBuild`: opusd checks the upload and commits the version, or records the failure.
//!
//! A pipeline runs each job as its own Job: the assignment then names the job (`job`); the
//! runner runs that job's steps (its lines named `<job>/<step>`) and uploads only when the job
//! has `output`.
//!
//! The token comes from the environment only (`OPUS_RUNNER_TOKEN`), so it never shows in `ps`;
//! steps do not inherit it (they get no `OPUS_*` variable of the runner's own).
//!
//! A private repository of a GitHub App installation: the assignment carries the installation
//! token (`git_username`, `git_password`). The runner writes the askpass script
//! ([`crate::github::askpass::AskpassScript`], holding no secret) into a temporary folder of its
//! own and gives the token to its git commands through their environment only, as opusd does for
//! its mirrors; the steps never see it.

mod remote_log;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use opus_core::artifact::{Origin, Uploaded, Uploader};
use opus_core::model::{ProjectName, StoreName, VersionName};
use opus_core::proto::{self, runner_service_client::RunnerServiceClient};
use opus_core::recipe;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::build::steps::LogSink;
use crate::build::{BuildFailure, FailureKind, Job, Stage, run_job};
use crate::github::askpass::{AskpassScript, GitCredential};
use crate::process_tree::Containment;
use remote_log::RemoteLog;

/// The environment variable holding the build's token (never a flag: flags show in `ps`).
pub const TOKEN_ENV: &str = "OPUS_RUNNER_TOKEN";

/// The flags of `opusd runner`, each also read from its environment variable (which is how a
/// build Job passes them).
#[derive(Debug, Clone, Args)]
pub struct RunnerArgs {
    /// URL of the opusd that assigned the build (http:// or https://).
    #[arg(long, env = "OPUS_RUNNER_SERVER", value_name = "URL")]
    pub server: String,
    /// The build to run (its number).
    #[arg(long, env = "OPUS_RUNNER_BUILD", value_name = "ID")]
    pub build: u64,
    /// Folder to fetch the source into and build in (created when missing; should be empty).
    #[arg(
        long,
        env = "OPUS_RUNNER_WORKSPACE",
        value_name = "DIR",
        default_value = "."
    )]
    pub workspace: PathBuf,
    /// Seconds to keep trying to reach opusd before giving up.
    #[arg(
        long,
        env = "OPUS_RUNNER_CONNECT_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    pub connect_timeout: u64,
}

/// Why the runner could not run the build or report it. The build's own failures are not errors
/// here: they are reported to opusd ([`Outcome::Failed`]).
#[derive(Debug, Error)]
pub enum RunnerError {
    /// No token in the environment.
    #[error("no build token: set {TOKEN_ENV} (a build Job sets it; opusd makes one per build)")]
    NoToken,
    /// The token cannot be sent as a header.
    #[error("{TOKEN_ENV} holds characters a header cannot carry")]
    BadToken,
    /// The server URL is unusable.
    #[error("invalid --server {server:?}: {detail}")]
    BadServer {
        /// The URL.
        server: String,
        /// What is wrong.
        detail: String,
    },
    /// opusd did not answer in time.
    #[error(
        "cannot reach opusd at {server} within {seconds}s: {detail} (is --server / OPUS_RUNNER_SERVER right, and does opusd run?)"
    )]
    Unreachable {
        /// The URL.
        server: String,
        /// How long it tried.
        seconds: u64,
        /// The last transport error.
        detail: String,
    },
    /// opusd refused a call: a wrong or expired token, a build that has ended.
    #[error("opusd refused {call} for build {build}: {message}")]
    Refused {
        /// The RPC.
        call: &'static str,
        /// The build.
        build: u64,
        /// opusd's message.
        message: String,
    },
}

/// How a build the runner reported ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The version is stored (opusd committed it).
    Succeeded,
    /// The build failed, for this reason (opusd recorded it).
    Failed(String),
}

/// Adds `authorization: Bearer <build token>` to every call.
#[derive(Clone)]
struct BuildToken(MetadataValue<Ascii>);

impl Interceptor for BuildToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// The runner's client of opusd.
type Client = RunnerServiceClient<InterceptedService<Channel, BuildToken>>;

/// Runs the build: see the module documentation. `cancel` stops the steps (SIGTERM: the pod is
/// being deleted, opusd has cancelled the build).
#[tracing::instrument(name = "runner", skip_all, fields(build = args.build, server = %args.server))]
pub async fn run(
    args: &RunnerArgs,
    token: Option<String>,
    cancel: CancellationToken,
) -> Result<Outcome, RunnerError> {
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or(RunnerError::NoToken)?;
    let token: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| RunnerError::BadToken)?;
    let build = args.build;
    let mut client = connect(args, BuildToken(token)).await?;
    let refused = |call: &'static str| {
        move |s: tonic::Status| RunnerError::Refused {
            call,
            build,
            message: s.message().to_owned(),
        }
    };
    let assignment = client
        .get_assignment(proto::GetAssignmentRequest { build_id: build })
        .await
        .map_err(refused("GetAssignment"))?
        .into_inner();

    let (log, pushed) = remote_log::start(client.clone(), build);
    let result = build_and_upload(&assignment, &args.workspace, &log, &cancel).await;
    drop(log);
    match pushed.await {
        Ok(Ok(())) => {}
        Ok(Err(status)) => return Err(refused("PushLogs")(status)),
        Err(e) => tracing::warn!(error = %e, "the log stream task failed"),
    }

    let request = match &result {
        Ok(uploaded) => proto::FinishBuildRequest {
            build_id: build,
            succeeded: true,
            reason: String::new(),
            manifest_json: uploaded
                .as_ref()
                .and_then(|u| serde_json::to_string(&u.manifest).ok())
                .unwrap_or_default(),
        },
        Err(failure) => proto::FinishBuildRequest {
            build_id: build,
            succeeded: false,
            reason: failure.to_string(),
            manifest_json: String::new(),
        },
    };
    match client.finish_build(request).await {
        Ok(_) => Ok(match result {
            Ok(_) => Outcome::Succeeded,
            Err(failure) => Outcome::Failed(failure.to_string()),
        }),
        // opusd refused the upload: the build has failed with that reason.
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            Ok(Outcome::Failed(s.message().to_owned()))
        }
        Err(s) => Err(refused("FinishBuild")(s)),
    }
}

/// Connects to opusd, retrying until `--connect-timeout` (a pod may start before DNS or opusd
/// is ready).
async fn connect(args: &RunnerArgs, token: BuildToken) -> Result<Client, RunnerError> {
    let server = args.server.trim_end_matches('/').to_owned();
    let bad = |detail: String| RunnerError::BadServer {
        server: server.clone(),
        detail,
    };
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(bad("use an http:// or https:// URL".into()));
    }
    let mut endpoint = Endpoint::from_shared(server.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if server.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_enabled_roots())
            .map_err(|e| bad(format!("TLS setup failed: {e}")))?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.connect_timeout);
    loop {
        match endpoint.connect().await {
            Ok(channel) => {
                return Ok(RunnerServiceClient::with_interceptor(channel, token)
                    .max_decoding_message_size(64 << 20));
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(RunnerError::Unreachable {
                    server,
                    seconds: args.connect_timeout,
                    detail: opus_core::error::innermost_cause(&e),
                });
            }
            Err(e) => {
                tracing::warn!(server = %server, error = %opus_core::error::innermost_cause(&e), "opusd not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Everything between the assignment and the report: fetch the commit, read the recipe, run its
/// job with the same code as local builds ([`crate::build::run_job`]), upload the output. The
/// failure is said in the log (so opusd's copy of it has it) before it is returned.
async fn build_and_upload(
    assignment: &proto::Assignment,
    workspace: &Path,
    log: &RemoteLog,
    cancel: &CancellationToken,
) -> Result<Option<Uploaded>, BuildFailure> {
    let result = if assignment.job.is_empty() {
        fetch_build_upload(assignment, workspace, log, cancel).await
    } else {
        let log = JobLines {
            log: log.clone(),
            job: assignment.job.clone().into(),
        };
        let result = fetch_build_upload(assignment, workspace, &log, cancel).await;
        if let Err(failure) = &result {
            failure.report(&log);
        }
        return result;
    };
    if let Err(failure) = &result {
        failure.report(log);
    }
    result
}

/// A pipeline job's lines: each step named `<job>/<step>`, as the local executor names them, so
/// that `opus logs --job` selects them.
#[derive(Clone)]
struct JobLines<L> {
    log: L,
    job: std::sync::Arc<str>,
}

impl<L: LogSink> LogSink for JobLines<L> {
    fn line(&self, step: &str, stream: &str, text: &str) {
        self.log.line(&format!("{}/{step}", self.job), stream, text);
    }
}

/// The askpass script (in a temporary folder of its own, removed when dropped) and git's
/// credential, when the assignment carries one.
fn git_askpass(
    assignment: &proto::Assignment,
) -> std::io::Result<Option<(tempfile::TempDir, AskpassScript, GitCredential)>> {
    if assignment.git_password.is_empty() {
        return Ok(None);
    }
    let dir = tempfile::Builder::new().prefix("opus-askpass").tempdir()?;
    let script = AskpassScript::write(dir.path())?;
    let credential = GitCredential::new(
        assignment.git_username.clone(),
        assignment.git_password.clone(),
    );
    Ok(Some((dir, script, credential)))
}

/// See [`build_and_upload`]. `None`: a pipeline job without output ran.
async fn fetch_build_upload<L: LogSink>(
    assignment: &proto::Assignment,
    workspace: &Path,
    log: &L,
    cancel: &CancellationToken,
) -> Result<Option<Uploaded>, BuildFailure> {
    let source = |kind| BuildFailure::new(Stage::Source, kind);
    let Some(build) = &assignment.build else {
        return Err(source(FailureKind::Assignment(
            "opusd sent no build in the assignment".into(),
        )));
    };
    let project = ProjectName::new(build.project.as_str()).map_err(|e| source(e.into()))?;
    let version = VersionName::new(build.version.as_str()).map_err(|e| source(e.into()))?;

    log.opus(
        "source",
        &format!("fetching {} at {}", assignment.source, build.commit),
    );
    let askpass = git_askpass(assignment).map_err(|e| {
        source(
            crate::source::SourceError::Io {
                action: "write the git askpass script".into(),
                source: e,
            }
            .into(),
        )
    })?;
    let credential = askpass
        .as_ref()
        .map(|(_dir, script, credential)| (script, credential));
    let fetched = tokio::select! {
        r = crate::source::fetch_commit(&assignment.source, &build.commit, workspace, credential) => r,
        () = cancel.cancelled() => return Err(source(FailureKind::Cancelled)),
    };
    drop(askpass);
    fetched.map_err(|e| source(e.into()))?;
    log.opus("source", &format!("checked out {}", build.commit));

    let (spec, origin) =
        recipe::discover(workspace).map_err(|e| BuildFailure::new(Stage::Recipe, e))?;
    log.opus("recipe", &origin.describe(&spec));
    let plan = spec.plan();
    // A pipeline job: its own steps and environment (opusd's `OPUS_JOB` among them); only the
    // job with `output` uploads.
    let (job, planned) = if assignment.job.is_empty() {
        (
            Job::from_recipe(&spec, origin, workspace)?,
            plan.output_job(),
        )
    } else {
        let planned = plan
            .jobs()
            .find(|j| j.name.as_str() == assignment.job)
            .ok_or_else(|| {
                BuildFailure::new(
                    Stage::Recipe,
                    FailureKind::Assignment(format!(
                        "opusd assigned job {:?}, which this commit's opus.yml does not have",
                        assignment.job
                    )),
                )
            })?;
        (Job::from_planned(planned, origin, workspace), Some(planned))
    };
    let mut env: BTreeMap<String, String> = planned.map(|j| j.env.clone()).unwrap_or_default();
    env.extend(assignment.env.clone());
    let ran = run_job(&job, workspace, &env, log, cancel, Containment::Sweep).await?;
    let output = match ran {
        Some(output) => output,
        None if !assignment.job.is_empty() => return Ok(None),
        None => return Err(BuildFailure::new(Stage::Output, FailureKind::NoOutput)),
    };

    let store = |kind| BuildFailure::new(Stage::Store, kind);
    let settings: Vec<(String, String)> = assignment
        .store_settings
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let uploader = Uploader::open(&assignment.store_url, &settings)
        .map_err(|e| store(FailureKind::OpenStore(e)))?;
    // The build's number in its project; an opusd from before numbers sends none, and its id
    // was the number then.
    let origin = Origin {
        build_id: if build.number == 0 {
            build.id
        } else {
            build.number
        },
        commit: build.commit.clone(),
        // The uploader writes to the one store it was given; the name is not used.
        store: StoreName::default_store(),
    };
    let uploaded = uploader
        .upload_dir(&project, &version, &output.dir, &origin)
        .await
        .map_err(|e| {
            store(FailureKind::Upload {
                version: version.to_string(),
                source: e,
            })
        })?;
    log.opus(
        "output",
        &format!(
            "{}: {} file(s), {} bytes uploaded as version {version}",
            output.name, uploaded.files, uploaded.bytes
        ),
    );
    Ok(Some(uploaded))
}
