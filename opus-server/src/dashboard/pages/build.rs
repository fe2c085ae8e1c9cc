//! `GET /projects/{project}/builds/{number}`: one build: state, ref, commit, version, the time
//! each step took, and its log (secrets already masked when it was written, ANSI colours as
//! spans). While the build runs, the page's script follows the log from where the page ends
//! ([`crate::dashboard::sse`]); a queued build says why it waits and where it stands.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, PreEscaped, html};
use opus_core::model::{Build, BuildState, ProjectName};
use tracing::instrument;

use crate::dashboard::ansi;
use crate::dashboard::layout::{self, ago, duration};
use crate::dashboard::session::Visitor;
use crate::dashboard::{Dashboard, DashboardError};
use crate::logs::{self, LogRecord};

/// One step as the log tells it: opusd writes `$ <command>` when a step starts and
/// `step N finished in 1.2 s` when it ends (the lines the CLI reads its timings from too).
#[derive(Debug, PartialEq)]
pub(crate) struct StepTiming {
    /// `step 1`.
    pub(crate) name: String,
    /// The command.
    pub(crate) command: String,
    /// When it started.
    pub(crate) started: SystemTime,
    /// How long it took, once it ended.
    pub(crate) took: Option<Duration>,
}

/// The steps of a log, in order.
pub(crate) fn step_timings(lines: &[LogRecord]) -> Vec<StepTiming> {
    let mut steps: Vec<StepTiming> = Vec::new();
    for line in lines {
        if line.stream != "opus" || !line.step.starts_with("step ") {
            continue;
        }
        if let Some(command) = line.text.strip_prefix("$ ") {
            steps.push(StepTiming {
                name: line.step.clone(),
                command: command.to_owned(),
                started: UNIX_EPOCH + Duration::from_millis(line.t),
                took: None,
            });
            continue;
        }
        let took = line
            .text
            .strip_prefix(line.step.as_str())
            .and_then(|t| t.strip_prefix(" finished in "))
            .and_then(|t| t.strip_suffix(" s"))
            .and_then(|s| s.parse::<f64>().ok())
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        if let (Some(took), Some(step)) =
            (took, steps.iter_mut().rev().find(|s| s.name == line.step))
        {
            step.took = Some(took);
        }
    }
    steps
}

/// One log line as HTML: Opus's own lines marked `==>` as the CLI prints them, stderr tinted,
/// the text escaped with its colours as spans. No newline.
pub(crate) fn line_html(line: &LogRecord) -> String {
    let mut out = String::with_capacity(line.text.len() + 32);
    match line.stream.as_str() {
        "opus" => {
            out.push_str("<span class=\"opus\">==&gt; ");
            ansi::to_html(&mut out, &line.text);
            out.push_str("</span>");
        }
        "stderr" => {
            out.push_str("<span class=\"stderr\">");
            ansi::to_html(&mut out, &line.text);
            out.push_str("</span>");
        }
        _ => ansi::to_html(&mut out, &line.text),
    }
    out
}

/// The page.
#[instrument(skip_all, fields(project = %project, number))]
pub(in crate::dashboard) async fn build(
    State(d): State<Arc<Dashboard>>,
    visitor: Visitor,
    Path((project, number)): Path<(String, u64)>,
) -> Result<Response, DashboardError> {
    let project = ProjectName::new(project)?;
    let build = d.store.build_by_number(&project, number)?;
    let (lines, offset) = logs::read_from(&d.logs.path(build.id), 0)
        .await
        .map_err(|source| DashboardError::Log {
            build: format!("{project}#{number}"),
            source,
        })?;
    let waiting = (build.state == BuildState::Queued)
        .then(|| d.scheduler.queue_info(build.id).map(|i| i.reason()))
        .flatten();
    let title = format!("{project}#{number}");
    Ok(layout::respond(
        StatusCode::OK,
        layout::page(
            &title,
            Some(&visitor),
            render(&build, &visitor, &lines, offset, waiting.as_deref()),
        ),
    ))
}

fn render(
    b: &Build,
    visitor: &Visitor,
    lines: &[LogRecord],
    offset: u64,
    waiting: Option<&str>,
) -> Markup {
    let project = b.project.as_str();
    let live = !b.state.is_finished();
    let steps = step_timings(lines);
    let mut log = String::new();
    for line in lines {
        log.push_str(&line_html(line));
        log.push('\n');
    }
    html! {
        p.muted { a href="/" { "Projects" } " / " a href={ "/projects/" (project) } { (project) } " / " }
        h1 { (project) "#" (b.number) " " span id="state" class={ "state state-" (b.state.as_str()) } { (b.state.as_str().replace('_', " ")) } }
        section.card {
            dl.facts {
                dt { "Ref" } dd { (b.git_ref) @if b.is_tag { " " span.muted { "(tag)" } } }
                dt { "Commit" } dd { @if !b.commit.is_empty() { code { (b.commit) } } @else if b.state.is_finished() { span.muted { "none (a folder source, or the build ended before its checkout)" } } @else { span.muted { "not resolved yet" } } }
                dt { "Version" } dd { @match &b.version { Some(v) => (v.as_str()), None => span.muted { "not decided yet" } } }
                dt { "Trigger" } dd { (b.trigger.as_str()) }
                dt { "Queued" } dd { (ago(b.queued_at)) }
                @if let (Some(s), Some(f)) = (b.started_at, b.finished_at) {
                    dt { "Took" } dd { (duration(f.duration_since(s).unwrap_or_default())) }
                }
                @if !b.reason.is_empty() {
                    dt { "Reason" } dd { (b.reason) }
                }
                @if let Some(w) = waiting {
                    dt { "Waiting" } dd { (w) }
                }
            }
            @if live && visitor.can_act() {
                p { a href={ "/projects/" (project) "/builds/" (b.number) "/cancel" } { "Cancel this build…" } }
            }
        }
        @if !steps.is_empty() {
            h2 { "Steps" }
            div.table { table.stack {
                thead { tr { th { "Step" } th { "Command" } th { "Took" } } }
                tbody {
                    @for s in &steps {
                        tr {
                            td data-label="Step" { (s.name) }
                            td data-label="Command" { code { (s.command) } }
                            td data-label="Took" {
                                @match s.took {
                                    Some(t) => (duration(t)),
                                    None if live => span.muted { "running, " (ago(s.started)) " started" },
                                    None => span.muted { "did not finish" },
                                }
                            }
                        }
                    }
                }
            } }
        }
        h2 { "Log" }
        @if live {
            p.muted id="live" { "Live: new lines appear as the build writes them (with JavaScript on; otherwise reload)." }
        }
        @if live {
            pre.log id="log" data-stream={ "/projects/" (project) "/builds/" (b.number) "/log?from=" (offset) } { (PreEscaped(log)) }
        } @else {
            pre.log id="log" { (PreEscaped(log)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: u64, step: &str, stream: &str, text: &str) -> LogRecord {
        LogRecord {
            t,
            step: step.into(),
            stream: stream.into(),
            text: text.into(),
        }
    }

    #[test]
    fn steps_and_their_durations_come_from_the_log() {
        let lines = [
            rec(1000, "source", "opus", "checked out abc"),
            rec(2000, "step 1", "opus", "$ npm ci"),
            rec(2500, "step 1", "stdout", "added 3 packages"),
            rec(3000, "step 1", "opus", "step 1 finished in 1.0 s"),
            rec(3000, "step 2", "opus", "$ npm run build"),
        ];
        let steps = step_timings(&lines);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].command, "npm ci");
        assert_eq!(steps[0].took, Some(Duration::from_secs(1)));
        assert_eq!(steps[1].took, None);
    }

    #[test]
    fn lines_are_escaped_and_marked_by_stream() {
        assert_eq!(
            line_html(&rec(0, "step 1", "stdout", "<script>x</script>")),
            "&lt;script&gt;x&lt;/script&gt;"
        );
        assert_eq!(
            line_html(&rec(0, "step 1", "opus", "$ make")),
            "<span class=\"opus\">==&gt; $ make</span>"
        );
        assert!(line_html(&rec(0, "s", "stderr", "oops")).starts_with("<span class=\"stderr\">"));
    }
}
