//! `GET /projects/{project}`: one project: its environments (version, pinned, URL, last
//! release), builds (newest first, paged, filtered by state), versions (size, files, which
//! environments serve them), release history, hooks (without secrets) and settings.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use opus_core::model::{Build, BuildState, Project, ProjectName, VersionRecord};
use opus_core::store::{BuildFilter, EnvironmentRecord, Release};
use serde::Deserialize;
use tracing::instrument;

use super::{PER_PAGE, hook_target, page_number, without_credentials};
use crate::dashboard::layout::{self, ago, duration, size, state_badge};
use crate::dashboard::session::Visitor;
use crate::dashboard::{Dashboard, DashboardError};
use crate::sites::PRODUCTION;

/// `?state=` and `?page=` of the builds table.
#[derive(Debug, Deserialize)]
pub(in crate::dashboard) struct ProjectQuery {
    state: Option<String>,
    page: Option<usize>,
}

/// Newest versions listed.
const VERSIONS_SHOWN: usize = 50;
/// Newest releases listed.
const RELEASES_SHOWN: usize = 30;

/// What the page shows, read from the store.
struct ProjectView {
    project: Project,
    secret_names: Vec<String>,
    environments: Vec<(EnvironmentRecord, String)>,
    builds: Vec<Build>,
    more_builds: bool,
    versions: Vec<VersionRecord>,
    version_count: usize,
    releases: Vec<Release>,
    hooks: Vec<opus_core::hook::Hook>,
}

/// The page.
#[instrument(skip_all, fields(project = %name))]
pub(in crate::dashboard) async fn project(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path(name): Path<String>,
    Query(q): Query<ProjectQuery>,
) -> Result<Response, DashboardError> {
    let name = ProjectName::new(name)?;
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(BuildState::parse(s)?),
    };
    let page = page_number(q.page);
    let store = &d.store;
    let project = store.get_project(&name)?;
    let mut builds = store.list_builds(&BuildFilter {
        project: Some(name.clone()),
        state,
        limit: page * PER_PAGE + 1,
    })?;
    let more_builds = builds.len() > page * PER_PAGE;
    builds = builds
        .into_iter()
        .skip((page - 1) * PER_PAGE)
        .take(PER_PAGE)
        .collect();
    let sites = d.deployer.sites();
    let environments = store
        .environments(&name)?
        .into_iter()
        .map(|e| {
            let url = sites.url(&e.project, &e.name);
            (e, url)
        })
        .collect();
    let mut versions = store.list_versions(&name)?;
    let version_count = versions.len();
    versions.truncate(VERSIONS_SHOWN);
    let view = ProjectView {
        secret_names: store.secret_names(&name)?,
        environments,
        builds,
        more_builds,
        versions,
        version_count,
        releases: store.releases(&name, None, RELEASES_SHOWN)?,
        hooks: store.list_hooks(Some(&name))?,
        project,
    };
    Ok(layout::respond(
        StatusCode::OK,
        layout::page(
            name.as_str(),
            Some(&visitor),
            render(&view, &visitor, state, page),
        ),
    ))
}

fn render(v: &ProjectView, visitor: &Visitor, state: Option<BuildState>, page: usize) -> Markup {
    let name = v.project.name.as_str();
    html! {
        p.muted { a href="/" { "Projects" } " / " }
        h1 { (name) }
        section.card {
            dl.facts {
                dt { "Source" } dd { code { (without_credentials(&v.project.source.display())) } }
                dt { "Default branch" } dd { (v.project.branch) }
                dt { "Keeps" } dd { @if v.project.keep_versions == 0 { "every version" } @else { (v.project.keep_versions) " newest versions" } }
                dt { "Secrets" } dd { @if v.secret_names.is_empty() { span.muted { "none" } } @else { (v.secret_names.join(", ")) " " span.muted { "(values never shown)" } } }
            }
            @if visitor.can_act() {
                form.row method="get" action={ "/projects/" (name) "/trigger" } {
                    label for="ref" { "Ref to build" input id="ref" name="ref" placeholder=(v.project.branch); }
                    label for="version" { "Version (optional)" input id="version" name="version" placeholder="from the commit"; }
                    button type="submit" { "Trigger a build…" }
                }
            }
        }
        div id="live" data-live={ "/events?project=" (name) } {
            h2 { "Environments" }
            (environments(v, visitor))
            h2 id="builds" { "Builds" }
            (builds(v, state, page))
            h2 { "Versions " span.muted { "(" (v.version_count) ")" } }
            (versions(v, visitor))
            h2 { "Releases" }
            (releases(&v.releases))
            h2 { "Hooks" }
            (hooks(&v.hooks))
        }
    }
}

fn environments(v: &ProjectView, visitor: &Visitor) -> Markup {
    let name = v.project.name.as_str();
    html! {
        @if v.environments.is_empty() {
            p.muted { "Nothing deployed yet." }
        } @else {
            div.table { table.stack {
                thead { tr { th { "Environment" } th { "Version" } th { "URL" } th { "Last release" } th { span.muted { "Actions" } } } }
                tbody {
                    @for (e, url) in &v.environments {
                        tr {
                            td data-label="Environment" { (e.name) @if e.preview { " " span.muted { "(preview)" } } }
                            td data-label="Version" { (e.current.version) @if e.pinned { " " span.state title="pinned by a rollback: automatic deploys skip it" { "pinned" } } }
                            td data-label="URL" { a href=(url) { (url) } }
                            td data-label="Last release" { (e.current.reason.as_str()) " by " (e.current.actor) ", " (ago(e.current.time)) }
                            td {
                                @if visitor.can_act() {
                                    div.envs {
                                        a href={ "/projects/" (name) "/environments/" (e.name) "/rollback" } { "Roll back…" }
                                        @if e.pinned { a href={ "/projects/" (name) "/environments/" (e.name) "/unpin" } { "Unpin…" } }
                                        a href={ "/projects/" (name) "/environments/" (e.name) "/remove" } { "Remove…" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn builds(v: &ProjectView, state: Option<BuildState>, page: usize) -> Markup {
    let name = v.project.name.as_str();
    let state_name = state.map_or("", BuildState::as_str);
    let link = |n: usize| format!("/projects/{name}?state={state_name}&page={n}#builds");
    html! {
        form.row method="get" action={ "/projects/" (name) "#builds" } {
            label for="state" { "State"
                select id="state" name="state" {
                    option value="" selected[state.is_none()] { "any" }
                    @for s in [BuildState::Queued, BuildState::Running, BuildState::Succeeded, BuildState::Failed, BuildState::Cancelled, BuildState::AwaitingApproval] {
                        option value=(s.as_str()) selected[state == Some(s)] { (s.as_str()) }
                    }
                }
            }
            button.secondary type="submit" { "Show" }
        }
        @if v.builds.is_empty() {
            p.muted { "No builds" @if state.is_some() { " in that state" } "." }
        } @else {
            div.table { table.stack {
                thead { tr { th { "Build" } th { "State" } th { "Ref" } th { "Version" } th { "Trigger" } th { "Queued" } th { "Took" } } }
                tbody {
                    @for b in &v.builds {
                        tr {
                            td data-label="Build" { a href={ "/projects/" (name) "/builds/" (b.number) } { "#" (b.number) } }
                            td data-label="State" { (state_badge(b.state)) }
                            td data-label="Ref" { (b.git_ref) }
                            td data-label="Version" { @if let Some(ver) = &b.version { (ver.as_str()) } }
                            td data-label="Trigger" { (b.trigger.as_str()) }
                            td data-label="Queued" { (ago(b.queued_at)) }
                            td data-label="Took" {
                                @if let (Some(s), Some(f)) = (b.started_at, b.finished_at) {
                                    (duration(f.duration_since(s).unwrap_or_default()))
                                }
                            }
                        }
                    }
                }
            } }
        }
        @if page > 1 || v.more_builds {
            nav.pager aria-label="Build pages" {
                @if page > 1 { a href=(link(page - 1)) rel="prev" { "← Newer" } }
                span.muted { "Page " (page) }
                @if v.more_builds { a href=(link(page + 1)) rel="next" { "Older →" } }
            }
        }
    }
}

fn versions(v: &ProjectView, visitor: &Visitor) -> Markup {
    let name = v.project.name.as_str();
    let mut targets: Vec<&str> = v
        .environments
        .iter()
        .map(|(e, _)| e.name.as_str())
        .collect();
    if !targets.contains(&PRODUCTION) {
        targets.insert(0, PRODUCTION);
    }
    html! {
        @if v.versions.is_empty() {
            p.muted { "No versions stored yet." }
        } @else {
            div.table { table.stack {
                thead { tr { th { "Version" } th { "Size" } th { "Files" } th { "Stored" } th { "Served by" } th { span.muted { "Deploy" } } } }
                tbody {
                    @for ver in &v.versions {
                        @let serving: Vec<&str> = v.environments.iter().filter(|(e, _)| e.current.version == ver.version.as_str()).map(|(e, _)| e.name.as_str()).collect();
                        tr {
                            td data-label="Version" { a href={ "/projects/" (name) "/versions/" (ver.version.as_str()) } { (ver.version.as_str()) } @if ver.build_id > 0 { " " a.muted href={ "/projects/" (name) "/builds/" (ver.build_id) } { "#" (ver.build_id) } } }
                            td data-label="Size" { (size(ver.size)) }
                            td data-label="Files" { (ver.file_count) }
                            td data-label="Stored" { (ago(ver.created_at)) }
                            td data-label="Served by" { (serving.join(", ")) }
                            td {
                                @if visitor.can_act() {
                                    form.row method="get" action={ "/projects/" (name) "/deploy" } {
                                        input type="hidden" name="version" value=(ver.version.as_str());
                                        label { span.muted { "to" }
                                            select name="env" aria-label={ "Environment to deploy " (ver.version.as_str()) " to" } {
                                                @for t in &targets { option value=(t) { (t) } }
                                            }
                                        }
                                        button.secondary type="submit" { "Deploy…" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn releases(releases: &[Release]) -> Markup {
    html! {
        @if releases.is_empty() {
            p.muted { "No releases yet." }
        } @else {
            div.table { table.stack {
                thead { tr { th { "When" } th { "Environment" } th { "Version" } th { "Why" } th { "By" } } }
                tbody {
                    @for r in releases {
                        tr {
                            td data-label="When" { (ago(r.time)) }
                            td data-label="Environment" { (r.env) " #" (r.seq) }
                            td data-label="Version" { (r.version) }
                            td data-label="Why" { (r.reason.as_str()) }
                            td data-label="By" { (r.actor) }
                        }
                    }
                }
            } }
        }
    }
}

fn hooks(hooks: &[opus_core::hook::Hook]) -> Markup {
    html! {
        @if hooks.is_empty() {
            p.muted { "No hooks." }
        } @else {
            div.table { table.stack {
                thead { tr { th { "Hook" } th { "Posts to" } th { "Events" } th { "Format" } th { "Signed" } th { "State" } } }
                tbody {
                    @for h in hooks {
                        tr {
                            td data-label="Hook" { (h.id) @if h.project.is_empty() { " " span.muted { "(all projects)" } } }
                            td data-label="Posts to" { (hook_target(&h.url)) }
                            td data-label="Events" { @if h.events.is_empty() { "all" } @else { (h.events.join(", ")) } }
                            td data-label="Format" { (format!("{:?}", h.format).to_lowercase()) }
                            td data-label="Signed" { @if h.secret.is_some() { "yes" } @else { "no" } }
                            td data-label="State" { @if h.enabled { "enabled" } @else { "disabled (410 Gone)" } }
                        }
                    }
                }
            } }
        }
    }
}
