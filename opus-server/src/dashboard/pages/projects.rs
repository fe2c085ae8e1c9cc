//! `GET /`: every project with its last build (state, version, age) and what each of its
//! environments serves, filtered by name and paged.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use opus_core::model::{Build, Project};
use opus_core::store::{EnvironmentRecord, MetaStore, NameFilter};
use serde::Deserialize;
use tracing::instrument;

use super::{PER_PAGE, page_number};
use crate::dashboard::layout::{self, ago, state_badge};
use crate::dashboard::session::Visitor;
use crate::dashboard::{Dashboard, DashboardError};

/// `?q=` (a substring or glob, as `opus list` takes it) and `?page=`.
#[derive(Debug, Deserialize)]
pub(in crate::dashboard) struct ProjectsQuery {
    q: Option<String>,
    page: Option<usize>,
}

/// One row of the projects table.
pub(crate) struct ProjectRow {
    /// The project.
    pub(crate) project: Project,
    /// Its newest build.
    pub(crate) last: Option<Build>,
    /// Its environments, with their URLs.
    pub(crate) environments: Vec<(EnvironmentRecord, String)>,
}

/// One page of the projects table, and how many projects pass the filter.
pub(crate) struct ProjectsPage {
    /// The rows of the page.
    pub(crate) rows: Vec<ProjectRow>,
    /// Projects passing the filter, on all pages.
    pub(crate) matching: usize,
}

/// Reads page `page` (from 1) of the projects passing `filter`: every project's name is checked,
/// and only the page's rows read their last build and environments. Blocking: call it off the
/// async runtime.
pub(crate) fn read_page(
    store: &MetaStore,
    filter: &NameFilter,
    page: usize,
    url: impl Fn(&str, &str) -> String,
) -> Result<ProjectsPage, DashboardError> {
    let names = store.project_names(|name| filter.matches(name))?;
    let matching = names.len();
    let mut rows = Vec::new();
    for name in names.iter().skip((page - 1) * PER_PAGE).take(PER_PAGE) {
        let project = store.get_project(name)?;
        let last = store.last_build(name)?;
        let environments = store
            .environments(name)?
            .into_iter()
            .map(|e| {
                let u = url(&e.project, &e.name);
                (e, u)
            })
            .collect();
        rows.push(ProjectRow {
            project,
            last,
            environments,
        });
    }
    Ok(ProjectsPage { rows, matching })
}

/// The page.
#[instrument(skip_all, fields(filter = ?q.q, page = ?q.page))]
pub(in crate::dashboard) async fn projects(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Query(q): Query<ProjectsQuery>,
) -> Result<Response, DashboardError> {
    let text = q.q.unwrap_or_default().trim().to_owned();
    let filter = NameFilter::parse(&text)?;
    let page = page_number(q.page);
    let dash = d.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let sites = dash.deployer.sites().clone();
        read_page(&dash.store, &filter, page, |p, e| sites.url(p, e))
    })
    .await
    .map_err(|e| DashboardError::Task(e.to_string()))??;
    Ok(layout::respond(
        StatusCode::OK,
        layout::page("Projects", Some(&visitor), render(&listed, &text, page)),
    ))
}

/// The page's body: the filter form, the table, the pager.
pub(crate) fn render(listed: &ProjectsPage, filter: &str, page: usize) -> Markup {
    let pages = listed.matching.div_ceil(PER_PAGE).max(1);
    let link = |n: usize| {
        let q: String =
            percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        format!("/?q={q}&page={n}")
    };
    html! {
        h1 { "Projects " span.muted { "(" (listed.matching) ")" } }
        form.row method="get" action="/" role="search" {
            label for="q" { "Filter by name (text or glob)"
                input id="q" name="q" type="search" value=(filter) placeholder="web-*";
            }
            button type="submit" { "Filter" }
        }
        div id="live" data-live="/events" {
            @if listed.rows.is_empty() {
                p.notice { @if filter.is_empty() { "No projects yet: add one with " code { "opus add NAME SOURCE" } "." } @else { "No project matches." } }
            } @else {
                div.table {
                    table.stack {
                        thead { tr { th { "Project" } th { "Last build" } th { "Version" } th { "Environments" } } }
                        tbody {
                            @for row in &listed.rows {
                                (project_row(row))
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page > 1 { a href=(link(page - 1)) rel="prev" { "← Previous" } }
                    span.muted { "Page " (page) " of " (pages) }
                    @if page < pages { a href=(link(page + 1)) rel="next" { "Next →" } }
                }
            }
        }
    }
}

fn project_row(row: &ProjectRow) -> Markup {
    let name = row.project.name.as_str();
    html! {
        tr {
            td data-label="Project" { a href={ "/projects/" (name) } { (name) } }
            td data-label="Last build" {
                @match &row.last {
                    Some(b) => {
                        (state_badge(b.state)) " "
                        a href={ "/projects/" (name) "/builds/" (b.number) } { "#" (b.number) }
                        " " span.muted { (ago(b.finished_at.or(b.started_at).unwrap_or(b.queued_at))) }
                    }
                    None => span.muted { "never built" },
                }
            }
            td data-label="Version" {
                @if let Some(v) = row.last.as_ref().and_then(|b| b.version.as_ref()) { (v.as_str()) }
            }
            td data-label="Environments" {
                div.envs {
                    @for (env, url) in &row.environments {
                        span { (env.name) ": " a href=(url) { (env.current.version) } @if env.pinned { " " span.muted title="pinned by a rollback" { "(pinned)" } } }
                    }
                }
            }
        }
    }
}
