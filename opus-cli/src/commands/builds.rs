//! `opus trigger`, `opus builds`, `opus logs`, `opus cancel`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use opus_core::proto;
use serde::Serialize;
use tokio_stream::StreamExt;

use crate::cli::{BuildsArgs, CancelArgs, GlobalArgs, LogsArgs, OutputFormat, TriggerArgs};
use crate::connection::Connection;
use crate::error::CliError;
use crate::job_lines::JobLines;
use crate::output;
use crate::step_status::StepStatus;
use crate::steps::Steps;

/// A build as `--output json` prints it.
#[derive(Serialize)]
pub(super) struct BuildJson {
    /// The build's number within its project (`web#3` is number 3).
    number: u64,
    project: String,
    state: &'static str,
    #[serde(rename = "ref")]
    git_ref: String,
    commit: String,
    version: String,
    reason: String,
    branch: String,
    trigger: String,
    store: String,
    queued_at: String,
    started_at: String,
    finished_at: String,
}

pub(super) fn build_json(b: &proto::Build) -> BuildJson {
    BuildJson {
        number: b.number,
        project: b.project.clone(),
        state: output::build_state(b.state),
        git_ref: b.r#ref.clone(),
        commit: b.commit.clone(),
        version: b.version.clone(),
        reason: b.reason.clone(),
        branch: b.branch.clone(),
        trigger: b.trigger.clone(),
        store: b.store.clone(),
        queued_at: output::time(b.queued_at.as_ref()),
        started_at: output::time(b.started_at.as_ref()),
        finished_at: output::time(b.finished_at.as_ref()),
    }
}

/// Parses `web#12` into the project and the build's number in it. Numbers count per project,
/// so a number alone names no build.
pub(super) fn parse_build_ref(text: &str) -> Result<(&str, u64), CliError> {
    let usage = || {
        CliError::Usage(format!(
            "{text:?} is not a build: write its project and number, such as web#12 (each project numbers its builds from 1; see `opus builds`)"
        ))
    };
    let (project, number) = text.split_once('#').ok_or_else(usage)?;
    if project.is_empty() {
        return Err(usage());
    }
    let number = number.parse().map_err(|_| usage())?;
    Ok((project, number))
}

/// The request that names `build` again (by project and number).
fn named(build: &proto::Build) -> proto::GetBuildRequest {
    proto::GetBuildRequest {
        id: 0,
        project: build.project.clone(),
        number: build.number,
    }
}

/// Fetches a build named `web#12`.
async fn get_build(conn: &Connection, text: &str) -> Result<proto::Build, CliError> {
    let (project, number) = parse_build_ref(text)?;
    Ok(conn
        .builds()
        .get_build(proto::GetBuildRequest {
            id: 0,
            project: project.to_owned(),
            number,
        })
        .await?
        .into_inner())
}

pub async fn trigger(
    conn: &Connection,
    global: &GlobalArgs,
    args: TriggerArgs,
) -> Result<(), CliError> {
    let build = conn
        .builds()
        .trigger_build(proto::TriggerBuildRequest {
            project: args.project,
            r#ref: args.git_ref,
            version: args.version.unwrap_or_default(),
            store: args.store.or(args.store_positional).unwrap_or_default(),
        })
        .await?
        .into_inner();
    if !args.wait {
        return match global.output {
            OutputFormat::Json => output::print_json(&build_json(&build)),
            OutputFormat::Table => {
                output::print_line(&format!("{}#{}", build.project, build.number))
            }
        };
    }
    if global.output == OutputFormat::Table {
        output::print_line(&format!("{}#{}", build.project, build.number))?;
    }
    let finished = follow(
        conn,
        &build,
        global.output == OutputFormat::Table,
        JobLines::new(args.job),
    )
    .await?;
    if global.output == OutputFormat::Json {
        output::print_json(&build_json(&finished))?;
    } else {
        let state = output::build_state(finished.state);
        let detail = if finished.state == proto::BuildState::Succeeded as i32 {
            format!("version {}", finished.version)
        } else {
            finished.reason.clone()
        };
        eprintln!("{}#{} {state}: {detail}", finished.project, finished.number);
    }
    // A build awaiting approval is green: its version is stored and waits for `opus approve`.
    if finished.state == proto::BuildState::Succeeded as i32
        || finished.state == proto::BuildState::AwaitingApproval as i32
    {
        Ok(())
    } else {
        Err(CliError::Silent)
    }
}

/// Shows a queued build's place until it starts, then streams its log to the end; returns the
/// finished build.
///
/// The log stream is opened at once: the server holds it until the build starts, so the first
/// line arrives the moment it does. Meanwhile a build that waits for a slot shows its place,
/// asked for every half second.
async fn follow(
    conn: &Connection,
    build: &proto::Build,
    print: bool,
    jobs: JobLines,
) -> Result<proto::Build, CliError> {
    let mut stream = open_log(conn, build, true).await?;
    let waiting = |b: &proto::Build| {
        b.state == proto::BuildState::Queued as i32 && b.reason.contains("waiting")
    };
    let mut first = None;
    let mut last_reason = String::new();
    let mut current = build.clone();
    while waiting(&current) {
        if current.reason != last_reason {
            eprintln!("{}", current.reason);
            last_reason = current.reason.clone();
        }
        tokio::select! {
            line = stream.next() => {
                first = Some(line);
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        current = conn.builds().get_build(named(build)).await?.into_inner();
    }
    let end = print_lines(first, stream, print, true, jobs).await?;
    let mut finished = conn.builds().get_build(named(build)).await?.into_inner();
    // The stream's last line says how the build ended, also when the server could not record
    // that yet (its disk is full): the record follows once it can write.
    let unfinished = [proto::BuildState::Queued, proto::BuildState::Running]
        .map(|s| s as i32)
        .contains(&finished.state);
    if let Some(end) = end
        && unfinished
    {
        finished.state = end.final_state;
        finished.reason = end.text;
    }
    Ok(finished)
}

/// Opens a build's log stream (`follow`: until the build ends).
async fn open_log(
    conn: &Connection,
    build: &proto::Build,
    follow: bool,
) -> Result<tonic::Streaming<proto::LogLine>, CliError> {
    Ok(conn
        .builds()
        .stream_logs(proto::StreamLogsRequest {
            id: 0,
            follow,
            project: build.project.clone(),
            number: build.number,
        })
        .await?
        .into_inner())
}

/// Prints a build's whole log to stdout (a build that is still running: what it wrote so far).
async fn print_log(
    conn: &Connection,
    build: &proto::Build,
    jobs: JobLines,
) -> Result<(), CliError> {
    let stream = open_log(conn, build, false).await?;
    print_lines(None, stream, true, false, jobs)
        .await
        .map(|_| ())
}

/// Prints the lines of a log stream (after `first`, one already taken from it: `Some(None)` when
/// the stream had ended) to stdout, when `print`; reads it to its end either way. A `live`
/// (followed) stream shows the running step below the lines on a terminal (see [`StepStatus`]).
/// Returns the final line (the build's end state), when the stream sent one. `jobs` selects and
/// marks a pipeline's lines; naming a job the build does not have is an error once the log ends.
async fn print_lines(
    first: Option<Option<Result<proto::LogLine, tonic::Status>>>,
    mut stream: tonic::Streaming<proto::LogLine>,
    print: bool,
    live: bool,
    mut jobs: JobLines,
) -> Result<Option<proto::LogLine>, CliError> {
    let mut status = StepStatus::on_stderr(live);
    let mut next = first;
    let mut end = None;
    loop {
        let line = match next.take() {
            Some(taken) => taken,
            None => stream.next().await,
        };
        let Some(line) = line else {
            if print && let Some(message) = jobs.unmatched() {
                return Err(CliError::Usage(message));
            }
            return Ok(end);
        };
        let line = line?;
        status.observe(&line);
        if line.final_state != 0 {
            end = Some(line);
            continue;
        }
        if !print {
            continue;
        }
        let Some(text) = jobs.show(&line.step, &line.text) else {
            continue;
        };
        status.suspend(|| {
            let mut out = std::io::stdout().lock();
            if line.stream == "opus" {
                writeln!(out, "==> {text}")
            } else {
                writeln!(out, "{text}")
            }
        })?;
    }
}

pub async fn list(
    conn: &Connection,
    global: &GlobalArgs,
    args: BuildsArgs,
) -> Result<(), CliError> {
    if let Some(build) = args.project.as_deref().filter(|p| p.contains('#')) {
        return show(conn, global, build).await;
    }
    let state = match args.state.as_deref() {
        None => proto::BuildState::Unspecified,
        Some(s) => match opus_core::model::BuildState::parse(s) {
            Ok(state) => proto::BuildState::from(state),
            Err(e) => return Err(CliError::Usage(e.to_string())),
        },
    };
    let builds = conn
        .builds()
        .list_builds(proto::ListBuildsRequest {
            project: args.project.unwrap_or_default(),
            state: state as i32,
            limit: args.limit,
        })
        .await?
        .into_inner()
        .builds;
    match global.output {
        OutputFormat::Json => {
            output::print_json(&builds.iter().map(build_json).collect::<Vec<_>>())
        }
        OutputFormat::Table => {
            if builds.is_empty() {
                eprintln!("no builds; start one with `opus trigger <project>`");
                return Ok(());
            }
            let mut t = output::table(&[
                "build", "state", "ref", "version", "queued", "took", "trigger", "reason",
            ]);
            for b in &builds {
                t.add_row(vec![
                    format!("{}#{}", b.project, b.number),
                    output::build_state(b.state).to_owned(),
                    b.r#ref.clone(),
                    b.version.clone(),
                    output::ago(b.queued_at.as_ref()),
                    took(b),
                    b.trigger.clone(),
                    b.reason.clone(),
                ]);
            }
            output::print_table(&t)
        }
    }
}

/// How long a finished build ran (`3.4s`); empty before it ends.
fn took(b: &proto::Build) -> String {
    match (&b.started_at, &b.finished_at) {
        (Some(s), Some(f)) => {
            let ms = (f.seconds - s.seconds) * 1000 + i64::from(f.nanos - s.nanos) / 1_000_000;
            format!("{:.1}s", ms.max(0) as f64 / 1000.0)
        }
        _ => String::new(),
    }
}

/// A step as `opus builds web#12 --output json` prints it.
#[derive(Serialize)]
struct StepJson {
    step: String,
    command: String,
    /// Seconds it took; null while it runs (or when the build ended during it).
    seconds: Option<f64>,
}

/// One build with its steps, as `opus builds web#12 --output json` prints it.
#[derive(Serialize)]
struct BuildDetailsJson {
    #[serde(flatten)]
    build: BuildJson,
    steps: Vec<StepJson>,
}

/// `opus builds web#12`: one build's details and its steps with their durations (read from its
/// log, where opusd writes them), as Woodpecker shows a pipeline's steps.
async fn show(conn: &Connection, global: &GlobalArgs, text: &str) -> Result<(), CliError> {
    let build = get_build(conn, text).await?;
    let mut stream = open_log(conn, &build, false).await?;
    let mut steps = Steps::default();
    while let Some(line) = stream.next().await {
        steps.observe(&line?);
    }
    let steps = steps.steps;
    if global.output == OutputFormat::Json {
        return output::print_json(&BuildDetailsJson {
            build: build_json(&build),
            steps: steps
                .iter()
                .map(|s| StepJson {
                    step: s.name.clone(),
                    command: s.command.clone(),
                    seconds: s.took.map(|d| d.as_secs_f64()),
                })
                .collect(),
        });
    }
    let running = build.state == proto::BuildState::Running as i32;
    let mut details = vec![
        ("build", format!("{}#{}", build.project, build.number)),
        ("state", output::build_state(build.state).to_owned()),
        ("ref", build.r#ref.clone()),
        ("commit", build.commit.clone()),
        ("version", build.version.clone()),
        ("queued", output::ago(build.queued_at.as_ref())),
        ("took", took(&build)),
        ("trigger", build.trigger.clone()),
    ];
    if !build.reason.is_empty() {
        details.push(("reason", build.reason.clone()));
    }
    for (key, value) in details.iter().filter(|(_, v)| !v.is_empty()) {
        output::print_line(&format!("{key:<9}{value}"))?;
    }
    if steps.is_empty() {
        return Ok(());
    }
    output::print_line("")?;
    let mut t = output::table(&["step", "command", "took"]);
    let last = steps.len() - 1;
    for (i, step) in steps.iter().enumerate() {
        let took = match step.took {
            Some(d) => format!("{:.1}s", d.as_secs_f64()),
            None if running && i == last => {
                let so_far = step
                    .started
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .unwrap_or_default();
                format!("running for {:.0}s", so_far.as_secs_f64())
            }
            None => "-".to_owned(),
        };
        let mut command = step.command.lines();
        let first = command.next().unwrap_or_default();
        let command = if command.next().is_some() {
            format!("{first} …")
        } else {
            first.to_owned()
        };
        t.add_row(vec![step.name.clone(), command, took]);
    }
    output::print_table(&t)
}

pub async fn logs(conn: &Connection, _global: &GlobalArgs, args: LogsArgs) -> Result<(), CliError> {
    let build = get_build(conn, &args.build).await?;
    let jobs = JobLines::new(args.job);
    if args.follow {
        follow(conn, &build, true, jobs).await.map(drop)
    } else {
        print_log(conn, &build, jobs).await
    }
}

pub async fn cancel(
    conn: &Connection,
    global: &GlobalArgs,
    args: CancelArgs,
) -> Result<(), CliError> {
    let build = get_build(conn, &args.build).await?;
    let build = conn
        .builds()
        .cancel_build(proto::CancelBuildRequest {
            id: 0,
            project: build.project.clone(),
            number: build.number,
        })
        .await?
        .into_inner();
    match global.output {
        OutputFormat::Json => output::print_json(&build_json(&build)),
        OutputFormat::Table => {
            output::print_line(&format!("cancelling {}#{}", build.project, build.number))
        }
    }
}
