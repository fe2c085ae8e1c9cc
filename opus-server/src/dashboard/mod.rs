//! The web dashboard, served on the API listener at `/` beside the gRPC services: projects,
//! builds with live logs, versions and their diffs, environments, the queue, and the actions
//! (trigger, cancel, deploy, rollback, unpin, remove an environment), each behind a confirmation
//! page.
//!
//! Server-rendered HTML (maud: compile-time templates, every value escaped), one stylesheet and
//! one script embedded in the binary (`assets`); everything but the live parts (a running
//! build's log, tables following the event log) works with JavaScript off. Modules, one job each: `routes` (the route table and the request span),
//! `session` (who the visitor is: login, session cookie, CSRF), `layout` (the page shell and
//! the error page), `pages` (what each page shows), `actions` (confirmation pages and the
//! POSTs that act), `sse` (a running build's log and the event log as Server-Sent Events), `ansi` (ANSI
//! colours as HTML spans), `assets` (the embedded CSS and JS under content-hashed names).
//!
//! Architecture Invariant: the dashboard changes nothing the API could not; it calls the same
//! scheduler and deployer, records its actor as `dashboard`, and never renders a secret value
//! (secret names and hook URLs' hosts at most).

mod actions;
mod ansi;
mod assets;
mod layout;
mod pages;
mod routes;
mod session;
mod sse;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opus_core::CoreError;
use opus_core::store::MetaStore;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::deploys::Deployer;
use crate::logs::LogHub;
use crate::scheduler::Scheduler;

pub use session::SESSION_LIFETIME;

/// The parts of the daemon the dashboard reads and acts through.
pub(crate) struct Dashboard {
    /// Projects, builds, environments, releases, versions.
    store: MetaStore,
    /// Triggers, cancels, and where queued builds stand.
    scheduler: Scheduler,
    /// Deploys and rollbacks (the store and the site table together).
    deployer: Deployer,
    /// Build logs, read and followed.
    logs: LogHub,
    /// Who may see and act: tokens, sessions, CSRF tokens.
    sessions: session::Sessions,
    /// Cancelled when opusd stops: live log streams end then, so shutdown never waits on a
    /// browser.
    stopping: CancellationToken,
}

/// What [`router`] needs from the daemon.
pub(crate) struct DashboardParts {
    /// See [`Dashboard::store`].
    pub(crate) store: MetaStore,
    /// See [`Dashboard::scheduler`].
    pub(crate) scheduler: Scheduler,
    /// See [`Dashboard::deployer`].
    pub(crate) deployer: Deployer,
    /// See [`Dashboard::logs`].
    pub(crate) logs: LogHub,
    /// The API token: with one, visitors log in; without one (opusd then listens on loopback
    /// only) nobody needs to.
    pub(crate) token: Option<String>,
    /// The read-only token.
    pub(crate) viewer_token: Option<String>,
    /// Whether the API listener speaks TLS (session cookies are then `Secure`).
    pub(crate) tls: bool,
    /// See [`Dashboard::stopping`].
    pub(crate) stopping: CancellationToken,
}

/// The dashboard's routes, to merge into the API listener's HTTP router.
pub(crate) fn router(parts: DashboardParts) -> Result<axum::Router, DashboardError> {
    let sessions = session::Sessions::new(parts.token, parts.viewer_token, parts.tls)?;
    Ok(routes::routes(Arc::new(Dashboard {
        store: parts.store,
        scheduler: parts.scheduler,
        deployer: parts.deployer,
        logs: parts.logs,
        sessions,
        stopping: parts.stopping,
    })))
}

/// Why a dashboard request failed; each answers with a page saying so and the fitting status.
#[derive(Debug, Error)]
pub enum DashboardError {
    /// What the store, the scheduler or the deployer refused or failed at.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// No such page (an unknown asset, say); what the store lacks is a [`CoreError`].
    #[error("{0}")]
    NotFound(String),
    /// A path or form value that is not valid (a bad project name, a page number...).
    #[error("{0}")]
    BadRequest(String),
    /// A viewer (read-only token) asked to act.
    #[error(
        "you are logged in with the viewer token, which can see everything but change nothing; log in with the API token to {0}"
    )]
    ReadOnly(&'static str),
    /// A POST without the form's CSRF token, or with another session's.
    #[error(
        "this form has expired or did not come from this dashboard (its CSRF token is missing or wrong); go back, reload the page and try again"
    )]
    Csrf,
    /// The token given at the login form is neither the API token nor the viewer token.
    #[error("that token is not this opusd's API token or viewer token")]
    WrongToken,
    /// The build asked to be cancelled has already ended.
    #[error("{0} has already ended; only queued or running builds can be cancelled")]
    AlreadyEnded(String),
    /// What the confirmation page showed has changed since (another deploy came first).
    #[error("{0}")]
    Changed(String),
    /// A build log could not be read.
    #[error("cannot read the log of {build}: {source}")]
    Log {
        /// The build (`web#3`).
        build: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The operating system gave no random bytes for a session or CSRF token.
    #[error("cannot make a session token: the operating system gives no random bytes ({0})")]
    Random(String),
    /// A blocking task (listing projects) failed to finish.
    #[error("listing projects failed: {0}")]
    Task(String),
}

impl From<opus_core::error::StoreError> for DashboardError {
    fn from(e: opus_core::error::StoreError) -> Self {
        DashboardError::Core(e.into())
    }
}

impl From<opus_core::error::ModelError> for DashboardError {
    fn from(e: opus_core::error::ModelError) -> Self {
        DashboardError::Core(e.into())
    }
}

impl DashboardError {
    /// The HTTP status and the message of the page; a core error maps as the API maps it
    /// ([`crate::api::status`]), so a missing project is 404 here as it is `NotFound` there.
    fn status_and_message(self) -> (StatusCode, String) {
        let status = match &self {
            DashboardError::Core(_) => StatusCode::INTERNAL_SERVER_ERROR,
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::NotFound(_) => StatusCode::NOT_FOUND,
            DashboardError::ReadOnly(_) | DashboardError::Csrf => StatusCode::FORBIDDEN,
            DashboardError::WrongToken => StatusCode::UNAUTHORIZED,
            DashboardError::AlreadyEnded(_) | DashboardError::Changed(_) => StatusCode::CONFLICT,
            DashboardError::Log { .. } | DashboardError::Task(_) | DashboardError::Random(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        match self {
            DashboardError::Core(e) => {
                let status = crate::api::status(e);
                (http_status(status.code()), status.message().to_owned())
            }
            other => (status, other.to_string()),
        }
    }
}

/// The HTTP status of a gRPC code.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        if status.is_server_error() {
            tracing::error!(error = %message, "dashboard request failed");
        }
        layout::error_page(status, &message)
    }
}
