//! Server-Sent Events: a running build's log ([`log_stream`]) and the event log
//! ([`events_stream`]), each ending when opusd stops.
//!
//! `GET /projects/{project}/builds/{number}/log?from=<offset>`: a build's log from byte
//! `offset` on as Server-Sent Events, following it live until the build ends. It reads the same
//! log file, and waits on the same progress signal, as `StreamLogs` (what `opus logs -f`
//! follows). Each `line` event is one line as HTML ([`super::pages::build::line_html`]) with the
//! offset after it as the event id, so a reconnecting browser (`Last-Event-ID`) resumes where
//! it was; the last event is `end`, carrying the build's final state.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use opus_core::model::ProjectName;
use serde::Deserialize;
use tracing::instrument;

use super::pages::build::line_html;
use super::session::Visitor;
use super::{Dashboard, DashboardError};
use crate::logs;

/// `?from=`: the byte offset the page's log ended at.
#[derive(Debug, Deserialize)]
pub(super) struct FromQuery {
    from: Option<u64>,
}

/// The events of one batch of lines read from `offset`; returns the new offset.
async fn read_batch(
    path: &std::path::Path,
    offset: u64,
    out: &mut Vec<Event>,
) -> Result<u64, std::io::Error> {
    let (lines, next) = logs::read_from(path, offset).await?;
    let count = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let mut event = Event::default().event("line").data(line_html(line));
        if i + 1 == count {
            event = event.id(next.to_string());
        }
        out.push(event);
    }
    Ok(next)
}

/// The stream.
#[instrument(skip_all, fields(project = %project, number))]
pub(super) async fn log_stream(
    State(d): State<Arc<Dashboard>>,
    _visitor: Visitor,
    Path((project, number)): Path<(String, u64)>,
    Query(q): Query<FromQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, DashboardError> {
    let project = ProjectName::new(project)?;
    let id = d.store.build_by_number(&project, number)?.id;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let start = resume.or(q.from).unwrap_or(0);
    let path = d.logs.path(id);
    let stream = async_stream::stream! {
        let mut offset = start;
        let mut events = d.store.subscribe_events();
        loop {
            let mut batch = Vec::new();
            match read_batch(&path, offset, &mut batch).await {
                Ok(next) => offset = next,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a build log for the dashboard");
                    yield Ok(Event::default().event("end").data("unknown"));
                    break;
                }
            }
            for event in batch {
                yield Ok(event);
            }
            let live = d.logs.follow(id);
            let build = match d.store.get_build(id) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a build for the dashboard");
                    break;
                }
            };
            let log_done = live.as_ref().is_none_or(|p| p.borrow().finished);
            if build.state.is_finished() && log_done {
                let mut rest = Vec::new();
                if read_batch(&path, offset, &mut rest).await.is_ok() {
                    for event in rest {
                        yield Ok(event);
                    }
                }
                yield Ok(Event::default().event("end").data(build.state.as_str()));
                break;
            }
            match live {
                Some(mut progress) => {
                    if progress.borrow_and_update().len > offset {
                        continue;
                    }
                    tokio::select! {
                        changed = progress.changed() => {
                            if changed.is_err() {
                                // The writer is gone: the build's state comes with an event.
                                tokio::select! {
                                    _ = events.changed() => {}
                                    () = d.stopping.cancelled() => break,
                                }
                            }
                        }
                        _ = events.changed() => {}
                        () = d.stopping.cancelled() => break,
                    }
                }
                None => {
                    tokio::select! {
                        changed = events.changed() => if changed.is_err() { break },
                        () = d.stopping.cancelled() => break,
                    }
                }
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `?project=`: only this project's events.
#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    project: Option<String>,
}

/// Events read at once.
const EVENT_BATCH: usize = 200;

/// `GET /events?project=`: the event log from now on (or from after `Last-Event-ID`), as `change`
/// events carrying `<kind> <project>`, the event's sequence number as their id. The projects and
/// project pages refresh their tables on each (the page's script fetches the page again).
#[instrument(skip_all, fields(project = ?q.project))]
pub(super) async fn events_stream(
    State(d): State<Arc<Dashboard>>,
    _visitor: Visitor,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, DashboardError> {
    let project = match q.project.as_deref() {
        None | Some("") => None,
        Some(p) => Some(ProjectName::new(p)?.as_str().to_owned()),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut next = resume.map_or_else(|| d.store.last_event_seq() + 1, |seq| seq + 1);
    let stream = async_stream::stream! {
        let mut events = d.store.subscribe_events();
        loop {
            let batch = match d.store.events_from(next, EVENT_BATCH) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read events for the dashboard");
                    break;
                }
            };
            let full = batch.len() == EVENT_BATCH;
            for event in batch {
                next = event.seq + 1;
                if project.as_ref().is_none_or(|p| *p == event.project) {
                    yield Ok(Event::default()
                        .event("change")
                        .id(event.seq.to_string())
                        .data(format!("{} {}", event.kind.as_str(), event.project)));
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = events.changed() => if changed.is_err() { break },
                () = d.stopping.cancelled() => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
