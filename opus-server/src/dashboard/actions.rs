//! The actions: trigger, cancel, deploy, rollback, unpin, remove an environment. Each is a `GET` confirmation page that names
//! what will happen ("production goes from 1.0.4 back to 1.0.3") holding a form that `POST`s to
//! the same path with the visitor's CSRF token; the POST acts through the scheduler or the
//! deployer (actor `dashboard`) and shows the result at once. Viewers get 403 on both.

use std::sync::Arc;
use std::time::Instant;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use opus_core::model::{EnvName, ProjectName, StoreName, Trigger, VersionName};
use opus_core::store::ReleaseReason;
use serde::Deserialize;
use tracing::instrument;

use super::layout::{self, duration};
use super::session::Visitor;
use super::{Dashboard, DashboardError};
use crate::scheduler::{CancelError, TriggerRequest};

/// The actor releases made here record.
pub(super) const ACTOR: &str = "dashboard";

/// A confirmation page: what will happen, and the button that does it.
fn confirm(
    visitor: &Visitor,
    title: &str,
    what: Markup,
    action: &str,
    fields: &[(&str, &str)],
    button: &str,
    back: &str,
) -> Response {
    layout::respond(
        StatusCode::OK,
        layout::page(
            title,
            Some(visitor),
            html! {
                h1 { (title) }
                section.card {
                    p.notice { (what) }
                    form.row method="post" action=(action) {
                        input type="hidden" name="csrf" value=(visitor.csrf);
                        @for (name, value) in fields {
                            input type="hidden" name=(name) value=(value);
                        }
                        button type="submit" { (button) }
                        a href=(back) { "Cancel, go back" }
                    }
                }
            },
        ),
    )
}

/// The page after an action: what happened, and where to look next.
fn done(visitor: &Visitor, title: &str, what: Markup, next: &str, next_label: &str) -> Response {
    layout::respond(
        StatusCode::OK,
        layout::page(
            title,
            Some(visitor),
            html! {
                h1 { (title) }
                p.notice role="status" { (what) }
                p { a href=(next) { (next_label) } }
            },
        ),
    )
}

/// What a trigger asks for.
#[derive(Debug, Deserialize)]
pub(super) struct TriggerQuery {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    version: Option<String>,
}

/// The version a form names, if any.
fn optional_version(v: Option<&str>) -> Result<Option<VersionName>, DashboardError> {
    match v.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => Ok(Some(VersionName::new(v)?)),
    }
}

/// `GET /projects/{project}/trigger`: confirm a build.
#[instrument(skip_all, fields(project = %project))]
pub(super) async fn confirm_trigger(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path(project): Path<String>,
    Query(q): Query<TriggerQuery>,
) -> Result<Response, DashboardError> {
    visitor.must_act("trigger a build")?;
    let project = d.store.get_project(&ProjectName::new(project)?)?;
    let name = project.name.as_str();
    let git_ref = q.git_ref.as_deref().map(str::trim).unwrap_or("");
    let shown_ref = if git_ref.is_empty() {
        project.branch.as_str()
    } else {
        git_ref
    };
    let version = optional_version(q.version.as_deref())?;
    let what = html! {
        "Build " strong { (shown_ref) } " of " strong { (name) } ", as version "
        @match &version { Some(v) => strong { (v.as_str()) }, None => "named from the commit" } "."
    };
    let version_text = version.as_ref().map_or("", VersionName::as_str);
    Ok(confirm(
        &visitor,
        &format!("Trigger a build of {name}"),
        what,
        &format!("/projects/{name}/trigger"),
        &[("ref", git_ref), ("version", version_text)],
        "Trigger the build",
        &format!("/projects/{name}"),
    ))
}

/// The trigger form.
#[derive(Debug, Deserialize)]
pub(super) struct TriggerForm {
    /// Missing reads as empty, which the check refuses (403, not a form error).
    #[serde(default)]
    csrf: String,
    #[serde(rename = "ref", default)]
    git_ref: String,
    #[serde(default)]
    version: String,
}

/// `POST /projects/{project}/trigger`: queues the build.
#[instrument(skip_all, fields(project = %project))]
pub(super) async fn trigger(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path(project): Path<String>,
    Form(form): Form<TriggerForm>,
) -> Result<Response, DashboardError> {
    visitor.must_act("trigger a build")?;
    visitor.check_csrf(&form.csrf)?;
    let project = ProjectName::new(project)?;
    let version = optional_version(Some(&form.version))?;
    let build = d.scheduler.trigger(TriggerRequest {
        project: project.clone(),
        git_ref: form.git_ref.trim().to_owned(),
        version: version.map(|v| v.as_str().to_owned()),
        store: StoreName::default_store(),
        trigger: Trigger::Dashboard,
    })?;
    tracing::info!(number = build.number, "build triggered from the dashboard");
    let link = format!("/projects/{project}/builds/{}", build.number);
    Ok(done(
        &visitor,
        "Build queued",
        html! { (project) "#" (build.number) " is queued for " (build.git_ref) "." },
        &link,
        "Follow its log",
    ))
}

/// `GET /projects/{project}/builds/{number}/cancel`: confirm a cancel.
#[instrument(skip_all, fields(project = %project, number))]
pub(super) async fn confirm_cancel(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, number)): Path<(String, u64)>,
) -> Result<Response, DashboardError> {
    visitor.must_act("cancel a build")?;
    let project = ProjectName::new(project)?;
    let build = d.store.build_by_number(&project, number)?;
    let name = format!("{project}#{number}");
    if build.state.is_finished() {
        return Err(DashboardError::AlreadyEnded(name));
    }
    let back = format!("/projects/{project}/builds/{number}");
    Ok(confirm(
        &visitor,
        &format!("Cancel {name}"),
        html! { (name) " (" (build.state.as_str()) ", ref " (build.git_ref) ") stops now; its processes are killed and it stores no version." },
        &format!("{back}/cancel"),
        &[],
        "Cancel the build",
        &back,
    ))
}

/// A form with nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub(super) struct CsrfOnly {
    /// Missing reads as empty, which the check refuses (403, not a form error).
    #[serde(default)]
    csrf: String,
}

/// `POST /projects/{project}/builds/{number}/cancel`.
#[instrument(skip_all, fields(project = %project, number))]
pub(super) async fn cancel(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, number)): Path<(String, u64)>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, DashboardError> {
    visitor.must_act("cancel a build")?;
    visitor.check_csrf(&form.csrf)?;
    let project = ProjectName::new(project)?;
    let build = d.store.build_by_number(&project, number)?;
    let name = format!("{project}#{number}");
    match d.scheduler.cancel(build.id) {
        Ok(_) => {}
        Err(CancelError::Finished(_)) => return Err(DashboardError::AlreadyEnded(name)),
        Err(CancelError::Core(e)) => return Err(e.into()),
    }
    let link = format!("/projects/{project}/builds/{number}");
    Ok(done(
        &visitor,
        "Build cancelled",
        html! { (name) " is cancelled." },
        &link,
        "See the build",
    ))
}

/// What a deploy asks for.
#[derive(Debug, Deserialize)]
pub(super) struct DeployQuery {
    version: String,
    env: Option<String>,
}

/// The environment a form names; empty means production. New names follow the rules for new
/// environments (no `--`), as `opus deploy` does.
fn target_env(env: Option<&str>) -> Result<EnvName, DashboardError> {
    match env.map(str::trim) {
        None | Some("") => Ok(EnvName::new(crate::sites::PRODUCTION)?),
        Some(e) => {
            let name = EnvName::new(e)?;
            EnvName::for_new(name.as_str())?;
            Ok(name)
        }
    }
}

/// `GET /projects/{project}/deploy?version=&env=`: confirm a deploy.
#[instrument(skip_all, fields(project = %project))]
pub(super) async fn confirm_deploy(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path(project): Path<String>,
    Query(q): Query<DeployQuery>,
) -> Result<Response, DashboardError> {
    visitor.must_act("deploy")?;
    let project = ProjectName::new(project)?;
    let env = target_env(q.env.as_deref())?;
    let version = VersionName::new(q.version.trim())?;
    d.store
        .get_version(&project, &version)?
        .ok_or_else(|| super::pages::version::not_found(&project, &version))?;
    let current = match d.store.environment(&project, &env) {
        Ok(e) => Some(e.current.version),
        Err(opus_core::error::StoreError::EnvironmentNotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let what = html! {
        @match &current {
            Some(c) if c == version.as_str() => { strong { (env) } " already serves " strong { (c) } "; deploying it again makes a new release of it." }
            Some(c) => { strong { (env) } " goes from " strong { (c) } " to " strong { (version.as_str()) } "." }
            None => { strong { (env) } " is new: it starts serving " strong { (version.as_str()) } "." }
        }
    };
    Ok(confirm(
        &visitor,
        &format!("Deploy {} of {project}", version.as_str()),
        what,
        &format!("/projects/{project}/deploy"),
        &[("version", version.as_str()), ("env", env.as_str())],
        "Deploy",
        &format!("/projects/{project}"),
    ))
}

/// The deploy form.
#[derive(Debug, Deserialize)]
pub(super) struct DeployForm {
    /// Missing reads as empty, which the check refuses (403, not a form error).
    #[serde(default)]
    csrf: String,
    version: String,
    env: Option<String>,
}

/// `POST /projects/{project}/deploy`.
#[instrument(skip_all, fields(project = %project))]
pub(super) async fn deploy(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path(project): Path<String>,
    Form(form): Form<DeployForm>,
) -> Result<Response, DashboardError> {
    visitor.must_act("deploy")?;
    visitor.check_csrf(&form.csrf)?;
    let project = ProjectName::new(project)?;
    let env = target_env(form.env.as_deref())?;
    let version = VersionName::new(form.version.trim())?;
    d.store.get_project(&project)?;
    let started = Instant::now();
    let record = d
        .deployer
        .deploy(
            &project,
            &env,
            &version,
            ACTOR,
            ReleaseReason::Deploy,
            false,
        )
        .await?;
    let took = started.elapsed();
    let url = d.deployer.sites().url(project.as_str(), env.as_str());
    Ok(done(
        &visitor,
        "Deployed",
        html! {
            strong { (env) } " now serves " strong { (record.current.version) } " at " a href=(url) { (url) }
            " (release #" (record.current.seq) "; the switch took " (duration(took)) ")."
        },
        &format!("/projects/{project}"),
        "Back to the project",
    ))
}

/// `GET /projects/{project}/environments/{env}/rollback`: confirm a rollback, naming both
/// versions.
#[instrument(skip_all, fields(project = %project, env = %env))]
pub(super) async fn confirm_rollback(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, env)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    visitor.must_act("roll back")?;
    let project = ProjectName::new(project)?;
    let env = EnvName::new(env)?;
    let current = d.store.environment(&project, &env)?;
    let target = d.store.rollback_target(&project, &env, None)?;
    let what = html! {
        strong { (env.as_str()) } " goes from " strong { (current.current.version) } " back to "
        strong { (target.version) } ". It is then pinned: automatic deploys skip it until the next deploy or unpin."
    };
    Ok(confirm(
        &visitor,
        &format!("Roll back {} of {project}", env.as_str()),
        what,
        &format!("/projects/{project}/environments/{}/rollback", env.as_str()),
        &[("from", &current.current.version)],
        "Roll back",
        &format!("/projects/{project}"),
    ))
}

/// The rollback form: the version the confirmation page saw served.
#[derive(Debug, Deserialize)]
pub(super) struct RollbackForm {
    /// Missing reads as empty, which the check refuses (403, not a form error).
    #[serde(default)]
    csrf: String,
    from: Option<String>,
}

/// `POST /projects/{project}/environments/{env}/rollback`. When the environment no longer
/// serves the version the confirmation page named, nothing happens and the page says so.
#[instrument(skip_all, fields(project = %project, env = %env))]
pub(super) async fn rollback(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, env)): Path<(String, String)>,
    Form(form): Form<RollbackForm>,
) -> Result<Response, DashboardError> {
    visitor.must_act("roll back")?;
    visitor.check_csrf(&form.csrf)?;
    let project = ProjectName::new(project)?;
    let env = EnvName::new(env)?;
    let current = d.store.environment(&project, &env)?;
    if let Some(from) = form.from.as_deref().filter(|f| !f.is_empty())
        && from != current.current.version
    {
        return Err(DashboardError::Changed(format!(
            "{} serves {} now, not {from} as when you confirmed; review the rollback again",
            env.as_str(),
            current.current.version
        )));
    }
    let started = Instant::now();
    let record = d.deployer.rollback(&project, &env, None, ACTOR).await?;
    let took = started.elapsed();
    let url = d.deployer.sites().url(project.as_str(), env.as_str());
    Ok(done(
        &visitor,
        "Rolled back",
        html! {
            strong { (env.as_str()) } " went from " strong { (current.current.version) } " back to "
            strong { (record.current.version) } ", served now at " a href=(url) { (url) }
            " (the switch took " (duration(took)) "). It is pinned until the next deploy or unpin."
        },
        &format!("/projects/{project}"),
        "Back to the project",
    ))
}

/// What a change of an environment other than a deploy is.
#[derive(Debug, Clone, Copy)]
enum EnvChange {
    /// Clear the rollback's pin.
    Unpin,
    /// Stop serving it and forget its pointer (its releases stay in the history).
    Remove,
}

impl EnvChange {
    fn doing(self) -> &'static str {
        match self {
            EnvChange::Unpin => "unpin an environment",
            EnvChange::Remove => "remove an environment",
        }
    }
}

/// The confirmation page of an unpin or a removal.
async fn confirm_env_change(
    d: &Dashboard,
    visitor: &Visitor,
    project: String,
    env: String,
    change: EnvChange,
) -> Result<Response, DashboardError> {
    visitor.must_act(change.doing())?;
    let project = ProjectName::new(project)?;
    let env = EnvName::new(env)?;
    let record = d.store.environment(&project, &env)?;
    let (title, what, button, path) = match change {
        EnvChange::Unpin => (
            format!("Unpin {} of {project}", env.as_str()),
            html! {
                strong { (env.as_str()) } " keeps serving " strong { (record.current.version) }
                "; automatic deploys from its branch go to it again."
                @if !record.pinned { " (It is not pinned now.)" }
            },
            "Unpin",
            "unpin",
        ),
        EnvChange::Remove => (
            format!("Remove {} of {project}", env.as_str()),
            html! {
                strong { (env.as_str()) } " stops serving " strong { (record.current.version) }
                " at once, and its URL answers 404. Its release history stays."
            },
            "Remove the environment",
            "remove",
        ),
    };
    Ok(confirm(
        visitor,
        &title,
        what,
        &format!("/projects/{project}/environments/{}/{path}", env.as_str()),
        &[],
        button,
        &format!("/projects/{project}"),
    ))
}

/// Unpins or removes an environment.
async fn env_change(
    d: &Dashboard,
    visitor: &Visitor,
    project: String,
    env: String,
    csrf: &str,
    change: EnvChange,
) -> Result<Response, DashboardError> {
    visitor.must_act(change.doing())?;
    visitor.check_csrf(csrf)?;
    let project = ProjectName::new(project)?;
    let env = EnvName::new(env)?;
    let (title, what) = match change {
        EnvChange::Unpin => {
            let record = d.deployer.unpin_environment(&project, &env).await?;
            (
                "Unpinned",
                html! { strong { (env.as_str()) } " serves " strong { (record.current.version) } " and follows its branch again." },
            )
        }
        EnvChange::Remove => {
            d.deployer.remove_environment(&project, &env).await?;
            (
                "Environment removed",
                html! { strong { (env.as_str()) } " of " (project) " is removed; its URL answers 404 now." },
            )
        }
    };
    Ok(done(
        visitor,
        title,
        what,
        &format!("/projects/{project}"),
        "Back to the project",
    ))
}

/// `GET /projects/{project}/environments/{env}/unpin`.
#[instrument(skip_all, fields(project = %project, env = %env))]
pub(super) async fn confirm_unpin(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, env)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    confirm_env_change(&d, &visitor, project, env, EnvChange::Unpin).await
}

/// `POST /projects/{project}/environments/{env}/unpin`.
#[instrument(skip_all, fields(project = %project, env = %env))]
pub(super) async fn unpin(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, env)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, DashboardError> {
    env_change(&d, &visitor, project, env, &form.csrf, EnvChange::Unpin).await
}

/// `GET /projects/{project}/environments/{env}/remove`.
#[instrument(skip_all, fields(project = %project, env = %env))]
pub(super) async fn confirm_remove(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, env)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    confirm_env_change(&d, &visitor, project, env, EnvChange::Remove).await
}

/// `POST /projects/{project}/environments/{env}/remove`.
#[instrument(skip_all, fields(project = %project, env = %env))]
pub(super) async fn remove(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, env)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, DashboardError> {
    env_change(&d, &visitor, project, env, &form.csrf, EnvChange::Remove).await
}
