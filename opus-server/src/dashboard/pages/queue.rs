//! `GET /queue`: what runs now and what waits, each waiting build with where it stands and why.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use opus_core::model::BuildState;
use tracing::instrument;

use crate::dashboard::layout::{self, ago, state_badge};
use crate::dashboard::session::Visitor;
use crate::dashboard::{Dashboard, DashboardError};

/// The page.
#[instrument(skip_all)]
pub(in crate::dashboard) async fn queue(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
) -> Result<Response, DashboardError> {
    let mut unfinished = d
        .store
        .builds_in_states(&[BuildState::Running, BuildState::Queued])?;
    // Running first, then the queue in its order.
    unfinished.sort_by_key(|b| {
        (
            b.state != BuildState::Running,
            d.scheduler.queue_info(b.id).map_or(0, |i| i.position),
        )
    });
    let body = html! {
        h1 { "Queue" }
        p.muted { (d.scheduler.running_count()) " running, " (d.scheduler.queued_count()) " waiting." }
        @if unfinished.is_empty() {
            p.notice { "Nothing runs and nothing waits." }
        } @else {
            div.table { table.stack {
                thead { tr { th { "Build" } th { "State" } th { "Ref" } th { "Queued" } th { "Why it waits" } } }
                tbody {
                    @for b in &unfinished {
                        tr {
                            td data-label="Build" { a href={ "/projects/" (b.project.as_str()) "/builds/" (b.number) } { (b.project.as_str()) "#" (b.number) } }
                            td data-label="State" { (state_badge(b.state)) }
                            td data-label="Ref" { (b.git_ref) }
                            td data-label="Queued" { (ago(b.queued_at)) }
                            td data-label="Why it waits" {
                                @if b.state == BuildState::Queued {
                                    @if let Some(info) = d.scheduler.queue_info(b.id) { (info.reason()) }
                                }
                            }
                        }
                    }
                }
            } }
        }
    };
    Ok(layout::respond(
        StatusCode::OK,
        layout::page("Queue", Some(&visitor), body),
    ))
}
